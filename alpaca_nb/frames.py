"""Alpaca JSON -> pandas, with one fixed schema per endpoint and one converter that applies it.

Pure functions, no I/O. A schema is a tuple of :class:`Field` (column name, JSON key, kind); the
kind fixes the dtype, so a frame has the same columns and dtypes whether the answer held zero
rows, one or a million, and no column is ever dropped for being empty:

=========  =======================================  =============================================
kind       dtype                                    from
=========  =======================================  =============================================
float      float64                                  JSON numbers, or Alpaca's decimal strings
int        Int64 (nullable)                         JSON integers
str        str (pandas' string dtype)               JSON strings
bool       boolean (nullable)                       JSON booleans
time       datetime64[ns, UTC] (or ``tz=``)         RFC-3339 strings with any offset
date       datetime64[ns] (a New York date)         ``YYYY-MM-DD``
list       list<string>[pyarrow]                    JSON arrays of strings (trade conditions)
=========  =======================================  =============================================

Market-data pages are converted column by column straight from the lists ``orjson.loads`` made:
one list of values per key, then numpy/pyarrow (timestamps are parsed by pyarrow's string ->
timestamp cast), so no Python object is created per row. Time series come back with a
``(symbol, timestamp)`` MultiIndex sorted by symbol, then time.

That index is deliberately *not unique*: every row the server sends is kept. Real trade and quote
pages hold several rows with one symbol and one timestamp (two AAPL quotes in the same
microsecond are common), so rows sharing a ``(symbol, timestamp)`` stay in the order the server
sent them. ``frame.loc[("AAPL", ts)]`` returns all of them; ``frame.index.is_unique`` tells
whether there are any; ``frame.groupby(level=["symbol", "timestamp"]).last()`` keeps one per
instant when that is what an analysis wants. Bars have one row per (symbol, start) by nature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "ACCOUNT",
    "ACTIVITY",
    "ASSET",
    "BAR",
    "CALENDAR",
    "CLOCK",
    "CORPORATE_ACTION",
    "ORDER",
    "POSITION",
    "QUOTE",
    "SNAPSHOT",
    "STR",
    "TRADE",
    "Field",
    "Schema",
    "SeriesAccumulator",
    "calendar_frame",
    "dtypes",
    "empty_series_frame",
    "latest_frame",
    "order_series",
    "orders_frame",
    "portfolio_history_frame",
    "record_series",
    "records_frame",
    "snapshots_frame",
]

STR = pd.Series([], dtype="str").dtype            # pandas 3: StringDtype(na_value=nan)
LIST = pd.ArrowDtype(pa.list_(pa.string()))
NAT = np.iinfo(np.int64).min
_NS_UTC = pa.timestamp("ns", "UTC")


@dataclass(frozen=True)
class Field:
    """One column: its name in the frame, where it is in the JSON (a key or a path of keys) and
    its kind (see the module docstring)."""

    name: str
    key: str | tuple[str, ...]
    kind: str


@dataclass(frozen=True)
class Schema:
    """The columns of one endpoint's frame; ``index`` names the field used as the index."""

    name: str
    fields: tuple[Field, ...]
    index: str | None = None

    def dtypes(self, tz: str | None = None) -> dict[str, Any]:
        """Column -> dtype of the frame (index excluded)."""
        return {f.name: _dtype(f.kind, tz) for f in self.fields if f.name != self.index}


def _schema(name: str, spec: str, index: str | None = None, prefix: tuple[str, ...] = ()) -> Schema:
    """Schema from lines of ``column[=json_key] kind``."""
    fields = []
    for line in spec.split(";"):
        line = line.strip()
        if not line:
            continue
        target, kind = line.split()
        column, _, key = target.partition("=")
        fields.append(Field(column, prefix + (key or column,) if prefix else (key or column), kind))
    return Schema(name, tuple(fields), index)


def _dtype(kind: str, tz: str | None = None) -> Any:
    if kind == "time":
        return pd.DatetimeTZDtype("ns", tz or "UTC")
    return {"float": np.dtype("float64"), "int": pd.Int64Dtype(), "str": STR,
            "bool": pd.BooleanDtype(), "date": np.dtype("datetime64[ns]"), "list": LIST}[kind]


