"""A real `rmmscan agent` process for the tests: its configuration written under a folder,
its JSON log on a file, its rows in a JSONL sink, and the signals a service manager sends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RMMSCAN = Path(sys.executable).parent / "rmmscan"


def write_config(folder: Path, text: str) -> Path:
    path = folder / "rmmscan.toml"
    path.write_text(text, "utf-8")
    path.chmod(0o600)
    return path


def agent_config(
    folder: Path, roots, *, agent: str = "", sinks: str = "", top: str = "", emit: str = "all"
) -> Path:
    """A configuration: state under `folder`, the given roots, every row of every PE to
    rows.jsonl (unless `emit` says otherwise), and whatever else the test adds."""
    listed = ", ".join(json.dumps(str(r)) for r in roots)
    return write_config(
        folder,
        f"""state_dir = "state"
{top}
[agent]
roots = [{listed}]
{agent}

[sinks.rows]
type = "jsonl"
path = "rows.jsonl"
emit = "{emit}"
{sinks}
""",
    )


class AgentProcess:
    def __init__(self, config: Path, *extra: str):
        self.folder = config.parent
        self.log_path = self.folder / f"agent-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(RMMSCAN), "agent", "--config", str(config), *extra],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=self.folder,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> list[dict]:
        entries = []
        for line in self.log_path.read_text("utf-8", errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                entries.append({"event": "not json", "message": line})
        return entries

    def wait_log(self, event: str, count: int = 1, timeout: float = 60.0, **match) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.log() if e.get("event") == event
                     and all(e.get(k) == v for k, v in match.items())]  # fmt: skip
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"agent ended ({self.proc.returncode}): {self.log()[-5:]}")
            if time.monotonic() > deadline:
                last = self.log()[-8:]
                raise AssertionError(f"no {count} x {event} {match} in {timeout}s: {last}")
            time.sleep(0.05)

    def rows(self, name: str = "rows.jsonl") -> list[dict]:
        path = self.folder / name
        if not path.exists():
            return []
        text = path.read_text("utf-8")
        # Only whole lines: the agent may be in the middle of writing the last one.
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.splitlines() if line]

    def file_rows(self, **match) -> list[dict]:
        return [r for r in self.rows() if r["ScanSource"] != "heartbeat"
                and all(r.get(k) == v for k, v in match.items())]  # fmt: skip

    def heartbeats(self) -> list[dict]:
        return [json.loads(r["AgentStatus"]) for r in self.rows() if r["ScanSource"] == "heartbeat"]

    def wait_rows(self, predicate, count: int = 1, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.rows() if predicate(r)]
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"agent ended ({self.proc.returncode}): {self.log()[-5:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} rows in {timeout}s")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = 10.0) -> float:
        """SIGTERM; the seconds it took to end."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
