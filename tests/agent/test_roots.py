"""The roots an agent takes without a configuration: the machine's local file systems."""

from __future__ import annotations

import os

from rmmscan.agent.roots import local, local_roots, roots_of_mountinfo

# A workstation's mountinfo (proc(5)): pseudo file systems, a bind mount of a folder of the
# root file system, tmpfs, a USB disk through ntfs-3g, an NFS share, sshfs, a mount point
# with a space (written \040 by the kernel).
MOUNTINFO = """\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid shared:2 - sysfs sysfs rw
25 22 0:5 / /dev rw,nosuid shared:8 - devtmpfs udev rw
26 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
27 22 259:1 / /boot/efi rw,relatime shared:3 - vfat /dev/nvme0n1p1 rw
28 22 259:2 /srv/data /mnt/data rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
29 22 259:2 / /var/lib/x rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
30 22 8:17 / /media/usb\\040disk rw - fuseblk /dev/sdb1 rw
31 22 0:50 / /home/shared rw - nfs4 server:/export rw
32 22 0:51 / /home/u/remote rw - fuse.sshfs u@host: rw
33 22 0:52 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
34 22 0:53 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw
garbage line
"""


def test_local_file_systems_each_once_without_pseudo_or_network_ones():
    assert roots_of_mountinfo(MOUNTINFO) == [
        "/",
        "/run",
        "/boot/efi",
        "/mnt/data",  # another folder of the root file system, mounted again: its own root
        "/media/usb disk",
        "/var/lib/docker/overlay2/x/merged",
    ]


def test_kinds():
    for fstype in ("ext4", "xfs", "btrfs", "vfat", "ntfs3", "fuseblk", "tmpfs", "overlay"):
        assert local(fstype), fstype
    for fstype in ("proc", "sysfs", "nfs", "cifs", "fuse.sshfs", "fuse.rclone", "9p"):
        assert not local(fstype), fstype


def test_this_machine():
    roots = local_roots()
    assert roots and all(os.path.isdir(r) for r in roots)
    assert "/proc" not in roots and "/sys" not in roots
