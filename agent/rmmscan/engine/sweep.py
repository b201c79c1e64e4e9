"""The one-off sweep: walk (sources/walk.py) → facts → pipeline → one writer.

Workers list a directory, look its files up in the scan cache, open what missed, and judge
every PE; they hand one ``DirResult`` per directory to the calling thread, which alone
allocates ReportIds, writes sinks and the cache, and draws progress. Files are recognised by
content ("MZ" and a PE header), never by name.

The workers are processes where the OS can fork: judging a PE is Python work, and threads
share one core under the GIL (measured: 2 threads were slower than 1 on files in memory).
Each process walks the whole tree but visits only the directories it claims first (claims.py),
and sends its results down a pipe; elsewhere (Windows) they are threads.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..inspect.model import Anomaly
from ..rows import build as rows
from ..rows.facts import FileChanged, FileFacts, same_file, with_anomaly
from ..rules.judge import Pipeline
from ..sources import claims as claiming
from ..sources.dirs import NotRegular, open_regular
from ..sources.walk import Tally, Walk, WalkOptions, join
from ..state.cache import ScanCache, key_of
from ..text import printable

CAN_FORK = "fork" in multiprocessing.get_all_start_methods()


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
        # Worker → calling thread. A deque the caller drains on a timer, not a Queue: a
        # Queue wakes the caller for every directory, and under the GIL that hand-off was
        # half of the 22 % of walk and hand-off in run A's rescan (benchmarks/README.md).
        self.results: collections.deque[DirResult] = collections.deque()
        self._walked = threading.Event()
        self._send = None  # in a sweep process: sends a DirResult to the parent
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
                    hit = cached.get(name)  # (name, key, judged, flags, rsum, sum)
                    if (
                        hit is not None
                        and hit[1] == key_of(listed)
                        and self.cache.sound(path, name, hit)
                    ):
                        flags = hit[3]
                        if not flags & FLAG_PE:
                            result.cached += 1
                            continue  # not a PE, unchanged: the fast path of a rescan
                        if hit[2] is not None and hit[2] == self.fingerprint:
                            # Judged by these very rules, allowlist and policy, from columns
                            # that do not change with time: nothing to emit, as before.
                            result.cached += 1
                            result.pe += 1
                            result.signed += bool(flags & FLAG_SIGNED)
                            continue
                        record = self.cache.record(path, name, hit)
                        if record is not None:  # else gone since the lookup, or damaged: read it
                            result.cached += 1
                try:
                    self._file(result, directory, name, follow, record, listed)
                except FileChanged:
                    if record is None:
                        raise
                    # The record is of the file as listed; what is there now is read afresh.
                    result.cached -= 1
                    self._file(result, directory, name, follow, None, None)
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
                message = printable(f"internal error: {type(exc).__name__}: {exc}")
                result.problems.append((join(path, name), "failed", message))
        if cached:
            listed_names = set(files)
            result.gone = [name for name in cached if name not in listed_names]
        if self._send is not None:
            if result.rows or result.suppressed or result.store or result.gone or result.problems:
                self._send(("dir", result))
            else:  # most directories of a rescan: counts alone (a DirResult pickles at 6x)
                self._send(("counts", (root, path, result.files, result.pe, result.signed,
                                       result.cached)))  # fmt: skip
            return
        while len(self.results) >= _BACKLOG and not self._walked.is_set():
            time.sleep(0.002)  # the writer is behind (a slow pipe): wait, keep memory flat
        self.results.append(result)

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
                if self.cache is not None:
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
            # never dropped), marked, counted, and not cached: the next sweep reads it again.
            changed = facts.changed
            opened = facts.opened
            if not changed and opened and not same_file(listed, os.fstat(facts.stream.fileno())):
                changed = "changed while it was read"
            errors = facts.errors
        finally:
            facts.close()
        # Exception texts can quote what the file holds: made printable like any name.
        problems = [(full, kind, printable(message)) for kind, message in judgement.problems]
        problems += [
            (full, "failed", f"internal error in inspection: {printable(e)}") for e in errors
        ]
        if changed:
            problems.append((full, "changed", changed))
            mark = str(Anomaly.CHANGED_DURING_READ)
            for row in judgement.rows:
                row["Anomalies"] = with_anomaly(row["Anomalies"], mark)
        result.problems.extend(problems)
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
        if self.cache is None or problems or not (facts.computed or judged is not None):
            return  # nothing the cache does not already hold, or nothing it should
        if not facts.is_pe:
            result.store.append((name, key_of(listed), None, None, 0))
            return
        flags = FLAG_PE | (FLAG_SIGNED if judgement.signed else 0)
        result.store.append((name, key_of(listed), facts.record, judged, flags))

    # -- the calling thread ------------------------------------------------------------------
    def run(
        self,
        roots: Sequence[str],
        tally: Tally,
        options: WalkOptions,
        jobs: int,
        consume: Callable[[DirResult | None], None],
    ) -> None:
        """Walk with `jobs` workers; hand every DirResult to `consume` here, in this thread."""
        if jobs > 1 and CAN_FORK:
            self._run_processes(roots, tally, options, jobs, consume)
        else:
            self._run_threads(Walk(roots, self.visit, tally, options, jobs), consume)

    def _run_threads(self, walk: Walk, consume) -> None:
        failure: list[BaseException] = []

        def drive():
            try:
                walk.run()
            except BaseException as exc:
                failure.append(exc)
            finally:
                self._walked.set()

        thread = threading.Thread(target=drive, name="walk", daemon=True)
        thread.start()
        results = self.results
        while True:
            walked = self._walked.wait(_DRAIN_S)
            while results:
                consume(results.popleft())
            consume(None)  # a chance to redraw progress
            if walked:
                break
        thread.join()
        while results:  # appended between the last drain and the end of the walk
            consume(results.popleft())
        if failure:
            raise failure[0]

    def _run_processes(self, roots, tally: Tally, options, jobs: int, consume) -> None:
        context = multiprocessing.get_context("fork")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # a child must not inherit, and write again, buffered output
        children = []
        receivers = []
        claims = claiming.make(jobs)
        for share in range(jobs):
            receiver, sender = context.Pipe(duplex=False)
            receivers.append(receiver)
            child = context.Process(
                target=self._child,
                args=(roots, options, share, jobs, claims, sender, tuple(receivers)),
                name=f"rmmscan-sweep-{share}",
                daemon=True,
            )
            child.start()
            sender.close()
            children.append((child, receiver))
        tally.current_root = roots[0] if roots else ""  # until a directory says otherwise
        waiting = {receiver: (child, share) for share, (child, receiver) in enumerate(children)}
        ended: set[int] = set()
        try:
            while waiting:
                for receiver in multiprocessing.connection.wait(list(waiting), _PROGRESS_S):
                    try:
                        messages = receiver.recv()
                    except EOFError:
                        child, share = waiting.pop(receiver)
                        child.join()
                        if share not in ended:
                            tally.problem(
                                roots[0] if len(roots) == 1 else ", ".join(roots),
                                "failed",
                                f"sweep process {share} of {jobs} ended early "
                                f"({_how_it_ended(child.exitcode)}): the directories it "
                                "owned may not all have been swept",
                            )
                        continue
                    for kind, payload in messages:
                        if kind == "dir":
                            tally.current_root = payload.root
                            consume(payload)
                        elif kind == "counts":
                            tally.current_root = payload[0]
                            consume(DirResult(*payload))
                        elif kind == "problem":
                            tally.problem(*payload)
                        elif kind == "cache" and self.cache is not None:
                            self.cache.failed(*payload)
                        elif kind == "end":
                            ended.add(waiting[receiver][1])
                            for what, n in payload.items():
                                tally.count(what, n)
                consume(None)
        except BaseException:
            for child, _ in children:  # Ctrl-C, output closed: the others stop too
                child.terminate()
            for child, _ in children:
                child.join(_STOP_S)
                if child.exitcode is None:  # stopped (SIGSTOP), or ignoring SIGTERM
                    child.kill()
            raise
        finally:
            for child, receiver in children:
                child.join()
                receiver.close()
            if claims is not None:
                claims.close()

    def _child(self, roots, options, share: int, shares: int, claims, sender, receivers) -> None:
        """One sweep process: its share of the directories, results down the pipe.

        Leaves with os._exit: nothing inherited from the parent (the scan cache's and the
        state's SQLite connections, the output file's buffer) is closed or flushed here.
        """
        code = 0
        try:
            # The read ends it inherited: were one left open, a parent that died (SIGTERM,
            # OOM) would leave this process blocked on a full pipe forever, not ended by it.
            for receiver in receivers:
                receiver.close()
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent reports it
            lock = threading.Lock()
            batch: list = []
            sent = time.monotonic()

            def send(message, flush: bool = False) -> None:
                # Batched: one message per directory was one pickle and one wake-up each.
                nonlocal sent
                with lock:
                    batch.append(message)
                    now = time.monotonic()
                    if flush or len(batch) >= _BATCH or now - sent >= _BATCH_S:
                        sender.send(batch)  # blocks while the pipe is full: memory stays flat
                        batch.clear()
                        sent = now

            self._send = send
            tally = Tally(on_problem=lambda *problem: send(("problem", problem)))
            cache = self.cache
            if cache is not None:  # the parent warns, stops writing, and sets a damaged one aside
                cache.warn = lambda _message: send(("cache", (cache.failure, cache.damaged)))

            def owns(path: str) -> bool:
                if claims is not None:
                    return claims.owns(path, share)
                return claiming.fixed_owner(path, shares) == share

            Walk(roots, self.visit, tally, options, 1, owns=owns).run()
            send(("end", tally.counts), flush=True)
        except (BrokenPipeError, ConnectionResetError):
            code = 1  # the parent is gone: nobody to report to
        except BaseException:
            code = 1
            try:  # a bug, not bad input: the traceback, as a thread's would be
                sys.stderr.write(traceback.format_exc())
                sys.stderr.flush()
            except BaseException:
                pass
        finally:
            os._exit(code)


def _how_it_ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


_BACKLOG = 1024  # directories waiting for the writer
_DRAIN_S = 0.02
_PROGRESS_S = 0.25
_STOP_S = 2.0
_BATCH, _BATCH_S = 64, 0.05  # a sweep process's messages: at most this many, or this late
