"""Historical and latest market data: paginated downloads into frames, with the bar cache.

Downloads are pipelined: as soon as a page has arrived its ``next_page_token`` is read from the
raw bytes and the next page is requested on a background thread, so the network and the parsing
of the previous page overlap. Each page is turned into columns right away (see
:class:`alpaca_nb.frames.SeriesAccumulator`), so the decoded JSON of only about one page is alive
at a time.

Crypto pairs (symbols with a slash, "BTC/USD") are routed to Alpaca's v1beta3 crypto endpoints
(``/v1beta3/crypto/{loc}/...``, ``loc`` "us" by default), stocks to ``/v2/stocks/...``; a request
that mixes both downloads each class from its endpoint into one frame with the same columns and
dtypes (volume is float64 for both: crypto volumes are fractional). ``feed`` and ``adjustment``
apply to stocks only: crypto has one feed per location and no corporate actions, so they are not
sent for crypto pairs (their adjusted bars are their raw bars). Trades of a request that holds a
crypto pair have one more column, ``taker_side`` ("B"/"S"; NA for stocks).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson
import pandas as pd

from . import frames
from ._args import (
    NS,
    Timeframe,
    ny_date,
    ny_midnight_ns,
    parse_choice,
    parse_positive_int,
    parse_symbols,
    parse_time,
    parse_timeframe,
    parse_tz,
    rfc3339,
)
from ._corporate import ActionMarks, fetch_actions
from .cache import BarCache, CacheKey, CorruptCacheFile, read_window
from .errors import AlpacaError

log = logging.getLogger(__name__)

PAGE_SIZE = 10_000
ADJUSTMENTS = ("raw", "split", "dividend", "spin-off", "all")
FEEDS = ("sip", "iex", "otc", "boats", "delayed_sip", "overnight")
_SCHEMAS = {"bars": frames.BAR, "trades": frames.TRADE, "quotes": frames.QUOTE}
CRYPTO_LOCATIONS = ("us", "us-1", "us-2", "bs-1")
CRYPTO_TRADE = frames.Schema("trades", frames.TRADE.fields + (frames.Field("taker_side", "tks", "str"),),
                             frames.TRADE.index)
ORDERBOOK_COLUMNS = ("symbol", "side", "level", "price", "size", "timestamp")
_MAX_SYMBOL_CHARS = 4000        # keep URLs well under common limits; longer lists are split
_CACHE_MARGIN_NS = 15 * 60 * NS  # a real day counts as over 15 minutes after New York midnight


@dataclass(frozen=True)
class SeriesRequest:
    """A validated bars/trades/quotes request."""

    kind: str
    symbols: tuple[str, ...]
    start_ns: int | None
    end_ns: int | None
    timeframe: Timeframe | None = None
    adjustment: str | None = None
    feed: str | None = None
    limit: int | None = None
    loc: str = "us"

    @property
    def schema(self) -> frames.Schema:
        if self.kind == "trades" and any(map(is_crypto, self.symbols)):
            return CRYPTO_TRADE
        return _SCHEMAS[self.kind]

    def path(self, symbols: Sequence[str]) -> str:
        """The endpoint of a chunk of one asset class (see :func:`_symbol_chunks`)."""
        return data_path(self.kind, crypto=is_crypto(symbols[0]), loc=self.loc)

    def params(self, symbols: Sequence[str], start_ns: int | None, end_ns: int | None) -> dict[str, Any]:
        params: dict[str, Any] = {"symbols": ",".join(symbols)}
        crypto = is_crypto(symbols[0])
        if self.timeframe is not None:
            params["timeframe"] = str(self.timeframe)
        if start_ns is not None:
            params["start"] = rfc3339(start_ns)
        if end_ns is not None:
            params["end"] = rfc3339(end_ns)
        if self.adjustment is not None and not crypto:
            params["adjustment"] = self.adjustment
        if self.feed is not None and not crypto:
            params["feed"] = self.feed
        return params


def is_crypto(symbol: str) -> bool:
    """Whether a (parsed, upper-case) symbol is a crypto pair: "BTC/USD" is, "BRK.B" is not."""
    return "/" in symbol


def data_path(kind: str, *, crypto: bool, loc: str = "us") -> str:
    """``/v2/stocks/<kind>`` or ``/v1beta3/crypto/<loc>/<kind>`` (kind may be "latest/bars")."""
    return f"/v1beta3/crypto/{loc}/{kind}" if crypto else f"/v2/stocks/{kind}"


def parse_loc(loc: Any) -> str:
    """A crypto data location: "us" (Alpaca), "us-1" (Kraken), "us-2" or "bs-1"."""
    return parse_choice("us" if loc is None else loc, name="loc", choices=CRYPTO_LOCATIONS)


def series_request(kind: str, symbols: Any, *, timeframe: Any = None, start: Any = None,
                   end: Any = None, adjustment: Any = None, feed: Any = None,
                   limit: Any = None, loc: Any = "us") -> SeriesRequest:
    """Validate the arguments of bars()/trades()/quotes() (raises ValueError/TypeError)."""
    syms = parse_symbols(symbols)
    loc = parse_loc(loc)
    start_ns = parse_time(start, name="start")
    end_ns = parse_time(end, name="end", end=True)
    if start_ns is not None and end_ns is not None and end_ns < start_ns:
        raise ValueError(f"end ({end!r}) is before start ({start!r})")
    tf = parse_timeframe(timeframe) if kind == "bars" else None
    if adjustment is not None and kind == "bars":
        parts = [parse_choice(p.strip(), name="adjustment", choices=ADJUSTMENTS)
                 for p in str(adjustment).split(",")] if isinstance(adjustment, str) else \
            [parse_choice(adjustment, name="adjustment", choices=ADJUSTMENTS)]
        if len(set(parts)) < len(parts):
            raise ValueError(f"adjustment must not repeat a value; got {adjustment!r}")
        adjustment = ",".join(parts)
    feed = parse_choice(feed, name="feed", choices=FEEDS, allow_none=True)
    return SeriesRequest(kind, tuple(syms), start_ns, end_ns, tf,
                         adjustment if kind == "bars" else None, feed,
                         parse_positive_int(limit, name="limit"), loc)


class MarketData:
    """Market-data helpers on one transport (used by :class:`alpaca_nb.Alpaca`)."""

    def __init__(self, transport, *, server_info: Callable[[], tuple[str, int] | None]):
        self.transport = transport
        self._server_info = server_info

    # ------------------------------------------------------------------ time series
    def series(self, req: SeriesRequest, *, tz: str | None = None, cache: bool = True,
               progress: bool | None = None) -> pd.DataFrame:
        """All rows of a request as one frame (see Alpaca.bars)."""
        tz = parse_tz(tz)
        crypto = [s for s in req.symbols if is_crypto(s)]
        if cache and req.kind == "bars" and req.limit is None and crypto and len(crypto) < len(req.symbols):
            return self._mixed_series(req, crypto, tz=tz, progress=progress)
        bar_cache = self._bar_cache(req) if cache else None
        acc = frames.SeriesAccumulator(req.schema)
        bar = _Progress(req.kind, progress)
        try:
            if bar_cache is not None:
                hit = self._cached_series(req, acc, bar, *bar_cache, tz=tz)
                if hit is not None:                   # everything came from the cache
                    return hit
            else:
                remaining = req.limit                 # counts over every chunk (and both classes)
                for chunk in _symbol_chunks(req.symbols):
                    before = acc.rows
                    self._download(req, chunk, req.start_ns, req.end_ns, acc, bar, limit=remaining)
                    if remaining is not None:
                        remaining -= acc.rows - before
                        if remaining <= 0:
                            break
        except AlpacaError as exc:
            bar.close()
            received = acc.rows
            exc.partial = acc.frame(tz=tz, sort=True)
            exc.add_note(f"alpaca_nb: {received} {req.kind} rows arrived before the failure; they "
                         "are in this exception's .partial frame")
            raise
        bar.close()
        return acc.frame(tz=tz, lo=req.start_ns, hi=req.end_ns)

    def _mixed_series(self, req: SeriesRequest, crypto: list[str], *, tz: str | None,
                      progress: bool | None) -> pd.DataFrame:
        """Cached bars of stocks and crypto pairs: each class through its own cache (New York
        days for stocks, UTC days for crypto), joined into one frame ordered by symbol."""
        stocks = replace(req, symbols=tuple(s for s in req.symbols if not is_crypto(s)))
        first = self.series(stocks, tz=tz, cache=True, progress=progress)
        try:
            second = self.series(replace(req, symbols=tuple(crypto)), tz=tz, cache=True, progress=progress)
        except AlpacaError as exc:
            exc.partial = _join(first, exc.partial)
            raise
        return _join(first, second)

    def pages(self, req: SeriesRequest, *, tz: str | None = None,
              progress: bool | None = None) -> Iterator[pd.DataFrame]:
        """One frame per downloaded page (same columns and dtypes as the full frame)."""
        tz = parse_tz(tz)
        bar = _Progress(req.kind, progress)
        remaining = req.limit
        try:
            for chunk in _symbol_chunks(req.symbols):
                for page in _pages(self.transport, req.path(chunk),
                                   req.params(chunk, req.start_ns, req.end_ns), remaining, bar):
                    acc = frames.SeriesAccumulator(req.schema)
                    n = acc.add(page.get(req.kind))
                    bar.update(n)
                    if remaining is not None:
                        remaining -= n
                    yield acc.frame(tz=tz, lo=req.start_ns, hi=req.end_ns)
                if remaining is not None and remaining <= 0:
                    break
        finally:
            bar.close()

    def _download(self, req: SeriesRequest, symbols: Sequence[str], start_ns: int | None,
                  end_ns: int | None, acc: frames.SeriesAccumulator, bar: _Progress, *,
                  limit: int | None = None) -> None:
        for page in _pages(self.transport, req.path(symbols), req.params(symbols, start_ns, end_ns),
                           limit, bar):
            bar.update(acc.add(page.get(req.kind)))
            del page

    # ------------------------------------------------------------------ the bar cache
    def _bar_cache(self, req: SeriesRequest) -> tuple[BarCache, int] | None:
        """The cache for this request and the server's "now", or None when it cannot be used."""
        if req.kind != "bars" or req.limit is not None or req.start_ns is None \
                or not req.timeframe.cacheable:
            return None
        info = self._server_info()
        if info is None:
            return None
        server, now_ns = info
        if is_crypto(req.symbols[0]):      # one class per request here (see series)
            key = CacheKey(server, f"crypto-{req.loc}", "raw", str(req.timeframe))
        else:
            feed = req.feed or _default_feed_label(self.transport.settings)
            key = CacheKey(server, feed, req.adjustment or "raw", str(req.timeframe))
        return BarCache(key), now_ns

    def _cached_series(self, req: SeriesRequest, acc: frames.SeriesAccumulator, bar: _Progress,
                       cache: BarCache, now_ns: int, *, tz: str | None) -> pd.DataFrame | None:
        """Fill ``acc`` from the cache and downloads of what it lacks; or, when the cache holds
        every requested day, return the whole frame straight from the files."""
        margin = 0 if server_is_sandbox(cache.key.server) else _CACHE_MARGIN_NS
        crypto = is_crypto(req.symbols[0])     # crypto trades 24/7: its days are UTC days
        day = _utc_date if crypto else ny_date
        first = day(req.start_ns).toordinal()
        last = day(min(req.end_ns if req.end_ns is not None else now_ns, max(now_ns, req.start_ns))).toordinal()
        complete = day(now_ns - margin).toordinal() - 1          # the last day that is over
        bounds = _UtcDayBounds() if crypto else _DayBounds()
        days = range(first, min(last, complete) + 1)
        tail = last > complete or req.end_ns is None or not days

        files = cache.open_many(req.symbols)
        marks = None
        if not crypto and req.adjustment is not None and set(req.adjustment.split(",")) != {"raw"}:
            try:
                marks = self._revalidate(req, cache, files, first, now_ns)
            except AlpacaError as exc:
                log.warning("corporate actions unavailable (%s): adjusted bars are downloaded, "
                            "not read from or written to the cache", exc)
                for f in (files or {}).values():
                    if f is not None:
                        f.close()
                for chunk in _symbol_chunks(req.symbols):
                    self._download(req, chunk, req.start_ns, req.end_ns, acc, bar)
                return None
        try:
            if files is not None and not tail and all(f is not None and f.days.issuperset(days)
                                                      for f in files.values()):
                try:
                    symbols, counts, times, block = read_window(files.values(), req.start_ns, _hi(req.end_ns))
                    return frames.series_frame(req.schema, symbols, counts, times, block, tz=tz)
                except CorruptCacheFile:              # deleted: plan again without it
                    for f in files.values():
                        f.close()
                    files = cache.open_many(req.symbols)
            cached: dict[str, Any] = {}
            for symbol in req.symbols:
                file = files.get(symbol) if files is not None else None
                entry = cache.load(symbol) if files is None else None
                if file is not None:
                    try:
                        entry = file.read()
                    except CorruptCacheFile:
                        entry = None
                if entry is not None:
                    cached[symbol] = entry
        finally:
            for f in (files or {}).values():
                if f is not None:
                    f.close()

        plans: dict[tuple, list[str]] = defaultdict(list)
        for symbol in req.symbols:
            have = cached[symbol].days if symbol in cached else set()
            missing = tuple(tuple(r) for r in _runs(d for d in days if d not in have))
            plans[(missing, tail)].append(symbol)

        for (missing, has_tail), group in plans.items():
            for i, (lo, hi) in enumerate(missing):
                start = bounds[lo][0]      # whole days, so that they can be cached
                joins_tail = has_tail and i == len(missing) - 1 and hi == complete
                end = req.end_ns if joins_tail else bounds[hi][1] - NS
                part = frames.SeriesAccumulator(req.schema)
                for chunk in _symbol_chunks(group):
                    self._download(req, chunk, start, end, part, bar)
                self._store(cache, group, range(lo, hi + 1), bounds, part, acc, marks)
                if joins_tail:
                    has_tail = False
            if has_tail:
                tail_start = req.start_ns if complete < first else max(req.start_ns, bounds[complete + 1][0])
                for chunk in _symbol_chunks(group):
                    self._download(req, chunk, tail_start, req.end_ns, acc, bar)

        for symbol, entry in cached.items():
            a, b = np.searchsorted(entry.times, [req.start_ns, _hi(req.end_ns)], side="left")
            if b > a:
                acc.add_symbol(symbol, entry.times[a:b], {c: v[a:b] for c, v in entry.columns.items()})
        return None

    def _revalidate(self, req: SeriesRequest, cache: BarCache, files: dict[str, Any] | None,
                    first: int, now_ns: int) -> ActionMarks:
        """The corporate-action marks of the request's symbols (one request per symbol chunk,
        before any bar is downloaded), after deleting the cached adjusted bars they show to be
        stale (see :class:`alpaca_nb._corporate.ActionMarks`); a deleted file's entry in
        ``files`` (the open files, or None when they are read one at a time) becomes None."""
        heads: dict[str, tuple[int, Any]] = {}
        for symbol in req.symbols:
            file = files.get(symbol) if files is not None else cache.open(symbol)
            if file is not None:
                heads[symbol] = (min(file.days, default=first), file.meta.get("actions"))
                if files is None:
                    file.close()
        since = min([first, *(day for day, _ in heads.values())])
        actions: list[tuple[str, dict[str, Any]]] = []
        for chunk in _symbol_chunks(req.symbols):
            actions += fetch_actions(self.transport, {"symbols": ",".join(chunk),
                                                      **ActionMarks.window(since, now_ns)})
        marks = ActionMarks(actions, ny_date(now_ns).toordinal())
        for symbol, (day, mark) in heads.items():
            if mark != marks.digest(symbol, day):
                if files is not None:
                    files[symbol].close()
                    files[symbol] = None
                cache.discard(symbol, "corporate actions changed its adjusted bars")
        return marks

    @staticmethod
    def _store(cache: BarCache, group: Sequence[str], days: range, bounds: dict[int, tuple[int, int]],
               part: frames.SeriesAccumulator, acc: frames.SeriesAccumulator,
               marks: ActionMarks | None = None) -> None:
        """Write a finished download to the cache (every symbol of the group, with or without
        rows; adjusted bars with their corporate-action mark) and hand its rows to the result."""
        symbols, codes, times, cols = part.columns()
        acc.add_columns(codes, symbols, times, cols)
        order = np.argsort(codes, kind="stable") if len(codes) and np.any(np.diff(codes) < 0) else None
        if order is not None:
            codes, times = codes[order], times[order]
            cols = {c: v[order] for c, v in cols.items()}
        index = {s: i for i, s in enumerate(symbols)}
        for symbol in group:
            i = index.get(symbol)
            a, b = (np.searchsorted(codes, [i, i + 1]) if i is not None else (0, 0))
            extra = None if marks is None else \
                (lambda first_day, s=symbol: {"actions": marks.digest(s, first_day)})
            cache.store(symbol, days, bounds, times[a:b], {c: v[a:b] for c, v in cols.items()},
                        extra=extra)

    # ------------------------------------------------------------------ latest values
    def latest(self, kind: str, symbols: Any, *, feed: Any = None, loc: Any = "us",
               tz: str | None = None) -> pd.DataFrame:
        """Latest bar/trade/quote per symbol, indexed by symbol in the order asked."""
        syms = parse_symbols(symbols)
        feed = parse_choice(feed, name="feed", choices=FEEDS, allow_none=True)
        loc, tz = parse_loc(loc), parse_tz(tz)
        out: dict[str, Any] = {}
        for chunk in _symbol_chunks(syms):
            crypto = is_crypto(chunk[0])
            path = data_path(f"latest/{kind}", crypto=True, loc=loc) if crypto else f"/v2/stocks/{kind}/latest"
            body = self.transport.data(path, {"symbols": ",".join(chunk), "feed": None if crypto else feed})
            out.update((body or {}).get(kind) or {})
        schema = CRYPTO_TRADE if kind == "trades" and any(map(is_crypto, syms)) else _SCHEMAS[kind]
        return frames.latest_frame(out, schema, syms, tz=tz)

    def snapshots(self, symbols: Any, *, feed: Any = None, loc: Any = "us", tz: str | None = None) -> pd.DataFrame:
        syms = parse_symbols(symbols)
        feed = parse_choice(feed, name="feed", choices=FEEDS, allow_none=True)
        loc, tz = parse_loc(loc), parse_tz(tz)
        out: dict[str, Any] = {}
        for chunk in _symbol_chunks(syms):
            crypto = is_crypto(chunk[0])
            body = self.transport.data(data_path("snapshots", crypto=crypto, loc=loc),
                                       {"symbols": ",".join(chunk), "feed": None if crypto else feed})
            if isinstance(body, dict) and isinstance(body.get("snapshots"), dict):
                body = body["snapshots"]          # the crypto wrapper
            out.update(body or {})
        return frames.snapshots_frame(out, syms, tz=tz)

    def orderbooks(self, symbols: Any, *, loc: Any = "us", tz: str | None = None) -> pd.DataFrame:
        """The latest order book of crypto pairs as a tidy frame (see Alpaca.orderbook)."""
        syms = parse_symbols(symbols)
        stocks = [s for s in syms if not is_crypto(s)]
        if stocks:
            raise ValueError(f"symbols: order books exist for crypto pairs only (e.g. 'BTC/USD'); "
                             f"{stocks} are stocks")
        loc, tz = parse_loc(loc), parse_tz(tz)
        out: dict[str, Any] = {}
        for chunk in _symbol_chunks(syms):
            body = self.transport.data(data_path("latest/orderbooks", crypto=True, loc=loc),
                                       {"symbols": ",".join(chunk)})
            out.update((body or {}).get("orderbooks") or {})
        return orderbook_frame(out, syms, tz=tz)

    def last_trade_price(self, symbol: str) -> float | None:
        """The latest trade price of one stock or crypto pair (None when the server has none)."""
        if is_crypto(symbol):
            body = self.transport.data(data_path("latest/trades", crypto=True), {"symbols": symbol})
            trade = ((body or {}).get("trades") or {}).get(symbol) or {}
        else:
            body = self.transport.data(f"/v2/stocks/{symbol}/trades/latest", None)
            trade = (body or {}).get("trade") or {}
        price = trade.get("p")
        return float(price) if isinstance(price, (int, float)) and price > 0 else None


