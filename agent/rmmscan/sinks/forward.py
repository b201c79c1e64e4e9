"""A forwarding sink: rows to a receiver (syslog, Splunk HEC, Logs Ingestion), at least once.

``write`` returns once the rows are committed to the sink's outbox (outbox.py): from then on
they survive the process being killed, and go with this run, the next run, `rmmscan outbox
flush` or the agent. A forwarding thread hands them to the transport in batches and removes
what the receiver accepted. What the receiver cannot take now (down, busy, 429, 5xx) waits:
the delay doubles from one second to five minutes, each drawn at random between half and all
of it (so a thousand agents do not return together), or is what the receiver asked for
(Retry-After, at most an hour). What it refuses for good (400, 401, 403, 413) is split until
the refused row is alone, then set aside with the receiver's answer, and the rest go on.

Two processes may share an outbox (a sweep while the agent runs): both write, one delivers,
the one holding the outbox's lock file; the other's rows go with it.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..rows.heartbeat import is_heartbeat
from .outbox import Depth, Outbox
from .select import wanted
from .transport import Accepted, Entry, Refused, Retry, Transport

BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 300.0
# A batch much smaller than the transport takes waits this long for more rows first (unless
# the run is ending): a sweep delivers a few rows a directory, and one send, one transaction
# and one acknowledgement per few rows would cost the sweep more than the rows do.
LINGER_S = 0.25
RETRY_AFTER_MAX_S = 3600.0
_IDLE_POLL_S = 1.0  # how often an idle forwarder looks for rows another process wrote


def entry_of(row: dict) -> Entry:
    """A row as the outbox keeps it (transport.py: Entry)."""
    stamp = row.get("Timestamp")
    try:
        when = dt.datetime.fromisoformat(stamp).timestamp() if stamp else time.time()
    except (TypeError, ValueError):
        when = time.time()
    body = json.dumps(row, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    # A heartbeat goes with the detections, ahead of inventory (rows/heartbeat.py).
    urgent = bool(row.get("RuleId")) or is_heartbeat(row)
    return Entry(body, when, str(row.get("DeviceName") or ""), urgent)


@dataclass(slots=True)
class Report:
    """What a forwarding sink did in this process, for the summary and the exit status."""

    written: int = 0  # rows committed to the outbox
    delivered: int = 0  # rows the receiver accepted (written by this run or an earlier one)
    aside: int = 0
    dropped_inventory: int = 0
    dropped_detections: int = 0
    retries: int = 0
    last_retry: str = ""  # the reason of the latest Retry, for a summary that says why
    notes: collections.deque = field(default_factory=collections.deque)  # messages to show


class ForwardingSink:
    def __init__(
        self,
        name: str,
        transport: Transport,
        outbox_path: Path,
        emit: str,
        max_bytes: int,
        deliver: bool = True,
    ):
        self.name, self.transport, self.emit, self.max_bytes = name, transport, emit, max_bytes
        self.outbox_path = outbox_path
        self.outbox = Outbox(outbox_path)  # the writer's connection: the engine's thread
        self.before = self.outbox.last_id()  # rows stored after this one are this run's
        self.report = Report()
        self._deliver = deliver
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hurry = threading.Event()  # the run is ending: send what there is, now
        self._changed = threading.Condition()
        self._generation = 0  # writes made; the forwarder found the outbox empty after ...
        self._empty_at = -1  # ... this many
        self._failure: BaseException | None = None

    # -- the sink contract ---------------------------------------------------------------------
    def write(self, rows: Sequence[dict]) -> None:
        entries = [entry_of(row) for row in rows if wanted(row, self.emit)]
        if not entries:
            return
        dropped = self.outbox.put(entries, self.max_bytes)
        report = self.report
        report.written += len(entries)
        if dropped:
            report.dropped_inventory += dropped.inventory
            report.dropped_detections += dropped.detections
            report.notes.append(
                f"sink {self.name}: the outbox is full ({self.max_bytes // 2**20} MiB): "
                f"dropped {dropped.inventory} inventory rows and {dropped.detections} "
                "detections, the oldest first"
            )
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        self.start()

    def flush(self) -> None:
        """Nothing to do: a row is on disk once written."""

    def start(self) -> None:
        """Start delivering in the background (on the first write, or now)."""
        if self._deliver and self._thread is None:
            self._thread = threading.Thread(
                target=self._forward, name=f"forward-{self.name}", daemon=True
            )
            self._thread.start()

    def drain(self, timeout: float) -> Depth:
        """Deliver what waits, for at most `timeout` seconds; returns what is left."""
        self._hurry.set()
        self.start()
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self._generation
            self._changed.notify_all()
            while self._empty_at < target and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    break
                self._changed.wait(min(left, _IDLE_POLL_S))
        return self.outbox.depth()

    def close(self) -> None:
        """Stop delivering (what is left stays in the outbox for the next run)."""
        self._stop.set()
        self._hurry.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            # A send in flight ends by the transport's own timeout; the thread is not awaited
            # longer than that: what it was sending is still in the outbox.
            self._thread.join(timeout=5)
        self.outbox.close()
        if self._failure is not None:
            raise self._failure

    # -- the forwarding thread -----------------------------------------------------------------
    def _forward(self) -> None:
        try:
            with _delivery_lock(self.outbox_path, self._stop) as held:
                if held:
                    self._deliver_loop()
        except BaseException as exc:  # reported by close(): a bug must not pass silently
            if not self._stop.is_set():  # else: the outbox was closed under a late send
                self._failure = exc
        finally:
            with contextlib.suppress(Exception):
                self.transport.close()
            with self._changed:
                self._changed.notify_all()

    def _deliver_loop(self) -> None:
        outbox = self.outbox  # shared with the writer, under its lock
        transport, report = self.transport, self.report
        failures = 0
        lingered = False
        pending: list[list[tuple[int, Entry]]] = []
        while not self._stop.is_set():
            if not pending:
                with self._changed:
                    seen = self._generation
                batch = outbox.peek(transport.max_batch_rows, transport.max_batch_bytes)
                if not batch:
                    with self._changed:
                        self._empty_at = seen
                        self._changed.notify_all()
                        if self._generation == seen and not self._stop.is_set():
                            self._changed.wait(_IDLE_POLL_S)
                    continue
                if len(batch) < transport.max_batch_rows // 2 and not lingered:
                    lingered = True
                    self._hurry.wait(LINGER_S)
                    continue
                lingered = False
                pending = [batch]
            batch = pending.pop(0)
            sendable = []
            for row_id, entry in batch:
                why = transport.unsendable(entry)
                if why is None:
                    sendable.append((row_id, entry))
                else:
                    self._set_aside(outbox, row_id, why)
            if not sendable:
                continue
            answer = transport.send([entry for _, entry in sendable])
            if isinstance(answer, Accepted):
                outbox.remove(row_id for row_id, _ in sendable)
                report.delivered += len(sendable)
                failures = 0
            elif isinstance(answer, Refused):
                if len(sendable) == 1:
                    self._set_aside(outbox, sendable[0][0], answer.reason)
                else:  # find the row it refuses: the others go on
                    half = len(sendable) // 2
                    pending[:0] = [sendable[:half], sendable[half:]]
            elif isinstance(answer, Retry):
                pending = []  # read again after the wait: detections first, new ones too
                report.retries += 1
                report.last_retry = answer.reason
                failures += 1
                self._stop.wait(_delay(answer, failures))

    def _set_aside(self, outbox: Outbox, row_id: int, reason: str) -> None:
        outbox.set_aside(row_id, reason)
        self.report.aside += 1
        self.report.notes.append(f"sink {self.name}: a row was refused and set aside: {reason}")


def _delay(answer: Retry, failures: int) -> float:
    if answer.after is not None:
        return min(max(answer.after, 0.0), RETRY_AFTER_MAX_S)
    ceiling = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures - 1, 20))
    return random.uniform(ceiling / 2, ceiling)


@contextlib.contextmanager
def _delivery_lock(outbox_path: Path, stop: threading.Event):
    """Held while this process delivers the outbox; waits while another process does."""
    try:
        import fcntl
    except ImportError:  # Windows: SQLite's own locking keeps the rows whole; two
        yield True  # processes delivering at once may send a row twice (at least once)
        return
    path = outbox_path.with_suffix(".lock")
    with open(path, "a+b") as lock:
        while True:
            try:
                fcntl.lockf(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if stop.wait(_IDLE_POLL_S):
                    yield False
                    return
        try:
            yield True
        finally:
            fcntl.lockf(lock.fileno(), fcntl.LOCK_UN)

