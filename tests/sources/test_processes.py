"""The running-processes source against real processes: what a process maps is offered once
per process instance, with its pid, name and command line; a deleted executable and a memfd
are read through the process; the engine makes process rows of them; hostile names stay
printable; processes that end, or are zombies, during a scan are counted, never raised; and
what a service sees of another user's process with which capabilities."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from rmmscan.engine.engine import Engine, Outcome
from rmmscan.engine.options import Options
from rmmscan.rows.build import MAX_COMMAND_LINE
from rmmscan.sources.candidate import ProcessRef
from rmmscan.sources.localfile import key_of
from rmmscan.sources.processes import MAX_FILES, Processes, ProcessFile
from rmmscan.text import printable

from conftest import PE_DIR, ROOT, TEST_ROOT

SAMPLE = PE_DIR / "dwsnet-srl.exe"
DWSERVICE_RULE = "642b39b7-18eb-46eb-ba1f-bf70befae05e"  # rules/rmm_DWService_filesig.yaml
NOBODY = 65534

# Maps argv[1] read-only, as a loader maps a module; argv[2], when given, becomes its name
# (comm). "memfd" maps the file's bytes from a memfd instead, its descriptor closed.
MAPPER = """
import ctypes, mmap, os, sys, time
data = open(sys.argv[1], "rb")
if sys.argv[2:3] == ["memfd"]:
    fd = os.memfd_create("rmmscan-test")
    os.write(fd, data.read())
    view = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    os.close(fd)
else:
    view = mmap.mmap(data.fileno(), 0, access=mmap.ACCESS_READ)
data.close()
if len(sys.argv) > 2 and sys.argv[2] != "memfd":
    ctypes.CDLL(None).prctl(15, os.fsencode(sys.argv[2]), 0, 0, 0)  # PR_SET_NAME
print("ready", flush=True)
time.sleep(60)
"""


@contextmanager
def mapping(
    *args: str, wrap: tuple[str, ...] = (), code: str = MAPPER
) -> Iterator[subprocess.Popen]:
    """A child process that maps SAMPLE (or what args say) and waits."""
    argv = [*wrap, sys.executable, "-c", code, *(args or (str(SAMPLE),))]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd="/")
    try:
        assert proc.stdout.readline() == b"ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def offered(scan, pid: int, path: Path | str | None = None) -> list[ProcessFile]:
    return [f for f in scan.files if f.process.pid == pid and (path is None or f.path == str(path))]


def instances(processes: Processes, pid: int) -> list:
    return [instance for instance in processes._offered if instance[0] == pid]


# -- what is offered, and once --------------------------------------------------------------------


def test_a_mapped_file_is_offered_once_per_process_instance():
    processes = Processes()
    with mapping() as first:
        scan = processes.scan()
        [found] = offered(scan, first.pid, SAMPLE)
        command = " ".join([sys.executable, "-c", MAPPER, str(SAMPLE)])
        assert found.process == ProcessRef(first.pid, Path(sys.executable).name, command)
        assert found.source == "process" and not found.deleted
        assert found.link.startswith(f"/proc/{first.pid}/map_files/")
        stream, listing = found.open()
        with stream:
            assert stream.read() == SAMPLE.read_bytes()
        assert listing == found.listing and listing.size == SAMPLE.stat().st_size
        # The interpreter it runs is offered too: its executable, read through the process.
        exe = os.path.realpath(sys.executable)
        assert [f.link for f in offered(scan, first.pid, exe)] == [f"/proc/{first.pid}/exe"]
        assert scan.processes > 1 and scan.unreadable < scan.processes

        assert offered(processes.scan(), first.pid) == []
        [instance] = instances(processes, first.pid)
        assert len(processes._offered[instance]) >= 2
    with mapping() as second:
        scan = processes.scan()
        assert instances(processes, first.pid) == []  # ended: forgotten
        [again] = offered(scan, second.pid, SAMPLE)
        assert again.process.pid == second.pid != first.pid
        assert again.listing.key == found.listing.key
    processes.scan()
    assert instances(processes, second.pid) == []


def test_the_own_process_is_not_scanned():
    processes = Processes()
    assert offered(processes.scan(), os.getpid()) == []
    assert offered(Processes(own_pid=-1).scan(), os.getpid()) != []


def test_the_memory_is_bounded():
    processes = Processes(max_remembered=3)
    with mapping() as child:
        first = pairs(processes.scan())
        assert len(first) > 3 and (child.pid, key_of(SAMPLE.stat())) in first
        remembered = {(pid, key) for (pid, _), keys in processes._offered.items() for key in keys}
        assert len(remembered) == processes.remembered == 3
        second = pairs(processes.scan())
        # Each of the child's files is remembered, or else offered again.
        mine = {pair for pair in first if pair[0] == child.pid}
        assert len(mine) >= 2
        assert all((pair in remembered) != (pair in second) for pair in mine)
        assert not remembered & second


def pairs(scan) -> set[tuple[int, bytes]]:
    return {(f.process.pid, f.listing.key) for f in scan.files}


# Maps every file of argv[1] through libc's mmap (Python's mmap keeps a descriptor per map).
MANY = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None)
libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t,
    ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
for name in sorted(os.listdir(sys.argv[1])):
    fd = os.open(os.path.join(sys.argv[1], name), os.O_RDONLY)
    assert libc.mmap(None, 4096, 1, 2, fd, 0) not in (None, 2**64 - 1)  # PROT_READ, MAP_PRIVATE
    os.close(fd)
print("ready", flush=True)
time.sleep(60)
"""


