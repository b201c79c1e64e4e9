"""`rmmscan image` on ext2/3/4 and exFAT volumes built offline, compared with a live `rmmscan
scan` of the same tree: every PE row (``--emit all``: detections, other signed and unsigned PE
files) the same per file, paths compared below the volume's root (``C:\\`` for the volume
holding the hives, ``\\\\?\\image\\pN\\`` for another), FolderPathBytes included.

The trees are the image test tree (tests/images/tree.py) plus files that exercise each file
system: for both, a crowded folder (several clusters of entries), an empty file, a name
outside the BMP, and PE files at the root bearing the names The Sleuth Kit gives exFAT's
bitmap and up-case table entries; for ext, besides, symbolic links (to a file, to a folder,
one too long to live in its inode), a FIFO, a hard link and names that are not UTF-8.
ext volumes come from ``mke2fs -d`` (build.ext_volume), exFAT volumes from
tests/images/exfat.py, each checked by fsck.exfat -n and The Sleuth Kit before use.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.images import exfat
from tests.images.build import ext_volume, ntfs_volume, partitioned, run
from tests.images.tree import PE_DIR, make_tree

from conftest import TEST_ROOT

RMMSCAN = [sys.executable, "-m", "rmmscan"]
TRUST = ["--trusted-roots", str(TEST_ROOT)]
CROWDED = "ProgramData\\Crowded"
# Files ext and exFAT both hold beside the image test tree: Windows path -> bytes.
EXTRA_FILES = {
    "$UPCASE_TABLE": (PE_DIR / "dwsnet-srl.exe").read_bytes(),
    "$ALLOC_BITMAP": (PE_DIR / "dwsnet-ou.exe").read_bytes(),
    "ProgramData\\Cache\\empty.dat": b"",
    "Users\\Public\\\U0001f4e6 tool.exe": (PE_DIR / "dwsnet-ou-sha1.exe").read_bytes(),
    **{
        f"{CROWDED}\\entry {i:02} with a name long enough for three name entries.txt":
        f"filler {i}\n".encode() * (i + 1)
        for i in range(48)
    },
    f"{CROWDED}\\zz the last entry, a signed PE file.exe":
        (PE_DIR / "dwagent-lookalike-srl.exe").read_bytes(),
    "Windows\\System32\\nested-sha256-sha1.exe": (PE_DIR / "nested-sha256-sha1.exe").read_bytes(),
}
# What only ext holds: raw POSIX names (bytes) below the root, two of them the same name once
# their undecodable bytes are replaced (U+FFFD), each a copy of a sample.
NOT_UTF8_DIR = b"Users/\xe9t\xe9 latin-1"
NOT_UTF8_FILES = {
    NOT_UTF8_DIR + b"/rapport \xff.exe": "dwsnet-srl.exe",
    NOT_UTF8_DIR + b"/rapport \xfe.exe": "dwagent-lookalike-srl.exe",
}
TINY_MZ = b"Users/Public/tiny-mz.bin"  # "MZ" and 98 more bytes: inline with inline_data
# Files ext's layout test writes into scattered blocks (the second takes fourteen 1 KiB blocks,
# past the twelve an ext2/3 inode names directly).
SCATTER = ("Program Files\\DWAgent\\dwsnet-srl.exe",
           "Windows\\System32\\nested-sha256-sha1.exe")  # fmt: skip


def scan(args: list[str], state: Path) -> tuple[int, list[dict], str]:
    proc = subprocess.run(
        [*RMMSCAN, *args, "--emit", "all", "--format", "jsonl", "--state-dir", str(state), *TRUST],
        capture_output=True,
        timeout=180,
    )
    rows = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines() if line]
    return proc.returncode, rows, proc.stderr.decode("utf-8", "replace")


def summary(err: str) -> dict[str, int]:
    """The summary's counts: 'files walked', 'PE files', ... and each reason of its 'not read:'
    and 'skipped:' lines."""
    counts: dict[str, int] = {}
    for line in err.splitlines():
        if line.startswith("files walked:"):
            parts = line.split("   ")
        elif line.startswith(("not read: ", "skipped: ")):
            parts = line.split(": ", 1)[1].split(", ")
        else:
            continue
        for part in parts:
            name, _, value = part.rpartition(": ")
            counts[name.strip()] = int(value.replace(",", ""))
    return counts


def below(row: dict, root: str, raw_root: bytes, sep: str) -> tuple:
    """A row as (path below the volume's root, those bytes when not UTF-8, RuleId, SHA256,
    Signer), with backslashes for separators."""
    path = row["FolderPath"]
    assert path.startswith(root), path
    rel = path[len(root) :].replace(sep, "\\")
    raw = None
    if row["FolderPathBytes"] is not None:
        whole = base64.b64decode(row["FolderPathBytes"])
        assert whole.startswith(raw_root), whole
        raw = whole[len(raw_root) :].replace(sep.encode(), b"\\")
    return rel, raw, row["RuleId"], row["SHA256"], row["Signer"]


def image_rows(rows: list[dict], partition: int, windows: bool) -> set[tuple]:
    root = "C:\\" if windows else f"\\\\?\\image\\p{partition}\\"
    mine = [r for r in rows if r["Partition"] == partition]
    return {below(r, root, root.encode(), "\\") for r in mine}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("morefs")


@pytest.fixture(scope="module")
def exfat_tree(work) -> Path:
    tree = make_tree(work / "exfat-tree")
    for rel, data in EXTRA_FILES.items():
        path = tree.host(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return tree.root


@pytest.fixture(scope="module")
def ext_tree(work, exfat_tree) -> Path:
    root = work / "ext-tree"
    shutil.copytree(exfat_tree, root)
    broot = os.fsencode(root)
    os.makedirs(broot + b"/" + NOT_UTF8_DIR)
    for name, sample in NOT_UTF8_FILES.items():
        shutil.copyfile(PE_DIR / sample, broot + b"/" + name)
    (root / os.fsdecode(TINY_MZ)).write_bytes(b"MZ" + bytes(range(98)))
    os.symlink("dwagent.exe", root / "Program Files/DWAgent/link to dwagent.exe")
    os.symlink("../../Program Files/DWAgent", root / "Users/Public/DWAgent folder link")
    os.symlink("/" + "x" * 200 + "/dwagent.exe", root / "Users/Public/long link")
    os.mkfifo(root / "Users/Public/a fifo")
    os.link(root / "Program Files/DWAgent/dwsnet-srl.exe", root / "Users/Public/hard link.exe")
    return root


def live(root: Path, state: Path) -> tuple[set[tuple], dict[str, int]]:
    code, rows, err = scan(["scan", str(root), "--no-cache"], state)
    assert code == 1, err
    prefix = str(root) + "/"
    return {below(r, prefix, os.fsencode(prefix), "/") for r in rows}, summary(err)


@pytest.fixture(scope="module")
def exfat_live(exfat_tree, work):
    return live(exfat_tree, work / "live-exfat")


@pytest.fixture(scope="module")
def ext_live(ext_tree, work):
    rows, counts = live(ext_tree, work / "live-ext")
    # The tree's own oddities, seen by the sweep: the links, the FIFO, the names.
    assert counts["symlinks not followed"] == 3 and counts["special"] == 1, counts
    names = {raw for _rel, raw, *_ in rows if raw is not None}
    assert names == {name.replace(b"/", b"\\") for name in NOT_UTF8_FILES}, names
    assert any(rel == "Users\\Public\\hard link.exe" and rule for rel, _, rule, *_ in rows)
    return rows, counts


def layout(volume: Path, scheme: str, work: Path) -> tuple[Path, int]:
    """(the image to scan, the volume's partition) for a bare volume or one in a table."""
    if scheme == "bare":
        return volume, 0
    return partitioned([volume], work / f"{volume.stem}-{scheme}.img", scheme), 1


def same_as_the_sweep(image: Path, partition: int, want, state: Path, extra: int = 0):
    """Scans ``image``: the rows of ``partition`` are the sweep's, the summary's counts are the
    sweep's (``extra`` more files walked; the image's own "file system metadata skipped" aside),
    nothing is reported, the image is unchanged."""
    rows_want, counts_want = want
    before = digest(image)
    code, rows, err = scan(["image", str(image)], state)
    assert code == 1, err
    assert image_rows(rows, partition, windows=True) == rows_want, err
    assert {r["Partition"] for r in rows} == {partition}
    assert {r["DeviceName"] for r in rows} == {"imghost-7q2.corp.example.test"}
    assert {r["Evidence"] for r in rows} == {str(image)}
    counts = summary(err)
    assert counts["files walked"] == counts_want["files walked"] + extra, err
    for name, count in counts_want.items():  # PE files, symlinks not followed, special, ...
        if name != "files walked":
            assert counts.get(name) == count, (name, err)
    assert "rmmscan: " not in err, err  # no problem reported
    assert digest(image) == before


# -- ext2/3/4 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "scheme"),
    [("ext4", "bare"), ("ext4", "mbr"), ("ext4", "gpt"), ("ext3", "bare"), ("ext2", "bare")],
)
def test_ext_gives_the_sweeps_rows(kind, scheme, ext_tree, ext_live, work):
    """mke2fs -d copies the tree: links and the FIFO are counted as the sweep counts them,
    never followed; the hard link is a file in both folders; a name that is not UTF-8 keeps
    its bytes in FolderPathBytes."""
    volume = ext_volume(ext_tree, work / f"{kind}.img", kind)
    image, partition = layout(volume, scheme, work)
    same_as_the_sweep(image, partition, ext_live, work / f"state-{kind}-{scheme}")


