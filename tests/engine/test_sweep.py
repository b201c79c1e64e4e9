"""`rmmscan scan` end to end: a tree holding every sample under other names and extensions, in
Unicode and deep folders, swept by real rmmscan processes; the rows are checked column by
column against the manifest, hashlib and the rule files (tests/sweeptree.py is the oracle).

The scans that only read the tree run at once, each with its own state directory, in one
module fixture; every test then checks one aspect of their output.
"""

from __future__ import annotations

import os
import re
import unicodedata

import pytest
from sweeptree import (
    FILESIG,
    LOOKALIKE,
    MANIFEST,
    PE_DIR,
    UNTRUSTED,
    Tree,
    as_csv,
    csv_rows,
    identities,
    path_text,
    scan,
    scan_many,
    stable_set,
)

from rmmscan.rows.columns import NAMES

EXTENSIONS = (".dat", "", ".txt", ".jpg", ".tar.gz", ".EXE", ".dll", ".pdf", ".sys", ".")
NOT_PE = {"not-a-pe.bin"}
LONG = "L" * 100


def build(root) -> Tree:
    tree = Tree(root)
    # Every sample under a name that says nothing about it, with a misleading extension.
    for i, sample in enumerate(sorted(MANIFEST)):
        tree.put(f"all/f{i:02d}{EXTENSIONS[i % len(EXTENSIONS)]}", sample)
    tree.put("ext/report.pdf", "dwsnet-srl.exe")
    tree.put("ext/noextension", "dwsnet-ou.exe")
    tree.put("ext/notes.txt", "dwagent-lookalike-unsigned.exe")
    tree.put("ext/clean.exe", "benign.exe")
    tree.put("ext/tool.dll", "unsigned.exe")
    tree.put("ext/fake.exe", "not-a-pe.bin")
    # Names the lookalike rule reads (FileName in~ ...) on files of every kind.
    tree.put("names/dwagent.exe", "unsigned.exe")
    tree.put("names/DWAGSVC.EXE", "benign.exe")
    tree.put("names/dwaglnc.exe", "not-a-pe.bin")
    tree.put("names/dwagupd.dll", "dwsnet-srl.exe")
    # Unicode: NFC and NFD spellings of one name are different files, kept exactly.
    nfc = unicodedata.normalize("NFC", "Über.exe")
    nfd = unicodedata.normalize("NFD", "Über.exe")
    assert nfc != nfd
    tree.put(f"unicode/Ünïcödé 日本語/ß/{nfc}", "dwsnet-srl.exe")
    tree.put(f"unicode/Ünïcödé 日本語/ß/{nfd}", "selfsigned-dwsnet-ou.exe")
    tree.put("unicode/🙂 emoji\u202eexe.txt", "dwsnet-ou.exe")  # a bidi override too
    tree.put("unicode/\"quoted\", 'name';x.exe", "dwagent-lookalike-selfsigned.exe")
    # Deep, and a path longer than Windows' MAX_PATH (260).
    tree.put("/".join(f"d{i}" for i in range(40)) + "/deep.exe", "nested-depth3.exe")
    tree.put(f"long/{LONG}/{LONG}/{LONG}/long-path.exe", "dwsnet-ou-sha1.exe")
    # A folder with nothing to find, and an empty one.
    tree.put("clean/benign.exe", "benign.exe")
    tree.put("clean/unsigned.exe", "unsigned.exe")
    tree.put("clean/readme.exe", "not-a-pe.bin")
    (tree.root / "clean" / "empty.exe").write_bytes(b"")
    (tree.root / "clean" / "mz-only.exe").write_bytes(b"MZ")
    (tree.root / "clean" / "text.dll").write_text("MZ is not enough\n" * 100)
    (tree.root / "empty").mkdir()
    return tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Tree:
    return build(tmp_path_factory.mktemp("sweep") / "tree")


