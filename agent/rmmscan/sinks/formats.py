"""The output formats of the command line, by name: each a stream sink (sink.py)."""

from __future__ import annotations

from typing import TextIO

from .sink import StreamSink

# table: a block per file, for people; line: one line per detection (`path: RULE FOUND`);
# jsonl and csv: every column of every row, for machines.
FORMATS = ("table", "line", "jsonl", "csv")


def stream_sink(
    fmt: str, out: TextIO, name: str = "standard output", owned: bool = False
) -> StreamSink:
    if fmt == "jsonl":
        from .jsonl import JsonlSink as kind
    elif fmt == "csv":
        from .csv import CsvSink as kind
    elif fmt == "line":
        from .line import LineSink as kind
    elif fmt == "table":
        from .table import TableSink as kind
    else:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    return kind(out, name, owned)
