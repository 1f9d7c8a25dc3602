"""Sandbox trading REST: Alpaca's errors, order listing, positions, assets, account
configurations, activities and portfolio history, over real sockets.

Validation and listing tests use the session's shared sandbox (real time, a fresh account each);
activity and portfolio-history arithmetic uses a sandbox with a frozen clock so that the expected
values can be recomputed from the reference market.
"""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest

from sandbox_trading_support import (Api, advance, frozen, new_api, num, reference_market, ts)

SYMBOL = "AAPL"


@pytest.fixture
def api(account) -> Api:
    return Api(account.url, account.key_id, account.secret_key)


def order_body(**body):
    base = {"symbol": SYMBOL, "qty": 1, "side": "buy", "type": "market", "time_in_force": "day"}
    base.update(body)
    return {k: v for k, v in base.items() if v is not None}


# ---------------------------------------------------------------- validation errors

INVALID_ORDERS = [
    (order_body(qty=None), 422, 40010001, "qty or notional is required"),
    (order_body(notional=10), 422, 40010001, "only one of qty or notional is accepted"),
    (order_body(qty=0), 422, 40010001, "qty must be > 0"),
    (order_body(qty="abc"), 422, 40010001, "invalid qty"),
    (order_body(qty=True), 422, 40010001, "invalid qty"),
    (order_body(side="short"), 422, 40010001, "invalid side"),
    (order_body(side=None), 422, 40010001, "side is required"),
    (order_body(type="iceberg"), 422, 40010001, "invalid type"),
    (order_body(time_in_force="gtd"), 422, 40010001, "invalid time_in_force"),
    (order_body(symbol=None), 422, 40010001, "symbol is required"),
    (order_body(type="limit"), 422, 40010001, "limit_price is required for limit orders"),
    (order_body(type="stop_limit", stop_price=10), 422, 40010001,
     "limit_price is required for stop_limit orders"),
    (order_body(type="stop"), 422, 40010001, "stop_price is required for stop orders"),
    (order_body(limit_price=10), 422, 40010001, "limit_price is not allowed for market orders"),
    (order_body(type="trailing_stop"), 422, 40010001,
     "trail_price or trail_percent is required for trailing_stop orders"),
    (order_body(type="limit", limit_price=150.001), 422, 42210000,
     "invalid limit_price 150.001. sub-penny increment does not fulfill minimum pricing criteria"),
    (order_body(type="limit", limit_price="0.12345"), 422, 42210000,
     "invalid limit_price 0.12345. sub-penny increment does not fulfill minimum pricing criteria"),
    (order_body(type="limit", limit_price=-1), 422, 40010001, "invalid limit_price: must be > 0"),
    (order_body(extended_hours=True), 422, 40010001,
     'only type="limit" is allowed for extended hours orders'),
    (order_body(symbol="NOSUCHSYMBOL"), 422, 40010001, 'asset "NOSUCHSYMBOL" not found'),
    (order_body(symbol="TWTR"), 422, 42210000, 'asset "TWTR" is not active'),
    (order_body(order_class="bracket", take_profit={"limit_price": 1000}), 422, 40010001,
     "bracket orders require take_profit and stop_loss"),
    (order_body(order_class="bracket", time_in_force="ioc", take_profit={"limit_price": 1000},
                stop_loss={"stop_price": 1}), 422, 40010001,
     "time_in_force for bracket orders must be day or gtc"),
    (order_body(order_class="oco", take_profit={"limit_price": 1000}, stop_loss={"stop_price": 1}),
     422, 40010001, 'oco orders must be type="limit"'),
    (order_body(order_class="bracket", take_profit={"limit_price": 0},
                stop_loss={"stop_price": 1}), 422, 40010001,
     "invalid take_profit.limit_price: must be > 0"),
    (order_body(qty=1.5, order_class="oto", stop_loss={"stop_price": 1}), 422, 42210000,
     "fractional orders must be simple orders"),
    (order_body(client_order_id="x" * 129), 422, 40010001,
     "client_order_id must be no more than 128 characters"),
]


@pytest.mark.parametrize("body,status,code,message", INVALID_ORDERS,
                         ids=[case[3][:40] for case in INVALID_ORDERS])
def test_invalid_orders_get_alpacas_answer_and_change_nothing(api, body, status, code, message):
    before = api.account()
    resp = api.post("/v2/orders", body)
    assert resp.status_code == status
    assert resp.json() == {"code": code, "message": message}
    assert api.get("/v2/orders", status="all").json() == []
    after = api.account()
    assert after["cash"] == before["cash"] and after["buying_power"] == before["buying_power"]


