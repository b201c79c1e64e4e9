"""The configuration reader under hostile files: whatever the bytes, `read_config` returns a
Config or raises ConfigError, and every problem it lists is usable.

The contract, checked on every input (`check`): no other exception and no hang; each problem
has a line that is None or inside the file, a message, and a key whose line is where KeyLines
places it; each shown problem is one printable line; and no message shows a secret (from the
environment or a private file). The inputs are the shipped example, its uncommented variant
and small seeds, mutated as TOML (lines deleted, duplicated, moved; values swapped and
retyped; keys quoted, dotted and full of control characters; array-of-tables and inline-table
sinks; huge, NaN and infinite numbers) and then as bytes (truncation, bit flips, invalid UTF-8,
NUL). Every crash found is a named test below with its smallest input. fuzz/config_fuzz.py is
the coverage-guided campaign over the same contract.
"""

from __future__ import annotations

import math
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmmscan.config.schema import Config, read_config
from rmmscan.config.source import ConfigError, KeyLines

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "packaging" / "rmmscan.example.toml").read_text("utf-8")
SECRET = "Fuzz-s3cret-Marker-never-shown"
SECRET_ENV = "RMMSCAN_FUZZ_SECRET"


def _uncommented(text: str) -> str:
    out = []
    for line in text.splitlines():
        m = re.match(r"^# (\[sinks\.[^\]]+\]|[a-z_]+ = .*)$", line)
        out.append(m.group(1) if m else line)
    return "\n".join(out) + "\n"


SEEDS = [
    EXAMPLE,
    _uncommented(EXAMPLE),
    'flush_timeout = 5\n[sinks.s]\ntype = "hec"\nurl = "https://h:8088"\n'
    f'token_env = "{SECRET_ENV}"\nindex = "x"\n',
    '[sinks.s]\ntype = "hec"\nurl = "https://h"\ntoken_file = "fuzz.secret"\n',
    '[sinks.s]\ntype = "hec"\nurl = "https://h"\ntoken_file = "open.secret"\n',
    '[sinks.l]\ntype = "logs-ingestion"\nendpoint = "https://dce"\nrule_id = "dcr-1"\n'
    f'tenant_id = "t"\nclient_id = "c"\nclient_secret_env = "{SECRET_ENV}"\n',
    '[sinks.l]\ntype = "logs-ingestion"\nendpoint = "https://dce"\nrule_id = "dcr-1"\n'
    'tenant_id = "t"\nclient_id = "c"\nclient_secret_file = "fuzz.secret"\n',
    '[sinks.y]\ntype = "syslog"\naddress = "[::1]:6514"\ntransport = "tls"\n'
    'ca_file = "ca.pem"\ncert_file = "c.pem"\nkey_file = "k.pem"\noutbox_max_mb = 1.5\n',
    'sinks = { j = { type = "jsonl", path = "rows.jsonl", keep = 2 } }\n',
    '[[sinks.a]]\ntype = "jsonl"\n[sinks."b c"]\ntype = "x"\n',
    'state_dir = "~/s"\nrules = ["r"]\nallowlist = "a.yaml"\ntrusted_roots = []\n'
    "distrust = ['d.json']\nsystem_roots = false\nexclude = [\"/proc/*\"]\n",
    'a = """\n[sinks.x]\n"""\nb.c = 1\n"d.e" = 2\n',
    '[agent]\nroots = ["/", "rel"]\nexclude = ["*.log"]\nwatch = true\nsettle = "250ms"\n'
    'rescan_interval = "6h"\nprocess_interval = 0\nheartbeat_interval = 300\n'
    'max_cpu_percent = 25.5\nnice = 19\nwatch_queue = 10\nlog = "a.log"\nlog_keep = 1\n',
    'agent = { roots = [], nice = -1 }\n[agent.x]\n',
]
SEEDS_BYTES = [s.encode() for s in SEEDS]
KNOWN_KEYS = [
    "state_dir", "rules", "allowlist", "trusted_roots", "distrust", "system_roots", "exclude",
    "flush_timeout", "sinks", "type", "emit", "path", "max_bytes", "keep", "address",
    "transport", "ca_file", "cert_file", "key_file", "facility", "app_name",
    "max_message_bytes", "insecure_skip_tls_verify", "timeout", "outbox_max_mb", "url",
    "token_env", "token_file", "index", "sourcetype", "source", "endpoint", "rule_id",
    "stream", "tenant_id", "client_id", "client_secret_env", "client_secret_file",
    "certificate_file", "managed_identity", "authority", "agent", "roots", "watch", "settle",
    "rescan_interval", "process_interval", "heartbeat_interval", "max_cpu_percent", "nice",
    "watch_queue", "log", "log_max_bytes", "log_keep", "max_read",
]  # fmt: skip
USEFUL = [
    "jsonl", "syslog", "hec", "logs-ingestion", "detections", "signed", "all", "udp", "tcp",
    "tls", "local0", "https://h:1", "http://h", "h:514", "[::1]:1", "30s", "5m", "500ms",
    SECRET_ENV, "fuzz.secret", "open.secret", "~", "~root/x", ".", "/dev/zero", "/proc",
    "4G", "100K", "0",
]  # fmt: skip


