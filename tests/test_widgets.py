"""The notebook panels, headless: built against a real sandbox, driven by setting widget values and
clicking buttons from Python; the assertions read what reached the sandbox (over its REST API)
and what the panel shows afterwards. The order ticket is also driven with crypto pairs (crypto's
types and times in force, fractional coins to the pair's increments)."""

from __future__ import annotations

import json

import ipywidgets as w
import pytest
import requests
import traitlets
from _stream_helpers import FAST, connect, wait_for
from conftest import new_account

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.widgets import (
    AccountCard,
    Dashboard,
    OrdersPanel,
    OrderTicket,
    PositionsPanel,
    QuoteBoard,
)
from alpaca_nb.widgets._panels import parse_close_amount
from alpaca_nb.widgets._ticket import _labelled


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


def server_orders(account, status="all") -> list[dict]:
    resp = requests.get(f"{account.url}/v2/orders", params={"status": status, "limit": 500, "nested": "true"},
                        headers=account.headers, timeout=10)
    resp.raise_for_status()
    return resp.json()


def server_positions(account) -> dict[str, float]:
    resp = requests.get(f"{account.url}/v2/positions", headers=account.headers, timeout=10)
    resp.raise_for_status()
    return {p["symbol"]: float(p["qty"]) for p in resp.json()}


def ready_ticket(api, symbol="AAPL", **kw) -> OrderTicket:
    """A ticket whose asset list, account and last price have arrived."""
    ticket = OrderTicket(api, symbol, **kw)
    wait_for(lambda: ticket.symbol.options and ticket._buying_power is not None and symbol in ticket._last
             and ticket._stream is not None, 20, "the ticket to load assets, account and a last price")
    return ticket


# ------------------------------------------------------------------ OrderTicket: validation

INVALID = [
    ({"symbol": ""}, "Symbol", "Symbol: enter a ticker"),
    ({"symbol": "ZZZZQ"}, "Symbol", "ZZZZQ is not a tradable asset"),
    ({"qty": ""}, "Qty", "Qty: enter the number of shares"),
    ({"qty": "ten"}, "Qty", "Qty: 'ten' is not a number"),
    ({"qty": "-5"}, "Qty", "Qty must be greater than 0"),
    ({"qty": "0"}, "Qty", "Qty must be greater than 0"),
    ({"amount_in": "notional", "qty": ""}, "Amount", "Amount: enter the dollar amount"),
    ({"order_type": "limit"}, "Limit price", "Limit price: enter a price"),
    ({"order_type": "limit", "limit_price": "abc"}, "Limit price", "Limit price: 'abc' is not a number"),
    ({"order_type": "stop"}, "Stop price", "Stop price: enter a price"),
    ({"order_type": "stop_limit", "stop_price": "120"}, "Limit price", "Limit price: enter a price"),
    ({"order_type": "trailing_stop"}, "Trail", "Trail: enter a price"),
    ({"order_type": "trailing_stop", "trail_in": "percent"}, "Trail", "Trail: enter a percentage"),
    ({"order_type": "trailing_stop", "trail": "150", "trail_in": "percent"}, "Trail", "percentage below 100"),
    ({"order_type": "trailing_stop", "trail": "1", "time_in_force": "opg"}, "Time in force",
     "Time in force='opg' is only for market and limit orders"),
    ({"order_type": "limit", "limit_price": "120", "qty": "1.5"}, "Qty", "fractional Qty"),
    ({"order_type": "limit", "limit_price": "120", "extended_hours": True, "time_in_force": "ioc"},
     "Extended hours", "Extended hours=True needs a simple limit order"),
    ({"bracket": True}, "Take profit", "Take profit: enter a price"),
    ({"bracket": True, "take_profit": "200"}, "Stop loss", "Stop loss: enter a price"),
    ({"bracket": True, "take_profit": "100", "stop_loss": "140"}, "Take profit",
     "Take profit (100) must be above Stop loss (140)"),
    ({"bracket": True, "take_profit": "200", "stop_loss": "100", "time_in_force": "ioc"}, "Time in force",
     "bracket order needs Time in force 'day' or 'gtc'"),
    ({"qty": "2000"}, "Qty", "more than the account's buying power"),
    ({"qty": "10000"}, "Qty", "over max_order_notional"),
    ({"order_type": "limit", "limit_price": "500"}, "Limit price", "beyond price_collar"),
]


