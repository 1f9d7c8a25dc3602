"""alpaca_nb's stream against alpaca-py's StockDataStream(raw_data=True), side by side, on the same
sandbox quote flood.

The sandbox runs in its own process (``alpaca-nb sandbox --port 0``) and floods each data-stream
connection with quotes (``?quote_rate=N`` on the stream URL: pre-encoded batches of quotes for the
subscribed symbols whose ``t`` is the wall-clock send time). Each client gets its own sandbox
account (one connection per key), and the two clients take turns, never running together.

(a) Throughput: the flood asks for far more than either client can take, so each runs flat out.
    alpaca_nb: quotes decoded and applied to the LiveTable (``stream.stats["messages"]``).
    alpaca-py: quotes handed to its async handler (which only counts), the least it can do.
    Also the CPU each client's process used per second and per quote.
(b) Latency at 10,000 quotes/s: from the sandbox's send timestamp to the moment the quote is in
    the LiveTable (sampled once per frame: every quote of a flood frame has the same ``t``), and
    to alpaca-py's handler; p50 and p99. Also alpaca_nb's send-to-callback latency.
(c) CPU of the stream threads while idle (connected, subscribed to something silent).
(d) Codecs: decoding + applying the same 1,000-quote frame from JSON (orjson) and from msgpack
    (as the sandbox sends it, with Timestamp extensions; ``msgpack=True``), in process, through
    the hub's own decode.

Every figure is the median over ``--runs`` runs. Usage::

    python benchmarks/bench_stream.py [--runs 5] [--seconds 4] [--symbols 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import msgpack
import orjson
import psutil
import requests
from _common import HEADERS, sandbox_process

import alpaca_nb as anb
from alpaca_nb.stream._socket import decode as socket_decode
from alpaca_nb.stream._table import Store

SYMBOLS = ["AAPL", "MSFT", "SPY", "NVDA", "AMD", "TSLA", "AMZN", "GOOG", "META", "NFLX", "QQQ", "IWM",
           "INTC", "ORCL", "CSCO", "PEP", "KO", "DIS", "BA", "JPM"]
FLOOD = 5_000_000          # quotes/s asked for in the throughput runs (more than anyone takes)


def new_keys(url: str) -> tuple[str, str]:
    resp = requests.post(url + "/sandbox/accounts", json={}, timeout=10,
                         headers=HEADERS)
    resp.raise_for_status()
    body = resp.json()
    return body["key_id"], body["secret_key"]


def thread_cpu(native_ids: set[int]) -> float:
    """CPU seconds of these threads: nanosecond schedstat on Linux, else psutil (10 ms ticks)."""
    total = 0.0
    for tid in native_ids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            total += sum(t.user_time + t.system_time for t in psutil.Process().threads() if t.id == tid)
    return total


def iso_ns(text: str) -> int:
    """'2026-11-21T06:46:00.746336638Z' -> epoch ns (the flood always sends 9 digits)."""
    base = dt.datetime.fromisoformat(text[:19]).replace(tzinfo=dt.timezone.utc)
    frac = text[20:-1] if len(text) > 20 else ""
    return int(base.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


# ---------------------------------------------------------------- the two clients

class Ours:
    name = "alpaca_nb"

    def __init__(self, url: str, symbols: list[str], rate: int, *, latency: bool = False, callback: bool = False):
        key, secret = new_keys(url)
        self.api = anb.connect(base_url=url, data_url=url, stream_url=f"ws{url[4:]}?quote_rate={rate}",
                               key_id=key, secret_key=secret)
        self.stream = self.api.stream(quotes=symbols)
        self.hub = self.stream._data
        self.samples: list[int] = []
        self.callback_samples: list[int] = []
        if latency:
            original = self.hub.store.apply
            samples = self.samples

            def timed_apply(messages, now_ns):       # one sample per frame, taken after applying
                other = original(messages, now_ns)
                last = messages[-1]
                if isinstance(last, dict) and last.get("T") == "q":
                    samples.append(time.time_ns() - iso_ns(last["t"]))
                return other

            self.hub.store.apply = timed_apply
        if callback:
            def on_quote(q, sink=self.callback_samples):
                sink.append(time.time_ns() - q["timestamp"].value)
            self.stream.on("quote", on_quote)

    def count(self) -> int:
        return self.stream.stats["messages"]

    def threads(self) -> set[int]:
        return {self.hub._thread.native_id}

    def close(self) -> None:
        self.stream.close()


class AlpacaPy:
    name = "alpaca-py"

    def __init__(self, url: str, symbols: list[str], rate: int, *, latency: bool = False, callback: bool = False):
        from alpaca.data.enums import DataFeed
        from alpaca.data.live import StockDataStream

        key, secret = new_keys(url)
        self.stream = StockDataStream(key, secret, raw_data=True, feed=DataFeed.IEX,
                                      url_override=f"ws{url[4:]}/v2/iex?quote_rate={rate}")
        self.n = 0
        self.samples: list[int] = []
        samples = self.samples
        if latency:
            async def handler(msg):
                self.n += 1
                samples.append(time.time_ns() - msg["t"].to_unix_nano())
        else:
            async def handler(msg):
                self.n += 1
        self.stream.subscribe_quotes(handler, *symbols)
        self.thread = threading.Thread(target=self.stream.run, daemon=True, name="alpaca-py-stream")
        self.thread.start()
        deadline = time.monotonic() + 15
        while self.n == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.n == 0:
            raise RuntimeError("alpaca-py received nothing")

    def count(self) -> int:
        return self.n

    def threads(self) -> set[int]:
        return {self.thread.native_id}

    def close(self) -> None:
        self.stream.stop()
        self.thread.join(10)


# ---------------------------------------------------------------- measurements

def throughput(client_cls, url, symbols, seconds) -> dict:
    client = client_cls(url, symbols, FLOOD)
    try:
        time.sleep(1.0)                                 # past connect, refill and TCP ramp-up
        proc = psutil.Process()
        n0, t0, c0, th0 = client.count(), time.monotonic(), proc.cpu_times(), thread_cpu(client.threads())
        time.sleep(seconds)
        n1, t1, c1, th1 = client.count(), time.monotonic(), proc.cpu_times(), thread_cpu(client.threads())
    finally:
        client.close()
    wall = t1 - t0
    quotes = n1 - n0
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return {"quotes_per_s": quotes / wall, "process_cpu_per_s": cpu / wall,
            "stream_thread_cpu_per_s": (th1 - th0) / wall, "cpu_us_per_quote": cpu / quotes * 1e6}


def latency(client_cls, url, symbols, seconds, rate=10_000, callback=False) -> dict:
    client = client_cls(url, symbols, rate, latency=not callback, callback=callback)
    try:
        time.sleep(1.0)
        n0 = client.count()
        sink = client.callback_samples if callback else client.samples
        sink.clear()
        t0 = time.monotonic()
        time.sleep(seconds)
        rate_seen = (client.count() - n0) / (time.monotonic() - t0)
        samples = sorted(sink)
    finally:
        client.close()
    q = statistics.quantiles(samples, n=100)
    return {"p50_ms": q[49] / 1e6, "p99_ms": q[98] / 1e6, "max_ms": samples[-1] / 1e6,
            "samples": len(samples), "quotes_per_s": rate_seen}


def idle_cpu(url, seconds) -> dict:
    out = {}
    key, secret = new_keys(url)
    api = anb.connect(base_url=url, data_url=url, stream_url=f"ws{url[4:]}", key_id=key, secret_key=secret)
    stream = api.stream(statuses=["AAPL"])               # connected, subscribed, nothing arrives
    hub = stream._data
    ids = {hub._thread.native_id, hub.fanout._thread.native_id}
    time.sleep(0.5)
    c0, t0 = thread_cpu(ids), time.monotonic()
    time.sleep(seconds)
    out["alpaca_nb_threads_cpu_per_s"] = (thread_cpu(ids) - c0) / (time.monotonic() - t0)
    stream.close()

    from alpaca.data.enums import DataFeed
    from alpaca.data.live import StockDataStream
    key, secret = new_keys(url)
    sdk = StockDataStream(key, secret, raw_data=True, feed=DataFeed.IEX, url_override=f"ws{url[4:]}/v2/iex")

    async def nothing(msg):
        pass

    sdk.subscribe_trading_statuses(nothing, "AAPL")
    thread = threading.Thread(target=sdk.run, daemon=True)
    thread.start()
    time.sleep(1.5)
    c0, t0 = thread_cpu({thread.native_id}), time.monotonic()
    time.sleep(seconds)
    out["alpaca_py_thread_cpu_per_s"] = (thread_cpu({thread.native_id}) - c0) / (time.monotonic() - t0)
    sdk.stop()
    thread.join(10)
    return out


def codec_cost(repeats: int = 200) -> dict:
    """Decode + apply one 1,000-quote frame as the stream hub does: JSON (orjson) vs msgpack
    (Timestamp ext, turned into RFC-3339 strings; ``msgpack=True``), us/quote."""
    now = time.time_ns()
    quotes = [{"T": "q", "S": SYMBOLS[i % len(SYMBOLS)], "bx": "V", "bp": 100.01 + i % 7, "bs": 300,
               "ax": "N", "ap": 100.05 + i % 7, "as": 200, "c": ["R"], "z": "C"} for i in range(1000)]
    as_json = orjson.dumps([dict(q, t="2026-11-21T06:46:00.746336638Z") for q in quotes])
    as_msgpack = msgpack.packb([dict(q, t=msgpack.Timestamp.from_unix_nano(now)) for q in quotes])
    out = {}
    for name, frame, decode in (("json_orjson", as_json, socket_decode),         # the client's two codecs
                                ("msgpack", as_msgpack, lambda b: socket_decode(b, use_msgpack=True))):
        store = Store()
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeats):
                store.apply(decode(frame), now)
            best.append((time.perf_counter() - t0) / (repeats * 1000) * 1e6)
        out[name + "_us_per_quote"] = min(best)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results") / "bench_stream.json"))
    args = parser.parse_args(argv)
    symbols = SYMBOLS[:args.symbols]

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    result: dict = {"runs": args.runs, "seconds": args.seconds, "symbols": len(symbols),
                    "cpus": psutil.cpu_count()}
    with sandbox_process() as url:
        rows: dict[str, list[dict]] = {"alpaca_nb": [], "alpaca-py": []}
        for _ in range(args.runs):
            for cls in (Ours, AlpacaPy):
                rows[cls.name].append(throughput(cls, url, symbols, args.seconds))
        result["throughput"] = {name: {k: med(r, k) for k in r[0]} for name, r in rows.items()}
        result["throughput_ratio"] = statistics.median(
            a["quotes_per_s"] / b["quotes_per_s"] for a, b in zip(rows["alpaca_nb"], rows["alpaca-py"]))

        lat: dict[str, list[dict]] = {"alpaca_nb": [], "alpaca-py": [], "alpaca_nb_callback": []}
        for _ in range(args.runs):
            lat["alpaca_nb"].append(latency(Ours, url, symbols, args.seconds))
            lat["alpaca-py"].append(latency(AlpacaPy, url, symbols, args.seconds))
            lat["alpaca_nb_callback"].append(latency(Ours, url, symbols, args.seconds, callback=True))
        result["latency_10k"] = {name: {k: med(r, k) for k in r[0]} for name, r in lat.items()}

        result["idle"] = idle_cpu(url, args.idle_seconds)
    result["codec"] = codec_cost()

    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    t = result["throughput"]
    print(f"throughput (flood, {len(symbols)} symbols, median of {args.runs}):")
    for name in ("alpaca_nb", "alpaca-py"):
        print(f"  {name:10s} {t[name]['quotes_per_s']:>11,.0f} quotes/s   process CPU "
              f"{t[name]['process_cpu_per_s']:.2f} core   {t[name]['cpu_us_per_quote']:.2f} us/quote")
    print(f"  ratio alpaca_nb / alpaca-py: {result['throughput_ratio']:.1f}x")
    print("latency at 10,000 quotes/s (send timestamp -> table / handler / callback):")
    for name, row in result["latency_10k"].items():
        print(f"  {name:19s} p50 {row['p50_ms']:.2f} ms   p99 {row['p99_ms']:.2f} ms   "
              f"({row['samples']} samples, {row['quotes_per_s']:,.0f} quotes/s seen)")
    print(f"idle CPU: alpaca_nb threads {result['idle']['alpaca_nb_threads_cpu_per_s'] * 1e6:.1f} us/s, "
          f"alpaca-py {result['idle']['alpaca_py_thread_cpu_per_s'] * 1e6:.1f} us/s")
    c = result["codec"]
    print(f"decode+apply: orjson {c['json_orjson_us_per_quote']:.2f} us/quote, "
          f"msgpack {c['msgpack_us_per_quote']:.2f} us/quote")
    return 0


if __name__ == "__main__":
    sys.exit(main())
