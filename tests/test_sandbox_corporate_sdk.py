"""Conformance: the official alpaca-py SDK, unchanged, against the sandbox's corporate actions
(``CorporateActionsClient(url_override=...)``): filters, ids, and many pages."""

from __future__ import annotations

import datetime as dt

import pytest
from alpaca.data.historical.corporate_actions import CorporateActionsClient
from alpaca.data.requests import CorporateActionsRequest
from test_sandbox_corporate import actions

from alpaca_nb.sandbox import Sandbox


@pytest.fixture(scope="module")
def sb():
    with Sandbox(seed=7, start="2024-06-28T15:00:00Z") as server:
        yield server


def test_alpaca_py_corporate_actions_client(sb):
    client = CorporateActionsClient(sb.key_id, sb.secret_key, url_override=sb.url)
    got = client.get_corporate_actions(CorporateActionsRequest(
        symbols=["WM", "KO"], start=dt.date(2024, 1, 1), end=dt.date(2024, 6, 30)))
    ours = actions(sb, symbols="KO,WM", start="2024-01-01", end="2024-06-30")
    assert set(got.data) == {a["_key"] for a in ours} >= {"forward_splits", "cash_dividends"}
    assert sum(len(v) for v in got.data.values()) == len(ours)
    split = got.data["forward_splits"][0]
    assert (split.symbol, split.ex_date, split.new_rate, split.old_rate) == ("WM", dt.date(2024, 6, 24), 2.0, 1.0)
    div = got.data["cash_dividends"][0]
    assert div.symbol in ("KO", "WM") and div.rate > 0 and div.special is False
    by_id = client.get_corporate_actions(CorporateActionsRequest(ids=[str(split.id)]))
    assert [str(a.id) for a in by_id.data["forward_splits"]] == [str(split.id)]
    # many pages: alpaca-py follows next_page_token (it asks limit=1000 per page)
    wide = client.get_corporate_actions(CorporateActionsRequest(
        start=dt.date(2023, 1, 1), end=dt.date(2023, 12, 31), limit=1200))
    everything = actions(sb, start="2023-01-01", end="2023-12-31", limit=1000)
    assert len(everything) > 1200
    everything.sort(key=lambda a: (a["process_date"], a["_key"], a.get("symbol") or a.get("source_symbol"), a["id"]))
    assert sorted(str(a.id) for v in wide.data.values() for a in v) == sorted(a["id"] for a in everything[:1200])
