"""Short-lived caches behind the data formulas.

Excel calls a formula again on every recalculation that touches it, and may call it several
times per recalculation; a sheet full of ``=ALPACA_BDP($A2,B$1)`` calls it once per cell. The
caches make those calls cheap and keep the request count down:

* :class:`TTLCache`: the result of (formula, arguments) is reused for a few seconds; concurrent
  callers of the same key wait for one computation instead of starting their own.
* :class:`SnapshotCache`: the latest values of every symbol any BDP asked for recently are
  fetched together: a cold grid of per-cell formulas makes one request per new symbol, and a
  refresh of the whole grid after the entries went stale makes one request in total.

All requests go through the connected client, so they share its rate limiter and retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

__all__ = ["SnapshotCache", "TTLCache"]

MAX_BATCH = 200          # symbols per snapshots request made to refresh the working set


class TTLCache:
    """Results by key for ``ttl`` seconds (monotonic clock), computed once per key at a time.
    Errors are not cached."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic, max_entries: int = 4096):
        self.ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._inflight: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            hit = self._fresh(key)
            if hit is not None:
                return hit[1]
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                hit = self._fresh(key)
                if hit is not None:
                    return hit[1]
            try:
                value = compute()
            finally:
                with self._lock:
                    self._inflight.pop(key, None)
            with self._lock:
                if len(self._entries) >= self._max:
                    self._evict()
                self._entries[key] = (self._clock(), value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _fresh(self, key: Hashable) -> tuple[float, Any] | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry[0] < self.ttl:
            return entry
        return None

    def _evict(self) -> None:
        now = self._clock()
        for key in [k for k, (t, _) in self._entries.items() if now - t >= self.ttl]:
            del self._entries[key]
        while len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]


class SnapshotCache:
    """Latest-value rows per (connection, feed, symbol), fresh for ``ttl`` seconds.

    ``rows(fetch, symbols)`` returns one dict per symbol (None when the server has no data for
    it). On a miss it fetches the missing symbols together with every symbol asked for within
    ``working_set`` seconds whose row is stale, in one ``fetch(list_of_symbols)`` call
    (``fetch`` returns {symbol: row}), so a grid recalculated as a whole refreshes at once.
    """

    def __init__(self, ttl: float, *, working_set: float = 120.0, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.working_set = working_set
        self._clock = clock
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._rows: dict[tuple[Hashable, str], tuple[float, dict[str, Any] | None]] = {}
        self._asked: dict[tuple[Hashable, str], float] = {}

    def rows(self, scope: Hashable, symbols: Iterable[str],
             fetch: Callable[[list[str]], dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any] | None]:
        wanted = list(dict.fromkeys(symbols))
        now = self._clock()
        with self._lock:
            for symbol in wanted:
                self._asked[(scope, symbol)] = now
            found, missing = self._lookup(scope, wanted, now)
        if not missing:
            return found
        with self._fetch_lock:                 # one refresh at a time; the next finds it done
            now = self._clock()
            with self._lock:
                found, missing = self._lookup(scope, wanted, now)
                if not missing:
                    return found
                extra = [s for (sc, s), t in self._asked.items()
                         if sc == scope and s not in missing and now - t < self.working_set
                         and not self._is_fresh((scope, s), now)]
            batch = (missing + extra)[:max(MAX_BATCH, len(missing))]
            answer = fetch(batch)
            stamp = self._clock()
            with self._lock:
                for symbol in batch:
                    self._rows[(scope, symbol)] = (stamp, answer.get(symbol))
                self._forget_old(stamp)
                found.update({s: self._rows[(scope, s)][1] for s in missing})
        return found

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._asked.clear()

    def expire(self) -> None:
        """Make every row stale but remember the working set, so the next formula refreshes
        all recently asked symbols in one request."""
        with self._lock:
            self._rows.clear()

    def _is_fresh(self, key: tuple[Hashable, str], now: float) -> bool:
        entry = self._rows.get(key)
        return entry is not None and now - entry[0] < self.ttl

    def _lookup(self, scope: Hashable, wanted: list[str], now: float):
        found: dict[str, dict[str, Any] | None] = {}
        missing: list[str] = []
        for symbol in wanted:
            if self._is_fresh((scope, symbol), now):
                found[symbol] = self._rows[(scope, symbol)][1]
            else:
                missing.append(symbol)
        return found, missing

    def _forget_old(self, now: float) -> None:
        horizon = max(self.working_set, self.ttl)
        for key in [k for k, t in self._asked.items() if now - t >= horizon]:
            del self._asked[key]
            self._rows.pop(key, None)
