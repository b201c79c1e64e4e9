"""Sources: where candidate files come from, and how they are opened.

Holds the candidate contract (candidate.py) and the local file systems' source: the parallel
walk (walk.py), directories opened relative to their parent (dirs.py), safe opens (local.py,
localfile.py), which sweep process visits a directory (claims.py), pseudo file systems
(mounts.py) and the device's identity (device.py); the agent's live sources: file-system
events (watch.py) and running processes (processes.py); disk images (image/).

Knows nothing of PE files, rows, rules or output: must not import inspect, rows, rules,
state, sinks, engine or cli.
"""
