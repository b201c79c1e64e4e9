"""What an engine is built from: one options object, filled by the command line today and by
an agent's configuration file tomorrow. Only values: nothing is opened or read here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..inspect.hashes import DEFAULT_MAX_READ
from ..rules.judge import EMIT_DETECTIONS


@dataclass(frozen=True, slots=True)
class Options:
    rules: tuple[Path, ...] = ()  # rule files or folders; none: the bundled pack
    no_rules: bool = False  # judge nothing (`rmmscan inspect`: every row, no rule)
    allowlist: Path | None = None
    emit: str = EMIT_DETECTIONS  # which rows leave besides detections
    trusted_roots: tuple[Path, ...] = ()
    distrust: tuple[Path, ...] = ()
    system_roots: bool = True  # the Microsoft root program's roots
    state_dir: Path | None = None  # None: store.default_dir()
    cache: bool = True  # read and update the scan cache
    cache_scope: str = ""  # '' for the local file systems; an image's evidence id
    source: str = "sweep"  # the ScanSource column
    # Bytes of one file read at most to hash and verify it; 0: no bound. A PE's contents lie
    # within 4 GiB (32-bit file offsets), so a larger file is not read whole: its signatures
    # are still reported and judged by the rules (rows/facts.py).
    max_read: int = DEFAULT_MAX_READ
