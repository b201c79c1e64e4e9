"""The rule pack: Sentinel hunting-query YAML files, loaded strictly.

A rule file is a Sentinel hunting query (``id``, ``name``, ``description``,
``requiredDataConnectors``, ``tactics``, ``relevantTechniques``, ``query``). Its query is parsed
by :mod:`rmmscan.rules.kql`; the endpoint evaluates the query's ``where`` predicates on each row.
Loading reports every problem of a pack at once, each with its file and line and what to do.

Beside each rule file, ``tests/<same name>`` holds rows the rule must match (``positive``) and
rows it must not (``negative``): :mod:`rmmscan.rules.testrows` runs them.
:mod:`rmmscan.rules.export` writes each rule as a hunting query for Defender's table or for
rmmscan's own table.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from ..rows import columns as cols
from . import kql

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DEFENDER_TABLE = "DeviceFileCertificateInfo"
CUSTOM_TABLE = "RmmScanFileCertificateInfo_CL"
TABLES = {"defender": DEFENDER_TABLE, "custom": CUSTOM_TABLE}
DEFENDER_COLUMNS = frozenset(cols.DEFENDER)
DEFENDER_CONNECTORS = [{"connectorId": "MicrosoftThreatProtection", "dataTypes": [DEFENDER_TABLE]}]
BUNDLED = "rmmscan.rules.bundled"
# A rule exported for the custom table gets an id derived from its own, so that both exports
# can live in one workspace (Defender on some machines, rmmscan on others).
EXPORT_NAMESPACE = uuid.UUID("5d0b1e0c-6f3a-4c59-9a4e-7a1f2f0c9d41")

REQUIRED = ("id", "name", "query")
# The keys of Sentinel hunting queries; any other key is most likely a typo.
KNOWN = frozenset(REQUIRED) | {
    "description", "requiredDataConnectors", "tactics", "relevantTechniques",
    "entityMappings", "version", "kind", "tags", "metadata", "customDetails",
}  # fmt: skip
TACTICS = frozenset((
    "Reconnaissance", "ResourceDevelopment", "InitialAccess", "Execution", "Persistence",
    "PrivilegeEscalation", "DefenseEvasion", "CredentialAccess", "Discovery", "LateralMovement",
    "Collection", "CommandAndControl", "Exfiltration", "Impact", "ImpairProcessControl",
    "InhibitResponseFunction", "PreAttack",
))  # fmt: skip
TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?\Z")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rule, test or allowlist file: where, what, and what to do."""

    source: str
    line: int  # 0: the file as a whole
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line:
            where += f":{self.line}" + (f":{self.column}" if self.column else "")
        return f"{where}: {self.message}"


class Problems(list):
    def add(self, source: str, line: int, message: str) -> None:
        self.append(Problem(source, line, message))

    def add_kql(self, exc: kql.KqlError, node=None, text: str = "") -> None:
        """A KqlError in the scalar `node` of the YAML `text`: its column made the file's."""
        message, prefix = str(exc), f"{exc.source}:{exc.line}:{exc.column}: "
        message = message[len(prefix) :] if message.startswith(prefix) else message
        column = exc.column + (_indent(node, text, exc.line) if node is not None else 0)
        self.append(Problem(exc.source, exc.line, message, column or None))


class RuleLoadError(ValueError):
    """Every problem found while loading, not only the first."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    description: str
    path: str
    query: kql.Query
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]
    columns: frozenset[str]
    defender_compatible: bool  # reads only the columns of Defender's table
    line: int = field(default=0, compare=False)  # where the id is
    query_text: str = field(default="", repr=False, compare=False)
    data: dict = field(default_factory=dict, repr=False, compare=False)  # the YAML as read
    source: str = field(default="", repr=False, compare=False)  # the file's text
    folder: Traversable | None = field(default=None, repr=False, compare=False)

    @property
    def filename(self) -> str:
        return self.path.replace("\\", "/").rsplit("/", 1)[-1]

    def matches(self, get: Callable[[str], object]) -> bool:
        return self.query.matches(get)


@dataclass(frozen=True)
class RulePack:
    rules: tuple[Rule, ...]
    columns: frozenset[str]  # every column some rule reads

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def by_id(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id.lower()), None)


# --- YAML with line numbers -------------------------------------------------------------------


def read_yaml(text: str, source: str, problems: Problems, *, empty_ok: bool = False):
    """(data, node) of one YAML document, or (None, None) with the problem recorded."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            if not empty_ok:
                problems.add(source, 1, "the file is empty: write the rule (id, name, query)")
            return None, None
        _duplicate_keys(node, source, problems)
        return loader.construct_document(node), node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(str(s) for s in (exc.context, exc.problem) if s)
        hint = "fix the indentation or quoting here (quote values holding ': ' or ' #')"
        problems.add(source, mark.line + 1 if mark else 1, f"not valid YAML ({what}): {hint}")
    except yaml.YAMLError as exc:
        problems.add(source, 1, f"not valid YAML ({exc})")
    finally:
        loader.dispose()
    return None, None


