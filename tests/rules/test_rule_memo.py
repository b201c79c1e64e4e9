"""The memoized rule set selects exactly the rules a plain rule-by-rule evaluation selects,
on every test row of the shipped pack (each row seen repeatedly, in varied orders, so most
answers come from the memo), and reads no column a plain evaluation would not."""

from __future__ import annotations

import random

from rmmscan.rules.memo import RuleSet, first_column
from rmmscan.rules.pack import load_pack
from rmmscan.rules.testrows import Problems, load_tests


def _rows():
    pack = load_pack()
    problems = Problems()
    rows = [row for rule in pack for row in load_tests(rule, problems).rows]
    assert not list(problems) and len(rows) > 600
    return pack, rows


def _counting(row, reads: list[str]):
    def get(name):
        reads.append(name)
        return row.get(name)

    return get


def test_memo_selects_what_plain_evaluation_selects():
    pack, rows = _rows()
    ruleset = RuleSet(pack.rules)
    order = rows * 3
    random.Random(7).shuffle(order)
    matched = 0
    for row in order:
        plain_reads: list[str] = []
        plain = [r for r in pack.rules if r.query.matches(_counting(row, plain_reads))]
        memo_reads: list[str] = []
        assert ruleset.matching(_counting(row, memo_reads)) == plain
        assert set(memo_reads) <= set(plain_reads)
        matched += bool(plain)
    assert 0 < matched < len(order)  # both outcomes were exercised


def test_memo_answers_repeated_values_without_reevaluating():
    pack, rows = _rows()
    ruleset = RuleSet(pack.rules)
    row = next(r for r in rows if not any(rule.query.matches(r.get) for rule in pack))
    plain: list[str] = []
    for rule in pack:
        rule.query.matches(_counting(row, plain))
    first: list[str] = []
    assert ruleset.matching(_counting(row, first)) == []
    again: list[str] = []
    assert ruleset.matching(_counting(row, again)) == []
    # Warm, 53 Signer rules cost one read of Signer; only rules that read past their first
    # column (DWService's, the look-alike rule) run again.
    assert again.count("Signer") <= 2 and len(again) * 4 < len(plain) <= len(first)


def test_first_column_is_the_first_read():
    pack, rows = _rows()
    for rule in pack:
        for row in rows[:50]:
            reads: list[str] = []
            rule.query.matches(_counting(row, reads))
            assert reads[0] == first_column(rule.query), rule.id
