"""Who this device is: DeviceId and DeviceName as Defender shows them."""

from __future__ import annotations

import hashlib
import ipaddress
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

            # The 64-bit view: a 32-bit Python would otherwise read WOW6432Node's copy of the
            # key, which has no MachineGuid.
            with winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE,
                r"SOFTWARE\Microsoft\Cryptography",
                0,
                winreg.KEY_READ | winreg.KEY_WOW64_64KEY,
            ) as key:
                value, kind = winreg.QueryValueEx(key, "MachineGuid")
        except OSError:
            return None
        return machine_guid(value, kind)
    for name in _MACHINE_ID_FILES:
        try:
            value = usable_id(Path(name).read_text())
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    return None


_REG_SZ, _REG_EXPAND_SZ = 1, 2  # winreg's constants, here too: this part runs on every OS


def machine_guid(value: object, kind: int) -> str | None:
    """The machine id from MachineGuid as winreg.QueryValueEx gives it (value, type): a
    string value only. Another type (a damaged or tampered key) is no identity: None, and the
    state dir keeps a random one."""
    if kind not in (_REG_SZ, _REG_EXPAND_SZ) or not isinstance(value, str):
        return None
    return usable_id(value)


# machine-id(5): "uninitialized" marks an image whose first boot has not run. Where systemd
# never boots it (a container) it stays, and every copy of the image would share a DeviceId.
_NOT_AN_ID = frozenset({"", "uninitialized"})


def usable_id(text: str) -> str | None:
    """A machine id as read, without surrounding white space; None when it names no machine."""
    value = text.strip()
    return None if value.lower() in _NOT_AN_ID else value


def device_id_from(machine: str) -> str:
    return hashlib.sha1(f"rmmscan-device:{machine.strip().lower()}".encode()).hexdigest()


def local_device(state) -> Device:
    """Derived from the machine id; without one, a random id persisted in the state dir."""
    machine = machine_id()
    if machine:
        device_id = device_id_from(machine)
    else:
        device_id = state.setdefault("device_id", device_id_from(str(uuid.uuid4())))
    return Device(device_id, device_name())


def device_name() -> str:
    """The machine's fully qualified name as the OS reports it, lower case (DeviceName).

    Not socket.getfqdn(): it resolves the name back through /etc/hosts, where a line such as
    "127.0.0.1 localhost vm" makes every such machine "localhost". On Windows, Defender shows
    the DNS name: the host name plus the primary DNS suffix.
    """
    if sys.platform == "win32":
        name = _windows_dns_name()
        if name:
            return choose_name(name, None)
    hostname = socket.gethostname()
    canonical = None
    if hostname and "." not in hostname:
        try:
            infos = socket.getaddrinfo(hostname, None, flags=socket.AI_CANONNAME)
            canonical = next((info[3] for info in infos if info[3]), None)
        except (OSError, UnicodeError):  # no resolver, or a name it refuses
            canonical = None
    return choose_name(hostname, canonical)


_LOCALHOST = ("localhost", "ip6-localhost", "ip6-loopback")


def _localhost_like(name: str) -> bool:
    first = name.split(".", 1)[0]
    return first in _LOCALHOST or first.startswith("localhost")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return True


def choose_name(hostname: str, canonical: str | None) -> str:
    """DeviceName from the host name and the resolver's canonical name for it (or None).

    A host name with a dot is already fully qualified. Otherwise the canonical name counts
    only when it extends the host name ("vm" → "vm.corp.example"): a resolver's answer of
    "localhost", an address, or another machine's name is not this machine's name, and the
    plain host name is.
    """
    host = hostname.strip().rstrip(".").lower()
    if "." in host and not _is_address(host):
        return host
    name = (canonical or "").strip().rstrip(".").lower()
    if (
        host
        and name.startswith(host + ".")
        and not _localhost_like(name)
        and not _is_address(name)
    ):
        return name
    return host


def _windows_dns_name() -> str | None:
    """GetComputerNameExW(ComputerNameDnsFullyQualified): host name + primary DNS suffix."""
    import ctypes

    size = ctypes.c_ulong(0)
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    kernel32.GetComputerNameExW(3, None, ctypes.byref(size))
    if not size.value:
        return None
    buffer = ctypes.create_unicode_buffer(size.value)
    if not kernel32.GetComputerNameExW(3, buffer, ctypes.byref(size)):
        return None
    return buffer.value or None