def test_non_tradable_asset_is_refused(api):
    assets = api.get("/v2/assets", status="active").json()
    locked = next(a for a in assets if not a["tradable"])
    resp = api.post("/v2/orders", order_body(symbol=locked["symbol"]))
    assert resp.status_code == 422
    assert resp.json() == {"code": 42210000, "message": f'asset "{locked["symbol"]}" is not tradable'}


def test_body_that_is_not_json_is_refused(api):
    resp = api.session.post(api.url + "/v2/orders", data=b"{not json", timeout=10)
    assert resp.status_code == 422 and resp.json()["code"] == 40010001


def test_numbers_as_strings_booleans_in_any_case_and_asset_ids_as_symbols(api):
    asset = api.get(f"/v2/assets/{SYMBOL}").json()
    resp = api.post("/v2/orders", {"symbol": asset["id"], "qty": "2", "side": "buy",
                                   "type": "limit", "limit_price": "1.5", "time_in_force": "gtc",
                                   "extended_hours": "False"})
    assert resp.status_code == 200, resp.text
    order = resp.json()
    assert order["symbol"] == SYMBOL and order["qty"] == "2" and order["limit_price"] == "1.5"
    assert order["extended_hours"] is False
    listed = api.get("/v2/orders", nested="True", after="2000-01-01T00:00:00+00:00").json()
    assert [o["id"] for o in listed] == [order["id"]]


def test_client_order_id_must_be_unique_even_after_the_first_order_is_done(api):
    first = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1, client_order_id="tag-1")
    assert api.delete(f"/v2/orders/{first['id']}").status_code == 204
    resp = api.post("/v2/orders", order_body(client_order_id="tag-1"))
    assert resp.status_code == 422
    assert resp.json() == {"code": 40010001, "message": "client_order_id must be unique"}
    found = api.get("/v2/orders:by_client_order_id", client_order_id="tag-1")
    assert found.status_code == 200 and found.json()["id"] == first["id"]
    missing = api.get("/v2/orders:by_client_order_id", client_order_id="never-used")
    assert missing.status_code == 404
    assert missing.json() == {"code": 40410000, "message": "order not found"}


def test_suspended_trading_and_disabled_fractional_trading(api):
    resp = api.patch("/v2/account/configurations", {"fractional_trading": False})
    assert resp.status_code == 200 and resp.json()["fractional_trading"] is False
    resp = api.post("/v2/orders", order_body(qty=0.5))
    assert resp.status_code == 422 and resp.json()["message"] == "qty must be integer"
    api.patch("/v2/account/configurations", {"suspend_trade": True})
    resp = api.post("/v2/orders", order_body())
    assert resp.status_code == 403 and resp.json()["code"] == 40310000
    assert api.account()["trade_suspended_by_user"] is True


# ---------------------------------------------------------------- account and configurations

def test_account_object_has_alpacas_fields_and_types(api):
    acct = api.account()
    for name in ("id", "account_number", "status", "currency", "buying_power", "regt_buying_power",
                 "non_marginable_buying_power", "cash", "portfolio_value",
                 "equity", "last_equity", "long_market_value", "short_market_value",
                 "initial_margin", "maintenance_margin", "last_maintenance_margin", "sma",
                 "multiplier", "created_at", "balance_asof"):
        assert name in acct, name
    for name in ("cash", "equity", "buying_power", "last_equity", "multiplier"):
        assert isinstance(acct[name], str)
    # removed by Alpaca on 2026-07-06 (pattern-day-trading deprecation), with what only they used
    for gone in ("daytrade_count", "pattern_day_trader", "daytrading_buying_power", "bod_dtbp"):
        assert gone not in acct, gone
    assert acct["admin_configurations"] == {} and acct["user_configurations"] is None
    assert acct["status"] == "ACTIVE" and acct["currency"] == "USD"
    assert acct["cash"] == acct["equity"] == acct["last_equity"] == "100000"
    assert acct["account_number"].startswith("PA")


