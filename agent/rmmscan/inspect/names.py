"""Distinguished names as Defender and Windows show them.

Values are decoded by their ASN.1 string type (UTF8String, PrintableString, BMPString as
UTF-16BE, T61String as Latin-1, UniversalString as UTF-32BE; asn1crypto does that) and
NFC-normalized, so "DWSNET OÜ" compares equal whatever encoding the CA chose
(docs/architecture.md §5).
"""

from __future__ import annotations

import unicodedata

from asn1crypto import x509

from . import ber

_SHORT = {
    "common_name": "CN",
    "organization_name": "O",
    "organizational_unit_name": "OU",
    "locality_name": "L",
    "state_or_province_name": "ST",
    "country_name": "C",
    "email_address": "E",
    "serial_number": "SERIALNUMBER",
    "domain_component": "DC",
    "street_address": "STREET",
    "given_name": "G",
    "surname": "SN",
    "title": "T",
}
_ESCAPE = {",", "+", '"', "\\", "<", ">", ";"}


def value_text(value) -> str:
    """The text of one attribute value; undecodable bytes are shown, never dropped."""
    try:
        native = value.native
    except Exception:  # a wrongly encoded string in an attacker's certificate
        native = None
    if isinstance(native, str):
        return unicodedata.normalize("NFC", native)
    if isinstance(native, bytes):
        return native.decode("latin-1")
    try:
        return "#" + value.dump().hex()
    except Exception:
        return ""


def attributes(name: x509.Name) -> list[tuple[str, str]]:
    """(short type, value) pairs in DER order."""
    out = []
    for rdn in name.chosen:
        for atv in rdn:
            oid = atv["type"]
            key = _SHORT.get(oid.native, oid.dotted)
            out.append((key, value_text(atv["value"])))
    return out


# The attribute types of _SHORT by OID, for names read without asn1crypto.
_SHORT_BY_OID = {
    dotted: _SHORT[name] for dotted, name in x509.NameType._map.items() if name in _SHORT
}
# String tags and how their octets decode (UTF8String, PrintableString, T61String, IA5String,
# VisibleString, UniversalString, BMPString).
_DECODE = {0x0C: "utf-8", 0x13: "latin-1", 0x14: "latin-1", 0x16: "latin-1", 0x1A: "latin-1",
           0x1C: "utf-32-be", 0x1E: "utf-16-be"}  # fmt: skip
MAX_ATTRIBUTES = 64  # attributes of one name read by the tolerant reader


def tolerant_attributes(data, name: ber.Element) -> list[tuple[str, str]]:
    """(short type, value) pairs of a Name whatever its tags claim: RDNs, then type-value
    SEQUENCEs, strings decoded by their own tag (undecodable octets replaced, never fatal)."""
    out: list[tuple[str, str]] = []
    if not name.constructed:
        return out
    rdns, _ = ber.children(data, name, MAX_ATTRIBUTES)
    for rdn in rdns:
        if not rdn.constructed:
            continue
        atvs, _ = ber.children(data, rdn, MAX_ATTRIBUTES)
        for atv in atvs:
            parts, _ = ber.children(data, atv, 2) if atv.constructed else ([], False)
            if len(parts) < 2 or parts[0].tag != ber.OID or len(out) >= MAX_ATTRIBUTES:
                continue
            oid = ber.oid_text(ber.contents(data, parts[0]))
            value = parts[1]
            raw = bytes(data[value.body : min(value.end, value.body + 4096)])
            codec = _DECODE.get(value.tag)
            if codec is None:
                text = "#" + bytes(data[value.start : min(value.after, value.start + 512)]).hex()
            else:
                text = unicodedata.normalize("NFC", raw.decode(codec, "replace"))
            out.append((_SHORT_BY_OID.get(oid, oid), text))
    return out


def render(pairs: list[tuple[str, str]]) -> str:
    """Most specific first (reverse DER order), as RFC 4514 and Windows print names."""
    return ", ".join(f"{k}={_escape(v)}" for k, v in reversed(pairs))


def display_name(pairs: list[tuple[str, str]]) -> str:
    """The Signer/Issuer column: the first CN, else the first O, else the whole DN."""
    for wanted in ("CN", "O"):
        for key, value in pairs:
            if key == wanted:
                return value
    return render(pairs)


def _escape(value: str) -> str:
    if not any(c in _ESCAPE for c in value):
        return value
    return "".join("\\" + c if c in _ESCAPE else c for c in value)
