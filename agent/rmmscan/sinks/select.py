"""Which rows a sink receives: its emission policy (`emit`), the same three words as `--emit`.

The engine makes the rows of the widest policy among its sinks; each sink then takes its own
share: `detections` (rows a rule matched), `signed` (also every other row of a signed PE),
`all` (also unsigned PEs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..inspect.model import Anomaly
from ..rows.heartbeat import is_heartbeat
from ..rules.judge import EMIT_ALL, EMIT_CHOICES, EMIT_DETECTIONS, EMIT_SIGNED
from .sink import Sink


def widest(policies: Iterable[str]) -> str:
    return max(policies, key=EMIT_CHOICES.index, default=EMIT_DETECTIONS)


def wanted(row: dict, emit: str) -> bool:
    if row.get("RuleId") or emit == EMIT_ALL or is_heartbeat(row):
        return True
    if emit == EMIT_SIGNED and row.get("IsSigned"):
        return True
    # A row the rules could not judge may be a finding: every policy takes it (rules/judge.py).
    return _NOT_JUDGED in (row.get("Anomalies") or "")


_NOT_JUDGED = f'"{Anomaly.INTERNAL_ERROR}"'



class Selected:
    """A sink that receives only the rows its policy asks for (the rows of one file stay
    together, in order)."""

    def __init__(self, sink: Sink, emit: str):
        self.sink, self.emit = sink, emit

    def write(self, rows: Sequence[dict]) -> None:
        if self.emit != EMIT_ALL:
            rows = [row for row in rows if wanted(row, self.emit)]
        if rows:
            self.sink.write(rows)

    def flush(self) -> None:
        self.sink.flush()

    def close(self) -> None:
        self.sink.close()
