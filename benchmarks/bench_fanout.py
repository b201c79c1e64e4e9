"""How a sweep should fan out, measured: one process, sweep processes (fork), or threads (what
a process that already runs threads must use: forking it is unsafe), for a first sweep and a
rescan of the benchmark corpus. Every command is a subprocess, after a warm-up pass, the
commands alternating over --repeat rounds; medians and ratios to one process are printed and
saved to benchmarks/results-fanout.json. See benchmarks/README.md (fan-out).

    .venv/bin/python benchmarks/bench_fanout.py [--files N] [--repeat R]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
TEST_ROOT = ROOT / "samples" / "pki" / "test-root.pem"
RESULTS = ROOT / "benchmarks" / "results-fanout.json"
PY = sys.executable


def in_process_threads(root: str, state: str, jobs: int) -> None:
    """A sweep inside a process that already runs a thread (as an agent does): the sweep
    must not fork, so its `jobs` workers are threads."""
    from rmmscan.engine.engine import Engine
    from rmmscan.engine.options import Options
    from rmmscan.engine.sweep import Sweep
    from rmmscan.sinks.jsonl import JsonlSink

    alive = threading.Event()
    threading.Thread(target=alive.wait, daemon=True).start()  # the agent's other thread
    options = Options(trusted_roots=(TEST_ROOT,), state_dir=Path(state), cache=False)
    engine = Engine(options, lambda message: print(message, file=sys.stderr))
    with open(os.devnull, "w") as out:
        engine.sinks.append(JsonlSink(out))
        engine.open_state()
        Sweep(engine, None, jobs).run([root])
        engine.close()
    alive.set()


def commands(corpus: Path, state: Path) -> dict[str, list[str]]:
    scan = [PY, "-m", "rmmscan", "scan", str(corpus), "--format", "jsonl", "-q",
            "--trusted-roots", str(TEST_ROOT)]  # fmt: skip
    cold = [*scan, "--no-cache", "--state-dir", str(state / "cold")]
    warm = [*scan, "--state-dir", str(state / "warm")]
    threads = [PY, __file__, "--threads", str(corpus), str(state / "threads")]
    return {
        "sweep, 1 process": [*cold, "-j", "1"],
        "sweep, 2 processes": [*cold, "-j", "2"],
        "sweep, 2 threads (a process with threads)": [*threads, "2"],
        "rescan, 1 process": [*warm, "-j", "1"],
        "rescan, 2 processes": [*warm, "-j", "2"],
        "rescan, default": warm,
    }


def timed(argv: list[str]) -> tuple[float, float, int]:
    """(wall s, user+sys s, max RSS KiB of the largest process) by GNU time."""
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%e %U %S %M", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    if out.returncode not in (0, 1):
        raise SystemExit(f"{argv} exited {out.returncode}:\n{out.stderr[-2000:]}")
    wall, user, system, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), float(user) + float(system), int(rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", nargs=3, metavar=("ROOT", "STATE", "JOBS"))
    args = parser.parse_args()
    if args.threads:
        root, state, jobs = args.threads
        in_process_threads(root, state, int(jobs))
        return
    corpus = WORK / f"corpus-{args.files}-s{args.seed}"
    if not corpus.exists():
        subprocess.run([PY, str(ROOT / "benchmarks" / "make_corpus.py"), "--out", str(corpus),
                        "--files", str(args.files), "--seed", str(args.seed)], check=True)
    state = WORK / "fanout"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    cmds = commands(corpus / "C", state)
    for argv in cmds.values():  # warm-up: page cache, and the rescans' cache
        timed(argv)
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in cmds}
    for _ in range(args.repeat):
        for name, argv in cmds.items():
            runs[name].append(timed(argv))
    results = {}
    for name, got in runs.items():
        results[name] = {
            "wall_median_s": statistics.median(r[0] for r in got),
            "cpu_median_s": statistics.median(r[1] for r in got),
            "max_rss_kib": max(r[2] for r in got),
            "walls": [r[0] for r in got],
        }
    for kind in ("sweep", "rescan"):
        base = results[f"{kind}, 1 process"]["wall_median_s"]
        for name, r in results.items():
            if name.startswith(kind):
                r["ratio_to_1_process"] = round(r["wall_median_s"] / base, 3)
    for name, r in results.items():
        print(f"{name:45} {r['wall_median_s']:7.2f} s  x{r['ratio_to_1_process']:.2f}  "
              f"cpu {r['cpu_median_s']:6.2f} s  rss {r['max_rss_kib'] / 1024:6.1f} MiB")
    load = os.getloadavg()
    RESULTS.write_text(json.dumps({
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": args.files, "repeat": args.repeat, "cpus": os.cpu_count(),
        "load_after": load, "results": results,
    }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
