"""Benchmark of the inspection layer (rmmscan.inspect) against same-run baselines.

The machine this runs on is shared and noisy, so no number stands alone: every measurement
is a median after warm-up, taken interleaved with a baseline doing comparable work in the
same run, and reported with the ratio between the two. See benchmarks/README.md.

    .venv/bin/python benchmarks/bench_inspect.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rmmscan.inspect import Inspector, certificates, inspect_stream
from rmmscan.inspect import _signify as sg  # signify, with the oscrypto workaround applied

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
SAMPLES = WORK / "samples" / "pe"  # a snapshot: samples/ may be regenerated while we run
PKI = WORK / "samples" / "pki"
TEST_ROOT = PKI / "test-root.pem"
RESULTS = ROOT / "benchmarks" / "results-inspect.json"
CACHE = ROOT / "tests" / ".cache"
MAX_REAL_FILES = 16
BIG_SIZE = 1 << 30
BIG_FILE = WORK / "big-signed.exe"
TSA_TIME = 1741000000  # 2025-03-03, inside the test PKI's validity

US, MS, MIB = 1e-6, 1e-3, 1024 * 1024


@dataclass(frozen=True)
class Mode:
    repeats: int  # timed batches per file, for the µs/ms measurements
    verify_repeats: int
    min_batch: float  # seconds: a batch repeats the call until it lasts at least this long
    runs: int  # fresh subprocesses for one-time costs and the 1 GiB file


FULL = Mode(repeats=15, verify_repeats=9, min_batch=0.01, runs=5)
QUICK = Mode(repeats=5, verify_repeats=3, min_batch=0.003, runs=2)
WARMUP = 3


@dataclass
class Row:
    file: str
    ours: float
    base: float
    target: float | None
    unit: str = "s"
    note: str = ""
    spread: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.base if self.base else float("nan")

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ours <= self.target


# --------------------------------------------------------------------------- timing


def _batch(fn: Callable, number: int, setup: Callable | None) -> float:
    """Seconds per call over one batch; setup's values are made before the clock starts."""
    args = [setup() for _ in range(number)] if setup else None
    gc.collect()
    start = time.perf_counter()
    if args is None:
        for _ in range(number):
            fn()
    else:
        for arg in args:
            fn(arg)
    return (time.perf_counter() - start) / number


def _calibrate(fn: Callable, setup: Callable | None, min_batch: float) -> int:
    """Calls per batch so that one batch outlasts the timer's and the scheduler's noise."""
    number = 1
    while True:
        per_call = _batch(fn, number, setup)
        if per_call * number >= min_batch or number >= 1 << 20:
            return number
        number = max(number * 2, int(min_batch / max(per_call, 1e-9) * 1.2))


def compare(
    ours: Callable,
    base: Callable,
    repeats: int,
    min_batch: float,
    ours_setup: Callable | None = None,
) -> tuple[float, float, dict[str, list[float]]]:
    """Medians of ours and base, their batches interleaved so that noise hits both alike."""
    for _ in range(WARMUP):
        _batch(ours, 1, ours_setup)
        _batch(base, 1, None)
    n_ours = _calibrate(ours, ours_setup, min_batch)
    n_base = _calibrate(base, None, min_batch)
    a, b = [], []
    for _ in range(repeats):
        a.append(_batch(ours, n_ours, ours_setup))
        b.append(_batch(base, n_base, None))
    spread = {"ours_min_max": [min(a), max(a)], "base_min_max": [min(b), max(b)]}
    return statistics.median(a), statistics.median(b), spread


# --------------------------------------------------------------------------- inputs


def real_world_files() -> tuple[list[Path], str]:
    """Microsoft-signed DLLs / EFI binaries fetched by the tests, when they are there."""
    found = sorted(
        {p for pat in ("*.dll", "*.efi*") for p in CACHE.glob(f"**/{pat}") if p.is_file()}
    )
    if not found:
        return [], f"no real-world files under {CACHE.relative_to(ROOT)} (skipped)"
    note = f"{len(found)} real-world files under {CACHE.relative_to(ROOT)}"
    if len(found) > MAX_REAL_FILES:
        note += f"; the first {MAX_REAL_FILES} by path are measured"
    return found[:MAX_REAL_FILES], note


def label(path: Path) -> str:
    try:
        return str(path.relative_to(CACHE))
    except ValueError:
        return path.name


def signed_samples() -> list[Path]:
    """Every PE sample with a certificate directory (valid, broken and nested alike)."""
    out = []
    for path in sorted(SAMPLES.iterdir()):
        with path.open("rb") as f:
            result = inspect_stream(f)
        if result.is_pe and result.header.cert_table != (0, 0):
            out.append(path)
    return out


