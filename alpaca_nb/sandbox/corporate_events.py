"""What corporate actions do to accounts when the sandbox clock crosses an ex-date.

:class:`CorporateEvents` is a mixin of the :class:`~.engine.Engine`: its ``_advance`` runs the
engine up to just before each ex-date of a symbol some account holds or has an open order in,
applies the actions of that instant (New York midnight of the ex-date, when the market's raw
prices change), and likewise pays the dividends due at each payable date (New York midnight),
then carries on. The instant processed is persisted with the changes, so after a restart
(``--db``) an ex-date or payable date that passed while the sandbox was down is applied once.

At a real broker, and here:

* **Split / reverse split**: the position's quantity is multiplied by ``new_rate / old_rate``
  and its average entry price by the inverse (the cost basis is unchanged); a ``SPLIT``
  activity records it. A position of whole shares stays whole: the fractional share a split
  leaves (a 1-for-10 reverse split of 25 shares gives 2.5) is paid as cash in lieu (a ``CIL``
  activity, at the previous close adjusted for the split), as Alpaca documents for fractional
  remainders. A position that was already fractional keeps its fractional result (the sandbox's
  choice: the account trades fractions).
* **Cash dividend**: the entitlement is fixed at the ex-date, for the position held at its
  start (the record holders: a buyer on the ex-date gets nothing, a seller keeps it), and paid
  on the payable date: ``qty * rate`` is credited (debited for a short, which owes the
  dividend) with a ``DIV`` activity dated that day (sub-type ``CDIV``, ``symbol``, ``cusip``,
  ``qty``, ``per_share_amount``). Until then the entitlement waits with the account (persisted
  with it); cash is not credited before the payable date, as at Alpaca.
* **Spin-off**: the spun-off company is not in the sandbox's asset list, so holders receive the
  value of the new shares (``qty * rate``, rate = the value spun off per share) as cash, with a
  ``SPIN`` activity (the sandbox's choice).
* **Open orders** on a symbol that splits are canceled (``canceled`` trade update) at the
  ex-date. Alpaca documents that non-marketable GTC limit orders are price-adjusted for
  corporate actions, but not how that reaches the API (a replace? which event?); a cancel is a
  state every client handles and never leaves an order at a pre-split price or quantity. Orders
  are not changed for dividends or spin-offs (no price reduction by the dividend amount).
"""

from __future__ import annotations

import datetime as dt
import logging
import math

from .clock import ny_date, ny_midnight_ns
from .corporate import Action
from .history import Fill, non_trade_activity
from .ledger import MONEY_PLACES, QTY_PLACES

log = logging.getLogger(__name__)

__all__ = ["CorporateEvents"]

_EPS = 1e-9
_BOOKED = ("SPLIT", "CIL", "DIV", "SPIN")        # the activities this module writes


def _payable_ns(entitlement: dict) -> int:
    """When a dividend entitlement is paid: New York midnight of its payable date."""
    return ny_midnight_ns(dt.date.fromisoformat(entitlement["payable"]))


def booked_fills(record: dict) -> list[Fill]:
    """The activity as portfolio history's replay sees it (it replays fills: cash moves by
    ``-qty * price``): a split adds shares at no cost, cash in lieu sells the fraction, a
    payment is a share bought at minus the amount and given back at no cost."""
    kind, ns, symbol = record.get("activity_type"), record.get("_ns"), record.get("symbol")
    if kind not in _BOOKED or ns is None or symbol is None:
        return []
    amount = float(record.get("net_amount") or 0)
    if kind == "SPLIT":
        return [Fill(ns, symbol, float(record.get("qty") or 0), 0.0)]
    if kind == "CIL":
        qty = float(record.get("qty") or 0)
        return [Fill(ns, symbol, -qty, amount / qty)] if qty else []
    return [Fill(ns, symbol, 1.0, -amount), Fill(ns, symbol, -1.0, 0.0)]


