"""The E01 chunk reader (sources/image/containers/ewf.py: ``_Chunks``) against libewf.

On E01s made by ewfacquire (deflate fast and best, none, empty-block, split into segments)
every chunk is read by the reader itself and equals what libewf reads. On structured
mutations of them (section descriptors, table headers, table entries and their checksum,
table2, the stored chunks and their checksums, the segment header, a segment cut short),
with the checksums made right again or left wrong, every chunk the image gives is what libewf
gives for the same files, or an error where libewf errs: what the reader does not read as
libewf would, it leaves to libewf. The layout is walked here with code of its own, not the
reader's.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import time
import zlib
from pathlib import Path

import pyewf
import pytest
from hypothesis import HealthCheck, Verbosity, event, given, settings
from hypothesis import strategies as st

from rmmscan.sources.image.container import ContainerError
from rmmscan.sources.image.containers.ewf import EwfImage
from tests.images import build

CHUNK = 32 * 1024
MEDIA = 4 * 1024 * 1024 + 1024  # segments of 1 MiB, compressed or not; a last chunk cut short
L01 = (b"LVF\x09\x0d\x0a\xff\x00", b"LEF2\x0d\x0a\x81\x00")
TIME_BOUND = 10.0  # seconds per mutated image: a hang detector


def media(seed: int) -> bytes:
    """Chunks of zeros, text, random bytes (stored uncompressed by a deflate writer: they do
    not shrink) and a repeated pattern, in a mixed order."""
    rng = random.Random(seed)
    words = b"alpha beta gamma delta epsilon zeta eta theta iota kappa ".split()
    parts = []
    for _ in range(-(-MEDIA // CHUNK)):
        kind = rng.randrange(5)  # 4: random too, so that a compressed image is split as well
        if kind == 0:
            parts.append(bytes(CHUNK))
        elif kind == 1:
            parts.append(b" ".join(rng.choice(words) for _ in range(CHUNK // 4))[:CHUNK])
        elif kind in (2, 4):
            parts.append(rng.randbytes(CHUNK))
        else:
            parts.append(bytes([rng.randrange(256)]) * 7 * (CHUNK // 7 + 1))
    return b"".join(parts)[:MEDIA]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, list[Path]]:
    work = tmp_path_factory.mktemp("ewf")
    raw = work / "media.raw"
    raw.write_bytes(media(1))
    made = {
        "fast": build.to_e01(raw, work / "fast", compression="fast"),
        "best": build.to_e01(raw, work / "best", compression="best"),
        "empty-block": build.to_e01(raw, work / "empty", compression="empty-block"),
        "none-split": build.to_e01(raw, work / "split", 1024 * 1024),
        "fast-split": build.to_e01(raw, work / "fsplit", 1024 * 1024, compression="fast"),
    }
    out = {name: build.e01_segments(first) for name, first in made.items()}
    assert len(out["none-split"]) > 1 and len(out["fast-split"]) > 1
    return out


def reference(paths: list[Path]):
    handle = pyewf.handle()
    handle.open([str(p) for p in paths], "r")
    return handle


def outcome(read, offset: int, size: int):
    try:
        return ("data", read(offset, size))
    except (OSError, RuntimeError, ValueError) as exc:
        return ("error", type(exc).__name__)


@pytest.mark.parametrize("kind", ["fast", "best", "empty-block", "none-split", "fast-split"])
def test_every_chunk_is_read_by_the_reader_and_is_libewfs(seeds, kind):
    paths = seeds[kind]
    image = EwfImage(str(paths[0]))
    ref = reference(paths)
    try:
        assert image.chunks is not None and image.block == CHUNK and image.size == MEDIA
        data = media(1)
        for offset in range(0, MEDIA, CHUNK):
            size = min(CHUNK, MEDIA - offset)
            got = image._read(offset, size)
            assert got == ref.read_buffer_at_offset(size, offset) == data[offset : offset + size]
        assert image.chunks.inflated == -(-MEDIA // CHUNK) and image.chunks.declined == 0
        # Through the cache, any range: the same bytes.
        assert image.read(CHUNK - 3, 2 * CHUNK + 7) == data[CHUNK - 3 : 3 * CHUNK + 4]
    finally:
        image.close()
        ref.close()


# -- the layout, walked independently ----------------------------------------------------------

DESCRIPTOR = 76


def sections(seg: bytes) -> list[tuple[int, bytes, int, int]]:
    """(offset, type, next, size) of each section, following the next offsets."""
    out, at = [], 13
    while at + DESCRIPTOR <= len(seg) and len(out) < 1000:
        kind = seg[at : at + 16].rstrip(b"\0")
        following, size = struct.unpack_from("<QQ", seg, at + 16)
        out.append((at, kind, following, size))
        if kind in (b"next", b"done") or following <= at:
            break
        at = following
    return out


def tables(seg: bytes) -> list[tuple[int, bytes, int, int]]:
    """(section offset, type, entry count, base) of each table and table2 section; the count
    is of the entries the segment holds (it may be cut short)."""
    out = []
    for at, kind, _following, _size in sections(seg):
        entries = at + DESCRIPTOR + 24
        if kind in (b"table", b"table2") and entries <= len(seg):
            count, base = struct.unpack_from("<I4xQ", seg, at + DESCRIPTOR)
            out.append((at, kind, min(count, (len(seg) - entries) // 4), base))  # what is there
    return out


def fix_descriptor(seg: bytearray, at: int) -> None:
    struct.pack_into("<I", seg, at + 72, zlib.adler32(bytes(seg[at : at + 72])))


def fix_table(seg: bytearray, at: int, count: int) -> None:
    head = at + DESCRIPTOR
    struct.pack_into("<I", seg, head + 20, zlib.adler32(bytes(seg[head : head + 20])))
    entries = head + 24
    end = entries + 4 * min(count, max(0, (len(seg) - entries - 4) // 4))
    if end + 4 <= len(seg):
        struct.pack_into("<I", seg, end, zlib.adler32(bytes(seg[entries:end])))


# -- structured mutations ----------------------------------------------------------------------

KINDS = ("descriptor", "table", "entry", "mirror", "chunk", "header", "truncate", "swap")


def mutate(segments: list[bytearray], draw) -> str:
    """One mutation of one segment, in place; returns what it did."""
    which = draw(st.integers(0, len(segments) - 1))
    seg = segments[which]
    kind = draw(st.sampled_from(KINDS))
    refix = draw(st.booleans()) or draw(st.booleans())  # mostly made consistent again
    found = sections(seg)
    tabs = tables(seg)
    if kind == "descriptor" and found:
        at, _k, following, size = draw(st.sampled_from(found))
        field = draw(st.sampled_from(["type", "next", "size", "checksum"]))
        if field == "type":
            name = draw(st.sampled_from([b"table", b"table2", b"sectors", b"next", b"done",
                                         b"volume", b"hash", b"bogus"]))  # fmt: skip
            seg[at : at + 16] = name.ljust(16, b"\0")
        elif field == "next":
            value = draw(st.sampled_from([0, at, at + DESCRIPTOR, following - 1, following + 1,
                                          len(seg), len(seg) + 1, 2**63]))  # fmt: skip
            struct.pack_into("<Q", seg, at + 16, value)
        elif field == "size":
            value = draw(st.sampled_from([0, DESCRIPTOR, size - 1, size + 1, 2 * size, 2**63]))
            struct.pack_into("<Q", seg, at + 24, max(value, 0))
        else:
            seg[at + 72] ^= 1 << draw(st.integers(0, 7))
            refix = False
        if refix:
            fix_descriptor(seg, at)
        return f"{which}: descriptor {field} at {at}"
    if kind in ("table", "entry", "mirror", "swap") and tabs:
        pool = [t for t in tabs if t[1] == b"table2"] if kind == "mirror" else tabs
        if not pool:
            return "nothing"
        at, _k, count, base = draw(st.sampled_from(pool))
        head = at + DESCRIPTOR
        if kind == "table":
            field = draw(st.sampled_from(["count", "base", "checksum"]))
            if field == "count":
                value = draw(st.sampled_from([0, count - 1, count + 1, 2**20 + 1, 2**32 - 1]))
                struct.pack_into("<I", seg, head, value % 2**32)
            elif field == "base":
                value = draw(st.sampled_from([base - 1, base + 1, base + CHUNK, 0, 2**31, 2**63]))
                struct.pack_into("<Q", seg, head + 8, value % 2**64)
            else:
                seg[head + 20] ^= 1 << draw(st.integers(0, 7))
                refix = False
            if refix:
                fix_table(seg, at, count)
            return f"{which}: table {field} at {at}"
        if count == 0:
            return "nothing"
        i = draw(st.integers(0, count - 1))
        targets = [t for t in tabs if t[2] == count and (kind != "mirror" or t[0] == at)]
        both = kind != "mirror" and draw(st.booleans())  # the same change in table and table2
        for t_at, _tk, t_count, _tb in targets if both else [(at, None, count, None)]:
            entries = t_at + DESCRIPTOR + 24
            if kind == "swap":
                j = draw(st.integers(0, count - 1))
                a = seg[entries + 4 * i : entries + 4 * i + 4]
                seg[entries + 4 * i : entries + 4 * i + 4] = seg[
                    entries + 4 * j : entries + 4 * j + 4
                ]
                seg[entries + 4 * j : entries + 4 * j + 4] = a
            else:
                value = struct.unpack_from("<I", seg, entries + 4 * i)[0]
                op = draw(st.sampled_from(["flag", "+1", "-1", "+76", "zero", "max", "other"]))
                value = {
                    "flag": value ^ 0x80000000,
                    "+1": value + 1,
                    "-1": value - 1,
                    "+76": value + 76,
                    "zero": value & 0x80000000,
                    "max": value | 0x7FFFFFFF,
                    "other": struct.unpack_from("<I", seg, entries + 4 * ((i + 1) % count))[0],
                }[op] % 2**32
                struct.pack_into("<I", seg, entries + 4 * i, value)
            if refix:
                fix_table(seg, t_at, t_count)
        return f"{which}: {kind} entry {i} of the table at {at}"
    if kind == "chunk" and tabs:
        at, _k, count, base = tabs[0]
        if count == 0:
            return "nothing"
        i = draw(st.integers(0, count - 1))
        entry = struct.unpack_from("<I", seg, at + DESCRIPTOR + 24 + 4 * i)[0]
        start = (entry & 0x7FFFFFFF) + base
        if start >= len(seg):
            return "nothing"
        pos = start + draw(st.integers(0, CHUNK + 3))
        if pos < len(seg):
            seg[pos] ^= 1 << draw(st.integers(0, 7))
        if refix and not entry & 0x80000000 and start + CHUNK + 4 <= len(seg):
            data = bytes(seg[start : start + CHUNK])  # an uncompressed chunk: its checksum
            struct.pack_into("<I", seg, start + CHUNK, zlib.adler32(data))
        return f"{which}: chunk {i} byte {pos - start}"
    if kind == "header":
        pos = draw(st.integers(0, 12))
        seg[pos] ^= 1 << draw(st.integers(0, 7))
        return f"{which}: header byte {pos}"
    if kind == "truncate":
        cut = draw(st.integers(13, len(seg)))
        del seg[cut:]
        return f"{which}: cut at {cut}"
    return "nothing"


def check_against_libewf(paths: list[Path]) -> dict:
    """Every chunk through EwfImage equals libewf's answer for the same files."""
    started = time.perf_counter()
    try:
        ref = reference(paths)
    except (OSError, RuntimeError, ValueError, TypeError):
        with pytest.raises((ContainerError, OSError, RuntimeError, ValueError, TypeError)):
            EwfImage(str(paths[0])).close()
        return {"opened": False}
    try:
        if paths[0].read_bytes()[:8] in L01:  # libewf opens it; rmmscan refuses it by design
            with pytest.raises(ContainerError, match="logical evidence file"):
                EwfImage(str(paths[0]))
            return {"opened": False}
        image = EwfImage(str(paths[0]))
    except BaseException:
        ref.close()
        raise
    try:
        size = ref.get_media_size()
        assert image.size == size
        for offset in range(0, size, image.block):
            want = min(image.block, size - offset)
            theirs = outcome(lambda o, n: ref.read_buffer_at_offset(n, o), offset, want)
            ours = outcome(image._read, offset, want)
            assert ours == theirs, f"chunk at {offset:,}: {ours[0]} where libewf: {theirs[0]}"
        assert time.perf_counter() - started < TIME_BOUND
        chunks = image.chunks
        return {"opened": True, "tables": chunks is not None,
                "inflated": chunks.inflated if chunks else 0,
                "declined": chunks.declined if chunks else 0}  # fmt: skip
    finally:
        image.close()
        ref.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    verbosity=Verbosity.quiet,
)
@given(data=st.data())
def test_mutated_e01_reads_as_libewf_reads_it(seeds, data):
    name = data.draw(st.sampled_from(["fast", "none-split", "fast-split", "empty-block"]))
    originals = seeds[name]
    segments = [bytearray(p.read_bytes()) for p in originals]
    done = [mutate(segments, data.draw) for _ in range(data.draw(st.integers(1, 3)))]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for original, seg in zip(originals, segments, strict=True):
            path = Path(tmp) / original.name
            path.write_bytes(seg)
            paths.append(path)
        note = f"{name}: {done}"
        try:
            found = check_against_libewf(paths)
        except AssertionError as exc:
            raise AssertionError(f"{note}: {exc}") from None
    event("libewf opens it" if found["opened"] else "libewf refuses it")
    if found["opened"]:
        read = "none" if not found["inflated"] else "some" if found["declined"] else "all"
        event(f"the reader: tables {'read' if found['tables'] else 'refused'}, chunks {read}")


