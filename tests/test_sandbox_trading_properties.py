"""Property-based tests of the sandbox's trading engine: random sequences of orders of every type
and class (partial fills, replaces, cancels, bracket/oto/oco legs, closes) and clock advances,
driven through the REST API of real sandboxes, with the account's identities checked after every
step:

* equity = cash + long market value + short market value;
* each position's qty and the cash are what the account's fills imply (``FILL`` activities), and
  each order's filled qty and average price are those of its fills;
* nothing is sold that is not held unless the account may short the asset (no short position on
  a no-shorting account or a non-shortable asset);
* buying power is never negative, an accepted opening limit buy fit in the buying power the
  account showed just before, and one refused for buying power did not;
* the same seed gives the same history: every request goes to two sandboxes with the same seed
  and clock, and their answers (and full account states) must be identical but for random ids.

Corporate actions come with the clock: a rule jumps to the symbols' next ex-date (or to the
payable date of a dividend whose ex-date has passed), where the splits, cash in lieu and
dividends the activities list join the fills in the identities; between a dividend's ex-date and
its payable date the identities hold with the dividend pending (not yet in the cash).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from alpaca_nb.sandbox import Sandbox
from alpaca_nb.sandbox.clock import NY, to_ns
from sandbox_trading_support import Api, admin, new_api

# AAPL: easy to borrow, above $50; GME: hard to borrow (day shorts only), below $50;
# TLRY: under $1 (4-decimal prices), neither shortable nor marginable; GOOG: in the sandbox's
# corporate actions (seed 11) goes ex a cash dividend on 2023-05-22, days after START (payable
# 2023-06-13), and splits 2-for-1 on 2023-06-20
SYMBOLS = ("AAPL", "GME", "TLRY", "GOOG")
SIDES = ("buy", "buy", "sell")     # buys first open the positions that sells then close
# symbols with cash dividends and splits in the sandbox's corporate actions around START
ACTION_SYMBOLS = ("AAPL", "GOOG", "BAC", "MSFT", "V", "GS", "NKE", "PEP", "AMZN", "AMD", "VOO",
                  "SCHW", "PRU", "HPQ", "CMI", "SHW", "RTX", "EMR", "DPZ", "DEO", "EQIX", "CRWD",
                  "MCK", "MPC", "TDG", "WM")
SHORTABLE = {"AAPL": True, "GME": True, "TLRY": False, "GOOG": True}
MARGINABLE = {"AAPL": True, "GME": True, "TLRY": False, "GOOG": True}
STILL = 1e-12          # virtual seconds per wall second: the clock moves only when advanced
START = "2023-05-18T14:00:00Z"    # a Thursday, 10:00 ET
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ACCOUNT_NUMBER = re.compile(r'"account_number":"PA[0-9A-Z]{10}"')
OPEN = ("new", "accepted", "pending_new", "partially_filled", "held")
MONEY_TOL = 1e-4       # the wire rounds money to 6 places; the ledger keeps 8

SETTINGS = settings(max_examples=20, stateful_step_count=20, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def num(value: Any) -> float:
    return float(value) if value is not None else 0.0


def tick(price: float) -> float:
    return round(price, 2 if price >= 1 else 4)


class Twin:
    """One account on each of the two sandboxes; every call goes to both and must get the same
    answer (random ids replaced by their order of first appearance, per sandbox)."""

    def __init__(self, a: Api, b: Api):
        self.apis = (a, b)
        self.ids: tuple[dict[str, str], dict[str, str]] = ({}, {})

    def _normal(self, side: int, resp: requests.Response) -> tuple[int, str]:
        ids = self.ids[side]
        text = UUID.sub(lambda m: ids.setdefault(m.group(0), f"<id{len(ids)}>"), resp.text)
        return resp.status_code, ACCOUNT_NUMBER.sub('"account_number":"PA"', text)

    def _twin_path(self, path: str) -> str:
        """``path`` (naming ids the first sandbox gave) with the second sandbox's ids."""
        theirs = {token: uuid for uuid, token in self.ids[1].items()}
        return UUID.sub(lambda m: theirs[self.ids[0][m.group(0)]], path)

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any]:
        answers = []
        for api, path in zip(self.apis, (path, self._twin_path(path))):
            if method == "GET":
                answers.append(api.get(path, **params))
            elif method == "DELETE":
                answers.append(api.delete(path, **params))
            else:
                answers.append(getattr(api, method.lower())(path, body))
        first, second = (self._normal(i, r) for i, r in enumerate(answers))
        if first != second:
            at = next((i for i, (x, y) in enumerate(zip(first[1], second[1])) if x != y),
                      min(len(first[1]), len(second[1])))
            raise AssertionError(f"{method} {path} {body}: the twin sandboxes differ: "
                                 f"{first[0]} ...{first[1][max(0, at - 300):at + 200]}... vs "
                                 f"{second[0]} ...{second[1][max(0, at - 300):at + 200]}...")
        resp = answers[0]
        return resp.status_code, (resp.json() if resp.content else None)


