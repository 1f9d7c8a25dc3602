"""Trade updates: the local order book stays equal to GET /v2/orders through fills, cancels,
replaces and a reconnect during which orders filled unseen (the proxy blocks the network)."""

from __future__ import annotations

import math
import threading

import pandas as pd
import pytest
from _stream_helpers import FAST, connect, wait_for
from _ws_proxy import WsProxy
from conftest import new_account

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream import Reconnect

COLUMNS = ["symbol", "side", "status", "qty", "filled_qty", "filled_avg_price", "limit_price"]


@pytest.fixture(scope="module")
def fast():
    with Sandbox(**FAST) as sb:
        yield sb


def _state(frame: pd.DataFrame) -> dict:
    """Order id -> the fields that matter, NaN made comparable."""
    out = {}
    for oid, row in frame[COLUMNS].sort_index().iterrows():
        out[oid] = tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)
    return out


def _below(api, symbol: str, fraction: float) -> float:
    """A buy limit that rests: ``fraction`` of the last trade (inside the pre-trade collar)."""
    return round(float(api.latest_trades([symbol]).loc[symbol, "price"]) * fraction, 2)


def _in_sync(stream, api) -> bool:
    return _state(stream.orders.df) == _state(api.orders(status="all"))


def test_the_order_book_follows_fills_cancels_and_replaces(fast):
    api = connect(new_account(fast))
    with api.stream(trade_updates=True) as s:
        events = []
        s.on("trade_update", events.append)
        filled = api.buy("AAPL", 5)
        resting = api.submit_order("MSFT", 3, "buy", "limit", limit_price=_below(api, "MSFT", 0.8))
        replaced = api.replace_order(resting.name, limit_price=_below(api, "MSFT", 0.85))
        api.cancel_order(replaced.name)
        sold = api.sell("AAPL", 2)
        wait_for(lambda: _in_sync(s, api), 10, "the book to match GET /v2/orders")
        book = s.orders.df
        assert book.loc[filled.name, "status"] == "filled" and book.loc[filled.name, "filled_qty"] == 5
        assert book.loc[filled.name, "filled_avg_price"] > 0
        assert book.loc[resting.name, "status"] == "replaced"
        assert book.loc[replaced.name, "status"] == "canceled"
        assert book.loc[sold.name, "status"] == "filled"
        assert len(s.orders) == 4
        assert s.orders.get(sold.name)["filled_qty"] == 2
        # every event reached the callback, in order, with typed fields
        wait_for(lambda: any(e["event"] == "canceled" for e in events), 10, "the cancel event")
        kinds = [e["event"] for e in events if e["order_id"] == filled.name]
        assert kinds[-1] == "fill" and "new" in kinds and kinds.index("new") < kinds.index("fill")
        fill = next(e for e in events if e["order_id"] == filled.name and e["event"] == "fill")
        assert fill["fill_qty"] == 5 and fill["price"] > 0 and fill["position_qty"] == 5
        assert isinstance(fill["timestamp"], pd.Timestamp) and fill["reconciled"] is False
        with pytest.raises(KeyError, match="not in the stream's order book"):
            s.orders.get("00000000-0000-0000-0000-000000000000")


