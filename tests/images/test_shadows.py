"""`rmmscan image --shadows` on a real shadow-copy image: the NTFS volume with two Volume Shadow
Copies that Windows made and dfVFS publishes (data/NOTICE), as published (through its QCOW2)
and as derived by tests/images/shadows.py (two files' bytes made PE files, so that rows say
what was read). What the scan reads is checked against libvshadow and The Sleuth Kit read
directly (shadows.views); every image scanned is hashed before and after.
"""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest

from tests.cli.test_image_command import digest, qcow2_cluster_entry, run
from tests.images.build import ntfs_volume, partitioned, to_qcow2
from tests.images.shadows import (
    SHARED,
    SNAPSHOT_ONLY,
    SNAPSHOT_ONLY_AT,
    VSS1,
    VSS2,
    catalog_offset,
    damage_copy,
    derive,
    pristine,
    store_block_list,
    to_raw,
    unchanged,
    views,
    vss2_copy_of_record_35,
)
from tests.images.tree import make_tree

UNCHANGED = "snapshot files unchanged from the live volume (not read again)"
ROOT = "\\\\?\\image\\p0\\"  # a bare volume without Windows


def number(err: str, label: str) -> int:
    """A count of the scan's summary on stderr ("files walked: 9", "PE files: 2", ...)."""
    found = re.search(re.escape(label) + r": ([\d,]+)", err)
    return int(found.group(1).replace(",", "")) if found else 0


def scan(image, state, *options) -> tuple[int, list[dict], str]:
    before = digest([image])
    code, rows, err = run(["image", str(image), "--emit", "all", *options], state)
    assert digest([image]) == before  # read-only: not a byte changed
    return code, rows, err


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("shadows")


@pytest.fixture(scope="module")
def published(work):
    return pristine(work / "vsstest.qcow2")


@pytest.fixture(scope="module")
def derived(published, work):
    """The derived image: raw, for shadows.views and for damaging copies of it."""
    return derive(published, work / "derived.raw")


def as_qcow2(raw):
    """What is scanned: the raw image as a QCOW2 (small, so hashing it before and after each
    scan is cheap)."""
    return to_qcow2(raw, raw.with_suffix(".qcow2"))


def test_the_published_image_is_read_snapshot_by_snapshot(published, work):
    """The image as published, through its QCOW2: every file of the live volume and of both
    snapshots is read or counted unchanged, and what is counted unchanged is what libvshadow
    and The Sleuth Kit read as the live file (record, sequence, stream, size, times, content)."""
    seen = views(to_raw(published, work / "published.raw"))
    assert {name: len(files) for name, files in seen.items()} == {"live": 6, "vss1": 3, "vss2": 5}
    same = unchanged(seen)
    assert 0 < same < len(seen["vss1"]) + len(seen["vss2"])
    code, rows, err = scan(published, work / "state-published", "--shadows")
    assert code == 0 and rows == [], err  # no PE file in it
    assert number(err, UNCHANGED) == same, err
    assert number(err, "files walked") == sum(map(len, seen.values())) - same, err
    code, rows, err = scan(published, work / "state-published-live")
    assert code == 0 and number(err, "files walked") == len(seen["live"]), err
    assert UNCHANGED not in err


def test_a_file_only_a_snapshot_holds_is_found_named_by_its_snapshot(derived, work):
    """vss1 holds `syslog`, which the live volume no longer has: with --shadows it is read and
    its row names vss1 and its creation time; without, it is not there. A second scan takes it
    from the cache, under the snapshot's own scope."""
    image = as_qcow2(derived)
    code, rows, err = scan(image, work / "state-only", "--shadows")
    assert code == 0, err
    (row,) = [r for r in rows if r["FileName"] == "syslog"]
    assert row["FolderPath"] == ROOT + "syslog"
    assert row["Snapshot"] == VSS1
    assert row["SHA256"] == sha(SNAPSHOT_ONLY) and row["FileSize"] == len(SNAPSHOT_ONLY)
    assert (row["Evidence"], row["Partition"], row["ScanSource"]) == (str(image), 0, "image")
    code, again, err = scan(image, work / "state-only", "--shadows")
    walked = number(err, "files walked")
    assert code == 0 and walked and number(err, "from the cache") == walked, err
    assert sorted((r["FolderPath"], r["Snapshot"], r["SHA256"]) for r in again) == sorted(
        (r["FolderPath"], r["Snapshot"], r["SHA256"]) for r in rows
    )
    code, rows, err = scan(image, work / "state-only-live")
    assert code == 0, err
    assert [(r["FolderPath"], r["Snapshot"]) for r in rows] == [(ROOT + "syslog.gz", None)]


