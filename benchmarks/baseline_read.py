"""The floor of any content sweep: open every regular file, read its first 4 KiB, close it.

    .venv/bin/python benchmarks/baseline_read.py PATH... [--jobs J] [--stat]

One thread walks the tree with os.scandir (symbolic links are not followed, as rmmscan's
default); J threads open, read 4 KiB and close, fed in batches (--jobs 0: no threads, the
walking thread reads). Prints one JSON line: files read, bytes read, errors. This is what
bench_sweep.py times the sweep against: the same walk and the same first read of every file
that recognising a PE by content needs, with none of the recognising. With --stat, each file
is stat'ed instead of read: what a rescan that checks its cache by (file id, size, mtime)
cannot do without. With --list, files are only listed (d_type), as `find -type f` does: what
Python pays for a walk before it touches a single file. With --walk-stat, the walking thread
stats each file as it lists it (DirEntry.stat: fstatat relative to the directory, no path
resolved again): the floor of a one-process rescan in Python.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import threading

HEAD = 4096
BATCH = 64


def walk(top: str, out: queue.SimpleQueue, jobs: int, stat_each: bool = False) -> int:
    errors = 0
    stack = [top]
    batch: list[str] = []
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            errors += 1
            continue
        with it:
            for entry in it:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        if stat_each:
                            entry.stat(follow_symlinks=False)
                        batch.append(entry.path)
                        if len(batch) >= BATCH:
                            out.put(batch)
                            batch = []
                except OSError:
                    errors += 1
    if batch:
        out.put(batch)
    for _ in range(jobs):
        out.put(None)
    return errors


def reader(work: queue.SimpleQueue, totals: list[int], stat_only: bool = False) -> None:
    files = read = errors = 0
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    while (batch := work.get()) is not None:
        for path in batch:
            if stat_only:  # what a cache check needs: identity, size, mtime
                try:
                    os.stat(path, follow_symlinks=False)
                    files += 1
                except OSError:
                    errors += 1
                continue
            try:
                fd = os.open(path, flags)
            except OSError:
                errors += 1
                continue
            try:
                read += len(os.read(fd, HEAD))
                files += 1
            except OSError:
                errors += 1
            finally:
                os.close(fd)
    totals.extend((files, read, errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="reader threads (0: none)"
    )
    parser.add_argument(
        "--stat", action="store_true", help="stat every file instead of reading it (rescan floor)"
    )
    parser.add_argument(
        "--list", action="store_true", help="only list the files (Python's floor of any walk)"
    )
    parser.add_argument(
        "--walk-stat",
        action="store_true",
        help="list the files and stat each as it is listed, in one thread (rescan floor)",
    )
    opts = parser.parse_args()
    if opts.list or opts.walk_stat:
        work: queue.SimpleQueue = queue.SimpleQueue()
        walk_errors = sum(walk(top, work, 0, opts.walk_stat) for top in opts.paths)
        files = 0
        while not work.empty():
            files += len(work.get())
        print(json.dumps({"files": files, "bytes": 0, "errors": walk_errors}))
        return
    work = queue.SimpleQueue()
    results: list[list[int]] = [[] for _ in range(opts.jobs)]
    threads = [
        threading.Thread(target=reader, args=(work, results[i], opts.stat), daemon=True)
        for i in range(opts.jobs)
    ]
    for t in threads:
        t.start()
    walk_errors = 0
    for top in opts.paths:
        walk_errors += walk(top, work, opts.jobs if top == opts.paths[-1] else 0)
    for t in threads:
        t.join()
    if opts.jobs == 0:  # no threads: the walking thread reads everything after the walk
        work.put(None)
        results = [[]]
        reader(work, results[0], opts.stat)
    files, read, errors = (sum(r[i] for r in results) for i in range(3))
    print(json.dumps({"files": files, "bytes": read, "errors": errors + walk_errors}))


if __name__ == "__main__":
    main()
