"""Bracket and oto groups that cannot oversell, over REST and the trade_updates stream.

An entry that fills in parts arms its exit legs for what it has filled; shares an exit already
sold are not sold again when the entry fills more; exits that would open a position (the entry
closed one) pass the shorting and buying-power checks of any opening order. The sandbox runs
with a frozen clock so every step is one the test takes.
"""

from __future__ import annotations

import pytest

from sandbox_trading_support import Api, advance, frozen, new_api, num
from test_sandbox_trading_stream import authed, drain

SYMBOL = "AAPL"


@pytest.fixture(scope="module")
def sb():
    with frozen() as sandbox:
        yield sandbox


def last_price(api: Api) -> float:
    resp = api.get(f"/v2/stocks/{SYMBOL}/trades/latest")
    assert resp.status_code == 200, resp.text
    return num(resp.json()["trade"]["p"])


def held(api: Api) -> float:
    pos = api.positions().get(SYMBOL)
    return num(pos["qty"]) if pos else 0.0


def partly_filled_bracket(api: Api, width: float) -> tuple[dict, dict, float]:
    """A 4000-share bracket buy whose entry filled the quote's size at once, its exits
    ``width`` dollars from the last trade: (the POST's answer, the nested entry, filled qty)."""
    last = last_price(api)
    bracket = api.order(symbol=SYMBOL, qty=4000, time_in_force="gtc", order_class="bracket",
                        take_profit={"limit_price": round(last + width, 2)},
                        stop_loss={"stop_price": round(last - width, 2)})
    entry = api.get_order(bracket["id"], nested="true")
    first = num(entry["filled_qty"])
    assert entry["status"] == "partially_filled" and 0 < first < 4000   # the quote's size
    return bracket, entry, first


def sold_and_bought(api: Api, order_ids: set[str]) -> tuple[float, float]:
    fills = [f for f in api.fills() if f["order_id"] in order_ids]
    return (sum(num(f["qty"]) for f in fills if f["side"] == "sell"),
            sum(num(f["qty"]) for f in fills if f["side"] == "buy"))


def test_a_bracket_filling_in_parts_arms_its_exits_for_what_filled_and_never_oversells(sb):
    api = new_api(sb, cash=10_000_000)
    assert api.patch("/v2/account/configurations", {"no_shorting": True}).status_code == 200
    ws = authed(api)
    bracket, entry, first = partly_filled_bracket(api, 0.02)
    legs = entry["legs"]
    # armed at once for what filled, not held until the entry is complete
    assert [(leg["status"], num(leg["qty"])) for leg in legs] == [("new", first), ("new", first)]
    assert all(leg["position_intent"] == "sell_to_close" for leg in legs)
    seen = drain(ws, api)
    order_of = [(e["event"], e["order"]["id"]) for e in seen]
    partial = order_of.index(("partial_fill", bracket["id"]))
    assert order_of[partial + 1:] == [("new", legs[0]["id"]), ("new", legs[1]["id"])]
    assert num(seen[partial + 1]["order"]["qty"]) == first
    # the shares the exits cover cannot be sold a second time by another order
    refused = api.post("/v2/orders", {"symbol": SYMBOL, "qty": first, "side": "sell",
                                      "type": "market", "time_in_force": "day"})
    assert refused.status_code == 403
    assert num(refused.json()["held_for_orders"]) == first and refused.json()["available"] == "0"
    group = {bracket["id"], *(leg["id"] for leg in legs)}
    for _ in range(400):
        advance(sb, 30)
        entry = api.get_order(bracket["id"], nested="true")
        sold, bought = sold_and_bought(api, group)
        assert bought == num(entry["filled_qty"]) and sold <= bought
        assert held(api) == bought - sold >= 0
        open_legs = [leg for leg in entry["legs"] if leg["status"] in ("new", "partially_filled")]
        for leg in open_legs:       # each open exit trades exactly what is still held
            assert num(leg["qty"]) - num(leg["filled_qty"]) == pytest.approx(bought - sold)
        if not open_legs and entry["status"] not in ("new", "partially_filled"):
            break
    else:
        pytest.fail("the bracket never finished")
    assert held(api) == 0 and sold == bought > 0
    ws.close()


def test_exit_legs_that_would_sell_short_are_refused_like_any_short_sale(sb):
    api = new_api(sb, cash=1_000_000)
    api.order(symbol=SYMBOL, qty=10, side="sell")                 # short 10
    assert held(api) == -10
    assert api.patch("/v2/account/configurations", {"no_shorting": True}).status_code == 200
    last = last_price(api)
    resp = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 10, "side": "buy", "type": "market",
                                   "time_in_force": "gtc", "order_class": "bracket",
                                   "take_profit": {"limit_price": round(last + 1, 2)},
                                   "stop_loss": {"stop_price": round(last - 1, 2)}})
    assert resp.status_code == 403 and resp.json() == {"code": 40310000,
                                                       "message": "account is not allowed to short"}
    assert held(api) == -10 and api.get("/v2/orders").json() == []
    # a plain cover is fine, and so is the bracket once shorting is allowed again
    assert api.patch("/v2/account/configurations", {"no_shorting": False}).status_code == 200
    bracket = api.order(symbol=SYMBOL, qty=10, time_in_force="gtc", order_class="bracket",
                        take_profit={"limit_price": round(last + 1, 2)},
                        stop_loss={"stop_price": round(last - 1, 2)})
    legs = api.get_order(bracket["id"], nested="true")["legs"]
    assert held(api) == 0
    assert [(leg["status"], leg["side"], leg["position_intent"]) for leg in legs] == \
        [("new", "sell", "sell_to_open")] * 2


