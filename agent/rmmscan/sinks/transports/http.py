"""What the HTTPS transports (hec.py, logs_ingestion.py) share: the request limit, the one
mapping of an HTTP status to the contract's answer (transport.py), Retry-After, TLS reasons,
and reasons shortened with every secret blanked."""

from __future__ import annotations

import email.utils
import math
import ssl
import time
from collections.abc import Sequence
from pathlib import Path

from ..transport import Accepted, Answer, Refused, Retry, TransportError

# The request body a receiver is sure to take: Splunk's and Azure's limit is 1 MB, counted
# by some as 10**6 and by others as 2**20 bytes.
REQUEST_LIMIT = 1_000_000
MAX_ROWS = 500  # rows are about 2 KB: the byte limit ends a batch first
# Statuses that say this request, as it is, will never be taken.
REFUSED = frozenset({400, 401, 403, 413})
# Statuses that say nothing was taken and later may do: throttling, timeouts, a path or
# service not there yet (a 404 is a receiver being set up, not a bad row).
RETRIED = frozenset({404, 408, 425, 429})
REASON_CHARS = 300



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
