"""JSON Lines: one row a line, UTF-8, every column present (null when empty)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from .sink import StreamSink


def dumps(row: dict) -> str:
    # ensure_ascii keeps every byte of output printable ASCII: names with control
    # characters or unusual Unicode cannot break a line or a terminal.
    return json.dumps(row, ensure_ascii=True, separators=(",", ":"))


class JsonlSink(StreamSink):
    def emit(self, rows: Sequence[dict]) -> None:
        self.out.write("".join(dumps(row) + "\n" for row in rows))
