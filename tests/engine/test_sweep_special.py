"""The sweep on what a live file system holds besides regular files, end to end: FIFOs,
sockets and devices; symlink loops and dangling links; unreadable folders and files (as an
unprivileged user); paths deeper than PATH_MAX; names that are not UTF-8, or that carry
newlines and terminal escape sequences; another file system mounted inside the tree; and
files that vanish or change while the sweep runs (rmmscan is stopped at the exact system
call with strace, the tree is changed, and it is resumed).

Nothing here may block, crash or change the exit status: a detection elsewhere in the tree
still exits 1, and what could not be read is counted and, when unreadable, listed.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import pty
import re
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import termios
import threading
from pathlib import Path

import pytest
from sweeptree import (
    FILESIG,
    NOBODY,
    PE_DIR,
    Stopped,
    Tree,
    csv_rows,
    finish,
    identities,
    path_text,
    scan,
    scan_command,
    scan_many,
    stable_set,
)

from rmmscan.rows.columns import NAMES

EVIL = "evil\x1b[31m\nname.exe"  # a colour escape and a newline
EVIL_SHOWN = "evil\\x1b[31m\\nname.exe"
OSC = "\x1b]0;pwned\x07title.exe"  # sets a terminal's title
OSC_SHOWN = "\\x1b]0;pwned\\x07title.exe"
RED_DIR = "\x1b[31mred-dir\n"
RED_DIR_SHOWN = "\\x1b[31mred-dir\\n"


def quoted(shown: str) -> str:
    """A name that needs escaping is shown whole in bash's $'…' quotes (text.printable)."""
    return f"$'{shown}'"


DEEP = [f"{i:02d}" + "x" * 198 for i in range(22)]  # 22 x 201 bytes: past PATH_MAX (4096)


