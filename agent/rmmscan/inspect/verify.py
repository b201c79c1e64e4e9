"""Trust verdicts for the signatures of one file, with signify doing the cryptography.

signify answers CERTIFICATE_ERROR for untrusted, self-signed and expired alike
(docs/architecture.md §5), so the verdict is derived here in a fixed order of precedence:
Malformed > Distrusted > InvalidDigest > BadSignature > UntrustedRoot > Expired >
InvalidChain > Ok.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from signify.exceptions import SignifyError

from ..text import plain_detail
from . import _signify as sg
from .authenticode import signed_data
from .certificates import cert_info
from .model import CertInfo, SignatureInfo, Status, Verdict
from .trust import TrustStore, hashable, name_key

_HASHES = {
    "md5": hashlib.md5,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
_PACKAGE = Path(__file__).resolve().parent.parent  # rmmscan: a bug raised here is ours
_EXPIRY_WORDS = ("expired", "not valid until", "is not valid", "validity period")


def verify_all(
    stream: BinaryIO,
    sigs: list[SignatureInfo],
    trust: TrustStore,
    now: dt.datetime | None = None,
    layout_broken: bool = False,
    errors: list[str] | None = None,
) -> list[Verdict]:
    """One verdict per signature; the file's Authenticode digests are computed once.

    Never raises for one signature: whatever goes wrong verifying it makes its verdict
    Malformed, with the step that failed in words. An exception that bad input does not
    explain (a bug here or in a library) is also listed in ``errors`` as "verification of
    signature N: Type: message", for the caller to report. A read error of the stream is the
    caller's and propagates, whatever signify wraps it in.
    """
    if not sigs:
        return []
    if layout_broken:
        detail = "the certificate table does not fit in the file; the digest is undefined"
        return [Verdict(Status.MALFORMED, False, False, detail) for _ in sigs]
    reads = _Reads(stream)
    pe = sg.SignedPEFile(reads)
    wanted = {s.digest_algorithm for s in sigs if s.digest_algorithm in _HASHES}
    try:
        digests = pe.get_fingerprints(*(_HASHES[a] for a in sorted(wanted)))
    except Exception as exc:  # signify raises struct.error, ValueError... on bad layouts
        reads.reraise()
        detail = plain_detail(f"the PE layout does not parse: {_message(exc)}")
        if errors is not None and not _is_bad_input(exc):
            errors.extend(f"verification of signature {s.index}: {_named(exc)}" for s in sigs)
        return [Verdict(Status.MALFORMED, False, False, detail) for _ in sigs]
    now = now or dt.datetime.now(dt.UTC)
    verdicts = []
    for sig in sigs:
        step = ["reading the signature"]
        try:
            verdict = _verify_one(pe, sig, digests, trust, now, step)
        except Exception as exc:
            reads.reraise()
            if not _is_bad_input(exc):
                if errors is not None:
                    errors.append(f"verification of signature {sig.index}: {_named(exc)}")
                words = f"an internal error while {step[0]} ({type(exc).__name__})"
            else:
                words = f"{step[0]} failed: {_message(exc)}"
            verdict = Verdict(Status.MALFORMED, False, False, words)
        if verdict.detail:
            verdict = replace(verdict, detail=plain_detail(verdict.detail))
        verdicts.append(verdict)
    return verdicts


class _Reads:
    """The stream as signify reads it, remembering a read that failed: that error is the
    caller's (the file could not be read), whatever signify turns it into. An OSError
    from elsewhere (oscrypto reports OpenSSL's failures as OSErrors) is about the signature."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.failed: OSError | None = None

    def _call(self, method, *args):
        try:
            return method(*args)
        except OSError as exc:
            self.failed = self.failed or exc
            raise

    def read(self, *args):
        return self._call(self._stream.read, *args)

    def seek(self, *args):
        return self._call(self._stream.seek, *args)

    def tell(self):
        return self._call(self._stream.tell)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def reraise(self) -> None:
        """Inside an ``except``: raise the read error, if a read failed."""
        if self.failed is not None:
            raise self.failed


def _is_bad_input(exc: BaseException) -> bool:
    """Errors that a malformed or hostile signature explains: signify's own, and the
    ValueErrors (UnicodeErrors among them), struct.errors and EOFErrors that asn1crypto and
    signify raise on encodings they cannot read; and any exception raised inside those
    libraries rather than in rmmscan (signify indexes fields a crafted signature leaves out:
    KeyError, IndexError, AttributeError, TypeError; oscrypto reports OpenSSL's refusal of a
    key as an OSError; tests/regressions/ holds one of each). Anything raised in rmmscan's
    own code is a bug to report."""
    if isinstance(exc, (SignifyError, ValueError, struct.error, EOFError, OverflowError)):
        return True
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return not Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)


