"""Version information (OriginalFilename, CompanyName, ...) read from the version resource.

A bounded walk: the PE headers (``pe.parse_header``), then only the RT_VERSION branch of
the resource directory (the root's ID entry 16, its first name, that name's first language)
down to its IMAGE_RESOURCE_DATA_ENTRY, then the VS_VERSIONINFO blob, at most 64 KiB read
once. No pefile: it parses the whole resource directory, about 1 ms a Microsoft DLL where
this takes about 45 µs (benchmarks/micro_inspect.py); it stays in the tests as the oracle.

Everything is attacker-controlled. No size field is followed without a bound: RVAs are
mapped through the sections as the loader maps the image and must land in a section's
file-backed bytes (or in the headers); the blob is bounded by the data entry's size, the
section, the file and 64 KiB; every node by its parent. The directory walk is three fixed
levels and refuses an entry that points back at a directory already visited; the blob walk
is three nested loops over sibling nodes that only move forward. At most ``READ_BOUND``
bytes are read in all, in at most 9 reads; Microsoft's DLLs take 2: the first 4 KiB of the
file (the headers) and one window at the resource root that holds the whole walk.

The strings: the ``StringFileInfo`` blocks of the root, each of their StringTables, each
String in it; the fields of ``FIELDS`` (exact, case-sensitive keys), the first occurrence
wins, values capped at 1024 characters. A value runs to its NUL or to its node's end:
``wValueLength`` is unreliable in the wild (characters, bytes or 0 depending on the tool).
"""

from __future__ import annotations

import codecs
import struct
from typing import BinaryIO

from . import pe
from .model import PEHeader

FIELDS = (
    "OriginalFilename",
    "CompanyName",
    "ProductName",
    "FileDescription",
    "FileVersion",
    "ProductVersion",
    "InternalName",
    "LegalCopyright",
)
_MAX_VALUE = 1024

RT_VERSION = 16
MAX_TYPES = 4096  # ID entries of the root directory scanned for RT_VERSION
MAX_BLOB = 0x10000  # wLength is a WORD: no VS_VERSIONINFO is longer
WINDOW = 4096  # read at the resource root at once: the directory and often the blob
MAX_NODES = 1024  # nodes walked in a blob (a real one has tens); 64 KiB of 8-byte nodes: 8192
_DIRECTORY = 16  # IMAGE_RESOURCE_DIRECTORY
_ENTRY = 8  # IMAGE_RESOURCE_DIRECTORY_ENTRY
_DATA_ENTRY = 16  # IMAGE_RESOURCE_DATA_ENTRY
_SUBDIRECTORY = 0x80000000
# The headers, the window (which starts with the root directory), then whatever lies outside
# the window: the root's ID entries, the name and language directories with their first
# entry, the data entry, the blob.
WALK_READ_BOUND = MAX_TYPES * _ENTRY + 2 * (_DIRECTORY + _ENTRY) + _DATA_ENTRY
READ_BOUND = pe.READ_BOUND + WINDOW + WALK_READ_BOUND + MAX_BLOB

# Keys as they must appear: UTF-16LE with their NUL; wanted keys by their first 2 characters.
_VS_VERSION_INFO = "VS_VERSION_INFO\0".encode("utf-16-le")
_STRING_FILE_INFO = "StringFileInfo\0".encode("utf-16-le")
_BY_PREFIX: dict[bytes, tuple[tuple[bytes, str], ...]] = {}
for _name in FIELDS:
    _token = (_name + "\0").encode("utf-16-le")
    _BY_PREFIX[_token[:4]] = (*_BY_PREFIX.get(_token[:4], ()), (_token, _name))
del _name, _token
_utf16 = codecs.utf_16_le_decode
_NODE = struct.Struct("<HH")  # wLength, wValueLength (wType is not needed)
_COUNTS = struct.Struct("<12xHH")  # NumberOfNamedEntries, NumberOfIdEntries
_DIR_AND_ENTRY = struct.Struct("<12xHHII")  # the counts and the first entry
_LEAF = struct.Struct("<II")  # OffsetToData (an RVA), Size