RULE = """\
id: 33333333-3333-4333-8333-333333333333
name: Contoso signer (test)
description: |
  Test rule: anything signed by the Contoso test leaf.
requiredDataConnectors:
  - connectorId: MicrosoftThreatProtection
    dataTypes:
      - DeviceFileCertificateInfo
tactics: CommandAndControl
relevantTechniques: T1219
query: |
  DeviceFileCertificateInfo
  | where Signer has 'Contoso' and IsTrusted == true
"""


@pytest.fixture(scope="module")
def runs(tree, tmp_path_factory):
    """Every scan of the tree that needs nothing but the tree, run at once."""
    tmp = tmp_path_factory.mktemp("runs")
    t = tree.root
    (tmp / "contoso.yaml").write_text(RULE, "utf-8")
    (tmp / "bad.yaml").write_text(
        RULE.replace("Signer has 'Contoso'", "Signer hasprefix 'Contoso'"), "utf-8"
    )
    (tmp / "partial.yaml").write_text(
        '- name: "sanctioned \\e[31mDWService"\n'
        "  reason: test - the IT department's copies under all/\n"
        f"  where: FolderPath startswith '{t}/all/'\n"
        f"  rules: [{FILESIG[0]}]\n",
        "utf-8",
    )
    (tmp / "everything.yaml").write_text(
        f"- name: everything\n  reason: test\n  where: FolderPath startswith '{t}/'\n", "utf-8"
    )
    (tmp / "bad-allowlist.yaml").write_text(
        "- name: broken\n  reason: test\n  where: FolderPath startswith\n", "utf-8"
    )
    (tmp / "state-is-a-file").write_text("not a directory\n")
    excludes = ["--exclude", "*.pdf", "--exclude", "d7", "--exclude", f"{t}/names/*"]
    jobs = {
        # the default trust store (Microsoft's roots and the test root) in the main runs
        "all": dict(
            args=["--emit", "all", "--format", "jsonl", "-j", "4", "-q", t],
            state_dir=tmp / "s-all",
            system_roots=True,
        ),
        "detections": dict(
            args=["--format", "jsonl", t], state_dir=tmp / "s-detections", system_roots=True
        ),
        "all_j1": dict(
            args=["--emit", "all", "--format", "jsonl", "-j", "1", "-q", t], state_dir=tmp / "s-j1"
        ),
        "csv": dict(
            args=["--emit", "all", "--format", "csv", "-q", "--output", tmp / "out.csv", t],
            state_dir=tmp / "s-csv",
        ),
        "signed": dict(
            args=["--emit", "signed", "--format", "jsonl", "-q", t], state_dir=tmp / "s-signed"
        ),
        "table": dict(args=["--no-progress", t], state_dir=tmp / "s-table"),
        "clean": dict(
            args=["--format", "jsonl", t / "clean", t / "empty"], state_dir=tmp / "s-clean"
        ),
        "missing": dict(args=["--format", "jsonl", t / "no such dir"], state_dir=tmp / "s-missing"),
        "missing+tree": dict(
            args=["--format", "jsonl", "-q", t / "gone", t], state_dir=tmp / "s-mt"
        ),
        "file-root": dict(
            args=["--format", "jsonl", "-q", t / "ext" / "report.pdf"], state_dir=tmp / "s-file"
        ),
        "rules": dict(
            args=["--format", "jsonl", "-q", "--rules", tmp / "contoso.yaml", t],
            state_dir=tmp / "s-r",
        ),
        "bad-rules": dict(
            args=["--format", "jsonl", "--rules", tmp / "bad.yaml", t], state_dir=tmp / "s-br"
        ),
        "exclude": dict(args=["--format", "jsonl", *excludes, t], state_dir=tmp / "s-ex"),
        "allow": dict(
            args=["--format", "jsonl", "--allowlist", tmp / "partial.yaml", t],
            state_dir=tmp / "s-al",
        ),
        "allow-all": dict(
            args=["--format", "jsonl", "--allowlist", tmp / "everything.yaml", t],
            state_dir=tmp / "s-aa",
        ),
        "bad-allow": dict(
            args=["--allowlist", tmp / "bad-allowlist.yaml", t], state_dir=tmp / "s-ba"
        ),
        # nothing to find in clean/: an exit status of 1 could only mean a crash
        "bad-output": dict(
            args=["--format", "jsonl", "-o", tmp / "no such dir" / "out.jsonl", t / "clean"],
            state_dir=tmp / "s-bo",
        ),
        "bad-state": dict(
            args=["--format", "jsonl", t / "clean"], state_dir=tmp / "state-is-a-file"
        ),
        **{
            f"jobs={n}": dict(args=["--jobs", n, t / "clean"], state_dir=tmp / f"s-j{n}")
            for n in ("0", "255", "x", "254")
        },
    }
    out = scan_many(jobs)
    out["tmp"] = tmp
    return out


