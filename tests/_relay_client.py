"""A stream client in its own process, for the relay's multi-process tests (not a test module).

``python tests/_relay_client.py anb QUOTES [--trade-updates]``: an alpaca_nb stream opened with
``anb.connect()`` (keys and URLs from the environment; the relay is found by discovery).
``python tests/_relay_client.py alpacapy QUOTES URL``: the official alpaca-py StockDataStream with
``url_override=URL``.

QUOTES is a comma-separated symbol list. The process prints JSON lines: ``{"event": "ready", ...}``
once streaming, then every 0.1 s ``{"event": "data", "t": unix_seconds, "symbols": {symbol: n}}``
with the messages received on the socket since the last line (every symbol the server sent,
not only the subscribed ones). Commands on stdin: ``book`` prints the alpaca_nb order book
(``{"event": "book", "orders": {id: status}, "stats": {...}}``), ``quit`` closes and exits.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def report(counts: Counter, lock: threading.Lock, stop: threading.Event) -> None:
    while not stop.wait(0.1):
        with lock:
            delta = dict(counts)
            counts.clear()
        if delta:
            emit({"event": "data", "t": time.time(), "symbols": delta})


def run_anb(symbols: list[str], trade_updates: bool) -> None:
    import alpaca_nb as anb

    api = anb.connect()
    stream = api.stream(quotes=symbols, trade_updates=trade_updates, timeout=30)
    store = stream._data.store            # what arrived on the socket, per symbol
    counts, lock, stop = Counter(), threading.Lock(), threading.Event()
    last: dict[str, int] = {}

    def poll() -> None:
        while not stop.wait(0.05):
            with store.lock:
                now = dict(store.counts)
            with lock:
                for s, n in now.items():
                    if n != last.get(s, 0):
                        counts[s] += n - last.get(s, 0)
                        last[s] = n

    threading.Thread(target=poll, daemon=True).start()
    threading.Thread(target=report, args=(counts, lock, stop), daemon=True).start()
    emit({"event": "ready", "status": str(stream.status), "relay": api.settings.relay})
    for line in sys.stdin:
        command = line.strip()
        if command == "book":
            book = stream.orders.df
            emit({"event": "book", "orders": {oid: book.loc[oid, "status"] for oid in book.index},
                  "stats": stream.stats, "status": str(stream.status)})
        elif command == "quit":
            break
    stop.set()
    stream.close()


def run_alpacapy(symbols: list[str], url: str) -> None:
    from alpaca.data.live import StockDataStream

    counts, lock, stop = Counter(), threading.Lock(), threading.Event()

    class Counting(StockDataStream):
        """Counts every data message the SDK receives, before its own dispatch by symbol."""

        async def _dispatch(self, msg) -> None:
            if isinstance(msg, dict) and "S" in msg:
                with lock:
                    counts[msg["S"]] += 1
            await super()._dispatch(msg)

    stream = Counting(os.environ["APCA_API_KEY_ID"], os.environ["APCA_API_SECRET_KEY"],
                      raw_data=True, url_override=url)

    async def on_quote(quote) -> None:
        pass

    stream.subscribe_quotes(on_quote, *symbols)
    threading.Thread(target=stream.run, daemon=True).start()
    threading.Thread(target=report, args=(counts, lock, stop), daemon=True).start()
    emit({"event": "ready", "status": "started", "relay": url})
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    stop.set()
    stream.stop()


if __name__ == "__main__":
    kind, quotes = sys.argv[1], sys.argv[2].split(",")
    if kind == "anb":
        run_anb(quotes, "--trade-updates" in sys.argv[3:])
    else:
        run_alpacapy(quotes, sys.argv[3])
