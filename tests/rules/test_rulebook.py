"""The rule pack (rules/pack.py: loading; test rows, export), the allowlist and
`rmmscan rules`, on files written here: every problem names its file and line."""

from __future__ import annotations

import argparse
import shutil

import pytest
import yaml

from rmmscan.cli import rules as rules_cli
from rmmscan.rows.columns import QUERYABLE
from rmmscan.rules.allowlist import load_allowlist, parse_allowlist
from rmmscan.rules.export import export
from rmmscan.rules.memo import RuleSet
from rmmscan.rules.pack import (
    CUSTOM_TABLE,
    DEFENDER_TABLE,
    Problems,
    RuleLoadError,
    load_pack,
)
from rmmscan.rules.testrows import load_tests, run_tests

from conftest import ROOT

RULES = ROOT / "rules"
DWSERVICE = "642b39b7-18eb-46eb-ba1f-bf70befae05e"
LOOKALIKE = "b20699d4-c5d9-49e1-8332-b9ce00292b91"

RULE = """\
id: {id}
name: {name}
description: |
  A test rule.
requiredDataConnectors:
  - connectorId: MicrosoftThreatProtection
    dataTypes:
      - DeviceFileCertificateInfo
tactics: CommandAndControl
relevantTechniques: T1219
query: |
  DeviceFileCertificateInfo
  | where Timestamp between (ago(1d)..now())
  | where {where}
"""
ID_A = "11111111-1111-4111-8111-111111111111"
ID_B = "22222222-2222-4222-8222-222222222222"


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def rule(folder, name="a.yaml", id=ID_A, where="Signer has 'Acme'", title="Acme"):
    return write(folder / name, RULE.format(id=id, name=title, where=where))


def problems(paths) -> list[str]:
    with pytest.raises(RuleLoadError) as caught:
        load_pack(paths)
    return [str(p) for p in caught.value.problems]


def get(values: dict):
    return lambda c: values.get(c, "" if QUERYABLE[c] == "string" else None)


# --- Loading ----------------------------------------------------------------------------------


def test_loads_a_file_and_a_folder(tmp_path):
    one = rule(tmp_path / "x", "one.yaml")
    rule(tmp_path / "y", "two.yaml", id=ID_B, where="FileName =~ 'a.exe'")
    write(tmp_path / "y" / "notes.txt", "not a rule")
    pack = load_pack([one, tmp_path / "y"])
    assert [r.filename for r in pack] == ["one.yaml", "two.yaml"]
    a, b = pack.rules
    assert (a.id, a.name, a.tactics, a.techniques) == (ID_A, "Acme", ("CommandAndControl",),
                                                        ("T1219",))  # fmt: skip
    assert a.columns == {"Signer"} and a.defender_compatible
    assert b.columns == {"FileName"} and not b.defender_compatible
    assert pack.columns == {"Signer", "FileName"}
    assert pack.by_id(ID_B.upper()) is b
    assert RuleSet(pack.rules).matching(get({"Signer": "ACME Corp"})) == [a]
    assert RuleSet(pack.rules).matching(get({"Signer": "Acmex", "FileName": "A.EXE"})) == [b]


def test_bundled_pack_is_the_default():
    assert [r.filename for r in load_pack()] == sorted(p.name for p in RULES.glob("*.yaml"))


def test_bad_yaml_names_file_and_line(tmp_path):
    # The upstream files' own mistake: dataTypes at the list item's indentation.
    text = RULE.format(id=ID_A, name="x", where="Signer has 'a'").replace(
        "    dataTypes:\n      - Device", "  dataTypes:\n    - Device"
    )
    path = write(tmp_path / "bad.yaml", text)
    (only,) = problems([path])
    assert only.startswith(f"{path}:7: not valid YAML (") and "indentation" in only


def test_missing_key_names_file_and_line(tmp_path):
    path = write(tmp_path / "r.yaml", f"id: {ID_A}\nname: x\ndescription: no query\n")
    assert problems([path]) == [
        f"{path}:1: missing key 'query': every rule needs id, name and query"
    ]


def test_duplicate_id_names_both_files(tmp_path):
    rule(tmp_path, "a.yaml")
    rule(tmp_path, "b.yaml", where="Signer has 'B'")
    (only,) = problems([tmp_path])
    assert only.startswith(f"{tmp_path / 'b.yaml'}:1: duplicate id {ID_A} (also in "
                           f"{tmp_path / 'a.yaml'}:1)")  # fmt: skip