def dtypes(schema: Schema, tz: str | None = None) -> dict[str, Any]:
    """Column -> dtype of a schema's frame."""
    return schema.dtypes(tz)


_MONEY = "float"

ACCOUNT = _schema("account", """
    id str; account_number str; status str; crypto_status str; currency str;
    cash float; buying_power float; regt_buying_power float;
    effective_buying_power float; non_marginable_buying_power float; options_buying_power float;
    equity float; last_equity float; portfolio_value float;
    long_market_value float; short_market_value float; position_market_value float;
    initial_margin float; maintenance_margin float; last_maintenance_margin float; sma float;
    multiplier float; accrued_fees float; pending_transfer_in float; pending_transfer_out float;
    trading_blocked bool; transfers_blocked bool;
    account_blocked bool; trade_suspended_by_user bool; shorting_enabled bool;
    options_approved_level int; options_trading_level int; crypto_tier int;
    created_at time; balance_asof date
""")

POSITION = _schema("positions", """
    symbol str; qty float; side str; avg_entry_price float; current_price float;
    market_value float; cost_basis float; unrealized_pl float; unrealized_plpc float;
    unrealized_intraday_pl float; unrealized_intraday_plpc float; lastday_price float;
    change_today float; qty_available float; exchange str; asset_class str; asset_id str;
    asset_marginable bool
""", index="symbol")

ORDER = _schema("orders", """
    id str; client_order_id str; symbol str; side str; type str; qty float; notional float;
    filled_qty float; filled_avg_price float; limit_price float; stop_price float;
    trail_price float; trail_percent float; hwm float; time_in_force str; status str;
    order_class str; extended_hours bool; created_at time; updated_at time; submitted_at time;
    filled_at time; expired_at time; canceled_at time; failed_at time; replaced_at time;
    expires_at time; cancel_requested_at time; replaced_by str; replaces str; asset_id str;
    asset_class str;
    position_intent str; ratio_qty float; parent_id str
""", index="id")

ASSET = _schema("assets", """
    symbol str; name str; exchange str; asset_class=class str; status str; tradable bool;
    marginable bool; shortable bool; borrow_status str; easy_to_borrow bool; fractionable bool;
    id str; cusip str;
    maintenance_margin_requirement float; margin_requirement_long float;
    margin_requirement_short float; attributes list;
    min_order_size float; min_trade_increment float; price_increment float
""", index="symbol")

CLOCK = _schema("clock", "timestamp time; is_open bool; next_open time; next_close time")

CALENDAR = _schema("calendar", """
    date date; open time; close time; session_open time; session_close time; settlement_date date
""", index="date")

ACTIVITY = _schema("activities", """
    id str; activity_type str; activity_sub_type str; transaction_time time; date date; type str;
    symbol str; side str; qty float; price float; cum_qty float; leaves_qty float; order_id str;
    order_status str; net_amount float; currency str; per_share_amount float; description str;
    status str; cusip str
""", index="id")

# one row per action of GET /v1/corporate-actions, whatever its type (see
# alpaca_nb._marketdata.corporate_action_row for how each type's fields map onto these columns)
CORPORATE_ACTION = _schema("corporate_actions", """
    type str; symbol str; ex_date date; process_date date; payable_date date; record_date date;
    effective_date date; old_rate float; new_rate float; rate float; cash float; new_symbol str;
    cusip str; new_cusip str; special bool; foreign bool; id str
""")

BAR = _schema("bars", "timestamp=t time; open=o float; high=h float; low=l float; close=c float; "
                      "volume=v float; trade_count=n float; vwap=vw float", index="timestamp")
TRADE = _schema("trades", "timestamp=t time; price=p float; size=s float; exchange=x str; "
                          "id=i int; conditions=c list; tape=z str; update=u str", index="timestamp")
QUOTE = _schema("quotes", "timestamp=t time; bid_price=bp float; bid_size=bs float; "
                          "bid_exchange=bx str; ask_price=ap float; ask_size=as float; "
                          "ask_exchange=ax str; conditions=c list; tape=z str", index="timestamp")


def _prefixed(prefix: str, section: str, schema: Schema, names: Sequence[str]) -> tuple[Field, ...]:
    by_name = {f.name: f for f in schema.fields}
    return tuple(Field(f"{prefix}{n}", (section, by_name[n].key), by_name[n].kind) for n in names)


