"""Which sweep process visits a directory: the first one to reach it.

Every sweep process walks the whole tree in the same order (engine/sweep.py); each directory
is visited by exactly one of them. A fixed split (a hash of the path mod N) leaves the work
uneven, because the expensive files are few and clustered: on the benchmark corpus one
process gets 2.96 s of CPU and the other 1.69 s (benchmarks/README.md, sweep processes).
Here the first process to reach a directory claims it, so a process busy with a 158 MiB
installer falls behind and the others take what it would have had.

The claims live in an anonymous shared mapping made before the fork: an open-addressed table
of 120-bit keyed digests of the path (a random key per sweep, so no file name can be chosen to
collide) and the claiming process. A POSIX record lock (lockf) guards the writes: the kernel
releases it when its holder dies, so a process killed mid-claim cannot hang the others. A
slot, once written, never changes, so a directory another process claimed is recognised
without the lock (the digest is written before the owner byte, and an owner byte read
before its digest only sends the reader to the locked path). When the table is half full,
new directories fall back to the fixed split; a directory already in the table keeps its
owner, so no directory is visited twice or never.
"""

from __future__ import annotations

import hashlib
import os
import zlib

try:
    import fcntl
except ImportError:  # Windows: no fork either; its sweep uses threads, and make() says None
    fcntl = None

_SLOT = 16  # 15 bytes of digest, 1 of owner (share + 1; 0: empty): one byte cannot tear
_DIGEST = 15
MAX_SHARES = 254
_HEADER = 8  # the number of claims in the table
DEFAULT_SLOTS = 1 << 17  # 2 MiB; up to 65,536 directories are claimed, then the fixed split


def fixed_owner(path: str, shares: int) -> int:
    return zlib.crc32(os.fsencode(path)) % shares


class Claims:
    """Made in the parent before forking; `owns(path, share)` is called in the children."""

    def __init__(self, shares: int, slots: int = DEFAULT_SLOTS):
        if not 0 < shares <= MAX_SHARES or slots & (slots - 1):
            raise ValueError(f"at most {MAX_SHARES} shares, and a power of two of slots")
        # Imported here: cli/main.py imports this module for MAX_SHARES at every command's start,
        # and tempfile alone costs 4 ms there; only a sweep with processes makes claims.
        import mmap
        import tempfile

        self.shares = shares
        self._mask = slots - 1
        self._limit = slots // 2  # linear probing stays short, and a probe always ends
        self._key = os.urandom(16)
        self._table = mmap.mmap(-1, _HEADER + slots * _SLOT)  # MAP_SHARED: seen by children
        # Only its lock is used; it lives as long as the claims (closed in close()).
        self._lock = tempfile.TemporaryFile()  # noqa: SIM115

    def close(self) -> None:
        self._table.close()
        self._lock.close()

    def owns(self, path: str, share: int) -> bool:
        """True if `share` visits `path`: it claimed it now or before (idempotent)."""
        digest = hashlib.blake2b(os.fsencode(path), digest_size=_DIGEST, key=self._key).digest()
        start = int.from_bytes(digest[:8], "little") & self._mask
        owner = self._find(digest, start)  # most directories: claimed by another already
        if owner is not None:
            return owner == share
        fd = self._lock.fileno()
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            return self._claim(path, digest, start, share)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def _find(self, digest: bytes, index: int) -> int | None:
        """The share that claimed `digest`, or None at the first empty slot."""
        table = self._table
        while True:
            at = _HEADER + index * _SLOT
            owner = table[at + _DIGEST]
            if owner == 0:
                return None
            if table[at : at + _DIGEST] == digest:
                return owner - 1
            index = (index + 1) & self._mask

    def _claim(self, path: str, digest: bytes, index: int, share: int) -> bool:
        """Under the lock: find again, else take the first empty slot."""
        table = self._table
        while True:
            at = _HEADER + index * _SLOT
            owner = table[at + _DIGEST]
            if owner == 0:
                claimed = int.from_bytes(table[:_HEADER], "little")
                if claimed >= self._limit:
                    return fixed_owner(path, self.shares) == share
                table[at : at + _DIGEST] = digest
                table[at + _DIGEST] = share + 1  # last: the slot is complete when it is set
                table[:_HEADER] = (claimed + 1).to_bytes(_HEADER, "little")
                return True
            if table[at : at + _DIGEST] == digest:
                return owner - 1 == share
            index = (index + 1) & self._mask


def make(shares: int) -> Claims | None:
    """Claims for `shares` processes; None (the fixed split) where they cannot be made."""
    if fcntl is None:
        return None
    try:
        return Claims(shares)
    except (OSError, ValueError):  # no writable temporary directory, too many processes
        return None
