"""The scan cache end to end: what a rescan opens is watched with strace (every open and
openat, resolved against its directory descriptor), and its rows are held to the oracle.

A rescan of an unchanged tree opens no regular file below the tree; a file rewritten in
place with its mtime put back (only ctime differs), a file replaced by another, a deleted
file, new rules or new trust options all give the rows a scan without the cache gives.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3

import pytest
from sweeptree import (
    FILESIG,
    MANIFEST,
    PE_DIR,
    RULES_DIR,
    UNTRUSTED,
    Tree,
    identities,
    opened_paths,
    scan,
    stable_set,
)

from rmmscan.rows.columns import NAMES
from rmmscan.state.cache import FORMAT

CAFE = b"caf\xe9"  # a folder name that is not UTF-8: stored in the cache as bytes


def build(root) -> Tree:
    tree = Tree(root)
    tree.put("a/ou.exe", "dwsnet-ou.exe")
    tree.put("a/benign.exe", "benign.exe")
    tree.put("a/unsigned.exe", "unsigned.exe")
    tree.put("a/readme.txt", "not-a-pe.bin")
    tree.put("b/srl.dll", "dwsnet-srl.exe")
    tree.put("b/x", "dwagent-lookalike-unsigned.exe")
    tree.put("b/nested.bin", "nested-depth3.exe")
    tree.put(os.path.join(CAFE, b"out.exe"), "dwsnet-ou-sha1.exe")
    tree.put("u/Ünï 日本.exe", "selfsigned-dwsnet-ou.exe")
    (tree.root / "a" / "notes.txt").write_text("not a PE\n")
    return tree


@pytest.fixture
def tree(tmp_path) -> Tree:
    return build(tmp_path / "tree")


def regular_files(tree: Tree) -> set[bytes]:
    out = set()
    for top, _, files in os.walk(os.fsencode(tree.root)):
        out.update(os.path.join(top, f) for f in files)
    return out


def traced(tmp_path, *args, state_dir, name="strace", **kw):
    """A scan under strace; returns (scan, every path it opened or tried to open)."""
    log = tmp_path / f"{name}.log"
    done = scan(
        *args,
        state_dir=state_dir,
        prefix=["strace", "-f", "-y", "-xx", "-qq", "-e", "trace=openat,open", "-o", str(log)],
        **kw,
    )
    return done, opened_paths(log.read_text("ascii"))


def raw_path(row: dict) -> bytes:
    if row["FolderPathBytes"] is not None:
        return base64.b64decode(row["FolderPathBytes"])
    return os.fsencode(row["FolderPath"])


def below(paths: list[bytes], tree: Tree) -> set[bytes]:
    root = os.fsencode(tree.root)
    return {p for p in paths if p == root or p.startswith(root + b"/")}


def files_opened(paths: list[bytes], tree: Tree) -> set[bytes]:
    return {p for p in below(paths, tree) if not os.path.isdir(p)}


# -- an unchanged tree ----------------------------------------------------------------------------


def test_a_rescan_of_an_unchanged_tree_opens_no_file(tree, tmp_path):
    state = tmp_path / "state"
    first = scan("--format", "jsonl", tree.root, state_dir=state)
    assert first.returncode == 1, first
    tree.check(first.rows, NAMES)
    assert identities(first.rows) == tree.expected()
    assert first.summary["from the cache"] == 0
    again, opened = traced(tmp_path, "--format", "jsonl", tree.root, state_dir=state)
    assert again.returncode == 1, again
    # directories are listed again; no regular file below the tree is opened
    assert os.fsencode(tree.root) in below(opened, tree), "strace saw the walk"
    assert files_opened(opened, tree) == set()
    assert stable_set(again.rows) == stable_set(first.rows)
    tree.check(again.rows, NAMES)
    everything = regular_files(tree)
    assert again.summary["files walked"] == len(everything)
    assert again.summary["from the cache"] == len(everything)
    # new rows, new ReportIds
    assert min(r["ReportId"] for r in again.rows) > max(r["ReportId"] for r in first.rows)


def test_a_rescan_that_needs_more_reads_only_what_it_lacks(tree, tmp_path):
    """Detections first (the other PEs are only parsed), then --emit all: the PEs whose rows
    were not emitted must now be hashed and verified; the non-PEs are still never opened."""
    state = tmp_path / "state"
    first = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    assert first.returncode == 1, first
    again, opened = traced(tmp_path, "--format", "jsonl", "--emit", "all", tree.root,
                           state_dir=state)  # fmt: skip
    fresh = scan("--format", "jsonl", "--emit", "all", "--no-cache", tree.root,
                 state_dir=tmp_path / "fresh")  # fmt: skip
    assert again.returncode == fresh.returncode == 1
    assert stable_set(again.rows) == stable_set(fresh.rows)
    tree.check(again.rows, NAMES)
    assert identities(again.rows) == tree.expected("all")
    detected = {raw_path(r) for r in first.rows}
    quiet_pes = {p for p, s in tree.files.items() if MANIFEST[s]["is_pe"]} - detected
    assert quiet_pes and files_opened(opened, tree) == quiet_pes
    # and a third scan has it all
    third, opened = traced(tmp_path, "--format", "jsonl", "--emit", "all", tree.root,
                           state_dir=state, name="third")  # fmt: skip
    assert files_opened(opened, tree) == set()
    assert stable_set(third.rows) == stable_set(fresh.rows)


# -- a changed tree -------------------------------------------------------------------------------


def test_a_file_rewritten_in_place_with_its_mtime_restored_is_read_again(tree, tmp_path):
    state = tmp_path / "state"
    first = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    victim = os.fsencode(tree.root / "a" / "ou.exe")
    before = os.stat(victim)
    data = (PE_DIR / "modified-after-signing.exe").read_bytes()
    assert len(data) == before.st_size
    with open(victim, "r+b") as f:  # same inode, same size
        f.write(data)
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(victim)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns,
    )  # fmt: skip
    assert after.st_ctime_ns != before.st_ctime_ns
    again, opened = traced(tmp_path, "--format", "jsonl", tree.root, state_dir=state)
    assert files_opened(opened, tree) == {victim}
    tree.files[victim] = "modified-after-signing.exe"
    tree.check(again.rows, NAMES)
    assert identities(again.rows) == tree.expected()
    text = os.fsdecode(victim)
    assert sorted(r["RuleId"] for r in again.rows if r["FolderPath"] == text) == sorted(
        [FILESIG[0], UNTRUSTED[0]]
    )
    assert {r["VerificationStatus"] for r in again.rows if r["FolderPath"] == text} == {
        "InvalidDigest"
    }
    unchanged = [r for r in first.rows if r["FolderPath"] != text]
    assert set(stable_set(unchanged)) <= set(stable_set(again.rows))


def test_a_file_replaced_by_another_sample_is_read_again(tree, tmp_path):
    state = tmp_path / "state"
    first = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    victim = os.fsencode(tree.root / "a" / "benign.exe")
    assert os.fsdecode(victim) not in {r["FolderPath"] for r in first.rows}
    shutil.copyfile(PE_DIR / "dwsnet-srl.exe", tmp_path / "new")
    os.replace(tmp_path / "new", victim)
    again, opened = traced(tmp_path, "--format", "jsonl", tree.root, state_dir=state)
    assert files_opened(opened, tree) == {victim}
    tree.files[victim] = "dwsnet-srl.exe"
    tree.check(again.rows, NAMES)
    assert identities(again.rows) == tree.expected()
    assert [r["RuleId"] for r in again.rows if r["FolderPath"] == os.fsdecode(victim)] == [
        FILESIG[0]
    ]


def test_a_deleted_file_disappears(tree, tmp_path):
    state = tmp_path / "state"
    first = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    victim = os.fsencode(tree.root / "u" / "Ünï 日本.exe")
    assert os.fsdecode(victim) in {r["FolderPath"] for r in first.rows}
    os.remove(victim)
    del tree.files[victim]
    again, opened = traced(tmp_path, "--format", "jsonl", tree.root, state_dir=state)
    assert files_opened(opened, tree) == set()
    assert identities(again.rows) == tree.expected()
    assert again.summary["from the cache"] == len(regular_files(tree))
    # and the cache forgot it: a new file of that name is read, not taken from a record
    shutil.copyfile(PE_DIR / "benign.exe", victim)
    tree.files[victim] = "benign.exe"
    third, opened = traced(tmp_path, "--format", "jsonl", tree.root, state_dir=state, name="3")
    assert files_opened(opened, tree) == {victim}
    assert identities(third.rows) == tree.expected()


def test_a_pe_row_that_lost_its_record_is_read_again(tree, tmp_path):
    """A rescan takes a PE's record only when the rules must run on it again (a detection
    here). A row that says "a PE" but holds no record (another rmmscan sharing the state
    directory, a hand-edited cache) must make the file be read, never pass as a non-PE: that
    would drop its detection."""
    state = tmp_path / "state"
    first = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    victim = os.fsencode(tree.root / "b" / "srl.dll")
    assert os.fsdecode(victim) in {r["FolderPath"] for r in first.rows}
    with sqlite3.connect(state / "cache.sqlite") as db:
        folder, name = os.fsdecode(os.path.dirname(victim)), os.fsdecode(os.path.basename(victim))
        changed = db.execute(
            "UPDATE files SET record = NULL WHERE dir = ? AND name = ? AND flags & 1",
            (folder, name),
        ).rowcount
    assert changed == 1
    again, opened = traced(tmp_path, "--format", "jsonl", tree.root, state_dir=state)
    assert files_opened(opened, tree) == {victim}
    assert stable_set(again.rows) == stable_set(first.rows)
    assert again.summary["from the cache"] == len(regular_files(tree)) - 1


def test_no_cache_reads_every_file(tree, tmp_path):
    state = tmp_path / "state"
    first = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    cache = state / "cache.sqlite"
    assert cache.exists()
    again, opened = traced(tmp_path, "--format", "jsonl", "--no-cache", tree.root,
                           state_dir=state)  # fmt: skip
    assert files_opened(opened, tree) == regular_files(tree)
    assert not any(p.startswith(os.fsencode(cache)) for p in opened), "the cache is not touched"
    assert again.summary["from the cache"] == 0
    assert stable_set(again.rows) == stable_set(first.rows)
    # in a fresh state directory, --no-cache makes no cache at all
    fresh = scan("--format", "jsonl", "-q", "--no-cache", tree.root, state_dir=tmp_path / "new")
    assert stable_set(fresh.rows) == stable_set(first.rows)
    assert not (tmp_path / "new" / "cache.sqlite").exists()


# -- a broken cache -------------------------------------------------------------------------------


def _garbage(path):
    path.write_bytes(b"this is not a database\n" * 400)


def _wrong_shape(path, version=FORMAT):
    """A database that says it is of the current format, with a table of another shape."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        f"INSERT INTO meta VALUES ('format', '{version}');"
        "CREATE TABLE files (path TEXT PRIMARY KEY, blob BLOB);"
        "INSERT INTO files VALUES ('/x', x'00');"
    )
    db.close()


