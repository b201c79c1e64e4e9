"""Builders of specific attack files around an intact DWSNET OÜ signature.

Each builder starts from samples/pe/dwsnet-ou.exe (a valid DWSNET OÜ signature chaining to
samples/pki/test-root.pem), edits the PKCS#7 as a TLV tree (tests/mutate.py keeps every
byte it does not touch, certificates included) and rebuilds the certificate table around it
(data-directory size, WIN_CERTIFICATE dwLength, 8-byte alignment), so that the image digest
still matches and only the damage described differs from a signed file.

What external tools make of each file (tests/inspect/test_crafted.py checks the first column):
osslsigncode 2.9 `verify -in F -CAfile test-root.pem -TSA-CAfile test-root.pem -CRLfile
crls.pem -TSA-CRLfile crls.pem` (samples/pki), and OpenSSL 3.0 `pkcs7 -inform DER
-print_certs` on the output of `osslsigncode extract-signature`:

    ber_outer             osslsigncode: Succeeded    openssl: both certificates
    nested_len_80         osslsigncode: Succeeded, 2 signatures verified
    content_info_len_80   osslsigncode: Succeeded (ContentInfo length 0x82 0x17 0x80)
    signed_data_len_80    osslsigncode: Succeeded (SignedData length 0x82 0x17 0x80)
    big_unsigned_attr     osslsigncode: Succeeded    openssl: both certificates
    big_crl_bag           osslsigncode: Succeeded (the CRL is real, signed by the CA; with
                          a CRL in the bag it checks CRLs, hence -CRLfile for the root's)
    ca_tbs_set            osslsigncode: Failed, the PKCS#7 does not decode (X509_CINF)
    ca_no_signature       osslsigncode: Failed, the PKCS#7 does not decode (X509 signature)
    ca_subject_bad_type   osslsigncode: Failed, the PKCS#7 does not decode (mstring tag)
    ca_t61_e9             osslsigncode: Failed (the CA's subject no longer names the signer's
                          issuer: no chain); it and openssl read the signer DWSNET OÜ
    signer_bad_extension  osslsigncode: Failed (invalid certificate: its extensions); it and
                          openssl read the signer DWSNET OÜ

    nested_many           osslsigncode: Succeeded, 201 signatures verified (200 nested
                          copies of the Contoso signature in one attribute)
    nested_deep           osslsigncode: Succeeded for depth 5 in DER, BER indefinite and
                          long form; it verifies the primary and one nested level only

OpenSSL decodes a SignedData all or nothing, so one bad certificate in the bag hides the
signer from it; a tolerant reader takes the bag certificate by certificate and keeps the
signer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path

import mutate
from mutate import Node, encode, path, tlv

ROOT = Path(__file__).resolve().parent.parent
PE_DIR = ROOT / "samples" / "pe"
PKI = ROOT / "samples" / "pki"
MIB = 1024 * 1024
BASE = "dwsnet-ou.exe"
# nested-sha256-sha1.exe signs the same image as dwsnet-ou.exe: its nested Contoso signature
# is valid on every file built from dwsnet-ou.exe.
NESTED_DONOR = "nested-sha256-sha1.exe"
PRIVATE_OID = bytes.fromhex("060a2b06010401868d1f0101")  # 1.3.6.1.4.1.99999.1.1
EXT_KEY_USAGE = bytes.fromhex("0603551d0f")  # 2.5.29.15

SIGNER_CN = "DWSNET OÜ"
SIGNER_SERIAL = "008a3f5c2e9b1d4f6071a8c3e5d7f90b12"


def sample(name: str) -> bytes:
    return (PE_DIR / name).read_bytes()


def primary(data: bytes) -> Node:
    """The first entry's ContentInfo as a tree (offsets in the file)."""
    seed = mutate.Seed.of(data)
    assert seed.tree is not None, "the sample has no readable primary signature"
    return seed.tree


def rebuild(data: bytes, tree: Node) -> bytes:
    """The file with its first entry's PKCS#7 replaced by the tree, other entries kept."""
    rest = [e.blob for e in mutate.layout(data).entries[1:]]
    return mutate.with_table(data, [encode(tree), *rest])


