"""Structured mutations of signed PE files: the DER tree of the PKCS#7, the PE headers, the
WIN_CERTIFICATE entries and the version resource.

Every mutation reports the byte ranges of the original file it touched, and whether the
primary signature survives it by construction: a mutation confined to damage that a tolerant
reader is expected to step over (a nested signature, another certificate of the bag, an
unsigned attribute, a CRL, a second table entry, the version resource, a BER re-encoding of
the outer layers) leaves the primary signer readable, so a test can demand that the signer
is still reported. tests/crafted.py builds its attack files from the same tree.

The DER reader here is deliberately independent of rmmscan's: it keeps every encoding
choice of the file (indefinite lengths, long-form lengths, multi-octet tags) so that what it
re-encodes untouched is byte-for-byte what it read.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MAX_DEPTH = 48
MAX_NODES = 20000

OID_NESTED = bytes.fromhex("060a2b060104018237020401")  # 1.3.6.1.4.1.311.2.4.1
OID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")  # 1.2.840.113549.1.7.2
OID_TST_TOKEN = bytes.fromhex("060a2b060104018237030301")  # 1.3.6.1.4.1.311.3.3.1
OID_COUNTERSIGNATURE = bytes.fromhex("06092a864886f70d010906")  # 1.2.840.113549.1.9.6


class DERError(ValueError):
    """The bytes are not a TLV tree this reader can hold."""


# --------------------------------------------------------------------------------------------
# TLV tree


@dataclass(eq=False)
class Node:
    """One TLV as stored. ``children`` is None for a primitive (or an unparsable) value."""

    tag: bytes
    value: bytes = b""
    children: list[Node] | None = None
    # Encoding choices, kept from the source so that an untouched tree encodes as it was read.
    indefinite: bool = False
    length_octets: int = 0  # 0: the minimal definite form; n: long form with n octets
    raw_length: bytes | None = None  # length octets written as given, true or not
    # Where the TLV sat in the source file (absolute offsets); -1 for a synthetic node.
    start: int = -1
    content: int = -1
    end: int = -1

    @property
    def constructed(self) -> bool:
        return bool(self.tag[0] & 0x20)

    def body(self) -> bytes:
        if self.children is None:
            return self.value
        return b"".join(encode(child) for child in self.children)

    def walk(self, depth: int = 0) -> Iterator[tuple[Node, int]]:
        yield self, depth
        for child in self.children or ():
            yield from child.walk(depth + 1)

    def __getitem__(self, index: int) -> Node:
        assert self.children is not None
        return self.children[index]


def length_bytes(n: int, octets: int = 0) -> bytes:
    """Definite length octets: minimal when ``octets`` is 0, else long form of that width."""
    if octets == 0 and n < 0x80:
        return bytes([n])
    octets = max(octets, 1, (n.bit_length() + 7) // 8)
    return bytes([0x80 | octets]) + n.to_bytes(octets, "big")


def encode(node: Node) -> bytes:
    body = node.body()
    if node.raw_length is not None:
        return node.tag + node.raw_length + body
    if node.indefinite:
        return node.tag + b"\x80" + body + b"\x00\x00"
    return node.tag + length_bytes(len(body), node.length_octets) + body


def tlv(tag: int | bytes, body: bytes) -> bytes:
    """A DER TLV with the minimal definite length."""
    tag = bytes([tag]) if isinstance(tag, int) else tag
    return tag + length_bytes(len(body)) + body


def _header(buf: bytes, pos: int, end: int) -> tuple[bytes, int | None, int, int]:
    """(tag octets, length or None for indefinite, long-form width, content offset)."""
    if pos + 2 > end:
        raise DERError(f"header past the end at {pos}")
    at = pos + 1
    if buf[pos] & 0x1F == 0x1F:
        while at < end and buf[at] & 0x80:
            at += 1
        at += 1
        if at - pos > 6:
            raise DERError(f"tag too long at {pos}")
    tag = buf[pos:at]
    if at >= end:
        raise DERError(f"no length at {pos}")
    first = buf[at]
    at += 1
    if first < 0x80:
        return tag, first, 0, at
    if first == 0x80:
        return tag, None, 0, at
    width = first & 0x7F
    if width > 8 or at + width > end:
        raise DERError(f"bad length width at {pos}")
    length = int.from_bytes(buf[at : at + width], "big")
    width_kept = width if width != max(1, (length.bit_length() + 7) // 8) or length < 0x80 else 0
    return tag, length, width_kept, at + width


def parse(buf: bytes, pos: int = 0, end: int | None = None, base: int = 0) -> Node:
    """The TLV at ``pos``; raises DERError when it is not a well-formed (BER) TLV tree.

    ``base`` is added to every recorded offset, so nodes carry file offsets.
    """
    counter = [0]
    node, _ = _parse(buf, pos, len(buf) if end is None else end, base, 0, counter)
    return node


def _parse(buf, pos, end, base, depth, counter) -> tuple[Node, int]:
    counter[0] += 1
    if depth > MAX_DEPTH or counter[0] > MAX_NODES:
        raise DERError("tree too deep or too large")
    tag, length, width, content = _header(buf, pos, end)
    node = Node(tag=tag, length_octets=width, start=base + pos, content=base + content)
    if length is None:
        if not tag[0] & 0x20:
            raise DERError(f"indefinite primitive at {pos}")
        node.indefinite = True
        node.children = []
        at = content
        while True:
            if at + 2 > end:
                raise DERError(f"no end-of-contents for {pos}")
            if buf[at] == 0 and buf[at + 1] == 0:
                at += 2
                break
            child, at = _parse(buf, at, end, base, depth + 1, counter)
            node.children.append(child)
        node.end = base + at
        return node, at
    stop = content + length
    if stop > end:
        raise DERError(f"length past the end at {pos}")
    if tag[0] & 0x20:
        children, at = [], content
        try:
            while at < stop:
                child, at = _parse(buf, at, stop, base, depth + 1, counter)
                children.append(child)
            node.children = children
        except DERError:
            node.value = buf[content:stop]  # constructed but not TLVs: kept as bytes
    else:
        node.value = buf[content:stop]
    node.end = base + stop
    return node, stop


def path(root: Node, *indexes: int) -> Node | None:
    """The node at a path of child indexes, or None when the tree has no such node."""
    node = root
    for i in indexes:
        if node is None or node.children is None:
            return None
        if not -len(node.children) <= i < len(node.children):
            return None
        node = node.children[i]
    return node


# --------------------------------------------------------------------------------------------
# The PKCS#7 shape Authenticode uses


def signed_data(root: Node) -> Node | None:
    """The SignedData SEQUENCE of a ContentInfo."""
    return path(root, 1, 0)


def certificate_bag(root: Node) -> Node | None:
    sd = signed_data(root)
    for child in (sd.children or ()) if sd else ():
        if child.tag == b"\xa0":
            return child
    return None


def crl_bag(root: Node) -> Node | None:
    sd = signed_data(root)
    for child in (sd.children or ()) if sd else ():
        if child.tag == b"\xa1":
            return child
    return None


def signer_info(root: Node) -> Node | None:
    sd = signed_data(root)
    infos = path(sd, -1) if sd else None
    return path(infos, 0) if infos is not None and infos.tag == b"\x31" else None


def unsigned_attrs(si: Node) -> Node | None:
    for child in si.children or ():
        if child.tag == b"\xa1":
            return child
    return None


def cert_serial(cert: Node) -> bytes | None:
    tbs = path(cert, 0)
    if tbs is None or tbs.children is None:
        return None
    for child in tbs.children[:2]:
        if child.tag == b"\x02":
            return child.value
    return None


def signer_certificate(root: Node) -> Node | None:
    """The one bag certificate with the issuer and serial the first SignerInfo names.

    None when no certificate, or more than one, matches as stored: a reader may then pick
    another certificate as the signer's, so none of them can count as "another one".
    """
    si = signer_info(root)
    sid = path(si, 1) if si is not None else None
    issuer, serial = path(sid, 0), path(sid, 1)
    bag = certificate_bag(root)
    if issuer is None or serial is None or bag is None or sid.tag != b"\x30":
        return None
    found = [
        cert
        for cert in bag.children or ()
        if cert_serial(cert) == serial.value and cert_issuer(cert) == encode(issuer)
    ]
    same_serial = [cert for cert in bag.children or () if cert_serial(cert) == serial.value]
    return found[0] if len(found) == 1 and len(same_serial) == 1 else None


def cert_issuer(cert: Node) -> bytes | None:
    """The issuer Name of a certificate as stored (the field after the signature algorithm)."""
    tbs = path(cert, 0)
    if tbs is None or tbs.children is None:
        return None
    fields = tbs.children[1:] if tbs.children and tbs.children[0].tag == b"\xa0" else tbs.children
    return encode(fields[2]) if len(fields) > 2 else None


def nested_values(root: Node) -> list[Node]:
    """The ContentInfos of the nested-signature attributes of the first SignerInfo."""
    si = signer_info(root)
    attrs = unsigned_attrs(si) if si is not None else None
    found = []
    for attr in (attrs.children or ()) if attrs is not None else ():
        oid, values = path(attr, 0), path(attr, 1)
        if oid is not None and encode(oid) == OID_NESTED and values is not None:
            found.extend(values.children or ())
    return found


def free_zones(root: Node) -> list[tuple[int, int]]:
    """Source ranges where damage leaves the primary signer readable by a tolerant reader.

    The contents of: every unsigned attribute of the primary (nested signatures, timestamps),
    the CRL bag, and every certificate of the bag other than the signer's. The TLV headers
    of these containers stay outside: a lying header there breaks what follows it.
    """
    zones = []
    si = signer_info(root)
    attrs = unsigned_attrs(si) if si is not None else None
    if attrs is not None:
        zones.append((attrs.content, attrs.end - (2 if attrs.indefinite else 0)))
    crls = crl_bag(root)
    if crls is not None:
        zones.append((crls.content, crls.end - (2 if crls.indefinite else 0)))
    signer = signer_certificate(root)
    bag = certificate_bag(root)
    for cert in (bag.children or ()) if bag is not None and signer is not None else ():
        if cert is not signer:
            zones.append((cert.content, cert.end - (2 if cert.indefinite else 0)))
    return zones


# --------------------------------------------------------------------------------------------
# The PE around it


@dataclass
class Entry:
    offset: int  # of the WIN_CERTIFICATE header, in the file
    length: int  # dwLength
    revision: int
    cert_type: int
    blob: bytes  # bytes after the 8-byte header, up to dwLength

    @property
    def blob_offset(self) -> int:
        return self.offset + 8


@dataclass
class Layout:
    e_lfanew: int
    opt: int  # file offset of the optional header
    opt_size: int
    is_64: bool
    n_sections_at: int
    cert_dir: int  # file offset of the certificate data-directory entry
    table_offset: int
    table_size: int
    entries: list[Entry]
    sections: list[tuple[int, int, int, int]]  # (va, vsize, raw_ptr, raw_size)
    resource_dir: tuple[int, int]


def layout(data: bytes) -> Layout:
    """The header fields the mutations aim at; raises ValueError on a file it cannot map."""
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    if data[e_lfanew : e_lfanew + 4] != b"PE\0\0":
        raise ValueError("no PE signature")
    n_sections, opt_size = struct.unpack_from("<H12xH", data, e_lfanew + 6)
    opt = e_lfanew + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    is_64 = magic == 0x20B
    dd = opt + (112 if is_64 else 96)
    cert_dir = dd + 8 * 4
    table_offset, table_size = struct.unpack_from("<II", data, cert_dir)
    resource_dir = struct.unpack_from("<II", data, dd + 8 * 2)
    entries = []
    pos, stop = table_offset, min(len(data), table_offset + table_size)
    while table_size and pos + 8 <= stop:
        length, revision, cert_type = struct.unpack_from("<IHH", data, pos)
        if length < 8:
            break
        entries.append(Entry(pos, length, revision, cert_type, data[pos + 8 : pos + length]))
        pos += (length + 7) & ~7
    table = data[opt + opt_size : opt + opt_size + 40 * n_sections]
    sections = [
        (va, vsize, raw_ptr, raw_size)
        for vsize, va, raw_size, raw_ptr in struct.iter_unpack(
            "<8xIIII16x", table[: len(table) - len(table) % 40]
        )
    ]
    return Layout(
        e_lfanew, opt, opt_size, is_64, e_lfanew + 6, cert_dir, table_offset, table_size,
        entries, sections, resource_dir,
    )  # fmt: skip


def win_certificate(blob: bytes, revision: int = 0x0200, cert_type: int = 2) -> bytes:
    """One WIN_CERTIFICATE: dwLength covers the padding to 8 bytes, as signtool writes it."""
    padded = (8 + len(blob) + 7) & ~7
    return struct.pack("<IHH", padded, revision, cert_type) + blob + bytes(padded - 8 - len(blob))


def with_table(
    data: bytes,
    blobs: list[bytes],
    table_offset: int | None = None,
    headers: list[tuple[int, int]] | None = None,
) -> bytes:
    """The file with its certificate table replaced by entries holding ``blobs``.

    The table goes at the end of the file (8-byte aligned) and the data-directory entry is
    set to it, so the Authenticode digest of the image is unchanged. ``headers`` gives the
    (wRevision, wCertificateType) of the entries, in order; the rest get 0x0200 and 2.
    """
    lay = layout(data)
    at = table_offset if table_offset is not None else (lay.table_offset or len(data))
    head = bytearray(data[:at])
    head += bytes(-len(head) % 8)
    kept = headers or []
    table = b"".join(
        win_certificate(blob, *(kept[i] if i < len(kept) else (0x0200, 2)))
        for i, blob in enumerate(blobs)
    )
    struct.pack_into("<II", head, lay.cert_dir, len(head), len(table))
    return bytes(head) + table


def entry_headers(lay: Layout) -> list[tuple[int, int]]:
    return [(e.revision, e.cert_type) for e in lay.entries]


def primary_blob(data: bytes) -> tuple[bytes, int]:
    """The first entry's PKCS#7 (exactly its outer TLV when readable) and its file offset."""
    entry = layout(data).entries[0]
    blob = entry.blob
    try:
        node = parse(blob)
        blob = blob[: node.end]
    except DERError:
        pass
    return blob, entry.blob_offset