def test_account_configurations_get_and_patch(api):
    config = api.get("/v2/account/configurations").json()
    assert config == {"fractional_trading": True,
                      "max_margin_multiplier": "2", "no_shorting": False,
                      "suspend_trade": False, "trade_confirm_email": "all",
                      "ptp_no_exception_entry": False, "max_options_trading_level": 0}
    updated = api.patch("/v2/account/configurations",
                        {"max_margin_multiplier": "1", "trade_confirm_email": "none"}).json()
    assert updated["max_margin_multiplier"] == "1" and updated["trade_confirm_email"] == "none"
    acct = api.account()
    assert acct["multiplier"] == "1" and num(acct["buying_power"]) == 100_000
    assert acct["shorting_enabled"] is False
    # the user's own settings show as user_configurations
    assert acct["user_configurations"] == {"max_margin_multiplier": "1",
                                           "trade_confirm_email": "none"}
    # the removed PDT settings are ignored like any unknown key, and never come back
    ignored = api.patch("/v2/account/configurations", {"dtbp_check": "both", "pdt_check": "exit"})
    assert ignored.status_code == 200 and ignored.json() == updated
    for bad in ({"max_margin_multiplier": "3"}, {"max_options_trading_level": 7},
                {"suspend_trade": "maybe"}, {"trade_confirm_email": "daily"}):
        resp = api.patch("/v2/account/configurations", bad)
        assert resp.status_code == 422 and resp.json()["code"] == 40010001
    assert api.get("/v2/account/configurations").json() == updated


def test_requests_without_valid_keys_are_refused(sandbox):
    bad = Api(sandbox.url, "nobody", "nothing")
    resp = bad.get("/v2/account")
    assert resp.status_code == 401
    assert resp.json() == {"code": 40110000, "message": "request is not authorized"}


# ---------------------------------------------------------------- order listing

def test_order_listing_filters(api):
    limits = [api.order(symbol=sym, qty=1, type="limit", limit_price=1, time_in_force="gtc")
              for sym in ("AAPL", "MSFT", "AAPL")]
    filled = api.order(symbol="SPY", qty=1)
    sell = api.order(symbol="SPY", qty=1, side="sell", type="limit", limit_price=100000,
                     time_in_force="gtc")
    ids = lambda resp: [o["id"] for o in resp.json()]  # noqa: E731
    open_desc = ids(api.get("/v2/orders"))
    assert open_desc == [sell["id"]] + [o["id"] for o in reversed(limits)]
    assert ids(api.get("/v2/orders", status="closed")) == [filled["id"]]
    assert len(ids(api.get("/v2/orders", status="all"))) == 5
    assert ids(api.get("/v2/orders", status="all", direction="asc", limit=2)) == \
        [limits[0]["id"], limits[1]["id"]]
    assert ids(api.get("/v2/orders", symbols="AAPL,SPY", side="buy")) == \
        [limits[2]["id"], limits[0]["id"]]
    assert ids(api.get("/v2/orders", side="sell")) == [sell["id"]]
    second = api.get_order(limits[1]["id"])
    assert ids(api.get("/v2/orders", status="all", after=second["submitted_at"], direction="asc")) == \
        [limits[2]["id"], filled["id"], sell["id"]]
    assert ids(api.get("/v2/orders", status="all", until=second["submitted_at"])) == [limits[0]["id"]]
    assert ids(api.get("/v2/orders", status="all", after_order_id=limits[1]["id"], direction="asc")) \
        == [limits[2]["id"], filled["id"], sell["id"]]
    assert ids(api.get("/v2/orders", status="all", before_order_id=limits[1]["id"])) == \
        [limits[0]["id"]]
    for bad in ({"status": "pending"}, {"limit": 501}, {"limit": 0}, {"direction": "up"},
                {"after": "yesterday"}, {"nested": "perhaps"},
                {"before_order_id": limits[0]["id"], "after_order_id": limits[1]["id"]},
                {"after_order_id": limits[0]["id"], "until": "2030-01-01T00:00:00Z"}):
        resp = api.get("/v2/orders", **bad)
        assert resp.status_code == 422 and resp.json()["code"] == 40010001, bad


def test_orders_carry_every_field_alpaca_py_requires(api):
    order = api.order(symbol=SYMBOL, qty=1)
    for name in ("id", "client_order_id", "created_at", "updated_at", "submitted_at", "filled_at",
                 "expired_at", "canceled_at", "failed_at", "replaced_at", "replaced_by", "replaces",
                 "asset_id", "symbol", "asset_class", "notional", "qty", "filled_qty",
                 "filled_avg_price", "order_class", "order_type", "type", "side", "time_in_force",
                 "limit_price", "stop_price", "status", "extended_hours", "legs", "trail_percent",
                 "trail_price", "hwm"):
        assert name in order, name
    assert order["created_at"].endswith("Z") and order["filled_qty"] == "0"
    # fields of today's Order object, null where they do not apply to this order
    assert order["cancel_requested_at"] is None and order["ratio_qty"] is None
    assert order["subtag"] is None and order["source"] is None


