"""The local sweep's source: a parallel walk of directory trees that hands each directory's
regular files, with the open directory (dirs.py), to a visitor.

Every open below the roots is relative to the parent directory (openat with O_NOFOLLOW where
the OS has it, see dirs.py). An open directory stays open only while its children wait to be
listed (refcounted), and the work stack is last-in-first-out, so the number of open
descriptors stays near depth x workers however wide the tree.

Paths and names are str as os.scandir gives them (undecodable bytes as surrogates, PEP 383):
os.fsencode gives back the exact bytes, and no per-file conversion is paid.
Nothing here is fatal: unreadable or vanished directories, special files, symlinks not
followed, loops and excluded paths are reported to the ``Tally`` and the walk goes on.

Several processes can share one sweep (engine/sweep.py): each walks every directory, but visits,
and reports what it saw in, only the directories ``owns`` gives it (the ones it claimed first,
claims.py), so the processes together visit each directory once.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .candidate import join
from .dirs import HAS_OPENAT, FdDir, PathDir, open_root
from .mounts import pseudo_devices

Directory = FdDir | PathDir


@dataclass(frozen=True, slots=True)
class WalkOptions:
    excludes: tuple[str, ...] = ()
    one_file_system: bool = False
    follow_symlinks: bool = False
    skip_pseudo: bool = True
    use_openat: bool = HAS_OPENAT  # False: by path, as on Windows (tests run both)


# visit(root, open directory, file names, the names reached through a followed symlink) runs
# in a worker thread; the directory is open during the call.
Visitor = Callable[[str, Directory, list[str], frozenset[str]], None]
NO_LINKS: frozenset[str] = frozenset()


class Tally:
    """What the walk saw besides files; thread-safe. `problem` is for unreadable things."""

    def __init__(self, on_problem: Callable[[str, str, str], None] | None = None):
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.on_problem = on_problem
        self.current_root = ""

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def problem(self, path: str, what: str, message: str) -> None:
        """Handed to on_problem (which counts it) when there is one, else counted here."""
        if self.on_problem is not None:
            self.on_problem(path, what, message)
        else:
            self.count(what)


class _Muted(Tally):
    """The tally of a directory another process owns: that process reports it."""

    def count(self, what: str, n: int = 1) -> None:
        pass

    def problem(self, path: str, what: str, message: str) -> None:
        pass


_MUTED = _Muted()


class Excludes:
    """--exclude patterns (fnmatchcase): one with a slash matches the whole path, one without
    matches the name. Each kind is compiled into one regex, and the path is joined only when
    a path pattern exists: fnmatchcase per pattern, with a path joined for every entry, costs
    13 % of a rescan's CPU with a single pattern."""

    def __init__(self, patterns: Sequence[str]):
        self._name = _either([p for p in patterns if not is_path_pattern(p)])
        self._path = _either([p for p in patterns if is_path_pattern(p)])

    def __call__(self, directory: str, name: str) -> bool:
        if self._name is not None and self._name(name) is not None:
            return True
        return self._path is not None and self._path(join(directory, name)) is not None


def is_path_pattern(pattern: str) -> bool:
    return "/" in pattern or (os.sep == "\\" and "\\" in pattern)


def _either(patterns: list[str]):
    if not patterns:
        return None
    # fnmatch.translate anchors each at the end (\Z); match() anchors at the start.
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match


PSEUDO_ROOT = "on a pseudo file system (/proc, /sys, ...): not swept, it holds no files on disk"


def _message(exc: OSError) -> str:
    return exc.strerror or str(exc)


class _Handle:
    """An open directory, kept until the last of its pending children has opened."""

    __slots__ = ("dir", "lock", "refs")

    def __init__(self, directory: Directory, refs: int):
        self.dir, self.refs, self.lock = directory, refs, threading.Lock()

    def release(self) -> None:
        with self.lock:
            self.refs -= 1
            last = self.refs == 0
        if last:
            self.dir.close()


@dataclass(slots=True)
class _Dir:
    root: str
    path: str
    parent: _Handle | None  # None for a root: opened by path
    name: str
    root_dev: int
    follow: bool  # reached through a followed symlink


