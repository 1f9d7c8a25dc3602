"""Market-data plans of sandbox accounts through real sockets: ``basic`` (Alpaca's free plan) gets
409 on the SIP stream, 405 past 30 trades + quotes symbols, and Alpaca's 403 for recent SIP data
over REST; ``unlimited`` (the default) keeps everything; the plan survives a ``--db`` restart."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading

import msgpack
import pytest
import requests
from _data_stream_client import RawDataStream, connect
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.requests import StockLatestQuoteRequest
from conftest import SandboxAccount, admin_headers

from alpaca_nb.sandbox import Sandbox, SandboxConfig

RECENT_SIP = {"message": "subscription does not permit querying recent SIP data"}
MINUTE = dt.timedelta(minutes=1)


def plan_account(sb: Sandbox, plan: str | None = None, **body) -> SandboxAccount:
    """POST /sandbox/accounts with an optional data_plan."""
    if plan is not None:
        body["data_plan"] = plan
    resp = requests.post(f"{sb.url}/sandbox/accounts", json=body, headers=admin_headers(sb), timeout=10)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["data_plan"] == (plan or "unlimited")
    return SandboxAccount(data["key_id"], data["secret_key"], data["account_id"], sb.url, sb.stream_url)


def default_account(sb: Sandbox) -> SandboxAccount:
    return SandboxAccount(sb.key_id, sb.secret_key, "", sb.url, sb.stream_url)


def get(account: SandboxAccount, path: str, **params) -> requests.Response:
    return requests.get(account.url + path, params=params, headers=account.headers, timeout=30)


def server_now(sb: Sandbox) -> dt.datetime:
    now = requests.get(sb.url + "/sandbox/status", headers=admin_headers(sb), timeout=10).json()["now"]
    return parse_ts(now)


def parse_ts(value) -> dt.datetime:
    if isinstance(value, msgpack.Timestamp):
        return value.to_datetime()
    return dt.datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00"))


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def symbols(sb: Sandbox, n: int) -> list[str]:
    assets = get(default_account(sb), "/v2/assets", status="active").json()
    names = sorted(a["symbol"] for a in assets if re.fullmatch(r"[A-Z]{1,5}", a["symbol"]))
    assert len(names) >= n
    return names[:n]


@pytest.fixture(scope="module")
def fast():
    """A virtual clock at 60x from a session's middle: quotes flow, a minute closes each second."""
    with Sandbox(start="2024-03-06T15:00:00Z", speed=60, stream_auth_timeout=2.0) as sb:
        yield sb


@pytest.fixture(scope="module")
def pinned():
    """Real-time speed from a fixed instant, so 'the last 15 minutes' stays put during a test."""
    with Sandbox(start="2024-03-06T16:00:00Z") as sb:
        yield sb


# ---------------------------------------------------------------- choosing a plan

def test_accounts_are_unlimited_unless_asked_and_a_bad_plan_is_refused_without_an_account(pinned):
    assert plan_account(pinned) and plan_account(pinned, "unlimited") and plan_account(pinned, "basic")
    for bad in ("gold", "", 7, None, ["basic"]):
        resp = requests.post(f"{pinned.url}/sandbox/accounts", headers=admin_headers(pinned), timeout=10,
                             json={"data_plan": bad, "key_id": "PLANKEY1", "secret_key": "plan-secret-1"})
        assert resp.status_code == 422, bad
        assert resp.json() == {"code": 40010001, "message": "data_plan must be one of unlimited, basic"}
    # nothing was created: the key id is still free
    account = plan_account(pinned, "basic", key_id="PLANKEY1", secret_key="plan-secret-1")
    status = get(account, "/sandbox/status").json()
    assert status["data_plan"] == "basic"
    assert get(default_account(pinned), "/sandbox/status").json()["data_plan"] == "unlimited"


def test_the_default_account_takes_the_configured_plan_and_a_bad_one_is_refused():
    with pytest.raises(ValueError, match="data_plan must be one of unlimited, basic"):
        SandboxConfig(data_plan="free")
    with pytest.raises(ValueError, match="data_plan"):
        Sandbox(data_plan="BASIC")
    assert "data_plan='basic'" in repr(SandboxConfig(data_plan="basic"))
    with Sandbox(start="2024-03-06T16:00:00Z", data_plan="basic") as sb:
        me = default_account(sb)
        assert get(me, "/sandbox/status").json()["data_plan"] == "basic"
        assert get(me, "/v2/stocks/quotes/latest", symbols="AAPL", feed="sip").status_code == 403
        assert plan_account(sb) and get(plan_account(sb), "/sandbox/status").json()["data_plan"] == "unlimited"