@pytest.fixture(scope="module")
def world():
    """A world-readable directory (pytest's own tmp dirs are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="rmmscan-special-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)  # root: the chmod 000 folders are no obstacle


@pytest.fixture(scope="module")
def special(world):
    root = world / "tree"
    outside = world / "outside"
    (outside / "dir").mkdir(parents=True)
    shutil.copyfile(PE_DIR / "dwsnet-srl.exe", outside / "linked.exe")
    shutil.copyfile(PE_DIR / "dwsnet-ou.exe", outside / "dir" / "inner.exe")
    tree = Tree(root)
    tree.put("samples/ok.exe", "dwsnet-ou.exe")
    tree.put("samples/clean.exe", "benign.exe")
    # special files: a sweep that opened any of them would block (FIFO), fail, or read
    # /dev/zero for ever
    sp = root / "special"
    sp.mkdir()
    os.mkfifo(sp / "fifo.exe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sp / "sock.exe"))
    os.mknod(sp / "zero.exe", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    os.mknod(sp / "loop0.exe", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    # symbolic links: loops to itself and to an ancestor, a two-link cycle, a dangling one,
    # and links out of the tree to a file and to a folder
    links = root / "links"
    links.mkdir()
    os.symlink(".", links / "self")
    os.symlink("..", links / "up")
    os.symlink("b", links / "a")
    os.symlink("a", links / "b")
    os.symlink("nowhere", links / "dangling.exe")
    os.symlink(outside / "linked.exe", links / "to-sample.exe")
    os.symlink(outside / "dir", links / "to-dir")
    # unreadable to an unprivileged user: a folder, and files with ordinary and hostile names
    locked = {tree.put("locked-dir/hidden.exe", "dwsnet-srl.exe")}
    tree.put("open-dir/readable.exe", "dwsnet-srl.exe")
    for name in ("locked.exe", "locked-" + EVIL, b"locked\xff.exe"):
        path = tree.put(os.path.join(b"open-dir", os.fsencode(name)), "dwsnet-srl.exe")
        os.chmod(path, 0)
        locked.add(path)
    (root / "locked-dir").chmod(0)
    # hostile and undecodable names
    tree.put(b"weird/bad\xff\xfe.exe", "dwsnet-ou.exe")
    tree.put(b"weird/caf\xe9/x.exe", "dwsnet-srl.exe")
    tree.put(f"weird/{EVIL}", "selfsigned-dwsnet-ou.exe")
    tree.put(f"weird/{OSC}", "dwsnet-srl.exe")
    tree.put(f"weird/{RED_DIR}/inner.exe", "dwagent-lookalike-selfsigned.exe")
    # deeper than PATH_MAX, and a file on the way past Windows' MAX_PATH
    tree.put_deep("deep", DEEP[:2], "mid.exe", "dwsnet-srl.exe")
    tree.put_deep("deep", DEEP, "bottom.exe", "dwsnet-ou.exe")
    for state in (world / "state-nobody", world / "state-nobody-2"):
        state.mkdir()
        os.chown(state, NOBODY, NOBODY)
    followed = Tree(root, dict(tree.files))
    followed.files[os.fsencode(links / "to-sample.exe")] = "dwsnet-srl.exe"
    followed.files[os.fsencode(links / "to-dir" / "inner.exe")] = "dwsnet-ou.exe"
    return tree, followed, locked, world / "state-nobody"


@pytest.fixture(scope="module")
def runs(world, special, tmp_path_factory):
    tree, _, _, nobody_state = special
    tmp = tmp_path_factory.mktemp("special-runs")
    t = tree.root
    return scan_many(
        {
            "root": dict(args=["--format", "jsonl", "-j", "4", t], state_dir=tmp / "s1"),
            "follow": dict(
                args=["--format", "jsonl", "--follow-symlinks", t], state_dir=tmp / "s2"
            ),
            "nobody": dict(args=["--format", "jsonl", t], state_dir=nobody_state, user=True),
            "nobody-root": dict(
                args=[t / "locked-dir"], state_dir=world / "state-nobody-2", user=True
            ),
            "table": dict(
                args=["--format", "table", "--no-progress", t / "weird", t / "\x1b[31mgone\n"],
                state_dir=tmp / "s4",
            ),
            "csv": dict(args=["--format", "csv", "-q", t / "weird"], state_dir=tmp / "s5"),
        }
    )


def test_the_venv_is_usable_by_an_unprivileged_user(tmp_path):
    """The unprivileged runs below need this; if it fails, fix the machine, not the test."""
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         *scan_command("--version", state_dir=tmp_path)[:3], "--version"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("rmmscan ")


# -- as root: special files, links, names, depth ------------------------------------------------


def test_special_files_are_skipped_and_counted(special, runs):
    tree, _, _, _ = special
    done = runs["root"]
    assert done.returncode == 1, done
    tree.check(done.rows, NAMES)
    assert identities(done.rows) == tree.expected("detections")
    counts = done.summary
    assert counts["special"] == 4  # FIFO, socket, character and block device
    assert counts["symlinks not followed"] == 7
    assert counts["files walked"] == len(tree.files)
    assert "not read:" not in done.stderr
    assert not re.search(r"^rmmscan: ", done.stderr, re.M), "nothing to complain about"


def test_undecodable_names_are_kept_exactly(special, runs):
    tree, _, _, _ = special
    rows = {r["FolderPath"]: r for r in runs["root"].rows}
    for raw in (b"weird/bad\xff\xfe.exe", b"weird/caf\xe9/x.exe"):
        path = os.fsencode(tree.root) + b"/" + raw
        text, b64 = path_text(path)
        assert "\ufffd" in text and b64 is not None
        row = rows[text]
        assert row["FolderPathBytes"] == b64
        assert base64.b64decode(row["FolderPathBytes"]) == path
        assert os.path.isfile(base64.b64decode(row["FolderPathBytes"]))
    assert rows[f"{tree.root}/weird/bad\ufffd\ufffd.exe"]["FileName"] == "bad\ufffd\ufffd.exe"
    # names with control characters are exact in JSON, and JSON Lines stays one row a line
    assert rows[f"{tree.root}/weird/{EVIL}"]["FileName"] == EVIL
    assert rows[f"{tree.root}/weird/{OSC}"]["FileName"] == OSC
    assert rows[f"{tree.root}/weird/{RED_DIR}/inner.exe"]["FileName"] == "inner.exe"
    assert runs["root"].stdout.isascii()
    assert len(runs["root"].text.splitlines()) == len(runs["root"].rows)


def test_paths_deeper_than_path_max(special, runs):
    tree, _, _, _ = special
    rows = {r["FileName"]: r for r in runs["root"].rows}
    bottom = f"{tree.root}/deep/" + "/".join(DEEP) + "/bottom.exe"
    mid = f"{tree.root}/deep/" + "/".join(DEEP[:2]) + "/mid.exe"
    assert len(os.fsencode(bottom)) > 4096 and 260 < len(mid) < 4096
    assert rows["bottom.exe"]["FolderPath"] == bottom
    assert rows["mid.exe"]["FolderPath"] == mid
    assert rows["bottom.exe"]["RuleId"] == rows["mid.exe"]["RuleId"] == FILESIG[0]


def test_follow_symlinks(special, runs):
    tree, followed, _, _ = special
    done = runs["follow"]
    assert done.returncode == 1, done
    followed.check(done.rows, NAMES)
    assert identities(done.rows) == followed.expected("detections")
    paths = {r["FolderPath"] for r in done.rows}
    assert f"{tree.root}/links/to-sample.exe" in paths  # reported where it was found
    assert f"{tree.root}/links/to-dir/inner.exe" in paths
    assert f"{tree.root}/links/to-sample.exe" not in {r["FolderPath"] for r in runs["root"].rows}
    counts = done.summary
    assert counts["symlink loops"] == 2  # self -> ., up -> ..
    assert counts["dangling symlinks"] == 3  # a <-> b, dangling.exe
    assert counts["special"] == 4
    assert "symlinks not followed" not in counts


def test_table_and_problem_lines_escape_hostile_names(special, runs):
    tree, _, _, _ = special
    done = runs["table"]
    assert done.returncode == 1, done  # a detection wins over the missing root
    text = done.text
    for out in (text, done.stderr):
        assert "\x1b" not in out and "\x07" not in out
    assert f"rmmscan: $'{tree.root}/\\x1b[31mgone\\n': No such file or directory\n" in done.stderr
    firsts = sorted(block.split("\n", 1)[0] for block in text.split("\n\n") if block.strip())
    weird = f"{tree.root}/weird"
    assert firsts == sorted(  # one block per file, however many rules it matched
        [
            quoted(f"{weird}/{EVIL_SHOWN}"),
            quoted(f"{weird}/{OSC_SHOWN}"),
            quoted(f"{weird}/bad\\xff\\xfe.exe"),
            quoted(f"{weird}/caf\\xe9/x.exe"),
            quoted(f"{weird}/{RED_DIR_SHOWN}/inner.exe"),
        ]
    )
    assert done.summary["unreadable roots"] == 1


def test_csv_keeps_hostile_names_exact(special, runs):
    tree, _, _, _ = special
    done = runs["csv"]
    assert done.returncode == 1, done
    rows = csv_rows(done.text)
    weird = f"{tree.root}/weird"
    by_path = {r["FolderPath"]: r for r in rows}
    assert by_path[f"{weird}/{EVIL}"]["FileName"] == EVIL
    assert by_path[f"{weird}/{OSC}"]["FileName"] == OSC
    raw = os.fsencode(weird) + b"/bad\xff\xfe.exe"
    assert by_path[path_text(raw)[0]]["FolderPathBytes"] == path_text(raw)[1]
    assert by_path[f"{weird}/{EVIL}"]["FolderPathBytes"] == ""
    assert len(rows) == len(tree.expected(under=os.fsencode(weird) + b"/"))


@pytest.mark.parametrize("columns", [300, 0], ids=["300-columns", "size-unknown"])
def test_progress_line_on_a_terminal_escapes_the_root(special, tmp_path, columns):
    """A terminal that reports 0 columns (a pty nobody sized, a serial console) must get the
    whole line too: the width is unknown, not negative."""
    tree, _, _, _ = special
    root = tree.root / "weird" / RED_DIR
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    cmd = scan_command("--format", "jsonl", "-o", tmp_path / "rows.jsonl", root,
                       state_dir=tmp_path / "s")  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, cwd="/")
    os.close(slave)
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    done = finish(proc, ["pty"])
    reader.join(30)
    os.close(master)
    seen = b"".join(chunks).decode("utf-8")
    assert done.returncode == 1, seen
    assert "\r\x1b[K" in seen, "a progress line was drawn (and erased)"
    lines = re.findall(r"\r\x1b\[K(\d+ files [^\r]*)", seen)
    # (a line drawn before the walk reached the root may name no root yet)
    assert any(x.endswith(quoted(f"{tree.root}/weird/{RED_DIR_SHOWN}")) for x in lines), lines
    assert "\x1b[31m" not in seen and "red-dir\n" not in seen.replace("\r\n", "\n")


# -- as an unprivileged user ----------------------------------------------------------------------


def test_unreadable_folders_and_files_are_listed_and_counted(special, runs):
    tree, _, locked, _ = special
    done = runs["nobody"]
    assert done.returncode == 1, done  # the readable detections
    hidden = {path_text(p)[0] for p in locked}
    expected = [e for e in tree.expected() if e[0] not in hidden]
    assert len(expected) < len(tree.expected())
    tree.check(done.rows, NAMES)
    assert identities(done.rows) == expected
    r = tree.root
    problems = sorted(line for line in done.stderr.splitlines() if line.startswith("rmmscan: "))
    assert problems == sorted(
        [
            f"rmmscan: {r}/locked-dir: Permission denied",
            f"rmmscan: {r}/open-dir/locked.exe: Permission denied",
            "rmmscan: " + quoted(f"{r}/open-dir/locked-{EVIL_SHOWN}") + ": Permission denied",
            "rmmscan: " + quoted(f"{r}/open-dir/locked\\xff.exe") + ": Permission denied",
        ]
    )
    assert "\x1b" not in done.stderr
    counts = done.summary
    assert counts["unreadable"] == 4
    assert counts["special"] == 4
    assert "not read: unreadable: 4" in done.stderr
    # the state written by that user is in the directory it was given
    assert sorted(p.name for p in special[3].iterdir() if p.suffix == ".sqlite") == [
        "cache.sqlite", "state.sqlite",
    ]  # fmt: skip


def test_an_unreadable_root_exits_2(special, runs):
    tree, _, _, _ = special
    done = runs["nobody-root"]
    assert done.returncode == 2, done
    assert f"rmmscan: {tree.root}/locked-dir: Permission denied\n" in done.stderr
    assert done.summary["unreadable roots"] == 1
    assert done.stdout == b""


# -- another file system inside the tree -------------------------------------------------------


@pytest.fixture
def mounted(world):
    base = world / "mounts"
    tree = Tree(base)
    tree.put("disk/a.exe", "dwsnet-ou.exe")
    mnt = base / "disk" / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "none", str(mnt)], check=True)
    try:
        tree.put("disk/mnt/b.exe", "dwsnet-srl.exe")
        yield tree
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_one_file_system(mounted, tmp_path):
    disk = mounted.root / "disk"
    done = scan_many(
        {
            "cross": dict(args=["--format", "jsonl", disk], state_dir=tmp_path / "a"),
            "x": dict(args=["--format", "jsonl", "-x", disk], state_dir=tmp_path / "b"),
            "x-mount": dict(
                args=["--format", "jsonl", "-x", disk / "mnt"], state_dir=tmp_path / "c"
            ),
        }
    )
    for d in done.values():
        assert d.returncode == 1, d
        mounted.check(d.rows, NAMES)
    assert identities(done["cross"].rows) == mounted.expected()
    assert {r["FolderPath"] for r in done["cross"].rows} == {f"{disk}/a.exe", f"{disk}/mnt/b.exe"}
    assert {r["FolderPath"] for r in done["x"].rows} == {f"{disk}/a.exe"}
    assert done["x"].summary["other file systems skipped"] == 1
    assert "other file systems" not in done["cross"].stderr
    # a root on the other file system is itself scanned: -x only stops crossing
    assert {r["FolderPath"] for r in done["x-mount"].rows} == {f"{disk}/mnt/b.exe"}


# -- files that vanish or change during the sweep -----------------------------------------------


def test_files_that_vanish_or_are_replaced_after_listing(tmp_path):
    tree = Tree(tmp_path / "tree")
    victims = tree.root / "victims"
    for name in ("gone.exe", "fifo.exe", "device.exe", "dir.exe", "link.exe", "swapped.exe"):
        tree.put(f"victims/{name}", "dwsnet-ou.exe" if name != "swapped.exe" else "benign.exe")
    tree.put("victims/keep.exe", "dwsnet-ou-sha1.exe")
    tree.put("other/x.exe", "dwsnet-srl.exe")
    # stop rmmscan when its listing of victims/ is complete (the second getdents64 returns 0)
    run = Stopped(
        *("--format", "jsonl", "-j", "2", tree.root),
        state_dir=tmp_path / "s",
        path=victims,
        syscall="getdents64",
        when=2,
        log=tmp_path / "strace.log",
        stops=2,  # both sweep processes list victims/; the one that owns it visits its files
    )
    try:
        os.remove(victims / "gone.exe")
        os.remove(victims / "fifo.exe")
        os.mkfifo(victims / "fifo.exe")  # opening it must not block
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
    # what is there when the file is opened is what is reported
    assert identities(done.rows) == tree.expected()
    counts = done.summary
    assert counts["files walked"] == 8
    assert counts["vanished"] == 1
    # a FIFO, a device, a folder and a symlink where a regular file was listed: changed
    assert counts["changed"] == 4, done.stderr
    assert "unreadable" not in counts, done.stderr


def test_a_file_rewritten_while_it_is_read(tmp_path):
    tree = Tree(tmp_path / "tree")
    victim = tree.put("a/victim.exe", "dwsnet-ou.exe")
    tree.put("a/other.exe", "dwsnet-srl.exe")
    # stop right after rmmscan opened the victim (its fstat), then rewrite it in place with
    # a file of the same size, and put its times back: only ctime tells
    run = Stopped(
        *("--format", "jsonl", "--emit", "all", tree.root),
        state_dir=tmp_path / "s",
        path=victim,
        syscall="newfstatat",
        when=1,
        log=tmp_path / "strace.log",
    )
    try:
        before = os.stat(victim)
        data = (PE_DIR / "modified-after-signing.exe").read_bytes()
        assert len(data) == before.st_size
        with open(victim, "r+b") as f:
            f.write(data)
        os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))
        done = run.resume()
    finally:
        run.kill()
    assert done.returncode == 1, done
    # what was read is reported (a finding is never dropped): here all of it was read after
    # the rewrite, so every column is the new content's; the change is marked and counted
    tree.files[victim] = "modified-after-signing.exe"
    rows = done.rows
    marked = [r for r in rows if r["FolderPath"] == os.fsdecode(victim)]
    assert marked and all(
        json.loads(r["Anomalies"])[-1] == "changed_during_read" for r in marked
    ), marked
    for r in marked:
        r["Anomalies"] = json.dumps(json.loads(r["Anomalies"])[:-1])
    tree.check(rows, NAMES)
    assert identities(rows) == tree.expected()
    assert done.summary["changed"] == 1, done.stderr
    # and it is not cached: the next sweep reads it again
    again = scan("--format", "jsonl", "--emit", "all", tree.root, state_dir=tmp_path / "s")
    assert stable_set(again.rows) == stable_set(rows)  # the same, unmarked
    assert again.summary["from the cache"] == 1, again.stderr  # other.exe only
    assert "changed" not in again.summary


def test_a_pseudo_file_system_as_the_root_exits_2_and_says_so(tmp_path):
    """`rmmscan /proc` sweeps nothing: exiting 0 would report a clean machine."""
    done = scan("--format", "jsonl", "/proc", state_dir=tmp_path / "s")
    assert done.returncode == 2, done
    assert done.rows == []
    assert "rmmscan: /proc: on a pseudo file system" in done.stderr, done.stderr
    assert done.summary["unreadable roots"] == 1


@pytest.mark.parametrize("jobs", [["-j", "1"], []], ids=["jobs=1", "default-jobs"])
def test_a_file_that_grows_while_it_is_read_is_still_reported(tmp_path, jobs):
    """A DWSNET-signed file appended to after rmmscan opened it: its rows (what was read) come
    out, marked changed_during_read, the change is counted, the detection exits 1, and the
    file is not cached: the next sweep judges it again."""
    tree = Tree(tmp_path / "tree")
    victim = tree.put("a/victim.exe", "dwsnet-ou.exe")
    tree.put("a/other.exe", "dwsnet-srl.exe")
    # stopped right after the victim's open (its fstat): the file grows, then rmmscan reads it
    run = Stopped(
        *jobs, "--format", "jsonl", tree.root,
        state_dir=tmp_path / "s", path=victim, syscall="newfstatat", when=1,
        log=tmp_path / "strace.log",
    )  # fmt: skip
    try:
        with open(victim, "ab") as f:
            f.write(b"appended by a writer while rmmscan read the file\n" * 100)
        done = run.resume()
    finally:
        run.kill()
    assert done.returncode == 1, done
    grown = Path(os.fsdecode(victim)).read_bytes()
    listed = (PE_DIR / "dwsnet-ou.exe").stat().st_size
    rows = [r for r in done.rows if r["FolderPath"] == os.fsdecode(victim)]
    assert FILESIG[0] in {r["RuleId"] for r in rows}, done
    for r in rows:
        assert "changed_during_read" in json.loads(r["Anomalies"]), r
        assert r["Signer"] == "DWSNET OÜ"
        # what was read: the size listed, not the bytes the writer added after it
        assert r["SHA256"] == hashlib.sha256(grown[:listed]).hexdigest()
        assert r["FileSize"] == listed
    others = [r for r in done.rows if r not in rows]
    assert others and all("changed_during_read" not in r["Anomalies"] for r in others)
    assert done.summary["changed"] == 1, done.stderr
    again = scan(*jobs, "--format", "jsonl", tree.root, state_dir=tmp_path / "s")
    assert again.returncode == 1, again
    assert again.summary["from the cache"] == 1, again.stderr  # other.exe only
    assert "changed" not in again.summary
    again_rows = [r for r in again.rows if r["FolderPath"] == os.fsdecode(victim)]
    assert FILESIG[0] in {r["RuleId"] for r in again_rows}
    assert all("changed_during_read" not in r["Anomalies"] for r in again_rows)


def test_a_file_a_writer_keeps_growing_is_read_to_its_listed_size(tmp_path):
    """A writer appends to a 48 MiB DWSNET-signed file from before the sweep until after it:
    the sweep still ends, hashes the size it listed (not a moving end), reports the file with
    its detection, marked changed_during_read, and exits 1."""
    tree = Tree(tmp_path / "tree")
    victim = Path(os.fsdecode(tree.put("a/victim.exe", "dwsnet-ou.exe")))
    with open(victim, "ab") as f:
        f.write(b"\0" * (48 << 20))  # past PARALLEL_MIN: hashed in a thread while verified
    tree.put("b/other.exe", "dwsnet-srl.exe")
    done_event = threading.Event()
    written = [0]

    def writer():
        with open(victim, "ab") as f:
            while not done_event.is_set() and written[0] < (512 << 20):
                f.write(b"\1" * (1 << 20))
                f.flush()
                written[0] += 1 << 20
                done_event.wait(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        done = scan("-j", "1", "--format", "jsonl", tree.root, state_dir=tmp_path / "s")
    finally:
        done_event.set()
        thread.join()
    assert done.returncode == 1, done
    rows = [r for r in done.rows if r["FolderPath"] == str(victim)]
    assert FILESIG[0] in {r["RuleId"] for r in rows}, done
    assert all("changed_during_read" in json.loads(r["Anomalies"]) for r in rows)
    (size,) = {r["FileSize"] for r in rows}
    with open(victim, "rb") as f:
        listed = f.read(size)
    assert {r["SHA256"] for r in rows} == {hashlib.sha256(listed).hexdigest()}
    assert done.summary["changed"] == 1, done.stderr
