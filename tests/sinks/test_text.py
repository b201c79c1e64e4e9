"""Names on the terminal are unambiguous: a name that needs escaping is shown as bash's
$'…' (backslashes and quotes escaped inside), any other name as it is, Windows paths
included. bash itself reads each shown name back to the very bytes of the name."""

from __future__ import annotations

import io
import json
import os
import subprocess

from rmmscan.sinks.console import Console
from rmmscan.sinks.jsonl import dumps
from rmmscan.sinks.stats import ScanStats
from rmmscan.sinks.table import TableSink
from rmmscan.text import printable

NAMES = [
    "/x/a\tb.exe",
    "/x/a\\tb.exe",
    "/x/new\nline.exe",
    "/x/it's.exe",
    "/x/it's\r.exe",
    "/x/esc\x1b[2J.exe",
    "/x/bidi\u202eexe.scr",
    "/x/nbsp\u00a0name.exe",
    "/x/c1\u0085.exe",
    "/x/" + b"bad\xff\x80.exe".decode("utf-8", "surrogateescape"),
    "$'x.exe",
    "/x/$'x.exe",
    "C:\\Program Files\\Vendor\\agent.exe",
    "\\\\server\\share\\t.exe",
    "/x/plain name.exe",
    "/x/été.exe",
    "/x/emoji\U0001f600.exe",
    "/x/zero\u200bwidth.exe",
]


def test_printable_names_are_shown_as_they_are():
    for name in ("C:\\Program Files\\Vendor\\agent.exe", "\\\\server\\share\\t.exe",
                 "/x/plain name.exe", "/x/été.exe", "/x/it's.exe", "/x/$'x.exe"):  # fmt: skip
        assert printable(name) == name


def test_a_tab_and_a_backslash_t_look_different():
    tab, literal = printable("a\tb"), printable("a\\tb")
    assert tab == "$'a\\tb'"
    assert literal == "a\\tb"
    assert tab != literal
    assert printable("it's\n") == "$'it\\'s\\n'"
    assert printable("c:\\dir\\new\nline") == "$'c:\\\\dir\\\\new\\nline'"


def test_a_name_that_starts_like_a_quote_is_quoted():
    assert printable("$'x.exe") == "$'$\\'x.exe'"


def test_escapes_control_invisible_and_undecodable():
    assert printable("a\x1b[2Jb") == "$'a\\x1b[2Jb'"
    assert printable("a\u202eb") == "$'a\\u202eb'"
    assert printable("a\u00a0b") == "$'a\\u00a0b'"
    assert printable("a\u0085b") == "$'a\\u0085b'"  # a C1 control: \u, never \x
    assert printable(b"a\xffb".decode("utf-8", "surrogateescape")) == "$'a\\xffb'"


def test_bash_reads_every_shown_name_back_to_its_bytes():
    env = dict(os.environ, LC_ALL="C.UTF-8")
    for name in NAMES:
        shown = printable(name)
        assert shown.isprintable(), shown
        out = subprocess.run(
            ["bash", "-c", f"printf '%s' {shown}" if shown.startswith("$'") else
             'printf "%s" "$1"', "bash", shown],
            capture_output=True, env=env, check=True,
        ).stdout  # fmt: skip
        assert out == os.fsencode(name), (name, shown)


def test_the_table_and_console_show_names_unambiguously_and_jsonl_exactly():
    rows = [
        {"FolderPath": "/x/a\tb.exe", "SignatureIndex": 0, "Signer": "Tab\tSigner",
         "RuleName": "r"},
        {"FolderPath": "/x/a\\tb.exe", "SignatureIndex": 0, "Signer": "Tab\\tSigner",
         "RuleName": "r"},
    ]  # fmt: skip
    out = io.StringIO()
    TableSink(out).write(rows)
    blocks = [b.splitlines() for b in out.getvalue().split("\n\n") if b.strip()]
    assert blocks[0][0] == "$'/x/a\\tb.exe'"
    assert blocks[1][0] == "/x/a\\tb.exe"
    assert "  Signature 0:  $'Tab\\tSigner'" in blocks[0]
    assert "  Signature 0:  Tab\\tSigner" in blocks[1]
    assert [json.loads(dumps(r)) for r in rows] == rows  # JSON keeps the exact names

    err = io.StringIO()
    console = Console(err, ScanStats(), progress=False)
    console.problem("/x/a\tb.exe", "unreadable", "Permission denied")
    console.problem("/x/a\\tb.exe", "unreadable", "Permission denied")
    assert err.getvalue().splitlines() == [
        "rmmscan: $'/x/a\\tb.exe': Permission denied",
        "rmmscan: /x/a\\tb.exe: Permission denied",
    ]
