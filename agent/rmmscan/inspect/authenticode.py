"""Every embedded Authenticode signature of a certificate table, and its columns.

One reader for every encoding: ber.py locates the parts of each ContentInfo (DER, BER with
indefinite or long-form lengths, or cut short) in place, and only what a column needs is
decoded: a certificate (certificates.py, once per thumbprint), an OID, a time. So the same
signature gives the same row however it is encoded, and damage in one part (a certificate,
an attribute, a nested signature) costs that part alone: the signature still gets its row,
with every column that could be read, and its problems named.

Verification parses a signature again, from the bytes kept on the result (``signed_data``),
for the few rows that need a verdict.

Bounds, each raising ``Anomaly.LIMIT_REACHED`` and a problem on the row when reached:
``MAX_SIGNATURES`` per file, ``MAX_DEPTH`` of nesting, ``MAX_CERTIFICATES`` per signature,
``MAX_ATTRIBUTES`` unsigned attributes per signer, ``MAX_KEPT`` bytes kept per signature for
verification (above it, unsigned attributes other than timestamps and a CRL bag are left out
of the kept copy: the signature does not cover them, ``Anomaly.ATTRIBUTE_TOO_LARGE``,
``Anomaly.CRLS_TOO_LARGE``) and
``MAX_KEPT_FILE`` per file.
"""

from __future__ import annotations

import datetime as dt
import re

from asn1crypto import algos, cms, core

from . import (
    asn1types,  # noqa: F401  (registers Authenticode's ASN.1 types with asn1crypto)
    ber,
)
from .certificates import time_at, tolerant_cert_info, utc
from .certtable import Entry
from .model import Anomaly, CertInfo, SignatureInfo

MAX_SIGNATURES = 64
MAX_DEPTH = 8
MAX_CERTIFICATES = 64
MAX_ATTRIBUTES = 64
MAX_SIGNER_INFOS = 16
MAX_KEPT = 2 * 1024 * 1024  # real signatures are tens of KiB; the largest tables ~1 MiB
MAX_KEPT_FILE = 8 * 1024 * 1024

SIGNED_DATA = ber.oid_contents("1.2.840.113549.1.7.2")
NESTED_SIGNATURE = ber.oid_contents("1.3.6.1.4.1.311.2.4.1")
TIMESTAMP_TOKENS = (
    ber.oid_contents("1.3.6.1.4.1.311.3.3.1"), ber.oid_contents("1.2.840.113549.1.9.16.2.14")
)
COUNTER_SIGNATURE = ber.oid_contents("1.2.840.113549.1.9.6")
SIGNING_TIME = ber.oid_contents("1.2.840.113549.1.9.5")
_KEEP = (*TIMESTAMP_TOKENS, COUNTER_SIGNATURE)  # attributes verification needs
# Bad content raises these from asn1crypto and from the reads below; anything else is a bug.
_ERRORS = (
    ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError
)  # fmt: skip
# OID contents -> name, as asn1crypto names digest algorithms
_DIGESTS = {ber.oid_contents(k): v for k, v in algos.DigestAlgorithmId._map.items()}


def signed_data(sig: SignatureInfo) -> cms.SignedData | None:
    """The parsed SignedData of a signature, for verification (parsed on first use)."""
    if sig.asn1 is None and sig.der:
        sig.asn1 = cms.ContentInfo.load(sig.der)["content"]
    return sig.asn1


def signatures(
    entries: list[Entry], errors: list[str] | None = None
) -> tuple[list[SignatureInfo], list[Anomaly]]:
    """Primary and nested signatures in depth-first order (SignatureIndex order); never raises
    on content. An unexpected exception (a bug) is added to `errors`, and the signature it
    struck still gets its row."""
    reader = _Reader(errors if errors is not None else [])
    for entry in entries:
        if len(reader.found) >= MAX_SIGNATURES:
            reader.anomaly(Anomaly.LIMIT_REACHED)
            break
        data = entry.blob
        reader.content_info(data, ber.element(data, 0, len(data)), entry, 0)
    ber.forget()
    return reader.found, reader.anomalies


