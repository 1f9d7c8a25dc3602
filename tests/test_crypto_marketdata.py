"""Crypto market data through the client, against a real sandbox: every helper accepts crypto
pairs and routes them to /v1beta3/crypto/{loc}; stocks and crypto mixed give one frame with the
same columns and dtypes; order books as a tidy frame; the bar cache keeps crypto's UTC days.
A recording proxy between client and sandbox shows which requests really happen."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import requests
from _http_proxy import RecordingProxy
from test_frames import assert_series_frame

import alpaca_nb as anb
from alpaca_nb import frames
from alpaca_nb._marketdata import CRYPTO_TRADE, ORDERBOOK_COLUMNS
from alpaca_nb.cache import BarCache, CacheKey
from alpaca_nb.sandbox import Sandbox

NOW = "2025-06-07T12:00:30Z"          # a Saturday: crypto trades, stocks do not
PAIRS = ["BTC/USD", "ETH/USD"]
BASE = "/v1beta3/crypto/us"


@pytest.fixture(scope="module")
def pinned():
    """Virtual time all but stopped at NOW (one nanosecond per wall second)."""
    with Sandbox(seed=7, start=NOW, speed=1e-9) as sb:
        yield sb


@pytest.fixture
def proxy(pinned):
    with RecordingProxy(pinned.url) as p:
        yield p


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(root))
    return root


def connect_via(proxy, sb):
    return anb.connect(base_url=proxy.url, data_url=proxy.url, key_id=sb.key_id, secret_key=sb.secret_key)


def rest_pages(sb, path, **params) -> dict[str, list[dict]]:
    """Every page of a crypto endpoint, straight from the sandbox (no keys, as on Alpaca)."""
    out: dict[str, list[dict]] = {}
    token = None
    while True:
        body = requests.get(sb.url + path, params=dict(params, **({"page_token": token} if token else {})),
                            timeout=30).json()
        key = next(k for k in ("bars", "trades", "quotes") if k in body)
        for symbol, records in body[key].items():
            out.setdefault(symbol, []).extend(records)
        token = body["next_page_token"]
        if token is None:
            return out


def test_crypto_bars_are_the_v1beta3_bars(pinned, proxy, cache_root):
    api = connect_via(proxy, pinned)
    df = api.bars(PAIRS, "1Hour", "2025-06-05T00:00:00Z", "2025-06-06T23:59:59Z", feed="iex",
                  adjustment="all")
    assert_series_frame(df, frames.BAR)
    expected = rest_pages(pinned, f"{BASE}/bars", symbols=",".join(PAIRS), timeframe="1Hour",
                          start="2025-06-05T00:00:00Z", end="2025-06-06T23:59:59Z")
    for pair in PAIRS:
        rows = df.loc[pair]
        assert len(rows) == len(expected[pair]) == 48            # 24/7: every hour of both days
        assert rows["close"].tolist() == [b["c"] for b in expected[pair]]
        assert rows["volume"].tolist() == [b["v"] for b in expected[pair]]
        assert [t.isoformat().replace("+00:00", "Z") for t in rows.index] == [b["t"] for b in expected[pair]]
    assert (df["volume"] % 1 != 0).any()                         # fractional volumes kept
    sent = [q for _, q in proxy.matching("GET", f"{BASE}/bars")]
    assert sent and all("feed" not in q and "adjustment" not in q for q in sent)   # stocks only
    assert proxy.matching("GET", "/v2/stocks/bars") == []


def test_mixed_stocks_and_crypto_give_one_frame(pinned, proxy, cache_root):
    api = connect_via(proxy, pinned)
    for cache in (False, True, True):                            # fresh, then written, then a hit
        mixed = api.bars(["AAPL", "BTC/USD", "MSFT"], "1Hour", "2025-06-05", "2025-06-06", cache=cache)
        assert_series_frame(mixed, frames.BAR)
        assert list(mixed.index.levels[0]) == ["AAPL", "BTC/USD", "MSFT"]
        assert mixed["volume"].dtype == np.float64
        pd.testing.assert_frame_equal(mixed.loc[["AAPL", "MSFT"]].copy(),
                                      api.bars(["AAPL", "MSFT"], "1Hour", "2025-06-05", "2025-06-06",
                                               cache=False).copy(), check_index_type=False)
        pd.testing.assert_frame_equal(mixed.loc[["BTC/USD"]].copy(),
                                      api.bars("BTC/USD", "1Hour", "2025-06-05", "2025-06-06",
                                               cache=False).copy(), check_index_type=False)
    assert len(mixed.loc["BTC/USD"]) == 48                       # two whole New York days, 24/7
    capped = api.bars(["AAPL", "BTC/USD"], "1Hour", "2025-06-05", "2025-06-06", limit=30)
    assert len(capped) == 30                                     # the limit counts both classes


def test_trades_and_quotes_mixed_keep_every_field(pinned, proxy, cache_root):
    api = connect_via(proxy, pinned)
    start, end = "2025-06-06T14:00:00Z", "2025-06-06T14:02:00Z"
    trades = api.trades(["AAPL", "BTC/USD"], start, end)
    assert_series_frame(trades, CRYPTO_TRADE)
    expected = rest_pages(pinned, f"{BASE}/trades", symbols="BTC/USD", start=start, end=end)["BTC/USD"]
    btc = trades.loc["BTC/USD"]
    assert len(btc) == len(expected) > 0
    assert btc["taker_side"].tolist() == [t["tks"] for t in expected]
    assert btc["size"].tolist() == [t["s"] for t in expected]
    assert btc["id"].tolist() == [t["i"] for t in expected]
    assert trades.loc["AAPL", "taker_side"].isna().all() and trades.loc["AAPL", "exchange"].notna().all()
    quotes = api.quotes(["BTC/USD", "AAPL"], start, end)
    assert_series_frame(quotes, frames.QUOTE)
    expected = rest_pages(pinned, f"{BASE}/quotes", symbols="BTC/USD", start=start, end=end)["BTC/USD"]
    assert quotes.loc["BTC/USD", "bid_price"].tolist() == [q["bp"] for q in expected]
    assert quotes.loc["BTC/USD", "ask_size"].tolist() == [q["as"] for q in expected]
    assert quotes.loc["BTC/USD", "bid_exchange"].isna().all()
    stock_trades = api.trades("AAPL", start, end)
    assert_series_frame(stock_trades, frames.TRADE)               # stocks alone: unchanged columns


def test_page_generators_route_crypto(pinned, proxy, cache_root):
    api = connect_via(proxy, pinned)
    pages = list(api.iter_bars(["ETH/USD", "AAPL", "BTC/USD"], "1Min", "2025-06-05", "2025-06-06"))
    assert len(pages) > 1
    whole = api.bars(["ETH/USD", "AAPL", "BTC/USD"], "1Min", "2025-06-05", "2025-06-06", cache=False)
    joined = pd.concat(pages).sort_index(level="symbol", sort_remaining=False, kind="stable")
    pd.testing.assert_frame_equal(joined, whole, check_index_type=False)
    for kind in ("trades", "quotes"):
        paged = list(getattr(api, f"iter_{kind}")("BTC/USD", "2025-06-06T14:00Z", "2025-06-06T16:00Z", limit=50))
        assert sum(map(len, paged)) == 50
        assert proxy.matching("GET", f"{BASE}/{kind}")
    assert_series_frame(paged[0], frames.QUOTE)


def test_latest_and_snapshots_mixed(pinned, proxy, cache_root):
    api = connect_via(proxy, pinned)
    symbols = ["BTC/USD", "AAPL", "NOPE/USD"]
    for kind, schema in (("bars", frames.BAR), ("trades", CRYPTO_TRADE), ("quotes", frames.QUOTE)):
        df = getattr(api, f"latest_{kind}")(symbols)
        assert list(df.index) == symbols
        assert list(df.columns) == [f.name for f in schema.fields]
        body = requests.get(f"{pinned.url}{BASE}/latest/{kind}", params={"symbols": "BTC/USD"}, timeout=10).json()
        record = body[kind]["BTC/USD"]
        assert df.loc["BTC/USD", "timestamp"] == pd.Timestamp(record["t"])
        assert df.loc["AAPL"].notna().any() and df.loc["NOPE/USD"].isna().all()
    snaps = api.snapshots(symbols)
    assert list(snaps.index) == symbols
    body = requests.get(f"{pinned.url}{BASE}/snapshots", params={"symbols": "BTC/USD"}, timeout=10).json()
    assert snaps.loc["BTC/USD", "daily_close"] == body["snapshots"]["BTC/USD"]["dailyBar"]["c"]
    assert snaps.loc["BTC/USD", "bid_price"] == body["snapshots"]["BTC/USD"]["latestQuote"]["bp"]
    assert pd.notna(snaps.loc["AAPL", "trade_price"]) and snaps.loc["NOPE/USD"].isna().all()
    assert proxy.matching("GET", f"{BASE}/snapshots") and proxy.matching("GET", "/v2/stocks/snapshots")


def test_orderbook_is_a_tidy_frame(pinned, proxy, cache_root):
    api = connect_via(proxy, pinned)
    book = api.orderbook(["ETH/USD", "BTC/USD", "NOPE/USD"])
    assert list(book.columns) == list(ORDERBOOK_COLUMNS)
    assert dict(book.dtypes) == {"symbol": frames.STR, "side": frames.STR, "level": np.int64,
                                 "price": np.float64, "size": np.float64,
                                 "timestamp": pd.DatetimeTZDtype("ns", "UTC")}
    assert list(dict.fromkeys(book["symbol"])) == ["ETH/USD", "BTC/USD"]      # asked order; no book: no rows
    body = requests.get(f"{pinned.url}{BASE}/latest/orderbooks", params={"symbols": "BTC/USD"}, timeout=10).json()
    raw = body["orderbooks"]["BTC/USD"]
    btc = book[book["symbol"] == "BTC/USD"]
    bids, asks = btc[btc["side"] == "bid"], btc[btc["side"] == "ask"]
    assert bids["price"].tolist() == [e["p"] for e in raw["b"]] and asks["size"].tolist() == [e["s"] for e in raw["a"]]
    assert bids["level"].tolist() == list(range(len(raw["b"]))) and len(raw["b"]) > 1
    assert bids["price"].is_monotonic_decreasing and asks["price"].is_monotonic_increasing
    assert bids["price"].iloc[0] < asks["price"].iloc[0]
    assert (btc["timestamp"] == pd.Timestamp(raw["t"])).all()
    empty = api.latest_orderbooks("NOPE/USD", tz="America/New_York")
    assert len(empty) == 0 and list(empty.columns) == list(ORDERBOOK_COLUMNS)
    assert empty["timestamp"].dtype == pd.DatetimeTZDtype("ns", "America/New_York")
    with pytest.raises(ValueError, match="crypto pairs only.*AAPL"):
        api.orderbook(["BTC/USD", "AAPL"])
    with pytest.raises(ValueError, match="loc must be one of"):
        api.orderbook("BTC/USD", loc="mars")


def test_other_locations_are_asked_for(pinned, proxy, cache_root):
    api = connect_via(proxy, pinned)
    df = api.latest_quotes("BTC/USD", loc="us-1")
    assert df["bid_price"].notna().all()
    assert proxy.matching("GET", "/v1beta3/crypto/us-1/latest/quotes")


def test_crypto_bar_cache_keeps_utc_days(pinned, proxy, cache_root):
    api = connect_via(proxy, pinned)
    first = api.bars(PAIRS, "1Min", "2025-06-05T00:00:00Z", "2025-06-06T23:59:00Z")
    assert len(first) == 2 * 2 * 1440
    files = sorted(cache_root.rglob("*.parquet"))
    key = CacheKey(files[0].parents[4].name, "crypto-us", "raw", "1Min")   # <server>/bars/<feed>/<adj>/<tf>
    assert files == sorted(BarCache(key).path(p) for p in PAIRS)
    entry = BarCache(key).load("BTC/USD")
    assert entry.days == {dt.date(2025, 6, 5).toordinal(), dt.date(2025, 6, 6).toordinal()}   # UTC days
    assert len(entry.times) == 2 * 1440
    proxy.clear()
    again = api.bars(PAIRS, "1Min", "2025-06-05T00:00:00Z", "2025-06-06T23:59:00Z")
    assert proxy.matching("GET", f"{BASE}/bars") == []             # served from the cache
    pd.testing.assert_frame_equal(again, first)
    fresh = api.bars(PAIRS, "1Min", "2025-06-05T00:00:00Z", "2025-06-06T23:59:00Z", cache=False)
    pd.testing.assert_frame_equal(again, fresh)
    proxy.clear()
    inner = api.bars("BTC/USD", "1Min", "2025-06-05T22:00:00Z", "2025-06-06T02:00:00Z")   # across UTC midnight
    assert proxy.matching("GET", f"{BASE}/bars") == [] and len(inner) == 4 * 60 + 1
    # today (the Saturday, UTC) is never cached: a request that reaches it fetches only today
    today = api.bars("BTC/USD", "1Min", "2025-06-06T00:00:00Z")
    starts = [q["start"] for _, q in proxy.matching("GET", f"{BASE}/bars") if "page_token" not in q]
    assert starts == ["2025-06-07T00:00:00Z"]
    assert today.index.get_level_values("timestamp").max() >= pd.Timestamp("2025-06-07", tz="UTC")
