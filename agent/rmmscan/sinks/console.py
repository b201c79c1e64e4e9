"""What the analyst sees on stderr: a progress line (on a terminal), problems as they occur,
and a summary in the shape of the starting hunting query's `summarize`. It observes the
scan's statistics (stats.py) and draws them; it counts nothing itself.

Paths are attacker-chosen: each goes through text.printable before it reaches the terminal
(quoted as $'…' when it holds anything to escape).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TextIO

from ..text import printable
from .stats import NOT_READ, ScanStats

REPORT_IDS_SHOWN = 20


@dataclass(slots=True)
class _Group:
    first: str
    last: str
    reports: list[int] = field(default_factory=list)
    count: int = 0


class Console:
    def __init__(self, err: TextIO, stats: ScanStats, progress: bool, interval: float = 0.2):
        self.err = err
        self.stats = stats
        self.progress = progress
        self.interval = interval
        self.start = time.monotonic()
        self._drawn = 0.0
        self._line = False
        self.groups: dict[tuple[str, str], _Group] = {}

    # -- as the sweep goes ------------------------------------------------------------------
    def problem(self, path: str, kind: str, message: str) -> None:
        if kind in ("vanished", "changed"):
            return  # a live system changes under a sweep; counted, not shouted
        self._clear()
        self.err.write(f"rmmscan: {printable(os.fsdecode(path))}: {message}\n")

    def detection(self, row: dict) -> None:
        key = (row["DeviceId"], row["DeviceName"])
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(row["Timestamp"], row["Timestamp"])
        group.first = min(group.first, row["Timestamp"])
        group.last = max(group.last, row["Timestamp"])
        group.count += 1
        if len(group.reports) <= REPORT_IDS_SHOWN:
            group.reports.append(row["ReportId"])

    def tick(self, root: str = "", force: bool = False) -> None:
        if not self.progress:
            return
        now = time.monotonic()
        if not force and now - self._drawn < self.interval:
            return
        self._drawn = now
        stats = self.stats
        rate = stats.files / max(now - self.start, 1e-9)
        root = printable(os.fsdecode(root))
        head = (
            f"{stats.files:,} files ({rate:,.0f}/s), {stats.pe:,} PE, "
            f"{stats.detections:,} detections - "
        )
        room = _width() - 1 - len(head)
        if len(root) > room:  # keep the end of the path, the part that changes, and its $'
            lead = "$'…" if root.startswith("$'") else "…"
            keep = room - len(lead)
            root = lead + root[len(root) - keep :] if keep > 0 else ""
        self.err.write("\r\x1b[K" + head + root)
        self.err.flush()
        self._line = True

    def _clear(self) -> None:
        if self._line:
            self.err.write("\r\x1b[K")
            self._line = False

    # -- at the end ---------------------------------------------------------------------------
    def summary(self) -> None:
        self._clear()
        out = self.err
        stats = self.stats
        elapsed = time.monotonic() - self.start
        if self.groups:
            out.write(
                "\nDetections, summarized as the hunting query does "
                "(summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp), "
                "Report=make_set(ReportId), Count=count() by DeviceId, DeviceName):\n"
            )
            header = ("DeviceId", "DeviceName", "FirstSeen", "LastSeen", "Report", "Count")
            lines = [header]
            for (device_id, name), g in sorted(self.groups.items()):
                reports = ", ".join(str(r) for r in g.reports[:REPORT_IDS_SHOWN])
                if g.count > REPORT_IDS_SHOWN:
                    reports += ", ..."
                lines.append(
                    (device_id, printable(name), g.first, g.last, f"[{reports}]", str(g.count))
                )
            widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
            for line in lines:
                out.write(
                    "  "
                    + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                    + "\n"
                )
        out.write("\n")
        if stats.interrupted:
            out.write("INTERRUPTED: stopped before the end; what follows is partial\n")
        out.write(
            f"files walked: {stats.files:,}   PE files: {stats.pe:,}   signed: {stats.signed:,}   "
            f"detections: {stats.detections:,}   rows emitted: {stats.emitted:,}\n"
        )
        if stats.suppressed:
            entries = ", ".join(
                f"{printable(k)}: {v}" for k, v in sorted(stats.suppressed.items())
            )
            total = sum(stats.suppressed.values())
            out.write(f"suppressed by the allowlist: {total:,} ({entries})\n")
        for title, not_read in (("not read", True), ("skipped", False)):
            parts = ", ".join(
                f"{k}: {v:,}"
                for k, v in sorted(stats.problems.items())
                if (k in NOT_READ) == not_read
            )
            if parts:
                out.write(f"{title}: {parts}\n")
        for d in stats.deliveries:
            out.write(
                f"forwarded to {d.sink} ({printable(d.receiver)}): {d.written:,} rows written, "
                f"{d.delivered:,} delivered, {d.waiting:,} waiting in the outbox "
                f"({d.own_waiting:,} of this run), "
                f"{d.aside:,} set aside, {d.dropped:,} dropped\n"
            )
        rate = stats.files / max(elapsed, 1e-9)
        out.write(
            f"elapsed: {elapsed:.1f} s ({rate:,.0f} files/s), from the cache: {stats.cached:,}\n"
        )
        out.flush()


def _width() -> int:
    """The terminal's width; 100 where it does not say (0 columns from a fresh pty)."""
    try:
        return os.get_terminal_size(2).columns or 100
    except OSError:
        return 100
