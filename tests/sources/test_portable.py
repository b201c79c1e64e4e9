"""The paths Windows takes, run here: RMMSCAN_PORTABLE=1 forces every portable path (threads
for fork, paths for openat, an lstat for O_NOFOLLOW, seek and read for pread). A forced sweep
is watched with strace to take them and to give the rows of a native one; on special files and
unreadable folders it gives what a native sweep gives; stopped at a system call, it catches
files replaced after the listing and files that grow while they are read. The Windows-only
logic that is pure (the long-path form, Windows paths in the path columns, MachineGuid) is
checked on Windows-shaped strings. docs/platforms.md says what this leaves untested.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sweeptree import (
    FILESIG,
    PE_DIR,
    Stopped,
    Tree,
    finish,
    identities,
    scan_many,
    start,
)

from rmmscan.inspect.hashes import PARALLEL_MIN
from rmmscan.rows.build import file_name
from rmmscan.rows.columns import NAMES
from rmmscan.sources.device import device_id_from, machine_guid, usable_id
from rmmscan.sources.dirs import LONG, long_form, long_path
from rmmscan.text import path_columns


def _env(portable: str | None) -> dict[str, str]:
    """This environment with RMMSCAN_PORTABLE as given (None: unset). The test command runs
    this file with it set too, so the normal runs here unset it."""
    env = {k: v for k, v in os.environ.items() if k != "RMMSCAN_PORTABLE"}
    if portable is not None:
        env["RMMSCAN_PORTABLE"] = portable
    return env


_FLAGS = """
import json
from rmmscan import portable
from rmmscan.inspect import hashes
from rmmscan.sources import dirs, walk
print(json.dumps({
    "forced": portable.FORCED,
    "fork": portable.CAN_FORK,
    "openat": portable.HAS_OPENAT,
    "nofollow": bool(portable.O_NOFOLLOW),
    "pread": portable.CAN_PREAD,
    "dirs.HAS_OPENAT": dirs.HAS_OPENAT,
    "walk's default": walk.WalkOptions().use_openat,
    "hashes.CAN_PREAD": hashes.CAN_PREAD,
}))
"""


def _flags(portable: str | None) -> dict[str, bool]:
    done = subprocess.run(
        [sys.executable, "-c", _FLAGS], env=_env(portable), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_forcing_turns_every_facility_off_and_the_modules_follow():
    forced = _flags("1")
    assert forced.pop("forced") is True
    assert not any(forced.values()), forced
    for portable in (None, "", "0"):  # Linux has them all; nothing forced
        native = _flags(portable)
        assert native.pop("forced") is False
        assert all(native.values()), (portable, native)


# -- a forced sweep, watched ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Enough directories for two workers, a detection, unsigned and non-PE files, a name that
    is not UTF-8, a link the sweep does not follow, and a PE large enough (PARALLEL_MIN) to be
    hashed beside its verification where there is pread."""
    root = tmp_path_factory.mktemp("portable") / "tree"
    for i in range(6):
        d = root / f"d{i}" / "sub"
        d.mkdir(parents=True)
        shutil.copy(PE_DIR / "dwsnet-srl.exe", d / "agent.exe")
        shutil.copy(PE_DIR / "unsigned.exe", d.parent / "tool.exe")
        (d / "notes.txt").write_text(f"notes {i}\n")
    shutil.copy(PE_DIR / "dwsnet-ou.exe", root / "dwsnet-ou.exe")
    shutil.copy(PE_DIR / "not-a-pe.bin", root / "not-a-pe.bin")
    shutil.copyfile(PE_DIR / "benign.exe", os.path.join(os.fsencode(root), b"bad\xff.exe"))
    big = root / "d0" / "big.exe"
    data = (PE_DIR / "unsigned.exe").read_bytes()
    big.write_bytes(data + b"\0" * (PARALLEL_MIN + 1 - len(data)))  # an overlay: still a PE
    os.symlink("d1/tool.exe", root / "link.exe")
    (root / "empty").mkdir()
    return root


_CREATE = re.compile(r"^(?:clone3?|fork|vfork)\((?P<args>.*)\) += (?P<child>\d+)$")
_OPENAT = re.compile(r'^openat\((?P<dir>AT_FDCWD|\d+)<[^>]*>, "(?P<name>[^"]*)", (?P<flags>[\w|]+)')
_AT = re.compile(r"^\w+\(\d+<(?P<path>[^>]*)>")


