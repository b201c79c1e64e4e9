"""The oscrypto workaround (rmmscan/inspect/_signify.py) makes signify import and verify here."""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import subprocess
import sys

from conftest import PE_DIR, TEST_ROOT


def libcrypto_version() -> tuple[int, ...]:
    lib = ctypes.CDLL(ctypes.util.find_library("crypto"))
    lib.OpenSSL_version.restype = ctypes.c_char_p
    lib.OpenSSL_version.argtypes = [ctypes.c_int]
    text = lib.OpenSSL_version(0).decode()
    return tuple(int(x) for x in re.search(r"(\d+)\.(\d+)\.(\d+)", text).groups())


def test_oscrypto_reads_the_real_openssl_version():
    code = (
        "import sys, rmmscan.inspect._signify\n"
        "m = sys.modules.get('oscrypto._openssl._libcrypto_cffi') or "
        "sys.modules['oscrypto._openssl._libcrypto_ctypes']\n"
        "print(*m.version_info[:3])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert tuple(int(x) for x in done.stdout.split()) == libcrypto_version()


def test_only_the_version_pattern_changes():
    from rmmscan.inspect import _signify

    assert _signify._BROKEN.replace(b"\\\\d", b"\\\\d+") == _signify._FIXED
    assert {
        "oscrypto._openssl._libcrypto_cffi",
        "oscrypto._openssl._libcrypto_ctypes",
    } == _signify._PATCHED_MODULES


def test_signify_verifies_a_signature_end_to_end():
    from rmmscan.inspect import Inspector, Status, inspect_stream

    with open(PE_DIR / "dwsnet-srl.exe", "rb") as stream:
        inspection = inspect_stream(stream)
        (verdict,) = Inspector([TEST_ROOT], system_roots=False).verify(stream, inspection)
    assert verdict.status is Status.OK, verdict.detail
    assert [c.cn for c in verdict.chain] == [
        "DWSNET srl", "rmmscan Test Code Signing CA", "rmmscan Test Root CA",
    ]  # fmt: skip
