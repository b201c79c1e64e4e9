"""What the scanning commands (`rmmscan scan`, `rmmscan image`) share: the options from the
command line and the configuration file, the engine, the output and the configured sinks, the
console, SIGTERM, the delivery at the end, the summary and the exit status (status.py).

A command gives the one thing it does differently: how its files are found and judged
(``drive``). With `--config`, the file's sinks take the rows too, before standard output
does: a row shown is already in every outbox. At the end the outboxes deliver for at most the
flush timeout, and each sink says what was delivered and what waits for the next run.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..config.source import ConfigError
from ..engine.engine import Engine, OptionsError
from ..engine.options import Options
from ..inspect.hashes import DEFAULT_MAX_READ
from ..sinks.forward import ForwardingSink
from ..sinks.outbox import OutboxError
from ..sinks.select import Selected, widest
from ..sinks.sink import SinkError, standard_output
from ..sinks.stats import Delivery
from ..sinks.transport import TransportError
from ..state.store import default_dir
from ..text import printable
from .config import report
from .status import EXIT_ERROR, scan_status

if TYPE_CHECKING:  # the configuration's modules are imported when --config is given
    from ..config.schema import Config
    from ..sinks.console import Console

# drive(engine, config, console, stop): the command's own work, rows delivered by the engine.
Drive = Callable[[Engine, "Config | None", "Console", threading.Event], None]


def options_from(args, config: Config | None = None, source: str = "sweep") -> Options:
    """The command line's options, and the configuration's where the command line is silent;
    the rows made are those of the widest emission policy among the output and the sinks."""
    max_read = args.max_read  # None: not given on the command line
    if config is None:
        return Options(
            rules=tuple(args.rules),
            allowlist=args.allowlist,
            emit=args.emit,
            trusted_roots=tuple(args.trusted_roots),
            distrust=tuple(args.distrust),
            system_roots=not args.no_system_roots,
            state_dir=args.state_dir,
            cache=not args.no_cache,
            source=source,
            max_read=DEFAULT_MAX_READ if max_read is None else max_read,
        )
    c = config
    return Options(
        rules=tuple(args.rules) or c.rules,
        allowlist=args.allowlist or c.allowlist,
        emit=widest([args.emit, *(sink.emit for sink in c.sinks)]),
        trusted_roots=tuple(args.trusted_roots) or c.trusted_roots,
        distrust=tuple(args.distrust) or c.distrust,
        system_roots=not args.no_system_roots and c.system_roots,
        state_dir=args.state_dir or c.state_dir,
        cache=not args.no_cache,
        source=source,
        max_read=c.max_read if max_read is None else max_read,
    )


def warn(message: str) -> None:
    """A warning on stderr (its paths already made printable): the scan goes on."""
    print(f"rmmscan: {message}", file=sys.stderr, flush=True)


def guarded(run: Callable[[object], int], args) -> int:
    """``run(args)``, with a bad option, configuration, sink or receiver said in one line."""
    try:
        return run(args)
    except ConfigError as exc:
        return report(exc)
    except (OptionsError, SinkError, OutboxError, TransportError) as exc:
        print(f"rmmscan: {exc}", file=sys.stderr)
        return EXIT_ERROR


def session(args, source: str, drive: Drive) -> int:
    """Build the engine and its sinks from ``args``, run ``drive``, deliver, summarize; the
    exit status."""
    from ..sinks.console import Console
    from ..sinks.formats import stream_sink

    config = None
    if args.config:
        from ..config.schema import read_config

        config = read_config(args.config)
    options = options_from(args, config, source)
    engine = Engine(options, warn)
    out, owned, name = standard_output(), False, "standard output"
    if args.output:
        name = printable(str(args.output))
        try:
            out = open(args.output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise OptionsError(f"{name}: cannot write: {exc.strerror or exc}") from None
        owned = True
    sinks = []
    stop = threading.Event()
    try:
        if config is not None:
            from ..config.sinks import open_sink, warn_insecure

            warn_insecure(config.sinks, warn)
            state_dir = options.state_dir or default_dir()
            for declared in config.sinks:
                sinks.append(open_sink(declared, state_dir))
        output = stream_sink(args.format, out, name, owned)
        # The engine makes the rows of the widest policy; the output takes its own share.
        sinks.append(output if options.emit == args.emit else Selected(output, args.emit))
        engine.sinks.extend(sinks)
        console = Console(sys.stderr, engine.stats, progress=args.progress and sys.stderr.isatty())
        engine.stats.subscribe(console)
        engine.open_state(local=source != "image")
        try:
            with _stopped_by_sigterm(stop):
                drive(engine, config, console, stop)
                timeout = args.flush_timeout
                if timeout is None:
                    timeout = config.flush_timeout if config else 0.0
                _deliver(sinks, engine.stats, timeout, stop)
        finally:
            engine.close()
    finally:
        _close(sinks)
    if not args.quiet:
        console.summary()
    return scan_status(engine.stats)


def _deliver(sinks, stats, timeout: float, stop: threading.Event) -> None:
    """Give the forwarding sinks `timeout` seconds in all to deliver (a stop ends it early),
    and record what became of their rows."""
    deadline = time.monotonic() + timeout
    for sink in sinks:
        if not isinstance(sink, ForwardingSink):
            continue
        depth = sink.outbox.depth()
        while depth.rows and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            depth = sink.drain(min(left, 0.25))
        r = sink.report
        stats.deliveries.append(
            Delivery(
                sink.name,
                sink.transport.name,
                r.written,
                r.delivered,
                depth.rows,
                sink.outbox.waiting_after(sink.before),
                r.aside,
                r.dropped_inventory + r.dropped_detections,
            )
        )
        while r.notes:
            warn(r.notes.popleft())
        if depth.rows:
            why = f" (the receiver: {r.last_retry})" if r.last_retry else ""
            warn(
                f"sink {sink.name}: {depth.rows:,} rows wait in the outbox{why}; they go with "
                "the next run, the agent, or `rmmscan outbox flush`"
            )


def _close(sinks) -> None:
    """Close every sink; the first failure is raised, unless an error is already on its way
    (it is the news)."""
    failure = None
    for sink in sinks:
        try:
            sink.close()
        except (SinkError, OSError) as exc:
            failure = failure or exc
    if failure is not None and sys.exc_info()[1] is None:
        raise failure


@contextmanager
def _stopped_by_sigterm(stop: threading.Event):
    """SIGTERM sets `stop` (the sweep ends at the next file) instead of ending the process."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: whoever runs us there handles them
        return
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
