"""Trading REST v2 routes and the ``trade_updates`` WebSocket (``/stream``) of the sandbox.

Routes follow the protocol reference section 2: money and quantities as JSON strings, ``POST
/v2/orders`` answers 200, cancels answer 204, the bulk deletes 207, errors in Alpaca's
``{"code", "message"}`` shape. Authentication is done by the app's middleware
(``request["account_id"]``); the WebSocket authenticates in-band (section 6): no greeting, the
authorization reply is the first frame, ``listen`` before auth is refused, events are JSON in
binary frames as paper sends them (msgpack when the upgrade carries
``Content-Type: application/msgpack``). One trade_updates connection per account, as Alpaca allows
(alpaca-py #740): a second one is refused at auth ("connection limit exceeded", the sandbox's
wording) and closed. The server pings every ``SandboxConfig.stream_heartbeat`` seconds and drops a
client that does not answer, so a half-dead connection frees the slot within 1.5 heartbeats.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from .._stream_protocol import authorization, trading_request
from .clock import NY, from_ns
from .wire import (
    Connection,
    dumps,
    iso_ny,
    json_response,
    not_found,
    parse_bool,
    read_json,
    unprocessable,
)

log = logging.getLogger(__name__)

ASSET_CLASSES = ("us_equity", "us_option", "crypto")
CALENDAR_FIRST = dt.date(1970, 1, 1)
CALENDAR_LAST = dt.date(2029, 12, 31)


def _crypto_market():
    from .crypto_api import CRYPTO_MARKET
    return CRYPTO_MARKET


def _app_keys():
    from . import app as app_module  # the app module imports this one: resolve lazily
    return app_module


def _engine(request: web.Request):
    return request.app[_app_keys().ENGINE]


def _account_id(request: web.Request) -> str:
    return request[_app_keys().ACCOUNT]


def _query(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items()}


# ---------------------------------------------------------------- account

async def get_account(request: web.Request) -> web.Response:
    return json_response(_engine(request).account_view(_account_id(request)))


async def get_configurations(request: web.Request) -> web.Response:
    return json_response(_engine(request).configurations(_account_id(request)))


async def patch_configurations(request: web.Request) -> web.Response:
    body = await read_json(request)
    return json_response(_engine(request).update_configurations(_account_id(request), body))


async def get_activities(request: web.Request) -> web.Response:
    kind = request.match_info.get("activity_type")
    return json_response(_engine(request).activities(_account_id(request), _query(request),
                                                     activity_type=kind))


async def get_portfolio_history(request: web.Request) -> web.Response:
    return json_response(_engine(request).portfolio_history(_account_id(request), _query(request)))


# ---------------------------------------------------------------- positions

async def list_positions(request: web.Request) -> web.Response:
    return json_response(_engine(request).positions(_account_id(request)))


async def get_position(request: web.Request) -> web.Response:
    return json_response(_engine(request).position(_account_id(request),
                                                   request.match_info["symbol_or_asset_id"]))


async def close_position(request: web.Request) -> web.Response:
    query = _query(request)
    order = _engine(request).close_position(_account_id(request),
                                            request.match_info["symbol_or_asset_id"],
                                            qty=query.get("qty"), percentage=query.get("percentage"))
    return json_response(order)


async def close_all_positions(request: web.Request) -> web.Response:
    cancel = bool(parse_bool(request.query.get("cancel_orders"), "cancel_orders", default=False))
    return json_response(_engine(request).close_all_positions(_account_id(request),
                                                              cancel_orders=cancel), status=207)


# ---------------------------------------------------------------- orders

async def create_order(request: web.Request) -> web.Response:
    body = await read_json(request)
    return json_response(_engine(request).submit_order(_account_id(request), body))


async def list_orders(request: web.Request) -> web.Response:
    return json_response(_engine(request).list_orders(_account_id(request), _query(request)))


async def cancel_all_orders(request: web.Request) -> web.Response:
    return json_response(_engine(request).cancel_all_orders(_account_id(request)), status=207)


async def get_order(request: web.Request) -> web.Response:
    nested = bool(parse_bool(request.query.get("nested"), "nested", default=False))
    return json_response(_engine(request).get_order(_account_id(request),
                                                    request.match_info["order_id"], nested=nested))


async def get_order_by_client_id(request: web.Request) -> web.Response:
    return json_response(_engine(request).get_order_by_client_id(
        _account_id(request), request.query.get("client_order_id")))


async def replace_order(request: web.Request) -> web.Response:
    body = await read_json(request)
    return json_response(_engine(request).replace_order(_account_id(request),
                                                        request.match_info["order_id"], body))


async def cancel_order(request: web.Request) -> web.Response:
    _engine(request).cancel_order(_account_id(request), request.match_info["order_id"])
    return web.Response(status=204)


# ---------------------------------------------------------------- assets

async def list_assets(request: web.Request) -> web.Response:
    query = request.query
    status = query.get("status") or None
    if status is not None and status not in ("active", "inactive"):
        raise unprocessable("invalid status: must be active or inactive")
    asset_class = query.get("asset_class") or "us_equity"
    if asset_class not in ASSET_CLASSES:
        raise unprocessable(f"invalid asset_class: must be one of {', '.join(ASSET_CLASSES)}")
    exchange = query.get("exchange") or None
    attributes = {a.strip() for a in (query.get("attributes") or "").split(",") if a.strip()}
    market = request.app[_app_keys().MARKET]
    crypto = request.app[_crypto_market()].assets() if asset_class == "crypto" else []
    out = [a for a in market.assets() + crypto
           if a.get("class", "us_equity") == asset_class
           and (status is None or a.get("status") == status)
           and (exchange is None or a.get("exchange") == exchange)
           and (not attributes or attributes & set(a.get("attributes") or ()))]
    return json_response(out)


async def get_asset(request: web.Request) -> web.Response:
    wanted = request.match_info["symbol_or_asset_id"]
    asset = request.app[_app_keys().MARKET].asset(wanted) or request.app[_crypto_market()].asset(wanted)
    if asset is None:
        raise not_found("asset not found")
    return json_response(asset)


# ---------------------------------------------------------------- clock and calendar

async def get_clock(request: web.Request) -> web.Response:
    """``GET /v2/clock``. ``next_open``/``next_close`` are the next regular open and close of the
    NYSE calendar that ``/v2/calendar`` lists, strictly after now, in every market mode. In
    always-open mode ``is_open`` is always true (the sandbox trades at any hour), and
    ``next_open``/``next_close`` say when the real market's regular hours, which the sandbox's
    market data follows, next begin and end."""
    keys = _app_keys()
    now = request.app[keys.CLOCK].now_ns()
    sessions = request.app[keys.SESSIONS]
    calendar = sessions.calendar
    return json_response({"timestamp": iso_ny(now, fraction=True), "is_open": sessions.is_open(now),
                          "next_open": iso_ny(calendar.next_open(now)),
                          "next_close": iso_ny(calendar.next_close(now))})


def _calendar_date(value: str | None, name: str, default: dt.date) -> dt.date:
    if not value:
        return default
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise unprocessable(f"invalid {name}: {value!r} (expected YYYY-MM-DD)") from None


def _hhmm(ns: int, *, sep: str = ":") -> str:
    when = from_ns(ns, NY)
    return f"{when.hour:02d}{sep}{when.minute:02d}"


async def get_calendar(request: web.Request) -> web.Response:
    """NYSE sessions from ``start`` to ``end`` (inclusive; default 1970 to 2029, as Alpaca), in
    every market mode."""
    calendar = request.app[_app_keys().SESSIONS].calendar
    start = _calendar_date(request.query.get("start"), "start", CALENDAR_FIRST)
    end = _calendar_date(request.query.get("end"), "end", CALENDAR_LAST)
    out = [{"date": sess.date.isoformat(), "open": _hhmm(sess.open), "close": _hhmm(sess.close),
            "session_open": _hhmm(sess.premarket_open, sep=""),
            "session_close": _hhmm(sess.postmarket_close, sep=""),
            "settlement_date": calendar.settlement_date(sess.date).isoformat()}
           for sess in calendar.sessions_between(start, end)]
    return json_response(out)


# ---------------------------------------------------------------- trade_updates stream

_CLOSE = b""   # writer sentinel: close the socket after what was queued before it


class _TradeStream:
    """One ``/stream`` connection: in-band auth, ``listen``, fan-out of the account's events."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, msgpack_codec: bool):
        self.request = request
        self.ws = ws
        self.msgpack = msgpack_codec
        self.engine = _engine(request)
        self.account_id: str | None = None
        self.unsubscribe = None
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.conn = Connection(ws, kind="trading", endpoint="stream")

    def encode(self, message: dict[str, Any]) -> bytes:
        return msgpack.packb(message, use_bin_type=True) if self.msgpack else dumps(message)

    def send(self, message: dict[str, Any]) -> None:
        self.queue.put_nowait(self.encode(message))

    def on_event(self, event: dict[str, Any]) -> None:
        self.send({"stream": "trade_updates", "data": event})

    async def writer(self) -> None:
        """Send queued frames in order; a failed send ends the connection."""
        while True:
            frame = await self.queue.get()
            if frame is None or self.ws.closed:
                return
            if frame is _CLOSE:
                await self.ws.close(code=1008, message=b"connection limit exceeded")
                return
            try:
                await self.ws.send_bytes(frame)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("trade stream send failed: %s", exc)
                await self.ws.close()
                return

    def authenticate(self, key: Any, secret: Any) -> bool:
        if not isinstance(key, str) or not isinstance(secret, str):
            return False
        account = self.engine.authenticate(key, secret)
        if account is None:
            return False
        self.account_id = account
        self.conn.key_id = key
        return True

    def holds_the_slot_elsewhere(self) -> bool:
        """True when another open connection of this account is already authenticated: Alpaca
        allows one trade_updates connection per account (alpaca-py #740)."""
        others = self.request.app[_app_keys().CONNECTIONS].find(kind="trading", key_id=self.conn.key_id)
        return any(c is not self.conn for c in others)

    def handle(self, msg) -> None:
        kind, value = trading_request(msg, use_msgpack=self.msgpack)
        if kind == "error":
            self.send(value)
        elif kind == "auth":
            key, secret = value
            authorized = self.authenticate(key, secret)
            if authorized and self.holds_the_slot_elsewhere():
                # Alpaca allows one trade_updates connection per account; the message text is
                # the sandbox's own (the real one is unconfirmed)
                self.account_id, self.conn.key_id = None, None
                self.send(authorization(False, message="connection limit exceeded"))
                self.queue.put_nowait(_CLOSE)
            else:
                self.send(authorization(authorized, missing=not key or not secret))
        elif self.account_id is None:
            self.send(authorization(False, action="listen"))
        else:
            wanted = value
            if wanted and self.unsubscribe is None:
                self.unsubscribe = self.engine.subscribe(self.account_id, self.on_event)
            elif not wanted and self.unsubscribe is not None:
                self.unsubscribe()
                self.unsubscribe = None
            self.send({"stream": "listening", "data": {"streams": wanted}})

    async def run(self) -> None:
        connections = self.request.app[_app_keys().CONNECTIONS]
        connections.add(self.conn)
        writer = asyncio.get_running_loop().create_task(self.writer())
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.handle(msg)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.unsubscribe is not None:
                self.unsubscribe()
            connections.discard(self.conn)
            self.queue.put_nowait(None)
            try:
                await asyncio.wait_for(writer, 1.0)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                writer.cancel()


