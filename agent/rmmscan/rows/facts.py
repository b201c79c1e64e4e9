"""What is known of one file, computed a group of columns at a time and only on first use.

The FILE group comes from the path and a stat; a PE's rows (one per signature) need its
certificate table parsed; version information, hashes and verification are computed only when
a rule reaches them or a row is emitted, and only hashes and verification read the whole file.
A cache record (state/cache.py) pre-fills the groups an earlier scan computed, so an unchanged file
is not opened at all unless a new rule needs a group the record lacks.

A file larger than the read bound (``max_read``, inspect/hashes.py DEFAULT_MAX_READ) is never
read whole: its signature rows are made as for any file (the rules still find it), every row
carries ``too_large_to_read``, its hashes are null and its signatures NotChecked, whatever a
cache record holds, so that its rows depend on the file and the options only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Callable
from typing import BinaryIO

from ..inspect.hashes import DEFAULT_MAX_READ, over_bound
from ..inspect.model import Anomaly
from ..sources.candidate import FileChanged
from . import build as rows
from .columns import FILE, GROUP, HASH, NAMES, SIGNATURE, VERDICT, VERSION


def with_anomaly(anomalies: str | None, anomaly: str) -> str:
    """The Anomalies column (a JSON array) with one more; a value that is not such an array
    (it never is, but a finding must not be lost to it) is kept as an entry of its own."""
    try:
        values = json.loads(anomalies) if anomalies else []
    except ValueError:
        values = [anomalies]
    if not isinstance(values, list):
        values = [values]
    if anomaly not in values:
        values.append(anomaly)
    return json.dumps(values)


class FileFacts:
    def __init__(
        self,
        file: dict,
        opener: Callable[[], BinaryIO],
        inspector,
        record: dict | None = None,
        now: dt.datetime | None = None,
        generation: str = "",
        max_read: int = DEFAULT_MAX_READ,
    ):
        self.file = file  # the FILE group
        self._opener = opener
        self._inspector = inspector
        self._stream: BinaryIO | None = None
        self._inspection = None
        # See _hash_meanwhile: the thread, its result (or exception), and its stop.
        self._hashing: tuple[threading.Thread, list, threading.Event] | None = None
        # What a cache record holds: "pe", and the groups "sig" and "verdict" (lists, one per
        # row), "version" and "hash" (dicts), and "gen" (the trust options of the verdicts).
        self.record: dict = dict(record) if record else {}
        self.computed = False  # a group was computed that the record lacked: store it
        # Why the file is not the one listed any more, when reading it showed that (its rows
        # are still made from what was read; the caller marks them and does not cache them).
        self.changed: str | None = None
        self.now = now or dt.datetime.now(dt.UTC)
        self.generation = generation  # of the trust options: verdicts of others don't count
        # Why the file is not hashed or verified (it is over the read bound), or None. The
        # record keeps only what was read; the marks, null hashes and NotChecked verdicts are
        # made over it here (the caller reports the file, and does not cache its outcome).
        self.too_large: str | None = over_bound(file["FileSize"], max_read)
        self._marked: list[dict] | None = None  # its signature rows, marked too_large_to_read
        self._unverified: list[dict] | None = None  # and their verdicts, NotChecked
        if self.record.get("verdict") is not None and (
            self.record.get("gen") != generation or self._verdicts_stale()
        ):
            del self.record["verdict"]

    # -- the stream and the inspection ----------------------------------------------------
    @property
    def stream(self) -> BinaryIO:
        if self._stream is None:
            self._stream = self._opener()
        return self._stream

    @property
    def opened(self) -> bool:
        return self._stream is not None

    def close(self) -> None:
        if self._hashing is not None:  # it reads the descriptor about to be closed
            thread, _, stop = self._hashing
            stop.set()  # nobody asked for the hashes (a row the allowlist suppressed)
            thread.join()
            self._hashing = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    @property
    def inspection(self):
        if self._inspection is None:
            from ..inspect import inspect_stream

            self._inspection = inspect_stream(self.stream, self.file["FileSize"])
        return self._inspection

    @property
    def inspected(self) -> bool:
        return self._inspection is not None

    @property
    def errors(self) -> list[str]:
        """Unexpected exceptions inspection caught and recorded (its rows are still made)."""
        if self._inspection is None:
            return []
        return list(getattr(self._inspection, "errors", None) or [])

    @property
    def is_pe(self) -> bool:
        if "pe" not in self.record:
            self.record["pe"] = self.inspection.is_pe
            self.computed = True
        return self.record["pe"]

    # -- the groups -------------------------------------------------------------------------
    def _group(self, name: str, compute: Callable[[], object]):
        value = self.record.get(name)
        if value is None:
            value = self.record[name] = compute()
            self.computed = True
        return value

    def signature_rows(self) -> list[dict]:
        found = self._group("sig", lambda: rows.signature_rows(self.inspection))
        if self.too_large is None:
            return found
        if self._marked is None:
            mark = str(Anomaly.TOO_LARGE)
            self._marked = [dict(r, Anomalies=with_anomaly(r["Anomalies"], mark)) for r in found]
        return self._marked

    def version(self) -> dict:
        def compute():
            from ..inspect import version_info

            # The header inspection parsed, when it ran (not for a file known from the cache).
            header = self._inspection.header if self._inspection is not None else None
            found = version_info(self.stream, self.file["FileSize"], header)
            return rows.version_columns(found)

        return self._group("version", compute)

    def hashes(self) -> dict:
        if self.too_large is not None:
            return dict(rows.NOT_HASHED)

        def compute():
            from ..inspect import hash_stream

            size = self.file["FileSize"]
            hashes = self._hashed() or hash_stream(self.stream, size)
            # The listed size is hashed, never more: a file a writer keeps growing would
            # otherwise be read for ever. One byte past it, or fewer bytes, means it changed;
            # what was read is still reported (dropping the file would drop a finding).
            if hashes.size != size or _byte_at(self.stream, size):
                self.changed = f"changed while it was read ({size:,} bytes listed)"
            return rows.hash_columns(hashes)

        return self._group("hash", compute)

    def verdict_rows(self) -> list[dict]:
        if self.too_large is not None:
            if self._unverified is None:
                self._unverified = rows.unread_verdict_rows(self.signature_rows(), self.too_large)
            return self._unverified

        def compute():
            inspection = self.inspection
            self._hash_meanwhile()
            verdicts = self._inspector.verify(self.stream, inspection, self.now)
            self.record["gen"] = self.generation
            return rows.verdict_rows(inspection, verdicts)

        return self._group("verdict", compute)

    def _hash_meanwhile(self) -> None:
        """A large file about to be verified is hashed in a thread at the same time.

        Both read the whole file in C code that releases the GIL (bench_inspect.py's 1 GiB
        file: verify 1.12 s, hashes 1.75 s), and a file whose verdict is asked for is nearly
        always one whose row is emitted, so its hashes come next.
        pread leaves the descriptor's offset to the verification's reads. When no row is
        emitted after all (an allowlisted deployment), close() stops it at the next chunk.
        """
        from ..inspect.hashes import CAN_PREAD, PARALLEL_MIN

        if (
            not CAN_PREAD
            or self._hashing is not None
            or self.record.get("hash") is not None
            or self.file["FileSize"] < PARALLEL_MIN
        ):
            return
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (tests' BytesIO)
            return
        from ..inspect.hashes import hash_fd

        box: list = []
        stop = threading.Event()
        size = self.file["FileSize"]

        def run() -> None:
            try:
                box.append(hash_fd(fd, stop, size))
            except BaseException as exc:  # handed to whoever asks for the hashes
                box.append(exc)

        thread = threading.Thread(target=run, name="hash", daemon=True)
        thread.start()
        self._hashing = (thread, box, stop)

    def _hashed(self):
        """The hashes _hash_meanwhile computed (waiting for them), or None."""
        if self._hashing is None:
            return None
        thread, box, _ = self._hashing
        thread.join()
        self._hashing = None
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _verdicts_stale(self) -> bool:
        """A verdict judged 'now' (no timestamp) expires with the certificate."""
        now = rows.iso(self.now)
        for sig, verdict in zip(self.record.get("sig") or [], self.record["verdict"], strict=False):
            expires = sig.get("CertificateExpirationTime")
            if (
                verdict.get("IsTrusted")
                and not sig.get("CertificateCountersignatureTime")
                and expires is not None
                and expires < now
            ):
                return True
        return False

    # -- rows -------------------------------------------------------------------------------
    def row_count(self) -> int:
        return len(self.signature_rows()) if self.is_pe else 0

    def value(self, index: int, name: str):
        group = GROUP[name]
        if group == FILE:
            return self.file[name]
        if group == SIGNATURE:
            return self.signature_rows()[index][name]
        if group == VERSION:
            return self.version()[name]
        if group == HASH:
            return self.hashes()[name]
        if group == VERDICT:
            return self.verdict_rows()[index][name]
        raise KeyError(f"{name} is only known when the row is emitted")

    def getter(self, index: int) -> Callable[[str], object]:
        """A memoizing column reader for one row, the shape rules evaluate against."""
        seen: dict[str, object] = {}

        def get(name: str):
            try:
                return seen[name]
            except KeyError:
                value = seen[name] = self.value(index, name)
                return value

        return get

    def row(self, index: int) -> dict:
        """Every column of one row but Timestamp, ReportId, RuleId and RuleName."""
        out = dict.fromkeys(NAMES)
        out.update(self.file)
        out.update(self.signature_rows()[index])
        out.update(self.version())
        verdict = self.verdict_rows()[index]  # first: a large file is hashed meanwhile
        out.update(self.hashes())
        out.update(verdict)
        return out

    def partial_row(self, index: int) -> tuple[dict, list[BaseException]]:
        """One row with every group that can still be computed (the others null), and what
        failed: when completing a row fails, the row is still worth emitting."""
        out = dict.fromkeys(NAMES)
        out.update(self.file)
        out.update(self.signature_rows()[index])
        failures: list[BaseException] = []
        for compute in (self.version, lambda: self.verdict_rows()[index], self.hashes):
            try:
                out.update(compute())
            except FileChanged:
                raise
            except Exception as exc:
                failures.append(exc)
        return out, failures


def _byte_at(stream: BinaryIO, offset: int) -> bytes:
    """The byte at `offset`, if the file has one, read with pread where there is pread: the
    descriptor's offset is left to whoever else reads it."""
    from ..inspect.hashes import CAN_PREAD

    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file: the only reader
        fd = None
    if fd is not None and CAN_PREAD:
        return os.pread(fd, 1, offset)
    stream.seek(offset)
    return stream.read(1)