def test_the_shadow_copies_of_a_partition_are_read_at_its_offset(derived, work):
    """The derived volume as the first partition of an MBR disk (at 1 MiB): the same files
    read and counted as on the bare volume, named by the partition."""
    disk = as_qcow2(partitioned([derived], work / "mbr-shadows.raw", "mbr"))
    code, rows, err = scan(disk, work / "state-mbr", "--shadows")
    assert code == 0, err
    p1 = "\\\\?\\image\\p1\\"
    assert sorted((r["FolderPath"], r["Snapshot"] or "", r["Partition"]) for r in rows) == [
        (p1 + "syslog", VSS1, 1), (p1 + "syslog.gz", "", 1)
    ]  # fmt: skip
    assert number(err, UNCHANGED) == unchanged(views(derived)), err


def test_a_file_unchanged_in_a_snapshot_is_read_once(derived, work):
    """`syslog.gz` is the same file in the live volume and in vss2: it is judged once (one PE
    file besides vss1's `syslog`, one row, the live volume's); vss2's copy is counted unchanged
    with the other files the oracle finds unchanged."""
    seen = views(derived)
    assert seen["live"]["syslog.gz"] == seen["vss2"]["syslog.gz"]
    assert seen["live"]["syslog.gz"].sha256 == sha(SHARED)
    code, rows, err = scan(as_qcow2(derived), work / "state-once", "--shadows")
    assert code == 0, err
    assert number(err, "PE files") == 2, err
    assert [(r["Snapshot"], r["SHA256"]) for r in rows if r["FileName"] == "syslog.gz"] == [
        (None, sha(SHARED))
    ]
    assert number(err, UNCHANGED) == unchanged(seen), err


def test_a_file_changed_in_place_under_the_same_times_is_read(derived, work):
    """One byte of vss2's copy of `syslog.gz` changed (its record, sequence, size and times
    still the live file's, as after an edit in place and timestomping): vss2's copy is read,
    and its row names vss2."""
    at = vss2_copy_of_record_35(derived, "data", 0x200 + 10)  # in the PE's section
    changed = damage_copy(derived, work / "in-place.raw", at, b"X")
    seen = views(changed)
    live, vss2 = seen["live"]["syslog.gz"], seen["vss2"]["syslog.gz"]
    assert live.sha256 == sha(SHARED) != vss2.sha256
    assert (live.record, live.seq, live.size, live.mtime, live.ctime) == (
        vss2.record, vss2.seq, vss2.size, vss2.mtime, vss2.ctime
    )  # fmt: skip
    code, rows, err = scan(as_qcow2(changed), work / "state-in-place", "--shadows")
    assert code == 0, err
    assert sorted(
        ((r["Snapshot"] or ""), r["SHA256"]) for r in rows if r["FileName"] == "syslog.gz"
    ) == sorted([("", sha(SHARED)), (VSS2, vss2.sha256)])
    assert number(err, UNCHANGED) == unchanged(seen) == unchanged(views(derived)) - 1, err