def test_timestamps_carry_alpacas_precision_and_a_leg_never_has_legs(api):
    micro = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,5}[1-9])?Z"     # RFC3339Nano of a µs time
    bracket = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1, time_in_force="gtc",
                        order_class="bracket", take_profit={"limit_price": 2},
                        stop_loss={"stop_price": 0.5})
    assert len(bracket["legs"]) == 2
    for order in [bracket, *bracket["legs"]]:
        for name in ("created_at", "updated_at", "submitted_at"):
            assert order[name] is not None and re.fullmatch(micro, order[name]), order[name]
    assert all(leg["legs"] is None for leg in bracket["legs"])
    nested = api.get_order(bracket["id"], nested="true")
    assert [leg["legs"] for leg in nested["legs"]] == [None, None]
    listed = api.get("/v2/orders", nested="true", symbols=SYMBOL).json()
    assert all(leg["legs"] is None for o in listed for leg in o["legs"] or ())
    assert re.fullmatch(micro, api.account()["created_at"])
    assert api.delete(f"/v2/orders/{bracket['id']}").status_code == 204


# ---------------------------------------------------------------- positions

def test_positions_by_symbol_or_asset_id_and_partial_closes(api):
    api.order(symbol=SYMBOL, qty=10)
    asset_id = api.get(f"/v2/assets/{SYMBOL}").json()["id"]
    by_symbol = api.get(f"/v2/positions/{SYMBOL}").json()
    by_id = api.get(f"/v2/positions/{asset_id}").json()
    assert by_symbol["asset_id"] == by_id["asset_id"] == asset_id
    assert by_symbol["qty"] == "10" and by_symbol["exchange"] == "NASDAQ"
    closing = api.delete(f"/v2/positions/{SYMBOL}", qty="3")
    assert closing.status_code == 200 and closing.json()["side"] == "sell"
    assert closing.json()["qty"] == "3"
    assert api.positions()[SYMBOL]["qty"] == "7"
    half = api.delete(f"/v2/positions/{SYMBOL}", percentage="50").json()
    assert half["qty"] == "3.5"
    assert api.positions()[SYMBOL]["qty"] == "3.5"
    both = api.delete(f"/v2/positions/{SYMBOL}", qty="1", percentage="10")
    assert both.status_code == 422
    too_many = api.delete(f"/v2/positions/{SYMBOL}", qty="100")
    assert too_many.status_code == 403 and too_many.json()["code"] == 40310000
    rest = api.delete(f"/v2/positions/{SYMBOL}")
    assert rest.status_code == 200 and rest.json()["qty"] == "3.5"
    assert api.positions() == {}
    gone = api.get(f"/v2/positions/{SYMBOL}")
    assert gone.status_code == 404
    assert gone.json() == {"code": 40410000, "message": "position does not exist"}
    assert api.delete(f"/v2/positions/{SYMBOL}").status_code == 404


def test_close_all_positions_answers_207_with_failures_in_the_body(api):
    api.order(symbol=SYMBOL, qty=2)
    api.order(symbol="MSFT", qty=3)
    api.order(symbol="MSFT", qty=3, side="sell", type="limit", limit_price=100000, time_in_force="gtc")
    resp = api.delete("/v2/positions")
    assert resp.status_code == 207
    by_symbol = {item["symbol"]: item for item in resp.json()}
    assert by_symbol[SYMBOL]["status"] == 200 and by_symbol[SYMBOL]["body"]["side"] == "sell"
    failed = by_symbol["MSFT"]
    assert failed["status"] == 403
    assert failed["body"] == {
        "code": 40310000,
        "message": "insufficient qty available for order (requested: 3, available: 0)",
        "available": "0", "existing_qty": "3", "held_for_orders": "3", "symbol": "MSFT"}
    resp = api.delete("/v2/positions", cancel_orders="true")
    assert resp.status_code == 207
    assert [(i["symbol"], i["status"]) for i in resp.json()] == [("MSFT", 200)]
    assert api.positions() == {} and api.get("/v2/orders").json() == []


# ---------------------------------------------------------------- assets

