"""What one ``api.buy(...)`` costs a client: requests on the wire and milliseconds, with the
pre-trade guard asking the server every time (``guard_cache=0``, no stream: the price, the
account, then the POST), with its few seconds' cache (the price and the POST), and with a stream
of this client open on the symbol as well (the POST alone).

The sandbox runs in its own process. Requests are counted by a recording proxy in a first pass;
times are measured straight to the sandbox, the three variants interleaved round by round, and
reported as medians and ratios. Usage::

    python benchmarks/bench_orders.py [--rounds 5] [--orders 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests
from _common import HEADERS, sandbox_process

import alpaca_nb as anb

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _http_proxy import RecordingProxy  # noqa: E402

VARIANTS = ("ask every time", "cache", "cache + stream")


def new_keys(url: str) -> dict:
    return requests.post(f"{url}/sandbox/accounts", json={"cash": 1e9}, headers=HEADERS, timeout=10).json()


def client(url: str, keys: dict, variant: str):
    api = anb.connect(base_url=url, data_url=url, key_id=keys["key_id"], secret_key=keys["secret_key"],
                      guard_cache=0 if variant == "ask every time" else 3.0, max_order_notional=None,
                      rate_limit=100_000)
    stream = api.stream(quotes=["AAPL"], trades=["AAPL"]) if variant == "cache + stream" else None
    if stream is not None:
        deadline = time.monotonic() + 10
        while not stream.trades.df.loc["AAPL", "price"] > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    return api, stream


def requests_per_order(url: str, variant: str, orders: int) -> float:
    with RecordingProxy(url) as proxy:
        api, stream = client(proxy.url, new_keys(url), variant)
        api.buy("AAPL", 1)
        proxy.clear()
        for _ in range(orders):
            api.buy("AAPL", 1)
        rest = [t for _, t in proxy.requests if not t.startswith(("/v2/iex", "/v2/stocks/quotes/latest",
                                                                  "/v2/stocks/trades/latest"))]
        if stream is not None:
            stream.close()
    return len(rest) / orders


def ms_per_order(api, orders: int) -> float:
    times = []
    for _ in range(orders):
        t = time.perf_counter()
        api.buy("AAPL", 1)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--orders", type=int, default=40)
    args = parser.parse_args()
    with sandbox_process() as url:
        counts = {v: requests_per_order(url, v, args.orders) for v in VARIANTS}
        clients = {v: client(url, new_keys(url), v) for v in VARIANTS}
        for api, _ in clients.values():
            ms_per_order(api, 5)                                    # warm-up
        rounds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v in VARIANTS:
                rounds[v].append(ms_per_order(clients[v][0], args.orders))
        for _, stream in clients.values():
            if stream is not None:
                stream.close()
    base = statistics.median(rounds[VARIANTS[0]])
    print(f"{'variant':<16} {'requests/order':>15} {'ms/order (median)':>18} {'vs ask every time':>18}")
    for v in VARIANTS:
        ms = statistics.median(rounds[v])
        print(f"{v:<16} {counts[v]:>15.2f} {ms:>18.2f} {ms / base:>17.2f}x")


if __name__ == "__main__":
    main()
