"""The sandbox's market-data WebSocket through real sockets (websocket-client): handshake and
every error code, JSON and msgpack framing, subscriptions, each channel, halts, the test and
delayed feeds, flood mode, the connection registry and the slow-client rule."""

from __future__ import annotations

import datetime as dt
import json
import time

import msgpack
import pytest
import requests
import websocket
from _data_stream_client import AUTHENTICATED, RawDataStream, connect
from conftest import admin_headers, new_account

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.sandbox.clock import Clock, Sessions
from alpaca_nb.sandbox.market import Market


@pytest.fixture(scope="module")
def fast():
    """A sandbox whose clock runs 60x from a fixed moment: a minute closes every wall second."""
    with Sandbox(start="2024-03-06T14:58:10Z", speed=60, stream_auth_timeout=1.0) as sb:
        yield sb


def subscription(**channels):
    msg = {"T": "subscription"}
    for name in ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds"):
        msg[name] = channels.get(name, [])
    msg["corrections"] = msg["cancelErrors"] = channels.get("trades", [])
    msg["imbalances"] = channels.get("imbalances", [])
    return msg


def rest(sb, path, **params):
    resp = requests.get(sb.url + path, params=params, headers=admin_headers(sb), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ts(value) -> dt.datetime:
    if isinstance(value, msgpack.Timestamp):
        return value.to_datetime()
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------- handshake and errors

def test_json_session_follows_the_protocol_transcript(fast):
    account = new_account(fast)
    c = RawDataStream(fast, "/v2/iex")
    assert c.recv() == [{"T": "success", "msg": "connected"}]
    c.send({"action": "subscribe", "trades": ["AAPL"]})
    assert c.recv() == [{"T": "error", "code": 401, "msg": "not authenticated"}]
    c.send({"action": "auth", "key": account.key_id, "secret": "wrong"})
    assert c.recv() == [{"T": "error", "code": 402, "msg": "auth failed"}]
    assert c.auth(account) == AUTHENTICATED
    c.send({"action": "auth", "key": account.key_id, "secret": account.secret_key})
    assert c.recv() == [{"T": "error", "code": 403, "msg": "already authenticated"}]
    c.ws.send("not json")
    assert c.recv() == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
    c.send({"action": "subscribe", "trades": ["AAPL"], "quotes": ["AMD", "CLDR"], "bars": ["*"],
            "dailyBars": ["VOO"], "statuses": ["*"]})
    assert c.collect(5, lambda m: any(x["T"] == "subscription" for x in m))[-1] == subscription(
        trades=["AAPL"], quotes=["AMD", "CLDR"], bars=["*"], dailyBars=["VOO"], statuses=["*"])
    c.send({"action": "unsubscribe", "bars": ["*"], "quotes": ["CLDR", "NOTSUBSCRIBED"]})
    echo = [m for m in c.collect(5, lambda m: any(x["T"] == "subscription" for x in m))
            if m["T"] == "subscription"]
    assert echo == [subscription(trades=["AAPL"], quotes=["AMD"], dailyBars=["VOO"], statuses=["*"])]
    assert c.frames and all(isinstance(f, str) for f in c.frames)     # text frames
    c.close()


def test_msgpack_session_binary_frames_timestamps_and_fragmented_client_frames(fast):
    account = new_account(fast)
    c = RawDataStream(fast, use_msgpack=True)
    assert c.recv() == [{"T": "success", "msg": "connected"}]
    assert c.auth(account) == AUTHENTICATED
    payload = msgpack.packb({"action": "subscribe", "quotes": ["AAPL"], "trades": ["AAPL"], "bars": ["AAPL"]})
    c.ws.send_frame(websocket.ABNF.create_frame(payload[:10], websocket.ABNF.OPCODE_BINARY, fin=0))
    c.ws.send_frame(websocket.ABNF.create_frame(payload[10:], websocket.ABNF.OPCODE_CONT, fin=1))
    msgs = c.collect(3, lambda m: {"q", "t", "b"} <= {x["T"] for x in m})
    assert msgs[0] == subscription(trades=["AAPL"], quotes=["AAPL"], bars=["AAPL"])
    assert {"q", "t", "b"} <= {m["T"] for m in msgs}
    for m in msgs:
        assert next(iter(m)) == "T"                     # T first in every map
        if m["T"] in ("q", "t", "b"):
            assert isinstance(m["t"], msgpack.Timestamp) and m["S"] == "AAPL"
    bar = next(m for m in msgs if m["T"] == "b")
    assert set(bar) == {"T", "S", "o", "h", "l", "c", "v", "t", "n", "vw"}
    assert ts(bar["t"]).second == 0
    # a client may also speak JSON in a binary frame, and garbage is invalid syntax
    c.ws.send_binary(json.dumps({"action": "unsubscribe", "quotes": ["AAPL"]}).encode())
    assert any(m["T"] == "subscription" and m["quotes"] == []
               for m in c.collect(3, lambda m: any(x["T"] == "subscription" for x in m)))
    c.ws.send_binary(b"\xc1\xc1 not msgpack")
    assert any(m == {"T": "error", "code": 400, "msg": "invalid syntax"} for m in c.collect(3, lambda m: any(
        x["T"] == "error" for x in m)))
    assert all(isinstance(f, bytes) for f in c.frames)
    c.close()


def test_no_auth_within_the_timeout_gets_404_and_the_socket_closes(fast):
    c = RawDataStream(fast)
    assert c.recv() == [{"T": "success", "msg": "connected"}]
    assert c.recv() == [{"T": "error", "code": 404, "msg": "auth timeout"}]
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        c.recv()


def test_one_connection_per_key_per_endpoint(fast):
    account = new_account(fast)
    first = connect(fast, account)
    second = RawDataStream(fast)
    assert second.recv() == [{"T": "success", "msg": "connected"}]
    second.send({"action": "auth", "key": account.key_id, "secret": account.secret_key})
    assert second.recv() == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        second.recv()
    other_endpoint = connect(fast, account, "/v2/sip")      # another endpoint is another slot
    status = rest(fast, "/sandbox/status")
    assert status["connections"]["data"] >= 2
    first.close()
    for _ in range(50):                                     # the slot frees once the server sees the close
        again = RawDataStream(fast)
        again.recv()
        again.send({"action": "auth", "key": account.key_id, "secret": account.secret_key})
        if again.recv() == [{"T": "success", "msg": "authenticated"}]:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the key's slot was not freed after the first connection closed")
    again.close()
    other_endpoint.close()


def test_apca_headers_on_the_upgrade_authenticate(fast):
    account = new_account(fast)
    c = RawDataStream(fast, headers=[f"APCA-API-KEY-ID: {account.key_id}",
                              f"APCA-API-SECRET-KEY: {account.secret_key}"])
    assert c.recv() == [{"T": "success", "msg": "connected"}]
    assert c.recv() == [{"T": "success", "msg": "authenticated"}]
    c.send({"action": "subscribe", "bars": ["SPY"]})
    assert c.recv() == [subscription(bars=["SPY"])]
    c.close()
    bad = RawDataStream(fast, headers=[f"APCA-API-KEY-ID: {account.key_id}", "APCA-API-SECRET-KEY: nope"])
    assert bad.recv() == [{"T": "success", "msg": "connected"}]
    assert bad.recv() == [{"T": "error", "code": 402, "msg": "auth failed"}]
    bad.close()


def test_bad_subscriptions_leave_the_state_unchanged(fast):
    account = new_account(fast)
    c = connect(fast, account)
    c.send({"action": "subscribe", "quotes": ["AAPL"]})
    assert c.recv() == [subscription(quotes=["AAPL"])]
    for bad in ({"action": "subscribe", "trades": "AAPL"}, {"action": "subscribe", "trades": ["AA PL"]},
                {"action": "subscribe", "trades": [1]}, {"action": "dance"}, ["subscribe"]):
        c.send(bad)
        msgs = c.collect(3, lambda m: any(x["T"] == "error" for x in m))
        assert {"T": "error", "code": 400, "msg": "invalid syntax"} in msgs, bad
    c.send({"action": "subscribe", "orderbooks": ["AAPL"]})
    assert {"T": "error", "code": 410, "msg": "invalid subscribe action for this feed"} in \
        c.collect(3, lambda m: any(x["T"] == "error" for x in m))
    c.send({"action": "subscribe", "trades": [f"S{i}" for i in range(10_001)]})
    assert {"T": "error", "code": 405, "msg": "symbol limit exceeded"} in \
        c.collect(3, lambda m: any(x["T"] == "error" for x in m))
    c.send({"action": "subscribe", "bars": ["MSFT"]})
    echo = [m for m in c.collect(3, lambda m: any(x["T"] == "subscription" for x in m))
            if m["T"] == "subscription"]
    assert echo == [subscription(quotes=["AAPL"], bars=["MSFT"])]
    c.close()


def test_an_unknown_stream_path_is_refused(fast):
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(fast.stream_url + "/v2/nasdaq", timeout=5)
    assert err.value.status_code == 404


# ---------------------------------------------------------------- channels

def _next_late_minute(symbol: str, after: str) -> dt.datetime:
    """The first minute after ``after`` in which the seed-7 market reports a trade late."""
    market = Market(seed=7, sessions=Sessions("always-open"), clock=Clock(start=after))
    minute = int(dt.datetime.fromisoformat(after).timestamp()) // 60 * 60 * 10 ** 9
    while True:
        minute += 60 * 10 ** 9
        if market.ticks(symbol, minute).late >= 0:
            return dt.datetime.fromtimestamp(minute / 1e9, dt.timezone.utc)


def test_every_channel_delivers_and_continues_the_rest_history():
    late_minute = _next_late_minute("AAPL", "2024-03-06T15:00:00+00:00")
    start = late_minute - dt.timedelta(seconds=100)
    with Sandbox(start=start.isoformat(), speed=60) as fast:
        account = new_account(fast)
        c = connect(fast, account, "/v2/sip")          # the SIP, REST's default feed
        c.send({"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"], "bars": ["AAPL", "SPY"],
                "updatedBars": ["AAPL", "SPY"], "dailyBars": ["SPY"]})
        msgs = c.collect(30, lambda m: any(x["T"] == "u" and x["S"] == "AAPL" for x in m))
        _check_channels(fast, msgs, late_minute)
        c.close()