# -- the contract ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzzconfig")
    for name, mode in (("fuzz.secret", 0o600), ("open.secret", 0o644)):
        (folder / name).write_text(SECRET + "\n")
        (folder / name).chmod(mode)
    return folder


@contextmanager
def _secret_in_environment():
    before = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = SECRET
    try:
        yield
    finally:
        if before is None:
            del os.environ[SECRET_ENV]
        else:
            os.environ[SECRET_ENV] = before


def line_count(data: bytes) -> int:
    """Lines as TOML counts them: "\\n" ends one; a last line without it counts too."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def check(folder: Path, data: bytes, budget: float = 5.0) -> Config | ConfigError:
    """Read `data` as a private config file; assert the contract; return what read_config gave.

    Any exception other than ConfigError propagates: that is the finding."""
    path = folder / "rmmscan.toml"
    path.write_bytes(data)
    path.chmod(0o600)
    started = time.monotonic()
    with _secret_in_environment():
        try:
            result: Config | ConfigError = read_config(path)
        except ConfigError as exc:
            result = exc
    elapsed = time.monotonic() - started
    assert elapsed < budget, f"read_config took {elapsed:.1f} s"
    if isinstance(result, Config):
        return result
    assert result.problems, "a ConfigError without a problem"
    lines = line_count(data)
    keylines = None
    for problem in result.problems:
        assert problem.line is None or 1 <= problem.line <= lines, (problem, lines)
        assert isinstance(problem.message, str) and problem.message.strip(), problem
        shown = problem.show(path)
        assert shown.isprintable(), repr(shown)  # one line: no newline, no control character
        assert SECRET not in shown
        if problem.key:  # a key's problem: the file is TOML, and KeyLines places the key
            if keylines is None:
                keylines = KeyLines(data.decode("utf-8"))
            assert problem.line == keylines.of(problem.key), problem
    assert SECRET not in str(result)
    return result


def problems(result) -> list[tuple[int | None, str, str]]:
    assert isinstance(result, ConfigError), result
    return [(p.line, p.key, p.message) for p in result.problems]


# -- TOML-level mutations ----------------------------------------------------------------------
def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_chars = st.characters(blacklist_categories=("Cs",))
_text = st.one_of(
    st.sampled_from(USEFUL + KNOWN_KEYS + [""]),
    st.text(_chars, max_size=12),
    st.builds(lambda c, n: c * n, st.sampled_from("a\n\x00[ .\u2028"), st.integers(1, 3000)),
)
_scalar = st.one_of(
    _text.map(_toml_string),
    st.sampled_from(["'lit'", "'''\nml\n'''", '"""\nx\n"""', "1979-05-27", "07:32:00",
                     "1979-05-27T07:32:00Z", "nan", "+inf", "-inf", "-0.0", "1e308", "0x7f",
                     "0o7", "0b1", "1_000"]),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(300, 5000).map(lambda n: "9" * n),
    st.floats(allow_nan=True, allow_infinity=False).map(repr).filter(
        lambda r: "e" in r or "." in r),
    st.booleans().map(lambda b: "true" if b else "false"),
)  # fmt: skip


def _key():
    part = st.one_of(
        st.sampled_from(KNOWN_KEYS),
        st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
        _text.map(_toml_string),
        st.text(_chars, max_size=6).filter(lambda t: "'" not in t and "\n" not in t).map(
            lambda t: f"'{t}'"),
    )  # fmt: skip
    return st.lists(part, min_size=1, max_size=3).map(".".join)


def _value_of(children):
    keys = _key()
    return st.one_of(
        st.lists(children, max_size=4).map(lambda v: "[" + ", ".join(v) + "]"),
        st.lists(st.tuples(keys, children), max_size=3).map(
            lambda kv: "{ " + ", ".join(f"{k} = {v}" for k, v in kv) + " }"
        ),
    )


_value = st.recursive(_scalar, _value_of, max_leaves=8)


_header = st.one_of(
    st.sampled_from(["[sinks]", "[[sinks]]", "[sinks.a]", "[[sinks.a]]", "[sinks.local]",
                     '[sinks."local"]', "[sinks.a.b]", "[ sinks . z ]", "[x]"]),
    _key().map(lambda k: f"[sinks.{k}]"),
    _key().map(lambda k: f"[[{k}]]"),
)  # fmt: skip
_line = st.one_of(
    st.tuples(_key(), _value).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.tuples(st.sampled_from(KNOWN_KEYS), _value).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    _header,
    st.text(st.sampled_from('[]{}"\'=.#,\\ \tab1\u2028\x85'), max_size=20),
    st.sampled_from(["", "# comment [sinks.x] = 1", 'sinks = "x"', "sinks = 5", "sinks = []"]),
)


@st.composite
def toml_mutant(draw) -> str:
    lines = draw(st.sampled_from(SEEDS)).split("\n")
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "duplicate", "move", "insert", "revalue", "swap",
                                   "rekey", "uncomment"]))  # fmt: skip
        i = draw(st.integers(0, len(lines) - 1))
        pair = re.match(r"^\s*([^=#]+?)\s*=\s*(.*)$", lines[i])
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), lines[i])
        elif op == "move":
            line = lines.pop(i)
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif op == "insert":
            lines.insert(i, draw(_line))
        elif op == "revalue" and pair:
            lines[i] = f"{pair.group(1)} = {draw(_value)}"
        elif op == "swap" and pair:
            j = draw(st.integers(0, len(lines) - 1))
            other = re.match(r"^\s*([^=#]+?)\s*=\s*(.*)$", lines[j])
            if other:
                lines[i] = f"{pair.group(1)} = {other.group(2)}"
                lines[j] = f"{other.group(1)} = {pair.group(2)}"
        elif op == "rekey" and pair:
            lines[i] = f"{draw(_key())} = {pair.group(2)}"
        elif op == "uncomment" and lines[i].startswith("# "):
            lines[i] = lines[i][2:]
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


BLOBS = [b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x80\xa8", b"\r", b"\x1b[31m",
         b"\xef\xbb\xbf", b'"""', b"[", b"]"]  # fmt: skip


