"""VMware VMDK through libvmdk (pyvmdk), read-only: a descriptor and its extent files (found
beside it, as the descriptor names them), or a monolithic sparse file. A differencing disk
(one with a parent) is refused with its parent named: its data is not all in this image."""

from __future__ import annotations

from ..container import ContainerError, LibyalImage

_SPARSE = (b"KDMV", b"COWD")
_DESCRIPTOR = b"# Disk DescriptorFile"


def _matches(head: bytes, _tail: bytes) -> bool:
    return head.startswith(_SPARSE) or head.lstrip(b"\xef\xbb\xbf").startswith(_DESCRIPTOR)


class VmdkImage(LibyalImage):
    format = "vmdk"

    def __init__(self, path: str):
        import pyvmdk

        handle = pyvmdk.handle()
        handle.open(path, "r")
        try:
            parent = handle.get_parent_filename()
            if parent:
                raise ContainerError(
                    f"vmdk: a differencing disk (its parent is {parent!r}): not supported"
                )
            # libvmdk resolves the extents' names against the descriptor's own folder.
            handle.open_extent_data_files()
        except ContainerError:
            handle.close()
            raise
        except (OSError, RuntimeError) as exc:
            handle.close()
            raise ContainerError(f"vmdk: cannot open the extent files: {exc}") from None
        super().__init__(path, handle)

    def identity(self) -> bytes:
        try:
            return b"vmdk-cid=%d" % (self.handle.get_content_identifier() or 0)
        except (OSError, RuntimeError):
            return b""


DETECTOR = ("vmdk", _matches, VmdkImage)
