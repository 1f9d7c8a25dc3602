"""Market-data REST v2 for stocks (protocol section 4), served from the synthetic market.

Endpoints: multi- and single-symbol bars, trades and quotes with ``start``/``end``/``limit``/
``page_token``/``sort``/``feed``/``adjustment``/``asof``/``currency``; latest bars, trades and
quotes (multi and single); snapshots (multi, with ``null`` for unknown symbols, and the singular
``/snapshot``). The WebSocket at ``/v2/{feed}`` lives in :mod:`.data_stream`; the request
parameters, their errors and the page tokens are parsed in :mod:`._data_query`.

What the sandbox decides where Alpaca's behaviour is not pinned down:

* ``feed=iex`` serves IEX's share of the market (:mod:`._iex`: a few percent of the SIP's volume
  and prints, IEX's own bars, trades on ``V`` and IEX quotes); every other feed (``sip``,
  ``otc``, ``boats``; ``delayed_sip`` and ``overnight`` on the latest/snapshot endpoints) serves
  the SIP data, up to the sandbox's now. ``feed=delayed_sip`` on latest/snapshot answers as of
  15 minutes ago.
* What a key may read depends on its account's market-data plan (:mod:`.plans`). ``unlimited``
  (the default) reads every feed in real time. ``basic`` (Alpaca's free plan) gets
  ``403 {"message":"subscription does not permit querying recent SIP data"}`` for SIP data of
  the last 15 minutes: a historical request with ``feed=sip`` (or no feed: historical endpoints
  default to SIP on every plan) whose explicit ``end`` or ``start`` is within the last 15
  minutes, and any latest/snapshot request with ``feed=sip``. A historical SIP request of a
  basic account without ``end`` ends 15 minutes ago; latest/snapshot requests without ``feed``
  serve ``iex`` on basic and ``sip`` on unlimited.
* ``adjustment`` adjusts bars for the corporate actions of :mod:`.corporate` as of the
  sandbox's today (:mod:`.adjusted`); ``GET /v1/corporate-actions`` is :mod:`.corporate_api`.
* ``currency`` must be USD; ``asof`` is validated and otherwise has no effect (no renames).
* Errors are ``400 {"message": ...}`` without a numeric code, as the current data API answers
  (bodies recorded against the live API in 2026: "end should not be before start",
  "Invalid format for parameter start: error parsing '...' as RFC3339 or 2006-01-02 time",
  "Invalid format for parameter symbols: query parameter 'symbols' is required",
  "invalid timeframe"). The texts for a bad page token, limit, sort, feed, adjustment and
  currency are the sandbox's own ([unconfirmed]). Unknown but well-formed symbols are simply
  absent from the answer (as Alpaca does); the single-symbol latest and snapshot endpoints
  answer 404 for them ([unconfirmed]).
* ``start``/``end`` are inclusive; a date-only value means the whole New York day (``end=
  2024-03-06`` includes that day's last minute, extended hours included, as measured on
  Alpaca). A missing ``start`` means the beginning of the current New York day (or of ``end``'s
  day when ``end`` is earlier); ``end`` defaults to now and is capped at now.
* Pages are assembled from cached, pre-serialised per-(symbol, period) chunks, so a 10,000-bar
  page is a join of byte slices (building a chunk of intraday bars generates in one batch the
  minutes of the next UTC days the request will read, counted from the market's sessions,
  :meth:`Market.prefetch_minutes`); ``next_page_token`` is base64 of
  ``SYMBOL|KIND|<last timestamp>`` and is null once nothing is left. Historical pages carry a
  ``Server-Timing: page;dur=<ms>`` header (time spent building the page). Answers are not
  gzip-compressed, even when the client accepts it: on loopback that would only cost time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from .._stream_protocol import iso_ns
from . import adjusted, plans
from . import app as _app
from ._barjson import bar_json
from ._bars import UNIT_DAY, Bars, BarTick, QuoteTick, Ticks, Timeframe, TradeTick
from ._data_query import (
    MAX_LIMIT,
    Query,
    _now,
    _plan,
    bad,
    check_symbol,
    encode_token,
    parse_common,
    parse_query,
    parse_symbols,
)
from ._iex import FeedCache, IexMarket
from .clock import DAY_NS, MINUTE_NS, NS, ny_date, ny_midnight_ns, rfc3339_array
from .market import Market
from .wire import ApiError, json_response

log = logging.getLogger(__name__)

TICK_BLOCK_MINUTES = 5                      # trades/quotes are cached in 5-minute chunks
PREFETCH_DAYS = 21                          # UTC days of minutes generated in one batch, at most
CACHE_BYTES = 512 * 1024 ** 2               # serialised chunks kept in memory
DELAY_NS = 15 * 60 * NS                     # delayed_sip lag

CHUNKS = web.AppKey("data_chunks", object)
IEX_MARKET = web.AppKey("data_iex_market", object)
READ_AHEAD = web.AppKey("data_read_ahead", object)


# ---------------------------------------------------------------- wire records

TRADE_CONDITIONS = (["@"], ["@", "I"], ["@", "T"], ["@", "T", "I"])   # by Ticks.flags
QUOTE_CONDITIONS = ["R"]


def trade_records(ticks: Ticks, lo: int, hi: int, tape: str) -> list[dict]:
    """Trades ``lo:hi`` of a minute as wire dicts ``{t,x,p,s,c,i,z}``."""
    s = slice(lo, hi)
    return [{"t": t, "x": x, "p": p, "s": sz, "c": TRADE_CONDITIONS[f], "i": i, "z": tape}
            for t, x, p, sz, f, i in zip(rfc3339_array(ticks.trade_t[s]), ticks.trade_x[s].tolist(),
                                         ticks.price[s].tolist(), ticks.size[s].tolist(),
                                         ticks.flags[s].tolist(), ticks.trade_id[s].tolist())]


def quote_records(ticks: Ticks, lo: int, hi: int, tape: str) -> list[dict]:
    """Quotes ``lo:hi`` of a minute as wire dicts ``{t,ax,ap,as,bx,bp,bs,c,z}``."""
    s = slice(lo, hi)
    return [{"t": t, "ax": ax, "ap": ap, "as": asz, "bx": bx, "bp": bp, "bs": bsz,
             "c": QUOTE_CONDITIONS, "z": tape}
            for t, ax, ap, asz, bx, bp, bsz in zip(
                rfc3339_array(ticks.quote_t[s]), ticks.ask_x[s].tolist(), ticks.ask[s].tolist(),
                ticks.ask_size[s].tolist(), ticks.bid_x[s].tolist(), ticks.bid[s].tolist(),
                ticks.bid_size[s].tolist())]


def bar_dict(bar: BarTick | None) -> dict | None:
    if bar is None:
        return None
    return {"t": iso_ns(bar.t), "o": bar.open, "h": bar.high, "l": bar.low, "c": bar.close,
            "v": bar.volume, "n": bar.trade_count, "vw": bar.vwap}


def trade_dict(trade: TradeTick | None, tape: str, extended: bool = False) -> dict | None:
    if trade is None:
        return None
    flags = (1 if trade.size < 100 else 0) | (2 if extended else 0)
    return {"t": iso_ns(trade.t), "x": trade.exchange, "p": trade.price, "s": trade.size,
            "c": TRADE_CONDITIONS[flags], "i": trade.id, "z": tape}


def quote_dict(quote: QuoteTick | None, tape: str) -> dict | None:
    if quote is None:
        return None
    return {"t": iso_ns(quote.t), "ax": quote.ask_exchange, "ap": quote.ask, "as": quote.ask_size,
            "bx": quote.bid_exchange, "bp": quote.bid, "bs": quote.bid_size,
            "c": QUOTE_CONDITIONS, "z": tape}


# ---------------------------------------------------------------- serialised chunks

class Chunk:
    """Records of one (kind, symbol, period) serialised once: ``body`` is ``rec,rec,...`` and
    record ``i`` is ``body[starts[i]:ends[i]]``; ``t`` holds the records' timestamps."""

    __slots__ = ("_ends", "_rev", "_starts", "body", "t")

    def __init__(self, body: bytes, t: np.ndarray):
        self.t = t
        self._rev: Chunk | None = None
        self.body = body
        self._ends: np.ndarray | None = None       # found when a record boundary is needed
        self._starts: np.ndarray | None = None

    @property
    def ends(self) -> np.ndarray:
        if self._ends is None:
            # records are flat objects (no nested '{'), so every '}' ends one
            self._ends = np.flatnonzero(np.frombuffer(self.body, dtype=np.uint8) == 0x7D).astype(np.int64) + 1
        return self._ends

    @property
    def starts(self) -> np.ndarray:
        if self._starts is None:
            ends = self.ends
            self._starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
        return self._starts

    @classmethod
    def of_records(cls, records: list[dict], t: np.ndarray) -> Chunk:
        return cls(orjson.dumps(records)[1:-1] if records else b"", t)

    def __len__(self) -> int:
        return len(self.t)

    @property
    def nbytes(self) -> int:
        return len(self.body) + 24 * len(self.t) + (self._rev.nbytes if self._rev else 0)

    def index_range(self, lo: int, hi: int) -> tuple[int, int]:
        """Indices ``a:b`` of the records with ``lo <= t <= hi``."""
        return (int(np.searchsorted(self.t, lo, side="left")),
                int(np.searchsorted(self.t, hi, side="right")))

    def slice(self, a: int, b: int) -> bytes:
        """Records ``a:b`` (a < b) in ascending order, comma-separated."""
        if a == 0 and b == len(self.t):
            return self.body
        return self.body[self.starts[a]:self.ends[b - 1]]

    def slice_desc(self, a: int, b: int) -> bytes:
        """Records ``a:b`` (a < b) in descending order, comma-separated."""
        rev = self._rev
        if rev is None:
            rev = self._rev = Chunk.__new__(Chunk)
            n = len(self.t)
            rev.t, rev._rev = self.t[::-1].copy(), None
            rev.body = b",".join([self.body[self.starts[i]:self.ends[i]] for i in range(n - 1, -1, -1)])
            lengths = (self.ends - self.starts)[::-1]
            rev._ends = np.cumsum(lengths + 1) - 1
            rev._starts = rev._ends - lengths
        n = len(self.t)
        return rev.slice(n - b, n - a)


