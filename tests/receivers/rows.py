"""Rows the transports' tests send: names a file on an endpoint may have, chosen as an attacker
would (line breaks, control characters, terminal escapes, non-ASCII, undecodable bytes as lone
surrogates, quotes, NUL, Unicode line separators), which every receiver must give back exactly,
and a small row of the engine's columns."""

AWKWARD = [
    "line\nbreak.exe", "tab\tand\rcr.dll", "bell\x07\x1b[31mred.exe", "Überprüfung.exe",
    "日本語のファイル.exe", "emoji-\U0001f600.exe", "lone-\udcff-surrogate.exe",
    'quote"back\\slash.exe', "nul\x00inside.exe", "\u2028separator\u2029.exe",
    "plain.exe", "ctl\x00\x01\x1b[31m\x7f\x85.exe", "Ünïcødé 名前 🚀 ﷽.exe",
    "undecodable\udcff\udc80.exe",  # bytes 0xFF 0x80 of a non-UTF-8 name, surrogate-escaped
    'quote"back\\slash{}.exe',
]  # fmt: skip


def row(i: int, name: str = "a.exe", pad: int = 0) -> dict:
    return {
        "Timestamp": f"2026-12-02T10:00:{i % 60:02d}.123456Z", "DeviceName": "host.example",
        "FileName": name, "FolderPath": f"C:\\Tools\\{name}", "ReportId": i,
        "IsSigned": True, "Signer": "DWSNET OÜ", "Pad": "x" * pad,
    }  # fmt: skip
