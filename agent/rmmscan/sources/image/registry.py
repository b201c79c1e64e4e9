"""Who the imaged machine is, from its own registry: DeviceName and DeviceId as the machine
itself would have reported them (sources/device.py), read with regipy.

The Windows volume is the one holding Windows\\System32\\config\\SYSTEM. DeviceName is the
DNS name Defender shows: the host name (Tcpip\\Parameters\\Hostname, else
ComputerName\\ComputerName) and the primary DNS suffix (Tcpip\\Parameters\\Domain) of the
current control set (Select\\Current), lower case. DeviceId is derived from SOFTWARE's
Microsoft\\Cryptography\\MachineGuid exactly as device.py derives it on a live machine, so a
machine scanned live and from its image has one DeviceId. A hive is read whole into memory,
at most HIVE_MAX bytes; transaction logs are not replayed (the hives as last flushed).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from ..device import Device, choose_name, device_id_from, machine_guid

HIVE_MAX = 256 * 1024 * 1024
CONFIG = "/Windows/System32/config"


@dataclass(frozen=True)
class Identity:
    device: Device
    how: str  # where it came from, for the log: "registry" or the fallback's reason


def has_system_hive(fs) -> bool:
    try:
        entry = fs.open(f"{CONFIG}/SYSTEM")
    except (OSError, RuntimeError):
        return False
    meta = entry.info.meta
    return meta is not None and int(meta.size) > 0


def read_hive(fs, name: str) -> bytes:
    """The hive file's unnamed data stream, bounded by HIVE_MAX."""
    entry = fs.open(f"{CONFIG}/{name}")
    size = int(entry.info.meta.size)
    if not 0 < size <= HIVE_MAX:
        raise ValueError(f"{name} hive of {size:,} bytes (at most {HIVE_MAX:,} are read)")
    data = entry.read_random(0, size)
    if len(data) != size:
        raise OSError(f"{name} hive: {len(data):,} of {size:,} bytes could be read")
    return data


def _hive(data: bytes):
    """regipy opens a path and reads it whole: it is given a private temporary file."""
    from regipy.registry import RegistryHive

    with tempfile.TemporaryFile() as tmp:
        tmp.write(data)
        tmp.flush()
        tmp.seek(0)
        return RegistryHive(os.dup(tmp.fileno()))


def _value(hive, key: str, name: str):
    """(value, type number) or None: regipy's names for types mapped back to winreg's."""
    try:
        for value in hive.get_key(key).iter_values():
            if value.name.lower() == name.lower():
                return value.value, _TYPES.get(value.value_type, -1)
    except Exception:  # regipy raises its own exceptions (and bare ones) for missing keys
        return None
    return None


_TYPES = {"REG_SZ": 1, "REG_EXPAND_SZ": 2, "REG_BINARY": 3, "REG_DWORD": 4, "REG_MULTI_SZ": 7}


def _text(found) -> str:
    if found is None:
        return ""
    value, kind = found
    return value.strip().rstrip("\x00") if kind in (1, 2) and isinstance(value, str) else ""


def device_name_from(system: bytes) -> str:
    hive = _hive(system)
    current = _value(hive, r"\Select", "Current")
    if current is None or not isinstance(current[0], int) or not 0 < current[0] < 1000:
        raise ValueError(r"SYSTEM hive: no Select\Current")
    control = rf"\ControlSet{current[0]:03d}"
    tcpip = rf"{control}\Services\Tcpip\Parameters"
    host = _text(_value(hive, tcpip, "Hostname")) or _text(
        _value(hive, rf"{control}\Control\ComputerName\ComputerName", "ComputerName")
    )
    if not host:
        raise ValueError("SYSTEM hive: no computer name")
    domain = _text(_value(hive, tcpip, "Domain"))
    return choose_name(f"{host}.{domain}" if domain else host, None)


def machine_id_from(software: bytes) -> str | None:
    found = _value(_hive(software), r"\Microsoft\Cryptography", "MachineGuid")
    return None if found is None else machine_guid(*found)


def identity(fs, evidence_name: str, evidence_id: str, warn) -> Identity:
    """The machine of the Windows volume ``fs`` (None: there is none): read from its hives;
    what cannot be read falls back to the evidence, with a warning."""
    fallback_name = evidence_name.lower()
    fallback_id = device_id_from(f"evidence:{evidence_id}")
    if fs is None:
        return Identity(Device(fallback_id, fallback_name), "no Windows volume")
    try:
        name = device_name_from(read_hive(fs, "SYSTEM"))
    except Exception as exc:  # a damaged hive must not stop the scan of its volume
        warn(f"DeviceName from the evidence's name: the SYSTEM hive cannot be read ({exc})")
        name = fallback_name
    try:
        machine = machine_id_from(read_hive(fs, "SOFTWARE"))
    except Exception as exc:
        warn(f"DeviceId from the evidence id: the SOFTWARE hive cannot be read ({exc})")
        machine = None
    device_id = device_id_from(machine) if machine else fallback_id
    return Identity(Device(device_id, name), "registry")
