"""Bars as Alpaca's JSON records, ``{"t":...,"o":...,"h":...,"l":...,"c":...,"v":...,"n":...,"vw":...}``,
comma-separated, built as fast as CPython allows.

Numbers are written exactly as orjson writes them (its shortest round-trip form): every number
either comes from ``orjson.dumps`` of its column, or is a token of a small table that
``orjson.dumps`` wrote for the very same double values (prices that are whole cents share one
table per call; trade counts below 4096 come from a table made once). The record is assembled
by one ``bytes.join`` over per-row tokens laid out with slice assignments, so there is no
per-row Python code. Times are whole-second UTC stamps (``2024-01-02T14:30:00Z``).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Protocol

import numpy as np
import orjson

from .clock import DAY_NS, MINUTE_NS, NS

__all__ = ["bar_json"]

_OPT = orjson.OPT_SERIALIZE_NUMPY
_EPOCH = dt.date(1970, 1, 1)
_CLOCK = [b'%02d:%02d:00Z","o":' % (h, m) for h in range(24) for m in range(60)]
_SEP_H, _SEP_L, _SEP_C, _SEP_V, _SEP_N, _SEP_VW = (b',"h":', b',"l":', b',"c":', b',"v":',
                                                   b',"n":', b',"vw":')
_DAY_CACHE = 64      # UTC days whose 1,440 record starts are kept (they serve every symbol)


def _objects(tokens: list[bytes]) -> np.ndarray:
    """Tokens in an object array, for C-speed lookups (``table[index].tolist()``)."""
    out = np.empty(len(tokens), dtype=object)
    out[:] = tokens
    return out


_COUNTS = _objects([b'%d,"vw":' % i for i in range(4096)])   # n, then the key of vw


@lru_cache(maxsize=_DAY_CACHE)
def _starts(day: int) -> np.ndarray:
    """``},{"t":"<day>THH:MM:00Z","o":`` for each minute of a UTC day (days since 1970)."""
    head = b'},{"t":"' + (_EPOCH + dt.timedelta(days=day)).isoformat().encode() + b"T"
    return _objects([head + clock for clock in _CLOCK])


class _Bars(Protocol):
    t: np.ndarray
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray
    n: np.ndarray
    vw: np.ndarray


def _tokens(values: np.ndarray) -> list[bytes]:
    """Each number's JSON text, as orjson writes it."""
    return orjson.dumps(values, option=_OPT)[1:-1].split(b",")


def _pick(table: np.ndarray, index: np.ndarray) -> list[bytes]:
    return table[index].tolist()


def _price_tokens(cols: tuple[np.ndarray, ...]) -> list:
    """Tokens of several price columns. Whole-cent prices (the usual case) are looked up in
    one table of every cent value between their low and high, written by orjson from the same
    doubles; other columns are written one number at a time."""
    cents = [np.rint(col * 100.0) for col in cols]
    if all(np.array_equal(k / 100.0, col) for k, col in zip(cents, cols)):
        lo = min(float(k.min()) for k in cents)
        hi = max(float(k.max()) for k in cents)
        if hi - lo < 2 * len(cols[0]) + 64 and hi < 2.0 ** 52:
            table = _objects(_tokens(np.arange(lo, hi + 1.0) / 100.0))
            return [_pick(table, (k - lo).astype(np.intp)) for k in cents]
    return [_tokens(col) for col in cols]


def _stamps(t: np.ndarray) -> list[bytes]:
    """RFC-3339 UTC stamps (seconds) of instants."""
    secs = (t // NS).tolist()
    days = {s // 86400: (_EPOCH + dt.timedelta(days=s // 86400)).isoformat().encode() for s in secs}
    return [b"%sT%02d:%02d:%02dZ" % (days[s // 86400], s % 86400 // 3600, s % 3600 // 60, s % 60)
            for s in secs]


def bar_json(bars: _Bars) -> bytes:
    """Bars as comma-separated wire objects ``{t,o,h,l,c,v,n,vw}`` (always ``n`` and ``vw``),
    in the order given; ``t`` is the bar start (epoch ns), written to the second."""
    n = len(bars.t)
    if not n:
        return b""
    t = bars.t
    counts = bars.n
    small = int(counts.min()) >= 0 and int(counts.max()) < len(_COUNTS)
    width = 13 if small else 14
    rows: list[bytes] = [b""] * (width * n)
    if t[0] >= 0 and not (t % MINUTE_NS).any() and t[0] // DAY_NS == t[-1] // DAY_NS:
        # whole minutes of one UTC day (every intraday chunk): starts from the day's table
        starts = _starts(int(t[0] // DAY_NS))
        rows[0::width] = _pick(starts, (t % DAY_NS // MINUTE_NS).astype(np.intp))
    else:
        rows[0::width] = [b'},{"t":"%s","o":' % s for s in _stamps(t)]
    rows[0] = rows[0][2:]
    o, h, low, c = _price_tokens((bars.o, bars.h, bars.l, bars.c))
    rows[1::width] = o
    rows[2::width] = [_SEP_H] * n
    rows[3::width] = h
    rows[4::width] = [_SEP_L] * n
    rows[5::width] = low
    rows[6::width] = [_SEP_C] * n
    rows[7::width] = c
    rows[8::width] = [_SEP_V] * n
    rows[9::width] = _tokens(bars.v)
    rows[10::width] = [_SEP_N] * n
    if small:
        rows[11::width] = _pick(_COUNTS, counts.astype(np.intp))
    else:
        rows[11::width] = _tokens(counts)
        rows[12::width] = [_SEP_VW] * n
    rows[width - 1::width] = _tokens(bars.vw)
    rows.append(b"}")
    return b"".join(rows)
