"""Crypto pairs in ``api.stream(...)`` against a real sandbox: "BTC/USD" travels on the crypto
stream (/v1beta3/crypto/us), "AAPL" on the stock stream, and one set of tables shows both; each
endpoint has one connection per process however many views use it.
"""

from __future__ import annotations

import threading

import pytest
from _stream_helpers import FAST, connect, counts, server_connections, wait_for
from conftest import new_account

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream import open_hubs


@pytest.fixture(scope="module")
def fast():
    with Sandbox(**FAST) as sb:
        yield sb


@pytest.fixture
def api(fast):
    return connect(new_account(fast))


def _mine(api):
    return [h for h in open_hubs() if h.key_id == api.settings.key_id]


def test_a_mixed_stream_fills_one_table_from_two_sockets(api, fast):
    threads_before = {t.ident for t in threading.enumerate()}
    with api.stream(quotes=["BTC/USD", "AAPL"], trades=["ETH/USD"]) as s:
        assert s.status.connected
        assert set(s.connections) == {"data", "crypto"}
        assert sorted(h.url.rsplit("/", 3)[-3:][-1] for h in _mine(api)) == ["iex", "us"]
        assert s.subscriptions == {"quotes": ["BTC/USD", "AAPL"], "trades": ["ETH/USD"]}
        wait_for(lambda: all(v >= 2 for v in counts(s, ["BTC/USD", "AAPL", "ETH/USD"]).values()), 30,
                 "updates for the stock and both crypto pairs")
        table = s.table.df
        assert list(table.index) == ["BTC/USD", "AAPL", "ETH/USD"]
        assert (table.loc[["BTC/USD", "AAPL"], "bid_price"] < table.loc[["BTC/USD", "AAPL"], "ask_price"]).all()
        assert table.loc["BTC/USD", "bid_price"] > 1000            # a bitcoin price, not a stock's
        assert table.loc["ETH/USD", "last_price"] > 0
        quotes = s.quotes.df
        assert list(quotes.index) == ["BTC/USD", "AAPL"]
        assert quotes.dtypes.equals(api.latest_quotes(["BTC/USD", "AAPL"]).dtypes)
        assert s.table["BTC/USD"]["bid_price"] > 0

        seen: list[str] = []
        handle = s.on("quote", lambda q: seen.append(q["symbol"]))
        wait_for(lambda: {"BTC/USD", "AAPL"} <= set(seen), 30, "quote callbacks from both sockets")
        handle.cancel()

        # unsubscribing a crypto pair leaves the stock alone and drops the pair's row
        s.unsubscribe(quotes=["BTC/USD"])
        assert s.subscriptions["quotes"] == ["AAPL"]
        assert list(s.quotes.df.index) == ["AAPL"]
        crypto = next(h for h in _mine(api) if h.kind == "crypto")
        wait_for(lambda: "BTC/USD" not in crypto._server.get("quotes", set()), 10, "the server to confirm")
        before = counts(s, ["AAPL"])["AAPL"]
        wait_for(lambda: counts(s, ["AAPL"])["AAPL"] > before, 30, "AAPL still streaming")

        # a crypto pair subscribed later joins the running crypto socket
        s.subscribe(bars=["SOL/USD"])
        wait_for(lambda: s.bars.df.loc["SOL/USD", "close"] > 0, 30, "a SOL/USD bar (REST refill or stream)")
        assert crypto.connections == 1
    assert not _mine(api)
    wait_for(lambda: not [t for t in threading.enumerate()
                          if t.ident not in threads_before and t.name.startswith("alpaca-nb-")], 10,
             "the stream threads to end")


