"""Every output column, declared once: the README table, the Sentinel table definition and
the tests all read this list (like osquery's table specs).

The first 18 are Microsoft Defender's DeviceFileCertificateInfo, same names, types and
value formats; the rest are what Defender gets by joining DeviceFileEvents, plus verdict
detail. Never rename a Defender column.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 4

# What it costs to know a column, cheapest first: rules evaluate cheap predicates first, and
# a file is read further only when a predicate or the emission policy reaches a costlier one.
FILE, SIGNATURE, VERSION, HASH, VERDICT, EMIT = (
    "file",
    "signature",
    "version",
    "hash",
    "verdict",
    "emit",
)
COSTS = {FILE: 0, SIGNATURE: 1, VERSION: 2, HASH: 3, VERDICT: 4, EMIT: 5}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # Kusto type: string, bool, long, int, datetime
    description: str
    defender: bool = False
    nullable: bool = False
    group: str = SIGNATURE  # the group of columns computed together (FILE ... EMIT)


def _c(name, type_, group, description, defender=False, nullable=False) -> Column:
    return Column(name, type_, description, defender, nullable, group)


D, N = True, True  # readability below: defender=D, nullable=N
COLUMNS: tuple[Column, ...] = (
    _c("Timestamp", "datetime", EMIT, "When the row was made, ISO-8601 UTC with Z", D),
    _c("DeviceId", "string", FILE, "40 lower-case hex characters, stable for the device "
       "(derived from the OS machine id)", D),
    _c("DeviceName", "string", FILE, "The machine's fully qualified name as the OS reports "
       "it, lower case; never localhost or an address", D),
    _c("SHA1", "string", HASH, "SHA-1 of the whole file, lower-case hex; null when the file "
       "is larger than the read bound (--max-read)", D, N),
    _c("IsSigned", "bool", SIGNATURE, "The file carries an Authenticode signature", D),
    _c("SignatureType", "string", SIGNATURE, "Embedded or Catalog", D, N),
    _c("Signer", "string", SIGNATURE,
       "CN of the signing certificate (else O, else the DN), NFC", D, N),
    _c("SignerHash", "string", SIGNATURE, "SHA-1 thumbprint of the signing certificate", D, N),
    _c("Issuer", "string", SIGNATURE,
       "CN of the signing certificate's issuer (else O, else the DN)", D, N),
    _c("IssuerHash", "string", SIGNATURE, "SHA-1 thumbprint of the issuing CA certificate; "
       "null when the signature does not carry it", D, N),
    _c("CertificateSerialNumber", "string", SIGNATURE,
       "Hex of the serial's DER content octets (a leading 00 sign byte kept)", D, N),
    _c("CrlDistributionPointUrls", "string", SIGNATURE,
       "JSON array of the certificate's CRL distribution point URLs, as written", D, N),
    _c("CertificateCreationTime", "datetime", SIGNATURE, "Signing certificate notBefore", D, N),
    _c("CertificateExpirationTime", "datetime", SIGNATURE, "Signing certificate notAfter", D, N),
    _c("CertificateCountersignatureTime", "datetime", SIGNATURE, "Time of the timestamp "
       "countersignature (RFC 3161 genTime or PKCS#9 signingTime); null without one", D, N),
    _c("IsTrusted", "bool", VERDICT, "Intact, verifies, chain to a trusted root valid at the "
       "countersignature time (else now)", D),
    _c("IsRootSignerMicrosoft", "bool", VERDICT, "The chain ends in a Microsoft root", D),
    _c("ReportId", "long", EMIT, "Per-device counter, never repeats for a device", D),
    _c("FileName", "string", FILE, "File name"),
    _c("FolderPath", "string", FILE, "Full path including the file name, as Defender writes it; "
       "undecodable bytes shown as U+FFFD (see FolderPathBytes)"),
    _c("FolderPathBytes", "string", FILE,
       "Base64 of the raw path bytes when the name is not valid UTF-8, else null", nullable=N),
    _c("SHA256", "string", HASH, "SHA-256 of the whole file, lower-case hex; null when the "
       "file is larger than the read bound (--max-read)", nullable=N),
    _c("MD5", "string", HASH, "MD5 of the whole file, lower-case hex; null when the file is "
       "larger than the read bound (--max-read)", nullable=N),
    _c("FileSize", "long", FILE, "Size in bytes"),
    _c("SignatureIndex", "int", SIGNATURE, "0 = the primary signature, 1.. = nested, depth first"),
    _c("SignerSubject", "string", SIGNATURE,
       "Full DN of the signing certificate, most specific first", nullable=N),
    _c("IssuerSubject", "string", SIGNATURE,
       "Full DN of the issuer, most specific first", nullable=N),
    _c("DigestAlgorithm", "string", SIGNATURE,
       "Authenticode digest algorithm: sha1, sha256, ...", nullable=N),
    _c("VerificationStatus", "string", VERDICT, "Ok, Unsigned, InvalidDigest, BadSignature, "
       "UntrustedRoot, InvalidChain, Expired, Distrusted, Malformed or NotChecked"),
    _c("VerificationDetail", "string", VERDICT, "Why the status is not Ok, in words, the same "
       "on every run: whose chain failed, serials in hex; at most 300 characters", nullable=N),
    _c("CountersignatureType", "string", SIGNATURE,
       "rfc3161 or pkcs9; null without a timestamp", nullable=N),
    _c("Anomalies", "string", SIGNATURE,
       "JSON array of structural anomalies of the certificate table"),
    # Version information, named as Defender's ProcessVersionInfo* columns without "Process".
    _c("VersionInfoCompanyName", "string", VERSION, "CompanyName of the version resource",
       nullable=N),
    _c("VersionInfoProductName", "string", VERSION, "ProductName of the version resource",
       nullable=N),
    _c("VersionInfoProductVersion", "string", VERSION,
       "ProductVersion of the version resource", nullable=N),
    _c("VersionInfoInternalFileName", "string", VERSION,
       "InternalName of the version resource", nullable=N),
    _c("VersionInfoOriginalFileName", "string", VERSION,
       "OriginalFilename of the version resource", nullable=N),
    _c("VersionInfoFileDescription", "string", VERSION,
       "FileDescription of the version resource", nullable=N),
    _c("ScanSource", "string", FILE, "inspect, sweep, watch, process, image, or heartbeat (an "
       "agent's health row: only Timestamp, DeviceId, DeviceName, ReportId, ScanSource and "
       "AgentStatus are set)"),
    _c("Evidence", "string", FILE, "The image file a row of `rmmscan image` was read from, as "
       "named on the command line; null for a live file", nullable=N),
    _c("Partition", "int", FILE, "The image's partition: 1, 2, ... in table order, 0 for a "
       "bare volume; null for a live file", nullable=N),
    _c("Snapshot", "string", FILE, "The volume snapshot a file was read from (`image "
       "--shadows`): the store and its creation time, \"vss1 2013-12-03T06:35:09Z\"; null for "
       "the live volume", nullable=N),
    # Named as Defender's DeviceProcessEvents columns.
    _c("ProcessId", "long", FILE, "The running process that has the file mapped (ScanSource "
       "process); null otherwise", nullable=N),
    _c("ProcessName", "string", FILE, "That process's name, as the OS reports it", nullable=N),
    _c("ProcessCommandLine", "string", FILE, "That process's command line, its arguments "
       "joined by spaces, at most 8,192 characters", nullable=N),
    _c("AgentStatus", "string", EMIT, "A heartbeat's JSON object: version, rule-pack hash, "
       "files judged, detections, errors, outbox depth per sink, watches held", nullable=N),
    _c("RuleId", "string", EMIT, "Id of the rule that matched (detections only)", nullable=N),
    _c("RuleName", "string", EMIT, "Name of the rule that matched (detections only)", nullable=N),
)  # fmt: skip

NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
DEFENDER: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.defender)
TYPES: dict[str, str] = {c.name: c.type for c in COLUMNS}
GROUP: dict[str, str] = {c.name: c.group for c in COLUMNS}
# Columns a rule may test: everything but what is only known when a row is emitted.
QUERYABLE: dict[str, str] = {c.name: c.type for c in COLUMNS if c.group != EMIT}


def markdown_table() -> str:
    lines = ["| column | type | Defender | description |", "|---|---|---|---|"]
    for c in COLUMNS:
        lines.append(f"| `{c.name}` | {c.type} | {'yes' if c.defender else ''} | {c.description} |")
    return "\n".join(lines)
