"""`rmmscan scan PATH...`: the options from the command line and the configuration file, the
engine, the sweep, the sinks, and what it found (exit statuses in status.py).

With `--config`, the file's sinks take the rows too, before standard output does: a row shown
is already in every outbox. At the end the sweep delivers what its outboxes hold, for at most
the flush timeout, and says per sink what was delivered and what waits for the next run; rows
left undelivered make the status 2, unless something was found (1: a finding is never hidden).

Unreadable files and directories are listed on stderr; they, vanished, changed and special
files are counted in the summary; none changes the status. SIGTERM (a deployment tool's
timeout) stops the sweep within about a second: the rows delivered so far are whole, the
summary says the sweep was interrupted, and the status is 1 if it found something, else 2.
"""

from __future__ import annotations

import os

from .common import guarded, session


def distinct_roots(paths) -> list[str]:
    """The roots in the order given, without repeats or roots inside another: `rmmscan /a /a/b`
    reports each file once. A root that does not exist is kept, to be reported."""
    kept: list[str] = []
    for path in paths:
        inside = any(path == k or path.startswith(k.rstrip("/" + os.sep) + os.sep) for k in kept)
        if inside and os.path.lexists(path):
            continue
        prefix = path.rstrip("/" + os.sep) + os.sep
        inner = [k for k in kept if k.startswith(prefix) and os.path.lexists(k)]
        kept = [k for k in kept if k not in inner] + [path]
    return kept


def run(args) -> int:
    return guarded(_run, args)


def _run(args) -> int:
    from ..engine.sweep import Sweep
    from ..sources.walk import WalkOptions

    roots = distinct_roots(os.path.abspath(p) for p in args.paths)

    def sweep(engine, config, console, stop) -> None:
        excluded = (*args.exclude, *(config.exclude if config else ()))
        Sweep(
            engine,
            WalkOptions(excluded, args.one_file_system, args.follow_symlinks),
            args.jobs,
        ).run(roots, console.tick, stop)

    return session(args, "sweep", sweep)
