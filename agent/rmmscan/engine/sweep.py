"""The local sweep: walk (sources/walk.py) → engine.judge per file → engine.deliver.

Workers list a directory, look its files up in the scan cache, open what missed, and have the
engine judge every file; they hand one ``Batch`` per directory to the calling thread, which
alone delivers (ReportIds, sinks, the cache) and draws progress. Files are recognised by
content ("MZ" and a PE header), never by name.

The workers are processes where the OS can fork and the process has no other thread yet:
judging a PE is Python work, and threads share one core under the GIL. Each process walks the
whole tree but visits only the directories it claims first (sources/claims.py), and sends its
results down a pipe. Elsewhere (Windows, or a process that already runs threads, where forking is
unsafe) they are threads; benchmarks/README.md (fan-out) compares the two.

A stop event ends the sweep early: the walk takes no new directory and the workers no new
file, what was judged is delivered, and the sweep returns within about a second even when a
worker is busy with a large file (its result is then dropped; nothing of it was written).
"""

from __future__ import annotations

import collections
import datetime as dt
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence

from ..sources import claims as claiming
from ..sources.candidate import FileChanged, join
from ..sources.localfile import LocalFile, key_of, listing_of
from ..sources.walk import Tally, Walk, WalkOptions
from .engine import FLAG_PE, FLAG_SIGNED, Batch, Engine, NotPE, problem_of
from .processes import (
    ChildStop,
    can_fork,
    end_processes,
    how_it_ended,
    per_cpu,
    prepare_fork,
    run_child,
)


def default_jobs(roots: Sequence[str], can_fork: bool) -> int:
    """The fan-out by what the work is (benchmarks/README.md, fan-out). Files named one by one
    are judged in this process: a sweep process costs its start and about 40 MiB. A tree gets
    one sweep process per CPU, at most MAX_DEFAULT_JOBS, a rescan too: one process was 1.4
    times slower than two on the benchmark corpus. Where the sweep cannot fork, one worker:
    threads share one core, and two were slower than one."""
    if not can_fork or (roots and all(os.path.isfile(root) for root in roots)):
        return 1
    return per_cpu()


