"""The sandbox's aiohttp application: one port for trading REST, market-data REST, the market-data
WebSocket (``/v2/{feed}``) and the trade-updates WebSocket (``/stream``).

This module wires the parts together and owns what every route shares: authentication, the
optional rate limiter, the optional chaos (fault injection) and Alpaca-shaped error answers. The
routes themselves live in :mod:`.trading_api` and :mod:`.data_api`.

Admin routes under ``/sandbox/`` are not part of Alpaca's API; tests and demos use them to create
accounts, move the virtual clock, change chaos at run time and drop stream connections.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from .._stream_protocol import credentials
from . import corporate_api, crypto_api, crypto_stream, data_api, trading_api
from .clock import MARKET_MODES, Clock, MarketMode, Sessions
from .crypto_market import CryptoMarket
from .crypto_orders import MarketWithCrypto
from .engine import Engine
from .market import Market
from .plans import DATA_PLANS, DEFAULT_DATA_PLAN, check_data_plan
from .wire import UNAUTHORIZED, ApiError, Connections, iso_ns, json_response, read_json

log = logging.getLogger(__name__)

# Defaults are documented in README.md; they are sandbox-only credentials, masked like real ones.
DEFAULT_KEY_ID = "SANDBOXKEYID"
DEFAULT_SECRET_KEY = "sandbox-secret-key"
# bumped whenever the synthetic market's data change for a given seed (clients key their bar
# caches by it): 2 = raw prices carry corporate actions
DATA_VERSION = 2


@dataclass(frozen=True)
class Chaos:
    """Fault injection, parsed from a spec such as ``"503=0.1,lose=0.3,scope=/v2/orders"``.

    HTTP (each a fraction 0..1 of matching requests):
      ``500=F``, ``502=F``, ``503=F``, ``504=F``, ``429=F``  answer with that status instead
      ``drop=F``     close the connection before the request is handled (nothing happens)
      ``lose=F``     handle the request, then close the connection before the answer is sent
      ``latency=MS`` or ``latency=LO-HI``  delay every matching answer (milliseconds)
      ``scope=PATH`` only requests whose path starts with PATH; ``methods=POST|DELETE`` only those
    WebSocket:
      ``ws_drop=S``  abort every WebSocket every S seconds (no close frame, like a network drop)
      ``slow=BYTES`` a data-stream client with more than BYTES unsent gets 407 "slow client"
    ``seed=N`` makes the random choices repeatable.
    """

    statuses: tuple[tuple[int, float], ...] = ()
    drop: float = 0.0
    lose: float = 0.0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    scope: str = ""
    methods: frozenset[str] = frozenset()
    ws_drop: float = 0.0
    slow_bytes: int = 0
    seed: int | None = None
    spec: str = ""

    @classmethod
    def parse(cls, spec: str | None) -> Chaos:
        if not spec:
            return cls()
        values: dict[str, Any] = {"statuses": [], "spec": spec}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not raw:
                raise ValueError(f"chaos item {item!r} must look like key=value")
            try:
                if key.isdigit():
                    status = int(key)
                    if status not in (429, 500, 502, 503, 504):
                        raise ValueError(f"chaos status {status} must be one of 429, 500, 502, 503, 504")
                    values["statuses"].append((status, _fraction(raw, key)))
                elif key in ("drop", "lose"):
                    values[key] = _fraction(raw, key)
                elif key == "latency":
                    lo, _, hi = raw.removesuffix("ms").partition("-")
                    values["latency_ms"] = (float(lo), float(hi or lo))
                elif key == "scope":
                    values["scope"] = raw
                elif key == "methods":
                    values["methods"] = frozenset(m.strip().upper() for m in raw.split("|") if m.strip())
                elif key == "ws_drop":
                    values["ws_drop"] = float(raw.removesuffix("s"))
                elif key == "slow":
                    values["slow_bytes"] = _size(raw)
                elif key == "seed":
                    values["seed"] = int(raw)
                else:
                    raise ValueError(
                        f"unknown chaos key {key!r}; expected 429/500/502/503/504, drop, lose, "
                        "latency, scope, methods, ws_drop, slow or seed")
            except ValueError as exc:
                if "chaos" in str(exc):
                    raise
                raise ValueError(f"chaos item {item!r}: {exc}") from None
        if sum(f for _, f in values["statuses"]) + values.get("drop", 0) + values.get("lose", 0) > 1:
            raise ValueError("chaos fractions add up to more than 1")
        values["statuses"] = tuple(values["statuses"])
        return cls(**values)

    @property
    def active(self) -> bool:
        return bool(self.statuses or self.drop or self.lose or self.latency_ms[1])

    def applies(self, request: web.Request) -> bool:
        if self.scope and not request.path.startswith(self.scope):
            return False
        return not self.methods or request.method in self.methods


def _fraction(raw: str, key: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError(f"{key} must be a fraction between 0 and 1")
    return value


def _size(raw: str) -> int:
    raw = raw.upper()
    for suffix, mult in (("KB", 1024), ("MB", 1024 ** 2), ("K", 1024), ("M", 1024 ** 2), ("B", 1)):
        if raw.endswith(suffix):
            return int(float(raw[: -len(suffix)]) * mult)
    return int(raw)


@dataclass
class SandboxConfig:
    """Everything the sandbox can be told at start (CLI flags map one to one)."""

    seed: int = 7
    market: MarketMode = "always-open"
    db: str | None = None
    rate_limit: int | None = None         # requests per minute per key; None = unlimited
    chaos: Chaos = field(default_factory=Chaos)
    key_id: str = DEFAULT_KEY_ID
    secret_key: str = DEFAULT_SECRET_KEY
    start: Any = None                     # virtual clock start (None = real time)
    speed: float = 1.0                    # virtual seconds per wall second
    cash: float = 100_000.0               # starting cash of new accounts
    quote_rate: float | None = None       # data stream flood: quotes/s per connection (benchmarks)
    stream_auth_timeout: float = 10.0     # data stream: seconds to authenticate before 404
    stream_heartbeat: float | None = 60.0  # ping every N s; a client silent for N/2 more is dropped
    data_plan: str = DEFAULT_DATA_PLAN    # the default account's market-data plan (see .plans)

    def __post_init__(self) -> None:
        if self.market not in MARKET_MODES:
            raise ValueError(f"market must be one of {MARKET_MODES}, got {self.market!r}")
        if isinstance(self.chaos, str) or self.chaos is None:
            self.chaos = Chaos.parse(self.chaos)
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be a positive number of requests per minute")
        if self.cash < 0:
            raise ValueError("cash must not be negative")
        if self.stream_heartbeat is not None and self.stream_heartbeat <= 0:
            raise ValueError("stream_heartbeat must be positive seconds, or None for no pings")
        check_data_plan(self.data_plan)

    def __repr__(self) -> str:  # the secret never appears in a repr
        return (f"SandboxConfig(seed={self.seed}, market={self.market!r}, db={self.db!r}, "
                f"rate_limit={self.rate_limit}, chaos={self.chaos.spec!r}, key_id={self.key_id!r}, "
                f"secret_key='***', start={self.start!r}, speed={self.speed}, "
                f"data_plan={self.data_plan!r})")


CONFIG = web.AppKey("config", SandboxConfig)
CLOCK = web.AppKey("clock", Clock)
SESSIONS = web.AppKey("sessions", Sessions)
MARKET = web.AppKey("market", Market)
ENGINE = web.AppKey("engine", Engine)
CONNECTIONS = web.AppKey("connections", Connections)
CHAOS_RNG = web.AppKey("chaos_rng", random.Random)
RATE = web.AppKey("rate_windows", dict)

ACCOUNT = web.RequestKey("account_id", str)   # request[ACCOUNT]: the authenticated account id
KEY_ID = web.RequestKey("key_id", str)        # request[KEY_ID]: the authenticated key id

PUBLIC_PATHS = ("/sandbox/health",)


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            text = "endpoint not found" if exc.status == 404 else "method not allowed"
            return json_response({"message": text}, status=exc.status)
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("sandbox handler failed: %s %s", request.method, request.path)
        return json_response({"code": 50010000, "message": "internal server error"}, status=500)


@web.middleware
async def chaos_middleware(request: web.Request, handler):
    chaos = request.app[CONFIG].chaos
    if not chaos.active or _is_websocket(request) or request.path.startswith("/sandbox/") \
            or not chaos.applies(request):
        return await handler(request)
    rng = request.app[CHAOS_RNG]
    lo, hi = chaos.latency_ms
    if hi:
        await request.read()      # received in full, then queued: it is handled even if the client gives up
        await asyncio.sleep(rng.uniform(lo, hi) / 1000)
    roll = rng.random()
    for status, fraction in chaos.statuses:
        if roll < fraction:
            headers = {"Retry-After": "1"} if status == 429 else None
            body = {"code": status * 100000, "message": _STATUS_TEXT[status]}
            return json_response(body, status=status, headers=headers)
        roll -= fraction
    if roll < chaos.drop:
        _abort(request)
        raise asyncio.CancelledError
    roll -= chaos.drop
    response = await handler(request)
    if roll < chaos.lose:
        _abort(request)
        raise asyncio.CancelledError
    return response


_STATUS_TEXT = {429: "rate limit exceeded", 500: "internal server error", 502: "bad gateway",
                503: "service unavailable", 504: "gateway timeout"}


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


@web.middleware
async def auth_middleware(request: web.Request, handler):
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    if _is_websocket(request):
        # Stream endpoints authenticate in-band (and optionally by headers); see data_api/trading_api.
        return await handler(request)
    key, secret = credentials(request.headers)
    if not (key or secret) and request.path.startswith(crypto_api.PREFIX):
        return await handler(request)     # crypto market data: keys optional, as on Alpaca
    account = request.app[ENGINE].authenticate(key, secret) if key and secret else None
    if account is None:
        raise UNAUTHORIZED
    request[ACCOUNT] = account
    request[KEY_ID] = key
    return await handler(request)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler):
    limit = request.app[CONFIG].rate_limit
    key = request.get(KEY_ID)
    if not limit or key is None or request.path.startswith("/sandbox/"):
        return await handler(request)
    now = time.time()
    window_start = int(now // 60 * 60)
    windows = request.app[RATE]
    start, used = windows.get(key, (window_start, 0))
    if start != window_start:
        start, used = window_start, 0
    reset = start + 60
    if used >= limit:
        headers = _rate_headers(limit, 0, reset)
        headers["Retry-After"] = str(max(1, int(reset - now + 0.999)))
        return json_response({"code": 42910000, "message": "rate limit exceeded"}, status=429,
                             headers=headers)
    windows[key] = (start, used + 1)
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    response.headers.update(_rate_headers(limit, limit - used - 1, reset))
    return response


def _rate_headers(limit: int, remaining: int, reset: int) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset)}


# ---------------------------------------------------------------- admin routes

def _default_account_only(request: web.Request) -> None:
    if request[KEY_ID] != request.app[CONFIG].key_id:
        raise ApiError(403, 40310000, "only the sandbox's default key may do this")


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def status(request: web.Request) -> web.Response:
    app = request.app
    config = app[CONFIG]
    clock = app[CLOCK]
    conns = app[CONNECTIONS]
    return json_response({
        "market": config.market, "seed": config.seed, "data_version": DATA_VERSION,
        "now": iso_ns(clock.now_ns()),
        "speed": clock.speed, "rate_limit": config.rate_limit, "chaos": config.chaos.spec,
        "data_plan": app[ENGINE].data_plan(request[ACCOUNT]),
        "connections": {"data": len(conns.find(kind="data")),
                        "trading": len(conns.find(kind="trading"))},
    })


async def create_account(request: web.Request) -> web.Response:
    """POST /sandbox/accounts {"cash"?: number, "key_id"?: str, "secret_key"?: str,
    "data_plan"?: "unlimited"|"basic"}: a fresh account with its own keys, so tests sharing one
    sandbox do not see each other's orders. ``data_plan`` is its market-data plan (default
    ``unlimited``; ``basic`` is Alpaca's free plan, see :mod:`.plans`)."""
    body = await read_json(request)
    try:
        data_plan = check_data_plan(body.get("data_plan", DEFAULT_DATA_PLAN))
    except ValueError:
        raise ApiError(422, 40010001, f"data_plan must be one of {', '.join(DATA_PLANS)}") from None
    cash = body.get("cash", request.app[CONFIG].cash)
    if isinstance(cash, bool) or not isinstance(cash, (int, float, str)):
        raise ApiError(422, 40010001, "cash must be a number")
    try:
        cash = float(cash)
    except ValueError:
        raise ApiError(422, 40010001, "cash must be a number") from None
    if cash < 0:
        raise ApiError(422, 40010001, "cash must not be negative")
    key_id = body.get("key_id") or "SBX" + secrets.token_hex(8).upper()
    secret = body.get("secret_key") or secrets.token_urlsafe(30)
    engine = request.app[ENGINE]
    if engine.has_key(key_id):
        raise ApiError(422, 40010001, f"key_id {key_id!r} is already in use")
    account_id = engine.create_account(key_id, secret, cash=cash, data_plan=data_plan)
    return json_response({"key_id": key_id, "secret_key": secret, "account_id": account_id,
                          "data_plan": data_plan})


