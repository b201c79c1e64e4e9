"""samples/make_samples.py regenerates the committed samples and manifest byte for byte."""

from __future__ import annotations

import subprocess
import sys

from conftest import SAMPLES


def test_samples_regenerate_identically(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SAMPLES / "make_samples.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "manifest.json").read_bytes() == (SAMPLES / "manifest.json").read_bytes()
    committed = sorted(p.name for p in (SAMPLES / "pe").iterdir())
    assert sorted(p.name for p in (tmp_path / "pe").iterdir()) == committed
    differ = [
        name
        for name in committed
        if (tmp_path / "pe" / name).read_bytes() != (SAMPLES / "pe" / name).read_bytes()
    ]
    assert differ == []
