"""The judgement (rules/judge.py) reads no more of a file than its rules and the emission
policy reach: a rule on FileName and IsTrusted verifies only the files whose name matched,
and only emitted rows are hashed. Real sample files, a real rule file, the real Inspector
(counted, not replaced)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import textwrap

import pytest

from rmmscan.inspect import Inspector
from rmmscan.rows.build import FileRef, file_columns
from rmmscan.rows.facts import FileFacts
from rmmscan.rules.judge import Judge as Pipeline
from rmmscan.rules.pack import load_pack
from rmmscan.sources.device import Device

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
FILESIG_ID = "642b39b7-18eb-46eb-ba1f-bf70befae05e"  # rules/rmm_DWService_filesig.yaml


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


# -- a bug while judging one file: reported, and the rows still leave ------------------------------


class CrashingQuery:
    """A query with a bug. The real engine is checked when the pack loads and has no such
    path to take, so the bug is made by hand: it reads FileName (as a real query would, so
    the rule set files it under that column), then fails."""

    def matches(self, get) -> bool:
        get("FileName")
        raise ZeroDivisionError("a bug in a rule")


class RecordingInspector(Inspector):
    """The real Inspector; verification then records a bug on the inspection, as the
    inspection layer does with an unexpected exception it caught."""

    def __init__(self):
        super().__init__([TEST_ROOT], system_roots=False)

    def verify(self, stream, inspection, now=None):
        verdicts = super().verify(stream, inspection, now)
        inspection.errors.append("verification: KeyError: 'a bug'")
        return verdicts


class Pack:
    def __init__(self, rules):
        self.rules = list(rules)


@pytest.fixture(scope="module")
def bundled():
    return load_pack(None)


def with_crashing_rule(bundled) -> Pack:
    crashing = dataclasses.replace(bundled.rules[0], id="crashing-rule", query=CrashingQuery())
    return Pack([*bundled.rules, crashing])


def judge_one(pipeline, name, inspector=None):
    path = PE_DIR / name
    columns = file_columns(FileRef(str(path), "sweep"), DEVICE, path.stat().st_size)
    facts = FileFacts(columns, Opened().opener(path), inspector or CountingInspector())
    try:
        return pipeline.judge(facts), facts
    finally:
        facts.close()


def test_a_crashing_rule_costs_only_its_own_say(bundled):
    plain = Pipeline(bundled)
    crashing = Pipeline(with_crashing_rule(bundled))
    expected, _ = judge_one(plain, "dwsnet-ou.exe")
    assert expected.detections and not expected.problems
    judgement, _ = judge_one(crashing, "dwsnet-ou.exe")
    # the other rules' detections are all there, and the bug is a failure of this file
    assert [r["RuleId"] for r in judgement.rows] == [r["RuleId"] for r in expected.rows]
    assert judgement.detections == expected.detections
    assert judgement.problems == [
        ("failed", "internal error in rule crashing-rule: ZeroDivisionError: a bug in a rule")
    ]


def test_a_file_the_rules_could_not_judge_is_emitted_unjudged(bundled):
    """benign.exe matches no rule; with a rule that could not say, its row leaves anyway
    (under --emit detections), without a RuleId, marked internal_error."""
    judgement, _ = judge_one(Pipeline(bundled), "benign.exe")
    assert judgement.rows == []
    judgement, _ = judge_one(Pipeline(with_crashing_rule(bundled)), "benign.exe")
    (row,) = judgement.rows
    assert row["RuleId"] is None and row["Signer"] is not None
    assert "internal_error" in json.loads(row["Anomalies"])
    assert len(row["SHA256"]) == 64  # complete
    assert judgement.problems and judgement.problems[0][0] == "failed"


def sweep_dir(tmp_path, judge, inspector, names):
    """One real sweep (one thread) of a directory of samples, with a real scan cache; the
    batch the sweep hands to the engine's delivery."""
    from rmmscan.engine.engine import Engine
    from rmmscan.engine.options import Options
    from rmmscan.engine.sweep import Sweep

    root = tmp_path / "tree"
    root.mkdir()
    for name in names:
        shutil.copy(PE_DIR / name, root / name)
    options = Options(trusted_roots=(TEST_ROOT,), system_roots=False, state_dir=tmp_path / "s")
    engine = Engine(options, warn=print)
    engine.judge_rows, engine.inspector = judge, inspector
    engine.open_state()
    batches = []
    engine.deliver = batches.append
    Sweep(engine).run([str(root)])
    engine.close()
    (batch,) = batches
    return root, batch


