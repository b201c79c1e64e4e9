"""Helpers for the end-to-end sweep tests: real trees, real `rmmscan scan` subprocesses, and an
independent oracle for the rows they must produce.

The oracle reads the certificate columns from samples/manifest.json (computed by the sample
generator, not read back from the files), the hashes from hashlib, and the rule ids and names
from the rule files themselves; which rules fire is decided here from the DWService rules'
predicates, written out by hand, so a sweep that matches a wrong rule or misses one fails.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rmmscan.sources.device import device_name

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
PE_DIR = SAMPLES / "pe"
TEST_ROOT = SAMPLES / "pki" / "test-root.pem"
RULES_DIR = ROOT / "rules"
MANIFEST = json.loads((SAMPLES / "manifest.json").read_text("utf-8"))["files"]

# DeviceName is device.py's to work out (tests/sources/test_device.py holds it to the OS's names):
# here every row of a sweep must carry it.
DEVICE_NAME = device_name()
NOBODY = 65534
VOLATILE = ("Timestamp", "ReportId")
TIMEOUT = 120

# -- the rules under test, as their files say -----------------------------------------------------


def _rule(filename: str) -> tuple[str, str]:
    data = yaml.safe_load((RULES_DIR / filename).read_text("utf-8"))
    return data["id"], data["name"]


FILESIG = _rule("rmm_DWService_filesig.yaml")
UNTRUSTED = _rule("rmmscan_DWService_untrusted_filesig.yaml")
LOOKALIKE = _rule("rmmscan_DWService_lookalike_filesig.yaml")
RULE_NAMES = dict((FILESIG, UNTRUSTED, LOOKALIKE))

DWSNET = ("DWSNET OÜ", "DWSNET srl")
DWS_NAMES = ("dwagent.exe", "dwagsvc.exe", "dwaglnc.exe", "dwagupd.dll")
DWS_INTERNAL = ("dwagent", "dwagsvc", "dwaglnc", "dwagupd", *DWS_NAMES)
REAL_DWSNET_SRL_THUMBPRINT = "4a13f46def2c9427898a46a88a6a2122ed106b37"
REAL_DWSNET_SRL_SERIALS = ("00afbdd3beb24e1de73782e9f8347cf153", "afbdd3beb24e1de73782e9f8347cf153")

VERSION_FIELDS = {
    "VersionInfoCompanyName": "CompanyName",
    "VersionInfoProductName": "ProductName",
    "VersionInfoProductVersion": "ProductVersion",
    "VersionInfoInternalFileName": "InternalName",
    "VersionInfoOriginalFileName": "OriginalFilename",
    "VersionInfoFileDescription": "FileDescription",
}
CERT_FIELDS = (
    "SignatureIndex", "Signer", "Issuer", "SignerHash", "IssuerHash",
    "CertificateSerialNumber", "CertificateCreationTime", "CertificateExpirationTime",
    "CertificateCountersignatureTime", "DigestAlgorithm", "SignerSubject", "IssuerSubject",
    "VerificationStatus", "IsTrusted",
)  # fmt: skip


def _has(text: str | None, term: str) -> bool:
    """Kusto `has` for an ASCII term: a whole run of alphanumerics, ASCII case folded."""
    if not text:
        return False
    terms = re.findall(r"[^\W_]+", text)
    return any(t.lower() == term.lower() if t.isascii() else t == term for t in terms)


def _has_phrase(text: str | None, phrase: str) -> bool:
    """`has` with a multi-term literal: the terms appear consecutively."""
    if not text:
        return False
    terms = re.findall(r"[^\W_]+", text)
    want = re.findall(r"[^\W_]+", phrase)
    fold = [t.lower() if t.isascii() else t for t in terms]
    want = [t.lower() if t.isascii() else t for t in want]
    return any(fold[i : i + len(want)] == want for i in range(len(fold) - len(want) + 1))


def expected_rows(sample: str) -> list[dict]:
    """The signature-dependent columns of the rows one sample yields (none for a non-PE)."""
    entry = MANIFEST[sample]
    if not entry["is_pe"]:
        return []
    version = {col: entry["version"].get(f) for col, f in VERSION_FIELDS.items()}
    common = {"Anomalies": entry["anomalies"], **version}
    if entry["signatures"]:
        return [dict(common, **sig, IsSigned=True) for sig in entry["signatures"]]
    if any(a.startswith("pkcs7_") for a in entry["anomalies"]):
        return [dict(common, IsSigned=True, SignatureIndex=0, Signer=None, IsTrusted=False,
                     VerificationStatus="Malformed")]  # fmt: skip
    return [dict(common, IsSigned=False, Signer=None, IsTrusted=False,
                 VerificationStatus="Unsigned")]  # fmt: skip


def rules_matching(row: dict, file_name: str) -> list[str]:
    """Rule ids of the three DWService rules that match one expected row, in pack order."""
    signer = row.get("Signer")
    trusted_dwsnet = signer in DWSNET and row["IsTrusted"] is True
    hits = []
    if (
        any(_has_phrase(signer, s) for s in DWSNET)
        or (row.get("SignerHash") or "").lower() == REAL_DWSNET_SRL_THUMBPRINT
        or (row.get("CertificateSerialNumber") or "").lower() in REAL_DWSNET_SRL_SERIALS
    ):
        hits.append(FILESIG[0])
    lower = lambda v: (v or "").lower()  # noqa: E731
    named = (
        file_name.lower() in DWS_NAMES
        or lower(row.get("VersionInfoOriginalFileName")) in DWS_NAMES
        or lower(row.get("VersionInfoInternalFileName")) in DWS_INTERNAL
        or _has(row.get("VersionInfoCompanyName"), "DWSNET")
        or any(_has(row.get("VersionInfoProductName"), t) for t in ("DWAgent", "DWService"))
        or any(_has(row.get("VersionInfoFileDescription"), t) for t in ("DWAgent", "DWService"))
    )
    if named and not trusted_dwsnet:
        hits.append(LOOKALIKE[0])
    if _has(signer, "DWSNET") and not trusted_dwsnet:
        hits.append(UNTRUSTED[0])
    return hits


def expected_detections(sample: str, file_name: str) -> list[tuple[int | None, str]]:
    """(SignatureIndex, RuleId) of every detection row of one sample under a given name."""
    out = []
    for row in expected_rows(sample):
        out += [(row.get("SignatureIndex"), rule) for rule in rules_matching(row, file_name)]
    return out


# -- checking rows --------------------------------------------------------------------------------

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
_DIGESTS: dict[str, tuple[str, str, str, int]] = {}


def digests(sample: str) -> tuple[str, str, str, int]:
    if sample not in _DIGESTS:
        data = (PE_DIR / sample).read_bytes()
        _DIGESTS[sample] = (
            hashlib.sha1(data).hexdigest(),
            hashlib.sha256(data).hexdigest(),
            hashlib.md5(data).hexdigest(),
            len(data),
        )
    return _DIGESTS[sample]


def path_text(path: str | bytes) -> tuple[str, str | None]:
    """(FolderPath, FolderPathBytes) as the README says: U+FFFD plus base64 when not UTF-8."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")


