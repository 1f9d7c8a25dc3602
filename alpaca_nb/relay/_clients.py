"""The relay's downstream side: Alpaca's stream protocols served to local clients.

Data stream clients (``/v2/{feed}``) get Alpaca's handshake (``connected``, ``auth`` in-band
within 10 s or APCA headers on the upgrade, ``authenticated``), their own subscription
acknowledgements, errors 400-410 and JSON text or msgpack binary frames as they asked on the
upgrade. Trade-updates clients (``/stream``) get both auth forms, ``authorization``,
``listen``/``listening`` and the account's trade updates (JSON in binary frames, as paper sends
them, or msgpack).

Every client has an :class:`Outbox`: frames wait there for the client's socket, up to
``slow_client_bytes``; a client that falls further behind is cut off with error 407 "slow client"
(as Alpaca does) instead of slowing the others or growing a queue without bound.

Relay status messages (an extension; Alpaca's own clients ignore them): data clients get
``[{"T":"success","msg":"relay: upstream reconnecting (...)"}]`` and ``"relay: upstream
connected"``; trade-updates clients get ``{"stream":"relay","data":{"upstream":"connected"}}``
(or ``"reconnecting"`` with a ``reason``), so alpaca_nb reconciles its order book after a gap.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
from aiohttp import WSMsgType, web

from .._stream_protocol import (
    Codec,
    ForeignChannel,
    ProtocolSyntaxError,
    authorization,
    credentials,
    decode_client_message,
    error_message,
    is_crypto,
    parse_change,
    subscription_message,
    trading_request,
)
from ._fanout import Frame, Subscriber, to_msgpack

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 10.0
DIRECT_BYTES = 256 * 1024      # bytes a client's transport may hold while frames go straight to it
_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a downstream client must present: the relay's own keys, or (for relays fed from
    Redis) a token as the secret. Compared in constant time; never shown."""

    key_id: str | None
    secret: Any = None           # alpaca_nb._config.Secret or None
    token: Any = None            # Secret or None

    def check(self, key: Any, secret: Any) -> bool:
        if not isinstance(key, str) or not isinstance(secret, str):
            return False
        ok = False
        if self.key_id is not None and self.secret is not None:
            same_key = hmac.compare_digest(key.encode(), self.key_id.encode())
            same_secret = hmac.compare_digest(secret.encode(), self.secret.reveal().encode())
            ok = same_key and same_secret
        if self.token is not None:
            ok = hmac.compare_digest(secret.encode(), self.token.reveal().encode()) or ok
        return ok

    def __repr__(self) -> str:
        return "Credentials(****)"


class Outbox:
    """The frames on their way to one client, bounded.

    A frame goes straight to the client's socket transport while the transport holds little
    (at most :data:`DIRECT_BYTES` not yet taken by the kernel), in the loop turn the upstream
    frame arrived in; beyond that, frames wait in order in a queue that a task feeds to the
    socket as it drains. More than ``limit`` bytes waiting there cuts the client off (407).
    """

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, *, limit: int, name: str):
        self.ws = ws
        self.transport = transport
        self.limit = limit
        self.name = name
        self._frames: deque[tuple[bytes, WSMsgType]] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self.cut = False
        self._task = asyncio.get_running_loop().create_task(self._write(), name=f"relay-out-{name}")

    def put(self, data: bytes, opcode: WSMsgType, *, slow_error: bytes | None = None) -> None:
        if self.cut or self.ws.closed:
            return
        transport = self.transport
        if not self._frames and transport is not None and transport.get_write_buffer_size() <= DIRECT_BYTES:
            if not transport.is_closing():
                _write_frame(transport, data, opcode)
            return
        if self._bytes + len(data) > self.limit:
            self._cut_off(slow_error)
            return
        self._frames.append((data, opcode))
        self._bytes += len(data)
        self._wake.set()

    def _cut_off(self, slow_error: bytes | None) -> None:
        self.cut = True
        self._frames.clear()
        self._bytes = 0
        log.warning("relay: client %s is too slow (more than %d bytes waiting); cut off (407)",
                    self.name, self.limit)
        asyncio.get_running_loop().create_task(self._close(slow_error))

    async def _close(self, last: bytes | None) -> None:
        self._task.cancel()
        try:
            if last is not None:
                await asyncio.wait_for(self.ws.send_frame(last, WSMsgType.TEXT if last[:1] == b"[" else WSMsgType.BINARY), 0.5)
            await asyncio.wait_for(self.ws.close(code=1008, message=b"slow client"), 1.0)
        except (asyncio.TimeoutError, asyncio.CancelledError, ConnectionError, RuntimeError):
            pass          # (aiohttp's close() turns its own timeout into CancelledError)
        if self.transport is not None:      # the client did not answer the close: drop it
            self.transport.abort()

    async def _write(self) -> None:
        frames, ws = self._frames, self.ws
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while frames:
                    data, opcode = frames.popleft()
                    self._bytes -= len(data)
                    await ws.send_frame(data, opcode)
        except (ConnectionError, RuntimeError):
            pass
        except asyncio.CancelledError:
            raise

    def close(self) -> None:
        self._task.cancel()


