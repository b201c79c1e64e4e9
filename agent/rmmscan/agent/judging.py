"""Files the agent's live sources offer, judged by the engine into batches to deliver.

A watch hands over paths whose writing has finished (sources/watch.py); they are opened
relative to their folder, never through a symlink, like the sweep's files, and judged afresh
(a written file has a new cache key anyway). The process source hands over the files running
processes have mapped (sources/processes.py); one file mapped by many processes (a DLL every
process loads) is read and judged once per content, and its rows are copied for each process
with that process's columns, as long as no rule or allowlist entry reads a column that differs
between processes.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import os
from collections.abc import Callable, Iterable, Sequence

from ..engine.engine import Batch, Engine, NotPE, problem_of
from ..inspect.model import Anomaly
from ..rows.build import process_columns
from ..rows.facts import with_anomaly
from ..sources.candidate import Candidate
from ..sources.dirs import FdDir, PathDir, open_root
from ..sources.localfile import LocalFile

# What differs between two processes that map one file: a rule reading it must see each.
PER_PROCESS = frozenset({"ProcessId", "ProcessName", "ProcessCommandLine", "ScanSource"})
MEMO_FILES = 4096  # files remembered for the process source (their rows: detections only)


def judge_paths(
    engine: Engine,
    paths: Iterable[str],
    roots: Sequence[str],
    source: str,
    pace: Callable[[], None],
) -> list[Batch]:
    """One batch per folder, in the order the folders first appear."""
    folders: dict[str, list[str]] = collections.defaultdict(list)
    for path in paths:
        folder, name = os.path.split(path)
        if name:
            folders[folder].append(name)
    now = dt.datetime.now(dt.UTC)
    batches = []
    for folder, names in folders.items():
        batch = Batch(folder)
        try:
            directory = open_folder(folder, roots)
        except OSError as exc:
            # The folder went away with its files (a temporary folder), or is a link or a file
            # now (not followed): nothing to judge, and said so.
            for name in names:
                path = os.path.join(folder, name)
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    batch.problems.append((path, "changed", f"{_SWAPPED}: not followed"))
                else:
                    batch.problems.append(problem_of(path, exc))
            batches.append(batch)
            continue
        try:
            for name in names:
                pace()
                batch.files += 1
                candidate = LocalFile(directory, name, False, source)
                try:
                    outcome = engine.judge(candidate, now)
                except Exception as exc:
                    batch.problems.append(problem_of(candidate.path, exc))
                    continue
                if type(outcome) is NotPE:
                    batch.store.append((name, outcome.listing.key, None, None, 0))
                else:
                    batch.add(name, outcome)
        finally:
            directory.close()
        batches.append(batch)
    return batches


_SWAPPED = "a folder on its path is a symlink or a file now"


def open_folder(folder: str, roots: Sequence[str]) -> FdDir | PathDir:
    """The folder, opened from the root it is under one name at a time, never through a
    symlink, as the sweep's walk opens it: a folder swapped for a link after its event cannot
    make the agent judge files elsewhere under this folder's name. A folder under no root is
    opened by its path (FileNotFoundError when it does not exist)."""
    root = max((r for r in roots if _under(folder, r)), key=len, default=None)
    if root is None:
        return open_root(folder)
    directory = open_root(root)
    path = root
    rest = folder[len(root):].strip(os.sep)
    for name in rest.split(os.sep) if rest else ():
        path = os.path.join(path, name)
        try:
            inner = directory.open_dir(name, path, False)
        finally:
            directory.close()
        directory = inner
    return directory


def _under(folder: str, root: str) -> bool:
    return folder == root or folder.startswith(root.rstrip(os.sep) + os.sep)


class ProcessJudge:
    """Judges the process source's files, each content once while it is remembered."""

    def __init__(self, engine: Engine):
        self.engine = engine
        reads = set(engine.pack.columns)
        if engine.allowlist is not None:
            for entry in engine.allowlist.entries:
                reads |= {c for c in PER_PROCESS if c in entry.where.text}
        self.shared = not (reads & PER_PROCESS)
        # (path, cache key) -> the rows and problems of that content (rows without Timestamp,
        # ReportId or process columns), most recently used last.
        self._memo: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()

    def judge(self, files: Iterable[Candidate], pace: Callable[[], None]) -> Batch:
        batch = Batch("")
        now = dt.datetime.now(dt.UTC)
        for candidate in files:
            pace()
            batch.files += 1
            try:
                self._judge(candidate, now, batch)
            except Exception as exc:
                batch.problems.append(problem_of(candidate.path, exc))
        return batch

    def _judge(self, candidate: Candidate, now: dt.datetime, batch: Batch) -> None:
        listing, stream = candidate.sniff()
        if stream is None:
            return  # not a PE (the .so files of a Linux process)
        stream.close()
        batch.pe += 1
        memo_key = (candidate.path, listing.key)
        known = self._memo.get(memo_key) if self.shared else None
        if known is None:
            outcome = self.engine.judge(candidate, now)
            mark = _how_read(candidate)
            if mark is not None:  # read through the process: not cached, marked on its rows
                for row in outcome.rows:
                    row["Anomalies"] = with_anomaly(row["Anomalies"], mark)
            batch.signed += outcome.signed
            batch.detections += outcome.detections
            batch.suppressed.extend(outcome.suppressed)
            batch.problems.extend(outcome.problems)
            batch.rows.extend(outcome.rows)
            if self.shared and not outcome.problems and mark is None:
                self._remember(memo_key, outcome)
            return
        signed, detections, suppressed, rows = known
        self._memo.move_to_end(memo_key)
        columns = process_columns(candidate.process) if candidate.process else {}
        batch.signed += signed
        batch.detections += detections
        batch.suppressed.extend(suppressed)
        batch.rows.extend({**row, **columns} for row in rows)

    def _remember(self, key: tuple, outcome) -> None:
        rows = [
            {k: v for k, v in row.items() if k not in ("Timestamp", "ReportId")}
            for row in outcome.rows
        ]
        self._memo[key] = (outcome.signed, outcome.detections, list(outcome.suppressed), rows)
        while len(self._memo) > MEMO_FILES:
            self._memo.popitem(last=False)


def _how_read(candidate: Candidate) -> str | None:
    """The anomaly of a file a process maps that no name on disk leads to."""
    if getattr(candidate, "memfd", False):
        return str(Anomaly.MEMORY_FILE)
    if getattr(candidate, "deleted", False):
        return str(Anomaly.DELETED_ON_DISK)
    return None