def orderbook_frame(by_symbol: dict[str, Any], symbols: Sequence[str], *,
                    tz: str | None = None) -> pd.DataFrame:
    """Order books ``{"BTC/USD": {"t", "b": [{p, s}], "a": [...]}}`` as one row per level:
    columns symbol (str), side ("bid"/"ask"), level (int64, 0 = best), price and size (float64),
    timestamp (the book's time, UTC or ``tz``), in the order of ``symbols``, bids then asks, best
    first; a symbol without a book has no rows (the columns are the same for an empty answer)."""
    cols: dict[str, list[Any]] = {c: [] for c in ORDERBOOK_COLUMNS}
    for symbol in symbols:
        book = by_symbol.get(symbol) or {}
        for side, key in (("bid", "b"), ("ask", "a")):
            for level, entry in enumerate(book.get(key) or ()):
                cols["symbol"].append(symbol)
                cols["side"].append(side)
                cols["level"].append(level)
                cols["price"].append(entry.get("p"))
                cols["size"].append(entry.get("s"))
                cols["timestamp"].append(book.get("t"))
    stamps = pd.to_datetime(pd.Series(cols["timestamp"], dtype=object), utc=True, format="ISO8601")
    return pd.DataFrame({
        "symbol": pd.Series(cols["symbol"], dtype=frames.STR),
        "side": pd.Series(cols["side"], dtype=frames.STR),
        "level": np.asarray(cols["level"], np.int64),
        "price": np.asarray(cols["price"], np.float64),
        "size": np.asarray(cols["size"], np.float64),
        "timestamp": stamps.dt.tz_convert(tz or "UTC").astype(f"datetime64[ns, {tz or 'UTC'}]"),
    }, columns=list(ORDERBOOK_COLUMNS))


