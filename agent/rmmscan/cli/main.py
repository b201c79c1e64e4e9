"""Command line: `rmmscan [scan] PATH...`, `rmmscan inspect FILE...`, `rmmscan rules ...`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import __version__
from ..sinks.formats import FORMATS
from ..sources.claims import MAX_SHARES
from .status import EXIT_ERROR, EXIT_INTERRUPTED

MAX_JOBS = MAX_SHARES  # the sweep processes' claim table (sources/claims.py) holds this many owners

COMMANDS = ("scan", "image", "inspect", "rules", "state", "config", "outbox", "agent")

SCAN_EPILOG = """exit status (clamscan's convention): 0 nothing found; 1 detections (even when
something else failed: a finding is never hidden); 2 an error - a bad option or rule pack, a
root that could not be scanned, or an internal error. Unreadable files and directories are
listed on stderr; those, and files that vanished or changed during the sweep, special files and
symlinks not followed, are counted in the summary. None of them changes the status.

--exclude: a pattern with a "/" matches the whole path (e.g. '/mnt/backup/*'), one without
matches a file or directory name (e.g. '*.log'); shell wildcards, repeatable.
state (scan cache, device id, ReportId counter): --state-dir, else $RMMSCAN_STATE_DIR,
/var/lib/rmmscan as root, ~/.local/state/rmmscan otherwise."""

EPILOG = """exit status: 0 all files reported, 2 a file could not be read or an option is wrong
(the other files are still reported)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmmscan",
        description="Authenticode signatures of PE files as DeviceFileCertificateInfo rows.",
    )
    parser.add_argument("--version", action="version", version=f"rmmscan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_scan(sub)
    _add_image(sub)
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
    _max_read_option(ins)
    _trust_options(ins)
    from .rules import add_parser as add_rules

    add_rules(sub)
    from .state import add_parser as add_state

    add_state(sub)
    from .config import add_parser as add_config

    add_config(sub)
    from .outbox import add_parser as add_outbox

    add_outbox(sub)
    from .agent import add_parser as add_agent

    add_agent(sub)
    return parser


def _trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trusted-roots",
        action="append",
        type=Path,
        default=[],
        metavar="PEM",
        help="also trust the root certificates in this PEM file (repeatable)",
    )
    p.add_argument(
        "--distrust",
        action="append",
        type=Path,
        default=[],
        metavar="JSON",
        help="an extra distrust list, in the format of rmmscan/data/distrust.json",
    )
    p.add_argument(
        "--no-system-roots",
        action="store_true",
        help="trust only --trusted-roots, not the Microsoft root program",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the scan cache, device id and ReportId counter persist "
        "(default: $RMMSCAN_STATE_DIR, /var/lib/rmmscan as root, else ~/.local/state/rmmscan)",
    )


def _add_scan(sub) -> None:

    p = sub.add_parser(
        "scan",
        help="sweep directory trees for PE files signed by RMM vendors (the default command)",
        description="Walk each PATH (directory or file) in parallel, recognise PE files by "
        "content, read their Authenticode signatures and run the rule pack on every "
        "signature. `rmmscan PATH...` is the same as `rmmscan scan PATH...`.",
        epilog=SCAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    _scan_options(p)
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip matching files and directories (repeatable; see below)",
    )
    p.add_argument(
        "--one-file-system", "-x", action="store_true", help="do not cross into other file systems"
    )
    p.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="follow symbolic links (off by default; loops are detected)",
    )
    _jobs_option(
        p,
        "sweep processes, each walking the tree and reading the directories it reaches "
        "first; 1 sweeps in this process; where the OS cannot fork (Windows), N threads; at "
        f"most {MAX_JOBS}. Default: the number of CPUs, at most 4 (each process adds about "
        "40 MiB); 1 when every PATH is a file, or where the OS cannot fork (threads share one "
        "core: two were slower than one)",
    )


IMAGE_EPILOG = """exit status: as `rmmscan scan`: 0 nothing found; 1 detections; 2 an error - a bad
option, or an image, partition or layer that could not be read (the others are still
scanned; each is named on stderr with the layer that failed).

Formats are recognised by content: E01/Ex01 (split segments found from the first), raw/dd,
VMDK (a descriptor and its extents, or one sparse file), VHD, VHDX, QCOW2; an MBR or GPT
partition table, or a bare volume; NTFS, FAT12/16/32, exFAT, ext2/3/4. Paths: the volume
holding Windows\\System32\\config\\SYSTEM is C:\\, another partition N is \\\\?\\image\\pN\\.
DeviceName and DeviceId come from that volume's SYSTEM and SOFTWARE hives; without one, from
the image file's name and its evidence id. Images are only ever opened read-only."""


