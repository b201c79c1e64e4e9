"""Every manifest field of every sample, as `rmmscan inspect --format jsonl` reports it.

The manifest was computed by samples/make_samples.py from the certificates it created, not
by reading the signed files back, so it is an independent oracle for the whole pipeline.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from rmmscan.rows.build import VERSION_FIELDS
from rmmscan.rows.columns import NAMES

from conftest import PE_DIR, TEST_ROOT

FIELDS = (
    "SignatureIndex", "Signer", "Issuer", "SignerHash", "IssuerHash",
    "CertificateSerialNumber", "CertificateCreationTime", "CertificateExpirationTime",
    "CertificateCountersignatureTime", "DigestAlgorithm", "SignerSubject", "IssuerSubject",
    "VerificationStatus", "IsTrusted",
)  # fmt: skip


def run_inspect(*args, state_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rmmscan", "inspect", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def sample_rows(manifest, tmp_path_factory) -> dict[str, list[dict]]:
    files = sorted(str(PE_DIR / name) for name in manifest["files"])
    done = run_inspect(
        "--format", "jsonl", "--trusted-roots", str(TEST_ROOT), *files,
        state_dir=tmp_path_factory.mktemp("state"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows: dict[str, list[dict]] = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        rows.setdefault(row["FileName"], []).append(row)
    return rows


def cases():
    manifest = json.loads((PE_DIR.parent / "manifest.json").read_text("utf-8"))
    return sorted(manifest["files"].items())


@pytest.mark.parametrize(("name", "expected"), cases(), ids=[n for n, _ in cases()])
def test_sample_matches_manifest(name, expected, sample_rows):
    rows = sample_rows.get(name, [])
    if not expected["is_pe"]:
        assert rows == []
        return
    assert rows, f"{name}: no row"
    version = {column: expected["version"].get(field) for column, field in VERSION_FIELDS.items()}
    for row in rows:
        assert list(row) == list(NAMES)
        assert len(row["VerificationDetail"] or "") <= 300  # library messages are capped
        assert {column: row[column] for column in VERSION_FIELDS} == version
        assert json.loads(row["Anomalies"]) == expected["anomalies"] or set(
            json.loads(row["Anomalies"])
        ) == set(expected["anomalies"])
    sigs = expected["signatures"]
    if not sigs:
        if any(a.startswith("pkcs7_") for a in expected["anomalies"]):
            # The table holds a signature that cannot be read: one Malformed row.
            assert [(r["IsSigned"], r["VerificationStatus"], r["Signer"]) for r in rows] == [
                (True, "Malformed", None)
            ]
        else:
            assert [(r["IsSigned"], r["VerificationStatus"]) for r in rows] == [(False, "Unsigned")]
        assert rows[0]["IsTrusted"] is False
        return
    assert len(rows) == len(sigs)
    for row, sig in zip(sorted(rows, key=lambda r: r["SignatureIndex"]), sigs, strict=True):
        for field in FIELDS:
            assert row[field] == sig[field], f"{name}[{sig['SignatureIndex']}].{field}"
        assert json.loads(row["CrlDistributionPointUrls"]) == sig["CrlDistributionPointUrls"]
        assert row["IsSigned"] is True
        assert row["SignatureType"] == "Embedded"
        assert row["IsRootSignerMicrosoft"] is False


def test_every_sample_is_in_the_manifest(manifest):
    on_disk = {p.name for p in PE_DIR.iterdir()}
    assert on_disk == set(manifest["files"])


def test_report_ids_are_distinct_and_persist(tmp_path):
    files = [str(PE_DIR / "nested-depth3.exe"), str(PE_DIR / "unsigned.exe")]
    ids = []
    for _ in range(2):
        done = run_inspect("--format", "jsonl", *files, state_dir=tmp_path)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        ids += [r["ReportId"] for r in rows]
        assert len({r["DeviceId"] for r in rows}) == 1
    assert len(ids) == 8 and len(set(ids)) == 8


def test_untrusted_without_the_test_root(tmp_path):
    done = run_inspect("--format", "jsonl", str(PE_DIR / "dwsnet-ou.exe"), state_dir=tmp_path)
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (row["Signer"], row["VerificationStatus"], row["IsTrusted"]) == (
        "DWSNET OÜ", "UntrustedRoot", False,
    )  # fmt: skip


def test_distrust_list_wins_over_a_valid_chain(tmp_path, manifest):
    serial = manifest["files"]["dwsnet-srl.exe"]["signatures"][0]["CertificateSerialNumber"]
    distrust = tmp_path / "distrust.json"
    entry = {"reason": "test: leaked", "serial": serial}
    distrust.write_text(json.dumps({"certificates": [entry]}))
    done = run_inspect(
        "--format", "jsonl", "--trusted-roots", str(TEST_ROOT), "--distrust", str(distrust),
        str(PE_DIR / "dwsnet-srl.exe"), str(PE_DIR / "dwsnet-ou.exe"), state_dir=tmp_path,
    )  # fmt: skip
    rows = {json.loads(x)["FileName"]: json.loads(x) for x in done.stdout.splitlines()}
    assert rows["dwsnet-srl.exe"]["VerificationStatus"] == "Distrusted"
    assert rows["dwsnet-srl.exe"]["VerificationDetail"] == "test: leaked"
    assert rows["dwsnet-ou.exe"]["VerificationStatus"] == "Ok"


def test_errors_are_reported_and_other_files_still_are(tmp_path):
    fifo = tmp_path / "fifo"
    import os

    os.mkfifo(fifo)
    done = run_inspect(
        "--format", "jsonl", str(tmp_path / "missing.exe"), str(fifo), str(tmp_path),
        str(PE_DIR / "not-a-pe.bin"), str(PE_DIR / "unsigned.exe"), state_dir=tmp_path / "s",
    )  # fmt: skip
    assert done.returncode == 2
    assert "missing.exe: No such file or directory" in done.stderr
    assert "fifo: is a FIFO" in done.stderr
    assert f"{tmp_path}: is a directory" in done.stderr
    assert "not-a-pe.bin: not a PE file" in done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["FileName"] for r in rows] == ["unsigned.exe"]


def test_table_report_escapes_hostile_names(tmp_path):
    hostile = tmp_path / "evil\x1b[31m\nname.exe"
    hostile.write_bytes((PE_DIR / "dwsnet-ou.exe").read_bytes())
    done = run_inspect("--trusted-roots", str(TEST_ROOT), str(hostile), state_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    # Quoted as bash's $'…': the escapes cannot be mistaken for a name's own backslashes.
    assert f"$'{tmp_path}/evil\\x1b[31m\\nname.exe':" in done.stdout
    assert re.search(r"\n +Signer: +DWSNET OÜ\n", done.stdout)
    assert re.search(r"\n +Verified: +Ok\n", done.stdout)
