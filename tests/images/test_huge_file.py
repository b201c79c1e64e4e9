"""`rmmscan image` on a file whose recorded size is huge: an ext4 inode edited to 128 TiB.

The volume is built offline (``mke2fs -d``, tests/images/build.py ext_volume) from a tree of
two signed samples; ``debugfs -w`` then sets one file's size to 128 TiB in a copy of the image,
without mounting it. Read to its recorded end, that file is 128 TiB of zeros: hours. Over the
read bound (4 GiB by default, `--max-read`), it is not hashed or verified: the scan finishes in
seconds, the file's detection is kept with its signature, its rows are marked
``too_large_to_read`` and ``NotChecked``, and the other file is read as usual.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.images.build import ext_volume, run

from conftest import PE_DIR, TEST_ROOT

RMMSCAN = [sys.executable, "-m", "rmmscan"]
HUGE = 1 << 47  # 128 TiB
FILE_SIGNATURE = "Remote Management and Monitoring tool - DWService - File Signature"
SAMPLE_SHA256 = "f1b24b3fcf2d100416273244a539d0d37061e85699bebe91cc567614f028211f"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """The volume with Tools/huge.exe (dwsnet-ou.exe, its size set to 128 TiB) and
    Tools/normal.exe (the same sample, as it is)."""
    work = tmp_path_factory.mktemp("huge")
    tree = work / "tree"
    (tree / "Tools").mkdir(parents=True)
    for name in ("huge.exe", "normal.exe"):
        shutil.copyfile(PE_DIR / "dwsnet-ou.exe", tree / "Tools" / name)
    edited = work / "huge.img"
    shutil.copyfile(ext_volume(tree, work / "ext4.img", "ext4"), edited)
    run("debugfs", "-w", "-R", f"sif /Tools/huge.exe size {HUGE}", edited)
    stat = run("debugfs", "-R", "stat /Tools/huge.exe", edited)
    assert f"Size: {HUGE}" in stat, stat  # the edit is in the image bytes
    return edited


def test_a_file_of_a_huge_recorded_size_is_found_in_seconds_without_being_read(image, tmp_path):
    start = time.monotonic()
    proc = subprocess.run(
        [*RMMSCAN, "image", str(image), "--format", "jsonl", "--state-dir", str(tmp_path),
         "--trusted-roots", str(TEST_ROOT), "--no-system-roots", "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    took = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr  # detections
    assert took < 60, took
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    by_name = {}
    for row in rows:
        by_name.setdefault(row["FileName"], []).append(row)
    assert set(by_name) == {"huge.exe", "normal.exe"}

    huge = by_name["huge.exe"]
    assert FILE_SIGNATURE in {r["RuleName"] for r in huge}  # the finding is kept
    for row in huge:
        assert row["FolderPath"] == "\\\\?\\image\\p0\\Tools\\huge.exe"
        assert row["FileSize"] == HUGE
        assert row["Signer"] == "DWSNET OÜ"
        assert row["SignerHash"] == "5da663ece3a8a5a29810b4f8fc98c85cc137090a"
        assert row["CertificateSerialNumber"] == "008a3f5c2e9b1d4f6071a8c3e5d7f90b12"
        assert "too_large_to_read" in json.loads(row["Anomalies"])
        assert row["VerificationStatus"] == "NotChecked"
        assert row["VerificationDetail"] == (
            "not read: 140,737,488,355,328 bytes, more than the 4 GiB read bound (--max-read)"
        )
        assert (row["SHA1"], row["SHA256"], row["MD5"]) == (None, None, None)

    (normal,) = [r for r in by_name["normal.exe"] if r["RuleName"] == FILE_SIGNATURE]
    assert normal["VerificationStatus"] == "Ok" and normal["SHA256"] == SAMPLE_SHA256
    assert "too_large_to_read" not in json.loads(normal["Anomalies"])

    assert (
        "rmmscan: \\\\?\\image\\p0\\Tools\\huge.exe: not hashed or verified: "
        "140,737,488,355,328 bytes, more than the 4 GiB read bound (--max-read)"
    ) in proc.stderr
    assert "not read: unreadable: 1" in proc.stderr.splitlines()
