"""What the scan processes of a sweep (sweep.py) and of an image (imagejobs.py) share: how
many there are, how one learns it must stop, and how the parent ends them and says how one
ended. Light to import: a scan that runs in one process never loads multiprocessing."""

from __future__ import annotations

import gc
import mmap
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


def can_fork() -> bool:
    """Whether this process may start scan processes: not on Windows, nor in a process that
    already runs threads (a lock another thread holds would stay held in the child)."""
    return portable.CAN_FORK and threading.active_count() == 1


def per_cpu() -> int:
    """The default fan-out: one scan process per CPU, at most MAX_DEFAULT_JOBS."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


def prepare_fork() -> mmap.mmap:
    """Made just before the scan processes are started: flushes this process's output (a
    child must not inherit, and write again, buffered output), freezes what exists now (the
    rule pack, the trust store, imported modules live as long as the scan: kept out of the
    collector's passes, which would otherwise walk it, and write to its pages, in every child,
    the use the gc module's documentation gives), and returns the shared stop byte. A byte of
    shared memory, not an Event: the children read it for every file, and an Event takes a
    lock to be read (0.6 us against 0.05 us); an anonymous mapping made before the fork is
    shared with the children (ctypes' shared values cost 1 MiB)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    gc.freeze()
    return mmap.mmap(-1, 1)


def jobs_for(jobs: int | None, records: int) -> int:
    """The processes to walk a file system of ``records`` file records with: ``jobs``, or by
    default per_cpu(), but one below SMALL_RECORDS; 1 where this process cannot fork."""
    if not can_fork():
        return 1
    if jobs is None:
        return 1 if records < SMALL_RECORDS else per_cpu()
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
