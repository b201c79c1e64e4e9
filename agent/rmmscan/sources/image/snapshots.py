"""The Volume Shadow Copies of an NTFS volume (``rmmscan image --shadows``), read with
libvshadow (pyvshadow): each store is the volume as it was when its snapshot was taken, a
volume-sized byte stream that The Sleuth Kit opens like the live volume.

Stores are named ``vss1``, ``vss2``, ... in libvshadow's order, which is the order of their
creation (oldest first), as vshadowmount names them. A row's Snapshot is that name and the
snapshot's creation time in UTC: ``vss1 2013-12-03T06:35:09Z``.

A snapshot's file that is the live volume's file, unchanged, is not read again
(``Unchanged``): the live volume's rows stand for it. The rule is in ``Unchanged``'s docstring.
A volume without a shadow-copy header has no snapshots and is scanned as without
``--shadows``; a header whose catalog or stores cannot be read is an error naming the layer.
"""

from __future__ import annotations

import array
import bisect
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytsk3

from .container import Container, ContainerError
from .volumes import LayerError, TskImage, Volume

VSS_BLOCK = 16 * 1024  # a store keeps copies of the volume's 16 KiB blocks
RESIDENT_MAX = 64 * 1024  # resident data lives in one file record: never more than this
_NONRESIDENT = pytsk3.TSK_FS_ATTR_NONRES
_SPARSE = pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE
_FILLER = pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER
_META_UNALLOC = pytsk3.TSK_FS_META_FLAG_UNALLOC


class SnapshotError(LayerError):
    """The shadow copies of a volume cannot be read: the message names the layer."""


def is_ntfs(volume: Volume) -> bool:
    return volume.fs is not None and int(volume.fs.info.ftype) & pytsk3.TSK_FS_TYPE_NTFS_DETECT


