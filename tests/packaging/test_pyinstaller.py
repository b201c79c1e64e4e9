"""The single-file executable (packaging/pyinstaller/): built for real by its build script
once per test session, then run against the installed command with the same arguments.

Both runs get their own fresh state directory, so the rows can be compared whole but for two
columns: `Timestamp` (the clock) and `ReportId` (each state's counter, handed out in the order
the sweep processes deliver, which is not fixed). Rows are compared as sorted lists. Besides
the samples' sweep, the executable reads real disk images (NTFS in an MBR, as E01, VMDK, VHD,
VHDX and QCOW2: pytsk3 and the libyal modules), runs the rule pack's own test rows, and
starts the agent: the native modules and data files a sweep of the samples never touches.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_systemd_unit import check_unit_run, run_unit

from tests.images.build import ntfs_volume, partitioned, to_e01, to_qcow2, to_vhd, to_vhdx, to_vmdk

from conftest import PE_DIR, ROOT, SAMPLES, TEST_ROOT

INSTALLED = ROOT / ".venv" / "bin" / "rmmscan"
BUILD = ROOT / "packaging" / "pyinstaller" / "build"
BUILD_TIMEOUT = 1200  # about 40 s alone on the project's machine; the suite shares its 2 cores
TIMEOUT = 300
# Columns that differ between two runs of the same command (above); nothing else may.
VARYING = ("Timestamp", "ReportId")


@pytest.fixture(scope="session")
def executable(tmp_path_factory) -> Path:
    """The executable, built by packaging/pyinstaller/build into a fresh folder."""
    out = tmp_path_factory.mktemp("pyinstaller")
    proc = subprocess.run(
        ["bash", str(BUILD), str(out / "dist"), str(out / "work")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    exe = out / "dist" / "rmmscan"
    assert exe.is_file() and os.access(exe, os.X_OK)
    return exe


def run(program: Path, args: list[str], state: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RMMSCAN_STATE_DIR"}
    return subprocess.run(
        [str(program), *args, *(["--state-dir", str(state)] if state else [])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=TIMEOUT,
    )


def rows_of(proc: subprocess.CompletedProcess) -> list[dict]:
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line]
    for row in rows:
        for column in VARYING:
            assert row.pop(column) is not None
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def counts(stderr: str) -> list[str]:
    """The summary's count lines (files walked, PE files, ...; not read; skipped)."""
    return [
        line
        for line in stderr.splitlines()
        if line.startswith(("files walked:", "not read:", "skipped:", "images:"))
    ]


def both(executable: Path, args: list[str], tmp_path: Path):
    """(executable's run, installed command's run) of the same arguments."""
    return (
        run(executable, args, tmp_path / "state-exe"),
        run(INSTALLED, args, tmp_path / "state-installed"),
    )


SCAN = ["scan", "samples/", "--format", "jsonl", "--no-cache", "--emit", "all",
        "--trusted-roots", str(TEST_ROOT.relative_to(ROOT))]  # fmt: skip


def test_the_executable_sweeps_the_samples_as_the_installed_command_does(executable, tmp_path):
    frozen, installed = both(executable, SCAN, tmp_path)
    assert installed.returncode == 1, installed.stderr[-2000:]  # 1: detections
    assert frozen.returncode == installed.returncode, frozen.stderr[-2000:]
    expected = rows_of(installed)
    assert len(expected) >= len(list((SAMPLES / "pe").iterdir())) - 1  # the non-PE has none
    assert any(r["RuleId"] for r in expected) and any(r["IsTrusted"] for r in expected)
    assert rows_of(frozen) == expected
    assert counts(frozen.stderr) == counts(installed.stderr) != []
    # No file it could not read, no module or data file it could not find: such problems are
    # the "rmmscan: PATH: ..." lines on stderr, and the installed command has none.
    assert problems(frozen.stderr) == problems(installed.stderr) == []


