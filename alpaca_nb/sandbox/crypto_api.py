"""Crypto market-data REST v1beta3 (protocol section 4.5), served from :mod:`.crypto_market`.

Endpoints under ``/v1beta3/crypto/{loc}`` (``loc`` = ``us``; ``us-1``, ``us-2`` and ``bs-1`` serve
the same data, another location answers 404): ``/bars``, ``/trades``, ``/quotes`` (multi-symbol,
``symbols=BTC/USD,ETH/USD``), ``/latest/bars``, ``/latest/trades``, ``/latest/quotes``,
``/latest/orderbooks`` and ``/snapshots`` (wrapped in ``"snapshots"``, as alpaca-py reads it).
Authentication is optional, as on Alpaca (the app's middleware lets these paths through without
keys; wrong keys are still refused).

Pagination, ``limit``, ``sort``, ``page_token`` and the 400 bodies are exactly the stock
endpoints' (:mod:`.data_api`, whose page builder, series and serialised chunks are reused); records are
sorted by symbol, then time. Records: bar ``{t,o,h,l,c,v,n,vw}`` (fractional ``v``), trade
``{t,p,s,i,tks}`` (taker side ``B``/``S``), quote ``{t,bp,bs,ap,as}``, order book
``{t,b:[{p,s}],a:[{p,s}]}`` (bids best first, asks best first).

Sandbox choices ([unconfirmed] on Alpaca): a date-only ``start``/``end`` means the UTC day;
a missing ``start`` means 00:00 UTC of the current day; daily bars are stamped 00:00 UTC;
unknown pairs are absent from the answers (``null`` in ``snapshots``).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import app as _app
from ._bars import Bars, BarTick, Timeframe
from ._data_query import bad, parse_paging, parse_symbols
from .clock import DAY_NS, MINUTE_NS, rfc3339_array
from .crypto_market import (
    CryptoMarket,
    CryptoQuote,
    CryptoTrade,
    utc_day,
    utc_midnight_ns,
)
from .data_api import TICK_BLOCK_MINUTES, ChunkCache, Series, build_page, multi_body
from .wire import iso_ns, json_response, parse_time

CRYPTO_MARKET = web.AppKey("crypto_market", CryptoMarket)
CRYPTO_CHUNKS = web.AppKey("crypto_chunks", ChunkCache)
LOCATIONS = ("us", "us-1", "us-2", "bs-1")
PREFIX = "/v1beta3/crypto/"


# ---------------------------------------------------------------- wire records

def trade_dict(trade: CryptoTrade) -> dict:
    return {"t": iso_ns(trade.t), "p": trade.price, "s": trade.size, "i": trade.id, "tks": trade.taker}


def quote_dict(quote: CryptoQuote) -> dict:
    return {"t": iso_ns(quote.t), "bp": quote.bid, "bs": quote.bid_size, "ap": quote.ask,
            "as": quote.ask_size}


def bar_dict(bar: BarTick | None) -> dict | None:
    if bar is None:
        return None
    return {"t": iso_ns(bar.t), "o": bar.open, "h": bar.high, "l": bar.low, "c": bar.close,
            "v": bar.volume, "n": bar.trade_count, "vw": bar.vwap}


def book_dict(book: dict[str, Any]) -> dict:
    return {"t": iso_ns(book["t"]), "b": [{"p": p, "s": s} for p, s in book["bids"]],
            "a": [{"p": p, "s": s} for p, s in book["asks"]]}


# ---------------------------------------------------------------- series

class CryptoSeries(Series):
    """:class:`.data_api.Series` over the 24/7 crypto market: every 5-minute block can hold
    trades and quotes, daily bars are stamped at 00:00 UTC, and an intraday UTC-day period is
    that day's minutes; records are crypto's (volumes in base units, trades with the taker
    side, quotes without exchanges)."""

    market: CryptoMarket

    def _blocks(self, lo: int, hi: int) -> list[int]:
        block = TICK_BLOCK_MINUTES * MINUTE_NS
        return list(range(lo // block, hi // block + 1))

    _date = staticmethod(utc_day)

    def _year_end(self, year: int) -> int:
        return utc_midnight_ns(dt.date(year, 12, 31)) + 8 * DAY_NS   # past a week bar's end

    @staticmethod
    def _minute_days(key: dt.date) -> tuple[dt.date, ...]:
        return (key,)

    def _wire(self, symbol: str, bars: Bars) -> Bars:
        return self.market.wire_bars(symbol, bars)

    def _tick_records(self, symbol: str, ticks: Any, n: int) -> list[dict]:
        stamps = rfc3339_array((ticks.trade_t if self.kind == "trades" else ticks.quote_t)[:n])
        if self.kind == "trades":
            return [{"t": s, "p": p, "s": z, "i": i, "tks": k} for s, p, z, i, k in zip(
                stamps, ticks.price[:n].tolist(), ticks.size[:n].tolist(), ticks.trade_id[:n].tolist(),
                ticks.taker[:n].tolist())]
        return [{"t": s, "bp": b, "bs": bs, "ap": a, "as": az} for s, b, bs, a, az in zip(
            stamps, ticks.bid[:n].tolist(), ticks.bid_size[:n].tolist(), ticks.ask[:n].tolist(),
            ticks.ask_size[:n].tolist())]


# ---------------------------------------------------------------- request parsing

@dataclass
class CryptoQuery:
    symbols: list[str]
    start: int
    end: int
    limit: int
    desc: bool
    token: tuple[str, int, int] | None
    timeframe: Timeframe | None


def _time(q, name: str) -> int | None:
    """RFC-3339 or YYYY-MM-DD; a date is the UTC day (``end``: its last nanosecond)."""
    value = q.get(name)
    if value is None or value == "":
        return None
    ns = parse_time(value, name, error=lambda _msg: bad(
        f"Invalid format for parameter {name}: error parsing '{value}' as RFC3339 or 2006-01-02 time"))
    text = value.strip()
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        day = dt.date.fromisoformat(text)
        ns = utc_midnight_ns(day) + (DAY_NS - 1 if name == "end" else 0)
    return ns


def parse_query(request: web.Request, kind: str, symbols: list[str]) -> CryptoQuery:
    q = request.query
    timeframe = None
    if kind == "bars":
        raw_tf = q.get("timeframe")
        if not raw_tf:
            raise bad("Invalid format for parameter timeframe: query parameter 'timeframe' is required")
        try:
            timeframe = Timeframe.parse(raw_tf)
        except ValueError:
            raise bad("invalid timeframe") from None
    now = request.app[_app.CLOCK].now_ns()
    start, end = _time(q, "start"), _time(q, "end")
    if start is not None and end is not None and end < start:
        raise bad("end should not be before start")
    end = now if end is None or end > now else end
    if start is None:
        start = utc_midnight_ns(utc_day(min(now, end)))
    limit, desc, token = parse_paging(q, kind, timeframe, symbols)
    return CryptoQuery(symbols, start, end, limit, desc, token, timeframe)


def _location(request: web.Request) -> None:
    if request.match_info["loc"] not in LOCATIONS:
        raise web.HTTPNotFound()


def _symbols(request: web.Request) -> list[str]:
    _location(request)
    return parse_symbols(request.query.get("symbols"))


# ---------------------------------------------------------------- handlers

def _historical(kind: str):
    async def handler(request: web.Request) -> web.Response:
        started = time.perf_counter()
        symbols = _symbols(request)
        query = parse_query(request, kind, symbols)
        market = request.app[CRYPTO_MARKET]
        known = [s for s in symbols if market.has(s)]
        if query.token is not None and query.token[0] not in known:
            raise bad("invalid page token")
        series = CryptoSeries(market, request.app[CRYPTO_CHUNKS], kind, query.timeframe)
        page = build_page(series, known, start=query.start, end=query.end, limit=query.limit,
                          desc=query.desc, token=query.token, now=request.app[_app.CLOCK].now_ns())
        elapsed_ms = (time.perf_counter() - started) * 1000
        return json_response(multi_body(kind, page), headers={"Server-Timing": f"page;dur={elapsed_ms:.3f}"})
    handler.__name__ = f"crypto_{kind}"
    return handler


def _latest(kind: str):
    async def handler(request: web.Request) -> web.Response:
        symbols = _symbols(request)
        market, now = request.app[CRYPTO_MARKET], request.app[_app.CLOCK].now_ns()
        found: dict[str, Any] = {}
        for symbol in symbols:
            if not market.has(symbol):
                continue
            if kind == "bars":
                found[symbol] = bar_dict(market.latest_bar(symbol, now))
            elif kind == "trades":
                found[symbol] = trade_dict(market.trade_at(symbol, now))
            elif kind == "quotes":
                found[symbol] = quote_dict(market.quote_at(symbol, now))
            else:
                found[symbol] = book_dict(market.book(symbol, now))
        return json_response({kind: found})
    handler.__name__ = f"crypto_latest_{kind}"
    return handler


def snapshot_dict(market: CryptoMarket, symbol: str, now: int) -> dict:
    snap = market.snapshot(symbol, now)
    return {"latestTrade": trade_dict(snap["latestTrade"]),
            "latestQuote": quote_dict(snap["latestQuote"]),
            "minuteBar": bar_dict(snap["minuteBar"]), "dailyBar": bar_dict(snap["dailyBar"]),
            "prevDailyBar": bar_dict(snap["prevDailyBar"])}


async def snapshots(request: web.Request) -> web.Response:
    symbols = _symbols(request)
    market, now = request.app[CRYPTO_MARKET], request.app[_app.CLOCK].now_ns()
    return json_response({"snapshots": {s: snapshot_dict(market, s, now) if market.has(s) else None
                                        for s in symbols}})


def setup(app: web.Application, market: CryptoMarket) -> None:
    """Add the crypto market-data REST routes."""
    app[CRYPTO_MARKET] = market
    app[CRYPTO_CHUNKS] = ChunkCache(128 * 1024 ** 2)
    r = app.router
    base = PREFIX + "{loc}"
    for kind in ("bars", "trades", "quotes"):
        r.add_get(f"{base}/{kind}", _historical(kind))
        r.add_get(f"{base}/latest/{kind}", _latest(kind))
    r.add_get(f"{base}/latest/orderbooks", _latest("orderbooks"))
    r.add_get(f"{base}/snapshots", snapshots)
