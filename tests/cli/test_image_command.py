"""`rmmscan image` end to end: real images built by tests/images (mkntfs, mkfs.vfat, sfdisk,
ewfacquire, qemu-img) from one tree, scanned by the real command, compared with a live
`rmmscan scan` of the same tree: the same detections (RuleId, SHA256, Signer per file), the
Windows paths mapped to the tree's, the machine named from the image's own hives.

The images are built once per module and shared; each test says what it breaks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from rmmscan.sources.device import device_id_from
from tests.images.build import (
    e01_segments,
    fat_volume,
    ntfs_deleted,
    ntfs_volume,
    partitioned,
    to_e01,
    to_qcow2,
    to_vhd,
    to_vhdx,
    to_vmdk,
    vmdk_files,
)
from tests.images.tree import make_tree

from conftest import TEST_ROOT

RMMSCAN = [sys.executable, "-m", "rmmscan"]
TRUST = ["--trusted-roots", str(TEST_ROOT)]
TIMEOUT = 180


def run(args, state: Path) -> tuple[int, list[dict], str]:
    proc = subprocess.run(
        [*RMMSCAN, *args, "--format", "jsonl", "--state-dir", str(state), *TRUST],
        capture_output=True,
        timeout=TIMEOUT,
    )
    rows = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines() if line]
    return proc.returncode, rows, proc.stderr.decode("utf-8", "replace")


def hits(rows: list[dict]) -> set[tuple[str, str, str, str]]:
    return {(r["FolderPath"], r["RuleId"], r["SHA256"], r["Signer"]) for r in rows if r["RuleId"]}


def digest(paths) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(Path(path).read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("image")


@pytest.fixture(scope="module")
def tree(work):
    return make_tree(work / "tree")


@pytest.fixture(scope="module")
def expected(tree, work) -> set[tuple[str, str, str, str]]:
    """What a live sweep of the tree detects, its paths as the image's Windows volume names
    them (C:\\...), and the named stream, which only NTFS holds, as its sample detects."""
    code, rows, err = run(["scan", str(tree.root), "--no-cache"], work / "live-state")
    assert code == 1, err
    found = set()
    root = str(tree.root)
    for path, rule, sha, signer in hits(rows):
        rel = PurePosixPath(os.path.relpath(path, root))
        found.add(("C:\\" + "\\".join(rel.parts), rule, sha, signer))
    sample = hashlib.sha256(tree.ads.sample.read_bytes()).hexdigest()
    ads = {(f"C:\\{tree.ads.full}", rule, sha, signer)
           for _path, rule, sha, signer in found if sha == sample}  # fmt: skip
    assert ads  # the stream's sample is a detection
    return found | ads


@pytest.fixture(scope="module")
def ntfs(tree, work) -> Path:
    return ntfs_volume(tree, work / "ntfs.img", ads=tree.ads)


@pytest.fixture(scope="module")
def images(ntfs, work) -> dict[str, tuple[Path, list[Path], int]]:
    """kind -> (the image to name, every file it is made of, the Windows partition)."""
    mbr = partitioned([ntfs], work / "mbr.img", "mbr")
    gpt = partitioned([ntfs], work / "gpt.img", "gpt")
    e01 = to_e01(ntfs, work / "split", segment_bytes=1024 * 1024)
    vmdk = to_vmdk(mbr, work / "disk.vmdk", split=True)
    out = {
        "raw": (ntfs, [ntfs], 0),
        "mbr": (mbr, [mbr], 1),
        "gpt": (gpt, [gpt], 1),
        "e01-split": (e01, e01_segments(e01), 0),
        "vmdk-extents": (vmdk, vmdk_files(vmdk), 1),
        "vhd": (to_vhd(ntfs, work / "disk.vhd"), [], 0),
        "vhd-dynamic": (to_vhd(ntfs, work / "dyn.vhd", dynamic=True), [], 0),
        "vhdx": (to_vhdx(gpt, work / "disk.vhdx"), [], 1),
        "qcow2": (to_qcow2(mbr, work / "disk.qcow2"), [], 1),
    }
    assert len(e01_segments(e01)) > 1  # split segments, really
    assert len(vmdk_files(vmdk)) > 1  # a descriptor and its extent
    return {k: (p, files or [p], n) for k, (p, files, n) in out.items()}


@pytest.mark.parametrize(
    "kind", ["raw", "mbr", "gpt", "e01-split", "vmdk-extents", "vhd", "vhd-dynamic", "vhdx",
             "qcow2"],
)  # fmt: skip
def test_each_image_finds_what_the_sweep_finds(kind, images, expected, tree, work):
    image, files, partition = images[kind]
    before = digest(files)
    code, rows, err = run(["image", str(image)], work / f"state-{kind}")
    assert code == 1, err
    assert hits(rows) == expected, err
    assert digest(files) == before  # read-only: not a byte changed
    assert {r["DeviceName"] for r in rows} == {f"{tree.hostname}.{tree.domain}".lower()}
    assert {r["DeviceId"] for r in rows} == {device_id_from(tree.machine_guid)}
    assert {r["ScanSource"] for r in rows} == {"image"}
    assert {r["Evidence"] for r in rows} == {str(image)}
    assert {r["Partition"] for r in rows} == {partition}
    assert {r["Snapshot"] for r in rows} == {None}


def test_a_second_scan_comes_from_the_cache_and_leaves_the_local_scope_alone(
    images, expected, tree, work
):
    state = work / "state-cache"
    code, _rows, err = run(["scan", str(tree.root)], state)
    assert code == 1, err
    db = state / "cache.sqlite"

    def local_rows():
        with sqlite3.connect(db) as c:
            return c.execute("SELECT * FROM files WHERE scope = '' ORDER BY dir, name").fetchall()

    local = local_rows()
    assert local
    image = images["raw"][0]
    code, rows, err = run(["image", str(image)], state)
    assert code == 1 and hits(rows) == expected, err
    code, rows, again = run(["image", str(image)], state)
    assert code == 1 and hits(rows) == expected, again
    walked = int(again.split("files walked: ")[1].split()[0].replace(",", ""))
    cached = int(again.split("from the cache: ")[1].split()[0].replace(",", ""))
    assert walked > 10 and cached == walked, again
    assert local_rows() == local
    with sqlite3.connect(db) as c:
        scopes = {s for (s,) in c.execute("SELECT DISTINCT scope FROM files")}
    assert len(scopes) == 2 and "" in scopes


def test_fat32_partition_beside_ntfs(ntfs, tree, expected, work):
    """MBR with NTFS (the Windows volume, C:) and FAT32 (partition 2): both scanned; FAT's
    files named by partition."""
    fat = fat_volume(tree, work / "fat32.img", 32)
    disk = partitioned([ntfs, fat], work / "two.img", "mbr")
    code, rows, err = run(["image", str(disk)], work / "state-two")
    assert code == 1, err
    on_c = {h for h in hits(rows) if h[0].startswith("C:\\")}
    assert on_c == expected
    on_fat = {("C:\\" + p[len("\\\\?\\image\\p2\\"):], *rest)
              for p, *rest in hits(rows) if p.startswith("\\\\?\\image\\p2\\")}  # fmt: skip
    assert on_fat == {h for h in expected if ":" not in h[0][2:]}  # no stream on FAT
    assert {r["Partition"] for r in rows} == {1, 2}
    code, rows, err = run(["image", str(disk), "--partition", "2"], work / "state-two-p2")
    assert code == 1 and {r["Partition"] for r in rows} == {2}, err


def test_a_volume_without_windows_is_named_after_the_evidence(tree, expected, work):
    """No SYSTEM hive anywhere: DeviceName is the evidence file's name, the DeviceId is
    derived from the evidence, and the volume is named by its partition number."""
    bare_tree = work / "no-hives"
    shutil.copytree(tree.root, bare_tree)
    shutil.rmtree(bare_tree / "Windows" / "System32" / "config")
    bare = work / "NoWindows-Disk.img"
    shutil.copyfile(fat_volume(bare_tree, work / "fat16.img", 16), bare)
    code, rows, err = run(["image", str(bare)], work / "state-bare")
    assert code == 1, err
    assert {r["DeviceName"] for r in rows} == {"nowindows-disk.img"}
    (device_id,) = {r["DeviceId"] for r in rows}
    assert len(device_id) == 40 and device_id != device_id_from(tree.machine_guid)
    named = {("C:\\" + p[len("\\\\?\\image\\p0\\"):], *rest) for p, *rest in hits(rows)}
    assert named == {h for h in expected if ":" not in h[0][2:]}


def test_a_damaged_image_is_named_and_the_others_still_scanned(ntfs, images, expected, work):
    whole = to_e01(ntfs, work / "whole")  # one compressed segment
    cut = work / "cut.E01"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    # An MBR whose second partition lies past the end of the image.
    mbr = work / "past-end.img"
    shutil.copyfile(images["mbr"][0], mbr)
    with open(mbr, "r+b") as f:
        f.seek(446 + 16)
        f.write(struct.pack("<B3sB3sII", 0, b"\0\0\0", 7, b"\0\0\0", 10_000_000, 4096))
    code, rows, err = run(["image", str(cut), str(mbr)], work / "state-damaged")
    assert code == 1, err  # detections from what could be read: never hidden
    assert str(cut) in err and "ewf" in err, err
    assert "partition 2" in err and "past the end of the image" in err, err
    assert "partition table" in err, err
    good = {h for h in hits(rows) if h[0].startswith("C:\\")}
    assert good == expected  # the first partition of the MBR image, whole
    assert {r["Evidence"] for r in rows} <= {str(cut), str(mbr)}


def relative(path: str) -> str:
    """A path of the image without its volume's root (C:\\ or \\\\?\\image\\pN\\)."""
    if path.startswith("C:\\"):
        return path[3:]
    return path.split("\\", 5)[5] if path.startswith("\\\\?\\image\\") else path


