"""Views of the synthetic market and of the market-data chunk cache, the base of the IEX feed
(:mod:`._iex`) and of adjusted bars (:mod:`.adjusted`).

A :class:`MarketView` serves its own ``minute_bars``, ``day_bars`` and ``daily_bar``; whatever
else it does not define (sessions, assets, corporate actions ...) is the market's, and the
market's bar methods that build on those three run on the view, so they aggregate the view's
bars. A :class:`CacheView` is the chunk cache with its keys rewritten by :meth:`CacheView._key`.
"""

from __future__ import annotations

from .market import Market

__all__ = ["CacheView", "MarketView"]


class MarketView:
    """A market whose minute and daily bars a subclass defines (see the module docstring)."""

    def __init__(self, market: Market):
        self._market = market

    def __getattr__(self, name: str):
        return getattr(self._market, name)

    # the market's own methods, on the view's minute and daily bars
    visible_minutes = Market.visible_minutes
    intraday_bars = Market.intraday_bars
    today_bar = Market.today_bar
    daily_bars = Market.daily_bars
    period_bars = Market.period_bars


class CacheView:
    """The chunk cache with each key rewritten by :meth:`_key` (which a subclass defines)."""

    def __init__(self, cache):
        self._cache = cache

    def _key(self, key: tuple) -> tuple:
        raise NotImplementedError

    def __contains__(self, key: tuple) -> bool:
        return self._key(key) in self._cache

    def get(self, key: tuple):
        return self._cache.get(self._key(key))

    def put(self, key: tuple, chunk) -> None:
        self._cache.put(self._key(key), chunk)
