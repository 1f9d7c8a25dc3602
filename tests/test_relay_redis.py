"""Relays past one machine: a publishing relay, a real redis-server (with a password) on loopback,
and a relay fed from it with no upstream connection of its own."""

from __future__ import annotations

import concurrent.futures
import datetime
import ipaddress
import json
import shutil
import subprocess

import msgpack
import pytest
import redis
import requests
import websocket
from _data_stream_client import CONNECTED, RawDataStream
from _relay_helpers import Target, free_port, raw_client, start_relay
from _stream_helpers import wait_for
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import alpaca_nb as anb
from alpaca_nb.relay import Relay

TOKEN = "team-token-1234"


class TokenKeys:
    """How a client of the Redis-fed relay authenticates: any key id, the token as secret."""

    key_id, secret_key = "team", TOKEN


@pytest.fixture
def pair(account, redis_server):
    """(publishing relay, Redis-fed relay)."""
    publisher = start_relay(account, publish=redis_server.url)
    source = Relay(source=redis_server.url, token=TOKEN, port=0, discovery=False).start()
    try:
        yield publisher, source
    finally:
        source.stop()
        publisher.stop()


def by_key(messages):
    out = {}
    for m in messages:
        if m.get("T") in ("q", "t"):
            out.setdefault((m["T"], m["S"]), []).append(m)
    return out


def test_a_redis_fed_relay_serves_the_same_messages_as_a_direct_relay(account, pair):
    publisher, source = pair
    direct = raw_client(publisher, account)
    remote = raw_client(source, TokenKeys)
    want = {"quotes": ["AAPL", "MSFT"], "trades": ["AAPL"]}
    direct.send({"action": "subscribe", **want})
    ack_direct, _ = direct.until("subscription")
    # the direct client is read all along (a client left unread is cut off as too slow), until
    # it has what the remote one got last (on a loaded machine its thread may lag by seconds)
    remote_last: list[dict] = []

    def direct_has_it_all(ms) -> bool:
        if not remote_last:
            return False
        got = by_key(ms)
        return all(m in got.get(k, ()) for k, m in remote_last[0].items())

    read_direct = concurrent.futures.ThreadPoolExecutor(1).submit(direct.collect, 120, stop=direct_has_it_all)
    remote.send({"action": "subscribe", **want})
    ack_remote, _ = remote.until("subscription")
    assert ack_remote == ack_direct
    keys = {("q", "AAPL"), ("q", "MSFT"), ("t", "AAPL")}
    got_remote = by_key(remote.collect(60, stop=lambda ms: all(len(by_key(ms).get(k, ())) >= 3 for k in keys)))
    remote_last.append({k: v[-1] for k, v in got_remote.items()})
    got_direct = by_key(read_direct.result())
    assert set(got_remote) == keys
    for key, remote_msgs in got_remote.items():
        direct_msgs = got_direct.get(key, [])
        # the remote client started later: its messages are a contiguous run of the direct ones
        first = next(i for i, m in enumerate(direct_msgs) if m == remote_msgs[0])
        overlap = direct_msgs[first:first + len(remote_msgs)]
        assert remote_msgs[:len(overlap)] == overlap, key
        assert len(overlap) >= 2, key
    direct.close()
    remote.close()


def test_msgpack_clients_of_the_redis_fed_relay(account, pair):
    _, source = pair
    remote = raw_client(source, TokenKeys, use_msgpack=True)
    remote.send({"action": "subscribe", "quotes": ["AAPL"]})
    remote.until("subscription")
    got = remote.collect(60, stop=lambda ms: any(m.get("T") == "q" for m in ms))
    quotes = [m for m in got if m.get("T") == "q"]
    assert quotes and all(isinstance(m["t"], msgpack.Timestamp) and m["S"] == "AAPL" for m in quotes)
    remote.close()