async def move_clock(request: web.Request) -> web.Response:
    """POST /sandbox/clock {"advance": seconds} or {"set": "<RFC-3339>"}: jump forward."""
    _default_account_only(request)
    body = await read_json(request)
    clock = request.app[CLOCK]
    try:
        if "advance" in body:
            clock.advance(float(body["advance"]))
        elif "set" in body:
            clock.set(str(body["set"]))
        else:
            raise ApiError(422, 40010001, 'give "advance" (seconds) or "set" (timestamp)')
    except (TypeError, ValueError) as exc:
        raise ApiError(422, 40010001, str(exc)) from None
    await request.app[ENGINE].catch_up()
    return json_response({"now": iso_ns(clock.now_ns())})


async def set_chaos(request: web.Request) -> web.Response:
    """POST /sandbox/chaos {"spec": "..."}: replace the chaos settings ("" turns chaos off)."""
    _default_account_only(request)
    body = await read_json(request)
    try:
        chaos = Chaos.parse(body.get("spec") or "")
    except ValueError as exc:
        raise ApiError(422, 40010001, str(exc)) from None
    app = request.app
    app[CONFIG].chaos = chaos
    app[CHAOS_RNG].seed(chaos.seed)
    _restart_ws_dropper(app)
    return json_response({"chaos": chaos.spec})


