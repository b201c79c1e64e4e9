"""Sanctioned RMM deployments: detections an allowlist entry suppresses.

An allowlist is a YAML list of entries::

    - name: helpdesk DWService
      reason: IT support uses DWService on the helpdesk PC (change 4711)
      where: |
        DeviceName =~ 'helpdesk-01.corp.example'
        and FolderPath startswith @'C:\\Program Files\\DWAgent\\'
      rules: [642b39b7-18eb-46eb-ba1f-bf70befae05e]   # optional: default, every rule

``where`` is a predicate in the rules' KQL (:func:`rmmscan.rules.kql.parse_predicate`) over the
row's columns. A detection of a rule on a row is suppressed by the first entry that applies
to the rule and whose predicate holds on the row; the sweep counts suppressions per entry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..rows import columns as cols
from . import kql
from .pack import (
    Problem,
    Problems,
    RuleLoadError,
    RulePack,
    key_nodes,
    line_of,
    problem_at,
    read_yaml,
    text_line,
    unknown_keys,
)

KEYS = ("name", "reason", "where", "rules")


@dataclass(frozen=True)
class Entry:
    name: str
    reason: str
    where: kql.Predicate
    rules: frozenset[str] | None  # rule ids; None: every rule
    source: str
    line: int

    def applies_to(self, rule) -> bool:
        return self.rules is None or rule.id in self.rules


@dataclass(frozen=True)
class Allowlist:
    entries: tuple[Entry, ...]
    columns: frozenset[str]  # every column an entry reads

    def __len__(self) -> int:
        return len(self.entries)

    def suppressing(self, rule, get: Callable[[str], object]) -> Entry | None:
        """The first entry that sanctions this rule's detection on this row, or None."""
        for entry in self.entries:
            if entry.applies_to(rule) and entry.where.evaluate(get):
                return entry
        return None


def load_allowlist(path: str | Path, *, pack: RulePack | None = None) -> Allowlist:
    """Read an allowlist file. With `pack`, every rule id an entry names must be in it.

    Raises RuleLoadError naming every problem, each with the file and line.
    """
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleLoadError(
            [Problem(source, 1, f"not UTF-8 ({exc.reason} at byte {exc.start}): save as UTF-8")]
        ) from None
    except OSError as exc:
        raise RuleLoadError([Problem(source, 0, f"cannot read: {exc.strerror or exc}")]) from None
    return parse_allowlist(text, source, pack=pack)


def parse_allowlist(text: str, source: str, *, pack: RulePack | None = None) -> Allowlist:
    """An allowlist from YAML text (an empty document is an empty allowlist)."""
    problems = Problems()
    data, node = read_yaml(text, source, problems, empty_ok=True)
    entries: list[Entry] = []
    if node is not None and not isinstance(node, yaml.SequenceNode):
        problems.add(source, line_of(node), "an allowlist is a list of entries "
                     "(- name: ..., reason: ..., where: ...)")  # fmt: skip
    elif node is not None:
        first: dict[str, int] = {}
        for item, value in zip(node.value, data, strict=True):
            entry = _entry(item, value, source, text, problems, pack)
            if entry is None:
                continue
            if entry.name in first:
                problems.add(source, entry.line, f"entry name {entry.name!r} is also used on "
                             f"line {first[entry.name]}: names must be unique, the summary "
                             "counts suppressions by name")  # fmt: skip
            first.setdefault(entry.name, entry.line)
            entries.append(entry)
    if problems:
        raise RuleLoadError(problems)
    return Allowlist(tuple(entries), frozenset().union(*(e.where.columns for e in entries)))


def _entry(node, value, source: str, text: str, problems: Problems, pack) -> Entry | None:
    before = len(problems)
    if not isinstance(node, yaml.MappingNode):
        problems.add(source, line_of(node), "an entry is a mapping: name, reason, where and "
                     "optionally rules")  # fmt: skip
        return None
    keys = key_nodes(node)
    bad = problem_at(keys, node, source, problems)
    unknown_keys(keys, KEYS, source, problems, f"an entry has {', '.join(KEYS)}")
    for key in ("name", "reason", "where"):
        if not isinstance(value.get(key), str) or not value[key].strip():
            bad(key, f"{key!r} is required, as text: name the deployment, say why it is "
                "sanctioned, and give the predicate that picks its rows")  # fmt: skip
    predicate = None
    if isinstance(value.get("where"), str) and value["where"].strip():
        try:
            predicate = kql.parse_predicate(
                value["where"],
                source=source,
                first_line=text_line(keys["where"][1]),
                columns=cols.QUERYABLE,
            )
        except kql.KqlError as exc:
            problems.add_kql(exc, keys["where"][1], text)
    rules = _rule_ids(value.get("rules"), "rules" in keys, bad, pack)
    if len(problems) > before or predicate is None:
        return None
    return Entry(value["name"], value["reason"], predicate, rules, source, line_of(node))


def _rule_ids(value, present: bool, bad, pack: RulePack | None) -> frozenset[str] | None:
    if not present:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        bad("rules", "rules is a list of rule ids; leave it out to cover every rule")
        return None
    ids = set()
    for item in value:
        try:
            ids.add(str(uuid.UUID(item)))
        except ValueError:
            bad("rules", f"{item!r} is not a rule id: 'rmmscan rules list' shows them")
            continue
        if pack is not None and pack.by_id(item) is None:
            bad("rules", f"no rule {item} in the rule pack: 'rmmscan rules list' shows the ids")
    return frozenset(ids)
