"""Corporate actions in the sandbox, through real sockets: ``GET /v1/corporate-actions`` (shapes,
filters, pagination, errors), splits and dividends visible in raw bars, and ``adjustment``
before and after the sandbox clock crosses an ex-date. alpaca-py's conformance is in
test_sandbox_corporate_sdk.py."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import requests
from conftest import admin_headers

from alpaca_nb.sandbox import Sandbox

# WM has a 2-for-1 split with ex-date 2024-06-24 in the seed-7 always-open market; KO pays
# quarterly dividends (one with ex-date 2024-06-13). The tests find them through the API.
BEFORE = "2024-06-20T15:00:00Z"


@pytest.fixture()
def sb():
    with Sandbox(seed=7, start=BEFORE) as server:
        yield server


def get(sb, path, **params):
    return requests.get(sb.url + path, params=params, headers=admin_headers(sb), timeout=30)


def ok(sb, path, **params):
    resp = get(sb, path, **params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def move_clock(sb, when: str) -> None:
    resp = requests.post(sb.url + "/sandbox/clock", json={"set": when}, headers=admin_headers(sb), timeout=30)
    assert resp.status_code == 200, resp.text


def actions(sb, **params) -> list[dict]:
    """Every page, each record tagged with its array key."""
    out, token = [], None
    while True:
        body = ok(sb, "/v1/corporate-actions", **params, **({"page_token": token} if token else {}))
        assert set(body) == {"corporate_actions", "next_page_token"}
        for key, records in body["corporate_actions"].items():
            assert records, "types without records are omitted"
            out.extend(dict(r, _key=key) for r in records)
        token = body["next_page_token"]
        if token is None:
            return out


def daily(sb, symbol, start, end, **params) -> list[dict]:
    return ok(sb, "/v2/stocks/bars", symbols=symbol, timeframe="1Day", start=start, end=end,
              **params)["bars"].get(symbol, [])


def the_split(sb) -> dict:
    found = [a for a in actions(sb, symbols="WM", types="forward_split", start="2024-01-01",
                                end="2024-12-31")]
    assert len(found) == 1
    return found[0]


def test_shapes_of_splits_and_dividends(sb):
    split = the_split(sb)
    assert split["_key"] == "forward_splits"
    assert (split["symbol"], split["ex_date"], split["old_rate"], split["new_rate"]) == ("WM", "2024-06-24", 1, 2)
    assert set(split) - {"_key"} == {"id", "symbol", "cusip", "old_rate", "new_rate", "process_date",
                                     "ex_date", "record_date", "payable_date"}
    uuid.UUID(split["id"])
    assert len(split["cusip"]) == 9
    divs = actions(sb, symbols="KO", types="cash_dividend", start="2023-01-01", end="2024-06-20")
    assert len(divs) >= 5 and {d["_key"] for d in divs} == {"cash_dividends"}
    for d in divs:
        assert isinstance(d["rate"], float) and 0 < d["rate"] < 5
        assert d["special"] is False and d["foreign"] is False
        assert d["ex_date"] <= d["payable_date"] == d["process_date"]
        assert "2023-01-01" <= d["process_date"] <= "2024-06-20"
    # the same request gives the same ids and CUSIPs (deterministic from the seed)
    assert actions(sb, symbols="KO", types="cash_dividend", start="2023-01-01", end="2024-06-20") == divs


def test_filters_ids_cusips_sort_and_pages(sb):
    every = actions(sb, start="2024-01-01", end="2024-03-31", limit=1000)
    assert len(every) > 100

    def order(records):     # by process date (then type, symbol, id)
        return [(a["process_date"], a["_key"], a.get("symbol") or a.get("source_symbol"), a["id"])
                for a in records]
    for key in {a["_key"] for a in every}:             # each type's array is in that order
        same = [a for a in every if a["_key"] == key]
        assert order(same) == sorted(order(same))
    paged = actions(sb, start="2024-01-01", end="2024-03-31", limit=37)
    assert sorted(order(paged)) == sorted(order(every))
    desc = actions(sb, start="2024-01-01", end="2024-03-31", limit=1000, sort="desc")
    assert sorted(order(desc)) == sorted(order(every))
    assert [a["process_date"] for a in desc if a["_key"] == "cash_dividends"] == \
        [a["process_date"] for a in every if a["_key"] == "cash_dividends"][::-1]
    types = {a["_key"] for a in every}
    assert "cash_dividends" in types
    only = actions(sb, start="2024-01-01", end="2024-03-31", types="forward_split,reverse_split")
    assert only and {a["_key"] for a in only} <= {"forward_splits", "reverse_splits"}
    pick = [every[0]["id"], every[-1]["id"]]
    assert [a["id"] for a in actions(sb, ids=",".join(pick))] == pick
    cusip = every[0]["cusip"]
    assert all(a.get("cusip") == cusip for a in actions(sb, cusips=cusip, start="2024-01-01", end="2024-03-31"))
    # nothing announced after the sandbox's today is listed; the default window is today
    assert all(a["process_date"] <= "2024-08-31" for a in actions(sb, start="2024-06-01", end="2030-12-31"))
    assert ok(sb, "/v1/corporate-actions", symbols="NOPE")["corporate_actions"] == {}
    assert ok(sb, "/v1/corporate-actions", cas_region="non_us", start="2024-01-01",
              end="2024-03-31")["corporate_actions"] == {}


@pytest.mark.parametrize("params, message", [
    ({"types": "forward_splits"}, "invalid types"),
    ({"start": "2024-13-01"}, "Invalid format for parameter start"),
    ({"end": "yesterday"}, "Invalid format for parameter end"),
    ({"start": "2024-02-01", "end": "2024-01-01"}, "end should not be before start"),
    ({"limit": "0"}, "invalid limit"),
    ({"limit": "1001"}, "invalid limit"),
    ({"limit": "x"}, "Invalid format for parameter limit"),
    ({"sort": "up"}, "invalid sort"),
    ({"cas_region": "eu"}, "invalid cas_region"),
    ({"data_quality": "best"}, "invalid data_quality"),
    ({"page_token": "bm90LWFuLWlk"}, "invalid page token"),
    ({"ids": str(uuid.uuid4()), "symbols": "AAPL"}, "ids cannot be combined"),
    ({"ids": ",".join(str(uuid.uuid4()) for _ in range(3)), "limit": "2"}, "too many ids"),
])
def test_bad_parameters_get_a_400(sb, params, message):
    resp = get(sb, "/v1/corporate-actions", **params)
    assert resp.status_code == 400
    assert resp.json()["message"].startswith(message), resp.text


def test_a_split_is_in_the_raw_prices_and_adjustment_follows_the_clock(sb):
    split = the_split(sb)
    ex = dt.date.fromisoformat(split["ex_date"])
    move_clock(sb, "2024-06-28T15:00:00Z")
    raw = daily(sb, "WM", "2024-06-17", "2024-06-27")
    by_day = {r["t"][:10]: r for r in raw}
    prev = max(d for d in by_day if d < ex.isoformat())    # the last session before (a Friday)
    before, after = by_day[prev], by_day["2024-06-24"]
    assert 0.4 < after["o"] / before["c"] < 0.6        # the raw price halves at the ex-date
    assert after["v"] > before["v"] * 0.6
    adjusted = daily(sb, "WM", "2024-06-17", "2024-06-27", adjustment="split")
    for r, a in zip(raw, adjusted):
        assert r["t"] == a["t"]
        if r["t"][:10] < ex.isoformat():
            assert a["c"] == pytest.approx(r["c"] / 2, abs=1e-4)
            assert a["v"] == r["v"] * 2 and a["n"] == r["n"]
        else:
            assert a == r
    # adjusted history is continuous across the ex-date
    adj = {r["t"][:10]: r for r in adjusted}
    assert 0.9 < adj["2024-06-24"]["o"] / adj[prev]["c"] < 1.1
    # trades are never adjusted
    trades = ok(sb, "/v2/stocks/trades", symbols="WM", start="2024-06-21T15:00:00Z",
                end="2024-06-21T15:00:10Z")["trades"]["WM"]
    assert all(by_day["2024-06-21"]["l"] <= t["p"] <= by_day["2024-06-21"]["h"] for t in trades)


def test_the_same_query_before_and_after_the_ex_date(sb):
    query = {"symbols": "WM", "timeframe": "1Hour", "start": "2024-06-10", "end": "2024-06-14",
                 "adjustment": "split,dividend"}
    before = ok(sb, "/v2/stocks/bars", **query)["bars"]["WM"]
    raw = ok(sb, "/v2/stocks/bars", **dict(query, adjustment="raw"))["bars"]["WM"]
    dividends = [a for a in actions(sb, symbols="WM", types="cash_dividend", start="2024-06-14",
                                    end="2024-09-30") if a["ex_date"] <= "2024-06-20"]
    assert before == raw and not dividends         # no action between the bars and today yet
    move_clock(sb, "2024-06-24T12:00:00Z")          # the ex-date has begun
    after = ok(sb, "/v2/stocks/bars", **query)["bars"]["WM"]
    assert len(after) == len(before)
    for b, a in zip(before, after):
        assert a["t"] == b["t"] and a["n"] == b["n"]
        assert a["o"] == pytest.approx(b["o"] / 2, abs=1e-4) and a["v"] == 2 * b["v"]
    assert ok(sb, "/v2/stocks/bars", **dict(query, adjustment="raw"))["bars"]["WM"] == raw


def test_dividend_adjusts_prices_only(sb):
    div = [a for a in actions(sb, symbols="KO", types="cash_dividend", start="2024-01-01",
                              end="2024-12-31") if a["ex_date"] < "2024-06-20"][-1]
    ex = div["ex_date"]
    raw = daily(sb, "KO", "2024-05-20", ex)
    adjusted = daily(sb, "KO", "2024-05-20", ex, adjustment="dividend")
    prev_close = raw[-2]["c"]
    factor = 1 - div["rate"] / prev_close
    for r, a in zip(raw[:-1], adjusted[:-1]):
        assert a["c"] == pytest.approx(r["c"] * factor, abs=2e-4)
        assert (a["v"], a["n"]) == (r["v"], r["n"])
    assert adjusted[-1] == raw[-1]
    assert daily(sb, "KO", "2024-05-20", ex, adjustment="split") == raw     # KO has no split


@pytest.mark.parametrize("query, message", [
    ("adjustment=split&adjustment=all", "invalid adjustment"),
    ("adjustment=", "invalid adjustment"),
    ("adjustment=split,,all", "invalid adjustment"),
    ("adjustment=split,split", "invalid adjustment"),
    ("adjustment=splits", "invalid adjustment"),
])
def test_bad_adjustments_get_a_400(sb, query, message):
    resp = requests.get(f"{sb.url}/v2/stocks/bars?symbols=WM&timeframe=1Day&{query}",
                        headers=admin_headers(sb), timeout=30)
    assert resp.status_code == 400 and resp.json()["message"].startswith(message), resp.text


def test_a_month_bar_that_spans_the_ex_date_aggregates_adjusted_days(sb):
    move_clock(sb, "2024-07-02T15:00:00Z")
    days = daily(sb, "WM", "2024-06-01", "2024-06-30", adjustment="split")
    raw_days = daily(sb, "WM", "2024-06-01", "2024-06-30")
    [month] = ok(sb, "/v2/stocks/bars", symbols="WM", timeframe="1Month", start="2024-06-01",
                 end="2024-06-30", adjustment="split")["bars"]["WM"]
    [raw_month] = ok(sb, "/v2/stocks/bars", symbols="WM", timeframe="1Month", start="2024-06-01",
                     end="2024-06-30")["bars"]["WM"]
    assert month["o"] == days[0]["o"] and month["c"] == days[-1]["c"]
    assert month["h"] == max(d["h"] for d in days) and month["l"] == min(d["l"] for d in days)
    assert month["v"] == sum(d["v"] for d in days) and month["n"] == raw_month["n"]
    # raw: the month's high is a pre-split price, about twice its close
    assert raw_month["h"] == max(d["h"] for d in raw_days) > 1.8 * raw_month["c"]
    # the regular-hours minutes of a pre-split day (the daily bar is the regular session's),
    # adjusted, aggregate to that day's adjusted bar
    minutes = ok(sb, "/v2/stocks/bars", symbols="WM", timeframe="1Min", start="2024-06-21T13:30:00Z",
                 end="2024-06-21T19:59:59Z", adjustment="split", limit=1000)["bars"]["WM"]
    assert len(minutes) == 390
    day = next(d for d in days if d["t"].startswith("2024-06-21"))
    assert minutes[0]["o"] == day["o"] and max(m["h"] for m in minutes) == day["h"]
