"""Market-data streams against a real sandbox: every channel, tables, callbacks, subscriptions,
the shared connection and bad input.

The sandbox runs a fast virtual clock (one market minute per second) so minute bars close every
second; each test uses a fresh account, so its streams have a connection of their own.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time

import pandas as pd
import pytest
from _stream_helpers import FAST, admin, connect, counts, server_connections, wait_for
from _ws_proxy import WsProxy
from conftest import new_account

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream import LiveTable, Reconnect, Stream, StreamStatus, SubscriptionError, open_hubs

UNIVERSE = ["AAPL", "MSFT", "SPY", "NVDA", "AMD", "TSLA", "AMZN", "GOOG", "META", "NFLX", "QQQ", "IWM"]


@pytest.fixture(scope="module")
def fast():
    with Sandbox(**FAST) as sb:
        yield sb


@pytest.fixture
def api(fast):
    return connect(new_account(fast))


def test_every_channel_arrives_in_its_table_and_callback(api, fast):
    with api.stream(quotes=["AAPL", "MSFT"], trades=["AAPL"], bars=["AAPL", "SPY"], daily_bars=["AAPL"],
                    updated_bars=UNIVERSE, statuses=["IBM"]) as s:
        assert isinstance(s, Stream) and s.status.connected
        got: dict[str, list] = {e: [] for e in ("quote", "trade", "bar", "daily_bar", "updated_bar",
                                                "trading_status")}
        for event, sink in got.items():
            s.on(event, sink.append)
        admin(fast, "/sandbox/halt", {"symbol": "IBM", "halted": True})
        try:
            wait_for(lambda: all(got.values()), 20, "an update on every channel")
            # minute bars come from the stream, not only from the REST refill: they advance
            wait_for(lambda: len({b["timestamp"] for b in got["bar"] if b["symbol"] == "SPY"}) >= 3, 20,
                     "three successive SPY minute bars")
        finally:
            admin(fast, "/sandbox/halt", {"symbol": "IBM", "halted": False})

        quote = got["quote"][-1]
        assert quote["symbol"] in ("AAPL", "MSFT")
        assert isinstance(quote["timestamp"], pd.Timestamp) and str(quote["timestamp"].tz) == "UTC"
        assert 0 < quote["bid_price"] < quote["ask_price"] and quote["bid_size"] > 0
        trade = got["trade"][-1]
        assert trade["symbol"] == "AAPL" and trade["price"] > 0 and trade["size"] > 0
        bar = got["bar"][-1]
        assert bar["low"] <= min(bar["open"], bar["close"]) <= max(bar["open"], bar["close"]) <= bar["high"]
        assert got["daily_bar"][-1]["symbol"] == "AAPL"
        assert got["updated_bar"][-1]["symbol"] in UNIVERSE
        status = got["trading_status"][0]
        assert status["symbol"] == "IBM" and status["status_code"] in ("H", "2")      # halted

        # the one-channel tables have exactly the columns and dtypes of the REST "latest" frames
        quotes = s.quotes.df
        assert list(quotes.index) == ["AAPL", "MSFT"]
        rest = api.latest_quotes(["AAPL", "MSFT"])
        assert list(quotes.columns) == list(rest.columns)
        assert quotes.dtypes.equals(rest.dtypes)
        assert (quotes["bid_price"] < quotes["ask_price"]).all()
        assert s.trades.df.dtypes.equals(api.latest_trades(["AAPL"]).dtypes)
        bars = s.bars.df
        assert list(bars.index) == ["AAPL", "SPY"] and bars["close"].notna().all()
        assert bars.dtypes.equals(api.latest_bars(["AAPL"]).dtypes)
        wait_for(lambda: s.statuses.df.loc["IBM", "status_code"] in ("T", "3"), 10, "the resumption")

        wide = s.table.df
        assert list(wide.index) == ["AAPL", "MSFT", "SPY"] + [x for x in UNIVERSE if x not in ("AAPL", "MSFT", "SPY")] + ["IBM"]
        assert wide.loc["AAPL", "updates"] > 0 and wide.loc["AAPL", "bid_price"] > 0
        assert wide.loc["AAPL", "last_price"] > 0 and wide.loc["SPY", "bar_close"] > 0
        assert str(wide["updated_at"].dtype) == "datetime64[ns, UTC]"
        assert wide["updates"].dtype == "int64"


def test_wide_table_has_fixed_columns_even_before_any_data(api):
    with api.stream(quotes=["AAPL"]) as s:
        empty = s.table.snapshot(symbols=[])
        full = s.table.df
        assert list(empty.columns) == list(full.columns) == s.table.columns
        assert empty.dtypes.equals(full.dtypes)
        assert s.trades.df.empty and list(s.trades.df.columns) == s.trades.columns


def test_subscribe_and_unsubscribe_while_running(api):
    with api.stream(quotes=["AAPL"]) as s:
        wait_for(lambda: counts(s, ["AAPL"])["AAPL"] > 0, 10, "AAPL quotes")
        s.subscribe(quotes="msft", trades=["MSFT", "NVDA"])
        assert s.subscriptions == {"quotes": ["AAPL", "MSFT"], "trades": ["MSFT", "NVDA"]}
        wait_for(lambda: s.quotes.df["bid_price"].notna().all(), 10, "MSFT quotes")
        wait_for(lambda: counts(s, ["MSFT", "NVDA"]) == {k: v for k, v in counts(s, ["MSFT", "NVDA"]).items() if v > 0},
                 10, "MSFT and NVDA updates")
        assert list(s.table.df.index) == ["AAPL", "MSFT", "NVDA"]

        s.unsubscribe(quotes=["AAPL"])
        assert s.subscriptions == {"quotes": ["MSFT"], "trades": ["MSFT", "NVDA"]}
        assert list(s.quotes.df.index) == ["MSFT"]
        assert "AAPL" not in s.table.df.index
        # the server was told: no AAPL message reaches the shared store any more
        store = s._data.store
        time.sleep(0.3)
        assert "AAPL" not in store.tables["q"]
        before = store.applied
        wait_for(lambda: store.applied > before + 10, 10, "more MSFT/NVDA data")
        assert "AAPL" not in store.tables["q"] and "AAPL" not in store.counts

        s.unsubscribe(trades="NVDA")
        assert s.subscriptions == {"quotes": ["MSFT"], "trades": ["MSFT"]}


def test_a_stream_can_start_empty_and_subscribe_later(api):
    with api.stream() as s:
        assert s.status.connected and s.subscriptions == {} and s.table.df.empty
        s.subscribe(bars=["SPY"])
        wait_for(lambda: s.bars.df["close"].notna().all(), 10, "a SPY bar")


def test_wildcard_subscription_lists_every_symbol_seen(api):
    with api.stream(bars="*") as s:
        wait_for(lambda: len(s.bars.df) > 50, 20, "bars of many symbols")
        frame = s.bars.df
        assert list(frame.index) == sorted(frame.index)
        assert frame["close"].notna().all()


def test_streams_in_one_process_share_one_connection(fast):
    account = new_account(fast)
    with WsProxy(fast.url) as proxy:
        api = connect(account, stream_url=proxy.stream_url)
        a = api.stream(quotes=["AAPL"])
        b = connect(account, stream_url=proxy.stream_url).stream(quotes=["AAPL", "MSFT"], trades=["AAPL"])
        try:
            assert proxy.send("count") == "1"            # one WebSocket for both views
            assert a._data is b._data
            assert a.subscriptions == {"quotes": ["AAPL"]}
            assert b.subscriptions == {"quotes": ["AAPL", "MSFT"], "trades": ["AAPL"]}
            assert list(a.table.df.index) == ["AAPL"] and list(b.table.df.index) == ["AAPL", "MSFT"]

            # a gives up AAPL quotes; b still needs them, so they keep coming
            a.unsubscribe(quotes=["AAPL"])
            assert a.table.df.empty
            n = counts(b, ["AAPL"])["AAPL"]
            wait_for(lambda: counts(b, ["AAPL"])["AAPL"] > n + 5, 10, "AAPL quotes for b")

            a.close()
            n = counts(b, ["MSFT"])["MSFT"]
            wait_for(lambda: counts(b, ["MSFT"])["MSFT"] > n + 5, 10, "b going on after a closed")
            assert b.status.connected and proxy.send("count") == "1"
        finally:
            a.close()
            b.close()
        assert not [h for h in open_hubs() if h.key_id == account.key_id]
        wait_for(lambda: proxy.send("count") == "1" and server_connections(fast)["data"] == 0, 10,
                 "the last view to close the socket")


def test_callbacks_are_coalesced_and_rate_limited(api):
    with api.stream(quotes=["AAPL", "MSFT", "SPY"]) as s:
        stamps: dict[str, list[float]] = {"AAPL": [], "MSFT": [], "SPY": []}
        threads: set[str] = set()

        def limited(q):
            threads.add(threading.current_thread().name)
            stamps[q["symbol"]].append(time.monotonic())

        everything: list[dict] = []
        s.on("quote", limited, max_hz=5)
        s.on("quote", everything.append)
        wait_for(lambda: all(len(v) >= 5 for v in stamps.values()), 20, "five deliveries per symbol")
        for symbol, times in stamps.items():
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert min(gaps) >= 0.2 - 0.01, (symbol, gaps)       # never more than 5 per second
        # coalesced: far fewer deliveries than messages, and never on the socket thread
        n_messages = counts(s, ["AAPL"])["AAPL"]
        assert len(stamps["AAPL"]) < n_messages
        assert len([q for q in everything if q["symbol"] == "AAPL"]) <= n_messages
        assert threads == {"alpaca-nb-data-fanout"}


def test_a_batched_callback_gets_the_latest_of_several_events_in_one_call(api):
    with api.stream(quotes=["AAPL", "MSFT"], trades=["AAPL"]) as s:
        batches: list[dict[str, list[dict]]] = []
        s.on(["quote", "trade"], batches.append, max_hz=5, batch=True)
        wait_for(lambda: len(batches) >= 3 and any({"quote", "trade"} <= set(b) for b in batches), 20,
                 "three batches, one with quotes and trades")
        for batch in batches:
            assert batch and set(batch) <= {"quote", "trade"} and all(batch.values())
            for event, updates in batch.items():
                symbols = [u["symbol"] for u in updates]
                assert len(symbols) == len(set(symbols))            # the latest per symbol only
                assert set(symbols) <= ({"AAPL", "MSFT"} if event == "quote" else {"AAPL"})
        quote = next(b["quote"][0] for b in batches if "quote" in b)
        assert 0 < quote["bid_price"] < quote["ask_price"] and str(quote["timestamp"].tz) == "UTC"
        trade = next(b["trade"][0] for b in batches if "trade" in b)
        assert trade["symbol"] == "AAPL" and trade["price"] > 0


def test_a_slow_callback_never_slows_the_socket(api):
    with api.stream(quotes=UNIVERSE) as s:
        delivered: list[dict] = []

        def slow(q):
            delivered.append(q)
            time.sleep(0.2)

        s.on("quote", slow)
        store = s._data.store
        start = store.applied
        wait_for(lambda: store.applied - start > 2000, 30, "2000 more messages")
        # the socket thread applied thousands of messages while the slow callback saw a few,
        # each one the latest of its symbol at delivery time (at most one pending per symbol)
        assert len(delivered) < 200
        listener = s._listeners[0][0]
        assert len(listener._pending) <= len(UNIVERSE)


def test_a_raising_callback_is_logged_and_the_stream_goes_on(api, caplog):
    with api.stream(quotes=["AAPL"]) as s:
        calls, good = [], []

        def broken(q):
            calls.append(q)
            raise RuntimeError("boom in user code")

        s.on("quote", broken)
        s.on("quote", good.append)
        with caplog.at_level(logging.ERROR, logger="alpaca_nb.stream"):
            wait_for(lambda: len(calls) >= 3 and len(good) >= 3, 10, "deliveries after the error")
        assert "boom in user code" in caplog.text and "the stream goes on" in caplog.text
        assert s.status.connected


def test_callbacks_can_be_cancelled(api):
    with api.stream(quotes=["AAPL"]) as s:
        got: list[dict] = []
        handle = s.on("quote", got.append)
        wait_for(lambda: got, 10, "a quote")
        s.off(handle)
        time.sleep(0.1)
        n = len(got)
        before = counts(s, ["AAPL"])["AAPL"]
        wait_for(lambda: counts(s, ["AAPL"])["AAPL"] > before + 10, 10, "more quotes")
        assert len(got) == n


def test_status_changes_can_be_observed(api, fast):
    with api.stream(quotes=["AAPL"], reconnect=Reconnect(base=0.2)) as s:
        seen: list[StreamStatus] = []
        s.on("status", seen.append)
        admin(fast, "/sandbox/streams/drop", {"kind": "data"})
        wait_for(lambda: seen and seen[-1].connected and any(st.state == "reconnecting" for st in seen), 10,
                 "reconnecting then connected")
        drop = next(st for st in seen if st.state == "reconnecting")
        assert drop.attempt == 1 and drop.reason and str(drop).startswith("reconnecting (attempt 1")
    assert s.status.stopped and str(s.status) == "stopped (closed)"


def test_bad_input_gets_a_clear_error(api):
    with pytest.raises(TypeError, match="unexpected keyword argument 'quote'"):
        api.stream(quote=["AAPL"])                             # channels are named arguments
    with pytest.raises(TypeError, match="symbol strings"):
        api.stream(quotes=["AAPL", 5])
    with pytest.raises(TypeError, match="list of symbols"):
        api.stream(quotes=42)
    with pytest.raises(ValueError, match="not a valid symbol"):
        api.stream(trades=["AA PL"])
    with pytest.raises(ValueError, match="feed must be one of"):
        api.stream(quotes=["AAPL"], feed="nasdaq")
    with pytest.raises(TypeError, match="trade_updates"):
        api.stream(trade_updates="yes")
    with pytest.raises(ValueError, match="timeout"):
        api.stream(timeout=0)
    with pytest.raises(ValueError, match="stale_timeout"):
        Reconnect(ping_interval=5, stale_timeout=2)
    assert not [h for h in open_hubs() if h.key_id == api.settings.key_id]   # nothing was opened

    s = api.stream(quotes=["AAPL"])
    try:
        with pytest.raises(ValueError, match="is empty"):
            s.subscribe(quotes=[])
        with pytest.raises(ValueError, match="at least one channel"):
            s.subscribe()
        with pytest.raises(TypeError, match="unexpected keyword argument 'bar'"):
            s.subscribe(bar=["AAPL"])
        with pytest.raises(ValueError, match="not subscribed to quotes for MSFT"):
            s.unsubscribe(quotes=["MSFT"])
        with pytest.raises(ValueError, match="unknown event"):
            s.on("quotes", print)
        with pytest.raises(TypeError, match="callable"):
            s.on("quote", "print")
        with pytest.raises(ValueError, match="max_hz"):
            s.on("quote", print, max_hz=0)
        with pytest.raises(ValueError, match="trade_updates=True"):
            s.on("trade_update", print)
        with pytest.raises(ValueError, match="needs batch=True"):
            s.on(["quote", "trade"], print)
        with pytest.raises(ValueError, match="batch=True is for market-data events"):
            s.on("status", print, batch=True)
        with pytest.raises(TypeError, match="batch must be True or False"):
            s.on("quote", print, batch=1)
        with pytest.raises(TypeError, match="LiveTables"):
            s.show(table="quotes")
        assert s.subscriptions == {"quotes": ["AAPL"]}        # nothing changed
    finally:
        s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.subscribe(quotes=["MSFT"])
    with pytest.raises(RuntimeError, match="closed"):
        s.on("quote", print)
    s.close()                                                  # idempotent


def test_live_table_reads_rows_and_repr(api):
    with api.stream(quotes=["AAPL", "MSFT"]) as s:
        assert isinstance(s.quotes, LiveTable) and len(s.quotes) == 2 and "AAPL" in s.quotes
        wait_for(lambda: s.quotes.df["bid_price"].notna().all(), 10, "quotes")
        row = s.quotes["AAPL"]
        assert row["bid_price"] > 0 and not math.isnan(row["ask_price"])
        with pytest.raises(KeyError, match="not in this table"):
            s.quotes["TSLA"]
        local = s.table.snapshot(tz="America/New_York")
        assert str(local["quote_time"].dtype) == "datetime64[ns, America/New_York]"
        assert "LiveTable quotes: 2 symbol(s)" in repr(s.quotes)
        assert "connected" in repr(s) and api.settings.secret.reveal() not in repr(s)
        assert "<table" in s.quotes._repr_html_()


def test_secret_never_appears_in_status_logs_or_errors(fast, caplog):
    account = new_account(fast)
    api = connect(account)
    with caplog.at_level(logging.DEBUG, logger="alpaca_nb"), \
            api.stream(quotes=["AAPL"], trade_updates=True) as s:
        admin(fast, "/sandbox/streams/drop", {})
        wait_for(lambda: s.stats["data_connections"] >= 2 and s.status.connected, 10, "reconnect")
        text = repr(s) + str(s.status) + repr(s._data) + repr(s._trading)
    assert account.secret_key not in caplog.text and account.secret_key not in text
    bad = anb.connect(base_url=fast.url, data_url=fast.url, stream_url=fast.stream_url,
                      key_id=account.key_id, secret_key="wrong-secret-123")
    with pytest.raises(anb.AuthenticationError) as info:
        bad.stream(quotes=["AAPL"])
    assert "wrong-secret-123" not in str(info.value)


def test_a_subscription_the_server_refuses_raises_and_changes_nothing(api):
    too_many = [f"Z{i:05d}" for i in range(10_001)]            # over the sandbox's symbol limit
    with pytest.raises(SubscriptionError, match="symbol limit exceeded") as info:
        api.stream(quotes=too_many)
    assert info.value.code == 405
    assert not [h for h in open_hubs() if h.key_id == api.settings.key_id]
    with api.stream(quotes=["AAPL"]) as s:
        with pytest.raises(SubscriptionError, match="symbol limit exceeded"):
            s.subscribe(trades=too_many)
        assert s.subscriptions == {"quotes": ["AAPL"]}
        before = counts(s, ["AAPL"])["AAPL"]
        wait_for(lambda: counts(s, ["AAPL"])["AAPL"] > before + 5, 10, "AAPL going on")


def test_show_outside_a_notebook_says_what_to_do_instead(api):
    with api.stream(quotes=["AAPL"]) as s:
        with pytest.raises(RuntimeError, match="needs IPython/Jupyter"):
            s.show()
