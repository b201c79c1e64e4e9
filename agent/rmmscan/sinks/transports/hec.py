"""Splunk's HTTP Event Collector: one ``POST /services/collector/event`` per batch, one JSON
event object per row, the objects one after another as HEC reads them.

Each event is built by joining bytes: the row is the outbox's JSON as it is (transport.py:
compact and ASCII), so a name with control characters, non-ASCII characters or undecodable
bytes reaches Splunk exactly as the row says it, and no row is parsed again. ``time`` is the
row's Timestamp (seconds since 1970) and ``host`` its DeviceName, so that Splunk files the
event under the time and the machine it describes rather than those of the request.

One send is one request, never more: a batch that two requests would carry could be half
taken, and the contract has no answer for half. The batch limits below keep a request within
HEC's 1 MB; a batch that still does not fit (a host name longer than DNS allows) is refused
unsent, and the forwarding sink splits it.

The HTTP answers are mapped once, here (``answer_for``), and the Logs Ingestion transport
uses the same mapping.
"""

from __future__ import annotations

import email.utils
import json
import math
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from rmmscan.sinks.transport import Accepted, Answer, Entry, Refused, Retry, TransportError

# The request body a receiver is sure to take: Splunk's and Azure's limit is 1 MB, counted
# by some as 10**6 and by others as 2**20 bytes.
REQUEST_LIMIT = 1_000_000
MAX_ROWS = 500  # rows are about 2 KB: the byte limit ends a batch first
HOST_BOUND = 255  # DNS's limit on a name: the longest host an event is planned for

# Statuses that say this request, as it is, will never be taken.
REFUSED = frozenset({400, 401, 403, 413})
# Statuses that say nothing was taken and later may do: throttling, timeouts, a path or
# service not there yet (a 404 is a receiver being set up, not a bad row).
RETRIED = frozenset({404, 408, 425, 429})
REASON_CHARS = 300


@dataclass(frozen=True, slots=True)
class HecSettings:
    url: str  # the collector's base: https://splunk:8088
    token: str = field(repr=False)  # the HEC token itself, resolved by the config reader
    index: str | None = None
    sourcetype: str = "rmmscan:filecertinfo"
    source: str = "rmmscan"
    ca_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    timeout: float = 30.0


class HecTransport:
    """Sends batches to one HTTP Event Collector over a kept-alive HTTPS session."""

    max_batch_rows = MAX_ROWS

    def __init__(self, settings: HecSettings):
        import requests  # only when an HEC sink is configured

        self._requests = requests
        self.settings = settings
        base = _without_userinfo(settings.url.rstrip("/"))
        self.name = f"hec {base}"
        if urlsplit(base).scheme not in ("https", "http"):
            raise TransportError(f"{self.name}: url must start with https://")
        if not settings.token:
            raise TransportError(f"{self.name}: the HEC token is empty")
        self._endpoint = settings.url.rstrip("/") + "/services/collector/event"
        self._verify = verify_option(self.name, settings.ca_file, settings.insecure_skip_tls_verify)
        self._tail = (
            b',"source":' + _json(settings.source)
            + b',"sourcetype":' + _json(settings.sourcetype)
            + (b',"index":' + _json(settings.index) if settings.index is not None else b"")
            + b',"event":'
        )  # fmt: skip
        self._hosts: dict[str, bytes] = {}
        # Room for every row's envelope, were each host as long as DNS allows.
        envelope = len(self._envelope(Entry(b"", 4102444800.0, "x" * HOST_BOUND, False)))
        self.max_batch_bytes = REQUEST_LIMIT - MAX_ROWS * envelope
        self._session = requests.Session()
        self._session.verify = self._verify
        self._session.headers.update({
            "Authorization": f"Splunk {settings.token}",
            "Content-Type": "application/json",
        })  # fmt: skip

    def _envelope(self, entry: Entry) -> bytes:
        host = self._hosts.get(entry.host)
        if host is None:
            if len(self._hosts) > 64:
                self._hosts.clear()
            host = self._hosts[entry.host] = _json(entry.host)
        stamp = entry.time if math.isfinite(entry.time) else time.time()
        return b'{"time":%.6f,"host":%s%s%s}' % (stamp, host, self._tail, entry.row)

    def unsendable(self, entry: Entry) -> str | None:
        size = len(self._envelope(entry))
        if size > REQUEST_LIMIT:
            return f"its event is {size} bytes, over HEC's {REQUEST_LIMIT}-byte request limit"
        return None

    def send(self, entries: Sequence[Entry]) -> Answer:
        body = b"".join(self._envelope(e) for e in entries)
        if len(body) > REQUEST_LIMIT:
            return Refused(
                f"{len(entries)} rows make a {len(body)}-byte request, over HEC's "
                f"{REQUEST_LIMIT}-byte limit: not sent"
            )
        requests = self._requests
        try:
            response = self._session.post(
                self._endpoint, data=body, timeout=self.settings.timeout, stream=True,
                verify=self._verify,
            )  # verify per request: requests prefers REQUESTS_CA_BUNDLE to a session's
        except requests.exceptions.SSLError as error:
            return Retry(tls_reason(error))
        except requests.exceptions.Timeout:
            return Retry(f"no answer within {self.settings.timeout:g} s")
        except requests.exceptions.RequestException as error:
            return Retry(f"cannot reach the collector: {_first_line(error)}")
        with response:
            text = _bounded_text(response)
        return answer_for(
            response.status_code, text, response.headers.get("Retry-After"),
            (self.settings.token,),
        )  # fmt: skip

    def close(self) -> None:
        self._session.close()


