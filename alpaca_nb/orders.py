"""Order arguments -> a validated request body, client order ids, and the pre-trade guard.

Everything here runs before anything is sent. Invalid arguments raise
:class:`~alpaca_nb.errors.OrderValidationError` (a ``ValueError``) naming the argument and what
would be valid; the guard raises :class:`~alpaca_nb.errors.PreTradeCheckError` saying which limit
refused the order, by how much, and how to raise the limit.

Crypto pairs ("BTC/USD") take market, limit and stop_limit orders, time in force gtc (their
default) or ioc, fractional qty at any type, no order classes and no extended hours; their
asset's ``min_order_size``, ``min_trade_increment`` and ``price_increment`` are checked by
:func:`check_crypto_increments` before sending.

Numbers may be ``int``, ``float``, ``decimal.Decimal``, numpy numbers or numeric strings; they go
on the wire as exact decimal strings (``"0.1"``, never ``"0.1000000000000000055"``). Booleans may
be Python or numpy booleans.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from numbers import Number
from typing import Any

import numpy as np

from ._args import parse_symbol
from ._settle import NOT_ACTED, NOT_SEEN, Settler
from .errors import (
    AlpacaError,
    BuyingPowerCheckError,
    NotFoundError,
    OrderValidationError,
    PreTradeCheckError,
    UnprocessableError,
)

log = logging.getLogger(__name__)

__all__ = [
    "ORDER_CLASSES",
    "SIDES",
    "TIME_IN_FORCE",
    "TYPES",
    "Guard",
    "check_crypto_increments",
    "new_client_order_id",
    "order_body",
    "order_choices",
    "order_differences",
    "place",
    "replace_body",
]

SIDES = ("buy", "sell")
TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
TIME_IN_FORCE = ("day", "gtc", "opg", "cls", "ioc", "fok")
ORDER_CLASSES = ("simple", "bracket", "oco", "oto")
POSITION_INTENTS = ("buy_to_open", "buy_to_close", "sell_to_open", "sell_to_close")
MAX_CLIENT_ORDER_ID = 128
CRYPTO_TYPES = ("market", "limit", "stop_limit")
CRYPTO_TIME_IN_FORCE = ("gtc", "ioc")

_PRICE_FOR = {"limit_price": ("limit", "stop_limit"), "stop_price": ("stop", "stop_limit")}


def new_client_order_id() -> str:
    """A fresh client order id (uuid4): the key that makes a submission safe to reconcile."""
    return str(uuid.uuid4())


def order_choices(symbol: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(order types, time-in-force values) Alpaca accepts for ``symbol``, each default first: a
    stock takes every type and "day" by default, a crypto pair ("BTC/USD") market, limit and
    stop_limit with "gtc" (default) or "ioc"."""
    return (CRYPTO_TYPES, CRYPTO_TIME_IN_FORCE) if "/" in symbol else (TYPES, TIME_IN_FORCE)


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    shown = ", ".join(repr(c) for c in choices)
    raise OrderValidationError(f"{name} must be one of {shown}; got {value!r}")


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise OrderValidationError(f"{name} must be True or False; got {value!r}")


def decimal(value: Any, name: str, *, places: int = 9) -> Decimal | None:
    """A positive finite number as a Decimal (None stays None).

    Raises:
        OrderValidationError: not a number, not positive, or more than ``places`` decimals.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        raise OrderValidationError(f"{name} must be a number, not a boolean ({value!r})")
    try:
        if isinstance(value, Decimal):
            d = value
        elif isinstance(value, (int, np.integer)):
            d = Decimal(int(value))
        elif isinstance(value, (float, np.floating)):
            if not math.isfinite(float(value)):
                raise OrderValidationError(f"{name} must be a finite number; got {value!r}")
            d = Decimal(repr(float(value)))
        elif isinstance(value, str):
            d = Decimal(value.strip())
        elif isinstance(value, Number):
            d = Decimal(str(value))
        else:
            raise OrderValidationError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    except InvalidOperation:
        raise OrderValidationError(f"{name} must be a number; got {value!r}") from None
    if not d.is_finite():
        raise OrderValidationError(f"{name} must be a finite number; got {value!r}")
    if d <= 0:
        raise OrderValidationError(f"{name} must be greater than 0; got {value!r}")
    exponent = d.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -places:
        raise OrderValidationError(f"{name} has more than {places} decimal places: {value!r}")
    return d


def _wire(d: Decimal) -> str:
    return format(d.normalize(), "f")


def _price(value: Any, name: str, *, stock: bool) -> Decimal | None:
    """A price, with Alpaca's equity tick rule: whole cents at $1 and above, 4 decimals below."""
    d = decimal(value, name)
    if d is not None and stock:
        places = 2 if d >= 1 else 4
        if d != d.quantize(Decimal(1).scaleb(-places)):
            raise OrderValidationError(
                f"{name}={value!r} is a sub-penny price: stock prices take {places} decimals "
                f"{'at $1 and above' if places == 2 else 'below $1'} (e.g. {d.quantize(Decimal(1).scaleb(-places))})")
    return d


