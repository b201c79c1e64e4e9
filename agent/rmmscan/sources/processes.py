"""Running processes as a source: each process's executable and every regular file it has
mapped (its loaded modules), offered with the process on the row (ScanSource "process", and
ProcessId, ProcessName and ProcessCommandLine from the candidate's ProcessRef).

``Processes.scan()`` offers a file once per process instance (pid and start time: pids are
reused) and file identity (device, inode, size, mtime, ctime: the sweep's cache key), so a
rescan offers only what is new or changed; a new process offers what it maps even when
another process's mapping of that file was offered before; an ended process is forgotten.

On Linux the mappings come from /proc/PID/maps, read with a bound, not from psutil's
memory_maps(): that reads /proc/PID/smaps, for which the kernel walks every mapping's pages to
count them, holding the process's memory-map lock meanwhile: ten to thirty times the cost of
maps, and it grows with the memory in use. psutil lists the processes and gives their name,
command line and start time; the executable's path is read from /proc/PID/exe, because psutil
drops the kernel's " (deleted)" and, where it may not read the link, guesses the path from
the command line, which the process chooses. Elsewhere (and when every portable path is
forced) psutil gives the executable and the mapped files, by path. Files of pseudo file
systems (a device's sysfs resource mapped by a driver's process) are not offered: reading
them can have effects.

A mapped file may be gone from disk (a payload that deletes itself, a memfd that never had a
name): it is read through the process, /proc/PID/exe or /proc/PID/map_files/START-END, and
the candidate keeps the path the process names it by, marked ``deleted``. What reading
another user's process needs (or a root process with capabilities the service lacks): its
executable and maps, CAP_SYS_PTRACE; the exact names of its mappings (map_files), also
CAP_DAC_READ_SEARCH; opening a mapping through map_files (a deleted module, a memfd), also
CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN; its files by path, read access to them. Without
CAP_SYS_PTRACE only its name, command line and start time can be read, and it is counted
unreadable.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import psutil

from ..portable import HAS_PROCFS
from .candidate import Candidate, FileChanged, Listing, ProcessRef
from .local import open_regular
from .localfile import changed_locally, key_of, listing_of
from .mounts import pseudo_devices

SOURCE = "process"
DELETED = " (deleted)"  # what the kernel appends to the path of an unlinked file

# Bounds on what one process can make a scan read and hold. A process with more distinct files
# mapped, or a longer maps file, is counted in ProcessScan.cut: the rest of its files are not
# looked at. Default kernels allow 65530 mappings; desktop processes map hundreds of files.
MAX_FILES = 8192
MAX_MAPS_BYTES = 64 << 20
_CHUNK = 1 << 16
# Characters of a command line kept: more than the row shows (rows/build.py cuts it at a word).
COMMAND_LINE_KEPT = 32768

_join = subprocess.list2cmdline if sys.platform == "win32" else " ".join


class ProcessFile(Candidate):
    """A file a running process maps. ``path`` is the path the process names it by; ``link``
    (/proc/PID/exe or /proc/PID/map_files/START-END), when set, reads the very file the
    process maps; ``deleted``: that path no longer leads to the file (deleted or replaced on
    disk since, or never on disk: a memfd, whose path is /memfd:NAME). ``listing`` is what
    the scan saw."""

    __slots__ = ("deleted", "full", "identity", "link", "listing", "process")

    def __init__(
        self,
        path: str,
        process: ProcessRef,
        st: os.stat_result,
        link: str | None = None,
        deleted: bool = False,
    ):
        folder, name = os.path.split(path)
        super().__init__(folder, name, SOURCE)
        self.full, self.process, self.link, self.deleted = path, process, link, deleted
        self.identity = (st.st_dev, st.st_ino)
        self.listing = listing_of(st)

    @property
    def path(self) -> str:
        return self.full

    @property
    def memfd(self) -> bool:
        """A file that never had a name on disk (memfd_create): a fileless payload's way."""
        return self.deleted and self.full.startswith("/memfd:")

    def open(self) -> tuple[BinaryIO, Listing]:
        """The file the process maps: through the process when it can be, else by its path
        (never for a deleted file: the path names another file or none). FileChanged when
        what opens is another file (the process ended and its pid was taken, or the path was
        replaced)."""
        if self.link is not None:
            try:
                stream, st = open_regular(self.link)
            except OSError:
                if self.deleted:
                    raise
            else:
                if (st.st_dev, st.st_ino) == self.identity:
                    return stream, listing_of(st)
                stream.close()
                if self.deleted:
                    raise FileChanged("the process no longer maps it")
        stream, st = open_regular(self.full)
        if (st.st_dev, st.st_ino) != self.identity:
            stream.close()
            raise FileChanged("its path names another file now")
        return stream, listing_of(st)

    changed = changed_locally