_BAR_COLS = ("timestamp", "open", "high", "low", "close", "volume", "trade_count", "vwap")
SNAPSHOT = Schema("snapshots", (
    _prefixed("trade_", "latestTrade", TRADE, [f.name for f in TRADE.fields])
    + _prefixed("quote_", "latestQuote", QUOTE, ("timestamp",))
    + _prefixed("", "latestQuote", QUOTE, ("bid_price", "bid_size", "bid_exchange", "ask_price",
                                           "ask_size", "ask_exchange"))
    + _prefixed("quote_", "latestQuote", QUOTE, ("conditions", "tape"))
    + _prefixed("minute_", "minuteBar", BAR, _BAR_COLS)
    + _prefixed("daily_", "dailyBar", BAR, _BAR_COLS)
    + _prefixed("prev_daily_", "prevDailyBar", BAR, _BAR_COLS)
))


# ------------------------------------------------------------------ column extraction

def _values(records: Sequence[Any], key: str | tuple[str, ...]) -> list[Any]:
    """The values of one key across records (None where absent), in one list."""
    if isinstance(key, tuple):
        out: list[Any] = list(records)
        for part in key:
            out = [r.get(part) if isinstance(r, dict) else None for r in out]
        return out
    try:
        return [r[key] for r in records]
    except (KeyError, TypeError):
        return [r.get(key) if isinstance(r, dict) else None for r in records]


def _float_column(records: Sequence[Any], key: str) -> np.ndarray:
    """A float64 column straight from the records (the fast path for market data: numbers under
    a key every record has), else through the general path."""
    try:
        return np.fromiter(map(itemgetter(key), records), np.float64, len(records))
    except (KeyError, TypeError, ValueError):
        return _chunk("float", _values(records, key))


def _chunk(kind: str, values: list[Any]) -> Any:
    """One column's values as an accumulable chunk (numpy for float/time, pyarrow otherwise)."""
    if kind == "float":
        try:
            return np.array(values, dtype=np.float64)
        except (ValueError, TypeError):     # "" or junk in a decimal string
            return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)
    if kind == "time":
        try:
            ts = pa.array(values, pa.string()).cast(_NS_UTC)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            ts = pa.array(pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce",
                                         format="ISO8601").astype("datetime64[ns, UTC]"))
        return ts.cast(pa.int64()).fill_null(NAT).to_numpy(zero_copy_only=False)
    if kind == "date":
        try:
            return pa.array(values, pa.string()).cast(pa.date32())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array([None] * len(values), pa.date32())
    typ = {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_(), "list": pa.list_(pa.string())}[kind]
    try:
        return pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        coerced = [_coerce(kind, v) for v in values]
        return pa.array(coerced, typ)


def _coerce(kind: str, value: Any) -> Any:
    """Best effort for an odd value (a number as a string, a bare string for a list)."""
    if value is None:
        return None
    try:
        if kind == "int":
            return int(float(value))
        if kind == "bool":
            return str(value).lower() in ("true", "1") if isinstance(value, str) else bool(value)
        if kind == "list":
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        return str(value)
    except (TypeError, ValueError):
        return None


def _finish(kind: str, chunks: list[Any], tz: str | None) -> Any:
    """Concatenated chunks as a pandas array of the kind's dtype."""
    if kind == "float":     # always a fresh array: chunks may be read-only views of the cache
        return np.concatenate(chunks) if chunks else np.empty(0)
    if kind == "time":
        ns = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.empty(0, np.int64)
        return _times(ns, tz)
    typ = {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_(), "list": pa.list_(pa.string()),
           "date": pa.date32()}[kind]
    arr = pa.concat_arrays(chunks) if chunks else pa.array([], typ)
    if kind == "str":
        return pd.array(arr, dtype=STR)
    if kind == "int":
        return pd.array(arr.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get), dtype="Int64")
    if kind == "bool":
        return pd.array(arr.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get), dtype="boolean")
    if kind == "date":
        ns = arr.cast(pa.timestamp("ns")).cast(pa.int64()).fill_null(NAT).to_numpy(zero_copy_only=False)
        return ns.view("M8[ns]")
    return pd.arrays.ArrowExtensionArray(arr)


