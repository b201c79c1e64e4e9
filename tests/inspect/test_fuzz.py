"""Mutated signed samples: no exception escapes inspection, every signature gets a row and a
verdict, damage elsewhere never hides an intact primary signer, and every input is inspected
within bounded memory and time.

Two mutators: a byte-level one (flips, truncation, the certificate directory's size and
offset, bytes the DER reader treats specially), and the structured one of tests/mutate.py
(the PKCS#7 as a DER tree, PE headers, WIN_CERTIFICATE entries, the version resource),
which knows which bytes each mutation touched.
"""

from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc

import crafted
import mutate
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st

from rmmscan.inspect import Inspector, Status, inspect_stream, pe, version_info
from rmmscan.rows.build import signature_rows

from conftest import PE_DIR, SAMPLES, TEST_ROOT

SEEDS = [
    "dwsnet-ou.exe",
    "nested-sha256-sha1.exe",
    "nested-depth3.exe",
    "pkcs9-countersigned.exe",
    "two-entries.exe",
    "dll32.dll",
]
_DATA = {name: (PE_DIR / name).read_bytes() for name in SEEDS}
INSPECTOR = Inspector([TEST_ROOT])
MEMORY_BOUND = 64 * 1024 * 1024
TIME_BOUND = 10.0  # seconds per input: a hang detector, far above the milliseconds it takes


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    header = pe.parse_header(io.BytesIO(data), len(data))
    offset, size = header.cert_table
    return {
        "headers": (0, header.headers_size),
        "table": (offset, offset + size),
        "cert_dir": (header.cert_dir_offset, header.cert_dir_offset + 8),
    }


@st.composite
def mutants(draw) -> bytes:
    data = bytearray(_DATA[draw(st.sampled_from(SEEDS))])
    spans = regions(bytes(data))
    kind = draw(st.sampled_from(["flip", "truncate", "size", "splice"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "size":
        at = spans["cert_dir"][0] + draw(st.sampled_from([0, 4]))
        value = draw(st.sampled_from([0, 1, 7, 0x7FFFFFF0, 0xFFFFFFFF, len(data), len(data) - 9]))
        struct.pack_into("<I", data, at, value)
        return bytes(data)
    lo, hi = spans[draw(st.sampled_from(["headers", "table"]))]
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(lo, max(lo, hi - 1)))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at] = draw(st.sampled_from([0x00, 0x30, 0x80, 0x82, 0x84, 0xFF]))
    return bytes(data)


def inspect_all(data: bytes):
    """Everything a scan does to a file's content; returns (inspection, verdicts, rows)."""
    stream = io.BytesIO(data)
    inspection = inspect_stream(stream)
    if not inspection.is_pe:
        assert inspection.not_pe_reason
        return inspection, [], []
    assert isinstance(version_info(stream, len(data)), dict)
    verdicts = INSPECTOR.verify(stream, inspection)
    rows = signature_rows(inspection)
    assert len(verdicts) == len(inspection.signatures)
    assert len(rows) == max(1, len(inspection.signatures))
    for verdict in verdicts:
        assert isinstance(verdict.status, Status)
        assert verdict.status is not Status.NOT_CHECKED
        assert verdict.is_trusted == (verdict.status is Status.OK)
    return inspection, verdicts, rows


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    verbosity=Verbosity.quiet,
)
@given(mutants())
def test_mutated_samples_always_get_a_verdict(data):
    inspect_all(data)


# --------------------------------------------------------------------------------------------
# Structured mutations


def _structured_seeds() -> list[tuple[str, bytes, tuple[str, str] | None]]:
    """(name, bytes, the primary signer's (cn, sha1) when it is intact) for every sample
    that is a PE, and the crafted files small enough to mutate quickly.
    """
    files = json.loads((SAMPLES / "manifest.json").read_text("utf-8"))["files"]
    seeds = []
    for name, entry in sorted(files.items()):
        data = (PE_DIR / name).read_bytes()
        if not entry["is_pe"] or mutate.Seed.of(data).layout is None:
            continue
        first = entry["signatures"][0] if entry["signatures"] else {}
        signer = first.get("Signer")
        expected = (signer, first["SignerHash"]) if signer else None
        seeds.append((name, data, expected))
    for i, (base, data) in enumerate(crafted.fuzz_seeds()):
        signer = files[base]["signatures"][0]["Signer"]
        expected = (signer, crafted.thumbprint(crafted.signer_der(data)))
        seeds.append((f"crafted-{i}-{base}", data, expected))
    return seeds


