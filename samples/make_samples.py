#!/usr/bin/env python3
"""Regenerate rmmscan's Authenticode test samples from scratch.

Writes a throw-away test PKI to ``samples/pki/``, small signed (and deliberately broken) PE files to
``samples/pe/`` and the expected reader output of every file to ``samples/manifest.json``.

Needs mingw-w64 (``x86_64-w64-mingw32-gcc``, ``i686-w64-mingw32-gcc``) and osslsigncode >= 2.9
(its built-in RFC 3161 TSA: ``-TSA-certs/-TSA-key/-TSA-time``). Every input is fixed -- RSA keys
are derived from a seed, dates and timestamp times are constants, PKCS#1 v1.5 signatures are
deterministic, the random parts of osslsigncode's timestamps are pinned -- so running it twice
gives byte-identical files.

Usage: ``.venv/bin/python samples/make_samples.py [--verify]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

HERE = Path(__file__).resolve().parent
SRC_DIR = HERE / "src"
PE_DIR = HERE / "pe"
PKI_DIR = HERE / "pki"
MANIFEST = HERE / "manifest.json"

OSSLSIGNCODE = "osslsigncode"
CC64 = "x86_64-w64-mingw32-gcc"
CC32 = "i686-w64-mingw32-gcc"
WINDRES64 = "x86_64-w64-mingw32-windres"
CFLAGS = [
    "-Os",
    "-s",
    "-nostdlib",
    "-nostartfiles",
    "-ffreestanding",
    "-fno-asynchronous-unwind-tables",
    "-Wl,--no-insert-timestamp",
    "-Wl,--build-id=none",
]

KEY_SEED = b"rmmscan test samples v1"
CRL_URL = "http://crl.rmmscan.test/codesign.crl"
CRL_URL_2 = "http://crl2.rmmscan.test/pki/codesign.crl"


def utc(*args: int) -> datetime:
    """A timezone-aware UTC datetime."""
    return datetime(*args, tzinfo=UTC)


SIGNING_TIME = utc(2025, 3, 3, 9, 30, 0)  # the signer's claimed signingTime (osslsigncode -time)
TS_TIME = utc(2025, 3, 3, 9, 30, 5)  # RFC 3161 genTime of the primary signature
TS_TIME_NESTED = (utc(2025, 3, 3, 9, 31, 7), utc(2025, 3, 3, 9, 32, 9))  # nested[0], nested[1]
EXPIRED_SIGNING_TIME = utc(2020, 6, 15, 12, 0, 0)  # inside the expired leaf's validity
EXPIRED_TS_TIME = utc(2020, 6, 15, 12, 0, 30)
PKCS9_TIME = utc(2025, 3, 4, 8, 15, 0)  # signingTime inside the legacy PKCS#9 counter-signature
LEAF_NOT_BEFORE, LEAF_NOT_AFTER = utc(2024, 1, 1), utc(2040, 1, 1)

OID_JURISDICTION_C = ObjectIdentifier("1.3.6.1.4.1.311.60.2.1.3")
OID_COUNTER_SIGNATURE = "1.2.840.113549.1.9.6"
IMAGE_DIRECTORY_ENTRY_SECURITY = 4
WIN_CERT_REVISION_2_0 = 0x0200
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002


# --------------------------------------------------------------------------- deterministic RSA keys


class _Drbg:
    """A SHA-256 counter-mode byte stream: a reproducible source of key material."""

    def __init__(self, seed: bytes) -> None:
        self._seed, self._counter, self._buffer = seed, 0, b""

    def bits(self, n: int) -> int:
        """``n`` random bits as an int."""
        nbytes = (n + 7) // 8
        while len(self._buffer) < nbytes:
            self._buffer += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        chunk, self._buffer = self._buffer[:nbytes], self._buffer[nbytes:]
        return int.from_bytes(chunk, "big") >> (nbytes * 8 - n)


_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _is_probable_prime(n: int, rng: _Drbg, rounds: int = 40) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(2 + rng.bits(n.bit_length() - 1) % (n - 3), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(rng: _Drbg, bits: int, e: int) -> int:
    while True:
        candidate = rng.bits(bits) | (3 << (bits - 2)) | 1  # two top bits: n has exactly 2*bits
        if (candidate - 1) % e and _is_probable_prime(candidate, rng):
            return candidate


def derive_rsa_key(label: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key derived from ``KEY_SEED`` and ``label``: the same label gives the same key."""
    e = 65537
    rng = _Drbg(KEY_SEED + b"/" + label.encode())
    p = _prime(rng, bits // 2, e)
    q = _prime(rng, bits // 2, e)
    while q == p:
        q = _prime(rng, bits // 2, e)
    d = pow(e, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(e, p * q)
    return rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    ).private_key()


# --------------------------------------------------------------------------- test PKI


@dataclass
class Identity:
    """A certificate with its key, its issuer and the PEM files written for it."""

    label: str
    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    issuer: Identity | None  # None for a self-signed certificate

    @property
    def pem(self) -> Path:
        return PKI_DIR / f"{self.label}.pem"

    @property
    def key_pem(self) -> Path:
        return PKI_DIR / f"{self.label}.key"

    @property
    def chain_pem(self) -> Path:
        """Leaf + issuing CA: what ``-certs`` puts into the signature's certificate bag."""
        return PKI_DIR / f"{self.label}-chain.pem"


def _attr(oid: ObjectIdentifier, value: str, kind: _ASN1Type | None = None) -> x509.NameAttribute:
    if kind is None:
        return x509.NameAttribute(oid, value)
    return x509.NameAttribute(oid, value, _type=kind)


def _name(*attrs: tuple) -> x509.Name:
    """A Name from ``(oid, value[, string type])`` tuples, in DER order (country first)."""
    return x509.Name([_attr(*a) for a in attrs])


PKI_O = (NameOID.ORGANIZATION_NAME, "rmmscan Test PKI")
ROOT_NAME = _name(PKI_O, (NameOID.COMMON_NAME, "rmmscan Test Root CA"))
CA_NAME = _name(PKI_O, (NameOID.COMMON_NAME, "rmmscan Test Code Signing CA"))
TSA_NAME = _name(PKI_O, (NameOID.COMMON_NAME, "rmmscan Test Timestamping Authority"))
UTF8 = _ASN1Type.UTF8String
PRINTABLE = _ASN1Type.PrintableString


@dataclass(frozen=True)
class LeafSpec:
    """A code-signing leaf certificate to issue."""

    label: str
    name: x509.Name
    serial: int
    crl_urls: tuple[str, ...]
    not_before: datetime = LEAF_NOT_BEFORE
    not_after: datetime = LEAF_NOT_AFTER
    t61_cn: str | None = None  # re-encode the CN as a T61String with these (latin-1) characters


DWSNET_OU_NAME = _name(
    (NameOID.COUNTRY_NAME, "EE"),
    (NameOID.ORGANIZATION_NAME, "DWSNET OÜ", UTF8),
    (NameOID.COMMON_NAME, "DWSNET OÜ", UTF8),
)
LEAVES = [
    # 16-byte serial with the high bit set: its DER content octets start with 00.
    LeafSpec("dwsnet-ou", DWSNET_OU_NAME, 0x8A3F5C2E9B1D4F6071A8C3E5D7F90B12, (CRL_URL,)),
    LeafSpec(
        "dwsnet-srl",
        _name(
            (NameOID.COUNTRY_NAME, "IT"),
            (NameOID.STATE_OR_PROVINCE_NAME, "Napoli", UTF8),
            (NameOID.ORGANIZATION_NAME, "DWSNET srl", UTF8),
            (NameOID.COMMON_NAME, "DWSNET srl", UTF8),
        ),
        0x3C1E4B7A90D2F5816E2A9B4C7D0E3F51,  # high bit clear: no leading 00
        (CRL_URL, CRL_URL_2),
    ),
    LeafSpec(
        "contoso",
        _name(
            (NameOID.COUNTRY_NAME, "US"),
            (NameOID.STATE_OR_PROVINCE_NAME, "Washington", UTF8),
            (NameOID.LOCALITY_NAME, "Redmond", UTF8),
            (NameOID.ORGANIZATION_NAME, "Contoso Tools, Ltd.", UTF8),  # a comma: escaped in DNs
            (NameOID.COMMON_NAME, "Contoso Tools Ltd", UTF8),
        ),
        0x0123456789ABCDEF,
        (CRL_URL, CRL_URL_2),
    ),
    LeafSpec(
        "expired",
        _name(
            (NameOID.COUNTRY_NAME, "DE"),
            (NameOID.ORGANIZATION_NAME, "Expired Example GmbH", UTF8),
            (NameOID.COMMON_NAME, "Expired Example GmbH", UTF8),
        ),
        0x7E57ED01,
        (CRL_URL,),
        not_before=utc(2020, 1, 1),
        not_after=utc(2021, 1, 1),
    ),
    LeafSpec(
        "nocdp",  # EV-style subject, emailAddress, no CRL distribution point extension
        _name(
            (OID_JURISDICTION_C, "DE"),
            (NameOID.BUSINESS_CATEGORY, "Private Organization", UTF8),
            (NameOID.SERIAL_NUMBER, "HRB 12345"),
            (NameOID.COUNTRY_NAME, "DE"),
            (NameOID.LOCALITY_NAME, "Berlin", UTF8),
            (NameOID.ORGANIZATION_NAME, "No CDP Signer GmbH", UTF8),
            (NameOID.COMMON_NAME, "No CDP Signer GmbH", UTF8),
            (NameOID.EMAIL_ADDRESS, "codesign@nocdp.example"),
        ),
        0x00C0FFEE,  # high bit set in the first content byte: 00c0ffee
        (),
    ),
    LeafSpec(
        "bmpstring",
        _name(
            (NameOID.COUNTRY_NAME, "FI"),
            (NameOID.ORGANIZATION_NAME, "Unicode Test Oy", PRINTABLE),
            (NameOID.COMMON_NAME, "Ünïcode BMP Signer", _ASN1Type.BMPString),
        ),
        0x42,
        (CRL_URL,),
    ),
    LeafSpec(
        "t61string",
        _name(
            (NameOID.COUNTRY_NAME, "FR"),
            (NameOID.ORGANIZATION_NAME, "Societe T61", PRINTABLE),
            (NameOID.COMMON_NAME, "T61 placeholder", PRINTABLE),  # replaced by t61_cn
        ),
        0x61,
        (CRL_URL,),
        t61_cn="Société T61",
    ),
]
SELF_SIGNED_SERIAL = 0x5E1F5167


def _ski(key: rsa.RSAPrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _aki(issuer: Identity) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())


def _key_usage(*, digital_signature: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _crl_dp(urls: tuple[str, ...]) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint([x509.UniformResourceIdentifier(u)], None, None, None)
            for u in urls
        ]
    )


def _builder(
    subject: x509.Name,
    issuer_name: x509.Name,
    key: rsa.RSAPrivateKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_ski(key), critical=False)
    )


def make_ca(
    label: str,
    name: x509.Name,
    serial: int,
    issuer: Identity | None,
    not_before: datetime,
    path_len: int | None,
) -> Identity:
    """A CA certificate: self-signed when ``issuer`` is None."""
    key = derive_rsa_key(label)
    b = _builder(
        name,
        issuer.cert.subject if issuer else name,
        key,
        serial,
        not_before,
        utc(2049, 12, 31, 23, 59, 59),
    )
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
    b = b.add_extension(_key_usage(digital_signature=True, ca=True), critical=True)
    if issuer:
        b = b.add_extension(_aki(issuer), critical=False)
    cert = b.sign(issuer.key if issuer else key, hashes.SHA256())
    return Identity(label, cert, key, issuer)


def make_tsa(root: Identity) -> Identity:
    """The time-stamping authority: EKU timeStamping (critical), issued by the root."""
    key = derive_rsa_key("tsa")
    b = _builder(TSA_NAME, root.cert.subject, key, 0x0A, utc(2019, 1, 1), utc(2049, 12, 31))
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(_key_usage(digital_signature=True), critical=True)
    b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    b = b.add_extension(_aki(root), critical=False)
    return Identity("tsa", b.sign(root.key, hashes.SHA256()), key, root)


def make_leaf(spec: LeafSpec, issuer: Identity | None) -> Identity:
    """A code-signing leaf issued by ``issuer`` (self-signed when None)."""
    key = derive_rsa_key(spec.label)
    signing_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else spec.name
    b = _builder(spec.name, issuer_name, key, spec.serial, spec.not_before, spec.not_after)
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
    b = b.add_extension(_key_usage(digital_signature=True), critical=True)
    b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    if issuer:
        b = b.add_extension(_aki(issuer), critical=False)
    if spec.crl_urls:
        b = b.add_extension(_crl_dp(spec.crl_urls), critical=False)
    cert = b.sign(signing_key, hashes.SHA256())
    if spec.t61_cn is not None:
        cert = _with_t61_cn(cert, spec.t61_cn, signing_key)
    return Identity(spec.label, cert, key, issuer)


def _with_t61_cn(
    cert: x509.Certificate, cn: str, issuer_key: rsa.RSAPrivateKey
) -> x509.Certificate:
    """Re-encode the subject CN as a T61String holding latin-1 bytes and re-sign the certificate.

    cryptography writes UTF-8 bytes into a T61String; real-world T61 names carry 8-bit latin-1 /
    cp1252 text, which is what OpenSSL, Windows' fallback and asn1crypto's x509 names decode.
    """
    parsed = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    tbs = parsed["tbs_certificate"]
    rdns = []
    for rdn in tbs["subject"].chosen:
        atv = rdn[0]
        if atv["type"].native == "common_name":
            t61 = core.TeletexString(contents=cn.encode("latin-1"))
            atv = core.Sequence(contents=core.ObjectIdentifier("2.5.4.3").dump() + t61.dump())
        rdns.append(core.SetOf(contents=atv.dump()).dump())
    tbs["subject"] = ax509.Name.load(core.Sequence(contents=b"".join(rdns)).dump())
    tbs_der = tbs.dump()
    signature = issuer_key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA256())
    new = ax509.Certificate(
        {
            "tbs_certificate": tbs,
            "signature_algorithm": parsed["signature_algorithm"],
            "signature_value": signature,
        }
    )
    return x509.load_der_x509_certificate(new.dump())


