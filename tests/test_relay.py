"""The stream relay against a real sandbox, through real loopback sockets: Alpaca's protocol to
each client, reference-counted subscriptions, plan errors for the asking client only, slow
clients, security, discovery by connect() and the CLI.

(The multi-process proof with upstream drops is in test_relay_proof.py, Redis in
test_relay_redis.py.)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import msgpack
import pytest
import requests
import websocket
from _data_stream_client import CONNECTED, RawDataStream
from _http_proxy import RecordingProxy
from _relay_helpers import Target, raw_client, settings_for, start_relay
from _stream_helpers import server_connections, wait_for
from conftest import new_account

import alpaca_nb as anb
from alpaca_nb import _config
from alpaca_nb.relay import Relay, RelayError
from alpaca_nb.sandbox import Sandbox


@pytest.fixture(scope="module")
def own_sandbox():
    """A sandbox of this module's own, so its connection counts are this module's (in a
    session, at real speed: the market data follows NYSE sessions)."""
    with Sandbox(seed=7, start="2024-03-06T15:00:00Z") as sb:
        yield sb


@pytest.fixture
def acct(own_sandbox):
    return new_account(own_sandbox)


def symbols_of(messages, kind=None) -> set[str]:
    return {m["S"] for m in messages if "S" in m and (kind is None or m["T"] == kind)}


def data_messages(client, seconds, kinds=("q", "t"), until=None):
    """Data messages received within ``seconds``, or until every (T, S) of ``until`` came."""
    stop = None
    if until is not None:
        def stop(ms):
            return until <= {(m.get("T"), m.get("S")) for m in ms}
    return [m for m in client.collect(seconds, stop=stop) if m.get("T") in kinds]


def upstream_subs(relay: Relay, path: str = "v2/iex") -> dict[str, set[str]]:
    return relay.data[path].source.server


# ------------------------------------------------------------------ subscriptions

def test_each_client_gets_its_own_symbols_and_acks_over_one_upstream_connection(own_sandbox, acct):
    with start_relay(acct) as relay:
        a = raw_client(relay, acct)
        b = raw_client(relay, acct, use_msgpack=True)
        a.send({"action": "subscribe", "quotes": ["AAPL"], "trades": ["MSFT"]})
        ack_a, _ = a.until("subscription")
        assert ack_a["quotes"] == ["AAPL"] and ack_a["trades"] == ["MSFT"]
        assert ack_a["corrections"] == ["MSFT"] and ack_a["cancelErrors"] == ["MSFT"]
        assert ack_a["bars"] == [] and ack_a["dailyBars"] == []
        b.send({"action": "subscribe", "quotes": ["AAPL", "NVDA"]})
        ack_b, _ = b.until("subscription")
        assert ack_b["quotes"] == ["AAPL", "NVDA"] and ack_b["trades"] == []
        # the one upstream connection carries the union
        assert upstream_subs(relay)["quotes"] == {"AAPL", "NVDA"}
        assert upstream_subs(relay)["trades"] == {"MSFT"}
        want_a, want_b = {("q", "AAPL"), ("t", "MSFT")}, {("q", "AAPL"), ("q", "NVDA")}
        got_a = data_messages(a, 30, until=want_a)
        got_b = data_messages(b, 30, until=want_b)
        assert {(m["T"], m["S"]) for m in got_a} == want_a
        assert {(m["T"], m["S"]) for m in got_b} == want_b
        # msgpack framing as Alpaca's: binary frames, Timestamp ext -1, T first
        assert all(isinstance(f, bytes) for f in b.frames)
        assert all(isinstance(m["t"], msgpack.Timestamp) and next(iter(m)) == "T" for m in got_b)
        assert all(isinstance(m["t"], str) and m["t"].endswith("Z") for m in got_a)
        conns = server_connections(own_sandbox)
        assert conns == {"data": 1, "trading": 1}
        a.close()
        b.close()


def test_a_symbol_is_unsubscribed_upstream_when_its_last_client_leaves(acct):
    with start_relay(acct) as relay:
        a = raw_client(relay, acct)
        b = raw_client(relay, acct)
        a.send({"action": "subscribe", "quotes": ["AAPL", "AMD"]})
        a.until("subscription")
        b.send({"action": "subscribe", "quotes": ["AAPL"], "bars": ["SPY"]})
        b.until("subscription")
        a.send({"action": "unsubscribe", "quotes": ["AAPL"]})
        ack, _ = a.until("subscription")
        assert ack["quotes"] == ["AMD"]
        # b still wants AAPL: it stays upstream
        assert upstream_subs(relay)["quotes"] == {"AAPL", "AMD"}
        assert "AAPL" not in symbols_of(data_messages(a, 1.5))
        b.close()
        wait_for(lambda: upstream_subs(relay).get("quotes") == {"AMD"} and "bars" not in upstream_subs(relay),
                 what="b's symbols released upstream")
        a.close()
        wait_for(lambda: not upstream_subs(relay), what="every symbol released upstream")


def test_subscribing_what_others_already_have_is_answered_with_the_clients_own_set(acct):
    with start_relay(acct) as relay:
        a = raw_client(relay, acct)
        b = raw_client(relay, acct)
        a.send({"action": "subscribe", "quotes": ["*"]})
        a.until("subscription")
        b.send({"action": "subscribe", "quotes": ["AAPL"]})
        ack, _ = b.until("subscription")
        assert ack["quotes"] == ["AAPL"]
        got_b = b.collect(30, stop=lambda ms: any(m.get("S") == "AAPL" for m in ms))
        assert symbols_of(got_b) == {"AAPL"}
        got_a = a.collect(30, stop=lambda ms: len(symbols_of(ms)) > 1)
        assert len(symbols_of(got_a)) > 1
        a.close()
        b.close()


def test_over_the_plan_limit_only_the_asking_client_gets_405(own_sandbox):
    basic = requests.post(f"{own_sandbox.url}/sandbox/accounts", json={"data_plan": "basic"},
                          headers={"APCA-API-KEY-ID": own_sandbox.key_id,
                                   "APCA-API-SECRET-KEY": own_sandbox.secret_key}, timeout=10).json()

    class Acct:
        key_id, secret_key = basic["key_id"], basic["secret_key"]
        url, stream_url = own_sandbox.url, own_sandbox.stream_url

    with start_relay(Acct) as relay:
        a = raw_client(relay, Acct)
        b = raw_client(relay, Acct)
        first = ["AAPL", "MSFT", "NVDA", "AMD", "SPY", "QQQ", "TSLA", "AMZN", "GOOG", "META"]
        a.send({"action": "subscribe", "quotes": first * 1, "trades": first[:5]})
        ack_a, _ = a.until("subscription")
        assert ack_a["quotes"] == first
        many = [f"Z{i:03d}" for i in range(25)]
        b.send({"action": "subscribe", "trades": many})
        err, _ = b.until("error")
        assert err == {"T": "error", "code": 405, "msg": "symbol limit exceeded"}
        # b's state is unchanged, a is not disturbed and keeps its data
        b.send({"action": "subscribe", "quotes": ["AAPL"]})
        ack_b, _ = b.until("subscription")
        assert ack_b["trades"] == [] and ack_b["quotes"] == ["AAPL"]
        got = a.collect(2)
        assert not [m for m in got if m.get("T") == "error"]
        assert symbols_of(got, "q") <= set(first) and symbols_of(got, "q")
        assert upstream_subs(relay)["quotes"] == set(first)
        a.close()
        b.close()


def test_protocol_errors_are_alpacas(acct):
    with start_relay(acct) as relay:
        c = RawDataStream(Target(relay.url))
        assert c.recv() == CONNECTED
        c.send({"action": "subscribe", "trades": ["AAPL"]})
        assert c.recv() == [{"T": "error", "code": 401, "msg": "not authenticated"}]
        c.ws.send("not json")
        assert c.recv() == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
        assert c.auth(acct) == [{"T": "success", "msg": "authenticated"}]
        assert c.auth(acct) == [{"T": "error", "code": 403, "msg": "already authenticated"}]
        c.send({"action": "subscribe", "trades": ["not a symbol!"]})
        assert c.recv() == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
        c.send({"action": "subscribe", "orderbooks": ["AAPL"]})
        assert c.recv() == [{"T": "error", "code": 410, "msg": "invalid subscribe action for this feed"}]
        c.send({"action": "subscribe", "trades": ["AAPL"]})
        assert c.until("subscription")[0]["trades"] == ["AAPL"]
        c.close()


def test_wrong_keys_are_refused_with_alpacas_auth_errors(acct):
    with start_relay(acct) as relay:
        c = RawDataStream(Target(relay.url))
        assert c.recv() == CONNECTED
        c.send({"action": "auth", "key": acct.key_id, "secret": acct.secret_key + "x"})
        assert c.recv() == [{"T": "error", "code": 402, "msg": "auth failed"}]
        c.send({"action": "auth", "key": "PKOTHER", "secret": acct.secret_key})
        assert c.recv() == [{"T": "error", "code": 402, "msg": "auth failed"}]
        c.send({"action": "subscribe", "trades": ["AAPL"]})
        assert c.recv() == [{"T": "error", "code": 401, "msg": "not authenticated"}]
        c.close()
        t = websocket.create_connection(relay.url + "/stream", timeout=10)
        t.send(json.dumps({"action": "authenticate", "data": {"key_id": acct.key_id, "secret_key": "wrong"}}))
        assert json.loads(t.recv()) == {"stream": "authorization",
                                        "data": {"status": "unauthorized", "action": "authenticate"}}
        t.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert json.loads(t.recv()) == {"stream": "authorization",
                                        "data": {"status": "unauthorized", "action": "listen"}}
        t.close()
        # and through alpaca_nb: a clear AuthenticationError, nothing streams
        api = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=relay.url,
                          key_id=acct.key_id, secret_key="wrong-secret")
        with pytest.raises(anb.AuthenticationError, match="auth failed"):
            api.stream(quotes=["AAPL"])


def test_a_relay_started_with_bad_keys_says_so():
    with Sandbox(seed=7) as sb:
        class Bad:
            key_id, secret_key, url, stream_url = "NOPE", "nope-secret", sb.url, sb.stream_url

        with pytest.raises(RelayError, match="refused the keys") as info:
            start_relay(Bad)
        assert "nope-secret" not in str(info.value)


def test_header_auth_and_auth_timeout(acct):
    with start_relay(acct) as relay:
        c = RawDataStream(Target(relay.url), headers=[f"APCA-API-KEY-ID: {acct.key_id}",
                                                      f"APCA-API-SECRET-KEY: {acct.secret_key}"])
        assert c.recv() == CONNECTED
        assert c.recv() == [{"T": "success", "msg": "authenticated"}]
        c.close()


def test_trade_updates_reach_every_listening_client_in_their_codec(acct):
    with start_relay(acct) as relay:
        clients = []
        for use_msgpack in (False, True):
            header = ["Content-Type: application/msgpack"] if use_msgpack else []
            t = websocket.create_connection(relay.url + "/stream", timeout=10, header=header)
            auth = {"action": "auth", "key": acct.key_id, "secret": acct.secret_key}
            t.send_binary(msgpack.packb(auth)) if use_msgpack else t.send(json.dumps(auth))
            decode = msgpack.unpackb if use_msgpack else json.loads
            assert decode(t.recv()) == {"stream": "authorization",
                                        "data": {"status": "authorized", "action": "authenticate"}}
            listen = {"action": "listen", "data": {"streams": ["trade_updates"]}}
            t.send_binary(msgpack.packb(listen)) if use_msgpack else t.send(json.dumps(listen))
            assert decode(t.recv()) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
            clients.append((t, decode))
        api = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                          key_id=acct.key_id, secret_key=acct.secret_key)
        order = api.buy("AAPL", 3)
        for t, decode in clients:
            events = []
            while not events or events[-1]["data"]["event"] != "fill":
                message = decode(t.recv())
                assert message["stream"] == "trade_updates"
                assert message["data"]["order"]["id"] == order.name
                events.append(message)
            t.close()


def test_a_slow_client_is_cut_off_with_407_and_the_others_keep_streaming(own_sandbox, acct):
    flood = f"{acct.stream_url}?quote_rate=40000"
    many = ["AAPL", "MSFT", "NVDA", "AMD", "SPY", "QQQ", "TSLA", "AMZN", "GOOG", "META"]
    with start_relay(acct, stream_url=flood, slow_client_bytes=256 * 1024) as relay:
        slow = RawDataStream(Target(relay.url))
        slow.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert slow.recv() == CONNECTED
        slow.auth(acct)
        slow.send({"action": "subscribe", "quotes": many})
        fast = raw_client(relay, acct)           # a tenth of the flood: it keeps up
        fast.send({"action": "subscribe", "quotes": ["AAPL"]})
        fast.until("subscription")
        endpoint = relay.data["v2/iex"]
        clients = wait_for(lambda: [c for c in endpoint.clients if c.authenticated], what="clients")
        # the slow client reads nothing while the fast one keeps reading
        deadline = time.monotonic() + 120
        while not any(c.outbox.cut for c in clients) and time.monotonic() < deadline:
            fast.collect(0.2)
        cut = [c for c in clients if c.outbox.cut]
        assert len(cut) == 1 and cut[0].subs["quotes"].keys() == set(many), "the slow client was not cut off"
        wait_for(lambda: cut[0] not in endpoint.clients, what="the slow client's connection to end")
        # the other client goes on, and the union lost nothing it needs
        assert data_messages(fast, 30, until={("q", "AAPL")}), "the fast client stopped receiving"
        wait_for(lambda: upstream_subs(relay).get("quotes") == {"AAPL"}, what="the slow client's symbols released")
        fast.close()
        slow.ws.shutdown()


def test_the_relay_binds_loopback_unless_told(acct):
    relay = Relay(settings_for(acct), port=0, discovery=False)
    assert relay.host == "127.0.0.1"
    with relay:
        addresses = relay._runner.addresses
        assert addresses and all(a[0] == "127.0.0.1" for a in addresses)
        status = requests.get(f"http://127.0.0.1:{relay.port}/relay/status", timeout=10).json()
        assert status["upstreams"]["v2/iex"]["state"] == "connected"
        assert status["upstreams"]["stream"]["state"] == "connected"
        assert acct.secret_key not in json.dumps(status)


def test_connect_finds_a_running_relay_and_status_says_so(acct, relay_dir):
    with start_relay(acct, discovery=True) as relay:
        files = list(relay_dir.iterdir())
        assert len(files) == 1
        info = json.loads(files[0].read_text())
        assert info["port"] == relay.port and info["pid"] == os.getpid()
        text = files[0].read_text()
        assert acct.secret_key not in text and acct.key_id not in text
        assert oct(files[0].stat().st_mode & 0o777) == oct(0o600)
        api = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                          key_id=acct.key_id, secret_key=acct.secret_key)
        assert api.settings.relay == relay.url
        with api.stream(quotes=["AAPL"]) as stream:
            assert str(stream.status) == f"connected via relay {relay.url}"
            wait_for(lambda: stream.quotes.df.shape[0] == 1, what="a quote through the relay")
        # other keys do not use this relay
        other = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                            key_id="SOMEONEELSE", secret_key="x")
        assert other.settings.relay is None
    assert list(relay_dir.iterdir()) == []
    api = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                      key_id=acct.key_id, secret_key=acct.secret_key)
    assert api.settings.relay is None


def test_clients_refill_their_table_from_rest_when_the_relays_upstream_comes_back(own_sandbox, acct, relay_dir):
    """The relay's upstream drops and reconnects while its client stays connected: the client
    refills its quote and trade tables from REST (as after a reconnect of its own), since what
    came during the gap is lost."""
    with start_relay(acct, discovery=True) as relay, RecordingProxy(acct.url) as rest:
        api = anb.connect(base_url=acct.url, data_url=rest.url, stream_url=acct.stream_url,
                          key_id=acct.key_id, secret_key=acct.secret_key)
        with api.stream(quotes=["AAPL"], trades=["MSFT"]) as stream:
            assert str(stream.status) == f"connected via relay {relay.url}"
            wait_for(lambda: rest.count("GET", "/v2/stocks/quotes/latest")
                     and rest.count("GET", "/v2/stocks/trades/latest"), what="the first refill")
            quotes, trades = (rest.count("GET", "/v2/stocks/quotes/latest"),
                              rest.count("GET", "/v2/stocks/trades/latest"))
            upstream = relay.data["v2/iex"].source
            connections = upstream.connections
            requests.post(f"{own_sandbox.url}/sandbox/streams/drop", json={"kind": "data"}, timeout=10,
                          headers={"APCA-API-KEY-ID": own_sandbox.key_id,
                                   "APCA-API-SECRET-KEY": own_sandbox.secret_key})
            wait_for(lambda: upstream.connections > connections, 30, what="the relay's upstream to reconnect")
            wait_for(lambda: rest.count("GET", "/v2/stocks/quotes/latest") > quotes
                     and rest.count("GET", "/v2/stocks/trades/latest") > trades, 30,
                     what="the refill after the relay's reconnect")
            assert stream.stats["data_connections"] == 1      # the client itself never reconnected
            asked = rest.matching("GET", "/v2/stocks/quotes/latest")
            assert all(q["symbols"] == "AAPL" and q["feed"] == "iex" for _, q in asked), asked


def test_stale_discovery_files_are_ignored(acct, relay_dir):
    settings = settings_for(acct)
    relay_dir.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    info = {"url": "ws://127.0.0.1:9", "port": 9, "pid": int(dead.stdout), "feeds": ["iex"],
            "key": _config.key_fingerprint(acct.key_id), "stream_url": settings.stream_url,
            "trading_stream_url": settings.trading_stream_url}
    (relay_dir / "relay-9.json").write_text(json.dumps(info))
    info.update(pid=os.getpid())          # a live process, but nothing listens on the port
    (relay_dir / "relay-10.json").write_text(json.dumps({**info, "port": 10, "url": "ws://127.0.0.1:10"}))
    api = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                      key_id=acct.key_id, secret_key=acct.secret_key)
    assert api.settings.relay is None


def test_the_environment_variable_names_the_relay_or_turns_discovery_off(acct, relay_dir, monkeypatch):
    with start_relay(acct, discovery=True) as relay:
        monkeypatch.setenv("ALPACA_NB_RELAY", "off")
        api = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                          key_id=acct.key_id, secret_key=acct.secret_key)
        assert api.settings.relay is None
        monkeypatch.setenv("ALPACA_NB_RELAY", relay.url)
        api = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                          key_id=acct.key_id, secret_key=acct.secret_key)
        assert api.settings.relay == relay.url
        assert api.settings.trading_stream_url == relay.url + "/stream"
        monkeypatch.setenv("ALPACA_NB_RELAY", "127.0.0.1:8766")
        with pytest.raises(ValueError, match="ALPACA_NB_RELAY"):
            anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                        key_id=acct.key_id, secret_key=acct.secret_key)


def test_bad_relay_arguments_are_named(acct, monkeypatch):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("ALPACA_NB_RELAY_TOKEN", raising=False)
    settings = settings_for(acct)
    with pytest.raises(ValueError, match="feed must be one of"):
        Relay(settings, feed="nasdaq")
    with pytest.raises(ValueError, match="not both"):
        Relay(settings, publish="redis://127.0.0.1:1", source="redis://127.0.0.1:1")
    with pytest.raises(ValueError, match="redis://"):
        Relay(settings, publish="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="port"):
        Relay(settings, port=70000)
    with pytest.raises(ValueError, match="token"):
        Relay(source="redis://127.0.0.1:1")


def test_the_cli_relay_runs_until_sigterm_and_cleans_up(acct, relay_dir, tmp_path):
    env = {**os.environ, "APCA_API_KEY_ID": acct.key_id, "APCA_API_SECRET_KEY": acct.secret_key,
           "APCA_API_BASE_URL": acct.url, "APCA_API_DATA_URL": acct.url,
           "APCA_API_STREAM_URL": acct.stream_url, "ALPACA_NB_RELAY_DIR": str(relay_dir)}
    log_file = tmp_path / "relay.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "relay", "--port", "0"],
                                env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("alpaca-nb relay listening on ws://127.0.0.1:"), line
        url = line.split()[4]
        wait_for(lambda: list(relay_dir.glob("relay-*.json")), what="the discovery file")
        api = anb.connect(base_url=acct.url, data_url=acct.url, stream_url=acct.stream_url,
                          key_id=acct.key_id, secret_key=acct.secret_key)
        assert api.settings.relay == url
        with api.stream(trades=["AAPL"]) as stream:
            wait_for(lambda: stream.trades.df.shape[0] == 1, what="a trade through the CLI relay")
        proc.terminate()
        assert proc.wait(15) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(relay_dir.glob("relay-*.json")) == []
    assert acct.secret_key not in log_file.read_text()


def test_cli_help_documents_the_relay():
    out = subprocess.run([sys.executable, "-m", "alpaca_nb.cli", "relay", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for needle in ("--publish", "--source", "url_override", "SIGTERM", "ACL", "127.0.0.1"):
        assert needle in out
