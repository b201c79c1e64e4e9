"""Command line: `rmmscan inspect FILE...` (more modes arrive as subcommands)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from . import __version__
from .text import printable

EXIT_OK, EXIT_FOUND, EXIT_ERROR = 0, 1, 2

EPILOG = """exit status: 0 all files reported, 2 a file could not be read or an option is wrong
(the other files are still reported)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmmscan",
        description="Authenticode signatures of PE files as DeviceFileCertificateInfo rows.",
    )
    parser.add_argument("--version", action="version", version=f"rmmscan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser(
        "inspect",
        help="report every signature of the given files",
        description="Report every Authenticode signature of each FILE: signer, certificate "
        "columns, chain and verdict. A non-PE gets no row (a note on stderr).",
        epilog=EPILOG,
    )
    ins.add_argument("files", nargs="+", metavar="FILE")
    ins.add_argument(
        "--format",
        choices=("table", "jsonl"),
        default="table",
        help="table: a human report (default); jsonl: one row per signature",
    )
    ins.add_argument(
        "--trusted-roots",
        action="append",
        type=Path,
        default=[],
        metavar="PEM",
        help="also trust the root certificates in this PEM file (repeatable)",
    )
    ins.add_argument(
        "--distrust",
        action="append",
        type=Path,
        default=[],
        metavar="JSON",
        help="an extra distrust list, in the format of rmmscan/data/distrust.json",
    )
    ins.add_argument(
        "--no-system-roots",
        action="store_true",
        help="trust only --trusted-roots, not the Microsoft root program",
    )
    ins.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the device id and the ReportId counter persist "
        "(default: $RMMSCAN_STATE_DIR, /var/lib/rmmscan as root, else "
        "~/.local/state/rmmscan)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "inspect":
        return _inspect(args)
    return EXIT_ERROR


def _error(path, message: str) -> None:
    print(f"rmmscan: {printable(os.fsdecode(path))}: {message}", file=sys.stderr)


def _inspect(args) -> int:
    from .inspect import Inspector, hash_stream, inspect_stream, version_info
    from .sinks.report import write_report
    from .sources.local import open_regular

    for option in (*args.trusted_roots, *args.distrust):
        if not option.is_file():
            _error(option, "option file not found or not a regular file")
            return EXIT_ERROR
    inspector = Inspector(args.trusted_roots, args.distrust, not args.no_system_roots)
    try:
        inspector.trust  # noqa: B018 - load the roots now, so a bad PEM fails before any file
    except (ValueError, OSError) as exc:
        print(f"rmmscan: {exc}", file=sys.stderr)
        return EXIT_ERROR
    rows = _RowWriter(args.state_dir)
    status = EXIT_OK
    for name in args.files:
        path = os.fsencode(name)
        try:
            stream, _ = open_regular(path)
        except OSError as exc:
            _error(name, exc.strerror or str(exc))
            status = EXIT_ERROR
            continue
        with stream:
            try:
                inspection = inspect_stream(stream)
                verdicts = inspector.verify(stream, inspection) if inspection.is_pe else None
                hashes = hash_stream(stream) if inspection.is_pe else None
                version = version_info(stream, inspection.size) if inspection.is_pe else {}
            except OSError as exc:
                _error(name, f"read failed: {exc.strerror or exc}")
                status = EXIT_ERROR
                continue
        if not inspection.is_pe:
            _error(name, f"not a PE file ({inspection.not_pe_reason}); no row")
        if args.format == "table":
            write_report(sys.stdout, name, inspection, verdicts, hashes, version)
        elif inspection.is_pe:
            rows.write(inspection, os.path.abspath(path), hashes, verdicts, version)
    rows.close()
    return status


class _RowWriter:
    """JSONL rows; the state (device id, ReportId counter) is opened with the first row."""

    def __init__(self, state_dir: Path | None):
        from .sinks.jsonl import JsonlSink

        self.state_dir = state_dir
        self.state = None
        self.device = None
        self.sink = JsonlSink(sys.stdout)

    def write(self, inspection, path: bytes, hashes, verdicts, version) -> None:
        from .rows import FileRef, make_rows

        if self.state is None:
            from .device import local_device
            from .state import State

            self.state = State(self.state_dir)
            self.device = local_device(self.state)
        n = max(1, len(inspection.signatures))
        first = self.state.allocate("report_id", n)
        ids = iter(range(first, first + n))
        ref = FileRef(os.fsdecode(path), "inspect")
        now = dt.datetime.now(dt.UTC)
        rows = make_rows(inspection, ref, self.device, hashes, verdicts, ids.__next__, now, version)
        self.sink.write(rows)

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