@st.composite
def byte_mutant(draw) -> bytes:
    data = bytearray(draw(st.one_of(st.sampled_from(SEEDS_BYTES), toml_mutant().map(str.encode))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "truncate":
            del data[i:]
        elif op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from(BLOBS))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
    return bytes(data)


_fuzz = settings(max_examples=250, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])  # fmt: skip


@_fuzz
@given(text=toml_mutant())
def test_toml_mutants_keep_the_contract(workdir, text):
    check(workdir, text.encode("utf-8"))


@_fuzz
@given(data=byte_mutant())
def test_byte_mutants_keep_the_contract(workdir, data):
    check(workdir, data)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_the_seeds_keep_the_contract(workdir, seed):
    check(workdir, SEEDS_BYTES[seed])


def test_the_uncommented_example_with_a_secret_from_the_environment_is_usable(workdir):
    text = _uncommented(EXAMPLE).replace("RMMSCAN_HEC_TOKEN", SECRET_ENV)
    text = text.replace("RMMSCAN_SENTINEL_SECRET", SECRET_ENV)
    text = re.sub(r"\n# (client_secret_file|certificate_file|managed_identity|token_file).*",
                  "", text)  # fmt: skip
    text = re.sub(r"\n(ca_file|cert_file|key_file) = .*", "", text)
    config = check(workdir, text.encode())
    assert isinstance(config, Config), config
    assert [s.name for s in config.sinks] == ["local", "soc-syslog", "splunk", "sentinel"]


