"""A minimal writer of Windows registry hives (the regf format), for the image tests.

No tool creates a hive from nothing, so the tests write their own SYSTEM and SOFTWARE hives. The
layout follows the published regf format (libregf's "Windows NT Registry File (REGF) format"):

* a 4096-byte base block: ``regf``, equal primary and secondary sequence numbers (a clean hive,
  no pending log), version 1.5, the root cell's offset, the size of the hive bins, and the XOR
  checksum of its first 508 bytes at 0x1FC;
* one hive bin (``hbin``, a multiple of 4096 bytes) holding the cells, each an i32 size
  (negative while allocated, a multiple of 8) then its data, the rest of the bin one free cell;
* one ``nk`` cell per key, ``lh`` subkey lists (sorted by upper-cased name, each entry with the
  name hash), a value list per key with values, one ``vk`` cell per value, its data in the vk
  cell's offset field when it is 4 bytes or fewer, otherwise in a data cell;
* one ``sk`` security cell (a minimal self-relative descriptor) shared by every key.

Names that fit Latin-1 are stored as compressed (8-bit) names, others as UTF-16LE, as Windows
does. Values larger than 16344 bytes (which need ``db`` big-data cells) are refused.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REG_NONE = 0
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_MULTI_SZ = 7
REG_QWORD = 11

HBIN_START = 0x1000
NO_CELL = 0xFFFFFFFF
MAX_INLINE_DATA = 16344
# 2026-01-01T00:00:00Z as a FILETIME: every key's last-written time.
FILETIME = (1767225600 + 11644473600) * 10_000_000

KEY_HIVE_ENTRY = 0x0004
KEY_NO_DELETE = 0x0008
KEY_COMP_NAME = 0x0020
VALUE_COMP_NAME = 0x0001


@dataclass(frozen=True)
class Value:
    """A value of an explicit type: ``data`` is its raw bytes as stored in the hive."""

    type: int
    data: bytes


# A key is a mapping of names to subkeys (a Mapping) or values: str is REG_SZ, int REG_DWORD,
# bytes REG_BINARY, list/tuple of str REG_MULTI_SZ, Value anything else.
Keys = Mapping[str, object]


def encode_value(value: object) -> Value:
    if isinstance(value, Value):
        return value
    if isinstance(value, bool):
        raise TypeError("a bool is not a registry value")
    if isinstance(value, str):
        return Value(REG_SZ, (value + "\0").encode("utf-16-le"))
    if isinstance(value, int):
        return Value(REG_DWORD, struct.pack("<I", value))
    if isinstance(value, bytes):
        return Value(REG_BINARY, value)
    if isinstance(value, (list, tuple)) and all(isinstance(s, str) for s in value):
        return Value(REG_MULTI_SZ, ("".join(s + "\0" for s in value) + "\0").encode("utf-16-le"))
    raise TypeError(f"cannot store {type(value).__name__} in a hive")


def _name(name: str) -> tuple[bytes, bool]:
    """The stored name and whether it is compressed (Latin-1)."""
    try:
        return name.encode("latin-1"), True
    except UnicodeEncodeError:
        return name.encode("utf-16-le"), False


def lh_hash(name: str) -> int:
    h = 0
    for ch in name.upper():
        h = (h * 37 + ord(ch)) & 0xFFFFFFFF
    return h


def checksum(base_block: bytes) -> int:
    x = 0
    for (dword,) in struct.iter_unpack("<I", base_block[:508]):
        x ^= dword
    if x == 0xFFFFFFFF:
        return 0xFFFFFFFE
    if x == 0:
        return 1
    return x


def _security_descriptor() -> bytes:
    # Self-relative, no owner, group, SACL or DACL: revision 1, control SE_SELF_RELATIVE.
    return struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)


class _Bin:
    """Cells appended in order; offsets are relative to the first hbin (as the hive stores)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def offset(self) -> int:
        return 0x20 + len(self.data)

    def add(self, payload: bytes) -> int:
        off = self.offset()
        size = (4 + len(payload) + 7) // 8 * 8
        self.data += struct.pack("<i", -size) + payload + b"\0" * (size - 4 - len(payload))
        return off

    def patch(self, off: int, at: int, fmt: str, *vals: object) -> None:
        struct.pack_into(fmt, self.data, off - 0x20 + 4 + at, *vals)