class Walk:
    """Walk roots with `jobs` threads; `run()` returns when every directory was visited."""

    def __init__(
        self,
        roots: Sequence[str],
        visit: Visitor,
        tally: Tally,
        options: WalkOptions = WalkOptions(),
        jobs: int = 4,
        owns: Callable[[str], bool] | None = None,
        stop=None,
    ):
        self.visit, self.tally, self.options = visit, tally, options
        self.owns = owns  # None: every directory is this walk's
        # Anything with is_set() (a threading or multiprocessing Event): once set, no new
        # directory is listed; the ones waiting are released unvisited.
        self.stop = stop if stop is not None else threading.Event()
        self.jobs = max(1, jobs)
        self._stack: list[_Dir] = []
        self._cond = threading.Condition()
        self._pending = 0
        self._visited: set[tuple[int, int]] = set()  # directories, only when following links
        self._pseudo = pseudo_devices() if options.skip_pseudo else frozenset()
        self._excluded = Excludes(options.excludes) if options.excludes else None
        self._roots = list(roots)
        self._failure: BaseException | None = None

    # -- roots -------------------------------------------------------------------------
    def run(self) -> None:
        for root in self._roots:
            self._start_root(root)
        threads = [
            threading.Thread(target=self._worker, name=f"walk-{i}", daemon=True)
            for i in range(self.jobs)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self._failure is not None:
            raise self._failure

    def _tally(self, path: str) -> Tally:
        return self.tally if self.owns is None or self.owns(path) else _MUTED

    def _start_root(self, root: str) -> None:
        """A root may be a directory or a file; a symlink given as a root is followed."""
        tally = self._tally(root)
        try:
            st = os.stat(root)
        except OSError as exc:
            tally.problem(root, "unreadable roots", _message(exc))
            return
        if stat.S_ISDIR(st.st_mode):
            self._push(_Dir(root, root, None, root, st.st_dev, False))
            return
        if not stat.S_ISREG(st.st_mode):
            tally.problem(root, "unreadable roots", "not a directory or a regular file")
            return
        if st.st_dev in self._pseudo:
            tally.problem(root, "unreadable roots", PSEUDO_ROOT)
            return
        if tally is _MUTED:
            return
        parent, name = os.path.split(root.rstrip("/" + os.sep) or root)
        try:
            directory = open_root(parent or ".", self.options.use_openat)
        except OSError as exc:
            tally.problem(root, "unreadable roots", _message(exc))
            return
        try:
            self.tally.current_root = root
            self.visit(root, directory, [name], frozenset((name,)))
        finally:
            directory.close()

    # -- the work stack -----------------------------------------------------------------
    def _push(self, item: _Dir) -> None:
        with self._cond:
            self._stack.append(item)
            self._pending += 1
            self._cond.notify()

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._stack and self._pending:
                    self._cond.wait()
                if not self._pending:
                    self._cond.notify_all()
                    return
                item = self._stack.pop()
            try:
                if self._failure is None and not self.stop.is_set():
                    self._list(item)
                elif item.parent is not None:
                    item.parent.release()
            except BaseException as exc:  # a bug, not bad input: drain the stack, re-raise
                self._failure = self._failure or exc
            finally:
                with self._cond:
                    self._pending -= 1
                    if not self._pending:
                        self._cond.notify_all()

    # -- one directory ------------------------------------------------------------------
    def _open(self, item: _Dir, tally: Tally) -> Directory | None:
        try:
            if item.parent is None:
                return open_root(item.path, self.options.use_openat)
            return item.parent.dir.open_dir(item.name, item.path, item.follow)
        except FileNotFoundError:
            tally.count("vanished")
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                tally.count("vanished")  # replaced by a symlink or a file since listed
            else:
                kind = "unreadable" if item.parent is not None else "unreadable roots"
                tally.problem(item.path, kind, _message(exc))
        finally:
            if item.parent is not None:
                item.parent.release()
        return None

    def _list(self, item: _Dir) -> None:
        tally = self._tally(item.path)
        directory = self._open(item, tally)
        if directory is None:
            return
        handle = _Handle(directory, 1)
        try:
            st = directory.stat()
            if not self._enter(item, st, tally):
                return
            self.tally.current_root = item.root
            files, followed, dirs = self._scan(item, directory, tally)
            if dirs:
                with handle.lock:
                    handle.refs += len(dirs)
                for name, follow in reversed(dirs):
                    self._push(
                        _Dir(item.root, join(item.path, name), handle, name, item.root_dev, follow)
                    )
            if tally is _MUTED:
                return
            tally.count("directories")
            if files:
                self.visit(item.root, directory, files, followed)
        finally:
            handle.release()

    def _enter(self, item: _Dir, st: os.stat_result, tally: Tally) -> bool:
        if st.st_dev in self._pseudo:
            if item.parent is None:  # asked for by name: saying nothing would mean "clean"
                tally.problem(item.path, "unreadable roots", PSEUDO_ROOT)
            else:
                tally.count("pseudo file systems skipped")
            return False
        if self.options.one_file_system and st.st_dev != item.root_dev:
            tally.count("other file systems skipped")
            return False
        if self.options.follow_symlinks:
            key = (st.st_dev, st.st_ino)
            with self._cond:
                if key in self._visited:
                    tally.count("symlink loops")
                    return False
                self._visited.add(key)
        return True

    def _scan(self, item: _Dir, directory: Directory, tally: Tally):
        """(file names, those reached through a followed symlink, subdirectories)."""
        files: list[str] = []
        followed: set[str] = set()
        dirs: list[tuple[str, bool]] = []
        excluded = self._excluded
        try:
            with directory.scandir() as it:
                entries = list(it)
        except OSError as exc:
            tally.problem(item.path, "unreadable", _message(exc))
            return files, NO_LINKS, dirs
        for entry in entries:
            name = entry.name
            if excluded is not None and excluded(item.path, name):
                tally.count("excluded")
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    files.append(name)
                elif entry.is_dir(follow_symlinks=False):
                    dirs.append((name, False))
                elif entry.is_symlink():
                    self._symlink(directory, name, files, followed, dirs, tally)
                else:
                    tally.count("special")
            except OSError:
                tally.count("vanished")
        return files, frozenset(followed) if followed else NO_LINKS, dirs

    def _symlink(self, directory: Directory, name: str, files, followed, dirs, tally) -> None:
        if not self.options.follow_symlinks:
            tally.count("symlinks not followed")
            return
        try:
            st = directory.stat_child(name, True)
        except OSError:
            tally.count("dangling symlinks")  # dangling, a loop, or no permission
            return
        if stat.S_ISDIR(st.st_mode):
            dirs.append((name, True))
        elif stat.S_ISREG(st.st_mode):
            files.append(name)
            followed.add(name)
        else:
            tally.count("special")
