"""The bar cache: hits, partial hits, corrupt files, today's session never cached, servers kept
apart. A recording proxy between client and sandbox shows which downloads really happen; the
sandbox's clock is pinned so that "today" is known."""

from __future__ import annotations

import datetime as dt
import logging
import os

import pandas as pd
import pytest
import requests
from _http_proxy import RecordingProxy
from conftest import admin_headers

import alpaca_nb as anb
from alpaca_nb._marketdata import _DayBounds
from alpaca_nb.cache import BarCache, cache_dir
from alpaca_nb.sandbox import Sandbox

NOW = "2024-03-06T15:00:00Z"                     # Wednesday 10:00 in New York
SYMBOLS = ["AAPL", "MSFT"]


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def pinned():
    with Sandbox(seed=7, start=NOW) as sb:
        yield sb


@pytest.fixture
def proxy(pinned):
    with RecordingProxy(pinned.url) as p:
        yield p


def connect_via(proxy, sb):
    return anb.connect(base_url=proxy.url, data_url=proxy.url, key_id=sb.key_id, secret_key=sb.secret_key)


def downloads(proxy) -> list[dict]:
    return [q for _, q in proxy.matching("GET", "/v2/stocks/bars")]


def cached_files(root) -> list[str]:
    return sorted(p.name for p in root.rglob("*.parquet"))


def test_hit_downloads_nothing(cache_root, pinned, proxy):
    api = connect_via(proxy, pinned)
    first = api.bars(SYMBOLS, "1Min", "2024-03-01", "2024-03-04")
    assert len(first) == 2 * 2 * 960 and downloads(proxy)      # Friday and Monday, 04:00-20:00 ET
    assert cached_files(cache_root) == ["s_AAPL.parquet", "s_MSFT.parquet"]
    proxy.clear()
    again = api.bars(SYMBOLS, "1Min", "2024-03-01", "2024-03-04")
    assert downloads(proxy) == []
    pd.testing.assert_frame_equal(again, first)
    inner = api.bars("MSFT", "1Min", "2024-03-01 10:00", "2024-03-04 15:30", tz="America/New_York")
    assert downloads(proxy) == []
    assert inner.index.get_level_values("timestamp")[0] == pd.Timestamp("2024-03-01 10:00", tz="America/New_York")
    pd.testing.assert_frame_equal(inner, api.bars("MSFT", "1Min", "2024-03-01 10:00", "2024-03-04 15:30",
                                                  tz="America/New_York", cache=False))


def test_partial_hit_fetches_only_missing_days(cache_root, pinned, proxy):
    api = connect_via(proxy, pinned)
    api.bars(SYMBOLS, "1Min", "2024-03-01", "2024-03-03")
    proxy.clear()
    wider = api.bars(SYMBOLS + ["IBM"], "1Min", "2024-03-02", "2024-03-05")
    got = sorted((q["symbols"], q["start"], q["end"]) for q in downloads(proxy) if "page_token" not in q)
    assert got == [("AAPL,MSFT", "2024-03-04T05:00:00Z", "2024-03-06T04:59:59Z"),   # only the new days
                   ("IBM", "2024-03-02T05:00:00Z", "2024-03-06T04:59:59Z")]       # a new symbol: all
    fresh = api.bars(SYMBOLS + ["IBM"], "1Min", "2024-03-02", "2024-03-05", cache=False)
    pd.testing.assert_frame_equal(wider, fresh)
    assert len(wider) == 3 * 2 * 960 and wider.index.is_unique       # Monday and Tuesday


def test_today_is_never_cached(cache_root, pinned, proxy):
    api = connect_via(proxy, pinned)
    df = api.bars(SYMBOLS, "1Min", "2024-03-05")                  # up to now, today included
    today = pd.Timestamp("2024-03-06", tz="America/New_York")
    assert df.index.get_level_values("timestamp").max() >= today
    entry = BarCache(_key(cache_root, pinned, api)).load("AAPL")
    assert entry.days == {dt.date(2024, 3, 5).toordinal()}        # yesterday only
    assert entry.times.max() < today.value
    proxy.clear()
    again = api.bars(SYMBOLS, "1Min", "2024-03-05")
    assert [(q["start"]) for q in downloads(proxy) if "page_token" not in q] == ["2024-03-06T05:00:00Z"]
    assert len(again) >= len(df)


