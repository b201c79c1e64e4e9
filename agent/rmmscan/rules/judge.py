"""The judgement of one file: rows → rules → what to emit, the same for every mode
(docs/architecture.md §1).

Given one file's lazy facts, evaluate every rule on every row (a row is one signature),
drop what the allowlist sanctions, and decide by the emission policy which rows leave.
Only rows that leave are completed (hashed, verified); nothing else is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inspect.model import Anomaly
from ..rows.facts import FileFacts, with_anomaly
from ..sources.candidate import FileChanged
from .memo import RuleSet

EMIT_DETECTIONS, EMIT_SIGNED, EMIT_ALL = "detections", "signed", "all"
EMIT_CHOICES = (EMIT_DETECTIONS, EMIT_SIGNED, EMIT_ALL)


@dataclass(slots=True)
class Judgement:
    rows: list[dict] = field(default_factory=list)  # to emit: complete but for Timestamp/ReportId
    detections: int = 0
    suppressed: list[tuple[str, str]] = field(default_factory=list)  # (allowlist entry, rule id)
    signed: bool = False
    # What went wrong on the way, as (kind, message): "failed" for an unexpected exception (a
    # bug), "unreadable" for a read error. The rows are still emitted, as far as they can be
    # built; a row the rules could not judge is emitted whatever the policy, unjudged.
    problems: list[tuple[str, str]] = field(default_factory=list)

    def problem(self, kind: str, where: str, exc: BaseException) -> None:
        if isinstance(exc, OSError) and not isinstance(exc, FileChanged):
            entry = ("unreadable", f"{where}: {exc.strerror or exc}")
        else:
            entry = (kind, f"internal error in {where}: {type(exc).__name__}: {exc}")
        if entry not in self.problems:
            self.problems.append(entry)


class Judge:
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
            matched, judged = self._matching(get, out)
            hits = []
            for rule in matched:
                try:
                    entry = self.allowlist.suppressing(rule, get) if self.allowlist else None
                except FileChanged:
                    raise
                except Exception as exc:  # not knowing whether it is sanctioned: report it
                    out.problem("failed", "the allowlist", exc)
                    entry = None
                if entry is not None:
                    out.suppressed.append((entry.name, rule.id))
                else:
                    hits.append(rule)
            if hits:
                row = self._row(facts, index, out)
                for rule in hits:
                    out.rows.append(dict(row, RuleId=rule.id, RuleName=rule.name))
                out.detections += len(hits)
            elif not judged:  # it may be a finding: emitted, and marked as not judged
                row = self._row(facts, index, out)
                row["Anomalies"] = with_anomaly(row["Anomalies"], str(Anomaly.INTERNAL_ERROR))
                out.rows.append(row)
            elif self.emit == EMIT_ALL or (self.emit == EMIT_SIGNED and signed):
                out.rows.append(self._row(facts, index, out))
        return out

    def _matching(self, get, out: Judgement) -> tuple[list, bool]:
        """The rules that match, and whether every rule could say; when the memoized set
        fails, each rule is asked on its own, so one failing rule costs only its own say."""
        try:
            return self.rules.matching(get), True
        except FileChanged:
            raise
        except Exception:
            pass
        matched, judged = [], True
        for rule in self.rules.rules:
            try:
                if rule.query.matches(get):
                    matched.append(rule)
            except FileChanged:
                raise
            except Exception as exc:
                out.problem("failed", f"rule {rule.id}", exc)
                judged = False
        return matched, judged

    @staticmethod
    def _row(facts: FileFacts, index: int, out: Judgement) -> dict:
        try:
            return facts.row(index)
        except FileChanged:
            raise  # nothing of the file as it is now was read: the caller reads it again
        except Exception as exc:
            row, failures = facts.partial_row(index)
            for failure in failures or [exc]:
                out.problem("failed", "completing a row", failure)
            row["Anomalies"] = with_anomaly(row["Anomalies"], str(Anomaly.INTERNAL_ERROR))
            return row
