"""Builders of disk images for the image tests, all without mounting anything.

Each builder runs real tools (ntfs-3g, wimlib, dosfstools, mtools, fdisk, ewf-tools, qemu-utils),
checks each tool's exit status (``BuildError`` carries the tool's stderr) and returns the path of
what it made. Builds are cached for the test session (the process): a second call with the same
inputs (the same tree content or input image, the same options) returns the image the first call
built, whatever ``out`` it is given. Images are shared, so a test that alters one copies it first.
"""

from __future__ import annotations

import os
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
    """What a tree or a file holds, cheaply: names, sizes and modification times."""
    path = Path(path)
    if path.is_dir():
        items = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for name in sorted(filenames):
                st = os.stat(os.path.join(dirpath, name))
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
        os.stat(os.path.join(d, f)).st_size for d, _, files in os.walk(root) for f in files
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
