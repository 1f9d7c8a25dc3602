"""Sandbox clock, calendar and session-aware matching, in both market modes.

Calendar-mode tests run their own sandbox on the NYSE calendar with a frozen clock and cross
opens, closes and weekends with ``POST /sandbox/clock``, as a fast or jumped clock would.
"""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest

from alpaca_nb.sandbox import Sandbox

from sandbox_trading_support import (Api, frozen, new_api, ny, num, reference_market, set_clock, ts)

SYMBOL = "AAPL"
NY = ZoneInfo("America/New_York")


@pytest.fixture
def cal():
    """Calendar market, frozen at Tuesday 2024-03-05 09:00 ET (pre-market)."""
    with frozen(start=ny("2024-03-05", 9), market="calendar") as sandbox:
        yield sandbox


def iso_utc(text: str) -> int:
    return ts(text)


# ---------------------------------------------------------------- clock

def test_clock_in_calendar_mode(cal):
    api = new_api(cal)
    clock = api.get("/v2/clock").json()
    assert clock["is_open"] is False
    assert clock["timestamp"].startswith("2024-03-05T09:00:00") and clock["timestamp"].endswith("-05:00")
    assert clock["next_open"] == "2024-03-05T09:30:00-05:00"
    assert clock["next_close"] == "2024-03-05T16:00:00-05:00"
    set_clock(cal, ny("2024-03-05", 10))
    clock = api.get("/v2/clock").json()
    assert clock["is_open"] is True
    assert clock["next_open"] == "2024-03-06T09:30:00-05:00"
    assert clock["next_close"] == "2024-03-05T16:00:00-05:00"
    set_clock(cal, ny("2024-03-09", 12))                 # Saturday; DST starts Sunday
    clock = api.get("/v2/clock").json()
    assert clock["is_open"] is False
    assert clock["next_open"] == "2024-03-11T09:30:00-04:00"


