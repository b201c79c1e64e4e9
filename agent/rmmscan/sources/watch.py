"""The agent's real-time source: file-system events under the roots, turned into the paths
whose writing has finished (``Watch.ready``) and the directories to sweep again
(``Watch.take_rescans``). Nothing here opens or judges a file: the agent hands the paths to its
engine, which opens them safely (a path may name anything by then, or nothing).

A path is ready once it has been quiet for ``settle`` seconds after an event that ends a write:
the close of a file opened for writing, a move or rename to the path, a creation. A file
modified and not closed since waits ``open_timeout`` after its last event instead, so a writer
that pauses halfway is not judged half-written, and one that holds its file open for good is
still judged. Where the OS reports no closes (watchdog's observers other than inotify: Windows,
macOS, and Linux when RMMSCAN_PORTABLE=1), every event waits ``settle``. Events for one path
coalesce: a thousand writes make one ready path.

What the events cannot tell goes to the rescans, as directories: a directory created or moved in
(its content arrived without an event per file), the folder of a path that found the pending
set full, and the roots when events were lost (the kernel's event queue overflowed) or the
watch failed. Both sets are bounded, so memory stays bounded however many events arrive: past
``max_pending`` paths a path's folder is rescanned instead, and past ``max_rescan_dirs``
folders the roots are.

On Linux the observer is watchdog's inotify emitter with its tree walk replaced by one that
walks as the sweep does (walk.py): no symlink followed, no excluded directory, no pseudo file
system, and by default no other file system (each mount is a root of its own), so watches go
only where files are judged, shallow directories first. The walk and the reader also see what
watchdog keeps to itself: a directory refused by the kernel's watch limit
(fs.inotify.max_user_watches), after which part of the tree is not watched, and the overflow of
the kernel's event queue.
"""

from __future__ import annotations

import collections
import errno
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, EventQueue, ObservedWatch
from watchdog.utils import UnsupportedLibcError

from .. import portable
from ..text import printable
from .candidate import join
from .mounts import pseudo_devices
from .walk import Excludes

try:  # Linux; elsewhere the import fails in ctypes (no inotify in the C library, or none)
    from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, InotifyFD
except (ImportError, OSError, TypeError, UnsupportedLibcError):
    InotifyFD = None

# inotify, with closes, overflow and the watch limit; else watchdog's platform observer.
NATIVE = InotifyFD is not None and sys.platform.startswith("linux") and not portable.FORCED

# The events asked for: no opens, no reads, no closes of files read (the agent's own reads of
# the files it judges would come back as events), no attribute changes.
_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]
_EVENTS_WITH_CLOSES = [FileClosedEvent, *_EVENTS]

WATCHES = "/proc/sys/fs/inotify/max_user_watches"
INSTANCES = "/proc/sys/fs/inotify/max_user_instances"
NAMESPACE_WATCHES = "/proc/sys/user/max_inotify_watches"  # this user namespace's own limit
JOIN_TIMEOUT = 1.0


def _sysctl(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read(32))
    except (OSError, ValueError):
        return None


def limit_message(what: str = "watches") -> str:
    """The warning for a kernel limit on inotify: which sysctl, its value, how to raise it.

    ``what`` is "watches" (a directory refused: ENOSPC) or "instances" (no inotify at all:
    EMFILE)."""
    name, path, high = {
        "watches": ("fs.inotify.max_user_watches", WATCHES, 524288),
        "instances": ("fs.inotify.max_user_instances", INSTANCES, 1024),
    }[what]
    value = _sysctl(path)
    shown = f"{name} = {value}" if value is not None else name
    if what == "watches":
        lost = "part of the tree is not watched; the periodic rescans cover it"
        own = _sysctl(NAMESPACE_WATCHES)
        if own is not None and value is not None and own < value:
            # A container's user namespace can hold a lower limit of its own.
            shown += f", and this user namespace's user.max_inotify_watches = {own}"
    else:
        lost = "nothing is watched; the periodic rescans cover the tree"
    return (
        f"the inotify {what} limit is reached ({shown}): {lost}. Raise it with "
        f"`sysctl {name}={high}`, and keep it across reboots with a file in /etc/sysctl.d/ "
        f"(for example /etc/sysctl.d/90-rmmscan.conf holding `{name} = {high}`)"
    )


