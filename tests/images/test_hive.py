"""The hive writer, read back by two independent readers: regipy and hivex (hivexget, hivexml),
which also checks the base block's checksum and the cells' sizes."""

from __future__ import annotations

import base64
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from regipy.registry import RegistryHive

from tests.images.hive import (
    REG_QWORD,
    Value,
    decoy_name,
    write_hive,
    write_software_hive,
    write_system_hive,
)


def hivexget(hive: Path, key: str, value: str) -> str:
    proc = subprocess.run(
        ["hivexget", str(hive), key, value], capture_output=True, timeout=30, check=True
    )
    return proc.stdout.decode("utf-8").rstrip("\n")


def values(hive: Path, key: str) -> dict[str, object]:
    return {v.name: v.value for v in RegistryHive(str(hive)).get_key(key).iter_values()}


def following_select(hive: Path) -> str:
    """The ComputerName of the control set Select\\Current names (a correct reader)."""
    h = RegistryHive(str(hive))
    current = h.get_key("\\Select").get_value("Current")
    key = h.get_key(f"\\ControlSet{current:03d}\\Control\\ComputerName\\ComputerName")
    return key.get_value("ComputerName")


@pytest.mark.parametrize("current", [1, 2])
def test_system_hive_names_the_machine_in_the_current_control_set(tmp_path, current):
    hive = write_system_hive(tmp_path / "SYSTEM", "Ws-Jürgen-01", "corp.example", current)
    other = 3 - current
    assert values(hive, "\\Select")["Current"] == current
    assert following_select(hive) == "WS-JÜRGEN-01"
    cur = values(hive, f"\\ControlSet00{current}\\Services\\Tcpip\\Parameters")
    assert cur["Hostname"] == "Ws-Jürgen-01"
    assert cur["Domain"] == "corp.example"
    old = values(hive, f"\\ControlSet00{other}\\Services\\Tcpip\\Parameters")
    assert old["Hostname"] == decoy_name("Ws-Jürgen-01") != "Ws-Jürgen-01"
    assert old["Domain"] != "corp.example"
    # A reader that hard-codes ControlSet001 is right only when Select\Current is 1.
    hard_coded = values(hive, "\\ControlSet001\\Control\\ComputerName\\ComputerName")
    assert (hard_coded["ComputerName"] == "WS-JÜRGEN-01") == (current == 1)
    # hivex agrees.
    assert hivexget(hive, "\\Select", "Current") == str(current)
    assert hivexget(
        hive, f"\\ControlSet00{current}\\Control\\ComputerName\\ComputerName", "ComputerName"
    ) == "WS-JÜRGEN-01"
    assert hivexget(
        hive, f"\\ControlSet00{other}\\Services\\Tcpip\\Parameters", "Hostname"
    ) == decoy_name("Ws-Jürgen-01")


def test_software_hive_holds_the_machine_guid(tmp_path):
    guid = "0f3e2d1c-b0a9-4877-9665-544332211000"
    hive = write_software_hive(tmp_path / "SOFTWARE", guid)
    assert values(hive, "\\Microsoft\\Cryptography")["MachineGuid"] == guid
    assert hivexget(hive, "\\Microsoft\\Cryptography", "MachineGuid") == guid


def test_base_block_checksum_and_bins(tmp_path):
    hive = write_system_hive(tmp_path / "SYSTEM", "HOST", "example.org")
    data = hive.read_bytes()
    assert data[:4] == b"regf"
    xor = 0
    for (dword,) in struct.iter_unpack("<I", data[:508]):
        xor ^= dword
    assert struct.unpack_from("<I", data, 0x1FC)[0] == xor
    bins_size = struct.unpack_from("<I", data, 0x28)[0]
    assert len(data) == 4096 + bins_size and bins_size % 4096 == 0
    assert data[4096:4100] == b"hbin"
    # Every cell's size is a multiple of 8 and the cells tile the bin exactly.
    off = 4096 + 0x20
    while off < len(data):
        size = abs(struct.unpack_from("<i", data, off)[0])
        assert size >= 8 and size % 8 == 0
        off += size
    assert off == len(data)
    # A corrupted checksum is refused by hivex: the check above is not vacuous.
    bad = bytearray(data)
    bad[0x1FC] ^= 1
    (tmp_path / "BAD").write_bytes(bad)
    proc = subprocess.run(
        ["hivexget", str(tmp_path / "BAD"), "\\Select", "Current"],
        capture_output=True, timeout=30, check=False,
    )
    assert proc.returncode != 0


def test_value_types_names_and_many_subkeys(tmp_path):
    many = {f"Sub{i:03d}": {"Index": i} for i in range(300)}
    keys = {
        "Types": {
            "": "the default value",
            "Sz": "text",
            "Empty": "",
            "Dword": 0xDEADBEEF,
            "Multi": ["one", "two", "三"],
            "Small": b"\x01\x02",
            "Binary": bytes(range(200)),
            "Qword": Value(REG_QWORD, struct.pack("<Q", 2**40 + 5)),
            "Grüße": "latin-1 name",
            "名前": "UTF-16 name",
        },
        "Ключ": {"Wert": "a key whose name is not Latin-1"},
        "Many": many,
    }
    hive = write_hive(tmp_path / "H", "ROOT", keys)
    got = values(hive, "\\Types")
    assert got["Sz"] == "text"
    assert got["Dword"] == 0xDEADBEEF
    assert got["Multi"] == ["one", "two", "三"]
    assert got["Qword"] == 2**40 + 5
    # Latin-1 names are stored compressed (8-bit), as Windows does; regipy decodes compressed
    # names as ASCII, so hivex is the oracle for that one (below).
    assert "Grüße" not in got
    assert got["名前"] == "UTF-16 name"
    assert values(hive, "\\Ключ")["Wert"] == "a key whose name is not Latin-1"
    # regipy reads every subkey of a 300-entry lh list, in the writer's (sorted) order.
    h = RegistryHive(str(hive))
    subs = [k.name for k in h.get_key("\\Many").iter_subkeys()]
    assert subs == sorted(many)
    assert h.get_key("\\Many\\Sub299").get_value("Index") == 299
    # hivexml lists every key and value, binary ones byte for byte.
    xml = subprocess.run(["hivexml", str(hive)], capture_output=True, timeout=30, check=True)
    root = ET.fromstring(xml.stdout)
    nodes = {n.get("name"): n for n in root.iter("node")}
    assert {"Types", "Ключ", "Many", "Sub000", "Sub299"} <= set(nodes)
    types = {v.get("key", ""): v for v in nodes["Types"].findall("value")}
    assert set(types) == set(keys["Types"])
    assert types["Binary"].get("type") == "binary"
    assert base64.b64decode(types["Binary"].get("value")) == bytes(range(200))
    assert hivexget(hive, "\\Types", "Grüße") == "latin-1 name"
    assert int(hivexget(hive, "\\Types", "Dword")) & 0xFFFFFFFF == 0xDEADBEEF  # printed signed
    assert hivexget(hive, "\\Types", "Empty") == ""


def test_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="big-data"):
        write_hive(tmp_path / "H", "ROOT", {"K": {"V": b"x" * 20000}})
    with pytest.raises(ValueError, match="case"):
        write_hive(tmp_path / "H", "ROOT", {"K": {}, "k": {}})
    with pytest.raises(ValueError):
        write_system_hive(tmp_path / "S", "H", "D", current=3)