def check_row(row: dict, path: str | bytes, sample: str, columns: Iterable[str],
              rules: dict[str, str] = RULE_NAMES) -> None:  # fmt: skip
    """Every column of one emitted row of `sample` found at `path` (the real path); `rules`
    maps the ids of the rules in use to their names."""
    assert list(row) == list(columns), "every column, in the declared order"
    folder_path, raw = path_text(path)
    where = f"{folder_path!r} ({sample})"
    assert row["FolderPath"] == folder_path, where
    assert row["FolderPathBytes"] == raw, where
    assert row["FileName"] == folder_path.rsplit("/", 1)[1], where
    sha1, sha256, md5, size = digests(sample)
    assert (row["SHA1"], row["SHA256"], row["MD5"], row["FileSize"]) == (sha1, sha256, md5, size)
    assert row["ScanSource"] == "sweep"
    assert re.fullmatch(r"[0-9a-f]{40}", row["DeviceId"]), row["DeviceId"]
    assert row["DeviceName"] == DEVICE_NAME
    assert ISO.match(row["Timestamp"]), row["Timestamp"]
    assert abs(_age(row["Timestamp"])) < 600
    assert isinstance(row["ReportId"], int) and row["ReportId"] > 0
    candidates = [
        e for e in expected_rows(sample) if e.get("SignatureIndex") == row["SignatureIndex"]
    ]
    assert len(candidates) == 1, f"{where}: no expected row {row['SignatureIndex']}"
    expected = candidates[0]
    for name in CERT_FIELDS:
        if name in expected:
            assert row[name] == expected[name], f"{where}[{row['SignatureIndex']}].{name}"
    for name in VERSION_FIELDS:
        assert row[name] == expected[name], f"{where}.{name}"
    assert json.loads(row["Anomalies"]) == expected["Anomalies"] or set(
        json.loads(row["Anomalies"])
    ) == set(expected["Anomalies"])
    assert row["IsSigned"] is expected["IsSigned"]
    assert row["IsRootSignerMicrosoft"] is False
    if expected["IsSigned"] and row["Signer"] is not None:
        sig = MANIFEST[sample]["signatures"][row["SignatureIndex"]]
        assert json.loads(row["CrlDistributionPointUrls"]) == sig["CrlDistributionPointUrls"]
        assert row["SignatureType"] == "Embedded"
    if not expected["IsSigned"]:
        assert row["SignatureIndex"] is None and row["SignatureType"] is None
    if row["RuleId"] is None:
        assert row["RuleName"] is None
    else:
        assert row["RuleName"] == rules.get(row["RuleId"]), row["RuleId"]


