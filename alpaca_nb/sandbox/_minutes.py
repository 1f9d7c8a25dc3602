"""The minute layer of the synthetic market, and the price helpers every layer shares.

:func:`minute_columns` turns the bars of a session's parts (pre-market, regular hours,
after-hours) into their minute bars: a bridge path from the part's open through its high and
low (at drawn minutes) to its close, folded into [low, high] and rounded to the tick; volumes
and trade counts from the part's intraday profile, distributed with exact integer sums (so the
minutes aggregate exactly to the part's bar). Parts of the same shape (segment and number of
minutes) are computed together, as rows of 2-D arrays: every element goes through exactly the
operations the one-part computation applies to it, so a part's minutes are the same bytes
whichever parts it is computed with. Scans and reductions (cumulative sums, interpolation,
exact allocation) run row by row.

Random numbers come from :mod:`._noise` (a per-part key, the draw indices 0 .. 2 + 8m).
Prices are dollars (cents at or above $1, 4 decimals below); instants are epoch nanoseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._noise import Draws, uniform_grid
from .clock import MINUTE_NS

__all__ = ["ALL_DAY", "POST", "PRE", "REGULAR", "SEGMENTS", "DaySpec", "allocate", "ceil_price", "floor_price", "minute_columns", "reflect",
           "round_price", "tick_size"]

# ---------------------------------------------------------------- price helpers

def _all_at_least_a_dollar(p: np.ndarray) -> bool:
    return bool(p.size) and bool(p.min() >= 1.0)      # False with a NaN


def round_price(p: np.ndarray) -> np.ndarray:
    """Cents at or above $1, 4 decimals below (and never below $0.0001)."""
    p = np.asarray(p, dtype=np.float64)
    if _all_at_least_a_dollar(p):                     # the same values, one rounding instead of two
        return np.maximum(np.round(p, 2), 0.0001)
    return np.maximum(np.where(p >= 1.0, np.round(p, 2), np.round(p, 4)), 0.0001)


def tick_size(p: np.ndarray) -> np.ndarray | float:
    """The price increment at each price: $0.01 at or above $1, $0.0001 below."""
    if _all_at_least_a_dollar(p):
        return 0.01
    return np.where(p >= 1.0, 0.01, 0.0001)


def floor_price(p: np.ndarray) -> np.ndarray:
    """Round down to the tick (never below $0.0001)."""
    tick = tick_size(p)
    return np.maximum(np.round(np.floor(p / tick + 1e-9) * tick, 4), 0.0001)


def ceil_price(p: np.ndarray) -> np.ndarray:
    """Round up to the tick."""
    tick = tick_size(p)
    return np.round(np.ceil(p / tick - 1e-9) * tick, 4)


def bracket(price: np.ndarray, spread: float, u_width: np.ndarray, u_split: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(bid, ask) around each price, bid <= price <= ask and at least a tick apart: ``spread``
    (relative) times 0.5-1.5 wide by ``u_width`` (uniforms), the price placed inside by
    ``u_split``."""
    width = np.maximum(price * spread * (0.5 + u_width), tick_size(price))
    bid = np.maximum(floor_price(price - u_split * width), 0.0001)
    return bid, np.maximum(ceil_price(price + (1.0 - u_split) * width), np.round(bid + tick_size(bid), 4))


def quotes_around(price: np.ndarray, spread: float, rnd: Draws) -> tuple[np.ndarray, ...]:
    """A quote at each price (see :func:`bracket`) with sizes in round lots, from ``rnd``:
    (bid, bid_size, ask, ask_size)."""
    n = len(price)
    bid, ask = bracket(price, spread, rnd.uniform(n), rnd.uniform(n))
    lots = rnd.exponential(2 * n).reshape(2, n)
    return (bid, 100 * (1 + np.floor(lots[0] * 3)).astype(np.int64),
            ask, 100 * (1 + np.floor(lots[1] * 3)).astype(np.int64))


def _fold(y: np.ndarray, period) -> np.ndarray:
    """``np.mod(y, period)`` for a positive period, computed only where ``y`` is outside
    [0, period) (inside, the remainder is ``y`` itself, bit for bit)."""
    outside = (y < 0) | (y >= period)
    if outside.any():
        y = y.copy()
        y[outside] = np.mod(y[outside], np.broadcast_to(period, y.shape)[outside])
    return y