class ChunkCache:
    """LRU of serialised chunks bounded by total bytes. A chunk's descending copy, made when a
    page first reads it backwards, counts from the next time the chunk is looked up."""

    def __init__(self, budget: int = CACHE_BYTES):
        self.budget = budget
        self.bytes = 0                                  # the sum of the sizes counted below
        self._items: OrderedDict[tuple, tuple[Chunk, int]] = OrderedDict()   # chunk, size counted

    def __contains__(self, key: tuple) -> bool:
        return key in self._items

    def get(self, key: tuple) -> Chunk | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        chunk, counted = found
        if chunk.nbytes != counted:                     # its descending copy was made since
            self._items[key] = (chunk, chunk.nbytes)
            self.bytes += chunk.nbytes - counted
            self._trim()
        return chunk

    def put(self, key: tuple, chunk: Chunk) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (chunk, chunk.nbytes)
        self.bytes += chunk.nbytes
        self._trim()

    def _trim(self) -> None:
        while self.bytes > self.budget and len(self._items) > 1:
            _, (_, counted) = self._items.popitem(last=False)
            self.bytes -= counted

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


# ---------------------------------------------------------------- series: what a request reads

_EPOCH = dt.date(1970, 1, 1)


def _utc_date(ns: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=ns // DAY_NS)


def _utc_midnight(day: dt.date) -> int:
    return (day - _EPOCH).days * DAY_NS


@dataclass
class Series:
    """One kind of record (``bars`` of a timeframe, ``trades`` or ``quotes``) over the market,
    cut into periods that are serialised and cached once they are entirely in the past: UTC
    days for intraday bars, years for daily and longer bars, 5-minute blocks for trades and
    quotes. This is the stock market's (NYSE sessions, daily bars stamped at NY midnight);
    :class:`.crypto_api.CryptoSeries` is the 24/7 crypto market's."""

    market: Market
    cache: ChunkCache
    kind: str
    timeframe: Timeframe | None = None
    code: str = field(init=False)

    def __post_init__(self) -> None:
        self.code = str(self.timeframe) if self.kind == "bars" else self.kind[0].upper()

    # periods -------------------------------------------------------------
    def periods(self, lo: int, hi: int, desc: bool) -> list[Any]:
        """Period keys covering [lo, hi] (ns), in the page's order."""
        if hi < lo:
            return []
        if self.kind != "bars":
            keys = self._blocks(lo, hi)
        elif self.timeframe.intraday:
            first, last = _utc_date(lo), _utc_date(hi)
            keys = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
        else:
            keys = list(range(self._date(lo).year, self._date(hi).year + 1))
        return keys[::-1] if desc else keys

    def _blocks(self, lo: int, hi: int) -> list[int]:
        """The 5-minute blocks in [lo, hi] (ns) that can hold trades or quotes: those of the
        sessions."""
        keys: list[int] = []
        block = TICK_BLOCK_MINUTES * MINUTE_NS
        for sess in self.market.sessions.sessions_between(ny_date(lo), ny_date(hi)):
            a = max(lo, sess.premarket_open) // block
            b = min(hi, sess.postmarket_close - 1) // block
            keys.extend(range(a, b + 1))
        return keys

    @staticmethod
    def _date(ns: int) -> dt.date:
        """The date of a daily bar stamped at ``ns`` (NY midnight; a week or month bar is
        stamped at its first session day)."""
        return ny_date(ns)

    def _year_end(self, year: int) -> int:
        """The instant after which the daily (week, month) bars stamped in ``year`` are final."""
        last = dt.date(year, 12, 31) + dt.timedelta(days=0 if self.timeframe.unit == UNIT_DAY else 7)
        return ny_midnight_ns(last + dt.timedelta(days=1)) + DAY_NS   # past any post-market

    @staticmethod
    def _minute_days(key: dt.date) -> tuple[dt.date, ...]:
        """The market days whose minutes the UTC day ``key`` aggregates (the NY day before
        lends its evening)."""
        return key - dt.timedelta(days=1), key

    def _wire(self, symbol: str, bars: Bars) -> Bars:
        """Bars as the wire writes them."""
        return bars

    def _tick_records(self, symbol: str, ticks: Any, n: int) -> list[dict]:
        """The first ``n`` trades (quotes) of a minute's ticks as wire dicts."""
        encode = trade_records if self.kind == "trades" else quote_records
        return encode(ticks, 0, n, self.market.tape(symbol))

    def period_end(self, key: Any) -> int:
        """The instant after which the period's records can no longer change."""
        if self.kind != "bars":
            return (key + 1) * TICK_BLOCK_MINUTES * MINUTE_NS
        if self.timeframe.intraday:
            return _utc_midnight(key) + DAY_NS
        return self._year_end(key)

    def chunk(self, symbol: str, keys: Sequence[Any], i: int, *, lo: int, hi: int, now: int,
              wanted: int) -> Chunk:
        """The records of period ``keys[i]``. When it has to be built, the minutes of the next
        periods that ``wanted`` more records of [lo, hi] (ns) may reach are generated together
        with its own (:meth:`ahead`)."""
        key = keys[i]
        cache_key = (self.kind, self.code, symbol, key)
        found = self.cache.get(cache_key)
        if found is not None:
            return found
        if self.kind == "bars" and self.timeframe.intraday:
            self._prefetch(symbol, [key, *self.ahead(keys, i, lo, hi, wanted)])
        chunk = self._build(symbol, key, now)
        if self.period_end(key) <= now:
            self.cache.put(cache_key, chunk)
        return chunk

    def _build(self, symbol: str, key: Any, now: int) -> Chunk:
        market, tf = self.market, self.timeframe
        if self.kind == "bars":
            if tf.intraday:
                bars = market.intraday_bars(symbol, tf, key, now)
            elif tf.unit == UNIT_DAY:
                bars = market.daily_bars(symbol, dt.date(key, 1, 1), dt.date(key, 12, 31), now)
            else:
                bars = market.period_bars(symbol, tf, key, now)
            return Chunk(bar_json(self._wire(symbol, bars)), bars.t)
        records: list[dict] = []
        times: list[np.ndarray] = []
        first = key * TICK_BLOCK_MINUTES * MINUTE_NS
        for minute in range(first, min(first + TICK_BLOCK_MINUTES * MINUTE_NS, now + 1), MINUTE_NS):
            ticks = market.ticks(symbol, minute)
            if ticks is None:
                continue
            t = ticks.trade_t if self.kind == "trades" else ticks.quote_t
            n = int(np.searchsorted(t, now, side="right"))
            if n:
                records.extend(self._tick_records(symbol, ticks, n))
                times.append(t[:n])
        return Chunk.of_records(records, np.concatenate(times) if times else np.empty(0, np.int64))

    def records(self, symbol: str, lo: int, hi: int, now: int, desc: bool,
                wanted: int = MAX_LIMIT, then: int = MAX_LIMIT) -> Iterator[tuple[Chunk, int, int]]:
        """Non-empty (chunk, a, b) ranges with ``lo <= t <= hi``, in the page's order. ``wanted``
        (how many records the caller still takes) bounds the minutes generated ahead; past
        them, the caller looks at one more record (where its next page starts, which will take
        ``then`` records)."""
        keys = self.periods(lo, hi, desc)
        for i in range(len(keys)):
            chunk = self.chunk(symbol, keys, i, lo=lo, hi=hi, now=now, wanted=wanted if wanted > 0 else then)
            if len(chunk):
                a, b = chunk.index_range(lo, hi)
                if a < b:
                    wanted -= b - a
                    yield chunk, a, b

    def ahead(self, keys: Sequence[Any], i: int, lo: int, hi: int, wanted: int) -> list[Any]:
        """The periods after ``keys[i]`` that ``wanted`` more records of [lo, hi] (ns) from
        ``keys[i]`` on may reach: intraday bars only (their minutes are generated in batches),
        counted from the market's minutes with data in each UTC day (a bucket of the timeframe
        makes one record), at most PREFETCH_DAYS periods in all."""
        if self.kind != "bars" or not self.timeframe.intraday:
            return []
        width = self.timeframe.minutes
        j, left = i, wanted
        while left > 0 and j < len(keys) and j - i < PREFETCH_DAYS:
            day0 = _utc_midnight(keys[j])
            minutes = self.market.minute_count(max(lo, day0), min(hi, day0 + DAY_NS - 1))
            left -= -(-minutes // width)
            j += 1
        return list(keys[i + 1:j])

    def _prefetch(self, symbol: str, keys: list[Any]) -> None:
        """Generate at once the minutes of the market days that the not yet cached UTC-day
        periods ``keys`` aggregate."""
        days: set[dt.date] = set()
        for i, key in enumerate(keys):
            if i and (self.kind, self.code, symbol, key) in self.cache:
                continue
            days.update(self._minute_days(key))
        self.market.prefetch_minutes(symbol, sorted(days))


@dataclass
class Page:
    parts: list[tuple[str, list[bytes]]]
    next_token: str | None
    last: tuple[str, int, int] | None = None    # the last record returned, when more remain (see the token)


def build_page(series: Series, symbols: list[str], *, start: int, end: int, limit: int,
               desc: bool, token: tuple[str, int, int] | None, now: int) -> Page:
    """Up to ``limit`` records across ``symbols`` (sorted), each symbol's records in time order
    (descending when ``desc``), continuing after ``token``. The token of the next page names the
    last record returned (its timestamp, and its rank among the records sharing that timestamp,
    so that a page boundary inside a burst of equal timestamps loses and repeats nothing), and
    is None when nothing is left."""
    skip = 0
    if token is not None:
        symbols = symbols[symbols.index(token[0]):]
    remaining = limit
    parts: list[tuple[str, list[bytes]]] = []
    last: tuple[str, int, int] | None = None
    for symbol in symbols:
        lo, hi = start, end
        if token is not None and symbol == token[0]:
            # resume at the token's timestamp, past the records of it already returned
            lo, hi, skip = (lo, min(hi, token[1]), token[2]) if desc else (max(lo, token[1]), hi, token[2])
        slices: list[bytes] = []
        for chunk, a, b in series.records(symbol, lo, hi, now, desc, remaining + skip, limit):
            if skip:
                a, b, skip = (a, b - skip, 0) if desc else (a + skip, b, 0)
                if a >= b:
                    continue
            if remaining == 0:   # a record exists beyond this page
                if slices:
                    parts.append((symbol, slices))
                return Page(parts, encode_token(last[0], series.code, last[1], last[2]), last)
            take = min(b - a, remaining)
            if desc:
                slices.append(chunk.slice_desc(b - take, b))
                t = int(chunk.t[b - take])
                last = (symbol, t, int(np.searchsorted(chunk.t, t, side="right")) - (b - take))
            else:
                slices.append(chunk.slice(a, a + take))
                t = int(chunk.t[a + take - 1])
                last = (symbol, t, a + take - int(np.searchsorted(chunk.t, t, side="left")))
            remaining -= take
            if remaining == 0 and take < b - a:
                parts.append((symbol, slices))
                return Page(parts, encode_token(last[0], series.code, last[1], last[2]), last)
        if slices:
            parts.append((symbol, slices))
    return Page(parts, None)


def _market(request: web.Request, feed: str = "sip") -> Market:
    """The market as ``feed`` shows it: IEX's share for ``iex``, the SIP for every other feed."""
    return request.app[IEX_MARKET] if feed == "iex" else request.app[_app.MARKET]


def _series(request: web.Request, kind: str, timeframe: Timeframe | None,
            adjustment: frozenset[str] = frozenset(), feed: str = "sip") -> Series:
    market, cache = _market(request, feed), request.app[CHUNKS]
    if feed == "iex":
        cache = FeedCache(cache, feed)
    if adjustment:
        market, cache = adjusted.view(market, cache, adjustment, ny_date(_now(request)))
    return Series(market, cache, kind, timeframe)


def _token_bytes(token: str | None) -> bytes:
    return b"null" if token is None else orjson.dumps(token)


def _tail(query: Query) -> bytes:
    return b',"currency":"USD"' if query.currency else b""


def _run_page(request: web.Request, kind: str, query: Query) -> Page:
    market = _market(request)
    known = [s for s in query.symbols if market.has(s)]
    if query.token is not None and query.token[0] not in known:
        raise bad("invalid page token")
    series = _series(request, kind, query.timeframe, query.adjustment, query.feed)
    now = query.horizon if query.horizon is not None else _now(request)
    page = build_page(series, known, start=query.start, end=query.end, limit=query.limit,
                      desc=query.desc, token=query.token, now=now)
    if page.last is not None:
        _read_ahead(request.app, series, known, query, page.last, now)
    return page


class ReadAhead:
    """Prepares the chunks of the page a client will most likely ask for next (the one after
    ``next_page_token``, up to the record past its end that its own build looks at, whose
    chunk is built with the minutes of the page after it) while the client is busy with the
    current one, one chunk per loop turn. Only
    periods entirely in the past are prepared (they are the cacheable ones); at most one
    read-ahead runs at a time. ``last_ms`` is the build time the latest one spent."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.last_ms = 0.0

    async def run(self, series: Series, symbols: list[str], query: Query,
                  after: tuple[str, int, int], now: int) -> None:
        try:
            await self._prepare(series, symbols, query, after, now)
        except asyncio.CancelledError:
            raise
        except Exception:       # only a cache warm-up failed; the next request will say why
            log.exception("market data: read-ahead failed")

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _prepare(self, series: Series, symbols: list[str], query: Query,
                       after: tuple[str, int, int], now: int) -> None:
        # the page starts at after's instant, past the records of it the last page returned;
        # once full, it looks at one more record (where the page after it starts)
        remaining, spent = query.limit + after[2], 0.0
        for symbol, keys, i, lo, hi in _periods_after(series, symbols, query, after):
            if series.period_end(keys[i]) > now:     # not cacheable: the next request builds it
                if remaining == 0:
                    break
                continue
            t0 = time.perf_counter()
            chunk = series.chunk(symbol, keys, i, lo=lo, hi=hi, now=now, wanted=remaining or query.limit)
            a, b = chunk.index_range(lo, hi)
            spent += time.perf_counter() - t0
            if b > a and remaining == 0:
                break
            remaining -= max(0, b - a)
            if remaining < 0:
                break
            await asyncio.sleep(0)
        self.last_ms = spent * 1000


def _periods_after(series: Series, symbols: list[str], query: Query,
                   after: tuple[str, int, int]) -> Iterator[tuple[str, list[Any], int, int, int]]:
    """(symbol, its period keys, index, lo, hi) of each period the pages that continue after
    ``after`` read, in their order."""
    for symbol in symbols[symbols.index(after[0]):]:
        lo, hi = query.start, query.end
        if symbol == after[0]:
            lo, hi = (lo, min(hi, after[1])) if query.desc else (max(lo, after[1]), hi)
        keys = series.periods(lo, hi, query.desc)
        for i in range(len(keys)):
            yield symbol, keys, i, lo, hi


def _read_ahead(app: web.Application, series: Series, symbols: list[str], query: Query,
                after: tuple[str, int, int], now: int) -> None:
    state: ReadAhead = app[READ_AHEAD]
    if state.task is None or state.task.done():
        state.task = asyncio.get_running_loop().create_task(state.run(series, symbols, query, after, now))


# ---------------------------------------------------------------- historical handlers

def _timed(request: web.Request, body: bytes, started: float) -> web.Response:
    """The page, with the time spent building it (and the latest read-ahead's build time) in a
    standard ``Server-Timing`` header."""
    elapsed_ms = (time.perf_counter() - started) * 1000
    ahead = request.app[READ_AHEAD].last_ms
    return json_response(body, headers={"Server-Timing": f"page;dur={elapsed_ms:.3f}, readahead;dur={ahead:.3f}"})


def multi_body(kind: str, page: Page, tail: bytes = b"") -> bytes:
    """``{"<kind>":{"SYM":[...],...},"next_page_token":...<tail>}`` of a multi-symbol page."""
    out = [b'{"', kind.encode(), b'":{']
    for i, (symbol, slices) in enumerate(page.parts):
        out.append(b'"%s":[' % symbol.encode() if i == 0 else b'],"%s":[' % symbol.encode())
        out.append(b",".join(slices))
    if page.parts:
        out.append(b"]")
    out.append(b'},"next_page_token":' + _token_bytes(page.next_token) + tail + b"}")
    return b"".join(out)


def _historical_multi(kind: str):
    async def handler(request: web.Request) -> web.Response:
        started = time.perf_counter()
        symbols = parse_symbols(request.query.get("symbols"))
        query = parse_query(request, kind, symbols)
        page = _run_page(request, kind, query)
        return _timed(request, multi_body(kind, page, _tail(query)), started)
    handler.__name__ = f"multi_{kind}"
    return handler


def _historical_single(kind: str):
    async def handler(request: web.Request) -> web.Response:
        started = time.perf_counter()
        symbol = check_symbol(request.match_info["symbol"])
        query = parse_query(request, kind, [symbol])
        page = _run_page(request, kind, query)
        slices = [s for _, parts in page.parts for s in parts]
        body = b"".join([b'{"', kind.encode(), b'":[', b",".join(slices), b'],"symbol":',
                         orjson.dumps(symbol), b',"next_page_token":', _token_bytes(page.next_token),
                         _tail(query), b"}"])
        return _timed(request, body, started)
    handler.__name__ = f"single_{kind}"
    return handler


# ---------------------------------------------------------------- latest and snapshots

def parse_latest(request: web.Request) -> tuple[str, str | None]:
    """``feed`` and ``currency`` of a latest/snapshot request. Without ``feed`` the account's
    plan picks it (``iex`` on basic, ``sip`` on unlimited); ``feed=sip`` on a basic account is
    Alpaca's 403 (after the 400s)."""
    plan = _plan(request)
    feed, currency = parse_common(request.query, default_feed=plans.default_latest_feed(plan))
    if feed == "sip" and not plans.realtime_sip(plan):
        raise plans.recent_sip_refused()
    return feed, currency


def _latest_now(request: web.Request, feed: str) -> int:
    now = _now(request)
    return now - DELAY_NS if feed == "delayed_sip" else now


def _latest_record(market: Market, kind: str, symbol: str, now: int) -> dict | None:
    tape = market.tape(symbol)
    try:
        if kind == "bars":
            return bar_dict(market.latest_bar(symbol, now))
        if kind == "trades":
            trade = market.trade_at(symbol, now)
            return trade_dict(trade, tape, market.sessions.is_extended(trade.t))
        return quote_dict(market.quote_at(symbol, now), tape)
    except LookupError:
        return None


def _latest_multi(kind: str):
    async def handler(request: web.Request) -> web.Response:
        symbols = parse_symbols(request.query.get("symbols"))
        feed, currency = parse_latest(request)
        market, now = _market(request, feed), _latest_now(request, feed)
        found = {}
        for symbol in symbols:
            if market.has(symbol):
                record = _latest_record(market, kind, symbol, now)
                if record is not None:
                    found[symbol] = record
        body: dict[str, Any] = {kind: found}
        if currency:
            body["currency"] = currency
        return json_response(body)
    handler.__name__ = f"latest_{kind}"
    return handler


def _latest_single(kind: str):
    singular = kind[:-1]

    async def handler(request: web.Request) -> web.Response:
        symbol = check_symbol(request.match_info["symbol"])
        feed, currency = parse_latest(request)
        market = _market(request, feed)
        record = None
        if market.has(symbol):
            record = _latest_record(market, kind, symbol, _latest_now(request, feed))
        if record is None:
            raise ApiError(404, None, f"no {singular} found for {symbol}")
        body: dict[str, Any] = {"symbol": symbol, singular: record}
        if currency:
            body["currency"] = currency
        return json_response(body)
    handler.__name__ = f"latest_{singular}"
    return handler


def snapshot_dict(market: Market, symbol: str, now: int) -> dict:
    snap = market.snapshot(symbol, now)
    tape = market.tape(symbol)
    trade = snap["latestTrade"]
    return {"latestTrade": trade_dict(trade, tape, bool(trade) and market.sessions.is_extended(trade.t)),
            "latestQuote": quote_dict(snap["latestQuote"], tape),
            "minuteBar": bar_dict(snap["minuteBar"]), "dailyBar": bar_dict(snap["dailyBar"]),
            "prevDailyBar": bar_dict(snap["prevDailyBar"])}


async def snapshots(request: web.Request) -> web.Response:
    symbols = parse_symbols(request.query.get("symbols"))
    feed, currency = parse_latest(request)
    market, now = _market(request, feed), _latest_now(request, feed)
    body: dict[str, Any] = {s: snapshot_dict(market, s, now) if market.has(s) else None for s in symbols}
    if currency:
        body["currency"] = currency
    return json_response(body)


async def snapshot(request: web.Request) -> web.Response:
    symbol = check_symbol(request.match_info["symbol"])
    feed, currency = parse_latest(request)
    market = _market(request, feed)
    if not market.has(symbol):
        raise ApiError(404, None, f"no snapshot found for {symbol}")
    body: dict[str, Any] = {"symbol": symbol, **snapshot_dict(market, symbol, _latest_now(request, feed))}
    if currency:
        body["currency"] = currency
    return json_response(body)


# ---------------------------------------------------------------- setup

def setup(app: web.Application) -> None:
    """Add the market-data REST routes, the data WebSocket and ``POST /sandbox/halt``."""
    app[CHUNKS] = ChunkCache()
    app[IEX_MARKET] = IexMarket(app[_app.MARKET])
    app[READ_AHEAD] = ReadAhead()

    async def stop_read_ahead(app: web.Application) -> None:
        app[READ_AHEAD].cancel()
    app.on_shutdown.append(stop_read_ahead)
    r = app.router
    for kind in ("bars", "trades", "quotes"):
        r.add_get(f"/v2/stocks/{kind}/latest", _latest_multi(kind))
        r.add_get(f"/v2/stocks/{kind}", _historical_multi(kind))
    r.add_get("/v2/stocks/snapshots", snapshots)
    for kind in ("bars", "trades", "quotes"):
        r.add_get(f"/v2/stocks/{{symbol}}/{kind}/latest", _latest_single(kind))
        r.add_get(f"/v2/stocks/{{symbol}}/{kind}", _historical_single(kind))
    r.add_get("/v2/stocks/{symbol}/snapshot", snapshot)
    from . import data_stream
    data_stream.setup(app)
