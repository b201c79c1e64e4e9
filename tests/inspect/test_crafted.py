"""Attack files around an intact DWSNET OÜ signature (tests/crafted.py), and the same
signatures in other legal encodings: the primary signer is always reported, as stored.
"""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc

import crafted
import mutate
import pytest

from rmmscan.inspect import Anomaly, Inspector, Status, inspect_stream
from rmmscan.rows.build import signature_rows

from conftest import PE_DIR, ROOT, SAMPLES, TEST_ROOT

INSPECTOR = Inspector([TEST_ROOT])
PKI = SAMPLES / "pki"
RMMSCAN = str(ROOT / ".venv" / "bin" / "rmmscan")
DWSNET_THUMBPRINT = crafted.thumbprint(crafted.signer_cert_der("dwsnet-ou.pem"))
SIGNATURES = {name: 1 for name in crafted.BUILDERS} | {"nested_len_80": 2}
MEMORY_BOUND = 64 * 1024 * 1024


@functools.cache
def built(name: str) -> bytes:
    return crafted.BUILDERS[name]()


@pytest.fixture(scope="module")
def crafted_dir(tmp_path_factory):
    """Every crafted file on disk, built once for the module."""
    target = tmp_path_factory.mktemp("crafted")
    for name in crafted.BUILDERS:
        (target / f"{name}.exe").write_bytes(built(name))
    return target


def inspect(data: bytes):
    stream = io.BytesIO(data)
    inspection = inspect_stream(stream)
    verdicts = INSPECTOR.verify(stream, inspection)
    return inspection, verdicts


BUILDERS = sorted(crafted.BUILDERS)


def test_the_signer_thumbprint_is_the_sample_certificate():
    """The reference the tests compare with: dwsnet-ou.pem's DER, as in the sample's bag."""
    stored = crafted.signer_der(crafted.sample("dwsnet-ou.exe"))
    assert crafted.thumbprint(stored) == DWSNET_THUMBPRINT


@pytest.mark.parametrize("name", BUILDERS)
def test_primary_signer_is_reported(name):
    data = built(name)
    inspection, verdicts = inspect(data)
    assert inspection.is_pe
    assert not inspection.errors, inspection.errors
    assert Anomaly.INTERNAL_ERROR not in inspection.anomalies
    rows = signature_rows(inspection)
    assert len(inspection.signatures) == SIGNATURES[name]
    assert len(rows) == len(inspection.signatures) == len(verdicts)
    assert [row["SignatureIndex"] for row in rows] == list(range(len(rows)))
    first = rows[0]
    assert first["Signer"] == crafted.SIGNER_CN
    assert first["CertificateSerialNumber"] == crafted.SIGNER_SERIAL
    assert first["SignerSubject"] == "CN=DWSNET OÜ, O=DWSNET OÜ, C=EE"
    stored = crafted.thumbprint(crafted.signer_der(data))
    assert first["SignerHash"] == stored
    if name == "signer_bad_extension":
        assert stored != DWSNET_THUMBPRINT  # the certificate as stored, not as issued
    else:
        assert stored == DWSNET_THUMBPRINT
    for verdict in verdicts:
        assert verdict.status is not Status.NOT_CHECKED


@pytest.mark.parametrize(
    "name", ["ber_outer", "nested_len_80", "content_info_len_80", "signed_data_len_80"]
)
def test_intact_signatures_keep_their_verdict(name):
    """What osslsigncode verifies here, rmmscan verifies too."""
    _, verdicts = inspect(built(name))
    assert [v.status for v in verdicts] == [Status.OK] * SIGNATURES[name]


def length_octets(node: mutate.Node) -> bytes:
    encoded = mutate.encode(node)[len(node.tag) :]
    return encoded[: 1 + (encoded[0] & 0x7F if encoded[0] & 0x80 else 0)]


def test_nested_signature_behind_0x80_lengths_reads_as_in_plain_der():
    """The nested Contoso signature reads and verifies as in nested-sha256-sha1.exe."""
    data = built("nested_len_80")
    tree = crafted.primary(data)
    inner = mutate.nested_values(tree)[0]
    attrs = mutate.unsigned_attrs(mutate.signer_info(tree))
    # The encoded lengths the builder promises: both end in 0x80, in long form.
    for node in (inner, attrs):
        assert length_octets(node)[-1] == 0x80
    inspection, verdicts = inspect(data)
    plain, plain_verdicts = inspect((PE_DIR / crafted.NESTED_DONOR).read_bytes())
    got = {k: v for k, v in signature_rows(inspection)[1].items() if k != "Anomalies"}
    want = {k: v for k, v in signature_rows(plain)[1].items() if k != "Anomalies"}
    assert got == want
    assert (verdicts[1].status, verdicts[1].is_trusted) == (
        plain_verdicts[1].status,
        plain_verdicts[1].is_trusted,
    )


