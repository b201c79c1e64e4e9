"""The one door to signify: applies the workarounds below before signify is imported.

oscrypto 1.3.0 (the newest release) finds the OpenSSL version with the pattern
``\\d\\.\\d\\.\\d[a-z]*``, which fails on a two-digit patch level such as "3.0.19" and makes
``import signify`` raise "Error detecting the version of libcrypto" (wbond/oscrypto#75,
#78; ralphje/signify#41). Upstream's fix (not released) widens the pattern to ``\\d+``.
We apply exactly that change to the two oscrypto modules that hold the pattern, at import
time, and nothing else; a release that fixed it is loaded untouched.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

_BROKEN = b"'\\\\b(\\\\d\\\\.\\\\d\\\\.\\\\d[a-z]*)\\\\b'"
_FIXED = b"'\\\\b(\\\\d+\\\\.\\\\d+\\\\.\\\\d+[a-z]*)\\\\b'"
_PATCHED_MODULES = frozenset(
    {"oscrypto._openssl._libcrypto_cffi", "oscrypto._openssl._libcrypto_ctypes"}
)
# certvalidator imports its OCSP and CRL downloaders with its context, and with them
# urllib.request, http.client and ssl: 15 to 20 ms of every process that verifies, here.
# signify never lets it download (offline verification), so they are loaded lazily
# (importlib.util.LazyLoader): on first use, which does not come. No upstream issue found.
_LAZY_MODULES = frozenset({"certvalidator.ocsp_client", "certvalidator.crl_client"})


class _VersionPatternLoader(importlib.machinery.SourceFileLoader):
    """Compiles the module from its source with the version pattern widened."""

    def get_code(self, fullname):
        source = self.get_data(self.path)
        return self.source_to_code(source.replace(_BROKEN, _FIXED), self.path)


class _WorkaroundFinder(importlib.abc.MetaPathFinder):
    """Loads the modules of _PATCHED_MODULES with the version pattern widened, and those of
    _LAZY_MODULES lazily; any other module as Python would."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _PATCHED_MODULES and fullname not in _LAZY_MODULES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        if fullname in _LAZY_MODULES:
            spec.loader = importlib.util.LazyLoader(spec.loader)
            return spec
        if not spec.origin or not spec.origin.endswith(".py"):
            return spec
        spec.loader = _VersionPatternLoader(fullname, spec.origin)
        return spec


def _install() -> None:
    if any(isinstance(f, _WorkaroundFinder) for f in sys.meta_path):
        return
    if any(name in sys.modules for name in _PATCHED_MODULES):
        return
    sys.meta_path.insert(0, _WorkaroundFinder())


_install()


def _use_ctypes() -> None:
    """oscrypto binds libcrypto through cffi when cffi is installed, which parses oscrypto's
    C declarations with pycparser at every start: 40 to 50 ms of the 0.17 s that importing
    signify takes here, in every scan process, against no measurable difference per
    verification (a few calls a signature). Its ctypes binding, oscrypto's documented
    alternative (``oscrypto.use_ctypes``), calls the same library. A process that loaded a
    binding before this module keeps it."""
    import contextlib

    import oscrypto

    with contextlib.suppress(RuntimeError):  # a binding is loaded already
        oscrypto.use_ctypes()
    loaded = _loaded_openssl()
    if loaded is not None:
        with contextlib.suppress(RuntimeError, OSError):  # a backend is chosen already
            oscrypto.use_openssl(*loaded)


