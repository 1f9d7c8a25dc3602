"""Shared fixtures: one real sandbox per test session, and a fresh account per test.

Every test talks to the sandbox over loopback sockets. Tests that need their own server settings
(chaos, rate limit, calendar market, a database) start their own ``Sandbox`` instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import requests
from _relay_helpers import redis_server, relay_dir  # noqa: F401  (fixtures of the relay tests)

from alpaca_nb.sandbox import Sandbox


@dataclass(frozen=True)
class SandboxAccount:
    """Keys of one sandbox account, and where to reach the server."""

    key_id: str
    secret_key: str
    account_id: str
    url: str
    stream_url: str

    @property
    def headers(self) -> dict[str, str]:
        return {"APCA-API-KEY-ID": self.key_id, "APCA-API-SECRET-KEY": self.secret_key}

    def __repr__(self) -> str:
        return f"SandboxAccount(key_id={self.key_id!r}, url={self.url!r})"


def admin_headers(sb: Sandbox) -> dict[str, str]:
    return {"APCA-API-KEY-ID": sb.key_id, "APCA-API-SECRET-KEY": sb.secret_key}


def new_account(sb: Sandbox, cash: float | None = None) -> SandboxAccount:
    """A fresh account with its own keys on ``sb`` (POST /sandbox/accounts)."""
    body = {} if cash is None else {"cash": cash}
    resp = requests.post(f"{sb.url}/sandbox/accounts", json=body, headers=admin_headers(sb), timeout=10)
    resp.raise_for_status()
    data = resp.json()
    return SandboxAccount(data["key_id"], data["secret_key"], data["account_id"], sb.url, sb.stream_url)


@pytest.fixture(scope="session", autouse=True)
def _bar_cache_in_a_temporary_dir(tmp_path_factory):
    """Bars that any test caches (api.bars caches finished days by default) go to a temporary
    directory, never the user's cache directory."""
    patch = pytest.MonkeyPatch()
    patch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path_factory.mktemp("bar-cache")))
    yield
    patch.undo()


def poll(fetch, done, timeout: float = 10.0):
    """Call ``fetch()`` until ``done(value)`` or ``timeout`` seconds; returns the last value (so
    the caller's assertion shows what it was)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture(scope="session")
def sandbox():
    """The session's shared sandbox (always-open market, seed 7, real time)."""
    with Sandbox(seed=7) as sb:
        yield sb


@pytest.fixture
def account(sandbox) -> SandboxAccount:
    """A fresh $100,000 account on the shared sandbox, so tests never see each other's orders."""
    return new_account(sandbox)
