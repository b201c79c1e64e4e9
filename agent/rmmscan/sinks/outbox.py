"""A forwarding sink's outbox: the rows on their way to one receiver, durable (SQLite, WAL).

A row is in the outbox (committed) before the engine counts it as emitted, and it leaves only
when its receiver accepted it, or when it is set aside (refused for good, kept with the
receiver's answer in ``aside``), or dropped by the size budget. The commit survives the
process being killed at any moment; ``synchronous=NORMAL`` leaves the last commits to the
operating system's cache, so a power cut may lose the rows of its last second.

The budget (``outbox_max_mb``) counts the bytes of the rows held. When a new batch would pass
it, the oldest inventory rows go first; detections are the last to go, oldest first. Every
dropped row is counted, by kind, in the ``tally`` table, so a report can say what was lost.

Rows are handed out detections first, then in the order they came: after an outage, what a
SOC acts on arrives before the inventory.

In one process, one connection serves the engine's thread (which writes) and the forwarding
thread (which reads and removes), each call under the outbox's lock: a thread waiting for the
other wakes the moment the lock is free, where SQLite's busy handler would sleep. Another
process (a sweep while the agent runs) has its own connection; SQLite's locking keeps the
two apart.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .transport import Entry

_SCHEMA = """
CREATE TABLE IF NOT EXISTS waiting (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    detection INTEGER NOT NULL,
    time REAL NOT NULL,
    host TEXT NOT NULL,
    row BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS waiting_order ON waiting (detection DESC, id);
CREATE TABLE IF NOT EXISTS aside (
    id INTEGER PRIMARY KEY,
    detection INTEGER NOT NULL,
    time REAL NOT NULL,
    host TEXT NOT NULL,
    row BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tally (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# The tally's names: bytes held (the budget's measure), and what left the outbox other than
# by delivery, by kind.
HELD = "bytes_held"
DELIVERED = "delivered"
DROPPED_INVENTORY, DROPPED_DETECTIONS = "dropped_inventory", "dropped_detections"
SET_ASIDE = "set_aside"


class OutboxError(Exception):
    """The outbox cannot be used: the message names the file, what is wrong and what to do."""


@dataclass(frozen=True, slots=True)
class Dropped:
    inventory: int = 0
    detections: int = 0

    def __bool__(self) -> bool:
        return bool(self.inventory or self.detections)


@dataclass(frozen=True, slots=True)
class Depth:
    """What an outbox holds and has done: for `rmmscan outbox status` and the summaries."""

    rows: int
    detections: int
    bytes: int
    oldest: float | None  # when the oldest waiting row was made (seconds since 1970)
    aside: int
    delivered: int
    dropped_inventory: int
    dropped_detections: int


def _locked(method):
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return locked


def path_of(state_dir: Path, sink: str) -> Path:
    return state_dir / "outbox" / f"{sink}.sqlite"


class Outbox:
    def __init__(self, path: Path):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not path.exists()
            self.db = sqlite3.connect(
                path, timeout=60, isolation_level=None, check_same_thread=False
            )
            if fresh:
                os.chmod(path, 0o600)  # rows name the machine's files: the service's only
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"{path}: cannot open the outbox ({getattr(exc, 'strerror', None) or exc}); "
                "check the state directory's permissions, or move a damaged file aside "
                "(its rows are then lost)"
            ) from None
        self.lock = threading.Lock()

    # -- the writer ----------------------------------------------------------------------------
    @_locked
    def put(self, entries: Sequence[Entry], max_bytes: int) -> Dropped:
        """Store `entries` (one transaction) and keep the outbox within `max_bytes`."""
        size = sum(len(e.row) for e in entries)
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO waiting (detection, time, host, row) VALUES (?, ?, ?, ?)",
                [(int(e.detection), e.time, e.host, e.row) for e in entries],
            )
            held = self._add(db, HELD, size)
            dropped = Dropped()
            if held > max_bytes:
                dropped = self._make_room(db, held - max_bytes)
        return dropped

    def _make_room(self, db: sqlite3.Connection, excess: int) -> Dropped:
        counts = {}
        for detection, name in ((0, DROPPED_INVENTORY), (1, DROPPED_DETECTIONS)):
            freed, last, n = 0, None, 0
            cursor = db.execute(
                "SELECT id, length(row) FROM waiting WHERE detection = ? ORDER BY id",
                (detection,),
            )
            for row_id, length in cursor:
                if freed >= excess:
                    break
                freed += length
                last, n = row_id, n + 1
            cursor.close()
            if last is not None:
                db.execute(
                    "DELETE FROM waiting WHERE detection = ? AND id <= ?", (detection, last)
                )
                self._add(db, HELD, -freed)
                self._add(db, name, n)
            counts[name] = n
            excess -= freed
            if excess <= 0:
                break
        return Dropped(counts.get(DROPPED_INVENTORY, 0), counts.get(DROPPED_DETECTIONS, 0))

    # -- the forwarder -------------------------------------------------------------------------
    @_locked
    def peek(self, max_rows: int, max_bytes: int) -> list[tuple[int, Entry]]:
        """The next rows to send, detections first, at most `max_rows` and `max_bytes` (one
        row at least, whatever its size)."""
        batch: list[tuple[int, Entry]] = []
        total = 0
        cursor = self.db.execute(
            "SELECT id, detection, time, host, row FROM waiting "
            "ORDER BY detection DESC, id LIMIT ?",
            (max_rows,),
        )
        for row_id, detection, when, host, row in cursor:
            if batch and total + len(row) > max_bytes:
                break
            total += len(row)
            batch.append((row_id, Entry(bytes(row), when, host, bool(detection))))
        cursor.close()
        return batch

    @_locked
    def remove(self, ids: Iterable[int]) -> None:
        """Delivered: gone from the outbox."""
        ids = list(ids)
        with self._transaction() as db:
            freed, gone = self._delete(db, ids)
            self._add(db, HELD, -freed)
            # Only the rows still here: the budget may have dropped some while they were sent
            # (those are counted as dropped).
            self._add(db, DELIVERED, gone)

    @_locked
    def set_aside(self, row_id: int, reason: str) -> None:
        """Refused for good: kept apart with the receiver's answer, out of the way."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO aside (id, detection, time, host, row, reason, at) "
                "SELECT id, detection, time, host, row, ?, ? FROM waiting WHERE id = ?",
                (reason, time.time(), row_id),
            )
            freed, gone = self._delete(db, [row_id])
            self._add(db, HELD, -freed)
            self._add(db, SET_ASIDE, gone)

    @_locked
    def depth(self) -> Depth:
        db = self.db
        rows, detections, size, oldest = db.execute(
            "SELECT count(*), coalesce(sum(detection), 0), coalesce(sum(length(row)), 0), "
            "min(time) FROM waiting"
        ).fetchone()
        (aside,) = db.execute("SELECT count(*) FROM aside").fetchone()
        tally = dict(db.execute("SELECT name, value FROM tally").fetchall())
        return Depth(
            rows, detections, size, oldest, aside, tally.get(DELIVERED, 0),
            tally.get(DROPPED_INVENTORY, 0), tally.get(DROPPED_DETECTIONS, 0),
        )  # fmt: skip

    @_locked
    def last_id(self) -> int:
        """The id of the newest row ever stored: rows stored later have larger ids."""
        (value,) = self.db.execute(
            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'waiting'"
        ).fetchone()
        return value

    @_locked
    def waiting_after(self, row_id: int) -> int:
        """Rows still waiting that were stored after the row `row_id`."""
        (n,) = self.db.execute("SELECT count(*) FROM waiting WHERE id > ?", (row_id,)).fetchone()
        return n

    @_locked
    def aside_rows(self, limit: int = 1000) -> list[tuple[bytes, str, float]]:
        """The rows set aside, newest first: (row, the receiver's answer, when)."""
        return [
            (bytes(row), reason, at)
            for row, reason, at in self.db.execute(
                "SELECT row, reason, at FROM aside ORDER BY at DESC LIMIT ?", (limit,)
            )
        ]

    @_locked
    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    # -- helpers -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    @staticmethod
    def _add(db: sqlite3.Connection, name: str, n: int) -> int:
        (value,) = db.execute(
            "INSERT INTO tally (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value RETURNING value",
            (name, n),
        ).fetchone()
        return value

    @staticmethod
    def _delete(db: sqlite3.Connection, ids: list[int]) -> tuple[int, int]:
        """(bytes freed, rows deleted) of the rows `ids` that are still waiting."""
        freed = gone = 0
        for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            (size,) = db.execute(
                f"SELECT coalesce(sum(length(row)), 0) FROM waiting WHERE id IN ({marks})", chunk
            ).fetchone()
            gone += db.execute(f"DELETE FROM waiting WHERE id IN ({marks})", chunk).rowcount
            freed += size
        return freed, gone
