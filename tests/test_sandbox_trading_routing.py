"""Orders that wait for the market (calendar mode) are checked again when they are routed, as
Alpaca does: one the account can no longer carry (buying power, shorting, available quantity) is
rejected then, with a ``rejected`` trade update and ``failed_at``; the others take the displayed
size of the opening quote in price-time priority. Late opg/cls submissions are refused at once,
with Alpaca's 403. Everything through real sockets: REST and the
``trade_updates`` WebSocket of a sandbox on the NYSE calendar with a frozen clock.
"""

from __future__ import annotations

import json

import pytest
import websocket

from sandbox_trading_support import (Api, frozen, new_api, num, ny, reference_market, set_clock,
                                     ts)

SYMBOL = "AAPL"
OPEN = "2024-03-05T14:30:00Z"          # Tuesday's open (9:30 ET)


@pytest.fixture
def cal():
    """Calendar market, frozen at Tuesday 2024-03-05 09:00 ET (pre-market)."""
    with frozen(start=ny("2024-03-05", 9), market="calendar") as sandbox:
        yield sandbox


class TradeUpdates:
    """The account's ``trade_updates`` stream."""

    def __init__(self, api: Api):
        self.ws = websocket.create_connection("ws" + api.url[4:] + "/stream", timeout=10)
        self._send({"action": "auth", "key": api.key_id, "secret": api.secret_key})
        assert self._recv()["data"]["status"] == "authorized"
        self._send({"action": "listen", "data": {"streams": ["trade_updates"]}})
        assert self._recv()["stream"] == "listening"

    def _send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def _recv(self) -> dict:
        return json.loads(self.ws.recv())

    def until(self, event: str, order_id: str) -> list[dict]:
        """Updates up to and including ``event`` of ``order_id``."""
        out = []
        while True:
            data = self._recv()["data"]
            out.append(data)
            if data["event"] == event and data["order"]["id"] == order_id:
                return out

    def of(self, order_id: str, updates: list[dict]) -> list[str]:
        return [u["event"] for u in updates if u["order"]["id"] == order_id]

    def close(self) -> None:
        self.ws.close()


def configure(api: Api, **changes) -> None:
    resp = api.patch("/v2/account/configurations", changes)
    assert resp.status_code == 200, resp.text


def assert_rejected_at_the_open(api: Api, update: dict, order_id: str) -> None:
    assert update["event"] == "rejected" and set(update) == {"event", "timestamp", "order"}
    assert ts(update["timestamp"]) == ts(OPEN)
    order = api.get_order(order_id)
    for seen in (update["order"], order):
        assert seen["status"] == "rejected" and seen["filled_qty"] == "0"
        assert ts(seen["failed_at"]) == ts(OPEN) and seen["filled_at"] is None
    assert order_id not in {o["id"] for o in api.get("/v2/orders").json()}
    assert order_id in {o["id"] for o in api.get("/v2/orders", status="closed").json()}


