"""packaging/macos/com.rmmscan.agent.plist, checked on Linux (launchd is macOS only).

The plist must parse (plistlib, the format launchd reads), use only keys launchd knows with
the types launchd.plist(5) gives them (launchd ignores a misspelt key without a word), and
start a command rmmscan's own argument parser takes: `rmmscan agent --config FILE`. Whether
launchd loads it, and how the agent runs under it, is not tested anywhere.
"""

from __future__ import annotations

import plistlib
from pathlib import Path

from rmmscan.cli.main import _parser

from conftest import ROOT

PLIST = ROOT / "packaging" / "macos" / "com.rmmscan.agent.plist"
# launchd.plist(5): each key this plist uses, and its type.
KEYS = {
    "Label": str,
    "ProgramArguments": list,
    "RunAtLoad": bool,
    "KeepAlive": bool,
    "ThrottleInterval": int,
    "ExitTimeOut": int,
    "ProcessType": str,
    "LowPriorityIO": bool,
    "Nice": int,
    "Umask": int,
    "StandardErrorPath": str,
}
PROCESS_TYPES = {"Background", "Standard", "Adaptive", "Interactive"}


def plist() -> dict:
    with PLIST.open("rb") as f:
        return plistlib.load(f)


def test_the_plist_parses_with_known_keys_of_the_right_types():
    found = plist()
    assert set(found) <= set(KEYS), set(found) - set(KEYS)
    for key, value in found.items():
        assert type(value) is KEYS[key], (key, value)
    assert found["Label"] == "com.rmmscan.agent" == PLIST.stem
    assert found["ProcessType"] in PROCESS_TYPES


def test_it_runs_the_agent_in_the_background_and_restarts_it():
    found = plist()
    assert found["RunAtLoad"] is True and found["KeepAlive"] is True
    assert found["ProcessType"] == "Background"
    assert found["LowPriorityIO"] is True and found["Nice"] == 10
    assert found["ExitTimeOut"] > 5  # the agent stops within 5 s of SIGTERM
    assert found["Umask"] == 0o077


def test_its_command_is_one_rmmscan_parses():
    program, *argv = plist()["ProgramArguments"]
    assert program == "/usr/local/bin/rmmscan"
    assert all(isinstance(a, str) for a in argv)
    args = _parser().parse_args(argv)  # an unknown command or option exits here
    assert args.command == "agent"
    assert args.config == Path("/usr/local/etc/rmmscan/rmmscan.toml")
    assert not args.install_service and not args.uninstall_service