def signer_cert_der(name: str = "dwsnet-ou.pem") -> bytes:
    """The DER of a PEM certificate of samples/pki (for thumbprints)."""
    import base64

    text = (PKI / name).read_text("ascii")
    body = text.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return base64.b64decode("".join(body.split()))


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()


# --------------------------------------------------------------------------------------------
# Encodings


def outer_nodes(tree: Node, nested: bool = True) -> list[Node]:
    """The outer layers of a signature: ContentInfo, [0], SignedData, its SETs and bags,
    every SignerInfo and its unsigned attributes (and, with ``nested``, the same layers of
    every nested signature). Certificates, signed attributes, the signed content and the
    algorithm identifiers are left as stored: the signature covers their encoding.
    """
    found = [tree]
    explicit = path(tree, 1)
    sd = mutate.signed_data(tree)
    if explicit is None or sd is None or sd.children is None:
        return found
    found += [explicit, sd]
    for child in sd.children:
        if child.tag in (b"\x31", b"\xa0", b"\xa1"):  # digestAlgorithms, bags, signerInfos
            found.append(child)
    infos = sd.children[-1]
    for si in infos.children or ():
        found.append(si)
        attrs = mutate.unsigned_attrs(si)
        if attrs is None:
            continue
        found.append(attrs)
        for attr in attrs.children or ():
            found.append(attr)
            values = path(attr, 1)
            if values is not None:
                found.append(values)
    if nested:
        for inner in mutate.nested_values(tree):
            found += outer_nodes(inner, nested)
    return [n for n in found if n.children is not None]


def ber_indefinite(data: bytes, nested: bool = True) -> bytes:
    """The primary's outer layers in BER with indefinite lengths, the rest as stored."""
    tree = primary(data)
    for node in outer_nodes(tree, nested):
        node.indefinite = True
    return rebuild(data, tree)


def ber_long_form(data: bytes, nested: bool = True) -> bytes:
    """The outer layers with definite lengths one octet longer than DER's (0x82 0x00 0x05)."""
    tree = primary(data)
    for node in outer_nodes(tree, nested):
        length = len(node.body())
        node.length_octets = max(1, (length.bit_length() + 7) // 8) + 1
    return rebuild(data, tree)


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "der": lambda data: data,
    "ber-indefinite": ber_indefinite,
    "ber-long-form": ber_long_form,
}


# --------------------------------------------------------------------------------------------
# Unsigned attributes


def attribute(oid: bytes, *values: bytes) -> bytes:
    return tlv(0x30, oid + tlv(0x31, b"".join(values)))


def node_of(der: bytes) -> Node:
    return mutate.parse(der)


def unsigned_attrs(si: Node) -> Node:
    """The SignerInfo's [1] unsigned attributes, created (last) when it has none."""
    attrs = mutate.unsigned_attrs(si)
    if attrs is None:
        attrs = Node(tag=b"\xa1", children=[])
        si.children.append(attrs)
    return attrs


def pad_to_80(attrs: Node, measured: Node) -> None:
    """Append a private attribute to ``attrs`` so that ``measured``'s length ends in 0x80."""
    for size in range(0, 2048):
        pad = node_of(attribute(PRIVATE_OID, tlv(0x04, bytes(size))))
        attrs.children.append(pad)
        if len(measured.body()) & 0xFF == 0x80 and len(measured.body()) > 0xFF:
            return
        attrs.children.pop()
    raise AssertionError("no padding gives a length ending in 0x80")


def nested_len_80() -> bytes:
    """A nested signature whose ContentInfo length, and the primary's unsigned attributes'
    length, end in 0x80: 0x82 0x0N 0x80 read as a single octet is BER's indefinite form.

    The nested ContentInfo is nested-sha256-sha1.exe's Contoso signature (valid on this
    image); a private attribute in its own unsigned attributes sets its length.
    """
    data = sample(BASE)
    tree = primary(data)
    inner = mutate.nested_values(primary(sample(NESTED_DONOR)))[0]
    inner_si = mutate.signer_info(inner)
    pad_to_80(unsigned_attrs(inner_si), inner)
    si = mutate.signer_info(tree)
    attrs = unsigned_attrs(si)
    attrs.children.append(Node(tag=b"\x30", children=[
        node_of(mutate.OID_NESTED), Node(tag=b"\x31", children=[inner])
    ]))  # fmt: skip
    pad_to_80(attrs, attrs)
    return rebuild(data, tree)