def test_a_process_that_maps_too_many_files_is_cut_and_counted(tmp_path):
    for n in range(MAX_FILES + 100):
        (tmp_path / f"{n:05}").write_bytes(b"x")
    with mapping(str(tmp_path), code=MANY) as child:
        scan = Processes().scan()
    assert len(offered(scan, child.pid)) == MAX_FILES
    assert scan.cut >= 1


# -- gone from disk -------------------------------------------------------------------------------


def test_a_deleted_executable_is_read_through_the_process(tmp_path):
    copy = tmp_path / "sleeper"
    shutil.copy2("/bin/sleep", copy)
    original = copy.read_bytes()
    processes = Processes()
    child = subprocess.Popen([copy, "60"])
    try:
        [exe] = offered(processes.scan(), child.pid, copy)
        assert exe.link == f"/proc/{child.pid}/exe" and not exe.deleted
        assert exe.process.name == "sleeper"
        copy.unlink()
        # Deleting it changed its ctime: the same process offers it again, now deleted.
        [again] = offered(processes.scan(), child.pid, copy)
        [fresh] = offered(Processes().scan(), child.pid, copy)
        for found in (again, fresh):
            assert found.deleted and found.path == str(copy) and not found.memfd
            stream, listing = found.open()
            with stream:
                assert stream.read() == original
                assert found.changed(stream, listing) is None
            assert listing.size == len(original)
    finally:
        child.kill()
        child.wait()
    with pytest.raises(FileNotFoundError):
        fresh.open()  # neither through the process nor by its path


def test_a_memfd_mapping_is_offered_and_read(engine):
    with mapping(str(SAMPLE), "memfd") as child:
        [found] = offered(Processes().scan(), child.pid, "/memfd:rmmscan-test")
        assert found.deleted and found.memfd
        assert (found.folder, found.name) == ("/", "memfd:rmmscan-test")
        stream, _ = found.open()
        with stream:
            assert stream.read() == SAMPLE.read_bytes()
        [row] = judged(engine, found)
    assert row["FolderPath"] == "/memfd:rmmscan-test" and row["FileName"] == "memfd:rmmscan-test"
    assert row["ScanSource"] == "process" and row["ProcessId"] == child.pid
    assert row["Signer"] == "DWSNET srl"


# -- the engine's rows ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    options = Options(
        trusted_roots=(TEST_ROOT,),
        system_roots=False,
        state_dir=tmp_path_factory.mktemp("state"),
    )
    engine = Engine(options, warn=pytest.fail)
    engine.open_state()
    yield engine
    engine.close()


def judged(engine: Engine, candidate: ProcessFile) -> list[dict]:
    outcome = engine.judge_file(candidate)
    assert isinstance(outcome, Outcome) and outcome.problems == []
    return outcome.rows


def test_the_engine_judges_a_mapped_file_as_the_process_s(engine):
    with mapping() as child:
        [found] = offered(Processes().scan(), child.pid, SAMPLE)
        [row] = judged(engine, found)
    assert row["ScanSource"] == "process"
    assert row["ProcessId"] == child.pid
    assert row["ProcessName"] == Path(sys.executable).name
    command = " ".join([sys.executable, "-c", MAPPER, str(SAMPLE)])
    assert row["ProcessCommandLine"] == printable(command)  # the code's lines: quoted
    assert (row["FolderPath"], row["FileName"]) == (str(SAMPLE), SAMPLE.name)
    assert row["Signer"] == "DWSNET srl"
    assert row["RuleId"] == DWSERVICE_RULE


def test_a_hostile_name_command_line_and_path_stay_printable_and_bounded(engine, tmp_path):
    copy = tmp_path / os.fsdecode(b"new\nline\xff.exe")  # maps shows the newline as \012
    shutil.copyfile(SAMPLE, copy)
    name = "evil\nname" + os.fsdecode(b"\xff")
    junk = ["line1\nline2", os.fsdecode(b"\xfe\xff"), "\x1b[31m", "A" * 20_000]
    with mapping(str(copy), name, *junk) as child:
        [found] = offered(Processes().scan(), child.pid, copy)
        assert found.process.name == name
        assert found.process.command_line.endswith(" ".join(junk))
        [row] = judged(engine, found)
    assert row["FolderPathBytes"] == base64.b64encode(os.fsencode(copy)).decode()
    assert row["ProcessName"] == "$'evil\\nname\\xff'"
    line = row["ProcessCommandLine"]
    assert line.isprintable() and line.startswith("$'") and line.endswith("…'")
    assert "line1\\nline2 \\xfe\\xff \\x1b[31m AAAA" in line
    assert MAX_COMMAND_LINE < len(line) < MAX_COMMAND_LINE + 200
    assert row["RuleId"] == DWSERVICE_RULE


