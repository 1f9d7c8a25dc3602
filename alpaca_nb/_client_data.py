"""Market-data methods of :class:`~alpaca_nb.client.Alpaca`: bars, trades, quotes (whole or
page by page), latest values, snapshots, crypto order books and corporate actions.

:class:`MarketDataMixin` holds them; the downloading happens in :mod:`alpaca_nb._marketdata`
(with :mod:`alpaca_nb.cache`) and :mod:`alpaca_nb._corporate`. It expects the ``_settings``,
``_transport`` and ``_market`` attributes that :class:`~alpaca_nb.client.Alpaca` sets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from ._args import ny_date, parse_symbols, parse_time
from ._corporate import TYPES as CORPORATE_ACTION_TYPES
from ._corporate import actions_frame, fetch_actions
from ._marketdata import series_request

__all__ = ["MarketDataMixin"]


class MarketDataMixin:
    """The market-data half of :class:`~alpaca_nb.client.Alpaca`."""

    def bars(self, symbols: Any, timeframe: str = "1Day", start: Any = None, end: Any = None, *,
             adjustment: str = "raw", feed: str | None = None, limit: int | None = None,
             tz: str | None = None, cache: bool = True, progress: bool | None = None,
             loc: str = "us") -> pd.DataFrame:
        """Historical bars, all pages, as one frame.

        Args:
            symbols: "AAPL", "AAPL,MSFT" or a list; crypto pairs ("BTC/USD") too, alone or mixed
                with stocks (one frame, the same columns; crypto volume is fractional).
            timeframe: "1Min".."59Min", "1Hour".."23Hour", "1Day", "1Week", "1Month"...
            start, end: inclusive bounds; str, date, datetime or pd.Timestamp. Naive times mean
                America/New_York; a date means that whole New York day. ``start=None`` is the
                server's default (the start of today).
            adjustment: "raw", "split", "dividend", "spin-off" or "all" (comma-combinable); stocks
                only (crypto has no corporate actions: it is not sent for crypto pairs).
            feed: "sip", "iex", ... (None: the connection's feed, else the server's default);
                stocks only (not sent for crypto pairs, whose source is ``loc``).
            limit: at most this many bars in total (bypasses the cache).
            tz: time zone of the timestamp level (default UTC).
            cache: read and fill the on-disk cache of finished days (see alpaca_nb.cache; New
                York days for stocks, UTC days for crypto, which trades 24/7).
            progress: tqdm progress bar (None: only for multi-page downloads; False: never).
            loc: the crypto data location: "us" (Alpaca), "us-1" (Kraken), "us-2", "bs-1".

        Returns:
            DataFrame with a (symbol, timestamp) MultiIndex and float64 columns open, high, low,
            close, volume, trade_count, vwap (the same columns for empty answers).

        Raises:
            ValueError/TypeError for bad arguments; AlpacaError subclasses for error answers
            (with the rows received so far in ``.partial`` when a download fails midway).
        """
        req = series_request("bars", symbols, timeframe=timeframe, start=start, end=end,
                             adjustment=adjustment, feed=feed or self._settings.feed, limit=limit, loc=loc)
        return self._market.series(req, tz=tz, cache=cache, progress=progress)

    def trades(self, symbols: Any, start: Any = None, end: Any = None, *, feed: str | None = None,
               limit: int | None = None, tz: str | None = None, progress: bool | None = None,
               loc: str = "us") -> pd.DataFrame:
        """Historical trades (same rules as :meth:`bars`; never cached). Columns: price, size,
        exchange, id, conditions, tape, and taker_side ("B"/"S", NA for stocks) when a crypto
        pair is asked for."""
        req = series_request("trades", symbols, start=start, end=end, feed=feed or self._settings.feed,
                             limit=limit, loc=loc)
        return self._market.series(req, tz=tz, cache=False, progress=progress)

    def quotes(self, symbols: Any, start: Any = None, end: Any = None, *, feed: str | None = None,
               limit: int | None = None, tz: str | None = None, progress: bool | None = None,
               loc: str = "us") -> pd.DataFrame:
        """Historical quotes (same rules as :meth:`bars`; never cached). Columns: bid_price,
        bid_size, bid_exchange, ask_price, ask_size, ask_exchange, conditions, tape (the
        exchanges, conditions and tape are NA for crypto pairs)."""
        req = series_request("quotes", symbols, start=start, end=end, feed=feed or self._settings.feed,
                             limit=limit, loc=loc)
        return self._market.series(req, tz=tz, cache=False, progress=progress)

    def iter_bars(self, symbols: Any, timeframe: str = "1Day", start: Any = None, end: Any = None, *,
                  adjustment: str = "raw", feed: str | None = None, limit: int | None = None,
                  tz: str | None = None, progress: bool | None = False,
                  loc: str = "us") -> Iterator[pd.DataFrame]:
        """:meth:`bars` page by page: yields one frame per downloaded page (same columns and
        dtypes), for work that does not need everything in memory at once. Not cached."""
        req = series_request("bars", symbols, timeframe=timeframe, start=start, end=end,
                             adjustment=adjustment, feed=feed or self._settings.feed, limit=limit, loc=loc)
        return self._market.pages(req, tz=tz, progress=progress)

    def iter_trades(self, symbols: Any, start: Any = None, end: Any = None, *, feed: str | None = None,
                    limit: int | None = None, tz: str | None = None,
                    progress: bool | None = False, loc: str = "us") -> Iterator[pd.DataFrame]:
        """:meth:`trades` page by page."""
        req = series_request("trades", symbols, start=start, end=end, feed=feed or self._settings.feed,
                             limit=limit, loc=loc)
        return self._market.pages(req, tz=tz, progress=progress)

    def iter_quotes(self, symbols: Any, start: Any = None, end: Any = None, *, feed: str | None = None,
                    limit: int | None = None, tz: str | None = None,
                    progress: bool | None = False, loc: str = "us") -> Iterator[pd.DataFrame]:
        """:meth:`quotes` page by page."""
        req = series_request("quotes", symbols, start=start, end=end, feed=feed or self._settings.feed,
                             limit=limit, loc=loc)
        return self._market.pages(req, tz=tz, progress=progress)

    def latest_bars(self, symbols: Any, *, feed: str | None = None, tz: str | None = None,
                    loc: str = "us") -> pd.DataFrame:
        """The latest minute bar per symbol, indexed by symbol (NA rows where there is none). Stocks and crypto pairs (see :meth:`bars`)."""
        return self._market.latest("bars", symbols, feed=feed or self._settings.feed, loc=loc, tz=tz)

    def latest_trades(self, symbols: Any, *, feed: str | None = None, tz: str | None = None,
                    loc: str = "us") -> pd.DataFrame:
        """The latest trade per symbol, indexed by symbol. Stocks and crypto pairs (see :meth:`bars`)."""
        return self._market.latest("trades", symbols, feed=feed or self._settings.feed, loc=loc, tz=tz)

    def latest_quotes(self, symbols: Any, *, feed: str | None = None, tz: str | None = None,
                    loc: str = "us") -> pd.DataFrame:
        """The latest quote per symbol, indexed by symbol. Stocks and crypto pairs (see :meth:`bars`)."""
        return self._market.latest("quotes", symbols, feed=feed or self._settings.feed, loc=loc, tz=tz)

    def snapshots(self, symbols: Any, *, feed: str | None = None, tz: str | None = None,
                  loc: str = "us") -> pd.DataFrame:
        """Latest trade, quote, minute bar, daily bar and previous daily bar per symbol, flattened
        into columns (trade_*, bid_*/ask_*, minute_*, daily_*, prev_daily_*); stocks and crypto
        pairs (a crypto pair's daily bars are UTC days)."""
        return self._market.snapshots(symbols, feed=feed or self._settings.feed, loc=loc, tz=tz)

    def orderbook(self, symbols: Any, *, tz: str | None = None, loc: str = "us") -> pd.DataFrame:
        """The latest order book of crypto pairs, one row per price level.

        Returns:
            DataFrame with columns symbol, side ("bid"/"ask"), level (int64, 0 = best), price,
            size (float64), timestamp (the book's time; UTC unless ``tz``): symbols in the order
            asked, bids then asks, best first. The same columns when there is no book.

        Raises:
            ValueError: a stock symbol (order books are crypto only) or an unknown ``loc``.
        """
        return self._market.orderbooks(symbols, loc=loc, tz=tz)

    latest_orderbooks = orderbook

    def corporate_actions(self, symbols: Any = None, *, types: Any = None, start: Any = None,
                          end: Any = None, ids: Any = None) -> pd.DataFrame:
        """Corporate actions (splits, dividends, spin-offs, mergers...), all pages, as one frame
        with a fixed schema (columns type, symbol, ex_date, process_date, payable_date,
        record_date, effective_date, old_rate, new_rate, rate, cash, new_symbol, cusip,
        new_cusip, special, foreign, id; dates are New York dates; see
        :mod:`alpaca_nb._corporate` for how each type's fields map onto them).

        Args:
            symbols: "AAPL", "AAPL,MSFT" or a list (None: every symbol).
            types: e.g. "forward_split" or ["cash_dividend", "reverse_split"] (None: all).
            start, end: inclusive New York dates (str, date, datetime); Alpaca selects by
                process date and defaults both to today.
            ids: action ids; cannot be combined with the other filters.

        Raises:
            ValueError/TypeError for bad arguments; AlpacaError subclasses for error answers.
        """
        params: dict[str, Any] = {}
        if ids is not None:
            if any(x is not None for x in (symbols, types, start, end)):
                raise ValueError("ids cannot be combined with symbols, types, start or end")
            items = [ids] if isinstance(ids, str) else list(ids)
            params["ids"] = ",".join(_id(i, "ids") for i in items)
        else:
            if symbols is not None:
                params["symbols"] = ",".join(parse_symbols(symbols))
            if types is not None:
                names = types.split(",") if isinstance(types, str) else list(types)
                bad = [t for t in names if str(t).strip() not in CORPORATE_ACTION_TYPES]
                if bad or not names:
                    raise ValueError(f"types must be among {', '.join(CORPORATE_ACTION_TYPES)}; got {types!r}")
                params["types"] = ",".join(str(t).strip() for t in names)
            params["start"] = _ny_day(start, "start")
            params["end"] = _ny_day(end, "end", end=True)
        return actions_frame(fetch_actions(self._transport, params))


def _ny_day(value: Any, name: str, *, end: bool = False) -> str | None:
    """A New York date as YYYY-MM-DD for calendar/activities parameters."""
    ns = parse_time(value, name=name, end=end)
    return None if ns is None else ny_date(ns).isoformat()


def _id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or "/" in value or "?" in value:
        raise ValueError(f"{name} must be an id string such as '61e69015-8549-4bfd-b9c3-01e75843f47d'; got {value!r}")
    return value.strip()
