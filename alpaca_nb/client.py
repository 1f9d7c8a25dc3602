"""The :class:`Alpaca` façade: every REST helper as a pandas object.

The work happens elsewhere: :mod:`alpaca_nb._http` sends requests, :mod:`alpaca_nb.frames`
builds frames, :mod:`alpaca_nb.orders` validates and places orders, :mod:`alpaca_nb._marketdata`
downloads market data with :mod:`alpaca_nb.cache`. Times given by the user may be ``str``,
``datetime.date``, ``datetime.datetime`` or ``pd.Timestamp``; naive ones mean America/New_York.
Timestamps in results are tz-aware UTC unless ``tz=`` asks for another zone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd

from . import frames
from . import orders as _orders
from ._args import (
    parse_choice,
    parse_positive_int,
    parse_symbol,
    parse_symbols,
    parse_time,
    parse_tz,
)
from ._config import Settings, mask_key_id
from ._corporate import TYPES as CORPORATE_ACTION_TYPES
from ._corporate import actions_frame, fetch_actions
from ._http import Transport
from ._marketdata import (
    MarketData,
    series_request,
    server_label,
    server_now_from_status,
)
from .errors import AlpacaError, OrderValidationError

log = logging.getLogger(__name__)

__all__ = ["Alpaca"]

ORDER_STATUSES = ("open", "closed", "all")
ORDERS_PAGE = 500          # Alpaca's maximum page size for GET /v2/orders
ACTIVITIES_PAGE = 100      # and for GET /v2/account/activities


class Alpaca:
    """A connection to one Alpaca environment (sandbox, paper or live). Make one with
    :func:`alpaca_nb.connect`.

    Args:
        settings: resolved credentials and endpoints.
        timeout: (connect, read) seconds per request attempt.
        retries: attempts per idempotent request (GET/DELETE) and per order submission round.
    """

    def __init__(self, settings: Settings, *, timeout: tuple[float, float] = (5.0, 30.0), retries: int = 5):
        self._settings = settings
        self._transport = Transport(settings, timeout=timeout, max_attempts=retries)
        self._retries = retries
        self._guard = _orders.Guard(settings.max_order_notional, settings.max_order_qty,
                                    settings.price_collar)
        self._market = MarketData(self._transport, server_info=self._server_info)
        self._status_cache: dict[str, Any] | None = None

    # ------------------------------------------------------------------ identity
    @property
    def mode(self) -> str:
        """``"sandbox"``, ``"paper"`` or ``"live"``."""
        return self._settings.mode

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def guard(self) -> _orders.Guard:
        """The pre-trade limits in force (see :class:`alpaca_nb.orders.Guard`)."""
        return self._guard

    def __repr__(self) -> str:
        return (f"<Alpaca mode={self.mode} base_url={self._settings.base_url} "
                f"key_id={mask_key_id(self._settings.key_id)}>")

    def __reduce__(self):
        raise TypeError("an Alpaca client holds credentials and cannot be pickled; call "
                        "anb.connect() in the other process")

    def close(self) -> None:
        """Close the connection pool (the client can still be used; it reconnects)."""
        self._transport.close()

    def __enter__(self) -> Alpaca:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ account
    def account(self) -> pd.Series:
        """The account: money fields as float64, times tz-aware UTC (GET /v2/account)."""
        body = self._transport.trading("GET", "/v2/account")
        return frames.record_series(body, frames.ACCOUNT, name="account")

    def positions(self, *, tz: str | None = None) -> pd.DataFrame:
        """Open positions indexed by symbol; numeric columns float64 (shorts have negative qty)."""
        return frames.records_frame(self._transport.trading("GET", "/v2/positions"), frames.POSITION,
                                    tz=parse_tz(tz))

    def position(self, symbol: str) -> pd.Series:
        """One open position. Raises NotFoundError when there is none."""
        symbol = parse_symbol(symbol)
        body = self._transport.trading("GET", f"/v2/positions/{symbol}")
        return frames.record_series(body, frames.POSITION, name=symbol)

    def orders(self, status: str = "open", limit: int | None = None, after: Any = None,
               until: Any = None, symbols: Any = None, nested: bool = False, *,
               side: str | None = None, tz: str | None = None) -> pd.DataFrame:
        """Orders, newest first, indexed by id.

        Args:
            status: "open", "closed" or "all".
            limit: at most this many (None: all of them, fetched 500 at a time).
            after, until: submission-time bounds (exclusive); naive times are New York time.
            symbols: only these symbols.
            nested: put the legs of bracket/oco/oto orders in rows of their own after their
                parent, with ``parent_id`` set.
            side: "buy" or "sell".
        """
        status = parse_choice(status, name="status", choices=ORDER_STATUSES)
        limit = parse_positive_int(limit, name="limit")
        side = parse_choice(side, name="side", choices=_orders.SIDES, allow_none=True)
        after_ns, until_ns = parse_time(after, name="after"), parse_time(until, name="until")
        params: dict[str, Any] = {"status": status, "nested": bool(nested), "direction": "desc",
                                  "symbols": parse_symbols(symbols) if symbols is not None else None,
                                  "side": side, "after": _iso(after_ns)}
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        cursor = _iso(until_ns)
        while True:
            want = ORDERS_PAGE if limit is None else min(ORDERS_PAGE, limit - len(out))
            page = self._transport.trading("GET", "/v2/orders", params={**params, "limit": want, "until": cursor}) or []
            fresh = [o for o in page if o.get("id") not in seen]
            seen.update(o.get("id") for o in fresh)
            out.extend(fresh)
            if len(page) < want or not fresh or (limit is not None and len(out) >= limit):
                break
            # the next page: orders submitted up to the oldest one seen (ids dedupe the overlap)
            oldest = pd.Timestamp(page[-1].get("submitted_at") or page[-1].get("created_at"))
            cursor = rfc3339_us(oldest + pd.Timedelta(microseconds=1))
        return frames.orders_frame(out[:limit] if limit else out, nested=nested, tz=parse_tz(tz))

    def order(self, order_id: str | None = None, client_order_id: str | None = None, *,
              tz: str | None = None) -> pd.Series:
        """One order by id or by client_order_id (exactly one). Legs are in ``.attrs["legs"]``.

        Raises:
            ValueError: neither or both ids given. NotFoundError: no such order.
        """
        if (order_id is None) == (client_order_id is None):
            raise ValueError("give exactly one of order_id or client_order_id")
        if order_id is not None:
            body = self._transport.trading("GET", f"/v2/orders/{_id(order_id, 'order_id')}",
                                           params={"nested": True})
        else:
            body = self._transport.trading("GET", "/v2/orders:by_client_order_id",
                                           params={"client_order_id": _id(client_order_id, "client_order_id")})
        return frames.order_series(body, tz=parse_tz(tz))

    def assets(self, status: str | None = "active", asset_class: str = "us_equity", *,
               exchange: str | None = None) -> pd.DataFrame:
        """Tradable instruments indexed by symbol (GET /v2/assets). ``status=None`` lists all."""
        status = parse_choice(status, name="status", choices=("active", "inactive"), allow_none=True)
        asset_class = parse_choice(asset_class, name="asset_class", choices=("us_equity", "us_option", "crypto"))
        body = self._transport.trading("GET", "/v2/assets", params={
            "status": status, "asset_class": asset_class, "exchange": exchange})
        return frames.records_frame(body, frames.ASSET)

    def asset(self, symbol: str) -> pd.Series:
        """One asset by symbol (or asset id). Raises NotFoundError when unknown."""
        key = symbol if _looks_like_uuid(symbol) else parse_symbol(symbol)
        body = self._transport.trading("GET", f"/v2/assets/{key}")
        return frames.record_series(body, frames.ASSET, name=body.get("symbol"))

    def clock(self, *, tz: str | None = None) -> pd.Series:
        """Market clock: timestamp, is_open, next_open, next_close (tz-aware, UTC by default)."""
        body = self._transport.trading("GET", "/v2/clock")
        return frames.record_series(body, frames.CLOCK, tz=parse_tz(tz), name="clock")

    def calendar(self, start: Any = None, end: Any = None, *, tz: str | None = None) -> pd.DataFrame:
        """Trading days between start and end (inclusive New York dates), indexed by date, with
        the regular open/close and extended session_open/session_close as timestamps."""
        params = {"start": _ny_day(start, "start"), "end": _ny_day(end, "end", end=True)}
        return frames.calendar_frame(self._transport.trading("GET", "/v2/calendar", params=params),
                                     tz=parse_tz(tz))

    def activities(self, activity_types: Any = None, *, date: Any = None, after: Any = None,
                   until: Any = None, direction: str = "desc", limit: int | None = None,
                   tz: str | None = None) -> pd.DataFrame:
        """Account activities (fills, dividends, fees...) indexed by id, all pages.

        Args:
            activity_types: e.g. "FILL" or ["FILL", "DIV"] (None: all types).
            date: one New York date; or after/until bounds (naive = New York time).
            direction: "desc" (newest first) or "asc".
            limit: stop after this many.
        """
        types = None
        if activity_types is not None:
            raw = activity_types.split(",") if isinstance(activity_types, str) else list(activity_types)
            types = [str(t).strip().upper() for t in raw if str(t).strip()]
            if not types or not all(t.isalpha() for t in types):
                raise ValueError(f"activity_types must be names such as 'FILL' or ['FILL', 'DIV']; got {activity_types!r}")
        if date is not None and (after is not None or until is not None):
            raise ValueError("give date, or after/until, not both")
        direction = parse_choice(direction, name="direction", choices=("asc", "desc"))
        limit = parse_positive_int(limit, name="limit")
        params: dict[str, Any] = {"activity_types": types, "direction": direction,
                                  "date": _ny_day(date, "date"),
                                  "after": _iso(parse_time(after, name="after")),
                                  "until": _iso(parse_time(until, name="until", end=True)),
                                  "page_size": ACTIVITIES_PAGE}
        out: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._transport.trading("GET", "/v2/account/activities",
                                           params={**params, "page_token": token}) or []
            out.extend(page)
            if len(page) < ACTIVITIES_PAGE or (limit is not None and len(out) >= limit):
                break
            token = page[-1].get("id")
            if not token:
                break
        return frames.records_frame(out[:limit] if limit else out, frames.ACTIVITY, tz=parse_tz(tz))

    def portfolio_history(self, period: str | None = None, timeframe: str | None = None, *,
                          start: Any = None, end: Any = None, intraday_reporting: str | None = None,
                          pnl_reset: str | None = None, tz: str | None = None) -> pd.DataFrame:
        """Equity and profit/loss over time, indexed by timestamp (GET
        /v2/account/portfolio/history). ``period`` like "1M", "1W", "1A"; ``timeframe`` one of
        1Min, 5Min, 15Min, 1H, 1D. ``attrs`` carries base_value and timeframe."""
        if period is not None and (not isinstance(period, str) or not period[:-1].isdigit()
                                   or period[-1:].upper() not in "DWMA" or not period[-1:]):
            raise ValueError(f"period must look like '1D', '2W', '1M' or '1A'; got {period!r}")
        if timeframe is not None and timeframe not in ("1Min", "5Min", "15Min", "1H", "1D"):
            raise ValueError(f"timeframe must be one of 1Min, 5Min, 15Min, 1H, 1D; got {timeframe!r}")
        params = {"period": period, "timeframe": timeframe,
                  "start": _iso(parse_time(start, name="start")),
                  "end": _iso(parse_time(end, name="end", end=True)),
                  "intraday_reporting": parse_choice(intraday_reporting, name="intraday_reporting",
                                                     choices=("market_hours", "extended_hours", "continuous"),
                                                     allow_none=True),
                  "pnl_reset": parse_choice(pnl_reset, name="pnl_reset", choices=("per_day", "no_reset"),
                                            allow_none=True)}
        body = self._transport.trading("GET", "/v2/account/portfolio/history", params=params)
        return frames.portfolio_history_frame(body, tz=parse_tz(tz))

    # ------------------------------------------------------------------ market data
    def bars(self, symbols: Any, timeframe: str = "1Day", start: Any = None, end: Any = None, *,
             adjustment: str = "raw", feed: str | None = None, limit: int | None = None,
             tz: str | None = None, cache: bool = True, progress: bool | None = None) -> pd.DataFrame:
        """Historical bars, all pages, as one frame.

        Args:
            symbols: "AAPL", "AAPL,MSFT" or a list.
            timeframe: "1Min".."59Min", "1Hour".."23Hour", "1Day", "1Week", "1Month"...
            start, end: inclusive bounds; str, date, datetime or pd.Timestamp. Naive times mean
                America/New_York; a date means that whole New York day. ``start=None`` is the
                server's default (the start of today).
            adjustment: "raw", "split", "dividend", "spin-off" or "all" (comma-combinable).
            feed: "sip", "iex", ... (None: the connection's feed, else the server's default).
            limit: at most this many bars in total (bypasses the cache).
            tz: time zone of the timestamp level (default UTC).
            cache: read and fill the on-disk cache of finished days (see alpaca_nb.cache).
            progress: tqdm progress bar (None: only for multi-page downloads; False: never).

        Returns:
            DataFrame with a (symbol, timestamp) MultiIndex and float64 columns open, high, low,
            close, volume, trade_count, vwap (the same columns for empty answers).

        Raises:
            ValueError/TypeError for bad arguments; AlpacaError subclasses for error answers
            (with the rows received so far in ``.partial`` when a download fails midway).
        """
        req = series_request("bars", symbols, timeframe=timeframe, start=start, end=end,
                             adjustment=adjustment, feed=feed or self._settings.feed, limit=limit)
        return self._market.series(req, tz=tz, cache=cache, progress=progress)

    def trades(self, symbols: Any, start: Any = None, end: Any = None, *, feed: str | None = None,
               limit: int | None = None, tz: str | None = None, progress: bool | None = None) -> pd.DataFrame:
        """Historical trades (same rules as :meth:`bars`; never cached). Columns: price, size,
        exchange, id, conditions, tape."""
        req = series_request("trades", symbols, start=start, end=end, feed=feed or self._settings.feed,
                             limit=limit)
        return self._market.series(req, tz=tz, cache=False, progress=progress)

    def quotes(self, symbols: Any, start: Any = None, end: Any = None, *, feed: str | None = None,
               limit: int | None = None, tz: str | None = None, progress: bool | None = None) -> pd.DataFrame:
        """Historical quotes (same rules as :meth:`bars`; never cached). Columns: bid_price,
        bid_size, bid_exchange, ask_price, ask_size, ask_exchange, conditions, tape."""
        req = series_request("quotes", symbols, start=start, end=end, feed=feed or self._settings.feed,
                             limit=limit)
        return self._market.series(req, tz=tz, cache=False, progress=progress)

    def iter_bars(self, symbols: Any, timeframe: str = "1Day", start: Any = None, end: Any = None, *,
                  adjustment: str = "raw", feed: str | None = None, limit: int | None = None,
                  tz: str | None = None, progress: bool | None = False) -> Iterator[pd.DataFrame]:
        """:meth:`bars` page by page: yields one frame per downloaded page (same columns and
        dtypes), for work that does not need everything in memory at once. Not cached."""
        req = series_request("bars", symbols, timeframe=timeframe, start=start, end=end,
                             adjustment=adjustment, feed=feed or self._settings.feed, limit=limit)
        return self._market.pages(req, tz=tz, progress=progress)

    def iter_trades(self, symbols: Any, start: Any = None, end: Any = None, *, feed: str | None = None,
                    limit: int | None = None, tz: str | None = None,
                    progress: bool | None = False) -> Iterator[pd.DataFrame]:
        """:meth:`trades` page by page."""
        req = series_request("trades", symbols, start=start, end=end, feed=feed or self._settings.feed, limit=limit)
        return self._market.pages(req, tz=tz, progress=progress)

    def iter_quotes(self, symbols: Any, start: Any = None, end: Any = None, *, feed: str | None = None,
                    limit: int | None = None, tz: str | None = None,
                    progress: bool | None = False) -> Iterator[pd.DataFrame]:
        """:meth:`quotes` page by page."""
        req = series_request("quotes", symbols, start=start, end=end, feed=feed or self._settings.feed, limit=limit)
        return self._market.pages(req, tz=tz, progress=progress)

    def latest_bars(self, symbols: Any, *, feed: str | None = None, tz: str | None = None) -> pd.DataFrame:
        """The latest minute bar per symbol, indexed by symbol (NA rows where there is none)."""
        return self._market.latest("bars", symbols, feed=feed or self._settings.feed, tz=tz)

    def latest_trades(self, symbols: Any, *, feed: str | None = None, tz: str | None = None) -> pd.DataFrame:
        """The latest trade per symbol, indexed by symbol."""
        return self._market.latest("trades", symbols, feed=feed or self._settings.feed, tz=tz)

    def latest_quotes(self, symbols: Any, *, feed: str | None = None, tz: str | None = None) -> pd.DataFrame:
        """The latest quote per symbol, indexed by symbol."""
        return self._market.latest("quotes", symbols, feed=feed or self._settings.feed, tz=tz)

    def snapshots(self, symbols: Any, *, feed: str | None = None, tz: str | None = None) -> pd.DataFrame:
        """Latest trade, quote, minute bar, daily bar and previous daily bar per symbol, flattened
        into columns (trade_*, bid_*/ask_*, minute_*, daily_*, prev_daily_*)."""
        return self._market.snapshots(symbols, feed=feed or self._settings.feed, tz=tz)

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

    # ------------------------------------------------------------------ orders
    def submit_order(self, symbol: str, qty: Any = None, side: str = "buy", type: str = "market",
                     time_in_force: str = "day", *, notional: Any = None, limit_price: Any = None,
                     stop_price: Any = None, trail_price: Any = None, trail_percent: Any = None,
                     extended_hours: bool = False, order_class: str | None = None,
                     take_profit: Any = None, stop_loss: Any = None,
                     client_order_id: str | None = None, position_intent: str | None = None) -> pd.Series:
        """Validate, check against the pre-trade guard, and place an order exactly once.

        Args:
            symbol: e.g. "AAPL". qty: shares, or notional: dollars (exactly one).
            side: "buy"/"sell". type: market, limit, stop, stop_limit, trailing_stop.
            time_in_force: day, gtc, opg, cls, ioc, fok.
            limit_price, stop_price: for limit/stop_limit and stop/stop_limit orders.
            trail_price, trail_percent: one of them for trailing_stop orders.
            extended_hours: limit orders with day/gtc only.
            order_class: "bracket", "oco", "oto" (default simple), with take_profit (a limit
                price or {"limit_price": x}) and stop_loss (a stop price or {"stop_price": x,
                "limit_price": y}).
            client_order_id: your idempotency key (a uuid4 is generated when not given).

        Returns:
            The order as a Series (its legs in ``.attrs["legs"]``).

        Raises:
            OrderValidationError: a bad argument (nothing sent).
            PreTradeCheckError: the guard refused it (nothing sent).
            InsufficientBuyingPower/ForbiddenError/UnprocessableError: Alpaca refused it.
            AlpacaError: the server could not be reached; the message says whether an order exists.
        """
        body = _orders.order_body(symbol, qty, side, type, time_in_force, notional=notional,
                                  limit_price=limit_price, stop_price=stop_price,
                                  trail_price=trail_price, trail_percent=trail_percent,
                                  extended_hours=extended_hours, order_class=order_class,
                                  take_profit=take_profit, stop_loss=stop_loss,
                                  client_order_id=client_order_id, position_intent=position_intent)
        self.check_order(body)
        placed = _orders.place(self._transport, body, rounds=self._retries)
        return frames.order_series(placed)

    def check_order(self, body: dict[str, Any], *, replacing: dict[str, Any] | None = None) -> None:
        """Run the pre-trade guard on an order body (from alpaca_nb.orders.order_body); raises
        PreTradeCheckError. ``replacing``: the open order being replaced. Widgets and Excel call
        this through submit_order."""
        self._guard.check(body, last_price=self._market.last_trade_price, buying_power=self._buying_power,
                          position_qty=lambda symbol: _orders.position_qty(self._transport, symbol),
                          replacing=replacing)

    def buy(self, symbol: str, qty: Any = None, **kw: Any) -> pd.Series:
        """submit_order(symbol, qty, side="buy", **kw)."""
        return self.submit_order(symbol, qty, "buy", **kw)

    def sell(self, symbol: str, qty: Any = None, **kw: Any) -> pd.Series:
        """submit_order(symbol, qty, side="sell", **kw)."""
        return self.submit_order(symbol, qty, "sell", **kw)

    def replace_order(self, order_id: str, *, qty: Any = None, time_in_force: str | None = None,
                      limit_price: Any = None, stop_price: Any = None, trail: Any = None,
                      client_order_id: str | None = None) -> pd.Series:
        """Change an open order (PATCH /v2/orders/{id}); returns the new order (Alpaca gives it a
        new id). The new quantity/prices pass the pre-trade guard first. Not retried blindly:
        if the answer is lost, look the order up before trying again."""
        order_id = _id(order_id, "order_id")
        body = _orders.replace_body(qty=qty, time_in_force=time_in_force, limit_price=limit_price,
                                    stop_price=stop_price, trail=trail, client_order_id=client_order_id)
        if {"qty", "limit_price", "stop_price"} & set(body):
            current = self._transport.trading("GET", f"/v2/orders/{order_id}")
            merged = {"symbol": current.get("symbol"), "side": current.get("side"),
                      "type": current.get("type"), "qty": body.get("qty", current.get("qty"))}
            for key in ("limit_price", "stop_price"):
                if body.get(key, current.get(key)) is not None:
                    merged[key] = body.get(key, current.get(key))
            if merged["qty"] is None:
                merged.pop("qty")
                merged["notional"] = current.get("notional")
            self.check_order(merged, replacing=current)
        new = self._transport.trading("PATCH", f"/v2/orders/{order_id}", json=body)
        return frames.order_series(new)

    def cancel_order(self, order_id: str) -> None:
        """Request cancellation (DELETE /v2/orders/{id}; asynchronous on Alpaca's side).
        Raises NotFoundError or UnprocessableError (not cancelable)."""
        self._transport.trading("DELETE", f"/v2/orders/{_id(order_id, 'order_id')}")

    def cancel_all_orders(self) -> pd.DataFrame:
        """Cancel every open order; one row per order: id, status (HTTP), code, message."""
        body = self._transport.trading("DELETE", "/v2/orders") or []
        return _multi_status(body, "id")

    def close_position(self, symbol: str, qty: Any = None, percentage: Any = None) -> pd.Series:
        """Close all of a position, ``qty`` shares of it, or ``percentage`` (0-100) of it, with a
        market order; returns that order."""
        symbol = parse_symbol(symbol)
        if qty is not None and percentage is not None:
            raise OrderValidationError("give qty or percentage, not both")
        params: dict[str, Any] = {}
        if qty is not None:
            params["qty"] = _orders._wire(_orders.decimal(qty, "qty"))
        if percentage is not None:
            pct = _orders.decimal(percentage, "percentage")
            if pct > 100:
                raise OrderValidationError(f"percentage must be between 0 and 100; got {percentage!r}")
            params["percentage"] = _orders._wire(pct)
        order = self._transport.trading("DELETE", f"/v2/positions/{symbol}", params=params or None, retry=False)
        return frames.order_series(order)

    def close_all_positions(self, cancel_orders: bool = True) -> pd.DataFrame:
        """Close every position (and first cancel open orders unless ``cancel_orders=False``);
        one row per symbol: status (HTTP), order_id, code, message."""
        body = self._transport.trading("DELETE", "/v2/positions", params={"cancel_orders": bool(cancel_orders)},
                                       retry=False) or []
        return _multi_status(body, "symbol")

    # ------------------------------------------------------------------ streaming
    def stream(self, quotes: Any = None, trades: Any = None, bars: Any = None, trade_updates: bool = False,
               feed: str | None = None, *, updated_bars: Any = None, daily_bars: Any = None,
               statuses: Any = None, reconnect: Any = None, timeout: float = 10.0) -> Any:
        """A live stream in a background thread (see :mod:`alpaca_nb.stream`): tables, callbacks,
        notebook display and, with ``trade_updates=True``, the session's order book.

        Symbols are a list, one symbol or "AAPL,MSFT" ("*" = all). Returns once connected.
        Raises ValueError/TypeError for bad arguments, AuthenticationError for refused keys,
        AlpacaConnectionError when the endpoint cannot be reached within ``timeout`` seconds.
        """
        from .stream import (
            open_stream,  # lazily: the client does not depend on the stream module
        )

        return open_stream(self._settings, quotes=quotes, trades=trades, bars=bars,
                           updated_bars=updated_bars, daily_bars=daily_bars, statuses=statuses,
                           trade_updates=trade_updates, feed=feed, data_rest=self._transport.data,
                           trading_rest=self._transport.trading, reconnect=reconnect, timeout=timeout)

    def trade_updates(self, callback: Any = None, *, max_hz: float | None = None, timeout: float = 10.0) -> Any:
        """A stream of this account's trade updates only; ``callback(update)`` is called for each
        (see ``Stream.on("trade_update", ...)``). Its ``orders.df`` is the session's order book."""
        stream = self.stream(trade_updates=True, timeout=timeout)
        if callback is not None:
            try:
                stream.on("trade_update", callback, max_hz=max_hz)
            except BaseException:
                stream.close()
                raise
        return stream

    # ------------------------------------------------------------------ internals
    def _buying_power(self) -> float | None:
        value = (self._transport.trading("GET", "/v2/account") or {}).get("buying_power")
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    def _server_info(self) -> tuple[str, int] | None:
        """(cache name of the data source, server time ns) for the bar cache."""
        status = None
        if self.mode == "sandbox":
            try:
                status = self._transport.request("GET", self._settings.base_url + "/sandbox/status")
            except AlpacaError as exc:
                log.info("sandbox status unavailable (%s); bars are not cached", exc)
                return None
        label = server_label(self._settings, status)
        return None if label is None else (label, server_now_from_status(status))


def _multi_status(body: list[dict[str, Any]], key: str) -> pd.DataFrame:
    """A 207 multi-status answer as a frame (no secret, no nested objects)."""
    rows = []
    for item in body:
        inner = item.get("body") if isinstance(item.get("body"), dict) else {}
        rows.append({key: item.get(key), "status": item.get("status"),
                     "order_id": inner.get("id") if key == "symbol" else item.get("id"),
                     "code": inner.get("code"), "message": inner.get("message")})
    frame = pd.DataFrame(rows, columns=[key, "status", "order_id", "code", "message"])
    frame = frame.astype({key: "str", "status": "Int64", "order_id": "str", "code": "Int64", "message": "str"})
    return frame.drop(columns=["order_id"]) if key == "id" else frame


def _iso(ns: int | None) -> str | None:
    return None if ns is None else rfc3339_us(pd.Timestamp(ns, tz="UTC"))


def rfc3339_us(ts: pd.Timestamp) -> str:
    """RFC-3339 UTC with microseconds when needed (``2024-01-02T14:30:00.000001Z``)."""
    ts = ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ts.microsecond:06d}Z" if ts.microsecond else "Z")


def _ny_day(value: Any, name: str, *, end: bool = False) -> str | None:
    """A New York date as YYYY-MM-DD for calendar/activities parameters."""
    ns = parse_time(value, name=name, end=end)
    if ns is None:
        return None
    return pd.Timestamp(ns, tz="UTC").tz_convert("America/New_York").strftime("%Y-%m-%d")


def _id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or "/" in value or "?" in value:
        raise ValueError(f"{name} must be an id string such as '61e69015-8549-4bfd-b9c3-01e75843f47d'; got {value!r}")
    return value.strip()


def _looks_like_uuid(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 36 and value.count("-") == 4

