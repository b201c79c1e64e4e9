"""The Logs Ingestion transport, with the real azure-identity credentials and the real
azure-monitor-ingestion client, against local HTTPS receivers that keep Entra ID's and the
Logs Ingestion API's contracts (tests/receivers/https.py): each credential kind gets a token,
rows arrive intact with TimeGenerated, batches fit the API's limit, and every answer maps to
the contract's (transport.py)."""

from __future__ import annotations

import datetime as dt
import email.utils
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from rmmscan.sinks.forward import entry_of
from rmmscan.sinks.transport import Accepted, Refused, Retry, TransportError
from rmmscan.sinks.transports.http import REQUEST_LIMIT
from rmmscan.sinks.transports.logs_ingestion import LogsIngestionSettings, LogsIngestionTransport
from tests.receivers.https import EntraReceiver, LogsIngestionReceiver
from tests.receivers.pki import make_pki
from tests.receivers.rows import AWKWARD, row

CLIENT = "6a1f0c55-0000-4000-8000-0000000c1e47"
SECRET = "s3cr3t~LogsIngestion.Client_Secret-value"
RULE = "dcr-00112233445566778899aabbccddeeff"
STREAM = "Custom-RmmScanFileCertificateInfo_CL"


@pytest.fixture(scope="module")
def client_certificate(tmp_path_factory) -> tuple[Path, bytes]:
    """An RSA key and its self-signed certificate in one PEM, as CertificateCredential reads
    it, and the certificate alone, as an app registration holds it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rmmscan agent")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    path = tmp_path_factory.mktemp("client") / "agent.pem"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + pem)  # fmt: skip
    return path, pem


@pytest.fixture(scope="module")
def entra(pki, client_certificate):
    receiver = EntraReceiver(pki)
    receiver.register_secret(CLIENT, SECRET)
    receiver.register_certificate(CLIENT, client_certificate[1])
    with receiver:
        yield receiver


@pytest.fixture(scope="module")
def served(pki, entra):
    with LogsIngestionReceiver(pki, entra, RULE, STREAM) as receiver:
        yield receiver


@pytest.fixture
def receiver(served):
    served.clear()
    return served


def settings(receiver, entra, pki, **changes) -> LogsIngestionSettings:
    values = dict(
        endpoint=receiver.url, rule_id=RULE, tenant_id=entra.tenant, client_id=CLIENT,
        client_secret=SECRET, authority=entra.url, ca_file=pki.ca, timeout=5.0,
    )  # fmt: skip
    values.update(changes)
    return LogsIngestionSettings(**values)


def stamped(r: dict) -> dict:
    return {"TimeGenerated": r["Timestamp"], **r}


def test_awkward_rows_arrive_intact_with_time_generated(receiver, entra, pki):
    rows = [row(i, name) for i, name in enumerate(AWKWARD)]
    transport = LogsIngestionTransport(settings(receiver, entra, pki))
    try:
        assert transport.send([entry_of(r) for r in rows]) == Accepted()
    finally:
        transport.close()
    assert receiver.rows == [stamped(r) for r in rows]
    assert "\udcff" in receiver.rows[6]["FileName"]
    assert next(iter(receiver.rows[0])) == "TimeGenerated"
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("kind", ["secret", "certificate", "managed identity"])
def test_each_credential_gets_a_token_from_the_token_endpoint(
    kind, receiver, entra, pki, client_certificate, monkeypatch
):
    before = len(entra.issued)
    if kind == "secret":
        chosen = settings(receiver, entra, pki)
    elif kind == "certificate":
        chosen = settings(receiver, entra, pki, client_secret=None,
                          certificate_file=client_certificate[0])  # fmt: skip
    else:
        # App Service's managed identity protocol, located by its documented variables.
        for name, value in entra.msi_environment().items():
            monkeypatch.setenv(name, value)
        chosen = settings(receiver, entra, pki, client_secret=None, tenant_id=None,
                          client_id=None, authority=None, managed_identity=True)  # fmt: skip
    transport = LogsIngestionTransport(chosen)
    try:
        assert transport.send([entry_of(row(1))]) == Accepted()
        assert transport.send([entry_of(row(2))]) == Accepted()  # the token is kept
    finally:
        transport.close()
    issued = entra.issued[before:]
    assert [i.how for i in issued] == [kind]
    assert issued[0].scope.startswith("https://monitor.azure.com")
    assert [r["ReportId"] for r in receiver.rows] == [1, 2]


def test_batches_fit_the_request_limit_and_keep_order(receiver, entra, pki):
    rows = [row(i, f"big{i}.exe", pad=20_000) for i in range(150)]  # about 3 MB
    transport = LogsIngestionTransport(settings(receiver, entra, pki))
    entries = [entry_of(r) for r in rows]
    cut, current, size = [], [], 0
    for e in entries:
        if current and (size + len(e.row) > transport.max_batch_bytes
                        or len(current) == transport.max_batch_rows):
            cut.append(current)
            current, size = [], 0
        current.append(e)
        size += len(e.row)
    cut.append(current)
    try:
        assert len(cut) >= 3
        for batch in cut:
            assert transport.send(batch) == Accepted()
        too_many = entries[:60]  # 1.2 MB: refused unsent, for the sink to split
        answer = transport.send(too_many)
        assert isinstance(answer, Refused) and "limit" in answer.reason
        assert "limit" in transport.unsendable(entry_of(row(1, pad=REQUEST_LIMIT)))
        assert transport.unsendable(entries[0]) is None
    finally:
        transport.close()
    assert receiver.rows == [stamped(r) for r in rows]
    assert len(receiver.requests) == len(cut)


@pytest.mark.parametrize("status", [429, 503])
def test_busy_is_retry_after_what_the_receiver_asks(receiver, entra, pki, status):
    transport = LogsIngestionTransport(settings(receiver, entra, pki))
    try:
        receiver.fail_next(1, status, retry_after="11")
        answer = transport.send([entry_of(row(1))])
        assert answer == Retry(answer.reason, 11.0) and f"HTTP {status}" in answer.reason
        when = email.utils.formatdate(time.time() + 120, usegmt=True)
        receiver.fail_next(1, status, retry_after=when)
        answer = transport.send([entry_of(row(2))])
        assert isinstance(answer, Retry) and 110 < answer.after <= 121
        assert len(receiver.requests) == 2  # the client retried nothing itself
        receiver.fail_next(1, 500)
        answer = transport.send([entry_of(row(3))])
        assert isinstance(answer, Retry) and answer.after is None and "500" in answer.reason
        assert transport.send([entry_of(row(4))]) == Accepted()
    finally:
        transport.close()
    assert [r["ReportId"] for r in receiver.rows] == [4]


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_refusals_name_the_status_and_never_the_secret(receiver, entra, pki, status):
    transport = LogsIngestionTransport(settings(receiver, entra, pki))
    try:
        receiver.fail_next(1, status, body=f'{{"error":"echo {SECRET}"}}'.encode())
        answer = transport.send([entry_of(row(1))])
        assert isinstance(answer, Refused) and f"HTTP {status}" in answer.reason
        assert SECRET not in answer.reason and "***" in answer.reason
        for text in (repr(transport.settings), transport.name):
            assert SECRET not in text
    finally:
        transport.close()
    assert receiver.rows == []


def test_the_receiver_refuses_a_marked_row_and_an_inflated_body_over_its_limit(
    pki, entra, receiver
):
    transport = LogsIngestionTransport(settings(receiver, entra, pki))
    try:
        receiver.refuse_marker("poison")
        answer = transport.send([entry_of(row(1)), entry_of(row(2, "poison.exe"))])
        assert isinstance(answer, Refused) and "HTTP 400" in answer.reason
    finally:
        transport.close()
    with LogsIngestionReceiver(pki, entra, RULE, STREAM, limit=10_000) as small:
        transport = LogsIngestionTransport(settings(small, entra, pki))
        try:
            # 20 KB of one letter gzips to far under the limit: the inflated size is refused.
            answer = transport.send([entry_of(row(1, pad=20_000))])
            assert isinstance(answer, Refused) and "HTTP 413" in answer.reason
            assert small.requests[0].length < 10_000
        finally:
            transport.close()
        assert small.rows == []


def test_a_wrong_secret_is_retry_naming_entras_error(receiver, entra, pki):
    transport = LogsIngestionTransport(settings(receiver, entra, pki, client_secret="wrong-"
                                                + SECRET))  # fmt: skip
    try:
        answer = transport.send([entry_of(row(1))])
        assert isinstance(answer, Retry) and "AADSTS7000215" in answer.reason
        assert SECRET not in answer.reason and "check tenant_id" in answer.reason
    finally:
        transport.close()
    assert receiver.requests == []


def test_untrusted_certificates_are_retry_naming_verification(receiver, entra, pki, tmp_path):
    transport = LogsIngestionTransport(settings(receiver, entra, pki, ca_file=pki.other_ca))
    try:  # the token endpoint's certificate
        answer = transport.send([entry_of(row(1))])
        assert isinstance(answer, Retry) and "certificate verification" in answer.reason
    finally:
        transport.close()
    stranger = make_pki(tmp_path / "stranger")
    with LogsIngestionReceiver(stranger, entra, RULE, STREAM) as elsewhere:
        transport = LogsIngestionTransport(settings(elsewhere, entra, pki))
        try:  # the ingestion endpoint's certificate, the token being had
            answer = transport.send([entry_of(row(1))])
            assert isinstance(answer, Retry) and "certificate verification" in answer.reason
        finally:
            transport.close()
        assert elsewhere.requests == []


def test_a_receiver_that_goes_down_costs_a_retry_and_no_row(pki, entra):
    receiver = LogsIngestionReceiver(pki, entra, RULE, STREAM).start()
    transport = LogsIngestionTransport(settings(receiver, entra, pki))
    try:
        assert transport.send([entry_of(row(1))]) == Accepted()
        receiver.stop()
        answer = transport.send([entry_of(row(2))])
        assert isinstance(answer, Retry) and "cannot reach" in answer.reason
        receiver.start()
        assert transport.send([entry_of(row(2))]) == Accepted()
    finally:
        transport.close()
        receiver.stop()
    assert [r["ReportId"] for r in receiver.rows] == [1, 2]


def test_configuration_mistakes_raise(pki, tmp_path):
    base = dict(endpoint="https://dce.example", rule_id=RULE, tenant_id="t", client_id="c")
    with pytest.raises(TransportError, match=r"exactly one credential.*none"):
        LogsIngestionTransport(LogsIngestionSettings(**base))
    with pytest.raises(TransportError, match="client_secret and managed_identity"):
        LogsIngestionTransport(LogsIngestionSettings(**base, client_secret=SECRET,
                                                     managed_identity=True))  # fmt: skip
    with pytest.raises(TransportError, match="needs tenant_id"):
        LogsIngestionTransport(LogsIngestionSettings(**{**base, "tenant_id": None},
                                                     client_secret=SECRET))  # fmt: skip
    with pytest.raises(TransportError, match="certificate_file") as raised:
        LogsIngestionTransport(LogsIngestionSettings(**base,
                                                     certificate_file=tmp_path / "no.pem"))
    with pytest.raises(TransportError, match="ca_file"):
        LogsIngestionTransport(LogsIngestionSettings(**base, client_secret=SECRET,
                                                     ca_file=tmp_path / "no.pem"))  # fmt: skip
    with pytest.raises(TransportError, match="https"):
        LogsIngestionTransport(LogsIngestionSettings(**{**base, "endpoint": "http://dce"},
                                                     client_secret=SECRET))  # fmt: skip
    assert SECRET not in str(raised.value)
