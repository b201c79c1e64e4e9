"""One file system of an image, walked: its folders and their files as candidates.

The walk goes a folder at a time (the engine batches and caches per folder, as in the local
sweep) and never follows a link: symbolic links, junctions and mount points (NTFS reparse
points, ext4 symlinks) are counted, not entered. NTFS's metadata files ($MFT, $Bitmap, ...,
$Extend) and The Sleuth Kit's virtual entries are skipped. A file whose content cannot be
read as stored (WOF/CompactOS compressed, EFS encrypted, a reparse point holding its data
elsewhere) is reported unreadable: never judged, so never passed as clean. Each named data
stream (an NTFS alternate data stream) is a file of its own, ``name:stream``.

A deleted entry is judged only when asked (``deleted``) and only while its file record is
still the one the name points to (same record number; the same sequence number, or the next
one while the record is free, as freeing it increments it); its rows are marked.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pytsk3

from ..candidate import Candidate, FileChanged, Listing, join
from .volumes import Volume

# Reparse tags (MS-FSCC 2.1.2.1) that make an entry a link: never followed.
_LINK_TAGS = {
    0xA000000C: "symlink",
    0xA0000003: "junction or mount point",
    0x8000001B: "app execution alias",
    0xA000001D: "WSL symlink",
}
_WOF = 0x80000017  # Windows Overlay Filter: WOF/CompactOS compressed content
_NTFS_SYSTEM_RECORDS = 24  # MFT records 0-23: $MFT ... $Extend and reserved ones
_MAX_DEPTH = 1024
_KEY = struct.Struct("<QQqqq")  # 40 bytes: candidate.KEY_SIZE
# A folder to list: (its record's address, its path, its depth below the root).
Folder = tuple[int, str, int]
HOLLOW = "stored in compressed QCOW2 clusters that cannot be decompressed (damaged): not read"

_REG = pytsk3.TSK_FS_META_TYPE_REG
_DIR = pytsk3.TSK_FS_META_TYPE_DIR
_LNK = pytsk3.TSK_FS_META_TYPE_LNK
_VIRTUAL = (pytsk3.TSK_FS_META_TYPE_VIRT, pytsk3.TSK_FS_META_TYPE_VIRT_DIR)
_DATA = pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA
_REPARSE = pytsk3.TSK_FS_ATTR_TYPE_NTFS_REPARSE
_DEFAULT = pytsk3.TSK_FS_ATTR_TYPE_DEFAULT
_ENCRYPTED = pytsk3.TSK_FS_ATTR_ENC
_NONRESIDENT = pytsk3.TSK_FS_ATTR_NONRES
_SPARSE = pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE
_FILLER = pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER
_NAME_UNALLOC = pytsk3.TSK_FS_NAME_FLAG_UNALLOC
_META_UNALLOC = pytsk3.TSK_FS_META_FLAG_UNALLOC


class ImageStream(io.RawIOBase):
    """A file's data attribute (or named stream) as a read-only, seekable stream, bounded
    by the size listed: nothing past it is read, whatever the records say."""

    def __init__(self, entry, attr_type: int, attr_id: int, size: int):
        super().__init__()
        self.entry, self.attr_type, self.attr_id, self.size = entry, attr_type, attr_id, size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self.pos, self.size)[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self.size - self.pos)
        if want <= 0:
            return 0
        try:
            data = self.entry.read_random(self.pos, want, self.attr_type, self.attr_id)
        except (OSError, RuntimeError) as exc:
            raise OSError(5, f"cannot read {want:,} bytes at offset {self.pos:,}: {exc}") from None
        if len(data) != want:
            raise OSError(5, f"{len(data):,} bytes where {want:,} were stored at {self.pos:,}")
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


class ImageFile(Candidate):
    """A file (or one named stream of it) inside an image's file system."""

    __slots__ = ("attr_id", "attr_type", "deleted", "entry", "listing", "origin")

    sep = "\\"

    def __init__(self, folder: str, name: str, entry, attr_type: int, attr_id: int,
                 listing: Listing, deleted: bool, origin=None):  # fmt: skip
        self.folder, self.name, self.source, self.origin = folder, name, "image", origin
        self.entry, self.attr_type, self.attr_id = entry, attr_type, attr_id
        self.listing, self.deleted = listing, deleted

    def open(self) -> tuple[BinaryIO, Listing]:
        raw = ImageStream(self.entry, self.attr_type, self.attr_id, self.listing.size)
        return io.BufferedReader(raw, 64 * 1024), self.listing

    def sniff(self) -> tuple[Listing, BinaryIO | None]:
        # Two bytes, as the sweep reads them (localfile.LocalFile.sniff), and no stream
        # unless they are "MZ": most files of an image are not PE files. A file shorter
        # than two bytes cannot start with "MZ" and is not read.
        listing = self.listing
        if listing.size < 2:
            return listing, None
        try:
            head = self.entry.read_random(0, 2, self.attr_type, self.attr_id)
        except (OSError, RuntimeError) as exc:
            raise OSError(5, f"cannot read 2 bytes at offset 0: {exc}") from None
        if len(head) != 2:
            raise OSError(5, f"{len(head):,} bytes where 2 were stored at 0")
        if head != b"MZ":
            return listing, None
        return listing, self.open()[0]

    def reopen(self, listing: Listing) -> BinaryIO:
        if listing.key != self.listing.key:
            raise FileChanged("not the file the cache knew")
        return self.open()[0]