def _because(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class _Root:
    path: str  # absolute, as given
    prefix: str  # the path with one separator at its end: what a path below it starts with


class _Scope:
    """Which directories get watches: the sweep's rules (walk.py), for the inotify walk."""

    def __init__(
        self,
        excludes: Excludes | None,
        one_file_system: bool,
        pseudo: frozenset[int],
        full: Callable[[], None],
    ):
        self.excludes, self.one_file_system, self.pseudo = excludes, one_file_system, pseudo
        self.full = full  # told when the kernel refuses a watch for the watch limit

    def admits(self, parent: bytes, name: bytes, dev: int, root_dev: int) -> bool:
        if dev in self.pseudo or (self.one_file_system and dev != root_dev):
            return False
        return self.excludes is None or not self.excludes(os.fsdecode(parent), os.fsdecode(name))


class Watch:
    """File-system events under ``roots`` as paths ready to judge and directories to rescan.

    watchdog calls the handler on its own thread; ``ready``, ``take_rescans`` and the rest are
    for the agent's thread. One lock guards the pending paths and the rescans; an event costs
    O(1) under it (a directory for the rescans: a look at the folders above it). Warnings are
    collected on watchdog's threads and handed to ``warn`` on the agent's, from ``start``,
    ``ready``, ``take_rescans`` and ``stop``.
    """

    def __init__(
        self,
        roots: Sequence[str],
        exclude: Sequence[str] = (),
        *,
        warn: Callable[[str], None],
        settle: float = 0.5,
        open_timeout: float = 30.0,
        max_pending: int = 100_000,
        max_rescan_dirs: int = 1_000,
        one_file_system: bool = True,
        wake: Callable[[], None] | None = None,
    ):
        """``one_file_system``: watch no other file system than each root's (the agent's roots
        are the mounts themselves). ``wake``, when given, is called on watchdog's thread when
        ``next_due()`` moves earlier or rescans arrive, so an agent sleeping until then can wake
        sooner; it must be quick (``threading.Event.set``) and must not call the Watch."""
        self._roots: list[_Root] = []
        for root in roots:
            path = os.path.abspath(os.fsdecode(root))
            if all(r.path != path for r in self._roots):
                prefix = path if path.endswith(os.sep) else path + os.sep
                self._roots.append(_Root(path, prefix))
        self._excludes = Excludes(exclude) if exclude else None
        self._one_file_system = one_file_system
        self._warn, self._wake = warn, wake
        self._settle, self._open_timeout = settle, open_timeout
        self._max_pending, self._max_rescan_dirs = max_pending, max_rescan_dirs
        # Without closes, the end of a write is only ever seen as quiet.
        self._modified_wait = open_timeout if NATIVE else settle

        self._lock = threading.Lock()
        # Path -> the time of its last event, oldest first; one wait for each, so the first is
        # the next due. A path is in at most one of the two.
        self._settling: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._writing: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._rescans: set[str] = set()
        self._everything = False  # the rescans are the roots
        self._notes: list[str] = []
        self._limited = False
        self._limit_told = False
        self._failed = False
        self._started = self._stopped = False
        self._observer: BaseObserver | None = None
        self._pseudo: frozenset[int] = frozenset()
        self._reader: _Reader | None = None  # the inotify reader thread (NATIVE)
        self._last_folder: tuple[_Root, str, bool] | None = None  # watchdog's thread only

    # -- the agent's side ----------------------------------------------------------------------
    def start(self) -> None:
        """Watch every root that can be watched; a root that cannot is warned about. On Linux
        this adds a watch to each directory of the roots before it returns, which takes about
        as long as listing them (0.8 s for 20,000 directories on the project's machine)."""
        if self._started:
            return
        self._started = True
        self._pseudo = pseudo_devices()
        try:
            self._observer = self._make_observer()
        except OSError as exc:
            self._cannot_watch(exc)
            self._tell()
            return
        self._observer.name = "rmmscan-watch"
        # The observer runs before any root is scheduled: a root that fails then fails alone.
        self._observer.start()
        for root in self._roots:
            self._schedule(root)
        self._tell()

    def ready(self, now: float | None = None) -> list[str]:
        """The paths whose writing has finished, each once; they leave the pending set."""
        self._check()
        now = time.monotonic() if now is None else now
        out: list[str] = []
        with self._lock:
            for queue, wait in (
                (self._settling, self._settle),
                (self._writing, self._modified_wait),
            ):
                while queue:
                    path, last = next(iter(queue.items()))
                    if last + wait > now:
                        break
                    del queue[path]
                    out.append(path)
        return out

    def take_rescans(self) -> list[str]:
        """The directories to sweep again, none below another; the roots when there were more
        than ``max_rescan_dirs`` or events were lost. Taken: the set is empty after."""
        self._check()
        with self._lock:
            if self._everything:
                taken = [r.path for r in self._roots]
            else:
                taken = sorted(p for p in self._rescans if not self._inside_another(p))
            self._rescans = set()
            self._everything = False
        return taken

    def next_due(self) -> float | None:
        """The monotonic time at which ``ready()`` next has a path (None: nothing is pending)."""
        with self._lock:
            return self._next_due()

    @property
    def pending(self) -> int:
        """Paths waiting for their writing to finish."""
        return len(self._settling) + len(self._writing)

    @property
    def watches(self) -> int:
        """Directories watched now: inotify watches held; elsewhere, roots watched."""
        if self._reader is not None:
            return self._reader.watches
        observer = self._observer
        return len(observer.emitters) if observer is not None else 0

    @property
    def limited(self) -> bool:
        """Part of the tree is not watched (an OS limit was reached, or the watch failed): only
        the periodic rescans cover it."""
        return self._limited

    def stop(self) -> None:
        """Stop watchdog's threads and wait for them (about a second at most)."""
        self._stopped = True
        observer, reader = self._observer, self._reader
        if observer is not None:
            observer.stop()  # stops and joins the emitters
            observer.join(JOIN_TIMEOUT)
        if reader is not None:
            reader.stop()
            reader.join(JOIN_TIMEOUT)
        self._tell()

    # -- starting ------------------------------------------------------------------------------
    def _make_observer(self) -> BaseObserver:
        if not NATIVE:
            return Observer()
        scope = _Scope(self._excludes, self._one_file_system, self._pseudo, self._full)
        reader = _Reader(self._overflowed)  # inotify_init: EMFILE past max_user_instances
        reader.start()
        self._reader = reader
        return BaseObserver(_Emitter, inotify_fd=reader, scope=scope)

    def _schedule(self, root: _Root) -> None:
        assert self._observer is not None
        try:
            st = os.stat(root.path)
            if not stat.S_ISDIR(st.st_mode):
                self._note(f"{printable(root.path)}: not watched: not a directory")
                return
            if st.st_dev in self._pseudo:
                self._note(f"{printable(root.path)}: not watched: on a pseudo file system")
                return
            self._observer.schedule(
                _Handler(self, root),
                root.path,
                recursive=True,
                event_filter=_EVENTS_WITH_CLOSES if NATIVE else _EVENTS,
                follow_symlink=False,
            )
        except Exception as exc:  # any root, any reason: that root is not watched, the rest are
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EMFILE):
                self._cannot_watch(exc)
            else:
                self._note(f"{printable(root.path)}: not watched: {_because(exc)}")

    def _cannot_watch(self, exc: OSError) -> None:
        if exc.errno == errno.ENOSPC:
            self._full()
        elif exc.errno == errno.EMFILE:
            with self._lock:
                self._limited = True
                self._notes.append(limit_message("instances"))
        else:
            with self._lock:
                self._limited = True
                self._notes.append(f"nothing is watched: {_because(exc)}")

    # -- watchdog's threads --------------------------------------------------------------------
    def _event(self, root: _Root, event: FileSystemEvent) -> None:
        """One event, on watchdog's thread."""
        kind = event.event_type
        src = event.src_path
        dest = event.dest_path
        assert isinstance(src, str) and isinstance(dest, str)  # str roots: str paths
        if event.is_synthetic:
            # watchdog's own listing of a directory that arrived whole: its rescan covers the
            # content. Only the old paths of a directory moved in the tree are of use.
            if kind == "moved" and src:
                self._drop(src)
            return
        if event.is_directory:
            if kind == "created":
                self._rescan(root, src)
            elif kind == "moved" and dest:
                self._rescan(root, dest)
            elif kind == "deleted" and src == root.path:
                self._note(f"{printable(root.path)}: deleted: not watched")
            return
        if kind == "modified":
            self._touch(root, src, writing=True)
        elif kind in ("closed", "created"):
            self._touch(root, src, writing=False)
        elif kind == "moved":
            if src:
                self._drop(src)
            if dest:
                self._touch(root, dest, writing=False)
        elif kind == "deleted":
            self._drop(src)

    def _touch(self, root: _Root, path: str, writing: bool) -> None:
        if self._excludes is not None and self._excluded(root, path):
            return
        now = time.monotonic()
        wake = False
        with self._lock:
            known = self._settling.pop(path, None) is not None
            known = self._writing.pop(path, None) is not None or known
            if not known and len(self._settling) + len(self._writing) >= self._max_pending:
                wake = self._rescan_locked(root, os.path.dirname(path))
            else:
                due = self._next_due()
                (self._writing if writing else self._settling)[path] = now
                wake = due is None or now + (self._modified_wait if writing else self._settle) < due
        if wake and self._wake is not None:
            self._wake()

    def _drop(self, path: str) -> None:
        with self._lock:
            self._settling.pop(path, None)
            self._writing.pop(path, None)

    def _rescan(self, root: _Root, directory: str) -> None:
        if self._excludes is not None and self._excluded(root, directory):
            return
        with self._lock:
            wake = self._rescan_locked(root, directory)
        if wake and self._wake is not None:
            self._wake()

    def _rescan_locked(self, root: _Root, directory: str) -> bool:
        """Whether the rescans grew. Under the lock."""
        if self._everything or self._covered(root, directory):
            return False
        self._rescans.add(directory)
        if len(self._rescans) > self._max_rescan_dirs:
            self._rescans = set()
            self._everything = True
        return True

    def _covered(self, root: _Root, directory: str) -> bool:
        """The directory or one above it, up to its root, is to be rescanned already."""
        while True:
            if directory in self._rescans:
                return True
            if directory == root.path or not directory.startswith(root.prefix):
                return False
            directory = os.path.dirname(directory)

    def _inside_another(self, path: str) -> bool:
        parent = os.path.dirname(path)
        while parent != path:
            if parent in self._rescans:
                return True
            path, parent = parent, os.path.dirname(parent)
        return False

    def _excluded(self, root: _Root, path: str) -> bool:
        """The sweep's exclusions (walk.Excludes) on the path and each folder below the root.
        The last folder's verdict is kept: events come in runs from one folder."""
        assert self._excludes is not None
        folder, name = os.path.split(path)
        if self._excludes(folder, name):
            return True
        last = self._last_folder
        if last is not None and last[0] is root and last[1] == folder:
            return last[2]
        verdict = False
        if folder.startswith(root.prefix):
            parent = root.path
            for part in folder[len(root.prefix) :].split(os.sep):
                if self._excludes(parent, part):
                    verdict = True
                    break
                parent = join(parent, part)
        self._last_folder = (root, folder, verdict)
        return verdict

    def _overflowed(self) -> None:
        """The kernel's queue overflowed: events under every root were lost."""
        with self._lock:
            self._rescans = set()
            self._everything = True
        if self._wake is not None:
            self._wake()

    def _full(self) -> None:
        """The kernel refused a watch (fs.inotify.max_user_watches): once, a warning."""
        with self._lock:
            self._limited = True
            if self._limit_told:
                return
            self._limit_told = True
            self._notes.append(limit_message("watches"))

    def _note(self, message: str) -> None:
        with self._lock:
            self._notes.append(message)

    # -- the agent's side, again ---------------------------------------------------------------
    def _next_due(self) -> float | None:
        dues = []
        if self._settling:
            dues.append(next(iter(self._settling.values())) + self._settle)
        if self._writing:
            dues.append(next(iter(self._writing.values())) + self._modified_wait)
        return min(dues) if dues else None

    def _check(self) -> None:
        """A watchdog thread that ended without being stopped fails the watch: warned once, the
        roots rescanned, and ``limited`` (nothing is watched any more)."""
        observer = self._observer
        if observer is not None and not self._failed and not self._stopped:
            threads = [observer, *observer.emitters]
            if self._reader is not None:
                threads.append(self._reader)
            for thread in threads:
                if thread.is_alive() or thread.stopped_event.is_set():
                    continue
                self._failed = True
                failure = getattr(thread, "failure", None)
                because = f": {_because(failure)}" if failure is not None else ""
                with self._lock:
                    self._limited = True
                    self._rescans = set()
                    self._everything = True
                    self._notes.append(
                        f"the file-system watch failed ({thread.name} ended{because}): events "
                        "are not seen any more; the periodic rescans cover the tree"
                    )
                break
        self._tell()

    def _tell(self) -> None:
        if not self._notes:
            return
        with self._lock:
            notes, self._notes = self._notes, []
        for message in notes:
            self._warn(message)


