"""The sandbox's order object and the validation of order requests (``POST``/``PATCH /v2/orders``).

:class:`Order` holds one order, wire fields and the engine's private matching state; ``wire()``
gives Alpaca's Order object (protocol reference 2.6). :func:`parse_new_order` and
:func:`parse_replace` check a request body field by field and raise :class:`~.wire.ApiError` with
Alpaca's status, code and message; they look at nothing but the body and the asset, so the account
checks (buying power, available quantity, shorting) stay in the engine.

Messages confirmed from real Alpaca answers (protocol reference 3, GitHub issues): "qty or notional
is required", "only one of qty or notional is accepted", "qty must be integer", "client_order_id must
be unique", "invalid side", 'only type="limit" is allowed for extended hours orders', "invalid
limit_price 11.055. sub-penny increment does not fulfill minimum pricing criteria" (42210000),
"fractional orders must be DAY orders" and "fractional orders must be simple orders" (42210000),
"invalid take_profit.limit_price: must be > 0". The remaining texts follow the same style but are
not confirmed word for word; the status and numeric code (the stable contract) are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .wire import ApiError, fmt_money, iso_us, parse_bool, rejected, unprocessable

ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIME_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")
SIDES = ("buy", "sell")
ORDER_CLASSES = ("simple", "bracket", "oco", "oto")
POSITION_INTENTS = ("buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close")

FINAL_STATUSES = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})
QTY_PLACES = 9
CLIENT_ORDER_ID_MAX = 128

_NS_FIELDS = ("created_at", "updated_at", "submitted_at", "filled_at", "expired_at", "canceled_at",
              "failed_at", "replaced_at")

# Every attribute of an Order with its default: wire fields first, then the engine's state.
_FIELDS: dict[str, Any] = {
    "id": "", "client_order_id": "", "account_id": "",
    "created_at": 0, "updated_at": 0, "submitted_at": 0, "filled_at": None, "expired_at": None,
    "canceled_at": None, "failed_at": None, "replaced_at": None, "replaced_by": None, "replaces": None,
    "asset_id": "", "symbol": "", "asset_class": "us_equity", "exchange": "",
    "notional": None, "qty": None, "filled_qty": 0.0, "filled_avg_price": None,
    "order_class": "simple", "type": "market", "side": "buy", "position_intent": None,
    "time_in_force": "day", "limit_price": None, "stop_price": None, "status": "new",
    "extended_hours": False, "trail_percent": None, "trail_price": None, "hwm": None,
    # engine state (not on the wire)
    "seq": 0,                 # creation order across the sandbox
    "parent_id": None,        # the entry (or oco take-profit) order of a leg
    "leg_ids": [],            # legs of a bracket/oco/oto parent
    "leg_role": None,         # "take_profit" | "stop_loss" for legs
    "opening": True,          # opens/extends a position (holds buying power) vs closes one
    "triggered": False,       # a stop/trailing stop has been elected
    "target_qty": None,       # a notional order's quantity, fixed at its first fill
    "last_quote_t": -1,       # the last quote whose displayed size this order consumed
    "active_from": 0,         # not eligible before this instant (queued for a session)
    "expires_ns": None,       # its time in force ends here (day/opg/cls)
    "auction": None,          # "open" | "close": opg/cls orders execute only in that auction
    "auction_ns": None,       # the instant of that auction
    "protect_limit": None,    # a buy stop's protective limit once elected (Alpaca: +4%/+2.5%)
    "seen_ticks": None,       # (quote t, trade t) at which matching last found nothing to do
}


class Order:
    """One order. Times are epoch nanoseconds (UTC); quantities and prices are floats."""

    __slots__ = tuple(_FIELDS)

    def __init__(self, **values: Any):
        for name, default in _FIELDS.items():
            value = values.pop(name, default)
            setattr(self, name, list(value) if isinstance(value, list) else value)
        if values:
            raise TypeError(f"unknown order fields: {sorted(values)}")

    # ------------------------------------------------------------------ state
    @property
    def is_open(self) -> bool:
        return self.status not in FINAL_STATUSES

    @property
    def total_qty(self) -> float | None:
        """Shares ordered: ``qty``, or a notional order's quantity once known."""
        return self.qty if self.qty is not None else self.target_qty

    @property
    def remaining_qty(self) -> float | None:
        total = self.total_qty
        return None if total is None else round(max(total - self.filled_qty, 0.0), QTY_PLACES)

    @property
    def is_leg(self) -> bool:
        return self.parent_id is not None

    # ------------------------------------------------------------------ (de)serialisation
    def record(self) -> dict[str, Any]:
        """Everything, for the store."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Order:
        known = {k: v for k, v in record.items() if k in _FIELDS}
        return cls(**known)

    def wire(self, legs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Alpaca's Order object; ``legs`` are the already-wired leg orders (nested views)."""
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": iso_us(self.created_at),
            "updated_at": iso_us(self.updated_at),
            "submitted_at": iso_us(self.submitted_at),
            "filled_at": iso_us(self.filled_at),
            "expired_at": iso_us(self.expired_at),
            "canceled_at": iso_us(self.canceled_at),
            "failed_at": iso_us(self.failed_at),
            "replaced_at": iso_us(self.replaced_at),
            "cancel_requested_at": None,      # cancels take effect at once (no pending_cancel)
            "replaced_by": self.replaced_by,
            "replaces": self.replaces,
            "asset_id": self.asset_id,
            "symbol": self.symbol,
            "asset_class": self.asset_class,
            "notional": fmt_money(self.notional),
            "qty": fmt_money(self.qty),
            "filled_qty": fmt_money(self.filled_qty) or "0",
            "filled_avg_price": fmt_money(self.filled_avg_price),
            "order_class": self.order_class,
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": self.position_intent,
            "time_in_force": self.time_in_force,
            "limit_price": fmt_money(self.limit_price),
            "stop_price": fmt_money(self.stop_price),
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": legs,                     # always null on a leg (one level only)
            "trail_percent": fmt_money(self.trail_percent),
            "trail_price": fmt_money(self.trail_price),
            "hwm": fmt_money(self.hwm),
            "ratio_qty": None,                # mleg legs only (options)
            "subtag": None,
            "source": None,
            "expires_at": iso_us(self.expires_ns) if self.expires_ns is not None else None,
        }

    def __repr__(self) -> str:
        return (f"<Order {self.id[:8]} {self.side} {self.total_qty or self.notional} {self.symbol} "
                f"{self.type}/{self.time_in_force} {self.status}>")


