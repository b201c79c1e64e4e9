"""The watch source on real inotify and real directories: what becomes a ready path, when, and
how often; what becomes a rescan; and what happens at the kernel's limits (the watch limit and
the instance limit inside a user namespace of their own, the event queue's overflow in a
process held stopped while events pile up), so nothing here changes the machine's sysctls."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from watchdog.events import DirCreatedEvent

from rmmscan.sources import watch as watch_module
from rmmscan.sources.watch import Watch

SETTLE = 0.3
ROOT = Path(__file__).resolve().parents[2]


class Seen:
    """What a watch handed over while it was polled: each ready path with the time it came."""

    def __init__(self) -> None:
        self.ready: list[tuple[str, float]] = []
        self.rescans: list[str] = []

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.ready]


def poll(w: Watch, seen: Seen, until=lambda seen: False, timeout: float = 5.0, quiet=2 * SETTLE):
    """Poll as the agent does until ``until(seen)``, then ``quiet`` seconds more, in which
    nothing else may come for the tests' assertions to see it."""
    deadline = time.monotonic() + timeout
    end = None
    while True:
        now = time.monotonic()
        seen.ready.extend((p, now) for p in w.ready())
        seen.rescans.extend(w.take_rescans())
        if end is None and (until(seen) or now > deadline):
            end = now + quiet
        if end is not None and now > end:
            return seen
        time.sleep(0.02)


@pytest.fixture
def start():
    """start(roots, **options) -> (a started Watch, the warnings it gave)."""
    made: list[Watch] = []

    def start(roots, **options) -> tuple[Watch, list[str]]:
        warnings: list[str] = []
        options.setdefault("settle", SETTLE)
        w = Watch([str(r) for r in roots], warn=warnings.append, **options)
        w.start()
        made.append(w)
        return w, warnings

    yield start
    for w in made:
        began = time.monotonic()
        w.stop()
        assert time.monotonic() - began < 1.0