def _times(ns: np.ndarray, tz: str | None) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(ns.view("M8[ns]")).tz_localize("UTC")
    return index.tz_convert(tz) if tz else index


def _columns(records: Sequence[Any], fields: Iterable[Field], tz: str | None) -> dict[str, Any]:
    return {f.name: _finish(f.kind, [_chunk(f.kind, _values(records, f.key))], tz) for f in fields}


# ------------------------------------------------------------------ trading-side frames

def records_frame(records: Sequence[Mapping[str, Any]] | None, schema: Schema, *,
                  tz: str | None = None) -> pd.DataFrame:
    """A list of JSON objects as a frame with the schema's columns and dtypes (index set when the
    schema names one). Keys not in the schema are ignored; missing keys become NA."""
    records = list(records or ())
    cols = _columns(records, schema.fields, tz)
    frame = pd.DataFrame(cols, columns=[f.name for f in schema.fields])
    if schema.index:
        frame = frame.set_index(schema.index)
    return frame


def record_series(record: Mapping[str, Any], schema: Schema, *, tz: str | None = None,
                  name: Any = None) -> pd.Series:
    """One JSON object as a Series indexed by the schema's field names (object dtype holding
    float/Timestamp/bool values)."""
    names = [f.name for f in schema.fields]
    row = pd.DataFrame(_columns([record], schema.fields, tz), columns=names).iloc[0].astype(object)
    row.name = name
    return row


def orders_frame(records: Sequence[Mapping[str, Any]] | None, *, nested: bool = False,
                 tz: str | None = None) -> pd.DataFrame:
    """Orders indexed by id. With ``nested`` the legs of multi-leg orders become rows of their
    own right after their parent, with ``parent_id`` set (it is NA on top-level orders)."""
    rows: list[Mapping[str, Any]] = []
    for order in records or ():
        rows.append(order)
        if nested:
            for leg in order.get("legs") or ():
                rows.append({**leg, "parent_id": order.get("id")})
    return records_frame(rows, ORDER, tz=tz)


def order_series(order: Mapping[str, Any], *, tz: str | None = None) -> pd.Series:
    """One order as a Series; its legs (bracket/oco/oto) are in ``.attrs["legs"]`` as an orders
    frame with ``parent_id`` set."""
    series = record_series(order, ORDER, tz=tz, name=order.get("id"))
    legs = [{**leg, "parent_id": order.get("id")} for leg in order.get("legs") or ()]
    series.attrs["legs"] = records_frame(legs, ORDER, tz=tz)
    return series


def calendar_frame(records: Sequence[Mapping[str, Any]] | None, *, tz: str | None = None) -> pd.DataFrame:
    """Trading days indexed by New York date; open/close (regular hours) and session_open/
    session_close (extended hours) as tz-aware timestamps."""
    records = list(records or ())
    dates = [r.get("date") for r in records]
    out: dict[str, Any] = {"date": _finish("date", [_chunk("date", dates)], tz)}
    for name in ("open", "close", "session_open", "session_close"):
        stamps = [_ny_stamp(d, r.get(name)) for d, r in zip(dates, records)]
        local = pd.to_datetime(pd.Series(stamps, dtype=object), format="%Y-%m-%d %H:%M", errors="coerce")
        aware = pd.DatetimeIndex(local).tz_localize("America/New_York", ambiguous="NaT",
                                                    nonexistent="NaT").tz_convert(tz or "UTC")
        out[name] = aware.as_unit("ns")
    out["settlement_date"] = _finish("date", [_chunk("date", [r.get("settlement_date") for r in records])], tz)
    return pd.DataFrame(out, columns=[f.name for f in CALENDAR.fields]).set_index("date")


def _ny_stamp(date: Any, hhmm: Any) -> str | None:
    if not isinstance(date, str) or not isinstance(hhmm, str):
        return None
    digits = hhmm.replace(":", "")
    return f"{date} {digits[:2]}:{digits[2:4]}" if len(digits) >= 4 else None


