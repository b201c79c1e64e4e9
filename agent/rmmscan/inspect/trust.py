"""The trust context, built once per process: trusted roots indexed by subject, and the
distrust list.

signify builds a certvalidator context from every trusted root on every verify (hundreds of
Microsoft-program roots: most of its 13-200 ms, docs/architecture.md §5). A chain can only
end in a root whose subject is the issuer named by a certificate the signature carries, so
each verify gets a store holding just those roots, and the same CTL rules as the full store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from asn1crypto import x509

from . import _signify as sg
from .model import CertInfo
from .trustfiles import DistrustEntry, load_distrust, pem_certificates


class IndexedTrustList:
    """A CertificateTrustList whose subject index is built once, and cheaply.

    signify 0.9.3's ``CertificateTrustList._subjects`` is a plain property that re-parses
    all ~440 authroot.stl entries on every lookup, 30 ms of every verification (measured
    here; no upstream issue found). Same ``verify_trust`` contract, index computed once.
    Its key, ``identifier_str``, parses every entry's attributes (0.2 s) to learn that it is
    the hex of the raw identifier; so the index is by that hex, each hit checked against
    ``identifier_str``, and signify's own index is built only if a lookup misses.
    """

    def __init__(self, ctl):
        self.ctl = ctl
        self._by_hex = None  # on the first lookup: a process may verify no Microsoft chain
        self._by_id = None
        self._sha256 = ctl.subject_algorithm is hashlib.sha256

    def _subject(self, key: str):
        if self._by_hex is None:
            self._by_hex = {subject.identifier.hex(): subject for subject in self.ctl.subjects}
        subject = self._by_hex.get(key)
        if subject is not None and subject.identifier_str == key:
            return subject
        if self._by_id is None:
            self._by_id = self.ctl._subjects
        return self._by_id.get(key)

    def verify_trust(self, chain: list[sg.Certificate], *args, **kwargs) -> bool:
        root = chain[0]
        key = root.sha256_fingerprint if self._sha256 else root.sha1_fingerprint
        subject = self._subject(key)
        if subject is None:
            raise sg.CTLCertificateVerificationError(
                f"The root {root} is not in the certificate trust list"
            )
        return subject.verify_trust(chain, *args, **kwargs)


@dataclass
class TrustStore:
    """Roots by normalized subject, each with the store (and CTL) it came from."""

    by_subject: dict[str, list[tuple[sg.Certificate, sg.CertificateStore]]] = field(
        default_factory=dict
    )
    distrust: list[DistrustEntry] = field(default_factory=list)
    # The Microsoft root program's roots by SHA-1 thumbprint, and which of them are
    # Microsoft's own, decided on first ask: reading all ~570 subjects would be half the build.
    _program: dict[str, sg.Certificate] = field(default_factory=dict)
    _microsoft: dict[str, bool] = field(default_factory=dict)
    # Each root's normalized subject by its SHA-1 thumbprint, as saved (names_file): a root
    # found there is indexed without its subject being parsed; ``learnt`` says what was not.
    known_roots: dict[str, str] = field(default_factory=dict)
    learnt: int = 0

    def add_store(self, store: sg.CertificateStore, microsoft: bool = False) -> None:
        known = self.known_roots
        for cert in store:
            sha1 = cert.asn1.sha1.hex()
            key = known.get(sha1)
            if key is None:
                key = known[sha1] = hashable(cert.asn1.subject)
                self.learnt += 1
            self.by_subject.setdefault(key, []).append((cert, store))
            if microsoft:
                self._program.setdefault(sha1, cert)

    def is_microsoft_root(self, sha1: str) -> bool:
        """Is this thumbprint a root of Microsoft's program with a Microsoft subject?"""
        known = self._microsoft.get(sha1)
        if known is None:
            cert = self._program.get(sha1)
            known = cert is not None and _is_microsoft(cert.asn1.subject)
            self._microsoft[sha1] = known
        return known

    def roots_for(self, issuer_names: set[str]) -> sg.CertificateStore | None:
        """A small trusted store with only the roots that could end these chains."""
        groups: dict[int, tuple[sg.CertificateStore, list[sg.Certificate]]] = {}
        for key in issuer_names:
            for cert, origin in self.by_subject.get(key, ()):
                groups.setdefault(id(origin), (origin, []))[1].append(cert)
        stores = [
            sg.CertificateStore(certs, trusted=True, ctl=o.ctl) for o, certs in groups.values()
        ]
        if not stores:
            return None
        combined = stores[0]
        for store in stores[1:]:
            combined = combined | store
        return combined

    def distrusted(self, certs: list[CertInfo]) -> DistrustEntry | None:
        for cert in certs:
            for entry in self.distrust:
                if entry.sha1 and entry.sha1 == cert.sha1:
                    return entry
                if (
                    entry.serial
                    and entry.serial == cert.serial_hex
                    and (not entry.issuer or entry.issuer == cert.issuer_cn)
                ):
                    return entry
        return None