class Trace:
    """An `strace -ff -y` of one rmmscan run: one log per thread and process, so no call is
    split across lines by another's."""

    def __init__(self, directory: Path, tree: Path):
        self.logs = {
            int(p.name.rsplit(".", 1)[1]): p.read_text(errors="replace").splitlines()
            for p in directory.iterdir()
        }
        self.tree = str(tree)
        self.threads: set[int] = set()
        self.processes: set[int] = set()  # made by clone without CLONE_THREAD, fork or vfork
        for lines in self.logs.values():
            for line in lines:
                m = _CREATE.match(line)
                if m:
                    kind = self.threads if "CLONE_THREAD" in m["args"] else self.processes
                    kind.add(int(m["child"]))

    def copies(self) -> set[int]:
        """Processes that run no other program: copies of rmmscan (sweep processes). Others,
        such as ctypes' ldconfig, exec at once."""
        return {
            pid for pid in self.processes
            if not any(line.startswith("execve(") for line in self.logs.get(pid, ()))
        }  # fmt: skip

    def in_tree(self, call: str) -> list[tuple[int, str]]:
        """(thread, line) of each `call` on a path, or a descriptor, inside the tree."""
        out = []
        for tid, lines in self.logs.items():
            for line in lines:
                if not line.startswith(call + "("):
                    continue
                at = _AT.match(line)
                inside = at is not None and at["path"].startswith(self.tree)
                if inside or f'"{self.tree}' in line:
                    out.append((tid, line))
        return out


def _traced_scan(tmp_path: Path, tree: Path, portable: str | None):
    name = "portable" if portable else "native"
    logs = tmp_path / f"strace-{name}"
    logs.mkdir()
    args = ("--format", "jsonl", "--emit", "all", "--jobs", "2", tree)
    proc = start(
        *args,
        state_dir=tmp_path / f"state-{name}",
        prefix=["strace", "-ff", "-y", "-qq", "-o", str(logs / "log"),
                "-e", "trace=clone,clone3,fork,vfork,execve,openat,open,pread64"],
        env=_env(portable),
    )  # fmt: skip
    return finish(proc, args), Trace(logs, tree)


def _stable_lines(stdout: bytes) -> list[bytes]:
    """The JSON lines as written, Timestamp and ReportId blanked, in a fixed order."""
    lines = re.sub(rb'"Timestamp":"[^"]*"', b'"Timestamp":""', stdout)
    lines = re.sub(rb'"ReportId":\d+', b'"ReportId":0', lines)
    return sorted(lines.splitlines())


def test_a_forced_sweep_takes_the_portable_paths_and_gives_the_same_rows(tree, tmp_path):
    native, native_trace = _traced_scan(tmp_path, tree, None)
    forced, forced_trace = _traced_scan(tmp_path, tree, "1")
    assert native.returncode == forced.returncode == 1, (native, forced)  # the detections

    # The trace sees what each way does: the native run is the control.
    assert len(native_trace.copies()) == 2, "the native sweep forks its two processes"
    assert forced_trace.copies() == set(), "a forced sweep forks no sweep process"
    opened = forced_trace.in_tree("openat")
    assert len(opened) > 20
    calls = [_OPENAT.match(line) for _, line in opened]
    assert all(m["dir"] == "AT_FDCWD" and m["name"].startswith(str(tree)) for m in calls)
    assert not any("O_NOFOLLOW" in line for _, line in opened)
    assert any("O_NOFOLLOW" in line and not line.startswith("openat(AT_FDCWD")
               for _, line in native_trace.in_tree("openat"))  # fmt: skip
    assert forced_trace.in_tree("pread64") == []
    assert native_trace.in_tree("pread64") != []
    # Its directories and files were opened by threads of the one rmmscan process.
    assert {tid for tid, _ in opened} <= forced_trace.threads

    # And the rows are the same, byte for byte but for the time and the ReportId.
    assert _stable_lines(forced.stdout) == _stable_lines(native.stdout)
    assert len(forced.rows) == 6 * 2 + 3  # agent.exe and tool.exe each, dwsnet-ou, bad, big
    assert forced.summary == native.summary
    assert forced.summary["symlinks not followed"] == 1


