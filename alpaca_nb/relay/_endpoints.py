"""One served stream endpoint: its clients, the union of their subscriptions, and where its
frames come from (the relay's own upstream connection, or Redis).

Subscription changes are applied one at a time (a lock per endpoint): a subscribe that adds
symbols to the union is sent upstream and the client is answered only when the server has
answered (its full subscription, or the server's error such as 405 "symbol limit exceeded",
with nothing changed); a subscribe that adds nothing new is answered at once; an unsubscribe is
answered at once and the symbols no subscriber needs any more are unsubscribed upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from .._stream_protocol import is_crypto
from ..stream._hub import StreamStatus
from ._clients import DataClient
from ._fanout import Frame, Subscriber, fan_out, union
from ._upstream import UpstreamFatal

log = logging.getLogger(__name__)

# The market-data endpoints served (the path is the same upstream and downstream), the stock
# feeds' and crypto's (whose channels _stream_protocol.parse_change knows by the path).
DATA_PATHS = ("v2/iex", "v2/sip", "v2/delayed_sip", "v2/test", "v1beta1/boats", "v1beta1/overnight",
              "v1beta3/crypto/us")


class Source(Protocol):
    """Where an endpoint's frames come from, and where its subscriptions go."""

    async def sync(self, target: dict[str, set[str]]) -> int | None: ...

    async def close(self) -> None: ...


class Books:
    """The crypto order books the upstream carries, kept from its ``o`` messages (a full book
    with ``r: true``, then changed levels, size 0 removing one), so a client that subscribes a
    book another client already has gets the full book first, as Alpaca sends it after every
    subscription (the upstream, already subscribed, sends none)."""

    def __init__(self) -> None:
        self._books: dict[str, tuple[Any, dict[Any, Any], dict[Any, Any]]] = {}

    def apply(self, messages: list[Any]) -> None:
        for m in messages:
            if type(m) is not dict or m.get("T") != "o" or not isinstance(m.get("S"), str):
                continue
            symbol = m["S"]
            if m.get("r"):
                bids, asks = {}, {}
            elif symbol in self._books:
                _, bids, asks = self._books[symbol]
            else:
                continue                # changes to a book never seen in full
            for side, levels in ((bids, m.get("b")), (asks, m.get("a"))):
                for level in levels if isinstance(levels, list) else ():
                    if isinstance(level, dict) and "p" in level:
                        if level.get("s"):
                            side[level["p"]] = level["s"]
                        else:
                            side.pop(level["p"], None)
            self._books[symbol] = (m.get("t"), bids, asks)

    def full(self, symbols: list[str]) -> list[dict[str, Any]]:
        """``r: true`` messages of the books of ``symbols`` held now (best levels first)."""
        out = []
        for symbol in symbols:
            book = self._books.get(symbol)
            if book is not None:
                t, bids, asks = book
                out.append({"T": "o", "S": symbol, "t": t,
                            "b": [{"p": p, "s": bids[p]} for p in sorted(bids, reverse=True)],
                            "a": [{"p": p, "s": asks[p]} for p in sorted(asks)], "r": True})
        return out

    def keep(self, symbols: set[str]) -> None:
        """Forget the books of symbols no longer subscribed upstream."""
        if "*" not in symbols:
            for symbol in [s for s in self._books if s not in symbols]:
                del self._books[symbol]

    def clear(self) -> None:
        self._books.clear()


