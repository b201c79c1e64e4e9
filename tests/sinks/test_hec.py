"""The HEC transport against a local HTTPS receiver that keeps HEC's contract
(tests/receivers/https.py): rows arrive intact and in order, batches fit HEC's request limit,
and every answer of the receiver maps to the contract's (transport.py)."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import pytest

from rmmscan.sinks.forward import entry_of
from rmmscan.sinks.transport import Accepted, Refused, Retry, TransportError
from rmmscan.sinks.transports.hec import HecSettings, HecTransport
from rmmscan.sinks.transports.http import REQUEST_LIMIT, retry_after_seconds
from tests.receivers.https import HecReceiver
from tests.receivers.rows import AWKWARD, row

TOKEN = "9f3c2a1e-5b7d-4c8e-a0f1-hec-secret-token"


@pytest.fixture(scope="module")
def served(pki):
    with HecReceiver(pki, TOKEN, indexes=("endpoint",)) as receiver:
        yield receiver


@pytest.fixture
def receiver(served):
    served.clear()
    served.events.clear()
    return served


def settings(receiver, pki, **changes) -> HecSettings:
    values = dict(url=receiver.url, token=TOKEN, index="endpoint", ca_file=pki.ca, timeout=5.0)
    values.update(changes)
    return HecSettings(**values)


def batches(transport, entries):
    """Entries cut as a forwarding sink cuts them: by the transport's two limits."""
    out, current, size = [], [], 0
    for e in entries:
        if current and (size + len(e.row) > transport.max_batch_bytes
                        or len(current) == transport.max_batch_rows):
            out.append(current)
            current, size = [], 0
        current.append(e)
        size += len(e.row)
    return [*out, current] if current else out


def test_awkward_rows_arrive_intact_with_their_envelope(receiver, pki):
    rows = [row(i, name) for i, name in enumerate(AWKWARD)]
    transport = HecTransport(settings(receiver, pki))
    try:
        assert transport.send([entry_of(r) for r in rows]) == Accepted()
    finally:
        transport.close()
    assert receiver.rows == rows
    assert "\udcff" in receiver.rows[6]["FileName"]
    event = receiver.events[3]
    assert event["host"] == "host.example"
    assert event["time"] == pytest.approx(1796205600.123456 + 3, abs=1e-6)
    assert (event["sourcetype"], event["source"], event["index"]) == (
        "rmmscan:filecertinfo", "rmmscan", "endpoint")  # fmt: skip
    assert len(receiver.requests) == 1


def test_the_session_keeps_its_connection(receiver, pki):
    transport = HecTransport(settings(receiver, pki))
    try:
        for i in range(3):
            assert transport.send([entry_of(row(i))]) == Accepted()
        receiver.fail_next(1, 503)
        assert isinstance(transport.send([entry_of(row(3))]), Retry)
        assert transport.send([entry_of(row(4))]) == Accepted()
    finally:
        transport.close()
    assert len(receiver.requests) == 5 and receiver.connections == 1


def test_batches_fit_the_request_limit_and_keep_order(receiver, pki):
    rows = [row(i, f"big{i}.exe", pad=20_000) for i in range(150)]  # about 3 MB
    transport = HecTransport(settings(receiver, pki))
    try:
        assert transport.max_batch_bytes < REQUEST_LIMIT
        cut = batches(transport, [entry_of(r) for r in rows])
        assert len(cut) >= 3
        for batch in cut:
            assert transport.send(batch) == Accepted()
    finally:
        transport.close()
    assert receiver.rows == rows
    lengths = [r.length for r in receiver.requests]
    assert len(lengths) == len(cut) and max(lengths) <= REQUEST_LIMIT
    assert sum(lengths) > 3_000_000


def test_a_batch_over_the_limit_is_refused_unsent_and_its_halves_go(receiver, pki):
    rows = [row(i, f"big{i}.exe", pad=20_000) for i in range(60)]  # 1.2 MB: over the limit
    transport = HecTransport(settings(receiver, pki))
    try:
        answer = transport.send([entry_of(r) for r in rows])
        assert isinstance(answer, Refused) and "limit" in answer.reason
        assert receiver.requests == []
        assert transport.send([entry_of(r) for r in rows[:30]]) == Accepted()
        assert transport.send([entry_of(r) for r in rows[30:]]) == Accepted()
        huge = entry_of(row(99, pad=REQUEST_LIMIT))
        assert "limit" in transport.unsendable(huge)
        assert transport.unsendable(entry_of(row(1))) is None
    finally:
        transport.close()
    assert receiver.rows == rows


