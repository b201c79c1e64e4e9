"""Every embedded Authenticode signature of a certificate table, and its columns.

This is the fast path (no verification): certificates are looked up in a per-thumbprint
cache, so a typical table costs well under a millisecond. Verification parses the
SignedData again from the bytes kept on the result (``signed_data``), for the few rows that
need a verdict.

Two readers give the same result. asn1crypto's lazy objects read anything, BER included;
``der.py``'s bounded walk reads only the plain DER shape of Authenticode (every length
definite, no extra field) at half the cost, and hands every value it needs to the
same asn1crypto classes; on anything else it gives up, and asn1crypto reads the signature.
tests/test_authenticode_fast.py holds them equal on samples, real-world and mutated files.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from asn1crypto import algos, cms, core, tsp

from . import (
    _signify,  # noqa: F401  (registers Authenticode's ASN.1 types with asn1crypto)
    der,
)
from .certificates import cert_info
from .certtable import Entry
from .model import Anomaly, CertInfo, SignatureInfo

MAX_SIGNATURES = 64
MAX_DEPTH = 8
_TIMESTAMP_ATTRS = ("microsoft_time_stamp_token", "signature_time_stamp_token")
_ERRORS = (
    ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError
)  # fmt: skip


FAST = True  # tests turn the DER walk off to compare


def signed_data(sig: SignatureInfo) -> cms.SignedData | None:
    """The parsed SignedData of a signature, for verification (parsed on first use)."""
    if sig.asn1 is None and sig.der:
        sig.asn1 = cms.ContentInfo.load(sig.der)["content"]
    return sig.asn1


def signatures(entries: list[Entry]) -> tuple[list[SignatureInfo], list[Anomaly]]:
    """Primary and nested signatures in depth-first order (SignatureIndex order)."""
    found: list[SignatureInfo] = []
    anomalies: list[Anomaly] = []
    for entry in entries:
        if FAST and _fast(entry.blob, entry.index, 0, found):
            continue
        try:
            content = cms.ContentInfo.load(entry.blob)
            if content["content_type"].native != "signed_data":
                raise ValueError(f"ContentInfo holds {content['content_type'].native}")
            signed_data = content["content"]
        except _ERRORS as exc:
            if not entry.truncated:  # a truncated blob is already reported as such
                anomalies.append(Anomaly.PKCS7_MALFORMED)
            found.append(_malformed(len(found), entry.index, f"PKCS#7 does not parse: {exc}"))
            continue
        _walk(signed_data, entry.index, 0, found)
    return found[:MAX_SIGNATURES], anomalies


def _malformed(index: int, entry: int, problem: str) -> SignatureInfo:
    return SignatureInfo(
        index=index,
        digest_algorithm="",
        signer=None,
        issuer=None,
        countersignature_time=None,
        countersignature_kind=None,
        certificates=(),
        problems=[problem],
        entry=entry,
    )


def _walk(signed_data: cms.SignedData, entry: int, depth: int, out: list[SignatureInfo]) -> None:
    if len(out) >= MAX_SIGNATURES:
        return
    info = _malformed(len(out), entry, "")
    info.problems.clear()
    info.asn1 = signed_data
    out.append(info)
    try:
        signer_infos = signed_data["signer_infos"]
        if len(signer_infos) != 1:
            info.problems.append(f"{len(signer_infos)} SignerInfos, Authenticode requires 1")
        if not len(signer_infos):
            return
        signer_info = signer_infos[0]
        info.digest_algorithm = signer_info["digest_algorithm"]["algorithm"].native
        info.certificates = tuple(_certificates(signed_data, info.problems))
        info.signer = _find_signer(signer_info["sid"], info.certificates)
        if info.signer is None:
            info.problems.append("the signer's certificate is not in the signature")
        else:
            info.issuer = _find_issuer(info.signer, info.certificates)
        unsigned = signer_info["unsigned_attrs"]
        # Never .native here: it converts the nested signatures too (minutes on real files).
        attrs = [] if isinstance(unsigned, core.Void) else list(unsigned)
    except _ERRORS as exc:
        info.problems.append(f"SignedData does not parse: {exc}")
        return
    nested = _attributes(info, attrs)
    _nested(info, nested, entry, depth, out)


@dataclass(frozen=True, slots=True)
class _Located:
    """An unsigned attribute der.py located, of a type below: what asn1crypto would give."""

    kind: str  # its type, as asn1crypto names it
    der: bytes  # the whole Attribute
    values: bytes  # the contents of its SET of values
    nested: tuple[bytes, ...]  # each value, whole (ContentInfos, for a nested signature)


# The attribute types read without asn1crypto, by the exact DER of their OID.
_LOCATED = {
    cms.CMSAttributeType(kind).dump(): kind
    for kind in (*_TIMESTAMP_ATTRS, "microsoft_nested_signature")
}


def _locate(blob: bytes, start: int, end: int) -> _Located | cms.CMSAttribute:
    found = der.attribute(blob, start, end)
    if found is not None and found[0] in _LOCATED:
        oid, (a, b), values = found
        if all(blob[x] == 0x30 for x, _ in values):  # as SetOfContentInfo requires
            return _Located(_LOCATED[oid], blob[start:end], blob[a:b],
                            tuple(blob[x:y] for x, y in values))  # fmt: skip
    return cms.CMSAttribute.load(blob[start:end])


def _attributes(info: SignatureInfo, attrs) -> list[cms.ContentInfo | bytes]:
    """Timestamps onto `info`; the nested signatures' ContentInfos (or their DER) returned."""
    nested: list[cms.ContentInfo | bytes] = []
    for attr in attrs:
        try:
            if isinstance(attr, _Located):
                kind = attr.kind
                if kind == "microsoft_nested_signature":
                    nested.extend(attr.nested)
                    continue
            else:
                kind = attr["type"].native
            if kind in _TIMESTAMP_ATTRS and info.countersignature_time is None:
                info.countersignature_time = _rfc3161_time(attr)
                info.countersignature_kind = "rfc3161"
            elif kind == "counter_signature" and info.countersignature_time is None:
                info.countersignature_time = _pkcs9_time(attr["values"][0])
                info.countersignature_kind = "pkcs9"
            elif kind == "microsoft_nested_signature":
                nested.extend(attr["values"])
        except _ERRORS as exc:
            info.problems.append(f"unsigned attribute does not parse: {exc}")
    return nested


