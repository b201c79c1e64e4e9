"""The outbox (sinks/outbox.py) on a real SQLite file: order, removal, the size budget's
policy and its counts, rows set aside, and two connections at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat

from rmmscan.sinks.forward import entry_of
from rmmscan.sinks.outbox import Outbox, path_of
from rmmscan.sinks.transport import Entry


def _entry(n: int, detection: bool, size: int = 100) -> Entry:
    row = {"ReportId": n, "RuleId": "r" if detection else None, "pad": "x" * size}
    return Entry(json.dumps(row).encode(), 1.7e9 + n, "host", detection)


def _ids(batch) -> list[int]:
    return [json.loads(e.row)["ReportId"] for _, e in batch]


def test_rows_wait_in_a_private_file_and_leave_detections_first(tmp_path):
    box = Outbox(path_of(tmp_path, "siem"))
    box.put([_entry(1, False), _entry(2, True), _entry(3, False), _entry(4, True)], 1 << 20)
    assert stat.S_IMODE(os.stat(tmp_path / "outbox" / "siem.sqlite").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "outbox").st_mode) == 0o700
    batch = box.peek(10, 1 << 20)
    assert _ids(batch) == [2, 4, 1, 3]
    box.remove(row_id for row_id, _ in batch[:3])
    depth = box.depth()
    assert (depth.rows, depth.detections, depth.delivered) == (1, 0, 3)
    assert _ids(box.peek(10, 1 << 20)) == [3]


def test_a_batch_is_bounded_by_rows_and_bytes_but_holds_at_least_one_row(tmp_path):
    box = Outbox(path_of(tmp_path, "siem"))
    box.put([_entry(n, False, size=1000) for n in range(10)], 1 << 20)
    assert len(box.peek(3, 1 << 20)) == 3
    assert len(box.peek(100, 2500)) == 2
    assert len(box.peek(100, 10)) == 1  # a row larger than the limit still goes, alone


def test_a_full_outbox_drops_the_oldest_inventory_first_and_detections_last(tmp_path):
    box = Outbox(path_of(tmp_path, "siem"))
    size = len(_entry(0, False).row)
    budget = 10 * size
    box.put([_entry(n, n % 2 == 0) for n in range(10)], budget)  # 5 detections, 5 inventory
    assert box.depth().rows == 10
    dropped = box.put([_entry(10, False), _entry(11, False)], budget)
    assert (dropped.inventory, dropped.detections) == (2, 0)
    assert sorted(_ids(box.peek(100, 1 << 30))) == [0, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    # Inventory runs out, oldest first, then the oldest detections go.
    dropped = box.put([_entry(n, True) for n in range(12, 20)], budget)
    assert (dropped.inventory, dropped.detections) == (5, 3)
    held = _ids(box.peek(100, 1 << 30))
    assert sorted(held) == [6, 8, *range(12, 20)]
    depth = box.depth()
    assert depth.bytes <= budget
    assert (depth.dropped_inventory, depth.dropped_detections) == (7, 3)


def test_a_refused_row_is_set_aside_with_the_answer_and_no_longer_sent(tmp_path):
    box = Outbox(path_of(tmp_path, "siem"))
    box.put([_entry(1, True), _entry(2, True)], 1 << 20)
    first, _ = box.peek(10, 1 << 20)
    box.set_aside(first[0], "400 Bad Request: invalid field")
    assert _ids(box.peek(10, 1 << 20)) == [2]
    depth = box.depth()
    assert (depth.rows, depth.aside) == (1, 1)
    row, reason, _ = box.aside_rows()[0]
    assert json.loads(row)["ReportId"] == 1 and reason == "400 Bad Request: invalid field"


def _writer(path, start: int, count: int) -> None:
    box = Outbox(path)
    for n in range(start, start + count):
        box.put([_entry(n, n % 3 == 0)], 1 << 30)
    box.close()


def test_writers_and_a_reader_in_other_processes_lose_nothing(tmp_path):
    path = path_of(tmp_path, "siem")
    Outbox(path).close()
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(path, k * 1000, 300)) for k in range(2)]
    for w in writers:
        w.start()
    reader = Outbox(path)
    taken: list[int] = []
    while any(w.is_alive() for w in writers) or reader.depth().rows:
        batch = reader.peek(50, 1 << 20)
        reader.remove(row_id for row_id, _ in batch)
        taken += _ids(batch)
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert sorted(taken) == [*range(0, 300), *range(1000, 1300)]
    assert reader.depth().delivered == 600


def test_an_entry_keeps_a_row_whole_and_ascii(tmp_path):
    row = {
        "FolderPath": "C:\\Users\\x\\\n\t\x1b[31mé\udcff",
        "Timestamp": "2026-12-02T10:00:00.5Z",
        "DeviceName": "pc-1",
        "RuleId": "DWSNET",
    }
    entry = entry_of(row)
    assert entry.row.isascii() and b"\n" not in entry.row
    assert json.loads(entry.row) == row
    assert entry.time == 1796205600.5 and entry.host == "pc-1" and entry.detection


def test_rows_dropped_while_they_were_sent_are_counted_once(tmp_path):
    box = Outbox(path_of(tmp_path, "siem"))
    box.put([_entry(n, False) for n in range(4)], 1 << 20)
    in_flight = box.peek(10, 1 << 20)
    size = len(_entry(9, False).row)
    box.put([_entry(9, False)], size)  # the budget drops the four being sent
    box.remove(row_id for row_id, _ in in_flight)
    depth = box.depth()
    assert (depth.rows, depth.delivered, depth.dropped_inventory) == (1, 0, 4)
    assert depth.bytes == size
    box.set_aside(in_flight[0][0], "gone already")
    assert box.depth().aside == 0