def test_what_only_a_remote_client_wants_is_subscribed_upstream_and_released(account, pair):
    publisher, source = pair
    local = raw_client(publisher, account)
    local.send({"action": "subscribe", "quotes": ["AAPL"]})
    local.until("subscription")
    remote = raw_client(source, TokenKeys)
    remote.send({"action": "subscribe", "quotes": ["NVDA"], "bars": ["SPY"]})
    remote.until("subscription")
    upstream = publisher.data["v2/iex"].source
    assert upstream.server["quotes"] == {"AAPL", "NVDA"} and upstream.server["bars"] == {"SPY"}
    got = remote.collect(60, stop=lambda ms: any(m.get("S") == "NVDA" for m in ms))
    assert {m["S"] for m in got if m.get("T") == "q"} == {"NVDA"}
    remote.send({"action": "unsubscribe", "bars": ["SPY"]})
    ack, _ = remote.until("subscription")
    assert ack["bars"] == [] and ack["quotes"] == ["NVDA"]
    wait_for(lambda: "bars" not in upstream.server, what="SPY bars released upstream")
    remote.close()
    wait_for(lambda: upstream.server.get("quotes") == {"AAPL"}, what="NVDA released upstream")
    local.close()


def test_a_stopped_remote_relay_releases_its_symbols(account, redis_server):
    with start_relay(account, publish=redis_server.url) as publisher:
        source = Relay(source=redis_server.url, token=TOKEN, port=0, discovery=False).start()
        remote = raw_client(source, TokenKeys)
        remote.send({"action": "subscribe", "trades": ["AMD"]})
        remote.until("subscription")
        upstream = publisher.data["v2/iex"].source
        assert upstream.server["trades"] == {"AMD"}
        source.stop()                      # says goodbye on the control channel
        wait_for(lambda: not upstream.server, what="the remote relay's symbols released")


def test_the_redis_fed_relay_refuses_wrong_tokens(pair):
    _, source = pair
    c = RawDataStream(Target(source.url))
    assert c.recv() == CONNECTED
    c.send({"action": "auth", "key": "team", "secret": TOKEN + "x"})
    assert c.recv() == [{"T": "error", "code": 402, "msg": "auth failed"}]
    c.close()


def test_trade_updates_reach_clients_of_the_redis_fed_relay(account, pair, redis_server):
    _, source = pair
    spy = redis.Redis.from_url(redis_server.url).pubsub()
    spy.psubscribe("*")
    t = websocket.create_connection(source.url + "/stream", timeout=10)
    t.send(json.dumps({"action": "authenticate", "data": {"key_id": "team", "secret_key": TOKEN}}))
    assert json.loads(t.recv())["data"]["status"] == "authorized"
    t.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
    assert json.loads(t.recv()) == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    api = anb.connect(base_url=account.url, data_url=account.url, stream_url=account.stream_url,
                      key_id=account.key_id, secret_key=account.secret_key)
    order = api.buy("MSFT", 2)
    events = []
    while not events or events[-1] != "fill":
        message = json.loads(t.recv())
        assert message["stream"] == "trade_updates" and message["data"]["order"]["id"] == order.name
        events.append(message["data"]["event"])
    assert "new" in events
    t.close()
    # what went through Redis: the trade updates on their own channel, never a secret
    seen = []
    while (m := spy.get_message(timeout=1.0)) is not None or not seen:
        if m and m["type"] == "pmessage":
            seen.append((m["channel"].decode(), m["data"].decode()))
    spy.close()
    assert {c for c, d in seen if '"trade_updates"' in d} == {"alpaca-nb:trade_updates"}
    assert not [c for c, d in seen if account.secret_key in d or TOKEN in d]


def test_a_plan_limit_405_reaches_the_client_of_the_redis_fed_relay(sandbox, redis_server):
    """The publishing relay's keys are on the basic plan (30 trades + quotes symbols): a remote
    client asking past it gets Alpaca's 405 through Redis, with its subscriptions unchanged."""
    basic = requests.post(f"{sandbox.url}/sandbox/accounts", json={"data_plan": "basic"},
                          headers={"APCA-API-KEY-ID": sandbox.key_id,
                                   "APCA-API-SECRET-KEY": sandbox.secret_key}, timeout=10).json()

    class Basic:
        key_id, secret_key = basic["key_id"], basic["secret_key"]
        url, stream_url = sandbox.url, sandbox.stream_url

    with start_relay(Basic, publish=redis_server.url) as publisher:
        source = Relay(source=redis_server.url, token=TOKEN, port=0, discovery=False).start()
        try:
            remote = raw_client(source, TokenKeys)
            remote.send({"action": "subscribe", "quotes": ["AAPL"]})
            remote.until("subscription")
            remote.send({"action": "subscribe", "trades": [f"Z{i:03d}" for i in range(35)]})
            err, _ = remote.until("error", 30)
            assert err == {"T": "error", "code": 405, "msg": "symbol limit exceeded"}
            remote.send({"action": "subscribe", "quotes": ["MSFT"]})
            ack, _ = remote.until("subscription", 30)
            assert ack["trades"] == [] and ack["quotes"] == ["AAPL", "MSFT"]
            assert publisher.data["v2/iex"].source.server == {"quotes": {"AAPL", "MSFT"}}
            remote.close()
        finally:
            source.stop()


