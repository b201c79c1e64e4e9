"""`rmmscan state`: where the persistent state is and what it holds; clearing the scan cache.

The state (device id, ReportId counter, scan cache) otherwise shows itself only as ReportIds
that do not start at 1 and a directory that grows: this command lists the directory's files
and sizes, the DeviceId and DeviceName the next scan stamps, the next ReportId and the scan
cache's counts, as text or one JSON object, and empties the cache on request. The directory
is the one a scan uses (--state-dir, else $RMMSCAN_STATE_DIR, else the default). Showing
creates and changes nothing (state/inventory.py reads the databases read-only).

Exit status: 0 shown or cleared; 2 a database could not be read (the rest is still shown),
the cache is locked by a running scan, or cannot be cleared. Each problem is one line on
stderr: "rmmscan: <path>: <what is wrong>: <what to do>".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..text import printable
from .status import EXIT_ERROR, EXIT_OK

if TYPE_CHECKING:  # imported when the command runs: every command builds this parser
    from ..state.inventory import Cleared, Counts, Inventory, Problem

EPILOG = """exit status: 0 shown or cleared; 2 a database could not be read (the rest is still
shown), the scan cache is locked by a running scan, or it cannot be cleared."""

_SOURCE_TEXT = {
    "machine-id": "from the OS machine id",
    "state": "kept in state.sqlite: this OS has no machine id",
}
_ID_UNKNOWN = {
    "new": "none yet (no OS machine id: the next scan picks a random one and keeps it in "
    "state.sqlite)",
    "per-run": "a random one each run (no OS machine id, and the state cannot keep one)",
}


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "state",
        help="show the persistent state (cache, device id, ReportIds), or clear the cache",
        description="Show the state directory a scan uses: its files and sizes, the DeviceId "
        "and DeviceName the next scan stamps, the next ReportId and the scan cache's counts. "
        "Nothing is created or changed, unless --clear-cache is given.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the state directory (default: as a scan: $RMMSCAN_STATE_DIR, /var/lib/rmmscan "
        "as root, else ~/.local/state/rmmscan)",
    )
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: for people (default); json: one object, for scripts",
    )
    p.add_argument(
        "--clear-cache",
        action="store_true",
        help="empty the scan cache (the next scan reads every file again); the device id "
        "and the ReportId counter are kept; exits 2 (after at most 2 s) if a running "
        "scan holds the cache",
    )
    return p


def run(args) -> int:
    from ..state.inventory import summarize
    from ..state.store import default_dir

    directory = args.state_dir if args.state_dir is not None else default_dir()
    if args.clear_cache:
        return _clear(directory, args.format)
    inventory = summarize(directory)
    if args.format == "json":
        print(json.dumps(_inventory_json(inventory), indent=2))
    elif not inventory.exists:
        print(f"no state yet at {printable(str(inventory.directory))}: a scan creates it")
    else:
        sys.stdout.write(_inventory_text(inventory))
    sys.stdout.flush()
    for problem in inventory.problems:
        print(f"rmmscan: {problem.message()}", file=sys.stderr)
    return EXIT_ERROR if inventory.problems else EXIT_OK


def _clear(directory: Path, fmt: str) -> int:
    from ..state.inventory import StateError, clear_cache

    exists = os.path.lexists(directory)
    try:
        cleared = clear_cache(directory) if exists else None
    except StateError as exc:
        print(f"rmmscan: {exc.problem.message()}", file=sys.stderr)
        return EXIT_ERROR
    if fmt == "json":
        print(json.dumps(_cleared_json(directory, cleared), indent=2))
    else:
        print(_cleared_text(directory, cleared))
    return EXIT_OK


# -- text ----------------------------------------------------------------------------------------


def _size(n: int) -> str:
    """Exact bytes, and the size in binary units beside them when it is 1 KiB or more."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{n:,} bytes" + (f" ({value:.1f} {units[unit]})" if unit else "")


def _inventory_text(inv: Inventory) -> str:
    out = [f"state directory  {printable(str(inv.directory))}"]
    if inv.listed and not inv.writable:
        out.append("  (not writable by this user: a scan by this user keeps nothing here)")
    if not inv.listed:
        out.append("  (cannot be read)")
    rows = [
        (printable(e.name) + ("" if e.kind == "file" else f" ({e.kind})"), e.size)
        for e in inv.entries
    ]
    if inv.listed:
        rows.append(("total", inv.total_bytes))
    name_width = max((len(name) for name, _ in rows), default=0)
    size_width = max((len(f"{size:,}") for _, size in rows), default=0)
    for name, size in rows:
        exact, _, human = _size(size).partition(" bytes")
        out.append(f"  {name:<{name_width}}  {exact:>{size_width}} bytes{human}".rstrip())
    out.append("")
    device = inv.device
    if device.device_id is None:
        shown_id = _ID_UNKNOWN[device.source]
    else:
        shown_id = f"{printable(device.device_id)} ({_SOURCE_TEXT[device.source]})"
    out.append(f"DeviceId         {shown_id}")
    out.append(f"DeviceName       {printable(device.device_name)}")
    if inv.next_report_id is None:
        problem = _problem_of(inv, inv.directory / "state.sqlite")
        why = f"state.sqlite {problem.what}" if problem else "the state cannot be read"
        out.append(f"next ReportId    unknown ({why})")
    else:
        out.append(f"next ReportId    {inv.next_report_id}")
    out.append("")
    out.extend(_cache_text(inv))
    return "\n".join(out) + "\n"


