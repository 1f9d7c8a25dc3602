"""Account-level views of the sandbox engine: buying power, the Account object, account
configurations, positions (and closing them), activities and portfolio history.

:class:`Portfolio` is mixed into :class:`~.engine.Engine`; it owns no state of its own. Buying
power follows :mod:`.ledger`: an opening order must fit in ``max(equity - initial_margin, 0) *
multiplier`` less what other open opening orders hold, valued as Alpaca values them (limit price,
market buys 2.5%/4% above the ask, short sales at ``max(limit, ask * 1.03)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import Session, ny_date
from .history import portfolio_history, select_activities
from .ledger import (
    SHORT_BUFFER,
    Account,
    Mark,
    Position,
    account_wire,
    buying_power,
    market_buffer,
    position_wire,
    value_account,
)
from .matching import EPS
from .orders import QTY_PLACES, NewOrder, Order
from .wire import (
    ApiError,
    fmt_money,
    forbidden,
    iso_us,
    not_found,
    parse_bool,
    parse_int,
    unprocessable,
)

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine


def _money(value: float) -> str:
    return fmt_money(round(value, 6), 6)


class Portfolio:
    """The account half of the engine (see the module docstring)."""

    # ================================================================== buying power
    @staticmethod
    def _value(*, side: str, type: str, qty: float | None, notional: float | None,
               limit: float | None, stop: float | None, trail_price: float | None,
               trail_percent: float | None, quote) -> float:
        """An opening order's value in dollars, as Alpaca estimates it for buying power."""
        ask = float(quote.ask)
        if qty is None:
            return notional or 0.0
        if side == "buy":
            if type in ("limit", "stop_limit"):
                price = limit
            elif type == "stop":
                price = stop * market_buffer(stop)
            elif type == "trailing_stop":
                price = ask + trail_price if trail_price is not None \
                    else ask * (1 + trail_percent / 100)
            else:
                price = ask * market_buffer(ask)
        else:
            price = max(limit or 0.0, ask * SHORT_BUFFER)
        return qty * price

    def _order_value(self: Engine, order: Order, quote) -> float:
        remaining_notional = None
        if order.notional is not None and order.total_qty is None:
            remaining_notional = order.notional - order.filled_qty * (order.filled_avg_price or 0.0)
        return self._value(side=order.side, type=order.type, qty=order.remaining_qty,
                           notional=remaining_notional, limit=order.limit_price,
                           stop=order.stop_price, trail_price=order.trail_price,
                           trail_percent=order.trail_percent, quote=quote)

    def _bp_factor(self: Engine, account: Account, symbol: str) -> float:
        asset = self._asset(symbol) or {}
        return account.initial_requirement(bool(asset.get("marginable", True))) * \
            account.regt_multiplier

    def _holds(self: Engine, account: Account, now: int, *,
               exclude: Order | None = None) -> tuple[float, float]:
        """Buying power held by open opening orders, and cash held by open buys. The exits of
        one bracket (which execute one instead of the other) hold once, the larger of them;
        ``exclude`` leaves out that order's whole group."""
        bp_holds: dict[str, float] = {}
        cash_holds: dict[str, float] = {}
        skip = self._group_key(exclude) if exclude is not None else None
        quotes: dict[str, Any] = {}
        for order in self._open_orders(account.id):
            if not order.opening or order.status == "held":
                continue
            key = self._group_key(order)
            if key == skip:
                continue
            quote = quotes.get(order.symbol)
            if quote is None:
                quote = quotes[order.symbol] = self.market.quote_at(order.symbol, now)
            value = self._order_value(order, quote)
            bp_holds[key] = max(bp_holds.get(key, 0.0), value * self._bp_factor(account, order.symbol))
            if order.side == "buy":
                cash_holds[key] = max(cash_holds.get(key, 0.0), value)
        return sum(bp_holds.values()), sum(cash_holds.values())

    def _available_buying_power(self: Engine, account: Account, now: int, *,
                                exclude: Order | None = None) -> float:
        val = value_account(account, self._marks(account, now))
        return buying_power(account, val) - self._holds(account, now, exclude=exclude)[0]

    def _check_buying_power(self: Engine, account: Account, req: NewOrder, asset: dict, quote,
                            now: int, *, exclude: Order | None = None) -> None:
        value = self._value(side=req.side, type=req.type, qty=req.qty, notional=req.notional,
                            limit=req.limit_price, stop=req.stop_price, trail_price=req.trail_price,
                            trail_percent=req.trail_percent, quote=quote)
        cost = value * self._bp_factor(account, asset["symbol"])
        available = self._available_buying_power(account, now, exclude=exclude)
        if cost > available + 1e-6:
            raise forbidden("insufficient buying power", buying_power=_money(max(available, 0.0)),
                            cost_basis=_money(value))

    # ================================================================== account views
    def _marks(self: Engine, account: Account, now: int) -> dict[str, Mark]:
        return {sym: Mark(float(self.market.trade_at(sym, now).price), self._lastday_price(sym, now))
                for sym in account.positions}

    def _last_close_values(self: Engine, account: Account,
                           prev: Session | None) -> tuple[float, float]:
        """Equity and maintenance margin at the previous session's close (replayed fills)."""
        if prev is None:
            return account.initial_cash, 0.0
        key = (account.id, prev.date)
        cached = self._last_close_cache.get(key)
        if cached is not None:
            return cached
        cash = account.initial_cash
        qty: dict[str, float] = {}
        for fill in self._fills.get(account.id, ()):
            if fill.ns > prev.close:
                break
            cash -= fill.qty * fill.price
            qty[fill.symbol] = round(qty.get(fill.symbol, 0.0) + fill.qty, QTY_PLACES)
        equity, maintenance = cash, 0.0
        for sym, q in qty.items():
            if abs(q) < EPS:
                continue
            price = self._session_close_price(sym, prev)
            equity += q * price
            pos = account.positions.get(sym)
            maintenance += abs(q * price) * (pos.maintenance if pos else 0.30)
        self._last_close_cache[key] = (equity, maintenance)
        return equity, maintenance

    def account_view(self: Engine, account_id: str) -> dict[str, Any]:
        """``GET /v2/account``."""
        account = self._account(account_id)
        now = self.clock.now_ns()
        self._advance(now)
        val = value_account(account, self._marks(account, now))
        bp_hold, cash_hold = self._holds(account, now)
        prev = self._previous_session(now)
        last_equity, last_maintenance = self._last_close_values(account, prev)
        asof = (prev.date if prev is not None else ny_date(now)).isoformat()
        return account_wire(account, val, holds=bp_hold, nonmarginable_holds=cash_hold,
                            last_equity=last_equity, last_maintenance=last_maintenance,
                            balance_asof=asof, created_at=iso_us(account.created_at))

    def configurations(self: Engine, account_id: str) -> dict[str, Any]:
        return dict(self._account(account_id).config)

    def update_configurations(self: Engine, account_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /v2/account/configurations``; unknown keys are ignored (among them
        ``dtbp_check`` and ``pdt_check``, which Alpaca removed on 2026-07-06), bad values refused."""
        account = self._account(account_id)
        update: dict[str, Any] = {}
        if body.get("trade_confirm_email") is not None:
            if body["trade_confirm_email"] not in ("all", "none"):
                raise unprocessable("invalid trade_confirm_email: must be all or none")
            update["trade_confirm_email"] = body["trade_confirm_email"]
        for name in ("suspend_trade", "no_shorting", "fractional_trading", "ptp_no_exception_entry"):
            if body.get(name) is not None:
                update[name] = parse_bool(body[name], name)
        if body.get("max_margin_multiplier") is not None:
            value = str(body["max_margin_multiplier"]).strip()
            if value.endswith(".0"):
                value = value[:-2]
            if value not in ("1", "2", "4"):
                raise unprocessable("invalid max_margin_multiplier: must be 1, 2 or 4")
            update["max_margin_multiplier"] = value
        if body.get("max_options_trading_level") is not None:
            update["max_options_trading_level"] = parse_int(
                body["max_options_trading_level"], "max_options_trading_level", lo=0, hi=3)
        account.config.update(update)
        self._dirty_account(account)
        self._commit()
        return dict(account.config)

    # ================================================================== positions
    def _position(self: Engine, account: Account, symbol_or_id: str) -> Position:
        pos = account.positions.get(symbol_or_id)
        if pos is None:
            pos = next((p for p in account.positions.values() if p.asset_id == symbol_or_id), None)
        if pos is None and "/" not in symbol_or_id:     # a crypto pair written BTCUSD
            asset = self._asset(symbol_or_id) or {}
            pos = account.positions.get(asset.get("symbol", "")) if asset.get("class") == "crypto" else None
        if pos is None:
            raise not_found("position does not exist")
        return pos

    def _position_wire(self: Engine, account: Account, pos: Position, now: int) -> dict[str, Any]:
        mark = Mark(float(self.market.trade_at(pos.symbol, now).price),
                    self._lastday_price(pos.symbol, now))
        side = "sell" if pos.qty > 0 else "buy"
        price = float(mark.current)
        return position_wire(pos, mark, day=ny_date(now).isoformat(),
                             held_for_orders=self._held(account.id, pos.symbol, side, price=price))

    def positions(self: Engine, account_id: str) -> list[dict[str, Any]]:
        account = self._account(account_id)
        now = self.clock.now_ns()
        self._advance(now)
        return [self._position_wire(account, p, now)
                for _, p in sorted(account.positions.items())]

    def position(self: Engine, account_id: str, symbol_or_id: str) -> dict[str, Any]:
        account = self._account(account_id)
        now = self.clock.now_ns()
        self._advance(now)
        return self._position_wire(account, self._position(account, symbol_or_id), now)

    def close_position(self: Engine, account_id: str, symbol_or_id: str, *, qty: Any = None,
                       percentage: Any = None) -> dict[str, Any]:
        """``DELETE /v2/positions/{symbol}``: a market day order for all, ``qty`` or
        ``percentage`` (0-100) of the position; returns that order."""
        account = self._account(account_id)
        self._advance(self.clock.now_ns())
        pos = self._position(account, symbol_or_id)
        if qty not in (None, "") and percentage not in (None, ""):
            raise unprocessable("only one of qty or percentage is accepted")
        size = abs(pos.qty)
        if qty not in (None, ""):
            try:
                size = float(qty)
            except ValueError:
                raise unprocessable("invalid qty") from None
            if size <= 0:
                raise unprocessable("qty must be > 0")
        elif percentage not in (None, ""):
            try:
                pct = float(percentage)
            except ValueError:
                raise unprocessable("invalid percentage") from None
            if not 0 < pct <= 100:
                raise unprocessable("percentage must be > 0 and <= 100")
            size = round(abs(pos.qty) * pct / 100, QTY_PLACES)
            asset = self._asset(pos.symbol) or {}
            if not asset.get("fractionable") and pct < 100:
                size = float(int(size))
            if size <= 0:
                raise unprocessable("qty must be > 0")
        body = {"symbol": pos.symbol, "qty": fmt_money(size), "side": "sell" if pos.qty > 0 else "buy",
                "type": "market", "time_in_force": "gtc" if pos.asset_class == "crypto" else "day"}
        return self.submit_order(account_id, body)

    def close_all_positions(self: Engine, account_id: str, *,
                            cancel_orders: bool) -> list[dict[str, Any]]:
        """``DELETE /v2/positions``: 207 body items ``{symbol, status, body}``."""
        account = self._account(account_id)
        if cancel_orders:
            self.cancel_all_orders(account_id)
        results = []
        for symbol in sorted(account.positions):
            try:
                order = self.close_position(account_id, symbol)
                results.append({"symbol": symbol, "status": 200, "body": order})
            except ApiError as exc:
                results.append({"symbol": symbol, "status": exc.status, "body": exc.body()})
        return results

    # ================================================================== activities, history
    def activities(self: Engine, account_id: str, query: dict[str, Any], *,
                   activity_type: str | None = None) -> list[dict[str, Any]]:
        self._account(account_id)
        self._advance(self.clock.now_ns())
        return select_activities(self._activities.get(account_id, []), query,
                                 activity_type=activity_type)

    def portfolio_history(self: Engine, account_id: str, query: dict[str, Any]) -> dict[str, Any]:
        account = self._account(account_id)
        now = self.clock.now_ns()
        self._advance(now)
        return portfolio_history(query, fills=self._fills.get(account_id, []),
                                 initial_cash=account.initial_cash, created_ns=account.created_at,
                                 now_ns=now, sessions=self.sessions, market=self.market)


__all__ = ["Portfolio"]