class _Reader:
    """The signatures of one file, as they are found."""

    def __init__(self, errors: list[str]):
        self.found: list[SignatureInfo] = []
        self.anomalies: list[Anomaly] = []
        self.errors = errors
        self.kept = 0  # bytes kept for verification, file-wide

    def anomaly(self, anomaly: Anomaly) -> None:
        if anomaly not in self.anomalies:
            self.anomalies.append(anomaly)

    def content_info(self, data, top: ber.Element | None, entry: Entry, depth: int) -> None:
        if len(self.found) >= MAX_SIGNATURES:
            self.anomaly(Anomaly.LIMIT_REACHED)
            if self.found:
                self.found[-1].problems.append(f"more than {MAX_SIGNATURES} signatures: not read")
            return
        info = _empty(len(self.found), entry.index)
        if entry.rejected:
            info.rejected = f"{entry.rejected}: Windows does not read it"
            info.problems.append(info.rejected)
        self.found.append(info)
        nested: list[ber.Element] = []
        try:
            nested = self._signature(data, top, entry, info)
        except _ERRORS as exc:
            info.problems.append(f"signature does not parse: {exc}")
        except Exception as exc:  # a bug: reported, and the row stays
            self.errors.append(f"signature {info.index}: {type(exc).__name__}: {exc}")
            self.anomaly(Anomaly.INTERNAL_ERROR)
            info.problems.append(f"internal error while reading: {type(exc).__name__}")
        if nested and depth + 1 >= MAX_DEPTH:
            info.problems.append(f"nested signatures deeper than {MAX_DEPTH} not read")
            self.anomaly(Anomaly.LIMIT_REACHED)
            return
        for value in nested:
            self.content_info(data, value, entry, depth + 1)

    def _signature(self, data, top, entry: Entry, info: SignatureInfo) -> list[ber.Element]:
        """Fills `info`; returns the nested signatures' ContentInfos."""
        flags = 0
        if top is None or top.tag != ber.SEQUENCE:
            return self._unreadable(entry, info, "PKCS#7 does not parse: not a SEQUENCE")
        flags |= top.flags
        outer, _ = ber.children(data, top, 4)
        if (
            len(outer) < 2
            or outer[0].tag != ber.OID
            or not _is_oid(ber.contents(data, outer[0]), SIGNED_DATA)
            or outer[1].tag != ber.CTX0
        ):
            return self._unreadable(entry, info, "PKCS#7 does not parse: not a SignedData")
        explicit, _ = ber.children(data, outer[1], 2)
        if not explicit or explicit[0].tag != ber.SEQUENCE:
            return self._unreadable(entry, info, "PKCS#7 does not parse: no SignedData")
        signed = explicit[0]
        flags |= outer[1].flags | signed.flags
        fields, _ = ber.children(data, signed, 16)
        certificates = next((f for f in fields[3:] if f.tag == ber.CTX0), None)
        signer_set = next((f for f in reversed(fields[2:]) if f.tag == ber.SET), None)
        if len(fields) < 4 or fields[0].tag != ber.INTEGER or fields[1].tag != ber.SET:
            info.problems.append("SignedData is not in the shape Authenticode requires")
        if certificates is not None:
            flags |= certificates.flags
            info.certificates = tuple(self._certificates(data, certificates, info))
        left_out: list[ber.Element] = []
        crls = next((f for f in fields[3:] if f.tag == ber.CTX1), None)
        if crls is not None and crls.after - crls.start > MAX_KEPT // 4:
            left_out.append(crls)  # not covered by the signature, not read
            self.anomaly(Anomaly.CRLS_TOO_LARGE)
        if signer_set is None:
            info.problems.append("no SignerInfo")
            self._keep(data, top, left_out, info, flags)
            return []
        flags |= signer_set.flags
        signers, more = ber.children(data, signer_set, MAX_SIGNER_INFOS)
        count = f"more than {MAX_SIGNER_INFOS}" if more else str(len(signers))
        if len(signers) != 1:
            info.problems.append(f"{count} SignerInfos, Authenticode requires 1")
        if not signers:
            self._keep(data, top, left_out, info, flags)
            return []
        signer = signers[0]
        flags |= signer.flags
        parts, _ = ber.children(data, signer, 8)
        if len(parts) < 3:
            info.problems.append("SignerInfo does not parse")
            return []
        info.digest_algorithm = _digest_name(data, parts[2])
        info.signer, near = _find_signer(data, parts[1], info.certificates)
        if info.signer is None:
            info.problems.append("the signer's certificate is not in the signature")
        elif near:
            # One byte of the SignerInfo must not hide whose certificate the file carries.
            why = (
                f"its SignerInfo names none of its certificates exactly, and the one {near} "
                "is read as the signer's: Windows finds no signer"
            )
            info.rejected = f"{info.rejected}; {why}" if info.rejected else why
            info.problems.append(why)
        if info.signer is not None:
            info.issuer = _find_issuer(info.signer, info.certificates)
        unsigned = parts[-1] if len(parts) > 4 and parts[-1].tag == ber.CTX1 else None
        nested: list[ber.Element] = []
        nested_at: list[ber.Element] = []
        if unsigned is not None:
            flags |= unsigned.flags
            nested = self._attributes(data, unsigned, info, left_out, nested_at)
        if flags & ber.BER:
            self.anomaly(Anomaly.PKCS7_BER)
        if flags & ber.TRUNCATED and not entry.truncated:
            self.anomaly(Anomaly.PKCS7_TRUNCATED)
        if nested_at and flags & (ber.BER | ber.TRUNCATED):
            # A copy re-encoded for verification leaves the nested signatures out: each is
            # verified from its own copy, and re-encoding them at every level above them
            # would cost the depth times the size. If nothing else is left, the whole set goes.
            attributes, _ = ber.children(data, unsigned, MAX_ATTRIBUTES)
            gone = {a.start for a in (*left_out, *nested_at)}
            if all(a.start in gone for a in attributes):
                outside = [a for a in left_out if not unsigned.start < a.start < unsigned.after]
                left_out = [*outside, unsigned]
            else:
                left_out = left_out + nested_at
        self._keep(data, top, left_out, info, flags)
        return nested

    def _unreadable(self, entry: Entry, info: SignatureInfo, problem: str) -> list:
        if not entry.truncated:  # a truncated blob is already reported as such
            self.anomaly(Anomaly.PKCS7_MALFORMED)
        info.problems.append(problem)
        return []

    def _certificates(self, data, bag: ber.Element, info: SignatureInfo) -> list[CertInfo]:
        choices, more = ber.children(data, bag, MAX_CERTIFICATES)
        if more:
            info.problems.append(f"more than {MAX_CERTIFICATES} certificates: the rest not read")
            self.anomaly(Anomaly.LIMIT_REACHED)
        out = []
        for choice in choices:
            if choice.tag != ber.SEQUENCE:  # an attribute certificate or another choice
                continue
            try:
                cert, problem = tolerant_cert_info(data, choice)
            except _ERRORS as exc:
                info.problems.append(str(exc))
                self.anomaly(Anomaly.CERTIFICATE_MALFORMED)
                continue
            if problem:
                info.problems.append(problem)
                self.anomaly(Anomaly.CERTIFICATE_MALFORMED)
            out.append(cert)
        return out

    def _attributes(
        self,
        data,
        unsigned: ber.Element,
        info: SignatureInfo,
        left_out: list[ber.Element],
        nested_at: list[ber.Element],
    ) -> list[ber.Element]:
        """Timestamps onto `info`; the nested signatures' ContentInfos returned; the offsets of
        attributes too large to keep for verification added to `left_out`, those of nested
        signatures to `nested_at`."""
        attributes, more = ber.children(data, unsigned, MAX_ATTRIBUTES)
        if more:
            info.problems.append(f"more than {MAX_ATTRIBUTES} unsigned attributes: not read")
            self.anomaly(Anomaly.LIMIT_REACHED)
        nested: list[ber.Element] = []
        for attribute in attributes:
            parts, _ = ber.children(data, attribute, 2) if attribute.constructed else ([], False)
            if len(parts) < 2 or parts[0].tag != ber.OID:
                info.problems.append("an unsigned attribute does not parse")
                continue
            kind = ber.contents(data, parts[0])
            size = attribute.after - attribute.start
            if kind == NESTED_SIGNATURE:
                nested_at.append(attribute)  # verified from its own copy
            elif kind not in _KEEP and size > MAX_KEPT // 4:
                left_out.append(attribute)
                self.anomaly(Anomaly.ATTRIBUTE_TOO_LARGE)
            try:
                if kind == NESTED_SIGNATURE:
                    values, many = ber.children(data, parts[1], MAX_SIGNATURES)
                    nested.extend(values)
                    if many:
                        self.anomaly(Anomaly.LIMIT_REACHED)
                elif kind in TIMESTAMP_TOKENS and info.countersignature_time is None:
                    info.countersignature_time = _rfc3161_time(data, parts[1])
                    info.countersignature_kind = "rfc3161"
                elif kind == COUNTER_SIGNATURE and info.countersignature_time is None:
                    info.countersignature_time = _pkcs9_time(data, parts[1])
                    info.countersignature_kind = "pkcs9"
            except _ERRORS as exc:
                name = ber.oid_text(kind)
                info.problems.append(f"unsigned attribute {name} does not parse: {exc}")
        return nested

    def _keep(
        self,
        data,
        top: ber.Element,
        left_out: list[ber.Element],
        info: SignatureInfo,
        flags: int = 0,
    ) -> None:
        """The ContentInfo's bytes for verification: as stored when they are DER; in DER when
        they are not (asn1crypto, under signify, gives up on deep indefinite lengths that
        Windows reads); without the unsigned attributes in `left_out` when it is too large
        (only the layers around them re-encoded)."""
        size = top.after - top.start
        reencode = bool(flags & (ber.BER | ber.TRUNCATED))
        if size <= MAX_KEPT and not reencode:
            left_out = []
        drop = frozenset(el.start for el in left_out)
        if size - sum(el.after - el.start for el in left_out) > MAX_KEPT:
            der = b""
        else:
            der = ber.canonical(data, top, drop, der=reencode)
        if not der or len(der) > MAX_KEPT or self.kept + len(der) > MAX_KEPT_FILE:
            info.problems.append(f"signature of {size} bytes too large to verify")
            self.anomaly(Anomaly.LIMIT_REACHED)
            return
        self.kept += len(der)
        info.der = der