def _leg(value: Any, name: str, main: str, *, stock: bool) -> dict[str, Decimal]:
    """take_profit / stop_loss given as a price or a mapping."""
    if isinstance(value, Mapping):
        allowed = {"take_profit": ("limit_price",), "stop_loss": ("stop_price", "limit_price")}[name]
        unknown = set(value) - set(allowed)
        if unknown:
            raise OrderValidationError(f"{name} accepts {', '.join(allowed)}; got unknown key(s) "
                                       f"{', '.join(sorted(map(str, unknown)))}")
        if value.get(main) is None:
            raise OrderValidationError(f"{name} needs {main}, e.g. {name}={{'{main}': 123.45}}")
        return {k: _price(v, f"{name}.{k}", stock=stock) for k, v in value.items() if v is not None}
    return {main: _price(value, name, stock=stock)}


def order_body(symbol: Any, qty: Any = None, side: Any = "buy", type: Any = "market",
               time_in_force: Any = None, *, notional: Any = None, limit_price: Any = None,
               stop_price: Any = None, trail_price: Any = None, trail_percent: Any = None,
               extended_hours: Any = False, order_class: Any = None, take_profit: Any = None,
               stop_loss: Any = None, client_order_id: Any = None,
               position_intent: Any = None) -> dict[str, Any]:
    """The JSON body of ``POST /v2/orders`` for these arguments, with a client_order_id
    (generated when not given). ``time_in_force=None`` is "day" for stocks, "gtc" for crypto.

    Raises:
        OrderValidationError: with a message naming the argument.
    """
    try:
        symbol = parse_symbol(symbol)
    except (TypeError, ValueError) as exc:
        raise OrderValidationError(str(exc)) from None
    stock = "/" not in symbol
    side = _choice(side, "side", SIDES)
    type = _choice(type, "type", TYPES)
    tif = _choice(time_in_force if time_in_force is not None else order_choices(symbol)[1][0],
                  "time_in_force", TIME_IN_FORCE)
    extended = _flag(extended_hours, "extended_hours")
    klass = "simple" if order_class in (None, "") else _choice(order_class, "order_class", ORDER_CLASSES)
    if not stock:
        _check_crypto(symbol, type, tif, klass, extended)

    if (qty is None) == (notional is None):
        raise OrderValidationError("give exactly one of qty (shares) or notional (dollars); got "
                                   + ("both" if qty is not None else "neither"))
    q = decimal(qty, "qty")
    n = decimal(notional, "notional", places=2)
    prices = {"limit_price": _price(limit_price, "limit_price", stock=stock),
              "stop_price": _price(stop_price, "stop_price", stock=stock)}
    for name, types in _PRICE_FOR.items():
        if name == "limit_price" and klass == "oco" and prices[name] is None:
            continue                       # an oco's entry price is its take_profit
        if type in types and prices[name] is None:
            raise OrderValidationError(f"{_a(type)} order needs {name}")
        if type not in types and prices[name] is not None:
            raise OrderValidationError(f"{name} is only for {' and '.join(types)} orders, not {type}")
    tp = _price(trail_price, "trail_price", stock=stock)
    tpc = decimal(trail_percent, "trail_percent")
    if type == "trailing_stop":
        if (tp is None) == (tpc is None):
            raise OrderValidationError("a trailing_stop order needs exactly one of trail_price or "
                                       "trail_percent; got " + ("both" if tp is not None else "neither"))
        if tpc is not None and tpc >= 100:
            raise OrderValidationError(f"trail_percent is a percentage below 100; got {trail_percent!r}")
    elif tp is not None or tpc is not None:
        raise OrderValidationError("trail_price and trail_percent are only for trailing_stop orders")
    if extended and (type != "limit" or tif not in ("day", "gtc") or klass != "simple"):
        raise OrderValidationError("extended_hours=True needs a simple limit order with "
                                   f"time_in_force 'day' or 'gtc'; got type={type!r}, "
                                   f"time_in_force={tif!r}, order_class={klass!r}")
    if tif in ("opg", "cls") and type not in ("market", "limit"):
        raise OrderValidationError(f"time_in_force={tif!r} is only for market and limit orders, not {type}")
    if type == "trailing_stop" and tif not in ("day", "gtc"):
        raise OrderValidationError(f"a trailing_stop order needs time_in_force 'day' or 'gtc'; got {tif!r}")
    if stock and q is not None and q != q.to_integral_value() and (type != "market" or tif != "day" or klass != "simple"):
        raise OrderValidationError(f"fractional qty ({qty!r}) is only for simple market orders with "
                                   f"time_in_force 'day'; got type={type!r}, time_in_force={tif!r}")

    body: dict[str, Any] = {"symbol": symbol, "side": side, "type": type, "time_in_force": tif}
    if q is not None:
        body["qty"] = _wire(q)
    if n is not None:
        body["notional"] = _wire(n)
    for name, value in prices.items():
        if value is not None:
            body[name] = _wire(value)
    if tp is not None:
        body["trail_price"] = _wire(tp)
    if tpc is not None:
        body["trail_percent"] = _wire(tpc)
    if extended:
        body["extended_hours"] = True

    legs = _legs(klass, side, type, tif, take_profit, stop_loss, stock=stock)
    if klass != "simple":
        body["order_class"] = klass
    body.update(legs)
    if position_intent is not None:
        body["position_intent"] = _choice(position_intent, "position_intent", POSITION_INTENTS)
    body["client_order_id"] = _client_order_id(client_order_id)
    return body