@pytest.fixture
def tree(tmp_path):
    """(root, outside): a watched root and a directory beside it on the same file system."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def test_the_native_observer_is_inotify():
    # Every test below but the portable one is about inotify: a fallback would pass some of
    # them by accident.
    assert watch_module.NATIVE


def test_a_file_copied_in_is_ready_once_and_whole(start, tree):
    root, outside = tree
    data = os.urandom(4 << 20)
    (outside / "setup.exe").write_bytes(data)
    woken = threading.Event()
    w, warnings = start([root], wake=woken.set)
    assert w.watches == 1 and not w.limited and w.next_due() is None

    began = time.monotonic()
    shutil.copyfile(outside / "setup.exe", root / "setup.exe")
    copied = time.monotonic()
    assert woken.wait(2)
    # The close, once handled, makes the next due time settle after it (before, the writes
    # made it open_timeout after them).
    deadline = time.monotonic() + 2
    while (due := w.next_due()) is None or due > copied + 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert began + SETTLE <= due <= copied + SETTLE + 1.0
    whole = []
    seen = Seen()

    def ready_and_read(seen):
        if seen.paths and not whole:
            whole.append(Path(seen.paths[0]).read_bytes() == data)
        return bool(seen.paths)

    poll(w, seen, ready_and_read)
    assert seen.paths == [str(root / "setup.exe")]
    assert whole == [True]
    assert seen.ready[0][1] >= copied + SETTLE - 0.05  # quiet for settle after the close
    assert seen.rescans == [] and warnings == [] and w.pending == 0 and w.next_due() is None


def test_renames_into_the_tree_make_their_destination_ready(start, tree):
    root, outside = tree
    (outside / "dropped.bin").write_bytes(b"MZ" * 10)
    w, _ = start([root])
    os.rename(outside / "dropped.bin", root / "dropped.exe")  # from outside the root
    with open(root / "download.part", "wb") as f:  # a download renamed when complete
        f.write(b"MZ" * 10)
    os.rename(root / "download.part", root / "tool.exe")
    seen = poll(w, Seen(), lambda s: len(s.paths) >= 2)
    assert sorted(seen.paths) == [str(root / "dropped.exe"), str(root / "tool.exe")]


def test_a_slow_write_is_ready_once_after_its_close_and_whole(start, tree):
    root, _ = tree
    w, _ = start([root], open_timeout=10.0)
    half = os.urandom(1 << 20)
    seen = Seen()
    with open(root / "slow.exe", "wb") as f:
        f.write(half)
        f.flush()
        poll(w, seen, timeout=4 * SETTLE, quiet=0)  # the writer pauses longer than settle
        assert seen.paths == []
        f.write(half)
    closed = time.monotonic()
    whole = []

    def ready_and_read(seen):
        if seen.paths and not whole:
            whole.append(Path(seen.paths[0]).read_bytes() == half + half)
        return bool(seen.paths)

    poll(w, seen, ready_and_read)
    assert seen.paths == [str(root / "slow.exe")]
    assert seen.ready[0][1] >= closed + SETTLE - 0.05
    assert whole == [True]


def test_a_file_held_open_is_ready_open_timeout_after_its_last_write(start, tree):
    root, _ = tree
    w, _ = start([root], open_timeout=1.5)
    seen = Seen()
    with open(root / "held.log", "wb") as f:
        f.write(b"line\n")
        f.flush()
        written = time.monotonic()
        poll(w, seen, lambda s: bool(s.paths), timeout=4, quiet=0)
        assert seen.paths == [str(root / "held.log")]
        assert seen.ready[0][1] >= written + 1.5 - 0.05
    poll(w, seen, lambda s: len(s.paths) > 1)  # the close is an event: ready again
    assert seen.paths == [str(root / "held.log")] * 2


def test_a_thousand_appends_make_one_path(start, tree):
    root, _ = tree
    w, _ = start([root])
    for _ in range(1000):
        with open(root / "app.log", "ab") as f:
            f.write(b"x")
    seen = poll(w, Seen(), lambda s: bool(s.paths))
    assert seen.paths == [str(root / "app.log")]
    assert (root / "app.log").stat().st_size == 1000


def test_a_file_deleted_before_it_settles_is_dropped(start, tree):
    root, _ = tree
    w, _ = start([root])
    (root / "gone.tmp").write_bytes(b"x")
    (root / "gone.tmp").unlink()
    (root / "kept.exe").write_bytes(b"x")
    seen = poll(w, Seen(), lambda s: bool(s.paths))
    assert seen.paths == [str(root / "kept.exe")]


def test_directories_that_arrive_whole_are_rescans_not_paths(start, tree):
    root, outside = tree
    (outside / "app" / "bin").mkdir(parents=True)
    for name in ("app/a.exe", "app/bin/b.exe", "app/bin/c.dll"):
        (outside / name).write_bytes(b"MZ")
    w, _ = start([root])
    os.rename(outside / "app", root / "app")  # a directory moved in, with its tree
    (root / "made" / "deep" / "er").mkdir(parents=True)  # created: rescans, no paths
    tops = [str(root / "app"), str(root / "made")]
    seen = poll(w, Seen(), lambda s: set(tops) <= set(s.rescans))
    # A take that comes between the events for made and made/deep hands made/deep over on
    # its own later (redundant, never missing); which one inotify and the poll give is a race.
    assert sorted(set(seen.rescans) & set(tops)) == tops
    assert all(r in tops or r.startswith(str(root / "made") + os.sep) for r in seen.rescans)
    assert seen.paths == []
    # The directories that arrived are watched like the rest.
    assert w.watches == 6
    (root / "app" / "bin" / "new.exe").write_bytes(b"MZ")
    poll(w, seen, lambda s: bool(s.paths))
    assert seen.paths == [str(root / "app" / "bin" / "new.exe")]


def test_directories_created_below_one_to_rescan_are_in_its_rescan(tree):
    """The handler given inotify's events for ``mkdir -p made/deep/er`` in their order, before
    any take: one rescan, the top. (On real inotify a take can fall between them; above.)"""
    root, _ = tree
    w = Watch([str(root)], warn=lambda message: None, settle=SETTLE)  # not started: no thread
    handler = watch_module._Handler(w, w._roots[0])
    made = root / "made"
    for folder in (made, made / "deep", made / "deep" / "er"):
        handler.dispatch(DirCreatedEvent(str(folder)))
    handler.dispatch(DirCreatedEvent(str(root / "other")))
    handler.dispatch(DirCreatedEvent(str(root / "other" / "in")))
    assert w.take_rescans() == [str(made), str(root / "other")]
    handler.dispatch(DirCreatedEvent(str(made / "deep" / "later")))  # after the take: its own
    assert w.take_rescans() == [str(made / "deep" / "later")]


def test_excluded_paths_are_never_ready_and_excluded_directories_not_watched(start, tree):
    root, _ = tree
    (root / "cache").mkdir()
    (root / "skip").mkdir()
    (root / "sub").mkdir()
    w, _ = start([root], exclude=["*.tmp", "cache", "*/skip/*"])
    assert w.watches == 3  # root, skip (its files are excluded, not the folder), sub
    for name in ("keep.exe", "x.tmp", "cache/a.exe", "skip/b.exe", "sub/c.tmp", "sub/d.exe"):
        (root / name).write_bytes(b"MZ")
    (root / "sub" / "cache").mkdir()  # created after the start, excluded by its name
    (root / "sub" / "cache" / "e.exe").write_bytes(b"MZ")
    seen = poll(w, Seen(), lambda s: len(s.paths) >= 2)
    assert sorted(seen.paths) == [str(root / "keep.exe"), str(root / "sub" / "d.exe")]
    assert seen.rescans == []
    assert w.watches == 3


def test_roots_that_cannot_be_watched_are_warned_about(start, tree, tmp_path):
    root, _ = tree
    (tmp_path / "a-file").write_bytes(b"")
    w, warnings = start([tmp_path / "nowhere", tmp_path / "a-file", root, "/proc"])
    assert warnings == [
        f"{tmp_path / 'nowhere'}: not watched: No such file or directory",
        f"{tmp_path / 'a-file'}: not watched: not a directory",
        "/proc: not watched: on a pseudo file system",
    ]
    assert w.watches == 1 and not w.limited
    (root / "x.exe").write_bytes(b"MZ")
    seen = poll(w, Seen(), lambda s: bool(s.paths))
    assert seen.paths == [str(root / "x.exe")]


def test_symlinks_are_not_followed_but_a_root_that_is_one_is(start, tree, tmp_path):
    root, outside = tree
    os.symlink(outside, root / "link")
    os.symlink(root, tmp_path / "root-link")
    w, warnings = start([tmp_path / "root-link"])
    assert w.watches == 1 and warnings == []
    (outside / "there.exe").write_bytes(b"MZ")  # through root/link: not watched
    (root / "here.exe").write_bytes(b"MZ")
    seen = poll(w, Seen(), lambda s: bool(s.paths))
    assert seen.paths == [str(tmp_path / "root-link" / "here.exe")]


def test_a_deleted_root_is_warned_about_and_is_no_failure(start, tree, tmp_path):
    root, _ = tree
    other = tmp_path / "other"
    other.mkdir()
    w, warnings = start([root, other])
    root.rmdir()
    (other / "x.exe").write_bytes(b"MZ")
    seen = poll(w, Seen(), lambda s: bool(s.paths))
    assert seen.paths == [str(other / "x.exe")]
    assert warnings == [f"{root}: deleted: not watched"]
    assert seen.rescans == [] and not w.limited


def test_undecodable_names_come_out_as_fsdecode_gives_them(start, tree):
    root, _ = tree
    w, _ = start([root])
    name = b"bad\xffname\nwith newline.exe"
    with open(os.fsencode(root) + b"/" + name, "wb") as f:
        f.write(b"MZ")
    seen = poll(w, Seen(), lambda s: bool(s.paths))
    assert seen.paths == [os.fsdecode(os.fsencode(root) + b"/" + name)]
    with open(seen.paths[0], "rb") as f:  # the agent opens it again by that str
        assert f.read() == b"MZ"


def test_other_file_systems_are_left_to_their_own_roots(start, tree):
    root, _ = tree
    (root / "mnt").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", root / "mnt"], check=True)
    try:
        one, _ = start([root])
        both, _ = start([root], one_file_system=False)
        assert (one.watches, both.watches) == (1, 1 + 1)  # both: the mount's directory too
        (root / "mnt" / "x.exe").write_bytes(b"MZ")
        assert poll(one, Seen(), timeout=3 * SETTLE).paths == []
        assert poll(both, Seen(), lambda s: bool(s.paths)).paths == [str(root / "mnt" / "x.exe")]
    finally:
        subprocess.run(["umount", root / "mnt"], check=True)


def test_a_full_pending_set_rescans_folders_and_loses_no_file(start, tree):
    root, _ = tree
    folders = [root / f"d{i:02}" for i in range(20)]
    for folder in folders:
        folder.mkdir()
    w, _ = start([root], max_pending=50)
    seen = Seen()
    written = []
    for i in range(2000):
        path = folders[i % 20] / f"f{i}.exe"
        path.write_bytes(b"MZ")
        written.append(str(path))
        if i % 100 == 0:
            assert w.pending <= 50
            poll(w, seen, quiet=0, timeout=0)

    def lost(seen: Seen) -> list[str]:
        ready, rescans = set(seen.paths), set(seen.rescans)
        return [p for p in written if p not in ready and os.path.dirname(p) not in rescans]

    poll(w, seen, lambda s: not lost(s), timeout=10)
    assert lost(seen) == []
    assert w.pending == 0
    assert seen.rescans and set(seen.rescans) <= {str(f) for f in folders}
    assert len(seen.paths) == len(set(seen.paths))


def test_too_many_rescans_become_the_roots(start, tree, tmp_path):
    root, _ = tree
    other = tmp_path / "other"
    other.mkdir()
    w, _ = start([root, other], max_rescan_dirs=5)
    for i in range(10):
        (root / f"new{i}").mkdir()
    time.sleep(1)  # all ten handled before the first take
    seen = poll(w, Seen(), lambda s: bool(s.rescans))
    assert seen.rescans == [str(root), str(other)]


def test_a_failed_inotify_reader_is_warned_about_and_rescans_the_roots(start, tree):
    root, _ = tree
    before = _inotify_fds()
    w, warnings = start([root])
    (ours,) = _inotify_fds() - before
    # A real fault in the reader thread: its descriptor now reads as a directory (EISDIR).
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.dup2(directory, ours)
        (root / "x.exe").write_bytes(b"MZ")  # wakes the reader's poll
        seen = poll(w, Seen(), lambda s: bool(s.rescans))
        assert seen.rescans == [str(root)]
        assert w.limited
        assert warnings == [
            "the file-system watch failed (rmmscan-watch-inotify ended: Is a directory): "
            "events are not seen any more; the periodic rescans cover the tree"
        ]
        assert poll(w, Seen(), timeout=0).rescans == []  # told once
        w.stop()
    finally:
        os.close(directory)
        with contextlib.suppress(OSError):  # unless the reader's stop closed it
            if os.path.samestat(os.fstat(ours), os.stat(root)):
                os.close(ours)


def _inotify_fds() -> set[int]:
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                fds.add(int(name))
        except OSError:
            continue
    return fds


# -- the kernel's limits, each in a process of its own ------------------------------------------

_CHILD_POLL = """
def poll(w, seconds):
    ready, rescans = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ready += w.ready()
        rescans += w.take_rescans()
        time.sleep(0.02)
    return ready, rescans
