"""Feeds differ as on Alpaca, through real sockets: ``feed=iex`` bars, trades and quotes are IEX's
share of the market (a few percent of the SIP's volume and prints, trades on ``V``, IEX quotes),
consistent across its own layers and the same for the same seed; the ``/v2/iex`` stream carries
IEX's data and ``/v2/sip`` the SIP's."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import requests
from _data_stream_client import connect
from conftest import admin_headers, new_account

from alpaca_nb.sandbox import Sandbox

UTC = dt.timezone.utc
MINUTE = {"start": "2024-03-06T15:30:00Z", "end": "2024-03-06T15:30:59.999999999Z"}


def ok(sb, path, **params):
    resp = requests.get(sb.url + path, params=params, headers=admin_headers(sb), timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def bars(sb, feed, timeframe="1Min", **window):
    return ok(sb, "/v2/stocks/AAPL/bars", timeframe=timeframe, feed=feed, limit=10000, **window)["bars"]


def test_iex_bars_are_a_few_percent_of_the_sips_inside_its_ranges(sandbox):
    day = {"start": "2024-03-06", "end": "2024-03-06"}
    sip, iex = bars(sandbox, "sip", **day), bars(sandbox, "iex", **day)
    assert [b["t"] for b in sip] == [b["t"] for b in iex]
    assert sip != iex
    for s, i in zip(sip, iex):
        assert 4 <= i["n"] <= s["n"] and i["n"] <= i["v"] <= s["v"]
        assert s["l"] <= i["l"] <= min(i["o"], i["c"]) <= max(i["o"], i["c"]) <= i["h"] <= s["h"]
    share = sum(b["v"] for b in iex) / sum(b["v"] for b in sip)
    assert 0.01 < share < 0.06, share
    assert 0.01 < sum(b["n"] for b in iex) / sum(b["n"] for b in sip) < 0.08
    # IEX's daily bar is the aggregate of its regular-hours minutes, as the SIP's is
    daily = bars(sandbox, "iex", "1Day", **day)[0]
    regular = [b for b in iex if "14:30" <= b["t"][11:16] < "21:00"]
    assert (daily["o"], daily["c"], daily["v"], daily["n"]) == \
        (regular[0]["o"], regular[-1]["c"], sum(b["v"] for b in regular), sum(b["n"] for b in regular))
    assert daily != bars(sandbox, "sip", "1Day", **day)[0]
    week = bars(sandbox, "iex", "1Week", start="2024-03-04", end="2024-03-08")
    days = bars(sandbox, "iex", "1Day", start="2024-03-04", end="2024-03-08")
    assert len(days) == 5 and week[0]["v"] == sum(d["v"] for d in days)


def test_iex_trades_and_quotes_are_iexs_own_and_make_its_bars(sandbox):
    bar = bars(sandbox, "iex", **MINUTE)[0]
    trades = ok(sandbox, "/v2/stocks/AAPL/trades", feed="iex", limit=10000, **MINUTE)["trades"]
    quotes = ok(sandbox, "/v2/stocks/AAPL/quotes", feed="iex", limit=10000, **MINUTE)["quotes"]
    assert trades and {t["x"] for t in trades} == {"V"}
    assert {(q["bx"], q["ax"]) for q in quotes} == {("V", "V")}
    prices = [t["p"] for t in trades]
    assert (len(trades), sum(t["s"] for t in trades)) == (bar["n"], bar["v"])
    assert (prices[0], max(prices), min(prices), prices[-1]) == (bar["o"], bar["h"], bar["l"], bar["c"])
    sip = ok(sandbox, "/v2/stocks/AAPL/trades", limit=10000, **MINUTE)["trades"]
    assert len(trades) < len(sip) / 5 and "V" not in {t["x"] for t in sip} - {"V"}
    latest = ok(sandbox, "/v2/stocks/AAPL/trades/latest", feed="iex")["trade"]
    assert latest["x"] == "V"
    snap = ok(sandbox, "/v2/stocks/AAPL/snapshot", feed="iex")
    assert snap["latestTrade"] == latest and snap["latestQuote"]["bx"] == "V"


def test_iex_quotes_move_between_its_prints_and_bracket_each_print(sandbox):
    """IEX's top of book moves alongside the NBBO, far more often than IEX prints (its stream
    ticks while its trades are seconds apart); the SIP keeps one quote per print."""
    trades = ok(sandbox, "/v2/stocks/AAPL/trades", feed="iex", limit=10000, **MINUTE)["trades"]
    quotes = ok(sandbox, "/v2/stocks/AAPL/quotes", feed="iex", limit=10000, **MINUTE)["quotes"]
    sip = ok(sandbox, "/v2/stocks/AAPL/quotes", limit=10000, **MINUTE)["quotes"]
    sip_trades = ok(sandbox, "/v2/stocks/AAPL/trades", limit=10000, **MINUTE)["trades"]
    assert len(sip) == len(sip_trades) and len(trades) < len(quotes) <= len(sip)
    assert len(quotes) >= len(sip) / 4 - 1 and len(quotes) >= 5 * len(trades)
    times = pd.to_datetime([q["t"] for q in quotes]).asi8          # trimmed fractions: compare as ns
    stamps = pd.to_datetime([t["t"] for t in trades]).asi8
    assert (np.diff(times) >= 0).all() and all(q["bp"] < q["ap"] for q in quotes)
    for trade, at in zip(trades, stamps):
        if (stamps == at).sum() == 1:          # a burst's prints share one quote instant
            in_force = quotes[int(np.searchsorted(times, at, side="right")) - 1]
            assert in_force["bp"] <= trade["p"] <= in_force["ap"], (trade, in_force)
    assert not set(stamps) & set(times)        # no book move at a print's own instant


def test_the_same_seed_gives_the_same_iex_data():
    with Sandbox(seed=7) as one, Sandbox(seed=7) as two:
        for sb in (one, two):
            sb.data = (bars(sb, "iex", **MINUTE),
                       ok(sb, "/v2/stocks/AAPL/trades", feed="iex", limit=10000, **MINUTE)["trades"])
        assert one.data == two.data


@pytest.mark.parametrize("path,feed", [("/v2/iex", "iex"), ("/v2/sip", "sip")])
def test_each_stream_carries_its_feeds_data(path, feed):
    with Sandbox(seed=7, start="2024-03-06T15:29:55Z", speed=60) as sb:
        c = connect(sb, new_account(sb), path)
        c.send({"action": "subscribe", "trades": ["AAPL"], "bars": ["AAPL"]})
        msgs = c.collect(30, lambda m: any(x["T"] == "b" and x["t"] == "2024-03-06T15:31:00Z" for x in m))
        c.close()
        streamed = {m["i"]: m for m in msgs if m["T"] == "t" and m["t"].startswith("2024-03-06T15:30:")}
        history = ok(sb, "/v2/stocks/AAPL/trades", feed=feed, limit=10000, **MINUTE)["trades"]
        assert streamed and set(streamed) <= {t["i"] for t in history}
        by_id = {t["i"]: t for t in history}
        assert all(m["p"] == by_id[i]["p"] and m["x"] == by_id[i]["x"] for i, m in streamed.items())
        assert ({m["x"] for m in streamed.values()} == {"V"}) == (feed == "iex")
        bar = next(m for m in msgs if m["T"] == "b" and m["t"] == "2024-03-06T15:30:00Z")
        rest = bars(sb, feed, **MINUTE)[0]
        assert (bar["o"], bar["h"], bar["l"], bar["c"]) == (rest["o"], rest["h"], rest["l"], rest["c"])
