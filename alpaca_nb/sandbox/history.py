"""Account activities and portfolio history of the sandbox, both derived from real fills.

Activities (``GET /v2/account/activities``) are the account's records: one ``CSD`` (cash deposit)
when the account is created and one ``FILL`` per execution. Portfolio history
(``GET /v2/account/portfolio/history``) replays those fills: the equity of a bucket is the cash
after every fill up to the bucket's end plus each holding valued at the market's last trade at
that instant (the closing auction price for daily buckets of finished sessions).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .clock import MINUTE_NS, NS, UTC, Sessions, from_ns, ny_date, ny_midnight_ns
from .wire import fmt_money, iso_us, parse_bool, parse_int, parse_time, unprocessable

# Activity types as of 2026-11-06 (protocol reference 2.11): what Alpaca returns is not quite what
# it accepts as an ``activity_types`` filter.
RETURNED_TYPES = frozenset(
    "FILL ACATC ACATS ALLOC CFEE CGD CIL CORR CSD CSR CSW DIV DIVCGL DIVCGS DIVFEE DIVFT DIVNRA "
    "DIVROC DIVTW DIVTXEX DIVWH DTCS DVF ECEXP EXTRD FEE FIMAT FXCNV FXTRD INT INTNRA INTTW INVPNL "
    "JNL JNLC JNLS MA MEM NC OCT OPASN OPCA OPCSH OPEXC OPEXP OPTRD PTC PTR REO REORG SC SEG SPIN "
    "SPLIT SSO SSP SUB VOF WH".split())
# Filter-only names: each stands for a group of returned types (the groups are the sandbox's
# reading of the names: trades, cash transfers; Alpaca does not list their members).
FILTER_GROUPS = {"TRD": frozenset({"FILL"}),
                 "TRANS": frozenset({"CSD", "CSW", "CSR", "JNL", "JNLC", "JNLS"}),
                 "MISC": frozenset(), "SWP": frozenset()}
NOT_A_FILTER = frozenset({"CORR", "SEG", "SSO", "SSP", "DTCS"})
FILTER_TYPES = (RETURNED_TYPES - NOT_A_FILTER) | frozenset(FILTER_GROUPS)
ACTIVITY_TYPES = FILTER_TYPES          # the names ``activity_types`` accepts
PAGE_SIZE_MAX = 100


@dataclass(frozen=True)
class Fill:
    """One execution, as portfolio history replays it (qty negative for sells)."""

    ns: int
    symbol: str
    qty: float
    price: float


def activity_id(ns: int) -> str:
    """``<UTC yyyymmddHHMMSSmmm>::<uuid>``, Alpaca's activity id format."""
    when = from_ns(ns, UTC)
    return f"{when:%Y%m%d%H%M%S}{when.microsecond // 1000:03d}::{uuid.uuid4()}"


def fill_activity(*, ns: int, seq: int, order_id: str, symbol: str, side: str, qty: float,
                  price: float, cum_qty: float, leaves_qty: float, order_status: str,
                  partial: bool) -> dict[str, Any]:
    return {"id": activity_id(ns), "activity_type": "FILL", "transaction_time": iso_us(ns),
            "type": "partial_fill" if partial else "fill", "price": fmt_money(price),
            "qty": fmt_money(qty), "side": side, "symbol": symbol,
            "leaves_qty": fmt_money(leaves_qty) or "0", "cum_qty": fmt_money(cum_qty),
            "order_id": order_id, "order_status": order_status, "_ns": ns, "_seq": seq}


def non_trade_activity(*, ns: int, seq: int, activity_type: str, net_amount: float,
                       description: str | None = None, sub_type: str | None = None,
                       symbol: str | None = None, cusip: str | None = None,
                       qty: float | None = None, per_share_amount: float | None = None,
                       currency: str = "USD", status: str = "executed") -> dict[str, Any]:
    """A non-trade activity (cash movements, dividends, splits...) on NY date of ``ns``: its own
    fields only (``symbol``, ``qty``, ``per_share_amount``... appear when they apply, never as
    nulls), with ``currency`` (Alpaca, 2026-06-22). Amounts in dollars; ``qty`` in shares."""
    record: dict[str, Any] = {"id": activity_id(ns), "activity_type": activity_type}
    if sub_type is not None:
        record["activity_sub_type"] = sub_type
    record.update(date=ny_date(ns).isoformat(), net_amount=fmt_money(net_amount) or "0",
                  currency=currency)
    for name, value in (("symbol", symbol), ("cusip", cusip), ("qty", fmt_money(qty)),
                        ("per_share_amount", fmt_money(per_share_amount)),
                        ("description", description)):
        if value is not None:
            record[name] = value
    record.update(status=status, _ns=ns, _seq=seq)
    return record