def _is_microsoft(subject: x509.Name) -> bool:
    native = subject.native
    return native.get("organization_name") == "Microsoft Corporation" or str(
        native.get("common_name", "")
    ).startswith("Microsoft ")


def name_key(der: bytes) -> str:
    """The normalized form certvalidator matches names by (raw DER if it does not decode:
    the tolerant certificate reader keeps names asn1crypto cannot load)."""
    try:
        name = x509.Name.load(der)
    except ValueError:
        return "der:" + der.hex()
    return hashable(name)


def hashable(name: x509.Name) -> str:
    """Name.hashable (memoized by _signify), or the DER when a string does not decode."""
    try:
        return name.hashable
    except (ValueError, TypeError, KeyError):  # an undecodable string in the name
        return "der:" + name.dump().hex()


def load_pem_roots(paths: list[Path]) -> sg.CertificateStore:
    certs = [sg.Certificate(x509.Certificate.load(der)) for der in pem_certificates(paths)]
    return sg.CertificateStore(certs, trusted=True)


def build(
    trusted_roots: list[Path] | None = None,
    distrust_files: list[Path] | None = None,
    system_roots: bool = True,
    names_file: Path | None = None,
) -> TrustStore:
    """``names_file``: where the roots' normalized subjects are kept between runs, by the
    subject and by the root's thumbprint: with them, no subject is normalized, nor parsed,
    to build the index (0.05 vs 0.20 s in a fresh process, benchmarks/micro_inspect.py)."""
    known, roots = load_saved(names_file) if names_file is not None else ({}, {})
    for der, key in known.items():
        sg.NAME_MEMO.setdefault(der, key)
    store = TrustStore(known_roots=dict(roots))
    if system_roots:
        program = sg.TRUSTED_CERTIFICATE_STORE_WITH_CTL
        store.add_store(
            sg.CertificateStore(program, trusted=True, ctl=IndexedTrustList(program.ctl)),
            microsoft=True,
        )
        legacy = sg.CertificateStore(
            sg.Certificate.from_pems(sg.LEGACY_CERTIFICATES_LOCATION.read_bytes()),
            trusted=True,
            ctl=sg.LEGACY_CERTIFICATES,
        )
        store.add_store(legacy, microsoft=True)
    if trusted_roots:
        store.add_store(load_pem_roots(trusted_roots))
    store.distrust = load_distrust()
    for path in distrust_files or []:
        store.distrust.extend(load_distrust(path))
    if names_file is not None and store.learnt:
        names = {}
        for entries in store.by_subject.values():
            for cert, _ in entries:
                der = cert.asn1.subject.dump()
                if der in sg.NAME_MEMO:
                    names[der] = sg.NAME_MEMO[der]
        save_names(names_file, names, store.known_roots)
    return store


_NAMES_FORMAT = 2
_NAMES_MAX = 16 * 1024 * 1024  # bytes; ~550 roots take 0.2 MB


def _normalizer() -> str:
    """Who normalized the names: another asn1crypto may prepare them differently."""
    import asn1crypto

    return f"asn1crypto {asn1crypto.__version__}"


def load_saved(path: Path) -> tuple[dict[bytes, str], dict[str, str]]:
    """Saved normalized names, by subject and by root thumbprint; anything unreadable,
    malformed, too large or normalized by another asn1crypto is ignored (recomputed)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_NAMES_MAX + 1)
        if len(raw) > _NAMES_MAX:
            return {}, {}
        data = json.loads(raw)
        if data.get("format") != _NAMES_FORMAT or data.get("normalizer") != _normalizer():
            return {}, {}
        names = {
            bytes.fromhex(der): key for der, key in data["names"].items() if isinstance(key, str)
        }
        roots = {
            sha1: key
            for sha1, key in data["roots"].items()
            if isinstance(key, str) and len(sha1) == 40 and bytes.fromhex(sha1)
        }
        return names, roots
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}, {}


def save_names(path: Path, names: dict[bytes, str], roots: dict[str, str]) -> None:
    """Atomically, and never fatally: the file only saves time."""
    data = {
        "format": _NAMES_FORMAT,
        "normalizer": _normalizer(),
        "names": {der.hex(): key for der, key in names.items()},
        "roots": roots,
    }
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data), "utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
