"""version_info: the bounded reader against pefile, on real files, built files and mutants.

pefile (``fast_load`` + the resource directory, then today's first-occurrence extraction) is
the independent oracle: equal results on every sample and on Microsoft's DLLs. Files built
here pin down what each rule of the reader decides, including where it knowingly differs
from pefile (Windows' reading, not pefile's). Hypothesis mutates the resource directory and
the version blob of the look-alike samples: the reader never raises, reads at most
READ_BOUND bytes in a handful of reads, never invents text, and agrees with pefile on the
mutations where both readers follow the same rules (see ``test_mutants_agree_with_pefile``).
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pefile
import pytest
import realworld as rw
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st

from rmmscan.inspect import pe
from rmmscan.inspect.versioninfo import FIELDS, MAX_NODES, READ_BOUND, version_info

from conftest import PE_DIR, SAMPLES

LOOKALIKES = sorted(p.name for p in PE_DIR.glob("dwagent-lookalike-*.exe"))
_RESOURCE = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]


# -- the oracle ------------------------------------------------------------------------------
def pefile_fields(data: bytes) -> dict[str, str]:
    """What the previous implementation returned: pefile's parse, first occurrence wins."""
    try:
        image = pefile.PE(data=data, fast_load=True)  # never close(): it runs gc.collect()
        image.parse_data_directories(directories=[_RESOURCE])
    except Exception:  # pefile on hostile input raises struct, index, overflow... errors
        return {}
    out: dict[str, str] = {}
    for file_info in getattr(image, "FileInfo", None) or []:
        for block in file_info:
            for table in getattr(block, "StringTable", None) or []:
                for key, value in table.entries.items():
                    name = key.decode("utf-8", "replace")
                    if name in FIELDS and name not in out:
                        out[name] = value.decode("utf-8", "replace")[:1024]
    return out


class Counting(io.RawIOBase):
    """A seekable stream over bytes that counts what is read (no fileno: not a file)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.bytes_read, self.reads = data, 0, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else len(self.data) + pos)
        return self.pos

    def readinto(self, buffer) -> int:
        chunk = self.data[self.pos : self.pos + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        self.bytes_read += len(chunk)
        self.reads += 1
        return len(chunk)


def ours(data: bytes) -> dict[str, str]:
    stream = Counting(data)
    found = version_info(stream, len(data))
    check_bounded(stream)
    check_shape(found, data)
    return found


def check_bounded(stream: Counting) -> None:
    assert stream.bytes_read <= READ_BOUND, stream.bytes_read
    # parse_header: 3 reads at most; the walk: a window, 4 structures, the blob.
    assert stream.reads <= 9, stream.reads


def check_shape(found: dict, data: bytes) -> None:
    """Keys are wanted fields, values capped strings whose text is in the file (no invention)."""
    assert set(found) <= set(FIELDS)
    for key, value in found.items():
        assert isinstance(value, str) and len(value) <= 1024
        assert (key + "\0").encode("utf-16-le") in data
        if "\ufffd" not in value:
            assert value.encode("utf-16-le", "surrogatepass") in data, (key, value)


# -- samples and real files --------------------------------------------------------------------
def test_samples_agree_with_pefile():
    """Every sample: pefile's fields; the look-alikes carry those of src/dwagent.rc."""
    manifest = json.loads((SAMPLES / "manifest.json").read_text("utf-8"))["files"]
    seen = 0
    for path in sorted(PE_DIR.iterdir()):
        data = path.read_bytes()
        found = ours(data)
        assert found == pefile_fields(data), path.name
        with path.open("rb") as real:
            assert version_info(real, len(data)) == found, path.name
        if path.name in LOOKALIKES:
            expected = manifest[path.name]["version"]
            assert found == {**expected, "FileVersion": "1.0.0.0"}, path.name
            seen += 1
        else:
            assert found == {}, path.name
    assert seen == 3


@pytest.fixture(scope="session")
def real_files() -> dict[str, list[Path]]:
    """The files tests/inspect/test_realworld.py fetches (cached in tests/.cache/realworld/)."""
    return {
        "msvc": rw.fetch_msvc_dlls(),
        "shim": rw.fetch_deb("shim-signed"),
        "grub": rw.fetch_deb("grub-efi-amd64-signed"),
    }


