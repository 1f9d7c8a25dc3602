"""The process-wide owner of one stream connection: its socket thread, reconnects and status.

Alpaca allows one connection per account and endpoint (a second one is refused with 406), so
every :class:`~alpaca_nb.stream.Stream` made in this process for the same endpoint and key is a
*view* on one :class:`Hub`. The hub owns two daemon threads:

* the socket thread connects, authenticates, reads frames and hands each one to the subclass's
  ``_on_frame`` (which only parses and updates the live state), sends keepalive pings, treats a
  silent socket as a drop and reconnects with capped exponential backoff and full jitter;
* the fan-out thread (:class:`~alpaca_nb.stream._fanout.Fanout`) runs everything else: user
  callbacks, notebook display updates and the REST calls that refill the state after a gap.

The last view to close closes the hub, which stops both threads and the socket within a second.
After :meth:`Hub.close` returns the hub sends nothing more: every REST chore goes through
:meth:`Hub.call_rest`, which refuses once the hub is closed, and pending chores are dropped.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import websocket

from .._config import Secret, mask_key_id
from ._fanout import Fanout, Stopped
from ._socket import (
    CLOSE,
    PING,
    PONG,
    Closed,
    FrameReader,
    Undecodable,
    decode,
    open_socket,
    send,
)

log = logging.getLogger("alpaca_nb.stream")

USER_AGENT = "alpaca-nb/0.1"


@dataclass(frozen=True)
class Reconnect:
    """Connection tuning shared by every view of one connection (the first view's values win).

    Attributes:
        base: seconds; the n-th reconnect waits a random time in [0, min(cap, base * 2**(n-1))].
        cap: seconds; the longest wait between two attempts.
        conflict: seconds; after a 406 (another client holds the connection) the wait is
            between half this and this, so the other client is not hammered.
        ping_interval: seconds between keepalive pings when nothing arrives.
        stale_timeout: seconds without any frame (data or pong) after which the socket counts
            as dropped.
        connect_timeout: seconds for the TCP/TLS connect, the upgrade and the authentication.
    """

    base: float = 0.5
    cap: float = 30.0
    conflict: float = 60.0
    ping_interval: float = 10.0
    stale_timeout: float = 25.0
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("base", "cap", "conflict", "ping_interval", "stale_timeout", "connect_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Reconnect.{name} must be a positive number of seconds, got {value!r}")
        if self.stale_timeout <= self.ping_interval:
            raise ValueError("Reconnect.stale_timeout must be longer than ping_interval, so a pong can arrive")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before attempt ``attempt`` (1 = first retry)."""
        return rng.uniform(0, min(self.cap, self.base * 2 ** min(attempt - 1, 30)))

    def conflict_delay(self, rng: random.Random) -> float:
        return rng.uniform(self.conflict / 2, self.conflict)


@dataclass(frozen=True)
class StreamStatus:
    """The state of one connection: ``connecting``, ``connected``, ``reconnecting`` or ``stopped``.

    ``attempt`` counts reconnect attempts since the last good connection, ``reason`` says why
    the connection is not up (``None`` when connected), ``since`` is the Unix time of the change.
    ``str(status)`` reads like ``reconnecting (attempt 3: connection lost)``; ``via`` is the
    stream relay the connection goes through (``connected via relay ws://127.0.0.1:8766``).
    """

    state: str
    endpoint: str = ""
    attempt: int = 0
    reason: str | None = None
    since: float = field(default_factory=time.time)
    via: str | None = None

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    @property
    def stopped(self) -> bool:
        return self.state == "stopped"

    def __str__(self) -> str:
        via = f" via relay {self.via}" if self.via else ""
        if self.state == "reconnecting":
            detail = f"attempt {self.attempt}" + (f": {self.reason}" if self.reason else "")
            return f"reconnecting{via} ({detail})"
        if self.reason and self.state != "connected":
            return f"{self.state}{via} ({self.reason})"
        return self.state + via


class Fatal(Exception):
    """The server refused us for a reason retrying cannot fix (bad keys, no subscription)."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class Conflict(Exception):
    """406: another client holds this account's connection to the endpoint."""


class Refused(Exception):
    """The server answered the handshake with something unexpected; retried with backoff."""


class Hub:
    """One connection and its threads. Subclasses implement the protocol hooks."""

    kind = "stream"

    def __init__(self, *, url: str, key_id: str, secret: Secret, options: Reconnect,
                 via: str | None = None, use_msgpack: bool = False):
        self.url = url
        self.via = via                # the stream relay this connection goes through
        self.use_msgpack = use_msgpack    # the codec asked for on the upgrade (see _socket)
        self.key_id = key_id
        self._secret = secret
        self.options = options
        self.views: set[Any] = set()
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)   # status changes, acks
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._ws: websocket.WebSocket | None = None
        self._live = False            # authenticated (and, for data, the union subscribed)
        self._status = StreamStatus("connecting", self.kind, via=via)
        self._conflicts = 0
        self._ghost_until = 0.0       # until then a 406 is probably our own dropped connection
        self._fatal: Fatal | None = None
        self._rng = random.Random()
        self.connections = 0          # successful connections so far
        self.frames = 0
        self.fanout = Fanout(self, name=f"alpaca-nb-{self.kind}-fanout")
        self._thread = threading.Thread(target=self._run, name=f"alpaca-nb-{self.kind}-socket", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.fanout.start()
        self._thread.start()

    def close(self, timeout: float = 0.9) -> None:
        """Stop both threads and close the socket; returns once both threads ended, or after
        ``timeout`` seconds. From then on the hub sends no request (see :meth:`call_rest`)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        ws = self._ws
        if ws is not None:
            _shutdown(ws)
        self._set_status("stopped", reason="closed")      # the fan-out's last cycle delivers it
        self.fanout.stop()
        self.fanout.join(max(0.05, deadline - time.monotonic()))
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(0.05, deadline - time.monotonic()))

    def call_rest(self, fn: Any, *args: Any, **kw: Any) -> Any:
        """``fn(*args, cancel=<the hub's stop event>, **kw)`` (a REST call of a chore, through
        :meth:`Transport.request`) unless the hub is closed.

        Raises:
            Stopped: the hub closed before the call, or while it ran (its answer is dropped).
        """
        if self._stop.is_set():
            raise Stopped(self.kind)
        try:
            result = fn(*args, cancel=self._stop, **kw)    # close() ends a wait for a rate-limit slot
        except Exception:
            if self._stop.is_set():
                raise Stopped(self.kind) from None
            raise
        if self._stop.is_set():
            raise Stopped(self.kind)
        return result

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    @property
    def status(self) -> StreamStatus:
        return self._status

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} key_id={mask_key_id(self.key_id)} {self._status}>"

    # ------------------------------------------------------------------ status
    def _set_status(self, state: str, *, attempt: int = 0, reason: str | None = None) -> None:
        with self.lock:
            old = self._status
            if old.state == "stopped" or (old.state == state and old.attempt == attempt and old.reason == reason):
                return
            status = self._status = StreamStatus(state, self.kind, attempt, reason, via=self.via)
            # logged before waiters wake, so whoever waits on the status also sees the log line
            level = logging.INFO if state in ("connected", "connecting") or reason == "closed" else logging.WARNING
            log.log(level, "%s stream %s: %s", self.kind, self.url, status)
            self._changed.notify_all()
        self.fanout.post_status(status)

    def wait_ready(self, timeout: float) -> StreamStatus:
        """Wait until connected, stopped, refused with 406, or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                st = self._status
                if st.state in ("connected", "stopped") or (st.state == "reconnecting" and self._conflicts):
                    return st
                left = deadline - time.monotonic()
                if left <= 0:
                    return st
                self._changed.wait(left)

    @property
    def fatal(self) -> Fatal | None:
        return self._fatal

    @property
    def conflicted(self) -> bool:
        return bool(self._conflicts)

    # ------------------------------------------------------------------ sending
    def send(self, message: dict[str, Any]) -> bool:
        """Send a control message if the socket is up; False when it is not (the reconnect
        handshake will send the full state anyway)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            with self._send_lock:
                send(ws, message, use_msgpack=self.use_msgpack)
            return True
        except (OSError, websocket.WebSocketException) as exc:
            log.debug("%s stream: send failed (%s); the reconnect will resend", self.kind, exc)
            return False

    def _send_on(self, ws: websocket.WebSocket, message: dict[str, Any]) -> None:
        """Send a message during the handshake in the connection's codec (errors propagate)."""
        with self._send_lock:
            send(ws, message, use_msgpack=self.use_msgpack)

    def _auth_message(self) -> dict[str, str]:
        return {"action": "auth", "key": self.key_id, "secret": self._secret.reveal()}

    # ------------------------------------------------------------------ the socket thread
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            ws = None
            started = time.monotonic()
            reason = "closed"
            try:
                ws = open_socket(self.url, timeout=self.options.connect_timeout, user_agent=USER_AGENT,
                                 use_msgpack=self.use_msgpack)
                self._ws = ws
                if self._stop.is_set():
                    break
                reader = FrameReader(ws.sock)
                self._handshake(ws, reader)
                self._conflicts = 0
                self.connections += 1
                self._set_status("connected")
                self._on_connected()
                reason = self._read_loop(ws, reader)
                self._ghost_until = time.monotonic() + max(30.0, 2 * self.options.stale_timeout)
            except Fatal as exc:
                self._fatal = exc
                break
            except Conflict as exc:
                reason = str(exc)
                if time.monotonic() < self._ghost_until:
                    # the server has not noticed yet that our previous connection is gone
                    log.info("%s stream: 406 right after a drop; the server probably still holds "
                             "our previous connection, retrying", self.kind)
                else:
                    self._conflicts += 1
            except (Refused, Closed) as exc:
                reason = str(exc)
            except websocket.WebSocketBadStatusException as exc:
                reason = f"upgrade refused with HTTP {exc.status_code}"
                if exc.status_code in (401, 403):
                    self._fatal = Fatal(f"auth failed (HTTP {exc.status_code})", exc.status_code)
                    break
            except (OSError, websocket.WebSocketException) as exc:
                reason = _describe(exc)
            except Exception as exc:     # a bug must not kill the thread silently
                log.exception("%s stream: unexpected error; reconnecting", self.kind)
                reason = f"internal error: {exc!r}"
            finally:
                with self.lock:
                    self._live = False
                    self._ws = None
                if ws is not None:
                    _close_quietly(ws)
            if self._stop.is_set():
                break
            stable = time.monotonic() - started >= 1.0
            attempt = 1 if stable and not self._conflicts else attempt + 1
            if self._conflicts:
                delay = self.options.conflict_delay(self._rng)
                log.warning("%s stream %s: another client holds this account's connection "
                            "(406 connection limit exceeded); trying again in %.0f s. Close the "
                            "other client (another notebook, script or SDK using the same keys).",
                            self.kind, self.url, delay)
            else:
                delay = self.options.delay(attempt, self._rng)
            self._set_status("reconnecting", attempt=attempt, reason=reason)
            if self._stop.wait(delay):
                break
        self._set_status("stopped", reason=(str(self._fatal) if self._fatal else "closed"))

    def _read_loop(self, ws: websocket.WebSocket, reader: FrameReader) -> str:
        """Read until the connection ends; returns why."""
        opts = self.options
        sock = ws.sock
        sock.settimeout(opts.ping_interval)
        last_rx = time.monotonic()
        on_frame = self._on_frame
        while not self._stop.is_set():
            try:
                messages = reader.read()
            except TimeoutError:
                silent = time.monotonic() - last_rx
                if silent >= opts.stale_timeout:
                    return f"no data and no pong for {silent:.0f} s"
                try:
                    with self._send_lock:
                        ws.ping()
                except (OSError, websocket.WebSocketException) as exc:
                    return _describe(exc)
                sock.settimeout(max(0.05, min(opts.ping_interval, opts.stale_timeout - silent)))
                continue
            except Closed as exc:
                return str(exc)
            except OSError as exc:
                return _describe(exc)
            last_rx = time.monotonic()
            for op, payload in messages:
                if op <= 0x2:
                    self.frames += 1
                    on_frame(op, payload)
                elif op == PING:
                    try:
                        with self._send_lock:
                            ws.pong(payload)
                    except (OSError, websocket.WebSocketException) as exc:
                        return _describe(exc)
                elif op == CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    text = bytes(payload[2:]).decode("utf-8", "replace")
                    return f"server closed the connection ({code}{': ' + text if text else ''})"
                elif op != PONG:
                    return f"unknown frame opcode {op}"
            if sock.gettimeout() != opts.ping_interval:
                sock.settimeout(opts.ping_interval)
        return "closed"

    def _next_message(self, reader: FrameReader, ws: websocket.WebSocket, deadline: float) -> Any:
        """The next data message during the handshake, decoded (control frames handled)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Refused("no answer from the server during the handshake")
            ws.sock.settimeout(left)
            try:
                messages = reader.read()
            except TimeoutError:
                raise Refused("no answer from the server during the handshake") from None
            for op, payload in messages:
                if op == PING:
                    with self._send_lock:
                        ws.pong(payload)
                elif op == CLOSE:
                    raise Closed("server closed the connection during the handshake")
                elif op <= 0x2:
                    try:
                        return decode(payload, use_msgpack=self.use_msgpack)
                    except Undecodable:
                        log.warning("%s stream: malformed handshake message skipped: %r", self.kind,
                                    bytes(payload[:80]))
            # (pongs and empty reads loop)

    # ------------------------------------------------------------------ protocol hooks
    def _handshake(self, ws: websocket.WebSocket, reader: FrameReader) -> None:
        raise NotImplementedError

    def _on_frame(self, opcode: int, payload: Any) -> None:
        raise NotImplementedError

    def _on_connected(self) -> None:
        """Called on the socket thread once authenticated (schedule REST work on the fan-out)."""

    # for the fan-out thread
    def collect(self) -> Any:
        """Changes since the last call, for the listeners (runs on the fan-out thread)."""
        return None


def _shutdown(ws: websocket.WebSocket) -> None:
    sock = ws.sock
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close_quietly(ws: websocket.WebSocket) -> None:
    try:
        if ws.sock is not None:
            try:
                ws.sock.settimeout(0.2)
                ws.send_close()
            except (OSError, websocket.WebSocketException):
                pass
        ws.shutdown()
    except (OSError, websocket.WebSocketException):
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, websocket.WebSocketConnectionClosedException)):
        return "connection lost"
    if isinstance(exc, (TimeoutError, websocket.WebSocketTimeoutException)):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:200]

