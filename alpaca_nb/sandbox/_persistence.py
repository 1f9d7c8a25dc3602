"""Bookkeeping of the sandbox engine: order indexes, write-through to the store, trade updates.

:class:`Persistence` is mixed into :class:`~.engine.Engine`; the state it works on is created in
``Engine.__init__``. Every change marks what it touched (``_dirty_*``, ``_add_activity``) and
queues its ``trade_updates`` events (``_emit``); ``_commit`` writes the marked records to the
store (:mod:`.store`) in one transaction and only then publishes the queued events to
subscribers, so nothing is announced that a restart would lose. ``_load`` rebuilds the
in-memory state from the store at start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .corporate_events import booked_fills
from .crypto_orders import fee_fills
from .history import as_fill
from .ledger import Account, Position
from .orders import Order
from .store import Changes
from .wire import fmt_money, iso_nano

log = logging.getLogger(__name__)

Event = dict[str, Any]


class Persistence:
    """The engine's order indexes, store write-through and trade-update publication (see the
    module docstring)."""

    # ================================================================== events
    def subscribe(self, account_id: str, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` (on the loop thread) for each trade update of the account;
        returns the function that unsubscribes."""
        subs = self._subs.setdefault(account_id, [])
        subs.append(callback)

        def unsubscribe() -> None:
            current = self._subs.get(account_id)
            if current is None:
                return
            try:
                current.remove(callback)
            except ValueError:
                pass
            if not current:
                self._subs.pop(account_id, None)
        return unsubscribe

    def _emit(self, order: Order, event: str, t: int, *, execution_id: str | None = None,
              price: float | None = None, qty: float | None = None,
              position_qty: float | None = None) -> None:
        if order.account_id not in self._subs:
            return
        data: Event = {"event": event, "timestamp": iso_nano(t),
                       "order": self._wire(order, nested=bool(order.leg_ids))}
        if execution_id is not None:
            data["execution_id"] = execution_id
            data["price"] = fmt_money(price)
            data["qty"] = fmt_money(qty)
            data["position_qty"] = fmt_money(position_qty) or "0"
        self._events.append((order.account_id, data))

    # ================================================================== persistence
    def _load(self) -> None:
        snap = self._store.load()
        if "processed_ns" in snap.meta:
            self._processed_ns = int(snap.meta["processed_ns"])
        for key_id, digest, account_id in snap.keys:
            self._keys[key_id] = (digest, account_id)
        for record in snap.accounts:
            account = Account.from_record(record)
            self.accounts[account.id] = account
            self._account_orders[account.id] = []
        for account_id, record in snap.positions:
            pos = Position.from_record(record)
            if account_id in self.accounts:
                self.accounts[account_id].positions[pos.symbol] = pos
        for order in sorted((Order.from_record(r) for r in snap.orders), key=lambda o: o.seq):
            self._register(order)
            self._seq = max(self._seq, order.seq)
        for account_id, record in snap.activities:
            self._activities.setdefault(account_id, []).append(record)
            fill = as_fill(record)
            if fill is not None:
                self._fills.setdefault(account_id, []).append(fill)
            self._fills.setdefault(account_id, []).extend(fee_fills(record))   # crypto fees
            self._fills[account_id].extend(booked_fills(record))    # splits, cash in lieu, payments
            self._activity_seq = max(self._activity_seq, int(record.get("_seq", 0)))

    def _register(self, order: Order) -> None:
        self._orders[order.id] = order
        self._by_client[(order.account_id, order.client_order_id)] = order.id
        self._account_orders.setdefault(order.account_id, []).append(order)
        if order.is_open:
            self._open[order.id] = order
            self._open_by_account.setdefault(order.account_id, {})[order.id] = order
            self._book_version += 1

    def _retire(self, order: Order) -> None:
        """Forget a final order in the open-order indexes."""
        self._open.pop(order.id, None)
        self._open_by_account.get(order.account_id, {}).pop(order.id, None)
        self._book_version += 1

    def _open_orders(self, account_id: str) -> list[Order]:
        """The account's open orders in creation order."""
        return list(self._open_by_account.get(account_id, {}).values())

    def _dirty_order(self, order: Order) -> None:
        self._d_orders[order.id] = order

    def _dirty_account(self, account: Account) -> None:
        self._d_accounts[account.id] = account

    def _dirty_position(self, account_id: str, symbol: str) -> None:
        self._d_positions.add((account_id, symbol))

    def _next_activity_seq(self) -> int:
        self._activity_seq += 1
        return self._activity_seq

    def _add_activity(self, account_id: str, record: dict) -> None:
        self._activities.setdefault(account_id, []).append(record)
        self._d_activities.append((account_id, record["_seq"], record))

    def _commit(self, *, force_meta: bool = False) -> None:
        """Write this operation's changes in one transaction, then publish its events."""
        changes = Changes(
            keys=self._d_keys,
            accounts=[a.record() for a in self._d_accounts.values()],
            orders=[(o.account_id, o.record()) for o in self._d_orders.values()],
            positions=[(a, s, p.record() if (p := self.accounts[a].positions.get(s)) else None)
                       for a, s in self._d_positions],
            activities=self._d_activities,
        )
        if changes or force_meta:
            changes.meta = {"processed_ns": self._processed_ns}
            self._store.write(changes)
        self._d_keys, self._d_activities = [], []
        self._d_orders.clear()
        self._d_accounts.clear()
        self._d_positions.clear()
        events, self._events = self._events, []
        for account_id, event in events:
            for callback in list(self._subs.get(account_id, ())):
                try:
                    callback(event)
                except Exception:
                    log.exception("sandbox: trade update subscriber failed")