def make_crl(issuer: Identity) -> x509.CertificateRevocationList:
    """An empty CRL valid for the samples' lifetime (for ``osslsigncode verify -CRLfile``)."""
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(utc(2019, 6, 1))
        .next_update(utc(2049, 12, 31))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(_aki(issuer), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pki(root: Identity, ca: Identity, tsa: Identity, leaves: list[Identity]) -> None:
    """Write certificates, keys, signing chains and CRLs (all PEM) to ``PKI_DIR``."""
    for ident in (root, ca, tsa, *leaves):
        ident.pem.write_bytes(_pem(ident.cert))
        ident.key_pem.write_bytes(_key_pem(ident.key))
    for leaf in leaves:
        if leaf.issuer is not None:
            leaf.chain_pem.write_bytes(_pem(leaf.cert) + _pem(leaf.issuer.cert))
    (PKI_DIR / "tsa-chain.pem").write_bytes(_pem(tsa.cert) + _pem(root.cert))
    crls = [
        make_crl(root).public_bytes(serialization.Encoding.PEM),
        make_crl(ca).public_bytes(serialization.Encoding.PEM),
    ]
    (PKI_DIR / "test-root.crl.pem").write_bytes(crls[0])
    (PKI_DIR / "codesign-ca.crl.pem").write_bytes(crls[1])
    (PKI_DIR / "crls.pem").write_bytes(b"".join(crls))


def build_pki() -> dict[str, Identity]:
    """The whole test PKI, keyed by label."""
    root = make_ca("test-root", ROOT_NAME, 0x01, None, utc(2018, 1, 1), path_len=1)
    ca = make_ca("codesign-ca", CA_NAME, 0x02, root, utc(2019, 1, 1), path_len=0)
    tsa = make_tsa(root)
    leaves = [make_leaf(spec, ca) for spec in LEAVES]
    fake = make_leaf(
        LeafSpec("selfsigned-dwsnet-ou", DWSNET_OU_NAME, SELF_SIGNED_SERIAL, ()), issuer=None
    )
    leaves.append(fake)
    write_pki(root, ca, tsa, leaves)
    return {i.label: i for i in (root, ca, tsa, *leaves)}


# --------------------------------------------------------------------------- expected fields


_ATTR_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.6": "C",
    "1.2.840.113549.1.9.1": "E",
    "2.5.4.5": "SERIALNUMBER",
    "0.9.2342.19200300.100.1.25": "DC",
}
_STRING_CODECS = {  # universal tag -> codec of the content octets
    12: "utf-8",  # UTF8String
    19: "ascii",  # PrintableString
    22: "ascii",  # IA5String
    26: "ascii",  # VisibleString
    20: "latin-1",  # T61String: 8-bit latin-1, as written by _with_t61_cn
    30: "utf-16-be",  # BMPString
    28: "utf-32-be",  # UniversalString
}
_DN_SPECIAL = ',+"\\<>;'


