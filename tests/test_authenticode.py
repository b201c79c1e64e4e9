"""The DER walk (inspect/der.py) and asn1crypto read every signature the same: on the samples,
on real-world Microsoft-signed DLLs and Debian's signed EFI binaries, and on thousands of
mutants whose ASN.1 tags and lengths were damaged; verdicts are the same too. The walk must
also really be taken on plain signatures, or this would compare asn1crypto with itself."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st
from realworld import fetch_deb, fetch_msvc_dlls

from rmmscan.inspect import Inspector, authenticode, der, inspect_stream, pe
from rmmscan.inspect.certtable import read_table

from conftest import PE_DIR, TEST_ROOT

INSPECTOR = Inspector([TEST_ROOT])


def both(data: bytes):
    """(fast, slow) inspections of one file."""
    out = []
    for fast in (True, False):
        authenticode.FAST = fast
        try:
            out.append(inspect_stream(io.BytesIO(data), len(data)))
        finally:
            authenticode.FAST = True
    return out


def same(data: bytes) -> None:
    fast, slow = both(data)
    assert len(fast.signatures) == len(slow.signatures)
    for f, s in zip(fast.signatures, slow.signatures, strict=True):
        for name in f.__slots__:
            if name not in ("asn1", "der"):
                assert getattr(f, name) == getattr(s, name), (name, f.index)
    assert fast.anomalies == slow.anomalies


def blobs(data: bytes) -> list[bytes]:
    stream = io.BytesIO(data)
    header = pe.parse_header(stream, len(data))
    entries, _ = read_table(stream, len(data), *header.cert_table, header.headers_size)
    return [e.blob for e in entries]


SAMPLES = sorted(p for p in PE_DIR.iterdir() if p.suffix in (".exe", ".dll"))


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_read_the_same(path):
    same(path.read_bytes())


PLAIN = ["dwsnet-srl.exe", "dwsnet-ou-sha1.exe", "nested-depth3.exe", "pkcs9-countersigned.exe",
         "bmpstring.exe", "t61string.exe", "two-entries.exe", "slack-in-entry.exe"]  # fmt: skip


@pytest.mark.parametrize("name", PLAIN)
def test_the_walk_is_taken_on_plain_signatures(name):
    for blob in blobs((PE_DIR / name).read_bytes()):
        assert der.signed_data(blob) is not None


@pytest.fixture(scope="module")
def realworld():
    files = fetch_msvc_dlls() + fetch_deb("shim-signed") + fetch_deb("grub-efi-amd64-signed")
    return [p for p in files if p.suffix in (".dll", ".signed", ".efi")]


def test_realworld_files_read_the_same(realworld):
    assert len(realworld) >= 10
    walked = 0
    for path in realworld:
        data = path.read_bytes()
        same(data)
        walked += sum(der.signed_data(b) is not None for b in blobs(data))
    assert walked >= len(realworld)


def test_verdicts_are_the_same():
    for path in SAMPLES:
        data = path.read_bytes()
        fast, slow = both(data)
        if not fast.is_pe:
            continue
        stream = io.BytesIO(data)
        assert INSPECTOR.verify(stream, fast) == INSPECTOR.verify(stream, slow), path.name


# -- mutants: damaged tags and lengths ---------------------------------------------------------

SEED_NAMES = ("dwsnet-srl.exe", "nested-sha256-sha1.exe", "pkcs9-countersigned.exe",
              "two-entries.exe")  # fmt: skip
SEEDS = {n: (PE_DIR / n).read_bytes() for n in SEED_NAMES}


def headers(data: bytes, start: int, end: int, depth: int = 0, out=None) -> list[int]:
    """File offsets of every tag octet in the ASN.1 between start and end (constructed ones
    walked into, to depth 12)."""
    out = [] if out is None else out
    pos = start
    while pos < end and depth < 12:
        element = der._element(data, pos, end)
        if element is None:
            break
        out.append(pos)
        if element[0] & 0x20:
            headers(data, element[2], element[3], depth + 1, out)
        pos = element[3]
    return out


def _table(data: bytes) -> tuple[int, int]:
    header = pe.parse_header(io.BytesIO(data), len(data))
    offset, size = header.cert_table
    return offset + 8, offset + size


HEADERS = {n: headers(d, *_table(d)) for n, d in SEEDS.items()}


@st.composite
def mutants(draw) -> bytes:
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(HEADERS[name]))
        what = draw(st.sampled_from(["tag", "length", "indefinite", "long"]))
        if what == "tag":
            tags = [0x30, 0x31, 0xA0, 0xA1, 0xA2, 0x80, 0x81, 0x02, 0x04, 0x06, 0x05, 0x1F, 0x3F]
            data[at] = draw(st.sampled_from([*tags, data[at] ^ 0x20]))
        elif what == "length":
            data[at + 1] = (data[at + 1] + draw(st.sampled_from([-2, -1, 1, 2]))) % 256
        elif what == "indefinite":
            data[at + 1] = 0x80
        else:
            data[at + 1] = draw(st.sampled_from([0x81, 0x83, 0x84, 0x85, 0x88, 0xFF]))
    return bytes(data)


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          verbosity=Verbosity.quiet)  # fmt: skip
@given(mutants())
def test_mutants_read_the_same(data):
    same(data)


@st.composite
def generalized_times(draw) -> bytes:
    """GeneralizedTime contents around the DER form: odd fields, fractions, zones, junk."""
    text = f"{draw(st.integers(0, 9999)):04d}"
    text += "".join(f"{draw(st.integers(0, 99)):02d}" for _ in range(5))
    if draw(st.booleans()):
        text += "." + draw(st.text("0123456789", min_size=0, max_size=8))
    text += draw(st.sampled_from(["Z", "Z", "", "+0100", "-0000", "z", "ZZ", " Z", "\n"]))
    return text.encode()


@settings(max_examples=3000, deadline=None)
@given(generalized_times())
def test_generalized_time_is_read_as_asn1crypto_reads_it(contents):
    from asn1crypto import core

    fast = authenticode.generalized_utc(contents)
    try:
        slow = authenticode._utc(core.GeneralizedTime(contents=contents).native)
    except (ValueError, TypeError, OverflowError):
        slow = None
    if fast is not None:  # when it answers, it answers as asn1crypto does
        assert fast == slow and fast.tzinfo is not None
    elif contents.endswith(b"Z") and contents.count(b".") == 0 and slow is not None:
        assert slow.year == 0 or slow.second == 60 or contents[8:10] == b"24", contents


def test_generalized_time_takes_the_usual_forms():
    assert authenticode.generalized_utc(b"20240229235959Z").isoformat() == (
        "2024-02-29T23:59:59+00:00"
    )
    assert authenticode.generalized_utc(b"20240229235959.5Z").microsecond == 500000
    assert authenticode.generalized_utc(b"20230229000000Z") is None  # no such day
    assert authenticode.generalized_utc(b"20240101000000.1234567Z") is None  # asn1crypto's
