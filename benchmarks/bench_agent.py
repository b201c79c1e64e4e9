"""Agent benchmarks: what `rmmscan agent` costs an endpoint and how fast it reports. See
benchmarks/README.md (agent).

1. Watch latency. An agent watches an empty folder and forwards detections to a real rsyslogd
   over TCP (tests/receivers/rsyslog.py). --latency times, one after another, a DWSNET-signed
   sample is written under a new name (open, write, close); the clock runs from the close to
   the moment the row naming that path is in rsyslog's messages file. p50 and p95 (target:
   p95 <= 1 s).
2. Idle. An agent on a watched tree of --files files (the benchmark corpus), after its first
   sweep: its CPU time over --idle seconds (target <= 1 % of one core) and its resident memory
   (target <= 80 MiB).
3. CPU budget. A first sweep of the same tree with max_cpu_percent = 25 and an empty state:
   the agent's CPU time over the sweep's wall time, from the agent's own log lines that open
   and close the sweep (target 25 % +- 5).

    .venv/bin/python benchmarks/bench_agent.py [--files 100000] [--latency 200] [--idle 60]
        [--only latency|idle|budget]

Every number is written to benchmarks/results-agent.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.receivers, tests.agent

from tests.agent.runner import AgentProcess, agent_config  # noqa: E402
from tests.receivers.rsyslog import Rsyslog  # noqa: E402

WORK = ROOT / "benchmarks" / ".work"
RESULTS = ROOT / "benchmarks" / "results-agent.json"
SAMPLE = ROOT / "samples" / "pe" / "dwsnet-srl.exe"
TICK = os.sysconf("SC_CLK_TCK")
QUIET = 'process_interval = 0\nheartbeat_interval = "1h"\nrescan_interval = 0'


def proc_cpu(pid: int) -> float:
    """user + system seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak), MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def corpus(files: int) -> Path:
    out = WORK / f"corpus-{files}-s1"
    if not (out / "C").is_dir():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_corpus.py"),
                        "--out", str(out), "--files", str(files), "--seed", "1"],
                       check=True)  # fmt: skip
    return out / "C"


def fresh(name: str) -> Path:
    folder = WORK / "agent" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def latency(count: int) -> dict:
    folder = fresh("latency")
    watched = folder / "watched"
    watched.mkdir()
    data = SAMPLE.read_bytes()
    with Rsyslog(folder / "rsyslog", "tcp") as receiver:
        config = agent_config(folder, [watched], agent=QUIET, sinks=f"""
[sinks.soc]
type = "syslog"
address = "127.0.0.1:{receiver.port}"
transport = "tcp"
""")  # fmt: skip
        messages = receiver.folder / "messages.txt"
        with AgentProcess(config) as agent:
            agent.wait_log("swept")
            times = []
            offset = 0
            for i in range(count):
                path = watched / f"dropped-{i:04}.exe"
                needle = json.dumps(str(path))[1:-1].encode()
                with open(path, "wb") as f:
                    f.write(data)
                closed = time.monotonic()
                while True:
                    if messages.exists():
                        with open(messages, "rb") as m:
                            m.seek(offset)
                            tail = m.read()
                        if needle in tail:
                            times.append(time.monotonic() - closed)
                            offset += tail.rindex(needle)
                            break
                    if time.monotonic() - closed > 30:
                        raise SystemExit(f"no row for {path} after 30 s: {agent.log()[-5:]}")
                    time.sleep(0.002)
            agent.stop()
    times.sort()
    q = statistics.quantiles(times, n=100)
    return {"files": count, "p50_s": round(q[49], 3), "p95_s": round(q[94], 3),
            "max_s": round(times[-1], 3), "min_s": round(times[0], 3)}  # fmt: skip


def idle(files: int, seconds: float) -> dict:
    tree = corpus(files)
    folder = fresh("idle")
    # The agent's defaults but for the roots: detections only, to a JSONL file.
    config = agent_config(folder, [tree], agent=QUIET + "\nmax_cpu_percent = 100",
                          emit="detections")  # fmt: skip
    with AgentProcess(config) as agent:
        agent.wait_log("swept", timeout=3600)
        watching = agent.wait_log("watching")[-1]
        time.sleep(2)  # the first sweep's last batches
        cpu0, t0 = proc_cpu(agent.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = proc_cpu(agent.pid), time.monotonic()
        memory = proc_memory(agent.pid)
        agent.stop(30)
    return {"files": files, "seconds": round(t1 - t0, 1), "cpu_s": round(cpu1 - cpu0, 3),
            "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 2),
            "rss_mib": round(memory["VmRSS"], 1), "peak_rss_mib": round(memory["VmHWM"], 1),
            "watches": watching.get("watches"), "limited": watching.get("limited")}  # fmt: skip


def budget(files: int, percent: float = 25) -> dict:
    tree = corpus(files)
    folder = fresh("budget")
    config = agent_config(folder, [tree], agent=f"{QUIET}\nwatch = false\n"
                          f"max_cpu_percent = {percent}", emit="detections")  # fmt: skip
    with AgentProcess(config) as agent:
        agent.wait_log("sweep", timeout=120)
        cpu0, t0 = proc_cpu(agent.pid), time.monotonic()
        agent.wait_log("swept", timeout=7200)
        cpu1, t1 = proc_cpu(agent.pid), time.monotonic()
        agent.stop(30)
    share = 100 * (cpu1 - cpu0) / (t1 - t0)
    return {"files": files, "budget_percent": percent, "seconds": round(t1 - t0, 1),
            "cpu_s": round(cpu1 - cpu0, 2), "cpu_percent": round(share, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--only", choices=("latency", "idle", "budget"))
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    runs = {
        "latency": lambda: latency(args.latency),
        "idle": lambda: idle(args.files, args.idle),
        "budget": lambda: budget(args.files),
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name, measure in runs.items():
        if args.only not in (None, name):
            continue
        when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        load = [round(x, 2) for x in os.getloadavg()]
        result = measure()
        # Each measurement keeps when, on which commit and under what load it was taken.
        results[name] = {"when": when, "commit": commit, "load_before": load, **result,
                         "load_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
        print(name, results[name], flush=True)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
