"""`rmmscan scan --config` forwarding to Splunk HEC and to Sentinel's Logs Ingestion API, both
local HTTPS servers that keep the services' contracts (tests/receivers/https.py), reached only
through the configuration's documented keys (url, endpoint, authority, ca_file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.receivers.https import EntraReceiver, HecReceiver, LogsIngestionReceiver
from tests.receivers.pki import Pki, make_pki

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
TEST_ROOT = SAMPLES / "pki" / "test-root.pem"
TOKEN = "hec-token-0a1b2c3d-never-shown"
SECRET = "entra~client.secret-never-shown"
CLIENT = "6a1f0c55-0000-4000-8000-0000000c1e47"
RULE = "dcr-00112233445566778899aabbccddeeff"
STREAM = "Custom-RmmScanFileCertificateInfo_CL"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def entra(pki):
    receiver = EntraReceiver(pki)
    receiver.register_secret(CLIENT, SECRET)
    with receiver:
        yield receiver


@pytest.fixture
def hec(pki):
    with HecReceiver(pki, TOKEN) as receiver:
        yield receiver


@pytest.fixture
def sentinel(pki, entra):
    with LogsIngestionReceiver(pki, entra, RULE, STREAM) as receiver:
        yield receiver


def _config(tmp_path: Path, pki: Pki, hec=None, sentinel=None, entra=None) -> Path:
    token = tmp_path / "hec.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    text = f'state_dir = "{tmp_path / "state"}"\n'
    if hec is not None:
        text += (
            "[sinks.splunk]\n"
            'type = "hec"\n'
            f'url = "{hec.url}"\n'
            'token_file = "hec.token"\n'
            f'ca_file = "{pki.ca}"\n'
            'emit = "all"\n'
            'index = "edr"\n'
        )
    if sentinel is not None:
        text += (
            "[sinks.sentinel]\n"
            'type = "logs-ingestion"\n'
            f'endpoint = "{sentinel.url}"\n'
            f'rule_id = "{RULE}"\n'
            f'tenant_id = "{entra.tenant}"\n'
            f'client_id = "{CLIENT}"\n'
            'client_secret_env = "RMMSCAN_TEST_SENTINEL_SECRET"\n'
            f'authority = "{entra.url}"\n'
            f'ca_file = "{pki.ca}"\n'
        )
    path = tmp_path / "rmmscan.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _scan(config: Path, *paths, flush: str = "30s") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rmmscan", "scan", *map(str, paths), "--config", str(config),
         "--format", "jsonl", "--emit", "all", "--no-cache", "--trusted-roots", str(TEST_ROOT),
         "--no-system-roots", "--flush-timeout", flush],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, RMMSCAN_TEST_SENTINEL_SECRET=SECRET),
    )  # fmt: skip


def _rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_sweep_feeds_splunk_and_sentinel_at_once(tmp_path, pki, hec, sentinel, entra):
    done = _scan(_config(tmp_path, pki, hec, sentinel, entra), SAMPLES / "pe")
    assert done.returncode == 1, done.stderr
    shown = _rows(done.stdout)
    detections = [r for r in shown if r["RuleId"]]
    assert detections and len(detections) < len(shown)
    # Splunk takes every row (emit = "all"), in its envelope.
    assert sorted(hec.wait_rows(len(shown)), key=lambda r: r["ReportId"]) == shown
    assert {e["index"] for e in hec.events} == {"edr"}
    assert {e["host"] for e in hec.events} == {shown[0]["DeviceName"]}
    # Sentinel takes the detections (the default), each with TimeGenerated.
    got = sorted(sentinel.wait_rows(len(detections)), key=lambda r: r["ReportId"])
    assert [r.pop("TimeGenerated") for r in got] == [r["Timestamp"] for r in detections]
    assert got == detections
    assert "forwarded to splunk (hec https://127.0.0.1:" in done.stderr
    assert f"{len(shown)} rows written, {len(shown)} delivered, 0 waiting" in done.stderr
    assert f"{len(detections)} rows written, {len(detections)} delivered, 0 waiting" in (
        done.stderr
    )
    assert TOKEN not in done.stderr + done.stdout and SECRET not in done.stderr + done.stdout


def test_a_refused_row_is_set_aside_and_the_others_go_on(tmp_path, pki, hec):
    hec.refuse_marker("dwsnet-srl.exe")
    config = _config(tmp_path, pki, hec)
    done = _scan(config, SAMPLES / "pe")
    assert done.returncode == 1, done.stderr  # found, and not all delivered: still 1
    shown = _rows(done.stdout)
    refused = [r for r in shown if "dwsnet-srl.exe" in json.dumps(r, ensure_ascii=False)]
    assert refused
    received = hec.wait_rows(len(shown) - len(refused))
    assert sorted(r["ReportId"] for r in received) == sorted(
        r["ReportId"] for r in shown if r not in refused
    )
    assert f"{len(refused)} set aside" in done.stderr
    assert "a row was refused and set aside: HTTP 400: " in done.stderr
    status = subprocess.run(
        [sys.executable, "-m", "rmmscan", "outbox", "status", "--config", str(config),
         "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    splunk = json.loads(status.stdout)["sinks"][0]
    assert (splunk["waiting"], splunk["aside"]) == (0, len(refused))
    assert "Invalid data format" in splunk["last_refusal"]
    assert TOKEN not in status.stdout


def test_retry_after_is_honoured_and_then_every_row_arrives(tmp_path, pki, hec):
    hec.fail_next(1, 429, retry_after="3")
    began = time.monotonic()
    done = _scan(_config(tmp_path, pki, hec), SAMPLES / "pe" / "dwsnet-ou.exe")
    took = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    shown = _rows(done.stdout)
    assert sorted(hec.wait_rows(len(shown)), key=lambda r: r["ReportId"]) == shown
    assert [r.status for r in hec.requests] == [429, 200]
    assert took >= 3.0  # it waited as asked before sending again


def test_a_bad_secret_keeps_the_rows_and_says_why(tmp_path, pki, sentinel, entra):
    config = _config(tmp_path, pki, sentinel=sentinel, entra=entra)
    done = subprocess.run(
        [sys.executable, "-m", "rmmscan", "scan", str(SAMPLES / "pe" / "dwsnet-ou.exe"),
         "--config", str(config), "--format", "jsonl", "--no-cache", "--trusted-roots",
         str(TEST_ROOT), "--no-system-roots", "--flush-timeout", "2s"],
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, RMMSCAN_TEST_SENTINEL_SECRET="not-the-secret"),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    shown = _rows(done.stdout)
    assert f"sink sentinel: {len(shown)} rows wait in the outbox" in done.stderr
    assert "AADSTS" in done.stderr  # Entra ID's own answer, for the operator
    assert "not-the-secret" not in done.stderr and SECRET not in done.stderr
    assert sentinel.rows == []
    # With the right secret, the next run delivers them, and its own.
    again = _scan(config, SAMPLES / "pe" / "dwsnet-ou.exe")
    assert again.returncode == 1, again.stderr
    got = sentinel.wait_rows(2 * len(shown))
    assert len(got) == 2 * len(shown)
