"""What the scan processes of a sweep (sweep.py) and of an image (imagejobs.py) share: how
one learns it must stop, and how the parent ends them and says how one ended."""

from __future__ import annotations

import signal
import time


class ChildStop:
    """A scan process's stop: the parent's shared byte, or SIGTERM to this process. The
    signal handler only sets a flag (an Event's lock is not safe to take in a handler)."""

    def __init__(self, shared):
        self.shared = shared
        self.flag = False

    def signalled(self, _signum, _frame) -> None:
        self.flag = True

    def is_set(self) -> bool:
        return self.flag or self.shared[0] != 0


def end_processes(children, wait_s: float) -> None:
    """Children still running: given `wait_s` to finish their file, then killed (SIGTERM
    would only ask them to stop at the next file)."""
    deadline = time.monotonic() + wait_s
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.exitcode is None:  # stopped (SIGSTOP), or busy past the grace
            child.kill()


def how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"
