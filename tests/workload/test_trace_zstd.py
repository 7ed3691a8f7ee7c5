"""zstd-compressed traces (libCacheSim ships its traces as ``.zst``): every format reads
them streamed, detected by the zstd magic whatever the name; a cut or corrupt stream is
an error, never a shorter trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zstandard
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.workload.traces import TraceError, detect_format, open_trace, write_trace

PAGES = np.array([5, 3, 5, 0, 7, 2**32 + 1, 3, 2**40, 5, 9, 9, 1] * 50, dtype=np.int64)
SMALL = PAGES % 4096
EXTS = {"text": "txt", "npy": "npy", "native": "epct", "oracleGeneral": "oracleGeneral.bin"}


def zstd_frames(data: bytes, frames: int = 3) -> bytes:
    """*data* compressed as *frames* consecutive zstd frames (as ``zstd`` concatenated
    files and multi-threaded compressors give)."""
    cut = [len(data) * i // frames for i in range(frames + 1)]
    c = zstandard.ZstdCompressor(level=3)
    return b"".join(c.compress(data[a:b]) for a, b in zip(cut, cut[1:], strict=False))


def compress(path: Path, out: Path, frames: int = 3) -> Path:
    out.write_bytes(zstd_frames(path.read_bytes(), frames))
    return out


def read_all(path: Path, **options) -> np.ndarray:
    chunks = list(open_trace(path, **options))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


@pytest.mark.parametrize("fmt", list(EXTS))
@pytest.mark.parametrize("name", ["{n}.{ext}.zst", "{n}.{ext}"])
def test_every_writable_format_reads_zstd(tmp_path: Path, fmt: str, name: str) -> None:
    """Named ``.zst`` or not (the magic decides), in chunks that cross the frames."""
    plain = tmp_path / f"plain.{EXTS[fmt]}"
    pages = SMALL if fmt == "text" else PAGES
    write_trace(pages, plain, format=fmt)
    z = compress(plain, tmp_path / name.format(n="z", ext=EXTS[fmt]))
    assert z.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert detect_format(z).name == fmt
    for chunk in (7, 1 << 18):
        assert read_all(z, chunk=chunk).tolist() == pages.tolist()
    r = open_trace(z)
    assert r.count() == pages.size
    assert r.read(5).tolist() == pages[:5].tolist()


def test_csv_and_lackey_read_zstd(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("time,id\n" + "".join(f"{i},{p}\n" for i, p in enumerate(SMALL.tolist())))
    z = compress(csv, tmp_path / "t.csv.zst")
    assert detect_format(z).name == "csv"
    assert read_all(z).tolist() == SMALL.tolist()
    lackey = tmp_path / "t.lackey"
    lackey.write_text("==1== hi\n" + "".join(f" L {p << 12:08x},8\n" for p in SMALL.tolist()))
    z = compress(lackey, tmp_path / "t.zst")  # no name hint: sniffed decompressed
    assert detect_format(z).name == "lackey"
    assert read_all(z).tolist() == SMALL.tolist()


def test_oracle_zstd_with_a_partial_last_record(tmp_path: Path) -> None:
    plain = tmp_path / "p.oracleGeneral.bin"
    write_trace(PAGES[:10], plain, format="oracleGeneral")
    z = tmp_path / "t.oracleGeneral.bin.zst"
    z.write_bytes(zstd_frames(plain.read_bytes() + b"\x01" * 5))
    with pytest.raises(TraceError) as e:
        read_all(z)
    assert str(e.value) == (
        f"{z}: record 11: truncated record (5 of 24 bytes at the end of the decompressed data)"
    )
    r = open_trace(z, skip_bad=True)
    assert read_all(z, skip_bad=True).tolist() == PAGES[:10].tolist()
    assert r.count() == 10 and r.skipped == 1


def test_npy_and_native_zstd_shorter_than_the_header(tmp_path: Path) -> None:
    for fmt, what in (("npy", "elements"), ("native", "pages")):
        plain = tmp_path / f"p.{EXTS[fmt]}"
        write_trace(PAGES, plain, format=fmt)
        z = tmp_path / f"t.{EXTS[fmt]}.zst"
        z.write_bytes(zstd_frames(plain.read_bytes()[: -8 * 3]))
        with pytest.raises(TraceError) as e:
            read_all(z)
        assert str(e.value) == (
            f"{z}: record {PAGES.size - 2}: truncated: the header says {PAGES.size} {what}"
        )
        assert read_all(z, skip_bad=True).tolist() == PAGES[:-3].tolist()


def test_cut_or_corrupt_zstd_is_an_error(tmp_path: Path) -> None:
    plain = tmp_path / "p.oracleGeneral.bin"
    write_trace(np.arange(20_000, dtype=np.int64), plain, format="oracleGeneral")
    data = zstandard.ZstdCompressor(level=1).compress(plain.read_bytes())
    cut = tmp_path / "cut.oracleGeneral.bin.zst"
    cut.write_bytes(data[: len(data) // 2])
    for skip_bad in (False, True):
        with pytest.raises(TraceError) as e:
            read_all(cut, skip_bad=skip_bad)
        assert str(e.value) == f"{cut}: truncated zstd data (the file ends inside a frame)"
    bad = tmp_path / "bad.txt.zst"
    bad.write_bytes(zstd_frames(b"1\n2\n", 1) + b"garbage!")
    with pytest.raises(TraceError) as e:
        read_all(bad)
    assert str(e.value).startswith(f"{bad}: corrupt zstd data (")


def test_cli_trace_info_of_an_oracle_zst(tmp_path: Path) -> None:
    """`epcsim trace info x.oracleGeneral.bin.zst` said "truncated record", and with
    --skip-bad reported garbage: the numbers are now those of the plain file."""
    plain = tmp_path / "x.oracleGeneral.bin"
    write_trace(PAGES, plain, format="oracleGeneral")
    z = compress(plain, tmp_path / "x.oracleGeneral.bin.zst")
    runner = CliRunner()
    want = runner.invoke(app, ["trace", "info", str(plain)])
    assert want.exit_code == 0, want.output
    for extra in ([], ["--skip-bad"]):
        got = runner.invoke(app, ["trace", "info", str(z), *extra])
        assert got.exit_code == 0, got.output
        assert got.output.replace(str(z), str(plain)) == want.output
    out = tmp_path / "x.epct"
    r = runner.invoke(app, ["trace", "convert", str(z), str(out)])
    assert r.output == f"wrote {out} ({PAGES.size} pages, native)\n"
    assert read_all(out).tolist() == PAGES.tolist()


def test_highly_compressed_data_is_decompressed_in_bounded_steps(tmp_path: Path) -> None:
    """64 MiB of a repeated pattern compresses to a few KiB: it is decompressed a bounded
    piece at a time, not all at once."""
    from epcsim.workload.traces._base import ZstdFile

    data = np.tile(np.arange(64, dtype=np.int64), 1 << 17).tobytes()
    assert len(data) == 64 << 20
    z = tmp_path / "loop.npy.zst"
    z.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    assert z.stat().st_size < 64 << 10
    f = ZstdFile(z)
    buf = bytearray(1 << 20)
    got = biggest = 0
    while n := f.readinto(buf):
        got += n
        biggest = max(biggest, len(f._buf))
    f.close()
    assert got == len(data) and biggest <= 33 << 20
