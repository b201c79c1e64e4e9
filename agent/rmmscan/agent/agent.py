"""`rmmscan agent`: one engine, fed by every source, for as long as the service runs.

The calling thread is the only one that delivers rows (engine.deliver): it runs the sweeps
(the first one at start, then one every `rescan_interval`, plus targeted rescans of folders
whose events were lost), and between two sweeps, or every quarter second during one (the
sweep's tick), it serves the live sources: files the watch says are written, the running
processes every `process_interval`, the heartbeat every `heartbeat_interval`. The sweep walks
and judges in one worker thread, paced by the CPU budget (pacing.py).

A restart resumes: the scan cache holds what every sweep judged (flushed every few seconds),
so the next first sweep reads only what it had not judged yet or what changed. Rows are in the
sinks' outboxes before the cache learns of them, so a kill loses no finding (a file judged
but not yet cached is judged again).

Signals: SIGTERM and SIGINT stop the agent within seconds: the sweep stops at the next file,
the sinks get a moment to deliver, and whatever they hold stays in their outboxes for the next
start. SIGHUP reloads the configuration and the rules; a configuration that does not load is
reported and the running one kept. A new configuration starts a sweep (new rules judge the
files the cache holds, from their cached records).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..config.schema import AgentConfig, Config, JsonlFileSettings, SinkConfig, read_config
from ..config.sinks import open_sink, warn_insecure
from ..config.source import ConfigError
from ..engine.engine import Batch, Engine, OptionsError
from ..engine.options import Options
from ..engine.sweep import Sweep
from ..rows.heartbeat import heartbeat_row
from ..rules.judge import EMIT_DETECTIONS
from ..sinks.forward import ForwardingSink
from ..sinks.outbox import OutboxError
from ..sinks.select import widest
from ..sinks.sink import SinkError
from ..sinks.stats import NOT_READ
from ..sinks.transport import TransportError
from ..sources.walk import WalkOptions
from ..state.store import default_dir
from ..text import printable
from .health import Health, status
from .judging import ProcessJudge, judge_paths
from .log import AgentLog
from .pacing import Pacer, lower_priority
from .repeats import RepeatFilter
from .roots import local_roots

# Where a service manager's agent finds its configuration without --config.
DEFAULT_CONFIG = (
    default_dir() / "rmmscan.toml" if sys.platform == "win32" else Path("/etc/rmmscan/rmmscan.toml")
)
DEFAULT_SINK = "detections"  # the rotating JSONL file in the state directory, without a config
IDLE_WAIT_S = 0.2  # the loop's longest sleep: a signal's flag is seen within it
CACHE_FLUSH_S = 5.0  # what a sweep judged reaches the cache at least this often (resuming)
# Folders to rescan wait until no new one came for RESCAN_QUIET_S (at most RESCAN_WAIT_S): in
# a storm of writes, one rescan of a folder after the storm, not one per overflow.
RESCAN_QUIET_S, RESCAN_WAIT_S = 1.0, 10.0
SHUTDOWN_DELIVERY_S = 1.5  # at a stop, the receivers get this long to take what waits
LOG_PROBLEMS_PER_MINUTE = 60  # files that cannot be read: logged one by one up to this rate
# Errors that a configuration (or what it names) can hold: a reload reports them and keeps
# the running configuration.
LOAD_ERRORS = (ConfigError, OptionsError, SinkError, OutboxError, TransportError, OSError)


def defaults(state_dir: Path) -> Config:
    """The configuration without a file: the fixed disks, the bundled rules, detections to a
    rotating JSONL file in the state directory."""
    sink = SinkConfig(
        DEFAULT_SINK, "jsonl", EMIT_DETECTIONS, JsonlFileSettings(state_dir / "detections.jsonl")
    )
    return Config(Path("(built-in defaults)"), state_dir=state_dir, sinks=(sink,))


@dataclass(slots=True)
class _Runtime:
    """What one configuration builds; a reload builds a new one before dropping the old."""

    config: Config
    engine: Engine
    sinks: list
    roots: list[str]
    walk: WalkOptions
    watch: object | None = None  # sources.watch.Watch
    processes: object | None = None  # sources.processes.Processes
    process_judge: ProcessJudge | None = None
    repeats: RepeatFilter | None = None
    rescans: set[str] = field(default_factory=set)  # folders whose events were lost
    rescans_first: float = 0.0  # when the oldest of them was asked for
    rescans_last: float = 0.0  # ... and the newest


class Agent:
    def __init__(
        self,
        config_path: Path | None = None,
        state_dir: Path | None = None,
        log_path: Path | None = None,
        stream=None,
    ):
        self.config_path = config_path
        self.state_dir = state_dir
        self.log_path = log_path
        self.log = AgentLog(stream=stream)
        self._stop = threading.Event()  # set from any thread (stop()), or by the loop
        self._wake = threading.Event()  # the loop's sleep ends: a stop, or the watch's news
        self._flags = {"stop": False, "reload": False}  # set by signal handlers only
        self._reload_requested = threading.Event()
        self._sweep_stop: threading.Event | None = None
        self._servicing = False
        self.health = Health()
        self.rt: _Runtime | None = None
        self.pacer: Pacer | None = None
        self._next: dict[str, float] = {}
        self._logged: list[float] = []  # times of the problems logged this minute
        self._unlogged = 0
        self._process = None  # psutil.Process of this agent, for the heartbeat

    # -- control, from any thread ----------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def reload(self) -> None:
        self._reload_requested.set()
        self._wake.set()

    # -- the service --------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; 0. A configuration that cannot be loaded at start raises
        (ConfigError, OptionsError, SinkError...): the command reports it, exit status 2."""
        # Everything the service creates (state, cache, outboxes and their SQLite journals,
        # files, logs) is its account's alone: rows and paths name the machine's files.
        umask = os.umask(0o077)
        try:
            return self._run()
        finally:
            os.umask(umask)  # the Windows service, or a test, runs the agent in its process

    def _run(self) -> int:
        config = self._read()
        self._open_log(config)
        self.log.info("starting", version=__version__, config=str(config.path), pid=os.getpid())
        lower_priority(config.agent.nice, lambda m: self.log.warning("priority", m))
        self.pacer = Pacer(config.agent.max_cpu_percent, self._stop)
        self.rt = self._build(config)
        self._start_sources(self.rt)
        import psutil

        self._process = psutil.Process()
        self._process.cpu_percent()  # the first reading starts the interval
        _route_library_logs(self.log)
        previous = self._install_signals()
        try:
            self._loop()
        finally:
            self._restore_signals(previous)
            self._shutdown()
        return 0

    def _loop(self) -> None:
        self.pacer.reset()
        now = time.monotonic()
        self._next = {"sweep": now, "process": now, "heartbeat": now, "flush": now}
        while not self._stopping():
            if self._reloading():
                self._reload()
            self._service()
            rt, now = self.rt, time.monotonic()
            if rt.rescans and (now - rt.rescans_last >= RESCAN_QUIET_S
                               or now - rt.rescans_first >= RESCAN_WAIT_S):  # fmt: skip
                folders = sorted(rt.rescans)
                rt.rescans.clear()
                self._sweep(folders, "rescan")
                continue
            if now >= self._next["sweep"]:
                self._full_sweep()
                continue
            self.health.phase = "watching"
            self._wake.wait(self._idle_wait())
            self._wake.clear()

    def _full_sweep(self) -> None:
        first = self.health.sweeps == 0
        # A periodic rescan reports again what is still there; the first sweep does not
        # repeat what the watch already reported (repeats.py).
        self.rt.repeats.repeat = not first
        try:
            finished = self._sweep(self.rt.roots, "first sweep" if first else "rescan")
        finally:
            self.rt.repeats.repeat = False
        if finished:
            self.health.sweeps += 1
            interval = self.rt.config.agent.rescan_interval
            self._next["sweep"] = time.monotonic() + (interval if interval > 0 else float("inf"))

    def _sweep(self, roots: list[str], phase: str) -> bool:
        """Sweep `roots` through the cache; False when a stop or a reload cut it short."""
        rt = self.rt
        self.health.phase = phase
        stop = threading.Event()
        self._sweep_stop = stop
        started = time.monotonic()
        before = rt.engine.stats.files
        self.log.info("sweep", f"{phase} of {len(roots)} roots", phase=phase,
                      roots=[printable(r) for r in roots[:20]])  # fmt: skip
        try:
            Sweep(rt.engine, rt.walk, jobs=1, pace=self.pacer).run(
                roots, lambda _root: self._service(in_sweep=True), stop
            )
        finally:
            self._sweep_stop = None
        finished = not stop.is_set()
        self.log.info(
            "swept" if finished else "sweep stopped",
            phase=phase,
            files=rt.engine.stats.files - before,
            seconds=round(time.monotonic() - started, 1),
        )
        return finished

    def _service(self, in_sweep: bool = False) -> None:
        """The live sources, the heartbeat and the cache's flush: whatever is due now."""
        if self._servicing:
            return
        self._servicing = True
        try:
            rt, now = self.rt, time.monotonic()
            stopping = in_sweep and (self._stopping() or self._reloading())
            if stopping and self._sweep_stop is not None:
                self._sweep_stop.set()
            if rt.watch is not None:
                paths = rt.watch.ready(now)
                if paths:
                    for batch in judge_paths(rt.engine, paths, rt.roots, "watch", self.pacer):
                        rt.engine.deliver(batch)
                folders = rt.watch.take_rescans()
                if folders:
                    if not rt.rescans:
                        rt.rescans_first = now
                    rt.rescans_last = now
                    rt.rescans.update(folders)
            if rt.processes is not None and now >= self._next["process"]:
                self._scan_processes()
                interval = rt.config.agent.process_interval
                self._next["process"] = time.monotonic() + interval
            if now >= self._next["heartbeat"]:
                self._heartbeat()
                self._next["heartbeat"] = now + rt.config.agent.heartbeat_interval
            if now >= self._next["flush"]:
                if rt.engine.cache is not None:
                    rt.engine.cache.flush()
                self._log_sink_notes()
                self._next["flush"] = now + CACHE_FLUSH_S
        finally:
            self._servicing = False

    def _scan_processes(self) -> None:
        rt = self.rt
        scan = rt.processes.scan()
        self.health.processes = scan.processes
        self.health.processes_unreadable = scan.unreadable
        if scan.files:
            rt.engine.deliver(rt.process_judge.judge(scan.files, self.pacer))

    def _heartbeat(self) -> None:
        rt = self.rt
        outbox = {}
        for sink in rt.sinks:
            if isinstance(sink, ForwardingSink):
                try:
                    outbox[sink.name] = sink.outbox.depth().rows
                except OutboxError:
                    outbox[sink.name] = -1
        watch = rt.watch
        process = self._process
        self.health.repeats = rt.repeats.dropped
        row = heartbeat_row(
            rt.engine.device.device_id,
            rt.engine.device.device_name,
            status(
                self.health,
                rt.engine.stats,
                rt.engine.pack,
                outbox,
                watch.watches if watch is not None else 0,
                watch.limited if watch is not None else False,
                process.cpu_percent(),
                process.memory_info().rss,
            ),
        )
        rt.engine.deliver(Batch(rows=[row]))

    # -- configuration ----------------------------------------------------------------------
    def _read(self) -> Config:
        path = self.config_path
        if path is None and DEFAULT_CONFIG.exists():
            path = DEFAULT_CONFIG
        if path is None:
            return defaults(self.state_dir or default_dir())
        return read_config(path)

    def _open_log(self, config: Config) -> None:
        path = self.log_path or config.agent.log
        if path is not None and path != self.log.path:
            a = config.agent
            try:
                self.log = AgentLog(path, a.log_max_bytes, a.log_keep, self.log.stream)
            except SinkError as exc:
                self.log.error("log", f"{exc}; logging to stderr")

    def _build(self, config: Config) -> _Runtime:
        """Engine, sinks and sources of a configuration, none of them started; raises what
        stops it from being built (and closes what it opened)."""
        state_dir = self.state_dir or config.state_dir or default_dir()
        options = Options(
            rules=config.rules,
            allowlist=config.allowlist,
            emit=widest(sink.emit for sink in config.sinks),
            trusted_roots=config.trusted_roots,
            distrust=config.distrust,
            system_roots=config.system_roots,
            state_dir=state_dir,
            source="sweep",
            max_read=config.max_read,
        )
        engine = Engine(options, self._warn)
        warn_insecure(config.sinks, self._warn)
        sinks = []
        try:
            for declared in config.sinks:
                sinks.append(open_sink(declared, state_dir))
            repeats = RepeatFilter(sinks)
            engine.sinks.append(repeats)
            engine.open_state()
        except BaseException:
            _close_all(sinks, self._warn)
            raise
        engine.stats.subscribe(_ProblemLog(self))
        a: AgentConfig = config.agent
        roots = list(a.roots) or local_roots()
        excludes = (*config.exclude, *a.exclude)
        walk = WalkOptions(excludes, one_file_system=True)
        rt = _Runtime(config, engine, sinks, roots, walk, repeats=repeats)
        if a.process_interval > 0:
            from ..sources.processes import Processes

            rt.processes = Processes()
            rt.process_judge = ProcessJudge(engine)
        return rt

    def _start_sources(self, rt: _Runtime) -> None:
        a = rt.config.agent
        if a.watch:
            from ..sources.watch import Watch

            rt.watch = Watch(
                rt.roots,
                rt.walk.excludes,  # the sweep's: the top level's and [agent]'s
                warn=lambda m: self.log.warning("watch", m),
                settle=a.settle,
                max_pending=a.watch_queue,
                wake=self._wake.set,
            )
            rt.watch.start()
            self.log.info("watching", roots=len(rt.roots), watches=rt.watch.watches,
                          limited=rt.watch.limited)  # fmt: skip

    def _reload(self) -> None:
        self._reload_requested.clear()
        self._flags["reload"] = False
        old = self.rt
        try:
            config = self._read()
            new = self._build(config)
        except LOAD_ERRORS as exc:
            # A ConfigError's text is every problem, a line each (`FILE:LINE: KEY: ...`).
            self.log.error("reload failed", f"{exc}\nthe running configuration is kept")
            return
        self._close_runtime(old, deliver_s=0.0)
        self.rt = new
        self._open_log(config)
        self.pacer.share = config.agent.max_cpu_percent / 100.0
        self.pacer.reset()
        lower_priority(config.agent.nice, lambda m: self.log.warning("priority", m))
        self._start_sources(new)
        self.health.reloads += 1
        self._next["sweep"] = time.monotonic()  # new rules or roots: a sweep now, not later
        self.log.info("reloaded", config=str(config.path))

    # -- stopping -----------------------------------------------------------------------------
    def _stopping(self) -> bool:
        if self._flags["stop"] and not self._stop.is_set():
            self._stop.set()  # a signal's flag, made an Event here (never in the handler)
        return self._stop.is_set()

    def _reloading(self) -> bool:
        return self._flags["reload"] or self._reload_requested.is_set()

    def _idle_wait(self) -> float:
        now = time.monotonic()
        due = [self._next["sweep"], self._next["heartbeat"]]
        if self.rt.processes is not None:
            due.append(self._next["process"])
        if self.rt.rescans:
            due.append(min(self.rt.rescans_last + RESCAN_QUIET_S,
                           self.rt.rescans_first + RESCAN_WAIT_S))  # fmt: skip
        if self.rt.watch is not None:
            nxt = self.rt.watch.next_due()
            if nxt is not None:
                due.append(nxt)
        return max(0.01, min(IDLE_WAIT_S, min(due, default=now + IDLE_WAIT_S) - now))

    def _shutdown(self) -> None:
        if self.rt is not None:
            # The last heartbeat says the agent stopped on purpose: a SOC tells it from a
            # crash or a kill, after which heartbeats just end.
            self.health.phase = "stopped"
            try:
                self._heartbeat()
            except (SinkError, OutboxError) as exc:
                self.log.error("heartbeat", str(exc))
        rt, self.rt = self.rt, None
        if rt is not None:
            self._close_runtime(rt, deliver_s=SHUTDOWN_DELIVERY_S)
        self.log.info("stopped")
        self.log.close()

    def _close_runtime(self, rt: _Runtime, deliver_s: float) -> None:
        if rt.watch is not None:
            rt.watch.stop()
        deadline = time.monotonic() + deliver_s
        for sink in rt.sinks:
            if isinstance(sink, ForwardingSink) and deliver_s > 0:
                left = deadline - time.monotonic()
                if left > 0 and sink.outbox.depth().rows:
                    sink.drain(left)
        self._log_sink_notes(rt)
        try:
            rt.engine.close()
        finally:
            _close_all(rt.sinks, self._warn)
        for sink in rt.sinks:
            if isinstance(sink, ForwardingSink):
                r = sink.report
                self.log.info("sink", sink=sink.name, written=r.written, delivered=r.delivered,
                              set_aside=r.aside)  # fmt: skip

    # -- signals --------------------------------------------------------------------------------
    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}  # the Windows service runs us in its own thread and calls stop()
        previous = {}

        def stop(_signum, _frame):
            self._flags["stop"] = True

        def reload(_signum, _frame):
            self._flags["reload"] = True

        handlers = {signal.SIGTERM: stop, signal.SIGINT: stop}
        if hasattr(signal, "SIGHUP"):
            handlers[signal.SIGHUP] = reload
        for signum, handler in handlers.items():
            previous[signum] = signal.signal(signum, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    # -- logging --------------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        self.log.warning("warning", message)

    def _log_sink_notes(self, rt: _Runtime | None = None) -> None:
        for sink in (rt or self.rt).sinks:
            if isinstance(sink, ForwardingSink):
                while sink.report.notes:
                    self.log.warning("sink", sink.report.notes.popleft(), sink=sink.name)

    def log_problem(self, path: str, kind: str, message: str) -> None:
        if kind not in NOT_READ:
            return  # vanished, changed, skipped: counted in the heartbeat, not news
        now = time.monotonic()
        self._logged = [t for t in self._logged if now - t < 60]
        if len(self._logged) >= LOG_PROBLEMS_PER_MINUTE:
            self._unlogged += 1
            return
        self._logged.append(now)
        extra = {"unlogged": self._unlogged} if self._unlogged else {}
        self._unlogged = 0
        self.log.warning(kind, message, path=path, **extra)


class _ProblemLog:
    """The engine's observer: files that could not be read, in the log (rate-limited)."""

    def __init__(self, agent: Agent):
        self.agent = agent

    def problem(self, path: str, kind: str, message: str) -> None:
        self.agent.log_problem(path, kind, message)

    def detection(self, row: dict) -> None:
        pass  # rows go to the sinks, never to the log


def _close_all(sinks, warn) -> None:
    for sink in sinks:
        try:
            sink.close()
        except (SinkError, OSError) as exc:
            warn(f"closing a sink: {exc}")


def _route_library_logs(log: AgentLog) -> None:
    """watchdog reports some troubles (an inotify queue overflow) through `logging`: into the
    agent's log with the rest, not as bare text on stderr."""
    import logging

    class Into(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            level = "error" if record.levelno >= logging.ERROR else "warning"
            log(level, record.name, record.getMessage())

    library = logging.getLogger("watchdog")
    library.handlers[:] = [Into(logging.WARNING)]
    library.propagate = False
