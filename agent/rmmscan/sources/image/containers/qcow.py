"""QEMU QCOW2 (and QCOW1) through libqcow (pyqcow), read-only.

libqcow gives zeros, without an error, for many compressed clusters (which ones varies with
the image and the build: 6 to 39 of 44 in the tests' images). So this module reads the image's
own L1 and L2 tables (bounded: one L2 table per lookup, a few kept) and inflates a compressed
cluster itself (qcow2's raw deflate, the default compression type); libqcow reads the others
(zstd-compressed clusters included). A compressed cluster that cannot be inflated to a whole
cluster (damaged; for zstd, libqcow fails or gives all zeros) is read as zeros and is hollow:
a file stored there is reported unreadable, never judged clean from zeros. An image with a
backing file is refused with the backing file named.
"""

from __future__ import annotations

import collections
import os
import struct
import zlib

from ..container import Container, ContainerError

_MAGIC = b"QFI\xfb"
_COMPRESSED = 1 << 62  # an L2 entry's flag (QCOW2)
_OFFSET_MASK = 0x00FFFFFFFFFFFE00  # an L1 entry's L2 table offset
_EXTENDED_L2 = 1 << 4  # incompatible feature: 16-byte L2 entries (version 3)
_COMPRESSION_TYPE = 1 << 3  # incompatible feature: the header's compression type is used
_L2_KEPT = 32
_CHECKED_KEPT = 1 << 16
_INFLATED_KEPT = 4


def _matches(head: bytes, _tail: bytes) -> bool:
    return head.startswith(_MAGIC)


