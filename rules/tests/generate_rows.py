"""Write the test rows of every rule: rules/tests/<rule file>.yaml.

    .venv/bin/python rules/tests/generate_rows.py          # rewrite the files
    .venv/bin/python rules/tests/generate_rows.py --check  # exit 1 if a file differs

The rows and the reason for each are written out below, rule by rule: positives with real
signer names where they are known (LOLRMM's CodeSigning data, reviewed; "constructed" where
no real name was found), negatives that are near misses of Kusto's term semantics. Every
Signer rule also gets the same derived rows (DERIVED below): its needles glued to a letter,
upper-cased, put in the Issuer column instead, a common signer, an unsigned file.

Deterministic: the same script writes the same bytes. Edit this file, run it, review the diff.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE.parent

LOLRMM = "LOLRMM"  # reason prefix of names from LOLRMM's CodeSigning data
MADE = "constructed: no real signer found"

# rule file → (positive rows, negative rows); a row is (values, reason).
# A str in place of values is a Signer value.
SIGNER_RULES: dict[str, tuple[list, list]] = {
    "rmm_Action1_filesig.yaml": (
        [("Action1 Corporation", f"{LOLRMM} action1")],
        [("Action1 Corp", "the phrase's second term abbreviated")],
    ),
    "rmm_AeroAdmin_filesig.yaml": (
        [("Aeroadmin LLC", f"{LOLRMM} aeroadmin; has ignores ASCII case")],
        [("AeroAdministrator Ltd", "the needle is the start of a longer term")],
    ),
    "rmm_Ammyy_filesig.yaml": (
        [("Ammyy LLC", MADE)],
        [("Ammy Admin", "one letter short")],
    ),
    "rmm_AnyDesk_filesig.yaml": (
        [
            ("AnyDesk Software GmbH", f"{LOLRMM} anydesk"),
            ("philandro Software GmbH", "AnyDesk's former company name"),
        ],
        [("AnyDesk GmbH", "needle is a two-term phrase; 'Software' is missing")],
    ),
    "rmm_AnyViewer_filesig.yaml": (
        [("AOMEI International Network Limited", f"{LOLRMM} anyviewer")],
        [("AOMEI International Limited", "a term missing from the middle of the phrase")],
    ),
    "rmm_Atera_filesig.yaml": (
        [("Atera Networks Ltd", f"{LOLRMM} atera")],
        [("Atera Network Ltd", "'Network' is not the term 'Networks'")],
    ),
    "rmm_AweSun_filesig.yaml": (
        [("AweRay Limited", MADE), ("AweRay Pte. Ltd.", MADE)],
        [("AweRayTech Limited", "the needle's first term is the start of a longer term")],
    ),
    "rmm_BarracudaRMM_filesig.yaml": (
        [("Barracuda Networks, Inc.", MADE)],
        [("Barracuda Networking Ltd", "'Networking' is not the term 'Networks'")],
    ),
    "rmm_BeyondTrust_filesig.yaml": (
        [
            ("Bomgar Corporation", f"{LOLRMM} beyondtrust"),
            ("BeyondTrust Corporation", MADE),
            ("BeyondTrust Software, Inc.", MADE),
        ],
        [("BeyondTrust Inc", "none of the three phrases")],
    ),
    "rmm_ConnectWise_filesig.yaml": (
        [
            ("ConnectWise, LLC", f"{LOLRMM} connectwise_control"),
            ("ConnectWise, Inc.", f"{LOLRMM} connectwise_control"),
            ("Continuum Managed Services LLC", MADE),
            ("ScreenConnect Software", MADE),
        ],
        [
            ("Continuum Software", "only the first term of 'CONTINUUM MANAGED'"),
            ("Screen Connect Ltd", "two terms, not the term 'ScreenConnect'"),
        ],
    ),
    "rmm_DameWare_filesig.yaml": (
        [("DameWare Development, LLC", MADE)],
        [("DameWare Developments", "'Developments' is not the term 'Development'")],
    ),
    "rmm_DattoRMM_filesig.yaml": (
        [("Datto Inc", MADE), ("Datto Inc.", MADE)],
        [("Datto Incorporated", "'Incorporated' is not the term 'Inc'")],
    ),
    "rmm_DesktopNow_filesig.yaml": (
        [("NCH Software", MADE), ("NCH Software Pty Ltd", MADE)],
        [("NCH Softworks", "'Softworks' is not the term 'Software'")],
    ),
    "rmm_DistantDesktop_filesig.yaml": (
        [("German Gorodokuplya", MADE)],
        [("Gorodokuplya German", "the phrase's terms in the other order")],
    ),
    "rmm_FleetDeck_filesig.yaml": (
        [("FleetDeck Inc", f"{LOLRMM} fleetdeck"), ("FLEETDECK INC.", f"{LOLRMM} fleetdeck")],
        [("Fleet Deck Inc", "two terms, not the term 'FleetDeck'")],
    ),
    "rmm_GetScreen_filesig.yaml": (
        [
            ("POINT B LTD", "LOLRMM getscreen (PEMetadata: current binaries signed POINT B LTD)"),
            ("Point B Ltd.", MADE),
        ],
        [("Point Blank Ltd", "'Blank' is not the term 'B'")],
    ),
    "rmm_ISLOnline_filesig.yaml": (
        [("ISL Online Ltd.", f"{LOLRMM} islonline"), ("XLAB d.o.o.", MADE)],
        [("Online ISL Ltd", "the phrase's terms in the other order")],
    ),
    "rmm_IperiusRemote_filesig.yaml": (
        [("ENTER S.R.L.", f"{LOLRMM} iperius_remote"), ("Enter Srl", MADE)],
        [
            ("Enterprise Srl", "'Enterprise' is not the term 'Enter'"),
            ("Center Srl", "the needle's first term glued to letters in front"),
        ],
    ),
    "rmm_Kaseya_filesig.yaml": (
        [("Kaseya Holdings Inc.", f"{LOLRMM} pulseway"), ("Kaseya US LLC", MADE)],
        [("Kaseyan Ltd", "the needle is the start of a longer term")],
    ),
    "rmm_Level_filesig.yaml": (
        [("Level Software, Inc.", f"{LOLRMM} level")],
        [("Level Software, Incorporated", "'Incorporated' is not the term 'Inc'")],
    ),
    "rmm_LiteManager_filesig.yaml": (
        [("Yakhnovets Denis Aleksandrovich IP", MADE)],
        [("Yakhnovets Denis Aleksandrovich", "the phrase's last term missing")],
    ),
    "rmm_LogMeIn_filesig.yaml": (
        [("LogMeIn, Inc.", f"{LOLRMM} logmein_rescue"), ("GoTo, Inc.", MADE)],
        [("GoToMeeting, Inc.", "'GoToMeeting' is not the term 'GoTo'")],
    ),
    "rmm_MSP360_CloudBerry_filesig.yaml": (
        [
            ("MSPBytes Corp", f"{LOLRMM} msp360"),
            ("MSPBytes, Corp.", f"{LOLRMM} msp360"),
            ("Trichilia Consultants Ltd", MADE),
        ],
        [("MSP Bytes Corp", "two terms, not the term 'MSPBytes'")],
    ),
    "rmm_MeshCentral_filesig.yaml": (
        [("MeshCentral", MADE), ("MeshCentral Root Certificate", MADE)],
        [("Mesh Central", "two terms, not the term 'MeshCentral'")],
    ),
    "rmm_NAble_filesig.yaml": (
        [
            ("N-ABLE TECHNOLOGIES LTD", f"{LOLRMM} n-able_advanced_monitoring_agent"),
            ("LogicNow Ltd", MADE),
        ],
        [("N-Able Technology", "'Technology' is not the term 'Technologies'")],
    ),
    "rmm_Naverisk_filesig.yaml": (
        [("Naverisk Limited", MADE), ("NavMK1 Limited", MADE)],
        [("NavMK2 Limited", "another term")],
    ),
    "rmm_NetSupport_filesig.yaml": (
        [
            ("NetSupport Ltd", f"{LOLRMM} netsupport_manager"),
            ("NETSUPPORT LTD.", f"{LOLRMM} netsupport_manager"),
        ],
        [("Net Support Ltd", "two terms, not the term 'NetSupport'")],
    ),
    "rmm_NinjaRMM_filesig.yaml": (
        [("NinjaRMM LLC", MADE)],
        [("Ninja RMM LLC", "two terms, not the term 'NinjaRMM'")],
    ),
    "rmm_OptiTune_filesig.yaml": (
        [("Bravura Software LLC", MADE)],
        [("Bravura Software", "the phrase's last term missing")],
    ),
    "rmm_PDQ_filesig.yaml": (
        [("PDQ.com Corporation", f"{LOLRMM} pdq_connect")],
        [
            ("PDQ.community Ltd", "'community' is not the term 'com'"),
            ("PDQ Corporation", "the needle 'PDQ.com' is one phrase"),
        ],
    ),
    "rmm_Panorama9_filesig.yaml": (
        [("Panorama9 Inc", MADE)],
        [("Panorama Software", "'Panorama' is not the term 'Panorama9'")],
    ),
    "rmm_PcVisit_filesig.yaml": (
        [("pcvisit software ag", f"{LOLRMM} pcvisit")],
        [("pcvisit software agency", "'agency' is not the term 'ag'")],
    ),
    "rmm_Pulseway_filesig.yaml": (
        [("MMSoft Design Ltd.", MADE)],
        [("MMSoft Designs Ltd", "'Designs' is not the term 'Design'")],
    ),
    "rmm_RAdmin_filesig.yaml": (
        [("Famatech Corp.", f"{LOLRMM} radmin")],
        [("Fama Tech Corp", "two terms, not the term 'famatech'")],
    ),
    "rmm_RealVNC_filesig.yaml": (
        [("RealVNC Ltd", f"{LOLRMM} ultra_vnc (bundled)"), ("REALVNC LIMITED", MADE)],
        [("Real VNC Ltd", "two terms, not the term 'realvnc'")],
    ),
    "rmm_RemotePC_filesig.yaml": (
        [("IDrive, Inc.", f"{LOLRMM} remotepc"), ("IDrive Inc.", MADE)],
        [("iDriver Ltd", "the needle is the start of a longer term")],
    ),
    "rmm_RemoteUtilities_filesig.yaml": (
        [("REMOTE UTILITIES PTE. LTD.", f"{LOLRMM} remote_utilities"), ("Remote Utilities", MADE)],
        [("Remote Utility Ltd", "'Utility' is not the term 'Utilities'")],
    ),
    "rmm_ScreenMeet_filesig.yaml": (
        [("Projector.is, Inc.", MADE)],
        [("Projector Inc.", "the needle 'Projector.is, Inc.' is one phrase")],
    ),
    "rmm_ServerEye_filesig.yaml": (
        [("Krämer IT Solutions GmbH", MADE)],
        [
            ("KRÄMER IT SOLUTIONS GMBH", "has folds ASCII letters only: Ä is not ä"),
            ("Kramer IT Solutions GmbH", "a is not ä"),
        ],
    ),
    "rmm_ShowMyPC_filesig.yaml": (
        [("ShowMyPC INC", f"{LOLRMM} showmypc")],
        [("Show My PC Inc", "three terms, not the term 'ShowMyPC'")],
    ),
    "rmm_SimpleHelp_filesig.yaml": (
        [("SimpleHelp Ltd", f"{LOLRMM} simplehelp")],
        [("Simple Help Ltd", "two terms, not the term 'SimpleHelp'")],
    ),
    "rmm_Splashtop_filesig.yaml": (
        [("Splashtop Inc.", f"{LOLRMM} splashtop")],
        [("Splash Top Inc.", "two terms, not the term 'Splashtop'")],
    ),
    "rmm_SupRemo_filesig.yaml": (
        [("Nanosystems S.r.l.", f"{LOLRMM} supremo"), ("NANOSYSTEMS S.R.L.", MADE)],
        [("Nano Systems S.r.l.", "two terms, not the term 'Nanosystems'")],
    ),
    "rmm_SyncroMSP_filesig.yaml": (
        [("Servably, Inc.", MADE)],
        [("Servably, Incorporated", "'Incorporated' is not the term 'Inc'")],
    ),
    "rmm_TacticalRMM_filesig.yaml": (
        [("AmidaWare Inc.", MADE), ("Tactical Techs LLC", MADE)],
        [("Tactical Technologies LLC", "'Technologies' is not the term 'Techs'")],
    ),
    "rmm_TeamViewer_filesig.yaml": (
        [
            ("TeamViewer Germany GmbH", f"{LOLRMM} teamviewer"),
            ("TeamViewer GmbH", f"{LOLRMM} teamviewer"),
        ],
        [("Team Viewer GmbH", "two terms, not the term 'TeamViewer'")],
    ),
    "rmm_TightVNC_filesig.yaml": (
        [("GlavSoft LLC", MADE)],
        [("Glav Soft LLC", "two terms, not the term 'glavsoft'")],
    ),
    "rmm_UltraViewer_filesig.yaml": (
        [("DUC FABULOUS CO.,LTD", f"{LOLRMM} ultraviewer")],
        [("Duc Fabulo Co.", "'Fabulo' is not the term 'Fabulous'")],
    ),
    "rmm_XMReality_filesig.yaml": (
        [("XMReality AB", MADE)],
        [("XM Reality AB", "two terms, not the term 'XMReality'")],
    ),
    "rmm_ZohoAssist_filesig.yaml": (
        [("ZOHO Corporation Private Limited", f"{LOLRMM} zohoassist")],
        [("Zohocorp Ltd", "the needle is the start of a longer term")],
    ),
    "rmm_parsec.app_filesig.yaml": (
        [("Parsec Cloud, Inc.", MADE)],
        [("Parsec Clouds Inc", "'Clouds' is not the term 'Cloud'")],
    ),
}

THUMBPRINT = "4a13f46def2c9427898a46a88a6a2122ed106b37"  # DWSNET srl, Sectigo R36
SERIAL = "00afbdd3beb24e1de73782e9f8347cf153"
SAMPLE_OU = {  # samples/pe/dwsnet-ou.exe (test PKI), as the manifest reads it
    "Signer": "DWSNET OÜ",
    "Issuer": "rmmscan Test Code Signing CA",
    "SignerHash": "5da663ece3a8a5a29810b4f8fc98c85cc137090a",
    "CertificateSerialNumber": "008a3f5c2e9b1d4f6071a8c3e5d7f90b12",
}

HAND_WRITTEN: dict[str, tuple[list, list]] = {
    "rmm_DWService_filesig.yaml": (
        [
            ("DWSNET OÜ", "the upstream needle (the Estonian entity)"),
            ("DWSNET srl", "LOLRMM dw_service: the current certificate"),
            ("dwsnet SRL", "has folds ASCII letters"),
            ("DWSNET OÜ, Tallinn", "the phrase followed by punctuation"),
            (dict(SAMPLE_OU), "samples/pe/dwsnet-ou.exe"),
            ({"Signer": "Acme", "SignerHash": THUMBPRINT}, "the certificate's thumbprint alone"),
            ({"SignerHash": THUMBPRINT.upper()}, "thumbprint in upper case (=~)"),
            ({"CertificateSerialNumber": SERIAL}, "serial with the DER sign byte, as rmmscan"),
            ({"CertificateSerialNumber": SERIAL[2:]}, "serial without it, as openssl prints"),
            ({"CertificateSerialNumber": SERIAL[2:].upper()}, "serial in upper case (in~)"),
        ],
        [
            ("DWSNET OU", "U is not Ü (a lookalike the untrusted rule catches)"),
            ("DWSNET oü", "has folds ASCII letters only: ü is not Ü"),
            ("DWSNET OU\u0308", "Ü decomposed (NFD): rows are NFC, the rule's literal too"),
            ("DWSNETsrl", "one term, not the phrase 'DWSNET srl'"),
            ("XDWSNET srl", "the needle glued to a letter in front"),
            ("DWSNET srls", "the needle glued to a letter behind"),
            ("DWSNET", "only the first term of both phrases"),
            ({"Signer": "Sectigo Limited", "Issuer": "DWSNET srl"}, "the name as the issuer"),
            ({"SignerHash": THUMBPRINT[:-1] + "8"}, "another thumbprint (last digit)"),
            ({"SignerHash": THUMBPRINT[:-2]}, "a prefix of the thumbprint: == is whole"),
            ({"CertificateSerialNumber": SERIAL[:-2]}, "a prefix of the serial"),
            ({"CertificateSerialNumber": "00" + SERIAL}, "the serial with an extra 00"),
            ({"IssuerHash": THUMBPRINT}, "the thumbprint as the issuer's"),
        ],
    ),
    "rmmscan_DWService_untrusted_filesig.yaml": (
        [
            (
                {"Signer": "DWSNET OÜ", "IsTrusted": False, "VerificationStatus": "UntrustedRoot"},
                "samples/pe/selfsigned-dwsnet-ou.exe: a self-signed fake",
            ),
            (
                {"Signer": "DWSNET OÜ", "IsTrusted": False, "VerificationStatus": "InvalidDigest"},
                "samples/pe/modified-after-signing.exe",
            ),
            (
                {"Signer": "DWSNET srl", "IsTrusted": False, "VerificationStatus": "Expired"},
                "expired without a timestamp",
            ),
            ({"Signer": "DWSNET OU", "IsTrusted": True}, "a trusted lookalike name (U for Ü)"),
            ({"Signer": "dwsnet srl", "IsTrusted": True}, "in is case-sensitive: not the name"),
            ({"Signer": "DWSNET S.r.l.", "IsTrusted": True}, "another spelling, not the name"),
            ({"Signer": "DWSNET OÜ Ltd", "IsTrusted": True}, "the name inside a longer one"),
            (
                {"Signer": "DWSNET srl", "IsSigned": True},
                "IsTrusted null: Kusto's and takes null as false, so not(...) is true",
            ),
        ],
        [
            ({"Signer": "DWSNET OÜ", "IsTrusted": True}, "samples/pe/dwsnet-ou.exe: intact"),
            ({"Signer": "DWSNET srl", "IsTrusted": True}, "samples/pe/dwsnet-srl.exe: intact"),
            ({"Signer": "DWSNETWORKS Inc", "IsTrusted": False}, "'DWSNETWORKS' is not the term"),
            ({"Signer": "Contoso Tools Ltd", "IsTrusted": False}, "another signer"),
            ({"Issuer": "DWSNET srl", "IsTrusted": False}, "the name as the issuer"),
            ({"IsSigned": False, "IsTrusted": False}, "an unsigned file"),
        ],
    ),
    "rmmscan_DWService_lookalike_filesig.yaml": (
        [
            ({"FileName": "dwagent.exe", "IsSigned": False}, "unsigned agent"),
            ({"FileName": "DWAGSVC.EXE", "IsSigned": False}, "in~ ignores case"),
            (
                {"FileName": "dwaglnc.exe", "Signer": "DWSNET OÜ", "IsTrusted": False},
                "selfsigned-dwsnet-ou.exe renamed: DWSNET's name, untrusted",
            ),
            (
                {"FileName": "dwagupd.dll", "Signer": "Contoso Tools Ltd", "IsTrusted": True},
                "re-signed by someone else",
            ),
            (
                {"FileName": "dwagent.exe", "Signer": "DWSNET OU", "IsTrusted": True},
                "a trusted lookalike signer",
            ),
            (
                {"FileName": "svchost.exe", "VersionInfoOriginalFileName": "dwagent.exe"},
                "renamed, unsigned: the version information gives it away",
            ),
            (
                {"FileName": "update.exe", "VersionInfoInternalFileName": "dwagsvc"},
                "InternalName without the extension",
            ),
            (
                {
                    "FileName": "x.exe",
                    "VersionInfoCompanyName": "DWSNET srl",
                    "IsTrusted": False,
                    "Signer": "DWSNET srl",
                    "VerificationStatus": "InvalidDigest",
                },
                "modified after signing",
            ),
            ({"VersionInfoProductName": "DWAgent"}, "ProductName"),
            ({"VersionInfoFileDescription": "DWService Agent Launcher"}, "FileDescription"),
            (
                {"FileName": "dwagent.exe", "Signer": "DWSNET srl"},
                "IsTrusted null: Kusto's and takes null as false, so not(...) is true",
            ),
        ],
        [
            (
                {"FileName": "dwagent.exe", "Signer": "DWSNET srl", "IsTrusted": True},
                "the real agent",
            ),
            (
                {
                    "FileName": "dwagsvc.exe",
                    "Signer": "DWSNET OÜ",
                    "IsTrusted": True,
                    "VersionInfoCompanyName": "DWSNET OÜ",
                },
                "the real service, older signer",
            ),
            (
                {"FileName": "dwservice.exe", "Signer": "Doctor Web Ltd.", "IsTrusted": True},
                "Dr.Web's dwservice.exe is not a DWService file name",
            ),
            ({"FileName": "mydwagent.exe"}, "in~ compares whole names"),
            ({"FileName": "dwagent.exe.bak"}, "in~ compares whole names"),
            ({"VersionInfoProductName": "DW Agent"}, "two terms, not the term 'DWAgent'"),
            ({"VersionInfoFileDescription": "DWServiceBus host"}, "'DWServiceBus' is one term"),
            ({"VersionInfoCompanyName": "DWSNETWORKS Inc"}, "'DWSNETWORKS' is one term"),
            ({"FolderPath": "C:\\Program Files\\DWAgent\\runtime\\python.exe"}, "path only"),
            (
                {"FileName": "notepad.exe", "Signer": "Microsoft Windows", "IsTrusted": True},
                "a common signer",
            ),
        ],
    ),
}

# Rows every Signer rule gets, derived from its needles.
COMMON_SIGNERS = ("Microsoft Corporation", "Microsoft Windows")


def needles(rule_file: str) -> list[str]:
    """The string literals of the query's Signer predicate."""
    text = (RULES / rule_file).read_text("utf-8")
    m = re.search(r"\| where Signer\s+has(?:_any)?\s*\(?(.*?)\)?\n\s*\| summarize", text, re.S)
    if m is None:
        raise SystemExit(f"{rule_file}: no 'where Signer has' predicate to derive rows from")
    return re.findall(r"'([^']*)'", m.group(1))


