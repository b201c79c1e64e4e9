"""The user's trust files, read without signify: PEM roots and distrust lists.

Checked at start-up, so that a bad option fails before a sweep begins, without building the
trust context (trust.py says what that costs) that a sweep may never need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from asn1crypto import pem, x509


@dataclass(frozen=True, slots=True)
class DistrustEntry:
    reason: str
    sha1: str = ""
    serial: str = ""  # hex of the INTEGER content octets, as in CertificateSerialNumber
    issuer: str = ""  # issuer CN; with serial, narrows a serial to one CA


def load_distrust(path: Path | None = None) -> list[DistrustEntry]:
    """The shipped list (data/distrust.json), or a user's file in the same format."""
    if path is None:
        text = resources.files("rmmscan").joinpath("data/distrust.json").read_text("utf-8")
        source = "rmmscan/data/distrust.json"
    else:
        text = path.read_text("utf-8")
        source = str(path)
    try:
        doc = json.loads(text)
        return [
            DistrustEntry(
                reason=e["reason"],
                sha1=e.get("sha1", "").lower(),
                serial=e.get("serial", "").lower(),
                issuer=e.get("issuer", ""),
            )
            for e in doc["certificates"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{source}: not a distrust list ({exc}); expected "
            '{"certificates": [{"reason": ..., "sha1": ... | "serial": ..., "issuer": ...}]}'
        ) from exc


def pem_certificates(paths: list[Path]) -> list[bytes]:
    """The DER of every certificate in the PEM files, each parsed once to prove it is one."""
    found: list[bytes] = []
    for path in paths:
        data = path.read_bytes()
        if not pem.detect(data):
            raise ValueError(
                f"{path}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)"
            )
        try:
            for kind, _headers, der in pem.unarmor(data, multiple=True):
                if kind != "CERTIFICATE":
                    continue
                x509.Certificate.load(der).subject.native  # noqa: B018 - parse it now
                found.append(der)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable PEM certificate ({exc})") from exc
        if not found:
            raise ValueError(f"{path}: no CERTIFICATE block in the PEM file")
    return found
