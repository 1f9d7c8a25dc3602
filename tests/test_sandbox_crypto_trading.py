"""Crypto orders in the sandbox's engine, through REST and the official alpaca-py TradingClient:
fractional quantities and increments, notional buys, refused shorting, gtc/ioc only, cash-only
buying power, fees in cash, positions and CFEE activities, and fills 24/7 (a weekend date in
calendar mode, where stocks do not trade)."""

from __future__ import annotations

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import AssetClass, OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (GetAssetsRequest, GetOrdersRequest, LimitOrderRequest,
                                     MarketOrderRequest, StopLimitOrderRequest)

from alpaca_nb.sandbox.crypto_market import CryptoMarket
from sandbox_trading_support import Api, advance, frozen, new_api, now_ns, num, set_clock, ts

SATURDAY = "2025-06-07T12:00:30Z"        # no NYSE session: stocks wait, crypto trades


@pytest.fixture(scope="module")
def calendar_sb():
    with frozen(SATURDAY, market="calendar") as sb:
        yield sb


@pytest.fixture
def api(calendar_sb):
    return new_api(calendar_sb)


def crypto_order(api, **body):
    body.setdefault("symbol", "BTC/USD")
    body.setdefault("side", "buy")
    body.setdefault("type", "market")
    body.setdefault("time_in_force", "gtc")
    return api.post("/v2/orders", body)


def activities(api, kind: str) -> list[dict]:
    resp = api.get(f"/v2/account/activities/{kind}", direction="asc")
    assert resp.status_code == 200, resp.text
    return resp.json()


def filled(api, sb, order_id: str) -> dict:
    """The order once filled: a quote shows a limited size, the rest fills at later quotes
    (the frozen clock is moved 30 s at a time)."""
    for _ in range(40):
        order = api.get_order(order_id)
        if order["status"] == "filled":
            return order
        advance(sb, 30)
    raise AssertionError(f"not filled: {order}")


def test_fractional_buy_on_a_weekend_pays_the_taker_fee_in_the_coin(api, calendar_sb):
    reference = CryptoMarket(seed=7)
    resp = crypto_order(api, qty="0.0015")
    assert resp.status_code == 200, resp.text
    order = api.get_order(resp.json()["id"])
    assert order["status"] == "filled" and order["asset_class"] == "crypto"
    assert order["symbol"] == "BTC/USD" and order["filled_qty"] == "0.0015"
    price = num(order["filled_avg_price"])
    assert price == reference.quote_at("BTC/USD", ts(order["filled_at"])).ask
    (fill,) = api.fills(order["id"])
    assert num(fill["qty"]) == 0.0015
    (fee,) = [a for a in activities(api, "CFEE") if order["id"] in a["description"]]
    assert fee["symbol"] == "BTC/USD" and num(fee["qty"]) == pytest.approx(-0.0015 * 0.0025)
    assert num(fee["net_amount"]) == 0
    pos = api.positions()["BTC/USD"]
    assert pos["asset_class"] == "crypto" and pos["exchange"] == "CRYPTO"
    assert num(pos["qty"]) == pytest.approx(0.0015 * (1 - 0.0025), abs=1e-12)
    assert num(pos["cost_basis"]) == pytest.approx(0.0015 * price, abs=1e-6)   # what was paid
    assert num(pos["avg_entry_price"]) > price                                  # the fee is in it
    assert num(api.account()["cash"]) == pytest.approx(100_000 - 0.0015 * price, abs=1e-6)
    stock = api.order(symbol="AAPL", qty=1)                 # the same Saturday: stocks wait
    assert api.get_order(stock["id"])["status"] == "accepted"


def test_sell_pays_the_fee_in_cash_and_never_goes_short(api, calendar_sb):
    buy = crypto_order(api, symbol="ETH/USD", qty="0.5")
    assert buy.status_code == 200
    filled(api, calendar_sb, buy.json()["id"])
    held = num(api.positions()["ETH/USD"]["qty"])
    assert held == pytest.approx(0.5 * 0.9975)
    too_much = crypto_order(api, symbol="ETH/USD", side="sell", qty="0.5")
    assert too_much.status_code == 403
    assert too_much.json() == {"code": 40310000, "message":
                               f"insufficient balance for ETH (requested: 0.5, available: {held:g})"}
    nothing = crypto_order(api, symbol="SOL/USD", side="sell", qty="1")
    assert nothing.status_code == 403 and "insufficient balance for SOL" in nothing.json()["message"]
    cash_before = num(api.account()["cash"])
    sell = crypto_order(api, symbol="ETH/USD", side="sell", qty="0.498")
    assert sell.status_code == 200, sell.text
    order = filled(api, calendar_sb, sell.json()["id"])
    proceeds = 0.498 * num(order["filled_avg_price"])
    fees = [a for a in activities(api, "CFEE") if order["id"] in a["description"]]
    assert sum(num(f["net_amount"]) for f in fees) == pytest.approx(-proceeds * 0.0025, abs=1e-6)
    assert all("qty" not in f for f in fees)
    assert num(api.account()["cash"]) == pytest.approx(cash_before + proceeds * 0.9975, abs=1e-6)
    assert num(api.positions()["ETH/USD"]["qty"]) == pytest.approx(held - 0.498)