def plain_text_file() -> Path:
    path = WORK / "plain.txt"
    if not path.exists():
        path.write_text("just some text, not a program\n" * 100, encoding="utf-8")
    return path


def snapshot_samples(source: Path, timeout: float = 1800, settle: float = 10) -> None:
    """Copy samples/pe and samples/pki into benchmarks/.work/ once they are complete.

    Another process may be (re)generating the samples: wait until every file the manifest
    lists exists and nothing changed for ``settle`` seconds, so no file vanishes mid-run.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            names = json.loads((source / "manifest.json").read_text("utf-8"))["files"]
            files = [source / "pe" / n for n in names]
            newest = max(p.stat().st_mtime for p in [*files, *(source / "pki").iterdir()])
            if time.time() - newest >= settle:
                break
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"samples incomplete in {source}; run samples/make_samples.py")
        print(f"waiting for complete samples in {source} ...", file=sys.stderr)
        time.sleep(30)
    shutil.rmtree(SAMPLES.parent, ignore_errors=True)
    SAMPLES.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, SAMPLES / path.name)
    shutil.copytree(source / "pki", PKI)


def test_root_store() -> sg.CertificateStore:
    return sg.CertificateStore(sg.Certificate.from_pems(TEST_ROOT.read_bytes()), trusted=True)


# --------------------------------------------------------------------------- 1. recognise

BARE_READ = 4096  # what any recogniser must read: the size and the first page


def bench_recognise(mode: Mode) -> list[Row]:
    """inspect_stream on files it must reject or that have no signature, vs bare reads."""
    rows = []
    for path in (SAMPLES / "not-a-pe.bin", plain_text_file(), SAMPLES / "unsigned.exe"):
        with path.open("rb") as f:

            def floor(f=f):
                f.seek(0, os.SEEK_END)
                f.seek(0)
                f.read(BARE_READ)

            ours, base, spread = compare(
                lambda f=f: inspect_stream(f), floor, mode.repeats, mode.min_batch
            )
            rows.append(Row(f"{path.name} (open file)", ours, base, 50 * US, spread=spread))

        def ours_open(path=path):
            with path.open("rb") as g:
                inspect_stream(g)

        def floor_open(path=path):
            with path.open("rb") as g:
                g.seek(0, os.SEEK_END)
                g.seek(0)
                g.read(BARE_READ)

        ours, base, spread = compare(ours_open, floor_open, mode.repeats, mode.min_batch)
        rows.append(Row(f"{path.name} (with open)", ours, base, 50 * US, spread=spread))
    return rows


# --------------------------------------------------------------------------- 2. extract


def signify_parse(f) -> tuple[int, str]:
    """signify's parse of the same columns: every signature, its signer, countersigner and
    certificates, each property read once (they are rebuilt on every access,
    docs/architecture.md §5).
    Returns the number of signatures read and the exception that stopped it, if any."""
    f.seek(0)
    count = 0
    try:
        for sig in sg.SignedPEFile(f).iter_embedded_signatures(include_nested=True):
            signer_info = sig.signer_info
            _ = signer_info.countersigner
            _ = sig.certificates
            count += 1
    # Garbage may raise even with ignore_parse_errors (docs/architecture.md §5).
    except Exception as exc:
        return count, type(exc).__name__
    return count, ""


def bench_extract(mode: Mode, files: list[Path], cold: bool) -> list[Row]:
    """inspect_stream on signed files vs signify's parse; cold = certificate cache emptied."""
    rows = []
    for path in files:
        with path.open("rb") as f:
            ours_count = len(inspect_stream(f).signatures)
            base_count, error = signify_parse(f)

            def ours(f=f):
                if cold:
                    certificates._cache.clear()
                inspect_stream(f)

            o, b, spread = compare(ours, lambda f=f: signify_parse(f), mode.repeats, mode.min_batch)
        notes = [f"signify raised {error}"] if error else []
        if base_count != ours_count:
            notes.append(f"signatures: rmmscan {ours_count}, signify {base_count}")
        target = None if cold else 1 * MS
        rows.append(Row(label(path), o, b, target, note="; ".join(notes), spread=spread))
    return rows


# --------------------------------------------------------------------------- 3. verify


