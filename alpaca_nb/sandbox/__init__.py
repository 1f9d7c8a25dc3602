"""A local server that speaks Alpaca's REST and WebSocket protocols.

It serves a deterministic synthetic market and a real matching engine, so notebooks, Excel
formulas, tests and benchmarks run with no keys and no network::

    from alpaca_nb.sandbox import Sandbox

    with Sandbox(seed=7) as sb:     # sb.url, sb.stream_url, sb.key_id, sb.secret_key
        ...

The server runs on its own event loop in a daemon thread and listens on loopback. The command
``alpaca-nb sandbox`` runs the same server in the foreground.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from aiohttp import web

from .app import DEFAULT_KEY_ID, DEFAULT_SECRET_KEY, Chaos, SandboxConfig, create_app

__all__ = ["Sandbox", "SandboxConfig", "Chaos", "DEFAULT_KEY_ID", "DEFAULT_SECRET_KEY"]

log = logging.getLogger(__name__)


class Sandbox:
    """The sandbox server in a background thread.

    Args:
        seed: seed of the synthetic market; the same seed gives the same prices.
        host, port: where to listen; ``port=0`` picks a free port.
        market: ``"always-open"`` (24/7, the default) or ``"calendar"`` (NYSE sessions).
        db: SQLite file that keeps accounts, orders and positions across restarts.
        rate_limit: requests per minute per key (off when None).
        chaos: fault-injection spec, see :class:`Chaos`.
        key_id, secret_key: the default account's keys.
        start, speed: virtual clock start (an RFC-3339 string or datetime) and speed factor.
        cash: starting cash of new accounts.
        quote_rate: make the data stream push this many quotes per second per connection.

    Raises:
        ValueError: for an invalid option; OSError when the port cannot be bound.
    """

    def __init__(self, *, seed: int = 7, host: str = "127.0.0.1", port: int = 0, **options: Any):
        self.config = SandboxConfig(seed=seed, **options)
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -------------------------------------------------------------- public surface
    @property
    def url(self) -> str:
        """Base URL for trading and market-data REST, e.g. ``http://127.0.0.1:8765``."""
        self._require_running()
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def stream_url(self) -> str:
        """Base URL of the market-data stream (append ``/v2/iex``), e.g. ``ws://127.0.0.1:8765``."""
        return "ws" + self.url[4:]

    @property
    def key_id(self) -> str:
        return self.config.key_id

    @property
    def secret_key(self) -> str:
        return self.config.secret_key

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    def start(self) -> Sandbox:
        """Start serving; returns when the port is bound. Idempotent."""
        if self.running:
            return self
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._serve, name="alpaca-nb-sandbox", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            error, self._error = self._error, None
            self._thread.join(5)
            self._thread = None
            raise error
        if not self._ready.is_set():
            raise RuntimeError("the sandbox did not start within 30 s")
        log.info("sandbox listening on %s (market %s, seed %d)", self.url, self.config.market,
                 self.config.seed)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: close streams, persist state, free the port. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(self._stop_event.set)
            thread.join(timeout)
        self._thread = None
        self._ready.clear()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"<Sandbox {where} market={self.config.market} seed={self.config.seed}>"

    # -------------------------------------------------------------- the server thread
    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start() or logged
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("sandbox server stopped with an error")
        finally:
            self._ready.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        app = create_app(self.config)
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                             shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            self._requested_port = self.port   # a restart reuses the same port
            self._ready.set()
            await self._stop_event.wait()
        finally:
            await runner.cleanup()

    def _require_running(self) -> None:
        if self.port is None:
            raise RuntimeError("the sandbox is not running; call start() or use it as a context manager")