def _check_channels(fast, msgs, late_minute):
    kinds = {m["T"] for m in msgs}
    assert {"subscription", "t", "q", "b", "d", "u"} <= kinds, kinds
    trades = [m for m in msgs if m["T"] == "t"]
    quotes = [m for m in msgs if m["T"] == "q"]
    first, last = min((m["t"] for m in trades), key=ts), max((m["t"] for m in trades), key=ts)
    history = rest(fast, "/v2/stocks/AAPL/trades", start=first, end=last, limit=10000)["trades"]
    by_id = {t["i"]: t for t in history}
    for m in trades:      # every streamed trade is the REST trade, field for field
        assert {k: v for k, v in m.items() if k not in ("T", "S")} == {k: by_id[m["i"]][k] for k in
                                                                     ("i", "x", "p", "s", "c", "t", "z")}
    missing = set(by_id) - {m["i"] for m in trades}
    assert len(missing) <= 1              # at most a late-reported trade whose report is still due
    qfirst, qlast = min((m["t"] for m in quotes), key=ts), max((m["t"] for m in quotes), key=ts)
    qhistory = rest(fast, "/v2/stocks/AAPL/quotes", start=qfirst, end=qlast, limit=10000)["quotes"]
    assert [{k: v for k, v in m.items() if k not in ("T", "S")} for m in quotes] == \
        [{k: q[k] for k in ("bx", "bp", "bs", "ax", "ap", "as", "c", "t", "z")} for q in qhistory]
    # bars: the REST bar, except that a minute with a late trade lacks it until its `u`
    updated = {(m["S"], m["t"]): m for m in msgs if m["T"] == "u"}
    for m in (x for x in msgs if x["T"] == "b"):
        bar = rest(fast, f"/v2/stocks/{m['S']}/bars", timeframe="1Min", start=m["t"], end=m["t"])["bars"][0]
        assert (m["o"], m["h"], m["l"], m["c"]) == (bar["o"], bar["h"], bar["l"], bar["c"])
        if (m["v"], m["n"]) != (bar["v"], bar["n"]):
            assert m["n"] == bar["n"] - 1 and m["v"] < bar["v"]
            late = updated.get((m["S"], m["t"]))
            if late is not None:
                assert {k: late[k] for k in bar} == bar
    for u in updated.values():
        bar = rest(fast, f"/v2/stocks/{u['S']}/bars", timeframe="1Min", start=u["t"], end=u["t"])["bars"][0]
        assert {k: u[k] for k in bar} == bar
    daily = [m for m in msgs if m["T"] == "d"]
    day = rest(fast, "/v2/stocks/SPY/bars", timeframe="1Day", start="2024-03-06")["bars"][0]
    assert daily and all(d["t"] == "2024-03-06T05:00:00Z" and d["o"] == day["o"] for d in daily)
    assert [d["v"] for d in daily] == sorted(d["v"] for d in daily)     # growing through the day
    late_stamp = late_minute.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ("AAPL", late_stamp) in updated
    b = next(m for m in msgs if m["T"] == "b" and m["S"] == "AAPL" and m["t"] == late_stamp)
    assert b["n"] == updated[("AAPL", late_stamp)]["n"] - 1
    # the late trade itself arrives with the update, stamped inside its minute
    u_index = next(i for i, m in enumerate(msgs) if m["T"] == "u" and m["S"] == "AAPL")
    late_trades = [m for m in msgs[:u_index + 2] if m["T"] == "t" and m["t"].startswith(late_stamp[:17])]
    assert any(msgs.index(t) > msgs.index(b) for t in late_trades)


