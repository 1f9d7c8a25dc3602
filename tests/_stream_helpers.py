"""Helpers shared by the stream tests (not a test module)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox

# a fast virtual clock: one market minute per wall second, so minute bars close every second
FAST = dict(seed=7, start="2024-03-04T14:30:00Z", speed=60)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition", *,
             interval: float = 0.02) -> Any:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy; fail the
    test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def connect(account, *, base_url: str | None = None, stream_url: str | None = None) -> anb.Alpaca:
    """A client for a sandbox account (optionally through a proxy for trading REST or streams)."""
    return anb.connect(base_url=base_url or account.url, data_url=account.url,
                       stream_url=stream_url or account.stream_url, key_id=account.key_id,
                       secret_key=account.secret_key)


def admin(sb: Sandbox, path: str, body: dict | None = None) -> Any:
    resp = requests.post(f"{sb.url}{path}", json=body or {}, timeout=10,
                         headers={"APCA-API-KEY-ID": sb.key_id, "APCA-API-SECRET-KEY": sb.secret_key})
    resp.raise_for_status()
    return resp.json()


def server_connections(sb: Sandbox) -> dict[str, int]:
    resp = requests.get(f"{sb.url}/sandbox/status", timeout=10,
                        headers={"APCA-API-KEY-ID": sb.key_id, "APCA-API-SECRET-KEY": sb.secret_key})
    resp.raise_for_status()
    return resp.json()["connections"]


def counts(stream, symbols) -> dict[str, int]:
    frame = stream.table.df
    return {s: int(frame.loc[s, "updates"]) if s in frame.index else 0 for s in symbols}
