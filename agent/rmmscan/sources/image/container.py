"""The contract of an evidence container: a read-only, seekable, sized byte source, and the
detection of its format by content (never by the file's name).

Every format is opened read-only by its own library; what the file system layer sees is one
``Container`` whatever the format, read through a block cache of the format's own unit (the
libyal readers decompress or look up a chunk on every call; an E01 is read a chunk at a time,
so that a file's first bytes cost one chunk); a raw image is read where its bytes lie, the
operating system's page cache its cache. A container that reads zeros for data it cannot
give (QCOW2's compressed clusters) counts the reads that touched such data in
``hollow_reads``, so that a file read from them is reported unreadable, never clean.
"""

from __future__ import annotations

import collections
import os
import stat
from collections.abc import Callable

BLOCK = 64 * 1024  # the cache's block, unless the format decodes a unit of its own
CACHE_BYTES = 16 * 1024 * 1024  # per open image
SNIFF = 4096


class ContainerError(OSError):
    """The container cannot be opened or read: its message names the layer."""


class Container:
    """A disk image's bytes. Subclasses open one format and implement ``_read``."""

    format = "raw"
    # The cache's block: a format that decodes a unit at a time (an E01 chunk) reads that
    # unit, so that a small read (a file's first bytes) decodes one unit, not two.
    block = BLOCK

    def __init__(self, path: str, size: int):
        self.path, self.size = path, size
        self.hollow_reads = 0  # reads that returned zeros in place of data (see above)
        self._blocks: collections.OrderedDict[int, tuple[bytes, bool]] = collections.OrderedDict()

    # -- what subclasses give ----------------------------------------------------------------
    def _read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def _hollow(self, offset: int, size: int) -> bool:
        """The range holds data this reader gives as zeros (compressed QCOW2 clusters)."""
        return False

    def hollow(self, offset: int, size: int) -> bool:
        """The range holds data the reader gives as zeros (see can_be_hollow)."""
        return self._hollow(offset, size)

    can_be_hollow = False  # whether hollow() can ever be true: the walk checks only then
    # Whether a forked process may read through this object (after ``forked``): true where
    # every read is a pread, which moves no file offset the processes would share (a libyal
    # handle's reads do).
    fork_safe = False

    def forked(self) -> None:
        """In a forked process that reads through this object: what must not be shared is
        made its own."""

    def identity(self) -> bytes:
        """What the container itself says the medium is (a stored hash, a GUID), or b''."""
        return b""

    def close(self) -> None:
        self._blocks.clear()

    # -- reading, through the cache ----------------------------------------------------------
    def read(self, offset: int, size: int) -> bytes:
        """At most ``size`` bytes at ``offset``; fewer only at the end of the medium."""
        if offset < 0 or size <= 0 or offset >= self.size:
            return b""
        size = min(size, self.size - offset)
        parts = []
        end = offset + size
        unit = self.block
        block = offset // unit
        while block * unit < end:
            data, hollow = self._block(block)
            if hollow:
                self.hollow_reads += 1
            start = block * unit
            parts.append(data[max(offset - start, 0) : end - start])
            block += 1
        return b"".join(parts)

    def _block(self, block: int) -> tuple[bytes, bool]:
        blocks = self._blocks
        hit = blocks.get(block)
        if hit is not None:
            blocks.move_to_end(block)
            return hit
        unit = self.block
        start = block * unit
        want = min(unit, self.size - start)
        try:
            data = self._read(start, want)
        except ContainerError:
            raise
        except (OSError, RuntimeError, ValueError, MemoryError) as exc:
            # libyal raises OSError or RuntimeError (a truncated E01 segment, a missing
            # extent); named here, with the layer, for the message the analyst gets.
            raise ContainerError(
                f"{self.format}: cannot read {want:,} bytes at offset {start:,}: {exc}"
            ) from None
        if len(data) != want:
            raise ContainerError(
                f"{self.format}: {len(data):,} bytes where {want:,} were expected at offset "
                f"{start:,} (truncated or damaged)"
            )
        hit = (data, self._hollow(start, want))
        blocks[block] = hit
        if len(blocks) * unit > CACHE_BYTES:
            blocks.popitem(last=False)
        return hit


class LibyalImage(Container):
    """A container read through a libyal handle (pyewf, pyvmdk, pyvhdi), opened by the subclass
    and closed with the image."""

    def __init__(self, path: str, handle):
        self.handle = handle
        super().__init__(path, handle.get_media_size())

    def _read(self, offset: int, size: int) -> bytes:
        return self.handle.read_buffer_at_offset(size, offset)

    def close(self) -> None:
        super().close()
        self.handle.close()


class RawFile(Container):
    """A raw (dd) image: the file's bytes are the disk's."""

    fork_safe = True

    def __init__(self, path: str):
        # O_RDONLY only: nothing here can write to the evidence.
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            size = os.fstat(self.fd).st_size or os.lseek(self.fd, 0, os.SEEK_END)
        except BaseException:
            os.close(self.fd)
            raise
        super().__init__(path, size)

    def _read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def read(self, offset: int, size: int) -> bytes:
        # Nothing to decode: the operating system's page cache is this format's cache, and
        # each read is one pread where the bytes lie.
        if offset < 0 or size <= 0 or offset >= self.size:
            return b""
        size = min(size, self.size - offset)
        try:
            data = os.pread(self.fd, size, offset)
        except OSError as exc:
            raise ContainerError(
                f"{self.format}: cannot read {size:,} bytes at offset {offset:,}: {exc}"
            ) from None
        if len(data) != size:
            raise ContainerError(
                f"{self.format}: {len(data):,} bytes where {size:,} were expected at offset "
                f"{offset:,} (truncated or damaged)"
            )
        return data

    def close(self) -> None:
        super().close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# (format name, does the head match, opener): the first match wins; raw is the fallback.
Detector = tuple[str, Callable[[bytes, bytes], bool], Callable[[str], Container]]


def _detectors() -> list[Detector]:
    from .containers import ewf, qcow, vhdi, vmdk

    return [ewf.DETECTOR, vmdk.DETECTOR, vhdi.DETECTOR, qcow.DETECTOR]


def open_container(path: str) -> Container:
    """The image at ``path``, its format recognised from its first and last bytes. Raises
    ContainerError naming the layer when the format is recognised and cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ContainerError(f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISBLK(st.st_mode):
            raise ContainerError("not a regular file or a block device")
        head = os.pread(fd, SNIFF, 0)
        size = st.st_size or os.lseek(fd, 0, os.SEEK_END)
        tail = os.pread(fd, 512, max(size - 512, 0)) if size else b""
    finally:
        os.close(fd)
    for name, matches, opener in _detectors():
        if matches(head, tail):
            try:
                return opener(path)
            except ContainerError:
                raise
            except (OSError, RuntimeError, ValueError, TypeError) as exc:
                raise ContainerError(f"{name}: cannot open: {exc}") from None
    return RawFile(path)