def test_one_connection_per_endpoint_however_many_views(api, fast):
    first = api.stream(quotes=["BTC/USD"])
    second = api.stream(trades=["BTC/USD", "ETH/USD"], quotes=["MSFT"])
    third = api.stream(quotes=["AAPL"])
    try:
        hubs = _mine(api)
        assert sorted(h.kind for h in hubs) == ["crypto", "data"]
        assert first._crypto is second._crypto and second._data is third._data
        wait_for(lambda: counts(second, ["ETH/USD"])["ETH/USD"] > 0 and counts(first, ["BTC/USD"])["BTC/USD"] > 0,
                 30, "crypto updates in both views")
        # each view shows only its own symbols
        assert list(first.table.df.index) == ["BTC/USD"]
        assert list(third.table.df.index) == ["AAPL"]
        # the sandbox's data connections: exactly one per endpoint (stock + crypto) for this account
        wait_for(lambda: server_connections(fast)["data"] == 2, 10, "two data connections in the sandbox")
        crypto = first._crypto
        first.close()
        # BTC/USD quotes: nobody needs them now; BTC/USD trades: still the second view's
        wait_for(lambda: crypto._server.get("quotes", set()) == set()
                 and {"BTC/USD", "ETH/USD"} <= crypto._server.get("trades", set()), 10, "the union shrinking")
        assert not crypto.closed
        second.close()
        wait_for(lambda: crypto.closed, 10, "the crypto socket closing with its last view")
        assert [h.kind for h in _mine(api)] == ["data"]
    finally:
        for s in (first, second, third):
            s.close()
    assert not _mine(api)


def test_the_guard_prices_a_crypto_pair_from_the_stream(api):
    with api.stream(trades=["BTC/USD"]) as s:
        wait_for(lambda: s.trades.df.loc["BTC/USD", "price"] > 0, 30, "a BTC/USD trade")
        from alpaca_nb._pretrade import _stream_price
        price = _stream_price(s, "BTC/USD")
        assert price is not None and price > 1000
        assert _stream_price(s, "ETH/USD") is None        # not carried by this stream


def test_order_books_stream_into_the_book_table(api):
    with pytest.raises(ValueError, match="crypto pairs only.*AAPL"):
        api.stream(orderbooks=["AAPL"])
    with api.stream(orderbooks=["BTC/USD"], quotes=["AAPL"]) as s:
        assert s.subscriptions == {"quotes": ["AAPL"], "orderbooks": ["BTC/USD"]}
        crypto = s._crypto
        wait_for(lambda: len(s.orderbooks.df) > 0, 30, "a BTC/USD book")
        first = s.orderbooks.df
        assert list(first.columns) == list(api.orderbook(["BTC/USD"]).columns)
        assert first.dtypes.equals(api.orderbook(["BTC/USD"]).dtypes)
        assert set(first["side"]) == {"bid", "ask"} and set(first["symbol"]) == {"BTC/USD"}
        bids, asks = first[first.side == "bid"], first[first.side == "ask"]
        assert bids["price"].is_monotonic_decreasing and asks["price"].is_monotonic_increasing
        assert bids["price"].max() < asks["price"].min() and (first["size"] > 0).all()
        assert list(bids["level"]) == list(range(len(bids)))
        # the book moves with updates (changed levels) after the full book
        applied = crypto.store.applied
        wait_for(lambda: crypto.store.applied > applied + 5 and s.orderbooks.df["timestamp"].max()
                 > first["timestamp"].max(), 30, "book updates")
        later = s.orderbooks.df
        assert (later[later.side == "bid"]["price"].max() < later[later.side == "ask"]["price"].min())
        # levels whose size went to 0 left the book: each side keeps the depth of the full book
        assert later.groupby("side").size().to_dict() == first.groupby("side").size().to_dict()
        assert "BTC/USD" not in s.table.df.index          # the wide table is for quotes/trades/bars
        s.unsubscribe(orderbooks="BTC/USD")
        assert len(s.orderbooks.df) == 0 and s.subscriptions == {"quotes": ["AAPL"]}