# ---------------------------------------------------------------- the data stream

@pytest.mark.parametrize("use_msgpack", [False, True])
def test_basic_on_the_sip_stream_gets_409_at_auth_and_stays_unauthenticated(fast, use_msgpack):
    basic = plan_account(fast, "basic")
    s = RawDataStream(fast, "/v2/sip", use_msgpack=use_msgpack)
    assert s.recv() == [{"T": "success", "msg": "connected"}]
    assert s.auth(basic) == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]
    s.send({"action": "subscribe", "quotes": ["AAPL"]})
    assert s.recv() == [{"T": "error", "code": 401, "msg": "not authenticated"}]
    assert s.auth(basic) == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]
    # bad keys are still 402, checked first
    s.send({"action": "auth", "key": basic.key_id, "secret": "wrong"})
    assert s.recv() == [{"T": "error", "code": 402, "msg": "auth failed"}]
    # the connection never authenticates, so the auth timeout ends it
    message, _ = s.until("error", seconds=5)
    assert message == {"T": "error", "code": 404, "msg": "auth timeout"}
    s.close()


def test_header_auth_on_the_sip_stream_is_refused_the_same_way(fast):
    basic = plan_account(fast, "basic")
    s = RawDataStream(fast, "/v2/sip", headers=[f"{k}: {v}" for k, v in basic.headers.items()])
    assert s.recv() == [{"T": "success", "msg": "connected"}]
    assert s.recv() == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]
    s.close()


def test_basic_streams_iex_and_delayed_sip_and_unlimited_streams_sip(fast):
    basic, unlimited = plan_account(fast, "basic"), plan_account(fast)
    for account, path in ((basic, "/v2/iex"), (basic, "/v2/delayed_sip"), (basic, "/v2/test"),
                          (unlimited, "/v2/sip"), (unlimited, "/v2/iex")):
        s = connect(fast, account, path)
        symbol = "FAKEPACA" if path == "/v2/test" else "AAPL"
        s.send({"action": "subscribe", "quotes": [symbol]})
        sub, _ = s.until("subscription")
        assert sub["quotes"] == [symbol]
        quote, _ = s.until("q", seconds=10)
        assert quote["S"] == symbol, path
        s.close()


def test_basic_trades_and_quotes_stop_at_30_symbols_and_a_refusal_changes_nothing(fast):
    basic = plan_account(fast, "basic")
    names = symbols(fast, 120)
    s = connect(fast, basic)
    # 30 distinct symbols over trades and quotes (a symbol on both counts once); bars unlimited
    s.send({"action": "subscribe", "trades": names[:20], "quotes": names[10:30], "bars": names})
    sub, _ = s.until("subscription")
    assert sub["trades"] == names[:20] and sub["quotes"] == names[10:30] and sub["bars"] == names
    for refused in ({"quotes": [names[30]]}, {"trades": [names[30]], "bars": ["*"]}, {"trades": ["*"]},
                    {"quotes": ["*"]}):
        s.send({"action": "subscribe", **refused})
        error, _ = s.until("error")
        assert error == {"T": "error", "code": 405, "msg": "symbol limit exceeded"}, refused
    s.send({"action": "subscribe", "bars": ["*"], "dailyBars": ["*"], "statuses": ["*"]})
    sub, _ = s.until("subscription")      # the refused ones left no trace
    assert sub["trades"] == names[:20] and sub["quotes"] == names[10:30]
    assert sub["bars"] == names + ["*"] and sub["dailyBars"] == ["*"] and sub["statuses"] == ["*"]
    # the stream goes on: quotes of a subscribed symbol keep coming
    quote, _ = s.until("q", seconds=10)
    assert quote["S"] in names[10:30]
    # room freed by an unsubscribe can be used again
    s.send({"action": "unsubscribe", "trades": [names[0]]})
    s.until("subscription")
    s.send({"action": "subscribe", "quotes": [names[30]]})
    sub, _ = s.until("subscription")
    assert names[30] in sub["quotes"] and names[0] not in sub["trades"]
    s.close()