"""

_WATCH_LIMIT = (
    """
import json, os, sys, time
from rmmscan.sources.watch import Watch
root, limit = sys.argv[1], int(sys.argv[2])
with open("/proc/sys/user/max_inotify_watches", "w") as f:  # this namespace's own
    f.write(str(limit))
"""
    + _CHILD_POLL
    + """
warnings = []
w = Watch([root], warn=warnings.append, settle=0.2)
w.start()
started = dict(watches=w.watches, limited=w.limited, warnings=list(warnings))
for folder in [d for d, _, _ in os.walk(root)][1:]:
    with open(os.path.join(folder, "new.exe"), "wb") as f:
        f.write(b"MZ")
with open(os.path.join(root, "top.exe"), "wb") as f:
    f.write(b"MZ")
os.mkdir(os.path.join(root, "later"))  # refused a watch too: no second warning
ready, rescans = poll(w, 1.0)
w.stop()
print(json.dumps(dict(started=started, ready=ready, rescans=rescans, warnings=warnings)))
"""
)


def _in_user_namespace(script: str, *args: str) -> dict:
    """Run a script as root of a new user namespace, whose inotify limits are its own."""
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_watch_limit_is_warned_about_once_and_the_watched_part_still_works(tmp_path):
    root = tmp_path / "root"
    for top in "abc":
        for sub in "123":
            (root / top / sub / "deep").mkdir(parents=True)  # 1 + 3 + 9 + 9 directories
    got = _in_user_namespace(_WATCH_LIMIT, str(root), "10")
    started = got["started"]
    assert started["watches"] == 10 and started["limited"]
    (warning,) = started["warnings"]
    assert "fs.inotify.max_user_watches = " in warning
    assert "user.max_inotify_watches = 10" in warning
    assert "sysctl fs.inotify.max_user_watches=524288" in warning
    assert "/etc/sysctl.d/" in warning and "periodic rescans" in warning
    assert got["warnings"] == [warning]  # the directory made later was refused silently
    # The root and the nine directories that got a watch still give their paths, and the walk
    # being breadth first, those are the shallowest: the first level and six of the second.
    ready = set(got["ready"])
    assert str(root / "top.exe") in ready and len(ready) == 10
    depths = collections.Counter(len(Path(p).relative_to(root).parts) for p in ready)
    assert depths == {1: 1, 2: 3, 3: 6}
    assert got["rescans"] == [str(root / "later")]


_INSTANCE_LIMIT = (
    """