HOLLOW_MARKS = (
    ": stored in compressed QCOW2",
    ": its folder entries are stored in compressed",
    ": its file record cannot be read",
    ": its files could not all be read",
)


def scan_compressed(qcow: Path, state: Path):
    """(status, rows, stderr, the paths reported unreadable relative to their volume, whether
    the whole volume was) for a scan of a compressed QCOW2."""
    code, rows, err = run(["image", str(qcow), "--emit", "all", "--no-cache"], state)
    unreadable = set()
    for line in err.splitlines():
        for mark in HOLLOW_MARKS:
            if mark in line:
                unreadable.add(relative(line.split(mark)[0][len("rmmscan: ") :]))
    whole = "first blocks are stored in compressed QCOW2 clusters" in err
    return code, rows, err, unreadable, whole


def never_silently_fewer(rows, unreadable, whole, expected, tree, err) -> set[str]:
    """For every PE of the tree (and the named stream): the scan's detections of that file
    are exactly the live sweep's, or the file, a folder above it or its volume is reported
    unreadable. Returns the files judged exactly."""
    want: dict[str, set] = {}
    for path, *rest in expected:
        want.setdefault(relative(path), set()).add(tuple(rest))
    got: dict[str, set] = {}
    for path, *rest in hits(rows):
        got.setdefault(relative(path), set()).add(tuple(rest))
    exact = set()
    for rel in [*tree.pe_files, tree.ads.full]:
        covered = whole or any(u == "" or rel == u or rel.startswith(u + "\\") for u in unreadable)
        if got.get(rel, set()) == want.get(rel, set()):
            exact.add(rel)
        else:
            assert covered, (rel, got.get(rel), want.get(rel), err)
    return exact


