"""A bounded, tolerant reader of BER tag-length-value elements, decoding nothing.

Authenticode requires DER, but Windows and osslsigncode read a signature in BER (indefinite
lengths, long-form lengths) or cut short all the same, and an adversary relies on that: every
reader of the signature in this package goes through the positions found here, so the same
bytes give the same answer whatever their encoding. Positions are offsets into one buffer
(bytes, or a ``StreamView`` over a table too large to hold); nothing is copied but what a
caller slices.

Bounds: a length field of at most 8 octets and never past the buffer (an element running
past it is clipped and marked ``TRUNCATED``); indefinite lengths are resolved by walking the
children to their end-of-contents octets, at most ``MAX_DEPTH`` deep and ``MAX_STEPS``
elements per resolution.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

# Nesting of indefinite-length elements resolved: a signature is ~12 levels, and nested
# signatures (8 at most are read) sit inside one another's unsigned attributes.
MAX_DEPTH = 160
MAX_STEPS = 100_000  # elements visited to resolve one indefinite length
MAX_MEMO = 65_536  # indefinite lengths remembered between forget() calls

# Element.flags
BER = 1  # a long-form or indefinite length, where DER has the short or minimal form
TRUNCATED = 2  # the element runs past the end of the buffer: its end is the buffer's
INDEFINITE = 4  # ended by end-of-contents octets (after = end + 2)

SEQUENCE, SET, INTEGER, OID, OCTETS, NULL = 0x30, 0x31, 0x02, 0x06, 0x04, 0x05
CTX0, CTX1, CTX3 = 0xA0, 0xA1, 0xA3


class Element(NamedTuple):
    tag: int  # the identifier octet; for a tag number above 30, its first octet (xx11111)
    start: int  # where the identifier is
    body: int  # where the contents start
    end: int  # where the contents end
    after: int  # where the next element starts
    flags: int

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


_new = tuple.__new__  # Element(...) without NamedTuple's keyword layer: this runs per element


def element(data, pos: int, end: int, depth: int = 0) -> Element | None:
    """The element at `pos`, inside [pos, end); None when not even its header is there."""
    if pos + 2 > end:
        return None
    tag = data[pos]
    start = pos + 1
    if tag & 0x1F == 0x1F:  # a high tag number: skip its octets (none are used here)
        while start < end and data[start] & 0x80 and start - pos < 6:
            start += 1
        start += 1
        if start >= end:
            return None
    first = data[start]
    start += 1
    flags = 0
    if first < 0x80:
        length = first
    elif first == 0x80:
        if not tag & 0x20:
            return None  # an indefinite length is only for constructed elements
        return _indefinite(data, tag, pos, start, end, depth)
    else:
        n = first & 0x7F
        if n > 8 or start + n > end:
            return None
        length = int.from_bytes(data[start : start + n], "big")
        start += n
        if length < 0x80 or data[start - n] == 0:
            flags = BER  # long form where the short form fits, or a leading zero octet
    stop = start + length
    if stop > end:
        return _new(Element, (tag, pos, start, end, end, flags | TRUNCATED))
    return _new(Element, (tag, pos, start, stop, stop, flags))


_memo = threading.local()  # (id(data), pos, end) -> (data, Element): see _indefinite


def forget() -> None:
    """Drop the indefinite lengths resolved so far (authenticode.signatures calls it once a
    file is read)."""
    _memo.__dict__.pop("ends", None)


def _indefinite(data, tag: int, pos: int, body: int, end: int, depth: int) -> Element:
    """An indefinite length is found by walking every element inside it. Each resolution is
    remembered, so that reading the children of a deep indefinite tree does not walk each
    subtree again once per level above it (quadratic in the depth). The memo holds `data`
    itself, so that its id cannot be reused by another buffer while the entry lives."""
    ends = getattr(_memo, "ends", None)
    if ends is None:
        ends = _memo.ends = {}
    key = (id(data), pos, end)
    hit = ends.get(key)
    if hit is not None and hit[0] is data:
        return hit[1]
    found = _resolve(data, tag, pos, body, end, depth)
    if len(ends) >= MAX_MEMO:
        ends.clear()
    ends[key] = (data, found)
    return found


def _resolve(data, tag: int, pos: int, body: int, end: int, depth: int) -> Element:
    if depth >= MAX_DEPTH:
        return Element(tag, pos, body, end, end, BER | INDEFINITE | TRUNCATED)
    at = body
    for _ in range(MAX_STEPS):
        if at + 2 <= end and data[at] == 0 and data[at + 1] == 0:
            return Element(tag, pos, body, at, at + 2, BER | INDEFINITE)
        child = element(data, at, end, depth + 1)
        if child is None or child.flags & TRUNCATED:
            break
        at = child.after
    return Element(tag, pos, body, end, end, BER | INDEFINITE | TRUNCATED)


def children(data, parent: Element, limit: int) -> tuple[list[Element], bool]:
    """The elements inside `parent`, at most `limit` (True when more were left unread)."""
    out: list[Element] = []
    pos, end = parent.body, parent.end
    while pos < end:
        if len(out) >= limit:
            return out, True
        child = element(data, pos, end)
        if child is None:
            break
        out.append(child)
        pos = child.after
    return out, False


def nth(data, parent: Element | None, index: int) -> Element | None:
    """The child at `index` of `parent` (None when there is none), without listing the rest."""
    if parent is None or not parent.tag & 0x20:
        return None
    pos, end = parent.body, parent.end
    for _ in range(index):
        child = element(data, pos, end)
        if child is None:
            return None
        pos = child.after
    return element(data, pos, end) if pos < end else None


def whole(data, el: Element) -> bytes:
    """The element's bytes as stored (identifier to end-of-contents)."""
    return bytes(data[el.start : el.after])


