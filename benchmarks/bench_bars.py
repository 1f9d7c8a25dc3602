"""1,000,000 minute bars (100 symbols, multi-page) into a DataFrame: alpaca_nb vs alpaca-py vs the
floor (download the same pages and orjson.loads them), then the same request from the cache.

Run::

    python benchmarks/bench_bars.py                 # 5 rounds (alpaca-py 3), ~3 minutes
    python benchmarks/bench_bars.py --rounds 3 --bars 200000

The sandbox runs in its own process (``alpaca-nb sandbox --port 0``) so that the server's work
does not share this process's GIL. Every variant downloads exactly the same pages from it; a
warm-up pass fills the server's page cache first. Rounds interleave the variants so machine noise
hits them alike; the report gives medians and ratios. The cache hit is the same request again
with ``cache=True`` after one call filled the cache (also with ``adjustment="all"``, whose hit
first asks ``/v1/corporate-actions`` whether an action made the cached bars stale): every Parquet file is read from disk and
decoded on every hit (nothing is kept in memory between calls), so a hit in this process costs
what it costs in a new session. As evidence, the first call of fresh processes (after import and
connect) is timed too, from the network and from the cache. Peak memory is measured in fresh
subprocesses (network, alpaca-py and a cache hit): the growth of the peak RSS (``VmHWM``) during
the call, against the size of the frame it returns (``memory_usage(deep=True)`` including the
index).

The crypto row (``--crypto-only`` runs just it) is the same comparison for 1,000,000 minute bars
across 20 crypto pairs (``/v1beta3/crypto/us/bars``, 24/7, fractional volumes): the floor, ours,
alpaca-py's ``CryptoHistoricalDataClient(...).get_crypto_bars(...).df`` and a cache hit (UTC days).

Results are printed and written to ``benchmarks/results/bench_bars.json``
(``bench_bars_crypto.json`` with ``--crypto-only``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import orjson
import pandas as pd
import requests
from _common import HEADERS, KEY_ID, SECRET, sandbox_process, tradable_symbols

HERE = Path(__file__).resolve().parent
START = pd.Timestamp("2024-03-01 00:00", tz="America/New_York")


def request_window(bars: int, symbols: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """start/end (inclusive) giving exactly ``bars`` minute bars over ``symbols`` symbols in the
    always-open market (every minute has a bar)."""
    minutes = bars // symbols
    return START, START + pd.Timedelta(minutes=minutes - 1)


# ------------------------------------------------------------------ the variants

def crypto_pairs(url: str, count: int) -> list[str]:
    """The first ``count`` active USD crypto pairs of the sandbox, sorted."""
    assets = requests.get(f"{url}/v2/assets", params={"asset_class": "crypto"}, headers=HEADERS,
                          timeout=30).json()
    return sorted(a["symbol"] for a in assets if a["status"] == "active" and a["symbol"].endswith("/USD"))[:count]


def floor(url: str, symbols: list[str], start, end) -> int:
    """Download every page and orjson.loads it: the least any client must do."""
    session = requests.Session()
    session.headers.update(HEADERS)
    params = {"symbols": ",".join(symbols), "timeframe": "1Min", "limit": 10_000,
              "start": start.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
              "end": end.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")}
    rows = 0
    token = None
    while True:
        path = "/v1beta3/crypto/us/bars" if "/" in symbols[0] else "/v2/stocks/bars"
        page = orjson.loads(session.get(f"{url}{path}", params={**params, "page_token": token},
                                        timeout=60).content)
        rows += sum(len(v) for v in page["bars"].values())
        token = page.get("next_page_token")
        if not token:
            return rows


def ours(url: str, symbols: list[str], start, end, *, cache: bool = False,
         adjustment: str = "raw") -> pd.DataFrame:
    import alpaca_nb as anb

    api = anb.connect(base_url=url, data_url=url, key_id=KEY_ID, secret_key=SECRET, rate_limit=100_000)
    return api.bars(symbols, "1Min", start, end, cache=cache, progress=False, adjustment=adjustment)


def alpaca_py(url: str, symbols: list[str], start, end) -> pd.DataFrame:
    from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
    from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
    from alpaca.data.timeframe import TimeFrame

    if "/" in symbols[0]:
        crypto = CryptoHistoricalDataClient(KEY_ID, SECRET, url_override=url)
        return crypto.get_crypto_bars(CryptoBarsRequest(
            symbol_or_symbols=symbols, timeframe=TimeFrame.Minute, start=start.tz_convert("UTC").to_pydatetime(),
            end=end.tz_convert("UTC").to_pydatetime())).df

    client = StockHistoricalDataClient(KEY_ID, SECRET, url_override=url)
    req = StockBarsRequest(symbol_or_symbols=symbols, timeframe=TimeFrame.Minute,
                           start=start.tz_convert("UTC").to_pydatetime(),
                           end=end.tz_convert("UTC").to_pydatetime())
    return client.get_stock_bars(req).df


def timed(fn, *args, **kw) -> tuple[float, object]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------ memory, in fresh processes

def memory_probe(variant: str, url: str, symbols: list[str], start: str, end: str) -> dict:
    """Run one variant in this (fresh) process and report peak RSS growth vs the frame size."""
    s, e = pd.Timestamp(start), pd.Timestamp(end)
    fn = {"ours": ours, "alpaca_py": alpaca_py, "ours_cache_hit": partial(ours, cache=True)}[variant]
    fn(url, symbols[:1], s, s + pd.Timedelta(minutes=10))        # imports and connections warm
    gc.collect()
    before = _status_kib("VmRSS") * 1024
    _reset_peak()
    df = fn(url, symbols, s, e)
    peak = _status_kib("VmHWM") * 1024
    size = int(df.memory_usage(deep=True, index=True).sum())
    return {"rows": len(df), "frame_bytes": size, "peak_growth_bytes": peak - before,
            "ratio": (peak - before) / size}


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB. (ru_maxrss is not used: on Linux a child started
    with fork+exec inherits the parent's peak in it.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Start VmHWM afresh from the current RSS (Linux clear_refs); required for the probe."""
    Path("/proc/self/clear_refs").write_text("5")