def test_exit_legs_that_would_open_a_position_need_the_buying_power(sb):
    """Closing a margined long with a bracket whose buy exits reopen it: the exits hold buying
    power as any buy does (a buy stop at its price plus Alpaca's 2.5%/4% market buffer)."""
    for stop_markup, armed in ((1.08, False), (1.01, True)):
        probe = new_api(sb)
        quote = probe.get(f"/v2/stocks/{SYMBOL}/quotes/latest").json()["quote"]
        last = last_price(probe)
        qty = min(quote["as"], quote["bs"])                       # fills at once both ways
        api = new_api(sb, cash=round(qty * last / 1.9, 2))        # ~1.9x equity, on margin
        api.order(symbol=SYMBOL, qty=qty)
        assert held(api) == qty
        ws = authed(api)
        bracket = api.order(symbol=SYMBOL, qty=qty, side="sell", time_in_force="gtc",
                            order_class="bracket",
                            take_profit={"limit_price": round(last * 0.95, 2)},
                            stop_loss={"stop_price": round(last * stop_markup, 2)})
        entry = api.get_order(bracket["id"], nested="true")
        assert entry["status"] == "filled" and held(api) == 0
        equity = num(api.account()["equity"])                       # all cash now
        legs = entry["legs"]
        stop_value = qty * round(last * stop_markup, 2) * 1.025     # Alpaca's buffer at >= $50
        assert (stop_value <= 2 * equity) == armed                  # buying power after the close
        events = [(e["event"], e["order"]["id"]) for e in drain(ws, api)]
        if armed:
            assert [leg["status"] for leg in legs] == ["new", "new"]
            assert {leg["position_intent"] for leg in legs} == {"buy_to_open"}
            assert num(api.account()["buying_power"]) == pytest.approx(2 * equity - stop_value,
                                                                      abs=0.05)
            for leg in legs:
                assert api.delete(f"/v2/orders/{leg['id']}").status_code in (204, 422)
        else:
            assert [leg["status"] for leg in legs] == ["rejected", "canceled"]
            assert legs[0]["failed_at"] is not None and legs[0]["filled_qty"] == "0"
            assert ("rejected", legs[0]["id"]) in events and ("canceled", legs[1]["id"]) in events
            assert held(api) == 0 and num(api.account()["equity"]) == pytest.approx(equity, rel=0.01)
        ws.close()


def test_an_exit_legs_qty_cannot_be_replaced_its_prices_can_and_it_keeps_following_the_entry(sb):
    """A leg's qty is the group's (what the entry filled less what the exits sold): a PATCH of
    it is refused with 422 42210000, so no later fill of the entry overrides it or oversells;
    a price replace is accepted and the replacement keeps covering the entry's fills."""
    api = new_api(sb, cash=10_000_000)
    bracket, entry, first = partly_filled_bracket(api, 5)
    take_profit, stop_loss = entry["legs"]
    for qty in (first / 2, 4000):
        resp = api.patch(f"/v2/orders/{take_profit['id']}", {"qty": int(qty) or 1})
        assert resp.status_code == 422, resp.text
        assert resp.json()["code"] == 42210000
        assert resp.json()["message"].startswith("qty of a bracket order leg cannot be replaced")
    assert api.get_order(take_profit["id"])["status"] == "new"      # untouched
    # a price replace is fine, and the replacement still covers the entry's next fills
    new_limit = round(num(take_profit["limit_price"]) + 1, 2)
    resp = api.patch(f"/v2/orders/{take_profit['id']}", {"limit_price": new_limit})
    assert resp.status_code == 200, resp.text
    new_tp = resp.json()
    assert new_tp["replaces"] == take_profit["id"] and num(new_tp["qty"]) == first
    for _ in range(200):
        advance(sb, 30)
        entry = api.get_order(bracket["id"], nested="true")
        if num(entry["filled_qty"]) > first:
            break
    filled = num(entry["filled_qty"])
    assert filled > first
    legs = {leg["id"]: leg for leg in entry["legs"]}
    assert set(legs) == {new_tp["id"], stop_loss["id"]}
    assert all(num(leg["qty"]) - num(leg["filled_qty"]) == held(api) == filled for leg in legs.values())
    api.delete(f"/v2/orders/{bracket['id']}")


def test_an_oco_orders_qty_cannot_be_replaced(sb):
    api = new_api(sb, cash=1_000_000)
    api.order(symbol=SYMBOL, qty=10)
    last = last_price(api)
    oco = api.order(symbol=SYMBOL, qty=10, side="sell", type="limit", time_in_force="gtc",
                    order_class="oco", take_profit={"limit_price": round(last + 5, 2)},
                    stop_loss={"stop_price": round(last - 5, 2)})
    stop = api.get_order(oco["id"], nested="true")["legs"][0]
    for target in (oco["id"], stop["id"]):
        resp = api.patch(f"/v2/orders/{target}", {"qty": 5})
        assert resp.status_code == 422 and resp.json()["code"] == 42210000, resp.text
        assert resp.json()["message"].startswith("qty of an oco order cannot be replaced")
    assert [num(o["qty"]) for o in api.get("/v2/orders").json()] == [10, 10]
    assert held(api) == 10
