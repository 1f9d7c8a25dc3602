"""QuoteBoard: bid/ask/last/change/volume per symbol, ticking from the stream.

The board listens with one batched callback (``stream.on([...], batch=True)``) on the stream's
fan-out thread (never the socket thread) at most ``max_hz`` times per second; between deliveries
only the latest quote, trade and daily bar per symbol is kept. Each delivery becomes one custom message to the browser with the rows that changed (one
message, whatever the number of changed cells), so a slow browser never makes the kernel queue
grow: at most ``max_hz`` messages per second leave the kernel. A view that appears (a re-run
cell, a reloaded page) asks for the whole table with a "hello" message.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anywidget
import orjson
import pandas as pd
import traitlets

log = logging.getLogger("alpaca_nb.widgets")

_HERE = Path(__file__).parent
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9./\-]{0,20}$")
COLUMNS = ("bid", "ask", "last", "change", "change_pct", "volume")
# stream event -> (board column, update key) of each value it carries
_FIELDS = {"quote": (("bid", "bid_price"), ("ask", "ask_price")), "trade": (("last", "price"),),
           "daily_bar": (("volume", "volume"),)}


def _symbols(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple, set, pd.Index)):
        raise TypeError(f"symbols must be a list of tickers such as ['AAPL', 'MSFT'], got {type(value).__name__}")
    out: dict[str, None] = {}
    for item in value:
        if not isinstance(item, str) or not _SYMBOL.match(item.strip().upper()):
            raise ValueError(f"symbols: {item!r} is not a ticker (letters, digits, '.', '/', '-')")
        out[item.strip().upper()] = None
    if not out:
        raise ValueError("symbols is empty; give at least one ticker, e.g. ['AAPL']")
    return list(out)


def _f(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class QuoteBoard(anywidget.AnyWidget):
    """A live quote board: bid, ask, last, change and change % against the previous close, and
    the day's volume, per symbol; cells flash green/red when they tick.

    Args:
        api: the client. symbols: tickers, e.g. ``["AAPL", "MSFT"]``.
        max_hz: front-end updates per second at most (default 4).
        ticket: an OrderTicket; a click on a row loads that symbol into it.
        title: the heading (default "Quotes").

    ``add(symbol)``/``remove(symbol)`` change the rows in place (so do the board's "+ add
    symbol" box and the × of a row); ``selected`` is the last clicked symbol; ``df`` the values.

    Raises:
        TypeError/ValueError: bad symbols or max_hz.
    """

    _esm = _HERE / "_board.js"
    _css = _HERE / "_board.css"
    symbols = traitlets.List(traitlets.Unicode()).tag(sync=True)
    title = traitlets.Unicode("Quotes").tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)

    def __init__(self, api: Any, symbols: Sequence[str] | str, *, max_hz: float = 4.0,
                 ticket: Any = None, title: str = "Quotes"):
        if isinstance(max_hz, bool) or not isinstance(max_hz, (int, float)) or not 0 < max_hz <= 60:
            raise ValueError(f"max_hz must be a number of updates per second between 0 and 60, got {max_hz!r}")
        wanted = _symbols(symbols)
        super().__init__(symbols=wanted, title=title)
        self._api = api
        self.max_hz = float(max_hz)
        self._lock = threading.RLock()
        self._rows: dict[str, list[float | None]] = {s: [None] * len(COLUMNS) for s in wanted}
        self._prev_close: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alpaca-nb-QuoteBoard")
        self._stream: Any = None
        self._closing = False
        self._pick_callbacks: list[Callable[[str], Any]] = []
        self.messages_sent = 0
        self.bytes_sent = 0
        self.error: str | None = None
        if ticket is not None:
            self.on_pick(lambda symbol: setattr(ticket.symbol, "value", symbol))
        self.on_msg(self._on_front_end)
        self._pool.submit(self._start, wanted)

    # ------------------------------------------------------------------ public
    @property
    def df(self) -> pd.DataFrame:
        """The values shown, one row per symbol (NaN where nothing arrived yet)."""
        with self._lock:
            data = {s: [v if v is not None else float("nan") for v in row] for s, row in self._rows.items()}
        frame = pd.DataFrame.from_dict(data, orient="index", columns=list(COLUMNS), dtype="float64")
        frame.index.name = "symbol"
        return frame.reindex(self.symbols)

    def on_pick(self, fn: Callable[[str], Any]) -> None:
        """Call ``fn(symbol)`` when a row is clicked."""
        self._pick_callbacks.append(fn)

    def pick(self, symbol: str) -> None:
        """What a click on a row does."""
        self.selected = symbol
        for fn in list(self._pick_callbacks):
            try:
                fn(symbol)
            except Exception:
                log.exception("QuoteBoard pick callback failed")

    def add(self, symbol: str) -> None:
        """Add a row (and subscribe the stream to it)."""
        symbol = _symbols([symbol])[0]
        with self._lock:
            if symbol in self._rows:
                return
            self._rows[symbol] = [None] * len(COLUMNS)
        self.symbols = [*self.symbols, symbol]
        self._pool.submit(self._subscribe, [symbol])

    def remove(self, symbol: str) -> None:
        """Remove a row (and unsubscribe the stream from it)."""
        symbol = _symbols([symbol])[0]
        with self._lock:
            if symbol not in self._rows:
                raise ValueError(f"{symbol} is not on the board; it shows {', '.join(self.symbols)}")
            del self._rows[symbol]
        self.symbols = [s for s in self.symbols if s != symbol]
        self._pool.submit(self._unsubscribe, symbol)

    def close(self) -> None:
        """Stop the stream and close the widget. Idempotent."""
        if not hasattr(self, "_lock"):         # __init__ failed before the board existed
            super().close()
            return
        with self._lock:
            if self._closing:
                return
            self._closing = True
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    def __repr__(self) -> str:
        return f"<QuoteBoard {len(self.symbols)} symbols, at most {self.max_hz:g} updates/s>"

    # ------------------------------------------------------------------ background work
    def _start(self, symbols: list[str]) -> None:
        try:
            self._seed(symbols)
            stream = self._api.stream(quotes=symbols, trades=symbols, daily_bars=symbols)
            with self._lock:
                if self._closing:
                    stream.close()
                    return
                self._stream = stream
            stream.on(list(_FIELDS), self._deliver, max_hz=self.max_hz, batch=True)
            stream.on("status", lambda status: self._post({"t": "status", "text": str(status)}))
            self._post({"t": "status", "text": str(stream.status)})
        except Exception as exc:  # noqa: BLE001 - shown in the board's header, never as a traceback
            log.info("QuoteBoard could not start: %s", exc)
            self.error = str(exc)
            self._post({"t": "status", "text": f"not streaming: {exc}"})

    def _seed(self, symbols: list[str]) -> None:
        snap = self._api.snapshots(symbols)
        with self._lock:
            for symbol in symbols:
                if symbol not in snap.index or symbol not in self._rows:
                    continue
                row = snap.loc[symbol]
                prev = _f(row.get("prev_daily_close"))
                if prev:
                    self._prev_close[symbol] = prev
                self._update(symbol, bid=_f(row.get("bid_price")), ask=_f(row.get("ask_price")),
                             last=_f(row.get("trade_price")), volume=_f(row.get("daily_volume")))
            rows = {s: self._rows[s] for s in symbols if s in self._rows}
        self._post({"t": "rows", "rows": rows})

    def _subscribe(self, symbols: list[str]) -> None:
        try:
            self._seed(symbols)
            if self._stream is not None:
                self._stream.subscribe(quotes=symbols, trades=symbols, daily_bars=symbols)
        except Exception as exc:  # noqa: BLE001 - shown in the board's header
            log.info("QuoteBoard could not add %s: %s", symbols, exc)
            self._post({"t": "status", "text": f"could not add {', '.join(symbols)}: {exc}"})

    def _unsubscribe(self, symbol: str) -> None:
        if self._stream is not None:
            try:
                self._stream.unsubscribe(quotes=[symbol], trades=[symbol], daily_bars=[symbol])
            except (ValueError, RuntimeError) as exc:
                log.debug("QuoteBoard unsubscribe %s: %s", symbol, exc)

    # ------------------------------------------------------------------ updates
    def _update(self, symbol: str, *, bid=None, ask=None, last=None, volume=None) -> bool:
        """Merge new values into a row (lock held); True when something changed."""
        row = self._rows.get(symbol)
        if row is None:
            return False
        new = list(row)
        if bid is not None:
            new[0] = bid
        if ask is not None:
            new[1] = ask
        if last is not None:
            new[2] = last
            prev = self._prev_close.get(symbol)
            if prev:
                new[3] = round(last - prev, 6)
                new[4] = round(last / prev - 1, 6)
        if volume is not None:
            new[5] = volume
        if new == row:
            return False
        self._rows[symbol] = new
        return True

    def _deliver(self, batch: dict[str, list[dict[str, Any]]]) -> None:
        """One batched delivery: merge the latest updates, send one message with the changed rows."""
        changed: dict[str, list[float | None]] = {}
        with self._lock:
            for event, updates in batch.items():
                fields = _FIELDS[event]
                for update in updates:
                    symbol = update["symbol"]
                    if self._update(symbol, **{column: _f(update[key]) for column, key in fields}):
                        changed[symbol] = self._rows[symbol]
        if changed:
            self._post({"t": "rows", "rows": changed})

    def _post(self, content: dict[str, Any]) -> None:
        if self._closing or self.comm is None:
            return
        self.messages_sent += 1
        self.bytes_sent += len(orjson.dumps(content))
        self.send(content)

    def _on_front_end(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        kind = content.get("t") if isinstance(content, dict) else None
        symbol = content.get("symbol") if isinstance(content, dict) else None
        try:
            if kind == "hello":
                with self._lock:
                    rows = dict(self._rows)
                self._post({"t": "rows", "rows": rows})
                if self._stream is not None:
                    self._post({"t": "status", "text": str(self._stream.status)})
            elif kind == "pick" and isinstance(symbol, str):
                self.pick(symbol)
            elif kind == "add" and isinstance(symbol, str):
                self.add(symbol)
            elif kind == "remove" and isinstance(symbol, str):
                self.remove(symbol)
        except (TypeError, ValueError) as exc:
            self._post({"t": "status", "text": str(exc)})
