"""``epcsim trace convert`` / ``trace info --plot`` lose nothing: a conversion onto its
own input is refused, a failed or interrupted conversion leaves the previous target
untouched and no partial file, and an output name whose extension no writer has is
refused naming the extensions that work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.workload.traces import TraceError, open_trace, write_trace
from epcsim.workload.traces.text import TextReader

runner = CliRunner()

PAGES = np.array([5, 3, 5, 0, 7, 1, 3, 4095, 5, 2, 9, 9], dtype=np.int64)
EXTS = {"text": "txt", "npy": "npy", "native": "epct", "oracleGeneral": "oracleGeneral.bin"}


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(r, message: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.output == f"epcsim: error: {message}\n"


def files(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def read_all(path: Path) -> list[int]:
    return np.concatenate(list(open_trace(path))).tolist()


@pytest.mark.parametrize("fmt", list(EXTS))
@pytest.mark.parametrize("how", ["same path", "hard link", "symlink"])
def test_convert_onto_its_input_is_refused(tmp_path: Path, fmt: str, how: str) -> None:
    """`epcsim trace convert same.txt same.txt` (and .npy, .epct, .oracleGeneral.bin)."""
    src = tmp_path / f"same.{EXTS[fmt]}"
    write_trace(PAGES, src, format=fmt)
    before = src.read_bytes()
    out = src
    if how == "hard link":
        out = tmp_path / f"link.{EXTS[fmt]}"
        os.link(src, out)
    elif how == "symlink":
        out = tmp_path / f"link.{EXTS[fmt]}"
        out.symlink_to(src.name)
    r = invoke("trace", "convert", src, out)
    one_error_line(r, f"{out}: is the input trace {src} (the same file); write to another file")
    assert src.read_bytes() == before
    # the API refuses too, before writing anything
    with pytest.raises(TraceError, match="is the input trace"):
        write_trace(open_trace(src), out, format=fmt)
    assert src.read_bytes() == before


def test_failed_convert_keeps_the_previous_target(tmp_path: Path) -> None:
    """`cp good.txt keep.txt; epcsim trace convert garbage.txt keep.txt` -> exit 2 and
    keep.txt as it was; the same onto an existing .npy."""
    good = tmp_path / "good.txt"
    good.write_text("1\n2\n3\n")
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("1\n2\nxx\n")
    keep = tmp_path / "keep.txt"
    keep.write_bytes(good.read_bytes())
    r = invoke("trace", "convert", garbage, keep)
    one_error_line(
        r, f"{garbage}: line 3: bad page number 'xx' (expected a decimal or 0x hex integer)"
    )
    assert keep.read_text() == "1\n2\n3\n"
    npy = tmp_path / "keep.npy"
    assert invoke("trace", "convert", good, npy).exit_code == 0
    before = npy.read_bytes()
    bad_csv = tmp_path / "garbage.csv"
    bad_csv.write_text("id\n1\n2\noops\n")
    r = invoke("trace", "convert", bad_csv, npy)
    one_error_line(
        r,
        f"{bad_csv}: line 4: bad object id 'oops' in column 1 (expected an integer in [0, 2**64))",
    )
    assert npy.read_bytes() == before
    assert files(tmp_path) == ["garbage.csv", "garbage.txt", "good.txt", "keep.npy", "keep.txt"]


def interrupted(chunks: int) -> Iterator[np.ndarray]:
    """A source that gives *chunks* chunks, then Ctrl-C."""
    for _ in range(chunks):
        yield PAGES
    raise KeyboardInterrupt


@pytest.mark.parametrize("fmt", list(EXTS))
def test_interrupted_write_keeps_the_previous_target(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"out.{EXTS[fmt]}"
    write_trace(PAGES[:3], target, format=fmt)
    before = target.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        write_trace(interrupted(3), target, format=fmt)
    assert target.read_bytes() == before
    assert files(tmp_path) == [target.name]  # no temporary file left
    # a new target is not created at all
    with pytest.raises(KeyboardInterrupt):
        write_trace(interrupted(3), tmp_path / f"new.{EXTS[fmt]}", format=fmt)
    assert files(tmp_path) == [target.name]


def test_cli_interrupted_convert_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the middle of `epcsim trace convert big.txt out.txt`: exit 130, out.txt
    as it was before, no partial file."""
    src = tmp_path / "big.txt"
    src.write_text("".join(f"{p}\n" for p in range(100)))
    out = tmp_path / "out.txt"
    out.write_text("7\n")

    def chunks(self) -> Iterator[np.ndarray]:
        yield np.arange(50, dtype=np.int64)
        raise KeyboardInterrupt

    monkeypatch.setattr(TextReader, "_chunks", chunks)
    r = invoke("trace", "convert", src, out)
    assert r.exit_code == 130, r.output
    assert r.output == f"interrupted; {out} was not written\n"
    assert out.read_text() == "7\n"
    assert files(tmp_path) == ["big.txt", "out.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["good.txt", "out.csv"],
            "out.csv: no writable trace format has this extension (use oracleGeneral "
            ".oracleGeneral.bin .oracleGeneral .bin; text .txt; npy .npy; native .epct)",
        ),
        (
            ["good.txt", "out.txt.gz"],
            "out.txt.gz: no writable trace format has this extension (use oracleGeneral "
            ".oracleGeneral.bin .oracleGeneral .bin; text .txt; npy .npy; native .epct)",
        ),
        (
            ["good.txt", "out.csv", "--to", "native"],
            "out.csv: a native trace is written to a name ending .epct",
        ),
        (
            ["good.txt", "out.npy", "--to", "oracleGeneral"],
            "out.npy: a oracleGeneral trace is written to a name ending "
            ".oracleGeneral.bin or .oracleGeneral or .bin",
        ),
    ],
)
def test_convert_output_extension_must_be_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    """`epcsim trace convert good.txt out.csv` wrote the native format into out.csv."""
    monkeypatch.chdir(tmp_path)
    Path("good.txt").write_text("1\n2\n")
    r = invoke("trace", "convert", *args)
    one_error_line(r, message)
    assert files(tmp_path) == ["good.txt"]


