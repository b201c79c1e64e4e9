"""Verification never raises for one signature, and its detail says in words what failed,
the same words on every run: no object addresses, no hash-ordered sets, no serials or lengths
hundreds of digits long, no word cut in half."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from asn1crypto import cms

from rmmscan.inspect import Inspector, Status, inspect_stream
from rmmscan.inspect import _signify as sg
from rmmscan.inspect.trust import load_pem_roots, name_key
from rmmscan.inspect.verify import verify_all
from rmmscan.text import brief, plain_detail

from conftest import PE_DIR, TEST_ROOT


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    return Inspector([TEST_ROOT])


def _inspect(name: str):
    stream = open(PE_DIR / name, "rb")  # noqa: SIM115 - closed by the test's fixture below
    return stream, inspect_stream(stream)


@pytest.fixture
def srl():
    stream, inspection = _inspect("dwsnet-srl.exe")
    with stream:
        yield stream, inspection


# -- never raises -----------------------------------------------------------------------------


def test_an_issuer_name_asn1crypto_cannot_load_gives_a_verdict(srl, inspector):
    """The tolerant certificate reader keeps names asn1crypto cannot load (here an empty SET
    where the Name's SEQUENCE belongs): asn1crypto raises ValueError on loading them."""
    stream, inspection = srl
    (sig,) = inspection.signatures
    broken = dataclasses.replace(
        sig, signer=dataclasses.replace(sig.signer, issuer_key=b"\x31\x00")
    )
    assert name_key(b"\x31\x00") == "der:3100"
    errors: list[str] = []
    (verdict,) = verify_all(stream, [broken], inspector.trust, errors=errors)
    assert verdict.status is Status.OK  # signify's own chain building finds the issuer
    assert errors == []


def test_a_bug_is_malformed_in_words_and_listed_in_errors(srl, inspector):
    """An exception bad input does not explain (here a TypeError) is a bug: the signature is
    Malformed with the step in words, the others are still verified, and errors says it."""
    stream, inspection = srl
    (sig,) = inspection.signatures
    buggy = dataclasses.replace(sig, index=1, certificates=None)
    errors: list[str] = []
    good, bad = verify_all(stream, [sig, buggy], inspector.trust, errors=errors)
    assert good.status is Status.OK
    assert bad.status is Status.MALFORMED
    assert bad.detail == (
        "an internal error while following the certificate names to a trusted root (TypeError)"
    )
    assert errors == ["verification of signature 1: TypeError: 'NoneType' object is not iterable"]


# -- the same words on every run -----------------------------------------------------------


def _details(*options: str) -> dict[tuple[str, int], tuple[str, str]]:
    proc = subprocess.run(
        [sys.executable, "-m", "rmmscan", "inspect", "--format", "jsonl", *options,
         *sorted(str(p) for p in PE_DIR.glob("*.exe"))],
        capture_output=True, text=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows, proc.stderr
    return {
        (r["FileName"], r["SignatureIndex"]): (r["VerificationStatus"], r["VerificationDetail"])
        for r in rows
    }


@pytest.mark.parametrize(
    "options",
    [("--trusted-roots", str(TEST_ROOT)), ("--no-system-roots",), ()],
    ids=["test-root", "no-roots", "system-roots"],
)
def test_details_are_the_same_on_every_run_and_say_which_chain(options):
    first, second = _details(*options), _details(*options)  # two processes, two hash seeds
    assert first == second
    for (name, _), (status, detail) in first.items():
        if detail is None:
            continue
        where = f"{name}: {detail}"
        assert " object at 0x" not in detail, where
        assert not re.search(r"\d{21,}", detail), where
        assert "Chain verification from" not in detail, where
        if status in ("UntrustedRoot", "Expired", "InvalidChain"):
            assert detail.startswith(("the signer's chain ", "the timestamp's chain ")), where
        if detail.endswith("…"):
            assert detail[-2] not in " ,;:", where


def test_untrusted_chains_say_whose_chain(inspector):
    untrusted = Inspector(system_roots=False)
    for name, who in (("leaf-only.exe", "signer"), ("benign.exe", "timestamp")):
        stream, inspection = _inspect(name)
        with stream:
            trust = inspector if who == "signer" else untrusted
            (verdict,) = verify_all(stream, inspection.signatures, trust.trust)
        assert verdict.status is Status.UNTRUSTED_ROOT
        wanted = {
            "signer": "the signer's chain does not lead to a trusted root: CN=DWSNET srl",
            "timestamp": "the timestamp's chain does not validate: CN=rmmscan Test Timestamping",
        }[who]
        assert verdict.detail.startswith(wanted), verdict.detail


# -- plain_detail on the messages the libraries really write ----------------------------------


def _pkcs7_of(path: Path) -> bytes:
    data = path.read_bytes()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    magic = struct.unpack_from("<H", data, pe + 24)[0]
    entry = pe + 24 + (96 if magic == 0x10B else 112) + 4 * 8
    offset, size = struct.unpack_from("<II", data, entry)
    return data[offset + 8 : offset + size]


def test_plain_detail_of_asn1cryptos_length_of_hundreds_of_digits():
    with pytest.raises(ValueError) as raised:
        _ = cms.ContentInfo.load(_pkcs7_of(PE_DIR / "garbage-pkcs7.exe")).native
    message = str(raised.value)
    assert re.search(r"\d{300}", message)
    assert plain_detail(message) == (
        "Insufficient data - a 304-digit number bytes requested but only 5712 available"
    )


def test_plain_detail_of_signifys_certificate_list():
    cert = next(iter(load_pem_roots([TEST_ROOT])))
    from signify.x509.context import VerificationContext

    context = VerificationContext(sg.CertificateStore([cert], trusted=False))
    with pytest.raises(sg.CertificateVerificationError) as raised:
        context.verify_trust([cert])
    assert " object at 0x" in str(raised.value)
    assert plain_detail(str(raised.value)) == (
        "The trust for [Certificate] could not be verified, as it is not trusted by any store"
    )


def test_plain_detail_of_signifys_chain_message_and_decimal_serial():
    message = (
        "Chain verification from CN=DWSNET srl, O=DWSNET srl, ST=Napoli, C=IT "
        "(serial:79910979544227973022364699603583778641, "
        "sha1:9b53bea9298b9106b5af8c5878b9a35f2d229aa0) failed: Unable to build a validation "
        'path for the certificate "Common Name: DWSNET srl"'
    )
    assert plain_detail(message) == (
        "CN=DWSNET srl, O=DWSNET srl, ST=Napoli, C=IT (serial:3c1e4b7a90d2f5816e2a9b4c7d0e3f51, "
        "sha1:9b53bea9298b9106b5af8c5878b9a35f2d229aa0): Unable to build a validation path for "
        'the certificate "Common Name: DWSNET srl"'
    )
    assert plain_detail("(serial:10, sha1:aa)") == "(serial:0a, sha1:aa)"
    assert plain_detail("(serial:128, sha1:aa)") == "(serial:0080, sha1:aa)"
    assert plain_detail("serial:" + "9" * 60) == "serial:(too long)"


def test_plain_detail_of_sets_and_openssl_strings():
    one = "The root X disallows requested EKU's {'1.3.6.1.5.5.7.3.3', '1.3.6.1.4.1.311.10.3.13'}"
    two = "The root X disallows requested EKU's {'1.3.6.1.4.1.311.10.3.13', '1.3.6.1.5.5.7.3.3'}"
    assert plain_detail(one) == plain_detail(two)
    assert plain_detail(
        "Invalid signature for CN=X: error:0200008A:rsa routines:RSA_padding_check:bad pad"
    ) == "Invalid signature for CN=X: an OpenSSL error"
    assert plain_detail(
        "x: [<OpenSSLError(code=503841036, lib=60, reason=524556, reason_text=unsupported)>]"
    ) == "x: an OpenSSL error"


def test_brief_cuts_at_a_word_boundary():
    text = plain_detail(
        'the signer\'s chain does not lead to a trusted root: CN=Expired Example GmbH, O=Expired '
        "Example GmbH, C=DE (serial:7e57ed01, sha1:8f104f8cf1077f359aeff3362e03b769aad6984a): "
        'Unable to build a validation path for the certificate "Common Name: Expired Example '
        'GmbH, Organization: Expired Example GmbH, Country: DE" - no issuer matching "Common '
        'Name: rmmscan Test Root CA, Organization: rmmscan Test PKI" was found'
    )
    short = brief(text)
    assert len(text) > 300 >= len(short)
    assert short.endswith("…")
    kept = short[:-1]
    assert text.startswith(kept) and text[len(kept)] in " ,", short
    assert brief("x" * 400) == "x" * 299 + "…"  # one word: no boundary to cut at
    assert brief("short") == "short"


def test_a_read_error_is_the_callers(srl, inspector, tmp_path):
    """A stream that cannot be read (a real EBADF: the descriptor is open for writing only)
    raises, as an unreadable file does; it is no verdict about the signature."""
    _, inspection = srl
    copy = tmp_path / "copy.exe"
    copy.write_bytes((PE_DIR / "dwsnet-srl.exe").read_bytes())
    fd = os.open(copy, os.O_WRONLY)
    with os.fdopen(fd, "rb", buffering=0) as unreadable:
        errors: list[str] = []
        with pytest.raises(OSError) as raised:
            verify_all(unreadable, inspection.signatures, inspector.trust, errors=errors)
    assert raised.value.errno == errno.EBADF
    assert errors == []
