"""``--db``: the sandbox keeps accounts, keys, orders, positions, activities and configuration in
SQLite, written through on every change, so neither a clean stop nor ``kill -9`` loses anything,
and open orders resume matching after a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from alpaca_nb.sandbox import Sandbox
from sandbox_trading_support import Api, admin, new_api

SYMBOL = "AAPL"


def snapshot(api: Api) -> dict:
    """What must survive a restart (prices that move with time left out)."""
    orders = api.get("/v2/orders", status="all", nested="false", limit=500).json()
    positions = {s: {k: p[k] for k in ("qty", "avg_entry_price", "cost_basis", "side", "asset_id")}
                 for s, p in api.positions().items()}
    acct = api.account()
    return {"orders": sorted(orders, key=lambda o: o["id"]), "positions": positions,
            "cash": acct["cash"], "account_id": acct["id"],
            "account_number": acct["account_number"],
            "config": api.get("/v2/account/configurations").json(),
            "activities": api.get("/v2/account/activities", direction="asc").json()}


def trade(api: Api) -> dict:
    """Fills, a short, an open limit order, a bracket with live legs and a config change."""
    api.order(symbol=SYMBOL, qty=5)
    api.order(symbol="TSLA", qty=2, side="sell")
    api.order(symbol="MSFT", qty=1, type="limit", limit_price=1.5, time_in_force="gtc",
              client_order_id="resting")
    api.order(symbol="SPY", qty=2, order_class="bracket", time_in_force="gtc",
              take_profit={"limit_price": 100000}, stop_loss={"stop_price": 1})
    assert api.patch("/v2/account/configurations", {"trade_confirm_email": "none"}).status_code == 200
    return snapshot(api)


def test_clean_restart_keeps_everything_and_only_hashes_of_secrets(tmp_path):
    db = tmp_path / "sandbox.db"
    with Sandbox(db=str(db)) as sb:
        api = new_api(sb)
        default = Api(sb.url, sb.key_id, sb.secret_key)
        default_id = default.account()["id"]
        before = trade(api)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert api.secret_key.encode() not in stored and sb.secret_key.encode() not in stored
    assert api.key_id.encode() in stored

    with Sandbox(db=str(db)) as sb2:
        api2 = Api(sb2.url, api.key_id, api.secret_key)
        after = snapshot(api2)
        assert after == before
        assert Api(sb2.url, sb2.key_id, sb2.secret_key).account()["id"] == default_id
        # the restored orders are live: cancel one, the legs still exit the position
        resting = api2.get("/v2/orders:by_client_order_id", client_order_id="resting").json()
        assert api2.delete(f"/v2/orders/{resting['id']}").status_code == 204
        dup = api2.post("/v2/orders", {"symbol": SYMBOL, "qty": 1, "side": "buy", "type": "market",
                                       "time_in_force": "day", "client_order_id": "resting"})
        assert dup.status_code == 422
        legs = [o for o in api2.get("/v2/orders").json() if o["symbol"] == "SPY"]
        assert {o["status"] for o in legs} == {"new"} and len(legs) == 2
        wrong = Api(sb2.url, api.key_id, "not-the-secret").get("/v2/account")
        assert wrong.status_code == 401


def test_open_orders_resume_matching_after_a_restart(tmp_path):
    db = tmp_path / "sandbox.db"
    # in regular hours (the market data follows NYSE sessions), at real-time speed
    with Sandbox(db=str(db), start="2024-03-06T15:00:00Z") as sb:
        api = new_api(sb, cash=50_000_000)
        placed = api.order(symbol=SYMBOL, qty=200_000, time_in_force="gtc")
        filled_before = float(api.get_order(placed["id"])["filled_qty"])
    assert 0 < filled_before < 200_000
    with Sandbox(db=str(db), start="2024-03-06T15:05:00Z") as sb2:
        api2 = Api(sb2.url, api.key_id, api.secret_key)
        for _ in range(300):            # real time: new quotes arrive every few hundred ms
            order = api2.get_order(placed["id"])
            if float(order["filled_qty"]) > filled_before:
                break
            time.sleep(0.05)
        assert float(order["filled_qty"]) > filled_before
        assert order["status"] in ("partially_filled", "filled")
        api2.delete(f"/v2/orders/{placed['id']}")        # stop it, then check the books agree
        order = api2.get_order(placed["id"])
        fills = api2.fills(placed["id"])
        assert sum(float(f["qty"]) for f in fills) == float(order["filled_qty"])
        assert float(api2.positions()[SYMBOL]["qty"]) == float(order["filled_qty"])


def test_a_file_that_is_not_a_sandbox_database_is_refused(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are not the tables you are looking for\n" * 100)
    with pytest.raises(ValueError, match="not an alpaca_nb sandbox database"):
        Sandbox(db=str(bogus)).start()


# ---------------------------------------------------------------- a real process, killed

def start_cli(db: Path) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("alpaca-nb")
    cmd = [exe] if exe else [sys.executable, "-m", "alpaca_nb.cli"]
    proc = subprocess.Popen(cmd + ["sandbox", "--db", str(db), "--port", "0", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    assert "listening on http://" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    url = line.split("listening on ")[1].split()[0]
    return proc, url


def test_kill_minus_nine_loses_nothing(tmp_path):
    db = tmp_path / "killed.db"
    proc, url = start_cli(db)
    try:
        from alpaca_nb.sandbox.app import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY

        class _Admin:
            key_id, secret_key = DEFAULT_KEY_ID, DEFAULT_SECRET_KEY
        _Admin.url = url
        resp = requests.post(f"{url}/sandbox/accounts", json={}, headers=admin(_Admin), timeout=10)
        keys = resp.json()
        api = Api(url, keys["key_id"], keys["secret_key"])
        before = trade(api)
        last = api.order(symbol="MSFT", qty=1)        # the last acknowledged change
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    proc, url = start_cli(db)
    try:
        api2 = Api(url, api.key_id, api.secret_key)
        after = snapshot(api2)
        assert api2.get_order(last["id"])["status"] == "filled"
        assert after["positions"]["MSFT"]["qty"] == "1"
        after["positions"].pop("MSFT")
        assert {k: v for k, v in after.items() if k not in ("orders", "activities", "cash")} == \
            {k: v for k, v in before.items() if k not in ("orders", "activities", "cash")}
        assert [o for o in after["orders"] if o["id"] != last["id"]] == before["orders"]
        assert after["activities"][:-1] == before["activities"]
        assert float(after["cash"]) < float(before["cash"])
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