# --------------------------------------------------------------------------------------------
# Version resource


def _rva_to_offset(lay: Layout, rva: int) -> int | None:
    for va, vsize, raw_ptr, raw_size in lay.sections:
        if va <= rva < va + max(vsize, raw_size):
            return raw_ptr + rva - va
    return None


def version_nodes(data: bytes) -> list[int]:
    """File offsets of the VS_VERSIONINFO tree's nodes (wLength, wValueLength, wType, szKey).

    Found by the key's UTF-16 text inside the resource section; the walk follows the
    lengths as stored and stops at the first one that does not fit.
    """
    try:
        lay = layout(data)
    except (ValueError, struct.error):
        return []
    start = _rva_to_offset(lay, lay.resource_dir[0]) if lay.resource_dir[0] else None
    if start is None:
        return []
    key = "VS_VERSION_INFO".encode("utf-16-le")
    found = data.find(key, start)
    if found < 6:
        return []
    nodes: list[int] = []

    def walk(at: int, stop: int, depth: int) -> None:
        while at + 6 <= stop and len(nodes) < 512 and depth < 8:
            w_length, w_value_length, w_type = struct.unpack_from("<HHH", data, at)
            if w_length < 6 or at + w_length > stop:
                return
            nodes.append(at)
            end_key = at + 6
            while end_key + 2 <= at + w_length and data[end_key : end_key + 2] != b"\0\0":
                end_key += 2
            value_at = (end_key + 2 + 3) & ~3
            value_len = w_value_length * (2 if w_type == 1 else 1)
            children_at = (value_at + value_len + 3) & ~3
            walk(children_at, at + w_length, depth + 1)
            at = (at + w_length + 3) & ~3

    root = found - 6
    walk(root, min(len(data), root + struct.unpack_from("<H", data, root)[0]), 0)
    return nodes


