"""The agent's log: one JSON object per line, on stderr (the journal under systemd) or in a
rotating file readable by the service account only.

The log says what the agent does and what went wrong (started, reloaded, a root that cannot be
read, a sink that waits for its receiver); it never carries rows: a detection, a file's hashes
or signer go to the sinks, which are the SIEM's and are access-controlled there. Paths in
messages are already printable (rmmscan.text). Any thread may log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import threading
from pathlib import Path
from typing import TextIO

from ..sinks.rotating import RotatingFileSink
from ..sinks.sink import SinkError

LEVELS = ("debug", "info", "warning", "error")


class AgentLog:
    def __init__(
        self,
        path: Path | None = None,
        max_bytes: int = 10 << 20,
        keep: int = 5,
        stream: TextIO | None = None,
    ):
        self.path = path
        self._file = RotatingFileSink(path, max_bytes, keep) if path is not None else None
        self.stream = stream or sys.stderr
        self._lock = threading.Lock()

    def __call__(self, level: str, event: str, message: str = "", **fields) -> None:
        entry = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            ),
            "level": level,
            "event": event,
        }
        if message:
            entry["message"] = message
        entry.update(fields)
        with self._lock:
            if self._file is not None:
                try:
                    self._file.write([entry])
                    return
                except SinkError:
                    pass  # the file cannot take it: stderr still can
            try:
                line = json.dumps(entry, ensure_ascii=False, default=str)
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # nowhere left to say it; the agent goes on

    def info(self, event: str, message: str = "", **fields) -> None:
        self("info", event, message, **fields)

    def warning(self, event: str, message: str = "", **fields) -> None:
        self("warning", event, message, **fields)

    def error(self, event: str, message: str = "", **fields) -> None:
        self("error", event, message, **fields)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(SinkError):
                self._file.close()
