"""A good citizen on the endpoint: the lowest priorities, and a CPU budget kept by pacing.

The budget (`max_cpu_percent`, of one core) is the whole process's CPU time over wall time,
measured in windows of a few seconds: when the agent has used more than its share of the
current window, the worker that asks next sleeps until the share is back within budget. The
sweep asks before each file (engine/sweep.py), the watch and the process source before each
file they judge, so a large first sweep slows down instead of taking a core.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

WINDOW_S = 2.0  # the share is measured over this much wall time, then the window slides
CHECK_S = 0.02  # between two readings of the CPU clock: most calls cost one monotonic()
MAX_SLEEP_S = 0.5  # one sleep at most: a stop is seen within it


class Pacer:
    def __init__(
        self,
        percent: float,
        stop: threading.Event | None = None,
        cpu: Callable[[], float] = time.process_time,  # every thread of this process
        clock: Callable[[], float] = time.monotonic,
    ):
        self.share = percent / 100.0
        self.stop = stop or threading.Event()
        self.cpu, self.clock = cpu, clock
        self._lock = threading.Lock()
        self._t0, self._cpu0 = clock(), cpu()
        self._next = 0.0
        self.slept = 0.0  # seconds spent waiting for the budget, for the heartbeat

    def reset(self) -> None:
        """Start a new window now: what was spent before (loading the rules at start or at a
        reload) is not made up for by sleeping."""
        with self._lock:
            self._t0, self._cpu0 = self.clock(), self.cpu()

    def __call__(self) -> None:
        now = self.clock()
        if now < self._next or self.share >= 1.0:
            return
        with self._lock:
            self._next = now + CHECK_S
            used = self.cpu() - self._cpu0
            elapsed = now - self._t0
            wait = used / self.share - elapsed  # wall time at which `used` is within budget
            if elapsed >= WINDOW_S and wait <= 0:
                self._t0, self._cpu0 = now, self._cpu0 + used
                return
        if wait > 0:
            wait = min(wait, MAX_SLEEP_S)
            self.slept += wait
            self.stop.wait(wait)


def lower_priority(nice: int, warn: Callable[[str], None]) -> None:
    """Take CPU priority `nice` (0-19) and the idle I/O class, where the OS has them. A
    priority that cannot be taken is warned about, never fatal."""
    import psutil

    process = psutil.Process()
    try:
        if sys.platform == "win32":
            process.nice(psutil.IDLE_PRIORITY_CLASS if nice >= 10 else
                         psutil.BELOW_NORMAL_PRIORITY_CLASS)  # fmt: skip
            process.ionice(psutil.IOPRIO_VERYLOW)
            return
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        if hasattr(psutil, "IOPRIO_CLASS_IDLE"):  # Linux
            process.ionice(psutil.IOPRIO_CLASS_IDLE)
    except (OSError, psutil.Error) as exc:
        warn(f"cannot lower the agent's priority (nice {nice}, idle I/O): {exc}")
