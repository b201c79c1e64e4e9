"""Real-world signed files nobody here wrote, and an independent reading of their signatures.

Fetching: the Windows wheel of msvc-runtime (Microsoft-signed DLLs) and Debian's signed shim
and GRUB, cached under tests/.cache/realworld/ and fetched only when missing.

Independent reading: pefile finds the certificate table and openssl parses the PKCS#7 and
its certificates, so a shared bug in rmmscan's own parsing cannot hide. asn1crypto is used
only to walk unsigned attributes (nested signatures, timestamps), as a second opinion.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pefile
from asn1crypto import cms

CACHE = Path(__file__).resolve().parent / ".cache" / "realworld"
MSVC_VERSION = "14.44.35112"  # pinned: a fixed set of DLLs and signatures
TIMEOUT = 600

NESTED_OID = "1.3.6.1.4.1.311.2.4.1"
TIMESTAMP_OIDS = (
    "1.3.6.1.4.1.311.3.3.1",  # Microsoft RFC 3161 timestamp token
    "1.2.840.113549.1.9.16.2.14",  # id-aa-timeStampToken
    "1.2.840.113549.1.9.6",  # PKCS#9 counterSignature
)
RFC3161_OIDS = TIMESTAMP_OIDS[:2]


def _run(args: list[str], cwd: Path | None = None, data: bytes | None = None) -> bytes:
    """Run a tool; a failure raises with the tool's own words (tests fail, never skip)."""
    try:
        done = subprocess.run(
            args, cwd=cwd, input=data, capture_output=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
        )
    return done.stdout


def fetch_msvc_dlls(cache: Path = CACHE) -> list[Path]:
    """Microsoft-signed DLLs from the pinned msvc-runtime Windows wheel."""
    out = cache / f"msvc-runtime-{MSVC_VERSION}"
    done = out / ".complete"
    if not done.exists():
        wheels = cache / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        _run([
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--platform", "win_amd64", "--python-version", "3.11", "-d", str(wheels),
            f"msvc-runtime=={MSVC_VERSION}",
        ])  # fmt: skip
        (wheel,) = wheels.glob(f"msvc_runtime-{MSVC_VERSION}-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(out)
        done.touch()
    # The wheel holds the DLLs twice (data/ and data/Scripts/); Scripts/ has all of them.
    return sorted(out.glob("*.data/data/Scripts/*.dll"))


def fetch_deb(package: str, cache: Path = CACHE) -> list[Path]:
    """The signed EFI binaries of a Debian package (apt-get download + dpkg-deb -x)."""
    out = cache / package
    done = out / ".complete"
    if not done.exists():
        debs = cache / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        for old in debs.glob(f"{package}_*.deb"):
            old.unlink()
        _run(["apt-get", "download", package], cwd=debs)
        (deb,) = debs.glob(f"{package}_*.deb")
        _run(["dpkg-deb", "-x", str(deb), str(out)])
        done.touch()
    return sorted(out.glob("usr/lib/**/*.efi.signed"))


def certificate_entries(path: Path) -> list[bytes]:
    """PKCS#7 DER of every WIN_CERTIFICATE entry, located with pefile (not rmmscan)."""
    data = path.read_bytes()
    pe = pefile.PE(data=data, fast_load=True)  # never close(): it runs gc.collect()
    directory = pe.OPTIONAL_HEADER.DATA_DIRECTORY[
        pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]
    ]
    offset, end = directory.VirtualAddress, directory.VirtualAddress + directory.Size
    blobs = []
    while offset + 8 <= end:
        length, _revision, _type = struct.unpack_from("<IHH", data, offset)
        if length < 8:
            break
        blobs.append(_der_only(data[offset + 8 : offset + length]))
        offset += (length + 7) & ~7
    return blobs


def _der_only(body: bytes) -> bytes:
    """The outer DER TLV, without the alignment padding openssl would choke on."""
    first = body[1]
    if first < 0x80:
        return body[: 2 + first]
    n = first & 0x7F
    return body[: 2 + n + int.from_bytes(body[2 : 2 + n], "big")]


@dataclass
class OpensslCert:
    """One certificate as `openssl x509` prints it."""

    serial: str  # upper hex, no sign byte
    sha1: str  # lower hex
    subject: list[tuple[str, str]] = field(default_factory=list)  # DER order
    issuer: list[tuple[str, str]] = field(default_factory=list)
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    crl_urls: list[str] = field(default_factory=list)

    @property
    def cn(self) -> str:
        return display(self.subject)


def display(name: list[tuple[str, str]]) -> str:
    """First commonName, else first organizationName (docs/architecture.md §2)."""
    for wanted in ("commonName", "organizationName"):
        for key, value in name:
            if key == wanted:
                return value
    raise AssertionError(f"name without CN or O: {name}")


