"""The human table of a sweep: one block per file, what a hunter reads first.

A block is the file's path, its file-level columns once, each of its signatures once, and
the rules it matched, each rule once; a blank line ends it. A file that matches three rules
is one block, not three copies of the same certificate (long values cut with … here):

    C:\\Users\\kim\\Downloads\\dwagent.exe
      SHA256:       254d36fc9523c001993e78ea6ae106a405af2c1e868a7c2c9f1f447a6d6e571a, 8432 bytes
      Company:      DWSNET srl
      Product:      DWAgent
      Signature 0:  DWSNET OÜ
        Issuer:     DWSNET OÜ
        Serial:     5e1f5167, thumbprint 6ca73517f5918af0984ff7ff8800ec85ec065c89
        Verdict:    UntrustedRoot, timestamped 2025-03-03T09:30:05Z
        Detail:     the signer's chain does not lead to a trusted root: CN=DWSNET OÜ, O=…
      Rules:        Remote Management and Monitoring tool - DWService - File Signature
                    Remote … - Name or Version Information without a Trusted DWSNET Signature
                    Remote … - Untrusted or Lookalike DWSNET Signature

When the block shows more than one signature, each rule says which ones it matched
("(signatures 1, 2)"). An inventory row (no RuleId, from --emit signed|all) gives the same
block without Rules; a row the rules could not judge is listed under "Not judged", since it
may be a detection. The signatures shown are those of the rows emitted: under the default
--emit detections, a file whose nested signature alone matched shows that one. A file
without a signature shows "Signature:    none".

Every value from a file goes through text.printable, and each such value ends its own line
after a label the table writes: a name with a newline or a terminal escape sequence is shown
quoted as $'…', escaped, never obeyed, and can neither start a line nor pass for another
field or another name. A path that is not UTF-8 is shown from FolderPathBytes, its
undecodable bytes as \\xNN (FolderPath holds U+FFFD there, which would make two names look
alike). JSON and CSV carry the exact values.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence

from ..text import brief, printable
from .sink import StreamSink

LABEL = 14  # "  Signature 0:  " puts values at column 16, as the indented fields below do
LONG = 2000  # a certificate name can be megabytes; a person reads the start of it
NOT_JUDGED = "internal_error"  # the Anomalies entry of a row the rules could not judge


def shown_path(row: dict) -> str:
    """The file's name as a person reads it: printable, and from the raw bytes when the name
    is not UTF-8, so that two names differing only in undecodable bytes never look alike."""
    raw = row.get("FolderPathBytes")
    if raw:
        try:
            name = base64.b64decode(raw, validate=True).decode("utf-8", "surrogateescape")
            return printable(name)
        except (binascii.Error, ValueError):
            pass  # not base64 (a row never holds that): the decoded column is still shown
    return printable(str(row.get("FolderPath") or ""))


def anomalies(row: dict) -> list[str]:
    """The row's Anomalies column as a list; a value that is not a JSON array is one entry."""
    value = row.get("Anomalies")
    if not value:
        return []
    try:
        items = json.loads(value)
    except (TypeError, ValueError):
        return [str(value)]
    return [str(item) for item in items] if isinstance(items, list) else [str(items)]


def files(rows: Sequence[dict]) -> Iterator[list[dict]]:
    """The rows grouped by file: consecutive rows with the same path. The engine hands over
    all rows of a file in one write, one after another, so a group never spans two writes."""
    group: list[dict] = []
    key = None
    for row in rows:
        this = (row.get("FolderPath"), row.get("FolderPathBytes"))
        if group and this != key:
            yield group
            group = []
        key = this
        group.append(row)
    if group:
        yield group


def _value(value) -> str | None:
    """A column's value as shown, or None when it is empty."""
    if value is None or value == "":
        return None
    return printable(brief(str(value), LONG))


def _first(rows: list[dict], name: str):
    """A file-level column: the first row that has it (a row completed after an internal
    error may lack what the others carry)."""
    for row in rows:
        value = row.get(name)
        if value is not None and value != "":
            return value
    return None


