"""Crypto orders in the sandbox's engine: Alpaca's crypto rules, 24/7 matching and fees.

:class:`MarketWithCrypto` is the market the engine sees: stock symbols go to the stock market,
crypto pairs (``BTC/USD``, or the legacy ``BTCUSD``) to :class:`.crypto_market.CryptoMarket`.
:class:`CryptoOrders` is a mixin of :class:`.engine.Engine` with the crypto checks and fees.

Rules (Alpaca's crypto documentation, "Crypto Orders" and "Crypto Spot Trading"):

* types ``market``, ``limit``, ``stop_limit``; ``time_in_force`` ``gtc`` or ``ioc``; simple
  orders only, no extended-hours flag (crypto trades around the clock);
* ``qty`` fractional, at least the pair's ``min_order_size`` and a multiple of its
  ``min_trade_increment`` (except a sell of the whole position, which fees leave off the
  increment: the sandbox's choice), or ``notional`` (the quantity is floored to the increment at the fill
  price); limit and stop prices multiples of ``price_increment``;
* no shorting: a sell beyond the position's available quantity is refused with Alpaca's
  ``insufficient balance for BTC (requested: 2, available: 1)`` (403 40310000, the wording
  users report from real accounts); buys are paid in cash only (crypto is not marginable), the
  same message names ``USD``;
* pairs quoted in another coin (``ETH/BTC``, ``BTC/USDT``) have market data but are not
  tradable in the sandbox (``tradable: false``): its accounts hold US dollars only;
* orders trade at every instant, whatever the market mode (weekends and holidays included).

Fees (Alpaca's lowest volume tier: maker 15, taker 25 basis points; the sandbox does not
track 30-day volume, so every account stays in that tier): charged on what the fill credits, as
Alpaca does: a buy receives its quantity less the fee (the position's cost basis is what was
paid, so its average entry price includes the fee), a sell receives its proceeds less the fee
(cash). Each fee is a ``CFEE`` activity (``qty`` the coin fee of a buy, ``net_amount`` the cash
fee of a sell, both negative). A fill is a taker's when the order was marketable when it
arrived (market orders, and limit orders filled at their submission instant); a resting order
that fills later is a maker's. [unconfirmed: the CFEE record's exact fields and description.]
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

from .clock import ny_midnight_ns
from .crypto_market import CryptoMarket
from .history import Fill, non_trade_activity
from .ledger import MONEY_PLACES, QTY_PLACES
from .orders import NewOrder, Order, places
from .wire import ApiError, fmt_money, forbidden, unprocessable

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine
    from .ledger import Account, Position

MAKER_BPS = 15
TAKER_BPS = 25
CRYPTO_TYPES = ("market", "limit", "stop_limit")
CRYPTO_TIME_IN_FORCE = ("gtc", "ioc")


class MarketWithCrypto:
    """The stock market with the crypto pairs routed to the crypto market (see the module
    docstring); every other attribute is the stock market's."""

    def __init__(self, stocks, crypto: CryptoMarket):
        self.stocks = stocks
        self.crypto = crypto

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stocks, name)

    @property
    def halted(self) -> set[str]:
        """The stock market's halted symbols, looked up once per order in every matching pass:
        a property, since reaching it through ``__getattr__`` (a failed lookup first) doubled
        the cost of a pass."""
        return self.stocks.halted

    def asset(self, symbol_or_id: str) -> dict | None:
        return self.stocks.asset(symbol_or_id) or self.crypto.asset(symbol_or_id)

    def has(self, symbol: str) -> bool:
        return self.stocks.has(symbol) or self.crypto.has(symbol)

    def quote_at(self, symbol: str, ns: int):
        return (self.crypto if self.crypto.has(symbol) else self.stocks).quote_at(symbol, ns)

    def trade_at(self, symbol: str, ns: int):
        return (self.crypto if self.crypto.has(symbol) else self.stocks).trade_at(symbol, ns)

    def closing_price(self, symbol: str, date: dt.date) -> float | None:
        """A pair's price at the close of NY date ``date``'s stock session (NY midnight when
        stocks do not trade that day): the "last day" price of positions and portfolio history,
        so crypto is valued at the same instants as stocks."""
        if not self.crypto.has(symbol):
            return self.stocks.closing_price(symbol, date)
        sess = self.stocks.sessions.session(date)
        end = sess.close if sess is not None else ny_midnight_ns(date + dt.timedelta(days=1))
        return self.crypto.trade_at(symbol, end - 1).price


def _multiple(value: float, increment: str) -> bool:
    """Whether ``value`` is a whole multiple of the decimal ``increment``."""
    steps = value / float(increment)
    return abs(steps - round(steps)) <= 1e-6


def floor_to(value: float, increment: str) -> float:
    """``value`` rounded down to a multiple of the decimal ``increment``."""
    inc = float(increment)
    digits = max(places(inc), 0)
    return round(math.floor(value / inc + 1e-9) * inc, digits)