def _expected_next(days: list[dict], now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The first regular open and close strictly after ``now`` among /v2/calendar rows."""
    def at(day, hhmm):
        return dt.datetime.fromisoformat(f"{day['date']}T{hhmm}").replace(tzinfo=NY)
    opens = [at(d, d["open"]) for d in days if at(d, d["open"]) > now]
    closes = [at(d, d["close"]) for d in days if at(d, d["close"]) > now]
    return opens[0], closes[0]


def test_clock_in_always_open_mode_is_open_and_names_the_calendars_next_open_and_close(account):
    api = Api(account.url, account.key_id, account.secret_key)
    clock = api.get("/v2/clock").json()
    assert clock["is_open"] is True                                  # the sandbox trades at any hour
    now = dt.datetime.fromisoformat(clock["timestamp"])
    days = api.get("/v2/calendar", start=now.date().isoformat(),
                   end=(now.date() + dt.timedelta(days=14)).isoformat()).json()
    nxt_open, nxt_close = (dt.datetime.fromisoformat(clock[k]) for k in ("next_open", "next_close"))
    assert nxt_open != nxt_close
    assert (nxt_open, nxt_close) == _expected_next(days, now)


@pytest.mark.parametrize("when,expected", [
    (("2024-03-09", 12), ("2024-03-11T09:30:00-04:00", "2024-03-11T16:00:00-04:00")),   # Saturday
    (("2024-03-05", 10), ("2024-03-06T09:30:00-05:00", "2024-03-05T16:00:00-05:00")),   # in a session
    (("2024-11-29", 14), ("2024-12-02T09:30:00-05:00", "2024-12-02T16:00:00-05:00")),   # after an early close
])
def test_always_open_clock_on_a_weekend_in_a_session_and_after_an_early_close(when, expected):
    with frozen(start=ny(*when), market="always-open") as sandbox:
        clock = new_api(sandbox).get("/v2/clock").json()
        assert clock["is_open"] is True
        assert (clock["next_open"], clock["next_close"]) == expected


# ---------------------------------------------------------------- calendar

def test_calendar_in_calendar_mode(cal):
    api = new_api(cal)
    days = api.get("/v2/calendar", start="2024-11-25", end="2024-12-02").json()
    assert [d["date"] for d in days] == ["2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29",
                                        "2024-12-02"]         # Thanksgiving and the weekend
    by_date = {d["date"]: d for d in days}
    assert by_date["2024-11-25"] == {"date": "2024-11-25", "open": "09:30", "close": "16:00",
                                     "session_open": "0400", "session_close": "2000",
                                     "settlement_date": "2024-11-26"}
    assert by_date["2024-11-27"]["settlement_date"] == "2024-11-29"       # T+1 over the holiday
    assert by_date["2024-11-29"]["close"] == "13:00"                      # early close
    assert by_date["2024-11-29"]["session_close"] == "1700"
    old = api.get("/v2/calendar", start="2024-05-20", end="2024-05-20").json()
    assert old[0]["settlement_date"] == "2024-05-22"                      # T+2 before May 28, 2024
    assert api.get("/v2/calendar", start="soon").status_code == 422


def test_calendar_in_always_open_mode_lists_the_real_sessions(account):
    api = Api(account.url, account.key_id, account.secret_key)
    days = api.get("/v2/calendar", start="2024-11-25", end="2024-12-02").json()
    assert [d["date"] for d in days] == ["2024-11-25", "2024-11-26", "2024-11-27", "2024-11-29",
                                        "2024-12-02"]         # Thanksgiving and the weekend
    assert days[-2] == {"date": "2024-11-29", "open": "09:30", "close": "13:00", "session_open": "0400",
                        "session_close": "1700", "settlement_date": "2024-12-02"}
    assert list(days[0]) == ["date", "open", "close", "session_open", "session_close", "settlement_date"]


def test_settlement_dates_fall_on_business_days(account):
    api = Api(account.url, account.key_id, account.secret_key)
    days = api.get("/v2/calendar", start="2016-01-01", end="2026-01-10").json()
    trading = {d["date"] for d in days}
    days = [d for d in days if d["date"] < "2026"]
    by_date = {d["date"]: d for d in days}
    for d in days:
        settle = dt.date.fromisoformat(d["settlement_date"])
        assert settle.weekday() < 5 and settle.isoformat() in trading and settle > dt.date.fromisoformat(d["date"])
    # T+2 until 2024-05-27, T+1 from 2024-05-28 (both settle on the 29th); T+3 before 2017-09-05
    assert by_date["2024-05-24"]["settlement_date"] == by_date["2024-05-28"]["settlement_date"] == "2024-05-29"
    assert by_date["2017-09-01"]["settlement_date"] == "2017-09-07"      # over Labor Day
    # Columbus Day and Veterans Day: the exchange trades, the banks do not settle
    assert "2023-10-09" in trading and by_date["2023-10-06"]["settlement_date"] == "2023-10-11"
    assert by_date["2024-11-08"]["settlement_date"] == "2024-11-12"
    assert by_date["2024-11-11"]["settlement_date"] == "2024-11-12"


# ---------------------------------------------------------------- session-aware matching

def test_day_order_before_the_open_waits_and_fills_at_the_open(cal):
    market = reference_market(cal)
    api = new_api(cal)
    placed = api.order(symbol=SYMBOL, qty=5)
    assert placed["status"] == "accepted"
    assert api.get_order(placed["id"])["status"] == "accepted"
    limit = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=100000)   # marketable
    assert api.get_order(limit["id"])["status"] == "accepted"
    set_clock(cal, ny("2024-03-05", 10))
    order = api.get_order(placed["id"])
    assert order["status"] == "filled"
    opened = iso_utc("2024-03-05T14:30:00Z")
    assert ts(order["filled_at"]) == opened
    assert num(order["filled_avg_price"]) == market.quote_at(SYMBOL, opened).ask
    assert api.get_order(limit["id"])["status"] == "filled"


def test_extended_hours_limit_orders_trade_in_the_pre_market(cal):
    market = reference_market(cal)
    api = new_api(cal)
    now = ts(api.get("/v2/clock").json()["timestamp"])
    ask = market.quote_at(SYMBOL, now).ask
    placed = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=round(ask + 1, 2),
                       extended_hours=True)
    order = api.get_order(placed["id"])
    assert order["status"] == "filled" and order["extended_hours"] is True
    assert num(order["filled_avg_price"]) == market.quote_at(SYMBOL, ts(order["filled_at"])).ask


def test_opg_and_cls_auctions_and_their_refusal_windows(cal):
    market = reference_market(cal)
    api = new_api(cal)
    opg = api.order(symbol=SYMBOL, qty=2, time_in_force="opg")
    assert opg["status"] == "accepted"
    set_clock(cal, ny("2024-03-05", 10))
    filled = api.get_order(opg["id"])
    assert filled["status"] == "filled"
    assert num(filled["filled_avg_price"]) == market.opening_price(SYMBOL, dt.date(2024, 3, 5))
    late = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 1, "side": "buy", "type": "market",
                                   "time_in_force": "opg"})
    assert late.status_code == 403      # as Alpaca answers (a synchronous refusal, no order)
    assert late.json() == {"code": 40310000,
                           "message": "opg orders must be submitted after 7:00pm and before 9:28am"}
    cls = api.order(symbol=SYMBOL, qty=3, time_in_force="cls")
    set_clock(cal, ny("2024-03-05", 15, 54))
    just_in_time = api.order(symbol=SYMBOL, qty=1, time_in_force="cls")
    set_clock(cal, ny("2024-03-05", 15, 55))
    too_late = api.post("/v2/orders", {"symbol": SYMBOL, "qty": 1, "side": "buy", "type": "market",
                                       "time_in_force": "cls"})
    assert too_late.status_code == 403
    assert too_late.json() == {"code": 40310000,
                               "message": "cls orders must be submitted after 7:00pm and before 3:55pm"}
    assert len(api.get("/v2/orders", status="all").json()) == 3     # nothing of the refused ones
    set_clock(cal, ny("2024-03-05", 16, 1))
    closed = api.get_order(cls["id"])
    assert closed["status"] == "filled"
    assert api.get_order(just_in_time["id"])["status"] == "filled"
    assert ts(closed["filled_at"]) == iso_utc("2024-03-05T21:00:00Z")
    assert num(closed["filled_avg_price"]) == market.closing_price(SYMBOL, dt.date(2024, 3, 5))
    set_clock(cal, ny("2024-03-05", 19, 30))          # after 7pm: queued for the next day
    tomorrow = api.order(symbol=SYMBOL, qty=1, time_in_force="opg")
    set_clock(cal, ny("2024-03-06", 9, 31))
    assert ts(api.get_order(tomorrow["id"])["filled_at"]) == iso_utc("2024-03-06T14:30:00Z")


def test_day_orders_expire_at_the_close_or_at_eight_with_extended_hours(cal):
    api = new_api(cal)
    set_clock(cal, ny("2024-03-05", 10))
    regular = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1)
    extended = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1, extended_hours=True)
    gtc = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1, time_in_force="gtc")
    set_clock(cal, ny("2024-03-05", 17))
    r = api.get_order(regular["id"])
    assert r["status"] == "expired" and ts(r["expired_at"]) == iso_utc("2024-03-05T21:00:00Z")
    assert api.get_order(extended["id"])["status"] == "new"
    set_clock(cal, ny("2024-03-06", 9))
    e = api.get_order(extended["id"])
    assert e["status"] == "expired" and ts(e["expired_at"]) == iso_utc("2024-03-06T01:00:00Z")
    assert api.get_order(gtc["id"])["status"] == "new"


def test_orders_after_the_close_wait_over_the_weekend_for_monday(cal):
    market = reference_market(cal)
    api = new_api(cal)
    set_clock(cal, ny("2024-03-08", 17))                # Friday after the close
    placed = api.order(symbol=SYMBOL, qty=1)
    assert placed["status"] == "accepted"
    expires = ts(api.get_order(placed["id"])["expires_at"])
    assert expires == iso_utc("2024-03-11T20:00:00Z")   # Monday's close (EDT)
    set_clock(cal, ny("2024-03-11", 11))                # jump over the weekend
    order = api.get_order(placed["id"])
    assert order["status"] == "filled"
    monday_open = iso_utc("2024-03-11T13:30:00Z")
    assert ts(order["filled_at"]) == monday_open
    assert num(order["filled_avg_price"]) == market.quote_at(SYMBOL, monday_open).ask


def test_early_close_day_orders_expire_at_one(cal):
    api = new_api(cal)
    set_clock(cal, ny("2024-11-29", 10))
    placed = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1)
    assert ts(api.get_order(placed["id"])["expires_at"]) == iso_utc("2024-11-29T18:00:00Z")
    set_clock(cal, ny("2024-11-29", 14))
    assert api.get_order(placed["id"])["status"] == "expired"



def test_a_fast_clock_expires_day_orders_exactly_at_the_close():
    # a virtual minute per wall second: the close passes between two processing passes, and
    # the order must still expire at the close itself
    with Sandbox(seed=7, start="2024-03-05T20:00:00Z", speed=60, market="calendar") as sb:
        api = new_api(sb)
        set_clock(sb, "2024-03-05T20:59:00Z")            # a minute (one wall second) to the close
        placed = api.order(symbol=SYMBOL, qty=1, type="limit", limit_price=1)
        assert placed["status"] == "accepted"             # placed before the close
        for _ in range(2000):              # wait (bounded) for the loop to pass the close
            order = api.get_order(placed["id"])
            if order["status"] != "new":
                break
            time.sleep(0.01)
        assert order["status"] == "expired"
        assert ts(order["expired_at"]) == iso_utc("2024-03-05T21:00:00Z")
