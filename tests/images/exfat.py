"""An exFAT volume filled from a folder without mounting anything, and checked by two readers.

``mkfs.exfat`` (exfatprogs) makes the empty volume: boot region, FAT, allocation bitmap, up-case
table and root folder. No tool adds files to it offline (exfatprogs' other tools check, label
and dump it; exfat-fuse and the kernel driver mount it), so ``populate`` writes them as the
exFAT layout has them. Each file and folder is a directory entry set in its parent folder: a
File entry (0x85: attributes, times, the count of entries after it and the set's checksum, a
16-bit rotate-and-add over every byte of the set but the checksum's own two), a Stream
Extension entry (0xC0: flags, the name's length in UTF-16 units and its hash, a rotate-and-add
over the name up-cased through the volume's own up-case table, valid data length, first cluster,
data length) and a File Name entry (0xC1) per 15 UTF-16 units of the name. Its clusters are
marked in the allocation bitmap and, unless the stream says NoFatChain, linked in the FAT.
The root folder's chain grows when its entries need more clusters; the boot sector's
PercentInUse (outside the boot checksum) is set to what is allocated.

Files and folders take turns, in the order they are written, among three cluster layouts so
that a reader must handle each: contiguous with NoFatChain (no FAT entries: the stream's first
cluster and length are the run), contiguous through a FAT chain, and scattered through a FAT
chain (clusters taken from the top of the heap down, so every link points backwards). With
small clusters an entry set crosses from one cluster of its folder into the next, wherever
that is. Names are kept as they are, in UTF-16 (a non-BMP character is a surrogate pair).

``check`` runs on every volume ``exfat_volume`` returns: ``fsck.exfat -n`` must call it clean
(it checks the boot region's checksum, each set's checksum, name hash, name and secondary
count, each chain against the bitmap, no cluster owned twice, sizes against chains), and The
Sleuth Kit (``fls -r -p``, ``icat``), which shares no code with this module or with
exfatprogs, must list exactly the folder's files and folders (beside the entries it lists for
the volume's label, bitmap and up-case table) and give each file's bytes exactly.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import stat
import struct
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.images.build import (
    ENV,
    MIB,
    TIMEOUT,
    BuildError,
    _cached,
    _fingerprint,
    _fresh,
    _tree_bytes,
    _tree_root,
    run,
)
from tests.images.tree import Tree

ENTRY = 32
EOF_CLUSTER = 0xFFFFFFFF
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
LAYOUTS = ("nofatchain", "chain", "scattered")
# The names The Sleuth Kit gives the root folder's label, bitmap and up-case table entries.
TSK_BITMAP, TSK_UPCASE = "$ALLOC_BITMAP", "$UPCASE_TABLE"
# Characters a name may not hold (besides U+0000 to U+001F).
_FORBIDDEN = set('"*/:<>?\\|')


def rotate_add(data: bytes, skip: tuple[int, ...] = ()) -> int:
    """The 16-bit checksum of entry sets and name hashes: rotate right by one, add the byte."""
    value = 0
    for i, byte in enumerate(data):
        if i in skip:
            continue
        value = ((((value & 1) << 15) | (value >> 1)) + byte) & 0xFFFF
    return value


def upcase_map(table: bytes) -> list[int]:
    """The up-case table expanded: a UTF-16 unit's up-cased unit. In the stored (compressed)
    table, 0xFFFF followed by a count leaves that many units mapping to themselves."""
    mapping = list(range(0x10000))
    units = struct.unpack(f"<{len(table) // 2}H", table[: len(table) // 2 * 2])
    i = unit = 0
    while i < len(units) and unit < 0x10000:
        if units[i] == 0xFFFF and i + 1 < len(units):
            unit += units[i + 1]
            i += 2
        else:
            mapping[unit] = units[i]
            unit += 1
            i += 1
    return mapping


def name_hash(name: str, upcase: list[int]) -> int:
    units = struct.unpack(f"<{len(name.encode('utf-16-le')) // 2}H", name.encode("utf-16-le"))
    return rotate_add(b"".join(struct.pack("<H", upcase[u]) for u in units))


def timestamp(when: float) -> tuple[int, int]:
    """(the packed date and time, the 10 ms increment) of a POSIX time, in UTC."""
    t = dt.datetime.fromtimestamp(when, dt.UTC)
    t = max(t, dt.datetime(1980, 1, 1, tzinfo=dt.UTC))
    packed = ((t.year - 1980) << 25 | t.month << 21 | t.day << 16 | t.hour << 11
              | t.minute << 5 | t.second // 2)  # fmt: skip
    return packed, (t.second % 2) * 100 + t.microsecond // 10_000


def entry_set(name: str, attributes: int, first: int, length: int, nofatchain: bool,
              when: float, upcase: list[int]) -> bytes:  # fmt: skip
    """The File, Stream Extension and File Name entries of one file or folder."""
    if any(ord(c) < 0x20 or c in _FORBIDDEN for c in name) or name in (".", ".."):
        raise BuildError(f"{name!r}: not a name exFAT allows")
    utf16 = name.encode("utf-16-le")
    units = len(utf16) // 2
    if not 1 <= units <= 255:
        raise BuildError(f"{name!r}: {units} UTF-16 units (exFAT allows 1 to 255)")
    names = (units + 14) // 15
    file = bytearray(ENTRY)
    file[0], file[1] = 0x85, 1 + names
    stamp, tenths = timestamp(when)
    struct.pack_into("<HHIII", file, 4, attributes, 0, stamp, stamp, stamp)
    file[20], file[21] = tenths, tenths
    file[22] = file[23] = file[24] = 0x80  # the UTC offset is valid and zero
    stream = bytearray(ENTRY)
    stream[0], stream[1], stream[3] = 0xC0, 0x01 | (0x02 if nofatchain else 0), units
    struct.pack_into("<H", stream, 4, name_hash(name, upcase))
    struct.pack_into("<Q", stream, 8, length)  # valid data length: all of it
    struct.pack_into("<IQ", stream, 20, first, length)
    parts = [file, stream]
    for i in range(names):
        part = bytearray(ENTRY)
        part[0] = 0xC1
        chunk = utf16[i * 30 : (i + 1) * 30]
        part[2 : 2 + len(chunk)] = chunk
        parts.append(part)
    data = b"".join(parts)
    struct.pack_into("<H", file, 2, rotate_add(data, skip=(2, 3)))
    return bytes(file) + data[ENTRY:]


class Volume:
    """An exFAT volume opened for writing (or, with ``mode`` ``rb``, reading): its geometry
    from the boot sector, its bitmap, FAT and up-case table read into memory and, when
    writing, written back by ``close``."""

    def __init__(self, path: Path, mode: str = "r+b"):
        self.f = open(path, mode)  # noqa: SIM115 (closed by close())
        self.writing = "+" in mode
        boot = self.f.read(512)
        if boot[3:11] != b"EXFAT   ":
            raise BuildError(f"{path}: no exFAT boot sector")
        fields = struct.unpack_from("<IIIII", boot, 80)
        self.fat_offset, self.fat_length, heap, self.count, self.root = fields
        self.sector = 1 << boot[108]
        self.cluster = self.sector << boot[109]
        if boot[110] != 1:
            raise BuildError(f"{path}: {boot[110]} FATs (TexFAT): not written here")
        self.heap = heap * self.sector
        self.f.seek(self.fat_offset * self.sector)
        self.fat = bytearray(self.f.read(4 * (self.count + 2)))
        self.root_chain = self.chain(self.root)
        root = self.read(self.root_chain)
        self.root_used = next(
            (i for i in range(0, len(root), ENTRY) if root[i] == 0), len(root)
        )
        self.bitmap_at = self.upcase = None
        for i in range(0, self.root_used, ENTRY):
            kind = root[i]
            first, length = struct.unpack_from("<IQ", root, i + 20)
            if kind == 0x81:
                self.bitmap_at = first
                self.bitmap = bytearray(self.read(self.chain(first))[:length])
            elif kind == 0x82:
                self.upcase = upcase_map(self.read(self.chain(first))[:length])
        if self.bitmap_at is None or self.upcase is None:
            raise BuildError(f"{path}: no allocation bitmap or up-case table in the root")
        self.turn = 0

    # -- clusters ---------------------------------------------------------------------------
    def _at(self, cluster: int) -> int:
        return self.heap + (cluster - 2) * self.cluster

    def read(self, clusters: list[int]) -> bytes:
        parts = []
        for c in clusters:
            self.f.seek(self._at(c))
            parts.append(self.f.read(self.cluster))
        return b"".join(parts)

    def write(self, clusters: list[int], data: bytes) -> None:
        data = data.ljust(len(clusters) * self.cluster, b"\0")
        for i, c in enumerate(clusters):
            self.f.seek(self._at(c))
            self.f.write(data[i * self.cluster : (i + 1) * self.cluster])

    def chain(self, first: int) -> list[int]:
        clusters, seen = [], set()
        while 2 <= first < self.count + 2 and first not in seen:
            seen.add(first)
            clusters.append(first)
            first = struct.unpack_from("<I", self.fat, 4 * first)[0]
        return clusters

    def used(self, cluster: int) -> bool:
        bit = cluster - 2
        return bool(self.bitmap[bit // 8] >> (bit % 8) & 1)

    def take(self, n: int, layout: str) -> list[int]:
        """n free clusters, marked in the bitmap: the lowest run of n, or (``scattered``) the
        highest n free ones, highest first."""
        last = self.count + 2
        if layout == "scattered":
            found = [c for c in range(last - 1, 1, -1) if not self.used(c)][:n]
        else:
            found, run = [], 0
            for c in range(2, last):
                run = 0 if self.used(c) else run + 1
                if run == n:
                    found = list(range(c - n + 1, c + 1))
                    break
        if len(found) != n:
            raise BuildError(f"no room for {n} clusters of {self.cluster} bytes")
        for c in found:
            bit = c - 2
            self.bitmap[bit // 8] |= 1 << (bit % 8)
        return found

    def link(self, clusters: list[int]) -> None:
        for c, nxt in zip(clusters, [*clusters[1:], EOF_CLUSTER], strict=True):
            struct.pack_into("<I", self.fat, 4 * c, nxt)

    def store(self, data: bytes, minimum: int = 0) -> tuple[int, bool]:
        """(first cluster, NoFatChain) of data written in the next layout's turn."""
        n = max((len(data) + self.cluster - 1) // self.cluster, minimum)
        if n == 0:
            return 0, False  # an empty file has no cluster and, so, no NoFatChain
        layout = LAYOUTS[self.turn % len(LAYOUTS)]
        self.turn += 1
        clusters = self.take(n, layout)
        if layout != "nofatchain":
            self.link(clusters)
        self.write(clusters, data)
        return clusters[0], layout == "nofatchain"

    # -- folders ----------------------------------------------------------------------------
    def folder_entries(self, folder: Path) -> bytes:
        """The entry sets of a host folder's children, each child written first."""
        sets = []
        for child in sorted(folder.iterdir(), key=lambda p: p.name):
            st = child.lstat()
            if stat.S_ISDIR(st.st_mode):
                body = self.folder_entries(child)
                first, nofat = self.store(body, minimum=1)
                length = max(1, -(-len(body) // self.cluster)) * self.cluster
                attributes = ATTR_DIRECTORY
            elif stat.S_ISREG(st.st_mode):
                body = child.read_bytes()
                first, nofat = self.store(body)
                length, attributes = len(body), ATTR_ARCHIVE
            else:
                raise BuildError(f"{child}: exFAT holds files and folders only")
            sets.append(entry_set(os.fsdecode(child.name), attributes, first, length, nofat,
                                  st.st_mtime, self.upcase))  # fmt: skip
        return b"".join(sets)

    def add_to_root(self, entries: bytes) -> None:
        root = bytearray(self.read(self.root_chain))
        need = self.root_used + len(entries)
        if need > len(root):
            more = self.take(-(-(need - len(root)) // self.cluster), "scattered")
            self.root_chain += more
            self.link(self.root_chain)
            root += bytes(len(more) * self.cluster)
        root[self.root_used : need] = entries
        self.root_used = need
        self.write(self.root_chain, bytes(root))

    def close(self) -> None:
        if not self.writing:
            self.f.close()
            return
        self.f.seek(self.fat_offset * self.sector)
        self.f.write(self.fat)
        bitmap = self.chain(self.bitmap_at)
        self.write(bitmap, bytes(self.bitmap))
        used = sum(bin(b).count("1") for b in self.bitmap)
        for boot in (0, 12):  # the main and backup boot sectors
            self.f.seek(boot * self.sector + 112)
            self.f.write(bytes([used * 100 // self.count]))
        self.f.close()


def populate(volume: Path | str, root: Path | str) -> None:
    """Writes the files and folders under ``root`` into the empty exFAT ``volume``."""
    v = Volume(Path(volume))
    try:
        v.add_to_root(v.folder_entries(Path(root)))
    finally:
        v.close()


@dataclass(frozen=True)
class Stream:
    """One file or folder as its entry set says: ``path`` below the root (``/``-separated)."""

    path: str
    folder: bool
    nofatchain: bool
    first: int
    length: int
    clusters: tuple[int, ...]  # in order, as NoFatChain or the FAT gives them
    crosses: bool  # the entry set crosses from one cluster of its folder into the next


def streams(v: Volume) -> Iterator[Stream]:
    """Every file and folder of the volume, read back from its folders' entry sets."""
    folders = [(v.root_chain, "")]
    while folders:
        chain, parent = folders.pop()
        data = v.read(chain)
        i = 0
        while i < len(data) and data[i]:
            count = data[i + 1] + 1 if data[i] == 0x85 else 1
            if data[i] == 0x85:
                attributes = struct.unpack_from("<H", data, i + 4)[0]
                flags, units = data[i + ENTRY + 1], data[i + ENTRY + 3]
                first, length = struct.unpack_from("<IQ", data, i + ENTRY + 20)
                utf16 = b"".join(data[i + ENTRY * k + 2 : i + ENTRY * (k + 1)]
                                 for k in range(2, count))  # fmt: skip
                path = f"{parent}/{utf16.decode('utf-16-le', 'replace')[:units]}"
                n = -(-length // v.cluster)
                nofat = bool(flags & 0x02)
                clusters = list(range(first, first + n)) if nofat else v.chain(first)[:n]
                crosses = i // v.cluster != (i + ENTRY * count - 1) // v.cluster
                folder = bool(attributes & ATTR_DIRECTORY)
                yield Stream(path, folder, nofat, first, length, tuple(clusters), crosses)
                if folder:
                    folders.append((clusters, path))
            i += ENTRY * count


def layouts(volume: Path | str) -> Counter:
    """What a volume holds: file streams with NoFatChain (``nofatchain``), chained through the
    FAT in order (``chain``) or not (``scattered``), empty (``empty``); folders of more than one
    cluster; entry sets that cross from one cluster of their folder into the next; the root's
    clusters (``root clusters``)."""
    v = Volume(Path(volume), "rb")
    seen: Counter = Counter()
    try:
        seen["root clusters"] = len(v.root_chain)
        seen["folders over clusters"] += len(v.root_chain) > 1
        for s in streams(v):
            seen["sets over clusters"] += s.crosses
            if s.folder:
                seen["folders over clusters"] += len(s.clusters) > 1
            elif not s.length:
                seen["empty"] += 1
            elif s.nofatchain:
                seen["nofatchain"] += 1
            elif any(b != a + 1 for a, b in itertools.pairwise(s.clusters)):
                seen["scattered"] += 1
            else:
                seen["chain"] += 1
    finally:
        v.close()
    return seen


def relink(volume: Path | str, path: str, links: dict[int, int]) -> Stream:
    """Sets FAT entries of the file ``path`` (``/``-separated, below the root): ``links`` maps
    the index of one of its clusters to the value its FAT entry takes. Returns the stream as it
    was. Only the FAT changes: what a damaged chain looks like."""
    v = Volume(Path(volume))
    try:
        found = next(s for s in streams(v) if s.path == "/" + path.strip("/"))
        if found.nofatchain:
            raise BuildError(f"{path}: NoFatChain, no FAT entries to change")
        for index, value in links.items():
            struct.pack_into("<I", v.fat, 4 * found.clusters[index], value)
    finally:
        v.close()
    return found


# -- the two readers ---------------------------------------------------------------------------


def fls_entries(volume: Path | str) -> dict[str, list[tuple[str, str]]]:
    """path -> [(type, inode)] as ``fls -r -p`` lists them, less The Sleuth Kit's virtual
    entries ($MBR, $FAT1, $OrphanFiles)."""
    listed: dict[str, list[tuple[str, str]]] = {}
    for line in run("fls", "-r", "-p", volume).splitlines():
        meta, _, path = line.partition(":\t")
        kind, *_, inode = meta.split()
        if kind[0] in "vV" or path.startswith("$OrphanFiles"):
            continue
        listed.setdefault(path, []).append((kind, inode))
    return listed


def check(volume: Path | str, root: Path | str, label: str) -> None:
    """Raises BuildError unless fsck.exfat -n finds ``volume`` clean and The Sleuth Kit lists
    exactly ``root``'s files and folders and reads each file's bytes as ``root`` holds them."""
    report = run("fsck.exfat", "-n", volume)
    if "clean" not in report:
        raise BuildError(f"fsck.exfat -n {volume}: {report}")
    root = Path(root)
    want: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames:
            want[os.path.normpath(os.path.join(rel, name))] = "d/d"
        for name in filenames:
            want[os.path.normpath(os.path.join(rel, name))] = "r/r"
    listed = fls_entries(volume)
    metadata = {f"{label} (Volume Label Entry)", TSK_BITMAP, TSK_UPCASE}
    for name in metadata:  # listed once, besides a file of the folder so named
        kinds = listed.get(name, [])
        if not kinds or kinds[0][0] != "r/r":
            raise BuildError(f"fls lists no {name!r} in {volume}")
        listed[name] = kinds[1:]
    got = {p: [k for k, _ in entries] for p, entries in listed.items() if entries}
    if got != {p: [k] for p, k in want.items()}:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        raise BuildError(f"fls -r -p {volume}: missing {missing[:5]}, unexpected {extra[:5]}")
    for path, kind in want.items():
        if kind != "r/r":
            continue
        host = root / path
        data = run_bytes("icat", volume, listed[path][0][1])
        if data != host.read_bytes():
            raise BuildError(f"icat {volume} {path}: {len(data)} bytes, not the file's")


def run_bytes(*args: str | os.PathLike) -> bytes:
    """A tool's stdout as bytes (``run`` decodes it)."""
    proc = subprocess.run([os.fspath(a) for a in args], capture_output=True, env=ENV,
                          timeout=TIMEOUT, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise BuildError(f"{args[0]} exited {proc.returncode}: {proc.stderr[-2000:]!r}")
    return proc.stdout


def exfat_volume(
    tree_root: Tree | Path | str,
    out: Path | str,
    *,
    cluster: int = 4096,
    size_mib: int | None = None,
    label: str = "RMMEXFAT",
) -> Path:
    """An exFAT volume (no partition table) holding the tree, checked by ``check``.

    ``mkfs.exfat`` formats a file (8 MiB unless the tree needs more: twice its bytes plus
    4 MiB) with ``cluster``-byte clusters (512 makes entry sets cross clusters and chains
    long), then ``populate`` fills it. Cached like build.py's builders.
    """
    root = _tree_root(tree_root)
    key = ("exfat", _fingerprint(root), cluster, size_mib, label)

    def build() -> Path:
        img = _fresh(Path(out))
        size = size_mib * MIB if size_mib else max(8 * MIB, 2 * _tree_bytes(root) + 4 * MIB)
        with open(img, "wb") as f:
            f.truncate((size + MIB - 1) // MIB * MIB)
        run("mkfs.exfat", "-c", str(cluster), "-L", label, img)
        populate(img, root)
        check(img, root, label)
        return img

    return _cached(key, Path.exists, build)
