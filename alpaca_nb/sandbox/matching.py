"""Order matching for the sandbox engine: time stepping, triggers, fills, expiry and order groups.

:class:`Matching` is mixed into :class:`~.engine.Engine`; its only state is the engine's
``_displayed`` (what is left of each quote's displayed size, per account, symbol and side). Rules:

* Time runs in steps. ``_advance(now)`` evaluates every open order at each step from the last
  processed instant up to ``now``, in time order: every session boundary crossed (pre-market open,
  open, close, after-hours close; NY midnight in always-open mode), every order's activation,
  auction and expiry instant, and, when the clock jumped or ran fast, every minute in between.
* Buys execute at the ask, sells at the bid, against the displayed size of the quote: an order
  larger than the size fills partially and continues on later quotes. The displayed size is
  shared by the account's orders on that side of that symbol: once taken it is gone until the
  next quote, and orders that could trade at the same step take it in price-time priority
  (market orders, then the highest buy / lowest sell limit, then the oldest); ``ioc``/``fok``
  orders see only what is left. (What is left is kept in memory; after a restart a quote's size
  is whole again for the orders that had not taken from it.) A marketable limit order executes
  at the quote (price improvement). A buy stop, once elected, is protected by a limit 4% above its stop price under
  $50 (2.5% at or above), as Alpaca converts it; sell stops are plain market orders once elected.
* Stops and trailing stops are elected by the last trade, during regular hours only; a trailing
  stop's high-water mark follows the last trade (the highest for sells, the lowest for buys).
* ``opg``/``cls`` orders execute only in the opening/closing auction, entirely, at the market's
  opening/closing price (limit orders only if that price satisfies the limit); otherwise they
  expire. In always-open mode the auctions run at NY midnight, at the last trade of that
  instant (the live present), never at a price of the NYSE session ahead. ``ioc`` fills what
  the first eligible quote offers and cancels the rest; ``fok`` fills completely from that
  quote or is canceled. ``day`` orders expire at the close (20:00 ET with
  ``extended_hours``; NY midnight in always-open mode); ``gtc`` orders never expire.
* In calendar mode an order waits (status ``accepted``) until it may trade: regular hours, or
  pre-market and after-hours too for ``extended_hours`` orders. Waiting orders are routed in
  the order they arrived, each checked again against the account (an opg/cls order at its
  auction too), and rejected then if the account can no longer carry it (see :mod:`.engine`);
  matching at that step then follows price-time priority.
* opg/cls orders are refused (403) from 9:28am (opg) or 5 minutes before the close (cls) until
  7:00pm ET on a trading day; later ones wait for the next session.
* Order groups: a bracket's or oto's exit legs are ``held`` until the entry first fills; from
  then on they cover what the entry has filled less what the exits already executed (so shares
  an exit sold are not sold again when the entry fills more). When one exit fills the other is
  reduced to the remaining quantity, and canceled once the position is closed; an exit that
  completes while the entry is still open ends the trade (the entry's rest is canceled);
  canceling any order of a group cancels the group's other open orders. Exit legs that open a
  position (the entry closed one) are checked when they go live as any opening order is
  (shorting, buying power) and rejected if the account cannot carry them.
* A closing order (selling a long, covering a short) never executes more than the position
  left on its side; once the position is gone it is canceled.
* A halted symbol (``POST /sandbox/halt``) does not trade: its orders wait (ioc/fok are
  canceled, auctions do not happen for it).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import TYPE_CHECKING, Any

from .clock import MINUTE_NS, NY, Session, from_ns, ny_date, ny_midnight_ns, ny_time_ns
from .history import Fill, fill_activity
from .ledger import Position, apply_fill, market_buffer
from .orders import QTY_PLACES, Order
from .wire import forbidden, iso_ns, rejected

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Engine

log = logging.getLogger(__name__)

EPS = 1e-9
MAX_STEPS = 20_000          # minute steps evaluated in one catch-up before coarsening
OPG_CUTOFF_NS = 2 * MINUTE_NS
CLS_CUTOFF_NS = 5 * MINUTE_NS


def round_price(price: float) -> float:
    return round(price, 2 if price >= 1 else 4)


def trail_stop(order: Order, mark: float) -> float:
    """A trailing stop's stop price for high-water mark ``mark`` (the low for buys)."""
    if order.trail_price is not None:
        stop = mark + order.trail_price if order.side == "buy" else mark - order.trail_price
    else:
        pct = order.trail_percent / 100
        stop = mark * (1 + pct if order.side == "buy" else 1 - pct)
    return round_price(stop)


