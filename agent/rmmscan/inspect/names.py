"""Distinguished names as Defender and Windows show them.

Values are decoded by their ASN.1 string type (UTF8String, PrintableString, BMPString as
UTF-16BE, T61String as Latin-1, UniversalString as UTF-32BE; asn1crypto does that) and
NFC-normalized, so "DWSNET OÜ" compares equal whatever encoding the CA chose (DESIGN §5).
"""

from __future__ import annotations

import unicodedata

from asn1crypto import x509

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
