"""A deterministic file-system corpus for the sweep benchmark (benchmarks/bench_sweep.py).

    .venv/bin/python benchmarks/make_corpus.py --out benchmarks/.work/corpus-100000 \\
        --files 100000 --seed 1

Writes ``OUT/C/``, a tree shaped like a Windows system drive (Windows/System32, WinSxS,
Program Files, ProgramData, user profiles with AppData and source repositories), and
``OUT/manifest.json``, which says what is where and which files a DWService hunt must find.

What the tree holds (shares of --files; the byte total is about 25 KB a file, ~2.4 GiB for
100,000 files):

- text (logs, ini, xml, json, scripts), binary with the magic of its extension (PNG, ZIP,
  PDF, SQLite, ...) but random bytes, zero-filled files, empty files;
- files starting with "MZ" that are not PE (DOS stubs pointing past the end, a broken "PE"
  signature, text that happens to start with MZ, samples/pe/not-a-pe.bin);
- a few percent PE: unsigned ones and ones with an unreadable certificate table, and signed
  ones (copies of samples/pe/* signed by the test PKI, Microsoft-signed DLLs from the
  msvc-runtime wheel and Debian's signed shim/GRUB EFI binaries, fetched as tests/realworld.py
  does), under other names and extensions: recognition must be by content;
- one large file per 20,000 files (50–300 MiB, real non-sparse data); the first is a
  DWSNET-signed installer (a PE with a large overlay, signed here with the test PKI);
- every sample whose signatures include a DWSNET signer, at known places (Program Files/DWAgent,
  a Temp folder, renamed in Downloads, nested in Windows/...): these are the expected
  detections listed in the manifest;
- two PEs under DWService's file names that DWSNET did not sign ("lookalikes" in the
  manifest: the rule pack's look-alike rule must flag them, a signer rule cannot);
- a few symbolic links (to files, and one dangling), never to a directory (no loops).

Same --files, --seed and samples: same names, contents and mtimes. The tree is written to a
temporary sibling and renamed into place; an existing OUT is replaced only if it holds a
manifest written by this script.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
REALWORLD = ROOT / "tests" / ".cache" / "realworld"
VERSION = 3  # bump when the layout or the contents change: the runner rebuilds on mismatch
DRIVE = "C"
KIB, MIB = 1024, 1024 * 1024
DWSNET_SIGNERS = ("DWSNET OÜ", "DWSNET srl")
MTIME_RANGE = (1_420_070_400, 1_735_689_600)  # 2015-01-01 .. 2025-01-01
SIGN_TIME = 1_741_000_000  # fixed signing time: the installer's signature is reproducible
FILES_PER_LARGE = 20_000
MAX_DEEP = 16  # folders below an area of the "deep" shape (node_modules nesting)

# The DWSNET-signed samples and where a DWService hunt would meet them. {user} is filled in.
DWSNET_PLACES = [
    ("dwsnet-srl.exe", "Program Files/DWAgent/runtime/dwagent.exe", "current signer, trusted"),
    ("dwsnet-ou.exe", "Program Files/DWAgent/native/dwagsvc.exe", "old signer, trusted"),
    ("dwsnet-ou-sha1.exe", "Program Files/DWAgent/native/dwaglnc.exe", "old signer, sha1"),
    ("nested-sha256-sha1.exe", "Program Files/DWAgent/native/dwagupd.dll",
     "DWSNET primary, Contoso nested"),
    ("selfsigned-dwsnet-ou.exe", "Users/{user}/AppData/Local/Temp/dwagent_x86_64.exe",
     "self-signed fake DWSNET OÜ (untrusted)"),
    ("modified-after-signing.exe", "Users/{user}/Downloads/Invoice_2024-11.pdf.exe",
     "modified after signing (InvalidDigest)"),
    ("bad-signature.exe", "Windows/Temp/svchost.exe", "RSA signature broken (BadSignature)"),
    ("nested-sha1-sha256.exe", "Users/Public/Libraries/update.dat",
     "DWSNET only in a nested signature, renamed .dat"),
    ("nested-depth3.exe", "Windows/System32/spool/drivers/color/printer.icm",
     "DWSNET OÜ and srl nested under a Contoso primary, renamed .icm"),
    ("notimestamp.exe", "ProgramData/DWAgent/dwagent.exe", "no timestamp"),
    ("pkcs9-countersigned.exe", "Users/{user}/AppData/Roaming/dwagent/dwagent.exe",
     "legacy PKCS#9 counter-signature"),
    ("slack-in-entry.exe", "ProgramData/Microsoft/Windows/Start Menu/Programs/DWAgent/x.exe",
     "junk inside the WIN_CERTIFICATE entry"),
    ("garbage-after-table.exe", "Users/{user}/Desktop/remote support.exe",
     "bytes after the certificate table (InvalidDigest)"),
    ("leaf-only.exe", "Users/{user}/AppData/Local/Programs/dwagent/dwagent.exe",
     "DWSNET srl, issuer certificate missing (UntrustedRoot)"),
    ("two-entries.exe", "Windows/Tasks/dwagupd.tmp",
     "two WIN_CERTIFICATE entries (DWSNET OÜ, then DWSNET srl)"),
    ("lying-size.exe", "Users/{user}/AppData/Local/Temp/dwaglnc.exe",
     "certificate table size runs past the end of the file (Malformed)"),
    ("dwagent-lookalike-srl.exe", "Program Files (x86)/DWAgent/dwagent.exe",
     "DWSNET srl with DWAgent version information"),
    ("dwagent-lookalike-selfsigned.exe", "Users/{user}/AppData/Local/Temp/RarSFX0/setup.exe",
     "self-signed fake DWSNET OÜ with DWAgent version information, renamed"),
]  # fmt: skip
# A DWSNET-signed sample not listed above (samples/ grows) lands here, under its own name.
OTHER_DWSNET_PLACE = "Users/{user}/AppData/Local/Temp/samples/{name}"
INSTALLER_PLACE = "Users/{user}/Downloads/dwagent-setup-x86_64.exe"

# DWService's file names on PEs that DWSNET did not sign: no signer rule can see these, the rule
# pack's look-alike rule (name without a trusted DWSNET signature) does.
LOOKALIKE_PLACES = [
    ("unsigned.exe", "Users/{user2}/AppData/Local/Temp/dwagent.exe", "unsigned, DWService's name"),
    ("benign.exe", "ProgramData/DWAgent/native/dwagsvc.exe", "signed by Contoso, DWService's name"),
    ("dwagent-lookalike-unsigned.exe", "Users/{user2}/Downloads/setup.exe",
     "unsigned, DWAgent version information under another name"),
]  # fmt: skip

# Signed samples that are not DWSNET, and PEs without a readable signature.
OTHER_SIGNED = ("benign.exe", "bmpstring.exe", "dll32.dll", "expired-notimestamp.exe",
                "expired-timestamped.exe", "no-crldp.exe", "t61string.exe")  # fmt: skip
UNSIGNED_PE = ("unsigned.exe", "unsigned.exe", "unsigned.exe", "garbage-pkcs7.exe",
               "table-outside-file.exe", "truncated-pkcs7.exe")  # fmt: skip

# Shares of --files (the large files and the DWSNET placements come on top of these, out of
# the text share).
KIND_SHARES = {
    "text": 0.40,
    "binary": 0.39,
    "zeros": 0.06,
    "empty": 0.03,
    "mz_not_pe": 0.02,
    "unsigned_pe": 0.03,
    "signed_pe": 0.04,
}

# (median bytes, sigma of the log, cap) of a log-normal size per kind.
SIZES = {"text": (2_500, 1.4, 4 * MIB), "binary": (4_000, 1.6, 16 * MIB),
         "zeros": (8_000, 1.5, 8 * MIB), "mz_not_pe": (6_000, 1.2, 256 * KIB)}  # fmt: skip

EXTENSIONS = {
    "text": (".txt", ".log", ".ini", ".xml", ".json", ".cfg", ".csv", ".md", ".html", ".js",
             ".css", ".py", ".ps1", ".bat", ".manifest", ".inf", ".yaml", ".config", ""),
    "zeros": (".tmp", ".db-wal", ".etl", ".dat", ".blf", ".regtrans-ms", ".edb"),
    "empty": (".lock", ".placeholder", ".gitkeep", ".tmp", ".log", ""),
    "mz_not_pe": (".exe", ".com", ".bin", ".dat", ".old", ".bak", ".dll", ".tmp"),
    "unsigned_pe": (".exe", ".dll", ".sys", ".tmp", ".mui", ".ocx", ".bin", ""),
    "signed_pe": (".dll", ".dll", ".exe", ".sys", ".mui", ".cpl", ".ocx", ".scr", ".tmp",
                  ".dat", ".efi", ".node", ".pyd", ""),
}  # fmt: skip
BINARY_MAGIC = {
    ".png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    ".gif": b"GIF89a", ".ico": b"\x00\x00\x01\x00", ".zip": b"PK\x03\x04",
    ".docx": b"PK\x03\x04", ".xlsx": b"PK\x03\x04", ".jar": b"PK\x03\x04",
    ".pdf": b"%PDF-1.7\n", ".db": b"SQLite format 3\x00", ".sqlite": b"SQLite format 3\x00",
    ".cab": b"MSCF\x00\x00\x00\x00", ".mp3": b"ID3\x04\x00", ".wav": b"RIFF\x00\x00\x00\x00WAVE",
    ".ttf": b"\x00\x01\x00\x00", ".7z": b"7z\xbc\xaf\x27\x1c", ".gz": b"\x1f\x8b\x08\x00",
    ".pak": b"", ".bin": b"", ".dat": b"", ".cache": b"", ".idx": b"", ".pack": b"PACK",
    ".msi": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", ".woff2": b"wOF2", "": b"",
}  # fmt: skip

WORDS = """
microsoft windows system config update service client server data cache temp local user
profile settings network security driver device audio video display print spool font
package resource locale policy registry backup archive report manifest catalog index
session history cookie storage database journal event trace debug release build core
runtime framework library plugin extension module component helper agent monitor sync
shell explorer edge chrome firefox office teams outlook onedrive defender store search
photo music media player viewer editor studio code project source test docs assets image
icon theme style layout template schema record queue task job worker schedule timer
""".split()  # noqa: SIM905

DIR_WORDS = """
Microsoft Google Mozilla Adobe Intel NVIDIA Realtek Dell HP Lenovo Oracle Java Python
Common Files Shared Application Data User Data Default Profile Cache Code Cache GPUCache
locales resources bin lib lib64 x64 x86 amd64 arm64 en-US de-DE fr-FR it-IT ja-JP assets
img icons plugins extensions dist src test docs Logs Temp Packages Settings Config drivers
etc DriverStore FileRepository Fonts INF Help Media Speech Tasks Boot servicing
Microsoft.NET Framework64 v4.0.30319 assembly GAC_MSIL Installer Updates Crashpad Reports
Service Worker CacheStorage IndexedDB Local Storage leveldb blob_storage Extensions
Web Applications Cookies History Themes Components Modules Runtime Tools SDK include
share man Licenses Updater Downloads Backup Archive Snapshots Sessions Profiles Data
""".split()  # noqa: SIM905

# Top-level areas: (path, share of directories, share of files, shape). Shapes: "tree" is a
# random recursive tree, "flat" puts most directories directly under the area (WinSxS),
# "deep" grows chains (node_modules, .git).
AREAS = [
    ("Windows/System32", 0.10, 0.13, "tree"),
    ("Windows/WinSxS", 0.16, 0.12, "flat"),
    ("Windows/SysWOW64", 0.03, 0.05, "tree"),
    ("Windows/Installer", 0.02, 0.02, "flat"),
    ("Windows/Microsoft.NET", 0.03, 0.03, "tree"),
    ("Program Files", 0.12, 0.13, "tree"),
    ("Program Files (x86)", 0.06, 0.06, "tree"),
    ("ProgramData", 0.06, 0.06, "tree"),
    ("Users/{user}/AppData/Local", 0.14, 0.14, "tree"),
    ("Users/{user}/AppData/Roaming", 0.05, 0.05, "tree"),
    ("Users/{user2}/AppData/Local", 0.04, 0.04, "tree"),
    ("Users/{user}/Documents", 0.03, 0.05, "tree"),
    ("Users/{user}/source/repos", 0.16, 0.12, "deep"),
]
USERS = ("alice", "bob.smith")


@dataclass
class Corpus:
    rng: random.Random
    out: Path  # the drive folder being written (OUT.tmp/C)
    random_pool: bytes = b""
    text_pool: bytes = b""
    dirs: list[str] = field(default_factory=list)
    dir_weights: list[float] = field(default_factory=list)
    names: dict[str, set[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    kind_bytes: dict[str, int] = field(default_factory=dict)
    bytes_written: int = 0
    pe_files: dict[str, str] = field(default_factory=dict)
    large: list[dict] = field(default_factory=list)
    symlinks: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs


def load_samples(samples: Path) -> tuple[dict[str, bytes], dict]:
    manifest = json.loads((samples / "manifest.json").read_text("utf-8"))
    data = {name: (samples / "pe" / name).read_bytes() for name in manifest["files"]}
    return data, manifest


def dwsnet_signers(entry: dict) -> list[str]:
    return [s["Signer"] for s in entry.get("signatures", []) if s["Signer"] in DWSNET_SIGNERS]


def real_world(fetch: bool) -> tuple[dict[str, bytes], str]:
    """Microsoft-signed DLLs and Debian's signed EFI binaries, as the tests fetch them."""
    found = sorted(REALWORLD.glob("msvc-runtime-*/*.data/data/Scripts/*.dll"))
    found += sorted(REALWORLD.glob("*/usr/lib/**/*.efi.signed"))
    note = ""
    if not found and fetch:
        sys.path.insert(0, str(ROOT / "tests"))
        try:
            import realworld  # tests/realworld.py: pip download / apt-get download

            found = realworld.fetch_msvc_dlls()
            for package in ("shim-signed", "grub-efi-amd64-signed"):
                found += realworld.fetch_deb(package)
        except Exception as exc:  # offline: the corpus still has the test-PKI samples
            note = f"real-world files unavailable: {exc}"
            found = []
        finally:
            sys.path.pop(0)
    data = {f"realworld/{p.relative_to(REALWORLD)}": p.read_bytes() for p in found}
    return data, note or f"{len(data)} real-world signed files"