# --------------------------------------------------------------------------------------------
# Mutations


@dataclass
class Mutant:
    data: bytes
    kind: str
    touched: list[tuple[int, int]] = field(default_factory=list)  # source ranges
    primary_intact: bool = False  # the primary signer must still be reported


@dataclass
class Seed:
    """A file prepared for mutation: its layout, the primary's tree and protected ranges."""

    data: bytes
    layout: Layout | None
    tree: Node | None  # the primary ContentInfo, offsets in the file
    blob_offset: int = 0
    zones: list[tuple[int, int]] = field(default_factory=list)
    protected: list[tuple[int, int]] = field(default_factory=list)
    # The table is as with_table writes it: rebuilding it changes nothing but the mutation.
    canonical: bool = False

    @classmethod
    def of(cls, data: bytes) -> Seed:
        try:
            lay = layout(data)
        except (ValueError, struct.error, IndexError):
            return cls(data, None, None)
        seed = cls(data, lay, None)
        # What locating the table and reading the primary depend on, outside the tree.
        seed.protected = [
            (0, 0x40),
            (lay.e_lfanew, lay.e_lfanew + 4),
            (lay.e_lfanew + 20, lay.e_lfanew + 22),  # SizeOfOptionalHeader
            (lay.opt, lay.opt + 2),  # Magic
            (lay.opt + (108 if lay.is_64 else 92), lay.opt + (112 if lay.is_64 else 96)),
            (lay.cert_dir, lay.cert_dir + 8),
        ]
        # rmmscan reads the first PKCS#7 to the end its own header declares, whatever the
        # dwLength before it (inspect/certtable.py): all of that is the primary's.
        first_at, table_end = lay.table_offset, min(len(data), lay.table_offset + lay.table_size)
        if lay.table_size and first_at + 8 < table_end:
            try:
                _, length, _, content = _header(data, first_at + 8, table_end)
            except DERError:
                length, content = 0, first_at + 8
            extent = table_end if length is None else min(table_end, content + length)
            seed.protected.append((first_at, max(extent, first_at + 8)))
        if lay.entries:
            blobs = [e.blob for e in lay.entries]
            try:
                seed.canonical = with_table(data, blobs, headers=entry_headers(lay)) == data
            except (struct.error, ValueError, IndexError):
                seed.canonical = False  # headers too broken to rebuild around
            first = lay.entries[0]
            seed.protected.append((first.offset, first.offset + 8))
            seed.blob_offset = first.blob_offset
            try:
                seed.tree = parse(first.blob, base=first.blob_offset)
            except DERError:
                # Unreadable here (cut short, say): all of it counts as the primary's.
                seed.tree = None
                seed.protected.append((first.blob_offset, first.offset + max(8, first.length)))
            if seed.tree is not None:
                try:
                    seed.zones = free_zones(seed.tree)
                except (AttributeError, IndexError, TypeError):
                    seed.zones = []  # a shape too odd to map: nothing counts as spared
                seed.protected.append((seed.tree.start, seed.tree.end))
        return seed

    def spares(self, lo: int, hi: int) -> bool:
        """True when the source range [lo, hi) leaves the primary signer readable."""
        if self.layout is None:
            return False  # a file this module cannot map promises nothing
        for zlo, zhi in self.zones:
            if zlo <= lo and hi <= zhi:
                return True
        return not any(lo < phi and plo < hi for plo, phi in self.protected)


