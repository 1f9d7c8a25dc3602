"""An always-open sandbox at a fixed out-of-hours clock, through real sockets: the live present
trades at any hour, and what it trades at is the price of that instant, never one of the NYSE
session ahead (an opening auction at New York midnight is not the 9:30 open)."""

from __future__ import annotations

import datetime as dt

import pytest

from sandbox_trading_support import advance, frozen, new_api, num, ny, reference_market, ts

SYMBOL = "AAPL"
EVENING = ny("2024-03-05", 22)          # a Tuesday, 22:00 ET: the NYSE is closed
MIDNIGHT = ts(ny("2024-03-06", 0))      # the always-open session of Wednesday opens


@pytest.fixture(scope="module")
def sb():
    with frozen(start=EVENING) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def market(sb):
    return reference_market(sb)


def test_the_midnight_opening_auction_fills_at_the_live_price_not_the_coming_open(sb, market):
    api = new_api(sb)
    assert api.get("/v2/clock").json()["is_open"] is True
    opg = api.order(symbol=SYMBOL, qty=2, time_in_force="opg")
    cls = api.order(symbol=SYMBOL, qty=3, time_in_force="cls")
    # a limit the live price satisfies and the coming 9:30 open would not (or the reverse)
    live = market.trade_at(SYMBOL, MIDNIGHT)
    future_open = market.opening_price(SYMBOL, dt.date(2024, 3, 6))
    assert live.t < MIDNIGHT and live.price != future_open            # the two prices differ
    limit = round((live.price + future_open) / 2, 2)
    side = "buy" if live.price < future_open else "sell"
    limited = api.order(symbol=SYMBOL, qty=1, side=side, type="limit", limit_price=limit,
                        time_in_force="opg")
    assert {o["status"] for o in (opg, cls, limited)} == {"accepted"}
    advance(sb, (MIDNIGHT - ts(EVENING)) / 1e9 + 60)
    filled = {o["id"]: api.get_order(o["id"]) for o in (opg, cls, limited)}
    assert [o["status"] for o in filled.values()] == ["filled"] * 3
    assert {ts(o["filled_at"]) for o in filled.values()} == {MIDNIGHT}
    # at the last trade of that instant: the open's and the limit's (which 9:30 would not fill)
    assert num(filled[opg["id"]]["filled_avg_price"]) == live.price
    assert num(filled[limited["id"]]["filled_avg_price"]) == live.price
    # the close that ends Tuesday's always-open session: the last trade before midnight
    assert num(filled[cls["id"]]["filled_avg_price"]) == market.trade_at(SYMBOL, MIDNIGHT - 1).price
    fills = {f["order_id"]: f for f in api.fills()}
    assert num(fills[opg["id"]]["price"]) == live.price and ts(fills[opg["id"]]["transaction_time"]) == MIDNIGHT