def test_a_cache_of_an_older_format_is_emptied_quietly(tree, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    _wrong_shape(state / "cache.sqlite", version="0")
    done = scan("--format", "jsonl", tree.root, state_dir=state)
    assert done.returncode == 1, done
    assert identities(done.rows) == tree.expected()
    assert "scan cache" not in done.stderr
    assert not (state / "cache.sqlite.broken").exists()
    again, opened = traced(tmp_path, "--format", "jsonl", tree.root, state_dir=state)
    assert files_opened(opened, tree) == set()
    assert stable_set(again.rows) == stable_set(done.rows)


@pytest.mark.parametrize("spoil", [_garbage, _wrong_shape], ids=["garbage", "wrong-shape"])
def test_an_unusable_cache_is_set_aside(tree, tmp_path, spoil):
    state = tmp_path / "state"
    state.mkdir()
    spoil(state / "cache.sqlite")
    spoiled = (state / "cache.sqlite").read_bytes()
    assert spoiled
    done = scan("--format", "jsonl", tree.root, state_dir=state)
    assert done.returncode == 1, done
    tree.check(done.rows, NAMES)
    assert identities(done.rows) == tree.expected()
    warnings = [line for line in done.stderr.splitlines() if "scan cache" in line]
    assert len(warnings) == 1 and "cache.sqlite.broken" in warnings[0], done.stderr
    if spoil is _garbage:
        assert (state / "cache.sqlite.broken").read_bytes() == spoiled
    else:  # kept as a database (its journal mode may have been switched on the way)
        db = sqlite3.connect(state / "cache.sqlite.broken")
        assert db.execute("SELECT path, blob FROM files").fetchall() == [("/x", b"\x00")]
        db.close()
    assert (state / "cache.sqlite").read_bytes()[:16] == b"SQLite format 3\x00"
    # the new cache works
    again, opened = traced(tmp_path, "--format", "jsonl", tree.root, state_dir=state)
    assert files_opened(opened, tree) == set()
    assert "scan cache" not in again.stderr
    assert stable_set(again.rows) == stable_set(done.rows)


# -- options that change what a record means ------------------------------------------------------


def test_new_rules_on_a_warm_cache_give_the_rows_of_a_cold_scan(tree, tmp_path):
    state = tmp_path / "state"
    only = RULES_DIR / "rmm_DWService_filesig.yaml"
    first = scan("--format", "jsonl", "-q", "--rules", only, tree.root, state_dir=state)
    assert {r["RuleId"] for r in first.rows} == {FILESIG[0]}
    again = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    tree.check(again.rows, NAMES)
    assert identities(again.rows) == tree.expected()


def test_new_trust_options_redo_the_verdicts(tree, tmp_path):
    state = tmp_path / "state"
    first = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    serial = MANIFEST["dwsnet-srl.exe"]["signatures"][0]["CertificateSerialNumber"]
    distrust = tmp_path / "distrust.json"
    distrust.write_text(
        json.dumps({"certificates": [{"reason": "test: leaked", "serial": serial}]})
    )
    again = scan("--format", "jsonl", "-q", "--distrust", distrust, tree.root, state_dir=state)
    cold = scan("--format", "jsonl", "-q", "--distrust", distrust, "--no-cache", tree.root,
                state_dir=tmp_path / "cold")  # fmt: skip
    assert stable_set(again.rows) == stable_set(cold.rows)
    srl = [r for r in again.rows if r["FolderPath"] == f"{tree.root}/b/srl.dll"]
    assert {(r["VerificationStatus"], r["VerificationDetail"]) for r in srl} == {
        ("Distrusted", "test: leaked")
    }
    assert sorted(r["RuleId"] for r in srl) == sorted([FILESIG[0], UNTRUSTED[0]])
    assert len(again.rows) > len(first.rows)


# -- where the state lives ------------------------------------------------------------------------


def test_the_state_lives_in_the_state_dir(tree, tmp_path):
    env = {
        **os.environ,
        "RMMSCAN_STATE_DIR": str(tmp_path / "env-state"),
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
    }
    given = tmp_path / "given"
    done, opened = traced(tmp_path, "--format", "jsonl", "-q", tree.root, state_dir=given,
                          env=env)  # fmt: skip
    assert done.returncode == 1, done
    assert {p.name for p in given.iterdir()} >= {"cache.sqlite", "state.sqlite"}
    for other in ("env-state", "home", "xdg"):
        assert not (tmp_path / other).exists()
    assert not [p for p in opened if p.startswith(b"/var/lib/rmmscan")]
    # another state directory has its own cache (and its own ReportId counter)
    other = scan("--format", "jsonl", tree.root, state_dir=tmp_path / "other")
    assert other.summary["from the cache"] == 0
    assert [r["ReportId"] for r in other.rows][:3] == [r["ReportId"] for r in done.rows][:3]
