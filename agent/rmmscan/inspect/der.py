"""Where the parts of an Authenticode ContentInfo lie, when it is plain DER.

A bounded walk over tag and length octets, nothing decoded: authenticode.py hands each part
it locates to asn1crypto. asn1crypto's lazy objects cost ~0.2 ms a signature, the largest
part of a sweep (42 % in run A, benchmarks/README.md); with this walk a file's signatures
cost half as much (benchmarks/micro_inspect.py).
Anything but the exact shape below (an indefinite or oversized length, a high tag number,
a field missing, extra or out of order) gives None, and asn1crypto reads the whole thing.

    ContentInfo  ::= SEQUENCE { contentType OID (signedData), [0] EXPLICIT SignedData }
    SignedData   ::= SEQUENCE { version INTEGER, digestAlgorithms SET, encapContentInfo
                     SEQUENCE, [0] IMPLICIT certificates OPTIONAL, [1] IMPLICIT crls
                     OPTIONAL, signerInfos SET OF SignerInfo (at least one) }
    SignerInfo   ::= SEQUENCE { version INTEGER, sid (IssuerAndSerialNumber SEQUENCE |
                     [0] IMPLICIT SubjectKeyIdentifier), digestAlgorithm SEQUENCE { OID,
                     parameters OPTIONAL }, [0] IMPLICIT signedAttrs OPTIONAL,
                     signatureAlgorithm SEQUENCE, signature OCTET STRING,
                     [1] IMPLICIT unsignedAttrs SET OF Attribute OPTIONAL }
"""

from __future__ import annotations

from dataclasses import dataclass

Span = tuple[int, int]  # [start, end) in the blob

_SIGNED_DATA_OID = bytes.fromhex("06092a864886f70d010702")  # 1.2.840.113549.1.7.2
_MAX_CHILDREN = 256  # certificates, attributes: far more than any real signature holds
_SEQUENCE, _SET, _INTEGER, _OID, _OCTETS = 0x30, 0x31, 0x02, 0x06, 0x04
_CTX0, _CTX1, _CTX0_PRIMITIVE = 0xA0, 0xA1, 0x80


@dataclass(frozen=True, slots=True)
class IssuerSerial:
    issuer: Span  # the Name, whole
    serial: Span  # the INTEGER, whole


@dataclass(frozen=True, slots=True)
class SignedDataShape:
    end: int  # where the ContentInfo ends
    certificates: tuple[Span, ...]  # each Certificate, whole
    signer_infos: int
    sid: IssuerSerial | None  # None: a subjectKeyIdentifier
    digest_oid: Span  # the first SignerInfo's digestAlgorithm OID, whole
    unsigned: tuple[Span, ...]  # each unsigned Attribute, whole


# An element: (identifier octet, start of the element, start of contents, end).
_Element = tuple[int, int, int, int]


def _element(data: bytes, pos: int, end: int) -> _Element | None:
    if pos + 2 > end:
        return None
    ident, first = data[pos], data[pos + 1]
    if ident & 0x1F == 0x1F:  # a tag number above 30: none in these structures
        return None
    start = pos + 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or start + n > end:  # indefinite (BER), or longer than 4 GiB
            return None
        length = int.from_bytes(data[start : start + n], "big")
        start += n
    if start + length > end:
        return None
    return ident, pos, start, start + length


def _children(data: bytes, parent: _Element) -> list[_Element] | None:
    out: list[_Element] = []
    pos, end = parent[2], parent[3]
    while pos < end:
        child = _element(data, pos, end)
        if child is None or len(out) >= _MAX_CHILDREN:
            return None
        out.append(child)
        pos = child[3]
    return out


def _expect(children: list[_Element], idents: tuple[int, ...]) -> bool:
    return len(children) == len(idents) and all(
        c[0] == i for c, i in zip(children, idents, strict=True)
    )


