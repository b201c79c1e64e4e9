"""SHA-1, SHA-256 and MD5 of a whole stream in one pass, with a fixed-size buffer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class FileHashes:
    sha1: str
    sha256: str
    md5: str
    size: int  # bytes actually hashed (a file that changed under us may differ from stat)


def hash_stream(stream: BinaryIO) -> FileHashes:
    sha1, sha256, md5 = hashlib.sha1(), hashlib.sha256(), hashlib.md5()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    stream.seek(0)
    total = 0
    while True:
        n = stream.readinto(buffer)
        if not n:
            break
        chunk = view[:n]
        sha1.update(chunk)
        sha256.update(chunk)
        md5.update(chunk)
        total += n
    return FileHashes(sha1.hexdigest(), sha256.hexdigest(), md5.hexdigest(), total)