def test_real_files_agree_with_pefile(real_files):
    """Microsoft's DLLs (all eight fields) and the EFI binaries (none), as pefile reads them."""
    assert len(real_files["msvc"]) >= 10
    for group, paths in real_files.items():
        for path in paths:
            data = path.read_bytes()
            found = ours(data)
            assert found == pefile_fields(data), path.name
            with path.open("rb") as real:
                assert version_info(real, len(data)) == found, path.name
            if group == "msvc":
                assert sorted(found) == sorted(FIELDS), path.name
                assert found["CompanyName"] == "Microsoft Corporation", path.name
            else:
                assert found == {}, path.name


# -- files built here --------------------------------------------------------------------------
def _pad(blob: bytes) -> bytes:
    return blob + b"\0" * (-len(blob) % 4)


def node(
    key: str,
    value: bytes = b"",
    children: tuple[bytes, ...] = (),
    *,
    wtype: int = 1,
    value_length: int | None = None,
    length: int | None = None,
) -> bytes:
    """A version node: header, key, padding, value, children each at 32-bit alignment."""
    out = _pad(bytes(6) + (key + "\0").encode("utf-16-le")) + value
    for child in children:
        out = _pad(out) + child
    length = len(out) if length is None else length
    value_length = len(value) if value_length is None else value_length
    return struct.pack("<HHH", length, value_length, wtype) + out[6:]