def test_orders_filled_during_a_gap_are_reconciled(fast):
    account = new_account(fast)
    with WsProxy(fast.url) as proxy:
        api = connect(account, base_url=proxy.url)             # trading REST + /stream via the proxy
        direct = connect(account)                              # the same account, straight through
        with api.stream(trade_updates=True, reconnect=Reconnect(base=0.2, cap=1.0)) as s:
            events = []
            s.on("trade_update", events.append)
            before = api.buy("AAPL", 4)
            wait_for(lambda: _in_sync(s, direct), 10, "the book before the gap")

            proxy.send("block")
            wait_for(lambda: not s.status.connected, 10, "the drop")
            unseen = direct.sell("AAPL", 3)                    # fills while nobody listens
            resting = direct.submit_order("SPY", 1, "buy", "limit", limit_price=_below(direct, "SPY", 0.8))
            assert unseen.name not in s.orders.df.index
            proxy.send("unblock")
            wait_for(lambda: s.status.connected and s.stats["trading_connections"] == 2, 15, "the reconnect")
            wait_for(lambda: _in_sync(s, direct), 10, "the book after the gap")
            book = s.orders.df
            assert book.loc[unseen.name, "status"] == "filled" and book.loc[unseen.name, "filled_qty"] == 3
            assert book.loc[resting.name, "status"] in ("new", "accepted")
            assert book.loc[before.name, "status"] == "filled"
            wait_for(lambda: any(e["order_id"] == unseen.name for e in events), 10, "the reconciled event")
            late = [e for e in events if e["order_id"] == unseen.name]
            assert late[-1]["reconciled"] is True and late[-1]["event"] == "fill"

            # and the book keeps following the live stream after the reconnect
            api.cancel_order(resting.name)
            wait_for(lambda: s.orders.df.loc[resting.name, "status"] == "canceled", 10, "the cancel")
            assert _in_sync(s, direct)


def test_trade_updates_helper_calls_back_and_owns_its_stream(fast):
    api = connect(new_account(fast))
    got = []
    s = api.trade_updates(got.append)
    try:
        assert s.status.connected and s.subscriptions == {}
        order = api.buy("MSFT", 1)
        wait_for(lambda: any(e["order_id"] == order.name and e["event"] == "fill" for e in got), 10,
                 "the fill callback")
    finally:
        s.close()
    assert s.status.stopped
    with pytest.raises(TypeError, match="callable"):
        api.trade_updates(callback="nope")


def test_without_a_listener_no_event_is_kept_and_a_later_one_gets_only_new_events(fast):
    """The documented "stream only for orders.df" use keeps the book, not a growing event list,
    and a callback registered later does not receive the stale history."""
    api = connect(new_account(fast))
    with api.stream(trade_updates=True) as s:
        early = [api.buy("AAPL", 1).name for _ in range(3)]
        wait_for(lambda: len(s.orders) == 3 and set(s.orders.df["status"]) == {"filled"}, 10, "three fills")
        assert not s._trading._events          # nothing queued for nobody
        got = []
        s.on("trade_update", got.append)
        late = api.buy("MSFT", 1).name
        wait_for(lambda: any(e["order_id"] == late and e["event"] == "fill" for e in got), 10, "the new fill")
        assert {e["order_id"] for e in got} == {late} and not set(early) & {e["order_id"] for e in got}


def test_a_stuck_callback_costs_a_bounded_queue_and_a_warning(fast, monkeypatch, caplog):
    from alpaca_nb.stream import _fanout
    monkeypatch.setattr(_fanout, "BACKLOG", 3)
    api = connect(new_account(fast))
    release, got = threading.Event(), []

    def stuck(update):
        release.wait(30)
        got.append(update)

    with api.stream(trade_updates=True) as s:
        try:
            handle = s.on("trade_update", stuck)
            api.buy("AAPL", 1)
            wait_for(lambda: len(s.orders) == 1, 10, "the first order in the book")
            later = [api.buy("MSFT", 1).name for _ in range(4)]
            wait_for(lambda: all(s.orders.df.loc[o, "status"] == "filled" for o in later), 10, "four fills")
        finally:
            release.set()      # 8 or more events arrived while the callback was stuck
        wait_for(lambda: any(e["order_id"] == later[-1] and e["event"] == "fill" for e in got), 10,
                 "the newest event after the stuck callback returned")
    delivered = [e for e in got if e["order_id"] in later]
    assert len(delivered) <= 3 and handle.dropped >= 4 * 2 - 3     # only the newest BACKLOG are kept
    assert "events behind" in caplog.text and "dropped" in caplog.text
