"""The agent's real-time watch, end to end: a real agent process, real inotify, real files.

A DWSNET-signed sample copied, moved, renamed or written slowly into a watched tree is
reported once, for its final content; a burst of 10,000 files overflows a watch queue made
small and still gives every file exactly once, with the agent's memory bounded.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from tests.agent.runner import AgentProcess, agent_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pe" / "dwsnet-srl.exe"
DATA = SAMPLE.read_bytes()
SHA256 = hashlib.sha256(DATA).hexdigest()
LIVE = 'process_interval = 0\nheartbeat_interval = "1s"\nrescan_interval = 0'


def _by_path(rows: list[dict]) -> dict[str, list[dict]]:
    found = collections.defaultdict(list)
    for row in rows:
        if row.get("RuleId"):
            found[row["FolderPath"]].append(row)
    return found


def _rules() -> set[str]:
    """The rules that fire on the sample (the same for every copy)."""
    import subprocess

    from tests.agent.runner import RMMSCAN

    out = subprocess.run([str(RMMSCAN), "scan", "--no-cache", "--format", "jsonl", str(SAMPLE)],
                         capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    return {json.loads(line)["RuleId"] for line in out.splitlines()}


def test_copied_moved_renamed_and_slowly_written_files_are_each_reported_once(tmp_path):
    tree = tmp_path / "tree"
    (tree / "deep" / "er").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    rules = _rules()
    assert rules
    with AgentProcess(agent_config(tmp_path, [tree], agent=LIVE)) as agent:
        agent.wait_log("swept")
        shutil.copy(SAMPLE, tree / "copied.exe")
        shutil.copy(SAMPLE, outside / "moved.exe")
        os.rename(outside / "moved.exe", tree / "deep" / "moved.exe")
        shutil.copy(SAMPLE, tree / "temp.part")
        os.rename(tree / "temp.part", tree / "deep" / "er" / "renamed.exe")
        # Written slowly: half, a pause longer than the settle time, the rest, then closed.
        with open(tree / "slow.exe", "wb") as f:
            f.write(DATA[: len(DATA) // 2])
            f.flush()
            time.sleep(2.0)
            f.write(DATA[len(DATA) // 2 :])
        # A touch without a change, then a rewrite of the same bytes: nothing new to report.
        os.utime(tree / "copied.exe")
        (tree / "copied.exe").write_bytes(DATA)
        expected = {str(tree / "copied.exe"), str(tree / "deep" / "moved.exe"),
                    str(tree / "deep" / "er" / "renamed.exe"), str(tree / "slow.exe")}  # fmt: skip
        agent.wait_rows(lambda r: r.get("RuleId") and r["FolderPath"] in expected,
                        count=len(expected) * len(rules))  # fmt: skip
        time.sleep(2.0)  # anything reported late, or twice, would arrive by now
        agent.stop()
        rows = agent.file_rows()
    found = _by_path(rows)
    assert set(found) == expected
    for path, path_rows in found.items():
        # Once: one row per rule, all from one judgement, of the whole file.
        assert sorted(r["RuleId"] for r in path_rows) == sorted(rules), path
        assert {r["SHA256"] for r in path_rows} == {SHA256}, path
        assert {r["ScanSource"] for r in path_rows} == {"watch"}, path
        assert {r["FileSize"] for r in path_rows} == {len(DATA)}, path


def test_a_burst_of_10000_files_overflowing_the_queue_loses_none(tmp_path):
    """Unsigned PE files with `emit = "all"`: each gives one row, so a file judged twice or
    never shows in the rows (and the test takes seconds, not a signature check each)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    data = (ROOT / "samples" / "pe" / "unsigned.exe").read_bytes()
    small = LIVE.replace('"1s"', '"500ms"') + "\nwatch_queue = 300\nmax_cpu_percent = 100"
    with AgentProcess(agent_config(tmp_path, [tree], agent=small)) as agent:
        agent.wait_log("swept")
        names = []
        for folder in range(20):
            sub = tree / f"d{folder:02}"
            sub.mkdir()
            for i in range(500):
                path = sub / f"f{i:03}.exe"
                with open(path, "wb") as f:
                    f.write(data)
                names.append(str(path))
        agent.wait_rows(lambda r: r["ScanSource"] != "heartbeat", count=len(names), timeout=600)
        time.sleep(3.0)
        agent.stop(30)
        rows = agent.file_rows()
        beats = agent.heartbeats()
    found = collections.Counter(r["FolderPath"] for r in rows)
    assert set(found) == set(names)
    twice = [p for p, n in found.items() if n != 1]
    assert not twice, twice[:5]
    sources = collections.Counter(r["ScanSource"] for r in rows)
    print(f"rows by source: {dict(sources)}; repeats dropped: {beats[-1]['repeats']}; "
          f"peak RSS in heartbeats: {max(b['rss_mib'] for b in beats)} MiB")
    # The overflow path ran: folders were rescanned (the sweep's rows), beside the watch's.
    assert sources["sweep"] > 0 and sources["watch"] > 0
    assert any(e.get("event") == "sweep" and e.get("phase") == "rescan" for e in agent.log())
    assert max(b["rss_mib"] for b in beats) < 150
