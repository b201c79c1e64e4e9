"""Forwarding benchmarks: how fast a forwarding sink empties its outbox into a real receiver,
and what forwarding a sweep's rows costs the sweep. See benchmarks/README.md (forwarding).

1. Throughput. Real rows (one `rmmscan scan --emit all --format jsonl` of a small corpus,
   repeated with distinct ReportIds to --rows) are committed to a sink's outbox first; then a
   fresh ForwardingSink drains it, and the clock runs until the receiver holds every row:
   - a real rsyslogd over TCP (tests/receivers/rsyslog.py): the clock stops when the last row
     is in its messages file (its size reaches the rows' bytes; the line count is checked
     after);
   - the local HTTPS HEC receiver (tests/receivers/https.py: http.server over TLS, every event
     parsed), in a process of its own so that it does not share the client's GIL: the clock
     stops when its accepted-row count reaches --rows;
   - a trivial one (answers 200 without parsing the events): the client's cost with a
     receiver that costs almost nothing (set in the receiver's process only).
   The receivers' and the client's CPU time are recorded beside (evidence of who is the
   bottleneck). The three alternate, the order rotating by round.
2. Sweep cost. The benchmark corpus, each side's scan cache filled by a warm-up run, then in
   alternation (which goes first alternates by round):
   A: rmmscan scan CORPUS --emit signed --format jsonl -o out.jsonl
   B: rmmscan scan CORPUS --emit detections --format line -o /dev/null --config syslog.toml
      (a syslog TCP sink with emit = "signed" into a running rsyslogd, --flush-timeout 120s)
   B must deliver every row it wrote; B/A is reported per round and as medians.

    .venv/bin/python benchmarks/bench_forward.py [--rows 100000] [--repeat 5]
        [--files 100000] [--sweep-repeat 7] [--only throughput|sweep]

Every number is written to benchmarks/results-forward.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.receivers

WORK = ROOT / "benchmarks" / ".work"
TEST_ROOT = ROOT / "samples" / "pki" / "test-root.pem"
RESULTS = ROOT / "benchmarks" / "results-forward.json"
PY = sys.executable
RMMSCAN = [PY, "-m", "rmmscan"]
TOKEN = "00000000-0000-0000-0000-0000000bench"
CHUNK = 1000  # rows per write() when filling an outbox (a sweep writes a batch at a time)
OUTBOX_MAX = 4 << 30
TARGET_ROWS_S = 20_000
TARGET_RATIO = 1.2
TICK = os.sysconf("SC_CLK_TCK")
REPORT_ID = re.compile(rb'"ReportId":(\d+)')


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def proc_cpu(pid: int) -> float:
    """user + system seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# -- the HEC receiver, in its own process ---------------------------------------------------------


def hec_server(folder: str, trivial: bool, nodelay: bool = False) -> None:
    """Runs HecReceiver (or a trivial variant) and answers the parent on stdin/stdout:
    `go N` -> waits until N rows were accepted since, then prints
    `done MONOTONIC CPU_S ROWS REQUESTS CONNECTIONS` and forgets them."""
    from tests.receivers import https
    from tests.receivers.https import HecReceiver, Reply
    from tests.receivers.pki import make_pki

    if nodelay:  # the server's answer leaves at once, not after the client's delayed ACK
        https._Handler.disable_nagle_algorithm = True

    class TrivialHec(HecReceiver):
        """Checks the token, counts the events by their envelope, parses nothing."""

        def answer(self, method, path, headers, body):
            if headers.get("Authorization", "") != f"Splunk {self.token}":
                return Reply(403, b'{"text":"Invalid token","code":4}'), []
            return Reply(200, b'{"text":"Success","code":0}'), [None] * body.count(b'{"time":')

    pki = make_pki(Path(folder))
    receiver = (TrivialHec if trivial else HecReceiver)(pki, TOKEN).start()
    print(f"port {receiver.port} {pki.ca}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "go":
            break
        n = int(words[1])
        cpu0 = time.process_time()
        got = receiver.wait_rows(n, timeout=600)
        at = time.monotonic()
        cpu = time.process_time() - cpu0
        requests, connections = len(receiver.requests), receiver.connections
        print(f"done {at!r} {cpu!r} {len(got)} {requests} {connections}", flush=True)
        del got
        receiver.clear()
        receiver.events.clear()
    receiver.stop()


class HecProcess:
    def __init__(self, folder: Path, trivial: bool, nodelay: bool = False):
        argv = [PY, __file__, "--hec-server", str(folder)] + (["--trivial"] if trivial else [])
        argv += ["--nodelay"] if nodelay else []
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=ROOT)  # fmt: skip
        _, port, ca = self.proc.stdout.readline().split()
        self.port, self.ca = int(port), Path(ca)

    def go(self, n: int) -> None:
        self.proc.stdin.write(f"go {n}\n")
        self.proc.stdin.flush()

    def done(self) -> tuple[float, float, int, int, int]:
        words = self.proc.stdout.readline().split()
        assert words and words[0] == "done", words
        return float(words[1]), float(words[2]), int(words[3]), int(words[4]), int(words[5])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


