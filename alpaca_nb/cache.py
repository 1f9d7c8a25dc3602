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
ours is deleted and its days are fetched again. The digest (wrapping sums of each column's 64-bit
patterns) is checked on every read, so a flipped bit in a data page is caught too.

A hit costs reading the files, so they are laid out to decode fast: required (non-nullable)
columns, plain encoding, no compression, no dictionary, no statistics, one row group (compressed
or dictionary-encoded files are smaller but slower to decode from the page cache; measurements in
benchmarks/README.md). When every requested day is cached, :func:`read_window` builds the result
from the files directly: the times of each file first, to size it, then each file's values,
decoded and copied once into place, so only one file's decoded data is alive at a time. Nothing
is kept in memory between requests: a hit always reads the files, so it costs the same in a new
session and sees what another process wrote.

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
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import platformdirs
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

__all__ = ["CACHE_ENV", "BarCache", "CacheFile", "CacheKey", "CachedBars", "CorruptCacheFile",
           "cache_dir", "clear", "read_window"]

CACHE_ENV = "ALPACA_NB_CACHE_DIR"
LAYOUT = "v1"
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "trade_count", "vwap")
_META_KEY = b"alpaca_nb"
# required (non-nullable) columns: no definition levels to write or decode, ~20% faster reads
_SCHEMA = pa.schema([pa.field("t", pa.int64(), nullable=False)]
                    + [pa.field(c, pa.float64(), nullable=False) for c in BAR_COLUMNS])
_FIELDS = [(f.name, f.type) for f in _SCHEMA]