def reflect(x: np.ndarray, lo, hi) -> np.ndarray:
    """Fold a path into [lo, hi] by reflecting at the bounds (no plateaus, unlike clipping).
    ``lo``/``hi`` are numbers, or columns of per-row bounds for a 2-D ``x``; a row whose width
    is not positive becomes ``lo``."""
    width = hi - lo
    if np.ndim(width) == 0:
        if width <= 0:
            return np.full_like(x, lo)
        y = _fold(x - lo, 2.0 * width)
        return lo + np.where(y > width, 2.0 * width - y, y)
    flat = (width <= 0).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        y = _fold(x - lo, np.where(width > 0, 2.0 * width, np.inf))
        out = lo + np.where(y > width, 2.0 * width - y, y)
    if flat.any():
        out[flat] = np.broadcast_to(lo, out.shape)[flat]
    return out


def allocate(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Integers >= ``minimum`` summing exactly to ``total``, proportional to ``weights``
    (cumulative rounding: no sort). Requires ``total >= minimum * len(weights)``."""
    spare = total - minimum * len(weights)
    cum = np.rint(np.cumsum(weights) * (spare / weights.sum())).astype(np.int64)
    cum[-1] = spare
    return np.diff(cum, prepend=0) + minimum


# ---------------------------------------------------------------- the minute layer

PRE, REGULAR, POST = "pre", "regular", "post"     # the parts of a session (SEGMENTS)
SEGMENTS = (PRE, REGULAR, POST)
ALL_DAY = "all-day"     # a market that never closes (crypto): busier at both ends of the UTC day


@dataclass(frozen=True)
class DaySpec:
    """One part of a session to generate (pre-market, regular hours or after-hours): its
    random key, first minute (ns), number of minutes, and the bar its minutes aggregate to."""

    key: int
    start_ns: int
    minutes: int
    segment: str
    open: float
    high: float
    low: float
    close: float
    volume: int
    trade_count: int


@dataclass(frozen=True, eq=False)
class _Shape:
    """What every part with the same segment and number of minutes shares."""

    profile: np.ndarray
    grid: np.ndarray
    offsets: np.ndarray      # minute starts relative to the first minute, ns
    lo_i: int
    hi_i: int


@lru_cache(maxsize=64)
def _shape(segment: str, m: int) -> _Shape:
    """The intraday activity profile of a part: U-shaped over regular hours, rising towards the
    open in the pre-market, fading after the close."""
    j = np.arange(m, dtype=np.float64)
    if segment == REGULAR:
        profile = 1.0 + 2.5 * np.exp(-j / 25.0) + 1.6 * np.exp(-(m - 1 - j) / 20.0)
    elif segment == ALL_DAY:
        profile = 1.0 + 1.8 * np.exp(-j / 90.0) + 1.4 * np.exp(-(m - 1 - j) / 90.0)
    elif segment == PRE:
        profile = 0.25 + 2.0 * np.exp(-(m - 1 - j) / 40.0)
    else:
        profile = 0.25 + 2.0 * np.exp(-j / 30.0)
    lo_i, hi_i = 1, m - 1
    shape = _Shape(profile, np.arange(m + 1, dtype=np.float64),
                   np.arange(m, dtype=np.int64) * MINUTE_NS, lo_i, hi_i)
    for arr in (shape.profile, shape.grid, shape.offsets):
        arr.flags.writeable = False
    return shape


def _normal(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Box-Muller, ``sqrt(-2 log1p(-u1)) * cos(2 pi u2)``, in place (overwrites both)."""
    np.negative(u1, out=u1)
    np.log1p(u1, out=u1)
    np.multiply(u1, -2.0, out=u1)
    np.sqrt(u1, out=u1)
    np.multiply(u2, 2.0 * np.pi, out=u2)
    np.cos(u2, out=u2)
    np.multiply(u1, u2, out=u1)
    return u1


def _allocate_rows(totals: np.ndarray, weights: np.ndarray, minimum: int) -> np.ndarray:
    """:func:`allocate` for each row of ``weights`` (``totals`` per row)."""
    spare = totals - minimum * weights.shape[1]
    cum = np.rint(np.cumsum(weights, axis=1) * (spare / weights.sum(axis=1))[:, None]).astype(np.int64)
    cum[:, -1] = spare
    cum[:, 1:] -= cum[:, :-1].copy()
    return cum + minimum


def _clip(x: np.ndarray, lo, hi) -> np.ndarray:
    """``np.clip`` without its Python-level checks (the same values)."""
    return np.minimum(np.maximum(x, lo), hi)


def _column(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)[:, None]


def minute_columns(specs: list[DaySpec]) -> list[tuple[np.ndarray, ...]]:
    """The minute bars of each part, in the order given: per part the columns ``t`` (minute
    start, ns), open, high, low, close (dollars), volume, trade count (shares, trades) and
    VWAP. Parts of the same segment and length are computed together."""
    out: list[tuple[np.ndarray, ...] | None] = [None] * len(specs)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.segment, spec.minutes), []).append(i)
    for (segment, m), members in groups.items():
        rows = _generate([specs[i] for i in members], _shape(segment, m), m)
        for i, cols in zip(members, rows):
            out[i] = cols
    return out   # type: ignore[return-value]


