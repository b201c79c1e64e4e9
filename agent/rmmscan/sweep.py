"""The one-off sweep: walk (sources/walk.py) → facts → pipeline → one writer thread.

Worker threads list a directory, look its files up in the scan cache, open what missed,
and judge every PE; they hand one ``DirResult`` per directory to the calling thread, which
alone allocates ReportIds, writes sinks and the cache, and draws progress. Files are
recognised by content ("MZ" and a PE header), never by name.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from . import rows
from .cache import ScanCache, key_of, parse_record
from .facts import FileChanged, FileFacts, same_file
from .pipeline import Pipeline
from .sources.dirs import NotRegular, open_regular
from .sources.walk import Tally, Walk, WalkOptions, join

_FILE_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@dataclass(slots=True)
class DirResult:
    root: str
    path: str
    files: int = 0
    pe: int = 0
    signed: int = 0
    cached: int = 0
    rows: list[dict] = field(default_factory=list)
    detections: int = 0
    suppressed: list[tuple[str, str]] = field(default_factory=list)
    store: list[tuple] = field(default_factory=list)  # (name, key, record, judged, flags)
    gone: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (path, kind, message)


FLAG_PE, FLAG_SIGNED = 1, 2


class Sweep:
    def __init__(
        self,
        pipeline: Pipeline,
        inspector,
        device,
        cache: ScanCache | None,
        generation: str,
        source: str = "sweep",
        fingerprint: str | None = None,
    ):
        self.pipeline, self.inspector, self.device = pipeline, inspector, device
        self.cache, self.generation, self.source = cache, generation, source
        self.fingerprint = fingerprint  # of rules, allowlist, emit policy and trust options
        self.results: queue.Queue = queue.Queue(maxsize=256)
        self.now = dt.datetime.now(dt.UTC)

    # -- worker side ---------------------------------------------------------------------
    def visit(self, root: str, directory, files: list[str], followed: frozenset[str]) -> None:
        path = directory.path
        result = DirResult(root, path)
        result.files = len(files)
        cached = self.cache.lookup_dir(path) if self.cache is not None else None
        for name in files:
            follow = name in followed
            try:
                record = None
                listed = None
                if cached:
                    listed = directory.stat_child(name, follow)
                    hit = cached.get(name)
                    if hit is not None and hit[0] == key_of(listed):
                        result.cached += 1
                        if hit[1] is None:
                            continue  # not a PE, unchanged: the fast path of a rescan
                        if hit[2] is not None and hit[2] == self.fingerprint:
                            # Judged by these very rules, allowlist and policy, from columns
                            # that do not change with time: nothing to emit, as before.
                            result.pe += 1
                            result.signed += bool(hit[3] & FLAG_SIGNED)
                            continue
                        record = parse_record(hit[1])
                self._file(result, directory, name, follow, record, listed)
            except FileNotFoundError:
                result.problems.append((join(path, name), "vanished", "vanished"))
            except (NotRegular, FileChanged) as exc:
                result.problems.append((join(path, name), "changed", str(exc)))
            except OSError as exc:
                message = exc.strerror or str(exc)
                # ELOOP from O_NOFOLLOW: listed as a file, a symlink by the time it was opened.
                kind = "changed" if exc.errno == errno.ELOOP else "unreadable"
                result.problems.append((join(path, name), kind, message))
            except Exception as exc:  # a bug on one file must not end a machine's sweep
                message = f"internal error: {type(exc).__name__}: {exc}"
                result.problems.append((join(path, name), "failed", message))
        if cached:
            listed_names = set(files)
            result.gone = [name for name in cached if name not in listed_names]
        self.results.put(result)

    def _file(self, result, directory, name: str, follow: bool, record, listed) -> None:
        stream = None
        if record is None:
            fd, listed = open_regular(directory, name, follow)
            try:
                is_mz = os.read(fd, 2) == b"MZ"  # just opened: at offset 0
                if is_mz:
                    stream = os.fdopen(fd, "rb")
            finally:
                if stream is None:
                    os.close(fd)
            if not is_mz:
                result.store.append((name, key_of(listed), None, None, 0))
                return

        def reopen():
            fd, st = open_regular(directory, name, follow)
            if not same_file(listed, st):
                os.close(fd)
                raise FileChanged("changed since it was listed")
            return os.fdopen(fd, "rb")

        full = join(directory.path, name)
        ref = rows.FileRef(full, self.source)
        facts = FileFacts(
            rows.file_columns(ref, self.device, listed.st_size),
            (lambda: stream) if stream is not None else reopen,
            self.inspector,
            record,
            self.now,
            self.generation,
        )
        try:
            judgement = self.pipeline.judge(facts)
            # A file written to while it was read still reports what was read (a finding is
            # never dropped), but is counted and not cached: the next sweep reads it again.
            changed = facts.opened and not same_file(listed, os.fstat(facts.stream.fileno()))
        finally:
            facts.close()
        if changed:
            result.problems.append((full, "changed", "changed while it was read"))
        # The rules' verdict on this file may be remembered only if it cannot change with time:
        # nothing emitted or suppressed, and no verification read (a certificate expires).
        quiet = not judgement.rows and not judgement.suppressed
        judged = self.fingerprint if quiet and "verdict" not in facts.record else None
        if facts.is_pe:
            result.pe += 1
            result.signed += judgement.signed
        result.rows.extend(judgement.rows)
        result.detections += judgement.detections
        result.suppressed.extend(judgement.suppressed)
        if changed or not (facts.computed or judged is not None):
            return  # nothing the cache does not already hold
        if not facts.is_pe:
            result.store.append((name, key_of(listed), None, None, 0))
            return
        flags = FLAG_PE | (FLAG_SIGNED if judgement.signed else 0)
        result.store.append((name, key_of(listed), facts.record, judged, flags))

    # -- the calling thread ------------------------------------------------------------------
    def run(self, walk_factory: Callable[[Callable], Walk], consume: Callable[[DirResult], None]):
        """Walk in worker threads; hand every DirResult to `consume` here, in this thread."""
        walk = walk_factory(self.visit)
        failure: list[BaseException] = []

        def drive():
            try:
                walk.run()
            except BaseException as exc:
                failure.append(exc)
            finally:
                self.results.put(None)

        thread = threading.Thread(target=drive, name="walk", daemon=True)
        thread.start()
        while True:
            try:
                result = self.results.get(timeout=0.25)
            except queue.Empty:
                consume(None)  # a chance to redraw progress
                continue
            if result is None:
                break
            consume(result)
        thread.join()
        if failure:
            raise failure[0]


def make_walk(roots, tally: Tally, options: WalkOptions, jobs: int):
    return lambda visit: Walk(roots, visit, tally, options, jobs)