# -- processes that end while they are read ---------------------------------------------------


def test_processes_that_end_during_a_scan_are_counted_not_raised():
    stop = threading.Event()
    started = [0]

    def churn():
        while not stop.is_set():
            batch = [subprocess.Popen(["/bin/sleep", "5"]) for _ in range(8)]
            batch += [subprocess.Popen(["/bin/true"]) for _ in range(4)]
            for proc in batch:
                proc.kill()
            for proc in batch:
                proc.wait()
            started[0] += len(batch)

    zombie = subprocess.Popen(["/bin/true"])  # not waited for until the end: a zombie
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    processes = Processes()
    thread = threading.Thread(target=churn)
    with mapping() as child:
        thread.start()
        try:
            seen, scans = [], 0
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline or scans < 5:
                scan = processes.scan()
                scans += 1
                assert 1 <= scan.unreadable < scan.processes  # the zombie, at least
                assert offered(scan, zombie.pid) == []
                listed = [(f.process.pid, f.listing.key) for f in scan.files]
                assert len(listed) == len(set(listed))
                seen += offered(scan, child.pid, SAMPLE)
        finally:
            stop.set()
            thread.join()
    zombie.wait()
    assert len(seen) == 1
    assert started[0] > 50


# -- capabilities ---------------------------------------------------------------------------------

# One scan, in a process of its own: what it offers of the pids given, and its counts.
SCAN = """
import json, sys
from rmmscan import portable
from rmmscan.sources import processes
scan = processes.Processes().scan()
pids = [int(pid) for pid in sys.argv[1:]]
print(json.dumps(dict(
    procfs=portable.HAS_PROCFS,
    files=[[f.process.pid, f.path, f.link, f.deleted] for f in scan.files
           if f.process.pid in pids],
    unreadable=scan.unreadable, missed=scan.missed,
)))
"""


def scan_elsewhere(*pids: int, wrap: tuple[str, ...] = (), **env: str) -> dict:
    done = subprocess.run(
        [*wrap, sys.executable, "-c", SCAN, *map(str, pids)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def capabilities(caps: str) -> tuple[str, ...]:
    return ("setpriv", f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
            f"--bounding-set=-all,{caps}")  # fmt: skip


def test_another_user_s_process_by_capability():
    as_nobody = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    memfd = "/memfd:rmmscan-test"
    with (
        mapping(wrap=as_nobody) as child,
        mapping(str(SAMPLE), "memfd", wrap=as_nobody) as fileless,
    ):
        pids = child.pid, fileless.pid
        exe = [child.pid, os.path.realpath(sys.executable), f"/proc/{child.pid}/exe", False]
        # Name and command line only (psutil would take the executable from the command
        # line here): nothing is offered.
        only_dac = scan_elsewhere(*pids, wrap=capabilities("+dac_read_search"))
        assert only_dac["files"] == [] and only_dac["unreadable"] >= 2
        # Maps and the executable; map_files is the owner's: mapped files by path, and a
        # memfd cannot be reached.
        ptrace = scan_elsewhere(*pids, wrap=capabilities("+sys_ptrace"))
        assert exe in ptrace["files"] and [child.pid, str(SAMPLE), None, False] in ptrace["files"]
        assert memfd not in [path for _, path, _, _ in ptrace["files"]]
        assert ptrace["missed"] >= 1
        # map_files' names, but opening one needs CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN).
        names = scan_elsewhere(*pids, wrap=capabilities("+sys_ptrace,+dac_read_search"))
        assert [child.pid, str(SAMPLE), None, False] in names["files"]
        assert memfd not in [path for _, path, _, _ in names["files"]]
        every = scan_elsewhere(
            *pids, wrap=capabilities("+sys_ptrace,+dac_read_search,+checkpoint_restore")
        )
        [link] = [f[2] for f in every["files"] if f[:2] == [child.pid, str(SAMPLE)]]
        assert link.startswith(f"/proc/{child.pid}/map_files/")
        [link] = [f[2] for f in every["files"] if f[:2] == [fileless.pid, memfd] and f[3]]
        assert link.startswith(f"/proc/{fileless.pid}/map_files/")


def test_the_portable_path_lists_mapped_files_through_psutil():
    with mapping() as child:
        portable = scan_elsewhere(child.pid, RMMSCAN_PORTABLE="1")
    assert portable["procfs"] is False
    assert [child.pid, str(SAMPLE), None, False] in portable["files"]