def test_wildcard_and_the_test_feed(fast):
    account = new_account(fast)
    c = connect(fast, account)
    c.send({"action": "subscribe", "bars": ["*"]})
    msgs = c.collect(60, lambda m: len({x.get("S") for x in m if x["T"] == "b"}) > 300)
    assert len({m["S"] for m in msgs if m["T"] == "b"}) > 300
    c.close()
    t = connect(fast, account, "/v2/test")
    t.send({"action": "subscribe", "quotes": ["FAKEPACA", "AAPL"], "trades": ["*"]})
    msgs = t.collect(3, lambda m: sum(x["T"] in ("q", "t") for x in m) >= 4)
    data = [m for m in msgs if m["T"] in ("q", "t")]
    assert data and {m["S"] for m in data} == {"FAKEPACA"}
    t.close()


def test_delayed_sip_runs_fifteen_minutes_behind(fast):
    account = new_account(fast)
    live = connect(fast, account, "/v2/iex")
    late = connect(fast, account, "/v2/delayed_sip")
    for c in (live, late):
        c.send({"action": "subscribe", "bars": ["MSFT"]})
    live_bars = [m for m in live.collect(3, lambda m: any(x["T"] == "b" for x in m)) if m["T"] == "b"]
    late_bars = [m for m in late.collect(3, lambda m: any(x["T"] == "b" for x in m)) if m["T"] == "b"]
    gap = ts(live_bars[0]["t"]) - ts(late_bars[0]["t"])
    assert dt.timedelta(minutes=14) <= gap <= dt.timedelta(minutes=16)
    live.close()
    late.close()