def _same_record(meta, name_seq: int) -> bool:
    """The NTFS record is still the file a deleted name named: its sequence number is the
    name's, or, the record being free, the name's plus one (NTFS increments it, never to 0,
    when it frees a record). Otherwise the record was reused: another file."""
    seq = int(meta.seq)
    if seq == name_seq:
        return True
    freed = 1 if name_seq == 0xFFFF else name_seq + 1
    return seq == freed and bool(int(meta.flags) & _META_UNALLOC)


def _stamp(meta) -> tuple[int, int, int, int]:
    """(sequence, record number, mtime, the record's change time) of a file record: read once
    per entry, for each of its streams' keys."""
    return (
        int(meta.seq),
        int(meta.addr),
        int(meta.mtime) * 1_000_000_000 + int(meta.mtime_nano),
        int(meta.ctime) * 1_000_000_000 + int(meta.ctime_nano),
    )


def _listing(
    volume: Volume, stamp: tuple[int, int, int, int], attr_id: int, size: int, deleted: bool
) -> Listing:
    """The key: partition, sequence, stream and deletion packed in one field, then the record
    number, size, mtime and the record's change time (which no user can set)."""
    seq, addr, mtime, ctime = stamp
    packed = (
        (volume.number & 0xFFFF) << 48
        | (seq & 0xFFFF) << 32
        | (attr_id & 0xFFFF) << 16
        | int(deleted)
    )
    return Listing(size, _KEY.pack(packed, addr, size, mtime, ctime), mtime, ctime)


def unseen(subfolders: list[Folder], seen: set[int]) -> list[Folder]:
    """The subfolders not reached before, now added to ``seen``: a folder two names lead to
    (a damaged or crafted file system) is walked once, and a loop ends."""
    out = []
    for sub in subfolders:
        if sub[0] not in seen:
            seen.add(sub[0])
            out.append(sub)
    return out


