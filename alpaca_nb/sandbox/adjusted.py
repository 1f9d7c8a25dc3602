"""Adjusted bars (``adjustment=split|dividend|spin-off|all``, comma-combinable), as Alpaca
serves them: as of the sandbox's today, every bar before an action's ex-date is multiplied by
the action's factor (:attr:`.corporate.Action.factor`); splits also divide the volume (by
``old_rate / new_rate``), dividends and spin-offs change prices only; bars from the ex-date on,
trades and quotes are never adjusted. Adjusted prices are rounded to 4 decimals and volumes to
whole shares (the sandbox's rounding; Alpaca's is unconfirmed).

Adjustment happens where the bars are made: minute bars and daily bars are adjusted first and
then aggregated exactly as raw ones are (so an hour, week or month bar that spans an ex-date
mixes adjusted and unadjusted parts correctly). :func:`view` gives the market-data routes a
view of the market that serves adjusted minute and daily bars, and a view of their chunk cache
whose keys name the adjustment and how many actions of the symbol it applies (so a chunk
cached before an ex-date is not served after it).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from ._bars import Bars, BarTick
from ._views import CacheView, MarketView
from .corporate import ADJUSTMENT_TYPES
from .market import Market

__all__ = ["parse_adjustment", "view"]


def parse_adjustment(values: list[str]) -> frozenset[str]:
    """The corporate-action types that the request's ``adjustment`` values apply (empty for
    raw or none). One parameter, comma-separated values from raw, split, dividend, spin-off,
    all; an unknown, empty or repeated value, or a repeated parameter, raises ValueError (the
    route answers 400, as Alpaca does since 2026-11-02)."""
    if not values:
        return frozenset()
    if len(values) > 1:
        raise ValueError("invalid adjustment: give one adjustment parameter with comma-separated "
                         "values (e.g. split,dividend)")
    items = [item.strip() for item in values[0].split(",")]
    for item in items:
        if item not in ADJUSTMENT_TYPES:
            raise ValueError(f"invalid adjustment: {item!r} (expected raw, split, dividend, "
                             "spin-off or all)")
    if len(set(items)) < len(items):
        raise ValueError(f"invalid adjustment: {values[0]!r} repeats a value")
    return frozenset().union(*(ADJUSTMENT_TYPES[item] for item in items))


def view(market: Market, cache, types: frozenset[str], today: dt.date) -> tuple[_AdjustedMarket, _TaggedCache]:
    """(market view serving adjusted bars, chunk-cache view keyed by the adjustment) for
    actions of ``types`` with ex-date on or before NY date ``today``."""
    adjusted = _AdjustedMarket(market, types, today)
    return adjusted, _TaggedCache(cache, adjusted)


class _AdjustedMarket(MarketView):
    """The market with adjusted minute and daily bars; everything else is the market's. The
    bar methods that build on those two are the market's own, run on this view."""

    def __init__(self, market: Market, types: frozenset[str], today: dt.date):
        super().__init__(market)
        self._types = types
        self._today = today
        self._factors: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}
        self.tag_text = "+".join(sorted(types))

    def tag(self, symbol: str) -> str | None:
        """What distinguishes this symbol's adjusted bars from raw ones (None: they are raw)."""
        found = self._scales(symbol)
        return None if found is None else f"{self.tag_text}:{len(found[0])}"

    def _scales(self, symbol: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(ex ordinals, log price factor and log volume factor of the actions from each one on)."""
        if symbol not in self._factors:
            actions = self._market.corporate.effective(symbol, self._types, self._today)
            if not actions:
                self._factors[symbol] = None
            else:
                ex = np.array([a.ex_date.toordinal() for a in actions], np.int64)
                price = np.log([a.factor for a in actions])
                volume = np.log([a.volume_factor for a in actions])
                suffix = lambda x: np.concatenate((np.cumsum(x[::-1])[::-1], [0.0]))
                self._factors[symbol] = (ex, suffix(price), suffix(volume))
        return self._factors[symbol]

    def _apply(self, symbol: str, bars: Bars, ords: np.ndarray) -> Bars:
        scales = self._scales(symbol)
        if scales is None or not len(bars):
            return bars
        ex, price, volume = scales
        i = np.searchsorted(ex, ords, side="right")        # actions with ex-date after the bar
        if not np.any(i < len(ex)):
            return bars
        pf, vf = np.exp(price[i]), np.exp(volume[i])
        r = lambda x: np.round(x * pf, 4)
        return Bars(bars.t, r(bars.o), r(bars.h), r(bars.l), r(bars.c),
                    np.rint(bars.v * vf).astype(np.int64), bars.n, r(bars.vw))

    def minute_bars(self, symbol: str, day: dt.date) -> Bars:
        bars = self._market.minute_bars(symbol, day)
        return self._apply(symbol, bars, np.full(len(bars), day.toordinal(), np.int64))

    def day_bars(self, symbol: str, first: dt.date, last: dt.date):
        sessions, bars = self._market.day_bars(symbol, first, last)
        ords = np.array([s.date.toordinal() for s in sessions], np.int64)
        return sessions, self._apply(symbol, bars, ords)

    def daily_bar(self, symbol: str, date: dt.date) -> BarTick | None:
        bar = self._market.daily_bar(symbol, date)
        if bar is None:
            return None
        one = Bars(*(np.array([x]) for x in bar))
        return self._apply(symbol, one, np.array([date.toordinal()], np.int64)).row(0)


class _TaggedCache(CacheView):
    """The chunk cache, with the adjustment (and the number of actions applied) in the keys of
    symbols that have adjusted bars; raw bars keep their keys (and are shared with raw pages)."""

    def __init__(self, cache, market: _AdjustedMarket):
        super().__init__(cache)
        self._market = market

    def _key(self, key: tuple) -> tuple:
        kind, code, symbol, period = key
        tag = self._market.tag(symbol)
        return key if tag is None else (kind, f"{code}|{tag}", symbol, period)
