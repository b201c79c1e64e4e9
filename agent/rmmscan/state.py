"""The persistent state directory: device identity and the ReportId counter (SQLite).

Default location: $RMMSCAN_STATE_DIR, else %ProgramData%\\rmmscan on Windows, else
/var/lib/rmmscan for root and $XDG_STATE_HOME/rmmscan (~/.local/state/rmmscan) otherwise.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def default_dir() -> Path:
    if os.environ.get("RMMSCAN_STATE_DIR"):
        return Path(os.environ["RMMSCAN_STATE_DIR"])
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "rmmscan"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/rmmscan")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rmmscan"


class State:
    def __init__(self, directory: Path | None = None):
        self.directory = directory or default_dir()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.directory / "state.sqlite"
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.executescript(_SCHEMA)

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def setdefault(self, key: str, value: str) -> str:
        """Store value unless the key exists; return what is stored (first writer wins)."""
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
        return self.get(key) or value

    def allocate(self, name: str, count: int = 1) -> int:
        """Reserve `count` consecutive values of a counter; returns the first (durable)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT value FROM counter WHERE name = ?", (name,)).fetchone()
            first = (row[0] if row else 0) + 1
            db.execute(
                "INSERT INTO counter (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, first + count - 1),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return first

    def release(self, name: str, first_unused: int, end: int) -> None:
        """Give back the unused tail [first_unused, end) of the last block this process
        reserved, unless someone reserved after it (then the values are simply skipped)."""
        if first_unused < end:
            self._db.execute(
                "UPDATE counter SET value = ? WHERE name = ? AND value = ?",
                (first_unused - 1, name, end - 1),
            )

    def close(self) -> None:
        self._db.close()