def test_unsupported_kql_names_file_line_and_construct(tmp_path):
    path = rule(tmp_path, where="Signer has 'x'\n  | extend Lower = tolower(Signer)")
    (only,) = problems([path])
    # The query block starts on line 12; the extend is its 4th line, at column 5 of the file.
    assert only.startswith(f"{path}:15:5:")
    assert "extend" in only


def test_unknown_column_names_file_and_line(tmp_path):
    path = rule(tmp_path, where="Signer has 'x'\n    and InitiatingProcessCommandLine has 'dw'")
    (only,) = problems([path])
    assert only.startswith(f"{path}:15:") and "InitiatingProcessCommandLine" in only


def test_every_problem_of_every_file_at_once(tmp_path):
    write(tmp_path / "a.yaml", "id: [unclosed\n")
    write(tmp_path / "b.yaml", "- a list\n")
    write(tmp_path / "c.yaml", "")
    (tmp_path / "d.yaml").write_bytes(b"id: \xff\n")
    rule(tmp_path, "e.yaml", id="not-a-uuid", where="Signer hasx 'a'")
    text = RULE.format(id=ID_B, name="x", where="Signer has 'a'")
    text = text.replace("tactics: CommandAndControl", "tactics: [CommandAndControl, Hacking]")
    text = text.replace("relevantTechniques: T1219", "relevantTechniques: 1219\nqeury: x")
    text = text.replace("name: x\n", "name: x\nname: y\n")
    write(tmp_path / "f.yaml", text)
    write(tmp_path / "g.yaml", RULE.replace("query: |", "query: >").format(
        id="33333333-3333-4333-8333-333333333333", name="g", where="Signer has 'a'"))  # fmt: skip
    found = problems([tmp_path, tmp_path / "missing.yaml"])
    lines = {(p.split(":")[0].rsplit("/", 1)[-1], p.split(":")[1]) for p in found}
    # a.yaml: the parser notices the unclosed list at the end of the file, on line 2.
    assert ("a.yaml", "2") in lines and ("b.yaml", "1") in lines and ("c.yaml", "1") in lines
    assert any(p.startswith(f"{tmp_path / 'd.yaml'}:1: not UTF-8") for p in found)
    e = [p for p in found if "e.yaml" in p]
    assert any(":1: id 'not-a-uuid' is not a UUID" in p for p in e)
    assert any(p.startswith(f"{tmp_path / 'e.yaml'}:14:") for p in e)  # the bad operator
    f = [p.split(":", 1)[1] for p in found if "f.yaml" in p]
    assert any(p.startswith("3: key 'name' appears twice") for p in f)
    assert any(p.startswith("10: tactics: 'Hacking' is not a Sentinel tactic") for p in f)
    assert any(p.startswith("11: relevantTechniques must be a name or a list") for p in f)
    assert any(p.startswith("12: unknown key 'qeury'") for p in f)
    assert any("g.yaml:11: query is a folded block" in p for p in found)
    assert any(p == f"{tmp_path / 'missing.yaml'}: no such file or folder: give a rule file or "
               "a folder" for p in found)  # fmt: skip
    assert len(found) >= 11


def test_a_file_given_twice_loads_once(tmp_path):
    path = rule(tmp_path)
    assert [r.filename for r in load_pack([tmp_path, path])] == ["a.yaml"]


def test_empty_folder_is_a_problem(tmp_path):
    (tmp_path / "empty").mkdir()
    (only,) = problems([tmp_path / "empty"])
    assert "no rule files" in only


# --- Test rows --------------------------------------------------------------------------------


def test_rows_run_and_a_failure_names_file_and_line(tmp_path):
    rule(tmp_path)
    write(tmp_path / "tests/a.yaml", "positive:\n  - Signer: Acme Ltd\n  - Signer: Acmex\n"
          "negative:\n  - Signer: Acme\n    IsTrusted: true\n  - {}\n")  # fmt: skip
    pack = load_pack([tmp_path])
    problems = Problems()
    test = load_tests(pack.rules[0], problems)
    assert problems == [] and test.source == str(tmp_path / "tests/a.yaml")
    assert [(r.kind, r.line, r.get("Signer"), r.get("IsTrusted")) for r in test.rows] == [
        ("positive", 2, "Acme Ltd", None), ("positive", 3, "Acmex", None),
        ("negative", 5, "Acme", True), ("negative", 7, "", None),
    ]  # fmt: skip
    report = run_tests(pack)
    assert report.problems == ()
    assert [(r.row.kind, r.ok) for r in report.results] == [
        ("positive", True), ("positive", False), ("negative", False), ("negative", True),
    ]  # fmt: skip
    failures = [str(f) for f in report.failures]
    test_file = tmp_path / "tests/a.yaml"
    assert failures[0].startswith(f"{test_file}:3: positive row did not match rule a.yaml")
    assert failures[1].startswith(f"{test_file}:5: negative row matched rule a.yaml")
    assert not report.ok


