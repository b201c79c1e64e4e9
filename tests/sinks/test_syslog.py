"""The syslog transport against a real rsyslog (tests/receivers/rsyslog.py) over UDP, TCP and
TLS: every row arrives once and intact, rsyslog parses the RFC 5424 header as meant, TLS trusts
only what it is told to, and a receiver that is down, stopped or restarted costs a Retry, never
a row."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import signal
import socket
import ssl
import threading
import time

import pytest

from rmmscan.sinks.forward import entry_of
from rmmscan.sinks.jsonl import dumps
from rmmscan.sinks.transport import Accepted, Retry, TransportError
from rmmscan.sinks.transports.syslog import (
    FACILITIES,
    MSGID,
    SyslogSettings,
    SyslogTransport,
)
from tests.receivers.pki import Pki, make_pki
from tests.receivers.rows import AWKWARD
from tests.receivers.rsyslog import Rsyslog

LONG_PATH = "C:\\" + "\\".join(["deep"] * 6000) + "\\x.exe"  # 30,009 characters


def make_row(i: int, name: str, folder: str = "C:\\Program Files\\DWAgent\\") -> dict:
    """A row as the engine emits it (its columns, its value formats); odd rows detections."""
    stamp = dt.datetime(2026, 12, 2, 10, 30, 0, 123456 + i, tzinfo=dt.UTC)
    return {
        "Timestamp": stamp.isoformat().replace("+00:00", "Z"),
        "DeviceId": "a" * 40,
        "DeviceName": "wks-01.corp.example",
        "SHA1": f"{i:040x}",
        "IsSigned": True,
        "SignatureType": "Embedded",
        "Signer": "DWSNET OÜ",
        "Issuer": "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1",
        "IsTrusted": i % 3 != 0,
        "ReportId": 1000 + i,
        "FileName": name,
        "FolderPath": folder + name,
        "FileSize": 123456 + i,
        "VerificationStatus": "Ok",
        "RuleId": "5d6b8e4f-0c41-4c4f-9a36-2f1c1c6e2a10" if i % 2 else None,
    }


def awkward_rows(long_path: bool) -> list[dict]:
    rows = [make_row(i, name) for i, name in enumerate(AWKWARD)]
    if long_path:
        rows.append(make_row(len(rows), "x.exe", folder=LONG_PATH))
    return rows


def settings(receiver: Rsyslog, pki: Pki | None = None, **kw) -> SyslogSettings:
    if receiver.transport == "tls" and pki is not None:
        kw.setdefault("ca_file", pki.ca)
    return SyslogSettings("127.0.0.1", receiver.port, receiver.transport, **kw)


def received(receiver: Rsyslog, count: int) -> list[dict]:
    return [json.loads(line) for line in receiver.wait_for(count)]


def by_report_id(rows: list[dict]) -> dict[int, dict]:
    counts = collections.Counter(row["ReportId"] for row in rows)
    assert all(n == 1 for n in counts.values()), f"duplicates: {counts}"
    return {row["ReportId"]: row for row in rows}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=["udp", "tcp", "tls"])
def receiver(request, tmp_path, pki):
    kind = request.param
    with Rsyslog(tmp_path / "rsyslog", kind, pki=pki if kind == "tls" else None) as r:
        yield r


def test_rows_arrive_once_and_intact_with_the_header_rsyslog_parses(receiver, pki):
    rows = awkward_rows(long_path=receiver.transport != "udp")
    transport = SyslogTransport(settings(receiver, pki, facility="local3", app_name="rmmscan-t"))
    try:
        for start in range(0, len(rows), 3):  # several batches on one connection
            batch = [entry_of(row) for row in rows[start : start + 3]]
            assert all(transport.unsendable(e) is None for e in batch)
            assert transport.send(batch) == Accepted()
    finally:
        transport.close()
    got = received(receiver, len(rows))
    assert len(got) == len(rows), receiver.log()
    assert by_report_id(got) == by_report_id(rows)  # every field, every awkward character
    if receiver.transport != "udp":
        assert any(len(row["FolderPath"]) > 30_000 for row in got)

    headers = receiver.headers()
    assert len(headers) == len(rows)
    for header, row in zip(headers, got, strict=True):  # rsyslog keeps one sender's order
        assert header["hostname"] == "wks-01.corp.example"
        assert header["app-name"] == "rmmscan-t"
        assert header["procid"] == str(os.getpid())
        assert header["msgid"] == MSGID == "DeviceFileCertificateInfo"
        assert header["syslogfacility-text"] == "local3"
        assert header["syslogseverity-text"] == ("warning" if row["RuleId"] else "info")
        assert header["timereported:::date-rfc3339"] == row["Timestamp"]
        assert header["structured-data"] == "-"


def test_header_hostname_is_printable_ascii_and_never_empty(tmp_path):
    rows = [make_row(0, "a.exe"), make_row(1, "b.exe")]
    rows[0]["DeviceName"] = "bad host\tnäme\n" + "h" * 300
    rows[1]["DeviceName"] = ""
    with Rsyslog(tmp_path / "rsyslog", "tcp") as receiver:
        transport = SyslogTransport(settings(receiver))
        assert transport.send([entry_of(row) for row in rows]) == Accepted()
        transport.close()
        got = received(receiver, 2)
        headers = receiver.headers()
    assert by_report_id(got) == by_report_id(rows)
    assert headers[0]["hostname"] == ("bad_host_n_me_" + "h" * 300)[:255]
    assert headers[1]["hostname"] == "-"  # the RFC's NILVALUE, not an empty field


def test_udp_sends_what_fits_and_reports_the_rest_with_the_limit(tmp_path):
    with Rsyslog(tmp_path / "rsyslog", "udp") as receiver:
        transport = SyslogTransport(settings(receiver))
        fits, over = make_row(1, "fits.exe"), make_row(2, "over.exe")
        header = len(transport.message(entry_of(fits))) - len(dumps(fits))
        # Pad both rows' paths so that their messages are exactly the limit and one byte more.
        fits["FolderPath"] += "p" * (8192 - header - len(dumps(fits)))
        over["FolderPath"] += "p" * (8193 - header - len(dumps(over)))
        assert len(transport.message(entry_of(fits))) == 8192
        assert len(transport.message(entry_of(over))) == 8193
        assert transport.unsendable(entry_of(fits)) is None
        reason = transport.unsendable(entry_of(over))
        assert reason is not None
        for words in ("8193", "8192", "max_message_bytes", "receiver", "tcp"):
            assert words in reason
        long = entry_of(make_row(3, "x.exe", folder=LONG_PATH))
        assert "8192" in (transport.unsendable(long) or "")

        assert transport.send([entry_of(fits), entry_of(make_row(4, "small.exe"))]) == Accepted()
        transport.close()
        got = received(receiver, 2)
    assert by_report_id(got) == by_report_id([fits, make_row(4, "small.exe")])

    wide = SyslogTransport(
        SyslogSettings("127.0.0.1", 9, "udp", max_message_bytes=100_000)
    ).unsendable(long)
    assert wide is None
    huge = entry_of(make_row(5, "x.exe", folder=LONG_PATH * 3))
    beyond = SyslogTransport(SyslogSettings("127.0.0.1", 9, "udp", max_message_bytes=100_000))
    assert "65507" in (beyond.unsendable(huge) or "")


def test_tcp_and_tls_never_call_a_row_unsendable(tmp_path, pki):
    huge = entry_of(make_row(0, "x.exe", folder=LONG_PATH * 3))
    for kind in ("tcp", "tls"):
        transport = SyslogTransport(SyslogSettings("127.0.0.1", 9, kind, ca_file=pki.ca))
        assert transport.unsendable(huge) is None


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_receiver_down_is_retry_and_the_same_batch_goes_after_restart(tmp_path, pki, kind):
    rows = awkward_rows(long_path=True)
    first, second = [entry_of(r) for r in rows[:4]], [entry_of(r) for r in rows[4:]]
    with Rsyslog(tmp_path / "rsyslog", kind, pki=pki if kind == "tls" else None) as receiver:
        transport = SyslogTransport(settings(receiver, pki, timeout=3))
        assert transport.send(first) == Accepted()
        assert len(receiver.wait_for(4)) == 4
        receiver.stop()
        for _ in range(2):  # the old connection is dead, and no new one can be made
            answer = transport.send(second)
            assert isinstance(answer, Retry), answer
            assert answer.reason
        receiver.start()
        assert transport.send(second) == Accepted()
        transport.close()
        got = received(receiver, len(rows))
    assert by_report_id(got) == by_report_id(rows)


def test_udp_receiver_down_is_retry_not_an_exception(tmp_path):
    rows = [entry_of(make_row(i, f"{i}.exe")) for i in range(3)]
    with Rsyslog(tmp_path / "rsyslog", "udp") as receiver:
        transport = SyslogTransport(settings(receiver))
        receiver.stop()
        # Best effort: the first datagram goes unnoticed, the port unreachable it earns
        # fails a later one of the batch (loopback answers at once).
        answer = transport.send(rows)
        assert isinstance(answer, Retry), answer
        receiver.start()
        assert transport.send(rows) == Accepted()
        transport.close()
        got = received(receiver, 3)
    assert sorted(row["ReportId"] for row in got) == [1000, 1001, 1002]


def test_unacknowledged_batch_is_retry_within_the_timeout_and_then_delivered(tmp_path):
    """A receiver that stops reading: its kernel acknowledges what fits its receive buffer and
    no more, so the batch is not Accepted; once it reads again the same batch is."""
    rows = [make_row(i, "x.exe", folder=LONG_PATH) for i in range(40)]  # 1.2 MB
    batch = [entry_of(row) for row in rows]
    with Rsyslog(tmp_path / "rsyslog", "tcp") as receiver:
        transport = SyslogTransport(settings(receiver, timeout=1.0))
        assert transport.send(batch[:1]) == Accepted()  # connected
        os.kill(receiver.pid, signal.SIGSTOP)
        try:
            answer = transport.send(batch)
        finally:
            os.kill(receiver.pid, signal.SIGCONT)
        assert isinstance(answer, Retry), answer
        assert "acknowledge" in answer.reason or "timed out" in answer.reason
        assert transport.send(batch) == Accepted()
        transport.close()
        got = received(receiver, 1 + len(rows))
    # At least once: each row arrived, intact; some twice (the abandoned batch's head).
    assert {row["ReportId"] for row in got} == {row["ReportId"] for row in rows}
    for row in got:
        assert row == rows[row["ReportId"] - 1000]


def test_tls_untrusted_server_is_a_certificate_verification_retry(tmp_path, pki):
    with Rsyslog(tmp_path / "rsyslog", "tls", pki=pki) as receiver:
        transport = SyslogTransport(settings(receiver, ca_file=pki.other_ca))
        for _ in range(2):
            answer = transport.send([entry_of(make_row(0, "a.exe"))])
            assert isinstance(answer, Retry), answer
            assert "certificate verification failed" in answer.reason
        transport.close()
        assert receiver.wait_for(1, timeout=1.0) == []

        trusting = SyslogTransport(settings(receiver, ca_file=pki.ca))
        skip = SyslogTransport(
            settings(receiver, ca_file=pki.other_ca, insecure_skip_tls_verify=True)
        )
        assert skip.send([entry_of(make_row(1, "b.exe"))]) == Accepted()
        assert trusting.send([entry_of(make_row(2, "c.exe"))]) == Accepted()
        skip.close()
        trusting.close()
        got = received(receiver, 2)
    assert sorted(row["ReportId"] for row in got) == [1001, 1002]


def test_tls_hostname_is_checked(tmp_path, pki):
    """The server's certificate names localhost and 127.0.0.1. "127.1" reaches the same
    address (inet_aton) but is neither name, so the sink refuses it unless told to skip."""
    with Rsyslog(tmp_path / "rsyslog", "tls", pki=pki) as receiver:
        named = SyslogTransport(SyslogSettings("localhost", receiver.port, "tls", ca_file=pki.ca))
        assert named.send([entry_of(make_row(0, "a.exe"))]) == Accepted()
        named.close()
        other = SyslogSettings("127.1", receiver.port, "tls", ca_file=pki.ca)
        answer = SyslogTransport(other).send([entry_of(make_row(1, "b.exe"))])
        assert isinstance(answer, Retry), answer
        assert "certificate verification failed" in answer.reason
        assert "127.1" in answer.reason  # OpenSSL names the mismatch
        skipping = SyslogTransport(
            SyslogSettings(
                "127.1", receiver.port, "tls", ca_file=pki.ca, insecure_skip_tls_verify=True
            )
        )
        assert skipping.send([entry_of(make_row(2, "c.exe"))]) == Accepted()
        skipping.close()
        got = received(receiver, 2)
    assert sorted(row["ReportId"] for row in got) == [1000, 1002]


def test_mutual_tls_presents_the_client_certificate(tmp_path, pki):
    with Rsyslog(tmp_path / "rsyslog", "tls", pki=pki, require_client_cert=True) as receiver:
        without = SyslogTransport(settings(receiver, pki, timeout=3))
        for _ in range(3):
            answer = without.send([entry_of(make_row(0, "a.exe"))])
            assert isinstance(answer, Retry), answer
        without.close()
        assert receiver.wait_for(1, timeout=1.0) == []
        with_cert = SyslogTransport(
            settings(receiver, pki, cert_file=pki.client_cert, key_file=pki.client_key)
        )
        rows = awkward_rows(long_path=True)
        assert with_cert.send([entry_of(row) for row in rows]) == Accepted()
        with_cert.close()
        got = received(receiver, len(rows))
    assert by_report_id(got) == by_report_id(rows)


def test_configuration_mistakes_raise_naming_the_file(tmp_path, pki):
    missing = tmp_path / "nope.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        (dict(ca_file=missing), "nope.pem"),
        (dict(ca_file=garbage), "garbage.pem"),
        (dict(ca_file=pki.ca, cert_file=missing, key_file=pki.client_key), "nope.pem"),
        (dict(ca_file=pki.ca, cert_file=pki.client_cert, key_file=garbage), "garbage.pem"),
        (dict(ca_file=pki.ca, key_file=pki.client_key), "client.key"),
    ]
    for kw, name in cases:
        with pytest.raises(TransportError, match=name):
            SyslogTransport(SyslogSettings("127.0.0.1", 6514, "tls", **kw))
    with pytest.raises(TransportError, match="facility"):
        SyslogTransport(SyslogSettings("127.0.0.1", 514, "tcp", facility="local9"))
    with pytest.raises(TransportError, match="transport"):
        SyslogTransport(SyslogSettings("127.0.0.1", 514, "sctp"))
    assert "local0" in FACILITIES and "local7" in FACILITIES and "kern" in FACILITIES
    assert SyslogTransport(SyslogSettings("::1", 6514, "tcp")).name == "syslog tcp [::1]:6514"


def test_nothing_is_sent_before_the_first_send(tmp_path):
    with Rsyslog(tmp_path / "rsyslog", "tcp") as receiver:
        transport = SyslogTransport(settings(receiver))
        transport.close()
        receiver.stop()
        transport = SyslogTransport(settings(receiver))  # lazily: constructing needs no receiver
        assert isinstance(transport.send([entry_of(make_row(0, "a.exe"))]), Retry)
    assert receiver.messages() == []


def test_tls_session_tickets_are_not_mistaken_for_a_hang_up(tmp_path, pki):
    """OpenSSL servers send TLS 1.3 session tickets after the handshake (rsyslog's gtls does
    not): the socket turns readable with no data, and the connection is still good."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.num_tickets = 2
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    chunks: list[bytes] = []
    connections: list[str] = []

    def serve() -> None:
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            connections.append(conn.version() or "")
            conn.settimeout(10)
            while data := conn.recv(65536):
                chunks.append(data)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    transport = SyslogTransport(SyslogSettings("127.0.0.1", port, "tls", ca_file=pki.ca))
    rows = [make_row(i, f"{i}.exe") for i in range(3)]
    try:
        for row in rows:
            assert transport.send([entry_of(row)]) == Accepted()
            time.sleep(0.1)  # the tickets arrive before the next batch
    finally:
        transport.close()
        server.join(10)
        listener.close()
    assert connections == ["TLSv1.3"]  # one connection kept for every batch
    stream = b"".join(chunks)
    messages = []
    while stream:
        length, _, rest = stream.partition(b" ")
        messages.append(rest[: int(length)])
        stream = rest[int(length) :]
    assert [json.loads(m.split(b" - ", 1)[1]) for m in messages] == rows
