"""The sandbox's shared machinery: authentication, rate limiting, chaos, admin routes, the
Sandbox thread wrapper and the ``alpaca-nb sandbox`` command. All through real sockets."""

from __future__ import annotations

import base64
import collections
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from alpaca_nb.sandbox import Chaos, Sandbox

from conftest import admin_headers, new_account


def _get(url, headers=None, **kw):
    return requests.get(url, headers=headers, timeout=10, **kw)


# ---------------------------------------------------------------- authentication

@pytest.mark.parametrize("headers", [
    {},
    {"APCA-API-KEY-ID": "SANDBOXKEYID"},
    {"APCA-API-KEY-ID": "SANDBOXKEYID", "APCA-API-SECRET-KEY": "wrong"},
    {"APCA-API-KEY-ID": "NOSUCHKEY", "APCA-API-SECRET-KEY": "sandbox-secret-key"},
])
def test_rest_refuses_missing_or_wrong_keys_with_alpacas_401(sandbox, headers):
    for path in ("/v2/account", "/v2/stocks/bars?symbols=AAPL&timeframe=1Day", "/sandbox/status"):
        resp = _get(sandbox.url + path, headers)
        assert resp.status_code == 401, path
        assert resp.json() == {"code": 40110000, "message": "request is not authorized"}


def test_basic_auth_is_accepted_like_the_apca_headers(sandbox, account):
    token = base64.b64encode(f"{account.key_id}:{account.secret_key}".encode()).decode()
    resp = _get(sandbox.url + "/v2/account", {"Authorization": f"Basic {token}"})
    assert resp.status_code == 200
    assert resp.json()["id"] == account.account_id


def test_each_account_sees_only_itself(sandbox):
    a, b = new_account(sandbox, cash=1234.5), new_account(sandbox)
    assert a.account_id != b.account_id and a.key_id != b.key_id
    assert _get(sandbox.url + "/v2/account", a.headers).json()["cash"] == "1234.5"
    assert _get(sandbox.url + "/v2/account", b.headers).json()["id"] == b.account_id


def test_account_creation_validates_and_refuses_a_taken_key(sandbox):
    url = sandbox.url + "/sandbox/accounts"
    bad = requests.post(url, json={"cash": "lots"}, headers=admin_headers(sandbox), timeout=10)
    assert bad.status_code == 422 and "cash" in bad.json()["message"]
    taken = requests.post(url, json={"key_id": sandbox.key_id, "secret_key": "x"},
                          headers=admin_headers(sandbox), timeout=10)
    assert taken.status_code == 422 and "already in use" in taken.json()["message"]


def test_unknown_paths_get_a_json_404(sandbox):
    resp = _get(sandbox.url + "/v2/no-such-thing", admin_headers(sandbox))
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("application/json")


# ---------------------------------------------------------------- rate limiting

def test_rate_limit_headers_count_down_then_429_with_alpacas_body():
    with Sandbox(rate_limit=5) as sb:
        headers = admin_headers(sb)
        remaining = []
        for _ in range(5):
            resp = _get(sb.url + "/v2/clock", headers)
            assert resp.status_code == 200
            assert resp.headers["X-RateLimit-Limit"] == "5"
            remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
            reset = int(resp.headers["X-RateLimit-Reset"])
        assert remaining == [4, 3, 2, 1, 0]
        assert 0 < reset - time.time() <= 61
        refused = _get(sb.url + "/v2/clock", headers)
        assert refused.status_code == 429
        assert refused.json() == {"code": 42910000, "message": "rate limit exceeded"}
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        # the limit is per key: another account is unaffected
        other = new_account(sb)
        assert _get(sb.url + "/v2/clock", other.headers).status_code == 200


def test_without_a_rate_limit_no_rate_headers_are_sent(sandbox):
    resp = _get(sandbox.url + "/v2/clock", admin_headers(sandbox))
    assert "X-RateLimit-Limit" not in resp.headers


# ---------------------------------------------------------------- chaos