def test_only_gtc_and_ioc_and_the_pairs_increments(api):
    cases = [
        (dict(time_in_force="day"), 422, "invalid crypto time_in_force: day"),
        (dict(time_in_force="fok"), 422, "invalid crypto time_in_force: fok"),
        (dict(time_in_force="opg"), 422, "gtc or ioc"),
        (dict(type="stop", stop_price="1"), 422, "invalid type for crypto order: stop"),
        (dict(qty="0.00005"), 422, "min_order_size"),
        (dict(qty="0.00015"), 422, "min_trade_increment"),
        (dict(type="limit", limit_price="95000.5", qty="0.001"), 422, "price_increment"),
        (dict(qty="0.001", extended_hours=True, type="limit", limit_price="95000"), 422, "extended_hours"),
        (dict(qty="50"), 403, "insufficient balance for USD"),               # cash only, no margin
        (dict(symbol="ETH/BTC", qty="1"), 422, "not tradable"),
    ]
    for body, status, text in cases:
        body.setdefault("qty", "0.001")
        resp = crypto_order(api, **body)
        assert resp.status_code == status and text in resp.json()["message"], (body, resp.text)
    assert api.get("/v2/orders", status="all").json() == []             # nothing was created
    ok = crypto_order(api, qty="0.0021", time_in_force="ioc")
    assert ok.status_code == 200 and api.get_order(ok.json()["id"])["status"] == "filled"


def test_notional_buy_is_floored_to_the_increment(api):
    resp = crypto_order(api, symbol="BTCUSD", notional="250")            # the legacy symbol too
    assert resp.status_code == 200, resp.text
    order = api.get_order(resp.json()["id"])
    assert order["symbol"] == "BTC/USD" and order["notional"] == "250"
    qty = num(order["filled_qty"])
    assert qty == round(qty, 4) and 0 < 250 - qty * num(order["filled_avg_price"]) < 0.0001 * 200_000


def test_resting_limit_fills_on_sunday_as_a_maker(calendar_sb):
    api = new_api(calendar_sb)
    reference = CryptoMarket(seed=7)
    now = now_ns(calendar_sb)
    ask = reference.quote_at("LTC/USD", now).ask
    limit = round(ask * 0.99, 2)
    resp = crypto_order(api, symbol="LTC/USD", qty="2", type="limit", limit_price=f"{limit}")
    assert resp.status_code == 200, resp.text
    order_id = resp.json()["id"]
    assert api.get_order(order_id)["status"] == "new"
    advance(calendar_sb, 36 * 3600)                            # through Sunday, no session at all
    order = api.get_order(order_id)
    assert order["status"] == "filled", order
    filled_at = ts(order["filled_at"])
    assert filled_at < ts("2025-06-09T13:30:00Z")              # before Monday's stock open
    quote = reference.quote_at("LTC/USD", filled_at)
    assert quote.ask <= limit and num(order["filled_avg_price"]) == quote.ask
    (fee,) = [a for a in activities(api, "CFEE") if order_id in a["description"]]
    assert "maker" in fee["description"] and num(fee["qty"]) == pytest.approx(-2 * 0.0015)


def test_alpaca_py_trading_client_places_lists_and_fills_crypto(calendar_sb):
    api = new_api(calendar_sb)
    client = TradingClient(api.key_id, api.secret_key, url_override=api.url)
    client._retry = 0
    assets = client.get_all_assets(GetAssetsRequest(asset_class=AssetClass.CRYPTO))
    assert len(assets) >= 20 and all(a.asset_class == AssetClass.CRYPTO for a in assets)
    btc = client.get_asset("BTC/USD")
    assert btc.min_order_size == 0.0001 and btc.fractionable and not btc.shortable
    market = client.submit_order(MarketOrderRequest(symbol="BTC/USD", qty=0.002, side=OrderSide.BUY,
                                                    time_in_force=TimeInForce.GTC))
    assert client.get_order_by_id(market.id).status == OrderStatus.FILLED
    notional = client.submit_order(MarketOrderRequest(symbol="SOL/USD", notional=100,
                                                      side=OrderSide.BUY, time_in_force=TimeInForce.IOC))
    assert client.get_order_by_id(notional.id).status == OrderStatus.FILLED
    far = client.submit_order(LimitOrderRequest(symbol="ETH/USD", qty=0.01, side=OrderSide.BUY,
                                                limit_price=100, time_in_force=TimeInForce.GTC))
    stop = client.submit_order(StopLimitOrderRequest(symbol="BTC/USD", qty=0.001, side=OrderSide.SELL,
                                                     stop_price=10_000, limit_price=9_000,
                                                     time_in_force=TimeInForce.GTC))
    open_orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    assert {o.id for o in open_orders} == {far.id, stop.id}
    assert all(o.asset_class == AssetClass.CRYPTO for o in open_orders)
    positions = {p.symbol: p for p in client.get_all_positions()}
    assert set(positions) == {"BTC/USD", "SOL/USD"}
    assert positions["BTC/USD"].asset_class == AssetClass.CRYPTO
    assert float(positions["BTC/USD"].qty) == pytest.approx(0.002 * 0.9975)
    with pytest.raises(APIError) as refused:
        client.submit_order(MarketOrderRequest(symbol="BTC/USD", qty=0.001, side=OrderSide.BUY,
                                               time_in_force=TimeInForce.DAY))
    assert refused.value.status_code == 422
    client.cancel_orders()
    assert client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN)) == []


