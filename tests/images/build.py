"""Builders of disk images for the image tests, all without mounting anything.

Each builder runs real tools (ntfs-3g, wimlib, dosfstools, mtools, fdisk, ewf-tools, qemu-utils),
checks each tool's exit status (``BuildError`` carries the tool's stderr) and returns the path of
what it made. Builds are cached for the test session (the process): a second call with the same
inputs (the same tree content or input image, the same options) returns the image the first call
built, whatever ``out`` it is given. Images are shared, so a test that alters one copies it first.
"""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.images.tree import Ads, Tree

MIB = 1024 * 1024
TIMEOUT = 120
# wimlib and mtools turn names into UTF-16 through the locale: UTF-8 names need a UTF-8 locale.
ENV = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


class BuildError(RuntimeError):
    pass


def run(*args: str | os.PathLike, input: bytes | None = None, cwd: Path | None = None) -> str:
    """Runs a tool; raises BuildError with its stderr unless it exits 0. Returns its stdout."""
    argv = [os.fspath(a) for a in args]
    try:
        proc = subprocess.run(
            argv, input=input, capture_output=True, timeout=TIMEOUT, env=ENV, cwd=cwd,
            check=False,
        )
    except FileNotFoundError as exc:
        raise BuildError(f"{argv[0]} is not installed (packaging/bootstrap --test)") from exc
    if proc.returncode != 0:
        raise BuildError(
            f"{' '.join(argv)} exited {proc.returncode}:\n"
            + proc.stderr.decode("utf-8", "replace")[-4000:]
            + proc.stdout.decode("utf-8", "replace")[-2000:]
        )
    return proc.stdout.decode("utf-8", "replace")


# -- the session cache ---------------------------------------------------------------------------

_CACHE: dict[tuple, Path] = {}


def _fingerprint(path: Path) -> tuple:
    """What a tree or a file holds, cheaply: names, sizes and modification times (of a link
    itself, as a tree may hold links that point nowhere)."""
    path = Path(path)
    if path.is_dir():
        items = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.lstat(os.path.join(dirpath, name))
                items.append((os.path.relpath(os.path.join(dirpath, name), path), st.st_size,
                              st.st_mtime_ns))
        return (str(path.resolve()), tuple(items))
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _cached(key: tuple, exists: Callable[[Path], bool], build: Callable[[], Path]) -> Path:
    hit = _CACHE.get(key)
    if hit is not None and exists(hit):
        return hit
    made = build()
    _CACHE[key] = made
    return made


def _tree_root(tree: Tree | Path | str) -> Path:
    return Path(tree.root if isinstance(tree, Tree) else tree)


def _tree_bytes(root: Path) -> int:
    return sum(
        os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(root) for f in files
    )


