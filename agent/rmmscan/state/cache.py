"""The scan cache: what a file yielded, keyed by its identity, size and times (SQLite).

A file whose inode, size, mtime and ctime are unchanged is not opened again: its rows come
from the record and the rules run on them afresh. ctime is in the key because no user can
set it: a file rewritten and `touch -d`-ed back to its old mtime still misses.
Records are JSON (never pickle: the file is data, not code). Lookups go a directory at a
time; writes are batched by the one writer thread.

Nothing read back is trusted: a disk, a crash or another program can change a page without
SQLite noticing, and one flipped bit in `flags` would pass a DWSNET-signed PE as "not a PE".
Every row carries a CRC-32 of its values (`sum`, which covers the CRC-32 of its record,
`rsum`); a row that fails it, or whose values have the wrong types or shape, is dropped and
its file read again. A database SQLite itself reports damaged is set aside (renamed
``cache.sqlite.broken``) and rebuilt; one this user cannot write is not used. Either way the
sweep goes on, every file read, with one warning.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

from ..rows.columns import GROUP, HASH, NAMES, SIGNATURE, TYPES, VERDICT, VERSION
from .store import ADVICE_ACCESS, Damaged, describe, error_code, is_damage, shown

SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    scope TEXT NOT NULL,          -- '' for the local file systems; an image's evidence id
    dir NOT NULL, name NOT NULL,  -- TEXT when valid UTF-8, else the raw bytes as a BLOB
    key BLOB NOT NULL,            -- dev, ino, size, mtime_ns, ctime_ns packed; compared exactly
    record TEXT,                  -- NULL: not a PE
    judged TEXT,                  -- the rules' fingerprint, when they found nothing to emit
    flags INTEGER NOT NULL DEFAULT 0,  -- 1: a PE, 2: signed (for the summary)
    rsum INTEGER NOT NULL,        -- CRC-32 of record (0 without one)
    sum INTEGER NOT NULL,         -- CRC-32 of dir, name, key, judged, flags and rsum
    PRIMARY KEY (scope, dir, name)
) WITHOUT ROWID;
"""
# Bump when the meaning of a record changes: an old cache is then emptied, not misread.
# 7: every row carries the CRC-32 of its values, and a scope.
FORMAT = "7"
RECORD_MAX = 4 * 1024 * 1024  # characters of one record's JSON (a few KiB in practice)
SIGNATURES_MAX = 4096  # rows of one record

_KEY = struct.Struct("<QQqqq")
KEY_SIZE = _KEY.size
FLAGS_MAX = 3  # 1: a PE, 2: signed
# What opening a cache can meet that means "not our database" rather than "not for this
# user": SQLite's damage codes, and SQLITE_ERROR from a table of another shape.
_SET_ASIDE = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_ERROR})


def key_of(st: os.stat_result) -> bytes:
    return _KEY.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _db_name(name: str) -> str | bytes:
    """Paths are str with surrogates for undecodable bytes (PEP 383); SQLite TEXT must be
    valid UTF-8, so those are stored as their exact bytes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name)


def _raw(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


def row_sum(
    directory: str,
    name: str,
    key: bytes,
    judged: str | None,
    flags: int,
    rsum: int,
    scope: str = "",
) -> int:
    """The CRC-32 a row carries. Names have no NUL; the key's length is checked apart."""
    return zlib.crc32(
        b"%s\0%s\0%s\0%s\0%s\0%d\0%d"
        % (
            _raw(scope),
            _raw(directory),
            _raw(name),
            key,
            (judged or "").encode("ascii"),
            flags,
            rsum,
        )
    )


def record_sum(text: str | None) -> int:
    return 0 if text is None else zlib.crc32(text.encode("utf-8", "surrogatepass"))


# -- what a record may hold (the groups of rows/facts.py) ------------------------------------------

_GROUP_COLUMNS = {
    group: frozenset(n for n in NAMES if GROUP[n] == group)
    for group in (SIGNATURE, VERDICT, VERSION, HASH)
}
_HEX = {"SHA1": 40, "SHA256": 64, "MD5": 32}
_HEX_RE = re.compile(r"[0-9a-f]*")
_TYPES = {"string": str, "datetime": str, "bool": bool, "int": int, "long": int}


def _columns_ok(values, group: str) -> bool:
    if type(values) is not dict or values.keys() != _GROUP_COLUMNS[group]:
        return False
    for name, value in values.items():
        if value is None:
            continue
        want = _TYPES[TYPES[name]]
        if type(value) is not want:  # exact: a bool is no int here, nor an int a bool
            return False
    return True


