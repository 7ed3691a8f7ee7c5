"""Trace import (issue 5, `epcsim.workload.traces`): round trips for every format, error
messages naming the file and the line or record, skip_bad counting, a real valgrind
lackey trace against an independent parse, the shared cloudPhysicsIO trace in both of
its formats, dense mapping, the trace as a Pattern, statistics, and `epcsim trace`."""

from __future__ import annotations

import gzip
import re
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.errors import EpcsimError, EpcsimUsageError
from epcsim.workload.patterns import Pattern
from epcsim.workload.traces import (
    FORMATS,
    PAGE_SIZE,
    DenseMapper,
    TraceError,
    TracePattern,
    TraceReader,
    auto_window,
    convert_trace,
    detect_format,
    format_for_output,
    get_format,
    open_trace,
    stack_distances,
    trace_stats,
    write_trace,
)
from epcsim.workload.traces.oracle import ORACLE_DTYPE

ROOT = Path(__file__).resolve().parents[2]
LACKEY_TRUE = ROOT / "tests" / "data" / "lackey-true.txt.gz"
SHARED = ROOT.parent / "shared" / "data" / "traces"
CP_BIN = SHARED / "cloudPhysicsIO.oracleGeneral.bin"
CP_CSV = SHARED / "cloudPhysicsIO.csv"
needs_shared = pytest.mark.skipif(not CP_BIN.exists(), reason="shared/ data not present")

#: pages every round trip writes: repeats, 0, pages past 2**32, one past 2**63 (int64 < 0)
PAGES = np.array([5, 3, 5, 0, 7, 2**32 + 1, 3, 2**40, 5, -2, 9, 9], dtype=np.int64)
SMALL = np.array([5, 3, 5, 0, 7, 1, 3, 4095, 5, 2, 9, 9], dtype=np.int64)


def read_all(reader: TraceReader) -> np.ndarray:
    chunks = list(reader)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def lackey_text(pages: np.ndarray) -> str:
    """A lackey-style trace touching *pages* (with offsets inside each page)."""
    kinds = ["I  {:08x},3", " L {:08x},8", " S {:08x},4", " M {:08x},8"]
    lines = ["==1== Lackey, an example Valgrind tool", "==1== "]
    for i, p in enumerate(pages.tolist()):
        lines.append(kinds[i % 4].format(p * PAGE_SIZE + (i * 37) % PAGE_SIZE))
    lines += ["==1== ", "==1== Exit code:       0"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["native", "npy", "text", "oracleGeneral"])
@pytest.mark.parametrize("pages", [PAGES, SMALL], ids=["wide", "small"])
def test_round_trip_writable_formats(tmp_path: Path, fmt: str, pages: np.ndarray) -> None:
    """write_trace then open_trace gives the same pages, any chunking."""
    path = tmp_path / "t"
    assert write_trace(pages, path, format=fmt) == pages.size
    r = open_trace(path, format=fmt, chunk=5)
    assert r.format_name == fmt
    assert np.array_equal(read_all(r), pages)
    assert r.count() == pages.size
    got = list(r.pages(chunk=4))
    assert [c.size for c in got] == [4, 4, 4]
    assert all(c.dtype == np.int64 for c in got)


@pytest.mark.parametrize("fmt", ["native", "npy", "text", "oracleGeneral"])
def test_transient_pages_are_the_pass_in_one_buffer(tmp_path: Path, fmt: str) -> None:
    """transient_pages(): the same pages as a pass of pages(); the binary formats read
    each chunk into the buffer of the one before (the numbering pass keeps no chunk),
    and a pass of pages() afterwards gets fresh arrays again."""
    path = tmp_path / "t"
    write_trace(PAGES, path, format=fmt)
    r = open_trace(path, format=fmt, chunk=5)
    firsts = []
    got = []
    for c in r.transient_pages():
        got.append(c.copy())
        firsts.append(c.__array_interface__["data"][0])
    assert np.array_equal(np.concatenate(got), PAGES)
    if fmt in ("native", "npy"):  # (oracleGeneral: the ids are copied out of records)
        assert len(set(firsts)) == 1, firsts
    kept = list(r.pages())
    assert np.array_equal(np.concatenate(kept), PAGES)
    assert len({c.__array_interface__["data"][0] for c in kept}) == len(kept)


