"""Atheris harness over the configuration reader: read_config on any bytes.

    .venv/bin/python fuzz/config_fuzz.py [libFuzzer flags] CORPUS_DIR   fuzz (FUZZ_TARGET=config
                                                                       bash fuzz/run SECONDS)
    .venv/bin/python fuzz/config_fuzz.py --seed DIR      write the seed corpus into DIR
    .venv/bin/python fuzz/config_fuzz.py --replay PATH... run every file once, no atheris

The contract is tests/config/test_config_fuzz.py's `check`, the suite's own: read_config
returns a Config or raises ConfigError; each problem's line is None or inside the file, its
message is not empty, its shown line is printable (no newline, no control character), its
line is where KeyLines places its key, and no text shows the secret (RMMSCAN_FUZZ_SECRET in
the environment, and a private secret file, both referenced by the seeds). Any other
exception, or a broken promise (AssertionError), is saved as
fuzz/crashes/config-crash-<signature>.bin with its traceback beside it (.txt), one file per
distinct signature, and the campaign goes on. An input read in over a second is saved as
config-slow-*.bin; libFuzzer's -timeout catches a hang (config-timeout-*).
"""

from __future__ import annotations

import os
import random
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "config"))
SLOW_S = 1.0

REPLAY = "--replay" in sys.argv[1:2] or "--seed" in sys.argv[1:2]
if not REPLAY:
    import atheris

    with atheris.instrument_imports(include=["rmmscan.config", "tomllib"]):
        import tomllib  # noqa: F401

        import test_config_fuzz as contract  # tests/config/test_config_fuzz.py

        import rmmscan.config.schema
        import rmmscan.config.source  # noqa: F401
else:
    import test_config_fuzz as contract

WORKDIR = Path(tempfile.mkdtemp(prefix="rmmscan-config-fuzz-"))
for _name, _mode in (("fuzz.secret", 0o600), ("open.secret", 0o644)):
    (WORKDIR / _name).write_text(contract.SECRET + "\n")
    (WORKDIR / _name).chmod(_mode)
from findings import Findings, replay, write_seeds  # noqa: E402  (fuzz/findings.py)

FINDINGS = Findings('config-', ("rmmscan", "tomllib", "test_config_fuzz"))


def test_one_input(data: bytes) -> None:
    if contract.SECRET.encode() in data:
        return  # the file itself holds the marker: showing the file's text is no leak
    started = time.monotonic()
    try:
        contract.check(WORKDIR, data, budget=60.0)
    except Exception as exc:  # every escape and every broken promise is a finding
        FINDINGS.save("crash", FINDINGS.signature(exc), data, traceback.format_exc())
        return
    elapsed = time.monotonic() - started
    if elapsed > SLOW_S:
        FINDINGS.save("slow", f"slow {len(data) >> 10} KiB", data, f"{elapsed:.2f} s\n")


def seeds() -> list[bytes]:
    """The example, the uncommented example and the suite's small seeds, with a few variants
    the mutator reaches slowly: deep nesting, long digits, long lines, line separators."""
    found = list(contract.SEEDS_BYTES)
    found += [
        b"a = " + b"[" * 40 + b"]" * 40 + b"\n",
        b'[sinks.y]\ntype = "syslog"\naddress = "h:' + b"9" * 40 + b'"\noutbox_max_mb = inf\n',
        b"a = [\n[" + b" " * 200 + b"1" + b" " * 200 + b"],\n]\n",
        "# \u2028\x85\nflush_timeout = nan\n\"k\\n\" = 1\n".encode(),
        b'[[sinks.a]]\ntype = "jsonl"\n[sinks."b\\n"]\ntype = "hec"\nurl = "\\u001b"\n',
    ]
    return found


# -- structured mutations: the file as TOML lines ---------------------------------------------
_PAIR = re.compile(rb"^\s*([^=#\n]+?)\s*=\s*(.*)$")
_DICTIONARY = [
    line.encode()
    for seed in contract.SEEDS
    for line in seed.split("\n")
    if line and not line.startswith("# -")
] + [
    b"[sinks]", b"[[sinks]]", b"[[sinks.a]]", b"sinks = 1", b"sinks = []", b'"a\\u0000b" = 1',
    b"[agent]", b"[[agent]]", b"agent = 1", b'settle = "1e9h"', b"nice = 1e3",
    b"a.b.c = {x = {y = [1, {z = 2}]}}", b"x = nan", b"x = -inf", b"x = 1e999", b"x = 0x7f",
    b"x = 1979-05-27T07:32:00Z", b'x = """\n"""', b"x = '''", b'emit = "all"',
    b'token_env = "RMMSCAN_FUZZ_SECRET"', b'token_file = "fuzz.secret"',
    b'client_secret_file = "open.secret"', b'type = "logs-ingestion"', b"managed_identity = true",
]  # fmt: skip
_VALUES = [b'"x"', b"1", b"0", b"-1", b"true", b"[]", b'["a", 1]', b"{}", b'{ type = "jsonl" }',
           b"nan", b"inf", b"1.5", b'"https://h"', b'"h:1"', b"'~'", b'"\\u0000"',
           b"9" * 30]  # fmt: skip


def structured(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        pair = _PAIR.match(lines[i])
        op = rng.randrange(7)
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif op == 2:
            line = lines.pop(i)
            lines.insert(rng.randrange(len(lines) + 1), line)
        elif op == 3:
            lines.insert(i, rng.choice(_DICTIONARY))
        elif op == 4 and pair:
            lines[i] = pair.group(1) + b" = " + rng.choice(_VALUES)
        elif op == 5 and pair:
            j = rng.randrange(len(lines))
            other = _PAIR.match(lines[j])
            if other:
                lines[i] = pair.group(1) + b" = " + other.group(2)
                lines[j] = other.group(1) + b" = " + pair.group(2)
        elif op == 6 and lines[i].startswith(b"# "):
            lines[i] = lines[i][2:]
    return b"\n".join(lines)


def custom_mutator(data: bytes, max_size: int, rng_seed: int) -> bytes:
    """Half libFuzzer's byte mutations, half line-level TOML ones (tests/config's, in bytes)."""
    rng = random.Random(rng_seed)
    if rng.random() < 0.5 or not data:
        return atheris.Mutate(data, max_size)
    return structured(data, rng)[:max_size]


def main() -> None:
    if sys.argv[1:2] == ["--seed"]:
        write_seeds(Path(sys.argv[2]), seeds())
        return
    os.environ[contract.SECRET_ENV] = contract.SECRET
    if sys.argv[1:2] == ["--replay"]:
        replay(sys.argv[2:], test_one_input, FINDINGS)
        return
    atheris.Setup(sys.argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