def _check_crypto(symbol: str, type: str, tif: str, klass: str, extended: bool) -> None:
    """What Alpaca accepts for a crypto pair (raises OrderValidationError)."""
    if tif not in CRYPTO_TIME_IN_FORCE:
        raise OrderValidationError(f"time_in_force={tif!r} is not accepted for crypto ({symbol}): crypto "
                                   f"orders take time_in_force {' or '.join(map(repr, CRYPTO_TIME_IN_FORCE))} "
                                   "(the default is 'gtc')")
    if type not in CRYPTO_TYPES:
        raise OrderValidationError(f"type={type!r} is not accepted for crypto ({symbol}): crypto orders are "
                                   f"{', '.join(map(repr, CRYPTO_TYPES))}")
    if klass != "simple":
        raise OrderValidationError(f"order_class={klass!r} is not accepted for crypto ({symbol}): crypto "
                                   "orders are simple orders")
    if extended:
        raise OrderValidationError(f"extended_hours=True is not for crypto ({symbol}): crypto trades 24/7")


def check_crypto_increments(body: Mapping[str, Any], asset: Mapping[str, Any]) -> None:
    """Refuse a crypto order body whose qty is under the asset's ``min_order_size`` or not a
    multiple of its ``min_trade_increment``, or whose limit/stop price is not a multiple of its
    ``price_increment`` (the asset's JSON, GET /v2/assets/{symbol}; absent fields are not checked).

    Raises:
        OrderValidationError: naming the argument, the asset's figure and the nearest valid value.
    """
    symbol = body["symbol"]

    def figure(key: str) -> Decimal | None:
        try:
            return decimal(asset.get(key), key, places=18)
        except OrderValidationError:
            return None

    minimum, step, tick = figure("min_order_size"), figure("min_trade_increment"), figure("price_increment")
    if "qty" in body:
        qty = Decimal(body["qty"])
        if minimum is not None and qty < minimum:
            raise OrderValidationError(f"qty={body['qty']} is below the minimum order size of {symbol}, "
                                       f"{_wire(minimum)} (min_order_size)")
        if step is not None and qty % step:
            raise OrderValidationError(
                f"qty={body['qty']} is not a multiple of {symbol}'s min_trade_increment {_wire(step)}; "
                f"e.g. qty={_wire((qty // step) * step or step)}")
    for name in ("limit_price", "stop_price"):
        if name in body and tick is not None and Decimal(body[name]) % tick:
            price = Decimal(body[name])
            raise OrderValidationError(
                f"{name}={body[name]} is not a multiple of {symbol}'s price_increment {_wire(tick)}; "
                f"e.g. {name}={_wire((price // tick) * tick or tick)}")