# -- rows ---------------------------------------------------------------------------------------


def test_every_row_is_exact(tree, runs):
    done = runs["all"]
    assert done.returncode == 1, done
    assert done.stderr == ""  # -q: no summary, and nothing went wrong
    rows = done.rows
    tree.check(rows, NAMES)
    assert identities(rows) == tree.expected("all")
    # every PE of the tree has rows, every non-PE has none
    paths = {path_text(p)[0] for p, s in tree.files.items() if s not in NOT_PE}
    assert {r["FolderPath"] for r in rows} == paths
    report_ids = [r["ReportId"] for r in rows]
    assert report_ids == sorted(set(report_ids)), "unique, increasing in output order"
    assert len({(r["DeviceId"], r["DeviceName"]) for r in rows}) == 1


def test_files_are_recognised_by_content_not_name(tree, runs):
    rows = runs["detections"].rows
    found = {r["FolderPath"] for r in rows}
    t = str(tree.root)
    for rel in ("ext/report.pdf", "ext/noextension", "ext/notes.txt", "names/dwagupd.dll"):
        assert f"{t}/{rel}" in found, rel
    for rel in ("ext/fake.exe", "names/dwaglnc.exe", "clean/readme.exe", "clean/mz-only.exe"):
        assert f"{t}/{rel}" not in found, rel
    by_path: dict[str, set] = {}
    for r in rows:
        by_path.setdefault(r["FolderPath"], set()).add(r["RuleId"])
    # a name is enough for the lookalike rule: an unsigned PE called dwagent.exe, a Contoso-
    # signed one called DWAGSVC.EXE (in~ ignores case); the same files elsewhere are clean
    assert by_path[f"{t}/names/dwagent.exe"] == {LOOKALIKE[0]}
    assert by_path[f"{t}/names/DWAGSVC.EXE"] == {LOOKALIKE[0]}
    assert f"{t}/ext/clean.exe" not in by_path and f"{t}/ext/tool.dll" not in by_path
    assert by_path[f"{t}/names/dwagupd.dll"] == {FILESIG[0]}  # trusted DWSNET srl: not a lookalike


def test_detections_are_the_rules_that_match(tree, runs):
    done = runs["detections"]
    assert done.returncode == 1, done
    rows = done.rows
    tree.check(rows, NAMES)
    assert identities(rows) == tree.expected("detections")
    assert all(r["RuleId"] for r in rows)
    rules = {r["RuleId"] for r in rows}
    assert rules == {FILESIG[0], LOOKALIKE[0], UNTRUSTED[0]}
    # a row that matches two rules is emitted twice
    selfsigned = [r for r in rows if r["SHA256"] == _sha256("selfsigned-dwsnet-ou.exe")]
    assert sorted(r["RuleId"] for r in selfsigned) == sorted(
        [FILESIG[0], UNTRUSTED[0]] * 2  # two copies: all/ and the NFD name
    )


def _sha256(sample: str) -> str:
    import hashlib

    return hashlib.sha256((PE_DIR / sample).read_bytes()).hexdigest()


