"""What the scan processes of a sweep (sweep.py) and of an image (imagejobs.py) share: how
many there are, how one learns it must stop, and how the parent ends them and says how one
ended. Light to import: a scan that runs in one process never loads multiprocessing."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

from .. import portable

MAX_DEFAULT_JOBS = 4  # an endpoint agent must not take a big server's memory by default
# Fewer file records than this: walked in this process by default. Starting two processes
# and their first signature's trust store costs about 0.1 s, what one process takes for
# some 3,000 files (benchmarks/README.md, the image scan).
SMALL_RECORDS = 5_000


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


def jobs_for(jobs: int | None, records: int) -> int:
    """The processes to walk a file system of ``records`` file records with: ``jobs``, or by
    default one per CPU (at most MAX_DEFAULT_JOBS), but one below SMALL_RECORDS; 1 where this
    process cannot fork (Windows, or a process that already runs threads: a lock another
    thread holds would stay held in the child)."""
    if not portable.CAN_FORK or threading.active_count() != 1:
        return 1
    if jobs is None:
        if records < SMALL_RECORDS:
            return 1
        return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))
    return jobs


def run_child(body: Callable[[], None]) -> NoReturn:
    """A scan process's life: ``body``, then os._exit, so that nothing inherited from the
    parent (the scan cache's and the state's SQLite connections, the output's buffer) is
    closed or flushed here. Status 1 when the parent is gone (nobody to report to) or the
    body raised: a bug or a library's failure, its traceback on stderr as a thread's would
    be."""
    code = 0
    try:
        body()
    except (BrokenPipeError, ConnectionResetError, EOFError):
        code = 1
    except BaseException:
        code = 1
        try:
            sys.stderr.write(traceback.format_exc())
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(code)
