"""The :class:`Alpaca` façade: every REST helper as a pandas object.

The work happens elsewhere: :mod:`alpaca_nb._http` sends requests, :mod:`alpaca_nb.frames`
builds frames, :mod:`alpaca_nb.orders` validates and places orders, :mod:`alpaca_nb._settle`
settles requests whose answer was lost, :mod:`alpaca_nb._marketdata` downloads market data with
:mod:`alpaca_nb.cache`. The market-data methods live in :mod:`alpaca_nb._client_data` (a mixin
that :class:`Alpaca` inherits). Times given by the user may be ``str``,
``datetime.date``, ``datetime.datetime`` or ``pd.Timestamp``; naive ones mean America/New_York.
Timestamps in results are tz-aware UTC unless ``tz=`` asks for another zone.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
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
from ._client_data import MarketDataMixin, _id, _ny_day
from ._config import Settings, mask_key_id
from ._http import Transport
from ._marketdata import (
    MarketData,
    server_label,
    server_now_from_status,
)
from ._pretrade import PreTradeView
from ._settle import (
    _FINAL_STATUSES,
    NOT_ACTED,
    NOT_SEEN,
    Settler,
    _multi_status,
    created_since,
)
from .errors import (
    AlpacaError,
    OrderStateUnknown,
    OrderValidationError,
    PreTradeCheckError,
)

log = logging.getLogger(__name__)

__all__ = ["Alpaca"]

ORDER_STATUSES = ("open", "closed", "all")
ORDERS_PAGE = 500          # Alpaca's maximum page size for GET /v2/orders
ACTIVITIES_PAGE = 100      # and for GET /v2/account/activities


class Alpaca(MarketDataMixin):
    """A connection to one Alpaca environment (sandbox, paper or live). Make one with
    :func:`alpaca_nb.connect`.

    Args:
        settings: resolved credentials and endpoints.
        timeout: (connect, read) seconds per request attempt.
        retries: attempts per read (GET) and per order, cancel or close request.
        reconcile_timeout: seconds to keep looking for an order (a cancel, a close) whose answer
            was lost before resending it or declaring its state unknown.
    """

    def __init__(self, settings: Settings, *, timeout: tuple[float, float] = (5.0, 30.0), retries: int = 5,
                 reconcile_timeout: float = 5.0):
        self._settings = settings
        self._transport = Transport(settings, timeout=timeout, max_attempts=retries)
        self._retries = retries
        self._settler = Settler(self._transport, rounds=retries, window=reconcile_timeout)
        self._guard = _orders.Guard(settings.max_order_notional, settings.max_order_qty,
                                    settings.price_collar, settings.check_buying_power)
        self._market = MarketData(self._transport, server_info=self._server_info)
        self._known = PreTradeView(self._transport, self._market, ttl=settings.guard_cache)
        self._status_cache: dict[str, Any] | None = None
        self._crypto_assets: dict[str, dict[str, Any]] = {}

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
        """Tradable instruments indexed by symbol (GET /v2/assets). ``status=None`` lists all.

        The columns are the same for every asset class. ``min_order_size`` and
        ``min_trade_increment`` (coins) and ``price_increment`` (in the quote currency) are float64,
        set for crypto pairs (``asset_class="crypto"``) and NaN for stocks."""
        status = parse_choice(status, name="status", choices=("active", "inactive"), allow_none=True)
        asset_class = parse_choice(asset_class, name="asset_class", choices=("us_equity", "us_option", "crypto"))
        body = self._transport.trading("GET", "/v2/assets", params={
            "status": status, "asset_class": asset_class, "exchange": exchange})
        return frames.records_frame(body, frames.ASSET)

    def asset(self, symbol: str) -> pd.Series:
        """One asset by symbol (or asset id), with the columns of :meth:`assets` (a crypto pair's
        increments included). Raises NotFoundError when unknown."""
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

    # ------------------------------------------------------------------ orders
    def submit_order(self, symbol: str, qty: Any = None, side: str = "buy", type: str = "market",
                     time_in_force: str | None = None, *, notional: Any = None, limit_price: Any = None,
                     stop_price: Any = None, trail_price: Any = None, trail_percent: Any = None,
                     extended_hours: bool = False, order_class: str | None = None,
                     take_profit: Any = None, stop_loss: Any = None,
                     client_order_id: str | None = None, position_intent: str | None = None) -> pd.Series:
        """Validate, check against the pre-trade guard, and place an order exactly once.

        Args:
            symbol: e.g. "AAPL" or a crypto pair "BTC/USD". qty: shares (or coins, fractional
                to the pair's min_trade_increment), or notional: dollars (exactly one).
            side: "buy"/"sell". type: market, limit, stop, stop_limit, trailing_stop (crypto:
                market, limit, stop_limit).
            time_in_force: day, gtc, opg, cls, ioc, fok (crypto: gtc or ioc). None: "day" for
                stocks, "gtc" for crypto.
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
            PreTradeCheckError: the guard refused it (nothing sent); over the buying power it is
                an InsufficientBuyingPower too.
            InsufficientBuyingPower/ForbiddenError/UnprocessableError: Alpaca refused it (a
                client_order_id of another order: 422, code 40010001).
            OrderStateUnknown: the answer was lost and the order could not be seen within
                ``reconcile_timeout``; it may exist (``api.order(client_order_id=...)`` tells).
            AlpacaError: every attempt was refused with 429 or never reached the server
                (nothing placed).
        """
        body = _orders.order_body(symbol, qty, side, type, time_in_force, notional=notional,
                                  limit_price=limit_price, stop_price=stop_price,
                                  trail_price=trail_price, trail_percent=trail_percent,
                                  extended_hours=extended_hours, order_class=order_class,
                                  take_profit=take_profit, stop_loss=stop_loss,
                                  client_order_id=client_order_id, position_intent=position_intent)
        cost = self.check_order(body)
        self._known.sending(body)
        try:
            placed = _orders.place(self._transport, body, settler=self._settler)
        except OrderStateUnknown:
            self._known.forget()
            raise
        self._known.placed(body, cost)
        return frames.order_series(placed)

    def check_order(self, body: dict[str, Any], *, replacing: dict[str, Any] | None = None) -> float | None:
        """Run the checks made before sending on an order body (from alpaca_nb.orders.order_body):
        a new crypto order's qty and prices against its pair's increments (OrderValidationError;
        the asset is asked once per client), then the pre-trade guard (PreTradeCheckError).
        ``replacing``: the open order being replaced (``body["qty"]`` is then what remains to
        fill). submit_order runs it; Excel tickets run it when staging.

        Prices come from an open stream of this client when it carries the symbol, the buying
        power and positions from a few seconds' cache (``guard_cache``); a refusal that rests on
        cached figures is checked again with fresh ones. Returns the buying power the order takes
        by the guard's estimate (None when not worked out)."""
        if "/" in body["symbol"] and replacing is None:
            _orders.check_crypto_increments(body, self._crypto_asset(body["symbol"]))
        known = self._known

        def run() -> float | None:
            known.fresh_start()
            power = known.cash_buying_power if "/" in body["symbol"] else known.buying_power  # crypto: cash
            return self._guard.check(body, last_price=known.last_price, buying_power=power,
                                     position_qty=known.position_qty, replacing=replacing)
        try:
            return run()
        except PreTradeCheckError as exc:
            if exc.limit not in ("buying_power", "price_collar") or not known.forget():
                raise
            log.debug("the guard refused on cached figures (%s); checking again with fresh ones", exc.limit)
            return run()

    def _crypto_asset(self, symbol: str) -> dict[str, Any]:
        """A crypto pair's asset JSON (its increments), asked once per client."""
        asset = self._crypto_assets.get(symbol)
        if asset is None:
            asset = self._crypto_assets[symbol] = self._transport.trading("GET", f"/v2/assets/{symbol}") or {}
        return asset

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
        new id). The new quantity/prices pass the pre-trade guard first, valued on what remains
        to fill (``qty`` is the new total, as on Alpaca: the filled part counts in it). If the
        answer is lost, the old order is looked at: once it shows ``replaced_by``, that order is
        returned; the PATCH is sent again only while the old order is unchanged (an order can be
        replaced only once, so this cannot replace twice).

        Raises:
            PreTradeCheckError: the guard refused the change (nothing sent).
            UnprocessableError: Alpaca refused it (e.g. the order is no longer open).
            OrderStateUnknown: the answer was lost and the outcome could not be seen.
        """
        order_id = _id(order_id, "order_id")
        body = _orders.replace_body(qty=qty, time_in_force=time_in_force, limit_price=limit_price,
                                    stop_price=stop_price, trail=trail, client_order_id=client_order_id)
        if {"qty", "limit_price", "stop_price"} & set(body):
            current = self._transport.trading("GET", f"/v2/orders/{order_id}")
            self.check_order(_replacement(current, body), replacing=current)
        path = f"/v2/orders/{order_id}"

        def look() -> Any:
            old = self._transport.trading("GET", path)
            new_id = old.get("replaced_by")
            return self._transport.trading("GET", f"/v2/orders/{new_id}") if new_id else NOT_SEEN

        new, _ = self._settler.run(
            lambda: self._transport.trading("PATCH", path, json=body, retry=False), look=look, resend=True,
            unknown=lambda: (f"the replacement of order {order_id} is in an UNKNOWN state: its answer "
                             f"was lost and the order has not shown a replacement yet. Check with "
                             f"api.order({order_id!r}) (its replaced_by names the new order)."),
            nothing_done=f"{NOT_ACTED}; order {order_id} was not changed")
        self._known.forget()
        return frames.order_series(new)

    def cancel_order(self, order_id: str) -> None:
        """Request cancellation (DELETE /v2/orders/{id}; asynchronous on Alpaca's side).

        If the answer is lost, the order is looked at: canceled (or pending_cancel) means the
        cancel worked and this returns normally; still open, the DELETE is sent again.

        Raises:
            NotFoundError: no such order. UnprocessableError: not cancelable (already filled,
                canceled or expired before this call).
            OrderStateUnknown: the answer was lost and the outcome could not be seen.
        """
        path = f"/v2/orders/{_id(order_id, 'order_id')}"

        def look() -> Any:
            status = (self._transport.trading("GET", path) or {}).get("status")
            return None if status in ("canceled", "pending_cancel") else NOT_SEEN

        self._settler.run(
            lambda: self._transport.trading("DELETE", path, retry=False), look=look, resend=True,
            poll=False,
            unknown=lambda: (f"the cancel of order {order_id} is in an UNKNOWN state: its answer was "
                             f"lost. Check with api.order({order_id!r}).status."),
            nothing_done=f"{NOT_ACTED}; order {order_id} was not canceled")
        self._known.forget(positions=False)

    def cancel_all_orders(self) -> pd.DataFrame:
        """Cancel every open order; one row per order: id, status (HTTP), code, message, then the
        order's own fields when Alpaca sends them (order_status, symbol, qty, ...).

        The open orders are listed first (one GET): Alpaca cannot list orders by the time they
        were canceled, so what a DELETE whose answer was lost canceled can only be told from what
        was open before it. If the DELETE's answer is lost, their state
        is looked at: when none is open any more, the rows are those now canceled; otherwise the
        DELETE is sent again (repeating it cannot cancel more than "all") and the rows are its
        answer plus the listed orders that the lost one canceled.

        Raises:
            OrderStateUnknown: no answer ever came back and listed orders are still open.
        """
        listed = self._transport.trading("GET", "/v2/orders", params={"status": "open", "limit": ORDERS_PAGE,
                                                                      "direction": "asc"}) or []

        def canceled_since(answered: set[str]) -> tuple[list[dict[str, Any]], bool]:
            """Rows for listed orders now canceled (not in ``answered``), and whether any is open."""
            if not listed:
                return [], False
            oldest = min(pd.Timestamp(o.get("submitted_at") or o.get("created_at")) for o in listed)
            now = {o["id"]: o for o in self._transport.trading("GET", "/v2/orders", params={
                "status": "all", "limit": ORDERS_PAGE, "direction": "asc",
                "after": rfc3339_us(oldest - pd.Timedelta(microseconds=1))}) or []}
            rows, still_open = [], False
            for order in listed:
                current = now.get(order["id"], order)
                if current.get("status") in ("canceled", "pending_cancel") and order["id"] not in answered:
                    rows.append({"id": order["id"], "status": 200, "body": current})
                still_open = still_open or current.get("status") not in _FINAL_STATUSES
            return rows, still_open

        def look() -> Any:
            rows, still_open = canceled_since(set())
            return NOT_SEEN if still_open else ("found", rows)

        (kind, body), lost = self._settler.run(
            lambda: ("answer", self._transport.trading("DELETE", "/v2/orders", retry=False)), look=look,
            resend=True, poll=False,
            unknown=lambda: ("cancel-all is in an UNKNOWN state: no answer came back and some orders are "
                             "still open. Check with api.orders(status='open')."),
            nothing_done=f"{NOT_ACTED}; nothing was canceled")
        body = list(body or [])
        if lost and kind == "answer":           # a repeat answered: add what the lost one canceled
            body += canceled_since({item.get("id") for item in body})[0]
        self._known.forget(positions=False)
        return _multi_status(body, "id")

    def close_position(self, symbol: str, qty: Any = None, percentage: Any = None) -> pd.Series:
        """Close all of a position, ``qty`` shares of it, or ``percentage`` (0-100) of it, with a
        market order; returns that order.

        The closing order's client id is the server's, so if the answer is lost the client looks
        among this symbol's orders created since the call began for the closing market day order:
        of ``qty`` when given, on the side that reduces the position (when the position, kept or
        asked for once, is not already flat), and not one this client submitted itself. Two such
        orders (another program closing too) raise OrderStateUnknown rather than guess. Closing the whole position is sent again if
        none shows (a second close cannot sell what the first holds); a partial close never is.

        Raises:
            NotFoundError: no position. ForbiddenError: not enough quantity available.
            OrderStateUnknown: the answer was lost and the closing order could not be seen.
        """
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
        started = time.monotonic()
        since: list[pd.Timestamp] = []
        sides: list[str | None] = []
        path = f"/v2/positions/{symbol.replace('/', '')}"

        def look() -> Any:
            if not since:
                since.append(self._settler.server_since(started))
                held = self._known.position_qty(symbol)     # a close never flips the position's sign
                sides.append("sell" if held > 0 else "buy" if held < 0 else None)
            found = [o for o in self._recent_orders(since[0], symbols=[symbol])
                     if o.get("symbol") == symbol and _is_close_order(o, qty=params.get("qty"), side=sides[0])
                     and not self._known.is_own(o.get("client_order_id"))]
            if len(found) > 1:
                raise OrderStateUnknown(
                    f"closing {symbol}: the answer was lost and {len(found)} market orders for {symbol} "
                    f"were created since the call began ({', '.join(o['id'] for o in found)}); which one "
                    f"closes the position is not known. Check api.orders(status='all', symbols=[{symbol!r}]).")
            return found[0] if found else NOT_SEEN

        try:
            order, _ = self._settler.run(
                lambda: self._transport.trading("DELETE", path, params=params or None, retry=False),
                look=look, resend=not params,
                unknown=lambda: (f"closing {symbol} is in an UNKNOWN state: the answer was lost and no "
                                 f"closing order showed within {self._settler.window:g} s, but the server "
                                 f"may still create it. Check api.orders(status='all', symbols=[{symbol!r}]) "
                                 f"and api.position({symbol!r}) before closing again."),
                nothing_done=f"{NOT_ACTED}; the {symbol} position was not touched")
        finally:
            self._known.forget()
        return frames.order_series(order)

    def close_all_positions(self, cancel_orders: bool = True) -> pd.DataFrame:
        """Close every position (and first cancel open orders unless ``cancel_orders=False``).

        One row per symbol: ``status`` (HTTP), ``code``, ``message`` and the context Alpaca adds
        to a refusal (``available``, ``existing_qty``, ``held_for_orders``), then the closing
        order's fields (``order_id``, ``order_status``, ``side``, ``qty``, ... as in
        :meth:`orders`). The closing orders have no client id: if the answer is lost, the
        market orders created since the call began are looked up; when every remaining position
        has one, those are the rows, otherwise the request is sent again (a position whose
        quantity a first close holds cannot be closed twice) and its answer is completed with
        the closing orders found.

        Raises:
            OrderStateUnknown: no answer ever came back and positions without a closing order remain.
        """
        started = time.monotonic()
        since: list[pd.Timestamp] = []

        def closing_orders(exclude: set[str]) -> dict[str, dict[str, Any]]:
            if not since:
                since.append(self._settler.server_since(started))
            return {o["symbol"]: o for o in reversed(self._recent_orders(since[0]))
                    if _is_close_order(o) and o.get("symbol") not in exclude
                    and not self._known.is_own(o.get("client_order_id"))}

        def look() -> Any:
            found = closing_orders(set())
            remaining = {p.get("symbol") for p in self._transport.trading("GET", "/v2/positions") or []}
            if remaining - set(found):
                return NOT_SEEN
            return ("found", [{"symbol": s, "status": 200, "body": o} for s, o in sorted(found.items())])

        try:
            (kind, body), lost = self._settler.run(
                lambda: ("answer", self._transport.trading("DELETE", "/v2/positions", retry=False,
                                                           params={"cancel_orders": bool(cancel_orders)})),
                look=look, resend=True, poll=False,
                unknown=lambda: ("close-all is in an UNKNOWN state: no answer came back and positions "
                                 "without a closing order remain. Check api.positions() and "
                                 "api.orders(status='all')."),
                nothing_done=f"{NOT_ACTED}; no position was touched")
            body = list(body or [])
            if lost and kind == "answer":       # a repeat answered: add the lost one's orders
                found = closing_orders({item.get("symbol") for item in body if item.get("status") == 200})
                body = [item for item in body if item.get("symbol") not in found]
                body += [{"symbol": s, "status": 200, "body": o} for s, o in sorted(found.items())]
        finally:
            self._known.forget()
        return _multi_status(body, "symbol")

    def _recent_orders(self, since: pd.Timestamp, *, symbols: list[str] | None = None) -> list[dict[str, Any]]:
        """Orders created at or after ``since`` (server time), newest first (one page)."""
        orders = self._transport.trading("GET", "/v2/orders", params={
            "status": "all", "limit": ORDERS_PAGE, "direction": "desc", "symbols": symbols,
            "after": rfc3339_us(since - pd.Timedelta(microseconds=1))}) or []
        return [o for o in orders if created_since(o, since)]

    # ------------------------------------------------------------------ streaming
    def stream(self, quotes: Any = None, trades: Any = None, bars: Any = None, trade_updates: bool = False,
               feed: str | None = None, *, updated_bars: Any = None, daily_bars: Any = None,
               statuses: Any = None, orderbooks: Any = None, reconnect: Any = None,
               timeout: float = 10.0, msgpack: bool = False) -> Any:
        """A live stream in a background thread (see :mod:`alpaca_nb.stream`): tables, callbacks,
        notebook display and, with ``trade_updates=True``, the session's order book.

        Symbols are a list, one symbol or "AAPL,MSFT" ("*" = every stock, "*/*" = every crypto
        pair). ``msgpack=True``: the market-data sockets speak Alpaca's msgpack codec instead of
        JSON (the codec of a connection already open in this process stays). Returns once connected.
        Raises ValueError/TypeError for bad arguments, AuthenticationError for refused keys,
        AlpacaConnectionError when the endpoint cannot be reached within ``timeout`` seconds.
        """
        from .stream import (
            open_stream,  # lazily: the client does not depend on the stream module
        )

        return open_stream(self._settings, quotes=quotes, trades=trades, bars=bars,
                           updated_bars=updated_bars, daily_bars=daily_bars, statuses=statuses,
                           orderbooks=orderbooks, trade_updates=trade_updates, feed=feed, data_rest=self._transport.data,
                           trading_rest=self._transport.trading, reconnect=reconnect, timeout=timeout,
                           observer=self._known, msgpack=msgpack)

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


def _replacement(current: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The order a PATCH leaves to fill, for the guard: the new (or old) qty minus what already
    filled, at the new (or old) prices."""
    merged: dict[str, Any] = {"symbol": current.get("symbol"), "side": current.get("side"),
                              "type": current.get("type")}
    for key in ("limit_price", "stop_price"):
        if change.get(key, current.get(key)) is not None:
            merged[key] = change.get(key, current.get(key))
    total = change.get("qty", current.get("qty"))
    if total is None:
        merged["notional"] = current.get("notional")
    else:
        left = Decimal(str(total)) - Decimal(str(current.get("filled_qty") or 0))
        merged["qty"] = _orders._wire(max(left, Decimal(0)))
    return merged


def _is_close_order(order: dict[str, Any], *, qty: str | None = None, side: str | None = None) -> bool:
    """Whether an order looks like one ``DELETE /v2/positions`` creates: a simple market day
    order (for ``qty`` shares and on ``side`` when given)."""
    return (order.get("type") == "market" and (order.get("order_class") or "simple") == "simple"
            and order.get("time_in_force") == "day" and order.get("notional") is None
            and (qty is None or _orders._same_number(order.get("qty"), qty))
            and (side is None or order.get("side") == side))


def _iso(ns: int | None) -> str | None:
    return None if ns is None else rfc3339_us(pd.Timestamp(ns, tz="UTC"))


def rfc3339_us(ts: pd.Timestamp) -> str:
    """RFC-3339 UTC with microseconds when needed (``2024-01-02T14:30:00.000001Z``)."""
    ts = ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{ts.microsecond:06d}Z" if ts.microsecond else "Z")


def _looks_like_uuid(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 36 and value.count("-") == 4

