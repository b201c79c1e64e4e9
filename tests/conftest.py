"""Shared fixtures. Any skipped test fails the run: a test that needs a tool gets the tool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
PE_DIR = SAMPLES / "pe"
TEST_ROOT = SAMPLES / "pki" / "test-root.pem"


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((SAMPLES / "manifest.json").read_text("utf-8"))


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        reporter.write_line("FAILED: tests were skipped; the suite must run whole", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test certificate authority and the receivers' certificates (tests/receivers/pki.py),
    one per module."""
    from tests.receivers.pki import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))
