"""Text that is safe to show: attacker-chosen names must not drive a terminal or split a line,
and two different names must never look the same."""

from __future__ import annotations

import base64
import os
import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "'": "\\'"}


def printable(text: str) -> str:
    """The name as a terminal shows it, unambiguously, in the manner of GNU ls.

    A name of printable characters is shown as it is, backslashes included (Windows paths
    stay readable). Any other name is quoted as $'…', bash's own notation: control
    characters, bidi overrides and other invisible characters as \\n, \\t, \\xNN or \\uNNNN,
    an undecodable byte (a surrogate from os.fsdecode) as \\xNN, and backslashes and quotes
    escaped, so a tab and a literal backslash-t never look alike. A printable name that
    itself starts with $' is quoted too.
    """
    if text.isprintable() and not text.startswith("$'"):
        return text
    needed = text.startswith("$'")
    out = []
    for ch in text:
        if ch.isprintable() and ch not in _NAMED:
            out.append(ch)
            continue
        if ch in ("\\", "'"):
            out.append(_NAMED[ch])
            continue
        needed = True
        code = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        else:  # \u, never \x: \x80-\xff are the undecodable bytes above
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    if not needed:
        return text
    return "$'" + "".join(out) + "'"


def brief(text: str, limit: int = 300) -> str:
    """At most ``limit`` characters, cut at a word boundary with an ellipsis: library
    messages quote long names, and a word cut in half reads as another word."""
    if len(text) <= limit:
        return text
    space = text.rfind(" ", 0, limit)  # the last word boundary that leaves room for "…"
    if space > limit // 2:
        return text[:space].rstrip(" ,;:-(\"'") + "…"
    return text[: limit - 1] + "…"  # one word longer than half the limit: no boundary near


# -- verification details: the same words for the same file on every run -------------------

_OBJECT = re.compile(r"<(?:\w+\.)*(\w+) object at 0x[0-9A-Fa-f]+>")
_SERIAL = re.compile(r"\bserial:(\d+)\b")
_CHAIN_FROM = re.compile(r"\bChain verification from (.*?) failed: ")
_LONG_NUMBER = re.compile(r"(?<![\w.])\d{21,}(?![\w.])")
_OPENSSL = re.compile(
    r"\[?<OpenSSLError\([^>]*\)>(?:, <OpenSSLError\([^>]*\)>)*\]?"  # cryptography's errors
    r"|\berror:[0-9A-Fa-f]{8}:[^:\n]*:[^:\n]*:[^,;\n\"')\]]*"  # error:0200008A:lib:func:why
)
_STRING_SET = re.compile(r"\{'[^'{}]*'(?:, '[^'{}]*')+\}")


def _serial(match: re.Match) -> str:
    """A serial as the CertificateSerialNumber column writes it (DER two's complement hex)."""
    value = int(match.group(1))
    if value.bit_length() > 20 * 8:  # RFC 5280's limit: anything longer is not a serial
        return "serial:(too long)"
    return "serial:" + value.to_bytes(value.bit_length() // 8 + 1, "big").hex()


def _sorted_set(match: re.Match) -> str:
    items = sorted(re.findall(r"'[^']*'", match.group(0)))
    return "{" + ", ".join(items) + "}"


def plain_detail(message: str) -> str:
    """A verification message as VerificationDetail shows it: the same on every run.

    Library messages carry what differs from run to run or reads as noise: object
    addresses (``<…Certificate object at 0x7f…>``), sets printed in hash order, OpenSSL's
    error-queue strings, and numbers in decimal (serials, and lengths read from a hostile
    encoding, hundreds of digits long). Those become the class name, a sorted set,
    "an OpenSSL error", the serial in hex as the CertificateSerialNumber column writes it,
    and "a N-digit number"; runs of whitespace (line breaks in asn1crypto's "while parsing"
    trail) become one space. signify's "Chain verification from X failed: " becomes "X: ",
    so the reason fits in the row's 300 characters. Apply once: a hex serial of digits
    only would read as decimal a second time.
    """
    text = _CHAIN_FROM.sub(r"\1: ", message)
    text = _OBJECT.sub(r"\1", text)
    text = _OPENSSL.sub("an OpenSSL error", text)
    text = _SERIAL.sub(_serial, text)
    text = _LONG_NUMBER.sub(lambda m: f"a {len(m.group(0))}-digit number", text)
    text = _STRING_SET.sub(_sorted_set, text)
    return " ".join(text.split())


def path_columns(path: str | bytes, fsencode=os.fsencode) -> tuple[str, str | None]:
    """(FolderPath, FolderPathBytes): valid Unicode as is; otherwise U+FFFD plus the raw bytes.

    The raw bytes are the OS's: undecodable bytes on POSIX, and on Windows (UTF-8 with
    surrogatepass, PEP 529) a UTF-16 name with an unpaired surrogate as WTF-8. ``fsencode``
    is os.fsencode; a test passes Windows' to check that case here.
    """
    raw = fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")
