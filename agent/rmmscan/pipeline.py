"""rows → rules → what to emit: the part of the pipeline every mode shares (DESIGN §1).

Given one file's lazy facts, evaluate every rule on every row (a row is one signature),
drop what the allowlist sanctions, and decide by the emission policy which rows leave.
Only rows that leave are completed (hashed, verified); nothing else is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .facts import FileFacts
from .rule_memo import RuleSet

EMIT_DETECTIONS, EMIT_SIGNED, EMIT_ALL = "detections", "signed", "all"
EMIT_CHOICES = (EMIT_DETECTIONS, EMIT_SIGNED, EMIT_ALL)


@dataclass(slots=True)
class Judgement:
    rows: list[dict] = field(default_factory=list)  # to emit: complete but for Timestamp/ReportId
    detections: int = 0
    suppressed: list[tuple[str, str]] = field(default_factory=list)  # (allowlist entry, rule id)
    signed: bool = False


class Pipeline:
    def __init__(self, pack, allowlist=None, emit: str = EMIT_DETECTIONS):
        if emit not in EMIT_CHOICES:
            raise ValueError(f"emit must be one of {', '.join(EMIT_CHOICES)}")
        self.rules = RuleSet(pack.rules)
        self.allowlist = allowlist
        self.emit = emit

    def judge(self, facts: FileFacts) -> Judgement:
        out = Judgement()
        if not facts.is_pe:
            return out
        for index in range(facts.row_count()):
            get = facts.getter(index)
            signed = bool(get("IsSigned"))
            out.signed = out.signed or signed
            hits = []
            for rule in self.rules.matching(get):
                entry = self.allowlist.suppressing(rule, get) if self.allowlist else None
                if entry is not None:
                    out.suppressed.append((entry.name, rule.id))
                else:
                    hits.append(rule)
            if hits:
                row = facts.row(index)
                for rule in hits:
                    out.rows.append(dict(row, RuleId=rule.id, RuleName=rule.name))
                out.detections += len(hits)
            elif self.emit == EMIT_ALL or (self.emit == EMIT_SIGNED and signed):
                out.rows.append(facts.row(index))
        return out