# -- KeyLines stays linear on long lines ------------------------------------------------------
MB = 1 << 20


@pytest.mark.parametrize(
    "line",
    [
        "[" + " " * (MB // 2 - 8) + "1" + " " * (MB // 2 - 8) + "],",  # inside an array
        "[" + "a." * (MB // 2 - 4) + "],",
        "a" * (MB - 4) + " # ",
        "a." * (MB // 2 - 4) + "a = 1",
        '"a".' * (MB // 4 - 4) + "b = 1",
        "a" + " " * (MB - 8) + "=",
        "[" * (MB - 4),
        "[[" + " ." * (MB // 2 - 8) + "]]x",
        '"""' + "[a]" * (MB // 3 - 4),
    ],
)
def test_key_lines_are_found_in_linear_time_on_a_one_megabyte_line(line):
    started = time.monotonic()
    KeyLines("a = [\n" + line + "\n]\n")
    KeyLines(line)
    assert time.monotonic() - started < 2.0


# -- regressions: each crash or broken contract the fuzzing found, smallest input first -----
def test_regression_an_array_header_line_inside_an_array_is_read_in_linear_time(workdir):
    # The header pattern backtracked cubically: 1,000 spaces took seconds, a 1 MB line years.
    data = ("a = [\n[" + " " * 400_000 + "1" + " " * 400_000 + "],\n]\n").encode()
    assert problems(check(workdir, data, budget=2.0))[0][:2] == (1, "a")


def test_regression_arrays_nested_too_deeply_are_a_problem_not_a_recursion_error(workdir):
    result = check(workdir, ("a = " + "[" * 1000 + "]" * 1000).encode())
    assert problems(result) == [
        (None, "", "not valid TOML here: arrays or tables nested too deeply")
    ]
    result = check(workdir, ("a = " + "{b=" * 1000 + "1" + "}" * 1000).encode())
    assert "nested too deeply" in problems(result)[0][2]


def test_regression_an_integer_of_4301_digits_is_a_problem_not_a_value_error(workdir):
    result = check(workdir, ("a = 1" + "0" * 4300 + "\n").encode())
    assert problems(result) == [(None, "", "not valid TOML here: a number with too many digits")]


def test_regression_a_newline_in_a_quoted_key_does_not_split_the_message(workdir):
    result = check(workdir, b'"a\\nb" = 1\n')
    assert problems(result)[0][:2] == (1, "a\nb")
    shown = result.problems[0].show(workdir / "c.toml")
    assert shown.startswith(f"{workdir}/c.toml:1: $'a\\nb': unknown key: "), shown


def test_regression_an_escape_sequence_in_a_url_does_not_reach_the_terminal(workdir):
    data = b'[sinks.s]\ntype = "hec"\nurl = "\\u001b[2J\\n"\ntoken_env = "X"\n'
    result = check(workdir, data)
    url = next(p for p in result.problems if p.key == "sinks.s.url")
    assert url.message.endswith('"$\'\\x1b[2J\\n\'"'), url.message


def test_regression_a_newline_in_a_secret_variable_name_does_not_split_the_message(workdir):
    data = b'[sinks.s]\ntype = "hec"\nurl = "https://h"\ntoken_env = "A\\nB"\n'
    (problem,) = check(workdir, data).problems
    assert problem.message == "the environment variable $'A\\nB' is not set, or is empty"


def test_regression_a_sink_name_ending_in_a_newline_is_refused(workdir):
    # "$" matches before a final "\n": the name was taken, and with it an outbox named so.
    result = check(workdir, b'[sinks."a\\n"]\ntype = "jsonl"\npath = "x"\n')
    assert problems(result) == [
        (1, "sinks.a\n", "a sink's name is 1 to 64 letters, digits, '-' or '_'")
    ]


def test_regression_line_separators_in_a_comment_do_not_move_the_lines(workdir):
    # str.splitlines breaks at U+2028 and U+0085; TOML (and tomllib's errors) at "\n" only.
    result = check(workdir, "# \u2028\u2028\x85\nfoo = 1\n".encode())
    assert problems(result)[0][:2] == (2, "foo")


def test_regression_keys_under_an_array_of_tables_are_placed_under_it(workdir):
    result = check(workdir, b'flush_timeout = 1\n[[sinks.a]]\ntype = "jsonl"\n')
    assert problems(result) == [(2, "sinks.a", "must be a table: [sinks.a] followed by its keys")]


@pytest.mark.parametrize("value", ["inf", "1e308", "1" + "0" * 400])
def test_regression_an_outbox_too_large_for_a_float_is_a_problem_not_an_overflow(
    workdir, value
):
    data = f'[sinks.y]\ntype = "syslog"\naddress = "h:1"\noutbox_max_mb = {value}\n'.encode()
    ((line, key, message),) = problems(check(workdir, data))
    assert (line, key) == (4, "sinks.y.outbox_max_mb")
    assert message.startswith("must be")


@pytest.mark.parametrize("value", ["nan", "inf", "-nan", "1" + "0" * 400, '"1' + "0" * 400 + 's"'])
def test_regression_a_flush_timeout_that_is_not_a_finite_number_is_a_problem(workdir, value):
    # nan compared as not below 0 and was taken; 10**400 seconds overflowed float().
    ((line, key, message),) = problems(check(workdir, f"flush_timeout = {value}\n".encode()))
    assert (line, key) == (1, "flush_timeout") and message.startswith("must be seconds")


def test_regression_a_timeout_of_inf_is_a_problem(workdir):
    data = b'[sinks.y]\ntype = "syslog"\naddress = "h:1"\ntimeout = inf\n'
    assert problems(check(workdir, data)) == [(4, "sinks.y.timeout", "must be a number above 0")]


def test_regression_a_port_of_5000_digits_is_a_problem_not_a_value_error(workdir):
    data = ('[sinks.y]\ntype = "syslog"\naddress = "h:' + "9" * 5000 + '"\n').encode()
    ((line, key, message),) = problems(check(workdir, data))
    assert (line, key) == (3, "sinks.y.address")
    assert message.startswith("port 999") and message.endswith("is not between 1 and 65535")
    assert len(message) < 80


def test_regression_a_nul_after_a_tilde_in_a_path_is_a_problem_not_a_value_error(workdir):
    # os.path.expanduser looks the user "\0" up, and pwd raises ValueError on it.
    assert problems(check(workdir, b'state_dir = "~\\u0000"\n')) == [
        (1, "state_dir", "must not hold a NUL character (\\u0000)")
    ]


def test_durations_are_finite_and_written_in_ascii_digits():
    from rmmscan.config.schema import duration

    assert duration("1.5m") == 90.0
    for bad in (math.nan, math.inf, 10**400, "\u0663s", "1e3s"):
        with pytest.raises(Exception, match="must be seconds"):
            duration(bad)


def test_regression_a_secret_file_that_is_a_directory_is_a_problem_not_an_os_error(workdir):
    # os.fdopen raised IsADirectoryError before the regular-file check could refuse it.
    data = b'[sinks.s]\ntype = "hec"\nurl = "https://h"\ntoken_file = "."\n'
    ((line, key, message),) = problems(check(workdir, data))
    assert (line, key) == (4, "sinks.s.token_file")
    assert message == f"the secret file {workdir} is not a regular file"


def test_regression_a_configuration_that_is_a_directory_is_a_problem(workdir):
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_config(workdir)
