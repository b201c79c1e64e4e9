"""The CPU budget: a worker that asks the pacer before each piece of work stays within it."""

from __future__ import annotations

import threading
import time

from rmmscan.agent.pacing import Pacer


def _burn(pacer: Pacer, seconds: float) -> tuple[float, float]:
    """Busy work for `seconds` of wall time, asking the pacer between pieces; the CPU time
    and wall time this thread spent."""
    cpu0, t0 = time.thread_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        pacer()
        sum(range(2000))
    return time.thread_time() - cpu0, time.monotonic() - t0


def test_a_busy_worker_is_held_to_its_share():
    pacer = Pacer(20, cpu=time.thread_time)
    cpu, wall = _burn(pacer, 5.0)
    share = cpu / wall
    print(f"share {share:.3f} of a core over {wall:.1f} s (budget 0.20)")
    # At most the budget and a window's rounding; at least a good part of it (the machine
    # may be busy with other work, which only lowers the share).
    assert share <= 0.26
    assert pacer.slept > 2.0


def test_a_full_budget_never_sleeps():
    pacer = Pacer(100)
    _burn(pacer, 0.5)
    assert pacer.slept == 0


def test_a_stop_ends_a_wait_at_once():
    stop = threading.Event()
    pacer = Pacer(1, stop=stop, cpu=time.thread_time)
    _burn(pacer, 0.3)  # far over budget: the next call waits
    stop.set()
    started = time.monotonic()
    for _ in range(100):
        pacer()
    assert time.monotonic() - started < 0.1


def test_spending_before_a_reset_is_not_made_up_for():
    pacer = Pacer(10, cpu=time.thread_time)
    sum(range(3_000_000))  # spent before: loading the rules
    pacer.reset()
    started = time.monotonic()
    pacer()
    assert time.monotonic() - started < 0.05