def signed_data(blob: bytes) -> SignedDataShape | None:
    top = _element(blob, 0, len(blob))
    if top is None or top[0] != _SEQUENCE:
        return None
    content_info = _children(blob, top)
    if content_info is None or not _expect(content_info, (_OID, _CTX0)):
        return None
    if blob[content_info[0][1] : content_info[0][3]] != _SIGNED_DATA_OID:
        return None
    explicit = _children(blob, content_info[1])
    if explicit is None or not _expect(explicit, (_SEQUENCE,)):
        return None
    fields = _children(blob, explicit[0])
    if fields is None:
        return None
    idents = tuple(f[0] for f in fields)
    if idents[:3] != (_INTEGER, _SET, _SEQUENCE) or idents[-1:] != (_SET,):
        return None
    optional = idents[3:-1]
    if optional not in ((), (_CTX0,), (_CTX1,), (_CTX0, _CTX1)):
        return None
    certificates: list[Span] = []
    if optional[:1] == (_CTX0,):
        choices = _children(blob, fields[3])
        if choices is None:
            return None
        for choice in choices:
            # Only certificates: asn1crypto parses the other choices (attribute
            # certificates...) as it resolves them, and may fail the SignedData.
            if choice[0] != _SEQUENCE:
                return None
            certificates.append((choice[1], choice[3]))
    signer_infos = _children(blob, fields[-1])
    if not signer_infos or any(s[0] != _SEQUENCE for s in signer_infos):
        return None
    signer = _signer_info(blob, signer_infos[0])
    if signer is None:
        return None
    sid, digest_oid, unsigned = signer
    return SignedDataShape(
        top[3], tuple(certificates), len(signer_infos), sid, digest_oid, unsigned
    )


def _signer_info(blob: bytes, element: _Element):
    fields = _children(blob, element)
    if fields is None or len(fields) < 5:
        return None
    idents = [f[0] for f in fields]
    if idents[0] != _INTEGER or idents[1] not in (_SEQUENCE, _CTX0_PRIMITIVE):
        return None
    rest = idents[2:]
    signed = 1 if rest[1:2] == [_CTX0] else 0
    tail = rest[1 + signed :]
    if rest[0] != _SEQUENCE or tail[:2] != [_SEQUENCE, _OCTETS] or tail[2:] not in ([], [_CTX1]):
        return None
    sid = None
    if idents[1] == _SEQUENCE:
        parts = _children(blob, fields[1])
        if parts is None or not _expect(parts, (_SEQUENCE, _INTEGER)):
            return None
        sid = IssuerSerial((parts[0][1], parts[0][3]), (parts[1][1], parts[1][3]))
    algorithm = _children(blob, fields[2])
    if not algorithm or len(algorithm) > 2 or algorithm[0][0] != _OID:
        return None
    unsigned: list[Span] = []
    if tail[2:]:
        attributes = _children(blob, fields[-1])
        if attributes is None or any(a[0] != _SEQUENCE for a in attributes):
            return None
        unsigned = [(a[1], a[3]) for a in attributes]
    return sid, (algorithm[0][1], algorithm[0][3]), tuple(unsigned)


def timestamp_time(values: bytes) -> bytes | None:
    """The genTime contents of the first RFC 3161 token in the contents of an attribute's
    SET of values: ContentInfo, [0], SignedData, encapContentInfo (its 3rd field), [0],
    OCTET STRING, TSTInfo, genTime (its 5th field, GeneralizedTime). Fields are taken by
    position, as asn1crypto's tokenizer took them before; None if anything does not fit."""
    element = _element(values, 0, len(values))
    for index in (1, 0, 2, 1, 0, 0, 4):
        if element is None:
            return None
        element = _nth(values, element, index)
    if element is None or element[0] & 0x1F != 24:
        return None
    return values[element[2] : element[3]]


def _nth(data: bytes, parent: _Element, index: int) -> _Element | None:
    pos, end = parent[2], parent[3]
    for _ in range(index + 1):
        child = _element(data, pos, end)
        if child is None:
            return None
        pos = child[3]
    return child


def attribute(blob: bytes, start: int, end: int) -> tuple[bytes, Span, tuple[Span, ...]] | None:
    """An Attribute ::= SEQUENCE { type OID, values SET }: (the OID, whole; the SET's
    contents; each value, whole), or None unless it is exactly that shape."""
    element = _element(blob, start, end)
    if element is None or element[0] != _SEQUENCE or element[3] != end:
        return None
    fields = _children(blob, element)
    if fields is None or not _expect(fields, (_OID, _SET)):
        return None
    values = _children(blob, fields[1])
    if values is None:
        return None
    oid = blob[fields[0][1] : fields[0][3]]
    return oid, (fields[1][2], fields[1][3]), tuple((v[1], v[3]) for v in values)
