"""packaging/systemd/rmmscan.service: checked by systemd's own tools, then run by systemd.

`systemd-analyze verify` must accept the unit without a word (it exits 0 on unknown keys and
bad values, and only says so); it needs the ExecStart program to exist, so it checks a copy
whose /usr/local/bin/rmmscan is the venv's. `systemd-analyze security --offline=true` scores
the unit as written; the score must be at most 2.0 and the one the unit's header states.

Then the unit runs for real: a systemd-nspawn container boots systemd (PID 1 of its own
namespace; the machine's /usr, this checkout and the venv's Python bound read-only, a private
network) and starts the unit as shipped, its /usr/local/bin/rmmscan the installed command (or,
from test_pyinstaller.py, the single-file executable). From the transient user with its one
capability, under the unit's system call filter, MemoryDenyWriteExecute and address families,
the agent must find the samples in a home folder only its owner may read, write detections to
the example configuration's JSONL sink in /var/log/rmmscan, reload on `systemctl reload`, and
stop within 5 s. The kernel's view of the agent (uid, capabilities, no_new_privs, seccomp) is
read from /proc while it runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import PE_DIR, ROOT, TEST_ROOT

UNIT = ROOT / "packaging" / "systemd" / "rmmscan.service"
INSTALLED = ROOT / ".venv" / "bin" / "rmmscan"
PROGRAM = "/usr/local/bin/rmmscan"
MAX_EXPOSURE = 2.0
CAP_DAC_READ_SEARCH = 2  # linux/capability.h
BOOT_TIMEOUT = 300


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (a key may repeat)."""
    entries, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def service(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for section, key, value in unit_entries(text):
        if section == "Service":
            found.setdefault(key, []).append(value)
    return found


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def with_program(text: str, program: Path) -> str:
    """The unit's text with `program` in ExecStart= instead of /usr/local/bin/rmmscan."""
    text, count = re.subn(rf"^ExecStart={re.escape(PROGRAM)} ", f"ExecStart={program} ", text,
                          flags=re.MULTILINE)  # fmt: skip
    assert count == 1
    return text


def test_systemd_analyze_verify_accepts_the_unit_without_a_word(tmp_path):
    unit = tmp_path / "rmmscan.service"
    unit.write_text(with_program(UNIT.read_text("utf-8"), INSTALLED), "utf-8")
    proc = analyze("verify", "--man=no", str(unit), cwd=tmp_path)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    # The same check does see a misspelt directive (and still exits 0).
    broken = tmp_path / "broken" / "rmmscan.service"
    broken.parent.mkdir()
    broken.write_text(unit.read_text("utf-8").replace("ProtectSystem=", "ProtectSystm="))
    proc = analyze("verify", "--man=no", str(broken), cwd=broken.parent)
    assert "Unknown key 'ProtectSystm'" in proc.stdout + proc.stderr


def exposure() -> tuple[float, str]:
    proc = analyze("security", "--offline=true", "--no-pager", str(UNIT), cwd=UNIT.parent)
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for rmmscan\.service: (\d+\.\d)", proc.stdout)
    assert match, proc.stdout[-2000:]
    return float(match.group(1)), proc.stdout


def test_exposure_is_at_most_2_and_the_one_the_unit_states():
    score, report = exposure()
    assert score <= MAX_EXPOSURE, report
    stated = re.search(r"systemd-analyze security --offline=true`: (\d+\.\d)", UNIT.read_text())
    assert stated and float(stated.group(1)) == score
    readme = (UNIT.parent / "README.md").read_text("utf-8")
    assert f"## Exposure: {score}\n" in readme and f"scores the unit {score}\n" in readme
    # What the score credits the unit with, line by line as systemd-analyze words it.
    for credited in (
        "✓ User=/DynamicUser=",
        "✓ NoNewPrivileges=",
        "✓ ProtectSystem=",
        "✓ PrivateTmp=",
        "✓ MemoryDenyWriteExecute=",
        "✓ CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "✓ CapabilityBoundingSet=~CAP_SYS_PTRACE",
        "✓ RestrictAddressFamilies=~AF_NETLINK",
        "✓ SystemCallFilter=~@privileged",
    ):
        assert credited in report, credited


def test_the_unit_says_what_the_issue_asks():
    s = service(UNIT.read_text("utf-8"))
    one = {key: values[-1] for key, values in s.items()}
    assert one["Type"] == "exec"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert (one["Restart"], one["RestartSec"], one["TimeoutStopSec"]) == ("on-failure", "5", "10")
    assert one["CapabilityBoundingSet"] == one["AmbientCapabilities"] == "CAP_DAC_READ_SEARCH"
    assert (one["ProtectSystem"], one["ProtectHome"]) == ("strict", "read-only")
    assert (one["StateDirectory"], one["StateDirectoryMode"]) == ("rmmscan", "0700")
    assert one["ConfigurationDirectory"] == "rmmscan"
    assert (one["Nice"], one["IOSchedulingClass"]) == ("10", "idle")
    assert one["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert s["SystemCallFilter"] == ["@system-service", "~@privileged"]
    for flag in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                 "ProtectKernelModules", "ProtectKernelLogs", "ProtectClock", "ProtectHostname",
                 "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute"):  # fmt: skip
        assert one[flag] == "yes", flag
    assert "PrivateNetwork" not in one  # rows go to a SIEM
    assert re.fullmatch(r"\d+[KMG]", one["MemoryMax"])
    # The command line is one rmmscan's parser takes: `agent` and its options.
    program, *argv = one["ExecStart"].split()
    assert program == PROGRAM
    from rmmscan.cli.main import _parser

    args = _parser().parse_args(argv)
    assert args.command == "agent" and args.state_dir == Path("/var/lib/rmmscan")


# -- the unit, run by systemd ------------------------------------------------------------------

CONFIG = """\
trusted_roots = ["{trust}"]
system_roots = false

[agent]
roots = ["/home/alice/drop"]
process_interval = 2
heartbeat_interval = 2

[sinks.local]
type = "jsonl"
path = "/var/log/rmmscan/rows.jsonl"
emit = "detections"
"""

# Runs inside the container, as its only job (systemd.unit=): start the unit, wait for the
# first sweep to end, read the agent's credentials, reload, stop; every result into /check.
CHECK = r"""#!/bin/bash
set -u
cd /check
log() { journalctl -u rmmscan.service -o cat --no-pager; }
until_logged() {  # EVENT SECONDS
    for _ in $(seq 1 $(( $2 * 5 ))); do
        log | grep -q "\"event\": \"$1\"" && return 0
        [ "$(systemctl show -p NRestarts --value rmmscan.service)" = 0 ] || return 1
        sleep 0.2
    done
    return 1
}
touch /tmp/machine-tmp-file
systemctl start rmmscan.service
until_logged swept 180 && echo swept > progress
pid=$(systemctl show -p MainPID --value rmmscan.service)
cat /proc/"$pid"/status > status 2>&1
stat -L -c '%a %U' /var/lib/rmmscan > state-dir 2>&1
ls -a /tmp > machine-tmp 2>&1
ls -a /proc/"$pid"/root/tmp > agent-tmp 2>&1
systemctl reload rmmscan.service && until_logged reloaded 60 && echo reloaded >> progress
start=$(date +%s%N)
systemctl stop rmmscan.service
echo $(( ($(date +%s%N) - start) / 1000000 )) > stop-ms
systemctl show rmmscan.service -p Result -p ExecMainStatus -p ExecMainCode -p NRestarts > show
log > journal
cp /var/log/rmmscan/rows.jsonl rows.jsonl 2>/dev/null
echo done >> progress
"""

# When the check ends, however it ends, the container's systemd exits at once (and with it
# systemd-nspawn): nothing of the throwaway machine needs an orderly shutdown.
CHECK_UNIT = """\
[Unit]
Description=rmmscan.service under test
SuccessAction=exit-force
FailureAction=exit-force
[Service]
Type=oneshot
ExecStart=/bin/bash /check/check.sh
"""


@dataclass
class UnitRun:
    """What the container's check saw (files of /check, read back)."""

    folder: Path
    console: str

    def read(self, name: str) -> str:
        path = self.folder / name
        return path.read_text("utf-8", "replace") if path.exists() else ""

    def show(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.read("show").splitlines() if "=" in line)

    def log(self) -> list[dict]:
        return [json.loads(line) for line in self.read("journal").splitlines()
                if line.startswith("{")]  # fmt: skip

    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.read("rows.jsonl").splitlines() if line]

    def status(self) -> dict[str, str]:
        return dict(line.split(":\t", 1) for line in self.read("status").splitlines()
                    if ":\t" in line)  # fmt: skip