@pytest.fixture
def special(tmp_path):
    """Special files, a folder and a file the scanning user (nobody) may not read, and
    symlinks of every kind; world-readable otherwise (pytest's tmp dirs are private)."""
    base = Path(tempfile.mkdtemp(prefix="rmmscan-portable-", dir="/tmp"))
    base.chmod(0o755)
    tree = base / "tree"
    for d in ("locked", "links", "sub"):
        (tree / d).mkdir(parents=True)
    shutil.copy(PE_DIR / "dwsnet-srl.exe", tree / "sub" / "a.exe")
    shutil.copy(PE_DIR / "dwsnet-ou.exe", tree / "locked" / "hidden.exe")
    shutil.copy(PE_DIR / "unsigned.exe", tree / "secret.exe")
    os.mkfifo(tree / "fifo.exe")
    os.mknod(tree / "zero.exe", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "sock.exe"))
    os.symlink(".", tree / "links" / "self")
    os.symlink("../sub", tree / "links" / "to-sub")
    os.symlink("../sub/a.exe", tree / "links" / "to-a.exe")
    os.symlink("nowhere", tree / "links" / "dangling.exe")
    for path in (tree, tree / "sub", tree / "links", tree / "sub" / "a.exe"):
        path.chmod(0o755)
    (tree / "locked").chmod(0o700)
    (tree / "secret.exe").chmod(0o600)
    for name in ("native", "portable"):
        (base / name).mkdir(mode=0o777)
        (base / name).chmod(0o777)
    yield base
    shutil.rmtree(base)


def test_special_files_and_unreadable_folders_give_what_a_native_sweep_gives(special):
    """Swept by nobody, links followed: the forced sweep reports the same rows, the same
    problems on stderr and the same counts as a native one (an unreadable folder found by
    path is unreadable, not empty; a FIFO opened by path does not block)."""
    runs = scan_many({
        name: dict(args=["-j", "2", "--follow-symlinks", "--emit", "all", "--format", "jsonl",
                         special / "tree"],
                   state_dir=special / name, user=True, env=_env(portable))
        for name, portable in (("native", None), ("portable", "1"))
    })  # fmt: skip
    native, forced = runs["native"], runs["portable"]
    assert native.returncode == forced.returncode == 1, (native, forced)
    assert _stable_lines(forced.stdout) == _stable_lines(native.stdout)
    assert forced.summary == native.summary
    problems = [sorted(line for line in run.stderr.splitlines() if line.startswith("rmmscan: "))
                for run in (native, forced)]  # fmt: skip
    assert problems[0] == problems[1]
    assert len(problems[0]) == 2  # locked/ and secret.exe
    assert forced.summary["unreadable"] == 2
    assert forced.summary["special"] == 3
    assert forced.summary["symlink loops"] == 2  # links/self, and links/to-sub is sub/
    assert forced.summary["dangling symlinks"] == 1


