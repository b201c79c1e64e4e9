"""Certificate columns, computed once per distinct certificate.

Parsing a whole certificate costs milliseconds, and a handful of certificates sign most
files on a machine: the cache is keyed by the SHA-1 of the bytes as
stored, which is also the thumbprint the row needs.

A certificate that asn1crypto refuses (a TBSCertificate tagged SET, a missing signature, a
string of the wrong type) is still read by ``tolerant_cert_info``: Windows shows the signer of
such a signature, so a hunter must see it too. The tolerant reader takes each field by its
position, decodes strings by their tag, and leaves out what it cannot read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import OrderedDict

from asn1crypto import core, x509

from . import ber, names
from .model import CertInfo

_CACHE_MAX = 4096
_cache: OrderedDict[str, CertInfo] = OrderedDict()
MAX_STRICT = 1024 * 1024  # a larger certificate is read by the tolerant reader alone
_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError)


def cert_info(der: bytes) -> CertInfo:
    """Columns of one DER certificate (cached). Raises ValueError if it does not parse."""
    return _strict(der, hashlib.sha1(der).hexdigest())


def _strict(der: bytes, thumb: str) -> CertInfo:
    hit = _cache.get(thumb)
    if hit is not None:
        _cache.move_to_end(thumb)
        return hit
    info = _parse(der, thumb)
    _cache[thumb] = info
    if len(_cache) > _CACHE_MAX:
        _cache.popitem(last=False)
    return info


# What the tolerant reader made of a certificate the strict one refuses, and why: kept apart
# from _cache, so that a certificate gets the same row and problem on every sight.
_tolerant: OrderedDict[str, tuple[CertInfo, str]] = OrderedDict()


def _parse(der: bytes, thumb: str) -> CertInfo:
    try:
        issuer_el, subject_el = _name_elements(der, ber.element(der, 0, len(der)))
        cert = x509.Certificate.load(der)
        tbs = cert["tbs_certificate"]
        subject = names.attributes(tbs["subject"])
        issuer = names.attributes(tbs["issuer"])
        serial = tbs["serial_number"]
        validity = tbs["validity"]
        cert["signature_value"].native  # noqa: B018 - a certificate without one is malformed
        extensions = tbs["extensions"]
        issuer_key = ber.canonical(der, issuer_el)
        subject_key = ber.canonical(der, subject_el)
        return CertInfo(
            sha1=thumb,
            cn=names.display_name(subject),
            subject=names.render(subject),
            issuer=names.render(issuer),
            issuer_cn=names.display_name(issuer),
            serial_hex=serial.contents.hex(),
            serial_int=serial.native,
            not_before=utc(validity["not_before"].native),
            not_after=utc(validity["not_after"].native),
            crl_urls=tuple(_crl_urls(extensions)),
            issuer_key=issuer_key,
            subject_key=subject_key,
            self_signed=issuer_key == subject_key,
        )
    except (*_ERRORS, AttributeError) as exc:
        raise ValueError(f"certificate {thumb} does not parse: {exc}") from exc


def _name_elements(data, top: ber.Element | None) -> tuple[ber.Element, ber.Element]:
    fields = _tbs_fields(data, top)
    if fields is None:
        raise ValueError("no TBSCertificate")
    return fields[2], fields[4]


def _tbs_fields(data, top: ber.Element | None) -> list[ber.Element] | None:
    """serial, signature algorithm, issuer, validity, subject (and what follows), by position:
    the shape of a TBSCertificate whatever tags an adversary put on its outer layers."""
    if top is None or not top.constructed:
        return None
    outer, _ = ber.children(data, top, 3)
    if not outer or not outer[0].constructed:
        return None
    fields, _ = ber.children(data, outer[0], 12)
    if fields and fields[0].tag & 0xDF == 0x80:  # the version, [0] however constructed
        fields = fields[1:]
    if len(fields) < 5 or fields[0].tag != ber.INTEGER:
        return None
    return fields


def tolerant_cert_info(data, el: ber.Element) -> tuple[CertInfo, str]:
    """The certificate at `el` of `data`, read strictly when it can be, else tolerantly;
    returns its columns and, when the strict read failed, why (a problem for the row).
    Raises ValueError only when not even a serial number and names are there."""
    size = el.after - el.start
    if size <= MAX_STRICT:
        der = ber.whole(data, el)
        thumb = hashlib.sha1(der).hexdigest()
        if thumb not in _tolerant:
            try:
                return _strict(der, thumb), ""
            except ValueError as exc:
                problem = str(exc)
    else:
        thumb = _sha1(data, el.start, el.after)
        problem = f"certificate {thumb} of {size} bytes read by the tolerant reader alone"
    hit = _tolerant.get(thumb)
    if hit is not None:
        _tolerant.move_to_end(thumb)
        return hit
    fields = _tbs_fields(data, el)
    if fields is None:
        raise ValueError(f"certificate {thumb}: no serial number and names where expected")
    serial_el, _, issuer_el, validity_el, subject_el = fields[:5]
    serial = ber.contents(data, serial_el)[:64]
    subject = names.tolerant_attributes(data, subject_el)
    issuer = names.tolerant_attributes(data, issuer_el)
    issuer_key = ber.canonical(data, issuer_el)
    subject_key = ber.canonical(data, subject_el)
    times, _ = ber.children(data, validity_el, 2) if validity_el.constructed else ([], False)
    not_before, not_after = (time_at(data, t) for t in (*times, None, None)[:2])
    info = CertInfo(
        sha1=thumb,
        cn=names.display_name(subject),
        subject=names.render(subject),
        issuer=names.render(issuer),
        issuer_cn=names.display_name(issuer),
        serial_hex=serial.hex(),
        serial_int=int.from_bytes(serial, "big", signed=True) if serial else 0,
        not_before=not_before,
        not_after=not_after,
        crl_urls=tuple(_tolerant_crl_urls(data, fields[5:])),
        issuer_key=issuer_key,
        subject_key=subject_key,
        self_signed=issuer_key == subject_key,
    )
    _tolerant[thumb] = (info, problem)
    if len(_tolerant) > _CACHE_MAX:
        _tolerant.popitem(last=False)
    return info, problem


def _sha1(data, start: int, end: int) -> str:
    digest = hashlib.sha1()
    for at in range(start, end, 1024 * 1024):
        digest.update(data[at : min(end, at + 1024 * 1024)])
    return digest.hexdigest()


def time_at(data, el: ber.Element | None) -> dt.datetime | None:
    """The UTCTime or GeneralizedTime at `el`, in UTC; None when it is not one."""
    if el is None or el.tag not in (0x17, 0x18) or el.end - el.body > 32:
        return None
    kind = core.UTCTime if el.tag == 0x17 else core.GeneralizedTime
    try:
        return utc(kind(contents=ber.contents(data, el)).native)
    except _ERRORS:
        return None


def _tolerant_crl_urls(data, rest: list[ber.Element]) -> list[str]:
    for el in rest:
        if el.tag != ber.CTX3 or el.after - el.start > MAX_STRICT:
            continue
        inner, _ = ber.children(data, el, 1)
        if not inner:
            return []
        try:
            return _crl_urls(x509.Extensions.load(ber.whole(data, inner[0])))
        except _ERRORS:
            return []
    return []


def utc(native: dt.datetime) -> dt.datetime:
    """A time asn1crypto decoded, in UTC (a naive one is UTC already)."""
    if native.tzinfo is None:
        native = native.replace(tzinfo=dt.UTC)
    return native.astimezone(dt.UTC)


def _crl_urls(extensions) -> list[str]:
    """Every URI of every CRL distribution point, in certificate order."""
    urls: list[str] = []
    if isinstance(extensions, core.Void):  # a v1 certificate
        return urls
    for ext in extensions:
        try:
            if ext["extn_id"].native != "crl_distribution_points":
                continue
            points = ext["extn_value"].parsed
            for point in points:
                dp = point["distribution_point"]
                if dp.name != "full_name":
                    continue
                for general_name in dp.chosen:
                    if general_name.name == "uniform_resource_identifier":
                        # The raw IA5String, as written: asn1crypto's .native rewrites IRIs.
                        urls.append(general_name.chosen.contents.decode("latin-1"))
        except _ERRORS:
            continue
    return urls