class FileSystemWalk:
    """Walks one volume's file system. ``tally`` takes ``count(what)`` and
    ``problem(path, kind, message)``; ``root`` is the name of the volume's root folder."""

    def __init__(
        self,
        volume: Volume,
        root: str,
        tally,
        deleted: bool = False,
        origin=None,
        hollow: Callable[[int, int], bool] | None = None,
    ):
        self.volume, self.root, self.tally, self.deleted = volume, root, tally, deleted
        self.origin = origin  # (evidence, partition, snapshot): the files' columns
        # hollow(offset, size): the image reads zeros there (compressed QCOW2 clusters).
        # The Sleuth Kit caches what it read, so a file's data is checked by where it lies.
        self.hollow = hollow
        self.fs = volume.fs
        self.ntfs = int(self.fs.info.ftype) & pytsk3.TSK_FS_TYPE_NTFS_DETECT != 0
        self.block = int(self.fs.info.block_size)
        self._mft: tuple[list[tuple[int, int, int]], int] | None = None

    def top(self) -> Folder:
        """The root folder, as ``folder`` takes it."""
        return int(self.fs.info.root_inum), self.root, 0

    def folder(self, where: Folder) -> tuple[list[ImageFile], list[Folder]] | None:
        """One folder's files and its subfolders; None (the problem said) when it cannot be
        listed. The files' entries stay valid while the list is held. A subfolder reached
        twice (a damaged file system) is the caller's to drop: it knows every folder seen."""
        addr, path, depth = where
        fs = self.fs
        try:
            directory = fs.open_dir(inode=addr)
            entries = list(directory)
            if self.hollow is not None and self._hollow_entry(fs.open_meta(inode=addr)):
                self.tally.problem(path, "unreadable", f"its folder entries are {HOLLOW}")
        except (OSError, RuntimeError) as exc:
            self.tally.problem(path, "unreadable", f"folder cannot be listed: {exc}")
            return None
        files: list[ImageFile] = []
        subfolders = []
        for entry in entries:
            sub = self._entry(entry, path, depth, files)
            if sub is not None:
                subfolders.append(sub)
        return files, subfolders

    def folders(self) -> Iterator[tuple[str, list[ImageFile]]]:
        """(folder path, its files) for every folder, depth first, each once."""
        top = self.top()
        stack = [top]
        seen = {top[0]}
        while stack:
            where = stack.pop()
            found = self.folder(where)
            if found is None:
                continue
            files, subfolders = found
            stack.extend(reversed(unseen(subfolders, seen)))
            yield where[1], files

    def _entry(self, entry, folder: str, depth: int, files: list[ImageFile]):
        # Every entry of the volume passes here: each pytsk3 property read makes an object,
        # so each is read once.
        info = entry.info
        named = info.name
        raw = named.name
        if raw == b"." or raw == b"..":
            return None
        # ext2/3/4 names are bytes, not always UTF-8: undecodable bytes become surrogates, as
        # the sweep's names do (PEP 383), so that FolderPathBytes holds them and two such names
        # stay two names (NTFS and FAT names come from The Sleuth Kit as valid UTF-8).
        name = raw.decode("utf-8", "surrogateescape")
        meta = info.meta
        deleted = bool(int(named.flags) & _NAME_UNALLOC)
        if meta is None and deleted and self.deleted and self.ntfs:
            entry = self._freed_record(named)  # TSK drops it: its sequence moved on
            meta = None if entry is None else entry.info.meta
        if meta is None:
            if deleted:
                self.tally.count("deleted entries without a file record")
            else:  # a name whose record cannot be read (zeros, damage): never passed over
                why = HOLLOW if self.hollow is not None else "its file record cannot be read"
                self.tally.problem(join(folder, name, "\\"), "unreadable", why)
            return None
        deleted = deleted or bool(int(meta.flags) & _META_UNALLOC)
        kind = meta.type
        if kind in _VIRTUAL:
            self.tally.count("file system metadata skipped")
            return None
        ntfs = self.ntfs
        if ntfs and name[:1] == "$" and int(meta.addr) < _NTFS_SYSTEM_RECORDS:
            self.tally.count("file system metadata skipped")
            return None
        if deleted:
            if not self.deleted:
                self.tally.count("deleted files not scanned (see --deleted)")
                return None
            # The name must still point at this record: a reused record is another file.
            if kind == _DIR or (ntfs and not _same_record(meta, int(named.meta_seq))):
                self.tally.count("deleted entries whose record was reused")
                return None
        if kind == _LNK:
            self.tally.count("symlinks not followed")
            return None
        # The data streams, and the first reparse point: one pass over the attributes.
        attrs = []
        reparse = None
        if ntfs:
            for attr in entry:
                a = attr.info
                of = int(a.type)
                if of == _DATA:
                    attrs.append((attr, a))
                elif of == _REPARSE and reparse is None:
                    reparse = attr
        if reparse is not None:
            tag = self._reparse_tag(entry, reparse)
            if tag in _LINK_TAGS or kind == _DIR:
                self.tally.count("symlinks not followed")
                return None
            if tag == _WOF:
                why = "WOF/CompactOS compressed: its content is not stored as it is read"
            else:
                why = f"a reparse point (tag 0x{tag:08x}) holds its content elsewhere"
            self.tally.problem(join(folder, name, "\\"), "unreadable", why)
            return None
        if kind == _DIR:
            self._streams(entry, attrs, folder, name, files, meta, deleted, unnamed=False)
            path = join(folder, name, "\\")
            if depth + 1 >= _MAX_DEPTH:
                self.tally.problem(path, "unreadable", f"deeper than {_MAX_DEPTH} folders")
                return None
            return int(meta.addr), path, depth + 1
        if kind != _REG:
            self.tally.count("special")
            return None
        if not ntfs:
            size = max(int(meta.size), 0)
            if self.hollow is not None and self._hollow_entry(entry):
                self.tally.problem(join(folder, name, "\\"), "unreadable", HOLLOW)
                return None
            listing = _listing(self.volume, _stamp(meta), 0, size, deleted)
            files.append(
                ImageFile(folder, name, entry, _DEFAULT, -1, listing, deleted, self.origin)
            )
            return None
        self._streams(entry, attrs, folder, name, files, meta, deleted, unnamed=True)
        return None

    def _streams(self, entry, attrs, folder, name, files, meta, deleted, unnamed) -> None:
        """``attrs``: the entry's $DATA attributes, each with its info."""
        stamp = None
        for attr, a in attrs:
            stream = a.name
            if stream:
                stream = stream.decode("utf-8", "replace")
            elif not unnamed:
                continue
            shown = f"{name}:{stream}" if stream else name
            if int(a.flags) & _ENCRYPTED:
                self.tally.problem(
                    join(folder, shown, "\\"),
                    "unreadable",
                    "EFS encrypted: its content is not stored as it is read",
                )
                continue
            if self.hollow is not None and self._hollow_attr(entry, attr):
                self.tally.problem(join(folder, shown, "\\"), "unreadable", HOLLOW)
                continue
            size = max(int(a.size), 0)
            attr_id = int(a.id)
            if stamp is None:
                stamp = _stamp(meta)
            listing = _listing(self.volume, stamp, attr_id, size, deleted)
            files.append(
                ImageFile(folder, shown, entry, _DATA, attr_id, listing, deleted, self.origin)
            )

    def _freed_record(self, name):
        """The record a deleted name points to, when The Sleuth Kit's listing left it out
        (it wants the name's sequence number, which freeing the record incremented)."""
        try:
            entry = self.fs.open_meta(inode=int(name.meta_addr))
        except (OSError, RuntimeError):
            return None
        meta = entry.info.meta
        if meta is None or not _same_record(meta, int(name.meta_seq)):
            return None
        return entry

    # -- where the data lies, for a container that reads zeros in places ---------------------
    def _hollow_entry(self, entry) -> bool:
        return any(self._hollow_attr(entry, attr) for attr in entry)

    def _hollow_attr(self, entry, attr) -> bool:
        if int(attr.info.flags) & _NONRESIDENT:
            base = self.volume.offset
            for run in attr:
                if int(run.flags) & (_SPARSE | _FILLER):
                    continue
                if self.hollow(base + int(run.addr) * self.block, int(run.len) * self.block):
                    return True
            return False
        # Resident: the data is inside the file's record of the MFT.
        return self.ntfs and self._hollow_record(int(entry.info.meta.addr))

    def _hollow_record(self, addr: int) -> bool:
        if self._mft is None:
            mft = self.fs.open_meta(inode=0)
            head = mft.read_random(0, 32)
            size = struct.unpack_from("<I", head, 28)[0] if len(head) == 32 else 1024
            runs = []
            for attr in mft:
                if int(attr.info.type) == _DATA and not attr.info.name:
                    runs = [(int(r.offset) * self.block, int(r.addr) * self.block,
                             int(r.len) * self.block) for r in attr]  # fmt: skip
            self._mft = (runs, size if 256 <= size <= 65536 else 1024)
        runs, size = self._mft
        at = addr * size
        for start, where, length in runs:
            if start <= at < start + length:
                return self.hollow(self.volume.offset + where + at - start, size)
        return False

    @staticmethod
    def _reparse_tag(entry, attr) -> int:
        try:
            head = entry.read_random(0, 4, _REPARSE, int(attr.info.id))
        except (OSError, RuntimeError):
            head = b""
        return struct.unpack("<I", head)[0] if len(head) == 4 else 0
