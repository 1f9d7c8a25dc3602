"""The relay's own connections to Alpaca (or the sandbox): one per stream endpoint, held once.

Each :class:`Upstream` runs in the relay's event loop (aiohttp client): it connects, does the
endpoint's handshake, hands every frame to its owner and, when the connection drops, reconnects
with the same capped exponential backoff and jitter the in-process streams use
(:class:`alpaca_nb.stream.Reconnect`); after a 406 (another client holds the account's
connection) it waits the long conflict delay. The owner learns of every state change through
``on_status`` and re-sends the subscriptions it needs through :meth:`DataUpstream.sync`.

Bad keys (402, unauthorized) and a feed the plan lacks (409) are fatal: the upstream stops and
says why; the relay keeps serving whatever else it can and reports it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from .._config import Secret
from ..stream import Reconnect
from ..stream._hub import USER_AGENT, StreamStatus

log = logging.getLogger(__name__)

REPLY_TIMEOUT = 10.0          # seconds to wait for the answer to a subscribe/unsubscribe
FATAL = {402: "auth failed", 409: "insufficient subscription", 408: "v2 not enabled",
         411: "insufficient scope"}


class UpstreamFatal(Exception):
    """The server refused the relay's keys or plan; retrying cannot help. ``code`` is the
    stream's error code (402 auth failed, 409 insufficient subscription...)."""

    def __init__(self, message: str, code: int = 402):
        super().__init__(message)
        self.code = code


class _Conflict(Exception):
    """406: another client holds this account's connection to the endpoint."""


class _Retry(Exception):
    """The handshake went wrong in a way a new attempt may fix."""