def _legs(klass: str, side: str, type: str, tif: str, take_profit: Any, stop_loss: Any, *,
          stock: bool) -> dict[str, Any]:
    if klass == "simple":
        if take_profit is not None or stop_loss is not None:
            raise OrderValidationError("take_profit/stop_loss need order_class 'bracket' (both legs), "
                                       "'oco' (both) or 'oto' (one of them)")
        return {}
    tp = _leg(take_profit, "take_profit", "limit_price", stock=stock) if take_profit is not None else None
    sl = _leg(stop_loss, "stop_loss", "stop_price", stock=stock) if stop_loss is not None else None
    if klass in ("bracket", "oco") and (tp is None or sl is None):
        missing = " and ".join(n for n, v in (("take_profit", tp), ("stop_loss", sl)) if v is None)
        raise OrderValidationError(f"{_a(klass)} order needs both take_profit and stop_loss ({missing} missing)")
    if klass == "oto" and (tp is None) == (sl is None):
        raise OrderValidationError("an oto order needs exactly one of take_profit or stop_loss")
    if tif not in ("day", "gtc"):
        raise OrderValidationError(f"{_a(klass)} order needs time_in_force 'day' or 'gtc'; got {tif!r}")
    if type == "trailing_stop":
        raise OrderValidationError(f"{_a(klass)} order cannot be a trailing_stop")
    if klass == "oco" and type != "limit":
        raise OrderValidationError(f"an oco order must be type='limit' (its take_profit); got {type!r}")
    if tp is not None and sl is not None:
        # the exits of a buy bracket sell, so take-profit sits above the stop; an oco is itself
        # the exit, so a sell oco has its take-profit above the stop
        exit_sells = side == "buy" if klass == "bracket" else side == "sell"
        above = tp["limit_price"] > sl["stop_price"]
        if above != exit_sells:
            want = "above" if exit_sells else "below"
            raise OrderValidationError(
                f"for a {side} {klass} order take_profit.limit_price ({tp['limit_price']}) must be "
                f"{want} stop_loss.stop_price ({sl['stop_price']})")
    out: dict[str, Any] = {}
    if tp is not None:
        out["take_profit"] = {k: _wire(v) for k, v in tp.items()}
    if sl is not None:
        out["stop_loss"] = {k: _wire(v) for k, v in sl.items()}
    return out


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _client_order_id(value: Any) -> str:
    if value is None:
        return new_client_order_id()
    if not isinstance(value, str) or not value.strip():
        raise OrderValidationError(f"client_order_id must be a non-empty string; got {value!r}")
    if len(value) > MAX_CLIENT_ORDER_ID:
        raise OrderValidationError(f"client_order_id is {len(value)} characters; at most "
                                   f"{MAX_CLIENT_ORDER_ID} are allowed")
    return value


def replace_body(*, qty: Any = None, time_in_force: Any = None, limit_price: Any = None,
                 stop_price: Any = None, trail: Any = None, client_order_id: Any = None,
                 stock: bool = True) -> dict[str, Any]:
    """The JSON body of ``PATCH /v2/orders/{id}`` (only the fields that change).

    Raises:
        OrderValidationError: nothing to change, or an invalid field.
    """
    body: dict[str, Any] = {}
    q = decimal(qty, "qty")
    if q is not None:
        if q != q.to_integral_value():
            raise OrderValidationError(f"qty must be a whole number of shares when replacing; got {qty!r}")
        body["qty"] = _wire(q)
    if time_in_force is not None:
        body["time_in_force"] = _choice(time_in_force, "time_in_force", TIME_IN_FORCE)
    for name, value in (("limit_price", limit_price), ("stop_price", stop_price)):
        d = _price(value, name, stock=stock)
        if d is not None:
            body[name] = _wire(d)
    t = decimal(trail, "trail")
    if t is not None:
        body["trail"] = _wire(t)
    if client_order_id is not None:
        body["client_order_id"] = _client_order_id(client_order_id)
    if not body:
        raise OrderValidationError("replace_order needs at least one change: qty, time_in_force, "
                                   "limit_price, stop_price, trail or client_order_id")
    return body


# ------------------------------------------------------------------ the pre-trade guard