def test_every_invalid_ticket_names_its_field_and_disables_submit(api, account):
    ticket = ready_ticket(api)
    try:
        for changes, field, message in INVALID:
            ticket.symbol.value = "AAPL"
            ticket.side.value = "buy"
            ticket.amount_in.value = "qty"
            ticket.order_type.value = "market"
            ticket.time_in_force.value = "day"
            ticket.qty.value = "10"
            for name in ("limit_price", "stop_price", "trail", "take_profit", "stop_loss"):
                getattr(ticket, name).value = ""
            ticket.trail_in.value = "price"
            ticket.bracket.value = ticket.extended_hours.value = False
            assert not ticket.submit_button.disabled, ticket.problem.text       # the baseline is valid
            for name, value in changes.items():
                getattr(ticket, name).value = value
            assert message in ticket.problem.text, (changes, ticket.problem.text)
            assert ticket.problem.kind == "error"
            assert ticket.submit_button.disabled, changes
            box = ticket._boxes.get(field if field != "Amount" else "Qty")
            if box is not None:
                assert "anb-invalid" in box._dom_classes, (changes, field)
            assert ticket.submit() is False
        assert server_orders(account) == []                  # nothing invalid reached the server
    finally:
        ticket.close()


def test_price_fields_appear_only_for_the_types_that_use_them(api):
    ticket = OrderTicket(api, "AAPL")
    try:
        shown = {}
        for kind in ("market", "limit", "stop", "stop_limit", "trailing_stop"):
            ticket.order_type.value = kind
            shown[kind] = {n for n in ("Limit price", "Stop price", "Trail")
                           if ticket._boxes[n].layout.display != "none"}
        assert shown == {"market": set(), "limit": {"Limit price"}, "stop": {"Stop price"},
                         "stop_limit": {"Limit price", "Stop price"}, "trailing_stop": {"Trail"}}
        ticket.order_type.value = "limit"
        assert ticket.extended_hours.layout.display != "none"
        ticket.order_type.value = "market"
        assert ticket.extended_hours.layout.display == "none"
        assert ticket._legs.layout.display == "none"
        ticket.bracket.value = True
        assert ticket._legs.layout.display != "none"
    finally:
        ticket.close()


def test_labels_read_like_a_ticket():
    assert _labelled("a limit order needs limit_price") == ("Limit price", "a limit order needs Limit price")
    assert _labelled("take_profit.limit_price (1) must be above stop_loss.stop_price (2)")[0] == "Take profit"


# ------------------------------------------------------------------ OrderTicket: crypto pairs

STOCK_TIF = ["day", "gtc", "opg", "cls", "ioc", "fok"]


def _values(widget) -> list[str]:
    return [value for _, value in widget.options]


def test_a_crypto_pair_gets_crypto_choices_and_a_stock_gets_them_back(api):
    ticket = ready_ticket(api, "AAPL")
    try:
        assert ticket.time_in_force.value == "day" and _values(ticket.time_in_force) == STOCK_TIF
        assert "BTC/USD" in ticket.symbol.options and "AAPL" in ticket.symbol.options
        ticket.order_type.value = "limit"
        ticket.symbol.value = "btc/usd"
        assert ticket.symbol.value == "BTC/USD"
        assert _values(ticket.time_in_force) == ["gtc", "ioc"] and ticket.time_in_force.value == "gtc"
        assert _values(ticket.order_type) == ["market", "limit", "stop_limit"]
        assert ticket.order_type.value == "limit"                  # kept: crypto takes limit orders
        with pytest.raises(traitlets.TraitError):
            ticket.time_in_force.value = "day"                      # not offered
        assert ticket.bracket.layout.display == "none" and ticket.extended_hours.layout.display == "none"
        assert [label for label, _ in ticket.amount_in.options] == ["BTC", "USD"]
        assert "Qty (BTC)" in ticket._qty_label.value
        ticket.amount_in.value = "notional"
        assert "Amount (USD)" in ticket._qty_label.value

        ticket.symbol.value = "AAPL"
        assert _values(ticket.time_in_force) == STOCK_TIF and ticket.time_in_force.value == "day"
        assert _values(ticket.order_type)[-1] == "trailing_stop" and ticket.bracket.layout.display is None
        assert ticket.amount_in.value == "notional" and "Amount ($)" in ticket._qty_label.value

        ticket.order_type.value = "trailing_stop"
        ticket.symbol.value = "ETH/USD"                            # crypto has no trailing stops
        assert ticket.order_type.value == "market" and ticket.time_in_force.value == "gtc"
    finally:
        ticket.close()


