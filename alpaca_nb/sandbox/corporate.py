"""Corporate actions of the synthetic market: a deterministic set of forward splits, reverse
splits, quarterly cash dividends and a few spin-offs, from the seed, for the years
:data:`FIRST_YEAR` .. :data:`LAST_YEAR`.

Per symbol (computed on first use, cached): splits are drawn per year with a probability that
rises with the price (forward splits for expensive stocks, reverse splits for cheap ones), cash
dividends every quarter for about half the stocks and most ETFs (a yield, a growth rate, a
fixed month and day of the quarter), spin-offs rarely. Ex-dates fall on weekdays that are
sessions of the market mode; ``record_date`` is the ex-date (T+1 settlement),
``payable_date`` and ``process_date`` a few weeks later for dividends and the ex-date for
splits. Every action is listed from its announcement (some days before its ex-date). Ids
(uuid5) and CUSIPs (with a valid check digit; a reverse split gives the symbol a new one) are
stable for a seed and market mode.

The synthetic prices carry the actions (see :meth:`CorporateActions.raw_scale`): from its
ex-date on, a 2-for-1 split halves the raw price and doubles the volume, a cash dividend lowers
the price by about its amount and a spin-off by about the value spun off (those two steps are
sized on the asset list's price, which spares the market a long noise path per symbol; the
difference to the day's close is within a day's noise). Prices are anchored as the market's
are (near the asset list's price on 2025-06-02), so adjusting history for the actions gives a
continuous series (exactly for splits).

Adjustment factors (the price multiplier for bars before the ex-date, :attr:`Action.factor`):
a split ``old_rate / new_rate`` (volume ``new_rate / old_rate``); a cash dividend
``1 - amount / previous close`` (the previous session's raw close, before rounding); a spin-off
``1 - spun-off value / previous close``. Alpaca's exact dividend factor is unconfirmed; this is
the usual (CRSP) one and the sandbox's choice.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import string
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ._noise import key_of
from .clock import Sessions

__all__ = [
    "ADJUSTMENT_TYPES",
    "FIRST_YEAR",
    "LAST_YEAR",
    "TYPES",
    "Action",
    "CorporateActions",
    "cusip_of",
]

FIRST_YEAR, LAST_YEAR = 2010, 2030
ANCHOR = dt.date(2025, 6, 2)              # the market's anchor date (prices near the list's)
TYPES = ("forward_split", "reverse_split", "unit_split", "stock_dividend", "cash_dividend",
         "spin_off", "cash_merger", "stock_merger", "stock_and_cash_merger", "redemption",
         "name_change", "worthless_removal", "rights_distribution", "reorganization",
         "partial_call", "capital_gains_distribution")
# which action types each value of the bars endpoint's ``adjustment`` applies
ADJUSTMENT_TYPES = {"raw": frozenset(), "split": frozenset({"forward_split", "reverse_split"}),
                    "dividend": frozenset({"cash_dividend"}), "spin-off": frozenset({"spin_off"})}
ADJUSTMENT_TYPES["all"] = frozenset().union(*ADJUSTMENT_TYPES.values())
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "corporate-actions.sandbox.alpaca-nb")
_FORWARD = ((2, 1, 0.6), (3, 1, 0.15), (4, 1, 0.1), (3, 2, 0.1), (10, 1, 0.05))
_REVERSE = ((5, 0.3), (10, 0.4), (20, 0.2), (8, 0.1))
_CUSIP_CHARS = string.digits + string.ascii_uppercase


@lru_cache(maxsize=4096)
def cusip_of(symbol: str, generation: int = 0) -> str:
    """A stable 9-character CUSIP for a symbol (``generation`` counts its reverse splits: each
    gives a new issue number), with a valid check digit."""
    rng = random.Random(key_of("cusip", symbol))
    issuer = "".join(_CUSIP_CHARS[int(rng.random() * 36)] if i else str(int(rng.random() * 10))
                     for i in range(6))
    body = issuer + f"{10 + generation:02d}"[-2:]
    total = 0
    for i, ch in enumerate(body):
        v = int(ch) if ch.isdigit() else ord(ch) - 55
        if i % 2:
            v *= 2
        total += v // 10 + v % 10
    return body + str((10 - total % 10) % 10)


@dataclass(frozen=True)
class Action:
    """One corporate action. Rates are per share; dates are New York dates.

    ``factor`` multiplies prices of bars before ``ex_date`` when adjusting (``volume_factor``
    their volume); ``step`` is the raw price's multiplier from ``ex_date`` on.
    """

    id: str
    type: str
    symbol: str
    ex_date: dt.date
    process_date: dt.date
    record_date: dt.date
    payable_date: dt.date
    announced: dt.date
    cusip: str
    new_cusip: str = ""
    old_rate: float = 1.0
    new_rate: float = 1.0
    rate: float = 0.0
    new_symbol: str = ""
    factor: float = 1.0
    step: float = 1.0

    @property
    def volume_factor(self) -> float:
        return self.new_rate / self.old_rate if self.type in ("forward_split", "reverse_split") else 1.0

    def wire(self) -> dict:
        """The record of ``GET /v1/corporate-actions`` (protocol 4.6)."""
        d = {"id": self.id, "process_date": self.process_date.isoformat(),
             "ex_date": self.ex_date.isoformat(), "record_date": self.record_date.isoformat(),
             "payable_date": self.payable_date.isoformat()}
        rates = {"old_rate": _num(self.old_rate), "new_rate": _num(self.new_rate)}
        if self.type == "forward_split":
            d.update(symbol=self.symbol, cusip=self.cusip, **rates)
        elif self.type == "reverse_split":
            d.update(symbol=self.symbol, old_cusip=self.cusip, new_cusip=self.new_cusip, **rates)
        elif self.type == "cash_dividend":
            d.update(symbol=self.symbol, cusip=self.cusip, rate=self.rate, special=False,
                     foreign=False)
        elif self.type == "spin_off":
            d.update(source_symbol=self.symbol, source_cusip=self.cusip,
                     source_rate=_num(self.old_rate), new_symbol=self.new_symbol,
                     new_cusip=self.new_cusip, new_rate=_num(self.new_rate))
        return d

    def sort_key(self) -> tuple:
        return (self.process_date, self.type, self.symbol, self.id)


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


@dataclass
class _Schedule:
    """One symbol's actions: the raw price steps (needed for every price) at once, the
    :class:`Action` records (needed by the routes and the engine) when first asked for."""

    make: Callable[[], list[Action]] = list
    ex_ords: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    cum_price: np.ndarray = field(default_factory=lambda: np.zeros(1))   # log steps, prefix sums
    cum_volume: np.ndarray = field(default_factory=lambda: np.zeros(1))
    anchor_i: int = 0
    _actions: list[Action] | None = None

    @property
    def actions(self) -> list[Action]:      # by ex_date
        if self._actions is None:
            self._actions = self.make()
        return self._actions


class CorporateActions:
    """The action set of one market (seed and mode).

    Args:
        seed: the market seed.
        sessions: the market's sessions (ex-dates fall on sessions).
        assets: rows of the asset list (``symbol``, ``price``, ``kind``, ``status``).
        closes: ``closes(symbol, ordinals)`` -> the market's closes of those NY dates before any
            corporate action is applied (the noise path), used to size dividends.
    """

    def __init__(self, *, seed: int, sessions: Sessions, assets: Iterable[dict],
                 closes: Callable[[str, np.ndarray], np.ndarray]):
        self.seed = int(seed)
        self.sessions = sessions
        self._rows = {row["symbol"]: row for row in assets}
        self._closes = closes
        self._schedules: dict[str, _Schedule] = {}
        self._all: list[Action] | None = None
        self._by_id: dict[str, Action] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ queries
    def for_symbol(self, symbol: str) -> list[Action]:
        """Every action of ``symbol`` (past and future), by ex-date; [] for unknown symbols."""
        return self._schedule(symbol).actions

    def all(self) -> list[Action]:
        """Every action of every symbol, by (process_date, type, symbol, id)."""
        if self._all is None:
            found = [a for sym in sorted(self._rows) for a in self.for_symbol(sym)]
            self._all = sorted(found, key=Action.sort_key)
        return self._all

    def by_id(self, action_id: str) -> Action | None:
        if not self._by_id:
            self._by_id = {a.id: a for a in self.all()}
        return self._by_id.get(action_id)

    def effective(self, symbol: str, types: frozenset[str], today: dt.date) -> list[Action]:
        """Actions of ``symbol`` of these types whose ex-date is on or before ``today``."""
        return [a for a in self.for_symbol(symbol) if a.type in types and a.ex_date <= today]

    def between(self, symbols: Iterable[str], first: dt.date, last: dt.date) -> list[Action]:
        """Actions of these symbols with ``first < ex_date <= last``, by ex-date."""
        out = [a for s in symbols for a in self.for_symbol(s) if first < a.ex_date <= last]
        return sorted(out, key=lambda a: (a.ex_date, a.symbol, a.type))

    def raw_scale(self, symbol: str, ords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log price shift, volume multiplier) of the raw market on these NY date ordinals,
        relative to the anchor date: the actions with ex-date on or before each date apply."""
        sched = self._schedule(symbol)
        if not len(sched.ex_ords):
            return np.zeros(len(ords)), np.ones(len(ords))
        i = np.searchsorted(sched.ex_ords, ords, side="right")
        price = sched.cum_price[i] - sched.cum_price[sched.anchor_i]
        volume = np.exp(sched.cum_volume[i] - sched.cum_volume[sched.anchor_i])
        return price, volume

    # ------------------------------------------------------------ generation
    def _schedule(self, symbol: str) -> _Schedule:
        sched = self._schedules.get(symbol)
        if sched is None:
            with self._lock:
                sched = self._schedules.get(symbol)
                if sched is None:
                    sched = self._schedules[symbol] = self._generate(symbol)
        return sched

    def _ex_date(self, day: dt.date) -> dt.date:
        """The first weekday on or after ``day`` that is a session."""
        if self.sessions.mode == "always-open":
            return day + dt.timedelta(days=max(0, 7 - day.weekday()) if day.weekday() >= 5 else 0)
        for _ in range(30):
            if day.weekday() < 5 and self.sessions.session(day) is not None:
                return day
            day += dt.timedelta(days=1)
        return day

    def _uuid(self, *parts) -> str:
        return str(uuid.uuid5(_NAMESPACE, "|".join(str(p) for p in (self.seed, self.sessions.mode, *parts))))

    def _generate(self, symbol: str) -> _Schedule:
        row = self._rows.get(symbol)
        if row is None or row.get("status", "active") != "active":
            return _Schedule()
        rng = random.Random(key_of("corporate-actions", self.seed, self.sessions.mode, symbol))
        price = float(row["price"])
        etf = row.get("kind") == "etf"
        plans: list[tuple[dt.date, str, dict]] = []
        for year in range(FIRST_YEAR, LAST_YEAR + 1):
            u, day = rng.random(), rng.random()
            p_fwd = (0.05 if price >= 300 else 0.025 if price >= 150 else 0.006 if price >= 50 else 0.0)
            p_rev = 0.04 if price < 10 else 0.01 if price < 25 else 0.0
            if etf:
                p_fwd, p_rev = p_fwd / 3, p_rev / 3
            when = dt.date(year, 1, 15) + dt.timedelta(days=int(day * 330))
            if u < p_fwd:
                new, old = _pick(rng, [((n, o), w) for n, o, w in _FORWARD])
                plans.append((when, "forward_split", {"new_rate": new, "old_rate": old}))
            elif u < p_fwd + p_rev and not any(k == "reverse_split" for _, k, _ in plans):
                old = _pick(rng, list(_REVERSE))
                plans.append((when, "reverse_split", {"new_rate": 1, "old_rate": old}))
            elif not etf and price >= 30 and u > 1 - 0.004:
                plans.append((when, "spin_off", {"fraction": 0.05 + 0.15 * rng.random()}))
        if rng.random() < (0.8 if etf else 0.55) and price >= 5:
            yearly = (0.008 + 0.027 * rng.random()) if etf else (0.005 + 0.04 * rng.random())
            growth = 0.08 * rng.random()
            month0, day0 = 1 + int(rng.random() * 3), 5 + int(rng.random() * 20)
            first = FIRST_YEAR + int(rng.random() * 7)
            for year in range(first, LAST_YEAR + 1):
                base = yearly / 4 * price * (1 + growth) ** (year - ANCHOR.year)
                for q in range(4):
                    plans.append((dt.date(year, month0 + 3 * q, day0), "cash_dividend", {"amount": base}))
        return self._build(symbol, plans)

    def _build(self, symbol: str, plans: list[tuple[dt.date, str, dict]]) -> _Schedule:
        items = []
        for when, kind, params in plans:
            ex = self._ex_date(when)
            if self.sessions.mode == "always-open":
                items.append((ex, ex - dt.timedelta(days=1), kind, params))
                continue
            prev = self.sessions.previous_session(ex)
            if prev is not None:
                items.append((ex, prev.date, kind, params))
        items.sort(key=lambda x: (x[0], x[2]))
        seen: set[tuple] = set()
        items = [x for x in items if (x[0], x[2]) not in seen and not seen.add((x[0], x[2]))]
        if not items:
            return _Schedule()
        # split multipliers of the raw price relative to the anchor, at each previous close
        split_log = [(ex.toordinal(), math.log(p["old_rate"] / p["new_rate"]))
                     for ex, _, kind, p in items if kind.endswith("_split")]
        s_ords = np.array([o for o, _ in split_log], np.int64)
        s_cum = np.concatenate(([0.0], np.cumsum([v for _, v in split_log])))
        s_anchor = s_cum[np.searchsorted(s_ords, ANCHOR.toordinal(), side="right")]

        priced = [i for i, x in enumerate(items) if not x[2].endswith("_split")]
        both = np.array([[items[i][0].toordinal(), items[i][1].toordinal()] for i in priced], np.int64)
        scales = np.exp(s_cum[np.searchsorted(s_ords, both.ravel(), side="right")] - s_anchor) \
            if priced else np.empty(0)
        scale_of = {day: float(x) for day, x in zip(both.ravel().tolist(), scales.tolist())}

        def split_scale(day: dt.date) -> float:
            return scale_of[day.toordinal()]

        # the raw steps are sized on the list price (the market's price at the anchor) adjusted
        # for splits, not on the day's close: the noise path over two decades would cost more
        # than every other step of a symbol's first prices; the adjustment factors use the real
        # closes (:meth:`_factors`)
        list_price = float(self._rows[symbol]["price"])
        steps: dict[int, tuple[float, float]] = {}      # item -> (raw step, cash per share)
        for i in priced:
            ex, prev, kind, p = items[i]
            close = list_price * split_scale(prev)
            if kind == "spin_off":
                steps[i] = (1 - p["fraction"], close * p["fraction"])
            elif close >= 1:                            # no dividend below a dollar
                cash = _cash(p["amount"] * split_scale(ex), close)
                steps[i] = (1 - cash / close, cash)
        anchor = ANCHOR.toordinal()

        kept = [i for i, x in enumerate(items) if x[2].endswith("_split") or i in steps]
        step_of = {i: (items[i][3]["old_rate"] / items[i][3]["new_rate"]) if i not in steps else steps[i][0]
                   for i in kept}
        ex_ords = np.array([items[i][0].toordinal() for i in kept], np.int64)
        cum_price = np.concatenate(([0.0], np.cumsum([math.log(step_of[i]) for i in kept])))
        cum_volume = np.concatenate(([0.0], np.cumsum(
            [-math.log(step_of[i]) if i not in steps else 0.0 for i in kept])))
        anchor_i = int(np.searchsorted(ex_ords, anchor, side="right"))
        return _Schedule(lambda: self._actions(symbol, items, steps), ex_ords, cum_price,
                         cum_volume, anchor_i)

    def _factors(self, symbol: str, items: list[tuple], steps: dict[int, tuple[float, float]]) -> dict[int, float]:
        """Adjustment factor of each dividend and spin-off: ``1 - cash / previous close``, the
        previous session's raw close (unrounded) as the market serves it."""
        priced = sorted(steps)
        if not priced:
            return {}
        ords = np.array([items[i][1].toordinal() for i in priced], np.int64)
        shift, _ = self.raw_scale(symbol, ords)
        closes = self._closes(symbol, ords) * np.exp(shift)
        return {i: 1.0 - min(steps[i][1] / close, 0.5) for i, close in zip(priced, closes.tolist())}

    def _actions(self, symbol: str, items: list[tuple], steps: dict[int, tuple[float, float]]) -> list[Action]:
        actions: list[Action] = []
        generation = 0
        factor_of = self._factors(symbol, items, steps)
        for i, (ex, prev, kind, p) in enumerate(items):
            cusip = cusip_of(symbol, generation)
            ident = self._uuid(symbol, kind, ex.isoformat())
            common = {"id": ident, "type": kind, "symbol": symbol, "ex_date": ex, "record_date": ex,
                          "cusip": cusip}
            if kind.endswith("_split"):
                if kind == "reverse_split":
                    generation += 1
                    common["new_cusip"] = cusip_of(symbol, generation)
                step = p["old_rate"] / p["new_rate"]
                actions.append(Action(**common, process_date=ex, payable_date=ex,
                                      announced=ex - dt.timedelta(days=10 + ex.day % 20),
                                      old_rate=p["old_rate"], new_rate=p["new_rate"],
                                      factor=step, step=step))
                continue
            if i not in steps:
                continue
            g, cash = steps[i]
            payable = self._ex_date(ex + dt.timedelta(days=14 + ex.toordinal() % 14))
            announced = ex - dt.timedelta(days=14 + ex.toordinal() % 21)
            if kind == "spin_off":
                new_symbol = _spun_symbol(symbol, ex, self._rows)
                actions.append(Action(**common, process_date=ex, payable_date=ex, announced=announced,
                                      new_cusip=cusip_of(new_symbol), old_rate=1,
                                      new_rate=round(0.2 + 0.8 * (ex.day % 5) / 4, 4),
                                      rate=round(cash, 4), new_symbol=new_symbol,
                                      factor=factor_of[i], step=g))
            else:
                actions.append(Action(**common, process_date=payable, payable_date=payable,
                                      announced=announced, rate=cash, factor=factor_of[i], step=g))
        return actions


def _pick(rng: random.Random, weighted: list[tuple]) -> object:
    u = rng.random() * sum(w for _, w in weighted)
    for value, w in weighted:
        u -= w
        if u < 0:
            return value
    return weighted[-1][0]


def _cash(amount: float, close: float) -> float:
    """A dividend in whole cents, at least a cent and at most 3% of the close."""
    return max(0.01, round(min(amount, 0.03 * close), 2))


def _spun_symbol(symbol: str, ex: dt.date, taken) -> str:
    """A ticker for a spun-off company that is not in the asset list."""
    for i in range(26 * 26):
        letter = string.ascii_uppercase[(ex.toordinal() + i) % 26]
        name = (symbol[:3] + letter) if i < 26 else symbol[:2] + string.ascii_uppercase[i // 26] + letter
        if name not in taken and name != symbol:
            return name
    return symbol + "W"