def bench_verify(mode: Mode, files: list[Path]) -> list[Row]:
    """Inspector.verify (trust context reused) vs signify's explain_verify on the same file."""
    from signify.authenticode.cert_store import TRUSTED_CERTIFICATE_STORE  # after sg

    inspector = Inspector([TEST_ROOT])
    store = TRUSTED_CERTIFICATE_STORE | test_root_store()
    rows = []
    for path in files:
        with path.open("rb") as f:
            statuses = [v.status.value for v in inspector.verify(f, inspect_stream(f))]

            def base(f=f):
                f.seek(0)
                return sg.SignedPEFile(f).explain_verify(
                    trusted_certificate_store=store, multi_verify_mode="all"
                )

            base_result = base()[0].name
            o, b, spread = compare(
                lambda insp, f=f: inspector.verify(f, insp),
                base,
                mode.verify_repeats,
                mode.min_batch,
                ours_setup=lambda f=f: inspect_stream(f),
            )
        note = f"{','.join(statuses) or 'no signature'} / signify {base_result}"
        rows.append(Row(label(path), o, b, 30 * MS, note=note, spread=spread))
    return rows


FIRST_VERIFY_CHILD = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
f = open(sys.argv[1], "rb")
{work}
print(json.dumps(out))
"""
OURS_FIRST = dict(
    imports="from rmmscan.inspect import Inspector, inspect_stream\n"
    "import rmmscan.inspect.verify, rmmscan.inspect.trust",
    work="""ins = Inspector([Path(sys.argv[2])])
first = inspect_stream(f)
t2 = time.perf_counter(); ins.trust; t3 = time.perf_counter()
ins.verify(f, first); t4 = time.perf_counter()
ins.verify(f, inspect_stream(f)); t5 = time.perf_counter()
out = dict(imports=t1 - t0, build=t3 - t2, first=t4 - t2, second=t5 - t4)""",
)
BASE_FIRST = dict(
    imports="import rmmscan.inspect._signify\n"
    "from signify.authenticode.cert_store import TRUSTED_CERTIFICATE_STORE\n"
    "from signify.authenticode.signed_file.pe import SignedPEFile\n"
    "from signify.x509 import Certificate, CertificateStore",
    work="""t2 = time.perf_counter()
user = CertificateStore(Certificate.from_pems(Path(sys.argv[2]).read_bytes()), trusted=True)
store = TRUSTED_CERTIFICATE_STORE | user
list(store); t3 = time.perf_counter()
def verify():
    f.seek(0)
    SignedPEFile(f).explain_verify(trusted_certificate_store=store, multi_verify_mode="all")