async def drop_streams(request: web.Request) -> web.Response:
    """POST /sandbox/streams/drop {"kind"?: "data"|"trading", "abrupt"?: bool}."""
    _default_account_only(request)
    body = await read_json(request)
    kind = body.get("kind")
    if kind not in (None, "data", "trading"):
        raise ApiError(422, 40010001, 'kind must be "data" or "trading"')
    dropped = request.app[CONNECTIONS].drop(kind=kind, abrupt=bool(body.get("abrupt", True)))
    return json_response({"dropped": dropped})


# ---------------------------------------------------------------- lifecycle

WS_DROPPER = web.AppKey("ws_dropper", asyncio.Task)


def _restart_ws_dropper(app: web.Application) -> None:
    task = app.get(WS_DROPPER)
    if task is not None:
        task.cancel()
    period = app[CONFIG].chaos.ws_drop
    if period > 0:
        app[WS_DROPPER] = asyncio.get_running_loop().create_task(_ws_dropper(app, period))


async def _ws_dropper(app: web.Application, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        dropped = app[CONNECTIONS].drop()
        if dropped:
            log.info("chaos: dropped %d WebSocket connection(s)", dropped)


async def _on_startup(app: web.Application) -> None:
    _restart_ws_dropper(app)
    await app[ENGINE].start()


async def _on_shutdown(app: web.Application) -> None:
    task = app.get(WS_DROPPER)
    if task is not None:
        task.cancel()
    await app[CONNECTIONS].close_all()


async def _on_cleanup(app: web.Application) -> None:
    await app[ENGINE].stop()


def create_app(config: SandboxConfig | None = None, **overrides: Any) -> web.Application:
    """Build the sandbox application (not started)."""
    config = replace(config, **overrides) if config else SandboxConfig(**overrides)
    clock = Clock(start=config.start, speed=config.speed)
    sessions = Sessions(config.market)
    market = Market(seed=config.seed, sessions=sessions, clock=clock)
    crypto = CryptoMarket(seed=config.seed)
    engine = Engine(market=MarketWithCrypto(market, crypto), clock=clock, sessions=sessions,
                    db=config.db, default_cash=config.cash)
    engine.ensure_account(config.key_id, config.secret_key, data_plan=config.data_plan)

    app = web.Application(
        middlewares=[error_middleware, chaos_middleware, auth_middleware, rate_limit_middleware],
        client_max_size=4 * 1024 ** 2,
    )
    app[CONFIG] = config
    app[CLOCK] = clock
    app[SESSIONS] = sessions
    app[MARKET] = market
    app[ENGINE] = engine
    app[CONNECTIONS] = Connections()
    app[CHAOS_RNG] = random.Random(config.chaos.seed)
    app[RATE] = {}

    app.router.add_get("/sandbox/health", health)
    app.router.add_get("/sandbox/status", status)
    app.router.add_post("/sandbox/accounts", create_account)
    app.router.add_post("/sandbox/clock", move_clock)
    app.router.add_post("/sandbox/chaos", set_chaos)
    app.router.add_post("/sandbox/streams/drop", drop_streams)
    trading_api.setup(app)
    data_api.setup(app)
    corporate_api.setup(app)
    crypto_api.setup(app, crypto)
    crypto_stream.setup(app)

    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app