@dataclass(frozen=True)
class Guard:
    """Fat-finger and balance checks run before an order is sent.

    Args:
        max_order_notional: dollars per order (None = off).
        max_order_qty: shares per order (None = off).
        price_collar: how far from the last trade, as a fraction (0.25 = 25%), a price may sit on
            the side where it could fill at a bad price (None = off): a buy's limit or stop above
            the market, a sell's below it. The other side is harmless and always allowed (a
            resting buy far below the market, a take-profit far above it), and so is a stop on
            the protective side of a position (a sell stop under a long, a buy stop over a short).
        check_buying_power: compare what an order opens with the account's buying power.

    Buying power is checked for the part of an order that opens or adds to a position: a buy
    unless it covers a short, a sell that opens or adds to a short. A sell that reduces a long
    position, a buy that covers a short, an oco (always an exit) and a crypto sell (crypto
    cannot be sold short) use no buying power on Alpaca and are not checked against it.
    """

    max_order_notional: float | None
    max_order_qty: float | None
    price_collar: float | None
    check_buying_power: bool = True

    def check(self, body: Mapping[str, Any], *, last_price: Callable[[str], float | None],
              buying_power: Callable[[], float | None],
              position_qty: Callable[[str], float] | None = None,
              replacing: Mapping[str, Any] | None = None) -> float | None:
        """Refuse ``body`` (an :func:`order_body`) if it breaks a limit.

        Args:
            last_price: ``symbol -> last trade price`` (None when there is none).
            buying_power: the account's buying power in dollars (None when unknown).
            position_qty: ``symbol -> signed position quantity`` (negative = short, 0 = none or
                not known for sure), asked only when the side of the position decides: every
                sell checked for buying power, a buy over buying power, a stop on the far side.
                Without it a sell is assumed to reduce a long and a buy to open one.
            replacing: the open order that ``body`` replaces (its JSON); what that order already
                holds of the buying power is counted as available again. ``body["qty"]`` is then
                what remains to fill.

        The callables are called only when a check needs them.

        Returns:
            The buying power the order takes by this estimate in dollars (0.0 for an exit),
            or None when it was not worked out.

        Raises:
            BuyingPowerCheckError: over the buying power (an ``InsufficientBuyingPower`` and a
                ``PreTradeCheckError``).
            PreTradeCheckError: another limit, naming it, the order's figure, the allowed figure,
                by how much it is over and how to raise the limit or turn the check off.
            AlpacaError: ``position_qty`` or ``buying_power`` could not ask the server (nothing
                was sent).
        """
        symbol = body["symbol"]
        qty = float(body["qty"]) if "qty" in body else None
        if qty is not None and self.max_order_qty is not None and qty > self.max_order_qty:
            _refuse("max_order_qty", qty, self.max_order_qty, f"{qty:,g} shares of {symbol}",
                    f"{self.max_order_qty:,g} shares", f"{qty - self.max_order_qty:,g} shares")

        entry = [(k, float(body[k])) for k in ("limit_price", "stop_price") if k in body]
        market_qty = qty is not None and not entry       # its value needs the last trade price
        collared = _collared(body, entry)
        required = "price_collar" if self.price_collar is not None and collared else \
            "max_order_notional" if self.max_order_notional is not None and market_qty else None
        last = None
        if required is not None or market_qty:
            why = "the server has no trade for it"
            try:
                last = last_price(symbol)
            except Exception as exc:
                why = str(exc)
            if not last and required is not None:
                raise PreTradeCheckError(
                    f"order for {symbol} refused before sending: no last trade price to check "
                    f"{required} against ({why}). Turn that check off with "
                    f"anb.connect({required}=None) or {_ENV[required]}=off.",
                    limit=required, value=float("nan"), allowed=float("nan"))

        if self.price_collar is not None and last:
            self._check_collar(body, collared, last, position_qty)

        notional = _value(body, qty, entry, last)
        if notional is None:
            return None              # a market order for shares with no price to value it by
        if self.max_order_notional is not None and notional > self.max_order_notional:
            _refuse("max_order_notional", notional, self.max_order_notional,
                    f"${notional:,.2f} of {symbol}", f"${self.max_order_notional:,.2f}",
                    f"${notional - self.max_order_notional:,.2f}", money=True)
        if not self.check_buying_power:
            return None
        return self._check_buying_power(body, notional, buying_power=buying_power,
                                        position_qty=position_qty, replacing=replacing, last=last)

    def _check_collar(self, body: Mapping[str, Any], collared: list[tuple[str, float, str, bool]],
                      last: float, position_qty: Callable[[str], float] | None) -> None:
        symbol = body["symbol"]
        for name, price, side, stop in collared:
            distance = price / last - 1 if side == "buy" else 1 - price / last
            if distance <= self.price_collar:
                continue             # below the market for a buy, above it for a sell: harmless
            if stop and position_qty is not None and _protects(side, position_qty(symbol)):
                continue             # a stop-loss under a long (over a short)
            where = "above" if side == "buy" else "below"
            raise PreTradeCheckError(
                f"order for {symbol} refused before sending: {side} {name} {_price_text(price)} is "
                f"{_pct(distance)} {where} the last trade {_price_text(last)}, beyond "
                f"price_collar {_pct(self.price_collar)} by {_pct(distance - self.price_collar)} "
                f"(a {side} {where} the market can fill at once at that price). If the price is "
                f"right, widen the collar with anb.connect(price_collar={_suggest(distance)}) or "
                f"{_ENV['price_collar']}={_suggest(distance)}; price_collar=None or "
                f"{_ENV['price_collar']}=off turns the check off.",
                limit="price_collar", value=distance, allowed=self.price_collar)

    @staticmethod
    def _check_buying_power(body: Mapping[str, Any], notional: float, *,
                            buying_power: Callable[[], float | None],
                            position_qty: Callable[[str], float] | None,
                            replacing: Mapping[str, Any] | None, last: float | None) -> float | None:
        symbol, side = body["symbol"], body["side"]
        if body.get("order_class") == "oco" or (side == "sell" and "/" in symbol):
            return 0.0               # an exit, or crypto (never short): no buying power used
        if side == "sell" and (position_qty is None or position_qty(symbol) > 0):
            return 0.0               # reduces a long position
        power = buying_power()
        if power is None:
            return None
        available = power + (_held(replacing, last) if replacing else 0.0)
        if notional <= available:
            return notional
        if side == "buy" and position_qty is not None and position_qty(symbol) < 0:
            return 0.0               # covers a short
        over = notional - available
        held = f" (with the ${available - power:,.2f} the order being replaced holds)" if available > power else ""
        if side == "buy":
            what = f"it costs about ${notional:,.2f}"
        else:
            amount = f"{float(body['qty']):,g} shares" if "qty" in body else f"${notional:,.2f}"
            what = (f"selling {amount} of {symbol} short (it opens or adds to a short position) "
                    f"takes about ${notional:,.2f} of buying power")
        raise BuyingPowerCheckError(
            f"order for {symbol} refused before sending: {what}, ${over:,.2f} more than the "
            f"account's buying power ${power:,.2f}{held}. Reduce the order by at least "
            f"${over:,.2f}, close or reduce other positions, or add funds. If the server should "
            f"decide, turn this check off with anb.connect(check_buying_power=False) or "
            f"ALPACA_NB_BUYING_POWER_CHECK=off.",
            value=notional, allowed=available)


