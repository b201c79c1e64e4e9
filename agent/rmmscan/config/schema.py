"""The configuration's keys, each declared once with its type, default and meaning, and the
checking that turns a parsed TOML document into a ``Config``.

Every problem is collected (not only the first), each with its line, its key and what to
write instead; an unknown key is a problem (a typo must not silently disable a sink). Paths
are taken relative to the configuration file's folder. Secrets are read here, from the
environment or a private file, and are never part of a message.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..inspect.hashes import DEFAULT_MAX_READ
from ..rules.judge import EMIT_CHOICES, EMIT_DETECTIONS
from ..sinks.transports.hec import HecSettings
from ..sinks.transports.logs_ingestion import LogsIngestionSettings
from ..sinks.transports.syslog import FACILITIES, SyslogSettings
from ..text import brief, printable
from .source import MAX_SECRET_BYTES, ConfigError, KeyLines, Problem, load, read_private

SINK_TYPES = ("jsonl", "syslog", "logs-ingestion", "hec")
NETWORK_TYPES = ("syslog", "logs-ingestion", "hec")
SINK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # \Z: "$" would take a final "\n"
DEFAULT_FLUSH_TIMEOUT_S = 30.0
DEFAULT_OUTBOX_MAX_MB = 256
MAX_OUTBOX_MB = 1 << 30  # a pebibyte: any larger is a typo, and its bytes overflow a float
INSECURE = "insecure_skip_tls_verify"


@dataclass(frozen=True, slots=True)
class JsonlFileSettings:
    path: Path
    max_bytes: int = 100 << 20
    keep: int = 5


@dataclass(frozen=True, slots=True)
class SinkConfig:
    name: str
    type: str  # one of SINK_TYPES
    emit: str
    settings: Any  # JsonlFileSettings, SyslogSettings, HecSettings or LogsIngestionSettings
    outbox_max_bytes: int = DEFAULT_OUTBOX_MAX_MB << 20  # network sinks only
    insecure: bool = False  # TLS verification turned off: warned about on every run

    @property
    def network(self) -> bool:
        return self.type in NETWORK_TYPES


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """`[agent]`: how `rmmscan agent` runs. Intervals are seconds; 0 turns a source off."""

    roots: tuple[str, ...] = ()  # none: the machine's fixed disks (agent/roots.py)
    exclude: tuple[str, ...] = ()  # besides the top level's `exclude`
    watch: bool = True
    rescan_interval: float = 6 * 3600.0
    process_interval: float = 60.0
    heartbeat_interval: float = 300.0
    max_cpu_percent: float = 25.0  # of one core, over the whole process
    nice: int = 10
    settle: float = 0.25  # a written file is judged once it has been quiet this long
    watch_queue: int = 100_000  # files waiting to settle; beyond it, their folders are rescanned
    log: Path | None = None  # None: JSON lines on stderr (the journal under systemd)
    log_max_bytes: int = 10 << 20
    log_keep: int = 5


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    state_dir: Path | None = None
    rules: tuple[Path, ...] = ()
    allowlist: Path | None = None
    trusted_roots: tuple[Path, ...] = ()
    distrust: tuple[Path, ...] = ()
    system_roots: bool = True
    exclude: tuple[str, ...] = ()
    flush_timeout: float = DEFAULT_FLUSH_TIMEOUT_S
    max_read: int = DEFAULT_MAX_READ  # bytes of one file hashed and verified at most; 0: all
    sinks: tuple[SinkConfig, ...] = field(default=())
    agent: AgentConfig = field(default_factory=AgentConfig)


def read_config(path: Path) -> Config:
    """The configuration in `path`, or ConfigError listing every problem found."""
    document, lines = load(path)
    return _Checker(path, lines).config(document)


# -- values ----------------------------------------------------------------------------------
class _Bad(Exception):
    """A value's problem: the message says what to write instead."""


def _str(value) -> str:
    if not isinstance(value, str) or not value:
        raise _Bad("must be a non-empty string, in quotes")
    return value


def _bool(value) -> bool:
    if not isinstance(value, bool):
        raise _Bad("must be true or false (no quotes)")
    return value


def _positive_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _Bad("must be a whole number above 0")
    return value


