"""The certificate-table reader on an adversary's 16 MiB tables: the best of 3 reads of each,
from an in-memory stream (the read's own cost, not the disk's).

    .venv/bin/python benchmarks/bench_certtable.py

- fake headers: a PKCS#7 whose bytes are headers the walk by dwLength passes through, each
  before a ContentInfo that claims 2 GiB (each one costs a look, up to MAX_PROBES);
- indefinite fakes: the same, each before an indefinite-length ContentInfo of 2,000
  elements, which a look walks to its end;
- foreign junk: headers of a foreign type with nothing a signature could be, end to end.

Run with PYTHONPATH pointing at another tree's agent/ to compare with it.
"""

from __future__ import annotations

import io
import struct
import time

from rmmscan.inspect.certtable import read_table

TABLE = 16 * 1024 * 1024
SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")


def inside_a_pkcs7(unit: bytes, size: int) -> bytes:
    """A first entry whose dwLength (32) leads into its PKCS#7, which holds ``unit`` again
    and again, each ``size`` bytes and a header whose dwLength leads to the next."""
    fakes = (unit + bytes(size - len(unit))) * (TABLE // size - 2)
    pkcs7 = b"\x30\x84" + (11 + 7 + len(fakes)).to_bytes(4, "big") + SIGNED_DATA + bytes(7)
    return struct.pack("<IHH", 32, 0x200, 2) + pkcs7 + fakes


def tables() -> dict[str, bytes]:
    fake = struct.pack("<IHH", 32, 0x1234, 2) + b"\x30\x84\x7f\xff\xff\xff" + SIGNED_DATA
    indefinite = struct.pack("<IHH", 4096, 0x1234, 2) + b"\x30\x80" + SIGNED_DATA
    indefinite += b"\x04\x00" * ((4096 - len(indefinite)) // 2)
    junk = struct.pack("<IHH", 32, 0x1234, 7) + bytes(24)
    return {
        "fake headers": inside_a_pkcs7(fake, 32),
        "indefinite fakes": inside_a_pkcs7(indefinite, 4096),
        "foreign junk": junk * (TABLE // 32 - 2),
    }


def main() -> None:
    for name, table in tables().items():
        data = bytes(64) + table
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            entries, anomalies = read_table(io.BytesIO(data), len(data), 64, len(table), 16)
            best = min(best, time.perf_counter() - start)
        said = ", ".join(a.value for a in anomalies)
        print(f"{name}: {best:.2f} s, {len(entries)} entries, {said}")


if __name__ == "__main__":
    main()