@pytest.fixture
def tls_redis_server(tmp_path):
    """A real redis-server speaking TLS only, on a free loopback port, with a self-signed
    certificate for 127.0.0.1 made here; yields the ``rediss://`` URL that trusts it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "redis.crt", tmp_path / "redis.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    port, password = free_port(), "relay-tls-pw"
    proc = subprocess.Popen([binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
                             "--tls-ca-cert-file", str(cert_file), "--tls-auth-clients", "no",
                             "--dir", str(tmp_path), "--save", "", "--appendonly", "no",
                             "--requirepass", password],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"rediss://:{password}@127.0.0.1:{port}/0?ssl_ca_certs={cert_file}"
    try:
        wait_for(lambda: proc.poll() is not None or _pings(url), 20, what="the TLS redis-server")
        if proc.poll() is not None:
            pytest.fail(f"redis-server with TLS did not start: {proc.stdout.read()[-400:]!r}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _pings(url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_timeout=2).ping()
    except (redis.RedisError, OSError):
        return False


def test_relays_through_a_tls_redis(account, tls_redis_server):
    """``rediss://``: the publishing relay and the Redis-fed relay talk to redis-server over TLS
    (the certificate checked against the CA given in the URL), and a quote goes through."""
    assert tls_redis_server.startswith("rediss://")
    with pytest.raises(redis.ConnectionError):        # plain text is refused: it is TLS for real
        redis.Redis.from_url(tls_redis_server.replace("rediss://", "redis://").split("?")[0],
                             socket_timeout=2).ping()
    with start_relay(account, publish=tls_redis_server):
        source = Relay(source=tls_redis_server, token=TOKEN, port=0, discovery=False).start()
        try:
            remote = raw_client(source, TokenKeys)
            remote.send({"action": "subscribe", "quotes": ["AAPL"]})
            remote.until("subscription", 30)
            got = remote.collect(60, stop=lambda ms: any(m.get("T") == "q" for m in ms))
            assert {m["S"] for m in got if m.get("T") == "q"} == {"AAPL"}
            remote.close()
        finally:
            source.stop()


def test_a_subscription_change_waits_for_redis_to_come_back(account, tmp_path):
    """Redis goes away (restarted here; it also drops a subscriber whose output buffer
    overflows): a client's subscribe on the Redis-fed relay is answered once Redis is back,
    the client stays connected and gets its old and new symbols."""
    port, password = free_port(), "relay-test-pw"
    url = f"redis://:{password}@127.0.0.1:{port}/0"

    def redis_up() -> subprocess.Popen:
        proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                 "--dir", str(tmp_path), "--save", "", "--appendonly", "no",
                                 "--requirepass", password], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _pings(url), 20, what="redis-server to start")
        return proc

    server = redis_up()
    try:
        with start_relay(account, publish=url) as publisher:
            source = Relay(source=url, token=TOKEN, port=0, discovery=False).start()
            try:
                remote = raw_client(source, TokenKeys)
                remote.send({"action": "subscribe", "quotes": ["AAPL"]})
                remote.until("subscription")
                assert remote.collect(60, stop=lambda ms: any(m.get("S") == "AAPL" for m in ms))
                server.terminate()
                server.wait(10)
                remote.send({"action": "subscribe", "quotes": ["NVDA"]})
                remote.collect(2.0)                   # (Redis is down meanwhile)
                server = redis_up()
                ack, _ = remote.until("subscription", 60)
                assert ack["quotes"] == ["AAPL", "NVDA"]
                wait_for(lambda: publisher.data["v2/iex"].source.server.get("quotes") == {"AAPL", "NVDA"}, 30,
                         what="NVDA subscribed upstream")
                got = remote.collect(60, stop=lambda ms: {"AAPL", "NVDA"} <= {m.get("S") for m in ms})
                assert {m["S"] for m in got if m.get("T") == "q"} == {"AAPL", "NVDA"}
                assert source.served["data"] == 1
                remote.close()
            finally:
                source.stop()
    finally:
        server.terminate()
        server.wait(10)
