"""Orders: validation before the wire, every order type against the sandbox, the pre-trade guard,
and duplicate-free submission under the sandbox's chaos."""

from __future__ import annotations

import re
import socket
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import requests
from _http_proxy import RecordingProxy
from conftest import admin_headers, new_account, poll

import alpaca_nb as anb
from alpaca_nb.orders import Guard, order_body, replace_body
from alpaca_nb.sandbox import Sandbox

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("ALPACA_NB_MAX_ORDER_NOTIONAL", "ALPACA_NB_MAX_ORDER_QTY", "ALPACA_NB_PRICE_COLLAR"):
        monkeypatch.delenv(name, raising=False)


def client(acct, url: str | None = None, **kw):
    return anb.connect(base_url=url or acct.url, data_url=url or acct.url, key_id=acct.key_id,
                       secret_key=acct.secret_key, **kw)


def server_orders(sb: Sandbox, acct) -> list[dict]:
    """Every order of an account as the sandbox has it (straight HTTP, chaos switched off)."""
    requests.post(f"{sb.url}/sandbox/chaos", json={"spec": ""}, headers=admin_headers(sb), timeout=10).raise_for_status()
    resp = requests.get(f"{sb.url}/v2/orders", params={"status": "all", "limit": 500, "nested": "false"},
                        headers=acct.headers, timeout=10)
    resp.raise_for_status()
    return resp.json()


# ------------------------------------------------------------------ validation, nothing sent

INVALID = [
    (dict(side="long"), "side must be one of 'buy', 'sell'; got 'long'"),
    (dict(type="market_on_close"), "type must be one of 'market', 'limit', 'stop', 'stop_limit', 'trailing_stop'"),
    (dict(time_in_force="week"), "time_in_force must be one of 'day', 'gtc', 'opg', 'cls', 'ioc', 'fok'"),
    (dict(qty=1, notional=100), "give exactly one of qty (shares) or notional (dollars); got both"),
    (dict(qty=None), "give exactly one of qty (shares) or notional (dollars); got neither"),
    (dict(qty=0), "qty must be greater than 0; got 0"),
    (dict(qty=-5), "qty must be greater than 0; got -5"),
    (dict(qty=True), "qty must be a number, not a boolean"),
    (dict(qty="ten"), "qty must be a number; got 'ten'"),
    (dict(qty=float("nan")), "qty must be a finite number"),
    (dict(qty=None, notional=-10), "notional must be greater than 0"),
    (dict(type="limit"), "a limit order needs limit_price"),
    (dict(type="stop"), "a stop order needs stop_price"),
    (dict(type="stop_limit", stop_price=100), "a stop_limit order needs limit_price"),
    (dict(type="stop_limit", limit_price=100), "a stop_limit order needs stop_price"),
    (dict(limit_price=100), "limit_price is only for limit and stop_limit orders, not market"),
    (dict(type="limit", limit_price=-1), "limit_price must be greater than 0"),
    (dict(type="stop", stop_price=0), "stop_price must be greater than 0"),
    (dict(type="limit", limit_price=150.123), "limit_price=150.123 is a sub-penny price"),
    (dict(type="trailing_stop"), "a trailing_stop order needs exactly one of trail_price or trail_percent; got neither"),
    (dict(type="trailing_stop", trail_price=1, trail_percent=1),
     "a trailing_stop order needs exactly one of trail_price or trail_percent; got both"),
    (dict(trail_percent=2), "trail_price and trail_percent are only for trailing_stop orders"),
    (dict(order_class="bracket", take_profit=200), "a bracket order needs both take_profit and stop_loss (stop_loss missing)"),
    (dict(order_class="bracket", stop_loss=100), "a bracket order needs both take_profit and stop_loss (take_profit missing)"),
    (dict(order_class="oco", type="limit", limit_price=150, take_profit=200),
     "an oco order needs both take_profit and stop_loss"),
    (dict(order_class="oto"), "an oto order needs exactly one of take_profit or stop_loss"),
    (dict(order_class="bracket", take_profit=100, stop_loss=200),
     "take_profit.limit_price (100) must be above stop_loss.stop_price (200)"),
    (dict(order_class="triangle"), "order_class must be one of"),
    (dict(take_profit=200), "take_profit/stop_loss need order_class 'bracket'"),
    (dict(order_class="bracket", take_profit={"price": 1}, stop_loss=1), "take_profit accepts limit_price"),
    (dict(extended_hours="yes"), "extended_hours must be True or False"),
    (dict(extended_hours=True), "extended_hours=True needs a simple limit order"),
    (dict(qty=0.5, type="limit", limit_price=100), "fractional qty (0.5) is only for simple market orders"),
    (dict(client_order_id="x" * 129), "client_order_id is 129 characters; at most 128"),
    (dict(client_order_id=""), "client_order_id must be a non-empty string"),
]


