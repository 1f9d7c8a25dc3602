"""Accounts, orders, positions, activities and trade-update events of the sandbox.

:class:`Engine` is the trading back end behind the REST routes of :mod:`.trading_api`. It keeps
every account in memory, writes each change through to the store (:mod:`.store`: SQLite with
``--db``, nothing otherwise) before the request that caused it is answered, and publishes
``trade_updates`` events to subscribers. The matching rules live in :mod:`.matching`, the money
arithmetic in :mod:`.ledger`, request validation in :mod:`.orders`, activities and portfolio
history in :mod:`.history`, the admission checks (available quantity, shorting, exit prices) in
:mod:`._admission`, the order indexes, store write-through and event publication in
:mod:`._persistence`.

Everything runs on the sandbox's event loop thread; no method blocks on I/O other than the
(local, short) SQLite commit. Times are epoch nanoseconds from the sandbox clock.

Trade-update sequences (the reference confirms the event names, not their order; this is the
sandbox's):

* every submission: ``accepted`` (Alpaca's "order received and accepted", emitted before
  ``new``; the POST answers this state);
* submission while the order may trade: then ``pending_new`` and ``new``, then
  ``partial_fill``... and ``fill`` as it executes (a marketable order is evaluated before the
  POST returns);
* submission while it must wait (calendar mode outside its hours, or an opg/cls order before
  its auction): ``accepted`` only; when it is routed (the session opens, the auction comes) it is
  checked again against the account at that instant's quote, as Alpaca re-checks an order it
  routes: buying power for an opening order, shorting for a short sale, available quantity for
  a closing one (another waiting order may have taken the shares, or a notional sell needs more
  of them at a lower bid). If it still fits: ``pending_new``, ``new`` and matching as above; if not:
  ``rejected`` (status ``rejected``, ``failed_at`` = the routing instant, nothing filled), and
  the held legs of a rejected bracket/oto entry are ``canceled``. Alpaca's accepted-then-
  rejected path is asynchronous like this (alpacahq/Alpaca-API#107: "the status change to
  rejected is asynchronous");
* bracket/oto exit legs stay ``held`` (no event) until the entry fills, then ``new`` each;
* cancel: ``canceled`` (no ``pending_cancel``); expiry: ``expired``;
* replace: ``replaced`` for the old order (status ``replaced``, ``replaced_by`` set), then
  ``accepted``, ``pending_new`` and ``new`` for the replacement (``replaces`` set). As Alpaca's replace is a
  cancel/replace of one order chain, the replacement's ``qty`` is the chain's total (the
  requested ``qty``, or the old order's), and it carries the chain's ``filled_qty`` and
  ``filled_avg_price``; what is left to trade is ``qty - filled_qty`` (hence Alpaca's "qty
  must be > filled_qty"). Notional orders cannot be replaced, as Alpaca documents (422
  42210000, sandbox wording). Alpaca may also reject a replacement asynchronously when the old
  order fills before the replacement reaches the venue; the sandbox replaces atomically, so
  that race does not happen here.

Every other refusal is synchronous, the HTTP error of the request (Alpaca's status, code and
message), and changes nothing. That includes opg/cls orders submitted in Alpaca's refusal
windows: 403 40310000 "opg orders must be submitted after 7:00pm and before 9:28am" and "cls
orders must be submitted after 7:00pm and before 3:55pm" (12:55pm on early-close days), the
texts real accounts get back from ``POST /v2/orders`` (reported by users in 2024-2026); after
7:00pm they are queued for the next session's auction. Account-state messages seen in real
Alpaca answers (GitHub issues and client code): ``insufficient buying power`` (403, with
``buying_power`` and ``cost_basis``), ``insufficient qty available for order (requested: N,
available: M)`` (403, with ``available``, ``existing_qty``, ``held_for_orders``, ``symbol``),
``account is not allowed to short`` (403), ``asset X cannot be sold short``, ``fractional orders
cannot be sold short``, ``only day orders are allowed for hard-to-borrow asset X`` and ``order
is already in "filled" state`` (cancel of a finished order), all 422 42210000 except where
noted; the always-open mode's opg/cls refusals (2/5 minutes before the auction) are the
sandbox's own wording.

Restarts (``--db``): the last processed instant is stored with every change; on start the engine
catches up from it, so an open order executes at the instant it would have if the process had
kept running (a limit order that became marketable while the sandbox was down fills at that
moment's quote), and orders resume matching.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import string
import uuid
from collections.abc import Callable
from typing import Any

from ._admission import Admission
from ._persistence import Event, Persistence
from .clock import Clock, Sessions
from .corporate_events import CorporateEvents
from .crypto_orders import CryptoOrders
from .history import Fill, deposit_activity
from .ledger import DEFAULT_CONFIG, Account
from .matching import EPS, Matching, trail_stop
from .orders import NewOrder, Order, new_id, parse_new_order, parse_replace, valid_uuid
from .plans import DEFAULT_DATA_PLAN, check_data_plan
from .portfolio import Portfolio
from .store import open_store
from .wire import (
    fmt_money,
    forbidden,
    not_found,
    parse_bool,
    parse_int,
    parse_list,
    parse_time,
    rejected,
    unprocessable,
)

log = logging.getLogger(__name__)

OPEN_QUERY_STATUSES = ("open", "closed", "all")
ORDER_LIST_MAX = 500


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _money(value: float) -> str:
    return fmt_money(round(value, 6), 6)


class Engine(Admission, Persistence, CorporateEvents, CryptoOrders, Matching, Portfolio):
    """The sandbox's trading back end (see the module docstring).

    Args:
        market: the synthetic market (quotes, trades, auction prices, assets).
        clock, sessions: the sandbox's time and trading calendar.
        db: SQLite file for persistence, or None to keep everything in memory.
        default_cash: starting cash of new accounts, in dollars.

    Raises:
        ValueError: when ``db`` is not a sandbox database.
    """

    tick_seconds = 0.05   # wall seconds between matching passes

    def __init__(self, *, market, clock: Clock, sessions: Sessions, db: str | None = None,
                 default_cash: float = 100_000.0):
        self.market = market
        self.clock = clock
        self.sessions = sessions
        self.db = db
        self.default_cash = default_cash
        self._store = open_store(db)
        self._keys: dict[str, tuple[bytes, str]] = {}   # key_id -> (sha256(secret), account id)
        self.accounts: dict[str, Account] = {}
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}               # not final, in creation order
        self._open_by_account: dict[str, dict[str, Order]] = {}
        self._by_client: dict[tuple[str, str], str] = {}
        self._account_orders: dict[str, list[Order]] = {}
        self._activities: dict[str, list[dict]] = {}
        self._fills: dict[str, list[Fill]] = {}
        self._subs: dict[str, list[Callable[[Event], None]]] = {}
        self._events: list[tuple[str, Event]] = []
        self._close_cache: dict[tuple[str, Any], float] = {}
        self._last_close_cache: dict[tuple[str, Any], tuple[float, float]] = {}
        self._asset_cache: dict[str, dict | None] = {}
        # (account, symbol, side) -> (quote t, shares of that quote's displayed size not yet taken)
        self._displayed: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._book_version = 0          # changes whenever open orders or their priority change
        self._priority: tuple[int, list[Order]] | None = None   # (version, open orders in priority)
        self._seq = 0
        self._activity_seq = 0
        self._processed_ns = clock.now_ns()
        self._d_orders: dict[str, Order] = {}
        self._d_accounts: dict[str, Account] = {}
        self._d_positions: set[tuple[str, str]] = set()
        self._d_activities: list[tuple[str, int, dict]] = []
        self._d_keys: list[tuple[str, bytes, str]] = []
        self._task: asyncio.Task | None = None
        self._load()

    # ================================================================== accounts and keys
    def has_key(self, key_id: str) -> bool:
        return key_id in self._keys

    def authenticate(self, key_id: str | None, secret: str | None) -> str | None:
        """The account id for a key pair, or None when the pair is unknown."""
        entry = self._keys.get(key_id or "")
        if entry is None or secret is None or not hmac.compare_digest(entry[0], _digest(secret)):
            return None
        return entry[1]

    def create_account(self, key_id: str, secret: str, *, cash: float | None = None,
                       data_plan: str = DEFAULT_DATA_PLAN) -> str:
        """A new account with its own keys; its cash arrives as a ``CSD`` activity.
        ``data_plan`` is its market-data plan (:mod:`.plans`; ValueError for an unknown one)."""
        check_data_plan(data_plan)
        now = self.clock.now_ns()
        cash = float(self.default_cash if cash is None else cash)
        alphabet = string.ascii_uppercase + string.digits
        account = Account(id=str(uuid.uuid4()),
                          account_number="PA" + "".join(secrets.choice(alphabet) for _ in range(10)),
                          created_at=now, cash=cash, initial_cash=cash, data_plan=data_plan)
        self.accounts[account.id] = account
        self._account_orders[account.id] = []
        self._set_key(key_id, secret, account.id)
        self._dirty_account(account)
        self._add_activity(account.id, deposit_activity(ns=now, seq=self._next_activity_seq(),
                                                        amount=cash))
        self._commit()
        return account.id

    def ensure_account(self, key_id: str, secret: str, *, data_plan: str | None = None) -> str:
        """The account for this key pair, created with the default cash on first use (a key id
        already known with another secret keeps its account and takes the new secret). A
        ``data_plan`` given replaces the account's market-data plan (the sandbox's default
        account takes ``SandboxConfig.data_plan`` at every start)."""
        if data_plan is not None:
            check_data_plan(data_plan)
        account_id = self.authenticate(key_id, secret)
        if account_id is None and key_id in self._keys:
            account_id = self._keys[key_id][1]
            self._set_key(key_id, secret, account_id)
        if account_id is None:
            return self.create_account(key_id, secret, data_plan=data_plan or DEFAULT_DATA_PLAN)
        account = self.accounts.get(account_id)
        if account is not None and data_plan is not None and account.data_plan != data_plan:
            account.data_plan = data_plan
            self._dirty_account(account)
        self._commit()
        return account_id

    def data_plan(self, account_id: str) -> str:
        """The account's market-data plan (:mod:`.plans`)."""
        account = self.accounts.get(account_id)
        return account.data_plan if account is not None else DEFAULT_DATA_PLAN

    def _set_key(self, key_id: str, secret: str, account_id: str) -> None:
        digest = _digest(secret)
        self._keys[key_id] = (digest, account_id)
        self._d_keys.append((key_id, digest, account_id))

    def _account(self, account_id: str) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            raise not_found("account not found")
        return account

    # ================================================================== lifecycle
    async def start(self) -> None:
        """Catch up with the clock (orders resume matching) and start the matching loop."""
        self._advance(self.clock.now_ns())
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sandbox-matching")

    async def stop(self) -> None:
        """Stop the matching loop, persist the last processed instant and close the store."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._commit(force_meta=True)
        self._store.close()

    async def catch_up(self) -> None:
        """Process everything due up to the clock's now (after the clock was moved)."""
        self._advance(self.clock.now_ns())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                self._advance(self.clock.now_ns())
            except Exception:
                log.exception("sandbox: matching pass failed")

    # ================================================================== order views
    def _wire(self, order: Order, nested: bool) -> dict[str, Any]:
        legs = [self._wire(leg, False) for leg in self._legs(order)] \
            if nested and order.leg_ids else None
        return order.wire(legs)

    def _lookup(self, account_id: str, order_id: str) -> Order:
        if not valid_uuid(order_id):
            raise unprocessable("order_id is missing")
        order = self._orders.get(order_id)
        if order is None or order.account_id != account_id:
            raise not_found("order not found")
        return order

    def get_order(self, account_id: str, order_id: str, *, nested: bool = False) -> dict[str, Any]:
        """``GET /v2/orders/{id}``: 422 for a malformed id, 404 when unknown."""
        order = self._lookup(account_id, order_id)
        self._advance(self.clock.now_ns())
        return self._wire(order, nested)

    def get_order_by_client_id(self, account_id: str, client_order_id: str | None) -> dict[str, Any]:
        if not client_order_id:
            raise unprocessable("client_order_id is missing")
        order_id = self._by_client.get((account_id, client_order_id))
        if order_id is None:
            raise not_found("order not found")
        self._advance(self.clock.now_ns())
        return self._wire(self._orders[order_id], False)

    def list_orders(self, account_id: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        """``GET /v2/orders`` (status, limit, after, until, direction, nested, side, symbols,
        asset_class, and the cursors before_order_id/after_order_id)."""
        status = str(query.get("status") or "open").lower()
        if status not in OPEN_QUERY_STATUSES:
            raise unprocessable("invalid status: must be open, closed or all")
        limit = parse_int(query.get("limit"), "limit", default=50, lo=1, hi=ORDER_LIST_MAX)
        after = parse_time(query.get("after"), "after")
        until = parse_time(query.get("until"), "until")
        before_id, after_id = query.get("before_order_id"), query.get("after_order_id")
        if before_id and after_id:
            raise unprocessable("only one of before_order_id or after_order_id is accepted")
        cursor_id = before_id or after_id
        if cursor_id:
            if after is not None or until is not None:
                raise unprocessable("before_order_id and after_order_id cannot be used with "
                                    "after or until")
            cursor = self._lookup(account_id, cursor_id)
            if after_id:
                after = cursor.submitted_at
            else:
                until = cursor.submitted_at
        direction = str(query.get("direction") or "desc").lower()
        if direction not in ("asc", "desc"):
            raise unprocessable("invalid direction: must be asc or desc")
        nested = bool(parse_bool(query.get("nested"), "nested", default=False))
        side = query.get("side")
        if side is not None and side not in ("buy", "sell"):
            raise unprocessable("invalid side")
        symbols = set(parse_list(query.get("symbols")))
        classes = set(parse_list(query.get("asset_class")))
        if classes - {"us_equity", "us_option", "crypto", "all"}:
            raise unprocessable("invalid asset_class")
        self._advance(self.clock.now_ns())

        def group_open(order: Order) -> bool:
            return order.is_open or (nested and any(leg.is_open for leg in self._legs(order)))

        picked = []
        for order in self._account_orders.get(account_id, ()):
            if nested and order.parent_id:
                continue
            is_open = group_open(order)
            if (status == "open" and not is_open) or (status == "closed" and is_open):
                continue
            # compared at the microsecond precision the wire shows, so a client can page with
            # the submitted_at of an order it was given
            if after is not None and order.submitted_at // 1000 <= after // 1000:
                continue
            if until is not None and order.submitted_at // 1000 >= until // 1000:
                continue
            if side and order.side != side:
                continue
            if symbols and order.symbol not in symbols:
                continue
            if classes and "all" not in classes and order.asset_class not in classes:
                continue
            picked.append(order)
        picked.sort(key=lambda o: (o.submitted_at, o.seq), reverse=direction == "desc")
        return [self._wire(o, nested) for o in picked[:limit]]

    # ================================================================== submitting
    def _order_asset(self, symbol: str) -> dict:
        asset = self._asset(symbol)
        if asset is None:
            raise unprocessable(f'asset "{symbol}" not found')
        if asset.get("status") != "active":
            raise rejected(f'asset "{asset["symbol"]}" is not active')
        if not asset.get("tradable"):
            raise rejected(f'asset "{asset["symbol"]}" is not tradable')
        return asset

    def _asset(self, symbol_or_id: str) -> dict | None:
        asset = self._asset_cache.get(symbol_or_id)
        if asset is None:
            asset = self.market.asset(symbol_or_id)
            if asset is not None:            # unknown names are not cached (they are unbounded)
                self._asset_cache[symbol_or_id] = asset
        return asset

    def submit_order(self, account_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v2/orders``: validate, admit against the account, queue and match at once.

        Returns the order as accepted (``pending_new``/``accepted``; legs nested).

        Raises:
            ApiError: 422 40010001/42210000 for invalid requests, 403 40310000 for buying power,
                available quantity and shorting refusals. Nothing changes when it raises.
        """
        req = parse_new_order(body, crypto=self._crypto_body(body))
        account = self._account(account_id)
        now = self.clock.now_ns()
        self._advance(now)
        asset = self._order_asset(req.symbol)
        symbol = asset["symbol"]
        if account.config.get("suspend_trade") or account.status != "ACTIVE":
            raise forbidden("account is not authorized to trade")
        self._check_fractional(account, req, asset)
        client_order_id = req.client_order_id or new_id()
        if (account_id, client_order_id) in self._by_client:
            raise unprocessable("client_order_id must be unique")
        quote = self.market.quote_at(symbol, now)
        trade = self.market.trade_at(symbol, now)
        if asset.get("class") == "crypto":
            opening = self._check_crypto_order(account, req, asset, quote, now)
        else:
            opening = self._check_quantity(account, req, asset, quote)
            if req.order_class != "simple":
                self._check_exit_prices(req, float(trade.price))
                if not opening and req.order_class in ("bracket", "oto") and req.side == "buy":
                    self._check_short_sale(account, req, asset)   # its exits will sell short
            if opening:
                self._check_buying_power(account, req, asset, quote, now)

        parent = self._build_order(account, req, asset, client_order_id, now, opening)
        self._schedule(parent, now)                 # may refuse opg/cls: nothing registered yet
        legs = self._build_legs(parent, req, now)
        for order in [parent, *legs]:
            self._register(order)
            self._dirty_order(order)
        ready = parent.active_from <= now and not parent.auction and self._can_trade(parent, now)
        for order in [parent, *legs]:
            if order.status != "held":
                self._set_status(order, "accepted", now, event="accepted")
        response = self._wire(parent, nested=True)
        if ready:
            step = self._step(now)
            for order in [parent, *legs]:
                if order.status == "accepted":
                    self._set_status(order, "pending_new", now, event="pending_new")
                    self._set_status(order, "new", now, event="new")
            for order in [parent, *legs]:
                if order.is_open and order.status != "held":
                    self._evaluate(order, step)
        self._commit()
        return response

    def _build_order(self, account: Account, req: NewOrder, asset: dict, client_order_id: str,
                     now: int, opening: bool) -> Order:
        self._seq += 1
        intent = req.position_intent or \
            f"{req.side}_to_{'open' if opening else 'close'}"
        return Order(
            id=new_id(), client_order_id=client_order_id, account_id=account.id,
            created_at=now, updated_at=now, submitted_at=now, asset_id=asset["id"],
            symbol=asset["symbol"], asset_class=asset.get("class", "us_equity"),
            exchange=asset.get("exchange", ""), notional=req.notional, qty=req.qty,
            order_class=req.order_class, type=req.type, side=req.side, position_intent=intent,
            time_in_force=req.time_in_force, limit_price=req.limit_price,
            stop_price=req.stop_price, status="accepted", extended_hours=req.extended_hours,
            trail_percent=req.trail_percent, trail_price=req.trail_price, seq=self._seq,
            opening=opening)

    def _build_legs(self, parent: Order, req: NewOrder, now: int) -> list[Order]:
        if req.order_class == "simple":
            return []
        if req.order_class == "oco":
            parent.opening = False
            parent.leg_role = "take_profit"
            parent.limit_price = req.take_profit_limit
            roles = [("stop_loss", parent.side)]
        else:
            exit_side = "sell" if parent.side == "buy" else "buy"
            roles = [(role, exit_side) for role, price in
                     (("take_profit", req.take_profit_limit), ("stop_loss", req.stop_loss_stop))
                     if price is not None]
        # a bracket's/oto's exits close what the entry opens, and open a position when the
        # entry closed one; an oco only exits
        opening = not parent.opening and req.order_class != "oco"
        legs = []
        for role, side in roles:
            self._seq += 1
            if role == "take_profit":
                otype, limit, stop = "limit", req.take_profit_limit, None
            else:
                otype = "stop_limit" if req.stop_loss_limit is not None else "stop"
                limit, stop = req.stop_loss_limit, req.stop_loss_stop
            leg = Order(
                id=new_id(), client_order_id=new_id(), account_id=parent.account_id,
                created_at=now, updated_at=now, submitted_at=now, asset_id=parent.asset_id,
                symbol=parent.symbol, asset_class=parent.asset_class, exchange=parent.exchange,
                qty=parent.qty, order_class=parent.order_class, type=otype, side=side,
                position_intent=f"{side}_to_{'open' if opening else 'close'}",
                time_in_force=parent.time_in_force, limit_price=limit, stop_price=stop,
                status="held" if req.order_class != "oco" else "accepted",
                seq=self._seq, parent_id=parent.id, leg_role=role, opening=opening,
                active_from=parent.active_from, expires_ns=parent.expires_ns)
            legs.append(leg)
        parent.leg_ids = [leg.id for leg in legs]
        return legs

    # ================================================================== replace and cancel
    def replace_order(self, account_id: str, order_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /v2/orders/{id}``: a new order replaces the old one (returned). As Alpaca's
        replace continues one order chain, the new order's ``qty`` is the chain's total (the
        requested ``qty``, else the old one) and it carries the chain's ``filled_qty`` and
        ``filled_avg_price``: it trades ``qty - filled_qty`` more.

        Raises:
            ApiError: 404/422 for unknown or malformed ids; 422 42210000 when the order is
                finished or notional, nothing changes, qty is not above the filled
                quantity or is an exit leg's or oco order's (:meth:`_check_group_qty`); 403
                for buying power or available quantity.
        """
        order = self._lookup(account_id, order_id)
        rep = parse_replace(body)
        now = self.clock.now_ns()
        self._advance(now)
        if not order.is_open:
            raise rejected(f"cannot replace order in {order.status} status")
        if order.notional is not None:        # Alpaca: "Notional orders cannot be replaced."
            raise rejected("notional orders cannot be replaced")
        account = self._account(account_id)
        changed: dict[str, Any] = {}
        if rep.qty is not None:
            if abs(rep.qty - (order.total_qty or 0.0)) > EPS:
                self._check_group_qty(order)
                changed["qty"] = rep.qty
        if rep.time_in_force is not None and rep.time_in_force != order.time_in_force:
            if order.type == "trailing_stop" and rep.time_in_force not in ("day", "gtc"):
                raise unprocessable("time_in_force for trailing_stop orders must be day or gtc")
            if order.order_class != "simple" and rep.time_in_force not in ("day", "gtc"):
                raise unprocessable(f"time_in_force for {order.order_class} orders must be day or gtc")
            if (order.time_in_force in ("opg", "cls")) != (rep.time_in_force in ("opg", "cls")):
                raise rejected(f"cannot change time_in_force from {order.time_in_force} to "
                               f"{rep.time_in_force}")
            changed["time_in_force"] = rep.time_in_force
        if rep.limit_price is not None:
            if order.type not in ("limit", "stop_limit"):
                raise unprocessable(f"limit_price is not allowed for {order.type} orders")
            if abs(rep.limit_price - order.limit_price) > EPS:
                changed["limit_price"] = rep.limit_price
        if rep.stop_price is not None:
            if order.type not in ("stop", "stop_limit"):
                raise unprocessable(f"stop_price is not allowed for {order.type} orders")
            if abs(rep.stop_price - order.stop_price) > EPS:
                changed["stop_price"] = rep.stop_price
        if rep.trail is not None:
            if order.type != "trailing_stop":
                raise unprocessable("trail is only allowed for trailing_stop orders")
            if order.triggered:
                raise rejected("cannot replace the trail of a triggered trailing stop")
            current = order.trail_price if order.trail_price is not None else order.trail_percent
            if abs(rep.trail - current) > EPS:
                changed["trail_price" if order.trail_price is not None else "trail_percent"] = rep.trail
        if not changed:
            raise rejected("order parameters are not changed")
        total = changed.get("qty", order.total_qty)
        if total is not None and total <= order.filled_qty + EPS:
            raise rejected("qty must be > filled_qty")
        client_order_id = rep.client_order_id or new_id()
        if (account_id, client_order_id) in self._by_client:
            raise unprocessable("client_order_id must be unique")

        self._seq += 1
        record = order.record()
        record.update(changed)
        record.update(id=new_id(), client_order_id=client_order_id, created_at=now,
                      updated_at=now, submitted_at=now, filled_at=None, expired_at=None,
                      canceled_at=None, failed_at=None, replaced_at=None, replaced_by=None,
                      replaces=order.id, seq=self._seq, status="accepted", seen_ticks=None)
        new = Order.from_record(record)       # qty: the chain's total; filled_qty carried
        if new.type == "trailing_stop" and new.hwm is not None and \
                ("trail_price" in changed or "trail_percent" in changed):
            new.stop_price = trail_stop(new, new.hwm)   # the new trail from the same mark
        quote = self.market.quote_at(order.symbol, now)
        if order.opening and order.status != "held":
            cost = self._order_value(new, quote) * self._bp_factor(account, order.symbol)
            available = self._available_buying_power(account, now, exclude=order)
            if cost > available + 1e-6:
                raise forbidden("insufficient buying power", buying_power=_money(max(available, 0.0)),
                                cost_basis=_money(self._order_value(new, quote)))
        elif not order.opening and order.status != "held":
            pos = account.positions.get(order.symbol)
            existing = abs(pos.qty) if pos is not None else 0.0
            price = float(quote.bid if order.side == "sell" else quote.ask)
            held = self._held(account_id, order.symbol, order.side, exclude=order, price=price)
            if (new.remaining_qty or 0.0) > existing - held + EPS:
                raise self._insufficient_qty(account, order.symbol, order.side,
                                             new.remaining_qty or 0.0,
                                             release=order.remaining_qty or 0.0, price=price)
        if "time_in_force" in changed and order.status != "held":
            self._schedule(new, now)

        was_held = order.status == "held"
        order.status = "replaced"
        order.replaced_at = order.updated_at = now
        order.replaced_by = new.id
        self._retire(order)
        self._dirty_order(order)
        self._emit(order, "replaced", now)
        if order.parent_id and order.parent_id in self._orders:
            parent = self._orders[order.parent_id]
            parent.leg_ids = [new.id if i == order.id else i for i in parent.leg_ids]
            self._dirty_order(parent)
        for leg in self._legs(order):
            leg.parent_id = new.id
            self._dirty_order(leg)
        order.leg_ids = []
        self._register(new)
        self._dirty_order(new)
        if was_held:
            new.status = "held"
        ready = new.status != "held" and new.active_from <= now and not new.auction \
            and self._can_trade(new, now)
        if new.status != "held":
            self._set_status(new, "accepted", now, event="accepted")
        response = self._wire(new, nested=bool(new.leg_ids))
        if ready:
            self._set_status(new, "pending_new", now, event="pending_new")
            self._set_status(new, "new", now, event="new")
            self._evaluate(new, self._step(now))
        self._commit()
        return response

    def _check_group_qty(self, order: Order) -> None:
        """Refuse a new ``qty`` for an order whose quantity its group decides: a bracket's or
        oto's exit leg covers what the entry filled (less what the exits sold), and an oco's two
        orders close one quantity, so a qty of the user's own would be overridden by the next
        fill or oversell. (The entry of a bracket or oto may change its qty.)

        Raises:
            ApiError: 422 42210000 naming what may be replaced instead.
        """
        if order.order_class == "oco":
            raise rejected("qty of an oco order cannot be replaced: its two orders close one "
                           "quantity (replace limit_price or stop_price, or cancel the oco and "
                           "submit a new one)")
        if order.parent_id is not None:
            raise rejected(f"qty of a {order.order_class} order leg cannot be replaced: it follows "
                           f"the entry's filled quantity (replace limit_price, stop_price or "
                           f"time_in_force, or the entry's qty)")

    def cancel_order(self, account_id: str, order_id: str) -> None:
        """``DELETE /v2/orders/{id}``: cancels at once (and the rest of its group).

        Raises:
            ApiError: 404/422 for unknown/malformed ids; 422 42210000 when already final.
        """
        order = self._lookup(account_id, order_id)
        now = self.clock.now_ns()
        self._advance(now)
        if not order.is_open:
            raise rejected(f'order is already in "{order.status}" state')
        self._cancel(order, now, reason="requested")
        self._commit()

    def cancel_all_orders(self, account_id: str) -> list[dict[str, Any]]:
        """``DELETE /v2/orders``: every open order canceled; 207 body items ``{id, status, body}``."""
        now = self.clock.now_ns()
        self._advance(now)
        targets = self._open_orders(account_id)
        for order in targets:
            self._cancel(order, now, reason="cancel all")
        self._commit()
        return [{"id": o.id, "status": 200, "body": self._wire(o, False)} for o in targets]


__all__ = ["Engine", "DEFAULT_CONFIG"]
