"""The roots an agent watches and sweeps when its configuration names none: the machine's fixed
disks. On Linux, every mounted local file system that is not a pseudo file system (/proc, /sys,
cgroups) and not a network share (a share is its server's to scan, and may be slow or hang);
on Windows, every fixed drive.

Each root is swept and watched without crossing into another file system: the roots are the
file systems themselves, so nested mounts are roots of their own, and a share mounted inside
one is never entered.
"""

from __future__ import annotations

import sys

from ..sources.mounts import PSEUDO

# File systems whose files live elsewhere: a network share, a FUSE bridge to a remote or to an
# archive. fuseblk (ntfs-3g, exfat-fuse) is a local disk and is kept.
NETWORK = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre",
        "davfs", "gfs2", "ocfs2", "ncpfs", "coda", "sshfs", "virtiofs",
    }
)  # fmt: skip
MAX_MOUNTINFO = 4 << 20


def local_roots(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount points of local, non-pseudo file systems, each file system once (a bind mount
    of one already listed is left out), in mount order."""
    if sys.platform == "win32":
        return fixed_drives()
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read(MAX_MOUNTINFO)
    except OSError:
        return ["/"]
    return roots_of_mountinfo(text) or ["/"]


def roots_of_mountinfo(text: str) -> list[str]:
    """Pure: the local roots that a /proc/PID/mountinfo text (proc(5)) lists."""
    roots: list[str] = []
    seen: set[tuple[str, str]] = set()
    for line in text.splitlines():
        # "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw"
        fields = line.split()
        try:
            dash = fields.index("-", 6)
            device, inner, point = fields[2], fields[3], fields[4]
            fstype = fields[dash + 1]
        except (ValueError, IndexError):
            continue
        if not local(fstype):
            continue
        if (device, inner) in seen:
            continue  # the same folder of the same file system, mounted again (a bind mount)
        seen.add((device, inner))
        roots.append(_unescape(point))
    return roots


def local(fstype: str) -> bool:
    base = fstype.split(".", 1)[0]
    if fstype in PSEUDO or fstype in NETWORK or base in NETWORK:
        return False
    # fuse.sshfs, fuse.rclone, fuse.gvfsd-fuse: userspace bridges, mostly to remote storage.
    return not (base == "fuse" and fstype != "fuse")


def _unescape(point: str) -> str:
    """mountinfo writes space, tab, newline and backslash in octal (\\040)."""
    if "\\" not in point:
        return point
    out, i = [], 0
    while i < len(point):
        octal = point[i + 1 : i + 4]
        if point[i] == "\\" and len(octal) == 3 and all(c in "01234567" for c in octal):
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(point[i])
            i += 1
    return "".join(out)


def fixed_drives() -> list[str]:
    """Windows: every fixed drive (no removable, CD or network drive)."""
    import psutil

    return [p.mountpoint for p in psutil.disk_partitions(all=False) if "fixed" in p.opts] or [
        "C:\\"
    ]