@pytest.mark.parametrize("name", ["big_unsigned_attr", "big_crl_bag"])
def test_inspection_memory_is_bounded(name, crafted_dir):
    """A 17 MiB attribute or CRL costs at most 64 MiB above a trivial file, read and verified."""
    assert INSPECTOR.trust is not None  # built once per process, outside the measure

    def peak(path) -> int:
        with open(path, "rb") as stream:
            tracemalloc.start()
            try:
                inspection = inspect_stream(stream)
                INSPECTOR.verify(stream, inspection)
                signature_rows(inspection)
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    trivial = peak(PE_DIR / "dwsnet-ou.exe")
    assert peak(crafted_dir / f"{name}.exe") - trivial < MEMORY_BOUND


@pytest.mark.parametrize("name", BUILDERS)
def test_osslsigncode_agrees_with_the_builder_notes(name, crafted_dir):
    """The files are valid but for their damage: osslsigncode verifies the ones noted."""
    tool = shutil.which("osslsigncode")
    assert tool, "osslsigncode is needed"
    result = subprocess.run(
        [tool, "verify", "-in", str(crafted_dir / f"{name}.exe"),
         "-CAfile", str(TEST_ROOT), "-TSA-CAfile", str(TEST_ROOT),
         "-CRLfile", str(PKI / "crls.pem"), "-TSA-CRLfile", str(PKI / "crls.pem")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    accepted = result.stdout.rstrip().endswith("Succeeded")
    assert accepted == (name in crafted.OSSLSIGNCODE_ACCEPTS), result.stdout[-2000:]


def sweep_rows(scan_dir, tmp_path) -> list[dict]:
    """The rows of `rmmscan` over a folder, which must find something (exit status 1)."""
    result = subprocess.run(
        [RMMSCAN, "--trusted-roots", str(TEST_ROOT), "--no-cache", "--format", "jsonl",
         "--quiet", "--state-dir", str(tmp_path / "state"), str(scan_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("name", BUILDERS)
def test_cli_detects_dwservice(name, crafted_dir, tmp_path):
    """The bundled rule rmm_DWService_filesig matches the crafted file's DWSNET signer."""
    scan_dir = tmp_path / "scan"
    scan_dir.mkdir()
    os.link(crafted_dir / f"{name}.exe", scan_dir / f"{name}.exe")
    rows = sweep_rows(scan_dir, tmp_path)
    assert any(
        "DWService - File Signature" in row["RuleName"] and row["Signer"] == crafted.SIGNER_CN
        for row in rows
    ), rows


# --------------------------------------------------------------------------------------------
# A few bytes of header around an intact signature (fuzzer lost-signer findings): Windows does
# not read such an entry, so its verdict is Malformed, but its signer is still reported.


def with_dwlength(data: bytes, entry: int, length: int) -> bytes:
    """The file with one certificate-table entry's dwLength set to ``length``."""
    at = mutate.layout(data).entries[entry].offset
    return data[:at] + length.to_bytes(4, "little") + data[at + 4 :]


def signers(inspection, verdicts) -> list[tuple[str | None, Status, str]]:
    return [
        (s.signer.cn if s.signer else None, v.status, v.detail)
        for s, v in zip(inspection.signatures, verdicts, strict=True)
    ]


def flipped(data: bytes, node: mutate.Node) -> bytes:
    """The file with the last content byte of ``node`` (file offsets) inverted."""
    at = node.end - 1
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def sid_parts(data: bytes) -> tuple[mutate.Node, mutate.Node]:
    """(the issuer Name, the serial INTEGER) of the primary SignerInfo's IssuerAndSerialNumber."""
    sid = mutate.signer_info(crafted.primary(data)).children[1]
    return sid.children[0], sid.children[1]


def pkcs7_size(data: bytes) -> int:
    """The size of the first entry's ContentInfo TLV."""
    tree = crafted.primary(data)
    return tree.end - tree.start


def attack(name: str) -> bytes:
    """The attacks on a DWSNET signature below, by name (each keeps the signature's bytes)."""
    one, two = (PE_DIR / "dwsnet-ou.exe").read_bytes(), (PE_DIR / "two-entries.exe").read_bytes()
    if name == "dwlength_over_next":
        return with_dwlength(two, 0, mutate.layout(two).entries[0].length + 8)
    if name.startswith("dwlength_"):
        lengths = {"zero": 0, "eight": 8, "nine": 9, "cut": 8 + pkcs7_size(one) - 1}
        return with_dwlength(one, 0, lengths[name.removeprefix("dwlength_")])
    issuer, serial = sid_parts(one)
    return flipped(one, {"sid_serial": serial, "sid_issuer": issuer}[name])


# Each attack, and the signer the DWService rule must report on it.
ATTACKS = {
    "dwlength_zero": "DWSNET OÜ",
    "dwlength_eight": "DWSNET OÜ",
    "dwlength_nine": "DWSNET OÜ",
    "dwlength_cut": "DWSNET OÜ",
    "dwlength_over_next": "DWSNET srl",
    "sid_serial": "DWSNET OÜ",
    "sid_issuer": "DWSNET OÜ",
}


@pytest.mark.parametrize("length", [0, 7, 8, 9, 100, 5000])
def test_a_dwlength_that_cuts_the_signature_short_keeps_its_signer(length):
    """An entry's dwLength shorter than the PKCS#7 it holds: the PKCS#7 is read to its own end
    where the table holds it whole, and the walk goes on after it (the second entry)."""
    data = with_dwlength((PE_DIR / "two-entries.exe").read_bytes(), 0, length)
    inspection, verdicts = inspect(data)
    assert not inspection.errors, inspection.errors
    got = signers(inspection, verdicts)
    assert [(cn, status) for cn, status, _ in got] == [
        ("DWSNET OÜ", Status.MALFORMED),
        ("DWSNET srl", Status.OK),
    ], got
    assert f"dwLength ({length}) is shorter than its header and PKCS#7" in got[0][2]
    assert got[0][2].endswith("Windows does not read it")
    assert Anomaly.ENTRY_MALFORMED in inspection.anomalies


@pytest.mark.parametrize("extra", [8, 64])
def test_an_entry_inside_another_entrys_dwlength_is_read(extra):
    """The first entry's dwLength runs over the second entry's header: the walk by dwLength
    lands inside the second PKCS#7, where no entry lies, and the entry after the first PKCS#7
    is read all the same, Malformed (Windows does not reach it)."""
    two = (PE_DIR / "two-entries.exe").read_bytes()
    data = with_dwlength(two, 0, mutate.layout(two).entries[0].length + extra)
    inspection, verdicts = inspect(data)
    got = signers(inspection, verdicts)
    assert [(cn, status) for cn, status, _ in got] == [
        ("DWSNET OÜ", Status.OK),
        ("DWSNET srl", Status.MALFORMED),
    ], got
    assert "lies inside entry 0's dwLength: Windows does not read it" in got[1][2]


def test_the_walk_by_dwlength_goes_on_through_bytes_inside_a_pkcs7():
    """The first entry's dwLength cuts its PKCS#7 and leads to bytes inside it that Windows
    takes for a header; no entry is made there, but the walk goes on by them, so the entry
    they lead to is read (it is not where the first PKCS#7 ends: junk lies between)."""
    one = (PE_DIR / "dwsnet-ou.exe").read_bytes()
    srl = mutate.layout((PE_DIR / "dwsnet-srl.exe").read_bytes()).entries[0].blob
    first = mutate.layout(one).entries[0].blob[: pkcs7_size(one)]
    fake_at = 64  # in the table: byte 56 of the first PKCS#7, inside its certificates
    body = first + b"\xaa" * 24  # junk after the PKCS#7, inside the entry
    second_at = (8 + len(body) + 7) & ~7
    fake = struct.pack("<IHH", second_at - fake_at, 0x1234, 0x5678)
    body = body[: fake_at - 8] + fake + body[fake_at:]
    data = mutate.with_table(one, [body, srl], headers=[(0x0200, 2), (0x0200, 2)])
    data = with_dwlength(data, 0, fake_at)
    inspection, verdicts = inspect(data)
    got = signers(inspection, verdicts)
    assert [(cn, status) for cn, status, _ in got] == [
        ("DWSNET OÜ", Status.MALFORMED),  # its dwLength, and 8 bytes of its certificates
        ("DWSNET srl", Status.OK),
    ], got


@pytest.mark.parametrize("part", ["sid_serial", "sid_issuer"])
def test_a_signerinfo_that_names_its_certificate_in_half_keeps_its_signer(part):
    """One byte of the SignerInfo's serial number or issuer name: Windows finds no signer, but
    the one certificate with that serial (or from that issuer) is reported, Malformed."""
    data = attack(part)
    inspection, verdicts = inspect(data)
    (cn, status, detail), *_ = signers(inspection, verdicts)
    assert (cn, status) == ("DWSNET OÜ", Status.MALFORMED)
    which = "with the serial number" if part == "sid_issuer" else "issued by the issuer"
    assert "SignerInfo names none of its certificates exactly" in detail and which in detail
    assert signature_rows(inspection)[0]["SignerHash"] == DWSNET_THUMBPRINT


def test_a_signerinfo_that_names_no_certificate_at_all_has_no_signer():
    """Serial and issuer both wrong: no certificate is taken for the signer's."""
    one = (PE_DIR / "dwsnet-ou.exe").read_bytes()
    issuer, serial = sid_parts(one)
    inspection, verdicts = inspect(flipped(flipped(one, serial), issuer))
    assert signers(inspection, verdicts)[0][:2] == (None, Status.MALFORMED)


@pytest.mark.parametrize("name", ATTACKS)
def test_cli_detects_dwservice_behind_broken_headers(name, tmp_path):
    """The bundled rule rmm_DWService_filesig fires on each of these files, on the signature
    the attack aims at."""
    scan_dir = tmp_path / "scan"
    scan_dir.mkdir()
    (scan_dir / f"{name}.exe").write_bytes(attack(name))
    rows = sweep_rows(scan_dir, tmp_path)
    assert any(
        "DWService - File Signature" in row["RuleName"]
        and row["Signer"] == ATTACKS[name]
        and row["VerificationStatus"] == "Malformed"
        for row in rows
    ), rows


# --------------------------------------------------------------------------------------------
# The same signatures in other encodings


def _differential_samples() -> list[str]:
    names = []
    for path in sorted(PE_DIR.iterdir()):
        seed = mutate.Seed.of(path.read_bytes())
        if seed.tree is not None and mutate.signed_data(seed.tree) is not None:
            names.append(path.name)
    return names


DIFFERENTIAL = _differential_samples()


def test_differential_covers_the_samples():
    assert len(DIFFERENTIAL) >= 20
    assert {"dwsnet-ou.exe", "nested-depth3.exe", "two-entries.exe"} <= set(DIFFERENTIAL)


@pytest.mark.parametrize("encoding", ["ber-indefinite", "ber-long-form"])
@pytest.mark.parametrize("name", DIFFERENTIAL)
def test_encodings_give_the_same_rows_and_verdicts(name, encoding):
    """Re-encoding the outer layers (primary and nested) changes no column but Anomalies,
    which gains pkcs7_not_der, and no verdict.

    The baseline is the file rebuilt with its PKCS#7 untouched: the rebuild normalizes
    the table (size, slack, trailing data), and only the encoding should differ.
    """
    data = (PE_DIR / name).read_bytes()
    baseline = crafted.rebuild(data, crafted.primary(data))
    other = crafted.ENCODINGS[encoding](data)
    assert other != baseline
    base_ins, base_verdicts = inspect(baseline)
    ins, verdicts = inspect(other)
    assert not ins.errors, ins.errors
    base_rows, rows = signature_rows(base_ins), signature_rows(ins)
    assert len(rows) == len(base_rows) == len(ins.signatures)
    for got, want in zip(rows, base_rows, strict=True):
        assert {k: v for k, v in got.items() if k != "Anomalies"} == {
            k: v for k, v in want.items() if k != "Anomalies"
        }
        base_anomalies, anomalies = json.loads(want["Anomalies"]), json.loads(got["Anomalies"])
        assert set(base_anomalies) <= set(anomalies)
        assert set(anomalies) - set(base_anomalies) == {str(Anomaly.PKCS7_BER)}
    assert [(v.status, v.is_trusted) for v in verdicts] == [
        (v.status, v.is_trusted) for v in base_verdicts
    ]


def test_rebuild_is_the_identity_on_plain_samples():
    """crafted.rebuild changes nothing but the table's framing: plain samples come back."""
    for name in ("dwsnet-ou.exe", "nested-depth3.exe", "benign.exe", "dll32.dll"):
        data = (PE_DIR / name).read_bytes()
        assert crafted.rebuild(data, crafted.primary(data)) == data, name


# --------------------------------------------------------------------------------------------
# Caps: many and deeply nested signatures


def test_many_nested_signatures_are_capped():
    """200 nested copies: capped, said so, and the primary still first and valid."""
    inspection, verdicts = inspect(crafted.nested_many(200))
    rows = signature_rows(inspection)
    assert not inspection.errors, inspection.errors
    assert 2 <= len(inspection.signatures) <= 64
    assert len(rows) == len(verdicts) == len(inspection.signatures)
    assert Anomaly.LIMIT_REACHED in inspection.anomalies
    assert (rows[0]["Signer"], rows[0]["SignerHash"]) == (crafted.SIGNER_CN, DWSNET_THUMBPRINT)
    assert verdicts[0].status is Status.OK
    assert {row["Signer"] for row in rows[1:]} == {"Contoso Tools Ltd"}


@pytest.mark.parametrize("encoding", ["der", "ber-indefinite", "ber-long-form"])
@pytest.mark.parametrize("depth", [5, 8])
def test_a_chain_of_nested_signatures_reads_once_each(depth, encoding):
    """Signatures nested in one another, ``depth`` in all, each valid: one row each (up to
    the depth cap), no row twice, every verdict Ok. osslsigncode verifies the primary and
    its first nested signature of each encoding (it reads one level deep).
    """
    data = crafted.ENCODINGS[encoding](crafted.nested_deep(depth))
    inspection, verdicts = inspect(data)
    rows = signature_rows(inspection)
    assert not inspection.errors, inspection.errors
    assert Anomaly.PKCS7_TRUNCATED not in inspection.anomalies
    assert 5 <= len(inspection.signatures) <= depth
    assert len(rows) == len(verdicts) == len(inspection.signatures)
    signers = [row["Signer"] for row in rows]
    assert signers == [crafted.SIGNER_CN] * (len(rows) - 1) + [signers[-1]]
    assert [v.status for v in verdicts] == [Status.OK] * len(verdicts)


def test_a_deep_chain_is_capped():
    inspection, verdicts = inspect(crafted.nested_deep(12))
    assert Anomaly.LIMIT_REACHED in inspection.anomalies
    assert len(inspection.signatures) < 12
    assert verdicts[0].status is Status.OK


def calls_during(data: bytes) -> int:
    """Python function calls made by one inspection: a measure of work that does not
    depend on the machine's load."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profile)
    try:
        inspect_stream(io.BytesIO(data))
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize("encoding", ["der", "ber-indefinite", "ber-long-form"])
def test_work_past_the_depth_cap_stays_flat(encoding):
    """Four more levels of nesting past the cap (14 -> 18, 30 % more bytes) cost at most
    three times the work: the levels the cap leaves out are skipped, not walked again at
    every level above them."""
    encode = crafted.ENCODINGS[encoding]
    shallow, deep = encode(crafted.nested_deep(14)), encode(crafted.nested_deep(18))
    inspect_stream(io.BytesIO(shallow))  # imports and caches stay out of the count
    deep_calls, shallow_calls = calls_during(deep), calls_during(shallow)
    assert deep_calls < 3 * shallow_calls


@pytest.mark.parametrize("cert_type", [0x0001, 0x0004, 0xFFFF])
def test_a_signature_in_an_entry_of_another_type_keeps_its_signer(cert_type):
    """Two bytes of wCertificateType (X509, TS_STACK_SIGNED, anything but PKCS_SIGNED_DATA)
    make Windows skip the entry: the DWSNET signature inside is still read, its row names
    its signer, Malformed, with why (a fuzzer's lost-signer finding)."""
    data = (PE_DIR / "dwsnet-ou.exe").read_bytes()
    lay = mutate.layout(data)
    blobs = [e.blob for e in lay.entries]
    assert [t for _, t in mutate.entry_headers(lay)] == [2]
    mutant = mutate.with_table(data, blobs, headers=[(0x0200, cert_type)])
    stream = io.BytesIO(mutant)
    inspection = inspect_stream(stream)
    assert Anomaly.UNSUPPORTED_ENTRY_TYPE in inspection.anomalies
    (sig,) = [s for s in inspection.signatures if s.index == 0]
    assert sig.signer is not None and sig.signer.cn == "DWSNET OÜ"
    verdicts = Inspector([TEST_ROOT], system_roots=False).verify(stream, inspection)
    assert verdicts[0].status is Status.MALFORMED
    assert f"type 0x{cert_type:04x}, not PKCS_SIGNED_DATA" in verdicts[0].detail
    # The same file with the type left alone verifies: only the type makes it Malformed.
    clean = mutate.with_table(data, blobs)
    clean_stream = io.BytesIO(clean)
    again = Inspector([TEST_ROOT], system_roots=False).verify(
        clean_stream, inspect_stream(clean_stream)
    )
    assert again[0].status is Status.OK, again[0].detail