def test_assets_listing_filters_and_lookup(api):
    everything = api.get("/v2/assets").json()
    inactive = api.get("/v2/assets", status="inactive").json()
    active = api.get("/v2/assets", status="active").json()
    assert len(everything) == len(active) + len(inactive) > 100
    assert inactive and all(a["status"] == "inactive" for a in inactive)
    nyse = api.get("/v2/assets", exchange="NYSE").json()
    assert nyse and all(a["exchange"] == "NYSE" for a in nyse)
    options = api.get("/v2/assets", attributes="has_options").json()
    assert options and all("has_options" in a["attributes"] for a in options)
    crypto = api.get("/v2/assets", asset_class="crypto").json()      # tests/test_sandbox_crypto_data.py
    assert crypto and all(a["class"] == "crypto" for a in crypto)
    assert api.get("/v2/assets", status="dead").status_code == 422
    aapl = api.get(f"/v2/assets/{SYMBOL}").json()
    assert aapl["class"] == "us_equity" and aapl["symbol"] == SYMBOL
    # borrow_status (2026-06-05) next to the deprecated easy_to_borrow alpaca-py still requires
    assert {(a["borrow_status"], a["easy_to_borrow"]) for a in active} == {("ETB", True),
                                                                          ("HTB", False)}
    assert api.get(f"/v2/assets/{aapl['id']}").json() == aapl
    missing = api.get("/v2/assets/NOSUCHSYMBOL")
    assert missing.status_code == 404
    assert missing.json() == {"code": 40410000, "message": "asset not found"}


# ---------------------------------------------------------------- activities and history

@pytest.fixture(scope="module")
def fsb():
    with frozen() as sandbox:
        yield sandbox


def test_activities_record_the_deposit_and_every_fill(fsb):
    api = new_api(fsb)
    api.order(symbol=SYMBOL, qty=3)
    advance(fsb, 5)
    api.order(symbol="MSFT", qty=2)
    advance(fsb, 5)
    api.order(symbol=SYMBOL, qty=1, side="sell")
    everything = api.get("/v2/account/activities").json()
    assert [a["activity_type"] for a in everything] == ["FILL", "FILL", "FILL", "CSD"]
    deposit = everything[-1]
    assert deposit["net_amount"] == "100000" and deposit["description"] is not None
    # a non-trade activity carries its own fields only, with its currency (2026-06-22)
    assert set(deposit) == {"id", "activity_type", "date", "net_amount", "currency",
                            "description", "status"}
    assert deposit["currency"] == "USD" and deposit["status"] == "executed"
    fills = api.get("/v2/account/activities", activity_types="FILL", direction="asc").json()
    assert [(f["symbol"], f["side"], f["qty"]) for f in fills] == \
        [(SYMBOL, "buy", "3"), ("MSFT", "buy", "2"), (SYMBOL, "sell", "1")]
    for fill in fills:
        assert set(fill) >= {"id", "activity_type", "transaction_time", "type", "price", "qty",
                             "side", "symbol", "leaves_qty", "cum_qty", "order_id", "order_status"}
        assert fill["type"] == "fill" and fill["order_status"] == "filled"
        assert "::" in fill["id"] and fill["id"][:8] == fill["transaction_time"][:10].replace("-", "")
    assert api.get("/v2/account/activities/FILL", direction="asc").json() == fills
    assert api.get("/v2/account/activities/CSD").json() == [deposit]
    # filter names: TRD (trades) and TRANS (cash transfers) are filter-only groups; CORR is
    # returned by Alpaca but refused as a filter; types added in 2026 are accepted
    assert api.get("/v2/account/activities", activity_types="TRD", direction="asc").json() == fills
    assert api.get("/v2/account/activities", activity_types="TRANS").json() == [deposit]
    assert api.get("/v2/account/activities", activity_types="OCT,REO,CGD").json() == []
    refused = api.get("/v2/account/activities", activity_types="CORR")
    assert refused.status_code == 422 and refused.json()["code"] == 40010001
    # pagination by page_token (the last id of a page)
    page1 = api.get("/v2/account/activities", page_size=2).json()
    page2 = api.get("/v2/account/activities", page_size=2, page_token=page1[-1]["id"]).json()
    assert page1 + page2 == everything
    # time filters
    after = api.get("/v2/account/activities", after=fills[0]["transaction_time"],
                    direction="asc").json()
    assert after == fills[1:]
    until = api.get("/v2/account/activities", until=fills[1]["transaction_time"]).json()
    assert [a["id"] for a in until] == [fills[0]["id"], deposit["id"]]
    day = fills[0]["transaction_time"][:10]
    assert len(api.get("/v2/account/activities", date=day).json()) == 4
    for bad in ({"activity_types": "NOPE"}, {"direction": "sideways"}, {"page_size": 101},
                {"date": day, "after": fills[0]["transaction_time"]}):
        resp = api.get("/v2/account/activities", **bad)
        assert resp.status_code == 422 and resp.json()["code"] == 40010001, bad


