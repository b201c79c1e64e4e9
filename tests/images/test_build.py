"""Each builder makes what it says, checked with tools that share no code with it: sleuthkit
(fsstat, fls, icat, mmls), ewf-tools (ewfinfo, ewfverify), qemu-img (info, compare) and regipy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest
from regipy.registry import RegistryHive

from tests.images import build
from tests.images.tree import LONG_FILE, PE_DIR, Tree, make_tree

MIB = 1024 * 1024


def tool(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, timeout=60, check=check,
        env=build.ENV,
    )


def out(*args: object) -> str:
    return tool(*args).stdout.decode("utf-8")


def listed_files(image: Path, offset: int = 0) -> set[str]:
    """The regular files (and named streams) fls finds, as paths from the volume's root, less
    the file system's own metadata files."""
    files = set()
    for line in out("fls", "-r", "-p", "-o", offset, image).splitlines():
        kind, _, rest = line.partition(" ")
        name = rest.split(":\t", 1)[-1]
        if not kind.startswith("r/") or "(Volume Label Entry)" in name:
            continue
        if name.startswith("$") or "OrphanFile" in name:
            continue
        files.add(name)
    return files


def inode(image: Path, path: str, offset: int = 0) -> str:
    for line in out("fls", "-r", "-p", "-o", offset, image).splitlines():
        meta, _, name = line.partition(":\t")
        if name == path:
            return meta.split()[-1]
    raise AssertionError(f"{path} not in {image}")


def icat(image: Path, path: str, offset: int = 0) -> bytes:
    return tool("icat", "-o", offset, image, inode(image, path, offset)).stdout


@pytest.fixture(scope="session")
def tree(tmp_path_factory) -> Tree:
    return make_tree(tmp_path_factory.mktemp("tree") / "root")


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def ntfs(tree, work) -> Path:
    return build.ntfs_volume(tree, work / "ntfs.img", ads=tree.ads)


@pytest.fixture(scope="session")
def fat32(tree, work) -> Path:
    return build.fat_volume(tree, work / "fat32.img", 32)


@pytest.fixture(scope="session")
def mbr(ntfs, fat32, work) -> Path:
    return build.partitioned([ntfs, fat32], work / "mbr.img", "mbr")


def expected(tree: Tree) -> set[str]:
    return {Tree.posix(rel) for rel in tree.files}


def test_tree(tree):
    assert len(LONG_FILE) > 260
    assert all(len(p) <= 255 for p in LONG_FILE.split("\\"))
    on_disk = {
        str(p.relative_to(tree.root)) for p in tree.root.rglob("*") if p.is_file()
    }
    assert on_disk == expected(tree)
    for rel, sample in tree.pe_files.items():
        assert tree.host(rel).read_bytes() == sample.read_bytes()
        assert tree.host(rel).read_bytes()[:2] == b"MZ"
    blob = tree.host("ProgramData\\Cache\\blob.bin").read_bytes()
    assert blob == (PE_DIR / "not-a-pe.bin").read_bytes()  # the sample that is not a PE file
    assert any(ord(c) > 0x3000 for rel in tree.files for c in rel)  # a CJK name
    assert tree.ads.full == "Users\\Public\\readme.txt:payload.exe"
    assert tree.host(tree.ads.path).is_file()
    assert tree.ads.sample.read_bytes()[:2] == b"MZ"
    manifest = json.loads((PE_DIR.parent / "manifest.json").read_text("utf-8"))["files"]
    signers = [sig["Signer"] for sig in manifest[tree.ads.sample.name]["signatures"]]
    assert signers == ["DWSNET OÜ"]


@pytest.mark.parametrize("current", [1, 2])
def test_tree_hives(tmp_path, current):
    tree = make_tree(tmp_path / "t", hostname="Host-A", current=current)
    system = RegistryHive(str(tree.host(tree.system_hive)))
    cs = system.get_key("\\Select").get_value("Current")
    key = system.get_key(f"\\ControlSet{cs:03d}\\Services\\Tcpip\\Parameters")
    assert key.get_value("Hostname") == "Host-A" == tree.hostname
    assert key.get_value("Domain") == tree.domain
    decoy = system.get_key(f"\\ControlSet{3 - cs:03d}\\Services\\Tcpip\\Parameters")
    assert decoy.get_value("Hostname") == tree.decoy_hostname != tree.hostname
    software = RegistryHive(str(tree.host(tree.software_hive)))
    guid = software.get_key("\\Microsoft\\Cryptography").get_value("MachineGuid")
    assert guid == tree.machine_guid