def test_bad_test_files_name_file_and_line(tmp_path):
    rule(tmp_path, "a.yaml")
    rule(tmp_path, "b.yaml", id=ID_B)
    rule(tmp_path, "c.yaml", id="33333333-3333-4333-8333-333333333333")
    write(tmp_path / "tests/a.yaml", "positive:\n  - Signr: Acme\n  - Signer: 12\n"
          "  - FileSize: 'big'\n  - IsTrusted: 'yes'\nnegative: []\n")  # fmt: skip
    write(tmp_path / "tests/b.yaml", "positive:\n  - Signer: Acme\n")
    report = run_tests(load_pack([tmp_path]))
    found = [str(p) for p in report.problems]
    a, b = tmp_path / "tests/a.yaml", tmp_path / "tests/b.yaml"
    assert any(p.startswith(f"{a}:2: unknown column 'Signr'") for p in found)
    assert any(p.startswith(f"{a}:3: Signer is a string column, not int") for p in found)
    assert any(p.startswith(f"{a}:4: FileSize is a long column, not str") for p in found)
    assert any(p.startswith(f"{a}:5: IsTrusted is a bool column, not str") for p in found)
    assert any(p.startswith(f"{a}:6: negative: give a list of rows") for p in found)
    assert any(p.startswith(f"{b}:1: no negative rows") for p in found)
    assert any(p.startswith(f"{tmp_path / 'tests/c.yaml'}: no test rows for c.yaml") for p in found)
    assert report.results == () and not report.ok


# --- Export -----------------------------------------------------------------------------------


def copy_tests(into):
    shutil.copytree(RULES / "tests", into / "tests", ignore=shutil.ignore_patterns("*.py"))


@pytest.mark.parametrize("table", ["defender", "custom"])
def test_export_reloads_and_passes_the_same_rows(tmp_path, table):
    pack = load_pack()
    out = tmp_path / table
    out.mkdir()
    for item in export(pack, table):
        if item.text is not None:
            (out / item.filename).write_text(item.text, "utf-8")
    copy_tests(out)
    exported = load_pack([out])
    report = run_tests(exported)
    if table == "defender":
        assert [r.filename for r in exported] == [r.filename for r in pack if r.id != LOOKALIKE]
        assert {r.query.table for r in exported} == {DEFENDER_TABLE}
    else:
        assert len(exported) == len(pack)
        assert {r.query.table for r in exported} == {CUSTOM_TABLE}
    assert report.problems == () and report.failures == () and len(report.results) > 500


def test_defender_export_is_the_input_and_skips_what_defender_lacks():
    pack = load_pack()
    for item in export(pack, "defender"):
        source = (RULES / item.filename).read_text("utf-8")
        if item.rule.id == LOOKALIKE:
            assert item.text is None
            assert item.reason.startswith("reads FileName, VersionInfoCompanyName")
            assert "--table custom" in item.reason
        else:
            assert item.text == source


def test_custom_export_differs_only_where_intended():
    pack = load_pack()
    ids = set()
    for item in export(pack, "custom"):
        mine = yaml.safe_load((RULES / item.filename).read_text("utf-8"))
        theirs = yaml.safe_load(item.text)
        assert item.text.startswith(
            f"# Exported by rmmscan from {item.filename} (rule {mine['id']})"
        )
        assert theirs["id"] != mine["id"] and theirs["id"] not in ids
        ids.add(theirs["id"])
        assert theirs["name"] == mine["name"] + " (rmmscan table)"
        assert theirs["requiredDataConnectors"] == []
        assert theirs["query"] == mine["query"].replace(DEFENDER_TABLE, CUSTOM_TABLE, 1)
        same = set(mine) - {"id", "name", "requiredDataConnectors", "query"}
        assert {k: theirs[k] for k in same} == {k: mine[k] for k in same}
        assert set(theirs) == set(mine)
    # The derived id must never change: Sentinel knows an imported query by it.
    dws = next(i for i in export(pack, "custom") if i.rule.id == DWSERVICE)
    assert yaml.safe_load(dws.text)["id"] == "63807ec7-6ce3-50bc-b33b-5ee4df0701a8"