def test_convert_writes_by_extension(tmp_path: Path) -> None:
    src = tmp_path / "good.txt"
    src.write_text("".join(f"{p}\n" for p in PAGES.tolist()))
    for fmt, ext in EXTS.items():
        out = tmp_path / f"o.{ext}"
        r = invoke("trace", "convert", src, out)
        assert r.output == f"wrote {out} ({PAGES.size} pages, {fmt})\n"
        assert read_all(out) == PAGES.tolist()


def test_info_plot_must_be_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`epcsim trace info good.txt --plot wss.txt` wrote a PNG into a .txt."""
    monkeypatch.chdir(tmp_path)
    Path("good.txt").write_text("1\n2\n1\n")
    Path("wss.txt").write_text("notes\n")
    r = invoke("trace", "info", "good.txt", "--plot", "wss.txt")
    one_error_line(r, "--plot wss.txt: the plot is a PNG image; give a name ending .png")
    assert Path("wss.txt").read_text() == "notes\n"
    r = invoke("trace", "info", "good.txt", "--plot", "wss.PNG")
    assert r.exit_code == 0 and Path("wss.PNG").read_bytes().startswith(b"\x89PNG")


def test_info_plot_interrupted_keeps_the_previous_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    src = tmp_path / "good.txt"
    src.write_text("1\n2\n1\n")
    png = tmp_path / "wss.png"
    png.write_bytes(b"old")

    def savefig(self, fname, **kwargs) -> None:
        Path(fname).write_bytes(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", savefig)
    r = invoke("trace", "info", src, "--plot", png)
    assert r.exit_code == 130, r.output
    assert png.read_bytes() == b"old"
    assert files(tmp_path) == ["good.txt", "wss.png"]


# --------------------------------------------------------------------------- validate

SCENARIO = """\
name = "t"
[host]
epc = "4MiB"
duration = "1s"

[[cgroup]]
path = "/a"
max = "1MiB"

[[enclave]]
name = "e"
cgroup = "/a"
workload = {{ trace = "{trace}" }}
"""


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.txt",
            "1\n2\nxx\n",
            "line 3: bad page number 'xx' (expected a decimal or 0x hex integer)",
        ),
        ("empty.txt", "", "the trace has no accesses"),
        ("blank.txt", "\n\n", "the trace has no accesses"),
        (
            "bad.csv",
            "id\n1\n-2\n",
            "line 3: bad object id '-2' in column 1 (expected an integer in [0, 2**64))",
        ),
        ("header.csv", "id\n", "the trace has no accesses"),
        ("bad.lackey", "==1== x\n L 04002000,8\n X 1,2\n", "line 3: malformed lackey line"),
    ],
)
def test_validate_reads_the_trace_as_run_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str, message: str
) -> None:
    """`epcsim validate` said ok for a scenario whose text/csv/lackey trace is malformed
    or empty; `run` then failed without the enclave[0].workload.trace context."""
    import epcsim
    from epcsim.errors import ScenarioError

    monkeypatch.chdir(tmp_path)
    Path(name).write_text(text)
    Path("sc.toml").write_text(SCENARIO.format(trace=name))
    prefix = f"epcsim: error: sc.toml: enclave[0].workload.trace: {name}: {message}"
    for cmd in (["validate", "sc.toml"], ["run", "sc.toml", "--out", "r"]):
        r = invoke(*cmd)
        assert r.exit_code == 2, r.output
        assert r.output.startswith(prefix) and r.output.count("\n") == 1, r.output
    assert not Path("r").exists()
    with pytest.raises(ScenarioError) as e:
        epcsim.run("sc.toml")
    assert ("epcsim: error: " + str(e.value)).startswith(prefix)


def test_cli_interrupted_info_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "big.txt"
    src.write_text("1\n2\n")

    def chunks(self) -> Iterator[np.ndarray]:
        yield np.arange(50, dtype=np.int64)
        raise KeyboardInterrupt

    monkeypatch.setattr(TextReader, "_chunks", chunks)
    r = invoke("trace", "info", src, "--plot", tmp_path / "w.png")
    assert r.exit_code == 130, r.output
    assert r.output == "interrupted\n"
    assert files(tmp_path) == ["big.txt"]