def test_unicode_and_long_paths_are_exact(tree, runs):
    rows = runs["detections"].rows
    t = str(tree.root)
    paths = {r["FolderPath"] for r in rows}
    nfc = unicodedata.normalize("NFC", "Über.exe")
    nfd = unicodedata.normalize("NFD", "Über.exe")
    assert f"{t}/unicode/Ünïcödé 日本語/ß/{nfc}" in paths
    assert f"{t}/unicode/Ünïcödé 日本語/ß/{nfd}" in paths  # not normalized: the real name
    assert f"{t}/unicode/🙂 emoji\u202eexe.txt" in paths
    long_path = f"{t}/long/{LONG}/{LONG}/{LONG}/long-path.exe"
    assert len(long_path) > 260 and long_path in paths
    deep = [p for p in paths if p.endswith("/deep.exe")]
    assert deep == [f"{t}/" + "/".join(f"d{i}" for i in range(40)) + "/deep.exe"]
    assert all(r["FolderPathBytes"] is None for r in rows)  # all of them valid UTF-8
    # JSON Lines output is ASCII: no name can break a line or reach a terminal raw
    assert runs["detections"].stdout.isascii()


def test_emit_policies(tree, runs):
    detections, signed, every = (runs[k].rows for k in ("detections", "signed", "all"))
    assert identities(detections) == tree.expected("detections")
    assert identities(signed) == tree.expected("signed")
    assert identities(every) == tree.expected("all")
    assert len(detections) < len(signed) < len(every)
    assert all(r["RuleId"] for r in detections)
    assert all(r["IsSigned"] or r["RuleId"] for r in signed)
    unsigned = [r for r in every if not r["IsSigned"]]
    assert unsigned and all(r["VerificationStatus"] == "Unsigned" for r in unsigned)
    # the same row has the same content under every policy
    assert set(stable_set(detections)) <= set(stable_set(signed)) <= set(stable_set(every))


def test_jobs_do_not_change_the_rows(runs):
    assert runs["all_j1"].returncode == runs["all"].returncode == 1
    assert stable_set(runs["all_j1"].rows) == stable_set(runs["all"].rows)


def test_csv_holds_the_jsonl_rows(runs):
    done = runs["csv"]
    assert done.returncode == 1, done
    assert done.stdout == b""  # --output: the rows go to the file
    text = (runs["tmp"] / "out.csv").read_bytes().decode("utf-8")
    assert text.splitlines()[0] == ",".join(NAMES)
    rows = csv_rows(text)
    assert all(list(r) == list(NAMES) for r in rows)
    expected = [as_csv(r) for r in runs["all"].rows]
    assert stable_set(rows) == stable_set(expected)
    # a hostile name (quotes, comma, semicolon) stays in its cell
    assert any(r["FileName"] == "\"quoted\", 'name';x.exe" for r in rows)


def test_table_shows_every_detection(tree, runs):
    done = runs["table"]
    assert done.returncode == 1, done
    text = done.text
    rows = runs["detections"].rows
    # one block per file, listing every rule the file matched
    blocks = [b.splitlines() for b in text.split("\n\n") if b.strip()]
    wanted: dict[str, set] = {}
    for r in rows:
        path = r["FolderPath"]
        # printable() quotes the names with a bidi override, the one character of these names
        # it must escape, as $'…' with \u202e; the others are shown as they are
        if "\u202e" in path:
            path = "$'" + path.replace("\u202e", "\\u202e") + "'"
        wanted.setdefault(path, set()).add(r["RuleName"])
    shown = {
        b[0]: {
            re.sub(r"  \(signatures? [\d, ]+\)$", "", line[16:])
            for line in b
            if line.startswith(("  Rules:", " " * 16))
        }
        for b in blocks
    }
    assert len(blocks) == len(shown) == len(wanted)
    assert shown == wanted
    assert "\u202e" not in text and "\u202e" not in done.stderr  # bidi override escaped


