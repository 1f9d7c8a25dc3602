"""Sandbox matching engine through real sockets: order types, time in force, partial fills,
order classes, shorts, buying power and equity arithmetic, replace and cancel.

A module sandbox with a frozen virtual clock (always-open market) makes every fill checkable
against the reference market's quote of the instant it happened; tests that need time to pass
move the clock with ``POST /sandbox/clock``. Every test trades on a fresh account.
"""

from __future__ import annotations

import math

import pytest

from sandbox_trading_support import (advance, frozen, new_api, num, reference_market, ts)

SYMBOL = "AAPL"


@pytest.fixture(scope="module")
def sb():
    with frozen() as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def market(sb):
    return reference_market(sb)


@pytest.fixture
def api(sb):
    return new_api(sb)


@pytest.fixture
def rich(sb):
    """An account large enough for orders bigger than any displayed quote."""
    return new_api(sb, cash=10_000_000)


def quote_at(market, order_or_fill_time: str, symbol: str = SYMBOL):
    return market.quote_at(symbol, ts(order_or_fill_time))


def close(a: float, b: float, tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=0, abs_tol=tol)


# ---------------------------------------------------------------- market and limit orders

def test_market_buy_fills_at_the_ask_and_books_cash_and_position(api, market):
    before = api.account()
    placed = api.order(symbol=SYMBOL, qty=3)
    assert placed["status"] == "accepted"               # the POST answers the accepted order
    order = api.get_order(placed["id"])
    assert order["status"] == "filled" and order["filled_qty"] == "3"
    quote = quote_at(market, order["filled_at"])
    assert num(order["filled_avg_price"]) == quote.ask
    pos = api.positions()[SYMBOL]
    assert pos["qty"] == "3" and pos["side"] == "long"
    assert num(pos["avg_entry_price"]) == quote.ask
    assert close(num(pos["cost_basis"]), 3 * quote.ask)
    after = api.account()
    assert close(num(after["cash"]), num(before["cash"]) - 3 * quote.ask)
    assert close(num(after["equity"]), num(after["cash"]) + num(after["long_market_value"])
                 + num(after["short_market_value"]))
    assert close(num(after["long_market_value"]), num(pos["market_value"]))


def test_market_sell_closes_at_the_bid(api, market):
    api.order(symbol=SYMBOL, qty=4)
    cash = num(api.account()["cash"])
    sell = api.order(symbol=SYMBOL, qty=4, side="sell")
    order = api.get_order(sell["id"])
    assert order["status"] == "filled"
    assert order["position_intent"] == "sell_to_close"
    bid = quote_at(market, order["filled_at"]).bid
    assert num(order["filled_avg_price"]) == bid
    assert SYMBOL not in api.positions()
    assert close(num(api.account()["cash"]), cash + 4 * bid)


def test_marketable_limit_gets_price_improvement_and_resting_limit_holds_buying_power(api, market):
    ask = market.quote_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).ask
    improved = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=round(ask + 5, 2))
    filled = api.get_order(improved["id"])
    assert filled["status"] == "filled"
    assert num(filled["filled_avg_price"]) == quote_at(market, filled["filled_at"]).ask
    assert num(filled["filled_avg_price"]) < ask + 5

    bp_before = num(api.account()["buying_power"])
    resting = api.order(symbol=SYMBOL, qty=10, type="limit", limit_price=round(ask * 0.5, 2),
                        time_in_force="gtc")
    order = api.get_order(resting["id"])
    assert order["status"] == "new" and order["filled_qty"] == "0"
    hold = 10 * round(ask * 0.5, 2)
    assert close(num(api.account()["buying_power"]), bp_before - hold, 1e-4)
    assert api.delete(f"/v2/orders/{order['id']}").status_code == 204
    assert close(num(api.account()["buying_power"]), bp_before, 1e-4)


def test_stop_orders_trigger_on_the_last_trade(api, market):
    last = market.trade_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).price
    waiting = api.order(symbol=SYMBOL, qty=1, type="stop", stop_price=round(last * 1.2, 2))
    through = api.order(symbol=SYMBOL, qty=1, type="stop", stop_price=round(last * 0.995, 2))
    assert api.get_order(waiting["id"])["status"] == "new"
    elected = api.get_order(through["id"])
    assert elected["status"] == "filled"
    assert num(elected["filled_avg_price"]) == quote_at(market, elected["filled_at"]).ask
    # Alpaca protects an elected buy stop with a limit 2.5% above the stop (4% under $50):
    # a stop far below the market is elected but cannot buy at the ask
    deep = api.order(symbol=SYMBOL, qty=1, type="stop", stop_price=round(last * 0.8, 2))
    assert api.get_order(deep["id"])["status"] == "new"
    # a stop-limit elected at once but with a limit far below the market rests
    resting = api.order(symbol=SYMBOL, qty=1, type="stop_limit", stop_price=round(last * 0.8, 2),
                        limit_price=round(last * 0.5, 2))
    assert api.get_order(resting["id"])["status"] == "new"
    # a sell stop above the market is elected at once and sells at the bid
    sell = api.order(symbol=SYMBOL, qty=1, side="sell", type="stop", stop_price=round(last * 1.2, 2))
    sold = api.get_order(sell["id"])
    assert sold["status"] == "filled"
    assert num(sold["filled_avg_price"]) == quote_at(market, sold["filled_at"]).bid


