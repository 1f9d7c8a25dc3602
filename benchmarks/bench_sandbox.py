"""How fast the sandbox serves market data, so it is never the bottleneck of a client benchmark.

(a) Bars over HTTP: 1,000,000 one-minute bars across 100 symbols in 10,000-bar pages
    (``/v2/stocks/bars?symbols=...``), read by a plain ``requests`` + ``orjson.loads`` consumer.
    Cold = the first pass after the server starts (nothing serialised yet); warm = the same
    pages again. For every page the server's own build time (its ``Server-Timing`` header) is
    set against the client's ``orjson.loads`` time for that page.
(c) Crypto bars over HTTP: the same, 1,000,000 one-minute bars across 20 crypto pairs
    (``/v1beta3/crypto/us/bars``), cold and warm.
(b) Quotes over the data WebSocket in flood mode (``?quote_rate=N``): a raw websocket-client
    consumer that only counts quotes (no JSON/msgpack decoding), for JSON and msgpack frames.

The sandbox runs in its own process (``alpaca-nb sandbox --port 0``); every figure is the median
of several runs. Usage::

    python benchmarks/bench_sandbox.py [--runs 3] [--seconds 3] [--symbols 100] [--json results/bench_sandbox.json]
    python benchmarks/bench_sandbox.py --compare DIR [--runs 5]     # (a), this checkout and DIR's

Stocks are read from 2024-01-02 over the first minutes with bars of the sandbox's own
``/v2/calendar`` sessions, so a version whose market trades 24/7 and one that follows NYSE
sessions both serve the same number of bars.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from zoneinfo import ZoneInfo

import orjson
import requests
import websocket
from _common import HEADERS, KEY_ID, SECRET, sandbox_process, tradable_symbols

CRYPTO_BARS = "/v1beta3/crypto/us/bars"
CRYPTO_PAIRS = ["AAVE/USD", "AVAX/USD", "BAT/USD", "BCH/USD", "BTC/USD", "CRV/USD", "DOGE/USD",
                "DOT/USD", "ETH/USD", "GRT/USD", "LINK/USD", "LTC/USD", "MKR/USD", "PEPE/USD",
                "SHIB/USD", "SOL/USD", "SUSHI/USD", "UNI/USD", "XRP/USD", "XTZ/USD"]


def bar_window(url: str, per_symbol: int) -> tuple[dt.datetime, dt.datetime]:
    """The first ``per_symbol`` minutes with stock bars from 2024-01-02 on, as (start, end): the
    sandbox has a bar in every minute of its ``/v2/calendar`` sessions (``session_open`` to
    ``session_close``, New York time; "2359" closes at midnight)."""
    days = requests.get(f"{url}/v2/calendar", params={"start": "2024-01-02", "end": "2024-12-31"},
                        headers=HEADERS, timeout=30).json()
    ny = ZoneInfo("America/New_York")
    left, start = per_symbol, None
    for day in days:
        date = dt.date.fromisoformat(day["date"])
        opens, close = day["session_open"], day["session_close"]
        first = dt.datetime.combine(date, dt.time(int(opens[:2]), int(opens[2:])), ny)
        last = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(0), ny) if close == "2359" else \
            dt.datetime.combine(date, dt.time(int(close[:2]), int(close[2:])), ny)
        start = start or first
        minutes = int((last - first).total_seconds() // 60)
        if minutes >= left:
            return start, first + dt.timedelta(minutes=left - 1)
        left -= minutes
    raise ValueError(f"2024 has fewer than {per_symbol} minutes of bars")


def pull_bars(url: str, symbols: list[str], per_symbol: int, path: str = "/v2/stocks/bars") -> dict:
    """Read every page of ``path``; returns totals and per-page server/parse/request times (ms)."""
    session = requests.Session()
    session.headers.update(HEADERS)
    if path == "/v2/stocks/bars":       # stocks trade in the sessions of the sandbox's calendar
        start, end = bar_window(url, per_symbol)
    else:                               # crypto has a bar every minute
        start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        end = start + dt.timedelta(minutes=per_symbol - 1)
    params = {"symbols": ",".join(symbols), "timeframe": "1Min", "start": start.isoformat(),
              "end": end.isoformat(), "limit": 10_000}
    bars = pages = 0
    server, parse, request, ahead = [], [], [], []
    started = time.perf_counter()
    token = None
    while True:
        if token:
            params["page_token"] = token
        t0 = time.perf_counter()
        resp = session.get(url + path, params=params, timeout=60)
        t1 = time.perf_counter()
        body = orjson.loads(resp.content)
        t2 = time.perf_counter()
        resp.raise_for_status()
        pages += 1
        bars += sum(len(v) for v in body["bars"].values())
        timing = dict(item.strip().split(";dur=") for item in resp.headers["Server-Timing"].split(","))
        server.append(float(timing["page"]))
        ahead.append(float(timing.get("readahead", 0.0)))
        request.append((t1 - t0) * 1000)
        parse.append((t2 - t1) * 1000)
        token = body["next_page_token"]
        if token is None:
            break
    elapsed = time.perf_counter() - started
    return {"bars": bars, "pages": pages, "seconds": elapsed, "bars_per_s": bars / elapsed,
            "server_ms": statistics.median(server), "parse_ms": statistics.median(parse),
            "ahead_ms": statistics.median(ahead[1:]) if len(ahead) > 1 else 0.0,
            "request_ms": statistics.median(request)}


def flood(url: str, symbols: list[str], *, use_msgpack: bool, seconds: float, rate: int) -> float:
    """Quotes per second received by a consumer that only counts them."""
    header = ["Content-Type: application/msgpack"] if use_msgpack else []
    ws = websocket.create_connection(f"ws{url[4:]}/v2/iex?quote_rate={rate}", header=header,
                                     timeout=10, skip_utf8_validation=True)
    send = (lambda obj: ws.send_binary(__import__("msgpack").packb(obj))) if use_msgpack else \
        (lambda obj: ws.send(json.dumps(obj)))
    ws.recv()
    send({"action": "auth", "key": KEY_ID, "secret": SECRET})
    ws.recv()
    send({"action": "subscribe", "quotes": symbols})
    marker = b"\xa1T\xa1q" if use_msgpack else b'"T":"q"'
    count, started = 0, None
    while True:
        _, data = ws.recv_data()
        if started is None:                      # the subscription echo: start the clock
            started = time.perf_counter()
            continue
        count += data.count(marker)
        if time.perf_counter() - started >= seconds:
            break
    elapsed = time.perf_counter() - started
    ws.close()
    return count / elapsed


def compare(args, per_symbol: int) -> int:
    """(a) for this checkout and ``args.compare`` side by side (see ``--compare``)."""
    versions = {"this": None, "compare": args.compare}
    rows: dict[tuple[str, str], list[dict]] = {(v, p): [] for v in versions for p in ("cold", "warm")}
    for run in range(args.runs):
        for name in (list(versions) if run % 2 == 0 else list(versions)[::-1]):
            with sandbox_process(source=versions[name]) as url:
                symbols = tradable_symbols(url, args.symbols)
                for phase in ("cold", "warm"):
                    rows[name, phase].append(pull_bars(url, symbols, per_symbol))
            print(f"run {run + 1} {name}: cold {rows[name, 'cold'][-1]['bars_per_s']:,.0f}, "
                  f"warm {rows[name, 'warm'][-1]['bars_per_s']:,.0f} bars/s", file=sys.stderr)
    med = lambda r, k: statistics.median(x[k] for x in r)     # noqa: E731
    print(f"\n(a) side by side, {rows['this', 'cold'][0]['bars']:,} bars, median of {args.runs} runs")
    print(f"{'':14} {'bars/s':>12} {'server ms/page':>15} {'read-ahead ms':>14} {'parse ms/page':>14}")
    for (name, phase), r in rows.items():
        print(f"{phase + ' ' + name:14} {med(r, 'bars_per_s'):>12,.0f} {med(r, 'server_ms'):>15.2f} "
              f"{med(r, 'ahead_ms'):>14.2f} {med(r, 'parse_ms'):>14.2f}")
    for phase in ("cold", "warm"):
        ratio = med(rows["this", phase], "bars_per_s") / med(rows["compare", phase], "bars_per_s")
        print(f"{phase}: this / compare = {ratio:.2f}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--bars", type=int, default=1_000_000, help="total one-minute bars")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one flood run")
    parser.add_argument("--rate", type=int, default=5_000_000, help="flood quote_rate asked for")
    parser.add_argument("--crypto-pairs", type=int, default=20, help="crypto pairs of (c)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--compare", metavar="DIR",
                        help="(a) only: this checkout and the sandbox of checkout DIR (e.g. an export "
                             "of main), alternating which goes first in every run; prints both and "
                             "their ratio")
    args = parser.parse_args(argv)
    per_symbol = args.bars // args.symbols
    if args.compare:
        return compare(args, per_symbol)

    cold, warm = [], []
    for run in range(args.runs):
        with sandbox_process() as url:
            symbols = tradable_symbols(url, args.symbols)
            cold.append(pull_bars(url, symbols, per_symbol))
            warm.append(pull_bars(url, symbols, per_symbol))
        print(f"run {run + 1}: cold {cold[-1]['bars_per_s']:,.0f} bars/s, warm {warm[-1]['bars_per_s']:,.0f} bars/s",
              file=sys.stderr)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    print(f"\n(a) {cold[0]['bars']:,} one-minute bars, {args.symbols} symbols, {cold[0]['pages']} pages "
          f"of 10,000 (median of {args.runs} runs)")
    print(f"{'':6} {'bars/s':>12} {'total s':>8} {'server ms/page':>15} {'read-ahead ms':>14} "
          f"{'client parse ms/page':>21} {'request ms/page':>16} {'server/parse':>13}")
    for name, rows in (("cold", cold), ("warm", warm)):
        print(f"{name:6} {med(rows, 'bars_per_s'):>12,.0f} {med(rows, 'seconds'):>8.2f} "
              f"{med(rows, 'server_ms'):>15.2f} {med(rows, 'ahead_ms'):>14.2f} {med(rows, 'parse_ms'):>21.2f} "
              f"{med(rows, 'request_ms'):>16.2f} {med(rows, 'server_ms') / med(rows, 'parse_ms'):>13.2f}")
    print("server ms/page: building the answer while the client waits (Server-Timing page);"
          " read-ahead ms: building the next page's chunks while the client parses (Server-Timing readahead)")

    crypto_cold, crypto_warm = [], []
    pairs = CRYPTO_PAIRS[:args.crypto_pairs]
    for run in range(args.runs):
        with sandbox_process() as url:
            crypto_cold.append(pull_bars(url, pairs, args.bars // len(pairs), CRYPTO_BARS))
            crypto_warm.append(pull_bars(url, pairs, args.bars // len(pairs), CRYPTO_BARS))
    print(f"\n(c) {crypto_cold[0]['bars']:,} one-minute crypto bars, {len(pairs)} pairs, "
          f"{crypto_cold[0]['pages']} pages of 10,000 (median of {args.runs} runs)")
    print(f"{'':6} {'bars/s':>12} {'total s':>8} {'server ms/page':>15} {'client parse ms/page':>21}")
    for name, rows in (("cold", crypto_cold), ("warm", crypto_warm)):
        print(f"{name:6} {med(rows, 'bars_per_s'):>12,.0f} {med(rows, 'seconds'):>8.2f} "
              f"{med(rows, 'server_ms'):>15.2f} {med(rows, 'parse_ms'):>21.2f}")

    with sandbox_process() as url:
        symbols = tradable_symbols(url, 10)
        results = {}
        for codec in ("json", "msgpack"):
            runs = [flood(url, symbols, use_msgpack=codec == "msgpack", seconds=args.seconds, rate=args.rate)
                    for _ in range(args.runs)]
            results[codec] = statistics.median(runs)
    print(f"\n(b) data stream flood (asked {args.rate:,} quotes/s, 10 symbols, {args.seconds:g} s runs, "
          f"median of {args.runs})")
    for codec, rate in results.items():
        print(f"{codec:8} {rate:>12,.0f} quotes/s received")
    if args.json:
        keys = ("bars_per_s", "seconds", "server_ms", "ahead_ms", "parse_ms", "request_ms")
        report = {"bars": cold[0]["bars"], "symbols": args.symbols, "pages": cold[0]["pages"], "runs": args.runs,
                  "cold": {k: med(cold, k) for k in keys}, "warm": {k: med(warm, k) for k in keys},
                  "flood_quotes_per_s": results, "flood_rate_asked": args.rate,
                  "crypto": {"pairs": len(pairs), "cold": {k: med(crypto_cold, k) for k in keys},
                             "warm": {k: med(crypto_warm, k) for k in keys}}}
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
