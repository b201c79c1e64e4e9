"""Syslog: each row as one RFC 5424 message, over UDP, TCP or TLS (RFC 5426, 6587, 5425).

A message is ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG``: PRI from the configured
facility and the severity (warning for a rule's detection, informational for any other row),
TIMESTAMP the row's Timestamp in UTC, HOSTNAME its DeviceName (printable ASCII only, as the
RFC requires), MSGID ``DeviceFileCertificateInfo``, no structured data, and MSG the row's JSON
exactly as the outbox holds it (ASCII only, so it needs no BOM and no escaping).

What ``Accepted`` means, per transport:

- TCP and TLS: a batch goes out as octet-counted frames (``LEN SP MSG``, RFC 6587 §3.4.1 and
  RFC 5425 §4.3), all on one connection. ``send`` answers ``Accepted`` only once the receiver's
  TCP stack has acknowledged every byte of the batch and the receiver has not closed or broken
  the connection (a reset, a TLS alert) meanwhile: on Linux it polls the socket's
  unacknowledged send queue (``ioctl(SIOCOUTQ)``, alias ``TIOCOUTQ``) until it is empty, within
  ``timeout`` seconds. Where that ioctl does not exist (anything but Linux), ``Accepted`` means
  only that the batch is in the local kernel's send buffer (every ``send`` returned): a
  connection that breaks right after can lose it. On any connection error or timeout the
  socket is closed and the answer is ``Retry``; the whole batch is sent again, on a new
  connection, by the next ``send``. So rows may arrive twice but are never lost, except when
  the receiving process drops them after its kernel acknowledged them: it dies before storing
  them, or, over TLS 1.3, it refuses the client certificate only after the first batch was
  acknowledged (TCP cannot tell, and syslog has no application-level acknowledgement).
- UDP: best effort. One datagram per message; ``Accepted`` means the datagrams were handed to
  the local kernel, which may drop them, as may the network and the receiver, unnoticed. A
  message longer than ``max_message_bytes`` is never cut: ``unsendable`` reports it.

Connections are opened on the first ``send`` and again on the ``send`` after one broke. A
certificate the sink does not trust is a ``Retry`` too (the receiver's certificate may be fixed),
with a reason that says so. ``TransportError`` is raised only for this sink's own configuration
(an unknown facility or transport, a CA, certificate or key file that cannot be read).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import select
import socket
import ssl
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..transport import Accepted, Answer, Entry, Retry, TransportError

# Facility names and their RFC 5424 codes (the names syslog.conf and rsyslog use).
_FACILITY_CODES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19,
    "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
FACILITIES: tuple[str, ...] = tuple(_FACILITY_CODES)
TRANSPORTS = ("udp", "tcp", "tls")

_WARNING, _INFORMATIONAL = 4, 6  # RFC 5424 severities: a detection, any other row
MSGID = "DeviceFileCertificateInfo"  # the RFC allows 32 characters; this is 25
_UDP_PAYLOAD_MAX = 65507  # the most an IPv4 UDP datagram carries, whatever the setting says
_POLL_FIRST, _POLL_MAX = 0.001, 0.05  # seconds between two looks at the send queue

if sys.platform.startswith("linux"):
    import fcntl
    import termios

    def _unacknowledged(sock: socket.socket) -> int | None:
        """Bytes sent on ``sock`` that the peer's TCP stack has not acknowledged yet."""
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        return struct.unpack("i", raw)[0]

else:

    def _unacknowledged(sock: socket.socket) -> int | None:
        """Not knowable here: ``Accepted`` then rests on ``sendall`` alone."""
        return None


@dataclass(frozen=True, slots=True)
class SyslogSettings:
    """One syslog receiver. ``max_message_bytes`` limits a UDP datagram only (the receiver's own
    limit, 8192 by default in rsyslog's ``maxMessageSize``, must be at least as large); over TCP
    and TLS a message of any length is framed whole, and the receiver must accept its length.
    ``timeout`` bounds connecting, the TLS handshake, and sending a batch until acknowledged."""

    host: str
    port: int
    transport: str  # "udp" | "tcp" | "tls"
    ca_file: Path | None = None  # None: the system's trust store
    cert_file: Path | None = None  # a client certificate for mutual TLS
    key_file: Path | None = None  # its key (None: the key is in cert_file)
    facility: str = "local0"  # one of FACILITIES
    app_name: str = "rmmscan"
    insecure_skip_tls_verify: bool = False
    max_message_bytes: int = 8192
    timeout: float = 10.0


def _printable(text: str, limit: int) -> str:
    """A header field as RFC 5424 allows it: PRINTUSASCII (33-126), at most ``limit``
    characters, the NILVALUE "-" when nothing is left."""
    kept = "".join(c if "!" <= c <= "~" else "_" for c in text[:limit])
    return kept or "-"


def _timestamp(seconds: float) -> str:
    try:
        when = dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (ValueError, OverflowError, OSError):
        return "-"  # a time no datetime can hold: the RFC's NILVALUE, not a made-up time
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _tls_context(settings: SyslogSettings) -> ssl.SSLContext:
    """The client side of TLS, built once: a file that cannot be read is this sink's own
    configuration mistake, reported with its name before anything is sent."""
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as err:
        raise TransportError(f"cannot read the CA file {settings.ca_file}: {err}") from err
    if settings.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.key_file is not None and settings.cert_file is None:
        raise TransportError(f"the key file {settings.key_file} is given without a cert_file")
    if settings.cert_file is not None:
        try:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as err:
            files = f"{settings.cert_file}" + (
                f" and key file {settings.key_file}" if settings.key_file is not None else ""
            )
            raise TransportError(f"cannot read the certificate file {files}: {err}") from err
    return context