def _duplicate_keys(node, source: str, problems: Problems) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    problems.add(source, line_of(key), f"key {key.value!r} appears twice (also "
                                 f"on line {seen[key.value]}) and YAML keeps only the last: "
                                 "remove one")  # fmt: skip
                seen.setdefault(key.value, line_of(key))
            _duplicate_keys(value, source, problems)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _duplicate_keys(item, source, problems)


def key_nodes(node) -> dict[str, tuple]:
    """Key → (key node, value node) of a mapping node."""
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def line_of(node) -> int:
    return node.start_mark.line + 1


def problem_at(keys: dict, node, source: str, problems: Problems) -> Callable[[str, str], None]:
    """bad(key, message): a problem at the key's value, or at the mapping when it is missing."""

    def bad(key: str, message: str) -> None:
        problems.add(source, line_of(keys[key][1] if key in keys else node), message)

    return bad


def unknown_keys(keys: dict, known, source: str, problems: Problems, has: str) -> None:
    """A problem for each key of a mapping that is not in `known`; `has` says which are."""
    for key, (knode, _) in keys.items():
        if key not in known:
            problems.add(source, line_of(knode), f"unknown key {key!r}: {has}")


def text_line(node) -> int:
    """The line on which a scalar's text starts: the line after a block scalar's `|`."""
    return node.start_mark.line + (2 if getattr(node, "style", None) == "|" else 1)


def _indent(node, text: str, line: int) -> int:
    """How far right of its text's column 1 a scalar's line `line` sits in the file."""
    if node.style == "|":
        lines = text.split("\n")[text_line(node) - 1 :]
        first = next((x for x in lines if x.strip()), "")
        return len(first) - len(first.lstrip(" "))
    if line == text_line(node):  # a one-line scalar, after the key
        return node.start_mark.column + (1 if node.style in ("'", '"') else 0)
    return 0


# --- Loading ----------------------------------------------------------------------------------


def rule_files(paths: Sequence[str | Path] | None, problems: Problems) -> list:
    """(display path, resource) of every rule file; the bundled pack when paths is empty."""
    if not paths:
        root = resources.files(BUNDLED)
        return [(str(r), r) for r in sorted(root.iterdir(), key=lambda r: r.name) if _is_rule(r)]
    found = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if _is_rule(p)), key=lambda p: p.name)
            if not files:
                problems.add(str(path), 0, "no rule files (*.yaml) in this folder: give a rule "
                             "file or a folder that holds them")  # fmt: skip
            found += [(str(p), p) for p in files]
        elif path.is_file():
            found.append((str(path), path))
        else:
            problems.add(str(path), 0, "no such file or folder: give a rule file or a folder")
    seen: set[Path] = set()
    unique = []
    for display, path in found:  # a file given twice (itself and its folder) loads once
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append((display, path))
    return unique


def _is_rule(resource: Traversable) -> bool:
    return resource.is_file() and resource.name.endswith((".yaml", ".yml"))


def load_pack(
    paths: Sequence[str | Path] | None = None, *, columns: dict[str, str] = cols.QUERYABLE
) -> RulePack:
    """The bundled rules, or the rules in the given files and folders (which replace them).

    Raises RuleLoadError naming every problem of every file.
    """
    problems = Problems()
    rules: list[Rule] = []
    first: dict[str, str] = {}
    for display, resource in rule_files(paths, problems):
        rule = load_rule(resource, display, problems, columns=columns)
        if rule is None:
            continue
        if rule.id in first:
            problems.add(display, rule.line, f"duplicate id {rule.id} (also in "
                         f"{first[rule.id]}): give one of them a new uuid4")  # fmt: skip
            continue
        first[rule.id] = f"{display}:{rule.line}"
        rules.append(rule)
    if problems:
        raise RuleLoadError(problems)
    return RulePack(tuple(rules), frozenset().union(*(r.columns for r in rules)))


