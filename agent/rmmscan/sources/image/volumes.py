"""The volumes of a disk image: the partitions of its MBR or GPT (through The Sleuth Kit's
volume system), or the whole image as one bare volume, each with its file system opened.

Partitions are numbered 1, 2, ... in the order the table lists the allocated ones (a bare
volume is partition 0): that number is `--partition N`, the Partition column and the name
of a volume that is not the Windows volume (``\\\\?\\image\\p2\\...``). A partition the table
places past the end of the image, or whose file system cannot be read, is reported with the
layer that failed; the other partitions are still scanned.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytsk3

from .container import Container, ContainerError


class LayerError(Exception):
    """A volume or file system that cannot be read: the message names the layer."""


class TskImage(pytsk3.Img_Info):
    """The container as The Sleuth Kit's image: every read goes through its block cache."""

    def __init__(self, container: Container):
        self.container = container
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def read(self, offset: int, size: int) -> bytes:
        # An exception raised here becomes an OSError or a RuntimeError of pytsk3 (the
        # latter from FS_Info): the container's own message is kept for the report.
        try:
            return self.container.read(offset, size)
        except ContainerError as exc:
            self.failure = str(exc)
            raise

    def get_size(self) -> int:
        return self.container.size

    def close(self) -> None:
        pass  # the container is closed by whoever opened it


@dataclass
class Volume:
    number: int  # 0: a bare volume; 1...: the table's allocated partitions, in order
    offset: int  # bytes from the start of the image
    length: int
    description: str
    fs: object | None = None  # pytsk3.FS_Info, once opened
    error: str | None = None  # why it cannot be scanned, the layer named

    @property
    def label(self) -> str:
        return "the bare volume" if self.number == 0 else f"partition {self.number}"


# GPT partition types that hold no file system by design: skipped without an error.
_NO_FILE_SYSTEM = ("Microsoft reserved", "MSR", "BIOS boot", "Extended", "Unallocated")


def volumes(image: TskImage) -> tuple[str, list[Volume]]:
    """The volume system's name ('dos', 'gpt' or 'none') and its volumes, file systems
    opened where they can be (each volume's ``error`` says why not)."""
    size = image.container.size
    try:
        system = pytsk3.Volume_Info(image)
    except (OSError, RuntimeError):
        _fail_if_unreadable(image)
        volume = Volume(0, 0, size, "bare volume")
        _open_fs(image, volume)
        if volume.fs is not None:
            return "none", [volume]
        salvaged = _mbr_entries(image)
        if salvaged:
            return "dos", salvaged
        volume.error = (
            "no partition table (MBR, GPT) and no file system recognised at the start "
            "of the image (layers: volume system, file system)"
        )
        return "none", [volume]
    kind = {pytsk3.TSK_VS_TYPE_DOS: "dos", pytsk3.TSK_VS_TYPE_GPT: "gpt"}.get(
        int(system.info.vstype), str(system.info.vstype)
    )
    block = system.info.block_size
    found: list[Volume] = []
    for part in system:
        if not int(part.flags) & pytsk3.TSK_VS_PART_FLAG_ALLOC:
            continue
        description = part.desc.decode("utf-8", "replace")
        volume = Volume(len(found) + 1, part.start * block, part.len * block, description)
        found.append(volume)
        if volume.offset + volume.length > size:
            volume.error = (
                f"{volume.label} ({description}): the {kind.upper()} partition table places "
                f"it at bytes {volume.offset:,} to {volume.offset + volume.length:,}, past "
                f"the end of the image ({size:,} bytes) (layer: partition table)"
            )
            continue
        _open_fs(image, volume)
        if volume.fs is None and volume.error is None:
            if any(word in description for word in _NO_FILE_SYSTEM):
                volume.error = ""  # nothing to scan, by design: counted, not reported
            else:
                volume.error = (
                    f"{volume.label} ({description}): no file system recognised "
                    "(layer: file system)"
                )
    return kind, found


def _mbr_entries(image: TskImage) -> list[Volume]:
    """The Sleuth Kit refuses a whole MBR when one entry is wrong (past the end of the
    image): its four primary entries are read here, so that the sound ones are scanned and
    the wrong one named. Extended partitions and a GPT's protective entry are not followed."""
    sector = image.container.read(0, 512)
    if len(sector) != 512 or sector[510:] != b"\x55\xaa":
        return []
    found: list[Volume] = []
    size = image.container.size
    for slot in range(4):
        entry = sector[446 + 16 * slot : 446 + 16 * (slot + 1)]
        kind = entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if kind == 0 or count == 0:
            continue
        volume = Volume(len(found) + 1, start * 512, count * 512, f"MBR type 0x{kind:02x}")
        found.append(volume)
        if kind in (0x05, 0x0F, 0x85, 0xEE):
            volume.error = (
                f"{volume.label} ({volume.description}): an extended or GPT-protective "
                "entry in an MBR The Sleuth Kit refused: not followed (layer: partition table)"
            )
        elif volume.offset + volume.length > size:
            volume.error = (
                f"{volume.label} ({volume.description}): the MBR partition table places it "
                f"at bytes {volume.offset:,} to {volume.offset + volume.length:,}, past the "
                f"end of the image ({size:,} bytes) (layer: partition table)"
            )
        else:
            _open_fs(image, volume)
            if volume.fs is None and volume.error is None:
                volume.error = (
                    f"{volume.label} ({volume.description}): no file system recognised "
                    "(layer: file system)"
                )
    return found


def _fail_if_unreadable(image: TskImage) -> None:
    """A container that cannot even give its first sector is the container's failure."""
    image.container.read(0, 512)


def _open_fs(image: TskImage, volume: Volume) -> None:
    image.failure = None
    try:
        volume.fs = pytsk3.FS_Info(image, offset=volume.offset)
    except (OSError, RuntimeError):
        failure = getattr(image, "failure", None)
        container = image.container
        if failure:  # the container failed under the file system: that layer is named
            volume.error = f"{volume.label} ({volume.description}): {failure}"
        elif container.can_be_hollow and container.hollow(volume.offset, 64 * 1024):
            volume.error = (
                f"{volume.label} ({volume.description}): its file system's first blocks are "
                "stored in compressed QCOW2 clusters that cannot be decompressed (damaged): not "
                f"read (layer: {container.format})"
            )
