"""Which signers two versions of rmmscan report, file by file, over the fuzz corpus, the
findings (fuzz/crashes/, triaged ones too), samples/pe and tests/regressions:

    .venv/bin/python fuzz/compare_signers.py OLD_AGENT_DIR NEW_AGENT_DIR

(an `agent/` folder each, e.g. a worktree's). It prints how many files lost a signer the old
version reported (each named), how many gained one, and the rows without a signer in each:
a change to the signature reader must lose none.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_READ = """
import io, json, sys
from rmmscan.inspect import inspect_stream
out = {}
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        found = inspect_stream(io.BytesIO(data)).signatures
        out[path] = [[s.signer.cn, s.signer.sha1] if s.signer else None for s in found]
    except Exception as exc:
        out[path] = ["exception", repr(exc)]
json.dump(out, sys.stdout)
"""


def files() -> list[str]:
    found = [*(ROOT / "fuzz" / "corpus").glob("*"), *(ROOT / "fuzz" / "crashes").glob("**/*.bin")]
    found += [*(ROOT / "samples" / "pe").glob("*"), *(ROOT / "tests" / "regressions").glob("*.bin")]
    return sorted(str(p) for p in found if p.is_file())


def signers(agent: str, paths: list[str]) -> dict[str, list]:
    env = dict(os.environ, PYTHONPATH=agent)
    result = subprocess.run(
        [sys.executable, "-c", _READ, *paths], env=env, capture_output=True, check=True
    )
    return json.loads(result.stdout)


def main() -> None:
    old_agent, new_agent = sys.argv[1:3]
    paths = files()
    old, new = signers(old_agent, paths), signers(new_agent, paths)
    lost = gained = 0
    unsigned = [0, 0]
    for path in paths:
        before = collections.Counter(tuple(s) if s else None for s in old[path])
        after = collections.Counter(tuple(s) if s else None for s in new[path])
        unsigned[0] += before.pop(None, 0)
        unsigned[1] += after.pop(None, 0)
        if before - after:
            lost += 1
            print(f"lost: {path}: {dict(before - after)}")
        gained += bool(after - before)
    print(
        f"{len(paths)} files: {lost} lost a signer, {gained} gained one; "
        f"rows without a signer {unsigned[0]:,} -> {unsigned[1]:,}"
    )


if __name__ == "__main__":
    main()
