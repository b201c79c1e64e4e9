"""Names decode by their ASN.1 string type and compare equal after NFC."""

from __future__ import annotations

import datetime as dt
import unicodedata

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rmmscan.inspect.certificates import cert_info
from rmmscan.text import path_columns, printable

try:
    from cryptography.x509.name import _ASN1Type
except ImportError:  # pragma: no cover - moved in a future cryptography
    from cryptography.x509 import _ASN1Type


def make_cert(attrs) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(attrs)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(0x80FF).not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.DER)


def test_bmpstring_and_decomposed_utf8_both_give_nfc():
    decomposed = unicodedata.normalize("NFD", "DWSNET OÜ")
    assert decomposed != "DWSNET OÜ"
    bmp = cert_info(
        make_cert([x509.NameAttribute(NameOID.COMMON_NAME, "DWSNET OÜ", _type=_ASN1Type.BMPString)])
    )
    nfd = cert_info(make_cert([x509.NameAttribute(NameOID.COMMON_NAME, decomposed)]))
    assert bmp.cn == nfd.cn == "DWSNET OÜ"
    assert bmp.serial_hex == "0080ff"


def test_no_cn_falls_back_to_organization_then_dn():
    org = cert_info(
        make_cert(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "EE"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DWSNET OÜ"),
            ]
        )
    )
    assert org.cn == "DWSNET OÜ"
    assert org.subject == "O=DWSNET OÜ, C=EE"
    dn = cert_info(
        make_cert(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "EE"),
                x509.NameAttribute(NameOID.LOCALITY_NAME, "Tallinn, Harju"),
            ]
        )
    )
    assert dn.cn == "L=Tallinn\\, Harju, C=EE"


def test_printable_escapes_controls_and_undecodable_bytes():
    assert printable("a\nb\x1b[2Jc\u202ed") == "$'a\\nb\\x1b[2Jc\\u202ed'"
    assert printable("ok name.exe") == "ok name.exe"
    assert printable(b"bad\xff.exe".decode("utf-8", "surrogateescape")) == "$'bad\\xff.exe'"


def test_path_columns_keep_raw_bytes_of_invalid_utf8():
    assert path_columns(b"/x/ok.exe") == ("/x/ok.exe", None)
    shown, raw = path_columns(b"/x/bad\xff.exe")
    assert shown == "/x/bad\ufffd.exe"
    assert raw == "L3gvYmFk/y5leGU="