def _finite(value) -> float | None:
    """A TOML number as a finite float, or None (nan, inf, or an integer past a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _positive_number(value) -> float:
    number = _finite(value)
    if number is None or not number > 0:
        raise _Bad("must be a number above 0")
    return number


def _percent(value) -> float:
    number = _finite(value)
    if number is None or not 0 < number <= 100:
        raise _Bad("must be a number above 0 and at most 100 (percent of one CPU core)")
    return number


def _nice(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise _Bad("must be a whole number from 0 (normal priority) to 19 (lowest)")
    return value


def _megabytes(value) -> float:
    number = _positive_number(value)
    if number > MAX_OUTBOX_MB:
        raise _Bad(f"must be at most {MAX_OUTBOX_MB} (megabytes)")
    return number


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def duration(value) -> float:
    """Seconds, written as a number or a string with a unit: 30, "90s", "5m", "1h"."""
    if isinstance(value, str):
        found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)\s*", value)
        if not found:
            raise _Bad('must be seconds, or a number with a unit: "500ms", "90s", "5m", "1h"')
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    else:
        seconds = _finite(value)
    if seconds is None or not 0 <= seconds < math.inf:
        raise _Bad('must be seconds, or a number with a unit: "500ms", "90s", "5m", "1h"')
    return seconds


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value) -> str:
        if value not in choices:
            raise _Bad("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return value

    return check


def _https(value) -> str:
    text = _str(value)
    if not text.lower().startswith("https://"):
        shown = printable(brief(text, 200))  # the file's text: one line, and not a page long
        raise _Bad(f'must start with https:// (rows and credentials cross the network): "{shown}"')
    return text.rstrip("/")


def _address(value) -> tuple[str, int]:
    text = _str(value)
    found = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]+)|([^:\s\[\]]+):([0-9]+)", text)
    if not found:
        raise _Bad('must be "host:port" (an IPv6 address in brackets: "[::1]:6514")')
    host = found.group(1) or found.group(3)
    digits = found.group(2) or found.group(4)
    port = int(digits) if len(digits) <= 5 else 0  # int() refuses past 4300 digits
    if not 0 < port < 65536:
        raise _Bad(f"port {brief(digits, 20)} is not between 1 and 65535")
    return host, port


_SIZE_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}
SIZE_FORMS = 'bytes, or a whole number with a unit: "4G", "512M", "100K" (K = 1024); 0 for no bound'


def byte_size(value) -> int:
    """Bytes, written as a whole number or a string with a binary unit: 4096, "100K", "512M",
    "4G" (also "4GiB", any case); 0 is allowed (the caller says what it means)."""
    if isinstance(value, str):
        found = re.fullmatch(r"\s*([0-9]{1,20})\s*(?:([KMGT])(?:iB)?)?\s*", value, re.I)
        if not found:
            raise _Bad(f"must be {SIZE_FORMS}")
        return int(found.group(1)) << _SIZE_UNITS[(found.group(2) or "").upper()]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(f"must be {SIZE_FORMS}")
    return value


# -- the checker -----------------------------------------------------------------------------
class _Checker:
    def __init__(self, path: Path, lines: KeyLines):
        self.path, self.lines = path, lines
        self.base = path.parent
        self.problems: list[Problem] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.lines.of(key), key, message))

    def path_of(self, value) -> Path:
        text = _str(value)
        if "\0" in text:  # no file has one in its name (and expanduser raises on it)
            raise _Bad("must not hold a NUL character (\\u0000)")
        return self.base / os.path.expanduser(text)

    def paths(self, value) -> tuple[Path, ...]:
        if not isinstance(value, list):
            raise _Bad('must be a list of paths: ["/etc/rmmscan/a.pem"]')
        return tuple(self.path_of(v) for v in value)

    def strings(self, value) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _Bad('must be a list of strings: ["/proc/*", "*.log"]')
        return tuple(value)

    def take(self, table: dict, prefix: str, key: str, check, default=None, required=False):
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in table:
            if required:
                self.problem(dotted, "is required here")
            return default
        try:
            return check(table[key])
        except _Bad as exc:
            self.problem(dotted, str(exc))
            return default

    def unknown(self, table: dict, prefix: str, known: set[str], hint: str) -> None:
        for key in table:
            if key not in known:
                dotted = f"{prefix}.{key}" if prefix else key
                self.problem(dotted, f"unknown key: {hint}")

    def config(self, document: dict) -> Config:
        top = {
            "state_dir", "rules", "allowlist", "trusted_roots", "distrust", "system_roots",
            "exclude", "flush_timeout", "max_read", "sinks", "agent",
        }  # fmt: skip
        self.unknown(document, "", top, "the top level takes " + ", ".join(sorted(top)))
        t = self.take
        values = dict(
            state_dir=t(document, "", "state_dir", self.path_of),
            rules=t(document, "", "rules", self.paths, ()),
            allowlist=t(document, "", "allowlist", self.path_of),
            trusted_roots=t(document, "", "trusted_roots", self.paths, ()),
            distrust=t(document, "", "distrust", self.paths, ()),
            system_roots=t(document, "", "system_roots", _bool, True),
            exclude=t(document, "", "exclude", self.strings, ()),
            flush_timeout=t(document, "", "flush_timeout", duration, DEFAULT_FLUSH_TIMEOUT_S),
            max_read=t(document, "", "max_read", byte_size, DEFAULT_MAX_READ),
        )
        sinks = document.get("sinks", {})
        found: list[SinkConfig] = []
        if not isinstance(sinks, dict):
            self.problem("sinks", 'must be tables: [sinks.NAME] with type = "jsonl" | ...')
        else:
            for name, table in sinks.items():
                sink = self.sink(name, table)
                if sink is not None:
                    found.append(sink)
        agent = self.agent(document.get("agent", {}))
        if self.problems:
            self.problems.sort(key=lambda p: (p.line or 0, p.key))
            raise ConfigError(self.path, self.problems)
        return Config(self.path, sinks=tuple(found), agent=agent, **values)

    def agent(self, table) -> AgentConfig:
        if not isinstance(table, dict):
            self.problem("agent", "must be a table: [agent] followed by its keys")
            return AgentConfig()
        d = AgentConfig()
        spec = {
            "roots": (lambda v: tuple(str(p) for p in self.paths(v)), d.roots),
            "exclude": (self.strings, d.exclude),
            "watch": (_bool, d.watch),
            "rescan_interval": (duration, d.rescan_interval),
            "process_interval": (duration, d.process_interval),
            "heartbeat_interval": (duration, d.heartbeat_interval),
            "max_cpu_percent": (_percent, d.max_cpu_percent),
            "nice": (_nice, d.nice),
            "settle": (duration, d.settle),
            "watch_queue": (_positive_int, d.watch_queue),
            "log": (self.path_of, d.log),
            "log_max_bytes": (_positive_int, d.log_max_bytes),
            "log_keep": (_positive_int, d.log_keep),
        }
        self.unknown(table, "agent", set(spec), "[agent] takes " + ", ".join(sorted(spec)))
        values = {key: self.take(table, "agent", key, check, default)
                  for key, (check, default) in spec.items()}  # fmt: skip
        return AgentConfig(**values)

    def sink(self, name: str, table) -> SinkConfig | None:
        prefix = f"sinks.{name}"
        if not SINK_NAME.match(name):
            self.problem(prefix, "a sink's name is 1 to 64 letters, digits, '-' or '_'")
            return None
        if not isinstance(table, dict):
            self.problem(prefix, f"must be a table: [sinks.{name}] followed by its keys")
            return None
        kind = self.take(table, prefix, "type", _choice(*SINK_TYPES), required=True)
        if kind is None:
            return None
        known = {"type", "emit"}
        emit = self.take(table, prefix, "emit", _choice(*EMIT_CHOICES), EMIT_DETECTIONS)
        extra: dict[str, Any] = {}
        if kind in NETWORK_TYPES:
            known |= {"outbox_max_mb"}
            mb = self.take(table, prefix, "outbox_max_mb", _megabytes, DEFAULT_OUTBOX_MAX_MB)
            extra["outbox_max_bytes"] = int(mb * 2**20)
        build = {
            "jsonl": self.jsonl, "syslog": self.syslog, "hec": self.hec,
            "logs-ingestion": self.logs_ingestion,
        }[kind]  # fmt: skip
        keys, settings = build(table, prefix)
        known |= keys
        self.unknown(table, prefix, known, f"a {kind} sink takes " + ", ".join(sorted(known)))
        if settings is None:
            return None
        insecure = bool(getattr(settings, INSECURE, False))
        return SinkConfig(name, kind, emit, settings, insecure=insecure, **extra)

    # -- one method per sink type: (the keys it takes, its settings or None) ----------------
    def _settings(self, kind, table: dict, prefix: str, spec: dict) -> tuple[set[str], Any]:
        """Take each key of `spec` (key -> (check, default, required)) into kind(...)."""
        values, ok = {}, True
        for key, (check, default, required) in spec.items():
            before = len(self.problems)
            value = self.take(table, prefix, key, check, default, required)
            ok &= len(self.problems) == before
            if value is not None:
                values[key] = value
        return set(spec), (kind(**values) if ok else None)

    def jsonl(self, table: dict, prefix: str):
        return self._settings(JsonlFileSettings, table, prefix, {
            "path": (self.path_of, None, True),
            "max_bytes": (_positive_int, 100 << 20, False),
            "keep": (_positive_int, 5, False),
        })  # fmt: skip

    def _tls(self) -> dict:
        return {
            "ca_file": (self.path_of, None, False),
            INSECURE: (_bool, False, False),
            "timeout": (_positive_number, None, False),
        }

    def syslog(self, table: dict, prefix: str):
        address = self.take(table, prefix, "address", _address, required=True)
        spec = {
            "transport": (_choice("udp", "tcp", "tls"), "tcp", False),
            "cert_file": (self.path_of, None, False),
            "key_file": (self.path_of, None, False),
            "facility": (_choice(*FACILITIES), "local0", False),
            "app_name": (_str, "rmmscan", False),
            "max_message_bytes": (_positive_int, None, False),
            **self._tls(),
        }
        if address is None:
            keys, _ = self._settings(dict, table, prefix, spec)
            return keys | {"address"}, None
        host, port = address

        def make(**values):
            return SyslogSettings(host=host, port=port, **values)

        keys, settings = self._settings(make, table, prefix, spec)
        if settings is not None and settings.transport != "tls":
            for key in ("ca_file", "cert_file", "key_file", INSECURE):
                if key in table:
                    self.problem(f"{prefix}.{key}", 'applies to transport = "tls" only')
        if "key_file" in table and "cert_file" not in table:
            self.problem(f"{prefix}.key_file", "is the key of cert_file: give cert_file too")
        return keys | {"address"}, settings

    def secret(self, table: dict, prefix: str, base: str, required: bool) -> tuple[set, Any]:
        """`base`_env (an environment variable's name) or `base`_file (a private file)."""
        env, file = f"{base}_env", f"{base}_file"
        given = [k for k in (env, file) if k in table]
        keys = {env, file}
        if len(given) > 1:
            self.problem(f"{prefix}.{file}", f"give {env} or {file}, not both")
            return keys, None
        if not given:
            if required:
                self.problem(prefix, f"needs {env} (an environment variable's name) or {file}")
            return keys, None
        key = given[0]
        try:
            if key == env:
                name = _str(table[env])
                value = os.environ.get(name, "")
                if not value:
                    shown = printable(brief(name, 200))
                    raise _Bad(f"the environment variable {shown} is not set, or is empty")
                return keys, value
            data = read_private(self.path_of(table[file]), MAX_SECRET_BYTES, "secret file")
            value = data.decode("utf-8").strip()
            if not value:
                raise _Bad("the secret file is empty")
            return keys, value
        except (_Bad, ValueError) as exc:
            self.problem(f"{prefix}.{key}", str(exc) if not isinstance(exc, UnicodeError)
                         else "the secret file is not UTF-8 text")  # fmt: skip
            return keys, None

    def hec(self, table: dict, prefix: str):
        secret_keys, token = self.secret(table, prefix, "token", required=True)
        spec = {
            "url": (_https, None, True),
            "index": (_str, None, False),
            "sourcetype": (_str, None, False),
            "source": (_str, None, False),
            **self._tls(),
        }
        keys, settings = self._settings(
            lambda **v: HecSettings(token=token, **v), table, prefix, spec
        )
        return keys | secret_keys, settings if token is not None else None

    def logs_ingestion(self, table: dict, prefix: str):
        secret_keys, secret = self.secret(table, prefix, "client_secret", required=False)
        spec = {
            "endpoint": (_https, None, True),
            "rule_id": (_str, None, True),
            "stream": (_str, None, False),
            "tenant_id": (_str, None, False),
            "client_id": (_str, None, False),
            "certificate_file": (self.path_of, None, False),
            "managed_identity": (_bool, False, False),
            "authority": (_https, None, False),
            **self._tls(),
        }
        credentials = [k for k in ("client_secret_env", "client_secret_file",
                                   "certificate_file") if k in table]  # fmt: skip
        if table.get("managed_identity") is True:
            credentials.append("managed_identity")
        if len(credentials) != 1:
            found = ", ".join(credentials) or "none"
            self.problem(
                prefix,
                "needs exactly one credential: client_secret_env, client_secret_file, "
                f"certificate_file or managed_identity = true (found: {found})",
            )
        elif credentials[0] != "managed_identity":
            for key in ("tenant_id", "client_id"):
                if key not in table:
                    self.problem(f"{prefix}.{key}", f"is required with {credentials[0]}")
        keys, settings = self._settings(
            lambda **v: LogsIngestionSettings(client_secret=secret, **v), table, prefix, spec
        )
        return keys | secret_keys, settings
