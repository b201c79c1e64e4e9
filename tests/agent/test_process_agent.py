"""The agent's process source, end to end: a real process maps a DWSNET-signed sample as a
loader maps a DLL, outside every root, and the agent reports it with the process's id, name
and command line, also once the file is deleted from the disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.agent.runner import AgentProcess, agent_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pe" / "dwsnet-srl.exe"
MAPPER = textwrap.dedent("""
    import mmap, sys, time
    with open(sys.argv[1], "rb") as f:
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    print("mapped", flush=True)
    time.sleep(120)
""")


def _mapper(path: Path, *args: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", MAPPER, str(path), *args],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "mapped"
    return child


def test_a_process_that_maps_a_dwsnet_sample_is_reported_with_its_pid(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    kept, gone = hidden / "dwagent.dll", hidden / "dropped.dll"
    shutil.copy(SAMPLE, kept)
    shutil.copy(SAMPLE, gone)
    roots = tmp_path / "empty"
    roots.mkdir()
    live = 'watch = false\nprocess_interval = "1s"\nheartbeat_interval = "1s"\nrescan_interval = 0'
    first = _mapper(kept, "--mode", "service")
    second = _mapper(gone)
    gone.unlink()  # the process keeps the mapping: the file lives on in memory only
    try:
        with AgentProcess(agent_config(tmp_path, [roots], agent=live)) as agent:
            mine = agent.wait_rows(lambda r: r["ScanSource"] == "process" and r.get("RuleId")
                                   and r["ProcessId"] in (first.pid, second.pid),
                                   count=2, timeout=60)  # fmt: skip
            beats = agent.wait_rows(lambda r: r["ScanSource"] == "heartbeat"
                                    and json.loads(r["AgentStatus"])["processes"] > 0)  # fmt: skip
            agent.stop()
            rows = agent.file_rows(ScanSource="process")
    finally:
        first.kill()
        second.kill()
    by_pid = {r["ProcessId"]: r for r in mine}
    row = by_pid[first.pid]
    assert row["FolderPath"] == str(kept)
    assert row["Signer"] == "DWSNET srl"
    assert row["ProcessName"].startswith("python")
    assert "--mode service" in row["ProcessCommandLine"]
    assert "deleted_on_disk" not in row["Anomalies"]
    deleted = by_pid[second.pid]
    assert deleted["FolderPath"] == str(gone)
    assert "deleted_on_disk" in json.loads(deleted["Anomalies"])
    assert deleted["SHA256"] == row["SHA256"]
    # Each process's file once, however many scans ran.
    pairs = [(r["ProcessId"], r["FolderPath"], r["RuleId"]) for r in rows]
    assert len(pairs) == len(set(pairs))
    assert json.loads(beats[-1]["AgentStatus"])["processes"] > 2