def _add_image(sub) -> None:
    p = sub.add_parser(
        "image",
        help="scan offline disk images (E01, raw, VMDK, VHD, VHDX, QCOW2) read-only",
        description="Scan every partition of each IMAGE, read-only, as a sweep of that disk "
        "would: the same rules, rows and cache, the rows named after the imaged machine.",
        epilog=IMAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument(
        "--partition",
        type=int,
        default=None,
        metavar="N",
        help="scan only partition N (1, 2, ... in table order; 0 for a bare volume)",
    )
    p.add_argument(
        "--deleted",
        action="store_true",
        help="also scan deleted files whose file record is not reused; their rows carry "
        '"deleted_file" in Anomalies',
    )
    p.add_argument(
        "--shadows",
        action="store_true",
        help="also scan the Volume Shadow Copies of each NTFS volume, oldest first; their rows "
        'carry the snapshot in Snapshot ("vss1 2013-12-03T06:35:09Z"); a file unchanged from '
        "the live volume's is not read again",
    )
    _jobs_option(
        p,
        "scan processes, each opening the image itself and taking the next folder of "
        f"the walk; 1 scans in this process; at most {MAX_JOBS}. Default: the number of CPUs, "
        "at most 4; 1 for a file system of fewer than 5,000 file records, or where the OS "
        "cannot fork (Windows). Snapshots (--shadows) are scanned in this process",
    )
    _scan_options(p)


def _scan_options(p: argparse.ArgumentParser) -> None:
    """The options every scanning command shares: output, rules, cache, config, trust."""
    from ..rules.judge import EMIT_CHOICES

    p.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table: a block per file, for people (default); line: one line per detection, "
        "`path: RULE FOUND`; jsonl or csv: every column of every row",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write rows here instead of stdout")
    p.add_argument(
        "--emit",
        choices=EMIT_CHOICES,
        default="detections",
        help="detections: rows that match a rule (default); signed: also every "
        "other signed PE (an inventory); all: also unsigned PEs",
    )
    p.add_argument(
        "--rules",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="a rule file or directory, instead of the bundled pack (repeatable)",
    )
    p.add_argument(
        "--allowlist",
        type=Path,
        metavar="FILE",
        help="sanctioned deployments (YAML of KQL predicates) whose detections are "
        "suppressed and counted in the summary",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor update the scan cache (every file is read)",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress line on a terminal",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no summary on stderr")
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a configuration file (TOML): its sinks (syslog, Splunk HEC, Sentinel's Logs "
        "Ingestion, rotating JSONL) take the rows too, and its settings apply where the "
        "command line is silent; check it with `rmmscan config check FILE`",
    )
    p.add_argument(
        "--flush-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="at the end, wait at most this long for the sinks' receivers to take the rows "
        "(default: the configuration's flush_timeout, else 30 s); what is left waits in the "
        "outbox for the next run",
    )
    _max_read_option(p)
    _trust_options(p)


def _max_read_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-read",
        type=_size,
        default=None,
        metavar="SIZE",
        help="read at most SIZE bytes of one file to hash and verify it: 4G, 512M, 100K or "
        "bytes; 0 reads every file whole. Default: 4G (a PE addresses at most 4 GiB, so a "
        "larger file is one with data appended, or a sparse one). A larger file keeps its "
        "signature rows and rules, marked too_large_to_read, NotChecked, without hashes",
    )


def _size(text: str) -> int:
    """Bytes, as --max-read takes them: "4G", "512M", "100K", a whole number, or 0."""
    from ..config.schema import byte_size

    try:
        return byte_size(text)
    except Exception as exc:  # the schema's _Bad: its message says what to write
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _jobs_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--jobs", "-j", type=_jobs, default=None, metavar="N", help=help)


def _jobs(text: str) -> int:
    """1 to MAX_JOBS: each process costs about 40 MiB, and a typo of 1000 would fork 1000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"{value}: must be 1 to {MAX_JOBS}")
    return value


def _seconds(text: str) -> float:
    from ..config.schema import duration

    try:
        return duration(text if text[-1:].isalpha() else float(text))
    except (ValueError, Exception) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `rmmscan PATH...` means `rmmscan scan PATH...`; to scan a directory named like a
    # command, write `rmmscan scan inspect`.
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "scan")
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("rmmscan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`rmmscan ... | head`): rows may be lost, so not success, but
        # no traceback; stdout is pointed at devnull so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception:  # a bug: say so, with the traceback for the report, and exit 2, never 1
        import traceback

        traceback.print_exc()
        print(f"rmmscan {__version__}: internal error (above); please report it", file=sys.stderr)
        return EXIT_ERROR


def _dispatch(args) -> int:
    if args.command == "inspect":
        from .inspect import run

        return run(args)
    if args.command == "scan":
        from .scan import run

        return run(args)
    if args.command == "image":
        from .image import run

        return run(args)
    if args.command == "rules":
        from .rules import run

        return run(args)
    if args.command == "state":
        from .state import run

        return run(args)
    if args.command == "config":
        from .config import run

        return run(args)
    if args.command == "outbox":
        from .outbox import run

        return run(args)
    if args.command == "agent":
        from .agent import run

        return run(args)
    return EXIT_ERROR
