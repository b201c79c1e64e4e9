"""The agent as a good citizen and as configured: lowest priorities, private files, its own
log file, the periodic rescan, SIGINT, and the defaults it runs on without a configuration."""

from __future__ import annotations

import json
import shutil
import signal
import stat
import time
from pathlib import Path

import psutil

from rmmscan.agent.agent import DEFAULT_SINK, defaults
from rmmscan.config.schema import AgentConfig
from rmmscan.rules.judge import EMIT_DETECTIONS
from tests.agent.runner import AgentProcess, agent_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "pe" / "dwsnet-srl.exe"


def _private(path: Path) -> bool:
    mode = stat.S_IMODE(path.stat().st_mode)
    return mode & 0o077 == 0


def test_priorities_private_files_log_file_rescan_and_sigint(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(SAMPLE, tree / "first.exe")
    agent_table = ('watch = false\nprocess_interval = 0\nheartbeat_interval = "1s"\n'
                   'rescan_interval = "2s"\nlog = "logs/agent.log"\nlog_max_bytes = 4096\n'
                   'log_keep = 2')  # fmt: skip
    config = agent_config(tmp_path, [tree], agent=agent_table, emit="detections")
    with AgentProcess(config) as agent:
        agent.wait_rows(lambda r: r.get("RuleId") and r["FolderPath"].endswith("first.exe"))
        process = psutil.Process(agent.pid)
        nice, ionice = process.nice(), process.ionice()
        # The watch is off: a file added later is found by the periodic rescan.
        shutil.copy(SAMPLE, tree / "later.exe")
        later = agent.wait_rows(lambda r: r.get("RuleId")
                                and r["FolderPath"].endswith("later.exe"), timeout=20)  # fmt: skip
        # The rescan reports again what is still there (as every sweep does).
        firsts = agent.wait_rows(lambda r: r.get("RuleId")
                                 and r["FolderPath"].endswith("first.exe"),
                                 count=2 * len(later), timeout=20)  # fmt: skip
        started = time.monotonic()
        agent.signal(signal.SIGINT)
        agent.proc.wait(10)
        took = time.monotonic() - started
    assert agent.proc.returncode == 0 and took < 5.0
    assert nice == 10
    assert ionice.ioclass == psutil.IOPRIO_CLASS_IDLE
    assert {r["ScanSource"] for r in later + firsts} == {"sweep"}
    # The log went to its own rotating file, JSON lines, and nothing to stderr but nothing.
    logs = tmp_path / "logs"
    files = sorted(logs.iterdir())
    assert [f.name for f in files][:1] == ["agent.log"] and len(files) <= 3
    entries = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert {"starting", "sweep", "swept"} <= {e["event"] for e in entries}
    assert all(e["level"] in ("info", "warning", "error") and e["time"].endswith("Z")
               for e in entries)  # fmt: skip
    # Everything the agent wrote is its own to read: files 0600, folders 0700.
    state = tmp_path / "state"
    written = [state, *state.iterdir(), logs, *files, tmp_path / "rows.jsonl"]
    assert all(_private(p) for p in written), [oct(p.stat().st_mode) for p in written]


def test_without_a_configuration_the_fixed_disks_the_bundled_rules_and_a_jsonl_file(tmp_path):
    config = defaults(tmp_path)
    assert config.rules == () and config.allowlist is None  # the bundled pack
    assert config.agent == AgentConfig()  # roots () means the fixed disks (roots.py)
    (sink,) = config.sinks
    assert sink.name == DEFAULT_SINK and sink.type == "jsonl" and sink.emit == EMIT_DETECTIONS
    assert sink.settings.path == tmp_path / "detections.jsonl"
