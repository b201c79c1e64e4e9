"""Parse a hunting query (or one predicate), check it against the columns, compile it.

Every construct outside the supported subset is refused here with a :class:`KqlError` naming the
file, line, column and construct; nothing is skipped silently except what ``Query.ignored`` lists.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import datetime

from ...rows.columns import COSTS, GROUP, QUERYABLE, TYPES
from .lexer import EOF, IDENT, NUMBER, OP, STRING, Source, Token, tokenize
from .model import Predicate, Query
from .regex import RegexRefused, compile_search
from .strings import ascii_fold, has_term_char
from .tree import (
    Group,
    Leaf,
    Node,
    Not,
    Window,
    all_phrases,
    any_phrase,
    bool_leaf,
    compile_tree,
    cost_of,
    empty_leaf,
    string_leaf,
    string_test,
    value_leaf,
    walk,
)

TABLES = ("DeviceFileCertificateInfo", "RmmScanFileCertificateInfo_CL")
TIMESTAMP = "Timestamp"

# name -> (kind, case_sensitive, negated); the left side is a string column, the right a string.
STRING_OPS = {
    "has": ("has", False, False),
    "!has": ("has", False, True),
    "has_cs": ("has", True, False),
    "!has_cs": ("has", True, True),
    "contains": ("contains", False, False),
    "!contains": ("contains", False, True),
    "contains_cs": ("contains", True, False),
    "!contains_cs": ("contains", True, True),
    "startswith": ("startswith", False, False),
    "!startswith": ("startswith", False, True),
    "startswith_cs": ("startswith", True, False),
    "!startswith_cs": ("startswith", True, True),
    "endswith": ("endswith", False, False),
    "!endswith": ("endswith", False, True),
    "endswith_cs": ("endswith", True, False),
    "!endswith_cs": ("endswith", True, True),
    "=~": ("equals", False, False),
    "!~": ("equals", False, True),
}
# name -> (kind, case_sensitive, negated); the right side is a parenthesized list.
LIST_OPS = {
    "has_any": ("has_any", False, False),
    "has_all": ("has_all", False, False),
    "in": ("in", True, False),
    "!in": ("in", True, True),
    "in~": ("in", False, False),
    "!in~": ("in", False, True),
}
EQUALITY_OPS = {"==": False, "!=": True}
REGEX_OP = "matches regex"
SUPPORTED_OPERATORS = (*STRING_OPS, *LIST_OPS, *EQUALITY_OPS, REGEX_OP)
SUPPORTED_HINT = "supported: " + ", ".join(SUPPORTED_OPERATORS)
FUNCTIONS = ("not", "isempty", "isnotempty")
TIME_FUNCTIONS = ("now", "ago", "datetime")
WINDOW_OPS = ("between", ">", ">=", "<", "<=")
# Documented timespan literal units: https://learn.microsoft.com/kusto/query/scalar-data-types/timespan
TIMESPAN_UNITS = ("d", "h", "m", "s", "ms", "microsecond", "tick")
DATETIME_LITERAL = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,7})?)?)?Z?\Z"
)
STRING_TYPE, BOOL, INTEGERS = "string", "bool", ("long", "int")


def default_cost(columns: Mapping[str, str]) -> dict[str, int]:
    top = max(COSTS.values())
    return {name: COSTS[GROUP[name]] if name in GROUP else top for name in columns}


class _Parser:
    def __init__(self, text, source, first_line, columns, cost, query_mode) -> None:
        self.src = Source(text, source, first_line)
        self.tokens, self.comments = tokenize(self.src)
        self.i = 0
        self.columns = dict(columns)
        self.cost = default_cost(self.columns) if cost is None else dict(cost)
        self.top_cost = max(COSTS.values())
        self.query_mode = query_mode
        self.lets: dict[str, str] = {}

    # -- tokens ---------------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def error(self, token: Token, message: str, construct: str | None = None, hint: str = ""):
        if construct is None:
            construct = token.text if token.kind != EOF else "end of query"
        return self.src.error(token.start, message, construct, hint)

    def expect(self, value: str, what: str = "") -> Token:
        token = self.peek()
        if token.kind in (IDENT, OP) and token.value == value:
            return self.next()
        raise self.error(token, f"expected {what or repr(value)}")

    def is_op(self, token: Token, *values: str) -> bool:
        return token.kind in (IDENT, OP) and token.value in values

    def text(self, start: int, end: int) -> str:
        return self.src.text[start:end]

    def clean(self, start: int, end: int) -> str:
        """The text without comments, its whitespace collapsed: for descriptions."""
        pieces, at = [], start
        for c_start, c_end in self.comments:
            if c_end <= start or c_start >= end:
                continue
            pieces.append(self.src.text[at:c_start])
            at = c_end
        pieces.append(self.src.text[at:end])
        return " ".join("".join(pieces).split())

    # -- query ----------------------------------------------------------------------------------

    def query(self) -> Query:
        ignored: list[str] = []
        while self.peek().kind == IDENT and self.peek().value == "let":
            ignored.append(self.let_statement())
        table_token = self.next()
        if table_token.kind != IDENT or table_token.value not in TABLES:
            hint = "a query starts with optional let statements, then the table: " + (
                " or ".join(TABLES)
            )
            if table_token.kind == IDENT and table_token.value.lower() == "let":
                hint = "Kusto keywords are case-sensitive: write 'let'"
            raise self.error(table_token, "unsupported table", hint=hint)
        predicates: list[Predicate] = []
        while self.is_op(self.peek(), "|"):
            bar = self.next()
            stage = self.next()
            if stage.kind == IDENT and stage.value == "where":
                predicate = self.where(stage, ignored)
                if predicate is not None:
                    predicates.append(predicate)
            elif stage.kind == IDENT and stage.value == "summarize":
                ignored.append(self.summarize(stage))
            else:
                construct = self.text(bar.start, stage.end)
                hint = "supported: where, and one final summarize"
                if stage.kind == IDENT and stage.value.lower() in ("where", "summarize"):
                    hint = f"Kusto keywords are case-sensitive: write {stage.value.lower()!r}"
                raise self.error(stage, "unsupported stage", construct, hint)
        end = self.peek()
        if end.kind != EOF:
            raise self.error(end, "unexpected text after the query", hint="stages start with |")
        order = tuple(sorted(predicates, key=lambda p: p.cost))
        return Query(
            table=table_token.value,
            predicates=tuple(predicates),
            ignored=tuple(ignored),
            columns=frozenset().union(*(p.columns for p in predicates)),
            _order=order,
            _reads=sum(p._reads for p in predicates),
        )

    def let_statement(self) -> str:
        let = self.next()
        name = self.next()
        if name.kind != IDENT:
            raise self.error(name, "expected a name after let")
        if name.value in self.lets or name.value in self.columns or name.value == TIMESTAMP:
            raise self.error(name, "let name already used", hint="choose another name")
        self.expect("=")
        start = self.peek().start
        self.time_bound(allow_names=False)
        end = self.tokens[self.i - 1].end
        self.lets[name.value] = self.text(start, end)
        semicolon = self.peek()
        if not self.is_op(semicolon, ";"):
            raise self.error(semicolon, "expected ';' after the let statement")
        self.next()
        return self.clean(let.start, semicolon.start)

    def summarize(self, stage: Token) -> str:
        depth = 0
        last = stage
        while self.peek().kind != EOF:
            token = self.peek()
            if self.is_op(token, "(", "["):
                depth += 1
            elif self.is_op(token, ")", "]"):
                depth -= 1
            elif depth <= 0 and self.is_op(token, "|"):
                after = self.peek(1)
                raise self.error(
                    token,
                    "stage after summarize",
                    self.text(token.start, after.end),
                    "summarize must be the last stage",
                )
            last = self.next()
        if last is stage:
            raise self.error(stage, "summarize needs aggregations")
        return "summarize " + self.clean(stage.end, last.end)

    def where(self, stage: Token, ignored: list[str]) -> Predicate | None:
        if self.peek().kind == EOF or self.is_op(self.peek(), "|"):
            raise self.error(stage, "where needs a predicate")
        node = self.or_expr()
        self.end_of_clause()
        conjuncts = node.children if isinstance(node, Group) and node.is_and else [node]
        kept = []
        for conjunct in conjuncts:
            if isinstance(conjunct, Window):
                ignored.append("time window: " + self.clean(conjunct.start, conjunct.end))
            else:
                kept.append(conjunct)
        if not kept:
            return None
        if len(kept) == len(conjuncts):
            return self.predicate(node, self.text(node.start, node.end))
        text = " and ".join(self.text(k.start, k.end) for k in kept)
        tree = kept[0] if len(kept) == 1 else Group(kept[0].start, kept[-1].end, True, kept)
        return self.predicate(tree, text)

    def end_of_clause(self) -> None:
        token = self.peek()
        if token.kind == EOF or (self.query_mode and self.is_op(token, "|")):
            return
        if token.kind == IDENT and token.value.lower() in ("and", "or"):
            raise self.error(
                token,
                "unsupported operator",
                hint=f"Kusto keywords are case-sensitive: write {token.value.lower()!r}",
            )
        raise self.error(token, "unexpected text after the predicate", hint="join with and / or")

    def predicate(self, node: Node, text: str) -> Predicate:
        for inner in walk(node):
            if isinstance(inner, Window):
                raise self.src.error(
                    inner.start,
                    "Timestamp is only allowed in the time window",
                    self.text(inner.start, inner.end),
                    "put the time window in its own where clause, or as a top-level 'and' term",
                )
        leaves = [n for n in walk(node) if isinstance(n, Leaf)]
        return Predicate(
            text=text,
            columns=frozenset(leaf.column for leaf in leaves),
            cost=cost_of(node),
            _compiled=compile_tree(node),
            _reads=len(leaves),
        )

    # -- expressions ----------------------------------------------------------------------------

    def or_expr(self) -> Node:
        first = self.and_expr()
        children = [first]
        while self.is_op(self.peek(), "or") and self.peek().kind == IDENT:
            self.next()
            children.append(self.and_expr())
        if len(children) == 1:
            return first
        flat = []
        for child in children:
            is_or = isinstance(child, Group) and not child.is_and
            flat.extend(child.children if is_or else [child])
        return Group(children[0].start, children[-1].end, False, flat)

    def and_expr(self) -> Node:
        first = self.primary()
        children = [first]
        while self.is_op(self.peek(), "and") and self.peek().kind == IDENT:
            self.next()
            children.append(self.primary())
        if len(children) == 1:
            return first
        flat = []
        for child in children:
            is_and = isinstance(child, Group) and child.is_and
            flat.extend(child.children if is_and else [child])
        return Group(children[0].start, children[-1].end, True, flat)

    def primary(self) -> Node:
        token = self.peek()
        if self.is_op(token, "("):
            self.next()
            inner = self.or_expr()
            close = self.expect(")", "')'")
            if isinstance(inner, Group):
                return Group(token.start, close.end, inner.is_and, inner.children)
            inner.start, inner.end = token.start, close.end
            return inner
        if token.kind == IDENT:
            if self.is_op(self.peek(1), "("):
                return self.function()
            if token.value in ("true", "false"):
                raise self.error(token, "a literal is not a predicate", hint="compare a column")
            if token.value.lower() == "not":
                raise self.error(token, "not needs parentheses", hint="write not(...)")
            if token.value == TIMESTAMP and TIMESTAMP not in self.columns:
                return self.window()
            if token.value in self.lets:
                raise self.error(
                    token, "a let name is only allowed in the time window", hint="Timestamp ..."
                )
            return self.comparison()
        if token.kind in (STRING, NUMBER):
            raise self.error(
                token,
                "the left side of a comparison must be a column",
                hint="write Column op value",
            )
        if token.kind == EOF:
            raise self.error(token, "expected a predicate")
        raise self.error(token, "unexpected character" if len(token.text) == 1 else "unexpected")

    def function(self) -> Node:
        name = self.next()
        if name.value not in FUNCTIONS:
            if name.value.lower() in FUNCTIONS:
                hint = f"Kusto function names are case-sensitive: write {name.value.lower()}()"
            elif name.value in TIME_FUNCTIONS:
                hint = "time functions may only bound the time window on Timestamp"
            else:
                hint = "supported: not(), isempty(), isnotempty()"
            raise self.error(name, "unsupported function", name.value + "()", hint)
        self.expect("(")
        if name.value == "not":
            inner = self.or_expr()
            close = self.expect(")", "')'")
            return Not(name.start, close.end, inner)
        column_token = self.peek()
        if column_token.kind != IDENT:
            raise self.error(column_token, f"{name.value}() takes a column")
        self.next()
        column, _type = self.column(column_token)
        close = self.expect(")", "')'")
        compiled = empty_leaf(column, _type == STRING_TYPE, name.value == "isempty")
        return Leaf(name.start, close.end, column, self.cost_of(column), compiled)

    def column(self, token: Token) -> tuple[str, str]:
        name = token.value
        if name in self.columns:
            return name, self.columns[name]
        if name == TIMESTAMP:
            raise self.error(
                token,
                "Timestamp is only allowed in a query's time window",
                hint="the endpoint evaluates each row as it is made",
            )
        candidates = sorted(self.columns)
        close = [c for c in candidates if c.lower() == name.lower()]
        close += [
            c
            for c in difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
            if c not in close
        ]
        if close:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        elif name in TYPES:
            hint = "known only when a row is emitted: rules cannot test it"
        else:
            hint = "columns: " + ", ".join(candidates)
        raise self.error(token, "unknown column", hint=hint)

    def cost_of(self, column: str) -> int:
        return self.cost.get(column, self.top_cost)

    def comparison(self) -> Node:
        column_token = self.next()
        column, ctype = self.column(column_token)
        op_token = self.peek()
        if op_token.kind == EOF or self.is_op(op_token, ")", "|", "and", "or"):
            # A bare column: a predicate only if it is a bool.
            if ctype != BOOL:
                raise self.error(
                    column_token,
                    f"a {ctype} column is not a predicate",
                    hint="compare it: Column op value",
                )
            compiled = bool_leaf(column)
            return Leaf(
                column_token.start, column_token.end, column, self.cost_of(column), compiled
            )
        op = self.operator()
        start, cost = column_token.start, self.cost_of(column)
        if op in STRING_OPS or op in ("has_any", "has_all", "in~", "!in~", REGEX_OP):
            self.require_type(column_token, ctype, op, (STRING_TYPE,))
        elif op in ("in", "!in"):
            self.require_type(column_token, ctype, op, (STRING_TYPE, *INTEGERS))
        if op in STRING_OPS:
            kind, case_sensitive, negated = STRING_OPS[op]
            needle_token = self.peek()
            needle, end = self.single_string()
            if kind == "has":
                self.check_has_needle(needle, op, needle_token)
            test = string_test(kind, case_sensitive, needle)
            return Leaf(
                start, end, column, cost, string_leaf(column, case_sensitive, negated, test)
            )
        if op in LIST_OPS:
            return self.list_comparison(column_token, column, ctype, op)
        if op == REGEX_OP:
            return self.regex(column_token, column)
        negated = EQUALITY_OPS[op]
        value, end = self.literal(ctype, column, op)
        if ctype == STRING_TYPE:
            test = string_test("equals", True, value)
            return Leaf(start, end, column, cost, string_leaf(column, True, negated, test))
        return Leaf(start, end, column, cost, value_leaf(column, negated, lambda v: v == value))

    def operator(self) -> str:
        token = self.next()
        if token.kind not in (IDENT, OP):
            raise self.error(token, "expected an operator", hint=SUPPORTED_HINT)
        name = token.value
        if name == "matches":
            word = self.peek()
            if word.kind == IDENT and word.value == "regex":
                self.next()
                return REGEX_OP
            construct = self.text(token.start, word.end) if word.kind == IDENT else name
            if word.kind == IDENT and word.value.lower() == "regex":
                raise self.error(token, "unsupported operator", construct, "write 'matches regex'")
            raise self.error(token, "unsupported operator", construct, SUPPORTED_HINT)
        if name in SUPPORTED_OPERATORS:
            return name
        lowered = [op for op in SUPPORTED_OPERATORS if op.lower() == name.lower()]
        if lowered:
            hint = f"Kusto operators are case-sensitive: write {lowered[0]!r}"
            raise self.error(token, "unsupported operator", hint=hint)
        if name.lower() == "matches":
            raise self.error(token, "unsupported operator", hint="write 'matches regex'")
        hint = SUPPORTED_HINT
        if name == "=":
            hint = "for equality write =="
        elif name in ("<", "<=", ">", ">=", "between", "!between"):
            hint = f"{name} is only supported on Timestamp, in the time window; {SUPPORTED_HINT}"
        raise self.error(token, "unsupported operator", hint=hint)

    def require_type(self, token: Token, ctype: str, op: str, types: tuple[str, ...]) -> None:
        if ctype not in types:
            raise self.error(
                token,
                f"type mismatch: {op} needs a {' or '.join(types)} column, and "
                f"{token.value} is {ctype}",
            )

    def check_has_needle(self, needle: str, op: str, token: Token) -> None:
        if not has_term_char(needle):
            raise self.error(
                token,
                f"{op} needs a letter or digit in its value",
                hint="has matches terms (runs of letters and digits); for punctuation use contains",
            )

    def single_string(self) -> tuple[str, int]:
        """A string literal, optionally in parentheses: has 'x' or has ('x')."""
        if self.is_op(self.peek(), "("):
            self.next()
            value, _ = self.string_literal()
            close = self.expect(")", "')'")
            return value, close.end
        return self.string_literal()

    def string_literal(self) -> tuple[str, int]:
        token = self.peek()
        if token.kind != STRING:
            raise self.error(token, "expected a string literal")
        parts = []
        while self.peek().kind == STRING:  # adjacent literals are joined
            token = self.next()
            parts.append(token.value)
        return "".join(parts), token.end

    def literal(self, ctype: str, column: str, op: str):
        """A literal of the column's type: (value, end offset)."""
        token = self.peek()
        if token.kind not in (STRING, NUMBER, IDENT) and not self.is_op(token, "-"):
            raise self.error(token, "expected a value")
        if ctype == STRING_TYPE:
            if token.kind != STRING:
                raise self.error(token, f"type mismatch: {column} is a string column; {op} needs"
                                 " a string literal")  # fmt: skip
            return self.string_literal()
        if ctype == BOOL:
            if token.kind == IDENT and token.value in ("true", "false"):
                self.next()
                return token.value == "true", token.end
            hint = "write true or false"
            if token.kind == IDENT and token.value.lower() in ("true", "false"):
                hint = f"Kusto literals are case-sensitive: write {token.value.lower()}"
            raise self.error(token, f"type mismatch: {column} is bool", hint=hint)
        if ctype in INTEGERS:
            sign = 1
            start_token = token
            if self.is_op(token, "-"):
                self.next()
                sign, token = -1, self.peek()
            if token.kind == NUMBER and token.value[0].isdigit() and not token.value[1]:
                self.next()
                return sign * int(token.value[0]), token.end
            raise self.error(start_token, f"type mismatch: {column} is {ctype}",
                             hint="write an integer")  # fmt: skip
        raise self.error(
            token, f"{column} is {ctype}: rules can only test it with isempty() or isnotempty()"
        )

    def list_comparison(self, column_token: Token, column: str, ctype: str, op: str) -> Node:
        kind, case_sensitive, negated = LIST_OPS[op]
        open_token = self.peek()
        if not self.is_op(open_token, "("):
            raise self.error(open_token, f"{op} needs a list in parentheses", hint="('a', 'b')")
        self.next()
        if self.peek().kind == IDENT and self.peek().value == "dynamic":
            raise self.error(self.peek(), "dynamic arrays are not supported",
                             hint="list the values: ('a', 'b')")  # fmt: skip
        if self.is_op(self.peek(), ")"):
            raise self.error(self.peek(), f"{op} needs at least one value")
        values = []
        while True:
            value_token = self.peek()
            value, _ = self.literal(ctype, column, op)
            if kind.startswith("has"):
                self.check_has_needle(value, op, value_token)
            values.append(value)
            if self.is_op(self.peek(), ","):
                self.next()
                continue
            close = self.expect(")", "',' or ')'")
            break
        start, end, cost = column_token.start, close.end, self.cost_of(column)
        if kind in ("has_any", "has_all"):
            folded = [ascii_fold(v) for v in values]
            test = any_phrase(folded) if kind == "has_any" else all_phrases(folded)
            return Leaf(start, end, column, cost, string_leaf(column, False, False, test))
        if ctype == STRING_TYPE:
            wanted = frozenset(values if case_sensitive else (ascii_fold(v) for v in values))
            compiled = string_leaf(column, case_sensitive, negated, wanted.__contains__)
            return Leaf(start, end, column, cost, compiled)
        wanted_values = frozenset(values)
        return Leaf(
            start, end, column, cost, value_leaf(column, negated, wanted_values.__contains__)
        )

    def regex(self, column_token: Token, column: str) -> Node:
        pattern_token = self.peek()
        pattern, end = self.single_string()
        try:
            test = compile_search(pattern)
        except RegexRefused as refused:
            message, construct, hint = refused.args
            raise self.error(pattern_token, message, construct, hint) from None
        compiled = string_leaf(column, True, False, test)
        return Leaf(column_token.start, end, column, self.cost_of(column), compiled)

    # -- time window ----------------------------------------------------------------------------

    def window(self) -> Node:
        timestamp = self.next()
        if not self.query_mode:
            raise self.error(timestamp, "Timestamp is only allowed in a query's time window")
        op = self.peek()
        if not self.is_op(op, *WINDOW_OPS):
            raise self.error(
                timestamp,
                "unsupported comparison on Timestamp",
                self.text(timestamp.start, op.end),
                "the time window is Timestamp between (A .. B) or Timestamp >, >=, <, <= a bound: "
                "now(), ago(...), datetime(...) or a let name",
            )
        self.next()
        if op.value == "between":
            self.expect("(")
            self.time_bound(allow_names=True)
            self.expect("..", "'..'")
            self.time_bound(allow_names=True)
            end = self.expect(")", "')'").end
        else:
            self.time_bound(allow_names=True)
            end = self.tokens[self.i - 1].end
        return Window(timestamp.start, end)

    def time_bound(self, allow_names: bool) -> None:
        token = self.next()
        hint = "a time bound is now(), now(-5d), ago(5d), datetime(2024-01-31)" + (
            " or a let name" if allow_names else ""
        )
        if token.kind != IDENT:
            raise self.error(token, "expected a time bound", hint=hint)
        if token.value in self.lets and allow_names:
            return
        if token.value not in TIME_FUNCTIONS:
            message = "unknown let name" if allow_names else "unsupported let value"
            raise self.error(token, message, hint=hint)
        self.expect("(")
        if token.value == "datetime":
            self.datetime_literal(token)
            return
        if token.value == "now" and self.is_op(self.peek(), ")"):
            self.next()
            return
        sign = self.peek()
        if self.is_op(sign, "-", "+"):
            self.next()
        span = self.next()
        if span.kind != NUMBER or span.value[1] not in TIMESPAN_UNITS:
            raise self.error(
                span,
                "expected a timespan",
                hint="a number and a unit: " + ", ".join(TIMESPAN_UNITS) + " (5d, 12h, 30m)",
            )
        self.expect(")", "')'")

    def datetime_literal(self, function: Token) -> None:
        open_index = self.i - 1
        close_index = open_index
        while True:
            close_index += 1
            token = self.tokens[close_index]
            if token.kind == EOF:
                raise self.error(function, "datetime( is not closed")
            if self.is_op(token, ")"):
                break
        opening = self.tokens[open_index]
        raw = self.text(opening.end, token.start).strip()
        match = DATETIME_LITERAL.match(raw)
        valid = match is not None
        if valid:
            numbers = [int(g) if g else 0 for g in match.groups()]
            try:
                datetime(*numbers[:3], *numbers[3:])
            except ValueError:
                valid = False
        if not valid:
            raise self.error(
                self.tokens[open_index + 1],
                "unsupported datetime literal",
                raw,
                "write ISO 8601: datetime(2024-01-31) or datetime(2024-01-31T12:00:00Z)",
            )
        self.i = close_index + 1


def parse_query(
    text: str,
    *,
    source: str = "<query>",
    first_line: int = 1,
    columns: Mapping[str, str] = QUERYABLE,
    cost: Mapping[str, int] | None = None,
) -> Query:
    """Parse a Sentinel hunting query: let statements, the table, where stages, a final
    summarize. ``first_line`` is the file line ``text`` starts on (errors name file lines)."""
    return _Parser(text, source, first_line, columns, cost, query_mode=True).query()


def parse_predicate(
    text: str,
    *,
    source: str = "<predicate>",
    first_line: int = 1,
    columns: Mapping[str, str] = QUERYABLE,
    cost: Mapping[str, int] | None = None,
) -> Predicate:
    """Parse one predicate (the body of a where clause), e.g. for an allowlist entry."""
    parser = _Parser(text, source, first_line, columns, cost, query_mode=False)
    if parser.peek().kind == EOF:
        raise parser.error(parser.peek(), "empty predicate")
    node = parser.or_expr()
    parser.end_of_clause()
    return parser.predicate(node, parser.text(node.start, node.end))