def cache_dir() -> Path:
    """The cache root: ``$ALPACA_NB_CACHE_DIR``, else the platform's user cache dir."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("alpaca_nb", appauthor=False))


def clear(path: str | os.PathLike | None = None) -> int:
    """Delete every cached file (only the ``v1/`` tree this module writes under the cache root).

    Returns:
        The number of files removed.
    """
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


class CorruptCacheFile(Exception):
    """A cache file failed a check while its data was read; it has been deleted."""


class CacheFile:
    """One symbol's cache file, open, its footer checked: the days it covers and its columns,
    each checked against the digest in the footer when read (a file failing a check is deleted
    and :class:`CorruptCacheFile` raised). Holds an open file until :meth:`close`."""

    def __init__(self, symbol: str, path: Path, days: set[int], meta: dict, reader: pq.ParquetFile,
                 source: pa.NativeFile):
        self.symbol = symbol
        self.path = path
        self.days = days
        self.rows: int = meta["rows"]
        self.meta = meta
        self._digest: list[int] = meta["digest"]
        self._reader = reader
        self._source = source

    def __repr__(self) -> str:
        return f"<CacheFile {self.path} rows={self.rows}>"

    def times(self) -> np.ndarray:
        """Column ``t`` (int64 ns, increasing), read-only."""
        return self._columns(["t"])[0]

    def values(self) -> dict[str, np.ndarray]:
        """The bar columns (float64), read-only."""
        return dict(zip(BAR_COLUMNS, self._columns(list(BAR_COLUMNS))))

    def read(self) -> CachedBars:
        """Everything: days, times and bar columns."""
        times, *values = self._columns(list(_SCHEMA.names))
        return CachedBars(self.days, times, dict(zip(BAR_COLUMNS, values)))

    def _columns(self, names: list[str]) -> list[np.ndarray]:
        try:
            table = self._reader.read(columns=names, use_threads=False)
            arrays = [_frozen(table.column(i).to_numpy()) for i in range(len(names))]
            for name, array in zip(names, arrays):
                if len(array) != self.rows or _sum(array) != self._digest[_SCHEMA.names.index(name)]:
                    raise ValueError(f"column {name} does not match its digest")
        except MemoryError:
            raise
        except Exception as exc:     # unreadable or damaged: never returned
            self.close()
            _discard(self.path, exc)
            raise CorruptCacheFile(str(self.path)) from exc
        return arrays

    def close(self) -> None:
        self._source.close()


def read_window(files: Iterable[CacheFile], lo: int, hi: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The rows with ``lo <= t < hi`` (ns) of several symbols' files, ordered by symbol then
    time, assembled without keeping the files' decoded data: the times of every file are read
    first (to size the result), then each file's values are decoded and copied once into place
    while still in the processor's cache, so the decoded data of only one file is alive at a
    time (no large fresh allocation besides the result).

    Returns:
        (symbols with rows, sorted; rows per symbol; int64 times; float64 block of shape
        (len(BAR_COLUMNS), rows) whose rows are the bar columns).

    Raises:
        CorruptCacheFile: a file failed a check (it has been deleted).
    """
    plan = []
    total = 0
    for file in sorted(files, key=lambda f: f.symbol):
        times = file.times()
        a, b = (int(i) for i in np.searchsorted(times, [lo, hi], side="left"))
        if b > a:
            plan.append((file, times, a, b))
            total += b - a
    out_times = np.empty(total, np.int64)
    block = np.empty((len(BAR_COLUMNS), total))
    offset = 0
    for i, (file, times, a, b) in enumerate(plan):
        end = offset + b - a
        out_times[offset:end] = times[a:b]
        values = file.values()
        for row, name in zip(block, BAR_COLUMNS):
            row[offset:end] = values[name][a:b]
        del values                                # release this file's decoded data
        plan[i] = (file, None, a, b)
        offset = end
    symbols = [file.symbol for file, _, _, _ in plan]
    counts = np.array([b - a for _, _, a, b in plan], np.int64)
    return symbols, counts, out_times, block


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
    def open(self, symbol: str) -> CacheFile | None:
        """``symbol``'s file with its footer read and checked (no data yet), or None: absent, or
        not a readable file of ours (then it is deleted)."""
        path = self.path(symbol)
        try:
            source = pa.OSFile(str(path))          # a file, not a filesystem lookup per file
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("alpaca_nb cache: cannot open %s (%s); its days will be downloaded", path, exc)
            return None
        try:
            reader = pq.ParquetFile(source, pre_buffer=False)
            meta, days = _check_footer(reader, symbol)
        except MemoryError:
            source.close()
            raise
        except Exception as exc:  # noqa: BLE001 - unreadable or not ours: never used
            source.close()
            _discard(path, exc)
            return None
        return CacheFile(symbol, path, days, meta, reader, source)

    def open_many(self, symbols: Iterable[str]) -> dict[str, CacheFile | None] | None:
        """:meth:`open` for each symbol (in the order given); close them after use. None when
        that would hold more files open than this process comfortably can (a quarter of its
        open-file limit, at most 512): then read them one at a time with :meth:`load`."""
        symbols = list(dict.fromkeys(symbols))
        if len(symbols) > _max_open_files():
            return None
        return {s: self.open(s) for s in symbols}

    def load(self, symbol: str) -> CachedBars | None:
        """The cached bars of ``symbol`` or None (absent, or corrupt and now deleted). The arrays
        are read-only views of the decoded file."""
        file = self.open(symbol)
        if file is None:
            return None
        try:
            return file.read()
        except CorruptCacheFile:
            return None
        finally:
            file.close()

    def discard(self, symbol: str, reason: str) -> None:
        """Delete ``symbol``'s file (its days will be downloaded again)."""
        log.info("alpaca_nb cache: %s: %s; its days will be downloaded again", self.path(symbol), reason)
        _unlink(self.path(symbol))

    # ------------------------------------------------------------------ writing
    def store(self, symbol: str, days: Iterable[int], day_bounds: Mapping[int, tuple[int, int]],
              times: np.ndarray, columns: Mapping[str, np.ndarray], *,
              extra: Callable[[int], dict] | None = None) -> None:
        """Record that ``days`` are complete for ``symbol`` with these rows (rows outside those
        days are ignored), merged with what the file already had.

        Args:
            days: New York day ordinals being written (each a finished day).
            day_bounds: ordinal -> (first ns, last ns + 1) of that day.
            times, columns: the rows (int64 ns sorted ascending; float64 columns).
            extra: ``extra(first day of the file)`` -> more metadata to keep with the file (the
                corporate-action mark of adjusted bars), readable as :attr:`CacheFile.meta`.
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
                "rows": len(times), "digest": _digest(times, columns),
                **(extra(min(all_days)) if extra is not None else {})}
        table = pa.Table.from_arrays([pa.array(times)] + [pa.array(columns[c]) for c in BAR_COLUMNS],
                                     schema=_SCHEMA.with_metadata({_META_KEY: json.dumps(meta)}))
        path = self.path(symbol)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(table, tmp, compression="none", use_dictionary=False, write_statistics=False,
                           row_group_size=max(len(times), 1), write_page_checksum=True)
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            log.warning("alpaca_nb cache: could not write %s (%s); continuing without caching it", path, exc)


def _check_footer(reader: pq.ParquetFile, symbol: str) -> tuple[dict, set[int]]:
    """Our metadata and covered days from a file's footer, after checking that it is one of
    ours for ``symbol`` with the expected columns (nullable or not: older files had nullable
    ones). Raises ValueError otherwise."""
    schema = reader.schema_arrow
    meta_raw = (schema.metadata or {}).get(_META_KEY)
    if meta_raw is None:
        raise ValueError("no alpaca_nb metadata")
    meta = json.loads(meta_raw)
    if meta.get("version") != 1 or meta.get("symbol") != symbol:
        raise ValueError("metadata is for another layout or symbol")
    if [(f.name, f.type) for f in schema] != _FIELDS:
        raise ValueError(f"unexpected columns {schema.names}")
    digest = meta.get("digest")
    if meta.get("rows") != reader.metadata.num_rows or not isinstance(digest, list) \
            or len(digest) != len(_FIELDS):
        raise ValueError("the row count or digest in the metadata does not fit the file")
    days: set[int] = set()
    for lo, hi in meta["days"]:
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 < lo <= hi < 4_000_000):
            raise ValueError("bad day range")
        days.update(range(lo, hi + 1))
    return meta, days


def _digest(times: np.ndarray, columns: Mapping[str, np.ndarray]) -> list[int]:
    """Wrapping sums of the columns' 64-bit patterns: any flipped bit in a value changes its
    column's sum. Cheaper than Parquet's page CRCs on read, and it checks the decoded values."""
    return [_sum(a) for a in [times] + [columns[c] for c in BAR_COLUMNS]]


def _sum(array: np.ndarray) -> int:
    return int(np.asarray(array).view(np.uint64).sum(dtype=np.uint64))


def _discard(path: Path, exc: BaseException) -> None:
    log.warning("alpaca_nb cache: discarding unreadable file %s (%s: %s); its days will be "
                "downloaded again", path, type(exc).__name__, exc)
    _unlink(path)


def _max_open_files() -> int:
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):      # no such limit (Windows)
        return 512
    return 512 if soft == resource.RLIM_INFINITY else max(16, min(512, soft // 4))


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


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
