"""What a state directory holds, read without changing it, and the emptying of its scan cache.

`rmmscan state` is built on these two functions: ``summarize`` (the files and their sizes,
the device identity the next scan stamps, the next ReportId, the scan cache's format and
counts) and ``clear_cache``. Neither prints; each returns a typed record, and anything wrong
with a database is a ``Problem`` (what, SQLite's or the OS's words, what to do), never an
exception.

The databases are read here directly with SQLite rather than through ``State`` and
``ScanCache``: those create the directory and the databases, make their tables and take the
locks a scan takes, and showing must create and change nothing. Reading uses SQLite's
read-only mode; a WAL database (the cache) whose -wal file is absent is opened immutable
instead, because a read-only connection to it creates -wal and -shm files and leaves them
behind, while everything it holds is then in the main file.

Clearing deletes the cache's rows in one transaction (the device id and the ReportId counter
are in state.sqlite and are not touched) and then vacuums, so the space returns to the file
system. A cache SQLite reports damaged is removed whole. Both wait at most ``BUSY_TIMEOUT``
for a lock: a running scan holding a database is reported ("locked by a running scan"), not
waited for.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..sources.device import device_id_from, device_name, machine_id
from .cache import FORMAT
from .store import ADVICE_ACCESS, Damaged, describe, error_code, is_damage, shown

BUSY_TIMEOUT = 2.0  # seconds: a scan holds the cache's write lock for one batch, milliseconds
STATE_DB = "state.sqlite"
CACHE_DB = "cache.sqlite"
SUFFIXES = ("", "-wal", "-shm")  # a database and its WAL files
ASIDE = ".broken"  # cache.py's name for a damaged cache it has set aside
REPORT_ID = "report_id"  # store.py's counter, and the meta key of a kept device id
DEVICE_ID = "device_id"
COUNTER_MAX = 2**62  # store.py's bound on a counter it could have written
_LOCKED = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_HEADER = b"SQLite format 3\x00"

# Where the DeviceId comes from: the OS's machine id; an id kept in state.sqlite; none yet
# (the next scan picks a random one and keeps it); or a random one each run, because the state
# cannot keep one.
Source = Literal["machine-id", "state", "new", "per-run"]
LOCKED = "locked by a running scan"


@dataclass(frozen=True, slots=True)
class Problem:
    """A file of the state that could not be read, cleared or trusted."""

    path: Path
    what: str  # "damaged", "locked by a running scan", "cannot be read", ...
    detail: str  # SQLite's or the OS's words, already printable
    advice: str  # what to do, its paths already printable

    def message(self) -> str:
        """The CLI's error form: <path>: <what is wrong>: <what to do>."""
        return f"{shown(self.path)}: {self.what} ({self.detail}): {self.advice}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of the state directory. A subdirectory's size is that of the files in it."""

    name: str
    size: int
    kind: str  # "file", "directory", "symlink" or "other"


@dataclass(frozen=True, slots=True)
class Identity:
    """DeviceId and DeviceName as the next scan stamps them (device_id None: not known yet)."""

    device_id: str | None
    device_name: str
    source: Source


@dataclass(frozen=True, slots=True)
class Counts:
    """Rows of the scan cache: '' is the local file systems, any other scope an image."""

    scope: str
    files: int
    pe_files: int
    signed_pe_files: int
    directories: int


@dataclass(frozen=True, slots=True)
class CacheSummary:
    """cache.sqlite: its format, and its rows counted per scope (none: an empty cache)."""

    path: Path
    exists: bool
    format: str | None  # None: no format recorded (an empty or unread database)
    current_format: str  # what this rmmscan writes; another format is emptied by the next scan
    scopes: tuple[Counts, ...] = ()
    readable: bool = True  # False: the counts are unknown (see the problem)

    @property
    def stale(self) -> bool:
        return self.exists and self.readable and self.format != self.current_format

    def total(self) -> Counts:
        """Every scope together (its scope is ''); a directory of an image is not the local
        one of that path."""
        return Counts(
            "",
            sum(c.files for c in self.scopes),
            sum(c.pe_files for c in self.scopes),
            sum(c.signed_pe_files for c in self.scopes),
            sum(c.directories for c in self.scopes),
        )


@dataclass(frozen=True, slots=True)
class Inventory:
    """A state directory as the next scan would find it."""

    directory: Path
    exists: bool
    writable: bool  # False: a scan by this user keeps nothing here (ReportIds in memory)
    entries: tuple[Entry, ...]
    device: Identity
    next_report_id: int | None  # None: unknown, the state cannot be read
    cache: CacheSummary
    problems: tuple[Problem, ...] = field(default=())
    listed: bool = True  # False: the directory cannot be read (entries empty, see problems)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass(frozen=True, slots=True)
class Cleared:
    """What clear_cache did."""

    path: Path  # the cache database
    entries: int | None  # rows removed; None when the database was damaged and removed whole
    bytes_freed: int
    damage: str | None = None  # what SQLite said of a database removed whole
    removed: tuple[str, ...] = ()  # files removed whole (a damaged cache, set-aside copies)


