"""Stream failures against a real sandbox and a real proxy process: drops (admin route, chaos
``ws_drop``, a blocked network), a silent socket, 406 and 402, malformed server messages, and the
table refill after a gap."""

from __future__ import annotations

import logging
import random
import time

import orjson
import pandas as pd
import pytest
import websocket
from _stream_helpers import FAST, admin, connect, counts, wait_for
from _ws_proxy import WsProxy
from conftest import new_account

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream import Reconnect, StreamConflictWarning, open_hubs

QUICK = Reconnect(base=0.2, cap=1.0)


@pytest.fixture(scope="module")
def fast():
    with Sandbox(**FAST) as sb:
        yield sb


def _alive(stream, symbols, more=5, timeout=10):
    """Wait until every symbol got ``more`` new stream messages."""
    start = counts(stream, symbols)
    wait_for(lambda: all(v > start[k] + more for k, v in counts(stream, symbols).items()), timeout,
             f"fresh data for {', '.join(symbols)}")


def test_reconnects_after_the_server_drops_the_socket_with_every_subscription_restored(fast):
    api = connect(new_account(fast))
    with api.stream(quotes=["AAPL", "MSFT"], trades=["SPY"], bars=["NVDA"], reconnect=QUICK) as s:
        seen = []
        s.on("status", seen.append)
        _alive(s, ["AAPL", "MSFT", "SPY"])
        assert admin(fast, "/sandbox/streams/drop", {"kind": "data"})["dropped"] >= 1
        wait_for(lambda: s.stats["data_connections"] >= 2 and s.status.connected, 10, "the reconnect")
        assert any(st.state == "reconnecting" for st in seen)
        assert s.subscriptions == {"quotes": ["AAPL", "MSFT"], "trades": ["SPY"], "bars": ["NVDA"]}
        _alive(s, ["AAPL", "MSFT", "SPY"])                  # the new socket carries all of them
        first_bar = s.bars.df.loc["NVDA", "timestamp"]
        wait_for(lambda: s.bars.df.loc["NVDA", "timestamp"] > first_bar, 10, "a new NVDA bar")


def test_keeps_working_under_chaos_ws_drop(tmp_path):
    with Sandbox(**FAST, chaos="ws_drop=0.7") as sb:
        api = connect(new_account(sb))
        with api.stream(quotes=["AAPL"], trades=["MSFT"], trade_updates=True, reconnect=QUICK) as s:
            wait_for(lambda: s.stats["data_connections"] >= 4 and s.stats["trading_connections"] >= 4, 30,
                     "several drops and reconnects of both sockets")
            _alive(s, ["AAPL", "MSFT"])
            assert s.subscriptions == {"quotes": ["AAPL"], "trades": ["MSFT"]}
            order = api.buy("AAPL", 1)
            wait_for(lambda: order.name in s.orders.df.index and s.orders.get(order.name)["status"] == "filled",
                     15, "the fill in the order book despite the drops")


def test_a_silent_socket_counts_as_a_drop(fast):
    account = new_account(fast)
    with WsProxy(fast.url) as proxy:
        api = connect(account, stream_url=proxy.stream_url)
        with api.stream(quotes=["AAPL"], reconnect=Reconnect(base=0.1, ping_interval=0.3, stale_timeout=1.0)) as s:
            seen = []
            s.on("status", seen.append)
            _alive(s, ["AAPL"])
            assert proxy.send("freeze") == "1"                # TCP stays open, nothing moves
            wait_for(lambda: any("no data and no pong" in (st.reason or "") for st in seen), 10,
                     "the stale-socket drop")
            # the server still holds the frozen connection (so it answers 406, which right after
            # our own drop is retried with the ordinary backoff) until the network gives it up
            proxy.send("drop")
            wait_for(lambda: s.status.connected and s.stats["data_connections"] == 2, 10, "the reconnect")
            assert not any("another client" in (st.reason or "") and st.state == "stopped" for st in seen)
            _alive(s, ["AAPL"])