@pytest.mark.parametrize("kwargs,message", INVALID)
def test_invalid_orders_are_refused_before_the_wire(sandbox, account, kwargs, message):
    with RecordingProxy(sandbox.url) as proxy:
        api = client(account, url=proxy.url)
        kwargs = {"qty": 1, **kwargs}
        with pytest.raises(anb.OrderValidationError) as info:
            api.submit_order("AAPL", **kwargs)
        assert message in str(info.value)
        assert isinstance(info.value, ValueError)
        assert proxy.count() == 0                          # nothing at all was sent


@pytest.mark.parametrize("symbol,message", [("AAPL1", "is not a symbol"), ("", "is not a symbol"),
                                            ("AA PL", "is not a symbol"), (123, "must be a string")])
def test_bad_symbols(account, symbol, message):
    with pytest.raises(anb.OrderValidationError, match=message):
        client(account).buy(symbol, 1)


def test_numbers_of_every_kind_go_on_the_wire_exactly():
    body = order_body("brk.b", np.int64(3), "sell", "limit", "gtc", limit_price=np.float64(150.1),
                             extended_hours=np.bool_(True), client_order_id="mine")
    assert body == {"symbol": "BRK.B", "side": "sell", "type": "limit", "time_in_force": "gtc",
                    "qty": "3", "limit_price": "150.1", "extended_hours": True, "client_order_id": "mine"}
    body = order_body("AAPL", Decimal("0.125"), notional=None)
    assert body["qty"] == "0.125" and UUID4.match(body["client_order_id"])
    body = order_body("AAPL", None, notional=np.float32(100.5))
    assert body["notional"] == "100.5"
    body = order_body("AAPL", 1, type="limit", limit_price=0.0012)
    assert body["limit_price"] == "0.0012"                 # 4 decimals below $1


def test_replace_body_rules():
    assert replace_body(qty=np.int32(5), limit_price=Decimal("10.50")) == {"qty": "5", "limit_price": "10.5"}
    with pytest.raises(anb.OrderValidationError, match="at least one change"):
        replace_body()
    with pytest.raises(anb.OrderValidationError, match="whole number"):
        replace_body(qty=1.5)


# ------------------------------------------------------------------ every order type on the sandbox

def test_market_order_fills_and_gets_a_client_order_id(account):
    api = client(account)
    placed = api.buy("AAPL", np.int64(2))
    assert UUID4.match(placed["client_order_id"])
    assert placed["symbol"] == "AAPL" and placed["qty"] == 2.0 and placed["side"] == "buy"
    filled = poll(lambda: api.order(placed.name), lambda o: o["status"] == "filled")
    assert filled["status"] == "filled" and filled["filled_qty"] == 2.0


def test_notional_order(account):
    api = client(account)
    placed = api.buy("MSFT", notional=Decimal("250.25"))
    assert placed["notional"] == 250.25 and np.isnan(placed["qty"])