def run_unit(program: Path, tmp: Path) -> UnitRun:
    """Boot a container that runs packaging/systemd/rmmscan.service with `program` as its
    /usr/local/bin/rmmscan, and return what its check saw."""
    root, check, bindir = tmp / "root", tmp / "check", tmp / "bin"
    for folder in ("usr", "var", "tmp", "run", "srv", "proc", "sys", "dev"):
        (root / folder).mkdir(parents=True)
    for name in ("bin", "sbin", "lib", "lib64"):
        if (Path("/usr") / name).exists():
            (root / name).symlink_to(f"usr/{name}")
    # The machine's /etc, with its own machine id (a container may not share the host's).
    shutil.copytree("/etc", root / "etc", symlinks=True, ignore_dangling_symlinks=True,
                    ignore=shutil.ignore_patterns("machine-id", "os-release"))  # fmt: skip
    shutil.copy(Path("/etc/os-release").resolve(), root / "etc" / "os-release")
    (root / "etc" / "machine-id").write_text(os.urandom(16).hex() + "\n")
    # The unit as shipped; the check as the container's only job.
    units = root / "etc" / "systemd" / "system"
    shutil.copy(UNIT, units / "rmmscan.service")
    (units / "rmmscan-check.service").write_text(CHECK_UNIT)
    # The configuration: root's, mode 600; the samples in a home folder only its owner may
    # read (uid 1000).
    conf = root / "etc" / "rmmscan"
    conf.mkdir(exist_ok=True)
    (conf / "rmmscan.toml").write_text(CONFIG.format(trust=TEST_ROOT))
    (conf / "rmmscan.toml").chmod(0o600)
    # /root may be searched (not listed): the venv's Python may live under it.
    (root / "root").mkdir(mode=0o711)
    drop = root / "home" / "alice" / "drop"
    shutil.copytree(PE_DIR, drop)
    for path in [drop.parent, drop, *drop.iterdir()]:
        path.chmod(0o700 if path.is_dir() else 0o600)
        os.chown(path, 1000, 1000)
    bindir.mkdir()
    shutil.copy2(program, bindir / "rmmscan")
    check.mkdir()
    (check / "check.sh").write_text(CHECK)
    binds = ["/usr", str(ROOT), str(Path(sys.base_prefix).resolve())]
    proc = subprocess.run(
        ["systemd-nspawn", "--quiet", "--directory", str(root), "--boot",
         "--register=no", "--keep-unit", "--private-network",
         *(f"--bind-ro={path}" for path in dict.fromkeys(binds)),
         f"--bind-ro={bindir}:/usr/local/bin", f"--bind={check}:/check",
         "systemd.unit=rmmscan-check.service", "systemd.show_status=no"],
        capture_output=True, text=True, timeout=BOOT_TIMEOUT,
    )  # fmt: skip
    return UnitRun(check, proc.stdout + proc.stderr)