def advance_both(sandboxes, seconds: float) -> None:
    for sb in sandboxes:
        resp = requests.post(f"{sb.url}/sandbox/clock", json={"advance": seconds},
                             headers=admin(sb), timeout=120)
        assert resp.status_code == 200, resp.text


class Trading(RuleBasedStateMachine):
    """Each run starts two fresh sandboxes (same seed, market and clock: START), so a run is
    replayed exactly when hypothesis shrinks it."""

    def __init__(self):
        super().__init__()
        self.sandboxes: tuple[Sandbox, ...] = ()
        self.twin: Twin | None = None
        self.state: dict[str, Any] = {}
        self.cash0 = 0.0
        self.can_short = True
        self.pending = False        # a listed dividend is between its ex-date and payable date

    # ------------------------------------------------------------------ setup and teardown
    @initialize(cash=st.sampled_from([30_000, 250_000]), no_shorting=st.booleans(),
                multiplier=st.sampled_from(["1", "2"]))
    def open_accounts(self, cash, no_shorting, multiplier):
        self.sandboxes = tuple(Sandbox(seed=11, market="calendar", start=START, speed=STILL).start()
                               for _ in range(2))
        self.twin = Twin(*(new_api(sb, cash=cash) for sb in self.sandboxes))
        self.cash0 = float(cash)
        status, _ = self.twin.call("PATCH", "/v2/account/configurations",
                                   {"no_shorting": no_shorting, "max_margin_multiplier": multiplier})
        assert status == 200
        self.can_short = not no_shorting and multiplier != "1"
        self.multiplier = float(multiplier)
        _, clock = self.twin.call("GET", "/v2/clock")
        if not clock["is_open"]:        # start each run in regular hours, where orders trade
            wait = (to_ns(clock["next_open"]) - to_ns(clock["timestamp"])) / 1e9
            advance_both(self.sandboxes, wait + 600)

    def teardown(self):
        for sb in self.sandboxes:
            sb.stop()

    # ------------------------------------------------------------------ helpers
    def last(self, symbol: str) -> float:
        status, body = self.twin.call("GET", f"/v2/stocks/{symbol}/trades/latest")
        assert status == 200
        return float(body["trade"]["p"])

    def open_orders(self) -> list[dict]:
        return [o for o in self.state.get("orders", ()) if o["status"] in OPEN]

    def shortable(self, symbol: str) -> bool:
        if symbol not in SHORTABLE:
            _, asset = self.twin.call("GET", f"/v2/assets/{symbol}")
            SHORTABLE[symbol] = asset["shortable"]
        return SHORTABLE[symbol]

    def held(self, symbol: str) -> float:
        return self.state.get("positions", {}).get(symbol, 0.0)

    # ------------------------------------------------------------------ rules
    @rule(symbol=st.sampled_from(SYMBOLS), side=st.sampled_from(SIDES),
          otype=st.sampled_from(["market", "limit", "stop", "stop_limit", "trailing_stop"]),
          tif=st.sampled_from(["day", "gtc", "ioc", "fok", "opg", "cls"]),
          qty=st.sampled_from([1, 7, 60, 450, 2500]),
          offset=st.sampled_from([-0.03, -0.004, 0.0, 0.004, 0.03]),
          extended=st.booleans())
    def simple_order(self, symbol, side, otype, tif, qty, offset, extended):
        last = self.last(symbol)
        body: dict[str, Any] = {"symbol": symbol, "qty": qty, "side": side, "type": otype,
                                "time_in_force": tif}
        if otype in ("limit", "stop_limit"):
            body["limit_price"] = tick(last * (1 + offset))
        if otype in ("stop", "stop_limit"):
            body["stop_price"] = tick(last * (1 - offset if side == "buy" else 1 + offset))
        if otype == "trailing_stop":
            body["trail_percent"] = 1.5
        if extended and otype == "limit":
            body["extended_hours"] = True
        bp_before = num(self.state.get("account", {}).get("buying_power"))
        status, answer = self.twin.call("POST", "/v2/orders", body)
        assert status in (200, 403, 422), answer
        if otype == "limit" and side == "buy" and self.held(symbol) >= 0 and not extended:
            factor = 1.0 if MARGINABLE[symbol] or self.multiplier <= 1 else self.multiplier
            cost = qty * body["limit_price"] * factor
            if status == 200:
                assert cost <= bp_before + 1e-3, (cost, bp_before, answer)
            elif answer.get("message") == "insufficient buying power":
                assert cost > bp_before - 1e-3, (cost, bp_before, answer)

    @rule(symbol=st.sampled_from(SYMBOLS), side=st.sampled_from(SIDES),
          amount=st.sampled_from([5, 250, 20_000]))
    def notional_order(self, symbol, side, amount):
        status, answer = self.twin.call("POST", "/v2/orders", {
            "symbol": symbol, "notional": amount, "side": side, "type": "market",
            "time_in_force": "day"})
        assert status in (200, 403, 422), answer

    @rule(symbol=st.sampled_from(SYMBOLS), side=st.sampled_from(SIDES),
          klass=st.sampled_from(["bracket", "oto", "oco"]),
          entry=st.sampled_from(["market", "limit"]), tif=st.sampled_from(["day", "gtc"]),
          qty=st.sampled_from([3, 40, 600, 3000]),
          spread=st.sampled_from([0.001, 0.01, 0.05]), which=st.sampled_from(["tp", "sl"]))
    def group_order(self, symbol, side, klass, entry, tif, qty, spread, which):
        last = self.last(symbol)
        exit_sells = (side == "buy") if klass != "oco" else (side == "sell")
        up, down = tick(last * (1 + spread)), tick(last * (1 - spread))
        tp, sl = (up, down) if exit_sells else (down, up)
        body: dict[str, Any] = {"symbol": symbol, "qty": qty, "side": side, "time_in_force": tif,
                                "order_class": klass, "type": "limit" if klass == "oco" else entry}
        if body["type"] == "limit" and klass != "oco":
            body["limit_price"] = tick(last)
        if klass != "oto" or which == "tp":
            body["take_profit"] = {"limit_price": tp}
        if klass != "oto" or which == "sl":
            body["stop_loss"] = {"stop_price": sl}
        status, answer = self.twin.call("POST", "/v2/orders", body)
        assert status in (200, 403, 422), answer

    @rule(symbol=st.sampled_from(SYMBOLS), fraction=st.sampled_from([0.5, 1.0]),
          otype=st.sampled_from(["market", "limit"]))
    def trade_out(self, symbol, fraction, otype):
        """Sell (or cover) part or all of what the last snapshot showed as held."""
        held = self.held(symbol)
        qty = int(abs(held) * fraction)
        if not qty:
            return
        body = {"symbol": symbol, "qty": qty, "side": "sell" if held > 0 else "buy", "type": otype,
                "time_in_force": "day"}
        if otype == "limit":
            body["limit_price"] = tick(self.last(symbol))
        status, answer = self.twin.call("POST", "/v2/orders", body)
        assert status in (200, 403, 422), answer

    @rule(pick=st.integers(0, 1000), what=st.sampled_from(["qty", "limit_price", "stop_price",
                                                            "trail", "time_in_force"]),
          factor=st.sampled_from([0.5, 0.99, 1.01, 2.0]))
    def replace(self, pick, what, factor):
        orders = self.open_orders()
        if not orders:
            return
        order = orders[pick % len(orders)]
        if what == "qty":
            body = {"qty": max(1, int(num(order["qty"]) * factor))}
        elif what == "time_in_force":
            body = {"time_in_force": "gtc" if order["time_in_force"] == "day" else "day"}
        elif what == "trail":
            body = {"trail": 2.5 if factor > 1 else 0.5}
        else:
            price = order.get(what)
            if price is None:
                return
            body = {what: tick(num(price) * (1 + (factor - 1) / 50))}
        status, answer = self.twin.call("PATCH", f"/v2/orders/{order['id']}", body)
        assert status in (200, 403, 422), answer

    @rule(pick=st.integers(0, 1000))
    def cancel(self, pick):
        orders = self.open_orders()
        if orders:
            status, answer = self.twin.call("DELETE", f"/v2/orders/{orders[pick % len(orders)]['id']}")
            assert status in (204, 422), answer

    @rule()
    def cancel_all(self):
        status, _ = self.twin.call("DELETE", "/v2/orders")
        assert status == 207

    @rule(symbol=st.sampled_from(SYMBOLS), percentage=st.sampled_from([None, 50, 100]))
    def close_position(self, symbol, percentage):
        params = {} if percentage is None else {"percentage": percentage}
        status, answer = self.twin.call("DELETE", f"/v2/positions/{symbol}", **params)
        assert status in (200, 403, 404, 422), answer

    @rule(shares=st.sampled_from([0, 3, 25]))
    def through_an_ex_date(self, shares):
        """Buy ``shares`` of the first symbol (of a wide list) with an announced corporate action
        ahead (within a quarter), then move the clock to 10:00 ET on its ex-date: positions split
        or are entitled to a dividend (paid on its payable date), open orders in a splitting
        symbol are canceled."""
        self.go_to_next(shares=shares, payable=False)

    @precondition(lambda self: self.pending)
    @rule()
    def to_a_payable_date(self):
        """After a dividend's ex-date, move the clock to 10:00 ET on the first payable date of
        the dividends that went ex: the dividends due are paid."""
        self.go_to_next(shares=0, payable=True)

    def go_to_next(self, *, shares: int, payable: bool) -> None:
        _, clock = self.twin.call("GET", "/v2/clock")
        today = clock["timestamp"][:10]
        end = (dt.date.fromisoformat(today) + dt.timedelta(days=92)).isoformat()
        _, found = self.twin.call("GET", "/v1/corporate-actions", symbols=",".join(ACTION_SYMBOLS),
                                  start=today, end=end, limit=1000,
                                  types="forward_split,reverse_split,cash_dividend")
        listed = [a for group in found["corporate_actions"].values() for a in group if a.get("symbol")]
        actions = sorted((a["ex_date"], a["symbol"]) for a in listed
                         if today < (a.get("ex_date") or "") <= end)
        payments = sorted(a["payable_date"] for a in listed
                          if "rate" in a and a["ex_date"] <= today < a["payable_date"])
        if payable:
            if not payments:
                return
            day, symbol = payments[0], None
        elif actions:
            day, symbol = actions[0]
        else:
            return
        event("to a payable date" if payable else "to an ex-date")
        # a cash dividend that has gone ex and is not paid yet at ``day``
        self.pending = any("rate" in a and a["ex_date"] <= day < a["payable_date"] for a in listed)
        if shares:
            self.twin.call("POST", "/v2/orders", {"symbol": symbol, "qty": shares, "side": "buy",
                                                  "type": "market", "time_in_force": "gtc"})
        target = dt.datetime.fromisoformat(day + "T10:00:00").replace(tzinfo=NY)
        advance_both(self.sandboxes, (to_ns(target) - to_ns(clock["timestamp"])) / 1e9)

    @rule(seconds=st.sampled_from([1, 20, 61, 61, 600, 600, 3_600, 5 * 3_600, 22 * 3_600]))
    def advance(self, seconds):
        advance_both(self.sandboxes, seconds)

    # ------------------------------------------------------------------ identities
    @invariant()
    def identities_hold(self):
        if self.twin is None:
            return
        _, account = self.twin.call("GET", "/v2/account")
        _, positions = self.twin.call("GET", "/v2/positions")
        _, orders = self.twin.call("GET", "/v2/orders", status="all", limit=500, direction="asc")
        activities, token = [], None
        while True:
            params = {"direction": "asc", "page_size": 100}
            if token:
                params["page_token"] = token
            _, page = self.twin.call("GET", "/v2/account/activities", **params)
            activities += page
            if len(page) < 100:
                break
            token = page[-1]["id"]

        cash, equity = num(account["cash"]), num(account["equity"])
        long_mv, short_mv = num(account["long_market_value"]), num(account["short_market_value"])
        assert equity == pytest.approx(cash + long_mv + short_mv, abs=3 * MONEY_TOL)
        assert num(account["buying_power"]) >= 0

        qty: dict[str, float] = defaultdict(float)
        by_order: dict[str, list[tuple[float, float]]] = defaultdict(list)
        implied_cash = self.cash0
        for record in activities:
            kind = record["activity_type"]
            if kind == "FILL":
                q, p = num(record["qty"]), num(record["price"])
                signed = q if record["side"] == "buy" else -q
                qty[record["symbol"]] += signed
                implied_cash -= signed * p
                by_order[record["order_id"]].append((q, p))
            elif kind == "SPLIT":                  # shares added (removed by a reverse split)
                qty[record["symbol"]] += num(record["qty"])
            elif kind == "CIL":                    # the fraction a split left, paid in cash
                qty[record["symbol"]] -= num(record["qty"])
                implied_cash += num(record["net_amount"])
            elif kind in ("DIV", "SPIN"):
                implied_cash += num(record["net_amount"])
                event(f"identities checked with a {kind} paid")
            else:
                assert kind == "CSD", record
        assert cash == pytest.approx(implied_cash, abs=MONEY_TOL)
        held = {p["symbol"]: num(p["qty"]) for p in positions}
        assert held == pytest.approx({s: round(q, 9) for s, q in qty.items() if abs(q) > 1e-9})
        market_values = [num(p["market_value"]) for p in positions]
        assert long_mv == pytest.approx(sum(v for v in market_values if v > 0), abs=MONEY_TOL)
        assert short_mv == pytest.approx(sum(v for v in market_values if v < 0), abs=MONEY_TOL)
        for symbol, q in held.items():
            if not (self.can_short and self.shortable(symbol)):
                assert q > 0, f"short {q} {symbol} on an account/asset that cannot short"
        by_id = {o["id"]: o for o in orders}
        for order in orders:
            # a replacement carries its chain's fills (Alpaca's cancel/replace of one order)
            executions, link = [], order
            while link is not None:
                executions += by_order.get(link["id"], [])
                link = by_id.get(link["replaces"]) if link["replaces"] else None
            filled = sum(q for q, _ in executions)
            assert num(order["filled_qty"]) == pytest.approx(filled, abs=1e-9), order
            if filled:
                vwap = sum(q * p for q, p in executions) / filled
                # kept to 9 places after each fill, as a running average
                assert num(order["filled_avg_price"]) == pytest.approx(
                    vwap, abs=1e-9 * (len(executions) + 1)), order
            total = num(order["qty"]) if order["qty"] is not None else math.inf
            assert num(order["filled_qty"]) <= total + 1e-9, order
        self.state = {"account": account, "positions": held, "orders": orders}


def test_random_trading_keeps_the_accounts_identities():
    run_state_machine_as_test(Trading, settings=SETTINGS)
