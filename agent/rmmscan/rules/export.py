"""The pack written back as Sentinel hunting queries, for Defender's DeviceFileCertificateInfo
or for rmmscan's own Log Analytics table (RmmScanFileCertificateInfo_CL)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import yaml

from .pack import (
    CUSTOM_TABLE,
    DEFENDER_COLUMNS,
    DEFENDER_CONNECTORS,
    DEFENDER_TABLE,
    EXPORT_NAMESPACE,
    TABLES,
    Loader,
    Rule,
    RulePack,
)


@dataclass(frozen=True)
class Exported:
    rule: Rule
    filename: str
    text: str | None  # None: the rule cannot run on that table, and reason says why
    reason: str = ""


def export(pack: RulePack, table: str) -> list[Exported]:
    """Each rule as a Sentinel hunting-query YAML text for `table` ("defender" or "custom").

    Defender's DeviceFileCertificateInfo has only Defender's 18 columns: a rule that reads
    others is skipped there, with the reason. For rmmscan's own RmmScanFileCertificateInfo_CL,
    the query's table is renamed and the id and name are derived from the rule's own.
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, not {table!r}")
    out = []
    for rule in pack:
        if table == "defender" and not rule.defender_compatible:
            extra = ", ".join(sorted(rule.columns - DEFENDER_COLUMNS))
            why = (f"reads {extra}, which Defender's {DEFENDER_TABLE} does not have: export it "
                   "with --table custom and run it on rmmscan's table")  # fmt: skip
            out.append(Exported(rule, rule.filename, None, why))
        else:
            out.append(Exported(rule, rule.filename, export_rule(rule, table)))
    return out


def export_rule(rule: Rule, table: str) -> str:
    """One rule for one table. A rule that already is a Defender hunting query goes to
    Defender as written, byte for byte; otherwise it is written in Sentinel's layout."""
    query = _retable(rule.query_text, TABLES[table], rule)
    data = dict(rule.data)
    header = ""
    if table == "defender":
        if query == rule.query_text and data.get("requiredDataConnectors") == DEFENDER_CONNECTORS:
            return rule.source
        data["requiredDataConnectors"] = DEFENDER_CONNECTORS
    else:
        data["id"] = str(uuid.uuid5(EXPORT_NAMESPACE, f"{CUSTOM_TABLE}:{rule.id}"))
        data["name"] = f"{rule.name} (rmmscan table)"
        data["requiredDataConnectors"] = []  # filled by the Logs Ingestion API, no connector
        header = (
            f"# Exported by rmmscan from {rule.filename} (rule {rule.id}) for its table\n"
            f"# {CUSTOM_TABLE}, which rmmscan fills through the Logs Ingestion API.\n"
        )
    data["query"] = query
    text = header + dump_hunting_query(data)
    if yaml.load(text, Loader=Loader) != data:
        raise AssertionError(f"the export of {rule.path} does not read back as written")
    return text


_TABLE = re.compile(r"\s*(" + "|".join(map(re.escape, TABLES.values())) + r")\b")


def _retable(query: str, target: str, rule: Rule) -> str:
    """The query with its tabular expression's table (the first statement not a let) renamed."""
    lines = query.split("\n")
    for i, line in enumerate(lines):
        code = line.split("//", 1)[0].strip()
        if not code or code.startswith("let "):
            continue
        m = _TABLE.match(line)
        if m is None:
            break
        lines[i] = line[: m.start(1)] + target + line[m.end(1) :]
        return "\n".join(lines)
    raise ValueError(f"{rule.path}: the query does not start with {DEFENDER_TABLE}")


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as in Sentinel's own files."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


_ORDER = (
    "id", "name", "description", "requiredDataConnectors", "tactics", "relevantTechniques",
    "query",
)  # fmt: skip


def dump_hunting_query(data: dict) -> str:
    """Sentinel's layout: its key order, text in literal blocks, other values as YAML."""
    out = []
    for key in (*_ORDER, *sorted(k for k in data if k not in _ORDER)):
        if key in data and isinstance(data[key], str) and "\n" in data[key]:
            out.append(_literal(key, data[key]))
        elif key in data:
            out.append(yaml.dump({key: data[key]}, Dumper=_Dumper, allow_unicode=True,
                                 sort_keys=False, width=4096))  # fmt: skip
    return "".join(out)


def _literal(key: str, text: str) -> str:
    body = text.rstrip("\n")
    trailing = len(text) - len(body)
    chomp = "-" if trailing == 0 else "" if trailing == 1 else "+"
    indicator = "2" if body[:1] in (" ", "\n") else ""
    lines = "\n".join(f"  {line}" if line else "" for line in body.split("\n"))
    return f"{key}: |{indicator}{chomp}\n{lines}\n" + "\n" * max(0, trailing - 1)
