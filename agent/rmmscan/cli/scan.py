"""`rmmscan scan PATH...`: the options from the command line, the engine, the sweep, and what
it found (exit statuses in status.py).

Unreadable files and directories are listed on stderr; they, vanished, changed and special
files are counted in the summary; none changes the status. SIGTERM (a deployment tool's
timeout) stops the sweep within about a second: the rows delivered so far are whole, the
summary says the sweep was interrupted, and the status is 1 if it found something, else 2.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

from ..engine.engine import Engine, OptionsError
from ..engine.options import Options
from ..sinks.sink import SinkError, standard_output
from ..text import printable
from .status import EXIT_ERROR, scan_status


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


def options_from(args) -> Options:
    return Options(
        rules=tuple(args.rules),
        allowlist=args.allowlist,
        emit=args.emit,
        trusted_roots=tuple(args.trusted_roots),
        distrust=tuple(args.distrust),
        system_roots=not args.no_system_roots,
        state_dir=args.state_dir,
        cache=not args.no_cache,
    )


def warn(message: str) -> None:
    """A warning on stderr (its paths already made printable): the scan goes on."""
    print(f"rmmscan: {message}", file=sys.stderr, flush=True)


def run(args) -> int:
    try:
        return _run(args)
    except (OptionsError, SinkError) as exc:
        print(f"rmmscan: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _run(args) -> int:
    from ..engine.sweep import Sweep
    from ..sinks.console import Console
    from ..sinks.formats import stream_sink
    from ..sources.walk import WalkOptions

    engine = Engine(options_from(args), warn)
    roots = distinct_roots(os.path.abspath(p) for p in args.paths)
    out, owned, name = standard_output(), False, "standard output"
    if args.output:
        name = printable(str(args.output))
        try:
            out = open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise OptionsError(f"{name}: cannot write: {exc.strerror or exc}") from None
        owned = True
    sink = stream_sink(args.format, out, name, owned)
    engine.sinks.append(sink)
    console = Console(sys.stderr, engine.stats, progress=args.progress and sys.stderr.isatty())
    engine.stats.subscribe(console)
    stop = threading.Event()
    try:
        engine.open_state()
        try:
            sweep = Sweep(
                engine,
                WalkOptions(tuple(args.exclude), args.one_file_system, args.follow_symlinks),
                args.jobs,
            )
            with _stopped_by_sigterm(stop):
                sweep.run(roots, console.tick, stop)
        finally:
            engine.close()
    finally:
        try:
            sink.close()
        except SinkError:
            if sys.exc_info()[1] is None:
                raise
            # else an error is already on its way, and it is the news
    if not args.quiet:
        console.summary()
    return scan_status(engine.stats)


@contextmanager
def _stopped_by_sigterm(stop: threading.Event):
    """SIGTERM sets `stop` (the sweep ends at the next file) instead of ending the process."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: whoever runs us there handles them
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
