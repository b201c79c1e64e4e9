"""The candidate contract: one file offered by a source for judgement (engine/engine.py).

Every source (the local sweep, a watch event, a running process, a file inside a disk image)
hands the engine the same thing: where the file is (its folder and name, for the path
columns), how to open it, and how to recognise it again. A ``Listing`` is what the source
knows of the file without reading it: its size and the key the scan cache stores it under,
unique within the source's ``scope`` (the local file systems are the scope ''; an image is
its evidence id). Two equal keys in one scope promise equal contents.

``open()`` returns a seekable, read-only binary stream of the file, positioned at its start,
with the listing of what was opened; ``sniff()`` opens it for its first two bytes and keeps it
open only when they are "MZ" (most files are not PE files: the cheap path matters).
``reopen(listing)`` opens it again and raises ``FileChanged`` when it is no longer the listed
file; ``changed(stream, listing)`` says,
after reading, why what was read may not be the listed file (or None).
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, NamedTuple

# A cache key: five 64-bit numbers that change whenever the content may have
# (for a local file: device, inode, size, mtime and ctime in nanoseconds).
KEY_SIZE = 40


class FileChanged(OSError):
    """The file is no longer the one that was listed (replaced, truncated, grown)."""


class ProcessRef(NamedTuple):
    """The running process a file was found mapped in (its row's Process* columns)."""

    pid: int
    name: str
    command_line: str


class Listing(NamedTuple):  # a tuple: made for every file a sweep opens
    size: int
    key: bytes
    mtime_ns: int | None = None
    ctime_ns: int | None = None


class Candidate:
    """A file to judge. Subclasses are the sources' own kinds of file."""

    __slots__ = ("folder", "name", "source")

    scope = ""  # of the scan cache
    origin = None  # a file of an image: (evidence, partition, snapshot), its columns
    process: ProcessRef | None = None  # a file a running process has mapped
    sep = os.sep  # of the paths the source names: an image of Windows has "\\" anywhere

    def __init__(self, folder: str, name: str, source: str):
        self.folder, self.name, self.source = folder, name, source

    @property
    def path(self) -> str:
        return join(self.folder, self.name, self.sep)

    def open(self) -> tuple[BinaryIO, Listing]:
        raise NotImplementedError

    def sniff(self) -> tuple[Listing, BinaryIO | None]:
        """The listing, and the stream when the file starts with "MZ" (else it is closed)."""
        stream, listing = self.open()
        try:
            if stream.read(2) == b"MZ":
                return listing, stream
        except BaseException:
            stream.close()
            raise
        stream.close()
        return listing, None

    def reopen(self, listing: Listing) -> BinaryIO:
        stream, now = self.open()
        if now.key != listing.key:
            stream.close()
            raise FileChanged("changed since it was listed")
        return stream

    def changed(self, stream: BinaryIO, listing: Listing) -> str | None:
        return None


class MemoryFile(Candidate):
    """A file already in memory (a process image, a file carved from an image, a test)."""

    __slots__ = ("data", "key", "sep")

    def __init__(
        self, folder: str, name: str, data: bytes, key: bytes, source: str, sep: str = ""
    ):
        super().__init__(folder, name, source)
        self.data, self.key = data, key
        self.sep = sep or ("\\" if is_windows_path(folder) else "/")

    def open(self) -> tuple[BinaryIO, Listing]:
        return io.BytesIO(self.data), Listing(len(self.data), self.key)


def join(directory: str, name: str, sep: str = os.sep) -> str:
    """os.path.join without its checks (it runs for every file): C:\\ + x, /a + x."""
    ends = _ENDS.get(sep) or (sep,)
    return directory + name if directory.endswith(ends) else directory + sep + name


def is_windows_path(path: str) -> bool:
    """C:\\..., C:/... or \\\\server\\share: a path of a Windows file system."""
    return (len(path) > 1 and path[1] == ":") or path.startswith("\\\\")


# What ends a folder already: a POSIX name may end in a backslash, a Windows path in either.
_ENDS = {"/": ("/",), "\\": ("\\", "/")}