async def trade_stream(request: web.Request) -> web.WebSocketResponse:
    codec = "msgpack" in request.headers.get("Content-Type", "").lower()
    ws = web.WebSocketResponse(heartbeat=request.app[_app_keys().CONFIG].stream_heartbeat,
                               max_msg_size=1024 * 1024)
    await ws.prepare(request)
    stream = _TradeStream(request, ws, codec)
    key = request.headers.get("APCA-API-KEY-ID")
    secret = request.headers.get("APCA-API-SECRET-KEY")
    if key and secret and stream.authenticate(key, secret) and stream.holds_the_slot_elsewhere():
        stream.account_id = stream.conn.key_id = None   # header auth: no reply frame; the
        # client's in-band auth will be refused while the other connection lives
    await stream.run()
    return ws


def setup(app: web.Application) -> None:
    """Add the trading REST routes and ``/stream`` to ``app``."""
    r = app.router
    r.add_get("/v2/account", get_account)
    r.add_get("/v2/account/configurations", get_configurations)
    r.add_patch("/v2/account/configurations", patch_configurations)
    r.add_get("/v2/account/activities", get_activities)
    r.add_get("/v2/account/activities/{activity_type}", get_activities)
    r.add_get("/v2/account/portfolio/history", get_portfolio_history)
    r.add_get("/v2/positions", list_positions)
    r.add_delete("/v2/positions", close_all_positions)
    r.add_get("/v2/positions/{symbol_or_asset_id:.+}", get_position)
    r.add_delete("/v2/positions/{symbol_or_asset_id:.+}", close_position)
    r.add_post("/v2/orders", create_order)
    r.add_get("/v2/orders", list_orders)
    r.add_delete("/v2/orders", cancel_all_orders)
    r.add_get("/v2/orders:by_client_order_id", get_order_by_client_id)
    r.add_get("/v2/orders/{order_id}", get_order)
    r.add_patch("/v2/orders/{order_id}", replace_order)
    r.add_delete("/v2/orders/{order_id}", cancel_order)
    r.add_get("/v2/assets", list_assets)
    r.add_get("/v2/assets/{symbol_or_asset_id:.+}", get_asset)
    r.add_get("/v2/clock", get_clock)
    r.add_get("/v2/calendar", get_calendar)
    r.add_get("/stream", trade_stream)
    r.add_get("/stream/", trade_stream)


__all__ = ["setup"]

