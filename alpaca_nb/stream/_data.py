"""The market-data stream hub: ``wss://stream.data.alpaca.markets/v2/{feed}`` (protocol section 5).

Handshake: ``[{"T":"success","msg":"connected"}]``, send ``auth``, expect ``authenticated``
(402 auth failed and 409 insufficient subscription stop the stream: opening it raises
AuthenticationError, for 409 with a message that names the feed and the way out, feed='iex' or
a plan upgrade; 406 means another client holds the connection), then subscribe the union of what every open view wants. Each frame is one
JSON array of messages; data messages go straight into the :class:`Store`, control messages
(``subscription``, ``error``) update the confirmed subscription set that ``subscribe()`` waits on.
After every (re)connect and for every newly subscribed symbol the fan-out thread refills the
table from REST (latest quotes, trades and bars), so it is never silently stale after a gap;
through a stream relay also when the relay says its own upstream came back
(``{"T":"success","msg":"relay: upstream connected"}``).

The same hub serves Alpaca's crypto stream (``/v1beta3/crypto/{loc}``, same handshake and
messages) when made with ``crypto_loc``: it then carries only symbols with a "/" ("BTC/USD")
and refills from ``/v1beta3/crypto/{loc}/latest/...``; the stock hub carries the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import AlpacaError
from ._fanout import Changes
from ._hub import Conflict, Fatal, Hub, Refused
from ._socket import Undecodable, decode
from ._table import ALL_PAIRS, CHANNELS, WILDCARDS, WIRE_CHANNELS, Store

log = logging.getLogger("alpaca_nb.stream")

RELAY_RECONNECTED = "relay: upstream connected"     # alpaca_nb.relay's status message
FATAL_CODES = {402: "auth failed", 409: "insufficient subscription", 408: "v2 not enabled",
               411: "insufficient scope"}
REFILL_KINDS = (("quotes", "q", "quotes"), ("trades", "t", "trades"), ("bars", "b", "bars"))
REFILL_CHUNK = 200
REST_FEEDS = ("iex", "sip", "delayed_sip", "boats", "overnight", "otc")
BAD_LOG_INTERVAL = 10.0

DataRest = Callable[..., Any]     # transport.data(path, params) -> decoded JSON


class SubscriptionError(AlpacaError):
    """The stream server refused a subscription change, e.g. code 405 "symbol limit exceeded"
    (``code`` is the stream's error code; the subscription is left as it was)."""


class DataHub(Hub):
    kind = "data"

    def __init__(self, *, feed: str, rest: DataRest | None, crypto_loc: str | None = None, **kw: Any):
        self.crypto_loc = crypto_loc
        if crypto_loc is not None:
            self.kind = "crypto"
        super().__init__(**kw)
        self.feed = feed
        self.rest = rest
        self.store = Store()
        self._server: dict[str, set[str]] = {wire: set() for wire, _ in CHANNELS.values()}
        self._errors: list[tuple[int, Any, str]] = []   # (generation, code, message)
        self._generation = 0
        self._bad = 0
        self._bad_logged = -1e9
        self._refills: dict[str, dict[str, None]] = {}   # wire channel -> symbols to refill (lock held)

    # ------------------------------------------------------------------ subscriptions
    def union(self) -> dict[str, dict[str, None]]:
        """What the open views want, per wire channel, in first-asked order (lock held)."""
        out: dict[str, dict[str, None]] = {wire: {} for wire, _ in CHANNELS.values()}
        takes = self.takes
        for view in self.views:
            for wire, symbols in view._subs.items():
                out[wire].update((s, None) for s in symbols if takes(s))
        return out

    def takes(self, symbol: str) -> bool:
        """Does this hub carry ``symbol``? Crypto pairs ("BTC/USD", and "*/*") go to the crypto
        hub, the rest (and "*") to the stock hub."""
        return ("/" in symbol) == (self.crypto_loc is not None)

    def change(self, view: Any, *, add: dict[str, list[str]] | None = None,
               remove: dict[str, list[str]] | None = None, wait: float | None = 5.0) -> None:
        """Apply a view's subscription change, tell the server what the union gained and lost,
        and (when connected) wait up to ``wait`` seconds for the server to confirm.

        Raises:
            SubscriptionError: the server answered with an error (the view's change is undone).
        """
        with self.lock:
            before = self.union()
            undo = {wire: dict(view._subs.get(wire, {})) for wire in set(add or {}) | set(remove or {})}
            for wire, symbols in (add or {}).items():
                view._subs.setdefault(wire, {}).update(dict.fromkeys(symbols))
            for wire, symbols in (remove or {}).items():
                current = view._subs.get(wire, {})
                for s in symbols:
                    current.pop(s, None)
            after = self.union()
            gained = {w: [s for s in after[w] if s not in before[w]] for w in after}
            lost = {w: [s for s in before[w] if s not in after[w]] for w in after}
            gained = {w: v for w, v in gained.items() if v}
            lost = {w: v for w, v in lost.items() if v}
            generation = self._generation
            sent = False
            if self._live:
                if lost:
                    sent |= self.send({"action": "unsubscribe", **self._wire(lost)})
                if gained:
                    sent |= self.send({"action": "subscribe", **self._wire(gained)})
        dead: set[str] = set()
        if lost:
            gone = {s for v in lost.values() for s in v}
            with self.lock:
                still = {s for v in self.union().values() for s in v}
            dead = gone - still
            if dead:
                self.store.purge(dead, [t for _, t in CHANNELS.values()])
        if gained and self._live:
            self._schedule_refill(gained)
        if not sent or not wait:
            return
        deadline = time.monotonic() + wait
        with self.lock:
            while True:
                errors = [e for e in self._errors if e[0] > generation]
                if errors:
                    _, code, message = errors[0]
                    for wire, symbols in undo.items():
                        view._subs[wire] = symbols
                    raise SubscriptionError(f"the stream refused the subscription: {message}",
                                            code=code if isinstance(code, int) else None)
                if self._confirmed(gained, lost):
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._live:
                    log.info("data stream: subscription change not confirmed yet (%s); it is "
                             "resent on reconnect", self._status)
                    return
                self._changed.wait(left)
        if dead:    # what the server sent before it confirmed has been applied by now: purge again
            self.store.purge(dead, [t for _, t in CHANNELS.values()])

    def _wire(self, subs: dict[str, list[str]]) -> dict[str, list[str]]:
        """Symbols as the server spells them: every crypto pair ("*/*") is "*" on the crypto
        stream."""
        if self.crypto_loc is None:
            return subs
        return {w: ["*" if s == ALL_PAIRS else s for s in v] for w, v in subs.items()}

    def _confirmed(self, gained: dict[str, list[str]], lost: dict[str, list[str]]) -> bool:
        server = self._server
        return (all(set(v) <= server.get(w, set()) for w, v in gained.items())
                and not any(set(v) & server.get(w, set()) for w, v in lost.items()))

    @property
    def generation(self) -> int:
        """Counts the error messages the server sent; pass it to :meth:`wait_confirmed`."""
        return self._generation

    def wait_confirmed(self, subs: dict[str, Any], timeout: float, *, since: int | None = None) -> bool:
        """Wait until the server confirms every symbol of ``subs`` (True) or time runs out.

        Raises:
            SubscriptionError: the server sent an error after generation ``since``.
        """
        wanted = {w: list(v) for w, v in subs.items() if v}
        deadline = time.monotonic() + timeout
        with self.lock:
            while not self._confirmed(wanted, {}):
                errors = [e for e in self._errors if since is not None and e[0] > since]
                if errors:
                    _, code, message = errors[0]
                    raise SubscriptionError(f"the stream refused the subscription: {message}",
                                            code=code if isinstance(code, int) else None)
                left = deadline - time.monotonic()
                if left <= 0 or self._status.stopped:
                    return False
                self._changed.wait(left)
        return True

    # ------------------------------------------------------------------ socket thread
    def _handshake(self, ws, reader) -> None:
        deadline = time.monotonic() + self.options.connect_timeout
        first = self._control(self._next_message(reader, ws, deadline))
        if first.get("T") == "error":
            self._refuse(first)
        if first.get("T") != "success" or first.get("msg") != "connected":
            raise Refused(f"unexpected greeting {first!r:.120}")
        self._send_on(ws, self._auth_message())
        while True:
            reply = self._control(self._next_message(reader, ws, deadline))
            if reply.get("T") == "error":
                self._refuse(reply)
            if reply.get("T") == "success" and reply.get("msg") == "authenticated":
                break
            log.debug("data stream: ignoring %r before authentication", reply)
        with self.lock:
            union = {w: list(v) for w, v in self.union().items() if v}
            self._server = {wire: set() for wire, _ in CHANNELS.values()}
            if union:
                self._send_on(ws, {"action": "subscribe", **self._wire(union)})
            self._live = True

    @staticmethod
    def _control(message: Any) -> dict[str, Any]:
        if isinstance(message, list) and message and isinstance(message[0], dict):
            return message[0]
        if isinstance(message, dict):
            return message
        raise Refused(f"unexpected handshake message {message!r:.120}")

    def _refuse(self, error: dict[str, Any]) -> None:
        code, msg = error.get("code"), error.get("msg") or "error"
        if code == 406:
            raise Conflict(f"{msg} (406): another client holds this account's connection")
        if code == 409:
            raise Fatal(f"{msg} (409): this account's market-data plan does not include the "
                        f"{self.feed!r} feed; open the stream with feed='iex' (real time, every "
                        "plan) or feed='delayed_sip' (SIP 15 minutes late), or upgrade the plan "
                        "(real-time SIP needs Alpaca's Algo Trader Plus)", code)
        if code in FATAL_CODES:
            raise Fatal(f"{msg} ({code})", code)
        raise Refused(f"{msg} ({code})")

    def _on_frame(self, opcode: int, payload: Any) -> None:
        try:
            messages = decode(payload, use_msgpack=self.use_msgpack)
        except Undecodable:
            self._malformed(payload, "not msgpack" if self.use_msgpack else "not JSON")
            return
        if type(messages) is not list:
            if type(messages) is dict:
                messages = [messages]
            else:
                self._malformed(payload, "not an array of messages")
                return
        other = self.store.apply(messages, time.time_ns())
        if other is not None:
            self._others(other, payload)
        self.fanout.wake()

    def _others(self, messages: list[Any], payload: Any) -> None:
        for m in messages:
            t = m.get("T") if isinstance(m, dict) else None
            if t == "subscription":
                star = ALL_PAIRS if self.crypto_loc is not None else "*"
                with self.lock:
                    self._server = {wire: {star if s == "*" else s for s in m[wire]}
                                    if isinstance(m.get(wire), list) else set() for wire, _ in CHANNELS.values()}
                    self._changed.notify_all()
            elif t == "error":
                code, msg = m.get("code"), m.get("msg")
                log.warning("data stream: server error %s: %s", code, msg)
                with self.lock:
                    self._generation += 1
                    self._errors = (self._errors + [(self._generation, code, str(msg))])[-20:]
                    self._changed.notify_all()
            elif t == "success":
                log.debug("data stream: %s", m.get("msg"))
                if m.get("msg") == RELAY_RECONNECTED:    # a relay's upstream came back: a gap
                    self._on_connected()
            elif t in ("c", "x", "l", "i", "n"):   # corrections, cancel errors, LULDs, imbalances
                log.debug("data stream: ignored %s message", t)
            else:
                self._malformed(payload, "message without a known type and symbol")

    def _malformed(self, payload: Any, why: str) -> None:
        self._bad += 1
        now = time.monotonic()
        if now - self._bad_logged >= BAD_LOG_INTERVAL or self._bad <= 3:
            self._bad_logged = now
            log.warning("data stream: malformed message skipped (%s; %d so far): %r", why, self._bad,
                        bytes(payload[:80]))

    @property
    def malformed(self) -> int:
        """How many malformed messages were skipped."""
        return self._bad

    def _on_connected(self) -> None:
        with self.lock:
            union = {w: list(v) for w, v in self.union().items() if v}
        if union:
            self._schedule_refill(union)

    def _schedule_refill(self, subs: dict[str, list[str]]) -> None:
        """Refill these symbols from REST soon; requests made meanwhile join one chore."""
        with self.lock:
            for wire, symbols in subs.items():
                self._refills.setdefault(wire, {}).update(dict.fromkeys(symbols))
        self.fanout.submit("refilling the table", self._refill_scheduled)

    # ------------------------------------------------------------------ fan-out thread
    def _refill_scheduled(self) -> None:
        with self.lock:
            subs, self._refills = {w: list(v) for w, v in self._refills.items()}, {}
        try:
            self.refill(subs)
        except Exception:                  # kept for the retry (symbols asked meanwhile join it)
            with self.lock:
                for wire, symbols in subs.items():
                    self._refills.setdefault(wire, {}).update(dict.fromkeys(symbols))
            raise

    def collect(self, types) -> Changes:
        return Changes(self.store.collect(types) if types else {})

    def refill(self, subs: dict[str, list[str]]) -> None:
        """Latest quotes/trades/bars from REST for the given subscriptions (fan-out thread).
        Symbols unsubscribed meanwhile are left out, before and after the request."""
        if self.rest is None or self._stop.is_set() or (self.crypto_loc is None and self.feed not in REST_FEEDS):
            return
        kinds = REFILL_KINDS + ((("orderbooks", "o", "orderbooks"),) if self.crypto_loc else ())
        for wire, wire_type, kind in kinds:
            with self.lock:
                wanted = self.union()[wire]
            symbols = [s for s in subs.get(wire, ()) if s not in WILDCARDS and s in wanted]
            for i in range(0, len(symbols), REFILL_CHUNK):
                chunk = symbols[i:i + REFILL_CHUNK]
                if self.crypto_loc is None:
                    path, params = f"/v2/stocks/{kind}/latest", {"symbols": ",".join(chunk), "feed": self.feed}
                else:
                    path, params = f"/v1beta3/crypto/{self.crypto_loc}/latest/{kind}", {"symbols": ",".join(chunk)}
                body = self.call_rest(self.rest, path, params, retry=False)     # retried by the fan-out
                records = (body or {}).get(kind) if isinstance(body, dict) else None
                if isinstance(records, dict):
                    with self.lock:     # so an unsubscribe cannot slip between check and merge
                        wanted = self.union()[wire]
                        self.store.merge(wire_type, {s: r for s, r in records.items() if s in wanted},
                                         time.time_ns())
        self.fanout.wake()


def wire_channel(name: str) -> str:
    """Public channel name (``updated_bars``) -> wire key (``updatedBars``); wire keys pass."""
    if name in CHANNELS:
        return CHANNELS[name][0]
    if name in WIRE_CHANNELS:
        return name
    raise ValueError(f"unknown channel {name!r}; expected one of {', '.join(CHANNELS)}")
