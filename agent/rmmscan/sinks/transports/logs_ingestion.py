"""Azure Monitor's Logs Ingestion API, the way into Microsoft Sentinel: one upload per batch
to a data collection rule's stream, with azure-identity's credentials and the supported client
(azure-monitor-ingestion), both imported only when such a sink is built.

The body is made by joining bytes: each row is the outbox's JSON as it is (transport.py), with
``TimeGenerated`` (the column every Log Analytics table must have) put in front, copied from
the row's own Timestamp, so that the table files the row under the time it describes. The
array is gzipped here and handed to the client as a stream, which it uploads as it is: the
client neither parses nor re-encodes a row, and one send is exactly one request. The batch
limits keep that request within the API's 1 MB (compressed or not); a batch that still does not
fit is refused unsent, for the forwarding sink to split.

Retrying is the forwarding sink's (transport.py), not the client's: its retry policy is off
(``retry_total=0``) for the token requests and the uploads, so that a send answers at once.
HTTP answers map as HEC's do (hec.py ``answer_for``). A token that cannot be had is a Retry,
whatever the cause: an unreachable or busy token endpoint mends itself, and a wrong secret,
certificate or identity is no fault of the batch: Refused would set every row aside one by one,
while Retry keeps them until the credential is mended; the reason names the token endpoint's
error code and what to check, never the secret.
"""

from __future__ import annotations

import gzip
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..transport import Accepted, Answer, Entry, Refused, Retry, TransportError
from .http import (
    MAX_ROWS,
    REQUEST_LIMIT,
    answer_for,
    retry_after_seconds,
    shorten,
    tls_reason,
    verify_option,
)

# Columns a Log Analytics table reserves (the API refuses rows carrying them); rows.columns
# declares none of them, and packaging/sentinel/generate.py checks that it never does.
RESERVED = frozenset({"TenantId", "Type", "_ResourceId", "_SubscriptionId", "_ItemId"})
_TIMESTAMP = re.compile(rb'"Timestamp":"([0-9T:.+Z-]{1,40})"')
_STAMP_ROOM = len(b'{"TimeGenerated":"2026-12-02T10:00:00.000000Z",') + 1  # and a comma


@dataclass(frozen=True, slots=True)
class LogsIngestionSettings:
    endpoint: str  # the data collection endpoint's (or rule's) logs ingestion URL
    rule_id: str  # the data collection rule's immutable id: dcr-...
    stream: str = "Custom-RmmScanFileCertificateInfo_CL"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    certificate_file: Path | None = None  # PEM: the private key and the certificate
    managed_identity: bool = False
    authority: str | None = None  # Entra ID's host; None = the public cloud's
    ca_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    timeout: float = 30.0


