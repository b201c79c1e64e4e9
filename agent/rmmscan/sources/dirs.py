"""An open directory and what the walk does relative to it: list, stat and open children.

Two implementations behind one interface (the dissect.target way: an interface beside its
implementations). ``FdDir`` is used wherever the OS has openat (Linux, macOS, BSD): every
child is opened relative to the directory's descriptor with O_NOFOLLOW, so no path is resolved
twice, paths longer than PATH_MAX work, and a directory swapped for a symlink mid-walk cannot
redirect the walk. ``PathDir`` is the fallback (Windows): full paths, in the long-path form
(``\\\\?\\``) past 260 characters, and a link check before each open. Which one a walk uses is
rmmscan.portable's choice (``RMMSCAN_PORTABLE=1`` makes it PathDir here too).
"""

from __future__ import annotations

import errno
import ntpath
import os
import stat
from collections.abc import Iterator

from .. import portable
from .local import FILE_FLAGS, NotRegular, regular_fd

# FdDir is the openat way, and every OS with openat has O_NOFOLLOW: it is part of that way,
# not a choice (a forced portable run still walks with FdDir where a test asks for it).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NONBLOCK", 0)
HAS_OPENAT = portable.HAS_OPENAT


class FdDir:
    __slots__ = ("fd", "path")

    def __init__(self, path: str, fd: int):
        self.path, self.fd = path, fd

    @classmethod
    def open_root(cls, path: str) -> FdDir:
        return cls(path, os.open(path, _DIR_FLAGS))

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def scandir(self) -> Iterator[os.DirEntry]:
        return os.scandir(self.fd)

    def stat_child(self, name: str, follow: bool) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd, follow_symlinks=follow)

    def open_dir(self, name: str, path: str, follow: bool) -> FdDir:
        return FdDir(path, os.open(name, _DIR_FLAGS | (0 if follow else _NOFOLLOW), dir_fd=self.fd))

    def open_file(self, name: str, follow: bool) -> int:
        return os.open(name, FILE_FLAGS | (0 if follow else _NOFOLLOW), dir_fd=self.fd)

    def close(self) -> None:
        os.close(self.fd)


def long_path(path: str) -> str:
    """The path as Windows opens it: past 260 characters only in the \\\\?\\ form. Elsewhere
    the path as it is (Linux has no such form, and PATH_MAX is the openat way's business)."""
    if os.name != "nt" or len(path) < LONG:
        return path
    verbatim = long_form(path)
    if verbatim == path and not path.startswith(_VERBATIM):
        # Relative, or rooted without a drive. Only then abspath (GetFullPathNameW): it also
        # strips trailing dots and spaces, which a real name listed by scandir may have.
        verbatim = long_form(os.path.abspath(path))
    return verbatim


# CreateDirectoryW's limit: MAX_PATH (260) less room for an 8.3 name; at this length a path
# may already be refused, and the prefix costs nothing below it.
LONG = 248
_VERBATIM = ("\\\\?\\", "\\\\.\\")  # verbatim already, or a device path: passed as they are


def long_form(path: str) -> str:
    """An absolute Windows path in the \\\\?\\ form, which Windows hands to the file system
    untouched; so the path is normalised first as Windows would have done without the prefix
    (separators to backslashes, "." and ".." resolved). ``C:\\a`` becomes ``\\\\?\\C:\\a``,
    ``\\\\server\\share\\a`` becomes ``\\\\?\\UNC\\server\\share\\a``. A path that is not absolute
    (``a``, ``\\a``, ``C:a``) or is verbatim already comes back as it is."""
    if path.startswith(_VERBATIM):
        return path
    drive, rest = ntpath.splitdrive(path)
    if not drive or not rest.startswith(("\\", "/")):
        return path
    path = ntpath.normpath(path)
    if path.startswith("\\\\"):
        return "\\\\?\\UNC\\" + path[2:]
    return "\\\\?\\" + path


class PathDir:
    """A directory by its path. Opening one starts its listing, as FdDir's open does: a
    directory this user may not list fails at the open, where the walk reports it (an
    unreadable root is an error), not later as an empty listing."""

    __slots__ = ("_listing", "path")

    def __init__(self, path: str, listing: Iterator[os.DirEntry] | None = None):
        self.path, self._listing = path, listing

    def _child(self, name: str) -> str:
        return long_path(os.path.join(self.path, name))

    @classmethod
    def _open(cls, path: str, os_path: str, st: os.stat_result) -> PathDir:
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        return cls(path, os.scandir(os_path))

    @classmethod
    def open_root(cls, path: str) -> PathDir:
        os_path = long_path(path)
        return cls._open(path, os_path, os.stat(os_path))

    def stat(self) -> os.stat_result:
        return os.stat(long_path(self.path))

    def scandir(self) -> Iterator[os.DirEntry]:
        listing, self._listing = self._listing, None
        return listing if listing is not None else os.scandir(long_path(self.path))

    def stat_child(self, name: str, follow: bool) -> os.stat_result:
        return os.stat(self._child(name), follow_symlinks=follow)

    def open_dir(self, name: str, path: str, follow: bool) -> PathDir:
        # A symlink where a directory was listed is not a directory here (lstat), and the
        # walk counts it vanished, as FdDir's ELOOP.
        os_path = self._child(name)
        return PathDir._open(path, os_path, os.stat(os_path, follow_symlinks=follow))

    def open_file(self, name: str, follow: bool) -> int:
        full = self._child(name)
        if follow:
            return os.open(full, FILE_FLAGS)
        if stat.S_ISLNK(os.lstat(full).st_mode):
            raise NotRegular("became a symbolic link")  # O_NOFOLLOW's ELOOP, by hand
        # Where the OS has O_NOFOLLOW it also closes the window between lstat and open.
        return os.open(full, FILE_FLAGS | portable.O_NOFOLLOW)

    def close(self) -> None:
        listing, self._listing = self._listing, None
        if listing is not None:
            listing.close()


def open_root(path: str, use_openat: bool = HAS_OPENAT) -> FdDir | PathDir:
    return FdDir.open_root(path) if use_openat else PathDir.open_root(path)


def open_regular(directory: FdDir | PathDir, name: str, follow: bool) -> tuple[int, os.stat_result]:
    """Open a listed file read-only; regular files only (it may have been swapped since)."""
    fd = directory.open_file(name, follow)
    return fd, regular_fd(fd, "not a regular file any more")
