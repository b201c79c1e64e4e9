"""The evidence id: what the scan cache scopes an image's files by.

SHA-256 over the medium's size, its first and last MiB (partition tables, boot sectors, the
GPT's backup) and the container's own identity of the medium where it has one (an E01's
stored hashes, a VHDX's GUID). The same image, moved or renamed, is the same evidence: its
second scan is served from the cache. Another disk differs in its tables and volume serials
and never shares a file's row; inside one evidence the keys (partition, record, sequence,
size, times) tell files apart.
"""

from __future__ import annotations

import hashlib

from .container import Container

EDGE = 1024 * 1024


def evidence_id(container: Container) -> str:
    h = hashlib.sha256(b"rmmscan-evidence:1\0")
    h.update(str(container.size).encode() + b"\0")
    h.update(container.read(0, EDGE))
    h.update(container.read(max(container.size - EDGE, 0), EDGE))
    h.update(b"\0" + container.identity())
    return "image:" + h.hexdigest()
