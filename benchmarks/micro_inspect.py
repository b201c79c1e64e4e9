"""Numbers benchmarks/README.md and docstrings quote, reproducible in a minute: the cost of
reading one file's signatures with rmmscan's reader (certificate cache warm) against a plain
asn1crypto walk of the same SignedData (every certificate parsed, the signer found, nested
signatures followed), of a timestamp's genTime read both ways, of a file's version information
read by versioninfo.py and by pefile, and of building the trust context in a fresh process
without and with its saved root names.

    .venv/bin/python benchmarks/micro_inspect.py
"""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PE_DIR = ROOT / "samples" / "pe"
TEST_ROOT = ROOT / "samples" / "pki" / "test-root.pem"
REAL = ROOT / "tests" / ".cache" / "realworld"

BUILD = """
import sys, time
from pathlib import Path
from rmmscan.inspect import trust
t = time.perf_counter()
trust.build([Path(sys.argv[1])], names_file=Path(sys.argv[2]))
print(time.perf_counter() - t)
"""


def per_call(fn, repeat: int = 7, number: int = 50) -> float:
    """Median seconds per call over `repeat` batches of `number` calls."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def _asn1crypto_walk(blob: bytes) -> int:
    """The baseline: what asn1crypto alone costs to name every signer of one table entry."""
    import hashlib

    from asn1crypto import cms

    found = 0
    todo = [cms.ContentInfo.load(blob)]
    while todo:
        signed = todo.pop()["content"]
        certs = [c.chosen for c in signed["certificates"] or []]
        for cert in certs:
            hashlib.sha1(cert.dump()).hexdigest()
            cert.subject.native  # noqa: B018
        signer = signed["signer_infos"][0]
        serial = signer["sid"].chosen["serial_number"].native
        found += any(c.serial_number == serial for c in certs)
        for attr in signer["unsigned_attrs"] or []:
            if attr["type"].native == "microsoft_nested_signature":
                todo.extend(attr["values"])
    return found


def signatures_table() -> None:
    from rmmscan.inspect import inspect_stream, pe
    from rmmscan.inspect.certtable import read_table

    files = [PE_DIR / n for n in ("dwsnet-srl.exe", "benign.exe", "nested-sha256-sha1.exe")]
    files += sorted(REAL.glob("msvc-runtime-*/**/*.dll"))[:3]
    print("| file | rmmscan | asn1crypto walk | ratio |\n|---|---:|---:|---:|")
    for path in files:
        data = path.read_bytes()
        stream = io.BytesIO(data)
        header = pe.parse_header(stream, len(data))
        blob = bytes(read_table(stream, len(data), *header.cert_table, 0)[0][0].blob)
        ours = per_call(lambda d=data: inspect_stream(io.BytesIO(d), len(d)))
        plain = per_call(lambda b=blob: _asn1crypto_walk(b))
        print(f"| {path.name} | {ours * 1e6:.0f} µs | {plain * 1e6:.0f} µs | {ours / plain:.2f} |")


def gen_time_table() -> None:
    from asn1crypto import core

    from rmmscan.inspect import authenticode

    contents = b"20250303093000.123Z"
    ours = per_call(lambda: authenticode.generalized_utc(contents), number=2000)
    theirs = per_call(
        lambda: authenticode.utc(core.GeneralizedTime(contents=contents).native), number=2000
    )
    print("\n| a timestamp's genTime | generalized_utc | asn1crypto | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| {contents.decode()} | {ours * 1e6:.1f} µs | {theirs * 1e6:.1f} µs "
          f"| {ours / theirs:.2f} |")  # fmt: skip


def version_table() -> None:
    """versioninfo.py's bounded reader against pefile's parse of the resource directory
    (what it replaced, and the tests' oracle), on the real-world Microsoft DLLs."""
    import pefile

    from rmmscan.inspect import version_info

    resource = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]

    def with_pefile(data: bytes) -> None:
        image = pefile.PE(data=data, fast_load=True)  # never close(): it runs gc.collect()
        image.parse_data_directories(directories=[resource])

    print("\n| version information | versioninfo.py | pefile (resources) | ratio |")
    print("|---|---:|---:|---:|")
    for path in sorted(REAL.glob("msvc-runtime-*/**/*.dll"))[:4]:
        data = path.read_bytes()
        size = len(data)
        with path.open("rb") as stream:
            ours = per_call(lambda s=stream, n=size: version_info(s, n))
        theirs = per_call(lambda d=data: with_pefile(d), number=10)
        print(f"| {path.name} | {ours * 1e6:.0f} µs | {theirs * 1e3:.2f} ms "
              f"| {ours / theirs:.3f} |")  # fmt: skip


def trust_table() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        names = Path(tmp) / "trust-names.json"
        runs = {"no saved names": [], "saved names": []}
        for _ in range(5):
            for label in runs:
                if label == "no saved names":
                    names.unlink(missing_ok=True)
                out = subprocess.run(
                    [sys.executable, "-c", BUILD, str(TEST_ROOT), str(names)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                runs[label].append(float(out.stdout))
    print("\n| trust context build, fresh process (median of 5) | seconds |\n|---|---:|")
    for label, values in runs.items():
        print(f"| {label} | {statistics.median(values):.3f} |")


if __name__ == "__main__":
    signatures_table()
    gen_time_table()
    version_table()
    trust_table()
