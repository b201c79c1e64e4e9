"""Every embedded Authenticode signature of a certificate table, and its columns.

This is the fast path (no verification): asn1crypto parses lazily, certificates are looked
up in a per-thumbprint cache, so a typical table costs well under a millisecond. The
parsed SignedData is kept on the result so that verification never parses twice.
"""

from __future__ import annotations

import datetime as dt

from asn1crypto import cms, core, parser, tsp

from . import _signify  # noqa: F401  (registers Authenticode's ASN.1 types with asn1crypto)
from .certificates import cert_info
from .certtable import Entry
from .model import Anomaly, CertInfo, SignatureInfo

MAX_SIGNATURES = 64
MAX_DEPTH = 8
_TIMESTAMP_ATTRS = ("microsoft_time_stamp_token", "signature_time_stamp_token")
_ERRORS = (
    ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError
)  # fmt: skip


def signatures(entries: list[Entry]) -> tuple[list[SignatureInfo], list[Anomaly]]:
    """Primary and nested signatures in depth-first order (SignatureIndex order)."""
    found: list[SignatureInfo] = []
    anomalies: list[Anomaly] = []
    for entry in entries:
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
    nested = []
    for attr in attrs:
        try:
            kind = attr["type"].native
            if kind in _TIMESTAMP_ATTRS and info.countersignature_time is None:
                info.countersignature_time = _rfc3161_time(attr["values"])
                info.countersignature_kind = "rfc3161"
            elif kind == "counter_signature" and info.countersignature_time is None:
                info.countersignature_time = _pkcs9_time(attr["values"][0])
                info.countersignature_kind = "pkcs9"
            elif kind == "microsoft_nested_signature":
                nested.extend(attr["values"])
        except _ERRORS as exc:
            info.problems.append(f"unsigned attribute does not parse: {exc}")
    if depth + 1 >= MAX_DEPTH and nested:
        info.problems.append(f"nested signatures deeper than {MAX_DEPTH} not read")
        return
    for value in nested:
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


def _find_signer(sid: cms.SignerIdentifier, certs: tuple[CertInfo, ...]) -> CertInfo | None:
    if sid.name != "issuer_and_serial_number":
        return None  # subjectKeyIdentifier is not used by Authenticode
    issuer = sid.chosen["issuer"].dump()
    serial = sid.chosen["serial_number"].native
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


def _rfc3161_time(values: cms.SetOfContentInfo) -> dt.datetime:
    """genTime of the first timestamp token.

    The token is a whole SignedData (certificates, signer) around a small TSTInfo; walking
    it with asn1crypto's tokenizer costs a tenth of building its objects. Anything
    unexpected takes the full parse, which names the fault.
    """
    try:
        content_info = _tlvs(values.contents)[0][1]  # ContentInfo
        signed_data = _tlvs(_tlvs(content_info)[1][1])[0][1]  # [0] EXPLICIT SignedData
        encap = _tlvs(signed_data)[2][1]  # version, digestAlgorithms, encapContentInfo
        octets = _tlvs(_tlvs(encap)[1][1])[0][1]  # [0] EXPLICIT OCTET STRING
        tst_info = _tlvs(octets)[0][1]
        tag, gen_time = _tlvs(tst_info)[4]  # version, policy, imprint, serial, genTime
        if tag == 24:  # GeneralizedTime
            return _utc(core.GeneralizedTime(contents=gen_time).native)
    except _ERRORS:
        pass
    content = values[0]["content"]["encap_content_info"]["content"]
    parsed = content.parsed
    tst = parsed if isinstance(parsed, tsp.TSTInfo) else tsp.TSTInfo.load(content.contents)
    return _utc(tst["gen_time"].native)


def _tlvs(data: bytes, limit: int = 5) -> list[tuple[int, bytes]]:
    """(tag, contents) of the first `limit` TLVs in `data`."""
    out = []
    while data and len(out) < limit:
        length = parser.peek(data)
        _, _, tag, _, contents, _ = parser.parse(data[:length])
        out.append((tag, contents))
        data = data[length:]
    return out


def _pkcs9_time(counter_signer: cms.SignerInfo) -> dt.datetime:
    for attr in counter_signer["signed_attrs"]:
        if attr["type"].native == "signing_time":
            return _utc(attr["values"][0].native)
    raise ValueError("PKCS#9 counter-signature without signingTime")


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
