"""Sweep processes: with -j N > 1 the sweep forks N processes that share the directories.
Watched with strace -f: every file is opened by exactly one process, and the rows are those of
one thread; a process killed mid-sweep is reported (exit 2, or 1 when something was found),
never silently lost; Ctrl-C ends the parent and every sweep process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

import psutil
import pytest
from sweeptree import PE_DIR, Stopped, finish, opened_paths, scan, stable_set, start

DIRS = 12


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """12 directories, each with a DWSNET-signed copy, an unsigned PE and a text file."""
    root = tmp_path_factory.mktemp("shared")
    for i in range(DIRS):
        d = root / f"d{i:02}" / "sub"
        d.mkdir(parents=True)
        shutil.copy(PE_DIR / "dwsnet-srl.exe", d / "agent.exe")
        shutil.copy(PE_DIR / "unsigned.exe", d.parent / "tool.exe")
        (d / "notes.txt").write_text(f"notes {i}\n")
    return root


def _traced(tmp_path, *args, name="strace"):
    log = tmp_path / f"{name}.log"
    proc = start(
        *args,
        state_dir=tmp_path / f"state-{name}",
        prefix=["strace", "-f", "-y", "-xx", "-qq", "-e", "trace=openat", "-o", str(log)],
    )
    return finish(proc, args), log.read_text()


def test_processes_share_the_files_and_give_the_rows_of_one_thread(tree, tmp_path):
    done, log = _traced(tmp_path, "--format", "jsonl", "--emit", "all", "-j", "3", tree)
    single = scan("--format", "jsonl", "--emit", "all", "-j", "1", tree,
                  state_dir=tmp_path / "state-single")  # fmt: skip
    assert done.returncode == single.returncode == 1, done
    assert stable_set(done.rows) == stable_set(single.rows)
    assert len(done.rows) == 2 * DIRS
    opens: dict[bytes, set[str]] = {}
    for line in log.splitlines():
        pid = line.split(None, 1)[0]
        for path in opened_paths(line):
            if path.startswith(os.fsencode(tree)) and not os.path.isdir(path):
                opens.setdefault(path, set()).add(pid)
    files = {os.fsencode(p) for p in tree.rglob("*") if p.is_file()}
    assert set(opens) == files
    assert all(len(pids) == 1 for pids in opens.values()), "a file opened by two processes"
    assert len(set().union(*opens.values())) == 3, "three processes opened files"


def test_a_sweep_process_killed_midway_is_reported(tree, tmp_path):
    victim = tree / "d05" / "sub" / "agent.exe"
    log = tmp_path / "kill.log"
    proc = start(
        "--format", "jsonl", "-j", "2", tree,
        state_dir=tmp_path / "state",
        prefix=["strace", "-f", "-y", "-qq", "-o", str(log), "-P", str(victim),
                "-e", "trace=read", "-e", "inject=read:signal=SIGKILL"],
    )  # fmt: skip
    done = finish(proc, ["kill"])
    assert re.search(r"sweep process [01] of 2 ended early \(killed by SIGKILL\)", done.stderr)
    assert done.summary["failed"] == 1
    # What the other process found was delivered, and a finding wins over the error.
    assert 1 <= len(done.rows) < DIRS
    assert done.returncode == 1, done
    assert str(victim) not in {r["FolderPath"] for r in done.rows}


def _rmmscan_under(tracer_pid: int) -> psutil.Process:
    """The rmmscan parent that strace (tracer_pid) runs."""
    return next(
        p for p in psutil.Process(tracer_pid).children() if "rmmscan" in " ".join(p.cmdline())
    )


def test_ctrl_c_ends_every_sweep_process(tree, tmp_path):
    """One sweep process is stopped (SIGSTOP, as strace's inject does) inside the sweep, so
    the run cannot end by itself; SIGINT to the parent must still end all of them."""
    run = Stopped("--format", "jsonl", "-j", "2", tree, state_dir=tmp_path / "state",
                  path=tree / "d03" / "sub" / "agent.exe", syscall="read", when=1,
                  log=tmp_path / "stop.log")  # fmt: skip
    parent = _rmmscan_under(run.proc.pid)
    sweepers = parent.children()  # the other one may have finished its share already
    assert any(p.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP) for p in sweepers)
    parent.send_signal(signal.SIGINT)
    try:
        _, err = run.proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        raise
    assert run.proc.returncode == 130, err.decode()  # strace exits as its command did
    assert b"Traceback" not in err
    _, alive = psutil.wait_procs(sweepers, timeout=5)
    assert not alive


def test_sweep_processes_end_when_the_parent_is_killed(tmp_path):
    """SIGKILL (the OOM killer) ends the parent without its cleanup: its sweep processes
    must notice, not block forever on a pipe nobody reads. Both are held at their first
    listing of the root until the parent is gone, then let go over 3,000 folders of results."""
    root = tmp_path / "wide"
    for i in range(3000):  # results well past a pipe's 64 KiB
        (root / f"d{i:04}").mkdir(parents=True)
        (root / f"d{i:04}" / "x.txt").write_text("x")
    run = Stopped("--format", "jsonl", "-j", "2", root, state_dir=tmp_path / "state",
                  path=root, syscall="getdents64", when=1, log=tmp_path / "strace.log",
                  stops=2)  # fmt: skip
    parent = _rmmscan_under(run.proc.pid)
    sweepers = parent.children()
    assert len(sweepers) == 2
    parent.send_signal(signal.SIGKILL)
    psutil.wait_procs([parent], timeout=10)
    for tid in run.tids:
        os.kill(tid, signal.SIGCONT)
    _, alive = psutil.wait_procs(sweepers, timeout=30)
    for p in alive:
        p.kill()
    _, err = run.proc.communicate(timeout=30)
    assert not alive, "a sweep process outlived its parent"
    assert b"Traceback" not in err