def openssl_certs(pkcs7_der: bytes) -> list[OpensslCert]:
    """Every certificate of a SignedData's bag, parsed by openssl."""
    pem = _run(["openssl", "pkcs7", "-inform", "DER", "-print_certs"], data=pkcs7_der).decode()
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", pem, re.S)
    return [_x509(block.encode()) for block in blocks]


def _x509(pem: bytes) -> OpensslCert:
    text = _run(
        [
            "openssl", "x509", "-noout", "-serial", "-fingerprint", "-sha1", "-subject",
            "-issuer", "-dates", "-nameopt", "multiline,utf8,-esc_msb",
            "-ext", "crlDistributionPoints",
        ],
        data=pem,
    ).decode("utf-8")  # fmt: skip
    cert = OpensslCert(serial="", sha1="")
    section = None
    for line in text.splitlines():
        if line.startswith("serial="):
            cert.serial = line.split("=", 1)[1]
        elif line.startswith("sha1 Fingerprint="):
            cert.sha1 = line.split("=", 1)[1].replace(":", "").lower()
        elif line in ("subject=", "issuer="):
            section = getattr(cert, line[:-1])
        elif line.startswith(("notBefore=", "notAfter=")):
            key, value = line.split("=", 1)
            moment = dt.datetime.strptime(value, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=dt.UTC)
            setattr(cert, "not_before" if key == "notBefore" else "not_after", moment)
        elif line.strip().startswith("URI:"):
            cert.crl_urls.append(line.strip()[4:])
        elif line.startswith("    ") and section is not None and " = " in line:
            key, value = line.strip().split(" = ", 1)
            section.append((key.strip(), value.strip()))
        else:
            section = None
    return cert


@dataclass
class Signature:
    """One signature (primary or nested), as openssl and asn1crypto see it."""

    der: bytes  # the ContentInfo of this SignedData
    signer_serial: str  # upper hex, as openssl prints serials
    timestamp: str | None  # the attribute OID when a timestamp is present
    token: bytes | None  # the RFC 3161 token, when that is the kind


def signatures(path: Path) -> list[Signature]:
    """Depth first over entries and nested signatures: rmmscan's SignatureIndex order."""
    out: list[Signature] = []
    for blob in certificate_entries(path):
        _walk(cms.ContentInfo.load(blob), out)
    return out


def _walk(content: cms.ContentInfo, out: list[Signature]) -> None:
    signer_info = content["content"]["signer_infos"][0]
    serial = signer_info["sid"].chosen["serial_number"].native
    sig = Signature(content.dump(), f"{serial:X}".rjust(2, "0"), None, None)
    if len(sig.signer_serial) % 2:
        sig.signer_serial = "0" + sig.signer_serial
    out.append(sig)
    nested = []
    attrs = signer_info["unsigned_attrs"]
    for attr in [] if attrs.contents is None else attrs:
        oid = attr["type"].dotted
        if oid in TIMESTAMP_OIDS and sig.timestamp is None:
            sig.timestamp = oid
            if oid in RFC3161_OIDS:
                sig.token = attr["values"][0].dump()
        elif oid == NESTED_OID:
            nested.extend(attr["values"])
    for value in nested:
        _walk(value, out)


def openssl_signature_count(path: Path) -> int:
    """SignedData objects openssl sees, less the RFC 3161 tokens among them."""
    total = 0
    for blob in certificate_entries(path):
        lines = _run(["openssl", "asn1parse", "-inform", "DER"], data=blob).decode()
        signed = lines.count(":pkcs7-signedData")
        tokens = lines.count(":1.3.6.1.4.1.311.3.3.1") + lines.count(":id-smime-aa-timeStampToken")
        total += signed - tokens
    return total


def openssl_token_time(token: bytes) -> dt.datetime:
    """genTime of an RFC 3161 token: openssl asn1parse of the encapsulated TSTInfo."""
    lines = _run(["openssl", "asn1parse", "-inform", "DER"], data=token).decode().splitlines()
    at = next(i for i, line in enumerate(lines) if ":id-smime-ct-TSTInfo" in line)
    octets = next(line for line in lines[at:] if "OCTET STRING" in line)
    offset = octets.split(":", 1)[0].strip()
    tst = _run(["openssl", "asn1parse", "-inform", "DER", "-strparse", offset], data=token)
    match = re.search(r"GENERALIZEDTIME\s*:(\d{14})(\.\d+)?Z", tst.decode())
    assert match, tst
    moment = dt.datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)
    if match.group(2):
        moment += dt.timedelta(microseconds=round(float(match.group(2)) * 1_000_000))
    return moment