def _write_frame(transport: asyncio.Transport, data: bytes, opcode: WSMsgType) -> None:
    """One unmasked, uncompressed WebSocket frame (RFC 6455 5.2) written to ``transport``: what
    aiohttp's writer does for the server's frames, without a task switch."""
    n = len(data)
    first = 0x80 | opcode
    if n < 126:
        transport.write(bytes((first, n)) + data)
        return
    header = _LEN16(first, 126, n) if n < 65536 else _LEN64(first, 127, n)
    if n <= 4096:
        transport.write(header + data)
    else:
        transport.write(header)
        transport.write(data)


# ------------------------------------------------------------------ market data

class DataClient(Subscriber):
    """One downstream market-data connection."""

    def __init__(self, endpoint, ws: web.WebSocketResponse, codec: Codec, name: str, *, limit: int,
                 transport: asyncio.Transport | None = None):
        super().__init__()
        self.endpoint = endpoint
        self.ws = ws
        self.codec = codec
        self.name = name
        self.authenticated = False
        self.outbox = Outbox(ws, transport, limit=limit, name=name)
        self._slow = codec.encode([error_message(407)])

    def send(self, messages: list[dict]) -> None:
        self.outbox.put(self.codec.encode(messages), self.codec.opcode, slow_error=self._slow)

    def deliver(self, frame: Frame, selection: Any) -> None:
        data = frame.encoded(selection, self.codec.msgpack)
        if data is not None:
            self.outbox.put(data, self.codec.opcode, slow_error=self._slow)

    async def run(self, request: web.Request) -> None:
        self.send([{"T": "success", "msg": "connected"}])
        key, secret = credentials(request.headers)
        if key and secret:
            await self.authenticate(key, secret)
        timer = asyncio.get_running_loop().call_later(AUTH_TIMEOUT, self._auth_timeout)
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    if msg.type == WSMsgType.ERROR:
                        break
                    continue
                try:
                    await self.handle(decode_client_message(msg))
                except ProtocolSyntaxError:
                    self.send([error_message(400)])
                except ForeignChannel:
                    self.send([error_message(410)])
        finally:
            timer.cancel()
            self.outbox.close()
            await self.endpoint.leave(self)

    def _auth_timeout(self) -> None:
        if not self.authenticated and not self.ws.closed:
            self.outbox.put(self.codec.encode([error_message(404)]), self.codec.opcode)
            asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(self.ws.close()))

    async def authenticate(self, key: Any, secret: Any) -> None:
        if self.authenticated:
            self.send([error_message(403)])
        elif not self.endpoint.relay.credentials.check(key, secret):
            log.info("relay: client %s sent wrong credentials (402)", self.name)
            self.send([error_message(402)])
        elif code := await self.endpoint.refusal(AUTH_TIMEOUT):
            self.send([error_message(code)])     # the relay's keys lack this feed (409), say
        elif not self.endpoint.relay.admit(self):
            self.send([error_message(406)])
            asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(self.ws.close()))
        else:
            self.authenticated = True
            self.send([{"T": "success", "msg": "authenticated"}])

    async def handle(self, data: dict) -> None:
        action = data.get("action")
        if action == "auth":
            await self.authenticate(data.get("key"), data.get("secret"))
        elif action in ("subscribe", "unsubscribe"):
            if not self.authenticated:
                self.send([error_message(401)])
                return
            crypto = is_crypto(self.endpoint.path)
            change = parse_change(data, crypto=crypto)
            before = set(self.subs.get("orderbooks", ()))
            code = await self.endpoint.change(self, change, add=action == "subscribe")
            self.send([error_message(code) if code else subscription_message(self.subs, crypto=crypto)])
            books = self.endpoint.books
            if not code and books is not None:      # new books start in full, as Alpaca's do
                full = books.full([s for s in self.subs.get("orderbooks", ()) if s not in before])
                if full:
                    self.send([to_msgpack(m) for m in full] if self.codec.msgpack else full)
        else:
            raise ProtocolSyntaxError


# ------------------------------------------------------------------ trade updates

class TradingClient:
    """One downstream trade-updates connection."""

    def __init__(self, endpoint, ws: web.WebSocketResponse, use_msgpack: bool, name: str, *, limit: int,
                 transport: asyncio.Transport | None = None):
        self.endpoint = endpoint
        self.ws = ws
        self.msgpack = use_msgpack
        self.name = name
        self.authorized = False
        self.listening = False
        self.outbox = Outbox(ws, transport, limit=limit, name=name)

    def encode(self, message: Any) -> bytes:
        return msgpack.packb(message, use_bin_type=True) if self.msgpack else orjson.dumps(message)

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.put(self.encode(message), WSMsgType.BINARY)

    def deliver(self, payload: bytes, message: Any) -> None:
        self.outbox.put(self.encode(message) if self.msgpack else payload, WSMsgType.BINARY)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.handle(msg)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.outbox.close()
            self.endpoint.leave(self)

    def handle(self, msg) -> None:
        kind, value = trading_request(msg, use_msgpack=self.msgpack)
        if kind == "error":
            self.send(value)
        elif kind == "auth":
            key, secret = value
            self.authorized = self.endpoint.relay.credentials.check(key, secret)
            if not self.authorized:
                log.info("relay: trade-updates client %s sent wrong credentials", self.name)
            self.send(authorization(self.authorized, missing=not key or not secret))
        elif not self.authorized:
            self.send(authorization(False, action="listen"))
        else:
            self.listening = bool(value)
            self.send({"stream": "listening", "data": {"streams": value}})
