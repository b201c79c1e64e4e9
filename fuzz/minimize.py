"""Shrink a finding of the fuzzer while it still gives the same finding.

    .venv/bin/python fuzz/minimize.py IN.bin OUT.bin

The finding is what fuzz/inspect_fuzz.py would save the input as: the escaped exception's
signature, or the first error inspection caught itself (digits left out, so that
"signature 11" and "signature 0" are one finding). libFuzzer's -minimize_crash only
shrinks inputs that crash the process; this also shrinks the errors inspection caught, and
does it structurally (table entries, DER subtrees, the file's tail), so the result is
still a PE whose table the header describes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.argv.insert(1, "--replay")  # inspect_fuzz: no atheris
import inspect_fuzz  # noqa: E402

del sys.argv[1]
import mutate  # noqa: E402  (tests/mutate.py, on the path inspect_fuzz sets)


def finding(data: bytes) -> str | None:
    try:
        inspection = inspect_fuzz.check_inspection(data)
    except Exception as exc:
        return "crash " + inspect_fuzz.signature(exc)
    for error in inspection.errors if inspection is not None else ():
        return "internal " + re.sub(r"\d+", "N", error)
    return None


def shrink(data: bytes, wanted: str) -> bytes:
    def keeps(candidate: bytes) -> bool:
        return candidate != data and finding(candidate) == wanted

    changed = True
    while changed:
        changed = False
        # Fewer certificate-table entries.
        try:
            entries = [e.blob for e in mutate.layout(data).entries]
        except Exception:
            entries = []
        for i in reversed(range(len(entries))):
            candidate = mutate.with_table(data, entries[:i] + entries[i + 1 :])
            if keeps(candidate):
                data, entries, changed = candidate, entries[:i] + entries[i + 1 :], True
        # Fewer DER subtrees in the first entry, outermost first.
        seed = mutate.Seed.of(data)
        if seed.tree is not None:
            queue = [seed.tree]
            while queue:
                node = queue.pop(0)
                kids = node.children or []
                i = 0
                while i < len(kids):
                    removed = kids.pop(i)
                    rest = [e.blob for e in seed.layout.entries[1:]]
                    candidate = mutate.with_table(data, [mutate.encode(seed.tree), *rest])
                    if keeps(candidate):
                        data, changed = candidate, True
                    else:
                        kids.insert(i, removed)
                        queue.append(removed)
                        i += 1
        # A shorter file.
        lo, hi = 0, len(data)
        while lo < hi:
            mid = (lo + hi) // 2
            if keeps(data[:mid]):
                hi = mid
            else:
                lo = mid + 1
        if hi < len(data) and keeps(data[:hi]):
            data, changed = data[:hi], True
    return data


def main() -> None:
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    data = source.read_bytes()
    wanted = finding(data)
    if wanted is None:
        sys.exit(f"{source}: no finding to keep")
    small = shrink(data, wanted)
    target.write_bytes(small)
    print(f"{wanted}\n{len(data)} -> {len(small)} bytes: {target}")


if __name__ == "__main__":
    main()