def test_chaos_spec_parsing_and_its_errors():
    chaos = Chaos.parse("503=0.1, 429=0.05,drop=0.1,lose=0.2,latency=5-10ms,scope=/v2/orders,"
                        "methods=POST|patch,ws_drop=30s,slow=64KB,seed=3")
    assert chaos.statuses == ((503, 0.1), (429, 0.05))
    assert (chaos.drop, chaos.lose, chaos.latency_ms) == (0.1, 0.2, (5.0, 10.0))
    assert chaos.scope == "/v2/orders" and chaos.methods == {"POST", "PATCH"}
    assert (chaos.ws_drop, chaos.slow_bytes, chaos.seed) == (30.0, 65536, 3)
    assert not Chaos.parse("").active
    for bad, words in [("nonsense=1", "unknown chaos key"), ("503", "key=value"),
                       ("418=0.5", "must be one of"), ("drop=2", "between 0 and 1"),
                       ("500=0.6,503=0.6", "more than 1"), ("latency=fast", "latency")]:
        with pytest.raises(ValueError, match=words):
            Chaos.parse(bad)


def test_chaos_answers_statuses_drops_and_loses_responses_in_the_right_proportions():
    # 200 GETs under 20% 503, 20% dropped before handling, 20% handled but answer lost
    with Sandbox(chaos="503=0.2,drop=0.2,lose=0.2,seed=11") as sb:
        headers = admin_headers(sb)
        seen = collections.Counter()
        for _ in range(200):
            try:
                resp = requests.get(sb.url + "/v2/clock", headers=headers, timeout=10)
                seen[resp.status_code] += 1
                if resp.status_code == 503:
                    assert resp.json() == {"code": 50300000, "message": "service unavailable"}
            except requests.ConnectionError:
                seen["no answer"] += 1
        assert seen.keys() == {200, 503, "no answer"}
        assert 20 <= seen[503] <= 60
        assert 50 <= seen["no answer"] <= 110
        assert seen[200] + seen[503] + seen["no answer"] == 200


def test_lost_answers_still_change_state_and_dropped_requests_do_not():
    """'lose' is the dangerous case for order submission: the server acted, the client never
    heard. 'drop' means nothing happened. Scoped to the accounts route so setup is unaffected."""
    with Sandbox(chaos="lose=1,scope=/sandbox/none") as sb:
        headers = admin_headers(sb)
        set_chaos = lambda spec: requests.post(sb.url + "/sandbox/chaos", json={"spec": spec},  # noqa: E731
                                               headers=headers, timeout=10).raise_for_status()
        body = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}
        set_chaos("lose=1,scope=/v2/orders,methods=POST")
        with pytest.raises(requests.ConnectionError):
            requests.post(sb.url + "/v2/orders", json=dict(body, client_order_id="lost-1"),
                          headers=headers, timeout=10)
        set_chaos("drop=1,scope=/v2/orders,methods=POST")
        with pytest.raises(requests.ConnectionError):
            requests.post(sb.url + "/v2/orders", json=dict(body, client_order_id="dropped-1"),
                          headers=headers, timeout=10)
        set_chaos("")
        by_id = sb.url + "/v2/orders:by_client_order_id"
        assert _get(by_id, headers, params={"client_order_id": "lost-1"}).status_code == 200
        assert _get(by_id, headers, params={"client_order_id": "dropped-1"}).status_code == 404


def test_chaos_scope_and_methods_spare_everything_else():
    with Sandbox(chaos="503=1,scope=/v2/orders,methods=POST") as sb:
        headers = admin_headers(sb)
        assert _get(sb.url + "/v2/orders", headers).status_code == 200
        assert _get(sb.url + "/v2/clock", headers).status_code == 200
        resp = requests.post(sb.url + "/v2/orders", headers=headers, timeout=10,
                             json={"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market",
                                   "time_in_force": "day"})
        assert resp.status_code == 503


def test_chaos_429_carries_retry_after_and_latency_delays_answers():
    with Sandbox(chaos="429=1,latency=300ms,scope=/v2/clock") as sb:
        t0 = time.perf_counter()
        resp = _get(sb.url + "/v2/clock", admin_headers(sb))
        assert time.perf_counter() - t0 >= 0.3
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"