def test_compressed_qcow2_clusters_are_read_whole(images, expected, tree, work):
    """qemu-img -c compresses every cluster; libqcow gives many of them as zeros without an
    error (which ones varies with the image and the build), so the reader inflates them
    itself: every file is judged from its real bytes, the machine named from its hives."""
    qcow = to_qcow2(images["mbr"][0], work / "compressed.qcow2", compressed=True)
    code, rows, err, unreadable, whole = scan_compressed(qcow, work / "state-qc")
    exact = never_silently_fewer(rows, unreadable, whole, expected, tree, err)
    assert code == 1 and not unreadable and not whole, err
    assert exact == {*tree.pe_files, tree.ads.full}
    assert hits(rows) == expected, err
    assert {r["DeviceName"] for r in rows} == {f"{tree.hostname}.{tree.domain}".lower()}


def qcow2_cluster_entry(qcow: Path, guest: int) -> tuple[int, int]:
    """(the file offset of the L2 entry, the entry) of the guest cluster holding byte
    ``guest`` of a QCOW2 (version 2 or 3, 8-byte L2 entries), read per the specification."""
    with open(qcow, "rb") as f:
        head = f.read(72)
        cluster_bits = struct.unpack_from(">I", head, 20)[0]
        l1_offset = struct.unpack_from(">Q", head, 40)[0]
        cluster = 1 << cluster_bits
        l1_index, l2_index = divmod(guest // cluster, cluster // 8)
        f.seek(l1_offset + 8 * l1_index)
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2 + 8 * l2_index)
        return l2 + 8 * l2_index, struct.unpack(">Q", f.read(8))[0]


