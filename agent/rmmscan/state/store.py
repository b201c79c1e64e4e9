"""The persistent state directory: device identity and the ReportId counter (SQLite).

Default location: $RMMSCAN_STATE_DIR, else %ProgramData%\\rmmscan on Windows, else
/var/lib/rmmscan for root and $XDG_STATE_HOME/rmmscan (~/.local/state/rmmscan) otherwise.

The state only makes a scan nicer (ReportIds that continue, a device id kept where the OS
has no machine id): a directory or database this user cannot write, or a damaged one, is
never fatal. The state then lives in memory for the run, with one warning that names the
file, what is wrong and what to do. Such a run's ReportIds start at the clock's
microseconds since 1970 (about 1.8e15, far above any counter and below 2^53), so they repeat
neither the counter's values nor another such run's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..text import printable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# SQLite's primary result codes for a file that is not a sound database.
DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
ADVICE_ACCESS = "run as the owner of {dir}, or pass --state-dir DIR"


def default_dir() -> Path:
    if os.environ.get("RMMSCAN_STATE_DIR"):
        return Path(os.environ["RMMSCAN_STATE_DIR"])
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "rmmscan"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/rmmscan")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rmmscan"


def error_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of an exception (None for one that is not SQLite's)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


class Damaged(sqlite3.DatabaseError):
    """A value read back is not one rmmscan could have written."""


def is_damage(exc: BaseException) -> bool:
    return isinstance(exc, Damaged) or error_code(exc) in DAMAGED


def describe(exc: BaseException) -> str:
    """An exception's words, safe to show (SQLite quotes the text it could not decode)."""
    if isinstance(exc, OSError):
        return printable(exc.strerror or str(exc))
    return printable(str(exc))


def shown(path: Path) -> str:
    return printable(str(path))


def _read_only(path: Path) -> sqlite3.Connection | None:
    """The state as it is, for reading, where it cannot be written; None if it cannot be read."""
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    except (OSError, ValueError, sqlite3.Error):
        return None
    try:
        db.execute("SELECT value FROM meta LIMIT 1").fetchall()
        return db
    except sqlite3.Error:
        db.close()
        return None


class State:
    """``warn(message)`` is called at most once, when the state first turns out unusable."""

    def __init__(self, directory: Path | None = None, warn: Callable[[str], None] | None = None):
        self.directory = directory or default_dir()
        self.path = self.directory / "state.sqlite"
        self._warn = warn or (lambda message: None)
        self._db: sqlite3.Connection | None = None
        self._writable = True
        self._meta: dict[str, str] = {}  # what could not be stored
        self._counters: dict[str, int] = {}  # counters kept in memory, when they must be
        # The directory itself cannot be used (missing and not creatable, or not writable):
        # nothing else should try to keep state there this run (the scan cache).
        self.directory_unusable = False
        self.warned = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            self.directory_unusable = True
            self._degrade(exc, self.directory)
            return
        if not os.access(self.directory, os.W_OK | os.X_OK):
            # SQLite needs to make its journal here: nothing can be kept. What is there is
            # still read (the device id), and the scan cache is left alone.
            self.directory_unusable = True
            self._degrade(
                PermissionError(errno.EACCES, "not writable by this user"), self.directory
            )
            self._db = _read_only(self.path)
            return
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            self._opening_failed(exc)
            return
        try:
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            db.close()
            self._opening_failed(exc)
            return
        self._db = db

    def _opening_failed(self, exc: BaseException) -> None:
        if not is_damage(exc) and not os.access(self.directory, os.W_OK):
            self.directory_unusable = True
        self._degrade(exc, self.path)

    def _degrade(self, exc: BaseException, where: Path) -> None:
        """Keep the state in memory from now on, and say so once."""
        self._writable = False
        if self.warned:
            return
        self.warned = True
        if is_damage(exc):
            advice = "move it aside to start a new one (ReportIds then start again at 1)"
        else:
            advice = ADVICE_ACCESS.format(dir=shown(self.directory))
        lost = "ReportIds are counted in memory for this run"
        if self.directory_unusable:
            lost += ", and no scan cache is kept"
        self._warn(f"{shown(where)}: unusable state ({describe(exc)}): {lost}; {advice}")

    def get(self, key: str) -> str | None:
        if key in self._meta:
            return self._meta[key]
        if self._db is None:
            return None
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            self._db_failed(exc)
            return None
        value = row[0] if row else None
        return value if isinstance(value, str) else None

    def setdefault(self, key: str, value: str) -> str:
        """Store value unless the key exists; return what is stored (first writer wins)."""
        if self._db is not None and self._writable:
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value)
                )
            except sqlite3.Error as exc:
                self._db_failed(exc)
        stored = self.get(key)
        if stored is None:
            stored = self._meta[key] = value
        return stored

    def allocate(self, name: str, count: int = 1) -> int:
        """Reserve `count` consecutive values of a counter; returns the first (durable when
        the state can be written)."""
        if self._db is not None and self._writable:
            try:
                return self._allocate(name, count)
            except sqlite3.Error as exc:
                self._db_failed(exc)
        first = self._counters.get(name) or time.time_ns() // 1000
        self._counters[name] = first + count
        return first

    def _allocate(self, name: str, count: int) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT value FROM counter WHERE name = ?", (name,)).fetchone()
            value = row[0] if row else 0
            if type(value) is not int or not 0 <= value < 2**62:
                raise Damaged(f"counter {name!r} holds {value!r}")
            first = value + 1
            db.execute(
                "INSERT INTO counter (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, first + count - 1),
            )
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have ended the transaction itself on the error: nothing to roll back
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return first

    def _db_failed(self, exc: sqlite3.Error) -> None:
        self._degrade(exc, self.path)

    def release(self, name: str, first_unused: int, end: int) -> None:
        """Give back the unused tail [first_unused, end) of the last block this process
        reserved, unless someone reserved after it (then the values are simply skipped)."""
        if first_unused < end and self._db is not None and self._writable:
            try:
                self._db.execute(
                    "UPDATE counter SET value = ? WHERE name = ? AND value = ?",
                    (first_unused - 1, name, end - 1),
                )
            except sqlite3.Error as exc:
                self._db_failed(exc)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
