"""Read the PE certificate table (WIN_CERTIFICATE entries) with one bounded read.

Every oddity is recorded as an Anomaly rather than resolved silently: tools disagree on
these files, and an analyst wants the fact, not our guess (docs/architecture.md §5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from . import ber
from .ber import StreamView
from .model import Anomaly

MAX_TABLE = 16 * 1024 * 1024  # real tables are KBs; the largest seen in the wild ~1 MB
# Entries are read into memory up to this many bytes in all; the rest are walked through a
# StreamView, so that a huge attribute costs what the walk visits.
MAX_ENTRY_READ = MAX_TABLE
SLACK_CHECKED = 1024 * 1024  # bytes after the last entry looked at for slack
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
MAX_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    revision: int
    cert_type: int
    # The PKCS#7 (exactly its outer TLV when that can be found): bytes, or a StreamView once
    # the table's entries exceed MAX_ENTRY_READ in all.
    blob: bytes | StreamView
    truncated: bool = False  # the DER runs past the end of the table or file


def read_table(
    stream: BinaryIO, file_size: int, offset: int, size: int, headers_end: int
) -> tuple[list[Entry], list[Anomaly]]:
    """Return the PKCS#7 entries of the table and the anomalies seen on the way."""
    anomalies: list[Anomaly] = []
    if offset == 0 and size == 0:
        return [], anomalies
    if offset >= file_size or size == 0:
        anomalies.append(Anomaly.TABLE_OUTSIDE_FILE)
        return [], anomalies
    if offset < headers_end:
        anomalies.append(Anomaly.TABLE_INSIDE_HEADERS)
    end = offset + size
    if end > file_size:
        anomalies.append(Anomaly.TABLE_SIZE_EXCEEDS_FILE)
        end = file_size
    elif end < file_size:
        anomalies.append(Anomaly.DATA_AFTER_TABLE)
    if end - offset > MAX_TABLE:
        anomalies.append(Anomaly.TABLE_TOO_LARGE)  # a fact; its entries are still read
    size = end - offset

    entries: list[Entry] = []
    held = 0  # bytes of entries read into memory: at most MAX_ENTRY_READ for the whole table
    pos = 0
    while pos + 8 <= size and len(entries) < MAX_ENTRIES:
        stream.seek(offset + pos)
        head = stream.read(8)
        if len(head) < 8:
            break
        length, revision, cert_type = struct.unpack("<IHH", head)
        if length < 8:
            if _any_bytes(stream, offset + pos, size - pos):
                anomalies.append(Anomaly.ENTRY_MALFORMED)
            break
        body_size = min(length, size - pos) - 8
        foreign = cert_type != WIN_CERT_TYPE_PKCS_SIGNED_DATA
        if foreign:
            anomalies.append(Anomaly.UNSUPPORTED_ENTRY_TYPE)
        # An entry of another type that holds a SEQUENCE is read as a signature all the same
        # (its verdict is Malformed, verify.py): Windows skips it, but two bytes of type
        # must not hide whose signature the file carries.
        if not foreign or (body_size > 0 and _first_byte(stream, offset + pos + 8) == 0x30):
            body = _body(stream, offset + pos + 8, body_size, held)
            held += len(body) if isinstance(body, bytes) else 0
            blob, truncated = _exact_der(body, anomalies)
            entries.append(Entry(len(entries), revision, cert_type, blob, truncated))
        if pos + length > size:
            if Anomaly.TABLE_SIZE_EXCEEDS_FILE not in anomalies:
                anomalies.append(Anomaly.ENTRY_MALFORMED)
            pos = size
            break
        pos += (length + 7) & ~7
    if len(entries) > 1:
        anomalies.append(Anomaly.MULTIPLE_ENTRIES)
    if (
        pos < size
        and Anomaly.ENTRY_MALFORMED not in anomalies
        and _any_bytes(stream, offset + pos, size - pos)
    ):
        # Bytes inside the declared table after the last entry: slack at table level.
        anomalies.append(Anomaly.SLACK_IN_ENTRY)
    return entries, list(dict.fromkeys(anomalies))


def _first_byte(stream: BinaryIO, at: int) -> int:
    stream.seek(at)
    head = stream.read(1)
    return head[0] if head else -1


def _body(stream: BinaryIO, at: int, size: int, held: int) -> bytes | StreamView:
    if held + size > MAX_ENTRY_READ:
        return StreamView(stream, at, size)
    stream.seek(at)
    return stream.read(size)


def _any_bytes(stream: BinaryIO, at: int, size: int) -> bool:
    """Whether the first SLACK_CHECKED bytes at `at` hold anything but zeros."""
    stream.seek(at)
    return any(stream.read(min(size, SLACK_CHECKED)))


def _exact_der(body, anomalies: list[Anomaly]) -> tuple[bytes | StreamView, bool]:
    """Trim an entry's body to its DER object, noting truncation and slack."""
    top = ber.element(body, 0, len(body))
    if top is None:
        anomalies.append(Anomaly.PKCS7_MALFORMED)
        return body, False
    if top.flags & ber.TRUNCATED:
        anomalies.append(Anomaly.PKCS7_TRUNCATED)
        return body, True
    total = top.after
    slack = body[total : total + SLACK_CHECKED]
    # Up to 7 zero bytes align the next entry; anything else is slack worth reporting.
    if len(slack) > 7 or any(slack):
        anomalies.append(Anomaly.SLACK_IN_ENTRY)
    if isinstance(body, StreamView):
        return body.view(0, total), False
    return body[:total], False
