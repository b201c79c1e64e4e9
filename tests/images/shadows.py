"""The shadow-copy test image and what it holds, read without rmmscan.

``data/vsstest.qcow2.xz`` is a real NTFS volume with two Volume Shadow Copies, made by Windows
(data/NOTICE: its source, license and content). No tool on Linux writes a shadow copy, and the
image holds no PE file, while rmmscan gives rows only for PE files. ``derive`` therefore makes
a copy in which the bytes of two files, and nothing else, are small unsigned PE files; no
structure of the shadow copies is written:

- ``syslog``, which only vss1 holds: its 1,247 bytes lie in a cluster that the live volume no
  longer allocates (its $Bitmap says so) and that vss1 reads from the live volume (no store
  keeps a copy of that block). Those bytes become ``SNAPSHOT_ONLY``.
- ``syslog.gz``, 540 bytes resident in MFT record 35, the same in the live volume and in
  vss2: vss2 reads that record from the copy of its 16 KiB block that its store keeps. The
  record's data becomes ``SHARED`` in the live volume and in that copy alike (the record's
  fixups undone and redone), found where libvshadow reads it: among the block's descriptors,
  the place whose bytes are the ones vss2 gives.

``views`` reads every file of the live volume and of each store with The Sleuth Kit over
libvshadow directly (no rmmscan code): ``derive`` checks with it that the two files, and only
they, changed in every view, and the tests take it as the oracle of what is unchanged.
"""

from __future__ import annotations

import hashlib
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

from tests.images.build import BuildError, _fix, _mft_record_offset, _unfix, run

DATA = Path(__file__).resolve().parent / "data"
XZ = DATA / "vsstest.qcow2.xz"
SHA256 = "ec07f8d1b155c4c445135340aaf45d546e57362d4a45b5a653556bf244e2e27a"
VSS1, VSS2 = "vss1 2013-12-03T06:35:09Z", "vss2 2013-12-03T06:37:48Z"
VSS_BLOCK = 16 * 1024
CHUNK = 4 * 1024 * 1024
SYSTEM = "System Volume Information"  # the shadow copies' own files live here


def tiny_pe(size: int, mark: bytes) -> bytes:
    """An unsigned 32-bit PE of exactly ``size`` bytes (at least 513): DOS header, COFF and
    optional headers, one section holding ``mark`` repeated."""
    dos = bytearray(0x40)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x0102)
    body = size - 0x200
    opt = bytearray(0xE0)
    struct.pack_into("<HBBIIIIII", opt, 0, 0x10B, 14, 0, body, 0, 0, 0x1000, 0x1000, 0x1000)
    struct.pack_into("<IIIHHHHHHIIIIHHIIIIII", opt, 28, 0x400000, 0x1000, 0x200, 6, 0, 0, 0,
                     6, 0, 0, 0x2000, 0x200, 0, 3, 0x8140, 0x100000, 0x1000, 0x100000, 0x1000,
                     0, 16)  # fmt: skip
    section = struct.pack("<8sIIIIIIHHI", b".text", body, 0x1000, body, 0x200, 0, 0, 0, 0,
                          0x60000020)  # fmt: skip
    head = (bytes(dos) + coff + bytes(opt) + section).ljust(0x200, b"\0")
    return head + (mark * body)[:body]


SNAPSHOT_ONLY = tiny_pe(1247, b"only in vss1 ")
SNAPSHOT_ONLY_AT = 36 * 4096  # syslog's one cluster, free in the live volume
SHARED = tiny_pe(540, b"live and vss2 ")


def pristine(out: Path) -> Path:
    """The image as published (a QCOW2), decompressed and checked against its SHA-256."""
    out = Path(out)
    data = lzma.decompress(XZ.read_bytes())
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise BuildError(f"{XZ.name}: not the image data/NOTICE names")
    out.write_bytes(data)
    return out


def to_raw(qcow: Path, out: Path) -> Path:
    run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", qcow, out)
    return out


# -- reading, with libvshadow and The Sleuth Kit only ---------------------------------------------


def _stores(handle) -> list:
    return [handle.get_store(i) for i in range(handle.number_of_stores)]


def _fs_of(reader):
    import pytsk3

    class Img(pytsk3.Img_Info):
        def __init__(self):
            super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

        def read(self, offset, size):
            return reader(offset, size)

        def get_size(self):
            return 1 << 40

    return pytsk3.FS_Info(Img())


@dataclass(frozen=True)
class Seen:
    """One file of one view: what rmmscan's unchanged rule compares, and its content."""

    record: int
    seq: int
    attr: int
    size: int
    mtime: tuple[int, int]
    ctime: tuple[int, int]
    sha256: str


