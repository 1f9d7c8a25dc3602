"""The synthetic market's contract with the trading engine (CONTRACTS.md): assets, quote_at,
trade_at, daily_bar, opening_price and closing_price, in both market modes (whose history is the
same: NYSE sessions). Market is a pure function of (seed, symbol, time), so it is exercised directly here; everything it serves
over HTTP and WebSocket is tested in test_sandbox_data_*.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest

from alpaca_nb.sandbox._bars import Timeframe
from alpaca_nb.sandbox._minutes import POST, PRE, REGULAR, round_price
from alpaca_nb.sandbox._noise import hash_at, key_of, normal_at, unit
from alpaca_nb.sandbox.clock import MINUTE_NS, Clock, Sessions, ny_midnight_ns, to_ns
from alpaca_nb.sandbox.market import Market

NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module", params=["always-open", "calendar"])
def market(request):
    return Market(seed=7, sessions=Sessions(request.param), clock=Clock())


def ny(day: str, hour: int, minute: int = 0, second: float = 0) -> int:
    d = dt.date.fromisoformat(day)
    return to_ns(dt.datetime(d.year, d.month, d.day, hour, minute, tzinfo=NY)) + int(second * 1e9)


def test_the_asset_list_has_what_tests_and_clients_need(market):
    assets = market.assets()
    assert len(assets) >= 300 and [a["symbol"] for a in assets] == sorted(a["symbol"] for a in assets)
    required = {"id", "class", "exchange", "symbol", "name", "status", "tradable", "marginable", "shortable",
                "easy_to_borrow", "fractionable", "attributes", "maintenance_margin_requirement",
                "margin_requirement_long", "margin_requirement_short"}
    for a in assets:
        assert required <= set(a) and a["class"] == "us_equity"
        assert a["exchange"] in {"NASDAQ", "NYSE", "ARCA", "AMEX", "BATS"}
        assert uuid.UUID(a["id"]).version == 5
        assert market.asset(a["id"])["symbol"] == a["symbol"]
    assert len({a["id"] for a in assets}) == len(assets)
    by = {a["symbol"]: a for a in assets}
    assert {"AAPL", "SPY", "QQQ", "FAKEPACA", "BRK.B"} <= set(by)
    assert any(a["status"] == "inactive" and not a["tradable"] for a in assets)
    assert any(a["status"] == "active" and not a["tradable"] for a in assets)
    assert any(a["tradable"] and not a["shortable"] for a in assets)
    assert any(a["tradable"] and not a["fractionable"] for a in assets)
    assert any(a["shortable"] and not a["easy_to_borrow"] for a in assets)
    assert {a["exchange"] for a in assets} == {"NASDAQ", "NYSE", "ARCA", "AMEX", "BATS"}
    penny = [s for s in ("ZOM", "CEI", "MULN") if market.daily_bar(s, dt.date(2025, 6, 2)).close < 1]
    assert len(penny) >= 2
    assert market.asset("aapl") is None and market.asset("NOSUCH") is None   # case-sensitive, as Alpaca
    other = Market(seed=99, sessions=Sessions("always-open"), clock=Clock())
    assert other.asset("AAPL")["id"] == by["AAPL"]["id"]                      # ids do not depend on the seed
    assert market.asset("AAPL") is not market.asset("AAPL")                   # callers get copies


def test_quote_and_trade_at_are_the_latest_at_or_before_the_instant(market):
    for ns in (ny("2024-03-06", 10, 15, 17.25), ny("2024-03-06", 15, 59, 59.9), ny("2024-03-06", 10, 15)):
        quote, trade = market.quote_at("AAPL", ns), market.trade_at("AAPL", ns)
        assert quote.t <= ns and trade.t <= ns
        assert 0 < quote.bid < quote.ask and quote.bid_size >= 100 and quote.ask_size >= 100
        assert quote.bid_exchange and quote.ask_exchange and trade.exchange and trade.size >= 1
        minute = ns // MINUTE_NS * MINUTE_NS
        ticks = market.ticks("AAPL", minute)
        later = ticks.trade_t[(ticks.trade_t > trade.t) & (ticks.trade_t <= ns)]
        assert len(later) == 0                                   # nothing newer up to ns
        bar = market.minute_bars("AAPL", dt.date(2024, 3, 6))
        i = int(np.searchsorted(bar.t, trade.t, side="right")) - 1
        assert bar.l[i] <= trade.price <= bar.h[i]
    # on the open's first nanosecond the latest trade is from the minute before
    boundary = ny("2024-03-06", 10, 0)
    assert market.trade_at("AAPL", boundary).t < boundary
    with pytest.raises(KeyError):
        market.quote_at("NOSUCH", boundary)


def test_outside_the_data_window_the_last_session_answers():
    market = Market(seed=7, sessions=Sessions("calendar"), clock=Clock())
    saturday = ny("2024-03-09", 12)
    trade, quote = market.trade_at("MSFT", saturday), market.quote_at("MSFT", saturday)
    friday_end = ny("2024-03-08", 20)
    assert friday_end - MINUTE_NS <= trade.t < friday_end and quote.t < friday_end
    early = ny("2024-03-11", 3)                                  # Monday before the pre-market
    assert market.trade_at("MSFT", early).t < friday_end


def test_daily_bars_aggregate_regular_minutes_and_auction_prices(market):
    """In both modes the market trades NYSE sessions, and the daily bar covers the regular
    hours (as Alpaca's does): the aggregate of the 09:30-16:00 minutes."""
    day = dt.date(2024, 3, 6)
    bar, minutes = market.daily_bar("SPY", day), market.minute_bars("SPY", day)
    sess = market.sessions.session(day)
    first_regular = (sess.open - sess.premarket_open) // MINUTE_NS
    last_regular = (sess.close - sess.premarket_open) // MINUTE_NS - 1
    regular = minutes.take(slice(first_regular, last_regular + 1))
    assert bar.t == ny_midnight_ns(day)
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == (
        regular.o[0], regular.h.max(), regular.l.min(), regular.c[-1], regular.v.sum(), regular.n.sum())
    assert bar.low <= bar.vwap <= bar.high
    assert market.opening_price("SPY", day) == bar.open == minutes.o[first_regular]
    assert market.closing_price("SPY", day) == bar.close == minutes.c[last_regular]
    assert minutes.t[0] == ny("2024-03-06", 4) and minutes.t[-1] == ny("2024-03-06", 19, 59)
    assert minutes.t[first_regular] == ny("2024-03-06", 9, 30)
    assert minutes.t[last_regular] == ny("2024-03-06", 15, 59)
    assert len(minutes) == 960 and np.all(np.diff(minutes.t) == MINUTE_NS)
    # the extended hours: a few percent of the day's volume, fewer prints a minute, own prices
    extended = np.r_[0:first_regular, last_regular + 1:len(minutes)]
    assert 0.01 < minutes.v[extended].sum() / bar.volume < 0.2
    assert minutes.n[extended].mean() < regular.n.mean() / 5
    pre_close, post_open = minutes.c[first_regular - 1], minutes.o[last_regular + 1]
    assert abs(pre_close / bar.open - 1) < 0.01 and abs(post_open / bar.close - 1) < 0.01
    assert minutes.o[0] != bar.open and minutes.c[-1] != bar.close       # they move on their own
    assert market.daily_bar("SPY", dt.date(2024, 3, 9)) is None        # a Saturday
    assert not len(market.minute_bars("SPY", dt.date(2024, 3, 9)))
    early = market.sessions.session(dt.date(2024, 11, 29))
    bars = market.minute_bars("SPY", early.date)
    assert early.close == ny("2024-11-29", 13) and bars.t[-1] == ny("2024-11-29", 16, 59)
    assert market.closing_price("SPY", early.date) == bars.c[(early.close - early.premarket_open) // MINUTE_NS - 1]
    christmas = dt.date(2024, 12, 25)
    if market.mode == "calendar":
        assert market.opening_price("SPY", christmas) is None
    else:       # the engine trades on a holiday in always-open mode, at the last price
        assert market.opening_price("SPY", christmas) == market.trade_at("SPY", ny("2024-12-25", 0)).price
        live = market.trade_at("SPY", ny("2024-12-25", 12))              # the live present's tape
        assert ny("2024-12-25", 11, 59) <= live.t <= ny("2024-12-25", 12)
        assert not len(market.minute_bars("SPY", christmas))               # no history lists it


def test_both_modes_have_the_same_sessions():
    days = [dt.date(2024, 3, 6), dt.date(2024, 3, 9), dt.date(2024, 11, 29), dt.date(2024, 12, 25)]
    markets = [Market(seed=7, sessions=Sessions(mode), clock=Clock()) for mode in ("always-open", "calendar")]
    for day in days:
        a, b = (m.minute_bars("AAPL", day) for m in markets)
        assert np.array_equal(a.t, b.t)
        assert (markets[0].daily_bar("AAPL", day) is None) == (markets[1].daily_bar("AAPL", day) is None)
    one, other = (m.day_bars("AAPL", dt.date(2024, 3, 4), dt.date(2024, 3, 10))[1] for m in markets)
    assert np.array_equal(one.t, other.t) and len(one) == 5     # a week of daily bars: Monday to Friday


def test_prices_move_like_a_market_and_continue_across_days():
    market = Market(seed=7, sessions=Sessions("always-open"), clock=Clock())
    sessions, days = market.day_bars("AAPL", dt.date(2020, 1, 1), dt.date(2024, 12, 31))
    gaps = np.abs(np.log(days.o[1:] / days.c[:-1]))
    moves = np.abs(np.diff(np.log(days.c)))
    assert np.median(gaps) < np.median(moves) / 3            # the open is near the previous close
    returns = np.diff(np.log(days.c))
    assert 0.005 < returns.std() < 0.04                      # daily volatility of a large stock
    assert 20 < days.c.min() and days.c.max() < 2000
    for day in (dt.date(2021, 7, 1), dt.date(2024, 2, 29)):
        alone = market.daily_bar("AAPL", day)
        i = [s.date for s in sessions].index(day)
        assert alone == days.row(i)                          # one day alone = the same day in a range


def test_timeframe_grammar():
    for text, minutes in (("1Min", 1), ("59T", 59), ("1Hour", 60), ("23H", 1380)):
        assert Timeframe.parse(text).minutes == minutes
    for text in ("1Day", "1D", "1Week", "1W", "1Month", "2M", "3Month", "4M", "6Month", "12Month"):
        assert not Timeframe.parse(text).intraday
    for text in ("", "0Min", "60Min", "24Hour", "2Day", "2Week", "5Month", "13Month", "1min", "1Sec", "Min"):
        with pytest.raises(ValueError):
            Timeframe.parse(text)


# Sessions of every shape: DST switches, early closes, a holiday, year ends, a weekend.
EDGE_DAYS = [dt.date.fromisoformat(d) for d in (
    "2023-12-29", "2023-12-31", "2024-01-02", "2024-03-08", "2024-03-09", "2024-03-10", "2024-03-11",
    "2024-07-03", "2024-11-03", "2024-11-04", "2024-11-28", "2024-11-29", "2024-12-24", "2024-12-31")]


@pytest.mark.parametrize("mode", ["always-open", "calendar"])
def test_minutes_generated_together_are_the_minutes_generated_one_day_at_a_time(mode):
    together = Market(seed=11, sessions=Sessions(mode), clock=Clock())
    for symbol in ("AAPL", "ZOM", "BRK.B", "FAKEPACA"):          # ZOM trades under $1
        together.prefetch_minutes(symbol, EDGE_DAYS)
        for day in EDGE_DAYS:
            alone = Market(seed=11, sessions=Sessions(mode), clock=Clock()).minute_bars(symbol, day)
            batch = together.minute_bars(symbol, day)
            assert len(batch) == len(alone)
            for field in ("t", "o", "h", "l", "c", "v", "n", "vw"):
                assert np.array_equal(getattr(batch, field), getattr(alone, field)), (symbol, day, field)
            bar = together.daily_bar(symbol, day)          # the daily layer computed for a year
            if bar is None:
                assert not len(batch)
            else:
                sess = together.sessions.session(day)
                first = (sess.open - sess.premarket_open) // MINUTE_NS
                regular = batch.take(slice(first, first + (sess.close - sess.open) // MINUTE_NS))
                assert (regular.o[0], regular.c[-1], regular.v.sum()) == (bar.open, bar.close, bar.volume)


def _one_session_parts(inst, sess, bar) -> list[tuple]:
    """The parts of one session computed one value at a time, as the market first did (the
    reference for the vectorised ``Market._part_specs``)."""
    day = sess.date.toordinal()
    z = normal_at(inst.key ^ 0x5E55, np.array([[day * 8 + k for k in range(6)]])).T[:, 0]
    e = -np.log1p(-unit(hash_at(inst.key ^ 0x5E56, np.array([[day * 8 + k for k in range(4)]])))).T[:, 0]
    sig = inst.sigma
    rp = lambda x: float(round_price(np.array([x]))[0])
    ends = {PRE: (rp(bar.open * np.exp(0.4 * sig * z[0])), rp(bar.open * np.exp(0.05 * sig * z[1]))),
            POST: (rp(bar.close * np.exp(0.03 * sig * z[2])), rp(bar.close * np.exp(0.3 * sig * z[3])))}
    wiggle = {PRE: (e[0], e[1]), POST: (e[2], e[3])}
    share = {PRE: 0.03 * np.exp(0.4 * z[4] - 0.08), POST: 0.025 * np.exp(0.4 * z[5] - 0.08)}
    parts = []
    for segment in (PRE, REGULAR, POST):
        if segment == REGULAR:
            parts.append((key_of(inst.key, "minutes", day), sess.open, (sess.close - sess.open) // MINUTE_NS,
                          REGULAR, *bar[1:7]))
            continue
        first, last = (sess.premarket_open, sess.open) if segment == PRE else (sess.close, sess.postmarket_close)
        m = (last - first) // MINUTE_NS
        po, pc = ends[segment]
        up, down = wiggle[segment]
        high = max(rp(max(po, pc) * math.exp(0.15 * sig * up)), po, pc)
        low = min(rp(min(po, pc) * math.exp(-0.15 * sig * down)), po, pc)
        n = max(4 * m, round(bar.trade_count * share[segment]))
        parts.append((key_of(inst.key, segment, day), first, m, segment, po, high, low, pc,
                      max(round(bar.volume * share[segment]), 2 * n), n))
    return parts


@pytest.mark.parametrize("mode", ["always-open", "calendar"])
def test_the_parts_of_sessions_computed_together_are_those_of_each_session_alone(mode):
    market = Market(seed=11, sessions=Sessions(mode), clock=Clock())
    for symbol in ("AAPL", "ZOM", "BRK.B"):
        inst = market._inst(symbol)
        positions, sessions, daily = market._days(inst, EDGE_DAYS)
        assert [EDGE_DAYS[i] for i in positions] == [s.date for s in sessions] == \
            [d for d in EDGE_DAYS if market.sessions.session(d) is not None]
        specs = market._part_specs(inst, sessions, daily)
        expected = [part for k, sess in enumerate(sessions) for part in _one_session_parts(inst, sess, daily.row(k))]
        got = [tuple(getattr(spec, f.name) for f in dataclasses.fields(spec)) for spec in specs]
        assert got == expected
        for g, x in zip(got, expected):             # the same types, so the same JSON numbers
            assert [type(v) for v in g] == [type(v) for v in x]


def _reference_records(bars) -> bytes:
    """What the wire's bar records are: orjson's writing of plain dicts."""
    rows = [{"t": dt.datetime.fromtimestamp(int(t) // 10**9, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "o": float(o), "h": float(h), "l": float(low), "c": float(c), "v": int(v), "n": int(n),
             "vw": float(vw)}
            for t, o, h, low, c, v, n, vw in zip(bars.t, bars.o, bars.h, bars.l, bars.c, bars.v, bars.n, bars.vw)]
    return orjson.dumps(rows)[1:-1]


def test_bar_records_are_written_exactly_as_orjson_writes_them(market):
    from alpaca_nb.sandbox._barjson import bar_json
    from alpaca_nb.sandbox._bars import Bars

    cases = []
    for symbol in ("AAPL", "ZOM", "BRK.B"):
        minutes = market.intraday_bars(symbol, Timeframe.parse("1Min"), dt.date(2024, 3, 6), ny("2024-03-07", 0))
        cases += [minutes, minutes.take(slice(3, 4)), minutes.take(np.arange(0, len(minutes), 7)),
                  market.intraday_bars(symbol, Timeframe.parse("15Min"), dt.date(2024, 3, 6), ny("2024-03-07", 0)),
                  market.daily_bars(symbol, dt.date(2023, 1, 1), dt.date(2023, 12, 31), ny("2024-01-01", 0)),
                  market.period_bars(symbol, Timeframe.parse("1Month"), 2023, ny("2024-01-01", 0))]
    m = cases[0]
    big = Bars(m.t, m.o * 37.0, m.h * 37.0, m.l * 37.0, m.c * 37.0, m.v * 1000, m.n + 5000, m.vw)
    cases.append(big)                                    # a wide price range, counts past the table
    for bars in cases:
        assert bar_json(bars) == _reference_records(bars)
    empty = Bars(*(np.empty(0, dtype=getattr(m, f).dtype) for f in ("t", "o", "h", "l", "c", "v", "n", "vw")))
    assert bar_json(empty) == b""


def test_the_market_caches_forget_the_least_recently_used_entry_first():
    from alpaca_nb.sandbox._lru import Lru

    lru: Lru[str, int] = Lru(2)
    lru["a"], lru["b"] = 1, 2
    assert lru.get("a") == 1                 # "a" is now more recent than "b"
    assert "b" in lru                        # a membership test is not a use
    lru["c"] = 3
    assert ("a" in lru, "b" in lru, "c" in lru, len(lru)) == (True, False, True, 2)
    assert lru.get("b") is None
    lru["a"] = 4                             # storing is a use too
    lru["d"] = 5
    assert (lru.get("a"), lru.get("c"), lru.get("d")) == (4, None, 5)
