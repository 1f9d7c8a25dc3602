"""Excel formulas and macros on classic xlwings, in Bloomberg's vocabulary.

Formulas (xlwings user-defined functions; set ``UDF Modules`` to ``alpaca_nb.xl``)::

    =ALPACA_BDP(A2:A21, B1:F1)                       latest values: a column of symbols against a
                                                     row of fields fills the grid
    =ALPACA_BDH("AAPL", "close", "2024-01-02", "2024-06-28", "Per=1Day", "Fill=prev")
    =ALPACA_BDS("positions")                          account, positions, orders, assets, clock,
                                                     calendar, activities
    =ALPACA_TICKET(A2, B2, C2, D2, E2, F2, G2, H2)   stages an order: [ticket id, "ready" | why not]
    =ALPACA_STATUS(I2)                               [status, filled qty, average fill price]

Macros (buttons): :func:`send_tickets`, :func:`start_quotes`, :func:`stop_quotes`,
:func:`refresh`; the workbook's buttons all run xlwings' ``SampleCall`` macro, which calls
:func:`main` (as ``alpaca_nb.main()``), which runs the macro named like the clicked shape.

Rules the formulas keep: they never place an order (only :func:`send_tickets` does, once per
ticket); they are not volatile; the same arguments within a few seconds make no new request
(see :mod:`._cache`), and all requests go through the connected client and its rate limiter;
an error is a readable ``#ALPACA! ...`` text, never a traceback; a missing value is an empty
cell. Arguments may be what Excel sends (ranges as 2D lists, numbers as floats, empty cells as
None, dates as serials, date cells or text). Numbers come back as floats, times as naive
datetimes in New York time (``Tz=`` changes it). The connection is
:func:`alpaca_nb.default_client`: the last ``anb.connect()`` of the process, else keys from the
environment, else the embedded sandbox.

Layout: ``_cells`` (Excel arguments and results), ``_fields`` (field names), ``_cache`` (the
short caches), ``_tickets`` (staging and sending orders), ``_live`` (the live quote writer),
``_sheets`` (the macros' view of an xlwings workbook).
"""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pandas as pd

from .. import default_client
from .._args import NY, parse_symbol, parse_timeframe
from .._marketdata import ADJUSTMENTS, FEEDS
from ..errors import AlpacaError, NotFoundError, OrderValidationError
from . import _sheets
from ._cache import SnapshotCache, TTLCache
from ._cells import (
    Options,
    cell,
    choice,
    flat,
    frame_rows,
    one,
    shape_of,
    symbols_of,
    text,
    time_arg,
    tz_option,
    whole,
    yes_no,
)
from ._fields import bar_field, latest_field
from ._live import QuoteWriter, RangeTarget, XwRangeTarget
from ._tickets import Grid, Tickets

try:
    import xlwings as xw
except ImportError:  # pragma: no cover - the [excel] extra is not installed: plain functions
    xw = None

log = logging.getLogger(__name__)

__all__ = ["ALPACA_BDH", "ALPACA_BDP", "ALPACA_BDS", "ALPACA_STATUS", "ALPACA_TICKET", "BUTTONS", "clear_caches",
           "main", "refresh", "run_button", "send_tickets", "start_quotes", "stop_quotes"]

ERROR = "#ALPACA! "
LATEST_SECONDS = 5.0         # BDP values are reused this long
HISTORY_SECONDS = 60.0       # BDH results (finished days also sit in the on-disk bar cache)
TABLE_SECONDS = 5.0          # BDS tables and order statuses

_snapshots = SnapshotCache(LATEST_SECONDS)
_history = TTLCache(HISTORY_SECONDS)
_tables = TTLCache(TABLE_SECONDS)
_ticket_book = Tickets()
_writers: dict[Any, QuoteWriter] = {}


def _decorators():
    if xw is not None:
        return xw.func, xw.arg
    return (lambda f=None, **kw: f if f is not None else (lambda g: g)), (lambda *a, **kw: (lambda g: g))


