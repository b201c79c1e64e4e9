"""The certificate-table reader on hand-built tables: every anomaly is reported, none raises."""

from __future__ import annotations

import io
import struct

from rmmscan.inspect.ber import StreamView
from rmmscan.inspect.certtable import MAX_ENTRY_READ, MAX_TABLE, read_table
from rmmscan.inspect.model import Anomaly

DER = bytes.fromhex("3003020101")  # a complete 5-byte DER SEQUENCE


def entry(body: bytes, length: int | None = None, cert_type: int = 2) -> bytes:
    n = 8 + len(body) if length is None else length
    raw = struct.pack("<IHH", n, 0x200, cert_type) + body
    return raw + b"\0" * (-len(raw) % 8)


def read(table: bytes, prefix: int = 64, suffix: bytes = b"", size: int | None = None):
    data = b"\0" * prefix + table + suffix
    return read_table(io.BytesIO(data), len(data), prefix, size or len(table), 16)


def test_clean_table():
    entries, anomalies = read(entry(DER))
    assert [e.blob for e in entries] == [DER]
    assert anomalies == []


def test_unsigned_has_no_entries():
    assert read_table(io.BytesIO(b"x" * 100), 100, 0, 0, 16) == ([], [])


def test_data_after_table():
    assert read(entry(DER), suffix=b"appended")[1] == [Anomaly.DATA_AFTER_TABLE]


def test_slack_inside_entry():
    entries, anomalies = read(entry(DER + b"junk-after-the-der"))
    assert entries[0].blob == DER
    assert anomalies == [Anomaly.SLACK_IN_ENTRY]


def test_alignment_padding_is_not_slack():
    assert read(entry(DER + b"\0\0\0"))[1] == []


def test_two_entries():
    entries, anomalies = read(entry(DER) + entry(DER))
    assert len(entries) == 2
    assert anomalies == [Anomaly.MULTIPLE_ENTRIES]


def test_size_field_past_end_of_file():
    table = entry(DER)
    entries, anomalies = read(table, size=0x7FFFFFF0)
    assert [e.blob for e in entries] == [DER]
    assert anomalies == [Anomaly.TABLE_SIZE_EXCEEDS_FILE]


def test_offset_past_end_of_file():
    data = b"\0" * 100
    assert read_table(io.BytesIO(data), 100, 5000, 16, 16) == ([], [Anomaly.TABLE_OUTSIDE_FILE])


def test_truncated_der():
    body = bytes.fromhex("3082ffff") + b"\x01" * 20
    entries, anomalies = read(entry(body))
    assert Anomaly.PKCS7_TRUNCATED in anomalies
    assert len(entries) == 1


def test_an_entry_of_another_type_holding_a_sequence_is_read_and_flagged():
    entries, anomalies = read(entry(DER, cert_type=1))
    assert [(e.cert_type, bytes(e.blob)) for e in entries] == [(1, DER)]
    assert anomalies == [Anomaly.UNSUPPORTED_ENTRY_TYPE]


def test_an_entry_of_another_type_holding_no_sequence_is_skipped_and_flagged():
    entries, anomalies = read(entry(b"\x04\x02ab" + bytes(4), cert_type=1))
    assert entries == []
    assert anomalies == [Anomaly.UNSUPPORTED_ENTRY_TYPE]


def test_entry_length_below_header():
    entries, anomalies = read(struct.pack("<IHH", 3, 0x200, 2) + b"\x30" * 8)
    assert entries == []
    assert anomalies == [Anomaly.ENTRY_MALFORMED]


class CountingReader(io.RawIOBase):
    """A huge sparse file: counts bytes read, so the test proves the read is capped."""

    def __init__(self, size: int, table_at: int, table: bytes):
        self.size, self.at, self.table, self.pos, self.read_total = size, table_at, table, 0, 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        self.pos = pos if whence == 0 else self.size + pos
        return self.pos

    def readinto(self, buffer):
        n = max(0, min(len(buffer), self.size - self.pos))
        chunk = bytearray(n)
        lo, hi = max(self.pos, self.at), min(self.pos + n, self.at + len(self.table))
        if lo < hi:
            chunk[lo - self.pos : hi - self.pos] = self.table[lo - self.at : hi - self.at]
        buffer[:n] = chunk
        self.pos += n
        self.read_total += n
        return n


def test_gigabyte_table_claim_reads_at_most_the_cap():
    table = entry(DER)
    reader = io.BufferedReader(CountingReader(2**31, 1024, table))
    entries, anomalies = read_table(reader, 2**31, 1024, 2**31 - 1024, 16)
    assert [e.blob for e in entries] == [DER]
    assert Anomaly.TABLE_TOO_LARGE in anomalies
    assert reader.raw.read_total <= MAX_TABLE + 2 * io.DEFAULT_BUFFER_SIZE


