"""`rmmscan image IMAGE...`: offline disk images scanned read-only through the same engine,
sinks, console and exit statuses as `rmmscan scan` (common.py); engine/image.py drives it."""

from __future__ import annotations

import os

from .common import guarded, session


def run(args) -> int:
    return guarded(_run, args)


def _run(args) -> int:
    from ..engine.image import ImageScan

    images = list(dict.fromkeys(os.path.abspath(p) for p in args.images))

    def scan(engine, _config, console, stop) -> None:
        ImageScan(engine, args.partition, args.deleted, args.shadows, args.jobs).run(
            images, console.tick, stop
        )

    return session(args, "image", scan)
