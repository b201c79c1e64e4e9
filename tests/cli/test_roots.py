"""Roots given twice, or one inside another, are swept once: each file is reported once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from rmmscan.cli.scan import distinct_roots

from conftest import PE_DIR, TEST_ROOT


def test_distinct_roots_keeps_the_outermost_in_order(tmp_path):
    a, c, ab = str(tmp_path / "a"), str(tmp_path / "c"), str(tmp_path / "ab")
    for d in ("a/b/c", "c", "ab"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    got = distinct_roots([a + "/b", c, a, a + "/b/c", c, ab])
    assert got == [c, a, ab]
    assert distinct_roots(["/"]) == ["/"]
    assert distinct_roots(["/tmp", "/"]) == ["/"]
    # a root that does not exist stays, so that it is reported as missing
    assert distinct_roots([a, a + "/missing"]) == [a, a + "/missing"]
    assert distinct_roots([a + "/missing", a]) == [a + "/missing", a]


def test_overlapping_roots_report_each_file_once(tmp_path):
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    shutil.copy(PE_DIR / "dwsnet-srl.exe", inner / "x.exe")
    proc = subprocess.run(
        [sys.executable, "-m", "rmmscan", "scan", str(inner), str(tmp_path), str(inner / "x.exe"),
         "--format", "jsonl", "-q", "--trusted-roots", str(TEST_ROOT),
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["FolderPath"] for r in rows} == {str(inner / "x.exe")}
    assert len(rows) == len({r["RuleId"] for r in rows})  # one row per rule, not per root
