"""The sandbox's ``trade_updates`` WebSocket (``/stream``), spoken to with a plain WebSocket client:
authentication forms, ``listen``, event sequences and fields, framing and codecs, and the
connection registry.
"""

from __future__ import annotations

import json
import re
import time

import msgpack
import pytest
import requests
import websocket

from sandbox_trading_support import Api, admin, advance, frozen, new_api, ny, set_clock, ts

SYMBOL = "AAPL"
# RFC 3339 as Alpaca writes it (Go's RFC3339Nano): a fraction without trailing zeros, or none
NANO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z"
MICRO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,5}[1-9])?Z"


def connect(url: str, path: str = "/stream", **kw) -> websocket.WebSocket:
    ws = websocket.create_connection("ws" + url[4:] + path, timeout=10, **kw)
    return ws


def recv(ws: websocket.WebSocket, codec: str = "json") -> dict:
    opcode, data = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY          # paper sends JSON in binary frames
    return msgpack.unpackb(data, raw=False) if codec == "msgpack" else json.loads(data)


def send(ws: websocket.WebSocket, message: dict) -> None:
    ws.send(json.dumps(message))


def authed(api: Api, path: str = "/stream") -> websocket.WebSocket:
    ws = connect(api.url, path)
    send(ws, {"action": "auth", "key": api.key_id, "secret": api.secret_key})
    assert recv(ws) == {"stream": "authorization",
                        "data": {"status": "authorized", "action": "authenticate"}}
    send(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}})
    assert recv(ws) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    return ws


def events(ws: websocket.WebSocket, until: str, order_id: str | None = None) -> list[dict]:
    """Trade updates up to and including the first ``until`` event (of ``order_id``)."""
    out = []
    while True:
        msg = recv(ws)
        assert msg["stream"] == "trade_updates"
        out.append(msg["data"])
        if msg["data"]["event"] == until and order_id in (None, msg["data"]["order"]["id"]):
            return out


@pytest.fixture
def api(account) -> Api:
    return Api(account.url, account.key_id, account.secret_key)


# ---------------------------------------------------------------- handshake

def test_both_auth_forms_and_the_reply_comes_first(api):
    ws = connect(api.url)
    send(ws, {"action": "authenticate", "data": {"key_id": api.key_id, "secret_key": api.secret_key}})
    assert recv(ws) == {"stream": "authorization",
                        "data": {"status": "authorized", "action": "authenticate"}}
    ws.close()
    ws = authed(api, "/stream/")                    # the trailing-slash path ata uses
    ws.close()


def test_bad_credentials_and_listen_before_auth_are_unauthorized(api):
    ws = connect(api.url)
    send(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}})
    assert recv(ws) == {"stream": "authorization",
                        "data": {"status": "unauthorized", "action": "listen"}}
    send(ws, {"action": "auth", "key": api.key_id, "secret": "wrong"})
    assert recv(ws) == {"stream": "authorization",
                        "data": {"status": "unauthorized", "action": "authenticate"}}
    send(ws, {"action": "authenticate", "data": {}})
    reply = recv(ws)
    assert reply["data"]["status"] == "unauthorized"
    assert reply["data"]["message"] == "must provide key_id and secret_key or oauth_token"
    ws.close()


def test_listen_acknowledges_only_known_streams_and_empty_list_stops(api):
    ws = authed(api)
    send(ws, {"action": "listen", "data": {"streams": ["trade_updates", "account_updates"]}})
    assert recv(ws) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    send(ws, {"action": "listen", "data": {"streams": []}})
    assert recv(ws) == {"stream": "listening", "data": {"streams": []}}
    api.order(symbol=SYMBOL, qty=1)                   # no events now ...
    send(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}})
    assert recv(ws)["stream"] == "listening"          # ... the next frame is the ack
    ws.close()