def content_info_len_80() -> bytes:
    """The primary's ContentInfo length ends in 0x80 (a private unsigned attribute pads it)."""
    data = sample(BASE)
    tree = primary(data)
    pad_to_80(unsigned_attrs(mutate.signer_info(tree)), tree)
    return rebuild(data, tree)


def signed_data_len_80() -> bytes:
    """The primary's SignedData length ends in 0x80 (a private unsigned attribute pads it)."""
    data = sample(BASE)
    tree = primary(data)
    pad_to_80(unsigned_attrs(mutate.signer_info(tree)), mutate.signed_data(tree))
    return rebuild(data, tree)


def big_unsigned_attr(size: int = 17 * MIB) -> bytes:
    """One private unsigned attribute of ``size`` bytes on the primary (after the timestamp)."""
    data = sample(BASE)
    tree = primary(data)
    attrs = unsigned_attrs(mutate.signer_info(tree))
    attrs.children.append(node_of(attribute(PRIVATE_OID, tlv(0x04, b"\xa5" * size))))
    return rebuild(data, tree)


def big_crl(size: int) -> bytes:
    """A real CRL of the test CA, made ``size`` bytes larger by a private extension."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = serialization.load_pem_private_key((PKI / "codesign-ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((PKI / "codesign-ca.pem").read_bytes())
    moment = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(moment)
        .next_update(moment + dt.timedelta(days=3650))
    )
    if size:
        oid = x509.ObjectIdentifier("1.3.6.1.4.1.99999.1.2")
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x5a" * size), False)
    crl = builder.sign(key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def big_crl_bag(size: int = 17 * MIB) -> bytes:
    """A CRL bag [1] holding one ``size``-byte CRL, between the certificates and signerInfos."""
    data = sample(BASE)
    tree = primary(data)
    sd = mutate.signed_data(tree)
    bag = Node(tag=b"\xa1", children=[node_of(big_crl(size))])
    sd.children.insert(len(sd.children) - 1, bag)
    return rebuild(data, tree)


# --------------------------------------------------------------------------------------------
# Certificates


def _bag_certs(tree: Node) -> tuple[Node, Node]:
    """(the signer's certificate, the other one: the issuing CA's)."""
    signer = mutate.signer_certificate(tree)
    others = [c for c in mutate.certificate_bag(tree).children if c is not signer]
    assert signer is not None and len(others) == 1
    return signer, others[0]


def _tbs_field(cert: Node, index: int) -> Node:
    """A TBSCertificate field by its index after the optional [0] version."""
    tbs = cert[0]
    skip = 1 if tbs[0].tag == b"\xa0" else 0
    return tbs[index + skip]


def _subject_cn(cert: Node) -> Node:
    """The value node of the subject's (last) commonName."""
    subject = _tbs_field(cert, 4)
    found = None
    for rdn in subject.children:
        for atv in rdn.children:
            if encode(atv[0]) == bytes.fromhex("0603550403"):
                found = atv[1]
    assert found is not None
    return found


def _with_ca(edit: Callable[[Node], None]) -> bytes:
    data = sample(BASE)
    tree = primary(data)
    _, ca = _bag_certs(tree)
    edit(ca)
    return rebuild(data, tree)


def ca_tbs_set() -> bytes:
    """The CA certificate's TBSCertificate tagged SET instead of SEQUENCE."""

    def edit(ca: Node) -> None:
        ca[0].tag = b"\x31"

    return _with_ca(edit)


def ca_no_signature() -> bytes:
    """The CA certificate without its signatureValue BIT STRING."""

    def edit(ca: Node) -> None:
        assert ca.children[-1].tag == b"\x03"
        del ca.children[-1]

    return _with_ca(edit)


def ca_subject_bad_type() -> bytes:
    """The CA certificate's subject CN as an OCTET STRING, which no DirectoryString allows."""

    def edit(ca: Node) -> None:
        _subject_cn(ca).tag = b"\x04"

    return _with_ca(edit)


