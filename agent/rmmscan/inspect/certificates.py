"""Certificate columns, computed once per distinct certificate.

Parsing a whole certificate costs milliseconds, and a handful of certificates sign most
files on a machine (DESIGN §5): the cache is keyed by the SHA-1 of the DER, which is also
the thumbprint the row needs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict

from asn1crypto import core, x509

from . import names
from .model import CertInfo

_CACHE_MAX = 4096
_cache: OrderedDict[str, CertInfo] = OrderedDict()
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def cert_info(der: bytes) -> CertInfo:
    """Columns of one DER certificate (cached). Raises ValueError if it does not parse."""
    thumb = hashlib.sha1(der).hexdigest()
    hit = _cache.get(thumb)
    if hit is not None:
        _cache.move_to_end(thumb)
        return hit
    info = _parse(der, thumb)
    _cache[thumb] = info
    if len(_cache) > _CACHE_MAX:
        _cache.popitem(last=False)
    return info


def _parse(der: bytes, thumb: str) -> CertInfo:
    try:
        cert = x509.Certificate.load(der)
        tbs = cert["tbs_certificate"]
        subject = names.attributes(tbs["subject"])
        issuer = names.attributes(tbs["issuer"])
        serial = tbs["serial_number"]
        validity = tbs["validity"]
        return CertInfo(
            sha1=thumb,
            cn=names.display_name(subject),
            subject=names.render(subject),
            issuer=names.render(issuer),
            issuer_cn=names.display_name(issuer),
            serial_hex=serial.contents.hex(),
            serial_int=serial.native,
            not_before=_time(validity["not_before"]),
            not_after=_time(validity["not_after"]),
            crl_urls=tuple(_crl_urls(tbs)),
            issuer_key=tbs["issuer"].dump(),
            subject_key=tbs["subject"].dump(),
            self_signed=tbs["issuer"].dump() == tbs["subject"].dump(),
        )
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise ValueError(f"certificate {thumb} does not parse: {exc}") from exc


def _time(value) -> dt.datetime:
    native = value.native
    if native.tzinfo is None:
        native = native.replace(tzinfo=dt.UTC)
    return native.astimezone(dt.UTC)


def _crl_urls(tbs) -> list[str]:
    """Every URI of every CRL distribution point, in certificate order."""
    urls: list[str] = []
    extensions = tbs["extensions"]
    if isinstance(extensions, core.Void):  # a v1 certificate
        return urls
    for ext in extensions:
        if ext["extn_id"].native != "crl_distribution_points":
            continue
        try:
            points = ext["extn_value"].parsed
            for point in points:
                dp = point["distribution_point"]
                if dp.name != "full_name":
                    continue
                for general_name in dp.chosen:
                    if general_name.name == "uniform_resource_identifier":
                        # The raw IA5String, as written: asn1crypto's .native rewrites IRIs.
                        urls.append(general_name.chosen.contents.decode("latin-1"))
        except (ValueError, TypeError, KeyError):
            continue
    return urls