@pytest.mark.parametrize(
    ("kind", "features"), [("ext4", ("inline_data",)), ("ext3", ()), ("ext2", ())]
)
def test_ext_block_layouts_give_the_sweeps_rows(kind, features, ext_tree, ext_live, work):
    """1 KiB blocks, two PE files written into blocks of which no two touch (ext4: extent trees
    of depth 1; ext2/3: an indirect block), and on ext4 small files kept in their inodes
    (inline_data): each layout read as the sweep reads the files. debugfs says each layout is
    there."""
    volume = ext_volume(ext_tree, work / f"{kind}-1k.img", kind, block=1024,
                        features=features, scatter=SCATTER)  # fmt: skip
    for rel in SCATTER:
        path = "/" + rel.replace("\\", "/")
        if kind == "ext4":
            extents = run("debugfs", "-R", f'ex "{path}"', volume).splitlines()
            assert extents[1].split()[0] == "0/" and extents[1].split()[1] == "1", extents
            assert len(extents) - 2 >= 9, extents  # one index entry, nine or more extents
        else:
            blocks = run("debugfs", "-R", f'blocks "{path}"', volume).split()
            assert len(blocks) >= 9 and all(
                int(b) - int(a) > 1 for a, b in itertools.pairwise(blocks)
            ), blocks
    if kind == "ext4":
        stat = run("debugfs", "-R", f'stat "/{os.fsdecode(TINY_MZ)}"', volume)
        assert "Size of inline data: 100" in stat, stat
    else:
        stat = run("debugfs", "-R", f'stat "/{SCATTER[1].replace(chr(92), "/")}"', volume)
        assert "(IND)" in stat, stat
    same_as_the_sweep(volume, 0, ext_live, work / f"state-{kind}-1k")


