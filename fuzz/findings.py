"""What both campaigns (inspect_fuzz.py, config_fuzz.py) do with a finding: name it by its
exception and innermost frames, keep the smallest input seen for each name in fuzz/crashes/
with its traceback beside it, and say so once."""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from pathlib import Path

CRASHES = Path(os.environ.get("FUZZ_CRASHES", Path(__file__).resolve().parent / "crashes"))


class Findings:
    def __init__(self, prefix: str, frames_in: tuple[str, ...]):
        self.prefix = prefix  # before every file name: "" or "config-"
        self.frames_in = frames_in  # the frames that name a crash: these paths' parts
        self.seen: set[str] = set()

    def signature(self, exc: BaseException) -> str:
        """Exception type and the innermost three frames of interest: one crash, one name."""
        frames = [
            f"{Path(f.filename).name}:{f.name}:{f.lineno}"
            for f in traceback.extract_tb(exc.__traceback__)
            if any(part in f.filename for part in self.frames_in)
        ]
        return f"{type(exc).__name__}@{'/'.join(frames[-3:])}"

    def save(self, kind: str, key: str, data: bytes, text: str) -> None:
        if key in self.seen:
            return
        self.seen.add(key)
        stem = f"{self.prefix}{kind}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
        CRASHES.mkdir(parents=True, exist_ok=True)
        target = CRASHES / f"{stem}.bin"
        if not target.exists() or target.stat().st_size > len(data):
            target.write_bytes(data)  # the smallest input seen for this signature
            (CRASHES / f"{stem}.txt").write_text(f"{key}\n\n{text}", "utf-8")
        print(f"\n== {self.prefix}{kind}: {key} -> {target.name}", file=sys.stderr, flush=True)
