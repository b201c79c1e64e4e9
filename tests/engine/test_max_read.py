"""The read bound (`--max-read`, Options.max_read): a file larger than it is never read whole.

Hashing and verification read the whole file; a PE's contents lie within 4 GiB (32-bit file
offsets), so a larger file is a PE with data appended or a size that lies (a sparse file),
whose zeros would be read for hours. Such a file keeps its signature rows and is judged by the
rules (a DWSNET-signed one is still a detection), each row marked ``too_large_to_read``,
``NotChecked`` with the reason, and without hashes; the scan names it on stderr and counts it
as not read, and does not cache it.

Every check runs the real command on a real signed sample: a sparse 6 GiB copy (no disk, and
no test hashes 6 GiB) for the default bound, and small bounds on the 8 KiB sample on both sides
of its size, so that a bound ignored or always applied fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PE_DIR, TEST_ROOT

RMMSCAN = [sys.executable, "-m", "rmmscan"]
SAMPLE = PE_DIR / "dwsnet-ou.exe"  # signed by "DWSNET OÜ", Ok with the test root
SAMPLE_SIZE = 8408
SAMPLE_SHA256 = "f1b24b3fcf2d100416273244a539d0d37061e85699bebe91cc567614f028211f"
FILE_SIGNATURE = "Remote Management and Monitoring tool - DWService - File Signature"
TOO_LARGE = "too_large_to_read"
BIG = 6 << 30  # past the default bound of 4 GiB
SIZES = ("bytes, or a whole number with a unit: \"4G\", \"512M\", \"100K\" (K = 1024); "
         "0 for no bound")  # fmt: skip


def rmmscan(*args: str | Path, timeout: float = 120) -> tuple[int, list[dict], str, float]:
    """Exit status, JSON rows, stderr and seconds taken of one command."""
    start = time.monotonic()
    proc = subprocess.run(
        [*RMMSCAN, *map(str, args)], capture_output=True, timeout=timeout, check=False
    )
    took = time.monotonic() - start
    out = proc.stdout.decode("utf-8")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, rows, proc.stderr.decode("utf-8", "replace"), took


def scan(path: Path, state: Path, *more: str) -> tuple[int, list[dict], str, float]:
    return rmmscan(
        "scan", path, "--format", "jsonl", "--state-dir", state, "--no-progress",
        "--trusted-roots", TEST_ROOT, "--no-system-roots", *more,
    )  # fmt: skip


def sparse(path: Path, size: int) -> Path:
    """The signed sample at offset 0 of a file of `size` bytes, the rest a hole."""
    path.write_bytes(SAMPLE.read_bytes())
    os.truncate(path, size)
    assert path.stat().st_blocks * 512 < 1 << 20, "the file system does not keep holes"
    return path


def detection(rows: list[dict]) -> dict:
    (row,) = [r for r in rows if r["RuleName"] == FILE_SIGNATURE]
    return row


def assert_not_read(row: dict, size: int, bound: str) -> None:
    """The row of a file over the bound: its signature as read, the bound's marks."""
    assert row["Signer"] == "DWSNET OÜ"
    assert row["CertificateSerialNumber"] == "008a3f5c2e9b1d4f6071a8c3e5d7f90b12"
    assert row["SignerHash"] == "5da663ece3a8a5a29810b4f8fc98c85cc137090a"
    assert row["FileSize"] == size
    assert TOO_LARGE in json.loads(row["Anomalies"])
    assert row["VerificationStatus"] == "NotChecked"
    assert row["IsTrusted"] is False
    assert row["VerificationDetail"] == (
        f"not read: {size:,} bytes, more than the {bound} read bound (--max-read)"
    )
    assert (row["SHA1"], row["SHA256"], row["MD5"]) == (None, None, None)


def assert_read(row: dict) -> None:
    assert row["VerificationStatus"] == "Ok" and row["IsTrusted"] is True
    assert row["SHA256"] == SAMPLE_SHA256
    assert TOO_LARGE not in json.loads(row["Anomalies"])


def summary_not_read(err: str) -> str:
    (line,) = [x for x in err.splitlines() if x.startswith("not read: ")]
    return line


