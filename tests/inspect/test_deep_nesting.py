"""Nested signatures inside nested signatures are read depth first, each verified on its own.

osslsigncode's -nest only appends siblings, so the test moves nested-depth3.exe's second
nested signature into the first one's unsigned attributes. Unsigned attributes are outside
every signature and the certificate table outside the file digest, so all three stay valid.
"""

from __future__ import annotations

import io
import struct

from asn1crypto import cms

from rmmscan.inspect import Inspector, Status, inspect_stream, pe

from conftest import PE_DIR, TEST_ROOT


def _nest(attrs: cms.CMSAttributes, nested: list[bytes]) -> cms.CMSAttributes:
    kept = [
        cms.CMSAttribute.load(a.dump())
        for a in attrs
        if a["type"].native != "microsoft_nested_signature"
    ]
    values = [cms.ContentInfo.load(n) for n in nested]
    return cms.CMSAttributes(
        [*kept, cms.CMSAttribute({"type": "microsoft_nested_signature", "values": values})]
    )


def deepen(data: bytes) -> bytes:
    header = pe.parse_header(io.BytesIO(data), len(data))
    offset, _ = header.cert_table
    (length,) = struct.unpack_from("<I", data, offset)
    primary = cms.ContentInfo.load(data[offset + 8 : offset + length].rstrip(b"\0"))
    signer = primary["content"]["signer_infos"][0]
    (first, second) = [
        v.dump()
        for a in signer["unsigned_attrs"]
        if a["type"].native == "microsoft_nested_signature"
        for v in a["values"]
    ]
    middle = cms.ContentInfo.load(first)
    middle_signer = middle["content"]["signer_infos"][0]
    middle_signer["unsigned_attrs"] = _nest(middle_signer["unsigned_attrs"], [second])
    signer["unsigned_attrs"] = _nest(signer["unsigned_attrs"], [middle.dump()])
    der = primary.dump()
    entry = struct.pack("<IHH", 8 + len(der), 0x200, 2) + der
    entry += b"\0" * (-len(entry) % 8)
    out = bytearray(data[:offset] + entry)
    struct.pack_into("<I", out, header.cert_dir_offset + 4, len(entry))
    return bytes(out)


def test_three_levels_deep():
    original = (PE_DIR / "nested-depth3.exe").read_bytes()
    flat = inspect_stream(io.BytesIO(original)).signatures
    deep = deepen(original)
    stream = io.BytesIO(deep)
    inspection = inspect_stream(stream)
    assert inspection.anomalies == []
    # Same three signatures, same depth-first order: primary, its nested one, that one's.
    assert [s.signer.cn for s in inspection.signatures] == [s.signer.cn for s in flat]
    assert [s.index for s in inspection.signatures] == [0, 1, 2]
    verdicts = Inspector([TEST_ROOT], system_roots=False).verify(stream, inspection)
    assert [v.status for v in verdicts] == [Status.OK] * 3
