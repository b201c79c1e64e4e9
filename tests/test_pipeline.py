"""The pipeline reads no more of a file than its rules and the emission policy reach: a rule on
FileName and IsTrusted verifies only the files whose name matched, and only emitted rows are
hashed. Real sample files, a real rule file, the real Inspector (counted, not replaced)."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest

from rmmscan.device import Device
from rmmscan.facts import FileFacts
from rmmscan.inspect import Inspector
from rmmscan.pipeline import Pipeline
from rmmscan.rows import FileRef, file_columns
from rmmscan.rulebook import load_pack

from conftest import PE_DIR, TEST_ROOT

RULE = """\
id: 2b0c1d57-3a44-4f0e-9d0a-0c4e7a1f3b21
name: test - one name, trusted
description: |
    a rule on FileName and IsTrusted
requiredDataConnectors: []
tactics: CommandAndControl
relevantTechniques: T1219
query: |
  DeviceFileCertificateInfo
  | where IsTrusted == true and FileName =~ 'DWSNET-SRL.EXE'
"""
DEVICE = Device("0" * 40, "test.example")


class CountingInspector(Inspector):
    """The real Inspector; it only counts which files it verified."""

    def __init__(self):
        super().__init__([TEST_ROOT], system_roots=False)
        self.verified: list[str] = []

    def verify(self, stream, inspection, now=None):
        self.verified.append(stream.name)
        return super().verify(stream, inspection, now)


class Opened:
    def __init__(self):
        self.paths: list[str] = []

    def opener(self, path):
        def open_():
            self.paths.append(path.name)
            return open(path, "rb")

        return open_


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rules")
    (folder / "rule.yaml").write_text(RULE, encoding="utf-8")
    tests = folder / "tests"
    tests.mkdir()
    (tests / "rule.yaml").write_text(
        textwrap.dedent("""\
            positive:
              - {FileName: dwsnet-srl.exe, IsTrusted: true}
            negative:
              - {FileName: dwsnet-srl.exe, IsTrusted: false}
              - {FileName: other.exe, IsTrusted: true}
        """),
        encoding="utf-8",
    )
    return load_pack([folder])


def judge_all(pack, emit):
    inspector, opened = CountingInspector(), Opened()
    pipeline = Pipeline(pack, None, emit)
    emitted = {}
    for path in sorted(PE_DIR.iterdir()):
        columns = file_columns(FileRef(str(path), "sweep"), DEVICE, path.stat().st_size)
        facts = FileFacts(columns, opened.opener(path), inspector, now=dt.datetime.now(dt.UTC))
        try:
            judgement = pipeline.judge(facts)
        finally:
            facts.close()
        emitted[path.name] = (judgement, facts.record)
    return inspector, opened, emitted


def test_a_rule_on_name_and_trust_verifies_only_the_named_file(pack):
    inspector, opened, emitted = judge_all(pack, "detections")
    assert [name.rsplit("/", 1)[-1] for name in inspector.verified] == ["dwsnet-srl.exe"]
    hits = {name for name, (j, _) in emitted.items() if j.rows}
    assert hits == {"dwsnet-srl.exe"}
    (row,) = emitted["dwsnet-srl.exe"][0].rows
    assert row["IsTrusted"] is True and row["RuleName"] == "test - one name, trusted"
    assert len(row["SHA256"]) == 64  # an emitted row is complete
    # Every file was opened once (to recognise it), none was hashed but the emitted one.
    assert sorted(opened.paths) == sorted(p.name for p in PE_DIR.iterdir())
    hashed = {name for name, (_, record) in emitted.items() if "hash" in record}
    assert hashed == {"dwsnet-srl.exe"}
    versions = {name for name, (_, record) in emitted.items() if "version" in record}
    assert versions == {"dwsnet-srl.exe"}  # only because that row was emitted


def test_emit_signed_completes_every_signed_row_and_nothing_else(pack):
    inspector, _, emitted = judge_all(pack, "signed")
    signed = {name for name, (j, _) in emitted.items() if j.signed}
    with_rows = {name for name, (j, _) in emitted.items() if j.rows}
    assert with_rows == signed
    assert "unsigned.exe" not in with_rows and "not-a-pe.bin" not in with_rows
    assert {v.rsplit("/", 1)[-1] for v in inspector.verified} == signed