def test_summary(tree, runs):
    done = runs["detections"]
    rows = done.rows
    counts = done.summary
    regular = [p for p in (tree.root).rglob("*") if p.is_file()]
    pe = [p for p, s in tree.files.items() if s not in NOT_PE]
    signed = [p for p, s in tree.files.items() if s not in NOT_PE and _signed(s)]
    assert counts["files walked"] == len(regular)
    assert counts["PE files"] == len(pe)
    assert counts["signed"] == len(signed)
    assert counts["detections"] == counts["rows emitted"] == len(rows)
    assert counts["from the cache"] == 0
    assert "not read:" not in done.stderr and "skipped:" not in done.stderr
    # the hunting query's summarize: one group, Count = the detections, their ReportIds
    m = re.search(r"\n  ([0-9a-f]{40})  (\S+) +(\S+Z) +(\S+Z) +\[([^\]]*)\] +(\d+)\n", done.stderr)
    assert m, done.stderr
    assert m.group(1) == rows[0]["DeviceId"] and m.group(2) == rows[0]["DeviceName"]
    assert m.group(3) == min(r["Timestamp"] for r in rows)
    assert m.group(4) == max(r["Timestamp"] for r in rows)
    assert int(m.group(6)) == len(rows)
    shown = m.group(5).split(", ")
    assert shown[-1] == "..." and shown[:-1] == [str(r["ReportId"]) for r in rows[:20]]


def _signed(sample: str) -> bool:
    return any(r["IsSigned"] for r in _rows_of(sample))


def _rows_of(sample):
    from sweeptree import expected_rows

    return expected_rows(sample)


def test_report_ids_never_repeat_across_runs(runs, tree):
    first = runs["detections"].rows
    state = runs["tmp"] / "s-detections"
    again = scan("--format", "jsonl", "-q", tree.root, state_dir=state)
    assert again.returncode == 1, again
    second = again.rows
    assert stable_set(second) == stable_set(first)
    ids1 = [r["ReportId"] for r in first]
    ids2 = [r["ReportId"] for r in second]
    assert ids1 == sorted(set(ids1)) and ids2 == sorted(set(ids2))
    assert min(ids2) > max(ids1)
    assert {r["DeviceId"] for r in first + second} == {first[0]["DeviceId"]}


# -- exit status --------------------------------------------------------------------------------


def test_exit_0_when_nothing_is_found(runs):
    done = runs["clean"]
    assert done.returncode == 0, done
    assert done.stdout == b""
    counts = done.summary
    assert (counts["files walked"], counts["PE files"], counts["signed"]) == (6, 2, 1)
    assert counts["detections"] == counts["rows emitted"] == 0
    assert "Detections, summarized" not in done.stderr


def test_exit_2_on_a_missing_root(tree, runs):
    done = runs["missing"]
    assert done.returncode == 2, done
    assert done.stdout == b""
    assert f"rmmscan: {tree.root}/no such dir: No such file or directory\n" in done.stderr
    assert done.summary["unreadable roots"] == 1


def test_detections_win_over_a_missing_root(tree, runs):
    done = runs["missing+tree"]
    assert done.returncode == 1, done
    assert f"rmmscan: {tree.root}/gone: No such file or directory\n" in done.stderr
    assert identities(done.rows) == tree.expected("detections")


def test_a_file_as_root(tree, runs):
    done = runs["file-root"]
    assert done.returncode == 1, done
    (row,) = done.rows
    tree.check([row], NAMES)
    assert row["FolderPath"] == f"{tree.root}/ext/report.pdf" and row["RuleId"] == FILESIG[0]


def test_exit_2_on_a_bad_rule_file(runs):
    done = runs["bad-rules"]
    assert done.returncode == 2, done
    assert done.stdout == b""
    bad = str(runs["tmp"] / "bad.yaml")
    assert re.search(rf"{re.escape(bad)}:\d+", done.stderr), done.stderr
    assert "hasprefix" in done.stderr


def test_exit_2_on_a_bad_allowlist(runs):
    done = runs["bad-allow"]
    assert done.returncode == 2, done
    assert done.stdout == b""
    bad = str(runs["tmp"] / "bad-allowlist.yaml")
    assert re.search(rf"{re.escape(bad)}:3\b", done.stderr), done.stderr


def test_exit_2_when_the_output_cannot_be_written(runs):
    """Not a traceback and exit 1 (Python's status for an uncaught exception), which the
    exit-status contract reads as 'detections found'."""
    done = runs["bad-output"]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done
    assert f"{runs['tmp']}/no such dir/out.jsonl" in done.stderr