def string(key: str, text: str, **kw) -> bytes:
    value = (text + "\0").encode("utf-16-le", "surrogatepass")
    kw.setdefault("value_length", len(value) // 2)
    return node(key, value, **kw)


FIXED = struct.pack("<13I", 0xFEEF04BD, 0x10000, 1, 0, 1, 0, 0x3F, 0, 0x40004, 1, 0, 0, 0)


def version(*tables: tuple[str, list[bytes]], fixed: bytes = FIXED, **kw) -> bytes:
    """VS_VERSIONINFO with one StringFileInfo of these StringTables and a VarFileInfo."""
    languages = tuple(node(lang, children=tuple(entries)) for lang, entries in tables)
    strings = node("StringFileInfo", children=languages)
    var = node("VarFileInfo", children=(node("Translation", b"\x09\x04\xb0\x04", wtype=0),))
    return node("VS_VERSION_INFO", fixed, (strings, var), wtype=0, **kw)


def resources(base: int, tree: dict[int, dict[int, dict[int, bytes]]]) -> bytes:
    """A resource section at RVA `base`: {type: {name: {language: data}}}, IDs only."""
    # Layout: every directory (type, names, languages), the data entries, then the data.
    dirs: list[list[tuple[int, object]]] = [[]]
    leaves: list[bytes] = []

    def add(level: dict, into: list) -> None:
        for ident, below in sorted(level.items()):
            if isinstance(below, dict):
                dirs.append(sub := [])
                into.append((ident, ("dir", len(dirs) - 1)))
                add(below, sub)
            else:
                leaves.append(below)
                into.append((ident, ("leaf", len(leaves) - 1)))

    add(tree, dirs[0])
    dir_at, at = [], 0
    for entries in dirs:
        dir_at.append(at)
        at += 16 + 8 * len(entries)
    leaf_at = [at + 16 * i for i in range(len(leaves))]
    at += 16 * len(leaves)
    data_at = []
    for blob in leaves:
        at = (at + 7) & ~7
        data_at.append(at)
        at += len(blob)
    out = bytearray(at)
    for entries, where in zip(dirs, dir_at, strict=True):
        struct.pack_into("<12xHH", out, where, 0, len(entries))
        for i, (ident, (kind, index)) in enumerate(entries):
            target = dir_at[index] | 0x80000000 if kind == "dir" else leaf_at[index]
            struct.pack_into("<II", out, where + 16 + 8 * i, ident, target)
    for where, data, blob in zip(leaf_at, data_at, leaves, strict=True):
        struct.pack_into("<II", out, where, base + data, len(blob))
        out[data : data + len(blob)] = blob
    return bytes(out)


BASE = (PE_DIR / "dwagent-lookalike-unsigned.exe").read_bytes()  # .rsrc is its last section
_HEADER = pe.parse_header(io.BytesIO(BASE), len(BASE))
RSRC_VA, _, RSRC_PTR, _ = _HEADER.sections[-1]
assert _HEADER.resources[0] == RSRC_VA


def with_resources(section: bytes, *, resource_dir: tuple[int, int] | None = None) -> bytes:
    """The unsigned look-alike with this .rsrc section (and resource data directory)."""
    data = bytearray(BASE[:RSRC_PTR]) + section + bytes(-len(section) % 0x200)
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    (n_sections, opt_size) = struct.unpack_from("<H12xH", data, e_lfanew + 6)
    header = e_lfanew + 24 + opt_size + 40 * (n_sections - 1)
    raw_size = len(data) - RSRC_PTR
    struct.pack_into("<IIII", data, header + 8, max(len(section), 1), RSRC_VA, raw_size, RSRC_PTR)
    directory = (
        e_lfanew
        + 24
        + (112 if struct.unpack_from("<H", data, e_lfanew + 24)[0] == 0x20B else 96)
        + 16
    )
    rva, size = resource_dir or (RSRC_VA, len(section))
    struct.pack_into("<II", data, directory, rva, size)
    return bytes(data)


def build(*tables, **kw) -> bytes:
    return with_resources(resources(RSRC_VA, {16: {1: {0x409: version(*tables, **kw)}}}))


COMPANY = ("040904b0", [string("CompanyName", "Acme"), string("ProductName", "Rocket")])


def test_built_file_agrees_with_pefile():
    """The builder itself is checked by the oracle before the cases below rely on it."""
    data = build(COMPANY)
    assert ours(data) == pefile_fields(data) == {"CompanyName": "Acme", "ProductName": "Rocket"}
    assert ours(with_resources(resources(RSRC_VA, {3: {1: {0: b"icon"}}}))) == {}


def test_all_string_tables_first_occurrence_wins():
    """Later tables fill in fields the first lacks; a field seen once is never replaced."""
    data = build(
        ("040904b0", [string("CompanyName", "First"), string("Comments", "x")]),
        ("040704b0", [string("CompanyName", "Second"), string("FileVersion", "2.0")]),
    )
    assert ours(data) == {"CompanyName": "First", "FileVersion": "2.0"}


def test_duplicate_key_in_one_table_first_wins():
    """Windows' VerQueryValue returns the first match; pefile's dict keeps the last one."""
    data = build(("040904b0", [string("CompanyName", "First"), string("CompanyName", "Last")]))
    assert ours(data) == {"CompanyName": "First"}
    assert pefile_fields(data) == {"CompanyName": "Last"}


def test_value_length_is_not_trusted():
    """wValueLength 0, in bytes, or short: the value runs to its NUL or its node's end.

    pefile stops at wValueLength characters, so it reads "" and "Ac" here.
    """
    data = build(
        (
            "040904b0",
            [
                string("CompanyName", "Acme", value_length=0),
                string("ProductName", "Rocket", value_length=14),  # bytes, not characters
                string("FileVersion", "1.2.3", value_length=2),
                string("InternalName", "", value_length=0),
            ],
        )
    )
    expected = {"CompanyName": "Acme", "ProductName": "Rocket", "FileVersion": "1.2.3"}
    assert ours(data) == {**expected, "InternalName": ""}
    assert pefile_fields(data)["CompanyName"] == ""


def test_value_without_nul_stops_at_its_node():
    """No NUL: the value ends with its node, never in the next node's header (nor past the
    table, when wLength claims more than the table holds)."""
    no_nul = node("CompanyName", "Acme".encode("utf-16-le"), value_length=4)
    data = build(("040904b0", [no_nul, string("ProductName", "Rocket")]))
    assert ours(data) == {"CompanyName": "Acme", "ProductName": "Rocket"}
    runaway = node("CompanyName", "Acme".encode("utf-16-le"), value_length=4, length=0xFFF0)
    data = build(("040904b0", [string("ProductName", "Rocket"), runaway]))
    assert ours(data) == {"CompanyName": "Acme", "ProductName": "Rocket"}


def test_values_capped_and_decoded_as_utf16():
    """1024 characters at most; a surrogate pair is one character (pefile escapes it as
    text, "\\ud83d\\ude80"); a lone surrogate is U+FFFD."""
    data = build(
        (
            "040904b0",
            [
                string("Comments", "x" * 5000),
                string("LegalCopyright", "y" * 5000),
                string("ProductName", "Rocket \U0001f680"),
                string("CompanyName", "bad \ud800 half"),
            ],
        )
    )
    found = ours(data)
    assert found["LegalCopyright"] == "y" * 1024
    assert found["ProductName"] == "Rocket \U0001f680"
    assert found["CompanyName"] == "bad \ufffd half"
    assert pefile_fields(data)["ProductName"] == "Rocket \\ud83d\\ude80"


def test_keys_are_exact():
    """Case and trailing characters count, as they did with pefile."""
    data = build(
        (
            "040904b0",
            [
                string("companyname", "lower"),
                string("CompanyNameX", "x"),
                string("FileVersion", "1"),
            ],
        )
    )
    assert ours(data) == pefile_fields(data) == {"FileVersion": "1"}


def test_first_language_only():
    """RT_VERSION, first name, first language: what the reader walks. pefile merges every
    language of the first name (first occurrence wins), so it also finds ProductName."""
    german = version(("040704b0", [string("CompanyName", "Deutsch")]))
    english = version(("040904b0", [string("CompanyName", "English"), string("ProductName", "P")]))
    data = with_resources(resources(RSRC_VA, {16: {1: {0x409: english, 0x407: german}}}))
    assert ours(data) == {"CompanyName": "Deutsch"}  # 0x407 sorts first
    assert pefile_fields(data) == {"CompanyName": "Deutsch", "ProductName": "P"}
    data = with_resources(resources(RSRC_VA, {16: {2: {0: english}, 1: {0: german}}}))
    assert ours(data) == pefile_fields(data) == {"CompanyName": "Deutsch"}  # name 1 first


def test_fixed_file_info_skipped_by_its_length():
    """The root's value is skipped by wValueLength, as Windows does: 0 when it is absent."""
    data = build(COMPANY, fixed=b"", value_length=0)
    assert ours(data) == {"CompanyName": "Acme", "ProductName": "Rocket"}
    assert pefile_fields(data) == {}  # pefile skips 52 bytes whatever wValueLength says


def test_other_blocks_and_wrong_root_ignored():
    """Only a root named VS_VERSION_INFO, only blocks named StringFileInfo."""
    table = node("040904b0", children=(string("CompanyName", "Acme"),))
    other = node("StringFileInfoX", children=(table,))
    blob = node("VS_VERSION_INFO", FIXED, (other,), wtype=0)
    assert ours(with_resources(resources(RSRC_VA, {16: {1: {0: blob}}}))) == {}
    wrong = node("VS_VERSION_INFX", FIXED, (node("StringFileInfo", children=(table,)),))
    assert ours(with_resources(resources(RSRC_VA, {16: {1: {0: wrong}}}))) == {}


def test_node_budget():
    """A blob of tiny nodes is walked for MAX_NODES nodes at most: what follows is not read."""
    tiny = struct.pack("<HHH", 8, 0, 1) + b"A\0"
    filler = [tiny] * (MAX_NODES - 3)  # the StringFileInfo and the table count too
    found = ours(build(("040904b0", [*filler, string("CompanyName", "Acme")])))
    assert found == {"CompanyName": "Acme"}
    found = ours(build(("040904b0", [*filler, tiny, string("CompanyName", "Acme")])))
    assert found == {}
    many = [tiny] * 7000  # 56 KiB of nodes: the walk stops at MAX_NODES, as above
    data = build(("040904b0", [*many, string("CompanyName", "Acme")]))
    assert ours(data) == {}


def _directory_loop(entry_at: int, target: int) -> bytes:
    section = bytearray(resources(RSRC_VA, {16: {1: {0: version(COMPANY)}}}))
    struct.pack_into("<I", section, entry_at, 0x80000000 | target)
    return with_resources(bytes(section))


def test_directory_loops_refused():
    """A name or language entry pointing back at a directory already walked: nothing."""
    # The built directory: the root at 0 (its entry's OffsetToData at 20), the name directory
    # at 24 (44), the language directory at 48 (68), the data entry at 72.
    assert ours(_directory_loop(20, 24)) == {"CompanyName": "Acme", "ProductName": "Rocket"}
    for entry_at, target in ((20, 0), (44, 0), (44, 24), (68, 0), (68, 24), (68, 48)):
        data = _directory_loop(entry_at, target)
        assert ours(data) == {}, (entry_at, target)


def test_size_fields_are_bounded():
    """Huge counts and sizes cost at most the bound (ours() counts); unmapped RVAs, nothing."""
    section = bytearray(resources(RSRC_VA, {16: {1: {0: version(COMPANY)}}}))
    struct.pack_into("<HH", section, 12, 0, 0xFFFF)  # 65535 ID entries claimed at the root
    assert ours(with_resources(bytes(section))) == {"CompanyName": "Acme", "ProductName": "Rocket"}
    section = bytearray(resources(RSRC_VA, {16: {1: {0: version(COMPANY)}}}))
    leaf = 72  # the data entry, after three directories of one entry each
    struct.pack_into("<I", section, leaf + 4, 0xFFFFFFFF)  # the blob claims 4 GiB
    assert ours(with_resources(bytes(section))) == {"CompanyName": "Acme", "ProductName": "Rocket"}
    for rva in (0xFFFFFFF0, RSRC_VA + 0x100000, 0x800):  # past every section, in no section
        struct.pack_into("<I", section, leaf, rva)
        assert ours(with_resources(bytes(section))) == {}, hex(rva)


def test_offsets_past_the_end_of_the_file():
    """A section claiming raw data past the end of the file: what the file holds, no more."""
    data = bytearray(build(COMPANY))
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    (n_sections, opt_size) = struct.unpack_from("<H12xH", data, e_lfanew + 6)
    header = e_lfanew + 24 + opt_size + 40 * (n_sections - 1)
    struct.pack_into("<II", data, header + 8, 0x100000, RSRC_VA)
    struct.pack_into("<I", data, header + 16, 0x100000)
    whole = ours(bytes(data))
    assert whole == {"CompanyName": "Acme", "ProductName": "Rocket"}
    for cut in range(RSRC_PTR, len(data)):
        check_prefix(ours(bytes(data[:cut])), whole)


def check_prefix(found: dict[str, str], whole: dict[str, str]) -> None:
    """Cut data yields fewer fields and shorter values, never other ones (pefile drops the
    whole table when the cut falls before the root's last block)."""
    for key, value in found.items():
        assert whole[key].startswith(value), (key, value, whole)


def test_blob_in_zero_filled_tail_is_not_read():
    """An RVA past SizeOfRawData but inside VirtualSize maps to zeros, not to file bytes."""
    section = resources(RSRC_VA, {16: {1: {0: version(COMPANY)}}})
    data = bytearray(with_resources(section))
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    (n_sections, opt_size) = struct.unpack_from("<H12xH", data, e_lfanew + 6)
    header = e_lfanew + 24 + opt_size + 40 * (n_sections - 1)
    struct.pack_into("<II", data, header + 8, 0x10000, RSRC_VA)  # VirtualSize 64 KiB
    struct.pack_into("<I", data, header + 16, 88)  # only the directories are file-backed
    assert ours(bytes(data)) == {}


def test_section_table_is_bounded():
    """At most 96 sections are read; parse_header's section table matches pefile's."""
    for name in ("dll32.dll", *LOOKALIKES):
        data = (PE_DIR / name).read_bytes()
        header = pe.parse_header(io.BytesIO(data), len(data))
        image = pefile.PE(data=data, fast_load=True)
        assert header.sections == tuple(
            (s.VirtualAddress, s.Misc_VirtualSize, s.PointerToRawData, s.SizeOfRawData)
            for s in image.sections
        )
        directory = image.OPTIONAL_HEADER.DATA_DIRECTORY[_RESOURCE]
        assert header.resources == (directory.VirtualAddress, directory.Size)
        assert header.section_alignment == image.OPTIONAL_HEADER.SectionAlignment
    data = bytearray((PE_DIR / LOOKALIKES[1]).read_bytes())
    (e_lfanew,) = struct.unpack_from("<I", data, 0x3C)
    struct.pack_into("<H", data, e_lfanew + 6, 0xFFFF)  # 65535 sections claimed
    stream = Counting(bytes(data))
    header = pe.parse_header(stream, len(data))
    assert len(header.sections) == 96 and stream.bytes_read <= pe.READ_BOUND


# -- mutants -----------------------------------------------------------------------------------
class Layout:
    """Where things are in a look-alike sample, as pefile finds them (not the reader)."""

    def __init__(self, data: bytes) -> None:
        image = pefile.PE(data=data, fast_load=True)
        image.parse_data_directories(directories=[_RESOURCE])
        root = image.DIRECTORY_ENTRY_RESOURCE
        names = next(e for e in root.entries if e.id == 16).directory
        languages = names.entries[0].directory
        leaf = languages.entries[0].data.struct
        self.directories = [d.struct.get_file_offset() for d in (root, names, languages)]
        self.root, self.leaf = self.directories[0], leaf.get_file_offset()
        self.blob = image.get_offset_from_rva(leaf.OffsetToData)
        self.end = self.blob + leaf.Size
        # The UTF-16 units of every String's key and value (not their NULs).
        block = next(b for b in image.FileInfo[0] if hasattr(b, "StringTable"))
        self.text = []
        for table in block.StringTable:
            for key, (key_at, value_at) in table.entries_offsets.items():
                key_len, value_len = table.entries_lengths[key]
                self.text += range(key_at, key_at + 2 * key_len, 2)
                self.text += range(value_at, value_at + 2 * value_len, 2)
        # Bytes neither reader interprets: the directories' Characteristics, TimeDateStamp and
        # versions, the data entry's CodePage and Reserved, the VS_FIXEDFILEINFO.
        fixed = image.VS_FIXEDFILEINFO[0].get_file_offset()
        self.inert = [d + i for d in self.directories for i in range(12)]
        self.inert += [self.leaf + 8 + i for i in range(8)] + list(range(fixed, fixed + 52))
        # The .rsrc section header's four fields and the resource data directory's two.
        directory = image.OPTIONAL_HEADER.DATA_DIRECTORY[_RESOURCE]
        section = next(s for s in image.sections if s.VirtualAddress == directory.VirtualAddress)
        self.header_fields = [section.get_file_offset() + i for i in (8, 12, 16, 20)]
        self.header_fields += [directory.get_file_offset(), directory.get_file_offset() + 4]


SEEDS = {name: (PE_DIR / name).read_bytes() for name in LOOKALIKES}
LAYOUTS = {name: Layout(data) for name, data in SEEDS.items()}
WHOLE = {name: pefile_fields(data) for name, data in SEEDS.items()}
_WORDS = st.one_of(
    st.sampled_from([0, 1, 5, 6, 7, 8, 0x7FFF, 0x8000, 0xFFFF]), st.integers(0, 0xFFFF)
)
_DWORDS = st.one_of(
    st.sampled_from([0, 0x10, 0x80000000, 0x7FFFFFFF, 0xFFFFFFFF]), st.integers(0, 2**32 - 1)
)
_UNITS = st.one_of(st.just(0), st.integers(1, 0xD7FF), st.integers(0xE000, 0xFFFF))


KINDS = ("truncate", "flip", "word", "dword", "loop", "header", "splice")


@st.composite
def structure_mutants(draw) -> tuple[str, list[str], bytes]:
    """Truncations, bit flips, huge or small lengths, self-referencing directory offsets,
    lying section headers, spliced nodes: 1 to 3 of them on one look-alike."""
    name = draw(st.sampled_from(LOOKALIKES))
    data, at = bytearray(SEEDS[name]), LAYOUTS[name]
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3))
    for kind in kinds:
        if kind == "truncate":
            del data[draw(st.integers(at.root, len(data))) :]
        elif kind == "flip":
            for _ in range(draw(st.integers(1, 8))):
                where = draw(st.integers(at.root, at.end - 1))
                if where < len(data):
                    data[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "word":  # a wLength, wValueLength, wType or anything in the blob
            where = draw(st.integers(at.blob, at.end - 2).map(lambda x: x & ~1))
            data[where : where + 2] = struct.pack("<H", draw(_WORDS))
        elif kind == "dword":  # counts, offsets, RVAs and sizes of the directory
            where = draw(st.sampled_from(range(at.root, at.blob, 4)))
            data[where : where + 4] = struct.pack("<I", draw(_DWORDS))
        elif kind == "loop":  # an entry's OffsetToData pointing at a directory or the leaf
            where = draw(st.sampled_from(range(at.root + 20, at.leaf, 8)))
            target = draw(st.sampled_from([*at.directories, at.leaf])) - at.root
            flag = draw(st.sampled_from([0, 0x80000000]))
            data[where : where + 4] = struct.pack("<I", flag | target)
        elif kind == "header":
            where = draw(st.sampled_from(at.header_fields))
            (old,) = struct.unpack_from("<I", data, where)
            value = draw(st.one_of(_DWORDS, st.sampled_from([old + 0x200, max(old - 0x200, 0),
                                                             len(data), old + 1])))  # fmt: skip
            data[where : where + 4] = struct.pack("<I", value & 0xFFFFFFFF)
        else:  # a piece of the blob copied over another: nodes inside nodes
            size = draw(st.integers(2, 96))
            src = draw(st.integers(at.blob, at.end - size))
            dst = draw(st.integers(at.blob, at.end - size))
            data[dst : dst + size] = SEEDS[name][src : src + size]
    return name, kinds, bytes(data)


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    verbosity=Verbosity.quiet,
)
@given(structure_mutants())
def test_mutants_never_raise_and_stay_bounded(mutant):
    """Whatever the mutation: no exception, at most READ_BOUND bytes in at most 9 reads, only
    wanted fields, no text that is not in the file; a truncation only loses or shortens."""
    name, kinds, data = mutant
    found = ours(data)  # raises, or fails check_bounded / check_shape, on a bad result
    assert version_info(io.BytesIO(data), len(data)) == found
    if kinds == ["truncate"]:
        check_prefix(found, WHOLE[name])


