"""Scan processes for one file system of an image: its folders shared among N processes.

Listing a folder through The Sleuth Kit and judging its files is Python work that holds the
GIL, so threads would share one core; processes forked from the scan share its imports,
rule pack and trust store. Unlike the local sweep's processes (sweep.py), which each walk
the whole tree, here the calling process hands out the folders: listing is most of an
image's cost (on the benchmark image, 0.38 s of the 0.6 s past start-up), and a walk done by
every process would be done N times. The caller keeps the stack of folders still to list
and the set of folders seen (a folder two names lead to is delivered once); each process
walks the folder it is given and the folders below it, depth first, until it has judged
CHUNK_FILES files or listed CHUNK_FOLDERS folders, and sends back every folder's batch and
the subfolders it did not reach. One answer a chunk, not one a folder: each answer wakes
the caller, and most folders hold a few files. Two chunks are in flight at a time so that
no process waits for the next.

An image read by pread (raw; E01 whose chunks this reader reads itself, see
containers/ewf.py) is read in each process through the caller's objects, their forked
copies: The Sleuth Kit's caches come with them, among them the map of an NTFS volume's
folders that it builds from the whole MFT the first time a folder is opened (about 1 µs a
file record, in every process that builds it). Any other image is opened again in each
process: a libyal handle keeps a file offset that forked copies would share; a process that
cannot open it leaves its folders to the others.

A process that dies (a library crashing on crafted data, the OOM killer, an operator) is
replaced, and the folders it held are handed out again; a folder held by two processes that
died is reported with how the second ended, not handed out a third time. At most
_REPLACEMENTS times N processes start for one volume; what is left when none is alive is
walked here.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import signal
import time

from ..sources.image.container import Container, open_container
from ..sources.image.filesystem import Folder, unseen
from ..sources.image.volumes import TskImage, Volume, volumes
from ..text import printable
from .engine import Batch
from .image import FolderScan, ImageScan, Report
from .processes import ChildStop, end_processes, how_it_ended, prepare_fork, run_child

IN_FLIGHT = 2  # folders given to a process before it answers: it never waits for the next
CHUNK_FILES = 256  # a process answers once it has judged this many files below a folder,
CHUNK_FOLDERS = 32  # or listed this many folders: the rest goes back on the caller's stack
_PROGRESS_S = 0.1  # the caller wakes at least this often: progress, and a stop
_GRACE_S = 0.5  # a stopped scan waits this long for a process in the middle of a file
_STOP_S = 2.0
SETUP = "setup"  # a process's first word when it cannot open the image: (SETUP, why)
_TRIES = 2  # processes a folder may see die before it is said and left
_REPLACEMENTS = 2  # at most this many times `jobs` processes are started for one volume


class ImageJobs:
    def __init__(self, scan: ImageScan, jobs: int):
        self.scan, self.jobs = scan, jobs
        self.children: dict[int, tuple] = {}  # share -> (process, folders down, results up)
        self.held: dict[int, collections.deque[Folder]] = {}  # what each was handed
        self.alive: set[int] = set()
        self.tries: collections.Counter[int] = collections.Counter()  # lost, by folder
        self._ends: list = []  # the pipes' ends this process keeps: closed in every child
        self._said_unable = False
        self.scan_image = ""
        self.shared: tuple[Container, TskImage, Volume] | None = None  # see _child_body

    # -- the calling process -----------------------------------------------------------------
    def walk(self, image: str, container: Container, tsk: TskImage, volume: Volume, root: str,
             origin: tuple) -> None:  # fmt: skip
        """The file system's folders, judged by the processes and delivered here. The
        ``container`` and ``tsk`` are this process's: what is left when no process is left
        is walked with them."""
        scan = self.scan
        stats = scan.engine.stats
        self.scan_image = image
        said: set[str] = set()

        def error(message: str) -> None:
            if message not in said:  # each process meets a failed layer: said once
                said.add(message)
                scan.layer_error(image, message)

        top: Folder = (int(volume.fs.info.root_inum), root, 0)
        stack, seen = [top], {top[0]}
        self.shared = (container, tsk, volume) if container.fork_safe else None
        shared_stop = prepare_fork()
        job = (image, volume.number, root, origin, shared_stop)
        for _ in range(self.jobs):
            self._start(job)
        started = self.jobs
        deadline = None
        wait_s = _STOP_S
        try:
            while self.alive and (stack or any(self.held[s] for s in self.alive)):
                if scan.stop.is_set():
                    shared_stop[0] = 1
                    deadline = deadline or time.monotonic() + _GRACE_S
                    if not any(self.held[s] for s in self.alive):
                        break  # every answer is in: nothing more is handed out
                    if time.monotonic() >= deadline:
                        wait_s = 0.0  # what they are still reading is not wanted
                        break
                else:
                    self._hand_out(stack)
                ended = 0
                for message in self._answers(stack):
                    if message is None:
                        ended += 1
                    else:
                        self._take(message, stack, seen, error)
                for _ in range(ended):
                    if started < _REPLACEMENTS * self.jobs and not scan.stop.is_set():
                        self._start(job)  # the scan keeps its processes
                        started += 1
                scan.tick(image)
        except BaseException:
            shared_stop[0] = 1  # Ctrl-C, output closed: the processes stop too
            raise
        finally:
            for share in self.alive:
                with contextlib.suppress(OSError):
                    self.children[share][1].send(None)
            end_processes([child for child, _, _ in self.children.values()], wait_s)
            for child, tasks, results in self.children.values():
                child.join()
                tasks.close()
                results.close()
            shared_stop.close()
        if stack and not scan.stop.is_set():
            # No process is left to hand them to: what is left is walked here.
            report = Report(stats.count, stats.problem, error)
            here = FolderScan(scan, container, tsk, volume, root, origin, report)
            scan.walk_folders(image, here, stack, seen)

    def _start(self, job: tuple) -> None:
        context = multiprocessing.get_context("fork")
        share = len(self.children)
        tasks_in, tasks_out = context.Pipe(duplex=False)
        results_in, results_out = context.Pipe(duplex=False)
        child = context.Process(
            target=self._child,
            args=(*job, tasks_in, results_out, tuple(self._ends)),
            name=f"rmmscan-image-{share}",
            daemon=True,
        )
        child.start()
        tasks_in.close()
        results_out.close()
        self._ends += (tasks_out, results_in)
        self.children[share] = (child, tasks_out, results_in)
        self.held[share] = collections.deque()
        self.alive.add(share)

    def _hand_out(self, stack: list[Folder]) -> None:
        """Folders from the top of the stack to each process holding fewer than IN_FLIGHT.
        While the stack holds fewer folders than there are processes (the root, at first),
        a process is asked for that one folder alone: the others wait for its subfolders."""
        held = self.held
        for share in sorted(self.alive, key=lambda s: len(held[s])):
            while stack and len(held[share]) < IN_FLIGHT:
                where = stack.pop()
                most = 1 if len(stack) < len(self.alive) else CHUNK_FOLDERS
                try:
                    self.children[share][1].send((where, most))
                except OSError:  # it died: its end is read from its results pipe
                    stack.append(where)
                    break
                held[share].append(where)

    def _answers(self, stack: list[Folder]):
        """What the processes answered, waiting at most _PROGRESS_S for the first; None for
        a process that ended (its pipe's end comes after everything it sent)."""
        alive = [self.children[s][2] for s in self.alive]
        for results in multiprocessing.connection.wait(alive, _PROGRESS_S):
            share = next(s for s in self.alive if self.children[s][2] is results)
            try:
                message = results.recv()
            except EOFError:
                self._lost(share, stack)
                yield None
                continue
            if message[0] == SETUP:
                self._unable(share, message[1], stack)
                continue
            self.held[share].remove(message[0])
            yield message

    def _unable(self, share: int, why: str, stack: list[Folder]) -> None:
        """A process that could not open the image again: what it held goes back on the
        stack, and it is not replaced; with none left, this process walks the rest."""
        self.alive.discard(share)
        stack.extend(self.held[share])
        self.held[share].clear()
        if not self._said_unable:
            self._said_unable = True
            self.scan.engine.warn(
                f"{printable(self.scan_image)}: a scan process could not open the image again "
                f"({printable(why)}): its folders are scanned by the others, or by this process"
            )

    def _lost(self, share: int, stack: list[Folder]) -> None:
        """A process ended before it was told to. A folder it held goes back on the stack
        once (the process may have died of something else: the OOM killer, an operator); a
        folder held by two that died is said, with how the second ended, and not handed out
        again: it may be what kills them."""
        self.alive.discard(share)
        child = self.children[share][0]
        child.join()
        how = how_it_ended(child.exitcode)
        held = self.held[share]
        for where in held:
            self.tries[where[0]] += 1
            if self.tries[where[0]] < _TRIES:
                stack.append(where)
                continue
            message = f"the scan process reading this folder ended ({how}), as one had before"
            self.scan.engine.stats.problem(
                where[1], "failed", f"{message}: it and the folders below it were not scanned"
            )
        held.clear()

    def _take(self, message, stack: list[Folder], seen: set[int], error) -> None:
        """One chunk's answer: each folder's counts, problems and batch, said and delivered;
        the subfolders it did not reach go on the stack. A folder below the one handed out
        that was seen already (two names lead to it: a damaged file system) is dropped: it
        is delivered once, by whoever was handed it or reached it first."""
        where, folders, rest, errors, cache = message
        engine = self.scan.engine
        stats = engine.stats
        for text in errors:
            error(text)
        if cache is not None and engine.cache is not None:
            engine.cache.failed(*cache)
        for folder, batch, counts, problems in folders:
            if folder[0] != where[0]:
                if folder[0] in seen:
                    continue
                seen.add(folder[0])
            for what, n in counts.items():
                stats.count(what, n)
            for problem in problems:
                stats.problem(*problem)
            if batch is not None:
                if type(batch) is tuple:  # counts alone (see _chunk)
                    batch = Batch(*batch)
                engine.deliver(batch)
        stack.extend(reversed(unseen(rest, seen)))

    # -- a scan process ------------------------------------------------------------------------
    def _child(self, image, number, root, origin, shared_stop, tasks, results, parent_ends):
        """Lists and judges the folders it is sent until it is sent None; how it ends,
        run_child says."""
        run_child(lambda: self._child_body(image, number, root, origin, shared_stop, tasks,
                                           results, parent_ends))  # fmt: skip

    def _child_body(self, image, number, root, origin, shared_stop, tasks, results,
                    parent_ends) -> None:  # fmt: skip
        # Ends of the other processes' pipes: held here, a parent that died would leave
        # a process waiting on them for ever.
        for end in parent_ends:
            end.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent reports it
        scan = self.scan
        scan.stop = stop = ChildStop(shared_stop)
        signal.signal(signal.SIGTERM, stop.signalled)
        counts: collections.Counter = collections.Counter()
        problems: list = []
        errors: list = []

        def count(what: str, n: int = 1) -> None:
            counts[what] += n

        report = Report(count, lambda *problem: problems.append(problem), errors.append)
        cache = scan.engine.cache
        if cache is not None:
            cache.forked()
            cache.warn = lambda _message: None  # the parent says it (see `failed` below)
        cache_said = False
        if self.shared is not None:
            # Read by pread alone: the caller's image, file system and The Sleuth Kit's
            # caches are this process's copies, and what they learnt is not learnt again.
            container, tsk, volume = self.shared
            container.forked()
        else:
            try:
                container = open_container(image)  # its own descriptors and handles
                tsk = TskImage(container)
                _kind, found = volumes(tsk)
            except (OSError, RuntimeError, ValueError) as exc:  # ContainerError: an OSError
                results.send((SETUP, str(exc)))
                return
            volume = next((v for v in found if v.number == number and v.fs is not None), None)
            if volume is None:
                results.send((SETUP, f"partition {number} is not there in the image reopened"))
                return
        fs_scan = FolderScan(scan, container, tsk, volume, root, origin, report)
        while (task := tasks.recv()) is not None:
            where, most = task
            folders, rest = self._chunk(fs_scan, where, most, counts, problems)
            failed = None
            if cache is not None and cache.failure is not None and not cache_said:
                cache_said, failed = True, (cache.failure, cache.damaged)
            results.send((where, folders, rest, errors, failed))
            errors.clear()

    def _chunk(self, fs_scan: FolderScan, where: Folder, most: int, counts, problems):
        """The folder and those below it, depth first, until CHUNK_FILES files are judged or
        ``most`` folders listed: [(folder, batch, counts, problems)] and the subfolders
        not reached. Each folder carries what its walk counted and said, so that the caller
        can drop a folder it has seen already with all that came of it."""
        stop = self.scan.stop
        stack, seen = [where], {where[0]}
        folders = []
        files = 0
        while stack and files < CHUNK_FILES and len(folders) < most:
            if folders and stop.is_set():
                break
            folder = stack.pop()
            visited = fs_scan.visit(folder)
            batch, subfolders = visited if visited is not None else (None, [])
            if batch is not None:
                files += batch.files
                if not (batch.rows or batch.suppressed or batch.store or batch.gone
                        or batch.problems):  # fmt: skip
                    # Most folders: their counts alone (a Batch pickles at 6 times the size).
                    batch = (batch.folder, batch.files, batch.pe, batch.signed, batch.cached)
            folders.append((folder, batch, dict(counts), list(problems)))
            counts.clear()
            problems.clear()
            stack.extend(reversed(unseen(subfolders, seen)))
        return folders, stack[::-1]
