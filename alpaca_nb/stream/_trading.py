"""The trade-updates stream hub (``wss://paper-api.alpaca.markets/stream``, protocol section 6)
and the local order book it keeps.

Handshake: send ``{"action":"auth",...}``, expect ``{"stream":"authorization","data":{"status":
"authorized"}}`` (``unauthorized`` stops the stream, except "connection limit exceeded": another
client holds the account's one trade_updates connection, so it backs off like a data stream's 406),
send ``listen`` for ``trade_updates`` and
expect the ``listening`` ack. Events carry the order's state *after* the event; the
:class:`OrderBook` keeps the newest state of every order of the session (by ``updated_at``,
then lifecycle stage: an order's accepted, pending_new and new states may share one instant).
After every (re)connect the fan-out thread reconciles the book with ``GET /v2/orders`` (open
orders, every order submitted since the stream opened, and any order the book still thinks is
open), so no fill that happened during a gap is missed; changes found that way are delivered to
``trade_update`` callbacks as events with ``"reconciled": True``. Through a stream relay the same
reconciliation runs when the relay says its own upstream connection came back
(``{"stream":"relay","data":{"upstream":"connected"}}``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pandas as pd

from .. import frames
from . import _fanout
from ._fanout import Changes
from ._hub import Conflict, Fatal, Hub, Refused

log = logging.getLogger("alpaca_nb.stream")

TradingRest = Callable[..., Any]     # transport.trading(method, path, params=...) -> decoded JSON
PAGE = 500
OPEN_MARGIN_NS = 60 * 1_000_000_000   # orders submitted this long before the stream opened count too
FINAL = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day", "stopped",
                   "suspended"})
STATUS_EVENT = {"filled": "fill", "partially_filled": "partial_fill"}
# Lifecycle stage of a status, to order two states of one order stamped with the same updated_at
# (accepted -> pending_new -> new -> fills can share one instant); unknown and final ones last.
_STAGE = {"held": 0, "accepted": 1, "pending_new": 2, "accepted_for_bidding": 2, "new": 3,
          "partially_filled": 4}


def _version(order: dict[str, Any]) -> tuple[int, int, float]:
    """How recent an order state is: (updated_at, lifecycle stage, filled qty)."""
    try:
        filled = float(order.get("filled_qty") or 0)
    except (TypeError, ValueError):
        filled = 0.0
    return _ns(order.get("updated_at")), _STAGE.get(order.get("status"), 5), filled


def _ns(text: Any) -> int:
    if not isinstance(text, str):
        return -1
    try:
        return pd.Timestamp(text).value
    except (ValueError, TypeError):
        return -1


def _iso(ns: int) -> str:
    ts = pd.Timestamp(ns, tz="UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts.microsecond:06d}Z"


class OrderBook:
    """The session's orders as the trade-updates stream reported them (thread-safe).

    ``df`` is a frame like ``api.orders()`` (indexed by id, newest first); ``get(order_id)`` the
    wire dict of one order. The book holds every order that was open when the stream opened and
    every order seen since.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._orders: dict[str, dict[str, Any]] = {}
        self._stamp: dict[str, tuple[int, int, float]] = {}

    def apply(self, order: dict[str, Any]) -> bool:
        """Take an order's new state unless the book already has a newer one."""
        oid = order.get("id")
        if not isinstance(oid, str):
            return False
        stamp = _version(order)
        with self.lock:
            if stamp < self._stamp.get(oid, (-2, 0, 0.0)):
                return False
            self._orders[oid] = order
            self._stamp[oid] = stamp
        return True

    def merge(self, orders: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """REST orders into the book; returns the ones whose status or fill changed (with the
        state the book had before in ``_before``)."""
        changed = []
        for order in orders:
            if not isinstance(order, dict) or not isinstance(order.get("id"), str):
                continue
            with self.lock:
                before = self._orders.get(order["id"])
            if self.apply(order) and (before is None or _differs(before, order)):
                changed.append(order)
        return changed

    def open_ids(self) -> list[str]:
        with self.lock:
            return [oid for oid, o in self._orders.items() if o.get("status") not in FINAL]

    def get(self, order_id: str) -> dict[str, Any] | None:
        with self.lock:
            return self._orders.get(order_id)

    def orders(self) -> list[dict[str, Any]]:
        """The orders, newest submission first (as GET /v2/orders lists them)."""
        with self.lock:
            items = list(self._orders.values())
        return sorted(items, key=lambda o: (str(o.get("submitted_at") or o.get("created_at") or ""), o.get("id")),
                      reverse=True)

    def __len__(self) -> int:
        with self.lock:
            return len(self._orders)


def _differs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return any(a.get(k) != b.get(k) for k in ("status", "filled_qty", "filled_avg_price", "qty",
                                                "limit_price", "stop_price", "replaced_by"))


class TradingHub(Hub):
    kind = "trading"

    def __init__(self, *, rest: TradingRest | None, **kw: Any):
        super().__init__(**kw)
        self.rest = rest
        self.book = OrderBook()
        self.opened_ns: int | None = None     # server time when the stream first reconciled
        # events for the trade_update listeners: none is kept while there is no listener, and
        # at most BACKLOG while the fan-out thread is busy (a callback that does not return);
        # the listeners bound their own queues and count what was dropped here too
        self._events: deque[tuple[int, Any]] = deque()
        self._events_lock = threading.Lock()
        self._dropped = 0
        self.events_seq = 0                   # number of the last event received
        self.reconciled = 0

    # ------------------------------------------------------------------ socket thread
    def _handshake(self, ws, reader) -> None:
        deadline = time.monotonic() + self.options.connect_timeout
        self._send_on(ws, self._auth_message())
        while True:
            reply = self._next_message(reader, ws, deadline)
            stream, data = _split(reply)
            if stream == "authorization":
                if data.get("status") == "authorized":
                    break
                why = data.get("message") or "unauthorized"
                if "connection limit" in why:   # another client holds the account's one slot
                    raise Conflict(f"{why}: another client holds this account's trade_updates connection")
                raise Fatal(f"auth failed: {why}", 402)
            if stream == "error" or (isinstance(reply, dict) and reply.get("action") == "error"):
                raise Refused(f"server error: {data.get('error_message') or reply!r:.120}")
            log.debug("trading stream: ignoring %r before authorization", reply)
        self._send_on(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}})
        while True:
            stream, data = _split(self._next_message(reader, ws, deadline))
            if stream == "listening":
                if "trade_updates" not in (data.get("streams") or []):
                    raise Fatal("the server did not grant the trade_updates stream")
                break
        with self.lock:
            self._live = True

    def _on_frame(self, opcode: int, payload: Any) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("trading stream: malformed message skipped (not JSON): %r", bytes(payload[:80]))
            return
        stream, data = _split(message)
        if stream == "trade_updates":
            order = data.get("order")
            if not isinstance(order, dict):
                log.warning("trading stream: trade update without an order skipped: %r", bytes(payload[:80]))
                return
            self.book.apply(order)
            self._queue_event(data)
            self.fanout.wake()
        elif stream == "listening":
            log.debug("trading stream: listening to %s", data.get("streams"))
        elif stream == "relay":      # a stream relay's own upstream came back: events may be missing
            if data.get("upstream") == "connected":
                self._on_connected()
        elif stream in ("error",) or (isinstance(message, dict) and message.get("action") == "error"):
            log.warning("trading stream: server error: %s", data.get("error_message") or message)
        else:
            log.warning("trading stream: unexpected message skipped: %r", bytes(payload[:80]))

    def _on_connected(self) -> None:
        self.fanout.submit("reconciling orders with GET /v2/orders", self.reconcile)

    def _queue_event(self, event: dict[str, Any]) -> None:
        with self._events_lock:
            self.events_seq += 1
            if self.fanout.wants_events:
                if len(self._events) >= _fanout.BACKLOG:
                    self._events.popleft()
                    self._dropped += 1
                self._events.append((self.events_seq, event))

    # ------------------------------------------------------------------ fan-out thread
    def collect(self, types) -> Changes:
        with self._events_lock:
            events, self._events, dropped, self._dropped = list(self._events), deque(), self._dropped, 0
        return Changes(events=events, dropped=dropped)

    def reconcile(self) -> None:
        """Bring the book in line with GET /v2/orders (runs on the fan-out thread)."""
        if self.rest is None or self._stop.is_set():
            return
        if self.opened_ns is None:
            # the server's clock, not ours: a skewed local clock (or the sandbox's virtual one)
            # must not hide orders from the "submitted since the stream opened" query
            clock = self._get("/v2/clock") or {}
            now = _ns(clock.get("timestamp"))
            self.opened_ns = (now if now > 0 else time.time_ns()) - OPEN_MARGIN_NS
        orders: dict[str, dict[str, Any]] = {}
        for status, after in (("open", None), ("all", self.opened_ns)):
            for order in self._list(status, after):
                orders[order["id"]] = order
        for oid in self.book.open_ids():
            if oid not in orders:
                order = self._get(f"/v2/orders/{oid}")
                if isinstance(order, dict) and order.get("id") == oid:
                    orders[oid] = order
        changed = self.book.merge(orders.values())
        self.reconciled += 1
        if changed:
            log.info("trading stream: %d order(s) changed while the stream was away; book reconciled",
                     len(changed))
            for order in changed:
                status = order.get("status")
                self._queue_event({"event": STATUS_EVENT.get(status, status), "order": order,
                                   "timestamp": order.get("updated_at"), "reconciled": True})
            self.fanout.wake()

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """One GET of a chore: never after close, and not retried inside the transport (the
        fan-out retries the whole chore with backoff, and can drop it when the hub closes)."""
        return self.call_rest(self.rest, "GET", path, params=params, retry=False)

    def _list(self, status: str, after_ns: int | None) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        cursor = None if after_ns is None else _iso(after_ns)
        while True:
            page = self._get("/v2/orders", {
                "status": status, "limit": PAGE, "direction": "asc", "nested": False, "after": cursor}) or []
            fresh = [o for o in page if isinstance(o, dict) and isinstance(o.get("id"), str) and o["id"] not in out]
            for o in fresh:
                out[o["id"]] = o
            if len(page) < PAGE or not fresh:
                return list(out.values())
            last = _ns(page[-1].get("submitted_at") or page[-1].get("created_at"))
            cursor = _iso(last - 1000)


