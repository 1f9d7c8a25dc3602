"""How the client reacts to the limits of Alpaca's free market-data plan, against sandbox accounts
on the ``basic`` plan (and the same calls on ``unlimited`` ones, which must be unaffected)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import requests
from _stream_helpers import FAST, connect, counts, wait_for
from conftest import SandboxAccount, admin_headers

import alpaca_nb as anb
from alpaca_nb.sandbox import Sandbox
from alpaca_nb.stream import SubscriptionError, open_hubs

RECENT_SIP = "subscription does not permit querying recent SIP data"


def plan_account(sb: Sandbox, plan: str) -> SandboxAccount:
    resp = requests.post(f"{sb.url}/sandbox/accounts", json={"data_plan": plan},
                         headers=admin_headers(sb), timeout=10)
    resp.raise_for_status()
    data = resp.json()
    return SandboxAccount(data["key_id"], data["secret_key"], data["account_id"], sb.url, sb.stream_url)


def server_now(sb: Sandbox) -> pd.Timestamp:
    return pd.Timestamp(requests.get(f"{sb.url}/sandbox/status", headers=admin_headers(sb),
                                     timeout=10).json()["now"])


@pytest.fixture(scope="module")
def fast():
    with Sandbox(**FAST) as sb:
        yield sb


@pytest.fixture(scope="module")
def pinned():
    """Real-time speed, so 'the last 15 minutes' does not slide away during a test."""
    with Sandbox(start="2024-03-06T16:00:00Z") as sb:
        yield sb


@pytest.fixture(scope="module")
def names(fast):
    assets = connect(plan_account(fast, "unlimited")).assets()
    found = sorted(s for s in assets.index if re.fullmatch(r"[A-Z]{1,5}", s))
    return found[:40]


def mine(api) -> list:
    return [h for h in open_hubs() if h.key_id == api.settings.key_id]


# ---------------------------------------------------------------- streams

def test_a_sip_stream_on_the_free_plan_raises_at_once_and_says_what_to_do(fast):
    account = plan_account(fast, "basic")
    api = connect(account)
    with pytest.raises(anb.AuthenticationError) as info:
        api.stream(quotes=["AAPL"], feed="sip")
    err = info.value
    assert err.code == 409
    text = str(err)
    assert "insufficient subscription" in text and "'sip' feed" in text
    assert "feed='iex'" in text and "upgrade" in text
    assert account.secret_key not in text
    assert not mine(api)                          # nothing left running
    with api.stream(quotes=["AAPL"], feed="iex") as s:   # the way out works
        wait_for(lambda: counts(s, ["AAPL"])["AAPL"] > 0, 10, "an AAPL quote")


def test_the_free_plan_streams_delayed_sip(fast):
    api = connect(plan_account(fast, "basic"))
    with api.stream(quotes=["AAPL"], bars=["SPY"], feed="delayed_sip") as s:
        assert s.status.connected
        wait_for(lambda: all(counts(s, ["AAPL", "SPY"]).values()), 15, "delayed AAPL quotes and SPY bars")


def test_the_31st_symbol_raises_and_the_stream_goes_on(fast, names):
    api = connect(plan_account(fast, "basic"))
    with pytest.raises(SubscriptionError, match="symbol limit exceeded") as info:
        api.stream(quotes=names[:31])
    assert info.value.code == 405
    assert not mine(api)
    with api.stream(quotes=names[:20], trades=names[10:30]) as s:   # 30 distinct symbols
        with pytest.raises(SubscriptionError, match="symbol limit exceeded") as info:
            s.subscribe(quotes=[names[30]])
        assert info.value.code == 405
        assert s.subscriptions == {"quotes": names[:20], "trades": names[10:30]}
        s.subscribe(bars=names)                                 # bars have no limit
        assert s.status.connected
        before = counts(s, names[:3])
        wait_for(lambda: all(counts(s, names[:3])[n] > before[n] for n in names[:3]), 15,
                 "quotes going on after the refusal")
        s.unsubscribe(trades=[names[29]])                       # room again
        s.subscribe(trades=[names[30]])
        assert names[30] in s.subscriptions["trades"]


def test_unlimited_accounts_stream_sip_with_any_number_of_symbols(fast, names):
    api = connect(plan_account(fast, "unlimited"))
    with api.stream(quotes=names, feed="sip") as s:
        s.subscribe(trades=names)
        assert s.status.connected and len(s.subscriptions["quotes"]) == 40
        wait_for(lambda: sum(counts(s, names).values()) > 40, 15, "quotes of many symbols")


# ---------------------------------------------------------------- REST

def test_recent_sip_bars_on_the_free_plan_raise_forbidden_with_alpacas_message(pinned):
    api = connect(plan_account(pinned, "basic"))
    now = server_now(pinned)
    for call in (lambda: api.bars("AAPL", "1Min", start=now - pd.Timedelta("30min"), end=now, feed="sip"),
                 lambda: api.bars("AAPL", "1Min", start=now - pd.Timedelta("30min"), end=now, feed="sip",
                                  cache=False),
                 lambda: api.trades("AAPL", start=now - pd.Timedelta("5min"), feed="sip"),
                 lambda: api.latest_quotes(["AAPL", "MSFT"], feed="sip"),
                 lambda: api.snapshots("AAPL", feed="sip")):
        with pytest.raises(anb.ForbiddenError) as info:
            call()
        assert info.value.status == 403 and info.value.message == RECENT_SIP
        assert info.value.code is None and not isinstance(info.value, anb.InsufficientBuyingPower)
    # what the free plan can have: IEX in real time, SIP up to 15 minutes ago
    iex = api.bars("AAPL", "1Min", start=now - pd.Timedelta("30min"), end=now, feed="iex")
    assert iex.index.get_level_values("timestamp").max() >= now - pd.Timedelta("2min")
    sip = api.bars("AAPL", "1Min", start=now - pd.Timedelta("30min"))        # no feed, no end
    last = sip.index.get_level_values("timestamp").max()
    assert now - pd.Timedelta("17min") <= last <= server_now(pinned) - pd.Timedelta("15min")
    assert len(api.latest_quotes(["AAPL", "MSFT"])) == 2                      # iex by default


def test_unlimited_accounts_read_recent_sip(pinned):
    api = connect(plan_account(pinned, "unlimited"))
    now = server_now(pinned)
    bars = api.bars("AAPL", "1Min", start=now - pd.Timedelta("30min"), end=now, feed="sip")
    assert bars.index.get_level_values("timestamp").max() >= now - pd.Timedelta("2min")
    assert len(api.latest_quotes(["AAPL", "MSFT"], feed="sip")) == 2
