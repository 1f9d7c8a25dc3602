"""The client's corporate actions: ``api.corporate_actions`` as a fixed-schema frame (all pages,
empty answers, bad arguments), and the bar cache across an ex-date: adjusted bars asked before
and after the sandbox clock crosses a split equal a fresh download (``cache=False``) each time,
raw bars stay cached. A recording proxy shows which requests really happen."""

from __future__ import annotations

import inspect

import pandas as pd
import pytest
import requests
from _http_proxy import RecordingProxy
from conftest import admin_headers

import alpaca_nb as anb
from alpaca_nb import frames
from alpaca_nb.sandbox import Sandbox

BEFORE = "2024-06-20T15:00:00Z"      # WM splits 2-for-1 with ex-date 2024-06-24 (seed 7)
AFTER = "2024-06-25T15:00:00Z"


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ALPACA_NB_CACHE_DIR", str(root))
    return root


@pytest.fixture
def sb():
    with Sandbox(seed=7, start=BEFORE) as server:
        yield server


def connect(sb, url=None):
    url = url or sb.url
    return anb.connect(base_url=url, data_url=url, key_id=sb.key_id, secret_key=sb.secret_key)


def move_clock(sb, when: str) -> None:
    resp = requests.post(sb.url + "/sandbox/clock", json={"set": when}, headers=admin_headers(sb), timeout=30)
    assert resp.status_code == 200, resp.text


def test_frame_schema_pages_and_empty_answers(sb):
    api = connect(sb)
    df = api.corporate_actions(["WM", "KO"], start="2024-01-01", end="2024-06-30")
    assert list(df.columns) == [f.name for f in frames.CORPORATE_ACTION.fields]
    assert df.dtypes.to_dict() == frames.CORPORATE_ACTION.dtypes()
    split = df[df["type"] == "forward_split"].iloc[0]
    assert (split["symbol"], split["ex_date"], split["old_rate"], split["new_rate"]) == \
        ("WM", pd.Timestamp("2024-06-24"), 1.0, 2.0)
    divs = df[df["type"] == "cash_dividend"]
    assert len(divs) >= 2 and (divs["cash"] == divs["rate"]).all() and not divs["special"].any()
    assert df["ex_date"].is_monotonic_increasing
    empty = api.corporate_actions("WM", types="reverse_split", start="2024-01-01", end="2024-06-30")
    assert len(empty) == 0 and empty.dtypes.to_dict() == df.dtypes.to_dict()
    # every page: more records than one page holds (1000)
    wide = api.corporate_actions(start="2023-01-01", end="2023-12-31")
    assert len(wide) > 1000 and wide["id"].is_unique
    again = api.corporate_actions(ids=[split["id"]])
    assert list(again["id"]) == [split["id"]]
    assert "corporate_actions" in anb.__all__
    assert inspect.signature(anb.corporate_actions).parameters == \
        inspect.signature(api.corporate_actions).parameters


@pytest.mark.parametrize("kwargs, message", [
    ({"types": "splits"}, "types must be among"),
    ({"types": []}, "types must be among"),
    ({"ids": ["x/y"]}, "ids must be"),
    ({"ids": ["61e69015-8549-4bfd-b9c3-01e75843f47d"], "symbols": "AAPL"}, "ids cannot be combined"),
    ({"start": "not a date"}, "start"),
])
def test_bad_arguments_name_what_is_wrong(sb, kwargs, message):
    with pytest.raises(ValueError, match=message):
        connect(sb).corporate_actions(**kwargs)


def test_adjusted_bars_from_the_cache_equal_a_fresh_download_across_an_ex_date(sb, cache_root):
    with RecordingProxy(sb.url) as proxy:
        api = connect(sb, proxy.url)
        ask = {"symbols": ["WM", "KO"], "timeframe": "1Day", "start": "2024-05-01", "end": "2024-06-19"}
        for adjustment in ("split", "all", "split,dividend"):
            cached = api.bars(**ask, adjustment=adjustment)
            assert cached.equals(api.bars(**ask, adjustment=adjustment, cache=False))
        raw_before = api.bars(**ask)
        bars_before = len(proxy.matching("GET", "/v2/stocks/bars"))
        hit = api.bars(**ask, adjustment="split")              # a hit: no bar downloaded
        assert len(proxy.matching("GET", "/v2/stocks/bars")) == bars_before
        assert hit.equals(api.bars(**ask, adjustment="split", cache=False))

        move_clock(sb, AFTER)                                  # the split takes effect
        for adjustment in ("split", "all", "split,dividend"):
            fresh = api.bars(**ask, adjustment=adjustment, cache=False)
            cached = api.bars(**ask, adjustment=adjustment)
            pd.testing.assert_frame_equal(cached, fresh)
        wm_before = hit.loc["WM"]
        wm_after = api.bars(**ask, adjustment="split").loc["WM"]
        assert (wm_after["close"] - wm_before["close"] / 2).abs().max() < 1e-3
        assert (wm_after["volume"] == wm_before["volume"] * 2).all()
        # KO had no split: its adjusted bars are served from the cache, not downloaded again
        n = len(proxy.matching("GET", "/v2/stocks/bars"))
        api.bars(**dict(ask, symbols=["KO"]), adjustment="split")
        assert len(proxy.matching("GET", "/v2/stocks/bars")) == n
        # raw bars never change: a hit, equal to what they were
        raw_after = api.bars(**ask)
        assert len(proxy.matching("GET", "/v2/stocks/bars")) == n
        pd.testing.assert_frame_equal(raw_after, raw_before)
