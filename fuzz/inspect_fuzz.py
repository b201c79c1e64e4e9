"""Atheris harness over inspection: inspect_stream, version_info, verify, signature_rows.

    .venv/bin/python fuzz/inspect_fuzz.py [libFuzzer flags] CORPUS_DIR   fuzz (see fuzz/run)
    .venv/bin/python fuzz/inspect_fuzz.py --seed DIR      write the seed corpus into DIR
    .venv/bin/python fuzz/inspect_fuzz.py --replay PATH... run every file once, no atheris

An exception escaping inspection does not end the campaign: the harness saves the input
as fuzz/crashes/crash-<signature>.bin with its traceback beside it (.txt), one file per
distinct signature (exception type and the innermost rmmscan frames), and goes on; the
campaign then finds every distinct crash, not just the first. Errors that inspection
caught itself (Inspection.errors, anomaly internal_error) are saved the same way as
internal-<signature>.bin: not crashes, but unexpected exceptions the lead wants to see.
Hangs and memory blow-ups end the process (libFuzzer's -timeout and -rss_limit_mb) and
fuzz/run restarts it.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
TEST_ROOT = ROOT / "samples" / "pki" / "test-root.pem"
MAX_SEED = 256 * 1024  # larger crafted files are tested by the suite, not mutated here

REPLAY = "--replay" in sys.argv[1:2] or "--seed" in sys.argv[1:2]
if not REPLAY:
    import atheris

    with atheris.instrument_imports(include=["rmmscan.inspect", "asn1crypto", "signify"]):
        # inspect_stream and verify import these lazily: import them here to instrument them.
        import rmmscan.inspect.authenticode
        import rmmscan.inspect.trust
        import rmmscan.inspect.verify  # noqa: F401
        from rmmscan.inspect import Inspector, inspect_stream, version_info
        from rmmscan.rows.build import signature_rows
else:
    from rmmscan.inspect import Inspector, inspect_stream, version_info
    from rmmscan.rows.build import signature_rows

import mutate  # noqa: E402  (tests/mutate.py)

# System roots stay out: loading them costs seconds and adds nothing to the parsing paths.
INSPECTOR = Inspector([TEST_ROOT], system_roots=False)
from findings import CRASHES, Findings, replay, write_seeds  # noqa: E402  (fuzz/findings.py)

FINDINGS = Findings('', ("rmmscan", "asn1crypto", "signify"))


def check_inspection(data: bytes):
    """The properties every input must have; raises AssertionError or the escaped exception.

    Returns the inspection (None for a non-PE), whose errors the caller looks at.
    """
    stream = io.BytesIO(data)
    inspection = inspect_stream(stream)
    if not inspection.is_pe:
        assert inspection.not_pe_reason, "a non-PE without a reason"
        return None
    assert isinstance(version_info(stream, len(data)), dict)
    verdicts = INSPECTOR.verify(stream, inspection)
    assert len(verdicts) == len(inspection.signatures), "a signature without a verdict"
    rows = signature_rows(inspection)
    assert len(rows) == max(1, len(inspection.signatures)), "rows and signatures differ"
    return inspection


def test_one_input(data: bytes) -> None:
    try:
        inspection = check_inspection(data)
    except Exception as exc:  # every escape is a finding; the campaign goes on
        FINDINGS.save("crash", FINDINGS.signature(exc), data, traceback.format_exc())
        return
    for error in inspection.errors if inspection is not None else ():
        # "verification of signature 11: KeyError: ..." and "... 0: ..." are one finding.
        FINDINGS.save("internal", re.sub(r"\d+", "N", error)[:200], data, error)
    promise = _expected.pop(hashlib.sha1(data).digest(), None)
    if promise is not None:
        expected, kind, touched, parent = promise
        got = primary_signer(inspection)
        if got != expected:
            parent_data = _parents.get(parent)
            if parent_data is not None:
                CRASHES.mkdir(parents=True, exist_ok=True)
                (CRASHES / f"parent-{parent[:12]}.bin").write_bytes(parent_data)
            FINDINGS.save(
                "lost-signer",
                f"{kind}: {expected[0]!r} -> {got and got[0]!r}",
                data,
                f"the mutation ({kind}, touched {touched}) spared the primary signature of "
                f"{parent}, whose signer {expected} became {got}\n",
            )


def primary_signer(inspection) -> tuple[str, str] | None:
    if inspection is None or not inspection.signatures:
        return None
    signer = inspection.signatures[0].signer
    return (signer.cn, signer.sha1) if signer is not None else None


def seeds() -> list[bytes]:
    """samples/pe/* and the crafted attack files small enough to mutate."""
    found = [p.read_bytes() for p in sorted((ROOT / "samples" / "pe").iterdir())]
    try:
        import crafted

        found.extend(blob for _, blob in crafted.fuzz_seeds() if len(blob) <= MAX_SEED)
    except Exception as exc:  # the crafted builders are optional seeds, not the harness
        print(f"crafted seeds unavailable: {exc!r}", file=sys.stderr)
    return found


_seed_cache: dict[bytes, mutate.Seed] = {}
# A mutant's SHA-1 -> (the signer it must report, the mutation, what it touched, its parent).
_expected: dict[bytes, tuple] = {}
_parents: dict[str, bytes] = {}  # the latest parents, to save beside a lost signer
_donor_trees: list = []
_donor_blobs: list = []


def _donors() -> None:
    for blob in seeds():
        seed = mutate.Seed.of(blob)
        if seed.tree is not None:
            _donor_trees.append(seed.tree)
            _donor_blobs.extend(e.blob for e in seed.layout.entries)


def custom_mutator(data: bytes, max_size: int, rng_seed: int) -> bytes:
    """Structured mutations of tests/mutate.py, interleaved with libFuzzer's own."""
    rng = random.Random(rng_seed)
    if rng.random() < 0.3:
        return atheris.Mutate(data, max_size)
    key = hashlib.sha1(data).digest()
    seed = _seed_cache.get(key)
    if seed is None:
        if len(_seed_cache) > 256:
            _seed_cache.clear()
        seed = _seed_cache[key] = mutate.Seed.of(data)
    if seed.layout is None:
        return atheris.Mutate(data, max_size)
    try:
        mutant = mutate.mutate(rng, seed, _donor_trees, _donor_blobs)
    except Exception:  # a mutator bug must not stop the campaign
        return atheris.Mutate(data, max_size)
    out = mutant.data[:max_size]
    if mutant.primary_intact and len(out) == len(mutant.data):
        # The mutation spared the primary signature: the mutant must report the signer the
        # parent reports (test_one_input checks it when libFuzzer runs the mutant).
        try:
            expected = primary_signer(inspect_stream(io.BytesIO(data)))
        except Exception:
            expected = None
        if expected is not None:
            if len(_expected) > 4096:
                _expected.clear()
            parent = hashlib.sha1(data).hexdigest()
            if len(_parents) > 64:
                _parents.clear()
            _parents[parent] = data
            _expected[hashlib.sha1(out).digest()] = (expected, mutant.kind, mutant.touched, parent)
    return out


def main() -> None:
    if sys.argv[1:2] == ["--seed"]:
        write_seeds(Path(sys.argv[2]), seeds())
        return
    if sys.argv[1:2] == ["--replay"]:
        replay(sys.argv[2:], test_one_input, FINDINGS)
        return
    _donors()
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