def samples_key(samples: Path, real: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for path in sorted((samples / "pe").iterdir()):
        digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    for name in sorted(real):
        digest.update(name.encode() + hashlib.sha256(real[name]).digest())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- tree


def _dir_name(rng: random.Random, shape: str) -> str:
    roll = rng.random()
    if shape == "flat":  # WinSxS / Installer style
        arch = rng.choice(("amd64", "x86", "wow64", "msil"))
        return (
            f"{arch}_microsoft-windows-{rng.choice(WORDS)}-{rng.choice(WORDS)}_31bf3856ad364e35_"
            f"10.0.19041.{rng.randrange(1, 5000)}_none_{rng.getrandbits(64):016x}"
        )
    if shape == "deep" and roll < 0.45:
        return rng.choice(("node_modules", "lib", "dist", "src", ".git", "objects", "packages"))
    if roll < 0.55:
        return rng.choice(DIR_WORDS)
    if roll < 0.75:
        return f"{rng.choice(DIR_WORDS)} {rng.choice(DIR_WORDS)}"
    if roll < 0.9:
        return f"{rng.choice(WORDS)}-{rng.choice(WORDS)}"
    return f"{rng.randrange(1, 130)}.{rng.randrange(0, 10)}.{rng.randrange(0, 9999)}"


def build_tree(c: Corpus, n_dirs: int) -> None:
    """Directories per area; each gets a heavy-tailed weight for how many files it holds."""
    rng = c.rng
    for area, dir_share, file_share, shape in AREAS:
        base = area.format(user=USERS[0], user2=USERS[1])
        nodes = [base]
        for _ in range(max(1, round(n_dirs * dir_share))):
            if shape == "flat":
                parent = base if rng.random() < 0.97 else rng.choice(nodes)
            elif shape == "deep":  # chains, restarted when they get as deep as real ones
                parent = nodes[max(0, len(nodes) - 1 - int(rng.expovariate(1 / 3)))]
                if parent.count("/") - base.count("/") >= MAX_DEEP:
                    parent = rng.choice(nodes[: 1 + len(nodes) // 2])
                    parent = "/".join(parent.split("/")[: base.count("/") + 1 + MAX_DEEP // 2])
            else:
                parent = base if rng.random() < 0.08 else rng.choice(nodes)
            name = _dir_name(rng, shape)
            taken = c.names.setdefault(parent, set())  # files and folders alike
            while name.lower() in taken:
                name = f"{name}_{rng.randrange(10)}"
            taken.add(name.lower())
            nodes.append(f"{parent}/{name}")
        weights = [rng.paretovariate(1.1) for _ in nodes]
        if shape != "flat":
            weights[0] *= 40  # System32, Program Files roots etc. hold many files themselves
        total = sum(weights)
        c.dirs.extend(nodes)
        c.dir_weights.extend(w / total * file_share for w in weights)
    for d in c.dirs:
        (c.out / d).mkdir(parents=True, exist_ok=True)


def _file_name(c: Corpus, directory: str, stem: str, ext: str) -> str:
    taken = c.names.setdefault(directory, set())
    name = f"{stem}{ext}"
    while name.lower() in taken:
        name = f"{stem}_{c.rng.randrange(1000)}{ext}"
    taken.add(name.lower())
    return name


def _stem(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return rng.choice(WORDS)
    if roll < 0.7:
        return f"{rng.choice(WORDS)}_{rng.choice(WORDS)}"
    if roll < 0.85:
        return f"{rng.choice(WORDS)}{rng.randrange(100)}"
    return f"{rng.getrandbits(40):010x}"


# --------------------------------------------------------------------------- contents


def make_pools(rng: random.Random) -> tuple[bytes, bytes]:
    random_pool = rng.randbytes(16 * MIB)
    lines = []
    size = 0
    while size < 2 * MIB:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 16)))
        day = f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        line = f"{day} {words} = {rng.random():.6f}\n"
        lines.append(line)
        size += len(line)
    return random_pool, "".join(lines).encode()


def _lognormal(rng: random.Random, kind: str) -> int:
    median, sigma, cap = SIZES[kind]
    return min(cap, max(1, int(rng.lognormvariate(math.log(median), sigma))))


def _slices(pool: bytes, rng: random.Random, size: int):
    """size bytes taken from a pool at random offsets (memoryviews: no copies)."""
    view = memoryview(pool)
    while size > 0:
        n = min(size, len(pool) // 2)
        start = rng.randrange(len(pool) - n + 1)
        yield view[start : start + n]
        size -= n


def _mz_not_pe(rng: random.Random, samples: dict[str, bytes], size: int) -> list[bytes]:
    variant = rng.randrange(5)
    if variant == 0:  # a DOS header whose e_lfanew points past the end of the file
        head = bytearray(64)
        head[0:2] = b"MZ"
        head[0x3C:0x40] = (size + 4096).to_bytes(4, "little")
        return [bytes(head), rng.randbytes(max(0, size - 64))]
    if variant == 1:  # e_lfanew inside the file, but no "PE\0\0" there
        head = bytearray(rng.randbytes(max(size, 256)))
        head[0:2] = b"MZ"
        head[0x3C:0x40] = (128).to_bytes(4, "little")
        head[128:132] = b"NE\x00\x00"
        return [bytes(head)]
    if variant == 2:  # text that happens to start with MZ
        return [b"MZ marks the spot\n" + b"just a note, not a program\n" * (size // 27 + 1)]
    if variant == 3:  # a real PE whose signature bytes were zeroed
        pe = bytearray(samples["unsigned.exe"])
        e_lfanew = int.from_bytes(pe[0x3C:0x40], "little")
        pe[e_lfanew : e_lfanew + 4] = b"\x00\x00\x00\x00"
        return [bytes(pe)]
    return [samples["not-a-pe.bin"]]


def write_file(c: Corpus, rel: str, chunks, mtime: int | None = None) -> int:
    path = c.out / rel
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    size = 0
    try:
        for chunk in chunks:
            size += os.write(fd, chunk)
    finally:
        os.close(fd)
    t = mtime if mtime is not None else c.rng.randrange(*MTIME_RANGE)
    os.utime(path, (t, t))
    c.bytes_written += size
    _register(c, rel)
    return size


def _register(c: Corpus, rel: str) -> None:
    """Every component of rel is taken in its folder: no file may later clash with it."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        c.names.setdefault("/".join(parts[:i]), set()).add(parts[i].lower())


def contents(c: Corpus, kind: str, ext: str, samples: dict[str, bytes], pes: dict) -> list:
    rng = c.rng
    if kind == "text":
        return list(_slices(c.text_pool, rng, _lognormal(rng, "text")))
    if kind == "binary":
        size = _lognormal(rng, "binary")
        return [BINARY_MAGIC.get(ext, b""), *_slices(c.random_pool, rng, size)]
    if kind == "zeros":
        size = _lognormal(rng, "zeros")
        return [bytes(size)]
    if kind == "empty":
        return []
    if kind == "mz_not_pe":
        return _mz_not_pe(rng, samples, _lognormal(rng, "mz_not_pe"))
    return [pes[kind]]


# --------------------------------------------------------------------------- large files


def sign_installer(c: Corpus, rel: str, size: int, samples: dict[str, bytes], pki: Path) -> int:
    """A PE with a large overlay (an installer's payload), signed DWSNET OÜ with the test PKI."""
    path = c.out / rel
    unsigned = path.with_name(path.name + ".unsigned")
    c.out.joinpath(rel).parent.mkdir(parents=True, exist_ok=True)
    base = samples["unsigned.exe"]
    with unsigned.open("wb", buffering=16 * MIB) as f:
        f.write(base)
        for chunk in _slices(c.random_pool, c.rng, size - len(base)):
            f.write(chunk)
    subprocess.run(
        ["osslsigncode", "sign", "-certs", str(pki / "dwsnet-ou-chain.pem"),
         "-key", str(pki / "dwsnet-ou.key"), "-h", "sha256", "-st", str(SIGN_TIME),
         "-n", "DWAgent Setup", "-in", str(unsigned), "-out", str(path)],
        check=True, capture_output=True,
    )  # fmt: skip
    unsigned.unlink()
    t = c.rng.randrange(*MTIME_RANGE)
    os.utime(path, (t, t))
    written = path.stat().st_size
    c.bytes_written += written
    _register(c, rel)
    return written


def large_files(c: Corpus, n: int, samples: dict[str, bytes], pki: Path) -> list[dict]:
    rng = c.rng
    kinds = [
        ("installer", INSTALLER_PLACE),
        ("vhdx", "Users/{user}/Documents/VMs/win10-dev.vhdx"),
        ("zip", "ProgramData/Backup/backup-2024-10-01.zip"),
        ("pst", "Users/{user}/AppData/Local/Microsoft/Outlook/{user}@contoso.com.pst"),
        ("log", "Windows/Logs/CBS/CBS.persist.log"),
        ("iso", "Users/{user2}/Downloads/en-us_windows_server_2022.iso"),
    ]
    out = []
    for i in range(n):
        kind, template = kinds[i % len(kinds)]
        if i >= len(kinds):
            template = template.replace(".", f"-{i}.", 1)
        rel = template.format(user=USERS[0], user2=USERS[1])
        size = rng.randrange(50, 301) * MIB
        (c.out / rel).parent.mkdir(parents=True, exist_ok=True)
        if kind == "installer":
            if shutil.which("osslsigncode"):
                size = sign_installer(c, rel, size, samples, pki)
                out.append({"path": rel, "size": size, "kind": kind, "signed": True})
                continue
            kind = "zip"  # no signing tool: a plain large file in its place
        if kind == "vhdx":  # a disk image: zero runs between data extents (written, not holes)
            chunks = []
            left = size
            while left > 0:
                n = min(left, rng.randrange(1, 17) * MIB)
                chunks.extend(_slices(c.random_pool, rng, n) if rng.random() < 0.6 else [bytes(n)])
                left -= n
        elif kind == "log":
            chunks = list(_slices(c.text_pool, rng, size))
        else:
            chunks = [BINARY_MAGIC.get("." + kind, b""), *_slices(c.random_pool, rng, size)]
        size = write_file(c, rel, chunks)
        out.append({"path": rel, "size": size, "kind": kind, "signed": False})
    return out


# --------------------------------------------------------------------------- main


def generate(out: Path, files: int, seed: int, samples_dir: Path, fetch: bool) -> dict:
    start = time.perf_counter()
    samples, sample_manifest = load_samples(samples_dir)
    real, real_note = real_world(fetch)
    key = samples_key(samples_dir, real)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    drive = tmp / DRIVE
    drive.mkdir(parents=True)
    c = Corpus(rng=random.Random(seed), out=drive)
    c.random_pool, c.text_pool = make_pools(c.rng)

    n_large = max(1, round(files / FILES_PER_LARGE))
    detections = []
    placed = [p for p in DWSNET_PLACES if p[0] in samples]
    known = {p[0] for p in DWSNET_PLACES}
    for name, entry in sorted(sample_manifest["files"].items()):
        if dwsnet_signers(entry) and name not in known:
            placed.append((name, OTHER_DWSNET_PLACE.replace("{name}", name), entry["description"]))
    for name, template, why in placed:
        rel = template.format(user=USERS[0])
        (drive / rel).parent.mkdir(parents=True, exist_ok=True)
        write_file(c, rel, [samples[name]])
        entry = sample_manifest["files"][name]
        c.pe_files[rel] = name
        detections.append({
            "path": rel, "source": name, "why": why, "signers": dwsnet_signers(entry),
            "statuses": [s["VerificationStatus"] for s in entry["signatures"]],
            "anomalies": entry.get("anomalies", []),
        })  # fmt: skip
    lookalikes = []
    for name, template, why in [p for p in LOOKALIKE_PLACES if p[0] in samples]:
        rel = template.format(user=USERS[0], user2=USERS[1])
        (drive / rel).parent.mkdir(parents=True, exist_ok=True)
        write_file(c, rel, [samples[name]])
        c.pe_files[rel] = name
        lookalikes.append({"path": rel, "source": name, "why": why})
    c.large = large_files(c, n_large, samples, samples_dir / "pki")
    for big in c.large:
        if big["kind"] == "installer":
            c.pe_files[big["path"]] = "installer (unsigned.exe + overlay, signed DWSNET OÜ)"
            detections.append({
                "path": big["path"], "source": "installer", "signers": ["DWSNET OÜ"],
                "why": f"large ({big['size'] // MIB} MiB) DWSNET-signed installer",
                "statuses": ["Ok"], "anomalies": [],
            })  # fmt: skip

    build_tree(c, max(20, files // 11))
    fixed = len(c.pe_files) + sum(1 for b in c.large if b["kind"] != "installer")
    budget = files - fixed
    kinds = list(KIND_SHARES)
    shares = [KIND_SHARES[k] for k in kinds]
    # Most signed files on a machine are Microsoft's DLLs; EFI binaries (4 MB each) are rare.
    signed_pool = [("sample", n) for n in OTHER_SIGNED] + [("real", n) for n in sorted(real)]
    signed_weights = [1.0] * len(OTHER_SIGNED) + [
        0.05 if ".efi" in n else 4.0 for n in sorted(real)
    ]
    cum_dirs = _cumulative(c.dir_weights)
    for _ in range(budget):
        kind = c.rng.choices(kinds, weights=shares)[0]
        directory = c.rng.choices(c.dirs, cum_weights=cum_dirs)[0]
        pes = {}
        if kind == "binary":
            ext = c.rng.choice(list(BINARY_MAGIC))
        else:
            ext = c.rng.choice(EXTENSIONS[kind])
        if kind == "signed_pe":
            origin, source = c.rng.choices(signed_pool, weights=signed_weights)[0]
            pes[kind] = samples[source] if origin == "sample" else real[source]
        elif kind == "unsigned_pe":
            source = c.rng.choice(UNSIGNED_PE)
            pes[kind] = samples[source]
        name = _file_name(c, directory, _stem(c.rng), ext)
        rel = f"{directory}/{name}"
        size = write_file(c, rel, contents(c, kind, ext, samples, pes))
        c.counts[kind] = c.counts.get(kind, 0) + 1
        c.kind_bytes[kind] = c.kind_bytes.get(kind, 0) + size
        if kind in ("signed_pe", "unsigned_pe"):
            c.pe_files[rel] = source

    _symlinks(c)
    for d in sorted(_walk_dirs(drive)):  # last: writing a file changes its folder's mtime
        t = c.rng.randrange(*MTIME_RANGE)
        os.utime(d, (t, t))
    n_files = sum(1 for _ in _walk_files(drive))
    if n_files != files:
        sys.exit(f"internal error: wrote {n_files} regular files, asked for {files}")
    c.counts["dwsnet_placed"] = len(placed)
    c.counts["lookalikes"] = len(lookalikes)
    c.counts["large"] = len(c.large)
    manifest = {
        "generated_by": "benchmarks/make_corpus.py",
        "version": VERSION,
        "files": files,
        "seed": seed,
        "samples_key": key,
        "realworld": real_note,
        "root": DRIVE,
        "regular_files": n_files,
        "directories": len(c.dirs),
        "max_depth": max(d.count("/") + 1 for d in c.dirs),
        "bytes": c.bytes_written,
        "counts": c.counts,
        "bytes_by_kind": c.kind_bytes,
        "large_files": c.large,
        "symlinks": c.symlinks,
        "detections": sorted(detections, key=lambda d: d["path"]),
        "lookalikes": lookalikes,
        "pe_files": dict(sorted(c.pe_files.items())),
        "seconds": round(time.perf_counter() - start, 1),
    }
    (tmp / "manifest.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if out.exists():
        if not (out / "manifest.json").exists():
            sys.exit(f"{out} exists and is not a corpus written by this script; not replacing it")
        shutil.rmtree(out)
    tmp.rename(out)
    return manifest


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def _symlinks(c: Corpus) -> None:
    """A few links, as a Linux or WSL tree has them: one to a DWSNET-signed file (a tool that
    follows links reports that file twice), one to a Microsoft DLL, and one dangling."""
    signed = sorted(p for p, source in c.pe_files.items() if source in OTHER_SIGNED)
    fallback = signed[0] if signed else "Windows/Temp/svchost.exe"
    microsoft = next((p for p, s in sorted(c.pe_files.items()) if "msvc" in s), fallback)
    places = [
        ("Users/Public/Desktop/DWAgent.exe", "Program Files/DWAgent/runtime/dwagent.exe"),
        ("ProgramData/Links/vcruntime.dll", microsoft),
        ("Users/{user}/AppData/Local/Temp/stale.tmp", "Users/nobody/gone.tmp"),
    ]
    for link, target in places:
        link = link.format(user=USERS[0])
        path = c.out / link
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(c.out / target, path.parent), path)
        os.utime(path, (MTIME_RANGE[1], MTIME_RANGE[1]), follow_symlinks=False)
        c.symlinks.append({"path": link, "target": target})
        _register(c, link)


def _walk_dirs(top: Path):
    stack = [str(top)]
    while stack:
        d = stack.pop()
        yield d
        with os.scandir(d) as it:
            stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))


def _walk_files(top: Path):
    stack = [str(top)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="corpus folder (replaced)")
    parser.add_argument("--files", type=int, default=100_000, help="regular files (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="pe/, pki/, manifest.json")
    parser.add_argument(
        "--no-fetch", action="store_true", help="never download the real-world signed files"
    )
    opts = parser.parse_args()
    if opts.files < 200:
        parser.error("--files must be at least 200")
    m = generate(opts.out, opts.files, opts.seed, opts.samples, not opts.no_fetch)
    print(
        f"{opts.out}: {m['regular_files']} files, {m['bytes'] / (1 << 30):.2f} GiB, "
        f"{m['directories']} directories (depth ≤ {m['max_depth']}), "
        f"{len(m['pe_files'])} PE, {len(m['detections'])} DWSNET-signed; {m['seconds']} s"
    )
    print("counts:", json.dumps(m["counts"]))


if __name__ == "__main__":
    main()