def _files(fs) -> dict[str, Seen]:
    import pytsk3

    out: dict[str, Seen] = {}
    stack = [(int(fs.info.root_inum), "")]
    while stack:
        addr, path = stack.pop()
        for entry in fs.open_dir(inode=addr):
            name = entry.info.name.name.decode("utf-8")
            meta = entry.info.meta
            if name in (".", "..") or meta is None or (not path and name.startswith("$")):
                continue
            rel = f"{path}\\{name}" if path else name
            if meta.type == pytsk3.TSK_FS_META_TYPE_DIR:
                stack.append((int(meta.addr), rel))
                continue
            for attr in entry:
                if int(attr.info.type) != pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA:
                    continue
                size = int(attr.info.size)
                digest = hashlib.sha256()
                for at in range(0, size, CHUNK):
                    n = min(CHUNK, size - at)
                    digest.update(entry.read_random(at, n, attr.info.type, attr.info.id))
                stream = attr.info.name.decode("utf-8") if attr.info.name else ""
                out[f"{rel}:{stream}" if stream else rel] = Seen(
                    int(meta.addr), int(meta.seq), int(attr.info.id), size,
                    (int(meta.mtime), int(meta.mtime_nano)),
                    (int(meta.ctime), int(meta.ctime_nano)),
                    digest.hexdigest(),
                )  # fmt: skip
    return out


def views(raw: Path) -> dict[str, dict[str, Seen]]:
    """'live', 'vss1', 'vss2', ... -> path -> Seen, for every file ($ metadata files aside)."""
    import pyvshadow

    with open(raw, "rb") as f:
        handle = pyvshadow.volume()
        handle.open_file_object(f)

        def live(offset, size):
            f.seek(offset)
            return f.read(size)

        out = {"live": _files(_fs_of(live))}
        for i, store in enumerate(_stores(handle)):
            out[f"vss{i + 1}"] = _files(_fs_of(lambda o, n, s=store: s.read_buffer_at_offset(n, o)))
        handle.close()
    return out


def unchanged(seen: dict[str, dict[str, Seen]]) -> int:
    """How many files of the snapshots are the live volume's, unchanged: the same record,
    sequence, stream, size and times, and the same content."""
    live = seen["live"]
    return sum(
        1
        for name, files in seen.items()
        if name != "live"
        for path, file in files.items()
        if live.get(path) == file
    )


# -- the derived image ---------------------------------------------------------------------------