def test_a_file_whose_times_changed_is_read(derived, work):
    """vss2's copy of `syslog.gz` with another modification time (its content still the live
    file's): not the live file unchanged, so it is read, and its row names vss2."""
    at = vss2_copy_of_record_35(derived, "mtime")
    retimed = damage_copy(derived, work / "retimed.raw", at, b"\x01")
    seen = views(retimed)
    live, vss2 = seen["live"]["syslog.gz"], seen["vss2"]["syslog.gz"]
    assert live.sha256 == vss2.sha256 == sha(SHARED) and live.mtime != vss2.mtime
    code, rows, err = scan(as_qcow2(retimed), work / "state-retimed", "--shadows")
    assert code == 0, err
    assert sorted(
        ((r["Snapshot"] or ""), r["SHA256"]) for r in rows if r["FileName"] == "syslog.gz"
    ) == sorted([("", sha(SHARED)), (VSS2, sha(SHARED))])


def test_a_snapshot_file_in_a_damaged_compressed_cluster_is_reported_never_clean(derived, work):
    """The derived image as a compressed QCOW2, the cluster holding vss1's `syslog` (read from
    the live volume's free space) damaged: that file is reported unreadable, named with its
    snapshot, and gives no row; the live volume's `syslog.gz` is still read."""
    compressed = to_qcow2(derived, work / "compressed.qcow2", compressed=True)
    damaged = work / "damaged-compressed.qcow2"
    shutil.copyfile(compressed, damaged)
    code, rows, err = scan(compressed, work / "state-compressed", "--shadows")
    assert code == 0 and ("syslog", VSS1) in {(r["FileName"], r["Snapshot"]) for r in rows}, err
    _at, l2 = qcow2_cluster_entry(damaged, SNAPSHOT_ONLY_AT)
    assert l2 & (1 << 62)  # compressed
    with open(damaged, "r+b") as f:
        f.seek(l2 & ((1 << (62 - 8)) - 1))  # 64 KiB clusters: the host offset's bits
        f.write(b"\x07")  # BFINAL 1, BTYPE 3: an invalid deflate block
    code, rows, err = scan(damaged, work / "state-damaged-compressed", "--shadows")
    assert f"{ROOT}syslog ({VSS1}): stored in compressed QCOW2 clusters" in err, err
    assert [(r["FileName"], r["Snapshot"]) for r in rows] == [("syslog.gz", None)], err


def test_a_volume_without_shadow_copies_scans_as_without_the_option(work):
    """An NTFS volume that never had shadow copies: --shadows changes no row and no count."""
    tree = make_tree(work / "tree")
    ntfs = ntfs_volume(tree, work / "plain-ntfs.img", ads=tree.ads)

    def shown(rows):
        return sorted(
            tuple(sorted((k, str(v)) for k, v in r.items() if k not in ("Timestamp", "ReportId")))
            for r in rows
        )

    code, plain, err = scan(ntfs, work / "state-plain", "--no-cache")
    assert code == 1 and plain, err
    code, shadows, err_shadows = scan(ntfs, work / "state-plain-shadows", "--no-cache", "--shadows")
    assert code == 1, err_shadows
    assert shown(shadows) == shown(plain)
    assert number(err_shadows, "files walked") == number(err, "files walked") > 0
    assert UNCHANGED not in err_shadows and "VSS" not in err_shadows


def test_a_damaged_catalog_is_named_and_the_live_volume_still_scanned(derived, work):
    """The catalog's first block header overwritten: the error names the image, the volume and
    the layer; the live volume's files are still scanned; the exit status says incomplete."""
    raw = damage_copy(derived, work / "no-catalog.raw", catalog_offset(derived), b"\xff" * 128)
    broken = as_qcow2(raw)
    code, rows, err = scan(broken, work / "state-no-catalog", "--shadows")
    assert code == 2, err
    assert str(broken) in err and "the bare volume" in err and "(layer: VSS catalog)" in err
    assert [(r["FolderPath"], r["Snapshot"], r["SHA256"]) for r in rows] == [
        (ROOT + "syslog.gz", None, sha(SHARED))
    ]


