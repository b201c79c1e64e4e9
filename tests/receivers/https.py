"""Local HTTPS receivers that keep the documented contracts of Splunk's HTTP Event Collector,
Azure Monitor's Logs Ingestion API and the Entra ID token endpoint in front of it.

Each runs ``http.server`` over TLS in a thread on 127.0.0.1 (a free port, kept across
``stop()`` and ``start()`` so that a sink sees the same receiver come back), presents the test
CA's server certificate (pki.py), refuses what the real service refuses, and records every row
it accepted, in order. They read every body within a limit: a request declaring more than the
limit is answered 413 without being read, a gzip body stops inflating at the limit.

Tests, crash tests and benchmarks steer them: ``fail_next(n, status, retry_after=...)`` answers
the next n requests with that status, ``refuse_marker(text)`` answers 400 to every request
carrying a row that contains ``text``.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import re
import secrets
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from tests.receivers.pki import Pki

# Both services cap one request at 1 MB (Splunk's max_content_length can be raised; the Logs
# Ingestion API's cannot, compressed or not); the Azure SDK splits its chunks at 1 MiB.
LIMIT = 1024 * 1024
DRAIN = 64 * LIMIT  # the most of a refused body a receiver reads and discards


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What a receiver saw of one request: for the tests' assertions on batching."""

    method: str
    path: str
    status: int
    length: int  # the body's length on the wire (Content-Length)
    rows: int  # rows accepted from it


@dataclass
class _Failure:
    left: int
    status: int
    retry_after: str | None
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a client's kept-alive connection must not hold stop()
    allow_reuse_address = True

    def __init__(self, address, handler, context: ssl.SSLContext, owner: HttpsReceiver):
        self.context = context
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def get_request(self):
        # The handshake happens in the connection's own thread (setup), so that a client that
        # never completes it holds only that thread.
        sock, address = self.socket.accept()
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(tls)
            self.owner.connections += 1
        return tls, address

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        pass  # a client that refuses the certificate or hangs up is not the receiver's error


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as both services allow
    # An answer goes out at once, as a real service's does: with Nagle's algorithm on, its body
    # waits for the client's delayed acknowledgement of its headers (about 40 ms a request).
    disable_nagle_algorithm = True
    server: _Server

    def setup(self):
        self.request.settimeout(30)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def _serve(self, method: str) -> None:
        owner = self.server.owner
        declared = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            self._reply(Reply(411, b'{"error":"a Content-Length is required"}'), close=True)
            return
        try:
            length = int(declared) if declared is not None else 0
        except ValueError:
            self._reply(Reply(400, b'{"error":"bad Content-Length"}'), close=True)
            return
        if length > owner.limit:
            # Refused unkept: the body is discarded as it comes (up to DRAIN bytes), so that a
            # client still sending reads the 413 rather than a reset, as web servers' lingering
            # close gives it.
            reply = owner.too_large(length)
            owner.note(Request(method, self.path, reply.status, length, 0))
            left = length if length <= DRAIN else 0
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            self._reply(reply, close=length > DRAIN)
            return
        body = self.rfile.read(length) if length else b""
        reply, rows = owner.answer(method, self.path, self.headers, body)
        owner.note(Request(method, self.path, reply.status, length, len(rows)), rows)
        self._reply(reply)

    def _reply(self, reply: Reply, close: bool = False) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.body and "Content-Type" not in reply.headers:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(reply.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)