# ---------------------------------------------------------------- request parsing

@dataclass
class NewOrder:
    """A syntactically valid ``POST /v2/orders`` body, normalised."""

    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: float | None = None
    notional: float | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    trail_price: float | None = None
    trail_percent: float | None = None
    extended_hours: bool = False
    client_order_id: str | None = None
    order_class: str = "simple"
    take_profit_limit: float | None = None
    stop_loss_stop: float | None = None
    stop_loss_limit: float | None = None
    position_intent: str | None = None

    @property
    def fractional(self) -> bool:
        return self.notional is not None or (self.qty is not None and self.qty != int(self.qty))


def places(value: float) -> int:
    """Decimal places of a number as the client wrote it (float repr is shortest-round-trip)."""
    try:
        exponent = Decimal(repr(float(value))).normalize().as_tuple().exponent
    except InvalidOperation:  # pragma: no cover - parse_number rejects non-finite values first
        return 0
    return max(0, -int(exponent))


def parse_number(value: Any, name: str) -> float | None:
    """A JSON number or numeric string; 422 40010001 ``invalid <name>`` otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise unprocessable(f"invalid {name}")
    try:
        number = float(value)
    except ValueError:
        raise unprocessable(f"invalid {name}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise unprocessable(f"invalid {name}")
    return number


def _price(value: Any, name: str, *, penny: bool = True) -> float | None:
    price = parse_number(value, name)
    if price is None:
        return None
    if price <= 0:
        raise unprocessable(f"invalid {name}: must be > 0")
    if penny:      # crypto prices follow the pair's price_increment instead (.crypto_orders)
        check_increment(price, name)
    return price


def check_increment(price: float, name: str) -> None:
    """Rule 612: prices >= $1 in cents, below $1 in 1/100 cents (42210000 otherwise)."""
    allowed = 2 if price >= 1 else 4
    if places(price) > allowed:
        raise rejected(f"invalid {name} {price!r}. sub-penny increment does not fulfill minimum "
                       "pricing criteria")


def _choice(body: dict, name: str, allowed: tuple[str, ...], *, required: bool = True,
            default: str | None = None) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise unprocessable(f"{name} is required")
        return default
    if not isinstance(value, str) or value.lower() not in allowed:
        raise unprocessable(f"invalid {name}")
    return value.lower()


def _quantity(value: Any, name: str) -> float | None:
    qty = parse_number(value, name)
    if qty is None:
        return None
    if qty <= 0:
        raise unprocessable(f"{name} must be > 0")
    if places(qty) > QTY_PLACES:
        raise unprocessable(f"{name} must have at most {QTY_PLACES} decimal places")
    return qty


def _client_order_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise unprocessable("invalid client_order_id")
    if len(value) > CLIENT_ORDER_ID_MAX:
        raise unprocessable(f"client_order_id must be no more than {CLIENT_ORDER_ID_MAX} characters")
    return value


def _nested(body: dict, name: str) -> dict | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise unprocessable(f"invalid {name}")
    return value


def parse_new_order(body: dict[str, Any], *, crypto: bool = False) -> NewOrder:
    """Validate a ``POST /v2/orders`` body (everything that needs no account or market state).
    ``crypto``: the symbol is a crypto pair, whose prices and fractional quantities follow the
    pair's increments (checked in :mod:`.crypto_orders`), not the stock rules.

    Raises:
        ApiError: 422 40010001 for missing/malformed fields, 422 42210000 for rule violations.
    """
    order_class = _choice(body, "order_class", ORDER_CLASSES + ("mleg",), required=False,
                          default="simple")
    if order_class == "mleg":
        raise unprocessable("mleg orders are for options, which the sandbox does not trade")
    symbol = body.get("symbol")
    if symbol is None or symbol == "":
        raise unprocessable("symbol is required")
    if not isinstance(symbol, str):
        raise unprocessable("invalid symbol")
    qty = _quantity(body.get("qty"), "qty")
    notional = _quantity(body.get("notional"), "notional")
    if qty is None and notional is None:
        raise unprocessable("qty or notional is required")
    if qty is not None and notional is not None:
        raise unprocessable("only one of qty or notional is accepted")
    side = _choice(body, "side", SIDES)
    otype = _choice(body, "type", ORDER_TYPES)
    tif = _choice(body, "time_in_force", TIME_IN_FORCE)
    intent = _choice(body, "position_intent", POSITION_INTENTS, required=False)
    extended = parse_bool(body.get("extended_hours"), "extended_hours", default=False)
    order = NewOrder(symbol=symbol, side=side, type=otype, time_in_force=tif, qty=qty,
                     notional=notional, extended_hours=bool(extended),
                     client_order_id=_client_order_id(body.get("client_order_id")),
                     order_class=order_class, position_intent=intent)

    take_profit = _nested(body, "take_profit")
    stop_loss = _nested(body, "stop_loss")
    if order_class != "simple":
        if take_profit is not None:
            order.take_profit_limit = _price(take_profit.get("limit_price"), "take_profit.limit_price")
            if order.take_profit_limit is None:
                raise unprocessable("take_profit.limit_price is required")
        if stop_loss is not None:
            order.stop_loss_stop = _price(stop_loss.get("stop_price"), "stop_loss.stop_price")
            if order.stop_loss_stop is None:
                raise unprocessable("stop_loss.stop_price is required")
            order.stop_loss_limit = _price(stop_loss.get("limit_price"), "stop_loss.limit_price")

    limit = _price(body.get("limit_price"), "limit_price", penny=not crypto)
    stop = _price(body.get("stop_price"), "stop_price", penny=not crypto)
    trail_price = parse_number(body.get("trail_price"), "trail_price")
    trail_percent = parse_number(body.get("trail_percent"), "trail_percent")
    if order_class == "oco":
        if otype != "limit":
            raise unprocessable('oco orders must be type="limit"')
        if limit is None:
            limit = order.take_profit_limit     # an oco's parent is its take-profit limit order
    _check_prices(order, limit, stop, trail_price, trail_percent)
    if not crypto:           # crypto's time in force is its own (.crypto_orders)
        _check_time_in_force(order)
    _check_class(order)
    if order.fractional and not crypto:
        if order.order_class != "simple":
            raise rejected("fractional orders must be simple orders")
        if order.type != "market":
            raise rejected("fractional orders must be market orders")
        if order.time_in_force != "day":
            raise rejected("fractional orders must be DAY orders")
    return order


def _check_prices(order: NewOrder, limit, stop, trail_price, trail_percent) -> None:
    otype = order.type
    if otype in ("limit", "stop_limit"):
        if limit is None:
            raise unprocessable(f"limit_price is required for {otype} orders")
    elif limit is not None:
        raise unprocessable(f"limit_price is not allowed for {otype} orders")
    if otype in ("stop", "stop_limit"):
        if stop is None:
            raise unprocessable(f"stop_price is required for {otype} orders")
    elif stop is not None:
        raise unprocessable(f"stop_price is not allowed for {otype} orders")
    if otype == "trailing_stop":
        if trail_price is None and trail_percent is None:
            raise unprocessable("trail_price or trail_percent is required for trailing_stop orders")
        if trail_price is not None and trail_percent is not None:
            raise unprocessable("only one of trail_price or trail_percent is accepted")
        if trail_price is not None:
            if trail_price <= 0:
                raise unprocessable("invalid trail_price: must be > 0")
            check_increment(trail_price, "trail_price")
        if trail_percent is not None and not 0 < trail_percent < 100:
            raise unprocessable("invalid trail_percent: must be > 0 and < 100")
    elif trail_price is not None or trail_percent is not None:
        raise unprocessable(f"trail_price and trail_percent are not allowed for {otype} orders")
    order.limit_price, order.stop_price = limit, stop
    order.trail_price, order.trail_percent = trail_price, trail_percent


def _check_time_in_force(order: NewOrder) -> None:
    tif, otype = order.time_in_force, order.type
    if order.extended_hours:
        if otype != "limit":
            raise unprocessable('only type="limit" is allowed for extended hours orders')
        if tif not in ("day", "gtc"):
            raise unprocessable('only time_in_force="day" or "gtc" is allowed for extended hours '
                                'orders')
        if order.fractional:
            raise rejected("fractional orders are not allowed in extended hours")
        if order.order_class != "simple":
            raise unprocessable("extended hours are not supported for bracket, oco or oto orders")
    if tif in ("opg", "cls") and otype not in ("market", "limit"):
        raise unprocessable(f"time_in_force={tif} is only allowed for market and limit orders")
    if otype == "trailing_stop" and tif not in ("day", "gtc"):
        raise unprocessable("time_in_force for trailing_stop orders must be day or gtc")


def _check_class(order: NewOrder) -> None:
    cls = order.order_class
    if cls == "simple":
        return
    if order.time_in_force not in ("day", "gtc"):
        raise unprocessable(f"time_in_force for {cls} orders must be day or gtc")
    if order.type == "trailing_stop":
        raise unprocessable(f"trailing_stop is not supported for {cls} orders")
    tp, sl = order.take_profit_limit, order.stop_loss_stop
    if cls in ("bracket", "oco"):
        if tp is None or sl is None:
            raise unprocessable(f"{cls} orders require take_profit and stop_loss")
    elif (tp is None) == (sl is None):
        raise unprocessable("oto orders require exactly one of take_profit or stop_loss")
    if cls == "oco" and order.type != "limit":
        raise unprocessable('oco orders must be type="limit"')
    if tp is not None and sl is not None:
        # exits of a buy entry sell (take-profit above stop-loss); of a sell entry, the reverse.
        exit_sells = order.side == "buy" if cls == "bracket" else order.side == "sell"
        if exit_sells and tp <= sl:
            raise rejected("take_profit.limit_price must be greater than stop_loss.stop_price")
        if not exit_sells and tp >= sl:
            raise rejected("take_profit.limit_price must be less than stop_loss.stop_price")


@dataclass
class Replace:
    """A ``PATCH /v2/orders/{id}`` body; None = unchanged."""

    qty: float | None = None
    time_in_force: str | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    trail: float | None = None
    client_order_id: str | None = None


def parse_replace(body: dict[str, Any]) -> Replace:
    """Validate a replace body (field formats only).

    Raises:
        ApiError: 422 40010001 for malformed fields.
    """
    qty = parse_number(body.get("qty"), "qty")
    if qty is not None:
        if qty != int(qty):
            raise unprocessable("qty must be integer")
        if qty <= 0:
            raise unprocessable("qty must be > 0")
    tif = _choice(body, "time_in_force", TIME_IN_FORCE, required=False)
    trail = parse_number(body.get("trail"), "trail")
    if trail is not None and trail <= 0:
        raise unprocessable("invalid trail: must be > 0")
    return Replace(qty=qty, time_in_force=tif,
                   limit_price=_price(body.get("limit_price"), "limit_price"),
                   stop_price=_price(body.get("stop_price"), "stop_price"),
                   trail=trail, client_order_id=_client_order_id(body.get("client_order_id")))


def new_id() -> str:
    return str(uuid.uuid4())


def valid_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


__all__ = ["Order", "NewOrder", "Replace", "parse_new_order", "parse_replace", "ApiError",
           "FINAL_STATUSES", "new_id", "valid_uuid", "places", "check_increment"]
