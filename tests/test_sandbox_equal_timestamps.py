"""Trades and quotes that share a timestamp, as on the real feed (a large print followed by
several prints in the same nanosecond, and the quotes before them): the sandbox sends them in
REST pages (a page boundary inside such a burst loses and repeats nothing, in both sort orders)
and in the live stream, the same for the same seed. Through real sockets."""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter

import pytest
import requests
from _data_stream_client import connect
from conftest import admin_headers, new_account

from alpaca_nb.sandbox import Sandbox

UTC = dt.timezone.utc
WINDOW = {"start": "2024-03-04T14:00:00Z", "end": "2024-03-04T14:02:59.999999999Z"}


def ok(sb, path, **params):
    resp = requests.get(sb.url + path, params=params, headers=admin_headers(sb), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def ns_of(text: str) -> int:
    whole, _, frac = text.rstrip("Z").partition(".")
    return int(dt.datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()) * 10**9 + \
        int(frac.ljust(9, "0"))


def pages(sb, kind, **params):
    """Every record of ``kind`` over all pages, as (symbol, record), and the page count."""
    rows, token, count = [], None, 0
    while True:
        body = ok(sb, f"/v2/stocks/{kind}", **params, **({"page_token": token} if token else {}))
        count += 1
        rows += [(s, r) for s, recs in body[kind].items() for r in recs]
        token = body["next_page_token"]
        if token is None:
            return rows, count


def tied_positions(rows):
    """Indices i where rows i and i + 1 are of one symbol and share a timestamp."""
    return [i for i in range(len(rows) - 1)
            if rows[i][0] == rows[i + 1][0] and rows[i][1]["t"] == rows[i + 1][1]["t"]]


@pytest.mark.parametrize("kind", ["trades", "quotes"])
def test_some_records_share_a_timestamp_and_the_same_seed_gives_the_same_ones(sandbox, kind):
    rows, _ = pages(sandbox, kind, symbols="AAPL,SPY", limit=10000, **WINDOW)
    stamps = Counter((s, r["t"]) for s, r in rows)
    shared = {key: n for key, n in stamps.items() if n > 1}
    assert shared, "no two records share a timestamp"
    assert {s for s, _ in shared} == {"AAPL", "SPY"}
    assert max(shared.values()) >= 3                      # bursts of several prints
    assert len(shared) < len(stamps) / 5                  # but most records stand alone
    times = [ns_of(r["t"]) for s, r in rows if s == "AAPL"]
    assert times == sorted(times)
    if kind == "trades":        # a burst's prints are distinct trades, ids increasing
        ids = [r["i"] for s, r in rows if s == "AAPL"]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    with Sandbox(seed=7) as again:
        assert pages(again, kind, symbols="AAPL,SPY", limit=10000, **WINDOW)[0] == rows


@pytest.mark.parametrize("kind", ["trades", "quotes"])
@pytest.mark.parametrize("sort", ["asc", "desc"])
def test_a_page_boundary_inside_a_burst_loses_and_repeats_nothing(sandbox, kind, sort):
    big, count = pages(sandbox, kind, symbols="AAPL,SPY", limit=10000, sort=sort, **WINDOW)
    assert count == 1
    tied = tied_positions(big)
    assert tied
    # page sizes that end the first page on the first, second ... record of a burst
    limits = sorted({i + 1 for i in tied[:3]} | {tied[0] + 2, 7})
    for limit in limits:
        rows, count = pages(sandbox, kind, symbols="AAPL,SPY", limit=limit, sort=sort, **WINDOW)
        assert rows == big, limit
        assert count == -(-len(big) // limit)
    # the token of a page that ends inside a burst names the record's rank in it
    body = ok(sandbox, f"/v2/stocks/{kind}", symbols="AAPL,SPY", limit=tied[0] + 2, sort=sort, **WINDOW)
    token = base64.b64decode(body["next_page_token"]).decode()
    assert token.count("|") == 3 and int(token.rsplit("|", 1)[1]) >= 2


def test_the_single_symbol_endpoint_pages_through_bursts_too(sandbox):
    big = ok(sandbox, "/v2/stocks/AAPL/trades", limit=10000, **WINDOW)["trades"]
    first = next(i for i in range(len(big) - 1) if big[i]["t"] == big[i + 1]["t"])
    rows, token = [], None
    while True:
        body = ok(sandbox, "/v2/stocks/AAPL/trades", limit=first + 1,
                  **WINDOW, **({"page_token": token} if token else {}))
        rows += body["trades"]
        token = body["next_page_token"]
        if token is None:
            break
    assert rows == big


def test_the_live_stream_sends_records_with_equal_timestamps_as_rest_has_them():
    # the stream starts at the clock's present when the subscription lands: start 5 virtual
    # minutes (5 wall seconds) before the window so a slow start-up cannot miss its first trades
    with Sandbox(start="2024-03-04T13:56:00Z", speed=60) as sb:
        account = new_account(sb)
        c = connect(sb, account, "/v2/sip")
        c.send({"action": "subscribe", "trades": ["AAPL"], "quotes": ["AAPL"]})
        end = ns_of("2024-03-04T14:03:00Z")
        msgs = c.collect(60, lambda m: any(x["T"] in "tq" and ns_of(x["t"]) >= end for x in m))
        c.close()
        minute = {"start": "2024-03-04T14:01:00Z", "end": "2024-03-04T14:02:59.999999999Z"}
        begin = ns_of(minute["start"])
        for kind, code in (("trades", "t"), ("quotes", "q")):
            streamed = [{k: v for k, v in m.items() if k not in ("T", "S")} for m in msgs
                        if m["T"] == code and begin <= ns_of(m["t"]) < end]
            history = ok(sb, "/v2/stocks/AAPL/" + kind, limit=10000, **minute)[kind]
            if kind == "trades":      # a late-reported trade comes 30 s after its minute
                ids = {m["i"] for m in streamed}
                assert len([t for t in history if t["i"] not in ids]) <= 2
                history = [t for t in history if t["i"] in ids]
                streamed.sort(key=lambda m: m["i"])
            assert streamed == [{k: r[k] for k in streamed[0]} for r in history]
            assert Counter(m["t"] for m in streamed).most_common(1)[0][1] >= 2