def test_the_reader_declines_what_it_does_not_know(seeds, tmp_path):
    """A table whose entries' checksum is wrong, and a table2 that is not its table's copy:
    that table's chunks are libewf's, the others still the reader's."""
    originals = seeds["fast"]
    seg = bytearray(originals[0].read_bytes())
    (at, _kind, count, _base), mirror = tables(seg)[0], tables(seg)[1]
    assert mirror[1] == b"table2"
    entries = mirror[0] + DESCRIPTOR + 24
    struct.pack_into("<I", seg, entries, struct.unpack_from("<I", seg, entries)[0] ^ 1)
    fix_table(seg, mirror[0], count)
    path = tmp_path / originals[0].name
    path.write_bytes(seg)
    found = check_against_libewf([path])
    assert found["opened"] and found["tables"] and found["inflated"] == 0
    assert os.path.getsize(path) == len(seg) and at < mirror[0]


def test_a_segment_of_several_tables(tmp_path):
    """libewf puts at most 65,534 chunks in a table: a larger segment holds several sectors
    sections, each followed by its table and table2. 8 KiB chunks keep the medium small."""
    raw = tmp_path / "sparse.raw"
    size = 520 * 1024 * 1024
    rng = random.Random(3)
    with open(raw, "wb") as f:
        f.truncate(size)
        for at in (0, 8192 * 65533, 8192 * 65534, size - 8192):  # each table's edges
            f.seek(at)
            f.write(rng.randbytes(8192))
    base = tmp_path / "tables"
    build.run("ewfacquire", "-u", "-q", "-t", base, "-f", "encase6", "-c", "fast", "-b", "16",
              "-m", "fixed", "-M", "physical", "-C", "c", "-D", "d", "-E", "e", "-e", "e",
              "-N", "n", raw)  # fmt: skip
    first = base.with_name(base.name + ".E01")
    assert len([t for t in tables(first.read_bytes()) if t[1] == b"table"]) == 2
    image = EwfImage(str(first))
    ref = reference([first])
    try:
        assert image.chunks is not None and image.block == 8192
        with open(raw, "rb") as f:
            for index in (0, 1, 65533, 65534, 65535, size // 8192 - 1):
                f.seek(index * 8192)
                data = f.read(8192)
                got = image._read(index * 8192, 8192)
                assert got == ref.read_buffer_at_offset(8192, index * 8192) == data
        assert image.chunks.declined == 0
    finally:
        image.close()
        ref.close()


def test_a_forked_process_reads_what_the_reader_declines_with_a_handle_of_its_own(seeds, tmp_path):
    """A scan process forked from the one that opened the E01 reads its chunks by pread and
    what the reader declines through a libewf handle it opens itself (forked): libewf's reads
    move a file offset that the processes would otherwise share. Every chunk is libewf's."""
    originals = seeds["fast"]
    seg = bytearray(originals[0].read_bytes())
    mirror = tables(seg)[1]
    entries = mirror[0] + DESCRIPTOR + 24
    struct.pack_into("<I", seg, entries, struct.unpack_from("<I", seg, entries)[0] ^ 1)
    fix_table(seg, mirror[0], mirror[2])
    path = tmp_path / originals[0].name
    path.write_bytes(seg)
    image = EwfImage(str(path))
    assert image.fork_safe
    inherited = image.handle
    expected = media(1)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the scan process: whatever happens, it answers and ends here
        try:
            image.forked()
            same = all(
                image._read(offset, min(CHUNK, MEDIA - offset))
                == expected[offset : offset + min(CHUNK, MEDIA - offset)]
                for offset in range(0, MEDIA, CHUNK)
            )
            own = image.handle is not inherited and image.handle._handle is not None
            answer = f"{same} {own} {image.chunks.declined > 0}"
        except BaseException as exc:  # reported to the test
            answer = repr(exc)
        os.write(writer, answer.encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answers:
        answer = answers.read().decode()
    os.waitpid(pid, 0)
    image.close()
    assert answer == "True True True", answer
