"""`rmmscan state` on real state directories made by real `rmmscan scan` runs of samples/.

Every number the command shows is checked against an independent count: the files under
samples/ counted with os.walk, the PE and signed PE files from samples/manifest.json (the
sample generator's own record), the cache's rows and the ReportId counter read with SQLite
queries written here, and the DeviceId, DeviceName and ReportIds from the scan's own rows.
Showing must leave the directory as it was (names, sizes and times); clearing must make the
next scan read every file again while ReportIds go on increasing; damaged, locked and
unreadable databases are reported on one line each, never with a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from sweeptree import NOBODY, expected_rows

from rmmscan.sources.device import machine_id
from rmmscan.state.cache import FORMAT
from rmmscan.text import printable

from conftest import PE_DIR, SAMPLES, TEST_ROOT

TIMEOUT = 120  # a run that waits on a lock instead of giving up fails here, not hangs
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


# -- running rmmscan -----------------------------------------------------------------------------


def rmmscan(*args, env=None, prefix=()) -> subprocess.CompletedProcess:
    cmd = [*prefix, sys.executable, "-m", "rmmscan", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)


@dataclass
class Scanned:
    rows: list[dict]
    stderr: str
    walked: int
    cached: int


def scan(state_dir: Path, prefix=()) -> Scanned:
    """Every PE's rows (--emit all), so each ReportId the counter gave out is seen."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", encoding="utf-8") as out:
        done = rmmscan(
            "scan", SAMPLES, "--state-dir", state_dir, "--trusted-roots", TEST_ROOT,
            "--no-system-roots", "--emit", "all", "--format", "jsonl", "-o", out.name,
            prefix=prefix,
        )  # fmt: skip
        rows = [json.loads(line) for line in out]
    assert done.returncode == 1, done.stderr  # samples/ holds DWSNET-signed files
    assert "Traceback" not in done.stderr
    walked = re.search(r"files walked: ([\d,]+)", done.stderr)
    cached = re.search(r"from the cache: ([\d,]+)", done.stderr)
    assert walked and cached, done.stderr
    number = lambda m: int(m.group(1).replace(",", ""))  # noqa: E731
    return Scanned(rows, done.stderr, number(walked), number(cached))


def state(state_dir: Path | None, *args, env=None, prefix=()) -> subprocess.CompletedProcess:
    where = () if state_dir is None else ("--state-dir", state_dir)
    done = rmmscan("state", *where, *args, env=env, prefix=prefix)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def state_json(state_dir: Path, *args, prefix=()) -> tuple[dict, subprocess.CompletedProcess]:
    done = state(state_dir, "--format", "json", *args, prefix=prefix)
    return json.loads(done.stdout), done


# -- what the state must show, counted without rmmscan -------------------------------------------


@dataclass(frozen=True)
class Oracle:
    files: int
    pe_files: int
    signed_pe_files: int
    directories: int


def oracle() -> Oracle:
    files, directories = 0, 0
    for root, _dirs, names in os.walk(SAMPLES):
        regular = [n for n in names if os.path.isfile(os.path.join(root, n))]
        regular = [n for n in regular if not os.path.islink(os.path.join(root, n))]
        files += len(regular)
        directories += bool(regular)
        if Path(root) != PE_DIR:
            for name in regular:  # PE files are in samples/pe only
                with open(os.path.join(root, name), "rb") as f:
                    assert f.read(2) != b"MZ", name
    manifest = json.loads((SAMPLES / "manifest.json").read_text("utf-8"))["files"]
    assert sorted(manifest) == sorted(os.listdir(PE_DIR))
    pe = [name for name, entry in manifest.items() if entry["is_pe"]]
    signed = [name for name in pe if expected_rows(name)[0]["IsSigned"]]
    return Oracle(files, len(pe), len(signed), directories)


def cache_rows(state_dir: Path) -> int:
    """Closed at once: an open connection keeps the cache's -wal and -shm files."""
    db = sqlite3.connect(state_dir / "cache.sqlite")
    try:
        return db.execute("SELECT count(*) FROM files").fetchone()[0]
    finally:
        db.close()


def counter(state_dir: Path) -> int:
    db = sqlite3.connect(state_dir / "state.sqlite")
    try:
        return db.execute("SELECT value FROM counter WHERE name = 'report_id'").fetchone()[0]
    finally:
        db.close()


