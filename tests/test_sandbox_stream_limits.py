"""Connection limits of both WebSocket endpoints: one trade_updates connection per account, and a
server heartbeat that reaps half-dead clients so they do not hold an account's slot forever
(Alpaca's servers drop such connections after about 90 s; the sandbox's default is 60 s of pings
plus 30 s for the pong)."""

from __future__ import annotations

import time

import orjson
import pytest
import requests
import websocket
from conftest import admin_headers, new_account

from alpaca_nb.sandbox import Sandbox


def _trading_socket(account):
    ws = websocket.create_connection(account.stream_url + "/stream", timeout=5)
    ws.send(orjson.dumps({"action": "auth", "key": account.key_id, "secret": account.secret_key}).decode())
    return ws, orjson.loads(ws.recv())["data"]


def _connections(sb, kind):
    return requests.get(sb.url + "/sandbox/status", headers=admin_headers(sb), timeout=5).json()["connections"][kind]


def test_a_second_trade_updates_connection_of_the_same_account_is_refused_and_closed(sandbox):
    account = new_account(sandbox)
    first, reply = _trading_socket(account)
    try:
        assert reply == {"status": "authorized", "action": "authenticate"}
        second, refused = _trading_socket(account)
        assert refused == {"status": "unauthorized", "action": "authenticate",
                           "message": "connection limit exceeded"}
        opcode, frame = second.recv_data_frame()   # then the server closes it
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1008 and b"connection limit" in frame.data
        second.close()
        # another account has its own slot
        other, ok = _trading_socket(new_account(sandbox))
        assert ok["status"] == "authorized"
        other.close()
        # the first connection still works
        first.send(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
        assert orjson.loads(first.recv())["stream"] == "listening"
    finally:
        first.close()
    deadline = time.monotonic() + 5
    while True:  # once the holder has gone, the slot is free again
        third, reply = _trading_socket(account)
        third.close()
        if reply["status"] == "authorized" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reply["status"] == "authorized"


def test_header_authentication_cannot_take_a_held_slot(sandbox):
    account = new_account(sandbox)
    first, _ = _trading_socket(account)
    try:
        second = websocket.create_connection(account.stream_url + "/stream", timeout=5,
                                             header=[f"{k}: {v}" for k, v in account.headers.items()])
        second.send(orjson.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
        assert orjson.loads(second.recv())["data"] == {"status": "unauthorized", "action": "listen"}
        second.close()
    finally:
        first.close()


@pytest.mark.parametrize("path", ["/v2/iex", "/stream"])
def test_the_heartbeat_reaps_a_client_that_stopped_answering(path):
    with Sandbox(stream_heartbeat=0.4) as sb:
        account = new_account(sb)
        kind = "trading" if path == "/stream" else "data"
        ws = websocket.create_connection(sb.stream_url + path, timeout=5)
        if kind == "data":
            ws.recv()   # connected
        ws.send(orjson.dumps({"action": "auth", "key": account.key_id, "secret": account.secret_key}).decode())
        ws.recv()
        assert _connections(sb, kind) == 1
        # a client that never reads never answers the server's pings: it is dropped
        deadline = time.monotonic() + 5
        while _connections(sb, kind) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _connections(sb, kind) == 0
        ws.close()


def test_a_reading_client_is_kept_alive_by_answering_pings():
    with Sandbox(stream_heartbeat=0.3) as sb:
        account = new_account(sb)
        ws = websocket.create_connection(sb.stream_url + "/stream", timeout=0.2)
        ws.send(orjson.dumps({"action": "auth", "key": account.key_id, "secret": account.secret_key}).decode())
        ws.recv()
        end = time.monotonic() + 1.5
        while time.monotonic() < end:     # recv() answers pings as they come
            try:
                ws.recv()
            except websocket.WebSocketTimeoutException:
                pass
        assert _connections(sb, "trading") == 1
        ws.close()


def test_stream_heartbeat_is_validated():
    with pytest.raises(ValueError, match="stream_heartbeat"):
        Sandbox(stream_heartbeat=0)
