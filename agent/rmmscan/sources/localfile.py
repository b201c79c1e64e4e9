"""A file of the local file systems as a candidate: opened relative to its open directory
(dirs.py), read-only, regular files only, never through a symlink it was not told to follow.

Its cache key is the identity no user can fake: device, inode, size, mtime and ctime (ctime is
in it because nobody can set it: a file rewritten and `touch -d`-ed back to its old mtime still
changes key).
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from .candidate import Candidate, FileChanged, Listing
from .dirs import FdDir, PathDir, open_regular
from .local import open_regular as open_named

_KEY = struct.Struct("<QQqqq")


def key_of(st: os.stat_result) -> bytes:
    return _KEY.pack(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def listing_of(st: os.stat_result) -> Listing:
    # tuple.__new__: a NamedTuple's own constructor is a Python call, and this runs per file.
    return _new(Listing, (st.st_size, key_of(st), st.st_mtime_ns, st.st_ctime_ns))


_new = tuple.__new__


def changed_locally(_candidate: Candidate, stream: BinaryIO, listing: Listing) -> str | None:
    """Candidate.changed for a local file: the open file's identity against the listing's."""
    if key_of(os.fstat(stream.fileno())) != listing.key:
        return "changed while it was read"
    return None


class LocalFile(Candidate):
    """``directory`` stays open while the file is judged (the sweep's visit holds it)."""

    __slots__ = ("directory", "follow")

    def __init__(self, directory: FdDir | PathDir, name: str, follow: bool, source: str):
        # Candidate's fields set here, not through super(): one is made per file opened.
        self.folder, self.name, self.source = directory.path, name, source
        self.directory, self.follow = directory, follow

    def open(self) -> tuple[BinaryIO, Listing]:
        fd, st = open_regular(self.directory, self.name, self.follow)
        try:
            return os.fdopen(fd, "rb"), listing_of(st)
        except BaseException:
            os.close(fd)
            raise

    def sniff(self) -> tuple[Listing, BinaryIO | None]:
        # Two bytes with os.read, and no file object unless they are "MZ": the path of most
        # files of a sweep.
        fd, st = open_regular(self.directory, self.name, self.follow)
        try:
            if os.read(fd, 2) == b"MZ":
                return listing_of(st), os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return listing_of(st), None

    def reopen(self, listing: Listing) -> BinaryIO:
        fd, st = open_regular(self.directory, self.name, self.follow)
        if key_of(st) != listing.key:
            os.close(fd)
            raise FileChanged("changed since it was listed")
        return os.fdopen(fd, "rb")

    changed = changed_locally


class NamedFile(Candidate):
    """A local file named by its path (`rmmscan inspect FILE`): followed if a symlink, as a
    user naming it expects; still regular files only, never blocking on a FIFO."""

    __slots__ = ("full",)

    def __init__(self, path: str | bytes, source: str):
        full = os.path.abspath(os.fsdecode(path))
        folder, name = os.path.split(full)
        super().__init__(folder, name, source)
        self.full = full

    @property
    def path(self) -> str:
        return self.full

    def open(self) -> tuple[BinaryIO, Listing]:
        stream, st = open_named(self.full)
        return stream, listing_of(st)

    changed = changed_locally
