"""Admission checks of the sandbox engine: what an order may do before it is accepted.

:class:`Admission` is mixed into :class:`~.engine.Engine`; it owns no state of its own. It holds
the synchronous refusals of ``POST /v2/orders`` and ``PATCH /v2/orders/{id}`` (the wording is
described in :mod:`.engine`): fractional rules, the quantity a closing order may still take
(what other open closing orders hold), shorting permissions and the bracket/oco exit-price
thresholds. Buying power is :mod:`.portfolio`'s, crypto rules :mod:`.crypto_orders`'.
"""

from __future__ import annotations

from .ledger import Account
from .matching import EPS, round_price
from .orders import QTY_PLACES, NewOrder, Order
from .wire import ApiError, fmt_money, forbidden, rejected, unprocessable


class Admission:
    """The order-admission half of the engine (see the module docstring)."""

    def _check_fractional(self, account: Account, req: NewOrder, asset: dict) -> None:
        if not req.fractional:
            return
        if not account.config.get("fractional_trading", True):
            raise unprocessable("qty must be integer")
        if not asset.get("fractionable"):
            raise rejected(f'asset "{asset["symbol"]}" is not fractionable')
        if req.notional is not None and req.notional < 1:
            raise unprocessable("notional must be at least 1")

    def _held(self, account_id: str, symbol: str, side: str, *, exclude: Order | None = None,
              price: float | None = None) -> float:
        """Shares that open closing orders on ``side`` already hold (an exit group counts once;
        ``exclude`` leaves out that order's whole group)."""
        groups: dict[str, float] = {}
        skip = self._group_key(exclude) if exclude is not None else None
        for order in self._open_orders(account_id):
            if order.symbol != symbol or order.side != side or order.opening \
                    or order.status == "held":
                continue
            key = self._group_key(order)
            if key == skip:
                continue
            remaining = order.remaining_qty
            if remaining is None:
                filled_value = order.filled_qty * (order.filled_avg_price or 0.0)
                remaining = max(order.notional - filled_value, 0.0) / price if price else 0.0
            groups[key] = max(groups.get(key, 0.0), remaining)
        return round(sum(groups.values()), QTY_PLACES)

    @staticmethod
    def _group_key(order: Order) -> str:
        """Exit orders of one bracket/oco share a key (they hold the same shares once)."""
        if order.parent_id and order.order_class in ("bracket", "oco"):
            return order.parent_id
        return order.id

    def _insufficient_qty(self, account: Account, symbol: str, side: str, requested: float, *,
                          release: float = 0.0, price: float | None = None) -> ApiError:
        pos = account.positions.get(symbol)
        existing = abs(pos.qty) if pos is not None and (pos.qty > 0) == (side == "sell") else 0.0
        held = self._held(account.id, symbol, side, price=price) - release if existing else 0.0
        available = max(round(existing - held, QTY_PLACES), 0.0)
        return forbidden(
            f"insufficient qty available for order (requested: {fmt_money(requested)}, "
            f"available: {fmt_money(available)})",
            available=fmt_money(available), existing_qty=fmt_money(existing),
            held_for_orders=fmt_money(max(held, 0.0)), symbol=symbol)

    def _check_quantity(self, account: Account, req: NewOrder, asset: dict, quote) -> bool:
        """Whether the order opens (or extends) a position; refuses flips and bad shorts."""
        symbol = asset["symbol"]
        pos = account.positions.get(symbol)
        pos_qty = pos.qty if pos is not None else 0.0
        sell = req.side == "sell"
        price = float(quote.bid if sell else quote.ask)
        requested = req.qty if req.qty is not None else req.notional / price
        closing = pos_qty > EPS if sell else pos_qty < -EPS
        if req.order_class == "oco" and not closing:     # an oco only exits a position
            raise self._insufficient_qty(account, symbol, req.side, requested, price=price)
        if closing:
            held = self._held(account.id, symbol, req.side, price=price)
            if requested > abs(pos_qty) - held + EPS:
                raise self._insufficient_qty(account, symbol, req.side, requested, price=price)
            return False
        if sell:
            self._check_short_sale(account, req, asset)
        return True

    @staticmethod
    def _check_short_sale(account: Account, req: NewOrder, asset: dict) -> None:
        """Whether the account may sell ``asset`` short with this order's terms."""
        symbol = asset["symbol"]
        if not account.can_short():
            raise forbidden("account is not allowed to short")
        if not asset.get("shortable"):
            raise rejected(f"asset {symbol} cannot be sold short")
        if req.fractional:
            raise rejected("fractional orders cannot be sold short")
        if asset.get("borrow_status") == "HTB" and req.time_in_force != "day":
            raise rejected(f"only day orders are allowed for hard-to-borrow asset {symbol}")

    def _check_exit_prices(self, req: NewOrder, last: float) -> None:
        """Alpaca's threshold: a stop-loss at least $0.01 beyond the base price, a take-profit
        at least $0.01 beyond it the other way (base: the entry's limit, else the market)."""
        if req.order_class == "oco":
            exit_sells, base = req.side == "sell", last
        else:
            exit_sells = req.side == "buy"
            base = req.limit_price if req.type in ("limit", "stop_limit") else last
        base = round_price(base)
        tp, sl = req.take_profit_limit, req.stop_loss_stop
        if exit_sells:
            if sl is not None and sl > base - 0.01 + EPS:
                raise rejected(f"stop_loss.stop_price must be <= base_price - 0.01 "
                               f"(base_price: {fmt_money(base)})")
            if tp is not None and tp < base + 0.01 - EPS:
                raise rejected(f"take_profit.limit_price must be >= base_price + 0.01 "
                               f"(base_price: {fmt_money(base)})")
        else:
            if sl is not None and sl < base + 0.01 - EPS:
                raise rejected(f"stop_loss.stop_price must be >= base_price + 0.01 "
                               f"(base_price: {fmt_money(base)})")
            if tp is not None and tp > base - 0.01 + EPS:
                raise rejected(f"take_profit.limit_price must be <= base_price - 0.01 "
                               f"(base_price: {fmt_money(base)})")