def valid_record(record) -> dict | None:
    """The record if it has the shape rows/facts.py writes, else None (the file is read again)."""
    if type(record) is not dict or record.get("pe") is not True:
        return None
    if not record.keys() <= {"pe", "sig", "verdict", "version", "hash", "gen"}:
        return None
    sig = record.get("sig")
    if sig is not None:
        if type(sig) is not list or not 1 <= len(sig) <= SIGNATURES_MAX:
            return None
        for row in sig:
            if not _columns_ok(row, SIGNATURE) or type(row["IsSigned"]) is not bool:
                return None
            if type(row["Anomalies"]) is not str:
                return None
    verdict = record.get("verdict")
    if verdict is not None:
        if type(verdict) is not list or sig is None or len(verdict) != len(sig):
            return None
        for row in verdict:
            if not _columns_ok(row, VERDICT) or type(row["VerificationStatus"]) is not str:
                return None
            if type(row["IsTrusted"]) is not bool or type(row["IsRootSignerMicrosoft"]) is not bool:
                return None
        if type(record.get("gen")) is not str:
            return None
    version = record.get("version")
    if version is not None and not _columns_ok(version, VERSION):
        return None
    hashes = record.get("hash")
    if hashes is not None:
        if not _columns_ok(hashes, HASH):
            return None
        for name, length in _HEX.items():
            value = hashes[name]
            if type(value) is not str or len(value) != length or not _HEX_RE.fullmatch(value):
                return None
    if "gen" in record and type(record["gen"]) is not str:
        return None
    return record