def ca_t61_e9() -> bytes:
    """The CA certificate's subject CN as a T61String holding 0xE9 ('é' in Latin-1)."""

    def edit(ca: Node) -> None:
        cn = _subject_cn(ca)
        cn.tag, cn.value = b"\x14", b"rmmscan Soci\xe9t\xe9 CA"

    return _with_ca(edit)


def signer_bad_extension() -> bytes:
    """The signer's keyUsage extension holds a BIT STRING whose length runs past its value.

    Subject, issuer, serial, validity and the CRL distribution points are intact; a strict
    certificate parser refuses the whole certificate (and its signature no longer verifies:
    the TBSCertificate changed). SignerHash is the SHA-1 of the certificate as stored here.
    """
    data = sample(BASE)
    tree = primary(data)
    signer, _ = _bag_certs(tree)
    extensions = _tbs_field(signer, 6)[0]
    for ext in extensions.children:
        if encode(ext[0]) == EXT_KEY_USAGE:
            ext.children[-1].value = b"\x03\x05\x07\x80"  # BIT STRING of 5 octets, 2 present
            break
    else:
        raise AssertionError("the signer has no keyUsage extension")
    return rebuild(data, tree)


def signer_der(data: bytes) -> bytes:
    """The signer certificate of a file's primary signature, as stored."""
    return encode(mutate.signer_certificate(primary(data)))


BUILDERS: dict[str, Callable[[], bytes]] = {
    "ber_outer": lambda: ber_indefinite(sample(BASE)),
    "nested_len_80": nested_len_80,
    "content_info_len_80": content_info_len_80,
    "signed_data_len_80": signed_data_len_80,
    "big_unsigned_attr": big_unsigned_attr,
    "big_crl_bag": big_crl_bag,
    "ca_tbs_set": ca_tbs_set,
    "ca_no_signature": ca_no_signature,
    "ca_subject_bad_type": ca_subject_bad_type,
    "ca_t61_e9": ca_t61_e9,
    "signer_bad_extension": signer_bad_extension,
}
# The builders osslsigncode verifies (signer and chain), with the CA file given.
OSSLSIGNCODE_ACCEPTS = {
    "ber_outer", "nested_len_80", "content_info_len_80", "signed_data_len_80",
    "big_unsigned_attr", "big_crl_bag",
}  # fmt: skip


def fuzz_seeds() -> list[tuple[str, bytes]]:
    """Small variants of every builder, to seed a fuzzer: (the sample it starts from, bytes)."""
    seeds = []
    for name, build in BUILDERS.items():
        if name == "big_unsigned_attr":
            seeds.append((BASE, big_unsigned_attr(4096)))
        elif name == "big_crl_bag":
            seeds.append((BASE, big_crl_bag(4096)))
        else:
            seeds.append((BASE, build()))
    for name in (NESTED_DONOR, "nested-depth3.exe"):
        seeds.append((name, ber_indefinite(sample(name))))
        seeds.append((name, ber_long_form(sample(name))))
    return seeds


# --------------------------------------------------------------------------------------------
# Caps


def _with_nested(tree: Node, *inner: Node) -> Node:
    """The tree with one nested-signature attribute holding ``inner`` appended."""
    attrs = unsigned_attrs(mutate.signer_info(tree))
    attrs.children.append(Node(tag=b"\x30", children=[
        node_of(mutate.OID_NESTED), Node(tag=b"\x31", children=list(inner))
    ]))  # fmt: skip
    return tree


def nested_many(count: int = 200) -> bytes:
    """The primary with ``count`` nested copies of the Contoso signature, in one attribute."""
    data = sample(BASE)
    inner = mutate.nested_values(primary(sample(NESTED_DONOR)))[0]
    return rebuild(data, _with_nested(primary(data), *([inner] * count)))


def nested_deep(depth: int = 40) -> bytes:
    """A chain of ``depth`` signatures, each nested in the one before (DWSNET OÜ's copies
    around the Contoso signature at the bottom); every one of them is valid."""
    data = sample(BASE)
    inner = mutate.nested_values(primary(sample(NESTED_DONOR)))[0]
    for _ in range(depth - 1):
        inner = _with_nested(primary(data), inner)
    return rebuild(data, inner)