class Step:
    """One instant of evaluation: the session state and each symbol's last quote and trade,
    looked up once per step however many orders share the symbol."""

    __slots__ = ("t", "regular", "extended", "_market", "_ticks")

    def __init__(self, market, sessions, t: int):
        self.t = t
        self.regular = sessions.is_open(t)
        self.extended = not self.regular and sessions.is_extended(t)
        self._market = market
        self._ticks: dict[str, tuple[Any, Any]] = {}

    def ticks(self, symbol: str) -> tuple[Any, Any]:
        found = self._ticks.get(symbol)
        if found is None:
            found = self._ticks[symbol] = (self._market.quote_at(symbol, self.t),
                                           self._market.trade_at(symbol, self.t))
        return found


class Matching:
    """The matching half of the engine (see the module docstring)."""

    # ------------------------------------------------------------------ scheduling
    def _window(self: Engine, sess: Session, extended: bool) -> tuple[int, int]:
        if extended:
            return sess.premarket_open, sess.postmarket_close
        return sess.open, sess.close

    def _first_tradable(self: Engine, order: Order, now: int) -> tuple[int, Session | None]:
        """The first instant >= now at which the order may trade, and that session."""
        sess = self.sessions.next_session(now)
        while sess is not None:
            lo, hi = self._window(sess, order.extended_hours)
            if now < hi:
                return max(now, lo), sess
            sess = self.sessions.next_session(ny_midnight_ns(sess.date + dt.timedelta(days=1)))
        return now, None

    def _auction(self: Engine, tif: str, now: int) -> int:
        """The auction instant an opg/cls order submitted at ``now`` executes in.

        Raises:
            ApiError: 403 40310000 inside Alpaca's refusal windows, as Alpaca answers them:
                "opg orders must be submitted after 7:00pm and before 9:28am" (9:28am-7:00pm
                ET on a trading day), "cls orders must be submitted after 7:00pm and before
                3:55pm" (5 minutes before the close, 12:55pm on early-close days); in
                always-open mode, the last 2/5 minutes before the open/close.
        """
        sessions = self.sessions
        if sessions.mode == "always-open":
            if tif == "opg":
                target = sessions.next_open(now)
                if target - now < OPG_CUTOFF_NS:
                    raise forbidden("opg orders cannot be submitted in the 2 minutes before the open")
                return target
            target = sessions.next_close(now)
            if target - now < CLS_CUTOFF_NS:
                raise forbidden("cls orders cannot be submitted in the 5 minutes before the close")
            return target
        today = ny_date(now)
        sess = sessions.session(today)
        evening = ny_time_ns(today, 19)
        if sess is not None:
            cutoff = sess.open - OPG_CUTOFF_NS if tif == "opg" else sess.close - CLS_CUTOFF_NS
            if now < cutoff:
                return sess.open if tif == "opg" else sess.close
            if now < evening:
                when = "9:28am" if tif == "opg" else _clock_text(cutoff)
                raise forbidden(f"{tif} orders must be submitted after 7:00pm and before {when}")
        nxt = sessions.next_session(ny_midnight_ns(today + dt.timedelta(days=1)))
        if nxt is None:
            raise rejected("no trading session after the end of the calendar")
        return nxt.open if tif == "opg" else nxt.close

    def _schedule(self: Engine, order: Order, now: int) -> None:
        """Set when the order becomes eligible and when its time in force ends."""
        tif = order.time_in_force
        if tif in ("opg", "cls"):
            order.auction = "open" if tif == "opg" else "close"
            order.auction_ns = order.active_from = order.expires_ns = self._auction(tif, now)
            return
        if order.asset_class == "crypto":        # 24/7: gtc or ioc, trading from now on
            order.active_from, order.expires_ns = now, None
            return
        start, sess = self._first_tradable(order, now)
        order.active_from = start
        order.expires_ns = None
        if tif == "day" and sess is not None:
            order.expires_ns = self._window(sess, order.extended_hours)[1]

    def _can_trade(self: Engine, order: Order, t: int) -> bool:
        if self.sessions.is_open(t) or order.asset_class == "crypto":
            return True
        return order.extended_hours and self.sessions.is_extended(t)

    # ------------------------------------------------------------------ stepping
    def _advance(self: Engine, now: int) -> None:
        """Process everything due up to ``now`` (inclusive), in time order, and commit."""
        start = self._processed_ns
        if now <= start:
            return
        if self._open:
            for t in self._steps(start, now):
                self._evaluate_at(t)
        self._processed_ns = now
        self._commit()

    def _steps(self: Engine, a: int, b: int) -> list[int]:
        points = {b}
        sessions = self.sessions.sessions_between(ny_date(a), ny_date(b))
        for sess in sessions:
            for t in (sess.premarket_open, sess.open, sess.close, sess.postmarket_close):
                if a < t <= b:
                    points.add(t)
        for order in self._open.values():
            for t in (order.active_from, order.expires_ns, order.auction_ns):
                if t is not None and a < t <= b:
                    points.add(t)
        if b - a > MINUTE_NS:
            windows = [(max(s.premarket_open, a), min(s.postmarket_close, b)) for s in sessions]
            if any(o.asset_class == "crypto" for o in self._open.values()):
                # crypto orders trade between sessions too (looked for only on long steps)
                windows = [(a, b)]
            total = sum(max(0, hi - lo) for lo, hi in windows) // MINUTE_NS
            step = MINUTE_NS * max(1, -(-total // MAX_STEPS))
            for lo, hi in windows:
                t = lo - lo % step + step
                while t <= hi:
                    points.add(t)
                    t += step
        return sorted(points)

    def _step(self: Engine, t: int) -> Step:
        return Step(self.market, self.sessions, t)

    def _evaluate_at(self: Engine, t: int) -> None:
        """Evaluate every open order at step ``t``: first route the waiting orders whose time
        has come, in the order they arrived (each re-checked against the account), then
        match, in price-time priority where orders share a quote's displayed size."""
        step = self._step(t)
        for order in [o for o in self._open.values() if o.status == "accepted" and not o.auction]:
            if order.submitted_at <= t:
                try:
                    self._route_if_due(order, step)
                except Exception:  # one broken order must not stop the market for everyone
                    log.exception("sandbox: routing %r at %s failed", order, iso_ns(t))
        for order in self._in_priority():
            if order.is_open and order.status != "held" and order.submitted_at <= t:
                try:
                    self._evaluate(order, step)
                except Exception:  # one broken order must not stop the market for everyone
                    log.exception("sandbox: evaluating %r at %s failed", order, iso_ns(t))

    def _in_priority(self: Engine) -> list[Order]:
        """The open orders in :meth:`_by_priority` order (kept until open orders change or a
        stop is elected)."""
        cached = self._priority
        if cached is None or cached[0] != self._book_version:
            cached = self._priority = (self._book_version, self._by_priority(list(self._open.values())))
        return cached[1]

    @staticmethod
    def _by_priority(orders: list[Order]) -> list[Order]:
        """Orders in creation order, except that the orders of one account on one side of one
        symbol (which share the displayed size of a quote) are in price-time priority: market
        orders first, then the best limit (highest buy, lowest sell), then the oldest."""
        first: dict[tuple[str, str, str], int] = {}
        keys = []
        for i, order in enumerate(orders):
            group = first.setdefault((order.account_id, order.symbol, order.side), i)
            limit = order.limit_price if order.type in ("limit", "stop_limit") else order.protect_limit
            price = 0.0 if limit is None else (-limit if order.side == "buy" else limit)
            keys.append((group, limit is not None, price, order.seq))
        return [orders[i] for i in sorted(range(len(orders)), key=keys.__getitem__)]

    def _evaluate(self: Engine, order: Order, step: Step) -> None:
        t = step.t
        if order.auction:
            if t >= order.auction_ns:
                self._auction_fill(order, order.auction_ns)
                if order.is_open:
                    self._expire(order, order.auction_ns)
            return
        if t < order.active_from:          # (what _due checks, inline: this runs for every order)
            return
        if order.expires_ns is not None and t >= order.expires_ns:
            self._expire(order, order.expires_ns)
            return
        if not (step.regular or (order.extended_hours and step.extended)
                or order.asset_class == "crypto"):
            return
        if order.status == "accepted" and not self._route(order, t):
            return
        self._match(order, step)

    def _due(self: Engine, order: Order, step: Step) -> bool:
        """Whether a (non-auction) order may trade at ``step``; expires it when its time is up."""
        t = step.t
        if not order.is_open or t < order.active_from:
            return False
        if order.expires_ns is not None and t >= order.expires_ns:
            self._expire(order, order.expires_ns)
            return False
        return step.regular or (order.extended_hours and step.extended) or order.asset_class == "crypto"

    def _route_if_due(self: Engine, order: Order, step: Step) -> None:
        if self._due(order, step):
            self._route(order, step.t)

    def _route(self: Engine, order: Order, t: int) -> bool:
        """A waiting order goes to the market at ``t``: ``new``, or ``rejected`` (False) when the
        account can no longer carry it."""
        if self._rejected_at_routing(order, t):
            return False
        self._set_status(order, "pending_new", t, event="pending_new")
        self._set_status(order, "new", t, event="new")
        return True

    # ------------------------------------------------------------------ routing
    def _rejected_at_routing(self: Engine, order: Order, t: int) -> bool:
        """Re-check an order that waited (status ``accepted``) when it is routed at ``t``, as
        Alpaca does: if the account can no longer carry it, the order is rejected (status
        ``rejected``, ``failed_at`` = ``t``, a ``rejected`` trade update) and True is returned.
        Exit legs that close what their entry opened are not re-checked: their group was,
        through its entry."""
        if order.parent_id is not None and not order.opening:
            return False
        reason = self._routing_refusal(order, t)
        if reason is None:
            return False
        log.info("sandbox: rejected %r at routing: %s", order, reason)
        self._reject(order, t)
        return True

    def _reject(self: Engine, order: Order, t: int) -> None:
        """``rejected`` (``failed_at`` = ``t``), and the open rest of its group canceled."""
        order.status = "rejected"
        order.failed_at = order.updated_at = t
        self._retire(order)
        self._dirty_order(order)
        self._emit(order, "rejected", t)
        self._cancel_group(order, t)

    def _routing_refusal(self: Engine, order: Order, t: int) -> str | None:
        """Why the account cannot carry ``order`` at ``t`` (the submission checks again, at
        that instant's quote), or None."""
        account = self.accounts[order.account_id]
        if account.config.get("suspend_trade") or account.status != "ACTIVE":
            return "account is not authorized to trade"
        quote = self.market.quote_at(order.symbol, t)
        sell = order.side == "sell"
        if order.opening:
            if sell:
                if not account.can_short():
                    return "account is not allowed to short"
                if not (self._asset(order.symbol) or {}).get("shortable"):
                    return f"asset {order.symbol} cannot be sold short"
            cost = self._order_value(order, quote) * self._bp_factor(account, order.symbol)
            if cost > self._available_buying_power(account, t, exclude=order) + 1e-6:
                return "insufficient buying power"
            return None
        price = float(quote.bid if sell else quote.ask)
        pos = account.positions.get(order.symbol)
        existing = abs(pos.qty) if pos is not None and (pos.qty > 0) == sell else 0.0
        held = self._held(account.id, order.symbol, order.side, exclude=order, price=price)
        requested = order.remaining_qty
        if requested is None:
            spent = order.filled_qty * (order.filled_avg_price or 0.0)
            requested = max(order.notional - spent, 0.0) / price if price else 0.0
        if requested > existing - held + EPS:
            return "insufficient qty available for order"
        return None

    # ------------------------------------------------------------------ matching
    def _halted(self: Engine, symbol: str) -> bool:
        return symbol in getattr(self.market, "halted", ())

    def _match(self: Engine, order: Order, step: Step) -> None:
        t = step.t
        if self._halted(order.symbol):          # a halted symbol neither trades nor elects stops
            if order.time_in_force in ("ioc", "fok"):
                self._cancel(order, t, reason="halted")
            return
        quote, trade = step.ticks(order.symbol)
        seen = (quote.t, trade.t)
        if order.seen_ticks == seen:
            return                 # nothing new since this order last found nothing to do
        regular = step.regular or order.asset_class == "crypto"
        buy = order.side == "buy"
        if order.type == "trailing_stop" and not order.triggered and regular:
            self._trail(order, float(trade.price), t)
        if order.type in ("stop", "stop_limit", "trailing_stop") and not order.triggered:
            if not regular:
                return
            last = float(trade.price)
            if not (last >= order.stop_price if buy else last <= order.stop_price):
                order.seen_ticks = seen
                return
            order.triggered = True
            self._book_version += 1            # its priority changes (a market order now)
            if buy and order.type in ("stop", "trailing_stop"):
                order.protect_limit = round_price(order.stop_price * market_buffer(order.stop_price))
            self._dirty_order(order)
        price = float(quote.ask if buy else quote.bid)
        size = float(quote.ask_size if buy else quote.bid_size)
        limit = order.limit_price if order.type in ("limit", "stop_limit") else order.protect_limit
        immediate = order.time_in_force in ("ioc", "fok")
        if limit is not None and (price > limit + EPS if buy else price < limit - EPS):
            if immediate:
                self._cancel(order, t, reason="not marketable")
            order.seen_ticks = seen
            return
        book = (order.account_id, order.symbol, order.side)
        shown_t, left = self._displayed.get(book, (None, 0.0))
        if shown_t != quote.t:
            left = size                    # a new quote: its whole displayed size
        if quote.t <= order.last_quote_t or left <= EPS:
            if immediate:                  # nothing left at the first eligible quote
                self._cancel(order, t, reason="displayed size taken")
            order.seen_ticks = seen
            return                         # this quote's size was already consumed
        if order.total_qty is None:        # a notional order: its quantity at the first fill price
            order.target_qty = int(order.notional / price * 10 ** QTY_PLACES) / 10 ** QTY_PLACES
            if order.asset_class == "crypto":
                order.target_qty = self._crypto_notional_qty(order, order.target_qty)
            if order.target_qty <= 0:
                self._cancel(order, t, reason="notional below one share increment")
                return
        remaining = order.remaining_qty
        if order.time_in_force == "fok" and left + EPS < remaining:
            self._cancel(order, t, reason="fok not fillable")
            return
        qty = min(remaining, left)
        if not order.opening:              # a closing order never sells (buys) more than is held
            closable = self._closable(order)
            if closable <= EPS:
                self._cancel(order, t, reason="nothing left to close")
                return
            qty = min(qty, closable)
        self._displayed[book] = (quote.t, left - qty)
        order.last_quote_t = quote.t
        self._fill(order, qty, price, t)
        if immediate and order.is_open:
            self._cancel(order, t, reason="ioc remainder")

    def _trail(self: Engine, order: Order, last: float, t: int) -> None:
        buy = order.side == "buy"
        hwm = order.hwm
        if hwm is None or (last < hwm if buy else last > hwm):
            order.hwm = last
            order.stop_price = trail_stop(order, last)
            order.updated_at = t
            self._dirty_order(order)

    def _auction_fill(self: Engine, order: Order, t: int) -> None:
        if not order.is_open or self._halted(order.symbol):
            return
        price = self._auction_price(order, t)
        if price is None:
            return
        if order.status == "accepted" and not self._route(order, t):
            return
        limit = order.limit_price
        if limit is not None and (price > limit + EPS if order.side == "buy" else price < limit - EPS):
            return
        if order.total_qty is None:
            order.target_qty = int(order.notional / price * 10 ** QTY_PLACES) / 10 ** QTY_PLACES
        qty = order.remaining_qty or 0.0
        if not order.opening:
            qty = min(qty, self._closable(order))
        if qty > EPS:
            self._fill(order, qty, price, t)

    def _auction_price(self: Engine, order: Order, t: int) -> float | None:
        """The price of the auction at instant ``t`` (None when there is none).

        In calendar mode, the session's opening or closing auction price. In always-open mode
        the auctions run at New York midnight (the bounds of the sandbox's own sessions), when
        the NYSE is closed: they execute at the live present's price, the last trade at or
        before ``t`` (strictly before for the close, which ends the day), never at the NYSE
        session's 9:30 open that lies hours in the future, nor at its 16:00 close while
        after-hours trades followed it."""
        market = self.market
        if self.sessions.mode == "always-open":
            try:
                at = t if order.auction == "open" else t - 1
                return float(market.trade_at(order.symbol, at).price)
            except LookupError:          # before the calendar's first session
                return None
        if order.auction == "open":
            price = market.opening_price(order.symbol, ny_date(t))
        else:
            price = market.closing_price(order.symbol, ny_date(t))
        return None if price is None else float(price)

    # ------------------------------------------------------------------ state changes
    def _fill(self: Engine, order: Order, qty: float, price: float, t: int) -> None:
        account = self.accounts[order.account_id]
        qty = round(qty, QTY_PLACES)
        signed = qty if order.side == "buy" else -qty
        pos = account.positions.get(order.symbol)
        if pos is None:
            asset = self.market.asset(order.symbol) or {}
            maintenance = asset.get("maintenance_margin_requirement")
            pos = Position(symbol=order.symbol, asset_id=order.asset_id,
                           exchange=asset.get("exchange", order.exchange),
                           asset_class=asset.get("class", "us_equity"),
                           marginable=bool(asset.get("marginable", True)),
                           maintenance=float(maintenance) / 100 if maintenance else 0.30)
            account.positions[order.symbol] = pos
        day = ny_date(t)
        apply_fill(account, pos, qty=signed, price=price, day=day.isoformat(),
                   lastday_price=self._lastday_price(order.symbol, t))
        if order.asset_class == "crypto":
            self._crypto_fee(account, pos, order, qty, price, t)
        if abs(pos.qty) < EPS:
            del account.positions[order.symbol]
        self._dirty_position(account.id, order.symbol)
        self._dirty_account(account)

        filled = order.filled_qty
        avg = order.filled_avg_price or 0.0
        order.filled_qty = round(filled + qty, QTY_PLACES)
        order.filled_avg_price = round((avg * filled + price * qty) / order.filled_qty, 9)
        order.updated_at = t
        complete = order.remaining_qty is not None and order.remaining_qty <= EPS
        order.status = "filled" if complete else "partially_filled"
        if complete:
            order.filled_at = t
            self._retire(order)
        self._dirty_order(order)

        seq = self._next_activity_seq()
        activity = fill_activity(ns=t, seq=seq, order_id=order.id, symbol=order.symbol,
                                 side=order.side, qty=qty, price=price, cum_qty=order.filled_qty,
                                 leaves_qty=order.remaining_qty or 0.0, order_status=order.status,
                                 partial=not complete)
        self._add_activity(account.id, activity)
        self._fills.setdefault(account.id, []).append(Fill(t, order.symbol, signed, price))
        self._emit(order, "fill" if complete else "partial_fill", t,
                   execution_id=str(uuid.uuid4()), price=price, qty=qty,
                   position_qty=pos.qty if abs(pos.qty) >= EPS else 0.0)
        self._after_fill(order, t, complete)

    def _after_fill(self: Engine, order: Order, t: int, complete: bool) -> None:
        if order.leg_ids and order.order_class in ("bracket", "oto"):
            self._arm_exits(order, t)
            return
        for sibling in self._exit_siblings(order):
            if not sibling.is_open:
                continue
            if complete:
                self._cancel(sibling, t, reason="other exit filled")
            elif order.remaining_qty is not None:
                sibling.qty = round(sibling.filled_qty + order.remaining_qty, QTY_PLACES)
                sibling.updated_at = t
                self._dirty_order(sibling)
        parent = self._orders.get(order.parent_id) if order.parent_id else None
        if complete and parent is not None and parent.is_open and \
                parent.order_class in ("bracket", "oto"):
            # the exits closed everything the entry bought so far: the trade is over
            self._cancel(parent, t, reason="exit filled before the entry")

    def _arm_exits(self: Engine, entry: Order, t: int) -> None:
        """After a fill of a bracket/oto entry: its exit legs cover what the entry has filled
        less what the exits already executed (each open leg trades that much more), and held
        legs go live. Legs that open a position (the entry closed one) are checked first as
        any opening order is (shorting, buying power): refused, they are rejected when they
        were waiting and canceled when they were already live, with the rest of the group."""
        legs = self._legs(entry)
        live = [leg for leg in legs if leg.is_open]
        if not live:
            return
        left = round(entry.filled_qty - sum(leg.filled_qty for leg in legs), QTY_PLACES)
        for leg in live:
            leg.qty = round(leg.filled_qty + max(left, 0.0), QTY_PLACES)
            self._dirty_order(leg)
        if live[0].opening:
            reason = next((r for leg in live if (r := self._routing_refusal(leg, t))), None)
            if reason is not None:
                log.info("sandbox: exit legs of %r refused at %s: %s", entry, iso_ns(t), reason)
                for leg in live:
                    if leg.is_open and leg.status == "held":
                        self._reject(leg, t)
                    else:
                        self._cancel(leg, t, reason=reason)
                return
        for leg in live:
            if leg.status == "held":
                leg.submitted_at = t
                self._schedule(leg, t)
                if self._can_trade(leg, t) and leg.active_from <= t:
                    self._set_status(leg, "new", t, event="new")
                else:
                    self._set_status(leg, "accepted", t, event="accepted")
            else:
                leg.updated_at = t

    def _closable(self: Engine, order: Order) -> float:
        """Shares a closing order can still close: the long for a sell, the short for a buy."""
        pos = self.accounts[order.account_id].positions.get(order.symbol)
        qty = pos.qty if pos is not None else 0.0
        return max(qty if order.side == "sell" else -qty, 0.0)

    def _set_status(self: Engine, order: Order, status: str, t: int, *, event: str | None) -> None:
        order.status = status
        order.updated_at = t
        self._dirty_order(order)
        if event:
            self._emit(order, event, t)

    def _expire(self: Engine, order: Order, t: int) -> None:
        order.status = "expired"
        order.expired_at = order.updated_at = t
        self._retire(order)
        self._dirty_order(order)
        self._emit(order, "expired", t)
        self._cancel_group(order, t)

    def _cancel(self: Engine, order: Order, t: int, *, reason: str = "") -> None:
        """Cancel one order and the open rest of its group."""
        if not order.is_open:
            return
        order.status = "canceled"
        order.canceled_at = order.updated_at = t
        self._retire(order)
        self._dirty_order(order)
        self._emit(order, "canceled", t)
        log.debug("sandbox: canceled %r (%s)", order, reason)
        self._cancel_group(order, t)

    def _cancel_group(self: Engine, order: Order, t: int) -> None:
        """An entry that ends unfilled takes its held legs with it; an exit takes its sibling."""
        if order.leg_ids and order.order_class in ("bracket", "oto"):
            if order.status != "filled":
                for leg in self._legs(order):
                    if leg.is_open and (leg.status == "held" or order.filled_qty <= EPS):
                        self._cancel(leg, t, reason="entry ended")
            return
        if order.status == "filled":
            return
        for sibling in self._exit_siblings(order):
            if sibling.is_open:
                self._cancel(sibling, t, reason="group canceled")
        parent = self._orders.get(order.parent_id) if order.parent_id else None
        if parent is not None and parent.is_open and parent.order_class in ("bracket", "oto"):
            self._cancel(parent, t, reason="leg canceled")    # the group goes with its exit

    # ------------------------------------------------------------------ groups
    def _legs(self: Engine, order: Order) -> list[Order]:
        return [self._orders[i] for i in order.leg_ids if i in self._orders]

    def _exit_siblings(self: Engine, order: Order) -> list[Order]:
        """The other exits of an order's group (bracket legs, or both orders of an oco)."""
        if order.order_class == "oco":
            head = self._orders.get(order.parent_id) if order.parent_id else order
            if head is None:
                return []
            members = [head] + self._legs(head)
        elif order.parent_id and order.order_class == "bracket":
            parent = self._orders.get(order.parent_id)
            members = self._legs(parent) if parent is not None else []
        else:
            return []
        return [m for m in members if m.id != order.id]

    # ------------------------------------------------------------------ prices
    def _previous_session(self: Engine, t: int) -> Session | None:
        return self.sessions.previous_session(ny_date(t))

    def _lastday_price(self: Engine, symbol: str, t: int) -> float | None:
        prev = self._previous_session(t)
        return None if prev is None else self._session_close_price(symbol, prev)

    def _session_close_price(self: Engine, symbol: str, sess: Session) -> float:
        """The closing auction price of a finished session (cached)."""
        key = (symbol, sess.date)
        price = self._close_cache.get(key)
        if price is None:
            value = self.market.closing_price(symbol, sess.date)
            if value is None:
                value = self.market.trade_at(symbol, sess.close - 1).price
            price = self._close_cache[key] = float(value)
        return price


def _clock_text(ns: int) -> str:
    when = from_ns(ns, NY)
    hour = when.hour % 12 or 12
    return f"{hour}:{when.minute:02d}{'am' if when.hour < 12 else 'pm'}"


__all__ = ["Matching", "Step", "round_price", "trail_stop"]