def _split(keys: Keys) -> tuple[list[tuple[str, Keys]], list[tuple[str, Value]]]:
    subkeys: list[tuple[str, Keys]] = []
    values: list[tuple[str, Value]] = []
    for name, item in keys.items():
        if isinstance(item, Mapping):
            if not name or "\\" in name or len(name) > 255:
                raise ValueError(f"bad key name {name!r}")
            subkeys.append((name, item))
        else:
            values.append((name, encode_value(item)))
    upper = [n.upper() for n, _ in subkeys]
    if len(set(upper)) != len(upper):
        raise ValueError("subkey names differ only by case")
    subkeys.sort(key=lambda kv: kv[0].upper())
    return subkeys, values


def _write_key(b: _Bin, name: str, keys: Keys, parent: int, sk: int | bytes, root: bool) -> int:
    """Writes a key and its subtree; for the root, ``sk`` is the sk cell to place right after it
    (regipy, like Windows, expects the root key to be the first cell)."""
    subkeys, values = _split(keys)
    raw_name, compressed = _name(name)
    flags = (KEY_COMP_NAME if compressed else 0) | (KEY_HIVE_ENTRY | KEY_NO_DELETE if root else 0)
    max_sub = max((len(n) * 2 for n, _ in subkeys), default=0)
    max_val_name = max((len(n) * 2 for n, _ in values), default=0)
    max_data = max((len(v.data) for _, v in values), default=0)
    sk_off = sk if isinstance(sk, int) else NO_CELL
    nk = struct.pack(
        "<2sHQIIIIIIIIIIIIIIIHH",
        b"nk", flags, FILETIME, 0, parent, len(subkeys), 0, NO_CELL, NO_CELL,
        len(values), NO_CELL, sk_off, NO_CELL, max_sub, 0, max_val_name, max_data, 0,
        len(raw_name), 0,
    ) + raw_name
    me = b.add(nk)
    if root:
        assert isinstance(sk, bytes)
        sk_cell = sk
        sk = b.offset()
        # One sk cell, its own flink and blink, referenced by every key.
        b.add(sk_cell[:4] + struct.pack("<II", sk, sk) + sk_cell[12:])
        b.patch(me, 0x2C, "<I", sk)
    # Values: vk cells (and data cells), then the value list.
    if values:
        vks = []
        for vname, val in values:
            if len(val.data) > MAX_INLINE_DATA:
                raise ValueError(f"value {vname!r} needs big-data cells, not written here")
            raw_vname, vcomp = _name(vname)
            if len(val.data) <= 4:
                size_field = len(val.data) | 0x80000000
                data_field = int.from_bytes(val.data.ljust(4, b"\0"), "little")
            else:
                size_field = len(val.data)
                data_field = b.add(val.data)
            vk = struct.pack(
                "<2sHIIIHH", b"vk", len(raw_vname), size_field, data_field, val.type,
                VALUE_COMP_NAME if vcomp else 0, 0,
            ) + raw_vname
            vks.append(b.add(vk))
        vlist = b.add(struct.pack(f"<{len(vks)}I", *vks))
        b.patch(me, 0x28, "<I", vlist)
    if subkeys:
        children = [(n, _write_key(b, n, k, me, sk, False)) for n, k in subkeys]
        lh = struct.pack("<2sH", b"lh", len(children)) + b"".join(
            struct.pack("<II", off, lh_hash(n)) for n, off in children
        )
        b.patch(me, 0x1C, "<I", b.add(lh))
    return me


