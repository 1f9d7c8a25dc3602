"""Corporate actions reach accounts when the sandbox clock crosses an ex-date: splits scale the
position (cash in lieu of a fractional remainder), dividends are fixed at the ex-date and credit
cash with a DIV activity on the payable date,
open orders on a splitting symbol are canceled, and a restart applies an ex-date that passed
while the sandbox was down exactly once. All through REST."""

from __future__ import annotations

import datetime as dt

import pytest
from sandbox_trading_support import Api, frozen, new_api, num, set_clock

from alpaca_nb.sandbox import Sandbox

# seed 7, always-open market: WM splits 2-for-1 with ex-date 2024-06-24, KO's dividend has
# ex-date 2024-06-13 (the tests read both from GET /v1/corporate-actions)
START = "2024-06-10T15:00:00Z"


def corporate_actions(api: Api, **params) -> list[dict]:
    resp = api.get("/v1/corporate-actions", **params)
    assert resp.status_code == 200, resp.text
    return [dict(r, _key=k) for k, records in resp.json()["corporate_actions"].items() for r in records]


def activities(api: Api, kind: str) -> list[dict]:
    resp = api.get(f"/v2/account/activities/{kind}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_split_scales_the_position_and_cancels_open_orders():
    with frozen(START) as sb:
        api = new_api(sb)
        [split] = corporate_actions(api, symbols="WM", types="forward_split", start="2024-06-01", end="2024-06-30")
        assert split["ex_date"] == "2024-06-24"
        api.order(symbol="WM", qty=25)
        before = api.positions()["WM"]
        resting = api.order(symbol="WM", qty=5, side="sell", type="limit", limit_price="5000",
                            time_in_force="gtc")
        cash = num(api.account()["cash"])
        set_clock(sb, "2024-06-23T23:00:00Z")                   # still before the ex-date (NY)
        assert num(api.positions()["WM"]["qty"]) == 25
        set_clock(sb, "2024-06-24T15:00:00Z")
        after = api.positions()["WM"]
        assert num(after["qty"]) == 50
        assert num(after["avg_entry_price"]) == pytest.approx(num(before["avg_entry_price"]) / 2, rel=1e-9)
        assert num(api.account()["cash"]) == pytest.approx(cash)     # nothing paid, nothing charged
        assert api.get_order(resting["id"])["status"] == "canceled"
        [record] = activities(api, "SPLIT")
        assert record["symbol"] == "WM" and num(record["qty"]) == 25 and record["date"] == "2024-06-24"
        assert record["net_amount"] == "0" and "per_share_amount" not in record
        # the market value follows the new price: no fake loss of half the position, not in
        # today's change (yesterday's close is split-adjusted) nor in the portfolio history
        assert num(after["market_value"]) == pytest.approx(num(before["market_value"]), rel=0.15)
        assert num(after["lastday_price"]) < num(after["current_price"]) * 1.2
        assert abs(num(after["change_today"])) < 0.1
        history = api.get("/v2/account/portfolio/history", period="1W", timeframe="1D").json()
        equity = [e for e in history["equity"] if e]
        assert len(equity) >= 5 and min(equity) > 0.95 * max(equity)


def test_reverse_split_pays_cash_in_lieu_of_the_fraction():
    with Sandbox(seed=7) as probe:
        found = corporate_actions(new_api(probe), types="reverse_split", start="2015-01-01", end="2026-12-31")
    split = next(a for a in found if a["old_rate"] in (8, 10, 20))
    ratio = split["new_rate"] / split["old_rate"]
    day = split["ex_date"]
    before_day = (dt.date.fromisoformat(day) - dt.timedelta(days=3)).isoformat()
    with frozen(f"{before_day}T15:00:00Z") as sb:
        api = new_api(sb)
        api.order(symbol=split["symbol"], qty=25)
        cash = num(api.account()["cash"])
        set_clock(sb, f"{day}T15:00:00Z")
        position = api.positions()[split["symbol"]]
        whole = int(25 * ratio)
        assert num(position["qty"]) == whole
        [cil] = activities(api, "CIL")
        remainder = round(25 * ratio - whole, 9)
        assert num(cil["qty"]) == pytest.approx(remainder)
        assert num(cil["net_amount"]) > 0
        assert num(api.account()["cash"]) == pytest.approx(cash + num(cil["net_amount"]))


def ko_dividend(api: Api) -> dict:
    div = next(a for a in corporate_actions(api, symbols="KO", types="cash_dividend",
                                            start="2024-06-01", end="2024-07-31")
               if a["ex_date"] == "2024-06-13")
    assert div["payable_date"] > div["ex_date"]
    return div


def test_a_cash_dividend_is_fixed_at_the_ex_date_and_paid_on_the_payable_date():
    """The holders at the start of the ex-date are entitled (a seller on the ex-date keeps it,
    a buyer that day gets nothing); the cash and the DIV activity come on the payable date."""
    with frozen(START) as sb:
        holder, buyer = new_api(sb), new_api(sb)
        div = ko_dividend(holder)
        holder.order(symbol="KO", qty=10)
        cash = num(holder.account()["cash"])
        set_clock(sb, "2024-06-13T15:00:00Z")                  # the ex-date, 11:00 ET
        assert num(holder.account()["cash"]) == pytest.approx(cash)   # not paid yet
        assert activities(holder, "DIV") == []
        holder.order(symbol="KO", qty=10, side="sell")          # sold: still entitled
        buyer.order(symbol="KO", qty=10)                         # bought on the ex-date: not
        cash = num(holder.account()["cash"])
        payable = dt.date.fromisoformat(div["payable_date"])
        set_clock(sb, f"{payable - dt.timedelta(days=1)}T15:00:00Z")
        assert activities(holder, "DIV") == [] and num(holder.account()["cash"]) == pytest.approx(cash)
        set_clock(sb, f"{payable}T15:00:00Z")
        assert num(holder.account()["cash"]) == pytest.approx(cash + round(10 * div["rate"], 2))
        [record] = activities(holder, "DIV")
        assert record["activity_type"] == "DIV" and record["activity_sub_type"] == "CDIV"
        assert (record["symbol"], record["cusip"], record["date"]) == ("KO", div["cusip"], div["payable_date"])
        assert num(record["qty"]) == 10 and num(record["per_share_amount"]) == div["rate"]
        assert num(record["net_amount"]) == pytest.approx(10 * div["rate"])
        assert record["currency"] == "USD" and record["status"] == "executed"
        assert "KO" not in holder.positions()
        assert activities(buyer, "DIV") == [] and num(buyer.positions()["KO"]["qty"]) == 10
        account = holder.account()
        assert num(account["equity"]) == pytest.approx(num(account["cash"]))   # nothing held
        history = holder.get("/v2/account/portfolio/history", period="1D", timeframe="1Min").json()
        assert history["equity"][-1] == pytest.approx(num(account["equity"]), abs=0.5)


def test_a_dividend_due_while_down_is_paid_once_after_a_restart(tmp_path):
    db = str(tmp_path / "sandbox.db")
    with frozen(START, db=db) as sb:
        api = new_api(sb)
        div = ko_dividend(api)
        api.order(symbol="KO", qty=4)
        keys = (api.key_id, api.secret_key)
        set_clock(sb, "2024-06-14T15:00:00Z")                   # entitled, not paid
        assert activities(api, "DIV") == []
    after = dt.date.fromisoformat(div["payable_date"]) + dt.timedelta(days=1)
    for day in (after, after + dt.timedelta(days=1)):
        with frozen(f"{day}T15:00:00Z", db=db) as sb:
            api = Api(sb.url, *keys)
            [record] = activities(api, "DIV")
            assert record["date"] == div["payable_date"] and num(record["qty"]) == 4


def test_an_ex_date_passed_while_down_is_applied_once_after_a_restart(tmp_path):
    db = str(tmp_path / "sandbox.db")
    with frozen(START, db=db) as sb:
        api = new_api(sb)
        api.order(symbol="WM", qty=3)
        keys = (api.key_id, api.secret_key)
    with frozen("2024-06-25T15:00:00Z", db=db) as sb:
        api = Api(sb.url, *keys)
        assert num(api.positions()["WM"]["qty"]) == 6
        assert len(activities(api, "SPLIT")) == 1
    with frozen("2024-06-26T15:00:00Z", db=db) as sb:
        api = Api(sb.url, *keys)
        assert num(api.positions()["WM"]["qty"]) == 6
        assert len(activities(api, "SPLIT")) == 1


def test_portfolio_history_after_a_restart_replays_the_split_as_before(tmp_path):
    db = str(tmp_path / "sandbox.db")
    with frozen(START, db=db) as sb:
        api = new_api(sb)
        api.order(symbol="WM", qty=3)
        keys = (api.key_id, api.secret_key)
    query = dict(period="1M", timeframe="1D")
    with frozen("2024-06-26T15:00:00Z", db=db) as sb:        # applies the split (ex-date 06-24)
        api = Api(sb.url, *keys)
        assert len(activities(api, "SPLIT")) == 1
        before = api.get("/v2/account/portfolio/history", **query).json()
    with frozen("2024-06-26T15:00:00Z", db=db) as sb:        # a restart replays the stored state
        after = Api(sb.url, *keys).get("/v2/account/portfolio/history", **query).json()
    assert after["equity"] == before["equity"] and after["profit_loss"] == before["profit_loss"]
    equity = [e for e in after["equity"] if e]
    assert min(equity) > 0.9 * max(equity)           # no fake halving of the position's value
