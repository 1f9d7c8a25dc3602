"""Requests that nobody waits for any more are abandoned: a stream's REST chore waiting for a
rate-limit slot when the stream closes, and the prefetch of the next market-data page when the
consumer of ``iter_bars`` left early. Through a real sandbox and a recording proxy."""

from __future__ import annotations

import time

import pytest
from _http_proxy import RecordingProxy
from _stream_helpers import FAST, wait_for
from conftest import new_account

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox

WINDOW = 8.0     # seconds of the data rate window in the stream test


@pytest.mark.timeout(120)
def test_close_abandons_a_chore_waiting_for_a_rate_limit_slot(monkeypatch):
    """One data request per 8 s window, already used: the stream's refill of its quotes table
    waits for a slot in the fan-out thread. close() ends that wait at once (the thread is gone
    when it returns), and when the slot frees up later, no request goes out."""
    monkeypatch.setenv("ALPACA_NB_RATE_WINDOW", str(WINDOW))
    with Sandbox(**FAST) as sb, RecordingProxy(sb.url) as proxy:
        account = new_account(sb)
        api = anb.connect(base_url=proxy.url, data_url=proxy.url, stream_url=account.stream_url,
                          key_id=account.key_id, secret_key=account.secret_key,
                          rate_limit={"data": 1})
        api.latest_trades("AAPL")                    # the window's only data request
        used_at = time.monotonic()
        limiter = api._transport.limiters["data"]
        s = api.stream(quotes=["AAPL"])
        fanout = s._data.fanout._thread
        wait_for(lambda: limiter._cond._waiters, 10, "the refill to wait for a rate-limit slot")
        s.close()
        assert not fanout.is_alive()
        sent = proxy.requests
        time.sleep(max(0.0, used_at + WINDOW + 1.5 - time.monotonic()))   # the slot is free again
        assert proxy.requests == sent
        assert proxy.count("GET", "/v2/stocks/quotes/latest") == 0


@pytest.mark.timeout(120)
def test_leaving_iter_bars_early_stops_the_prefetch_and_its_retries():
    """The first page arrives; every attempt at the second (prefetched) page answers 503 (seed
    94 of the sandbox's chaos: ok, then 503 five times). The consumer stops after the first
    page: at most the attempt already on the wire reaches the server, no retry follows."""
    with Sandbox(chaos="503=0.5,seed=94,scope=/v2/stocks/bars") as sb, RecordingProxy(sb.url) as proxy:
        account = new_account(sb)
        api = anb.connect(base_url=proxy.url, data_url=proxy.url, key_id=account.key_id,
                          secret_key=account.secret_key)
        pages = api.iter_bars("AAPL", "1Min", "2024-01-02", "2024-03-01")
        first = next(pages)
        assert len(first) == 10_000                  # a full page: there is a next one
        pages.close()                                # the consumer is gone
        at_close = proxy.count("GET", "/v2/stocks/bars")
        time.sleep(3)          # the transport's retries (backoff 0.5 s, 1 s, 2 s) would show here
        assert proxy.count("GET", "/v2/stocks/bars") <= max(at_close, 2)