class ScanCache:
    """The files of one scope: '' is the local file systems, an image's scope is its evidence
    id, so that a file of an image and a local file of the same path never share a row.
    ``warn(message)`` is called at most once: when the cache first fails in a sweep."""

    def __init__(
        self, directory: Path, warn: Callable[[str], None] | None = None, scope: str = ""
    ):
        self.scope = scope
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / "cache.sqlite"
        self.warn = warn or (lambda message: None)
        self.failure: str | None = None  # why the cache is not used any more this sweep
        self.damaged = False  # ... and that is damage: set it aside at the end
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        db = self._connect()
        try:
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None or row[0] != FORMAT:
                db.execute("DROP TABLE IF EXISTS files")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (FORMAT,))
            db.executescript(SCHEMA)
            db.execute(
                "SELECT scope, dir, name, key, record, judged, flags, rsum, sum FROM files LIMIT 0"
            )
        except BaseException:
            self._close_all()
            raise
        self._pending: list[tuple] = []
        self._gone: list[tuple] = []

    def forked(self) -> None:
        """In a process forked from the one that opened the cache (a scan process): its
        connections are the parent's, which SQLite forbids using from another process, so
        this one opens its own on first use. The inherited ones are left as they are, never
        closed here: SQLite closing what it takes for the last connection would checkpoint,
        or remove, the write-ahead log the parent is using."""
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                db.close()
                raise
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    # -- failing: once, then the sweep goes on without the cache ----------------------------
    @property
    def usable(self) -> bool:
        return self.failure is None

    def fail(self, exc: BaseException) -> None:
        self.failed(describe(exc), is_damage(exc))

    def failed(self, failure: str, damaged: bool) -> None:
        """The cache is not used from now on (a sweep process reports it to the parent)."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure, self.damaged = failure, damaged
            self._pending.clear()
            self._gone.clear()
        if damaged:
            then = f"it is set aside as {self.path.name}.broken, and the next sweep rebuilds it"
        else:
            then = ADVICE_ACCESS.format(dir=shown(self.path.parent))
        self.warn(
            f"{shown(self.path)}: scan cache unusable ({failure}): this sweep goes on without it "
            f"(every file is read); {then}"
        )

    # -- reading: any thread ----------------------------------------------------------------
    def lookup_dir(self, directory: str) -> dict[str, tuple] | None:
        """Every file of one directory: name -> (name, key, judged, flags, rsum, sum), as
        stored (check a row with `sound` before believing it); None: no cache to ask.

        Without the records: an unchanged file needs its record only when it is a PE the
        current rules have not judged (``record``), and the records of the benchmark corpus
        are 10 MB of JSON: fetched with every lookup, they make a rescan's lookups 18 %
        slower (benchmarks/README.md, sweep).
        """
        if self.failure is not None:
            return None
        query = (
            "SELECT name, key, judged, flags, rsum, sum FROM files WHERE scope = ? AND dir = ?"
        )
        db = None
        try:
            db = self._connect()
            rows = db.execute(query, (self.scope, _db_name(directory))).fetchall()
        except sqlite3.OperationalError as exc:
            if error_code(exc) is not None or db is None:
                self.fail(exc)
                return None
            # TEXT that is not UTF-8 (a damaged name): read this directory leniently
            try:
                db.text_factory = _lenient
                rows = db.execute(query, (self.scope, _db_name(directory))).fetchall()
            except sqlite3.Error as again:
                self.fail(again)
                return None
            finally:
                db.text_factory = str
        except sqlite3.Error as exc:
            self.fail(exc)
            return None
        out = {}
        for row in rows:
            name = row[0]
            if type(name) is bytes:
                name = os.fsdecode(name)
            elif type(name) is not str:
                continue  # damaged: the file is read again
            out[name] = row
        return out

    def sound(self, directory: str, name: str, row: tuple) -> bool:
        """A looked-up row has the types and the CRC-32 it was written with."""
        _, key, judged, flags, rsum, total = row
        if type(key) is not bytes or len(key) != KEY_SIZE:
            return False
        if judged is not None and (type(judged) is not str or not judged.isascii()):
            return False
        if type(flags) is not int or not 0 <= flags <= FLAGS_MAX:
            return False
        if type(rsum) is not int or type(total) is not int:
            return False
        return total == row_sum(directory, name, key, judged, flags, rsum, self.scope)

    def record(self, directory: str, name: str, row: tuple) -> dict | None:
        """The record of a sound row, checked against its CRC-32 and shape; None when it is
        gone since the lookup or not to be believed (the file is then read again)."""
        if self.failure is not None:
            return None
        try:
            found = (
                self._connect()
                .execute(
                    "SELECT substr(record, 1, ?) FROM files "
                    "WHERE scope = ? AND dir = ? AND name = ?",
                    (RECORD_MAX + 1, self.scope, _db_name(directory), _db_name(name)),
                )
                .fetchone()
            )
        except sqlite3.OperationalError as exc:
            if error_code(exc) is not None:
                self.fail(exc)
            return None  # else TEXT that is not UTF-8: damaged
        except sqlite3.Error as exc:
            self.fail(exc)
            return None
        if found is None or type(found[0]) is not str or len(found[0]) > RECORD_MAX:
            return None
        text = found[0]
        if record_sum(text) != row[4]:
            return None
        try:
            return valid_record(json.loads(text))
        except (ValueError, RecursionError):
            return None

    # -- writing: one thread only --------------------------------------------------------
    def put(
        self,
        directory: str,
        name: str,
        key: bytes,
        record: dict | None,
        judged: str | None = None,
        flags: int = 0,
    ) -> None:
        if self.failure is not None:
            return
        try:
            text = None if record is None else json.dumps(record, separators=(",", ":"))
        except (TypeError, ValueError):  # not JSON: not kept, read again next time
            return
        rsum = record_sum(text)
        total = row_sum(directory, name, key, judged, flags, rsum, self.scope)
        self._pending.append(
            (self.scope, _db_name(directory), _db_name(name), key, text, judged, flags, rsum,
             total)
        )  # fmt: skip
        if len(self._pending) >= 2000:
            self.flush()

    def forget(self, directory: str, names) -> None:
        if self.failure is None:
            self._gone.extend((self.scope, _db_name(directory), _db_name(n)) for n in names)

    def flush(self) -> None:
        if self.failure is not None or (not self._pending and not self._gone):
            return
        try:
            db = self._connect()
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?)", self._pending
                )
                db.executemany(
                    "DELETE FROM files WHERE scope = ? AND dir = ? AND name = ?", self._gone
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self.fail(exc)
        self._pending.clear()
        self._gone.clear()

    def close(self) -> None:
        """Flush, close, and set the file aside when it turned out damaged."""
        self.flush()
        self._close_all()
        if self.damaged:
            try:
                set_aside(self.path)
            except OSError as exc:
                self.warn(
                    f"{shown(self.path)}: cannot be set aside ({describe(exc)}); move it by hand"
                )

    def _close_all(self) -> None:
        with self._lock:
            for db in self._all:
                try:
                    db.close()
                except sqlite3.Error:
                    continue
            self._all.clear()
        self._local = threading.local()


def _lenient(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def set_aside(path: Path) -> None:
    """Rename the database and its WAL files to *.broken (OSError if that cannot be done)."""
    aside = path.with_suffix(".sqlite.broken")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            src.replace(Path(str(aside) + suffix))


def open_cache(directory: Path, warn: Callable[[str], None], scope: str = "") -> ScanCache | None:
    """The cache, or None: never fatal. A file that is not a database, is damaged or is of an
    unknown shape is set aside and a new one made; one this user cannot open or write is left
    alone (the sweep reads every file). Either way, one warning."""
    path = shown(directory / "cache.sqlite")
    advice = ADVICE_ACCESS.format(dir=shown(directory))
    try:
        return ScanCache(directory, warn, scope)
    except (OSError, sqlite3.Error) as exc:
        first = exc
    if not (isinstance(first, Damaged) or error_code(first) in _SET_ASIDE):
        warn(
            f"{path}: scan cache unusable ({describe(first)}): this sweep goes on without it "
            f"(every file is read); {advice}"
        )
        return None
    aside = "cache.sqlite.broken"
    try:
        set_aside(directory / "cache.sqlite")
        cache = ScanCache(directory, warn, scope)
    except (OSError, sqlite3.Error) as exc:
        warn(
            f"{path}: unusable scan cache ({describe(first)}), and it cannot be replaced "
            f"({describe(exc)}): this sweep goes on without it (every file is read); "
            f"{advice}"
        )
        return None
    warn(f"{path}: unusable scan cache ({describe(first)}); moved to {aside}, starting afresh")
    return cache
