"""State: what persists between scans in the state directory: the ReportId counter and the
device id (store.py), the scan cache (cache.py), and a read-only summary of both
(inventory.py). Nothing here is ever fatal to a scan.

Uses rows (the columns a cache record holds) and below; must not import sinks, engine or cli.
"""