def read_text(resource, display: str, problems: Problems) -> str | None:
    """A rule or test file's text, or None with why it cannot be read added."""
    try:
        return resource.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.add(display, 1, f"not UTF-8 ({exc.reason} at byte {exc.start}): save as UTF-8")
    except OSError as exc:
        problems.add(display, 0, f"cannot read: {exc.strerror or exc}")
    return None


def load_rule(resource, display: str, problems: Problems, *, columns=cols.QUERYABLE):
    """One rule file, or None with all of its problems added."""
    before = len(problems)
    text = read_text(resource, display, problems)
    if text is None:
        return None
    data, node = read_yaml(text, display, problems)
    if node is None:
        return None
    if not isinstance(node, yaml.MappingNode):
        problems.add(display, line_of(node), "a rule file is a mapping (id: ..., name: ..., "
                     "query: ...), not a list or a single value")  # fmt: skip
        return None
    keys = key_nodes(node)
    bad = problem_at(keys, node, display, problems)
    unknown_keys(keys, KNOWN, display, problems, f"a hunting query has {', '.join(sorted(KNOWN))}")
    for key in REQUIRED:
        if key not in keys:
            bad(key, f"missing key {key!r}: every rule needs id, name and query")
    rule_id = _rule_id(data.get("id"), bad)
    name = data.get("name")
    if "name" in keys and (not isinstance(name, str) or not name.strip()):
        bad("name", "name must be a non-empty string")
    description = data.get("description") or ""
    if not isinstance(description, str):
        bad("description", "description must be text (write 'description: |' and the text)")
    tactics = _names(data, "tactics", bad, TACTICS.__contains__, "a Sentinel tactic")
    techniques = _names(data, "relevantTechniques", bad, TECHNIQUE.match, "an ATT&CK id (T1219)")
    _connectors(data.get("requiredDataConnectors"), bad)
    query, query_text = None, data.get("query")
    if "query" in keys:
        qnode = keys["query"][1]
        if not isinstance(query_text, str) or not query_text.strip():
            bad("query", "query must be KQL text: write 'query: |' and the query below it")
        elif getattr(qnode, "style", None) == ">":
            bad("query", "query is a folded block (>): folding joins lines, so a // comment "
                "would swallow the rest of the query; write 'query: |'")  # fmt: skip
        else:
            try:
                query = kql.parse_query(
                    query_text, source=display, first_line=text_line(qnode), columns=columns
                )
            except kql.KqlError as exc:
                problems.add_kql(exc, qnode, text)
    if len(problems) > before or query is None:
        return None
    used = frozenset(query.columns)
    return Rule(
        id=rule_id,
        name=name,
        description=description,
        path=display,
        query=query,
        tactics=tactics,
        techniques=techniques,
        columns=used,
        defender_compatible=used <= DEFENDER_COLUMNS,
        line=line_of(keys["id"][1]),
        query_text=query_text,
        data=data,
        source=text,
        folder=resource.parent if isinstance(resource, Path) else resources.files(BUNDLED),
    )


def _rule_id(value, bad) -> str | None:
    try:
        parsed = uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is not None and str(parsed) == value.strip().lower():
        return str(parsed)
    if value is not None:
        bad("id", f"id {value!r} is not a UUID (like 1525a733-192f-41f2-96ba-d3f631ca00d0): "
            "give the rule a new one: python3 -c 'import uuid; print(uuid.uuid4())'")  # fmt: skip
    return None


def _names(data: dict, key: str, bad, valid, expected: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        bad(key, f"{key} must be a name or a list of names")
        return ()
    for wrong in (v for v in items if not valid(v)):
        bad(key, f"{key}: {wrong!r} is not {expected}; see Sentinel's hunting-query schema")
    return tuple(items)


def _connectors(value, bad) -> None:
    if not value:
        return
    ok = isinstance(value, list) and all(
        isinstance(c, dict)
        and isinstance(c.get("connectorId"), str)
        and isinstance(c.get("dataTypes", []), list)
        and all(isinstance(t, str) for t in c.get("dataTypes", []))
        for c in value
    )
    if not ok:
        bad("requiredDataConnectors", "requiredDataConnectors is a list of {connectorId: NAME, "
            "dataTypes: [TABLE]}: indent 'dataTypes:' under 'connectorId:'")  # fmt: skip