def test_orderbook_callbacks_deliver_whole_books(api):
    books: list[dict] = []
    batches: list[dict] = []
    with api.stream(quotes=["AAPL"]) as s:            # the crypto socket is not open yet
        handle = s.on("orderbook", books.append)
        s.on(["quote", "orderbook"], batches.append, batch=True, max_hz=10)
        assert s._crypto is None
        s.subscribe(orderbooks=["BTC/USD", "ETH/USD"])
        wait_for(lambda: {"BTC/USD", "ETH/USD"} <= {b["symbol"] for b in books}, 30, "books of both pairs")
        wait_for(lambda: len(books) > 6, 30, "book updates")
        table = s.orderbooks.df
        for book in books[:]:                          # a copy: the fan-out thread appends
            assert set(book) == {"symbol", "timestamp", "bids", "asks"}
            assert book["timestamp"].tz is not None and str(book["timestamp"].tz) == "UTC"
            bids = [lv["price"] for lv in book["bids"]]
            asks = [lv["price"] for lv in book["asks"]]
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
            assert bids and asks and bids[0] < asks[0]
            assert all(isinstance(lv["size"], float) and lv["size"] > 0 for lv in book["bids"] + book["asks"])
            depth = table[table.symbol == book["symbol"]].groupby("side").size().to_dict()
            assert (len(book["bids"]), len(book["asks"])) == (depth["bid"], depth["ask"])
        stamps = [b["timestamp"] for b in books if b["symbol"] == "BTC/USD"]
        assert stamps == sorted(stamps)
        wait_for(lambda: any("orderbook" in b for b in batches) and any("quote" in b for b in batches), 30,
                 "a batch with books and one with quotes")
        assert all(u["symbol"] in ("BTC/USD", "ETH/USD") for b in batches for u in b.get("orderbook", ()))

        # after an unsubscribe no more books of that pair arrive (one may have been waiting)
        s.unsubscribe(orderbooks=["ETH/USD"])
        mark = len(books)
        wait_for(lambda: sum(b["symbol"] == "BTC/USD" for b in books[mark:]) >= 3, 30, "more BTC/USD books")
        handle.cancel()
        assert sum(b["symbol"] == "ETH/USD" for b in books[mark:]) <= 1


def test_every_crypto_pair_with_the_pair_wildcard(api):
    with pytest.raises(ValueError, match=r"crypto pairs only.*'\*/\*' for every pair.*got \*"):
        api.stream(orderbooks="*")
    with pytest.raises(ValueError, match=r"statuses: .* stocks only.*got \*/\*, BTC/USD"):
        api.stream(statuses=["IBM", "*/*", "BTC/USD"])
    with api.stream(quotes=["AAPL", "*/*"], trades="*/*", orderbooks="*/*") as s, \
            api.stream(quotes=["BTC/USD"]) as one:
        crypto = s._crypto
        assert one._crypto is crypto
        # the crypto stream confirmed "*" (a "*/*" on the wire would have been refused with 400)
        assert crypto._server["quotes"] == {"*/*", "BTC/USD"}
        assert s.subscriptions == {"quotes": ["AAPL", "*/*"], "trades": ["*/*"], "orderbooks": ["*/*"]}
        wait_for(lambda: len(s.quotes.df) >= 6 and len(s.trades.df) >= 5, 30, "quotes and trades of many pairs")
        rows = list(s.quotes.df.index)
        assert rows[0] == "AAPL" and all("/" in r for r in rows[1:]) and rows[1:] == sorted(rows[1:])
        assert all("/" in r for r in s.trades.df.index)             # "*/*" is pairs only
        from alpaca_nb._pretrade import _stream_price
        pair = next(r for r in s.trades.df.index if s.trades.df.loc[r, "price"] > 0)
        assert _stream_price(s, pair) > 0                             # the guard prices any pair
        assert _stream_price(s, "MSFT") is None                       # "*/*" carries no stock
        wait_for(lambda: s.orderbooks.df["symbol"].nunique() >= 5, 30, "the books of many pairs")
        assert list(one.quotes.df.index) == ["BTC/USD"]               # the other view keeps to its own
        seen: set[str] = set()
        others: set[str] = set()
        s.on("trade", lambda t: seen.add(t["symbol"]))
        one.on("quote", lambda q: others.add(q["symbol"]))
        wait_for(lambda: len(seen) >= 5 and others, 30, "trade callbacks for many pairs")
        assert all("/" in x for x in seen) and others == {"BTC/USD"}
        s.unsubscribe(quotes="*/*", orderbooks="*/*")
        assert list(s.quotes.df.index) == ["AAPL"] and len(s.orderbooks.df) == 0
        wait_for(lambda: "*/*" not in crypto._server["quotes"] and "BTC/USD" in crypto._server["quotes"], 10,
                 "the server to drop the wildcard and keep the other view's pair")
