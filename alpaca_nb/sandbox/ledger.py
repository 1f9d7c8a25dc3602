"""Account arithmetic of the sandbox: cash, positions, margin and buying power.

Money rules (Alpaca's, as documented in "Orders at Alpaca" and the Account object):

* A fill of ``q`` shares at ``p`` moves ``q * p`` of cash (buys pay, sells and short sales receive).
* ``equity = cash + long_market_value + short_market_value`` (short market value is negative).
* Reg-T: the initial margin of a marginable position is 50% of its market value (100% for
  non-marginable assets, and for everything when the account's multiplier is 1);
  ``buying_power = max(equity - initial_margin, 0) * multiplier`` (multiplier 2 by default,
  capped at 2 for overnight buying power), less what open orders hold.
* An opening order holds buying power for its estimated value: limit orders at the limit price,
  market buys 4% above the ask under $50 (2.5% at or above), short sales at
  ``max(limit, ask * 1.03)``. Closing orders (selling a long, covering a short) hold nothing.
* Maintenance margin is 30% of the absolute market value unless the asset says otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .wire import fmt_money

MONEY_PLACES = 8
QTY_PLACES = 9
SHORT_BUFFER = 1.03
DEFAULT_MAINTENANCE = 0.30

# /v2/account/configurations as Alpaca answers it since 2026-07-06 (dtbp_check and pdt_check,
# the pattern-day-trading checks, were removed that day).
DEFAULT_CONFIG: dict[str, Any] = {
    "fractional_trading": True,
    "max_margin_multiplier": "2",
    "no_shorting": False,
    "suspend_trade": False,
    "trade_confirm_email": "all",
    "ptp_no_exception_entry": False,
    "max_options_trading_level": 0,
}


def market_buffer(price: float) -> float:
    """Alpaca values a market buy 4% above the price under $50, 2.5% at or above."""
    return 1.04 if price < 50 else 1.025


@dataclass
class Position:
    """A non-zero holding; ``qty`` is negative for a short. ``day_cost`` is the intraday basis
    (shares carried overnight valued at the previous close) as of NY date ``day``."""

    symbol: str
    asset_id: str
    exchange: str
    asset_class: str = "us_equity"
    marginable: bool = True
    maintenance: float = DEFAULT_MAINTENANCE
    qty: float = 0.0
    avg_entry_price: float = 0.0
    day: str | None = None
    day_cost: float = 0.0

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Position:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    def intraday_cost(self, day: str, lastday_price: float | None) -> float:
        if self.day == day:
            return self.day_cost
        return self.qty * (lastday_price if lastday_price else self.avg_entry_price)


@dataclass
class Account:
    """One sandbox account. Times are epoch nanoseconds."""

    id: str
    account_number: str
    created_at: int
    cash: float
    initial_cash: float
    status: str = "ACTIVE"
    config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CONFIG))
    positions: dict[str, Position] = field(default_factory=dict)
    data_plan: str = "unlimited"    # market-data plan, see .plans ("unlimited" or "basic")
    # cash dividends fixed at an ex-date, not paid yet (see .corporate_events): dicts with
    # action, symbol, cusip, qty (signed), rate, record and payable (ISO New York dates)
    entitlements: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "account_number": self.account_number, "created_at": self.created_at,
                "cash": self.cash, "initial_cash": self.initial_cash, "status": self.status,
                "config": self.config, "data_plan": self.data_plan,
                "entitlements": self.entitlements}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Account:
        config = dict(DEFAULT_CONFIG)    # keys Alpaca no longer has (PDT) are dropped
        config.update({k: v for k, v in (record.get("config") or {}).items() if k in DEFAULT_CONFIG})
        return cls(id=record["id"], account_number=record["account_number"],
                   created_at=int(record["created_at"]), cash=float(record["cash"]),
                   initial_cash=float(record["initial_cash"]), status=record.get("status", "ACTIVE"),
                   config=config, data_plan=record.get("data_plan") or "unlimited",
                   entitlements=list(record.get("entitlements") or []))

    @property
    def multiplier(self) -> float:
        return float(self.config.get("max_margin_multiplier") or 2)

    @property
    def regt_multiplier(self) -> float:
        return min(self.multiplier, 2.0)

    def initial_requirement(self, marginable: bool) -> float:
        """Initial margin as a fraction of market value."""
        return 1.0 if (not marginable or self.regt_multiplier <= 1) else 1.0 / self.regt_multiplier

    def can_short(self) -> bool:
        return not self.config.get("no_shorting") and self.multiplier > 1


def apply_fill(account: Account, position: Position, *, qty: float, price: float, day: str,
               lastday_price: float | None) -> Position:
    """Book a fill of ``qty`` shares (signed: negative sells) at ``price`` on NY date ``day``.

    Updates cash, quantity, average entry price and the intraday basis; returns the position
    (its ``qty`` may now be 0, in which case the caller drops it).
    """
    account.cash = round(account.cash - qty * price, MONEY_PLACES)
    if position.day != day:
        position.day_cost = position.intraday_cost(day, lastday_price)
        position.day = day
    old = position.qty
    new = round(old + qty, QTY_PLACES)
    if old == 0 or old * qty > 0:            # opening or adding
        position.avg_entry_price = (abs(old) * position.avg_entry_price + abs(qty) * price) / abs(new)
        position.day_cost += qty * price
    elif abs(qty) <= abs(old):               # reducing (avg entry is unchanged)
        position.day_cost = position.day_cost * (new / old) if old else 0.0
    else:                                    # flipped through zero (only a submitted short can)
        position.avg_entry_price = price
        position.day_cost = new * price
    position.qty = new
    position.day_cost = round(position.day_cost, MONEY_PLACES)
    return position


@dataclass
class Mark:
    """Prices of one symbol at the valuation instant."""

    current: float
    lastday: float | None


@dataclass
class Valuation:
    long_market_value: float = 0.0
    short_market_value: float = 0.0
    initial_margin: float = 0.0
    maintenance_margin: float = 0.0
    cash: float = 0.0

    @property
    def equity(self) -> float:
        return self.cash + self.long_market_value + self.short_market_value


def value_account(account: Account, marks: dict[str, Mark]) -> Valuation:
    val = Valuation(cash=account.cash)
    for sym, pos in account.positions.items():
        mv = pos.qty * marks[sym].current
        if mv >= 0:
            val.long_market_value += mv
        else:
            val.short_market_value += mv
        val.initial_margin += abs(mv) * account.initial_requirement(pos.marginable)
        val.maintenance_margin += abs(mv) * pos.maintenance
    return val


def buying_power(account: Account, val: Valuation) -> float:
    """Reg-T buying power before open-order holds."""
    return max(val.equity - val.initial_margin, 0.0) * account.regt_multiplier


def _money(value: float) -> str:
    return fmt_money(round(value, 6), 6)


def _ratio(value: float) -> str:
    return fmt_money(round(value, 10), 10)


def user_configurations(account: Account) -> dict[str, Any] | None:
    """The account's configurations that differ from the defaults (what its user set through
    ``PATCH /v2/account/configurations``), or None while there are none."""
    changed = {k: v for k, v in account.config.items() if DEFAULT_CONFIG.get(k) != v}
    return changed or None


def account_wire(account: Account, val: Valuation, *, holds: float, nonmarginable_holds: float,
                 last_equity: float, last_maintenance: float, balance_asof: str,
                 created_at: str) -> dict[str, Any]:
    """Alpaca's Account object (protocol reference 2.2) as of 2026-07-06: without the
    pattern-day-trading fields (``daytrade_count``, ``daytrading_buying_power``,
    ``pattern_day_trader``) and the day-trading buying power at the start of the day
    (``bod_dtbp``) that only they used."""
    raw_bp = buying_power(account, val)
    bp = max(raw_bp - holds, 0.0)
    equity = val.equity
    non_marginable = max(val.cash - nonmarginable_holds, 0.0)
    return {
        "id": account.id,
        "admin_configurations": {},
        "user_configurations": user_configurations(account),
        "account_number": account.account_number,
        "status": account.status,
        "crypto_status": "ACTIVE",          # the sandbox trades crypto pairs
        "options_approved_level": 0,
        "options_trading_level": 0,
        "currency": "USD",
        "buying_power": _money(bp),
        "regt_buying_power": _money(bp),
        "effective_buying_power": _money(bp),
        "non_marginable_buying_power": _money(non_marginable),
        "options_buying_power": _money(non_marginable),
        "cash": _money(val.cash),
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "pending_reg_taf_fees": "0",
        "intraday_adjustments": "0",
        "portfolio_value": _money(equity),
        "trading_blocked": account.status != "ACTIVE",
        "transfers_blocked": False,
        "account_blocked": account.status != "ACTIVE",
        "created_at": created_at,
        "trade_suspended_by_user": bool(account.config.get("suspend_trade")),
        "multiplier": fmt_money(account.multiplier),
        "shorting_enabled": account.can_short(),
        "equity": _money(equity),
        "last_equity": _money(last_equity),
        "long_market_value": _money(val.long_market_value),
        "short_market_value": _money(val.short_market_value),
        "position_market_value": _money(val.long_market_value - val.short_market_value),
        "initial_margin": _money(val.initial_margin),
        "maintenance_margin": _money(val.maintenance_margin),
        "last_maintenance_margin": _money(last_maintenance),
        "sma": _money(max(last_equity - last_maintenance, 0.0)),
        "balance_asof": balance_asof,
        "crypto_tier": 0,
    }


def position_wire(pos: Position, mark: Mark, *, day: str, held_for_orders: float) -> dict[str, Any]:
    """Alpaca's Position object (protocol reference 2.3); short quantities and values negative."""
    qty = pos.qty
    current = mark.current
    lastday = mark.lastday if mark.lastday else current
    market_value = qty * current
    cost_basis = qty * pos.avg_entry_price
    pl = market_value - cost_basis
    day_cost = pos.intraday_cost(day, mark.lastday)
    day_pl = market_value - day_cost
    available = qty - held_for_orders if qty > 0 else qty + held_for_orders
    return {
        "asset_id": pos.asset_id,
        "symbol": pos.symbol,
        "exchange": pos.exchange,
        "asset_class": pos.asset_class,
        "asset_marginable": pos.marginable,
        "qty": fmt_money(qty),
        "qty_available": fmt_money(round(available, QTY_PLACES)),
        "avg_entry_price": _money(pos.avg_entry_price),
        "side": "long" if qty > 0 else "short",
        "market_value": _money(market_value),
        "cost_basis": _money(cost_basis),
        "unrealized_pl": _money(pl),
        "unrealized_plpc": _ratio(pl / abs(cost_basis)) if cost_basis else "0",
        "unrealized_intraday_pl": _money(day_pl),
        "unrealized_intraday_plpc": _ratio(day_pl / abs(day_cost)) if day_cost else "0",
        "current_price": _money(current),
        "lastday_price": _money(lastday),
        "change_today": _ratio((current - lastday) / lastday) if lastday else "0",
    }
