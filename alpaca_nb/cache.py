"""On-disk cache of historical bars, one Parquet file per (server, feed, adjustment, timeframe,
symbol).

Where: ``$ALPACA_NB_CACHE_DIR`` if set, else the user cache directory from platformdirs
(e.g. ``~/.cache/alpaca_nb``); everything lives under a ``v1/`` folder there, which is all that
:func:`clear` ever deletes::

    v1/<server>/bars/<feed>/<adjustment>/<timeframe>/s_<SYMBOL>.parquet

``<server>`` keeps different data sources apart: the market-data host for Alpaca, or
``sandbox-<market>-seed<N>`` for a sandbox (whose prices depend only on its seed and market mode,
not on its port). Each file holds the bars of whole New York days and records which days it covers
(days with no bars included) in its metadata, so a repeated or overlapping request downloads only
the days that are missing. Only days that are over are ever written; today's partial session is
always fetched fresh. Files are written atomically (temporary file, then rename); a file that
cannot be read, whose values do not match the digest stored with them, or that does not look like
ours is deleted and its days are fetched again. The metadata also holds a digest of the values, checked on every
read, so a flipped bit in a data page is caught too.

Files already read in this process are also kept decoded in memory (bounded by
``$ALPACA_NB_CACHE_MEMORY_MB``, default 512; 0 turns that off), keyed by each file's identity,
so a repeated request skips Parquet decoding while a file changed on disk is read again.

Usage::

    import alpaca_nb as anb
    anb.cache.clear()          # empty the cache (returns the number of files removed)
    anb.cache.cache_dir()      # where it is
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import platformdirs
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

__all__ = ["CACHE_ENV", "MEMORY_ENV", "BarCache", "CacheKey", "CachedBars", "cache_dir", "clear"]

CACHE_ENV = "ALPACA_NB_CACHE_DIR"
MEMORY_ENV = "ALPACA_NB_CACHE_MEMORY_MB"
DEFAULT_MEMORY_MB = 512
LAYOUT = "v1"
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "trade_count", "vwap")
_META_KEY = b"alpaca_nb"
_SCHEMA = pa.schema([("t", pa.int64())] + [(c, pa.float64()) for c in BAR_COLUMNS])


def cache_dir() -> Path:
    """The cache root: ``$ALPACA_NB_CACHE_DIR``, else the platform's user cache dir."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("alpaca_nb", appauthor=False))


def clear(path: str | os.PathLike | None = None) -> int:
    """Delete every cached file (only the ``v1/`` tree this module writes under the cache root).

    Returns:
        The number of files removed.
    """
    _MEMORY.clear()
    root = (Path(path) if path is not None else cache_dir()) / LAYOUT
    if not root.exists():
        return 0
    count = sum(1 for p in root.rglob("*") if p.is_file())
    shutil.rmtree(root, ignore_errors=True)
    log.info("alpaca_nb cache cleared: %d files under %s", count, root)
    return count


def _segment(text: str) -> str:
    """A path segment that is safe on every OS for any symbol/feed/host text."""
    return quote(text, safe="-_.+=").replace("%", "~") or "_"


@dataclass(frozen=True)
class CacheKey:
    """What identifies one family of bars: the data source, feed, adjustment and timeframe."""

    server: str
    feed: str
    adjustment: str
    timeframe: str
    endpoint: str = "bars"

    def directory(self, root: Path) -> Path:
        return (root / LAYOUT / _segment(self.server) / self.endpoint / _segment(self.feed)
                / _segment(self.adjustment.replace(",", "+")) / _segment(self.timeframe))


@dataclass
class CachedBars:
    """One symbol's cached bars: covered New York days (proleptic ordinals) and the rows."""

    days: set[int]
    times: np.ndarray                 # int64 ns, strictly increasing
    columns: dict[str, np.ndarray]    # BAR_COLUMNS -> float64


