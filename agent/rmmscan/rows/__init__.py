"""Rows: DeviceFileCertificateInfo rows, their columns declared once (columns.py), built from
inspections (build.py), and computed lazily a group of columns at a time for one file
(facts.py), so that rules read only what they need.

Uses inspect and sources; must not import rules, state, sinks, engine or cli.
"""