def test_resting_order_types(account):
    api = client(account)
    last = api.latest_trades("AAPL").loc["AAPL", "price"]
    low, high = round(last * 0.9, 2), round(last * 1.1, 2)
    placed = [
        api.buy("AAPL", 1, type="limit", limit_price=low, time_in_force="gtc"),
        api.buy("AAPL", 1, type="stop", stop_price=high),
        api.buy("AAPL", 1, type="stop_limit", stop_price=high, limit_price=round(high * 1.01, 2)),
        api.buy("AAPL", 1, type="trailing_stop", trail_percent=Decimal(5)),
        api.buy("AAPL", 1, type="limit", limit_price=low, extended_hours=True),
    ]
    open_orders = api.orders(status="open")
    assert set(open_orders.index) == {p.name for p in placed}
    assert open_orders.loc[placed[0].name, "limit_price"] == low
    assert open_orders.loc[placed[3].name, "trail_percent"] == 5.0
    assert bool(open_orders.loc[placed[4].name, "extended_hours"]) is True


def test_bracket_order_legs(account):
    api = client(account)
    last = api.latest_trades("AAPL").loc["AAPL", "price"]
    entry = round(last * 0.95, 2)
    placed = api.buy("AAPL", 5, type="limit", limit_price=entry, order_class="bracket",
                     take_profit=round(entry * 1.1, 2),
                     stop_loss={"stop_price": round(entry * 0.9, 2), "limit_price": round(entry * 0.89, 2)})
    assert placed["order_class"] == "bracket"
    nested = api.orders(status="all", nested=True)
    legs = nested[nested["parent_id"] == placed.name]
    assert len(legs) == 2
    assert set(legs["type"]) == {"limit", "stop_limit"}
    assert (legs["side"] == "sell").all()
    flat_parent = nested.loc[placed.name]
    assert pd.isna(flat_parent["parent_id"])
    assert len(api.order(placed.name).attrs["legs"]) == 2


def test_replace_and_cancel(account):
    api = client(account)
    last = api.latest_trades("IBM").loc["IBM", "price"]
    first = api.buy("IBM", 1, type="limit", limit_price=round(last * 0.9, 2), time_in_force="gtc")
    second = api.replace_order(first.name, qty=3, limit_price=round(last * 0.92, 2))
    assert second.name != first.name and second["replaces"] == first.name
    assert second["qty"] == 3.0
    old = poll(lambda: api.order(first.name), lambda o: o["status"] == "replaced")
    assert old["status"] == "replaced"
    api.cancel_order(second.name)
    cancelled = poll(lambda: api.order(second.name), lambda o: o["status"] == "canceled")
    assert cancelled["status"] == "canceled"
    with pytest.raises(anb.UnprocessableError):
        api.cancel_order(second.name)                       # no longer cancelable
    with pytest.raises(anb.NotFoundError) as info:
        api.cancel_order("00000000-0000-4000-8000-000000000000")
    assert info.value.status == 404 and info.value.code == 40410000


def test_cancel_all_orders(account):
    api = client(account)
    last = api.latest_trades("AAPL").loc["AAPL", "price"]
    ids = {api.buy("AAPL", 1, type="limit", limit_price=round(last * 0.9, 2)).name for _ in range(3)}
    result = api.cancel_all_orders()
    assert set(result["id"]) == ids
    assert (result["status"] == 200).all()
    assert poll(lambda: api.orders(status="open"), lambda df: df.empty).empty
    assert api.cancel_all_orders().empty


def test_close_positions(account):
    api = client(account)
    api.buy("AAPL", 10)
    api.buy("MSFT", 4)
    poll(lambda: api.positions(), lambda df: len(df) == 2)
    closing = api.close_position("AAPL", qty=4)
    assert closing["side"] == "sell" and closing["qty"] == 4.0
    assert poll(lambda: api.positions(), lambda df: df.loc["AAPL", "qty"] == 6).loc["AAPL", "qty"] == 6.0
    half = api.close_position("AAPL", percentage=50)
    assert half["qty"] == 3.0
    with pytest.raises(anb.OrderValidationError, match="qty or percentage, not both"):
        api.close_position("AAPL", qty=1, percentage=1)
    result = api.close_all_positions()
    assert set(result["symbol"]) == {"AAPL", "MSFT"} and (result["status"] == 200).all()
    assert poll(lambda: api.positions(), lambda df: df.empty).empty
    with pytest.raises(anb.NotFoundError):
        api.close_position("AAPL")