_func, _arg = _decorators()


def _formula(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Errors become one cell of readable text (``#ALPACA! ...``); the traceback goes to the log."""

    @functools.wraps(fn)
    def formula(*args: Any) -> Any:
        try:
            return fn(*args)
        except AlpacaError as exc:
            log.info("%s: %s", fn.__name__, exc)
            return ERROR + exc.message
        except (ValueError, TypeError, KeyError) as exc:
            log.info("%s: %s", fn.__name__, exc)
            return ERROR + (exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc))
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            return ERROR + f"{type(exc).__name__}: {exc}"
    return formula


def _scope(api: Any) -> tuple[str, str]:
    return (api.settings.base_url, api.settings.key_id)


def _single(rows: list[list[Any]]) -> Any:
    """A 1x1 result as a plain value (an empty result as an empty cell)."""
    if not rows or not rows[0]:
        return None
    return rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else rows


_FEED = choice("Feed", FEEDS)

# Excel's function wizard shows these. The formulas' signatures are positional and carry no
# annotations on purpose: xlwings passes arguments by position and reads type hints as converters.
_DOC = {"symbols": "a symbol, AAPL,MSFT, or a column or row of them",
        "options": 'Bloomberg-style "Name=Value" texts (or name and value as two arguments), e.g.'}


# ------------------------------------------------------------------ BDP

@_func(category="Alpaca")
@_arg("symbols", ndim=2, doc=_DOC["symbols"])
@_arg("fields", ndim=2, doc="a field (last, bid, ask, PX_LAST...) or a row or column of them")
@_arg("*options", doc=_DOC["options"] + ' "Feed=iex", "Tz=UTC"')
@_formula
def ALPACA_BDP(symbols, fields, *options):
    """Latest values: a column of symbols against a row of fields fills a grid (symbols in a row
    and fields in a column, the other way round). Fields: bid, ask, mid, spread, bid_size,
    ask_size, last, size, volume, open, high, low, vwap, prev_close, change, change_pct (in
    percent), trade_time, quote_time, Bloomberg names (PX_LAST, PX_BID, CHG_PCT_1D...) or any
    snapshot column. Options: "Feed=iex|sip", "Tz=America/New_York"."""
    opts = Options(options, {"Feed": _FEED, "Tz": tz_option}, function="ALPACA_BDP")
    syms = symbols_of(symbols, keep_blanks=True)      # an empty symbol cell gives an empty row
    names = [f for f in flat(fields) if f is not None and not (isinstance(f, str) and not f.strip())]
    if not names:
        raise ValueError("fields is empty; give a field such as 'last' or a row of them")
    readers = [latest_field(f) for f in names]
    transpose = _bdp_layout(symbols, fields, len(syms), len(names))
    api = default_client()
    feed = opts.get("Feed")

    def fetch(batch: list[str]) -> dict[str, dict[str, Any]]:
        frame = api.snapshots(batch, feed=feed)
        data = frame.drop(columns=[c for c in frame.columns if c.endswith("_exchange")])
        return {s: row for s, row in zip(frame.index, frame.to_dict("records"))
                if not data.loc[s].isna().all()}

    rows = _snapshots.rows((_scope(api), feed), [s for s in syms if s], fetch)
    tz = opts.get("Tz", NY)
    grid = [[cell(read(rows[s]), tz) if rows.get(s) else None for read in readers] for s in syms]
    if transpose:
        grid = [list(col) for col in zip(*grid)]
    return _single(grid)


def _bdp_layout(symbols: Any, fields: Any, n_symbols: int, n_fields: int) -> bool:
    """Whether the grid runs symbols across (True) or down (False)."""
    s_rows, s_cols = shape_of(symbols)
    f_rows, f_cols = shape_of(fields)
    symbols_in_row = s_rows == 1 and s_cols > 1
    fields_in_column = f_cols == 1 and f_rows > 1
    if symbols_in_row and not fields_in_column and n_fields > 1:
        raise ValueError("symbols and fields are both rows; give the symbols as a column and the "
                         "fields as a row, or the symbols as a row and the fields as a column")
    if fields_in_column and not symbols_in_row and n_symbols > 1:
        raise ValueError("symbols and fields are both columns; give the symbols as a column and the "
                         "fields as a row, or the symbols as a row and the fields as a column")
    return symbols_in_row or fields_in_column


# ------------------------------------------------------------------ BDH

_PER_ALIASES = {"d": "1Day", "daily": "1Day", "day": "1Day", "w": "1Week", "weekly": "1Week",
                "week": "1Week", "m": "1Month", "monthly": "1Month", "month": "1Month",
                "min": "1Min", "minute": "1Min", "h": "1Hour", "hour": "1Hour", "hourly": "1Hour"}


def _per(raw: str) -> str:
    value = _PER_ALIASES.get(raw.strip().lower(), raw.strip())
    return str(parse_timeframe(value, name="option Per"))


_BDH_OPTIONS = {
    "Per": _per,
    "Adj": choice("Adj", ADJUSTMENTS, {"none": "raw", "splits": "split", "dividends": "dividend"}),
    "Feed": _FEED,
    "Tz": tz_option,
    "Sort": choice("Sort", ("asc", "desc"), {"a": "asc", "ascending": "asc", "d": "desc",
                                              "descending": "desc"}),
    "Fill": choice("Fill", ("prev", "none"), {"p": "prev", "previous": "prev", "ffill": "prev",
                                              "b": "none", "blank": "none", "n": "none"}),
    "Layout": choice("Layout", ("side", "stacked"), {"s": "side", "across": "side", "down": "stacked"}),
    "Headers": yes_no("Headers"),
}


@_func(category="Alpaca")
@_arg("symbols", ndim=2, doc=_DOC["symbols"])
@_arg("fields", ndim=2, doc="close, open, high, low, volume, trade_count, vwap (or PX_LAST...)")
@_arg("start", doc="first day or time: a date, a serial or text like 2024-01-02 (New York time)")
@_arg("end", doc="last day or time (a whole day counts in full); empty: now")
@_arg("*options", doc=_DOC["options"] + ' "Per=1Min", "Adj=split", "Sort=desc", "Fill=prev"')
@_formula
def ALPACA_BDH(symbols, fields, start, end, *options):
    """Bars from start to end (dates as serials, date cells or text; a whole day counts in full;
    an empty end is now) as a table with a header row: timestamp, then the fields (open, high,
    low, close, volume, trade_count, vwap, or PX_LAST...). Several symbols side by side
    ("AAPL close", "MSFT close"... aligned on time) or stacked ("Layout=stacked"). Options:
    "Per=1Min|5Min|1Hour|1Day|1Week|1Month" (default 1Day), "Adj=raw|split|dividend|all",
    "Feed=iex|sip", "Tz=America/New_York", "Sort=asc|desc", "Fill=prev" (side by side: carry
    the last value over gaps), "Headers=N"."""
    opts = Options(options, _BDH_OPTIONS, function="ALPACA_BDH")
    syms = list(dict.fromkeys(symbols_of(symbols)))
    names = [f for f in flat(fields) if f is not None and not (isinstance(f, str) and not f.strip())]
    if not names:
        raise ValueError("fields is empty; give a field such as 'close' or a row of them")
    columns = [bar_field(f) for f in names]
    start_ns = time_arg(start, name="start")
    if start_ns is None:
        raise ValueError("start is empty; give a date (an Excel date, a serial or text like '2024-01-02')")
    end_ns = time_arg(end, name="end", end=True)
    if end_ns is not None and end_ns < start_ns:
        raise ValueError("end is before start")
    per, adj, feed = opts.get("Per", "1Day"), opts.get("Adj", "raw"), opts.get("Feed")
    api = default_client()
    key = ("bdh", _scope(api), tuple(syms), start_ns, end_ns, per, adj, feed)
    layout = {"tz": opts.get("Tz", NY), "descending": opts.get("Sort") == "desc",
              "fill": opts.get("Fill") == "prev", "stacked": opts.get("Layout") == "stacked",
              "headers": opts.get("Headers", True)}

    def table() -> Any:
        frame = _history.get(key, lambda: api.bars(
            syms, per, start=pd.Timestamp(start_ns, tz="UTC"),
            end=None if end_ns is None else pd.Timestamp(end_ns, tz="UTC"),
            adjustment=adj, feed=feed, progress=False))
        return _bdh_rows(frame, syms, columns, names, **layout)
    # the cells themselves are cached too: a recalculation returns the same list at once
    return _history.get((key, tuple(columns), tuple(map(str, names)), tuple(sorted(layout.items()))), table)


def _bdh_rows(frame: pd.DataFrame, syms: list[str], columns: list[str], names: list[str], *, tz: str,
              descending: bool, fill: bool, stacked: bool, headers: bool) -> Any:
    labels = [str(n).strip() for n in names]
    if stacked:
        head = ["symbol", "timestamp", *labels]
        part = frame[columns].sort_index(level=[0, 1], ascending=[True, not descending])
        rows = [[sym, cell(ts, tz), *(cell(v, tz) for v in values)]
                for (sym, ts), values in zip(part.index, part.itertuples(index=False))]
    else:
        head = ["timestamp", *labels] if len(syms) == 1 else \
            ["timestamp", *(f"{s} {label}" for s in syms for label in labels)]
        wide = frame[columns].unstack(level=0) if len(frame) else pd.DataFrame()
        if len(wide):
            wide = wide.reindex(columns=pd.MultiIndex.from_tuples(
                [(c, s) for s in syms for c in columns]))
            wide = wide.sort_index(ascending=True)
            if fill:
                wide = wide.ffill()
            if descending:
                wide = wide.iloc[::-1]
        rows = [[cell(ts, tz), *(cell(v, tz) for v in values)]
                for ts, values in zip(wide.index, wide.itertuples(index=False))]
    out = ([head] if headers else []) + rows
    return _single(out) if out else None


# ------------------------------------------------------------------ BDS

def _limit(raw: str) -> int:
    return whole(raw, name="option Limit")


def _date_option(name: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        try:
            value: Any = float(raw)              # a serial given as the option's own argument
        except ValueError:
            value = raw
        ns = time_arg(value, name=f"option {name}")
        return pd.Timestamp(ns, tz="UTC").tz_convert(NY).strftime("%Y-%m-%d")
    return parse


_BDS: dict[str, dict[str, Callable[[str], Any]]] = {
    "mode": {}, "account": {}, "positions": {}, "clock": {},
    "orders": {"Status": choice("Status", ("open", "closed", "all")), "Limit": _limit},
    "assets": {"Status": choice("Status", ("active", "inactive")),
               "Class": choice("Class", ("us_equity", "crypto", "us_option"))},
    "calendar": {"Start": _date_option("Start"), "End": _date_option("End")},
    "activities": {"Types": lambda raw: raw.strip().upper(), "Limit": _limit},
}


@_func(category="Alpaca")
@_arg("what", doc="mode, account, positions, orders, assets, clock, calendar or activities")
@_arg("*options", doc=_DOC["options"] + ' "Status=all", "Limit=50"')
@_formula
def ALPACA_BDS(what, *options):
    """A table with a header row: "mode" (one cell: sandbox, paper or LIVE), "account" and
    "clock" (field, value), "positions", "orders" ("Status=open|closed|all",
    "Limit=100"), "assets" ("Status=active", "Class=us_equity"), "calendar" ("Start=...",
    "End=..."), "activities" ("Types=FILL", "Limit=100"). Every table takes "Tz=..." and
    "Headers=N". An empty table is its header row."""
    kind = text(what, name="what")
    if kind not in _BDS:
        raise ValueError(f"what={one(what, name='what')!r} is not a table; use one of {', '.join(_BDS)}")
    opts = Options(options, {**_BDS[kind], "Tz": tz_option, "Headers": yes_no("Headers")},
                   function="ALPACA_BDS")
    api = default_client()
    if kind == "mode":
        return "LIVE" if api.mode == "live" else api.mode
    key = ("bds", _scope(api), kind, tuple(sorted((k, v) for k, v in opts.values.items()
                                                  if k not in ("Tz", "Headers"))))
    frame = _tables.get(key, lambda: _bds_frame(api, kind, opts))
    tz, headers = opts.get("Tz", NY), opts.get("Headers", True)
    if isinstance(frame, pd.Series):
        rows = ([["field", "value"]] if headers else []) + [[str(k), cell(v, tz)] for k, v in frame.items()]
        return _single(rows)
    rows = frame_rows(frame, tz=tz, headers=headers)
    return _single(rows) if rows else None


def _bds_frame(api: Any, kind: str, opts: Options) -> pd.DataFrame | pd.Series:
    if kind == "account":
        return api.account().drop(labels=["id", "account_number"], errors="ignore")
    if kind == "positions":
        return api.positions()
    if kind == "clock":
        return api.clock()
    if kind == "orders":
        return api.orders(status=opts.get("Status", "open"), limit=opts.get("Limit", 100))
    if kind == "assets":
        return api.assets(status=opts.get("Status", "active"), asset_class=opts.get("Class", "us_equity"))
    if kind == "calendar":
        return api.calendar(opts.get("Start"), opts.get("End"))
    return api.activities(opts.get("Types"), limit=opts.get("Limit", 100))


# ------------------------------------------------------------------ tickets

@_func(category="Alpaca")
@_arg("symbol", doc="e.g. AAPL")
@_arg("side", doc="buy or sell")
@_arg("qty", doc="shares, or coins of a crypto pair (fractional, to the pair's increment)")
@_arg("type", doc="market (default), limit, stop or stop_limit")
@_arg("limit_price", doc="for limit and stop_limit orders")
@_arg("stop_price", doc="for stop and stop_limit orders")
@_arg("time_in_force", doc="day (stocks' default), gtc, opg, cls, ioc or fok; crypto: gtc (default) or ioc")
@_arg("nonce", doc="change it to stage another order with the same content")
@_arg("extended_hours", doc="TRUE for a limit order in extended hours")
@_formula
def ALPACA_TICKET(symbol, side, qty, type="market", limit_price=None, stop_price=None,
                  time_in_force=None, nonce=None, extended_hours=False):
    """Stages an order without sending it: returns [ticket id, "ready"] or [ticket id, why it
    would be refused] ([empty, reason] for an invalid order). The id comes from the order's
    content, the account and ``nonce``, so recalculation never makes a second order; the Send
    button places each ready ticket once (client_order_id = ticket id). Change the nonce to stage
    another order with the same content. side: buy|sell; type: market|limit|stop|stop_limit;
    time_in_force: day|gtc|opg|cls|ioc|fok, empty for the default (day for stocks, gtc for a
    crypto pair such as BTC/USD, which takes gtc|ioc and market|limit|stop_limit). Numbers are
    read to Excel's 15 significant digits (=0.1*3 is 0.3); a crypto qty must be a multiple of
    the pair's min_trade_increment."""
    if all(one(v, name=n) is None for v, n in ((symbol, "symbol"), (side, "side"), (qty, "qty"))):
        return None                                   # an empty ticket row is an empty cell
    order = {
        "symbol": one(symbol, name="symbol"),
        "side": text(side, name="side"),
        "qty": _number(qty, "qty"),
        "type": text(type, name="type", default="market"),
        "limit_price": _number(limit_price, "limit_price"),
        "stop_price": _number(stop_price, "stop_price"),
        "time_in_force": text(time_in_force, name="time_in_force"),
        "extended_hours": _flag(extended_hours),
    }
    if order["symbol"] is None:
        raise ValueError("symbol is empty; give a symbol such as 'AAPL'")
    order["symbol"] = parse_symbol(order["symbol"], name="symbol")
    try:
        ticket = _ticket_book.stage(default_client(), order, nonce=_nonce(nonce))
    except OrderValidationError as exc:
        return [[None, str(exc)]]
    return [[ticket.ticket_id, ticket.state]]


def _number(value: Any, name: str) -> Any:
    """One cell's number as Excel shows it: a float to 15 significant digits (Excel's precision,
    so a computed 0.30000000000000004 is the 0.3 the cell displays); other values unchanged."""
    value = one(value, name=name)
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(f"{value:.15g}")
    return value


def _nonce(value: Any) -> str:
    """The nonce cell as text: 7.0 (how Excel sends 7) and "7" are the same nonce."""
    value = one(value, name="nonce")
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(cell(value)).strip()


def _flag(value: Any) -> bool:
    value = one(value, name="extended_hours")
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "y", "1", "false", "no", "n", "0"):
        return value.strip().lower() in ("true", "yes", "y", "1")
    if isinstance(value, float) and value in (0.0, 1.0):
        return bool(value)
    raise ValueError(f"extended_hours must be TRUE or FALSE, got {value!r}")


@_func(category="Alpaca")
@_arg("ticket_id", doc="the ticket id ALPACA_TICKET returned")
@_formula
def ALPACA_STATUS(ticket_id):
    """The order sent for a ticket: [status, filled qty, average fill price]; "not sent" before
    the Send button placed it; empty for an empty cell."""
    tid = text(ticket_id, name="ticket_id", lower=False)
    if tid is None:
        return None
    api = default_client()

    def look() -> list[list[Any]]:
        try:
            order = api.order(client_order_id=tid)
        except NotFoundError:
            return [["not sent", None, None]]
        return [[order.get("status"), cell(order.get("filled_qty")), cell(order.get("filled_avg_price"))]]
    return _tables.get(("status", _scope(api), tid), look)


# ------------------------------------------------------------------ macros

def send_tickets(grid: Grid | None = None, *, confirm: Callable[[str], bool] | None = None) -> list[tuple[str, str, str]]:
    """Macro (Send button): place the ready tickets of the active sheet once each and write
    [order id, status] into the two cells right of each ticket's state. In live mode the user
    confirms first (an Excel dialog); the pre-trade guard of ``api.submit_order`` applies.

    Args:
        grid: the sheet (default: the active sheet of the calling workbook).
        confirm: asked before sending to a live account (default: Excel's OK/Cancel dialog).

    Returns:
        (ticket id, order id or "", status or error text) per ticket sent or looked up.
    """
    if grid is None:
        book = _sheets.caller_book()
        sheet = book.sheets.active
        if not sys.platform.startswith("win"):
            # no UDFs and a new Python per button on macOS: stage the sheet's tickets here first
            # (the same content gives the same ticket ids, so nothing is sent twice)
            _sheets.fill_formulas(book, FORMULAS, only=sheet.name)
        grid = _sheets.XwGrid(sheet)
        confirm = confirm or _sheets.confirm_with(book)
    results = _ticket_book.send(default_client(), grid, confirm=confirm)
    _tables.clear()                    # statuses on the sheet are now stale
    return results


def start_quotes(symbols: Sequence[str] | None = None, *, target: Callable[[], RangeTarget] | None = None,
                 max_hz: float = 4.0, book: Any = None) -> QuoteWriter:
    """Macro (Start button): write live quotes of ``symbols`` into a range at most ``max_hz``
    times per second, from a background thread, until :func:`stop_quotes`.

    Without arguments (the button) the symbols come from the workbook's range named
    ``LiveSymbols`` and the table goes to the range named ``LiveQuotes``. ``book`` (a name or
    path) does the same for a workbook from a notebook or script, which is the way on macOS.
    ``target`` is a factory of any :class:`~._live.RangeTarget`, called inside the writer thread.
    A writer already running for the same target is stopped first.
    """
    key: Any = target
    if target is None:
        wb = _sheets.caller_book() if book is None else _sheets.open_book(book)
        if symbols is None:
            symbols = symbols_of(_sheets.named_values(wb, "LiveSymbols"), name="LiveSymbols")
        fullname = wb.fullname
        key = (fullname, "LiveQuotes")

        def target() -> RangeTarget:
            return XwRangeTarget(fullname, "LiveQuotes").open()
    if symbols is None:
        raise ValueError("symbols is empty; give the symbols to stream, e.g. ['AAPL', 'MSFT']")
    syms = list(dict.fromkeys(symbols_of(list(symbols))))
    stop_quotes(key)
    stream = default_client().stream(quotes=syms, trades=syms)
    try:
        writer = QuoteWriter(stream, syms, target_factory=target, max_hz=max_hz)
    except BaseException:
        stream.close()
        raise
    _writers[key] = writer
    return writer


def stop_quotes(key: Any = None) -> None:
    """Macro (Stop button): stop the live quote writers (all of them, or the one for ``key``);
    the cells keep their last values."""
    for k in [k for k in _writers if key is None or k == key]:
        writer = _writers.pop(k)
        if not writer.stop():
            log.warning("live quotes: the writer thread did not end within a second")


def clear_caches() -> None:
    """Forget the formulas' cached results (the next recalculation fetches again)."""
    _snapshots.clear()
    _history.clear()
    _tables.clear()


def refresh(book: Any = None) -> None:
    """Macro (Refresh button): fetch everything again. On Windows every formula of the workbook
    is recalculated (a full recalculation: the Alpaca formulas are not volatile). On macOS,
    where classic xlwings has no user-defined functions, the sheets' Alpaca formulas are
    evaluated here and their results written in their place (see excel/README.md)."""
    _snapshots.expire()                # stale, but the next BDP refreshes every symbol at once
    _history.clear()
    _tables.clear()
    wb = _sheets.caller_book() if book is None else _sheets.open_book(book)
    if sys.platform.startswith("win"):
        wb.app.api.CalculateFull()
    else:
        _sheets.fill_formulas(wb, FORMULAS)


BUTTONS: dict[str, Callable[[], Any]] = {
    "send_tickets": send_tickets, "start_quotes": start_quotes, "stop_quotes": stop_quotes, "refresh": refresh,
}


def run_button(name: str) -> Any:
    """Run the macro of the button named ``name`` (a key of :data:`BUTTONS`).

    Raises:
        ValueError: no button has that name.
    """
    if name not in BUTTONS:
        raise ValueError(f"no alpaca_nb button is named {name!r}; the buttons are "
                         f"{', '.join(repr(b) for b in BUTTONS)} (the shape's name picks its macro)")
    return BUTTONS[name]()


def main() -> Any:
    """The workbook's buttons, through the macro that xlwings' quickstart template embeds:
    ``SampleCall`` runs ``import alpaca_nb; alpaca_nb.main()`` (the module named like the
    workbook), which comes here. The clicked shape's name (Excel's ``Application.Caller``) is
    the macro to run (see :data:`BUTTONS`). Where Excel does not say which shape was clicked
    (macOS), a dialog asks whether to send the active sheet's tickets or only refresh: no order
    is sent without that answer.
    """
    book = _sheets.caller_book()
    name = _sheets.clicked_button(book)
    if name is None:
        name = _sheets.ask_send_or_refresh(book)
        if name is None:
            return None
    return run_button(name)


FORMULAS: dict[str, Callable[..., Any]] = {
    "ALPACA_BDP": ALPACA_BDP, "ALPACA_BDH": ALPACA_BDH, "ALPACA_BDS": ALPACA_BDS,
    "ALPACA_TICKET": ALPACA_TICKET, "ALPACA_STATUS": ALPACA_STATUS,
}