class DataEndpoint:
    """A market-data endpoint such as ``v2/iex``."""

    def __init__(self, relay: Any, path: str):
        self.relay = relay
        self.path = path
        self.clients: set[Subscriber] = set()      # local clients and remote relays
        self.source: Source | None = None
        self.publish: Callable[[str, Frame], None] | None = None
        self.books = Books() if is_crypto(path) else None
        self._changes = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.frames = 0

    def committed(self) -> dict[str, set[str]]:
        return union(self.clients)

    def join(self, subscriber: Subscriber) -> None:
        self.clients.add(subscriber)

    async def change(self, subscriber: Subscriber, change: dict[str, list[str]], *, add: bool) -> int | None:
        """Apply one subscribe/unsubscribe of ``subscriber``; returns None, or the error code
        the server refused it with (the subscriber's subscriptions are then unchanged)."""
        return await self.replace(subscriber, subscriber.proposed(change, add=add))

    async def replace(self, subscriber: Subscriber, subs: dict[str, dict[str, None]]) -> int | None:
        """Give ``subscriber`` the subscriptions ``subs`` (see :meth:`change`)."""
        async with self._changes:
            self.clients.add(subscriber)
            before = self.committed()
            target = {ch: set(v) for ch, v in before.items()}
            for ch, symbols in subs.items():
                target.setdefault(ch, set()).update(symbols)
            gains = any(target[ch] - before.get(ch, set()) for ch in target)
            if gains:
                try:
                    code = await self.source.sync(target)
                except UpstreamFatal as exc:
                    return exc.code
                if code is not None:
                    return code
            subscriber.replace(subs)
            after = self.committed()
            if after != target:                 # this change released symbols: tell the server
                self._release()
            if self.books is not None:
                self.books.keep(after.get("orderbooks", set()))
            return None

    def _release(self) -> None:
        async def release() -> None:
            async with self._changes:
                committed = self.committed()
                if self.books is not None:
                    self.books.keep(committed.get("orderbooks", set()))
                try:
                    await self.source.sync(committed)
                except UpstreamFatal:
                    pass            # nothing is subscribed on a connection that was refused
        task = asyncio.get_running_loop().create_task(release())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def refusal(self, timeout: float) -> int | None:
        """The error code the upstream refused the relay's keys with at its first connection
        (402, 409), or None; waits up to ``timeout`` seconds for that first answer."""
        first_answer = getattr(self.source, "first_answer", None)
        if first_answer is None:
            return None
        fatal = await first_answer(timeout)
        return fatal.code if fatal is not None else None

    async def leave(self, subscriber: Subscriber) -> None:
        """A client left: its symbols that nobody else wants are unsubscribed upstream."""
        async with self._changes:
            if subscriber not in self.clients:
                return
            self.clients.discard(subscriber)
            had_symbols = any(subscriber.subs.values())
        if had_symbols:
            self._release()

    # ------------------------------------------------------------------ frames
    def on_frame(self, payload: bytes) -> None:
        """An upstream frame: control messages to the upstream, data to the subscribers (a
        frame of data messages as Alpaca writes them is passed on without being decoded)."""
        frame = Frame.scan(payload)
        if frame is None:
            try:
                messages = orjson.loads(payload)
            except orjson.JSONDecodeError:
                log.warning("relay %s: malformed upstream frame skipped: %r", self.path, payload[:80])
                return
            if type(messages) is not list:
                messages = [messages]
            if len(messages) == 1 and type(messages[0]) is dict and messages[0].get("T") in (
                    "subscription", "error", "success"):
                control = messages[0]
                if control.get("T") != "success" and hasattr(self.source, "control"):
                    self.source.control(control)
                return
            frame = Frame(payload, messages)
        if self.books is not None and any(key[0] == "o" for key in frame.keys):
            try:
                self.books.apply(frame.messages)
            except orjson.JSONDecodeError:
                pass                    # (not JSON after all: no client gets a decoded copy)
        self.frames += 1
        if self.publish is not None:
            self.publish(self.path, frame)
        fan_out(frame, self.clients)

    def on_status(self, status: StreamStatus) -> None:
        """Tell the clients (and Redis) how the upstream is doing."""
        if self.books is not None and status.state != "connected":
            self.books.clear()                  # (the server sends them in full again)
        if status.state == "connected":
            text = "relay: upstream connected"
        elif status.state == "reconnecting":
            text = f"relay: upstream reconnecting ({status.reason or 'connection lost'})"
        else:
            text = f"relay: upstream {status.state}" + (f" ({status.reason})" if status.reason else "")
        for client in list(self.clients):
            if isinstance(client, DataClient) and client.authenticated:
                client.send([{"T": "success", "msg": text}])
        self.relay.status_changed(self.path, status)


class TradingEndpoint:
    """The trade-updates endpoint ``/stream``."""

    path = "stream"

    def __init__(self, relay: Any):
        self.relay = relay
        self.clients: set[Any] = set()
        self.source: Source | None = None
        self.publish: Callable[[bytes], None] | None = None
        self.frames = 0

    def join(self, client: Any) -> None:
        self.clients.add(client)

    def leave(self, client: Any) -> None:
        self.clients.discard(client)

    def on_frame(self, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("relay stream: malformed upstream frame skipped: %r", payload[:80])
            return
        if not isinstance(message, dict) or message.get("stream") != "trade_updates":
            return
        self.frames += 1
        if self.publish is not None:
            self.publish(payload)
        for client in list(self.clients):
            if client.listening:
                client.deliver(payload, message)

    def on_status(self, status: StreamStatus) -> None:
        data: dict[str, Any] = {"upstream": status.state}
        if status.reason and status.state != "connected":
            data["reason"] = status.reason
        for client in list(self.clients):
            if client.authorized:
                client.send({"stream": "relay", "data": data})
        self.relay.status_changed(self.path, status)