# ------------------------------------------------------------------ the pre-trade guard

def _refused(api, proxy, **kw) -> anb.PreTradeCheckError:
    posts = proxy.count("POST")
    with pytest.raises(anb.PreTradeCheckError) as info:
        api.submit_order("AAPL", **kw)
    assert proxy.count("POST") == posts                     # refused before the wire
    return info.value


def test_guard_limits(sandbox, account):
    with RecordingProxy(sandbox.url) as proxy:
        api = client(account, url=proxy.url)
        assert api.guard == Guard(1_000_000.0, 100_000.0, 0.25)   # generous defaults
        err = _refused(api, proxy, qty=200_000)
        assert err.limit == "max_order_qty" and err.value == 200_000 and err.allowed == 100_000
        assert "by 100,000" in str(err) and "anb.connect(max_order_qty=" in str(err)
        assert "ALPACA_NB_MAX_ORDER_QTY" in str(err)

        last = api.latest_trades("AAPL").loc["AAPL", "price"]
        err = _refused(api, proxy, qty=90_000, type="limit", limit_price=round(last, 2))
        assert err.limit == "max_order_notional" and err.allowed == 1_000_000
        assert err.value == pytest.approx(90_000 * round(last, 2))
        assert "ALPACA_NB_MAX_ORDER_NOTIONAL" in str(err)

        err = _refused(api, proxy, qty=1, type="limit", limit_price=round(last * 1.5, 2))
        assert err.limit == "price_collar" and err.allowed == 0.25
        assert err.value == pytest.approx(0.5, abs=0.01)
        assert "price_collar=" in str(err) and "last trade" in str(err)


def test_guard_checks_buying_power(sandbox):
    poor = new_account(sandbox, cash=1_000)
    with RecordingProxy(sandbox.url) as proxy:
        api = client(poor, url=proxy.url)
        err = _refused(api, proxy, qty=100)
        assert err.limit == "buying_power"
        assert err.allowed == pytest.approx(api.account()["buying_power"])
        assert "more than the account's buying power" in str(err)


def test_guard_checks_short_sales_against_buying_power(sandbox):
    """A sell with no long position behind it opens a short: it uses buying power like a buy."""
    acct = new_account(sandbox, cash=10_000)                      # buying power 20,000 (2x margin)
    with RecordingProxy(sandbox.url) as proxy:
        api = client(acct, url=proxy.url)
        power = api.account()["buying_power"]
        last = api.latest_trades("AAPL").loc["AAPL", "price"]
        qty = int(power / last) + 20                              # a little over buying power
        posts = proxy.count("POST")
        with pytest.raises(anb.PreTradeCheckError) as info:
            api.sell("AAPL", qty)
        assert proxy.count("POST") == posts                       # refused before the wire
        err = info.value
        assert err.limit == "buying_power" and err.allowed == pytest.approx(power)
        assert err.value == pytest.approx(qty * last, rel=0.05)
        assert f"selling {qty:,} shares of AAPL short" in str(err)
        assert "more than the account's buying power" in str(err)
        assert proxy.count("GET", "/v2/positions") == 1           # it asked whether AAPL is held

        short = api.sell("AAPL", 10)                              # within buying power: placed
        assert proxy.count("POST") == posts + 1
        poll(lambda: api.positions(), lambda df: "AAPL" in df.index)
        with pytest.raises(anb.PreTradeCheckError, match="adds to a short position"):
            api.sell("AAPL", qty)                                 # adding to the short: checked too
    assert short["side"] == "sell"