def test_entries_past_the_memory_budget_are_walked_in_place():
    """Three 6 MiB entries: two are read into memory, the third (past MAX_ENTRY_READ in all)
    is a StreamView that reads only what is asked of it, and reads the same bytes."""
    big = b"\x04\x84" + (6 * 2**20).to_bytes(4, "big") + bytes(range(256)) * (6 * 2**12)
    entries, anomalies = read(entry(big) * 3)
    assert [type(e.blob) for e in entries] == [bytes, bytes, StreamView]
    held = sum(len(e.blob) for e in entries if isinstance(e.blob, bytes))
    assert held <= MAX_ENTRY_READ
    view = entries[2].blob
    assert len(view) == len(big) and view[:8] == big[:8] and view[-300:] == big[-300:]
    assert view[70_000] == big[70_000]
    assert Anomaly.MULTIPLE_ENTRIES in anomalies and Anomaly.TABLE_TOO_LARGE in anomalies


SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")


def sequence(size: int) -> bytes:
    """A whole PKCS#7 ContentInfo of ``size`` bytes in all, to the table reader: a SEQUENCE
    (a 4-byte header) that starts with the signedData OID, zeros after it."""
    return b"\x30\x82" + (size - 4).to_bytes(2, "big") + SIGNED_DATA + bytes(size - 15)


def test_a_dwlength_short_of_its_pkcs7_reads_the_pkcs7_whole_and_walks_on_after_it():
    table = struct.pack("<IHH", 9, 0x200, 2) + sequence(300) + bytes(4) + entry(sequence(64))
    entries, anomalies = read(table)
    assert [len(e.blob) for e in entries] == [300, 64]
    assert "dwLength (9) is shorter than its header and PKCS#7 (308 bytes)" in entries[0].rejected
    assert entries[1].rejected == ""
    assert Anomaly.ENTRY_MALFORMED in anomalies


def test_a_pkcs7_behind_a_short_dwlength_that_runs_past_the_table_is_read_to_its_end():
    """What the table holds of it is read, cut short (its certificates may be whole), and the
    walk into it by dwLength makes no entry of its bytes."""
    entries, anomalies = read(struct.pack("<IHH", 9, 0x200, 2) + sequence(300)[:100])
    assert [(len(e.blob), e.truncated) for e in entries] == [(100, True)]
    assert entries[0].rejected.endswith(
        "shorter than its header and PKCS#7, which runs past the table"
    )
    assert Anomaly.PKCS7_TRUNCATED in anomalies


def test_an_entry_the_walk_reaches_inside_a_longer_pkcs7_is_read():
    """A dwLength that is right beside a PKCS#7 that claims more than it holds (it spans the
    next entry): the next entry, on the walk, with a real wRevision, is read."""
    first = sequence(400)[:40]  # claims 400 bytes; the entry holds 40
    table = entry(first) + entry(sequence(200)) + bytes(400)
    entries, _ = read(table)
    assert [len(e.blob) for e in entries] == [400, 200]
    assert entries[0].rejected.startswith("its certificate-table entry's dwLength (48) is shorter")
    assert entries[1].rejected == ""


def test_an_entry_after_a_pkcs7_inside_its_dwlength_is_read_and_named():
    inner = entry(sequence(64))
    table = struct.pack("<IHH", 8 + 16 + len(inner), 0x200, 2) + sequence(16) + inner
    entries, anomalies = read(table)
    assert [len(e.blob) for e in entries] == [16, 64]
    assert entries[1].rejected == "its certificate-table entry lies inside entry 0's dwLength"
    assert Anomaly.SLACK_IN_ENTRY in anomalies


def test_zeros_after_a_pkcs7_inside_its_dwlength_are_slack_not_an_entry():
    table = struct.pack("<IHH", 8 + 16 + 64, 0x200, 2) + sequence(16) + bytes(64)
    entries, anomalies = read(table)
    assert [len(e.blob) for e in entries] == [16]
    assert anomalies == [Anomaly.SLACK_IN_ENTRY]


def test_looks_for_a_pkcs7_off_the_walk_are_capped():
    """The walk by dwLength through a PKCS#7 whose bytes are 2,000 headers, each followed by
    a ContentInfo that claims 2 GiB: each costs a look (a block read), and after MAX_PROBES
    no more are made: the limit is reported and nothing is made of them."""
    fake = struct.pack("<IHH", 32, 0x1234, 2) + b"\x30\x84\x7f\xff\xff\xff" + SIGNED_DATA
    fakes = (fake + bytes(32 - len(fake))) * 2000
    # 8 + 4 + 11 + 9 = 32: the fakes start where the walk by the first dwLength (32) leads.
    pkcs7 = b"\x30\x82" + (11 + 9 + len(fakes)).to_bytes(2, "big") + SIGNED_DATA + bytes(9)
    pkcs7 += fakes
    table = struct.pack("<IHH", 32, 0x200, 2) + pkcs7
    entries, anomalies = read(table)
    assert [len(e.blob) for e in entries] == [len(pkcs7)]
    assert Anomaly.LIMIT_REACHED in anomalies
