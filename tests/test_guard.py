"""The pre-trade guard: free on the wire when the client already knows (a stream's prices, a few
seconds of account and positions), a collar on the dangerous side only, a buying-power refusal
that is an InsufficientBuyingPower, and replaces valued on what remains to fill.

Requests are counted by a real proxy between the client and the sandbox.
"""

from __future__ import annotations

import pytest
from _http_proxy import RecordingProxy
from conftest import new_account, poll

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox

GUARD_ENV = ("ALPACA_NB_MAX_ORDER_NOTIONAL", "ALPACA_NB_MAX_ORDER_QTY", "ALPACA_NB_PRICE_COLLAR",
             "ALPACA_NB_BUYING_POWER_CHECK", "ALPACA_NB_GUARD_CACHE")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path / "cache"))
    for name in GUARD_ENV:
        monkeypatch.delenv(name, raising=False)


def client(acct, url: str | None = None, **kw):
    return anb.connect(base_url=url or acct.url, data_url=url or acct.url, key_id=acct.key_id,
                       secret_key=acct.secret_key, **kw)


STREAM_REFILLS = ("/v2/stocks/quotes/latest", "/v2/stocks/trades/latest", "/v2/stocks/bars/latest")


def rest_calls(proxy) -> list[tuple[str, str]]:
    """REST requests seen, without the stream's own (its WebSocket upgrades, and the refills of
    its tables after it connects or subscribes)."""
    calls = [(m, t.split("?")[0]) for m, t in proxy.requests]
    return [(m, p) for m, p in calls if not p.startswith(("/v2/iex", "/stream")) and p not in STREAM_REFILLS]


# ------------------------------------------------------------------ free when the client knows

def test_a_second_order_within_seconds_costs_one_request(sandbox, account):
    """With a stream of this client carrying AAPL, the guard takes the price from it; the
    account's buying power is kept a few seconds. The first order asks for the account, the
    second sends nothing but its POST; a sell asks once for the positions, the next one not."""
    with RecordingProxy(sandbox.url) as proxy:
        api = client(account, url=proxy.url, guard_cache=600)          # "a few seconds", on a slow machine
        with api.stream(quotes=["AAPL", "MSFT"], trades=["AAPL", "MSFT"]) as stream:
            poll(lambda: stream.trades.df["price"], lambda p: (p > 0).all())
            proxy.clear()
            api.buy("AAPL", 1)
            assert rest_calls(proxy) == [("GET", "/v2/account"), ("POST", "/v2/orders")]
            proxy.clear()
            api.buy("AAPL", 2, type="limit", limit_price=round(stream.trades.df.loc["AAPL", "price"], 2))
            assert rest_calls(proxy) == [("POST", "/v2/orders")]
            far_up = round(stream.trades.df.loc["MSFT", "price"] * 1.5, 2)
            proxy.clear()
            api.sell("MSFT", 1, type="limit", limit_price=far_up)       # is MSFT held? asked once
            assert rest_calls(proxy) == [("GET", "/v2/positions"), ("POST", "/v2/orders")]
            proxy.clear()
            api.sell("MSFT", 1, type="limit", limit_price=far_up)
            assert rest_calls(proxy) == [("POST", "/v2/orders")]


def test_without_a_stream_the_price_is_asked_and_the_account_kept(sandbox, account):
    with RecordingProxy(sandbox.url) as proxy:
        api = client(account, url=proxy.url, guard_cache=600)
        api.buy("AAPL", 1)
        proxy.clear()
        api.buy("AAPL", 1)
        assert rest_calls(proxy) == [("GET", "/v2/stocks/AAPL/trades/latest"), ("POST", "/v2/orders")]
        api = client(account, url=proxy.url, guard_cache=0)            # no cache: asked each time
        api.buy("AAPL", 1)
        proxy.clear()
        api.buy("AAPL", 1)
        assert ("GET", "/v2/account") in rest_calls(proxy)


