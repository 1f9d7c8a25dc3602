"""The Excel formulas called as Excel calls them (2D lists, floats for integers, None for empty
cells, date serials), against a real sandbox over loopback; request counts come from a real
recording proxy between the client and the sandbox."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
from _http_proxy import RecordingProxy
from _xl_support import client_of, connect_to

import alpaca_nb as anb
from alpaca_nb import xl
from alpaca_nb.xl._cache import SnapshotCache
from alpaca_nb.xl._cells import serial_to_datetime

SYMBOLS = ["AAPL", "MSFT", "SPY", "NVDA"]


@pytest.fixture
def api(account):
    yield from client_of(account)


@pytest.fixture
def proxied(account):
    """A client whose every request passes a recording proxy."""
    with RecordingProxy(account.url) as proxy:
        client = connect_to(account, proxy.url)
        yield client, proxy
        client.close()
    xl.clear_caches()


class ManualClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def column(*values):
    return [[v] for v in values]


def is_error(value, *words):
    return isinstance(value, str) and value.startswith("#ALPACA! ") and all(w in value for w in words) \
        and "Traceback" not in value


# ------------------------------------------------------------------ BDP

def test_bdp_column_of_symbols_against_a_row_of_fields_fills_a_grid(api):
    grid = xl.ALPACA_BDP(column(*SYMBOLS), [["bid", "ask", "mid", "PX_LAST", "Change %", "prev close"]])
    assert len(grid) == len(SYMBOLS) and all(len(row) == 6 for row in grid)
    for row in grid:
        bid, ask, mid, last, change_pct, prev = row
        assert all(isinstance(v, float) for v in row)
        assert 0 < bid <= ask and mid == pytest.approx((bid + ask) / 2)
        assert change_pct == pytest.approx((last / prev - 1) * 100)


def test_bdp_symbols_in_a_row_run_across_and_one_cell_is_a_value(api):
    across = xl.ALPACA_BDP([SYMBOLS[:3]], column("bid", "ask_size"))
    assert len(across) == 2 and all(len(r) == 3 for r in across)
    assert all(isinstance(v, float) for r in across for v in r)
    single = xl.ALPACA_BDP([["AAPL"]], [["last"]])
    assert isinstance(single, float) and single > 0
    times = xl.ALPACA_BDP("AAPL", "trade_time")
    assert isinstance(times, dt.datetime) and times.tzinfo is None   # naive New York time for Excel
    assert is_error(xl.ALPACA_BDP([SYMBOLS[:2]], [["bid", "ask"]]), "both rows")


def test_bdp_errors_are_cell_text_and_missing_data_is_an_empty_cell(api):
    assert is_error(xl.ALPACA_BDP("AAPL", "bdi"), "unknown field 'bdi'")
    assert is_error(xl.ALPACA_BDP("AA PL", "bid"), "symbols")
    assert is_error(xl.ALPACA_BDP(None, "bid"), "symbols is empty")
    assert is_error(xl.ALPACA_BDP("AAPL", [[None]]), "fields is empty")
    assert is_error(xl.ALPACA_BDP("AAPL", "bid", "Feed=nasdaq"), "Feed", "iex")
    assert is_error(xl.ALPACA_BDP("AAPL", "bid", "Colour=red"), "unknown option 'Colour'")
    # a well-formed symbol the market does not know: empty cells, not an error
    assert xl.ALPACA_BDP(column("AAPL", "QQQQZ"), [["bid", "last"]])[1] == [None, None]


def test_bdp_cache_one_request_per_grid_and_none_within_the_interval(proxied, monkeypatch):
    _api, proxy = proxied
    clock = ManualClock()
    monkeypatch.setattr(xl, "_snapshots", SnapshotCache(5.0, clock=clock))
    fields = ["bid", "ask", "last", "volume", "change_pct"]

    def per_cell_sheet():
        return [[xl.ALPACA_BDP([[s]], [[f]]) for f in fields] for s in SYMBOLS]

    def snapshot_requests():
        return proxy.count("GET", "/v2/stocks/snapshots")

    cold = per_cell_sheet()                      # 20 formulas, one per cell
    assert snapshot_requests() == len(SYMBOLS)   # one request per new symbol, not per cell
    again = per_cell_sheet()                     # a recalculation storm within the interval
    assert again == cold and snapshot_requests() == len(SYMBOLS)
    clock.now += 6                               # the values went stale: the whole working set
    per_cell_sheet()                             # is refreshed by the first formula, at once
    assert snapshot_requests() == len(SYMBOLS) + 1
    xl.ALPACA_BDP(column(*SYMBOLS), [fields])    # the grid formula: served from the cache
    assert snapshot_requests() == len(SYMBOLS) + 1
    clock.now += 6
    xl.ALPACA_BDP(column(*SYMBOLS), [fields])
    assert snapshot_requests() == len(SYMBOLS) + 2
    asked = proxy.matching("GET", "/v2/stocks/snapshots")[-1][1]["symbols"].split(",")
    assert sorted(asked) == sorted(SYMBOLS)
    xl._snapshots.expire()                       # what the Refresh button does first
    per_cell_sheet()
    assert snapshot_requests() == len(SYMBOLS) + 3


# ------------------------------------------------------------------ BDH

def test_bdh_header_row_types_and_date_serials(api):
    serial = 45962.0                              # 2025-11-01 in Excel's 1900 date system
    table = xl.ALPACA_BDH([["AAPL"]], [["close", "PX_VOLUME"]], serial, serial + 6)
    assert table[0] == ["timestamp", "close", "PX_VOLUME"]
    stamps = [row[0] for row in table[1:]]
    # NYSE sessions: Saturday 1 and Sunday 2 have no bar; the end day counts in full
    assert stamps[0] == dt.datetime(2025, 11, 3) and stamps[-1] == dt.datetime(2025, 11, 7)
    assert stamps == sorted(stamps) and len(stamps) == 5
    assert all(isinstance(v, float) for row in table[1:] for v in row[1:])
    frame = api.bars("AAPL", "1Day", "2025-11-01", "2025-11-07")
    assert [row[1] for row in table[1:]] == frame["close"].tolist()
    # the same dates as text, as date cells and as datetimes give the same table
    assert xl.ALPACA_BDH("AAPL", [["close", "PX_VOLUME"]], "2025-11-01", "2025-11-07") == table
    assert xl.ALPACA_BDH("AAPL", [["close", "PX_VOLUME"]], dt.datetime(2025, 11, 1),
                         [[dt.datetime(2025, 11, 7)]]) == table
    assert xl.ALPACA_BDH("AAPL", [["close", "PX_VOLUME"]], dt.date(2025, 11, 1), dt.date(2025, 11, 7)) == table


def test_bdh_intraday_serial_with_a_time_of_day_is_new_york_time(api):
    start = 45966.0 + 10.5 / 24                   # 2025-11-05 10:30 New York
    table = xl.ALPACA_BDH("AAPL", "close", start, start + 4 / 1440, "Per", "1Min")
    assert [row[0] for row in table[1:]] == [dt.datetime(2025, 11, 5, 10, 30 + i) for i in range(5)]
    utc = xl.ALPACA_BDH("AAPL", "close", start, start + 4 / 1440, "Per=1Min", "Tz=UTC")
    assert utc[1][0] == dt.datetime(2025, 11, 5, 15, 30)


def test_bdh_options_sort_headers_layout(api):
    args = ([["AAPL"], ["MSFT"]], [["close"]], "2025-11-03", "2025-11-05")
    side = xl.ALPACA_BDH(*args)
    assert side[0] == ["timestamp", "AAPL close", "MSFT close"] and len(side) == 4
    desc = xl.ALPACA_BDH(*args, "Sort=desc")
    assert desc[0] == side[0] and desc[1:] == side[1:][::-1]
    assert xl.ALPACA_BDH(*args, "Headers=N") == side[1:]
    stacked = xl.ALPACA_BDH(*args, [["Layout=stacked", None]])   # options may come as a range
    assert stacked[0] == ["symbol", "timestamp", "close"]
    assert [r[0] for r in stacked[1:]] == ["AAPL"] * 3 + ["MSFT"] * 3
    assert [r[2] for r in stacked[1:4]] == [r[1] for r in side[1:]]
    weekly = xl.ALPACA_BDH("AAPL", "close", "2025-09-01", "2025-10-31", "Per=W")
    assert 8 <= len(weekly) - 1 <= 10


def test_bdh_fill_prev_carries_values_over_gaps():
    idx = pd.MultiIndex.from_tuples(
        [("AAPL", pd.Timestamp("2025-11-03 05:00", tz="UTC")), ("AAPL", pd.Timestamp("2025-11-04 05:00", tz="UTC")),
         ("MSFT", pd.Timestamp("2025-11-03 05:00", tz="UTC"))], names=["symbol", "timestamp"])
    frame = pd.DataFrame({"close": [1.0, 2.0, 10.0]}, index=idx)
    plain = xl._bdh_rows(frame, ["AAPL", "MSFT"], ["close"], ["close"], tz="America/New_York",
                         descending=False, fill=False, stacked=False, headers=True)
    assert plain[2] == [dt.datetime(2025, 11, 4), 2.0, None]
    filled = xl._bdh_rows(frame, ["AAPL", "MSFT"], ["close"], ["close"], tz="America/New_York",
                          descending=False, fill=True, stacked=False, headers=True)
    assert filled[2] == [dt.datetime(2025, 11, 4), 2.0, 10.0]


def test_bdh_bad_arguments_name_the_argument(api):
    assert is_error(xl.ALPACA_BDH("AAPL", "close", None, None), "start is empty")
    assert is_error(xl.ALPACA_BDH("AAPL", "close", "2025-11-05", "2025-11-01"), "end is before start")
    assert is_error(xl.ALPACA_BDH("AAPL", "close", "yesterday-ish", None), "start=")
    assert is_error(xl.ALPACA_BDH("AAPL", "close", -3.0, None), "start=", "serial")
    assert is_error(xl.ALPACA_BDH("AAPL", "close", True, None), "start must be a date")
    assert is_error(xl.ALPACA_BDH("AAPL", "bdi", "2025-11-01", None), "unknown field 'bdi'")
    assert is_error(xl.ALPACA_BDH("AAPL", "close", "2025-11-01", None, "Per=7Fortnights"), "option Per")
    assert is_error(xl.ALPACA_BDH("AAPL", "close", "2025-11-01", None, "Per"), "option 'Per' has no value")
    assert is_error(xl.ALPACA_BDH("AAPL", "close", "2025-11-01", None, "Per=1Day", "per=1Min"), "twice")
    assert is_error(xl.ALPACA_BDH("AAPL", "close", [["2025-11-01", "2025-11-02"]], None), "start must be a single cell")


def test_bdh_empty_result_is_the_header_row_or_an_empty_cell(api):
    assert xl.ALPACA_BDH("QQQQZ", "close", "2025-11-03", "2025-11-05") == [["timestamp", "close"]]
    assert xl.ALPACA_BDH("QQQQZ", "close", "2025-11-03", "2025-11-05", "Headers=N") is None


def test_bdh_reuses_the_on_disk_bar_cache(proxied):
    _api, proxy = proxied
    first = xl.ALPACA_BDH(column("AAPL", "MSFT"), "close", "2025-10-01", "2025-10-31")
    downloads = proxy.count("GET", "/v2/stocks/bars")
    assert downloads >= 1
    assert xl.ALPACA_BDH(column("AAPL", "MSFT"), "close", "2025-10-01", "2025-10-31") == first
    assert proxy.count("GET", "/v2/stocks/bars") == downloads     # the short cache
    xl.clear_caches()
    assert xl.ALPACA_BDH(column("AAPL", "MSFT"), "close", "2025-10-01", "2025-10-31") == first
    assert proxy.count("GET", "/v2/stocks/bars") == downloads     # finished days: the disk cache


# ------------------------------------------------------------------ BDS

def test_bds_account_positions_orders_and_clock(api):
    account = xl.ALPACA_BDS("account")
    assert account[0] == ["field", "value"] and xl.ALPACA_BDS("mode") == "sandbox"
    values = {r[0]: r[1] for r in account[1:]}
    assert values["cash"] == 100_000.0 and isinstance(values["buying_power"], float)
    assert "id" not in values
    assert xl.ALPACA_BDS("positions") == [["symbol", *api.positions().columns]]   # empty: header only
    api.buy("AAPL", 3)
    xl.clear_caches()
    positions = xl.ALPACA_BDS("positions")
    assert positions[1][0] == "AAPL" and positions[1][1] == 3.0
    orders = xl.ALPACA_BDS("orders", "Status=all", "Limit", 5.0)
    assert orders[0][:3] == ["id", "client_order_id", "symbol"] and orders[1][2] == "AAPL"
    clock = {r[0]: r[1] for r in xl.ALPACA_BDS([["clock"]], "Headers=N")}
    assert clock["is_open"] is True and isinstance(clock["timestamp"], dt.datetime)
    calendar = xl.ALPACA_BDS("calendar", "Start=2025-11-03", "End", 45967.0)
    assert [r[0] for r in calendar[1:]] == [dt.datetime(2025, 11, d) for d in (3, 4, 5, 6)]


def test_bds_bad_arguments(api):
    assert is_error(xl.ALPACA_BDS("portfolio"), "what='portfolio'", "positions")
    assert is_error(xl.ALPACA_BDS("orders", "Status=pending"), "Status", "open")
    assert is_error(xl.ALPACA_BDS("orders", "Limit=-1"), "Limit")
    assert is_error(xl.ALPACA_BDS("positions", "Status=open"), "unknown option 'Status'")


def test_server_errors_are_readable_cell_text(account):
    xl.clear_caches()
    anb.connect(base_url=account.url, data_url=account.url, key_id=account.key_id, secret_key="wrong")
    try:
        assert xl.ALPACA_BDS("account") == "#ALPACA! request is not authorized"
        assert is_error(xl.ALPACA_BDP("AAPL", "bid"))
    finally:
        xl.clear_caches()


# ------------------------------------------------------------------ arguments

@pytest.mark.parametrize("serial, expected", [
    (1, dt.datetime(1900, 1, 1)), (59, dt.datetime(1900, 2, 28)), (61, dt.datetime(1900, 3, 1)),
    (45292.5, dt.datetime(2024, 1, 1, 12)), (45292.0 + 1 / 86400, dt.datetime(2024, 1, 1, 0, 0, 1)),
    (2958465.0, dt.datetime(9999, 12, 31)),
])
def test_date_serials(serial, expected):
    assert serial_to_datetime(serial) == expected


@pytest.mark.parametrize("bad", [0, -1.0, 2958466.0, math.nan, True])
def test_bad_date_serials_name_the_argument(bad):
    with pytest.raises(ValueError, match="start="):
        serial_to_datetime(bad, name="start")


def test_formulas_are_paced_by_the_clients_own_limiters(account):
    """Market-data formulas count against the client's data limiter, tables against its trading
    limiter: the formulas have no limiter of their own that a download could bypass."""
    api = connect_to(account, rate_limit={"trading": 50, "data": 50})
    limiters = api._transport.limiters
    try:
        used = {name: len(limiter._done) + limiter._in_flight for name, limiter in limiters.items()}
        assert isinstance(xl.ALPACA_BDP([["AAPL"], ["MSFT"]], [["last"]]), list)
        assert isinstance(xl.ALPACA_BDP([["AAPL"], ["MSFT"]], [["last"]]), list)   # from the cache
        assert len(limiters["data"]._done) == used["data"] + 1
        assert isinstance(xl.ALPACA_BDS("account"), list)
        assert len(limiters["trading"]._done) == used["trading"] + 1
        assert len(limiters["data"]._done) == used["data"] + 1
    finally:
        api.close()