def test_portfolio_history_is_replayed_from_fills_at_market_prices(fsb):
    market = reference_market(fsb)
    api = new_api(fsb)
    fill = api.get_order(api.order(symbol=SYMBOL, qty=10)["id"])
    price = num(fill["filled_avg_price"])
    start_day = dt.date.fromisoformat(api.get("/v2/clock").json()["timestamp"][:10])
    advance(fsb, 3 * 86_400)
    hist = api.get("/v2/account/portfolio/history", period="1W", timeframe="1D").json()
    assert set(hist) >= {"timestamp", "equity", "profit_loss", "profit_loss_pct", "base_value",
                         "timeframe"}
    assert hist["timeframe"] == "1D" and hist["base_value"] == 100_000
    days = [start_day + dt.timedelta(days=i) for i in range(4)]
    from alpaca_nb.sandbox.clock import ny_midnight_ns
    assert hist["timestamp"] == [ny_midnight_ns(d) // 10**9 for d in days]
    cash = 100_000 - 10 * price
    for k, day in enumerate(days[:-1]):          # finished days: valued at the closing auction
        expected = cash + 10 * market.closing_price(SYMBOL, day)
        assert math.isclose(hist["equity"][k], expected, abs_tol=1e-3)
        assert math.isclose(hist["profit_loss"][k], expected - 100_000, abs_tol=1e-3)
        assert math.isclose(hist["profit_loss_pct"][k], (expected - 100_000) / 100_000, abs_tol=1e-7)
    equity_now = num(api.account()["equity"])
    assert math.isclose(hist["equity"][-1], equity_now, abs_tol=1e-3)
    intraday = api.get("/v2/account/portfolio/history", period="1D", timeframe="1H").json()
    assert len(intraday["timestamp"]) >= 1 and intraday["timeframe"] == "1H"
    assert all(b - a == 3600 for a, b in zip(intraday["timestamp"], intraday["timestamp"][1:]))
    assert math.isclose(intraday["equity"][-1], equity_now, abs_tol=1e-3)
    # per-day P&L: against the previous session's close
    prev_close = cash + 10 * market.closing_price(SYMBOL, days[-2])
    assert math.isclose(intraday["base_value"], prev_close, abs_tol=1e-3)
    assert math.isclose(intraday["profit_loss"][-1], equity_now - prev_close, abs_tol=1e-3)
    for bad in ({"timeframe": "2D"}, {"period": "1X"}, {"intraday_reporting": "sometimes"},
                {"pnl_reset": "weekly"},
                {"period": "1W", "start": "2024-01-01T00:00:00Z", "end": "2024-01-05T00:00:00Z"}):
        resp = api.get("/v2/account/portfolio/history", **bad)
        assert resp.status_code == 422 and resp.json()["code"] == 40010001, bad


def test_last_equity_and_position_day_values_roll_at_the_session_boundary(fsb):
    market = reference_market(fsb)
    api = new_api(fsb)
    api.order(symbol=SYMBOL, qty=4)
    clock = api.get("/v2/clock").json()
    today = dt.date.fromisoformat(clock["timestamp"][:10])
    midnight = ts(f"{today + dt.timedelta(days=1)}T00:00:00-05:00")   # always-open: the day ends
    advance(fsb, (midnight - ts(clock["timestamp"])) / 1e9 + 60)
    acct = api.account()
    close_price = market.closing_price(SYMBOL, today)
    assert acct["balance_asof"] == today.isoformat()
    cash = num(acct["cash"])
    assert math.isclose(num(acct["last_equity"]), cash + 4 * close_price, abs_tol=1e-4)
    pos = api.positions()[SYMBOL]
    assert num(pos["lastday_price"]) == close_price
    assert math.isclose(num(pos["unrealized_intraday_pl"]),
                        4 * (num(pos["current_price"]) - close_price), abs_tol=1e-4)
