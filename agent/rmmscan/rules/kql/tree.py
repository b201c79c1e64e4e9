"""The checked expression tree and its compilation to closures over a row getter.

Leaves carry their compiled test. ``and``/``or``/``not`` are compiled once the tree is complete,
the operands of ``and``/``or`` ordered cheapest first (by the costliest column each reads).
"""

from __future__ import annotations

from .model import Compiled
from .strings import ascii_fold, ascii_fold_cached, phrase_matcher


class Node:
    __slots__ = ("end", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


class Leaf(Node):
    __slots__ = ("column", "compiled", "cost")

    def __init__(self, start, end, column: str, cost: int, compiled: Compiled) -> None:
        super().__init__(start, end)
        self.column, self.cost, self.compiled = column, cost, compiled


class Group(Node):
    """``and`` (all) or ``or`` (any) of two or more operands."""

    __slots__ = ("children", "is_and")

    def __init__(self, start, end, is_and: bool, children: list[Node]) -> None:
        super().__init__(start, end)
        self.is_and, self.children = is_and, children


class Not(Node):
    __slots__ = ("child",)

    def __init__(self, start, end, child: Node) -> None:
        super().__init__(start, end)
        self.child = child


class Window(Node):
    """A comparison of Timestamp with the time window: ignored by the endpoint."""

    __slots__ = ()


def walk(node: Node):
    yield node
    if isinstance(node, Group):
        for child in node.children:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.child)


def cost_of(node: Node) -> int:
    return max((n.cost for n in walk(node) if isinstance(n, Leaf)), default=0)


def compile_tree(node: Node) -> Compiled:
    if isinstance(node, Leaf):
        return node.compiled
    if isinstance(node, Not):
        inner = compile_tree(node.child)

        def negation(get):
            value = inner(get)
            return None if value is None else not value

        return negation
    assert isinstance(node, Group)
    # Stable: operands of equal cost keep their written order. Results do not depend on the order
    # (no side effects; and/or treat null as false), only the columns read do.
    parts = tuple(compile_tree(child) for child in sorted(node.children, key=cost_of))
    if node.is_and:
        if len(parts) == 2:
            first, second = parts
            return lambda get: first(get) is True and second(get) is True

        def conjunction(get):
            for part in parts:  # noqa: SIM110 - faster than all() of a generator
                if part(get) is not True:
                    return False
            return True

        return conjunction
    if len(parts) == 2:
        first, second = parts
        return lambda get: first(get) is True or second(get) is True

    def disjunction(get):
        for part in parts:  # noqa: SIM110 - faster than any() of a generator
            if part(get) is True:
                return True
        return False

    return disjunction


# Leaves


def string_test(kind: str, case_sensitive: bool, needle: str):
    """A test of a (non-null) string value, on the value case-folded if needed."""
    if not case_sensitive:
        needle = ascii_fold(needle)
    if kind == "has":
        return phrase_matcher(needle)
    if kind == "contains":
        return lambda value: needle in value
    if kind == "startswith":
        return lambda value: value.startswith(needle)
    if kind == "endswith":
        return lambda value: value.endswith(needle)
    assert kind == "equals"
    return lambda value: value == needle


def string_leaf(column: str, case_sensitive: bool, negated: bool, test) -> Compiled:
    # Kusto strings are never null: a missing value is the empty string.
    if case_sensitive:

        def leaf(get):
            value = get(column)
            return test("" if value is None else value) is not negated

    else:

        def leaf(get):
            value = get(column)
            if value is None:
                value = ""
            elif value.isascii():
                value = value.lower()
            else:
                value = ascii_fold_cached(value)
            return test(value) is not negated

    return leaf


def value_leaf(column: str, negated: bool, test) -> Compiled:
    """A comparison on a bool or integer column: null when the value is null."""

    def leaf(get):
        value = get(column)
        if value is None:
            return None
        return test(value) is not negated

    return leaf


def empty_leaf(column: str, is_string: bool, want_empty: bool) -> Compiled:
    if is_string:

        def leaf(get):
            value = get(column)
            return (value is None or value == "") is want_empty

    else:

        def leaf(get):
            return (get(column) is None) is want_empty

    return leaf


def bool_leaf(column: str) -> Compiled:
    def leaf(get):
        value = get(column)
        return None if value is None else bool(value)

    return leaf


def any_phrase(needles: list[str]):
    """has_any: one of the (folded) needles is a phrase of the value."""
    matchers = tuple(phrase_matcher(needle) for needle in needles)

    def test(value: str) -> bool:
        for match in matchers:  # noqa: SIM110 - a loop is 3x faster than any() of a generator
            if match(value):
                return True
        return False

    return test


def all_phrases(needles: list[str]):
    """has_all: every (folded) needle is a phrase of the value."""
    matchers = tuple(phrase_matcher(needle) for needle in needles)

    def test(value: str) -> bool:
        for match in matchers:  # noqa: SIM110 - as above
            if not match(value):
                return False
        return True

    return test
