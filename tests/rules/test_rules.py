"""The rule pack in rules/: its files against upstream, its test rows, its rules on real files.

The upstream comparison reads rules/upstream/ (the upstream files byte for byte) leniently and
allows no difference but the ones rules/README.md documents.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import unicodedata

import pytest
import yaml

from rmmscan.engine.engine import Engine
from rmmscan.engine.options import Options
from rmmscan.inspect.certificates import cert_info
from rmmscan.rules.memo import RuleSet
from rmmscan.rules.pack import load_pack
from rmmscan.rules.testrows import run_tests
from rmmscan.sources.device import Device
from rmmscan.sources.localfile import NamedFile

from conftest import PE_DIR, ROOT, TEST_ROOT

RULES = ROOT / "rules"
UPSTREAM = RULES / "upstream"
DWSERVICE = "642b39b7-18eb-46eb-ba1f-bf70befae05e"
UNTRUSTED = "dfcd614b-1291-4565-a0eb-55153f9ed4c0"
LOOKALIKE = "b20699d4-c5d9-49e1-8332-b9ce00292b91"
OURS = {UNTRUSTED: "rmmscan_DWService_untrusted_filesig.yaml",
        LOOKALIKE: "rmmscan_DWService_lookalike_filesig.yaml"}  # fmt: skip
KEPT = ("id", "name", "description", "tactics", "relevantTechniques", "query")

# The documented differences (rules/README.md).
BAD_CONNECTORS = (
    "requiredDataConnectors:\n    - connectorId: MicrosoftThreatProtection\n"
    "    dataTypes:\n        - DeviceFileCertificateInfo\n"
)
SENTINEL_CONNECTORS = (
    "requiredDataConnectors:\n  - connectorId: MicrosoftThreatProtection\n"
    "    dataTypes:\n      - DeviceFileCertificateInfo\n"
)
DWS_UPSTREAM = "  | where Signer has 'DWSNET OÜ'\n"
DWS_OURS = (
    "  | where Signer has_any ('DWSNET OÜ', 'DWSNET srl')\n"
    "      or SignerHash =~ '4a13f46def2c9427898a46a88a6a2122ed106b37'\n"
    "      or CertificateSerialNumber in~ ('00afbdd3beb24e1de73782e9f8347cf153', "
    "'afbdd3beb24e1de73782e9f8347cf153')\n"
)
DWS_COMMENT = re.compile(r"(?m)^# rmmscan: .*\n(?:# .*\n)*(?=query: \|\n)")


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def upstream_files() -> list[str]:
    return sorted(p.name for p in UPSTREAM.glob("rmm_*.yaml"))


def lenient(text: str) -> dict:
    """Top-level keys of a hunting query without a YAML parser: `key: value` lines, and
    `key: |` blocks (the indented lines below, dedented). Indentation errors do not matter."""
    text = text.replace("\r\n", "\n")
    out: dict = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"([A-Za-z]\w*):\s?(.*)$", lines[i])
        i += 1
        if m is None:
            continue
        key, value = m.groups()
        if value != "|":
            out[key] = value
            continue
        block = []
        while i < len(lines) and (lines[i].startswith(" ") or not lines[i]):
            block.append(lines[i])
            i += 1
        while block and not block[-1]:
            block.pop()
        indent = min(len(b) - len(b.lstrip(" ")) for b in block if b.strip())
        out[key] = "\n".join(b[indent:] for b in block) + "\n"
    return out


# --- The files against upstream ---------------------------------------------------------------


def test_pack_is_the_52_upstream_queries_and_ours(pack):
    names = sorted(r.filename for r in pack)
    assert len(upstream_files()) == 52
    assert names == sorted([*upstream_files(), *OURS.values()])
    assert {r.id: r.filename for r in pack if r.id in OURS} == OURS
    assert (UPSTREAM / "sentinel_rmm_template_filesig.yaml").is_file()
    assert not (RULES / "sentinel_rmm_template_filesig.yaml").exists()
    readme = (RULES / "README.md").read_text("utf-8")
    assert "sentinel_rmm_template_filesig.yaml" in readme and "not a rule" in readme


def test_upstream_files_are_not_valid_yaml():
    """Why our files differ in indentation: no YAML parser reads the upstream ones."""
    for name in upstream_files():
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load((UPSTREAM / name).read_bytes().decode("utf-8"))


@pytest.mark.parametrize("name", upstream_files())
def test_rule_file_is_upstream_but_for_documented_differences(name):
    upstream = (UPSTREAM / name).read_bytes().decode("utf-8")
    ours = (RULES / name).read_bytes().decode("utf-8")
    assert "\r\n" in upstream and "\r" not in ours
    expected = upstream.replace("\r\n", "\n")
    assert expected.count(BAD_CONNECTORS) == 1
    expected = expected.replace(BAD_CONNECTORS, SENTINEL_CONNECTORS)
    if name == "rmm_DWService_filesig.yaml":
        assert expected.count(DWS_UPSTREAM) == 1
        expected = expected.replace(DWS_UPSTREAM, DWS_OURS)
        ours = DWS_COMMENT.sub("", ours, count=1)
    assert ours == expected
    # And parsed: the kept keys are upstream's, read leniently.
    theirs, mine = lenient(upstream), yaml.safe_load(ours)
    for key in KEPT:
        want = theirs[key]
        if name == "rmm_DWService_filesig.yaml" and key == "query":
            want = want.replace(DWS_UPSTREAM[2:], DWS_OURS.replace("\n  ", "\n")[2:])
        assert mine[key] == want, key
    assert mine["requiredDataConnectors"] == [
        {"connectorId": "MicrosoftThreatProtection", "dataTypes": ["DeviceFileCertificateInfo"]}
    ]


def test_license_and_source_kept():
    notice = (RULES / "LICENSE-sentinel-rmm-filesig").read_text("utf-8")
    assert notice.startswith("MIT License") and "Copyright (c) 2023 J Schell" in notice
    commit = (UPSTREAM / "SOURCE_COMMIT").read_text("utf-8").split()[0]
    readme = (RULES / "README.md").read_text("utf-8")
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and commit in readme
    assert "jischell-msft/RemoteManagementMonitoringTools" in readme


def test_rule_files_are_utf8_nfc_lf():
    for path in [*RULES.glob("*.yaml"), *(RULES / "tests").glob("*.yaml")]:
        text = path.read_bytes().decode("utf-8")
        assert "\r" not in text and text.endswith("\n"), path.name
        if path.parent == RULES:  # test rows may hold NFD on purpose (escaped)
            assert unicodedata.normalize("NFC", text) == text, path.name


# --- Test rows --------------------------------------------------------------------------------


def test_every_rule_passes_its_rows(pack):
    report = run_tests(pack)
    assert report.problems == ()
    assert [str(f) for f in report.failures] == []
    for rule in pack:
        kinds = [r.row.kind for r in report.results if r.rule is rule]
        assert "positive" in kinds and "negative" in kinds, rule.filename
    assert len(report.results) > 600


def test_rows_are_the_generator_output():
    spec = importlib.util.spec_from_file_location("generate_rows", RULES / "tests/generate_rows.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    names = sorted(p.name for p in RULES.glob("*.yaml"))
    assert sorted(p.name for p in (RULES / "tests").glob("*.yaml")) == names
    for name in names:
        assert (RULES / "tests" / name).read_text("utf-8") == gen.render(name), name


# Signers of software found on most machines: no rule may match them.
COMMON_SIGNERS = (
    "Microsoft Corporation", "Microsoft Windows", "Microsoft Windows Publisher",
    "Microsoft Windows Hardware Compatibility Publisher", "Google LLC", "Mozilla Corporation",
    "Adobe Inc.", "Apple Inc.", "Intel Corporation", "NVIDIA Corporation",
    "Advanced Micro Devices, Inc.", "Oracle America, Inc.", "Python Software Foundation",
    "Zoom Video Communications, Inc.", "Cisco Systems, Inc.", "VMware, Inc.",
    "Citrix Systems, Inc.", "Dell Inc", "HP Inc.", "Lenovo", "Realtek Semiconductor Corp.",
    "Logitech Inc", "Valve Corp.", "Dropbox, Inc", "Slack Technologies, LLC", "Docker Inc",
    "GitHub, Inc.", "JetBrains s.r.o.", "win.rar GmbH", "OpenJS Foundation", "Sophos Ltd",
    "CrowdStrike, Inc.", "Kaspersky Lab JSC", "ESET, spol. s r.o.", "Doctor Web Ltd.",
    "SolarWinds Worldwide, LLC", "Symantec Corporation", "Amazon.com Services LLC",
    "Brave Software, Inc.", "Opera Norway AS", "Spotify AB", "Discord Inc.",
    "Tencent Technology (Shenzhen) Company Limited", "Martin Prikryl", "Simon Tatham",
    "Bitvise Limited", "OpenVPN Inc.", "WireGuard LLC", "Wireshark Foundation",
    "Notepad++", "Igor Pavlov", "Node.js Foundation", "The Document Foundation",
    "Sectigo Public Code Signing CA R36",
    "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1",
)  # fmt: skip
# Signers of software that is not (only) remote management which upstream rules match by
# design of their needle (reported in rules/README.md, not changed): signer → rule file.
BROAD = {
    "ZOHO Corporation Private Limited": "rmm_ZohoAssist_filesig.yaml",  # ManageEngine, ...
    "NCH Software": "rmm_DesktopNow_filesig.yaml",  # WavePad, VideoPad, Express Scribe, ...
    "IDrive Inc.": "rmm_RemotePC_filesig.yaml",  # IDrive backup
    "Barracuda Networks, Inc.": "rmm_BarracudaRMM_filesig.yaml",  # backup, VPN clients
    "AOMEI International Network Limited": "rmm_AnyViewer_filesig.yaml",  # Backupper
    "ConnectWise, LLC": "rmm_ConnectWise_filesig.yaml",  # PSA, Automate, ...
    "Kaseya Holdings Inc.": "rmm_Kaseya_filesig.yaml",  # every Kaseya product
}


def row_getter(values: dict):
    from rmmscan.rows.columns import QUERYABLE

    return lambda c: values.get(c, "" if QUERYABLE[c] == "string" else None)


@pytest.mark.parametrize("signer", COMMON_SIGNERS)
def test_common_signer_matches_no_rule(pack, signer):
    for trusted in (True, False):
        row = {"Signer": signer, "Issuer": signer, "IsSigned": True, "IsTrusted": trusted,
               "FileName": "setup.exe", "VersionInfoCompanyName": signer}  # fmt: skip
        assert [r.filename for r in RuleSet(pack.rules).matching(row_getter(row))] == []


@pytest.mark.parametrize("signer", sorted(BROAD))
def test_broad_needles_as_documented(pack, signer):
    row = {"Signer": signer, "IsSigned": True, "IsTrusted": True}
    matched = RuleSet(pack.rules).matching(row_getter(row))
    assert [r.filename for r in matched] == [BROAD[signer]]


# --- The DWService certificate ----------------------------------------------------------------


def test_dwservice_rule_matches_the_real_certificate(pack):
    """The thumbprint and serial in the rule are those of the public DWSNET srl certificate,
    as rmmscan reads them and as openssl prints them."""
    der = (RULES / "certificates/dwsnet-srl-sectigo-r36.der").read_bytes()
    info = cert_info(der)
    assert (info.cn, info.issuer_cn) == ("DWSNET srl", "Sectigo Public Code Signing CA R36")
    rule = pack.by_id(DWSERVICE)
    assert f"'{info.sha1}'" in rule.query_text
    assert info.serial_hex.startswith("00") and f"'{info.serial_hex}'" in rule.query_text
    printed = subprocess.run(
        ["openssl", "x509", "-inform", "der", "-noout", "-serial", "-fingerprint", "-sha1"],
        input=der, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    serial = re.search(r"serial=([0-9A-F]+)", printed).group(1)
    thumb = re.search(r"Fingerprint=([0-9A-F:]+)", printed).group(1).replace(":", "")
    assert serial.lower() == info.serial_hex[2:] and thumb.lower() == info.sha1
    rows = [
        {"Signer": info.cn, "SignerHash": info.sha1, "CertificateSerialNumber": info.serial_hex},
        {"Signer": "renamed", "SignerHash": info.sha1},
        {"Signer": "renamed", "CertificateSerialNumber": info.serial_hex},
        {"Signer": "renamed", "CertificateSerialNumber": serial},  # openssl's form
        {"Signer": "renamed", "SignerHash": thumb},  # upper case
    ]
    for row in rows:
        assert rule.matches(row_getter(row)), row
    assert not rule.matches(row_getter({"Signer": "renamed", "SignerHash": info.sha1[::-1]}))


# --- The pack on real files -------------------------------------------------------------------

DEVICE = Device("0" * 40, "test.example")
# The engine with no rules: every row of a file, complete, as the sweep and inspect make them.
ENGINE = Engine(
    Options(no_rules=True, emit="all", trusted_roots=(TEST_ROOT,), system_roots=False,
            cache=False),
    warn=print,
)  # fmt: skip
ENGINE.device = DEVICE


def file_rows(path) -> list[dict]:
    outcome = ENGINE.judge_file(NamedFile(path, "sweep"))
    assert not outcome.problems, outcome.problems
    return outcome.rows


DW_NAMES = ("dwagent.exe", "dwagsvc.exe", "dwaglnc.exe", "dwagupd.dll")


def terms(text: str | None) -> set[str]:
    return set(re.findall(r"[^\W_]+", (text or "").lower()))


def expected_ids(signature: dict | None, filename: str, version: dict) -> set[str]:
    """What the DWService rules should say, from the manifest, in plain Python."""
    signer = (signature or {}).get("Signer") or ""
    trusted_dwsnet = signer in ("DWSNET OÜ", "DWSNET srl") and bool(signature["IsTrusted"])
    ids = set()
    if signer in ("DWSNET OÜ", "DWSNET srl"):
        ids.add(DWSERVICE)
    if "DWSNET" in signer.split() and not trusted_dwsnet:
        ids.add(UNTRUSTED)
    looks = (
        filename.lower() in DW_NAMES
        or (version.get("OriginalFilename") or "").lower() in DW_NAMES
        or (version.get("InternalName") or "").lower() in {*DW_NAMES, *(n[:-4] for n in DW_NAMES)}
        or "dwsnet" in terms(version.get("CompanyName"))
        or bool({"dwagent", "dwservice"} & terms(version.get("ProductName")))
        or bool({"dwagent", "dwservice"} & terms(version.get("FileDescription")))
    )
    if looks and not trusted_dwsnet:
        ids.add(LOOKALIKE)
    return ids


def sample_cases():
    manifest = json.loads((PE_DIR.parent / "manifest.json").read_text("utf-8"))
    return sorted((n, f) for n, f in manifest["files"].items() if f["is_pe"])


@pytest.mark.parametrize(("name", "expected"), sample_cases(), ids=[n for n, _ in sample_cases()])
def test_pack_on_sample(pack, name, expected):
    rows = file_rows(PE_DIR / name)
    signatures = expected["signatures"] or [None]
    assert len(rows) == len(signatures)
    for row, signature in zip(rows, signatures, strict=True):
        got = {r.id for r in RuleSet(pack.rules).matching(row_getter(row))}
        assert got == expected_ids(signature, name, expected["version"]), row["Signer"]


RENAMED = (
    ("selfsigned-dwsnet-ou.exe", "dwagent.exe"),
    ("modified-after-signing.exe", "DWAGSVC.EXE"),
    ("unsigned.exe", "dwaglnc.exe"),
    ("benign.exe", "dwagupd.dll"),
    ("dwsnet-srl.exe", "dwagent.exe"),
    ("dwsnet-ou.exe", "dwagsvc.exe"),
    ("leaf-only.exe", "dwagent.exe"),
    ("nested-sha1-sha256.exe", "dwagent.exe"),
)


@pytest.mark.parametrize(("sample", "as_name"), RENAMED)
def test_pack_on_renamed_sample(pack, manifest, tmp_path, sample, as_name):
    """A DWService file name without an intact, trusted DWSNET signature is a finding; with
    one (the real agent) it is not. Nested signatures are rows of their own."""
    target = tmp_path / as_name
    shutil.copyfile(PE_DIR / sample, target)
    rows = file_rows(target)
    signatures = manifest["files"][sample]["signatures"] or [None]
    version = manifest["files"][sample]["version"]
    assert [r["FileName"] for r in rows] == [as_name] * len(signatures)
    for row, signature in zip(rows, signatures, strict=True):
        got = {r.id for r in RuleSet(pack.rules).matching(row_getter(row))}
        assert got == expected_ids(signature, as_name, version), row["Signer"]
    lookalike = any(LOOKALIKE in expected_ids(s, as_name, version) for s in signatures)
    assert lookalike == (sample not in ("dwsnet-srl.exe", "dwsnet-ou.exe"))


def test_version_information_lookalikes(pack):
    """The samples that carry DWAgent's version information under another file name."""
    found = {
        name: [sorted(r.filename for r in RuleSet(pack.rules).matching(row_getter(row)))
               for row in file_rows(PE_DIR / name)]
        for name in ("dwagent-lookalike-unsigned.exe", "dwagent-lookalike-selfsigned.exe",
                     "dwagent-lookalike-srl.exe")
    }  # fmt: skip
    assert found == {
        "dwagent-lookalike-unsigned.exe": [["rmmscan_DWService_lookalike_filesig.yaml"]],
        "dwagent-lookalike-selfsigned.exe": [[
            "rmm_DWService_filesig.yaml", "rmmscan_DWService_lookalike_filesig.yaml",
            "rmmscan_DWService_untrusted_filesig.yaml",
        ]],
        "dwagent-lookalike-srl.exe": [["rmm_DWService_filesig.yaml"]],
    }  # fmt: skip