def derive(qcow: Path, out: Path) -> Path:
    """A raw copy of ``qcow`` with SNAPSHOT_ONLY and SHARED written as the docstring says;
    raises BuildError unless every view then differs from the image's in those files only."""
    import pytsk3
    import pyvshadow

    raw = to_raw(qcow, out)
    before = views(raw)
    with open(raw, "r+b") as f:
        handle = pyvshadow.volume()
        handle.open_file_object(f)
        stores = _stores(handle)
        live_fs = pytsk3.FS_Info(pytsk3.Img_Info(str(raw)))
        cluster = int(live_fs.info.block_size)
        copied = {int(b.original_offset) // VSS_BLOCK for s in stores for b in s.blocks}

        # syslog, only in vss1: its one run, in a cluster the live volume does not allocate.
        vss1 = _fs_of(lambda o, n: stores[0].read_buffer_at_offset(n, o))
        entry = vss1.open("/syslog")
        data = pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA
        (first,) = [int(r.addr) for a in entry if int(a.info.type) == data for r in a]
        at = first * cluster
        bitmap = live_fs.open_meta(inode=6)
        bits = bitmap.read_random(0, int(bitmap.info.meta.size))
        if bits[first // 8] >> (first % 8) & 1 or at // VSS_BLOCK in copied:
            raise BuildError("syslog's cluster is allocated, or kept by a store")
        if at != SNAPSHOT_ONLY_AT:
            raise BuildError(f"syslog's data is at {at:,}, not at {SNAPSHOT_ONLY_AT:,}")
        f.seek(at)
        f.write(SNAPSHOT_ONLY)

        # syslog.gz: record 35 of the live volume and vss2's copy of it.
        record = 1024
        where = _mft_record_offset(live_fs, 35, record, cluster)
        f.seek(where)
        rec = bytearray(f.read(record))
        if bytes(rec) != stores[1].read_buffer_at_offset(record, where):
            raise BuildError("record 35 differs between the live volume and vss2")
        places = _copies(f, stores[1], where, bytes(rec))
        _unfix(rec)
        _put_resident(rec, SHARED)
        _fix(rec)
        for place in [where, *places]:
            f.seek(place)
            f.write(rec)
        handle.close()
    after = views(raw)
    _check(before, after)
    return raw


def _copies(f, store, where: int, want: bytes) -> list[int]:
    """Where in the volume the store keeps the bytes it gives at ``where``: the places its
    descriptors of that block point to that hold exactly those bytes."""
    base = where - where % VSS_BLOCK
    found = []
    for block in store.blocks:
        if int(block.original_offset) != base or not int(block.offset):
            continue
        place = int(block.offset) + where - base
        f.seek(place)
        if f.read(len(want)) == want:
            found.append(place)
    if not found:
        raise BuildError("no copy of record 35 among vss2's descriptors")
    return found


def _resident(rec: bytearray, size: int) -> int:
    """Where in the (fixups undone) record its unnamed resident $DATA of ``size`` bytes is."""
    at = struct.unpack_from("<H", rec, 0x14)[0]
    while True:
        kind, length = struct.unpack_from("<II", rec, at)
        if kind == 0xFFFFFFFF:
            raise BuildError("record 35 has no resident $DATA")
        if kind == 0x80 and rec[at + 8] == 0 and rec[at + 9] == 0:
            held, offset = struct.unpack_from("<IH", rec, at + 0x10)
            if held != size:
                raise BuildError(f"record 35's $DATA holds {held} bytes, not {size}")
            return at + offset
        at += length


def _put_resident(rec: bytearray, data: bytes) -> None:
    at = _resident(rec, len(data))
    rec[at : at + len(data)] = data


def _check(before, after) -> None:
    sha = {"SNAPSHOT_ONLY": hashlib.sha256(SNAPSHOT_ONLY).hexdigest(),
           "SHARED": hashlib.sha256(SHARED).hexdigest()}  # fmt: skip
    expected = {("vss1", "syslog"): sha["SNAPSHOT_ONLY"], ("live", "syslog.gz"): sha["SHARED"],
                ("vss2", "syslog.gz"): sha["SHARED"]}  # fmt: skip
    if before.keys() != after.keys():
        raise BuildError("the derived image has other snapshots")
    for view, files in before.items():
        if files.keys() != after[view].keys():
            raise BuildError(f"{view}: the derived image lists other files")
        for path, seen in files.items():
            if path.startswith(SYSTEM + "\\"):
                continue  # the stores' own data: vss2's copy of record 35 lies in one
            want = expected.get((view, path), seen.sha256)
            got = after[view][path]
            if got.sha256 != want or (got.record, got.seq, got.size) != (
                seen.record, seen.seq, seen.size
            ):  # fmt: skip
                raise BuildError(f"{view}: {path} is not as derive() says")


def damage_copy(raw: Path, out: Path, at: int, data: bytes) -> Path:
    """A copy of ``raw`` (sparse, as the raw image is) with ``data`` written at byte ``at``."""
    run("cp", "--sparse=always", raw, out)
    with open(out, "r+b") as f:
        f.seek(at)
        f.write(data)
    return out


def catalog_offset(raw: Path) -> int:
    """Where the shadow copies' catalog starts: the VSS volume header at 0x1e00 says (its
    catalog offset at byte 48)."""
    with open(raw, "rb") as f:
        f.seek(0x1E00 + 48)
        return struct.unpack("<Q", f.read(8))[0]


def store_block_list(raw: Path, number: int) -> int:
    """Where store ``number`` (1: vss1) keeps its block list: its catalog entry of type 0x03
    (the list's offset at byte 8, the store's GUID at byte 16), per libvshadow's documentation
    of the format, the store's GUID as libvshadow reads it."""
    import uuid

    import pyvshadow

    with open(raw, "rb") as f:
        handle = pyvshadow.volume()
        handle.open_file_object(f)
        guid = uuid.UUID(_stores(handle)[number - 1].identifier)
        handle.close()
        f.seek(catalog_offset(raw))
        block = f.read(VSS_BLOCK)
    for at in range(128, VSS_BLOCK, 128):
        kind, offset = struct.unpack_from("<QQ", block, at)
        if kind == 3 and uuid.UUID(bytes_le=block[at + 16 : at + 32]) == guid:
            return offset
    raise BuildError(f"no catalog entry for store {number}")


def vss2_copy_of_record_35(raw: Path, field: str, index: int = 0) -> int:
    """Where vss2 keeps, in its copy of MFT record 35 (the live volume's record is elsewhere),
    byte ``index`` of syslog.gz's data (``field`` "data") or of its $STANDARD_INFORMATION's
    modification time ("mtime", a FILETIME). Never a byte a fixup stands in for."""
    import pytsk3
    import pyvshadow

    with open(raw, "rb") as f:
        handle = pyvshadow.volume()
        handle.open_file_object(f)
        store = _stores(handle)[1]
        fs = pytsk3.FS_Info(pytsk3.Img_Info(str(raw)))
        where = _mft_record_offset(fs, 35, 1024, int(fs.info.block_size))
        rec = bytearray(store.read_buffer_at_offset(1024, where))
        (place,) = _copies(f, store, where, bytes(rec))
        handle.close()
    _unfix(rec)
    if field == "data":
        at = _resident(rec, len(SHARED)) + index
    else:
        first = struct.unpack_from("<H", rec, 0x14)[0]
        if struct.unpack_from("<I", rec, first)[0] != 0x10:
            raise BuildError("record 35 does not start with $STANDARD_INFORMATION")
        at = first + struct.unpack_from("<H", rec, first + 0x14)[0] + 8 + index
    if at % 512 >= 510:
        raise BuildError(f"record 35's byte {at} is under a fixup")
    return place + at
