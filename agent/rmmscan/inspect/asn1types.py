"""Authenticode's ASN.1 types (SpcIndirectDataContent, the catalogs' CTL, ...) registered
with asn1crypto, as signify declares them, for the parser of the certificate table.

Only signify's ASN.1 declarations are imported here: they load no crypto binding, so
reading a signature's columns costs 0.01 s of imports where all of signify (oscrypto,
certvalidator: _signify.py) costs 0.09 s, paid only by a process that verifies.
"""

from __future__ import annotations

import signify.asn1  # noqa: F401  (the import registers the types)
