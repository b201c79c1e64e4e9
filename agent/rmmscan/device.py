"""Who this device is: DeviceId and DeviceName as Defender shows them."""

from __future__ import annotations

import hashlib
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    device_name: str


def machine_id() -> str | None:
    """The OS's own identity (MachineGuid on Windows, machine-id on Linux), survives reinstalls
    of rmmscan."""
    if sys.platform == "win32":
        try:
            import winreg

            with winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography"
            ) as key:
                return str(winreg.QueryValueEx(key, "MachineGuid")[0])
        except OSError:
            return None
    for name in _MACHINE_ID_FILES:
        try:
            value = Path(name).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return None


def device_id_from(machine: str) -> str:
    return hashlib.sha1(f"rmmscan-device:{machine.strip().lower()}".encode()).hexdigest()


def local_device(state) -> Device:
    """Derived from the machine id; without one, a random id persisted in the state dir."""
    machine = machine_id()
    if machine:
        device_id = device_id_from(machine)
    else:
        device_id = state.setdefault("device_id", device_id_from(str(uuid.uuid4())))
    return Device(device_id, socket.getfqdn().lower())
