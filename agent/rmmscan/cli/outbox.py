"""`rmmscan outbox status|flush`: what waits to be forwarded, and delivering it now.

`status` lists every outbox in the state directory (with `--config`, every network sink it
declares too, even one that has held nothing yet): rows waiting, of which detections, bytes,
the age of the oldest, rows set aside (refused for good, with the receiver's last answer),
delivered and dropped. It changes nothing. `flush` delivers what waits, through the
configuration's sinks, for at most --timeout seconds.

Exit status: status 0; flush 0 when every outbox is empty at the end, 2 otherwise or on a
bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..text import printable
from .config import report
from .status import EXIT_ERROR, EXIT_OK


def add_parser(sub) -> None:
    p = sub.add_parser(
        "outbox",
        help="show or deliver the rows waiting to be forwarded",
        description="Show (status) or deliver now (flush) the rows that forwarding sinks "
        "keep in their outboxes until the receiver takes them.",
        epilog="exit status: status 0; flush 0 when every outbox is empty at the end, "
        "2 otherwise or on a bad configuration.",
    )
    actions = p.add_subparsers(dest="action", required=True)
    for name, text in (("status", "what waits, per sink"), ("flush", "deliver what waits")):
        a = actions.add_parser(name, help=text)
        a.add_argument("--config", type=Path, metavar="FILE", required=name == "flush",
                       help="the configuration file that declares the sinks")  # fmt: skip
        a.add_argument("--state-dir", type=Path, default=None,
                       help="the state directory (default: the configuration's, else "
                       "rmmscan's default)")  # fmt: skip
        if name == "status":
            a.add_argument("--format", choices=("text", "json"), default="text")
        else:
            a.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                           help="give up after this long (default 60)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..config.schema import read_config
    from ..config.source import ConfigError
    from ..sinks.outbox import OutboxError
    from ..sinks.transport import TransportError
    from ..state.store import default_dir

    config = None
    if args.config is not None:
        try:
            config = read_config(args.config)
        except ConfigError as exc:
            return report(exc)
    state_dir = args.state_dir or (config.state_dir if config else None) or default_dir()
    try:
        if args.action == "flush":
            return _flush(config, state_dir, args.timeout)
        return _status(config, state_dir, args.format)
    except (OutboxError, TransportError) as exc:
        print(f"rmmscan: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _names(config, state_dir: Path) -> list[str]:
    declared = [s.name for s in config.sinks if s.network] if config else []
    folder = state_dir / "outbox"
    found = sorted(p.stem for p in folder.glob("*.sqlite")) if folder.is_dir() else []
    return declared + [name for name in found if name not in declared]


def _status(config, state_dir: Path, fmt: str) -> int:
    from ..sinks.outbox import Outbox, path_of

    declared = {s.name for s in config.sinks} if config else set()
    report = []
    for name in _names(config, state_dir):
        path = path_of(state_dir, name)
        entry = {"sink": name, "outbox": str(path), "declared": name in declared or None}
        if path.exists():
            outbox = Outbox(path)
            try:
                depth = outbox.depth()
                last = outbox.aside_rows(1)
            finally:
                outbox.close()
            entry.update(
                waiting=depth.rows, detections=depth.detections, bytes=depth.bytes,
                oldest_age_s=round(time.time() - depth.oldest, 1) if depth.oldest else None,
                aside=depth.aside, last_refusal=last[0][1] if last else None,
                delivered=depth.delivered, dropped_inventory=depth.dropped_inventory,
                dropped_detections=depth.dropped_detections,
            )  # fmt: skip
        else:
            entry.update(waiting=0, detections=0, bytes=0, aside=0, delivered=0)
        report.append(entry)
    if fmt == "json":
        print(json.dumps({"state_dir": str(state_dir), "sinks": report}, ensure_ascii=True))
        return EXIT_OK
    if not report:
        print(f"no outbox in {printable(str(state_dir))}")
    for e in report:
        age = f", the oldest {e['oldest_age_s']:,.0f} s old" if e.get("oldest_age_s") else ""
        note = "" if config is None or e["declared"] else " (not in the configuration)"
        print(
            f"{e['sink']}{note}: {e['waiting']:,} rows waiting ({e['detections']:,} detections, "
            f"{e['bytes']:,} bytes{age}); {e['aside']:,} set aside; {e['delivered']:,} "
            f"delivered; {e.get('dropped_inventory', 0):,} inventory and "
            f"{e.get('dropped_detections', 0):,} detection rows dropped"
        )
        if e.get("last_refusal"):
            print(f"  last refusal: {printable(e['last_refusal'])}")
    return EXIT_OK


def _flush(config, state_dir: Path, timeout: float) -> int:
    from ..config.sinks import open_sink, warn_insecure

    warn_insecure(config.sinks, lambda m: print(f"rmmscan: warning: {m}", file=sys.stderr))
    deadline = time.monotonic() + timeout
    left_over = 0
    for declared in config.sinks:
        if not declared.network:
            continue
        sink = open_sink(declared, state_dir)
        try:
            depth = sink.outbox.depth()
            while depth.rows and time.monotonic() < deadline:
                depth = sink.drain(max(0.0, min(deadline - time.monotonic(), 1.0)))
        finally:
            sink.close()
        r = sink.report
        while r.notes:
            print(f"rmmscan: {r.notes.popleft()}", file=sys.stderr)
        why = f" (the receiver: {r.last_retry})" if depth.rows and r.last_retry else ""
        print(f"{declared.name}: {r.delivered:,} delivered, {depth.rows:,} waiting{why}, "
              f"{r.aside:,} set aside")  # fmt: skip
        left_over += depth.rows
    return EXIT_OK if left_over == 0 else EXIT_ERROR
