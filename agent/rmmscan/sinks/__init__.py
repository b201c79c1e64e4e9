"""Sinks: where rows go. The contract (sink.py: write, flush, close), the output formats
(formats.py: table, line, jsonl, csv), the report of `rmmscan inspect`, the scan's statistics
(stats.py) and the console that observes them. A sink never drops a row silently.

Uses rows and below; must not import state, engine or cli.
"""
