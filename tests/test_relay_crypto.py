"""The relay's crypto endpoint ``/v1beta3/crypto/us`` against a real sandbox: crypto's channels
(orderbooks included, stock channels refused with 410), reference counting, the Redis channels
of slashed symbols through a real redis-server, and alpaca-py's CryptoDataStream unchanged."""

from __future__ import annotations

import threading

import redis
from _relay_helpers import raw_client, start_relay
from _stream_helpers import wait_for
from alpaca.data.live import CryptoDataStream
from test_relay_redis import TOKEN, TokenKeys

from alpaca_nb.relay import Relay

PATH = "/v1beta3/crypto/us"


def kinds(messages) -> set[tuple[str, str]]:
    return {(m["T"], m["S"]) for m in messages if "S" in m}


def test_crypto_channels_through_the_relay_and_reference_counted_upstream(account):
    with start_relay(account) as relay:
        a = raw_client(relay, account, PATH)
        b = raw_client(relay, account, PATH, use_msgpack=True)
        a.send({"action": "subscribe", "quotes": ["BTC/USD"], "orderbooks": ["ETH/USD"]})
        ack, _ = a.until("subscription")
        assert ack == {"T": "subscription", "trades": [], "quotes": ["BTC/USD"], "orderbooks": ["ETH/USD"],
                       "bars": [], "updatedBars": [], "dailyBars": []}
        b.send({"action": "subscribe", "trades": ["BTC/USD"], "quotes": ["BTC/USD"]})
        b.until("subscription")
        upstream = relay.data["v1beta3/crypto/us"].source
        assert upstream.server == {"quotes": {"BTC/USD"}, "orderbooks": {"ETH/USD"}, "trades": {"BTC/USD"}}
        want = {("q", "BTC/USD"), ("o", "ETH/USD")}
        got = a.collect(60, stop=lambda ms: want <= kinds(ms))
        assert kinds(got) == want
        book = next(m for m in got if m.get("T") == "o")
        assert book["r"] is True and book["b"] and book["a"]
        got_b = b.collect(60, stop=lambda ms: {("q", "BTC/USD"), ("t", "BTC/USD")} <= kinds(ms))
        assert kinds(got_b) == {("q", "BTC/USD"), ("t", "BTC/USD")}
        # crypto refuses the stock channels, the stock feed refuses orderbooks: 410
        a.send({"action": "subscribe", "statuses": ["BTC/USD"]})
        assert a.until("error")[0]["code"] == 410
        stock = raw_client(relay, account)
        stock.send({"action": "subscribe", "orderbooks": ["AAPL"]})
        assert stock.until("error")[0]["code"] == 410
        stock.close()
        b.close()            # a still wants BTC/USD quotes; b's trades go
        wait_for(lambda: upstream.server == {"quotes": {"BTC/USD"}, "orderbooks": {"ETH/USD"}},
                 what="b's trades released upstream")
        a.close()
        wait_for(lambda: not upstream.server, what="every crypto symbol released upstream")


def test_slashed_symbols_through_redis(account, redis_server):
    spy = redis.Redis.from_url(redis_server.url).pubsub()
    spy.psubscribe("*")
    with start_relay(account, publish=redis_server.url) as publisher:
        source = Relay(source=redis_server.url, token=TOKEN, port=0, discovery=False).start()
        try:
            remote = raw_client(source, TokenKeys, PATH)
            remote.send({"action": "subscribe", "quotes": ["BTC/USD"], "orderbooks": ["BTC/USD"]})
            ack, _ = remote.until("subscription")
            assert ack["quotes"] == ["BTC/USD"] and ack["orderbooks"] == ["BTC/USD"]
            assert publisher.data["v1beta3/crypto/us"].source.server == {
                "quotes": {"BTC/USD"}, "orderbooks": {"BTC/USD"}}
            want = {("q", "BTC/USD"), ("o", "BTC/USD")}
            got = remote.collect(60, stop=lambda ms: want <= kinds(ms))
            assert kinds(got) == want
            channels = set()
            wait_for(lambda: channels.update(
                m["channel"].decode() for m in iter(lambda: spy.get_message(timeout=0.2), None)
                if m["type"] == "pmessage") or "alpaca-nb:v1beta3/crypto/us:BTC/USD" in channels,
                what="the crypto symbol's Redis channel")
            # a slashed symbol's channel is prefix:path:symbol; the symbol is what follows the last ':'
            data = {c for c in channels if "crypto" in c}
            assert data == {"alpaca-nb:v1beta3/crypto/us:BTC/USD"}, data
            remote.close()
        finally:
            source.stop()
            spy.close()


def test_alpaca_py_crypto_data_stream_through_the_relay(account):
    with start_relay(account) as relay:
        stream = CryptoDataStream(account.key_id, account.secret_key, url_override=relay.url + PATH)
        got: dict[str, list] = {"quote": [], "book": []}
        done = threading.Event()

        def record(kind):
            async def handler(item):
                got[kind].append(item)
                if got["quote"] and len(got["book"]) >= 2:
                    done.set()
            return handler

        stream.subscribe_quotes(record("quote"), "BTC/USD")
        stream.subscribe_orderbooks(record("book"), "ETH/USD")
        thread = threading.Thread(target=stream.run, daemon=True)
        thread.start()
        try:
            assert done.wait(60), {k: len(v) for k, v in got.items()}
        finally:
            stream.stop()
            thread.join(10)
        assert got["quote"][0].symbol == "BTC/USD" and got["quote"][0].bid_price < got["quote"][0].ask_price
        first, second = got["book"][:2]
        assert first.symbol == "ETH/USD" and first.reset is True and second.reset is False