def portfolio_history_frame(body: Mapping[str, Any] | None, *, tz: str | None = None) -> pd.DataFrame:
    """Equity curve indexed by timestamp (Unix seconds on the wire); ``attrs`` keeps base_value,
    base_value_asof, timeframe and cashflow."""
    body = body or {}
    seconds = np.array([np.nan if v is None else v for v in body.get("timestamp") or ()], dtype=np.float64)
    ns = np.where(np.isnan(seconds), NAT, np.nan_to_num(seconds) * 1e9).astype(np.int64)
    index = _times(ns, tz).rename("timestamp")
    n = len(index)
    cols = {}
    for name in ("equity", "profit_loss", "profit_loss_pct"):
        values = list(body.get(name) or ())
        values += [None] * (n - len(values))
        cols[name] = _chunk("float", values[:n])
    frame = pd.DataFrame(cols, index=index)
    frame.attrs.update({k: body.get(k) for k in ("base_value", "base_value_asof", "timeframe", "cashflow")})
    return frame


# ------------------------------------------------------------------ market data

def latest_frame(by_symbol: Mapping[str, Any] | None, schema: Schema, symbols: Sequence[str], *,
                 tz: str | None = None) -> pd.DataFrame:
    """``{"AAPL": {...}, ...}`` (latest bar/trade/quote or snapshots) as a frame indexed by symbol,
    one row per requested symbol in the order asked (all NA when the server had nothing)."""
    by_symbol = by_symbol or {}
    records = [by_symbol.get(s) or {} for s in symbols]
    frame = pd.DataFrame(_columns(records, schema.fields, tz), columns=[f.name for f in schema.fields])
    frame.index = pd.Index(list(symbols), dtype=STR, name="symbol")
    return frame


def snapshots_frame(by_symbol: Mapping[str, Any] | None, symbols: Sequence[str], *,
                    tz: str | None = None) -> pd.DataFrame:
    """Snapshots flattened into trade_*, quote_*/bid_*/ask_*, minute_*, daily_*, prev_daily_*
    columns, indexed by symbol."""
    return latest_frame(by_symbol, SNAPSHOT, symbols, tz=tz)


def empty_series_frame(schema: Schema, *, tz: str | None = None) -> pd.DataFrame:
    """A zero-row bars/trades/quotes frame with the full index and columns."""
    return SeriesAccumulator(schema).frame(tz=tz)