def _is_oid(raw: bytes, known: bytes) -> bool:
    """The OID, encoded minimally or not (an encoding Windows reads all the same)."""
    return raw == known or ber.oid_text(raw) == ber.oid_text(known)


def _empty(index: int, entry: int) -> SignatureInfo:
    return SignatureInfo(
        index=index,
        digest_algorithm="",
        signer=None,
        issuer=None,
        countersignature_time=None,
        countersignature_kind=None,
        certificates=(),
        entry=entry,
    )


def _digest_name(data, algorithm: ber.Element) -> str:
    parts, _ = ber.children(data, algorithm, 2) if algorithm.constructed else ([], False)
    if not parts or parts[0].tag != ber.OID:
        return ""
    raw = ber.contents(data, parts[0])
    return _DIGESTS.get(raw) or ber.oid_text(raw)


def _find_signer(
    data, sid: ber.Element, certs: tuple[CertInfo, ...]
) -> tuple[CertInfo | None, str]:
    """The certificate an IssuerAndSerialNumber names (a subjectKeyIdentifier: none, as
    Authenticode does not use it), and "". Names compare in their canonical encoding.
    When none matches both, the certificate it names in half, and which half: the only one
    with its serial number, or else the only one its issuer issued."""
    if sid.tag != ber.SEQUENCE:
        return None, ""
    parts, _ = ber.children(data, sid, 2)
    if len(parts) != 2:
        return None, ""
    same = []
    if parts[1].tag == ber.INTEGER:
        serial = int.from_bytes(ber.contents(data, parts[1])[:64], "big", signed=True)
        same = [c for c in certs if c.serial_int == serial]
    stored = ber.whole(data, parts[0])  # as stored: DER, nearly always
    for cert in same:
        if cert.issuer_key == stored:
            return cert, ""
    canonical = ber.canonical(data, parts[0])
    for cert in same:
        if cert.issuer_key == canonical:
            return cert, ""
    if len(same) == 1:
        return same[0], "with the serial number it names"
    issued = [c for c in certs if c.issuer_key in (stored, canonical) and not c.self_signed]
    if len(issued) == 1:
        return issued[0], "issued by the issuer it names"
    return None, ""


