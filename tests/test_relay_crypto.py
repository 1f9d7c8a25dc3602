"""The relay's crypto endpoint ``/v1beta3/crypto/us`` against a real sandbox: crypto's channels
(orderbooks included, stock channels refused with 410), reference counting, the Redis channels
of slashed symbols through a real redis-server, and alpaca-py's CryptoDataStream unchanged."""

from __future__ import annotations

import threading
import time

import msgpack
import redis
from _http_proxy import RecordingProxy
from _relay_helpers import raw_client, start_relay
from _stream_helpers import wait_for
from alpaca.data.live import CryptoDataStream
from conftest import new_account
from test_relay_redis import TOKEN, TokenKeys

import alpaca_nb as anb
from alpaca_nb.relay import Relay
from alpaca_nb.relay._fanout import iso_to_ns
from alpaca_nb.sandbox import Sandbox

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


def test_crypto_clients_ride_out_upstream_drops_resubscribed_and_refilled(relay_dir):
    """The sandbox aborts every WebSocket every few seconds (chaos ws_drop): the relay's crypto
    upstream reconnects and resubscribes the union; its clients stay connected, get their own
    pairs again after every reconnect (order books start again with a full book, r: true), never
    another client's, and alpaca_nb refills its crypto tables from REST after each gap."""
    with Sandbox(seed=7, chaos="ws_drop=3") as sb:
        acct = new_account(sb)
        with start_relay(acct, discovery=True) as relay, RecordingProxy(sb.url) as rest:
            raw = raw_client(relay, acct, PATH)
            raw.send({"action": "subscribe", "quotes": ["ETH/USD"], "orderbooks": ["BTC/USD"]})
            raw.until("subscription")
            received: list[tuple[float, dict]] = []
            stop = threading.Event()

            def read() -> None:
                while not stop.is_set():
                    received.extend((time.monotonic(), m) for m in raw.collect(0.5))

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            api = anb.connect(base_url=acct.url, data_url=rest.url, stream_url=acct.stream_url,
                              key_id=acct.key_id, secret_key=acct.secret_key)
            upstream = relay.data["v1beta3/crypto/us"].source
            refills = ("/v1beta3/crypto/us/latest/quotes", "/v1beta3/crypto/us/latest/orderbooks")
            try:
                with api.stream(quotes=["BTC/USD"], orderbooks=["ETH/USD"]) as stream:
                    assert str(stream.status) == f"connected via relay {relay.url}"
                    wait_for(lambda: all(rest.count("GET", p) for p in refills), 30, what="the first refill")
                    for cycle in range(3):
                        connections = upstream.connections
                        counts = [rest.count("GET", p) for p in refills]
                        wait_for(lambda n=connections: upstream.connections > n, 60,
                                 what=f"crypto upstream reconnect {cycle + 1}")
                        since = time.monotonic()
                        assert upstream.server == {"quotes": {"BTC/USD", "ETH/USD"},
                                                   "orderbooks": {"BTC/USD", "ETH/USD"}}
                        # the raw client: its quotes again, and its book again in full
                        wait_for(lambda s=since: {("q", "ETH/USD"), ("o", "BTC/USD", True)} <= {
                            (m["T"], m["S"]) + ((m.get("r", False),) if m["T"] == "o" else ())
                            for t, m in list(received) if t >= s and "S" in m},
                            60, what=f"the raw client's pairs after reconnect {cycle + 1}")
                        # alpaca_nb: refilled from REST after the relay said its upstream is back
                        wait_for(lambda c=counts: all(rest.count("GET", p) > n for p, n in zip(refills, c)), 60,
                                 what=f"alpaca_nb's refill after reconnect {cycle + 1}")
                        asked = [q["symbols"] for p in refills for _, q in rest.matching("GET", p)]
                        assert set(asked) == {"BTC/USD", "ETH/USD"}, asked
                    wait_for(lambda: stream.quotes.df.shape[0] == 1 and not stream.orderbooks.df.empty,
                             30, what="alpaca_nb's tables")
                    stats = stream.stats
                    assert stats["crypto_connections"] == 1          # it never reconnected itself
                    assert set(stream.quotes.df.index) == {"BTC/USD"}
            finally:
                stop.set()
                reader.join(5)
            data = [m for _, m in received if "S" in m]
            assert {(m["T"], m["S"]) for m in data} == {("q", "ETH/USD"), ("o", "BTC/USD")}
            notes = [m["msg"] for _, m in received if m.get("T") == "success"]
            assert "relay: upstream connected" in notes
            assert relay.served["data"] == 2                            # nobody reconnected to the relay
            raw.close()