# -- exFAT --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster", "scheme"), [(4096, "bare"), (4096, "mbr"), (4096, "gpt"), (512, "bare")]
)
def test_exfat_gives_the_sweeps_rows(cluster, scheme, exfat_tree, exfat_live, work):
    """The label, bitmap and up-case table entries, which The Sleuth Kit lists as files of the
    root, are walked as files (three more than the sweep's): files bearing their names, PE
    files here, are found all the same."""
    volume = exfat.exfat_volume(exfat_tree, work / f"exfat-{cluster}.img", cluster=cluster)
    seen = exfat.layouts(volume)
    assert all(seen[k] for k in ("nofatchain", "chain", "scattered", "empty")), seen
    assert seen["folders over clusters"]
    assert cluster == 4096 or (seen["sets over clusters"] and seen["root clusters"] > 1), seen
    image, partition = layout(volume, scheme, work)
    same_as_the_sweep(image, partition, exfat_live, work / f"state-exfat-{cluster}-{scheme}",
                      extra=3)  # fmt: skip


def test_three_file_systems_in_one_gpt_are_named_by_partition(
    exfat_tree, ext_tree, exfat_live, ext_live, work
):
    """NTFS, ext4 and exFAT in one GPT: the first volume holding the hives (NTFS) is C:\\, the
    others \\\\?\\image\\p2\\ and \\\\?\\image\\p3\\; each gives its own tree's rows."""
    volumes = [
        ntfs_volume(exfat_tree, work / "ntfs.img"),
        ext_volume(ext_tree, work / "ext4.img", "ext4"),
        exfat.exfat_volume(exfat_tree, work / "exfat-4096.img"),
    ]
    disk = partitioned(volumes, work / "three.img", "gpt")
    code, rows, err = scan(["image", str(disk)], work / "state-three")
    assert code == 1, err
    assert {r["Partition"] for r in rows} == {1, 2, 3}
    assert image_rows(rows, 1, windows=True) == exfat_live[0]
    assert image_rows(rows, 2, windows=False) == ext_live[0]
    assert image_rows(rows, 3, windows=False) == exfat_live[0]
    assert "rmmscan: " not in err, err


