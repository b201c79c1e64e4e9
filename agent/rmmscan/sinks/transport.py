"""The transport contract: how a forwarding sink (forward.py) hands rows to a receiver.

A forwarding sink keeps rows in its durable outbox and gives them to its transport in batches.
The transport sends one batch and says what became of it, as one ``Answer``:

- ``Accepted``: the receiver took every row of the batch (an HTTP 2xx; for syslog over TCP or
  TLS, the receiver's TCP stack acknowledged every byte; for UDP, the datagrams were sent). The
  rows leave the outbox.
- ``Retry``: nothing is known to have arrived (the receiver is down, busy, answered 429 or 5xx,
  the connection broke): the batch stays and is sent again later, after ``after`` seconds when
  the receiver said so (Retry-After), else after a backoff.
- ``Refused``: the receiver refused the batch for good (400, 401, 403, 413). A batch of one row is
  set aside with ``reason`` (the receiver's answer); a larger one is split and sent again, so
  that one bad row never blocks the others.

A transport never raises for a receiver's failure: it answers. It raises only for a mistake of
its own configuration that no retry can mend (``TransportError``). It is driven from one thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """A row as the outbox holds it. ``row`` is the row's JSON: compact, ASCII only (every
    non-ASCII character, control character and undecodable byte escaped), so any transport may
    put it in its envelope as it is. ``time`` is the row's Timestamp in seconds since 1970 and
    ``host`` its DeviceName, the two fields envelopes carry outside the row."""

    row: bytes
    time: float
    host: str
    detection: bool  # the row is a rule's detection (RuleId set)


@dataclass(frozen=True, slots=True)
class Accepted:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    reason: str  # what went wrong, for the report: never a secret
    after: float | None = None  # seconds the receiver asked to wait (Retry-After)


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # the receiver's answer (status and body, shortened): never a secret


Answer = Accepted | Retry | Refused


class TransportError(Exception):
    """The transport cannot work as configured (a certificate file that cannot be read, a
    credential that cannot be built): the message names the sink and what to change."""


class Transport(Protocol):
    name: str  # what the report calls the receiver: "syslog tcp 10.0.0.5:6514"
    max_batch_bytes: int  # the most row bytes one send may carry
    max_batch_rows: int

    def unsendable(self, entry: Entry) -> str | None:
        """Why this row can never be sent by this transport (larger than a UDP datagram), else
        None. Such a row is set aside before sending, with this reason, and reported."""
        ...

    def send(self, entries: Sequence[Entry]) -> Answer: ...

    def close(self) -> None: ...
