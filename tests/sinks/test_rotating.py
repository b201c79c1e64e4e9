"""The rotating JSONL file: every row whole, in one file, none lost at a switch."""

from __future__ import annotations

import json
import os
import stat

import pytest

from rmmscan.sinks.rotating import RotatingFileSink
from rmmscan.sinks.sink import SinkError


def _rows(start: int, n: int) -> list[dict]:
    return [
        {"ReportId": i, "FolderPath": f"C:\\t\\{i}\n" + "x" * 200}
        for i in range(start, start + n)
    ]


def test_rotation_keeps_every_row_whole_and_the_newest_files(tmp_path):
    path = tmp_path / "log" / "rows.jsonl"
    sink = RotatingFileSink(path, max_bytes=5000, keep=3)
    for start in range(0, 200, 7):
        sink.write(_rows(start, 7))
    sink.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    files = [path.with_name(f"rows.jsonl.{n}") for n in (3, 2, 1)] + [path]
    assert all(f.exists() for f in files)
    assert not path.with_name("rows.jsonl.4").exists()
    seen = []
    for f in files:  # oldest first
        data = f.read_text("ascii")
        assert data.endswith("\n")
        seen += [json.loads(line)["ReportId"] for line in data.splitlines()]
    # What the kept files hold is the newest rows, consecutive, ending with the last.
    assert seen == list(range(seen[0], 203))
    assert all(f.stat().st_size < 5000 + 7 * 300 for f in files)


def test_a_sink_that_cannot_write_says_where(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SinkError, match=f"{blocker}/rows.jsonl: cannot write the rows"):
        RotatingFileSink(blocker / "rows.jsonl", 1000, 1)
