"""Conformance: the official alpaca-py SDK, unchanged, against the sandbox (``url_override``).

Every TradingClient call the toolkit relies on must parse the sandbox's answers into alpaca-py's
models, and TradingStream must receive fill events. (alpaca-py's TradingClient has no activities
method; activities are tested over HTTP in test_sandbox_trading_api.py.)
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import (AssetClass, AssetStatus, OrderClass, OrderSide, OrderStatus,
                                  OrderType, PositionSide, QueryOrderStatus, TimeInForce)
from alpaca.trading.models import (Calendar, ClosePositionResponse, Order, PortfolioHistory,
                                   Position, TradeAccount)
from alpaca.trading.requests import (ClosePositionRequest, GetAssetsRequest, GetCalendarRequest,
                                     GetOrderByIdRequest, GetOrdersRequest,
                                     GetPortfolioHistoryRequest, LimitOrderRequest,
                                     MarketOrderRequest, ReplaceOrderRequest, StopLimitOrderRequest,
                                     StopLossRequest, StopOrderRequest, TakeProfitRequest,
                                     TrailingStopOrderRequest)
from alpaca.trading.stream import TradingStream

from sandbox_trading_support import admin, frozen, new_api

SYMBOL = "AAPL"


@pytest.fixture
def client(account) -> TradingClient:
    c = TradingClient(account.key_id, account.secret_key, url_override=account.url)
    c._retry = 0            # error tests must not sleep through alpaca-py's 429/504 retries
    return c


def last_price(client: TradingClient, symbol: str = SYMBOL) -> float:
    order = client.submit_order(MarketOrderRequest(symbol=symbol, qty=1, side=OrderSide.BUY,
                                                   time_in_force=TimeInForce.DAY))
    return float(client.get_order_by_id(order.id).filled_avg_price)


def test_account_and_configurations(client):
    acct = client.get_account()
    assert isinstance(acct, TradeAccount)
    assert float(acct.equity) == float(acct.cash) == 100_000 and acct.multiplier == "2"
    config = client.get_account_configurations()
    assert config.max_margin_multiplier == "2" and config.fractional_trading is True
    config.no_shorting = True
    assert client.set_account_configurations(config).no_shorting is True
    assert client.get_account().shorting_enabled is False


def test_every_order_type_and_time_in_force(client):
    price = last_price(client)
    requests_ = [
        MarketOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY),
        MarketOrderRequest(symbol=SYMBOL, notional=250.5, side=OrderSide.BUY,
                           time_in_force=TimeInForce.DAY),
        MarketOrderRequest(symbol=SYMBOL, qty=0.25, side=OrderSide.BUY, time_in_force=TimeInForce.DAY),
        LimitOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
                          limit_price=round(price * 0.5, 2)),
        LimitOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                          limit_price=round(price * 0.5, 2), extended_hours=True),
        StopOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
                         stop_price=round(price * 1.5, 2)),
        StopLimitOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                              stop_price=round(price * 1.5, 2), limit_price=round(price * 1.6, 2)),
        TrailingStopOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.SELL,
                                 time_in_force=TimeInForce.GTC, trail_price=round(price * 0.3, 2)),
        TrailingStopOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY,
                                 time_in_force=TimeInForce.DAY, trail_percent=25),
        MarketOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.OPG),
        MarketOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.CLS),
        MarketOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.IOC),
        LimitOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.FOK,
                          limit_price=round(price * 1.1, 2)),
    ]
    placed = [client.submit_order(r) for r in requests_]
    assert all(isinstance(o, Order) for o in placed)
    assert [o.type for o in placed] == [r.type for r in requests_]
    assert placed[1].notional == "250.5" and placed[1].qty is None
    by_id = {o.id: client.get_order_by_id(o.id) for o in placed}
    statuses = [by_id[o.id].status for o in placed]
    assert statuses[0] == statuses[1] == statuses[2] == OrderStatus.FILLED
    assert statuses[3] == statuses[5] == statuses[6] == OrderStatus.NEW
    assert statuses[9] == statuses[10] == OrderStatus.ACCEPTED
    assert statuses[11] in (OrderStatus.FILLED, OrderStatus.CANCELED)
    trail = by_id[placed[7].id]
    assert trail.hwm is not None and float(trail.stop_price) < float(trail.hwm)
    assert by_id[placed[4].id].extended_hours is True


def test_order_classes(client):
    price = last_price(client)
    bracket = client.submit_order(MarketOrderRequest(
        symbol=SYMBOL, qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
        order_class=OrderClass.BRACKET, take_profit=TakeProfitRequest(limit_price=round(price * 1.5, 2)),
        stop_loss=StopLossRequest(stop_price=round(price * 0.5, 2), limit_price=round(price * 0.49, 2))))
    assert bracket.order_class == OrderClass.BRACKET and len(bracket.legs) == 2
    nested = client.get_order_by_id(bracket.id, GetOrderByIdRequest(nested=True))
    assert nested.status == OrderStatus.FILLED
    assert sorted(leg.type for leg in nested.legs) == [OrderType.LIMIT, OrderType.STOP_LIMIT]
    assert all(leg.status == OrderStatus.NEW for leg in nested.legs)
    client.submit_order(MarketOrderRequest(symbol="MSFT", qty=3, side=OrderSide.BUY,
                                           time_in_force=TimeInForce.DAY))
    msft = float(client.get_open_position("MSFT").current_price)
    oco = client.submit_order(LimitOrderRequest(
        symbol="MSFT", qty=3, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
        order_class=OrderClass.OCO, take_profit=TakeProfitRequest(limit_price=round(msft * 1.5, 2)),
        stop_loss=StopLossRequest(stop_price=round(msft * 0.5, 2))))
    assert oco.order_class == OrderClass.OCO and len(oco.legs) == 1
    oto = client.submit_order(LimitOrderRequest(
        symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
        limit_price=100, order_class=OrderClass.OTO,
        stop_loss=StopLossRequest(stop_price=90)))
    assert oto.order_class == OrderClass.OTO and oto.legs[0].status == OrderStatus.HELD
    listed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
    assert {o.id for o in listed} >= {bracket.id, oco.id, oto.id}
    assert all(o.legs for o in listed if o.id in (bracket.id, oco.id, oto.id))


def test_list_get_replace_and_cancel(client):
    cid = f"sdk-{uuid.uuid4()}"
    order = client.submit_order(LimitOrderRequest(symbol=SYMBOL, qty=2, side=OrderSide.BUY,
                                                  time_in_force=TimeInForce.GTC, limit_price=1.5,
                                                  client_order_id=cid))
    other = client.submit_order(LimitOrderRequest(symbol="MSFT", qty=1, side=OrderSide.BUY,
                                                  time_in_force=TimeInForce.GTC, limit_price=1.5))
    since = order.submitted_at - dt.timedelta(seconds=1)
    listed = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN, symbols=[SYMBOL],
                                                after=since, nested=True))
    assert [o.id for o in listed] == [order.id]
    assert client.get_order_by_client_id(cid).id == order.id
    new = client.replace_order_by_id(order.id, ReplaceOrderRequest(qty=3, limit_price=1.75))
    assert new.replaces == order.id and new.qty == "3" and new.limit_price == "1.75"
    assert client.get_order_by_id(order.id).status == OrderStatus.REPLACED
    client.cancel_order_by_id(new.id)
    assert client.get_order_by_id(new.id).status == OrderStatus.CANCELED
    responses = client.cancel_orders()
    assert [(r.id, r.status) for r in responses] == [(other.id, 200)]
    assert client.get_orders() == []


def test_positions_and_closing_them(client):
    client.submit_order(MarketOrderRequest(symbol=SYMBOL, qty=10, side=OrderSide.BUY,
                                           time_in_force=TimeInForce.DAY))
    client.submit_order(MarketOrderRequest(symbol="TSLA", qty=2, side=OrderSide.SELL,
                                           time_in_force=TimeInForce.DAY))
    positions = {p.symbol: p for p in client.get_all_positions()}
    assert all(isinstance(p, Position) for p in positions.values())
    assert positions[SYMBOL].side == PositionSide.LONG and positions[SYMBOL].qty == "10"
    assert positions["TSLA"].side == PositionSide.SHORT and positions["TSLA"].qty == "-2"
    partial = client.close_position(SYMBOL, ClosePositionRequest(qty="4"))
    assert partial.side == OrderSide.SELL and partial.qty == "4"
    half = client.close_position(SYMBOL, ClosePositionRequest(percentage="50"))
    assert half.qty == "3"
    assert client.get_open_position(SYMBOL).qty == "3"
    results = client.close_all_positions(cancel_orders=True)
    assert all(isinstance(r, ClosePositionResponse) for r in results)
    assert sorted((r.symbol, r.status) for r in results) == [(SYMBOL, 200), ("TSLA", 200)]
    assert client.get_all_positions() == []
    with pytest.raises(APIError) as err:
        client.get_open_position(SYMBOL)
    assert err.value.status_code == 404 and err.value.code == 40410000


def test_assets_clock_calendar_and_portfolio_history(client):
    assets = client.get_all_assets(GetAssetsRequest(status=AssetStatus.ACTIVE,
                                                    asset_class=AssetClass.US_EQUITY))
    assert len(assets) > 100 and all(a.status == AssetStatus.ACTIVE for a in assets)
    aapl = client.get_asset(SYMBOL)
    assert aapl.symbol == SYMBOL and aapl.fractionable is True
    assert client.get_asset(aapl.id).symbol == SYMBOL
    clock = client.get_clock()        # always-open: trading at any hour, the NYSE's next open/close
    assert clock.is_open is True and clock.next_open != clock.next_close
    days = client.get_calendar(GetCalendarRequest(start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 7)))
    assert len(days) == 4 and all(isinstance(d, Calendar) for d in days)     # NYSE sessions
    assert days[0].open == dt.datetime(2024, 1, 2, 9, 30) and days[0].close == dt.datetime(2024, 1, 2, 16, 0)
    last_price(client)
    hist = client.get_portfolio_history(GetPortfolioHistoryRequest(period="1W", timeframe="1D"))
    assert isinstance(hist, PortfolioHistory) and hist.timeframe == "1D"
    assert len(hist.timestamp) == len(hist.equity) >= 1
    assert abs(hist.equity[-1] - float(client.get_account().equity)) < 0.01
    intraday = client.get_portfolio_history(GetPortfolioHistoryRequest(period="1D", timeframe="15Min"))
    assert intraday.timeframe == "15Min"


def test_errors_surface_as_api_errors_with_alpacas_codes(client):
    with pytest.raises(APIError) as err:
        client.submit_order(MarketOrderRequest(symbol=SYMBOL, qty=100_000, side=OrderSide.BUY,
                                               time_in_force=TimeInForce.DAY))
    assert err.value.status_code == 403 and err.value.code == 40310000
    assert err.value.message == "insufficient buying power"
    with pytest.raises(APIError) as err:
        client.get_order_by_id(uuid.uuid4())
    assert err.value.status_code == 404 and err.value.message == "order not found"
    client.submit_order(MarketOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY,
                                           time_in_force=TimeInForce.DAY, client_order_id="dup"))
    with pytest.raises(APIError) as err:
        client.submit_order(MarketOrderRequest(symbol=SYMBOL, qty=1, side=OrderSide.BUY,
                                               time_in_force=TimeInForce.DAY, client_order_id="dup"))
    assert err.value.status_code == 422 and err.value.message == "client_order_id must be unique"
    filled = client.get_order_by_client_id("dup")
    with pytest.raises(APIError) as err:
        client.cancel_order_by_id(filled.id)
    assert err.value.code == 42210000


def test_trading_stream_receives_fill_events():
    with frozen() as sb:
        api = new_api(sb)
        stream = TradingStream(api.key_id, api.secret_key, url_override=sb.stream_url + "/stream")
        got: list = []
        done = threading.Event()

        async def on_update(update):
            got.append(update)
            if update.event == "fill":
                done.set()

        stream.subscribe_trade_updates(on_update)
        thread = threading.Thread(target=stream.run, daemon=True)
        thread.start()
        for _ in range(500):                    # wait until the stream has subscribed
            status = requests.get(f"{sb.url}/sandbox/status", headers=admin(sb), timeout=5).json()
            if status["connections"]["trading"] and stream._running:
                break
            threading.Event().wait(0.01)
        client = TradingClient(api.key_id, api.secret_key, url_override=sb.url)
        order = client.submit_order(MarketOrderRequest(symbol=SYMBOL, qty=2, side=OrderSide.BUY,
                                                       time_in_force=TimeInForce.DAY))
        assert done.wait(30)
        stream.stop()
        requests.post(f"{sb.url}/sandbox/streams/drop", json={"kind": "trading"}, headers=admin(sb),
                      timeout=5)
        thread.join(15)
        assert not thread.is_alive()
        fill = got[-1]
        assert fill.order.id == order.id and fill.order.status == OrderStatus.FILLED
        assert fill.qty == 2 and fill.position_qty == 2 and fill.price > 0
        assert fill.execution_id is not None and fill.timestamp.tzinfo is not None
        assert [u.event for u in got] == ["accepted", "pending_new", "new", "fill"]
