"""Benchmark of the sweep (`rmmscan scan`) against same-run baselines, on a generated corpus.

The machine this runs on is shared and noisy, so no number stands alone: every command runs
as a subprocess (start-up counts for all), after one warm-up pass (warm page cache), the
commands alternating over --repeat rounds, and the medians are reported with their ratios.
See benchmarks/README.md.

    .venv/bin/python benchmarks/bench_sweep.py [--files N] [--jobs J] [--repeat R]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
WORK = BENCH / ".work"
RUNS = WORK / "sweep"
EMPTY = RUNS / "empty"
RESULTS = BENCH / "results-sweep.json"
SAMPLES = ROOT / "samples"
TEST_ROOT = SAMPLES / "pki" / "test-root.pem"
YARA_RULE = BENCH / "dwsnet.yar"
BASELINE = BENCH / "baseline_read.py"
MAKE_CORPUS = BENCH / "make_corpus.py"
GNU_TIME = "/usr/bin/time"
PY = sys.executable
RMMSCAN = str(Path(sys.executable).parent / "rmmscan")
MIB = 1024 * 1024

TARGET_SWEEP_VS_READ = 1.5  # sweep wall time ≤ 1.5 × the 4 KiB-read baseline's
TARGET_YARA_SPEEDUP = 3.0  # yara's wall time ≥ 3 × the sweep's
TARGET_RESCAN_VS_FIND = 1.5  # cached rescan ≤ 1.5 × find -type f
TARGET_RSS = 150 * MIB  # peak RSS of the sweep, at any corpus size

sys.path.insert(0, str(BENCH))
import make_corpus  # noqa: E402  (benchmarks/ is not a package)
from profiles import collapse  # noqa: E402


@dataclass
class Run:
    """One subprocess: wall time measured here, CPU and peak RSS from GNU time."""

    wall: float
    user: float
    sys: float
    maxrss: int  # bytes: the largest single process (GNU time's %M)
    exit: int
    tree_peak: int = 0  # bytes: the sampled peak of the whole process tree's RSS, when polled
    # When polled: each sweep process's CPU seconds and when it was last seen (seconds after
    # the start), the last sample of each: how evenly the processes shared the work.
    workers: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Measure:
    name: str
    ours: str  # key of the command measured
    base: str
    target: float | None
    kind: str  # "le": ours/base ≤ target; "speedup": base/ours ≥ target
    note: str = ""
    ours_median: float = 0.0
    base_median: float = 0.0
    ours_cpu: float = 0.0  # user + sys, median
    base_cpu: float = 0.0

    @property
    def ratio(self) -> float:
        return self.ours_median / self.base_median if self.base_median else float("nan")

    @property
    def speedup(self) -> float:
        return self.base_median / self.ours_median if self.ours_median else float("nan")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.kind == "speedup":
            return self.speedup >= self.target
        return self.ratio <= self.target


@dataclass
class Command:
    key: str
    argv: list[str]
    stdout: Path | None = None  # None: /dev/null
    stderr: Path | None = None
    ok_exits: tuple[int, ...] = (0,)
    runs: list[Run] = field(default_factory=list)

    def shell(self) -> str:
        text = " ".join(_quote(a) for a in self.argv)
        return text + (" > /dev/null" if self.stdout is None else "")


def _quote(arg: str) -> str:
    rel = arg
    with contextlib.suppress(ValueError):
        rel = str(Path(arg).relative_to(ROOT)) if arg.startswith(str(ROOT)) else arg
    return f"'{rel}'" if (" " in rel or not rel) else rel


# --------------------------------------------------------------------------- running


class TreeSampler(threading.Thread):
    """Polls the RSS of a process and all its descendants (psutil), keeps the peak sum; and the
    CPU time of each grandchild (GNU time → rmmscan → its sweep processes)."""

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self.done = threading.Event()
        self.workers: dict[int, tuple[float, float]] = {}  # pid → (CPU s, last seen s)

    def run(self) -> None:
        import psutil

        try:
            top = psutil.Process(self.pid)
        except psutil.Error:
            return
        start = time.perf_counter()
        while not self.done.is_set():
            total = 0
            try:
                parents = {c.pid for c in top.children()}
                for p in [top, *top.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
                        if p.ppid() in parents:
                            cpu = p.cpu_times()
                            seen = time.perf_counter() - start
                            self.workers[p.pid] = (cpu.user + cpu.system, seen)
            except psutil.Error:
                pass
            self.peak = max(self.peak, total)
            self.done.wait(self.interval)


def run(cmd: Command, sample_tree: bool = False) -> Run:
    """Run cmd under GNU time; wall time from here (GNU time's is to 10 ms)."""
    with tempfile.NamedTemporaryFile("r", prefix="gnutime-", dir=RUNS, delete=False) as tf:
        timing = Path(tf.name)
    argv = [GNU_TIME, "-q", "-o", str(timing), "-f", "%U %S %M %x", *cmd.argv]
    out = cmd.stdout.open("wb") if cmd.stdout else subprocess.DEVNULL
    err = cmd.stderr.open("wb") if cmd.stderr else subprocess.DEVNULL
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = None
        if sample_tree:
            sampler = TreeSampler(proc.pid)
            sampler.start()
        proc.wait()
        wall = time.perf_counter() - start
        if sampler:
            sampler.done.set()
            sampler.join()
    finally:
        for f in (out, err):
            if f is not subprocess.DEVNULL:
                f.close()
    fields = timing.read_text().split("\n")
    timing.unlink()
    user, system, maxrss, code = [line for line in fields if line.strip()][-1].split()
    result = Run(wall, float(user), float(system), int(maxrss) * 1024, int(code))
    if sampler:
        result.tree_peak = sampler.peak
        result.workers = sorted(sampler.workers.values())
    if result.exit not in cmd.ok_exits:
        detail = cmd.stderr.read_text(errors="replace")[-2000:] if cmd.stderr else ""
        raise SystemExit(f"{cmd.key} exited {result.exit}: {cmd.shell()}\n{detail}")
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- corpus


def ensure_corpus(files: int, seed: int) -> tuple[Path, dict]:
    """The corpus for (files, seed), rebuilt when the generator or the samples changed."""
    out = WORK / f"corpus-{files}-s{seed}"
    real, _ = make_corpus.real_world(fetch=False)
    key = make_corpus.samples_key(SAMPLES, real)
    manifest_path = out / "manifest.json"
    why = "no corpus yet"
    with contextlib.suppress(OSError, ValueError, KeyError):
        m = json.loads(manifest_path.read_text("utf-8"))
        wanted = {"version": make_corpus.VERSION, "files": files, "seed": seed, "samples_key": key}
        changed = [f"{k} {m.get(k)} -> {v}" for k, v in wanted.items() if m.get(k) != v]
        if not changed:
            return out, m
        why = ", ".join(changed)
    # A checkout without the real-world files (tests/.cache/realworld, fetched by the tests)
    # gets another samples_key, and a corpus without them: not comparable with earlier runs.
    print(f"building {out.relative_to(ROOT)} ({why}; {len(real)} real-world files) ...",
          file=sys.stderr, flush=True)  # fmt: skip
    subprocess.run(
        [PY, str(MAKE_CORPUS), "--out", str(out), "--files", str(files), "--seed", str(seed)],
        check=True,
    )
    return out, json.loads(manifest_path.read_text("utf-8"))


# --------------------------------------------------------------------------- commands


def sweep(key: str, drive: Path, jobs: int, state: Path, cache: bool, tag: str) -> Command:
    argv = [RMMSCAN, "scan", str(drive), "--format", "jsonl",
            "--output", str(RUNS / f"{tag}.jsonl"), "--emit", "detections",
            "--jobs", str(jobs), "--state-dir", str(state),
            "--trusted-roots", str(TEST_ROOT), "--no-progress"]  # fmt: skip
    if not cache:
        argv.insert(argv.index("--state-dir"), "--no-cache")
    return Command(key, argv, stderr=RUNS / f"{tag}.stderr", ok_exits=(0, 1))


def shares(drive: Path, jobs: int) -> list[list[str]]:
    """The drive's top-level entries in `jobs` groups of about equal file counts (largest
    first, each to the lightest group): a split of the tree as even as a split can be, made
    before any timing, for the parallel find below."""
    sizes = []
    for entry in os.scandir(drive):
        n = 1
        if entry.is_dir(follow_symlinks=False):
            n = sum(len(names) for _, _, names in os.walk(entry.path))
        sizes.append((n, entry.path))
    groups: list[tuple[int, list[str]]] = [(0, []) for _ in range(max(1, jobs))]
    for n, path in sorted(sizes, reverse=True):
        i = min(range(len(groups)), key=lambda k: groups[k][0])
        groups[i] = (groups[i][0] + n, [*groups[i][1], path])
    return [paths for _, paths in groups if paths]


def split_walks(drive: Path, jobs: int) -> list[Command]:
    """`jobs` walks at once that each stat every file of its share of the tree, listing
    nothing twice and looking nothing up: the floor of a parallel rescan's check, in C (GNU
    find: -printf of inode, size and mtime needs a stat) and in Python (baseline_read.py
    --walk-stat). The paths are the corpus's own, quoted for sh."""
    groups = shares(drive, jobs)
    printf = shlex.quote("%i %s %T@\\n")
    finds = " ".join(
        f"find {' '.join(map(shlex.quote, paths))} -type f -printf {printf} > /dev/null &"
        for paths in groups
    )
    walks = " ".join(
        f"{shlex.quote(PY)} {shlex.quote(str(BASELINE))} {' '.join(map(shlex.quote, paths))} "
        "--walk-stat > /dev/null &"
        for paths in groups
    )
    return [
        Command("find_stat_split", ["sh", "-c", finds + " wait"]),
        Command("walk_stat_split", ["sh", "-c", walks + " wait"]),
    ]


def commands(drive: Path, jobs: int, files: int) -> dict[str, Command]:
    state_nocache = RUNS / f"state-nocache-{files}"
    state_cache = RUNS / f"state-cache-{files}"
    for d in (state_nocache, state_cache):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    cmds = [
        sweep("sweep", drive, jobs, state_nocache, cache=False, tag=f"sweep-{files}"),
        Command("read", [PY, str(BASELINE), str(drive), "--jobs", str(jobs)],
                stdout=RUNS / f"read-{files}.json"),
        Command("yara", ["yara", "-r", "-p", str(jobs), str(YARA_RULE), str(drive)],
                stdout=RUNS / f"yara-{files}.txt", stderr=RUNS / f"yara-{files}.stderr",
                ok_exits=(0, 1)),
        sweep("sweep_j1", drive, 1, state_nocache, cache=False, tag=f"sweep-j1-{files}"),
        sweep("rescan", drive, jobs, state_cache, cache=True, tag=f"rescan-{files}"),
        sweep("rescan_j1", drive, 1, state_cache, cache=True, tag=f"rescan-j1-{files}"),
        Command("find", ["find", str(drive), "-type", "f"]),
        Command("find_stat", ["find", str(drive), "-type", "f", "-printf", "%i %s %T@\\n"]),
        *split_walks(drive, jobs),
        Command("walk_stat", [PY, str(BASELINE), str(drive), "--walk-stat"]),
        Command("stat", [PY, str(BASELINE), str(drive), "--jobs", str(jobs), "--stat"]),
        Command("list", [PY, str(BASELINE), str(drive), "--list"]),
        Command("read_nothreads", [PY, str(BASELINE), str(drive), "--jobs", "0"]),
        # Fixed costs: the same commands on an empty folder (start-up, imports, trust store).
        sweep("sweep_empty", EMPTY, jobs, state_nocache, cache=False, tag="sweep-empty"),
        Command("read_empty", [PY, str(BASELINE), str(EMPTY), "--jobs", str(jobs)]),
    ]  # fmt: skip
    return {c.key: c for c in cmds}


# --------------------------------------------------------------------------- detections


def sweep_detections(path: Path, drive: Path) -> dict[str, dict]:
    """FolderPath (relative to the drive) → the rules, signers and statuses of its rows."""
    found: dict[str, dict] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            rel = os.path.relpath(row["FolderPath"], drive)
            d = found.setdefault(rel, {"rules": set(), "signers": set(), "statuses": set()})
            d["rules"].add(row.get("RuleName") or row.get("RuleId") or "?")
            if row.get("Signer"):
                d["signers"].add(row["Signer"])
            d["statuses"].add(row.get("VerificationStatus") or "?")
    return found


def yara_detections(path: Path, drive: Path) -> set[str]:
    out = set()
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        if line.strip():
            _rule, _, file = line.partition(" ")
            out.add(os.path.relpath(file, drive))
    return out


# Why YARA (4.2.3, Debian bookworm, OpenSSL pe module) sees what it sees, by sample. Checked
# with `yara -D benchmarks/dwsnet.yar samples/pe/FILE`; see the README.
YARA_REASONS = {
    "lying-size.exe": "the certificate directory's size runs past the end of the file: YARA's "
    "pe module drops the whole table (it only parses a directory that fits in the file); "
    "rmmscan reads the PKCS#7 that is there and reports it Malformed",
    "symlink": "yara -r follows symbolic links to files by default and reports the target "
    "again under the link's path; rmmscan does not follow links unless --follow-symlinks",
    "lookalike": "not DWSNET-signed: only rmmscan's look-alike rule (DWService file name "
    "without a trusted DWSNET signature) covers it; a signer rule cannot",
}


def score(manifest: dict, ours: dict[str, dict], yara: set[str] | None) -> dict:
    expected = {d["path"]: d for d in manifest["detections"]}
    lookalikes = {d["path"]: d for d in manifest.get("lookalikes", [])}
    links = {s["path"]: s["target"] for s in manifest.get("symlinks", [])}
    rows = []
    for path in sorted(set(expected) | set(lookalikes) | set(ours) | (yara or set())):
        info = expected.get(path) or lookalikes.get(path) or {}
        kind = "dwsnet" if path in expected else "lookalike" if path in lookalikes else "other"
        if path in links:
            kind = "symlink"
        source = info.get("source") or manifest["pe_files"].get(path) or links.get(path, "")
        row = {
            "path": path,
            "kind": kind,
            "source": source,
            "why": info.get("why", f"symlink to {links[path]}" if path in links else ""),
            "expected_statuses": info.get("statuses", []),
            "rmmscan": path in ours,
            "rmmscan_statuses": sorted(ours.get(path, {}).get("statuses", [])),
            "rmmscan_rules": sorted(ours.get(path, {}).get("rules", [])),
            "yara": None if yara is None else path in yara,
        }
        if yara is not None and row["yara"] != (kind == "dwsnet"):
            reason = YARA_REASONS.get(kind if kind in ("symlink", "lookalike") else source)
            row["yara_reason"] = reason or "unexplained"
        rows.append(row)

    def tally(tool: str) -> dict:
        hits = {r["path"] for r in rows if r[tool]}
        want = set(expected) | (set(lookalikes) if tool == "rmmscan" else set())
        return {
            "expected": len(want),
            "found": len(hits & want),
            "missed": sorted(want - hits),
            "extra": sorted(hits - want),
        }

    out = {"files": rows, "rmmscan": tally("rmmscan")}
    if yara is not None:
        out["yara"] = tally("yara")
        out["yara"]["lookalikes_not_covered"] = sorted(set(lookalikes) - yara)
    return out


# --------------------------------------------------------------------------- measuring


def rounds(cmds: list[Command], repeat: int, before=None) -> None:
    """One warm-up pass, then `repeat` rounds, the order reversed every other round;
    `before()`, when given, runs before every timed run (bench_tree.py --cold)."""
    for c in cmds:
        print(f"  warm-up {c.key} ...", file=sys.stderr, flush=True)
        run(c)
    for i in range(repeat):
        order = cmds if i % 2 == 0 else cmds[::-1]
        for c in order:
            if before is not None:
                before()
            c.runs.append(run(c))
        summary = ", ".join(f"{c.key} {c.runs[-1].wall:.2f}s" for c in cmds)
        print(f"  round {i + 1}/{repeat}: {summary}", file=sys.stderr, flush=True)


def rss_runs(small: Command, big: Command, repeat: int) -> None:
    """Fresh sweeps at two corpus sizes, alternating, with the process tree's RSS polled."""
    for i in range(repeat):
        for c in (small, big) if i % 2 == 0 else (big, small):
            c.runs.append(run(c, sample_tree=True))
        print(f"  rss round {i + 1}/{repeat}: {small.runs[-1].maxrss / MIB:.0f} / "
              f"{big.runs[-1].maxrss / MIB:.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip


def profile(cmd: Command, tag: str) -> dict:
    """py-spy over one sweep: a flame graph, and the top frames by own and total samples."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {"error": "py-spy not installed (.venv/bin/pip install py-spy)"}
    out: dict = {}
    for mode, extra in (("all", []), ("gil", ["--gil"])):
        raw = RUNS / f"profile-{tag}-{mode}.txt"
        svg = RUNS / f"profile-{tag}-{mode}.svg"
        wall = 0.0
        for fmt, target in (("raw", raw), ("flamegraph", svg)):
            start = time.perf_counter()
            subprocess.run(
                [str(spy), "record", "--rate", "250", "--subprocesses", "--format", fmt,
                 "-o", str(target), *extra, "--", *cmd.argv],
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wall = wall or time.perf_counter() - start
        out[mode] = {"flamegraph": str(svg.relative_to(ROOT)), "wall_s": wall,
                     **collapse(raw, BUCKETS)}  # fmt: skip
    return out


# Where a sample goes: the first bucket one of whose markers is in any frame of its stack
# (function names, as py-spy prints them; the sweep's code may move, "other" catches the rest).
BUCKETS = [
    ("start-up: imports", ("_find_and_load",)),
    ("start-up: trust store", ("Inspector.trust", "TrustStore.", "build (rmmscan/inspect/trust")),
    ("hashes of emitted rows", ("hash_stream",)),
    ("verification (emitted/rule rows)", ("Inspector.verify", "(rmmscan/inspect/verify.py")),
    ("signature parse (PKCS#7 → columns)", ("signatures (rmmscan/inspect/authenticode",)),
    ("version information", ("version_info", "FileFacts.version")),
    ("PE recognition (header, table)", ("inspect_stream", "parse_header")),
    ("rule evaluation (KQL predicates)", ("Query.matches", "RuleSet.")),
    ("rows, sinks, output", ("rows/build.py", "/sinks/", "signature_rows")),
    ("scan cache", ("rmmscan/state/cache.py",)),
    ("open, stat, read, close", ("open_regular", "FdDir.", "fdopen", "_Handle.", "read_at")),
    ("per-file glue (Engine.judge, Judge.judge)", ("Engine.judge", "Judge.judge")),
    ("walk and thread hand-off", ("Walk.", "queue.py", "Sweep.visit")),
    (
        "waiting (the parent, for its sweep processes)",
        ("connection.py", "Event.wait", "Thread.join", "Condition.wait"),
    ),
]


# --------------------------------------------------------------------------- output


def fmt_s(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def table(measures: list[Measure], rss: dict) -> str:
    lines = [
        "| # | measurement | rmmscan median (CPU) | baseline median (CPU) | ratio | target "
        "| met? |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for i, m in enumerate(measures, 1):
        if m.kind == "speedup":
            ratio = f"{m.speedup:.2f}× faster"
            target = f"≥ {m.target:g}× faster"
        else:
            ratio = f"{m.ratio:.2f}"
            target = "—" if m.target is None else f"≤ {m.target:g}×"
        met = "—" if m.met is None else ("yes" if m.met else "**no**")
        name = f"{m.name} ({m.note})" if m.note else m.name
        lines.append(f"| {i} | {name} | {fmt_s(m.ours_median)} ({fmt_s(m.ours_cpu)}) "
                     f"| {fmt_s(m.base_median)} ({fmt_s(m.base_cpu)}) "
                     f"| {ratio} | {target} | {met} |")  # fmt: skip
    for size, r in rss.get("sizes", {}).items():
        met = "yes" if r["tree_peak_median"] <= TARGET_RSS else "**no**"
        lines.append(
            f"| RSS | peak RSS of the sweep, {int(size):,} files: all its processes together "
            f"(the largest one {r['maxrss_median'] / MIB:.0f} MiB) "
            f"| {r['tree_peak_median'] / MIB:.0f} MiB "
            f"| {r['baseline_maxrss'] / MIB:.0f} MiB (4 KiB read) | — | ≤ 150 MiB | {met} |"
        )
    for size, r in rss.get("sizes", {}).items():
        for i, workers in enumerate(r.get("sweep_processes", [])):
            shares = ", ".join(f"{cpu:.2f} s CPU, last seen at {t:.2f} s" for cpu, t in workers)
            lines.append(f"\nsweep processes, {int(size):,} files, RSS round {i + 1}: {shares}")
    return "\n".join(lines)


def detections_table(scored: dict) -> str:
    lines = ["| file | sample | why | rmmscan (statuses) | yara |", "|---|---|---|---|---|"]
    for r in scored["files"]:
        ours = ("yes " + "/".join(r["rmmscan_statuses"])) if r["rmmscan"] else "**no**"
        if r["yara"] is None:
            yara = "—"
        elif r["yara"]:
            yara = "yes" if r["kind"] == "dwsnet" else "yes (extra)"
        else:
            yara = "**no**" if r["kind"] == "dwsnet" else "no"
        lines.append(f"| {r['path']} | {r['source']} | {r['why']} | {ours} | {yara} |")
    return "\n".join(lines)


def machine() -> dict:
    info = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(
            (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")),
            None,
        )
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gib"] = round(int(mem) / MIB, 1)
    for key, argv in (("yara", ["yara", "--version"]), ("rmmscan", [RMMSCAN, "--version"]),
                      ("find", ["find", "--version"])):  # fmt: skip
        with contextlib.suppress(OSError):
            text = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
            info[key] = text.splitlines()[0] if text else ""
    with contextlib.suppress(OSError):
        git = ["git", "-C", str(ROOT)]
        info["commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "agent"],
                               capture_output=True, text=True).stdout  # fmt: skip
        info["agent_uncommitted_changes"] = bool(dirty.strip())
    return info


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="corpus size (100000)")
    parser.add_argument(
        "--rss-files", type=int, default=20_000, help="smaller corpus for peak RSS (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (5)")
    parser.add_argument("--rss-repeat", type=int, default=3, help="RSS rounds (3)")
    parser.add_argument("--no-yara", action="store_true", help="skip yara (slowest command)")
    parser.add_argument("--profile", action="store_true", help="also profile one sweep with py-spy")
    parser.add_argument("--out", type=Path, default=RESULTS)
    opts = parser.parse_args()
    for tool in (GNU_TIME, "yara", "find"):
        if not shutil.which(tool) and not (tool == "yara" and opts.no_yara):
            sys.exit(f"{tool} not found: run bash benchmarks/setup")
    if subprocess.run([RMMSCAN, "scan", "--help"], capture_output=True).returncode != 0:
        sys.exit(f"{RMMSCAN} has no scan command yet")
    EMPTY.mkdir(parents=True, exist_ok=True)
    # An installed wheel runs from bytecode compiled at install time; a checkout run with
    # PYTHONDONTWRITEBYTECODE (set here) would compile every module at every start-up.
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "agent")], check=True)
    started = dt.datetime.now(dt.UTC)
    load_start = os.getloadavg()  # the machine is shared: say how busy it was

    corpus, manifest = ensure_corpus(opts.files, opts.seed)
    drive = corpus / manifest["root"]
    small = None
    if opts.rss_files:
        small_corpus, small_manifest = ensure_corpus(opts.rss_files, opts.seed)
        small = small_corpus / small_manifest["root"]
    cmds = commands(drive, opts.jobs, opts.files)
    if opts.no_yara:
        del cmds["yara"]
    print(f"# rmmscan sweep benchmark: {manifest['regular_files']:,} files, "
          f"{manifest['bytes'] / (1 << 30):.2f} GiB, jobs {opts.jobs}, {opts.repeat} rounds\n",
          flush=True)  # fmt: skip
    print("timing (warm-up pass, then alternating rounds) ...", file=sys.stderr, flush=True)
    rounds(list(cmds.values()), opts.repeat)

    med = {k: median([r.wall for r in c.runs]) for k, c in cmds.items()}
    measures = [
        Measure("sweep, no cache vs open + read 4 KiB of every file", "sweep", "read",
                TARGET_SWEEP_VS_READ, "le",
                note=f"--jobs {opts.jobs}: sweep processes, reader threads"),
        Measure("sweep, no cache vs the same read without threads", "sweep", "read_nothreads",
                None, "le", note="informative: on a warm cache threads slow Python's read down"),
        Measure("sweep, no cache, --jobs 1 (one process) vs the same read without threads",
                "sweep_j1", "read_nothreads", None, "le", note="informative"),
        Measure("sweep, no cache vs yara -r (pe module, signer rule)", "sweep", "yara",
                TARGET_YARA_SPEEDUP, "speedup"),
        Measure("rescan with the cache vs find -type f", "rescan", "find",
                TARGET_RESCAN_VS_FIND, "le"),
        Measure("rescan with the cache, --jobs 1 vs find -type f", "rescan_j1", "find", None,
                "le", note="informative"),
        Measure("rescan with the cache vs find -type f -printf (stats every file)", "rescan",
                "find_stat", None, "le", note="informative"),
        Measure("rescan with the cache vs baseline_read.py --stat (Python walk + stat)",
                "rescan", "stat", None, "le", note="informative: threads stat by path"),
        Measure("rescan with the cache, --jobs 1 vs baseline_read.py --walk-stat",
                "rescan_j1", "walk_stat", None, "le",
                note="informative: the floor of a one-process rescan in Python"),
        Measure(f"{opts.jobs} GNU finds at once that stat their shares of the tree "
                "vs find -type f", "find_stat_split", "find", None, "le",
                note="informative: a rescan's check in C, perfectly parallel, nothing looked up"),
        Measure(f"{opts.jobs} Python walks at once that stat their shares of the tree "
                "vs find -type f", "walk_stat_split", "find", None, "le",
                note="informative: the same in Python, the floor of any Python rescan"),
        Measure("baseline_read.py --list (a Python walk that touches no file) vs find -type f",
                "list", "find", None, "le",
                note="informative: what Python pays for the walk alone, before any stat"),
        Measure("start-up: both on an empty folder", "sweep_empty", "read_empty", None, "le",
                note="informative: the fixed cost inside 1 and 3"),
    ]  # fmt: skip
    measures = [m for m in measures if m.base in cmds]
    cpu = {k: median([r.user + r.sys for r in c.runs]) for k, c in cmds.items()}
    for m in measures:
        m.ours_median, m.base_median = med[m.ours], med[m.base]
        m.ours_cpu, m.base_cpu = cpu[m.ours], cpu[m.base]

    # Detections: every timed sweep must report the same files; the rescan (from the cache) too.
    ours = sweep_detections(RUNS / f"sweep-{opts.files}.jsonl", drive)
    rescan = sweep_detections(RUNS / f"rescan-{opts.files}.jsonl", drive)
    yara = yara_detections(RUNS / f"yara-{opts.files}.txt", drive) if "yara" in cmds else None
    scored = score(manifest, ours, yara)
    scored["rescan_same_files_as_sweep"] = set(rescan) == set(ours)
    sweep_summary = (RUNS / f"sweep-{opts.files}.stderr").read_text(errors="replace")
    rescan_summary = (RUNS / f"rescan-{opts.files}.stderr").read_text(errors="replace")
    yara_stderr = (RUNS / f"yara-{opts.files}.stderr").read_text(errors="replace") if yara else ""
    read_out = json.loads((RUNS / f"read-{opts.files}.json").read_text())

    rss: dict = {}
    if small is not None:
        print("peak RSS at two corpus sizes ...", file=sys.stderr, flush=True)
        s_cmd = sweep("sweep", small, opts.jobs, RUNS / "state-rss-small", False, "rss-small")
        b_cmd = sweep("sweep", drive, opts.jobs, RUNS / "state-rss-big", False, "rss-big")
        for d in (RUNS / "state-rss-small", RUNS / "state-rss-big"):
            d.mkdir(parents=True, exist_ok=True)
        s_read = Command("read", [PY, str(BASELINE), str(small), "--jobs", str(opts.jobs)])
        s_read.runs.append(run(s_read))
        rss_runs(s_cmd, b_cmd, opts.rss_repeat)
        sizes = {}
        for n, c, base in ((opts.rss_files, s_cmd, s_read), (opts.files, b_cmd, cmds["read"])):
            sizes[str(n)] = {
                "maxrss_median": median([r.maxrss for r in c.runs]),
                "maxrss_runs": [r.maxrss for r in c.runs],
                "tree_peak_median": median([r.tree_peak for r in c.runs]),
                "wall_median": median([r.wall for r in c.runs]),
                "baseline_maxrss": median([r.maxrss for r in base.runs]),
                "sweep_processes": [r.workers for r in c.runs],  # (CPU s, last seen s) each
            }
        lo, hi = sizes[str(opts.rss_files)], sizes[str(opts.files)]
        slope = (hi["maxrss_median"] - lo["maxrss_median"]) / max(1, opts.files - opts.rss_files)
        rss = {"sizes": sizes, "bytes_per_extra_file": slope,
               # The sum over the sweep's processes (pages they share counted in each).
               "met": all(s["tree_peak_median"] <= TARGET_RSS for s in sizes.values())}  # fmt: skip

    prof = None
    missed = [m for m in measures if m.met is False] or (rss and not rss["met"])
    if opts.profile or missed:
        print("profiling one sweep with py-spy ...", file=sys.stderr, flush=True)
        prof_cmd = sweep("sweep", drive, opts.jobs, RUNS / "state-profile", False, "profile")
        (RUNS / "state-profile").mkdir(parents=True, exist_ok=True)
        prof = {"sweep": profile(prof_cmd, str(opts.files))}
        prof["rescan"] = profile(cmds["rescan"], f"rescan-{opts.files}")

    print(table(measures, rss))
    print()
    if yara is not None:
        print(detections_table(scored))
        print()
    t_ours = scored["rmmscan"]
    print(f"rmmscan: {t_ours['found']}/{t_ours['expected']} expected files, "
          f"missed {t_ours['missed']}, extra {t_ours['extra']}; "
          f"rescan from the cache reports the same files: "
          f"{scored['rescan_same_files_as_sweep']}")  # fmt: skip
    if yara is not None:
        t_y = scored["yara"]
        print(f"yara:    {t_y['found']}/{t_y['expected']} DWSNET-signed files, "
              f"missed {t_y['missed']}, extra {t_y['extra']}")  # fmt: skip
    for what, p in (prof or {}).items():
        if "gil" not in p:
            continue
        print(f"\n{what} profile (py-spy --gil: samples of the thread holding the GIL; "
              f"run of {p['gil']['wall_s']:.1f} s under py-spy):")  # fmt: skip
        for bucket, pct in p["gil"]["buckets_pct"]:
            print(f"  {pct:5.1f}%  {bucket}")

    doc = {
        "when": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "machine": machine(),
        "settings": {
            "files": opts.files,
            "rss_files": opts.rss_files,
            "seed": opts.seed,
            "jobs": opts.jobs,
            "repeat": opts.repeat,
            "rss_repeat": opts.rss_repeat,
            "warmup": 1,
        },
        "corpus": {
            k: manifest[k]
            for k in (
                "files",
                "seed",
                "regular_files",
                "directories",
                "max_depth",
                "bytes",
                "counts",
                "bytes_by_kind",
                "large_files",
                "realworld",
            )
        },
        "commands": {k: c.shell() for k, c in cmds.items()},
        "runs": {k: [asdict(r) for r in c.runs] for k, c in cmds.items()},
        "medians_s": med,
        "measures": [
            asdict(m) | {"ratio": m.ratio, "speedup": m.speedup, "met": m.met} for m in measures
        ],
        "rss": rss,
        "detections": scored,
        "baseline_read_output": read_out,
        "sweep_stderr_tail": sweep_summary[-1500:],
        "rescan_stderr_tail": rescan_summary[-1500:],
        "yara_stderr_lines": len(yara_stderr.splitlines()),
        "profile": prof,
    }
    opts.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n",
                        encoding="utf-8")  # fmt: skip
    print(f"\nload average (1, 5, 15 min) at start {load_start}, at end {os.getloadavg()}")
    print(f"results: {opts.out}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
