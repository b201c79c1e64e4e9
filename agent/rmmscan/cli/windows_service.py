"""The Windows service: `rmmscan agent` run by the Service Control Manager through pywin32's
service framework, and `rmmscan agent --install-service` / `--uninstall-service`.

What the service does is the Agent object (rmmscan.agent.agent), the one the Linux tests run;
this module only connects it to the SCM, in as little code as that takes:

* `install(config)` registers the service "rmmscan": LocalSystem, started automatically
  (delayed, after the boot's own services), restarted 5 s after a failure as the systemd unit
  is; then starts it. Its command line is `python.exe -m rmmscan.cli.windows_service
  [--config FILE]`, or `rmmscan.exe windows-service [--config FILE]` for the single-file
  executable (packaging/pyinstaller/entry.py hands that word to `main`).
* `main` gives the process to the SCM (StartServiceCtrlDispatcher). The SCM runs the
  service's SvcDoRun in a thread of its own: it builds the Agent and runs it, until SvcStop
  (a stop, or the machine shutting down) calls `agent.stop()`. The agent installs no signal
  handler off the main thread; `stop()` is its only way out, and it works from any thread.
* The agent logs to the Windows event log (source "rmmscan"), unless the configuration's
  [agent] log names a file. The state is in %ProgramData%\\rmmscan (state.store.default_dir),
  the DeviceId comes from MachineGuid and the roots are the fixed drives, as in any Windows run.

pywin32 (win32serviceutil, win32service, servicemanager) is imported inside functions only,
so the module imports everywhere; on Linux and macOS `install` and `uninstall` refuse and name
the service manager's own file in packaging/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

SERVICE_NAME = "rmmscan"
DISPLAY_NAME = "rmmscan agent"
DESCRIPTION = (
    "Finds files signed by remote-management tools, and look-alikes, and forwards them as "
    "DeviceFileCertificateInfo rows."
)
MODULE = "rmmscan.cli.windows_service"  # `python -m MODULE` runs `main`
SERVICE_COMMAND = "windows-service"  # the single-file executable's word for `main`
RESTART_DELAY_MS = 5000  # as RestartSec=5 in packaging/systemd/rmmscan.service
RESET_FAILURES_S = 24 * 3600  # the SCM's count of failures starts again after a quiet day
STOP_WAIT_HINT_MS = 10_000  # as TimeoutStopSec=10: the agent stops within 5 s
EXIT_ERROR = 2

# Where the service is on the other platforms: its file in rmmscan's source, and the commands
# that install and remove it.
ELSEWHERE = {
    "linux": (
        "packaging/systemd/rmmscan.service",
        "install -m 644 rmmscan.service /etc/systemd/system/ && systemctl enable --now rmmscan",
        "systemctl disable --now rmmscan && rm /etc/systemd/system/rmmscan.service",
    ),
    "darwin": (
        "packaging/macos/com.rmmscan.agent.plist",
        "install -m 644 com.rmmscan.agent.plist /Library/LaunchDaemons/ && launchctl "
        "bootstrap system /Library/LaunchDaemons/com.rmmscan.agent.plist",
        "launchctl bootout system/com.rmmscan.agent && rm "
        "/Library/LaunchDaemons/com.rmmscan.agent.plist",
    ),
}


class EventLogStream:
    """A text stream for the agent's log (JSON lines): each whole line goes to `emit` with
    its level ("info", "warning", "error"). The service's `emit` is the event log."""

    def __init__(self, emit: Callable[[str, str], None]):
        self.emit = emit
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line:
                self.emit(_level(line), line)
        return len(text)

    def flush(self) -> None:
        pass


def _level(line: str) -> str:
    try:
        level = json.loads(line).get("level")
    except (ValueError, AttributeError):
        return "info"
    return level if level in ("warning", "error") else "info"


class ServiceBody:
    """The service without pywin32: run the Agent until `stop()`, from any thread, even
    before `run()` has started. SvcDoRun and SvcStop are one call each into this."""

    def __init__(self, config: Path | None, state_dir: Path | None = None, log=None):
        self.config, self.state_dir, self.log_stream = config, state_dir, log
        self._lock = threading.Lock()
        self._stopping = False
        self.agent = None

    def run(self) -> int:
        """The Agent's exit status: 0 once stopped; 2 when its configuration, a sink or the
        state cannot be used at start (the reason is logged as an error)."""
        from ..agent.agent import LOAD_ERRORS, Agent

        agent = Agent(self.config, self.state_dir, stream=self.log_stream)
        with self._lock:
            self.agent = agent
            if self._stopping:
                agent.stop()
        try:
            return agent.run()
        except LOAD_ERRORS as exc:
            agent.log.error("cannot start", str(exc))
            return EXIT_ERROR

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            if self.agent is not None:
                self.agent.stop()


def service_command(config: Path | None, frozen: bool, executable: str) -> list[str]:
    """The service's command line: the program, then what `main` parses."""
    head = [SERVICE_COMMAND] if frozen else ["-m", MODULE]
    tail = ["--config", str(config.resolve())] if config is not None else []
    return [executable, *head, *tail]


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rmmscan windows-service",
                                     description="Run as the rmmscan Windows service.")  # fmt: skip
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--state-dir", type=Path, default=None)
    return parser.parse_args(argv)


