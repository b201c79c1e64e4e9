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


def open_regular(path: str | bytes) -> tuple[BinaryIO, os.stat_result]:
    """Open read-only; O_NONBLOCK so that a FIFO swapped in after a stat cannot hang us."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"is {describe_mode(st.st_mode)}")
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise
