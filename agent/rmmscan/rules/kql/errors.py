"""The one error the KQL engine raises: where in the file, what, and what to do instead."""

from __future__ import annotations


class KqlError(ValueError):
    """A query or predicate the engine refuses, named by file, line and column.

    ``str(e)`` is ``f"{source}:{line}:{column}: {message}: {construct!r}"``, followed by
    `` (hint)`` when there is something useful to say about what to write instead.
    """

    def __init__(
        self,
        source: str,
        line: int,
        column: int,
        message: str,
        construct: str,
        hint: str = "",
    ) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.message = message
        self.construct = construct
        self.hint = hint
        text = f"{source}:{line}:{column}: {message}: {construct!r}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)

    def __reduce__(self):
        args = (self.source, self.line, self.column, self.message, self.construct, self.hint)
        return (type(self), args)
