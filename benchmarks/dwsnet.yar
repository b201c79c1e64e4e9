/*
  DWService's code-signing identities, for `yara -r` (Debian bookworm's yara 4.2.3, OpenSSL
  build of the pe module), as the competitor in benchmarks/bench_sweep.py.

  What YARA sees (check with `yara -D benchmarks/dwsnet.yar FILE`): the pe module renders
  names with OpenSSL's X509_NAME_oneline, which escapes every non-ASCII byte of a UTF8String,
  so the subject of a "DWSNET OÜ" certificate is the ASCII text

      /C=EE/O=DWSNET O\xC3\x9C/CN=DWSNET O\xC3\x9C

  with a real backslash, a real "x", "C", "3", ... A rule that contains "DWSNET OÜ" (or the
  string escape "\xC3\x9C", i.e. the UTF-8 bytes) never matches: the backslash itself has to
  be in the rule, hence the doubled backslashes below (docs/architecture.md §5).

  YARA 4.2's pe module lists the signer certificate of every signature, nested ones included
  (pe.signatures[i]); it has no verdict (no `verified` field before YARA 4.3), so this rule
  matches intact, tampered and self-signed fakes alike.
*/

import "pe"

rule DWSNET_signed_PE
{
    meta:
        description = "PE with an Authenticode signature whose signer is DWService's (DWSNET OU / DWSNET srl)"
        reference = "rules/upstream/rmm_DWService_filesig.yaml"
        mitre = "T1219"

    condition:
        for any i in (0 .. pe.number_of_signatures - 1) : (
            // CN or O is exactly "DWSNET OÜ" (as OpenSSL escapes it) or "DWSNET srl"
            pe.signatures[i].subject matches /\/(CN|O)=DWSNET (O\\xC3\\x9C|srl)(\/|$)/
            // the same name written with the plain "U" some tools fall back to
            or pe.signatures[i].subject matches /\/(CN|O)=DWSNET OU(\/|$)/
            // the real DWSNET srl certificate (Sectigo Public Code Signing CA R36), by
            // thumbprint and by serial, in case its subject is rendered differently
            or pe.signatures[i].thumbprint == "4a13f46def2c9427898a46a88a6a2122ed106b37"
            or pe.signatures[i].serial == "af:bd:d3:be:b2:4e:1d:e7:37:82:e9:f8:34:7c:f1:53"
        )
}