import json, os, sys, time
from rmmscan.sources.watch import Watch
with open("/proc/sys/user/max_inotify_instances", "w") as f:
    f.write("0")
"""
    + _CHILD_POLL
    + """
warnings = []
w = Watch([sys.argv[1]], warn=warnings.append, settle=0.2)
w.start()
with open(os.path.join(sys.argv[1], "x.exe"), "wb") as f:
    f.write(b"MZ")
ready, rescans = poll(w, 0.5)
w.stop()
print(json.dumps(dict(watches=w.watches, limited=w.limited, ready=ready, warnings=warnings)))
"""
)


def test_the_instance_limit_is_warned_about_and_nothing_breaks(tmp_path):
    got = _in_user_namespace(_INSTANCE_LIMIT, str(tmp_path))
    assert got["watches"] == 0 and got["limited"] and got["ready"] == []
    (warning,) = got["warnings"]
    assert "fs.inotify.max_user_instances = " in warning
    assert "sysctl fs.inotify.max_user_instances=1024" in warning
    assert "nothing is watched" in warning


_OVERFLOW = (
    """
import json, sys, time
from rmmscan.sources.watch import Watch
"""
    + _CHILD_POLL
    + """
warnings = []
w = Watch([sys.argv[1]], warn=warnings.append, settle=0.2)
w.start()
print("watching", flush=True)
sys.stdin.readline()  # stopped meanwhile, while the events piled up
ready, rescans = poll(w, 1.5)
w.stop()
print(json.dumps(dict(ready=ready, rescans=rescans, warnings=warnings, limited=w.limited)))
"""
)


def test_a_kernel_queue_overflow_rescans_the_roots(tree):
    root, _ = tree
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    child = subprocess.Popen(
        [sys.executable, "-c", _OVERFLOW, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert child.stdout.readline() == "watching\n"
        os.kill(child.pid, signal.SIGSTOP)  # its reader cannot drain the kernel's queue
        a = os.open(root / "a.log", os.O_WRONLY | os.O_CREAT)
        b = os.open(root / "b.log", os.O_WRONLY | os.O_CREAT)
        for _ in range(queued // 2 + 1000):  # alternating: the kernel merges no two
            os.write(a, b"x")
            os.write(b, b"x")
        os.close(a)
        os.close(b)
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate("go\n", timeout=30)
    finally:
        child.kill()
    got = json.loads(out)
    assert got["rescans"] == [str(root)]
    assert set(got["ready"]) <= {str(root / "a.log"), str(root / "b.log")}
    assert got["warnings"] == [] and not got["limited"]


_PORTABLE = (
    """
