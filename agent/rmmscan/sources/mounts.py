"""Pseudo file systems a sweep must not read: /proc, /sys and friends hold no binaries on disk,
and some of their files block or have side effects when read (/proc/kmsg, tracefs pipes)."""

from __future__ import annotations

import os

PSEUDO = frozenset(
    {
        "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
        "securityfs", "pstore", "efivarfs", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs",
        "binfmt_misc", "autofs", "rpc_pipefs", "nsfs", "selinuxfs",
    }
)  # fmt: skip


def pseudo_devices(mountinfo: str = "/proc/self/mountinfo") -> frozenset[int]:
    """st_dev values of mounted pseudo file systems; empty where there is no mountinfo."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read(4 * 1024 * 1024).splitlines()
    except OSError:
        return frozenset()
    devices = set()
    for line in lines:
        # "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw" (proc(5))
        fields = line.split()
        try:
            fstype = fields[fields.index("-", 6) + 1]
            major, minor = fields[2].split(":")
            if fstype in PSEUDO:
                devices.add(os.makedev(int(major), int(minor)))
        except (ValueError, IndexError):
            continue
    return frozenset(devices)
