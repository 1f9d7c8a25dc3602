"""Argument normalisation shared by the helpers: times, symbols, timeframes, choices.

Every function raises ``ValueError`` or ``TypeError`` whose message names the argument and says
what would be valid, before anything is sent.

Times: a naive ``datetime``/``pd.Timestamp``/string means America/New_York wall time (a notebook
user typing ``"2024-01-02 09:30"`` means the opening bell, not 04:30 ET). A ``date`` (or a
``"YYYY-MM-DD"`` string) means the whole New York day: its midnight as a start, the last instant
before the next midnight as an end.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

NY = "America/New_York"
_NY_ZONE = ZoneInfo(NY)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
NS = 1_000_000_000
MINUTE_NS = 60 * NS
DAY_NS = 86_400 * NS

_DATE_ONLY = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")
_SYMBOL = re.compile(r"^[A-Z]+(?:[./][A-Z]+)*$")

TimeLike = str | dt.date | dt.datetime | pd.Timestamp


def parse_time(value: Any, *, name: str, end: bool = False) -> int | None:
    """Nanoseconds since the epoch (UTC) for a user-given time, or None for None.

    Naive times mean America/New_York; a date means the New York day (its first instant as a
    start, its last nanosecond when ``end=True``).

    Raises:
        TypeError: not a str, date, datetime or pd.Timestamp.
        ValueError: a string that is not a time.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if _DATE_ONLY.match(value):
            try:
                value = dt.date.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a valid date (expected YYYY-MM-DD)") from None
        else:
            try:
                value = pd.Timestamp(value.strip())
            except (ValueError, TypeError):
                raise ValueError(
                    f"{name}={value!r} is not a time; use e.g. '2024-01-02', '2024-01-02 09:30' "
                    "(New York time) or '2024-01-02T14:30:00Z'") from None
            if value is pd.NaT:
                raise ValueError(f"{name} must be a time, got NaT")
    if isinstance(value, (dt.datetime, pd.Timestamp, np.datetime64)):
        ts = pd.Timestamp(value)
        if ts is pd.NaT:
            raise ValueError(f"{name} must be a time, got NaT")
        if ts.tzinfo is None:
            ts = ts.tz_localize(NY, ambiguous=True, nonexistent="shift_forward")
        return int(ts.tz_convert("UTC").as_unit("ns")._value)
    if isinstance(value, dt.date):
        midnight = ny_midnight_ns(value + dt.timedelta(days=1) if end else value)
        return midnight - 1 if end else midnight
    raise TypeError(f"{name} must be a str, datetime.date, datetime.datetime or pandas.Timestamp "
                    f"(naive times mean New York time), got {type(value).__name__}")