def answer_for(
    status: int, text: str, retry_after: str | None, secrets: Sequence[str] = ()
) -> Answer:
    """The contract's answer to an HTTP status (transport.py): 2xx Accepted; 400, 401, 403,
    413 and the other 4xx but those in RETRIED Refused; 429, 503, the rest of 5xx, 404, 408
    and 425 Retry, after Retry-After when the receiver sent one. The reason carries the
    receiver's text, shortened, with any secret blanked."""
    if 200 <= status < 300:
        return Accepted()
    reason = f"HTTP {status}: {shorten(text, secrets)}" if text.strip() else f"HTTP {status}"
    if status in RETRIED or status >= 500:
        return Retry(reason, retry_after_seconds(retry_after))
    if status in REFUSED or 400 <= status < 500:
        return Refused(reason)
    return Retry(reason)  # 1xx, 3xx: not an answer the API gives


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: delay-seconds or an HTTP date (RFC 9110 §10.2.3); None when
    absent or unreadable, and never negative."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def verify_option(name: str, ca_file: Path | None, insecure: bool) -> bool | str:
    """What ``requests`` and azure-core take as ``verify``/``connection_verify``: the CA file
    (checked here, so that a wrong path is a configuration error, not a retry forever), False
    when verification is off, else True (the system's store)."""
    if insecure:
        return False
    if ca_file is None:
        return True
    try:
        ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError, ValueError) as error:
        raise TransportError(f"{name}: cannot read ca_file {ca_file}: {error}") from None
    return str(ca_file)


def tls_reason(error: BaseException) -> str:
    """The reason of a failed TLS handshake, saying plainly when it is the certificate."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or str(cause)
            return f"TLS: certificate verification failed: {detail}"
        cause = cause.__cause__ or cause.__context__ or _first_arg_exception(cause)
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS: certificate verification failed: " + shorten(text, ())
    return "TLS: " + shorten(text, ())


def _first_arg_exception(error: BaseException) -> BaseException | None:
    # urllib3 and requests keep the cause in args rather than in __cause__.
    for arg in getattr(error, "args", ()):
        if isinstance(arg, BaseException):
            return arg
        reason = getattr(arg, "reason", None)
        if isinstance(reason, BaseException):
            return reason
    reason = getattr(error, "reason", None)
    return reason if isinstance(reason, BaseException) else None


def shorten(text: str, secrets: Sequence[str]) -> str:
    """One printable line of at most REASON_CHARS characters, any secret blanked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(flat) > REASON_CHARS:
        flat = flat[: REASON_CHARS - 3] + "..."
    for secret in secrets:  # a secret the cut or the spacing put back together
        if secret and len(secret) >= 4 and secret in flat:
            flat = flat.replace(secret, "***")
    return flat


def _bounded_text(response) -> str:
    """At most 8 KiB of the receiver's answer: enough for a reason, bounded for a hostile
    receiver. An answer read to its end leaves the connection to be used again."""
    data = b""
    try:
        chunks = response.iter_content(4096)
        for _ in range(2):
            data += next(chunks, b"")
    except Exception:  # a body cut short still leaves the status to answer with
        pass
    return data.decode("utf-8", "replace")


def _first_line(error: BaseException) -> str:
    return shorten(str(error).splitlines()[0] if str(error) else type(error).__name__, ())


def _json(value: str) -> bytes:
    return json.dumps(value).encode("ascii")


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))
