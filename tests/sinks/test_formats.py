"""The formats for people and for scripts, checked against jsonl on real sweeps: the table is
one block per file that lists every rule the file matched, the line format is one line per
row with the same paths and rule names, and hostile names (a newline, an escape sequence,
invalid UTF-8, ": ", a tab, every character Python or a terminal breaks a line at) neither
add nor split a line, a field or a block.

Each sweep runs the command line on the committed samples or on copies of them under
hostile names, with the test PKI trusted; bash reads every shown name back to its bytes.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from rmmscan.sinks.line import LineSink
from rmmscan.sinks.table import TableSink
from rmmscan.text import printable

from conftest import PE_DIR, SAMPLES, TEST_ROOT

RULES = re.compile(r"^(?P<name>.*?)(?:  \(signatures? \d+(?:, \d+)*\))?$")
CONTINUED = " " * 16  # a further rule under "  Rules:", aligned with the first

# Names a file system accepts that a terminal, a line reader or a field splitter would not:
# each becomes a copy of a sample that matches three rules, so each is several rows.
HOSTILE = [
    "new\nline.exe",
    "esc\x1b[2J\x1b]0;title\x07.exe",
    "colon: Remote Management FOUND.exe",
    "tab\tRule\tFOUND\t[Ok] DWSNET srl.exe",
    "fake.exe\tRule\tFOUND\t[Ok] DWSNET srl\nsecond.exe",
    "cr\r.exe",
    "vt\x0bff\x0cfs\x1cgs\x1drs\x1e.exe",
    "nel\x85ls\u2028ps\u2029.exe",
    "$'quoted.exe",
    "-",
    "it's.exe",
]
# Two names that differ only in undecodable bytes: FolderPath is the same for both (U+FFFD),
# FolderPathBytes tells them apart, and so must every human format.
UNDECODABLE = [b"bad\xff\x80.exe", b"bad\xfe\x80.exe"]


def sweep(paths, fmt: str, state, *extra: str, status: int = 1) -> str:
    """The standard output of a sweep; exit status 1 means something was found."""
    proc = subprocess.run(
        [sys.executable, "-m", "rmmscan", "scan", *map(str, paths), "--format", fmt,
         "--trusted-roots", str(TEST_ROOT), "--state-dir", str(state), "--no-cache",
         "--no-progress", "-q", *extra],
        capture_output=True, env=dict(os.environ, PYTHONUTF8="1"),
    )  # fmt: skip
    assert proc.returncode == status, proc.stderr.decode("utf-8", "replace")
    return proc.stdout.decode("utf-8")  # strict: every format writes valid UTF-8


def exact(row: dict) -> bytes:
    """The name's bytes, as jsonl carries them."""
    if row["FolderPathBytes"]:
        return base64.b64decode(row["FolderPathBytes"])
    return row["FolderPath"].encode("utf-8")


def shown(row: dict) -> str:
    return printable(exact(row).decode("utf-8", "surrogateescape"))


def read_back(names: list[str]) -> list[bytes]:
    """What bash makes of each shown name: $'…' is bash's quoting, anything else is literal."""
    words = [name if name.startswith("$'") else shlex.quote(name) for name in names]
    out = subprocess.run(
        ["bash", "-c", "printf '%s\\0' " + " ".join(words)],
        capture_output=True, env=dict(os.environ, LC_ALL="C.UTF-8"), check=True,
    ).stdout  # fmt: skip
    return out.split(b"\0")[:-1]


def lines_of(text: str, separator: str = "") -> list[str]:
    """The lines as a line feed splits them, after checking that nothing else would split
    them differently (str.splitlines also breaks at CR, VT, FF, FS, GS, RS, NEL, LS, PS)
    and that no control character but the field separator reaches a terminal."""
    assert text.endswith("\n") or not text
    lines = text.split("\n")[:-1] if text else []
    assert text.splitlines() == lines
    for line in lines:
        assert "".join(line.split(separator) if separator else line).isprintable(), line
    return lines


def blocks_of(text: str) -> list[list[str]]:
    """The table's blocks: runs of lines, each ended by one blank line."""
    lines = lines_of(text)
    blocks, block = [], []
    for line in lines:
        if line:
            block.append(line)
        else:
            assert block, "two blank lines in a row"
            blocks.append(block)
            block = []
    assert not block, "the last block has no blank line after it"
    return blocks


