"""The live state behind a market-data stream, and :class:`LiveTable`, the view users read.

The socket thread calls :meth:`Store.apply` once per received frame: under one short lock it
files each decoded message (the dict orjson made, kept as is) under its type and symbol, counts
it and marks the symbol dirty for the fan-out. Nothing else happens per message: no conversion,
no object, no lock, no callback. Conversion to typed columns happens only when somebody reads a
snapshot (:attr:`LiveTable.df`) or a callback is due, from the records copied out under the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import frames
from .._marketdata import orderbook_frame
from ..frames import Field, Schema

__all__ = ["ALL_PAIRS", "CHANNELS", "LIVE", "STATUS", "WILDCARDS", "WIRE_CHANNELS", "BookTable", "LiveTable", "Store",
           "expand", "to_update"]

# public channel name -> (wire subscription key, message type "T")
CHANNELS: dict[str, tuple[str, str]] = {
    "quotes": ("quotes", "q"),
    "trades": ("trades", "t"),
    "bars": ("bars", "b"),
    "updated_bars": ("updatedBars", "u"),
    "daily_bars": ("dailyBars", "d"),
    "statuses": ("statuses", "s"),
    "orderbooks": ("orderbooks", "o"),      # crypto only: the book per pair (see BookTable)
}
WIRE_CHANNELS = {wire: name for name, (wire, _) in CHANNELS.items()}
ALL_PAIRS = "*/*"          # every crypto pair (the crypto stream's "*"); "*" alone is every stock
WILDCARDS = ("*", ALL_PAIRS)
DATA_TYPES = frozenset(t for _, t in CHANNELS.values())

STATUS = Schema("statuses", (
    Field("timestamp", "t", "time"), Field("status_code", "sc", "str"),
    Field("status_message", "sm", "str"), Field("reason_code", "rc", "str"),
    Field("reason_message", "rm", "str"), Field("tape", "z", "str")), index="timestamp")

SCHEMAS: dict[str, Schema] = {"q": frames.QUOTE, "t": frames.TRADE, "b": frames.BAR, "u": frames.BAR,
                              "d": frames.BAR, "s": STATUS}


def _section(section: str, spec: str) -> tuple[Field, ...]:
    out = []
    for item in spec.split():
        name, key, kind = item.split(":")
        out.append(Field(name, (section, key), kind))
    return tuple(out)


# the wide table: one row per symbol with everything the stream knows about it
LIVE = Schema("live", (
    _section("q", "bid_price:bp:float bid_size:bs:float bid_exchange:bx:str ask_price:ap:float "
                  "ask_size:as:float ask_exchange:ax:str quote_time:t:time")
    + _section("t", "last_price:p:float last_size:s:float last_exchange:x:str trade_time:t:time")
    + _section("b", "bar_open:o:float bar_high:h:float bar_low:l:float bar_close:c:float "
                    "bar_volume:v:float bar_trade_count:n:float bar_vwap:vw:float bar_time:t:time")
    + _section("d", "daily_open:o:float daily_high:h:float daily_low:l:float daily_close:c:float "
                    "daily_volume:v:float daily_vwap:vw:float daily_time:t:time")
    + _section("s", "status_code:sc:str status_message:sm:str reason_code:rc:str "
                    "reason_message:rm:str status_time:t:time")
))
EXTRA_COLUMNS = ("updates", "updated_at")


class Store:
    """Latest record per (type, symbol), update counts, receive times and the dirty set."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tables: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in DATA_TYPES}
        self.counts: dict[str, int] = {}
        self.seen: dict[str, int] = {}        # symbol -> local receive time of its last update (ns)
        self.dirty: set[str] = set()
        self.applied = 0                      # data messages applied (all symbols)

    def apply(self, messages: list[Any], now_ns: int) -> list[Any] | None:
        """File one frame's messages; returns the ones that are not market data (control
        messages, malformed ones) for the caller to look at, or None."""
        tables, counts, seen = self.tables, self.counts, self.seen
        other = None
        with self.lock:
            dirty = self.dirty
            n = 0
            for m in messages:
                try:
                    s = m["S"]
                    if m["T"] == "o":
                        _book(tables["o"], s, m)
                    else:
                        tables[m["T"]][s] = m
                except (KeyError, TypeError, IndexError, ValueError):
                    if other is None:
                        other = [m]
                    else:
                        other.append(m)
                    continue
                counts[s] = counts.get(s, 0) + 1
                seen[s] = now_ns
                dirty.add(s)
                n += 1
            self.applied += n
        return other

    def merge(self, wire_type: str, by_symbol: Mapping[str, Any], now_ns: int) -> int:
        """Records from REST (latest quotes/trades/bars) where they are newer than what we have."""
        table = self.tables[wire_type]
        changed = 0
        with self.lock:
            for symbol, rec in by_symbol.items():
                if not isinstance(symbol, str) or not isinstance(rec, dict):
                    continue
                current = table.get(symbol)
                if current is not None and not later(rec.get("t"), current.get("t")):
                    continue
                if wire_type == "o":       # a full book from REST
                    table.pop(symbol, None)
                    _book(table, symbol, {**rec, "r": True})
                else:
                    table[symbol] = {"T": wire_type, "S": symbol, **rec}
                self.seen[symbol] = now_ns
                self.dirty.add(symbol)
                changed += 1
        return changed

    def purge(self, symbols: Iterable[str], types: Iterable[str]) -> None:
        """Forget rows nobody subscribes to any more."""
        with self.lock:
            for t in types:
                table = self.tables[t]
                for s in symbols:
                    table.pop(s, None)
            for s in symbols:
                if not any(s in self.tables[t] for t in DATA_TYPES):
                    self.counts.pop(s, None)
                    self.seen.pop(s, None)

    def collect(self, types: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The latest record of each dirty symbol for each of ``types``; clears the dirty set."""
        with self.lock:
            dirty, self.dirty = self.dirty, set()
            if not dirty:
                return {}
            out = {}
            for t in types:
                table = self.tables.get(t)
                if table is not None:
                    get = table.get
                    out[t] = {s: get(s) for s in dirty}
            return out

    def symbols(self, types: Iterable[str]) -> list[str]:
        with self.lock:
            found: set[str] = set()
            for t in types:
                found.update(self.tables[t])
        return sorted(s for s in found if isinstance(s, str))


def _book(books: dict[str, dict[str, Any]], symbol: str, m: Mapping[str, Any]) -> None:
    """Apply one orderbooks message: ``r`` (reset) brings the full book; otherwise the changed
    levels, a size of 0 removing the level. Books are kept as {"t", "b": {price: size}, "a": ...}.
    Raises KeyError/TypeError for a malformed message (the caller skips it)."""
    book = books.get(symbol)
    if m.get("r") or book is None:
        book = {"T": "o", "S": symbol, "t": m["t"], "b": {}, "a": {}}
    else:
        book = {**book, "t": m["t"], "b": dict(book["b"]), "a": dict(book["a"])}   # readers hold the old one
    for key in ("b", "a"):
        side = book[key]
        for level in m.get(key) or ():
            price, size = float(level["p"]), float(level["s"])
            if size == 0:
                side.pop(price, None)
            else:
                side[price] = size
    books[symbol] = book


def later(a: Any, b: Any) -> bool:
    """Is RFC-3339 time ``a`` later than or equal to ``b``? (None is earliest)."""
    if not isinstance(a, str):
        return False
    if not isinstance(b, str):
        return True
    if len(a) == len(b):
        return a >= b
    try:
        return pd.Timestamp(a) >= pd.Timestamp(b)
    except (ValueError, TypeError):
        return True


# ------------------------------------------------------------------ callback payloads

_CONVERT = {t: tuple((f.name, f.key, f.kind) for f in schema.fields) for t, schema in SCHEMAS.items()}


def to_update(wire_type: str, rec: Mapping[str, Any]) -> dict[str, Any]:
    """A wire record as the dict a callback receives: ``symbol`` plus the schema's column names
    (``bid_price``, ``ask_size``...), numbers as float, ``timestamp`` as a UTC ``pd.Timestamp``.
    An order book (``"o"``) is ``symbol``, ``timestamp``, ``bids`` (best, i.e. highest, first) and
    ``asks`` (lowest first), each a list of ``{"price": float, "size": float}``."""
    if wire_type == "o":
        levels = book_levels(rec)
        return {"symbol": rec.get("S"), "timestamp": _utc(levels["t"]),
                "bids": [{"price": p, "size": z} for p, z in levels["b"]],
                "asks": [{"price": p, "size": z} for p, z in levels["a"]]}
    out: dict[str, Any] = {"symbol": rec.get("S")}
    for name, key, kind in _CONVERT[wire_type]:
        value = rec.get(key)
        if kind == "float":
            try:
                value = float(value) if value is not None else float("nan")
            except (TypeError, ValueError):
                value = float("nan")
        elif kind == "time":
            value = _utc(value)
        elif kind == "list":
            value = list(value) if isinstance(value, (list, tuple)) else []
        out[name] = value
    return out


def _utc(value: Any) -> pd.Timestamp:
    """An RFC-3339 time as a UTC Timestamp (NaT for anything else)."""
    try:
        return pd.Timestamp(value).tz_convert("UTC") if isinstance(value, str) else pd.NaT
    except (ValueError, TypeError):
        return pd.NaT


def book_levels(book: Mapping[str, Any]) -> dict[str, Any]:
    """A stored book as ``{"t", "b": [(price, size)...] highest first, "a": [...] lowest first}``."""
    return {"t": book.get("t"), "b": sorted(book["b"].items(), reverse=True), "a": sorted(book["a"].items())}


# ------------------------------------------------------------------ the view users read

def expand(subscribed: Iterable[str], stores: list[tuple[Store, Any]], types: Iterable[str]) -> list[str]:
    """Subscribed symbols in order, a wildcard ("*" stocks, "*/*" crypto pairs) replaced by the
    symbols its hub's store has seen for ``types``, sorted."""
    wanted: dict[str, None] = {}
    stars: list[str] = []
    for s in subscribed:
        if s in WILDCARDS:
            stars.append(s)
        else:
            wanted[s] = None
    for store, takes in stores:
        if any(takes(star) for star in stars):
            for s in store.symbols(types):
                wanted.setdefault(s, None)
    return list(wanted)


class LiveTable:
    """Thread-safe latest state per symbol of one stream, as a pandas snapshot on demand.

    ``stream.table`` is the wide table (quote, last trade, last bar, daily bar, trading status,
    ``updates`` count and local ``updated_at`` receive time per symbol); ``stream.quotes``,
    ``stream.trades``, ``stream.bars``... hold one channel each, with the same columns as
    ``api.latest_quotes()`` / ``latest_trades()`` / ``latest_bars()``. Rows are the stream's
    symbols in subscription order (all symbols seen, sorted, for a ``"*"`` subscription); a
    symbol with no data yet has an all-NA row. Reading :attr:`df` copies the records under a
    short lock and converts them outside it, so it never holds up the socket thread for long.
    """

    def __init__(self, stream: Any, channel: str | None = None):
        self._stream = stream
        self._channel = channel
        if channel is None:
            self._types: tuple[str, ...] = ("q", "t", "b", "u", "d", "s")
            self._channels: tuple[str, ...] = tuple(c for c in CHANNELS if c != "orderbooks")
        else:
            self._types = ("b", "u") if channel == "bars" else (CHANNELS[channel][1],)
            self._channels = (channel,)

    @property
    def channel(self) -> str | None:
        """The channel this table shows (None: all of them, the wide table)."""
        return self._channel

    @property
    def columns(self) -> list[str]:
        if self._channel is None:
            return [f.name for f in LIVE.fields] + list(EXTRA_COLUMNS)
        return [f.name for f in SCHEMAS[self._types[0]].fields]

    @property
    def symbols(self) -> list[str]:
        """The rows' symbols, in order."""
        return self._rows(self._stream._stores())

    def _rows(self, stores: list[tuple[Store, Any]]) -> list[str]:
        return expand([s for ch in self._channels for s in self._stream._subscribed(ch)], stores, self._types)

    @property
    def df(self) -> pd.DataFrame:
        """A consistent snapshot: one row per symbol, fixed columns and dtypes, times in UTC."""
        return self.snapshot()

    def snapshot(self, *, tz: str | None = None, symbols: Sequence[str] | None = None) -> pd.DataFrame:
        """Like :attr:`df`, with timestamps converted to ``tz`` and optionally only ``symbols``."""
        stores = self._stream._stores()
        syms = self._rows(stores) if symbols is None else [s for s in symbols if isinstance(s, str)]
        recs: dict[str, list[Any]] = {t: [None] * len(syms) for t in self._types}
        counts: list[int] = [0] * len(syms)
        seen: list[Any] = [None] * len(syms)
        for store, takes in stores:          # stocks and crypto live in different hubs' stores
            rows = [i for i, s in enumerate(syms) if takes(s)]
            with store.lock:
                for t in self._types:
                    table, column = store.tables[t], recs[t]
                    for i in rows:
                        column[i] = table.get(syms[i])
                if self._channel is None:
                    for i in rows:
                        counts[i] = store.counts.get(syms[i], 0)
                        seen[i] = store.seen.get(syms[i])
        if self._channel is None:
            bars = [_latest(b, u) for b, u in zip(recs["b"], recs["u"])]
            by_symbol = {s: {"q": q, "t": t, "b": b, "d": d, "s": st}
                         for s, q, t, b, d, st in zip(syms, recs["q"], recs["t"], bars, recs["d"], recs["s"])}
            frame = frames.latest_frame(by_symbol, LIVE, syms, tz=tz)
            frame["updates"] = np.array(counts, dtype=np.int64)
            stamps = np.array([frames.NAT if v is None else v for v in seen], dtype=np.int64)
            when = pd.DatetimeIndex(stamps.view("M8[ns]")).tz_localize("UTC")
            frame["updated_at"] = when.tz_convert(tz) if tz else when
            return frame
        if self._channel == "bars":
            rows = [_latest(b, u) for b, u in zip(recs["b"], recs["u"])]
        else:
            rows = recs[self._types[0]]
        by_symbol = {s: r for s, r in zip(syms, rows) if r is not None}
        return frames.latest_frame(by_symbol, SCHEMAS[self._types[0]], syms, tz=tz)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.symbols

    def __getitem__(self, symbol: str) -> pd.Series:
        """One symbol's row (KeyError when the stream does not carry it)."""
        if symbol not in self.symbols:
            raise KeyError(f"{symbol!r} is not in this table (its symbols: {', '.join(self.symbols[:20]) or 'none'})")
        return self.snapshot(symbols=[symbol]).iloc[0]

    def show(self, *, max_hz: float = 4.0, columns: Sequence[str] | None = None) -> Any:
        """Display this table in the notebook cell and keep it updated (see Stream.show)."""
        return self._stream.show(table=self, max_hz=max_hz, columns=columns)

    def _repr_html_(self) -> str:
        return self.df._repr_html_()

    def __repr__(self) -> str:
        name = self._channel or "all channels"
        return f"<LiveTable {name}: {len(self)} symbol(s)>"


def _latest(bar: Any, updated: Any) -> Any:
    if updated is None:
        return bar
    if bar is None:
        return updated
    return updated if later(updated.get("t"), bar.get("t")) else bar



class BookTable:
    """The order books of a stream's ``orderbooks`` subscriptions (crypto pairs): ``df`` is the
    tidy frame of ``api.orderbook()`` (symbol, side, level, price, size, timestamp; bids best
    first, then asks), kept current from the stream's full books and level updates."""

    def __init__(self, stream: Any):
        self._stream = stream

    @property
    def symbols(self) -> list[str]:
        return expand(self._stream._subscribed("orderbooks"), self._stream._stores(), ("o",))

    @property
    def df(self) -> pd.DataFrame:
        return self.snapshot()

    def snapshot(self, *, tz: str | None = None) -> pd.DataFrame:
        """Like :attr:`df`, with the timestamps in ``tz`` (default UTC)."""
        syms = self.symbols
        books: dict[str, Any] = {}
        for store, takes in self._stream._stores():
            with store.lock:
                books.update((s, store.tables["o"][s]) for s in syms if takes(s) and s in store.tables["o"])
        levels = {s: book_levels(b) for s, b in books.items()}
        by_symbol = {s: {"t": b["t"], "b": [{"p": p, "s": z} for p, z in b["b"]],
                         "a": [{"p": p, "s": z} for p, z in b["a"]]} for s, b in levels.items()}
        return orderbook_frame(by_symbol, syms, tz=tz)

    def __len__(self) -> int:
        return len(self.symbols)

    def _repr_html_(self) -> str:
        return self.df._repr_html_()

    def __repr__(self) -> str:
        return f"<BookTable orderbooks: {len(self)} symbol(s)>"