def test_guard_lets_exits_through_whatever_the_buying_power(sandbox):
    """Selling a long and covering a short use no buying power: the guard never refuses them
    for it, even when the position is worth far more than the buying power left."""
    acct = new_account(sandbox, cash=10_000)
    with RecordingProxy(sandbox.url) as proxy:
        api = client(acct, url=proxy.url)
        last = api.latest_trades("AAPL").loc["AAPL", "price"]
        qty = int(17_000 / last)                                  # most of the 20,000 buying power
        api.buy("AAPL", qty)
        held = poll(lambda: api.positions(), lambda df: "AAPL" in df.index)
        assert held.loc["AAPL", "qty"] == qty
        power = api.account()["buying_power"]
        assert qty * last > 2 * power                             # worth far more than what is left
        posts = proxy.count("POST")
        sold = api.sell("AAPL", qty)                              # a plain long reduction: sent
        assert proxy.count("POST") == posts + 1 and sold["qty"] == qty
        poll(lambda: api.positions(), lambda df: "AAPL" not in df.index)

        api.sell("MSFT", int(17_000 / api.latest_trades("MSFT").loc["MSFT", "price"]))   # a short
        short = poll(lambda: api.positions(), lambda df: "MSFT" in df.index).loc["MSFT", "qty"]
        assert short < 0
        power = api.account()["buying_power"]
        cover = api.buy("MSFT", -short)                           # covering it: sent
        assert cover["side"] == "buy" and proxy.count("POST") == posts + 3
        assert -short * api.latest_trades("MSFT").loc["MSFT", "price"] > power
        assert poll(lambda: api.positions(), lambda df: df.empty).empty


def test_guard_counts_the_replaced_orders_hold_as_available(sandbox):
    """A replace is compared with the buying power plus what the order being replaced holds."""
    acct = new_account(sandbox, cash=10_000)
    api = client(acct)
    last = api.latest_trades("AAPL").loc["AAPL", "price"]
    price = round(last * 0.8, 2)                                  # rests: far under the market
    order = api.buy("AAPL", int(16_000 / price), type="limit", limit_price=price)
    power = api.account()["buying_power"]
    assert power < 16_000 * 0.5                                   # the order holds most of it
    replaced = api.replace_order(order.name, limit_price=round(last * 0.81, 2))
    assert replaced["limit_price"] == round(last * 0.81, 2)
    with pytest.raises(anb.PreTradeCheckError) as info:           # but not more than both together
        api.replace_order(replaced.name, qty=int(40_000 / price))
    assert info.value.limit == "buying_power" and "the order being replaced holds" in str(info.value)


def test_guard_messages_say_how_to_change_each_limit(sandbox, account):
    api = client(account, max_order_qty=10, max_order_notional=1_000, price_collar=0.1)
    last = api.latest_trades("AAPL").loc["AAPL", "price"]
    checks = [
        (dict(qty=25), "max_order_qty", ["25 shares of AAPL is over max_order_qty 10 shares by 15 shares",
                                         "anb.connect(max_order_qty=", "ALPACA_NB_MAX_ORDER_QTY=",
                                         "max_order_qty=None or ALPACA_NB_MAX_ORDER_QTY=off turns the check off"]),
        (dict(qty=9), "max_order_notional", ["is over max_order_notional $1,000.00 by $",
                                             "anb.connect(max_order_notional=", "ALPACA_NB_MAX_ORDER_NOTIONAL=",
                                             "ALPACA_NB_MAX_ORDER_NOTIONAL=off turns the check off"]),
        (dict(qty=1, type="limit", limit_price=round(last * 1.155, 2)), "price_collar",
         ["above the last trade", "beyond price_collar 10% by 5", "anb.connect(price_collar=0.16)",
          "ALPACA_NB_PRICE_COLLAR=0.16", "ALPACA_NB_PRICE_COLLAR=off turns the check off"]),
    ]
    for kwargs, limit, phrases in checks:
        with pytest.raises(anb.PreTradeCheckError) as info:
            api.buy("AAPL", **kwargs)
        assert info.value.limit == limit
        for phrase in phrases:
            assert phrase in str(info.value), (phrase, str(info.value))