class LogsIngestionTransport:
    """Uploads batches to one data collection rule's stream."""

    max_batch_rows = MAX_ROWS
    max_batch_bytes = REQUEST_LIMIT - 2 - MAX_ROWS * _STAMP_ROOM

    def __init__(self, settings: LogsIngestionSettings):
        self.settings = settings
        endpoint = settings.endpoint.rstrip("/")
        parts = urlsplit(endpoint)
        self.name = f"logs-ingestion {parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )
        self.name += f" {settings.stream}"
        if parts.scheme != "https" or not parts.hostname:
            raise TransportError(f"{self.name}: endpoint must be an https:// URL")
        if not settings.rule_id:
            raise TransportError(f"{self.name}: rule_id (the rule's immutable id) is missing")
        if not settings.stream.startswith("Custom-"):
            raise TransportError(f"{self.name}: stream must be the rule's Custom-... stream")
        verify = verify_option(self.name, settings.ca_file, settings.insecure_skip_tls_verify)
        # azure-core's documented transport options, taken by the credential and the client
        # alike: the trust store, the timeouts, and no retries of their own.
        self._options = {
            "connection_verify": verify,
            "connection_timeout": settings.timeout,
            "read_timeout": settings.timeout,
            "retry_total": 0,
        }
        self._secrets = tuple(s for s in (settings.client_secret,) if s)
        self._credential = self._build_credential()
        from azure.monitor.ingestion import LogsIngestionClient

        self._client = LogsIngestionClient(
            endpoint=endpoint, credential=self._credential, **self._options
        )

    def _build_credential(self):
        s = self.settings
        given = [
            name for name, value in (
                ("client_secret", s.client_secret), ("certificate_file", s.certificate_file),
                ("managed_identity", s.managed_identity),
            ) if value
        ]  # fmt: skip
        if len(given) != 1:
            have = " and ".join(given) if given else "none"
            raise TransportError(
                f"{self.name}: give exactly one credential: client_secret, certificate_file "
                f"or managed_identity (given: {have})"
            )
        import azure.identity as identity

        options = dict(self._options)
        if s.authority is not None:
            # A private authority (a sovereign cloud's, or a local one) has no instance
            # discovery metadata; validating it against the public cloud's fails.
            options.update(authority=s.authority, disable_instance_discovery=True)
        if s.managed_identity:
            if s.client_id:
                options["client_id"] = s.client_id  # a user-assigned identity
            return identity.ManagedIdentityCredential(**options)
        missing = [n for n, v in (("tenant_id", s.tenant_id), ("client_id", s.client_id)) if not v]
        if missing:
            raise TransportError(f"{self.name}: {given[0]} needs {' and '.join(missing)}")
        try:
            if s.client_secret:
                return identity.ClientSecretCredential(
                    s.tenant_id, s.client_id, s.client_secret, **options
                )
            return identity.CertificateCredential(
                s.tenant_id, s.client_id, str(s.certificate_file), **options
            )
        except (OSError, ValueError, TypeError) as error:
            said = shorten(str(error), self._secrets)
            raise TransportError(f"{self.name}: cannot use {given[0]}: {said}") from None

    def _record(self, entry: Entry) -> bytes:
        found = _TIMESTAMP.search(entry.row)
        stamp = found.group(1) if found else _iso(entry.time)
        rest = entry.row[1:]
        return b'{"TimeGenerated":"' + stamp + (b'",' if rest != b"}" else b'"') + rest

    def unsendable(self, entry: Entry) -> str | None:
        size = len(self._record(entry)) + 2
        if size > REQUEST_LIMIT:
            return f"it is {size} bytes, over the Logs Ingestion API's {REQUEST_LIMIT}-byte limit"
        return None

    def send(self, entries: Sequence[Entry]) -> Answer:
        body = b"[" + b",".join(self._record(e) for e in entries) + b"]"
        if len(body) > REQUEST_LIMIT:
            return Refused(
                f"{len(entries)} rows make {len(body)} bytes, over the Logs Ingestion API's "
                f"{REQUEST_LIMIT}-byte limit: not sent"
            )
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        stream = io.BytesIO(gzip.compress(body, compresslevel=6, mtime=0))
        try:
            self._client.upload(rule_id=self.settings.rule_id, stream_name=self.settings.stream,
                                logs=stream)  # fmt: skip
        except ClientAuthenticationError as error:
            if self._from_upload(error):
                return self._http(error)
            return Retry(self._token_reason(error))
        except HttpResponseError as error:
            return self._http(error)
        except (ServiceRequestError, ServiceResponseError) as error:
            if "CERTIFICATE_VERIFY_FAILED" in str(error):
                return Retry(tls_reason(error))
            return Retry(f"cannot reach the endpoint: {self._short(error)}")
        except AzureError as error:
            return Retry(f"{type(error).__name__}: {self._short(error)}")
        return Accepted()

    def _from_upload(self, error) -> bool:
        """Whether the ingestion endpoint itself answered (a 401 there maps to the same
        exception as a token refused by Entra ID)."""
        response = getattr(error, "response", None)
        request = getattr(response, "request", None)
        url = getattr(request, "url", "") or ""
        return "/dataCollectionRules/" in url

    def _http(self, error) -> Answer:
        response = error.response
        status = getattr(error, "status_code", None) or getattr(response, "status_code", 0)
        text = ""
        retry_after = None
        if response is not None:
            retry_after = response.headers.get("Retry-After")
            try:
                text = response.text()[:4096]
            except Exception:  # a body cut short still leaves the status to answer with
                text = ""
        answer = answer_for(status, text, retry_after, self._secrets)
        if isinstance(answer, Retry) and answer.after is None and retry_after:
            return Retry(answer.reason, retry_after_seconds(retry_after))
        return answer

    def _token_reason(self, error) -> str:
        text = str(error)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return "token: " + tls_reason(error)
        said = self._short(error).removeprefix("Authentication failed: ")
        if re.search(r"\b(invalid_client|unauthorized_client|invalid_request|invalid_scope|"
                     r"invalid_grant|AADSTS\d+)\b", text):  # fmt: skip
            return (f"no token from Entra ID ({said}): check tenant_id, client_id and the "
                    "secret, certificate or identity")  # fmt: skip
        return f"no token from Entra ID for now: {said}"

    def _short(self, error: BaseException) -> str:
        return shorten(str(error).split("\n")[0] or type(error).__name__, self._secrets)

    def close(self) -> None:
        self._client.close()
        close = getattr(self._credential, "close", None)
        if close is not None:
            close()


def _iso(seconds: float) -> bytes:
    import datetime as dt

    moment = dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)
    return (moment.isoformat() + "Z").encode("ascii")
