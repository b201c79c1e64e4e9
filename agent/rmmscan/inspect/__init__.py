"""Inspection: what a byte stream is, who signed it, and whether that holds.

Pure functions over a seekable binary stream (never a path), cheap checks first:
``inspect_stream`` reads the headers and the certificate table only (bounded reads);
``Inspector.verify`` and ``hash_stream`` read the whole stream and run only on request.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path
from typing import BinaryIO

from . import certtable, pe
from .hashes import FileHashes, hash_stream
from .model import Anomaly, CertInfo, Inspection, SignatureInfo, Status, Verdict
from .versioninfo import version_info

# The Authenticode digest excludes the table by its header; where the header lies about it,
# the digest is undefined and Windows refuses the file: no verdict but Malformed.
LAYOUT_BROKEN = frozenset({Anomaly.TABLE_SIZE_EXCEEDS_FILE, Anomaly.TABLE_OUTSIDE_FILE})

__all__ = [
    "Anomaly",
    "CertInfo",
    "FileHashes",
    "Inspection",
    "Inspector",
    "SignatureInfo",
    "Status",
    "Verdict",
    "hash_stream",
    "inspect_stream",
    "version_info",
]


def stream_size(stream: BinaryIO) -> int:
    return stream.seek(0, os.SEEK_END)


def inspect_stream(stream: BinaryIO, size: int | None = None) -> Inspection:
    """Recognise a PE and read every embedded signature; never raises on bad content.

    An OSError (the stream cannot be read) is the caller's to report. Any other exception is
    a bug: it lands on ``Inspection.errors``, and what was read before it stays on the result.
    """
    if size is None:
        size = stream_size(stream)
    try:
        header = pe.parse_header(stream, size)
    except pe.NotPE as exc:
        return Inspection(size=size, is_pe=False, not_pe_reason=str(exc))
    result = Inspection(size=size, is_pe=True, header=header)
    try:
        offset, length = header.cert_table
        entries, result.anomalies = certtable.read_table(
            stream, size, offset, length, header.headers_size
        )
        if not entries:
            return result
        from . import authenticode  # signify and asn1crypto: 0.2 s to import, only when needed

        sigs, more = authenticode.signatures(entries, result.errors)
        result.signatures = sigs
        result.anomalies.extend(a for a in more if a not in result.anomalies)
    except OSError:
        raise
    except Exception as exc:
        internal_error(result, "inspection", exc)
    return result


def internal_error(inspection: Inspection, where: str, exc: BaseException) -> None:
    """Record a bug met while reading one file: the caller reports it, the rows still go."""
    inspection.errors.append(f"{where}: {type(exc).__name__}: {exc}")
    if Anomaly.INTERNAL_ERROR not in inspection.anomalies:
        inspection.anomalies.append(Anomaly.INTERNAL_ERROR)


class Inspector:
    """Holds the trust context, built on the first verification and reused after.

    Verification is serialized: the trust context's certificates are asn1crypto objects that
    parse lazily on first access, which is not thread-safe (two threads racing on a first
    verification make asn1crypto raise KeyError from inside). Verification runs only for
    rows a rule or the emission reaches, so the lock costs little.
    """

    def __init__(
        self,
        trusted_roots: list[Path] | None = None,
        distrust: list[Path] | None = None,
        system_roots: bool = True,
    ):
        self._options = (trusted_roots or [], distrust or [], system_roots)
        self.names_file: Path | None = None  # the trust context's saved names (trust.build)
        self._trust = None
        self._lock = threading.RLock()

    def check_options(self) -> None:
        """Read the user's trust files now (ValueError/OSError naming the file), cheaply."""
        from .trustfiles import load_distrust, pem_certificates

        roots, distrust, _ = self._options
        pem_certificates(roots)
        for path in distrust:
            load_distrust(path)

    @property
    def trust(self):
        with self._lock:
            return self._build()

    def _build(self):
        if self._trust is None:
            from . import trust

            roots, distrust, system = self._options
            self._trust = trust.build(roots, distrust, system, self.names_file)
        return self._trust

    def verify(
        self, stream: BinaryIO, inspection: Inspection, now: dt.datetime | None = None
    ) -> list[Verdict]:
        with self._lock:
            if inspection.verdicts is None:
                from .verify import verify_all

                broken = bool(LAYOUT_BROKEN.intersection(inspection.anomalies))
                try:
                    inspection.verdicts = verify_all(
                        stream,
                        inspection.signatures,
                        self._build(),
                        now,
                        layout_broken=broken,
                        errors=inspection.errors,
                    )
                except OSError:
                    raise
                except Exception as exc:  # a bug: every signature keeps its row, Malformed
                    internal_error(inspection, "verification", exc)
                    detail = f"not verified: internal error ({type(exc).__name__})"
                    inspection.verdicts = [
                        Verdict(Status.MALFORMED, False, False, detail)
                        for _ in inspection.signatures
                    ]
            return inspection.verdicts