def version_info(stream: BinaryIO, size: int, header: PEHeader | None = None) -> dict[str, str]:
    """The StringFileInfo fields of the first version resource; {} when there are none.

    Never raises on the file's content (only an I/O error of the stream escapes); works on
    any seekable binary stream. `header`: the stream's, when the caller parsed it already.
    """
    if header is None:
        try:
            header = pe.parse_header(stream, size)
        except pe.NotPE:
            return {}
    blob = _version_blob(_Image(stream, size, header), header.resources[0])
    return _strings(blob) if blob else {}


class _Image:
    """Reads by RVA, as the loader maps the image, never past a section's file data.

    The first read (the resource root) fetches up to WINDOW bytes; later reads that fall in
    it are slices. A real resource directory, and often the version blob, sit in that window.
    """

    __slots__ = ("base", "flat", "headers_size", "sections", "size", "stream", "window")

    def __init__(self, stream: BinaryIO, size: int, header: PEHeader) -> None:
        self.stream, self.size = stream, size
        self.sections, self.headers_size = header.sections, header.headers_size
        self.flat = header.section_alignment < 0x1000
        self.base, self.window = 0, b""

    def mapped(self, rva: int) -> tuple[int, int] | None:
        """(file offset, bytes the file backs from there) of an RVA.

        A section maps VirtualSize bytes (SizeOfRawData when that is 0), at most
        SizeOfRawData of them from the file, from PointerToRawData rounded down to 512
        (unless the image is low-alignment and maps the file flat); the headers map
        SizeOfHeaders bytes. The zero-filled tail of a section is no file data: None, as for
        an RVA nothing maps.
        """
        for va, vsize, raw_ptr, raw_size in self.sections:
            span = vsize or raw_size
            if va <= rva < va + span:
                delta = rva - va
                backed = min(raw_size, span)
                if delta >= backed:
                    return None
                start = raw_ptr if self.flat and raw_ptr == va else raw_ptr & ~0x1FF
                return start + delta, backed - delta
        if rva < self.headers_size:
            return rva, self.headers_size - rva
        return None

    def read(self, rva: int, length: int) -> bytes:
        """Up to `length` bytes at `rva`: fewer where the section's file data or the file end."""
        at = rva - self.base
        if at >= 0 and at + length <= len(self.window):
            return self.window[at : at + length]
        where = self.mapped(rva)
        if where is None:
            return b""
        offset, backed = where
        length = min(length, backed, self.size - offset)
        return pe.read_at(self.stream, offset, length) if length > 0 else b""

    def open_window(self, rva: int) -> None:
        self.window = self.read(rva, WINDOW)
        self.base = rva


def _version_blob(image: _Image, root: int) -> bytes:
    """The VS_VERSIONINFO bytes of RT_VERSION, first name, first language; b"" if none.

    `root` is the resource directory's RVA (0: the image has none).
    """
    if not root:
        return b""
    image.open_window(root)
    if len(image.window) < _DIRECTORY:
        return b""
    named, ids = _COUNTS.unpack_from(image.window)
    table = image.read(root + _DIRECTORY + named * _ENTRY, min(ids, MAX_TYPES) * _ENTRY)
    table = table[: len(table) - len(table) % _ENTRY]
    offset = next((off for name, off in _LEAF.iter_unpack(table) if name == RT_VERSION), None)
    if offset is None:
        return b""
    visited = {root}
    for _level in ("name", "language"):  # the first entry of each is a directory
        if not offset & _SUBDIRECTORY:
            return b""
        directory = root + (offset & ~_SUBDIRECTORY)
        if directory in visited:
            return b""
        visited.add(directory)
        head = image.read(directory, _DIRECTORY + _ENTRY)
        if len(head) < _DIRECTORY + _ENTRY:
            return b""
        named, ids, _, offset = _DIR_AND_ENTRY.unpack_from(head)
        if named + ids == 0:
            return b""
    if offset & _SUBDIRECTORY:
        return b""
    leaf = image.read(root + offset, _DATA_ENTRY)
    if len(leaf) < _DATA_ENTRY:
        return b""
    data_rva, data_size = _LEAF.unpack_from(leaf)
    return image.read(data_rva, min(data_size, MAX_BLOB))


