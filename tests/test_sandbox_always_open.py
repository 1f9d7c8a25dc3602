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


# ---------------------------------------------------------------- the live present on a Sunday

SUNDAY = "2024-03-10T18:00:00Z"          # 14:00 ET: no NYSE session, no SIP hours


def _stream(sb, api, path: str):
    from _data_stream_client import connect

    c = connect(sb, api, path)
    c.send({"action": "subscribe", "trades": [SYMBOL], "quotes": [SYMBOL], "bars": [SYMBOL]})
    ack, _ = c.until("subscription")
    assert ack["trades"] == [SYMBOL]
    return c


def test_on_a_sunday_the_live_present_streams_what_the_engine_fills_at_and_the_history_stays_empty():
    with frozen(start=SUNDAY) as sb:
        api = new_api(sb)
        sip, iex = _stream(sb, api, "/v2/sip"), _stream(sb, api, "/v2/iex")
        start = ts(SUNDAY)
        now = advance(sb, 150)
        msgs = sip.collect(60, lambda m: sum(x["T"] == "b" for x in m) >= 2)
        trades = [m for m in msgs if m["T"] == "t"]
        quotes = [m for m in msgs if m["T"] == "q"]
        bars = [m for m in msgs if m["T"] == "b"]
        assert len(bars) == 2 and len(trades) >= 2 * 60 and len(quotes) >= 2 * 60
        assert all(start < ts(m["t"]) <= now for m in trades + quotes)
        assert all("T" in m["c"] for m in trades)              # Form T: outside regular hours
        # each minute bar aggregates that minute's streamed trades exactly
        for bar in bars:
            minute = [m for m in trades if m["t"][:16] == bar["t"][:16]]
            prices = [m["p"] for m in minute]
            assert (bar["o"], bar["h"], bar["l"], bar["c"]) == \
                (prices[0], max(prices), min(prices), prices[-1])
            assert (bar["v"], bar["n"]) == (sum(m["s"] for m in minute), len(minute))
        # the REST latest trade and quote are the last ones streamed
        latest_trade = api.get(f"/v2/stocks/{SYMBOL}/trades/latest", feed="sip").json()["trade"]
        latest_quote = api.get(f"/v2/stocks/{SYMBOL}/quotes/latest", feed="sip").json()["quote"]
        last_trade = max(trades, key=lambda m: (ts(m["t"]), m["i"]))
        assert {k: latest_trade[k] for k in ("i", "p", "s", "t")} == \
            {k: last_trade[k] for k in ("i", "p", "s", "t")}
        assert {k: latest_quote[k] for k in ("ap", "bp", "t")} == \
            {k: quotes[-1][k] for k in ("ap", "bp", "t")}
        # the REST latest bar and the snapshot's minute bar are the last bar streamed (the
        # minute that closed last), while the snapshot's daily bar stays Friday's session
        fields = ("o", "h", "l", "c", "v", "n", "vw", "t")
        streamed = {k: bars[-1][k] for k in fields}
        assert ts(bars[-1]["t"]) == now - now % 60_000_000_000 - 60_000_000_000
        single = api.get(f"/v2/stocks/{SYMBOL}/bars/latest", feed="sip").json()["bar"]
        multi = api.get("/v2/stocks/bars/latest", symbols=SYMBOL, feed="sip").json()["bars"][SYMBOL]
        snap = api.get(f"/v2/stocks/{SYMBOL}/snapshot", feed="sip").json()
        assert {k: single[k] for k in fields} == {k: multi[k] for k in fields} == \
            {k: snap["minuteBar"][k] for k in fields} == streamed
        assert snap["dailyBar"]["t"].startswith("2024-03-08T05:00")     # Friday's session
        # the engine fills at that quote, now
        order = api.order(symbol=SYMBOL, qty=1)
        filled = api.get_order(order["id"])
        assert filled["status"] == "filled" and num(filled["filled_avg_price"]) == quotes[-1]["ap"]
        # the IEX feed streams its own share of the live present too
        iex_msgs = iex.collect(60, lambda m: sum(x["T"] == "b" for x in m) >= 2)
        assert any(m["T"] == "t" and m["x"] == "V" for m in iex_msgs)
        iex_bar = [m for m in iex_msgs if m["T"] == "b"][-1]
        latest_iex = api.get(f"/v2/stocks/{SYMBOL}/bars/latest", feed="iex").json()["bar"]
        assert {k: latest_iex[k] for k in fields} == {k: iex_bar[k] for k in fields} != streamed
        # and the history never lists the live present
        window = {"start": SUNDAY, "end": latest_trade["t"]}
        for kind in ("trades", "quotes"):
            assert api.get(f"/v2/stocks/{SYMBOL}/{kind}", **window).json()[kind] == []
        assert api.get(f"/v2/stocks/{SYMBOL}/bars", timeframe="1Min", **window).json()["bars"] == []
        sip.close()
        iex.close()


def test_a_calendar_sandbox_has_no_live_present_out_of_hours():
    with frozen(start=SUNDAY, market="calendar") as sb:
        api = new_api(sb)
        quote = api.get(f"/v2/stocks/{SYMBOL}/quotes/latest", feed="sip").json()["quote"]
        assert quote["t"].startswith("2024-03-09T00:59")       # Friday 19:59 ET, the last one
        bar = api.get(f"/v2/stocks/{SYMBOL}/bars/latest", feed="sip").json()["bar"]
        assert bar["t"] == "2024-03-09T00:59:00Z"                # Friday 19:59 ET's minute
        order = api.order(symbol=SYMBOL, qty=1)
        assert api.get_order(order["id"])["status"] == "accepted"     # waits for Monday's open
