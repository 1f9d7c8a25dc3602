"""Market-data REST v2 of the sandbox, through real sockets: bar consistency across timeframes,
trades/quotes against their bars, determinism, nothing in the future, exhaustive pagination,
every error answer, latest and snapshots."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import requests

from alpaca_nb.sandbox import Sandbox

NY = ZoneInfo("America/New_York")
UTC = dt.timezone.utc


def get(sb, path, **params):
    resp = requests.get(sb.url + path, params=params, timeout=30,
                        headers={"APCA-API-KEY-ID": sb.key_id, "APCA-API-SECRET-KEY": sb.secret_key})
    return resp


def ok(sb, path, **params):
    resp = get(sb, path, **params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def ns_of(text: str) -> int:
    """Nanoseconds since the epoch of an RFC-3339 ``...Z`` stamp with up to 9 fraction digits
    (trimmed stamps do not sort as strings: ``.1Z`` is before ``.12Z``)."""
    whole, _, frac = text.rstrip("Z").partition(".")
    base = dt.datetime.fromisoformat(whole).replace(tzinfo=UTC)
    return int(base.timestamp()) * 10**9 + int(frac.ljust(9, "0"))


def ny_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=NY).astimezone(UTC)


def all_pages(sb, path, **params):
    """Follow next_page_token; returns (list of (symbol, record)) in wire order and page count."""
    rows, pages, token = [], 0, None
    while True:
        query = dict(params)
        if token:
            query["page_token"] = token
        body = ok(sb, path, **query)
        pages += 1
        key = next(k for k in ("bars", "trades", "quotes") if k in body)
        if isinstance(body[key], dict):
            rows += [(s, r) for s, recs in body[key].items() for r in recs]
        else:
            rows += [(body["symbol"], r) for r in body[key]]
        token = body["next_page_token"]
        if token is None:
            return rows, pages


def aggregate(records):
    """What a bar of these records must be: first open, max high, min low, last close, sums."""
    return {"o": records[0]["o"], "h": max(r["h"] for r in records), "l": min(r["l"] for r in records),
            "c": records[-1]["c"], "v": sum(r["v"] for r in records), "n": sum(r["n"] for r in records)}


def check_bar_shape(bar):
    assert list(bar) == ["t", "o", "h", "l", "c", "v", "n", "vw"]
    assert isinstance(bar["v"], int) and isinstance(bar["n"], int) and bar["n"] > 0
    assert bar["l"] <= min(bar["o"], bar["c"]) <= max(bar["o"], bar["c"]) <= bar["h"]
    assert bar["l"] <= bar["vw"] <= bar["h"]


# Fixed past ranges: the shared sandbox runs at real time, so anything in 2024 never changes.
DAY = dt.date(2024, 3, 6)
RANGE = {"start": "2024-03-04T14:00:00Z", "end": "2024-03-04T15:59:59Z"}


# ---------------------------------------------------------------- consistency across timeframes

def regular_hours(minutes):
    """The bars of 09:30-16:00 New York time (a daily bar covers these, as Alpaca's does)."""
    return [b for b in minutes if "09:30" <= ts(b["t"]).astimezone(NY).strftime("%H:%M") < "16:00"]


@pytest.mark.parametrize("symbol", ["AAPL", "SPY", "ZOM", "BRK.A"])
def test_a_daily_bar_is_exactly_the_aggregate_of_its_regular_hours_minutes(sandbox, symbol):
    day = ok(sandbox, f"/v2/stocks/{symbol}/bars", timeframe="1Day", start=DAY.isoformat(),
             end=DAY.isoformat())["bars"]
    assert len(day) == 1 and ts(day[0]["t"]) == ny_midnight(DAY)
    minutes = ok(sandbox, "/v2/stocks/bars", symbols=symbol, timeframe="1Min", limit=10000,
                 start=ny_midnight(DAY).isoformat(),
                 end=(ny_midnight(DAY + dt.timedelta(days=1)) - dt.timedelta(seconds=1)).isoformat())
    minutes = minutes["bars"][symbol]
    assert len(minutes) == 960         # 04:00-20:00 New York time, in both market modes
    assert len(regular_hours(minutes)) == 390
    assert {k: day[0][k] for k in "ohlcvn"} == aggregate(regular_hours(minutes))
    check_bar_shape(day[0])
    for bar in minutes:
        check_bar_shape(bar)
    if symbol == "ZOM":     # a sub-dollar stock is quoted to 4 decimals
        assert day[0]["c"] < 1 and any(round(b["c"], 2) != b["c"] for b in minutes)


@pytest.mark.parametrize("timeframe,width", [("1Hour", 60), ("15Min", 15), ("7Min", 7), ("5H", 300)])
def test_intraday_buckets_aggregate_minutes_aligned_from_midnight_utc(sandbox, timeframe, width):
    start, end = "2024-03-06T00:00:00Z", "2024-03-06T23:59:59Z"
    minutes = ok(sandbox, "/v2/stocks/bars", symbols="MSFT", timeframe="1Min", start=start, end=end,
                 limit=10000)["bars"]["MSFT"]
    buckets = ok(sandbox, "/v2/stocks/bars", symbols="MSFT", timeframe=timeframe, start=start, end=end,
                 limit=10000)["bars"]["MSFT"]
    groups: dict[dt.datetime, list] = {}
    for bar in minutes:
        t = ts(bar["t"])
        offset = (t.hour * 60 + t.minute) // width * width
        groups.setdefault(t.replace(hour=offset // 60, minute=offset % 60), []).append(bar)
    assert [ts(b["t"]) for b in buckets] == sorted(groups)
    assert ts(buckets[-1]["t"]).strftime("%H:%M") == {60: "23:00", 15: "23:45", 7: "23:55", 300: "20:00"}[width]
    for bar in buckets:
        members = groups[ts(bar["t"])]
        assert {k: bar[k] for k in "ohlcvn"} == aggregate(members)
        vwap = sum(m["vw"] * m["v"] for m in members) / sum(m["v"] for m in members)
        assert bar["vw"] == pytest.approx(vwap, abs=1e-6)
        check_bar_shape(bar)


def test_weeks_and_months_aggregate_days_and_are_stamped_at_their_first_session(sandbox):
    days = ok(sandbox, "/v2/stocks/SPY/bars", timeframe="1Day", start="2024-01-01", end="2024-06-30",
              limit=10000)["bars"]
    for timeframe, key in [("1Week", lambda d: d - dt.timedelta(days=d.weekday())),
                           ("1Month", lambda d: (d.year, d.month)),
                           ("3Month", lambda d: (d.year, (d.month - 1) // 3))]:
        bars = ok(sandbox, "/v2/stocks/SPY/bars", timeframe=timeframe, start="2024-01-01",
                  end="2024-06-30", limit=10000)["bars"]
        groups: dict = {}
        for day in days:
            groups.setdefault(key(ts(day["t"]).astimezone(NY).date()), []).append(day)
        firsts = [g[0]["t"] for g in groups.values()]
        assert [b["t"] for b in bars] == firsts, timeframe
        for bar, members in zip(bars, groups.values()):
            assert {k: bar[k] for k in "ohlcvn"} == aggregate(members)
            check_bar_shape(bar)


def test_calendar_market_days_weeks_and_extended_hours():
    with Sandbox(market="calendar") as sb:
        # 2024-01-15 is Martin Luther King Jr. Day: that week is stamped on Tuesday
        week = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Week", start="2024-01-15", end="2024-01-19")
        assert [ts(b["t"]) for b in week["bars"]] == [ny_midnight(dt.date(2024, 1, 16))]
        days = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-01-13", end="2024-01-19")
        assert [ts(b["t"]).astimezone(NY).date().isoformat() for b in days["bars"]] == \
            ["2024-01-16", "2024-01-17", "2024-01-18", "2024-01-19"]
        assert {k: week["bars"][0][k] for k in "ohlcvn"} == aggregate(days["bars"])
        minutes = ok(sb, "/v2/stocks/bars", symbols="AAPL", timeframe="1Min", start="2024-01-16",
                     end="2024-01-16T23:59:59-05:00", limit=10000)["bars"]["AAPL"]
        # data window 04:00-20:00 New York time: 960 minutes
        assert len(minutes) == 960
        assert ts(minutes[0]["t"]).astimezone(NY).strftime("%H:%M") == "04:00"
        assert ts(minutes[-1]["t"]).astimezone(NY).strftime("%H:%M") == "19:59"
        assert {k: days["bars"][0][k] for k in "ohlcvn"} == aggregate(regular_hours(minutes))
        # pre-market trades carry the Form T condition
        trades = ok(sb, "/v2/stocks/AAPL/trades", start="2024-01-16T09:00:00Z",
                    end="2024-01-16T09:00:59Z")["trades"]
        assert trades and all("T" in t["c"] for t in trades)
        # a holiday has nothing
        assert ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Min", start="2024-01-15",
                  end="2024-01-15T23:59:00-05:00")["bars"] == []


def test_trades_of_a_minute_make_its_bar_and_quotes_straddle_them(sandbox):
    minute = "2024-03-06T15:30:00Z"
    bar = ok(sandbox, "/v2/stocks/AAPL/bars", timeframe="1Min", start=minute, end=minute)["bars"][0]
    trades, _ = all_pages(sandbox, "/v2/stocks/AAPL/trades", start=minute, end="2024-03-06T15:30:59.999999999Z",
                          limit=10000)
    quotes, _ = all_pages(sandbox, "/v2/stocks/AAPL/quotes", start=minute, end="2024-03-06T15:30:59.999999999Z",
                          limit=10000)
    trades = [t for _, t in trades]
    quotes = [q for _, q in quotes]
    assert len(trades) == bar["n"] and sum(t["s"] for t in trades) == bar["v"]
    prices = [t["p"] for t in trades]
    assert (prices[0], max(prices), min(prices), prices[-1]) == (bar["o"], bar["h"], bar["l"], bar["c"])
    stamps = [t["t"] for t in trades]
    times = [ns_of(s) for s in stamps]
    assert times == sorted(times)       # in time order; a burst's prints share a timestamp
    assert all(s.startswith("2024-03-06T15:30:") for s in stamps)
    ids = [t["i"] for t in trades]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for t in trades:
        assert list(t) == ["t", "x", "p", "s", "c", "i", "z"] and t["z"] == "C" and t["c"][0] == "@"
        assert ("I" in t["c"]) == (t["s"] < 100)
    assert len(quotes) == len(trades)
    for q, t in zip(quotes, trades):
        assert list(q) == ["t", "ax", "ap", "as", "bx", "bp", "bs", "c", "z"]
        assert q["bp"] < q["ap"] and q["bp"] <= t["p"] <= q["ap"]
        assert q["bs"] >= 100 and q["as"] >= 100 and ns_of(q["t"]) < ns_of(t["t"])


# ---------------------------------------------------------------- determinism and the future

def _sample(sb):
    return [get(sb, "/v2/stocks/bars", symbols="AAPL,TSLA,ZOM", timeframe=tf, start="2024-02-01",
                end="2024-02-03", limit=3000).content for tf in ("1Min", "1Hour", "1Day")] + \
        [get(sb, "/v2/stocks/trades", symbols="AAPL", start=RANGE["start"], limit=500).content,
         get(sb, "/v2/stocks/quotes", symbols="SPY", start=RANGE["start"], limit=500).content]


def test_the_same_seed_gives_byte_identical_answers_across_processes_and_another_seed_does_not(sandbox):
    first = _sample(sandbox)
    with Sandbox(seed=7) as again:
        assert _sample(again) == first
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "sandbox", "--port", "0", "--seed", "7",
                             "--log-level", "WARNING"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split("listening on ")[1].split()[0]

        class Remote:
            key_id, secret_key = sandbox.key_id, sandbox.secret_key
        Remote.url = url
        assert _sample(Remote) == first
    finally:
        proc.terminate()
        proc.wait(10)
    with Sandbox(seed=8) as other:
        assert _sample(other)[0] != first[0]


def test_nothing_exists_after_now():
    with Sandbox(start="2024-03-06T15:00:30.5Z") as sb:
        now = ts(ok(sb, "/sandbox/status")["now"])
        minutes = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Min", start="2024-03-06T14:50:00Z",
                     end="2030-01-01T00:00:00Z")["bars"]
        last = ts(minutes[-1]["t"])
        assert last + dt.timedelta(minutes=1) <= now < last + dt.timedelta(minutes=2)
        trades = ok(sb, "/v2/stocks/AAPL/trades", start="2024-03-06T14:59:00Z", end="2099-01-01T00:00:00Z",
                    limit=10000)["trades"]
        assert trades and ts(trades[-1]["t"]) <= ts(ok(sb, "/sandbox/status")["now"])
        assert ts(trades[-1]["t"]) > last + dt.timedelta(minutes=1)     # the current minute's trades exist
        # today's daily bar is the aggregate of today's complete minutes
        today = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-03-06")["bars"]
        assert len(today) == 1
        day_minutes = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Min", start="2024-03-06",
                         limit=10000)["bars"]
        assert {k: today[0][k] for k in "ohlcvn"} == aggregate(regular_hours(day_minutes))
        assert ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-03-07")["bars"] == []
        week = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Week", start="2024-03-04")["bars"]
        days = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-03-04")["bars"]
        assert len(days) == 3 and {k: week[0][k] for k in "ohlcvn"} == aggregate(days)
        latest = ok(sb, "/v2/stocks/bars/latest", symbols="AAPL")["bars"]["AAPL"]
        assert latest == minutes[-1]


def test_a_date_only_range_covers_whole_new_york_days(sandbox):
    bars = ok(sandbox, "/v2/stocks/AAPL/bars", timeframe="1Min", start="2024-03-06", end="2024-03-06",
              limit=10000)["bars"]
    assert len(bars) == 960
    assert ts(bars[0]["t"]) == ny_midnight(DAY) + dt.timedelta(hours=4)
    assert ts(bars[-1]["t"]) == ny_midnight(DAY) + dt.timedelta(hours=20) - dt.timedelta(minutes=1)


def test_default_window_is_today_and_end_is_capped_at_now():
    with Sandbox(start="2024-03-06T15:01:30Z") as sb:
        bars = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Hour")["bars"]
        # from the pre-market's 04:00 ET (09:00Z); the 15:00 hour is the partial aggregate of
        # its one complete minute
        assert ts(bars[0]["t"]) == ny_midnight(DAY) + dt.timedelta(hours=4) and ts(bars[-1]["t"]).hour == 15
        minute = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Min", start="2024-03-06T15:00:00Z")["bars"]
        assert len(minute) == 1 and {k: bars[-1][k] for k in "ohlcvn"} == aggregate(minute)
        # only an earlier end: the window is that end's day
        bars = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Hour", end="2024-03-05T12:00:00Z")["bars"]
        assert ts(bars[0]["t"]) == ny_midnight(dt.date(2024, 3, 5)) + dt.timedelta(hours=4)
        assert ts(bars[-1]["t"]).hour == 12


# ---------------------------------------------------------------- pagination

PAGED = {"symbols": "AAPL,MSFT,SPY,ZOM,NOSUCH", "timeframe": "1Min", **RANGE}


@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_pages_concatenate_to_the_single_big_page_without_loss_or_repeat(sandbox, sort):
    big, pages = all_pages(sandbox, "/v2/stocks/bars", limit=10000, sort=sort, **PAGED)
    assert pages == 1 and len(big) == 4 * 120
    symbols = [s for s, _ in big]
    assert symbols == sorted(symbols)       # symbol order, then time
    for symbol in ("AAPL", "MSFT", "SPY", "ZOM"):
        stamps = [r["t"] for s, r in big if s == symbol]
        assert stamps == sorted(stamps, reverse=sort == "desc") and len(stamps) == 120
    for limit in (1, 7, 119, 120, 121, 479, 480, 1000):
        rows, pages = all_pages(sandbox, "/v2/stocks/bars", limit=limit, sort=sort, **PAGED)
        assert rows == big, limit
        assert pages == -(-480 // limit)     # no empty last page: the token is null once done


def test_every_page_but_the_last_is_full_and_tokens_are_opaque_base64(sandbox):
    body = ok(sandbox, "/v2/stocks/bars", limit=50, **PAGED)
    assert sum(len(v) for v in body["bars"].values()) == 50
    assert list(body["bars"]) == ["AAPL"]
    decoded = base64.b64decode(body["next_page_token"]).decode()
    assert decoded.startswith("AAPL|")
    last = ok(sandbox, "/v2/stocks/bars", limit=1000, **PAGED)
    assert last["next_page_token"] is None
    assert list(last["bars"]) == ["AAPL", "MSFT", "SPY", "ZOM"]    # the unknown symbol is omitted


@pytest.mark.parametrize("kind,limit", [("trades", 97), ("quotes", 13)])
def test_trades_and_quotes_paginate_across_symbols(sandbox, kind, limit):
    window = {"start": "2024-03-04T15:00:00Z", "end": "2024-03-04T15:01:59.999999999Z"}
    big, pages = all_pages(sandbox, f"/v2/stocks/{kind}", symbols="AAPL,ZOM", limit=10000, **window)
    assert pages == 1 and len(big) > limit
    rows, pages = all_pages(sandbox, f"/v2/stocks/{kind}", symbols="AAPL,ZOM", limit=limit, **window)
    assert rows == big and pages == -(-len(big) // limit)
    desc, _ = all_pages(sandbox, f"/v2/stocks/{kind}", symbols="AAPL,ZOM", limit=limit, sort="desc", **window)
    for symbol in ("AAPL", "ZOM"):
        assert [r for s, r in desc if s == symbol] == [r for s, r in big if s == symbol][::-1]


def test_single_symbol_endpoint_pages_like_the_multi_one(sandbox):
    rows, pages = all_pages(sandbox, "/v2/stocks/SPY/bars", timeframe="1Min", limit=33, **RANGE)
    multi, _ = all_pages(sandbox, "/v2/stocks/bars", symbols="SPY", timeframe="1Min", limit=10000, **RANGE)
    assert rows == multi and pages == 4
    body = ok(sandbox, "/v2/stocks/SPY/bars", timeframe="1Min", limit=2, **RANGE)
    assert list(body) == ["bars", "symbol", "next_page_token"] and body["symbol"] == "SPY"
    assert ok(sandbox, "/v2/stocks/NOSUCH/bars", timeframe="1Min", **RANGE) == \
        {"bars": [], "symbol": "NOSUCH", "next_page_token": None}
    assert ok(sandbox, "/v2/stocks/bars", symbols="NOSUCH", timeframe="1Min", **RANGE) == \
        {"bars": {}, "next_page_token": None}


def test_currency_is_echoed_and_sip_and_adjustments_without_actions_serve_the_same_data(sandbox):
    # (AAPL has no corporate action in January 2024 for seed 7; IEX is its own, smaller tape)
    base = get(sandbox, "/v2/stocks/bars", symbols="AAPL", timeframe="1Day", start="2024-01-01",
               end="2024-02-01").json()
    iex = get(sandbox, "/v2/stocks/bars", symbols="AAPL", timeframe="1Day", start="2024-01-01",
              end="2024-02-01", feed="iex").json()
    assert [b["t"] for b in iex["bars"]["AAPL"]] == [b["t"] for b in base["bars"]["AAPL"]]
    assert all(i["v"] < b["v"] for i, b in zip(iex["bars"]["AAPL"], base["bars"]["AAPL"]))
    for extra in ({"feed": "sip"}, {"adjustment": "all"}, {"adjustment": "split,spin-off"},
                  {"asof": "2024-01-01"}, {"asof": "-"}):
        assert get(sandbox, "/v2/stocks/bars", symbols="AAPL", timeframe="1Day", start="2024-01-01",
                   end="2024-02-01", **extra).json() == base
    with_currency = ok(sandbox, "/v2/stocks/bars", symbols="AAPL", timeframe="1Day", start="2024-01-01",
                       end="2024-02-01", currency="USD")
    assert with_currency == {**base, "currency": "USD"}


@pytest.mark.parametrize("timeframe", ["1Min", "1T", "59Min", "1Hour", "23H", "1Day", "1D", "1Week", "1W",
                                       "1Month", "2M", "3Month", "4M", "6Month", "12Month"])
def test_the_whole_timeframe_grammar_is_served(sandbox, timeframe):
    body = ok(sandbox, "/v2/stocks/bars", symbols="AAPL", timeframe=timeframe, start="2023-01-01",
              end="2024-01-01T00:00:00Z", limit=5)
    assert 1 <= len(body["bars"]["AAPL"]) <= 5


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("params,message", [
    ({"timeframe": "7Day"}, "invalid timeframe"),
    ({"timeframe": "60Min"}, "invalid timeframe"),
    ({"timeframe": "24Hour"}, "invalid timeframe"),
    ({"timeframe": "5Month"}, "invalid timeframe"),
    ({"timeframe": "0Min"}, "invalid timeframe"),
    ({"timeframe": "1min"}, "invalid timeframe"),
    ({}, "Invalid format for parameter timeframe: query parameter 'timeframe' is required"),
    ({"timeframe": "1Min", "limit": "0"}, "invalid limit: must be between 1 and 10000"),
    ({"timeframe": "1Min", "limit": "10001"}, "invalid limit: must be between 1 and 10000"),
    ({"timeframe": "1Min", "limit": "ten"},
     "Invalid format for parameter limit: error parsing 'ten' as integer"),
    ({"timeframe": "1Min", "start": "2024-03-02", "end": "2024-03-01"}, "end should not be before start"),
    ({"timeframe": "1Min", "start": "not-a-date"},
     "Invalid format for parameter start: error parsing 'not-a-date' as RFC3339 or 2006-01-02 time"),
    ({"timeframe": "1Min", "end": "2024-03-01T10:00:00"},
     "Invalid format for parameter end: error parsing '2024-03-01T10:00:00' as RFC3339 or 2006-01-02 time"),
    ({"timeframe": "1Min", "page_token": "not base64!"}, "invalid page token"),
    ({"timeframe": "1Min", "page_token": base64.b64encode(b"garbage").decode()}, "invalid page token"),
    ({"timeframe": "1Min", "sort": "up"}, "invalid sort: 'up' (expected asc or desc)"),
    ({"timeframe": "1Min", "feed": "nasdaq"}, "invalid feed: 'nasdaq' (expected one of sip, iex, otc, boats)"),
    ({"timeframe": "1Min", "feed": "delayed_sip"},
     "invalid feed: 'delayed_sip' (expected one of sip, iex, otc, boats)"),
    ({"timeframe": "1Min", "adjustment": "splits"},
     "invalid adjustment: 'splits' (expected raw, split, dividend, spin-off or all)"),
    ({"timeframe": "1Min", "currency": "EUR"}, "invalid currency: 'EUR' (the sandbox quotes prices in USD only)"),
    ({"timeframe": "1Min", "asof": "yesterday"},
     "Invalid format for parameter asof: error parsing 'yesterday' as 2006-01-02 date"),
])
def test_bad_parameters_get_alpacas_400(sandbox, params, message):
    for path, extra in (("/v2/stocks/bars", {"symbols": "AAPL"}), ("/v2/stocks/AAPL/bars", {})):
        resp = get(sandbox, path, **extra, **params)
        assert resp.status_code == 400, resp.text
        assert resp.json() == {"message": message}


def test_bad_symbols_and_tokens_from_another_query(sandbox):
    resp = get(sandbox, "/v2/stocks/bars", timeframe="1Min")
    assert resp.status_code == 400
    assert resp.json() == {"message": "Invalid format for parameter symbols: query parameter 'symbols' is required"}
    resp = get(sandbox, "/v2/stocks/bars", symbols="AAPL,AA:PL", timeframe="1Min")
    assert resp.status_code == 400 and resp.json() == {"message": "invalid symbol: AA:PL"}
    token = ok(sandbox, "/v2/stocks/bars", symbols="AAPL", timeframe="1Min", limit=1, **RANGE)["next_page_token"]
    for other in ({"symbols": "MSFT", "timeframe": "1Min"}, {"symbols": "AAPL", "timeframe": "5Min"}):
        resp = get(sandbox, "/v2/stocks/bars", page_token=token, **other, **RANGE)
        assert resp.status_code == 400 and resp.json() == {"message": "invalid page token"}
    resp = get(sandbox, "/v2/stocks/trades", symbols="AAPL", page_token=token, **RANGE)
    assert resp.status_code == 400
    resp = requests.get(sandbox.url + "/v2/stocks/bars", params={"symbols": "AAPL", "timeframe": "1Min"},
                        timeout=10)
    assert resp.status_code == 401


# ---------------------------------------------------------------- latest and snapshots

def test_latest_endpoints_agree_with_history_and_omit_unknown_symbols():
    with Sandbox(start="2024-03-06T15:00:30Z") as sb:
        history = ok(sb, "/v2/stocks/AAPL/trades", start="2024-03-06T15:00:00Z", limit=10000)["trades"]
        latest = ok(sb, "/v2/stocks/trades/latest", symbols="AAPL,NOSUCH,SPY")   # the clock runs
        later = ok(sb, "/v2/stocks/AAPL/trades", start="2024-03-06T15:00:00Z", limit=10000)["trades"]
        assert list(latest) == ["trades"] and set(latest["trades"]) == {"AAPL", "SPY"}
        assert ns_of(history[-1]["t"]) <= ns_of(latest["trades"]["AAPL"]["t"]) <= ns_of(later[-1]["t"])
        assert latest["trades"]["AAPL"] in later
        quote = ok(sb, "/v2/stocks/AAPL/quotes/latest")
        assert list(quote) == ["symbol", "quote"] and quote["quote"]["bp"] < quote["quote"]["ap"]
        bar = ok(sb, "/v2/stocks/AAPL/bars/latest")
        assert list(bar) == ["symbol", "bar"] and bar["bar"]["t"] in ("2024-03-06T14:59:00Z", "2024-03-06T15:00:00Z")
        delayed = ok(sb, "/v2/stocks/bars/latest", symbols="AAPL", feed="delayed_sip")["bars"]["AAPL"]
        assert ts(bar["bar"]["t"]) - ts(delayed["t"]) == dt.timedelta(minutes=15)
        for kind in ("trades", "quotes", "bars"):
            resp = get(sb, f"/v2/stocks/NOSUCH/{kind}/latest")
            assert resp.status_code == 404 and "NOSUCH" in resp.json()["message"]
        resp = get(sb, "/v2/stocks/trades/latest")
        assert resp.status_code == 400


def test_snapshots_multi_with_null_for_unknown_and_single_with_symbol():
    with Sandbox(start="2024-03-06T15:00:30Z") as sb:
        multi = ok(sb, "/v2/stocks/snapshots", symbols="AAPL,NOSUCH")
        assert multi["NOSUCH"] is None
        snap = multi["AAPL"]
        assert list(snap) == ["latestTrade", "latestQuote", "minuteBar", "dailyBar", "prevDailyBar"]
        single = ok(sb, "/v2/stocks/AAPL/snapshot")
        assert single["symbol"] == "AAPL" and single["prevDailyBar"] == snap["prevDailyBar"]
        prev = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-03-05", end="2024-03-05")["bars"][0]
        assert snap["prevDailyBar"] == prev
        today = ok(sb, "/v2/stocks/AAPL/bars", timeframe="1Day", start="2024-03-06")["bars"][0]
        assert single["dailyBar"]["t"] == today["t"] and single["dailyBar"]["o"] == today["o"]
        assert ts(snap["minuteBar"]["t"]) == dt.datetime(2024, 3, 6, 14, 59, tzinfo=UTC) or \
            ts(snap["minuteBar"]["t"]) == dt.datetime(2024, 3, 6, 15, 0, tzinfo=UTC)
        assert get(sb, "/v2/stocks/NOSUCH/snapshot").status_code == 404
    with Sandbox(start="2024-01-15T12:00:00Z", market="calendar") as sb:   # a holiday morning
        snap = ok(sb, "/v2/stocks/AAPL/snapshot")
        assert ts(snap["dailyBar"]["t"]) == ny_midnight(dt.date(2024, 1, 12))
        assert ts(snap["prevDailyBar"]["t"]) == ny_midnight(dt.date(2024, 1, 11))
        assert ts(snap["latestTrade"]["t"]).astimezone(NY).date() == dt.date(2024, 1, 12)


def test_the_chunk_cache_counts_descending_copies_and_keeps_its_budget():
    from alpaca_nb.sandbox.data_api import Chunk, ChunkCache

    def chunk():
        return Chunk(b",".join(b'{"t":%d}' % i for i in range(100)), np.arange(100, dtype=np.int64))

    size = chunk().nbytes
    cache = ChunkCache(budget=3 * size)
    for key in range(3):
        cache.put(key, chunk())
    assert cache.get(0).slice_desc(10, 20) == b",".join(b'{"t":%d}' % i for i in range(19, 9, -1))
    assert cache.get(0).nbytes > size                   # the descending copy is kept with it
    assert 1 not in cache and 0 in cache and 2 in cache  # counting it made room: 1 was the oldest
    for key in range(3, 9):                              # every older chunk leaves in turn
        cache.put(key, chunk())
        stored = [cache.get(k) for k in range(key + 1) if k in cache]
        assert cache.bytes == sum(c.nbytes for c in stored) <= cache.budget
    assert 0 not in cache and cache.bytes == 3 * size
