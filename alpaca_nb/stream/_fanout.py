"""The fan-out thread of a stream hub: coalesced callbacks, display updates and REST chores.

The socket thread never runs user or UI code. It updates the live state and calls
:meth:`Fanout.wake`; this thread then collects what changed (the latest record per symbol, or per
order for trade updates) and hands it to each listener no faster than the listener's ``max_hz``.
Between deliveries a listener keeps only the latest value per key, so a slow consumer costs at
most one pending value per symbol and never slows the socket. A callback that raises is logged
and the stream goes on. REST work (refilling the table after a gap, reconciling orders) also runs
here, off the socket thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("alpaca_nb.stream")

CHORE_DELAY = 0.25            # seconds between a (re)connect and its REST refill/reconcile
MIN_PERIOD = 0.002            # at most 500 fan-out cycles per second, whatever the message rate
ERROR_LOG_INTERVAL = 10.0     # a callback that keeps raising is logged at most this often


class Changes:
    """What changed since the previous fan-out cycle."""

    __slots__ = ("events", "market", "statuses")

    def __init__(self, market: dict[str, dict[str, Any]] | None = None, events: list[Any] | None = None,
                 statuses: list[Any] | None = None):
        self.market = market or {}       # wire type ("q", "t", "b"...) -> {symbol: record}
        self.events = events or []       # trade_updates "data" objects, in arrival order
        self.statuses = statuses or []   # StreamStatus objects


class Listener:
    """Base: rate limiting, error logging. Subclasses collect and deliver."""

    types: frozenset[str] = frozenset()   # market types this listener needs from collect()

    def __init__(self, fn: Callable[..., Any] | None, max_hz: float | None, owner: Any):
        self.fn = fn
        self.interval = 0.0 if max_hz is None else 1.0 / max_hz
        self.owner = owner                # the Stream view (for its symbol filter)
        self.due = 0.0
        self.errors = 0
        self._last_error_log = -1e9
        self.active = True
        self._fanouts: list[Fanout] = []

    def offer(self, changes: Changes) -> None:
        raise NotImplementedError

    def pending(self) -> bool:
        raise NotImplementedError

    def deliver(self) -> None:
        raise NotImplementedError

    def run(self, now: float) -> None:
        self.due = now + self.interval
        try:
            self.deliver()
        except Exception:
            self.errors += 1
            if now - self._last_error_log >= ERROR_LOG_INTERVAL:
                self._last_error_log = now
                log.exception("stream callback %s raised (%d time(s) so far); the stream goes on",
                              _name(self.fn), self.errors)

    def cancel(self) -> None:
        """Stop delivering to this listener."""
        self.active = False
        for fanout in list(self._fanouts):
            fanout.remove(self)

    def __repr__(self) -> str:
        hz = "unlimited" if not self.interval else f"{1 / self.interval:g} Hz"
        return f"<{type(self).__name__} {_name(self.fn)} {hz}{'' if self.active else ' cancelled'}>"


class MarketListener(Listener):
    """Latest record per symbol of one market-data type, converted by ``convert``."""

    def __init__(self, fn, max_hz, owner, wire_type: str, channel: str, convert: Callable[[str, dict], Any]):
        super().__init__(fn, max_hz, owner)
        self.types = frozenset((wire_type,))
        self.wire_type = wire_type
        self.channel = channel
        self.convert = convert
        self._pending: dict[str, Any] = {}
        self._last: dict[str, Any] = {}

    def offer(self, changes: Changes) -> None:
        records = changes.market.get(self.wire_type)
        if not records:
            return
        wants = self.owner._wants(self.channel)
        last = self._last
        for symbol, rec in records.items():
            if rec is not None and rec is not last.get(symbol) and wants(symbol):
                self._pending[symbol] = rec

    def pending(self) -> bool:
        return bool(self._pending)

    def deliver(self) -> None:
        batch, self._pending = self._pending, {}
        last, fn, convert, wire_type = self._last, self.fn, self.convert, self.wire_type
        for symbol, rec in batch.items():
            last[symbol] = rec
            fn(convert(wire_type, rec))


class EventListener(Listener):
    """Trade updates, in arrival order. Without ``max_hz`` every event is delivered unless more
    than ``BACKLOG`` wait (a stuck consumer); then, and always with ``max_hz``, only the latest
    event per order is kept between deliveries (the order in it is cumulative, so no fill is lost
    from the order's state)."""

    BACKLOG = 10_000

    def __init__(self, fn, max_hz, owner, convert: Callable[[dict], Any]):
        super().__init__(fn, max_hz, owner)
        self.convert = convert
        self._pending: OrderedDict[Any, Any] = OrderedDict()
        self._seq = 0

    def offer(self, changes: Changes) -> None:
        pending = self._pending
        for event in changes.events:
            order = event.get("order") if isinstance(event, dict) else None
            oid = order.get("id") if isinstance(order, dict) else None
            if not self.interval and len(pending) < self.BACKLOG:
                self._seq += 1
                pending[(oid, self._seq)] = event
                continue
            for key in [k for k in pending if k[0] == oid]:
                del pending[key]
            pending[(oid, 0)] = event

    def pending(self) -> bool:
        return bool(self._pending)

    def deliver(self) -> None:
        batch, self._pending = self._pending, OrderedDict()
        for event in batch.values():
            self.fn(self.convert(event))


class StatusListener(Listener):
    """Every status change, in order (they are rare; at most 1000 are kept for a stuck consumer)."""

    def __init__(self, fn, max_hz, owner):
        super().__init__(fn, max_hz, owner)
        self._pending: deque[Any] = deque(maxlen=1000)

    def offer(self, changes: Changes) -> None:
        self._pending.extend(changes.statuses)

    def pending(self) -> bool:
        return bool(self._pending)

    def deliver(self) -> None:
        while self._pending:
            self.fn(self._pending.popleft())


class Fanout:
    """The thread that delivers a hub's changes to its listeners and runs its REST chores."""

    def __init__(self, hub: Any, *, name: str):
        self.hub = hub
        self._listeners: list[Listener] = []
        self._types: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._tasks: list[tuple[float, str, Callable[[], Any]]] = []
        self._statuses: deque[Any] = deque(maxlen=1000)
        self.has_listeners = False
        self.cycles = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def add(self, listener: Listener) -> Listener:
        with self._lock:
            self._listeners.append(listener)
            listener._fanouts.append(self)
            self._refresh()
        self._wake.set()
        return listener

    def remove(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
                self._refresh()
            if self in listener._fanouts:
                listener._fanouts.remove(self)

    def remove_owner(self, owner: Any) -> list[Listener]:
        with self._lock:
            gone = [li for li in self._listeners if li.owner is owner]
            self._listeners = [li for li in self._listeners if li.owner is not owner]
            self._refresh()
        return gone

    def _refresh(self) -> None:
        self._types = frozenset().union(*(li.types for li in self._listeners))
        self.has_listeners = bool(self._listeners)

    @property
    def types(self) -> frozenset[str]:
        return self._types

    def wake(self) -> None:
        """Called by the socket thread after each batch (cheap when already awake)."""
        if self.has_listeners and not self._wake.is_set():
            self._wake.set()

    def post_status(self, status: Any) -> None:
        self._statuses.append(status)
        self._wake.set()

    def submit(self, name: str, task: Callable[[], Any], *, delay: float = CHORE_DELAY) -> None:
        """Run ``task`` on this thread after ``delay`` seconds (REST chores); exceptions are
        logged. The delay keeps streams that are closed right away from spending REST requests
        (and close() from waiting on one)."""
        with self._lock:
            self._tasks.append((time.monotonic() + delay, name, task))
        self._wake.set()

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        wait = None
        while True:
            self._wake.wait(wait)
            if self._stop.is_set():
                break
            self._wake.clear()
            started = time.monotonic()
            self._cycle()
            with self._lock:
                listeners = list(self._listeners)
            now = time.monotonic()
            dues = [li.due - now for li in listeners if li.pending()]
            with self._lock:
                dues += [due - now for due, _, _ in self._tasks]
            wait = max(0.0, min(dues)) if dues else None
            rest = MIN_PERIOD - (time.monotonic() - started)
            if rest > 0 and self._stop.wait(rest):
                break
        # closing: deliver the last statuses (e.g. "stopped") to whoever listens
        try:
            self._cycle(final=True)
        except Exception:       # pragma: no cover - best effort at shutdown
            log.debug("fan-out: final cycle failed", exc_info=True)

    def _cycle(self, final: bool = False) -> None:
        self.cycles += 1
        while not final and not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                ready = [t for t in self._tasks if t[0] <= now]
                if not ready:
                    break
                self._tasks.remove(ready[0])
            _, name, task = ready[0]
            try:
                task()
            except Exception as exc:
                log.warning("stream: %s failed: %s", name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        with self._lock:
            listeners = list(self._listeners)
            types = self._types
        statuses = []
        while self._statuses:
            statuses.append(self._statuses.popleft())
        if not listeners:
            return
        changes = self.hub.collect(types) if not final else Changes()
        changes.statuses = statuses
        now = time.monotonic()
        for li in listeners:
            if li.active:
                li.offer(changes)
        for li in listeners:
            if li.active and li.pending() and (final or now >= li.due):
                li.run(now)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
