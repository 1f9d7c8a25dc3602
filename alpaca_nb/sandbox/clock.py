"""Virtual time and trading sessions for the sandbox.

Every part of the sandbox asks :class:`Clock` for "now" (integer nanoseconds since the Unix
epoch, UTC) and :class:`Sessions` for which minutes the market trades, so that a test or a
notebook can pin the sandbox to a fixed moment (``Clock(start=...)``), run time faster
(``speed=60``) or jump it forward (``advance``) and every surface (REST, streams, matching) agrees.

Two market modes:

``always-open`` (the default)
    The sandbox *trades* at any hour: every New York calendar day is one trading session from
    00:00 to 24:00 ET, all of it regular hours, so demos and tests can fill an order on a
    Sunday; day orders expire at New York midnight. Only the live present is open out of hours
    (its tape, :mod:`._live`, is what the engine fills at and what the data stream and the latest
    trade and quote show then); the history follows the NYSE calendar below, as in calendar
    mode.
``calendar``
    Real NYSE sessions from ``exchange_calendars`` (holidays and early closes included), with
    extended hours 04:00-09:30 and 16:00-20:00 ET (17:00 on early-close days). Outside hours a
    day order waits for the open, as Alpaca's does.

:attr:`Sessions.calendar` is the NYSE calendar in both modes (what the market, ``/v2/calendar``
and ``/v2/clock``'s next open and close follow).
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

NY = ZoneInfo("America/New_York")
UTC = dt.timezone.utc
NS = 1_000_000_000
MINUTE_NS = 60 * NS
DAY_NS = 86_400 * NS

MarketMode = Literal["always-open", "calendar"]
MARKET_MODES = ("always-open", "calendar")


def to_ns(value: dt.datetime | dt.date | str | int | float) -> int:
    """Nanoseconds since the epoch for a datetime (naive = UTC), ISO string, date or number."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float):
        return int(value * NS)
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        value = dt.datetime.fromisoformat(text)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - dt.datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000
    if isinstance(value, dt.date):
        return to_ns(dt.datetime(value.year, value.month, value.day, tzinfo=NY))
    raise TypeError(f"cannot interpret {value!r} as a time")


