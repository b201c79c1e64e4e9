"""SHA-1, SHA-256 and MD5 of a whole stream in one pass, with a bounded buffer.

hashlib releases the GIL on large updates, so for a big file MD5 (the slowest of the three
where the CPU has SHA instructions and MD5 has none) runs in a second thread while this one
does the other two: bench_inspect.py's 1 GiB file is hashed in half the time of one thread
(benchmarks/README.md, inspection).
The installer that a DWService detection usually is then costs the time of its slowest hash,
and a sweep process left with it at the end keeps the others waiting that much less.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from .. import portable

CHUNK = 1024 * 1024
PARALLEL_MIN = 16 * CHUNK  # below this, a thread costs more than it saves
_IN_FLIGHT = 4  # chunks queued for the MD5 thread: memory stays at a few MiB
# How much of one file may be read to hash and verify it, by default (Options.max_read; 0: no
# bound). The PE format addresses its contents with 32-bit file offsets, the certificate
# table's included, so no part of a PE lies past 4 GiB: a larger file is a PE with data
# appended, or a size that lies (a sparse file, an inode edited in an image) and would be
# read as zeros for hours.
DEFAULT_MAX_READ = 1 << 32


@dataclass(frozen=True, slots=True)
class FileHashes:
    sha1: str
    sha256: str
    md5: str
    size: int  # bytes actually hashed (a file that changed under us may differ from stat)


def hash_stream(stream: BinaryIO, limit: int | None = None) -> FileHashes:
    """The hashes of the stream from its start, of at most `limit` bytes (None: to its end):
    a file a writer keeps growing is read to the size it was listed with, not for ever."""
    stream.seek(0)
    size = _size(stream)
    if size >= PARALLEL_MIN and (limit is None or limit >= PARALLEL_MIN):
        return _two_threads(_capped(stream.read, limit))
    sha1, sha256, md5 = hashlib.sha1(), hashlib.sha256(), hashlib.md5()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    while n := stream.readinto(view if limit is None else view[: min(CHUNK, limit - total)]):
        chunk = view[:n]
        sha1.update(chunk)
        sha256.update(chunk)
        md5.update(chunk)
        total += n
    return FileHashes(sha1.hexdigest(), sha256.hexdigest(), md5.hexdigest(), total)


def over_bound(size: int, bound: int) -> str | None:
    """Why a file of `size` bytes is not hashed or verified under the read bound `bound` (0: no
    bound), or None when it is read whole."""
    if not bound or size <= bound:
        return None
    return f"{size:,} bytes, more than the {size_text(bound)} read bound (--max-read)"


def size_text(n: int) -> str:
    """A size as it is written on the command line's side: 4 GiB, 512 MiB, 100 KiB, or bytes."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift:,} {unit}"
    return f"{n:,} bytes"


# Not on Windows, nor where RMMSCAN_PORTABLE=1 forces the portable paths: then a file is
# hashed by hash_stream alone, after its verification (rows/facts.py reads this too).
CAN_PREAD = portable.CAN_PREAD


class Cancelled(Exception):
    """hash_fd was asked to stop before the end of the file."""


def hash_fd(fd: int, stop: threading.Event | None = None, limit: int | None = None) -> FileHashes:
    """The same for an open descriptor, read with pread: its offset is neither used nor
    moved, so this can run in a thread while another reads the same open file. `stop` set:
    Cancelled at the next chunk. Only where CAN_PREAD."""
    offset = 0

    def read(n: int) -> bytes:
        nonlocal offset
        if stop is not None and stop.is_set():
            raise Cancelled
        chunk = os.pread(fd, n, offset)
        offset += len(chunk)
        return chunk

    return _two_threads(_capped(read, limit))


def _capped(read: Callable[[int], bytes], limit: int | None) -> Callable[[int], bytes]:
    """`read`, returning nothing once `limit` bytes were read."""
    if limit is None:
        return read
    done = 0

    def capped(n: int) -> bytes:
        nonlocal done
        chunk = read(min(n, limit - done)) if done < limit else b""
        done += len(chunk)
        return chunk

    return capped


def _size(stream: BinaryIO) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # not a file (BytesIO): hash it here
        return 0


def _two_threads(read: Callable[[int], bytes]) -> FileHashes:
    sha1, sha256, md5 = hashlib.sha1(), hashlib.sha256(), hashlib.md5()
    chunks: queue.Queue[bytes | None] = queue.Queue(_IN_FLIGHT)

    def md5_worker() -> None:
        while (chunk := chunks.get()) is not None:
            md5.update(chunk)

    worker = threading.Thread(target=md5_worker, name="md5", daemon=True)
    worker.start()
    total = 0
    try:
        while chunk := read(CHUNK):  # a new buffer each time: the worker still reads it
            chunks.put(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
            total += len(chunk)
    finally:
        chunks.put(None)  # a read error too: the worker ends before the error leaves here
        worker.join()
    return FileHashes(sha1.hexdigest(), sha256.hexdigest(), md5.hexdigest(), total)
