"""DeviceName is the machine's fully qualified name as the OS reports it, lower case: never
"localhost" or an address because /etc/hosts maps the host name to 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rmmscan.sources.device import choose_name

from conftest import PE_DIR


@pytest.mark.parametrize(
    ("hostname", "canonical", "expected"),
    [
        ("vm", "localhost", "vm"),  # /etc/hosts: "127.0.0.1 localhost vm"
        ("vm", "localhost.localdomain", "vm"),
        ("vm", "127.0.0.1", "vm"),
        ("vm", "::1", "vm"),
        ("vm", None, "vm"),  # no resolver
        ("vm", "vm", "vm"),
        ("vm", "vm.", "vm"),
        ("vm", "other.example.com", "vm"),  # another machine's name is not this one's
        ("vm", "vmware.example.com", "vm"),  # extends the text, not the name
        ("VM", "vm.corp.example.com", "vm.corp.example.com"),
        ("DESKTOP-AB12CD", "DESKTOP-AB12CD.contoso.local.", "desktop-ab12cd.contoso.local"),
        ("web01.corp.example.com", "localhost", "web01.corp.example.com"),  # already an FQDN
        ("Web01.Corp.Example.com.", None, "web01.corp.example.com"),
        ("10.0.0.5", "localhost", "10.0.0.5"),  # nothing better to say
        ("localhost", "localhost.localdomain", "localhost"),
    ],
)
def test_choose_name(hostname, canonical, expected):
    assert choose_name(hostname, canonical) == expected


HOSTS = "127.0.0.1 localhost vm\n::1 localhost ip6-localhost ip6-loopback\n"


def _in_namespace(tmp_path, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` with host name vm and an /etc/hosts mapping 127.0.0.1 to
    "localhost vm" first, in a private UTS and mount namespace (the host is untouched)."""
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    script = f"hostname vm && mount --bind {hosts} /etc/hosts && {command}"
    return subprocess.run(
        ["unshare", "--uts", "--mount", "sh", "-c", script], capture_output=True, text=True
    )


def test_device_name_is_not_localhost_where_etc_hosts_says_so(tmp_path):
    trap = _in_namespace(tmp_path, f"{sys.executable} -c 'import socket; print(socket.getfqdn())'")
    assert trap.returncode == 0, trap.stderr
    assert trap.stdout.strip() == "localhost", "the namespace reproduces the trap"
    state = tmp_path / "state"
    done = _in_namespace(
        tmp_path,
        f"{sys.executable} -m rmmscan inspect --format jsonl --state-dir {state} "
        f"{PE_DIR / 'dwsnet-srl.exe'}",
    )
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    name = row["DeviceName"]
    assert name == "vm" or name.startswith("vm."), name
