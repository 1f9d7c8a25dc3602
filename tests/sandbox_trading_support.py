"""Helpers for the sandbox trading tests: a small HTTP client for one account, sandboxes with a
frozen virtual clock, and the reference market (the same deterministic market the sandbox serves,
computed in the test process, to check fills against the quotes of the instant they happened).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import requests

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.sandbox.clock import Clock, Sessions, to_ns
from alpaca_nb.sandbox.market import Market

# A Tuesday; 15:00 UTC is 10:00 ET (regular hours in calendar mode).
T0 = "2024-03-05T15:00:00Z"
FROZEN = 1e-9           # virtual seconds per wall second: time moves only when a test moves it


class Api:
    """REST calls as one sandbox account (raises nothing: tests look at status codes)."""

    def __init__(self, url: str, key_id: str, secret_key: str):
        self.url = url
        self.key_id = key_id
        self.secret_key = secret_key
        self.session = requests.Session()
        self.session.headers.update({"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret_key})

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.url + path, params=params or None, timeout=30)

    def post(self, path: str, body: Any = None) -> requests.Response:
        return self.session.post(self.url + path, json=body, timeout=30)

    def patch(self, path: str, body: Any = None) -> requests.Response:
        return self.session.patch(self.url + path, json=body, timeout=30)

    def delete(self, path: str, **params: Any) -> requests.Response:
        return self.session.delete(self.url + path, params=params or None, timeout=30)

    # conveniences that assert success
    def order(self, **body: Any) -> dict:
        body.setdefault("side", "buy")
        body.setdefault("type", "market")
        body.setdefault("time_in_force", "day")
        resp = self.post("/v2/orders", body)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def get_order(self, order_id: str, **params: Any) -> dict:
        resp = self.get(f"/v2/orders/{order_id}", **params)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def account(self) -> dict:
        resp = self.get("/v2/account")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def positions(self) -> dict[str, dict]:
        resp = self.get("/v2/positions")
        assert resp.status_code == 200, resp.text
        return {p["symbol"]: p for p in resp.json()}

    def fills(self, order_id: str | None = None) -> list[dict]:
        resp = self.get("/v2/account/activities/FILL", direction="asc")
        assert resp.status_code == 200, resp.text
        return [a for a in resp.json() if order_id is None or a["order_id"] == order_id]


def new_api(sb: Sandbox, cash: float | None = None) -> Api:
    """A fresh account on ``sb``."""
    body = {} if cash is None else {"cash": cash}
    resp = requests.post(f"{sb.url}/sandbox/accounts", json=body, headers=admin(sb), timeout=10)
    resp.raise_for_status()
    data = resp.json()
    return Api(sb.url, data["key_id"], data["secret_key"])


def admin(sb: Sandbox) -> dict[str, str]:
    return {"APCA-API-KEY-ID": sb.key_id, "APCA-API-SECRET-KEY": sb.secret_key}


def frozen(start: str = T0, **options: Any) -> Sandbox:
    """A sandbox whose virtual clock stands still (1 ns per wall second) until moved."""
    options.setdefault("seed", 7)
    return Sandbox(start=start, speed=FROZEN, **options)


def advance(sb: Sandbox, seconds: float) -> int:
    """Move the sandbox clock forward; returns the new now (ns)."""
    resp = requests.post(f"{sb.url}/sandbox/clock", json={"advance": seconds}, headers=admin(sb),
                         timeout=60)
    assert resp.status_code == 200, resp.text
    return to_ns(resp.json()["now"])


def set_clock(sb: Sandbox, when: str) -> int:
    resp = requests.post(f"{sb.url}/sandbox/clock", json={"set": when}, headers=admin(sb), timeout=60)
    assert resp.status_code == 200, resp.text
    return to_ns(resp.json()["now"])


def now_ns(sb: Sandbox) -> int:
    resp = requests.get(f"{sb.url}/sandbox/status", headers=admin(sb), timeout=10)
    return to_ns(resp.json()["now"])


def reference_market(sb: Sandbox) -> Market:
    """The market the sandbox serves, computed here (it is a pure function of seed and mode)."""
    return Market(seed=sb.config.seed, sessions=Sessions(sb.config.market), clock=Clock())


def ts(text: str) -> int:
    """RFC-3339 (any precision) to epoch ns."""
    return to_ns(text)


def num(value: Any) -> float:
    return float(value)


def ny(date: str, hh: int, mm: int = 0) -> str:
    """An RFC-3339 instant for a New York wall time."""
    from alpaca_nb.sandbox.clock import NY

    d = dt.date.fromisoformat(date)
    return dt.datetime(d.year, d.month, d.day, hh, mm, tzinfo=NY).isoformat()
