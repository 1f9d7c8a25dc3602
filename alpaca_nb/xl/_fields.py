"""The field vocabulary of the formulas: Bloomberg-style names (PX_LAST, CHG_PCT_1D...) and plain
ones (last, change %...) mapped onto the columns of ``api.snapshots()`` and ``api.bars()``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ._cells import normalise_name

__all__ = ["BAR_FIELDS", "LATEST_FIELDS", "bar_field", "latest_field"]

Row = Mapping[str, Any]


def _col(name: str) -> Callable[[Row], Any]:
    return lambda row: row.get(name)


def _num(row: Row, name: str) -> float | None:
    value = row.get(name)
    return float(value) if isinstance(value, (int, float)) and not math.isnan(value) else None


def _mid(row: Row) -> float | None:
    bid, ask = _num(row, "bid_price"), _num(row, "ask_price")
    return (bid + ask) / 2 if bid and ask else None


def _spread(row: Row) -> float | None:
    bid, ask = _num(row, "bid_price"), _num(row, "ask_price")
    return ask - bid if bid and ask else None


def _change(row: Row) -> float | None:
    last, prev = _num(row, "trade_price"), _num(row, "prev_daily_close")
    return last - prev if last is not None and prev else None


def _change_pct(row: Row) -> float | None:
    last, prev = _num(row, "trade_price"), _num(row, "prev_daily_close")
    return (last / prev - 1.0) * 100.0 if last is not None and prev else None


# canonical field -> how to read it from one snapshot row (a dict of api.snapshots() columns)
LATEST_FIELDS: dict[str, Callable[[Row], Any]] = {
    "bid": _col("bid_price"), "ask": _col("ask_price"), "mid": _mid, "spread": _spread,
    "bid_size": _col("bid_size"), "ask_size": _col("ask_size"),
    "last": _col("trade_price"), "size": _col("trade_size"),
    "volume": _col("daily_volume"), "open": _col("daily_open"), "high": _col("daily_high"),
    "low": _col("daily_low"), "vwap": _col("daily_vwap"), "prev_close": _col("prev_daily_close"),
    "change": _change, "change_pct": _change_pct,
    "trade_time": _col("trade_timestamp"), "quote_time": _col("quote_timestamp"),
}
_LATEST_ALIASES = {
    "px_bid": "bid", "bid_price": "bid", "px_ask": "ask", "ask_price": "ask", "px_mid": "mid",
    "mid_price": "mid", "bid_ask_spread": "spread", "px_last": "last", "last_price": "last",
    "price": "last", "last_trade": "last", "last_size": "size", "trade_size_last": "size",
    "px_volume": "volume", "volume_today": "volume", "px_open": "open", "px_high": "high",
    "px_low": "low", "prev_close": "prev_close", "previous_close": "prev_close",
    "px_close_1d": "prev_close", "px_yest_close": "prev_close", "chg_net_1d": "change",
    "net_change": "change", "chg_pct_1d": "change_pct", "change_pct": "change_pct",
    "pct_change": "change_pct", "change_percent": "change_pct", "last_update": "trade_time",
}
# every raw snapshot column is a field too (trade_price, minute_close, prev_daily_volume...)
SNAPSHOT_COLUMNS = (
    "trade_timestamp", "trade_price", "trade_size", "trade_exchange", "quote_timestamp",
    "bid_price", "bid_size", "bid_exchange", "ask_price", "ask_size", "ask_exchange",
    *(f"{p}_{c}" for p in ("minute", "daily", "prev_daily")
      for c in ("timestamp", "open", "high", "low", "close", "volume", "trade_count", "vwap")))

BAR_FIELDS = ("open", "high", "low", "close", "volume", "trade_count", "vwap")
_BAR_ALIASES = {"px_open": "open", "px_high": "high", "px_low": "low", "px_last": "close",
                "px_close": "close", "last": "close", "price": "close", "px_volume": "volume",
                "trades": "trade_count", "num_trades": "trade_count", "px_vwap": "vwap",
                "eqy_weighted_avg_px": "vwap"}


def latest_field(raw: Any) -> Callable[[Row], Any]:
    """The reader of a BDP field (a function of one snapshot row).

    Raises:
        ValueError: unknown field, listing the known ones.
        TypeError: not text.
    """
    if not isinstance(raw, str):
        raise TypeError(f"fields must be text such as 'last' or 'PX_BID', got {raw!r}")
    key = normalise_name(raw)
    key = _LATEST_ALIASES.get(key, key)
    if key in LATEST_FIELDS:
        return LATEST_FIELDS[key]
    if key in SNAPSHOT_COLUMNS:
        return _col(key)
    raise ValueError(f"unknown field {raw.strip()!r} in fields; valid: {', '.join(LATEST_FIELDS)}, "
                     "Bloomberg names (PX_LAST, PX_BID, CHG_PCT_1D...) or any api.snapshots() column")


def bar_field(raw: Any) -> str:
    """The bar column for a BDH field ("PX_LAST" -> "close").

    Raises:
        ValueError: unknown field, listing the known ones. TypeError: not text.
    """
    if not isinstance(raw, str):
        raise TypeError(f"fields must be text such as 'close' or 'PX_LAST', got {raw!r}")
    key = normalise_name(raw)
    key = _BAR_ALIASES.get(key, key)
    if key not in BAR_FIELDS:
        raise ValueError(f"unknown field {raw.strip()!r} in fields; valid: {', '.join(BAR_FIELDS)} "
                         "(or PX_OPEN, PX_HIGH, PX_LOW, PX_LAST, PX_VOLUME)")
    return key
