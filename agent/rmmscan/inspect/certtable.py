"""Read the PE certificate table (WIN_CERTIFICATE entries) with one bounded read.

Every oddity is recorded as an Anomaly rather than resolved silently: tools disagree on
these files, and an analyst wants the fact, not our guess (DESIGN §5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from .model import Anomaly

MAX_TABLE = 16 * 1024 * 1024  # real tables are KBs; the largest seen in the wild ~1 MB
WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002
MAX_ENTRIES = 64


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    revision: int
    cert_type: int
    blob: bytes  # the PKCS#7 DER (exactly its outer TLV when that can be found)
    truncated: bool = False  # the DER runs past the end of the table or file


def der_length(blob: bytes) -> int | None:
    """Total length of the outer DER TLV, or None if the header itself is unreadable."""
    if len(blob) < 2:
        return None
    first = blob[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if n == 0 or n > 4 or len(blob) < 2 + n:
        return None
    return 2 + n + int.from_bytes(blob[2 : 2 + n], "big")


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
        anomalies.append(Anomaly.TABLE_TOO_LARGE)
        end = offset + MAX_TABLE
    stream.seek(offset)
    table = stream.read(end - offset)

    entries: list[Entry] = []
    pos = 0
    while pos + 8 <= len(table) and len(entries) < MAX_ENTRIES:
        length, revision, cert_type = struct.unpack_from("<IHH", table, pos)
        if length < 8:
            if any(table[pos:]):
                anomalies.append(Anomaly.ENTRY_MALFORMED)
            break
        body = table[pos + 8 : pos + length]
        if cert_type != WIN_CERT_TYPE_PKCS_SIGNED_DATA:
            anomalies.append(Anomaly.UNSUPPORTED_ENTRY_TYPE)
        else:
            blob, truncated = _exact_der(body, anomalies)
            entries.append(Entry(len(entries), revision, cert_type, blob, truncated))
        if pos + length > len(table):
            if Anomaly.TABLE_SIZE_EXCEEDS_FILE not in anomalies:
                anomalies.append(Anomaly.ENTRY_MALFORMED)
            pos = len(table)
            break
        pos += (length + 7) & ~7
    if len(entries) > 1:
        anomalies.append(Anomaly.MULTIPLE_ENTRIES)
    if pos < len(table) and any(table[pos:]) and Anomaly.ENTRY_MALFORMED not in anomalies:
        # Bytes inside the declared table after the last entry: slack at table level.
        anomalies.append(Anomaly.SLACK_IN_ENTRY)
    return entries, list(dict.fromkeys(anomalies))


def _exact_der(body: bytes, anomalies: list[Anomaly]) -> tuple[bytes, bool]:
    """Trim an entry's body to its DER object, noting truncation and slack."""
    total = der_length(body)
    if total is None:
        anomalies.append(Anomaly.PKCS7_MALFORMED)
        return body, False
    if total > len(body):
        anomalies.append(Anomaly.PKCS7_TRUNCATED)
        return body, True
    slack = body[total:]
    # Up to 7 zero bytes align the next entry; anything else is slack worth reporting.
    if len(slack) > 7 or any(slack):
        anomalies.append(Anomaly.SLACK_IN_ENTRY)
    return body[:total], False
