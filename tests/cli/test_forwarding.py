"""`rmmscan scan --config` forwarding to a real rsyslog: every row arrives once and intact, the
summary and exit status say what was delivered, rows wait in the outbox while the receiver is
down and go with `rmmscan outbox flush`, and a full outbox drops by the documented policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rmmscan.sinks.forward import entry_of
from tests.receivers.rsyslog import Rsyslog, free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TEST_ROOT = SAMPLES / "pki" / "test-root.pem"


def _config(tmp_path: Path, port: int, emit: str = "all", extra: str = "") -> Path:
    path = tmp_path / "rmmscan.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        'flush_timeout = "20s"\n'
        "[sinks.siem]\n"
        'type = "syslog"\n'
        f'address = "127.0.0.1:{port}"\n'
        f'emit = "{emit}"\n' + extra
    )
    path.chmod(0o600)
    return path


def rmmscan(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rmmscan", *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _scan(config: Path, *paths, emit: str = "all", flush: str | None = None):
    extra = ["--flush-timeout", flush] if flush is not None else []
    return rmmscan(
        "scan", *paths, "--config", config, "--format", "jsonl", "--emit", emit, "--no-cache",
        "--trusted-roots", TEST_ROOT, "--no-system-roots", *extra,
    )  # fmt: skip


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def _status(config: Path) -> dict:
    done = rmmscan("outbox", "status", "--config", config, "--format", "json")
    assert done.returncode == 0, done.stderr
    return {s["sink"]: s for s in json.loads(done.stdout)["sinks"]}


def test_a_sweep_forwards_every_row_and_says_so(tmp_path):
    with Rsyslog(tmp_path / "rsyslog", "tcp") as receiver:
        config = _config(tmp_path, receiver.port)
        done = _scan(config, SAMPLES)
        assert done.returncode == 1, done.stderr  # the samples hold DWSNET-signed files
        shown = _rows(done.stdout)
        received = [json.loads(m) for m in receiver.wait_for(len(shown))]
    assert len(shown) > 30 and any(r["RuleId"] for r in shown)
    assert sorted(received, key=lambda r: r["ReportId"]) == shown
    assert (
        f"forwarded to siem (syslog tcp 127.0.0.1:{receiver.port}): {len(shown)} rows written, "
        f"{len(shown)} delivered, 0 waiting in the outbox (0 of this run), 0 set aside, "
        "0 dropped"
    ) in done.stderr
    assert _status(config)["siem"]["waiting"] == 0


def test_rows_wait_while_the_receiver_is_down_and_go_with_outbox_flush(tmp_path):
    receiver = Rsyslog(tmp_path / "rsyslog", "tcp")  # not started: nothing listens
    config = _config(tmp_path, receiver.port, emit="detections")
    done = _scan(config, SAMPLES, emit="detections", flush="1s")
    assert done.returncode == 1, done.stderr  # found: a finding is never hidden by the outage
    shown = _rows(done.stdout)
    assert shown and all(r["RuleId"] for r in shown)
    assert f"sink siem: {len(shown)} rows wait in the outbox (the receiver: " in done.stderr
    assert "Connection refused" in done.stderr
    status = _status(config)["siem"]
    assert (status["waiting"], status["detections"]) == (len(shown), len(shown))

    # Nothing found, but rows not delivered: the result is incomplete, status 2.
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "unsigned.exe").write_bytes((SAMPLES / "pe" / "unsigned.exe").read_bytes())
    done = _scan(config, clean, emit="detections", flush="1s")
    assert done.returncode == 0, done.stderr  # its own rows (none) are all delivered
    assert f"0 delivered, {len(shown)} waiting in the outbox (0 of this run)" in done.stderr
    config_all = _config(tmp_path, receiver.port, emit="all")
    done = _scan(config_all, clean, emit="all", flush="1s")
    assert done.returncode == 2, done.stderr
    assert f"{len(shown) + 1} waiting in the outbox (1 of this run)" in done.stderr

    with receiver:
        done = rmmscan("outbox", "flush", "--config", config, "--timeout", "30")
        assert done.returncode == 0, done.stderr
        assert f"siem: {len(shown) + 1} delivered, 0 waiting" in done.stdout
        received = [json.loads(m) for m in receiver.wait_for(len(shown) + 1)]
    by_id = {r["ReportId"]: r for r in received}
    assert len(by_id) == len(received) == len(shown) + 1  # each once
    for row in shown:
        assert by_id[row["ReportId"]] == row
    assert _status(config)["siem"]["waiting"] == 0


def test_a_full_outbox_drops_inventory_first_and_counts_every_drop(tmp_path):
    port = free_port(1)  # nothing listens: the receiver stays down
    # Learn the rows' sizes from a first run with room for all of them.
    roomy = _config(tmp_path, port, extra="outbox_max_mb = 64\n")
    first = _scan(roomy, SAMPLES / "pe", flush="0s")
    rows = _rows(first.stdout)
    detections = [r for r in rows if r["RuleId"]]
    inventory = [r for r in rows if not r["RuleId"]]
    assert detections and len(inventory) >= 4
    size = {r["ReportId"]: len(entry_of(r).row) for r in rows}
    # A budget that holds the detections of both runs and half an inventory (a few bytes a
    # row spare: the second run's ReportIds may be longer numbers).
    detection_bytes = sum(size[r["ReportId"]] for r in detections)
    inventory_bytes = sum(size[r["ReportId"]] for r in inventory)
    budget = 2 * detection_bytes + inventory_bytes // 2 + 8 * len(rows)
    tight = tmp_path / "tight"
    tight.mkdir()
    config = _config(tight, port, extra=f"outbox_max_mb = {budget / 2**20!r}\n")
    state = tmp_path / "state"
    config.write_text(config.read_text().replace(str(tight / "state"), str(state)))
    done = _scan(config, SAMPLES / "pe", flush="0s")
    assert done.returncode == 1, done.stderr
    second = _rows(done.stdout)
    status = _status(config)["siem"]
    dropped = status["dropped_inventory"]
    assert dropped > 0 and status["dropped_detections"] == 0
    assert "dropped" in done.stderr and "inventory rows" in done.stderr
    assert status["bytes"] <= budget
    assert status["waiting"] == len(rows) + len(second) - dropped
    # What is left: every detection of both runs, and the newest inventory.
    held = subprocess.run(
        [sys.executable, "-c", (
            "import json,sqlite3,sys;"
            "db=sqlite3.connect(sys.argv[1]);"
            "print(json.dumps([json.loads(r)['ReportId'] for (r,) in "
            "db.execute('select row from waiting order by id')]))"
        ), str(state / "outbox" / "siem.sqlite")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    held_ids = set(json.loads(held.stdout))
    every = rows + second
    assert {r["ReportId"] for r in every if r["RuleId"]} <= held_ids
    kept_inventory = sorted(r["ReportId"] for r in every if not r["RuleId"] and r["ReportId"]
                            in held_ids)  # fmt: skip
    all_inventory = sorted(r["ReportId"] for r in every if not r["RuleId"])
    assert kept_inventory == all_inventory[len(all_inventory) - len(kept_inventory):]

    # A budget smaller than the detections: the oldest detections go too, counted, reported,
    # and the status still says something was found.
    smaller = sum(size[r["ReportId"]] for r in detections) // 2
    config.write_text(config.read_text().replace(f"{budget / 2**20!r}", f"{smaller / 2**20!r}"))
    config.chmod(0o600)
    done = _scan(config, SAMPLES / "pe", flush="0s")
    assert done.returncode == 1, done.stderr
    status = _status(config)["siem"]
    assert status["dropped_detections"] > 0 and status["bytes"] <= smaller
    assert f"{status['dropped_detections']} detections" in done.stderr


def test_the_insecure_key_is_warned_about_on_every_run(tmp_path):
    port = free_port(1)
    config = _config(tmp_path, port, extra='transport = "tls"\ninsecure_skip_tls_verify = true\n')
    for _ in range(2):
        done = _scan(config, SAMPLES / "pe" / "unsigned.exe", flush="0s")
        assert "sink siem: insecure_skip_tls_verify = true" in done.stderr
    assert os.stat(config).st_mode & 0o777 == 0o600


def test_each_sink_takes_its_own_share_of_the_rows(tmp_path):
    with Rsyslog(tmp_path / "rsyslog", "tcp") as receiver:
        config = _config(tmp_path, receiver.port, emit="signed")
        done = _scan(config, SAMPLES / "pe", emit="detections")
        assert done.returncode == 1, done.stderr
        shown = _rows(done.stdout)
        forwarded = [json.loads(m) for m in receiver.wait_for(len(shown) + 1)]
    assert shown and all(r["RuleId"] for r in shown)  # the output: detections only
    signed_only = [r for r in forwarded if not r["RuleId"]]
    assert signed_only and all(r["IsSigned"] for r in signed_only)  # the sink: signed PEs
    assert {r["ReportId"] for r in shown} < {r["ReportId"] for r in forwarded}
    assert f"rows emitted: {len(forwarded)}" in done.stderr