@dataclass(slots=True)
class ProcessScan:
    """What one scan found: the files to judge, and what it could not see."""

    files: list[ProcessFile] = field(default_factory=list)  # not offered by an earlier scan
    processes: int = 0  # seen, this service's own process aside
    # Processes whose executable or mappings could not be read: another user's without
    # CAP_SYS_PTRACE, zombies, processes that ended or whose pid was taken during the scan.
    unreadable: int = 0
    # Mapped files that could not be reached: deleted ones (or shared memory) without the
    # capability to open them through the process, paths that name another file by now.
    missed: int = 0
    cut: int = 0  # processes with more mapped files than MAX_FILES (or a longer maps file)


# A mapped file as found: (the path the process names it by, its stat, the link that reads it
# or None, deleted).
Found = tuple[str, os.stat_result, str | None, bool]


class Processes:
    """What was offered per process instance, across scans; one thread calls ``scan``."""

    def __init__(self, own_pid: int | None = None, max_remembered: int = 200_000):
        self.own_pid = os.getpid() if own_pid is None else own_pid
        # (process instance, file identity) pairs remembered at most; past it, files are
        # offered but not remembered, so the next scan offers them again.
        self.max_remembered = max_remembered
        self._offered: dict[tuple[int, float], frozenset[bytes]] = {}

    @property
    def remembered(self) -> int:
        return sum(map(len, self._offered.values()))

    def scan(self) -> ProcessScan:
        """Every process now: the files not offered before, and what could not be read.
        Nothing a process does (ending, becoming a zombie, refusing access) raises."""
        out = ProcessScan()
        offered: dict[tuple[int, float], frozenset[bytes]] = {}
        room = self.max_remembered
        pseudo = pseudo_devices()
        for proc in psutil.process_iter():
            if proc.pid == self.own_pid:
                continue
            out.processes += 1
            try:
                instance, ref, found = _read(proc, out)
            except (psutil.Error, OSError, ValueError):
                out.unreadable += 1
                continue
            before = self._offered.get(instance, frozenset())
            keys: list[bytes] = []
            seen: set[bytes] = set()
            for path, st, link, deleted in found:
                key = key_of(st)
                if key in seen or not stat.S_ISREG(st.st_mode) or st.st_dev in pseudo:
                    continue
                seen.add(key)
                keys.append(key)
                if key not in before:
                    out.files.append(ProcessFile(path, ref, st, link, deleted))
            if keys and room > 0:
                offered[instance] = frozenset(keys[:room])
                room -= min(len(keys), room)
        self._offered = offered
        return out


def _read(
    proc: psutil.Process, out: ProcessScan
) -> tuple[tuple[int, float], ProcessRef, list[Found]]:
    """One process: its instance, its ProcessRef, and the files it maps (its executable
    first). psutil.Error or OSError when it cannot be read or is no longer the process it
    was when the reading began."""
    with proc.oneshot():
        start = proc.create_time()
        ref = ProcessRef(proc.pid, proc.name(), _join(proc.cmdline())[:COMMAND_LINE_KEPT])
    if HAS_PROCFS and not ref.command_line and _kernel_thread(proc.pid):
        return (proc.pid, start), ref, []  # it maps nothing, but its links deny as a process's
    found = list(_procfs_files(proc.pid, out) if HAS_PROCFS else _portable_files(proc, out))
    if not proc.is_running():  # it ended, or its pid was taken: what was read is not its
        raise psutil.NoSuchProcess(proc.pid)
    return (proc.pid, start), ref, found


