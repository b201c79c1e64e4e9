"""`rmmscan image -j N`: a live volume's folders shared among N scan processes
(engine/imagejobs.py). The same rows whatever N, container and file system (a libyal handle
is reopened in each process); a process killed mid-scan costs nothing (its folders are
handed out again); folders held by two processes that died are named, and nothing else is
lost; processes that cannot reopen the image leave the volume to the scanning process; the
cache is read by every process; SIGTERM ends them all. Real images built by
tests/images/build.py, the real command, real signals.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from rmmscan.engine.imagejobs import CHUNK_FOLDERS
from tests.images import exfat
from tests.images.build import (
    ext_volume,
    fat_volume,
    ntfs_volume,
    partitioned,
    to_e01,
    to_vmdk,
)
from tests.images.tree import make_tree

from conftest import SAMPLES, TEST_ROOT

RMMSCAN = [sys.executable, "-m", "rmmscan"]
FOLDERS = 150
NARROW = 40
SIGNED = SAMPLES / "pe" / "dwsnet-ou.exe"


def command(image: Path, state: Path, *extra: str) -> list[str]:
    return [*RMMSCAN, "image", str(image), "--format", "jsonl", "--no-cache", "--no-progress",
            "--state-dir", str(state), "--trusted-roots", str(TEST_ROOT), *extra]  # fmt: skip


def rows_of(stdout: bytes | None) -> list[dict]:
    return [json.loads(line) for line in (stdout or b"").decode().splitlines() if line]


def comparable(rows: list[dict]) -> Counter:
    """Every column but the two a scan stamps (Timestamp, ReportId)."""
    drop = ("Timestamp", "ReportId")
    return Counter(
        json.dumps({k: v for k, v in row.items() if k not in drop}, sort_keys=True) for row in rows
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def windows(work):
    """The shared Windows-like tree (hives, a named stream, Unicode and long names)."""
    tree = make_tree(work / "tree")
    return ntfs_volume(tree, work / "ntfs.img", ads=tree.ads)


@pytest.fixture(scope="module")
def wide_tree(work) -> Path:
    """FOLDERS folders, each with a DWSNET-signed PE, a text file and a subfolder with
    another: long enough a scan for a test to stop its processes in the middle."""
    root = work / "wide"
    for i in range(FOLDERS):
        folder = root / f"d{i:03}"
        (folder / "sub").mkdir(parents=True)
        shutil.copyfile(SIGNED, folder / "agent.exe")
        shutil.copyfile(SIGNED, folder / "sub" / "helper.exe")
        (folder / "notes.txt").write_text(f"folder {i}\n")
    return root


@pytest.fixture(scope="module")
def wide(wide_tree, work) -> Path:
    return ntfs_volume(wide_tree, work / "wide.img")


@pytest.mark.parametrize("kind", ["raw", "e01", "vmdk"])
def test_every_number_of_processes_gives_the_same_rows(kind, windows, work):
    if kind == "raw":
        image = windows
    elif kind == "e01":
        image = to_e01(windows, work / "e01" / "disk")
    else:
        gpt = partitioned([windows], work / "gpt.img", "gpt")
        image = to_vmdk(gpt, work / "disk.vmdk", split=True)
    runs = {}
    for jobs in (1, 2, 3):
        proc = subprocess.run(command(image, work / f"state-{kind}-{jobs}", "-j", str(jobs),
                                      "--emit", "all", "--deleted"),
                              capture_output=True, timeout=180)  # fmt: skip
        assert proc.returncode == 1, proc.stderr.decode()
        assert b"Traceback" not in proc.stderr
        runs[jobs] = comparable(rows_of(proc.stdout))
    assert sum(runs[1].values()) > 10
    assert any('"RuleId": ""' not in row for row in runs[1])  # detections among them
    assert runs[1] == runs[2] == runs[3]


def test_a_folder_two_names_lead_to_is_scanned_once_whatever_the_processes(work):
    """A damaged ext4: debugfs links the folder `a/shared` again into each of the folders
    of `b`, and the root into `b` (a loop). `b` holds more folders than one process's
    chunk, so some of its folders are handed out alone, and the process given one reaches
    `shared` under another name: the scanning process drops what it has seen already. The
    file below is reported once, from one of its names, every other file once, and the
    loop ends, whatever the number of processes."""
    tree = work / "twice"
    for side in ("a", "b"):
        for i in range(CHUNK_FOLDERS + 8):
            (tree / side / f"s{i:02}").mkdir(parents=True)
            (tree / side / f"s{i:02}" / "f.txt").write_text(f"{side} {i}\n")
    (tree / "a" / "shared").mkdir()
    shutil.copyfile(SIGNED, tree / "a" / "shared" / "agent.exe")
    image = ext_volume(tree, work / "twice.img")
    damaged = work / "twice-damaged.img"
    shutil.copyfile(image, damaged)
    requests = work / "twice.debugfs"
    links = [f"ln /a/shared /b/s{i:02}/again" for i in range(CHUNK_FOLDERS + 8)]
    requests.write_text("\n".join([*links, "ln / /b/back", ""]))
    subprocess.run(["debugfs", "-w", "-f", str(requests), str(damaged)], check=True,
                   capture_output=True)  # fmt: skip
    listed = subprocess.run(["fls", "-r", str(damaged)], capture_output=True,
                            check=True).stdout.decode()  # fmt: skip
    assert listed.count("\tagain\n") == CHUNK_FOLDERS + 8 and "\tback\n" in listed, listed
    runs = {}
    for jobs in (1, 2, 3):
        argv = command(damaged, work / f"state-twice-{jobs}", "-j", str(jobs), "--emit", "all")
        proc = subprocess.run(argv, capture_output=True, timeout=180)
        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        rows = rows_of(proc.stdout)
        assert [r["FileName"] for r in rows] == ["agent.exe"], rows
        assert rows[0]["FolderPath"].split("\\")[-2] in ("shared", "again"), rows
        assert "files walked: 81 " in err, err
        drop = ("Timestamp", "ReportId", "FolderPath")
        runs[jobs] = {k: v for k, v in rows[0].items() if k not in drop}
    assert runs[1] == runs[2] == runs[3]


def test_every_file_system_gives_the_same_rows_with_processes(work):
    """NTFS, FAT32, ext4 and exFAT in one GPT, each holding the same tree of NARROW folders:
    each partition's folders shared among three processes give the rows one process gives,
    every PE of every partition found once."""
    tree = work / "narrow"
    for i in range(NARROW):
        (tree / f"d{i:03}" / "sub").mkdir(parents=True)
        shutil.copyfile(SIGNED, tree / f"d{i:03}" / "agent.exe")
        shutil.copyfile(SIGNED, tree / f"d{i:03}" / "sub" / "helper.exe")
    volumes = [
        ntfs_volume(tree, work / "narrow-ntfs.img"),
        fat_volume(tree, work / "narrow-fat.img", 32),
        ext_volume(tree, work / "narrow-ext4.img", "ext4", size_mib=16),  # a block a folder
        exfat.exfat_volume(tree, work / "narrow-exfat.img"),
    ]
    image = partitioned(volumes, work / "narrow-gpt.img", "gpt")
    runs = {}
    for jobs in (1, 3):
        argv = command(image, work / f"state-fs-{jobs}", "-j", str(jobs), "--emit", "all")
        proc = subprocess.run(argv, capture_output=True, timeout=300)
        assert proc.returncode == 1, proc.stderr.decode()
        runs[jobs] = comparable(rows_of(proc.stdout))
    assert runs[1] == runs[3]
    found = Counter(json.loads(row)["Partition"] for row in runs[3].elements())
    assert found == {1: 2 * NARROW, 2: 2 * NARROW, 3: 2 * NARROW, 4: 2 * NARROW}


def start(image: Path, state: Path) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """rmmscan scanning ``image`` with two processes, both stopped (SIGSTOP) as soon as
    they exist: the scan cannot end until the test lets it."""
    proc = subprocess.Popen(command(image, state, "-j", "2", "--emit", "all"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    children: list[psutil.Process] = []
    while len(children) < 2:
        assert time.monotonic() < deadline, "no scan processes"
        assert proc.poll() is None, proc.communicate()
        children = parent.children()
        time.sleep(0.002)
    for child in children:
        child.send_signal(signal.SIGSTOP)
    time.sleep(0.3)  # the parent has handed out what it hands out
    return proc, children


def finish(proc: subprocess.Popen) -> tuple[int, list[dict], str]:
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, rows_of(out), err.decode()


def lost_folders(err: str) -> set[str]:
    mark = ": the scan process reading this folder ended (killed by SIGKILL), as one had before"
    return {line[len("rmmscan: ") :].split(mark)[0] for line in err.splitlines() if mark in line}


def check_nothing_else_lost(rows: list[dict], lost: set[str]) -> None:
    """Every PE of the volume is in the rows once, but for those in or below a lost folder."""
    found = Counter(r["FolderPath"] for r in rows if r["Signer"] == "DWSNET OÜ")
    for i in range(FOLDERS):
        folder = f"\\\\?\\image\\p0\\d{i:03}"
        for path in (f"{folder}\\agent.exe", f"{folder}\\sub\\helper.exe"):
            gone = any(path.startswith(where.rstrip("\\") + "\\") for where in lost)
            assert found[path] == (0 if gone else 1), path


def test_a_killed_scan_process_costs_nothing(wide, work):
    """Its folders are handed out again, to the other process and to the one that
    replaces it: every file is reported, once."""
    proc, (victim, other) = start(wide, work / "state-kill")
    victim.send_signal(signal.SIGKILL)
    other.send_signal(signal.SIGCONT)
    code, rows, err = finish(proc)
    assert code == 1, err
    assert "ended" not in err, err
    check_nothing_else_lost(rows, set())
    assert len(rows) == 2 * FOLDERS


def test_folders_whose_processes_die_twice_are_said_and_the_rest_is_scanned(wide, work):
    """Each scan process is stopped and, 0.3 s later (time to be handed its folders),
    killed: the first two 50 ms after they appear (time to answer the root, handed out
    alone, and be handed chunks of its subfolders), their replacements as soon as they
    appear (before they can answer a chunk: the first takes the import of the verification
    libraries). The folders the first held are handed out once more, to the replacements,
    then said; when no more processes are started, this process walks the rest itself."""
    out = work / "die-twice.jsonl"
    with open(out, "wb") as rows_file:  # not a pipe: nobody reads it until the end
        proc = subprocess.Popen(command(wide, work / "state-all", "-j", "2", "--emit", "all"),
                                stdout=rows_file, stderr=subprocess.PIPE)  # fmt: skip
    parent = psutil.Process(proc.pid)
    appeared: dict[int, float] = {}
    stopped: dict[int, float] = {}
    killed: set[int] = set()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            children = parent.children()
        except psutil.NoSuchProcess:
            break
        now = time.monotonic()
        for child in children:
            pid = child.pid
            head = 0.05 if len(appeared) < 2 or pid in list(appeared)[:2] else 0.0
            appeared.setdefault(pid, now)
            with contextlib.suppress(psutil.NoSuchProcess):
                if pid not in stopped and now - appeared[pid] >= head:
                    child.send_signal(signal.SIGSTOP)
                    stopped[pid] = now
                elif pid in stopped and pid not in killed and now - stopped[pid] >= 0.3:
                    child.send_signal(signal.SIGKILL)
                    killed.add(pid)
        time.sleep(0.001)
    code, _, err = finish(proc)
    rows = rows_of(out.read_bytes())
    assert b"Traceback" not in err.encode()
    # Two, then each replaced once, then no more; a replacement started when nothing is
    # left to hand out ends before it is seen.
    assert 3 <= len(killed) <= 4, err
    lost = lost_folders(err)
    assert lost, err
    check_nothing_else_lost(rows, lost)
    assert code == (1 if any(r["RuleId"] for r in rows) else 2), err


def test_sigterm_ends_the_scan_and_its_processes(wide, work):
    proc, children = start(wide, work / "state-term")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, rows, err = finish(proc)
    assert time.monotonic() - started < 10, err
    assert code == (1 if any(r["RuleId"] for r in rows) else 2), err
    assert b"Traceback" not in err.encode()
    assert "interrupted" in err.lower(), err
    assert len(rows) < 2 * FOLDERS
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


def test_by_default_a_small_file_system_is_walked_in_this_process():
    from rmmscan.engine.processes import SMALL_RECORDS, jobs_for

    cpus = min(os.cpu_count() or 1, 4)
    assert jobs_for(None, SMALL_RECORDS - 1) == 1
    assert jobs_for(None, SMALL_RECORDS) == cpus
    assert jobs_for(3, 10) == 3  # asked for: always


def test_a_second_scan_with_processes_comes_from_the_cache(wide, work):
    """The processes read the scan cache through connections of their own (Cache.forked);
    what the first scan stored, the second finds: every file, the same rows."""
    state = work / "state-cache"
    runs = []
    for _ in range(2):
        argv = [a for a in command(wide, state, "-j", "2", "--emit", "all") if a != "--no-cache"]
        proc = subprocess.run(argv, capture_output=True, timeout=180)
        assert proc.returncode == 1, proc.stderr.decode()
        runs.append((comparable(rows_of(proc.stdout)), proc.stderr.decode()))
    (first, _), (second, err) = runs
    assert first == second
    assert sum(first.values()) == 2 * FOLDERS
    cached = int(err.split("from the cache: ")[1].split()[0].replace(",", ""))
    assert cached == 3 * FOLDERS, err  # every file: two PE files and a text file a folder


def _holds(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.path.realpath(fd) == str(path) for fd in fds.iterdir())
    except OSError:  # an fd closed while it was read
        return False


def _renamed_before_the_processes_start(image: Path, away: Path, argv: list[str]):
    """rmmscan started on ``image``, which is renamed to ``away`` once the scanning process
    holds it open and before it starts its processes; (status, rows, stderr)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "the image never opened"
        if _holds(proc.pid, image):
            proc.send_signal(signal.SIGSTOP)
            if _holds(proc.pid, image):  # still open, and stopped before its processes start
                break
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.001)
    assert not psutil.Process(proc.pid).children()
    image.rename(away)
    proc.send_signal(signal.SIGCONT)
    return finish(proc)