def test_positions_by_pair_or_legacy_symbol_close_whole_and_history_covers_crypto(calendar_sb):
    api = new_api(calendar_sb)
    buy = crypto_order(api, symbol="DOGE/USD", qty="1000")
    filled(api, calendar_sb, buy.json()["id"])
    held = num(api.positions()["DOGE/USD"]["qty"])
    assert held == pytest.approx(997.5)
    for path in ("DOGE%2FUSD", "DOGEUSD", api.positions()["DOGE/USD"]["asset_id"]):
        resp = api.get(f"/v2/positions/{path}")
        assert resp.status_code == 200 and resp.json()["symbol"] == "DOGE/USD", path
    set_clock(calendar_sb, "2025-06-09T21:00:00Z")            # Monday, after the NYSE close
    history = api.get("/v2/account/portfolio/history", period="1W", timeframe="1D").json()
    close = CryptoMarket(seed=7).trade_at("DOGE/USD", ts("2025-06-09T20:00:00Z") - 1).price
    cash = num(api.account()["cash"])
    assert history["equity"][-1] == pytest.approx(cash + held * close, abs=0.01)   # valued at the close
    closed = api.delete("/v2/positions/DOGEUSD")
    assert closed.status_code == 200, closed.text
    assert closed.json()["time_in_force"] == "gtc" and num(closed.json()["qty"]) == held
    filled(api, calendar_sb, closed.json()["id"])
    assert "DOGE/USD" not in api.positions()
    kinds = {a["activity_type"] for a in api.get("/v2/account/activities").json()}
    assert {"FILL", "CFEE"} <= kinds


def test_a_restart_keeps_crypto_positions_fees_and_their_history(tmp_path):
    db = str(tmp_path / "crypto.db")
    with frozen("2025-06-09T15:00:00Z", market="calendar", db=db) as sb:     # Monday 11:00 ET
        api = new_api(sb)
        filled(api, sb, crypto_order(api, symbol="LINK/USD", qty="20").json()["id"])
        sell = crypto_order(api, symbol="LINK/USD", side="sell", qty="5")
        filled(api, sb, sell.json()["id"])
        advance(sb, 1800)
        before = (api.positions()["LINK/USD"], api.account()["cash"],
                  api.get("/v2/account/activities", direction="asc").json(),
                  api.get("/v2/account/portfolio/history", period="1D", timeframe="15Min").json())
        fees = [a for a in before[2] if a["activity_type"] == "CFEE"]
        assert fees and before[3]["equity"][-1] == pytest.approx(num(api.account()["equity"]), abs=0.01)
        stop_at = now_ns(sb)
    with frozen(stop_at, market="calendar", db=db) as sb:
        again = Api(sb.url, api.key_id, api.secret_key)
        after = (again.positions()["LINK/USD"], again.account()["cash"],
                 again.get("/v2/account/activities", direction="asc").json(),
                 again.get("/v2/account/portfolio/history", period="1D", timeframe="15Min").json())
    assert after[0]["qty"] == before[0]["qty"] and after[0]["cost_basis"] == before[0]["cost_basis"]
    assert after[1:3] == before[1:3]
    assert after[3]["equity"] == before[3]["equity"]


def test_trade_updates_carry_crypto_fills_with_fractional_quantities(calendar_sb):
    from test_sandbox_trading_stream import authed, events

    api = new_api(calendar_sb)
    ws = authed(api)
    try:
        resp = crypto_order(api, symbol="SOL/USD", qty="0.125", time_in_force="ioc")
        assert resp.status_code == 200, resp.text
        seen = events(ws, "fill", resp.json()["id"])
    finally:
        ws.close()
    assert [e["event"] for e in seen] == ["accepted", "pending_new", "new", "fill"]
    fill = seen[-1]
    assert fill["order"]["symbol"] == "SOL/USD" and fill["order"]["asset_class"] == "crypto"
    assert fill["qty"] == "0.125" and fill["order"]["time_in_force"] == "ioc"
    assert float(fill["position_qty"]) == pytest.approx(0.125 * 0.9975)   # the coin fee is taken
