"""Live quotes in cells: a background thread writes a quote table into a range at a bounded rate.

Classic xlwings has no RTD, so the only open-source way to make cells tick is a thread that
writes ranges. :class:`QuoteWriter` does it the way xlwings' threading notes require: its
target (an xlwings range) is created *inside* the writer thread, by a factory, and COM is
initialised in that thread on Windows (see :class:`XwRangeTarget`). The stream is the process's
shared one (``api.stream(...)`` views share one socket per account); its callbacks only set a
flag, and the writer wakes at most ``max_hz`` times per second to write the whole table with
one range write. Stopping ends the thread and leaves the last values in the cells.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._args import NY
from ._cells import cell

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "QuoteWriter", "RangeTarget", "XwRangeTarget"]

# header -> column of the stream's wide table (mid is computed)
COLUMNS: dict[str, str | None] = {
    "symbol": None, "bid": "bid_price", "ask": "ask_price", "mid": None, "last": "last_price",
    "bid_size": "bid_size", "ask_size": "ask_size", "quote_time": "quote_time",
}


class RangeTarget(Protocol):
    """Where the writer puts the table: one ``write`` per update, of the whole block of rows."""

    def write(self, values: list[list[Any]]) -> None: ...

    def close(self) -> None: ...


class QuoteWriter:
    """Writes ``stream``'s quotes for ``symbols`` to a target at most ``max_hz`` times per second.

    Args:
        stream: an open :class:`alpaca_nb.stream.Stream` subscribed to the symbols' quotes and
            trades; the writer closes it when it stops if ``owns_stream``.
        symbols: rows of the table, in order.
        target_factory: called once inside the writer thread to make the :class:`RangeTarget`.
        max_hz: writes per second at most (default 4).
        tz: time zone of the quote_time column (naive datetimes for Excel).
    """

    def __init__(self, stream: Any, symbols: Sequence[str], *, target_factory: Callable[[], RangeTarget],
                 max_hz: float = 4.0, tz: str = NY, owns_stream: bool = True):
        if isinstance(max_hz, bool) or not isinstance(max_hz, (int, float)) or not 0 < max_hz <= 100:
            raise ValueError(f"max_hz must be a number of writes per second between 0 and 100, got {max_hz!r}")
        self.symbols = list(symbols)
        self.max_hz = float(max_hz)
        self.writes = 0
        self.failures = 0
        self.error: BaseException | None = None
        self._stream = stream
        self._owns_stream = owns_stream
        self._factory = target_factory
        self._tz = tz
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._handles = [stream.on(event, self._mark, max_hz=self.max_hz * 2) for event in ("quote", "trade")]
        self._thread = threading.Thread(target=self._run, name="alpaca-nb-xl-quotes", daemon=True)
        self._dirty.set()                       # write what the stream already knows at once
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop writing (the cells keep their last values) and close the stream view if owned.
        Returns whether the thread has ended within ``timeout`` seconds. Idempotent."""
        self._stop.set()
        for handle in self._handles:
            self._stream.off(handle)
        if self._owns_stream:
            self._stream.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _mark(self, _update: Any) -> None:
        self._dirty.set()

    def table(self) -> list[list[Any]]:
        """The block the writer writes: a header row, then one row per symbol."""
        snap = self._stream.table.snapshot(symbols=self.symbols)
        rows = [list(COLUMNS)]
        for symbol in self.symbols:
            rec = snap.loc[symbol] if symbol in snap.index else None
            row: list[Any] = []
            for header, column in COLUMNS.items():
                if header == "symbol":
                    row.append(symbol)
                elif rec is None:
                    row.append(None)
                elif header == "mid":
                    bid, ask = cell(rec["bid_price"]), cell(rec["ask_price"])
                    row.append((bid + ask) / 2 if bid and ask else None)
                else:
                    row.append(cell(rec[column], self._tz))
            rows.append(row)
        return rows

    def _run(self) -> None:
        period = 1.0 / self.max_hz
        try:
            target = self._factory()
        except BaseException as exc:          # noqa: BLE001 - reported through .error and the log
            self.error = exc
            log.error("live quotes: could not open the target range: %s", exc)
            return
        try:
            due = float("-inf")                  # when the next write is due
            build = 0.0                          # how long building the last table took
            while not self._stop.is_set():
                if not self._dirty.wait(0.25):
                    continue
                # writes keep a fixed cadence of one per period, so the rate is the bound and
                # not a little under it; after a pause the cadence starts again from now
                due = max(due, time.monotonic())
                wait = due - build - time.monotonic()     # build the table just in time
                if wait > 0 and self._stop.wait(wait):
                    break
                self._dirty.clear()
                started = time.monotonic()
                values = self.table()
                build = time.monotonic() - started
                wait = due - time.monotonic()
                if (wait > 0 and self._stop.wait(wait)) or self._stop.is_set():
                    break
                due = max(due + period, time.monotonic())
                try:
                    target.write(values)
                    self.writes += 1
                except Exception as exc:     # noqa: BLE001 - Excel busy (RPC_E_SERVERCALL_RETRYLATER...): next tick
                    self.failures += 1
                    self._dirty.set()
                    log.debug("live quotes: write failed (%s); retrying at the next tick", exc)
        finally:
            try:
                target.close()
            except Exception as exc:         # noqa: BLE001
                log.debug("live quotes: closing the target: %s", exc)


class XwRangeTarget:
    """An xlwings range named ``name`` in the workbook at ``fullname``, opened in the calling
    thread (call :meth:`open` from the writer thread). On Windows COM is initialised for the
    thread first and released in :meth:`close`, as xlwings' threading notes require."""

    def __init__(self, fullname: str, name: str):
        self.fullname = fullname
        self.name = name
        self._range: Any = None
        self._com = False

    def open(self) -> XwRangeTarget:
        if sys.platform.startswith("win"):
            import pythoncom  # pywin32, present wherever xlwings drives Excel on Windows

            pythoncom.CoInitialize()
            self._com = True
        import xlwings as xw

        self._range = xw.Book(self.fullname).names[self.name].refers_to_range
        return self

    def write(self, values: list[list[Any]]) -> None:
        rows, cols = len(values), max((len(r) for r in values), default=0)
        self._range.resize(rows, cols).value = values

    def close(self) -> None:
        self._range = None
        if self._com:
            import pythoncom

            pythoncom.CoUninitialize()
            self._com = False