# -- throughput ---------------------------------------------------------------------------------


def real_rows(work: Path) -> list[dict]:
    """Every row of one `--emit all` sweep of the small corpus: real rows, real sizes."""
    corpus = WORK / "corpus-2000-s1"
    if not corpus.exists():
        subprocess.run([PY, str(ROOT / "benchmarks" / "make_corpus.py"), "--out", str(corpus),
                        "--files", "2000", "--seed", "1"], check=True)  # fmt: skip
    out = work / "rows.jsonl"
    done = subprocess.run(
        [*RMMSCAN, "scan", str(corpus / "C"), "--emit", "all", "--format", "jsonl", "-q",
         "--no-cache", "--no-progress", "--trusted-roots", str(TEST_ROOT),
         "--state-dir", str(work / "rows-state"), "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode not in (0, 1):
        raise SystemExit(f"the rows' sweep failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in out.read_text().splitlines()]


def fill_template(rows: list[dict], n: int, path: Path) -> tuple[int, int]:
    """An outbox holding n rows (ReportIds 1..n), written as a sweep writes; (rows, bytes)."""
    from rmmscan.sinks.forward import ForwardingSink
    from rmmscan.sinks.outbox import Outbox

    class Unused:
        name, max_batch_bytes, max_batch_rows = "unused", 1 << 20, 1000

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    sink = ForwardingSink("bench", Unused(), path, "all", OUTBOX_MAX, deliver=False)
    for start in range(0, n, CHUNK):
        batch = []
        for i in range(start, min(start + CHUNK, n)):
            row = dict(rows[i % len(rows)])
            row["ReportId"] = i + 1
            batch.append(row)
        sink.write(batch)
    sink.close()
    outbox = Outbox(path)
    depth = outbox.depth()
    outbox.close()
    assert depth.rows == n, depth
    return depth.rows, depth.bytes


def fresh_outbox(template: Path, folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    path = folder / "bench.sqlite"
    shutil.copyfile(template, path)
    return path


def drain(transport, path: Path, n: int, arrived) -> dict:
    """Drain the outbox at `path` through `transport`; `arrived()` blocks until the receiver
    holds n rows and returns (monotonic time, extra facts)."""
    from rmmscan.sinks.forward import ForwardingSink

    sink = ForwardingSink("bench", transport, path, "all", OUTBOX_MAX)
    cpu0, t0 = time.process_time(), time.monotonic()
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(arrived()))
    waiter.start()
    depth = sink.drain(timeout=600)
    drained = time.monotonic()
    waiter.join()
    cpu = time.process_time() - cpu0
    report = sink.report
    sink.close()
    assert depth.rows == 0, f"{depth.rows} rows left in the outbox"
    end = max(drained, result.pop("at"))
    return {
        "seconds": end - t0, "drain_s": drained - t0, "client_cpu_s": cpu,
        "delivered": report.delivered, "retries": report.retries, **result,
    }  # fmt: skip


def run_rsyslog(template: Path, n: int, row_bytes: int, work: Path, round_: int) -> dict:
    from rmmscan.sinks.transports.syslog import SyslogSettings, SyslogTransport
    from tests.receivers.rsyslog import Rsyslog

    folder = work / f"rsyslog-{round_}"
    shutil.rmtree(folder, ignore_errors=True)
    path = fresh_outbox(template, work / "outbox-syslog")
    expected = row_bytes + n  # %msg%\n: the row's JSON and a newline each
    with Rsyslog(folder, "tcp") as receiver:
        transport = SyslogTransport(SyslogSettings("127.0.0.1", receiver.port, "tcp"))
        cpu0 = proc_cpu(receiver.pid)

        def arrived() -> dict:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    size = os.stat(receiver.messages_file).st_size
                except FileNotFoundError:
                    size = 0
                if size >= expected:
                    return {"at": time.monotonic(), "file_bytes": size}
                time.sleep(0.002)
            raise SystemExit(f"rsyslog wrote {size} of {expected} bytes in 600 s")

        got = drain(transport, path, n, arrived)
        got["receiver_cpu_s"] = proc_cpu(receiver.pid) - cpu0
        time.sleep(0.2)  # anything more (a row twice) would be written by now
        # (receiver.messages() reads at most 64 MiB: the file is read here)
        ids = REPORT_ID.findall(receiver.messages_file.read_bytes())
    got["received"] = len(ids)
    assert len(ids) == n and len(set(ids)) == n, (len(ids), len(set(ids)), n)
    shutil.rmtree(folder, ignore_errors=True)
    return got


def run_hec(server: HecProcess, template: Path, n: int, work: Path) -> dict:
    from rmmscan.sinks.transports.hec import HecSettings, HecTransport

    path = fresh_outbox(template, work / "outbox-hec")
    transport = HecTransport(HecSettings(f"https://127.0.0.1:{server.port}", TOKEN,
                                         ca_file=server.ca))  # fmt: skip
    server_cpu: dict = {}

    def arrived() -> dict:
        at, cpu, rows, requests, connections = server.done()
        server_cpu.update(receiver_cpu_s=cpu, requests=requests, connections=connections)
        return {"at": at, "received": rows}

    server.go(n)
    got = drain(transport, path, n, arrived)
    got.update(server_cpu)
    assert got["received"] == n, got
    return got


def throughput(args, work: Path) -> dict:
    rows = real_rows(work)
    template = work / "template.sqlite"
    n, row_bytes = fill_template(rows, args.rows, template)
    print(f"throughput: {len(rows)} distinct rows, {n} in the outbox, {row_bytes / 1e6:.1f} MB "
          f"({row_bytes / n:.0f} B a row)", flush=True)  # fmt: skip
    hec = HecProcess(work / "pki-hec", trivial=False)
    trivial = HecProcess(work / "pki-trivial", trivial=True, nodelay=True)
    cases = {
        "rsyslog TCP": lambda r: run_rsyslog(template, n, row_bytes, work, r),
        "HEC": lambda r: run_hec(hec, template, n, work),
        "HEC, trivial server": lambda r: run_hec(trivial, template, n, work),
    }
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    loads = [load()]
    try:
        for round_ in range(args.repeat):
            names = list(cases)
            names = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in names:
                got = cases[name](round_)
                got["rows_s"] = n / got["seconds"]
                runs[name].append(got)
                print(f"  round {round_ + 1} {name:36} {got['seconds']:6.2f} s "
                      f"{got['rows_s']:8.0f} rows/s  client CPU {got['client_cpu_s']:5.2f} s "
                      f"receiver CPU {got['receiver_cpu_s']:5.2f} s", flush=True)  # fmt: skip
            loads.append(load())
    finally:
        hec.close()
        trivial.close()
    results = {}
    for name, got in runs.items():
        secs = statistics.median(g["seconds"] for g in got)
        results[name] = {
            "rows_s_median": round(n / secs),
            "mb_s_median": round(row_bytes / secs / 1e6, 2),
            "seconds_median": round(secs, 3),
            "client_cpu_s_median": round(statistics.median(g["client_cpu_s"] for g in got), 3),
            "receiver_cpu_s_median": round(
                statistics.median(g["receiver_cpu_s"] for g in got), 3),
            "rows_s_per_round": [round(g["rows_s"]) for g in got],
            "target_rows_s": TARGET_ROWS_S,
            "met": n / secs >= TARGET_ROWS_S,
            "rounds": got,
        }  # fmt: skip
    return {
        "rows": n, "row_bytes": row_bytes, "distinct_rows": len(rows),
        "mean_row_bytes": round(row_bytes / n), "repeat": args.repeat, "load": loads,
        "results": results,
    }  # fmt: skip


# -- sweep cost ---------------------------------------------------------------------------------

FORWARDED = re.compile(
    r"forwarded to (\S+) \(([^)]*)\): ([\d,]+) rows written, ([\d,]+) delivered, "
    r"([\d,]+) waiting"
)
EMITTED = re.compile(r"rows emitted: ([\d,]+)")


def timed(argv: list[str]) -> tuple[float, float, int, str]:
    """(wall s, user+sys s, max RSS KiB, stderr) by GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", *argv],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         check=False, cwd=ROOT)  # fmt: skip
    if out.returncode not in (0, 1):
        raise SystemExit(f"{argv} exited {out.returncode}:\n{out.stderr[-3000:]}")
    wall, user, system, rss = out.stderr.strip().splitlines()[-1].split()
    return float(wall), float(user) + float(system), int(rss), out.stderr


def sweep(args, work: Path) -> dict:
    from tests.receivers.rsyslog import Rsyslog

    corpus = WORK / f"corpus-{args.files}-s1"
    if not corpus.exists():
        subprocess.run([PY, str(ROOT / "benchmarks" / "make_corpus.py"), "--out", str(corpus),
                        "--files", str(args.files), "--seed", "1"], check=True)  # fmt: skip
    folder = work / f"sweep-{args.files}-{'cache' if args.cache else 'no-cache'}"
    # The state directories (scan caches, outbox) are kept between runs: the warm-up below
    # completes them; a first run's warm-up is two full sweeps.
    shutil.rmtree(folder / "rsyslog", ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    cache = [] if args.cache else ["--no-cache"]
    common = ["scan", str(corpus / "C"), "--no-progress", "--trusted-roots", str(TEST_ROOT),
              *cache]  # fmt: skip
    loads = [load()]
    with Rsyslog(folder / "rsyslog", "tcp") as receiver:
        config = folder / "syslog.toml"
        config.write_text(
            "[sinks.siem]\n"
            'type = "syslog"\n'
            f'address = "127.0.0.1:{receiver.port}"\n'
            'transport = "tcp"\n'
            'emit = "signed"\n'
        )
        config.chmod(0o600)
        cases = {
            "A": [*RMMSCAN, *common, "--emit", "signed", "--format", "jsonl",
                  "-o", str(folder / "out.jsonl"), "--state-dir", str(folder / "state-A")],
            "B": [*RMMSCAN, *common, "--emit", "detections", "--format", "line",
                  "-o", "/dev/null", "--config", str(config), "--flush-timeout", "120s",
                  "--state-dir", str(folder / "state-B")],
        }  # fmt: skip
        cpu0 = proc_cpu(receiver.pid)
        for argv in cases.values():  # warm-up: page cache, each side's scan cache
            timed(argv)
        runs: dict[str, list[dict]] = {"A": [], "B": []}
        for round_ in range(args.sweep_repeat):
            for side in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                wall, cpu, rss, err = timed(cases[side])
                got = {"wall_s": wall, "cpu_s": cpu, "max_rss_kib": rss}
                if side == "A":
                    emitted = EMITTED.search(err)
                    got["rows"] = int(emitted.group(1).replace(",", "")) if emitted else None
                    with open(folder / "out.jsonl", "rb") as written:
                        got["jsonl_lines"] = sum(1 for _ in written)
                else:
                    m = FORWARDED.search(err)
                    if not m:
                        raise SystemExit(f"B printed no forwarding summary:\n{err[-3000:]}")
                    written, delivered, waiting = (
                        int(x.replace(",", "")) for x in m.group(3, 4, 5)
                    )
                    assert written == delivered and waiting == 0, m.group(0)
                    got.update(rows=written, delivered=delivered, waiting=waiting,
                               summary=m.group(0))  # fmt: skip
                runs[side].append(got)
                print(f"  round {round_ + 1} {side} {wall:6.2f} s  cpu {cpu:6.2f} s  "
                      f"rows {got['rows']}", flush=True)  # fmt: skip
            loads.append(load())
        time.sleep(0.5)
        receiver_cpu = proc_cpu(receiver.pid) - cpu0
        total_b = sum(r["rows"] for r in runs["B"])
        with open(receiver.messages_file, "rb") as received:
            messages = sum(1 for _ in received)
    a_rows = {r["rows"] for r in runs["A"]} | {r["jsonl_lines"] for r in runs["A"]}
    b_rows = {r["rows"] for r in runs["B"]}
    assert len(a_rows) == 1 and a_rows == b_rows, (a_rows, b_rows)
    a = statistics.median(r["wall_s"] for r in runs["A"])
    b = statistics.median(r["wall_s"] for r in runs["B"])
    per_round = [rb["wall_s"] / ra["wall_s"] for ra, rb in zip(runs["A"], runs["B"],
                                                               strict=True)]  # fmt: skip
    return {
        "files": args.files, "cache": args.cache, "repeat": args.sweep_repeat,
        "rows_per_run": a_rows.pop(), "A_wall_median_s": a, "B_wall_median_s": b,
        "A_cpu_median_s": statistics.median(r["cpu_s"] for r in runs["A"]),
        "B_cpu_median_s": statistics.median(r["cpu_s"] for r in runs["B"]),
        "ratio_B_over_A": round(b / a, 3),
        "ratio_per_round": [round(x, 3) for x in per_round],
        "ratio_per_round_median": round(statistics.median(per_round), 3),
        "target_ratio": TARGET_RATIO, "met": b / a <= TARGET_RATIO,
        "rsyslog_messages_total": messages,
        "rsyslog_messages_expected": sum(b_rows) * (args.sweep_repeat + 1),  # + the warm-up
        "rsyslog_cpu_s": receiver_cpu,
        "B_rows_forwarded_total_timed_rounds": total_b,
        "load": loads, "runs": runs,
        "commands": {k: " ".join(v) for k, v in cases.items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--sweep-repeat", type=int, default=7)
    parser.add_argument("--no-cache", dest="cache", action="store_false",
                        help="sweep without the scan cache: verification dominates")  # fmt: skip
    parser.add_argument("--only", choices=("throughput", "sweep"))
    parser.add_argument("--hec-server", metavar="FOLDER")
    parser.add_argument("--trivial", action="store_true")
    parser.add_argument("--nodelay", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.hec_server:
        hec_server(args.hec_server, args.trivial, args.nodelay)
        return
    work = WORK / "forward"
    work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "status", "--short", "agent"], capture_output=True,
                           text=True, cwd=ROOT).stdout.split("\n")  # fmt: skip
    out = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "commit": commit,
        "agent_uncommitted": [line for line in dirty if line], "cpus": os.cpu_count(),
        "load_before": load(),
    }  # fmt: skip
    if args.only in (None, "throughput"):
        out["throughput"] = throughput(args, work)
    if args.only in (None, "sweep"):
        out["sweep"] = sweep(args, work)
    out["load_after"] = load()
    for name, r in out.get("throughput", {}).get("results", {}).items():
        print(f"{name:36} {r['rows_s_median']:8,} rows/s  {r['mb_s_median']:6.1f} MB/s  "
              f"client CPU {r['client_cpu_s_median']:.2f} s  receiver CPU "
              f"{r['receiver_cpu_s_median']:.2f} s  target {TARGET_ROWS_S:,}: "
              f"{'met' if r['met'] else 'NOT met'}")  # fmt: skip
    if "sweep" in out:
        s = out["sweep"]
        print(f"sweep: A (jsonl) {s['A_wall_median_s']:.2f} s  B (syslog) "
              f"{s['B_wall_median_s']:.2f} s  B/A {s['ratio_B_over_A']:.3f} "
              f"(per round {min(s['ratio_per_round']):.2f}-{max(s['ratio_per_round']):.2f}) "
              f"target {TARGET_RATIO}: {'met' if s['met'] else 'NOT met'}")  # fmt: skip
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