def fresh_probe(url: str, symbols: list[str], start: str, end: str, cache: bool) -> dict:
    """The first ``bars()`` call of this (fresh) process, after import and connect: from the
    network (``cache=False``) or from the cache filled by an earlier process."""
    import alpaca_nb as anb

    api = anb.connect(base_url=url, data_url=url, key_id=KEY_ID, secret_key=SECRET, rate_limit=100_000)
    seconds, df = timed(api.bars, symbols, "1Min", pd.Timestamp(start), pd.Timestamp(end), cache=cache,
                        progress=False)
    return {"seconds": seconds, "rows": len(df)}


def run_probe(variant: str, url: str, symbols: list[str], start, end) -> dict:
    args = f"{url!r}, {symbols!r}, {str(start)!r}, {str(end)!r}"
    probe = f"fresh_probe({args}, {variant == 'fresh_hit'})" if variant.startswith("fresh_") \
        else f"memory_probe({variant!r}, {args})"
    code = f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_bars as b; print(json.dumps(b.{probe}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alpaca-py-rounds", type=int, default=3)
    parser.add_argument("--skip-alpaca-py", action="store_true")
    parser.add_argument("--crypto-pairs", type=int, default=20)
    parser.add_argument("--crypto-only", action="store_true", help="run only the crypto row")
    args = parser.parse_args(argv)
    if args.crypto_only:
        return crypto_main(args)

    with tempfile.TemporaryDirectory(prefix="anb-bench-cache-") as cache_dir, sandbox_process() as url:
        os.environ["ALPACA_NB_CACHE_DIR"] = cache_dir
        symbols = tradable_symbols(url, args.symbols)
        start, end = request_window(args.bars, len(symbols))
        print(f"sandbox {url}; {len(symbols)} symbols, 1Min bars {start} .. {end} "
              f"({args.bars:,} bars expected)")
        rows = floor(url, symbols, start, end)                         # warm the server's pages
        assert rows == args.bars, rows
        times: dict[str, list[float]] = {"floor": [], "ours": [], "alpaca_py": [], "cache_hit": [],
                                         "cache_hit_adjusted": [], "fresh_process_network": [],
                                         "fresh_process_hit": []}
        check = compare(url, symbols, start, end, args, times)

        cold, filled = timed(ours, url, symbols, start, end, cache=True)      # fills the cache
        pd.testing.assert_frame_equal(filled, check)
        del filled
        for _ in range(args.rounds):
            t, hit = timed(ours, url, symbols, start, end, cache=True)    # every file read again
            times["cache_hit"].append(t)
            pd.testing.assert_frame_equal(hit, check)
            del hit
        del check
        adjusted = ours(url, symbols, start, end, adjustment="all")
        ours(url, symbols, start, end, cache=True, adjustment="all")            # fills the cache
        for _ in range(args.rounds):        # adjusted: one /v1/corporate-actions request, then files
            t, hit = timed(ours, url, symbols, start, end, cache=True, adjustment="all")
            times["cache_hit_adjusted"].append(t)
            pd.testing.assert_frame_equal(hit, adjusted)
            del hit
        del adjusted
        for _ in range(args.rounds):                   # a new session: first call of a new process
            for variant in ("fresh_process_network", "fresh_process_hit"):
                probe = run_probe(variant.replace("_process", ""), url, symbols, start, end)
                assert probe["rows"] == args.bars
                times[variant].append(probe["seconds"])

        mem = {"ours": run_probe("ours", url, symbols, start, end),
               "ours_cache_hit": run_probe("ours_cache_hit", url, symbols, start, end)}
        if not args.skip_alpaca_py:
            mem["alpaca_py"] = run_probe("alpaca_py", url, symbols, start, end)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    report = {
        "bars": args.bars, "symbols": len(symbols), "rounds": args.rounds,
        "median_seconds": med, "all_seconds": times, "cold_with_cache_write_seconds": cold,
        "ratios": {
            "alpaca_py_over_ours": med.get("alpaca_py", float("nan")) / med["ours"],
            "ours_over_floor": med["ours"] / med["floor"],
            "network_over_cache_hit": med["ours"] / med["cache_hit"],
            "adjusted_over_raw_cache_hit": med["cache_hit_adjusted"] / med["cache_hit"],
            "fresh_process_network_over_hit": med["fresh_process_network"] / med["fresh_process_hit"],
        },
        "memory": mem,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "pandas": pd.__version__},
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print("\nmedian seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    r = report["ratios"]
    print(f"alpaca-py / ours          {r['alpaca_py_over_ours']:.1f}x   (goal >= 10x)")
    print(f"ours / floor              {r['ours_over_floor']:.2f}x  (goal <= 1.5x)")
    print(f"network / cache hit       {r['network_over_cache_hit']:.1f}x   (goal >= 20x; every file "
          "read from disk and decoded)")
    print(f"adjusted / raw cache hit  {r['adjusted_over_raw_cache_hit']:.2f}x  (the corporate-actions "
          "check of adjustment='all')")
    print(f"same, in new processes    {r['fresh_process_network_over_hit']:.1f}x   (first call of a "
          "fresh process: network vs cache)")
    for k, m in mem.items():
        print(f"peak RSS growth, {k:14s}  {m['peak_growth_bytes'] / 2**20:,.0f} MiB = {m['ratio']:.2f}x the "
              f"frame ({m['frame_bytes'] / 2**20:,.0f} MiB)" + ("  (goal <= 3x)" if k == "ours" else ""))
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_bars.json").write_text(json.dumps(report, indent=2))
    return 0


def compare(url: str, symbols: list[str], start, end, args, times: dict[str, list[float]]) -> pd.DataFrame:
    """Interleaved rounds of floor, ours and alpaca-py on one request (asserting they agree);
    appends to ``times`` and returns our frame."""
    check = None
    for r in range(args.rounds):
        t, _ = timed(floor, url, symbols, start, end)
        times["floor"].append(t)
        t, df = timed(ours, url, symbols, start, end)
        times["ours"].append(t)
        assert len(df) == args.bars and df.index.is_unique
        check = df
        if not args.skip_alpaca_py and r < args.alpaca_py_rounds:
            t, ref = timed(alpaca_py, url, symbols, start, end)
            times["alpaca_py"].append(t)
            assert len(ref) == args.bars
            pd.testing.assert_frame_equal(
                ref.astype("float64"), df.set_axis(df.index.set_levels(
                    df.index.levels[1].as_unit(ref.index.levels[1].unit), level=1)),
                check_dtype=False, check_index_type=False, check_names=False)
            del ref
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items() if len(v) > r))
    return check


def crypto_main(args) -> int:
    """The crypto row: ``args.bars`` minute bars across ``args.crypto_pairs`` pairs."""
    with tempfile.TemporaryDirectory(prefix="anb-bench-cache-") as cache_dir, sandbox_process() as url:
        os.environ["ALPACA_NB_CACHE_DIR"] = cache_dir
        pairs = crypto_pairs(url, args.crypto_pairs)
        start, end = request_window(args.bars, len(pairs))
        print(f"sandbox {url}; {len(pairs)} crypto pairs, 1Min bars {start} .. {end} ({args.bars:,} bars expected)")
        rows = floor(url, pairs, start, end)                         # warm the server's pages
        assert rows == args.bars, rows
        times: dict[str, list[float]] = {"floor": [], "ours": [], "alpaca_py": [], "cache_hit": []}
        check = compare(url, pairs, start, end, args, times)
        pd.testing.assert_frame_equal(ours(url, pairs, start, end, cache=True), check)   # fills the cache
        for _ in range(args.rounds):
            t, hit = timed(ours, url, pairs, start, end, cache=True)
            times["cache_hit"].append(t)
            pd.testing.assert_frame_equal(hit, check)
            del hit
    med = {k: statistics.median(v) for k, v in times.items() if v}
    report = {
        "bars": args.bars, "pairs": pairs, "rounds": args.rounds, "median_seconds": med, "all_seconds": times,
        "ratios": {"alpaca_py_over_ours": med.get("alpaca_py", float("nan")) / med["ours"],
                   "ours_over_floor": med["ours"] / med["floor"],
                   "network_over_cache_hit": med["ours"] / med["cache_hit"]},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "pandas": pd.__version__},
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    print("\ncrypto, median seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    r = report["ratios"]
    print(f"alpaca-py / ours          {r['alpaca_py_over_ours']:.1f}x   (goal >= 10x)")
    print(f"ours / floor              {r['ours_over_floor']:.2f}x  (goal <= 1.5x)")
    print(f"network / cache hit       {r['network_over_cache_hit']:.1f}x")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_bars_crypto.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