class VolumeBytes:
    """One volume of the image as the file object libvshadow reads: read-only, bounded by the
    volume. A failure of the container is kept for the message (libvshadow replaces it)."""

    def __init__(self, container: Container, volume: Volume):
        self.container, self.base, self.size = container, volume.offset, volume.length
        self.pos = 0
        self.failure: str | None = None

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self.pos
        size = min(size, self.size - self.pos)
        if size <= 0:
            return b""
        try:
            data = self.container.read(self.base + self.pos, size)
        except ContainerError as exc:
            self.failure = str(exc)
            raise
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.pos = (0, self.pos, self.size)[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def get_size(self) -> int:
        return self.size


class StoreBytes(Container):
    """One store: the volume as it was at its snapshot. Reads go through libvshadow to the
    image's own container; a read that touched data that container gives as zeros (compressed
    QCOW2 clusters) marks the block, so that a file read from it is reported unreadable."""

    format = "vss"

    def __init__(self, path: str, store, under: VolumeBytes):
        self.store, self.under = store, under
        self._hollow_block = False
        super().__init__(path, int(store.volume_size))

    def _read(self, offset: int, size: int) -> bytes:
        parent = self.under.container
        before = parent.hollow_reads
        self.under.failure = None
        try:
            data = self.store.read_buffer_at_offset(size, offset)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ContainerError(
                f"vss: cannot read {size:,} bytes at offset {offset:,} of the snapshot: "
                f"{self.under.failure or exc}"
            ) from None
        self._hollow_block = parent.hollow_reads != before
        return data

    def _hollow(self, offset: int, size: int) -> bool:
        return self._hollow_block  # of the block _read just gave (Container._block)


@dataclass
class Snapshot:
    number: int  # 1 for the oldest store
    identifier: str  # the store's GUID: what the cache keeps its files under
    created: dt.datetime | None
    volume: Volume  # fs opened over the store, or error set
    container: StoreBytes | None = None
    tsk: TskImage | None = None

    @property
    def label(self) -> str:
        """The Snapshot column: ``vss1 2013-12-03T06:35:09Z``."""
        when = f" {self.created:%Y-%m-%dT%H:%M:%S}Z" if self.created is not None else ""
        return f"vss{self.number}{when}"


class Shadows:
    """The shadow copies of one NTFS volume; ``open_shadows`` makes it."""

    def __init__(self, container: Container, volume: Volume, under: VolumeBytes, handle):
        self.container, self.volume, self.under, self.handle = container, volume, under, handle
        self.count = int(handle.number_of_stores)
        self._kept = self._kept_blocks()

    def __iter__(self) -> Iterator[Snapshot]:
        """Each store, its file system opened (``volume.error`` says why not), oldest first."""
        for index in range(self.count):
            yield self._snapshot(index)

    def unchanged(self, snapshot: Snapshot) -> Unchanged:
        """The rule for this snapshot: libvshadow reads a block of it from its own store, else
        from the stores after it, else from the live volume; so only the blocks those stores
        keep can differ from the live volume's (and none is known where a list is missing)."""
        kept = self._kept[snapshot.number - 1 :]
        return Unchanged(self.volume.fs, None if None in kept else kept)

    def close(self) -> None:
        self.handle.close()

    def _snapshot(self, index: int) -> Snapshot:
        live = self.volume
        snap = Snapshot(index + 1, "", None, Volume(live.number, 0, 0, live.description))
        volume = snap.volume
        try:
            store = self.handle.get_store(index)
            snap.identifier = str(store.identifier)
            snap.created = store.get_creation_time()
            volume.description = f"{live.description}; {snap.label}"
            if not store.has_in_volume_data():
                volume.error = (
                    f"{_named(volume)}: its data is not on this volume (layer: VSS store)"
                )
                return snap
        except (OSError, RuntimeError, ValueError) as exc:
            volume.error = (
                f"{_named(volume)}: store {snap.number} cannot be read: "
                f"{self.under.failure or exc} (layer: VSS store)"
            )
            return snap
        snap.container = StoreBytes(self.container.path, store, self.under)
        volume.length = snap.container.size
        snap.tsk = TskImage(snap.container)
        snap.tsk.failure = None
        try:
            volume.fs = pytsk3.FS_Info(snap.tsk, offset=0)
        except (OSError, RuntimeError) as exc:
            why = snap.tsk.failure or f"no NTFS file system in the snapshot ({exc})"
            volume.error = f"{_named(volume)}: {why} (layer: VSS store)"
        return snap

    def _kept_blocks(self) -> list[array.array | None]:
        """For each store, the sorted 16 KiB blocks of the volume it keeps a copy of (8 bytes a
        block); None where its block list cannot be read."""
        out: list[array.array | None] = []
        for index in range(self.count):
            try:
                blocks = self.handle.get_store(index).blocks
                out.append(array.array("q", sorted({int(b.original_offset) // VSS_BLOCK
                                                    for b in blocks})))  # fmt: skip
            except (OSError, RuntimeError, ValueError):
                out.append(None)
        return out


def _named(volume: Volume) -> str:
    return f"{volume.label} ({volume.description})"


def open_shadows(container: Container, volume: Volume) -> Shadows | None:
    """The volume's shadow copies; None when it has no shadow-copy header (nothing to read).
    Raises SnapshotError naming the layer when the header is there and the catalog cannot be
    read."""
    import pyvshadow

    under = VolumeBytes(container, volume)
    try:
        if not pyvshadow.check_volume_signature_file_object(under):
            return None
    except (OSError, RuntimeError, ValueError) as exc:
        raise SnapshotError(
            f"{_named(volume)}: its shadow-copy header cannot be read: "
            f"{under.failure or exc} (layer: VSS header)"
        ) from None
    handle = pyvshadow.volume()
    try:
        under.seek(0)
        handle.open_file_object(under)
        return Shadows(container, volume, under, handle)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SnapshotError(
            f"{_named(volume)}: its volume shadow copies cannot be read: "
            f"{under.failure or exc} (layer: VSS catalog)"
        ) from None


class Unchanged:
    """Whether a snapshot's file is the live volume's file, unchanged, so that its content is
    the live file's byte for byte and reading it again would tell nothing new.

    Unchanged means: the live volume's file record of the same number holds the same sequence
    number, allocation state, size, modification time and record change time; its data
    attribute of the same id has the same type, flags, name, size and data runs (the same
    clusters); and the bytes are the same bytes, known without reading the file: resident data
    (inside the file record, at most a few KiB) is compared byte for byte; non-resident data
    lies in no 16 KiB block that the store, or a store after it, keeps a copy of, so libvshadow
    reads it from the live volume. A file changed in place under unchanged times (timestomped)
    fails the last test and is read. Not compared: the initialized size (The Sleuth Kit does not
    give it), which Windows only raises; and, in the newest snapshot, the blocks its store marks
    as not worth copying (free space, the stores' own files, files Windows leaves out of shadow
    copies), which libvshadow gives as zeros: such a file has no content of its own in the
    snapshot, and the live volume's copy is the one read.
    """

    def __init__(self, live_fs, kept: list | None):
        self.fs = live_fs
        self.kept = kept  # the sorted blocks each store from this snapshot's on keeps

    def __call__(self, file) -> bool:
        if self.kept is None:
            return False
        try:
            return self._same(file)
        except (OSError, RuntimeError):  # a record or a block that cannot be read: not known
            return False

    def _same(self, file) -> bool:
        entry = file.entry
        meta = entry.info.meta
        live = self.fs.open_meta(inode=int(meta.addr))
        other = live.info.meta
        if other is None or _stamp(other) != _stamp(meta):
            return False
        mine = _attribute(entry, file.attr_type, file.attr_id)
        theirs = _attribute(live, file.attr_type, file.attr_id)
        if mine is None or theirs is None or mine[0] != theirs[0]:
            return False
        shape, runs = mine
        flags, size = shape[2], shape[4]
        if not flags & _NONRESIDENT:
            if size > RESIDENT_MAX:
                return False
            return _read(entry, file, size) == _read(live, file, size)
        block = int(self.fs.info.block_size)
        return not any(self._copied(addr * block, length * block) for addr, length in runs)

    def _copied(self, start: int, length: int) -> bool:
        """A block of the volume bytes [start, start + length) has a copy in the stores."""
        first, last = start // VSS_BLOCK, (start + length - 1) // VSS_BLOCK
        for blocks in self.kept:
            at = bisect.bisect_left(blocks, first)
            if at < len(blocks) and blocks[at] <= last:
                return True
        return False


def _stamp(meta) -> tuple:
    return (
        int(meta.seq),
        int(meta.flags) & _META_UNALLOC,
        int(meta.size),
        int(meta.mtime),
        int(meta.mtime_nano),
        int(meta.ctime),
        int(meta.ctime_nano),
    )


def _attribute(entry, attr_type: int, attr_id: int):
    """((type, id, flags, name, size, runs), [(cluster, count) of the runs that hold data]) of
    the entry's attribute of that type and id, or None."""
    for attr in entry:
        info = attr.info
        if int(info.type) != attr_type or int(info.id) != attr_id:
            continue
        runs = tuple((int(r.offset), int(r.addr), int(r.len), int(r.flags)) for r in attr)
        shape = (attr_type, attr_id, int(info.flags), info.name, int(info.size), runs)
        held = [(addr, n) for _o, addr, n, flags in runs if n and not flags & (_SPARSE | _FILLER)]
        return shape, held
    return None


def _read(entry, file, size: int) -> bytes:
    return entry.read_random(0, size, file.attr_type, file.attr_id)
