"""The engine on its own: a candidate that is not a local file, the sink contract, stopping a
sweep (a stop event, SIGTERM), and the cache a stopped sweep leaves behind.

The corpus is the benchmark's generator at 20,000 files: one large DWSNET-signed installer
among them, so a stop can land while a worker is deep in a file."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sweeptree import make_corpus

from rmmscan.cli.status import EXIT_ERROR, EXIT_FOUND, EXIT_OK, scan_status
from rmmscan.engine.engine import Batch, Engine, OptionsError
from rmmscan.engine.options import Options
from rmmscan.engine.sweep import Sweep
from rmmscan.sinks.jsonl import JsonlSink
from rmmscan.sinks.sink import SinkError
from rmmscan.sinks.stats import ScanStats
from rmmscan.sources.candidate import KEY_SIZE, MemoryFile
from rmmscan.sources.localfile import NamedFile
from rmmscan.sources.walk import WalkOptions
from rmmscan.state.cache import ScanCache

from conftest import ROOT

PE_DIR = ROOT / "samples" / "pe"
TEST_ROOT = ROOT / "samples" / "pki" / "test-root.pem"
STABLE = {"Timestamp", "ReportId"}
WHERE = {"FolderPath", "FolderPathBytes", "FileName", "ScanSource"}


def _options(state_dir: Path, **kw) -> Options:
    base = dict(trusted_roots=(TEST_ROOT,), system_roots=False, state_dir=state_dir)
    return Options(**{**base, **kw})


def _warnings() -> tuple[list[str], object]:
    seen: list[str] = []
    return seen, seen.append


def _stable(rows, drop=STABLE) -> list[str]:
    return sorted(json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True)
                  for r in rows)  # fmt: skip


# -- a candidate that is not a local file ----------------------------------------------------------


def test_a_file_in_memory_is_judged_as_the_same_file_on_disk(tmp_path):
    warned, warn = _warnings()
    engine = Engine(_options(tmp_path, cache_scope="image:evidence-1"), warn)
    engine.open_state()
    out = io.StringIO()
    engine.sinks.append(JsonlSink(out))
    data = (PE_DIR / "dwsnet-ou.exe").read_bytes()
    key = b"\x07" * KEY_SIZE
    memory = MemoryFile("C:\\Windows\\Temp", "dwagent.exe", data, key, "image")
    in_memory = engine.judge_file(memory)
    on_disk = engine.judge_file(NamedFile(PE_DIR / "dwsnet-ou.exe", "image"))
    assert in_memory.problems == [] and on_disk.problems == []
    assert in_memory.detections == on_disk.detections > 0
    assert _stable(in_memory.rows, STABLE | WHERE) == _stable(on_disk.rows, STABLE | WHERE)
    assert {r["FolderPath"] for r in in_memory.rows} == {"C:\\Windows\\Temp\\dwagent.exe"}
    assert {r["FileName"] for r in in_memory.rows} == {"dwagent.exe"}
    assert {r["ScanSource"] for r in in_memory.rows} == {"image"}
    assert in_memory.listing.key == key and in_memory.listing.size == len(data)

    batch = Batch(memory.folder, files=1)
    batch.add(memory.name, in_memory)
    engine.deliver(batch)
    engine.close()
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == len(in_memory.rows) == engine.stats.emitted
    assert len({r["ReportId"] for r in rows}) == len(rows)
    assert engine.stats.detections == in_memory.detections
    assert warned == []

    # The cache keeps the image's file under its scope: the local file systems never see it.
    image = ScanCache(tmp_path, scope="image:evidence-1")
    local = ScanCache(tmp_path)
    try:
        found = image.lookup_dir("C:\\Windows\\Temp")
        assert set(found) == {"dwagent.exe"} and found["dwagent.exe"][1] == key
        assert local.lookup_dir("C:\\Windows\\Temp") == {}
    finally:
        image.close()
        local.close()


def test_a_candidate_that_cannot_be_opened_is_a_problem_not_an_exception(tmp_path):
    engine = Engine(_options(tmp_path, cache=False), _warnings()[1])
    engine.open_state()
    outcome = engine.judge_file(NamedFile(tmp_path / "absent.exe", "sweep"))
    assert outcome.rows == [] and outcome.listing is None
    assert [(kind, message) for _, kind, message in outcome.problems] == [
        ("vanished", "No such file or directory")
    ]
    engine.close()


def test_an_engine_is_not_built_from_a_bad_option(tmp_path):
    with pytest.raises(OptionsError, match="option file not found"):
        Engine(_options(tmp_path, distrust=(tmp_path / "nope.json",)), _warnings()[1])
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(OptionsError, match=r"bad\.pem"):
        Engine(_options(tmp_path, trusted_roots=(bad,)), _warnings()[1])


# -- the sink contract ---------------------------------------------------------------------------


def test_a_sink_that_cannot_take_rows_says_so_and_the_engine_passes_it_on(tmp_path):
    engine = Engine(_options(tmp_path, cache=False), _warnings()[1])
    engine.open_state()
    full = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115 - the sink owns it
    good = io.StringIO()
    engine.sinks += [JsonlSink(good), JsonlSink(full, "/dev/full", owned=True)]
    outcome = engine.judge_file(NamedFile(PE_DIR / "dwsnet-srl.exe", "sweep"))
    batch = Batch(str(PE_DIR), files=1)
    batch.add("dwsnet-srl.exe", outcome)
    with pytest.raises(SinkError, match="cannot write the rows to /dev/full: No space left"):
        engine.deliver(batch)
    # The sink before it has the rows; the statistics do not count them as emitted.
    assert len(good.getvalue().splitlines()) == len(outcome.rows) > 0
    assert engine.stats.emitted == 0
    with pytest.raises(SinkError):
        engine.sinks[1].close()
    assert full.closed
    engine.close()


def test_close_writes_what_an_owned_sink_buffered_and_leaves_a_borrowed_stream_open(tmp_path):
    path = tmp_path / "rows.jsonl"
    owned = JsonlSink(open(path, "w", encoding="utf-8"), str(path), owned=True)  # noqa: SIM115
    owned.write([{"a": 1}])
    owned.flush()
    owned.close()
    assert owned.out.closed and path.read_text() == '{"a":1}\n'
    borrowed = io.StringIO()
    sink = JsonlSink(borrowed)
    sink.write([{"b": 2}])
    sink.close()
    assert not borrowed.closed and borrowed.getvalue() == '{"b":2}\n'


def test_the_exit_status_comes_from_the_statistics():
    stats = ScanStats()
    assert scan_status(stats) == EXIT_OK
    stats.count("vanished")
    assert scan_status(stats) == EXIT_OK
    stats.problem("/x", "failed", "internal error")
    assert scan_status(stats) == EXIT_ERROR
    stats.detections = 1
    assert scan_status(stats) == EXIT_FOUND
    interrupted = ScanStats(interrupted=True)
    assert scan_status(interrupted) == EXIT_ERROR


def test_observers_hear_of_every_problem_and_detection():
    heard = []

    class Ear:
        def problem(self, path, kind, message):
            heard.append(("problem", path, kind))

        def detection(self, row):
            heard.append(("detection", row["RuleId"]))

    stats = ScanStats()
    stats.subscribe(Ear())
    stats.problem("/a", "unreadable", "Permission denied")
    stats.detection({"RuleId": "r1"})
    assert heard == [("problem", "/a", "unreadable"), ("detection", "r1")]
    assert stats.problems == {"unreadable": 1}


# -- stopping ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "corpus", 20000, seed=3)


def _sweep_rows(corpus: Path, state_dir: Path, *extra) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "rmmscan", "scan", str(corpus), "--format", "jsonl", "-q",
         "--trusted-roots", str(TEST_ROOT), "--no-system-roots", "--state-dir", str(state_dir),
         *extra],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == EXIT_FOUND, done.stderr
    assert "warning" not in done.stderr.lower() and "unusable" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("jobs", [1, 2], ids=["threads", "processes"])
def test_a_stop_event_ends_a_sweep_within_a_second_and_the_cache_stays_sound(
    corpus, tmp_path, jobs
):
    state = tmp_path / "state"
    engine = Engine(_options(state), _warnings()[1])
    out = io.StringIO()
    engine.sinks.append(JsonlSink(out))
    engine.open_state()
    sweep = Sweep(engine, WalkOptions(), jobs)
    stop = threading.Event()
    stopped_at: list[float] = []

    def stop_midway(_root: str) -> None:
        # Stopped by the sweep's own progress, not after a delay: a faster machine must not
        # finish the corpus first.
        if not stopped_at and engine.stats.files >= 1000:
            stopped_at.append(time.monotonic())
            stop.set()

    # jobs=2 forks two processes where this process runs no other thread, else it runs two
    # threads; the SIGTERM test below checks the processes' path in any case.
    sweep.run([str(corpus)], tick=stop_midway, stop=stop)
    returned = time.monotonic()
    engine.close()
    assert stopped_at, "the sweep ended before it was stopped: the corpus is too small"
    assert returned - stopped_at[0] < 1.0
    assert engine.stats.interrupted
    assert 0 < engine.stats.files < 20000
    for line in out.getvalue().splitlines():
        json.loads(line)  # whole rows only

    # What the stopped sweep cached is sound: a rescan with it yields exactly the rows of a
    # sweep that reads every file.
    fresh = _sweep_rows(corpus, tmp_path / "fresh", "--no-cache")
    cached = _sweep_rows(corpus, state)
    assert _stable(cached) == _stable(fresh)


@pytest.mark.parametrize("jobs", ["1", "2"], ids=["one-process", "two-processes"])
def test_sigterm_stops_a_sweep_with_a_summary_and_whole_rows(corpus, tmp_path, jobs):
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmmscan", "scan", str(corpus), "--format", "jsonl", "-j", jobs,
         "--trusted-roots", str(TEST_ROOT), "--no-system-roots", "--state-dir", str(tmp_path),
         "--no-cache"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
        # Unbuffered, as `python -u` runs: the stream rmmscan writes rows to must still
        # complete a write that the signal cuts short.
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    # Signalled once the first rows arrive (the sweep is under way), not after a delay: a
    # faster machine must not finish the corpus first.
    head = b""
    while b"\n" not in head:
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, "the sweep ended before it wrote a row"
        head += chunk
    assert proc.poll() is None, "the sweep ended before it was stopped: the corpus is too small"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    out, err = (head + rest).decode(), err.decode()
    assert took < 2.0, err
    assert "INTERRUPTED" in err, err
    assert "files walked:" in err
    rows = [json.loads(line) for line in out.splitlines()]  # whole rows only
    emitted = re.search(r"rows emitted: ([\d,]+)", err).group(1)
    assert len(rows) == int(emitted.replace(",", "")), err  # and none lost
    assert proc.returncode == (EXIT_FOUND if rows and any(r["RuleId"] for r in rows)
                               else EXIT_ERROR), err  # fmt: skip


# -- the fan-out by the work ---------------------------------------------------------------------


def test_files_named_one_by_one_are_judged_in_this_process_and_a_tree_fans_out(tmp_path):
    """Where the sweep cannot fork (Windows, a process with threads), one worker."""
    from rmmscan.engine.processes import MAX_DEFAULT_JOBS
    from rmmscan.engine.sweep import default_jobs

    tree = tmp_path / "tree"
    tree.mkdir()
    one = tree / "a.exe"
    one.write_bytes((PE_DIR / "dwsnet-ou.exe").read_bytes())
    fan_out = max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))
    assert default_jobs([str(one)], True) == 1
    assert default_jobs([str(one), str(PE_DIR / "dwsnet-srl.exe")], True) == 1
    assert default_jobs([str(tree)], True) == fan_out
    assert default_jobs([str(one), str(tree)], True) == fan_out
    assert default_jobs([str(tree)], False) == 1  # threads: one worker


@pytest.mark.parametrize("fmt", ["table", "jsonl"])
def test_inspect_of_what_cannot_be_opened_is_an_error(tmp_path, capsys, fmt):
    from rmmscan.cli.main import main

    status = main(["inspect", "--format", fmt, "--state-dir", str(tmp_path / "s"),
                   str(tmp_path), str(PE_DIR / "dwsnet-ou.exe")])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 2
    assert f"rmmscan: {tmp_path}: is a directory" in err
    assert "dwsnet-ou.exe" in out  # the next file is still reported