def test_files_replaced_after_listing_are_caught_without_o_nofollow(tmp_path, monkeypatch):
    """The portable sweep stopped once its listing of victims/ is complete (its second
    getdents64), the files replaced, then resumed. A symlink where a file was listed is
    refused by the lstat before the open (PathDir's stand-in for O_NOFOLLOW), a FIFO does not
    block, a device and a folder are not read: each is counted changed, the removed file
    vanished, and the file swapped for another is read as it is now."""
    monkeypatch.setenv("RMMSCAN_PORTABLE", "1")  # for the rmmscan that Stopped starts
    tree = Tree(tmp_path / "tree")
    victims = tree.root / "victims"
    for name in ("gone.exe", "fifo.exe", "device.exe", "dir.exe", "link.exe", "swapped.exe"):
        tree.put(f"victims/{name}", "dwsnet-ou.exe" if name != "swapped.exe" else "benign.exe")
    tree.put("victims/keep.exe", "dwsnet-ou-sha1.exe")
    tree.put("other/x.exe", "dwsnet-srl.exe")
    run = Stopped(
        *("--format", "jsonl", "-j", "2", tree.root),
        state_dir=tmp_path / "s", path=victims, syscall="getdents64", when=2,
        log=tmp_path / "strace.log",
    )  # fmt: skip
    try:
        os.remove(victims / "gone.exe")
        os.remove(victims / "fifo.exe")
        os.mkfifo(victims / "fifo.exe")
        os.remove(victims / "device.exe")
        os.mknod(victims / "device.exe", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero
        os.remove(victims / "dir.exe")
        (victims / "dir.exe").mkdir()
        os.remove(victims / "link.exe")
        os.symlink(PE_DIR / "dwsnet-srl.exe", victims / "link.exe")
        shutil.copyfile(PE_DIR / "dwsnet-srl.exe", tmp_path / "new.exe")
        os.replace(tmp_path / "new.exe", victims / "swapped.exe")
        for name in ("gone.exe", "fifo.exe", "device.exe", "dir.exe", "link.exe"):
            del tree.files[os.fsencode(victims / name)]
        tree.files[os.fsencode(victims / "swapped.exe")] = "dwsnet-srl.exe"
        done = run.resume()
    finally:
        run.kill()
    assert done.returncode == 1, done
    tree.check(done.rows, NAMES)
    assert identities(done.rows) == tree.expected()
    counts = done.summary
    assert counts["files walked"] == 8
    assert counts["vanished"] == 1
    assert counts["changed"] == 4, done.stderr
    assert "unreadable" not in counts, done.stderr


def test_a_file_that_grows_while_it_is_read_without_pread(tmp_path, monkeypatch):
    """Stopped once the portable sweep opened the file (the lstat before the open is the first
    stat of its path, the fstat after it the second): the file grows, and is then hashed by
    seek and read to the size it was listed with, its one byte past that read the same way,
    and it is reported, marked changed_during_read."""
    monkeypatch.setenv("RMMSCAN_PORTABLE", "1")
    tree = Tree(tmp_path / "tree")
    victim = tree.put("a/victim.exe", "dwsnet-ou.exe")
    tree.put("a/other.exe", "dwsnet-srl.exe")
    run = Stopped(
        "-j", "2", "--format", "jsonl", tree.root,
        state_dir=tmp_path / "s", path=victim, syscall="newfstatat", when=2,
        log=tmp_path / "strace.log",
    )  # fmt: skip
    try:
        with open(victim, "ab") as f:
            f.write(b"appended by a writer while rmmscan read the file\n" * 100)
        done = run.resume()
    finally:
        run.kill()
    assert done.returncode == 1, done
    listed = (PE_DIR / "dwsnet-ou.exe").stat().st_size
    grown = Path(os.fsdecode(victim)).read_bytes()
    rows = [r for r in done.rows if r["FolderPath"] == os.fsdecode(victim)]
    assert FILESIG[0] in {r["RuleId"] for r in rows}, done
    for r in rows:
        assert "changed_during_read" in json.loads(r["Anomalies"]), r
        assert r["SHA256"] == hashlib.sha256(grown[:listed]).hexdigest()
        assert r["FileSize"] == listed
    assert done.summary["changed"] == 1, done.stderr


# -- Windows-only logic that is pure ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "verbatim"),
    [
        ("C:\\Users\\a\\b.exe", "\\\\?\\C:\\Users\\a\\b.exe"),
        ("c:/Users/a/../b/./c.exe", "\\\\?\\c:\\Users\\b\\c.exe"),  # normalised: \\?\ is not
        ("C:\\", "\\\\?\\C:\\"),
        ("\\\\server\\share\\dir\\x.dll", "\\\\?\\UNC\\server\\share\\dir\\x.dll"),
        ("//server/share/dir/x.dll", "\\\\?\\UNC\\server\\share\\dir\\x.dll"),
        ("\\\\?\\C:\\already", "\\\\?\\C:\\already"),
        ("\\\\?\\UNC\\server\\share\\x", "\\\\?\\UNC\\server\\share\\x"),
        ("\\\\.\\PhysicalDrive0", "\\\\.\\PhysicalDrive0"),  # a device path: as it is
        # Not absolute: no verbatim form (long_path makes such paths absolute first).
        ("C:relative\\x", "C:relative\\x"),
        ("\\rooted\\no-drive", "\\rooted\\no-drive"),
        ("relative\\x", "relative\\x"),
    ],
)
def test_long_form(path, verbatim):
    assert long_form(path) == verbatim


def test_long_form_of_a_path_past_max_path():
    """The case it is for: a component a program wrote with \\\\?\\ itself, 300 characters
    deep, kept exactly (trailing dots and spaces included: real names may end so)."""
    deep = "C:\\ProgramData\\" + "\\".join(["d" * 60] * 5) + "\\name. "
    assert len(deep) > 260
    assert long_form(deep) == "\\\\?\\" + deep