class Sweep:
    def __init__(
        self,
        engine: Engine,
        options: WalkOptions | None = None,
        jobs: int | None = 1,
        source: str = "sweep",
        pace: Callable[[], None] | None = None,
    ):
        self.engine, self.jobs, self.source = engine, jobs, source
        # Called before each file is looked at, in the worker: an agent's CPU budget sleeps
        # there (agent/pacing.py), so the walk slows and nothing else waits.
        self.pace = pace
        self.options = options or WalkOptions()
        self.cache = engine.cache
        self.fingerprint = engine.fingerprint  # of rules, allowlist, emit policy and trust
        # Worker → calling thread. A deque the caller drains on a timer, not a Queue: a
        # Queue wakes the caller for every directory, and under the GIL that hand-off costs
        # a rescan more than the walk itself (benchmarks/README.md, sweep profile).
        self.results: collections.deque[tuple[str, Batch]] = collections.deque()
        self._walked = threading.Event()
        self._send = None  # in a sweep process: sends a Batch to the parent
        self.stop = threading.Event()
        self.now = dt.datetime.now(dt.UTC)

    # -- worker side ---------------------------------------------------------------------
    def visit(self, root: str, directory, files: list[str], followed: frozenset[str]) -> None:
        path = directory.path
        result = Batch(path, files=len(files))
        cache = self.cache
        cached = cache.lookup_dir(path) if cache is not None else None
        stop = self.stop
        pace = self.pace
        for seen, name in enumerate(files):
            if pace is not None:
                pace()
            if stop.is_set():
                result.files = seen  # the files left were not looked at
                break
            follow = name in followed
            try:
                record = listing = None
                if cached:
                    st = directory.stat_child(name, follow)
                    hit = cached.get(name)  # (name, key, judged, flags, rsum, sum)
                    if hit is not None and hit[1] == key_of(st) and cache.sound(path, name, hit):
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
                        record = cache.record(path, name, hit)
                        if record is not None:  # else gone since the lookup, or damaged: read it
                            result.cached += 1
                            listing = listing_of(st)
                candidate = LocalFile(directory, name, follow, self.source)
                try:
                    outcome = self.engine.judge(candidate, self.now, record, listing)
                except FileChanged:
                    if record is None:
                        raise
                    # The record is of the file as listed; what is there now is read afresh.
                    result.cached -= 1
                    outcome = self.engine.judge(candidate, self.now)
                if type(outcome) is not NotPE:
                    result.add(name, outcome)
                elif cache is not None:  # most files: Batch.add's work, inline
                    result.store.append((name, outcome.listing.key, None, None, 0))
            except Exception as exc:  # a bug on one file must not end a machine's sweep
                result.problems.append(problem_of(join(path, name), exc))
        if cache is None:
            result.store.clear()  # nothing to learn it: not sent, not pickled
        if cached and not stop.is_set():
            listed_names = set(files)
            result.gone = [name for name in cached if name not in listed_names]
        if self._send is not None:
            if result.rows or result.suppressed or result.store or result.gone or result.problems:
                self._send(("dir", (root, result)))
            else:  # most directories of a rescan: counts alone (a Batch pickles at 6x)
                self._send(("counts", (root, path, result.files, result.pe, result.signed,
                                       result.cached)))  # fmt: skip
            return
        while len(self.results) >= _BACKLOG and not self._walked.is_set():
            time.sleep(0.002)  # the writer is behind (a slow pipe): wait, keep memory flat
        self.results.append((root, result))

    # -- the calling thread ------------------------------------------------------------------
    def run(
        self,
        roots: Sequence[str],
        tick: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> Tally:
        """Sweep `roots`, delivering every batch through the engine here, in this thread, and
        calling ``tick(current root)`` at least every quarter second (progress). Returns the
        walk's tally: what it skipped, counted. ``stop`` ends the sweep early (see above);
        the clock certificates are judged by is read now, once per sweep."""
        if stop is not None:
            self.stop = stop
        # Where this process may not fork, the workers are threads.
        forkable = can_fork()
        if self.jobs is None:  # None: chosen by what the work is
            self.jobs = default_jobs(roots, forkable)
        self.now = dt.datetime.now(dt.UTC)
        self._walked.clear()
        problems: collections.deque = collections.deque()
        tally = Tally(on_problem=lambda *problem: problems.append(problem))
        stats = self.engine.stats
        self.current_root = roots[0] if roots else ""

        def take(item) -> None:
            while problems:
                stats.problem(*problems.popleft())
            if item is not None:
                self.current_root, batch = item
                self.engine.deliver(batch)
            if tick is not None:
                tick(self.current_root)

        try:
            if self.jobs > 1 and forkable:
                self._run_processes(roots, tally, take)
            else:
                walk = Walk(roots, self.visit, tally, self.options, self.jobs, stop=self.stop)
                self._run_threads(walk, take)
            take(None)
        finally:
            self.engine.stats.interrupted |= self.stop.is_set()
        for what, n in tally.counts.items():
            if what != "directories":
                stats.count(what, n)
        return tally

    def _run_threads(self, walk: Walk, take) -> None:
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
        deadline = None
        while True:
            walked = self._walked.wait(_DRAIN_S)
            while results:
                take(results.popleft())
            take(None)  # a chance to redraw progress
            if walked:
                break
            if self.stop.is_set():
                # A worker may be deep in a large file: it is given a moment, then left
                # behind (a daemon thread; what it finds is never delivered).
                deadline = deadline or time.monotonic() + _GRACE_S
                if time.monotonic() >= deadline:
                    return
        thread.join()
        while results:  # appended between the last drain and the end of the walk
            take(results.popleft())
        if failure:
            raise failure[0]

    def _run_processes(self, roots, tally: Tally, take) -> None:
        context = multiprocessing.get_context("fork")
        shared_stop = prepare_fork()
        children = []
        receivers = []
        jobs = self.jobs
        claims = claiming.make(jobs)
        for share in range(jobs):
            receiver, sender = context.Pipe(duplex=False)
            receivers.append(receiver)
            child = context.Process(
                target=self._child,
                args=(roots, share, jobs, claims, sender, tuple(receivers), shared_stop),
                name=f"rmmscan-sweep-{share}",
                daemon=True,
            )
            child.start()
            sender.close()
            children.append((child, receiver))
        waiting = {receiver: (child, share) for share, (child, receiver) in enumerate(children)}
        ended: set[int] = set()
        deadline = None
        wait_s = _STOP_S
        try:
            while waiting:
                if self.stop.is_set():
                    shared_stop[0] = 1
                    deadline = deadline or time.monotonic() + _GRACE_S
                    if time.monotonic() >= deadline:
                        wait_s = 0.0  # what they are still reading is not wanted
                        break
                for receiver in multiprocessing.connection.wait(list(waiting), _PROGRESS_S):
                    try:
                        messages = receiver.recv()
                    except EOFError:
                        child, share = waiting.pop(receiver)
                        child.join()
                        if share not in ended and not self.stop.is_set():
                            tally.problem(
                                roots[0] if len(roots) == 1 else ", ".join(roots),
                                "failed",
                                f"sweep process {share} of {jobs} ended early "
                                f"({how_it_ended(child.exitcode)}): the directories it "
                                "owned may not all have been swept",
                            )
                        continue
                    for kind, payload in messages:
                        if kind == "dir":
                            take(payload)
                        elif kind == "counts":
                            root, *counts = payload
                            path, files, pe, signed, cached = counts
                            take((root, Batch(path, files, pe, signed, cached)))
                        elif kind == "problem":
                            tally.problem(*payload)
                        elif kind == "cache" and self.cache is not None:
                            self.cache.failed(*payload)
                        elif kind == "end":
                            ended.add(waiting[receiver][1])
                            for what, n in payload.items():
                                tally.count(what, n)
                take(None)
        except BaseException:
            shared_stop[0] = 1  # Ctrl-C, output closed: the others stop too
            raise
        finally:
            end_processes([child for child, _ in children], wait_s)
            for child, receiver in children:
                child.join()
                receiver.close()
            if claims is not None:
                claims.close()
            shared_stop.close()

    def _child(self, roots, share, shares, claims, sender, receivers, shared_stop) -> None:
        """One sweep process: its share of the directories, results down the pipe; how it
        ends, run_child says."""
        run_child(lambda: self._child_body(roots, share, shares, claims, sender, receivers,
                                           shared_stop))  # fmt: skip

    def _child_body(self, roots, share, shares, claims, sender, receivers, shared_stop):
        # The read ends it inherited: were one left open, a parent that died (SIGTERM,
        # OOM) would leave this process blocked on a full pipe forever, not ended by it.
        for receiver in receivers:
            receiver.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent reports it
        self.stop = stop = ChildStop(shared_stop)
        # SIGTERM (to the whole process group, from a deployment tool): this process
        # stops as the parent does, at the next file, and reports what it has.
        signal.signal(signal.SIGTERM, stop.signalled)
        lock = threading.Lock()
        batch: list = []
        sent = time.monotonic()

        def send(message, flush: bool = False) -> None:
            # Batched: a message a directory costs a pickle and a wake-up each.
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
            cache.forked()
            cache.warn = lambda _message: send(("cache", (cache.failure, cache.damaged)))

        def owns(path: str) -> bool:
            if claims is not None:
                return claims.owns(path, share)
            return claiming.fixed_owner(path, shares) == share

        Walk(roots, self.visit, tally, self.options, 1, owns=owns, stop=stop).run()
        send(("end", tally.counts), flush=True)


_BACKLOG = 1024  # directories waiting for the writer
_DRAIN_S = 0.02
_PROGRESS_S = 0.1  # the parent wakes at least this often: progress, and a stop
_STOP_S = 2.0
_GRACE_S = 0.5  # a stopped sweep waits this long for a worker in the middle of a file
_BATCH, _BATCH_S = 64, 0.05  # a sweep process's messages: at most this many, or this late