def _fresh(out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    return out


# -- file systems --------------------------------------------------------------------------------


def ntfs_volume(
    tree_root: Tree | Path | str,
    out: Path | str,
    ads: Ads | Sequence[Ads] | None = None,
    *,
    size_mib: int | None = None,
    label: str = "RMMTEST",
) -> Path:
    """An NTFS volume (no partition table) holding the tree, and the named streams ``ads``.

    ``mkntfs -F -Q`` formats a file (16 MiB unless the tree needs more: twice its bytes plus
    8 MiB), ``wimcapture`` + ``wimapply`` (wimlib's NTFS-3G back end) copy the tree in with its
    Unicode names, ``ntfscp -N`` writes each stream into its (existing) host file. Files under
    about 700 bytes are resident in their MFT record (the tree's non-PE files), the PE files are
    not. About 0.05 s.
    """
    root = _tree_root(tree_root)
    streams: tuple[Ads, ...] = (
        () if ads is None else (ads,) if isinstance(ads, Ads) else tuple(ads)
    )
    key = ("ntfs", _fingerprint(root), streams, size_mib, label)

    def build() -> Path:
        img = _fresh(Path(out))
        size = size_mib * MIB if size_mib else max(16 * MIB, 2 * _tree_bytes(root) + 8 * MIB)
        size = (size + MIB - 1) // MIB * MIB
        with open(img, "wb") as f:
            f.truncate(size)
        run("mkntfs", "-F", "-Q", "-q", "-L", label, img)
        wim = img.with_name(img.name + ".wim")
        try:
            run("wimcapture", root, wim, "--compress=none", "--no-acls")
            run("wimapply", wim, "1", img)
        finally:
            wim.unlink(missing_ok=True)
        for s in streams:
            host = "/" + Tree.posix(s.path)
            run("ntfscp", "-q", "-N", s.stream, img, s.sample, host)
        return img

    return _cached(key, Path.exists, build)


FAT_SIZES_MIB = {12: 4, 16: 16, 32: 40}


def fat_volume(
    tree_root: Tree | Path | str,
    out: Path | str,
    fat: int = 32,
    *,
    size_mib: int | None = None,
    label: str | None = None,
) -> Path:
    """A FAT12, FAT16 or FAT32 volume (no partition table) holding the whole tree.

    ``mkfs.vfat -F fat`` formats a file (FAT12 4 MiB, FAT16 16 MiB, FAT32 40 MiB: the smallest
    sizes at which mkfs.vfat makes that FAT type with enough clusters), ``mcopy -s -m`` copies the
    tree in with long (VFAT) names in UTF-16 and generated 8.3 names. The whole tree (about
    140 KiB) fits even FAT12; a tree that does not fit fails the build (mcopy's "Disk full").
    FAT has no named streams, and the hives and non-PE files are copied like the rest.
    About 0.02 s.
    """
    if fat not in FAT_SIZES_MIB:
        raise ValueError("fat is 12, 16 or 32")
    root = _tree_root(tree_root)
    size = (size_mib or FAT_SIZES_MIB[fat]) * MIB
    label = label or f"RMMFAT{fat}"
    key = ("fat", _fingerprint(root), fat, size, label)

    def build() -> Path:
        img = _fresh(Path(out))
        with open(img, "wb") as f:
            f.truncate(size)
        run("mkfs.vfat", "-F", str(fat), "-n", label, "-i", "5EEDF00D", img)
        entries = sorted(root.iterdir())
        if entries:
            run("mcopy", "-s", "-m", "-Q", "-i", img, *entries, "::/")
        return img

    return _cached(key, Path.exists, build)


def exfat_volume(tree_root: Tree | Path | str, out: Path | str) -> Path:
    """Not here: no tool found writes files into an exFAT image without mounting it, so
    tests/images/exfat.exfat_volume writes them itself, per the exFAT layout.

    exfatprogs has mkfs.exfat, fsck.exfat, tune.exfat, dump.exfat and exfat2img, none of which
    adds a file; exfat-fuse and the kernel driver need a mount; mtools and wimlib know FAT and NTFS
    only; on PyPI, dissect-fat reads exFAT but does not write it, and fatfs-ng (ChaN's FatFs) is
    built without FF_FS_EXFAT (mounting a mkfs.exfat volume fails with FR_NO_FILESYSTEM).
    """
    raise NotImplementedError(exfat_volume.__doc__)


EXT_KINDS = ("ext2", "ext3", "ext4")


def ext_volume(
    tree_root: Tree | Path | str,
    out: Path | str,
    kind: str = "ext4",
    *,
    block: int = 4096,
    features: Sequence[str] = (),
    scatter: Sequence[str] = (),
    size_mib: int | None = None,
    label: str = "RMMEXT",
) -> Path:
    """An ext2, ext3 or ext4 volume (no partition table) holding the tree as it is on the local
    file system: symbolic links, FIFOs, hard links and names that are not UTF-8 included.

    ``mke2fs -t kind -b block -O features -d root`` formats a file (8 MiB unless the tree needs
    more: twice its bytes plus 4 MiB) and copies the tree in, offline. ``features`` such as
    ``inline_data`` (a file of up to about 150 bytes kept in its inode) change how files are
    stored. Each file of ``scatter`` (Windows paths relative to the root) is left out of that
    copy (made from a ``cp -a`` of the tree) and written afterwards by ``debugfs -w`` while every
    other free block is marked in use (``setb``, given back by ``freeb`` after), so that no two of
    its blocks touch: with 1 KiB blocks an 8 KiB PE file lies in nine extents on ext4 (past the
    four an inode holds: an extent tree of depth 1), and on ext2 and ext3 a file of more than
    twelve blocks has its other blocks named by an indirect block. ``e2fsck -fn`` must find the
    result clean. About 0.1 s.
    """
    if kind not in EXT_KINDS:
        raise ValueError(f"kind is one of {EXT_KINDS}")
    root = _tree_root(tree_root)
    key = ("ext", _fingerprint(root), kind, block, tuple(features), tuple(scatter), size_mib,
           label)  # fmt: skip

    def build() -> Path:
        img = _fresh(Path(out))
        size = size_mib * MIB if size_mib else max(8 * MIB, 2 * _tree_bytes(root) + 4 * MIB)
        with open(img, "wb") as f:
            f.truncate((size + MIB - 1) // MIB * MIB)
        options = ["-O", ",".join(features)] if features else []
        source = root
        if scatter:
            source = img.with_name(img.name + ".tree")
            if source.exists():
                run("rm", "-rf", source)
            run("cp", "-a", root, source)
            for rel in scatter:
                (source / Tree.posix(rel)).unlink()
        try:
            run("mke2fs", "-q", "-F", "-t", kind, "-b", str(block), "-L", label, *options,
                "-d", source, img)  # fmt: skip
        finally:
            if source != root:
                run("rm", "-rf", source)
        if scatter:
            hosts = [root / Tree.posix(rel) for rel in scatter]
            blocks = sum(-(-h.stat().st_size // block) for h in hosts)
            found = run("debugfs", "-R", f"ffb {2 * blocks + 64}", img).split(":", 1)[1].split()
            held = found[1::2]
            script = [f"setb {b}" for b in held]
            for rel, host in zip(scatter, hosts, strict=True):
                folder, _, name = Tree.posix(rel).rpartition("/")
                script += [f'cd "/{folder}"', f'write "{host}" "{name}"']
            script += [f"freeb {b}" for b in held]
            commands = img.with_name(img.name + ".debugfs")
            commands.write_bytes(os.fsencode("\n".join(script) + "\n"))
            try:
                run("debugfs", "-w", "-f", commands, img)
            finally:
                commands.unlink()
        run("e2fsck", "-fn", img)
        return img

    return _cached(key, Path.exists, build)


# -- partition tables ----------------------------------------------------------------------------

GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"


def volume_kind(volume: Path) -> str:
    """``ntfs``, ``fat12``, ``fat16``, ``fat32``, ``exfat`` or ``ext`` from a volume's boot sector
    (or, for ext2/3/4, its superblock's magic)."""
    with open(volume, "rb") as f:
        boot = f.read(2048)
    if boot[3:11] == b"NTFS    ":
        return "ntfs"
    if boot[3:11] == b"EXFAT   ":
        return "exfat"
    if boot[0x52:0x5A] == b"FAT32   ":
        return "fat32"
    if boot[0x36:0x3B] in (b"FAT12", b"FAT16"):
        return boot[0x36:0x3B].decode().lower()
    if boot[1024 + 56 : 1024 + 58] == b"\x53\xef":
        return "ext"
    raise BuildError(f"{volume}: not a volume this builder knows")


# MBR partition types: NTFS and exFAT share 0x07; FAT32 with LBA 0x0c, FAT16 with LBA 0x0e;
# ext2/3/4 0x83 (Linux). GPT: Microsoft basic data, but Linux file system data for ext.
MBR_TYPES = {"ntfs": "7", "exfat": "7", "fat32": "c", "fat16": "e", "fat12": "1", "ext": "83"}
GPT_TYPES = {"ext": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}


def partitioned(
    volume_paths: Sequence[Path | str],
    out: Path | str,
    scheme: str = "mbr",
) -> Path:
    """A disk image with an MBR (``dos``) or GPT partition table holding the volumes in order.

    ``sfdisk`` writes the table on a file: partitions start at 1 MiB and on MiB boundaries, each
    the volume's size rounded up to a MiB; MBR types 0x07 (NTFS, exFAT), 0x0c (FAT32), 0x0e
    (FAT16), 0x01 (FAT12), 0x83 (ext2/3/4); GPT partitions are Microsoft basic data (Linux file
    system data for ext2/3/4), with 1 MiB left at the end for the backup table. ``dd conv=notrunc``
    writes each volume at its partition's start. The file systems' "hidden sectors" are left as
    their builders wrote them (0). About 0.03 s.
    """
    if scheme not in ("mbr", "gpt"):
        raise ValueError("scheme is mbr or gpt")
    vols = [Path(v) for v in volume_paths]
    if not vols:
        raise ValueError("no volumes")
    key = ("part", tuple(_fingerprint(v) for v in vols), scheme)

    def build() -> Path:
        img = _fresh(Path(out))
        lines = ["label: " + ("gpt" if scheme == "gpt" else "dos"), "unit: sectors", ""]
        starts = []
        start_mib = 1
        for v in vols:
            size_mib = (v.stat().st_size + MIB - 1) // MIB
            kind = volume_kind(v)
            ptype = GPT_TYPES.get(kind, GPT_BASIC_DATA) if scheme == "gpt" else MBR_TYPES[kind]
            lines.append(f"start={start_mib * 2048}, size={size_mib * 2048}, type={ptype}")
            starts.append(start_mib)
            start_mib += size_mib
        with open(img, "wb") as f:
            f.truncate((start_mib + 1) * MIB)
        run("sfdisk", "--no-reread", "--no-tell-kernel", "-q", img,
            input=("\n".join(lines) + "\n").encode())
        for v, s in zip(vols, starts, strict=True):
            run("dd", f"if={v}", f"of={img}", "bs=1M", f"seek={s}", "conv=notrunc",
                "status=none")
        return img

    return _cached(key, Path.exists, build)


# -- containers ----------------------------------------------------------------------------------


def to_e01(
    raw: Path | str,
    out_base: Path | str,
    segment_bytes: int | None = None,
    *,
    compression: str | None = None,
) -> Path:
    """An EnCase 6 (E01) image of ``raw``, made by ``ewfacquire -u``; returns the ``.E01``.

    ``out_base`` is the path without the extension. With ``segment_bytes`` (at least 1 MiB,
    ewfacquire's minimum) the image is split into segments ``.E01``, ``.E02``, ...; compression
    is then ``none`` unless given (compressed, a small image fits one segment), otherwise
    ``deflate:fast``. The case metadata is fixed (case ``RMM-1``, evidence ``E1``). About 0.1 s.
    """
    raw = Path(raw)
    if segment_bytes is not None and segment_bytes < MIB:
        raise ValueError("ewfacquire's smallest segment is 1 MiB")
    if compression is None:
        compression = "none" if segment_bytes else "fast"
    key = ("e01", _fingerprint(raw), segment_bytes, compression)

    def build() -> Path:
        base = Path(out_base)
        base.parent.mkdir(parents=True, exist_ok=True)
        for old in base.parent.glob(base.name + ".E[0-9][0-9]"):
            old.unlink()
        args = ["ewfacquire", "-u", "-q", "-t", base, "-f", "encase6", "-c", compression,
                "-m", "fixed", "-M", "physical", "-C", "RMM-1", "-D", "rmmscan test image",
                "-E", "E1", "-e", "rmmscan tests", "-N", "made by tests/images/build.py"]
        if segment_bytes:
            args += ["-S", str(segment_bytes)]
        run(*args, raw)
        first = base.with_name(base.name + ".E01")
        if not first.exists():
            raise BuildError(f"ewfacquire made no {first}")
        return first

    return _cached(key, Path.exists, build)


def e01_segments(first: Path | str) -> list[Path]:
    """The segment files of an E01 image, in order, from its ``.E01``."""
    first = Path(first)
    base = first.name[: -len(".E01")]
    return sorted(first.parent.glob(base + ".E[0-9][0-9]"))


def _qemu_convert(raw: Path, out: Path, fmt: str, opts: str | None, compressed: bool,
                  key: tuple) -> Path:
    def build() -> Path:
        img = _fresh(out)
        args: list[str | os.PathLike] = ["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt]
        if opts:
            args += ["-o", opts]
        if compressed:
            args.append("-c")
        run(*args, raw, img)
        return img

    return _cached(key, Path.exists, build)


VMDK_SUBFORMATS = (
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
    "streamOptimized",
)


def to_vmdk(raw: Path | str, out: Path | str, split: bool = True, *,
            subformat: str | None = None) -> Path:
    """A VMDK of ``raw`` by ``qemu-img convert -O vmdk``; returns the descriptor (``out``).

    ``split`` (the default) makes ``twoGbMaxExtentSparse``: a text descriptor ``out`` plus the
    sparse extent ``<stem>-s001.vmdk`` beside it; ``split=False`` a single ``monolithicSparse``
    file. ``subformat`` chooses any of ``VMDK_SUBFORMATS`` instead (``monolithicFlat``: descriptor
    plus ``<stem>-flat.vmdk``). About 0.05 s.
    """
    sub = subformat or ("twoGbMaxExtentSparse" if split else "monolithicSparse")
    if sub not in VMDK_SUBFORMATS:
        raise ValueError(f"subformat is one of {VMDK_SUBFORMATS}")
    raw = Path(raw)
    return _qemu_convert(raw, Path(out), "vmdk", f"subformat={sub}", False,
                         ("vmdk", _fingerprint(raw), sub))


def vmdk_files(descriptor: Path | str) -> list[Path]:
    """The descriptor and the extent files a split or flat VMDK names (from its descriptor)."""
    descriptor = Path(descriptor)
    with open(descriptor, "rb") as f:
        head = f.read(64 * 1024)
    if head[:4] == b"KDMV":
        return [descriptor]
    files = [descriptor]
    for line in head.decode("utf-8", "replace").splitlines():
        parts = line.split('"')
        if line.startswith(("RW ", "RDONLY ")) and len(parts) >= 2:
            files.append(descriptor.parent / parts[1])
    return files


def to_vhd(raw: Path | str, out: Path | str, dynamic: bool = False) -> Path:
    """A VHD of ``raw`` by ``qemu-img convert -O vpc``: ``fixed`` (the raw bytes then a 512-byte
    footer) or ``dynamic`` (a sparse block allocation table), with ``force_size=on`` so that the
    virtual size is the raw size, not rounded to a CHS geometry. About 0.05 s."""
    raw = Path(raw)
    sub = "dynamic" if dynamic else "fixed"
    return _qemu_convert(raw, Path(out), "vpc", f"subformat={sub},force_size=on", False,
                         ("vhd", _fingerprint(raw), sub))


def to_vhdx(raw: Path | str, out: Path | str, dynamic: bool = True) -> Path:
    """A VHDX of ``raw`` by ``qemu-img convert -O vhdx`` (``dynamic`` by default, or ``fixed``).
    About 0.05 s."""
    raw = Path(raw)
    sub = "dynamic" if dynamic else "fixed"
    return _qemu_convert(raw, Path(out), "vhdx", f"subformat={sub}", False,
                         ("vhdx", _fingerprint(raw), sub))


def to_qcow2(raw: Path | str, out: Path | str, compressed: bool = False) -> Path:
    """A QCOW2 of ``raw`` by ``qemu-img convert -O qcow2``; ``compressed`` (``-c``) writes every
    cluster deflate-compressed. About 0.05 s."""
    raw = Path(raw)
    return _qemu_convert(raw, Path(out), "qcow2", None, compressed,
                         ("qcow2", _fingerprint(raw), compressed))


# -- deletion ------------------------------------------------------------------------------------


def _mft_record_offset(fs, addr: int, record: int, cluster: int) -> int:
    """The byte offset in the volume of MFT record ``addr``, from $MFT's data runs."""
    import pytsk3

    at = addr * record
    for attr in fs.open_meta(inode=0):
        if int(attr.info.type) != pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA or attr.info.name:
            continue
        for run in attr:
            start, length = int(run.offset) * cluster, int(run.len) * cluster
            if start <= at < start + length:
                return int(run.addr) * cluster + at - start
    raise BuildError(f"MFT record {addr} is not in $MFT's runs")


def _unfix(rec: bytearray) -> None:
    """Undo the record's update sequence (fixups): the real last two bytes of each sector."""
    usa, count = struct.unpack_from("<HH", rec, 4)
    usn = rec[usa : usa + 2]
    for i in range(1, count):
        end = i * 512 - 2
        if rec[end : end + 2] != usn:
            raise BuildError("MFT record: a torn sector (fixup mismatch)")
        rec[end : end + 2] = rec[usa + 2 * i : usa + 2 * i + 2]


def _fix(rec: bytearray) -> None:
    usa, count = struct.unpack_from("<HH", rec, 4)
    usn = rec[usa : usa + 2]
    for i in range(1, count):
        end = i * 512 - 2
        rec[usa + 2 * i : usa + 2 * i + 2] = rec[end : end + 2]
        rec[end : end + 2] = usn


def ntfs_deleted(volume: Path | str, out: Path | str, rel: str) -> tuple[Path, int]:
    """A copy of the NTFS ``volume`` in which the file ``rel`` (a Windows path relative to the
    volume) is deleted as NTFS deletes it, without mounting; returns (the copy, its record).

    No offline tool deletes from NTFS (ntfs-3g's utilities list has no ntfsrm; wimlib only
    adds), so the records are edited per the NTFS layout (the record header's sequence number
    at 0x10 and flags at 0x16; $INDEX_ROOT's node header and entries), fixups undone first and
    redone after, offsets found with The Sleuth Kit (pytsk3, as ``ifind``/``istat`` would):
    the parent folder's index entry naming the file is removed from its $INDEX_ROOT (the entries
    after it moved up, the bytes in use reduced: its name stays in the slack, where a deleted
    name is found), and the file's record is marked not in use with its sequence number
    incremented, as ntfs-3g's ntfs_mft_record_free does. The $MFT bitmap and the data's
    clusters are left as they were (the data is still there, as after a real deletion until
    reuse). The parent's index must be resident (a small folder). Not cached: a fresh copy.
    """
    import shutil

    import pytsk3

    out = _fresh(Path(out))
    shutil.copyfile(volume, out)
    posix = "/" + Tree.posix(rel)
    fs = pytsk3.FS_Info(pytsk3.Img_Info(str(out)))
    addr = int(fs.open(posix).info.meta.addr)
    parent = int(fs.open(posix.rsplit("/", 1)[0] or "/").info.meta.addr)
    with open(out, "rb") as f:
        boot = f.read(512)
    cluster = struct.unpack_from("<H", boot, 11)[0] * boot[13]
    per = struct.unpack_from("<b", boot, 0x40)[0]
    record = cluster * per if per > 0 else 1 << -per
    where = {n: _mft_record_offset(fs, n, record, cluster) for n in (addr, parent)}
    del fs
    with open(out, "r+b") as f:
        # The parent's $INDEX_ROOT (attribute type 0x90): remove the entries naming addr.
        f.seek(where[parent])
        rec = bytearray(f.read(record))
        _unfix(rec)
        at = struct.unpack_from("<H", rec, 0x14)[0]
        while True:
            kind, length = struct.unpack_from("<II", rec, at)
            if kind == 0xFFFFFFFF:
                raise BuildError(f"{rel}: the parent's index is not resident")
            if kind == 0x90:
                break
            at += length
        value = at + struct.unpack_from("<H", rec, at + 0x14)[0]
        node = value + 16
        first, used, _alloc = struct.unpack_from("<III", rec, node)
        pos, end, removed = node + first, node + used, 0
        while pos < end:
            ref, size = struct.unpack_from("<QH", rec, pos)
            flags = struct.unpack_from("<I", rec, pos + 12)[0]
            if not flags & 2 and ref & 0xFFFFFFFFFFFF == addr:
                rec[pos : end - size] = rec[pos + size : end]  # the entries after it move up
                end -= size
                removed += 1
                continue
            if flags & 2:
                break
            pos += size
        if not removed:
            raise BuildError(f"{rel}: no entry of the parent's $INDEX_ROOT names record {addr}")
        struct.pack_into("<I", rec, node + 4, end - node)
        _fix(rec)
        f.seek(where[parent])
        f.write(rec)
        # The file's record: not in use, its sequence number incremented (never 0).
        f.seek(where[addr])
        rec = bytearray(f.read(record))
        if rec[:4] != b"FILE":
            raise BuildError(f"MFT record {addr}: no FILE signature")
        seq, flags = struct.unpack_from("<H", rec, 0x10)[0], struct.unpack_from("<H", rec, 0x16)[0]
        struct.pack_into("<H", rec, 0x10, 1 if seq == 0xFFFF else seq + 1)
        struct.pack_into("<H", rec, 0x16, flags & ~1)
        f.seek(where[addr])
        f.write(rec)  # the header lies in the first sector, before its fixup: left as it is
    return out, addr
