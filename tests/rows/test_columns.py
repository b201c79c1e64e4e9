"""The column declaration is the one source: README and rows agree with it."""

from __future__ import annotations

from rmmscan.rows.columns import COLUMNS, DEFENDER, SCHEMA_VERSION, markdown_table

from conftest import ROOT

# Microsoft Defender's DeviceFileCertificateInfo, in its documented order.
DEFENDER_TABLE = (
    "Timestamp", "DeviceId", "DeviceName", "SHA1", "IsSigned", "SignatureType", "Signer",
    "SignerHash", "Issuer", "IssuerHash", "CertificateSerialNumber", "CrlDistributionPointUrls",
    "CertificateCreationTime", "CertificateExpirationTime", "CertificateCountersignatureTime",
    "IsTrusted", "IsRootSignerMicrosoft", "ReportId",
)  # fmt: skip


def test_defender_columns_exactly():
    assert DEFENDER == DEFENDER_TABLE
    assert [c.name for c in COLUMNS[: len(DEFENDER_TABLE)]] == list(DEFENDER_TABLE)


def test_readme_holds_the_generated_table():
    readme = (ROOT / "README.md").read_text("utf-8")
    assert markdown_table() in readme
    assert f"## Columns (schema version {SCHEMA_VERSION})" in readme


def test_names_are_unique():
    names = [c.name for c in COLUMNS]
    assert len(names) == len(set(names))