def test_the_symbol_limit_holds_on_delayed_sip_too_and_not_for_unlimited(fast):
    names = symbols(fast, 40)
    s = connect(fast, plan_account(fast, "basic"), "/v2/delayed_sip")
    s.send({"action": "subscribe", "quotes": names[:31]})
    error, _ = s.until("error")
    assert error["code"] == 405
    s.close()
    s = connect(fast, plan_account(fast), "/v2/sip")
    s.send({"action": "subscribe", "quotes": names, "trades": ["*"]})
    sub, _ = s.until("subscription")
    assert sub["quotes"] == names and sub["trades"] == ["*"]
    s.close()


def test_alpaca_py_stops_its_sip_stream_on_409_and_reads_iex(fast):
    basic = plan_account(fast, "basic")
    refused = StockDataStream(basic.key_id, basic.secret_key, feed=DataFeed.SIP,
                              url_override=fast.stream_url + "/v2/sip")

    async def ignore(_):
        pass

    refused.subscribe_quotes(ignore, "AAPL")
    thread = threading.Thread(target=refused.run, daemon=True)
    thread.start()
    thread.join(15)   # alpaca-py gives up on "insufficient subscription" instead of reconnecting
    assert not thread.is_alive()

    got = threading.Event()
    stream = StockDataStream(basic.key_id, basic.secret_key, feed=DataFeed.IEX,
                             url_override=fast.stream_url + "/v2/iex")

    async def record(quote):
        got.set()

    stream.subscribe_quotes(record, "AAPL")
    thread = threading.Thread(target=stream.run, daemon=True)
    thread.start()
    try:
        assert got.wait(15)
    finally:
        stream.stop()
        thread.join(10)


# ---------------------------------------------------------------- REST

HISTORICAL = ["/v2/stocks/bars", "/v2/stocks/trades", "/v2/stocks/quotes", "/v2/stocks/AAPL/bars",
              "/v2/stocks/AAPL/trades", "/v2/stocks/AAPL/quotes"]
LATEST = ["/v2/stocks/bars/latest", "/v2/stocks/trades/latest", "/v2/stocks/quotes/latest",
          "/v2/stocks/snapshots", "/v2/stocks/AAPL/bars/latest", "/v2/stocks/AAPL/trades/latest",
          "/v2/stocks/AAPL/quotes/latest", "/v2/stocks/AAPL/snapshot"]


def historical(path: str, **params) -> dict:
    if "/bars" in path:
        params.setdefault("timeframe", "1Min")
    if "/AAPL/" not in path:
        params.setdefault("symbols", "AAPL")
    return params


@pytest.mark.parametrize("path", HISTORICAL)
def test_basic_gets_alpacas_403_for_recent_sip_history_and_unlimited_does_not(pinned, path):
    basic, unlimited = plan_account(pinned, "basic"), plan_account(pinned)
    now = server_now(pinned)
    recent = [dict(feed="sip", start=iso(now - 30 * MINUTE), end=iso(now - 10 * MINUTE)),
              dict(feed="sip", start=iso(now - 5 * MINUTE)),                 # start is recent
              dict(feed="sip", start=iso(now - 30 * MINUTE), end=iso(now + 60 * MINUTE)),
              dict(feed="sip", start="2024-03-06", end="2024-03-06"),         # the whole of today
              dict(start=iso(now - 30 * MINUTE), end=iso(now - MINUTE))]      # no feed: SIP
    for params in recent:
        resp = get(basic, path, **historical(path, **params))
        assert resp.status_code == 403, (params, resp.text)
        assert resp.json() == RECENT_SIP
        ok = get(unlimited, path, **historical(path, **params))
        assert ok.status_code == 200, (params, ok.text)
    # IEX is real time on the free plan, and older SIP history is free: same answers as unlimited
    for params in (dict(feed="iex", start=iso(now - 30 * MINUTE), end=iso(now - 2 * MINUTE)),
                   dict(feed="sip", start=iso(now - 60 * MINUTE), end=iso(now - 16 * MINUTE)),
                   dict(start="2024-03-05", end="2024-03-05", limit="50")):
        resp = get(basic, path, **historical(path, **params))
        assert resp.status_code == 200, (params, resp.text)
        assert resp.content == get(unlimited, path, **historical(path, **params)).content


