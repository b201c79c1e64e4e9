"""Read the PE certificate table (WIN_CERTIFICATE entries) with one bounded read.

Every oddity is recorded as an Anomaly rather than resolved silently: tools disagree on
these files, and an analyst wants the fact, not our guess (docs/architecture.md §5).
"""

from __future__ import annotations

import heapq
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
_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")  # OBJECT IDENTIFIER 1.2.840.113549.1.7.2
MAX_PROBES = 16  # a look at an indefinite-length ContentInfo may walk 100,000 elements


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    revision: int
    cert_type: int
    # The PKCS#7 (exactly its outer TLV when that can be found): bytes, or a StreamView once
    # the table's entries exceed MAX_ENTRY_READ in all.
    blob: bytes | StreamView
    truncated: bool = False  # the DER runs past the end of the table or file
    # Why Windows does not read this entry as a signature though rmmscan does ("" when it
    # does): a few bytes of header must not hide whose signature the file carries, so such an
    # entry is read, and its verdict is Malformed (verify.py).
    rejected: str = ""


def read_table(
    stream: BinaryIO, file_size: int, offset: int, size: int, headers_end: int
) -> tuple[list[Entry], list[Anomaly]]:
    """Return the PKCS#7 entries of the table and the anomalies seen on the way.

    The entries are walked as Windows walks them, by each one's dwLength rounded up to 8.
    More is read where a PKCS#7 ContentInfo lies (_Probe): the PKCS#7 of an entry whose
    dwLength ends inside it (to its own end, or the table's, and the walk goes on after it
    too), and an entry that starts after an entry's PKCS#7 but inside its dwLength.
    """
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
    # Places to read, in table order: (position, why Windows does not read an entry there).
    todo: list[tuple[int, str]] = [(0, "")]
    last = -1  # the last place read: a place is read once
    # The end of the furthest PKCS#7 read: inside it, a place is read only where an entry
    # lies (_Probe.holds_entry): a dwLength that cuts a PKCS#7 short leads into it, and so
    # may an honest one, if the PKCS#7 claims more than its entry holds.
    inside = 0
    walked = 0  # where the walk stopped: the bytes after it are looked at for slack
    probe = _Probe(stream, anomalies)
    while todo and len(entries) < MAX_ENTRIES:
        pos, off_walk = heapq.heappop(todo)
        if pos <= last or pos + 8 > size:
            continue
        last = walked = pos
        stream.seek(offset + pos)
        head = stream.read(8)
        if len(head) < 8:
            break
        length, revision, cert_type = struct.unpack("<IHH", head)
        if pos < inside and not probe.holds_entry(offset + pos, size - pos, not off_walk):
            # The walk leads into a PKCS#7 read already: no entry here, but Windows walks on
            # by these bytes, and so does the walk (an entry may lie further on).
            if Anomaly.ENTRY_MALFORMED not in anomalies:
                anomalies.append(Anomaly.ENTRY_MALFORMED)
            if 8 <= length <= size - pos:
                walked = pos + ((length + 7) & ~7)
                heapq.heappush(todo, (walked, ""))
            continue
        at, room = offset + pos + 8, size - pos - 8
        if length < 8 and probe.content_info(at, room) is None:
            if _any_bytes(stream, offset + pos, size - pos):
                anomalies.append(Anomaly.ENTRY_MALFORMED)
            continue
        foreign = cert_type != WIN_CERT_TYPE_PKCS_SIGNED_DATA
        if foreign and Anomaly.UNSUPPORTED_ENTRY_TYPE not in anomalies:
            anomalies.append(Anomaly.UNSUPPORTED_ENTRY_TYPE)
        if not foreign or (room and _first_byte(stream, at) == 0x30):
            rejected = [off_walk] if off_walk else []
            if foreign:
                rejected.append(
                    f"its certificate-table entry is of type 0x{cert_type:04x}, "
                    "not PKCS_SIGNED_DATA (0x0002)"
                )
            want = min(max(length, 8), size - pos) - 8
            body = _body(stream, at, want, held)
            top = ber.element(body, 0, len(body))
            if want < room and (top is None or top.flags & ber.TRUNCATED):
                whole = probe.content_info(at, room)
                if whole is not None:
                    anomalies.append(Anomaly.ENTRY_MALFORMED)
                    rejected.append(
                        f"its certificate-table entry's dwLength ({length}) is shorter than "
                        + (
                            "its header and PKCS#7, which runs past the table"
                            if whole.flags & ber.TRUNCATED
                            else f"its header and PKCS#7 ({8 + whole.after:,} bytes)"
                        )
                    )
                    body = _body(stream, at, whole.after, held)
            held += len(body) if isinstance(body, bytes) else 0
            blob, truncated, total = _exact_der(body, anomalies)
            index = len(entries)
            entries.append(Entry(index, revision, cert_type, blob, truncated, "; ".join(rejected)))
            inside = max(inside, pos + 8 + (len(blob) if total is None else total))
            if total is not None:
                # Where the next entry starts if the PKCS#7 is right and the dwLength wrong.
                after = pos + ((8 + total + 7) & ~7)
                if (
                    after != pos + ((length + 7) & ~7)
                    and after + 8 <= size
                    and probe.holds_entry(offset + after, size - after)
                ):
                    hidden = after < pos + length
                    why = f"its certificate-table entry lies inside entry {index}'s dwLength"
                    heapq.heappush(todo, (after, why if hidden else ""))
        if length < 8:
            continue
        if pos + length > size:
            if Anomaly.TABLE_SIZE_EXCEEDS_FILE not in anomalies:
                anomalies.append(Anomaly.ENTRY_MALFORMED)
            walked = size
            continue
        walked = pos + ((length + 7) & ~7)
        heapq.heappush(todo, (walked, ""))
    if len(entries) > 1:
        anomalies.append(Anomaly.MULTIPLE_ENTRIES)
    if (
        walked < size
        and Anomaly.ENTRY_MALFORMED not in anomalies
        and _any_bytes(stream, offset + walked, size - walked)
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


class _Probe:
    """Looks for a PKCS#7 ContentInfo at places off the walk, or where a dwLength went wrong:
    anything less would make rows of junk. Each look that finds one reads up to a 64 KiB
    block, so at most MAX_PROBES do (then inspection_limit_reached)."""

    def __init__(self, stream: BinaryIO, anomalies: list[Anomaly]):
        self.stream, self.anomalies, self.left = stream, anomalies, MAX_PROBES

    def content_info(self, at: int, room: int) -> ber.Element | None:
        """The ContentInfo at `at` within `room` bytes (TRUNCATED if it runs past them): a
        SEQUENCE whose first element is the signedData OID."""
        self.stream.seek(at)
        head = self.stream.read(min(room, 24))
        if len(head) < 2 or head[0] != ber.SEQUENCE:
            return None
        start = 2 + (head[1] & 0x7F if head[1] > 0x80 else 0)
        if head[start : start + len(_SIGNED_DATA)] != _SIGNED_DATA:
            return None
        if self.left <= 0:
            if Anomaly.LIMIT_REACHED not in self.anomalies:
                self.anomalies.append(Anomaly.LIMIT_REACHED)
            return None
        self.left -= 1
        top = ber.element(StreamView(self.stream, at, room), 0, room)
        return top if top is not None and top.tag == ber.SEQUENCE else None

    def holds_entry(self, at: int, room: int, walked: bool = False) -> bool:
        """Whether an entry header (dwLength at least 8) at `at` is followed by a whole
        ContentInfo; for a place on the walk by dwLength, one cut short will do if the
        header's wRevision is a real one (1.0 or 2.0), as a header inside DER seldom has."""
        self.stream.seek(at)
        head = self.stream.read(9)
        if len(head) < 9 or head[8] != ber.SEQUENCE:
            return False
        length, revision = struct.unpack_from("<IH", head)
        if length < 8:
            return False
        if walked and revision in (0x0100, 0x0200):
            return True
        top = self.content_info(at + 8, room - 8)
        return top is not None and not top.flags & ber.TRUNCATED


def _exact_der(body, anomalies: list[Anomaly]) -> tuple[bytes | StreamView, bool, int | None]:
    """Trim an entry's body to its DER object, noting truncation and slack. Also returns the
    object's size (None when it is cut short or not there)."""
    top = ber.element(body, 0, len(body))
    if top is None:
        anomalies.append(Anomaly.PKCS7_MALFORMED)
        return body, False, None
    if top.flags & ber.TRUNCATED:
        anomalies.append(Anomaly.PKCS7_TRUNCATED)
        return body, True, None
    total = top.after
    slack = body[total : total + SLACK_CHECKED]
    # Up to 7 zero bytes align the next entry; anything else is slack worth reporting.
    if len(slack) > 7 or any(slack):
        anomalies.append(Anomaly.SLACK_IN_ENTRY)
    if isinstance(body, StreamView):
        return body.view(0, total), False, total
    return body[:total], False, total
