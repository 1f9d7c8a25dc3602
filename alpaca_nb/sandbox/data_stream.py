"""Market-data WebSocket v2 (protocol section 5) at ``/v2/{iex,sip,delayed_sip,test}`` (and
``/v1beta1/{boats,overnight}``), plus the admin route ``POST /sandbox/halt``.

Protocol: ``[{"T":"success","msg":"connected"}]`` on connect; ``auth`` in-band within the auth
timeout (10 s; ``SandboxConfig.stream_auth_timeout``), or APCA headers (or ``Authorization:
Basic``) on the upgrade, in which case ``authenticated`` follows ``connected`` at once;
``subscribe``/``unsubscribe`` at any time, answered with the full subscription (corrections and
cancelErrors mirror trades); errors 400-410 as protocol 5.6's table (the error texts, codecs and
subscribe validation live in :mod:`alpaca_nb._stream_protocol`, shared with the relay). JSON
text frames by default, msgpack binary frames when the upgrade carries ``Content-Type:
application/msgpack`` (timestamps as msgpack Timestamp ext -1, ``T`` first in every map).
Client messages may be JSON text or msgpack binary, fragmented or not.

Plans (:mod:`.plans`): an account on the ``basic`` market-data plan (Alpaca's free plan) gets
409 "insufficient subscription" in answer to ``auth`` on ``/v2/sip`` (and stays
unauthenticated), and 405 "symbol limit exceeded" for a subscribe that would take trades and
quotes together past 30 distinct symbols, or to ``*`` (the subscription is left unchanged; bars
and the other channels have no limit). ``unlimited`` accounts (the default) may use every feed
with up to :data:`SYMBOL_LIMIT` trades + quotes symbols.

Data: the stream replays the synthetic market's own trades and quotes at their timestamps as the
sandbox clock passes them, so it continues the REST history exactly (NYSE sessions with extended
hours in both market modes). Out of those hours (overnight, weekends, holidays) a ``calendar``
sandbox is silent; an ``always-open`` one streams the live present's tape (:mod:`._live`: the
trades, quotes and minute bars its engine fills at and its REST latest trade, quote and bar show,
which the history never lists). ``b`` bars as each
minute closes, ``d`` (the partial daily bar, regular hours) every minute from the open to the
close, ``u`` at :30 past the next
minute for the minutes that had a late-reported trade (their ``b`` lacks that trade, the late
trade itself is sent then, and ``u`` equals the REST bar); ``s`` statuses when
``POST /sandbox/halt`` halts or resumes a symbol. ``delayed_sip`` runs 15 minutes behind;
``test`` serves ``FAKEPACA`` only. After a jump of the clock, ticks older than
:data:`CATCHUP_NS` and bars older than :data:`CATCHUP_BARS` minutes are skipped.

Flood mode (benchmarks): ``SandboxConfig.quote_rate`` or ``?quote_rate=N`` on the URL replaces
the quote replay of a connection with N quotes/s for its subscribed quote symbols, in pre-encoded
batches whose timestamps are patched to the send time (wall clock, so a client can measure its
latency). ``?quote_batch=K`` sets the batch size.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .._stream_protocol import (
    CHANNELS,
    Codec,
    ForeignChannel,
    ProtocolSyntaxError,
    decode_client_message,
    error_message,
    parse_change,
    subscription_message,
)
from . import app as _app
from . import plans
from ._bars import Ticks
from .clock import MINUTE_NS, NS
from .data_api import DELAY_NS, IEX_MARKET, TRADE_CONDITIONS
from .market import Market
from .wire import (
    ApiError,
    Connection,
    json_response,
    not_found,
    read_json,
    unprocessable,
)

log = logging.getLogger(__name__)

ENDPOINTS = {"v2/iex": "iex", "v2/sip": "sip", "v2/delayed_sip": "delayed_sip", "v2/test": "test",
             "v1beta1/boats": "boats", "v1beta1/overnight": "overnight"}
TEST_SYMBOLS = ("FAKEPACA",)
SYMBOL_LIMIT = 10_000          # trades + quotes symbols per connection on any plan (405 beyond)
CATCHUP_NS = 5 * 60 * NS       # ticks older than this behind now are not replayed after a jump
CATCHUP_BARS = 60              # at most this many closed minutes of bars per catch-up
UPDATE_DELAY_NS = 30 * NS      # updatedBars come at :30 of the following minute
FRAME_MESSAGES = 1000          # data messages per frame
POLL_SECONDS = 0.05            # longest wait between two looks at the clock (wall seconds)

STREAMS = web.AppKey("data_streams", set)
_CHANNEL_OF = {"t": "trades", "q": "quotes", "b": "bars", "d": "dailyBars", "u": "updatedBars"}

# halt/resume status codes and reasons by tape (UTP for tape C, CTA for A and B)
_STATUS = {True: {"C": ("H", "Trading Halt", "T1", "Halt News Pending"),
                  "AB": ("2", "Trading Halt", "T1", "Halt News Pending")},
           False: {"C": ("T", "Trading Resumption", "", ""),
                   "AB": ("3", "Resume", "", "")}}


async def spaced(symbols: Iterable[str], every: int = 64) -> AsyncIterator[str]:
    """The symbols, letting the event loop run after each ``every`` of them (so a wildcard
    subscription never stalls the server)."""
    for j, symbol in enumerate(symbols):
        if j % every == every - 1:
            await asyncio.sleep(0)
        yield symbol


# ---------------------------------------------------------------- one connection

class _Sub:
    """Symbols of one channel, in subscription order, with ``*`` meaning every symbol."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: dict[str, None] = {}

    def list(self) -> list[str]:
        return list(self.items)


