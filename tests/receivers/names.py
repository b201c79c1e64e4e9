"""Names a file on an endpoint may have, as an attacker would choose them: every receiver must
get each one back exactly (line breaks, control characters, terminal escapes, non-ASCII, an
undecodable byte as a lone surrogate, quotes, NUL, Unicode line separators)."""

AWKWARD = [
    "line\nbreak.exe", "tab\tand\rcr.dll", "bell\x07\x1b[31mred.exe", "Überprüfung.exe",
    "日本語のファイル.exe", "emoji-\U0001f600.exe", "lone-\udcff-surrogate.exe",
    'quote"back\\slash.exe', "nul\x00inside.exe", "\u2028separator\u2029.exe",
]  # fmt: skip
