"""``api.stream(..., msgpack=True)`` against a real sandbox: both market-data sockets (stocks and
crypto) upgrade with ``Content-Type: application/msgpack``, send msgpack and read msgpack frames
with Timestamp-extension times, and what reaches tables and callbacks is exactly what a JSON
stream of the same market shows (the sandbox's market is the same for every account); through
the stream relay too."""

from __future__ import annotations

import math

import pytest
from _relay_helpers import start_relay
from _stream_helpers import FAST, connect, wait_for
from conftest import new_account

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream._socket import Undecodable, decode

SYMBOLS = ["AAPL", "BTC/USD"]


@pytest.fixture(scope="module")
def fast():
    with Sandbox(**FAST) as sb:
        yield sb


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in ((a[k], b[k]) for k in a))


def test_msgpack_streams_show_what_json_streams_show(fast):
    as_json, as_msgpack = connect(new_account(fast)), connect(new_account(fast))
    bars: dict[str, dict] = {"json": {}, "msgpack": {}}
    with as_json.stream(bars=SYMBOLS, quotes=SYMBOLS) as js, \
            as_msgpack.stream(bars=SYMBOLS, quotes=SYMBOLS, orderbooks=["BTC/USD"], msgpack=True) as ms:
        assert ms._data.use_msgpack and ms._crypto.use_msgpack
        assert not js._data.use_msgpack and not js._crypto.use_msgpack
        for name, stream in (("json", js), ("msgpack", ms)):
            stream.on("bar", lambda b, got=bars[name]: got.__setitem__((b["symbol"], b["timestamp"]), b))

        def common():
            keys = bars["json"].keys() & bars["msgpack"].keys()
            return keys if all(sum(k[0] == s for k in keys) >= 2 for s in SYMBOLS) else None
        keys = wait_for(common, 60, "the same minute bars of both symbols on both streams")
        for key in keys:
            assert same(bars["json"][key], bars["msgpack"][key]), key
            assert key[1].tz is not None and key[1].second == 0
        wait_for(lambda: ms.quotes.df["timestamp"].notna().all(), 30, "quotes of both symbols")
        assert ms.quotes.df.dtypes.equals(js.quotes.df.dtypes)
        wait_for(lambda: len(ms.orderbooks.df) > 0, 30, "a BTC/USD book over msgpack")
        assert ms.stats["malformed"] == ms.stats["crypto_malformed"] == 0 and ms.stats["messages"] > 0

        # changes after the handshake go out as msgpack too and are confirmed
        ms.subscribe(trades=["ETH/USD", "MSFT"])
        wait_for(lambda: (ms.trades.df["price"] > 0).all(), 30, "trades of the new symbols")
        ms.unsubscribe(quotes=["BTC/USD"])
        assert "BTC/USD" not in ms._crypto._server["quotes"]
        # a second view joins the open msgpack connections
        with as_msgpack.stream(quotes=["SOL/USD"]) as other:
            assert other._crypto is ms._crypto
            wait_for(lambda: other.quotes.df.loc["SOL/USD", "bid_price"] > 0, 30, "SOL/USD quotes")
        assert ms.stats["malformed"] == ms.stats["crypto_malformed"] == 0


def test_the_codecs_decode_to_one_shape():
    import msgpack
    import orjson
    ns = 1709562600_123456789
    packed = msgpack.packb([{"T": "q", "S": "BTC/USD", "bp": 1.5, "t": msgpack.Timestamp.from_unix_nano(ns)},
                            {"T": "b", "S": "AAPL", "t": msgpack.Timestamp.from_unix_nano(ns - ns % 60_000_000_000)}],
                           use_bin_type=True)
    quote, bar = decode(packed, use_msgpack=True)
    assert quote == {"T": "q", "S": "BTC/USD", "bp": 1.5, "t": "2024-03-04T14:30:00.123456789Z"}
    assert bar["t"] == "2024-03-04T14:30:00Z"
    text = orjson.dumps([{"T": "q", "t": "2024-03-04T14:30:00.123456789Z"}])
    assert decode(text) == [{"T": "q", "t": "2024-03-04T14:30:00.123456789Z"}]
    for payload, use_msgpack in ((text, True), (packed, False), (b"\xc1", True)):
        with pytest.raises(Undecodable):
            decode(payload, use_msgpack=use_msgpack)


def test_msgpack_through_the_relay(account):
    with start_relay(account) as relay:
        api = connect(account, stream_url=relay.url)
        with api.stream(quotes=["BTC/USD"], orderbooks=["ETH/USD"], msgpack=True) as s:
            assert s._crypto.use_msgpack and s._crypto.url == relay.url + "/v1beta3/crypto/us"
            wait_for(lambda: s.quotes.df.loc["BTC/USD", "bid_price"] > 0 and len(s.orderbooks.df) > 0, 30,
                     "a BTC/USD quote and an ETH/USD book through the relay")
            applied = s.stats["crypto_messages"]         # decoded from the relay's msgpack frames
            wait_for(lambda: s.stats["crypto_messages"] > applied, 30, "more messages through the relay")
            assert s.stats["crypto_malformed"] == 0