@lru_cache(maxsize=4096)
def ny_midnight_ns(day: dt.date) -> int:
    """00:00 America/New_York at the start of ``day``, as epoch nanoseconds."""
    local = dt.datetime(day.year, day.month, day.day, tzinfo=_NY_ZONE)
    return (local - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def ny_date(ns: int) -> dt.date:
    """The New York calendar date containing the instant ``ns``."""
    return pd.Timestamp(ns, tz="UTC").tz_convert(NY).date()


def rfc3339(ns: int) -> str:
    """RFC-3339 UTC, with the fraction of a second only when there is one
    (``2024-01-02T14:30:00Z``, ``2024-01-03T04:59:59.999999999Z``)."""
    seconds, frac = divmod(ns, NS)
    text = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def parse_symbols(symbols: Any, *, name: str = "symbols") -> list[str]:
    """Upper-case symbols from a string ("AAPL" or "AAPL,MSFT") or an iterable of strings,
    deduplicated in order.

    Raises:
        TypeError: not a string or iterable of strings.
        ValueError: empty, or a symbol that is not letters with dots or slashes (BRK.B, BTC/USD).
    """
    if isinstance(symbols, str):
        items: Iterable[Any] = symbols.split(",")
    elif isinstance(symbols, (dict, bytes)) or not isinstance(symbols, Iterable):
        raise TypeError(f"{name} must be a symbol string or a list of them, got {type(symbols).__name__}")
    else:
        items = symbols
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        symbol = parse_symbol(item, name=name)
        if symbol not in seen:
            seen.add(symbol)
            out.append(symbol)
    if not out:
        raise ValueError(f"{name} is empty; give at least one symbol, e.g. 'AAPL'")
    return out


def parse_symbol(value: Any, *, name: str = "symbol") -> str:
    """One upper-case symbol (letters, optionally joined by dots or slashes)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string such as 'AAPL', got {type(value).__name__}")
    symbol = value.strip().upper()
    if not _SYMBOL.match(symbol):
        raise ValueError(f"{name}={value!r} is not a symbol: use letters, with dots or slashes "
                         "between them (e.g. 'AAPL', 'BRK.B', 'BTC/USD')")
    return symbol


# ------------------------------------------------------------------------------- timeframes

_TF = re.compile(r"^\s*(\d+)\s*(min|minute|minutes|t|hour|hours|h|day|days|d|week|weeks|w|month|months|m)\s*$",
                 re.IGNORECASE)
_UNITS = {"min": "Min", "minute": "Min", "minutes": "Min", "t": "Min", "hour": "Hour",
          "hours": "Hour", "h": "Hour", "day": "Day", "days": "Day", "d": "Day", "week": "Week",
          "weeks": "Week", "w": "Week", "month": "Month", "months": "Month"}


@dataclass(frozen=True)
class Timeframe:
    """A bar timeframe in Alpaca's canonical spelling (``5Min``, ``1Hour``, ``1Day``...)."""

    amount: int
    unit: str   # Min | Hour | Day | Week | Month

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    @property
    def nanoseconds(self) -> int | None:
        """Length of one bar (None for months, whose length varies)."""
        per = {"Min": MINUTE_NS, "Hour": 60 * MINUTE_NS, "Day": DAY_NS, "Week": 7 * DAY_NS}.get(self.unit)
        return None if per is None else self.amount * per

    @property
    def cacheable(self) -> bool:
        """Bars that never straddle a New York day: minute bars dividing an hour, hours dividing
        the four/five hours between UTC and New York midnight, and daily bars."""
        if self.unit == "Min":
            return 60 % self.amount == 0
        if self.unit == "Hour":
            return self.amount == 1
        return self.unit == "Day"


def parse_timeframe(value: Any, *, name: str = "timeframe") -> Timeframe:
    """``"1Min"``, ``"5Min"``/``"5T"``, ``"1Hour"``/``"1H"``, ``"1Day"``/``"1D"``, ``"1Week"``/``"1W"``,
    ``"1Month"``/``"1M"`` (also lower case; a lone ``m`` means month as in Alpaca, ``min`` minute).

    Raises:
        TypeError/ValueError naming the argument and the valid forms.
    """
    valid = ("1-59Min (or T), 1-23Hour (or H), 1Day (D), 1Week (W), 1, 2, 3, 4, 6 or 12Month (M); "
             "e.g. '1Min', '15Min', '1Hour', '1Day'")
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string: {valid}; got {type(value).__name__}")
    match = _TF.match(value)
    if not match:
        raise ValueError(f"{name}={value!r} is not a timeframe: {valid}")
    amount, raw_unit = int(match.group(1)), match.group(2)
    unit = "Month" if raw_unit in ("m", "M") else _UNITS[raw_unit.lower()]
    limits = {"Min": range(1, 60), "Hour": range(1, 24), "Day": (1,), "Week": (1,),
              "Month": (1, 2, 3, 4, 6, 12)}
    if amount not in limits[unit]:
        raise ValueError(f"{name}={value!r} is out of range: {valid}")
    return Timeframe(amount, unit)


def parse_choice(value: Any, *, name: str, choices: Iterable[str], allow_none: bool = False) -> str | None:
    """``value`` lower-cased if it is one of ``choices``, else a ValueError listing them."""
    choices = tuple(choices)
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or value.strip().lower() not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")
    return value.strip().lower()


def parse_positive_int(value: Any, *, name: str, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return int(value)


def parse_tz(value: Any, *, name: str = "tz") -> str | None:
    """A time-zone name pandas understands (None keeps UTC)."""
    if value is None:
        return None
    try:
        pd.Timestamp(0, tz=value)
    except Exception:
        raise ValueError(f"{name}={value!r} is not a time zone; use e.g. 'America/New_York' or 'UTC'") from None
    return value
