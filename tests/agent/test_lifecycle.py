"""`rmmscan agent` as a service manager runs it: a real process, real signals, a real rsyslog.

The first sweep reports what the roots hold; heartbeats come on their interval and reach
every sink; SIGTERM stops the agent within 5 s with every sink flushed; SIGHUP with a broken
configuration keeps the running one, and with a good one switches to it; a SIGKILL during
the first sweep loses nothing, and the restart resumes from the cache.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.agent.runner import RMMSCAN, AgentProcess, agent_config, write_config
from tests.receivers.rsyslog import Rsyslog
from tests.sweeptree import make_corpus

ROOT = Path(__file__).resolve().parents[2]
PE = ROOT / "samples" / "pe"
QUIET = 'watch = false\nprocess_interval = 0\nheartbeat_interval = "1s"'


def _tree(folder: Path) -> Path:
    """Every sample PE, some in a folder with a space and a Unicode name."""
    tree = folder / "tree"
    inner = tree / "Program Files" / "DWAgent ünï"
    inner.mkdir(parents=True)
    for sample in PE.iterdir():
        shutil.copy(sample, tree / sample.name)
    shutil.copy(PE / "dwsnet-srl.exe", inner / "dwagent.exe")
    return tree


def _detections(rows: list[dict]) -> set[tuple[str, str]]:
    return {(r["FolderPath"], r["RuleId"]) for r in rows if r.get("RuleId")}


def test_first_sweep_heartbeats_and_sigterm_flushing_every_sink(tmp_path):
    tree = _tree(tmp_path)
    with Rsyslog(tmp_path / "rsyslog", "tcp") as receiver:
        config = agent_config(
            tmp_path,
            [tree],
            agent=QUIET,
            sinks=f"""