def _kernel_thread(pid: int) -> bool:
    """PF_KTHREAD in /proc/PID/stat's flags, which no process sets for itself (an empty
    command line or a parent of pid 2 can be had by any process)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read(4096).rpartition(b")")[2].split()
    return len(fields) > 6 and int(fields[6]) & 0x00200000 != 0


def _procfs_files(pid: int, out: ProcessScan) -> Iterator[Found]:
    exe = f"/proc/{pid}/exe"
    try:
        text = os.readlink(exe)
    except FileNotFoundError:
        text = None  # an exiting process has none; maps, read next, says whether it is gone
    if text is not None:
        st = os.stat(exe)
        path, deleted = _named(text, st)
        yield path, st, exe, deleted
    mapped, cut = _mappings(pid)
    out.cut += cut
    for ident, (span, shown) in mapped.items():
        link = f"/proc/{pid}/map_files/{os.fsdecode(span)}"
        try:
            text = os.readlink(link)  # exact: maps shows a newline in a name as \012
        except OSError:
            text = os.fsdecode(shown)
        try:
            st = os.stat(link)
        except OSError:
            st = _by_path(text, int(ident.split()[1]))
            if st is None:
                out.missed += 1
                continue
            link = None
        path, deleted = _named(text, st)
        yield path, st, link, deleted


def _named(text: str, st: os.stat_result) -> tuple[str, bool]:
    """The path the process names a mapped file by, and whether that path no longer leads to
    the file. A name may itself end in " (deleted)": then the path still leads to it."""
    if text.endswith(DELETED) and not _leads_to(text, st):
        return text[: -len(DELETED)], True
    return text, st.st_nlink == 0


def _leads_to(path: str, st: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except (OSError, ValueError):
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _by_path(text: str, inode: int) -> os.stat_result | None:
    """A mapping's stat by its path, when map_files may not be opened; only while the path
    leads to the mapped inode. The device is not compared: maps shows the file system's, and
    stat a btrfs subvolume's own."""
    if not text.startswith("/") or text.endswith(DELETED):
        return None
    try:
        st = os.stat(text)
    except (OSError, ValueError):
        return None
    return st if st.st_ino == inode else None


def _mappings(pid: int) -> tuple[dict[bytes, tuple[bytes, bytes]], bool]:
    """The distinct files /proc/PID/maps shows: "DEV INODE" → (the first mapping's address
    range, the path as maps shows it); and whether a bound cut the list short."""
    found: dict[bytes, tuple[bytes, bytes]] = {}
    fd = os.open(f"/proc/{pid}/maps", os.O_RDONLY | os.O_CLOEXEC)
    try:
        rest, total = b"", 0
        while chunk := os.read(fd, _CHUNK):
            total += len(chunk)
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                # "START-END PERMS OFFSET DEV INODE PATH" (proc(5)); inode 0: anonymous,
                # [heap], [stack], [vdso] and the like.
                fields = line.split(None, 5)
                if len(fields) < 6 or fields[4] == b"0":
                    continue
                ident = fields[3] + b" " + fields[4]
                if ident not in found:
                    if len(found) >= MAX_FILES:
                        return found, True
                    found[ident] = (fields[0], fields[5])
            if total >= MAX_MAPS_BYTES:
                return found, True
    finally:
        os.close(fd)
    return found, False


def _portable_files(proc: psutil.Process, out: ProcessScan) -> Iterator[Found]:
    """The executable and psutil's mapped files, by path (where psutil cannot list mappings,
    the executable alone)."""
    paths = [proc.exe()]
    memory_maps = getattr(proc, "memory_maps", None)
    if memory_maps is not None:
        paths += [m.path for m in memory_maps()]
    for path in paths:
        if not os.path.isabs(path):  # [heap], [anon] and the like
            continue
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            out.missed += 1
            continue
        yield path, st, None, False
