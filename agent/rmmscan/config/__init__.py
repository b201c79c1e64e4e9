"""The configuration file: one TOML file shared by `scan` and `agent`, read with tomllib and
checked key by key (every problem names the file, the line, the key and what to write). It
builds the engine's options and the sinks' settings; it opens nothing.

Uses the engine's options and the sinks' settings; must not import cli.
"""