class _Handler(FileSystemEventHandler):
    """A root's events, to its Watch (the root is known without looking it up)."""

    def __init__(self, watch: Watch, root: _Root):
        self.watch, self.root = watch, root

    def dispatch(self, event: FileSystemEvent) -> None:
        self.watch._event(self.root, event)


# -- inotify: watchdog's reader, emitter and tree walk, each with what the Watch needs --------
if InotifyFD is not None:

    class _Reader(InotifyFD):
        """watchdog's inotify reader thread. It also tells when the kernel's queue overflowed
        (watchdog then logs, drops what it held and rebuilds its watches, but tells no
        handler), and keeps the exception that ends it."""

        def __init__(self, overflowed: Callable[[], None]):
            super().__init__()
            self.name = "rmmscan-watch-inotify"
            self._overflowed = overflowed
            self.failure: BaseException | None = None

        @property
        def watches(self) -> int:
            return len(self._watch_for_wd)

        def handle_event(self, event: InotifyEvent) -> None:
            if event.is_queue_overflow:
                self._overflowed()
            super().handle_event(event)

        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:  # the Watch's check warns with it
                self.failure = exc

    class _Emitter(InotifyEmitter):
        """watchdog's inotify emitter for one root, with the Watch's tree walk. A file or
        directory moved in from outside the root comes as a creation, one moved out as a
        deletion."""

        def __init__(
            self,
            event_queue: EventQueue,
            watch: ObservedWatch,
            *,
            timeout: float,
            event_filter: list[type[FileSystemEvent]] | None,
            inotify_fd: _Reader,
            scope: _Scope,
        ):
            super().__init__(
                event_queue, watch, timeout=timeout, event_filter=event_filter,
                inotify_fd=inotify_fd,
            )  # fmt: skip
            self.name = "rmmscan-watch-root"
            self._scope = scope
            self.failure: BaseException | None = None

        def on_thread_start(self) -> None:
            # InotifyEmitter's own, with _Group for InotifyWatchGroup. Runs in schedule(): a
            # root that cannot be watched raises there.
            self._inotify = _Group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                # Not IN_ATTRIB, which FileModifiedEvent brings: a change of times or mode
                # leaves the content as it was, and touch(1) storms would fill the queue.
                event_mask=self.get_event_mask_from_filter() & ~InotifyConstants.IN_ATTRIB,
                follow_symlink=False,
                scope=self._scope,
            )

        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:  # the Watch's check warns with it
                self.failure = exc

    @dataclass
    class _Group(InotifyWatchGroup):
        """watchdog's watches for one root, added by the sweep's rules (``_Scope``) instead of
        os.walk's, and with the kernel's refusal seen: watchdog ignores a directory it cannot
        watch, so on reaching fs.inotify.max_user_watches it would go on silently."""

        scope: _Scope | None = None
        _root_dev: int = field(default=-1, init=False)

        def _add_all_callbacks(self, path: bytes) -> None:
            """Watch ``path`` and the directories below it: the root (at the start, and again
            after an overflow), or a directory created or moved in."""
            scope = self.scope
            assert scope is not None
            if path == self.path:
                st = os.stat(path)
                if not stat.S_ISDIR(st.st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, "not a directory")
                self._root_dev = st.st_dev
                # The root itself is followed if it is a symlink, as the sweep follows a root.
                if self._watch(path, self.event_mask & ~_DONT_FOLLOW) != _WATCHED:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            else:
                try:
                    st = os.lstat(path)
                except OSError:
                    return  # gone already
                parent, name = os.path.split(path)
                if not stat.S_ISDIR(st.st_mode) or not scope.admits(
                    parent, name, st.st_dev, self._root_dev
                ):
                    return
                if self._watch(path, self.event_mask) != _WATCHED:
                    return
            if self.is_recursive:
                self._walk(path, scope)

        def _walk(self, top: bytes, scope: _Scope) -> None:
            """Breadth first: where the watch limit stops it, the shallow directories (a
            profile's Downloads, /usr/bin) have their watches, not one deep branch."""
            queue = collections.deque([top])
            while queue:
                directory = queue.popleft()
                try:
                    with os.scandir(directory) as it:
                        subdirs = [e for e in it if e.is_dir(follow_symlinks=False)]
                except OSError:
                    continue  # gone, or not readable: nothing below it is watched
                for entry in subdirs:
                    try:
                        dev = entry.stat(follow_symlinks=False).st_dev
                    except OSError:
                        continue
                    if not scope.admits(directory, entry.name, dev, self._root_dev):
                        continue
                    result = self._watch(entry.path, self.event_mask)
                    if result == _FULL:
                        return  # no watch left: the rest of the walk would be refused too
                    if result == _WATCHED:
                        queue.append(entry.path)

        def _watch(self, path: bytes, mask: int) -> int:
            """InotifyWatchGroup._add_callback, with the refusal told apart: the root's raises
            (schedule() reports it), another's is _FULL (the watch limit) or _SKIPPED. A
            directory watched already (``mkdir -p``: the walk from the top reached it before
            its own creation's event) is _SKIPPED too: its walk has been done."""
            if path in self._active_callbacks_by_path:
                return _SKIPPED
            try:
                wd = self._inotify_fd.add_callback(path, mask, self._callback, self._id)
            except OSError as exc:
                full = exc.errno == errno.ENOSPC
                if full:
                    assert self.scope is not None
                    self.scope.full()
                if path == self.path:
                    raise
                return _FULL if full else _SKIPPED
            if wd < 0:  # watchdog returns -1 for EACCES rather than raising
                return _SKIPPED
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path
            return _WATCHED

    _DONT_FOLLOW = InotifyConstants.IN_DONT_FOLLOW
    _WATCHED, _SKIPPED, _FULL = 0, 1, 2
