"""The fan-out thread of a stream hub: coalesced callbacks, display updates and REST chores.

The socket thread never runs user or UI code. It updates the live state and calls
:meth:`Fanout.wake`; this thread then collects what changed (the latest record per symbol, or per
order for trade updates) and hands it to each listener no faster than the listener's ``max_hz``.
Between deliveries a market-data listener keeps only the latest value per symbol, so a slow
consumer costs at most one pending value per symbol and never slows the socket. Events (trade
updates, status changes) wait in bounded queues: when a consumer falls more than ``BACKLOG``
behind, the oldest are dropped, counted and warned about. A listener receives what happens from
its registration on, never a history from before it. A callback that raises is logged and the
stream goes on. REST work (refilling the table after a gap, reconciling orders) also runs here,
off the socket thread; a chore that fails is retried a few times with backoff, and a closed hub
runs none (see :meth:`Fanout.submit`).
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
CHORE_ATTEMPTS = 8            # tries of a failing chore; waits 0.25, 0.5, 1, 2 ... 16 s between them
CHORE_RETRY_CAP = 16.0
MIN_PERIOD = 0.002            # at most 500 fan-out cycles per second, whatever the message rate
ERROR_LOG_INTERVAL = 10.0     # a callback that keeps raising (or a queue that keeps dropping) is
                              # logged at most this often
BACKLOG = 10_000              # events kept for one slow consumer before the oldest are dropped


class Stopped(Exception):
    """The hub closed: a REST chore must not send anything more."""


class Changes:
    """What changed since the previous fan-out cycle."""

    __slots__ = ("dropped", "events", "market", "statuses")

    def __init__(self, market: dict[str, dict[str, Any]] | None = None, events: list[Any] | None = None,
                 statuses: list[Any] | None = None, dropped: int = 0):
        self.market = market or {}       # wire type ("q", "t", "b"...) -> {symbol: record}
        self.events = events or []       # (sequence number, trade_updates "data"), in arrival order
        self.statuses = statuses or []   # StreamStatus objects
        self.dropped = dropped           # events the hub dropped while this thread was busy


class Listener:
    """Base: rate limiting, error logging. Subclasses collect and deliver."""

    types: frozenset[str] = frozenset()   # market types this listener needs from collect()
    wants_events = False                  # trade-update events (the hub queues none without one)

    def __init__(self, fn: Callable[..., Any] | None, max_hz: float | None, owner: Any):
        self.fn = fn
        self.interval = 0.0 if max_hz is None else 1.0 / max_hz
        self.owner = owner                # the Stream view (for its symbol filter)
        self.due = 0.0
        self.errors = 0
        self._last_error_log = -1e9
        self.active = True
        self.since = 0                    # events numbered up to this one came before it registered
        self.dropped = 0                  # events dropped because the consumer fell behind
        self._last_drop_log = -1e9
        self._fanouts: list[Fanout] = []
        self.lock = threading.RLock()     # a view's listener may sit on two hubs' fan-outs (stocks, crypto)

    def _drop(self, n: int = 1) -> None:
        """Count ``n`` events dropped from a full queue; warn (at most every ERROR_LOG_INTERVAL)."""
        self.dropped += n
        now = time.monotonic()
        if now - self._last_drop_log >= ERROR_LOG_INTERVAL:
            self._last_drop_log = now
            log.warning("stream callback %s is more than %d events behind; the oldest were dropped "
                        "(%d so far)", _name(self.fn), BACKLOG, self.dropped)

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
    """Latest record per symbol of some market-data events (``{event: (wire type, channel)}``),
    converted by ``convert``: ``fn(update)`` per record, or with ``batch`` one
    ``fn({event: [update, ...]})`` per delivery."""

    def __init__(self, fn, max_hz, owner, kinds: dict[str, tuple[str, str]],
                 convert: Callable[[str, dict], Any], *, batch: bool = False):
        super().__init__(fn, max_hz, owner)
        self.kinds = {wire_type: (event, channel) for event, (wire_type, channel) in kinds.items()}
        self.types = frozenset(self.kinds)
        self.convert = convert
        self.batch = batch
        self._pending: dict[tuple[str, str], Any] = {}     # (wire type, symbol) -> record
        self._last: dict[tuple[str, str], Any] = {}

    def offer(self, changes: Changes) -> None:
        last, pending = self._last, self._pending
        for wire_type, (_, channel) in self.kinds.items():
            records = changes.market.get(wire_type)
            if not records:
                continue
            wants = self.owner._wants(channel)
            for symbol, rec in records.items():
                key = (wire_type, symbol)
                if rec is not None and rec is not last.get(key) and wants(symbol):
                    pending[key] = rec

    def pending(self) -> bool:
        return bool(self._pending)

    def deliver(self) -> None:
        batch, self._pending = self._pending, {}
        last, fn, convert = self._last, self.fn, self.convert
        out: dict[str, list[Any]] = {}
        for key, rec in batch.items():
            last[key] = rec
            wire_type = key[0]
            if self.batch:
                out.setdefault(self.kinds[wire_type][0], []).append(convert(wire_type, rec))
            else:
                fn(convert(wire_type, rec))
        if out:
            fn(out)


class EventListener(Listener):
    """Trade updates, in arrival order, from the listener's registration on. Without ``max_hz``
    every event is delivered; with it only the latest event per order is kept between deliveries
    (the order in it is cumulative, so no fill is lost from the order's state). Either way at most
    ``BACKLOG`` wait: beyond that the oldest are dropped, counted in ``dropped`` and warned about."""

    wants_events = True

    def __init__(self, fn, max_hz, owner, convert: Callable[[dict], Any]):
        super().__init__(fn, max_hz, owner)
        self.convert = convert
        self._queue: deque[Any] = deque()
        self._latest: OrderedDict[Any, Any] = OrderedDict()     # order id -> event (with max_hz)

    def offer(self, changes: Changes) -> None:
        if changes.dropped:
            self._drop(changes.dropped)
        since = self.since
        for seq, event in changes.events:
            if seq <= since:
                continue
            if self.interval:
                order = event.get("order") if isinstance(event, dict) else None
                oid = order.get("id") if isinstance(order, dict) else None
                self._latest.pop(oid, None)
                self._latest[oid] = event
                if len(self._latest) > BACKLOG:
                    self._latest.popitem(last=False)
                    self._drop()
            else:
                if len(self._queue) >= BACKLOG:
                    self._queue.popleft()
                    self._drop()
                self._queue.append(event)

    def pending(self) -> bool:
        return bool(self._queue or self._latest)

    def deliver(self) -> None:
        if self.interval:
            batch, self._latest = list(self._latest.values()), OrderedDict()
        else:
            batch, self._queue = self._queue, deque()
        for event in batch:
            self.fn(self.convert(event))


class StatusListener(Listener):
    """Every status change from registration on, in order (at most ``BACKLOG`` wait for a stuck
    consumer; older ones are dropped and counted)."""

    def __init__(self, fn, max_hz, owner):
        super().__init__(fn, max_hz, owner)
        self._pending: deque[Any] = deque()

    def offer(self, changes: Changes) -> None:
        for status in changes.statuses:
            if len(self._pending) >= BACKLOG:
                self._pending.popleft()
                self._drop()
            self._pending.append(status)

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
        self._tasks: list[tuple[float, str, Callable[[], Any], int]] = []   # (due, name, task, attempt)
        self._statuses: deque[Any] = deque(maxlen=BACKLOG)   # drained every cycle
        self.has_listeners = False
        self.wants_events = False
        self.cycles = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Tell the thread to end (pending chores are dropped); :meth:`join` waits for it."""
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, timeout))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def add(self, listener: Listener) -> Listener:
        """Deliver to ``listener`` what happens from now on."""
        with self._lock:
            self._listeners.append(listener)
            listener._fanouts.append(self)
            self._refresh()
            listener.since = max(listener.since, getattr(self.hub, "events_seq", 0))
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
        self.wants_events = any(li.wants_events for li in self._listeners)

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

    def submit(self, name: str, task: Callable[[], Any], *, delay: float = CHORE_DELAY, attempt: int = 1) -> None:
        """Run ``task`` on this thread after ``delay`` seconds (REST chores). The delay keeps
        streams that are closed right away from spending REST requests. A chore named like one
        still waiting is not queued twice (the waiting one runs at the earlier of the two times).
        One that raises is logged and tried again later (up to ``CHORE_ATTEMPTS`` times, 0.25 s
        apart, then twice as long each time); one that raises :class:`Stopped`, and every chore
        once the fan-out stops, is dropped."""
        due = time.monotonic() + delay
        with self._lock:
            if self._stop.is_set():
                return
            for i, (when, other, _, tries) in enumerate(self._tasks):
                if other == name:
                    self._tasks[i] = (min(when, due), name, task, min(tries, attempt))
                    break
            else:
                self._tasks.append((due, name, task, attempt))
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
                dues += [task[0] - now for task in self._tasks]
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
            _, name, task, attempt = ready[0]
            try:
                task()
            except Stopped:
                return
            except Exception as exc:
                again = attempt < CHORE_ATTEMPTS and not self._stop.is_set()
                delay = min(CHORE_RETRY_CAP, CHORE_DELAY * 2.0 ** (attempt - 1))
                log.warning("stream: %s failed: %s%s", name, exc,
                            f"; trying again in {delay:g} s" if again else "; giving up until the next reconnect",
                            exc_info=log.isEnabledFor(logging.DEBUG))
                if again:
                    self.submit(name, task, delay=delay, attempt=attempt + 1)
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
                with li.lock:
                    li.offer(changes)
        for li in listeners:
            with li.lock:
                if li.active and li.pending() and (final or now >= li.due):
                    li.run(now)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