def test_a_damaged_store_is_named_by_its_snapshot_and_the_other_still_scanned(derived, work):
    """vss1's block list header overwritten: vss1 is named with the layer, vss2 and the live
    volume are still scanned."""
    block_list = store_block_list(derived, 1)
    broken = as_qcow2(damage_copy(derived, work / "no-store.raw", block_list, b"\xff" * 128))
    code, rows, err = scan(broken, work / "state-no-store", "--shadows")
    assert code == 2, err
    assert VSS1 in err and "(layer: VSS store)" in err and str(broken) in err, err
    assert VSS2 not in err
    assert [(r["FolderPath"], r["Snapshot"]) for r in rows] == [(ROOT + "syslog.gz", None)]
    assert number(err, UNCHANGED) > 0  # vss2 read, its unchanged files counted


def test_what_no_store_keeps_a_copy_of_reads_as_the_live_volume(published, work):
    """The ground of the unchanged rule, on the whole volume: wherever a snapshot's bytes are
    not the live volume's, the block is one the snapshot's store, or a later store, keeps a copy
    of; or, in the newest snapshot only, libvshadow gives zeros there (blocks its store marks
    as not worth copying: free space and the stores' own files)."""
    from rmmscan.sources.image.container import open_container
    from rmmscan.sources.image.snapshots import VSS_BLOCK, open_shadows
    from rmmscan.sources.image.volumes import TskImage, volumes

    raw = to_raw(published, work / "whole.raw")
    container = open_container(str(published))
    try:
        (volume,) = volumes(TskImage(container))[1]
        shadows = open_shadows(container, volume)
        snaps = list(shadows)
        chunk, zeros = 1024 * 1024, bytes(VSS_BLOCK)
        with open(raw, "rb") as live:
            for snap in snaps:
                copied = set().union(*shadows.unchanged(snap).kept)
                newest = snap is snaps[-1]
                differ = 0
                for offset in range(0, snap.container.size, chunk):
                    mine = snap.container.read(offset, chunk)
                    live.seek(offset)
                    theirs = live.read(chunk)
                    for at in range(0, len(mine), VSS_BLOCK):
                        block = mine[at : at + VSS_BLOCK]
                        if block == theirs[at : at + VSS_BLOCK]:
                            continue
                        differ += 1
                        if (offset + at) // VSS_BLOCK not in copied:
                            assert newest and block == zeros, (snap.label, offset + at)
                assert differ, snap.label  # each snapshot is another state of the volume
        shadows.close()
    finally:
        container.close()


def test_a_file_in_a_block_a_store_keeps_is_read(published):
    """The unchanged rule on a real file, vss1's shadow-copy catalog (non-resident, 16 clusters,
    the live file's record, times and clusters): unchanged as the stores are; read as soon as
    one block it lies in is one a store keeps a copy of, and only then."""
    from rmmscan.sources.image.container import open_container
    from rmmscan.sources.image.filesystem import FileSystemWalk
    from rmmscan.sources.image.snapshots import VSS_BLOCK, Unchanged, open_shadows
    from rmmscan.sources.image.volumes import TskImage, volumes

    class Tally:
        def count(self, _kind, _n=1):
            pass

        def problem(self, path, _kind, message):
            raise AssertionError(f"{path}: {message}")

    container = open_container(str(published))
    try:
        (volume,) = volumes(TskImage(container))[1]
        shadows = open_shadows(container, volume)
        vss1 = next(iter(shadows))
        files = [f for _folder, found in FileSystemWalk(vss1.volume, "", Tally()).folders()
                 for f in found]  # fmt: skip
        (catalog,) = [f for f in files if f.name == "{3808876b-c176-4e48-b7ae-04046e6cc752}"]
        ((first, count),) = [
            (int(r.addr), int(r.len)) for a in catalog.entry if int(a.info.id) == catalog.attr_id
            for r in a
        ]  # fmt: skip
        cluster = int(volume.fs.info.block_size)
        low, high = first * cluster // VSS_BLOCK, ((first + count) * cluster - 1) // VSS_BLOCK
        assert shadows.unchanged(vss1)(catalog)
        for block, same in ((low - 1, True), (low, False), (high, False), (high + 1, True)):
            assert Unchanged(volume.fs, [[], [block]])(catalog) is same, block
        shadows.close()
    finally:
        container.close()
