"""Inspected files → DeviceFileCertificateInfo rows (columns.py), one per signature.

An unsigned PE is one row with IsSigned false; a non-PE has no row.
"""

from __future__ import annotations

import datetime as dt
import json
import ntpath
import posixpath
from dataclasses import dataclass

from ..inspect import FileHashes, Inspection, SignatureInfo, Status, Verdict
from ..sources.candidate import ProcessRef
from ..sources.device import Device
from ..text import brief, path_columns, plain_detail, printable
from .columns import GROUP, NAMES, SIGNATURE

SIGNATURE_COLUMNS = tuple(n for n in NAMES if GROUP[n] == SIGNATURE)


def iso(value: dt.datetime | None) -> str | None:
    """ISO-8601 UTC with Z; fractions of a second only when there are some."""
    if value is None:
        return None
    # isoformat is C and a tenth of strftime's cost (three times a signature); it pads the
    # year to 4 digits, where strftime's %Y would give "999", and string order is time order.
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True, slots=True)
class FileRef:
    """Where a stream came from, for the path columns."""

    path: str | bytes
    source: str  # ScanSource
    origin: tuple[str, int, str | None] | None = None  # an image's (Evidence, Partition, Snapshot)
    process: ProcessRef | None = None


def file_name(folder_path: str) -> str:
    """Windows paths split on either slash; POSIX paths only on '/'."""
    if (len(folder_path) > 2 and folder_path[1] == ":") or folder_path.startswith("\\\\"):
        return ntpath.basename(folder_path)
    return posixpath.basename(folder_path)


def file_columns(ref: FileRef, device: Device, size: int) -> dict:
    """The FILE group: known from the path and a stat, before the file is opened."""
    folder_path, raw = path_columns(ref.path)
    return {
        "DeviceId": device.device_id,
        "DeviceName": device.device_name,
        "FileName": file_name(folder_path),
        "FolderPath": folder_path,
        "FolderPathBytes": raw,
        "FileSize": size,
        "ScanSource": ref.source,
        "Evidence": origin[0] if (origin := ref.origin) else None,
        "Partition": origin[1] if origin else None,
        "Snapshot": origin[2] if origin else None,
        **(process_columns(ref.process) if ref.process else _NO_PROCESS),
    }


MAX_COMMAND_LINE = 8192
_NO_PROCESS = {"ProcessId": None, "ProcessName": None, "ProcessCommandLine": None}


def process_columns(process: ProcessRef) -> dict:
    """The process's columns: its name and command line are the process's own choice, made
    printable like a file name, and the command line bounded."""
    return {
        "ProcessId": process.pid,
        "ProcessName": printable(process.name),
        "ProcessCommandLine": printable(brief(process.command_line, MAX_COMMAND_LINE)),
    }


def hash_columns(hashes: FileHashes) -> dict:
    return {"SHA1": hashes.sha1, "SHA256": hashes.sha256, "MD5": hashes.md5}


# The HASH group of a file that is not read whole (over the read bound): null, as a column
# never computed is.
NOT_HASHED = {"SHA1": None, "SHA256": None, "MD5": None}


def version_columns(version: dict[str, str]) -> dict:
    return {column: version.get(field) or None for column, field in VERSION_FIELDS.items()}


VERSION_FIELDS = {
    "VersionInfoCompanyName": "CompanyName",
    "VersionInfoProductName": "ProductName",
    "VersionInfoProductVersion": "ProductVersion",
    "VersionInfoInternalFileName": "InternalName",
    "VersionInfoOriginalFileName": "OriginalFilename",
    "VersionInfoFileDescription": "FileDescription",
}


def signature_rows(inspection: Inspection) -> list[dict]:
    """The SIGNATURE group of each row: one per signature, or one for an unsigned PE."""
    anomalies = json.dumps([str(a) for a in inspection.anomalies])
    if not inspection.signatures:
        row = dict.fromkeys(SIGNATURE_COLUMNS)
        row.update(IsSigned=False, Anomalies=anomalies)
        return [row]
    return [dict(signature_columns(sig), Anomalies=anomalies) for sig in inspection.signatures]


def verdict_rows(inspection: Inspection, verdicts: list[Verdict] | None) -> list[dict]:
    """The VERDICT group of each row, in the order of signature_rows."""
    if not inspection.signatures:
        return [
            {
                "IsTrusted": False,
                "IsRootSignerMicrosoft": False,
                "VerificationStatus": str(Status.UNSIGNED),
                "VerificationDetail": None,
            }
        ]
    return [
        verdict_columns(sig, verdicts[i] if verdicts is not None else None)
        for i, sig in enumerate(inspection.signatures)
    ]


def unread_verdict_rows(signatures: list[dict], why: str) -> list[dict]:
    """The VERDICT group of a file that is not read whole (over the read bound), in the order
    of its signature rows: a signature is not verified, since its digest covers the whole
    file; an unsigned PE is Unsigned, which needs no read."""
    detail = brief(f"not read: {why}")
    return [
        {
            "IsTrusted": False,
            "IsRootSignerMicrosoft": False,
            "VerificationStatus": str(Status.NOT_CHECKED if sig["IsSigned"] else Status.UNSIGNED),
            "VerificationDetail": detail if sig["IsSigned"] else None,
        }
        for sig in signatures
    ]


def signature_columns(sig: SignatureInfo) -> dict:
    signer, issuer = sig.signer, sig.issuer
    return {
        "IsSigned": True,
        "SignatureType": "Embedded",
        "Signer": signer.cn if signer else None,
        "SignerHash": signer.sha1 if signer else None,
        "Issuer": signer.issuer_cn if signer else None,
        "IssuerHash": issuer.sha1 if issuer else None,
        "CertificateSerialNumber": signer.serial_hex if signer else None,
        "CrlDistributionPointUrls": json.dumps(list(signer.crl_urls)) if signer else None,
        "CertificateCreationTime": iso(signer.not_before) if signer else None,
        "CertificateExpirationTime": iso(signer.not_after) if signer else None,
        "CertificateCountersignatureTime": iso(sig.countersignature_time),
        "SignatureIndex": sig.index,
        "SignerSubject": signer.subject if signer else None,
        "IssuerSubject": signer.issuer if signer else None,
        "DigestAlgorithm": sig.digest_algorithm or None,
        "CountersignatureType": sig.countersignature_kind,
    }


def verdict_columns(sig: SignatureInfo, verdict: Verdict | None) -> dict:
    status = verdict.status if verdict else Status.NOT_CHECKED
    detail = verdict.detail if verdict else ""
    if status is Status.NOT_CHECKED:
        detail = "not verified"
    elif not detail and sig.problems:
        detail = plain_detail("; ".join(sig.problems))  # a Verdict's detail is plain already
    return {
        "IsTrusted": bool(verdict and verdict.is_trusted),
        "IsRootSignerMicrosoft": bool(verdict and verdict.root_microsoft),
        "VerificationStatus": str(status),
        "VerificationDetail": brief(detail) if detail else None,
    }