class StreamSession:
    """One data-stream connection: handshake, subscriptions, the replay pump and flood mode."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, *, endpoint: str,
                 codec: Codec, flood_rate: float | None, flood_batch: int | None,
                 feed: str | None = None):
        self.app = request.app
        self.ws = ws
        self.endpoint = endpoint
        self.feed = feed or ENDPOINTS[endpoint]     # feed: a subclass's own (.crypto_stream)
        self.codec = codec
        self.market: Market = request.app[IEX_MARKET if self.feed == "iex" else _app.MARKET]
        self.clock = request.app[_app.CLOCK]
        self.conn = Connection(ws, kind="data", endpoint=endpoint)
        self.authenticated = False
        self.symbol_limit: int | None = None     # the plan's trades + quotes limit, set at auth
        self.subs = {ch: _Sub() for ch in CHANNELS}
        self.version = 0
        self.flood_rate = flood_rate
        self.flood_batch = flood_batch
        self.flood_sent = 0
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    # ------------------------------------------------------------ sending
    def market_now(self) -> int:
        now = self.clock.now_ns()
        return now - DELAY_NS if self.feed == "delayed_sip" else now

    def _buffered(self) -> int:
        transport = self.ws._req.transport if self.ws._req is not None else None
        return transport.get_write_buffer_size() if transport is not None else 0

    async def send_raw(self, data: bytes) -> None:
        slow = self.app[_app.CONFIG].chaos.slow_bytes
        if slow and self._buffered() > slow:
            await self.fail(407)
            return
        await self.ws.send_frame(data, self.codec.opcode)

    async def send(self, messages: list[dict]) -> None:
        for i in range(0, len(messages), FRAME_MESSAGES):
            if self.ws.closed:
                return
            await self.send_raw(self.codec.encode(messages[i:i + FRAME_MESSAGES]))

    async def _send_data(self, messages: list[dict], version: int) -> None:
        """Send replayed data frame by frame; once the subscriptions change (the client may
        already hold the new subscription's ack), what is left goes only if still wanted."""
        for i in range(0, len(messages), FRAME_MESSAGES):
            if self.ws.closed:
                return
            frame = messages[i:i + FRAME_MESSAGES]
            if self.version != version:
                frame = [m for m in frame if self.wants(_CHANNEL_OF[m["T"]], m["S"])]
                if not frame:
                    continue
            await self.send_raw(self.codec.encode(frame))

    async def error(self, code: int) -> None:
        await self.send([error_message(code)])

    async def fail(self, code: int) -> None:
        """Send error ``code`` (best effort) and close the connection."""
        if self._closing:
            return
        self._closing = True
        try:
            if not self.ws.closed:
                await self.ws.send_frame(self.codec.encode([error_message(code)]), self.codec.opcode)
        except (ConnectionError, RuntimeError):
            pass
        await self.ws.close()

    # ------------------------------------------------------------ lifecycle
    async def run(self, request: web.Request) -> None:
        registry = self.app[_app.CONNECTIONS]
        registry.add(self.conn)
        self.app[STREAMS].add(self)
        try:
            await self.send([{"T": "success", "msg": "connected"}])
            key, secret = _app.credentials(request.headers)
            if key and secret:
                await self.authenticate(key, secret)
            if not self.authenticated and not self.ws.closed:
                timeout = float(getattr(self.app[_app.CONFIG], "stream_auth_timeout", 10.0))
                self._tasks.append(asyncio.ensure_future(self._auth_timeout(timeout)))
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    try:
                        await self.handle(decode_client_message(msg))
                    except ProtocolSyntaxError:
                        await self.error(400)
                    except (ConnectionError, asyncio.CancelledError):
                        raise
                    except Exception:   # a sandbox bug: say so the way Alpaca does
                        log.exception("data stream: handling a client message failed")
                        await self.error(500)
                elif msg.type == WSMsgType.ERROR:
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for task in self._tasks:
                task.cancel()
            registry.discard(self.conn)
            self.app[STREAMS].discard(self)

    async def _auth_timeout(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self.authenticated:
            await self.fail(404)

    async def authenticate(self, key: Any, secret: Any) -> None:
        if self.authenticated:
            await self.error(403)
            return
        engine = self.app[_app.ENGINE]
        account_id = isinstance(key, str) and isinstance(secret, str) and engine.authenticate(key, secret)
        if not account_id:
            await self.error(402)
            return
        plan = engine.data_plan(account_id)
        if not plans.stream_allowed(plan, self.feed):
            await self.error(409)
            return
        others = [c for c in self.app[_app.CONNECTIONS].find(kind="data", endpoint=self.endpoint,
                                                             key_id=key) if c is not self.conn]
        if others:
            await self.fail(406)
            return
        self.conn.key_id = key
        self.symbol_limit = plans.symbol_limit(plan)
        self.authenticated = True
        await self.send([{"T": "success", "msg": "authenticated"}])
        self._tasks.append(asyncio.ensure_future(self._guard(self._pump())))
        if self.flood_rate:
            self._tasks.append(asyncio.ensure_future(self._guard(self._flood())))

    async def _guard(self, work) -> None:
        """Run a background sender; a failure ends the connection with 500 instead of silence."""
        try:
            await work
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("data stream: sending failed")
            await self.fail(500)

    async def handle(self, data: dict) -> None:
        action = data.get("action")
        if action == "auth":
            await self.authenticate(data.get("key"), data.get("secret"))
        elif action in ("subscribe", "unsubscribe"):
            if not self.authenticated:
                await self.error(401)
                return
            await self.change(data, add=action == "subscribe")
        else:
            raise ProtocolSyntaxError

    # ------------------------------------------------------------ subscriptions
    async def change(self, data: dict, *, add: bool) -> None:
        try:
            wanted = parse_change(data)
        except ForeignChannel:
            await self.error(410)
            return
        if add:
            symbols = {s for ch in ("trades", "quotes") for s in
                       list(self.subs[ch].items) + wanted.get(ch, [])}
            limit = SYMBOL_LIMIT if self.symbol_limit is None else min(self.symbol_limit, SYMBOL_LIMIT)
            over = len(symbols - {"*"}) > limit or (self.symbol_limit is not None and "*" in symbols)
            if over:
                await self.error(405)
                return
        self.apply(wanted, add=add)
        await self.send([self.subscription()])

    def apply(self, wanted: dict[str, list[str]], *, add: bool) -> None:
        """Add or remove the symbols of a parsed subscribe/unsubscribe (see ``parse_change``)."""
        for name, symbols in wanted.items():
            items = self.subs[name].items
            for symbol in symbols:
                if add:
                    items.setdefault(symbol, None)
                else:
                    items.pop(symbol, None)
        self.version += 1

    def subscription(self) -> dict:
        return subscription_message({name: sub.items for name, sub in self.subs.items()})

    def symbols(self, channel: str) -> set[str]:
        """The known symbols a channel covers (``*`` expanded; only FAKEPACA on /v2/test)."""
        items = self.subs[channel].items
        if not items:
            return set()
        universe = TEST_SYMBOLS if self.feed == "test" else None
        if "*" in items:
            return set(universe if universe is not None else self.market.active_symbols)
        return {s for s in items if self.market.has(s) and (universe is None or s in universe)}

    def wants(self, channel: str, symbol: str) -> bool:
        items = self.subs[channel].items
        if self.feed == "test" and symbol not in TEST_SYMBOLS:
            return False
        return symbol in items or "*" in items

    # ------------------------------------------------------------ replay
    async def _pump(self) -> None:
        cursor = self.market_now()
        sets_version = -1
        sets: dict[str, set[str]] = {}
        while not self.ws.closed:
            if sets_version != self.version:
                sets = {ch: self.symbols(ch) for ch in ("trades", "quotes", "bars", "updatedBars",
                                                        "dailyBars")}
                if self.flood_rate:
                    sets["quotes"] = set()
                sets_version = self.version
            now = self.market_now()
            if now > cursor:
                events = await self._collect(sets, cursor, now)
                cursor = now
                if events:
                    events.sort(key=lambda e: (e[0], e[1]))
                    await self._send_data([e[2] for e in events], sets_version)
            next_minute = (cursor // MINUTE_NS + 1) * MINUTE_NS
            delay = self.clock.wall_seconds(next_minute + (DELAY_NS if self.feed == "delayed_sip" else 0))
            await asyncio.sleep(min(max(delay, 0.002), POLL_SECONDS))

    async def _collect(self, sets: dict[str, set[str]], cursor: int, now: int) -> list[tuple]:
        """Every message due in (cursor, now], as (event time, sequence, message); yields to
        the event loop now and then, so a wildcard subscription never stalls the server."""
        market, ts = self.market, self.codec.ts
        live = market.live          # always-open: the live present's tape out of hours
        events: list[tuple] = []
        seq = 0
        trades, quotes = sets["trades"], sets["quotes"]
        lo = max(cursor, now - CATCHUP_NS)
        if trades or quotes:
            first = lo // MINUTE_NS * MINUTE_NS
            for minute in range(first, now // MINUTE_NS * MINUTE_NS + 1, MINUTE_NS):
                async for symbol in spaced(trades | quotes, 32):
                    ticks = market.ticks(symbol, minute)
                    if ticks is None and live is not None:
                        ticks = live.ticks(market, symbol, minute)
                    if ticks is None:
                        continue
                    tape = market.tape(symbol)
                    if symbol in trades:
                        a, b = np.searchsorted(ticks.trade_t, [lo, now], side="right")
                        for k in range(int(a), int(b)):
                            if k != ticks.late:
                                seq += 1
                                events.append((int(ticks.trade_t[k]), seq,
                                               self._trade(symbol, ticks, k, tape, ts)))
                    if symbol in quotes:
                        a, b = np.searchsorted(ticks.quote_t, [lo, now], side="right")
                        for k in range(int(a), int(b)):
                            seq += 1
                            events.append((int(ticks.quote_t[k]), seq,
                                           self._quote(symbol, ticks, k, tape, ts)))
        bars, daily, updated = sets["bars"], sets["dailyBars"], sets["updatedBars"]
        closes = range((cursor // MINUTE_NS + 1) * MINUTE_NS, now + 1, MINUTE_NS)
        for end in list(closes)[-CATCHUP_BARS:]:
            minute = end - MINUTE_NS
            sess = market.sessions.session_at(minute)
            if sess is None:
                async for symbol in spaced(bars if live is not None else ()):
                    bar = live.bar(market, symbol, minute)
                    if bar is not None:
                        seq += 1
                        events.append((end, seq, self._bar_msg("b", symbol, bar)))
                continue
            async for symbol in spaced(bars):
                seq += 1
                events.append((end, seq, self._bar("b", symbol, minute, sess, late_removed=True)))
            if daily and sess.open < end <= sess.close:     # the daily bar covers regular hours
                async for symbol in spaced(daily):
                    bar = market.today_bar(symbol, sess, end)
                    if bar is not None:
                        seq += 1
                        events.append((end, seq, self._bar_msg("d", symbol, bar)))
        late_window = range(((cursor - UPDATE_DELAY_NS) // MINUTE_NS + 1) * MINUTE_NS,
                            now - UPDATE_DELAY_NS + 1, MINUTE_NS)
        if trades or updated:
            for end in list(late_window)[-CATCHUP_BARS:]:
                minute = end - MINUTE_NS
                if market.sessions.session_at(minute) is None:
                    continue
                for symbol in trades | updated:
                    if not market.may_have_late(symbol, minute):
                        continue
                    ticks = market.ticks(symbol, minute)
                    if ticks is None or ticks.late < 0:
                        continue
                    at = end + UPDATE_DELAY_NS
                    if symbol in trades:
                        seq += 1
                        events.append((at, seq, self._trade(symbol, ticks, ticks.late,
                                                            market.tape(symbol), ts)))
                    if symbol in updated:
                        sess = market.sessions.session_at(minute)
                        seq += 1
                        events.append((at, seq, self._bar("u", symbol, minute, sess, late_removed=False)))
        return events

    @staticmethod
    def _trade(symbol: str, ticks: Ticks, k: int, tape: str, ts) -> dict:
        return {"T": "t", "S": symbol, "i": int(ticks.trade_id[k]), "x": str(ticks.trade_x[k]),
                "p": float(ticks.price[k]), "s": int(ticks.size[k]),
                "c": TRADE_CONDITIONS[int(ticks.flags[k])], "t": ts(ticks.trade_t[k]), "z": tape}

    @staticmethod
    def _quote(symbol: str, ticks: Ticks, k: int, tape: str, ts) -> dict:
        return {"T": "q", "S": symbol, "bx": str(ticks.bid_x[k]), "bp": float(ticks.bid[k]),
                "bs": int(ticks.bid_size[k]), "ax": str(ticks.ask_x[k]), "ap": float(ticks.ask[k]),
                "as": int(ticks.ask_size[k]), "c": ["R"], "t": ts(ticks.quote_t[k]), "z": tape}

    def _bar(self, kind: str, symbol: str, minute: int, sess, *, late_removed: bool) -> dict:
        bars = self.market.minute_bars(symbol, sess.date)
        i = int((minute - sess.premarket_open) // MINUTE_NS)
        bar = bars.row(i)
        if late_removed:
            ticks = self.market.ticks(symbol, minute) if self.market.may_have_late(symbol, minute) else None
            if ticks is not None and ticks.late >= 0:
                k = ticks.late
                size, price = int(ticks.size[k]), float(ticks.price[k])
                volume = bar.volume - size
                vwap = min(max(round((bar.vwap * bar.volume - price * size) / volume, 4), bar.low), bar.high)
                bar = bar._replace(volume=volume, trade_count=bar.trade_count - 1, vwap=vwap)
        return self._bar_msg(kind, symbol, bar)

    def _bar_msg(self, kind: str, symbol: str, bar) -> dict:
        return {"T": kind, "S": symbol, "o": bar.open, "h": bar.high, "l": bar.low, "c": bar.close,
                "v": bar.volume, "t": self.codec.ts(bar.t), "n": bar.trade_count, "vw": bar.vwap}

    # ------------------------------------------------------------ flood mode
    def _flood_batches(self, symbols: list[str], size: int, variants: int = 4) -> list[bytes]:
        market, now = self.market, self.market_now()
        placeholder = self.codec._PLACE_NS
        quotes = []
        for symbol in symbols:
            try:
                q = market.quote_at(symbol, now)
            except LookupError:
                continue
            quotes.append((symbol, q, market.tape(symbol)))
        if not quotes:
            return []
        batches = []
        for v in range(variants):
            msgs = []
            for i in range(size):
                symbol, q, tape = quotes[(v * size + i) % len(quotes)]
                step = round(((v * size + i) % 7 - 3) * (0.01 if q.bid >= 1 else 0.0001), 4)
                bid = round(max(q.bid + step, 0.0001), 4)
                msgs.append({"T": "q", "S": symbol, "bx": q.bid_exchange, "bp": bid,
                             "bs": q.bid_size, "ax": q.ask_exchange,
                             "ap": round(bid + (q.ask - q.bid), 4), "as": q.ask_size, "c": ["R"],
                             "t": self.codec.ts(placeholder), "z": tape})
            batches.append(self.codec.encode(msgs))
        return batches

    async def _flood(self) -> None:
        rate = float(self.flood_rate)
        size = self.flood_batch or int(min(1000, max(1, rate / 400)))
        loop = asyncio.get_running_loop()
        placeholder = self.codec.placeholder
        version, batches, start, sent, i = -1, [], loop.time(), 0, 0
        while not self.ws.closed:
            if version != self.version:
                version = self.version
                batches = self._flood_batches(sorted(self.symbols("quotes")), size)
                start, sent = loop.time(), 0
            if not batches:
                await asyncio.sleep(POLL_SECONDS)
                continue
            due = rate * (loop.time() - start) - sent
            if due < size:
                await asyncio.sleep(min(max((size - due) / rate, 0.0005), POLL_SECONDS))
                continue
            for _ in range(min(int(due // size), 16)):
                data = batches[i % len(batches)].replace(placeholder, self.codec.stamp(time.time_ns()))
                i += 1
                await self.send_raw(data)
                sent += size
                self.flood_sent += size
                if self.ws.closed:
                    return
            if rate * (loop.time() - start) - sent > rate:   # more than 1 s behind: do not burst
                start, sent = loop.time(), 0
            await asyncio.sleep(0)


# ---------------------------------------------------------------- handlers

def _handler(endpoint: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        if not ws.can_prepare(request).ok:
            raise web.HTTPNotFound()
        config = request.app[_app.CONFIG]
        rate = config.quote_rate
        raw_rate, raw_batch = request.query.get("quote_rate"), request.query.get("quote_batch")
        try:
            if raw_rate:
                rate = float(raw_rate)
            batch = int(raw_batch) if raw_batch else None
        except ValueError:
            raise unprocessable("quote_rate and quote_batch must be numbers") from None
        slow = config.chaos.slow_bytes
        ws = web.WebSocketResponse(autoping=True, compress=not rate, heartbeat=config.stream_heartbeat,
                                   writer_limit=max(2 ** 18, 2 * slow) if slow else 2 ** 18)
        await ws.prepare(request)
        session = StreamSession(request, ws, endpoint=endpoint, codec=Codec.for_headers(request.headers),
                                flood_rate=rate if rate and rate > 0 else None,
                                flood_batch=batch if batch and batch > 0 else None)
        await session.run(request)
        return ws
    handler.__name__ = "stream_" + endpoint.replace("/", "_")
    return handler


async def halt(request: web.Request) -> web.Response:
    """POST /sandbox/halt {"symbol": str, "halted": bool}: halt or resume a symbol; every data
    stream subscribed to its statuses gets the halt/resume status message (the market's prices
    are not affected)."""
    if request[_app.KEY_ID] != request.app[_app.CONFIG].key_id:
        raise ApiError(403, 40310000, "only the sandbox's default key may do this")
    body = await read_json(request)
    symbol, halted = body.get("symbol"), body.get("halted")
    market: Market = request.app[_app.MARKET]
    if not isinstance(symbol, str) or not symbol:
        raise unprocessable('"symbol" is required')
    if not isinstance(halted, bool):
        raise unprocessable('"halted" must be true or false')
    if not market.has(symbol):
        raise not_found("asset not found")
    (market.halted.add if halted else market.halted.discard)(symbol)
    tape = market.tape(symbol)
    sc, sm, rc, rm = _STATUS[halted]["C" if tape == "C" else "AB"]
    now = request.app[_app.CLOCK].now_ns()
    sent = 0
    for session in list(request.app[STREAMS]):
        if session.authenticated and session.wants("statuses", symbol) and not session.ws.closed:
            msg = {"T": "s", "S": symbol, "sc": sc, "sm": sm, "rc": rc, "rm": rm,
                   "t": session.codec.ts(now), "z": tape}
            try:
                await session.send([msg])
                sent += 1
            except ConnectionError:
                pass
    return json_response({"symbol": symbol, "halted": halted, "streams": sent})


def setup(app: web.Application) -> None:
    app[STREAMS] = set()
    for endpoint in ENDPOINTS:
        app.router.add_get("/" + endpoint, _handler(endpoint))
    app.router.add_post("/sandbox/halt", halt)
