"""rmmscan/cli/windows_service.py, tested on Linux: what runs here, for real.

pywin32 does not exist on Linux, so the service class itself (a subclass of pywin32's
ServiceFramework), `main` (StartServiceCtrlDispatcher) and the SCM calls of `install` and
`uninstall` are not run here. What is: the module imports without pywin32; `rmmscan agent
--install-service` and `--uninstall-service` refuse, naming the systemd unit; and the service
body that SvcDoRun and SvcStop each call in one line (ServiceBody) runs a real Agent in a
thread of its own, as the SCM's thread runs it, and stops it through `stop()` from another
thread, before or during its run. The agent's log reaches the event-log stream line by line
with its level, and the command line a service is registered with is one `main` parses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from rmmscan.cli import windows_service as ws

from conftest import PE_DIR, ROOT, TEST_ROOT

INSTALLED = ROOT / ".venv" / "bin" / "rmmscan"


def test_the_module_imports_without_pywin32():
    code = (
        "import sys, rmmscan.cli.windows_service as m;"
        "assert not {'win32serviceutil', 'win32service', 'servicemanager'} & set(sys.modules);"
        "print(m.MODULE == m.__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout.strip()) == (0, "True"), proc.stderr
    import importlib.util

    assert importlib.util.find_spec("win32serviceutil") is None  # not faked: absent here


def test_install_and_uninstall_refuse_on_linux_naming_the_systemd_unit():
    for option, verb in (("--install-service", "systemctl enable --now rmmscan"),
                         ("--uninstall-service", "systemctl disable --now rmmscan")):  # fmt: skip
        proc = subprocess.run([str(INSTALLED), "agent", option], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2
        assert proc.stdout == ""
        said = proc.stderr
        assert said.startswith(f"rmmscan: {option} is for the Windows service.")
        assert "packaging/systemd/rmmscan.service" in said and verb in said, said
    assert (ROOT / ws.ELSEWHERE["linux"][0]).is_file()
    assert (ROOT / ws.ELSEWHERE["darwin"][0]).is_file()


class Lines:
    """What the event log would get: (level, line) of each whole line."""

    def __init__(self):
        self.got: list[tuple[str, str]] = []

    def __call__(self, level: str, line: str) -> None:
        self.got.append((level, line))

    def events(self) -> list[str]:
        return [json.loads(line)["event"] for _, line in self.got]


def agent_config(tmp_path: Path) -> tuple[Path, Path, Path]:
    tree = tmp_path / "tree"
    shutil.copytree(PE_DIR, tree)
    rows = tmp_path / "rows.jsonl"
    config = tmp_path / "rmmscan.toml"
    config.write_text(
        f'trusted_roots = ["{TEST_ROOT}"]\nsystem_roots = false\n'
        f'[agent]\nroots = ["{tree}"]\nprocess_interval = 0\n'
        f'[sinks.local]\ntype = "jsonl"\npath = "{rows}"\nemit = "detections"\n',
        "utf-8",
    )
    config.chmod(0o600)
    return config, rows, tree


def start(body: ws.ServiceBody) -> tuple[threading.Thread, list[int]]:
    """Run the body in a thread of its own, as the SCM runs SvcDoRun."""
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(body.run()), name="SvcDoRun")
    thread.start()
    return thread, status


def test_the_service_body_runs_the_agent_and_svcstop_stops_it(tmp_path):
    config, rows, _ = agent_config(tmp_path)
    lines = Lines()
    body = ws.ServiceBody(config, tmp_path / "state", log=ws.EventLogStream(lines))
    thread, status = start(body)
    deadline = time.monotonic() + 120
    while "swept" not in lines.events() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert thread.is_alive(), lines.got
    assert any(json.loads(line)["RuleId"] for line in rows.read_text().splitlines())
    stopped = time.monotonic()
    body.stop()  # what SvcStop calls, from the SCM's control thread
    thread.join(10)
    assert not thread.is_alive() and status == [0]
    assert time.monotonic() - stopped < 5
    events = lines.events()
    assert events[0] == "starting" and events[-1] == "stopped", events
    assert all(level == "info" for level, _ in lines.got), lines.got


def test_a_stop_before_the_agent_starts_still_stops_it(tmp_path):
    config, rows, _ = agent_config(tmp_path)
    lines = Lines()
    body = ws.ServiceBody(config, tmp_path / "state", log=ws.EventLogStream(lines))
    body.stop()
    thread, status = start(body)
    thread.join(30)
    assert not thread.is_alive() and status == [0]
    assert "sweep" not in lines.events() and lines.events()[-1] == "stopped"
    written = [json.loads(line) for line in rows.read_text().splitlines()] if rows.exists() else []
    assert {r["ScanSource"] for r in written} <= {"heartbeat"}  # its last words, no sweep


def test_a_configuration_that_cannot_be_used_is_logged_as_an_error(tmp_path):
    config, _, _ = agent_config(tmp_path)
    config.write_text(config.read_text() + "unknown_key = 1\n")
    lines = Lines()
    body = ws.ServiceBody(config, tmp_path / "state", log=ws.EventLogStream(lines))
    assert body.run() == ws.EXIT_ERROR  # SvcDoRun raises on it: the SCM's recovery restarts
    errors = [json.loads(line)["message"] for level, line in lines.got if level == "error"]
    assert errors and "unknown_key" in errors[0], lines.got


def test_the_event_log_stream_takes_whole_lines_with_their_level():
    lines = Lines()
    stream = ws.EventLogStream(lines)
    stream.write('{"level": "warning", "event": "a"}\n{"level": "error", "ev')
    assert lines.got == [("warning", '{"level": "warning", "event": "a"}')]
    stream.write('ent": "b"}\nnot json\n')
    assert [level for level, _ in lines.got] == ["warning", "error", "info"]


def test_the_registered_command_line_is_one_main_parses(tmp_path):
    config = tmp_path / "rmmscan.toml"
    for frozen, program in ((False, r"C:\Python311\python.exe"), (True, r"C:\rmmscan.exe")):
        command = ws.service_command(config, frozen, program)
        assert command[0] == program
        tail = command[3:] if not frozen else command[2:]
        assert command[1:3] == ["-m", ws.MODULE] if not frozen else command[1] == "windows-service"
        assert ws._arguments(tail).config == config.resolve()
    assert ws._arguments([]).config is None
    assert ws.service_command(None, True, "x") == ["x", ws.SERVICE_COMMAND]
    # The executable's entry point hands exactly that word to main.
    entry = (ROOT / "packaging" / "pyinstaller" / "entry.py").read_text("utf-8")
    assert "SERVICE_COMMAND" in entry and ws.SERVICE_COMMAND == "windows-service"