class QcowImage(Container):
    format = "qcow2"

    def __init__(self, path: str):
        import pyqcow

        handle = pyqcow.file()
        handle.open(path, "r")
        backing = handle.get_backing_filename()
        if backing:
            handle.close()
            raise ContainerError(f"qcow2: has a backing file ({backing!r}): not supported")
        self.handle = handle
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._l2: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._checked: dict[int, bool] = {}
        self._inflated: collections.OrderedDict[int, bytes | None] = collections.OrderedDict()
        self.size = handle.get_media_size()  # read by _zeros before Container sets it
        try:
            self._header(os.fstat(self.fd).st_size)
        except BaseException:
            self.close_handles()
            raise
        super().__init__(path, handle.get_media_size())

    def _header(self, file_size: int) -> None:
        head = os.pread(self.fd, 104, 0)
        if len(head) < 72:
            raise ContainerError("qcow2: header cut short")
        version = struct.unpack_from(">I", head, 4)[0]
        self.version = version
        self.can_be_hollow = version >= 2
        if version < 2:  # QCOW1: no compressed-cluster map is read (see the README)
            self.format = "qcow"
            self.l1_size = 0
            return
        cluster_bits = struct.unpack_from(">I", head, 20)[0]
        if not 9 <= cluster_bits <= 21:
            raise ContainerError(f"qcow2: cluster size 2^{cluster_bits} out of range")
        self.cluster = 1 << cluster_bits
        self.l1_size, self.l1_offset = struct.unpack_from(">IQ", head, 36)
        entry = 8
        self.deflate = True  # compression type 0: raw deflate
        if version >= 3 and len(head) >= 80:
            incompatible = struct.unpack_from(">Q", head, 72)[0]
            if incompatible & _EXTENDED_L2:
                entry = 16
            if incompatible & _COMPRESSION_TYPE:
                self.deflate = len(head) > 104 and head[104] == 0
        self.l2_entry = entry
        # A compressed cluster's descriptor: its host offset in the low `bits` bits, then
        # the count of 512-byte sectors it takes beyond the first (qcow2's specification).
        self.offset_bits = 62 - (cluster_bits - 8)
        self.l2_entries = self.cluster // entry
        if self.l1_size * 8 > file_size or self.l1_offset + self.l1_size * 8 > file_size:
            raise ContainerError("qcow2: the L1 table lies past the end of the file")
        self.l1 = struct.unpack(
            f">{self.l1_size}Q", os.pread(self.fd, self.l1_size * 8, self.l1_offset)
        )

    def _compressed(self, index: int) -> int:
        """The L2 entry of guest cluster ``index`` if that cluster is compressed, else 0."""
        l1_index, l2_index = divmod(index, self.l2_entries)
        if l1_index >= self.l1_size:
            return 0
        table = self._table(self.l1[l1_index] & _OFFSET_MASK)
        if table is None:
            return 0
        entry = struct.unpack_from(">Q", table, l2_index * self.l2_entry)[0]
        return entry if entry & _COMPRESSED else 0

    def _hollow(self, offset: int, size: int) -> bool:
        if not self.l1_size:
            return False
        cluster = self.cluster
        first, last = offset // cluster, (offset + size - 1) // cluster
        for index in range(first, last + 1):
            if self._compressed(index) and self._zeros(index):
                return True
        return False

    def _inflate(self, index: int, entry: int) -> bytes | None:
        """Compressed guest cluster ``index``: inflated here (deflate), or read by libqcow
        (another compression type); None when neither gives a whole cluster (damaged)."""
        if index in self._inflated:
            self._inflated.move_to_end(index)
            return self._inflated[index]
        want = min(self.cluster, self.size - index * self.cluster)
        data = None
        if self.deflate:
            bits = self.offset_bits
            host = entry & ((1 << bits) - 1)
            sectors = (entry >> bits) & ((1 << (62 - bits)) - 1)
            stored = os.pread(self.fd, (sectors + 1) * 512 - (host & 511), host)
            try:
                data = zlib.decompressobj(-15).decompress(stored, want)
            except zlib.error:
                data = None
        else:
            try:
                data = self.handle.read_buffer_at_offset(want, index * self.cluster)
            except (OSError, RuntimeError, ValueError):
                data = None
            if data is not None and data.count(0) == len(data):
                data = None  # qemu never stores a cluster of zeros compressed
        if data is not None and len(data) != want:
            data = None
        self._inflated[index] = data
        if len(self._inflated) > _INFLATED_KEPT:
            self._inflated.popitem(last=False)
        return data

    def _zeros(self, index: int) -> bool:
        """A compressed cluster whose data cannot be had: given as zeros, and hollow."""
        known = self._checked.get(index)
        if known is None:
            entry = self._compressed(index)
            known = self._checked[index] = bool(entry) and self._inflate(index, entry) is None
            if len(self._checked) > _CHECKED_KEPT:
                self._checked.clear()
        return known

    def _table(self, offset: int) -> bytes | None:
        if not offset:
            return None  # unallocated: zeros, truly
        table = self._l2.get(offset)
        if table is None:
            table = os.pread(self.fd, self.cluster, offset)
            if len(table) != self.cluster:
                raise ContainerError(f"qcow2: the L2 table at {offset:,} is cut short")
            self._l2[offset] = table
            if len(self._l2) > _L2_KEPT:
                self._l2.popitem(last=False)
        else:
            self._l2.move_to_end(offset)
        return table

    def _read(self, offset: int, size: int) -> bytes:
        """Compressed clusters inflated here (zeros, hollow, when they cannot be), runs of
        the others read by libqcow."""
        if not self.l1_size:
            return self.handle.read_buffer_at_offset(size, offset)
        cluster, end = self.cluster, offset + size
        parts: list[bytes] = []
        plain = offset  # the start of the run libqcow has yet to read
        at = offset
        while at < end:
            index = at // cluster
            stop = min((index + 1) * cluster, end)
            entry = self._compressed(index)
            if entry:
                if plain < at:
                    parts.append(self.handle.read_buffer_at_offset(at - plain, plain))
                data = self._inflate(index, entry)
                start = index * cluster
                parts.append(bytes(stop - at) if data is None else data[at - start : stop - start])
                plain = stop
            at = stop
        if plain < end:
            parts.append(self.handle.read_buffer_at_offset(end - plain, plain))
        return b"".join(parts)

    def close_handles(self) -> None:
        self.handle.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        super().close()
        self.close_handles()


DETECTOR = ("qcow2", _matches, QcowImage)
