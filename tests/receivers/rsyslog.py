"""A real rsyslog (Debian's rsyslogd, unprivileged, in the foreground) on a free loopback port.

``Rsyslog(folder, "udp" | "tcp" | "tls", pki=..., require_client_cert=...)`` writes its own
configuration, work directory, pid file and output files under ``folder``; as a context
manager it starts and stops the daemon. Every message's MSG goes to ``messages.txt`` (template
``%msg%\\n``) and the header fields as rsyslog parsed them to ``headers.txt``, one line each,
so rsyslog's own parser is the oracle for what a sender put in its RFC 5424 header.
``stop()`` and ``start()`` take it down and bring it back on the same port.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from .pki import Pki

RSYSLOGD = "/usr/sbin/rsyslogd"
MAX_MESSAGE = 256 * 1024
_READ_LIMIT = 64 << 20  # the most of an output file a test reads
# One line per message: the RFC 5424 header fields as rsyslog parsed them, space separated.
HEADER_FIELDS = (
    "hostname", "app-name", "procid", "msgid", "syslogfacility-text", "syslogseverity-text",
    "timereported:::date-rfc3339", "structured-data",
)  # fmt: skip


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bound(proto: str, port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (TCP LISTEN, or a bound UDP socket), read
    from /proc so that checking opens no connection the receiver would log."""
    want_state = "0A" if proto == "tcp" else "07"
    address = f"0100007F:{port:04X}"
    text = Path(f"/proc/net/{proto}").read_text()[:_READ_LIMIT]
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1] == address and fields[3] == want_state:
            return True
    return False


class Rsyslog:
    def __init__(
        self,
        folder: Path,
        transport: str,
        pki: Pki | None = None,
        require_client_cert: bool = False,
    ) -> None:
        assert transport in ("udp", "tcp", "tls")
        assert (transport == "tls") == (pki is not None), "TLS needs the test PKI, and only TLS"
        self.folder = folder
        self.transport = transport
        self.port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
        self.messages_file = folder / "messages.txt"
        self.headers_file = folder / "headers.txt"
        self.log_file = folder / "rsyslogd.log"
        self.pid_file = folder / "rsyslogd.pid"
        self.conf = folder / "rsyslog.conf"
        work = folder / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._config(work, pki, require_client_cert))
        self._process: subprocess.Popen | None = None

    def _config(self, work: Path, pki: Pki | None, require_client_cert: bool) -> str:
        lines = [f'global(workDirectory="{work}" maxMessageSize="{MAX_MESSAGE}")']
        if self.transport == "udp":
            lines.append('module(load="imudp")')
            lines.append(f'input(type="imudp" port="{self.port}" address="127.0.0.1" ruleset="r")')
        else:
            if pki is not None:
                lines.append(
                    f'global(defaultNetstreamDriverCAFile="{pki.ca}" '
                    f'defaultNetstreamDriverCertFile="{pki.server_cert}" '
                    f'defaultNetstreamDriverKeyFile="{pki.server_key}")'
                )
                auth = "x509/certvalid" if require_client_cert else "anon"
                lines.append(
                    'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" '
                    f'streamDriver.authMode="{auth}")'
                )
            else:
                lines.append('module(load="imtcp")')
            lines.append(f'input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="r")')
        header = " ".join(f"%{field}%" for field in HEADER_FIELDS)
        lines += [
            'template(name="msg" type="string" string="%msg%\\n")',
            f'template(name="hdr" type="string" string="{header}\\n")',
            'ruleset(name="r") {',
            f'  action(type="omfile" file="{self.messages_file}" template="msg"'
            ' flushOnTXEnd="on" asyncWriting="off")',
            f'  action(type="omfile" file="{self.headers_file}" template="hdr"'
            ' flushOnTXEnd="on" asyncWriting="off")',
            "}",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        assert self._process is None, "already running"
        log = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pid_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            log.close()
        proto = "udp" if self.transport == "udp" else "tcp"
        deadline = time.monotonic() + timeout
        while not _bound(proto, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rsyslogd did not listen on {self.port}: {self.log()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self.pid_file.exists():
            self.pid_file.unlink()

    def __enter__(self) -> Rsyslog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def log(self) -> str:
        """rsyslogd's own output (errors, TLS failures), for assertion messages."""
        return _read(self.log_file)

    def messages(self) -> list[str]:
        """The MSG of every message received so far, one per line."""
        return _read(self.messages_file).splitlines()

    def headers(self) -> list[dict[str, str]]:
        """The header fields rsyslog parsed from every message received so far."""
        return [
            dict(zip(HEADER_FIELDS, line.split(" "), strict=True))
            for line in _read(self.headers_file).splitlines()
        ]

    def wait_for(self, count: int, timeout: float = 10.0, settle: float = 0.3) -> list[str]:
        """The messages once at least ``count`` arrived and none came for ``settle`` seconds
        (rsyslog writes from its own queue, after the sender is done); fewer at the timeout."""
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while True:
            lines = self.messages()
            now = time.monotonic()
            if len(lines) != seen:
                seen, since = len(lines), now
            if (seen >= count and now - since >= settle) or now > deadline:
                return lines
            time.sleep(0.02)


def _read(path: Path) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        return f.read(_READ_LIMIT).decode("utf-8", "replace")