def test_ntfs_volume(tree, ntfs):
    assert "File System Type: NTFS" in out("fsstat", ntfs)
    files = listed_files(ntfs)
    assert files == expected(tree) | {"Users/Public/readme.txt:payload.exe"}
    assert icat(ntfs, "Users/Public/readme.txt:payload.exe") == tree.ads.sample.read_bytes()
    assert icat(ntfs, "Users/Public/readme.txt") == tree.host(tree.ads.path).read_bytes()
    for rel, sample in tree.pe_files.items():
        assert icat(ntfs, Tree.posix(rel)) == sample.read_bytes(), rel
    hive = icat(ntfs, Tree.posix(tree.system_hive))
    (ntfs.parent / "SYSTEM.from-ntfs").write_bytes(hive)
    system = RegistryHive(str(ntfs.parent / "SYSTEM.from-ntfs"))
    cs = system.get_key("\\Select").get_value("Current")
    params = system.get_key(f"\\ControlSet{cs:03d}\\Services\\Tcpip\\Parameters")
    assert params.get_value("Hostname") == tree.hostname


@pytest.mark.parametrize("fat", [12, 16, 32])
def test_fat_volume(tree, work, fat):
    img = build.fat_volume(tree, work / f"fat{fat}.img", fat)
    assert f"File System Type: FAT{fat}" in out("fsstat", img)
    assert img.stat().st_size == build.FAT_SIZES_MIB[fat] * MIB
    assert listed_files(img) == expected(tree)
    for rel, sample in tree.pe_files.items():
        assert icat(img, Tree.posix(rel)) == sample.read_bytes(), rel


def test_exfat_volume_is_not_faked(tree, work):
    with pytest.raises(NotImplementedError, match="without mounting"):
        build.exfat_volume(tree, work / "exfat.img")


def partitions(image: Path) -> list[tuple[int, int, str]]:
    """(start, length, description) of each partition mmls lists (not meta or unallocated)."""
    rows = []
    for line in out("mmls", image).splitlines():
        cols = line.split(None, 5)
        if len(cols) >= 5 and cols[0].endswith(":") and cols[1][:1].isdigit():
            rows.append((int(cols[2]), int(cols[4]), cols[5] if len(cols) > 5 else ""))
    return rows


def test_mbr(tree, mbr, ntfs, fat32):
    parts = partitions(mbr)
    assert [(s, n) for s, n, _ in parts] == [(2048, 32768), (2048 + 32768, 81920)]
    assert "0x07" in parts[0][2] and "0x0c" in parts[1][2]
    assert "DOS Partition Table" in out("mmls", mbr)
    for (start, _, _), vol in zip(parts, (ntfs, fat32), strict=True):
        with open(mbr, "rb") as f:
            f.seek(start * 512)
            assert f.read(vol.stat().st_size) == vol.read_bytes()
    files = expected(tree)
    assert listed_files(mbr, 2048) == files | {"Users/Public/readme.txt:payload.exe"}
    assert listed_files(mbr, 2048 + 32768) == files


def test_gpt(tree, ntfs, work):
    fat16 = build.fat_volume(tree, work / "fat16.img", 16)
    fat12 = build.fat_volume(tree, work / "fat12.img", 12)
    gpt = build.partitioned([ntfs, fat16, fat12], work / "gpt.img", "gpt")
    assert "GUID Partition Table" in out("mmls", gpt)
    assert [(s, n) for s, n, _ in partitions(gpt)] == [(2048, 32768), (34816, 32768),
                                                        (67584, 8192)]
    dump = json.loads(out("sfdisk", "--json", gpt))["partitiontable"]
    assert dump["label"] == "gpt"
    assert {p["type"] for p in dump["partitions"]} == {build.GPT_BASIC_DATA}
    assert listed_files(gpt, 34816) == expected(tree)
    assert "FAT12" in out("fsstat", "-o", 67584, gpt)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_e01(mbr, work):
    e01 = build.to_e01(mbr, work / "e01" / "disk")
    assert e01.name == "disk.E01" and build.e01_segments(e01) == [e01]
    info = out("ewfinfo", e01)
    assert "EnCase 6" in info
    assert f"Media size:\t\t{mbr.stat().st_size // (1024 * 1024)}" in info.replace(" MiB", "")
    assert md5(mbr) in info
    assert tool("ewfverify", "-q", e01).returncode == 0
    assert e01.stat().st_size < mbr.stat().st_size // 4  # compressed


def test_e01_split(mbr, work):
    e01 = build.to_e01(mbr, work / "split" / "disk", segment_bytes=8 * MIB)
    segments = build.e01_segments(e01)
    assert [s.suffix for s in segments] == [f".E{i:02d}" for i in range(1, len(segments) + 1)]
    assert len(segments) >= mbr.stat().st_size // (8 * MIB)
    assert md5(mbr) in out("ewfinfo", e01)
    assert tool("ewfverify", "-q", e01).returncode == 0
    # A missing segment is noticed: the segments are really parts of one image.
    segments[-1].rename(segments[-1].with_suffix(".gone"))
    try:
        assert tool("ewfverify", "-q", e01, check=False).returncode != 0
    finally:
        segments[-1].with_suffix(".gone").rename(segments[-1])