def test_trade_updates_of_other_orders_drop_the_kept_account(sandbox, account):
    """Another client's order on the same account shows in this client's trade updates: the
    kept buying power is dropped (even with an hour's cache) and asked again; this client's own
    orders, already counted, do not drop it."""
    with RecordingProxy(sandbox.url) as proxy:
        api = client(account, url=proxy.url, guard_cache=3600)
        with api.stream(trades=["AAPL"], trade_updates=True) as stream:
            poll(lambda: stream.trades.df.loc["AAPL", "price"], lambda p: p > 0)
            mine = api.buy("AAPL", 1)
            poll(lambda: len(stream.orders), lambda n: n >= 1)
            poll(lambda: stream.orders.get(mine.name)["status"], lambda s: s == "filled")
            proxy.clear()
            api.buy("AAPL", 1)
            assert ("GET", "/v2/account") not in rest_calls(proxy)

            other = client(account).buy("MSFT", 1)             # not this client's order
            poll(lambda: other.name in stream.orders.df.index, bool)

            def asks_for_the_account() -> bool:
                proxy.clear()
                api.check_order({"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market",
                                 "time_in_force": "day", "client_order_id": "not-sent"})
                return ("GET", "/v2/account") in rest_calls(proxy)
            assert poll(asks_for_the_account, bool)


def test_a_refusal_on_kept_figures_is_checked_again_with_fresh_ones(sandbox):
    """Bought most of the buying power, then sold it all within the cache's life: the kept
    positions cannot tell whether the sell closes the long (it might open a short), so the
    guard asks again before refusing, and the exit goes through."""
    acct = new_account(sandbox, cash=10_000)
    with RecordingProxy(sandbox.url) as proxy:
        api = client(acct, url=proxy.url, guard_cache=3600)
        last = api.latest_trades("AAPL").loc["AAPL", "price"]
        qty = int(17_000 / last)
        api.sell("MSFT", 1, type="limit", limit_price=round(api.latest_trades("MSFT").loc["MSFT", "price"] * 1.2, 2))
        api.buy("AAPL", qty)                               # positions were kept before this buy
        poll(api.positions, lambda df: "AAPL" in df.index)
        posts = proxy.count("POST")
        sold = api.sell("AAPL", qty)
        assert sold["qty"] == qty and proxy.count("POST") == posts + 1


# ------------------------------------------------------------------ the collar's side

def test_the_collar_refuses_only_the_side_that_can_fill_at_a_bad_price(sandbox, account):
    with RecordingProxy(sandbox.url) as proxy:
        api = client(account, url=proxy.url)
        last = api.latest_trades("AAPL").loc["AAPL", "price"]
        far_up, far_down = round(last * 1.5, 2), round(last * 0.5, 2)
        allowed = [
            dict(side="buy", type="limit", limit_price=far_down),                # rests
            dict(side="sell", type="limit", limit_price=far_up),                 # rests
            dict(side="buy", type="limit", limit_price=round(last * 0.99, 2), order_class="bracket",
                 take_profit=far_up, stop_loss=round(last * 0.6, 2)),            # exits far away
            dict(side="buy", type="stop", stop_price=far_down),
        ]
        for kw in allowed:
            posts = proxy.count("POST")
            api.submit_order("AAPL", 1, time_in_force="gtc", **kw)
            assert proxy.count("POST") == posts + 1, kw
        refused = [
            (dict(side="buy", type="limit", limit_price=far_up), "buy limit_price", "above"),
            (dict(side="sell", type="limit", limit_price=far_down), "sell limit_price", "below"),
            (dict(side="buy", type="stop", stop_price=far_up), "buy stop_price", "above"),
            (dict(side="sell", type="stop", stop_price=far_down), "sell stop_price", "below"),
            (dict(side="buy", type="limit", limit_price=round(last * 0.99, 2), order_class="bracket",
                  take_profit=far_down, stop_loss=round(last * 0.4, 2)), "sell take_profit.limit_price", "below"),
        ]
        for kw, what, where in refused:
            posts = proxy.count("POST")
            with pytest.raises(anb.PreTradeCheckError) as info:
                api.submit_order("AAPL", 1, time_in_force="gtc", **kw)
            assert info.value.limit == "price_collar" and proxy.count("POST") == posts, kw
            assert f"{what} " in str(info.value) and f"{where} the last trade" in str(info.value)
            assert info.value.value == pytest.approx(0.5, abs=0.02)