[sinks.soc]
type = "syslog"
address = "127.0.0.1:{receiver.port}"
transport = "tcp"
""",
        )
        with AgentProcess(config) as agent:
            agent.wait_log("swept")
            agent.wait_rows(lambda r: r["ScanSource"] == "heartbeat"
                            and json.loads(r["AgentStatus"])["phase"] == "watching")  # fmt: skip
            took = agent.stop()
            assert agent.proc.returncode == 0
            assert took < 5.0, took
            rows = agent.rows()
        delivered = [json.loads(m) for m in receiver.wait_for(1)]
        # Every detection and heartbeat the agent made is at the receiver (the syslog sink's
        # policy is detections: heartbeats go to every sink whatever its policy).
        found = _detections(rows)
        assert ("%s" % (tree / "Program Files" / "DWAgent ünï" / "dwagent.exe"),) in {
            (path,) for path, _ in found
        }
        deadline = time.monotonic() + 10
        while _detections(delivered) != found and time.monotonic() < deadline:
            time.sleep(0.2)
            delivered = [json.loads(m) for m in receiver.messages()]
        assert _detections(delivered) == found
        beats = [r for r in rows if r["ScanSource"] == "heartbeat"]
        assert {r["ReportId"] for r in beats} <= {r["ReportId"] for r in delivered}
        assert all(r["ScanSource"] == "sweep" for r in rows if r["ScanSource"] != "heartbeat")
    status = json.loads(beats[-1]["AgentStatus"])
    assert status["sweeps"] == 1 and status["phase"] == "stopped"
    assert "watching" in {json.loads(b["AgentStatus"])["phase"] for b in beats}
    assert status["files"] == len(list(tree.rglob("*.*")))
    assert status["detections"] == sum(1 for r in rows if r.get("RuleId"))
    assert len(status["rule_pack"]) == 64 and status["rules"] > 0
    assert "soc" in status["outbox"]
    # A heartbeat carries only the device's columns and its status.
    set_columns = {k for k, v in beats[-1].items() if v is not None}
    assert set_columns == {"Timestamp", "DeviceId", "DeviceName", "ReportId", "ScanSource",
                           "AgentStatus"}  # fmt: skip
    log = agent.log()
    assert [e["event"] for e in log][-1] == "stopped"
    # Nothing in the log that belongs to the sinks: no signer, no hash, no rule.
    text = agent.log_path.read_text("utf-8")
    for row in rows:
        for column in ("SHA256", "SignerHash", "RuleId"):
            if row.get(column):
                assert row[column] not in text


def test_sighup_with_a_broken_config_keeps_the_running_one(tmp_path):
    tree = _tree(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(PE / "dwsnet-ou.exe", other / "late.exe")
    config = agent_config(tmp_path, [tree], agent=QUIET)
    good = config.read_text("utf-8")
    with AgentProcess(config) as agent:
        agent.wait_log("swept")
        write_config(tmp_path, good.replace('watch = false', 'watch = "no"'))
        agent.signal(signal.SIGHUP)
        failed = agent.wait_log("reload failed")[0]
        assert "agent.watch" in failed["message"] and "true or false" in failed["message"]
        assert agent.proc.poll() is None
        beats = len(agent.heartbeats())
        agent.wait_rows(lambda r: r["ScanSource"] == "heartbeat", count=beats + 2)
        # A good configuration with another root: taken, and the new root swept.
        write_config(tmp_path, good.replace(json.dumps(str(tree)),
                                            json.dumps(str(tree)) + ", " + json.dumps(str(other))))
        agent.signal(signal.SIGHUP)
        agent.wait_log("reloaded")
        agent.wait_rows(lambda r: r["FolderPath"] == str(other / "late.exe") and r["RuleId"])
        assert agent.stop() < 5.0
    assert agent.heartbeats()[-1]["reloads"] == 1


def test_a_kill_during_the_first_sweep_loses_nothing_and_the_restart_resumes(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", 2000, seed=7)
    slow = 'watch = false\nprocess_interval = 0\nheartbeat_interval = "500ms"\nmax_cpu_percent = 5'
    config = agent_config(tmp_path, [corpus], agent=slow)
    with AgentProcess(config) as agent:
        started = time.monotonic()
        agent.wait_log("sweep")
        # Past the cache's flush interval, and part of the way through the tree.
        agent.wait_rows(lambda r: r["ScanSource"] == "heartbeat"
                        and json.loads(r["AgentStatus"])["files"] >= 600, timeout=120)  # fmt: skip
        time.sleep(max(0.0, 6.0 - (time.monotonic() - started)))
        killed_at = agent.heartbeats()[-1]["files"]
        agent.kill()
    assert killed_at < 2000, "the sweep ended before the kill: make it slower"
    before = _detections(agent.rows())
    write_config(tmp_path, config.read_text("utf-8").replace("max_cpu_percent = 5",
                                                             "max_cpu_percent = 100"))
    with AgentProcess(config) as again:
        again.wait_log("swept")
        again.wait_rows(lambda r: r["ScanSource"] == "heartbeat"
                        and json.loads(r["AgentStatus"])["sweeps"] == 1)  # fmt: skip
        status = next(s for s in reversed(again.heartbeats()) if s["sweeps"] == 1)
        assert again.stop() < 5.0
    # The restart judged every file, and read fewer than a fresh sweep would.
    assert status["files"] == 2000
    read = status["files"] - status["cached"]
    print(f"killed after {killed_at} files; the restart read {read} of 2000")
    assert read < 2000 - 500
    # Every detection of the tree is in the rows, from one run or the other: the reference is
    # a one-off sweep of the same tree without a cache.
    swept = subprocess.run(
        [str(RMMSCAN), "scan", "--no-cache", "--format", "jsonl", str(corpus)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    expected = _detections([json.loads(line) for line in swept.stdout.splitlines()])
    assert expected
    assert expected <= before | _detections(again.rows())


def test_the_configurations_read_bound_is_the_agents(tmp_path):
    """max_read = "4K": every sample PE (8 KiB and more) is over it, every row marked and
    unverified; the same agent without the key verifies them."""
    tree = _tree(tmp_path)
    marks = {}
    for top in ('max_read = "4K"', ""):
        folder = tmp_path / ("bound" if top else "default")
        folder.mkdir()
        config = agent_config(folder, [tree], agent=QUIET, top=top)
        with AgentProcess(config) as agent:
            agent.wait_log("swept")
            assert agent.stop() < 5.0
            rows = [r for r in agent.rows() if r["ScanSource"] == "sweep" and r["Signer"]]
        assert rows
        marks[top] = {("too_large_to_read" in (r["Anomalies"] or ""), r["VerificationStatus"])
                      for r in rows}  # fmt: skip
    assert {bound for bound, _ in marks['max_read = "4K"']} == {True}
    assert {status for _, status in marks['max_read = "4K"']} == {"NotChecked"}
    assert {bound for bound, _ in marks[""]} == {False}
    assert "NotChecked" not in {status for _, status in marks[""]}