def test_a_waiting_order_beyond_the_buying_power_at_the_open_is_rejected(cal):
    market = reference_market(cal)
    api = new_api(cal, cash=10_000)
    updates = TradeUpdates(api)
    ask = market.quote_at(SYMBOL, ts(ny("2024-03-05", 9))).ask
    limit = round(ask * 1.02, 2)
    big = api.order(symbol=SYMBOL, qty=int(15_000 // limit), type="limit", limit_price=limit)
    small = api.order(symbol=SYMBOL, qty=1)
    assert big["status"] == small["status"] == "accepted"     # 2x margin: both fit in $20,000
    configure(api, max_margin_multiplier="1")                 # now $10,000 of buying power
    set_clock(cal, ny("2024-03-05", 9, 30))
    seq = updates.until("rejected", big["id"])
    assert updates.of(big["id"], seq) == ["accepted", "rejected"]      # never "new"
    assert_rejected_at_the_open(api, seq[-1], big["id"])
    filled = api.get_order(small["id"])                       # what still fits is routed as usual
    assert filled["status"] == "filled" and ts(filled["filled_at"]) == ts(OPEN)
    assert api.positions()[SYMBOL]["qty"] == "1"
    account = api.account()
    assert num(account["cash"]) == pytest.approx(10_000 - num(filled["filled_avg_price"]), abs=1e-6)
    assert num(account["buying_power"]) == pytest.approx(num(account["cash"]), abs=0.01)   # no hold left
    updates.close()


def test_a_waiting_short_sale_is_rejected_when_shorting_was_turned_off(cal):
    api = new_api(cal)
    updates = TradeUpdates(api)
    short = api.order(symbol=SYMBOL, qty=2, side="sell")
    assert short["status"] == "accepted" and short["position_intent"] == "sell_to_open"
    configure(api, no_shorting=True)
    set_clock(cal, ny("2024-03-05", 9, 30))
    seq = updates.until("rejected", short["id"])
    assert updates.of(short["id"], seq) == ["accepted", "rejected"]
    assert_rejected_at_the_open(api, seq[-1], short["id"])
    assert api.positions() == {}
    updates.close()


def test_a_waiting_sell_is_rejected_when_the_shares_it_needs_are_held_by_another(cal):
    """A notional sell holds ``notional / bid`` shares: when the bid is lower at the open it
    needs more shares than another waiting sell left it, and is rejected then."""
    market = reference_market(cal)
    pre, opened = ts(ny("2024-03-05", 9)), ts(OPEN)
    symbol = next(a["symbol"] for a in market.assets()
                  if a["tradable"] and a["fractionable"] and a["status"] == "active"
                  and market.quote_at(a["symbol"], opened).bid < market.quote_at(a["symbol"], pre).bid - 0.02)
    api = new_api(cal, cash=1_000_000)
    updates = TradeUpdates(api)
    ask = market.quote_at(symbol, pre).ask
    bought = api.order(symbol=symbol, qty=10, type="limit", limit_price=round(ask + 1, 2), extended_hours=True)
    assert api.get_order(bought["id"])["status"] == "filled"            # in the pre-market
    notional = int(5 * market.quote_at(symbol, pre).bid * 100) / 100    # five shares' worth at 9:00
    by_value = api.order(symbol=symbol, notional=notional, side="sell")
    by_qty = api.order(symbol=symbol, qty=5, side="sell")               # the other five
    assert by_value["status"] == by_qty["status"] == "accepted"
    set_clock(cal, ny("2024-03-05", 9, 30))
    seq = updates.until("rejected", by_value["id"])
    assert updates.of(by_value["id"], seq) == ["accepted", "rejected"]
    assert_rejected_at_the_open(api, seq[-1], by_value["id"])
    assert api.get_order(by_qty["id"])["status"] == "filled"
    assert api.positions()[symbol]["qty"] == "5"
    updates.close()


def test_a_rejected_bracket_entry_takes_its_held_legs_with_it(cal):
    api = new_api(cal, cash=10_000)
    updates = TradeUpdates(api)
    market = reference_market(cal)
    ask = market.quote_at(SYMBOL, ts(ny("2024-03-05", 9))).ask
    qty = int(15_000 // (ask * 1.05))
    placed = api.order(symbol=SYMBOL, qty=qty, type="limit", limit_price=round(ask * 1.02, 2),
                       order_class="bracket", take_profit={"limit_price": round(ask * 1.5, 2)},
                       stop_loss={"stop_price": round(ask * 0.5, 2)})
    configure(api, max_margin_multiplier="1")
    set_clock(cal, ny("2024-03-05", 9, 30))
    updates.until("rejected", placed["id"])
    parent = api.get_order(placed["id"], nested="true")
    assert parent["status"] == "rejected"
    assert {leg["status"] for leg in parent["legs"]} == {"canceled"}
    updates.close()


def test_opg_and_cls_refusal_windows_follow_the_session(cal):
    api = new_api(cal)
    set_clock(cal, ny("2024-11-29", 12, 56))                  # early close at 1pm
    late = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 1, "side": "buy", "type": "market",
                                   "time_in_force": "cls"})
    assert late.status_code == 403
    assert late.json() == {"code": 40310000,
                           "message": "cls orders must be submitted after 7:00pm and before 12:55pm"}
    set_clock(cal, ny("2024-11-29", 19, 1))                   # after 7pm: for Monday's auctions
    opg = api.order(symbol=SYMBOL, qty=1, time_in_force="opg")
    cls = api.order(symbol=SYMBOL, qty=1, time_in_force="cls")
    assert opg["status"] == cls["status"] == "accepted"
    set_clock(cal, ny("2024-12-02", 16, 1))
    assert ts(api.get_order(opg["id"])["filled_at"]) == ts(ny("2024-12-02", 9, 30))
    assert ts(api.get_order(cls["id"])["filled_at"]) == ts(ny("2024-12-02", 16))


def test_at_the_open_waiting_orders_take_the_displayed_size_in_price_time_priority(cal):
    market = reference_market(cal)
    api = new_api(cal, cash=50_000_000)
    ask = market.quote_at(SYMBOL, ts(ny("2024-03-05", 9))).ask
    low = api.order(symbol=SYMBOL, qty=20_000, type="limit", limit_price=round(ask * 1.3, 2),
                    time_in_force="gtc")                               # first, the lower limit
    market_order = api.order(symbol=SYMBOL, qty=1, time_in_force="gtc")
    high = api.order(symbol=SYMBOL, qty=20_000, type="limit", limit_price=round(ask * 1.5, 2),
                     time_in_force="gtc")                              # last, the higher limit
    set_clock(cal, ny("2024-03-05", 9, 30))
    shown = market.quote_at(SYMBOL, ts(OPEN))
    assert shown.ask < ask * 1.3                          # all three are marketable at the open
    first, second, third = (api.get_order(o["id"]) for o in (market_order, high, low))
    assert first["status"] == "filled" and first["filled_qty"] == "1"
    assert num(second["filled_qty"]) == shown.ask_size - 1            # the better price next
    assert third["filled_qty"] == "0" and third["status"] == "new"    # nothing left for it
    for order in (second, third):
        assert api.delete(f"/v2/orders/{order['id']}").status_code == 204