def test_trailing_stop_tracks_the_high_water_mark_and_triggers(sb, api, market):
    api.order(symbol=SYMBOL, qty=5)
    trail = api.order(symbol=SYMBOL, qty=5, side="sell", type="trailing_stop", trail_price=0.05,
                      time_in_force="gtc")
    order = api.get_order(trail["id"])
    assert order["status"] == "new"
    hwm = num(order["hwm"])
    assert close(num(order["stop_price"]), round(hwm - 0.05, 2))
    pct = api.order(symbol=SYMBOL, qty=1, type="trailing_stop", trail_percent=50)
    buy_trail = api.get_order(pct["id"])
    assert close(num(buy_trail["stop_price"]), round(num(buy_trail["hwm"]) * 1.5, 2))
    retrailed = api.patch(f"/v2/orders/{pct['id']}", {"trail": 40})
    assert retrailed.status_code == 200, retrailed.text
    retrailed = retrailed.json()
    assert retrailed["trail_percent"] == "40" and retrailed["hwm"] == buy_trail["hwm"]
    assert close(num(retrailed["stop_price"]), round(num(buy_trail["hwm"]) * 1.4, 2))
    wrong = api.patch(f"/v2/orders/{retrailed['id']}", {"stop_price": 1})
    assert wrong.status_code == 422 and wrong.json()["code"] == 40010001
    # time passes: the price wanders; a 5-cent trail is hit within the hour
    for _ in range(60):
        advance(sb, 60)
        order = api.get_order(trail["id"])
        if order["status"] == "filled":
            break
    assert order["status"] == "filled"
    assert num(order["hwm"]) >= hwm
    assert SYMBOL not in api.positions()


# ---------------------------------------------------------------- time in force

def test_ioc_fills_the_displayed_size_and_cancels_the_rest(rich, market):
    api = rich
    placed = api.order(symbol=SYMBOL, qty=50_000, time_in_force="ioc")
    order = api.get_order(placed["id"])
    assert order["status"] == "canceled"
    quote = quote_at(market, order["canceled_at"])
    assert num(order["filled_qty"]) == quote.ask_size
    assert api.positions()[SYMBOL]["qty"] == str(quote.ask_size)


def test_fok_fills_entirely_or_not_at_all(rich, market):
    api = rich
    big = api.get_order(api.order(symbol=SYMBOL, qty=50_000, time_in_force="fok")["id"])
    assert big["status"] == "canceled" and big["filled_qty"] == "0"
    small = api.get_order(api.order(symbol=SYMBOL, qty=2, time_in_force="fok")["id"])
    assert small["status"] == "filled" and small["filled_qty"] == "2"