def hive_bytes(root_name: str, tree_of_keys: Keys) -> bytes:
    """The whole hive file for a root key named ``root_name`` holding ``tree_of_keys``."""
    b = _Bin()
    sd = _security_descriptor()
    count = _count_keys(tree_of_keys) + 1
    sk_cell = struct.pack("<2sHIIII", b"sk", 0, 0, 0, count, len(sd)) + sd
    root = _write_key(b, root_name, tree_of_keys, NO_CELL, sk_cell, True)
    used = 0x20 + len(b.data)
    bin_size = (used + 0xFFF) // 0x1000 * 0x1000
    if bin_size - used < 8:
        bin_size += 0x1000
    free = bin_size - used
    cells = bytes(b.data) + struct.pack("<i", free) + b"\0" * (free - 4)
    hbin = struct.pack("<4sIIQQI", b"hbin", 0, bin_size, 0, FILETIME, 0) + cells
    assert len(hbin) == bin_size
    base = bytearray(0x1000)
    struct.pack_into(
        "<4sIIQIIIIIII", base, 0, b"regf", 1, 1, FILETIME, 1, 5, 0, 1, root, bin_size, 1,
    )
    base[0x30 : 0x30 + 64] = root_name.encode("utf-16-le")[:64].ljust(64, b"\0")
    struct.pack_into("<I", base, 0x1FC, checksum(bytes(base)))
    return bytes(base) + hbin


def _count_keys(keys: Keys) -> int:
    return sum(1 + _count_keys(v) for v in keys.values() if isinstance(v, Mapping))


def write_hive(path: Path | str, root_name: str, tree_of_keys: Keys) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hive_bytes(root_name, tree_of_keys))
    return path


def decoy_name(hostname: str) -> str:
    """The name the control set that is NOT current holds (a reader following the wrong set)."""
    return ("OLD-" + hostname)[:15]


def system_keys(hostname: str, domain: str, current: int = 1) -> dict[str, object]:
    """SYSTEM's keys: Select\\Current = ``current``; that control set names the machine
    ``hostname`` in ``domain``, the other of ControlSet001/002 names it ``decoy_name(hostname)``
    in ``old.`` + domain."""
    if current not in (1, 2):
        raise ValueError("current must be 1 or 2")

    def control_set(name: str, dom: str) -> dict[str, object]:
        return {
            "Control": {
                "ComputerName": {"ComputerName": {"ComputerName": name.upper()}},
                "Session Manager": {"Environment": {"OS": "Windows_NT"}},
            },
            "Services": {
                "Tcpip": {
                    "Parameters": {
                        "Hostname": name,
                        "NV Hostname": name,
                        "Domain": dom,
                        "NV Domain": dom,
                    }
                }
            },
        }

    sets = {current: (hostname, domain), 3 - current: (decoy_name(hostname), "old." + domain)}
    keys: dict[str, object] = {
        f"ControlSet00{n}": control_set(*sets[n]) for n in (1, 2)
    }
    keys["Select"] = {"Current": current, "Default": current, "Failed": 0, "LastKnownGood": current}
    keys["Setup"] = {"SystemSetupInProgress": 0}
    return keys


def write_system_hive(path: Path | str, hostname: str, domain: str, current: int = 1) -> Path:
    """A SYSTEM hive naming the machine ``hostname`` (ComputerName upper-cased, as Windows
    stores it; Tcpip\\Parameters\\Hostname as given) with a decoy in the other control set."""
    return write_hive(path, "ROOT", system_keys(hostname, domain, current))


def write_software_hive(path: Path | str, machine_guid: str) -> Path:
    keys = {
        "Microsoft": {
            "Cryptography": {"MachineGuid": machine_guid},
            "Windows NT": {
                "CurrentVersion": {
                    "ProductName": "Windows 10 Pro",
                    "CurrentBuildNumber": "19045",
                    "CurrentMajorVersionNumber": 10,
                }
            },
        }
    }
    return write_hive(path, "ROOT", keys)