def rules_of(block: list[str]) -> list[str]:
    rules, inside = [], False
    for line in block:
        if line.startswith("  Rules:"):
            inside = True
            line = line[len(CONTINUED) :]
        elif inside and line.startswith(CONTINUED):
            line = line[len(CONTINUED) :]
        else:
            inside = False
            continue
        rules.append(RULES.match(line).group("name"))
    return rules


def by_file(rows: list[dict]) -> dict[bytes, list[dict]]:
    files: dict[bytes, list[dict]] = {}
    for row in rows:
        files.setdefault(exact(row), []).append(row)
    return files


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """jsonl, table and line of the same sweeps: samples/ as the default emits it and with
    --emit all, and a folder of hostile names."""
    state = tmp_path_factory.mktemp("state")
    hostile = tmp_path_factory.mktemp("hostile")
    source = PE_DIR / "dwagent-lookalike-selfsigned.exe"  # three rules match it
    for name in HOSTILE:
        shutil.copyfile(source, hostile / name)
    for name in UNDECODABLE:
        shutil.copyfile(source, os.path.join(os.fsencode(hostile), name))
    inner = hostile / "dir\nwith: a newline"
    inner.mkdir()
    shutil.copyfile(PE_DIR / "nested-depth3.exe", inner / "nested\x1b[31m.exe")
    runs = {"samples": ([SAMPLES], ()), "all": ([SAMPLES], ("--emit", "all")),
            "hostile": ([hostile], ())}  # fmt: skip
    out = {}
    for run, (paths, extra) in runs.items():
        rows = [json.loads(line) for line in lines_of(sweep(paths, "jsonl", state, *extra))]
        out[run] = {
            "rows": rows,
            "table": sweep(paths, "table", state, *extra),
            "line": sweep(paths, "line", state, *extra),
        }
    return out


RUNS = ("samples", "all", "hostile")


@pytest.mark.parametrize("run", RUNS)
def test_the_table_is_one_block_per_file_with_every_rule_it_matched(outputs, run):
    rows, table = outputs[run]["rows"], outputs[run]["table"]
    files = by_file(rows)
    blocks = blocks_of(table)
    assert len(blocks) == len(files)
    names = read_back([block[0] for block in blocks])
    assert sorted(names) == sorted(files)  # each file once, its name read back exactly
    for name, block in zip(names, blocks, strict=True):
        mine = files[name]
        assert block[0] == shown(mine[0])
        wanted = {printable(r["RuleName"]) for r in mine if r["RuleId"]}
        listed = rules_of(block)
        assert len(listed) == len(set(listed))  # each rule once
        assert set(listed) == wanted
        indexes = sorted({r["SignatureIndex"] for r in mine if r["IsSigned"]})
        heads = [line for line in block if line.startswith("  Signature ")]
        assert [int(h.split()[1].rstrip(":")) for h in heads] == indexes
        for r in mine:
            if r["Signer"]:
                assert f"  Signature {r['SignatureIndex']}:  {printable(r['Signer'])}" in block
            if not r["IsSigned"]:
                assert "  Signature:    none" in block
        assert f"  SHA256:       {mine[0]['SHA256']}, {mine[0]['FileSize']} bytes" in block


@pytest.mark.parametrize("run", RUNS)
def test_the_line_format_is_one_line_per_row(outputs, run):
    rows, text = outputs[run]["rows"], outputs[run]["line"]
    lines = lines_of(text, "\t")
    assert len(lines) == len(rows)
    fields = [line.split("\t") for line in lines]
    assert all(len(f) == 4 for f in fields), [f for f in fields if len(f) != 4]
    names = read_back([f[0] for f in fields])

    def outcome(row):
        return (printable(row["RuleName"]), "FOUND") if row["RuleId"] else ("-", "OK")

    got = collections.Counter(
        (name, rule, word, sig) for name, (_, rule, word, sig) in zip(names, fields, strict=True)
    )
    want = collections.Counter()
    for row in rows:
        index = row["SignatureIndex"]
        sig = f"[#{index} " if index else "["
        sig += row["VerificationStatus"] + "]"
        sig += f" {printable(row['Signer'])}" if row["Signer"] else ""
        want[(exact(row), *outcome(row), sig)] += 1
    assert got == want
    if run != "all":
        assert {f[2] for f in fields} == {"FOUND"}  # the default emits detections only


