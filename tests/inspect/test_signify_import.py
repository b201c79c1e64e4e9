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


def fresh_python(code: str) -> str:
    """What ``code`` prints in a new interpreter, which has imported nothing of signify."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_oscrypto_reads_the_real_openssl_version():
    code = (
        "import sys, rmmscan.inspect._signify\n"
        "m = sys.modules.get('oscrypto._openssl._libcrypto_cffi') or "
        "sys.modules['oscrypto._openssl._libcrypto_ctypes']\n"
        "print(*m.version_info[:3])"
    )
    assert tuple(int(x) for x in fresh_python(code).split()) == libcrypto_version()


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


def test_verifying_starts_no_program_and_uses_the_openssl_python_loaded():
    """oscrypto would find OpenSSL by running `ldconfig -p` in a child process; it is given
    the libcrypto this process has loaded (Python's hashlib) and the libssl beside it.
    certvalidator's downloaders, never used, are never loaded, nor urllib.request."""
    code = (
        "import os, subprocess, sys\n"
        "started = []\n"
        "real = subprocess.Popen.__init__\n"
        "def spy(self, args, *a, **k):\n"
        "    started.append(args)\n"
        "    return real(self, args, *a, **k)\n"
        "subprocess.Popen.__init__ = spy\n"
        "from pathlib import Path\n"
        "from rmmscan.inspect import Inspector, Status, inspect_stream\n"
        f"with open({str(PE_DIR / 'dwsnet-srl.exe')!r}, 'rb') as stream:\n"
        "    inspection = inspect_stream(stream)\n"
        f"    inspector = Inspector([Path({str(TEST_ROOT)!r})], system_roots=False)\n"
        "    (v,) = inspector.verify(stream, inspection)\n"
        "import oscrypto, oscrypto._openssl._libcrypto_ctypes as lc\n"
        "maps = open('/proc/self/maps').read()\n"
        "config = oscrypto._module_values['backend_config']\n"
        "mapped = config['libcrypto_path'] in maps and os.path.isfile(config['libssl_path'])\n"
        "print(v.status.name, started, mapped, lc.libcrypto._name == config['libcrypto_path'],\n"
        "      'urllib.request' in sys.modules)\n"
    )
    out = fresh_python(code)
    assert out.split() == ["OK", "[]", "True", "True", "False"], out