verify(); t4 = time.perf_counter()
verify(); t5 = time.perf_counter()
out = dict(imports=t1 - t0, build=t3 - t2, first=t4 - t2, second=t5 - t4)""",
)


def _child(code: str, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_first_verify(mode: Mode, sample: Path) -> list[Row]:
    """The one-time costs, each run in a fresh process (alternating ours and signify's)."""
    ours_runs, base_runs = [], []
    args = (str(sample), str(TEST_ROOT))
    for _ in range(mode.runs):
        ours_runs.append(_child(FIRST_VERIFY_CHILD.format(**OURS_FIRST), *args))
        base_runs.append(_child(FIRST_VERIFY_CHILD.format(**BASE_FIRST), *args))

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    name = sample.name
    return [
        Row(f"trust context build ({name})", med(ours_runs, "build"), med(base_runs, "build"), None,
            note="signify: loading its trusted store"),
        Row(f"first verify incl. build ({name})", med(ours_runs, "first"), med(base_runs, "first"),
            None),
        Row(f"second verify, same process ({name})", med(ours_runs, "second"),
            med(base_runs, "second"), 30 * MS),
        Row("imports (rmmscan.inspect + verify vs signify)", med(ours_runs, "imports"),
            med(base_runs, "imports"), None),
    ]  # fmt: skip


# --------------------------------------------------------------------------- 4. 1 GiB file


def build_big_file() -> Path:
    """A signed PE whose overlay is a 1 GiB hole; built once and cached in benchmarks/.work/."""
    key = hashlib.sha256(
        b"".join((PKI / n).read_bytes() for n in ("test-root.pem", "contoso-chain.pem"))
    ).hexdigest()
    stamp = BIG_FILE.with_suffix(".key")
    if BIG_FILE.exists() and stamp.exists() and stamp.read_text() == key:
        return BIG_FILE
    unsigned, signed = WORK / "big-unsigned.exe", WORK / "big-signed.tmp"
    shutil.copyfile(SAMPLES / "unsigned.exe", unsigned)
    os.truncate(unsigned, BIG_SIZE)
    print(f"building {BIG_FILE.relative_to(ROOT)} (1 GiB, signed once) ...", file=sys.stderr)
    subprocess.run(
        ["osslsigncode", "sign", "-certs", str(PKI / "contoso-chain.pem"),
         "-key", str(PKI / "contoso.key"), "-h", "sha256",
         "-TSA-certs", str(PKI / "tsa-chain.pem"), "-TSA-key", str(PKI / "tsa.key"),
         "-TSA-time", str(TSA_TIME),
         "-in", str(unsigned), "-out", str(signed)],
        check=True, capture_output=True,
    )  # fmt: skip
    unsigned.unlink()
    if shutil.which("fallocate"):  # osslsigncode writes the zeros out: punch the hole again
        subprocess.run(["fallocate", "--dig-holes", str(signed)], check=False)
    signed.rename(BIG_FILE)
    stamp.write_text(key)
    return BIG_FILE


RSS_CHILD = """
import json, resource, sys, time
from pathlib import Path
import pefile
import rmmscan.inspect._signify
import rmmscan.inspect.trust, rmmscan.inspect.verify
from rmmscan.inspect import Inspector, hash_stream, inspect_stream, version_info
out = {}
if sys.argv[1] != "-":
    path = Path(sys.argv[1])
    start = time.perf_counter()
    with path.open("rb") as f:
        inspection = inspect_stream(f)
        t1 = time.perf_counter()
        verdicts = Inspector([Path(sys.argv[2])]).verify(f, inspection)
        t2 = time.perf_counter()
        hashes = hash_stream(f)
        t3 = time.perf_counter()
        info = version_info(f, inspection.size)
        t4 = time.perf_counter()
    out = dict(total=t4 - start, inspect=t1 - start, verify=t2 - t1, hash=t3 - t2,
               version_info=t4 - t3, statuses=[v.status.value for v in verdicts],
               hashed=hashes.size)
# VmHWM is this process's own peak; ru_maxrss would carry the forking parent's over exec.
try:
    with open("/proc/self/status") as status:
        hwm = [int(x.split()[1]) * 1024 for x in status if x.startswith("VmHWM:")]
except OSError:
    hwm = []
out["maxrss"] = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def _sha256sum(path: Path) -> float:
    """Seconds for coreutils' sha256sum (its own SHA-256 code, not OpenSSL's)."""
    start = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
    return time.perf_counter() - start


def _hashlib_sha256(path: Path) -> float:
    """Seconds for hashlib's SHA-256 (the OpenSSL code rmmscan's hashes use too)."""
    start = time.perf_counter()
    with path.open("rb") as f:
        hashlib.file_digest(f, "sha256")
    return time.perf_counter() - start


def bench_big(mode: Mode, big: Path, small: Path) -> tuple[list[Row], dict]:
    """Peak RSS of the full inspection of a 1 GiB file in fresh processes, and its time."""
    _hashlib_sha256(big)  # warm the page cache for both sides alike
    base, ours, small_runs, sha, sums = [], [], [], [], []
    for _ in range(mode.runs):
        base.append(_child(RSS_CHILD, "-"))
        ours.append(_child(RSS_CHILD, str(big), str(TEST_ROOT)))
        small_runs.append(_child(RSS_CHILD, str(small), str(TEST_ROOT)))
        sha.append(_hashlib_sha256(big))
        if shutil.which("sha256sum"):
            sums.append(_sha256sum(big))
    peak_base = statistics.median(r["maxrss"] for r in base)
    peak_big = statistics.median(r["maxrss"] for r in ours)
    peak_small = statistics.median(r["maxrss"] for r in small_runs)
    t_ours = statistics.median(r["total"] for r in ours)
    t_sha = statistics.median(sha)
    t_sum = statistics.median(sums) if sums else float("nan")
    steps = {k: statistics.median(r[k] for r in ours)
             for k in ("inspect", "verify", "hash", "version_info")}  # fmt: skip
    rows = [
        Row("1 GiB sparse signed PE: peak RSS − imports-only peak", peak_big - peak_base,
            peak_base, 64 * MIB, unit="B",
            note=f"peak {peak_big / MIB:.1f} MiB vs imports-only {peak_base / MIB:.1f} MiB"),
        Row(f"{small.name}: peak RSS − imports-only peak", peak_small - peak_base, peak_base,
            None, unit="B", note="same work on a small file: the size-independent part"),
        Row("1 GiB sparse signed PE: inspect+verify+hash+version_info time", t_ours, t_sha, None,
            note="baseline: hashlib SHA-256 of the file; steps "
            + ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())),
        Row("1 GiB sparse signed PE: same, against coreutils sha256sum", t_ours, t_sum, None),
    ]  # fmt: skip
    detail = {
        "file": str(big.relative_to(ROOT)),
        "size": big.stat().st_size,
        "allocated_bytes": big.stat().st_blocks * 512,
        "statuses": ours[0]["statuses"],
        "hashed_bytes": ours[0]["hashed"],
        "steps_median_s": steps,
        "runs": {
            "imports_only": base,
            "big": ours,
            "small": small_runs,
            "hashlib_sha256_s": sha,
            "sha256sum_s": sums,
        },
    }
    return rows, detail


# --------------------------------------------------------------------------- output


def fmt(value: float, unit: str) -> str:
    if unit == "B":
        return f"{value / MIB:.1f} MiB"
    if value < 1 * MS:
        return f"{value / US:.1f} µs"
    if value < 1:
        return f"{value / MS:.2f} ms"
    return f"{value:.2f} s"


def table(title: str, rows: list[Row], baseline: str) -> str:
    lines = [
        f"### {title}",
        "",
        f"baseline: {baseline}",
        "",
        "| file | rmmscan median | baseline median | ratio | target | met? |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        target = "—" if r.target is None else f"≤ {fmt(r.target, r.unit)}"
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        name = f"{r.file} ({r.note})" if r.note else r.file
        lines.append(
            f"| {name} | {fmt(r.ours, r.unit)} | {fmt(r.base, r.unit)} | {r.ratio:.2f} "
            f"| {target} | {met} |"
        )
    return "\n".join(lines) + "\n"


def summary(rows: list[Row]) -> str:
    targeted = [r for r in rows if r.target is not None]
    missed = [r for r in targeted if not r.met]
    ratios = [r.ratio for r in rows if r.base]
    text = f"{len(targeted) - len(missed)}/{len(targeted)} within target"
    if ratios:
        text += f"; median ratio {statistics.median(ratios):.2f}"
    return text + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--no-big", action="store_true", help="skip the 1 GiB file")
    parser.add_argument(
        "--samples", type=Path, default=ROOT / "samples", help="folder with pe/, pki/, manifest"
    )
    opts = parser.parse_args()
    mode = QUICK if opts.quick else FULL
    WORK.mkdir(parents=True, exist_ok=True)
    snapshot_samples(opts.samples)

    real, real_note = real_world_files()
    signed = signed_samples() + real
    sections: list[tuple[str, str, list[Row]]] = []
    extra: dict = {}
    print(f"# rmmscan inspect benchmark ({'quick' if opts.quick else 'full'})\n")
    print(f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; {real_note}\n")  # fmt: skip

    steps = [
        ("1. Recognise a non-PE / unsigned PE: inspect_stream",
         "bare reads (seek to the end for the size, read the first 4 KiB)",
         lambda: bench_recognise(mode)),
        ("2. Extract signature columns: inspect_stream (certificate cache warm)",
         "signify parse: iter_embedded_signatures + signer_info, countersigner, certificates",
         lambda: bench_extract(mode, signed, cold=False)),
        ("2b. Extract, certificate cache emptied before every call (first sight of a signer)",
         "signify parse, as in 2", lambda: bench_extract(mode, signed, cold=True)),
        ("3. Verify: Inspector.verify on a fresh Inspection, trust context reused",
         "signify SignedPEFile.explain_verify(TRUSTED_CERTIFICATE_STORE | test root, mode all)",
         lambda: bench_verify(mode, signed)),
        ("3b. One-time costs, fresh process per run (medians of runs)",
         "signify: same steps with its own store", lambda: bench_first_verify(
             mode, SAMPLES / "benign.exe")),
    ]  # fmt: skip
    for title, baseline, run in steps:
        print(f"running {title.split(':')[0]} ...", file=sys.stderr, flush=True)
        rows = run()
        sections.append((title, baseline, rows))
        print(table(title, rows, baseline))
        print(summary(rows), flush=True)

    if not opts.no_big:
        print("running 4. 1 GiB file ...", file=sys.stderr, flush=True)
        big = build_big_file()
        rows, extra["big_file"] = bench_big(mode, big, SAMPLES / "benign.exe")
        title = "4. 1 GiB sparse signed PE, fresh process per run"
        baseline = "RSS: a process that only imports rmmscan and signify; time: SHA-256 of the file"
        sections.append((title, baseline, rows))
        print(table(title, rows, baseline))
        print(summary(rows), flush=True)

    doc = {
        "mode": "quick" if opts.quick else "full",
        "settings": asdict(mode) | {"warmup": WARMUP},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "real_world": real_note,
        "sections": [
            {
                "title": title,
                "baseline": baseline,
                "rows": [asdict(r) | {"ratio": r.ratio, "met": r.met} for r in rows],
            }
            for title, baseline, rows in sections
        ],
        **extra,
    }
    RESULTS.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