import json, os, sys, time
from rmmscan.sources import watch
from rmmscan.sources.watch import Watch
root, outside = sys.argv[1], sys.argv[2]
"""
    + _CHILD_POLL
    + """
warnings = []
w = Watch([root], warn=warnings.append, settle=0.3, open_timeout=30)
w.start()
watches = w.watches
held = open(os.path.join(root, "held.exe"), "wb")
held.write(b"MZ")
held.flush()
os.rename(os.path.join(outside, "in.exe"), os.path.join(root, "in.exe"))
ready, rescans = poll(w, 1.5)
held.close()
w.stop()
print(json.dumps(dict(
    native=watch.NATIVE, ready=sorted(ready), watches=watches, warnings=warnings
)))
"""
)


def test_without_closes_quiet_is_the_end_of_a_write(tree):
    """The path Windows and macOS take (RMMSCAN_PORTABLE=1): watchdog's platform observer,
    no close events, so a file still open is ready once it has been quiet for settle."""
    root, outside = tree
    (outside / "in.exe").write_bytes(b"MZ")
    env = {**os.environ, "RMMSCAN_PORTABLE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _PORTABLE, str(root), str(outside)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["native"] is False and got["watches"] == 1 and got["warnings"] == []
    assert got["ready"] == [str(root / "held.exe"), str(root / "in.exe")]
