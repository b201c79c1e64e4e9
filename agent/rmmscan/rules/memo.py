"""The rule pack as rules/judge.py evaluates it: once per distinct value, not once per file.

Most rules are decided by their first column alone (``Signer has_any (...)`` is false for
every Microsoft-signed DLL), and a machine has few distinct signers. A compiled rule is a pure
function of the values it reads, and it always reads the same column first (its operands
are ordered at compile time), so a rule that read only that column and was false is false for
every row with the same value there. Rules are grouped by that first column; per value, the
memo keeps the rules the value alone did not rule out, and only those are evaluated.
What the rules read (version information, verdicts) is not saved. What rule evaluation
costs a sweep, with the memo, is in benchmarks/README.md (sweep profile).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Getter = Callable[[str], object]
_MEMO_MAX = 4096  # distinct values per column; a column of unique values just keeps missing


class _First(Exception):
    pass


def first_column(query) -> str | None:
    """The column the query reads first, whatever the row (None: it reads none)."""

    def probe(name: str):
        raise _First(name)

    try:
        query.matches(probe)
    except _First as first:
        return first.args[0]
    return None


class RuleSet:
    """``matching(get)``: the rules whose query keeps the row, in pack order."""

    def __init__(self, rules: Sequence):
        self.rules = tuple(rules)
        groups: dict[str | None, list[tuple[int, object]]] = {}
        for index, rule in enumerate(self.rules):
            groups.setdefault(first_column(rule.query), []).append((index, rule))
        self._constant = tuple(groups.pop(None, ()))
        self._groups = tuple((column, tuple(group)) for column, group in groups.items())
        self._memo: dict[str, dict[object, tuple]] = {column: {} for column in groups}

    def matching(self, get: Getter) -> list:
        hits = [(i, rule) for i, rule in self._constant if rule.query.matches(get)]
        for column, group in self._groups:
            value = get(column)
            memo = self._memo[column]
            try:
                todo = memo.get(value)
            except TypeError:  # an unhashable value: no memo
                todo, memo = group, None
            if todo is None:
                todo = memo[value] = self._undecided(column, group, get)
                if len(memo) > _MEMO_MAX:
                    memo.clear()  # thread-safe enough: a race only costs a recomputation
            for index, rule in todo:
                if rule.query.matches(get):
                    hits.append((index, rule))
        if len(hits) > 1:
            hits.sort(key=lambda hit: hit[0])
        return [rule for _, rule in hits]

    @staticmethod
    def _undecided(column: str, group, get: Getter) -> tuple:
        """The rules of `group` not proven false by the value of `column` alone."""
        todo = []
        for index, rule in group:
            others = False

            def counting(name: str, _get=get):
                nonlocal others
                if name != column:
                    others = True
                return _get(name)

            if rule.query.matches(counting) or others:
                todo.append((index, rule))
        return tuple(todo)