def _join(first: pd.DataFrame | None, second: pd.DataFrame | None) -> pd.DataFrame | None:
    """Two (symbol, timestamp) frames of disjoint symbols as one, ordered by symbol (stable)."""
    parts = [f for f in (first, second) if f is not None]
    if len(parts) < 2:
        return parts[0] if parts else None
    joined = pd.concat(parts)
    return joined.sort_index(level="symbol", sort_remaining=False, kind="stable")


def server_is_sandbox(server: str) -> bool:
    return server.startswith("sandbox-")


def server_label(settings, status: dict[str, Any] | None) -> str | None:
    """The cache's name for a data source: ``sandbox-<market>-seed<N>[-v<data version>]`` from
    GET /sandbox/status,
    else the market-data host (a sandbox without a readable status is not cached)."""
    if settings.mode == "sandbox":
        if not status or "seed" not in status or "market" not in status:
            return None
        version = status.get("data_version")
        return f"sandbox-{status['market']}-seed{int(status['seed'])}" + (f"-v{int(version)}" if version else "")
    parts = urlsplit(settings.data_url)
    return (parts.hostname or "unknown") + (f"_{parts.port}" if parts.port else "")


def _default_feed_label(settings) -> str:
    """With no feed given Alpaca picks one from the account's subscription, so the cache keeps
    each key's default apart (by a short hash of the key id, never the key itself)."""
    if settings.feed:
        return settings.feed
    if settings.mode == "sandbox":
        return "default"
    return "default-" + hashlib.sha256(settings.key_id.encode()).hexdigest()[:10]


