"""``matches regex``: RE2 (google-re2), compiled when the rule is loaded."""

from __future__ import annotations

from collections.abc import Callable

import re2

MAX_GROUPS = 16  # https://learn.microsoft.com/kusto/query/matches-regex-operator

_PERL_CLASS_HINT = (
    "in RE2 \\{0} is ASCII-only while Kusto's current regex engine makes it Unicode-aware "
    "(https://learn.microsoft.com/kusto/query/regex); write an explicit class such as "
    "[0-9], [A-Za-z0-9_] or [ \\t\\r\\n]"
)


def difference(pattern: str) -> tuple[int, str, str] | None:
    """A construct whose meaning differs between RE2 and the syntax Kusto documents today.

    Returns (index in the pattern, construct, hint) or None.
    """
    i, n, in_class, class_body = 0, len(pattern), False, 0
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            escaped = pattern[i + 1 : i + 2]
            if escaped in ("d", "D", "w", "W", "s", "S", "b", "B"):
                return i, "\\" + escaped, _PERL_CLASS_HINT.format(escaped)
            if escaped in ("<", ">", "Q", "E", "C"):
                return (
                    i,
                    "\\" + escaped,
                    "RE2 and Kusto's regex engine read this escape differently",
                )
            i += 2
            continue
        if in_class:
            if ch == "]" and i > class_body:
                in_class = False
            elif pattern.startswith("[:", i):
                close = pattern.find(":]", i + 2)
                i = close + 2 if close >= 0 else n
                continue
            elif ch == "[":
                return i, "[", "a nested character class: RE2 reads '[' inside a class literally"
            elif pattern[i : i + 2] in ("&&", "--", "~~"):
                return (
                    i,
                    pattern[i : i + 2],
                    "a character-class set operation in Kusto's regex engine, literal text in RE2",
                )
            i += 1
            continue
        if ch == "[":
            in_class = True
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            class_body = i + 1 if pattern[i : i + 1] == "]" else i
            continue
        i += 1
    return None


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = False
    return options


class RegexRefused(ValueError):
    """A pattern the engine will not run: (message, construct, hint)."""


def compile_search(pattern: str) -> Callable[[str], bool]:
    """A test that the pattern matches somewhere in a value; RegexRefused if it cannot run."""
    found = difference(pattern)
    if found is not None:
        index, construct, hint = found
        message = (
            f"regex construct at pattern offset {index} means different things in RE2 and Kusto"
        )
        raise RegexRefused(message, construct, hint)
    try:
        compiled = re2.compile(pattern, _options())
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RegexRefused(f"bad regular expression ({detail})", None, "") from None
    if compiled.groups > MAX_GROUPS:
        raise RegexRefused(
            f"more than {MAX_GROUPS} regex groups", None, "use (?:...) for grouping without capture"
        )
    search = compiled.search

    def test(value: str) -> bool:
        # RE2 runs on the UTF-8 bytes: no str->bytes offset bookkeeping per call.
        return search(value.encode("utf-8", "surrogatepass")) is not None

    return test