def _cache_text(inv: Inventory) -> list[str]:
    cache = inv.cache
    if not cache.readable:
        problem = _problem_of(inv, cache.path)
        what = f"{problem.what} ({problem.detail})" if problem else "cannot be read"
        return [f"scan cache       {what}"]
    if not cache.exists:
        return ["scan cache       none yet (the next scan makes cache.sqlite)"]
    head = f"scan cache       format {printable(cache.format or 'none')}"
    if cache.stale:
        head += f" (this rmmscan writes {cache.current_format}: the next scan empties it)"
    out = [head]
    if not cache.scopes:
        return [*out, "  empty"]
    rows = [("scope", "files", "PE files", "signed PE files", "directories")]
    named = [(_scope_name(c.scope), c) for c in cache.scopes]
    if len(named) > 1:
        named.append(("all", cache.total()))
    for name, counts in named:
        rows.append((name, *(f"{n:,}" for n in _numbers(counts))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def _numbers(c: Counts) -> tuple[int, int, int, int]:
    return c.files, c.pe_files, c.signed_pe_files, c.directories


def _scope_name(scope: str) -> str:
    return "local file systems" if scope == "" else f"image {printable(scope)}"


def _problem_of(inv: Inventory, path: Path) -> Problem | None:
    return next((p for p in inv.problems if p.path == path), None)


def _cleared_text(directory: Path, cleared: Cleared | None) -> str:
    if cleared is None:
        return f"no state yet at {printable(os.path.abspath(directory))}: a scan creates it"
    where = printable(str(cleared.path))
    kept = "the device id and the ReportId counter are kept"
    if cleared.damage is not None:
        text = (
            f"scan cache {where} was damaged ({cleared.damage}) and is removed, "
            f"{_size(cleared.bytes_freed)} freed; the next scan starts a new one; {kept}"
        )
    elif cleared.entries == 0 and not cleared.removed and cleared.bytes_freed == 0:
        text = f"scan cache {where}: nothing to clear"
    else:
        text = (
            f"scan cache {where} cleared: {cleared.entries:,} entries removed, "
            f"{_size(cleared.bytes_freed)} freed; {kept}"
        )
    aside = [printable(n) for n in cleared.removed if n.startswith(cleared.path.name + ".")]
    if aside:
        text += f"\nremoved too: {', '.join(aside)} (damaged caches set aside by earlier scans)"
    return text


# -- JSON ----------------------------------------------------------------------------------------


def _counts_json(c: Counts | None) -> dict:
    keys = ("files", "pe_files", "signed_pe_files", "directories")
    return dict.fromkeys(keys) if c is None else dict(zip(keys, _numbers(c), strict=True))


def _inventory_json(inv: Inventory) -> dict:
    cache = inv.cache
    return {
        "directory": printable(str(inv.directory)),
        "exists": inv.exists,
        "readable": inv.listed,
        "writable": inv.writable,
        "files": [{"name": printable(e.name), "size": e.size, "kind": e.kind} for e in inv.entries],
        "total_bytes": inv.total_bytes,
        "device_id": None if inv.device.device_id is None else printable(inv.device.device_id),
        "device_name": printable(inv.device.device_name),
        "device_id_source": inv.device.source,
        "next_report_id": inv.next_report_id,
        "cache": {
            "path": printable(str(cache.path)),
            "exists": cache.exists,
            "readable": cache.readable,
            "format": None if cache.format is None else printable(cache.format),
            "current_format": cache.current_format,
            **_counts_json(cache.total() if cache.readable else None),
            "scopes": [{"scope": printable(c.scope), **_counts_json(c)} for c in cache.scopes],
        },
        "problems": [
            {
                "path": printable(str(p.path)),
                "what": p.what,
                "detail": p.detail,
                "advice": p.advice,
            }
            for p in inv.problems
        ],
    }


def _cleared_json(directory: Path, cleared: Cleared | None) -> dict:
    return {
        "directory": printable(os.path.abspath(directory)),
        "exists": cleared is not None,
        "cache": None if cleared is None else printable(str(cleared.path)),
        "entries_removed": 0 if cleared is None else cleared.entries,
        "bytes_freed": 0 if cleared is None else cleared.bytes_freed,
        "damaged": None if cleared is None else cleared.damage,
        "removed_files": [] if cleared is None else [printable(n) for n in cleared.removed],
    }
