"""The Windows-like tree the image tests put into every image, built from the signed samples.

``make_tree(root)`` writes it under ``root`` on the local file system (so a live sweep of
``root`` is the oracle for a scan of any image made from it) and returns a ``Tree`` that says
what it holds. Paths in a ``Tree`` are Windows paths relative to the volume's root, separated by
backslashes (``Windows\\System32\\benign.exe``); ``Tree.host(rel)`` is the file under ``root``.

The named data stream (``Users\\Public\\readme.txt:payload.exe``) cannot live on a Linux tree:
``Tree.ads`` records it and ``build.ntfs_volume`` writes it into NTFS images with ``ntfscp -N``,
so an NTFS image holds one file more than a sweep of ``root`` finds (FAT images hold none).
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from tests.images.hive import decoy_name, write_software_hive, write_system_hive

ROOT = Path(__file__).resolve().parent.parent.parent
PE_DIR = ROOT / "samples" / "pe"

HOSTNAME = "ImgHost-7Q2"
DOMAIN = "corp.example.test"
MACHINE_GUID = "6f1c2d3e-4a5b-4c6d-8e7f-90a1b2c3d4e5"

# The long path: > 260 characters in all, each component <= 255 (and <= 255 UTF-16 units).
LONG_DIR = (
    "Users\\Public\\Documents\\"
    + "Deeply Nested Folder " + "a" * 100 + "\\"
    + "Second Level " + "b" * 90
)
LONG_FILE = LONG_DIR + "\\" + "long-path-dwsnet-srl " + "c" * 40 + ".exe"

# Windows path (relative to the volume) -> the sample it is a copy of.
PE_FILES: dict[str, str] = {
    "Windows\\System32\\benign.exe": "benign.exe",
    "Windows\\System32\\unsigned.exe": "unsigned.exe",
    "Windows\\System32\\dll32.dll": "dll32.dll",
    "Windows\\System32\\bad-signature.exe": "bad-signature.exe",
    "Windows\\System32\\nested-sha1-sha256.exe": "nested-sha1-sha256.exe",
    "Program Files\\DWAgent\\dwagent.exe": "dwsnet-ou.exe",
    "Program Files\\DWAgent\\dwsnet-srl.exe": "dwsnet-srl.exe",
    "Program Files\\DWAgent\\dwsnet-ou-sha1.exe": "dwsnet-ou-sha1.exe",
    "Program Files\\DWAgent\\runtime\\dwagent-lookalike-selfsigned.exe":
        "dwagent-lookalike-selfsigned.exe",
    "Program Files\\DWAgent\\runtime\\dwagent-lookalike-srl.exe": "dwagent-lookalike-srl.exe",
    "Program Files\\DWAgent\\runtime\\dwagent-lookalike-unsigned.exe":
        "dwagent-lookalike-unsigned.exe",
    "Users\\Jürgen\\Desktop\\отчёт.exe": "dwsnet-ou.exe",
    "Users\\Jürgen\\Downloads\\報告書 2026.exe": "selfsigned-dwsnet-ou.exe",
    LONG_FILE: "dwsnet-srl.exe",
}
# Files that are not PE files (a scanner reads and drops them).
OTHER_FILES: dict[str, bytes] = {
    "ProgramData\\Cache\\blob.bin": (PE_DIR / "not-a-pe.bin").read_bytes(),
    "Users\\Public\\readme.txt": b"This file carries a named data stream in NTFS images.\r\n",
}
HIVES = ("Windows\\System32\\config\\SYSTEM", "Windows\\System32\\config\\SOFTWARE")


@dataclass(frozen=True)
class Ads:
    """A named data stream: ``stream`` of the file ``path``, a copy of ``sample``."""

    path: str
    stream: str
    sample: Path

    @property
    def full(self) -> str:
        """``Users\\Public\\readme.txt:payload.exe``: the name Windows gives the stream."""
        return f"{self.path}:{self.stream}"


@dataclass(frozen=True)
class Tree:
    """What ``make_tree`` wrote.

    ``hostname`` is Tcpip\\Parameters\\Hostname in the current control set (ComputerName holds
    it upper-cased); ``decoy_hostname`` is what the other control set says; ``current`` is
    Select\\Current. ``pe_files`` maps each PE file's Windows path to its sample; ``files`` lists
    every regular file written (PE files, other files, hives); ``ads`` is the stream NTFS images
    carry besides.
    """

    root: Path
    hostname: str
    domain: str
    machine_guid: str
    decoy_hostname: str
    current: int
    pe_files: dict[str, Path]
    files: tuple[str, ...]
    ads: Ads

    @property
    def computer_name(self) -> str:
        return self.hostname.upper()

    @property
    def system_hive(self) -> str:
        return HIVES[0]

    @property
    def software_hive(self) -> str:
        return HIVES[1]

    def host(self, rel: str) -> Path:
        """The file under ``root`` for a Windows path relative to the volume."""
        return self.root.joinpath(*PureWindowsPath(rel).parts)

    @staticmethod
    def posix(rel: str) -> str:
        """``Windows/System32/benign.exe`` for ``Windows\\System32\\benign.exe``."""
        return str(PurePosixPath(*PureWindowsPath(rel).parts))


def make_tree(
    root: Path,
    *,
    hostname: str = HOSTNAME,
    domain: str = DOMAIN,
    machine_guid: str = MACHINE_GUID,
    current: int = 1,
) -> Tree:
    """Writes the tree under ``root`` (created; must be empty or absent) and returns it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    uuid.UUID(machine_guid)
    tree = Tree(
        root=root,
        hostname=hostname,
        domain=domain,
        machine_guid=machine_guid,
        decoy_hostname=decoy_name(hostname),
        current=current,
        pe_files={rel: PE_DIR / sample for rel, sample in PE_FILES.items()},
        files=tuple(PE_FILES) + tuple(OTHER_FILES) + HIVES,
        ads=Ads("Users\\Public\\readme.txt", "payload.exe", PE_DIR / "dwsnet-ou.exe"),
    )
    for rel in (*PE_FILES, *OTHER_FILES, *HIVES):
        parts = PureWindowsPath(rel).parts
        if any(len(p) > 255 for p in parts):
            raise ValueError(f"a component of {rel} is longer than 255")
    assert len(LONG_FILE) > 260
    for rel, sample in tree.pe_files.items():
        dest = tree.host(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample, dest)
    for rel, data in OTHER_FILES.items():
        dest = tree.host(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    write_system_hive(tree.host(HIVES[0]), hostname, domain, current)
    write_software_hive(tree.host(HIVES[1]), machine_guid)
    return tree
