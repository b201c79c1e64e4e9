"""The records inspection produces: plain, typed, immutable where they can be."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    """VerificationStatus: one verdict per signature, the first failure that applies."""

    OK = "Ok"  # intact, verifies, chain to a trusted root, valid at the signing time
    UNSIGNED = "Unsigned"  # a PE without a signature (the row of an unsigned file)
    INVALID_DIGEST = "InvalidDigest"  # the file was modified after signing
    BAD_SIGNATURE = "BadSignature"  # the signature or the countersignature does not verify
    UNTRUSTED_ROOT = "UntrustedRoot"  # the chain does not lead to a trusted root
    INVALID_CHAIN = "InvalidChain"  # a chain exists but is unfit (usage, constraints)
    EXPIRED = "Expired"  # the signer's certificate is outside its validity, no timestamp
    DISTRUSTED = "Distrusted"  # a certificate of the chain is on the distrust list
    MALFORMED = "Malformed"  # the signature cannot be parsed or is structurally wrong
    NOT_CHECKED = "NotChecked"  # not verified: not asked for, or the file is over the read bound


class Anomaly(StrEnum):
    """Structural facts about the certificate table (tools disagree on these files), and how
    the file was read when that matters to a hunter."""

    DATA_AFTER_TABLE = "data_after_certificate_table"
    SLACK_IN_ENTRY = "slack_in_certificate_entry"
    MULTIPLE_ENTRIES = "multiple_certificate_entries"
    TABLE_OUTSIDE_FILE = "certificate_table_outside_file"
    TABLE_SIZE_EXCEEDS_FILE = "certificate_table_size_exceeds_file"
    TABLE_TOO_LARGE = "certificate_table_too_large"
    TABLE_INSIDE_HEADERS = "certificate_table_inside_headers"
    ENTRY_MALFORMED = "certificate_entry_malformed"
    UNSUPPORTED_ENTRY_TYPE = "unsupported_certificate_entry_type"
    PKCS7_MALFORMED = "pkcs7_malformed"
    PKCS7_TRUNCATED = "pkcs7_truncated"
    PKCS7_BER = "pkcs7_not_der"  # read, but not in the DER that Authenticode requires
    CERTIFICATE_MALFORMED = "certificate_malformed"  # read with the tolerant reader
    ATTRIBUTE_TOO_LARGE = "unsigned_attribute_too_large"  # skipped, not parsed
    CRLS_TOO_LARGE = "crl_bag_too_large"  # skipped, not parsed
    LIMIT_REACHED = "inspection_limit_reached"  # a cap on signatures, depth or items
    CHANGED_DURING_READ = "changed_during_read"  # the file changed while it was read
    INTERNAL_ERROR = "internal_error"  # an unexpected exception; see Inspection.errors
    DELETED_ON_DISK = "deleted_on_disk"  # a running process maps it; its name leads nowhere
    MEMORY_FILE = "memory_file"  # a process's memfd: a file that never was on a disk
    # Larger than the read bound (Options.max_read): its signatures are read, but it is not
    # hashed or verified, since both read the whole file (a PE's contents lie within 4 GiB).
    TOO_LARGE = "too_large_to_read"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What one certificate yields; computed once per distinct certificate (by thumbprint)."""

    sha1: str
    cn: str  # Signer/Issuer column value: CN, else O, else the whole DN
    subject: str
    issuer: str
    issuer_cn: str
    serial_hex: str
    serial_int: int
    not_before: dt.datetime | None  # None: a date the tolerant reader could not read
    not_after: dt.datetime | None
    crl_urls: tuple[str, ...]
    issuer_key: bytes  # DER of the issuer name, to find the issuing certificate
    subject_key: bytes  # DER of the subject name
    self_signed: bool


@dataclass(slots=True)
class SignatureInfo:
    """One embedded Authenticode signature (primary or nested), without a trust verdict."""

    index: int
    digest_algorithm: str
    signer: CertInfo | None
    issuer: CertInfo | None  # the issuing CA certificate, when the signature carries it
    countersignature_time: dt.datetime | None
    countersignature_kind: str | None  # "rfc3161" or "pkcs9"
    certificates: tuple[CertInfo, ...]
    problems: list[str] = field(default_factory=list)  # why it is Malformed, if it is
    entry: int = 0  # which certificate-table entry holds it
    # Why Windows rejects the signature before any cryptography, though rmmscan reads whom it
    # names ("" when it does not): a certificate-table entry Windows does not read, or a
    # SignerInfo that names none of the certificates exactly. Its verdict is Malformed.
    rejected: str = ""
    asn1: object = field(default=None, repr=False, compare=False)  # parsed SignedData
    der: bytes = field(default=b"", repr=False, compare=False)  # its ContentInfo, unparsed


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    is_trusted: bool
    root_microsoft: bool
    detail: str = ""
    chain: tuple[CertInfo, ...] = ()


@dataclass(slots=True)
class PEHeader:
    machine: int
    is_64: bool
    is_dll: bool
    checksum_offset: int
    cert_dir_offset: int  # file offset of the certificate data-directory entry, 0 if none
    cert_table: tuple[int, int]  # (file offset, size) as the header claims
    headers_size: int
    section_alignment: int = 0
    section_table: bytes = b""  # the IMAGE_SECTION_HEADERs as read: at most 96, whole ones
    resources: tuple[int, int] = (0, 0)  # the resource data directory: (RVA, size)

    @property
    def sections(self) -> tuple[tuple[int, int, int, int], ...]:
        """(VirtualAddress, VirtualSize, PointerToRawData, SizeOfRawData) in file order.

        Decoded on each access (a few µs): parse_header runs on every file, this does not.
        """
        import struct

        return tuple(
            (va, vsize, raw_ptr, raw_size)
            for vsize, va, raw_size, raw_ptr in struct.iter_unpack("<8xIIII16x", self.section_table)
        )


@dataclass(slots=True)
class Inspection:
    """Everything inspection learned about one stream."""

    size: int
    is_pe: bool
    not_pe_reason: str = ""
    header: PEHeader | None = None
    signatures: list[SignatureInfo] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    verdicts: list[Verdict] | None = None  # parallel to signatures, when verified
    # Unexpected exceptions caught inside inspection or verification ("where: Type: message"):
    # the rows are still made from what was read, and the caller reports these as failures.
    errors: list[str] = field(default_factory=list)