def test_an_unusable_state_dir_is_one_warning_and_the_sweep_goes_on(runs):
    """The state only continues ReportIds and keeps the cache: without it, the sweep still
    says what it found (here nothing: exit 0), after one warning naming the path."""
    done = runs["bad-state"]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done
    warnings = [line for line in done.stderr.splitlines() if line.startswith("rmmscan: ")]
    assert len(warnings) == 1, done.stderr
    assert f"{runs['tmp']}/state-is-a-file" in warnings[0]
    assert "--state-dir" in warnings[0]
    assert done.summary["files walked"] > 0


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, message",
    [
        ("0", "0: must be 1 to 254"),
        ("255", "255: must be 1 to 254"),
        ("x", "not a whole number: 'x'"),
    ],
)
def test_jobs_out_of_range_is_a_usage_error(runs, n, message):
    """Not a silent fallback or 1,000 forked processes of 40 MiB each from a typo."""
    done = runs[f"jobs={n}"]
    assert done.returncode == 2, done
    assert done.stdout == b""
    assert f"argument --jobs/-j: {message}\n" in done.stderr, done.stderr


def test_jobs_at_the_limit_sweeps(runs):
    done = runs["jobs=254"]
    assert done.returncode == 0, done
    assert done.summary["files walked"] == 6


def test_rules_option_replaces_the_pack(tree, runs):
    done = runs["rules"]
    assert done.returncode == 1, done
    rows = done.rows
    tree.check(rows, NAMES, {"33333333-3333-4333-8333-333333333333": "Contoso signer (test)"})
    assert {r["RuleId"] for r in rows} == {"33333333-3333-4333-8333-333333333333"}
    assert {r["RuleName"] for r in rows} == {"Contoso signer (test)"}
    expected = sorted(
        (path_text(p)[0], sig["SignatureIndex"])
        for p, s in tree.files.items()
        for sig in MANIFEST[s]["signatures"]
        if "Contoso" in sig["Signer"] and sig["IsTrusted"]
    )
    assert sorted((r["FolderPath"], r["SignatureIndex"]) for r in rows) == expected


def test_exclude_by_name_and_by_path(tree, runs):
    done = runs["exclude"]
    assert done.returncode == 1, done
    t = os.fsencode(tree.root)

    def kept(path: bytes) -> bool:
        return not (path.endswith(b".pdf") or b"/d7/" in path or path.startswith(t + b"/names/"))

    expected = [e for e in tree.expected("detections") if kept(os.fsencode(e[0]))]
    assert identities(done.rows) == expected
    assert len(expected) < len(tree.expected("detections"))
    pdfs = [p for p in tree.files if p.endswith(b".pdf")]
    names = os.listdir(tree.root / "names")
    # excluded: the .pdf files, the d7 folder (its subtree is not even walked), names/*
    assert done.summary["excluded"] == len(pdfs) + 1 + len(names)


def test_allowlist_suppresses_and_the_summary_says_so(tree, runs):
    done = runs["allow"]
    assert done.returncode == 1, done
    allowed = os.fsdecode(tree.root / "all") + "/"
    full = tree.expected("detections")
    suppressed = [e for e in full if e[0].startswith(allowed) and e[2] == FILESIG[0]]
    assert suppressed
    assert identities(done.rows) == [e for e in full if e not in suppressed]
    line = [x for x in done.stderr.splitlines() if x.startswith("suppressed by the allowlist")]
    assert line == [
        f"suppressed by the allowlist: {len(suppressed)} "
        f"($'sanctioned \\x1b[31mDWService': {len(suppressed)})"
    ]
    assert "\x1b" not in done.stderr


def test_allowlist_suppressing_everything_exits_0(tree, runs):
    done = runs["allow-all"]
    assert done.returncode == 0, done
    assert done.stdout == b""
    n = len(tree.expected("detections"))
    assert done.summary["detections"] == 0
    assert f"suppressed by the allowlist: {n} (everything: {n})" in done.stderr
