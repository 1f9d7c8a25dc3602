"""The Excel formulas: requests and time of a BDP grid, BDH over the bar cache, the live writer.

The sandbox runs in its own process (``alpaca-nb sandbox --port 0``); the client and the formulas
run here, called as Excel calls them. A recording proxy (tests/_http_proxy.py, a real TCP proxy)
between them counts the requests; it is in the path of every variant alike.

(a) A 20 x 5 BDP grid (20 symbols, fields bid, ask, last, change_pct, volume):
    naive per-cell calls (``api.snapshots([symbol])`` for each cell, what a plain UDF does),
    against the formulas: one formula per cell (``=ALPACA_BDP($A2,B$1)`` filled over the grid)
    cold, then recalculated within the short cache's interval, then recalculated after it
    expired; and one grid formula (``=ALPACA_BDP(A2:A21,B1:F1)``) cold and cached.
    The client-side rate limiter is raised out of the way so that times are the work itself;
    the request counts say what Alpaca's 200 requests/minute would make of each variant.
(b) BDH of one year of daily bars for 50 symbols: cold (empty on-disk bar cache), from the disk
    cache after the short cache was cleared (a new Excel session), and from the short cache.
(c) The live writer under a 10,000 quotes/s stream (``?quote_rate=10000``): writes per second
    to a recording range at max_hz 4 (the default) and 10, and the quotes the stream took in.

Every figure is the median over ``--runs`` runs. Usage::

    python benchmarks/bench_excel.py [--runs 5] [--seconds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import KEY_ID, SECRET, sandbox_process, tradable_symbols

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _http_proxy import RecordingProxy

import alpaca_nb as anb
from alpaca_nb import xl
from alpaca_nb.xl._cache import SnapshotCache

FIELDS = ["bid", "ask", "last", "change_pct", "volume"]
SNAPSHOT_COLUMN = {"bid": "bid_price", "ask": "ask_price", "last": "trade_price", "volume": "daily_volume"}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def naive_cell(api, symbol: str, field: str):
    """What a plain UDF does: one snapshot request per cell."""
    row = api.snapshots([symbol]).iloc[0]
    if field == "change_pct":
        return (row["trade_price"] / row["prev_daily_close"] - 1) * 100
    return row[SNAPSHOT_COLUMN[field]]


def measure(proxy: RecordingProxy, fn, path: str | None = None) -> tuple[float, int]:
    """Seconds ``fn()`` took and the requests it made (only those under ``path`` if given)."""
    before = proxy.count(path=path)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, proxy.count(path=path) - before


def summary(results: dict[str, list[tuple[float, int]]], unit: str = "requests") -> dict:
    return {name: {"ms": round(statistics.median(t for t, _ in v) * 1000, 2),
                   unit: statistics.median(n for _, n in v)} for name, v in results.items()}


def bench_bdp(url: str, runs: int) -> dict:
    with RecordingProxy(url) as proxy:
        api = anb.connect(base_url=proxy.url, data_url=proxy.url, key_id=KEY_ID, secret_key=SECRET,
                          rate_limit=1_000_000)
        symbols = tradable_symbols(url, 20)
        column, row = [[s] for s in symbols], [FIELDS]

        def per_cell():
            return [[xl.ALPACA_BDP([[s]], [[f]]) for f in FIELDS] for s in symbols]

        results: dict[str, list[tuple[float, int]]] = {}
        for _ in range(runs):
            clock = Clock()
            xl._snapshots = SnapshotCache(xl.LATEST_SECONDS, clock=clock)
            results.setdefault("naive per-cell calls", []).append(
                measure(proxy, lambda: [[naive_cell(api, s, f) for f in FIELDS] for s in symbols]))
            results.setdefault("per-cell formulas, cold", []).append(measure(proxy, per_cell))
            results.setdefault("per-cell formulas, recalculated (cached)", []).append(measure(proxy, per_cell))
            clock.now += xl.LATEST_SECONDS + 1
            results.setdefault("per-cell formulas, recalculated after expiry", []).append(measure(proxy, per_cell))
            xl._snapshots = SnapshotCache(xl.LATEST_SECONDS, clock=clock)
            results.setdefault("one grid formula, cold", []).append(
                measure(proxy, lambda: xl.ALPACA_BDP(column, row)))
            results.setdefault("one grid formula, recalculated (cached)", []).append(
                measure(proxy, lambda: xl.ALPACA_BDP(column, row)))
        api.close()
    return summary(results)


def bench_bdh(url: str, runs: int) -> dict:
    symbols = tradable_symbols(url, 50)
    end = dt.date.today() - dt.timedelta(days=2)
    start = end - dt.timedelta(days=365)
    results: dict[str, list[tuple[float, int]]] = {}
    rows = 0
    with RecordingProxy(url) as proxy:
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as cache_dir:
                os.environ["ALPACA_NB_CACHE_DIR"] = cache_dir
                api = anb.connect(base_url=proxy.url, data_url=proxy.url, key_id=KEY_ID, secret_key=SECRET,
                                  rate_limit=1_000_000)
                xl.clear_caches()

                def bdh():
                    return xl.ALPACA_BDH([[s] for s in symbols], [["close", "volume"]], start.isoformat(),
                                         end.isoformat(), "Per=1Day")

                bars = "/v2/stocks/bars"
                results.setdefault("cold (empty disk cache)", []).append(measure(proxy, bdh, bars))
                xl.clear_caches()
                results.setdefault("new session (disk cache)", []).append(measure(proxy, bdh, bars))
                table = bdh()
                results.setdefault("recalculated (short cache)", []).append(measure(proxy, bdh, bars))
                rows = len(table) - 1
                api.close()
    os.environ.pop("ALPACA_NB_CACHE_DIR", None)
    out: dict = summary(results, unit="bar requests")
    out["table"] = f"{rows} rows x {1 + 2 * len(symbols)} columns"
    return out


class RecordingRange:
    def __init__(self):
        self.writes = 0
        self.lock = threading.Lock()

    def write(self, values):
        with self.lock:
            self.writes += 1

    def close(self):
        pass


def bench_live(url: str, runs: int, seconds: float) -> dict:
    out = {}
    symbols = tradable_symbols(url, 10)
    for hz in (4.0, 10.0):
        rates, quotes = [], []
        for _ in range(runs):
            api = anb.connect(base_url=url, data_url=url, stream_url=f"ws{url[4:]}?quote_rate=10000",
                              key_id=KEY_ID, secret_key=SECRET)
            target = RecordingRange()
            writer = xl.start_quotes(symbols, target=lambda target=target: target, max_hz=hz)
            stream = writer._stream
            time.sleep(1.0)                                  # connected and flowing
            w0, m0, t0 = target.writes, stream.stats["messages"], time.monotonic()
            time.sleep(seconds)
            w1, m1, t1 = target.writes, stream.stats["messages"], time.monotonic()
            xl.stop_quotes()
            api.close()
            rates.append((w1 - w0) / (t1 - t0))
            quotes.append((m1 - m0) / (t1 - t0))
        out[f"max_hz={hz:g}"] = {"writes_per_s": statistics.median(rates),
                                 "quotes_per_s_received": statistics.median(quotes)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with sandbox_process() as url:
        results = {"bdp": bench_bdp(url, args.runs), "bdh": bench_bdh(url, args.runs),
                   "live": bench_live(url, args.runs, args.seconds)}
    for section, rows in results.items():
        print(f"\n{section}")
        for name, value in rows.items():
            print(f"  {name:48s} {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
