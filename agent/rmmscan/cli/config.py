"""`rmmscan config check FILE`: is this configuration usable, and if not, where and why.

Every problem is one line on stderr, "FILE:LINE: KEY: what is wrong and what to write", and
the status is 2; a usable file gets one line per sink on stdout and status 0. Secrets are
read (a variable that is not set, or a secret file others may read, is a problem) but never
shown. Nothing is sent and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..text import printable
from .status import EXIT_ERROR, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser(
        "config",
        help="check a configuration file",
        description="Check a configuration file (TOML): every key known, every value of the "
        "right kind, every file and secret readable, nothing readable by other users.",
        epilog="exit status: 0 usable; 2 a problem (each on stderr, with its line).",
    )
    actions = p.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="check FILE and list its sinks")
    check.add_argument("file", type=Path, metavar="FILE")


def report(exc) -> int:
    """Every problem of a ConfigError, a line each on stderr; the status to exit with."""
    for problem in exc.problems:
        print(f"rmmscan: {problem.show(exc.path)}", file=sys.stderr)
    return EXIT_ERROR


def run(args: argparse.Namespace) -> int:
    from ..config.schema import read_config
    from ..config.sinks import warn_insecure
    from ..config.source import ConfigError

    try:
        config = read_config(args.file)
    except ConfigError as exc:
        return report(exc)
    warn_insecure(config.sinks, lambda m: print(f"rmmscan: warning: {m}", file=sys.stderr))
    shown = printable(str(args.file))
    print(f"{shown}: usable; {len(config.sinks)} sink(s)")
    for sink in config.sinks:
        print(f"  {sink.name}: {sink.type}, emit = {sink.emit}")
    return EXIT_OK
