"""rmmscan's reader (inspect/ber.py + authenticode.py) against asn1crypto as an independent
oracle: on the samples, on real-world Microsoft-signed DLLs and Debian's signed EFI binaries,
and on thousands of mutants whose ASN.1 tags and lengths were damaged, every signature that
asn1crypto reads whole names the same signer certificate, digest algorithm and certificates.
Where asn1crypto gives up, rmmscan still gives the signature its row."""

from __future__ import annotations

import hashlib
import io

import pytest
from asn1crypto import cms
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st
from realworld import fetch_deb, fetch_msvc_dlls

from rmmscan.inspect import authenticode, ber, inspect_stream, pe
from rmmscan.inspect.certtable import read_table

from conftest import PE_DIR


def blobs(data: bytes) -> list[bytes]:
    stream = io.BytesIO(data)
    header = pe.parse_header(stream, len(data))
    entries, _ = read_table(stream, len(data), *header.cert_table, header.headers_size)
    return [bytes(e.blob) for e in entries]


def oracle(blob: bytes) -> list[tuple] | None:
    """(signer thumbprint, digest algorithm, certificate thumbprints) of every signature,
    depth first, as asn1crypto reads them; None when asn1crypto cannot read the blob."""
    out: list[tuple] = []

    def walk(content_info: cms.ContentInfo) -> None:
        signed = content_info["content"]
        certs = [c.chosen for c in signed["certificates"] or [] if c.name == "certificate"]
        thumbs = tuple(hashlib.sha1(c.dump()).hexdigest() for c in certs)
        signer = signed["signer_infos"][0]
        sid = signer["sid"].chosen
        found = None
        for cert, thumb in zip(certs, thumbs, strict=True):
            tbs = cert["tbs_certificate"]
            if (tbs["serial_number"].native == sid["serial_number"].native
                    and tbs["issuer"].dump() == sid["issuer"].dump()):  # fmt: skip
                found = thumb
                break
        out.append((found, signer["digest_algorithm"]["algorithm"].native, thumbs))
        for attr in signer["unsigned_attrs"] or []:
            if attr["type"].native == "microsoft_nested_signature":
                for nested in attr["values"]:
                    walk(nested)

    try:
        walk(cms.ContentInfo.load(blob))
        return out
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError):
        return None


def ours(data: bytes) -> list[tuple]:
    inspection = inspect_stream(io.BytesIO(data), len(data))
    assert inspection.errors == []
    return [
        (s.signer.sha1 if s.signer else None, s.digest_algorithm,
         tuple(c.sha1 for c in s.certificates))
        for s in inspection.signatures
    ]  # fmt: skip


def same(data: bytes) -> None:
    """Where asn1crypto reads every entry, rmmscan reads the same; it reads at least as much."""
    expected: list[tuple] = []
    for blob in blobs(data):
        found = oracle(blob)
        if found is None:
            ours(data)  # no exception, no internal error: that is all there is to compare
            return
        expected.extend(found)
    got = ours(data)
    expected = expected[: authenticode.MAX_SIGNATURES]

    def agree(mine: tuple, theirs: tuple) -> bool:
        # asn1crypto compares names by re-encoding them (dump), rmmscan by their canonical
        # DER: where a damaged length makes asn1crypto miss the signer, rmmscan may find it.
        return mine[1:] == theirs[1:] and (
            mine[0] == theirs[0] or (theirs[0] is None and mine[0] in mine[2])
        )

    assert len(got) >= len(expected)
    if expected:
        assert agree(got[0], expected[0])
    # rmmscan reads past damage asn1crypto stops at (an attribute whose SET is tagged
    # otherwise, say): every signature asn1crypto reads, rmmscan reads too.
    assert all(any(agree(m, t) for m in got) for t in expected)
    if data in SEEDS.values():
        assert len(got) == len(expected)


SAMPLES = sorted(p for p in PE_DIR.iterdir() if p.suffix in (".exe", ".dll"))


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_read_as_asn1crypto_reads_them(path):
    same(path.read_bytes())


@pytest.fixture(scope="module")
def realworld():
    files = fetch_msvc_dlls() + fetch_deb("shim-signed") + fetch_deb("grub-efi-amd64-signed")
    return [p for p in files if p.suffix in (".dll", ".signed", ".efi")]


def test_realworld_files_read_as_asn1crypto_reads_them(realworld):
    assert len(realworld) >= 10
    for path in realworld:
        data = path.read_bytes()
        assert oracle(blobs(data)[0]) is not None, path.name
        same(data)


def test_walk_positions_match_asn1crypto():
    """ber.element finds every element where asn1crypto's parser does, on a real signature."""
    blob = blobs((PE_DIR / "nested-depth3.exe").read_bytes())[0]
    from asn1crypto.parser import parse

    stack = [ber.element(blob, 0, len(blob))]
    seen = 0
    while stack:
        el = stack.pop()
        _, _, _, header, contents, _ = parse(blob[el.start : el.after])
        assert (el.body - el.start, el.end - el.body) == (len(header), len(contents))
        assert el.flags == 0
        seen += 1
        if el.constructed:
            stack.extend(ber.children(blob, el, 10_000)[0])
    assert seen > 500


def test_indefinite_lengths_are_resolved():
    # SEQUENCE (indefinite) { INTEGER 5, SEQUENCE (indefinite) { NULL } } then a trailer
    data = bytes.fromhex("3080 020105 3080 0500 0000 0000 ff")
    top = ber.element(data, 0, len(data))
    assert top.flags & ber.INDEFINITE and not top.flags & ber.TRUNCATED
    assert (top.body, top.end, top.after) == (2, 11, 13)
    assert ber.canonical(data, top) == bytes.fromhex("3007 020105 30020500")
    cut = ber.element(data, 0, 9)
    assert cut.flags & ber.TRUNCATED


SEED_NAMES = ("dwsnet-srl.exe", "nested-sha256-sha1.exe", "pkcs9-countersigned.exe",
              "two-entries.exe")  # fmt: skip
SEEDS = {n: (PE_DIR / n).read_bytes() for n in SEED_NAMES}


def headers(data: bytes, start: int, end: int, depth: int = 0, out=None) -> list[int]:
    """File offsets of every tag octet in the ASN.1 between start and end (constructed ones
    walked into, to depth 12)."""
    out = [] if out is None else out
    pos = start
    while pos < end and depth < 12:
        element = ber.element(data, pos, end)
        if element is None:
            break
        out.append(pos)
        if element.constructed:
            headers(data, element.body, element.end, depth + 1, out)
        pos = element.after
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
def test_mutants_read_as_asn1crypto_reads_them(data):
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
        slow = authenticode.utc(core.GeneralizedTime(contents=contents).native)
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


def test_a_tolerantly_read_certificate_reads_the_same_every_time():
    """The certificate caches never turn a refused certificate into a clean one: the second
    file signed with it gets the same columns, problems and anomalies as the first."""
    import crafted

    from rmmscan.inspect import Anomaly, certificates

    data = crafted.ca_tbs_set()  # the CA certificate's TBSCertificate is tagged SET
    certificates._cache.clear()
    certificates._tolerant.clear()
    first, again = (inspect_stream(io.BytesIO(data), len(data)) for _ in range(2))
    assert Anomaly.CERTIFICATE_MALFORMED in first.anomalies
    assert again.anomalies == first.anomalies
    assert [s.problems for s in again.signatures] == [s.problems for s in first.signatures]
    assert again.signatures[0].signer == first.signatures[0].signer
    assert first.signatures[0].signer.cn == crafted.SIGNER_CN
