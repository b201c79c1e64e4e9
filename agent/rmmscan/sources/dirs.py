"""An open directory and what the walk does relative to it: list, stat and open children.

Two implementations behind one interface (the dissect.target way: an interface beside its
implementations). ``FdDir`` is used wherever the OS has openat (Linux, macOS, BSD): every
child is opened relative to the directory's descriptor with O_NOFOLLOW, so no path is resolved
twice, paths longer than PATH_MAX work, and a directory swapped for a symlink mid-walk cannot
redirect the walk. ``PathDir`` is the fallback (Windows): full paths, in the long-path form
(``\\\\?\\``) past 260 characters, and a link check before each open.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from .local import FILE_FLAGS, NotRegular, regular_fd

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NONBLOCK", 0)
HAS_OPENAT = os.open in os.supports_dir_fd and os.scandir in os.supports_fd


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
    """Windows refuses paths of 260 characters or more unless they are in the \\\\?\\ form."""
    if os.name != "nt" or len(path) < 248 or path.startswith("\\\\?\\"):
        return path
    path = os.path.abspath(path)
    if path.startswith("\\\\"):
        return "\\\\?\\UNC\\" + path[2:]
    return "\\\\?\\" + path


class PathDir:
    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path

    def _child(self, name: str) -> str:
        return long_path(os.path.join(self.path, name))

    @classmethod
    def open_root(cls, path: str) -> PathDir:
        if not stat.S_ISDIR(os.stat(long_path(path)).st_mode):
            raise NotADirectoryError(20, "Not a directory", path)
        return cls(path)

    def stat(self) -> os.stat_result:
        return os.stat(long_path(self.path))

    def scandir(self) -> Iterator[os.DirEntry]:
        return os.scandir(long_path(self.path))

    def stat_child(self, name: str, follow: bool) -> os.stat_result:
        return os.stat(self._child(name), follow_symlinks=follow)

    def open_dir(self, name: str, path: str, follow: bool) -> PathDir:
        st = os.stat(self._child(name), follow_symlinks=follow)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(20, "Not a directory", path)
        return PathDir(path)

    def open_file(self, name: str, follow: bool) -> int:
        full = self._child(name)
        if not follow and stat.S_ISLNK(os.lstat(full).st_mode):
            raise NotRegular("became a symbolic link")  # O_NOFOLLOW's ELOOP, by hand
        return os.open(full, FILE_FLAGS)

    def close(self) -> None:
        pass


def open_root(path: str, use_openat: bool = HAS_OPENAT) -> FdDir | PathDir:
    return FdDir.open_root(path) if use_openat else PathDir.open_root(path)


def open_regular(directory: FdDir | PathDir, name: str, follow: bool) -> tuple[int, os.stat_result]:
    """Open a listed file read-only; regular files only (it may have been swapped since)."""
    fd = directory.open_file(name, follow)
    return fd, regular_fd(fd, "not a regular file any more")