def _names(cert: x509.Certificate) -> tuple[ax509.Name, ax509.Name]:
    """(subject, issuer) parsed with asn1crypto.

    Names are decoded from the DER here, not through cryptography: its ``Name`` refuses a
    T61String that is not valid UTF-8 (``t61string.pem``).
    """
    tbs = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))["tbs_certificate"]
    return tbs["subject"], tbs["issuer"]


def _rdns(name: ax509.Name) -> list[list[tuple[str, str]]]:
    """The name's RDNs in DER order, each a list of (short type name or dotted OID, text)."""
    out = []
    for rdn in name.chosen:
        values = []
        for atv in rdn:
            oid = atv["type"].dotted
            raw = core.load(atv["value"].dump())
            text = unicodedata.normalize("NFC", raw.contents.decode(_STRING_CODECS[raw.tag]))
            values.append((_ATTR_NAMES.get(oid, oid), text))
        out.append(values)
    return out


def render_dn(name: ax509.Name) -> str:
    """The DN most-specific first (reverse DER order), ``CN=…, O=…, C=…``, minimal escaping."""
    return ", ".join(
        "+".join(
            f"{key}=" + "".join("\\" + c if c in _DN_SPECIAL else c for c in text)
            for key, text in rdn
        )
        for rdn in reversed(_rdns(name))
    )


