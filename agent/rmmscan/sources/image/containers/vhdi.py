"""Microsoft VHD (fixed and dynamic) and VHDX through libvhdi (pyvhdi), read-only. A
differencing disk (one with a parent) is refused with its parent named."""

from __future__ import annotations

from ..container import ContainerError, LibyalImage

_DIFFERENCING = 4  # libvhdi's disk type


def _matches(head: bytes, tail: bytes) -> bool:
    return head.startswith((b"vhdxfile", b"conectix")) or tail[-512:].startswith(b"conectix")


class VhdImage(LibyalImage):
    format = "vhd"

    def __init__(self, path: str):
        import pyvhdi

        handle = pyvhdi.file()
        handle.open(path, "r")
        with open(path, "rb") as head:
            self.format = "vhdx" if head.read(8) == b"vhdxfile" else "vhd"
        if handle.get_disk_type() == _DIFFERENCING:
            parent = handle.get_parent_filename()
            handle.close()
            raise ContainerError(
                f"{self.format}: a differencing disk (its parent is {parent!r}): not supported"
            )
        super().__init__(path, handle)

    def identity(self) -> bytes:
        try:
            return self.format.encode() + b"-id=" + (self.handle.get_identifier() or "").encode()
        except (OSError, RuntimeError):
            return b""


DETECTOR = ("vhd", _matches, VhdImage)
