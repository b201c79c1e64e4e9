"""Expert Witness Format (E01, Ex01), split segments too, through libewf (pyewf), read-only.

The segments are found from the first one's name (image.E01 → image.E02 ...) by libewf's own
glob; a name it cannot glob is opened alone. A segment cut short opens, and its reads then
fail: the failure names the layer, the image and the offset.

libewf opens and checks every image. The chunks of an E01 (EWF version 1, as EnCase, FTK
Imager and ewfacquire write it) are then read by ``_Chunks`` from the segments' table
sections and inflated with zlib: the libewf build that pip installs inflates with code of its
own, several times slower than zlib, and inflating chunks is most of the time an E01 scan
takes (benchmarks/README.md, the image scan). The tables are held to what those writers
write: a checksum that does not match, a section that does not end where the next begins,
offsets out of order or outside their sectors section, a table2 that is not its table's
copy, a table longer than the writers make them, a chunk count that is not the media's. Any
of that leaves the image (or that table's chunks) to libewf; so does any chunk that does not
inflate to exactly its size with its checksum intact. libewf's answer and ``_Chunks``' are
then the same bytes: both read the same table entry and the same stored chunk, and zlib
checks the chunk's own Adler-32. Ex01 (EWF version 2) is read by libewf alone.
"""

from __future__ import annotations

import array
import bisect
import collections
import os
import struct
import zlib
from typing import NamedTuple

from ..container import ContainerError, LibyalImage

_E01 = b"EVF\x09\x0d\x0a\xff\x00"
_EX01 = b"EVF2\x0d\x0a\x81\x00"
_L01 = (b"LVF\x09\x0d\x0a\xff\x00", b"LEF2\x0d\x0a\x81\x00")

_DESCRIPTOR = struct.Struct("<16sQQ40xI")  # type, next section, size, padding, Adler-32
_TABLE = struct.Struct("<I4xQ4xI")  # entries, base offset, Adler-32 of the 20 bytes before
_SEGMENT = struct.Struct("<8sBHH")  # signature, 1, segment number, 0
_U32 = struct.Struct("<I")
_MAX_SECTIONS = 1 << 16  # per segment: a segment holds a few sections per 16,375 chunks
_MAX_TABLES = 1 << 20
_MAX_ENTRIES = 1 << 17  # per table (EnCase writes 16,375, libewf 65,534): more, libewf reads
_TABLES_KEPT = 4
_FILES_KEPT = 8  # segment files held open at once
_OFFSET = 0x7FFFFFFF


def _matches(head: bytes, _tail: bytes) -> bool:
    return head.startswith((_E01, _EX01, *_L01))


