"""Crypto market data of the sandbox (v1beta3, protocol 4.5): the assets, the 24/7 market's
consistency across timeframes, pagination like stocks, keys optional, and the official alpaca-py
``CryptoHistoricalDataClient`` unchanged (``url_override``) on every endpoint, ``.df`` included."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
from alpaca.data.historical import CryptoHistoricalDataClient
from alpaca.data.requests import (
    CryptoBarsRequest,
    CryptoLatestBarRequest,
    CryptoLatestOrderbookRequest,
    CryptoLatestQuoteRequest,
    CryptoLatestTradeRequest,
    CryptoQuoteRequest,
    CryptoSnapshotRequest,
    CryptoTradesRequest,
)
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from conftest import admin_headers

from alpaca_nb.sandbox import Sandbox

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 6, 7, 12, 0, 30, tzinfo=UTC)      # a Saturday
BASE = "/v1beta3/crypto/us"


@pytest.fixture(scope="module")
def pinned():
    """Virtual time all but stopped at NOW (one nanosecond per wall second)."""
    with Sandbox(start=NOW.isoformat(), speed=1e-9) as sb:
        yield sb


def get(sb, path, **params):
    resp = requests.get(sb.url + path, params=params, timeout=30)
    return resp


def pages(sb, path, **params):
    """Every page, without keys: ({symbol: [records]}, number of pages)."""
    out, count, token = {}, 0, None
    while True:
        query = dict(params, **({"page_token": token} if token else {}))
        body = get(sb, path, **query).json()
        count += 1
        key = next(k for k in ("bars", "trades", "quotes") if k in body)
        for symbol, records in body[key].items():
            out.setdefault(symbol, []).extend(records)
        token = body["next_page_token"]
        if token is None:
            return out, count


def stamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# ---------------------------------------------------------------- assets

def test_crypto_assets_listed_by_class_and_found_by_pair_or_legacy_symbol(pinned):
    headers = admin_headers(pinned)
    crypto = requests.get(pinned.url + "/v2/assets", params={"asset_class": "crypto"},
                          headers=headers, timeout=10).json()
    symbols = {a["symbol"] for a in crypto}
    assert len([s for s in symbols if s.endswith("/USD")]) >= 20
    assert {"BTC/USD", "ETH/USD", "SOL/USD", "LTC/USD", "DOGE/USD", "AVAX/USD", "LINK/USD",
            "USDT/USD", "BTC/USDT", "ETH/USDC" if "ETH/USDC" in symbols else "BTC/USDC",
            "ETH/BTC"} <= symbols
    for asset in crypto:
        assert asset["class"] == "crypto" and asset["exchange"] == "CRYPTO"
        assert asset["fractionable"] is True
        assert asset["shortable"] is False and asset["marginable"] is False
        for key in ("min_order_size", "min_trade_increment", "price_increment"):
            assert float(asset[key]) > 0
    stocks = requests.get(pinned.url + "/v2/assets", headers=headers, timeout=10).json()
    assert stocks and not {a["symbol"] for a in stocks} & symbols      # default class: us_equity
    for path in ("BTC%2FUSD", "BTC/USD", "BTCUSD", "btcusd"):
        asset = requests.get(f"{pinned.url}/v2/assets/{path}", headers=headers, timeout=10).json()
        assert asset["symbol"] == "BTC/USD", path
    by_id = requests.get(f"{pinned.url}/v2/assets/{asset['id']}", headers=headers, timeout=10).json()
    assert by_id["symbol"] == "BTC/USD"
    missing = requests.get(f"{pinned.url}/v2/assets/NOPE%2FUSD", headers=headers, timeout=10)
    assert missing.status_code == 404


# ---------------------------------------------------------------- the market

def test_keys_are_optional_but_wrong_keys_are_refused(pinned):
    assert get(pinned, BASE + "/latest/trades", symbols="BTC/USD").status_code == 200
    ok = requests.get(pinned.url + BASE + "/latest/trades", params={"symbols": "BTC/USD"},
                      headers=admin_headers(pinned), timeout=10)
    assert ok.status_code == 200
    wrong = requests.get(pinned.url + BASE + "/latest/trades", params={"symbols": "BTC/USD"},
                         headers={"APCA-API-KEY-ID": "nobody", "APCA-API-SECRET-KEY": "x"}, timeout=10)
    assert wrong.status_code == 401
    assert get(pinned, "/v1beta3/crypto/mars/latest/trades", symbols="BTC/USD").status_code == 404
    assert get(pinned, "/v2/stocks/trades/latest", symbols="AAPL").status_code == 401


def test_every_minute_of_a_weekend_day_and_bars_are_exact_aggregates_of_their_minutes(pinned):
    minutes, _ = pages(pinned, BASE + "/bars", symbols="BTC/USD,ETH/BTC", timeframe="1Min",
                       start="2025-06-06T00:00:00Z", end="2025-06-06T23:59:59Z", limit=10000)
    days, _ = pages(pinned, BASE + "/bars", symbols="BTC/USD,ETH/BTC", timeframe="1Day",
                    start="2025-06-06", end="2025-06-06")
    hours, _ = pages(pinned, BASE + "/bars", symbols="BTC/USD", timeframe="4Hour",
                     start="2025-06-06", end="2025-06-06")
    for symbol in ("BTC/USD", "ETH/BTC"):
        mins = minutes[symbol]
        assert len(mins) == 1440               # 24/7: a Friday like any day, UTC midnight to midnight
        assert mins[0]["t"] == "2025-06-06T00:00:00Z" and mins[-1]["t"] == "2025-06-06T23:59:00Z"
        (day,) = days[symbol]
        assert day["t"] == "2025-06-06T00:00:00Z"
        assert day["o"] == mins[0]["o"] and day["c"] == mins[-1]["c"]
        assert day["h"] == max(m["h"] for m in mins) and day["l"] == min(m["l"] for m in mins)
        assert day["n"] == sum(m["n"] for m in mins)
        assert day["v"] == pytest.approx(sum(m["v"] for m in mins), rel=1e-12)
        assert any(m["v"] != int(m["v"]) for m in mins)         # fractional volumes
    assert [h["t"][11:16] for h in hours["BTC/USD"]] == ["00:00", "04:00", "08:00", "12:00", "16:00", "20:00"]
    second = hours["BTC/USD"][1]
    part = minutes["BTC/USD"][240:480]
    assert (second["o"], second["c"], second["n"]) == (part[0]["o"], part[-1]["c"], sum(m["n"] for m in part))
    saturday, _ = pages(pinned, BASE + "/bars", symbols="SOL/USD", timeframe="1Min", start="2025-06-07")
    assert len(saturday["SOL/USD"]) == 12 * 60          # up to the pinned now (12:00:30 UTC)
    assert saturday["SOL/USD"][-1]["t"] == "2025-06-07T11:59:00Z"


def test_pages_split_exactly_like_one_big_answer_in_both_orders(pinned):
    params = dict(symbols="ETH/USD,BTC/USD", start="2025-06-07T11:00:00Z", end="2025-06-07T11:20:00Z")
    for kind in ("trades", "quotes"):
        whole, one = pages(pinned, f"{BASE}/{kind}", limit=10000, **params)
        small, many = pages(pinned, f"{BASE}/{kind}", limit=97, **params)
        assert one == 1 and many > 3
        assert small == whole and list(whole) == ["BTC/USD", "ETH/USD"]
        desc, _ = pages(pinned, f"{BASE}/{kind}", limit=101, sort="desc", **params)
        assert {s: r[::-1] for s, r in desc.items()} == whole
    for t in whole["BTC/USD"]:
        assert t["bp"] < t["ap"] and t["bs"] > 0 and t["as"] > 0
    trades, _ = pages(pinned, BASE + "/trades", limit=10000, **params)
    sides = {t["tks"] for t in trades["BTC/USD"]}
    assert sides == {"B", "S"}
    assert set(trades["BTC/USD"][0]) == {"t", "p", "s", "i", "tks"}
    ids = [t["i"] for t in trades["BTC/USD"]]
    assert ids == sorted(set(ids))


def test_quotes_trades_and_the_order_book_agree(pinned):
    trades, _ = pages(pinned, BASE + "/trades", symbols="LTC/USD", start="2025-06-07T10:00:00Z",
                      end="2025-06-07T10:05:00Z")
    quotes, _ = pages(pinned, BASE + "/quotes", symbols="LTC/USD", start="2025-06-07T10:00:00Z",
                      end="2025-06-07T10:05:00Z")
    assert len(trades["LTC/USD"]) == len(quotes["LTC/USD"])     # one quote just before each trade
    for trade, quote in zip(trades["LTC/USD"], quotes["LTC/USD"]):
        assert stamp(quote["t"]) <= stamp(trade["t"])
        assert trade["p"] == (quote["ap"] if trade["tks"] == "B" else quote["bp"])
    latest_quote = get(pinned, BASE + "/latest/quotes", symbols="LTC/USD").json()["quotes"]["LTC/USD"]
    book = get(pinned, BASE + "/latest/orderbooks", symbols="LTC/USD,NOPE/USD").json()["orderbooks"]
    assert list(book) == ["LTC/USD"]
    bids, asks = book["LTC/USD"]["b"], book["LTC/USD"]["a"]
    assert len(bids) >= 5 and len(asks) >= 5
    assert (bids[0]["p"], bids[0]["s"], asks[0]["p"], asks[0]["s"]) == (
        latest_quote["bp"], latest_quote["bs"], latest_quote["ap"], latest_quote["as"])
    assert [b["p"] for b in bids] == sorted((b["p"] for b in bids), reverse=True)
    assert [a["p"] for a in asks] == sorted(a["p"] for a in asks)
    assert bids[0]["p"] < asks[0]["p"]
    assert book["LTC/USD"]["t"] == latest_quote["t"]


def test_errors_are_the_stock_endpoints_400s(pinned):
    cases = [
        ({"symbols": "BTC/USD", "timeframe": "7Day"}, "invalid timeframe"),
        ({"symbols": "BTC/USD"}, "query parameter 'timeframe' is required"),
        ({"timeframe": "1Min"}, "query parameter 'symbols' is required"),
        ({"symbols": "BTC/USD", "timeframe": "1Min", "limit": "0"}, "invalid limit"),
        ({"symbols": "BTC/USD", "timeframe": "1Min", "start": "2025-06-07", "end": "2025-06-06"},
         "end should not be before start"),
        ({"symbols": "BTC/USD", "timeframe": "1Min", "page_token": "bm9wZQ=="}, "invalid page token"),
    ]
    for params, text in cases:
        resp = get(pinned, BASE + "/bars", **params)
        assert resp.status_code == 400 and text in resp.json()["message"], (params, resp.text)
    empty = get(pinned, BASE + "/bars", symbols="NOPE/USD", timeframe="1Min").json()
    assert empty == {"bars": {}, "next_page_token": None}


# ---------------------------------------------------------------- alpaca-py, unchanged

def test_alpaca_py_crypto_historical_client_reads_every_endpoint(pinned):
    client = CryptoHistoricalDataClient(url_override=pinned.url)          # no keys, as on Alpaca
    start, end = dt.datetime(2025, 6, 1, tzinfo=UTC), dt.datetime(2025, 6, 7, 12, tzinfo=UTC)
    barset = client.get_crypto_bars(CryptoBarsRequest(
        symbol_or_symbols=["ETH/USD", "BTC/USD"], timeframe=TimeFrame.Minute, start=start, end=end))
    raw, count = pages(pinned, BASE + "/bars", symbols="BTC/USD,ETH/USD", timeframe="1Min",
                       start=start.isoformat(), end=end.isoformat(), limit=10000)
    assert count >= 2
    for symbol in ("BTC/USD", "ETH/USD"):
        assert len(barset[symbol]) == len(raw[symbol]) == 6 * 1440 + 12 * 60   # 12:00 has not closed yet
        for bar, rec in zip(barset[symbol][::211], raw[symbol][::211]):
            assert bar.timestamp == stamp(rec["t"])
            assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count, bar.vwap) == \
                (rec["o"], rec["h"], rec["l"], rec["c"], rec["v"], rec["n"], rec["vw"])
    df = barset.df
    assert list(df.index.names) == ["symbol", "timestamp"] and len(df) == 2 * len(raw["BTC/USD"])
    assert df["volume"].dtype == "float64"

    days = client.get_crypto_bars(CryptoBarsRequest(
        symbol_or_symbols="SOL/USD", timeframe=TimeFrame(1, TimeFrameUnit.Day),
        start=dt.datetime(2025, 5, 1, tzinfo=UTC))).df
    assert len(days) == 38 and days.index[-1][1] == dt.datetime(2025, 6, 7, tzinfo=UTC)

    trades = client.get_crypto_trades(CryptoTradesRequest(
        symbol_or_symbols="BTC/USD", start=dt.datetime(2025, 6, 7, 11, tzinfo=UTC), end=end))
    raw_trades, _ = pages(pinned, BASE + "/trades", symbols="BTC/USD",
                          start="2025-06-07T11:00:00Z", end="2025-06-07T12:00:00Z", limit=10000)
    assert [t.id for t in trades["BTC/USD"]] == [t["i"] for t in raw_trades["BTC/USD"]]
    assert trades.df["size"].dtype == "float64"
    quotes = client.get_crypto_quotes(CryptoQuoteRequest(
        symbol_or_symbols="BTC/USD", start=dt.datetime(2025, 6, 7, 11, 30, tzinfo=UTC), limit=250))
    assert len(quotes["BTC/USD"]) == 250
    assert all(q.bid_price < q.ask_price for q in quotes["BTC/USD"])

    latest_bar = client.get_crypto_latest_bar(CryptoLatestBarRequest(symbol_or_symbols=["BTC/USD"]))
    assert latest_bar["BTC/USD"].timestamp == dt.datetime(2025, 6, 7, 11, 59, tzinfo=UTC)
    latest_trade = client.get_crypto_latest_trade(CryptoLatestTradeRequest(symbol_or_symbols="BTC/USD"))
    latest_quote = client.get_crypto_latest_quote(CryptoLatestQuoteRequest(symbol_or_symbols="BTC/USD"))
    assert latest_trade["BTC/USD"].timestamp <= NOW and latest_quote["BTC/USD"].timestamp <= NOW
    books = client.get_crypto_latest_orderbook(CryptoLatestOrderbookRequest(
        symbol_or_symbols=["BTC/USD", "ETH/USD"]))
    book = books["BTC/USD"]
    assert book.bids[0].price == latest_quote["BTC/USD"].bid_price
    assert book.asks[0].price == latest_quote["BTC/USD"].ask_price
    assert len(books["ETH/USD"].bids) >= 5

    snaps = client.get_crypto_snapshot(CryptoSnapshotRequest(symbol_or_symbols=["BTC/USD", "ETH/BTC"]))
    snap = snaps["BTC/USD"]
    assert snap.latest_trade.price == latest_trade["BTC/USD"].price
    assert snap.minute_bar.timestamp == latest_bar["BTC/USD"].timestamp
    assert snap.daily_bar.timestamp == dt.datetime(2025, 6, 7, tzinfo=UTC)
    assert snap.previous_daily_bar.timestamp == dt.datetime(2025, 6, 6, tzinfo=UTC)
    assert snap.daily_bar.close == snap.minute_bar.close
    assert snaps["ETH/BTC"].latest_quote.bid_price < 1