def test_long_path_leaves_paths_alone_off_windows():
    """Linux has no \\\\?\\ form; the openat way handles paths past PATH_MAX there."""
    long = "/" + "/".join(["d" * 100] * 5)
    assert len(long) >= LONG
    assert long_path(long) == long
    assert long_path("C:\\" + "x" * 300) == "C:\\" + "x" * 300


@pytest.mark.parametrize(
    ("folder_path", "name"),
    [
        ("C:\\Program Files\\DWAgent\\dwagent.exe", "dwagent.exe"),
        ("c:/Users/me/Downloads/dwagent.exe", "dwagent.exe"),
        ("C:\\Users\\me/mixed\\dwagsvc.exe", "dwagsvc.exe"),
        ("D:dwaglnc.exe", "dwaglnc.exe"),  # drive-relative
        ("\\\\fileserver\\tools\\dwagupd.dll", "dwagupd.dll"),
        ("\\\\?\\C:\\very\\long\\dwagent.exe", "dwagent.exe"),
        ("\\\\?\\UNC\\server\\share\\dwagent.exe", "dwagent.exe"),
        ("C:\\Users\\Jürgen\\Desktop\\インストーラ.exe", "インストーラ.exe"),
        # POSIX: a backslash is part of a name
        ("/home/me/odd\\name.exe", "odd\\name.exe"),
        ("/mnt/c:/x.exe", "x.exe"),
    ],
)
def test_file_name_of_windows_and_posix_paths(folder_path, name):
    assert file_name(folder_path) == name


_WINDOWS_FSENCODE = lambda p: p.encode("utf-8", "surrogatepass")  # noqa: E731 (PEP 529)


def test_path_columns_of_windows_paths():
    for path in (
        "C:\\Program Files (x86)\\DWAgent\\runtime\\dwagent.exe",
        "\\\\server\\share\\Jürgen\\インストーラ.exe",
        "C:\\Users\\me\\😀.exe",  # outside the BMP: a surrogate pair in UTF-16, one character
    ):
        assert path_columns(path, _WINDOWS_FSENCODE) == (path, None)


def test_path_columns_of_a_windows_name_with_an_unpaired_surrogate():
    """NTFS names are UTF-16 and need not be valid: Python gives the unpaired surrogate as is,
    and os.fsencode on Windows gives WTF-8. The row shows U+FFFD and keeps the exact bytes,
    and those give back the exact name (os.fsdecode on Windows)."""
    path = "C:\\Users\\me\\bad\ud800name.exe"
    shown, raw = path_columns(path, _WINDOWS_FSENCODE)
    assert shown == "C:\\Users\\me\\bad\ufffd\ufffd\ufffdname.exe"
    assert base64.b64decode(raw).decode("utf-8", "surrogatepass") == path
    assert file_name(shown) == "bad\ufffd\ufffd\ufffdname.exe"


REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD = 1, 2, 3, 4  # winreg's values (winerror.h)
GUID = "5c6d3f3a-8b1e-4e0f-9a2b-0c7d1e2f3a4b"


@pytest.mark.parametrize(
    ("value", "kind", "machine"),
    [
        (GUID, REG_SZ, GUID),
        (f" {GUID}\r\n", REG_SZ, GUID),
        (GUID, REG_EXPAND_SZ, GUID),
        ("", REG_SZ, None),
        ("   ", REG_SZ, None),
        (GUID.encode(), REG_BINARY, None),  # a damaged or tampered key: no identity
        (12345, REG_DWORD, None),
    ],
)
def test_machine_guid(value, kind, machine):
    assert machine_guid(value, kind) == machine


def test_device_id_from_machine_guid_is_stable():
    """DeviceId is what a Windows machine's rows are grouped by: the same for the GUID in any
    case, and pinned, since changing its derivation would make every machine a new device."""
    expected = "e7e39d9369ebcd26ac0eb1d03a30545c75ca8119"  # sha1("rmmscan-device:" + GUID)
    assert device_id_from(machine_guid(GUID, REG_SZ)) == expected
    assert device_id_from(machine_guid(f"{GUID.upper()}\r\n", REG_SZ)) == expected


def test_a_machine_id_that_names_no_machine():
    assert usable_id("0123456789abcdef0123456789abcdef\n") == "0123456789abcdef0123456789abcdef"
    assert usable_id("uninitialized\n") is None  # machine-id(5): an image not yet booted
    assert usable_id("\n") is None
