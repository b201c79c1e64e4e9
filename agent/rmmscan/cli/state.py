"""`rmmscan state`: where the persistent state is and what it holds; clearing the scan cache."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("state", help="show the persistent state (cache, device id, ReportIds)")
    p.add_argument("--state-dir", default=None, metavar="DIR")
    return p


def run(args) -> int:
    raise NotImplementedError("rmmscan state")