def _collared(body: Mapping[str, Any], entry: list[tuple[str, float]]) -> list[tuple[str, float, str, bool]]:
    """The prices the collar looks at: (name, price, side of the order that carries it, is a
    stop). The order's own limit and stop prices; a take-profit, which is an exit on the other
    side (an oco's take-profit is the oco itself). A stop-loss is protective by construction
    (the order's validation puts it on the far side of the take-profit) and is not collared."""
    side = body["side"]
    out = [(name, price, side, name == "stop_price") for name, price in entry]
    tp = body.get("take_profit")
    if tp and body.get("order_class") != "oco":
        exit_side = "sell" if side == "buy" else "buy"
        out.append(("take_profit.limit_price", float(tp["limit_price"]), exit_side, False))
    elif tp and "limit_price" not in body:
        out.append(("take_profit.limit_price", float(tp["limit_price"]), side, False))
    return out


def _protects(side: str, position: float) -> bool:
    """A stop on this side protects an existing position: sell under a long, buy over a short."""
    return position > 0 if side == "sell" else position < 0


_ENV = {"max_order_qty": "ALPACA_NB_MAX_ORDER_QTY", "max_order_notional": "ALPACA_NB_MAX_ORDER_NOTIONAL",
        "price_collar": "ALPACA_NB_PRICE_COLLAR"}