def test_basic_sip_history_without_end_stops_15_minutes_ago(pinned):
    basic, unlimited = plan_account(pinned, "basic"), plan_account(pinned)
    now = server_now(pinned)
    params = dict(symbols="AAPL", timeframe="1Min", start=iso(now - 40 * MINUTE), feed="sip")
    free = get(basic, "/v2/stocks/bars", **params).json()["bars"]["AAPL"]
    paid = get(unlimited, "/v2/stocks/bars", **params).json()["bars"]["AAPL"]
    assert parse_ts(free[-1]["t"]) <= now - 15 * MINUTE < parse_ts(paid[-1]["t"])
    assert free == paid[:len(free)] and len(paid) - len(free) >= 14
    # no feed means SIP here too (the clock moves on, so compare times, not bars)
    default = get(basic, "/v2/stocks/bars", **{k: v for k, v in params.items() if k != "feed"})
    last = parse_ts(default.json()["bars"]["AAPL"][-1]["t"])
    assert parse_ts(free[-1]["t"]) <= last <= server_now(pinned) - 15 * MINUTE
    iex = get(basic, "/v2/stocks/bars", **{**params, "feed": "iex"}).json()["bars"]["AAPL"]
    assert parse_ts(iex[-1]["t"]) >= parse_ts(paid[-1]["t"])       # IEX is real time


def test_basic_sip_is_the_market_as_it_was_15_minutes_ago():
    """With the clocks all but stopped, a basic account's SIP history without ``end`` (and its
    delayed_sip latest quote) equals what an unlimited account read 15 minutes earlier: nothing
    of the last 15 minutes shows, not even the rest of the minute that was in progress then."""
    frozen = dict(seed=7, speed=1e-6)
    with Sandbox(start="2024-03-06T16:00:30Z", **frozen) as late, \
            Sandbox(start="2024-03-06T15:45:30Z", **frozen) as early:
        basic, then = plan_account(late, "basic"), plan_account(early)
        for path, params in (("/v2/stocks/bars", dict(symbols="AAPL,MSFT", timeframe="1Min",
                                                      start="2024-03-06T15:30:00Z")),
                             ("/v2/stocks/bars", dict(symbols="AAPL", timeframe="1Day", start="2024-03-04")),
                             ("/v2/stocks/AAPL/trades", dict(start="2024-03-06T15:44:00Z"))):
            mine, theirs = get(basic, path, **params).json(), get(then, path, **params).json()
            assert mine == theirs and mine[path.rsplit("/", 1)[1]], path
        bars = get(basic, "/v2/stocks/bars", symbols="AAPL", timeframe="1Min", start="2024-03-06T15:30:00Z")
        assert bars.json()["bars"]["AAPL"][-1]["t"] == "2024-03-06T15:44:00Z"     # 15:45 not closed then
        delayed = get(basic, "/v2/stocks/quotes/latest", symbols="AAPL,MSFT", feed="delayed_sip").json()
        assert delayed == get(then, "/v2/stocks/quotes/latest", symbols="AAPL,MSFT").json()


def test_a_bad_parameter_is_a_400_before_the_plan_is_checked(pinned):
    basic = plan_account(pinned, "basic")
    resp = get(basic, "/v2/stocks/bars", symbols="AAPL", timeframe="1Min", feed="sip", limit="0")
    assert resp.status_code == 400
    resp = get(basic, "/v2/stocks/quotes/latest", symbols="AAPL", feed="nasdaq")
    assert resp.status_code == 400


def shape(body):
    """The keys of an answer, nested (the values move with the clock)."""
    return {k: shape(v) for k, v in body.items()} if isinstance(body, dict) else type(body).__name__


@pytest.mark.parametrize("path", LATEST)
def test_latest_and_snapshots_refuse_sip_to_basic_and_default_to_iex(pinned, path):
    basic, unlimited = plan_account(pinned, "basic"), plan_account(pinned)
    params = {} if "/AAPL/" in path else {"symbols": "AAPL,MSFT"}
    resp = get(basic, path, **params, feed="sip")
    assert resp.status_code == 403 and resp.json() == RECENT_SIP
    assert get(unlimited, path, **params, feed="sip").status_code == 200
    for feed in ("iex", "delayed_sip", None):
        extra = {"feed": feed} if feed else {}
        resp = get(basic, path, **params, **extra)
        assert resp.status_code == 200, (feed, resp.text)
        assert shape(resp.json()) == shape(get(unlimited, path, **params, feed=feed or "iex").json())
    delayed = get(basic, "/v2/stocks/quotes/latest", symbols="AAPL", feed="delayed_sip").json()
    assert parse_ts(delayed["quotes"]["AAPL"]["t"]) <= server_now(pinned) - 15 * MINUTE


