"""Transport: every error class from real answers, retries counted through a real proxy, the
rate limiter (client-side and from the server's headers)."""

from __future__ import annotations

import socket

import pytest
from _http_proxy import RecordingProxy
from conftest import new_account

import alpaca_nb as anb
from alpaca_nb._http import RateLimiter
from alpaca_nb.sandbox import Sandbox


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path / "cache"))


def client(acct, url: str | None = None, **kw):
    return anb.connect(base_url=url or acct.url, data_url=url or acct.url, key_id=acct.key_id,
                       secret_key=acct.secret_key, **kw)


# ------------------------------------------------------------------ error classes

def test_401_bad_keys(account):
    api = anb.connect(base_url=account.url, data_url=account.url, key_id=account.key_id,
                      secret_key="not-the-secret")
    with pytest.raises(anb.AuthenticationError) as info:
        api.account()
    err = info.value
    assert (err.status, err.code, err.message) == (401, 40110000, "request is not authorized")
    assert err.method == "GET" and err.path == "/v2/account" and err.attempts == 1
    assert isinstance(err, anb.AlpacaError)


def test_403_insufficient_buying_power_from_the_server(sandbox):
    poor = new_account(sandbox, cash=500)
    api = client(poor)
    body = {"symbol": "AAPL", "qty": "100", "side": "buy", "type": "market", "time_in_force": "day"}
    with pytest.raises(anb.InsufficientBuyingPower) as info:
        api._transport.trading("POST", "/v2/orders", json=body)   # past the guard on purpose
    err = info.value
    assert isinstance(err, anb.ForbiddenError)
    assert (err.status, err.code) == (403, 40310000)
    assert "insufficient buying power" in err.message
    assert float(err.body["buying_power"]) <= 1000


def test_403_insufficient_qty_is_forbidden_but_not_buying_power(account):
    api = client(account)
    api.buy("AAPL", 1)
    with pytest.raises(anb.ForbiddenError) as info:
        api.close_position("AAPL", qty=50)
    assert not isinstance(info.value, anb.InsufficientBuyingPower)
    assert info.value.status == 403 and "insufficient qty" in info.value.message


def test_404_unknown_order_and_position(account):
    api = client(account)
    with pytest.raises(anb.NotFoundError) as info:
        api.order("00000000-0000-4000-8000-000000000000")
    assert (info.value.status, info.value.code) == (404, 40410000)
    with pytest.raises(anb.NotFoundError):
        api.order(client_order_id="never-used")
    with pytest.raises(anb.NotFoundError):
        api.position("AAPL")


def test_422_invalid_order_from_the_server(account):
    api = client(account)
    body = {"symbol": "AAPL", "qty": "abc", "side": "buy", "type": "market", "time_in_force": "day"}
    with pytest.raises(anb.UnprocessableError) as info:
        api._transport.trading("POST", "/v2/orders", json=body)
    assert (info.value.status, info.value.code) == (422, 40010001)
    assert "qty" in info.value.message


def test_400_bad_market_data_parameter(account):
    api = client(account)
    with pytest.raises(anb.BadRequestError) as info:
        api._transport.data("/v2/stocks/bars", {"symbols": "AAPL", "timeframe": "7Years"})
    assert info.value.status == 400 and "timeframe" in info.value.message


@pytest.mark.parametrize("status,cls", [(429, anb.RateLimitError), (500, anb.ServerError),
                                        (502, anb.ServerError), (503, anb.ServerError),
                                        (504, anb.ServerError)])
def test_retried_statuses_give_up_saying_how_many_attempts(status, cls):
    with Sandbox(chaos=f"{status}=1,scope=/v2/clock") as sb, RecordingProxy(sb.url) as proxy:
        api = anb.connect(base_url=proxy.url, data_url=proxy.url, key_id=sb.key_id,
                          secret_key=sb.secret_key, retries=3)
        with pytest.raises(cls) as info:
            api.clock()
        assert proxy.count("GET", "/v2/clock") == 3
    err = info.value
    assert err.status == status and err.attempts == 3
    assert "gave up after 3 attempts" in str(err)
    if status == 429:
        assert err.retry_after == 1.0                     # the server's Retry-After


def test_retries_recover_from_lost_answers():
    with Sandbox(chaos="lose=0.5,scope=/v2/account,seed=3") as sb, RecordingProxy(sb.url) as proxy:
        api = anb.connect(base_url=proxy.url, data_url=proxy.url, key_id=sb.key_id,
                          secret_key=sb.secret_key, retries=10)
        for _ in range(6):
            assert api.account()["status"] == "ACTIVE"
        assert proxy.count("GET", "/v2/account") > 6      # some answers were lost and retried


def test_post_is_never_retried_by_the_transport():
    with Sandbox(chaos="503=1,scope=/v2/orders") as sb, RecordingProxy(sb.url) as proxy:
        api = anb.connect(base_url=proxy.url, data_url=proxy.url, key_id=sb.key_id,
                          secret_key=sb.secret_key, retries=5)
        with pytest.raises(anb.ServerError) as info:
            api._transport.trading("POST", "/v2/orders", json={"symbol": "AAPL"})
        assert info.value.attempts == 1
        assert proxy.count("POST") == 1


def test_connection_refused_counts_attempts():
    with socket.socket() as s:                            # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = anb.connect(base_url=f"http://127.0.0.1:{port}", data_url=f"http://127.0.0.1:{port}",
                      key_id="K", secret_key="S", retries=2)
    with pytest.raises(anb.AlpacaConnectionError) as info:
        api.clock()
    assert info.value.attempts == 2 and info.value.status is None
    assert "gave up after 2 attempts" in str(info.value) and "no answer from" in str(info.value)


# ------------------------------------------------------------------ the rate limiter
# (the sliding window itself: tests/test_rate_limits.py)

class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.slept = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_limiter_obeys_server_headers():
    clock = FakeClock()
    limiter = RateLimiter(200, clock=clock, sleep=clock.sleep)
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1030"}, wall_now=1000.0)
    limiter.release(limiter.acquire())
    assert sum(clock.slept) == pytest.approx(30.0)        # waits for the server's window to reset
    clock.slept.clear()
    limiter.observe({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "1040"}, wall_now=1000.0)
    for _ in range(4):
        limiter.release(limiter.acquire())
    assert sum(clock.slept) > 0                           # 3 left for 40 s: spread out


@pytest.mark.timeout(180)
def test_server_rate_limit_is_respected_without_429s():
    """The server allows 4 requests a minute; the client reads X-RateLimit-Remaining and waits
    instead of running into 429s (the proxy sees exactly one request per call)."""
    with Sandbox(rate_limit=4) as sb, RecordingProxy(sb.url) as proxy:
        acct = new_account(sb)
        api = client(acct, url=proxy.url)
        for _ in range(6):
            api.clock()
        assert proxy.count("GET", "/v2/clock") == 6       # no 429 was answered (it would be retried)
        assert api._transport.limiters["trading"].waited > 0
