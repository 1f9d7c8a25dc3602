"""How fast the sandbox trades, so that order-heavy notebooks and tests are never waiting on it.

(a) Order round trip over HTTP: ``POST /v2/orders`` for a marketable market order (validated,
    admitted, matched and filled before the answer), against ``GET /v2/clock`` (the HTTP floor
    of the same server), in memory and with ``--db`` (SQLite write-through: one committed
    transaction per order). Reported as medians and ratios.
(b) Submit-to-fill on the ``/stream`` WebSocket: from sending the POST to receiving the ``fill``
    trade update.
(c) The matching loop's cost per pass (one step) with 0, 100 and 1,000 resting orders, as a
    fraction of the loop's 50 ms tick, measured in process on the engine itself.

Each sandbox runs in its own process (``alpaca-nb sandbox --port 0``) for (a) and (b); every
figure is the median of several runs. Usage::

    python benchmarks/bench_sandbox_trading.py [--runs 5] [--orders 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
import websocket
from _common import HEADERS, sandbox_process

HERE = Path(__file__).resolve().parent


def new_account(url: str) -> requests.Session:
    keys = requests.post(f"{url}/sandbox/accounts", json={"cash": 1e12}, headers=HEADERS,
                         timeout=10).json()
    session = requests.Session()
    session.headers.update({"APCA-API-KEY-ID": keys["key_id"], "APCA-API-SECRET-KEY": keys["secret_key"]})
    return session


def round_trips(url: str, orders: int) -> tuple[float, float]:
    """Median seconds per POST (filled inside the answer) and per GET /v2/clock."""
    session = new_account(url)
    body = {"symbol": "AAPL", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day"}
    for _ in range(20):                                            # warm-up
        session.post(f"{url}/v2/orders", json=body, timeout=10)
        session.get(f"{url}/v2/clock", timeout=10)
    post, get = [], []
    for _ in range(orders):
        t = time.perf_counter()
        resp = session.post(f"{url}/v2/orders", json=body, timeout=10)
        post.append(time.perf_counter() - t)
        assert resp.status_code == 200, resp.text
        t = time.perf_counter()
        session.get(f"{url}/v2/clock", timeout=10)
        get.append(time.perf_counter() - t)
    return statistics.median(post), statistics.median(get)


def submit_to_fill(url: str, orders: int) -> float:
    session = new_account(url)
    key = session.headers["APCA-API-KEY-ID"]
    secret = session.headers["APCA-API-SECRET-KEY"]
    ws = websocket.create_connection("ws" + url[4:] + "/stream", timeout=10)
    ws.send(json.dumps({"action": "auth", "key": key, "secret": secret}))
    ws.recv()
    ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
    ws.recv()
    body = {"symbol": "MSFT", "qty": 1, "side": "buy", "type": "market", "time_in_force": "day"}
    times = []
    for _ in range(orders):
        t = time.perf_counter()
        session.post(f"{url}/v2/orders", json=body, timeout=10)
        while json.loads(ws.recv())["data"]["event"] != "fill":
            pass
        times.append(time.perf_counter() - t)
    ws.close()
    return statistics.median(times)


def matching_pass(resting: int, passes: int = 200) -> float:
    """Median seconds of one matching pass with ``resting`` open limit orders (in process)."""
    from alpaca_nb.sandbox.app import ENGINE, SandboxConfig, create_app

    app = create_app(SandboxConfig(start="2024-03-05T15:00:00Z", speed=1e-9))
    engine = app[ENGINE]
    account = engine.create_account("BENCH", "bench-secret", cash=1e12)
    symbols = ["AAPL", "MSFT", "SPY", "TSLA", "NVDA", "AMZN", "META", "GOOGL", "JPM", "XOM"]
    for i in range(resting):
        engine.submit_order(account, {"symbol": symbols[i % len(symbols)], "qty": 1, "side": "buy",
                                      "type": "limit", "limit_price": 1, "time_in_force": "gtc"})
    t0 = engine._processed_ns
    times = []
    for k in range(1, passes + 1):
        t = time.perf_counter()
        engine._advance(t0 + k * 50_000_000)                  # one 50 ms step of market time
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--orders", type=int, default=200)
    args = parser.parse_args()

    results: dict[str, list[float]] = {"post_mem": [], "post_db": [], "get_mem": [], "get_db": [],
                                       "fill_event": []}
    with tempfile.TemporaryDirectory() as tmp, sandbox_process() as mem_url, \
            sandbox_process(["--db", str(Path(tmp) / "bench.db")]) as disk_url:
        for _ in range(args.runs):          # interleaved so machine noise hits both alike
            p, g = round_trips(mem_url, args.orders)
            results["post_mem"].append(p)
            results["get_mem"].append(g)
            p, g = round_trips(disk_url, args.orders)
            results["post_db"].append(p)
            results["get_db"].append(g)
            results["fill_event"].append(submit_to_fill(mem_url, args.orders // 4))
    med = {k: statistics.median(v) for k, v in results.items()}
    passes = {n: matching_pass(n) for n in (0, 100, 1000)}

    report = {
        "order_round_trip_ms": {"memory": med["post_mem"] * 1e3, "sqlite": med["post_db"] * 1e3},
        "http_floor_ms_get_clock": {"memory": med["get_mem"] * 1e3, "sqlite": med["get_db"] * 1e3},
        "ratio_post_over_get_memory": med["post_mem"] / med["get_mem"],
        "ratio_sqlite_over_memory_post": med["post_db"] / med["post_mem"],
        "submit_to_fill_event_ms": med["fill_event"] * 1e3,
        "matching_pass_ms": {str(n): v * 1e3 for n, v in passes.items()},
        "matching_pass_fraction_of_50ms_tick": {str(n): v / 0.05 for n, v in passes.items()},
        "runs": args.runs, "orders_per_run": args.orders,
    }
    print(json.dumps(report, indent=2))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_sandbox_trading.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