def test_alpaca_py_sees_the_403_with_alpacas_message(pinned):
    basic = plan_account(pinned, "basic")
    client = StockHistoricalDataClient(basic.key_id, basic.secret_key, url_override=pinned.url)
    client._retry = 0
    with pytest.raises(APIError) as info:
        client.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols="AAPL", feed=DataFeed.SIP))
    assert info.value.status_code == 403 and info.value.message == RECENT_SIP["message"]
    quote = client.get_stock_latest_quote(StockLatestQuoteRequest(symbol_or_symbols="AAPL"))["AAPL"]
    assert 0 < quote.bid_price < quote.ask_price


# ---------------------------------------------------------------- persistence and the command

def test_the_plan_survives_a_restart_and_old_databases_load_as_unlimited(tmp_path):
    db = str(tmp_path / "plans.db")
    with Sandbox(db=db, start="2024-03-06T16:00:00Z") as sb:
        basic, unlimited, old = plan_account(sb, "basic"), plan_account(sb), plan_account(sb)
    with sqlite3.connect(db) as con:   # an account written before plans existed has no data_plan
        record = json.loads(con.execute("SELECT data FROM accounts WHERE id=?", (old.account_id,)).fetchone()[0])
        assert record.pop("data_plan") == "unlimited"
        con.execute("UPDATE accounts SET data=? WHERE id=?", (json.dumps(record), old.account_id))
    with Sandbox(db=db, start="2024-03-06T16:00:00Z") as sb:
        basic, unlimited, old = (SandboxAccount(a.key_id, a.secret_key, a.account_id, sb.url, sb.stream_url)
                                 for a in (basic, unlimited, old))
        assert get(basic, "/sandbox/status").json()["data_plan"] == "basic"
        assert get(basic, "/v2/stocks/quotes/latest", symbols="AAPL", feed="sip").json() == RECENT_SIP
        s = RawDataStream(sb, "/v2/sip")
        s.recv()
        assert s.auth(basic) == [{"T": "error", "code": 409, "msg": "insufficient subscription"}]
        s.close()
        for account in (unlimited, old):
            assert get(account, "/sandbox/status").json()["data_plan"] == "unlimited"
            assert get(account, "/v2/stocks/quotes/latest", symbols="AAPL", feed="sip").status_code == 200
            connect(sb, account, "/v2/sip").close()


def test_the_default_accounts_plan_is_the_configured_one_at_every_start(tmp_path):
    db = str(tmp_path / "default.db")
    with Sandbox(db=db, data_plan="basic") as sb:
        me = default_account(sb)
        assert get(me, "/sandbox/status").json()["data_plan"] == "basic"
        account_id = get(me, "/v2/account").json()["id"]
    with Sandbox(db=db) as sb:
        me = default_account(sb)
        assert get(me, "/v2/account").json()["id"] == account_id         # the same account
        assert get(me, "/sandbox/status").json()["data_plan"] == "unlimited"


def test_the_command_takes_a_data_plan_and_refuses_an_unknown_one():
    proc = subprocess.Popen([sys.executable, "-m", "alpaca_nb.cli", "sandbox", "--port", "0",
                             "--data-plan", "basic"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        line = proc.stdout.readline()
        assert "listening on " in line and "data plan basic" in line, line
        me = SandboxAccount("SANDBOXKEYID", "sandbox-secret-key", "", line.split("listening on ")[1].split()[0], "")
        assert get(me, "/sandbox/status").json()["data_plan"] == "basic"
        assert get(me, "/v2/stocks/AAPL/snapshot", feed="sip").json() == RECENT_SIP
    finally:
        proc.terminate()
        proc.wait(10)
    result = subprocess.run([sys.executable, "-m", "alpaca_nb.cli", "sandbox", "--data-plan", "gold"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "invalid choice: 'gold'" in result.stderr
