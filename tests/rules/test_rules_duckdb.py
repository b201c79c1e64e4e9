"""The rule pack and rmmscan's KQL engine, cross-checked with duckdb-kql, an independent KQL
implementation (a full ANTLR grammar of KQL translated to DuckDB SQL; docs/architecture.md §3).

1. Every rule's ``query`` is valid KQL for duckdb-kql's full grammar.
2. Every rule's whole query, unchanged (``let``, time window and final ``summarize``
   included), run by duckdb-kql over a ``DeviceFileCertificateInfo`` table built from the
   rule's own test rows, selects exactly its positive rows.
3. End to end, the point of ``--emit signed`` (README: an inventory on which the upstream
   hunting queries run unchanged in Sentinel): every rule's unchanged query, run by duckdb-kql
   over the rows of ``rmmscan scan samples/ --emit all``, selects exactly the signatures the
   endpoint reports with that rule's id in a default ``--emit detections`` run.
4. Every rule's query against variants of its own needles (case, neighbouring characters,
   separators, normalization), duckdb-kql against rmmscan's engine row by row.

The queries and the test rows are read here straight from the YAML files, not through
rmmscan's loader. The tables have all 41 columns of ``rmmscan.rows.columns`` with DuckDB types
for their Kusto types. A string the row leaves out (or that a scan emits as null) is ``""``:
Kusto's string type has no null ("the string type doesn't support null values",
https://learn.microsoft.com/kusto/query/scalar-data-types/null-values), which is also how
rules/README.md defines test rows.

Where duckdb-kql and Kusto are known to differ, the rows are listed below with the reason, and
the tests assert that the disagreements are exactly those rows. Both known differences concern
characters outside ASCII:

* **Case folding.** duckdb-kql's ``has`` is a ``(?i)`` RE2 regex, which folds every Unicode
  letter (``ü``/``Ü``, ``ä``/``Ä``, the KELVIN SIGN ``K`` with ``k``, ``ſ`` with ``s``); its
  ``=~``/``in~`` compare ``lower()`` of both sides, also Unicode. Kusto: "Case-insensitive
  operators are currently supported only for ASCII-text. For non-ASCII comparison, use the
  tolower() function" (https://learn.microsoft.com/kusto/query/in-operator; the same note was
  on the has, =~, startswith and endswith pages). rmmscan folds A-Z only, as documented: rmmscan
  is right, duckdb-kql matches more.
* **Which numbers make terms.** duckdb-kql's term boundary is ``[^\\pL\\pN]``, so ``²`` (No) and
  ``Ⅻ`` (Nl) are term characters; rmmscan takes "alphanumeric" as .NET's
  ``Char.IsLetterOrDigit`` (letters and decimal digits, Nd), so they separate terms. Kusto's page
  says only "maximal sequences of alphanumeric characters"
  (https://learn.microsoft.com/kusto/query/datatypes-string-operators): undocumented either way;
  rmmscan's reading is the .NET one Kusto is built on.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import duckdb_kql
import pytest
import yaml

from rmmscan.rows import columns as cols
from rmmscan.rules.pack import load_pack

from conftest import ROOT, TEST_ROOT

RULES = ROOT / "rules"
RULE_FILES = sorted(RULES.glob("*.yaml"))
TABLE = "DeviceFileCertificateInfo"
DUCK_TYPES = {"string": "VARCHAR", "bool": "BOOLEAN", "long": "BIGINT", "int": "INTEGER",
              "datetime": "TIMESTAMP"}  # fmt: skip
DWSERVICE = "642b39b7-18eb-46eb-ba1f-bf70befae05e"
UNTRUSTED = "dfcd614b-1291-4565-a0eb-55153f9ed4c0"
LOOKALIKE = "b20699d4-c5d9-49e1-8332-b9ce00292b91"
KUSTO_ASCII_FOLD = (
    "Kusto's case-insensitive operators fold ASCII letters only (in~ operator page: "
    "'Case-insensitive operators are currently supported only for ASCII-text'); duckdb-kql's "
    "has is (?i) and folds non-ASCII letters too"
)

# Test rows (rule file, kind, the row as written) on which duckdb-kql knowingly differs from
# Kusto, and why. Each is a row the rule must not match that duckdb-kql matches.
KNOWN_TEST_ROW_DIFFERENCES = {
    ("rmm_DWService_filesig.yaml", "negative", (("Signer", "DWSNET oü"),)): KUSTO_ASCII_FOLD
    + ": 'DWSNET oü' has 'DWSNET OÜ' holds in duckdb-kql, not in Kusto",
    ("rmm_ServerEye_filesig.yaml", "negative", (("Signer", "KRÄMER IT SOLUTIONS GMBH"),)): (
        KUSTO_ASCII_FOLD + ": Ä is not ä in Kusto"
    ),
}


@functools.cache
def pack() -> dict:
    """rmmscan's rules by file name."""
    return {rule.filename: rule for rule in load_pack()}