class BarCache:
    """Read and write one :class:`CacheKey`'s files. Safe against concurrent writers in the
    sense that a reader never sees a half-written file (the last writer wins)."""

    def __init__(self, key: CacheKey, root: Path | None = None):
        self.key = key
        self.root = Path(root) if root is not None else cache_dir()
        self.directory = key.directory(self.root)

    def __repr__(self) -> str:
        return f"<BarCache {self.directory}>"

    def path(self, symbol: str) -> Path:
        return self.directory / f"s_{_segment(symbol)}.parquet"

    # ------------------------------------------------------------------ reading
    def load(self, symbol: str) -> CachedBars | None:
        """The cached bars of ``symbol`` or None (absent, or corrupt and now deleted). The arrays
        are read-only (they may be shared with the in-process layer)."""
        path = self.path(symbol)
        try:
            identity = _identity(path)
        except FileNotFoundError:
            return None
        entry = _MEMORY.get(path, identity)
        if entry is not None:
            return entry
        try:
            table = pq.ParquetFile(path, pre_buffer=False).read(use_threads=False)
            entry = _decode(table, symbol)
        except FileNotFoundError:
            return None
        except Exception as exc:     # unreadable, bad digest, not our layout: never returned
            log.warning("alpaca_nb cache: discarding unreadable file %s (%s: %s); its days will be "
                        "downloaded again", path, type(exc).__name__, exc)
            _unlink(path)
            return None
        _MEMORY.put(path, identity, entry)
        return entry

    def load_many(self, symbols: Iterable[str]) -> dict[str, CachedBars | None]:
        """:meth:`load` for several symbols."""
        return {s: self.load(s) for s in symbols}

    # ------------------------------------------------------------------ writing
    def store(self, symbol: str, days: Iterable[int], day_bounds: Mapping[int, tuple[int, int]],
              times: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Record that ``days`` are complete for ``symbol`` with these rows (rows outside those
        days are ignored), merged with what the file already had.

        Args:
            days: New York day ordinals being written (each a finished day).
            day_bounds: ordinal -> (first ns, last ns + 1) of that day.
            times, columns: the rows (int64 ns sorted ascending; float64 columns).
        """
        new_days = sorted(set(days))
        if not new_days:
            return
        times = np.asarray(times, dtype=np.int64)
        keep = _within(times, new_days, day_bounds)
        times = times[keep]
        columns = {c: np.asarray(columns[c], dtype=np.float64)[keep] for c in BAR_COLUMNS}
        old = self.load(symbol)
        if old is not None and len(old.times):
            stale = _within(old.times, new_days, day_bounds)
            times = np.concatenate([old.times[~stale], times])
            columns = {c: np.concatenate([old.columns[c][~stale], columns[c]]) for c in BAR_COLUMNS}
            order = np.argsort(times, kind="stable")
            times = times[order]
            columns = {c: v[order] for c, v in columns.items()}
        all_days = set(new_days) | (old.days if old is not None else set())
        meta = {"version": 1, "symbol": symbol, "key": self.key.__dict__, "days": _ranges(all_days),
                "rows": len(times), "digest": _digest(times, columns)}
        table = pa.Table.from_arrays([pa.array(times)] + [pa.array(columns[c]) for c in BAR_COLUMNS],
                                     schema=_SCHEMA.with_metadata({_META_KEY: json.dumps(meta)}))
        path = self.path(symbol)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(table, tmp, compression="none", use_dictionary=False,
                           write_statistics=False, write_page_checksum=True)
            os.replace(tmp, path)
            _MEMORY.put(path, _identity(path), CachedBars(all_days, _frozen(times),
                                                          {c: _frozen(v) for c, v in columns.items()}))
        except OSError as exc:
            _unlink(tmp)
            log.warning("alpaca_nb cache: could not write %s (%s); continuing without caching it", path, exc)


def _decode(table: pa.Table, symbol: str) -> CachedBars:
    meta_raw = (table.schema.metadata or {}).get(_META_KEY)
    if meta_raw is None:
        raise ValueError("no alpaca_nb metadata")
    meta = json.loads(meta_raw)
    if meta.get("version") != 1 or meta.get("symbol") != symbol:
        raise ValueError("metadata is for another layout or symbol")
    if table.schema.remove_metadata() != _SCHEMA:
        raise ValueError(f"unexpected columns {table.schema.names}")
    days: set[int] = set()
    for lo, hi in meta["days"]:
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 < lo <= hi < 4_000_000):
            raise ValueError("bad day range")
        days.update(range(lo, hi + 1))
    times = _frozen(table.column("t").to_numpy())
    columns = {c: _frozen(table.column(c).to_numpy()) for c in BAR_COLUMNS}
    if meta.get("rows") != len(times) or meta.get("digest") != _digest(times, columns):
        raise ValueError("the data does not match its digest")
    return CachedBars(days, times, columns)


def _digest(times: np.ndarray, columns: Mapping[str, np.ndarray]) -> list[int]:
    """Wrapping sums of the columns' 64-bit patterns: any flipped bit in a value changes its
    column's sum. Cheaper than Parquet's page CRCs on read, and it checks the decoded values."""
    return [int(np.asarray(a).view(np.uint64).sum(dtype=np.uint64))
            for a in [times] + [columns[c] for c in BAR_COLUMNS]]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _identity(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


class _MemoryLayer:
    """Decoded files kept in this process (least recently used first out, bounded by
    ``$ALPACA_NB_CACHE_MEMORY_MB``, default 512; 0 turns it off), so a repeated request skips
    Parquet decoding. Entries are keyed by path and the file's identity (inode, size, mtime): a
    file replaced or changed on disk is read again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[Path, tuple[tuple[int, int, int], CachedBars, int]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def budget() -> int:
        raw = os.environ.get(MEMORY_ENV, "").strip()
        try:
            return int(float(raw) * 2**20) if raw else DEFAULT_MEMORY_MB * 2**20
        except ValueError:
            return DEFAULT_MEMORY_MB * 2**20

    def get(self, path: Path, identity: tuple[int, int, int]) -> CachedBars | None:
        if not self.budget():
            return None
        with self._lock:
            hit = self._entries.get(path)
            if hit is None or hit[0] != identity:
                return None
            self._entries.move_to_end(path)
            return hit[1]

    def put(self, path: Path, identity: tuple[int, int, int], entry: CachedBars) -> None:
        size = entry.times.nbytes + sum(v.nbytes for v in entry.columns.values())
        budget = self.budget()
        with self._lock:
            old = self._entries.pop(path, None)
            if old is not None:
                self._bytes -= old[2]
            if size > budget:
                return
            self._entries[path] = (identity, entry, size)
            self._bytes += size
            while self._bytes > budget:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_MEMORY = _MemoryLayer()


def _within(times: np.ndarray, days: list[int], bounds: Mapping[int, tuple[int, int]]) -> np.ndarray:
    """Mask of ``times`` that fall inside any of ``days``."""
    mask = np.zeros(len(times), bool)
    for lo, hi in _ranges(days):
        start, end = bounds[lo][0], bounds[hi][1]
        a, b = np.searchsorted(times, [start, end], side="left")
        mask[a:b] = True
    return mask


def _ranges(days: Iterable[int]) -> list[list[int]]:
    """Sorted ordinals as [[first, last], ...] runs of consecutive days."""
    out: list[list[int]] = []
    for d in sorted(days):
        if out and d == out[-1][1] + 1:
            out[-1][1] = d
        else:
            out.append([d, d])
    return out


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