class HttpsReceiver:
    """The server, its failures to inject and its record; a subclass answers the requests."""

    def __init__(self, pki: Pki, limit: int = LIMIT):
        self.pki = pki
        self.limit = limit
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._failures: list[_Failure] = []
        self._markers: dict[str, int] = {}
        self._rows: list[Any] = []
        self._requests: list[Request] = []
        self.connections = 0  # connections accepted: keep-alive shows as fewer than requests

    # -- running --

    def start(self) -> HttpsReceiver:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        self._server = _Server(("127.0.0.1", self.port), _Handler, context, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops listening and cuts every open connection, as a receiver that goes down."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        with server.connections_lock:
            for connection in list(server.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self):
        return self.start() if self._server is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- steering --

    def fail_next(
        self, n: int, status: int, retry_after: str | None = None, body: bytes | None = None
    ) -> None:
        """Answers the next n requests on the contract's path with ``status`` (accepting
        nothing), after failures already queued."""
        text = body if body is not None else json.dumps({"error": f"injected {status}"}).encode()
        with self._lock:
            self._failures.append(_Failure(n, status, retry_after, text))

    def refuse_marker(self, marker: str, status: int = 400) -> None:
        """Answers ``status`` to every request that carries a row containing ``marker``."""
        with self._lock:
            self._markers[marker] = status

    def _injected(self) -> _Failure | None:
        with self._lock:
            while self._failures and self._failures[0].left <= 0:
                self._failures.pop(0)
            if not self._failures:
                return None
            self._failures[0].left -= 1
            return self._failures[0]

    def _marked(self, rows: list[Any]) -> int | None:
        with self._lock:
            markers = dict(self._markers)
        for marker, status in markers.items():
            for row in rows:
                if marker in json.dumps(row, ensure_ascii=False):
                    return status
        return None

    # -- the record --

    def note(self, request: Request, rows: list[Any] = ()) -> None:
        with self._changed:
            self._requests.append(request)
            self._rows.extend(rows)
            self._changed.notify_all()

    @property
    def rows(self) -> list[Any]:
        with self._lock:
            return list(self._rows)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def wait_rows(self, n: int, timeout: float = 30.0) -> list[Any]:
        """The accepted rows once there are at least n (or when the timeout passes)."""
        end = time.monotonic() + timeout
        with self._changed:
            while len(self._rows) < n and time.monotonic() < end:
                self._changed.wait(max(0.0, end - time.monotonic()))
            return list(self._rows)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._requests.clear()
            self._failures.clear()
            self._markers.clear()
            self.connections = 0

    # -- answering (subclasses) --

    def too_large(self, length: int) -> Reply:
        return Reply(413, json.dumps({"error": f"{length} bytes is over {self.limit}"}).encode())

    def answer(self, method: str, path: str, headers, body: bytes) -> tuple[Reply, list[Any]]:
        raise NotImplementedError


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


# ---------------------------------------------------------------------------------------------
# Splunk HTTP Event Collector


class HecReceiver(HttpsReceiver):
    """``POST /services/collector/event`` with ``Authorization: Splunk <token>``; the body is
    JSON event objects one after another, each with ``event``, ``time`` and ``sourcetype``
    (and ``index``, when the receiver names the allowed ones). Answers as Splunk does:
    200 ``{"text":"Success","code":0}``; 401 without a token, 403 for a wrong one, 400 with
    Splunk's code for a bad event, 413 over the limit. ``rows`` are the accepted events'
    ``event`` objects; ``events`` the whole envelopes."""

    def __init__(self, pki: Pki, token: str, indexes: tuple[str, ...] = (), limit: int = LIMIT):
        super().__init__(pki, limit)
        self.token = token
        self.indexes = indexes
        self.events: list[dict] = []

    def too_large(self, length: int) -> Reply:
        return Reply(413, b'{"text":"Content too large","code":27}')

    def answer(self, method, path, headers, body):
        if method != "POST" or urlsplit(path).path != "/services/collector/event":
            return Reply(404, b'{"text":"The requested URL was not found on this server.",'
                              b'"code":404}'), []  # fmt: skip
        authorization = headers.get("Authorization", "")
        if not authorization:
            return Reply(401, b'{"text":"Token is required","code":2}'), []
        scheme, _, token = authorization.partition(" ")
        if scheme != "Splunk" or not token:
            return Reply(401, b'{"text":"Invalid authorization","code":3}'), []
        if not secrets.compare_digest(token.encode(), self.token.encode()):
            return Reply(403, b'{"text":"Invalid token","code":4}'), []
        events, error = self._events(body)
        if error is not None:
            return error, []
        failure = self._injected()
        if failure is not None:
            return _failure_reply(failure), []
        rows = [event["event"] for event in events]
        status = self._marked(rows)
        if status is not None:
            return Reply(status, b'{"text":"Invalid data format","code":6,"invalid-event-number'
                                 b'":0}'), []  # fmt: skip
        with self._lock:
            self.events.extend(events)
        return Reply(200, b'{"text":"Success","code":0}'), rows

    def _events(self, body: bytes) -> tuple[list[dict], Reply | None]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return [], Reply(400, b'{"text":"Invalid data format","code":6}')
        decoder = json.JSONDecoder()
        events: list[dict] = []
        at = 0
        while True:
            while at < len(text) and text[at] in " \t\r\n":
                at += 1
            if at == len(text):
                break
            number = len(events)
            try:
                event, at = decoder.raw_decode(text, at)
            except json.JSONDecodeError:
                return [], _hec_bad(6, "Invalid data format", number)
            if not isinstance(event, dict):
                return [], _hec_bad(6, "Invalid data format", number)
            if "event" not in event:
                return [], _hec_bad(12, "Event field is required", number)
            if event["event"] in ("", None, {}):
                return [], _hec_bad(13, "Event field cannot be blank", number)
            stamp = event.get("time")
            if not isinstance(stamp, int | float) or isinstance(stamp, bool):
                return [], _hec_bad(6, "Invalid data format", number)
            if not isinstance(event.get("sourcetype"), str):
                return [], _hec_bad(6, "Invalid data format", number)
            if self.indexes and event.get("index") not in self.indexes:
                return [], _hec_bad(7, "Incorrect index", number)
            events.append(event)
        if not events:
            return [], Reply(400, b'{"text":"No data","code":5}')
        return events, None


def _hec_bad(code: int, text: str, number: int) -> Reply:
    return Reply(400, _json({"text": text, "code": code, "invalid-event-number": number}))


def _failure_reply(failure: _Failure) -> Reply:
    headers = {} if failure.retry_after is None else {"Retry-After": failure.retry_after}
    return Reply(failure.status, failure.body, headers)


# ---------------------------------------------------------------------------------------------
# Entra ID: the token endpoint (client secret, client assertion) and App Service's managed
# identity endpoint


@dataclass(frozen=True)
class Issued:
    token: str
    client_id: str
    scope: str
    how: str  # "secret", "certificate" or "managed identity"
    expires: float


class EntraReceiver(HttpsReceiver):
    """The OpenID configuration and the v2.0 token endpoint of one tenant, as MSAL uses them:
    ``GET /{tenant}/v2.0/.well-known/openid-configuration``, then ``POST
    /{tenant}/oauth2/v2.0/token`` with the client-credentials grant, proven by ``client_secret``
    or by a ``client_assertion`` JWT signed with the registered certificate's key (its x5t or
    x5t#S256 header naming the certificate). Wrong proof answers 401 ``invalid_client`` as
    Entra ID does. ``GET /msi/token`` answers App Service's managed identity protocol
    (``X-IDENTITY-HEADER``, api-version 2019-08-01); point azure-identity at it with the
    IDENTITY_ENDPOINT and IDENTITY_HEADER variables (``msi_environment()``)."""

    def __init__(self, pki: Pki, tenant: str = "00000000-0000-4000-8000-00000000beef"):
        super().__init__(pki, limit=64 * 1024)
        self.tenant = tenant
        self.secrets: dict[str, str] = {}  # client id -> secret
        self.certificates: dict[str, x509.Certificate] = {}  # client id -> certificate
        self.identity_header = secrets.token_hex(16)
        self.issued: list[Issued] = []

    def register_secret(self, client_id: str, secret: str) -> None:
        self.secrets[client_id] = secret

    def register_certificate(self, client_id: str, certificate_pem: bytes) -> None:
        self.certificates[client_id] = x509.load_pem_x509_certificate(certificate_pem)

    def msi_environment(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": f"{self.url}/msi/token",
                "IDENTITY_HEADER": self.identity_header}  # fmt: skip

    def valid(self, token: str, audience: str) -> bool:
        now = time.time()
        with self._lock:
            return any(
                secrets.compare_digest(i.token, token) and i.expires > now
                and i.scope.startswith(audience)
                for i in self.issued
            )  # fmt: skip

    def answer(self, method, path, headers, body):
        parts = urlsplit(path)
        base = f"/{self.tenant}"
        if method == "GET" and parts.path == f"{base}/v2.0/.well-known/openid-configuration":
            return Reply(200, _json(self._openid())), []
        if method == "POST" and parts.path == f"{base}/oauth2/v2.0/token":
            failure = self._injected()
            if failure is not None:
                return _failure_reply(failure), []
            return self._token(body), []
        if method == "GET" and parts.path == "/msi/token":
            return self._msi(parse_qs(parts.query), headers), []
        return Reply(404, _json({"error": "not_found"})), []

    def _openid(self) -> dict:
        tenant = f"{self.url}/{self.tenant}"
        return {
            "token_endpoint": f"{tenant}/oauth2/v2.0/token",
            "authorization_endpoint": f"{tenant}/oauth2/v2.0/authorize",
            "issuer": f"{tenant}/v2.0",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
            "response_types_supported": ["code", "id_token", "token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _token(self, body: bytes) -> Reply:
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "AADSTS70003")
        client_id = form.get("client_id", "")
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return _oauth_error(400, "invalid_scope", "AADSTS70011")
        if "client_secret" in form:
            expected = self.secrets.get(client_id)
            if expected is None or not secrets.compare_digest(
                expected.encode(), form["client_secret"].encode()
            ):
                return _oauth_error(401, "invalid_client", "AADSTS7000215: Invalid client "
                                    "secret provided.")  # fmt: skip
            how = "secret"
        elif form.get("client_assertion_type") == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            problem = self._assertion(client_id, form.get("client_assertion", ""))
            if problem is not None:
                return _oauth_error(401, "invalid_client", f"AADSTS700027: {problem}")
            how = "certificate"
        else:
            return _oauth_error(401, "invalid_client", "AADSTS7000216: client_assertion or "
                                "client_secret is required")  # fmt: skip
        return Reply(200, _json(self._issue(client_id, scope.split()[0], how, oauth=True)))

    def _assertion(self, client_id: str, assertion: str) -> str | None:
        """Why the client assertion does not prove ``client_id``, else None (RFC 7523)."""
        certificate = self.certificates.get(client_id)
        if certificate is None:
            return "no certificate registered for the client"
        try:
            head, claims, signature = (_b64(p) for p in assertion.split("."))
            header, payload = json.loads(head), json.loads(claims)
        except (ValueError, TypeError):
            return "malformed client assertion"
        der = certificate.public_bytes(Encoding.DER)
        thumbprints = {
            "x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode(),
            "x5t#S256": base64.urlsafe_b64encode(hashlib.sha256(der).digest())
            .rstrip(b"=").decode(),
        }
        # base64url, padded (as MSAL writes it) or not (as RFC 7515 does)
        if not any(str(header.get(k, "")).rstrip("=") == v for k, v in thumbprints.items()):
            return "the assertion names another certificate"
        audience = f"{self.url}/{self.tenant}/oauth2/v2.0/token"
        if payload.get("iss") != client_id or payload.get("sub") != client_id:
            return "iss and sub must be the client id"
        if payload.get("aud") != audience:
            return f"aud must be {audience}"
        if not isinstance(payload.get("exp"), int | float) or payload["exp"] < time.time():
            return "the assertion has expired"
        signed = assertion.rsplit(".", 1)[0].encode()
        key = certificate.public_key()
        try:
            algorithm = header.get("alg")
            if algorithm == "RS256" and isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            elif algorithm == "PS256" and isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, signed, padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                           hashes.SHA256())  # fmt: skip
            elif algorithm == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
                r = int.from_bytes(signature[:32], "big")
                s = int.from_bytes(signature[32:], "big")
                key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hashes.SHA256()))
            else:
                return f"unsupported algorithm {algorithm!r}"
        except InvalidSignature:
            return "the assertion's signature does not verify"
        return None

    def _msi(self, query: dict[str, list[str]], headers) -> Reply:
        given = headers.get("X-IDENTITY-HEADER", "")
        if not secrets.compare_digest(given.encode(), self.identity_header.encode()):
            return Reply(401, _json({"statusCode": 401, "message": "bad X-IDENTITY-HEADER"}))
        if query.get("api-version") != ["2019-08-01"] or not query.get("resource"):
            return Reply(400, _json({"statusCode": 400, "message": "api-version 2019-08-01 "
                                     "and resource are required"}))  # fmt: skip
        resource = query["resource"][0]
        client_id = query.get("client_id", ["system-assigned"])[0]
        return Reply(200, _json(self._issue(client_id, resource, "managed identity", False)))

    def _issue(self, client_id: str, scope: str, how: str, oauth: bool) -> dict:
        token = secrets.token_urlsafe(32)
        expires = time.time() + 3600
        with self._lock:
            self.issued.append(Issued(token, client_id, scope, how, expires))
        if oauth:
            return {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
                    "access_token": token}  # fmt: skip
        return {"access_token": token, "expires_on": str(int(expires)), "resource": scope,
                "token_type": "Bearer", "client_id": client_id}  # fmt: skip


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _oauth_error(status: int, error: str, description: str) -> Reply:
    return Reply(status, _json({"error": error, "error_description": description,
                                "error_codes": [], "timestamp": time.strftime(
                                    "%Y-%m-%d %H:%M:%SZ", time.gmtime())}))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Azure Monitor Logs Ingestion API


