"""QEMU QCOW2 (and QCOW1) through libqcow (pyqcow), read-only.

libqcow gives zeros, without an error, for some compressed clusters (most it decompresses).
This module reads the image's own L1 and L2 tables (bounded: one L2 table per lookup, a few
kept) to know which guest clusters are compressed, and counts as hollow a compressed cluster
that reads as all zeros: a file stored there is reported unreadable, never judged clean from
zeros. An image with a
backing file is refused with the backing file named.
"""

from __future__ import annotations

import collections
import os
import struct

from ..container import Container, ContainerError

_MAGIC = b"QFI\xfb"
_COMPRESSED = 1 << 62  # an L2 entry's flag (QCOW2)
_OFFSET_MASK = 0x00FFFFFFFFFFFE00  # an L1 entry's L2 table offset
_EXTENDED_L2 = 1 << 4  # incompatible feature: 16-byte L2 entries (version 3)
_L2_KEPT = 32
_CHECKED_KEPT = 1 << 16


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
        if version >= 3 and len(head) >= 80:
            incompatible = struct.unpack_from(">Q", head, 72)[0]
            if incompatible & _EXTENDED_L2:
                entry = 16
        self.l2_entry = entry
        self.l2_entries = self.cluster // entry
        if self.l1_size * 8 > file_size or self.l1_offset + self.l1_size * 8 > file_size:
            raise ContainerError("qcow2: the L1 table lies past the end of the file")
        self.l1 = struct.unpack(
            f">{self.l1_size}Q", os.pread(self.fd, self.l1_size * 8, self.l1_offset)
        )

    def _hollow(self, offset: int, size: int) -> bool:
        if not self.l1_size:
            return False
        cluster = self.cluster
        first, last = offset // cluster, (offset + size - 1) // cluster
        for index in range(first, last + 1):
            l1_index, l2_index = divmod(index, self.l2_entries)
            if l1_index >= self.l1_size:
                return False
            table = self._table(self.l1[l1_index] & _OFFSET_MASK)
            if table is None:
                continue
            at = l2_index * self.l2_entry
            if struct.unpack_from(">Q", table, at)[0] & _COMPRESSED and self._zeros(index):
                return True
        return False

    def _zeros(self, index: int) -> bool:
        """A compressed cluster libqcow reads as all zeros: one it could not decompress
        (libqcow decompresses most; qemu never stores a cluster of zeros compressed)."""
        known = self._checked.get(index)
        if known is None:
            size = min(self.cluster, self.size - index * self.cluster)
            data = self.handle.read_buffer_at_offset(size, index * self.cluster)
            known = self._checked[index] = data.count(0) == len(data)
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
        return self.handle.read_buffer_at_offset(size, offset)

    def close_handles(self) -> None:
        self.handle.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        super().close()
        self.close_handles()


DETECTOR = ("qcow2", _matches, QcowImage)