# -- the default bound: a sparse 6 GiB file -------------------------------------------------


def test_a_sparse_file_past_4_gib_is_found_quickly_without_being_read(tmp_path):
    folder = tmp_path / "tree"
    folder.mkdir()
    big = sparse(folder / "installer.exe", BIG)
    code, rows, err, took = scan(folder, tmp_path / "state")
    assert code == 1, err  # a detection, whatever was not read
    assert took < 60, took  # the whole file, hashed and verified, takes minutes
    assert_not_read(detection(rows), BIG, "4 GiB")
    assert all(TOO_LARGE in json.loads(r["Anomalies"]) for r in rows)
    assert f"rmmscan: {big}: not hashed or verified: 6,442,450,944 bytes, more than the 4 GiB " \
        "read bound (--max-read)" in err  # fmt: skip
    assert summary_not_read(err) == "not read: unreadable: 1"


def test_a_file_past_the_bound_is_not_cached_and_reads_the_same_again(tmp_path):
    folder = tmp_path / "tree"
    folder.mkdir()
    sparse(folder / "installer.exe", BIG)
    state = tmp_path / "state"
    code1, rows1, _, _ = scan(folder, state)
    code2, rows2, err2, _ = scan(folder, state)
    assert code1 == code2 == 1
    stable = [{k: v for k, v in r.items() if k not in ("Timestamp", "ReportId")}
              for r in rows1]  # fmt: skip
    assert stable == [{k: v for k, v in r.items() if k not in ("Timestamp", "ReportId")}
                      for r in rows2]  # fmt: skip
    assert "from the cache: 0" in err2.splitlines()[-1], err2
    assert summary_not_read(err2) == "not read: unreadable: 1"


def test_inspect_bounds_its_reads_too(tmp_path):
    big = sparse(tmp_path / "installer.exe", BIG)
    code, _, err, took = rmmscan(
        "inspect", big, "--trusted-roots", TEST_ROOT, "--no-system-roots",
        "--state-dir", tmp_path / "state",
    )  # fmt: skip
    assert took < 60, took
    assert code == 2, err  # reported, but not read whole
    assert "not hashed or verified: 6,442,450,944 bytes, more than the 4 GiB read bound" in err


# -- small bounds, on both sides of the 8 KiB sample's size ----------------------------------


@pytest.mark.parametrize(("bound", "shown"), [("4K", "4 KiB"), ("8407", "8,407 bytes")])
def test_a_bound_below_the_size_marks_the_rows(tmp_path, bound, shown):
    code, rows, err, _ = scan(SAMPLE, tmp_path / "state", "--max-read", bound)
    assert code == 1, err
    assert_not_read(detection(rows), SAMPLE_SIZE, shown)
    assert "not hashed or verified: 8,408 bytes" in err
    assert summary_not_read(err) == "not read: unreadable: 1"


@pytest.mark.parametrize("bound", ["1M", "8408", "0"])
def test_a_bound_at_or_above_the_size_or_none_reads_the_file(tmp_path, bound):
    code, rows, err, _ = scan(SAMPLE, tmp_path / "state", "--max-read", bound)
    assert code == 1, err
    assert rows and all(r["VerificationStatus"] == "Ok" for r in rows)
    assert_read(detection(rows))
    assert "not read" not in err and "read bound" not in err


def test_the_bound_holds_over_what_the_cache_recorded(tmp_path):
    """A record holding the file's hashes and verdict (read under a wider bound) does not
    change the rows of a narrower one; and back again, the record serves."""
    state = tmp_path / "state"
    assert_read(detection(scan(SAMPLE, state, "--max-read", "1M")[1]))
    code, rows, err, _ = scan(SAMPLE, state, "--max-read", "4K")
    assert code == 1, err
    assert_not_read(detection(rows), SAMPLE_SIZE, "4 KiB")
    assert_read(detection(scan(SAMPLE, state, "--max-read", "1M")[1]))