def _value(body: Mapping[str, Any], qty: float | None, entry: list[tuple[str, float]],
           last: float | None) -> float | None:
    """The order's dollar value: its notional, else qty at its limit (or stop) price, else at the
    last trade; None when there is no price."""
    if "notional" in body:
        return float(body["notional"])
    prices = dict(entry)
    price = prices.get("limit_price", prices.get("stop_price", last))
    return qty * price if (qty is not None and price) else None


def _held(order: Mapping[str, Any], last: float | None) -> float:
    """About what an open order holds of the buying power: its unfilled part at its price."""
    try:
        filled = float(order.get("filled_qty") or 0)
        if order.get("qty") is not None:
            price = order.get("limit_price") or order.get("stop_price") or last
            return max(float(order["qty"]) - filled, 0.0) * float(price) if price else 0.0
        if order.get("notional") is not None:
            spent = filled * float(order.get("filled_avg_price") or 0)
            return max(float(order["notional"]) - spent, 0.0)
    except (TypeError, ValueError):
        pass
    return 0.0


def _refuse(limit: str, value: float, allowed: float, what: str, allowed_text: str, over: str, *,
            money: bool = False) -> None:
    suggest = _suggest(value)
    raise PreTradeCheckError(
        f"order refused before sending: {what} is over {limit} {allowed_text} by {over}. Raise "
        f"the limit with anb.connect({limit}={suggest}) or {_ENV[limit]}={suggest.replace('_', '')}; "
        f"{limit}=None or {_ENV[limit]}=off turns the check off.", limit=limit, value=value, allowed=allowed)


def _pct(fraction: float) -> str:
    """A fraction as a percentage with at most one decimal (0.105 -> '10.5%', 0.25 -> '25%')."""
    return f"{fraction * 100:,.1f}".rstrip("0").rstrip(".") + "%"


def _price_text(price: float) -> str:
    return f"{price:,.2f}" if price >= 1 else f"{price:.4f}"


def _suggest(value: float) -> str:
    """A round number just above ``value`` for the error message."""
    if value < 1:
        return f"{math.ceil(value * 100) / 100:g}"
    magnitude = 10 ** max(0, int(math.log10(value)) - 1)
    return f"{math.ceil(value / magnitude) * magnitude:_.0f}"


# ------------------------------------------------------------------ submission without duplicates

def place(transport, body: Mapping[str, Any], *, settler: Settler) -> dict[str, Any]:
    """``POST /v2/orders`` so that the order exists at most once, and its state is never claimed
    without being known.

    The POST itself is never repeated blindly. When its answer is lost (the connection dropped,
    the read timed out, a 5xx came back) the order may exist or may still be queued on the
    server, so the client looks it up with ``GET /v2/orders:by_client_order_id``, with backoff,
    for up to ``settler.window`` seconds. An order found there is adopted only if it matches the
    submission (symbol, side, qty/notional, type, limit/stop/trail prices, time in force, order
    class, extended hours, the legs' prices); otherwise the client_order_id belongs to another
    order and the server's duplicate-id error (422, code 40010001, "client_order_id must be
    unique") is raised. Only when nothing is found is the same body (same client_order_id, which
    the server never accepts twice) sent again. A repeated call with the client_order_id of an
    existing identical order returns that order (so a double click cannot place a second one).

    Raises:
        UnprocessableError: the client_order_id belongs to a different order (nothing placed).
        OrderStateUnknown: an answer was lost and the order could not be seen; it may exist or
            appear later (``api.order(client_order_id=...)`` tells).
        AlpacaError: the server refused the order (4xx), or the last failure when no attempt can
            have reached the server (nothing placed).
    """
    coid = body["client_order_id"]

    def send() -> dict[str, Any]:
        return transport.trading("POST", "/v2/orders", json=dict(body), retry=False)

    def look() -> Any:
        existing = _by_client_order_id(transport, coid)
        return NOT_SEEN if existing is None else _adopt(transport, existing, body, None)

    def refused(exc: AlpacaError, lost: bool) -> Any:
        if isinstance(exc, UnprocessableError) and "client_order_id" in exc.message and "unique" in exc.message:
            existing = _by_client_order_id(transport, coid)
            if existing is not None:
                return _adopt(transport, existing, body, exc)
        return NOT_SEEN

    order, _ = settler.run(
        send, look=look, refused=refused, resend=True, client_order_id=coid,
        unknown=lambda: (
            f"the order with client_order_id={coid!r} is in an UNKNOWN state: its answer was lost "
            f"and it could not be found within {settler.window:g} s, but the server may still "
            f"place it. Check with api.order(client_order_id={coid!r}) before doing anything else; "
            f"submitting again with client_order_id={coid!r} can never place a second order."),
        nothing_done=f"{NOT_ACTED}; no order with client_order_id={coid!r} was placed")
    return order