def _nested(info: SignatureInfo, nested, entry: int, depth: int, out) -> None:
    if depth + 1 >= MAX_DEPTH and nested:
        info.problems.append(f"nested signatures deeper than {MAX_DEPTH} not read")
        return
    for value in nested:
        blob = value if isinstance(value, bytes) else value.dump()
        if FAST and _fast(blob, entry, depth + 1, out):
            continue
        if isinstance(value, bytes):
            value = cms.ContentInfo.load(value)
        try:
            if value["content_type"].native != "signed_data":
                raise ValueError("nested signature is not SignedData")
            child = value["content"]
        except _ERRORS as exc:
            out.append(_malformed(len(out), entry, f"nested signature does not parse: {exc}"))
            continue
        _walk(child, entry, depth + 1, out)


def _certificates(signed_data: cms.SignedData, problems: list[str]) -> list[CertInfo]:
    certs = signed_data["certificates"]
    if isinstance(certs, core.Void):
        return []
    out = []
    for choice in certs:
        if choice.name != "certificate":
            continue
        try:
            out.append(cert_info(choice.chosen.dump()))
        except ValueError as exc:
            problems.append(str(exc))
    return out


def _fast(blob: bytes, entry: int, depth: int, out: list[SignatureInfo]) -> bool:
    """What _walk gives for the ContentInfo `blob`, read with der.py; False (and `out` as it
    was) when the encoding is not the plain DER shape, or when a part is faulty (a
    certificate that does not parse, a signer not found): asn1crypto then reads it all, and
    its lazy parse decides which fault it reports."""
    if len(out) >= MAX_SIGNATURES:
        return False  # _walk's own handling
    shape = der.signed_data(blob)
    if shape is None or shape.sid is None:  # a subjectKeyIdentifier: no signer, a fault
        return False
    try:
        certificates = tuple(cert_info(blob[a:b]) for a, b in shape.certificates)
        digest = algos.DigestAlgorithmId.load(blob[shape.digest_oid[0] : shape.digest_oid[1]])
        digest_algorithm = digest.native
        serial = core.Integer.load(blob[shape.sid.serial[0] : shape.sid.serial[1]]).native
        attrs = [_locate(blob, a, b) for a, b in shape.unsigned]
    except _ERRORS:
        return False
    signer = _signer(blob[shape.sid.issuer[0] : shape.sid.issuer[1]], serial, certificates)
    if signer is None:
        return False
    info = _malformed(len(out), entry, "")
    info.problems.clear()
    info.der = blob[: shape.end]
    out.append(info)
    if shape.signer_infos != 1:
        info.problems.append(f"{shape.signer_infos} SignerInfos, Authenticode requires 1")
    info.digest_algorithm = digest_algorithm
    info.certificates = certificates
    info.signer = signer
    info.issuer = _find_issuer(signer, certificates)
    _nested(info, _attributes(info, attrs), entry, depth, out)
    return True