def test_undecodable_frames_and_unknown_actions_get_an_error_and_the_socket_stays(api):
    ws = connect(api.url)
    ws.send("not json")
    assert recv(ws) == {"stream": "error", "data": {"error_message": "invalid message"}}
    ws.send_binary(b"\xc1")                              # neither msgpack (not asked for) nor JSON
    assert recv(ws) == {"stream": "error", "data": {"error_message": "invalid message"}}
    send(ws, ["auth"])                                   # JSON, but not a map
    assert recv(ws) == {"stream": "error", "data": {"error_message": "invalid message"}}
    send(ws, {"action": "subscribe", "data": {"streams": ["trade_updates"]}})
    assert recv(ws) == {"stream": "error", "data": {"error_message": "unrecognized action: 'subscribe'"}}
    send(ws, {"action": "auth", "key": api.key_id, "secret": api.secret_key})
    assert recv(ws)["data"]["status"] == "authorized"
    ws.close()


# ---------------------------------------------------------------- events

def test_fill_sequence_and_fields(api):
    ws = authed(api)
    placed = api.order(symbol=SYMBOL, qty=3)
    seq = events(ws, "fill", placed["id"])
    assert [e["event"] for e in seq] == ["accepted", "pending_new", "new", "fill"]
    assert [e["order"]["status"] for e in seq] == ["accepted", "pending_new", "new", "filled"]
    fill = seq[-1]
    assert set(fill) == {"event", "timestamp", "order", "execution_id", "price", "qty",
                         "position_qty"}
    assert fill["qty"] == "3" and fill["position_qty"] == "3"
    assert isinstance(fill["price"], str) and float(fill["price"]) > 0
    assert fill["order"]["filled_qty"] == "3" and fill["order"]["filled_avg_price"] == fill["price"]
    # as Alpaca's Go services write times: nanoseconds in events, microseconds on the order,
    # trailing zeros of the fraction trimmed
    for event in seq:
        assert re.fullmatch(NANO, event["timestamp"]), event["timestamp"]
        for name in ("created_at", "updated_at", "submitted_at"):
            assert re.fullmatch(MICRO, event["order"][name]), event["order"][name]
        assert ts(event["order"]["updated_at"]) == ts(event["timestamp"]) // 1000 * 1000
    assert re.fullmatch(MICRO, fill["order"]["filled_at"])
    for event in seq[:-1]:
        assert "execution_id" not in event
    ws.close()


def test_cancel_replace_and_only_this_accounts_events(sandbox, api):
    other = new_api(sandbox)
    ws = authed(api)
    other.order(symbol=SYMBOL, qty=1)                       # someone else's fill: not ours
    placed = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1, time_in_force="gtc")
    seq = events(ws, "new", placed["id"])
    assert {e["order"]["id"] for e in seq} == {placed["id"]}
    new = api.patch(f"/v2/orders/{placed['id']}", {"limit_price": 2}).json()
    seq = events(ws, "new", new["id"])
    assert [(e["event"], e["order"]["id"]) for e in seq] == [
        ("replaced", placed["id"]), ("accepted", new["id"]), ("pending_new", new["id"]),
        ("new", new["id"])]
    assert seq[0]["order"]["status"] == "replaced" and seq[0]["order"]["replaced_by"] == new["id"]
    assert seq[1]["order"]["replaces"] == placed["id"]
    assert api.delete(f"/v2/orders/{new['id']}").status_code == 204
    seq = events(ws, "canceled")
    assert seq[-1]["order"]["id"] == new["id"] and seq[-1]["order"]["canceled_at"]
    ws.close()