def test_halts_emit_status_messages(fast):
    account = new_account(fast)
    c = connect(fast, account)
    c.send({"action": "subscribe", "statuses": ["AAPL", "JPM"]})
    assert c.recv()[0]["T"] == "subscription"
    url = fast.url + "/sandbox/halt"
    for symbol, halted, code, text in (("AAPL", True, "H", "Trading Halt"), ("AAPL", False, "T", "Trading Resumption"),
                                       ("JPM", True, "2", "Trading Halt"), ("JPM", False, "3", "Resume")):
        resp = requests.post(url, json={"symbol": symbol, "halted": halted}, headers=admin_headers(fast), timeout=10)
        assert resp.status_code == 200 and resp.json()["streams"] == 1
        status = next(m for m in c.collect(3, lambda m: any(x["T"] == "s" for x in m)) if m["T"] == "s")
        assert (status["S"], status["sc"], status["sm"]) == (symbol, code, text)
        assert set(status) == {"T", "S", "sc", "sm", "rc", "rm", "t", "z"}
        assert status["z"] == ("C" if symbol == "AAPL" else "A")
    resp = requests.post(url, json={"symbol": "MSFT", "halted": True}, headers=admin_headers(fast), timeout=10)
    assert resp.json()["streams"] == 0                      # nobody listens to MSFT's statuses
    requests.post(url, json={"symbol": "MSFT", "halted": False}, headers=admin_headers(fast), timeout=10)
    assert requests.post(url, json={"symbol": "NOSUCH", "halted": True}, headers=admin_headers(fast),
                         timeout=10).status_code == 404
    assert requests.post(url, json={"symbol": "AAPL", "halted": "yes"}, headers=admin_headers(fast),
                         timeout=10).status_code == 422
    assert requests.post(url, json={"symbol": "AAPL", "halted": True}, headers=account.headers,
                         timeout=10).status_code == 403
    c.close()