def _by_client_order_id(transport, coid: str) -> dict[str, Any] | None:
    try:
        return transport.trading("GET", "/v2/orders:by_client_order_id", params={"client_order_id": coid})
    except NotFoundError:
        return None


DUPLICATE_ID = {"code": 40010001, "message": "client_order_id must be unique"}   # Alpaca's 422


def _adopt(transport, existing: dict[str, Any], body: Mapping[str, Any],
           error: UnprocessableError | None) -> dict[str, Any]:
    """``existing`` if it is the order ``body`` describes; else the duplicate-id error (the
    server's own ``error`` when it sent one)."""
    if (body.get("take_profit") or body.get("stop_loss")) and not existing.get("legs") and existing.get("id"):
        try:                         # the lookup by client id carries no legs: fetch them
            existing = transport.trading("GET", f"/v2/orders/{existing['id']}", params={"nested": True})
        except NotFoundError:
            pass
    differences = order_differences(existing, body)
    if not differences:
        log.info("order %s already exists; returning it instead of placing another",
                 body["client_order_id"])
        return existing
    if error is None:
        error = UnprocessableError(DUPLICATE_ID["message"], status=422, code=DUPLICATE_ID["code"],
                                   body=dict(DUPLICATE_ID), method="POST", path="/v2/orders")
    error.add_note(
        f"alpaca_nb: client_order_id={body['client_order_id']!r} belongs to order {existing.get('id')} "
        f"(submitted {existing.get('submitted_at')}), which differs from this submission in "
        f"{'; '.join(differences)}. The server never accepts an id twice, so this submission was "
        f"not placed; give it another client_order_id.")
    raise error


def order_differences(existing: Mapping[str, Any], body: Mapping[str, Any]) -> list[str]:
    """How an existing order (JSON) differs from the submission ``body`` (an :func:`order_body`):
    ``["qty 2 != 1", ...]``; empty when it is the order ``body`` describes."""
    out = []
    klass = body.get("order_class") or "simple"
    for key in ("symbol", "side", "type", "time_in_force"):
        a, b = str(existing.get(key) or "").lower(), str(body.get(key) or "").lower()
        if a != b:
            out.append(f"{key} {a or None} != {b}")
    if (existing.get("order_class") or "simple") != klass:
        out.append(f"order_class {existing.get('order_class') or 'simple'} != {klass}")
    if bool(existing.get("extended_hours")) != bool(body.get("extended_hours")):
        out.append(f"extended_hours {bool(existing.get('extended_hours'))} != {bool(body.get('extended_hours'))}")
    expected = {k: body.get(k) for k in ("qty", "notional", "limit_price", "stop_price", "trail_price",
                                          "trail_percent")}
    if klass == "oco" and expected["limit_price"] is None:
        expected["limit_price"] = (body.get("take_profit") or {}).get("limit_price")
    if body.get("type") == "trailing_stop":
        expected.pop("stop_price")             # the server sets it from the trail
    if "notional" in body:
        expected.pop("qty")                    # a notional order's qty is the server's
    for key, b in expected.items():
        a = existing.get(key)
        if not _same_number(a, b):
            out.append(f"{key} {a} != {b}")
    legs = [existing, *(existing.get("legs") or [])] if existing.get("legs") else None
    if legs is not None:
        tp, sl = body.get("take_profit"), body.get("stop_loss")
        if tp and not any(o.get("type") == "limit" and _same_number(o.get("limit_price"), tp["limit_price"])
                          for o in legs[1:] + ([legs[0]] if klass == "oco" else [])):
            out.append(f"take_profit.limit_price {tp['limit_price']} not among the legs")
        if sl and not any(o.get("type") in ("stop", "stop_limit")
                          and _same_number(o.get("stop_price"), sl["stop_price"])
                          and _same_number(o.get("limit_price"), sl.get("limit_price"))
                          for o in legs[1:]):
            out.append(f"stop_loss {sl} not among the legs")
    return out


def _same_number(a: Any, b: Any) -> bool:
    if a is None or a == "" or b is None:
        return (a is None or a == "") and b is None
    try:
        return Decimal(str(a)) == Decimal(str(b))
    except InvalidOperation:
        return False