def test_fractional_coins_are_checked_against_the_increments_and_sent_as_typed(api, account):
    ticket = ready_ticket(api, "BTC/USD")
    try:
        assert ticket.time_in_force.value == "gtc"                 # the default from the start
        last = ticket._last["BTC/USD"]
        cases = [
            ({"qty": "0.00005"}, "Qty", "Qty: 0.00005 is below the minimum order size of BTC/USD, 0.0001"),
            ({"qty": "0.00015"}, "Qty", "Qty: 0.00015 is not a multiple of BTC/USD's quantity step 0.0001; e.g. 0.0001"),
            ({"qty": ""}, "Qty", "Qty: enter the quantity"),
            ({"qty": "0.001", "order_type": "limit", "limit_price": f"{int(last * 0.9)}.5"}, "Limit price",
             f"Limit price: {int(last * 0.9)}.5 is not a multiple of BTC/USD's price step 1; e.g. {int(last * 0.9)}"),
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


# ------------------------------------------------------------------ OrderTicket: submitting

def test_double_click_and_rerun_place_one_order_and_the_ticket_follows_it_to_filled(api, account):
    ticket = ready_ticket(api)
    try:
        ticket.qty.value = "7"
        assert ticket.submit_button.description == "Buy 7 AAPL at market"
        coid = ticket.client_order_id
        ticket.submit_button.click()          # a double click: both messages reach the kernel
        ticket.submit_button.click()
        wait_for(lambda: ticket.status.text.startswith("Filled") and ticket.order is not None, 20,
                 "the ticket to show the fill")
        ticket.submit()                       # the cell that submits it, run again
        ticket.submit_button.click()
        orders = server_orders(account)
        assert [o["client_order_id"] for o in orders] == [coid]
        assert orders[0]["status"] == "filled" and float(orders[0]["qty"]) == 7
        assert f"Filled 7 at ${float(orders[0]['filled_avg_price']):,.2f}" in ticket.status.text
        assert ticket.submit_button.disabled and ticket.submit_button.description == "Sent ✓"
        assert "already sent" in ticket.problem.text and ticket.problem.kind == "info"
        assert ticket.order.name == orders[0]["id"]

        # New order arms the same fields with a new client_order_id: one more order, not two
        ticket.new_button.click()
        ticket.new_button.click()
        assert ticket.client_order_id != coid and not ticket.submit_button.disabled
        ticket.submit_button.click()
        ticket.submit_button.click()
        wait_for(lambda: len(server_orders(account)) == 2 and ticket.status.text.startswith("Filled")
                 and ticket.order is not None, 20, "the second order to fill")
        assert len({o["client_order_id"] for o in server_orders(account)}) == 2
        # editing the ticket after a fill also arms it
        second = ticket.client_order_id
        ticket.qty.value = "3"
        assert ticket.client_order_id != second and ticket.submit_button.description == "Buy 3 AAPL at market"
        assert len(server_orders(account)) == 2
    finally:
        ticket.close()


def test_a_sell_limit_order_rests_and_the_ticket_says_accepted(api, account):
    ticket = ready_ticket(api)
    try:
        last = ticket._last["AAPL"]
        ticket.side.value = "sell"
        ticket.order_type.value = "limit"
        ticket.limit_price.value = f"{last * 1.15:.2f}"
        ticket.time_in_force.value = "gtc"
        ticket.qty.value = "2"
        assert ticket.submit_button.description.startswith("Sell 2 AAPL limit")
        assert "anb-submit-sell" in ticket.submit_button._dom_classes
        ticket.submit_button.click()
        wait_for(lambda: ticket.status.text.startswith("Accepted"), 20, "the ticket to show accepted")
        (order,) = server_orders(account)
        assert order["side"] == "sell" and order["type"] == "limit" and order["time_in_force"] == "gtc"
        assert float(order["limit_price"]) == pytest.approx(round(last * 1.15, 2))
        assert order["status"] in ("new", "accepted")
        assert ticket.accepted_after is not None and ticket.accepted_after > 0
    finally:
        ticket.close()


def test_bracket_and_dollar_orders_reach_the_server_as_typed(api, account):
    ticket = ready_ticket(api)
    try:
        last = ticket._last["AAPL"]
        ticket.qty.value = "4"
        ticket.bracket.value = True
        ticket.take_profit.value = f"{last * 1.1:.2f}"
        ticket.stop_loss.value = f"{last * 0.9:.2f}"
        assert ticket.submit_button.description.endswith("+ bracket")
        ticket.submit_button.click()
        wait_for(lambda: ticket.order is not None, 20, "the bracket order")
        ticket.bracket.value = False
        ticket.amount_in.value = "notional"
        ticket.qty.value = "250"
        assert ticket.submit_button.description == "Buy $250.00 of AAPL at market"
        ticket.submit_button.click()
        wait_for(lambda: len(server_orders(account)) == 2, 20, "the dollar order")
        bracket, dollars = sorted(server_orders(account), key=lambda o: o["order_class"] != "bracket")
        assert bracket["order_class"] == "bracket" and len(bracket["legs"]) == 2
        assert float(bracket["legs"][0]["limit_price"] or bracket["legs"][1]["limit_price"]) > last
        assert float(dollars["notional"]) == 250
    finally:
        ticket.close()


def test_confirmation_step_sends_only_on_confirm(api, account):
    ticket = ready_ticket(api, confirm=True)
    try:
        ticket.qty.value = "1"
        ticket.submit_button.click()
        (row,) = ticket._confirming.children
        label, yes, no = row.children
        assert "Buy 1 AAPL at market?" in label.value
        assert ticket.submit_button.layout.display == "none"
        no.click()
        assert not ticket._confirming.children and server_orders(account) == []
        ticket.submit_button.click()
        ticket._confirming.children[0].children[1].click()      # Confirm
        wait_for(lambda: ticket.order is not None, 20, "the confirmed order")
        assert len(server_orders(account)) == 1
    finally:
        ticket.close()


def test_a_server_that_is_gone_shows_a_readable_error_and_the_retry_reuses_the_id(account):
    with Sandbox(**FAST) as short_lived:
        acct = new_account(short_lived)
        api = connect(acct)
        ticket = ready_ticket(api)
    # the sandbox has stopped: the order cannot be placed
    try:
        ticket.qty.value = "1"
        coid = ticket.client_order_id
        ticket.submit_button.click()
        wait_for(lambda: ticket.status.text.startswith("Not placed"), 60, "the error line")
        assert ticket.status.kind == "error"
        assert "Traceback" not in ticket.status.text and "\n" not in ticket.status.text
        assert ticket.client_order_id == coid and not ticket.submit_button.disabled
    finally:
        ticket.close()
        api.close()


# ------------------------------------------------------------------ positions, orders, account

def test_positions_panel_closes_a_part_and_then_all_with_confirmation(api, account):
    api.buy("AAPL", 10)
    api.buy("MSFT", 4)
    wait_for(lambda: server_positions(account) == {"AAPL": 10.0, "MSFT": 4.0}, 20, "the two fills")
    panel = PositionsPanel(api)
    try:
        wait_for(lambda: set(panel.rows) == {"AAPL", "MSFT"} and panel.rows["MSFT"]["cells"][1].value == "4"
                 and panel.rows["AAPL"]["cells"][1].value == "10", 20, "the positions rows")
        cells = [c.value for c in panel.rows["AAPL"]["cells"]]
        assert "AAPL" in cells[0] and cells[1] == "10"
        assert "$" in cells[4] and "%" in cells[6]

        panel.rows["AAPL"]["amount"].value = "50%"
        panel.rows["AAPL"]["button"].click()
        wait_for(lambda: server_positions(account).get("AAPL") == 5.0, 20, "half of AAPL closed")
        wait_for(lambda: panel.rows["AAPL"]["cells"][1].value == "5", 20, "the row to show 5 shares")

        panel.rows["MSFT"]["amount"].value = "lots"
        panel.rows["MSFT"]["button"].click()
        assert "'lots' is not an amount" in panel.message.text
        assert server_positions(account)["MSFT"] == 4.0

        panel.close_all_button.click()
        (row,) = panel._confirm.children
        assert "Close all 2 position(s)" in row.children[0].value
        assert server_positions(account) == {"AAPL": 5.0, "MSFT": 4.0}    # nothing before Confirm
        row.children[1].click()
        wait_for(lambda: server_positions(account) == {}, 20, "every position closed")
        wait_for(lambda: panel.rows == {}, 20, "the panel to empty")
        assert "No open positions" in panel.table.children[0].value
    finally:
        panel.close()


def test_parse_close_amount():
    assert parse_close_amount("") == {} and parse_close_amount(" All ") == {}
    assert parse_close_amount("25%") == {"percentage": 25.0}
    assert parse_close_amount("1,000") == {"qty": 1000.0}
    for bad in ("-3", "0", "150%", "x"):
        with pytest.raises(ValueError, match="Close"):
            parse_close_amount(bad)


def test_orders_panel_cancels_replaces_and_cancels_all(api, account):
    last = float(api.latest_trades(["AAPL"]).loc["AAPL", "price"])
    resting = api.buy("AAPL", 3, type="limit", limit_price=round(last * 0.85, 2), time_in_force="gtc")
    other = api.buy("AAPL", 2, type="limit", limit_price=round(last * 0.86, 2), time_in_force="gtc")
    third = api.buy("AAPL", 1, type="limit", limit_price=round(last * 0.87, 2), time_in_force="gtc")
    panel = OrdersPanel(api)
    try:
        wait_for(lambda: {resting.name, other.name, third.name} <= set(panel.rows), 20, "the order rows")
        panel.rows[resting.name]["cancel"].click()
        wait_for(lambda: {o["id"]: o["status"] for o in server_orders(account)}[resting.name] == "canceled",
                 20, "the cancel to reach the server")
        wait_for(lambda: "replace" not in panel.rows.get(resting.name, {"replace": 1}), 20,
                 "the canceled row to lose its buttons")

        panel.rows[other.name]["replace"].click()
        panel.editor_fields["limit_price"].value = f"{last * 0.84:.2f}"
        panel.editor_send.click()
        wait_for(lambda: any(o.get("replaces") == other.name for o in server_orders(account)), 20,
                 "the replacement order")
        new = next(o for o in server_orders(account) if o.get("replaces") == other.name)
        assert float(new["limit_price"]) == pytest.approx(round(last * 0.84, 2)) and float(new["qty"]) == 2

        panel.cancel_all_button.click()
        (row,) = panel._confirm.children
        row.children[1].click()
        wait_for(lambda: not server_orders(account, "open"), 20, "every order canceled")
        wait_for(lambda: "0 open" in panel.summary.value, 20, "the summary to say 0 open")
    finally:
        panel.close()


def test_orders_panel_groups_bracket_legs_under_the_parent(api):
    last = float(api.latest_trades(["MSFT"]).loc["MSFT", "price"])
    parent = api.buy("MSFT", 2, type="limit", limit_price=round(last * 0.9, 2), time_in_force="gtc",
                     order_class="bracket", take_profit=round(last * 1.1, 2), stop_loss=round(last * 0.8, 2))
    panel = OrdersPanel(api)
    try:
        wait_for(lambda: parent.name in panel.rows, 20, "the bracket row")
        ids = list(panel.rows)
        start = ids.index(parent.name)
        legs = ids[start + 1:start + 3]
        assert len(legs) == 2 and all("└" in panel.rows[i]["row"].children[0].value for i in legs)
        assert "bracket" in panel.rows[parent.name]["row"].children[3].value
    finally:
        panel.close()


def test_account_card_shows_the_mode_and_figures(api):
    card = AccountCard(api)
    try:
        wait_for(lambda: card.account is not None, 20, "the account")
        assert "SANDBOX" in card.header.value and "anb-badge-sandbox" in card.header.value
        assert "$100,000.00" in card.figures.value and "Buying power" in card.figures.value
        assert "LIVE" not in card.header.value
    finally:
        card.close()


# ------------------------------------------------------------------ QuoteBoard

def test_quote_board_ticks_coalesced_and_adds_and_removes_rows(api):
    ticket = OrderTicket(api)
    board = QuoteBoard(api, ["AAPL", "MSFT", "SPY"], max_hz=5, ticket=ticket)
    try:
        wait_for(lambda: board._stream is not None and board.df.notna().all().all(), 20, "every cell filled")
        first = board.df.copy()
        wait_for(lambda: (board.df[["bid", "ask", "last"]] != first[["bid", "ask", "last"]]).any().any(), 20,
                 "the numbers to change")
        assert (board.df["volume"] > 0).all()
        assert (board.df["ask"] >= board.df["bid"]).all()

        board.add("NVDA")
        assert board.symbols == ["AAPL", "MSFT", "SPY", "NVDA"]
        wait_for(lambda: board.df.loc["NVDA"].notna().all(), 20, "the new row to fill")
        board.remove("MSFT")
        assert board.symbols == ["AAPL", "SPY", "NVDA"] and "MSFT" not in board.df.index
        wait_for(lambda: "MSFT" not in board._stream.subscriptions.get("quotes", []), 20, "unsubscribed")
        with pytest.raises(ValueError, match="not on the board"):
            board.remove("MSFT")
        with pytest.raises(ValueError, match="not a ticker"):
            board.add("no way")

        # the front end's messages: a row click loads the ticket, add/remove work the same way
        board._on_front_end(board, {"t": "pick", "symbol": "SPY"}, [])
        assert board.selected == "SPY" and ticket.symbol.value == "SPY"
        board._on_front_end(board, {"t": "add", "symbol": "amzn"}, [])
        assert board.symbols[-1] == "AMZN"
        board._on_front_end(board, {"t": "add", "symbol": "bad symbol!"}, [])
        assert board.symbols[-1] == "AMZN"
    finally:
        board.close()
        ticket.close()


def test_quote_board_rejects_bad_arguments(api):
    with pytest.raises(ValueError, match="symbols is empty"):
        QuoteBoard(api, [])
    with pytest.raises(ValueError, match="max_hz"):
        QuoteBoard(api, ["AAPL"], max_hz=0)
    with pytest.raises(TypeError, match="symbols must be a list"):
        QuoteBoard(api, 42)


# ------------------------------------------------------------------ the whole dashboard

def _all_widgets() -> dict:
    from ipywidgets.widgets.widget import _instances  # Widget.widgets is deprecated
    return _instances


def _state_of(widget: w.Widget, seen: set) -> list[dict]:
    if widget.model_id in seen:
        return []
    seen.add(widget.model_id)
    state = widget.get_state()
    out = [state]
    for value in state.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item.startswith("IPY_MODEL_"):
                child = _all_widgets().get(item[len("IPY_MODEL_"):])
                if child is not None:
                    out += _state_of(child, seen)
    return out


def test_dashboard_wires_the_panels_and_keeps_the_secret_out_of_widget_state(api, account):
    dash = Dashboard(api, ["AAPL", "MSFT"])
    try:
        wait_for(lambda: dash.ticket._stream is not None and dash.board._stream is not None
                 and dash.positions._stream is not None, 20, "the panels to start")
        dash.board.pick("MSFT")
        assert dash.ticket.symbol.value == "MSFT"
        dash.ticket.qty.value = "1"
        dash.ticket.submit_button.click()
        wait_for(lambda: "MSFT" in dash.positions.rows, 20, "the position to appear in the panel")
        wait_for(lambda: any(r["order"]["status"] == "filled" for r in dash.orders.rows.values()), 20,
                 "the filled order in the orders panel")
        states = json.dumps(_state_of(dash, set()), default=str)
        assert account.secret_key not in states
        assert account.key_id not in states
        assert "SANDBOX" in states
        streams = dash.ticket._streams + dash.positions._streams + dash.orders._streams + dash.account._streams
    finally:
        dash.close()
    assert streams and all(s.closed for s in streams) and dash.board._stream is None