def test_a_quiet_file_judged_under_a_wider_bound_is_judged_again(tmp_path):
    """A signed file no rule matches is remembered as judged; under a bound it is over, that
    judgement does not hold (its rows are not the same), and the file is reported."""
    benign = PE_DIR / "benign.exe"
    state = tmp_path / "state"
    code, rows, err, _ = scan(benign, state, "--max-read", "1M")
    assert (code, rows) == (0, []), err
    code, rows, err, _ = scan(benign, state, "--max-read", "4K")
    assert (code, rows) == (0, []), err  # still no detection; counted as not read
    assert summary_not_read(err) == "not read: unreadable: 1"
    code, rows, err, _ = scan(benign, state, "--max-read", "4K", "--emit", "signed")
    ((row),) = rows
    assert row["Signer"] == "Contoso Tools Ltd" and row["VerificationStatus"] == "NotChecked"
    assert TOO_LARGE in json.loads(row["Anomalies"])


def test_an_unsigned_pe_past_the_bound_stays_unsigned(tmp_path):
    code, rows, err, _ = scan(PE_DIR / "unsigned.exe", tmp_path / "s", "--max-read", "1K",
                              "--emit", "all")  # fmt: skip
    assert code == 0, err  # no detection; the file is counted as not read
    assert summary_not_read(err) == "not read: unreadable: 1"
    ((row),) = rows
    assert row["IsSigned"] is False and row["VerificationStatus"] == "Unsigned"
    assert row["VerificationDetail"] is None and row["SHA256"] is None
    assert TOO_LARGE in json.loads(row["Anomalies"])


def test_inspect_takes_the_bound_in_both_formats(tmp_path):
    base = ("inspect", SAMPLE, "--trusted-roots", TEST_ROOT, "--no-system-roots",
            "--state-dir", tmp_path / "state")  # fmt: skip
    code, rows, err, _ = rmmscan(*base, "--format", "jsonl", "--max-read", "4K")
    assert code == 2
    assert "not hashed or verified: 8,408 bytes, more than the 4 KiB read bound" in err
    ((row),) = rows
    assert_not_read(row, SAMPLE_SIZE, "4 KiB")
    proc = subprocess.run([*RMMSCAN, *map(str, base), "--max-read", "4K"], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 2
    assert "NotChecked - not read: 8,408 bytes, more than the 4 KiB read bound" in proc.stdout
    assert TOO_LARGE in proc.stdout and "SHA256" not in proc.stdout
    proc = subprocess.run([*RMMSCAN, *map(str, base), "--max-read", "1M"], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert SAMPLE_SHA256 in proc.stdout and TOO_LARGE not in proc.stdout


# -- what is refused --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["4X", "-1", "1.5G", "", "4GB", "G"])
@pytest.mark.parametrize("command", ["scan", "image", "inspect"])
def test_a_bad_bound_is_refused_naming_the_value_and_the_forms(tmp_path, command, value):
    code, rows, err, _ = rmmscan(command, SAMPLE, f"--max-read={value}")
    assert code == 2 and rows == []
    assert f"error: argument --max-read: {value!r}: must be {SIZES}" in err, err


def test_the_configuration_file_takes_the_bound_and_the_command_line_wins(tmp_path):
    config = tmp_path / "rmmscan.toml"
    config.write_text('max_read = "4K"\n')
    config.chmod(0o600)
    code, rows, err, _ = scan(SAMPLE, tmp_path / "s1", "--config", str(config))
    assert code == 1, err
    assert_not_read(detection(rows), SAMPLE_SIZE, "4 KiB")
    code, rows, err, _ = scan(SAMPLE, tmp_path / "s2", "--config", str(config), "--max-read", "1M")
    assert code == 1, err
    assert_read(detection(rows))


@pytest.mark.parametrize("value", ['"4X"', "-1", "1.5", "true", '"1.5G"'])
def test_a_bad_bound_in_the_configuration_names_its_line_and_the_forms(tmp_path, value):
    config = tmp_path / "rmmscan.toml"
    config.write_text(f'flush_timeout = "30s"\nmax_read = {value}\n')
    config.chmod(0o600)
    code, _, err, _ = rmmscan("config", "check", config)
    assert code == 2
    assert err.strip() == f"rmmscan: {config}:2: max_read: must be {SIZES}", err
