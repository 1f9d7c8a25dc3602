"""Order tickets under recalculation storms: ALPACA_TICKET never touches the account, the Send
macro places each ticket once, a changed nonce makes a new ticket. The sheet is an in-process
grid (the macro's Grid interface); the orders go to a real sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from _xl_support import client_of, connect_to
from conftest import new_account, poll

from alpaca_nb import xl
from alpaca_nb._config import Secret, Settings
from alpaca_nb.client import Alpaca
from alpaca_nb.xl._tickets import Tickets


class Sheet:
    """A sheet as rows of values from A1; writes land in place and are recorded."""

    def __init__(self, rows: list[list[Any]]):
        self.rows = [list(r) for r in rows]
        self.writes: list[tuple[int, int, list[list[Any]]]] = []

    def values(self) -> list[list[Any]]:
        return [list(r) for r in self.rows]

    def write(self, row: int, column: int, values: list[list[Any]]) -> None:
        self.writes.append((row, column, values))
        for r, line in enumerate(values):
            while len(self.rows) <= row + r:
                self.rows.append([])
            target = self.rows[row + r]
            while len(target) < column + len(line):
                target.append(None)
            target[column:column + len(line)] = line


@pytest.fixture
def api(account):
    yield from client_of(account)


TICKET_ARGS = ("AAPL", "buy", 2.0, "market", None, None, "day", 1.0, None)   # as Excel sends them


def sheet_with(*tickets: list[list[Any]]) -> Sheet:
    rows = [["symbol", "side", "qty", "type", "limit", "stop", "tif", "nonce", "ticket", "state",
             "order id", "status"]]
    for args, spill in tickets:
        rows.append([*args[:8], *spill[0]])
    return Sheet(rows)


def test_a_recalculation_storm_stages_one_ticket_and_sends_one_order(api):
    results = [xl.ALPACA_TICKET(*TICKET_ARGS) for _ in range(100)]
    assert all(r == results[0] for r in results)
    ticket_id, state = results[0][0]
    assert state == "ready" and ticket_id.startswith("xl-")
    assert api.orders(status="all").empty                          # staging touched nothing
    sheet = sheet_with((TICKET_ARGS, results[0]))
    first = xl.send_tickets(sheet)
    second = xl.send_tickets(sheet)                                # the button pressed again
    orders = api.orders(status="all")
    assert len(orders) == 1 and orders["client_order_id"].iloc[0] == ticket_id
    assert first[0][1] == second[0][1] == orders.index[0]
    assert sheet.rows[1][10] == orders.index[0] and sheet.rows[1][11] in ("new", "accepted", "filled")
    # the order fills; ALPACA_STATUS shows it
    status = poll(lambda: (xl.clear_caches(), xl.ALPACA_STATUS([[ticket_id]]))[1],
                  lambda s: s[0][0] == "filled")
    assert status[0][0] == "filled" and status[0][1] == 2.0 and status[0][2] > 0


def test_a_new_nonce_makes_a_second_ticket_and_a_second_order(api):
    one = xl.ALPACA_TICKET(*TICKET_ARGS)
    two = xl.ALPACA_TICKET(*TICKET_ARGS[:7], 2.0, None)
    assert one[0][0] != two[0][0] and two[0][1] == "ready"
    assert xl.ALPACA_TICKET(*TICKET_ARGS[:7], "1", None) == one     # 1.0 from Excel and "1" agree
    sheet = sheet_with((TICKET_ARGS, one), (TICKET_ARGS, two))
    xl.send_tickets(sheet)
    xl.send_tickets(sheet)
    orders = api.orders(status="all")
    assert sorted(orders["client_order_id"]) == sorted([one[0][0], two[0][0]])


def test_a_new_python_process_does_not_send_a_ticket_again(api):
    staged = xl.ALPACA_TICKET(*TICKET_ARGS)
    sheet = sheet_with((TICKET_ARGS, staged))
    xl.send_tickets(sheet)
    fresh = Tickets()                          # what a restarted Python process has: nothing
    fresh.stage(api, {"symbol": "AAPL", "side": "buy", "qty": 2.0, "type": "market",
                      "time_in_force": "day"}, nonce="1")
    results = fresh.send(api, sheet)
    assert len(api.orders(status="all")) == 1 and results[0][1] == api.orders(status="all").index[0]


def test_tickets_that_are_not_ready_are_not_sent(api):
    refused = xl.ALPACA_TICKET("AAPL", "buy", 2.0, "limit", 10_000.0, None, "day", 1.0, None)
    assert refused[0][0].startswith("xl-") and "price_collar" in refused[0][1]
    invalid = xl.ALPACA_TICKET("AAPL", "hold", 2.0)
    assert invalid[0][0] is None and "side" in invalid[0][1]
    words = xl.ALPACA_TICKET("AAPL", "buy", "ten")
    assert words[0][0] is None and "qty" in words[0][1]
    assert xl.ALPACA_TICKET(None, "buy", 1.0) == "#ALPACA! symbol is empty; give a symbol such as 'AAPL'"
    sheet = sheet_with((("AAPL", "buy", 2.0, "limit", 10_000.0, None, "day", 1.0), refused))
    assert xl.send_tickets(sheet) == []
    assert api.orders(status="all").empty


def test_send_runs_the_pre_trade_guard_again_and_a_refusal_is_cell_text(sandbox):
    small = new_account(sandbox, cash=1000.0)
    client = connect_to(small)
    try:
        assert "buying power" in xl.ALPACA_TICKET("AAPL", "buy", 50.0)[0][1]   # seen when staging
        args = ("AAPL", "buy", 2.0, "market", None, None, "day", 1.0, None)
        ticket = xl.ALPACA_TICKET(*args)
        assert ticket[0][1] == "ready"
        price = client.latest_trades("AAPL")["price"].iloc[0]
        # the buying power goes elsewhere before Send (a second buy where the first left more
        # than a share's worth, e.g. when the price moved between the quote and the fill)
        placed = 0
        for _ in range(4):
            bp = client.account()["buying_power"]
            if bp < price:
                break
            client.buy("AAPL", max(1, int((bp - price / 2) // price)))
            placed += 1
            poll(lambda: client.account()["buying_power"], lambda now, bp=bp: now < bp)
        assert client.account()["buying_power"] < price
        sheet = sheet_with((args, ticket))
        (_tid, order_id, status), = xl.send_tickets(sheet)
        assert order_id == "" and status.startswith("#ALPACA! ") and "buying power" in status
        assert sheet.rows[1][10:12] == [None, status]
        assert len(client.orders(status="all")) == placed      # only the other orders
    finally:
        client.close()


def test_live_mode_asks_before_sending(account):
    settings = Settings("live", account.key_id, Secret(account.secret_key), account.url, account.url,
                        account.stream_url)
    live = Alpaca(settings)
    tickets = Tickets()
    ticket = tickets.stage(live, {"symbol": "AAPL", "side": "buy", "qty": 1.0, "type": "market",
                                  "time_in_force": "day"}, nonce="7")
    sheet = Sheet([[ticket.ticket_id, ticket.state]])
    asked: list[str] = []
    assert tickets.send(live, sheet, confirm=lambda m: asked.append(m) or False) == []
    assert "LIVE" in asked[0] and "buy 1.0 AAPL market day" in asked[0]
    assert tickets.send(live, sheet) == []                          # no dialog, no order
    assert live.orders(status="all").empty
    sent = tickets.send(live, sheet, confirm=lambda m: True)
    assert len(sent) == 1 and len(live.orders(status="all")) == 1
    again = tickets.send(live, sheet, confirm=lambda m: pytest.fail("asked again for a sent ticket"))
    assert again[0][1] == sent[0][1]
    assert len(live.orders(status="all")) == 1


def test_a_refused_ticket_is_checked_again_and_becomes_ready(sandbox, monkeypatch):
    from alpaca_nb.xl import _tickets as tickets_module

    small = new_account(sandbox, cash=1000.0)
    client = connect_to(small)
    try:
        price = client.latest_trades("AAPL")["price"].iloc[0]
        limit = round(price * 0.9, 2)                     # rests: holds buying power, never fills
        qty = int(client.account()["buying_power"] // limit)
        resting = client.buy("AAPL", qty, type="limit", limit_price=limit)
        args = ("AAPL", "buy", 2.0, "market", None, None, "day", 3.0, None)
        refused = xl.ALPACA_TICKET(*args)
        assert "buying power" in refused[0][1]
        assert xl.ALPACA_TICKET(*args) == refused          # the storm is served from the registry
        client.cancel_order(resting["id"])
        poll(lambda: client.order(resting["id"])["status"], lambda s: s == "canceled")
        monkeypatch.setattr(tickets_module, "RECHECK_SECONDS", 0.0)
        assert xl.ALPACA_TICKET(*args) == [[refused[0][0], "ready"]]   # same id, now ready
    finally:
        client.close()


def test_a_crypto_ticket_defaults_to_gtc_and_takes_fractional_coins(api):
    # an empty time_in_force cell (None) is the asset class's default: gtc for a pair; a computed
    # 0.0015000000000000002 is the 0.0015 Excel shows
    staged = xl.ALPACA_TICKET("BTC/USD", "buy", 0.1 * 3 * 0.005, "market", None, None, None, 1.0, None)
    ticket_id, state = staged[0]
    assert state == "ready", state
    assert xl.ALPACA_TICKET([["BTC/USD"]], [["buy"]], [[0.0015]], None, None, None, [["gtc"]], 1.0, None) == staged
    stock = xl.ALPACA_TICKET("AAPL", "buy", 2.0, "market", None, None, None, 1.0, None)
    assert stock == xl.ALPACA_TICKET(*TICKET_ARGS)        # a stock's empty cell is "day"
    # what crypto refuses is said in the state cell, naming the allowed values or the increment
    day = xl.ALPACA_TICKET("BTC/USD", "buy", 0.0015, "market", None, None, "day", 1.0, None)
    assert day[0][0] is None and "'gtc' or 'ioc'" in day[0][1]
    step = xl.ALPACA_TICKET("BTC/USD", "buy", 0.00015, "market", None, None, None, 1.0, None)
    assert step[0][0].startswith("xl-") and "min_trade_increment 0.0001" in step[0][1]
    small = xl.ALPACA_TICKET("ETH/USD", "buy", 0.0001, "market", None, None, "ioc", 1.0, None)
    assert "minimum order size" in small[0][1]
    sheet = sheet_with((("BTC/USD", "buy", 0.0015, "market", None, None, None, 1.0), staged),
                       (("BTC/USD", "buy", 0.00015, "market", None, None, None, 1.0), step))
    (sent_id, order_id, status), = xl.send_tickets(sheet)
    assert sent_id == ticket_id and order_id and status in ("pending_new", "new", "accepted", "filled")
    (order,) = [o for _, o in api.orders(status="all").iterrows()]
    assert order["client_order_id"] == ticket_id and order["qty"] == 0.0015
    assert order["time_in_force"] == "gtc" and order["symbol"] == "BTC/USD"