def _generate(group: list[DaySpec], shape: _Shape, m: int) -> list[tuple[np.ndarray, ...]]:
    """Sessions of one shape, as rows (see the module docstring). Draw indices per session:
    0-1 the high/low minutes, then the path's normals, the wiggle exponentials, the weight and
    the volume normals (2m uniforms each, 2m for the exponentials)."""
    count = len(group)
    keys = np.array([s.key for s in group], dtype=np.uint64)

    draws = uniform_grid(keys, 0, 2 + 8 * m)          # every draw of the group at once

    def uniform(first: int, size: int) -> np.ndarray:   # draws first .. first + size - 1
        return draws[:, first:first + size]

    rng = shape.hi_i - shape.lo_i
    picks = shape.lo_i + (uniform(0, 2) * rng).astype(np.int64)
    root = math.sqrt(m)
    h_d = _column([s.high for s in group])
    l_d = _column([s.low for s in group])
    step = _column([(s.high - s.low) / root * 0.45 + 1e-9 for s in group])
    wig = _column([(s.high - s.low) / root * 0.25 for s in group])
    mov = _column([(s.high - s.low) / root + 1e-9 for s in group])

    # Path x[0..m]: x[j] opens minute j, x[j+1] closes it; pinned at O, H, L, C. The bridge
    # through the anchors is interpolated for all rows at once, each row shifted by
    # r * (m + 1) on the axis (whole numbers: the same differences and slopes as alone).
    steps = _normal(uniform(2, m), uniform(2 + m, m)) * step
    walk = np.empty((count, m + 1), dtype=np.float64)
    walk[:, 0] = 0.0
    walk[:, 1:] = np.cumsum(steps, axis=1)
    anchor_x = np.empty((count, 4), dtype=np.int64)
    anchor_y = np.empty((count, 4), dtype=np.float64)
    for r, spec in enumerate(group):
        a, b = int(picks[r, 0]), int(picks[r, 1])
        if a == b:
            b = shape.lo_i + (a - shape.lo_i + 1) % rng
        anchors = sorted([(0, spec.open), (a, spec.high), (b, spec.low), (m, spec.close)])
        anchor_x[r] = [p for p, _ in anchors]
        anchor_y[r] = [v for _, v in anchors]
    rows = np.arange(count)[:, None]
    shift = (np.arange(count, dtype=np.float64) * (m + 1))[:, None]
    grid = (shift + shape.grid).ravel()
    xp = (shift + anchor_x).ravel()
    x = np.interp(grid, xp, anchor_y.ravel()).reshape(count, m + 1) + walk \
        - np.interp(grid, xp, walk[rows, anchor_x].ravel()).reshape(count, m + 1)
    x = _clip(round_price(reflect(x, l_d, h_d)), l_d, h_d)
    x[rows, anchor_x] = anchor_y
    o, c = x[:, :-1], x[:, 1:]
    wiggle = uniform(2 + 2 * m, 2 * m)
    np.negative(wiggle, out=wiggle)
    np.log1p(wiggle, out=wiggle)
    np.negative(wiggle, out=wiggle)
    wiggle *= wig
    h = _clip(ceil_price(np.maximum(o, c) + wiggle[:, :m]), l_d, h_d)
    low = _clip(floor_price(np.minimum(o, c) - wiggle[:, m:]), l_d, h_d)
    h = np.maximum(h, np.maximum(o, c))
    low = np.minimum(low, np.minimum(o, c))

    # Volume and trade counts: profile x noise x movement, exact integer sums.
    moved = np.abs(c - o) / mov
    noise = _normal(uniform(2 + 4 * m, m), uniform(2 + 5 * m, m))
    noise *= 0.45
    np.exp(noise, out=noise)
    weight = shape.profile * noise * (0.7 + 0.3 * np.minimum(moved, 4))
    noise = _normal(uniform(2 + 6 * m, m), uniform(2 + 7 * m, m))
    noise *= 0.2
    np.exp(noise, out=noise)
    vol_weight = weight * noise
    vw = _clip(np.round((h + low + c) / 3.0, 4), low, h)
    trades = np.array([s.trade_count for s in group], dtype=np.int64)
    n = _allocate_rows(trades, weight, 4)
    v = n + _allocate_rows(np.array([s.volume for s in group], dtype=np.int64) - trades, vol_weight, 0)
    rows = [(spec.start_ns + shape.offsets, o[r], h[r], low[r], c[r], v[r], n[r], vw[r])
            for r, spec in enumerate(group)]
    return rows
