"""Request parameters of the stock market-data REST endpoints (:mod:`.data_api`): symbols,
``start``/``end``, ``feed``/``currency``/``asof``, ``limit``/``sort``/``page_token`` and the page
tokens themselves (base64 of ``SYMBOL|KIND|<last timestamp>[|<nth>]``), with the data API's
``400 {"message": ...}`` errors and the plan's 403 for recent SIP data (:mod:`.plans`).
The crypto endpoints (:mod:`.crypto_api`) share the symbol and paging parsers.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass

from aiohttp import web

from . import adjusted, plans
from . import app as _app
from ._bars import Timeframe
from .clock import NS, UTC, ny_date, ny_midnight_ns
from .wire import ApiError, parse_time

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
HISTORICAL_FEEDS = ("sip", "iex", "otc", "boats")
LATEST_FEEDS = HISTORICAL_FEEDS + ("delayed_sip", "overnight")
SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9./\-]{0,20}$")
_ASOF_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def bad(message: str) -> ApiError:
    """A market-data 400: ``{"message": ...}`` without a numeric code, as the data API answers."""
    return ApiError(400, None, message)


@dataclass
class Query:
    symbols: list[str]
    start: int
    end: int
    limit: int
    desc: bool
    token: tuple[str, int, int] | None
    feed: str
    currency: str | None
    timeframe: Timeframe | None = None
    horizon: int | None = None          # the data is as of this instant (None: the sandbox's now)
    adjustment: frozenset[str] = frozenset()    # corporate-action types to adjust bars for


def _now(request: web.Request) -> int:
    return request.app[_app.CLOCK].now_ns()


def parse_symbols(raw: str | None, *, required: bool = True) -> list[str]:
    """The ``symbols`` list: sorted, without duplicates, each well formed."""
    items = sorted({s.strip() for s in (raw or "").split(",") if s.strip()})
    if not items and required:
        raise bad("Invalid format for parameter symbols: query parameter 'symbols' is required")
    for symbol in items:
        check_symbol(symbol)
    return items


def check_symbol(symbol: str) -> str:
    if not SYMBOL_RE.match(symbol):
        raise bad(f"invalid symbol: {symbol}")
    return symbol


def parse_time_param(q, name: str) -> int | None:
    """RFC-3339 (any offset, fractional seconds) or YYYY-MM-DD. A date means the whole New York
    day: ``start`` is its midnight, ``end`` its last nanosecond (Alpaca's date-only ranges cover
    the day's extended hours too)."""
    value = q.get(name)
    if value is None or value == "":
        return None
    ns = parse_time(value, name, error=lambda _msg: bad(
        f"Invalid format for parameter {name}: error parsing '{value}' as RFC3339 or 2006-01-02 time"))
    if name == "end" and _ASOF_RE.match(value.strip()):
        day = dt.date.fromisoformat(value.strip())
        ns = ny_midnight_ns(day + dt.timedelta(days=1)) - 1
    return ns


def parse_feed(q, allowed: tuple[str, ...], default: str = "sip") -> str:
    feed = q.get("feed") or default
    if feed not in allowed:
        raise bad(f"invalid feed: {feed!r} (expected one of {', '.join(allowed)})")
    return feed


def parse_common(q, *, allowed_feeds: tuple[str, ...] = LATEST_FEEDS,
                 default_feed: str = "sip") -> tuple[str, str | None]:
    """``feed`` (``default_feed`` when absent), ``currency`` and ``asof`` shared by every
    endpoint."""
    feed = parse_feed(q, allowed_feeds, default_feed)
    currency = q.get("currency")
    if currency is not None and currency != "USD":
        raise bad(f"invalid currency: {currency!r} (the sandbox quotes prices in USD only)")
    asof = q.get("asof")
    if asof not in (None, "", "-") and not _ASOF_RE.match(asof):
        raise bad(f"Invalid format for parameter asof: error parsing '{asof}' as 2006-01-02 date")
    if asof and asof != "-":
        try:
            dt.date.fromisoformat(asof)
        except ValueError:
            raise bad(f"Invalid format for parameter asof: error parsing '{asof}' as 2006-01-02 date") from None
    return feed, currency


def _plan(request: web.Request) -> str:
    """The market-data plan of the request's account."""
    return request.app[_app.ENGINE].data_plan(request[_app.ACCOUNT])


def parse_query(request: web.Request, kind: str, symbols: list[str]) -> Query:
    """The historical request's parameters; 400 for a bad one, 403 when the account's plan
    may not read the range (recent SIP data on ``basic``, see :mod:`.plans`)."""
    q = request.query
    timeframe = None
    adjustment: frozenset[str] = frozenset()
    if kind == "bars":
        raw_tf = q.get("timeframe")
        if not raw_tf:
            raise bad("Invalid format for parameter timeframe: query parameter 'timeframe' is required")
        try:
            timeframe = Timeframe.parse(raw_tf)
        except ValueError:
            raise bad("invalid timeframe") from None
        try:
            adjustment = adjusted.parse_adjustment(q.getall("adjustment", []))
        except ValueError as exc:
            raise bad(str(exc)) from None
    feed, currency = parse_common(q, allowed_feeds=HISTORICAL_FEEDS)
    now = _now(request)
    start, end = parse_time_param(q, "start"), parse_time_param(q, "end")
    if start is not None and end is not None and end < start:
        raise bad("end should not be before start")
    horizon = now       # the latest instant the account's plan may read (bars are built as of it)
    if feed == "sip" and not plans.realtime_sip(_plan(request)):
        horizon = now - plans.RECENT_NS
    too_recent = horizon < now and ((end is not None and end > horizon)
                                    or (start is not None and start > horizon))
    end_eff = horizon if end is None or end > horizon else end
    if start is None:
        start = ny_midnight_ns(ny_date(min(now, end_eff)))
    limit, desc, token = parse_paging(q, kind, timeframe, symbols)
    if too_recent:                      # after the 400s, as a request is checked before it is served
        raise plans.recent_sip_refused()
    return Query(symbols, start, end_eff, limit, desc, token, feed, currency, timeframe,
                 horizon, adjustment)


def parse_paging(q, kind: str, timeframe: Timeframe | None,
                 symbols: list[str]) -> tuple[int, bool, tuple[str, int, int] | None]:
    """``limit``, ``sort`` (True: desc) and ``page_token`` of a historical request (400s)."""
    raw_limit = q.get("limit")
    if raw_limit in (None, ""):
        limit = DEFAULT_LIMIT
    else:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise bad(f"Invalid format for parameter limit: error parsing '{raw_limit}' as integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise bad(f"invalid limit: must be between 1 and {MAX_LIMIT}")
    sort = q.get("sort") or "asc"
    if sort not in ("asc", "desc"):
        raise bad(f"invalid sort: {sort!r} (expected asc or desc)")
    series_code = str(timeframe) if kind == "bars" else kind[0].upper()
    raw_token = q.get("page_token")
    token = decode_token(raw_token, series_code, symbols) if raw_token else None
    return limit, sort == "desc", token


def encode_token(symbol: str, code: str, t: int, nth: int = 1) -> str:
    """``SYMBOL|CODE|<t with 9 fraction digits>``, then ``|<nth>`` when the last record returned
    is the ``nth`` (> 1) of the records sharing its timestamp, in the page's order."""
    secs, frac = divmod(t, NS)
    stamp = dt.datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"
    return base64.b64encode(f"{symbol}|{code}|{stamp}{f'|{nth}' if nth > 1 else ''}".encode()).decode()


def decode_token(token: str, code: str, symbols: list[str]) -> tuple[str, int, int]:
    """(symbol, timestamp ns, how many records of that timestamp were returned) of the last
    record a previous page returned; 400 otherwise."""
    try:
        text = base64.b64decode(token, validate=True).decode()
        symbol, kind, stamp, *rest = text.split("|")
        m = re.match(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?Z$", stamp)
        nth = int(rest[0]) if len(rest) == 1 and rest[0].isdigit() else (1 if not rest else 0)
        if kind != code or symbol not in symbols or m is None or nth < 1:
            raise ValueError
        base = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)
        return symbol, int(base.timestamp()) * NS + int((m.group(2) or "0").ljust(9, "0")), nth
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad("invalid page token") from None