def common_name(name: ax509.Name) -> str:
    """The CN (else O, else the whole DN) of a name; the most specific one if repeated."""
    attrs = [a for rdn in reversed(_rdns(name)) for a in rdn]
    for wanted in ("CN", "O"):
        for key, text in attrs:
            if key == wanted:
                return text
    return render_dn(name)


def serial_hex(serial: int) -> str:
    """Lower-case hex of the DER INTEGER content octets of a positive serial (00 sign byte kept)."""
    return serial.to_bytes(serial.bit_length() // 8 + 1, "big").hex()


def _sha1(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex()  # a thumbprint


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Sig:
    """One signature as the generator made it: who signed, how, and the expected verdict."""

    signer: Identity
    digest: str  # "sha1" | "sha256"
    ts_time: datetime | None
    status: str = "Ok"
    issuer_in_bag: bool = True
    signing_time: datetime = SIGNING_TIME  # the signer's own claim; never the countersignature

    def expected(self, index: int) -> dict:
        """The manifest object of this signature."""
        cert = self.signer.cert
        issuer_cert = self.signer.issuer.cert if self.signer.issuer else cert  # self-signed
        subject, issuer = _names(cert)
        return {
            "SignatureIndex": index,
            "Signer": common_name(subject),
            "Issuer": common_name(issuer),
            "SignerHash": _sha1(cert),
            "IssuerHash": _sha1(issuer_cert) if self.issuer_in_bag else None,
            "CertificateSerialNumber": serial_hex(cert.serial_number),
            "CrlDistributionPointUrls": crl_urls(cert),
            "CertificateCreationTime": _iso(cert.not_valid_before_utc),
            "CertificateExpirationTime": _iso(cert.not_valid_after_utc),
            "CertificateCountersignatureTime": _iso(self.ts_time),
            "DigestAlgorithm": self.digest,
            "SignerSubject": render_dn(subject),
            "IssuerSubject": render_dn(issuer),
            "VerificationStatus": self.status,
            "IsTrusted": self.status == "Ok",
        }


def crl_urls(cert: x509.Certificate) -> list[str]:
    """The URIs of the certificate's CRL distribution points, in order."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        n.value
        for dp in ext
        for n in (dp.full_name or [])
        if isinstance(n, x509.UniformResourceIdentifier)
    ]


# --------------------------------------------------------------------------- building and signing


def run(args: list[str]) -> str:
    """Run a command (no shell); fail loudly with its output."""
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def compile_lookalike(work: Path) -> Path:
    """hello.c with DWService-like version information (src/dwagent.rc)."""
    res, exe = work / "dwagent.res.o", work / "dwagent64.exe"
    run([WINDRES64, "-O", "coff", "-o", str(res), str(SRC_DIR / "dwagent.rc")])
    sources = [str(SRC_DIR / "hello.c"), str(res)]
    run([CC64, *CFLAGS, "-Wl,-e,start", "-o", str(exe), *sources, "-lkernel32"])
    return exe


LOOKALIKE_VERSION = {
    "CompanyName": "DWSNET srl",
    "FileDescription": "DWAgent",
    "InternalName": "dwagent",
    "OriginalFilename": "dwagent.exe",
    "ProductName": "DWAgent",
    "ProductVersion": "1.0.0.0",
}


def lookalike_samples(pki: dict[str, Identity], signer: Signer, src: Path) -> list[Sample]:
    """The starting hypothesis: DWService's name and version information, with and without
    DWSNET's signature."""
    version = LOOKALIKE_VERSION
    return [
        Sample(
            "dwagent-lookalike-unsigned.exe",
            "DWService-like version information (CompanyName DWSNET srl, ProductName DWAgent, "
            "OriginalFilename dwagent.exe), unsigned",
            src.read_bytes(),
            version=version,
        ),
        Sample(
            "dwagent-lookalike-selfsigned.exe",
            "the same version information, signed by the self-signed fake CN=DWSNET OÜ",
            signer.sign_all(
                src, fake := Sig(pki["selfsigned-dwsnet-ou"], "sha256", TS_TIME, "UntrustedRoot")
            ),
            [fake],
            version=version,
        ),
        Sample(
            "dwagent-lookalike-srl.exe",
            "the same version information, signed by DWSNET srl under the test root "
            "(the genuine article, as far as the test PKI goes)",
            signer.sign_all(src, good := Sig(pki["dwsnet-srl"], "sha256", TS_TIME)),
            [good],
            version=version,
        ),
    ]


def compile_pe(work: Path) -> tuple[Path, Path]:
    """Build the unsigned programs: a 64-bit console exe and a 32-bit DLL (both CRT-less)."""
    exe, dll = work / "hello64.exe", work / "plugin32.dll"
    run([CC64, *CFLAGS, "-Wl,-e,start", "-o", str(exe), str(SRC_DIR / "hello.c"), "-lkernel32"])
    run(
        [
            CC32,
            *CFLAGS,
            "-shared",
            "-Wl,-e,_DllEntry@12",
            "-Wl,--disable-auto-image-base",
            "-o",
            str(dll),
            str(SRC_DIR / "plugin.c"),
            "-lkernel32",
        ]
    )
    return exe, dll


class Signer:
    """Drives ``osslsigncode sign`` with the test PKI's files."""

    def __init__(self, pki: dict[str, Identity], work: Path) -> None:
        self.pki, self.work, self._steps = pki, work, 0

    def sign(self, src: Path, sig: Sig, *, nest: bool = False) -> Path:
        """Sign ``src`` (with ``nest``: add a nested signature to it); returns the new file."""
        self._steps += 1
        out = self.work / f"step{self._steps:02d}-{sig.signer.label}{src.suffix}"
        ident = sig.signer
        certs = ident.chain_pem if ident.issuer is not None and sig.issuer_in_bag else ident.pem
        args = [OSSLSIGNCODE, "sign", "-certs", str(certs), "-key", str(ident.key_pem)]
        args += ["-h", sig.digest, "-time", str(int(sig.signing_time.timestamp()))]
        if nest:
            args.append("-nest")
        if sig.ts_time is not None:
            args += ["-TSA-certs", str(PKI_DIR / "tsa-chain.pem")]
            args += ["-TSA-key", str(self.pki["tsa"].key_pem)]
            args += ["-TSA-time", str(int(sig.ts_time.timestamp()))]
        run([*args, "-in", str(src), "-out", str(out)])
        out.write_bytes(pin_timestamps(out.read_bytes(), self.pki["tsa"]))
        return out

    def sign_all(self, src: Path, *sigs: Sig) -> bytes:
        """``src`` signed with ``sigs[0]``, then each further one added with ``-nest``."""
        path = self.sign(src, sigs[0])
        for sig in sigs[1:]:
            path = self.sign(path, sig, nest=True)
        data = path.read_bytes()
        # The manifest lists nested signatures in file order: check it is the -nest order.
        wanted = [sig.signer.cert.serial_number for sig in sigs]
        if signer_serials(data) != wanted:
            raise RuntimeError(f"{src.name}: signatures not in the order they were added")
        return data


# --------------------------------------------------------------------------- PE surgery


@dataclass
class CertTable:
    """Where a PE's certificate table is, and where its data-directory entry is."""

    dir_offset: int  # file offset of IMAGE_DATA_DIRECTORY[SECURITY]
    checksum_offset: int
    offset: int  # VirtualAddress field (a file offset for this directory)
    size: int


def cert_table(data: bytes) -> CertTable:
    """Locate the security data directory of a PE image."""
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    opt = pe + 24
    magic = struct.unpack_from("<H", data, opt)[0]
    dirs = opt + (96 if magic == 0x10B else 112)
    entry = dirs + 8 * IMAGE_DIRECTORY_ENTRY_SECURITY
    offset, size = struct.unpack_from("<II", data, entry)
    return CertTable(entry, opt + 64, offset, size)


def set_cert_dir(data: bytearray, offset: int, size: int) -> None:
    struct.pack_into("<II", data, cert_table(data).dir_offset, offset, size)


def pe_checksum(data: bytes | bytearray) -> int:
    """The PE optional-header checksum (as computed by imagehlp's CheckSumMappedFile)."""
    skip = cert_table(data).checksum_offset
    padded = bytes(data) + b"\0" * (len(data) % 2)
    total = 0
    for i, (word,) in enumerate(struct.iter_unpack("<H", padded)):
        if i * 2 in (skip, skip + 2):
            continue
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ((total & 0xFFFF) + len(data)) & 0xFFFFFFFF


def fix_checksum(data: bytearray) -> None:
    struct.pack_into("<I", data, cert_table(data).checksum_offset, pe_checksum(data))


def der_length(blob: bytes) -> int:
    """Total length of the DER TLV at the start of ``blob``."""
    first = blob[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    return 2 + n + int.from_bytes(blob[2 : 2 + n], "big")


def pkcs7_of(data: bytes) -> tuple[int, bytes]:
    """The file offset and the DER bytes of the first entry's PKCS#7 SignedData."""
    table = cert_table(data)
    start = table.offset + 8
    return start, data[start : start + der_length(data[start : start + 6])]


def win_certificate(pkcs7: bytes, slack: bytes = b"") -> bytes:
    """A WIN_CERTIFICATE entry padded to 8 bytes; dwLength covers the padding, as signtool and
    osslsigncode write it (osslsigncode refuses an entry whose dwLength differs from the table)."""
    body = pkcs7 + slack
    length = 8 + len(body) + (-(8 + len(body)) % 8)
    header = struct.pack("<IHH", length, WIN_CERT_REVISION_2_0, WIN_CERT_TYPE_PKCS_SIGNED_DATA)
    return (header + body).ljust(length, b"\0")


def replace_table(data: bytes, table_bytes: bytes) -> bytes:
    """The file with its (final) certificate table replaced; data directory and checksum fixed."""
    table = cert_table(data)
    out = bytearray(data[: table.offset] + table_bytes)
    set_cert_dir(out, table.offset, len(table_bytes))
    fix_checksum(out)
    return bytes(out)


def add_pkcs9_countersignature(data: bytes, tsa: Identity, when: datetime) -> bytes:
    """Add a legacy PKCS#9 counter-signature (1.2.840.113549.1.9.6) by the TSA key to the primary
    signer, add the TSA certificate to the bag, and rewrite the certificate table around it."""
    _, der = pkcs7_of(data)
    content_info = cms.ContentInfo.load(der)
    signed_data = content_info["content"]
    signer_info = signed_data["signer_infos"][0]
    encrypted_digest = signer_info["signature"].native
    tsa_cert = ax509.Certificate.load(tsa.cert.public_bytes(serialization.Encoding.DER))

    attrs = [
        cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        cms.CMSAttribute(
            {"type": "signing_time", "values": [cms.Time(name="utc_time", value=when)]}
        ),
        cms.CMSAttribute(
            {"type": "message_digest", "values": [hashlib.sha256(encrypted_digest).digest()]}
        ),
    ]
    attrs.sort(key=lambda a: a.dump())  # DER SET OF order
    signed_attrs = cms.CMSAttributes(attrs)
    signature = tsa.key.sign(signed_attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
    counter_signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value={"issuer": tsa_cert.issuer, "serial_number": tsa_cert.serial_number},
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
            "signed_attrs": signed_attrs,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
            "signature": signature,
        }
    )
    unsigned = cms.CMSAttribute({"type": OID_COUNTER_SIGNATURE, "values": [counter_signer]})
    signer_info["unsigned_attrs"] = cms.CMSAttributes([unsigned])
    signed_data["certificates"] = cms.CertificateSet(
        [*signed_data["certificates"], cms.CertificateChoices(name="certificate", value=tsa_cert)]
    )
    return replace_table(data, win_certificate(content_info.dump()))


def _pin_token(token_der: bytes, tsa: Identity) -> bytes:
    """An osslsigncode built-in TSA token made reproducible and re-signed with the TSA key.

    osslsigncode draws the TSTInfo serial number and nonce at random, signs with the current time
    as the TSA's signingTime and writes the token's certificates (the TSA certificate twice, then
    the root) in varying order: derive serial and nonce from the message imprint, use genTime as
    signingTime, and put the certificates in DER SET OF order.
    """
    token = cms.ContentInfo.load(token_der)
    signed_data = token["content"]
    certs = sorted(signed_data["certificates"], key=lambda c: c.dump())
    signed_data["certificates"] = cms.CertificateSet(certs)
    eci = signed_data["encap_content_info"]
    tst = tsp.TSTInfo.load(eci["content"].contents)
    seed = hashlib.sha256(b"tsa" + tst["message_imprint"].dump()).digest()
    tst["serial_number"] = int.from_bytes(seed[:8], "big") >> 1
    tst["nonce"] = int.from_bytes(seed[8:16], "big") >> 1
    tst_der = tst.dump(force=True)
    eci["content"] = core.ParsableOctetString(tst_der)

    signer_info = signed_data["signer_infos"][0]
    algorithm = signer_info["digest_algorithm"]["algorithm"].native
    attrs = []
    for attr in signer_info["signed_attrs"]:
        kind = attr["type"].native
        if kind == "signing_time":
            when = cms.Time(name="utc_time", value=tst["gen_time"].native)
            attr = cms.CMSAttribute({"type": kind, "values": [when]})
        elif kind == "message_digest":
            digest = hashlib.new(algorithm, tst_der).digest()
            attr = cms.CMSAttribute({"type": kind, "values": [digest]})
        attrs.append(attr)
    signed_attrs = cms.CMSAttributes(sorted(attrs, key=lambda a: a.dump()))
    hash_algorithm = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[algorithm]
    signer_info["signed_attrs"] = signed_attrs
    signer_info["signature"] = tsa.key.sign(signed_attrs.dump(), padding.PKCS1v15(), hash_algorithm)
    return token.dump()


def _pin_signature(content_info_der: bytes, tsa: Identity) -> bytes:
    """A signature with its RFC 3161 tokens, and those of its nested signatures, pinned.

    Rebuilt level by level from freshly loaded DER: mutating a deep asn1crypto tree in place
    makes every later ``dump()`` re-serialize it again and again (minutes instead of seconds).
    """
    content_info = cms.ContentInfo.load(content_info_der)
    for signer_info in content_info["content"]["signer_infos"]:
        attrs = []
        for attr in signer_info["unsigned_attrs"] or []:
            kind = attr["type"].native
            pin = {
                "microsoft_time_stamp_token": _pin_token,
                "microsoft_nested_signature": _pin_signature,
            }.get(kind)
            if pin is not None:
                values = [cms.ContentInfo.load(pin(v.dump(), tsa)) for v in attr["values"]]
                attr = cms.CMSAttribute({"type": kind, "values": values})
            attrs.append(attr)
        if attrs:
            signer_info["unsigned_attrs"] = cms.CMSAttributes(attrs)
    return content_info.dump()


def signer_serials(data: bytes) -> list[int]:
    """Serial numbers of the primary and nested signers, in file (depth-first) order."""

    def walk(content_info: cms.ContentInfo) -> list[int]:
        out = []
        for signer_info in content_info["content"]["signer_infos"]:
            out.append(signer_info["sid"].chosen["serial_number"].native)
            for attr in signer_info["unsigned_attrs"] or []:
                if attr["type"].native == "microsoft_nested_signature":
                    for nested in attr["values"]:
                        out.extend(walk(nested))
        return out

    return walk(cms.ContentInfo.load(pkcs7_of(data)[1]))


def pin_timestamps(data: bytes, tsa: Identity) -> bytes:
    """The signed file with every RFC 3161 token made reproducible (see ``_pin_token``)."""
    _, der = pkcs7_of(data)
    pinned = _pin_signature(der, tsa)
    return data if pinned == der else replace_table(data, win_certificate(pinned))


# --------------------------------------------------------------------------- the sample set


@dataclass
class Sample:
    """One generated file and its expected reading."""

    name: str
    description: str
    data: bytes
    signatures: list[Sig] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    is_pe: bool = True
    version: dict[str, str] = field(default_factory=dict)  # StringFileInfo, from the .rc

    def manifest(self) -> dict:
        return {
            "description": self.description,
            "is_pe": self.is_pe,
            "anomalies": self.anomalies,
            "signatures": [s.expected(i) for i, s in enumerate(self.signatures)],
            "version": self.version,
        }


def signed_samples(pki: dict[str, Identity], signer: Signer, exe: Path, dll: Path) -> list[Sample]:
    """Intact signatures: signers, digests, timestamps, nesting, name encodings, trust failures."""
    ou, srl, contoso, expired = pki["dwsnet-ou"], pki["dwsnet-srl"], pki["contoso"], pki["expired"]

    def sample(name: str, description: str, *sigs: Sig, src: Path = exe) -> Sample:
        return Sample(name, description, signer.sign_all(src, *sigs), list(sigs))

    notimestamp = sample(
        "notimestamp.exe", "signed by DWSNET OÜ, sha256, no timestamp", Sig(ou, "sha256", None)
    )
    pkcs9_sig = Sig(ou, "sha256", PKCS9_TIME)
    pkcs9 = Sample(
        "pkcs9-countersigned.exe",
        "notimestamp.exe plus a legacy PKCS#9 counter-signature (unsigned attribute "
        "1.2.840.113549.1.9.6, sha256, by the TSA key; signingTime 2025-03-04T08:15:00Z); "
        "TSA certificate added to the bag",
        add_pkcs9_countersignature(notimestamp.data, pki["tsa"], PKCS9_TIME),
        [pkcs9_sig],
    )
    return [
        sample(
            "dwsnet-ou.exe",
            "64-bit exe signed by DWSNET OÜ (UTF8String names), sha256, RFC 3161 timestamp",
            Sig(ou, "sha256", TS_TIME),
        ),
        sample(
            "dwsnet-ou-sha1.exe",
            "64-bit exe signed by DWSNET OÜ, sha1, RFC 3161 timestamp",
            Sig(ou, "sha1", TS_TIME),
        ),
        sample(
            "dwsnet-srl.exe",
            "signed by DWSNET srl (ST=Napoli, C=IT; two CRL URLs), sha256, timestamped",
            Sig(srl, "sha256", TS_TIME),
        ),
        sample(
            "benign.exe",
            "a benign signer, Contoso Tools Ltd (O contains a comma), sha256, timestamped",
            Sig(contoso, "sha256", TS_TIME),
        ),
        sample(
            "no-crldp.exe",
            "leaf without a CRL distribution point extension; EV-style subject (jurisdictionC, "
            "businessCategory, SERIALNUMBER) and an emailAddress; serial 00c0ffee",
            Sig(pki["nocdp"], "sha256", TS_TIME),
        ),
        sample(
            "leaf-only.exe",
            "DWSNET srl signature whose certificate bag holds only the leaf (no issuer "
            "certificate): IssuerHash is null and the chain cannot be built",
            Sig(srl, "sha256", TS_TIME, "UntrustedRoot", issuer_in_bag=False),
        ),
        sample(
            "nested-sha1-sha256.exe",
            "index 0 (primary): sha1 by Contoso Tools Ltd; index 1 (nested[0]): sha256 by "
            "DWSNET OÜ; each timestamped",
            Sig(contoso, "sha1", TS_TIME),
            Sig(ou, "sha256", TS_TIME_NESTED[0]),
        ),
        sample(
            "nested-sha256-sha1.exe",
            "index 0 (primary): sha256 by DWSNET OÜ; index 1 (nested[0]): sha1 by Contoso "
            "Tools Ltd; each timestamped",
            Sig(ou, "sha256", TS_TIME),
            Sig(contoso, "sha1", TS_TIME_NESTED[0]),
        ),
        sample(
            "nested-depth3.exe",
            "three signatures; osslsigncode -nest adds each to the primary's nested-signature "
            "attribute, so both nested ones are siblings: index 0 (primary) sha1 Contoso Tools "
            "Ltd; index 1 (nested[0]) sha256 DWSNET OÜ; index 2 (nested[1]) sha256 DWSNET srl; "
            "each timestamped at a distinct time",
            Sig(contoso, "sha1", TS_TIME),
            Sig(ou, "sha256", TS_TIME_NESTED[0]),
            Sig(srl, "sha256", TS_TIME_NESTED[1]),
        ),
        notimestamp,
        pkcs9,
        sample(
            "expired-timestamped.exe",
            "leaf valid 2020-01-01..2021-01-01, timestamped inside that window: still valid",
            Sig(expired, "sha256", EXPIRED_TS_TIME, signing_time=EXPIRED_SIGNING_TIME),
        ),
        sample(
            "expired-notimestamp.exe",
            "the same expired leaf, no timestamp",
            Sig(expired, "sha256", None, "Expired", signing_time=EXPIRED_SIGNING_TIME),
        ),
        sample(
            "selfsigned-dwsnet-ou.exe",
            "a self-signed fake CN=DWSNET OÜ leaf (not under the test root); its issuer is "
            "itself, so IssuerHash == SignerHash",
            Sig(pki["selfsigned-dwsnet-ou"], "sha256", TS_TIME, "UntrustedRoot"),
        ),
        sample(
            "bmpstring.exe",
            "leaf CN as BMPString (UTF-16BE) 'Ünïcode BMP Signer', O as PrintableString",
            Sig(pki["bmpstring"], "sha256", TS_TIME),
        ),
        sample(
            "t61string.exe",
            "leaf CN as T61String holding the latin-1 bytes 'Soci\\xe9t\\xe9 T61', read as "
            "latin-1/cp1252 (OpenSSL, asn1crypto's x509 names); strict T.61 (asn1crypto's "
            "TeletexString) gives 'SociØtØ T61' and cryptography refuses the name",
            Sig(pki["t61string"], "sha256", TS_TIME),
        ),
        sample(
            "dll32.dll",
            "32-bit (i686) CRT-less DLL signed by Contoso Tools Ltd, sha256, timestamped",
            Sig(contoso, "sha256", TS_TIME),
            src=dll,
        ),
    ]


def damaged_samples(good: Sample, other_pkcs7: bytes, other_sig: Sig) -> list[Sample]:
    """Copies of ``good`` (dwsnet-ou.exe) with a damaged file, signature or certificate table."""
    data, (sig,) = good.data, good.signatures
    table = cert_table(data)
    p7_start, p7 = pkcs7_of(data)

    def with_status(status: str) -> list[Sig]:
        return [replace(sig, status=status)]

    tampered = bytearray(data)
    at = tampered.index(b"rmmscan test sample: hello")
    tampered[at + len("rmmscan test sample: ")] ^= 0x02  # 'h' -> 'j', inside .rdata

    bad = bytearray(data)
    encrypted_digest = cms.ContentInfo.load(p7)["content"]["signer_infos"][0]["signature"]
    at = bad.index(encrypted_digest.contents, p7_start)
    bad[at + len(encrypted_digest.contents) // 2] ^= 0xFF

    trailer = b"RMMSCAN-TRAILING-DATA/" * 4
    slack = b"SLACK-INSIDE-ENTRY" * 2
    lying = bytearray(data)
    set_cert_dir(lying, table.offset, 0x7FFFFFF0)
    outside = bytearray(data)
    set_cert_dir(outside, len(data) + 0x1000, table.size)
    garbage = bytearray(data)
    noise = random.Random(0x6A7B).randbytes(len(p7))
    garbage[p7_start : p7_start + len(p7)] = b"\x04" + noise[1:]  # not even a SEQUENCE

    return [
        Sample(
            "modified-after-signing.exe",
            "dwsnet-ou.exe with one byte of a string in .rdata changed after signing "
            "(PE checksum left stale)",
            bytes(tampered),
            with_status("InvalidDigest"),
        ),
        Sample(
            "bad-signature.exe",
            "dwsnet-ou.exe with one byte of the signer's encryptedDigest (the RSA signature) "
            "flipped: file digest intact, signature does not verify",
            bytes(bad),
            with_status("BadSignature"),
        ),
        Sample(
            "garbage-after-table.exe",
            f"dwsnet-ou.exe with {len(trailer)} bytes appended after the certificate table; "
            "data directory not updated. The Authenticode digest covers data after the table, "
            "so the file no longer matches its signature (osslsigncode refuses it too)",
            data + trailer,
            with_status("InvalidDigest"),
            ["data_after_certificate_table"],
        ),
        Sample(
            "slack-in-entry.exe",
            f"dwsnet-ou.exe whose WIN_CERTIFICATE dwLength covers {len(slack)} junk bytes after "
            "the PKCS#7; data directory size and checksum updated",
            replace_table(data, win_certificate(p7, slack)),
            [sig],
            ["slack_in_certificate_entry"],
        ),
        Sample(
            "two-entries.exe",
            "dwsnet-ou.exe with a second WIN_CERTIFICATE entry appended to the table (the "
            "PKCS#7 of a DWSNET srl signature of the same image); data directory size updated. "
            "Windows reads only the first entry; rmmscan reports both (index 1 is the second "
            "entry's), since a signature hidden there is a fact worth seeing (osslsigncode "
            "refuses the file: dwLength != table size)",
            replace_table(data, win_certificate(p7) + win_certificate(other_pkcs7)),
            [sig, other_sig],
            ["multiple_certificate_entries"],
        ),
        Sample(
            "lying-size.exe",
            "dwsnet-ou.exe whose certificate-table size claims 0x7FFFFFF0 bytes (past EOF); the "
            "entry itself is intact, so a reader that clamps to EOF still finds the signer, but "
            "the table is malformed",
            bytes(lying),
            with_status("Malformed"),
            ["certificate_table_size_exceeds_file"],
        ),
        Sample(
            "table-outside-file.exe",
            "dwsnet-ou.exe whose certificate-table offset points 4 KiB past EOF (the original "
            "table bytes are still at the end, unreferenced)",
            bytes(outside),
            [],
            ["certificate_table_outside_file"],
        ),
        Sample(
            "garbage-pkcs7.exe",
            "dwsnet-ou.exe with its PKCS#7 bytes overwritten by random bytes (same length, "
            "WIN_CERTIFICATE header intact)",
            bytes(garbage),
            [],
            ["pkcs7_malformed"],
        ),
        Sample(
            "truncated-pkcs7.exe",
            "dwsnet-ou.exe cut in the middle of its PKCS#7; data directory unchanged (so the "
            "table also runs past EOF). The signer, its certificate and the timestamp's time "
            "come before the cut: rmmscan reads them, and the signature is Malformed",
            data[: p7_start + len(p7) // 2],
            with_status("Malformed"),
            ["certificate_table_size_exceeds_file", "pkcs7_truncated"],
        ),
    ]


def build_samples(pki: dict[str, Identity], work: Path) -> list[Sample]:
    """Build every sample file in memory (the caller writes them)."""
    exe, dll = compile_pe(work)
    signer = Signer(pki, work)
    signed = signed_samples(pki, signer, exe, dll)
    good = next(s for s in signed if s.name == "dwsnet-ou.exe")
    srl_sig = Sig(pki["dwsnet-srl"], "sha256", TS_TIME)
    srl_pkcs7 = pkcs7_of(signer.sign_all(exe, srl_sig))[1]
    plain = [
        Sample(
            "unsigned.exe",
            "the plain unsigned 64-bit exe all other .exe samples are signed from",
            exe.read_bytes(),
        ),
        Sample(
            "not-a-pe.bin",
            "starts with MZ but is not a PE: e_lfanew points at text, not at 'PE\\0\\0'",
            not_a_pe(),
            is_pe=False,
        ),
    ]
    lookalikes = lookalike_samples(pki, signer, compile_lookalike(work))
    return signed + damaged_samples(good, srl_pkcs7, srl_sig) + plain + lookalikes


def not_a_pe() -> bytes:
    """``MZ`` + text; e_lfanew (offset 0x3C) points into the text, where there is no PE header."""
    text = b"MZ this is not a portable executable, just text that starts with MZ.\n" * 3
    data = bytearray(text)
    struct.pack_into("<I", data, 0x3C, 0x40)
    return bytes(data)


# --------------------------------------------------------------------------- main


def verify(path: Path) -> str:
    """The last line of ``osslsigncode verify`` against the test root and the test CRLs.

    ``-CRLfile`` matters: without it osslsigncode fetches the leaf's CRL distribution point
    (``crl.rmmscan.test`` does not resolve) and fails every file whose leaf has one.
    """
    root = str(PKI_DIR / "test-root.pem")
    args = [OSSLSIGNCODE, "verify", "-CAfile", root, "-TSA-CAfile", root]
    args += ["-CRLfile", str(PKI_DIR / "crls.pem"), "-in", str(path)]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    return f"rc={proc.returncode} {lines[-1] if lines else ''}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--verify", action="store_true", help="run osslsigncode verify on every file afterwards"
    )
    parser.add_argument(
        "--out", type=Path, help="write pe/, pki/ and manifest.json here instead of samples/"
    )
    args = parser.parse_args()
    for tool in (OSSLSIGNCODE, CC64, CC32, WINDRES64):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (needs mingw-w64 and osslsigncode >= 2.9)")

    # Build beside the target and swap at the end, so that the committed samples never
    # disappear while a regeneration runs (tests and benchmarks read them).
    final = (args.out or HERE).resolve()
    final.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=final))
    global PE_DIR, PKI_DIR, MANIFEST
    PE_DIR, PKI_DIR, MANIFEST = work / "pe", work / "pki", work / "manifest.json"
    for d in (PE_DIR, PKI_DIR):
        d.mkdir(parents=True)
    pki = build_pki()
    with tempfile.TemporaryDirectory(prefix="rmmscan-samples-") as tmp:
        samples = build_samples(pki, Path(tmp))

    files = {}
    for sample in sorted(samples, key=lambda s: s.name):
        assert len(sample.data) < 64 * 1024, sample.name
        (PE_DIR / sample.name).write_bytes(sample.data)
        files[sample.name] = sample.manifest()
    manifest = {
        "generated_by": "samples/make_samples.py",
        "trusted_roots": "pki/test-root.pem",
        "files": files,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in ("pe", "pki", "manifest.json"):
        target = final / name
        if target.is_dir():
            shutil.rmtree(target)
        (work / name).replace(target)
    work.rmdir()
    PE_DIR, PKI_DIR, MANIFEST = final / "pe", final / "pki", final / "manifest.json"
    print(f"wrote {len(files)} files to {PE_DIR}")
    if args.verify:
        for name in files:
            print(f"{name:28} {verify(PE_DIR / name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
