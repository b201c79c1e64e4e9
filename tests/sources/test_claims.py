"""Directory claims between forked sweep processes (claims.py), with real processes: the first
to ask owns a directory, every directory has exactly one owner, a held-up process leaves the
rest to the others, a full table falls back to the fixed split without a directory owned twice
or never, and a process killed while holding the lock does not block the others."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from sweeptree import PE_DIR, TEST_ROOT, stable_set

from rmmscan.sources import claims as claiming
from rmmscan.sources.claims import Claims, fixed_owner

FORK = multiprocessing.get_context("fork")
PATHS = [f"/c/dir{i:04}/sub" for i in range(2000)] + ["/c/naïve", "/c/\udcff-bytes"]


def _claim_all(claims: Claims, share: int, paths, out, hold=None, release=None) -> None:
    mine = []
    for i, path in enumerate(paths):
        if claims.owns(path, share):
            mine.append(path)
            assert claims.owns(path, share), "asking again must give the same answer"
        if hold is not None and i == 10:
            hold.set()
            release.wait(60)
    out.put((share, mine))


def _run(claims: Claims, jobs: list[dict]) -> dict[int, list[str]]:
    out = FORK.SimpleQueue()
    procs = [FORK.Process(target=_claim_all, args=(claims, share, PATHS, out), kwargs=kw)
             for share, kw in enumerate(jobs)]  # fmt: skip
    for p in procs:
        p.start()
    got = dict(out.get() for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return got


def _exactly_once(got: dict[int, list[str]]) -> None:
    owners: dict[str, int] = {}
    for share, mine in got.items():
        for path in mine:
            assert path not in owners, f"{path} owned by {owners[path]} and {share}"
            owners[path] = share
    assert sorted(owners) == sorted(PATHS)


def test_every_directory_has_exactly_one_owner_among_three_processes():
    claims = Claims(3)
    try:
        got = _run(claims, [{}, {}, {}])
    finally:
        claims.close()
    _exactly_once(got)


def test_a_held_up_process_leaves_the_rest_to_the_other():
    """Process 0 stops after its 11th path; process 1 then owns everything else. With the
    fixed split, process 1 would own about half, whatever process 0 did."""
    claims = Claims(2)
    hold, release = FORK.Event(), FORK.Event()
    out = FORK.SimpleQueue()
    first = FORK.Process(target=_claim_all, args=(claims, 0, PATHS, out, hold, release))
    first.start()
    assert hold.wait(30)
    second = FORK.Process(target=_claim_all, args=(claims, 1, PATHS, out))
    second.start()
    share, mine = out.get()
    assert share == 1
    release.set()
    got = dict([(share, mine), out.get()])
    for p in (first, second):
        p.join(30)
    claims.close()
    _exactly_once(got)
    assert len(got[0]) == 11  # what it claimed before it was held up: nothing after
    assert len(got[1]) == len(PATHS) - 11


def test_a_full_table_falls_back_to_the_fixed_split_and_keeps_earlier_claims():
    claims = Claims(2, slots=64)  # 32 claims, then the fixed split
    try:
        early = PATHS[:32]
        assert all(claims.owns(p, 1) for p in early)  # process 1 got there first
        got = _run(claims, [{}, {}])
    finally:
        claims.close()
    _exactly_once(got)
    assert set(early) <= set(got[1])
    for path in PATHS[32:]:
        assert path in got[fixed_owner(path, 2)]


def _hold_the_lock_and_wait(claims: Claims, ready) -> None:
    import fcntl

    fcntl.lockf(claims._lock.fileno(), fcntl.LOCK_EX)
    ready.set()
    time.sleep(60)


def test_a_process_killed_while_claiming_does_not_block_the_others():
    claims = Claims(2)
    ready = FORK.Event()
    holder = FORK.Process(target=_hold_the_lock_and_wait, args=(claims, ready))
    holder.start()
    assert ready.wait(30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    try:
        got = _run(claims, [{}, {}])
    finally:
        claims.close()
    _exactly_once(got)


def test_claims_that_cannot_be_made_give_the_fixed_split():
    assert claiming.make(claiming.MAX_SHARES + 1) is None  # the owner field is one byte
    with pytest.raises(ValueError):
        Claims(2, slots=100)


# Where ``import fcntl`` fails, as on Windows: every other import of the package still works.
_WITHOUT_FCNTL = """
import sys
sys.modules["fcntl"] = None  # import fcntl raises ImportError from here on
from rmmscan.sources import claims
from rmmscan.cli import main as cli
assert claims.fcntl is None and claims.make(2) is None
sys.exit(cli.main(sys.argv[1:]))
"""


def test_without_fcntl_rmmscan_imports_and_sweeps_on_the_fixed_split(tmp_path):
    """Windows has no fcntl, and the sweep and the command line import sources/claims.py:
    rmmscan must start without it. Without fcntl the processes here split by the fixed hash,
    and find what the claims find."""
    runs = {}
    for name, argv in (("without", ["-c", _WITHOUT_FCNTL]), ("with", ["-m", "rmmscan"])):
        out = tmp_path / f"{name}.jsonl"
        done = subprocess.run(
            [sys.executable, *argv, "scan", "--jobs", "2", "--no-cache", "--format", "jsonl",
             "-o", str(out), "-q", "--trusted-roots", str(TEST_ROOT),
             "--state-dir", str(tmp_path / name), str(PE_DIR)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        # 1 is also Python's status for an uncaught exception (an ImportError, say)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 1, done.stderr  # detections
        runs[name] = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert len(runs["with"]) > 20
    assert stable_set(runs["without"]) == stable_set(runs["with"])