@pytest.mark.parametrize("fmt", ["native", "npy", "oracleGeneral"])
def test_transient_pass_reads_transient_chunks(tmp_path: Path, fmt: str, monkeypatch) -> None:
    """The binary readers read a transient pass in pieces of at most TRANSIENT_CHUNK
    items (the reused buffer stays in the cache); pages() and read() keep the reader's
    chunk."""
    from epcsim.workload.traces import _base

    monkeypatch.setattr(_base, "TRANSIENT_CHUNK", 3)
    path = tmp_path / "t"
    write_trace(PAGES, path, format=fmt)
    r = open_trace(path, format=fmt, chunk=5)
    sizes = [c.size for c in r.transient_pages()]
    assert sizes == [3] * (PAGES.size // 3) + ([PAGES.size % 3] if PAGES.size % 3 else [])
    assert [c.size for c in r.pages()] == [5, 5, 2]
    assert r.read(5).size == 5
    small = open_trace(path, format=fmt, chunk=2)  # a chunk below it is kept
    assert [c.size for c in small.transient_pages()] == [2] * 6


def test_round_trip_csv(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{p},4096" for i, p in enumerate(PAGES.view(np.uint64).tolist()))
    path = tmp_path / "t.csv"
    path.write_text("time,obj_id,size\n" + rows + "\n")
    assert np.array_equal(read_all(open_trace(path)), PAGES)
    headerless = tmp_path / "h.csv"
    headerless.write_text(rows.replace(",", ";") + "\n")
    r = open_trace(headerless, obj_id_col=2, delimiter=";", chunk=3)
    assert not r.has_header
    assert np.array_equal(read_all(r), PAGES)


def test_round_trip_lackey(tmp_path: Path) -> None:
    path = tmp_path / "t.lackey"
    path.write_text(lackey_text(SMALL))
    assert np.array_equal(read_all(open_trace(path)), SMALL)


def test_round_trip_through_every_writable_format(tmp_path: Path) -> None:
    """lackey → native → npy → text → oracleGeneral → native: the pages survive."""
    src = tmp_path / "a.lackey"
    src.write_text(lackey_text(SMALL))
    reader = open_trace(src)
    for i, fmt in enumerate(["native", "npy", "text", "oracleGeneral", "native"]):
        out = tmp_path / f"step{i}"
        assert convert_trace(reader, out, to=fmt) == SMALL.size
        reader = open_trace(out, format=fmt)
    assert np.array_equal(read_all(reader), SMALL)


def test_native_chooses_item_size(tmp_path: Path) -> None:
    """uint32 when every page fits, uint64 otherwise or for a one-shot iterator."""
    small, wide, once = tmp_path / "s.epct", tmp_path / "w.epct", tmp_path / "o.epct"
    write_trace(SMALL, small)
    write_trace(PAGES, wide)
    write_trace(iter([SMALL[:5], SMALL[5:]]), once)
    assert small.stat().st_size == 24 + 4 * SMALL.size
    assert wide.stat().st_size == 24 + 8 * PAGES.size
    assert once.stat().st_size == 24 + 8 * SMALL.size
    head = struct.unpack("<8sHBBIQ", small.read_bytes()[:24])
    assert head == (b"EPCTRACE", 1, 4, 0, 0, SMALL.size)
    for p in (small, once):
        assert np.array_equal(read_all(open_trace(p)), SMALL)


def test_npy_dtypes_and_numpy_compat(tmp_path: Path) -> None:
    """Any 1-D integer array np.save wrote reads back; our writer's file np.load reads."""
    for dtype in ("<i4", ">u2", "<u8", ">i8"):
        p = tmp_path / f"a{dtype[1:]}{dtype[0] == '>'}.npy"
        np.save(p, SMALL.astype(dtype))
        assert np.array_equal(read_all(open_trace(p)), SMALL)
    ours = tmp_path / "ours.npy"
    write_trace(iter([PAGES[:3], PAGES[3:]]), ours, format="npy")
    assert np.array_equal(np.load(ours), PAGES)
    empty = tmp_path / "empty.npy"
    write_trace([], empty, format="npy")
    assert np.load(empty).shape == (0,)
    assert read_all(open_trace(empty)).size == 0


def test_oracle_writer_next_access_and_sizes(tmp_path: Path) -> None:
    """next_access_vtime is the 1-based position of the next access (-1: none), across
    the writer's backward chunks; every object is 4096 bytes."""
    rng = np.random.default_rng(7)
    pages = rng.integers(0, 40, 1000)
    path = tmp_path / "t.bin"
    write_trace(pages, path, format="oracleGeneral")
    from epcsim.workload.traces.oracle import _fill_next_access

    _fill_next_access(path, pages.size, chunk=37)  # again, with many small chunks
    rec = np.fromfile(path, dtype=ORACLE_DTYPE)
    expect = np.full(pages.size, -1)
    seen: dict[int, int] = {}
    for i in range(pages.size - 1, -1, -1):
        expect[i] = seen.get(int(pages[i]), -1)
        seen[int(pages[i])] = i + 1
    assert np.array_equal(rec["next_access_vtime"], expect)
    assert np.array_equal(rec["obj_id"], pages)
    assert (rec["obj_size"] == 4096).all()
    assert np.array_equal(rec["clock_time"], np.arange(1, pages.size + 1))


# --------------------------------------------------------------------------- options


def test_text_hex_decimal_blank_lines_and_addresses(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("0x10\n\n  17 \n0X1f\n4096\n0x7fffffffffffffff\n0xffffffffffffffff")
    assert read_all(open_trace(path)).tolist() == [16, 17, 31, 4096, 2**63 - 1, -1]
    addr = read_all(open_trace(path, unit="address"))
    assert addr.tolist() == [0, 0, 0, 1, 2**51 - 1, 2**52 - 1]


def test_gzip_is_transparent(tmp_path: Path) -> None:
    path = tmp_path / "t.txt.gz"
    path.write_bytes(gzip.compress(b"1\n2\n0x3\n"))
    r = open_trace(path)
    assert r.format_name == "text"
    assert read_all(r).tolist() == [1, 2, 3]


def test_lackey_collapse_and_kinds(tmp_path: Path) -> None:
    path = tmp_path / "t.lackey"
    pages = np.array([1, 1, 1, 2, 2, 1, 3, 3], dtype=np.int64)
    path.write_text(lackey_text(pages))  # kinds cycle I, L, S, M
    assert read_all(open_trace(path, collapse=True)).tolist() == [1, 2, 1, 3]
    # collapse holds across chunk boundaries
    assert read_all(open_trace(path, collapse=True, chunk=1)).tolist() == [1, 2, 1, 3]
    assert read_all(open_trace(path, kinds="I")).tolist() == [1, 2]
    assert read_all(open_trace(path, kinds="LSM", collapse=True)).tolist() == [1, 2, 1, 3]
    # an access straddling a page boundary counts for the page of its first byte
    path.write_text(" L 00000ffc,8\n")
    assert read_all(open_trace(path, format="lackey")).tolist() == [0]


def test_csv_columns_header_and_string_ids(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("ts,key,sz\n1,a,10\n2,b,20\n3,a,30\n\n4,c,40\n")
    r = open_trace(path, obj_id_col="key", obj_id_is_num="false")
    assert r.has_header
    assert read_all(r).tolist() == [0, 1, 0, 2]
    assert read_all(open_trace(path, obj_id_col="3")).tolist() == [10, 20, 30, 40]


def test_csv_address_mapping(tmp_path: Path) -> None:
    """block x block_size // 4096, a request spanning pages touching each in order."""
    path = tmp_path / "t.csv"
    # block 0 (1 page), block 7 + 4096 B = bytes 3584..7679 (pages 0, 1),
    # block 16 + 0 B (page 2), block 100 + 9000 B = bytes 51200..60199 (pages 12..14)
    path.write_text("lbn,size\n0,512\n7,4096\n16,0\n100,9000\n")
    assert read_all(open_trace(path)).tolist() == [0, 7, 16, 100]
    got = read_all(open_trace(path, mapping="address"))
    assert got.tolist() == [0, 0, 1, 2, 12, 13, 14]
    by_page = read_all(open_trace(path, mapping="address", block_size=4096))
    assert by_page.tolist() == [0, 7, 16, 100, 101, 102]


def test_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("1\n")
    with pytest.raises(TraceError) as e:
        open_trace(path, format="text", units="page")
    assert str(e.value) == "format 'text': unknown option 'units' (valid: chunk, skip_bad, unit)"
    with pytest.raises(TraceError, match=r"option unit: expected one of page, address"):
        open_trace(path, unit="byte")
    with pytest.raises(TraceError, match=r"option skip_bad: expected true or false"):
        open_trace(path, skip_bad="maybe")
    assert open_trace(path, skip_bad="yes", chunk="3").chunk == 3


# --------------------------------------------------------------------------- errors


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bin"
    with pytest.raises(TraceError) as e:
        open_trace(missing)
    assert str(e.value) == f"{missing}: no such file"
    assert isinstance(e.value, EpcsimError)
    with pytest.raises(TraceError) as e:
        open_trace(tmp_path)
    assert str(e.value) == f"{tmp_path}: not a file"
    (tmp_path / "x.txt").write_text("1\n")
    with pytest.raises(TraceError) as e:
        open_trace(tmp_path / "x.txt", format="parquet")
    assert str(e.value) == (
        "unknown trace format 'parquet' (one of oracleGeneral, csv, lackey, text, npy, native)"
    )


def test_truncated_oracle_record(tmp_path: Path) -> None:
    path = tmp_path / "t.oracleGeneral.bin"
    write_trace(SMALL[:3], path, format="oracleGeneral")
    with open(path, "ab") as f:
        f.write(b"\x01" * 5)
    with pytest.raises(TraceError) as e:
        open_trace(path)
    assert str(e.value) == (
        f"{path}: record 4: truncated record (5 of 24 bytes; "
        "the file size 77 is not a multiple of 24)"
    )
    assert (e.value.file, e.value.record, e.value.line) == (str(path), 4, None)
    r = open_trace(path, skip_bad=True)
    assert read_all(r).tolist() == SMALL[:3].tolist()
    assert r.skipped == 1
    assert r.count() == 3


def test_bad_hex_in_text(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("1\n0x1f\n0xZZ\n4\n-5\n" + "7\n" * 3)
    with pytest.raises(TraceError) as e:
        read_all(open_trace(path))
    assert str(e.value) == (
        f"{path}: line 3: bad page number '0xZZ' (expected a decimal or 0x hex integer)"
    )
    assert e.value.line == 3
    r = open_trace(path, skip_bad=True)
    assert read_all(r).tolist() == [1, 31, 4, 7, 7, 7]
    assert r.skipped == 2
    big = tmp_path / "big.txt"
    big.write_text("1\n0x10000000000000000\n")
    with pytest.raises(TraceError) as e:
        read_all(open_trace(big, unit="address"))
    too_big = "'0x10000000000000000' out of range (2**64 or more)"
    assert str(e.value) == f"{big}: line 2: address {too_big}"


def test_missing_csv_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("1,10\n2,20\n3\n4,40\n5,x\n")
    with pytest.raises(TraceError) as e:
        read_all(open_trace(path, obj_id_col=2))
    assert str(e.value) == (
        f"{path}: line 3: missing column 2 (obj_id_col; the line has 1 field): '3'"
    )
    r = open_trace(path, obj_id_col=2, skip_bad=True)
    assert read_all(r).tolist() == [10, 20, 40]
    assert r.skipped == 2
    with pytest.raises(TraceError) as e:
        read_all(open_trace(path, obj_id_col=2, has_header=False, chunk=2))
    assert e.value.line == 3
    header = tmp_path / "h.csv"
    header.write_text("time,lbn\n1,2\n")
    with pytest.raises(TraceError) as e:
        open_trace(header, obj_id_col="obj")
    assert str(e.value) == (
        f"{header}: line 1: option obj_id_col: no column 'obj' in the header (time, lbn)"
    )
    noid = tmp_path / "n.csv"
    noid.write_text("time,size\n1,2\n")
    with pytest.raises(TraceError, match=r"option obj_id_col not given"):
        open_trace(noid)
    bad_id = tmp_path / "b.csv"
    bad_id.write_text("lbn\n1\n-2\n")
    with pytest.raises(TraceError) as e:
        read_all(open_trace(bad_id))
    assert str(e.value) == (
        f"{bad_id}: line 3: bad object id '-2' in column 1 (expected an integer in [0, 2**64))"
    )


def test_malformed_lackey_line(tmp_path: Path) -> None:
    path = tmp_path / "t.lackey"
    path.write_text("==1== Lackey\nI  04001000,3\n X 04002000,8\n L 04003000,8\nhello\n")
    with pytest.raises(TraceError) as e:
        read_all(open_trace(path))
    assert str(e.value) == (
        f"{path}: line 3: malformed lackey line ' X 04002000,8' (expected 'I  ADDR,SIZE', "
        "' L ADDR,SIZE', ' S ...' or ' M ...', ADDR hex, or a '==' line)"
    )
    r = open_trace(path, skip_bad=True)
    assert read_all(r).tolist() == [0x4001, 0x4003]
    assert r.skipped == 2


def test_native_and_npy_bad_files(tmp_path: Path) -> None:
    p = tmp_path / "t.epct"
    write_trace(SMALL, p)
    p.write_bytes(p.read_bytes()[:-6])
    with pytest.raises(TraceError) as e:
        open_trace(p)
    assert str(e.value) == f"{p}: record 11: truncated: the header says 12 pages, the file holds 10"
    r = open_trace(p, skip_bad=True)
    assert read_all(r).tolist() == SMALL[:10].tolist() and r.skipped == 1
    q = tmp_path / "bad.epct"
    q.write_bytes(b"NOTATRACE" * 4)
    with pytest.raises(TraceError, match=r"no EPCTRACE header"):
        open_trace(q, format="native")
    f = tmp_path / "f.npy"
    np.save(f, np.zeros(3))
    with pytest.raises(TraceError) as e:
        open_trace(f)
    assert str(e.value) == f"{f}: a .npy trace holds integers, this one float64"


def test_detect_format(tmp_path: Path) -> None:
    cases = {
        "a.oracleGeneral.bin": ("oracleGeneral", b"\0" * 24),
        "a.csv": ("csv", b"lbn\n1\n"),
        "a.npy": ("npy", None),
        "a.txt": ("text", b"12\n0x3\n"),
        "b.txt": ("lackey", b"==9== Lackey\nI  0400,3\n"),
        "trace.out": ("lackey", b"I  0400,3\n"),
        "pages": ("text", b"7\n"),
    }
    for name, (fmt, data) in cases.items():
        p = tmp_path / name
        if data is None:
            np.save(p, SMALL)
        else:
            p.write_bytes(data)
        assert detect_format(p).name == fmt, name
    native = tmp_path / "no-extension"
    write_trace(SMALL, native)
    assert detect_format(native).name == "native"
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello world\n")
    with pytest.raises(TraceError) as e:
        detect_format(junk)
    assert str(e.value) == (
        f"{junk}: cannot tell the trace format "
        "(give one of oracleGeneral, csv, lackey, text, npy, native)"
    )
    assert get_format("ORACLE").name == "oracleGeneral"
    assert format_for_output("x.npy") == "npy" and format_for_output("X.oracleGeneral.BIN") == (
        "oracleGeneral"
    )
    with pytest.raises(TraceError) as e:
        format_for_output("x.dat")
    assert str(e.value) == (
        "x.dat: no writable trace format has this extension (use oracleGeneral "
        ".oracleGeneral.bin .oracleGeneral .bin; text .txt; npy .npy; native .epct)"
    )


# --------------------------------------------------------------------------- reader API


def test_reader_protocol_cursor_reset_clone(tmp_path: Path) -> None:
    path = tmp_path / "t.npy"
    write_trace(PAGES, path, format="npy")
    r = open_trace(path, chunk=5)
    assert isinstance(r, TraceReader)
    assert r.read(3).tolist() == PAGES[:3].tolist()
    # iterating is a fresh pass and does not move the cursor
    assert np.array_equal(read_all(r), PAGES)
    assert r.read(20).tolist() == PAGES[3:].tolist()
    assert r.read(5).size == 0
    r.reset()
    assert r.read(2).tolist() == PAGES[:2].tolist()
    c = r.clone()
    assert c.read(1).tolist() == PAGES[:1].tolist()
    assert c.options == r.options
    with pytest.raises(EpcsimUsageError):
        r.read(-1)


def test_every_registered_format_has_a_reader_and_docs() -> None:
    docs = (ROOT / "docs" / "TRACES.md").read_text()
    for name, fmt in FORMATS.items():
        assert fmt.reader.format_name == name
        assert f"`{name}`" in docs
        for opt in fmt.options:
            assert f"`{opt.name}`" in docs, (name, opt.name)


# --------------------------------------------------------------------------- real traces


def _independent_lackey_pages(path: Path) -> tuple[list[int], int]:
    """Pages of a lackey trace parsed the plain way, and valgrind's guest instrs."""
    pages = []
    instrs = -1
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith("=="):
                if "guest instrs:" in line:
                    instrs = int(line.split(":")[1].replace(",", ""))
                continue
            kind, rest = line.split()
            assert kind in ("I", "L", "S", "M")
            pages.append(int(rest.split(",")[0], 16) // 4096)
    return pages, instrs


def test_real_lackey_trace_footprint() -> None:
    """valgrind --tool=lackey --trace-mem=yes /bin/true (tests/data/README.md)."""
    expect, instrs = _independent_lackey_pages(LACKEY_TRUE)
    r = open_trace(LACKEY_TRUE)
    assert r.format_name == "lackey"
    got = read_all(r)
    assert got.tolist() == expect
    assert r.count() == len(expect) == 167_440
    assert len(set(expect)) == 139
    stats = trace_stats(r)
    assert stats["footprint_pages"] == len(set(expect))
    assert stats["footprint_bytes"] == 139 * 4096
    assert stats["accesses"] == len(expect)
    # the instruction fetches are the instructions valgrind says it executed
    assert read_all(open_trace(LACKEY_TRUE, kinds="I")).size == instrs == 127_771
    collapsed = read_all(open_trace(LACKEY_TRUE, collapse=True))
    keep = [p for i, p in enumerate(expect) if i == 0 or p != expect[i - 1]]
    assert collapsed.tolist() == keep
    assert len(set(keep)) == 139


@needs_shared
def test_shared_cloudphysics_formats_agree() -> None:
    """The CSV's lbn column is the oracleGeneral obj_id, request for request, so both
    readers give the same pages (48,974 of them); the byte mappings differ because the
    binary carries each object's first-seen size (13,671 requests differ)."""
    og = read_all(open_trace(CP_BIN))
    cs = read_all(open_trace(CP_CSV))  # obj_id_col defaults to the lbn column
    assert og.size == cs.size == 113_872
    assert np.array_equal(og, cs)
    assert np.unique(og).size == 48_974
    rec = np.fromfile(CP_BIN, dtype=ORACLE_DTYPE)
    csv_size = np.loadtxt(CP_CSV, delimiter=",", skiprows=1, usecols=3, dtype=np.int64)
    assert int((csv_size != rec["obj_size"]).sum()) == 13_671
    first: dict[int, int] = {}
    for i, s in zip(og.tolist(), csv_size.tolist()):
        first.setdefault(i, s)
    assert all(first[i] == s for i, s in zip(og.tolist(), rec["obj_size"].tolist()))
    # address mapping: lbn x 512 // 4096, each request's pages in order
    csv_addr = read_all(open_trace(CP_CSV, mapping="address"))
    og_addr = read_all(open_trace(CP_BIN, mapping="address"))
    assert (csv_addr.size, np.unique(csv_addr).size) == (1_141_869, 269_210)
    assert (og_addr.size, np.unique(og_addr).size) == (1_182_153, 268_270)
    # writing the pages back as oracleGeneral reproduces next_access_vtime exactly
    assert np.array_equal(rec["obj_id"], og.view(np.uint64))


@needs_shared
def test_shared_cloudphysics_oracle_rewrite(tmp_path: Path) -> None:
    out = tmp_path / "cp.oracleGeneral.bin"
    write_trace(open_trace(CP_BIN), out, format="oracleGeneral")
    a = np.fromfile(CP_BIN, dtype=ORACLE_DTYPE)
    b = np.fromfile(out, dtype=ORACLE_DTYPE)
    assert np.array_equal(a["obj_id"], b["obj_id"])
    assert np.array_equal(a["next_access_vtime"], b["next_access_vtime"])


@needs_shared
def test_shared_cloudphysics_stats_against_lru() -> None:
    """Exact reuse distances predict an LRU cache's hits at any size (d < C)."""
    stats = trace_stats(open_trace(CP_BIN))
    assert stats["accesses"] == 113_872
    assert stats["footprint_pages"] == 48_974
    assert stats["footprint_bytes"] == 48_974 * 4096
    assert stats["reuse"]["method"] == "exact"
    assert stats["reuse"]["reaccesses"] == 113_872 - 48_974
    d = stack_distances(read_all(open_trace(CP_BIN)))
    pages = read_all(open_trace(CP_BIN)).tolist()
    for cap in (1000, 20_000):
        lru: OrderedDict[int, None] = OrderedDict()
        hits = 0
        for p in pages:
            if p in lru:
                hits += 1
                lru.move_to_end(p)
            else:
                lru[p] = None
                if len(lru) > cap:
                    lru.popitem(last=False)
        assert hits == int((d < cap).sum()), cap
    assert stats["window"] == 10_000
    assert len(stats["wss"]) == 12
    assert stats["wss"][0] == np.unique(pages[:10_000]).size


# --------------------------------------------------------------------------- mapping


def test_dense_mapper_first_seen_order_across_chunks() -> None:
    m = DenseMapper()
    assert m.map(np.array([50, 7, 50, -3])).tolist() == [0, 1, 0, 2]
    assert m.map(np.array([9, 7, 2**40, 9])).tolist() == [3, 1, 4, 3]
    assert len(m) == m.footprint == 5
    assert m.pages().tolist() == [50, 7, -3, 9, 2**40]
    assert m.lookup(np.array([2**40, 50])).tolist() == [4, 0]
    with pytest.raises(TraceError, match="page 8 was not in the trace"):
        m.lookup(np.array([8]))


def test_trace_pattern_wraps_and_ignores_rng(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("\n".join(str(p) for p in [40, 10, 40, 30, 10]) + "\n")
    pat = TracePattern(open_trace(path, chunk=2))
    assert isinstance(pat, Pattern)
    assert (pat.npages, pat.footprint, pat.length) == (3, 3, 5)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    got = np.concatenate([pat.take(rng, 3), pat.take(None, 0), pat.take(rng, 9)])  # type: ignore[arg-type]
    assert got.tolist() == [0, 1, 0, 2, 1] + [0, 1, 0, 2, 1] + [0, 1]
    assert rng.bit_generator.state == state
    assert pat.passes == 2
    assert got.dtype == np.int64
    with pytest.raises(EpcsimUsageError):
        pat.take(rng, -1)
    empty = tmp_path / "e.txt"
    empty.write_text("\n")
    with pytest.raises(TraceError, match="the trace has no accesses"):
        TracePattern(open_trace(empty))


def test_trace_pattern_keeps_uint16_numbers_while_they_fit(tmp_path: Path, monkeypatch) -> None:
    """The numbering pass keeps each chunk's numbers as uint16 while the footprint so
    far fits (NARROW_TOP), as int32 from the chunk whose new pages outgrow it (that
    chunk numbered again, its new pages not counted twice); the accesses taken are the
    same numbers either way."""
    monkeypatch.setattr(DenseMapper, "NARROW_TOP", 4)
    pages = [7, 3, 7, 9, 3, 1, 2, 8, 7, 5, 6, 1, 11, 4, 3]
    path = tmp_path / "t.npy"
    np.save(path, np.array(pages, np.int64))
    pat = TracePattern(open_trace(path, chunk=4))  # (chunks of 4 in the numbering pass)
    assert pat._kept is not None
    assert [c.dtype for c in pat._kept] == [np.uint16, np.int32, np.int32, np.int32]
    first: dict[int, int] = {}
    want = [first.setdefault(p, len(first)) for p in pages]
    assert pat.npages == len(first) == 10
    assert pat.take(None, len(pages)).tolist() == want  # type: ignore[arg-type]
    assert pat.mapper.pages().tolist() == list(first)


@pytest.mark.parametrize("keep", [True, False])
def test_trace_pattern_take_into_a_buffer(tmp_path: Path, keep: bool, monkeypatch) -> None:
    """take_into() writes the same numbers into the caller's buffer (kept int32 chunks
    or re-read ones), returns the written prefix, and refuses a buffer it cannot fill
    without changing its position."""
    if not keep:
        monkeypatch.setattr(TracePattern, "KEEP_LIMIT", 0)
    path = tmp_path / "t.txt"
    path.write_text("\n".join(str(p) for p in [40, 10, 40, 30, 10]) + "\n")
    a, b = TracePattern(open_trace(path, chunk=2)), TracePattern(open_trace(path, chunk=2))
    assert (a._kept is not None) == keep
    buf = np.full(10, -7, np.int64)
    for n in (3, 0, 9, 4):
        got = b.take_into(None, n, buf)  # type: ignore[arg-type]
        assert got.base is buf or got.size == 0 or np.shares_memory(got, buf)
        assert got.tolist() == a.take(None, n).tolist()  # type: ignore[arg-type]
    # buf[4:9] from the 9-access take (positions 7..11), buf[9] never written
    assert buf[4:].tolist() == [0, 2, 1, 0, 1, -7]
    for bad in (np.zeros(2, np.int64), np.zeros(5, np.int32), np.zeros((5, 1), np.int64)):
        with pytest.raises(EpcsimUsageError, match="take: out must be a 1-D int64 array"):
            b.take_into(None, 3, bad)  # type: ignore[arg-type]
    assert b.take(None, 2).tolist() == a.take(None, 2).tolist()  # type: ignore[arg-type]


# --------------------------------------------------------------------------- statistics


def test_stack_distances_against_an_lru_stack() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        x = rng.integers(0, rng.integers(1, 40), rng.integers(0, 300))
        stack: list[int] = []
        expect = []
        for p in x.tolist():
            if p in stack:
                expect.append(len(stack) - 1 - stack.index(p))
                stack.remove(p)
            stack.append(p)
        assert stack_distances(x).tolist() == expect


def lru_stack_distances(x: np.ndarray) -> list[int]:
    stack: list[int] = []
    expect = []
    for p in x.tolist():
        if p in stack:
            expect.append(len(stack) - 1 - stack.index(p))
            stack.remove(p)
        stack.append(p)
    return expect


def test_reuse_distances_across_tree_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Fenwick tree's positions run out and are renumbered many times (a 4-position
    minimum), in chunks of any size: the distances stay an LRU stack's."""
    from epcsim.workload.traces import _reuse

    monkeypatch.setattr(_reuse, "_MIN_TREE", 4)
    rng = np.random.default_rng(11)
    for pages in [*rng.integers(1, 60, 20), *rng.integers(200, 700, 6)]:
        x = rng.integers(0, pages, rng.integers(0, 3000))
        _, dense = np.unique(x, return_inverse=True)
        rd = _reuse.ReuseDistances()
        got: list[int] = []
        cuts = np.sort(rng.integers(0, x.size + 1, 4))
        for part in np.split(dense, cuts):
            got += rd.add(part, record=True).tolist()
        expect = lru_stack_distances(x)
        assert got == expect
        assert rd.hist.sum() == len(expect)
        assert np.array_equal(np.flatnonzero(rd.hist), np.unique(expect))


def test_reuse_summary_is_numpys_inverted_cdf() -> None:
    from epcsim.workload.traces._stats import _summary

    rng = np.random.default_rng(2)
    for n in (1, 2, 3, 7, 10, 99, 100, 101, 1000, 4321):
        d = rng.integers(0, 50, n)
        s = _summary(np.bincount(d, minlength=60), 1.0, 10**9)
        q = np.percentile(d, [50, 90, 99], method="inverted_cdf")
        assert [s["p50"], s["p90"], s["p99"]] == q.astype(int).tolist()
        assert s["max"] == d.max() and s["mean"] == pytest.approx(d.mean(), rel=1e-12)


def test_collapsed_trace_over_a_million_accesses_is_exact(tmp_path: Path) -> None:
    """`trace info` sampled the reuse distances of traces over 10**6 accesses: a median
    of 0 on a collapsed trace (where no page follows itself: the exact minimum is 1) and
    a maximum above the footprint."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 30_000, 1_300_000)
    x = x[np.r_[True, x[1:] != x[:-1]]]  # collapsed
    assert x.size > 1_000_000
    path = tmp_path / "collapsed.npy"
    write_trace(x, path, format="npy")
    s = trace_stats(open_trace(path))
    r = s["reuse"]
    footprint = s["footprint_pages"]
    assert r["method"] == "exact" and r["rate"] == 1.0
    assert r["sampled"] == r["reaccesses"] == x.size - footprint
    assert 1 <= r["p50"] <= r["p90"] <= r["p99"] <= r["max"] <= footprint - 1
    d = stack_distances(x)
    assert d.min() >= 1 and r["max"] == d.max()
    q = np.percentile(d, [50, 90, 99], method="inverted_cdf").astype(int).tolist()
    assert [r["p50"], r["p90"], r["p99"]] == q
    out = invoke("trace", "info", path)
    assert out.exit_code == 0, out.output
    assert re.search(r"│ reuse distance \(pages\) +│ +exact │", out.output)
    # a real collapsed lackey trace
    s = trace_stats(open_trace(LACKEY_TRUE, collapse=True))
    r = s["reuse"]
    assert r["method"] == "exact" and r["p50"] >= 1 and r["max"] <= s["footprint_pages"] - 1


def test_trace_stats_small_exact_and_sampled(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("1\n2\n1\n3\n2\n1\n")
    s = trace_stats(open_trace(path), window=4)
    assert (s["accesses"], s["footprint_pages"], s["footprint_bytes"]) == (6, 3, 3 * 4096)
    r = s["reuse"]
    assert (r["method"], r["reaccesses"], r["sampled"]) == ("exact", 3, 3)
    assert (r["p50"], r["max"], r["mean"]) == (2, 2, 5 / 3)
    assert s["wss"] == [3, 2]
    # beyond max_exact the distances come from a hashed sample, scaled by its rate
    big = tmp_path / "big.npy"
    rng = np.random.default_rng(5)
    pages = np.tile(rng.permutation(2000), 10)
    write_trace(pages, big, format="npy")
    s = trace_stats(open_trace(big), max_exact=5000)
    r = s["reuse"]
    assert r["method"] == "sampled" and 0.2 < r["rate"] < 0.3
    assert abs(r["p50"] - 1999) < 200 and r["reaccesses"] == 18_000
    assert s["footprint_pages"] == 2000  # footprint and working sets stay exact
    assert r["max"] <= 1999  # an estimate, capped at the largest distance there is


def test_auto_window() -> None:
    assert [auto_window(n) for n in (0, 20, 21, 100, 113_872, 10**7)] == [
        1,
        1,
        2,
        5,
        10_000,
        500_000,
    ]


# --------------------------------------------------------------------------- CLI

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_trace_info_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "wss.png"
    r = invoke("trace", "info", LACKEY_TRUE, "--plot", png, "--window", "50000")
    assert r.exit_code == 0, r.output
    assert "167,440" in r.output and "139" in r.output and "lackey" in r.output
    assert "working set over time" in r.output
    first = png.read_bytes()
    assert first.startswith(b"\x89PNG")
    assert b"Software" not in first
    r = invoke("trace", "info", LACKEY_TRUE, "--plot", png, "--window", "50000")
    assert r.exit_code == 0 and png.read_bytes() == first  # deterministic


def test_cli_trace_convert(tmp_path: Path) -> None:
    src = tmp_path / "a.lackey"
    src.write_text(lackey_text(SMALL))
    for to, name in [("native", "o.epct"), ("npy", "o.npy"), ("text", "o.txt")]:
        out = tmp_path / name
        r = invoke("trace", "convert", src, out)  # format from the extension
        assert r.exit_code == 0, r.output
        assert r.output.strip() == f"wrote {out} ({SMALL.size} pages, {to})"
        assert np.array_equal(read_all(open_trace(out)), SMALL)
    out = tmp_path / "o.oracleGeneral"
    r = invoke("trace", "convert", src, out, "--to", "oracleGeneral", "--dense")
    assert r.exit_code == 0, r.output
    got = read_all(open_trace(out, format="oracleGeneral"))
    assert got.tolist() == DenseMapper().map(SMALL).tolist()


def test_cli_trace_options_and_skip_bad(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a;b\n1;10\n2;oops\n3;30\n")
    r = invoke("trace", "info", path, "-O", "obj_id_col=b", "-O", "delimiter=;")
    assert r.exit_code == 2
    assert r.output.strip() == (
        f"epcsim: error: {path}: line 3: bad object id 'oops' in column 2 "
        "(expected an integer in [0, 2**64))"
    )
    r = invoke("trace", "info", path, "-O", "obj_id_col=b", "-O", "delimiter=;", "--skip-bad")
    assert r.exit_code == 0, r.output
    assert "1 malformed lines/records skipped" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "{d}/missing.bin"], "{d}/missing.bin: no such file"),
        (["info", "{d}/t.txt", "--format", "xml"], "unknown trace format 'xml' (one of"),
        (["info", "{d}/t.txt"], "{d}/t.txt: line 2: bad page number '0xZZ'"),
        (["info", "{d}/t.txt", "-O", "unit"], "--option 'unit': expected KEY=VALUE"),
        (["info", "{d}/t.txt", "-O", "x=1"], "format 'text': unknown option 'x'"),
        (["convert", "{d}/t.txt", "{d}/o", "--to", "csv"], "cannot write format 'csv'"),
        (["convert", "{d}/missing", "{d}/o.epct"], "{d}/missing: no such file"),
    ],
)
def test_cli_trace_bad_input_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "t.txt").write_text("1\n0xZZ\n")
    r = invoke("trace", *[a.format(d=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("epcsim: error: " + message.format(d=tmp_path))
    assert r.output.count("\n") == 1
    assert "Traceback" not in r.output


@pytest.mark.parametrize("top", [DenseMapper.NARROW_TOP, 0, 3, 40])
@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(
        st.lists(st.integers(0, 300) | st.integers(-5, 1 << 40), min_size=0, max_size=40),
        min_size=1,
        max_size=5,
    )
)
def test_dense_mapper_table_mode_equals_sorted_mode(chunks, top: int) -> None:
    """Small non-negative ids map through a direct table; the numbering is the sorted
    arrays' (first-seen order), also after a large id switches the mapper over, and
    when a chunk's numbers outgrow uint16 (a small *top* in their place) part way."""
    table, ref = DenseMapper(), DenseMapper()
    table.NARROW_TOP = top
    ref._to_sorted()  # force the sorted arrays from the start
    for ch in chunks:
        a = np.array(ch, np.int64)
        assert np.array_equal(table.map(a), ref.map(a))
        assert table.footprint == ref.footprint
    seen = np.concatenate([np.array(c, np.int64) for c in chunks])
    assert np.array_equal(table.lookup(seen), ref.lookup(seen))
    assert np.array_equal(table.pages(), ref.pages())
    with pytest.raises(TraceError, match="was not in the trace"):
        table.lookup(np.array([(1 << 41) + 7]))
