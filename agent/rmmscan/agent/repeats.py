"""Rows the agent already sent, not sent again by a source that only catches up.

The same content at the same path reaches the agent more than once: the watch reports a new
file, then the first sweep still in progress reaches its folder; a folder rescanned because
its events were lost holds files the watch already reported; a file touched without a change
is an event too. Those rows say nothing new and are dropped here, in front of every sink. A
periodic rescan of every root is the exception: it reports again what is still there, as
every `rmmscan scan` does (docs/agent.md).

A file is known by its path, the SHA-256 of its content and, for the process source, the
process that maps it; the memory is bounded (the oldest are forgotten first) and holds a
16-byte digest per file.
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence

from ..rows.heartbeat import is_heartbeat

REMEMBERED = 100_000  # files; about 10 MiB


def identity(row: dict) -> bytes:
    text = f"{row.get('FolderPath')}\0{row.get('SHA256')}\0{row.get('ProcessId')}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class RepeatFilter:
    """A sink in front of the agent's sinks (the engine writes to it)."""

    def __init__(self, sinks: Sequence, remembered: int = REMEMBERED):
        self.sinks = list(sinks)
        self.remembered = remembered
        self.repeat = False  # True during a periodic rescan: everything goes out
        self.dropped = 0  # rows not sent again
        self._sent: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def write(self, rows: Sequence[dict]) -> None:
        sent = self._sent
        keys = [None if is_heartbeat(row) else identity(row) for row in rows]
        if not self.repeat:
            fresh = [row for row, key in zip(rows, keys, strict=True)
                     if key is None or key not in sent]  # fmt: skip
            self.dropped += len(rows) - len(fresh)
            rows = fresh
        for key in keys:
            if key is not None:
                sent[key] = None
                sent.move_to_end(key)
        while len(sent) > self.remembered:
            sent.popitem(last=False)
        if rows:
            for sink in self.sinks:
                sink.write(rows)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        """The sinks are the agent's to close."""