def _id(path) -> str:
    return path.name


def rule_yaml(path) -> dict:
    return yaml.safe_load(path.read_text("utf-8"))


@functools.cache
def query_text(name: str) -> str:
    return rule_yaml(RULES / name)["query"]


@functools.cache
def sql(name: str) -> str:
    """The rule's whole query in DuckDB SQL, translated once: now() stays in the SQL and is
    evaluated each time it runs."""
    translated = duckdb_kql.to_sql(query_text(name))
    assert not translated.parameters and not translated.unbound, translated.parameters
    return str(translated)


def duck_value(column: str, value):
    """A value of `column` as DuckDB takes it; a missing string is "" (Kusto has no null
    string), datetimes are naive UTC (duckdb-kql runs with TimeZone=UTC)."""
    kind = cols.TYPES[column]
    if value is None:
        return "" if kind == "string" else None
    if kind == "datetime" and isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def load_table(con, rows: list[dict], columns=cols.NAMES) -> None:
    """DeviceFileCertificateInfo with `columns` (typed) and `rows` (column -> value)."""
    con.execute(f'DROP TABLE IF EXISTS "{TABLE}"')
    ddl = ", ".join(f'"{c}" {DUCK_TYPES[cols.TYPES[c]]}' for c in columns)
    con.execute(f'CREATE TABLE "{TABLE}" ({ddl})')
    # One list per column, unnested side by side: executemany is row by row and far slower.
    lists = ", ".join(f"unnest(?::{DUCK_TYPES[cols.TYPES[c]]}[])" for c in columns)
    con.execute(
        f'INSERT INTO "{TABLE}" SELECT {lists}',
        [[duck_value(c, row.get(c)) for row in rows] for c in columns],
    )
    (count,) = con.execute(f'SELECT count(*) FROM "{TABLE}"').fetchone()
    assert count == len(rows)


def run(con, name: str) -> list[dict]:
    """The rule's unchanged query on the table: its summarize groups, as dicts."""
    cursor = con.execute(sql(name))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def per_row_table(con, rows: list[dict], now: dt.datetime, old: list[bool]) -> None:
    """One summarize group per row: DeviceId and DeviceName are the row's number, ReportId
    distinct; Timestamp is `now`, or 6 days earlier (outside the 5-day window) where `old`."""
    full = []
    for i, (row, is_old) in enumerate(zip(rows, old, strict=True)):
        full.append({
            **row,
            "Timestamp": now - dt.timedelta(days=6) if is_old else now,
            "DeviceId": f"{i:040x}",
            "DeviceName": f"row{i}.test",
            "ReportId": 1000 + i,
            "RuleId": None,
            "RuleName": None,
        })  # fmt: skip
    load_table(con, full)


def selected_rows(groups: list[dict], now: dt.datetime) -> set[int]:
    """The row numbers a per-row table's summarize groups stand for; each group is one row."""
    out = set()
    for group in groups:
        i = int(group["DeviceName"].removeprefix("row").removesuffix(".test"))
        assert group["DeviceId"] == f"{i:040x}"
        assert group["Count"] == 1, group
        assert json.loads(group["Report"]) == [1000 + i], group
        assert group["FirstSeen"] == group["LastSeen"] == now, group
        out.add(i)
    return out


# --- 1. Valid KQL ------------------------------------------------------------------------------


def test_rule_files_are_the_pack():
    """The files read here are the pack rmmscan loads: same ids, nothing more, nothing less."""
    ids = {rule_yaml(p)["id"] for p in RULE_FILES}
    assert len(ids) == len(RULE_FILES) >= 54
    assert ids == {r.id for r in pack().values()}


