"""An A/B of two builds of rmmscan on the benchmark corpus: a first sweep (no cache, --jobs 2)
and a cached rescan (--jobs 2, and each build's default), over --repeat rounds after a
warm-up, A and B back to back for each case (which goes first alternates by round);
wall-time medians, their ratio (B/A), and the largest process's RSS. Each build is given as
its rmmscan executable (a checkout's .venv/bin/rmmscan):

    .venv/bin/python benchmarks/ab_sweep.py OLD/.venv/bin/rmmscan .venv/bin/rmmscan \\
        --corpus benchmarks/.work/corpus-100000-s1/C
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_ROOT = ROOT / "samples" / "pki" / "test-root.pem"


def timed(argv: list[str]) -> tuple[float, int]:
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", *argv], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, check=False)  # fmt: skip
    if out.returncode not in (0, 1):
        raise SystemExit(f"{argv}: exit {out.returncode}\n{out.stderr[-2000:]}")
    wall, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), int(rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ab-sweep-"))
    try:
        runs: dict[tuple[str, str], list[tuple[float, int]]] = {}
        cases = {}
        for side, exe in (("A", args.a), ("B", args.b)):
            scan = [exe, "scan", str(args.corpus), "--format", "jsonl", "-q",
                    "--trusted-roots", str(TEST_ROOT)]  # fmt: skip
            cases[(side, "sweep -j2")] = [*scan, "--no-cache", "-j", "2",
                                          "--state-dir", str(work / f"{side}-cold")]  # fmt: skip
            warm = [*scan, "--state-dir", str(work / f"{side}-warm")]
            cases[(side, "rescan -j2")] = [*warm, "-j", "2"]
            cases[(side, "rescan default")] = warm
        for argv in cases.values():
            timed(argv)  # warm-up: page cache, and the rescans' cache
        names = ("sweep -j2", "rescan -j2", "rescan default")
        for round_ in range(args.repeat):
            # A and B back to back for each case, the first of the two alternating by round:
            # what ran just before (a sweep that fills the page cache) is the same for both.
            sides = ("A", "B") if round_ % 2 == 0 else ("B", "A")
            for case in names:
                for side in sides:
                    runs.setdefault((side, case), []).append(timed(cases[(side, case)]))
        for case in names:
            a, b = runs[("A", case)], runs[("B", case)]
            ma, mb = statistics.median(r[0] for r in a), statistics.median(r[0] for r in b)
            print(f"{case:15} A {ma:6.2f} s  B {mb:6.2f} s  B/A {mb / ma:5.3f}   "
                  f"RSS A {max(r[1] for r in a) / 1024:5.1f} MiB  "
                  f"B {max(r[1] for r in b) / 1024:5.1f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
