"""The configuration file: what `rmmscan config check` accepts, and how it says what is wrong.

Every check runs the real command on a real file; a message must name the file, the line,
the key and what to write instead, and must never show a secret.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "packaging" / "rmmscan.example.toml"
SECRET = "s3cr3t-Value-never-shown"


def _check(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rmmscan", "config", "check", str(path)],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, **(env or {})),
    )  # fmt: skip


def _write(tmp_path: Path, text: str, mode: int = 0o600, name: str = "rmmscan.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def _uncommented(text: str) -> str:
    """The example with every commented-out sink (and its keys) written in, so that the
    commented examples are checked too."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^# (\[sinks\.[^\]]+\]|[a-z_]+ = .*)$", line)
        out.append(m.group(1) if m else line)
    return "\n".join(out) + "\n"


def test_the_example_configuration_is_usable_as_shipped(tmp_path):
    path = _write(tmp_path, EXAMPLE.read_text("utf-8"))
    done = _check(path)
    assert done.returncode == 0, done.stderr
    assert "local: jsonl" in done.stdout and "soc-syslog: syslog" in done.stdout
    assert done.stderr == ""


def test_every_commented_example_in_it_is_usable_too(tmp_path):
    text = _uncommented(EXAMPLE.read_text("utf-8"))
    # One credential per sink: the first of each commented alternative is the one kept.
    text = re.sub(r"\n# client_secret_file.*|\n# certificate_file.*|\n# managed_identity.*",
                  "", text)  # fmt: skip
    text = re.sub(r"\n# token_file.*", "", text)
    text = re.sub(r"\n(ca_file|cert_file|key_file) = .*", "", text)  # files that are not here
    path = _write(tmp_path, text)
    done = _check(path, {"RMMSCAN_HEC_TOKEN": SECRET, "RMMSCAN_SENTINEL_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    for sink in ("local: jsonl", "soc-syslog: syslog", "splunk: hec", "sentinel: logs-ingestion"):
        assert sink in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_a_file_other_users_may_read_is_refused_with_the_fix(tmp_path):
    path = _write(tmp_path, EXAMPLE.read_text("utf-8"), mode=0o644)
    done = _check(path)
    assert done.returncode == 2
    assert f"{path}: the configuration file {path} may be read by other users (mode 0644)" in (
        done.stderr
    )
    assert f"chmod 600 {path}" in done.stderr


def test_every_problem_is_reported_with_its_line_key_and_remedy(tmp_path):
    path = _write(tmp_path, """\
flush_timeout = "soon"
exlude = ["/proc/*"]

[sinks.siem]
type = "syslog"
address = "collector"
transport = "quic"
facilty = "local0"

[sinks.web]
type = "hec"
url = "http://splunk:8088"
""")  # fmt: skip
    done = _check(path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    expected = [
        (1, "flush_timeout", 'must be seconds, or a number with a unit: "500ms"'),
        (2, "exlude", "unknown key: the top level takes agent, allowlist, distrust, exclude"),
        (6, "sinks.siem.address", 'must be "host:port"'),
        (7, "sinks.siem.transport", 'must be one of "udp", "tcp", "tls"'),
        (8, "sinks.siem.facilty", "unknown key: a syslog sink takes"),
        (10, "sinks.web", "needs token_env (an environment variable's name) or token_file"),
        (12, "sinks.web.url", "must start with https://"),
    ]
    assert len(lines) == len(expected), done.stderr
    for line, (number, key, words) in zip(lines, expected, strict=True):
        assert line.startswith(f"rmmscan: {path}:{number}: {key}: "), line
        assert words in line, line


def test_invalid_toml_names_its_line(tmp_path):
    path = _write(tmp_path, 'flush_timeout = "30s"\n[sinks.a\ntype = "jsonl"\n')
    done = _check(path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"rmmscan: {path}:2: not valid TOML: "), done.stderr


def test_text_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'flush_timeout = "30s"\nexclude = ["/d\xe9p\xf4t"]\n')
    path.chmod(0o600)
    done = _check(path)
    assert done.returncode == 2
    assert f"{path}:2: not UTF-8 text" in done.stderr


@pytest.mark.parametrize("mode", [0o600, 0o640])
def test_secrets_come_from_the_environment_or_a_private_file_and_are_never_shown(
    tmp_path, mode
):
    secret = tmp_path / "hec.token"
    secret.write_text(SECRET + "\n")
    secret.chmod(mode)
    body = f"""\
[sinks.splunk]
type = "hec"
url = "https://127.0.0.1:8088"
token_file = "{secret.name}"
index = 5
"""
    done = _check(_write(tmp_path, body))
    assert done.returncode == 2
    assert SECRET not in done.stdout + done.stderr
    assert "sinks.splunk.index: must be a non-empty string" in done.stderr
    if mode & 0o044:
        assert f"the secret file {secret} may be read by other users (mode 0640)" in done.stderr
        assert f"chmod 600 {secret}" in done.stderr
    else:
        assert "secret file" not in done.stderr


def test_a_secret_variable_that_is_not_set_is_a_problem(tmp_path):
    body = """\
[sinks.splunk]
type = "hec"
url = "https://127.0.0.1:8088"
token_env = "RMMSCAN_TEST_UNSET_TOKEN"
"""
    env = {k: v for k, v in os.environ.items() if k != "RMMSCAN_TEST_UNSET_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "rmmscan", "config", "check", str(_write(tmp_path, body))],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert ":4: sinks.splunk.token_env: the environment variable RMMSCAN_TEST_UNSET_TOKEN is " \
        "not set, or is empty" in done.stderr  # fmt: skip


def test_a_logs_ingestion_sink_needs_exactly_one_credential(tmp_path):
    body = """\
[sinks.sentinel]
type = "logs-ingestion"
endpoint = "https://dce.example"
rule_id = "dcr-1"
managed_identity = true
certificate_file = "cert.pem"
"""
    done = _check(_write(tmp_path, body))
    assert done.returncode == 2
    assert ":1: sinks.sentinel: needs exactly one credential" in done.stderr
    assert "(found: certificate_file, managed_identity)" in done.stderr


def test_insecure_tls_is_warned_about(tmp_path):
    body = """\
[sinks.siem]
type = "syslog"
address = "127.0.0.1:6514"
transport = "tls"
insecure_skip_tls_verify = true
"""
    done = _check(_write(tmp_path, body))
    assert done.returncode == 0, done.stderr
    assert "sinks.siem" not in done.stderr
    assert "sink siem: insecure_skip_tls_verify = true: the receiver's TLS certificate is " \
        "not checked" in done.stderr  # fmt: skip


def test_tls_keys_on_a_plain_transport_are_a_problem(tmp_path):
    body = """\
[sinks.siem]
type = "syslog"
address = "127.0.0.1:514"
transport = "udp"
ca_file = "ca.pem"
"""
    done = _check(_write(tmp_path, body))
    assert done.returncode == 2
    assert ':5: sinks.siem.ca_file: applies to transport = "tls" only' in done.stderr


def test_durations_take_units():
    from rmmscan.config.schema import duration

    assert duration(30) == 30.0
    assert duration("90s") == 90.0
    assert duration("5m") == 300.0
    assert duration("1h") == 3600.0
    assert duration("500ms") == 0.5
    for bad in ("5 minutes", "-1s", True, -3):
        with pytest.raises(Exception, match="must be seconds"):
            duration(bad)


def test_the_agent_table_is_checked_like_the_rest(tmp_path):
    path = _write(tmp_path, """[agent]
roots = ["/srv", "data"]
rescan_interval = "90m"
process_interval = 0
max_cpu_percent = 0
nice = 20
settle = "soon"
watch = "yes"
log = "agent.log"
heartbeat = "5m"
""")
    done = _check(path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert any(":5: agent.max_cpu_percent: must be a number above 0 and at most 100" in x
               for x in lines)  # fmt: skip
    assert any(":6: agent.nice: must be a whole number from 0" in x for x in lines)
    assert any(":7: agent.settle: must be seconds, or a number with a unit" in x for x in lines)
    assert any(":8: agent.watch: must be true or false" in x for x in lines)
    assert any(":10: agent.heartbeat: unknown key: [agent] takes" in x for x in lines)
    assert len(lines) == 5, done.stderr


def test_the_agent_table_gives_typed_values():
    from rmmscan.config.schema import _Checker
    from rmmscan.config.source import KeyLines

    base = Path("/etc/rmmscan/rmmscan.toml")
    checker = _Checker(base, KeyLines(""))
    agent = checker.agent({"roots": ["/srv", "data"], "rescan_interval": "90m",
                           "process_interval": 0, "log": "agent.log"})  # fmt: skip
    assert not checker.problems
    assert agent.roots == ("/srv", "/etc/rmmscan/data")
    assert agent.rescan_interval == 5400 and agent.process_interval == 0
    assert agent.log == Path("/etc/rmmscan/agent.log")
    assert agent.max_cpu_percent == 25 and agent.nice == 10 and agent.watch is True
