"""Rows that cannot be delivered are an error (exit 2, one clear line), never a silent loss."""

from __future__ import annotations

import subprocess
import sys

from conftest import PE_DIR, TEST_ROOT


def test_a_full_disk_is_exit_2_with_a_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rmmscan", "scan", str(PE_DIR / "dwsnet-srl.exe"),
         "--format", "jsonl", "--output", "/dev/full", "-q",
         "--trusted-roots", str(TEST_ROOT), "--state-dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "rmmscan: cannot write the rows to /dev/full: No space left on device"
    )