def test_an_idle_but_healthy_socket_is_kept_by_pings(fast):
    api = connect(new_account(fast))
    # no subscription at all: nothing but pongs arrive, and the connection must stay up
    with api.stream(reconnect=Reconnect(ping_interval=0.2, stale_timeout=0.6)) as s:
        hub = s._data
        frames = hub.frames
        time.sleep(2.0)
        assert s.status.connected and s.stats["data_connections"] == 1
        assert hub.frames == frames                         # really nothing but control frames


def test_subscribing_while_disconnected_takes_effect_on_reconnect(fast):
    account = new_account(fast)
    with WsProxy(fast.url) as proxy:
        api = connect(account, stream_url=proxy.stream_url)
        with api.stream(quotes=["AAPL"], reconnect=QUICK) as s:
            proxy.send("block")
            wait_for(lambda: s.status.state == "reconnecting", 10, "the drop")
            s.subscribe(trades=["MSFT"])                       # returns at once, nothing to wait for
            assert s.subscriptions == {"quotes": ["AAPL"], "trades": ["MSFT"]}
            proxy.send("unblock")
            wait_for(lambda: s.status.connected, 15, "the reconnect")
            _alive(s, ["AAPL", "MSFT"])


def test_the_table_is_refilled_from_rest_after_a_gap():
    # real-time clock: minute bars come once a minute, so a fresh bar right after the reconnect
    # can only come from the REST refill
    with Sandbox(seed=7, start="2024-03-04T15:00:05Z", speed=1) as sb, WsProxy(sb.url) as proxy:
        account = new_account(sb)
        api = connect(account, stream_url=proxy.stream_url)
        with api.stream(bars=["AAPL"], quotes=["MSFT"], reconnect=QUICK) as s:
            wait_for(lambda: pd.notna(s.bars.df.loc["AAPL", "timestamp"]), 10, "the first refill")
            first = s.bars.df.loc["AAPL", "timestamp"]
            assert first == api.latest_bars(["AAPL"]).loc["AAPL", "timestamp"]
            proxy.send("block")
            wait_for(lambda: s.status.state == "reconnecting", 10, "the drop")
            admin(sb, "/sandbox/clock", {"advance": 600})          # ten market minutes pass unseen
            proxy.send("unblock")
            wait_for(lambda: s.status.connected, 15, "the reconnect")
            expected = api.latest_bars(["AAPL"]).loc["AAPL", "timestamp"]
            assert expected >= first + pd.Timedelta(minutes=10)
            wait_for(lambda: s.bars.df.loc["AAPL", "timestamp"] >= expected, 5, "the refilled bar")
            quote_time = s.quotes.df.loc["MSFT", "timestamp"]
            assert quote_time >= first + pd.Timedelta(minutes=10)


def test_406_warns_and_backs_off_until_the_other_client_leaves(fast, caplog):
    account = new_account(fast)
    other = websocket.create_connection(account.stream_url + "/v2/iex", timeout=5)
    try:
        assert orjson.loads(other.recv())[0]["msg"] == "connected"
        other.send(orjson.dumps({"action": "auth", "key": account.key_id, "secret": account.secret_key}).decode())
        assert orjson.loads(other.recv())[0]["msg"] == "authenticated"
        api = connect(account)
        with caplog.at_level(logging.WARNING, logger="alpaca_nb.stream"), \
                pytest.warns(StreamConflictWarning, match="another client holds"):
            s = api.stream(quotes=["AAPL"], reconnect=Reconnect(base=0.1, conflict=0.6))
        try:
            assert s.status.state == "reconnecting" and "406" in s.status.reason
            assert "another client holds" in caplog.text
        finally:
            other.close()
        wait_for(lambda: s.status.connected, 15, "the connection once the other client left")
        _alive(s, ["AAPL"])
        s.close()
    finally:
        other.close()