class SeriesAccumulator:
    """Collects market-data pages (``{"AAPL": [bar, ...], ...}``) column by column and assembles
    one frame with a (symbol, timestamp) MultiIndex.

    ``add`` converts a page right away, so the page's dicts can be freed; ``frame`` concatenates.
    Pages must arrive in the server's order (symbol, then time) unless ``frame(sort=True)``.
    """

    def __init__(self, schema: Schema):
        self.schema = schema
        self._time = next(f for f in schema.fields if f.name == "timestamp")
        self._fields = [f for f in schema.fields if f.name != "timestamp"]
        self._symbols: dict[str, int] = {}
        self._codes: list[np.ndarray | tuple[int, int]] = []    # arrays, or (code, n) runs
        self._times: list[np.ndarray] = []
        self._chunks: dict[str, list[Any]] = {f.name: [] for f in self._fields}
        self._ordered = True           # rows so far in (arrival code, time) order (ties allowed)
        self._last: tuple[int, int] | None = None
        self.rows = 0

    def _track_order(self, codes: np.ndarray, times: np.ndarray) -> None:
        """Keep ``_ordered`` up to date a page at a time (cheaper than one pass over everything)."""
        if not self._ordered or not len(codes):
            return
        starts_after = self._last is None or (int(codes[0]), int(times[0])) >= self._last
        if not starts_after or not _is_sorted(codes, times):
            self._ordered = False
        self._last = (int(codes[-1]), int(times[-1]))

    def add(self, groups: Mapping[str, Sequence[Mapping[str, Any]]] | None) -> int:
        """Convert one page's ``symbol -> records`` mapping; returns the number of rows added."""
        if not groups:
            return 0
        present = [s for s, recs in groups.items() if recs]    # symbols without rows are left out
        if not present:
            return 0
        lists = [groups[s] for s in present]
        counts = np.fromiter(map(len, lists), np.int64, len(lists))
        n = int(counts.sum())
        codes = np.fromiter((self._symbols.setdefault(s, len(self._symbols)) for s in present),
                            np.int32, len(present))
        self._codes.append(np.repeat(codes, counts))
        flat = lists[0] if len(lists) == 1 else [r for recs in lists for r in recs]
        self._times.append(_chunk("time", _values(flat, self._time.key)))
        self._track_order(self._codes[-1], self._times[-1])
        for f in self._fields:
            if f.kind == "float" and isinstance(f.key, str):
                self._chunks[f.name].append(_float_column(flat, f.key))
            else:
                self._chunks[f.name].append(_chunk(f.kind, _values(flat, f.key)))
        self.rows += n
        return n

    def add_columns(self, symbol_codes: np.ndarray, symbols: Sequence[str], times_ns: np.ndarray,
                    columns: Mapping[str, Any]) -> None:
        """Add rows that are already columnar (from the cache): codes index into ``symbols``."""
        if len(times_ns) == 0:
            return
        remap = np.fromiter((self._symbols.setdefault(s, len(self._symbols)) for s in symbols),
                            np.int32, len(symbols))
        self._codes.append(remap[symbol_codes])
        self._times.append(np.asarray(times_ns, dtype=np.int64))
        self._track_order(self._codes[-1], self._times[-1])
        for f in self._fields:
            self._chunks[f.name].append(columns[f.name])
        self.rows += len(times_ns)

    def add_symbol(self, symbol: str, times_ns: np.ndarray, columns: Mapping[str, Any]) -> None:
        """Add one symbol's rows, already columnar and in time order (the cache)."""
        n = len(times_ns)
        if n == 0:
            return
        code = self._symbols.setdefault(symbol, len(self._symbols))
        self._codes.append((code, n))            # a run of one code, expanded in _all_codes
        self._times.append(times_ns)
        first, last = (code, int(times_ns[0])), (code, int(times_ns[-1]))
        if self._last is not None and first < self._last:
            self._ordered = False
        self._last = last
        for f in self._fields:
            self._chunks[f.name].append(columns[f.name])
        self.rows += n

    def _all_codes(self) -> np.ndarray:
        """The symbol code of every row (``_codes`` holds arrays and ``(code, n)`` runs)."""
        parts = self._codes
        if not parts:
            return np.empty(0, np.int32)
        if all(isinstance(p, tuple) for p in parts):
            values, counts = zip(*parts)
            return np.repeat(np.array(values, np.int32), counts)
        return np.concatenate([np.full(p[1], p[0], np.int32) if isinstance(p, tuple) else p for p in parts])

    def columns(self) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, Any]]:
        """(symbols, symbol codes, times ns, raw column chunks concatenated) without pandas."""
        symbols = list(self._symbols)
        codes = self._all_codes()
        times = np.concatenate(self._times) if self._times else np.empty(0, np.int64)
        cols = {}
        for f in self._fields:
            chunks = self._chunks[f.name]
            if f.kind in ("float",):
                cols[f.name] = np.concatenate(chunks) if chunks else np.empty(0)
            else:
                typ = _dtype_arrow(f.kind)
                cols[f.name] = pa.concat_arrays(chunks) if chunks else pa.array([], typ)
        return symbols, codes, times, cols

    def frame(self, *, tz: str | None = None, sort: bool = False, lo: int | None = None,
              hi: int | None = None) -> pd.DataFrame:
        """The accumulated rows as one frame (this empties the accumulator).

        Rows come out ordered by (symbol, timestamp); rows that share both keep the order they
        arrived in (none is dropped, see the module docstring). ``sort=True`` forces the sort.
        ``lo``/``hi`` (ns, inclusive) drop rows outside.
        """
        symbols = list(self._symbols)
        codes = self._all_codes()
        times = np.concatenate(self._times) if self._times else np.empty(0, np.int64)
        take = None
        if len(times) and ((lo is not None and times.min() < lo) or (hi is not None and times.max() > hi)):
            take = np.flatnonzero((times >= (lo if lo is not None else NAT))
                                  & (times <= (hi if hi is not None else np.iinfo(np.int64).max)))
            codes, times = codes[take], times[take]
        sym_order = np.argsort(np.array(symbols, dtype=object)) if symbols else np.empty(0, np.int64)
        rank = np.empty(len(symbols), np.int32)
        rank[sym_order] = np.arange(len(symbols), dtype=np.int32)
        in_order = self._ordered and bool(np.all(np.diff(rank) > 0)) if len(rank) > 1 else self._ordered
        if len(codes) and np.any(rank != np.arange(len(rank))):
            codes = rank[codes]            # arrival codes -> codes of the sorted symbols (if not already)
        if sort or not in_order:
            order = np.lexsort((times, codes))        # stable: ties keep their arrival order
            take = order if take is None else take[order]
            codes, times = codes[order], times[order]
        index = _series_index([symbols[i] for i in sym_order], codes, times, tz)
        if take is not None:
            index = index.remove_unused_levels()
        names = [f.name for f in self._fields]
        floats = [f.name for f in self._fields if f.kind == "float"]
        # every float column is one row of a single 2D block, filled by one copy from the chunks
        # (which may be read-only views of cache files): no per-column allocation, and a frame
        # of floats only is one pandas block
        block = np.empty((len(floats), len(codes)))
        rows = dict(zip(floats, block))
        cols = {}
        for f in self._fields:
            chunks = self._chunks[f.name]
            if f.kind == "float":
                out = cols[f.name] = rows[f.name]
                if chunks and take is not None:
                    np.take(chunks[0] if len(chunks) == 1 else np.concatenate(chunks), take, out=out,
                            mode="clip")
                elif chunks:
                    np.concatenate(chunks, out=out)
            else:
                if take is not None and chunks:
                    chunks = [pa.concat_arrays(chunks).take(pa.array(take))]
                cols[f.name] = _finish(f.kind, chunks, tz)
            self._chunks[f.name] = []     # release page chunks as soon as they are merged
        self._codes, self._times, self._symbols, self.rows = [], [], {}, 0
        self._ordered, self._last = True, None
        if len(floats) == len(names):
            return pd.DataFrame(block.T, index=index, columns=names, copy=False)
        return pd.DataFrame(cols, index=index, columns=names, copy=False)