def check_unit_run(run: UnitRun) -> UnitRun:
    """What the unit must have done, whatever its program (the installed command or the
    single-file executable); the run, for more checks."""
    progress = run.read("progress").split()
    assert progress == ["swept", "reloaded", "done"], run.console[-3000:] + run.read("journal")
    log = run.log()
    assert [e["event"] for e in log if e["level"] == "error"] == [], log
    assert not [e for e in log if e["event"] == "priority"], log  # nice and idle I/O taken
    show = run.show()
    assert (show["Result"], show["ExecMainStatus"], show["NRestarts"]) == ("success", "0", "0")
    assert int(run.read("stop-ms")) < 5000
    # The agent's credentials as the kernel holds them.
    status = run.status()
    uids = {int(u) for u in status["Uid"].split()}
    assert 0 not in uids, status
    one = 1 << CAP_DAC_READ_SEARCH
    for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == one, (caps, status[caps])
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    assert run.read("state-dir").split() != [] and run.read("state-dir").split()[0] == "700"
    # Every detection a sweep of the same files makes, read from a folder only uid 1000 may read.
    rows = run.rows()
    swept = [r for r in rows if r["ScanSource"] == "sweep"]
    assert swept and all(r["FolderPath"].startswith("/home/alice/drop/") for r in swept)
    assert {(r["FileName"], r["RuleId"], r["SHA256"]) for r in swept} == sweep_detections()
    assert any(r["ScanSource"] == "heartbeat" for r in rows)
    # Its /tmp is its own: what the machine's /tmp holds is out of its sight.
    assert "machine-tmp-file" in run.read("machine-tmp").split()
    agent_tmp = run.read("agent-tmp").split()
    assert "." in agent_tmp and "machine-tmp-file" not in agent_tmp
    return run


def sweep_detections() -> set[tuple[str, str, str]]:
    proc = subprocess.run(
        [str(INSTALLED), "scan", str(PE_DIR), "--format", "jsonl", "--no-cache", "--quiet",
         "--no-system-roots", "--trusted-roots", str(TEST_ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line]
    return {(r["FileName"], r["RuleId"], r["SHA256"]) for r in rows}


def test_systemd_runs_the_unit_with_the_installed_command(tmp_path):
    check_unit_run(run_unit(INSTALLED, tmp_path))