class Upstream:
    """One upstream WebSocket and its reconnect loop. Subclasses do the handshake."""

    kind = "stream"

    def __init__(self, *, url: str, key_id: str, secret: Secret, options: Reconnect,
                 on_frame: Callable[[bytes], None], on_status: Callable[[StreamStatus], None]):
        self.url = url
        self._key_id = key_id
        self._secret = secret
        self.options = options
        self._on_frame = on_frame
        self._on_status = on_status
        self.status = StreamStatus("connecting", self.kind)
        self.connections = 0
        self.fatal: UpstreamFatal | None = None
        self.live = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task | None = None
        self._rng = random.Random()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"relay-upstream-{self.kind}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._set_status("stopped", reason="closed")

    async def drop(self) -> None:
        """Close the current connection (the loop reconnects); for a stuck reply."""
        ws = self._ws
        if ws is not None:
            await ws.close()

    async def first_answer(self, timeout: float) -> UpstreamFatal | None:
        """Wait until the first connection succeeded, failed or was refused for good (at most
        ``timeout`` seconds); returns the refusal, if that is what happened."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (self.connections or self.fatal or self.status.state == "reconnecting"):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        return self.fatal

    def _set_status(self, state: str, *, attempt: int = 0, reason: str | None = None) -> None:
        old = self.status
        if old.state == "stopped" or (old.state, old.attempt, old.reason) == (state, attempt, reason):
            return
        self.status = StreamStatus(state, self.kind, attempt, reason)
        level = logging.WARNING if state == "reconnecting" or (state == "stopped" and self.fatal) else logging.INFO
        log.log(level, "relay upstream %s %s: %s", self.kind, self.url, self.status)
        self._on_status(self.status)

    def _auth_message(self) -> dict[str, str]:
        return {"action": "auth", "key": self._key_id, "secret": self._secret.reveal()}

    async def _run(self) -> None:
        attempt = 0
        conflict = False
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            while True:
                started = loop.time()
                reason = "closed"
                try:
                    async with session.ws_connect(
                            self.url, headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
                            heartbeat=self.options.ping_interval, compress=15, max_msg_size=0,
                            decode_text=False, timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                            autoclose=True) as ws:
                        self._ws = ws
                        await asyncio.wait_for(self._handshake(ws), self.options.connect_timeout)
                        conflict = False
                        self.connections += 1
                        self.live.set()
                        self._set_status("connected")
                        await self._after_connect()
                        reason = await self._read(ws)
                except UpstreamFatal as exc:
                    self.fatal = exc
                    self._set_status("stopped", reason=str(exc))
                    return
                except _Conflict as exc:
                    conflict, reason = True, str(exc)
                except _Retry as exc:
                    reason = str(exc)
                except asyncio.TimeoutError:
                    reason = "no answer during the handshake"
                except aiohttp.WSServerHandshakeError as exc:
                    reason = f"upgrade refused with HTTP {exc.status}"
                except (aiohttp.ClientError, OSError) as exc:
                    reason = str(exc) or type(exc).__name__
                finally:
                    self.live.clear()
                    self._ws = None
                    self._disconnected()
                stable = loop.time() - started >= 1.0
                attempt = 1 if stable and not conflict else attempt + 1
                delay = (self.options.conflict_delay(self._rng) if conflict
                         else self.options.delay(attempt, self._rng))
                if conflict:
                    log.warning("relay upstream %s: another client holds this account's connection "
                                "(406); trying again in %.0f s", self.kind, delay)
                self._set_status("reconnecting", attempt=attempt, reason=reason)
                await asyncio.sleep(delay)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        on_frame = self._on_frame
        async for msg in ws:
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                try:
                    on_frame(msg.data)
                except Exception:      # a relay bug must not take the connection down silently
                    log.exception("relay upstream %s: handling a frame failed", self.kind)
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return f"connection error: {ws.exception()}"
        code = ws.close_code
        return "connection lost" if code in (None, 1006) else f"server closed the connection ({code})"

    async def _next(self, ws: aiohttp.ClientWebSocketResponse) -> Any:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            try:
                return orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                raise _Retry("malformed message during the handshake") from None
        raise _Retry("connection closed during the handshake")

    # hooks
    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        raise NotImplementedError

    async def _after_connect(self) -> None:
        """Runs once connected, before frames are read (data: resubscribe)."""

    def _disconnected(self) -> None:
        """The connection is gone (any pending request fails)."""


class DataUpstream(Upstream):
    """The market-data stream (``/v2/{feed}``): handshake, the server's subscription state, and
    one subscribe/unsubscribe request at a time so every answer belongs to its question."""

    kind = "data"

    def __init__(self, *, wanted: Callable[[], dict[str, set[str]]], **kw: Any):
        super().__init__(**kw)
        self._wanted = wanted              # the committed union, for resubscribing
        self.server: dict[str, set[str]] = {}
        self._reply: asyncio.Future | None = None
        self._requests = asyncio.Lock()

    async def _handshake(self, ws) -> None:
        first = _control(await self._next(ws))
        if first.get("T") == "error":
            _refuse(first)
        if (first.get("T"), first.get("msg")) != ("success", "connected"):
            raise _Retry(f"unexpected greeting {first!r:.120}")
        await ws.send_bytes(orjson.dumps(self._auth_message()))
        while True:
            reply = _control(await self._next(ws))
            if reply.get("T") == "error":
                _refuse(reply)
            if (reply.get("T"), reply.get("msg")) == ("success", "authenticated"):
                break
        self.server = {}
        wanted = {ch: sorted(v) for ch, v in self._wanted().items() if v}
        if wanted:
            await ws.send_bytes(orjson.dumps({"action": "subscribe", **wanted}))
            while True:            # the answer to the resubscribe comes before any data
                reply = _control(await self._next(ws))
                if reply.get("T") == "subscription":
                    self._take(reply)
                    break
                if reply.get("T") == "error":
                    log.error("relay upstream data: resubscribing after a reconnect was refused: "
                              "%s (%s)", reply.get("msg"), reply.get("code"))
                    break

    def _take(self, ack: dict[str, Any]) -> None:
        self.server = {ch: set(v) for ch, v in ack.items() if ch != "T" and isinstance(v, list) and v}

    def control(self, message: dict[str, Any]) -> None:
        """A ``subscription`` or ``error`` message from the server (called by the owner)."""
        if message.get("T") == "subscription":
            self._take(message)
        reply = self._reply
        if reply is not None and not reply.done():
            reply.set_result(message)
        elif message.get("T") == "error":
            log.warning("relay upstream data: server error %s (%s)", message.get("msg"), message.get("code"))

    def _disconnected(self) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(ConnectionError("upstream connection lost"))

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws
        if ws is None or not self.live.is_set():
            raise ConnectionError("upstream not connected")
        self._reply = asyncio.get_running_loop().create_future()
        try:
            await ws.send_bytes(orjson.dumps(message))
            return await asyncio.wait_for(asyncio.shield(self._reply), REPLY_TIMEOUT)
        finally:
            self._reply = None

    async def sync(self, target: dict[str, set[str]]) -> int | None:
        """Make the server's subscription equal ``target`` ({channel: symbols}); returns None,
        or the error code the server answered a subscribe with (405: over the plan's limit; the
        server's state is then unchanged). Waits through reconnects; raises UpstreamFatal when
        the upstream has stopped for good."""
        async with self._requests:
            while True:
                if self.fatal:
                    raise self.fatal
                await self.live.wait()
                lost = {ch: sorted(s - target.get(ch, set())) for ch, s in self.server.items()}
                gained = {ch: sorted(s - self.server.get(ch, set())) for ch, s in target.items()}
                lost = {ch: v for ch, v in lost.items() if v}
                gained = {ch: v for ch, v in gained.items() if v}
                try:
                    if lost:
                        await self._request({"action": "unsubscribe", **lost})
                    if gained:
                        reply = await self._request({"action": "subscribe", **gained})
                        if reply.get("T") == "error":
                            code = reply.get("code")
                            return code if isinstance(code, int) else 500
                    return None
                except ConnectionError:
                    continue            # reconnecting; the union is resubscribed, then we look again
                except asyncio.TimeoutError:
                    log.warning("relay upstream data: no answer to a subscription change in %.0f s; "
                                "reconnecting", REPLY_TIMEOUT)
                    await self.drop()
                    await asyncio.sleep(0.05)


class TradingUpstream(Upstream):
    """The trade-updates stream (``/stream``): auth, then ``listen`` to trade_updates."""

    kind = "trading"

    async def _handshake(self, ws) -> None:
        await ws.send_bytes(orjson.dumps(self._auth_message()))
        while True:
            reply = await self._next(ws)
            data = reply.get("data") if isinstance(reply, dict) and isinstance(reply.get("data"), dict) else {}
            if isinstance(reply, dict) and reply.get("stream") == "authorization":
                if data.get("status") == "authorized":
                    break
                why = data.get("message") or "unauthorized"
                if "connection limit" in why:
                    raise _Conflict(f"{why}: another client holds this account's trade_updates connection")
                raise UpstreamFatal(f"auth failed: {why}")
        await ws.send_bytes(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        while True:
            reply = await self._next(ws)
            if isinstance(reply, dict) and reply.get("stream") == "listening":
                return


def _control(message: Any) -> dict[str, Any]:
    if isinstance(message, list) and message and isinstance(message[0], dict):
        return message[0]
    if isinstance(message, dict):
        return message
    raise _Retry(f"unexpected handshake message {message!r:.120}")


def _refuse(error: dict[str, Any]) -> None:
    code, msg = error.get("code"), error.get("msg") or "error"
    if code == 406:
        raise _Conflict(f"{msg} (406)")
    if code in FATAL:
        raise UpstreamFatal(f"{msg} ({code})", code)
    raise _Retry(f"{msg} ({code})")
