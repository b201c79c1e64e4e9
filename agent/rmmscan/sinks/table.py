"""The human table of a sweep: one block per emitted row, the columns a hunter reads first.

Every value from a file goes through text.printable: a name with a newline or a terminal
escape sequence is shown quoted as $'…', escaped, never obeyed, and never looks like another
name (JSON and CSV carry the exact value).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..text import brief, printable
from .sink import StreamSink

FIELDS = (
    ("Rule", "RuleName"),
    ("Signer", "Signer"),
    ("Issuer", "Issuer"),
    ("Serial", "CertificateSerialNumber"),
    ("Thumbprint", "SignerHash"),
    ("Verdict", "VerificationStatus"),
    ("Detail", "VerificationDetail"),
    ("Signed at", "CertificateCountersignatureTime"),
    ("Company", "VersionInfoCompanyName"),
    ("Product", "VersionInfoProductName"),
    ("SHA256", "SHA256"),
)


class TableSink(StreamSink):
    def emit(self, rows: Sequence[dict]) -> None:
        for row in rows:
            self.out.write(printable(str(row.get("FolderPath") or "")) + "\n")
            for label, name in FIELDS:
                value = row.get(name)
                if value is None or value == "":
                    continue
                self.out.write(f"  {label + ':':<12}{printable(brief(str(value), 2000))}\n")
            self.out.write("\n")
