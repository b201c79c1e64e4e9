"""Faults in the state directory, injected for real: rows, names, records, keys and flags of a
warm scan cache changed in place with SQLite (and forged with their CRC-32 recomputed, as a
buggy writer would leave them), random 100-byte writes into the database's pages, a damaged
state.sqlite, and state that the scanning user (nobody, through setpriv) cannot write.

Whatever the fault, a sweep gives the rows (but Timestamp and ReportId) and the exit status of
a `--no-cache` sweep of the same tree, never counts a file as failed, and never shows a
traceback; the faults it can see are one warning each. Every case runs with --jobs 1 and with
the default jobs (sweep processes).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest
from sweeptree import NOBODY, Scan, Tree, scan, scan_command, scan_many, stable_set

from rmmscan.state.cache import record_sum, row_sum

EMIT = ("--emit", "signed", "--format", "jsonl")  # records read back, and quiet PEs judged
JOBS = {"jobs=1": ("-j", "1"), "default-jobs": ()}
SAMPLES = ("dwsnet-ou.exe", "dwsnet-srl.exe", "benign.exe", "unsigned.exe",
           "nested-depth3.exe", "dwagent-lookalike-unsigned.exe", "not-a-pe.bin")  # fmt: skip


@pytest.fixture(scope="module")
def world():
    """World-readable: the unprivileged runs read the tree (pytest's tmp dirs are private)."""
    base = Path(tempfile.mkdtemp(prefix="rmmscan-faults-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def tree(world) -> Tree:
    """Enough files that the cache spans dozens of pages."""
    tree = Tree(world / "tree")
    for i in range(24):
        for j, sample in enumerate(SAMPLES):
            if (i + j) % 3 == 0 or sample.startswith("dwsnet"):
                tree.put(f"d{i:02}/f{j}.exe", sample)
    tree.put(os.path.join(b"caf\xe9", b"out.exe"), "dwsnet-ou-sha1.exe")
    for root, dirs, files in os.walk(tree.root):
        for name in dirs + files:
            os.chmod(os.path.join(root, name), 0o755 if name in dirs else 0o644)
    return tree


@pytest.fixture(scope="module")
def baseline(tree, world) -> Scan:
    done = scan(*EMIT, "--no-cache", tree.root, state_dir=world / "baseline")
    assert done.returncode == 1, done
    assert not (world / "baseline" / "cache.sqlite").exists()
    return done


@pytest.fixture(scope="module")
def warm(tree, world, baseline) -> Path:
    """A state directory whose cache holds every file, checkpointed into the main file."""
    state = world / "warm"
    done = scan(*EMIT, tree.root, state_dir=state)
    assert stable_set(done.rows) == stable_set(baseline.rows)
    db = sqlite3.connect(state / "cache.sqlite")
    assert db.execute("SELECT count(*) FROM files").fetchone()[0] > 80
    db.close()  # the last connection: the WAL goes into the file, and is removed
    assert not (state / "cache.sqlite-wal").exists()
    return state


def like_baseline(done: Scan, baseline: Scan) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == baseline.returncode, done
    assert stable_set(done.rows) == stable_set(baseline.rows), done
    assert "failed" not in done.summary, done.stderr


def copy_state(warm: Path, to: Path) -> Path:
    shutil.copytree(warm, to)
    return to / "cache.sqlite"


# -- rows changed in place ---------------------------------------------------------------------


def _detection_row(db, tree: Tree) -> tuple:
    """(dir, name) of a DWSNET-signed file's row, one the sweep needs the record of."""
    folder = str(tree.root / "d05")
    return db.execute(
        "SELECT dir, name FROM files WHERE dir = ? AND flags & 1 AND record IS NOT NULL "
        "AND name = 'f0.exe'",
        (folder,),
    ).fetchone()


def _quiet_row(db, tree: Tree) -> tuple:
    """(dir, name) of an unsigned PE: judged quiet, its record never read on a rescan."""
    return db.execute(
        "SELECT dir, name FROM files WHERE dir = ? AND judged IS NOT NULL",
        (str(tree.root / "d00"),),
    ).fetchone()


def _forge(db, where: tuple, as_if: dict | None = None, **values) -> None:
    """Set values and recompute the row's CRC-32s, as a writer with a bug would leave them:
    the sums agree with the values (or, for a value of the wrong type, with `as_if`)."""
    columns = ("dir", "name", "key", "record", "judged", "flags")
    row = dict(zip(columns, db.execute(
        "SELECT dir, name, key, record, judged, flags FROM files WHERE dir = ? AND name = ?",
        where,
    ).fetchone(), strict=True))  # fmt: skip
    summed = {**row, **values, **(as_if or {})}
    rsum = record_sum(summed["record"])
    total = row_sum(summed["dir"], summed["name"], summed["key"], summed["judged"],
                    summed["flags"], rsum)  # fmt: skip
    sets = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE files SET {sets}, rsum = ?, sum = ? WHERE dir = ? AND name = ?",
               (*values.values(), rsum, total, *where))  # fmt: skip
    stored = db.execute(f"SELECT {', '.join(values)} FROM files WHERE dir = ? AND name = ?",
                        where).fetchone()  # fmt: skip
    assert stored == tuple(values.values()), "stored as given (no type affinity conversion)"


def _edit(record: str, change) -> str:
    data = json.loads(record)
    change(data)
    return json.dumps(data)


def _damage_in_place(db, tree, case: str) -> None:
    hit = _detection_row(db, tree)
    quiet = _quiet_row(db, tree)
    assert hit and quiet
    update = "UPDATE files SET {} WHERE dir = ? AND name = ?"
    record = db.execute("SELECT record FROM files WHERE dir = ? AND name = ?", hit).fetchone()[0]
    if case == "name-not-utf8":
        db.execute(update.format("name = CAST(x'66305fff2e657865' AS TEXT)"), hit)
    elif case == "name-integer":
        db.execute(update.format("name = 42"), hit)
    elif case == "record-bad-json":
        db.execute(update.format("record = substr(record, 1, 40)"), hit)
    elif case == "key-short":
        db.execute(update.format("key = x'00'"), hit)
    elif case == "key-text":
        db.execute(update.format("key = 'abc'"), hit)
    elif case == "flags-not-a-pe":  # one cleared bit would hide the detection
        db.execute(update.format("flags = 0"), hit)
    elif case == "flags-text":
        db.execute(update.format("flags = 'x'"), quiet)
    elif case == "quiet-flags-cleared":
        db.execute(update.format("flags = 0"), quiet)
    elif case == "judged-changed":
        db.execute(update.format("judged = 'x' || judged"), quiet)
    elif case == "forged-record-not-a-dict":
        _forge(db, hit, record="[1, 2, 3]")
    elif case == "forged-record-no-sig":
        _forge(db, hit, record=_edit(record, lambda r: r.update(sig=[])))
    elif case == "forged-record-missing-column":
        _forge(db, hit, record=_edit(record, lambda r: r["sig"][0].pop("Signer")))
    elif case == "forged-record-wrong-type":
        _forge(db, hit, record=_edit(record, lambda r: r["sig"][0].update(IsSigned="yes")))
    elif case == "forged-record-signer-number":
        _forge(db, hit, record=_edit(record, lambda r: r["sig"][0].update(Signer=7)))
    elif case == "forged-record-bad-hash":
        _forge(db, hit, record=_edit(record, lambda r: r["hash"].update(SHA1="zz")))
    elif case == "forged-record-verdicts-short":
        _forge(db, hit, record=_edit(record, lambda r: r.update(verdict=[])))
    elif case == "forged-record-extra-group":
        _forge(db, hit, record=_edit(record, lambda r: r.update(extra=1)))
    elif case == "forged-flags-out-of-range":
        _forge(db, hit, flags=9)
    elif case == "forged-flags-text":
        _forge(db, hit, as_if={"flags": 3}, flags="three")
    elif case == "forged-key-blob-long":
        _forge(db, hit, key=b"\0" * 41)
    elif case == "forged-judged-blob":
        judged = db.execute("SELECT judged FROM files WHERE dir = ? AND name = ?", quiet)
        _forge(db, quiet, as_if={"judged": judged.fetchone()[0]}, judged=b"\x00\xff")
    else:
        raise AssertionError(case)


IN_PLACE = (
    "name-not-utf8", "name-integer", "record-bad-json", "key-short", "key-text",
    "flags-not-a-pe", "flags-text", "quiet-flags-cleared", "judged-changed",
    "forged-record-not-a-dict", "forged-record-no-sig", "forged-record-missing-column",
    "forged-record-wrong-type", "forged-record-signer-number", "forged-record-bad-hash",
    "forged-record-verdicts-short", "forged-record-extra-group", "forged-flags-out-of-range",
    "forged-flags-text", "forged-key-blob-long", "forged-judged-blob",
)  # fmt: skip


@pytest.fixture(scope="module")
def in_place_runs(tree, world, warm):
    jobs = {}
    for case in IN_PLACE:
        for label, flag in JOBS.items():
            path = copy_state(warm, world / f"in-place-{case}-{label}")
            db = sqlite3.connect(path)
            _damage_in_place(db, tree, case)
            db.commit()
            db.close()
            jobs[(case, label)] = dict(args=[*flag, *EMIT, tree.root], state_dir=path.parent)
    return scan_many(jobs, timeout=300)


@pytest.mark.parametrize("label", JOBS)
@pytest.mark.parametrize("case", IN_PLACE)
def test_a_damaged_or_forged_row_is_read_again(case, label, in_place_runs, baseline, world):
    done = in_place_runs[(case, label)]
    like_baseline(done, baseline)
    assert "scan cache" not in done.stderr, done.stderr  # a bad row is no news
    assert done.summary["from the cache"] < baseline.summary["files walked"]
    # and the file's row is rewritten: the next sweep takes everything from the cache
    again = scan(*JOBS[label], *EMIT, baseline_root(baseline), state_dir=world /
                 f"in-place-{case}-{label}")  # fmt: skip
    like_baseline(again, baseline)
    assert again.summary["from the cache"] == baseline.summary["files walked"], again.stderr


def baseline_root(baseline: Scan) -> str:
    return baseline.args[-1]


# -- random writes into the database's pages ------------------------------------------------------

SEEDS = range(8)


def _scribble(path: Path, seed: int) -> tuple[int, int]:
    """100 random bytes at a random place of a page past the first (seed 0: into the first)."""
    rng = random.Random(seed)
    size = path.stat().st_size
    page = 4096
    start = rng.randrange(0, page - 100) if seed == 0 else rng.randrange(page, size - 100)
    with open(path, "r+b") as f:
        f.seek(start)
        f.write(rng.randbytes(100))
    return start, size


@pytest.fixture(scope="module")
def scribbled_runs(tree, world, warm):
    jobs = {}
    for seed in SEEDS:
        for label, flag in JOBS.items():
            path = copy_state(warm, world / f"scribbled-{seed}-{label}")
            _scribble(path, seed)
            jobs[(seed, label)] = dict(args=[*flag, *EMIT, tree.root], state_dir=path.parent)
    return scan_many(jobs, timeout=300)


@pytest.mark.parametrize("label", JOBS)
@pytest.mark.parametrize("seed", SEEDS)
def test_random_writes_into_the_cache_lose_nothing(seed, label, scribbled_runs, baseline, world):
    done = scribbled_runs[(seed, label)]
    like_baseline(done, baseline)
    warnings = [line for line in done.stderr.splitlines() if "scan cache" in line]
    assert len(warnings) <= 1, done.stderr
    state = world / f"scribbled-{seed}-{label}"
    if warnings:  # SQLite saw the damage: set aside once, and the next sweep rebuilds
        assert (state / "cache.sqlite.broken").exists(), done.stderr
    again = scan(*JOBS[label], *EMIT, baseline_root(baseline), state_dir=state)
    like_baseline(again, baseline)
    assert "scan cache" not in again.stderr, again.stderr


@pytest.mark.parametrize("label", JOBS)
def test_a_page_damaged_mid_sweep_is_set_aside_once(label, tree, world, warm, baseline):
    """The header and the schema are fine; a leaf of the files table is not: SQLite says
    'malformed' on the lookup of some directory, in the middle of the sweep."""
    path = copy_state(warm, world / f"malformed-{label}")
    db = sqlite3.connect(path)
    leaves = [n for (n,) in db.execute(
        "SELECT pageno FROM dbstat WHERE name = 'files' AND pagetype = 'leaf' ORDER BY 1"
    )]  # fmt: skip
    db.close()
    assert len(leaves) > 10
    with open(path, "r+b") as f:
        for page in leaves[1::2]:  # half of them: some directories are still found
            f.seek((page - 1) * 4096 + 1)  # the page header, past its type
            f.write(b"\xff" * 64)
    done = scan(*JOBS[label], *EMIT, tree.root, state_dir=path.parent)
    like_baseline(done, baseline)
    warnings = [line for line in done.stderr.splitlines() if "scan cache" in line]
    assert len(warnings) == 1, done.stderr
    assert "malformed" in warnings[0] and "cache.sqlite.broken" in warnings[0], done.stderr
    assert (path.parent / "cache.sqlite.broken").exists()
    again = scan(*JOBS[label], *EMIT, tree.root, state_dir=path.parent)
    like_baseline(again, baseline)
    assert "scan cache" not in again.stderr
    third = scan(*JOBS[label], *EMIT, tree.root, state_dir=path.parent)
    like_baseline(third, baseline)
    assert third.summary["from the cache"] == baseline.summary["files walked"]


@pytest.mark.parametrize("label", JOBS)
def test_a_cache_that_is_not_a_database_is_set_aside(label, tree, world, baseline):
    state = world / f"garbage-{label}"
    state.mkdir()
    (state / "cache.sqlite").write_bytes(random.Random(1).randbytes(64 * 1024))
    done = scan(*JOBS[label], *EMIT, tree.root, state_dir=state)
    like_baseline(done, baseline)
    warnings = [line for line in done.stderr.splitlines() if "scan cache" in line]
    assert len(warnings) == 1 and "cache.sqlite.broken" in warnings[0], done.stderr


# -- the state database, and state this user cannot write ---------------------------------------


def _one_warning(done: Scan, *words: str) -> str:
    warnings = [line for line in done.stderr.splitlines() if line.startswith("rmmscan: ")]
    assert len(warnings) == 1, done.stderr
    for word in words:
        assert word in warnings[0], done.stderr
    return warnings[0]


def _report_ids_unique(done: Scan) -> None:
    ids = [r["ReportId"] for r in done.rows]
    assert len(set(ids)) == len(ids) and all(isinstance(i, int) and i > 0 for i in ids)


@pytest.mark.parametrize("label", JOBS)
def test_a_damaged_state_database_is_one_warning(label, tree, world, baseline):
    state = world / f"bad-state-{label}"
    state.mkdir()
    damaged = random.Random(2).randbytes(8192)
    (state / "state.sqlite").write_bytes(damaged)
    done = scan(*JOBS[label], *EMIT, tree.root, state_dir=state)
    like_baseline(done, baseline)
    _one_warning(done, str(state / "state.sqlite"), "file is not a database", "move it aside")
    _report_ids_unique(done)
    assert (state / "state.sqlite").read_bytes() == damaged, "left for the owner to look at"
    # the scan cache beside it works
    again = scan(*JOBS[label], *EMIT, tree.root, state_dir=state)
    like_baseline(again, baseline)
    assert again.summary["from the cache"] == baseline.summary["files walked"]
    assert min(r["ReportId"] for r in again.rows) > max(r["ReportId"] for r in done.rows)


def _as_nobody(*args, state_dir) -> Scan:
    return scan(*args, state_dir=state_dir, user=True)


@pytest.mark.parametrize("label", JOBS)
def test_a_state_dir_of_mode_555_is_one_warning(label, tree, world, baseline):
    state = world / f"mode-555-{label}"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    state.chmod(0o555)
    done = _as_nobody(*JOBS[label], *EMIT, tree.root, state_dir=state)
    like_baseline(done, baseline)
    _one_warning(done, str(state), "not writable", "--state-dir")
    _report_ids_unique(done)
    assert list(state.iterdir()) == []


@pytest.mark.parametrize("label", JOBS)
def test_a_healthy_state_of_another_user_is_used_as_is(label, tree, world, warm, baseline):
    """root's state directory, swept by nobody: not writable, so not used, and above all not
    'set aside' (it is healthy): root's next sweep still takes every file from it."""
    state = world / f"roots-{label}"
    shutil.copytree(warm, state)
    state.chmod(0o755)
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    done = _as_nobody(*JOBS[label], *EMIT, tree.root, state_dir=state)
    like_baseline(done, baseline)
    _one_warning(done, str(state), "not writable", "run as the owner")
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before
    mine = scan(*JOBS[label], *EMIT, tree.root, state_dir=state)
    like_baseline(mine, baseline)
    assert mine.summary["from the cache"] == baseline.summary["files walked"]


@pytest.mark.parametrize("label", JOBS)
def test_a_cache_this_user_cannot_write(label, tree, world, warm, baseline):
    """nobody's state directory holding a cache root wrote: 'attempt to write a readonly
    database'. The sweep goes on without it, and leaves it where it is."""
    state = world / f"readonly-cache-{label}"
    state.mkdir()
    shutil.copy(warm / "cache.sqlite", state / "cache.sqlite")
    db = sqlite3.connect(state / "cache.sqlite")  # a file to read, and then to store
    assert db.execute("DELETE FROM files WHERE dir = ? AND name = 'f0.exe'",
                      (str(tree.root / "d05"),)).rowcount == 1  # fmt: skip
    db.commit()
    db.close()  # the last connection: the WAL goes into the file
    os.chown(state, NOBODY, NOBODY)
    (state / "cache.sqlite").chmod(0o644)
    cache = (state / "cache.sqlite").read_bytes()
    done = _as_nobody(*JOBS[label], *EMIT, tree.root, state_dir=state)
    like_baseline(done, baseline)
    _one_warning(done, str(state / "cache.sqlite"), "readonly", "run as the owner")
    assert (state / "cache.sqlite").read_bytes() == cache
    assert not (state / "cache.sqlite.broken").exists()
    assert (state / "state.sqlite").exists(), "the rest of the state is kept"


def test_inspect_without_usable_state(tree, world):
    """`rmmscan inspect --format jsonl` opens the state for the device id and ReportIds."""
    state = world / "inspect-555"
    state.mkdir()
    state.chmod(0o555)
    os.chown(state, NOBODY, NOBODY)
    ou = tree.root / "d00" / "f0.exe"
    srl = tree.root / "d00" / "f1.exe"
    cmd = scan_command(state_dir=state, user=True)
    cmd[cmd.index("scan")] = "inspect"
    done = subprocess.run([*cmd, "--format", "jsonl", ou, srl], capture_output=True,
                          text=True, timeout=120, cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["Signer"] for r in rows] == ["DWSNET OÜ", "DWSNET srl"]
    assert len({r["ReportId"] for r in rows}) == 2
    warnings = [line for line in done.stderr.splitlines() if line.startswith("rmmscan: ")]
    assert len(warnings) == 1 and str(state) in warnings[0], done.stderr