def _find_signer(sid: cms.SignerIdentifier, certs: tuple[CertInfo, ...]) -> CertInfo | None:
    if sid.name != "issuer_and_serial_number":
        return None  # subjectKeyIdentifier is not used by Authenticode
    return _signer(sid.chosen["issuer"].dump(), sid.chosen["serial_number"].native, certs)


def _signer(issuer: bytes, serial: int, certs: tuple[CertInfo, ...]) -> CertInfo | None:
    """The certificate an IssuerAndSerialNumber names (issuer as DER)."""
    for cert in certs:
        if cert.serial_int == serial and cert.issuer_key == issuer:
            return cert
    return None


def _find_issuer(signer: CertInfo, certs: tuple[CertInfo, ...]) -> CertInfo | None:
    if signer.self_signed:
        return signer
    for cert in certs:
        if cert.subject_key == signer.issuer_key and cert.sha1 != signer.sha1:
            return cert
    return None


def _rfc3161_time(attr: _Located | cms.CMSAttribute) -> dt.datetime:
    """genTime of the attribute's first timestamp token.

    The token is a whole SignedData (certificates, signer) around a small TSTInfo; walking
    to genTime with der.py costs a twentieth of building its objects. Anything unexpected
    takes the full parse, which names the fault.
    """
    located = isinstance(attr, _Located)
    gen_time = der.timestamp_time(attr.values if located else attr["values"].contents)
    if gen_time is not None:
        fast = generalized_utc(gen_time)
        if fast is not None:
            return fast
        try:
            return _utc(core.GeneralizedTime(contents=gen_time).native)
        except _ERRORS:
            pass
    if located:
        attr = cms.CMSAttribute.load(attr.der)
    values = attr["values"]
    content = values[0]["content"]["encap_content_info"]["content"]
    parsed = content.parsed
    tst = parsed if isinstance(parsed, tsp.TSTInfo) else tsp.TSTInfo.load(content.contents)
    return _utc(tst["gen_time"].native)


# What a timestamp's genTime always is in DER (RFC 3161 §2.4.2): UTC, at most microseconds.
_GENERALIZED = re.compile(rb"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d{1,6}))?Z\Z")


def generalized_utc(contents: bytes) -> dt.datetime | None:
    """A GeneralizedTime's value, for the usual form only (None: ask asn1crypto).

    asn1crypto's parse goes through Fraction: 11.2 µs a timestamp against 2.0 µs here
    (benchmarks/micro_inspect.py), for the same datetime (tests/test_authenticode_fast.py).
    """
    m = _GENERALIZED.match(contents)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction = m.groups()
    micro = int(fraction.ljust(6, b"0")) if fraction else 0
    try:
        return dt.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                           micro, tzinfo=dt.UTC)  # fmt: skip
    except ValueError:  # year 0, hour 24, a leap second: asn1crypto's to judge
        return None


def _pkcs9_time(counter_signer: cms.SignerInfo) -> dt.datetime:
    for attr in counter_signer["signed_attrs"]:
        if attr["type"].native == "signing_time":
            return _utc(attr["values"][0].native)
    raise ValueError("PKCS#9 counter-signature without signingTime")


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
