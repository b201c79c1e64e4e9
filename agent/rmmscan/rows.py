"""Inspected files → DeviceFileCertificateInfo rows (columns.py), one per signature.

An unsigned PE is one row with IsSigned false; a non-PE has no row.
"""

from __future__ import annotations

import datetime as dt
import json
import ntpath
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from .columns import NAMES
from .device import Device
from .inspect import FileHashes, Inspection, SignatureInfo, Status, Verdict
from .text import brief, path_columns


def iso(value: dt.datetime | None) -> str | None:
    """ISO-8601 UTC with Z; fractions of a second only when there are some."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


@dataclass(frozen=True, slots=True)
class FileRef:
    """Where a stream came from, for the path columns."""

    path: str | bytes
    source: str  # ScanSource


def file_name(folder_path: str) -> str:
    """Windows paths split on either slash; POSIX paths only on '/'."""
    if (len(folder_path) > 2 and folder_path[1] == ":") or folder_path.startswith("\\\\"):
        return ntpath.basename(folder_path)
    return posixpath.basename(folder_path)


def make_rows(
    inspection: Inspection,
    ref: FileRef,
    device: Device,
    hashes: FileHashes,
    verdicts: list[Verdict] | None,
    report_id: Callable[[], int],
    now: dt.datetime | None = None,
) -> list[dict]:
    if not inspection.is_pe:
        return []
    folder_path, raw = path_columns(ref.path)
    stamp = iso(now or dt.datetime.now(dt.UTC))
    base = {
        "Timestamp": stamp,
        "DeviceId": device.device_id,
        "DeviceName": device.device_name,
        "SHA1": hashes.sha1,
        "FileName": file_name(folder_path),
        "FolderPath": folder_path,
        "FolderPathBytes": raw,
        "SHA256": hashes.sha256,
        "MD5": hashes.md5,
        "FileSize": inspection.size,
        "Anomalies": json.dumps([str(a) for a in inspection.anomalies]),
        "ScanSource": ref.source,
        "RuleId": None,
        "RuleName": None,
    }
    if not inspection.signatures:
        row = dict.fromkeys(NAMES)
        row.update(base)
        row.update(
            IsSigned=False,
            IsTrusted=False,
            IsRootSignerMicrosoft=False,
            VerificationStatus=str(Status.UNSIGNED),
            ReportId=report_id(),
        )
        return [row]
    rows = []
    for i, sig in enumerate(inspection.signatures):
        verdict = verdicts[i] if verdicts is not None else None
        row = dict.fromkeys(NAMES)
        row.update(base)
        row.update(signature_columns(sig, verdict))
        row["ReportId"] = report_id()
        rows.append(row)
    return rows


def signature_columns(sig: SignatureInfo, verdict: Verdict | None) -> dict:
    signer, issuer = sig.signer, sig.issuer
    status = verdict.status if verdict else Status.NOT_CHECKED
    detail = verdict.detail if verdict else ""
    if status is Status.NOT_CHECKED:
        detail = "not verified"
    elif not detail and sig.problems:
        detail = "; ".join(sig.problems)
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
        "IsTrusted": bool(verdict and verdict.is_trusted),
        "IsRootSignerMicrosoft": bool(verdict and verdict.root_microsoft),
        "SignatureIndex": sig.index,
        "SignerSubject": signer.subject if signer else None,
        "IssuerSubject": signer.issuer if signer else None,
        "DigestAlgorithm": sig.digest_algorithm or None,
        "VerificationStatus": str(status),
        "VerificationDetail": brief(detail) if detail else None,
        "CountersignatureType": sig.countersignature_kind,
    }
