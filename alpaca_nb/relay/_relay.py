"""The relay server: an aiohttp app serving Alpaca's stream endpoints to local clients from one
upstream connection per endpoint (or from Redis), run in the foreground or a background thread."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from typing import Any

from aiohttp import web

from .. import _config
from .._config import Secret, Settings, is_loopback_host, mask_key_id
from .._stream_protocol import Codec, is_crypto
from ..stream import Reconnect, stream_url
from ..stream._hub import StreamStatus
from ._clients import Credentials, DataClient, TradingClient
from ._endpoints import DATA_PATHS, DataEndpoint, TradingEndpoint
from ._upstream import DataUpstream, TradingUpstream

log = logging.getLogger(__name__)

FEEDS = {path.rsplit("/", 1)[1]: path for path in DATA_PATHS if not is_crypto(path)}
DEFAULT_PORT = 8766
SLOW_CLIENT_BYTES = 16 * 1024 * 1024
MAX_CLIENTS = 256
CLOSE_TIMEOUT = 10.0


class RelayError(RuntimeError):
    """The relay could not start (port taken, keys refused, Redis unreachable...)."""


class Relay:
    """One upstream connection per stream endpoint, served to any number of local clients.

    Args:
        settings: the account and endpoints (default: from the environment, as ``connect()``
            reads them; no keys -> the embedded sandbox). Not needed with ``source``.
        host: interface to bind; loopback unless you say otherwise.
        port: TCP port (0 = any free port; see :attr:`port`).
        feed: the market-data feed connected at start (others connect on their first client).
        publish: ``redis://`` / ``rediss://`` URL: also publish every upstream message to Redis.
        source: ``redis://`` / ``rediss://`` URL: no upstream of its own; serve clients from the
            relay publishing to that Redis.
        token: a secret clients may present instead of the account's secret (needed by a relay
            fed from Redis that does not hold the keys). Default: ``ALPACA_NB_RELAY_TOKEN``.
        redis_prefix: prefix of the Redis channel names.
        slow_client_bytes: bytes that may wait for one client before it is cut off with 407.
        max_clients: connections served at once (more are refused with 406).
        discovery: write the discovery file so ``alpaca_nb.connect()`` finds the relay.
        reconnect: upstream backoff settings.

    Raises:
        ValueError: bad arguments (a non-local address is allowed, but said so in the log).
    """

    def __init__(self, settings: Settings | None = None, *, host: str = "127.0.0.1",
                 port: int = DEFAULT_PORT, feed: str = "iex", publish: str | None = None,
                 source: str | None = None, token: str | None = None, redis_prefix: str = "alpaca-nb",
                 slow_client_bytes: int = SLOW_CLIENT_BYTES, max_clients: int = MAX_CLIENTS,
                 discovery: bool = True, reconnect: Reconnect | None = None):
        if feed not in FEEDS:
            raise ValueError(f"feed must be one of {', '.join(FEEDS)}; got {feed!r}")
        if publish and source:
            raise ValueError("give publish (this relay holds the upstream) or source (fed from "
                             "another relay through Redis), not both")
        for name, url in (("publish", publish), ("source", source)):
            if url is not None and not str(url).startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(f"{name} must be a redis://, rediss:// or unix:// URL")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer 0-65535, got {port!r}")
        if not isinstance(slow_client_bytes, int) or slow_client_bytes < 65536:
            raise ValueError("slow_client_bytes must be an integer of at least 65536")
        token = token if token is not None else os.environ.get("ALPACA_NB_RELAY_TOKEN") or None
        if source is None and settings is None:
            settings = _config.resolve(env={**os.environ, "ALPACA_NB_RELAY": "off"})
        if source is not None and settings is None and os.environ.get("APCA_API_KEY_ID"):
            settings = _config.resolve(env={**os.environ, "ALPACA_NB_RELAY": "off"})
        if settings is None and token is None:
            raise ValueError("a relay fed from Redis that holds no keys needs a token (token= or "
                             "ALPACA_NB_RELAY_TOKEN) for its clients to authenticate with")
        self.settings = settings
        self.host = host
        self.port = port
        self.feed = feed
        self.publish_url = publish
        self.source_url = source
        self.redis_prefix = redis_prefix
        self.slow_client_bytes = slow_client_bytes
        self.max_clients = max_clients
        self.discovery = discovery
        self.reconnect = reconnect or Reconnect()
        self.credentials = Credentials(settings.key_id if settings else None,
                                       settings.secret if settings else None,
                                       Secret(token) if token else None)
        self.data: dict[str, DataEndpoint] = {}
        self.trading: TradingEndpoint | None = None
        self._upstreams: list[Any] = []
        self._clients = 0
        self.served = {"data": 0, "trading": 0}     # downstream connections accepted so far
        self._names = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._publisher = None
        self._source = None
        self._discovery_file: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._statuses: dict[str, StreamStatus] = {}

    # ------------------------------------------------------------------ public
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    @property
    def upstreams(self) -> dict[str, StreamStatus]:
        """The state of each upstream connection (or of the Redis feed), by endpoint path."""
        return dict(self._statuses)

    def start(self, timeout: float = 15.0) -> Relay:
        """Run the relay in a daemon thread; returns once it listens and its first upstream
        connections answered (or ``timeout`` seconds passed).

        Raises:
            RelayError: the port is taken, the upstream refused the keys, Redis is unreachable.
        """
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(ready, failure))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="alpaca-nb-relay", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RelayError(f"the relay did not start within {timeout:g} s")
        if failure:
            self._thread.join(5)
            raise failure[0]
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection, remove the discovery file and end the thread. Idempotent."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Relay:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, *, on_ready=None) -> None:
        """Run in this thread until SIGINT/SIGTERM (the CLI). Raises RelayError as start()."""
        import signal

        async def main() -> None:
            ready = threading.Event()
            failure: list[BaseException] = []
            task = asyncio.get_running_loop().create_task(self._serve(ready, failure))
            while not ready.is_set() and not task.done():
                await asyncio.sleep(0.02)
            if failure:
                await task
                raise failure[0]
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._stopping.set)
                except (NotImplementedError, RuntimeError):     # Windows: Ctrl-C raises instead
                    pass
            if on_ready is not None:
                on_ready(self)
            await task

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass

    def __repr__(self) -> str:
        key = mask_key_id(self.settings.key_id) if self.settings else "token"
        return f"<Relay {self.url} key_id={key} feed={self.feed}>"

    # ------------------------------------------------------------------ the loop
    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        self._stopping = asyncio.Event()
        try:
            await self._open()
        except BaseException as exc:
            failure.append(exc if isinstance(exc, RelayError) else RelayError(str(exc)))
            await self._close()
            ready.set()
            return
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            try:
                await asyncio.wait_for(self._close(), CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("relay: closing took longer than %.0f s; leaving the rest", CLOSE_TIMEOUT)
            if self._discovery_file:
                _config.remove_relay_discovery(self._discovery_file)

    async def _open(self) -> None:
        if not is_loopback_host(self.host):
            log.warning("relay: listening on %s, which is not a loopback address: clients send "
                        "the account's keys (or the token) over plain ws://; keep it on a network "
                        "you trust", self.host)
        app = web.Application()
        for path in DATA_PATHS:
            app.router.add_get("/" + path, self._data_handler(path))
        app.router.add_get("/stream", self._trading_handler)
        app.router.add_get("/stream/", self._trading_handler)
        app.router.add_get("/relay/status", self._status_handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            raise RelayError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        self.port = site._server.sockets[0].getsockname()[1]
        if self.source_url:
            from ._redis import RedisSource

            self._source = RedisSource(self, self.source_url, prefix=self.redis_prefix)
            await self._source.start()
        elif self.publish_url:
            from ._redis import Publisher

            self._publisher = Publisher(self, self.publish_url, prefix=self.redis_prefix)
            await self._publisher.start()
        self.trading_endpoint()
        endpoint = self.data_endpoint(FEEDS[self.feed])
        if self._source is None:
            await self._first_answer([endpoint.source, self.trading.source])
        if self.discovery:
            self._discovery_file = _config.write_relay_discovery(self._discovery_info())
        log.info("relay listening on %s (data %s, trade updates %s/stream; upstream %s)", self.url,
                 ", ".join(f"/{p}" for p in DATA_PATHS), self.url,
                 self.source_url and _redact(self.source_url) or (self.settings and self.settings.stream_url))

    async def _first_answer(self, upstreams: list[Any]) -> None:
        timeout = self.reconnect.connect_timeout + 2
        for upstream in upstreams:
            fatal = await upstream.first_answer(timeout)
            if fatal is not None:
                raise RelayError(f"the {upstream.kind} stream at {upstream.url} refused the keys "
                                 f"{mask_key_id(self.settings.key_id)}: {fatal}")

    async def _close(self) -> None:
        if self._discovery_file:
            _config.remove_relay_discovery(self._discovery_file)
            self._discovery_file = None
        for part in (self._publisher, self._source):
            if part is not None:
                part.stopping()
        if self._runner is not None:          # clients first: their leaving starts no new work
            await self._runner.cleanup()
        for endpoint in self.data.values():
            await endpoint.close()
        for upstream in self._upstreams:
            await upstream.close()
        for part in (self._publisher, self._source):
            if part is not None:
                await part.close()

    def _discovery_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"url": self.url, "port": self.port, "pid": os.getpid(),
                                "feeds": sorted(FEEDS)}
        if self.settings is not None:
            info.update(key=_config.key_fingerprint(self.settings.key_id),
                        stream_url=self.settings.stream_url,
                        trading_stream_url=self.settings.trading_stream_url)
        return info

    # ------------------------------------------------------------------ endpoints
    def data_endpoint(self, path: str) -> DataEndpoint:
        """The endpoint of ``path``, its upstream opened on first use."""
        endpoint = self.data.get(path)
        if endpoint is None:
            endpoint = self.data[path] = DataEndpoint(self, path)
            if self._source is not None:
                endpoint.source = self._source.data_source(path)
            else:
                upstream = DataUpstream(url=stream_url(self.settings, path),
                                        key_id=self.settings.key_id, secret=self.settings.secret,
                                        options=self.reconnect, wanted=endpoint.committed,
                                        on_frame=endpoint.on_frame, on_status=endpoint.on_status)
                endpoint.source = upstream
                self._upstreams.append(upstream)
                upstream.start()
                if self._publisher is not None:
                    endpoint.publish = self._publisher.data
        return endpoint

    def trading_endpoint(self) -> TradingEndpoint:
        if self.trading is None:
            endpoint = self.trading = TradingEndpoint(self)
            if self._source is not None:
                endpoint.source = self._source
            else:
                upstream = TradingUpstream(url=self.settings.trading_stream_url, key_id=self.settings.key_id,
                                           secret=self.settings.secret, options=self.reconnect,
                                           on_frame=endpoint.on_frame, on_status=endpoint.on_status)
                endpoint.source = upstream
                self._upstreams.append(upstream)
                upstream.start()
                if self._publisher is not None:
                    endpoint.publish = self._publisher.trading
        return self.trading

    def status_changed(self, path: str, status: StreamStatus) -> None:
        self._statuses[path] = status
        if self._publisher is not None:
            self._publisher.status(path, status)

    def admit(self, client: Any) -> bool:
        """Whether one more authenticated client may be served (406 beyond max_clients)."""
        return self._clients <= self.max_clients

    # ------------------------------------------------------------------ handlers
    def _data_handler(self, path: str):
        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(compress=False, heartbeat=30.0, writer_limit=1 << 20,
                                       max_msg_size=1 << 20)
            if not ws.can_prepare(request).ok:
                raise web.HTTPNotFound()
            await ws.prepare(request)
            endpoint = self.data_endpoint(path)
            client = DataClient(endpoint, ws, Codec.for_headers(request.headers),
                                f"{path}#{next(self._names)}", limit=self.slow_client_bytes,
                                transport=request.transport)
            endpoint.join(client)
            self._clients += 1
            self.served["data"] += 1
            try:
                await client.run(request)
            finally:
                self._clients -= 1
            return ws
        handler.__name__ = "relay_" + path.replace("/", "_")
        return handler

    async def _trading_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, heartbeat=30.0, max_msg_size=1 << 20)
        if not ws.can_prepare(request).ok:
            raise web.HTTPNotFound()
        await ws.prepare(request)
        endpoint = self.trading_endpoint()
        use_msgpack = "msgpack" in request.headers.get("Content-Type", "").lower()
        client = TradingClient(endpoint, ws, use_msgpack, f"stream#{next(self._names)}",
                               limit=self.slow_client_bytes, transport=request.transport)
        endpoint.join(client)
        self._clients += 1
        self.served["trading"] += 1
        try:
            await client.run()
        finally:
            self._clients -= 1
        return ws

    async def _status_handler(self, request: web.Request) -> web.Response:
        """GET /relay/status: upstream states, client counts, upstream frames relayed and (when
        publishing) frames published to / dropped for Redis; no secrets, no symbols."""
        body = {
            "upstreams": {p: {"state": s.state, "reason": s.reason, "attempt": s.attempt}
                          for p, s in self._statuses.items()},
            "clients": {p: sum(isinstance(c, DataClient) for c in e.clients) for p, e in self.data.items()},
            "trading_clients": len(self.trading.clients) if self.trading else 0,
            "connections": {u.url.split("?")[0]: u.connections for u in self._upstreams},
            "frames": {**{p: e.frames for p, e in self.data.items()},
                       "stream": self.trading.frames if self.trading else 0},
            "redis": "publish" if self._publisher else "source" if self._source else None,
        }
        if self._publisher is not None:
            body["published"], body["dropped"] = self._publisher.published, self._publisher.dropped
        return web.json_response(body)


def _redact(url: str) -> str:
    """A Redis URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}:****@{netloc}"
    else:
        netloc = f":****@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
