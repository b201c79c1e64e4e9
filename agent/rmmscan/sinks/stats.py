"""What a scan did, counted once: the console draws it and the exit status comes from it.

Observers (the console, an agent's health report) subscribe and are told of each problem and
each detection as it is delivered; the counters are read when they are needed. Updated only
by the thread that delivers rows (engine.py), so nothing here is locked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# Kinds of problem that mean something could not be read (each is listed as it happens);
# every other kind counted is something skipped on purpose or a file that changed.
NOT_READ = ("unreadable", "unreadable roots", "failed")
# Kinds that make a scan's result incomplete: its exit status says so.
ERRORS = ("failed", "unreadable roots")


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of the rows a forwarding sink took in one run (forward.py)."""

    sink: str  # the sink's name in the configuration
    receiver: str  # the transport's name: "hec https://splunk:8088"
    written: int  # rows committed to its outbox by this run
    delivered: int  # rows its receiver accepted during this run (earlier runs' rows too)
    waiting: int  # rows still in the outbox: they go with the next run or the agent
    own_waiting: int  # of them, rows this run wrote
    aside: int  # rows the receiver refused for good, set aside in this run
    dropped: int  # rows the outbox's size budget dropped in this run

    @property
    def complete(self) -> bool:
        return not (self.own_waiting or self.aside or self.dropped)


class Observer(Protocol):
    def problem(self, path: str, kind: str, message: str) -> None: ...

    def detection(self, row: dict) -> None: ...


@dataclass(slots=True)
class ScanStats:
    files: int = 0
    pe: int = 0
    signed: int = 0
    cached: int = 0
    detections: int = 0
    emitted: int = 0
    problems: dict[str, int] = field(default_factory=dict)  # kind -> count
    suppressed: dict[str, int] = field(default_factory=dict)  # allowlist entry -> count
    interrupted: bool = False  # stopped before the end (a stop event, SIGTERM)
    deliveries: list[Delivery] = field(default_factory=list)  # one per forwarding sink
    observers: list[Observer] = field(default_factory=list)

    def subscribe(self, observer: Observer) -> None:
        self.observers.append(observer)

    def problem(self, path: str, kind: str, message: str) -> None:
        self.count(kind)
        for observer in self.observers:
            observer.problem(path, kind, message)

    def count(self, kind: str, n: int = 1) -> None:
        """Something seen and not read that needs no message: skipped, vanished, excluded."""
        self.problems[kind] = self.problems.get(kind, 0) + n

    def detection(self, row: dict) -> None:
        for observer in self.observers:
            observer.detection(row)

    @property
    def found(self) -> bool:
        return self.detections > 0

    @property
    def incomplete(self) -> bool:
        """Something that should have been scanned was not: the result is not the whole truth."""
        return (
            self.interrupted
            or any(self.problems.get(kind) for kind in ERRORS)
            or not all(d.complete for d in self.deliveries)
        )