def test_a_stop_loss_under_a_long_is_protective_not_refused(sandbox, account):
    api = client(account)
    api.buy("AAPL", 5)
    poll(api.positions, lambda df: "AAPL" in df.index)
    last = api.latest_trades("AAPL").loc["AAPL", "price"]
    stop = api.sell("AAPL", 5, type="stop", stop_price=round(last * 0.5, 2), time_in_force="gtc")
    assert stop["stop_price"] == round(last * 0.5, 2)


# ------------------------------------------------------------------ buying power

def test_a_buying_power_refusal_is_an_insufficient_buying_power(sandbox, monkeypatch):
    poor = new_account(sandbox, cash=1_000)
    with RecordingProxy(sandbox.url) as proxy:
        api = client(poor, url=proxy.url)
        try:
            api.buy("AAPL", 100)
        except anb.InsufficientBuyingPower as exc:          # code written for Alpaca's own 403
            err = exc
        assert isinstance(err, anb.PreTradeCheckError) and isinstance(err, anb.ForbiddenError)
        assert err.limit == "buying_power" and err.status is None and proxy.count("POST") == 0
        assert float(err.body["buying_power"]) == pytest.approx(api.account()["buying_power"])
        assert "check_buying_power=False" in str(err) and "ALPACA_NB_BUYING_POWER_CHECK=off" in str(err)

        off = client(poor, url=proxy.url, check_buying_power=False)
        assert off.guard.check_buying_power is False
        with pytest.raises(anb.InsufficientBuyingPower) as info:
            off.buy("AAPL", 100)                              # sent: the server refuses it
        assert info.value.status == 403 and proxy.count("POST") == 1
        assert not isinstance(info.value, anb.PreTradeCheckError)

        monkeypatch.setenv("ALPACA_NB_BUYING_POWER_CHECK", "off")
        with pytest.raises(anb.InsufficientBuyingPower) as info:
            client(poor, url=proxy.url).buy("AAPL", 100)
        assert info.value.status == 403 and proxy.count("POST") == 2


# ------------------------------------------------------------------ replacing a partly filled order

def test_replacing_a_partly_filled_order_values_what_remains():
    """The displayed size plus 100 shares, the displayed size filled (the clock nearly stands
    still, so the quote does not move): re-pricing the 100 left is well within the buying power,
    and so is raising the order by 5 (105 left); the whole chain would not be. The buying power
    is 1.1 times the order's cost (the market's displayed size decides the order's size)."""
    with Sandbox(start="2024-01-03T15:00:00Z", speed=1e-6) as sb:
        quote = client(new_account(sb), max_order_notional=None).latest_quotes("AAPL").loc["AAPL"]
        qty = int(quote["ask_size"]) + 100
        acct = new_account(sb, cash=round(0.55 * qty * quote["ask_price"]))
        api = client(acct, max_order_notional=None)
        order = api.buy("AAPL", qty, type="limit", limit_price=round(quote["ask_price"], 2), time_in_force="gtc")
        order = poll(lambda: api.order(order.name), lambda o: o["status"] == "partially_filled")
        assert order["filled_qty"] == qty - 100
        power = api.account()["buying_power"]
        new_price = round(quote["ask_price"] * 0.99, 2)
        assert qty * new_price > power + 100 * quote["ask_price"]   # the old valuation refused this
        replaced = api.replace_order(order.name, limit_price=new_price)
        assert replaced["limit_price"] == new_price and replaced["replaces"] == order.name
        again = api.replace_order(replaced.name, qty=qty + 5)    # 105 left to fill
        assert again["qty"] == qty + 5