def snapshot(directory: Path) -> dict:
    return {
        e.name: (e.stat().st_size, e.stat().st_mtime_ns, e.stat().st_ino)
        for e in os.scandir(directory)
    }


def copy(warm: Path, where: Path) -> Path:
    shutil.copytree(warm, where)
    return where


def one_error(stderr: str, path: Path, what: str) -> None:
    """One line, in the CLI's error form: rmmscan: <path>: <what is wrong>: <what to do>."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"rmmscan: {path}: {what} ("), stderr
    assert "): " in lines[0], stderr


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def counted() -> Oracle:
    return oracle()


@pytest.fixture(scope="module")
def warm(tmp_path_factory) -> tuple[Path, Scanned]:
    """A state directory after one scan of samples/ (copied by the tests that change it)."""
    directory = tmp_path_factory.mktemp("warm") / "state"
    return directory, scan(directory)


@pytest.fixture
def world():
    """World-readable, for the unprivileged runs (pytest's tmp dirs are private)."""
    base = Path(tempfile.mkdtemp(prefix="rmmscan-state-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


# -- showing -------------------------------------------------------------------------------------


def test_shows_a_scanned_state_as_text_and_json(warm, counted):
    directory, scanned = warm
    before = snapshot(directory)
    data, done = state_json(directory)
    text = state(directory)
    assert done.returncode == 0 and text.returncode == 0, (done.stderr, text.stderr)
    assert done.stderr == text.stderr == ""
    assert snapshot(directory) == before  # nothing created, changed or removed
    # in particular no WAL files: SQLite's read-only mode would leave them behind
    assert not {"cache.sqlite-wal", "cache.sqlite-shm"} & before.keys()

    # the files, with the sizes the OS gives
    sizes = {name: os.lstat(directory / name).st_size for name in os.listdir(directory)}
    assert {"state.sqlite", "cache.sqlite", "trust-names.json"} <= sizes.keys()
    assert data["directory"] == str(directory)
    assert (data["exists"], data["readable"], data["writable"]) == (True, True, True)
    assert data["files"] == [
        {"name": name, "size": size, "kind": "file"} for name, size in sorted(sizes.items())
    ]
    assert data["total_bytes"] == sum(sizes.values())

    # the identity and the ReportIds the scan's rows carry
    assert {r["DeviceId"] for r in scanned.rows} == {data["device_id"]}
    assert {r["DeviceName"] for r in scanned.rows} == {data["device_name"]}
    assert data["device_id_source"] == ("machine-id" if machine_id() else "state")
    last = max(r["ReportId"] for r in scanned.rows)
    assert last == counter(directory)
    assert data["next_report_id"] == last + 1

    # the cache: the samples counted apart, and SQLite asked directly
    cache = data["cache"]
    assert (cache["exists"], cache["readable"]) == (True, True)
    assert cache["format"] == cache["current_format"] == FORMAT
    assert cache_rows(directory) == counted.files == scanned.walked
    expected = {
        "files": counted.files,
        "pe_files": counted.pe_files,
        "signed_pe_files": counted.signed_pe_files,
        "directories": counted.directories,
    }
    assert {k: cache[k] for k in expected} == expected
    assert cache["scopes"] == [{"scope": "", **expected}]
    assert data["problems"] == []

    # the text says the same
    out = text.stdout
    assert out.startswith(f"state directory  {directory}\n")
    for name, size in sizes.items():
        assert re.search(rf"^  {re.escape(name)} +{size:,} bytes", out, re.M), out
    assert re.search(rf"^  total +{sum(sizes.values()):,} bytes", out, re.M), out
    source = "from the OS machine id" if machine_id() else "kept in state.sqlite"
    assert f"\nDeviceId         {data['device_id']} ({source}" in out
    assert f"\nDeviceName       {data['device_name']}\n" in out
    assert f"\nnext ReportId    {last + 1}\n" in out
    assert f"\nscan cache       format {FORMAT}\n" in out
    line = re.search(r"^  local file systems +([\d,]+) +([\d,]+) +([\d,]+) +([\d,]+)$", out, re.M)
    assert line, out
    assert tuple(int(n.replace(",", "")) for n in line.groups()) == tuple(expected.values())


def test_no_state_yet_is_said_and_nothing_is_created(tmp_path):
    absent = tmp_path / "nothing" / "here"
    done = state(absent)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"no state yet at {absent}: a scan creates it\n"
    data, done = state_json(absent)
    assert done.returncode == 0
    assert (data["exists"], data["files"], data["total_bytes"]) == (False, [], 0)
    assert data["next_report_id"] == 1
    assert data["cache"]["exists"] is False
    cleared = state(absent, "--clear-cache")
    assert (cleared.returncode, cleared.stderr) == (0, "")
    assert cleared.stdout == f"no state yet at {absent}: a scan creates it\n"
    assert not (tmp_path / "nothing").exists()


def test_the_directory_is_found_as_a_scan_finds_it(warm, tmp_path):
    directory, _ = warm
    env = dict(os.environ, RMMSCAN_STATE_DIR=str(directory))
    done = state(None, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["directory"] == str(directory)
    other = tmp_path / "other"
    done = state(other, env=env)  # --state-dir before $RMMSCAN_STATE_DIR
    assert done.stdout == f"no state yet at {other}: a scan creates it\n"


def columns(db: sqlite3.Connection) -> list[str]:
    return [r[1] for r in db.execute("PRAGMA table_info(files)")]


def test_a_cache_of_an_old_format_without_scopes(warm, tmp_path, counted):
    """A cache from before the scope column (format 5 here, which no rmmscan writes now): its
    rows are the local file systems', and the next scan empties it."""
    directory = copy(warm[0], tmp_path / "state")
    db = sqlite3.connect(directory / "cache.sqlite")
    with db:
        kept = ", ".join(c for c in columns(db) if c != "scope")
        db.execute(f"CREATE TABLE old AS SELECT {kept} FROM files")
        db.execute("DROP TABLE files")
        db.execute("ALTER TABLE old RENAME TO files")
        db.execute("UPDATE meta SET value = '5' WHERE key = 'format'")
    db.close()
    data, done = state_json(directory)
    assert done.returncode == 0, done.stderr
    cache = data["cache"]
    assert (cache["format"], cache["current_format"]) == ("5", FORMAT)
    expected = {
        "files": counted.files,
        "pe_files": counted.pe_files,
        "signed_pe_files": counted.signed_pe_files,
        "directories": counted.directories,
    }
    assert cache["scopes"] == [{"scope": "", **expected}]
    out = state(directory).stdout
    assert (
        f"\nscan cache       format 5 (this rmmscan writes {FORMAT}: the next scan empties it)\n"
        in out
    )


def test_an_image_is_counted_apart(warm, tmp_path, counted):
    """Rows of an offline image (another scope; its name attacker-chosen) beside the local
    ones: each scope is counted, and all of them together."""
    directory = copy(warm[0], tmp_path / "state")
    scope = "img\x1b]0;x\x07"
    db = sqlite3.connect(directory / "cache.sqlite")
    with db:
        names = columns(db)
        if "scope" not in names:  # a cache from before the column: added as cache.py has it
            db.execute("ALTER TABLE files ADD COLUMN scope TEXT NOT NULL DEFAULT ''")
            names.append("scope")
        # the PE files again, under a directory of the image's (so no key is taken twice)
        picked = ["?" if c == "scope" else "'/image' || dir" if c == "dir" else c for c in names]
        db.execute(
            f"INSERT INTO files ({', '.join(names)}) SELECT {', '.join(picked)} FROM files "
            "WHERE flags & 1",
            (scope,),
        )
    db.close()
    data, done = state_json(directory)
    assert done.returncode == 0, done.stderr
    local = [counted.files, counted.pe_files, counted.signed_pe_files, counted.directories]
    image = [counted.pe_files, counted.pe_files, counted.signed_pe_files, 1]  # samples/pe
    keys = ("files", "pe_files", "signed_pe_files", "directories")
    assert data["cache"]["scopes"] == [
        {"scope": "", **dict(zip(keys, local, strict=True))},
        {"scope": printable(scope), **dict(zip(keys, image, strict=True))},
    ]
    total = [a + b for a, b in zip(local, image, strict=True)]
    assert {k: data["cache"][k] for k in keys} == dict(zip(keys, total, strict=True))
    out = state(directory).stdout
    assert "\x1b" not in out and "\x07" not in out
    for name, numbers in (
        ("local file systems", local),
        (f"image {printable(scope)}", image),
        ("all", total),
    ):
        cells = " +".join(f"{n:,}" for n in numbers)
        assert re.search(rf"^  {re.escape(name)} +{cells}$", out, re.M), out


def test_names_are_printable(world, counted):
    """An attacker-chosen name in the path or in the directory never reaches the terminal raw."""
    directory = world / "st\x1b[31mate\nx"
    scan(directory)
    (directory / "evil\x1b]0;owned\x07.txt").write_text("x")
    done = state(directory)
    assert done.returncode == 0, done.stderr
    for raw in ("\x1b", "\x07"):
        assert raw not in done.stdout
    assert f"state directory  {printable(str(directory))}\n" in done.stdout
    assert printable("evil\x1b]0;owned\x07.txt") in done.stdout
    data, _ = state_json(directory)
    assert data["directory"] == printable(str(directory))
    assert printable("evil\x1b]0;owned\x07.txt") in [f["name"] for f in data["files"]]
    assert data["cache"]["files"] == counted.files


# -- clearing ------------------------------------------------------------------------------------


def test_clear_cache_then_a_scan_reads_every_file(tmp_path, counted):
    directory = tmp_path / "state"
    first = scan(directory)
    second = scan(directory)
    assert second.cached == counted.files  # the cache is used, so a 0 below means something
    state_before = (directory / "state.sqlite").read_bytes()
    files = ("cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm")
    size = lambda: sum(  # noqa: E731
        os.lstat(directory / n).st_size for n in files if (directory / n).exists()
    )
    before = size()
    done = state(directory, "--clear-cache")
    assert (done.returncode, done.stderr) == (0, "")
    freed = before - size()
    assert freed > 0
    assert done.stdout.startswith(
        f"scan cache {directory / 'cache.sqlite'} cleared: {counted.files} entries removed, "
        f"{freed:,} bytes"
    ), done.stdout
    assert "the device id and the ReportId counter are kept" in done.stdout
    assert cache_rows(directory) == 0
    # state.sqlite (device id, counter) is not touched: not a byte
    assert (directory / "state.sqlite").read_bytes() == state_before
    data, again = state_json(directory, "--clear-cache")
    assert again.returncode == 0
    assert (data["entries_removed"], data["bytes_freed"], data["damaged"]) == (0, 0, None)
    shown, _ = state_json(directory)
    assert shown["cache"]["files"] == 0 and shown["cache"]["scopes"] == []

    third = scan(directory)
    assert third.cached == 0 and third.walked == counted.files
    ids = [sorted(r["ReportId"] for r in s.rows) for s in (first, second, third)]
    assert ids[0][-1] < ids[1][0] and ids[1][-1] < ids[2][0]
    assert len({r["DeviceId"] for s in (first, second, third) for r in s.rows}) == 1
    assert cache_rows(directory) == counted.files


def test_a_damaged_cache_is_reported_and_clear_cache_recovers(warm, tmp_path, counted):
    directory = copy(warm[0], tmp_path / "state")
    cache = directory / "cache.sqlite"
    size = cache.stat().st_size
    cache.write_bytes(b"this is not a database, " * (size // 24))
    junk = cache.stat().st_size
    aside = directory / "cache.sqlite.broken"
    aside.write_bytes(b"\0" * 1000)  # as cache.py leaves a damaged cache it set aside
    data, done = state_json(directory)
    assert done.returncode == 2
    one_error(done.stderr, cache, "damaged")
    assert "--clear-cache" in done.stderr
    assert data["cache"]["readable"] is False and data["cache"]["files"] is None
    assert [p["what"] for p in data["problems"]] == ["damaged"]
    assert data["next_report_id"] == counter(directory) + 1  # the rest is still shown
    text = state(directory)
    assert text.returncode == 2
    assert "\nscan cache       damaged (file is not a database)\n" in text.stdout

    done = state(directory, "--clear-cache")
    assert (done.returncode, done.stderr) == (0, "")
    removed = f"was damaged (file is not a database) and is removed, {junk + 1000:,} bytes"
    assert removed in done.stdout, (done.stdout, sorted(os.listdir(directory)))
    assert "cache.sqlite.broken" in done.stdout
    assert not cache.exists() and not aside.exists()
    data, done = state_json(directory)
    assert done.returncode == 0 and data["cache"]["exists"] is False
    again = scan(directory)
    assert again.cached == 0 and "unusable" not in again.stderr
    assert cache_rows(directory) == counted.files


def test_a_damaged_state_database_is_reported_and_left_alone(warm, tmp_path, counted):
    directory = copy(warm[0], tmp_path / "state")
    junk = os.urandom(4096)
    (directory / "state.sqlite").write_bytes(junk)
    data, done = state_json(directory)
    assert done.returncode == 2
    one_error(done.stderr, directory / "state.sqlite", "damaged")
    assert "move it aside" in done.stderr
    assert data["next_report_id"] is None
    assert data["cache"]["files"] == counted.files  # what can be read is still shown
    assert "\nnext ReportId    unknown (state.sqlite damaged)\n" in state(directory).stdout
    cleared = state(directory, "--clear-cache")
    assert cleared.returncode == 0, cleared.stderr
    assert (directory / "state.sqlite").read_bytes() == junk


def test_a_locked_cache_is_not_waited_for(warm, tmp_path, counted):
    """A scan holding the cache's write lock: --clear-cache gives up with exit 2 (the run's
    timeout fails the test if it waits instead); showing still reads (WAL readers)."""
    directory = copy(warm[0], tmp_path / "state")
    holder = sqlite3.connect(directory / "cache.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("DELETE FROM files WHERE flags = 0")  # uncommitted: never seen
        done = state(directory, "--clear-cache")
        assert done.returncode == 2 and done.stdout == ""
        one_error(done.stderr, directory / "cache.sqlite", "locked by a running scan")
        data, shown = state_json(directory)
        assert shown.returncode == 0, shown.stderr
        assert data["cache"]["files"] == counted.files
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert cache_rows(directory) == counted.files


def test_a_locked_state_database_is_said(warm, tmp_path):
    directory = copy(warm[0], tmp_path / "state")
    holder = sqlite3.connect(directory / "state.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # a writer in the middle of its commit
        data, done = state_json(directory)
        assert done.returncode == 2
        one_error(done.stderr, directory / "state.sqlite", "locked by a running scan")
        assert data["next_report_id"] is None
    finally:
        holder.close()
    assert state(directory).returncode == 0


# -- another user, another machine ---------------------------------------------------------------

AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


def test_state_this_user_cannot_read(warm, world):
    directory = copy(warm[0], world / "state")
    directory.chmod(0o700)  # root's, as /var/lib/rmmscan is
    done = state(directory, prefix=AS_NOBODY)
    assert done.returncode == 2
    one_error(done.stderr, directory, "cannot be read")
    assert done.stderr.rstrip().endswith(
        f"run as the owner of {directory}, or pass --state-dir DIR"
    )
    assert f"state directory  {directory}\n  (cannot be read)\n" in done.stdout

    directory.chmod(0o755)
    (directory / "cache.sqlite").chmod(0o600)  # the counter is readable, the cache is not
    data, done = state_json(directory, prefix=AS_NOBODY)
    assert done.returncode == 2
    one_error(done.stderr, directory / "cache.sqlite", "cannot be read")
    assert data["writable"] is False
    assert data["next_report_id"] == counter(directory) + 1
    cleared = state(directory, "--clear-cache", prefix=AS_NOBODY)
    assert cleared.returncode == 2
    one_error(cleared.stderr, directory / "cache.sqlite", "cannot be cleared")
    assert cache_rows(directory) > 0


def test_a_device_id_kept_in_the_state(world):
    """Where the OS has no machine id (hidden here in a private mount namespace), the id is
    the one the first scan kept in state.sqlite; before any scan, there is none yet."""
    hide = " ".join(
        f"[ ! -e {f} ] || mount --bind /dev/null {f} || exit 99;" for f in MACHINE_ID_FILES
    )
    prefix = ("unshare", "--mount", "sh", "-c", f'{hide} exec "$@"', "sh")
    directory = world / "state"
    data, done = state_json(directory, prefix=prefix)
    assert done.returncode == 0, done.stderr
    assert (data["device_id"], data["device_id_source"]) == (None, "new")
    assert not directory.exists()
    scanned = scan(directory, prefix=prefix)
    kept = sqlite3.connect(directory / "state.sqlite")
    stored = kept.execute("SELECT value FROM meta WHERE key = 'device_id'").fetchone()[0]
    kept.close()
    assert {r["DeviceId"] for r in scanned.rows} == {stored}
    data, done = state_json(directory, prefix=prefix)
    assert (data["device_id"], data["device_id_source"]) == (stored, "state")
    out = state(directory, prefix=prefix).stdout
    assert f"DeviceId         {stored} (kept in state.sqlite: this OS has no machine id)" in out
    assert state(directory, "--clear-cache", prefix=prefix).returncode == 0
    assert state_json(directory, prefix=prefix)[0]["device_id"] == stored