# -- damaged volumes ----------------------------------------------------------------------------


def only_that_file_is_missing(image: Path, rel: str, want, state: Path) -> None:
    """The file ``rel`` is reported unreadable and has no row (never judged, so never passed as
    clean); every other file gives the sweep's rows."""
    rows_want, _counts = want
    mine = {r for r in rows_want if r[0] == rel}
    assert mine and any(r[2] for r in mine)  # a detection, in the sweep
    code, rows, err = scan(["image", str(image)], state)
    assert code == 1, err
    assert image_rows(rows, 0, windows=True) == rows_want - mine, err
    assert f"rmmscan: C:\\{rel}: " in err, err
    assert summary(err)["unreadable"] == 1, err


@pytest.mark.parametrize("damage", ["loop", "past the heap"])
def test_a_damaged_exfat_chain_is_reported_never_judged(damage, exfat_tree, exfat_live, work):
    """A detected PE file's FAT chain loops back to its first cluster, or leaves the cluster
    heap: The Sleuth Kit cannot give its bytes; that file is reported, the others are not
    touched."""
    volume = exfat.exfat_volume(exfat_tree, work / "exfat-512.img", cluster=512)
    detected = {rel.replace("\\", "/") for rel, _, rule, *_ in exfat_live[0] if rule}
    v = exfat.Volume(volume, "rb")
    try:
        target = next(s for s in exfat.streams(v) if not s.folder and not s.nofatchain
                      and len(s.clusters) > 2 and s.path[1:] in detected)  # fmt: skip
        last = v.count + 2
    finally:
        v.close()
    damaged = work / f"exfat-{damage.replace(' ', '-')}.img"
    shutil.copyfile(volume, damaged)
    links = {1: target.clusters[0]} if damage == "loop" else {0: last + 100}
    exfat.relink(damaged, target.path, links)
    rel = target.path[1:].replace("/", "\\")
    only_that_file_is_missing(damaged, rel, exfat_live, work / f"state-exfat-{damage}")


def test_an_ext4_extent_past_the_volume_is_reported_never_judged(ext_tree, ext_live, work):
    """A detected PE file's only extent starts past the end of the volume (its inode edited by
    debugfs): that file is reported, the others are not touched."""
    rel = "Program Files\\DWAgent\\dwagent.exe"
    path = "/" + rel.replace("\\", "/")
    damaged = work / "ext4-extent-past.img"
    shutil.copyfile(ext_volume(ext_tree, work / "ext4.img", "ext4"), damaged)
    # i_block[3..5] is the first extent: logical block, length, start (low 32 bits).
    run("debugfs", "-w", "-R", f'sif "{path}" block[5] 0x0fffffff', damaged)
    extents = run("debugfs", "-R", f'ex "{path}"', damaged).splitlines()
    assert len(extents) == 2 and "268435455" in extents[1], extents
    only_that_file_is_missing(damaged, rel, ext_live, work / "state-ext4-extent-past")
