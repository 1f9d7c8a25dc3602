"""Persistence of the sandbox's trading state: SQLite when ``--db FILE`` is given, nothing otherwise.

The engine keeps its whole state in memory and writes every change through to the store at the end
of each operation, in one transaction (write-through). SQLite runs in WAL mode with
``synchronous=NORMAL``: a committed transaction survives the process being killed (``kill -9``) at
any moment, because it is in the operating system's file cache before ``commit`` returns; only a
power loss of the whole machine could lose the last transactions.

Rows are JSON documents keyed by id, so the engine's records can grow fields without migrations.
Secrets are never stored: the ``keys`` table holds a SHA-256 digest of each secret.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (key_id TEXT PRIMARY KEY, digest BLOB NOT NULL, account_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS positions (account_id TEXT NOT NULL, symbol TEXT NOT NULL, data TEXT NOT NULL,
                                      PRIMARY KEY (account_id, symbol));
CREATE TABLE IF NOT EXISTS activities (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, seq INTEGER NOT NULL,
                                       data TEXT NOT NULL);
"""


@dataclass
class Snapshot:
    """Everything a store holds, as loaded at start."""

    meta: dict[str, Any] = field(default_factory=dict)
    keys: list[tuple[str, bytes, str]] = field(default_factory=list)
    accounts: list[dict] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)
    positions: list[tuple[str, dict]] = field(default_factory=list)   # (account_id, record)
    activities: list[tuple[str, dict]] = field(default_factory=list)  # (account_id, record), in seq order


@dataclass
class Changes:
    """One operation's writes; empty collections are skipped."""

    meta: dict[str, Any] = field(default_factory=dict)
    keys: list[tuple[str, bytes, str]] = field(default_factory=list)
    accounts: list[dict] = field(default_factory=list)
    orders: list[tuple[str, dict]] = field(default_factory=list)        # (account_id, record)
    positions: list[tuple[str, str, dict | None]] = field(default_factory=list)  # None = delete
    activities: list[tuple[str, int, dict]] = field(default_factory=list)  # (account_id, seq, record)

    def __bool__(self) -> bool:
        return bool(self.meta or self.keys or self.accounts or self.orders or self.positions
                    or self.activities)


class MemoryStore:
    """The default: nothing is kept beyond the process."""

    path: str | None = None

    def load(self) -> Snapshot:
        return Snapshot()

    def write(self, changes: Changes) -> None:
        pass

    def close(self) -> None:
        pass


class SqliteStore:
    """Write-through SQLite persistence (see the module docstring).

    Raises:
        ValueError: when ``path`` is not a sandbox database (or is from a newer schema).
        sqlite3.Error: when the file cannot be opened or written.
    """

    def __init__(self, path: str):
        self.path = path
        # The sandbox's event loop is the only user, but create_app may build the engine in a
        # different thread than the one that serves it.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise ValueError(f"{path} was written by a newer alpaca_nb (schema {row[0]})")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ValueError(f"{path} is not an alpaca_nb sandbox database: {exc}") from None

    def load(self) -> Snapshot:
        db = self._db
        snap = Snapshot()
        snap.meta = {k: orjson.loads(v) for k, v in db.execute("SELECT k, v FROM meta WHERE k != 'schema'")}
        snap.keys = [(k, bytes(d), a) for k, d, a in db.execute("SELECT key_id, digest, account_id FROM keys")]
        snap.accounts = [orjson.loads(d) for (d,) in db.execute("SELECT data FROM accounts")]
        snap.orders = [orjson.loads(d) for (d,) in db.execute("SELECT data FROM orders")]
        snap.positions = [(a, orjson.loads(d)) for a, d in
                          db.execute("SELECT account_id, data FROM positions")]
        snap.activities = [(a, orjson.loads(d)) for a, d in
                           db.execute("SELECT account_id, data FROM activities ORDER BY seq")]
        log.info("sandbox database %s: %d accounts, %d orders, %d positions, %d activities",
                 self.path, len(snap.accounts), len(snap.orders), len(snap.positions),
                 len(snap.activities))
        return snap

    def write(self, changes: Changes) -> None:
        """Apply one operation's changes atomically (one transaction, committed on return)."""
        if not changes:
            return
        db = self._db
        db.execute("BEGIN")
        try:
            if changes.meta:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                               [(k, _dumps(v)) for k, v in changes.meta.items()])
            if changes.keys:
                db.executemany("INSERT OR REPLACE INTO keys VALUES (?, ?, ?)", changes.keys)
            if changes.accounts:
                db.executemany("INSERT OR REPLACE INTO accounts VALUES (?, ?)",
                               [(a["id"], _dumps(a)) for a in changes.accounts])
            if changes.orders:
                db.executemany("INSERT OR REPLACE INTO orders VALUES (?, ?, ?)",
                               [(o["id"], acct, _dumps(o)) for acct, o in changes.orders])
            upserts = [(a, s, _dumps(r)) for a, s, r in changes.positions if r is not None]
            deletes = [(a, s) for a, s, r in changes.positions if r is None]
            if upserts:
                db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?, ?)", upserts)
            if deletes:
                db.executemany("DELETE FROM positions WHERE account_id=? AND symbol=?", deletes)
            if changes.activities:
                db.executemany("INSERT OR REPLACE INTO activities VALUES (?, ?, ?, ?)",
                               [(r["id"], a, seq, _dumps(r)) for a, seq, r in changes.activities])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:  # pragma: no cover - best effort on shutdown
            pass
        self._db.close()


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def open_store(path: str | None) -> MemoryStore | SqliteStore:
    """A SQLite store for ``path``, or the in-memory store when ``path`` is None/empty."""
    return SqliteStore(path) if path else MemoryStore()

