"""A JSON Lines file that rotates by size: `path`, then `path.1` … `path.KEEP` (oldest last).

A batch of rows is written whole, then the file is rotated if it reached ``max_bytes``: a row
is never split across two files, and the switch loses nothing (the old file is renamed, not
copied; the new one is opened before the next row). A collector that follows the file by name
(rsyslog's imfile, Azure Monitor Agent, Splunk's forwarder) sees the rename and reads on.
Files are created readable by the owner only: rows name the machine's files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .jsonl import dumps
from .sink import SinkError


class RotatingFileSink:
    def __init__(self, path: Path, max_bytes: int, keep: int):
        if keep < 1:
            raise ValueError("keep must be at least 1: a rotation must not discard rows")
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.name = str(path)
        self._out = None
        self._size = 0
        self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._out = os.fdopen(fd, "ab")
            self._size = os.fstat(fd).st_size
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write the rows: {exc.strerror or exc}") from None

    def write(self, rows: Sequence[dict]) -> None:
        data = "".join(dumps(row) + "\n" for row in rows).encode("ascii")
        try:
            self._out.write(data)
            self._out.flush()
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot write the rows: {exc.strerror or exc}") from None
        self._size += len(data)
        if self._size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self._out.close()
        try:
            for n in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        except OSError as exc:
            raise SinkError(f"{self.path}: cannot rotate: {exc.strerror or exc}") from None
        finally:
            self._open()

    def flush(self) -> None:
        pass  # every write is flushed

    def close(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            except OSError as exc:
                raise SinkError(f"{self.path}: cannot write the rows: {exc.strerror}") from None
