"""The live present of an ``always-open`` sandbox outside the NYSE's data windows.

In ``always-open`` mode the sandbox trades at any hour (:mod:`.clock`), while the market's data
follows NYSE sessions (:mod:`.market`): 04:00-20:00 ET on trading days. Between two sessions'
windows (overnight, weekends, holidays) the live present still trades, at the prices of this
tape: trades and quotes that start at the last session's last trade and wander around it (slow
value noise over hours and half hours, a little jitter each minute, scaled by the symbol's
volatility), with a corporate action's price step at New York midnight of its ex-date, as the
raw market has it. Each minute has 60-119 prints at distinct times, one quote just before each,
and the minute bar that aggregates them; no bursts, no late reports.

Who sees it: :meth:`.market.Market.quote_at`/``trade_at`` (so the engine's fills, REST latest
trades and quotes, snapshots' latest trade and quote and the marks of positions),
:meth:`.market.Market.latest_bar` (REST latest bars and snapshots' minute bar: the last
completed minute, the bar the data stream sent as it closed) and the data stream's trades,
quotes and minute bars. The history never does: bars, trades and quotes pages (and snapshots'
daily bars) follow the sessions only, so the same instant is "live" while it is the present and
absent from the history afterwards (only the live present is open out of hours).

Everything is a pure function of (seed, market mode, feed, symbol, minute), like the market.
"""

from __future__ import annotations

import numpy as np

from ._bars import TRADE_ID_STRIDE, BarTick, Ticks
from ._lru import Lru
from ._minutes import bracket, round_price
from ._noise import hash_at, key_of, normal_at, unit
from .clock import MINUTE_NS, Session, ny_date

__all__ = ["LiveTape"]

# (lattice spacing in minutes, amplitude in units of the symbol's daily volatility)
_SCALES = ((240, 0.35), (30, 0.12))
_JITTER = 0.03                # per-minute noise, in units of the daily volatility
_PRINTS = (60, 120)           # prints a minute, [lo, hi)
_SIZE_SHARE = 0.25            # mean print size, as a share of the symbol's regular one
_BLOCK = 10                   # minutes generated (and cached) together
_VENUES = np.array(list("QNPKZVUXYJ"))   # the exchanges that print out of hours (a choice)


class LiveTape:
    """The out-of-hours tape of one always-open market (see the module docstring). Methods
    take the market (or a feed's view of it, such as the IEX feed) whose ticks they make."""

    CACHE = 1024                  # blocks of _BLOCK minutes (each ~90 kB of ticks)

    def __init__(self) -> None:
        self._blocks: Lru[tuple, list[tuple[BarTick, Ticks]]] = Lru(self.CACHE)   # [] = no tape

    # ------------------------------------------------------------ queries
    def ticks(self, market, symbol: str, minute_ns: int) -> Ticks | None:
        """Trades and quotes of the out-of-hours minute starting at ``minute_ns``; None inside
        a session's data window or before the calendar's first session."""
        found = self._minute(market, symbol, minute_ns)
        return None if found is None else found[1]

    def bar(self, market, symbol: str, minute_ns: int) -> BarTick | None:
        """The minute bar of an out-of-hours minute (None as for :meth:`ticks`)."""
        found = self._minute(market, symbol, minute_ns)
        return None if found is None else found[0]

    def tick_before(self, market, symbol: str, ns: int, quotes: bool) -> tuple[Ticks, int] | None:
        """The tape's last quote (or trade) at or before ``ns`` as (ticks, index), when ``ns``
        is out of hours and the tape has printed since the last session's window closed; None
        otherwise (the market's own ticks answer)."""
        minute = ns - ns % MINUTE_NS
        gap = _gap(market.sessions, ns)
        if gap is None:
            return None
        for m in (minute, minute - MINUTE_NS):
            if m < gap.postmarket_close:
                return None
            ticks = self.ticks(market, symbol, m)
            if ticks is None:
                return None
            times = ticks.quote_t if quotes else ticks.trade_t
            i = int(np.searchsorted(times, ns, side="right")) - 1
            if i >= 0:
                return ticks, i
        return None

    # ------------------------------------------------------------ generation
    def _minute(self, market, symbol: str, minute_ns: int) -> tuple[BarTick, Ticks] | None:
        """One minute of the tape, from its block of :data:`_BLOCK` minutes (generated and
        cached whole: the data windows open and close on whole hours, so a block is all tape or
        none of it)."""
        start = minute_ns - minute_ns % (_BLOCK * MINUTE_NS)
        key = (market.FEED, symbol, start)
        block = self._blocks.get(key)
        if block is None:
            gap = _gap(market.sessions, start)
            block = self._blocks[key] = [] if gap is None else self._make(market, symbol, start, gap)
        return block[(minute_ns - start) // MINUTE_NS] if block else None

    def _make(self, market, symbol: str, start: int, gap: Session) -> list[tuple[BarTick, Ticks]]:
        """The minutes of an out-of-hours block: the path's value at each minute boundary
        gives each minute's first and last print; the prints between wander around the line
        from one to the other."""
        inst = market._inst(symbol)
        last = market.minute_bars(symbol, gap.date)
        anchor = float(last.c[-1]) if len(last) else float(market.daily_bar(symbol, gap.date).close)
        shift, _ = market.corporate.raw_scale(
            symbol, np.array([gap.date.toordinal(), ny_date(start).toordinal()], dtype=np.int64))
        key = key_of(inst.key, "live")
        first = start // MINUTE_NS
        bounds = np.arange(first, first + _BLOCK + 1, dtype=np.float64)
        x = _path(key, inst.sigma, bounds) \
            - _path(key, inst.sigma, np.array([gap.postmarket_close // MINUTE_NS], dtype=np.float64))[0]
        path = anchor * np.exp(x + (shift[1] - shift[0]))
        return _block_ticks(key_of(key, market.FEED, first), inst, start, path[:-1], path[1:],
                            iex=market.FEED == "iex")


def _block_ticks(key: int, inst, start: int, o: np.ndarray, c: np.ndarray, *,
                 iex: bool) -> list[tuple[BarTick, Ticks]]:
    """Each minute's prints (from about ``o`` to about ``c``, at distinct times), the quote
    1 ns before each and the minute bar that aggregates them, for the minutes from ``start``,
    from one draw of hashed uniforms."""
    m = len(o)
    n = (_PRINTS[0] + unit(hash_at(key, -1 - np.arange(m))) * (_PRINTS[1] - _PRINTS[0])).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(n)[:-1]))
    total = int(n.sum())
    of = np.repeat(np.arange(m), n)                       # the minute of each print
    j = np.arange(total) - starts[of]                     # its place in the minute
    u = unit(hash_at(key, np.arange(8 * total, dtype=np.int64))).reshape(8, total)
    u0 = np.sort(of + u[0]) - of                          # sorted within each minute
    minute_t = start + of * MINUTE_NS
    trade_t = minute_t + (u0 * (MINUTE_NS - 2 * n[of] - 1)).astype(np.int64) + 2 * j + 1
    wiggle = 0.02 * inst.sigma * (o + c) / 2
    price = round_price(o[of] + (c - o)[of] * j / (n[of] - 1) + wiggle[of] * (u[1] - 0.5))
    ends = starts + n - 1
    price[starts], price[ends] = round_price(o), round_price(c)
    size = np.maximum(1, (inst.trade_size * _SIZE_SHARE * -np.log1p(-u[2])).astype(np.int64))
    bid, ask = bracket(price, inst.spread, u[3], u[4])
    bid_size, ask_size = (100 * (1 + np.floor(u[i] * 6)).astype(np.int64) for i in (5, 6))
    venues = np.full(total, "V") if iex else _VENUES[(u[7] * len(_VENUES)).astype(np.int64)]
    ask_x = venues if iex else _VENUES[(np.modf(u[3] * 997)[0] * len(_VENUES)).astype(np.int64)]
    trade_id = (minute_t // MINUTE_NS) * TRADE_ID_STRIDE + j
    flags = (size < 100).astype(np.int8) | np.int8(2)
    volume = np.add.reduceat(size, starts)
    high, low = np.maximum.reduceat(price, starts), np.minimum.reduceat(price, starts)
    vwap = np.clip(np.round(np.add.reduceat(price * size, starts) / volume, 4), low, high)
    out = []
    for i in range(m):
        k = slice(int(starts[i]), int(starts[i] + n[i]))
        bar = BarTick(int(start + i * MINUTE_NS), float(price[starts[i]]), float(high[i]),
                      float(low[i]), float(price[ends[i]]), int(volume[i]), int(n[i]), float(vwap[i]))
        out.append((bar, Ticks(trade_t[k], price[k], size[k], venues[k], trade_id[k], flags[k],
                               trade_t[k] - 1, bid[k], bid_size[k], ask[k], ask_size[k], venues[k],
                               ask_x[k])))
    return out


def _gap(sessions, ns: int) -> Session | None:
    """The session whose data window last closed before ``ns`` when ``ns`` is out of hours;
    None inside a window or before the calendar's first session."""
    day = ny_date(ns)
    sess = sessions.session(day)
    if sess is not None:
        if ns < sess.premarket_open:
            return sessions.previous_session(day)
        return sess if sess.postmarket_close <= ns else None
    return sessions.previous_session(day)


def _path(key: int, sigma: float, minutes: np.ndarray) -> np.ndarray:
    """The tape's log-price offset at these minute numbers (float; integers are minute starts):
    smoothstep value noise at each of :data:`_SCALES`, plus per-minute jitter."""
    total = _JITTER * sigma * normal_at(key ^ 0x7177, minutes.astype(np.int64))
    for i, (spacing, amplitude) in enumerate(_SCALES):
        pos = minutes / spacing
        k = np.floor(pos)
        f = pos - k
        s = f * f * (3.0 - 2.0 * f)
        lattice = normal_at(key ^ (0x51CA1E + i), np.concatenate([k, k + 1]).astype(np.int64))
        v0, v1 = lattice[:len(k)], lattice[len(k):]
        total = total + amplitude * sigma * (v0 + (v1 - v0) * s)
    return total