def test_hostile_names_are_each_one_file_one_block_and_their_own_lines(outputs):
    hostile = outputs["hostile"]
    files = by_file(hostile["rows"])
    assert len(files) == len(HOSTILE) + len(UNDECODABLE) + 1
    undecodable = [row for row in hostile["rows"] if row["FolderPathBytes"]]
    assert len({row["FolderPath"] for row in undecodable}) == 1  # U+FFFD makes them alike
    assert len({shown(row) for row in undecodable}) == 2  # the formats do not
    assert sum(row["RuleId"] is not None for row in hostile["rows"]) == len(hostile["rows"])
    for name in HOSTILE:
        assert sum(1 for row in hostile["rows"] if row["FileName"] == name) == 3


def test_the_formats_are_shorter_than_a_block_per_row(outputs):
    rows = outputs["samples"]["rows"]
    table = outputs["samples"]["table"].count("\n")
    line = outputs["samples"]["line"].count("\n")
    assert line == len(rows)
    # A block per row took at least four lines (path, rule, signer, blank) and up to twelve.
    assert table < 8 * len(rows)
    assert table < outputs["all"]["table"].count("\n")


def test_hostile_values_in_real_rows_stay_on_their_lines(tmp_path):
    """Signer, issuer, version information, detail and rule names come from the file and
    the rule pack: each ends a line, after a label the table writes, or is the last field."""
    files = [PE_DIR / "dwagent-lookalike-selfsigned.exe", PE_DIR / "nested-depth3.exe"]
    rows = [json.loads(line) for line in lines_of(sweep(files, "jsonl", tmp_path))]
    rows.sort(key=lambda row: (row["FileName"], row["SignatureIndex"]))  # the sweep's order varies
    evil = "Evil\n  Signature 9:  DWSNET OÜ\tFOUND\x1b[2J: x\r\u2028"
    for row in rows:
        row.update(Signer=evil, Issuer=evil, VersionInfoCompanyName=evil,
                   VersionInfoProductName=evil, VerificationDetail=evil,
                   RuleName=row["RuleName"] + evil)  # fmt: skip
    table, line = io.StringIO(), io.StringIO()
    TableSink(table).write(rows)
    LineSink(line).write(rows)

    blocks = blocks_of(table.getvalue())
    assert len(blocks) == 2
    heads = [text.split(":")[0] for block in blocks for text in block
             if text.startswith("  Signature")]  # fmt: skip
    assert heads == ["  Signature 0", "  Signature 1", "  Signature 2"]
    quoted = printable(evil)
    for block, mine in zip(blocks, (rows[:3], rows[3:]), strict=True):
        assert set(rules_of(block)) == {printable(r["RuleName"]) for r in mine}
        rules = [text for text in block if text.startswith(("  Rules:", CONTINUED))]
        labelled = [text for text in block[1:] if text not in rules and "Evil" in text]
        # Company and Product once; signer, issuer and detail once per signature.
        assert len(labelled) == 2 + 3 * len({r["SignatureIndex"] for r in mine})
        assert all(re.fullmatch(r" {2,4}[A-Z][a-z]+( \d)?: +" + re.escape(quoted), text)
                   for text in labelled), labelled  # fmt: skip
    lines = lines_of(line.getvalue(), "\t")
    assert len(lines) == len(rows)
    assert [text.split("\t")[2] for text in lines] == ["FOUND"] * len(rows)
    assert all(text.endswith(quoted) for text in lines)


def test_a_row_the_rules_could_not_judge_is_never_left_out(tmp_path):
    text = sweep([PE_DIR / "benign.exe"], "jsonl", tmp_path, "--emit", "all", status=0)
    rows = [json.loads(line) for line in lines_of(text)]
    assert len(rows) == 1 and rows[0]["RuleId"] is None
    rows[0]["Anomalies"] = json.dumps(["internal_error"])  # as the engine marks such a row
    table, line = io.StringIO(), io.StringIO()
    TableSink(table).write(rows)
    LineSink(line).write(rows)
    assert "  Not judged:   an internal error stopped the rules" in lines_of(table.getvalue())
    assert lines_of(line.getvalue(), "\t")[0].split("\t")[1:3] == ["-", "ERROR"]