@pytest.mark.parametrize("path", RULE_FILES, ids=_id)
def test_query_is_valid_kql(path):
    query = rule_yaml(path)["query"]
    result = duckdb_kql.parse(query)
    assert result.ok and result.diagnostics == [], result.diagnostics
    assert duckdb_kql.validate(query) == []


def test_invalid_kql_is_reported():
    """The check above can fail: a rule's query with one token broken is not valid KQL."""
    query = query_text("rmm_DWService_filesig.yaml")
    for broken in (
        query.replace("(Time_start..Time_end)", "(Time_start..Time_end"),
        query.replace("has_any (", "has_any ((", 1),
        query.replace("count() by", "count() by by"),
    ):
        assert broken != query
        assert duckdb_kql.validate(broken), broken
        with pytest.raises(duckdb_kql.KqlSyntaxError):
            duckdb_kql.parse(broken)


# --- 2. The whole query over the rule's test rows ---------------------------------------------


@pytest.fixture(scope="module")
def con():
    """One connection for the per-rule tables (connecting costs ~0.1 s), each replacing the
    last."""
    return duckdb_kql.connect()


@pytest.mark.parametrize("path", RULE_FILES, ids=_id)
def test_query_selects_exactly_the_positive_rows(path, con):
    """duckdb-kql runs the unchanged query over the rule's positive and negative rows.

    Compared through the summarize rather than by cutting it off, so the query runs exactly as
    written: every row has its own DeviceId and DeviceName, so each summarize group is one row,
    with Count 1, Report [its ReportId] and FirstSeen = LastSeen = its Timestamp ("now"). Each
    positive row is also present a second time 6 days old, outside the query's 5-day window:
    those copies must never be selected (the window is applied, not skipped).
    """
    name = path.name
    tests = yaml.safe_load((RULES / "tests" / name).read_text("utf-8"))
    written = [(kind, row) for kind in ("positive", "negative") for row in tests[kind]]
    positives = [row for kind, row in written if kind == "positive"]
    rows = [row for _, row in written] + positives
    old = [False] * len(written) + [True] * len(positives)

    now = utcnow()
    per_row_table(con, rows, now, old)
    selected = selected_rows(run(con, name), now)

    assert not {i for i in selected if old[i]}, "rows outside the time window were selected"
    differ = {
        (name, written[i][0], tuple(written[i][1].items()))
        for i in range(len(written))
        if (i in selected) != (written[i][0] == "positive")
    }
    known = {key for key in KNOWN_TEST_ROW_DIFFERENCES if key[0] == name}
    assert differ == known, "duckdb-kql and the test rows disagree beyond the known differences"

    # On exactly those rows rmmscan's engine follows the file, and so Kusto's documentation.
    if known:
        rule = pack()[name]
        for _, kind, values in known:
            values = dict(values)
            get = lambda c, v=values: v.get(c, "" if cols.TYPES[c] == "string" else None)  # noqa: E731
            assert rule.matches(get) == (kind == "positive"), values


def test_known_test_row_differences_are_test_rows():
    """Every listed difference names a row of its rule's test file (test 2 asserts they differ)."""
    for name, kind, values in KNOWN_TEST_ROW_DIFFERENCES:
        tests = yaml.safe_load((RULES / "tests" / name).read_text("utf-8"))
        assert dict(values) in tests[kind], (name, kind, values)


# --- 3. End to end: the endpoint's detections and the hunting queries on its inventory --------


RMMSCAN = Path(sys.executable).parent / "rmmscan"  # .venv/bin/rmmscan, the installed command