def test_a_held_trade_updates_slot_backs_off_like_a_406_instead_of_failing_auth(fast, caplog):
    """Alpaca allows one trade_updates connection per account: the refusal is a conflict to wait
    out (warned about), not bad keys."""
    account = new_account(fast)
    other = websocket.create_connection(account.stream_url + "/stream", timeout=5)
    try:
        other.send(orjson.dumps({"action": "auth", "key": account.key_id, "secret": account.secret_key}).decode())
        assert orjson.loads(other.recv())["data"]["status"] == "authorized"
        api = connect(account)
        with caplog.at_level(logging.WARNING, logger="alpaca_nb.stream"), \
                pytest.warns(StreamConflictWarning, match="another client holds"):
            s = api.stream(trade_updates=True, reconnect=Reconnect(base=0.1, conflict=0.6))
        try:
            assert s.status.state == "reconnecting" and "connection limit" in s.status.reason
        finally:
            other.close()
        wait_for(lambda: s.status.connected, 15, "the trade_updates connection once the other client left")
        order = api.buy("AAPL", 1)
        wait_for(lambda: order.name in s.orders.df.index and s.orders.df.loc[order.name, "status"] == "filled",
                 10, "the fill in the local order book")
        s.close()
    finally:
        other.close()


def test_the_406_backoff_is_long_and_ordinary_backoff_is_capped_full_jitter():
    rng = random.Random(1)
    options = Reconnect(base=0.5, cap=30.0, conflict=60.0)
    assert all(30.0 <= options.conflict_delay(rng) <= 60.0 for _ in range(1000))
    first = [options.delay(1, rng) for _ in range(1000)]
    assert 0 <= min(first) < 0.05 and 0.45 < max(first) <= 0.5           # full jitter in [0, base]
    late = [options.delay(20, rng) for _ in range(1000)]
    assert max(late) <= 30.0 and max(late) > 25                           # capped


def test_402_raises_at_the_call_and_leaves_nothing_running(fast):
    api = anb.connect(base_url=fast.url, data_url=fast.url, stream_url=fast.stream_url,
                      key_id="SBXNOTAKEY", secret_key="not-the-secret")
    with pytest.raises(anb.AuthenticationError, match="auth failed"):
        api.stream(quotes=["AAPL"])
    with pytest.raises(anb.AuthenticationError, match="trading stream refused"):
        api.trade_updates()
    assert not [h for h in open_hubs() if h.key_id == "SBXNOTAKEY"]


def test_an_unreachable_endpoint_raises_a_connection_error():
    api = anb.connect(base_url="http://127.0.0.1:9", data_url="http://127.0.0.1:9",
                      stream_url="ws://127.0.0.1:9", key_id="SBXK", secret_key="secret")
    with pytest.raises(anb.AlpacaConnectionError, match="could not open the data stream"):
        api.stream(quotes=["AAPL"], timeout=1.0, reconnect=QUICK)
    assert not [h for h in open_hubs() if h.key_id == "SBXK"]


GARBAGE = [
    b"this is not json",
    b'"a string, not an array"',
    b'[1, "x", null, {"T": "q", "bp": 1.0}]',               # junk items, a quote without a symbol
    b'[{"T": "q", "S": ["AAPL"], "bp": 1}]',                 # an unhashable symbol
    b'[{"no_type": true}]',
    b"\xff\xfe\x00garbage",
    b'[{"T":"q","S":"AAPL","bp":"abc","ap":null,"t":"yesterday"}, 7]',   # bad values, then junk
]


def test_malformed_server_messages_are_logged_and_skipped(fast, caplog):
    account = new_account(fast)
    with WsProxy(fast.url) as proxy:
        api = connect(account, stream_url=proxy.stream_url)
        with api.stream(quotes=["AAPL"], reconnect=QUICK) as s:
            _alive(s, ["AAPL"])
            got = []
            s.on("quote", got.append)
            with caplog.at_level(logging.WARNING, logger="alpaca_nb.stream"):
                for junk in GARBAGE:
                    assert proxy.inject(junk) == 1
                wait_for(lambda: s.stats["malformed"] >= 9, 10, "every malformed message counted")
                _alive(s, ["AAPL"])
            assert "malformed message skipped" in caplog.text and "this is not json" in caplog.text
            assert s.status.connected and s.stats["data_connections"] == 1    # never dropped
            # the table and the callbacks still work; a bad value shows as NaN, never as an error
            wait_for(lambda: s.quotes.df.loc["AAPL", "bid_price"] > 0, 10, "a good quote after the junk")
            assert all(isinstance(q["bid_price"], float) for q in got)