def test_chaos_can_be_changed_at_run_time_only_by_the_default_key(sandbox, account):
    resp = requests.post(sandbox.url + "/sandbox/chaos", json={"spec": "503=1"},
                         headers=account.headers, timeout=10)
    assert resp.status_code == 403
    resp = requests.post(sandbox.url + "/sandbox/chaos", json={"spec": "bogus=1"},
                         headers=admin_headers(sandbox), timeout=10)
    assert resp.status_code == 422 and "unknown chaos key" in resp.json()["message"]
    assert _get(sandbox.url + "/sandbox/status", admin_headers(sandbox)).json()["chaos"] == ""


# ---------------------------------------------------------------- virtual clock

def test_virtual_clock_start_speed_and_forward_jumps():
    with Sandbox(start="2024-03-15T14:00:00Z", speed=60) as sb:
        headers = admin_headers(sb)
        now = _get(sb.url + "/sandbox/status", headers).json()["now"]
        assert now.startswith("2024-03-15T14:0")
        resp = requests.post(sb.url + "/sandbox/clock", json={"advance": 3600}, headers=headers, timeout=10)
        assert resp.json()["now"].startswith("2024-03-15T15:0")
        resp = requests.post(sb.url + "/sandbox/clock", json={"set": "2024-03-18T13:30:00Z"},
                             headers=headers, timeout=10)
        assert resp.json()["now"].startswith("2024-03-18T13:30")
        back = requests.post(sb.url + "/sandbox/clock", json={"set": "2024-01-01T00:00:00Z"},
                             headers=headers, timeout=10)
        assert back.status_code == 422 and "forward" in back.json()["message"]
        clock = _get(sb.url + "/v2/clock", headers).json()
        assert clock["timestamp"].startswith("2024-03-18T09:3") and clock["timestamp"].endswith("-04:00")


# ---------------------------------------------------------------- lifecycle

def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_sandbox_starts_on_a_free_port_stops_promptly_and_frees_it():
    threads_before = set(threading.enumerate())
    sb = Sandbox(seed=3)
    assert not sb.running and "stopped" in repr(sb)
    with pytest.raises(RuntimeError, match="not running"):
        sb.url
    sb.start()
    port = sb.port
    assert sb.running and sb.url == f"http://127.0.0.1:{port}" and sb.stream_url == f"ws://127.0.0.1:{port}"
    assert not _port_is_free(port)
    t0 = time.perf_counter()
    sb.stop()
    stop_seconds = time.perf_counter() - t0
    assert not sb.running and _port_is_free(port)
    assert stop_seconds < 5
    assert set(threading.enumerate()) <= threads_before | {threading.current_thread()}
    sb.stop()  # idempotent
    sb.start()  # restartable, on the same port
    assert sb.port == port
    sb.stop()


def test_sandbox_reports_a_busy_port_and_bad_options_at_once():
    with Sandbox() as sb:
        with pytest.raises(OSError):
            Sandbox(port=sb.port).start()
    with pytest.raises(ValueError, match="market"):
        Sandbox(market="sometimes")
    with pytest.raises(ValueError, match="chaos"):
        Sandbox(chaos="everything=1")


def test_secrets_stay_out_of_reprs():
    sb = Sandbox(secret_key="s3cr3t-value")
    assert "s3cr3t-value" not in repr(sb) and "s3cr3t-value" not in repr(sb.config)


# ---------------------------------------------------------------- the command

def _start_cli(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "sandbox", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
    assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
    return proc, match.group(1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_serves_until_interrupted_and_exits_cleanly(sig):
    proc, url = _start_cli("--seed", "9", "--rate-limit", "100")
    try:
        status = _get(url + "/sandbox/status", {"APCA-API-KEY-ID": "SANDBOXKEYID",
                                                "APCA-API-SECRET-KEY": "sandbox-secret-key"}).json()
        assert status["seed"] == 9 and status["rate_limit"] == 100
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert "sandbox-secret-key" not in proc.stdout.read() + proc.stderr.read()


def test_cli_rejects_a_bad_option_with_a_clear_message():
    result = subprocess.run([sys.executable, "-m", "alpaca_nb.cli", "sandbox", "--chaos", "503=7"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "between 0 and 1" in result.stderr