def test_partial_fills_expiry_and_bracket_legs_on_a_moving_clock():
    with frozen() as sb:
        api = new_api(sb, cash=10_000_000)
        ws = authed(api)
        big = api.order(symbol=SYMBOL, qty=4000, time_in_force="gtc")
        first = events(ws, "partial_fill", big["id"])
        assert [e["event"] for e in first] == ["accepted", "pending_new", "new", "partial_fill"]
        partial = first[-1]
        assert partial["order"]["status"] == "partially_filled"
        assert partial["position_qty"] == partial["qty"]
        seen = float(partial["qty"])
        while True:
            advance(sb, 30)
            more = [e for e in drain(ws, api) if e["order"]["id"] == big["id"]]
            for e in more:
                assert e["event"] in ("partial_fill", "fill")
                seen += float(e["qty"])
                assert float(e["position_qty"]) == seen
            if more and more[-1]["event"] == "fill":
                break
        assert seen == 4000
        day = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1)
        events(ws, "new", day["id"])
        expires = ts(api.get(f"/v2/orders/{day['id']}").json()["expires_at"])   # NY midnight
        advance(sb, (expires - ts(api.get("/v2/clock").json()["timestamp"])) / 1e9 + 1)
        expired = events(ws, "expired", day["id"])[-1]
        assert expired["order"]["status"] == "expired"
        bracket = api.order(symbol=SYMBOL, qty=1, order_class="bracket",
                            take_profit={"limit_price": 100000}, stop_loss={"stop_price": 1})
        seq = events(ws, "fill", bracket["id"])
        assert [e["event"] for e in seq] == ["accepted", "pending_new", "new", "fill"]
        legs = drain(ws, api)
        assert [e["event"] for e in legs] == ["new", "new"]
        assert {e["order"]["type"] for e in legs} == {"limit", "stop"}
        ws.close()


def drain(ws: websocket.WebSocket, api: Api) -> list[dict]:
    """Every trade update already sent: a fresh ``listen`` is acknowledged after them."""
    send(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}})
    out = []
    while True:
        msg = recv(ws)
        if msg["stream"] == "listening":
            return out
        out.append(msg["data"])


def test_accepted_before_the_open_then_new_at_the_open():
    with frozen(start=ny("2024-03-05", 9), market="calendar") as sb:
        api = new_api(sb)
        ws = authed(api)
        placed = api.order(symbol=SYMBOL, qty=1)
        assert [e["event"] for e in events(ws, "accepted", placed["id"])] == ["accepted"]
        set_clock(sb, ny("2024-03-05", 9, 45))
        seq = events(ws, "fill", placed["id"])
        assert [e["event"] for e in seq] == ["pending_new", "new", "fill"]
        ws.close()


# ---------------------------------------------------------------- codecs and registry

def test_msgpack_when_the_upgrade_asks_for_it(api):
    ws = connect(api.url, header=["Content-Type: application/msgpack"])
    ws.send_binary(msgpack.packb({"action": "auth", "key": api.key_id, "secret": api.secret_key}))
    assert recv(ws, "msgpack")["data"]["status"] == "authorized"
    ws.send_binary(msgpack.packb({"action": "listen", "data": {"streams": ["trade_updates"]}}))
    assert recv(ws, "msgpack")["stream"] == "listening"
    placed = api.order(symbol=SYMBOL, qty=1)
    while True:
        data = recv(ws, "msgpack")["data"]
        if data["event"] == "fill":
            assert data["order"]["id"] == placed["id"] and data["qty"] == "1"
            break
    ws.close()


def trading_connections(sb) -> int:
    status = requests.get(f"{sb.url}/sandbox/status", headers=admin(sb), timeout=10).json()
    return status["connections"]["trading"]


def test_sockets_are_registered_and_dropped_by_the_admin_route():
    with frozen() as sb:
        api = new_api(sb)
        ws = authed(api)
        assert trading_connections(sb) == 1
        ws.close()
        for _ in range(1000):                # the server notices the close frame
            if trading_connections(sb) == 0:
                break
            time.sleep(0.01)
        assert trading_connections(sb) == 0
        ws = authed(api)
        dropped = requests.post(f"{sb.url}/sandbox/streams/drop", json={"kind": "trading"},
                                headers=admin(sb), timeout=10).json()
        assert dropped == {"dropped": 1}
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            for _ in range(3):
                ws.recv()
        assert trading_connections(sb) == 0