def _windows_only(option: str, removing: bool = False) -> None:
    if sys.platform == "win32":
        return
    system = "macOS" if sys.platform == "darwin" else "Linux"
    file, add, remove = ELSEWHERE["darwin" if sys.platform == "darwin" else "linux"]
    raise RuntimeError(
        f"{option} is for the Windows service. On {system} the service is {file} in "
        f"rmmscan's source; {'remove' if removing else 'install'} it with `"
        f"{remove if removing else add}`"
    )


def service_class():
    """The pywin32 service class (Windows only: it subclasses pywin32's framework)."""
    import servicemanager
    import win32service
    import win32serviceutil

    def event_log(level: str, line: str) -> None:
        {"error": servicemanager.LogErrorMsg, "warning": servicemanager.LogWarningMsg}.get(
            level, servicemanager.LogInfoMsg
        )(line)

    class RmmscanService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION
        options: tuple[Path | None, Path | None] = (None, None)  # set by main()

        def __init__(self, args):
            super().__init__(args)
            self.body = ServiceBody(*self.options, log=EventLogStream(event_log))

        def SvcDoRun(self):
            status = self.body.run()
            if status != 0:  # reported to the SCM as a failure: its recovery restarts us
                raise RuntimeError(f"rmmscan agent stopped with status {status}")

        def SvcStop(self):
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING, STOP_WAIT_HINT_MS)
            self.body.stop()

        SvcShutdown = SvcStop

    return RmmscanService


def main(argv: list[str] | None = None) -> int:
    """The service process: what the SCM starts, never a person."""
    args = _arguments(sys.argv[1:] if argv is None else argv)
    import servicemanager

    cls = service_class()
    cls.options = (args.config, args.state_dir)
    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(cls)
    servicemanager.StartServiceCtrlDispatcher()
    return 0


def install(config: Path | None) -> None:
    """Register the service and start it; RuntimeError says why not."""
    _windows_only("--install-service")
    import pywintypes
    import win32service
    import win32serviceutil
    import winerror

    if config is not None and not config.is_file():
        raise RuntimeError(f"{config}: no such configuration file")
    program, *arguments = service_command(
        config, bool(getattr(sys, "frozen", False)), sys.executable
    )
    try:
        win32serviceutil.InstallService(
            None,
            SERVICE_NAME,
            DISPLAY_NAME,
            startType=win32service.SERVICE_AUTO_START,
            exeName=program,
            exeArgs=subprocess.list2cmdline(arguments),
            description=DESCRIPTION,
            delayedstart=True,
        )
    except pywintypes.error as exc:
        if exc.winerror == winerror.ERROR_SERVICE_EXISTS:
            raise RuntimeError(
                "the rmmscan service is already installed; remove it first with "
                "`rmmscan agent --uninstall-service`"
            ) from None
        raise RuntimeError(f"cannot install the rmmscan service: {exc.strerror}") from None
    _restart_on_failure()
    win32serviceutil.StartService(SERVICE_NAME)


def _restart_on_failure() -> None:
    import win32service

    scm = win32service.OpenSCManager(None, None, win32service.SC_MANAGER_ALL_ACCESS)
    try:
        service = win32service.OpenService(scm, SERVICE_NAME, win32service.SERVICE_ALL_ACCESS)
        try:
            restart = (win32service.SC_ACTION_RESTART, RESTART_DELAY_MS)
            win32service.ChangeServiceConfig2(
                service,
                win32service.SERVICE_CONFIG_FAILURE_ACTIONS,
                {"ResetPeriod": RESET_FAILURES_S, "RebootMsg": None, "Command": None,
                 "Actions": [restart] * 3},
            )  # fmt: skip
            # A stop with an error status (a configuration that cannot be used) counts as a
            # failure too, as Restart=on-failure counts it.
            win32service.ChangeServiceConfig2(
                service, win32service.SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, True
            )
        finally:
            win32service.CloseServiceHandle(service)
    finally:
        win32service.CloseServiceHandle(scm)


def uninstall() -> None:
    """Stop the service (waiting up to 30 s) and remove it; RuntimeError says why not."""
    _windows_only("--uninstall-service", removing=True)
    import pywintypes
    import win32serviceutil
    import winerror

    try:
        win32serviceutil.StopServiceWithDeps(SERVICE_NAME, waitSecs=30)
    except pywintypes.error as exc:
        if exc.winerror == winerror.ERROR_SERVICE_DOES_NOT_EXIST:
            raise RuntimeError("the rmmscan service is not installed") from None
        if exc.winerror != winerror.ERROR_SERVICE_NOT_ACTIVE:
            raise RuntimeError(f"cannot stop the rmmscan service: {exc.strerror}") from None
    try:
        win32serviceutil.RemoveService(SERVICE_NAME)
    except pywintypes.error as exc:
        raise RuntimeError(f"cannot remove the rmmscan service: {exc.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
