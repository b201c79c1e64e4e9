"""Every output column, declared once: the README table, the Sentinel table definition and
the tests all read this list (like osquery's table specs).

The first 18 are Microsoft Defender's DeviceFileCertificateInfo, same names, types and
value formats; the rest are what Defender gets by joining DeviceFileEvents, plus verdict
detail. Never rename a Defender column.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # Kusto type: string, bool, long, int, datetime
    description: str
    defender: bool = False
    nullable: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("Timestamp", "datetime", "When the row was made, ISO-8601 UTC with Z", True),
    Column(
        "DeviceId",
        "string",
        "40 lower-case hex characters, stable for the device (derived from the OS machine id)",
        True,
    ),
    Column("DeviceName", "string", "Fully qualified domain name of the device, lower case", True),
    Column("SHA1", "string", "SHA-1 of the whole file, lower-case hex", True),
    Column("IsSigned", "bool", "The file carries an Authenticode signature", True),
    Column("SignatureType", "string", "Embedded or Catalog", True, True),
    Column(
        "Signer", "string", "CN of the signing certificate (else O, else the DN), NFC", True, True
    ),
    Column("SignerHash", "string", "SHA-1 thumbprint of the signing certificate", True, True),
    Column(
        "Issuer",
        "string",
        "CN of the signing certificate's issuer (else O, else the DN)",
        True,
        True,
    ),
    Column(
        "IssuerHash",
        "string",
        "SHA-1 thumbprint of the issuing CA certificate; null when the signature does not carry it",
        True,
        True,
    ),
    Column(
        "CertificateSerialNumber",
        "string",
        "Hex of the serial's DER content octets (a leading 00 sign byte kept)",
        True,
        True,
    ),
    Column(
        "CrlDistributionPointUrls",
        "string",
        "JSON array of the certificate's CRL distribution point URLs, as written",
        True,
        True,
    ),
    Column("CertificateCreationTime", "datetime", "Signing certificate notBefore", True, True),
    Column("CertificateExpirationTime", "datetime", "Signing certificate notAfter", True, True),
    Column(
        "CertificateCountersignatureTime",
        "datetime",
        "Time of the timestamp "
        "countersignature (RFC 3161 genTime or PKCS#9 signingTime); null without one",
        True,
        True,
    ),
    Column(
        "IsTrusted",
        "bool",
        "Intact, verifies, chain to a trusted root valid at the countersignature time (else now)",
        True,
    ),
    Column("IsRootSignerMicrosoft", "bool", "The chain ends in a Microsoft root", True),
    Column("ReportId", "long", "Per-device counter, never repeats for a device", True),
    Column("FileName", "string", "File name"),
    Column(
        "FolderPath",
        "string",
        "Full path including the file name, as Defender writes it; "
        "undecodable bytes shown as U+FFFD (see FolderPathBytes)",
    ),
    Column(
        "FolderPathBytes",
        "string",
        "Base64 of the raw path bytes when the name is not valid UTF-8, else null",
        nullable=True,
    ),
    Column("SHA256", "string", "SHA-256 of the whole file, lower-case hex"),
    Column("MD5", "string", "MD5 of the whole file, lower-case hex"),
    Column("FileSize", "long", "Size in bytes"),
    Column("SignatureIndex", "int", "0 = the primary signature, 1.. = nested, depth first"),
    Column(
        "SignerSubject",
        "string",
        "Full DN of the signing certificate, most specific first",
        nullable=True,
    ),
    Column("IssuerSubject", "string", "Full DN of the issuer, most specific first", nullable=True),
    Column(
        "DigestAlgorithm",
        "string",
        "Authenticode digest algorithm: sha1, sha256, ...",
        nullable=True,
    ),
    Column(
        "VerificationStatus",
        "string",
        "Ok, Unsigned, InvalidDigest, BadSignature, "
        "UntrustedRoot, InvalidChain, Expired, Distrusted, Malformed or NotChecked",
    ),
    Column("VerificationDetail", "string", "Why the status is not Ok, in words", nullable=True),
    Column(
        "CountersignatureType",
        "string",
        "rfc3161 or pkcs9; null without a timestamp",
        nullable=True,
    ),
    Column("Anomalies", "string", "JSON array of structural anomalies of the certificate table"),
    Column("ScanSource", "string", "inspect, sweep, watch, process or image"),
    Column("RuleId", "string", "Id of the rule that matched (detections only)", nullable=True),
    Column("RuleName", "string", "Name of the rule that matched (detections only)", nullable=True),
)

NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
DEFENDER: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.defender)


def markdown_table() -> str:
    lines = ["| column | type | Defender | description |", "|---|---|---|---|"]
    for c in COLUMNS:
        lines.append(f"| `{c.name}` | {c.type} | {'yes' if c.defender else ''} | {c.description} |")
    return "\n".join(lines)
