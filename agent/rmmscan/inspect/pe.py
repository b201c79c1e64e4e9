"""Recognise a PE and read its headers with two bounded reads (docs/architecture.md §5: ~20 µs).

What Authenticode needs: where the checksum and the certificate data directory are, and
where the certificate table claims to be. What the version resource needs: the section
table (a third read only when it lies past the first 4 KiB) and the resource directory.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from .model import PEHeader

HEAD_READ = 4096
MAX_E_LFANEW = 0x10000000  # Windows loads images whose NT headers sit far out; bound the seek
MAX_SECTIONS = 96  # the PE/COFF specification's loader limit; more are not read
SECTION_SIZE = 40  # IMAGE_SECTION_HEADER
# The most parse_header reads: the head, the NT headers (SizeOfOptionalHeader is a WORD) and
# the section table.
READ_BOUND = HEAD_READ + 24 + 0xFFFF + MAX_SECTIONS * SECTION_SIZE
_DIR_SECURITY = 4
_DIR_RESOURCE = 2


class NotPE(Exception):
    """The stream is not a PE image; the message says why."""


def read_at(stream: BinaryIO, offset: int, size: int) -> bytes:
    stream.seek(offset)
    return stream.read(size)


def parse_header(stream: BinaryIO, file_size: int) -> PEHeader:
    """Parse the DOS, COFF and optional headers; raise NotPE for anything else."""
    head = read_at(stream, 0, HEAD_READ)
    if len(head) < 0x40 or head[:2] != b"MZ":
        raise NotPE("no MZ header" if head[:2] != b"MZ" else "file shorter than a DOS header")
    (e_lfanew,) = struct.unpack_from("<I", head, 0x3C)
    if e_lfanew > MAX_E_LFANEW or e_lfanew + 24 > file_size:
        raise NotPE(f"e_lfanew {e_lfanew:#x} points outside the file")
    nt = (
        head[e_lfanew : e_lfanew + 24]
        if e_lfanew + 24 <= len(head)
        else read_at(stream, e_lfanew, 24)
    )
    if nt[:4] != b"PE\0\0":
        raise NotPE("no PE signature at e_lfanew")
    if len(nt) < 24:
        raise NotPE("truncated COFF header")
    (opt_size_claimed,) = struct.unpack_from("<H", nt, 20)
    needed = 24 + opt_size_claimed
    if e_lfanew + needed <= len(head):
        nt = head[e_lfanew : e_lfanew + needed]
    else:
        nt = read_at(stream, e_lfanew, needed)
    machine, n_sections, _, _, _, opt_size, characteristics = struct.unpack_from("<HHIIIHH", nt, 4)
    opt = 24
    if opt_size < 2 or len(nt) < opt + 2:
        raise NotPE("no optional header")
    (magic,) = struct.unpack_from("<H", nt, opt)
    if magic == 0x10B:
        is_64, dd_count_at, dd_at = False, 92, 96
    elif magic == 0x20B:
        is_64, dd_count_at, dd_at = True, 108, 112
    else:
        raise NotPE(f"unknown optional header magic {magic:#x}")
    if opt_size < 68 or len(nt) < opt + min(opt_size, dd_at):
        raise NotPE("optional header too short for a checksum")
    section_alignment, headers_size = struct.unpack_from("<I24xI", nt, opt + 32)
    dd_count = 0
    if opt_size >= dd_count_at + 4 and len(nt) >= opt + dd_count_at + 4:
        (dd_count,) = struct.unpack_from("<I", nt, opt + dd_count_at)
    # A directory counts only if NumberOfRvaAndSizes and the optional header both cover it.
    usable = max(0, min(dd_count, 16, (min(opt_size, len(nt) - opt) - dd_at) // 8))

    def directory(index: int) -> tuple[int, int, int]:
        if index >= usable:
            return 0, 0, 0
        at = opt + dd_at + 8 * index
        va, size = struct.unpack_from("<II", nt, at)
        return va, size, e_lfanew + at

    cert_off, cert_size, cert_dir = directory(_DIR_SECURITY)
    resources = (0, 0)
    if usable > _DIR_RESOURCE:
        resources = struct.unpack_from("<II", nt, opt + dd_at + 8 * _DIR_RESOURCE)
    table_at = e_lfanew + needed
    table_size = (n_sections if n_sections < MAX_SECTIONS else MAX_SECTIONS) * SECTION_SIZE
    if table_at + table_size <= len(head):  # the usual case: no read, no call
        section_table = head[table_at : table_at + table_size]
    else:
        section_table = _section_table(stream, file_size, table_at, table_size)

    return PEHeader(
        machine=machine,
        is_64=is_64,
        is_dll=bool(characteristics & 0x2000),
        checksum_offset=e_lfanew + opt + 64,
        cert_dir_offset=cert_dir,
        cert_table=(cert_off, cert_size),
        headers_size=headers_size,
        section_alignment=section_alignment,
        section_table=section_table,
        resources=resources,
    )


def _section_table(stream: BinaryIO, file_size: int, at: int, size: int) -> bytes:
    """The section table past the first read: the whole entries the file holds (at most 96).

    Kept as bytes, decoded by PEHeader.sections: decoding costs microseconds every file
    would pay, and only the version resource needs it.
    """
    table = read_at(stream, at, min(size, file_size - at)) if at < file_size else b""
    return table[: len(table) - len(table) % SECTION_SIZE]
