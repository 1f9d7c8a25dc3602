"""The synthetic markets' value types: quotes, trades and bars as named tuples, columnar
:class:`Bars` and :class:`Ticks`, and the bar :class:`Timeframe` grammar (protocol 4.2).

Shared by the equity market (:mod:`.market`), the crypto market (:mod:`.crypto_market`) and the
data endpoints. All instants are integer nanoseconds since the epoch (UTC); prices in dollars.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "BAR_FIELDS",
    "EMPTY_BARS",
    "TRADE_ID_STRIDE",
    "UNIT_DAY",
    "UNIT_HOUR",
    "UNIT_MINUTE",
    "UNIT_MONTH",
    "UNIT_WEEK",
    "BarTick",
    "Bars",
    "QuoteTick",
    "Ticks",
    "Timeframe",
    "TradeTick",
]


# ---------------------------------------------------------------- public value types

class QuoteTick(NamedTuple):
    """One quote: ``t`` in ns; prices in dollars; sizes in shares (>= 100); exchange codes."""

    t: int
    bid: float
    bid_size: int
    ask: float
    ask_size: int
    bid_exchange: str
    ask_exchange: str


class TradeTick(NamedTuple):
    """One trade: ``t`` in ns, price in dollars, size in shares, exchange code, trade id."""

    t: int
    price: float
    size: int
    exchange: str
    id: int


class BarTick(NamedTuple):
    """One bar: ``t`` (bar start, ns), OHLC in dollars, volume in shares, trade count, VWAP."""

    t: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    trade_count: int
    vwap: float


@dataclass(frozen=True, eq=False)
class Bars:
    """Columnar bars, sorted by ``t`` (bar start, int64 ns)."""

    t: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray
    n: np.ndarray
    vw: np.ndarray

    def __len__(self) -> int:
        return len(self.t)

    def take(self, index: Any) -> Bars:
        """Rows selected by a slice, boolean mask or index array."""
        return Bars(self.t[index], self.o[index], self.h[index], self.l[index], self.c[index],
                    self.v[index], self.n[index], self.vw[index])

    def row(self, i: int) -> BarTick:
        return BarTick(int(self.t[i]), float(self.o[i]), float(self.h[i]), float(self.l[i]),
                       float(self.c[i]), int(self.v[i]), int(self.n[i]), float(self.vw[i]))

    @staticmethod
    def concat(parts: list[Bars]) -> Bars:
        parts = [p for p in parts if len(p)]
        if not parts:
            return EMPTY_BARS
        if len(parts) == 1:
            return parts[0]
        return Bars(*(np.concatenate([getattr(p, f) for p in parts]) for f in BAR_FIELDS))

    def aggregate(self, starts: np.ndarray, stamps: np.ndarray, *, vw_places: int = 6) -> Bars:
        """Aggregate consecutive groups beginning at ``starts`` into one bar each, stamped
        ``stamps``: first open, max high, min low, last close, summed volume and count, and the
        volume-weighted average of the rows' VWAPs."""
        if not len(starts):
            return EMPTY_BARS
        ends = np.append(starts[1:], len(self.t)) - 1
        v = np.add.reduceat(self.v, starts)
        pv = np.add.reduceat(self.vw * self.v, starts)
        h = np.maximum.reduceat(self.h, starts)
        low = np.minimum.reduceat(self.l, starts)
        vw = np.clip(np.round(pv / np.maximum(v, 1), vw_places), low, h)
        return Bars(np.asarray(stamps, dtype=np.int64), self.o[starts], h, low, self.c[ends], v,
                    np.add.reduceat(self.n, starts), vw)


BAR_FIELDS = ("t", "o", "h", "l", "c", "v", "n", "vw")
_F = np.empty(0, dtype=np.float64)
_I = np.empty(0, dtype=np.int64)
EMPTY_BARS = Bars(_I, _F, _F, _F, _F, _I, _I, _F)


TRADE_ID_STRIDE = 1_000_000   # a trade's id = its minute number * stride + its index in the minute

@dataclass(frozen=True, eq=False)
class Ticks:
    """One minute's trades and quotes (columnar, sorted by time; prints of one burst share a
    timestamp, see :func:`.market._bursts`, and so do the quotes before them). The quote columns
    have their own length: IEX's book moves between its prints (:func:`._iex.with_book_moves`).

    Trade condition flags: bit 0 = odd lot ("I"), bit 1 = extended hours ("T").
    """

    trade_t: np.ndarray      # int64 ns
    price: np.ndarray        # float64
    size: np.ndarray         # int64 shares
    trade_x: np.ndarray      # <U1 exchange codes
    trade_id: np.ndarray     # int64, unique per symbol, increasing with time
    flags: np.ndarray        # int8 condition flags
    quote_t: np.ndarray      # int64 ns: 1 ns before each trade (IEX adds its book's moves between)
    bid: np.ndarray
    bid_size: np.ndarray
    ask: np.ndarray
    ask_size: np.ndarray
    bid_x: np.ndarray
    ask_x: np.ndarray
    late: int = -1           # index of the trade reported late (updatedBars), -1 for none

    def __len__(self) -> int:
        return len(self.trade_t)


# ---------------------------------------------------------------- timeframes

UNIT_MINUTE, UNIT_HOUR, UNIT_DAY, UNIT_WEEK, UNIT_MONTH = "Min", "Hour", "Day", "Week", "Month"
_UNIT_ALIASES = {"Min": UNIT_MINUTE, "T": UNIT_MINUTE, "Hour": UNIT_HOUR, "H": UNIT_HOUR,
                 "Day": UNIT_DAY, "D": UNIT_DAY, "Week": UNIT_WEEK, "W": UNIT_WEEK,
                 "Month": UNIT_MONTH, "M": UNIT_MONTH}
_TF_RE = re.compile(r"^([0-9]{1,3})(Min|T|Hour|H|Day|D|Week|W|Month|M)$")
_MONTH_AMOUNTS = (1, 2, 3, 4, 6, 12)


@dataclass(frozen=True)
class Timeframe:
    """A bar timeframe from protocol 4.2's grammar: ``[1-59]Min|T``, ``[1-23]Hour|H``,
    ``1Day|D``, ``1Week|W``, ``[1,2,3,4,6,12]Month|M``."""

    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Raises ValueError for anything outside the grammar."""
        m = _TF_RE.match(text or "")
        if not m:
            raise ValueError(f"invalid timeframe {text!r}")
        amount, unit = int(m.group(1)), _UNIT_ALIASES[m.group(2)]
        ok = {UNIT_MINUTE: 1 <= amount <= 59, UNIT_HOUR: 1 <= amount <= 23,
              UNIT_DAY: amount == 1, UNIT_WEEK: amount == 1,
              UNIT_MONTH: amount in _MONTH_AMOUNTS}[unit]
        if not ok:
            raise ValueError(f"invalid timeframe {text!r}")
        return cls(amount, unit)

    @property
    def intraday(self) -> bool:
        return self.unit in (UNIT_MINUTE, UNIT_HOUR)

    @property
    def minutes(self) -> int:
        """Bucket length in minutes (intraday timeframes only)."""
        return self.amount * (60 if self.unit == UNIT_HOUR else 1)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"
