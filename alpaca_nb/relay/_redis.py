"""Past one machine: a publishing relay and the relays it feeds through Redis pub/sub.

Channels (``prefix`` defaults to ``alpaca-nb``):

* ``{prefix}:{path}:{symbol}`` (``alpaca-nb:v2/iex:AAPL``): the upstream's messages for that
  symbol, as the JSON array Alpaca sent (one publish per symbol per upstream frame);
* ``{prefix}:trade_updates``: every trade-updates message as Alpaca sent it. Private to the
  account: a deployment should restrict it with Redis ACLs (``&alpaca-nb:trade_updates``);
* ``{prefix}:control``: JSON control messages between relays. A source relay sends its full
  subscription per endpoint (``{"type":"subs","relay":id,"path":...,"subs":{...},"seq":n}``)
  on every change and every :data:`HEARTBEAT` seconds, and ``bye`` when it stops; the publisher
  applies it like a local client's (the remote relay counts in the union, so a symbol only a
  remote client wants is subscribed upstream), answers ``{"type":"ack","relay":id,"seq":n,
  "error":code|null}``, forgets a relay silent for :data:`EXPIRY` seconds, announces itself with
  ``hello`` (sources then resend at once) and forwards its upstream states as ``status``.

The publisher never lets Redis slow the upstream: messages wait in a bounded queue
(:data:`QUEUE_FRAMES` frames) and are dropped, counted and logged when Redis cannot keep up;
frames that waited together are published as one message per symbol channel (their messages
in order), and a Redis-fed relay delivers what it read together as one frame, so the number
of Redis messages does not grow with the upstream's frame rate. redis-py reads pub/sub much
faster with ``hiredis`` installed (part of the ``[relay]`` extra).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..stream._hub import StreamStatus
from ._endpoints import DATA_PATHS
from ._fanout import Frame, Subscriber

log = logging.getLogger(__name__)

HEARTBEAT = 5.0
EXPIRY = 20.0
QUEUE_FRAMES = 10_000
ACK_RETRY = 5.0
BATCH = 2000                   # Redis messages read at once before they are delivered
READ_WAIT = 0.25               # seconds the reader waits for a message before letting _listen in


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, health_check_interval=30)


class RemoteRelay(Subscriber):
    """A relay fed through Redis, counted in an endpoint's union like a local client. Its data
    travels through Redis, so it takes no part in the local fan-out."""

    fanout = False

    def __init__(self, relay_id: str):
        super().__init__()
        self.relay_id = relay_id
        self.seen = time.monotonic()


class Publisher:
    """Publishes a relay's upstream messages and serves remote relays' subscriptions."""

    def __init__(self, relay: Any, url: str, *, prefix: str):
        self.relay = relay
        self.url = url
        self.prefix = prefix
        self.control_channel = f"{prefix}:control"
        self.trade_channel = f"{prefix}:trade_updates"
        self._queue: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._remotes: dict[tuple[str, str], RemoteRelay] = {}
        self._tasks: list[asyncio.Task] = []
        self.dropped = 0
        self.published = 0
        self._dropped_logged = 0.0

    async def start(self) -> None:
        self._redis = _client(self.url)
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise ConnectionError(f"cannot reach Redis for --publish: {exc}") from None
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.control_channel)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write()), loop.create_task(self._control()),
                       loop.create_task(self._expire())]
        self._put((self.control_channel, orjson.dumps({"type": "hello"})))

    def stopping(self) -> None:
        """The relay is stopping: no loop of this object starts another round."""
        self._closing = True

    async def close(self) -> None:
        # a flag as well as cancel(): redis-py may turn a cancellation inside a command into
        # a ConnectionError, which the loops would otherwise take for a broken connection
        self._closing = True
        self._wake.set()
        await _stop(self._tasks, self._pubsub, self._redis)

    # ------------------------------------------------------------------ publishing
    def _put(self, item: Any) -> None:
        if len(self._queue) < QUEUE_FRAMES:
            self._queue.append(item)
            self._wake.set()
        else:
            self.dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged > 10:
                self._dropped_logged = now
                log.warning("relay: Redis is not keeping up; %d upstream frame(s) not published so far",
                            self.dropped)

    def data(self, path: str, frame: Frame) -> None:
        """An upstream data frame: one publish per symbol, the messages as Alpaca sent them."""
        self._put([(f"{self.prefix}:{path}:{symbol}", group) for symbol, group in frame.by_symbol().items()])

    def trading(self, payload: bytes) -> None:
        self._put((self.trade_channel, bytes(payload)))

    def status(self, path: str, status: StreamStatus) -> None:
        self._put((self.control_channel, orjson.dumps(
            {"type": "status", "path": path, "state": status.state, "reason": status.reason})))

    async def _write(self) -> None:
        queue = self._queue
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if not queue:
                continue
            items = [queue.popleft() for _ in range(min(len(queue), 4096))]
            if queue:
                self._wake.set()
            # frames that waited together go out as one message per symbol channel
            data: dict[str, list[bytes]] = {}
            pipe = self._redis.pipeline(transaction=False)
            for item in items:
                if isinstance(item, list):
                    for channel, payload in item:
                        data.setdefault(channel, []).append(payload)
                else:
                    pipe.publish(*item)
            for channel, payloads in data.items():
                pipe.publish(channel, payloads[0] if len(payloads) == 1 else
                             b"[" + b",".join(p[1:-1] for p in payloads) + b"]")
            try:
                await pipe.execute()
                self.published += len(items)
            except (RedisError, OSError) as exc:
                log.warning("relay: publishing to Redis failed (%s); %d frame(s) lost", exc, len(items))
                self.dropped += len(items)
                await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ remote relays
    async def _control(self) -> None:
        while not self._closing:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") == "message":
                        self._on_control(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("relay: Redis control channel failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                try:
                    await self._pubsub.subscribe(self.control_channel)
                except (RedisError, OSError):
                    pass

    def _on_control(self, raw: bytes) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("relay"), str):
            return
        if msg.get("type") == "subs" and isinstance(msg.get("path"), str) and isinstance(msg.get("subs"), dict):
            self._spawn(self._apply(msg))
        elif msg.get("type") == "bye":
            for key in [k for k in self._remotes if k[0] == msg["relay"]]:
                self._spawn(self._forget(key))

    def _spawn(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _apply(self, msg: dict[str, Any]) -> None:
        relay_id, path = msg["relay"], msg["path"]
        if path not in DATA_PATHS:
            code: int | None = 400
        else:
            endpoint = self.relay.data_endpoint(path)
            remote = self._remotes.get((relay_id, path))
            if remote is None:
                remote = self._remotes[(relay_id, path)] = RemoteRelay(relay_id)
            remote.seen = time.monotonic()
            subs = {ch: dict.fromkeys(v) for ch, v in msg["subs"].items()
                    if isinstance(v, list) and all(isinstance(s, str) for s in v)}
            books = set(remote.subs.get("orderbooks", ()))
            code = await endpoint.replace(remote, {**{ch: {} for ch in remote.subs}, **subs})
            full = endpoint.books.full([s for s in remote.subs.get("orderbooks", ()) if s not in books]) \
                if code is None and endpoint.books is not None else []
            if full:                    # its new books start in full, as Alpaca's do
                self._put([(f"{self.prefix}:{path}:{m['S']}", orjson.dumps([m])) for m in full])
        if msg.get("seq") is not None:
            self._put((self.control_channel, orjson.dumps(
                {"type": "ack", "relay": relay_id, "seq": msg["seq"], "error": code})))

    async def _forget(self, key: tuple[str, str]) -> None:
        remote = self._remotes.pop(key, None)
        endpoint = self.relay.data.get(key[1])
        if remote is not None and endpoint is not None:
            await endpoint.leave(remote)

    async def _expire(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            now = time.monotonic()
            for key, remote in list(self._remotes.items()):
                if now - remote.seen > EXPIRY:
                    log.info("relay: remote relay %s silent for %.0f s; its subscriptions are released",
                             key[0], now - remote.seen)
                    await self._forget(key)


class _EndpointSource:
    """The Source of one data endpoint of a Redis-fed relay."""

    def __init__(self, feed: RedisSource, path: str):
        self.feed = feed
        self.path = path
        self.target: dict[str, set[str]] = {}

    async def sync(self, target: dict[str, set[str]]) -> int | None:
        self.target = {ch: set(v) for ch, v in target.items() if v}
        return await self.feed.sync(self.path, self.target)

    async def close(self) -> None:
        pass


class RedisSource:
    """A relay's feed from Redis: data and trade updates in, subscriptions out."""

    def __init__(self, relay: Any, url: str, *, prefix: str):
        self.relay = relay
        self.url = url
        self.prefix = prefix
        self.relay_id = uuid.uuid4().hex[:16]
        self.control_channel = f"{prefix}:control"
        self.trade_channel = f"{prefix}:trade_updates"
        self._endpoints: dict[str, _EndpointSource] = {}
        self._seq = itertools.count(1)
        self._acks: dict[int, asyncio.Future] = {}
        self._channels: set[str] = set()
        self._patterns: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._lock = asyncio.Lock()
        self._closing = False

    async def start(self) -> None:
        self._redis = _client(self.url)
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise ConnectionError(f"cannot reach Redis for --source: {exc}") from None
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.control_channel, self.trade_channel)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._heartbeat())]

    def stopping(self) -> None:
        """The relay is stopping: no loop of this object starts another round (a flag, as
        redis-py may turn a cancellation into a ConnectionError that a retry loop would catch)."""
        self._closing = True

    async def close(self) -> None:
        self._closing = True           # (see Publisher.close)
        try:
            await asyncio.wait_for(self._redis.publish(
                self.control_channel, orjson.dumps({"type": "bye", "relay": self.relay_id})), 2.0)
        except (RedisError, OSError, asyncio.TimeoutError):
            pass
        await _stop(self._tasks, self._pubsub, self._redis)

    def data_source(self, path: str) -> _EndpointSource:
        source = self._endpoints.get(path)
        if source is None:
            source = self._endpoints[path] = _EndpointSource(self, path)
        return source

    # ------------------------------------------------------------------ subscriptions
    async def sync(self, path: str, target: dict[str, set[str]]) -> int | None:
        """Listen to the Redis channels ``target`` needs, then have the publisher subscribe
        them upstream; returns its answer (None, or Alpaca's error code). Retries while Redis is
        unreachable (or has dropped this relay's connection, as it does to a subscriber whose
        output buffer overflows)."""
        while not self._closing:
            seq = next(self._seq)
            future = self._acks[seq] = asyncio.get_running_loop().create_future()
            try:
                await self._listen()
                await self._publish_subs(path, target, seq)
                reply = await asyncio.wait_for(asyncio.shield(future), ACK_RETRY)
                return reply.get("error")
            except asyncio.TimeoutError:
                log.warning("relay: no publishing relay answered on Redis within %.0f s; still asking",
                            ACK_RETRY)
            except (RedisError, OSError) as exc:
                log.warning("relay: Redis unreachable (%s); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                self._acks.pop(seq, None)
        return 500                       # the relay is stopping

    async def _publish_subs(self, path: str, target: dict[str, set[str]], seq: int | None) -> None:
        await self._redis.publish(self.control_channel, orjson.dumps(
            {"type": "subs", "relay": self.relay_id, "path": path, "seq": seq,
             "subs": {ch: sorted(v) for ch, v in target.items() if v}}))

    async def _listen(self) -> None:
        """Subscribe the Redis channels of every endpoint's symbols (a pattern for ``*``)."""
        async with self._lock:
            channels, patterns = set(), set()
            for path, source in self._endpoints.items():
                for symbols in source.target.values():
                    for symbol in symbols:
                        if symbol == "*":
                            patterns.add(f"{self.prefix}:{path}:*")
                        else:
                            channels.add(f"{self.prefix}:{path}:{symbol}")
            if channels - self._channels:
                await self._pubsub.subscribe(*(channels - self._channels))
            if patterns - self._patterns:
                await self._pubsub.psubscribe(*(patterns - self._patterns))
            if self._channels - channels:
                await self._pubsub.unsubscribe(*(self._channels - channels))
            if self._patterns - patterns:
                await self._pubsub.punsubscribe(*(self._patterns - patterns))
            self._channels, self._patterns = channels, patterns

    async def _heartbeat(self) -> None:
        while not self._closing:
            await asyncio.sleep(HEARTBEAT)
            await self._resend()

    async def _resend(self) -> None:
        for path, source in list(self._endpoints.items()):
            try:
                await self._publish_subs(path, source.target, None)
            except (RedisError, OSError) as exc:
                log.warning("relay: Redis unreachable (%s)", exc)

    # ------------------------------------------------------------------ reading
    async def _read(self) -> None:
        """Read Redis; the data messages that arrived together (one publish per symbol) are
        delivered to the clients as one frame per endpoint, as the upstream sent them."""
        pubsub = self._pubsub
        while not self._closing:
            try:
                # one user of the pub/sub connection at a time: a (re)subscribe that has to
                # reconnect reads the server's handshake answers on it, which get_message
                # would otherwise take (and the subscribe would wait for them for ever)
                async with self._lock:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_WAIT)
                    if message is None:
                        continue
                    batch: dict[str, list[bytes]] = {}
                    while message is not None:
                        self._take(message, batch)
                        if sum(len(v) for v in batch.values()) >= BATCH:
                            break
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.0)
                for path, payloads in batch.items():
                    endpoint = self.relay.data.get(path)
                    if endpoint is not None:
                        endpoint.on_frame(payloads[0] if len(payloads) == 1 else
                                          b"[" + b",".join(p[1:-1] for p in payloads if len(p) > 2) + b"]")
            except (RedisError, OSError) as exc:
                log.warning("relay: Redis connection lost (%s); reconnecting", exc)
                self._status("reconnecting", "Redis connection lost")
                await asyncio.sleep(1.0)
                try:
                    async with self._lock:          # (not while _listen changes the channels)
                        await pubsub.subscribe(self.control_channel, self.trade_channel, *self._channels)
                        if self._patterns:
                            await pubsub.psubscribe(*self._patterns)
                    await self._resend()
                    self._status("connected", None)
                except (RedisError, OSError):
                    pass

    def _take(self, message: dict[str, Any], batch: dict[str, list[bytes]]) -> None:
        if message.get("type") not in ("message", "pmessage"):
            return
        channel, data = message["channel"].decode(), message["data"]
        if channel == self.trade_channel:
            self.relay.trading_endpoint().on_frame(data)
        elif channel == self.control_channel:
            self._on_control(data)
        elif channel.startswith(self.prefix + ":"):
            batch.setdefault(channel[len(self.prefix) + 1:].rsplit(":", 1)[0], []).append(data)

    def _status(self, state: str, reason: str | None) -> None:
        for endpoint in list(self.relay.data.values()):
            endpoint.on_status(StreamStatus(state, "data", reason=reason))

    def _on_control(self, raw: bytes) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind == "ack" and msg.get("relay") == self.relay_id:
            future = self._acks.get(msg.get("seq"))
            if future is not None and not future.done():
                future.set_result(msg)
        elif kind == "hello":
            asyncio.get_running_loop().create_task(self._resend())
        elif kind == "status" and isinstance(msg.get("path"), str):
            status = StreamStatus(str(msg.get("state")), "data", reason=msg.get("reason"))
            if msg["path"] == "stream":
                if self.relay.trading is not None:
                    self.relay.trading.on_status(status)
            elif msg["path"] in self.relay.data:
                self.relay.data[msg["path"]].on_status(status)


async def _stop(tasks, pubsub, redis) -> None:
    """Cancel a Redis side's loops, wait for them, then close its pub/sub and connection (an
    error while closing a connection that is already broken changes nothing)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        await pubsub.aclose()
        await redis.aclose()
    except (RedisError, OSError):
        pass
