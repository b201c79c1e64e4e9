"""What the agent's live sources hand the engine: watch paths opened from their root one name
at a time (never through a folder swapped for a symlink), and a file many processes map read
once, its rows copied per process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rmmscan.agent.judging import ProcessJudge, judge_paths, open_folder
from rmmscan.engine.engine import Engine
from rmmscan.engine.options import Options
from rmmscan.sources.candidate import ProcessRef
from rmmscan.sources.processes import ProcessFile

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pe" / "dwsnet-srl.exe"


def _engine(tmp_path: Path) -> Engine:
    engine = Engine(Options(state_dir=tmp_path / "state", cache=False), lambda m: None)
    engine.open_state()
    return engine


def test_a_watched_file_is_judged_under_its_own_folder(tmp_path):
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    shutil.copy(SAMPLE, tree / "a" / "b" / "x.exe")
    engine = _engine(tmp_path)
    (batch,) = judge_paths(engine, [str(tree / "a" / "b" / "x.exe")], [str(tree)], "watch",
                           lambda: None)  # fmt: skip
    engine.close()
    assert batch.files == 1 and not batch.problems
    assert {r["FolderPath"] for r in batch.rows} == {str(tree / "a" / "b" / "x.exe")}
    assert {r["ScanSource"] for r in batch.rows} == {"watch"} and batch.detections


def test_a_folder_swapped_for_a_symlink_is_not_followed(tmp_path):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(SAMPLE, elsewhere / "x.exe")
    os.symlink(elsewhere, tree / "a" / "b")  # the event named tree/a/b/x.exe
    engine = _engine(tmp_path)
    (batch,) = judge_paths(engine, [str(tree / "a" / "b" / "x.exe")], [str(tree)], "watch",
                           lambda: None)  # fmt: skip
    engine.close()
    assert batch.rows == []
    assert [kind for _, kind, _ in batch.problems] == ["changed"]  # ELOOP: a link now
    # Opened from the root, the same folder path fails; by its path, it would have worked.
    assert os.path.exists(tree / "a" / "b" / "x.exe")
    try:
        open_folder(str(tree / "a" / "b"), [str(tree)]).close()
        raise AssertionError("followed the link")
    except OSError:
        pass


def test_a_file_many_processes_map_is_read_once(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "shared.dll")
    engine = _engine(tmp_path)
    judge = ProcessJudge(engine)
    assert judge.shared  # the bundled rules read no per-process column

    def mapped(pid: int) -> ProcessFile:
        path = tmp_path / "shared.dll"
        return ProcessFile(str(path), ProcessRef(pid, f"p{pid}", f"p{pid} --run"), path.stat())

    reads = []
    original = engine.judge

    def counting(candidate, now, *args):
        reads.append(candidate.process.pid)
        return original(candidate, now, *args)

    engine.judge = counting
    batch = judge.judge([mapped(pid) for pid in (10, 11, 12)], lambda: None)
    engine.close()
    assert reads == [10]
    by_pid = {}
    for row in batch.rows:
        by_pid.setdefault(row["ProcessId"], []).append(row)
    assert sorted(by_pid) == [10, 11, 12]
    first = by_pid[10]
    for pid in (11, 12):
        rows = by_pid[pid]
        assert [r["RuleId"] for r in rows] == [r["RuleId"] for r in first]
        assert {r["ProcessName"] for r in rows} == {f"p{pid}"}
        assert {r["ProcessCommandLine"] for r in rows} == {f"p{pid} --run"}
        assert {r["SHA256"] for r in rows} == {first[0]["SHA256"]}
    assert batch.detections == 3 * len(first)
