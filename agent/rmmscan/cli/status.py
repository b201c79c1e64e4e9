"""Exit statuses, declared once (clamscan's convention).

0: nothing found. 1: detections (they take precedence: a finding is never hidden behind an
error). 2: an error: a bad option or rule pack, a root that could not be scanned, an internal
error, or a scan stopped before its end. 130: interrupted from the keyboard (Ctrl-C).
"""

from __future__ import annotations

from ..sinks.stats import ScanStats

EXIT_OK, EXIT_FOUND, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def scan_status(stats: ScanStats) -> int:
    if stats.found:
        return EXIT_FOUND
    return EXIT_ERROR if stats.incomplete else EXIT_OK
