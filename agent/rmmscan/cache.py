"""The scan cache: what a file yielded, keyed by its identity, size and times (SQLite).

A file whose inode, size, mtime and ctime are unchanged is not opened again: its rows come
from the record and the rules run on them afresh. ctime is in the key because no user can
set it: a file rewritten and `touch -d`-ed back to its old mtime still misses.
Records are JSON (never pickle: the file is data, not code). Lookups go a directory at a
time; writes are batched by the one writer thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    dir BLOB NOT NULL, name BLOB NOT NULL,
    dev INTEGER, ino INTEGER, size INTEGER, mtime INTEGER, ctime INTEGER,
    record TEXT,  -- NULL: not a PE
    PRIMARY KEY (dir, name)
) WITHOUT ROWID;
"""
# Bump when the meaning of a record changes: an old cache is then emptied, not misread.
FORMAT = "1"

Key = tuple[int, int, int, int, int]


def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ScanCache:
    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / "cache.sqlite"
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        db = self._connect()
        db.executescript(SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is None or row[0] != FORMAT:
            db.execute("DELETE FROM files")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))
        self._pending: list[tuple] = []
        self._gone: list[tuple[bytes, bytes]] = []

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous = NORMAL")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def lookup_dir(self, directory: bytes) -> dict[bytes, tuple[Key, str | None]]:
        """Every record of one directory (any thread)."""
        rows = self._connect().execute(
            "SELECT name, dev, ino, size, mtime, ctime, record FROM files WHERE dir = ?",
            (directory,),
        )
        return {name: ((dev, ino, size, mt, ct), rec) for name, dev, ino, size, mt, ct, rec in rows}

    # -- writing: one thread only --------------------------------------------------------
    def put(self, directory: bytes, name: bytes, key: Key, record: dict | None) -> None:
        text = None if record is None else json.dumps(record, separators=(",", ":"))
        self._pending.append((directory, name, *key, text))
        if len(self._pending) >= 2000:
            self.flush()

    def forget(self, directory: bytes, names) -> None:
        self._gone.extend((directory, n) for n in names)

    def flush(self) -> None:
        if not self._pending and not self._gone:
            return
        db = self._connect()
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)", self._pending)
        db.executemany("DELETE FROM files WHERE dir = ? AND name = ?", self._gone)
        db.execute("COMMIT")
        self._pending.clear()
        self._gone.clear()

    def close(self) -> None:
        self.flush()
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()


def parse_record(text: str | None) -> dict:
    return {"pe": False} if text is None else json.loads(text)