def _find_issuer(signer: CertInfo, certs: tuple[CertInfo, ...]) -> CertInfo | None:
    if signer.self_signed:
        return signer
    for cert in certs:
        if cert.subject_key == signer.issuer_key and cert.sha1 != signer.sha1:
            return cert
    return None


def _rfc3161_time(data, values: ber.Element) -> dt.datetime:
    """genTime of the first timestamp token: ContentInfo, [0], SignedData, encapContentInfo
    (its 3rd field), [0], OCTET STRING, TSTInfo, genTime (its 5th field)."""
    el = ber.nth(data, values, 0)
    for index in (1, 0, 2, 1, 0):
        el = ber.nth(data, el, index)
    if el is None:
        raise ValueError("timestamp token does not parse")
    if el.tag == ber.OCTETS:
        tst_data = ber.contents(data, el)
    elif el.tag == 0x24:  # a constructed OCTET STRING (BER): its segments
        segments, _ = ber.children(data, el, 64)
        tst_data = b"".join(ber.contents(data, s) for s in segments)
    else:
        raise ValueError("timestamp token holds no TSTInfo")
    gen_time = ber.nth(tst_data, ber.element(tst_data, 0, len(tst_data)), 4)
    if gen_time is None or gen_time.tag != 0x18:
        raise ValueError("TSTInfo holds no genTime")
    contents = ber.contents(tst_data, gen_time)
    fast = generalized_utc(contents)
    if fast is not None:
        return fast
    return utc(core.GeneralizedTime(contents=contents).native)


