"""The crypto market-data WebSocket at ``/v1beta3/crypto/{loc}`` (protocol 4.5 and 5).

The same handshake, auth, errors, codecs and one-connection-per-key rule as the stock stream
(:class:`.data_stream.StreamSession`, which this subclasses); the channels are crypto's:
``trades`` (``{T:"t",S,p,s,t,i,tks}``), ``quotes`` (``{T:"q",S,bp,bs,ap,as,t}``), ``bars``
(``b`` as each minute closes), ``dailyBars`` (``d``: the UTC day's bar so far, every minute),
``updatedBars`` (accepted; never sent: the sandbox's crypto market reports no late trades) and
``orderbooks`` (``{T:"o",S,t,b:[{p,s}],a:[{p,s}],r}``: the full book with ``r: true`` first
after each subscription, then, with every new quote, only the levels that changed, a removed
level having size 0). A subscription acknowledgement lists ``trades``, ``quotes``,
``orderbooks``, ``bars``, ``updatedBars`` and ``dailyBars``. A stock channel (``statuses``,
``lulds``, ``imbalances``) or ``news`` is answered with 410 (the sandbox's reading of
"invalid subscribe action for this feed"). Every account plan may use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp import web

from .._stream_protocol import (
    CRYPTO_CHANNELS,
    Codec,
    ForeignChannel,
    parse_change,
    subscription_message,
)
from .clock import MINUTE_NS
from .crypto_api import CRYPTO_MARKET, LOCATIONS
from .crypto_market import CryptoMarket, CryptoTicks, utc_day
from .data_stream import (
    CATCHUP_BARS,
    CATCHUP_NS,
    SYMBOL_LIMIT,
    StreamSession,
    _Sub,
    spaced,
)


class CryptoStreamSession(StreamSession):
    """One crypto data-stream connection (see the module docstring)."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, *, endpoint: str,
                 codec: Codec):
        super().__init__(request, ws, endpoint=endpoint, codec=codec, flood_rate=None,
                         flood_batch=None, feed="crypto")
        self.market: CryptoMarket = request.app[CRYPTO_MARKET]     # type: ignore[assignment]
        self.subs = {ch: _Sub() for ch in CRYPTO_CHANNELS}
        self._books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
        self._book_symbols: tuple[int, set[str]] = (-1, set())

    async def change(self, data: dict, *, add: bool) -> None:
        try:
            wanted = parse_change(data, crypto=True)
        except ForeignChannel:
            await self.error(410)
            return
        if add:
            symbols = {s for ch in ("trades", "quotes", "orderbooks") for s in
                       list(self.subs[ch].items) + wanted.get(ch, [])}
            if len(symbols - {"*"}) > SYMBOL_LIMIT:
                await self.error(405)
                return
        self.apply(wanted, add=add)
        if wanted.get("orderbooks"):
            self._books.clear()              # a (re)subscribed book starts again with r: true
        await self.send([self.subscription()])

    def subscription(self) -> dict:
        return subscription_message({name: self.subs[name].items for name in CRYPTO_CHANNELS}, crypto=True)

    def symbols(self, channel: str) -> set[str]:
        items = self.subs[channel].items
        if "*" in items:
            return set(self.market.symbols)
        return {s for s in items if self.market.has(s)}

    async def _collect(self, sets: dict[str, set[str]], cursor: int, now: int) -> list[tuple]:
        market, ts = self.market, self.codec.ts
        if self._book_symbols[0] != self.version:
            self._book_symbols = (self.version, self.symbols("orderbooks"))
        books = self._book_symbols[1]
        events: list[tuple] = []
        seq = 0
        trades, quotes = sets["trades"], sets["quotes"]
        lo = max(cursor, now - CATCHUP_NS)
        for symbol in books - set(self._books):      # a new book: in full, as of now
            seq += 1
            events.append((lo, seq, self._book_msg(symbol, lo)))
        if trades or quotes or books:
            first = lo // MINUTE_NS * MINUTE_NS
            for minute in range(first, now // MINUTE_NS * MINUTE_NS + 1, MINUTE_NS):
                async for symbol in spaced(trades | quotes | books, 32):
                    tk = market.ticks(symbol, minute)
                    if symbol in trades:
                        a, b = np.searchsorted(tk.trade_t, [lo, now], side="right")
                        for k in range(int(a), int(b)):
                            seq += 1
                            events.append((int(tk.trade_t[k]), seq, _trade(symbol, tk, k, ts)))
                    if symbol in quotes or symbol in books:
                        a, b = np.searchsorted(tk.quote_t, [lo, now], side="right")
                        for k in range(int(a), int(b)):
                            t = int(tk.quote_t[k])
                            if symbol in quotes:
                                seq += 1
                                events.append((t, seq, _quote(symbol, tk, k, ts)))
                            if symbol in books:
                                msg = self._book_msg(symbol, t)
                                if msg is not None:
                                    seq += 1
                                    events.append((t, seq, msg))
        bars, daily = sets["bars"], sets["dailyBars"]
        closes = range((cursor // MINUTE_NS + 1) * MINUTE_NS, now + 1, MINUTE_NS)
        for end in list(closes)[-CATCHUP_BARS:]:
            minute = end - MINUTE_NS
            day = utc_day(minute)
            for symbol in bars:
                seq += 1
                minutes = market.minute_bars(symbol, day)
                bar = market.bar_tick(symbol, minutes, int(minute % (1440 * MINUTE_NS) // MINUTE_NS))
                events.append((end, seq, self._bar_msg("b", symbol, bar)))
            for symbol in daily:
                bar = market.day_bar(symbol, day, end)
                if bar is not None:
                    seq += 1
                    volume = float(market.pair(symbol).sizes(np.array([bar.volume]))[0])
                    events.append((end, seq, self._bar_msg("d", symbol, bar._replace(volume=volume))))
        return events

    def _book_msg(self, symbol: str, t: int) -> dict[str, Any] | None:
        """The book at ``t``: in full (``r: true``) the first time, then the changed levels
        (None when nothing changed)."""
        book = self.market.book(symbol, t)
        bids, asks = dict(book["bids"]), dict(book["asks"])
        previous = self._books.get(symbol)
        self._books[symbol] = (bids, asks)
        if previous is None:
            return {"T": "o", "S": symbol, "t": self.codec.ts(book["t"]),
                    "b": [{"p": p, "s": s} for p, s in book["bids"]],
                    "a": [{"p": p, "s": s} for p, s in book["asks"]], "r": True}
        changed = [_diff(old, new) for old, new in zip(previous, (bids, asks))]
        if not changed[0] and not changed[1]:
            return None
        return {"T": "o", "S": symbol, "t": self.codec.ts(book["t"]), "b": changed[0], "a": changed[1]}


def _diff(old: dict[float, float], new: dict[float, float]) -> list[dict[str, float]]:
    out = [{"p": p, "s": s} for p, s in new.items() if old.get(p) != s]
    out.extend({"p": p, "s": 0} for p in old if p not in new)
    return out


def _trade(symbol: str, tk: CryptoTicks, k: int, ts) -> dict:
    return {"T": "t", "S": symbol, "p": float(tk.price[k]), "s": float(tk.size[k]),
            "t": ts(int(tk.trade_t[k])), "i": int(tk.trade_id[k]), "tks": str(tk.taker[k])}


def _quote(symbol: str, tk: CryptoTicks, k: int, ts) -> dict:
    return {"T": "q", "S": symbol, "bp": float(tk.bid[k]), "bs": float(tk.bid_size[k]),
            "ap": float(tk.ask[k]), "as": float(tk.ask_size[k]), "t": ts(int(tk.quote_t[k]))}


def _handler(endpoint: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        from . import app as _app
        config = request.app[_app.CONFIG]
        ws = web.WebSocketResponse(autoping=True, heartbeat=config.stream_heartbeat)
        if not ws.can_prepare(request).ok:
            raise web.HTTPNotFound()
        await ws.prepare(request)
        session = CryptoStreamSession(request, ws, endpoint=endpoint,
                                      codec=Codec.for_headers(request.headers))
        await session.run(request)
        return ws
    handler.__name__ = "crypto_stream_" + endpoint.rsplit("/", 1)[-1].replace("-", "_")
    return handler


def setup(app: web.Application) -> None:
    """Add the crypto stream's routes (one per location)."""
    for loc in LOCATIONS:
        endpoint = f"v1beta3/crypto/{loc}"
        app.router.add_get("/" + endpoint, _handler(endpoint))

