"""Lost answers on every request that changes orders or positions: the client finds out what
happened before doing anything again, adopts only what matches, returns what the user would have
got, and otherwise says the state is unknown (never "nothing happened").

Faults come from the sandbox's chaos (``lose``: the request is handled, then the connection is
closed before the answer; ``latency``: the request is handled only after a delay) and are
counted through a real proxy.
"""

from __future__ import annotations

import pandas as pd
import pytest
import requests
from _http_proxy import RecordingProxy
from conftest import admin_headers, new_account, poll

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("ALPACA_NB_MAX_ORDER_NOTIONAL", "ALPACA_NB_MAX_ORDER_QTY", "ALPACA_NB_PRICE_COLLAR",
                 "ALPACA_NB_BUYING_POWER_CHECK", "ALPACA_NB_GUARD_CACHE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def sb():
    with Sandbox(seed=7) as sandbox:
        yield sandbox


@pytest.fixture
def acct(sb):
    chaos(sb, "")
    yield new_account(sb)
    chaos(sb, "")


def chaos(sb: Sandbox, spec: str) -> None:
    requests.post(f"{sb.url}/sandbox/chaos", json={"spec": spec}, headers=admin_headers(sb),
                  timeout=10).raise_for_status()


def client(acct, url: str | None = None, **kw):
    return anb.connect(base_url=url or acct.url, data_url=url or acct.url, key_id=acct.key_id,
                       secret_key=acct.secret_key, **kw)


def server_orders(sb: Sandbox, acct) -> list[dict]:
    chaos(sb, "")
    resp = requests.get(f"{sb.url}/v2/orders", params={"status": "all", "limit": 500},
                        headers=acct.headers, timeout=10)
    resp.raise_for_status()
    return resp.json()


def resting_buy_price(api, symbol="AAPL") -> float:
    return round(api.latest_trades(symbol).loc[symbol, "price"] * 0.8, 2)


# ------------------------------------------------------------------ submissions

@pytest.mark.parametrize("change", [
    dict(symbol="MSFT"), dict(qty=2), dict(limit_price_factor=0.79), dict(time_in_force="day"),
    dict(side="sell"), dict(order_class="oto"),
])
def test_a_client_order_id_of_another_order_raises_the_duplicate_id_error(sb, acct, change):
    """The id already belongs to an older, different order and the answer to the new POST is
    lost: the lookup finds the old order, which is not this submission, so the server's
    duplicate-id error is raised (nothing new exists); the old order is never returned."""
    api = client(acct)
    price = resting_buy_price(api)
    old = api.buy("AAPL", 1, type="limit", limit_price=price, time_in_force="gtc", client_order_id="mine-1")
    kwargs = dict(symbol="AAPL", qty=1, side="buy", type="limit", limit_price=price, time_in_force="gtc",
                  client_order_id="mine-1")
    factor = change.pop("limit_price_factor", None)
    if factor:
        kwargs["limit_price"] = round(api.latest_trades("AAPL").loc["AAPL", "price"] * factor, 2)
    if change.get("order_class") == "oto":
        kwargs["stop_loss"] = round(price * 0.9, 2)
    if change.get("symbol") == "MSFT":
        kwargs["limit_price"] = resting_buy_price(api, "MSFT")
    kwargs.update(change)
    chaos(sb, "lose=1,scope=/v2/orders,methods=POST")
    with RecordingProxy(sb.url) as proxy:
        with pytest.raises(anb.UnprocessableError) as info:
            client(acct, url=proxy.url).submit_order(**kwargs)
        assert proxy.count("POST", "/v2/orders") == 1                  # never sent again
    err = info.value
    assert (err.status, err.code, err.message) == (422, 40010001, "client_order_id must be unique")
    notes = " ".join(err.__notes__)
    assert old.name in notes and "differs from this submission" in notes and "was not placed" in notes
    assert [o["id"] for o in server_orders(sb, acct)] == [old.name]


def test_a_lost_answer_of_the_same_submission_adopts_its_order(sb, acct):
    """The same submission (a bracket with its legs) whose answer is lost: adopted, not resent."""
    api = client(acct)
    price = resting_buy_price(api)
    chaos(sb, "lose=1,scope=/v2/orders,methods=POST")
    with RecordingProxy(sb.url) as proxy:
        placed = client(acct, url=proxy.url).buy(
            "AAPL", 3, type="limit", limit_price=price, order_class="bracket",
            take_profit=round(price * 1.2, 2), stop_loss={"stop_price": round(price * 0.9, 2)},
            client_order_id="bracket-lost")
        assert proxy.count("POST", "/v2/orders") == 1
    assert placed["client_order_id"] == "bracket-lost" and placed["order_class"] == "bracket"
    assert len(placed.attrs["legs"]) == 2
    orders = server_orders(sb, acct)                       # the parent and its two legs, once
    assert len(orders) == 3 and [o["client_order_id"] for o in orders].count("bracket-lost") == 1


def test_a_trailing_stop_whose_answer_is_lost_is_adopted(sb, acct):
    """The server sets a trailing stop's stop_price itself; that is no difference."""
    chaos(sb, "lose=1,scope=/v2/orders,methods=POST")
    with RecordingProxy(sb.url) as proxy:
        placed = client(acct, url=proxy.url).sell("AAPL", 1, type="trailing_stop", trail_percent=5,
                                                  time_in_force="gtc", client_order_id="trail-lost")
        assert proxy.count("POST", "/v2/orders") == 1
    assert placed["type"] == "trailing_stop" and placed["trail_percent"] == 5.0


@pytest.mark.timeout(60)
def test_an_order_that_appears_after_a_read_timeout_is_found_not_resent():
    """The server holds the POST 4 s; the client's read timeout is 1 s. The first lookup does
    not find it (it is still queued), a later one does: that order is returned, once."""
    with Sandbox(chaos="latency=4000,scope=/v2/orders,methods=POST") as sb, RecordingProxy(sb.url) as proxy:
        acct = new_account(sb)
        api = client(acct, url=proxy.url, timeout=(5.0, 1.0), reconcile_timeout=15)
        placed = api.buy("AAPL", 1, client_order_id="slow-1")
        assert placed["client_order_id"] == "slow-1"
        assert proxy.count("POST", "/v2/orders") == 1
        assert proxy.count("GET", "/v2/orders:by_client_order_id") >= 2   # not there at first
        assert [o["client_order_id"] for o in server_orders(sb, acct)] == ["slow-1"]


@pytest.mark.timeout(60)
def test_an_order_still_queued_when_the_client_stops_looking_is_unknown_not_absent():
    """The server holds the POST 6 s; the client stops looking after 0.5 s: the error says the
    state is UNKNOWN and how to check, carries the id, and the order does appear afterwards."""
    with Sandbox(chaos="latency=6000,scope=/v2/orders,methods=POST") as sb:
        acct = new_account(sb)
        api = client(acct, timeout=(5.0, 0.5), reconcile_timeout=0.5, retries=1)
        with pytest.raises(anb.OrderStateUnknown) as info:
            api.buy("AAPL", 1, client_order_id="slow-2")
        err = info.value
        assert err.client_order_id == "slow-2" and err.status is None
        assert "UNKNOWN" in str(err) and "api.order(client_order_id='slow-2')" in str(err)
        assert "nothing was placed" not in str(err) + " ".join(getattr(err, "__notes__", []))
        assert isinstance(err.__cause__, anb.AlpacaConnectionError)

        def lookup():
            try:
                return api.order(client_order_id="slow-2")
            except anb.NotFoundError:
                return None
        appeared = poll(lookup, lambda o: o is not None, timeout=30)
        assert appeared is not None and appeared["client_order_id"] == "slow-2"


# ------------------------------------------------------------------ cancels and replaces

def test_a_cancel_whose_answer_is_lost_succeeded(sb, acct):
    api = client(acct)
    order = api.buy("AAPL", 1, type="limit", limit_price=resting_buy_price(api), time_in_force="gtc")
    chaos(sb, "lose=1,scope=/v2/orders,methods=DELETE")
    with RecordingProxy(sb.url) as proxy:
        assert client(acct, url=proxy.url).cancel_order(order.name) is None    # no error
        assert proxy.count("DELETE") == 1                                     # seen canceled: not resent
    chaos(sb, "")
    assert api.order(order.name)["status"] == "canceled"
    with pytest.raises(anb.UnprocessableError, match='already in "canceled" state'):
        api.cancel_order(order.name)           # a cancel of an order canceled before the call


def test_cancel_all_whose_answer_is_lost_returns_the_canceled_orders(sb, acct):
    api = client(acct)
    price = resting_buy_price(api)
    ids = {api.buy("AAPL", 1, type="limit", limit_price=price, time_in_force="gtc").name for _ in range(3)}
    chaos(sb, "lose=1,scope=/v2/orders,methods=DELETE")
    result = client(acct).cancel_all_orders()
    assert set(result["id"]) == ids and (result["status"] == 200).all()
    assert (result["order_status"] == "canceled").all() and (result["symbol"] == "AAPL").all()
    chaos(sb, "")
    assert api.orders(status="open").empty


def test_cancel_all_answered_keeps_the_order_fields(acct):
    api = client(acct)
    order = api.buy("AAPL", 2, type="limit", limit_price=resting_buy_price(api))
    result = api.cancel_all_orders()
    row = result.set_index("id").loc[order.name]
    assert row["status"] == 200 and row["qty"] == 2.0 and row["side"] == "buy"
    assert pd.isna(row["code"]) and pd.isna(row["message"])
    assert api.cancel_all_orders().empty


def test_a_replace_whose_answer_is_lost_returns_the_new_order(sb, acct):
    api = client(acct)
    price = resting_buy_price(api)
    order = api.buy("AAPL", 1, type="limit", limit_price=price, time_in_force="gtc")
    chaos(sb, "lose=1,scope=/v2/orders,methods=PATCH")
    with RecordingProxy(sb.url) as proxy:
        new = client(acct, url=proxy.url).replace_order(order.name, limit_price=round(price * 1.01, 2))
        assert proxy.count("PATCH") == 1
    chaos(sb, "")
    assert new["replaces"] == order.name and new["limit_price"] == round(price * 1.01, 2)
    assert api.order(order.name)["replaced_by"] == new.name


# ------------------------------------------------------------------ closing positions

def test_close_position_whose_answer_is_lost_returns_its_closing_order(sb, acct):
    api = client(acct)
    api.buy("AAPL", 10)
    poll(api.positions, lambda df: "AAPL" in df.index)
    chaos(sb, "lose=1,scope=/v2/positions,methods=DELETE")
    with RecordingProxy(sb.url) as proxy:
        closing = client(acct, url=proxy.url).close_position("AAPL", qty=4)
        assert proxy.count("DELETE") == 1                  # a partial close is never sent twice
    assert closing["side"] == "sell" and closing["qty"] == 4.0 and closing["symbol"] == "AAPL"
    chaos(sb, "")
    assert poll(api.positions, lambda df: df.loc["AAPL", "qty"] == 6).loc["AAPL", "qty"] == 6.0
    closing = client(acct).close_position("AAPL")          # whole: answered normally
    assert closing["qty"] == 6.0


def test_close_all_whose_answer_is_lost_returns_the_closing_orders(sb, acct):
    api = client(acct)
    api.buy("AAPL", 5)
    api.buy("MSFT", 3)
    poll(api.positions, lambda df: len(df) == 2)
    chaos(sb, "lose=1,scope=/v2/positions,methods=DELETE")
    result = client(acct).close_all_positions()
    assert list(result["symbol"]) == ["AAPL", "MSFT"] and (result["status"] == 200).all()
    assert list(result["qty"]) == [5.0, 3.0] and (result["side"] == "sell").all()
    assert result["order_id"].notna().all()
    chaos(sb, "")
    assert poll(api.positions, lambda df: df.empty).empty


def test_close_all_keeps_the_order_and_the_refusal_context(acct):
    api = client(acct)
    api.buy("AAPL", 10)
    api.buy("MSFT", 2)
    poll(api.positions, lambda df: len(df) == 2)
    api.sell("AAPL", 10, type="limit", limit_price=round(api.latest_trades("AAPL").loc["AAPL", "price"] * 1.2, 2))
    result = api.close_all_positions(cancel_orders=False).set_index("symbol")
    aapl, msft = result.loc["AAPL"], result.loc["MSFT"]
    assert aapl["status"] == 403 and aapl["code"] == 40310000 and "insufficient qty" in aapl["message"]
    assert (aapl["available"], aapl["existing_qty"], aapl["held_for_orders"]) == (0.0, 10.0, 10.0)
    assert pd.isna(aapl["order_id"])
    assert msft["status"] == 200 and msft["qty"] == 2.0 and msft["side"] == "sell"
    assert msft["order_status"] in ("filled", "new", "accepted", "pending_new")
    assert pd.isna(msft["message"]) and pd.isna(msft["available"])
    assert str(result["message"].dtype) == str(result.reset_index()["symbol"].dtype)


def test_a_lost_close_does_not_adopt_another_programs_order_on_the_other_side(sb, acct):
    api = client(acct)
    api.buy("AAPL", 10)
    poll(api.positions, lambda df: "AAPL" in df.index)
    # another program buys 4 more at market just before (its client_order_id is the server's)
    requests.post(f"{acct.url}/v2/orders", json={"symbol": "AAPL", "qty": "4", "side": "buy", "type": "market",
                                                 "time_in_force": "day"}, headers=acct.headers,
                  timeout=10).raise_for_status()
    chaos(sb, "lose=1,scope=/v2/positions,methods=DELETE")
    closing = client(acct).close_position("AAPL", qty=4)
    assert closing["side"] == "sell" and closing["qty"] == 4.0
    chaos(sb, "")
    sells = [o for o in server_orders(sb, acct) if o["side"] == "sell"]
    assert [o["id"] for o in sells] == [closing.name]


def test_a_lost_close_does_not_adopt_this_clients_own_market_order(sb, acct):
    api = client(acct)
    api.buy("AAPL", 10)
    poll(api.positions, lambda df: "AAPL" in df.index)
    own = api.sell("AAPL", 4)                            # the same shape as the closing order
    chaos(sb, "lose=1,scope=/v2/positions,methods=DELETE")
    closing = api.close_position("AAPL", qty=4)
    chaos(sb, "")
    assert closing.name != own.name and closing["side"] == "sell" and closing["qty"] == 4.0
    assert {o["id"] for o in server_orders(sb, acct) if o["side"] == "sell"} == {own.name, closing.name}
