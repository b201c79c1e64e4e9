"""JSON Lines: one row a line, UTF-8, every column present (null when empty)."""

from __future__ import annotations

import json
from typing import TextIO


def dumps(row: dict) -> str:
    # ensure_ascii keeps every byte of output printable ASCII: names with control
    # characters or unusual Unicode cannot break a line or a terminal.
    return json.dumps(row, ensure_ascii=True, separators=(",", ":"))


class JsonlSink:
    def __init__(self, out: TextIO):
        self.out = out

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            self.out.write(dumps(row) + "\n")
        self.out.flush()