class StateError(Exception):
    """The cache cannot be cleared; ``problem`` says why and what to do."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message())
        self.problem = problem


# -- showing -------------------------------------------------------------------------------------


def summarize(directory: Path) -> Inventory:
    """The state at `directory` as the next scan would find it; creates and changes nothing."""
    directory = Path(os.path.abspath(directory))
    state_path, cache_path = directory / STATE_DB, directory / CACHE_DB
    empty_cache = CacheSummary(cache_path, False, None, FORMAT)
    if not os.path.lexists(directory):
        device = _identity(None, usable=True)
        return Inventory(directory, False, True, (), device, 1, empty_cache)
    problems: list[Problem] = []
    try:
        entries = _entries(directory)
    except OSError as exc:
        problems.append(_unreadable(directory, exc, directory))
        device = _identity(None, usable=False)
        unread = CacheSummary(cache_path, False, None, FORMAT, readable=False)
        return Inventory(
            directory, True, False, (), device, None, unread, tuple(problems), listed=False
        )
    writable = os.access(directory, os.W_OK | os.X_OK)
    next_id, kept_id, state_problem = _read_state(state_path, directory)
    cache, cache_problem = _read_cache(cache_path, directory)
    problems += [p for p in (state_problem, cache_problem) if p is not None]
    device = _identity(kept_id, usable=writable and state_problem is None)
    return Inventory(directory, True, writable, entries, device, next_id, cache, tuple(problems))


def _entries(directory: Path) -> tuple[Entry, ...]:
    out = []
    with os.scandir(directory) as found:
        for item in found:
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            if item.is_symlink():
                out.append(Entry(item.name, st.st_size, "symlink"))
            elif item.is_dir(follow_symlinks=False):
                out.append(Entry(item.name, _tree_size(item.path), "directory"))
            elif item.is_file(follow_symlinks=False):
                out.append(Entry(item.name, st.st_size, "file"))
            else:
                out.append(Entry(item.name, 0, "other"))
    return tuple(sorted(out, key=lambda e: e.name))


def _tree_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _identity(kept_id: str | None, usable: bool) -> Identity:
    """What local_device() will answer in the next scan, found without a State (which would
    create the directory and store a new id)."""
    name = device_name()
    machine = machine_id()
    if machine:
        return Identity(device_id_from(machine), name, "machine-id")
    if kept_id:
        return Identity(kept_id, name, "state")
    return Identity(None, name, "new" if usable else "per-run")


def _is_wal(path: Path) -> bool:
    """The header says WAL mode (bytes 18 and 19 are 2); unreadable or not SQLite: False."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return header.startswith(_HEADER) and len(header) == 20 and header[18] == 2


def _lenient(raw: bytes) -> str:
    """TEXT that is not UTF-8 (a damaged value) read anyway; printable() shows its bytes."""
    return raw.decode("utf-8", "surrogateescape")


def _connect_ro(path: Path, immutable: bool) -> sqlite3.Connection:
    uri = f"{path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    db.text_factory = _lenient
    return db


def _read(path: Path, query):
    """query(db) on a read-only connection to path. A scan that starts while an immutable
    connection reads can change the file under it: a failure then is retried once the
    normal way, now that the -wal file exists."""
    immutable = _is_wal(path) and not os.path.lexists(f"{path}-wal")
    try:
        with contextlib.closing(_connect_ro(path, immutable)) as db:
            return query(db)
    except sqlite3.Error:
        if not immutable or not os.path.lexists(f"{path}-wal"):
            raise
    with contextlib.closing(_connect_ro(path, False)) as db:
        return query(db)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _read_state(path: Path, directory: Path) -> tuple[int | None, str | None, Problem | None]:
    """(next ReportId, device id kept in the state, problem). No database: a new state."""
    if not os.path.lexists(path):
        return 1, None, None

    def query(db: sqlite3.Connection) -> tuple[int, str | None]:
        tables = _tables(db)
        value, kept = 0, None
        if "counter" in tables:
            row = db.execute("SELECT value FROM counter WHERE name = ?", (REPORT_ID,)).fetchone()
            value = row[0] if row else 0
            if type(value) is not int or not 0 <= value < COUNTER_MAX:
                raise Damaged(f"counter {REPORT_ID!r} holds {value!r}")
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (DEVICE_ID,)).fetchone()
            kept = row[0] if row and isinstance(row[0], str) else None
        return value + 1, kept

    try:
        next_id, kept = _read(path, query)
    except (OSError, sqlite3.Error) as exc:
        # The next scan's ReportIds then come from the clock (store.py), not a counter.
        advice = "move it aside to start a new one (ReportIds then start again at 1)"
        return None, None, _db_problem(path, exc, directory, advice)
    return next_id, kept, None