def next_ny_midnight(clock_timestamp: str) -> int:
    """The next New York midnight after a /v2/clock timestamp (ns): where an always-open
    sandbox's trading day ends (/v2/clock's next_close is the NYSE calendar's close)."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    now = dt.datetime.fromisoformat(clock_timestamp).astimezone(ZoneInfo("America/New_York"))
    return ts((dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(0),
                                   tzinfo=ZoneInfo("America/New_York"))).isoformat())


def test_day_orders_expire_at_ny_midnight_and_gtc_orders_stay(sb, api, market):
    ask = market.quote_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).ask
    day = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=round(ask * 0.5, 2))
    gtc = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=round(ask * 0.5, 2),
                    time_in_force="gtc")
    expires = api.get_order(day["id"])["expires_at"]
    clock = api.get("/v2/clock").json()
    midnight = next_ny_midnight(clock["timestamp"])
    assert ts(expires) == midnight                         # always-open: the next NY midnight
    advance(sb, (midnight - ts(clock["timestamp"])) / 1e9 + 1)
    expired = api.get_order(day["id"])
    assert expired["status"] == "expired"
    assert ts(expired["expired_at"]) == midnight
    assert api.get_order(gtc["id"])["status"] == "new"


def test_opg_and_cls_execute_in_the_auctions(sb, api, market):
    clock = api.get("/v2/clock").json()
    opg = api.order(symbol=SYMBOL, qty=2, time_in_force="opg")
    cls = api.order(symbol=SYMBOL, qty=3, time_in_force="cls")
    assert opg["status"] == "accepted" and cls["status"] == "accepted"
    midnight = next_ny_midnight(clock["timestamp"])          # always-open: today's close = tomorrow's open
    advance(sb, (midnight - ts(clock["timestamp"])) / 1e9 + 1)
    o, c = api.get_order(opg["id"]), api.get_order(cls["id"])
    assert o["status"] == "filled" and c["status"] == "filled"
    # both auctions run at midnight, at the live present's last trade (never at the 9:30 open
    # that is hours ahead): the close at the day's last trade, the open at the one of midnight
    assert num(c["filled_avg_price"]) == market.trade_at(SYMBOL, midnight - 1).price
    assert num(o["filled_avg_price"]) == market.trade_at(SYMBOL, midnight).price
    assert ts(o["filled_at"]) == ts(c["filled_at"]) == midnight


# ---------------------------------------------------------------- quantities

def in_regular_hours(sb, api) -> None:
    """Move the clock to the NYSE calendar's regular hours if it is outside them: the market
    data follows NYSE sessions even in always-open mode, so quotes only move inside them."""
    clock = api.get("/v2/clock").json()
    if ts(clock["next_open"]) < ts(clock["next_close"]):       # the market is closed
        advance(sb, (ts(clock["next_open"]) - ts(clock["timestamp"])) / 1e9 + 60)


def test_large_orders_fill_partially_against_each_displayed_quote(sb, rich, market):
    api = rich
    in_regular_hours(sb, api)
    placed = api.order(symbol=SYMBOL, qty=3000, time_in_force="gtc")
    order = api.get_order(placed["id"])
    assert order["status"] == "partially_filled"
    for _ in range(30):
        if order["status"] == "filled":
            break
        advance(sb, 30)
        order = api.get_order(placed["id"])
    assert order["status"] == "filled" and order["filled_qty"] == "3000"
    fills = api.fills(placed["id"])
    assert len(fills) >= 2
    assert [f["type"] for f in fills] == ["partial_fill"] * (len(fills) - 1) + ["fill"]
    seen = set()
    for fill in fills:
        quote = market.quote_at(SYMBOL, ts(fill["transaction_time"]))
        assert quote.t not in seen                       # each quote's size is taken once
        seen.add(quote.t)
        assert num(fill["price"]) == quote.ask
        assert num(fill["qty"]) <= quote.ask_size
    assert sum(num(f["qty"]) for f in fills) == 3000
    vwap = sum(num(f["qty"]) * num(f["price"]) for f in fills) / 3000
    assert close(num(order["filled_avg_price"]), vwap, 1e-6)
    assert int(fills[-1]["cum_qty"]) == 3000 and fills[-1]["leaves_qty"] == "0"


def test_orders_on_one_side_share_each_quotes_displayed_size(sb, rich, market):
    api = rich
    in_regular_hours(sb, api)
    first = api.order(symbol=SYMBOL, qty=20_000, time_in_force="gtc")
    second = api.order(symbol=SYMBOL, qty=20_000, time_in_force="gtc")
    a, b = api.get_order(first["id"]), api.get_order(second["id"])
    quote = quote_at(market, a["updated_at"])
    assert num(a["filled_qty"]) == quote.ask_size            # the older order takes the size ...
    assert b["status"] == "new" and b["filled_qty"] == "0"   # ... and none is left at that quote
    other = new_api(sb, cash=10_000_000)                      # another account sees the whole size
    theirs = other.get_order(other.order(symbol=SYMBOL, qty=20_000, time_in_force="gtc")["id"])
    assert num(theirs["filled_qty"]) == quote_at(market, theirs["updated_at"]).ask_size
    for _ in range(3):
        advance(sb, 60)
    fills = api.fills()
    taken: dict[int, float] = {}
    for fill in fills:
        q = market.quote_at(SYMBOL, ts(fill["transaction_time"]))
        assert num(fill["price"]) == q.ask
        taken[q.t] = taken.get(q.t, 0.0) + num(fill["qty"])
    assert len(taken) >= 2
    for t, qty in taken.items():      # both orders together: exactly each quote's size, once
        assert qty == market.quote_at(SYMBOL, t).ask_size, (t, qty)
    assert {f["order_id"] for f in fills} == {first["id"]}    # time priority: all to the older
    total = sum(num(api.get_order(o["id"])["filled_qty"]) for o in (first, second))
    assert total == sum(market.quote_at(SYMBOL, t).ask_size for t in taken)
    for order in (first, second):
        assert api.delete(f"/v2/orders/{order['id']}").status_code == 204
    assert other.delete(f"/v2/orders/{theirs['id']}").status_code == 204


def test_notional_buy_converts_to_fractional_qty_at_the_fill_price(api, market):
    placed = api.order(symbol=SYMBOL, notional=1000)
    assert placed["notional"] == "1000" and placed["qty"] is None
    order = api.get_order(placed["id"])
    assert order["status"] == "filled"
    price = num(order["filled_avg_price"])
    assert price == quote_at(market, order["filled_at"]).ask
    expected = math.floor(1000 / price * 1e9) / 1e9
    assert close(num(order["filled_qty"]), expected, 1e-9)
    assert num(order["filled_qty"]) * price <= 1000


def test_fractional_quantities_only_for_market_day_orders_of_fractionable_assets(api):
    ok = api.order(symbol=SYMBOL, qty=0.5)
    assert api.get_order(ok["id"])["filled_qty"] == "0.5"
    for body, message in [
        ({"type": "limit", "limit_price": 1.0}, "fractional orders must be market orders"),
        ({"time_in_force": "gtc"}, "fractional orders must be DAY orders"),
    ]:
        resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 0.5, "side": "buy", "type": "market",
                                       "time_in_force": "day", **body})
        assert resp.status_code == 422
        assert resp.json() == {"code": 42210000, "message": message}
    resp = api.post("/v2/orders", {"symbol": "BRK.A", "qty": "0.5", "side": "buy", "type": "market",
                                   "time_in_force": "day"})
    assert resp.status_code == 422 and resp.json()["code"] == 42210000
    assert "not fractionable" in resp.json()["message"]


# ---------------------------------------------------------------- order classes

def test_bracket_legs_are_held_until_the_entry_fills_then_one_exit_cancels_the_other(sb, api, market):
    last = market.trade_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).price
    placed = api.order(symbol=SYMBOL, qty=10, order_class="bracket", time_in_force="gtc",
                       take_profit={"limit_price": round(last * 1.5, 2)},
                       stop_loss={"stop_price": round(last * 0.5, 2),
                                  "limit_price": round(last * 0.49, 2)})
    assert placed["order_class"] == "bracket"
    assert [leg["status"] for leg in placed["legs"]] == ["held", "held"]
    parent = api.get_order(placed["id"], nested="true")
    assert parent["status"] == "filled"
    legs = {leg["type"]: leg for leg in parent["legs"]}
    assert set(legs) == {"limit", "stop_limit"}
    assert all(leg["status"] == "new" and leg["side"] == "sell" and leg["qty"] == "10"
               for leg in legs.values())
    # the position is fully held by the exits: no other sell is accepted
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 1, "side": "sell", "type": "market",
                                   "time_in_force": "day"})
    assert resp.status_code == 403
    assert resp.json()["held_for_orders"] == "10" and resp.json()["available"] == "0"
    # move the take-profit into the market: it fills, the stop-loss is canceled
    bid = market.quote_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).bid
    replaced = api.patch(f"/v2/orders/{legs['limit']['id']}", {"limit_price": round(bid * 0.9, 2)})
    assert replaced.status_code == 200, replaced.text
    take_profit = api.get_order(replaced.json()["id"])
    assert take_profit["status"] == "filled"
    assert api.get_order(legs["stop_limit"]["id"])["status"] == "canceled"
    assert SYMBOL not in api.positions()
    nested = api.get("/v2/orders", status="all", nested="true").json()
    assert [o["id"] for o in nested] == [placed["id"]]
    assert {leg["id"] for leg in nested[0]["legs"]} == {take_profit["id"], legs["stop_limit"]["id"]}
    flat = api.get("/v2/orders", status="all").json()
    assert len(flat) == 4                    # parent, both legs and the replaced take-profit


def test_canceling_an_unfilled_bracket_entry_cancels_its_held_legs(api, market):
    last = market.trade_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).price
    entry = round(last * 0.6, 2)
    placed = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=entry, order_class="bracket",
                       take_profit={"limit_price": round(entry * 1.1, 2)},
                       stop_loss={"stop_price": round(entry * 0.9, 2)})
    assert api.get_order(placed["id"])["status"] == "new"
    assert api.delete(f"/v2/orders/{placed['id']}").status_code == 204
    parent = api.get_order(placed["id"], nested="true")
    assert parent["status"] == "canceled"
    assert [leg["status"] for leg in parent["legs"]] == ["canceled", "canceled"]
    assert api.get("/v2/orders").json() == []


def test_oco_exits_a_position_and_canceling_one_cancels_both(api, market):
    api.order(symbol=SYMBOL, qty=20)
    last = market.trade_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).price
    oco = api.order(symbol=SYMBOL, qty=20, side="sell", type="limit", order_class="oco",
                    time_in_force="gtc", take_profit={"limit_price": round(last * 1.3, 2)},
                    stop_loss={"stop_price": round(last * 0.7, 2)})
    parent = api.get_order(oco["id"], nested="true")
    assert parent["type"] == "limit" and num(parent["limit_price"]) == round(last * 1.3, 2)
    assert [leg["type"] for leg in parent["legs"]] == ["stop"]
    assert parent["status"] == "new" and parent["legs"][0]["status"] == "new"
    assert api.delete(f"/v2/orders/{parent['legs'][0]['id']}").status_code == 204
    assert api.get_order(oco["id"])["status"] == "canceled"
    assert api.positions()[SYMBOL]["qty"] == "20"
    # an oco needs a position to exit
    resp = api.post("/v2/orders", {"symbol": "MSFT", "qty": 1, "side": "sell", "type": "limit",
                                   "order_class": "oco", "time_in_force": "gtc",
                                   "take_profit": {"limit_price": 10000},
                                   "stop_loss": {"stop_price": 1}})
    assert resp.status_code == 403 and resp.json()["code"] == 40310000


def test_oto_entry_with_a_single_stop_loss(api, market):
    last = market.trade_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).price
    placed = api.order(symbol=SYMBOL, qty=2, order_class="oto",
                       stop_loss={"stop_price": round(last * 0.8, 2)})
    parent = api.get_order(placed["id"], nested="true")
    assert parent["status"] == "filled" and len(parent["legs"]) == 1
    leg = parent["legs"][0]
    assert leg["type"] == "stop" and leg["side"] == "sell" and leg["status"] == "new"


def test_exit_prices_must_clear_the_base_price(api, market):
    last = market.trade_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).price
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 1, "side": "buy", "type": "market",
                                   "time_in_force": "gtc", "order_class": "bracket",
                                   "take_profit": {"limit_price": round(last * 1.5, 2)},
                                   "stop_loss": {"stop_price": round(last * 1.2, 2)}})
    assert resp.status_code == 422 and resp.json()["code"] == 42210000
    assert resp.json()["message"].startswith("stop_loss.stop_price must be <= base_price - 0.01")
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 1, "side": "buy", "type": "market",
                                   "time_in_force": "gtc", "order_class": "bracket",
                                   "take_profit": {"limit_price": 1}, "stop_loss": {"stop_price": 2}})
    assert resp.status_code == 422 and resp.json()["code"] == 42210000
    assert api.get("/v2/orders", status="all").json() == []


# ---------------------------------------------------------------- shorts

def test_short_sale_and_cover(api, market):
    start = api.account()
    short = api.get_order(api.order(symbol=SYMBOL, qty=10, side="sell")["id"])
    assert short["status"] == "filled" and short["position_intent"] == "sell_to_open"
    bid = num(short["filled_avg_price"])
    assert bid == quote_at(market, short["filled_at"]).bid
    pos = api.positions()[SYMBOL]
    assert pos["side"] == "short" and pos["qty"] == "-10"
    assert num(pos["market_value"]) < 0 and close(num(pos["cost_basis"]), -10 * bid)
    assert close(num(pos["unrealized_pl"]), num(pos["market_value"]) - num(pos["cost_basis"]))
    acct = api.account()
    assert close(num(acct["cash"]), num(start["cash"]) + 10 * bid)
    assert close(num(acct["short_market_value"]), num(pos["market_value"]))
    assert close(num(acct["equity"]), num(acct["cash"]) + num(acct["short_market_value"]))
    # no single order flips a short into a long
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 11, "side": "buy", "type": "market",
                                   "time_in_force": "day"})
    assert resp.status_code == 403
    assert resp.json()["message"] == "insufficient qty available for order (requested: 11, available: 10)"
    cover = api.get_order(api.order(symbol=SYMBOL, qty=10)["id"])
    assert cover["position_intent"] == "buy_to_close" and cover["status"] == "filled"
    assert SYMBOL not in api.positions()


def test_no_single_order_flips_a_long_into_a_short(api):
    api.order(symbol=SYMBOL, qty=5)
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 8, "side": "sell", "type": "market",
                                   "time_in_force": "day"})
    assert resp.status_code == 403
    assert resp.json() == {"code": 40310000,
                           "message": "insufficient qty available for order (requested: 8, available: 5)",
                           "available": "5", "existing_qty": "5", "held_for_orders": "0",
                           "symbol": SYMBOL}


def test_short_rules(api):
    nonshortable = "MULN"
    resp = api.post("/v2/orders", {"symbol": nonshortable, "qty": 1, "side": "sell", "type": "market",
                                   "time_in_force": "day"})
    assert resp.status_code == 422 and resp.json()["code"] == 42210000
    assert "cannot be sold short" in resp.json()["message"]
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "notional": 100, "side": "sell", "type": "market",
                                   "time_in_force": "day"})
    assert resp.status_code == 422
    assert resp.json()["message"] == "fractional orders cannot be sold short"
    resp = api.post("/v2/orders", {"symbol": "GME", "qty": 1, "side": "sell", "type": "market",
                                   "time_in_force": "gtc"})
    assert resp.status_code == 422 and "hard-to-borrow" in resp.json()["message"]
    assert api.patch("/v2/account/configurations", {"no_shorting": True}).status_code == 200
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 1, "side": "sell", "type": "market",
                                   "time_in_force": "day"})
    assert resp.status_code == 403
    assert resp.json() == {"code": 40310000, "message": "account is not allowed to short"}
    assert api.account()["shorting_enabled"] is False


# ---------------------------------------------------------------- buying power and equity

def test_buying_power_is_reg_t_two_times_and_refuses_larger_orders(sb):
    api = new_api(sb, cash=10_000)
    acct = api.account()
    assert acct["multiplier"] == "2" and num(acct["buying_power"]) == 20_000
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 150, "side": "buy", "type": "market",
                                   "time_in_force": "day"})
    assert resp.status_code == 403
    body = resp.json()
    assert body["code"] == 40310000 and body["message"] == "insufficient buying power"
    assert num(body["buying_power"]) == 20_000 and num(body["cost_basis"]) > 20_000
    api.order(symbol=SYMBOL, qty=50)
    acct = api.account()
    lmv = num(acct["long_market_value"])
    assert close(num(acct["initial_margin"]), lmv / 2, 1e-4)
    assert close(num(acct["buying_power"]), 2 * (num(acct["equity"]) - lmv / 2), 1e-4)
    # nothing changed by the refusal: exactly one order exists
    assert len(api.get("/v2/orders", status="all").json()) == 1


def test_non_marginable_assets_need_full_cash(sb, market):
    api = new_api(sb, cash=10_000)
    symbol = "GPRO"
    price = market.quote_at(symbol, ts(api.get("/v2/clock").json()["timestamp"])).ask
    qty = int(12_000 / price)          # more than the cash, less than the 2x buying power
    resp = api.post("/v2/orders", {"symbol": symbol, "qty": qty, "side": "buy", "type": "limit",
                                   "limit_price": price, "time_in_force": "day"})
    assert resp.status_code == 403 and resp.json()["message"] == "insufficient buying power"


def test_equity_stays_consistent_through_a_sequence_of_fills(api):
    api.order(symbol=SYMBOL, qty=7)
    api.order(symbol="MSFT", qty=3)
    api.order(symbol="TSLA", qty=4, side="sell")
    api.order(symbol=SYMBOL, qty=2, side="sell")
    api.order(symbol="SPY", notional=2500)
    acct = api.account()
    pos = api.positions()
    assert set(pos) == {SYMBOL, "MSFT", "TSLA", "SPY"}
    assert pos[SYMBOL]["qty"] == "5"
    long_mv = sum(num(p["market_value"]) for p in pos.values() if p["side"] == "long")
    short_mv = sum(num(p["market_value"]) for p in pos.values() if p["side"] == "short")
    assert close(num(acct["long_market_value"]), long_mv, 1e-4)
    assert close(num(acct["short_market_value"]), short_mv, 1e-4)
    assert close(num(acct["equity"]), num(acct["cash"]) + long_mv + short_mv, 1e-4)
    assert acct["portfolio_value"] == acct["equity"]
    for p in pos.values():
        assert close(num(p["market_value"]), num(p["qty"]) * num(p["current_price"]), 1e-4)
        assert close(num(p["unrealized_pl"]), num(p["market_value"]) - num(p["cost_basis"]), 1e-4)
        assert close(num(p["change_today"]),
                     (num(p["current_price"]) - num(p["lastday_price"])) / num(p["lastday_price"]),
                     1e-8)
    # cash moved by exactly the fills
    flows = sum((-1 if f["side"] == "buy" else 1) * num(f["qty"]) * num(f["price"]) for f in api.fills())
    assert close(num(acct["cash"]), 100_000 + flows, 1e-4)


# ---------------------------------------------------------------- replace and cancel

def test_replace_creates_a_new_order_and_marks_the_old_one_replaced(api, market):
    ask = market.quote_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).ask
    placed = api.order(symbol=SYMBOL, qty=5, type="limit", limit_price=round(ask * 0.5, 2),
                       time_in_force="gtc", client_order_id="mine-1")
    resp = api.patch(f"/v2/orders/{placed['id']}", {"qty": 6, "limit_price": round(ask * 0.6, 2),
                                                    "client_order_id": "mine-2"})
    assert resp.status_code == 200, resp.text
    new = resp.json()
    assert new["id"] != placed["id"] and new["replaces"] == placed["id"]
    assert new["qty"] == "6" and num(new["limit_price"]) == round(ask * 0.6, 2)
    assert new["client_order_id"] == "mine-2"
    old = api.get_order(placed["id"])
    assert old["status"] == "replaced" and old["replaced_by"] == new["id"]
    assert old["replaced_at"] is not None
    open_orders = api.get("/v2/orders").json()
    assert [o["id"] for o in open_orders] == [new["id"]]
    # unchanged parameters, a finished order, a bad qty
    same = api.patch(f"/v2/orders/{new['id']}", {"limit_price": round(ask * 0.6, 2)})
    assert same.status_code == 422
    assert same.json() == {"code": 42210000, "message": "order parameters are not changed"}
    again = api.patch(f"/v2/orders/{placed['id']}", {"limit_price": 1})
    assert again.status_code == 422 and again.json()["code"] == 42210000
    frac = api.patch(f"/v2/orders/{new['id']}", {"qty": "1.5"})
    assert frac.status_code == 422 and frac.json() == {"code": 40010001, "message": "qty must be integer"}
    # a replacement that becomes marketable fills at once
    filled = api.patch(f"/v2/orders/{new['id']}", {"limit_price": round(ask * 1.1, 2)}).json()
    assert api.get_order(filled["id"])["status"] == "filled"


def test_replace_of_a_partially_filled_order_continues_its_chain(sb, rich, market):
    """Alpaca's replace continues the order chain: the new qty is the total including what
    already filled (hence "qty must be > filled_qty"), and the replacement carries filled_qty."""
    api = rich
    in_regular_hours(sb, api)
    placed = api.order(symbol=SYMBOL, qty=20_000, time_in_force="gtc")
    order = api.get_order(placed["id"])
    assert order["status"] == "partially_filled"
    filled = num(order["filled_qty"])
    resp = api.patch(f"/v2/orders/{placed['id']}", {"qty": int(filled)})
    assert resp.status_code == 422
    assert resp.json() == {"code": 42210000, "message": "qty must be > filled_qty"}
    new = api.patch(f"/v2/orders/{placed['id']}", {"qty": int(filled) + 1}).json()
    assert new["qty"] == str(int(filled) + 1)                 # the chain's total ...
    assert num(new["filled_qty"]) == filled                   # ... of which this much is done
    assert new["filled_avg_price"] == order["filled_avg_price"] and new["replaces"] == placed["id"]
    old = api.get_order(placed["id"])
    assert old["status"] == "replaced" and num(old["filled_qty"]) == filled
    # the replacement does not take the size of the quote its predecessor already took
    assert api.get_order(new["id"])["status"] == "new"
    advance(sb, 60)
    done = api.get_order(new["id"])
    assert done["status"] == "filled" and num(done["filled_qty"]) == filled + 1
    assert num(api.positions()[SYMBOL]["qty"]) == filled + 1  # one more share, not filled + 1 more
    last = api.fills(new["id"])
    assert [num(f["qty"]) for f in last] == [1] and int(last[0]["cum_qty"]) == filled + 1
    # a replace that changes only the price keeps the total: a partly filled sell of the whole
    # position can be re-priced, it does not ask for the shares already sold (Alpaca-API#165)
    held = filled + 1
    bid = market.quote_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).bid
    sell = api.order(symbol=SYMBOL, qty=held, side="sell", type="limit",
                     limit_price=round(bid * 0.99, 2), time_in_force="gtc")
    part = api.get_order(sell["id"])
    assert part["status"] == "partially_filled"
    resp = api.patch(f"/v2/orders/{sell['id']}", {"limit_price": round(bid * 0.98, 2)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["qty"] == part["qty"] and resp.json()["filled_qty"] == part["filled_qty"]
    for _ in range(60):
        if api.get_order(resp.json()["id"])["status"] == "filled":
            break
        advance(sb, 60)
    assert api.get_order(resp.json()["id"])["filled_qty"] == part["qty"]
    assert SYMBOL not in api.positions()


def test_notional_orders_cannot_be_replaced(sb, api):
    halt = lambda on: __import__("requests").post(  # noqa: E731
        f"{sb.url}/sandbox/halt", json={"symbol": SYMBOL, "halted": on},
        headers={"APCA-API-KEY-ID": sb.key_id, "APCA-API-SECRET-KEY": sb.secret_key}, timeout=10)
    assert halt(True).status_code == 200                 # so that the order stays open
    try:
        placed = api.order(symbol=SYMBOL, notional=500)
        assert api.get_order(placed["id"])["status"] == "new"
        resp = api.patch(f"/v2/orders/{placed['id']}", {"time_in_force": "gtc"})
        assert resp.status_code == 422
        assert resp.json() == {"code": 42210000, "message": "notional orders cannot be replaced"}
        assert api.get_order(placed["id"])["status"] == "new"
        assert api.delete(f"/v2/orders/{placed['id']}").status_code == 204
    finally:
        assert halt(False).status_code == 200


def test_cancel_rules(rich):
    api = rich
    filled = api.order(symbol=SYMBOL, qty=1)
    resp = api.delete(f"/v2/orders/{filled['id']}")           # the fill won the race
    assert resp.status_code == 422
    assert resp.json() == {"code": 42210000, "message": 'order is already in "filled" state'}
    assert api.positions()[SYMBOL]["qty"] == "1"
    partial = api.order(symbol=SYMBOL, qty=20_000, time_in_force="gtc")
    assert api.delete(f"/v2/orders/{partial['id']}").status_code == 204
    canceled = api.get_order(partial["id"])
    assert canceled["status"] == "canceled" and num(canceled["filled_qty"]) > 0
    assert num(api.positions()[SYMBOL]["qty"]) == 1 + num(canceled["filled_qty"])
    assert api.delete(f"/v2/orders/{partial['id']}").json()["message"] == \
        'order is already in "canceled" state'
    unknown = api.delete("/v2/orders/6a4d3f5e-0000-4000-8000-000000000000")
    assert unknown.status_code == 404
    assert unknown.json() == {"code": 40410000, "message": "order not found"}
    bad = api.get("/v2/orders/not-a-uuid")
    assert bad.status_code == 422
    assert bad.json() == {"code": 40010001, "message": "order_id is missing"}


def test_cancel_all_answers_207_per_order(api, market):
    ask = market.quote_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).ask
    ids = {api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=round(ask * 0.5, 2))["id"]
           for _ in range(3)}
    resp = api.delete("/v2/orders")
    assert resp.status_code == 207
    body = resp.json()
    assert {item["id"] for item in body} == ids
    assert all(item["status"] == 200 and item["body"]["status"] == "canceled" for item in body)
    assert api.get("/v2/orders").json() == []


def test_orders_of_another_account_are_invisible(sb, api):
    other = new_api(sb)
    placed = other.order(symbol=SYMBOL, qty=1)
    assert api.get(f"/v2/orders/{placed['id']}").status_code == 404
    assert api.delete(f"/v2/orders/{placed['id']}").status_code == 404
    assert api.get("/v2/orders:by_client_order_id",
                   client_order_id=placed["client_order_id"]).status_code == 404


def test_canceling_a_held_leg_cancels_the_whole_bracket(api, market):
    last = market.trade_at(SYMBOL, ts(api.get("/v2/clock").json()["timestamp"])).price
    entry = round(last * 0.6, 2)
    placed = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=entry, order_class="bracket",
                       time_in_force="gtc", take_profit={"limit_price": round(entry * 1.1, 2)},
                       stop_loss={"stop_price": round(entry * 0.9, 2)})
    take_profit = placed["legs"][0]
    assert api.delete(f"/v2/orders/{take_profit['id']}").status_code == 204
    parent = api.get_order(placed["id"], nested="true")
    assert parent["status"] == "canceled"
    assert {leg["status"] for leg in parent["legs"]} == {"canceled"}


def test_a_halted_symbol_does_not_trade_until_it_resumes(sb, api):
    halt = lambda on: __import__("requests").post(  # noqa: E731
        f"{sb.url}/sandbox/halt", json={"symbol": SYMBOL, "halted": on},
        headers={"APCA-API-KEY-ID": sb.key_id, "APCA-API-SECRET-KEY": sb.secret_key}, timeout=10)
    assert halt(True).status_code == 200
    try:
        waiting = api.order(symbol=SYMBOL, qty=1)
        assert api.get_order(waiting["id"])["status"] == "new"
        ioc = api.get_order(api.order(symbol=SYMBOL, qty=1, time_in_force="ioc")["id"])
        assert ioc["status"] == "canceled" and ioc["filled_qty"] == "0"
        advance(sb, 60)
        assert api.get_order(waiting["id"])["status"] == "new"
    finally:
        assert halt(False).status_code == 200
    advance(sb, 1)
    assert api.get_order(waiting["id"])["status"] == "filled"
