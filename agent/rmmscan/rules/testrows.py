"""A rule's test rows: ``tests/<rule file name>`` beside it, rows the rule must match
(``positive``) and rows it must not (``negative``), run against the loaded pack."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import yaml

from ..rows import columns as cols
from .pack import (
    Problem,
    Problems,
    Rule,
    RulePack,
    key_nodes,
    line_of,
    read_text,
    read_yaml,
)

KINDS = ("positive", "negative")
_TYPES = {"string": str, "bool": bool, "long": int, "int": int, "datetime": (str, dt.datetime)}


@dataclass(frozen=True)
class TestRow:
    """A row a rule must match (positive) or must not (negative); unset columns are "" for
    strings and null for the rest."""

    __test__ = False  # not a pytest class
    kind: str
    values: dict
    source: str
    line: int

    def get(self, column: str) -> object:
        if column in self.values:
            return self.values[column]
        return "" if cols.QUERYABLE[column] == "string" else None


@dataclass(frozen=True)
class TestResult:
    __test__ = False
    rule: Rule
    row: TestRow
    matched: bool

    @property
    def ok(self) -> bool:
        return self.matched == (self.row.kind == "positive")

    def __str__(self) -> str:
        verdict = "did not match" if self.row.kind == "positive" else "matched"
        shown = ", ".join(f"{k}={v!r}" for k, v in self.row.values.items())
        return (f"{self.row.source}:{self.row.line}: {self.row.kind} row {verdict} rule "
                f"{self.rule.filename}: {shown}")  # fmt: skip


@dataclass(frozen=True)
class RuleTest:
    """A rule and the rows of its test file."""

    __test__ = False
    rule: Rule
    source: str  # the test file
    rows: tuple[TestRow, ...]

    def run(self) -> list[TestResult]:
        return [TestResult(self.rule, row, self.rule.matches(row.get)) for row in self.rows]


@dataclass(frozen=True)
class TestReport:
    __test__ = False
    results: tuple[TestResult, ...]
    problems: tuple[Problem, ...]  # test files that are missing or wrong

    @property
    def failures(self) -> tuple[TestResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.failures


def tests_path(rule: Rule) -> tuple[str, Traversable | None]:
    """(display path, resource) of the rule's test rows: tests/<rule file name> beside it."""
    base = rule.path[: len(rule.path) - len(rule.filename)]
    folder = rule.folder
    return f"{base}tests/{rule.filename}", None if folder is None else folder / "tests" / (
        rule.filename
    )


def load_tests(rule: Rule, problems: Problems) -> RuleTest | None:
    """The rule's test rows, or None with the problems added if the file is missing or wrong."""
    display, resource = tests_path(rule)
    if resource is None or not resource.is_file():
        problems.add(display, 0, f"no test rows for {rule.filename}: write rows it must match "
                     "(positive:) and rows it must not (negative:) in this file")  # fmt: skip
        return None
    before = len(problems)
    text = read_text(resource, display, problems)
    if text is None:
        return None
    data, node = read_yaml(text, display, problems)
    if node is None:
        return None
    if not isinstance(node, yaml.MappingNode):
        problems.add(display, line_of(node), "a test file is a mapping: 'positive:' and "
                     "'negative:', each a list of rows")  # fmt: skip
        return None
    rows = []
    keys = key_nodes(node)
    for key, (knode, vnode) in keys.items():
        if key not in KINDS:
            problems.add(display, line_of(knode), f"unknown key {key!r}: a test file has "
                         "'positive:' and 'negative:'")  # fmt: skip
        elif not isinstance(vnode, yaml.SequenceNode) or not vnode.value:
            problems.add(display, line_of(vnode), f"{key}: give a list of rows, at least one "
                         "(- Signer: ...)")  # fmt: skip
        else:
            for item, values in zip(vnode.value, data[key], strict=True):
                rows.append(TestRow(key, values, display, line_of(item)))
                _check_row(item, values, display, problems)
    for kind in KINDS:
        if kind not in keys:
            problems.add(display, 1, f"no {kind} rows: every rule needs rows it must match "
                         "and rows it must not")  # fmt: skip
    return RuleTest(rule, display, tuple(rows)) if len(problems) == before else None


def _check_row(node, values, source: str, problems: Problems) -> None:
    if not isinstance(values, dict):
        problems.add(source, line_of(node), "a row is a mapping of column: value")
        return
    for knode, vnode in node.value:
        column, value = knode.value, values.get(knode.value)
        if column not in cols.QUERYABLE:
            problems.add(source, line_of(knode), f"unknown column {column!r}: see "
                         "rmmscan/rows/columns.py for the columns a rule can read")  # fmt: skip
            continue
        kind = cols.QUERYABLE[column]
        if value is not None and (
            not isinstance(value, _TYPES[kind]) or (kind != "bool" and isinstance(value, bool))
        ):
            problems.add(source, line_of(vnode), f"{column} is a {kind} column, not "
                         f"{type(value).__name__}: quote text that YAML reads otherwise "
                         "('0123', 'true', 'null')")  # fmt: skip


def run_tests(pack: RulePack) -> TestReport:
    """Every rule's test rows against that rule."""
    problems = Problems()
    tests = [load_tests(rule, problems) for rule in pack]
    results = [result for test in tests if test is not None for result in test.run()]
    return TestReport(tuple(results), tuple(problems))
