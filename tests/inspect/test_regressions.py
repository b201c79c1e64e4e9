"""Every input in tests/regressions/ (minimized fuzzer findings) is inspected cleanly."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rmmscan.inspect import Inspector, Status, inspect_stream, version_info
from rmmscan.rows.build import signature_rows

from conftest import TEST_ROOT

REGRESSIONS = Path(__file__).resolve().parents[1] / "regressions"
INPUTS = sorted(p for p in REGRESSIONS.iterdir() if p.suffix == ".bin")
INSPECTOR = Inspector([TEST_ROOT])


def test_every_input_is_described():
    notes = (REGRESSIONS / "README.md").read_text("utf-8")
    assert INPUTS
    for path in INPUTS:
        assert f"`{path.name}`" in notes, path.name


@pytest.mark.parametrize("path", INPUTS, ids=[p.name for p in INPUTS])
def test_inspected_without_exception(path):
    data = path.read_bytes()
    stream = io.BytesIO(data)
    inspection = inspect_stream(stream)
    assert inspection.is_pe, inspection.not_pe_reason
    assert isinstance(version_info(stream, len(data)), dict)
    verdicts = INSPECTOR.verify(stream, inspection)
    rows = signature_rows(inspection)
    assert inspection.signatures
    assert len(rows) == len(verdicts) == len(inspection.signatures)
    assert all(v.status is not Status.NOT_CHECKED for v in verdicts)


@pytest.mark.parametrize("path", INPUTS, ids=[p.name for p in INPUTS])
def test_no_internal_error(path):
    """A bad input is a verdict, not an unexpected exception caught on the way."""
    stream = io.BytesIO(path.read_bytes())
    inspection = inspect_stream(stream)
    INSPECTOR.verify(stream, inspection)
    assert not inspection.errors, inspection.errors


def test_the_fuzz_harness_replays_them_clean(tmp_path):
    """fuzz/inspect_fuzz.py's checks, run without atheris over these inputs and the samples,
    find nothing: the harness and the suite hold the same properties."""
    harness = REGRESSIONS.parent.parent / "fuzz" / "inspect_fuzz.py"
    samples = REGRESSIONS.parent.parent / "samples" / "pe"
    result = subprocess.run(
        [sys.executable, str(harness), "--replay", str(REGRESSIONS), str(samples)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "FUZZ_CRASHES": str(tmp_path / "found")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"replayed \d+ inputs, 0 distinct findings", result.stderr), result.stderr
    assert not (tmp_path / "found").exists()
