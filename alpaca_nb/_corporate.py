"""Corporate actions (``GET /v1/corporate-actions`` on the market-data host): every page as one
tidy frame, and the marks that tell the bar cache whether adjusted bars it holds are still what
Alpaca would send.

The frame (:data:`alpaca_nb.frames.CORPORATE_ACTION`) has one row per action whatever its type,
always the same columns and dtypes (also when empty), sorted by ex-date (the effective or
process date for types without one), then symbol and type, with a plain RangeIndex:

==============  ==========================  ===============================================
column          dtype                       from
==============  ==========================  ===============================================
type            str                         ``forward_split``, ``cash_dividend``, ... (the
                                            array's name in the singular)
symbol          str                         ``symbol``, ``source_symbol`` (spin-offs, rights),
                                            ``acquiree_symbol`` (mergers) or ``old_symbol``
ex_date ...     datetime64[ns] (NY date)    ``ex_date``, ``process_date``, ``payable_date``,
                                            ``record_date``, ``effective_date``
old_rate        float64                     ``old_rate``, ``source_rate``, ``acquiree_rate``
new_rate        float64                     ``new_rate``, ``acquirer_rate``
rate            float64                     ``rate`` (dividend per share, redemption price...)
cash            float64                     cash paid per share: the ``rate`` of cash
                                            dividends, cash mergers and redemptions, the
                                            ``cash_rate`` of stock-and-cash mergers
new_symbol      str                         ``new_symbol``, ``acquirer_symbol``
cusip           str                         ``cusip``, ``old_cusip``, ``source_cusip``,
                                            ``acquiree_cusip``
new_cusip       str                         ``new_cusip``, ``acquirer_cusip``
special         boolean                     cash dividends
foreign         boolean                     cash dividends
id              str                         the action's id
==============  ==========================  ===============================================
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pandas as pd

from . import frames
from ._args import ny_date

__all__ = ["TYPES", "ActionMarks", "actions_frame", "fetch_actions"]

TYPES = ("forward_split", "reverse_split", "unit_split", "stock_dividend", "cash_dividend",
         "spin_off", "cash_merger", "stock_merger", "stock_and_cash_merger", "redemption",
         "name_change", "worthless_removal", "rights_distribution", "reorganization",
         "partial_call", "capital_gains_distribution")
PAGE_SIZE = 1000
PATH = "/v1/corporate-actions"
_CASH_RATE = ("cash_dividend", "cash_merger", "redemption")
_DATES = ("ex_date", "process_date", "payable_date", "record_date", "effective_date")


def fetch_actions(transport, params: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every page of ``GET /v1/corporate-actions`` with ``params`` as (type, record) pairs
    (type in the singular, e.g. ``forward_split``). Raises AlpacaError subclasses."""
    out: list[tuple[str, dict[str, Any]]] = []
    token = None
    while True:
        query = {**params, "limit": PAGE_SIZE}
        if token:
            query["page_token"] = token
        body = transport.data(PATH, query) or {}
        for key, records in (body.get("corporate_actions") or {}).items():
            kind = key.removesuffix("s")
            out.extend((kind, record) for record in records or () if isinstance(record, dict))
        token = body.get("next_page_token")
        if not token:
            return out


def _first(record: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = record.get(key)
        if value is not None:
            return value
    return None


def action_row(kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """One record in the columns of :data:`frames.CORPORATE_ACTION` (see the module docstring)."""
    row = {name: record.get(name) for name in _DATES}
    row.update(
        type=kind, id=record.get("id"),
        symbol=_first(record, "symbol", "source_symbol", "acquiree_symbol", "old_symbol"),
        cusip=_first(record, "cusip", "old_cusip", "source_cusip", "acquiree_cusip"),
        new_symbol=_first(record, "new_symbol", "acquirer_symbol"),
        new_cusip=_first(record, "new_cusip", "acquirer_cusip"),
        old_rate=_first(record, "old_rate", "source_rate", "acquiree_rate"),
        new_rate=_first(record, "new_rate", "acquirer_rate"),
        rate=record.get("rate"),
        cash=record.get("rate") if kind in _CASH_RATE else record.get("cash_rate"),
        special=record.get("special"), foreign=record.get("foreign"))
    return row


def actions_frame(actions: Sequence[tuple[str, Mapping[str, Any]]]) -> pd.DataFrame:
    """(type, record) pairs as the fixed-schema frame, sorted (see the module docstring)."""
    frame = frames.records_frame([action_row(kind, record) for kind, record in actions],
                                 frames.CORPORATE_ACTION)
    if len(frame):
        when = frame["ex_date"].fillna(frame["effective_date"]).fillna(frame["process_date"])
        order = pd.DataFrame({"when": when, "symbol": frame["symbol"], "type": frame["type"],
                              "id": frame["id"]}).sort_values(["when", "symbol", "type", "id"],
                                                              na_position="last", kind="stable")
        frame = frame.loc[order.index].reset_index(drop=True)
    return frame


class ActionMarks:
    """What the bar cache compares to decide whether adjusted bars it holds are still valid.

    Alpaca adjusts bars "as of today": every bar before an action's ex-date changes when the
    action takes effect. The cache keeps, with each symbol's adjusted bars, a digest of the
    actions that had taken effect after the file's first day when its bars were downloaded;
    if the digest of the actions known now differs, the file is stale. Every action type counts
    (not only the adjustment's): a needless refresh costs a download, a missed one a wrong
    frame. The actions are fetched before any bar is downloaded, so an action that takes effect
    in between makes the file look stale next time rather than fresh.

    Args:
        actions: (type, record) pairs for the symbols, with dates from at least the earliest
            cached or requested day on.
        today_ordinal: the server's New York date (proleptic ordinal).
    """

    def __init__(self, actions: Sequence[tuple[str, Mapping[str, Any]]], today_ordinal: int):
        self._by_symbol: dict[str, list[tuple[int, bytes]]] = {}
        for kind, record in actions:
            when = _first(record, "ex_date", "effective_date", "process_date")
            try:
                ordinal = dt.date.fromisoformat(str(when)[:10]).toordinal()
            except ValueError:
                continue
            if ordinal > today_ordinal:
                continue                     # announced, not yet in effect
            blob = orjson.dumps([kind, record], option=orjson.OPT_SORT_KEYS)
            symbols = {_first(record, "symbol", "source_symbol", "acquiree_symbol", "old_symbol"),
                       _first(record, "new_symbol", "acquirer_symbol")}
            for symbol in symbols - {None}:
                self._by_symbol.setdefault(symbol, []).append((ordinal, blob))

    def digest(self, symbol: str, first_day: int) -> str:
        """Digest of ``symbol``'s actions in effect with a date after ``first_day``."""
        h = hashlib.sha256()
        for ordinal, blob in sorted(self._by_symbol.get(symbol, ())):
            if ordinal > first_day:
                h.update(blob)
        return h.hexdigest()[:32]

    @staticmethod
    def window(first_day: int, now_ns: int) -> dict[str, str]:
        """``start``/``end`` of the request that fetches the actions: from ``first_day`` (the
        window selects by process date, which is on or after the ex-date) to a year past
        today (announced actions too)."""
        today = ny_date(now_ns)
        return {"start": pd.Timestamp.fromordinal(first_day).strftime("%Y-%m-%d"),
                "end": (pd.Timestamp(today) + pd.Timedelta(days=366)).strftime("%Y-%m-%d")}
