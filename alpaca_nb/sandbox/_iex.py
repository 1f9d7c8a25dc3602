"""The IEX feed of the synthetic market: what ``feed=iex`` and the ``/v2/iex`` stream serve.

Alpaca's IEX feed carries only the trades executed on IEX (exchange code ``V``) and IEX's own
top of book, a few percent of the consolidated (SIP) volume. :class:`IexMarket` derives it from
the SIP market, deterministically from the seed:

* each IEX minute bar from the SIP minute: 1-5 % of its volume and prints (at least four, at
  most all of them), prices inside the SIP minute's range, so IEX's bars are not the SIP's;
* IEX's daily bars aggregate its regular-hours minutes, weeks and months those days (as on the
  SIP); its trades are generated from its minute bars by the market's tick layer (on ``V``), so
  every layer agrees with the one above;
* its quotes are IEX's top of book (``V`` on both sides): the quote before each IEX print, and
  the book's moves between prints. IEX quotes alongside the NBBO, so its book moves far more
  often than IEX trades: a quarter to three quarters as many times a minute as the SIP minute
  has prints, priced along IEX's own prints (a liquid stock's IEX quote ticks several times a
  second while its IEX prints come seconds apart).

It is a :class:`~._views.MarketView` of a :class:`~.market.Market`: whatever it does not define
(sessions, assets, corporate actions ...) is the market's, and the market's bar and tick methods
that build on ``minute_bars``/``day_bars``/``daily_bar``/``ticks`` run on it unchanged.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from ._bars import EMPTY_BARS, Bars, BarTick, Ticks
from ._lru import Lru
from ._minutes import ceil_price, floor_price, quotes_around, round_price
from ._noise import Draws, hash_at, key_of, unit
from ._views import CacheView, MarketView
from .clock import MINUTE_NS, Session, ny_date, ny_midnight_ns
from .market import Market

__all__ = ["FeedCache", "IexMarket"]

MIN_SHARE, MAX_SHARE = 0.01, 0.05      # IEX's share of a SIP minute's volume and prints
MIN_MOVES, MAX_MOVES = 0.25, 0.75      # IEX's book moves a minute, per print of the SIP minute


def iex_minutes(key: int, sip: Bars) -> Bars:
    """IEX's minute bars from the SIP's of one session (same minutes, ``key`` the session's)."""
    m = len(sip)
    if not m:
        return EMPTY_BARS
    u = unit(hash_at(key, np.arange(5 * m, dtype=np.int64))).reshape(5, m)
    share = MIN_SHARE + (MAX_SHARE - MIN_SHARE) * u[0]
    n = np.minimum(sip.n, np.maximum(4, np.rint(sip.n * share))).astype(np.int64)
    v = np.minimum(sip.v, np.maximum(2 * n, np.rint(sip.v * share))).astype(np.int64)
    low, high = sip.l, sip.h
    width = high - low
    o = np.clip(round_price(low + width * u[1]), low, high)
    c = np.clip(round_price(low + width * u[2]), low, high)
    top, bottom = np.maximum(o, c), np.minimum(o, c)
    h = np.maximum(np.clip(floor_price(top + (high - top) * u[3]), low, high), top)
    lo = np.minimum(np.clip(ceil_price(bottom - (bottom - low) * u[4]), low, high), bottom)
    vw = np.clip(np.round((h + lo + c) / 3.0, 4), lo, h)
    return Bars(sip.t, o, h, lo, c, v, n, vw)


def with_book_moves(ticks: Ticks, t0: int, spread: float, rnd: Draws, moves: int) -> Ticks:
    """IEX's ticks of the minute starting at ``t0``: its prints and the quotes before them on
    ``V``, and ``moves`` more quotes at random instants of the minute, around the line through
    its prints (``spread`` the instrument's typical relative spread). A move never lands on a
    print's instant, and a print's own quote sorts after any move at its instant, so the quote
    in force at every print still has bid <= price <= ask."""
    n = len(ticks)
    t = rnd.integers(0, MINUTE_NS, moves) + t0
    t = np.where(np.isin(t, ticks.trade_t), t - 1, t)
    mid = np.interp(t, ticks.trade_t, ticks.price)
    mid = mid * (1.0 + (rnd.uniform(moves) - 0.5) * spread)
    moved = quotes_around(mid, spread, rnd)
    order = np.lexsort((np.r_[np.ones(n, np.int8), np.zeros(moves, np.int8)], np.r_[ticks.quote_t, t]))
    bid, bid_size, ask, ask_size = (np.r_[before, after][order] for before, after in zip(
        (ticks.bid, ticks.bid_size, ticks.ask, ticks.ask_size), moved))
    venue = np.full(n + moves, "V")
    return Ticks(ticks.trade_t, ticks.price, ticks.size, venue[:n], ticks.trade_id, ticks.flags,
                 np.r_[ticks.quote_t, t][order], bid, bid_size, ask, ask_size, venue, venue, ticks.late)


def _regular(sess: Session) -> slice:
    """The regular-hours minutes of a session's minute bars."""
    first = int((sess.open - sess.premarket_open) // MINUTE_NS)
    return slice(first, first + int((sess.close - sess.open) // MINUTE_NS))


class IexMarket(MarketView):
    """The market as Alpaca's IEX feed shows it (see the module docstring)."""

    FEED = "iex"
    TICK_SALT = "iex-ticks"          # the tick layer's keys differ from the SIP's
    LATE_SALT = 0x1E7E
    MINUTE_CACHE = Market.MINUTE_CACHE
    TICK_CACHE = Market.TICK_CACHE
    YEAR_CACHE = 256

    def __init__(self, market: Market):
        super().__init__(market)
        self._minutes: Lru[tuple[str, dt.date], Bars] = Lru(self.MINUTE_CACHE)
        self._ticks: Lru[tuple[str, int], Any] = Lru(self.TICK_CACHE)
        self._years: Lru[tuple[str, int], tuple[list[Session], Bars]] = Lru(self.YEAR_CACHE)

    def minute_bars(self, symbol: str, day: dt.date) -> Bars:
        """IEX's minute bars of the session on NY date ``day`` (empty without one). Cached."""
        key = (symbol, day)
        hit = self._minutes.get(key)
        if hit is not None:
            return hit
        bars = self._derive(symbol, day, self._market.minute_bars(symbol, day))
        self._minutes[key] = bars
        return bars

    def _derive(self, symbol: str, day: dt.date, sip: Bars) -> Bars:
        return iex_minutes(key_of(self._market._inst(symbol).key, "iex", day.toordinal()), sip)

    def daily_bar(self, symbol: str, date: dt.date) -> BarTick | None:
        """IEX's daily bar: the aggregate of its regular-hours minutes (None without a session)."""
        sess = self.sessions.session(date)
        if sess is None:
            return None
        regular = self.minute_bars(symbol, date).take(_regular(sess))
        return regular.aggregate(np.array([0]), np.array([ny_midnight_ns(date)])).row(0)

    def day_bars(self, symbol: str, first: dt.date, last: dt.date) -> tuple[list[Session], Bars]:
        """Sessions with ``first <= date <= last`` and IEX's daily bars (ignores now)."""
        sessions: list[Session] = []
        parts: list[Bars] = []
        for year in range(first.year, last.year + 1):
            ys, yb = self._year(symbol, year)
            keep = [i for i, s in enumerate(ys) if first <= s.date <= last]
            if keep:
                sessions.extend(ys[keep[0]:keep[-1] + 1])
                parts.append(yb.take(slice(keep[0], keep[-1] + 1)))
        return sessions, Bars.concat(parts)

    def _year(self, symbol: str, year: int) -> tuple[list[Session], Bars]:
        key = (symbol, year)
        hit = self._years.get(key)
        if hit is not None:
            return hit
        sessions = self.sessions.sessions_between(dt.date(year, 1, 1), dt.date(year, 12, 31))
        days = [s.date for s in sessions]
        self._market.prefetch_minutes(symbol, days)
        regular = [self._derive(symbol, s.date, self._market.minute_bars(symbol, s.date)).take(_regular(s))
                   for s in sessions]
        starts = np.cumsum([0] + [len(r) for r in regular[:-1]]) if regular else np.empty(0, np.int64)
        bars = Bars.concat(regular).aggregate(np.asarray(starts, dtype=np.int64),
                                              np.array([ny_midnight_ns(d) for d in days], dtype=np.int64))
        value = (sessions, bars)
        self._years[key] = value
        return value

    def _make_ticks(self, inst, bars: Bars, i: int, *, extended: bool) -> Ticks:
        """IEX's prints from its minute bar and its book's moves (see :func:`with_book_moves`)."""
        t0 = int(bars.t[i])
        sip_prints = int(self._market.minute_bars(inst.symbol, ny_date(t0)).n[i])
        rnd = Draws(key_of(inst.key, "iex-book", t0 // MINUTE_NS))
        moves = int(round(sip_prints * (MIN_MOVES + (MAX_MOVES - MIN_MOVES) * rnd.uniform(1)[0])))
        return with_book_moves(Market._make_ticks(self, inst, bars, i, extended=extended), t0,
                               inst.spread, rnd, moves)

    # the market's own tick methods, on IEX's ticks (its bar methods are MarketView's)
    ticks = Market.ticks
    _late_minute = Market._late_minute
    may_have_late = Market.may_have_late
    _tick_before = Market._tick_before
    quote_at = Market.quote_at
    trade_at = Market.trade_at
    latest_bar = Market.latest_bar
    snapshot = Market.snapshot


class FeedCache(CacheView):
    """The chunk cache with the feed in the keys (``1Min@iex``), so feeds never share chunks."""

    def __init__(self, cache, feed: str):
        super().__init__(cache)
        self._feed = feed

    def _key(self, key: tuple) -> tuple:
        kind, code, symbol, period = key
        return (kind, f"{code}@{self._feed}", symbol, period)