def test_processes_that_cannot_open_the_image_leave_it_to_this_process(wide, work):
    """A VMDK is opened again in each process (a libyal handle's file offset would be
    shared): renamed before they start, they cannot open it; the scanning process says so
    once and walks the volume itself."""
    image = to_vmdk(wide, work / "renamed-source.vmdk", split=False)
    argv = command(image, work / "state-unable", "-j", "2", "--emit", "all")
    code, rows, err = _renamed_before_the_processes_start(image, work / "renamed-away.vmdk", argv)
    assert code == 1, err
    assert err.count("a scan process could not open the image again") == 1, err
    check_nothing_else_lost(rows, set())


def test_processes_read_a_raw_image_through_the_scanning_process_objects(wide, work):
    """A raw image is read by pread: the processes read it through the scanning process's
    objects, never opening it again, so an image renamed before they start is still scanned
    by them, whole. (An E01 is shared too; when its file is opened, held and released is
    not something a test can stop at from outside: test_ewf_chunks.py tests its fork.)"""
    image = work / "shared-source.img"
    shutil.copyfile(wide, image)
    argv = command(image, work / "state-shared", "-j", "2", "--emit", "all")
    away = work / "shared-away.img"
    code, rows, err = _renamed_before_the_processes_start(image, away, argv)
    assert code == 1, err
    assert "could not open the image again" not in err, err
    check_nothing_else_lost(rows, set())
    assert len(rows) == 2 * FOLDERS
