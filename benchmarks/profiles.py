"""py-spy's collapsed stacks summarized for a benchmark's JSON: sample shares per frame (own
and total), per thread, and per bucket of the caller's choosing (bench_sweep.py,
bench_image.py)."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

# (bucket name, markers): a stack falls in the first bucket one of whose markers a frame holds.
Buckets = Sequence[tuple[str, Sequence[str]]]


def bucket(frames: list[str], buckets: Buckets) -> str:
    if len(frames) == 1:  # only the process: native code holding the GIL, no Python frame
        return "interpreter start/exit (no Python frame)"
    for name, markers in buckets:
        if any(m in f for f in frames for m in markers):
            return name
    return "other"


def collapse(raw: Path, buckets: Buckets) -> dict:
    """Own and total sample shares per frame, from py-spy's collapsed stacks."""
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    by_bucket: collections.Counter = collections.Counter()
    samples = 0
    if not raw.exists():
        return {"error": f"no profile written ({raw.name})"}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        samples += n
        threads[frames[0]] += n
        by_bucket[bucket(frames, buckets)] += n
        own[frame(frames[-1])] += n
        for f in {frame(f) for f in frames[1:]}:
            total[f] += n

    def top(counter: collections.Counter, k: int) -> list[list]:
        return [[f, round(100 * n / max(samples, 1), 1)] for f, n in counter.most_common(k)]

    return {"samples": samples, "threads": top(threads, 8), "buckets_pct": top(by_bucket, 20),
            "own_pct": top(own, 25), "total_pct": top(total, 40)}  # fmt: skip


def frame(text: str) -> str:
    """'func (module/path.py:123)' → 'func (path.py)': lines merged, paths shortened."""
    name, _, where = text.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "agent/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name
