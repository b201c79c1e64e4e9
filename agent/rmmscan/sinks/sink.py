"""The sink contract: what every destination of rows promises the engine.

``write(rows)`` returns once the rows are as durable as the sink promises (a stream sink: handed
to the operating system; a forwarding sink: in its outbox on disk). It raises ``SinkError`` when
they cannot be delivered, and never drops a row silently. ``flush()`` pushes out whatever a sink
still buffers; ``close()`` flushes and releases what the sink opened (a file it was given by its
caller stays open). A sink is driven from one thread.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Protocol, TextIO


class SinkError(OSError):
    """Rows could not be delivered: the message says where and why."""


class Sink(Protocol):
    def write(self, rows: Sequence[dict]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _failed(name: str, exc: OSError) -> SinkError:
    return SinkError(f"cannot write the rows to {name}: {exc.strerror or exc}")


class StreamSink:
    """A sink that writes text to a stream; ``owned`` streams (a file opened for --output) are
    closed by ``close``, others (stdout) only flushed."""

    def __init__(self, out: TextIO, name: str = "standard output", owned: bool = False):
        self.out, self.name, self.owned = out, name, owned

    def write(self, rows: Sequence[dict]) -> None:
        with self._writing():
            self.emit(rows)
            self.out.flush()

    def emit(self, rows: Sequence[dict]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        with self._writing():
            self.out.flush()

    @contextmanager
    def _writing(self):
        try:
            yield
        except BrokenPipeError:
            raise  # the reader went away (`| head`): the caller says so, without a traceback
        except OSError as exc:
            raise _failed(self.name, exc) from None

    def close(self) -> None:
        """Buffered rows are written here: a failure loses rows, so it raises SinkError."""
        if not self.owned:
            self.flush()
            return
        try:
            self.out.close()
        except OSError as exc:
            raise _failed(self.name, exc) from None


def standard_output() -> TextIO:
    """Standard output for rows: UTF-8 whatever the locale (a name is never an encoding
    error), and buffered even under PYTHONUNBUFFERED or `python -u`.

    The text layer over an unbuffered file drops what a partial write leaves unwritten
    (python/cpython#85393), and a write to a full pipe is partial whenever a signal lands
    (SIGTERM, or SIGCHLD from a library's helper process): the reader got half a row and lost
    the ones after it. A buffered layer writes the rest.
    """
    if sys.stdout is not sys.__stdout__:
        return sys.stdout  # replaced by whoever runs us in-process (a test's capture): theirs
    sys.stdout.flush()
    raw = io.FileIO(sys.stdout.fileno(), "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", newline="")