class CryptoOrders:
    """Crypto checks, scheduling and fees of the engine (see the module docstring)."""

    def _is_crypto(self: Engine, order: Order) -> bool:
        return order.asset_class == "crypto"

    def _crypto_body(self: Engine, body: Any) -> bool:
        """Whether a ``POST /v2/orders`` body names a crypto pair (before it is parsed)."""
        symbol = body.get("symbol") if isinstance(body, dict) else None
        if not isinstance(symbol, str) or not symbol:
            return False
        asset = self._asset(symbol)
        return bool(asset) and asset.get("class") == "crypto"

    def _check_crypto_order(self: Engine, account: Account, req: NewOrder, asset: dict,
                            quote, now: int) -> bool:
        """Refuse what Alpaca refuses for a crypto order; returns whether it opens (a buy)."""
        if req.type not in CRYPTO_TYPES:
            raise unprocessable(f"invalid type for crypto order: {req.type} "
                                f"(crypto orders accept {', '.join(CRYPTO_TYPES)})")
        if req.time_in_force not in CRYPTO_TIME_IN_FORCE:
            raise unprocessable(f"invalid crypto time_in_force: {req.time_in_force} "
                                f"(crypto orders accept {' or '.join(CRYPTO_TIME_IN_FORCE)})")
        if req.order_class != "simple":
            raise unprocessable("crypto orders must be simple orders")
        if req.extended_hours:
            raise unprocessable("extended_hours is not supported for crypto orders "
                                "(crypto trades around the clock)")
        symbol = asset["symbol"]
        pos = account.positions.get(symbol)
        whole = req.side == "sell" and pos is not None and req.qty is not None \
            and abs(req.qty - pos.qty) < 1e-12
        if req.qty is not None and not whole:     # selling a whole position (fees left dust) is fine
            if req.qty < float(asset["min_order_size"]) - 1e-12:
                raise unprocessable(f"qty must be >= {asset['min_order_size']} for {symbol} "
                                    "(min_order_size)")
            if not _multiple(req.qty, asset["min_trade_increment"]):
                raise unprocessable(f"qty must be a multiple of {asset['min_trade_increment']} for "
                                    f"{symbol} (min_trade_increment)")
        for name in ("limit_price", "stop_price"):
            price = getattr(req, name)
            if price is not None and not _multiple(price, asset["price_increment"]):
                raise unprocessable(f"{name} must be a multiple of {asset['price_increment']} for "
                                    f"{symbol} (price_increment)")
        base, _, quote_ccy = symbol.partition("/")
        if req.side == "sell":
            price = float(quote.bid)
            requested = req.qty if req.qty is not None else req.notional / price
            existing = pos.qty if pos is not None else 0.0
            held = self._held(account.id, symbol, "sell", price=price) if existing > 0 else 0.0
            available = max(round(existing - held, QTY_PLACES), 0.0)
            if requested > available + 1e-12:
                raise _insufficient_balance(base, requested, available)
            return False
        cost = self._value(side="buy", type=req.type, qty=req.qty, notional=req.notional,
                           limit=req.limit_price, stop=req.stop_price, trail_price=None,
                           trail_percent=None, quote=quote)
        available = account.cash - self._holds(account, now)[1]
        if cost > available + 1e-6:
            raise _insufficient_balance(quote_ccy, cost, max(available, 0.0))
        return True

    def _crypto_notional_qty(self: Engine, order: Order, qty: float) -> float:
        asset = self._asset(order.symbol) or {}
        increment = asset.get("min_trade_increment")
        return floor_to(qty, increment) if increment else qty

    def _crypto_fee(self: Engine, account: Account, pos: Position, order: Order, qty: float,
                    price: float, t: int) -> None:
        """Charge the fee of a fill (see the module docstring) and record its CFEE activity."""
        taker = order.type == "market" or t <= order.submitted_at
        rate = (TAKER_BPS if taker else MAKER_BPS) / 10_000
        if order.side == "buy":
            fee_qty = round(qty * rate, QTY_PLACES)
            cost = pos.qty * pos.avg_entry_price
            pos.qty = round(pos.qty - fee_qty, QTY_PLACES)
            if pos.qty > 0:
                pos.avg_entry_price = cost / pos.qty
            record = non_trade_activity(ns=t, seq=self._next_activity_seq(), activity_type="CFEE",
                                        net_amount=0.0, symbol=order.symbol, qty=-fee_qty,
                                        description=f"crypto {'taker' if taker else 'maker'} fee "
                                                    f"({TAKER_BPS if taker else MAKER_BPS} bps), "
                                                    f"order {order.id}")
            record["price"] = fmt_money(price)
        else:
            fee = round(qty * price * rate, MONEY_PLACES)
            account.cash = round(account.cash - fee, MONEY_PLACES)
            record = non_trade_activity(ns=t, seq=self._next_activity_seq(), activity_type="CFEE",
                                        net_amount=-fee, symbol=order.symbol,
                                        description=f"crypto {'taker' if taker else 'maker'} fee "
                                                    f"({TAKER_BPS if taker else MAKER_BPS} bps), "
                                                    f"order {order.id}")
        self._add_activity(account.id, record)
        self._fills.setdefault(account.id, []).extend(fee_fills(record))


def fee_fills(record: dict) -> list[Fill]:
    """A CFEE activity as portfolio history's replay sees it (cash moves by ``-qty * price``):
    a coin fee is coin given away at no price; a cash fee is one unit bought at the fee and
    given back at no price."""
    if record.get("activity_type") != "CFEE" or record.get("_ns") is None:
        return []
    ns, symbol = record["_ns"], record["symbol"]
    if record.get("qty") is not None:
        return [Fill(ns, symbol, float(record["qty"]), 0.0)]
    fee = -float(record.get("net_amount") or 0)
    return [Fill(ns, symbol, 1.0, fee), Fill(ns, symbol, -1.0, 0.0)]


def _insufficient_balance(coin: str, requested: float, available: float) -> ApiError:
    return forbidden(f"insufficient balance for {coin} (requested: {fmt_money(requested)}, "
                     f"available: {fmt_money(available)})")