def _named(exc: BaseException) -> str:
    """A bug, as ``errors`` lists it; whoever shows it makes it printable (text.printable)."""
    return f"{type(exc).__name__}: {exc}"


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _verify_one(
    pe,
    sig: SignatureInfo,
    digests: dict[str, bytes],
    trust: TrustStore,
    now: dt.datetime,
    step: list[str],
) -> Verdict:
    """``step[0]`` names what is being done, for the verdict of an exception that escapes."""
    if sig.rejected:
        # Windows rejects it as it stands: whatever its cryptography, the file is not signed.
        return Verdict(Status.MALFORMED, False, False, "; ".join(sig.problems))
    if sig.signer is None or (not sig.der and sig.asn1 is None):
        words = "; ".join(sig.problems) or (
            "the signer's certificate is not in the signature"
            if sig.signer is None
            else "the signature's data is missing"
        )
        return Verdict(Status.MALFORMED, False, False, words)
    step[0] = "following the certificate names to a trusted root"
    path = _candidate_chain(sig, trust)
    root_ms = bool(path) and trust.is_microsoft_root(path[-1].sha1)
    step[0] = "checking the distrust list"
    hit = trust.distrusted([sig.signer, *sig.certificates])
    if hit is not None:
        return Verdict(Status.DISTRUSTED, False, root_ms, hit.reason, tuple(path))
    step[0] = "reading the signature"
    try:
        signature = sg.AuthenticodeSignature(signed_data(sig), signed_file=pe)
        indirect = signature.indirect_data
        algorithm = indirect.digest_algorithm().name
        signed_digest = indirect.digest
    except Exception as exc:  # signify raises bare ValueError on garbage (docs/architecture.md §5)
        if not _is_bad_input(exc):
            raise
        detail = f"the signature does not parse: {_message(exc)}"
        return Verdict(Status.MALFORMED, False, root_ms, detail, tuple(path))
    expected = digests.get(algorithm)
    if expected is None:
        return Verdict(Status.MALFORMED, False, root_ms, f"digest {algorithm} unsupported")
    if expected != signed_digest:
        return Verdict(
            Status.INVALID_DIGEST,
            False,
            root_ms,
            "the file's digest differs from the signed digest",
            tuple(path),
        )
    step[0] = "verifying the signature and its chains"
    try:
        roots = trust.roots_for(_issuer_keys(signature))
        chains = signature.verify(
            expected_hash=expected,
            trusted_certificate_store=roots or sg.CertificateStore(trusted=True),
            strict_validation=False,  # Windows does not require the EKU/KU either
        )
        chain = next(iter(chains), [])
    except sg.AuthenticodeInvalidDigestError as exc:
        detail = f"the signature does not verify: {exc}"
        return Verdict(Status.BAD_SIGNATURE, False, root_ms, detail, tuple(path))
    except sg.CertificateVerificationError as exc:
        return _chain_verdict(sig, str(exc), path, root_ms, now)
    except sg.CounterSignerError as exc:
        cause = _chain_cause(exc)
        if cause is not None:
            detail = f"the timestamp's chain does not validate: {cause}"
            return Verdict(Status.UNTRUSTED_ROOT, False, root_ms, detail, tuple(path))
        detail = f"the timestamp countersignature does not verify: {exc}"
        return Verdict(Status.BAD_SIGNATURE, False, root_ms, detail, tuple(path))
    except sg.SignerInfoVerificationError as exc:
        if _is_chain_failure(exc):
            return _chain_verdict(sig, str(exc), path, root_ms, now)
        detail = f"the signer's signature does not verify: {exc}"
        return Verdict(Status.BAD_SIGNATURE, False, root_ms, detail, tuple(path))
    except sg.VerificationError as exc:
        detail = f"the signature does not verify: {exc}"
        return Verdict(Status.BAD_SIGNATURE, False, root_ms, detail, tuple(path))
    except Exception as exc:
        if not _is_bad_input(exc):
            raise
        detail = f"the signature does not parse: {_message(exc)}"
        return Verdict(Status.MALFORMED, False, root_ms, detail, tuple(path))
    step[0] = "reading the verified chain"
    infos = tuple(_chain_infos(chain)) or tuple(path)
    root_ms = bool(infos) and trust.is_microsoft_root(infos[-1].sha1)
    return Verdict(Status.OK, True, root_ms, "", infos)


