"""Client-side rate limits: one sliding window per API (trading, market data), never more than N
requests in any window as the server counts them, each API fed only by its own rate headers.

The end-to-end tests count the requests a real proxy in front of the sandbox received, with a
window shortened to a second (ALPACA_NB_RATE_WINDOW) instead of waiting a minute.
"""

from __future__ import annotations

import threading
import time

import pytest
from _http_proxy import RecordingProxy
from conftest import new_account
from hypothesis import given, settings
from hypothesis import strategies as st

import alpaca_nb as anb
from alpaca_nb._http import RateLimiter
from alpaca_nb.sandbox import Sandbox


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("ALPACA_NB_TRADING_RATE_LIMIT", "ALPACA_NB_DATA_RATE_LIMIT", "ALPACA_NB_RATE_WINDOW"):
        monkeypatch.delenv(name, raising=False)


def client(acct, url, **kw):
    return anb.connect(base_url=url, data_url=url, key_id=acct.key_id, secret_key=acct.secret_key, **kw)


def most_in_any_window(times: list[float], window: float, eps: float = 0.0) -> int:
    """The largest number of ``times`` inside any half-open window [t, t + window) (``eps``
    forgives float rounding in computed times)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window + eps:
            start += 1
        best = max(best, end - start + 1)
    return best


# ------------------------------------------------------------------ the limiter itself

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 8), window=st.floats(0.5, 60),
       requests=st.lists(st.tuples(st.floats(0, 30), st.floats(0, 5)), min_size=1, max_size=60))
def test_sliding_window_property(limit, window, requests):
    """Requests one after another (think time, then a request lasting some time): a request is
    sent no earlier than ``window`` after the answer of the request ``limit`` places before it
    (so no window at the server holds more than ``limit``), and never later than that: it
    waits only when the window is full."""
    clock = FakeClock()
    limiter = RateLimiter(limit, window=window, clock=clock, sleep=clock.sleep)
    sent, done = [], []
    for think, duration in requests:
        clock.now += think
        asked = clock.now
        slot = limiter.acquire()
        sent.append(clock.now)
        clock.now += duration                    # the request is out for this long
        limiter.release(slot)
        done.append(clock.now)
        earliest = done[-limit - 1] + window if len(done) > limit else asked
        assert sent[-1] >= earliest - 1e-9
        assert sent[-1] <= max(asked, earliest) + 1e-9
    for i in range(limit, len(sent)):
        assert sent[i] >= done[i - limit] + window - 1e-9
    assert most_in_any_window(sent, window, eps=1e-9) <= limit


def test_requests_in_flight_hold_their_slots_across_threads():
    """Eight threads hammer a 5-per-0.3 s limiter with requests of different lengths: the
    answer-to-send gap rule holds for every pair, counted from what the threads recorded."""
    limiter = RateLimiter(5, window=0.3)
    lock = threading.Lock()
    spans: list[tuple[float, float]] = []

    def work(n):
        for i in range(6):
            slot = limiter.acquire()
            start = time.monotonic()
            time.sleep(0.001 * ((n + i) % 4))
            end = time.monotonic()
            limiter.release(slot)
            with lock:
                spans.append((start, end))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(spans) == 48
    # at the server a request arrives somewhere in [start, end]: any window of 0.3 s can hold
    # at most 5 of them, whatever their arrival point
    for start, _ in spans:
        overlapping = [s for s, e in spans if e > start - 0.3 and s <= start]
        assert len(overlapping) <= 5


def test_limiter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive whole number"):
        RateLimiter(0)
    with pytest.raises(ValueError, match="window must be positive"):
        RateLimiter(5, window=0)


# ------------------------------------------------------------------ through the sandbox

@pytest.mark.timeout(120)
def test_never_more_than_n_requests_in_any_window_at_the_server(monkeypatch):
    """5 trading requests per 1 s window: 8 threads make 3 calls each at once. The proxy's
    arrival times never hold more than 5 in any 1 s window (a token bucket lets 10 through in
    the first second), and the data API's budget is separate (its calls never wait here)."""
    monkeypatch.setenv("ALPACA_NB_RATE_WINDOW", "1.0")
    with Sandbox() as sb, RecordingProxy(sb.url) as proxy:
        acct = new_account(sb)
        api = client(acct, proxy.url, rate_limit={"trading": 5, "data": 1000})
        assert (api.settings.rate_limit, api.settings.data_rate_limit, api.settings.rate_window) == (5, 1000, 1.0)
        threads = [threading.Thread(target=lambda: [api.clock() for _ in range(3)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        clock_times = proxy.times("GET", "/v2/clock")
        assert len(clock_times) == 24
        assert most_in_any_window(clock_times, 1.0) <= 5
        assert api._transport.limiters["trading"].waited > 0     # 8 at once: three had to wait
        for _ in range(12):
            api.latest_trades("AAPL")                            # 12 data calls under a 1000 budget
        assert len(proxy.times("GET", "/v2/stocks")) == 12
        assert api._transport.limiters["data"].waited == 0


def test_data_rate_headers_never_pace_trading_calls():
    """The server says the data budget is spent; only the data limiter takes note of it."""
    with Sandbox(rate_limit=3) as sb:
        acct = new_account(sb)
        api = client(acct, sb.url)
        for _ in range(3):
            api.latest_trades("AAPL")
        assert api._transport.limiters["data"].server_remaining == 0
        assert api._transport.limiters["trading"].server_remaining is None


def test_rate_limit_settings(monkeypatch):
    with Sandbox() as sb:
        acct = new_account(sb)
        api = client(acct, sb.url)
        assert (api.settings.rate_limit, api.settings.data_rate_limit) == (200, 200)   # Alpaca's basic plan
        assert api._transport.limiters["data"].per_minute == 200
        api = client(acct, sb.url, rate_limit=120)
        assert (api.settings.rate_limit, api.settings.data_rate_limit) == (120, 120)
        api = client(acct, sb.url, rate_limit={"data": 10_000})
        assert (api.settings.rate_limit, api.settings.data_rate_limit) == (200, 10_000)
        monkeypatch.setenv("ALPACA_NB_DATA_RATE_LIMIT", "10000")
        monkeypatch.setenv("ALPACA_NB_TRADING_RATE_LIMIT", "150")
        api = client(acct, sb.url)
        assert (api.settings.rate_limit, api.settings.data_rate_limit) == (150, 10_000)
        assert client(acct, sb.url, rate_limit={"trading": 100}).settings.data_rate_limit == 10_000
        with pytest.raises(ValueError, match="rate_limit keys must be 'trading' and/or 'data'"):
            client(acct, sb.url, rate_limit={"orders": 5})
        with pytest.raises(ValueError, match="rate_limit for the data API must be a positive whole number"):
            client(acct, sb.url, rate_limit={"data": 0})
        monkeypatch.setenv("ALPACA_NB_DATA_RATE_LIMIT", "lots")
        with pytest.raises(ValueError, match="ALPACA_NB_DATA_RATE_LIMIT='lots' is not a whole number"):
            client(acct, sb.url)