def book_of(messages, symbol: str):
    """The order book built from a client's ``o`` messages of ``symbol``: (bids, asks) or None
    while no full book (r: true) came."""
    book = None
    for m in messages:
        if m.get("T") != "o" or m.get("S") != symbol:
            continue
        if m.get("r"):
            book = ({}, {})
        if book is None:
            continue
        for side, levels in zip(book, (m["b"], m["a"]), strict=True):
            for level in levels:
                if level["s"]:
                    side[level["p"]] = level["s"]
                else:
                    side.pop(level["p"], None)
    return book


def test_a_client_joining_a_book_others_have_gets_it_in_full_first(account):
    """Alpaca sends a full book (r: true) after every subscription; the relay's upstream already
    carries the book, so the relay sends the late joiner the book it holds, then the changes."""
    with start_relay(account) as relay:
        first = raw_client(relay, account, PATH)
        first.send({"action": "subscribe", "orderbooks": ["BTC/USD"]})
        first.until("subscription")
        seen_first = first.collect(60, stop=lambda ms: sum(m.get("T") == "o" for m in ms) >= 3)
        for use_msgpack in (False, True):
            late = raw_client(relay, account, PATH, use_msgpack=use_msgpack)
            late.send({"action": "subscribe", "orderbooks": ["BTC/USD"], "quotes": ["BTC/USD"]})
            ack, _ = late.until("subscription")
            assert ack["orderbooks"] == ["BTC/USD"]
            got = late.collect(60, stop=lambda ms: sum(m.get("T") == "o" for m in ms) >= 3)
            books = [m for m in got if m.get("T") == "o"]
            assert books[0]["r"] is True and books[0]["b"] and books[0]["a"], books[0]
            assert [m["p"] for m in books[0]["b"]] == sorted((m["p"] for m in books[0]["b"]), reverse=True)
            assert [m["p"] for m in books[0]["a"]] == sorted(m["p"] for m in books[0]["a"])
            if use_msgpack:
                assert isinstance(books[0]["t"], msgpack.Timestamp)
            # the same frames reach both clients: at the late one's last change, both books agree
            seen_first += first.collect(60, stop=lambda ms, t=books[-1]["t"]: any(
                m.get("T") == "o" and _same_time(m["t"], t) for m in ms))
            upto = max(i for i, m in enumerate(seen_first) if m.get("T") == "o" and _same_time(m["t"], books[-1]["t"]))
            assert book_of(seen_first[:upto + 1], "BTC/USD") == book_of(books, "BTC/USD")
            late.close()
        first.close()


def _same_time(a, b) -> bool:
    """A JSON time string and a msgpack Timestamp (or two of one kind) are the same instant."""
    def ns(t):
        return t.to_unix_nano() if isinstance(t, msgpack.Timestamp) else iso_to_ns(t)
    return ns(a) == ns(b)


def test_a_remote_client_joining_a_book_the_publisher_carries_gets_it_in_full(account, redis_server):
    with start_relay(account, publish=redis_server.url) as publisher:
        local = raw_client(publisher, account, PATH)
        local.send({"action": "subscribe", "orderbooks": ["ETH/USD"]})
        local.until("subscription")
        local.collect(60, stop=lambda ms: sum(m.get("T") == "o" for m in ms) >= 2)
        source = Relay(source=redis_server.url, token=TOKEN, port=0, discovery=False).start()
        try:
            remote = raw_client(source, TokenKeys, PATH)
            remote.send({"action": "subscribe", "orderbooks": ["ETH/USD"]})
            remote.until("subscription")
            books = [m for m in remote.collect(60, stop=lambda ms: sum(m.get("T") == "o" for m in ms) >= 2)
                     if m.get("T") == "o"]
            assert books[0]["S"] == "ETH/USD" and books[0]["r"] is True and books[0]["b"] and books[0]["a"]
            remote.close()
        finally:
            source.stop()
        local.close()