def rmmscan(*args: str, state_dir) -> subprocess.Popen:
    assert RMMSCAN.is_file(), f"{RMMSCAN}: install the project in this venv (tests/run does)"
    command = [
        str(RMMSCAN), "scan", "samples/", *args, "--format", "jsonl",
        "--trusted-roots", str(TEST_ROOT.relative_to(ROOT)), "--state-dir", str(state_dir), "-q",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """(rows of `--emit all`, rows of the default `--emit detections`): two runs, each with a
    state directory of its own (no shared scan cache)."""
    procs = {
        "all": rmmscan("--emit", "all", state_dir=tmp_path_factory.mktemp("state-all")),
        "detections": rmmscan(state_dir=tmp_path_factory.mktemp("state-detections")),
    }
    out = {}
    for what, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1, f"--emit {what}: exit {proc.returncode} (1: found)\n{stderr}"
        out[what] = [json.loads(line) for line in stdout.splitlines()]
    return out["all"], out["detections"]


def key(row: dict) -> tuple:
    return row["FolderPath"], row["SignatureIndex"]


VARYING = ("RuleId", "RuleName", "ReportId")  # what differs between a row's copies, per rule
INVENTORY_COLUMNS = tuple(c for c in cols.NAMES if c not in ("RuleId", "RuleName"))


@pytest.fixture(scope="module")
def inventory(scans):
    """The `--emit all` rows as Sentinel would hold an inventory of each signature once:
    RuleId and RuleName dropped, one row per (FolderPath, SignatureIndex) (the first emitted;
    a row that matches n rules is emitted n times, each with its own ReportId).
    Returns (connection, ReportId -> key)."""
    emitted, _ = scans
    first: dict[tuple, dict] = {}
    for row in emitted:
        assert set(row) == set(cols.NAMES), sorted(set(row) ^ set(cols.NAMES))
        kept = first.setdefault(key(row), row)
        same = {c: v for c, v in row.items() if c not in VARYING}
        assert same == {c: v for c, v in kept.items() if c not in VARYING}, key(row)
    report_ids = {row["ReportId"]: key(row) for row in first.values()}
    assert len(report_ids) == len(first), "a ReportId repeats"
    con = duckdb_kql.connect()
    load_table(con, list(first.values()), columns=INVENTORY_COLUMNS)
    return con, report_ids


def test_scans_are_consistent(scans, inventory):
    """Both runs found the same things; the inventory is not trivial."""
    emitted, detections = scans
    _, report_ids = inventory
    rule_ids = {rule_yaml(p)["id"] for p in RULE_FILES}
    tagged = {(r["RuleId"], key(r)) for r in emitted if r["RuleId"] is not None}
    assert tagged == {(r["RuleId"], key(r)) for r in detections}
    assert {r["RuleId"] for r in detections} <= rule_ids
    assert all(r["RuleId"] and r["RuleName"] for r in detections)
    assert len({r["DeviceId"] for r in emitted + detections}) == 1
    # Unsigned PEs, nested signatures, DWSNET signers: what the queries are about is there.
    assert any(k[1] is None for k in report_ids.values())
    assert any(k[1] == 2 for k in report_ids.values())
    found = {r["RuleId"] for r in detections}
    assert {DWSERVICE, UNTRUSTED, LOOKALIKE} <= found


@pytest.mark.parametrize("path", RULE_FILES, ids=_id)
def test_hunting_query_on_inventory_equals_endpoint_detections(path, scans, inventory):
    """The rule's query, unchanged, over the inventory selects exactly the signatures the
    endpoint reported with its RuleId.

    Run as written, summarize included: its Report (make_set(ReportId)) names the selected rows,
    since every inventory row has its own ReportId, and the Counts add up to their number. No
    query text is cut or appended, so this is what Sentinel would answer on the same rows.
    """
    _, detections = scans
    con, report_ids = inventory
    rule_id = rule_yaml(path)["id"]
    groups = run(con, path.name)
    selected = {report_ids[r] for g in groups for r in json.loads(g["Report"])}
    assert sum(g["Count"] for g in groups) == len(selected)
    reported = {key(r) for r in detections if r["RuleId"] == rule_id}
    assert selected == reported, (
        f"duckdb-kql only: {sorted(selected - reported, key=str)}; "
        f"rmmscan only: {sorted(reported - selected, key=str)}"
    )


# --- 4. Both engines on variants of each rule's needles ----------------------------------------


def _ascii_case(text: str, how) -> str:
    return "".join(how(c) if c.isascii() else c for c in text)


def variants(needle: str) -> dict[str, str]:
    """Values near `needle`, each tagged with the difference it may show: "same" (none
    allowed), "fold" (non-ASCII case: only duckdb-kql may match), "number" (a No/Nl number
    glued to it: only rmmscan may match)."""
    out: dict[str, str] = {}

    def add(value: str, tag: str) -> None:
        out.setdefault(value, tag)  # the first tag wins: "same" variants come first

    half = len(needle) // 2
    for value in (
        needle, "X" + needle, needle + "x", "1" + needle, needle + "1", "é" + needle,
        needle + "é", "中" + needle, needle + "\u0660", "_" + needle, needle + "_",
        needle + "\u0301", "\u0301" + needle, needle + "ª", needle + "ʰ", "ǅ" + needle,
        needle + "\u02bc", " " + needle + " ", needle + ".", needle + ",", "'" + needle,
        needle + "-x", needle.rstrip("."), needle.replace(",", ""),
        needle.replace(" ", "  "), needle.replace(" ", "\t"), needle.replace(" ", "\u00a0"),
        needle[:half] + " " + needle[half:], unicodedata.normalize("NFD", needle),
        needle.replace("i", "ı").replace("I", "İ"), "Contoso " + needle + " Ltd",
        _ascii_case(needle, str.upper), _ascii_case(needle, str.lower),
        _ascii_case(needle, str.swapcase),
    ):  # fmt: skip
        add(value, "same")
    others = [c for c in needle if not c.isascii()]
    for value in (needle.upper(), needle.lower(), needle.swapcase()):
        add(value, "same" if [c for c in value if not c.isascii()] == others else "fold")
    add(re.sub("[kK]", "\u212a", needle), "fold")  # KELVIN SIGN
    add(re.sub("[sS]", "\u017f", needle), "fold")  # LATIN SMALL LETTER LONG S
    for number in ("²", "Ⅻ"):
        add(number + needle, "number")
        add(needle + number, "number")
    return out


NUMBER_CATEGORIES = ("No", "Nl")


@pytest.fixture(scope="module")
def differences(con):
    """Every (rule file, value, tag, who matched) where the engines disagree, over all rules."""
    found = []
    for path in RULE_FILES:
        query = query_text(path.name)
        needles = sorted(set(re.findall(r"'([^'\\]*)'", query)))
        read = [c for c in cols.QUERYABLE if re.search(rf"\b{c}\b", query)]
        strings = [c for c in read if cols.TYPES[c] == "string"]
        bools = [c for c in read if cols.TYPES[c] == "bool"]
        assert needles and strings, path.name
        rows, tags = [], []
        for needle in needles:
            for value, tag in variants(needle).items():
                for column in strings:
                    for flag in (True, False, None) if bools else (None,):
                        rows.append({column: value, **{b: flag for b in bools}})
                        tags.append((value, tag))
        now = utcnow()
        per_row_table(con, rows, now, [False] * len(rows))
        duck = selected_rows(run(con, path.name), now)
        rule = pack()[path.name]
        for i, row in enumerate(rows):
            get = lambda c, r=row: r.get(c, "" if cols.TYPES[c] == "string" else None)  # noqa: E731
            ours = rule.matches(get)
            if ours != (i in duck):
                found.append((path.name, *tags[i], "rmmscan" if ours else "duckdb-kql"))
    return found


def test_engines_agree_on_needle_variants_but_for_known_differences(differences):
    """On values near every needle of every rule, rmmscan's engine and duckdb-kql agree, except
    where the value differs by the case of a non-ASCII letter (duckdb-kql folds it, Kusto and
    rmmscan do not) or has a ² or Ⅻ glued to a needle (a term character for duckdb-kql only);
    both differences occur, so this test sees them."""
    unexplained = [
        d for d in differences
        if (d[2], d[3]) not in (("fold", "duckdb-kql"), ("number", "rmmscan"))
    ]  # fmt: skip
    assert not unexplained, unexplained
    for _, value, tag, _ in differences:
        if tag == "number":
            assert any(unicodedata.category(c) in NUMBER_CATEGORIES for c in value)
        else:
            assert any(not c.isascii() and c.lower() + c.upper() != c + c for c in value)
    tags = {d[2] for d in differences}
    assert tags == {"fold", "number"}, tags
    # The test-row differences of test 2 are among them.
    for name, value in (("rmm_DWService_filesig.yaml", "dwsnet oü"),
                        ("rmm_ServerEye_filesig.yaml", "KRÄMER IT SOLUTIONS GMBH")):  # fmt: skip
        assert (name, value, "fold", "duckdb-kql") in differences