def derived(rule_file: str) -> tuple[list, list]:
    positive, negative = [], []
    found = needles(rule_file)
    for needle in found:
        if needle.isascii() and needle.upper() != needle:  # has folds ASCII letters only
            positive.append((needle.upper(), f"the needle {needle!r} upper-cased"))
        if needle.isascii() and needle.lower() != needle:
            positive.append((needle.lower(), f"the needle {needle!r} lower-cased"))
        if needle[0].isalnum():
            negative.append(("Q" + needle, f"the needle {needle!r} glued to a letter in front"))
        if needle[-1].isalnum():
            negative.append((needle + "x", f"the needle {needle!r} glued to a letter behind"))
        first = re.split(r"[^\w]+", needle)[0]
        if first != needle and not any(first.lower() == n.lower() for n in found):
            negative.append((first, f"only the first term of {needle!r}"))
    negative.append(({"Signer": "Contoso Ltd", "Issuer": found[0]}, "the needle as the issuer"))
    negative += [(s, "a common signer") for s in COMMON_SIGNERS]
    negative.append(({"IsSigned": False}, "an unsigned file"))
    return _unique(positive), _unique(negative)


def _unique(rows: list) -> list:
    seen, out = set(), []
    for values, reason in rows:
        key = json.dumps(values, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((values, reason))
    return out


def rows_of(rule_file: str) -> tuple[list, list]:
    if rule_file in HAND_WRITTEN:
        return HAND_WRITTEN[rule_file]
    positive, negative = SIGNER_RULES[rule_file]
    more_positive, more_negative = derived(rule_file)
    return positive + more_positive, negative + more_negative


def render(rule_file: str) -> str:
    positive, negative = rows_of(rule_file)
    out = [
        f"# Test rows of {rule_file}: it must match every positive row and no negative one.\n",
        "# Written by generate_rows.py: edit that script, not this file.\n",
    ]
    for kind, rows in (("positive", positive), ("negative", negative)):
        out.append(f"{kind}:\n")
        for values, reason in rows:
            if isinstance(values, str):
                values = {"Signer": values}
            out.append(f"  # {reason}\n")
            for i, (column, value) in enumerate(values.items()):
                lead = "  - " if i == 0 else "    "
                out.append(f"{lead}{column}: {scalar(value)}\n")
    return "".join(out)


def scalar(value) -> str:
    """A YAML scalar (JSON is YAML); combining marks escaped so that they stay visible."""
    text = json.dumps(value, ensure_ascii=False)
    return "".join(f"\\u{ord(c):04x}" if unicodedata.combining(c) else c for c in text)


def rule_files() -> list[str]:
    return sorted(p.name for p in RULES.glob("*.yaml"))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    unknown = sorted((set(SIGNER_RULES) | set(HAND_WRITTEN)) ^ set(rule_files()))
    if unknown:
        print(f"rules and rows disagree: {', '.join(unknown)}", file=sys.stderr)
        return 1
    stale = []
    for name in rule_files():
        text, path = render(name), HERE / name
        if path.exists() and path.read_text("utf-8") == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text, "utf-8", newline="\n")
    for name in stale:
        print(f"{'differs' if check else 'wrote'}: rules/tests/{name}", file=sys.stderr)
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