def test_a_day_is_cached_once_it_is_over(cache_root):
    with Sandbox(seed=7, start=NOW) as sb:
        api = anb.connect(sandbox=sb)
        api.bars("AAPL", "1Hour", "2024-03-06")
        assert BarCache(_key(cache_root, sb, api, timeframe="1Hour")).load("AAPL") is None
        requests.post(f"{sb.url}/sandbox/clock", json={"advance": 86_400}, headers=admin_headers(sb),
                      timeout=10).raise_for_status()
        api.bars("AAPL", "1Hour", "2024-03-06")
        entry = BarCache(_key(cache_root, sb, api, timeframe="1Hour")).load("AAPL")
        # 04:00-20:00 ET in hours aligned to UTC: 09:00Z ... 00:00Z
        assert entry.days == {dt.date(2024, 3, 6).toordinal()} and len(entry.times) == 16


@pytest.mark.parametrize("damage", ["garbage", "flipped", "flipped_times", "foreign"])
def test_corrupt_files_are_discarded_and_refetched(cache_root, pinned, proxy, caplog, damage):
    api = connect_via(proxy, pinned)
    good = api.bars(SYMBOLS, "1Min", "2024-02-26", "2024-02-27")
    path = BarCache(_key(cache_root, pinned, api)).path("AAPL")
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        path.write_bytes(b"not a parquet file at all")
    elif damage.startswith("flipped"):                             # a bit flip inside a data page:
        data[len(data) // (20 if damage == "flipped_times" else 3)] ^= 0xFF   # times or values
        path.write_bytes(bytes(data))
    else:
        pd.DataFrame({"t": [1], "open": [2.0]}).to_parquet(path)  # valid Parquet, not ours
    proxy.clear()
    with caplog.at_level(logging.WARNING, logger="alpaca_nb.cache"):
        again = api.bars(SYMBOLS, "1Min", "2024-02-26", "2024-02-27")
    pd.testing.assert_frame_equal(again, good)
    assert any("discarding" in r.getMessage() for r in caplog.records)
    assert [q["symbols"] for q in downloads(proxy) if "page_token" not in q] == ["AAPL"]
    assert BarCache(_key(cache_root, pinned, api)).load("AAPL") is not None   # rewritten whole


def test_files_of_older_versions_are_still_read(cache_root, pinned, proxy):
    """Files written before the columns became required (non-nullable) are hits too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    api = connect_via(proxy, pinned)
    first = api.bars(SYMBOLS, "1Min", "2024-02-20", "2024-02-21")
    for symbol in SYMBOLS:
        path = BarCache(_key(cache_root, pinned, api)).path(symbol)
        table = pq.read_table(path)
        nullable = pa.schema([pa.field(f.name, f.type, nullable=True) for f in table.schema],
                             metadata=table.schema.metadata)
        pq.write_table(table.cast(nullable), path)
        assert pq.ParquetFile(path).schema_arrow.field("close").nullable
    proxy.clear()
    again = api.bars(SYMBOLS, "1Min", "2024-02-20", "2024-02-21")
    assert downloads(proxy) == []
    pd.testing.assert_frame_equal(again, first)


def test_more_symbols_than_open_files_allowed(cache_root, pinned, proxy, monkeypatch):
    """Past the number of files it holds open at once, a hit reads the files one at a time
    (the same frame, still nothing downloaded)."""
    api = connect_via(proxy, pinned)
    symbols = SYMBOLS + ["IBM"]
    api.bars(symbols, "1Min", "2024-02-13", "2024-02-14")                 # fills the cache
    proxy.clear()
    together = api.bars(symbols, "1Min", "2024-02-13", "2024-02-14 12:00")
    monkeypatch.setattr("alpaca_nb.cache._max_open_files", lambda: 2)
    one_by_one = api.bars(symbols, "1Min", "2024-02-13", "2024-02-14 12:00")
    assert downloads(proxy) == []
    pd.testing.assert_frame_equal(one_by_one, together)
    pd.testing.assert_frame_equal(together, api.bars(symbols, "1Min", "2024-02-13", "2024-02-14 12:00",
                                                     cache=False))


def test_cache_false_and_uncacheable_requests_write_nothing(cache_root, pinned, proxy):
    api = connect_via(proxy, pinned)
    api.bars(SYMBOLS, "1Min", "2024-03-01", "2024-03-02", cache=False)
    api.bars(SYMBOLS, "7Min", "2024-03-01", "2024-03-02")          # bars that straddle days
    api.bars(SYMBOLS, "1Week", "2024-01-01", "2024-03-02")
    api.bars(SYMBOLS, "1Min", "2024-03-01", "2024-03-02", limit=100)
    assert cached_files(cache_root) == []


def test_clear_empties_the_cache(cache_root, pinned, proxy):
    api = connect_via(proxy, pinned)
    api.bars(SYMBOLS, "1Day", "2024-01-01", "2024-02-01")
    assert len(cached_files(cache_root)) == 2
    assert anb.cache.clear() == 2
    assert cached_files(cache_root) == []
    proxy.clear()
    api.bars(SYMBOLS, "1Day", "2024-01-01", "2024-02-01")
    assert downloads(proxy)                                      # fetched again


def test_servers_never_share_entries(cache_root):
    with Sandbox(seed=7, start=NOW) as a:
        first = anb.connect(sandbox=a).bars("AAPL", "1Day", "2024-01-01", "2024-02-01")
    with Sandbox(seed=8, start=NOW) as b, RecordingProxy(b.url) as proxy:
        other = connect_via(proxy, b).bars("AAPL", "1Day", "2024-01-01", "2024-02-01")
        assert downloads(proxy)                                  # another seed: not from the cache
    assert not first.equals(other)
    servers = sorted(p.name for p in (cache_root / "v1").iterdir())
    assert servers == ["sandbox-always-open-seed7-v2", "sandbox-always-open-seed8-v2"]
    with Sandbox(seed=7, start=NOW) as c, RecordingProxy(c.url) as proxy:   # same data, new port
        same = connect_via(proxy, c).bars("AAPL", "1Day", "2024-01-01", "2024-02-01")
        assert downloads(proxy) == []
    pd.testing.assert_frame_equal(same, first)
    with Sandbox(seed=7, market="calendar", start=NOW) as d, RecordingProxy(d.url) as proxy:
        connect_via(proxy, d).bars("AAPL", "1Day", "2024-01-01", "2024-02-01")
        assert downloads(proxy)                                  # another market mode


def test_a_file_changed_on_disk_is_read_again(cache_root, pinned, proxy):
    api = connect_via(proxy, pinned)
    first = api.bars("AAPL", "1Day", "2024-01-01", "2024-02-01")
    cache = BarCache(_key(cache_root, pinned, api, timeframe="1Day"))
    entry = cache.load("AAPL")
    assert not entry.columns["close"].flags.writeable                   # views of the file: read-only
    changed = {c: v * 2 for c, v in entry.columns.items()}     # as if another process rewrote it
    BarCache(cache.key, cache.root).store("AAPL", entry.days, _DayBounds(), entry.times, changed)
    proxy.clear()
    again = api.bars("AAPL", "1Day", "2024-01-01", "2024-02-01")
    assert downloads(proxy) == []
    assert (again["close"].to_numpy() == first["close"].to_numpy() * 2).all()
    again.iloc[0, 0] = -1.0                                              # the user's frame is theirs
    assert cache.load("AAPL").columns["open"][0] == entry.columns["open"][0] * 2


def test_cache_dir_location(monkeypatch, tmp_path):
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("ALPACA_NB_CACHE_DIR")
    import platformdirs
    assert cache_dir() == __import__("pathlib").Path(platformdirs.user_cache_dir("alpaca_nb", appauthor=False))


def test_clear_only_touches_its_own_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    (tmp_path / "v1" / "x").mkdir(parents=True)
    (tmp_path / "v1" / "x" / "s_A.parquet").write_bytes(b"x")
    assert anb.cache.clear(tmp_path) == 1
    assert (tmp_path / "keep.txt").exists() and not (tmp_path / "v1").exists()


def _key(root, sb, api, timeframe: str = "1Min"):
    from alpaca_nb._marketdata import server_label
    from alpaca_nb.cache import CacheKey
    status = requests.get(f"{sb.url}/sandbox/status", headers=admin_headers(sb), timeout=10).json()
    return CacheKey(server_label(api.settings, status), "default", "raw", timeframe)


def test_files_stay_in_the_cache_dir(cache_root, pinned, proxy):
    connect_via(proxy, pinned).bars(["BRK.B"], "1Day", "2024-01-01", "2024-01-31")
    files = list(cache_root.rglob("*.parquet"))
    assert [f.name for f in files] == ["s_BRK.B.parquet"]
    assert all(os.path.commonpath([cache_root, f]) == str(cache_root) for f in files)
