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

The HTTP answers are mapped once, for both HTTPS transports, in http.py.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ..transport import Answer, Entry, Refused, Retry, TransportError
from .http import (
    MAX_ROWS,
    REQUEST_LIMIT,
    answer_for,
    shorten,
    tls_reason,
    verify_option,
)

HOST_BOUND = 255  # DNS's limit on a name: the longest host an event is planned for


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
