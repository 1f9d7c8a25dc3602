"""Crypto orders through the client against a real sandbox: notional and fractional buys, what
crypto accepts (gtc/ioc, market/limit/stop_limit, simple orders) and the pair's increments
refused before sending with a message that names the allowed values, and the guard valuing
crypto in dollars against the account's cash (crypto is never bought on margin)."""

from __future__ import annotations

import pandas as pd
import pytest
import requests
from _http_proxy import RecordingProxy
from conftest import new_account, poll

import alpaca_nb as anb
from alpaca_nb.orders import order_body
from alpaca_nb.errors import BuyingPowerCheckError, OrderValidationError, PreTradeCheckError

GUARD_ENV = ("ALPACA_NB_MAX_ORDER_NOTIONAL", "ALPACA_NB_MAX_ORDER_QTY", "ALPACA_NB_PRICE_COLLAR",
             "ALPACA_NB_BUYING_POWER_CHECK", "ALPACA_NB_GUARD_CACHE")


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in GUARD_ENV:
        monkeypatch.delenv(name, raising=False)


def client(acct, url: str | None = None, **kw):
    return anb.connect(base_url=url or acct.url, data_url=url or acct.url, key_id=acct.key_id,
                       secret_key=acct.secret_key, **kw)


def orders_sent(proxy) -> list:
    return proxy.matching("POST", "/v2/orders")


def test_crypto_defaults_to_gtc_and_refuses_what_crypto_does_not_take():
    body = order_body("btc/usd", "0.0015")
    assert body["time_in_force"] == "gtc" and body["symbol"] == "BTC/USD" and body["qty"] == "0.0015"
    assert order_body("AAPL", 1)["time_in_force"] == "day"            # stocks unchanged
    assert order_body("BTC/USD", "0.5", type="limit", limit_price=90000, time_in_force="ioc")["qty"] == "0.5"
    cases = [
        (dict(time_in_force="day"), r"time_in_force='day' is not accepted for crypto \(BTC/USD\).*'gtc' or 'ioc'"),
        (dict(time_in_force="fok"), r"'gtc' or 'ioc'"),
        (dict(type="stop", stop_price=90000), r"type='stop' is not accepted for crypto.*'market', 'limit', 'stop_limit'"),
        (dict(type="trailing_stop", trail_percent=1), r"type='trailing_stop'"),
        (dict(type="limit", limit_price=90000, order_class="bracket", take_profit=99000, stop_loss=80000),
         r"order_class='bracket' is not accepted for crypto"),
        (dict(type="limit", limit_price=90000, extended_hours=True), r"extended_hours=True is not for crypto"),
    ]
    for kwargs, message in cases:
        with pytest.raises(OrderValidationError, match=message):
            order_body("BTC/USD", "0.001", **kwargs)


def test_increments_are_checked_before_sending(sandbox, account):
    with RecordingProxy(sandbox.url) as proxy:
        api = client(account, proxy.url)
        asset = requests.get(f"{sandbox.url}/v2/assets/BTC/USD", headers=account.headers, timeout=10).json()
        assert float(asset["min_order_size"]) == 0.0001 and float(asset["price_increment"]) == 1
        cases = [
            (dict(qty="0.00005"), r"qty=0.00005 is below the minimum order size of BTC/USD, 0.0001"),
            (dict(qty="0.00015"), r"qty=0.00015 is not a multiple of BTC/USD's min_trade_increment 0.0001; e.g. qty=0.0001"),
            (dict(qty="0.001", type="limit", limit_price="90000.5"),
             r"limit_price=90000.5 is not a multiple of BTC/USD's price_increment 1; e.g. limit_price=90000"),
            (dict(qty="0.001", type="stop_limit", stop_price="90000.25", limit_price=90001),
             r"stop_price=90000.25 is not a multiple"),
        ]
        for kwargs, message in cases:
            with pytest.raises(OrderValidationError, match=message):
                api.buy("BTC/USD", **kwargs)
        with pytest.raises(OrderValidationError, match="'gtc' or 'ioc'"):
            api.buy("ETH/USD", 0.01, time_in_force="day")
        assert orders_sent(proxy) == []
        assert len(proxy.matching("GET", "/v2/assets/BTC/USD")) == 1       # asked once per client


def test_notional_and_fractional_buys_fill(sandbox, account):
    api = client(account)
    by_dollars = api.buy("BTC/USD", notional=100)
    assert by_dollars["time_in_force"] == "gtc" and by_dollars["symbol"] == "BTC/USD"
    by_coins = api.buy("BTC/USD", qty=0.0015)
    limit = api.buy("ETH/USD", 0.01, type="limit", limit_price=1, time_in_force="gtc")
    assert limit["status"] in ("new", "accepted", "pending_new")
    filled = poll(lambda: [api.order(o["id"]) for o in (by_dollars, by_coins)],
                  lambda rows: all(r["status"] == "filled" for r in rows), timeout=30)
    assert [r["status"] for r in filled] == ["filled", "filled"]
    assert float(filled[1]["filled_qty"]) == 0.0015
    price, coins = float(filled[0]["filled_avg_price"]), float(filled[0]["filled_qty"])
    assert 100 - price * 0.0001 < price * coins <= 100      # $100 of BTC, to the 0.0001 increment
    positions = api.positions()
    assert "BTCUSD" in positions.index or "BTC/USD" in positions.index
    api.cancel_order(limit["id"])


def test_the_guard_values_crypto_in_dollars_against_cash(sandbox):
    acct = new_account(sandbox, cash=1_000)
    api = client(acct, max_order_notional=None)
    account = api.account()
    assert float(account["buying_power"]) > 1_500 >= float(account["non_marginable_buying_power"])
    with pytest.raises(BuyingPowerCheckError, match=r"BTC/USD refused before sending.*\$1,000\.00"):
        api.buy("BTC/USD", notional=1_500)                  # margin would allow it, cash does not
    with pytest.raises(BuyingPowerCheckError):
        api.buy("BTC/USD", qty="0.02")                      # about $1,900 at the last trade
    capped = client(acct, max_order_notional=500)
    with pytest.raises(PreTradeCheckError, match=r"max_order_notional.*\$500\.00"):
        capped.buy("ETH/USD", qty="0.2", type="limit", limit_price=3000)   # $600 of ETH
    assert api.buy("BTC/USD", notional=900)["symbol"] == "BTC/USD"       # within the cash


def test_the_assets_frame_carries_crypto_increments(sandbox, account):
    api = client(account)
    coins = api.assets(asset_class="crypto")
    stocks = api.assets()
    for frame in (coins, stocks):      # the same columns and dtypes whatever the asset class
        for column in ("min_order_size", "min_trade_increment", "price_increment"):
            assert frame[column].dtype == "float64"
    assert list(coins.columns) == list(stocks.columns)
    wire = requests.get(f"{sandbox.url}/v2/assets/BTC/USD", headers=account.headers, timeout=10).json()
    btc = coins.loc["BTC/USD"]
    assert (btc["min_order_size"], btc["min_trade_increment"], btc["price_increment"]) == (
        float(wire["min_order_size"]), float(wire["min_trade_increment"]), float(wire["price_increment"]))
    assert coins[["min_order_size", "min_trade_increment", "price_increment"]].notna().all().all()
    assert stocks[["min_order_size", "min_trade_increment", "price_increment"]].isna().all().all()
    one = api.asset("ETH/USD")
    assert one["min_trade_increment"] > 0 and isinstance(one["min_trade_increment"], float)
    assert pd.isna(api.asset("AAPL")["price_increment"])