def _utc_date(ns: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=ns // (86_400 * NS))


class _UtcDayBounds(dict):
    """UTC day ordinal -> (first ns, last ns + 1): crypto's days."""

    def __missing__(self, ordinal: int) -> tuple[int, int]:
        start = (ordinal - dt.date(1970, 1, 1).toordinal()) * 86_400 * NS
        self[ordinal] = value = (start, start + 86_400 * NS)
        return value


class _DayBounds(dict):
    """New York day ordinal -> (first ns, last ns + 1), computed on first use."""

    def __missing__(self, ordinal: int) -> tuple[int, int]:
        day = dt.date.fromordinal(ordinal)
        self[ordinal] = value = (ny_midnight_ns(day), ny_midnight_ns(day + dt.timedelta(days=1)))
        return value


def _hi(end_ns: int | None) -> int:
    return np.iinfo(np.int64).max if end_ns is None else end_ns + 1


def _runs(days) -> list[list[int]]:
    out: list[list[int]] = []
    for d in days:
        if out and d == out[-1][1] + 1:
            out[-1][1] = d
        else:
            out.append([d, d])
    return out


def _symbol_chunks(symbols: Sequence[str]) -> list[list[str]]:
    """Sorted symbols in groups whose comma-joined length stays under the URL budget, stocks
    first, then crypto pairs (a group holds one asset class: they have different endpoints)."""
    chunks: list[list[str]] = [[]]
    size = 0
    for s in sorted(symbols, key=lambda s: (is_crypto(s), s)):
        if chunks[-1] and (size + len(s) + 1 > _MAX_SYMBOL_CHARS or is_crypto(s) != is_crypto(chunks[-1][0])):
            chunks.append([])
            size = 0
        chunks[-1].append(s)
        size += len(s) + 1
    return chunks if chunks[0] else []


# ------------------------------------------------------------------ pipelined pagination

def peek_next_page_token(raw: bytes) -> str | None:
    """``next_page_token`` read straight from a page's bytes, before it is decoded (so the next
    request can start while this page is parsed). Returns None when absent or null."""
    i = raw.rfind(b'"next_page_token"')
    if i < 0:
        return None
    j = raw.find(b":", i + 17)
    if j < 0:
        return None
    j += 1
    while j < len(raw) and raw[j] in b" \t\r\n":
        j += 1
    if raw[j:j + 1] != b'"':
        return None
    k = raw.find(b'"', j + 1)
    if k < 0 or b"\\" in raw[j + 1:k]:
        return None
    return raw[j + 1:k].decode()


class _Fetcher:
    """A daemon thread that downloads the pages of one paginated request, one at a time, so that
    the next page is on the wire while the current one is parsed. Owned by :func:`_pages`, which
    closes it when the pages are done, the download failed or the consumer left early: then no
    further request or retry goes out."""

    def __init__(self, transport, path: str):
        self._transport = transport
        self._path = path
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self.pending = False
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alpaca-nb-pages", daemon=True)
        self._thread.start()

    def submit(self, params: dict[str, Any]) -> None:
        self.pending = True
        self._jobs.put(params)

    def result(self) -> bytes:
        """The raw page of the request in flight (raises its error)."""
        ok, value = self._results.get()
        self.pending = False
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """No request or retry starts from now on; waits up to a second for the thread to end
        (a request already on the wire is not interrupted)."""
        self._cancel.set()
        self._jobs.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _run(self) -> None:
        while True:
            params = self._jobs.get()
            if params is None or self._cancel.is_set():
                return
            try:
                self._results.put((True, self._transport.data(self._path, params, raw=True,
                                                              cancel=self._cancel)))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                self._results.put((False, exc))


def _pages(transport, path: str, params: dict[str, Any], limit: int | None,
           bar: _Progress) -> Iterator[dict[str, Any]]:
    """Decoded pages of one paginated request, the next one always in flight while the current
    one is processed. ``limit`` caps the total number of rows over all pages."""
    fetcher = _Fetcher(transport, path)

    def fetch(token: str | None, remaining: int | None) -> None:
        page_params = dict(params, limit=min(PAGE_SIZE, remaining) if remaining else PAGE_SIZE)
        if token:
            page_params["page_token"] = token
        fetcher.submit(page_params)

    remaining = limit
    try:
        fetch(None, remaining)
        while fetcher.pending:
            raw = fetcher.result()
            bar.page()
            guess = peek_next_page_token(raw)
            if guess and remaining is None:
                fetch(guess, None)                    # on the wire while this page is decoded
            page = orjson.loads(raw)
            del raw
            token = page.get("next_page_token")
            if remaining is not None:
                remaining -= _count(page)
                if remaining <= 0:
                    token = None
            if fetcher.pending and token != guess:    # a wrong guess (never seen): discard it
                try:
                    fetcher.result()
                except AlpacaError:
                    pass
            if token and not fetcher.pending:
                fetch(token, remaining)
            yield page
            del page                                  # only one decoded page alive at a time
    finally:
        fetcher.close()


def _count(page: dict[str, Any]) -> int:
    for key in ("bars", "trades", "quotes"):
        groups = page.get(key)
        if isinstance(groups, dict):
            return sum(len(v) for v in groups.values() if v)
    return 0


class _Progress:
    """A tqdm.auto bar for multi-page downloads: ``progress=None`` shows it from the second page
    on, True always, False never."""

    def __init__(self, kind: str, progress: bool | None):
        self.kind = kind
        self.mode = progress
        self.pages = 0
        self.rows = 0
        self._bar = None

    def page(self) -> None:
        self.pages += 1
        if self._bar is None and (self.mode is True or (self.mode is None and self.pages >= 2)):
            from tqdm.auto import tqdm
            self._bar = tqdm(desc=f"{self.kind}", unit=" rows", unit_scale=True, leave=False)
            self._bar.update(self.rows)
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self.pages} pages", refresh=False)

    def update(self, rows: int) -> None:
        self.rows += rows
        if self._bar is not None:
            self._bar.update(rows)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def server_now_from_status(status: dict[str, Any] | None) -> int:
    """Server time from /sandbox/status (falls back to this machine's clock)."""
    now = (status or {}).get("now")
    if isinstance(now, str):
        try:
            return int(pd.Timestamp(now).as_unit("ns")._value)
        except ValueError:
            pass
    return time.time_ns()
