"""Mutated signed samples: no exception escapes inspection, every signature gets a verdict."""

from __future__ import annotations

import io
import struct

from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st

from rmmscan.inspect import Inspector, Status, inspect_stream, pe, version_info

from conftest import PE_DIR, TEST_ROOT

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


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    verbosity=Verbosity.quiet,
)
@given(mutants())
def test_mutated_samples_always_get_a_verdict(data):
    stream = io.BytesIO(data)
    inspection = inspect_stream(stream)
    if not inspection.is_pe:
        assert inspection.not_pe_reason
        return
    assert isinstance(version_info(stream, len(data)), dict)
    verdicts = INSPECTOR.verify(stream, inspection)
    assert len(verdicts) == len(inspection.signatures)
    for verdict in verdicts:
        assert isinstance(verdict.status, Status)
        assert verdict.status is not Status.NOT_CHECKED
        assert verdict.is_trusted == (verdict.status is Status.OK)
