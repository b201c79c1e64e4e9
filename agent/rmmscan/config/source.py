"""Reading a configuration or secret file safely, and saying where in it a problem lies.

Both are refused when other users may read them (a config names the receivers and where the
secrets are; a secret file is the secret): the message gives the `chmod` that fixes it. Reads
are bounded: a configuration is text a person writes, a secret a line.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..text import printable

MAX_CONFIG_BYTES = 1 << 20
MAX_SECRET_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class Problem:
    line: int | None  # 1-based; None when the file as a whole is at fault
    key: str  # dotted: "sinks.splunk.token_file"; "" for the file
    message: str  # what is wrong and what to write instead

    def show(self, path: Path) -> str:
        """One line: a key is the file's text (a quoted key may hold any character), and a
        message that quotes a value escapes it, so nothing from the file can split the line."""
        where = printable(str(path)) + (f":{self.line}" if self.line else "")
        message = self.message if self.message.isprintable() else printable(self.message)
        return f"{where}: {printable(self.key)}: {message}" if self.key else f"{where}: {message}"


class ConfigError(Exception):
    """The configuration cannot be used: each problem names its line, key and the remedy."""

    def __init__(self, path: Path, problems: list[Problem]):
        super().__init__("\n".join(p.show(path) for p in problems))
        self.path, self.problems = path, problems


def read_private(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file that only its owner may read. Raises ValueError with the
    message to show (never the content)."""
    shown = printable(str(path))
    try:
        # No following a link, no blocking on a FIFO: the file itself, or nothing.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {shown}: {exc.strerror or exc}") from None
    try:
        # The type before any file object: os.fdopen refuses a directory with an OSError.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"the {what} {shown} is not a regular file")
        if os.name == "posix" and st.st_mode & 0o044:
            raise ValueError(
                f"the {what} {shown} may be read by other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); make it private: chmod 600 {shown}"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {shown}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"the {what} {shown} is larger than {limit:,} bytes")
    return data


def load(path: Path) -> tuple[dict, KeyLines]:
    """The parsed TOML document and where its keys are, or ConfigError."""
    try:
        data = read_private(path, MAX_CONFIG_BYTES, "configuration file")
        text = data.decode("utf-8")
    except ValueError as exc:  # UnicodeDecodeError is one
        message = str(exc)
        if isinstance(exc, UnicodeDecodeError):
            line = data[: exc.start].count(b"\n") + 1
            problem = Problem(line, "", "not UTF-8 text: save it as UTF-8")
            raise ConfigError(path, [problem]) from None
        raise ConfigError(path, [Problem(None, "", message)]) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(found.group(1)) if found else None
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            path, [Problem(line, "", f"not valid TOML: {reason} (see https://toml.io)")]
        ) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        problem = Problem(None, "", "not valid TOML here: arrays or tables nested too deeply")
        raise ConfigError(path, [problem]) from None
    except ValueError:  # a number past Python's 4300-digit conversion limit
        problem = Problem(None, "", "not valid TOML here: a number with too many digits")
        raise ConfigError(path, [problem]) from None
    return document, KeyLines(text)


# Linear on any line: the name's class excludes the brackets around it, so there is one way to
# match; [[array of tables]] is a table header too. The name's spaces are dropped by _dotted.
_HEADER = re.compile(r"^\s*\[\[?([^\[\]]+)\]\]?\s*(#.*)?$")
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")


def _dotted(text: str) -> str:
    parts = re.findall(r"[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'", text)
    return ".".join(_unquoted(p) for p in parts)


def _unquoted(part: str) -> str:
    """A key part as tomllib names it: a basic string's escapes ("a\\nb") decoded."""
    if part.startswith('"') and "\\" in part:
        try:
            return next(iter(tomllib.loads(f"{part} = 0")))
        except (tomllib.TOMLDecodeError, StopIteration):
            pass
    return part.strip("\"'")


class KeyLines:
    """Where each table and key is written, found by reading the lines as a person does
    (tomllib gives values, not positions). Good for every file a person writes; a key it
    cannot place is reported at its table's line."""

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        table = ""
        in_string = False
        # Lines as TOML (and tomllib's error positions) count them: "\n" ends a line, but
        # U+2028, U+0085 and the other breaks str.splitlines knows are text in a comment.
        for number, line in enumerate(text.split("\n"), 1):
            line = line.removesuffix("\r")
            if line.count('"""') % 2 or line.count("'''") % 2:
                in_string = not in_string
                continue
            if in_string:
                continue
            header = _HEADER.match(line)
            if header:
                table = _dotted(header.group(1))
                self.lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                name = _dotted(key.group(1))
                self.lines.setdefault(f"{table}.{name}" if table else name, number)

    def of(self, key: str) -> int | None:
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return None