Rng = random.Random

INTERESTING_LENGTHS = [0, 1, 0x7F, 0x80, 0x81, 0xFF, 0x100, 0x180, 0x7FFF, 0x8000, 0xFFFF,
                       0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]  # fmt: skip


def _pick_node(rng: Rng, tree: Node) -> tuple[Node, Node | None, int]:
    """A node of the tree with its parent and index, favouring the deeper ones."""
    nodes: list[tuple[Node, Node | None, int]] = [(tree, None, 0)]
    for node, _ in tree.walk():
        for i, child in enumerate(node.children or ()):
            nodes.append((child, node, i))
    return rng.choice(nodes)


def _raw_length(rng: Rng, true_length: int) -> bytes:
    choice = rng.randrange(7)
    if choice == 0:
        return b"\x80"  # indefinite, without an end-of-contents
    if choice == 1:  # a length whose last octet is 0x80
        n = rng.choice([0x80, 0x180, 0x1080, 0x10080, true_length & ~0xFF | 0x80])
        return length_bytes(n, rng.choice([0, 2, 3, 4]))
    if choice == 2:
        return length_bytes(max(0, true_length + rng.choice([-2, -1, 1, 2, 0x80])))
    if choice == 3:
        return bytes([0x80 | rng.choice([5, 8, 9, 0x7F])]) + bytes(rng.randrange(0, 12))
    if choice == 4:
        return b"\xff"
    if choice == 5:
        return length_bytes(true_length, rng.choice([1, 2, 3, 4, 8]))  # long form, true
    return length_bytes(rng.choice(INTERESTING_LENGTHS))