# What a timestamp's genTime always is in DER (RFC 3161 §2.4.2): UTC, at most microseconds.
_GENERALIZED = re.compile(rb"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(?:\.(\d{1,6}))?Z\Z")


def generalized_utc(contents: bytes) -> dt.datetime | None:
    """A GeneralizedTime's value, for the usual form only (None: ask asn1crypto).

    asn1crypto's parse goes through Fraction, about five times the cost of this
    (benchmarks/micro_inspect.py), for the same datetime (tests/inspect/test_authenticode.py).
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


def _pkcs9_time(data, values: ber.Element) -> dt.datetime:
    """signingTime of a PKCS#9 counter-signature: a SignerInfo's [0] signed attributes."""
    signer = ber.nth(data, values, 0)
    parts, _ = ber.children(data, signer, 8) if signer and signer.constructed else ([], False)
    for part in parts:
        if part.tag != ber.CTX0:
            continue
        attributes, _ = ber.children(data, part, MAX_ATTRIBUTES)
        for attribute in attributes:
            kind = ber.nth(data, attribute, 0)
            if kind is None or ber.contents(data, kind) != SIGNING_TIME:
                continue
            moment = time_at(data, ber.nth(data, ber.nth(data, attribute, 1), 0))
            if moment is None:
                raise ValueError("signingTime is not a time")
            return moment
    raise ValueError("PKCS#9 counter-signature without signingTime")
