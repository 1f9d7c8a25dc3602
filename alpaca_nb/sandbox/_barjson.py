"""Bars as Alpaca's JSON records, ``{"t":...,"o":...,"h":...,"l":...,"c":...,"v":...,"n":...,"vw":...}``,
comma-separated, built as fast as CPython allows.

Numbers are written exactly as orjson writes them (its shortest round-trip form): every number
either comes from ``orjson.dumps`` of its column, or is a token of a small table that
``orjson.dumps`` wrote for the very same double values (prices that are whole cents share one
table per block of 1,024 cents, kept for every symbol; trade counts below 4096 come from a table
made once). The record is assembled
by one ``bytes.join`` over per-row tokens laid out with slice assignments, so there is no
per-row Python code. Times are whole-second UTC stamps (``2024-01-02T14:30:00Z``).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import orjson

from ._bars import Bars
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
def _starts(day: int) -> tuple[list[bytes], np.ndarray]:
    """``},{"t":"<day>THH:MM:00Z","o":`` for each minute of a UTC day (days since 1970), as a
    list (for runs of consecutive minutes) and as an object array (for any minutes)."""
    head = b'},{"t":"' + (_EPOCH + dt.timedelta(days=day)).isoformat().encode() + b"T"
    tokens = [head + clock for clock in _CLOCK]
    return tokens, _objects(tokens)


def _text(values: np.ndarray) -> bytes:
    """The numbers' JSON texts as orjson writes them, comma-separated."""
    return orjson.dumps(values, option=_OPT)[1:-1]


def _suffixed(text: bytes, suffix: bytes) -> list[bytes]:
    """The numbers of a comma-separated ``text``, each followed by ``suffix``."""
    return (text.replace(b",", suffix + b"\0") + suffix).split(b"\0")


def _pick(table: np.ndarray, index: np.ndarray) -> list[bytes]:
    return table[index].tolist()


_PRICE_KEYS = (_SEP_H, _SEP_L, _SEP_C, _SEP_V)    # what follows o, h, l and c
_BLOCK = 1024                                     # cents per table of price tokens


@lru_cache(maxsize=512)
def _cents(block: int, key: bytes) -> np.ndarray:
    """Tokens ``<price><key>`` of the prices block * 1024 .. block * 1024 + 1023 cents, written
    by orjson from the doubles ``cents / 100.0`` (shared by every symbol and day)."""
    first = float(block * _BLOCK)
    return _objects(_suffixed(_text(np.arange(first, first + _BLOCK) / 100.0), key))


def _price_tokens(cols: tuple[np.ndarray, ...]) -> list[list[bytes]]:
    """Tokens of o, h, l and c, each followed by the next key. Whole-cent prices (the usual
    case: a column is whole cents when ``cents / 100.0`` gives back every one of its doubles)
    come from the cent tables; other columns are written number by number."""
    cents = [np.rint(col * 100.0) for col in cols]
    if all(np.array_equal(k / 100.0, col) for k, col in zip(cents, cols)):
        lo = int(min(k.min() for k in cents)) // _BLOCK
        hi = int(max(k.max() for k in cents)) // _BLOCK
        if lo >= 0 and hi - lo < 4:
            out = []
            for k, key in zip(cents, _PRICE_KEYS):
                tables = [_cents(block, key) for block in range(lo, hi + 1)]
                table = tables[0] if len(tables) == 1 else np.concatenate(tables)
                out.append(_pick(table, (k - lo * _BLOCK).astype(np.intp)))
            return out
    return [_suffixed(_text(col), key) for col, key in zip(cols, _PRICE_KEYS)]


def _stamps(t: np.ndarray) -> list[bytes]:
    """RFC-3339 UTC stamps (seconds) of instants."""
    secs = (t // NS).tolist()
    days = {s // 86400: (_EPOCH + dt.timedelta(days=s // 86400)).isoformat().encode() for s in secs}
    return [b"%sT%02d:%02d:%02dZ" % (days[s // 86400], s % 86400 // 3600, s % 3600 // 60, s % 60)
            for s in secs]


def bar_json(bars: Bars) -> bytes:
    """Bars as comma-separated wire objects ``{t,o,h,l,c,v,n,vw}`` (always ``n`` and ``vw``),
    in the order given; ``t`` is the bar start (epoch ns), written to the second."""
    n = len(bars.t)
    if not n:
        return b""
    t = bars.t
    counts = bars.n
    small = int(counts.min()) >= 0 and int(counts.max()) < len(_COUNTS)
    width = 8
    rows: list[bytes] = [b""] * (width * n)
    if t[0] >= 0 and not (t % MINUTE_NS).any() and t[0] // DAY_NS == t[-1] // DAY_NS:
        # whole minutes of one UTC day (every intraday chunk): starts from the day's table
        tokens, table = _starts(int(t[0] // DAY_NS))
        first = int(t[0] % DAY_NS // MINUTE_NS)
        if int(t[-1] - t[0]) == (n - 1) * MINUTE_NS:
            rows[0::width] = tokens[first:first + n]
        else:
            rows[0::width] = _pick(table, (t % DAY_NS // MINUTE_NS).astype(np.intp))
    else:
        rows[0::width] = [b'},{"t":"%s","o":' % s for s in _stamps(t)]
    rows[0] = rows[0][2:]
    rows[1::width], rows[2::width], rows[3::width], rows[4::width] = _price_tokens(
        (bars.o, bars.h, bars.l, bars.c))
    rows[5::width] = _suffixed(_text(bars.v), _SEP_N)
    if small:
        rows[6::width] = _pick(_COUNTS, counts.astype(np.intp))
    else:
        rows[6::width] = _suffixed(_text(counts), _SEP_VW)
    rows[7::width] = _text(bars.vw).split(b",")
    rows.append(b"}")
    return b"".join(rows)
