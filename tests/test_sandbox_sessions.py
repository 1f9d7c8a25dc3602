"""The sandbox's market follows NYSE sessions in both market modes, through real sockets: daily
bars only on trading days (a week has five, fewer with a holiday), minute bars only in the hours
Alpaca's SIP covers (04:00-20:00 ET, 17:00 after an early close), weekly and monthly bars from
those days; and in always-open mode only the live present trades out of hours (an order fills
on a Sunday), while the history never shows it."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
import requests
from conftest import admin_headers, new_account, poll

from alpaca_nb.sandbox import Sandbox

NY = ZoneInfo("America/New_York")
UTC = dt.timezone.utc


def ok(sb, path, **params):
    resp = requests.get(sb.url + path, params=params, headers=admin_headers(sb), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ny_of(bar) -> dt.datetime:
    return dt.datetime.fromisoformat(bar["t"].replace("Z", "+00:00")).astimezone(NY)


@pytest.fixture(scope="module", params=["always-open", "calendar"])
def market(request, sandbox):
    if request.param == "always-open":
        yield sandbox
    else:
        with Sandbox(seed=7, market="calendar") as sb:
            yield sb


def test_a_week_of_daily_bars_has_five_rows_and_fewer_with_a_holiday(market):
    week = ok(market, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-03-04", end="2024-03-10")["bars"]
    assert [ny_of(b).date().isoformat() for b in week] == \
        ["2024-03-04", "2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08"]
    assert all(ny_of(b).time() == dt.time(0) for b in week)             # stamped at NY midnight
    holiday = ok(market, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-03-25", end="2024-03-31")["bars"]
    assert len(holiday) == 4                                              # Good Friday
    year = ok(market, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2023-01-01", end="2023-12-31")["bars"]
    assert len(year) == 250                                               # NYSE sessions of 2023
    weeks = ok(market, "/v2/stocks/AAPL/bars", timeframe="1Week", start="2024-03-25", end="2024-03-31")["bars"]
    assert len(weeks) == 1 and weeks[0]["v"] == sum(b["v"] for b in holiday)
    months = ok(market, "/v2/stocks/AAPL/bars", timeframe="1Month", start="2023-01-01", end="2023-12-31")["bars"]
    assert len(months) == 12 and sum(m["n"] for m in months) == sum(b["n"] for b in year)
    assert ny_of(months[0]).date() == dt.date(2023, 1, 3)                 # the first session of January


def test_minute_bars_only_in_the_sips_hours_and_none_on_weekends_or_holidays(market):
    def minutes(day):
        return ok(market, "/v2/stocks/SPY/bars", timeframe="1Min", start=day, end=day, limit=10000)["bars"]

    regular_day, early, saturday, christmas = (minutes(d) for d in
                                               ("2024-03-06", "2024-11-29", "2024-03-09", "2024-12-25"))
    assert saturday == [] and christmas == []
    assert (ny_of(regular_day[0]).strftime("%H:%M"), ny_of(regular_day[-1]).strftime("%H:%M")) == ("04:00", "19:59")
    assert (ny_of(early[0]).strftime("%H:%M"), ny_of(early[-1]).strftime("%H:%M")) == ("04:00", "16:59")
    # fewer prints a minute outside regular hours
    inside = [b["n"] for b in regular_day if "09:30" <= ny_of(b).strftime("%H:%M") < "16:00"]
    outside = [b["n"] for b in regular_day if not "09:30" <= ny_of(b).strftime("%H:%M") < "16:00"]
    assert sum(outside) / len(outside) < sum(inside) / len(inside) / 5
    # the daily bar is the regular session's
    day = ok(market, "/v2/stocks/SPY/bars", timeframe="1Day", start="2024-11-29", end="2024-11-29")["bars"][0]
    regular = [b for b in early if "09:30" <= ny_of(b).strftime("%H:%M") < "13:00"]
    assert len(regular) == 210
    assert (day["o"], day["c"], day["v"]) == (regular[0]["o"], regular[-1]["c"], sum(b["v"] for b in regular))
    trades = ok(market, "/v2/stocks/SPY/trades", start="2024-03-09T15:00:00Z", end="2024-03-09T16:00:00Z")
    assert trades["trades"] == []


def test_in_always_open_mode_only_the_live_present_trades_on_a_sunday():
    sunday = "2024-03-10T18:00:00Z"
    with Sandbox(seed=7, start=sunday, speed=1e-9) as sb:       # frozen: the quote stays put
        account = new_account(sb)
        headers = {"APCA-API-KEY-ID": account.key_id, "APCA-API-SECRET-KEY": account.secret_key}
        clock = requests.get(sb.url + "/v2/clock", headers=headers, timeout=30).json()
        assert clock["is_open"] is True
        order = requests.post(sb.url + "/v2/orders", headers=headers, timeout=30,
                              json={"symbol": "AAPL", "qty": "3", "side": "buy", "type": "market",
                                    "time_in_force": "day"}).json()
        filled = poll(lambda: requests.get(f"{sb.url}/v2/orders/{order['id']}", headers=headers,
                                           timeout=30).json(), lambda o: o["status"] == "filled")
        assert filled["status"] == "filled"
        quote = ok(sb, "/v2/stocks/AAPL/quotes/latest")["quote"]
        assert float(filled["filled_avg_price"]) == quote["ap"]             # at the live quote
        assert ny_of(quote).date() == dt.date(2024, 3, 10)                  # Sunday's live present
        # the history of that weekend stays empty, before and after the fill
        for kind in ("trades", "quotes"):
            assert ok(sb, f"/v2/stocks/AAPL/{kind}", start="2024-03-09", end=sunday)[kind] == []
        assert ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Min", start="2024-03-09", end=sunday)["bars"] == []
        assert ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-03-09", end=sunday)["bars"] == []
