"""Tokens of a KQL query text, with Kusto's string literal rules.

String literals, as documented at
https://learn.microsoft.com/kusto/query/scalar-data-types/string :

* ``'...'`` and ``"..."``: a backslash escapes the enclosing quote, ``\\t``, ``\\n`` and itself;
  ``\\r`` is accepted as well. Any other escape is refused: Kusto's engine rejects unknown escapes,
  and its client library decodes ``\\x``/``\\u``/octal differently from the engine.
* ``@'...'`` and ``@"..."`` (verbatim): the backslash stands for itself, a doubled quote is a quote.
* ```` ```...``` ```` (multi-line): taken as written.
* an ``h``/``H`` prefix (obfuscated literal) does not change the value.
* adjacent literals separated only by whitespace and comments are joined (done by the parser).

No literal may hold a raw line break except the multi-line form.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from .errors import KqlError

IDENT, STRING, NUMBER, OP, EOF = "ident", "string", "number", "op", "eof"

_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "t": "\t", "n": "\n", "r": "\r"}
_TWO_CHAR_OPS = ("==", "!=", "=~", "!~", "<=", ">=", "..")
_QUOTES = "'\""


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str  # as written
    value: object  # identifier or operator text; decoded string; (digits, suffix) for numbers
    start: int
    end: int


class Source:
    """The query text, its file name and the file line it starts on: turns offsets into errors."""

    def __init__(self, text: str, name: str, first_line: int) -> None:
        self.text = text
        self.name = name
        self.first_line = first_line
        self._line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def position(self, offset: int) -> tuple[int, int]:
        index = bisect.bisect_right(self._line_starts, offset) - 1
        return self.first_line + index, offset - self._line_starts[index] + 1

    def error(self, offset: int, message: str, construct: str, hint: str = "") -> KqlError:
        line, column = self.position(offset)
        return KqlError(self.name, line, column, message, construct, hint)


def _is_ident_start(ch: str) -> bool:
    # Non-ASCII letters too, so that a misspelt name (Sígner) is reported whole.
    return ch.isalpha() or ch == "_"


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def tokenize(src: Source) -> tuple[list[Token], list[tuple[int, int]]]:
    """All tokens (ending with an EOF token) and the spans of the ``//`` comments."""
    text = src.text
    n = len(text)
    tokens: list[Token] = []
    comments: list[tuple[int, int]] = []
    i = 0
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            comments.append((i, end))
            i = end
            continue
        start = i
        if ch in "hH" and _literal_follows(text, i + 1):
            i += 1
            ch = text[i]
        if text.startswith("```", i):
            close = text.find("```", i + 3)
            if close < 0:
                raise src.error(start, "multi-line string literal not closed", text[start : i + 3])
            value, i = text[i + 3 : close], close + 3
            tokens.append(Token(STRING, text[start:i], value, start, i))
        elif ch == "@" and i + 1 < n and text[i + 1] in _QUOTES:
            value, i = _verbatim(src, start, i + 1)
            tokens.append(Token(STRING, text[start:i], value, start, i))
        elif ch in _QUOTES:
            value, i = _regular(src, start, i)
            tokens.append(Token(STRING, text[start:i], value, start, i))
        elif _is_ident_start(ch):
            i += 1
            while i < n and _is_ident_char(text[i]):
                i += 1
            if text[start:i] == "in" and i < n and text[i] == "~":
                i += 1
            tokens.append(Token(IDENT, text[start:i], text[start:i], start, i))
        elif _is_digit(ch):
            i += 1
            while i < n and _is_digit(text[i]):
                i += 1
            if i + 1 < n and text[i] == "." and _is_digit(text[i + 1]):
                i += 2
                while i < n and _is_digit(text[i]):
                    i += 1
            digits_end = i
            while i < n and _is_ident_char(text[i]):
                i += 1
            value = (text[start:digits_end], text[digits_end:i])
            tokens.append(Token(NUMBER, text[start:i], value, start, i))
        elif ch == "!" and i + 1 < n and _is_ident_start(text[i + 1]):
            i += 2
            while i < n and _is_ident_char(text[i]):
                i += 1
            if text[start:i] == "!in" and i < n and text[i] == "~":
                i += 1
            tokens.append(Token(OP, text[start:i], text[start:i], start, i))
        elif text[i : i + 2] in _TWO_CHAR_OPS:
            i += 2
            tokens.append(Token(OP, text[start:i], text[start:i], start, i))
        else:
            i += 1
            tokens.append(Token(OP, ch, ch, start, i))
    tokens.append(Token(EOF, "", "", n, n))
    return tokens, comments


def _literal_follows(text: str, i: int) -> bool:
    """Whether an h/H at i-1 is the obfuscation prefix of a string literal."""
    if i >= len(text):
        return False
    if text[i] in _QUOTES or text.startswith("```", i):
        return True
    return text[i] == "@" and i + 1 < len(text) and text[i + 1] in _QUOTES


def _regular(src: Source, start: int, i: int) -> tuple[str, int]:
    text = src.text
    quote = text[i]
    out: list[str] = []
    j = i + 1
    while True:
        if j >= len(text) or text[j] in "\r\n":
            raise src.error(
                start,
                "string literal not closed on its line",
                text[start:j],
                "a literal cannot hold a line break; write \\n, or use ```...```",
            )
        ch = text[j]
        if ch == quote:
            return "".join(out), j + 1
        if ch == "\\":
            escaped = text[j + 1] if j + 1 < len(text) else ""
            if escaped in _ESCAPES and escaped:
                out.append(_ESCAPES[escaped])
                j += 2
                continue
            if escaped in ("", "\r", "\n"):
                j += 1  # reported as not closed on the next pass
                continue
            raise src.error(
                j,
                "unsupported escape sequence",
                "\\" + escaped,
                "escapes are \\' \\\" \\\\ \\t \\n \\r; for a backslash write \\\\ "
                "or use a verbatim literal @'...'",
            )
        out.append(ch)
        j += 1


def _verbatim(src: Source, start: int, i: int) -> tuple[str, int]:
    text = src.text
    quote = text[i]
    out: list[str] = []
    j = i + 1
    while True:
        if j >= len(text) or text[j] in "\r\n":
            raise src.error(
                start,
                "string literal not closed on its line",
                text[start:j],
                "a literal cannot hold a line break; use ```...```",
            )
        ch = text[j]
        if ch == quote:
            if j + 1 < len(text) and text[j + 1] == quote:
                out.append(quote)
                j += 2
                continue
            return "".join(out), j + 1
        out.append(ch)
        j += 1
