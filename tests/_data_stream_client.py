"""A raw client of the sandbox's market-data WebSocket (websocket-client), for tests that check the
wire itself: JSON text frames, or msgpack binary ones."""

from __future__ import annotations

import json
import time

import msgpack
import websocket

CONNECTED = [{"T": "success", "msg": "connected"}]
AUTHENTICATED = [{"T": "success", "msg": "authenticated"}]


class RawDataStream:
    """One data-stream connection; every received frame is kept in ``frames``."""

    def __init__(self, sb, path: str = "/v2/iex", *, use_msgpack: bool = False, headers=()):
        header = list(headers) + (["Content-Type: application/msgpack"] if use_msgpack else [])
        self.use_msgpack = use_msgpack
        self.ws = websocket.create_connection(sb.stream_url + path, header=header, timeout=10)
        self.frames: list[bytes | str] = []

    def send(self, obj) -> None:
        if self.use_msgpack:
            self.ws.send_binary(msgpack.packb(obj))
        else:
            self.ws.send(json.dumps(obj))

    def recv(self) -> list[dict]:
        frame = self.ws.recv()
        if not frame and not self.ws.connected:     # the server's close frame
            raise websocket.WebSocketConnectionClosedException("closed by the server")
        self.frames.append(frame)
        if self.use_msgpack:
            assert isinstance(frame, bytes)
            return msgpack.unpackb(frame)
        assert isinstance(frame, str)
        return json.loads(frame)

    def collect(self, seconds: float, stop=None) -> list[dict]:
        """Messages received within ``seconds`` (or until ``stop(messages)`` is true)."""
        out: list[dict] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                out += self.recv()
            except websocket.WebSocketTimeoutException:
                break
            if stop is not None and stop(out):
                break
        self.ws.settimeout(10)
        return out

    def until(self, kind: str, seconds: float = 5.0) -> tuple[dict, list[dict]]:
        """The first message of type ``kind`` (T), and every message before it."""
        seen: list[dict] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            for message in self.recv():
                if message["T"] == kind:
                    self.ws.settimeout(10)
                    return message, seen
                seen.append(message)
        raise AssertionError(f"no {kind!r} message within {seconds} s; got {seen[-5:]}")

    def auth(self, account) -> list[dict]:
        """Send the account's keys; returns the server's answer."""
        self.send({"action": "auth", "key": account.key_id, "secret": account.secret_key})
        return self.recv()

    def close(self) -> None:
        self.ws.close()


def connect(sb, account, path: str = "/v2/iex", **kw) -> RawDataStream:
    """A connected and authenticated raw data stream."""
    client = RawDataStream(sb, path, **kw)
    assert client.recv() == CONNECTED
    assert client.auth(account) == AUTHENTICATED
    return client