# ---------------------------------------------------------------- flood, registry, slow clients

@pytest.mark.parametrize("use_msgpack", [False, True])
def test_flood_mode_pushes_stamped_batches_of_the_subscribed_symbols(fast, use_msgpack):
    account = new_account(fast)
    c = connect(fast, account, "/v2/iex?quote_rate=100000", use_msgpack=use_msgpack)
    c.send({"action": "subscribe", "quotes": ["AAPL", "MSFT"]})
    frames = []
    while sum(len(f) for f in frames) < 20_000:
        frames.append([m for m in c.recv() if m["T"] == "q"])
    stamps = []
    for frame in frames:
        if not frame:
            continue
        assert {m["S"] for m in frame} <= {"AAPL", "MSFT"}
        assert all(m["bp"] < m["ap"] and m["bs"] >= 100 for m in frame)
        assert len({str(m["t"]) for m in frame}) == 1           # one send time per batch
        stamps.append(ts(frame[0]["t"]))
    assert stamps == sorted(stamps)
    wall = dt.datetime.now(dt.timezone.utc)
    assert abs(wall - stamps[-1]) < dt.timedelta(minutes=1)     # wall-clock send times, not market time
    c.close()


def test_data_sockets_are_registered_and_can_be_dropped():
    with Sandbox(start="2024-03-06T15:00:00Z") as sb:
        account = new_account(sb)
        c = connect(sb, account)
        assert rest(sb, "/sandbox/status")["connections"]["data"] == 1
        resp = requests.post(sb.url + "/sandbox/streams/drop", json={"kind": "data"}, headers=admin_headers(sb),
                             timeout=10)
        assert resp.json() == {"dropped": 1}
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            c.recv()
        assert rest(sb, "/sandbox/status")["connections"]["data"] == 0


def test_a_client_that_stops_reading_gets_407_slow_client():
    with Sandbox(start="2024-03-06T15:00:00Z", chaos="slow=256KB", quote_rate=500_000) as sb:
        account = new_account(sb)
        c = connect(sb, account)
        c.ws.sock.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 65536)
        c.send({"action": "subscribe", "quotes": ["AAPL"]})
        time.sleep(1.5)                                     # do not read
        last = None
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:
                msgs = c.recv()
                if msgs and msgs[0]["T"] == "error":
                    last = msgs[0]
        assert last == {"T": "error", "code": 407, "msg": "slow client"}