def _chain_verdict(
    sig: SignatureInfo, message: str, path: list[CertInfo], root_ms: bool, now: dt.datetime
) -> Verdict:
    """The signer's chain failed: no trusted root by name, an expired certificate, or
    another chain failure."""
    if not path:
        detail = f"the signer's chain does not lead to a trusted root: {message}"
        return Verdict(Status.UNTRUSTED_ROOT, False, root_ms, detail)
    moment = sig.countersignature_time or now
    if any(_outside(c, moment) for c in path) or any(
        w in message.lower() for w in _EXPIRY_WORDS
    ):
        detail = f"the signer's chain has a certificate outside its validity: {message}"
        return Verdict(Status.EXPIRED, False, root_ms, detail, tuple(path))
    detail = f"the signer's chain does not validate: {message}"
    return Verdict(Status.INVALID_CHAIN, False, root_ms, detail, tuple(path))


def _outside(cert: CertInfo, moment: dt.datetime) -> bool:
    """Outside its validity; a date the tolerant reader could not read bounds nothing."""
    before, after = cert.not_before, cert.not_after
    return (before is not None and moment < before) or (after is not None and moment > after)


def _is_chain_failure(exc: BaseException) -> bool:
    """A chain that cannot be validated, or no issuer candidate at all (signify says the
    latter only in words, as a SignerInfoVerificationError)."""
    return isinstance(exc, sg.CertificateVerificationError) or (
        "No valid certificate chain" in str(exc)
    )


def _chain_cause(exc: BaseException) -> BaseException | None:
    """The chain failure behind a countersigner error (signify re-raises inside `except`,
    so the causes are on __context__), or None when the timestamp itself is bad."""
    cause = exc.__context__
    for _ in range(8):
        if cause is None:
            return None
        if _is_chain_failure(cause):
            return cause
        cause = cause.__context__
    return None


def _candidate_chain(sig: SignatureInfo, trust: TrustStore) -> list[CertInfo]:
    """Signer → issuers found by name, ending at a trusted root when one is reached.

    Only the name path (no signatures checked): it names the root for IsRootSignerMicrosoft
    on files that fail verification, and tells an unknown root from other chain failures.
    """
    assert sig.signer is not None
    path = [sig.signer]
    by_subject = {c.subject_key: c for c in sig.certificates}
    current = sig.signer
    for _ in range(10):
        key = name_key(current.issuer_key)
        roots = trust.by_subject.get(key)
        if roots:
            root = roots[0][0]
            info = cert_info(root.to_der)
            if info.sha1 != current.sha1:
                path.append(info)
            return path
        if current.self_signed:
            return []  # a self-signed certificate that no store trusts
        parent = by_subject.get(current.issuer_key)
        if parent is None or parent in path:
            return []
        path.append(parent)
        current = parent
    return []


def _issuer_keys(signature) -> set[str]:
    """Normalized issuer names of every certificate the signature and its timestamp carry."""
    keys: set[str] = set()
    bags = [signature.certificates]
    countersigner = signature.signer_info.countersigner
    if isinstance(countersigner, sg.SignedData):
        bags.append(countersigner.certificates)
    for bag in bags:
        for cert in bag:
            keys.add(hashable(cert.asn1.issuer))
            keys.add(hashable(cert.asn1.subject))
    return keys


def _chain_infos(chain) -> list[CertInfo]:
    return [cert_info(c.to_der) for c in reversed(chain)]