def _signature_key(index) -> tuple[int, int]:
    return (0, index) if isinstance(index, int) else (-1, 0)


def _numbers(indexes: list) -> str:
    shown = [str(i) for i in sorted(indexes, key=_signature_key) if isinstance(i, int)]
    return ("signature " if len(shown) == 1 else "signatures ") + ", ".join(shown)


class TableSink(StreamSink):
    def emit(self, rows: Sequence[dict]) -> None:
        self.out.write("".join(block(group) for group in files(rows)))


def block(rows: list[dict]) -> str:
    """The block of one file, blank line included."""
    lines = [shown_path(rows[0])]

    def field(label: str, value, indent: int = 2) -> None:
        shown = _value(value)
        if shown is not None:
            lines.append(f"{' ' * indent}{label + ':':<{LABEL + 2 - indent}}{shown}")

    sha256, size = _first(rows, "SHA256"), _first(rows, "FileSize")
    if sha256 is not None:
        field("SHA256", f"{sha256}, {size} bytes" if size is not None else sha256)
    elif size is not None:
        field("Size", f"{size} bytes")
    field("Company", _first(rows, "VersionInfoCompanyName"))
    field("Product", _first(rows, "VersionInfoProductName"))
    seen_anomalies: dict[str, None] = {}
    for row in rows:
        seen_anomalies.update(dict.fromkeys(anomalies(row)))
    field("Anomalies", ", ".join(seen_anomalies))

    # Each signature once, in signature order, from the first of its rows.
    signatures: dict = {}
    for row in rows:
        signatures.setdefault(row.get("SignatureIndex"), row)
    for index in sorted(signatures, key=_signature_key):
        row = signatures[index]
        if row.get("IsSigned") is False:  # the one row of a file without a signature
            lines.append(f"  {'Signature:':<{LABEL}}none")
            continue
        number = f" {index}" if isinstance(index, int) else ""
        head = f"  {f'Signature{number}:':<{LABEL - 1}} "
        signer = _value(row.get("Signer"))
        lines.append(head + signer if signer is not None else head.rstrip())
        field("Issuer", row.get("Issuer"), 4)
        # Both are fixed-width hex the sink can trust, so they share a line.
        serial, thumbprint = row.get("CertificateSerialNumber"), row.get("SignerHash")
        if serial and thumbprint:
            field("Serial", f"{serial}, thumbprint {thumbprint}", 4)
        else:
            field("Serial", serial, 4)
            field("Thumbprint", thumbprint, 4)
        status = row.get("VerificationStatus") or "NotChecked"
        when = row.get("CertificateCountersignatureTime")
        field("Verdict", f"{status}, timestamped {when}" if when else status, 4)
        field("Detail", row.get("VerificationDetail"), 4)

    # Each rule once, in the order the rows name them, with the signatures it matched.
    rules: dict[tuple, list] = {}
    not_judged: list = []
    for row in rows:
        if row.get("RuleId") or row.get("RuleName"):
            key = (row.get("RuleId"), row.get("RuleName"))
            matched = rules.setdefault(key, [])
            if row.get("SignatureIndex") not in matched:
                matched.append(row.get("SignatureIndex"))
        elif NOT_JUDGED in anomalies(row):
            not_judged.append(row.get("SignatureIndex"))
    several = len(signatures) > 1
    label = "Rules:"
    for (rule_id, rule_name), matched in rules.items():
        name = printable(str(rule_name or rule_id))
        suffix = f"  ({_numbers(matched)})" if several else ""
        lines.append(f"  {label:<{LABEL}}{name}{suffix}")
        label = ""
    if not_judged:
        where = f" ({_numbers(not_judged)})" if several else ""
        lines.append(f"  {'Not judged:':<{LABEL}}an internal error stopped the rules{where}")
    return "\n".join(lines) + "\n\n"
