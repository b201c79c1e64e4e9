"""Benchmark of the image scan (`rmmscan image`) against The Sleuth Kit's `fls -r`, on an NTFS
image of a generated tree, raw and E01, every command in the same run. See
benchmarks/README.md (the image scan).

The image: the tests' Windows tree (tests/images/tree.py: hives, signed samples, a named
stream), then filler files up to --files in folders shaped like a Windows volume's
(make_corpus.build_tree: flat WinSxS, deep source trees, heavy-tailed files per folder):
mostly small files that are not PE files (a third small enough to be resident in their MFT
record, some under 64 bytes), 5 % PE samples from samples/pe/ (none signed by DWSNET: the
tests' tree places those, so detections are as rare as on a real machine). It is made as the
tests make theirs (tests/images/build.py: mkntfs, wimcapture + wimapply, ntfscp; ewfacquire
with fast deflate for the E01), once per --files and --seed, under benchmarks/.work/image/.

Each round runs, in an order that rotates by round (one warm-up pass first, page cache warm):

    rmmscan image RAW --no-cache --format jsonl -o /dev/null   (and E01)
    rmmscan image RAW ... -j 1                                  (and E01: one process)
    fls -r -p RAW > /dev/null                                   (and fls -r -p -i ewf E01)

and the same scan of the tests' tree alone (19 files: the start-up any scan costs), and
reports the medians: files/s (the files rmmscan walked / its wall time) and the ratio of
rmmscan's wall time to fls's on the same container. The machine is shared and noisy: ratios
to a baseline of the same run are what count, the files/s are context.

    .venv/bin/python benchmarks/bench_image.py [--files 20000] [--repeat 5] [--profile]
        [--variant LABEL=COMMIT ...] [--agent LABEL=COMMIT ...] [--no-one-process]
    .venv/bin/python benchmarks/bench_image.py --walk /tmp/dfvfs-venv/bin/python

--agent LABEL=COMMIT measures all of agent/ as it is at COMMIT, in the same rounds.
--variant also measures, in the same rounds, the image reader (sources/image: container.py,
containers/, filesystem.py) as it is at COMMIT, the rest of agent/ as in the working tree:
each change to the reader against the one before, on the same machine at the same time.

--walk runs only the listing comparison (list every file and read its first two bytes):
`pytsk3` is rmmscan's own walk (sources/image) without the engine, in this interpreter;
`dfvfs` and `dfvfs-tsk` are dfvfs with its NTFS back-ends (libfsntfs, The Sleuth Kit) in
the interpreter given, whose environment has dfvfs (never the project's: `python -m venv
/tmp/dfvfs-venv && /tmp/dfvfs-venv/bin/pip install dfvfs`).

Every number is written to benchmarks/results-image.json.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
WORK = BENCH / ".work" / "image"
RESULTS = BENCH / "results-image.json"
PE_DIR = ROOT / "samples" / "pe"
TEST_ROOT = ROOT / "samples" / "pki" / "test-root.pem"
PY = sys.executable
RMMSCAN = str(Path(sys.executable).parent / "rmmscan")
VERSION = 3  # bump when the image's layout or contents change: it is rebuilt on mismatch
MIB = 1024 * 1024

TARGET_RAW = 20_000  # files/s
ONE_PROCESS = "j1"  # the label of the scans with -j 1: the default's baseline, same rounds
TARGET_E01 = 5_000

sys.path.insert(0, str(ROOT))  # tests.images
sys.path.insert(0, str(BENCH))  # make_corpus, profiles (benchmarks/ is not a package)
from profiles import collapse  # noqa: E402

# What the filler files are, by share: (kind, share). "tiny" files (under 64 bytes) and
# "resident" ones (64 to 600 bytes) live in their MFT record; "small" and "text" are the
# bulk of a volume; PE files are copies of the signed and unsigned samples.
KINDS = [
    ("tiny", 0.08),
    ("resident", 0.27),
    ("small", 0.36),
    ("text", 0.22),
    ("zeros", 0.02),
    ("mz_not_pe", 0.01),
    ("pe", 0.05),
]
# The filler's PE files: signed by others than DWSNET, and unsigned or with a damaged table,
# as most PE files of a machine are; the tests' tree holds the DWSNET-signed ones (14 PEs).
PE_SAMPLES = (
    "benign.exe",
    "bmpstring.exe",
    "dll32.dll",
    "expired-notimestamp.exe",
    "expired-timestamped.exe",
    "no-crldp.exe",
    "t61string.exe",
    "unsigned.exe",
    "unsigned.exe",
    "unsigned.exe",
    "garbage-pkcs7.exe",
    "table-outside-file.exe",
)
EXTS = {
    "tiny": (".ini", ".txt", ".lock", ".dat", ""),
    "resident": (".xml", ".json", ".ini", ".manifest", ".cat", ".mum", ".lnk"),
    "small": (".dat", ".bin", ".mui", ".png", ".db", ".etl", ".pri", ".cab"),
    "text": (".log", ".txt", ".xml", ".js", ".css", ".html", ".inf"),
    "zeros": (".dat", ".bin", ".tmp"),
    "mz_not_pe": (".bin", ".txt", ".tmp"),
    "pe": (".exe", ".dll", ".sys", ".cpl", ".ocx"),
}


# --------------------------------------------------------------------------- the image


def _filler(rng: random.Random, kind: str, pools: tuple[bytes, bytes], pes: list[bytes]) -> bytes:
    binary, text = pools
    if kind == "tiny":
        size = rng.randrange(0, 64)
        return text[(at := rng.randrange(len(text) - size)) : at + size]
    if kind == "resident":
        size = rng.randrange(64, 600)
        return text[(at := rng.randrange(len(text) - size)) : at + size]
    if kind in ("small", "text", "zeros"):
        size = min(2 * MIB, max(600, int(rng.lognormvariate(8.3, 1.3))))  # median ~4 KiB
        if kind == "zeros":
            return bytes(size)
        pool = binary if kind == "small" else text
        at = rng.randrange(len(pool) - size)
        return b"\x00\x01" + pool[at + 2 : at + size]  # never "MZ" by chance
    if kind == "mz_not_pe":
        return b"MZ is not a program here\r\n" * rng.randrange(1, 40)
    return rng.choice(pes)


def make_tree(out: Path, files: int, seed: int) -> dict:
    """The tests' tree under ``out``, then filler files up to ``files``; returns its summary."""
    import make_corpus

    from tests.images.tree import make_tree as tests_tree

    tree = tests_tree(out)
    rng = random.Random(seed)
    c = make_corpus.Corpus(rng=rng, out=out)
    for rel in tree.files:  # the tests' names are taken: no filler may clash (NTFS folds case)
        make_corpus._register(c, tree.posix(rel))
    make_corpus.build_tree(c, max(20, files // 11))
    cum = make_corpus._cumulative(c.dir_weights)
    binary = rng.randbytes(8 * MIB)
    text = " ".join(rng.choice(make_corpus.WORDS) for _ in range(400_000)).encode()
    pes = [(PE_DIR / name).read_bytes() for name in PE_SAMPLES]
    kinds, shares = zip(*KINDS, strict=True)
    counts: collections.Counter = collections.Counter()
    total = 0
    budget = files - len(tree.files)
    for _ in range(budget):
        kind = rng.choices(kinds, weights=shares)[0]
        folder = rng.choices(c.dirs, cum_weights=cum)[0]
        name = make_corpus._file_name(c, folder, make_corpus._stem(rng), rng.choice(EXTS[kind]))
        data = _filler(rng, kind, (binary, text), pes)
        (out / folder / name).write_bytes(data)
        counts[kind] += 1
        total += len(data)
    return {
        "files": budget + len(tree.files),
        "filler": dict(counts),
        "tests_tree_files": len(tree.files),
        "named_streams": 1,
        "folders": len(c.dirs),
        "filler_bytes": total,
    }


def build_small(rebuild: bool) -> Path:
    """The tests' tree alone (19 files) as a raw NTFS image: the start-up's measure."""
    from tests.images import build
    from tests.images.tree import make_tree as tests_tree

    folder = WORK / f"small-v{VERSION}"
    raw = folder / "image.raw"
    if not rebuild and raw.exists():
        return raw
    shutil.rmtree(folder, ignore_errors=True)
    tree = tests_tree(folder / "tree")
    return build.ntfs_volume(tree, raw, tree.ads)


def build_image(files: int, seed: int, rebuild: bool) -> tuple[Path, Path, dict]:
    """The raw NTFS image and its E01, made once per (files, seed, VERSION)."""
    from tests.images import build
    from tests.images.tree import Ads

    folder = WORK / f"ntfs-{files}-s{seed}-v{VERSION}"
    raw, e01, meta = folder / "image.raw", folder / "image.E01", folder / "image.json"
    if not rebuild and meta.exists() and raw.exists() and e01.exists():
        return raw, e01, json.loads(meta.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    summary = make_tree(folder / "tree", files, seed)
    made_tree = time.perf_counter()
    ads = Ads("Users\\Public\\readme.txt", "payload.exe", PE_DIR / "dwsnet-ou.exe")
    build.TIMEOUT = 1800  # the tests' tools, on a larger tree than the tests'
    build.ntfs_volume(folder / "tree", raw, ads)
    made_raw = time.perf_counter()
    build.to_e01(raw, folder / "image")
    made_e01 = time.perf_counter()
    summary.update({
        "version": VERSION, "seed": seed, "raw_bytes": raw.stat().st_size,
        "e01_bytes": sum(p.stat().st_size for p in build.e01_segments(e01)),
        "build_s": {"tree": round(made_tree - start, 1), "ntfs": round(made_raw - made_tree, 1),
                    "e01": round(made_e01 - made_raw, 1)},
    })  # fmt: skip
    meta.write_text(json.dumps(summary, indent=1))
    return raw, e01, summary


# --------------------------------------------------------------------------- running


def run(argv: list[str], env: dict | None = None, stdout=subprocess.DEVNULL) -> dict:
    """One subprocess: its wall time, and its CPU time (and its children's) from wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "exit": proc.returncode,
            "rss_kib": usage.ru_maxrss, "stderr": err.decode("utf-8", "replace")}  # fmt: skip


NOW = "now"  # the working tree's agent/
# The image reader: what a variant takes from its commit (the rest is the working tree's).
READER = (
    "agent/rmmscan/sources/image/container.py",
    "agent/rmmscan/sources/image/containers",
    "agent/rmmscan/sources/image/filesystem.py",
)


def variant_tree(commit: str, whole: bool = False) -> Path:
    """The working tree's agent/ with the image reader as it is at ``commit``: the reader's
    changes measured alone, against the same engine, in the same run. ``whole``: all of
    agent/ as it is at ``commit`` (--agent)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", commit + "^{commit}"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    out = WORK / "variants" / (sha[:12] + ("-whole" if whole else ""))
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(ROOT / "agent", out / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    for path in ("agent",) if whole else READER:
        target = out / path
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha, path],
                                 capture_output=True, check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "agent"


def commands(
    raw: Path,
    e01: Path,
    small: Path,
    state: Path,
    variants: list[tuple[str, Path]],
    containers: tuple[str, ...] = ("raw", "e01"),
    labels: tuple[str, ...] = (),
) -> dict[str, tuple[list[str], dict]]:
    """key -> (argv, environment). Each variant (label, an agent/ directory) scans both
    containers with its own code (PYTHONPATH): before and after, measured in one run."""

    def scan(image: Path, tag: str, agent: Path, *extra: str) -> tuple[list[str], dict]:
        argv = [PY, "-m", "rmmscan", "image", str(image), "--no-cache", "--format", "jsonl",
                "-o", "/dev/null", "--no-progress", "--trusted-roots", str(TEST_ROOT),
                "--state-dir", str(state / tag), *extra]  # fmt: skip
        # The modules' bytecode is used and written as an installed program's is (pip
        # compiles it at install; the warm-up round writes an editable install's).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return argv, {**env, "PYTHONPATH": str(agent)}

    plain = dict(os.environ)
    cmds = {}
    for label, agent in [*variants, (NOW, ROOT / "agent")]:
        suffix = "" if label == NOW else f"@{label}"
        for name, image in (("raw", raw), ("e01", e01)):
            if name in containers:
                cmds[f"rmmscan_{name}{suffix}"] = scan(image, f"{name}{suffix}", agent)
    for name, image in (("raw", raw), ("e01", e01)):
        if name in containers and ONE_PROCESS in labels:
            key = f"{name}@{ONE_PROCESS}"
            cmds[f"rmmscan_{key}"] = scan(image, key, ROOT / "agent", "-j", "1")
    cmds["rmmscan_small"] = scan(small, "small", ROOT / "agent")
    if "raw" in containers:
        cmds["fls_raw"] = (["fls", "-r", "-p", str(raw)], plain)
    if "e01" in containers:
        cmds["fls_e01"] = (["fls", "-r", "-p", "-i", "ewf", str(e01)], plain)
    return cmds


SUMMARY = re.compile(r"files walked: ([\d,]+)\s+PE files: ([\d,]+)\s+signed: ([\d,]+)\s+"
                     r"detections: ([\d,]+)")  # fmt: skip


def summary_of(stderr: str) -> dict:
    m = SUMMARY.search(stderr)
    if not m:
        return {}
    walked, pe, signed, detections = (int(g.replace(",", "")) for g in m.groups())
    return {"walked": walked, "pe": pe, "signed": signed, "detections": detections}


def measure(cmds: dict[str, tuple[list[str], dict]], repeat: int) -> tuple[dict, dict]:
    runs: dict[str, list[dict]] = {k: [] for k in cmds}
    seen: dict[str, dict] = {}
    keys = list(cmds)
    for rnd in range(repeat + 1):  # round 0: the warm-up, not counted
        order = keys[rnd % len(keys) :] + keys[: rnd % len(keys)]
        for key in order:
            r = run(*cmds[key])
            if r["exit"] not in (0, 1):
                raise SystemExit(f"{key} exited {r['exit']}:\n{r['stderr'][-3000:]}")
            if key.startswith("rmmscan"):
                got = summary_of(r["stderr"])
                if seen.setdefault(key, got) != got:
                    raise SystemExit(f"{key}: round {rnd} found {got}, before {seen[key]}")
            r.pop("stderr")
            if rnd:
                runs[key].append(r)
        print(
            f"round {rnd}/{repeat}: "
            + ", ".join(f"{k} {runs[k][-1]['wall']:.2f}s" for k in keys if rnd),
            file=sys.stderr,
            flush=True,
        )
    return runs, seen


def results(
    runs: dict, seen: dict, files: int, labels: list[str], containers: tuple[str, ...]
) -> dict:
    med = {k: statistics.median(r["wall"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu"] for r in v) for k, v in runs.items()}
    out: dict = {"median_wall_s": med, "median_cpu_s": cpu, "containers": {}, "variants": {}}
    start_up = med["rmmscan_small"]  # 19 files: what any scan costs before its files
    for label in [*labels, NOW]:
        suffix = "" if label == NOW else f"@{label}"
        rows = {}
        for name, target in (("raw", TARGET_RAW), ("e01", TARGET_E01)):
            if name not in containers:
                continue
            key = f"rmmscan_{name}{suffix}"
            ours, fls = runs[key], runs[f"fls_{name}"]
            walked = seen[key].get("walked", files)
            per_round = [o["wall"] / f["wall"] for o, f in zip(ours, fls, strict=True)]
            rate = walked / med[key]
            rows[name] = {
                "files_walked": walked,
                "wall_s": round(med[key], 3),
                "cpu_s": round(cpu[key], 3),
                "files_per_s": round(rate),
                "files_per_s_rounds": [round(walked / o["wall"]) for o in ours],
                "target_files_per_s": target,
                "met": rate >= target,
                "files_per_s_past_start_up": round(walked / max(med[key] - start_up, 1e-3)),
                "fls_files_per_s": round(walked / med[f"fls_{name}"]),
                "ratio_vs_fls": round(med[key] / med[f"fls_{name}"], 2),
                "ratio_vs_fls_rounds": [round(x, 2) for x in per_round],
                "found": seen[key],
            }
        out["variants"][label] = rows
    out["containers"] = out["variants"][NOW]
    out["start_up_s"] = round(start_up, 3)
    found = {json.dumps(v, sort_keys=True) for k, v in seen.items() if k != "rmmscan_small"}
    if len(found) != 1:
        out["mismatch"] = "the scans found different things: " + json.dumps(seen)
    return out


# --------------------------------------------------------------------------- profiling

# Where a sample goes: the first bucket one of whose markers is in any frame of its stack.
BUCKETS = [
    ("start-up: imports", ("_find_and_load",)),
    ("start-up: trust store", ("Inspector.trust", "TrustStore.")),
    ("container reads (TskImage.read)", ("TskImage.read", "Container.read")),
    ("PE files (Engine.judge past the sniff)", ("FileFacts", "Judge.judge", "inspect_stream")),
    ("sniff (open + first 2 bytes)", ("sniff",)),
    ("scan cache", ("rmmscan/state/cache.py",)),
    ("deliver (rows, sinks, stats)", ("Engine.deliver",)),
    ("walk: per entry (_entry, _streams, _listing)", ("_entry", "_streams", "_listing")),
    ("walk: folders (open_dir, iteration)", ("folders",)),
    ("identity, volumes, evidence id", ("identity", "volumes", "evidence_id")),
    ("per-file glue (ImageScan._visit, Engine.judge)", ("_visit", "Engine.judge")),
]


def profile(argv: list[str], tag: str) -> dict:
    """py-spy over one scan: a flame graph, and the top frames by own and total samples."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {"error": "py-spy not installed (.venv/bin/pip install py-spy)"}
    raw = WORK / f"profile-{tag}.txt"
    svg = WORK / f"profile-{tag}.svg"
    for fmt, target in (("raw", raw), ("flamegraph", svg)):
        subprocess.run([str(spy), "record", "--rate", "500", "--format", fmt, "-o", str(target),
                        "--", *argv], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)  # fmt: skip
    return {"flamegraph": str(svg.relative_to(ROOT)), **collapse(raw, BUCKETS)}


# --------------------------------------------------------------------------- listing only

# The walkers of --walk and --reader: each lists every file (and named stream) of the image and
# reads its first two bytes, and prints "files, MZ count, seconds" (from its imports done to
# its last file: the walk's own time, without the interpreter's start-up).
WALK_PYTSK3 = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from rmmscan.sources.image.container import open_container
from rmmscan.sources.image.filesystem import FileSystemWalk
from rmmscan.sources.image.volumes import TskImage, volumes
class Tally:
    def count(self, what): pass
    def problem(self, path, kind, message): print("problem", path, message, file=sys.stderr)
start = time.perf_counter()
container = open_container(sys.argv[1])
_, found = volumes(TskImage(container))
files = mz = 0
for volume in found:
    for folder, batch in FileSystemWalk(volume, "C:\\", Tally()).folders():
        for candidate in batch:
            files += 1
            listing, stream = candidate.sniff()
            if stream is not None:
                mz += 1
                stream.close()
print(files, mz, time.perf_counter() - start)
"""

WALK_DFVFS = r"""
import sys, time
from dfvfs.lib import definitions
from dfvfs.path import factory
from dfvfs.resolver import resolver
start = time.perf_counter()
image, fs_type = sys.argv[1], sys.argv[2]
path = factory.Factory.NewPathSpec(definitions.TYPE_INDICATOR_OS, location=image)
if image.lower().endswith(".e01"):
    path = factory.Factory.NewPathSpec(definitions.TYPE_INDICATOR_EWF, parent=path)
else:
    path = factory.Factory.NewPathSpec(definitions.TYPE_INDICATOR_RAW, parent=path)
location = "\\" if fs_type == "NTFS" else "/"
root = factory.Factory.NewPathSpec(fs_type, location=location, parent=path)
entry = resolver.Resolver.OpenFileEntry(root)
files = mz = 0
stack = [entry]
while stack:
    entry = stack.pop()
    for sub in entry.sub_file_entries:
        if sub.name.startswith("$") and entry.IsRoot():
            continue
        if sub.IsDirectory():
            stack.append(sub)
            continue
        if not sub.IsFile():
            continue
        for stream in sub.data_streams:
            files += 1
            handle = sub.GetFileObject(data_stream_name=stream.name)
            if handle is not None and handle.read(2) == b"MZ":
                mz += 1
print(files, mz, time.perf_counter() - start)
"""


def walk_compare(
    python_dfvfs: str | None, variants: list[tuple[str, Path]], raw: Path, e01: Path, repeat: int
) -> dict:
    """rmmscan's walk (this interpreter; each variant's reader too) and, with
    ``python_dfvfs``, dfvfs's with both its NTFS back-ends: every file listed and its first
    two bytes read, the walkers alternating over ``repeat`` rounds."""
    walkers: list[tuple[str, list[str]]] = [
        (f"pytsk3@{label}", [PY, "-c", WALK_PYTSK3, "IMAGE", str(agent)])
        for label, agent in variants
    ]
    walkers.append(("pytsk3", [PY, "-c", WALK_PYTSK3, "IMAGE", str(ROOT / "agent")]))
    if python_dfvfs:
        walkers.append(("dfvfs", [python_dfvfs, "-c", WALK_DFVFS, "IMAGE", "NTFS"]))
        walkers.append(("dfvfs-tsk", [python_dfvfs, "-c", WALK_DFVFS, "IMAGE", "TSK"]))
    cases = [(f"{w}_{name}", [str(image) if a == "IMAGE" else a for a in argv])
             for w, argv in walkers for name, image in (("raw", raw), ("e01", e01))]  # fmt: skip
    runs: dict[str, list] = {key: [] for key, _ in cases}
    counts: dict[str, list[int]] = {}
    for rnd in range(repeat + 1):  # round 0: the warm-up, not counted
        order = cases[rnd % len(cases) :] + cases[: rnd % len(cases)]
        for key, argv in order:
            start = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, cwd=ROOT, check=False)
            wall = time.perf_counter() - start
            if proc.returncode:
                raise SystemExit(f"{key}: {proc.stderr.decode()[-3000:]}")
            files, mz, inner = proc.stdout.split()[-3:]
            if counts.setdefault(key, [int(files), int(mz)]) != [int(files), int(mz)]:
                raise SystemExit(f"{key}: round {rnd} counted {files} files, {mz} MZ")
            if rnd:
                runs[key].append({"wall": wall, "walk": float(inner)})
        print(f"walk round {rnd}/{repeat}", file=sys.stderr, flush=True)
    out = {}
    for key, rs in runs.items():
        files = counts[key][0]
        walk = statistics.median(r["walk"] for r in rs)
        out[key] = {
            "files": files,
            "mz": counts[key][1],
            "median_wall_s": round(statistics.median(r["wall"] for r in rs), 3),
            "median_walk_s": round(walk, 3),
            "min_walk_s": round(min(r["walk"] for r in rs), 3),
            "files_per_s": round(files / walk),
            "walks": [round(r["walk"], 3) for r in rs],
        }
    if len({tuple(c) for c in counts.values()}) != 1:
        out["mismatch"] = f"the walkers counted differently: {counts}"
    return out


# --------------------------------------------------------------------------- main


def machine() -> dict:
    def version(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return "missing"

    commit = version(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    dirty = version(["git", "-C", str(ROOT), "status", "--porcelain", "--", "agent"])
    return {
        "nproc": os.cpu_count(), "python": platform.python_version(),
        "platform": platform.platform(), "commit": commit,
        "agent_uncommitted": dirty.splitlines(),
        "fls": version(["fls", "-V"]), "rmmscan": version([RMMSCAN, "--version"]),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true", help="build the image again")
    parser.add_argument("--profile", action="store_true", help="also py-spy one scan of each")
    parser.add_argument(
        "--walk", metavar="PYTHON", help="only the listing comparison; PYTHON has dfvfs installed"
    )
    parser.add_argument(
        "--reader",
        action="store_true",
        help="only rmmscan's walk (listing + two bytes), each --variant's too",
    )
    parser.add_argument("--label", default="", help="a name for this run in the results")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=COMMIT",
        help="also measure the image reader as it is at COMMIT, same run",
    )
    parser.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="LABEL=COMMIT",
        help="also measure all of agent/ as it is at COMMIT, same run",
    )
    parser.add_argument("--containers", default="raw,e01", help="raw, e01 or both (raw,e01)")
    parser.add_argument(
        "--no-one-process",
        action="store_true",
        help=f"leave out the scans with -j 1 (results label '{ONE_PROCESS}')",
    )
    parser.add_argument("--no-save", action="store_true", help="print, do not write the JSON")
    opts = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    raw, e01, image = build_image(opts.files, opts.seed, opts.rebuild)
    small = build_small(opts.rebuild)
    record: dict = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "label": opts.label,
        "load_average": {"start": [round(x, 2) for x in os.getloadavg()]},
        "machine": machine(),
        "settings": {
            "files": opts.files,
            "seed": opts.seed,
            "repeat": opts.repeat,
            "containers": opts.containers,
        },
        "image": image,
    }
    variants = [(label, variant_tree(commit))
                for label, _, commit in (v.partition("=") for v in opts.variant)]  # fmt: skip
    variants += [(label, variant_tree(commit, whole=True))
                 for label, _, commit in (v.partition("=") for v in opts.agent)]  # fmt: skip
    record["variants"] = dict(v.partition("=")[::2] for v in opts.variant)
    record["agents"] = dict(v.partition("=")[::2] for v in opts.agent)
    if opts.walk or opts.reader:
        record["walk"] = walk_compare(opts.walk, variants, raw, e01, opts.repeat)
        for key, value in record["walk"].items():
            if key == "mismatch":
                print(value, file=sys.stderr)
                continue
            print(
                f"{key:20} {value['files']:>7} files {value['mz']:>5} MZ  walk "
                f"{value['median_walk_s']:7.3f} s (min {value['min_walk_s']:.3f})  "
                f"{value['files_per_s']:>7} files/s  process {value['median_wall_s']:.3f} s"
            )
    else:
        state = WORK / "state"
        shutil.rmtree(state, ignore_errors=True)
        containers = tuple(opts.containers.split(","))
        labels = [label for label, _ in variants]
        if not opts.no_one_process:
            labels.append(ONE_PROCESS)
        cmds = commands(raw, e01, small, state, variants, containers, tuple(labels))
        record["commands"] = {k: " ".join(argv) for k, (argv, _env) in cmds.items()}
        runs, seen = measure(cmds, opts.repeat)
        record["runs"] = runs
        record["results"] = results(runs, seen, image["files"], labels, containers)
        if opts.profile:
            record["profile"] = {name: profile(cmds[f"rmmscan_{name}"][0], name)
                                 for name in containers}  # fmt: skip
        for label, rows in record["results"]["variants"].items():
            for name, c in rows.items():
                print(
                    f"{label:>12} {name:4} {c['files_walked']:>6} files  {c['wall_s']:6.2f} s "
                    f"{c['files_per_s']:>6} files/s "
                    f"(target {c['target_files_per_s']:,}: {'met' if c['met'] else 'NOT met'})  "
                    f"fls {c['fls_files_per_s']:>6} files/s  ratio {c['ratio_vs_fls']:.2f} "
                    f"(rounds {c['ratio_vs_fls_rounds']}); past start-up "
                    f"{c['files_per_s_past_start_up']} files/s"
                )
        print(f"start-up (the tests' 19-file image): {record['results']['start_up_s']:.2f} s")
        if "mismatch" in record["results"]:
            print(record["results"]["mismatch"], file=sys.stderr)
    record["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    if opts.no_save:
        return
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    history["runs"].append(record)
    RESULTS.write_text(json.dumps(history, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
