"""What a heartbeat says of the agent (rows/heartbeat.py carries it): enough for a SOC to see
that the agent runs, with which rules, how far it got, and whether its rows leave the machine.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from .. import __version__
from ..sinks.stats import NOT_READ, ScanStats


def pack_hash(pack) -> str:
    """The rule pack's identity: SHA-256 of its rules' ids and queries, in load order."""
    h = hashlib.sha256()
    for rule in pack.rules:
        h.update(f"{rule.id}\0{rule.query_text}\0".encode())
    return h.hexdigest()


@dataclass(slots=True)
class Health:
    started: float = field(default_factory=time.monotonic)
    phase: str = "starting"  # first sweep, rescan, watching
    sweeps: int = 0  # sweeps of every root finished
    processes: int = 0  # processes seen by the latest process scan
    processes_unreadable: int = 0
    reloads: int = 0
    repeats: int = 0  # rows not sent again (agent/repeats.py)


def status(
    health: Health,
    stats: ScanStats,
    pack,
    outbox: dict[str, int],
    watches: int,
    watch_limited: bool,
    cpu_percent: float,
    rss_bytes: int,
) -> dict:
    return {
        "version": __version__,
        "rule_pack": pack_hash(pack),
        "rules": len(pack.rules),
        "uptime_s": round(time.monotonic() - health.started),
        "phase": health.phase,
        "sweeps": health.sweeps,
        "reloads": health.reloads,
        "files": stats.files,
        "cached": stats.cached,  # of them, judged from the scan cache without being read
        "pe": stats.pe,
        "detections": stats.detections,
        "repeats": health.repeats,
        "errors": sum(stats.problems.get(kind, 0) for kind in NOT_READ),
        "outbox": outbox,
        "watches": watches,
        "watch_limited": watch_limited,
        "processes": health.processes,
        "processes_unreadable": health.processes_unreadable,
        "cpu_percent": round(cpu_percent, 1),
        "rss_mib": round(rss_bytes / 2**20, 1),
    }