def problems(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rmmscan:")]


def test_the_executable_reads_disk_images_as_the_installed_command_does(executable, tmp_path):
    """NTFS behind an MBR (pytsk3), in each container format (pyewf, pyvmdk, pyvhdi,
    pyqcow): the native modules only `rmmscan image` loads."""
    volume = ntfs_volume(PE_DIR, tmp_path / "ntfs.img")
    raw = partitioned([volume], tmp_path / "disk.raw", "mbr")
    images = [
        raw,
        to_e01(raw, tmp_path / "disk"),
        to_vmdk(raw, tmp_path / "disk.vmdk"),
        to_vhd(raw, tmp_path / "disk.vhd", dynamic=True),
        to_vhdx(raw, tmp_path / "disk.vhdx"),
        to_qcow2(raw, tmp_path / "disk.qcow2"),
    ]
    args = ["image", *map(str, images), "--format", "jsonl", "--no-cache", "--emit", "all",
            "--trusted-roots", str(TEST_ROOT)]  # fmt: skip
    frozen, installed = both(executable, args, tmp_path)
    assert installed.returncode == 1, installed.stderr[-2000:]
    assert frozen.returncode == 1, frozen.stderr[-2000:]
    expected = rows_of(installed)
    assert {r["Evidence"] for r in expected} == set(map(str, images))
    assert rows_of(frozen) == expected


def test_the_bundled_rule_pack_is_the_installed_one_and_passes_its_tests(executable):
    listed = run(executable, ["rules", "list", "--format", "json"])
    assert listed.returncode == 0, listed.stderr
    installed = run(INSTALLED, ["rules", "list", "--format", "json"])

    def rules(proc):
        found = [json.loads(line) for line in proc.stdout.splitlines() if line]
        # `path` is where the pack is: the bundle's unpacked folder, or the checkout's rules/.
        return sorted(({**r, "path": Path(r["path"]).name} for r in found), key=str)

    assert rules(listed) == rules(installed)
    assert len(rules(listed)) == len(list((ROOT / "rules").glob("*.yaml")))
    tested = run(executable, ["rules", "test"])
    assert tested.returncode == 0, tested.stdout[-2000:] + tested.stderr[-2000:]
    assert "all pass" in tested.stdout


def test_version_and_help_run(executable, tmp_path):
    version = subprocess.run([str(executable), "--version"], capture_output=True, text=True,
                             timeout=TIMEOUT)  # fmt: skip
    installed = subprocess.run([str(INSTALLED), "--version"], capture_output=True, text=True,
                               timeout=TIMEOUT)  # fmt: skip
    assert version.returncode == 0 and version.stdout == installed.stdout != ""
    for command in ("image", "scan", "agent"):
        helped = subprocess.run([str(executable), command, "--help"], capture_output=True,
                                text=True, timeout=TIMEOUT)  # fmt: skip
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith(f"usage: rmmscan {command} ")


def test_the_agent_runs_from_the_executable_and_stops_on_sigterm(executable, tmp_path):
    """The agent's modules (watchdog's inotify observer, psutil) are in the bundle: it sweeps
    a copy of the samples, writes their detections to a JSONL sink, logs to its --log file,
    and stops within 5 s of SIGTERM with status 0."""
    tree = tmp_path / "tree"
    shutil.copytree(PE_DIR, tree)
    rows, log = tmp_path / "rows.jsonl", tmp_path / "agent.log"
    config = tmp_path / "rmmscan.toml"
    config.write_text(
        f'trusted_roots = ["{TEST_ROOT}"]\nsystem_roots = false\n'
        f'[agent]\nroots = ["{tree}"]\n'
        f'[sinks.local]\ntype = "jsonl"\npath = "{rows}"\nemit = "detections"\n',
        "utf-8",
    )
    config.chmod(0o600)
    proc = subprocess.Popen(
        [str(executable), "agent", "--config", str(config), "--state-dir", str(tmp_path / "s"),
         "--log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and "swept" not in events(log):
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=10)
        assert time.monotonic() - started < 5
        assert proc.returncode == 0, stderr[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert events(log)[-1] == "stopped"
    found = {(r["FileName"], r["RuleId"]) for r in map(json.loads, rows.read_text().splitlines())
             if r["ScanSource"] == "sweep"}  # fmt: skip
    expected = run(INSTALLED, ["scan", str(tree), "--format", "jsonl", "--no-cache", "--quiet",
                               "--no-system-roots", "--trusted-roots", str(TEST_ROOT)],
                   tmp_path / "state-installed")  # fmt: skip
    assert found == {(r["FileName"], r["RuleId"]) for r in rows_of(expected)} != set()


def events(log: Path) -> list[str]:
    """The events of the agent's JSON log so far."""
    if not log.exists():
        return []
    return [json.loads(line)["event"] for line in log.read_text("utf-8").splitlines()
            if line.endswith("}")]  # fmt: skip


def test_systemd_runs_the_unit_with_the_executable(executable, tmp_path):
    """packaging/systemd/rmmscan.service with the executable as /usr/local/bin/rmmscan: it
    unpacks into the unit's private /tmp and runs under its filter (test_systemd_unit.py)."""
    run = check_unit_run(run_unit(executable, tmp_path))
    assert any(name.startswith("_MEI") for name in run.read("agent-tmp").split())