def _age(stamp: str) -> float:
    when = dt.datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


def stable(row: dict) -> dict:
    """A row without the columns that differ between two scans of the same file."""
    return {k: v for k, v in row.items() if k not in VOLATILE}


def key(row: dict) -> str:
    return json.dumps(stable(row), sort_keys=True)


def stable_set(rows: Iterable[dict]) -> list[str]:
    return sorted(key(r) for r in rows)


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def as_csv(row: dict) -> dict:
    """A JSONL row as the CSV sink must write it: strings, '' for null, true/false."""

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    return {k: cell(v) for k, v in row.items()}


# -- trees ----------------------------------------------------------------------------------------


@dataclass
class Tree:
    """A directory of sample copies: real path (bytes) -> sample name."""

    root: Path
    files: dict[bytes, str] = field(default_factory=dict)

    def put(self, rel: str | bytes, sample: str) -> bytes:
        path = os.path.join(os.fsencode(self.root), os.fsencode(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(PE_DIR / sample, path)
        self.files[path] = sample
        return path

    def put_deep(self, rel: str, parts: list[str], name: str, sample: str) -> bytes:
        """A file below `rel`/parts..., made with descriptors: the path may exceed PATH_MAX."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        path = os.fsencode(self.root)
        try:
            for part in [*rel.split("/"), *parts]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = child
                path += b"/" + os.fsencode(part)
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
            with os.fdopen(out, "wb") as f:
                f.write((PE_DIR / sample).read_bytes())
        finally:
            os.close(fd)
        path += b"/" + os.fsencode(name)
        self.files[path] = sample
        return path

    def expected(self, emit: str = "detections", under: bytes | None = None) -> list[tuple]:
        """(FolderPath, SignatureIndex, RuleId) of every row a sweep must emit."""
        out = []
        for path, sample in self.files.items():
            if under is not None and not path.startswith(under):
                continue
            name = os.fsdecode(os.path.basename(path))
            text = path_text(path)[0]
            for row in expected_rows(sample):
                rules = rules_matching(row, name)
                index = row.get("SignatureIndex")
                out += [(text, index, rule) for rule in rules]
                if rules:
                    continue
                if emit == "all" or (emit == "signed" and row["IsSigned"]):
                    out.append((text, index, None))
        return sorted(out, key=repr)

    def check(self, rows: list[dict], columns: Iterable[str], rules=RULE_NAMES) -> None:
        by_text = {path_text(p)[0]: p for p in self.files}
        for row in rows:
            path = by_text[row["FolderPath"]]
            check_row(row, path, self.files[path], columns, rules)


def identities(rows: Iterable[dict]) -> list[tuple]:
    return sorted(((r["FolderPath"], r["SignatureIndex"], r["RuleId"]) for r in rows), key=repr)


# -- running rmmscan ------------------------------------------------------------------------------


@dataclass
class Scan:
    args: list[str]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8")

    @property
    def rows(self) -> list[dict]:
        return [json.loads(line) for line in self.text.splitlines()]

    @property
    def summary(self) -> dict[str, int]:
        return summary_counts(self.stderr)

    def __str__(self) -> str:
        return f"rmmscan {' '.join(self.args)} -> {self.returncode}\n{self.stderr}"


def scan_command(*args, state_dir, user: bool = False, system_roots: bool = False) -> list[str]:
    """The test root is trusted in every run. The Microsoft root program costs half a second
    of CPU a process (no sample chains to it): only the runs that ask for it load it."""
    cmd = [sys.executable, "-m", "rmmscan", "scan", "--trusted-roots", str(TEST_ROOT)]
    if not system_roots:
        cmd.append("--no-system-roots")
    cmd += ["--state-dir", str(state_dir), *map(_arg, args)]
    if user:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    return cmd


def _arg(a) -> str | bytes:
    return a if isinstance(a, bytes) else str(a)


def start(*args, state_dir, user=False, system_roots=False, prefix=(), cwd=None, env=None):
    cmd = [*prefix, *scan_command(*args, state_dir=state_dir, user=user, system_roots=system_roots)]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd or "/",
        env=env,
    )


def finish(proc: subprocess.Popen, args, timeout: float = TIMEOUT) -> Scan:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"rmmscan did not finish in {timeout} s: {args}\n{err.decode(errors='replace')}"
        ) from None
    # stderr must be valid UTF-8 whatever the names: hostile bytes are escaped, not passed on
    return Scan([str(a) for a in args], proc.returncode, out, (err or b"").decode("utf-8"))


def scan(*args, state_dir, user=False, timeout=TIMEOUT, **kw) -> Scan:
    return finish(start(*args, state_dir=state_dir, user=user, **kw), args, timeout)


def scan_many(jobs: dict[str, dict], timeout=TIMEOUT) -> dict[str, Scan]:
    """Several scans at once, each given as keyword arguments of `start` (args, state_dir,
    user, system_roots): the suite's wall time matters more than its CPU time."""
    procs = {name: (start(*job.pop("args"), **job), name) for name, job in jobs.items()}
    return {name: finish(proc, [name], timeout) for name, (proc, _) in procs.items()}


def summary_counts(stderr: str) -> dict[str, int]:
    """The numbers of the summary: 'files walked: 3   PE files: 2 ...', 'skipped: special: 1'."""
    counts: dict[str, int] = {}
    for line in stderr.splitlines():
        if line.startswith(("files walked:", "not read:", "skipped:", "suppressed by")):
            body = line.split(":", 1)[1] if line.startswith(("not read:", "skipped:")) else line
            body = re.sub(r"\(.*\)", "", body)
            for name, value in re.findall(r"([A-Za-z][A-Za-z ]*?): ([\d,]+)", body):
                counts[name.strip()] = int(value.replace(",", ""))
        m = re.search(r"from the cache: ([\d,]+)", line)
        if m:
            counts["from the cache"] = int(m.group(1).replace(",", ""))
    return counts


# -- stopping rmmscan at a chosen system call -----------------------------------------------------


class Stopped:
    """rmmscan run under strace, stopped (SIGSTOP) right after a chosen system call on a path
    returned, so that a test can change the tree at that exact point, then `resume()`."""

    def __init__(self, *args, state_dir, path, syscall: str, when: int, log: Path, stops=1):
        # strace -P follows descriptors: a directory's path matches getdents64 on it, a
        # file's path matches reads of it. The signal is queued when the call is entered and
        # stops the process when the call returns.
        self.args, self.log = args, log
        self.proc = start(
            *args,
            state_dir=state_dir,
            prefix=[
                "strace", "-f", "-y", "-qq", "-o", str(log), "-P", os.fsdecode(path),
                "-e", f"trace={syscall}", "-e", f"inject={syscall}:signal=SIGSTOP:when={when}",
                # Ctrl-C as a terminal sends it: a test runner that ignores SIGINT at that moment
                # (seen in whole-suite runs) would pass the ignoring on, and rmmscan keeps an
                # ignored SIGINT ignored, as Unix programs do.
                "env", "--default-signal=INT",
            ],
        )  # fmt: skip
        self.tids = self._wait_stop(stops)

    def _wait_stop(self, stops: int, timeout: float = 60) -> set[int]:
        """Until `stops` processes stopped: with -j N, N sweep processes list each directory."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            tids = set(map(int, re.findall(r"^(\d+) +--- stopped by SIGSTOP", text, re.M)))
            processes = {_process_of(tid) for tid in tids}  # strace names each thread
            if len(processes) >= stops:
                return processes
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise AssertionError(f"rmmscan ended before the stop:\n{err.decode()}\n{text}")
            time.sleep(0.02)
        self.proc.kill()
        raise AssertionError(f"rmmscan never reached the stop:\n{text}")

    def resume(self, timeout: float = TIMEOUT) -> Scan:
        for tid in self.tids:
            os.kill(tid, signal.SIGCONT)
        return finish(self.proc, self.args, timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def _process_of(tid: int) -> int:
    """The process (thread group) a thread belongs to."""
    try:
        status = Path(f"/proc/{tid}/status").read_text()
    except OSError:
        return tid
    m = re.search(r"^Tgid:\s+(\d+)", status, re.M)
    return int(m.group(1)) if m else tid


# -- strace: which files were opened --------------------------------------------------------------

_HEX = r"(?:\\x[0-9a-f]{2})*"
_OPEN = re.compile(rf'^\d+ +(?:openat|open)\((?:[^<,"]*<(?P<dir>{_HEX})>, )?"(?P<name>{_HEX})"')


def _bytes(hexed: str) -> bytes:
    return bytes.fromhex(hexed.replace("\\x", ""))


def opened_paths(log_text: str) -> list[bytes]:
    """Every path an open/openat of an `strace -f -y -xx` log named, resolved against its
    directory descriptor, including opens that failed."""
    out = []
    for line in log_text.splitlines():
        m = _OPEN.match(line)
        if not m:
            continue
        name = _bytes(m.group("name"))
        if not name.startswith(b"/") and m.group("dir") is not None:
            name = _bytes(m.group("dir")).rstrip(b"/") + b"/" + name
        out.append(name)
    return out


def make_corpus(out: Path, files: int, seed: int) -> Path:
    """The benchmark's corpus generator (benchmarks/make_corpus.py): `files` files under
    out/C, PE and signed ones among them, DWSNET-signed ones included; its C folder."""
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "make_corpus.py"), "--out", str(out),
         "--files", str(files), "--seed", str(seed)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out / "C"
