"""The sweep and the rescan on a tree of your own, against bench_sweep.py's baselines.

    .venv/bin/python benchmarks/bench_tree.py PATH [--jobs J] [--repeat R] [--cold] [--out FILE]

PATH is any directory: a real file system, a mounted disk image. The commands are
bench_sweep.py's (the same sweep, read baseline, rescan, `find` and floors, run the same way:
a warm-up pass, then alternating rounds, medians), without the generated corpus, YARA, the
detections or the RSS rounds. bench_sweep.py's targets are set on its corpus, where 7 % of the
files are PEs; here the sweep's ratio moves with the tree's share of PEs, since every PE is
parsed and the read baseline parses nothing. Nothing is written under PATH.

--cold (root, Linux) drops the page cache before every timed run (sync, then 3 into
/proc/sys/vm/drop_caches): what a one-off sweep of a machine meets, where the warm runs
measure only CPU. The interpreter and the scan cache start cold too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import bench_sweep as bs

KEEP = ("sweep", "read", "read_nothreads", "sweep_j1", "rescan", "rescan_j1", "find",
        "find_stat", "find_stat_split", "walk_stat_split", "walk_stat", "list")  # fmt: skip


DROP = "/proc/sys/vm/drop_caches"


def drop_caches() -> None:
    os.sync()
    with open(DROP, "w") as f:
        f.write("3\n")


def count(path: Path) -> dict:
    """Regular files, directories and bytes below `path`, links not followed."""
    files = dirs = size = 0
    for top, subdirs, names in os.walk(path):
        dirs += len(subdirs)
        for name in names:
            try:
                st = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            if st.st_mode & 0o170000 == 0o100000:
                files += 1
                size += st.st_size
    return {"regular_files": files, "directories": dirs, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (5)")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each run")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    if opts.out is None:
        opts.out = bs.BENCH / ("results-tree-cold.json" if opts.cold else "results-tree.json")
    if opts.cold and not os.access(DROP, os.W_OK):
        sys.exit(f"--cold needs to write {DROP} (root, Linux)")
    drive = opts.path.resolve()
    if not drive.is_dir():
        sys.exit(f"{drive}: not a directory")
    bs.EMPTY.mkdir(parents=True, exist_ok=True)
    subprocess.run([bs.PY, "-m", "compileall", "-q", str(bs.ROOT / "agent")], check=True)
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()
    tree = count(drive)
    every = bs.commands(drive, opts.jobs, "tree")
    cmds = {k: every[k] for k in KEEP}
    print(f"# rmmscan on {drive}{' (page cache dropped before each run)' if opts.cold else ''}: "
          f"{tree['regular_files']:,} files, "
          f"{tree['directories']:,} directories, {tree['bytes'] / (1 << 30):.2f} GiB, "
          f"jobs {opts.jobs}, {opts.repeat} rounds\n", flush=True)  # fmt: skip
    print("timing (warm-up pass, then alternating rounds) ...", file=sys.stderr, flush=True)
    bs.rounds(list(cmds.values()), opts.repeat, drop_caches if opts.cold else None)

    j = opts.jobs
    measures = [
        bs.Measure("sweep, no cache vs open + read 4 KiB of every file", "sweep", "read", None,
                   "le", note=f"--jobs {j}: sweep processes, reader threads"),
        bs.Measure("sweep, no cache, --jobs 1 vs the same read without threads", "sweep_j1",
                   "read_nothreads", None, "le"),
        bs.Measure("rescan with the cache vs find -type f", "rescan", "find", None, "le"),
        bs.Measure("rescan with the cache vs the sweep without it", "rescan", "sweep", None,
                   "le", note="what the cache saves on this tree"),
        bs.Measure("rescan, --jobs 1 vs one Python walk that stats (--walk-stat)", "rescan_j1",
                   "walk_stat", None, "le"),
        bs.Measure("find -type f -printf (stats every file) vs find -type f", "find_stat",
                   "find", None, "le"),
        bs.Measure(f"{j} GNU finds at once that stat their shares vs find -type f",
                   "find_stat_split", "find", None, "le"),
        bs.Measure(f"{j} Python walks at once that stat their shares vs find -type f",
                   "walk_stat_split", "find", None, "le"),
        bs.Measure("one Python walk that lists only vs find -type f", "list", "find", None,
                   "le"),
    ]  # fmt: skip
    med = {k: bs.median([r.wall for r in c.runs]) for k, c in cmds.items()}
    cpu = {k: bs.median([r.user + r.sys for r in c.runs]) for k, c in cmds.items()}
    for m in measures:
        m.ours_median, m.base_median = med[m.ours], med[m.base]
        m.ours_cpu, m.base_cpu = cpu[m.ours], cpu[m.base]
    summary = (bs.RUNS / "sweep-tree.stderr").read_text(errors="replace")
    print(bs.table(measures, {}))
    print("\nthe sweep's summary:\n" + summary.strip()[-600:])
    doc = {
        "when": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "machine": bs.machine(),
        "tree": {"path": str(drive), **tree},
        "settings": {"jobs": j, "repeat": opts.repeat, "warmup": 1, "cold": opts.cold},
        "commands": {k: c.shell() for k, c in cmds.items()},
        "runs": {k: [asdict(r) for r in c.runs] for k, c in cmds.items()},
        "medians_s": med,
        "measures": [asdict(m) | {"ratio": m.ratio} for m in measures],
        "sweep_stderr_tail": summary[-1500:],
    }
    opts.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n",
                        encoding="utf-8")  # fmt: skip
    print(f"\nload average (1, 5, 15 min) at start {load_start}, at end {os.getloadavg()}")
    print(f"results: {opts.out}")


if __name__ == "__main__":
    main()
