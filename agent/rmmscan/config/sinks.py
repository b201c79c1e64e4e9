"""The sinks a configuration declares, opened: a rotating JSONL file, or a forwarding sink
(its outbox in the state directory, its transport) for syslog, HEC and Logs Ingestion.

A transport's client library is imported only when a sink of its kind is declared.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..sinks.forward import ForwardingSink
from ..sinks.outbox import path_of
from ..sinks.rotating import RotatingFileSink
from ..sinks.select import Selected
from ..sinks.transport import Transport
from .schema import INSECURE, SinkConfig


def transport_of(sink: SinkConfig) -> Transport:
    if sink.type == "syslog":
        from ..sinks.transports.syslog import SyslogTransport

        return SyslogTransport(sink.settings)
    if sink.type == "hec":
        from ..sinks.transports.hec import HecTransport

        return HecTransport(sink.settings)
    if sink.type == "logs-ingestion":
        from ..sinks.transports.logs_ingestion import LogsIngestionTransport

        return LogsIngestionTransport(sink.settings)
    raise ValueError(f"{sink.type} is not a network sink")


def open_sink(sink: SinkConfig, state_dir: Path, deliver: bool = True):
    """The sink, ready for rows (TransportError, OutboxError or SinkError if it cannot be)."""
    if sink.type == "jsonl":
        s = sink.settings
        return Selected(RotatingFileSink(s.path, s.max_bytes, s.keep), sink.emit)
    return ForwardingSink(
        sink.name, transport_of(sink), path_of(state_dir, sink.name), sink.emit,
        sink.outbox_max_bytes, deliver=deliver,
    )  # fmt: skip


def warn_insecure(sinks: tuple[SinkConfig, ...], warn: Callable[[str], None]) -> None:
    for sink in sinks:
        if sink.insecure:
            warn(
                f"sink {sink.name}: {INSECURE} = true: the receiver's TLS certificate is not "
                "checked, so anyone on the network path can read and alter the rows"
            )
