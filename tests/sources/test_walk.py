"""The walk on its own: both ways of opening (openat and by path) see the same tree, deep
paths work, open descriptors stay bounded, and nothing special is read."""

from __future__ import annotations

import fnmatch
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmmscan.sources.walk import Excludes, Tally, Walk, WalkOptions


def walk(root, **options) -> tuple[set[str], dict[str, int]]:
    seen: set[str] = set()
    lock = threading.Lock()
    jobs = options.pop("jobs", 3)

    def visit(_root, directory, files, followed):
        with lock:
            seen.update(
                os.path.join(directory.path, f) + ("@" if f in followed else "") for f in files
            )

    tally = Tally()
    Walk([str(root)], visit, tally, WalkOptions(**options), jobs).run()
    return seen, tally.counts


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    for d in ("a/b/c", "a/d", "e"):
        (root / d).mkdir(parents=True)
    for f in ("a/1", "a/b/2", "a/b/c/3", "a/d/4.log", "e/5", "top"):
        (root / f).write_bytes(b"x")
    os.symlink("a/1", root / "link-to-file")
    os.symlink("a", root / "link-to-dir")
    os.symlink(".", root / "e" / "loop")
    os.symlink("nowhere", root / "dangling")
    os.mkfifo(root / "fifo")
    return root


def names(root, paths):
    return {os.path.relpath(p.rstrip("@"), root) + ("@" if p.endswith("@") else "") for p in paths}


@pytest.mark.parametrize("use_openat", [True, False], ids=["openat", "paths"])
def test_both_ways_of_opening_see_the_same_tree(tree, use_openat):
    seen, counts = walk(tree, use_openat=use_openat)
    assert names(tree, seen) == {"a/1", "a/b/2", "a/b/c/3", "a/d/4.log", "e/5", "top"}
    assert counts["symlinks not followed"] == 4
    assert counts["special"] == 1
    assert counts["directories"] == 6


@pytest.mark.parametrize("use_openat", [True, False], ids=["openat", "paths"])
def test_following_symlinks_detects_loops(tree, use_openat):
    seen, counts = walk(tree, follow_symlinks=True, use_openat=use_openat)
    got = names(tree, seen)
    assert "link-to-file@" in got
    # link-to-dir is the same directory as a/ and e/loop the same as e/: each listed once.
    assert counts["symlink loops"] == 2
    assert counts["dangling symlinks"] == 1
    assert len([n for n in got if n.endswith("/3")]) == 1


def test_excludes_by_name_and_by_path(tree):
    seen, counts = walk(tree, excludes=("*.log", str(tree / "a/b")))
    assert names(tree, seen) == {"a/1", "e/5", "top"}
    assert counts["excluded"] == 2
    assert Excludes(("*.log",))("/x/y", "z.log")
    assert not Excludes(("/x/*.log",))("/y", "z.log")


def _excluded_one_by_one(patterns, directory: str, name: str) -> bool:
    """The meaning of --exclude, pattern by pattern, as fnmatchcase has it (on POSIX: a pattern
    with a slash is matched against the path, any other against the name)."""
    path = os.path.join(directory, name)
    return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in patterns)


_GLOB = st.text(alphabet="ab*?[]!-^/.\\\n\udcff", max_size=6)
_NAME = st.text(alphabet="ab*?[]!-^.\\\n\udcff", min_size=1, max_size=6)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_GLOB, max_size=4), st.lists(_NAME, min_size=1, max_size=3), _NAME)
def test_excludes_compiled_equal_fnmatchcase_one_by_one(patterns, parents, name):
    """One regex per kind of pattern decides exactly what fnmatchcase decides per pattern:
    brackets, negated and unclosed classes, escapes, newlines and undecodable bytes."""
    directory = "/" + "/".join(parents)
    assert Excludes(patterns)(directory, name) == _excluded_one_by_one(patterns, directory, name)


