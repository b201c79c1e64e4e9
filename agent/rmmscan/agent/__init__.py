"""The agent: `rmmscan agent`, the service that lives on an endpoint (docs/agent.md).

It holds the long-running loop and what only a service needs: the machine's default roots,
the CPU budget and priorities, the JSON log, the heartbeat. Every file it judges goes through
the engine, as a sweep's does: the sources (sources/watch.py, sources/processes.py, the sweep)
offer files, the engine judges them and delivers the rows to the configured sinks.

It sits between the command line and the configuration: it may import ``rmmscan.config`` and
every layer below, never ``rmmscan.cli``.
"""
