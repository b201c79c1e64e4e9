"""The command line: argument parsing (main.py), the commands scan, inspect, rules and state,
and the exit statuses (status.py). It builds an engine's options and reports; it holds no
scanning logic of its own.

The top layer: nothing in rmmscan imports it (but __main__).
"""
