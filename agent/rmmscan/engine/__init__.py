"""Engine: one for every mode. Built from an ``Options`` (options.py), the engine (engine.py)
owns the rule pack, allowlist, trust, device identity, state, cache and ReportIds; it judges
one candidate of any source and delivers rows to the sinks. sweep.py fans the local sweep out
over threads or processes.

Uses every layer below; must not import cli.
"""
