"""Text that is safe to show: attacker-chosen names must not drive a terminal or split a line."""

from __future__ import annotations

import base64
import os
import unicodedata

# Backslashes stay as they are (Windows paths, RFC 4514 escapes): JSON is the exact format.
_REPLACE = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """Escape control characters, bidi overrides and undecodable bytes (surrogates)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _REPLACE:
            out.append(_REPLACE[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) > 0xFF else f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def brief(text: str, limit: int = 300) -> str:
    """Library messages can quote attacker-chosen numbers thousands of digits long."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def path_columns(path: str | bytes) -> tuple[str, str | None]:
    """(FolderPath, FolderPathBytes): valid Unicode as is; otherwise U+FFFD plus the raw bytes."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")
