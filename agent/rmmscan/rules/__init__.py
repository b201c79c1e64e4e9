"""Rules: the KQL predicate engine (kql/), the rule pack (pack.py; the bundled pack ships as
rmmscan.rules.bundled), its evaluation once per distinct value (memo.py), the allowlist
(allowlist.py), each rule's test rows (testrows.py), the export as hunting queries (export.py),
and the judgement of one file's rows (judge.py).

Uses rows and below; must not import state, sinks, engine or cli.
"""