def test_a_crashing_rule_in_the_sweep_fails_the_file_keeps_its_rows_and_caches_nothing(
    tmp_path, bundled
):
    root, result = sweep_dir(
        tmp_path, Pipeline(with_crashing_rule(bundled)), CountingInspector(),
        ["dwsnet-ou.exe", "benign.exe"],
    )  # fmt: skip
    rows = {(r["FileName"], r["RuleId"]) for r in result.rows}
    assert ("dwsnet-ou.exe", FILESIG_ID) in rows
    assert ("benign.exe", None) in rows
    assert {(p, kind) for p, kind, _ in result.problems} == {
        (str(root / "dwsnet-ou.exe"), "failed"),
        (str(root / "benign.exe"), "failed"),
    }
    assert result.detections > 0
    assert result.store == []  # judged again by the next sweep


def test_errors_inspection_recorded_are_failures_with_the_rows_still_emitted(tmp_path, bundled):
    root, result = sweep_dir(
        tmp_path, Pipeline(bundled, None, "all"), RecordingInspector(),
        ["dwsnet-ou.exe", "not-a-pe.bin"],
    )  # fmt: skip
    ou = [r for r in result.rows if r["FileName"] == "dwsnet-ou.exe"]
    assert FILESIG_ID in {r["RuleId"] for r in ou}
    assert result.problems == [
        (str(root / "dwsnet-ou.exe"), "failed",
         "internal error in inspection: verification: KeyError: 'a bug'"),
    ]  # fmt: skip
    assert [s[0] for s in result.store] == ["not-a-pe.bin"]  # the other is not cached


def test_rmmscan_inspect_reports_bugs_per_file_and_goes_on(tmp_path, monkeypatch, capsys):
    """`rmmscan inspect A B C`: a bug inspection recorded on A is said (exit 2) with A's rows
    printed; an exception escaping on B is said with B's rows as far as they could be made,
    and C is still inspected. The bugs are made
    by hand: the fuzzer's findings that once raised are fixed as they are found."""
    from rmmscan.cli import main as cli

    buggy, crashing, fine = (tmp_path / n for n in ("buggy.exe", "crashing.exe", "fine.exe"))
    shutil.copy(PE_DIR / "dwsnet-ou.exe", buggy)
    shutil.copy(PE_DIR / "dwsnet-srl.exe", crashing)
    shutil.copy(PE_DIR / "benign.exe", fine)
    verify = Inspector.verify

    def bugged(self, stream, inspection, now=None):
        name = os.readlink(f"/proc/self/fd/{stream.fileno()}")  # the cli opens descriptors
        if name.endswith("crashing.exe"):
            raise ZeroDivisionError("a bug escaping inspection")
        verdicts = verify(self, stream, inspection, now)
        if name.endswith("buggy.exe"):
            inspection.errors.append("verification: KeyError: 'a bug'")
        return verdicts

    monkeypatch.setattr(Inspector, "verify", bugged)
    status = cli.main(["inspect", "--format", "jsonl", "--trusted-roots", str(TEST_ROOT),
                       "--no-system-roots", "--state-dir", str(tmp_path / "s"),
                       str(buggy), str(crashing), str(fine)])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 2
    rows = [json.loads(line) for line in out.splitlines()]
    # The crashing file's row still leaves, with what could be read, marked.
    assert [r["FileName"] for r in rows] == ["buggy.exe", "crashing.exe", "fine.exe"]
    assert "internal_error" in json.loads(rows[1]["Anomalies"])
    assert rows[1]["IsTrusted"] is None and len(rows[1]["SHA256"]) == 64
    assert (f"rmmscan: {buggy}: internal error in inspection: verification: KeyError: 'a bug'"
            in err)  # fmt: skip
    assert (f"rmmscan: {crashing}: internal error in completing a row: ZeroDivisionError: "
            "a bug escaping inspection") in err  # fmt: skip
    assert "Traceback" not in err


class RaisingInspector(Inspector):
    """The real Inspector, but verification has a bug that escapes it."""

    def __init__(self):
        super().__init__([TEST_ROOT], system_roots=False)

    def verify(self, stream, inspection, now=None):
        raise ZeroDivisionError("a bug in verification")


def test_a_row_that_cannot_be_completed_leaves_with_what_is_known(bundled):
    """Verification fails: the DWSNET signer's detection (a rule on Signer) still leaves,
    hashed and with its version columns, the verdict columns null, marked internal_error."""
    judgement, _ = judge_one(Pipeline(bundled), "dwsnet-ou.exe", RaisingInspector())
    assert FILESIG_ID in {r["RuleId"] for r in judgement.rows}
    for row in judgement.rows:
        assert row["Signer"] == "DWSNET OÜ" and len(row["SHA256"]) == 64
        assert row["VerificationStatus"] is None and row["IsTrusted"] is None
        assert "internal_error" in json.loads(row["Anomalies"])
    assert ("failed", "internal error in completing a row: ZeroDivisionError: a bug in "
            "verification") in judgement.problems  # fmt: skip