def qemu_info(image: Path, fmt: str | None = None) -> dict:
    """qemu-img's view; ``fmt`` where it cannot be probed (qemu-img takes a fixed VHD, whose
    only header is a footer, for raw)."""
    return json.loads(out("qemu-img", "info", "--output=json", *(["-f", fmt] if fmt else []),
                          image))


def same_data(raw: Path, image: Path, fmt: str) -> bool:
    return tool("qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, raw, image,
                check=False).returncode == 0


@pytest.mark.parametrize(
    ("subformat", "split", "extent"),
    [(None, True, "-s001.vmdk"), (None, False, None), ("monolithicFlat", True, "-flat.vmdk")],
)
def test_vmdk(mbr, work, subformat, split, extent):
    name = f"{subformat or ('split' if split else 'mono')}"
    vmdk = build.to_vmdk(mbr, work / name / "disk.vmdk", split, subformat=subformat)
    info = qemu_info(vmdk)
    assert info["format"] == "vmdk" and info["virtual-size"] == mbr.stat().st_size
    create_type = info["format-specific"]["data"]["create-type"]
    assert create_type == subformat or (
        create_type == ("twoGbMaxExtentSparse" if split else "monolithicSparse")
    )
    files = build.vmdk_files(vmdk)
    if extent:
        assert files == [vmdk, vmdk.with_name("disk" + extent)]
        assert vmdk.stat().st_size < 4096 and b"# Disk DescriptorFile" in vmdk.read_bytes()
    else:
        assert files == [vmdk] and vmdk.read_bytes()[:4] == b"KDMV"
    assert same_data(mbr, vmdk, "vmdk")


@pytest.mark.parametrize("dynamic", [False, True])
def test_vhd(mbr, work, dynamic):
    vhd = build.to_vhd(mbr, work / f"disk-{dynamic}.vhd", dynamic)
    info = qemu_info(vhd, "vpc" if not dynamic else None)
    assert info["format"] == "vpc" and info["virtual-size"] == mbr.stat().st_size
    data = vhd.read_bytes()
    assert data[-512:][:8] == b"conectix"
    disk_type = int.from_bytes(data[-512:][0x3C:0x40], "big")
    assert disk_type == (3 if dynamic else 2)
    if not dynamic:
        assert len(data) == mbr.stat().st_size + 512 and data[:-512] == mbr.read_bytes()
    assert same_data(mbr, vhd, "vpc")


@pytest.mark.parametrize("dynamic", [False, True])
def test_vhdx(mbr, work, dynamic):
    vhdx = build.to_vhdx(mbr, work / f"disk-{dynamic}.vhdx", dynamic)
    info = qemu_info(vhdx)
    assert info["format"] == "vhdx" and info["virtual-size"] == mbr.stat().st_size
    assert vhdx.read_bytes()[:8] == b"vhdxfile"
    assert same_data(mbr, vhdx, "vhdx")


@pytest.mark.parametrize("compressed", [False, True])
def test_qcow2(mbr, work, compressed):
    qcow = build.to_qcow2(mbr, work / f"disk-{compressed}.qcow2", compressed)
    info = qemu_info(qcow)
    assert info["format"] == "qcow2" and info["virtual-size"] == mbr.stat().st_size
    assert same_data(mbr, qcow, "qcow2")
    plain = build.to_qcow2(mbr, work / "disk-False.qcow2", False)
    if compressed:
        assert qcow.stat().st_size < plain.stat().st_size // 2


def test_builds_are_cached(tree, ntfs, work):
    mtime = ntfs.stat().st_mtime_ns
    t0 = time.monotonic()
    again = build.ntfs_volume(tree, work / "elsewhere.img", ads=tree.ads)
    assert again == ntfs and ntfs.stat().st_mtime_ns == mtime
    assert time.monotonic() - t0 < 0.5
    assert not (work / "elsewhere.img").exists()
    # Other inputs make another image.
    other = build.ntfs_volume(tree, work / "no-ads.img")
    assert other != ntfs
    assert "Users/Public/readme.txt:payload.exe" not in listed_files(other)


def test_a_failing_tool_raises_with_its_stderr(tmp_path, tree):
    big = tmp_path / "big"
    big.mkdir()
    (big / "big.bin").write_bytes(b"\xa5" * (2 * MIB))
    with pytest.raises(build.BuildError, match="mcopy"):
        build.fat_volume(big, tmp_path / "small.img", 12, size_mib=1)
    with pytest.raises(build.BuildError, match="not a volume"):
        build.partitioned([big / "big.bin"], tmp_path / "disk.img")
    with pytest.raises(build.BuildError, match=r"ntfscp .*exited"):
        missing = tree.ads.__class__("No\\Such\\host.txt", "s", tree.ads.sample)
        build.ntfs_volume(tree, tmp_path / "bad.img", ads=missing)
