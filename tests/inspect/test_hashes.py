"""File hashes: equal to coreutils' on both paths (small files in one thread, big ones with
MD5 in a second thread), and a read error in the middle of a big file surfaces as the error,
with no thread left behind (injected by strace into the real read)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sweeptree import finish, start

from rmmscan.inspect import Inspector, hashes
from rmmscan.inspect.hashes import PARALLEL_MIN, hash_stream
from rmmscan.rows import build as rows
from rmmscan.rows.facts import FileFacts
from rmmscan.sources.device import Device

SAMPLE = str(Path(__file__).resolve().parents[2] / "samples" / "pe" / "dwsnet-srl.exe")
PKI = Path(__file__).resolve().parents[2] / "samples" / "pki"
TEST_ROOT = PKI / "test-root.pem"


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


def test_hash_fd_reads_with_pread_and_leaves_the_offset_alone(big):
    with open(big, "rb", buffering=0) as f:
        f.seek(12345)
        got = hashes.hash_fd(f.fileno())
        assert f.tell() == 12345
    assert (got.sha1, got.sha256, got.md5) == _coreutils(big)


@pytest.fixture(scope="module")
def big_signed(tmp_path_factory):
    """unsigned.exe with 16 MiB + 4,097 bytes of overlay, signed by the DWSNET srl test key."""
    work = tmp_path_factory.mktemp("big-signed")
    src = work / "in.exe"
    with open(os.path.join(os.path.dirname(SAMPLE), "unsigned.exe"), "rb") as f:
        src.write_bytes(f.read() + os.urandom(PARALLEL_MIN + 4097))
    tree = work / "tree"
    tree.mkdir()
    out = tree / "dwagent-setup.exe"
    subprocess.run(
        ["osslsigncode", "sign", "-certs", str(PKI / "dwsnet-srl-chain.pem"),
         "-key", str(PKI / "dwsnet-srl.key"), "-h", "sha256", "-in", str(src), "-out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return tree, out


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_large_detection_is_hashed_while_it_is_verified(big_signed, jobs, tmp_path):
    """The row of a 16 MiB signed detection: hashes equal coreutils', the verdict is Ok, and
    the hashes were read with pread (the thread that runs beside the verification)."""
    tree, path = big_signed
    log = tmp_path / "strace.log"
    proc = start("--format", "jsonl", "-j", jobs, tree, state_dir=tmp_path / "state",
                 prefix=["strace", "-f", "-qq", "-o", str(log), "-P", str(path),
                         "-e", "trace=pread64,read"])  # fmt: skip
    done = finish(proc, [jobs])
    assert done.returncode == 1, done
    assert done.rows
    for row in done.rows:
        assert (row["SHA1"], row["SHA256"], row["MD5"]) == _coreutils(path)
        assert row["VerificationStatus"] == "Ok" and row["IsTrusted"] is True
    preads = [line for line in log.read_text().splitlines() if "pread64(" in line]
    assert len(preads) >= PARALLEL_MIN // hashes.CHUNK, "the file was not hashed with pread"


def test_hash_fd_stops_when_asked(big):
    stop = threading.Event()
    stop.set()
    with open(big, "rb") as f, pytest.raises(hashes.Cancelled):
        hashes.hash_fd(f.fileno(), stop)


def test_hashing_beside_verification_ends_with_the_file(big_signed):
    """Verified but never asked for its hashes (a row an allowlist suppressed): closing the
    file stops the thread and waits for it, so it never reads a descriptor closed under it."""
    _, path = big_signed
    size = os.path.getsize(path)
    stream = open(path, "rb")  # noqa: SIM115  (closed by FileFacts.close)
    facts = FileFacts(
        rows.file_columns(rows.FileRef(str(path), "sweep"), Device("id", "host"), size),
        lambda: stream,
        Inspector([TEST_ROOT], system_roots=False),
    )
    assert facts.verdict_rows()[0]["VerificationStatus"] == "Ok"
    thread, box, _ = facts._hashing
    facts.close()
    assert not thread.is_alive() and facts._hashing is None and stream.closed
    assert isinstance(box[0], (hashes.FileHashes, hashes.Cancelled))
