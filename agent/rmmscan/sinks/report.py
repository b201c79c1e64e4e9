"""The human report of `rmmscan inspect --format table`, in the manner of sigcheck -i.

Every value from a file (names, paths, certificate fields) goes through text.printable.
"""

from __future__ import annotations

from typing import TextIO

from ..inspect import Inspection, Verdict
from ..rows.build import iso
from ..text import brief, printable


def _line(out: TextIO, label: str, value) -> None:
    out.write(f"  {label + ':':<22}{printable(brief(str(value), 2000))}\n")


def write_report(
    out: TextIO,
    path: str,
    inspection: Inspection,
    verdicts: list[Verdict] | None,
    hashes,
    version: dict[str, str],
) -> None:
    out.write(printable(path) + ":\n")
    if not inspection.is_pe:
        _line(out, "Type", f"not a PE ({inspection.not_pe_reason})")
        out.write("\n")
        return
    header = inspection.header
    kind = ("DLL" if header.is_dll else "EXE") + (" 64-bit" if header.is_64 else " 32-bit")
    _line(out, "Type", f"PE {kind}, machine {header.machine:#06x}, {inspection.size} bytes")
    if not inspection.signatures:
        _line(out, "Verified", "Unsigned")
    for i, sig in enumerate(inspection.signatures):
        verdict = verdicts[i] if verdicts else None
        role = "primary" if sig.index == 0 else "nested" if sig.entry == 0 else f"entry {sig.entry}"
        out.write(f"  Signature {sig.index} ({role}, {sig.digest_algorithm or '?'}):\n")
        status = verdict.status if verdict else "NotChecked"
        _line(
            out,
            "  Verified",
            status + (f" - {brief(verdict.detail)}" if verdict and verdict.detail else ""),
        )
        signer = sig.signer
        if signer is None:
            _line(out, "  Problems", "; ".join(sig.problems) or "signer not found")
            continue
        _line(out, "  Signer", signer.cn)
        _line(out, "  Subject", signer.subject)
        _line(out, "  Issuer", signer.issuer)
        _line(out, "  Serial", signer.serial_hex)
        _line(out, "  Thumbprint", signer.sha1)
        _line(out, "  Valid", f"{iso(signer.not_before)} to {iso(signer.not_after)}")
        if sig.countersignature_time:
            _line(
                out,
                "  Timestamp",
                f"{iso(sig.countersignature_time)} ({sig.countersignature_kind})",
            )
        else:
            _line(out, "  Timestamp", "none")
        if signer.crl_urls:
            _line(out, "  CRL", ", ".join(signer.crl_urls))
        chain = verdict.chain if verdict and verdict.chain else ()
        if chain:
            _line(out, "  Chain", " -> ".join(c.cn for c in chain))
        if verdict:
            _line(out, "  Trusted", "yes" if verdict.is_trusted else "no")
            _line(out, "  Microsoft root", "yes" if verdict.root_microsoft else "no")
    if inspection.anomalies:
        _line(out, "Anomalies", ", ".join(inspection.anomalies))
    for key, value in version.items():
        _line(out, key, value)
    if hashes is not None:
        _line(out, "MD5", hashes.md5)
        _line(out, "SHA1", hashes.sha1)
        _line(out, "SHA256", hashes.sha256)
    out.write("\n")
