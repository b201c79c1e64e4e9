"""CSV: a header of every column, then one row per line (RFC 4180 quoting, UTF-8).

Values are written as they are: the csv module quotes newlines and commas, so a hostile
file name cannot add a row or a column. Booleans as true/false, as Kusto writes them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import TextIO

from ..rows.columns import NAMES
from .sink import StreamSink


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class CsvSink(StreamSink):
    def __init__(self, out: TextIO, name: str = "standard output", owned: bool = False):
        super().__init__(out, name, owned)
        self.writer = csv.writer(out, lineterminator="\r\n")
        self.writer.writerow(NAMES)

    def emit(self, rows: Sequence[dict]) -> None:
        for row in rows:
            self.writer.writerow([_cell(row.get(name)) for name in NAMES])
