"""Which operating-system facilities the agent uses, decided once.

Windows lacks fork, openat, O_NOFOLLOW, pread and fcntl; the agent has a portable path for
each. ``RMMSCAN_PORTABLE=1`` makes it take every portable path on any OS, so the code Windows
runs is exercised by the test suite here (the test command runs the sweep's tests both ways).
docs/platforms.md says what that covers and what it cannot.

Every module that chooses between a facility and its portable path reads the choice here,
never from os itself: otherwise the forced run would test a mixture no OS runs.
"""

from __future__ import annotations

import os
import sys

FORCED = os.environ.get("RMMSCAN_PORTABLE", "") not in ("", "0")

# Sweep processes (engine/sweep.py) or threads. os.fork, not multiprocessing's start methods:
# every command imports this module, and multiprocessing costs 11 ms to import.
CAN_FORK = not FORCED and hasattr(os, "fork")
# The walk opens each directory and file relative to its parent's descriptor (sources/dirs.py
# FdDir), or by full path (PathDir).
HAS_OPENAT = not FORCED and os.open in os.supports_dir_fd and os.scandir in os.supports_fd
# PathDir refuses a link by an lstat before the open; where this is not 0 the open refuses one
# too, closing the window after the lstat (0: the lstat alone, as on Windows).
O_NOFOLLOW = 0 if FORCED else getattr(os, "O_NOFOLLOW", 0)
# Hashes read beside the verification without moving its offset (inspect/hashes.py hash_fd,
# rows/facts.py); without pread a file is hashed after it, through seek and read.
CAN_PREAD = not FORCED and hasattr(os, "pread")
# The process source reads /proc/PID/maps and the links under /proc/PID (sources/processes.py),
# or psutil's portable calls, as on Windows and macOS.
HAS_PROCFS = (
    not FORCED and sys.platform.startswith("linux") and os.path.exists("/proc/self/maps")
)