def test_guard_without_a_last_trade():
    """No last trade: a limit it needs the price for refuses (saying how to turn it off); the
    buying power estimate alone never blocks an order (the server checks buying power anyway)."""
    def no_price(symbol):
        return None

    body = order_body("AAPL", 10, "buy")
    with pytest.raises(anb.PreTradeCheckError) as info:
        Guard(1_000_000.0, None, None).check(body, last_price=no_price, buying_power=lambda: 1.0)
    assert info.value.limit == "max_order_notional"
    assert "anb.connect(max_order_notional=None) or ALPACA_NB_MAX_ORDER_NOTIONAL=off" in str(info.value)
    Guard(None, None, None).check(body, last_price=no_price, buying_power=lambda: 1.0)   # passes
    with pytest.raises(anb.PreTradeCheckError, match="price_collar"):
        Guard(None, None, 0.1).check(order_body("AAPL", 1, "buy", "limit", limit_price=10),
                                     last_price=no_price, buying_power=lambda: 1e9)


def test_guard_is_configurable(sandbox, account, monkeypatch):
    monkeypatch.setenv("ALPACA_NB_MAX_ORDER_QTY", "5")
    with RecordingProxy(sandbox.url) as proxy:
        api = client(account, url=proxy.url)
        assert api.guard.max_order_qty == 5
        assert _refused(api, proxy, qty=6).allowed == 5
        api = client(account, url=proxy.url, max_order_qty=10, price_collar=0.6)
        assert api.buy("AAPL", 6)["qty"] == 6.0
        last = api.latest_trades("AAPL").loc["AAPL", "price"]
        api.buy("AAPL", 1, type="limit", limit_price=round(last * 1.5, 2))   # inside a 60% collar
        api = client(account, url=proxy.url, max_order_qty=None, max_order_notional=None, price_collar=None)
        assert api.guard == Guard(None, None, None)
        posts = proxy.count("POST")
        placed = api.buy("AAPL", 150_000, type="limit", limit_price=1)   # far from the market, 150k shares
        assert placed["qty"] == 150_000 and proxy.count("POST") == posts + 1


def test_guard_on_replace(account):
    api = client(account)
    last = api.latest_trades("AAPL").loc["AAPL", "price"]
    placed = api.buy("AAPL", 1, type="limit", limit_price=round(last * 0.9, 2))
    with pytest.raises(anb.PreTradeCheckError) as info:
        api.replace_order(placed.name, limit_price=round(last * 1.5, 2))   # a buy far above
    assert info.value.limit == "price_collar"
    placed = api.replace_order(placed.name, limit_price=round(last * 0.5, 2))   # far below: rests
    with pytest.raises(anb.PreTradeCheckError, match="max_order_qty"):
        api.replace_order(placed.name, qty=500_000)
    assert api.order(placed.name)["status"] in ("new", "accepted", "pending_new")


# ------------------------------------------------------------------ never duplicated

def test_no_duplicates_under_chaos():
    """30% of order answers lost after the order was accepted, 10% 503s: every submission gives
    exactly one order, and the number of orders equals the number of submissions."""
    with Sandbox(chaos="lose=0.3,503=0.1,scope=/v2/orders,seed=11") as sb:
        acct = new_account(sb)
        with RecordingProxy(sb.url) as proxy:
            api = client(acct, url=proxy.url)
            submitted = [api.submit_order("AAPL", 1) for _ in range(25)]
            posts = proxy.count("POST", "/v2/orders")
            lookups = proxy.count("GET", "/v2/orders:by_client_order_id")
        on_server = server_orders(sb, acct)
    assert len(on_server) == len(submitted) == 25
    assert {o["id"] for o in on_server} == {s.name for s in submitted}
    assert {o["client_order_id"] for o in on_server} == {s["client_order_id"] for s in submitted}
    assert posts > 25 and lookups > 0                        # the faults really happened


