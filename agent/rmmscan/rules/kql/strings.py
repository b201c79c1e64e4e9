"""What Kusto's string operators compare: terms, and case folded for ASCII letters only.

See the package docstring for the documentation each rule here comes from.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable


def ascii_fold(value: str) -> str:
    """Lower-case the ASCII letters A-Z and nothing else (``Ü`` stays ``Ü``)."""
    if value.isascii():
        return value.lower()
    # bytes.lower() folds ASCII letters only; UTF-8 keeps every other character as it is.
    return value.encode("utf-8", "surrogatepass").lower().decode("utf-8", "surrogatepass")


_last_fold: tuple[str, str] = ("", "")


def ascii_fold_cached(value: str) -> str:
    """ascii_fold, remembering the last non-ASCII value: every rule folds the same Signer."""
    global _last_fold
    last = _last_fold  # one tuple, read and replaced whole: safe under threads
    if last[0] is value:
        return last[1]
    folded = ascii_fold(value)
    _last_fold = (value, folded)
    return folded


def is_term_char(ch: str) -> bool:
    """A character of a term: a letter (Unicode L*) or a decimal digit (Nd), like .NET's
    ``Char.IsLetterOrDigit``. ``Ü``, ``é``, ``中`` are term characters; ``²``, ``_``, marks,
    punctuation and spaces separate terms."""
    if ch < "\x80":
        return ch.isalnum()
    category = unicodedata.category(ch)
    return category[0] == "L" or category == "Nd"


def has_term_char(value: str) -> bool:
    return any(is_term_char(ch) for ch in value)


def phrase_matcher(needle: str) -> Callable[[str], bool]:
    """``has`` for one needle, already case-folded if the operator is case-insensitive.

    The needle must occur in the value starting at a term start and ending at a term end: where
    the needle begins (ends) with a term character, the value must not have a term character just
    before (after) the occurrence. A needle that begins or ends with punctuation carries its own
    boundary there. Equivalently: the needle's sequence of terms and single separator characters
    occurs in the value's sequence.
    """
    length = len(needle)
    check_start = is_term_char(needle[0])
    check_end = is_term_char(needle[-1])

    def match(value: str) -> bool:
        i = value.find(needle)
        while i >= 0:
            if (check_start and i and is_term_char(value[i - 1])) or (
                check_end and i + length < len(value) and is_term_char(value[i + length])
            ):
                pass
            else:
                return True
            i = value.find(needle, i + 1)
        return False

    return match