STRUCTURED = _structured_seeds()
PREPARED = [mutate.Seed.of(data) for _, data, _ in STRUCTURED]
DONOR_TREES = [seed.tree for seed in PREPARED if seed.tree is not None]
DONOR_BLOBS = [e.blob for seed in PREPARED if seed.layout for e in seed.layout.entries]


def test_structured_seeds_cover_the_cases():
    """The seeds hold nested signatures, version resources and an intact signer to keep."""
    assert len(STRUCTURED) >= 30
    assert sum(1 for seed in PREPARED if seed.tree and mutate.nested_values(seed.tree)) >= 4
    assert sum(1 for _, data, _ in STRUCTURED if mutate.version_nodes(data)) >= 2
    assert sum(1 for *_, expected in STRUCTURED if expected) >= 25


def check_mutant(index: int, mutant: mutate.Mutant, intact: bool) -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        inspection, _, rows = inspect_all(mutant.data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - started
    assert peak < MEMORY_BOUND, f"{mutant.kind}: {peak / 2**20:.1f} MiB"
    assert elapsed < TIME_BOUND, f"{mutant.kind}: {elapsed:.1f} s"
    expected = STRUCTURED[index][2]
    if intact and expected is not None:
        # The mutation spared the primary's bytes: its signer is still reported, as stored.
        assert inspection.is_pe, (mutant.kind, inspection.not_pe_reason)
        assert inspection.signatures, mutant.kind
        assert (rows[0]["Signer"], rows[0]["SignerHash"]) == expected, (
            mutant.kind,
            mutant.touched,
            inspection.errors,
            inspection.signatures[0].problems,
        )


KINDS = sorted(mutate.MUTATORS)


@settings(
    max_examples=900,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    verbosity=Verbosity.quiet,
)
@given(
    index=st.integers(0, len(STRUCTURED) - 1),
    kind=st.sampled_from(KINDS),
    rng=st.randoms(use_true_random=False),
)
def test_structured_mutations(index, kind, rng):
    mutant = mutate.mutate(rng, PREPARED[index], DONOR_TREES, DONOR_BLOBS, kinds=[kind])
    check_mutant(index, mutant, mutant.primary_intact)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    verbosity=Verbosity.quiet,
)
@given(
    index=st.integers(0, len(STRUCTURED) - 1),
    depth=st.integers(2, 4),
    rng=st.randoms(use_true_random=False),
)
def test_stacked_structured_mutations(index, depth, rng):
    """Several mutations in a row, each aimed at the tree the previous one left."""
    seed, intact = PREPARED[index], True
    for _ in range(depth):
        mutant = mutate.mutate(rng, seed, DONOR_TREES, DONOR_BLOBS)
        intact = intact and mutant.primary_intact
        seed = mutate.Seed.of(mutant.data)
    check_mutant(index, mutant, intact)


def test_the_mutator_spares_and_touches():
    """The bookkeeping the signer property relies on: free zones, protected ranges."""
    seed = PREPARED[[name for name, *_ in STRUCTURED].index("nested-sha256-sha1.exe")]
    inner = mutate.nested_values(seed.tree)[0]
    signer = mutate.signer_certificate(seed.tree)
    assert seed.spares(inner.start, inner.end)  # a nested signature: a free zone
    assert not seed.spares(signer.start, signer.end)  # the signer's certificate
    assert not seed.spares(signer.content + 10, signer.content + 11)
    assert not seed.spares(seed.layout.cert_dir, seed.layout.cert_dir + 4)
    assert seed.spares(0x40, 0x41)  # the DOS stub
    # An untouched tree encodes back to the bytes it was read from.
    blob, _ = mutate.primary_blob(seed.data)
    assert mutate.encode(seed.tree) == blob