_RESERVED = frozenset({"TenantId", "Type"})
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?(Z|[+-]\d\d:\d\d)\Z")


class LogsIngestionReceiver(HttpsReceiver):
    """``POST /dataCollectionRules/{rule}/streams/{stream}?api-version=2023-01-01`` with
    ``Authorization: Bearer`` and a token the Entra receiver issued for Azure Monitor's
    audience, ``Content-Encoding: gzip``, a JSON array of objects, each with a ``TimeGenerated``
    date and time and no reserved column (TenantId, Type). Answers 204 as the service does;
    401 for a missing or unknown token, 404 for another rule or stream, 400 for a bad body,
    413 over the limit, compressed or inflated."""

    API_VERSION = "2023-01-01"
    AUDIENCE = "https://monitor.azure.com"

    def __init__(self, pki: Pki, entra: EntraReceiver, rule_id: str, stream: str,
                 limit: int = LIMIT):  # fmt: skip
        super().__init__(pki, limit)
        self.entra = entra
        self.rule_id = rule_id
        self.stream = stream

    def answer(self, method, path, headers, body):
        parts = urlsplit(path)
        found = re.fullmatch(r"/dataCollectionRules/([^/]+)/streams/([^/]+)", parts.path)
        if method != "POST" or found is None:
            return _azure_error(404, "NotFound", "no such resource"), []
        if parse_qs(parts.query).get("api-version") != [self.API_VERSION]:
            return _azure_error(400, "InvalidApiVersion", "api-version 2023-01-01"), []
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not self.entra.valid(token, self.AUDIENCE):
            return _azure_error(401, "InvalidToken", "a valid bearer token is required"), []
        if found.group(1) != self.rule_id:
            return _azure_error(404, "InvalidDataCollectionRule", "no such rule"), []
        if found.group(2) != self.stream:
            return _azure_error(404, "InvalidStream", "the rule has no such stream"), []
        if headers.get("Content-Encoding") != "gzip":
            return _azure_error(400, "InvalidContentEncoding", "gzip is expected"), []
        if not headers.get("Content-Type", "").startswith("application/json"):
            return _azure_error(415, "InvalidContentType", "application/json"), []
        inflated = _gunzip(body, self.limit)
        if inflated is None:
            return _azure_error(400, "InvalidContent", "not gzip"), []
        if len(inflated) > self.limit:
            return _azure_error(413, "ContentLengthLimitExceeded",
                                f"over {self.limit} bytes inflated"), []  # fmt: skip
        try:
            rows = json.loads(inflated)
        except (ValueError, UnicodeDecodeError):
            return _azure_error(400, "InvalidJson", "the body is not JSON"), []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return _azure_error(400, "InvalidJson", "a JSON array of objects is expected"), []
        for number, row in enumerate(rows):
            stamp = row.get("TimeGenerated")
            if not isinstance(stamp, str) or not _ISO.match(stamp):
                return _azure_error(400, "InvalidTimeGenerated", f"row {number}"), []
            if _RESERVED & row.keys():
                return _azure_error(400, "ReservedColumn", f"row {number}"), []
        failure = self._injected()
        if failure is not None:
            return _failure_reply(failure), []
        status = self._marked(rows)
        if status is not None:
            return _azure_error(status, "InvalidContent", "a row was refused"), []
        return Reply(204), rows


def _gunzip(body: bytes, limit: int) -> bytes | None:
    """The inflated body, at most limit + 1 bytes of it; None when it is not gzip."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        return None
    if len(out) <= limit and not inflater.eof:
        return None  # cut short
    return out


def _azure_error(status: int, code: str, message: str) -> Reply:
    return Reply(status, _json({"error": {"code": code, "message": message}}))


def gzip_rows(rows: list[Any]) -> bytes:
    """A body as the Azure SDK makes one, for tests that post by hand."""
    return gzip.compress(json.dumps(rows).encode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


__all__ = [
    "LIMIT", "EntraReceiver", "HecReceiver", "HttpsReceiver", "Issued", "LogsIngestionReceiver",
    "Reply", "Request", "free_port", "gzip_rows",
]  # fmt: skip
