"""Crash safety: sweeps that find detections are killed with SIGKILL at moments spread over the
sweep and the delivery, with the receiver (a real rsyslog over TCP) down in some rounds and up
in others; then the receiver comes back and `rmmscan outbox flush` runs. Every detection any
run showed arrives; duplicates (at least once allows them) are counted and reported."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweeptree import make_corpus

from tests.receivers.rsyslog import Rsyslog

ROOT = Path(__file__).resolve().parents[2]
TEST_ROOT = ROOT / "samples" / "pki" / "test-root.pem"
ROUNDS = 12


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("crash") / "corpus", 4000, seed=11)


def _command(corpus: Path, config: Path, flush: str) -> list[str]:
    return [
        sys.executable, "-m", "rmmscan", "scan", str(corpus), "--config", str(config),
        "--format", "jsonl", "--trusted-roots", str(TEST_ROOT),
        "--no-system-roots", "--flush-timeout", flush,
    ]  # fmt: skip


def _whole_rows(out: bytes) -> list[dict]:
    """The rows a killed run wrote in full (its last line may be cut)."""
    rows = []
    for line in out.split(b"\n")[:-1]:
        rows.append(json.loads(line))
    return rows


def test_killed_sweeps_lose_no_detection(tmp_path, corpus, capsys):
    receiver = Rsyslog(tmp_path / "rsyslog", "tcp")
    config = tmp_path / "rmmscan.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        "[sinks.siem]\n"
        'type = "syslog"\n'
        f'address = "127.0.0.1:{receiver.port}"\n'
        'emit = "signed"\n'  # the inventory too: more to deliver, a longer delivery
    )
    config.chmod(0o600)

    # A first sweep fills the scan cache (verifying every signed file takes most of its
    # time); the rounds then sweep from the cache, each emitting every row again, so that a
    # round is short and its delivery large.
    first = subprocess.run(_command(corpus, config, "0s"), capture_output=True, timeout=600)
    assert first.returncode == 1, first.stderr.decode()
    shown = {r["ReportId"] for r in _whole_rows(first.stdout) if r["RuleId"]}
    assert len(shown) >= 20
    # How long a sweep from the cache takes here, receiver down, delivery not awaited.
    began = time.monotonic()
    second = subprocess.run(_command(corpus, config, "0s"), capture_output=True, timeout=600)
    sweep_s = time.monotonic() - began
    assert second.returncode == 1, second.stderr.decode()
    shown |= {r["ReportId"] for r in _whole_rows(second.stdout) if r["RuleId"]}

    rng = random.Random(20261202)
    # Moments over the sweep, then over the delivery that follows it.
    moments = [sweep_s * f for f in (0.1, 0.3, 0.5, 0.7, 0.85, 0.95)]
    moments += [sweep_s + d for d in (0.02, 0.05, 0.1, 0.2, 0.4, 0.8)]
    moments = [m * rng.uniform(0.9, 1.1) for m in moments]
    rng.shuffle(moments)
    killed = 0
    for round_, moment in enumerate(moments[:ROUNDS]):
        up = round_ % 2 == 1  # the backlog of the round before goes in this one
        if up:
            receiver.start()
        proc = subprocess.Popen(
            _command(corpus, config, "30s"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # killed as a service manager kills: the whole group
        )  # fmt: skip
        time.sleep(moment)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
        killed += proc.returncode == -signal.SIGKILL
        shown |= {r["ReportId"] for r in _whole_rows(out) if r["RuleId"]}
        if up:
            receiver.stop()
    assert killed >= 10

    with receiver:
        done = subprocess.run(
            [sys.executable, "-m", "rmmscan", "outbox", "flush", "--config", str(config),
             "--timeout", "120"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        # Rows delivered in the rounds the receiver was up are in its file already.
        messages = receiver.wait_for(1, timeout=5, settle=1.0)
    received = [json.loads(m) for m in messages]
    detections = [r["ReportId"] for r in received if r["RuleId"]]
    missing = shown - set(detections)
    assert not missing, f"{len(missing)} detections lost: {sorted(missing)[:10]}"
    duplicates = len(received) - len({r["ReportId"] for r in received})
    with capsys.disabled():
        print(
            f"\ncrash safety: {killed} runs killed; {len(shown)} detections shown, all "
            f"delivered; {len(received)} rows received, {duplicates} of them duplicates"
        )
