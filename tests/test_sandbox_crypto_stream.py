"""The crypto data stream at /v1beta3/crypto/us: the stock stream's handshake and errors, crypto's
channels (orderbooks: the full book, then changed levels), JSON and msgpack, what it sends agrees
with the REST history, and the official alpaca-py ``CryptoDataStream`` unchanged."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import aiohttp
import msgpack
import orjson
import requests
from alpaca.data.live import CryptoDataStream

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.sandbox.crypto_market import CryptoMarket
from alpaca_nb.sandbox.wire import parse_time

BASE = "/v1beta3/crypto/us"


async def _session(sb, *, use_msgpack: bool, script, until, timeout: float = 30.0) -> list[dict]:
    """Connect, run ``script(send)`` and collect every message until ``until(messages)``."""
    headers = {"Content-Type": "application/msgpack"} if use_msgpack else {}
    got: list[dict] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(sb.stream_url + BASE, headers=headers) as ws:
            async def send(message: dict) -> None:
                if use_msgpack:
                    await ws.send_bytes(msgpack.packb(message))
                else:
                    await ws.send_str(orjson.dumps(message).decode())

            async def read() -> None:
                async for msg in ws:
                    data = msgpack.unpackb(msg.data, timestamp=3) if use_msgpack else orjson.loads(msg.data)
                    got.extend(data)
                    if until(got):
                        return
            reader = asyncio.ensure_future(read())
            await script(send)
            await asyncio.wait_for(reader, timeout)
    return got


def test_handshake_errors_and_every_channel_in_json():
    with Sandbox(start="2025-06-07T12:00:50Z", speed=4) as sb:
        async def script(send):
            await asyncio.sleep(0.3)
            await send({"action": "subscribe", "trades": ["BTC/USD"]})          # 401 before auth
            await send({"action": "auth", "key": sb.key_id, "secret": "wrong"})  # 402
            await send({"action": "auth", "key": sb.key_id, "secret": sb.secret_key})
            await send({"action": "subscribe", "statuses": ["BTC/USD"]})       # a stock channel: 410
            await send({"action": "subscribe", "trades": ["BTC/USD"], "quotes": ["BTC/USD"],
                        "orderbooks": ["ETH/USD"], "bars": ["BTC/USD", "ETH/USD"],
                        "dailyBars": ["SOL/USD"]})

        def done(got):
            kinds = [m["T"] for m in got]
            books = [m for m in got if m["T"] == "o"]
            return {"t", "q", "b", "d"} <= set(kinds) and len(books) >= 3

        got = asyncio.run(_session(sb, use_msgpack=False, script=script, until=done))
    assert got[0] == {"T": "success", "msg": "connected"}
    errors = [m["code"] for m in got if m["T"] == "error"]
    assert errors == [401, 402, 410]
    assert {"T": "success", "msg": "authenticated"} in got
    (ack,) = [m for m in got if m["T"] == "subscription"]
    assert ack == {"T": "subscription", "trades": ["BTC/USD"], "quotes": ["BTC/USD"],
                   "orderbooks": ["ETH/USD"], "bars": ["BTC/USD", "ETH/USD"], "updatedBars": [],
                   "dailyBars": ["SOL/USD"]}
    trades = [m for m in got if m["T"] == "t"]
    assert all(set(m) == {"T", "S", "p", "s", "t", "i", "tks"} and m["tks"] in "BS" for m in trades)
    quotes = [m for m in got if m["T"] == "q"]
    assert all(set(m) == {"T", "S", "bp", "bs", "ap", "as", "t"} and m["bp"] < m["ap"] for m in quotes)
    books = [m for m in got if m["T"] == "o"]
    assert books[0]["r"] is True and len(books[0]["b"]) >= 5 and len(books[0]["a"]) >= 5
    assert all("r" not in m for m in books[1:])                    # then updates only
    book = {"b": {x["p"]: x["s"] for x in books[0]["b"]}, "a": {x["p"]: x["s"] for x in books[0]["a"]}}
    for update in books[1:]:
        for side in ("b", "a"):
            for level in update[side]:
                if level["s"] == 0:
                    book[side].pop(level["p"])
                else:
                    book[side][level["p"]] = level["s"]
    # the book rebuilt from the updates is the market's book at the last update's quote
    reference = CryptoMarket(seed=7).book("ETH/USD", parse_time(books[-1]["t"], "t"))
    assert book == {"b": dict(reference["bids"]), "a": dict(reference["asks"])}
    assert max(book["b"]) < min(book["a"])
    bar = next(m for m in got if m["T"] == "b" and m["S"] == "BTC/USD")
    assert bar["t"].endswith(":00Z") and isinstance(bar["v"], float)


def test_msgpack_stream_matches_the_rest_history():
    with Sandbox(start="2025-06-07T12:00:55Z", speed=2) as sb:
        async def script(send):
            await send({"action": "auth", "key": sb.key_id, "secret": sb.secret_key})
            await send({"action": "subscribe", "trades": ["LTC/USD"], "bars": ["LTC/USD"],
                        "orderbooks": ["LTC/USD"]})

        got = asyncio.run(_session(sb, use_msgpack=True, script=script,
                                   until=lambda g: any(m["T"] == "b" for m in g)
                                   and sum(m["T"] == "t" for m in g) >= 3))
        bar = next(m for m in got if m["T"] == "b")
        assert isinstance(bar["t"], dt.datetime)                  # msgpack Timestamp ext -1
        start = bar["t"].isoformat()
        rest = requests.get(sb.url + BASE + "/bars", params={
            "symbols": "LTC/USD", "timeframe": "1Min", "start": start, "end": start}, timeout=10).json()
        (ref,) = rest["bars"]["LTC/USD"]
        assert (ref["o"], ref["h"], ref["l"], ref["c"], ref["v"], ref["n"], ref["vw"]) == \
            (bar["o"], bar["h"], bar["l"], bar["c"], bar["v"], bar["n"], bar["vw"])
        trades = [m for m in got if m["T"] == "t"]
        first = trades[0]["t"]                                     # microseconds: widen the end
        last = trades[-1]["t"] + dt.timedelta(microseconds=1)
        rest_trades = requests.get(sb.url + BASE + "/trades", params={
            "symbols": "LTC/USD", "start": first.isoformat(), "end": last.isoformat()}, timeout=10).json()
        assert [t["i"] for t in rest_trades["trades"]["LTC/USD"]] == [t["i"] for t in trades]
        books = [m for m in got if m["T"] == "o"]
        assert books[0]["r"] is True


def test_alpaca_py_crypto_data_stream_receives_quotes_trades_bars_and_books():
    with Sandbox(start="2025-06-07T12:00:50Z", speed=6) as sb:
        stream = CryptoDataStream(sb.key_id, sb.secret_key, url_override=sb.stream_url + BASE)
        got: dict[str, list] = {"quote": [], "trade": [], "bar": [], "book": []}
        done = threading.Event()

        def record(kind):
            async def handler(item):
                got[kind].append(item)
                if all(got.values()) and len(got["book"]) >= 2:
                    done.set()
            return handler

        stream.subscribe_quotes(record("quote"), "BTC/USD")
        stream.subscribe_trades(record("trade"), "BTC/USD")
        stream.subscribe_bars(record("bar"), "BTC/USD", "ETH/USD")
        stream.subscribe_orderbooks(record("book"), "ETH/USD")
        thread = threading.Thread(target=stream.run, daemon=True)
        thread.start()
        try:
            assert done.wait(30), {k: len(v) for k, v in got.items()}
        finally:
            stream.stop()
            thread.join(10)
        assert not thread.is_alive()
        quote, trade, bar = got["quote"][0], got["trade"][0], got["bar"][0]
        assert quote.symbol == "BTC/USD" and quote.bid_price < quote.ask_price
        assert trade.symbol == "BTC/USD" and trade.size > 0 and trade.timestamp.year == 2025
        assert bar.symbol in ("BTC/USD", "ETH/USD") and bar.timestamp.second == 0
        first, second = got["book"][:2]
        assert first.reset is True and first.symbol == "ETH/USD" and len(first.bids) >= 5
        assert second.reset is False
        assert first.bids[0].price < first.asks[0].price
