"""Deterministic synthetic market: bars, trades and quotes for any symbol of the asset list, any
date, any timeframe, computed on demand from a seed.

The market trades in NYSE sessions in every market mode (``exchange_calendars``; holidays and
early closes included): pre-market 04:00-09:30 ET, regular hours, after-hours until 20:00 ET
(17:00 on early-close days), the hours Alpaca's SIP feed covers. There are no bars, trades or
quotes on weekends, holidays or overnight. (In ``always-open`` mode the live present trades
at any hour, on the out-of-hours tape of :mod:`._live` that ``quote_at``/``trade_at`` and
``latest_bar`` consult; the history never shows it.)

Three layers, each derived from the one above so that they agree exactly:

Daily layer
    Every session gets open, high, low, close, volume and trade count of its regular hours
    (Alpaca's daily bar covers the regular session) in O(1) from a multi-scale value-noise path
    of the log price (hash-based lattice noise at 1, 2, 4, ... 512 days, amplitudes scaled like
    Brownian motion, with a slowly varying volatility regime). No day depends on iterating from
    an origin, and the open is the previous close plus a small gap (the noise path is
    continuous), so weekends and holidays become realistic gaps.
Minute layer
    One session's minutes are generated in three parts: the regular hours from the daily bar
    (a bridge path from the open through the day's high and low to the close, volumes and trade
    counts from a U-shaped intraday profile distributed with exact integer sums, so the 1Day
    bar *is* the aggregation of its regular-hours minutes), and the pre-market and after-hours
    from bars of their own (drifting from an overnight move to the open, and away from the
    close) with a few percent of the regular volume and fewer prints per minute.
Tick layer
    Each minute's trades and quotes are generated from its minute bar: ``n`` trades at
    nanosecond times inside the minute, first at the open, last at the close, touching high and
    low, sizes summing to the volume; one quote just before every trade with bid <= price <= ask.
    A large print is sometimes followed by a few prints at the very same nanosecond (a burst),
    so trades, and the quotes before them, can share a timestamp as on the real feed.

Everything is a pure function of (seed, market mode, symbol, time): no state, no wall clock (the
stable keys, counter-based hashing, random draws and the noise path are in :mod:`._noise`).
What is "visible" is decided by the caller's ``now`` (the sandbox clock): a minute bar exists once
its minute has closed, today's daily bar is the aggregate of today's complete regular-hours
minutes, trades and quotes exist up to ``now``. This is the SIP (every feed but
``iex``); the IEX feed is a few percent of it (:mod:`._iex`).
The raw prices carry the corporate actions of :mod:`.corporate` (a 2-for-1 split halves the
price from its ex-date on); adjusted bars are served by :mod:`.adjusted`.
The value types (bars, ticks, timeframes) are in :mod:`._bars`, the asset list and its Asset
objects in :mod:`._assets`.

Prices are rounded to cents at or above $1 and to 4 decimals below. All instants are integer
nanoseconds since the epoch (UTC); dates are New York dates.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._assets import EXCHANGE_TAPE, asset_object, load_assets
from ._bars import (
    BAR_FIELDS,
    EMPTY_BARS,
    TRADE_ID_STRIDE,
    UNIT_WEEK,
    Bars,
    BarTick,
    QuoteTick,
    Ticks,
    Timeframe,
    TradeTick,
)
from ._live import LiveTape
from ._lru import Lru
from ._minutes import (
    POST,
    PRE,
    REGULAR,
    SEGMENTS,
    DaySpec,
    allocate,
    minute_columns,
    quotes_around,
    reflect,
    round_price,
)
from ._noise import Draws, hash_at, key_of, noise_path, normal_at, regime, unit
from .clock import (
    DAY_NS,
    MINUTE_NS,
    Clock,
    Session,
    Sessions,
    ny_date,
    ny_midnight_ns,
)
from .corporate import CorporateActions

log = logging.getLogger(__name__)

__all__ = ["Market"]


# ---------------------------------------------------------------- instruments

_TRADE_VENUES = np.array(list("DQNPKZVUXYJBHAM"))
_TRADE_VENUE_W = np.cumsum([30, 14, 9, 8, 7, 6, 4, 4, 3, 3, 3, 3, 2, 2, 2]).astype(np.float64)
_QUOTE_VENUES = np.array(list("QNPKZVUXYJBHA"))
_QUOTE_VENUE_W = np.cumsum([14, 10, 10, 9, 9, 6, 6, 4, 4, 3, 3, 3, 2]).astype(np.float64)
_ANCHOR_ORDINAL = dt.date(2025, 6, 2).toordinal()   # prices are near the list's base price here
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class _Instrument:
    symbol: str
    key: int
    price: float
    volume: int
    sigma: float          # daily volatility of log price
    trade_size: float     # mean shares per trade
    spread: float         # typical relative spread
    tape: str
    asset: dict


class _SessionArrays:
    """Sessions as arrays (those of a year are shared by every symbol)."""

    def __init__(self, sessions: list[Session]):
        self.sessions = sessions
        self.ords = np.array([x.date.toordinal() for x in sessions], dtype=np.int64)
        self.regular = np.array([(x.close - x.open) // MINUTE_NS for x in sessions], dtype=np.int64)
        self.t = np.array([ny_midnight_ns(x.date) for x in sessions], dtype=np.int64)




def _bursts(rnd: Draws, size: np.ndarray, mean: float) -> np.ndarray:
    """For each trade, the index of the trade whose time it takes: its own, or, inside a burst,
    the burst's first. A print of more than 2.5 times the minute's mean size starts a burst with
    probability 0.4, and the next 1-3 prints share its timestamp to the nanosecond (one order
    sweeping several venues or price levels, as on the real tape; their quotes then share a
    timestamp too). Draws two uniforms per trade after every other draw of the minute."""
    n = len(size)
    u = rnd.uniform(2 * n)
    leaders = np.flatnonzero((size > 2.5 * mean) & (u[:n] < 0.4))
    source = np.arange(n, dtype=np.int64)
    if not len(leaders):
        return source
    depth = np.zeros(n + 1, dtype=np.int64)
    np.add.at(depth, leaders + 1, 1)
    np.add.at(depth, np.minimum(leaders + 2 + (u[n:][leaders] * 3).astype(np.int64), n), -1)
    tied = np.cumsum(depth[:n]) > 0
    starts = np.flatnonzero(~tied)
    return starts[np.cumsum(~tied) - 1]


# ---------------------------------------------------------------- the market

class Market:
    """The sandbox's synthetic market (see the module docstring).

    Args:
        seed: market seed; the same seed and market mode give the same data in every process.
        sessions: the sandbox's trading sessions. The market's history follows their NYSE
            calendar (:attr:`Sessions.calendar`) in every mode; the mode decides the corporate
            actions' schedule (:mod:`.corporate`) and what the auction prices of a day without
            a session are (see :meth:`opening_price`).
        clock: the sandbox clock, kept for callers; every method takes its instant explicitly,
            so nothing here depends on when it is called.

    ``halted`` is the set of symbols halted through ``POST /sandbox/halt`` (the prices are not
    affected; the engine does not match them, the data stream announces it).
    """

    MINUTE_CACHE = 768
    TICK_CACHE = 8192
    YEAR_CACHE = 4096
    FEED = "sip"                  # the feed this market is (the IEX feed is a view: :mod:`._iex`)
    TICK_SALT = "ticks"           # the tick layer's key salt and late-report key for this feed
    LATE_SALT = 0x1A7E

    def __init__(self, *, seed: int, sessions: Sessions, clock: Clock):
        self.seed = int(seed)
        self.mode = sessions.mode
        self.sessions = sessions.calendar
        self.clock = clock
        self.halted: set[str] = set()
        self.live = LiveTape() if self.mode == "always-open" else None   # out-of-hours present
        self._instruments: dict[str, _Instrument] = {}
        self._by_id: dict[str, dict] = {}
        rows = load_assets()
        self.corporate = CorporateActions(seed=self.seed, sessions=sessions, assets=rows,
                                          closes=self._unadjusted_closes)
        for row in rows:
            inst = self._instrument(row)
            self._instruments[inst.symbol] = inst
            self._by_id[inst.asset["id"]] = inst.asset
        self.symbols: list[str] = sorted(self._instruments)
        self._minutes: Lru[tuple[str, dt.date], Bars] = Lru(self.MINUTE_CACHE)
        self._ticks: Lru[tuple[str, int], Ticks] = Lru(self.TICK_CACHE)
        self._years: Lru[tuple[str, int], tuple[list[Session], Bars]] = Lru(self.YEAR_CACHE)
        self._anchors: dict[str, float] = {}
        self._year_sessions: dict[int, _SessionArrays] = {}
        self._minute_counts = functools.lru_cache(maxsize=4096)(self._count_minutes)
        self.active_symbols: list[str] = [sym for sym in self.symbols
                                          if self._instruments[sym].asset["status"] == "active"]

    def _instrument(self, row: dict) -> _Instrument:
        symbol = row["symbol"]
        key = key_of("sandbox-market", self.seed, self.mode, symbol)
        jitter = unit(hash_at(key, np.arange(3)))
        price, volume = float(row["price"]), int(row["volume"])
        sigma = float(row["volatility"]) * (0.9 + 0.2 * jitter[0]) / math.sqrt(252)
        trade_size = float(np.clip(30_000.0 / price, 40, 1500) * (0.8 + 0.4 * jitter[1]))
        spread = min(0.01, (0.3 + 8.0 / math.sqrt(max(volume, 1) / 1e6)) * 1e-4) * (0.8 + 0.4 * jitter[2])
        return _Instrument(symbol, key, price, volume, sigma, trade_size, spread,
                           EXCHANGE_TAPE[row["exchange"]], asset_object(row))

    # ------------------------------------------------------------ assets

    def asset(self, symbol_or_id: str) -> dict | None:
        """The Alpaca Asset object for a symbol (case-sensitive) or asset id, or None."""
        inst = self._instruments.get(symbol_or_id)
        if inst is not None:
            return dict(inst.asset, attributes=list(inst.asset["attributes"]))
        found = self._by_id.get(str(symbol_or_id).lower())
        return dict(found, attributes=list(found["attributes"])) if found else None

    def assets(self) -> list[dict]:
        """Every asset of the list (active and inactive), sorted by symbol."""
        return [self.asset(s) for s in self.symbols]

    def has(self, symbol: str) -> bool:
        return symbol in self._instruments

    def tape(self, symbol: str) -> str:
        return self._inst(symbol).tape

    def _inst(self, symbol: str) -> _Instrument:
        try:
            return self._instruments[symbol]
        except KeyError:
            raise KeyError(f"unknown symbol {symbol!r}") from None

    # ------------------------------------------------------------ daily layer

    def _daily(self, inst: _Instrument, year: _SessionArrays) -> Bars:
        """The daily bars of the sessions of ``year``: their regular hours, as Alpaca's daily
        bars are (no notion of now)."""
        if not len(year.ords):
            return EMPTY_BARS
        ords = year.ords
        epoch = _EPOCH_ORDINAL
        days = (ords - epoch).astype(np.float64)
        anchor = self._anchors.get(inst.symbol)
        if anchor is None:        # computed with the days (noise_path is elementwise in t)
            noise = noise_path(inst.key, inst.sigma, np.concatenate(
                [days, days + 1.0, [float(_ANCHOR_ORDINAL - epoch)]]))
            anchor = self._anchors[inst.symbol] = float(noise[-1])
            noise = noise[:-1]
        else:
            noise = noise_path(inst.key, inst.sigma, np.concatenate([days, days + 1.0]))
        shift, shares = self.corporate.raw_scale(inst.symbol, ords)   # splits, dividends...
        both = (math.log(inst.price) - anchor) + noise + np.concatenate([shift, shift])
        x_open, x_close = both[:len(days)], both[len(days):]
        vol = regime(inst.key, days)
        sig = inst.sigma * vol
        draws = np.arange(6, dtype=np.int64)
        z = normal_at(inst.key ^ 0xD417, ords[:, None] * 8 + draws).T
        e = -np.log1p(-unit(hash_at(inst.key ^ 0xE8A1, ords[:, None] * 8 + draws[:2]))).T
        o = round_price(np.exp(x_open + 0.12 * sig * z[0]))
        c = round_price(np.exp(x_close))
        h = round_price(np.maximum(o, c) * np.exp(0.3 * sig * e[0]))
        low = round_price(np.minimum(o, c) * np.exp(-0.3 * sig * e[1]))
        h = np.maximum(h, np.maximum(o, c))
        low = np.minimum(low, np.minimum(o, c))
        regular = year.regular
        length = (regular / 390.0) ** 0.8
        move = np.abs(x_close - x_open) / np.maximum(sig, 1e-9)
        v = inst.volume * shares * length * np.exp(0.3 * z[1] - 0.045) * (0.85 + 0.15 * move) * np.sqrt(vol)
        n = np.clip(np.round(v / (inst.trade_size * shares * np.exp(0.1 * z[2]))), 4 * regular, 600 * regular)
        n = n.astype(np.int64)
        v = np.maximum(np.round(v).astype(np.int64), n + regular)
        typical = (o + h + low + 2.0 * c) / 5.0
        vw = np.clip(np.round(typical * np.exp(0.1 * sig * z[3]), 4), low, h)
        return Bars(year.t, o, h, low, c, v, n, vw)

    def _unadjusted_closes(self, symbol: str, ords: np.ndarray) -> np.ndarray:
        """Closes of these NY date ordinals before corporate actions shift them (unrounded);
        :class:`.corporate.CorporateActions` sizes dividends with them."""
        inst = self._inst(symbol)
        epoch = _EPOCH_ORDINAL
        days = (np.asarray(ords, np.int64) - epoch).astype(np.float64)
        noise = noise_path(inst.key, inst.sigma, np.append(days + 1.0, float(_ANCHOR_ORDINAL - epoch)))
        anchor = self._anchors.setdefault(inst.symbol, float(noise[-1]))
        return np.exp(math.log(inst.price) - anchor + noise[:-1])

    def _year(self, inst: _Instrument, year: int) -> tuple[list[Session], Bars]:
        """Sessions of a calendar year and their full-day bars (cached)."""
        key = (inst.symbol, year)
        hit = self._years.get(key)
        if hit is not None:
            return hit
        days = self._year_sessions.get(year)
        if days is None:
            days = self._year_sessions[year] = _SessionArrays(
                self.sessions.sessions_between(dt.date(year, 1, 1), dt.date(year, 12, 31)))
        value = (days.sessions, self._daily(inst, days))
        self._years[key] = value
        return value

    def _day(self, inst: _Instrument, day: dt.date) -> tuple[Session, BarTick] | None:
        sessions, bars = self._year(inst, day.year)
        t = ny_midnight_ns(day)
        i = int(np.searchsorted(bars.t, t))
        if i < len(bars) and bars.t[i] == t:
            return sessions[i], bars.row(i)
        return None

    def _days(self, inst: _Instrument, days: list[dt.date]) -> tuple[list[int], list[Session], Bars]:
        """Which of ``days`` have a session (their positions in ``days``, ascending), those
        sessions and their full-day bars: from the year cache when the year is there,
        otherwise computed for just these dates (the daily layer is elementwise, so the bars
        are the same as in their year)."""
        by_year: dict[int, list[tuple[int, dt.date]]] = {}
        todo: list[tuple[int, Session]] = []
        for i, day in enumerate(days):
            if (inst.symbol, day.year) in self._years:
                by_year.setdefault(day.year, []).append((i, day))
            else:
                sess = self.sessions.session(day)
                if sess is not None:
                    todo.append((i, sess))
        if len(todo) == 1:                  # one day of a year: compute (and keep) the year
            by_year.setdefault(todo[0][1].date.year, []).append((todo[0][0], todo[0][1].date))
            todo = []
        picks: list[tuple[int, Session, Bars, int]] = []    # position, session, its bars, row
        for year, items in by_year.items():
            sessions, bars = self._year(inst, year)
            ords = self._year_sessions[year].ords
            if not len(ords):
                continue
            want = np.array([day.toordinal() for _, day in items], dtype=np.int64)
            rows = np.minimum(np.searchsorted(ords, want), len(ords) - 1)
            picks += [(i, sessions[k], bars, k) for (i, _), k, hit in
                      zip(items, rows.tolist(), (ords[rows] == want).tolist()) if hit]
        if todo:
            bars = self._daily(inst, _SessionArrays([sess for _, sess in todo]))
            picks += [(i, sess, bars, k) for k, (i, sess) in enumerate(todo)]
        if not picks:
            return [], [], EMPTY_BARS
        picks.sort(key=lambda pick: pick[0])
        daily = Bars(*(np.array([getattr(src, name)[k] for _, _, src, k in picks]) for name in BAR_FIELDS))
        return [pick[0] for pick in picks], [pick[1] for pick in picks], daily

    def day_bars(self, symbol: str, first: dt.date, last: dt.date) -> tuple[list[Session], Bars]:
        """Sessions with ``first <= date <= last`` and their full-day bars (ignores now)."""
        inst = self._inst(symbol)
        sessions: list[Session] = []
        parts: list[Bars] = []
        for year in range(first.year, last.year + 1):
            ys, yb = self._year(inst, year)
            lo = int(np.searchsorted(yb.t, ny_midnight_ns(max(first, dt.date(year, 1, 1)))))
            hi = int(np.searchsorted(yb.t, ny_midnight_ns(min(last, dt.date(year, 12, 31))), "right"))
            sessions.extend(ys[lo:hi])
            parts.append(yb.take(slice(lo, hi)))
        return sessions, Bars.concat(parts)

    # ------------------------------------------------------------ minute layer

    def minute_bars(self, symbol: str, day: dt.date) -> Bars:
        """Every minute bar of the session on NY date ``day`` (empty when it does not trade).
        Aggregating them gives exactly :meth:`daily_bar`'s open, high, low, close, volume and
        trade count. Cached per (symbol, day)."""
        inst = self._inst(symbol)
        key = (symbol, day)
        hit = self._minutes.get(key)
        if hit is not None:
            return hit
        return self._generate_minutes(inst, [day])[0]

    def prefetch_minutes(self, symbol: str, days: list[dt.date]) -> None:
        """Generate and cache the minute bars of these NY dates at once (much cheaper per day
        than one at a time; the bars are the same). Raises KeyError for an unknown symbol."""
        inst = self._inst(symbol)
        missing = [d for d in dict.fromkeys(days) if (symbol, d) not in self._minutes]
        if missing:
            self._generate_minutes(inst, missing)

    def _generate_minutes(self, inst: _Instrument, days: list[dt.date]) -> list[Bars]:
        """Minute bars of ``days`` (empty for days without a session), cached."""
        positions, sessions, daily = self._days(inst, days)
        parts = minute_columns(self._part_specs(inst, sessions, daily))
        out = [EMPTY_BARS] * len(days)
        for k, i in enumerate(positions):       # a session's parts, in SEGMENTS order
            out[i] = Bars(*(np.concatenate(cols) for cols in zip(*parts[k * len(SEGMENTS):(k + 1) * len(SEGMENTS)])))
        for day, bars in zip(days, out):
            self._minutes[(inst.symbol, day)] = bars
        return out

    @staticmethod
    def _part_specs(inst: _Instrument, sessions: list[Session], daily: Bars) -> list[DaySpec]:
        """The parts of each session (``daily``: their full-day bars), in :data:`SEGMENTS`
        order: the pre-market (drifting from an overnight move towards the open), the regular
        hours (the daily bar) and the after-hours (drifting away from the close), the extended
        parts with a few percent of the regular volume and fewer prints per minute."""
        if not sessions:
            return []
        ords = np.array([sess.date.toordinal() for sess in sessions], dtype=np.int64)
        z = normal_at(inst.key ^ 0x5E55, ords[:, None] * 8 + np.arange(6)).T
        e = -np.log1p(-unit(hash_at(inst.key ^ 0x5E56, ords[:, None] * 8 + np.arange(4)))).T
        o, c, sig = daily.o, daily.c, inst.sigma
        bounds = {PRE: ([s.premarket_open for s in sessions], [s.open for s in sessions]),
                  POST: ([s.close for s in sessions], [s.postmarket_close for s in sessions])}
        ends = {PRE: (round_price(o * np.exp(0.4 * sig * z[0])), round_price(o * np.exp(0.05 * sig * z[1]))),
                POST: (round_price(c * np.exp(0.03 * sig * z[2])), round_price(c * np.exp(0.3 * sig * z[3])))}
        wiggle = {PRE: (e[0], e[1]), POST: (e[2], e[3])}
        share = {PRE: 0.03 * np.exp(0.4 * z[4] - 0.08), POST: 0.025 * np.exp(0.4 * z[5] - 0.08)}
        extended = {}
        for segment in (PRE, POST):
            first = np.array(bounds[segment][0], dtype=np.int64)
            m = (np.array(bounds[segment][1], dtype=np.int64) - first) // MINUTE_NS
            po, pc = ends[segment]
            up, down = wiggle[segment]
            top, bottom = np.maximum(po, pc), np.minimum(po, pc)
            # math.exp, one value at a time, as the one-session computation does
            high = np.maximum(round_price(top * np.array([math.exp(0.15 * sig * u) for u in up.tolist()])), top)
            low = np.minimum(round_price(bottom * np.array([math.exp(-0.15 * sig * d) for d in down.tolist()])),
                             bottom)
            n = np.maximum(4 * m, np.rint(daily.n * share[segment]).astype(np.int64))
            v = np.maximum(np.rint(daily.v * share[segment]).astype(np.int64), 2 * n)
            extended[segment] = list(zip(first.tolist(), m.tolist(), po.tolist(), high.tolist(), low.tolist(),
                                         pc.tolist(), v.tolist(), n.tolist()))
        specs = []
        regular = zip(daily.o.tolist(), daily.h.tolist(), daily.l.tolist(), daily.c.tolist(),
                      daily.v.tolist(), daily.n.tolist())
        for i, (sess, bar) in enumerate(zip(sessions, regular)):
            day = sess.date.toordinal()
            specs.append(DaySpec(key_of(inst.key, PRE, day), *extended[PRE][i][:2], PRE, *extended[PRE][i][2:]))
            specs.append(DaySpec(key_of(inst.key, "minutes", day), sess.open,
                                 int((sess.close - sess.open) // MINUTE_NS), REGULAR, *bar))
            specs.append(DaySpec(key_of(inst.key, POST, day), *extended[POST][i][:2], POST, *extended[POST][i][2:]))
        return specs

    # ------------------------------------------------------------ tick layer

    def ticks(self, symbol: str, minute_ns: int) -> Ticks | None:
        """Trades and quotes of the minute starting at ``minute_ns`` (None when no bar)."""
        key = (symbol, minute_ns)
        hit = self._ticks.get(key)
        if hit is not None:
            return hit
        inst = self._inst(symbol)
        sess = self.sessions.session_at(minute_ns)
        if sess is None:
            return None
        bars = self.minute_bars(symbol, sess.date)
        i = int((minute_ns - sess.premarket_open) // MINUTE_NS)
        if not 0 <= i < len(bars) or bars.t[i] != minute_ns:
            return None
        ticks = self._make_ticks(inst, bars, i, extended=not (sess.open <= minute_ns < sess.close))
        self._ticks[key] = ticks
        return ticks

    def _make_ticks(self, inst: _Instrument, bars: Bars, i: int, *, extended: bool) -> Ticks:
        t0 = int(bars.t[i])
        o, h, low, c = float(bars.o[i]), float(bars.h[i]), float(bars.l[i]), float(bars.c[i])
        v, n = int(bars.v[i]), int(bars.n[i])
        minute_no = t0 // MINUTE_NS
        rnd = Draws(key_of(inst.key, self.TICK_SALT, minute_no))
        offsets = np.sort(rnd.integers(0, MINUTE_NS - 2 * n - 1, n)) + 2 * np.arange(n, dtype=np.int64) + 1
        # prices: bridge o -> c through h and l at two interior trades
        a, b = rnd.integers(1, n - 1, 2)
        if a == b:
            b = 1 + (a % (n - 2))
        anchors = sorted([(0, o), (int(a), h), (int(b), low), (n - 1, c)])
        ax = np.array([p for p, _ in anchors], dtype=np.float64)
        ay = np.array([q for _, q in anchors], dtype=np.float64)
        walk = np.concatenate(([0.0], np.cumsum(rnd.normal(n - 1)))) * ((h - low) / math.sqrt(n) * 0.5)
        grid = np.arange(n, dtype=np.float64)
        price = np.interp(grid, ax, ay) + walk - np.interp(grid, ax, walk[ax.astype(np.int64)])
        price = np.clip(round_price(reflect(price, low, h)), low, h)
        price[ax.astype(np.int64)] = ay
        size = 1 + allocate(v - n, np.exp(1.1 * rnd.normal(n)), 0)
        trade_x = rnd.choice(_TRADE_VENUES, _TRADE_VENUE_W, n)
        flags = (size < 100).astype(np.int8) | np.int8(2 if extended else 0)
        trade_id = minute_no * TRADE_ID_STRIDE + np.arange(n, dtype=np.int64)
        bid, bid_size, ask, ask_size = quotes_around(price, inst.spread, rnd)   # 1 ns before each trade
        bid_x = rnd.choice(_QUOTE_VENUES, _QUOTE_VENUE_W, n)
        ask_x = rnd.choice(_QUOTE_VENUES, _QUOTE_VENUE_W, n)
        late = -1
        if n >= 6 and self._late_minute(inst, minute_no):
            interior = [k for k in range(1, n - 1) if k not in (int(a), int(b))]
            late = interior[len(interior) // 2]
        trade_t = t0 + offsets[_bursts(rnd, size, v / n)]
        return Ticks(trade_t, price, size, trade_x, trade_id, flags, trade_t - 1, bid, bid_size,
                     ask, ask_size, bid_x, ask_x, late)

    def _late_minute(self, inst: _Instrument, minute_no: int) -> bool:
        return bool(hash_at(inst.key ^ self.LATE_SALT, np.array([minute_no]))[0] % np.uint64(12) == 0)

    def may_have_late(self, symbol: str, minute_ns: int) -> bool:
        """Cheap pre-check: False means the minute certainly has no late-reported trade
        (:attr:`Ticks.late`); True means it has one if it has at least six trades."""
        return self._late_minute(self._inst(symbol), minute_ns // MINUTE_NS)

    # ------------------------------------------------------------ what exists at "now"

    def _last_minute_before(self, symbol: str, ns: int) -> int | None:
        """Start of the last minute with data that starts at or before ``ns``."""
        sess = self.sessions.session_at(ns)
        if sess is not None:
            return sess.premarket_open + (ns - sess.premarket_open) // MINUTE_NS * MINUTE_NS
        day = ny_date(ns)
        sess = self.sessions.session(day)
        if sess is not None and sess.postmarket_close <= ns:
            return sess.postmarket_close - MINUTE_NS
        sess = self.sessions.previous_session(day)
        return None if sess is None else sess.postmarket_close - MINUTE_NS

    def _previous_minute(self, minute: int) -> int | None:
        sess = self.sessions.session_at(minute)
        if sess is not None and minute > sess.premarket_open:
            return minute - MINUTE_NS
        return self._last_minute_before("", minute - 1)

    def _tick_before(self, symbol: str, ns: int, quotes: bool) -> tuple[Ticks, int] | None:
        self._inst(symbol)
        if self.live is not None:       # always-open, out of hours: the live present's tape
            found = self.live.tick_before(self, symbol, ns, quotes)
            if found is not None:
                return found
        minute = self._last_minute_before(symbol, ns)
        for _ in range(3):
            if minute is None:
                return None
            ticks = self.ticks(symbol, minute)
            if ticks is not None:
                times = ticks.quote_t if quotes else ticks.trade_t
                i = int(np.searchsorted(times, ns, side="right")) - 1
                if i >= 0:
                    return ticks, i
            minute = self._previous_minute(minute)
        return None

    def quote_at(self, symbol: str, ns: int) -> QuoteTick:
        """The latest quote at or before ``ns`` (from an earlier session when ``ns`` is outside
        the data window). Raises KeyError for an unknown symbol, LookupError before the first
        session of the calendar."""
        found = self._tick_before(symbol, ns, quotes=True)
        if found is None:
            raise LookupError(f"no quote for {symbol} at or before {ns}")
        tk, i = found
        return QuoteTick(int(tk.quote_t[i]), float(tk.bid[i]), int(tk.bid_size[i]), float(tk.ask[i]),
                         int(tk.ask_size[i]), str(tk.bid_x[i]), str(tk.ask_x[i]))

    def trade_at(self, symbol: str, ns: int) -> TradeTick:
        """The latest trade at or before ``ns``. Raises like :meth:`quote_at`."""
        found = self._tick_before(symbol, ns, quotes=False)
        if found is None:
            raise LookupError(f"no trade for {symbol} at or before {ns}")
        tk, i = found
        return TradeTick(int(tk.trade_t[i]), float(tk.price[i]), int(tk.size[i]), str(tk.trade_x[i]),
                         int(tk.trade_id[i]))

    def daily_bar(self, symbol: str, date: dt.date) -> BarTick | None:
        """The daily bar of NY date ``date`` (its regular hours, stamped NY midnight), None
        without a session. Raises KeyError for an unknown symbol."""
        found = self._day(self._inst(symbol), date)
        return None if found is None else found[1]

    def opening_price(self, symbol: str, date: dt.date) -> float | None:
        """Open of the first regular-hours minute (the opening auction). A day without a
        session has none (None), except in always-open mode, where the sandbox trades at any
        hour: there it is the last trade before the day begins."""
        sess = self.sessions.session(date)
        if sess is None:
            return self._live_price(symbol, ny_midnight_ns(date))
        return float(self.minute_bars(symbol, date).o[(sess.open - sess.premarket_open) // MINUTE_NS])

    def closing_price(self, symbol: str, date: dt.date) -> float | None:
        """Close of the last regular-hours minute (the closing auction). A day without a
        session has none (None), except in always-open mode: there it is the last trade
        before the day ends."""
        sess = self.sessions.session(date)
        if sess is None:
            return self._live_price(symbol, ny_midnight_ns(date + dt.timedelta(days=1)) - 1)
        return float(self.minute_bars(symbol, date).c[(sess.close - sess.premarket_open) // MINUTE_NS - 1])

    def _live_price(self, symbol: str, ns: int) -> float | None:
        """The price an always-open sandbox trades at out of hours: the last trade at or before
        ``ns`` (None in calendar mode, or before the calendar's first session)."""
        if self.mode != "always-open":
            return None
        try:
            return float(self.trade_at(symbol, ns).price)
        except LookupError:
            return None

    # ------------------------------------------------------------ bars as of now

    def visible_minutes(self, symbol: str, day: dt.date, now_ns: int) -> Bars:
        """The session's minute bars whose minute has closed by ``now_ns``."""
        bars = self.minute_bars(symbol, day)
        if not len(bars) or bars.t[-1] + MINUTE_NS <= now_ns:
            return bars
        return bars.take(slice(0, int(np.searchsorted(bars.t, now_ns - MINUTE_NS, side="right"))))

    def intraday_bars(self, symbol: str, timeframe: Timeframe, utc_day: dt.date, now_ns: int) -> Bars:
        """All ``timeframe`` bars of one UTC day: buckets aligned to multiples of the timeframe
        from 00:00 UTC, stamped at bucket start, aggregating the minutes closed by ``now_ns``
        (a bucket still in progress is the partial aggregate of its complete minutes)."""
        day0 = (utc_day.toordinal() - _EPOCH_ORDINAL) * DAY_NS
        day1 = day0 + DAY_NS
        parts = []
        for ny_day in (utc_day - dt.timedelta(days=1), utc_day):   # empty without a session
            bars = self.visible_minutes(symbol, ny_day, now_ns)
            if len(bars) and bars.t[0] < day1 and bars.t[-1] >= day0:
                lo, hi = np.searchsorted(bars.t, [day0, day1])
                parts.append(bars.take(slice(int(lo), int(hi))))
        minutes = Bars.concat(parts)
        if timeframe.minutes == 1 or not len(minutes):
            return minutes
        width = timeframe.minutes * MINUTE_NS
        bucket = (minutes.t - day0) // width
        starts = np.flatnonzero(np.diff(bucket, prepend=-1))
        return minutes.aggregate(starts, day0 + bucket[starts] * width)

    def today_bar(self, symbol: str, sess: Session, now_ns: int) -> BarTick | None:
        """The daily bar of ``sess`` as of ``now_ns``: the full bar once its regular hours have
        ended, the aggregate of its complete regular-hours minutes while they run, None before
        the first of them closes."""
        if sess.close <= now_ns:
            return self.daily_bar(symbol, sess.date)
        done = int((now_ns - sess.open) // MINUTE_NS)
        if done <= 0:
            return None
        first = int((sess.open - sess.premarket_open) // MINUTE_NS)
        bars = self.minute_bars(symbol, sess.date).take(slice(first, first + done))
        return bars.aggregate(np.array([0]), np.array([ny_midnight_ns(sess.date)])).row(0)

    def daily_bars(self, symbol: str, first: dt.date, last: dt.date, now_ns: int) -> Bars:
        """1Day bars for sessions in [first, last] as of ``now_ns`` (stamped NY midnight)."""
        sessions, bars = self.day_bars(symbol, first, last)
        if not len(bars) or sessions[-1].close <= now_ns:
            return bars
        done = int(np.searchsorted([s.close for s in sessions], now_ns, side="right"))
        part = bars.take(slice(0, done))
        if done < len(sessions) and sessions[done].open < now_ns:
            today = self.today_bar(symbol, sessions[done], now_ns)
            if today is not None:
                part = Bars.concat([part, Bars(*(np.array([x]) for x in today))])
        return part

    def period_bars(self, symbol: str, timeframe: Timeframe, year: int, now_ns: int) -> Bars:
        """Weekly or N-monthly bars stamped in ``year``: aggregates of the daily bars of each
        week (Monday-Sunday) or month group, stamped at the NY midnight of the first day with a
        session."""
        if timeframe.unit == UNIT_WEEK:
            first, last = dt.date(year, 1, 1) - dt.timedelta(days=6), dt.date(year, 12, 31) + dt.timedelta(days=6)
        else:
            first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
        days = self.daily_bars(symbol, first, last, now_ns)
        if not len(days):
            return EMPTY_BARS
        dates = [ny_date(int(t)) for t in days.t]
        if timeframe.unit == UNIT_WEEK:
            group = np.array([d.toordinal() - d.weekday() for d in dates], dtype=np.int64)
        else:
            group = np.array([(d.year * 12 + d.month - 1) // timeframe.amount for d in dates],
                             dtype=np.int64)
        starts = np.flatnonzero(np.diff(group, prepend=group[0] - 1))
        bars = days.aggregate(starts, days.t[starts])
        keep = np.array([dates[s].year == year for s in starts])
        return bars.take(keep)

    def latest_bar(self, symbol: str, now_ns: int) -> BarTick | None:
        """The last minute bar closed by ``now_ns``: in always-open mode out of hours, the live
        present's (the one the data stream sent as that minute closed), else the sessions'."""
        if self.live is not None:
            bar = self.live.bar(self, symbol, now_ns - now_ns % MINUTE_NS - MINUTE_NS)
            if bar is not None:
                return bar
        minute = self._last_minute_before(symbol, now_ns - MINUTE_NS)
        if minute is None:
            return None
        sess = self.sessions.session_at(minute)
        bars = self.minute_bars(symbol, sess.date)
        return bars.row(int((minute - sess.premarket_open) // MINUTE_NS))

    def snapshot(self, symbol: str, now_ns: int) -> dict[str, Any]:
        """Latest trade, quote and minute bar, today's daily bar once its regular hours have a
        complete minute (before that, the last session's) and the previous session's, as of
        ``now_ns``; values are the tick/bar tuples or None."""
        day = ny_date(now_ns)
        sess = self.sessions.session(day)
        if sess is None or sess.open + MINUTE_NS > now_ns:
            sess = self.sessions.previous_session(day)
        daily = prev = None
        if sess is not None:
            daily = self.today_bar(symbol, sess, now_ns)
            before = self.sessions.previous_session(sess.date)
            prev = None if before is None else self.daily_bar(symbol, before.date)
        try:
            trade, quote = self.trade_at(symbol, now_ns), self.quote_at(symbol, now_ns)
        except LookupError:
            trade = quote = None
        return {"latestTrade": trade, "latestQuote": quote,
                "minuteBar": self.latest_bar(symbol, now_ns), "dailyBar": daily,
                "prevDailyBar": prev}

    def minute_count(self, start_ns: int, end_ns: int) -> int:
        """How many minutes with data (minute bars) start in [start_ns, end_ns] (ns, both
        inclusive). Remembered for the latest few thousand windows."""
        return self._minute_counts(start_ns, end_ns)

    def _count_minutes(self, start_ns: int, end_ns: int) -> int:
        total = 0
        for sess in self.sessions.sessions_between(ny_date(start_ns), ny_date(end_ns)):
            first = max(0, -(-(start_ns - sess.premarket_open) // MINUTE_NS))
            last = min(sess.n_minutes, (end_ns - sess.premarket_open) // MINUTE_NS + 1)
            total += max(0, last - first)
        return total