def deposit_activity(*, ns: int, seq: int, amount: float) -> dict[str, Any]:
    return non_trade_activity(ns=ns, seq=seq, activity_type="CSD", net_amount=amount,
                              description="initial deposit")


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def as_fill(record: dict[str, Any]) -> Fill | None:
    if record.get("activity_type") != "FILL":
        return None
    qty = float(record["qty"])
    return Fill(record["_ns"], record["symbol"], qty if record["side"] == "buy" else -qty,
                float(record["price"]))


def select_activities(records: Sequence[dict[str, Any]], query: dict[str, Any], *,
                      activity_type: str | None = None) -> list[dict[str, Any]]:
    """Filter and page an account's activities (records in ascending time order).

    Query: ``activity_types`` (comma list), ``date`` (NY date), ``after``/``until`` (exclusive),
    ``direction`` (``desc`` default), ``page_size`` (<= 100), ``page_token`` (an activity id).

    Raises:
        ApiError: 422 40010001 for an invalid parameter.
    """
    types: set[str] = set()
    raw_types = [activity_type] if activity_type else \
        [t.strip() for t in str(query.get("activity_types") or "").split(",") if t.strip()]
    for name in raw_types:
        upper = name.upper()
        if upper not in FILTER_TYPES:
            raise unprocessable(f"invalid activity_type: {name!r}")
        types |= FILTER_GROUPS.get(upper, {upper})
    day = query.get("date")
    after = parse_time(query.get("after"), "after")
    until = parse_time(query.get("until"), "until")
    if day and (after is not None or until is not None):
        raise unprocessable("date cannot be used together with after or until")
    lo = hi = None
    if day:
        try:
            d = dt.date.fromisoformat(str(day)[:10])
        except ValueError:
            raise unprocessable(f"invalid date: {day!r}") from None
        lo, hi = ny_midnight_ns(d), ny_midnight_ns(d + dt.timedelta(days=1))
    direction = str(query.get("direction") or "desc").lower()
    if direction not in ("asc", "desc"):
        raise unprocessable("invalid direction: must be asc or desc")
    size = parse_int(query.get("page_size"), "page_size", lo=1, hi=PAGE_SIZE_MAX)
    if size is None and not day:
        size = PAGE_SIZE_MAX

    items = [r for r in records
             if (not types or r["activity_type"] in types)
             and (after is None or r["_ns"] // 1000 > after // 1000)     # wire precision: µs
             and (until is None or r["_ns"] // 1000 < until // 1000)
             and (lo is None or lo <= r["_ns"] < hi)]
    if direction == "desc":
        items.reverse()
    token = query.get("page_token")
    if token:
        ids = [r["id"] for r in items]
        try:
            items = items[ids.index(token) + 1:]
        except ValueError:
            # an id that is not (or no longer) in the filtered list: page relative to its time
            ref = next((r for r in records if r["id"] == token), None)
            if ref is None:
                raise unprocessable(f"invalid page_token: {token!r}") from None
            key = (ref["_ns"], ref["_seq"])
            items = [r for r in items if ((r["_ns"], r["_seq"]) > key) == (direction == "asc")]
    if size is not None:
        items = items[:size]
    return [public(r) for r in items]


# ---------------------------------------------------------------- portfolio history

_PERIOD_RE = re.compile(r"^(\d+)([DWMA])$")
TIMEFRAMES = {"1Min": 1, "5Min": 5, "15Min": 15, "1H": 60, "1D": None}
REPORTING = ("market_hours", "extended_hours", "continuous")
MAX_POINTS = 100_000


class Prices:
    """Price lookups for valuation, cached per (symbol, instant)."""

    def __init__(self, market):
        self.market = market
        self._cache: dict[tuple[str, int], float] = {}

    def at(self, symbol: str, ns: int) -> float:
        key = (symbol, ns)
        price = self._cache.get(key)
        if price is None:
            price = float(self.market.trade_at(symbol, ns).price)
            self._cache[key] = price
        return price

    def close(self, symbol: str, day: dt.date, close_ns: int) -> float:
        key = (symbol, -close_ns)
        price = self._cache.get(key)
        if price is None:
            value = self.market.closing_price(symbol, day)
            price = float(value) if value is not None else self.at(symbol, close_ns - 1)
            self._cache[key] = price
        return price


def equity_series(fills: Sequence[Fill], initial_cash: float, times: Sequence[int],
                  price: Callable[[str, int], float]) -> list[float]:
    """Equity at each instant of ``times`` (ascending): cash after the fills up to and including
    that instant plus the holdings valued with ``price(symbol, index)``."""
    out: list[float] = []
    cash = initial_cash
    qty: dict[str, float] = {}
    i = 0
    for k, t in enumerate(times):
        while i < len(fills) and fills[i].ns <= t:
            f = fills[i]
            cash -= f.qty * f.price
            q = round(qty.get(f.symbol, 0.0) + f.qty, 9)
            if q:
                qty[f.symbol] = q
            else:
                qty.pop(f.symbol, None)
            i += 1
        out.append(cash + sum(q * price(sym, k) for sym, q in qty.items()))
    return out


def _shift_months(day: dt.date, months: int) -> dt.date:
    month = day.month - 1 + months
    year = day.year + month // 12
    month = month % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _period_start(end_ns: int, n: int, unit: str, sessions: Sessions) -> int:
    end_day = ny_date(end_ns)
    if unit == "D":
        sess = sessions.session(end_day)
        if sess is None or sess.premarket_open > end_ns:
            sess = sessions.previous_session(end_day)
        for _ in range(n - 1):
            if sess is None:
                break
            sess = sessions.previous_session(sess.date)
        day = sess.date if sess is not None else end_day - dt.timedelta(days=n)
    elif unit == "W":
        day = end_day - dt.timedelta(days=7 * n)
    elif unit == "M":
        day = _shift_months(end_day, -n)
    else:
        day = _shift_months(end_day, -12 * n)
    return ny_midnight_ns(day)


def _period_end(start_ns: int, n: int, unit: str, sessions: Sessions) -> int:
    start_day = ny_date(start_ns)
    if unit == "D":
        sess = sessions.next_session(start_ns)
        for _ in range(n - 1):
            if sess is None:
                break
            sess = sessions.next_session(ny_midnight_ns(sess.date + dt.timedelta(days=1)))
        day = (sess.date if sess is not None else start_day + dt.timedelta(days=n - 1))
        return ny_midnight_ns(day + dt.timedelta(days=1))
    if unit == "W":
        day = start_day + dt.timedelta(days=7 * n)
    elif unit == "M":
        day = _shift_months(start_day, n)
    else:
        day = _shift_months(start_day, 12 * n)
    return ny_midnight_ns(day)


def portfolio_history(query: dict[str, Any], *, fills: Sequence[Fill], initial_cash: float,
                      created_ns: int, now_ns: int, sessions: Sessions, market) -> dict[str, Any]:
    """``GET /v2/account/portfolio/history`` for one account.

    Query (protocol reference 2.12): ``period`` (``<n>D|W|M|A``, default 1M), ``timeframe``
    (1Min, 5Min, 15Min, 1H, 1D; default by span), ``intraday_reporting``, ``start``, ``end``,
    ``date_end``, ``pnl_reset`` (``per_day`` default for intraday, ``no_reset``),
    ``extended_hours`` (deprecated: extended_hours reporting).

    Raises:
        ApiError: 422 40010001 for an invalid parameter.
    """
    period = query.get("period") or None
    start = parse_time(query.get("start"), "start")
    end = parse_time(query.get("end"), "end")
    date_end = query.get("date_end")
    if end is None and date_end:
        try:
            end = ny_midnight_ns(dt.date.fromisoformat(str(date_end)) + dt.timedelta(days=1))
        except ValueError:
            raise unprocessable(f"invalid date_end: {date_end!r}") from None
    if start is not None and end is not None and period:
        raise unprocessable("only two of start, end and period can be specified")
    parsed = None
    if period:
        m = _PERIOD_RE.match(str(period).upper())
        if not m or int(m.group(1)) <= 0:
            raise unprocessable(f"invalid period: {period!r} (expected e.g. 1D, 2W, 1M, 1A)")
        parsed = (int(m.group(1)), m.group(2))
    end_ns = min(end if end is not None else now_ns, now_ns)
    if start is not None:
        start_ns = start
        if parsed and end is None:
            end_ns = min(_period_end(start, *parsed, sessions), now_ns)
    else:
        start_ns = _period_start(end_ns, *(parsed or (1, "M")), sessions)
    if start_ns > end_ns:
        raise unprocessable("start must be before end")

    timeframe = query.get("timeframe") or None
    span_days = (end_ns - start_ns) / (86_400 * NS)
    if timeframe is None:
        timeframe = "1Min" if span_days < 7 else ("15Min" if span_days < 30 else "1D")
    if timeframe not in TIMEFRAMES:
        raise unprocessable(f"invalid timeframe: {timeframe!r} (expected 1Min, 5Min, 15Min, 1H or 1D)")
    minutes = TIMEFRAMES[timeframe]
    if minutes is not None and span_days > 31:
        raise unprocessable(f"timeframe {timeframe} is only supported for periods up to 30 days")
    reporting = query.get("intraday_reporting") or None
    if reporting is None:
        reporting = "extended_hours" if parse_bool(query.get("extended_hours"), "extended_hours") \
            else "market_hours"
    if reporting not in REPORTING:
        raise unprocessable(f"invalid intraday_reporting: {reporting!r} "
                            "(expected market_hours, extended_hours or continuous)")
    pnl_reset = query.get("pnl_reset") or ("per_day" if minutes else "no_reset")
    if pnl_reset not in ("per_day", "no_reset"):
        raise unprocessable(f"invalid pnl_reset: {pnl_reset!r} (expected per_day or no_reset)")
    cashflow_types = query.get("cashflow_types")
    if cashflow_types and str(cashflow_types).upper() not in ("ALL", "NONE"):
        for name in str(cashflow_types).split(","):
            if name.strip().upper() not in ACTIVITY_TYPES:
                raise unprocessable(f"invalid cashflow_types: {name.strip()!r}")

    created_ns = int(created_ns)
    prices = Prices(market)
    first_day, last_day = ny_date(start_ns), ny_date(end_ns)
    days = [s for s in sessions.sessions_between(first_day, last_day)
            if s.postmarket_close > created_ns or s.close > created_ns]

    stamps: list[int] = []      # bucket labels, unix seconds
    at: list[int] = []          # valuation instants
    daily_close: list[tuple[dt.date, int] | None] = []
    day_of: list[dt.date] = []
    if minutes is None:
        for s in days:
            if s.open > now_ns or ny_midnight_ns(s.date) > end_ns:
                continue
            t = min(s.close, now_ns)
            stamps.append(ny_midnight_ns(s.date) // NS)
            at.append(t)
            daily_close.append((s.date, s.close) if t == s.close else None)
            day_of.append(s.date)
    else:
        step = minutes * MINUTE_NS
        lo = max(start_ns, created_ns - created_ns % step)
        for s in days:
            if reporting == "market_hours":
                w0, w1 = s.open, s.close
            elif reporting == "extended_hours":
                w0, w1 = s.premarket_open, s.postmarket_close
            else:
                w0 = ny_midnight_ns(s.date)
                w1 = ny_midnight_ns(s.date + dt.timedelta(days=1))
            b = w0
            while b < w1 and b <= end_ns and b <= now_ns:
                if b + step > lo:
                    stamps.append(b // NS)
                    at.append(min(b + step, w1, now_ns))
                    daily_close.append(None)
                    day_of.append(s.date)
                    if len(stamps) > MAX_POINTS:
                        raise unprocessable("the requested period and timeframe give too many "
                                            "data points")
                b += step

    def price(symbol: str, k: int) -> float:
        close = daily_close[k]
        if close is not None:
            return prices.close(symbol, close[0], close[1])
        return prices.at(symbol, at[k])

    equity = equity_series(fills, initial_cash, at, price)

    # P&L bases: the equity at the close of the session before (per day, or before the range).
    base_cache: dict[dt.date, tuple[float, dt.date]] = {}

    def base_for(day: dt.date) -> tuple[float, dt.date]:
        if day not in base_cache:
            prev = sessions.previous_session(day)
            if prev is None:
                base_cache[day] = (initial_cash, day)
            else:
                value = equity_series(fills, initial_cash, [prev.close],
                                      lambda sym, _k: prices.close(sym, prev.date, prev.close))[0]
                base_cache[day] = (value, prev.date)
        return base_cache[day]

    range_base = base_for(day_of[0] if day_of else first_day)
    profit_loss: list[float] = []
    profit_loss_pct: list[float | None] = []
    base_value, base_asof = range_base
    for k, value in enumerate(equity):
        base, asof = base_for(day_of[k]) if pnl_reset == "per_day" else range_base
        if pnl_reset == "per_day":
            base_value, base_asof = base, asof
        pl = value - base
        profit_loss.append(round(pl, 4))
        profit_loss_pct.append(round(pl / base, 8) if base else None)
    return {
        "timestamp": stamps,
        "equity": [round(v, 4) for v in equity],
        "profit_loss": profit_loss,
        "profit_loss_pct": profit_loss_pct,
        "base_value": round(base_value, 4),
        "base_value_asof": base_asof.isoformat(),
        "timeframe": timeframe,
        "cashflow": {},
    }

