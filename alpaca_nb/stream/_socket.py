"""One WebSocket connection for the stream hubs: websocket-client opens it, a buffered reader
reads it; the two codecs of Alpaca's market-data streams encode and decode its messages.

websocket-client does the parts that must be right for real Alpaca (URL parsing, TCP and TLS,
proxies from the environment, the HTTP upgrade, masking the frames we send, thread-safe sends).
Reading is done here instead: websocket-client issues two or three ``recv`` calls per frame and
builds objects for each, which caps a Python reader far below a quote flood; :class:`FrameReader`
reads up to 256 KiB per system call and cuts every complete frame out of that buffer. Server
frames are never masked (RFC 6455 section 5.1); a masked one is unmasked anyway.

Codecs (protocol 5.2): JSON text frames by default; with ``msgpack=True`` the upgrade carries
``Content-Type: application/msgpack`` (as alpaca-py sends it), our messages go out as msgpack
binary frames and the server's arrive as msgpack, each timestamp ``t`` a msgpack Timestamp
(ext -1). :func:`decode` turns those into the RFC-3339 strings the JSON codec carries
(``2024-03-04T14:30:00.123456789Z``), so everything after the socket sees one shape.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import msgpack
import orjson
import websocket

__all__ = ["BINARY", "CLOSE", "PING", "PONG", "TEXT", "Closed", "FrameReader", "Undecodable", "decode",
           "open_socket", "send"]

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RECV_SIZE = 256 * 1024
MAX_MESSAGE = 64 * 1024 * 1024        # a message larger than this is a protocol error


class Closed(Exception):
    """The connection ended: the peer closed it, the network dropped it, or it broke the protocol."""


class Undecodable(ValueError):
    """A frame that is not a message of the connection's codec."""


def open_socket(url: str, *, timeout: float, user_agent: str, use_msgpack: bool = False) -> websocket.WebSocket:
    """Connect and upgrade, asking for the JSON or the msgpack codec. Raises OSError or
    websocket.WebSocketException."""
    ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
    codec = "application/msgpack" if use_msgpack else "application/json"
    ws.connect(url, timeout=timeout, header=[f"User-Agent: {user_agent}", f"Content-Type: {codec}"],
               suppress_origin=True)
    return ws


def send(ws: websocket.WebSocket, message: Any, *, use_msgpack: bool = False) -> None:
    """Send one message: a JSON text frame, or a msgpack binary frame (safe from any thread)."""
    if use_msgpack:
        ws.send(msgpack.packb(message, use_bin_type=True), websocket.ABNF.OPCODE_BINARY)
    else:
        ws.send(orjson.dumps(message), websocket.ABNF.OPCODE_TEXT)


def decode(payload: Any, *, use_msgpack: bool = False) -> Any:
    """One received message (a list of dicts on the data streams), msgpack timestamps as
    RFC-3339 strings. Raises Undecodable."""
    if not use_msgpack:
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise Undecodable(str(exc)) from None
    try:
        message = msgpack.unpackb(payload, raw=False, timestamp=2)      # Timestamp ext -> int ns
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise Undecodable(str(exc) or type(exc).__name__) from None
    for m in message if type(message) is list else (message,):
        if type(m) is dict and type(m.get("t")) is int:
            m["t"] = _rfc3339(m["t"])
    return message


_second: tuple[int, str] = (-1, "")      # the last second formatted (frames mostly share one)


def _rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as ``2024-03-04T14:30:00.123456789Z`` (no fraction when 0)."""
    global _second
    sec, frac = divmod(ns, 1_000_000_000)
    cached = _second
    if cached[0] == sec:
        text = cached[1]
    else:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second = (sec, text)
    return f"{text}.{frac:09d}Z" if frac else f"{text}Z"


class FrameReader:
    """Reads whole messages from a connected socket, many frames per ``recv``.

    :meth:`read` blocks until at least one frame is complete (or the socket's timeout passes, when
    it raises ``TimeoutError``) and returns the complete messages as ``(opcode, payload)``.
    Data payloads are memoryviews into the receive buffer, valid until the next call; control
    payloads are bytes. Fragmented messages are reassembled.
    """

    __slots__ = ("_frag", "_frag_op", "_need", "_parts", "_rest", "sock")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._rest = b""              # bytes of an incomplete frame
        self._parts: list[bytes] = []  # more of it, while a large frame trickles in
        self._need = 0                # bytes needed before the incomplete frame can be cut
        self._frag_op = 0
        self._frag: list[bytes] = []

    def read(self) -> list[tuple[int, Any]]:
        chunk = self.sock.recv(RECV_SIZE)
        if not chunk:
            raise Closed("connection closed by the server")
        if self._parts or (self._need and len(self._rest) + len(chunk) < self._need):
            self._parts.append(chunk)
            have = len(self._rest) + sum(len(p) for p in self._parts)
            if have < self._need:
                return []
            data = b"".join([self._rest, *self._parts])
            self._parts = []
        else:
            data = self._rest + chunk if self._rest else chunk
        out: list[tuple[int, Any]] = []
        view = memoryview(data)
        i, n = 0, len(data)
        self._need = 0
        while n - i >= 2:
            b0, b1 = data[i], data[i + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if n - i < 4:
                    break
                length, head = int.from_bytes(data[i + 2:i + 4], "big"), 4
            elif length == 127:
                if n - i < 10:
                    break
                length, head = int.from_bytes(data[i + 2:i + 10], "big"), 10
                if length > MAX_MESSAGE:
                    raise Closed(f"frame of {length} bytes is larger than {MAX_MESSAGE}")
            masked = b1 & 0x80
            end = i + head + (4 if masked else 0) + length
            if end > n:
                self._need = end - i
                break
            payload: Any = view[end - length:end]
            if masked:
                payload = _unmask(bytes(view[i + head:i + head + 4]), bytes(payload))
            i = end
            op = b0 & 0x0F
            if b0 & 0x70:
                raise Closed("frame with reserved bits set (no extension was negotiated)")
            if op >= 0x8:                               # control frames are never fragmented
                out.append((op, bytes(payload)))
            elif not b0 & 0x80 or op == CONT:           # part of a fragmented message
                if op != CONT:
                    self._frag_op, self._frag = op, [bytes(payload)]
                elif not self._frag_op:
                    raise Closed("continuation frame without a message to continue")
                else:
                    self._frag.append(bytes(payload))
                if b0 & 0x80:
                    out.append((self._frag_op, b"".join(self._frag)))
                    self._frag_op, self._frag = 0, []
                elif sum(len(p) for p in self._frag) > MAX_MESSAGE:
                    raise Closed(f"message larger than {MAX_MESSAGE} bytes")
            else:
                out.append((op, payload))
        self._rest = bytes(view[i:]) if i < n else b""
        return out


def _unmask(key: bytes, data: bytes) -> bytes:
    mask = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(data), "big")