def from_ns(ns: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    """Aware datetime (microsecond precision) for nanoseconds since the epoch."""
    return dt.datetime.fromtimestamp(ns // 1000 / 1e6, tz=tz)


def ny_date(ns: int) -> dt.date:
    """The New York calendar date that contains the instant ``ns``."""
    return from_ns(ns, NY).date()


def rfc3339_array(t: np.ndarray) -> list[str]:
    """Each instant of an int64 ns array as Alpaca's market data writes it: RFC 3339 in UTC
    with ``Z``, nanoseconds, trailing zeros of the fraction trimmed (as
    :func:`alpaca_nb._stream_protocol.iso_ns`)."""
    text = np.datetime_as_string(np.asarray(t, dtype=np.int64).astype("datetime64[ns]"), unit="ns")
    return [s.rstrip("0").rstrip(".") + "Z" for s in text.tolist()]


@lru_cache(maxsize=8192)
def ny_midnight_ns(day: dt.date) -> int:
    """00:00 America/New_York on ``day`` as epoch nanoseconds."""
    return to_ns(dt.datetime(day.year, day.month, day.day, tzinfo=NY))


def ny_time_ns(day: dt.date, hour: int, minute: int = 0) -> int:
    return to_ns(dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY))


class Clock:
    """The sandbox's notion of now.

    ``start`` pins the virtual time at construction (real time when None); ``speed`` makes
    virtual time run faster or slower than wall time. ``advance`` and ``set`` only move forward,
    so nothing that already happened can un-happen.
    """

    def __init__(self, start: dt.datetime | str | int | None = None, speed: float = 1.0):
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed!r}")
        self._lock = threading.Lock()
        self._wall0 = time.time_ns()
        self._virt0 = self._wall0 if start is None else to_ns(start)
        self.speed = float(speed)

    @property
    def is_real_time(self) -> bool:
        return self.speed == 1.0 and abs(self._virt0 - self._wall0) < NS

    def now_ns(self) -> int:
        wall = time.time_ns()
        with self._lock:
            return self._virt0 + int((wall - self._wall0) * self.speed)

    def advance(self, seconds: float) -> int:
        """Jump forward by ``seconds`` of virtual time; returns the new now."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._virt0 += int(seconds * NS)
        return self.now_ns()

    def set(self, when: dt.datetime | str | int) -> int:
        """Jump forward to ``when``; returns the new now."""
        target = to_ns(when)
        now = self.now_ns()
        if target < now:
            raise ValueError("the sandbox clock only moves forward")
        return self.advance((target - now) / NS)

    def wall_seconds(self, virtual_ns: int) -> float:
        """Wall-clock seconds until the virtual instant ``virtual_ns`` (negative if past)."""
        return (virtual_ns - self.now_ns()) / self.speed / NS


_SETTLEMENT_LAGS = ((dt.date(2024, 5, 28), 1), (dt.date(2017, 9, 5), 2), (dt.date(1995, 6, 7), 3),
                    (dt.date.min, 5))


def _bank_holiday(day: dt.date) -> bool:
    """Columbus Day (second Monday of October) or Veterans Day (November 11, the 12th when the
    11th is a Sunday): Federal Reserve holidays on which the NYSE trades."""
    if day.month == 10:
        return day.weekday() == 0 and 8 <= day.day <= 14
    if day.month == 11:
        return (day.day == 11 and day.weekday() < 5) or (day.day == 12 and day.weekday() == 0)
    return False


@dataclass(frozen=True)
class Session:
    """One trading day. All instants are epoch nanoseconds (UTC)."""

    date: dt.date
    premarket_open: int   # first minute with data (04:00 ET, or midnight when always-open)
    open: int             # regular session open
    close: int            # regular session close
    postmarket_close: int  # end of the last minute with data
    early_close: bool = False

    def minutes(self) -> np.ndarray:
        """Start instants (int64 ns) of every minute that has data on this day."""
        return np.arange(self.premarket_open, self.postmarket_close, MINUTE_NS, dtype=np.int64)

    @property
    def n_minutes(self) -> int:
        return (self.postmarket_close - self.premarket_open) // MINUTE_NS


class Sessions:
    """Which days and minutes the synthetic market trades, for one market mode."""

    def __init__(self, mode: MarketMode = "always-open"):
        if mode not in MARKET_MODES:
            raise ValueError(f"market mode must be one of {MARKET_MODES}, got {mode!r}")
        self.mode = mode
        self._dates: list[dt.date] = []
        self._table: dict[dt.date, tuple[int, int]] = {}
        self._calendar: Sessions | None = None
        if mode == "calendar":
            self._load_calendar()

    @property
    def calendar(self) -> Sessions:
        """The NYSE sessions (this object in calendar mode): what the market's data follows in
        every mode."""
        if self.mode == "calendar":
            return self
        if self._calendar is None:
            self._calendar = Sessions("calendar")
        return self._calendar

    # The NYSE calendar is loaded once per process: exchange_calendars takes ~1 s to import.
    _calendar_cache: tuple[list[dt.date], dict[dt.date, tuple[int, int]]] | None = None
    _calendar_lock = threading.Lock()

    def _load_calendar(self) -> None:
        with Sessions._calendar_lock:
            if Sessions._calendar_cache is None:
                import exchange_calendars as xcals

                cal = xcals.get_calendar("XNYS", start="1990-01-02", end="2035-12-31")
                sched = cal.schedule
                opens = sched["open"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
                closes = sched["close"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
                dates = [d.date() for d in sched.index]
                table = {d: (int(o), int(c)) for d, o, c in zip(dates, opens, closes)}
                Sessions._calendar_cache = (dates, table)
        self._dates, self._table = Sessions._calendar_cache

    @property
    def first_date(self) -> dt.date:
        return self._dates[0] if self._dates else dt.date(1970, 1, 1)

    @property
    def last_date(self) -> dt.date:
        return self._dates[-1] if self._dates else dt.date(2099, 12, 31)

    def session(self, day: dt.date) -> Session | None:
        """The session on New York date ``day``, or None when the market does not trade."""
        if self.mode == "always-open":
            start = ny_midnight_ns(day)
            end = ny_midnight_ns(day + dt.timedelta(days=1))
            return Session(day, start, start, end, end)
        hours = self._table.get(day)
        if hours is None:
            return None
        open_ns, close_ns = hours
        early = close_ns < ny_time_ns(day, 16)
        post = ny_time_ns(day, 17 if early else 20)
        return Session(day, ny_time_ns(day, 4), open_ns, close_ns, post, early)

    def sessions_between(self, first: dt.date, last: dt.date) -> list[Session]:
        """Sessions with ``first <= date <= last``, in date order."""
        if last < first:
            return []
        if self.mode == "always-open":
            days = (last - first).days + 1
            return [self.session(first + dt.timedelta(days=i)) for i in range(days)]
        lo = bisect.bisect_left(self._dates, first)
        hi = bisect.bisect_right(self._dates, last)
        return [self.session(d) for d in self._dates[lo:hi]]

    def session_at(self, ns: int) -> Session | None:
        """The session whose data window (extended hours included) contains ``ns``."""
        sess = self.session(ny_date(ns))
        if sess is not None and sess.premarket_open <= ns < sess.postmarket_close:
            return sess
        return None

    def is_open(self, ns: int) -> bool:
        """True during regular trading hours."""
        sess = self.session(ny_date(ns))
        return sess is not None and sess.open <= ns < sess.close

    def is_extended(self, ns: int) -> bool:
        """True during pre-market or after-hours trading (never in always-open mode)."""
        sess = self.session_at(ns)
        return sess is not None and not (sess.open <= ns < sess.close)

    def next_session(self, ns: int, *, include_today: bool = True) -> Session | None:
        """The first session starting on or after the NY date of ``ns``."""
        day = ny_date(ns) if include_today else ny_date(ns) + dt.timedelta(days=1)
        if self.mode == "always-open":
            return self.session(day)
        i = bisect.bisect_left(self._dates, day)
        return self.session(self._dates[i]) if i < len(self._dates) else None

    def previous_session(self, day: dt.date) -> Session | None:
        """The last session strictly before New York date ``day``."""
        if self.mode == "always-open":
            return self.session(day - dt.timedelta(days=1))
        i = bisect.bisect_left(self._dates, day)
        return self.session(self._dates[i - 1]) if i > 0 else None

    def settlement_date(self, day: dt.date) -> dt.date:
        """The settlement date of a trade on NY date ``day``, on this calendar's sessions: US
        equities settle T+1 business days since 2024-05-28 (T+2 from 2017-09-05, T+3 from
        1995-06-07, T+5 before). Business days are the NYSE sessions less the bank holidays on
        which the exchange trades (Columbus Day, Veterans Day): a Friday trade before Columbus
        Day settles on Tuesday."""
        lag = next(n for since, n in _SETTLEMENT_LAGS if day >= since)
        while lag:
            sess = self.next_session(ny_midnight_ns(day + dt.timedelta(days=1)))
            if sess is None:                    # past the calendar's end: calendar days
                return day + dt.timedelta(days=lag)
            day = sess.date
            lag -= not _bank_holiday(day)
        return day

    def next_open(self, ns: int) -> int:
        """The next regular open strictly after ``ns``."""
        sess = self.next_session(ns)
        while sess is not None and sess.open <= ns:
            sess = self.next_session(ny_midnight_ns(sess.date + dt.timedelta(days=1)))
        if sess is None:
            raise ValueError("no session after the end of the calendar")
        return sess.open

    def next_close(self, ns: int) -> int:
        """The next regular close strictly after ``ns``."""
        sess = self.next_session(ns)
        while sess is not None and sess.close <= ns:
            sess = self.next_session(ny_midnight_ns(sess.date + dt.timedelta(days=1)))
        if sess is None:
            raise ValueError("no session after the end of the calendar")
        return sess.close