def _align(offset: int) -> int:
    return (offset + 3) & ~3


def _nul(blob: bytes, at: int, end: int) -> int:
    """Where the UTF-16LE string at `at` ends (its NUL, at an even distance); -1 if not < end."""
    nul = blob.find(b"\0\0", at, end)
    while nul != -1 and (nul - at) & 1:
        nul = blob.find(b"\0\0", nul + 1, end)
    return nul


def _strings(blob: bytes) -> dict[str, str]:
    """Walk VS_VERSIONINFO → StringFileInfo → StringTable → String, each bounded by its parent.

    Siblings follow one another at 32-bit alignment (relative to the blob, as Windows walks
    its copy); a node shorter than its own header ends the list. Every loop advances by at
    least 8 bytes, and nested loops cover disjoint ranges: the walk is linear in the blob,
    and stops after MAX_NODES nodes (about a millisecond; 8192 tiny ones would take ten).
    A key matches when the key and its NUL lie in the node; only wanted keys are decoded.
    (Hot path: no min(), no str.decode by codec name; both cost a microsecond here.)
    """
    out: dict[str, str] = {}
    size = len(blob)
    if size < 6:
        return out
    length, value_length = _NODE.unpack_from(blob, 0)
    end = length if length < size else size
    if not blob.startswith(_VS_VERSION_INFO, 6, end):
        return out
    # The root's value is the binary VS_FIXEDFILEINFO: wValueLength bytes, as Windows skips it.
    block = _align(_align(6 + len(_VS_VERSION_INFO)) + value_length)
    budget = MAX_NODES
    while block + 6 <= end and budget > 0:
        budget -= 1
        block_len = blob[block] | blob[block + 1] << 8
        if block_len < 6:
            break
        block_end = block + block_len if block + block_len < end else end
        if blob.startswith(_STRING_FILE_INFO, block + 6, block_end):
            table = _align(block + 6 + len(_STRING_FILE_INFO))
        else:
            table = block_end
        while table + 6 <= block_end and budget > 0:
            budget -= 1
            table_len = blob[table] | blob[table + 1] << 8
            if table_len < 6:
                break
            table_end = table + table_len if table + table_len < block_end else block_end
            nul = _nul(blob, table + 6, table_end)  # the table's key: language and code page
            entry = (nul + 5) & ~3 if nul != -1 else table_end
            while entry + 6 <= table_end and budget > 0:
                budget -= 1
                entry_len = blob[entry] | blob[entry + 1] << 8
                if entry_len < 6:
                    break
                entry_end = entry + entry_len if entry + entry_len < table_end else table_end
                key = entry + 6
                for token, field in _BY_PREFIX.get(blob[key : key + 4], ()):
                    if field not in out and blob.startswith(token, key, entry_end):
                        value = (key + len(token) + 3) & ~3
                        # Up to the NUL or the node's end (whole UTF-16 units only).
                        stop = value + ((entry_end - value) & ~1) if value < entry_end else value
                        text = _utf16(blob[value:stop], "replace")[0]
                        nul = text.find("\0")
                        out[field] = (text if nul == -1 else text[:nul])[:_MAX_VALUE]
                        if len(out) == len(FIELDS):
                            return out
                        break
                entry = (entry + entry_len + 3) & ~3
            table = _align(table + table_len)
        block = _align(block + block_len)
    return out