def series_frame(schema: Schema, symbols: Sequence[str], counts: np.ndarray, times_ns: np.ndarray,
                 block: np.ndarray, *, tz: str | None = None) -> pd.DataFrame:
    """The frame of a schema whose columns are all floats (bars) from rows already in their
    final order: ``symbols`` sorted, ``counts[i]`` rows for ``symbols[i]``, ``times_ns``
    increasing within each symbol, ``block[j]`` the values of the schema's j-th column. The
    block becomes the frame's data as it is (no copy)."""
    names = [f.name for f in schema.fields if f.name != "timestamp"]
    codes = np.repeat(np.arange(len(symbols), dtype=np.int32), counts)
    index = _series_index(list(symbols), codes, times_ns, tz)
    return pd.DataFrame(block.T, index=index, columns=names, copy=False)


def _series_index(symbols: list[str], codes: np.ndarray, times: np.ndarray, tz: str | None) -> pd.MultiIndex:
    """The (symbol, timestamp) index of rows ordered by symbol code then time."""
    tcodes, tlevel = _factorize_times(codes, times)
    return pd.MultiIndex(levels=[pd.Index(symbols, dtype=STR), _times(tlevel, tz)],
                         codes=[codes, tcodes], names=["symbol", "timestamp"], verify_integrity=False)


def _dtype_arrow(kind: str) -> pa.DataType:
    return {"int": pa.int64(), "str": pa.string(), "bool": pa.bool_(), "list": pa.list_(pa.string()),
            "date": pa.date32()}[kind]


def _factorize_times(codes: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes and sorted unique values of the timestamp level. When every symbol has the same
    timestamps (dense minute bars) that is one block repeated, found without hashing."""
    n = len(times)
    if n:
        k = int(codes[-1]) - int(codes[0]) + 1 if n else 0
        if k > 1 and n % k == 0:
            block = n // k
            grid = times.reshape(k, block)
            if (codes[::block] == np.arange(codes[0], codes[0] + k)).all() \
                    and (grid == grid[0]).all() and (block < 2 or (np.diff(grid[0]) > 0).all()):
                return np.tile(np.arange(block, dtype=np.int32), k), grid[0].copy()
    tcodes, tlevel = pd.factorize(times, sort=True)
    return tcodes, np.asarray(tlevel)


def _is_sorted(codes: np.ndarray, times: np.ndarray) -> bool:
    if len(codes) < 2:
        return True
    dc = np.diff(codes)
    return bool(np.all((dc > 0) | ((dc == 0) & (np.diff(times) >= 0))))