class EwfImage(LibyalImage):
    format = "ewf"

    def __init__(self, path: str):
        import pyewf

        if open(path, "rb").read(8).startswith(_L01):  # noqa: SIM115 (closed by refcount)
            raise ContainerError(
                "ewf: a logical evidence file (L01/Lx01) holds files, not a disk: not supported"
            )
        try:
            names = pyewf.glob(path)
        except (OSError, RuntimeError, ValueError, TypeError):
            names = [path]
        handle = pyewf.handle()
        handle.open(names, "r")
        self.names = list(names)
        self.segments = len(names)
        super().__init__(path, handle)
        chunk = handle.get_chunk_size()
        self.chunks: _Chunks | None = None
        if 512 <= chunk <= 1024 * 1024 and chunk & (chunk - 1) == 0:
            self.block = chunk  # one chunk per read: a small read inflates one chunk
            self.chunks = _Chunks.open(list(names), chunk, self.size)

    @property
    def fork_safe(self) -> bool:  # type: ignore[override]
        # Chunks are read by pread; libewf only for what _Chunks declines (see forked).
        return self.chunks is not None

    def forked(self) -> None:
        """libewf's handle reads at a file offset the forked processes share: this process
        opens a handle of its own, if it ever needs one."""
        self._inherited = self.handle  # kept: freeing it here would close its files
        self.handle = _OwnHandle(self.names)

    def _read(self, offset: int, size: int) -> bytes:
        chunks = self.chunks
        if chunks is not None and size <= self.block and offset % self.block == 0:
            data = chunks.read(offset // self.block, size)
            if data is not None:
                return data
        return self.handle.read_buffer_at_offset(size, offset)

    def close(self) -> None:
        if self.chunks is not None:
            self.chunks.close()
        super().close()

    def identity(self) -> bytes:
        out = []
        for name in ("MD5", "SHA1"):
            try:
                value = self.handle.get_hash_value(name)
            except (OSError, RuntimeError, KeyError, ValueError):
                value = None
            out.append(f"{name}={value or ''}")
        return ";".join(out).encode()


class _OwnHandle:
    """A libewf handle opened on first use, in the process that uses it: what a forked
    process's EwfImage reads through (``_read``) and closes."""

    def __init__(self, names: list[str]):
        self.names, self._handle = names, None

    def _opened(self):
        if self._handle is None:
            import pyewf

            handle = pyewf.handle()
            handle.open(self.names, "r")
            self._handle = handle
        return self._handle

    def read_buffer_at_offset(self, size: int, offset: int) -> bytes:
        return self._opened().read_buffer_at_offset(size, offset)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class _Odd(Exception):
    """The tables are not as the writers this reader knows write them: libewf reads."""


class _Table(NamedTuple):
    first: int  # the media's chunk number of its first entry
    segment: int  # index into the segment files
    at: int  # its section's offset in the segment file
    count: int
    base: int  # the entries' offsets are relative to it
    start: int  # the sectors section its chunks lie in: [start, end) of the segment file
    end: int
    mirror: int  # its table2 section's offset, or -1


class _Loaded(NamedTuple):
    offsets: array.array  # absolute, in the segment file; one more: the end of the last
    compressed: bytes  # 1 per compressed entry


class _Chunks:
    """Where each chunk of an E01 is stored, read from its table sections, and the chunk
    read from there. ``read`` answers None for anything it does not read as libewf would."""

    def __init__(self, names: list[str], chunk: int, media: int, tables: list[_Table]):
        self.names, self.chunk, self.media, self.tables = names, chunk, media, tables
        self.firsts = [t.first for t in tables]
        self._loaded: collections.OrderedDict[int, _Loaded | None] = collections.OrderedDict()
        self._fds: collections.OrderedDict[int, int] = collections.OrderedDict()
        self.inflated = self.declined = 0  # chunks read here; chunks left to libewf

    @classmethod
    def open(cls, names: list[str], chunk: int, media: int) -> _Chunks | None:
        """The image's tables, or None when they are not as expected (libewf reads)."""
        tables: list[_Table] = []
        total = 0
        try:
            for number, name in enumerate(names):
                fd = os.open(name, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                try:
                    total = _segment(fd, number, total, tables)
                finally:
                    os.close(fd)
        except (_Odd, OSError, struct.error):
            return None
        if total != -(-media // chunk) or not tables:
            return None
        return cls(names, chunk, media, tables)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
        self._loaded.clear()

    def read(self, index: int, want: int) -> bytes | None:
        """Chunk ``index``'s first ``want`` bytes (the whole chunk, or the media's last), or
        None: libewf reads it."""
        at = bisect.bisect_right(self.firsts, index) - 1
        if at < 0 or want != min(self.chunk, self.media - index * self.chunk):
            return None
        table = self.tables[at]
        entry = index - table.first
        if entry >= table.count:
            return None
        try:
            loaded = self._table(at, table)
            if loaded is None:
                self.declined += 1
                return None
            start, stop = loaded.offsets[entry], loaded.offsets[entry + 1]
            if loaded.compressed[entry]:
                data = self._inflate(table.segment, start, stop - start, want)
            else:
                data = self._stored(table.segment, start, stop - start, want)
        except OSError:
            data = None
        if data is None:
            self.declined += 1
        else:
            self.inflated += 1
        return data

    def _inflate(self, segment: int, start: int, stored: int, want: int) -> bytes | None:
        # A compressed chunk is never much larger than the chunk (its writer stores it
        # uncompressed then); more is read only up to that bound.
        raw = os.pread(self._fd(segment), min(stored, want + want // 8 + 1024), start)
        inflater = zlib.decompressobj()
        try:
            data = inflater.decompress(raw, want + 1)  # one more byte than the chunk: too long
        except zlib.error:
            return None
        if len(data) != want or not inflater.eof:  # eof: zlib checked the Adler-32
            return None
        return data

    def _stored(self, segment: int, start: int, stored: int, want: int) -> bytes | None:
        if stored != want + 4:  # the data, then its Adler-32: libewf reads it from the end
            return None
        raw = os.pread(self._fd(segment), stored, start)
        if len(raw) != stored:
            return None
        data = raw[:want]
        if zlib.adler32(data) != _U32.unpack_from(raw, want)[0]:
            return None
        return data

    def _fd(self, segment: int) -> int:
        fds = self._fds
        fd = fds.get(segment)
        if fd is not None:
            fds.move_to_end(segment)
            return fd
        fd = os.open(self.names[segment], os.O_RDONLY | getattr(os, "O_BINARY", 0))
        fds[segment] = fd
        if len(fds) > _FILES_KEPT:
            os.close(fds.popitem(last=False)[1])
        return fd

    def _table(self, at: int, table: _Table) -> _Loaded | None:
        loaded = self._loaded
        if at in loaded:
            loaded.move_to_end(at)
            return loaded[at]
        try:
            made = self._load(table)
        except (_Odd, struct.error):
            made = None
        loaded[at] = made
        if len(loaded) > _TABLES_KEPT:
            loaded.popitem(last=False)
        return made

    def _load(self, table: _Table) -> _Loaded:
        """The table's entries, checked: their checksum, their copy in table2, and offsets
        that rise within the sectors section. Raises _Odd otherwise."""
        fd = self._fd(table.segment)
        length = _TABLE.size + 4 * table.count + 4
        body = os.pread(fd, length, table.at + _DESCRIPTOR.size)
        if len(body) != length:
            raise _Odd
        entries = body[_TABLE.size : -4]
        if zlib.adler32(entries) != _U32.unpack_from(body, length - 4)[0]:
            raise _Odd
        if table.mirror >= 0 and os.pread(fd, length, table.mirror + _DESCRIPTOR.size) != body:
            raise _Odd  # libewf might read either: the two must agree
        values = struct.unpack(f"<{table.count}I", entries)
        offsets = array.array("Q", [(v & _OFFSET) + table.base for v in values])
        offsets.append(table.end)
        previous = table.start - 1  # the first chunk may start where the section's data does
        for offset in offsets:  # rising, the last chunk before the end of the section
            if offset <= previous:
                raise _Odd
            previous = offset
        compressed = bytes(v >> 31 for v in values)
        return _Loaded(offsets, compressed)


def _segment(fd: int, number: int, first: int, tables: list[_Table]) -> int:
    """Appends segment ``number``'s tables (its chunks numbered from ``first``) and returns
    the chunk count so far. Raises _Odd for anything not as expected."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, _SEGMENT.size, 0)
    if len(head) != _SEGMENT.size:
        raise _Odd
    signature, start, segment, end = _SEGMENT.unpack(head)
    if signature != _E01 or start != 1 or segment != number + 1 or end != 0:
        raise _Odd
    at = _SEGMENT.size
    sectors: tuple[int, int] | None = None  # the last sectors section's data: [start, end)
    for _ in range(_MAX_SECTIONS):
        raw = os.pread(fd, _DESCRIPTOR.size, at)
        if len(raw) != _DESCRIPTOR.size:
            raise _Odd
        kind, following, length, checksum = _DESCRIPTOR.unpack(raw)
        if zlib.adler32(raw[:72]) != checksum:
            raise _Odd
        kind = kind.rstrip(b"\0")
        if kind in (b"next", b"done"):
            return first
        if following <= at or following > size or length != following - at:
            raise _Odd  # each section ends where the next begins, as its writers put them
        if kind == b"sectors":
            sectors = (at + _DESCRIPTOR.size, at + length)
        elif kind == b"table":
            first = _table(fd, at, length, size, number, first, sectors, tables)
            sectors = None  # a sectors section has one table
        elif kind == b"table2":
            last = tables[-1] if tables else None
            if (
                last is None
                or last.segment != number
                or last.mirror >= 0
                or length != (_DESCRIPTOR.size + _TABLE.size + 4 * last.count + 4)
            ):
                raise _Odd
            tables[-1] = last._replace(mirror=at)
        at = following
    raise _Odd


def _table(fd: int, at: int, length: int, size: int, number: int, first: int,
           sectors: tuple[int, int] | None, tables: list[_Table]) -> int:  # fmt: skip
    if sectors is None or sectors[1] != at or len(tables) >= _MAX_TABLES:
        raise _Odd  # the chunks lie in the sectors section just before their table
    head = os.pread(fd, _TABLE.size, at + _DESCRIPTOR.size)
    if len(head) != _TABLE.size:
        raise _Odd
    count, base, checksum = _TABLE.unpack(head)
    if zlib.adler32(head[:20]) != checksum or not 0 < count <= _MAX_ENTRIES:
        raise _Odd
    if length != _DESCRIPTOR.size + _TABLE.size + 4 * count + 4 or at + length > size:
        raise _Odd
    tables.append(_Table(first, number, at, count, base, sectors[0], sectors[1], -1))
    return first + count


DETECTOR = ("ewf", _matches, EwfImage)
