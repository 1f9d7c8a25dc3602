"""The order ticket with crypto pairs, headless against a real sandbox: the fields offer what
crypto accepts (market/limit/stop_limit, gtc by default or ioc, no bracket or extended hours),
quantities are fractional coins checked against the pair's increments, and the orders reach the
server as typed. Switching back to a stock restores the stock choices."""

from __future__ import annotations

import pytest
import requests
import traitlets
from _stream_helpers import FAST, connect, wait_for
from conftest import new_account

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.widgets import OrderTicket

STOCK_TIF = ["day", "gtc", "opg", "cls", "ioc", "fok"]


@pytest.fixture(scope="module")
def sb():
    with Sandbox(**FAST) as server:
        yield server


@pytest.fixture
def account(sb):
    return new_account(sb)


@pytest.fixture
def api(account):
    client = connect(account)
    yield client
    client.close()


def server_orders(account) -> list[dict]:
    resp = requests.get(f"{account.url}/v2/orders", params={"status": "all", "limit": 500},
                        headers=account.headers, timeout=10)
    resp.raise_for_status()
    return resp.json()


def values(widget) -> list[str]:
    return [value for _, value in widget.options]


def ready(ticket: OrderTicket, symbol: str) -> OrderTicket:
    wait_for(lambda: ticket.symbol.options and ticket._buying_power is not None and symbol in ticket._last
             and ticket._stream is not None, 30, f"the ticket to load assets, account and a {symbol} price")
    return ticket


def test_a_crypto_pair_gets_crypto_choices_and_a_stock_gets_them_back(api):
    ticket = ready(OrderTicket(api, "AAPL"), "AAPL")
    try:
        assert ticket.time_in_force.value == "day" and values(ticket.time_in_force) == STOCK_TIF
        assert "BTC/USD" in ticket.symbol.options and "AAPL" in ticket.symbol.options
        ticket.order_type.value = "limit"
        ticket.symbol.value = "btc/usd"
        assert ticket.symbol.value == "BTC/USD"
        assert values(ticket.time_in_force) == ["gtc", "ioc"] and ticket.time_in_force.value == "gtc"
        assert values(ticket.order_type) == ["market", "limit", "stop_limit"]
        assert ticket.order_type.value == "limit"                  # kept: crypto takes limit orders
        with pytest.raises(traitlets.TraitError):
            ticket.time_in_force.value = "day"                      # not offered
        assert ticket.bracket.layout.display == "none" and ticket.extended_hours.layout.display == "none"
        assert [label for label, _ in ticket.amount_in.options] == ["BTC", "USD"]
        assert "Qty (BTC)" in ticket._qty_label.value
        ticket.amount_in.value = "notional"
        assert "Amount (USD)" in ticket._qty_label.value

        ticket.symbol.value = "AAPL"
        assert values(ticket.time_in_force) == STOCK_TIF and ticket.time_in_force.value == "day"
        assert values(ticket.order_type)[-1] == "trailing_stop" and ticket.bracket.layout.display is None
        assert ticket.amount_in.value == "notional" and "Amount ($)" in ticket._qty_label.value

        ticket.order_type.value = "trailing_stop"
        ticket.symbol.value = "ETH/USD"                            # crypto has no trailing stops
        assert ticket.order_type.value == "market" and ticket.time_in_force.value == "gtc"
    finally:
        ticket.close()


def test_fractional_coins_are_checked_against_the_increments_and_sent_as_typed(api, account):
    ticket = ready(OrderTicket(api, "BTC/USD"), "BTC/USD")
    try:
        assert ticket.time_in_force.value == "gtc"                 # the default from the start
        last = ticket._last["BTC/USD"]
        cases = [
            ({"qty": "0.00005"}, "Qty", "below the minimum order size of BTC/USD, 0.0001"),
            ({"qty": "0.00015"}, "Qty", "not a multiple of BTC/USD's min_trade_increment 0.0001"),
            ({"qty": ""}, "Qty", "Qty: enter the quantity"),
            ({"qty": "0.001", "order_type": "limit", "limit_price": f"{int(last * 0.9)}.5"}, "Limit price",
             "Limit price=" + f"{int(last * 0.9)}.5 is not a multiple of BTC/USD's price_increment 1"),
        ]
        for changes, field, message in cases:
            ticket.order_type.value = "market"
            ticket.qty.value = "0.001"
            assert not ticket.submit_button.disabled, ticket.problem.text
            for name, value in changes.items():
                getattr(ticket, name).value = value
            assert message in ticket.problem.text, (changes, ticket.problem.text)
            assert ticket.submit_button.disabled
            assert "anb-invalid" in ticket._boxes[field]._dom_classes
        assert server_orders(account) == []

        ticket.order_type.value = "market"
        ticket.qty.value = "0.0015"
        assert ticket.submit_button.description == "Buy 0.0015 BTC/USD at market"
        ticket.submit_button.click()
        wait_for(lambda: ticket.status.text.startswith("Filled") and ticket.order is not None, 30,
                 "the ticket to show the fill")
        assert "Filled 0.0015 at" in ticket.status.text
        ticket.qty.value = "0.0021"
        ticket.time_in_force.value = "ioc"
        ticket.submit_button.click()
        wait_for(lambda: len(server_orders(account)) == 2, 30, "the second order")
        first, second = sorted(server_orders(account), key=lambda o: o["created_at"])
        assert (first["qty"], first["time_in_force"], first["symbol"]) == ("0.0015", "gtc", "BTC/USD")
        assert (second["qty"], second["time_in_force"]) == ("0.0021", "ioc")
    finally:
        ticket.close()