def test_a_damaged_compressed_cluster_is_reported_never_clean(images, expected, tree, work):
    """The compressed cluster holding the start of a detected PE is damaged (its deflate
    stream given an invalid block type): neither the reader nor libqcow can give its bytes.
    That file is reported unreadable, never judged clean from zeros; no PE of the tree has
    silently fewer detections than the live sweep's."""
    import pytsk3

    target = "Program Files\\DWAgent\\dwsnet-srl.exe"
    assert any(relative(p) == target for p, *_ in expected)
    mbr, _files, _n = images["mbr"]
    part = 1024 * 1024  # partitioned() puts the volume at 1 MiB
    fs = pytsk3.FS_Info(pytsk3.Img_Info(str(mbr)), offset=part)
    entry = fs.open("/" + tree.posix(target))
    runs = [r for a in entry if int(a.info.type) == pytsk3.TSK_FS_ATTR_TYPE_NTFS_DATA
            for r in a]  # fmt: skip
    guest = part + int(runs[0].addr) * int(fs.info.block_size)
    qcow = work / "damaged.qcow2"
    shutil.copyfile(to_qcow2(mbr, work / "compressed.qcow2", compressed=True), qcow)
    _at, l2 = qcow2_cluster_entry(qcow, guest)
    assert l2 & (1 << 62)  # compressed
    bits = 62 - (16 - 8)  # 64 KiB clusters
    host = l2 & ((1 << bits) - 1)
    with open(qcow, "r+b") as f:
        f.seek(host)
        f.write(b"\x07")  # BFINAL 1, BTYPE 3: invalid, the inflate fails at once
    code, rows, err, unreadable, whole = scan_compressed(qcow, work / "state-qc-damaged")
    assert not whole, err
    exact = never_silently_fewer(rows, unreadable, whole, expected, tree, err)
    assert target not in exact and target not in {relative(r["FolderPath"]) for r in rows}
    assert any(target == u or target.startswith(u + "\\") for u in unreadable), err
    assert code == 1, err  # the others still detected


def test_the_named_stream_is_scanned(images, tree, work):
    code, rows, err = run(["image", str(images["raw"][0])], work / "state-ads")
    assert code == 1, err
    row = next(r for r in rows if r["FolderPath"] == f"C:\\{tree.ads.full}")
    assert row["FileName"] == "readme.txt:payload.exe"
    assert row["SHA256"] == hashlib.sha256(tree.ads.sample.read_bytes()).hexdigest()


def test_a_deleted_file_is_scanned_only_with_deleted(ntfs, expected, tree, work):
    """A DWSNET-signed file deleted as NTFS deletes it (tests/images/build.ntfs_deleted: its
    name left in the folder index's slack, its record freed, the sequence number incremented):
    found with --deleted, with its real bytes and `deleted_file` in Anomalies; not reported
    without; every other detection as the live sweep's."""
    target = "Program Files\\DWAgent\\dwsnet-srl.exe"
    image, _record = ntfs_deleted(ntfs, work / "deleted.img", target)
    mine = {h for h in expected if h[0] == f"C:\\{target}"}
    assert mine and "DWSNET" in "".join(h[3] for h in mine).upper()
    code, rows, err = run(["image", str(image)], work / "state-del-off")
    assert code == 1, err
    assert hits(rows) == expected - mine, err
    assert all("deleted_file" not in r["Anomalies"] for r in rows)
    code, rows, err = run(["image", str(image), "--deleted"], work / "state-del-on")
    assert code == 1, err
    assert hits(rows) == expected, err
    deleted = [r for r in rows if r["FolderPath"] == f"C:\\{target}"]
    assert deleted and all("deleted_file" in r["Anomalies"] for r in deleted)
    assert all("deleted_file" not in r["Anomalies"] for r in rows if r not in deleted)


def test_an_image_scan_never_names_the_local_machine(ntfs, work):
    """The rows name the imaged machine; the workstation's own name is never asked for (it
    can wait on a DNS server an offline forensic workstation does not reach)."""
    code = (
        "import socket, sys\n"
        "def refused(*args, **kwargs):\n"
        "    raise SystemExit(f'the local machine was named: {args}')\n"
        "socket.gethostname = socket.getaddrinfo = socket.getfqdn = refused\n"
        "from rmmscan.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", code, "image", str(ntfs), "--format", "jsonl",
            "--state-dir", str(work / "state-unnamed"), *TRUST]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, timeout=TIMEOUT)
    err = proc.stderr.decode()
    assert "the local machine was named" not in err, err
    assert proc.returncode == 1, err
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines() if line]
    assert {r["DeviceName"] for r in rows} == {"imghost-7q2.corp.example.test"}, rows
