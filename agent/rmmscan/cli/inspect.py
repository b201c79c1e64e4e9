"""`rmmscan inspect FILE...`: every signature of each file, through the same engine as a scan
(no rules: every row), as a report for people or as JSON Lines rows.

Exit status: 0 every file reported; 2 a file could not be read, or not whole (it is over the
read bound, --max-read: its signatures are reported, not verified, and it is not hashed), a bug
met one, or an option is wrong (the other files are still reported).
"""

from __future__ import annotations

import os
import sys

from ..engine.engine import Batch, Engine, OptionsError
from ..engine.options import Options
from ..inspect.hashes import DEFAULT_MAX_READ
from ..sinks.sink import SinkError, standard_output
from ..sources.localfile import NamedFile
from ..text import printable
from .common import warn
from .status import EXIT_ERROR, EXIT_OK

SOURCE = "inspect"  # the ScanSource column


def _error(path, message: str) -> None:
    print(f"rmmscan: {printable(os.fsdecode(path))}: {message}", file=sys.stderr)


def run(args) -> int:
    options = Options(
        no_rules=True,
        emit="all",
        trusted_roots=tuple(args.trusted_roots),
        distrust=tuple(args.distrust),
        system_roots=not args.no_system_roots,
        state_dir=args.state_dir,
        cache=False,
        source=SOURCE,
        max_read=DEFAULT_MAX_READ if args.max_read is None else args.max_read,
    )
    try:
        engine = Engine(options, warn)
        engine.inspector.trust  # noqa: B018 - load the roots now: a bad PEM fails before any file
    except (OptionsError, ValueError, OSError) as exc:
        print(f"rmmscan: {exc}", file=sys.stderr)
        return EXIT_ERROR
    out = standard_output()
    if args.format == "jsonl":
        from ..sinks.jsonl import JsonlSink

        engine.sinks.append(JsonlSink(out))
    status = EXIT_OK
    try:
        engine.open_state()  # the device's identity, for the rows
        for name in args.files:
            if not _one(engine, name, args.format, out):
                status = EXIT_ERROR
        out.flush()
    except SinkError as exc:
        print(f"rmmscan: {exc}", file=sys.stderr)
        status = EXIT_ERROR
    finally:
        engine.close()
    return status


def _one(engine: Engine, name: str, fmt: str, out) -> bool:
    """Report one file; False when it could not be read or a bug met it."""
    candidate = NamedFile(name, SOURCE)
    if fmt == "table":
        return _report(engine, candidate, name, out)
    outcome = engine.judge_file(candidate)
    ok = True
    for _path, kind, message in outcome.problems:
        # A file that changed while it was read is still reported; one that could not be
        # opened at all (a directory, a FIFO, gone) is not.
        if kind != "changed" or outcome.listing is None:
            ok = False
        _error(name, message)
    if outcome.listing is not None and not outcome.pe:
        _error(name, f"not a PE file ({outcome.not_pe}); no row")
    if outcome.rows:
        batch = Batch(candidate.folder, files=1)
        batch.add(candidate.name, outcome)
        batch.problems.clear()  # said above, in the inspect command's words
        engine.deliver(batch)
    return ok


def _report(engine: Engine, candidate: NamedFile, name: str, out) -> bool:
    from ..inspect import Anomaly, Status, Verdict, hash_stream, inspect_stream, version_info
    from ..inspect.hashes import over_bound
    from ..sinks.report import write_report

    try:
        stream, listing = candidate.open()
    except OSError as exc:
        _error(name, exc.strerror or str(exc))
        return False
    ok = True
    too_large = over_bound(listing.size, engine.options.max_read)
    try:
        with stream:
            inspection = inspect_stream(stream, listing.size)
            is_pe = inspection.is_pe
            verdicts = hashes = None
            if is_pe and too_large:  # as a scan's rows say it (rows/facts.py)
                inspection.anomalies.append(Anomaly.TOO_LARGE)
                detail = f"not read: {too_large}"
                verdicts = [Verdict(Status.NOT_CHECKED, False, False, detail)
                            for _ in inspection.signatures]  # fmt: skip
            elif is_pe:
                verdicts = engine.inspector.verify(stream, inspection)
                hashes = hash_stream(stream, listing.size)
            version = version_info(stream, inspection.size, inspection.header) if is_pe else {}
        # Bugs inspection caught: said, and what was read is still reported.
        for error in inspection.errors:
            _error(name, f"internal error: {printable(str(error))}")
            ok = False
        if not is_pe:
            _error(name, f"not a PE file ({inspection.not_pe_reason}); no row")
        elif too_large:
            _error(name, f"not hashed or verified: {too_large}")
            ok = False
        write_report(out, name, inspection, verdicts, hashes, version)
        out.flush()
    except BrokenPipeError:
        raise  # the reader went away: main() says so
    except OSError as exc:
        _error(name, f"read failed: {exc.strerror or exc}")
        ok = False
    except Exception as exc:  # a bug on one file: said, and the next file is inspected
        _error(name, printable(f"internal error: {type(exc).__name__}: {exc}; please report it"))
        ok = False
    return ok