@pytest.mark.parametrize("status", [429, 503])
def test_busy_is_retry_after_what_the_receiver_asks(receiver, pki, status):
    transport = HecTransport(settings(receiver, pki))
    try:
        receiver.fail_next(1, status, retry_after="7")
        answer = transport.send([entry_of(row(1))])
        assert answer == Retry(answer.reason, 7.0) and f"HTTP {status}" in answer.reason
        when = email.utils.formatdate(time.time() + 120, usegmt=True)
        receiver.fail_next(1, status, retry_after=when)
        answer = transport.send([entry_of(row(2))])
        assert isinstance(answer, Retry) and 110 < answer.after <= 121
        assert receiver.rows == []
        assert transport.send([entry_of(row(3))]) == Accepted()
    finally:
        transport.close()
    assert [r["ReportId"] for r in receiver.rows] == [3]


def test_a_server_error_is_retry_without_after(receiver, pki):
    transport = HecTransport(settings(receiver, pki))
    try:
        receiver.fail_next(1, 500)
        answer = transport.send([entry_of(row(1))])
        assert isinstance(answer, Retry) and answer.after is None and "500" in answer.reason
    finally:
        transport.close()


def test_refusals_name_the_status_and_never_the_token(receiver, pki):
    transport = HecTransport(settings(receiver, pki))
    wrong = HecTransport(settings(receiver, pki, token="not-the-" + TOKEN))
    try:
        receiver.refuse_marker("poison")
        answer = transport.send([entry_of(row(1)), entry_of(row(2, "poison.exe"))])
        assert isinstance(answer, Refused) and "HTTP 400" in answer.reason
        assert "Invalid data format" in answer.reason
        answer = wrong.send([entry_of(row(1))])
        assert isinstance(answer, Refused) and "HTTP 403" in answer.reason
        assert "Invalid token" in answer.reason
        # A receiver that echoes the token: the reason blanks it.
        receiver.fail_next(1, 401, body=f'{{"text":"bad token {TOKEN}","code":3}}'.encode())
        answer = transport.send([entry_of(row(3))])
        assert isinstance(answer, Refused) and "HTTP 401" in answer.reason
        assert TOKEN not in answer.reason and "***" in answer.reason
        for text in (repr(transport.settings), repr(transport), transport.name):
            assert TOKEN not in text
    finally:
        transport.close()
        wrong.close()
    assert receiver.rows == []


def test_a_body_over_the_receivers_limit_is_refused_413(pki):
    with HecReceiver(pki, TOKEN, limit=10_000) as small:
        transport = HecTransport(settings(small, pki))
        try:
            answer = transport.send([entry_of(row(1, pad=20_000))])
            assert isinstance(answer, Refused) and "HTTP 413" in answer.reason
            assert TOKEN not in answer.reason
            assert transport.send([entry_of(row(2))]) == Accepted()  # the connection recovers
        finally:
            transport.close()
        assert [r["ReportId"] for r in small.rows] == [2]


def test_an_untrusted_certificate_is_retry_naming_verification(receiver, pki):
    transport = HecTransport(settings(receiver, pki, ca_file=pki.other_ca))
    try:
        answer = transport.send([entry_of(row(1))])
        assert isinstance(answer, Retry) and "certificate verification" in answer.reason
    finally:
        transport.close()
    assert receiver.requests == []


def test_a_receiver_that_goes_down_costs_a_retry_and_no_row(pki):
    receiver = HecReceiver(pki, TOKEN).start()
    transport = HecTransport(settings(receiver, pki, index=None))
    try:
        assert transport.send([entry_of(row(1))]) == Accepted()
        receiver.stop()
        answer = transport.send([entry_of(row(2))])
        assert isinstance(answer, Retry) and "cannot reach" in answer.reason
        receiver.start()  # the same port
        assert transport.send([entry_of(row(2))]) == Accepted()
    finally:
        transport.close()
        receiver.stop()
    assert [r["ReportId"] for r in receiver.rows] == [1, 2]
    assert "index" not in receiver.events[0]


def test_configuration_mistakes_raise(pki, tmp_path: Path):
    with pytest.raises(TransportError, match="ca_file"):
        HecTransport(HecSettings("https://h:8088", TOKEN, ca_file=tmp_path / "none.pem"))
    with pytest.raises(TransportError, match="https"):
        HecTransport(HecSettings("splunk:8088", TOKEN))
    with pytest.raises(TransportError) as raised:
        HecTransport(HecSettings("ftp://u:pw@splunk:8088", TOKEN))
    assert "pw" not in str(raised.value) and TOKEN not in str(raised.value)


def test_retry_after_reads_seconds_and_dates():
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("-5") == 0.0
    assert retry_after_seconds("Wed, 02 Dec 2026 10:00:30 GMT", now=1796205600.0) == 30.0
