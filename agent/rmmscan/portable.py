"""Which operating-system facilities the agent uses, decided once.

Windows lacks fork, openat, O_NOFOLLOW, pread and fcntl; the agent has a portable path for
each. ``RMMSCAN_PORTABLE=1`` makes it take every portable path on any OS, so the code Windows
runs is exercised by the test suite here (the test command runs the sweep's tests both ways).
"""

from __future__ import annotations

import multiprocessing
import os

FORCED = os.environ.get("RMMSCAN_PORTABLE", "") not in ("", "0")

CAN_FORK = not FORCED and "fork" in multiprocessing.get_all_start_methods()
HAS_OPENAT = not FORCED and os.open in os.supports_dir_fd and os.scandir in os.supports_fd
O_NOFOLLOW = 0 if FORCED else getattr(os, "O_NOFOLLOW", 0)
CAN_PREAD = not FORCED and hasattr(os, "pread")
