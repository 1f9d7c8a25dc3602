"""Widgets: what the QuoteBoard costs the kernel under a quote flood, how big the LiveChart's
updates are, and how long an OrderTicket takes from Submit to "accepted" on screen.

* QuoteBoard, 50 symbols fed 10,000 quotes/s (the sandbox's flood mode, ``?quote_rate=``): the
  process CPU of a stream alone and of the same stream driving a board are measured side by
  side, alternating, several runs; the board's cost is the difference (in % of one core). The
  messages the board sends to the front end are counted per second and their bytes per update.
* LiveChart: bytes of each comm message while bars are appended and the forming candle moves,
  for a chart seeded with 100 and with 2,000 bars (the cost must not grow with the history).
* OrderTicket: Submit to the status line saying "accepted"/"filled", median and p95 of N orders.

Messages are measured as ipywidgets sends them: the process's comms are the ``comm`` package's
documented factory (``comm.create_comm``) replaced by one that records each message's JSON size
instead of writing it to a kernel socket (in a kernel the same JSON goes to the IOPub socket).
The sandbox runs in its own process. Run: ``python benchmarks/bench_widgets.py [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import comm
import orjson
import psutil
from comm.base_comm import BaseComm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import KEY_ID, SECRET, sandbox_process, tradable_symbols

import alpaca_nb as anb
from alpaca_nb.charts import LiveChart
from alpaca_nb.widgets import OrderTicket, QuoteBoard


class RecordingComm(BaseComm):
    """A comm that records what would be sent to the front end: (time, bytes) per message."""

    sent: list[tuple[float, int, str]] = []

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        size = len(orjson.dumps(data or {}, default=str)) + sum(len(b) for b in buffers or ())
        RecordingComm.sent.append((time.monotonic(), size, self.comm_id))


comm.create_comm = lambda *args, **kwargs: RecordingComm(*args, **kwargs)


def connect(url: str, rate: int | None = None) -> anb.Alpaca:
    stream = f"ws{url[4:]}" + (f"?quote_rate={rate}" if rate else "")
    return anb.connect(base_url=url, data_url=url, stream_url=stream, key_id=KEY_ID, secret_key=SECRET)


def cpu_over(seconds: float) -> float:
    proc = psutil.Process()
    c0, t0 = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = proc.cpu_times(), time.monotonic()
    return ((c1.user - c0.user) + (c1.system - c0.system)) / (t1 - t0)


def board_run(url: str, symbols: list[str], rate: int, seconds: float, *, with_board: bool) -> dict:
    api = connect(url, rate)
    try:
        if with_board:
            board = QuoteBoard(api, symbols, max_hz=4)
            deadline = time.monotonic() + 30
            while board._stream is None and time.monotonic() < deadline:
                time.sleep(0.05)
            stream = board._stream
        else:
            board = None
            stream = api.stream(quotes=symbols, trades=symbols, daily_bars=symbols)
        time.sleep(1.0)                                     # warm up
        messages0 = board.messages_sent if board else 0
        bytes0 = board.bytes_sent if board else 0
        applied0, t0 = stream.stats["messages"], time.monotonic()
        cpu = cpu_over(seconds)
        wall = time.monotonic() - t0
        out = {"cpu_core_fraction": cpu, "quotes_per_s": (stream.stats["messages"] - applied0) / wall}
        if board:
            n = board.messages_sent - messages0
            out.update(messages_per_s=n / wall, bytes_per_update=(board.bytes_sent - bytes0) / max(n, 1))
            board.close()
        else:
            stream.close()
        return out
    finally:
        api.close()


def quote_board(url: str, runs: int, seconds: float) -> dict:
    symbols = tradable_symbols(url, 50)
    rows = {"stream_only": [], "stream_and_board": []}
    for _ in range(runs):                                   # alternate, so drift hits both alike
        rows["stream_only"].append(board_run(url, symbols, 10_000, seconds, with_board=False))
        rows["stream_and_board"].append(board_run(url, symbols, 10_000, seconds, with_board=True))

    def med(kind, key):
        return statistics.median(r[key] for r in rows[kind])

    return {"symbols": len(symbols), "feed_quotes_per_s": 10_000, "max_hz": 4,
            "quotes_applied_per_s": med("stream_and_board", "quotes_per_s"),
            "cpu_stream_only_pct": 100 * med("stream_only", "cpu_core_fraction"),
            "cpu_stream_and_board_pct": 100 * med("stream_and_board", "cpu_core_fraction"),
            "board_cpu_pct_of_core": 100 * (med("stream_and_board", "cpu_core_fraction")
                                            - med("stream_only", "cpu_core_fraction")),
            "board_messages_per_s": med("stream_and_board", "messages_per_s"),
            "board_bytes_per_update": med("stream_and_board", "bytes_per_update"),
            "runs": rows}


def live_chart(url: str, seconds: float) -> dict:
    """Sizes of the chart's messages after it was built, for two history lengths."""
    api = connect(url)
    out = {}
    try:
        for seed in (100, 2000):
            chart = LiveChart(api, "AAPL", bars=seed)
            start = len(RecordingComm.sent)
            time.sleep(seconds)
            sizes = [size for _, size, cid in RecordingComm.sent[start:] if cid == chart.comm.comm_id]
            real = [s for s in sizes if s > 200]     # restyles; the rest are ~50-byte resets and edit ids
            out[f"seed_{seed}"] = {"bars_in_chart": seed + len(chart.data[4].x), "messages": len(sizes),
                                   "updates": len(real), "all_bytes_per_update": sum(sizes) / max(len(real), 1),
                                   "median_bytes_per_update": statistics.median(real) if real else None,
                                   "max_bytes_per_update": max(real) if real else None}
            chart.close()
    finally:
        api.close()
    return out


def ticket(url: str, orders: int) -> dict:
    api = connect(url)
    t = OrderTicket(api, "AAPL")
    try:
        deadline = time.monotonic() + 30
        while (t._stream is None or "AAPL" not in t._last) and time.monotonic() < deadline:
            time.sleep(0.05)
        t.qty.value = "1"
        times = []
        for _ in range(orders):
            t.new_order()
            t.accepted_after = None
            assert t.submit(), t.problem.text
            deadline = time.monotonic() + 30
            while t.accepted_after is None and time.monotonic() < deadline:
                time.sleep(0.001)
            times.append(t.accepted_after * 1000)
            while t.order is None and time.monotonic() < deadline:
                time.sleep(0.001)
        times.sort()
        return {"orders": orders, "median_ms": statistics.median(times),
                "p95_ms": times[max(0, int(round(0.95 * len(times))) - 1)], "max_ms": times[-1]}
    finally:
        t.close()
        api.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--orders", type=int, default=40)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = {"cpus": psutil.cpu_count(), "load_avg_at_start": psutil.getloadavg()[0]}
    with sandbox_process() as url:
        result["quote_board"] = quote_board(url, args.runs, args.seconds)
        result["order_ticket"] = ticket(url, args.orders)
    with sandbox_process(["--speed", "60"]) as url:        # a minute bar closes every second
        result["live_chart"] = live_chart(url, args.seconds)
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