def _loaded_openssl() -> tuple[str, str] | None:
    """(libcrypto, libssl): the files of the OpenSSL that Python's hashlib has loaded into
    this process, on Linux (libssl: the one loaded, else the libssl beside that libcrypto,
    of the same version); None elsewhere, or when they are not found.

    Without them oscrypto finds OpenSSL with ctypes.util.find_library, which on Linux runs
    `ldconfig -p` (and, failing that, gcc or ld from PATH) in a child process: a process
    that verifies would start a program, as root, to find a library already in its memory.
    Given the paths, oscrypto opens the same library."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import _hashlib  # noqa: F401  (loads libcrypto, if Python links it)

        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = sorted({line.split(None, 5)[-1].strip() for line in maps if ".so" in line})
    except (ImportError, OSError):
        return None
    found = {}
    for path in paths:
        folder, _, name = path.rpartition("/")
        for lib in ("libcrypto.so", "libssl.so"):
            if name.startswith(lib) and folder:
                found.setdefault(lib, path)
    crypto = found.get("libcrypto.so")
    if crypto is None:
        return None
    folder, _, name = crypto.rpartition("/")
    ssl = found.get("libssl.so") or f"{folder}/libssl.so{name[len('libcrypto.so'):]}"
    if not os.path.isfile(ssl):
        return None
    return crypto, ssl


_use_ctypes()


# Name DER -> Name.hashable, process-wide (see below); trust.py saves the roots' entries.
NAME_MEMO: dict[bytes, str] = {}


def _cache_name_hashable() -> None:
    """asn1crypto's ``Name.hashable`` (RFC 4518 string preparation of every attribute) is
    recomputed for each new Name object; certvalidator calls it for every certificate of
    every chain, a third of a verification here (measured; no upstream issue found). It is
    a pure function of the name's DER, so it is memoized by DER, process-wide."""
    from asn1crypto import x509

    original = x509.Name.hashable
    if getattr(original.fget, "rmmscan_cached", False):
        return
    cache = NAME_MEMO

    def hashable(self) -> str:
        der = self.dump()
        value = cache.get(der)
        if value is None:
            value = original.fget(self)
            if len(cache) >= 16384:
                cache.clear()
            cache[der] = value
        return value

    hashable.rmmscan_cached = True
    x509.Name.hashable = property(hashable, doc=original.__doc__)


_cache_name_hashable()

# ruff: noqa: E402  (the imports must follow the workaround)
from signify.authenticode import AuthenticodeSignature  # noqa: F401
from signify.authenticode.cert_store import (  # noqa: F401
    LEGACY_CERTIFICATES,
    LEGACY_CERTIFICATES_LOCATION,
    TRUSTED_CERTIFICATE_STORE_WITH_CTL,
)
from signify.authenticode.signed_file.pe import SignedPEFile  # noqa: F401
from signify.exceptions import (  # noqa: F401
    AuthenticodeInvalidDigestError,
    CertificateVerificationError,
    CounterSignerError,
    CTLCertificateVerificationError,
    SignedPEParseError,
    SignerInfoVerificationError,
    VerificationError,
)
from signify.pkcs7 import SignedData
from signify.x509 import Certificate, CertificateStore  # noqa: F401


def _parse_once() -> None:
    """signify 0.9.3 makes each parsed view of a signature again on every access: a
    SignedData's ``signer_infos``, a SignerInfo's attribute dictionaries and its
    ``countersigner`` (an RFC 3161 countersigner is a whole SignedData, validated again).
    One verify reads them some 15 times, a third of its time (measured here; no upstream
    issue found). Each is a pure function of the parsed data beneath, which never changes,
    so each is kept on its object after the first access."""
    import functools

    from signify.authenticode.tsp import RFC3161SignerInfoMixin
    from signify.pkcs7.signer_info import SignerInfo

    for cls, name in (
        (SignedData, "signer_infos"),
        (SignerInfo, "authenticated_attributes"),
        (SignerInfo, "unauthenticated_attributes"),
        (SignerInfo, "countersigner"),
        (RFC3161SignerInfoMixin, "countersigner"),
    ):
        view = cls.__dict__.get(name)
        if isinstance(view, property):
            once = functools.cached_property(view.fget)
            once.__set_name__(cls, name)
            setattr(cls, name, once)


_parse_once()