def test_a_custom_table_rule_exports_to_defender_in_sentinel_layout(tmp_path):
    text = RULE.format(id=ID_A, name="c", where="Signer has 'Acme'").replace(
        "  DeviceFileCertificateInfo\n", f"  // comment\n  {CUSTOM_TABLE}\n"
    ).replace("requiredDataConnectors:\n  - connectorId: MicrosoftThreatProtection\n"
              "    dataTypes:\n      - DeviceFileCertificateInfo\n", "")  # fmt: skip
    write(tmp_path / "c.yaml", text)
    (item,) = export(load_pack([tmp_path]), "defender")
    data = yaml.safe_load(item.text)
    assert data["query"].startswith(f"// comment\n{DEFENDER_TABLE}\n| where")
    assert "requiredDataConnectors:\n  - connectorId: MicrosoftThreatProtection\n" in item.text
    assert data["id"] == ID_A and data["tactics"] == "CommandAndControl"


# --- Allowlist --------------------------------------------------------------------------------

ALLOW = r"""# sanctioned deployments
- name: helpdesk DWService
  reason: IT support uses DWService on the helpdesk PC
  where: |
    DeviceName =~ 'helpdesk-01.corp.example'
    and FolderPath startswith @'C:\Program Files\DWAgent\'
  rules: [642b39b7-18eb-46eb-ba1f-bf70befae05e]
- name: lab
  reason: the lab runs every tool
  where: DeviceName endswith '.lab.corp.example'
"""


def test_allowlist_suppresses_exactly_its_rows(tmp_path):
    pack = load_pack()
    allowlist = load_allowlist(write(tmp_path / "allow.yaml", ALLOW), pack=pack)
    helpdesk, lab = allowlist.entries
    assert (helpdesk.line, lab.line) == (2, 8) and allowlist.columns == {"DeviceName", "FolderPath"}
    dws, lookalike = pack.by_id(DWSERVICE), pack.by_id(LOOKALIKE)
    sig = {"Signer": "DWSNET srl", "IsTrusted": False, "FileName": "dwagent.exe"}
    at = r"C:\Program Files\DWAgent\runtime\dwagent.exe"
    cases = [
        # (row, rule, entry that suppresses it)
        ({"DeviceName": "HELPDESK-01.corp.example", "FolderPath": at}, dws, helpdesk),
        ({"DeviceName": "helpdesk-01.corp.example", "FolderPath": at.lower()}, dws, helpdesk),
        ({"DeviceName": "helpdesk-01.corp.example", "FolderPath": at}, lookalike, None),
        ({"DeviceName": "helpdesk-01.corp.example", "FolderPath": r"C:\Users\x\dwagent.exe"},
         dws, None),
        ({"DeviceName": "helpdesk-02.corp.example", "FolderPath": at}, dws, None),
        ({"DeviceName": "helpdesk-01.corp.example.evil", "FolderPath": at}, dws, None),
        ({"DeviceName": "pc7.lab.corp.example", "FolderPath": at}, lookalike, lab),
        ({"DeviceName": "pc7.lab.corp.example", "FolderPath": at}, dws, lab),
        ({"DeviceName": "pc7.lab.corp.example.com", "FolderPath": at}, dws, None),
    ]  # fmt: skip
    for values, target, entry in cases:
        row = get(dict(sig, **values))
        assert target in RuleSet(pack.rules).matching(row)
        assert allowlist.suppressing(target, row) is entry, values


def test_allowlist_first_matching_entry_wins_and_empty_is_empty(tmp_path):
    text = ALLOW + "- name: all\n  reason: everything\n  where: isnotempty(DeviceName)\n"
    allowlist = parse_allowlist(text, "allow.yaml")
    row = get({"DeviceName": "pc.lab.corp.example"})
    assert allowlist.suppressing(load_pack().by_id(DWSERVICE), row).name == "lab"
    assert len(parse_allowlist("# nothing sanctioned yet\n", "allow.yaml")) == 0


