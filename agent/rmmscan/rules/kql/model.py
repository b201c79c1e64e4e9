"""A parsed predicate and a parsed query: compiled once, evaluated on every row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Getter = Callable[[str], object]
# A compiled expression: True, False, or None (Kusto's null) for one row.
Compiled = Callable[[Getter], "bool | None"]


def memoized(get: Getter) -> Getter:
    """``get`` called at most once per column."""
    cache: dict[str, object] = {}

    def cached(name: str) -> object:
        try:
            return cache[name]
        except KeyError:
            value = cache[name] = get(name)
            return value

    return cached


@dataclass(frozen=True)
class Predicate:
    """One ``where`` clause: true only when Kusto's ``where`` would keep the row."""

    text: str  # the predicate's KQL source text, as written
    columns: frozenset[str]  # the columns it reads
    cost: int = field(default=0, compare=False)  # the most expensive column it may read
    _compiled: Compiled | None = field(default=None, repr=False, compare=False)
    _reads: int = field(default=0, repr=False, compare=False)  # column references in the text

    def evaluate(self, get: Getter) -> bool:
        """True only when Kusto's ``where`` keeps the row (null is not true).

        ``get(name)`` is called only for columns actually reached, cheapest first, at most once
        per column per call.
        """
        if self._reads > len(self.columns):
            get = memoized(get)
        return self._compiled(get) is True


@dataclass(frozen=True)
class Query:
    """A hunting query as the endpoint runs it: its ``where`` predicates, ANDed."""

    table: str
    predicates: tuple[Predicate, ...]  # as written
    ignored: tuple[str, ...]  # what the endpoint skips: let statements, time window, summarize
    columns: frozenset[str]
    _order: tuple[Predicate, ...] = field(default=(), repr=False, compare=False)  # cheapest first
    _reads: int = field(default=0, repr=False, compare=False)

    def matches(self, get: Getter) -> bool:
        """All predicates true, cheapest first, stopping at the first that is not.

        ``get`` is called at most once per column per call.
        """
        if self._reads > len(self.columns):
            get = memoized(get)
        for predicate in self._order:  # noqa: SIM110 - faster than all() of a generator
            if predicate._compiled(get) is not True:
                return False
        return True