def _random_oid(rng: Rng) -> bytes:
    arcs = bytearray([rng.choice([0x2A, 0x2B, 0x55, 0x00, 0x80, 0xFF])])
    for _ in range(rng.randrange(0, 12)):
        arcs.append(rng.choice([0x01, 0x82, 0x37, 0x80, 0xFF, 0x7F, 0x86, 0xF7]))
    return bytes(arcs)


def _donor_node(rng: Rng, donors: list[Node]) -> Node | None:
    if not donors:
        return None
    tree = rng.choice(donors)
    node, _, _ = _pick_node(rng, tree)
    return node


def _copy(node: Node) -> Node:
    return Node(
        tag=node.tag,
        value=node.value,
        children=None if node.children is None else [_copy(c) for c in node.children],
        indefinite=node.indefinite,
        length_octets=node.length_octets,
        raw_length=node.raw_length,
    )


def mutate_tree(rng: Rng, seed: Seed, donors: list[Node]) -> Mutant | None:
    """One mutation of the primary's DER tree; the table is rebuilt around it."""
    if seed.tree is None or seed.layout is None:
        return None
    tree = _copy_with_spans(seed.tree)
    node, parent, index = _pick_node(rng, tree)
    lo, hi = node.start, node.end
    kind = rng.choice(
        ["tag", "length", "indefinite", "long_form", "oid", "truncate", "duplicate", "donor",
         "delete", "value", "empty"]
    )  # fmt: skip
    semantic = False  # the encoding changes, the meaning does not
    if kind == "tag":
        node.tag = bytes([rng.choice([0x30, 0x31, 0x04, 0x02, 0x06, 0xA0, 0xA1, 0xA3, 0x13,
                                      0x14, 0x0C, 0x1E, 0x00, 0x1F, 0xFF, node.tag[0] ^ 0x20])])
        if node.tag == b"\x1f":
            node.tag = b"\x1f\x81\x80\x01"  # a high tag number, multi-octet
    elif kind == "length":
        node.raw_length = _raw_length(rng, len(node.body()))
        hi = node.content
    elif kind == "indefinite":
        node.indefinite = True
        node.raw_length = None
        semantic = node.children is not None and node.constructed
        hi = node.content
        if not semantic:
            lo, hi = node.start, node.end
    elif kind == "long_form":
        node.length_octets = rng.choice([1, 2, 3, 4, 5, 8])
        node.indefinite = False
        node.raw_length = None
        length = len(node.body())
        node.length_octets = max(node.length_octets, (length.bit_length() + 7) // 8)
        semantic = True
        hi = node.content
    elif kind == "oid":
        oids = [n for n, _ in tree.walk() if n.tag == b"\x06"]
        node = rng.choice(oids) if oids else node
        lo, hi = node.start, node.end
        node.value = _random_oid(rng)
    elif kind == "truncate":
        body = encode(node)
        cut = rng.randrange(0, max(1, len(body)))
        node.children, node.value, node.raw_length = None, b"", body[:cut]
        node.tag = b""
    elif kind == "duplicate" and parent is not None and parent.children is not None:
        for _ in range(rng.choice([1, 1, 2, 8, 64])):
            parent.children.insert(index, _copy(node))
        lo = hi = node.start
    elif kind == "donor" and parent is not None and parent.children is not None:
        donor = _donor_node(rng, donors)
        if donor is None:
            return None
        if rng.random() < 0.5:
            parent.children[index] = _copy(donor)
        else:
            parent.children.insert(index, _copy(donor))
            hi = lo
    elif kind == "delete" and parent is not None and parent.children is not None:
        del parent.children[index]
    elif kind == "value":
        body = bytearray(node.body())
        if not body:
            body = bytearray(b"\x00")
        for _ in range(rng.randrange(1, 5)):
            at = rng.randrange(len(body))
            flip = body[at] ^ (1 << rng.randrange(8))
            body[at] = rng.choice([0x00, 0x80, 0xFF, 0x30, 0xE9, flip])
        node.children, node.value = None, bytes(body)
        lo = node.content
    elif kind == "empty":
        node.children, node.value = ([] if node.children is not None else None), b""
        lo = node.content
    else:
        return None
    blob = encode(tree)
    data = seed.data
    lay = seed.layout
    blobs = [blob] + [e.blob for e in lay.entries[1:]]
    mutated = with_table(data, blobs, headers=entry_headers(lay))
    spared = seed.spares(lo, hi)
    if semantic:
        # A BER re-encoding outside the signer's certificate keeps the signature readable.
        signer = signer_certificate(seed.tree)
        if signer is not None:  # else a reader may take any certificate for the signer's
            spared = spared or not signer.start <= node.start < signer.end
    return Mutant(mutated, f"der:{kind}", [(lo, hi)], primary_intact=spared and seed.canonical)


def _copy_with_spans(node: Node) -> Node:
    clone = Node(
        tag=node.tag, value=node.value, indefinite=node.indefinite,
        length_octets=node.length_octets, raw_length=node.raw_length,
        start=node.start, content=node.content, end=node.end,
    )  # fmt: skip
    if node.children is not None:
        clone.children = [_copy_with_spans(c) for c in node.children]
    return clone


def mutate_header(rng: Rng, seed: Seed) -> Mutant | None:
    """PE header fields: e_lfanew, NumberOfSections, SizeOfOptionalHeader, Magic, directories."""
    lay = seed.layout
    if lay is None:
        return None
    data = bytearray(seed.data)
    field_name = rng.choice(
        ["e_lfanew", "sections", "opt_size", "magic", "rva_count", "cert_dir", "rsrc_dir"]
    )
    at, fmt, values = {
        "e_lfanew": (0x3C, "<I", [0, 0x40, lay.e_lfanew + 4, len(data) - 4, len(data) - 24,
                                  0x10000000, 0xFFFFFFFF]),
        "sections": (lay.n_sections_at, "<H", [0, 1, 95, 96, 97, 0xFFFF]),
        "opt_size": (lay.e_lfanew + 20, "<H", [0, 1, 2, 68, 95, 96, 128, 0xF0, 0xFFFF]),
        "magic": (lay.opt, "<H", [0x10B, 0x20B, 0x107, 0]),
        "rva_count": (lay.opt + (108 if lay.is_64 else 92), "<I", [0, 4, 5, 16, 17, 0xFFFFFFFF]),
        "cert_dir": (lay.cert_dir + rng.choice([0, 4]), "<I",
                     [0, 1, 7, 8, lay.table_offset - 8, lay.table_offset + 8, len(data),
                      0x7FFFFFF0, 0xFFFFFFFF, lay.table_size + 8, lay.table_size - 8]),
        "rsrc_dir": (lay.cert_dir - 16 + rng.choice([0, 4]), "<I",
                     [0, 1, 0x1000, 0xFFFFFFFF, len(data)]),
    }[field_name]  # fmt: skip
    width = struct.calcsize(fmt)
    value = rng.choice(values) if rng.random() < 0.8 else rng.getrandbits(8 * width)
    struct.pack_into(fmt, data, at, value % (1 << (8 * width)))
    return Mutant(bytes(data), f"pe:{field_name}", [(at, at + width)],
                  primary_intact=seed.spares(at, at + width))  # fmt: skip


def mutate_table(rng: Rng, seed: Seed, donor_blobs: list[bytes]) -> Mutant | None:
    """WIN_CERTIFICATE fields and entries."""
    lay = seed.layout
    if lay is None or not lay.entries:
        return None
    data = bytearray(seed.data)
    kind = rng.choice(["dwLength", "revision", "type", "extra_entries", "garbage_entry",
                       "trailing", "many_entries"])  # fmt: skip
    entry = rng.choice(lay.entries)
    if kind in ("dwLength", "revision", "type"):
        at, fmt, values = {
            "dwLength": (0, "<I", [0, 7, 8, 9, entry.length - 8, entry.length + 8, 0x7FFFFFFF,
                                   0xFFFFFFFF, len(entry.blob) + 8]),
            "revision": (4, "<H", [0, 0x100, 0x200, 0xFFFF]),
            "type": (6, "<H", [0, 1, 2, 3, 4, 0xFFFF]),
        }[kind]  # fmt: skip
        struct.pack_into(fmt, data, entry.offset + at, rng.choice(values))
        lo = entry.offset + at
        hi = lo + struct.calcsize(fmt)
        return Mutant(bytes(data), f"table:{kind}", [(lo, hi)], seed.spares(lo, hi))
    blobs = [e.blob for e in lay.entries]
    if kind == "extra_entries":
        for _ in range(rng.randrange(1, 4)):
            blobs.append(rng.choice(donor_blobs or blobs))
        rebuilt = with_table(bytes(data), blobs, headers=entry_headers(lay))
        return Mutant(rebuilt, "table:extra_entries", [], seed.canonical)
    if kind == "many_entries":
        blobs += [rng.choice(donor_blobs or blobs)[: rng.randrange(0, 64)]] * rng.choice([63, 64,
                                                                                           65, 200])
        rebuilt = with_table(bytes(data), blobs, headers=entry_headers(lay))
        return Mutant(rebuilt, "table:many_entries", [], seed.canonical)
    if kind == "garbage_entry":
        garbage = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        blobs.append(rng.choice([garbage, b"\x30\x80" + garbage, b"\x30\x84\xff\xff\xff\xff"]))
        rebuilt = with_table(bytes(data), blobs, headers=entry_headers(lay))
        return Mutant(rebuilt, "table:garbage_entry", [], seed.canonical)
    # Bytes after the last entry, inside or outside the declared table.
    tail = bytes(rng.choice([0, 0xFF, 0x30]) for _ in range(rng.randrange(1, 40)))
    return Mutant(bytes(data) + tail, "table:trailing", [(len(data), len(data))], True)


def mutate_version(rng: Rng, seed: Seed) -> Mutant | None:
    """VS_VERSIONINFO nodes: wLength, wValueLength, wType, the key's terminator, padding."""
    nodes = version_nodes(seed.data)
    if not nodes:
        return None
    data = bytearray(seed.data)
    touched = []
    for _ in range(rng.randrange(1, 4)):
        at = rng.choice(nodes)
        kind = rng.randrange(5)
        if kind < 3:
            value = rng.choice([0, 1, 5, 6, 7, 0x7FFF, 0xFFFF, rng.getrandbits(16)])
            struct.pack_into("<H", data, at + 2 * kind, value)
            touched.append((at + 2 * kind, at + 2 * kind + 2))
        elif kind == 3:  # the key loses its terminator: the walk must stop at wLength
            w_length = struct.unpack_from("<H", data, at)[0]
            for i in range(at + 6, min(len(data), at + w_length) - 1, 2):
                if data[i : i + 2] == b"\0\0":
                    data[i : i + 2] = b"A\0"
                    touched.append((i, i + 2))
        else:  # padding bytes turned non-zero
            i = at + 6 + 2 * rng.randrange(0, 24)
            if i < len(data):
                data[i] = 0xFF
                touched.append((i, i + 1))
    return Mutant(bytes(data), "version", touched, all(seed.spares(*r) for r in touched))


def mutate_bytes(rng: Rng, seed: Seed) -> Mutant:
    """Plain byte damage: flips, interesting bytes, truncation of the file."""
    data = bytearray(seed.data)
    if not data:
        return Mutant(b"MZ", "bytes:grow", [(0, 0)], False)
    if rng.random() < 0.2:
        cut = rng.randrange(0, len(data) + 1)
        return Mutant(bytes(data[:cut]), "bytes:truncate", [(cut, len(seed.data))],
                      seed.spares(cut, len(seed.data)))  # fmt: skip
    touched = []
    for _ in range(rng.randrange(1, 9)):
        at = rng.randrange(len(data))
        flip = data[at] ^ (1 << rng.randrange(8))
        data[at] = rng.choice([0x00, 0x30, 0x80, 0x82, 0x84, 0xFF, flip])
        touched.append((at, at + 1))
    return Mutant(bytes(data), "bytes:flip", touched, all(seed.spares(*r) for r in touched))


MUTATORS: dict[str, Callable[..., Mutant | None]] = {
    "der": lambda rng, seed, trees, blobs: mutate_tree(rng, seed, trees),
    "header": lambda rng, seed, trees, blobs: mutate_header(rng, seed),
    "table": lambda rng, seed, trees, blobs: mutate_table(rng, seed, blobs),
    "version": lambda rng, seed, trees, blobs: mutate_version(rng, seed),
    "bytes": lambda rng, seed, trees, blobs: mutate_bytes(rng, seed),
}
WEIGHTS = {"der": 6, "header": 2, "table": 2, "version": 2, "bytes": 1}


def mutate(
    rng: Rng, seed: Seed, donor_trees: list[Node] = (), donor_blobs: list[bytes] = (),
    kinds: list[str] | None = None,
) -> Mutant:  # fmt: skip
    """One mutation of a seed, from the kinds given (all by default); never None."""
    kinds = kinds or list(MUTATORS)
    for _ in range(8):
        kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
        try:
            mutant = MUTATORS[kind](rng, seed, list(donor_trees), list(donor_blobs))
        except (struct.error, ValueError, IndexError):
            continue  # a file too broken for this kind (a table inside the headers, say)
        if mutant is not None:
            return mutant
    return mutate_bytes(rng, seed)
