"""The minute layer of the synthetic market, and the price helpers every layer shares.

:func:`minute_columns` turns sessions' daily bars into their minute bars: a bridge path from
the open through the day's high and low (at drawn minutes) to the close, folded into [low, high]
and rounded to the tick; volumes and trade counts from an intraday profile, distributed with
exact integer sums (so the minutes aggregate exactly to the daily bar). Sessions of the same
shape (number of minutes, regular-hours window) are computed together, as rows of 2-D arrays:
every element goes through exactly the operations the one-session computation applies to it, so
a session's minutes are the same bytes whichever sessions it is computed with. Scans and
reductions (cumulative sums, interpolation, exact allocation) run row by row.

Random numbers come from :mod:`._noise` (a per-session key, the draw indices 0 .. 2 + 8m).
Prices are dollars (cents at or above $1, 4 decimals below); instants are epoch nanoseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._noise import hash_grid, unit
from .clock import MINUTE_NS

__all__ = ["DaySpec", "allocate", "ceil_price", "floor_price", "minute_columns", "reflect",
           "round_price", "tick_size"]

# ---------------------------------------------------------------- price helpers

def round_price(p: np.ndarray) -> np.ndarray:
    """Cents at or above $1, 4 decimals below (and never below $0.0001)."""
    p = np.asarray(p, dtype=np.float64)
    return np.maximum(np.where(p >= 1.0, np.round(p, 2), np.round(p, 4)), 0.0001)


def tick_size(p: np.ndarray) -> np.ndarray:
    """The price increment at each price: $0.01 at or above $1, $0.0001 below."""
    return np.where(p >= 1.0, 0.01, 0.0001)


def floor_price(p: np.ndarray) -> np.ndarray:
    """Round down to the tick (never below $0.0001)."""
    tick = tick_size(p)
    return np.maximum(np.round(np.floor(p / tick + 1e-9) * tick, 4), 0.0001)


def ceil_price(p: np.ndarray) -> np.ndarray:
    """Round up to the tick."""
    tick = tick_size(p)
    return np.round(np.ceil(p / tick - 1e-9) * tick, 4)


def reflect(x: np.ndarray, lo, hi) -> np.ndarray:
    """Fold a path into [lo, hi] by reflecting at the bounds (no plateaus, unlike clipping).
    ``lo``/``hi`` are numbers, or columns of per-row bounds for a 2-D ``x``; a row whose width
    is not positive becomes ``lo``."""
    width = hi - lo
    if np.ndim(width) == 0:
        if width <= 0:
            return np.full_like(x, lo)
        y = np.mod(x - lo, 2.0 * width)
        return lo + np.where(y > width, 2.0 * width - y, y)
    flat = (width <= 0).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.mod(x - lo, 2.0 * width)
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

@dataclass(frozen=True)
class DaySpec:
    """One session to generate: its random key, first minute (ns), number of minutes, the
    regular-hours window as minute indices [reg_lo, reg_hi), and its daily bar."""

    key: int
    start_ns: int
    minutes: int
    reg_lo: int
    reg_hi: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    trade_count: int


@dataclass(frozen=True, eq=False)
class _Shape:
    """What every session with the same minutes and regular window shares."""

    regular: np.ndarray
    step_scale: np.ndarray
    profile: np.ndarray
    grid: np.ndarray
    offsets: np.ndarray      # minute starts relative to the first minute, ns
    lo_i: int
    hi_i: int


@lru_cache(maxsize=64)
def _shape(calendar: bool, m: int, reg_lo: int, reg_hi: int) -> _Shape:
    regular = np.zeros(m, dtype=bool)
    regular[reg_lo:reg_hi] = True
    lo_i, hi_i = max(1, reg_lo), min(m - 1, reg_hi)
    if hi_i - lo_i < 2:
        lo_i, hi_i = 1, m - 1
    j = np.arange(m, dtype=np.float64)
    if calendar:
        r = j - reg_lo
        u = 1.0 + 2.5 * np.exp(-r / 25.0) + 1.6 * np.exp(-(reg_hi - 1 - j) / 20.0)
        profile = np.where(regular, u, 0.06)
    else:
        profile = 1.0 + 1.8 * np.exp(-j / 90.0) + 1.4 * np.exp(-(m - 1 - j) / 90.0)
    shape = _Shape(regular, np.where(regular, 1.0, 0.35), profile,
                   np.arange(m + 1, dtype=np.float64),
                   np.arange(m, dtype=np.int64) * MINUTE_NS, lo_i, hi_i)
    for arr in (shape.regular, shape.step_scale, shape.profile, shape.grid, shape.offsets):
        arr.flags.writeable = False
    return shape


def _normal(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def _column(values: list[float]) -> np.ndarray:
    return np.array(values, dtype=np.float64)[:, None]


def minute_columns(specs: list[DaySpec], *, calendar: bool) -> list[tuple[np.ndarray, ...]]:
    """The minute bars of each session, in the order given: per session the columns ``t``
    (minute start, ns), open, high, low, close (dollars), volume, trade count (shares,
    trades) and VWAP. ``calendar`` selects the NYSE-calendar volume profile (U-shaped over
    regular hours, thin outside) instead of the always-open one."""
    out: list[tuple[np.ndarray, ...] | None] = [None] * len(specs)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.minutes, spec.reg_lo, spec.reg_hi), []).append(i)
    for (m, reg_lo, reg_hi), members in groups.items():
        rows = _generate([specs[i] for i in members], _shape(calendar, m, reg_lo, reg_hi), m)
        for i, cols in zip(members, rows):
            out[i] = cols
    return out   # type: ignore[return-value]


def _generate(group: list[DaySpec], shape: _Shape, m: int) -> list[tuple[np.ndarray, ...]]:
    """Sessions of one shape, as rows (see the module docstring). Draw indices per session:
    0-1 the high/low minutes, then the path's normals, the wiggle exponentials, the weight and
    the volume normals (2m uniforms each, 2m for the exponentials)."""
    count = len(group)
    keys = np.array([s.key for s in group], dtype=np.uint64)

    def uniform(first: int, size: int) -> np.ndarray:   # draws first .. first + size - 1
        return unit(hash_grid(keys, np.arange(first, first + size, dtype=np.int64)))

    rng = shape.hi_i - shape.lo_i
    picks = shape.lo_i + (uniform(0, 2) * rng).astype(np.int64)
    root = math.sqrt(m)
    h_d = _column([s.high for s in group])
    l_d = _column([s.low for s in group])
    step = _column([(s.high - s.low) / root * 0.45 + 1e-9 for s in group])
    wig = _column([(s.high - s.low) / root * 0.25 for s in group])
    mov = _column([(s.high - s.low) / root + 1e-9 for s in group])

    # Path x[0..m]: x[j] opens minute j, x[j+1] closes it; pinned at O, H, L, C.
    steps = _normal(uniform(2, m), uniform(2 + m, m)) * shape.step_scale * step
    x = np.empty((count, m + 1), dtype=np.float64)
    anchors_x, anchors_y = [], []
    for r, spec in enumerate(group):
        a, b = int(picks[r, 0]), int(picks[r, 1])
        if a == b:
            b = shape.lo_i + (a - shape.lo_i + 1) % rng
        anchors = sorted([(0, spec.open), (a, spec.high), (b, spec.low), (m, spec.close)])
        ax = np.array([p for p, _ in anchors], dtype=np.float64)
        ay = np.array([v for _, v in anchors], dtype=np.float64)
        walk = np.concatenate(([0.0], np.cumsum(steps[r])))
        x[r] = np.interp(shape.grid, ax, ay) + walk - np.interp(shape.grid, ax, walk[ax.astype(np.int64)])
        anchors_x.append(ax.astype(np.int64))
        anchors_y.append(ay)
    x = np.clip(round_price(reflect(x, l_d, h_d)), l_d, h_d)
    for r in range(count):
        x[r, anchors_x[r]] = anchors_y[r]
    o, c = x[:, :-1], x[:, 1:]
    wiggle = -np.log1p(-uniform(2 + 2 * m, 2 * m)) * wig
    h = np.clip(ceil_price(np.maximum(o, c) + wiggle[:, :m] * shape.step_scale), l_d, h_d)
    low = np.clip(floor_price(np.minimum(o, c) - wiggle[:, m:] * shape.step_scale), l_d, h_d)
    h = np.maximum(h, np.maximum(o, c))
    low = np.minimum(low, np.minimum(o, c))

    # Volume and trade counts: profile x noise x movement, exact integer sums.
    moved = np.abs(c - o) / mov
    weight = shape.profile * np.exp(0.45 * _normal(uniform(2 + 4 * m, m), uniform(2 + 5 * m, m))) \
        * (0.7 + 0.3 * np.minimum(moved, 4))
    vol_weight = weight * np.exp(0.2 * _normal(uniform(2 + 6 * m, m), uniform(2 + 7 * m, m)))
    vw = np.clip(np.round((h + low + c) / 3.0, 4), low, h)
    rows = []
    for r, spec in enumerate(group):
        n = allocate(spec.trade_count, weight[r], 4)
        v = n + allocate(spec.volume - spec.trade_count, vol_weight[r], 0)
        rows.append((spec.start_ns + shape.offsets, o[r], h[r], low[r], c[r], v, n, vw[r]))
    return rows