def test_paths_longer_than_path_max(tmp_path):
    """Built with relative mkdirs: no single path handed to the kernel is long."""
    component = "d" * 200
    depth = 30  # about 6,000 characters, past Linux's PATH_MAX of 4096
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir(component, dir_fd=fd)
            child = os.open(component, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("deep.bin", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"MZ")
        os.close(leaf)
    finally:
        os.close(fd)
    seen, counts = walk(tmp_path)
    (path,) = seen
    assert len(path) > 4096 and path.endswith("/deep.bin")
    assert "unreadable" not in counts


def test_open_descriptors_stay_bounded(tmp_path):
    """A wide tree: pending directories share their parent's descriptor."""
    for i in range(60):
        for j in range(20):
            d = tmp_path / f"d{i}" / f"e{j}"
            d.mkdir(parents=True)
            (d / "f").write_bytes(b"")
    peak = 0
    lock = threading.Lock()

    def visit(_root, directory, files, followed):
        nonlocal peak
        with lock:
            peak = max(peak, len(os.listdir("/proc/self/fd")))

    before = len(os.listdir("/proc/self/fd"))
    Walk([str(tmp_path)], visit, Tally(), WalkOptions(), 4).run()
    assert peak - before <= 4 * 4 + 4  # about depth x workers, not 1,260 directories
    assert len(os.listdir("/proc/self/fd")) == before  # and every one is closed


@pytest.mark.parametrize("follow", [False, True], ids=["links-not-followed", "following-links"])
def test_shares_of_a_walk_visit_each_file_once_and_count_each_thing_once(tree, follow):
    """Sweep processes (engine/sweep.py) each walk the whole tree and visit what `owns` gives them:
    together they must see what one walk sees, each file once, each count once."""
    import zlib

    # One thread, as each share walks: with links followed, which of two paths to the same
    # directory (a/ and link-to-dir/) is entered first depends on the order of the walk.
    whole, whole_counts = walk(tree, follow_symlinks=follow, jobs=1)
    shares = 3
    seen_by: list[set[str]] = []
    totals: dict[str, int] = {}
    for share in range(shares):
        seen: set[str] = set()

        def visit(_root, directory, files, followed, seen=seen):
            seen.update(
                os.path.join(directory.path, f) + ("@" if f in followed else "") for f in files
            )

        def owns(path: str, share=share) -> bool:
            # Relative to the tree: the same split in every run (pytest's temporary folder
            # changes its name, and with it, now and then, every directory went to one share).
            return zlib.crc32(os.fsencode(os.path.relpath(path, tree))) % shares == share

        tally = Tally()
        options = WalkOptions(follow_symlinks=follow)
        Walk([str(tree)], visit, tally, options, 1, owns=owns).run()
        seen_by.append(seen)
        for what, n in tally.counts.items():
            totals[what] = totals.get(what, 0) + n
    assert set().union(*seen_by) == whole
    assert sum(len(s) for s in seen_by) == len(whole)  # no file in two shares
    assert sum(bool(s) for s in seen_by) >= 2  # the files really were shared out
    assert totals == whole_counts


@pytest.mark.parametrize("use_openat", [True, False], ids=["openat", "paths"])
def test_a_directory_swapped_for_a_symlink_after_listing_is_counted_vanished(tmp_path, use_openat):
    """Listed as a directory, a symlink by the time it is opened: not followed, and not a
    permission problem either (nothing to list on stderr)."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "inside").write_bytes(b"x")
    (tmp_path / "top").write_bytes(b"x")
    seen: list[str] = []

    def visit(_root, directory, files, _followed):
        seen.extend(os.path.join(directory.path, f) for f in files)
        if directory.path == str(tmp_path):  # the root: victim/ is listed, not yet opened
            os.rename(tmp_path / "victim", tmp_path / "moved")
            os.symlink("moved", tmp_path / "victim")

    problems: list[tuple] = []
    tally = Tally(on_problem=lambda *p: problems.append(p))
    Walk([str(tmp_path)], visit, tally, WalkOptions(use_openat=use_openat), 1).run()
    assert seen == [str(tmp_path / "top")]
    assert tally.counts == {"directories": 1, "vanished": 1}
    assert problems == []


def test_a_pseudo_file_system_given_as_root_is_a_problem_not_silence():
    problems: list[tuple] = []
    tally = Tally(on_problem=lambda *p: problems.append(p))
    seen: list[str] = []
    walk_ = Walk(["/proc", "/proc/cpuinfo"], lambda *a: seen.append(a), tally, WalkOptions(), 1)
    walk_.run()
    assert seen == []
    assert [(path, kind) for path, kind, _ in problems] == [
        ("/proc/cpuinfo", "unreadable roots"),
        ("/proc", "unreadable roots"),
    ]
    assert all("pseudo file system" in message for _, _, message in problems)
