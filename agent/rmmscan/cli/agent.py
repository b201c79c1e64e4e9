"""`rmmscan agent`: run as a service until stopped (agent/agent.py, docs/agent.md).

With `--config FILE` (else /etc/rmmscan/rmmscan.toml where it exists, else built-in defaults:
the fixed disks, the bundled rules, detections to a rotating JSONL file in the state
directory). A configuration that cannot be used at start is reported like `rmmscan config
check` reports it, and the status is 2; once running, a bad configuration sent by SIGHUP is
logged and the running one kept. `--install-service` and `--uninstall-service` register the
Windows service (cli/windows_service.py); on Linux and macOS the service manager's own files
in packaging/ do that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import guarded
from .status import EXIT_ERROR, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser(
        "agent",
        help="run as a service: first sweep, real-time watch, processes, periodic rescans",
        description="Run until stopped (SIGTERM, SIGINT; SIGHUP reloads the configuration "
        "and the rules). Rows go to the configuration's sinks; the agent logs JSON lines to "
        "stderr or to the configuration's [agent] log file.",
        epilog="exit status: 0 stopped; 2 the configuration, a sink or the state cannot be "
        "used at start (the reason on stderr).",
    )
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="the configuration (default: /etc/rmmscan/rmmscan.toml if it exists, "
                   "else built-in defaults)")  # fmt: skip
    p.add_argument("--state-dir", type=Path, default=None,
                   help="where the cache, outboxes and device identity live (default: the "
                   "configuration's state_dir, else /var/lib/rmmscan as root)")  # fmt: skip
    p.add_argument("--log", type=Path, metavar="FILE",
                   help="log to this rotating file instead of stderr")  # fmt: skip
    service = p.add_mutually_exclusive_group()
    service.add_argument("--install-service", action="store_true",
                         help="Windows: register and start the rmmscan service")  # fmt: skip
    service.add_argument("--uninstall-service", action="store_true",
                         help="Windows: stop and remove the rmmscan service")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.install_service or args.uninstall_service:
        from . import windows_service

        try:
            if args.install_service:
                windows_service.install(args.config)
            else:
                windows_service.uninstall()
        except (RuntimeError, OSError) as exc:
            print(f"rmmscan: {exc}", file=sys.stderr)
            return EXIT_ERROR
        return EXIT_OK
    return guarded(_run, args)


def _run(args) -> int:
    from ..agent.agent import Agent

    return Agent(args.config, args.state_dir, args.log).run()