def test_allowlist_problems_name_file_and_line(tmp_path):
    text = """\
- name: one
  reason: ok
  where: DeviceName =~ 'a' and
- name: one
  where: DeviceName == 'b'
  rule: [x]
- name: three
  reason: r
  where: DeviceName == 'c'
  rules: [642b39b7-18eb-46eb-ba1f-bf70befae05f, nope]
- just a string
"""
    path = write(tmp_path / "allow.yaml", text)
    with pytest.raises(RuleLoadError) as caught:
        load_allowlist(path, pack=load_pack())
    found = [str(p) for p in caught.value.problems]
    assert any(p.startswith(f"{path}:3:31:") for p in found)  # the dangling `and`
    assert any(p.startswith(f"{path}:4: 'reason' is required") for p in found)
    assert any(p.startswith(f"{path}:6: unknown key 'rule'") for p in found)
    assert any(
        p.startswith(f"{path}:10: no rule 642b39b7-18eb-46eb-ba1f-bf70befae05f") for p in found
    )
    assert any(p.startswith(f"{path}:10: 'nope' is not a rule id") for p in found)
    assert any(p.startswith(f"{path}:11: an entry is a mapping") for p in found)
    with pytest.raises(RuleLoadError) as caught:
        parse_allowlist(ALLOW + ALLOW.split("\n", 1)[1], "dup.yaml")
    assert any("dup.yaml:11: entry name 'helpdesk DWService' is also used on line 2" in str(p)
               for p in caught.value.problems)  # fmt: skip
    with pytest.raises(RuleLoadError) as caught:
        parse_allowlist("name: x\n", "map.yaml")
    assert str(caught.value).startswith("map.yaml:1: an allowlist is a list of entries")


# --- rmmscan rules ----------------------------------------------------------------------------


def cli(*argv) -> int:
    """Through add_parser in a parser of our own, as cli/main.py wires it."""
    parser = argparse.ArgumentParser(prog="rmmscan")
    rules_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rules", *map(str, argv)])
    return args.run(args)


def test_cli_list(capsys):
    assert cli("list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "DEFENDER", "NAME", "[COLUMNS]"]
    assert len(out) == 1 + len(load_pack())
    line = next(x for x in out if x.startswith(LOOKALIKE))
    assert line.split()[1] == "no" and line.endswith("VersionInfoProductName]")
    assert rules_cli.main(["list", "--format", "json"]) == 0
    assert f'"id": "{DWSERVICE}"' in capsys.readouterr().out


def test_cli_validate(tmp_path, capsys):
    assert cli("validate") == 0
    assert capsys.readouterr().out.endswith("rules, ok (53 run unchanged on Defender's table)\n")
    allow = write(tmp_path / "allow.yaml", ALLOW)
    assert cli("validate", "--allowlist", allow) == 0
    assert "allowlist: 2 entries, ok" in capsys.readouterr().out
    bad = rule(tmp_path / "bad", where="Signer has")
    write(tmp_path / "bad" / "b.yaml", "id: x\n")
    assert cli("validate", "--rules", bad.parent) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "rmmscan rules: 4 problems in the rule pack"
    assert sum(line.startswith(str(bad)) for line in err) == 1
    assert cli("validate", "--allowlist", write(tmp_path / "a.yaml", "- name: x\n")) == 2


def test_cli_test(tmp_path, capsys):
    assert cli("test") == 0
    assert capsys.readouterr().out.endswith("rules: all pass\n")
    rule(tmp_path)
    write(tmp_path / "tests/a.yaml", "positive:\n  - Signer: Acme\nnegative:\n  - Signer: acme\n")
    assert cli("test", "--rules", tmp_path) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'tests/a.yaml'}:4: negative row matched rule a.yaml" in out
    assert out.endswith("2 rows of 1 rules: 1 failed\n")
    (tmp_path / "tests/a.yaml").unlink()
    assert cli("test", "--rules", tmp_path / "a.yaml") == 2
    assert "no test rows for a.yaml" in capsys.readouterr().err


def test_cli_export(tmp_path, capsys):
    assert cli("export", "--table", "defender", "--output", tmp_path / "d") == 0
    captured = capsys.readouterr()
    assert "skipped rmmscan_DWService_lookalike_filesig.yaml: reads FileName" in captured.err
    assert captured.out.strip().endswith("skipped 1")
    assert len(list((tmp_path / "d").glob("*.yaml"))) == len(load_pack()) - 1
    assert cli("export", "--table", "custom", "--output", tmp_path / "c") == 0
    assert len(list((tmp_path / "c").glob("*.yaml"))) == len(load_pack())
    write(tmp_path / "file", "")
    assert cli("export", "--table", "custom", "--output", tmp_path / "file") == 2
    with pytest.raises(SystemExit):
        cli("export", "--table", "splunk", "--output", tmp_path)
