"""Version information (OriginalFilename, CompanyName, ...) read with pefile, on request.

pefile wants the whole image: a file on disk is memory-mapped (only the touched pages cost
memory), another stream is read whole only up to MAX_READ. pefile's ``PE.close()`` runs
``gc.collect()`` on every call (85-180 ms in a busy process, DESIGN §5), so the map is
handed in and closed here instead.
"""

from __future__ import annotations

import mmap
from typing import BinaryIO

import pefile

MAX_READ = 64 * 1024 * 1024
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


def version_info(stream: BinaryIO, size: int) -> dict[str, str]:
    """The StringFileInfo fields of the first language block; {} when there are none."""
    data, mapped = _image(stream, size)
    if data is None:
        return {}
    try:
        pe = pefile.PE(data=data, fast_load=True)
        pe.parse_data_directories(
            directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]]
        )
        return _strings(pe)
    except Exception:  # pefile on hostile input raises struct, index, overflow... errors
        return {}
    finally:
        if mapped is not None:
            mapped.close()


def _image(stream: BinaryIO, size: int):
    try:
        mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        return mapped, mapped
    except (AttributeError, OSError, ValueError):
        pass
    if size > MAX_READ:
        return None, None
    stream.seek(0)
    return stream.read(MAX_READ), None


def _strings(pe: pefile.PE) -> dict[str, str]:
    out: dict[str, str] = {}
    for file_info in getattr(pe, "FileInfo", None) or []:
        for block in file_info:
            for table in getattr(block, "StringTable", None) or []:
                for key, value in table.entries.items():
                    name = key.decode("utf-8", "replace")
                    if name in FIELDS and name not in out:
                        out[name] = value.decode("utf-8", "replace")[:_MAX_VALUE]
    return out
