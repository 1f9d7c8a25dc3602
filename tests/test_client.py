"""The Alpaca façade as a user meets it: the demo command, lazily connected shortcuts, the client
object itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest

import alpaca_nb as anb
from alpaca_nb.sandbox.clock import Sessions


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path / "cache"))


def test_demo_command_runs_the_tour(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("APCA_")}
    env["ALPACA_NB_CACHE_DIR"] = str(tmp_path / "demo-cache")
    sessions = Sessions("calendar")

    def hours() -> str:                  # regular, extended (thin: a few seconds may be quiet) or closed
        now = time.time_ns()
        return "regular" if sessions.is_open(now) else "extended" if sessions.is_extended(now) else "closed"

    before = hours()
    # 5 s of streaming (the default is 3): IEX's book, the embedded sandbox's default feed,
    # moves about 1-8 times a second in regular hours for these two
    done = subprocess.run([sys.executable, "-m", "alpaca_nb.cli", "demo", "--seconds", "5"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for section in ("== account ==", "== positions (before) ==", "== daily bars", "== order placed",
                    "== order now ==", "== positions (after) ==", "== live quotes and trades"):
        assert section in out
    assert "filled" in out and "The order filled: 10 AAPL" in out
    live = out.split("== live quotes and trades")[1]
    assert "status connected" in live
    # the always-open sandbox the demo runs trades at any hour, and its stream shows it: in
    # regular hours the market's prints, outside the NYSE's 04:00-20:00 ET the live present's
    # tape; each streamed symbol got updates ("AAPL  bid ask last N ..."); the thin extended
    # hours may or may not print within the demo's few seconds
    for symbol in ("AAPL", "MSFT"):
        row = next(line.split() for line in live.splitlines() if line.startswith(symbol))
        if before == hours() != "extended":                        # not at a boundary
            assert int(row[4]) > 0, row
    assert "sandbox-secret-key" not in out + done.stderr


def test_shortcuts_connect_lazily(monkeypatch):
    for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(anb, "_default", None)      # as in a fresh kernel
    clock = anb.clock()                              # connects to the embedded sandbox on first use
    assert isinstance(clock, pd.Series) and anb.default_client().mode == "sandbox"
    assert anb.default_client() is anb.default_client()


def test_client_object(account):
    with anb.connect(base_url=account.url, data_url=account.url, key_id=account.key_id,
                     secret_key=account.secret_key) as api:
        assert api.mode == "sandbox"
        assert repr(api).startswith("<Alpaca mode=sandbox base_url=http://127.0.0.1:")
        assert account.key_id not in repr(api)        # only a masked key id
        assert api.account()["id"] == account.account_id
    assert api.clock()["timestamp"] is not None        # closed pools reconnect


def test_orders_and_activities_arguments_are_checked(account):
    api = anb.connect(base_url=account.url, data_url=account.url, key_id=account.key_id,
                      secret_key=account.secret_key)
    with pytest.raises(ValueError, match="status must be one of 'open', 'closed', 'all'"):
        api.orders(status="pending")
    with pytest.raises(ValueError, match="exactly one of order_id or client_order_id"):
        api.order()
    with pytest.raises(ValueError, match="activity_types"):
        api.activities(activity_types=["FILL", "not a type"])
    with pytest.raises(ValueError, match="date, or after/until"):
        api.activities(date="2024-01-02", after="2024-01-01")
    with pytest.raises(ValueError, match="asset_class must be one of"):
        api.assets(asset_class="bonds")
