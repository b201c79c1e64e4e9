"""Opening local files safely: read-only, never blocking on a FIFO or device."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO


class NotRegular(OSError):
    """The path exists but is not a regular file (directory, FIFO, socket, device)."""


def describe_mode(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


# O_NONBLOCK: a FIFO swapped in after a stat cannot hang the open; O_NOCTTY: a terminal
# device cannot become our controlling terminal.
FILE_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NOINHERIT", 0)
)


def regular_fd(fd: int, message: str | None = None) -> os.stat_result:
    """fstat an open descriptor; close it and raise NotRegular unless it is a regular file."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(message or f"is {describe_mode(st.st_mode)}")
        return st
    except BaseException:
        os.close(fd)
        raise


def open_regular(path: str | bytes) -> tuple[BinaryIO, os.stat_result]:
    """Open a named file read-only, regular files only."""
    fd = os.open(path, FILE_FLAGS)
    st = regular_fd(fd)
    try:
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise
