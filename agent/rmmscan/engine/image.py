"""`rmmscan image`'s driver: evidence files → containers → volumes → file systems → the
engine, the same judge, cache and delivery as the local sweep (sweep.py).

Each image is opened read-only and recognised by content (sources/image/container.py); its
machine is named from its own registry and its files are cached under its evidence id
(Engine.use_device), never mixed with the local disk's or another image's. A live volume's
folders are listed and judged by scan processes (imagejobs.py: The Sleuth Kit's reads hold
the GIL, so threads would share one core), or one at a time in this thread for a small
volume, a snapshot, or where the OS cannot fork; either way they are delivered here, a folder
at a time (FolderScan). A layer that fails (a container that cannot be opened or
read, a partition past the end, a file system not recognised) is reported with the image,
the partition and the layer named; the other partitions and images are still scanned.

With ``shadows``, each NTFS volume's Volume Shadow Copies are walked after it, oldest first,
through the same judge (sources/image/snapshots.py): their rows carry the snapshot in
Snapshot, their files are cached under the store's GUID, and a file unchanged from the live
volume's is counted, not read again.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Sequence

from ..rows.facts import with_anomaly
from ..sources.image.container import Container, ContainerError, open_container
from ..sources.image.evidence import evidence_id
from ..sources.image.filesystem import HOLLOW, FileSystemWalk, Folder, ImageFile, unseen
from ..sources.image.registry import has_system_hive, identity
from ..sources.image.snapshots import SnapshotError, Unchanged, is_ntfs, open_shadows
from ..sources.image.volumes import TskImage, Volume, volumes
from ..text import printable
from .engine import FLAG_PE, FLAG_SIGNED, Batch, Engine, NotPE, problem_of
from .processes import jobs_for

DELETED = "deleted_file"  # the Anomalies entry of a deleted file's rows (--deleted)
UNCHANGED = "snapshot files unchanged from the live volume (not read again)"
WINDOWS_ROOT = "C:\\"


def other_root(number: int) -> str:
    """The root of a volume that is not the Windows volume: its partition, by number."""
    return f"\\\\?\\image\\p{number}\\"


class ImageScan:
    def __init__(
        self,
        engine: Engine,
        partition: int | None = None,
        deleted: bool = False,
        shadows: bool = False,
        jobs: int | None = 1,
    ):
        self.engine, self.partition, self.deleted = engine, partition, deleted
        self.shadows = shadows
        self.jobs = jobs  # scan processes for a live volume (imagejobs.py); None: by CPUs
        self.stop = threading.Event()
        self.now = dt.datetime.now(dt.UTC)

    def run(
        self,
        images: Sequence[str],
        tick: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Scan each image in turn; ``tick(image)`` is called after every folder."""
        if stop is not None:
            self.stop = stop
        self.now = dt.datetime.now(dt.UTC)
        self.tick = tick or (lambda _root: None)
        try:
            for image in images:
                if self.stop.is_set():
                    break
                self._image(image)
        finally:
            self.engine.stats.interrupted |= self.stop.is_set()

    # -- one image ---------------------------------------------------------------------------
    def layer_error(self, image: str, message: str) -> None:
        """An image, partition or layer that could not be read: named, as an error."""
        self.engine.stats.problem(image, "unreadable roots", message)

    def _image(self, image: str) -> None:
        stats = self.engine.stats
        try:
            container = open_container(image)
        except (ContainerError, OSError) as exc:
            self.layer_error(image, f"cannot be scanned: {exc} (layer: container)")
            return
        try:
            try:
                evidence = evidence_id(container)
                tsk = TskImage(container)
                _kind, found = volumes(tsk)
            except (ContainerError, OSError) as exc:
                self.layer_error(image, f"cannot be scanned: {exc} (layer: {container.format})")
                return
            numbers = [v.number for v in found]
            if self.partition is not None and self.partition not in numbers:
                shown = ", ".join(map(str, numbers)) or "none"
                self.layer_error(image, f"has no partition {self.partition} (it has: {shown})")
                return
            for volume in found:
                if volume.error:
                    if self.partition in (None, volume.number):
                        self.layer_error(image, volume.error)
                elif volume.error == "":
                    stats.count("partitions without a file system")
            windows = next((v for v in found if v.fs is not None and has_system_hive(v.fs)), None)
            name = os.path.basename(image)
            who = identity(
                windows.fs if windows else None,
                name,
                evidence,
                lambda message: self.engine.warn(f"{printable(image)}: {message}"),
            )
            self.engine.use_device(who.device, evidence)
            for volume in found:
                if volume.fs is None or self.partition not in (None, volume.number):
                    continue
                if self.stop.is_set():
                    return
                root = WINDOWS_ROOT if volume is windows else other_root(volume.number)
                origin = (image, volume.number, None)
                self._walk(image, container, tsk, volume, root, origin)
                if self.shadows and is_ntfs(volume) and not self.stop.is_set():
                    self._shadows(image, container, volume, root)
        finally:
            container.close()

    def _shadows(self, image: str, container: Container, volume: Volume, root: str) -> None:
        """The volume's snapshots, oldest first, each under the live volume's root."""
        try:
            shadows = open_shadows(container, volume)
        except SnapshotError as exc:
            self.layer_error(image, str(exc))
            return
        if shadows is None:
            return
        try:
            for snap in shadows:
                if self.stop.is_set():
                    return
                if snap.volume.error:
                    self.layer_error(image, snap.volume.error)
                    continue
                origin = (image, volume.number, snap.label)
                self._walk(image, snap.container, snap.tsk, snap.volume, root, origin,
                           f"vss {snap.identifier} ", shadows.unchanged(snap))  # fmt: skip
        finally:
            shadows.close()

    def _walk(
        self,
        image: str,
        container: Container,
        tsk: TskImage,
        volume: Volume,
        root: str,
        origin: tuple,
        scope: str = "",
        unchanged: Unchanged | None = None,
    ) -> None:
        """One file system, a folder at a time; ``scope`` prefixes the folders the cache keeps
        (a snapshot's files are not the live volume's), ``unchanged`` drops a snapshot's files
        that the live volume's rows already stand for. A live volume is walked by scan
        processes where they can run (imagejobs.py), else here."""
        if unchanged is None and not scope:
            jobs = jobs_for(self.jobs, int(volume.fs.info.inum_count))
            if jobs > 1:
                from .imagejobs import ImageJobs  # multiprocessing: only when it is used

                ImageJobs(self, jobs).walk(image, container, tsk, volume, root, origin)
                return
        report = Report(self.engine.stats.count, self.engine.stats.problem,
                        lambda message: self.layer_error(image, message))  # fmt: skip
        scan = FolderScan(self, container, tsk, volume, root, origin, report, scope, unchanged)
        top = scan.walk.top()
        self.walk_folders(image, scan, [top], {top[0]})

    def walk_folders(self, image: str, scan: FolderScan, stack: list[Folder], seen: set[int]):
        """The folders of ``stack`` and below, depth first, in this process."""
        while stack and not self.stop.is_set():
            found = scan.visit(stack.pop())
            if found is None:
                continue
            batch, subfolders = found
            stack.extend(reversed(unseen(subfolders, seen)))
            self.engine.deliver(batch)
            self.tick(image)

    def _visit(self, cache_dir: str, files: list[ImageFile], container: Container) -> Batch:
        """One folder's files, judged as the sweep judges them (sweep.Sweep.visit): from the
        cache (its folder ``cache_dir``) when their key is unchanged, else read."""
        engine = self.engine
        cache = engine.cache
        fingerprint = engine.fingerprint
        result = Batch(cache_dir, files=len(files))
        cached = cache.lookup_dir(cache_dir) if cache is not None else None
        for seen, candidate in enumerate(files):
            if self.stop.is_set():
                result.files = seen
                break
            name, listing = candidate.name, candidate.listing
            record = known = None
            if cached:
                hit = cached.get(name)  # (name, key, judged, flags, rsum, sum)
                if hit is not None and hit[1] == listing.key and cache.sound(cache_dir, name, hit):
                    flags = hit[3]
                    if not flags & FLAG_PE:
                        result.cached += 1
                        continue
                    if hit[2] is not None and hit[2] == fingerprint:
                        result.cached += 1
                        result.pe += 1
                        result.signed += bool(flags & FLAG_SIGNED)
                        continue
                    record = cache.record(cache_dir, name, hit)
                    if record is not None:
                        result.cached += 1
                        known = listing
            hollow = container.hollow_reads
            try:
                outcome = engine.judge(candidate, self.now, record, known)
            except Exception as exc:  # one file's failure must not end the image's scan
                result.problems.append(problem_of(candidate.path, exc))
                continue
            if container.hollow_reads != hollow:
                # Judged from zeros: reported unreadable (its rows, if any, still leave).
                result.problems.append((candidate.path, "unreadable", HOLLOW))
                if type(outcome) is NotPE:
                    continue
                outcome.store = None
            if type(outcome) is NotPE:
                if cache is not None:
                    result.store.append((name, listing.key, None, None, 0))
                continue
            if candidate.deleted:
                for row in outcome.rows:
                    row["Anomalies"] = with_anomaly(row["Anomalies"], DELETED)
            result.add(name, outcome)
        if cache is None:
            result.store.clear()
        if cached and not self.stop.is_set():
            names = {f.name for f in files}
            result.gone = [name for name in cached if name not in names]
        return result


