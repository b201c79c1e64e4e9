"""The line format: one line per row, for scripts and for eyes, in the spirit of clamscan's
`path: NAME FOUND`, with the fields separated by tabs:

    /srv/dl/agent.exe<TAB>Remote … - File Signature<TAB>FOUND<TAB>[Ok] DWSNET srl
    /srv/dl/setup.exe<TAB>Remote … - File Signature<TAB>FOUND<TAB>[#1 UntrustedRoot] DWSNET OÜ
    /srv/dl/tool.exe<TAB>-<TAB>OK<TAB>[Ok] Contoso Tools Ltd

Grammar (TAB is one U+0009; every line ends with one LF):

    line      = path TAB rule TAB outcome TAB signature LF
    path      = the file's name as text.printable shows it; a name that is not UTF-8 is
                shown from FolderPathBytes, its undecodable bytes as \\xNN
    rule      = printable(RuleName) when the outcome is FOUND, else "-"
    outcome   = "FOUND"    a detection: the row matched the rule
              / "OK"       an inventory row (--emit signed|all): it matched no rule
              / "ERROR"    the rules could not judge the row (an internal error, said on
                           stderr): it may be a detection, so it is never left out
    signature = "[" ["#" index " "] status "]" [" " signer]
      index   = SignatureIndex of a nested signature; absent for the primary one and for a
                file without a signature
      status  = VerificationStatus: Ok, Unsigned, InvalidDigest, BadSignature, ...
      signer  = printable(Signer), at most 2000 characters; absent when there is none

Why tabs: printable never yields a tab, a line break or any other control character (it
quotes a name holding one as $'…', with \\t and \\n inside), so no value can add a field or
a line, and `cut -f1` or `awk -F'\\t'` split every line exactly. clamscan's ": " cannot be
split that way: a printable name may contain ": " and " FOUND" as it is. The signer, the
only attacker-chosen text after the path, comes last, after the status the sink writes
itself, so a signer named "X] [Ok" cannot pass for the verdict.

One row is one line: a sweep prints as many lines here as jsonl prints rows, and a file that
matches k rules on one signature is k lines. The path field reads back to the name's exact
bytes in bash (`$'…'` is bash's own quoting); jsonl and csv carry every column exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..text import brief, printable
from .sink import StreamSink
from .table import LONG, NOT_JUDGED, anomalies, shown_path

FOUND, OK, ERROR = "FOUND", "OK", "ERROR"


def line(row: dict) -> str:
    """The line of one row, line feed included."""
    if row.get("RuleId") or row.get("RuleName"):
        rule, outcome = printable(str(row.get("RuleName") or row.get("RuleId"))), FOUND
    else:
        rule, outcome = "-", ERROR if NOT_JUDGED in anomalies(row) else OK
    index = row.get("SignatureIndex")
    status = printable(str(row.get("VerificationStatus") or "NotChecked"))
    signature = f"[#{index} {status}]" if isinstance(index, int) and index > 0 else f"[{status}]"
    signer = row.get("Signer")
    if signer:
        signature += " " + printable(brief(str(signer), LONG))
    return f"{shown_path(row)}\t{rule}\t{outcome}\t{signature}\n"


class LineSink(StreamSink):
    def emit(self, rows: Sequence[dict]) -> None:
        self.out.write("".join(line(row) for row in rows))
