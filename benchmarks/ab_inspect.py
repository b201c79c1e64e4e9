"""One side of an A/B of the signature reader: the best of 5 batches of 20 passes of
`inspect_stream` over the signed samples and the first 8 Microsoft DLLs of the real-world
cache (tests fetch them). Run it alternately with PYTHONPATH pointing at each tree:

    PYTHONPATH=/tmp/oldtree/agent .venv/bin/python benchmarks/ab_inspect.py
    PYTHONPATH=agent .venv/bin/python benchmarks/ab_inspect.py

The files are read from this checkout whichever code is measured.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from rmmscan.inspect import inspect_stream

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    files = sorted((ROOT / "samples" / "pe").glob("*.exe"))
    files += sorted((ROOT / "tests" / ".cache" / "realworld").glob("**/*.dll"))[:8]
    datas = [path.read_bytes() for path in files]
    for data in datas:
        inspect_stream(io.BytesIO(data))
    best = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20):
            for data in datas:
                inspect_stream(io.BytesIO(data))
        best.append(time.perf_counter() - start)
    print(f"{min(best):.3f} s for {len(datas)} files x 20")


if __name__ == "__main__":
    main()
