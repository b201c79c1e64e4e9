"""What both campaigns (inspect_fuzz.py, config_fuzz.py) share: a finding named by its
exception and innermost frames, the smallest input seen for each name kept in fuzz/crashes/
with its traceback beside it and said once; and their `--seed DIR` and `--replay PATH...`."""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
from collections.abc import Callable, Iterable
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


def write_seeds(target: Path, blobs: Iterable[bytes]) -> None:
    """`--seed DIR`: each seed under the SHA-1 of its bytes."""
    target.mkdir(parents=True, exist_ok=True)
    for blob in blobs:
        (target / hashlib.sha1(blob).hexdigest()).write_bytes(blob)


def replay(args: list[str], test_one_input: Callable[[bytes], None], findings: Findings) -> None:
    """`--replay PATH...`: every input file (a folder's files) once, without atheris."""
    count = 0
    for arg in args:
        paths = sorted(Path(arg).iterdir()) if Path(arg).is_dir() else [Path(arg)]
        for p in paths:
            if p.is_file() and p.suffix not in (".txt", ".md", ".log"):
                test_one_input(p.read_bytes())
                count += 1
    print(f"replayed {count} inputs, {len(findings.seen)} distinct findings", file=sys.stderr)
