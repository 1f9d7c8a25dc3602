"""Conformance: the official alpaca-py SDK, unchanged, against the sandbox's market data
(``url_override``): historical bars, trades and quotes across symbols and pages, latest values,
snapshots, ``.df``, and the msgpack data stream."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pandas as pd
import pytest
import requests
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.requests import (
    StockBarsRequest,
    StockLatestBarRequest,
    StockLatestQuoteRequest,
    StockLatestTradeRequest,
    StockQuotesRequest,
    StockSnapshotRequest,
    StockTradesRequest,
)
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from conftest import admin_headers, new_account

from alpaca_nb.sandbox import Sandbox

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def pinned():
    """A sandbox pinned at a fixed moment (real-time speed), so 'latest' values are known."""
    with Sandbox(start="2024-03-06T15:00:30Z") as sb:
        yield sb


def client(sb) -> StockHistoricalDataClient:
    return StockHistoricalDataClient(sb.key_id, sb.secret_key, url_override=sb.url)


def raw_pages(sb, path, **params):
    """Our own reading of every page: {symbol: [records]} and the number of pages."""
    out, pages, token = {}, 0, None
    while True:
        query = dict(params, **({"page_token": token} if token else {}))
        body = requests.get(sb.url + path, params=query, headers=admin_headers(sb), timeout=30).json()
        pages += 1
        key = next(k for k in ("bars", "trades", "quotes") if k in body)
        for symbol, records in body[key].items():
            out.setdefault(symbol, []).extend(records)
        token = body["next_page_token"]
        if token is None:
            return out, pages


def stamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_bars_across_symbols_and_pages_and_their_dataframe(sandbox):
    start, end = dt.datetime(2024, 3, 4, tzinfo=UTC), dt.datetime(2024, 3, 12, tzinfo=UTC)
    barset = client(sandbox).get_stock_bars(StockBarsRequest(
        symbol_or_symbols=["MSFT", "AAPL"], timeframe=TimeFrame.Minute, start=start, end=end,
        adjustment=Adjustment.ALL, feed=DataFeed.SIP))
    raw, pages = raw_pages(sandbox, "/v2/stocks/bars", symbols="AAPL,MSFT", timeframe="1Min",
                           start=start.isoformat(), end=end.isoformat(), limit=10000, adjustment="all")
    assert pages >= 2                        # the SDK had to follow next_page_token
    for symbol in ("AAPL", "MSFT"):
        bars = barset[symbol]
        assert len(bars) == len(raw[symbol]) == 6 * 960       # Monday to Monday, 04:00-20:00 ET
        for bar, rec in zip(bars[::97], raw[symbol][::97]):
            assert bar.timestamp == stamp(rec["t"])
            assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count, bar.vwap) == \
                (rec["o"], rec["h"], rec["l"], rec["c"], rec["v"], rec["n"], rec["vw"])
    df = barset.df
    assert list(df.index.names) == ["symbol", "timestamp"]
    assert list(df.columns) == ["open", "high", "low", "close", "volume", "trade_count", "vwap"]
    assert len(df) == 2 * 6 * 960 and str(df.index.levels[1].tz) == "UTC"
    assert df.loc["AAPL"]["high"].ge(df.loc["AAPL"]["low"]).all()


def test_daily_weekly_and_monthly_bars_through_the_sdk(sandbox):
    for timeframe in (TimeFrame.Day, TimeFrame.Week, TimeFrame(3, TimeFrameUnit.Month),
                      TimeFrame(4, TimeFrameUnit.Hour)):
        barset = client(sandbox).get_stock_bars(StockBarsRequest(
            symbol_or_symbols="SPY", timeframe=timeframe, start=dt.datetime(2023, 1, 1, tzinfo=UTC),
            end=dt.datetime(2023, 12, 31, tzinfo=UTC)))
        assert len(barset["SPY"]) > 0 and barset.df.index.names == ["symbol", "timestamp"]


def test_trades_and_quotes_across_pages(sandbox):
    start = dt.datetime(2024, 3, 4, 15, 0, tzinfo=UTC)
    end = start + dt.timedelta(minutes=45)
    trades = client(sandbox).get_stock_trades(StockTradesRequest(
        symbol_or_symbols=["SPY", "AAPL"], start=start, end=end))
    raw, pages = raw_pages(sandbox, "/v2/stocks/trades", symbols="AAPL,SPY", start=start.isoformat(),
                           end=end.isoformat(), limit=10000)
    assert pages >= 2
    for symbol in ("AAPL", "SPY"):
        assert [t.id for t in trades[symbol]] == [r["i"] for r in raw[symbol]]
        first = trades[symbol][0]
        rec = raw[symbol][0]
        assert (first.price, first.size, first.exchange, first.conditions, first.tape) == \
            (rec["p"], rec["s"], rec["x"], rec["c"], rec["z"])
    assert list(trades.df.columns) == ["exchange", "price", "size", "id", "conditions", "tape"]
    quotes = client(sandbox).get_stock_quotes(StockQuotesRequest(
        symbol_or_symbols="AAPL", start=start, end=start + dt.timedelta(minutes=2), limit=150))
    assert len(quotes["AAPL"]) == 150
    assert all(q.bid_price < q.ask_price and q.bid_size >= 100 for q in quotes["AAPL"])
    assert {"bid_price", "ask_price", "bid_size", "ask_size"} <= set(quotes.df.columns)


def test_latest_values_and_snapshots(pinned):
    c = client(pinned)
    quotes = c.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols=["AAPL", "MSFT"]))
    assert set(quotes) == {"AAPL", "MSFT"} and quotes["AAPL"].bid_price < quotes["AAPL"].ask_price
    trade = c.get_stock_latest_trade(StockLatestTradeRequest(symbol_or_symbols="AAPL"))["AAPL"]
    assert dt.datetime(2024, 3, 6, 15, 0, tzinfo=UTC) <= trade.timestamp <= dt.datetime(2024, 3, 6, 15, 5, tzinfo=UTC)
    bar = c.get_stock_latest_bar(StockLatestBarRequest(symbol_or_symbols="AAPL"))["AAPL"]
    assert bar.timestamp.minute in (59, 0) and bar.trade_count > 0
    snaps = c.get_stock_snapshot(StockSnapshotRequest(symbol_or_symbols=["AAPL", "SPY"]))
    snap = snaps["SPY"]
    assert snap.daily_bar.timestamp == dt.datetime(2024, 3, 6, 5, 0, tzinfo=UTC)
    assert snap.previous_daily_bar.timestamp == dt.datetime(2024, 3, 5, 5, 0, tzinfo=UTC)
    assert snap.latest_quote.bid_price < snap.latest_quote.ask_price
    assert snap.minute_bar.close > 0 and snap.latest_trade.price > 0


def test_the_sdk_stream_receives_quotes_trades_and_bars_and_stops_cleanly():
    with Sandbox(start="2024-03-06T14:59:40Z", speed=60) as sb:
        account = new_account(sb)
        stream = StockDataStream(account.key_id, account.secret_key, feed=DataFeed.IEX,
                                 url_override=sb.stream_url + "/v2/iex")
        got: dict[str, list] = {"quote": [], "trade": [], "bar": []}
        done = threading.Event()

        def record(kind):
            async def handler(item):
                got[kind].append(item)
                if all(got.values()):
                    done.set()
            return handler

        stream.subscribe_quotes(record("quote"), "AAPL")
        stream.subscribe_trades(record("trade"), "AAPL")
        stream.subscribe_bars(record("bar"), "AAPL", "MSFT")
        thread = threading.Thread(target=stream.run, daemon=True)
        thread.start()
        try:
            assert done.wait(15), {k: len(v) for k, v in got.items()}
        finally:
            stream.stop()
            thread.join(10)
        assert not thread.is_alive()
        quote, trade, bar = got["quote"][0], got["trade"][0], got["bar"][0]
        assert quote.symbol == "AAPL" and quote.bid_price < quote.ask_price
        assert trade.symbol == "AAPL" and trade.price > 0 and trade.timestamp.year == 2024
        assert bar.symbol in ("AAPL", "MSFT") and bar.timestamp.second == 0 and bar.vwap > 0
        # the streamed bar is the REST bar of that minute (or lacks one late-reported trade)
        rest = client(sb).get_stock_bars(StockBarsRequest(             # the stream's feed: IEX
            symbol_or_symbols=bar.symbol, timeframe=TimeFrame.Minute, start=bar.timestamp, end=bar.timestamp,
            feed=DataFeed.IEX))
        ref = rest[bar.symbol][0]
        assert (ref.open, ref.high, ref.low, ref.close) == (bar.open, bar.high, bar.low, bar.close)
        assert ref.trade_count - bar.trade_count in (0, 1)
        # the connection slot was released when the SDK closed its socket
        deadline = time.time() + 5
        while time.time() < deadline and requests.get(
                sb.url + "/sandbox/status", headers=admin_headers(sb), timeout=10).json()["connections"]["data"]:
            time.sleep(0.05)
        assert requests.get(sb.url + "/sandbox/status", headers=admin_headers(sb),
                            timeout=10).json()["connections"]["data"] == 0
        assert isinstance(pd.Timestamp(trade.timestamp), pd.Timestamp)
