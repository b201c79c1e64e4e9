"""Expert Witness Format (E01, Ex01), split segments too, through libewf (pyewf), read-only.

The segments are found from the first one's name (image.E01 → image.E02 ...) by libewf's own
glob; a name it cannot glob is opened alone. A segment cut short opens, and its reads then
fail: the failure names the layer, the image and the offset.
"""

from __future__ import annotations

from ..container import ContainerError, LibyalImage

_E01 = b"EVF\x09\x0d\x0a\xff\x00"
_EX01 = b"EVF2\x0d\x0a\x81\x00"
_L01 = (b"LVF\x09\x0d\x0a\xff\x00", b"LEF2\x0d\x0a\x81\x00")


def _matches(head: bytes, _tail: bytes) -> bool:
    return head.startswith((_E01, _EX01, *_L01))


class EwfImage(LibyalImage):
    format = "ewf"

    def __init__(self, path: str):
        import pyewf

        if open(path, "rb").read(8).startswith(_L01):  # noqa: SIM115 (closed by refcount)
            raise ContainerError(
                "ewf: a logical evidence file (L01/Lx01) holds files, not a disk: not supported"
            )
        try:
            names = pyewf.glob(path)
        except (OSError, RuntimeError, ValueError, TypeError):
            names = [path]
        handle = pyewf.handle()
        handle.open(names, "r")
        self.segments = len(names)
        super().__init__(path, handle)
        chunk = handle.get_chunk_size()
        if 512 <= chunk <= 1024 * 1024 and chunk & (chunk - 1) == 0:
            self.block = chunk  # libewf inflates a whole chunk for any read inside it

    def identity(self) -> bytes:
        out = []
        for name in ("MD5", "SHA1"):
            try:
                value = self.handle.get_hash_value(name)
            except (OSError, RuntimeError, KeyError, ValueError):
                value = None
            out.append(f"{name}={value or ''}")
        return ";".join(out).encode()


DETECTOR = ("ewf", _matches, EwfImage)