@st.composite
def content_mutants(draw) -> bytes:
    """Changes to what neither reader takes as structure: the characters of String keys and
    values (any non-surrogate unit, NUL included) and the inert bytes of the directories and
    of VS_FIXEDFILEINFO. Both readers must then agree, exactly."""
    name = draw(st.sampled_from(LOOKALIKES))
    data, at = bytearray(SEEDS[name]), LAYOUTS[name]
    for _ in range(draw(st.integers(1, 4))):  # 4 units cannot turn one wanted key into another
        where = draw(st.sampled_from(at.text))
        data[where : where + 2] = struct.pack("<H", draw(_UNITS))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.sampled_from(at.inert))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(
    max_examples=700,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    verbosity=Verbosity.quiet,
)
@given(content_mutants())
def test_mutants_agree_with_pefile(data):
    """Where both readers follow the same rules, they give the same fields.

    Mutations of the structure are left out on purpose: there the readers differ by design
    (the tests above pin each rule): pefile drops the whole table when a block after the
    StringFileInfo cannot be read, reads values past their node and only wValueLength
    characters of them, accepts a block whose key merely starts with "StringFileInfo" but
    refuses one with wValueLength != 0 or wType > 1, misplaces Strings after a non-ASCII
    language key (it counts the key's UTF-8 bytes), and needs the whole resource directory
    to parse, not just the RT_VERSION branch.
    """
    assert ours(data) == pefile_fields(data)