def _split(message: Any) -> tuple[Any, dict[str, Any]]:
    if not isinstance(message, dict):
        return None, {}
    data = message.get("data")
    return message.get("stream"), data if isinstance(data, dict) else {}


def order_update(event: dict[str, Any]) -> dict[str, Any]:
    """A trade_updates event as the dict a ``trade_update`` callback receives."""
    order = event.get("order") if isinstance(event.get("order"), dict) else {}

    def num(value: Any) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return float("nan")

    stamp = event.get("timestamp")
    try:
        when = pd.Timestamp(stamp).tz_convert("UTC") if isinstance(stamp, str) else pd.NaT
    except (ValueError, TypeError):
        when = pd.NaT
    return {
        "event": event.get("event"), "timestamp": when, "order_id": order.get("id"),
        "client_order_id": order.get("client_order_id"), "symbol": order.get("symbol"),
        "side": order.get("side"), "status": order.get("status"), "qty": num(order.get("qty")),
        "filled_qty": num(order.get("filled_qty")), "filled_avg_price": num(order.get("filled_avg_price")),
        "price": num(event.get("price")), "fill_qty": num(event.get("qty")),
        "position_qty": num(event.get("position_qty")), "execution_id": event.get("execution_id"),
        "reconciled": bool(event.get("reconciled", False)), "order": order,
    }


def book_frame(book: OrderBook, tz: str | None = None) -> pd.DataFrame:
    return frames.orders_frame(book.orders(), tz=tz)
