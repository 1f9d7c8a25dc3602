"""The stream relay: the sandbox's quote flood fanned out to 10 local clients, and the latency the
relay adds, direct / through one relay / through Redis, side by side in one run.

Processes: the sandbox (``alpaca-nb sandbox --port 0``), the relay (``alpaca-nb relay --port 0``;
its upstream URL carries ``?quote_rate=N``, so the sandbox floods the relay's one connection with
pre-encoded quote batches whose ``t`` is the wall-clock send time), and for the Redis case a
``redis-server``, a publishing relay (``--publish``) and a relay fed from Redis (``--source``).
The clients are 10 processes, each with one WebSocket (websocket-client's upgrade, then
alpaca_nb's FrameReader): they count the quotes of each frame (``"T":"q"`` occurrences, no
decoding) and read the ``t`` of the frame's first quote.

(a) Fan-out throughput: the flood asks for more than anything here can take; every client
    subscribes the same 10 symbols. Quotes/s delivered to each client (the slowest client is
    reported; ``cut`` counts clients the relay cut off as too slow, 407), against one client
    reading the sandbox directly. CPU of the relay process(es) and of the client processes
    together, in cores (CPU seconds per second).
(b) The floor with headroom: the sandbox sends 150,000 quotes/s; what the slowest client got
    (a client the relay cut off as too slow would show here, with ``cut``).
(c) Added latency at 10,000 quotes/s: from the sandbox's send time to the client's receipt of
    the frame (all 10 clients pooled); p50 and p99, direct vs relay vs Redis, and the relay's
    CPU at that rate.

Every figure is the median over ``--runs`` runs. ``--baseline DIR`` also runs the relays of
another checkout (e.g. ``git worktree add /tmp/base main``) as the cases ``base-relay`` and
``base-redis``, alternating with this checkout's within every run (which goes first swaps from run
to run), and prints the ratios. The machine's load average is printed with every run. Usage::

    python benchmarks/bench_relay.py [--runs 3] [--seconds 4] [--clients 10] [--cases direct,relay,redis]
                                     [--kinds flood,150k,10k] [--baseline DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager

import orjson
import psutil
import requests
from _common import HEADERS, sandbox_process

from alpaca_nb.relay._fanout import iso_to_ns
from alpaca_nb.stream._socket import FrameReader, open_socket

SYMBOLS = ["AAPL", "MSFT", "SPY", "NVDA", "AMD", "TSLA", "AMZN", "GOOG", "META", "NFLX"]
FLOOD = 2_000_000          # quotes/s asked for in the throughput runs (more than anyone takes)
KINDS = {"flood": FLOOD, "150k": 150_000, "10k": 10_000}     # quotes/s the sandbox sends; latency at 10k
TOKEN = "bench-relay-token"


def new_keys(url: str) -> tuple[str, str]:
    resp = requests.post(url + "/sandbox/accounts", json={}, timeout=10, headers=HEADERS)
    resp.raise_for_status()
    body = resp.json()
    return body["key_id"], body["secret_key"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def relay_process(env: dict[str, str], *args: str, source: str | None = None):
    """``alpaca-nb relay --port 0 ...`` (of the checkout ``source``, default this one); yields
    (ws URL, psutil.Process)."""
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "relay", "--port", "0", "--no-discovery",
                             "--log-level", "WARNING", *args], env=env, stdout=subprocess.PIPE, text=True,
                            cwd=source)
    try:
        line = proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"the relay did not start: {line!r}")
        yield line.split("listening on ")[1].split()[0], psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def redis_process():
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def client_main(conn, url: str, key: str, secret: str) -> None:
    """One client process: a raw data-stream connection that counts quotes (and, while asked,
    samples the latency of each frame's first quote). Commands from ``conn``: "start", "stop"
    (answered with the counts), "quit"."""
    ws = open_socket(url, timeout=10, user_agent="bench-relay")
    reader = FrameReader(ws.sock)
    ws.sock.settimeout(15)

    def expect(word: bytes) -> None:
        while True:
            for op, payload in reader.read():
                if op <= 2 and word in bytes(payload):
                    return

    ws.send(orjson.dumps({"action": "auth", "key": key, "secret": secret}))
    expect(b"authenticated")
    ws.send(orjson.dumps({"action": "subscribe", "quotes": SYMBOLS}))
    expect(b"subscription")
    conn.send("ready")
    state = {"count": 0, "samples": [], "sampling": False, "closed": False}
    stop = threading.Event()

    def read() -> None:
        ws.sock.settimeout(0.5)
        marker = b'"T":"q"'
        while not stop.is_set():
            try:
                frames = reader.read()
            except TimeoutError:
                continue
            except Exception:
                state["closed"] = True
                return
            now = time.time_ns()
            for op, payload in frames:
                if op == 8:                   # a close frame: cut off (407 slow client), say
                    state["closed"] = True
                if op > 2:
                    continue
                data = bytes(payload)
                n = data.count(marker)
                state["count"] += n
                if n and state["sampling"]:
                    i = data.find(b'"t":"')
                    if i >= 0:
                        end = data.index(b'"', i + 5)
                        state["samples"].append(now - iso_to_ns(data[i + 5:end].decode()))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    while True:
        command, latency = conn.recv()
        if command == "start":
            state["samples"] = []
            state["sampling"] = latency
            start, count = time.monotonic(), state["count"]
            conn.send("started")
        elif command == "stop":
            state["sampling"] = False
            conn.send({"rate": (state["count"] - count) / (time.monotonic() - start), "samples": state["samples"],
                       "closed": state["closed"]})
        else:
            break
    stop.set()
    thread.join(2)
    ws.close(timeout=0.5)


@contextmanager
def clients(n: int, url: str, key: str, secret: str):
    """``n`` client processes; yields their pipes and processes once every one is subscribed."""
    ctx = multiprocessing.get_context("fork")
    pipes, procs = [], []
    try:
        for _ in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(child, url, key, secret), daemon=True)
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        for pipe in pipes:
            if not pipe.poll(60) or pipe.recv() != "ready":
                raise RuntimeError("a client did not start")
        yield pipes, [psutil.Process(proc.pid) for proc in procs]
    finally:
        for pipe in pipes:
            try:
                pipe.send(("quit", False))
            except OSError:
                pass
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def measure(pipes, procs: list[psutil.Process], seconds: float, *, latency: bool,
            readers: list[psutil.Process] = ()) -> dict:
    """Rates (and latencies) the clients saw; CPU (cores) of ``procs`` (the relays) and of the
    client processes ``readers``."""
    time.sleep(1.0)                                   # warm up
    for pipe in pipes:
        pipe.send(("start", latency))
    for pipe in pipes:
        pipe.recv()
    watched = [*procs, *readers]
    cpu = [sum(p.cpu_times()[:2]) for p in watched]
    start = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    used = [(sum(p.cpu_times()[:2]) - c0) / elapsed for p, c0 in zip(watched, cpu, strict=True)]
    for pipe in pipes:
        pipe.send(("stop", latency))
    results = [pipe.recv() for pipe in pipes]
    rates = [r["rate"] for r in results]
    out = {"min_rate": min(rates), "mean_rate": statistics.mean(rates), "cpu": sum(used[:len(procs)]),
           "clients_cpu": sum(used[len(procs):]),
           "cut": sum(r["closed"] for r in results)}
    if latency:
        samples = sorted(s for r in results for s in r["samples"])
        out["p50_ms"] = samples[len(samples) // 2] / 1e6
        out["p99_ms"] = samples[int(len(samples) * 0.99)] / 1e6
    return out


def run_case(case: str, url: str, *, rate: int, n_clients: int, seconds: float, latency: bool,
             baseline: str | None = None) -> dict:
    """One case (direct, relay, redis; base-relay, base-redis: the relays of ``baseline``)."""
    source = None
    if case.startswith("base-"):
        case, source = case[5:], baseline
    key, secret = new_keys(url)
    stream = f"ws{url[4:]}?quote_rate={rate}"
    env = {**os.environ, "APCA_API_KEY_ID": key, "APCA_API_SECRET_KEY": secret, "APCA_API_BASE_URL": url,
           "APCA_API_DATA_URL": url, "APCA_API_STREAM_URL": stream, "ALPACA_NB_RELAY": "off",
           "ALPACA_NB_RELAY_TOKEN": TOKEN}
    with ExitStack() as stack:
        procs: list[psutil.Process] = []
        if case == "direct":
            target, n_clients, who = stream.replace("?", "/v2/iex?"), 1, (key, secret)
        elif case == "relay":
            relay, proc = stack.enter_context(relay_process(env, source=source))
            target, who, procs = relay + "/v2/iex", (key, secret), [proc]
        else:
            redis_url, redis_proc = stack.enter_context(redis_process())
            _, pub_proc = stack.enter_context(relay_process(env, "--publish", redis_url, source=source))
            source_env = {k: v for k, v in env.items() if not k.startswith("APCA_")}
            fed, src_proc = stack.enter_context(relay_process(source_env, "--source", redis_url, source=source))
            target, who, procs = fed + "/v2/iex", ("bench", TOKEN), [pub_proc, redis_proc, src_proc]
        pipes, readers = stack.enter_context(clients(n_clients, target, *who))
        return measure(pipes, procs, seconds, latency=latency, readers=readers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--cases", default="direct,relay,redis", help="comma-separated subset of direct,relay,redis")
    parser.add_argument("--kinds", default="flood,150k,10k", help="comma-separated subset of flood,150k,10k")
    parser.add_argument("--baseline", help="a checkout whose relays run too, as base-relay and base-redis")
    parser.add_argument("--out", help="write the medians as JSON to this file")
    args = parser.parse_args()
    cases, kinds = args.cases.split(","), args.kinds.split(",")
    if not set(kinds) <= set(KINDS):
        raise SystemExit(f"--kinds: expected a subset of {','.join(KINDS)}")
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        if not os.path.isfile(os.path.join(args.baseline, "alpaca_nb", "relay", "__init__.py")):
            raise SystemExit(f"--baseline {args.baseline}: not a checkout with alpaca_nb/relay")
    results: dict[str, list[dict]] = {}
    loads = []
    with sandbox_process() as url:
        for run in range(args.runs):
            order = []
            for case in cases:
                pair = [case] + ([f"base-{case}"] if args.baseline and case != "direct" else [])
                order += pair if run % 2 == 0 else pair[::-1]
            for case in order:
                for kind in kinds:
                    rate = KINDS[kind]
                    r = run_case(case, url, rate=rate, n_clients=args.clients, seconds=args.seconds,
                                 latency=kind == "10k", baseline=args.baseline)
                    results.setdefault(f"{case} {kind}", []).append(r)
                    loads.append(os.getloadavg()[0])
                    print(f"run {run + 1} {case:10} {kind:5} " + ", ".join(f"{k} {v:,.3f}" for k, v in r.items())
                          + f" (load {loads[-1]:.1f})", flush=True)
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    print(f"\nmedians over {args.runs} runs, {args.clients} clients through the relays; load average "
          f"{min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f}):")
    print(f"{'case':16} {'quotes/s per client (min)':>26} {'p50 ms':>8} {'p99 ms':>8} {'relay CPU (cores)':>18} "
          f"{'clients CPU':>12} {'cut':>4}")
    for name, m in medians.items():
        p50 = f"{m['p50_ms']:.3f}" if "p50_ms" in m else "-"
        p99 = f"{m['p99_ms']:.3f}" if "p99_ms" in m else "-"
        cpu = f"{m['cpu']:.2f}" if not name.startswith("direct") else "-"
        print(f"{name:16} {m['min_rate']:>26,.0f} {p50:>8} {p99:>8} {cpu:>18} {m['clients_cpu']:>12.2f} {m['cut']:>4.0f}")
    for case in ("relay", "redis", "base-relay", "base-redis"):
        if f"{case} 10k" not in results or "direct 10k" not in results:
            continue
        pairs = list(zip(results["direct 10k"], results[f"{case} 10k"], strict=True))
        added = {q: statistics.median(r[q] - d[q] for d, r in pairs) for q in ("p50_ms", "p99_ms")}
        medians[f"{case} 10k"].update({f"added_{q}": v for q, v in added.items()})
        print(f"added latency, {case} vs direct at 10,000 quotes/s (median of the per-run differences): "
              f"p50 {added['p50_ms']:+.3f} ms, p99 {added['p99_ms']:+.3f} ms")
    for case in ("relay", "redis"):
        for kind in kinds:
            new, old = results.get(f"{case} {kind}"), results.get(f"base-{case} {kind}")
            if not new or not old:
                continue
            ratios = {q: statistics.median(n[q] / o[q] for n, o in zip(new, old, strict=True) if o[q])
                      for q in new[0] if q in ("min_rate", "cpu", "p50_ms", "p99_ms")}
            print(f"{case} {kind}, this checkout / baseline (median of the per-run ratios): "
                  + ", ".join(f"{q} x{v:.2f}" for q, v in ratios.items()))
            medians[f"{case} {kind}"].update({f"ratio_{q}": v for q, v in ratios.items()})
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"load_average": [min(loads), statistics.median(loads), max(loads)], **medians}, f, indent=2)


if __name__ == "__main__":
    main()