class Report:
    """Where the walk of a file system says what it counted (``count(what, n=1)``), what
    went wrong with a file or folder (``problem(path, kind, message)``) and with a layer of
    the image (``error(message)``): the scan's statistics, or a scan process's messages."""

    def __init__(self, count, problem, error):
        self.count, self.problem, self.error = count, problem, error


class FolderScan:
    """The folders of one file system, each listed and judged by ``visit``: in this
    process, or in a scan process (imagejobs.py) with a file system of its own."""

    def __init__(self, scan: ImageScan, container: Container, tsk: TskImage, volume: Volume,
                 root: str, origin: tuple, report: Report, scope: str = "",
                 unchanged: Unchanged | None = None):  # fmt: skip
        self.scan, self.container, self.tsk, self.volume = scan, container, tsk, volume
        self.report, self.scope, self.unchanged = report, scope, unchanged
        self.snapshot = origin[2]
        self.failed = False  # the layer under the file system failed: said once
        hollow = container.hollow if container.can_be_hollow else None
        tally = Report(report.count, self.problem, report.error)
        self.walk = FileSystemWalk(volume, root, tally, scan.deleted, origin, hollow)

    def named(self, path: str) -> str:
        """A snapshot's file is named with its snapshot: the live file has its path."""
        return path if self.snapshot is None else f"{path} ({self.snapshot})"

    def problem(self, path: str, kind: str, message: str) -> None:
        failure = getattr(self.tsk, "failure", None)
        if failure and not self.failed:
            self.failed = True  # the layer under the file system: said once, as an error
            volume = self.volume
            self.report.error(f"{volume.label} ({volume.description}): {failure}; "
                              "files below it could not all be read")  # fmt: skip
        self.report.problem(self.named(path), kind, message)

    def visit(self, where: Folder) -> tuple[Batch, list[Folder]] | None:
        """One folder's batch and its subfolders; None when it cannot be listed (said)."""
        container, tsk = self.container, self.tsk
        before = container.hollow_reads
        tsk.failure = None
        path = where[1]
        try:
            found = self.walk.folder(where)
        except (OSError, RuntimeError) as exc:
            self.problem(path, "unreadable", f"folder cannot be listed: {exc}")
            return None
        if found is None:
            return None
        files, subfolders = found
        if container.hollow_reads != before:
            self.problem(path, "unreadable", f"its folder entries are {HOLLOW}")
        unchanged = self.unchanged
        if unchanged is not None and files:
            kept = [f for f in files if not unchanged(f)]
            if len(kept) != len(files):
                self.report.count(UNCHANGED, len(files) - len(kept))
            files = kept
        batch = self.scan._visit(self.scope + path, files, container)
        if self.snapshot is not None:
            batch.problems = [(self.named(p), kind, m) for p, kind, m in batch.problems]
        if tsk.failure and not self.failed:
            self.problem(path, "unreadable", "its files could not all be read")
        return batch, subfolders