def test_lost_answers_are_reconciled_not_resent():
    with Sandbox(chaos="lose=1,scope=/v2/orders,methods=POST") as sb:
        acct = new_account(sb)
        with RecordingProxy(sb.url) as proxy:
            api = client(acct, url=proxy.url)
            placed = api.buy("AAPL", 1, client_order_id="lost-answer-1")
            assert proxy.count("POST", "/v2/orders") == 1    # the lookup found it: no second POST
            assert proxy.count("GET", "/v2/orders:by_client_order_id") == 1
        assert placed["client_order_id"] == "lost-answer-1"
        assert len(server_orders(sb, acct)) == 1


def test_repeated_submission_returns_the_same_order(account):
    api = client(account)
    first = api.buy("AAPL", 1, client_order_id="double-click-1")
    again = api.buy("AAPL", 1, client_order_id="double-click-1")
    assert again.name == first.name
    with pytest.raises(anb.UnprocessableError, match="client_order_id must be unique") as info:
        api.buy("MSFT", 1, client_order_id="double-click-1")   # a different order, same id
    assert (info.value.status, info.value.code) == (422, 40010001)  # as Alpaca answers it
    assert len(api.orders(status="all")) == 1


def test_gives_up_saying_the_state_is_unknown_never_that_nothing_was_placed():
    """Every POST answered 503: the server may or may not have acted, so after looking for the
    order the error says its state is UNKNOWN and how to check, and carries the client id."""
    with Sandbox(chaos="503=1,scope=/v2/orders,methods=POST") as sb:
        acct = new_account(sb)
        with RecordingProxy(sb.url) as proxy:
            api = client(acct, url=proxy.url, retries=3, reconcile_timeout=0.2)
            with pytest.raises(anb.OrderStateUnknown) as info:
                api.buy("AAPL", 1, client_order_id="five-oh-three")
            assert proxy.count("POST", "/v2/orders") == 3
            assert proxy.count("GET", "/v2/orders:by_client_order_id") >= 3
        err = info.value
        assert err.client_order_id == "five-oh-three" and err.status == 503 and err.attempts == 3
        assert "UNKNOWN" in str(err) and "api.order(client_order_id='five-oh-three')" in str(err)
        assert "nothing was placed" not in str(err) + "".join(getattr(err, "__notes__", []))
        assert server_orders(sb, acct) == []


def test_nothing_was_placed_only_when_no_attempt_reached_the_server():
    with socket.socket() as s:                            # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = anb.connect(base_url=f"http://127.0.0.1:{port}", data_url=f"http://127.0.0.1:{port}",
                      key_id="K", secret_key="S", retries=2, max_order_notional=None,
                      check_buying_power=False, price_collar=None)
    with pytest.raises(anb.AlpacaConnectionError) as info:
        api.buy("AAPL", 1)
    assert info.value.sent is False and info.value.attempts == 2
    assert any("no attempt was acted on" in note for note in info.value.__notes__)


def test_orders_refused_with_429_every_time_were_not_placed():
    """A 429 is a refusal before any work: the POST is sent again after Retry-After without a
    lookup, and when every attempt was refused the error may say nothing was placed."""
    with Sandbox(chaos="429=1,scope=/v2/orders,methods=POST") as sb:
        acct = new_account(sb)
        with RecordingProxy(sb.url) as proxy:
            api = client(acct, url=proxy.url, retries=2)
            with pytest.raises(anb.RateLimitError) as info:
                api.buy("AAPL", 1, client_order_id="throttled")
            assert proxy.count("POST", "/v2/orders") == 2
            assert proxy.count("GET", "/v2/orders:by_client_order_id") == 0
        assert info.value.attempts == 2 and info.value.retry_after == 1.0
        assert any("no order with client_order_id='throttled' was placed" in n for n in info.value.__notes__)
        assert server_orders(sb, acct) == []