def contents(data, el: Element) -> bytes:
    return bytes(data[el.body : el.end])


def is_der(data, el: Element, limit: int = 4096) -> bool:
    """Whether the element and everything inside it is in definite, minimal lengths."""
    stack = [el]
    seen = 0
    while stack:
        current = stack.pop()
        seen += 1
        if current.flags or seen > limit:
            return False
        if current.constructed:
            kids, more = children(data, current, limit)
            if more:
                return False
            stack.extend(kids)
    return True


def canonical(
    data, el: Element, drop: frozenset[int] = frozenset(), der: bool = True, budget: int = 4096
) -> bytes:
    """The element with the children that start at an offset in `drop` left out, only the
    layers around them re-encoded (definite lengths). With `der`, every element not in DER is
    re-encoded too (definite, minimal lengths): used to compare names whatever their encoding,
    and to verify a signature stored in BER. Primitive contents and tags are kept as stored,
    and so is every subtree with nothing to change (certificates, say)."""
    inside = any(el.start < at < el.after for at in drop)
    if not inside and (
        not der or (not el.flags and (not el.constructed or is_der(data, el, budget)))
    ):
        return whole(data, el)
    if not el.constructed:
        return whole_header(data, el) + _length(el.end - el.body) + contents(data, el)
    kids, _ = children(data, el, budget)
    body = b"".join(canonical(data, k, drop, der, budget) for k in kids if k.start not in drop)
    return whole_header(data, el) + _length(len(body)) + body


def whole_header(data, el: Element) -> bytes:
    """The identifier octets of the element (more than one for a high tag number)."""
    at = el.start + 1
    if el.tag & 0x1F == 0x1F:
        while data[at] & 0x80:
            at += 1
        at += 1
    return bytes(data[el.start : at])


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def oid_text(raw: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's contents ('' when it is not well formed)."""
    arcs: list[int] = []
    value = 0
    for octet in raw[:64]:
        value = (value << 7) | (octet & 0x7F)
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or raw[-1] & 0x80 or len(raw) > 64:
        return ""
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def oid_contents(dotted: str) -> bytes:
    """The contents octets of an OBJECT IDENTIFIER: known OIDs compare as bytes, not text."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


class StreamView:
    """Part of a seekable stream read on demand, in cached blocks: a certificate table too
    large to read whole (an adversary's 17 MiB attribute) is walked at the cost of the
    elements actually visited. Supports len(), indexing and slicing, like bytes."""

    BLOCK = 64 * 1024
    BLOCKS = 32  # 2 MiB of cache

    def __init__(self, stream, offset: int, size: int):
        self._stream, self._offset, self._size = stream, offset, size
        self._blocks: dict[int, bytes] = {}

    def __len__(self) -> int:
        return self._size

    def view(self, start: int, size: int) -> StreamView:
        """The part [start, start + size) of this view, as a view of its own."""
        return StreamView(self._stream, self._offset + start, max(0, min(size, self._size - start)))

    def _block(self, number: int) -> bytes:
        block = self._blocks.get(number)
        if block is None:
            if len(self._blocks) >= self.BLOCKS:
                self._blocks.pop(next(iter(self._blocks)))
            self._stream.seek(self._offset + number * self.BLOCK)
            want = min(self.BLOCK, self._size - number * self.BLOCK)
            block = self._stream.read(max(0, want))
            self._blocks[number] = block
        return block

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, _ = key.indices(self._size)
            if stop <= start:
                return b""
            first, last = start // self.BLOCK, (stop - 1) // self.BLOCK
            if first == last:
                base = first * self.BLOCK
                return self._block(first)[start - base : stop - base]
            self._stream.seek(self._offset + start)
            return self._stream.read(stop - start)
        if key < 0:
            key += self._size
        if not 0 <= key < self._size:
            raise IndexError(key)
        block = self._block(key // self.BLOCK)
        at = key % self.BLOCK
        if at >= len(block):  # the file shrank under us: read as zeros, the walk then stops
            return 0
        return block[at]
