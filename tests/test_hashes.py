"""File hashes: equal to coreutils' on both paths (small files in one thread, big ones with
MD5 in a second thread), and a read error in the middle of a big file surfaces as the error,
with no thread left behind (injected by strace into the real read)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from rmmscan.inspect import hashes
from rmmscan.inspect.hashes import PARALLEL_MIN, hash_stream

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "samples", "pe", "dwsnet-srl.exe")


def _coreutils(path) -> tuple[str, str, str]:
    out = []
    for tool in ("sha1sum", "sha256sum", "md5sum"):
        done = subprocess.run([tool, str(path)], capture_output=True, text=True, check=True)
        out.append(done.stdout.split()[0])
    return tuple(out)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A signed sample followed by 3 MiB + 7 bytes past the threshold of random data."""
    path = tmp_path_factory.mktemp("hashes") / "big.exe"
    with open(SAMPLE, "rb") as f:
        head = f.read()
    with open(path, "wb") as out:
        out.write(head)
        out.write(os.urandom(PARALLEL_MIN + 3 * hashes.CHUNK + 7))
    return path


@pytest.mark.parametrize("which", ["sample", "big"])
def test_hashes_equal_coreutils(which, big):
    path = SAMPLE if which == "sample" else big
    with open(path, "rb") as f:
        got = hash_stream(f)
    assert (got.sha1, got.sha256, got.md5) == _coreutils(path)
    assert got.size == os.path.getsize(path)


def test_a_stream_that_is_not_a_file_is_hashed_too(big):
    data = big.read_bytes()
    got = hash_stream(io.BytesIO(data))
    assert (got.sha1, got.sha256, got.md5) == _coreutils(big)
    assert got.size == len(data)


def test_a_read_error_midway_through_a_big_file_is_raised_and_no_thread_remains(big):
    script = (
        "import sys, threading\n"
        "from rmmscan.inspect.hashes import hash_stream\n"
        "f = open(sys.argv[1], 'rb')\n"
        "try:\n"
        "    hash_stream(f)\n"
        "    print('no error')\n"
        "except OSError as exc:\n"
        "    print('error', exc.errno, threading.active_count())\n"
    )
    done = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(big), "-e", "trace=read",
         "-e", "inject=read:error=EIO:when=6", sys.executable, "-c", script, str(big)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.split() == ["error", "5", "1"], done.stderr