def _hung_up(sock: socket.socket) -> bool:
    """Whether the receiver closed the connection or broke it (a reset, a TLS alert): it may
    then have dropped what its kernel acknowledged, for instance a receiver refusing the client
    certificate after a TLS 1.3 handshake. What a receiver writes otherwise (TLS 1.3 session
    tickets, which a syslog receiver may send at any time) is read and discarded."""
    for _ in range(64):  # bounded: a receiver that keeps writing is not hanging up
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            sock.setblocking(False)
            if not sock.recv(4096):
                return True
        except ssl.SSLWantReadError:
            return False  # only TLS records with no data (tickets) were there
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
    return False


class SyslogTransport:
    max_batch_bytes = 1 << 20
    max_batch_rows = 1000

    def __init__(self, settings: SyslogSettings) -> None:
        if settings.transport not in TRANSPORTS:
            raise TransportError(
                f"unknown syslog transport {settings.transport!r}: use one of {TRANSPORTS}"
            )
        if settings.facility not in _FACILITY_CODES:
            raise TransportError(
                f"unknown syslog facility {settings.facility!r}: use one of {FACILITIES}"
            )
        self.settings = settings
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.name = f"syslog {settings.transport} {host}:{settings.port}"
        self._app = _printable(settings.app_name, 48)
        self._facility = _FACILITY_CODES[settings.facility] * 8
        self._tls = _tls_context(settings) if settings.transport == "tls" else None
        self._limit = min(settings.max_message_bytes, _UDP_PAYLOAD_MAX)
        self._sock: socket.socket | None = None

    def message(self, entry: Entry) -> bytes:
        """The RFC 5424 message carrying one row, without framing."""
        pri = self._facility + (_WARNING if entry.detection else _INFORMATIONAL)
        header = (
            f"<{pri}>1 {_timestamp(entry.time)} {_printable(entry.host, 255)} {self._app} "
            f"{os.getpid()} {MSGID} - "
        )
        return header.encode("ascii") + entry.row

    def unsendable(self, entry: Entry) -> str | None:
        if self.settings.transport != "udp":
            return None
        size = len(self.message(entry))
        if size <= self._limit:
            return None
        if self._limit < self.settings.max_message_bytes:
            return (
                f"the syslog message is {size} bytes, more than a UDP datagram carries "
                f"({_UDP_PAYLOAD_MAX} bytes): use the tcp or tls transport"
            )
        return (
            f"the syslog message is {size} bytes, more than max_message_bytes "
            f"({self.settings.max_message_bytes}) allows over UDP: raise max_message_bytes "
            "and the receiver's maximum message size, or use the tcp or tls transport"
        )

    def send(self, entries: Sequence[Entry]) -> Answer:
        messages = [self.message(entry) for entry in entries]
        if self.settings.transport == "udp":
            return self._send_udp(messages)
        data = b"".join(b"%d %s" % (len(m), m) for m in messages)
        deadline = time.monotonic() + self.settings.timeout
        try:
            sock = self._connection(deadline)
            self._send_all(sock, data, deadline)
            left = self._wait_acknowledged(sock, deadline)
            if not left and _hung_up(sock):
                raise ConnectionResetError("the receiver closed the connection")
        except ssl.SSLCertVerificationError as err:
            self.close()
            return Retry(f"TLS certificate verification failed: {err.verify_message or err}")
        except OSError as err:  # refused, reset, timed out, TLS alerts, name resolution
            self.close()
            return Retry(f"{type(err).__name__}: {err}")
        if left:
            self.close()
            return Retry(
                f"the receiver did not acknowledge {left} of {len(data)} bytes "
                f"within {self.settings.timeout:g} s"
            )
        return Accepted()

    def close(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            with contextlib.suppress(OSError):
                sock.close()

    def _connection(self, deadline: float) -> socket.socket:
        """The open connection, or a new one when there is none or the receiver closed it: a
        syslog receiver never writes, so a readable socket means it hung up (or sent a TLS
        alert), and the batch goes on a fresh connection rather than into a dead one."""
        if self._sock is not None and _hung_up(self._sock):
            self.close()
        if self._sock is None:
            timeout = max(deadline - time.monotonic(), 0.001)
            sock = socket.create_connection((self.settings.host, self.settings.port), timeout)
            try:
                if self._tls is not None:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    sock = self._tls.wrap_socket(sock, server_hostname=self.settings.host)
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    @staticmethod
    def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
        """``sendall`` bounded by one deadline for the whole batch."""
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out sending the batch")
            sock.settimeout(remaining)
            sent = sock.send(view[: 1 << 16])
            view = view[sent:]

    @staticmethod
    def _wait_acknowledged(sock: socket.socket, deadline: float) -> int:
        """Bytes still unacknowledged at the deadline (0: all acknowledged). Raises when the
        connection fails meanwhile, so that a reset is not mistaken for a slow receiver."""
        pause = _POLL_FIRST
        while True:
            left = _unacknowledged(sock)
            if not left:
                return 0
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
            if time.monotonic() >= deadline:
                return left
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _POLL_MAX)

    def _send_udp(self, messages: list[bytes]) -> Answer:
        try:
            if self._sock is None:
                family, kind, proto, _, address = socket.getaddrinfo(
                    self.settings.host, self.settings.port, type=socket.SOCK_DGRAM
                )[0]
                sock = socket.socket(family, kind, proto)
                try:
                    sock.settimeout(self.settings.timeout)
                    sock.connect(address)  # connected: a port unreachable comes back as an error
                except BaseException:
                    sock.close()
                    raise
                self._sock = sock
            for message in messages:
                self._sock.send(message)
        except OSError as err:
            self.close()
            return Retry(f"{type(err).__name__}: {err}")
        return Accepted()