def _read_cache(path: Path, directory: Path) -> tuple[CacheSummary, Problem | None]:
    if not os.path.lexists(path):
        return CacheSummary(path, False, None, FORMAT), None

    def query(db: sqlite3.Connection) -> tuple[str | None, tuple[Counts, ...]]:
        tables = _tables(db)
        fmt = None
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            fmt = None if row is None else str(row[0])
        if "files" not in tables:
            return fmt, ()
        columns = {r[1] for r in db.execute("PRAGMA table_info(files)")}
        # A cache before the scope column holds the local file systems only.
        scope = "scope" if "scope" in columns else "''"
        rows = db.execute(
            f"SELECT {scope}, count(*), sum((flags & 1) != 0), sum((flags & 3) = 3), "
            f"count(DISTINCT dir) FROM files GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return fmt, tuple(
            Counts(_text(s), int(n), int(pe or 0), int(signed or 0), int(dirs))
            for s, n, pe, signed, dirs in rows
        )

    try:
        fmt, scopes = _read(path, query)
    except (OSError, sqlite3.Error) as exc:
        advice = (
            "the next scan sets it aside and starts a new one; or run rmmscan state --clear-cache"
        )
        problem = _db_problem(path, exc, directory, advice)
        return CacheSummary(path, True, None, FORMAT, readable=False), problem
    return CacheSummary(path, True, fmt, FORMAT, scopes), None


def _text(value) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def _db_problem(path: Path, exc: BaseException, directory: Path, damaged_advice: str) -> Problem:
    code = error_code(exc)
    if is_damage(exc):
        return Problem(path, "damaged", describe(exc), damaged_advice)
    if code in _LOCKED:
        return Problem(path, LOCKED, describe(exc), "try again when the scan ends")
    if code == sqlite3.SQLITE_READONLY:  # a hot journal, which only a writer rolls back
        return Problem(path, "needs recovery", describe(exc), "the next scan recovers it")
    if code == sqlite3.SQLITE_ERROR:  # tables of another shape: cache.py sets it aside too
        return Problem(path, "of an unknown shape", describe(exc), damaged_advice)
    return _unreadable(path, exc, directory)


def _unreadable(path: Path, exc: BaseException, directory: Path) -> Problem:
    return Problem(
        path, "cannot be read", describe(exc), ADVICE_ACCESS.format(dir=shown(directory))
    )


# -- clearing ------------------------------------------------------------------------------------


def cache_files(directory: Path) -> tuple[Path, ...]:
    """The cache database, its WAL files, and the damaged copies cache.py set aside."""
    base = directory / CACHE_DB
    return tuple(Path(f"{base}{aside}{s}") for aside in ("", ASIDE) for s in SUFFIXES)


def _size(paths) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.lstat(path).st_size
    return total


def clear_cache(directory: Path) -> Cleared:
    """Empty the scan cache at `directory`; the device id and ReportId counter stay.

    Raises StateError when the cache is locked by a running scan (after BUSY_TIMEOUT) or
    cannot be written or removed by this user. Safe while no scan runs.
    """
    directory = Path(os.path.abspath(directory))
    path = directory / CACHE_DB
    files = cache_files(directory)
    before = _size(files)
    entries: int | None = 0
    damage = None
    removed: list[str] = []
    if os.path.lexists(path):
        try:
            entries = _empty(path)
        except sqlite3.Error as exc:
            if not is_damage(exc):
                raise StateError(_clear_problem(path, exc, directory)) from None
            entries, damage = None, describe(exc)
            removed += _remove(directory, files[: len(SUFFIXES)])
    removed += _remove(directory, files[len(SUFFIXES) :])
    return Cleared(path, entries, max(0, before - _size(files)), damage, tuple(removed))


def _empty(path: Path) -> int:
    """Delete every row of `files` in one transaction, then give the space back."""
    uri = f"{path.absolute().as_uri()}?mode=rw"  # rw, not rwc: never creates a database
    db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            n = 0
            if "files" in _tables(db):
                n = db.execute("SELECT count(*) FROM files").fetchone()[0]
                db.execute("DELETE FROM files")
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have ended the transaction itself on the error
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise
        # The deleted rows' pages stay in the file until a VACUUM; the WAL it writes is
        # truncated afterwards. Either failing (a scan started meanwhile) loses nothing: the
        # rows are gone, and the next scan reuses the free pages.
        try:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise
        return n
    finally:
        db.close()


def _remove(directory: Path, paths) -> list[str]:
    removed = []
    for path in paths:
        if not os.path.lexists(path):
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StateError(
                Problem(
                    path, "cannot be removed", describe(exc),
                    ADVICE_ACCESS.format(dir=shown(directory)),
                )
            ) from None  # fmt: skip
        removed.append(path.name)
    return removed


def _clear_problem(path: Path, exc: sqlite3.Error, directory: Path) -> Problem:
    if error_code(exc) in _LOCKED:
        return Problem(path, LOCKED, describe(exc), "try again when the scan ends")
    return Problem(
        path, "cannot be cleared", describe(exc), ADVICE_ACCESS.format(dir=shown(directory))
    )
