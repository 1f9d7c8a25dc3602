"""Arguments as Excel sends them, and results as Excel wants them.

Excel hands a user-defined function single values (``str``, ``float`` for every number, ``bool``,
``None`` for an empty cell, ``datetime`` for a date-formatted cell) or ranges as lists (a row or a
column as a 1D list, a block as a list of rows). Dates typed as numbers are serials of the 1900
date system. Everything here turns those into plain Python values, or raises ``ValueError`` /
``TypeError`` naming the argument and what would be valid; and turns pandas objects back into
rows of cell values (empty cells for missing values, naive datetimes in the wanted time zone).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._args import NY, parse_symbol, parse_time, parse_tz

__all__ = ["Options", "cell", "choice", "flat", "frame_rows", "normalise_name", "one",
           "serial_to_datetime", "shape_of", "symbols_of", "text", "time_arg", "tz_option", "whole",
           "yes_no"]

_EXCEL_EPOCH = dt.datetime(1899, 12, 30)       # serial 0 in the 1900 date system (after its leap bug)
_MAX_SERIAL = 2_958_465                         # 9999-12-31


def shape_of(value: Any) -> tuple[int, int]:
    """(rows, columns) of an argument: a scalar is 1x1, a 1D list a column unless told otherwise."""
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(row, (list, tuple)) for row in value):
            return len(value), max((len(row) for row in value), default=0)
        return len(value), 1
    return 1, 1


def flat(value: Any) -> list[Any]:
    """The cells of an argument in reading order (rows of a block, then columns)."""
    if isinstance(value, (list, tuple)):
        out: list[Any] = []
        for item in value:
            out.extend(flat(item) if isinstance(item, (list, tuple)) else [item])
        return out
    return [value]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def one(value: Any, *, name: str) -> Any:
    """The single value of an argument that must be one cell (a 1x1 range counts); None if empty."""
    cells = flat(value)
    if len(cells) != 1:
        raise ValueError(f"{name} must be a single cell or value, got a range of {len(cells)} cells")
    return None if _blank(cells[0]) else cells[0]


def text(value: Any, *, name: str, default: str | None = None, lower: bool = True) -> str | None:
    """A text argument (one cell), stripped and lower-cased; ``default`` for an empty cell."""
    value = one(value, name=name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise TypeError(f"{name} must be text, got {_describe(value)}")
    return value.strip().lower() if lower else value.strip()


def whole(value: Any, *, name: str, default: int | None = None, minimum: int = 1) -> int | None:
    """A whole number (Excel sends ``5.0``; ``"5"`` is accepted too); ``default`` when empty."""
    value = one(value, name=name)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not math.isfinite(value) or value != int(value) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def symbols_of(value: Any, *, name: str = "symbols", keep_blanks: bool = False) -> list[str | None]:
    """Symbols from one cell ("AAPL" or "AAPL,MSFT") or a range, upper-cased. Empty cells are
    skipped, or kept as None with ``keep_blanks`` (a grid keeps a row per input cell).
    Duplicates are kept.

    Raises:
        ValueError: no symbol at all, or one that is not a symbol. TypeError: not text.
    """
    out: list[str | None] = []
    for item in flat(value):
        if _blank(item):
            if keep_blanks:
                out.append(None)
            continue
        if not isinstance(item, str):
            raise TypeError(f"{name} must be symbols such as 'AAPL', got {_describe(item)}")
        out.extend(parse_symbol(part, name=name) for part in item.split(",") if part.strip())
    if not any(out):
        raise ValueError(f"{name} is empty; give a symbol such as 'AAPL' or a range of them")
    return out


def serial_to_datetime(serial: float, *, name: str = "date") -> dt.datetime:
    """An Excel date serial (1900 date system, the default on Windows and in new Mac workbooks)
    as a naive datetime, to the millisecond. Serial 1 is 1900-01-01; the fraction is the time of
    day. Excel's phantom 1900-02-29 (serial 60) is read as 1900-03-01.

    Raises:
        ValueError: not a serial between 1 and 2958465 (9999-12-31).
    """
    if isinstance(serial, bool) or not isinstance(serial, (int, float, np.number)) \
            or not math.isfinite(serial) or not 1 <= serial < _MAX_SERIAL + 1:
        raise ValueError(f"{name}={serial!r} is not an Excel date serial (1 = 1900-01-01 to "
                         f"{_MAX_SERIAL} = 9999-12-31)")
    days = float(serial) if serial >= 61 else float(serial) + 1   # before the phantom leap day
    if 60 <= serial < 61:
        days = 61.0
    millis = round(days * 86_400_000)
    return _EXCEL_EPOCH + dt.timedelta(milliseconds=millis)


def time_arg(value: Any, *, name: str, end: bool = False) -> int | None:
    """Epoch nanoseconds for a date argument: a serial (a whole number is a whole New York day,
    a fraction a New York wall time), a date cell, a ``date``/``datetime``, or a string such as
    "2024-01-02" or "2024-01-02 09:30"; None for an empty cell. A whole day given as ``end``
    means the end of that day.

    Raises:
        ValueError/TypeError naming the argument.
    """
    value = one(value, name=name)
    if value is None:
        return None
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        value = serial_to_datetime(value, name=name)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime) and value.tzinfo is None and value.time() == dt.time(0):
        value = value.date()                        # a date cell: the whole day
    if isinstance(value, str):
        value = value.strip()
    if not isinstance(value, (str, dt.date)):
        raise TypeError(f"{name} must be a date: an Excel date, a date serial or text like "
                        f"'2024-01-02', got {_describe(value)}")
    return parse_time(value, name=name, end=end)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


# ------------------------------------------------------------------ "Name=Value" options

class Options:
    """Bloomberg-style optional arguments: ``"Per=1Min"``, or a name and its value as two
    arguments (``"Per", "1Min"``); ranges of such cells work too; names are case-insensitive.

    Args:
        args: the function's trailing arguments as Excel passed them.
        known: option name (canonical spelling) -> parser of the value text.
        function: the formula's name, for messages.

    Raises:
        ValueError: an unknown option (listing the known ones), a name without a value, a
            repeated option, or a value its parser refuses.
    """

    def __init__(self, args: Iterable[Any], known: Mapping[str, Callable[[str], Any]], *, function: str):
        by_lower = {k.lower(): k for k in known}
        items = [item for arg in args for item in flat(arg) if not _blank(item)]
        self.values: dict[str, Any] = {}
        i = 0
        while i < len(items):
            item = items[i]
            if not isinstance(item, str):
                raise TypeError(f"{function} options must be text like 'Per=1Day', got {_describe(item)}")
            if "=" in item:
                raw_name, raw_value = (part.strip() for part in item.split("=", 1))
                i += 1
            else:
                if i + 1 >= len(items):
                    raise ValueError(f"{function} option {item.strip()!r} has no value; write e.g. "
                                     f"'{item.strip()}=...' or give the value as the next argument")
                raw_name, raw_value = item.strip(), items[i + 1]
                raw_value = _option_text(raw_value)
                i += 2
            canonical = by_lower.get(raw_name.lower())
            if canonical is None:
                raise ValueError(f"{function}: unknown option {raw_name!r}; valid options: "
                                 f"{', '.join(known)}")
            if canonical in self.values:
                raise ValueError(f"{function}: option {canonical} is given twice")
            self.values[canonical] = known[canonical](raw_value)

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def _option_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def choice(name: str, choices: Sequence[str], aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """A parser for an option whose value is one of ``choices`` (case-insensitive)."""
    aliases = {k.lower(): v for k, v in (aliases or {}).items()}

    def parse(raw: str) -> str:
        key = raw.strip().lower()
        key = aliases.get(key, key)
        for option in choices:
            if option.lower() == key:
                return option
        raise ValueError(f"option {name}={raw!r} is not valid; use one of {', '.join(choices)}")
    return parse


def tz_option(raw: str) -> str:
    tz = parse_tz(raw.strip(), name="option Tz")
    return tz or NY


def yes_no(name: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        key = raw.strip().lower()
        if key in ("y", "yes", "true", "1", "on"):
            return True
        if key in ("n", "no", "false", "0", "off"):
            return False
        raise ValueError(f"option {name}={raw!r} is not valid; use Y or N")
    return parse


# ------------------------------------------------------------------ results

def cell(value: Any, tz: str = NY) -> Any:
    """One value as Excel should get it: numbers as float, booleans as bool, text as str, times
    as naive datetimes in ``tz`` (to the microsecond), missing values as None (an empty cell)."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, pd.Timestamp):
        if value.tzinfo is not None:
            value = value.tz_convert(tz).tz_localize(None)
        return value.to_pydatetime(warn=False)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return ", ".join(str(v) for v in value) or None
    if isinstance(value, (dt.datetime, dt.date)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def frame_rows(frame: pd.DataFrame, *, tz: str = NY, index: bool = True, headers: bool = True) -> list[list[Any]]:
    """A frame as rows of cells, with a header row (the index name first when ``index``)."""
    out: list[list[Any]] = []
    if headers:
        head = [str(c) for c in frame.columns]
        out.append(([str(frame.index.name or "")] if index else []) + head)
    columns = [frame[c].tolist() for c in frame.columns]
    keys = frame.index.tolist()
    for i in range(len(frame)):
        row = [columns[j][i] for j in range(len(columns))]
        out.append([cell(v, tz) for v in (([keys[i]] if index else []) + row)])
    return out


_IDENT = re.compile(r"[^a-z0-9]+")


def normalise_name(raw: str) -> str:
    """Field spelling folded: case, spaces, dots and dashes ignored, '%' as 'pct'
    ("PX LAST" -> "px_last", "Change %" -> "change_pct")."""
    return _IDENT.sub("_", raw.lower().replace("%", " pct ")).strip("_")