class CorporateEvents:
    """Mixin of the engine (see the module docstring); uses its accounts, orders, market and
    persistence helpers."""

    def _advance(self, now: int) -> None:
        start = self._processed_ns
        if now > start and ny_date(now) != ny_date(start):     # a New York midnight passed
            ex_dates = self._ex_dates(start, now)
            while True:       # ex-dates and payable dates in time order (an ex-date adds payments)
                ex = ex_dates[0][0] if ex_dates else None
                pay = self._next_payment(now)
                instant = min((t for t in (ex, pay) if t is not None), default=None)
                if instant is None:
                    break
                super()._advance(instant - 1)          # everything before that day, as it was
                self._processed_ns = instant
                if instant == ex:
                    for action in ex_dates.pop(0)[1]:
                        try:
                            self._apply_action(action, instant)
                        except Exception:  # one broken action must not stop the market for everyone
                            log.exception("sandbox: applying %s %s of %s failed", action.type,
                                          action.id, action.symbol)
                self._pay_due(instant)
                self._commit()
        super()._advance(now)

    def _book(self, account_id: str, record: dict) -> None:
        self._add_activity(account_id, record)
        self._fills.setdefault(account_id, []).extend(booked_fills(record))

    def _lastday_price(self, symbol: str, t: int) -> float | None:
        """The previous session's close, adjusted for a split that took effect since (so a
        position's ``lastday_price`` and ``change_today`` see no fake jump on an ex-date)."""
        price = super()._lastday_price(symbol, t)
        prev = self.sessions.previous_session(ny_date(t))
        if price is None or prev is None:
            return price
        for action in self.market.corporate.between([symbol], prev.date, ny_date(t)):
            if action.type in ("forward_split", "reverse_split"):
                price *= action.factor
        return price

    def _ex_dates(self, start: int, end: int) -> list[tuple[int, list[Action]]]:
        """(instant, actions) for ex-dates with ``start < NY midnight <= end`` of the symbols
        that any account holds or has open orders in, by instant."""
        symbols = {s for account in self.accounts.values() for s in account.positions}
        symbols.update(order.symbol for order in self._open.values())
        found: dict[int, list[Action]] = {}
        corporate = self.market.corporate
        for action in corporate.between(sorted(symbols), ny_date(start) - dt.timedelta(days=1), ny_date(end)):
            instant = ny_midnight_ns(action.ex_date)
            if start < instant <= end:
                found.setdefault(instant, []).append(action)
        return sorted(found.items())

    def _next_payment(self, end: int) -> int | None:
        """The first payable instant (NY midnight of a payable date) of a waiting dividend
        entitlement with ``processed < instant <= end``, None without one."""
        due = [_payable_ns(e) for account in self.accounts.values() for e in account.entitlements]
        due = [t for t in due if self._processed_ns < t <= end]
        return min(due, default=None)

    def _pay_due(self, t: int) -> None:
        """Pay every entitlement whose payable instant is at or before ``t``."""
        for account in self.accounts.values():
            due = [e for e in account.entitlements if _payable_ns(e) <= t]
            if not due:
                continue
            account.entitlements = [e for e in account.entitlements if _payable_ns(e) > t]
            for e in due:
                self._pay(account, e["symbol"], e["cusip"], e["qty"], t + 1, "DIV", e["rate"],
                          sub_type="CDIV", description=f"Cash DIV @ {e['rate']}, Pos QTY: "
                                                       f"{e['qty']:g}, Rec Date: {e['record']}")
            self._dirty_account(account)

    def _apply_action(self, action: Action, t: int) -> None:
        if action.type in ("forward_split", "reverse_split"):
            for order in [o for o in self._open.values() if o.symbol == action.symbol]:
                self._cancel(order, t, reason=f"{action.type} of {action.symbol}")
        booked = t + 1      # after the previous session's close (always-open: its close is t)
        for account in self.accounts.values():
            position = account.positions.get(action.symbol)
            if position is None or abs(position.qty) < _EPS:
                continue
            if action.type in ("forward_split", "reverse_split"):
                self._split(account, position, action, booked)
            elif action.type == "cash_dividend":      # fixed now, paid on the payable date
                account.entitlements.append({
                    "action": action.id, "symbol": action.symbol, "cusip": action.cusip,
                    "qty": position.qty, "rate": action.rate,
                    "record": action.record_date.isoformat(),
                    "payable": action.payable_date.isoformat()})
                self._dirty_account(account)
            elif action.type == "spin_off":
                self._pay(account, action.symbol, action.cusip, position.qty, booked, "SPIN",
                          action.rate, description=f"Spin-off of {action.new_symbol} "
                                                   f"({action.new_rate:g} per {action.old_rate:g} "
                                                   f"shares), paid as cash")

    def _pay(self, account, symbol: str, cusip: str, qty: float, t: int, kind: str,
             per_share: float, *, description: str, sub_type: str | None = None) -> None:
        """Credit ``qty * per_share`` (a debit for a short) with a ``kind`` activity at ``t``."""
        amount = round(qty * per_share, 2)
        account.cash = round(account.cash + amount, MONEY_PLACES)
        self._dirty_account(account)
        self._book(account.id, non_trade_activity(
            ns=t, seq=self._next_activity_seq(), activity_type=kind, net_amount=amount,
            sub_type=sub_type, symbol=symbol, cusip=cusip, qty=qty,
            per_share_amount=per_share, description=description))

    def _split(self, account, position, action: Action, t: int) -> None:
        ratio = action.new_rate / action.old_rate
        old_qty = position.qty
        new_qty = round(old_qty * ratio, QTY_PLACES)
        whole = abs(old_qty - round(old_qty)) < _EPS
        remainder = 0.0
        if whole:
            kept = float(math.trunc(new_qty + math.copysign(_EPS, new_qty)))
            remainder = round(new_qty - kept, QTY_PLACES)
            new_qty = kept
        prev = self.sessions.previous_session(action.ex_date)
        close = self.market.closing_price(action.symbol, prev.date) if prev is not None else None
        price = (close or position.avg_entry_price * ratio) / ratio
        position.avg_entry_price = position.avg_entry_price / ratio
        position.qty = new_qty
        position.day = action.ex_date.isoformat()       # today's basis: yesterday's close, split
        position.day_cost = new_qty * price
        self._book(account.id, non_trade_activity(
            ns=t, seq=self._next_activity_seq(), activity_type="SPLIT", net_amount=0.0,
            symbol=action.symbol, cusip=action.new_cusip or action.cusip,
            qty=round(new_qty + remainder - old_qty, QTY_PLACES),
            description=f"{action.new_rate:g}-for-{action.old_rate:g} split: {old_qty:g} -> "
                        f"{new_qty + remainder:g} shares"))
        if abs(remainder) > _EPS:
            cash = round(remainder * price, 2)
            account.cash = round(account.cash + cash, MONEY_PLACES)
            self._book(account.id, non_trade_activity(
                ns=t, seq=self._next_activity_seq(), activity_type="CIL", net_amount=cash,
                symbol=action.symbol, qty=remainder, per_share_amount=round(price, 4),
                description=f"Cash in lieu of {remainder:g} shares of {action.symbol}"))
        if abs(new_qty) < _EPS:
            account.positions.pop(action.symbol, None)
        self._dirty_account(account)
        self._dirty_position(account.id, action.symbol)
