"""epcsim.report: report.html and its figures from a real (tiny) run directory."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from epcsim.report import figures, write_report
from epcsim.report.html import fmt_mib, fmt_ns, render_html
from epcsim.result import Result
from epcsim.sim import simulate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("usage.png", "rates.png", "fault_latency.png", "slowdown.png")

TINY = """
name = "tiny <report> & co"
[host]
epc = "4MiB"
duration = "1s"
sample_interval = "1ms"

[[cgroup]]
path = "/a"
max = "1MiB"

[[enclave]]
name = "e"
cgroup = "/a"
size = "2MiB"
workload = { pattern = "uniform", accesses = 20000 }

[[at]]
time = "2ms"
write = { path = "/a/misc.max", value = "sgx_epc 2097152" }

[[at]]
time = "3ms"
rmdir = "/nonexistent"

[[expect]]
name = "e succeeds"
enclaves = ["e"]
outcome = "success"

[[expect]]
name = "impossible"
file = "/a/misc.current"
equals = "sgx_epc 12345"
"""

# fits easily: every page stays resident, so no fault is ever taken
NO_FAULTS = """
name = "roomy"
[host]
epc = "4MiB"
duration = "1s"
sample_interval = "1ms"

[[cgroup]]
path = "/a"

[[enclave]]
name = "e"
cgroup = "/a"
size = "256KiB"
workload = { pattern = "sequential", accesses = 2000 }
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny")
    simulate(TINY).write(d)
    return d


@pytest.fixture(scope="module")
def no_fault_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("roomy")
    result = simulate(NO_FAULTS)
    assert len(result.fault_latency_ns) == 0
    result.write(d)
    return d


def _read_png_size(p: Path) -> tuple[int, int]:
    b = p.read_bytes()
    assert b[:8] == PNG_MAGIC, f"{p.name} is not a PNG"
    assert b[12:16] == b"IHDR"
    assert b.rstrip(b"\x00")[-12:][4:8] == b"IEND", f"{p.name} is truncated"
    return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")


def _png_chunks(p: Path) -> list[bytes]:
    b = p.read_bytes()
    i, out = 8, []
    while i < len(b):
        n = int.from_bytes(b[i : i + 4], "big")
        out.append(b[i + 4 : i + 8])
        i += 12 + n
    return out


def _check_report(run_dir: Path) -> str:
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    assert out.exists()
    text = out.read_text(encoding="utf-8")
    # self-contained: no network, no scripts, no external style sheets
    for bad in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert bad not in text, bad
    srcs = re.findall(r'<img src="([^"]+)"', text)
    # a figure with nothing to draw is a line of text, not an image
    assert sorted(srcs + re.findall(r'<p class="nofig" data-file="([^"]+)"', text)) == sorted(
        FIGURES
    )
    for f in FIGURES:
        assert (run_dir / f).exists() == (f in srcs), f
    for src in srcs:
        assert "/" not in src
        w, h = _read_png_size(run_dir / src)
        assert w > 100 and h > 100
        chunks = _png_chunks(run_dir / src)
        assert b"tIME" not in chunks and b"tEXt" not in chunks and b"iTXt" not in chunks
    return text


def _rows(text: str) -> list[list[str]]:
    """Every table row as a list of its unescaped cell texts."""
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", text, flags=re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, flags=re.S)
        rows.append([html.unescape(re.sub(r"<[^>]+>", "", c)) for c in cells])
    return rows


def test_report_contents(tiny_run: Path) -> None:
    text = _check_report(tiny_run)
    plain = html.unescape(text)
    assert "<title>epcsim report: tiny &lt;report&gt; &amp; co</title>" in text
    assert "<report>" not in text  # the scenario name is escaped
    assert (
        "All times are estimates from epcsim's cost model (docs/COSTS.md); "
        "the cost table is below" in plain
    )
    rows = _rows(text)
    facts = {r[0]: r[1] for r in rows if len(r) == 2}
    assert facts["epcsim version"]
    assert len(facts["scenario hash"]) == 64
    assert facts["seed"] == "0"
    assert facts["EPC capacity"] == "4.00 MiB (1,024 pages)"
    assert facts["misc (EPC cgroup) enabled"] == "yes"
    assert facts["truncated"] == "no"
    assert facts["simulated time"].endswith("ms")
    # expectations: one passes, one fails
    assert ["PASS", "e succeeds", "all success: e=success"] in rows
    assert any(r[:2] == ["FAIL", "impossible"] for r in rows)
    assert "FAIL: 1 of 2 expectations hold" in plain
    # per-cgroup summary
    cg = next(r for r in rows if r[0] == "/a")
    assert cg[1].endswith(" MiB")  # peak
    assert cg[2] == "2.00 MiB"  # limit after the timed write
    assert int(cg[5].replace(",", "")) > 0  # faults
    assert int(cg[6].replace(",", "")) > 0  # evictions
    root = next(r for r in rows if r[0] == "/")
    assert root[2] == "max"
    # per-enclave
    enc = next(r for r in rows if r[0] == "e")
    assert enc[1:4] == ["/a", "success", "0"]
    assert enc[4] == "20,000"
    assert enc[8].endswith("×") and float(enc[8][:-1]) > 1
    # timed operations
    assert ["2.00 ms", "write /a/misc.max 'sgx_epc 2097152'", "ok"] in rows
    assert any(r[:2] == ["3.00 ms", "rmdir /nonexistent"] and "ENOENT" in r[2] for r in rows)
    # fault-latency percentiles
    assert any(len(r) == 5 and r[1].endswith("µs") for r in rows)
    # cost table
    assert next(r for r in rows if r[0] == "fault")[:3] == ["fault", "3.00 µs", "3,000"]
    assert next(r for r in rows if r[0] == "ewb")[:3] == ["ewb", "4.00 µs", "4,000"]


def test_report_is_deterministic(tiny_run: Path, tmp_path: Path) -> None:
    write_report(tiny_run)
    first = {p: (tiny_run / p).read_bytes() for p in (*FIGURES, "report.html")}
    # a copy of the run directory elsewhere gives the same bytes too
    other = tmp_path / "copy"
    shutil.copytree(tiny_run, other)
    for p in (*FIGURES, "report.html"):
        (other / p).unlink()
    write_report(other)
    for p, b in first.items():
        assert (tiny_run / p).read_bytes() == b, p
        assert (other / p).read_bytes() == b, p


def test_report_without_faults(no_fault_run: Path) -> None:
    text = _check_report(no_fault_run)
    assert "No faults" in text
    rows = _rows(text)
    enc = next(r for r in rows if r[0] == "e")
    assert enc[2] == "success" and enc[5] == "0"
    a = next(r for r in rows if r[0] == "/a")
    assert a[2] == "max"
    assert "The scenario states no expectations." in text


def test_report_missing_optional_parts(no_fault_run: Path, tmp_path: Path) -> None:
    """A run directory without fault_latency.npy (optional for Result.read) still works."""
    d = tmp_path / "run"
    shutil.copytree(no_fault_run, d)
    (d / "fault_latency.npy").unlink()
    _check_report(d)


@pytest.mark.parametrize(
    ("ns", "want"),
    [
        (None, "—"),
        (0, "0 ns"),
        (50, "50.0 ns"),
        (999, "999 ns"),
        (999.6, "1.00 µs"),
        # the issue: "41.239 µs" beside "8.1 µs"; now three significant digits everywhere
        (8100, "8.10 µs"),
        (41_239, "41.2 µs"),
        (3_000, "3.00 µs"),
        (116_600, "117 µs"),
        (999_600, "1.00 ms"),
        (8_219_500, "8.22 ms"),
        (57_814_900, "57.8 ms"),
        (1_000_000_000, "1.00 s"),
        (59_970_000_000, "1.00 min"),
        (150_000_000_000, "2.50 min"),
        (600_000_000_000, "10.0 min"),
        (7_200_000_000_000_000, "2,000 h"),
    ],
)
def test_fmt_ns(ns: int | None, want: str) -> None:
    assert fmt_ns(ns) == want


def test_fmt_mib() -> None:
    assert fmt_mib(None) == "max"
    assert fmt_mib(1 << 20) == "1.00 MiB"
    assert fmt_mib(3 * (1 << 19)) == "1.50 MiB"
    # the selftests' small cgroups: exact, not "0.19 MiB"
    assert fmt_mib(192 << 10) == "192 KiB"
    assert fmt_mib(768 << 10) == "768 KiB"
    assert fmt_mib(0) == "0 KiB"
    assert fmt_mib(1000) == "0.98 KiB"


# --- the figures (issue "Nothing lost, nothing misleading": the report) --------------------


def _series_of(usage_by_cgroup: dict[str, list[int]]) -> dict[str, dict[str, np.ndarray]]:
    t = np.arange(len(next(iter(usage_by_cgroup.values()))), dtype=np.float64) * 5e7
    return {
        name: {
            "time_ns": t,
            "usage_bytes": np.asarray(u, np.float64),
            "limit_bytes": np.full(t.size, np.nan),
            "faults": np.zeros(t.size),
            "evictions": np.zeros(t.size),
        }
        for name, u in usage_by_cgroup.items()
    }


def _height_fraction(ax: object, y: float) -> float:
    """Where *y* is drawn on *ax*, as a fraction of the axes' height from the bottom."""
    (_, py), (_, y0), (_, y1) = ax.transData.transform([(0, y), (0, 0), (0, ax.get_ylim()[1])])
    return (py - y0) / (y1 - y0)


def test_usage_figure_shows_small_cgroups() -> None:
    """`epcsim run builtin:kselftest`: the 192 KiB / 768 KiB cgroups of tests A, B, C, F
    were flat at 0 beside the 96 MiB of test D on a linear axis."""
    series = _series_of(
        {"/": [0, 96 << 20, 0], "/small": [192 << 10] * 3, "/large": [768 << 10] * 3}
    )
    fig = figures._usage(series)
    (ax,) = fig.axes
    assert ax.get_yscale() == "symlog"
    assert ax.get_ylim()[0] == 0
    # 192 KiB is 0.2 % of 96 MiB: a third of the way up on the log axis, not at the bottom
    assert _height_fraction(ax, 192 << 10) > 0.4
    assert _height_fraction(ax, 768 << 10) > _height_fraction(ax, 192 << 10) + 0.05
    labels = {figures._size_tick(v) for v in (0, 4096, 256 << 10, 64 << 20, 1 << 30)}
    assert labels == {"0", "4 KiB", "256 KiB", "64 MiB", "1 GiB"}


def test_slowdown_figure_has_value_labels_and_a_log_axis_when_wide() -> None:
    """`epcsim run builtin:noisy-neighbour`: slowdowns 173 and 1 on a linear axis
    without labels; now log scale (ratio >= 10) and each bar labelled."""
    fig = figures._slowdown({"noisy": {"slowdown": 173.24184}, "quiet": {"slowdown": 1.0}})
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["173×", "1.00×"]
    # narrow ranges stay linear, from 0
    fig = figures._slowdown(
        {"a": {"slowdown": 30.09532}, "b": {"slowdown": 34.9274}, "c": {"slowdown": 32.2007}}
    )
    (ax,) = fig.axes
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    assert [t.get_text() for t in ax.texts] == ["30.1×", "34.9×", "32.2×"]
    # the labels fit inside the axes
    top = ax.get_ylim()[1]
    assert all(t.xy[1] < top for t in ax.texts)


def test_empty_figures_are_a_line_of_text(no_fault_run: Path) -> None:
    """`epcsim run` of a scenario without faults (builtin:kselftest): the fault-latency
    and rates figures were full-size images saying "no faults"; now no image and one line
    of text, and an image left by an earlier report of the directory is removed."""
    (no_fault_run / "fault_latency.png").write_bytes(PNG_MAGIC + b"stale")
    text = write_report(no_fault_run).read_text(encoding="utf-8")
    assert not (no_fault_run / "fault_latency.png").exists()
    assert not (no_fault_run / "rates.png").exists()
    assert (
        '<p class="nofig" data-file="fault_latency.png"><b>Fault latency distribution:</b> '
        "no figure, no enclave fault was resolved.</p>" in text
    )
    assert (
        '<p class="nofig" data-file="rates.png"><b>Fault and eviction rates:</b> '
        "no figure, no cgroup had a fault or an eviction between two samples.</p>" in text
    )
    assert re.findall(r'<img src="([^"]+)"', text) == ["usage.png", "slowdown.png"]


def test_latency_table_has_one_precision(tiny_run: Path) -> None:
    """`epcsim run builtin:nested-fairness`: the fault-latency row read "8.1 µs ... 41.239 µs"."""
    result = Result.read(tiny_run)
    result.summary["fault_latency"] = {
        "count": 7632,
        "p50_ns": 8100,
        "p90_ns": 26700,
        "p99_ns": 41239,
        "max_ns": 116600,
    }
    rows = _rows(render_html(result, []))
    assert ["7,632", "8.10 µs", "26.7 µs", "41.2 µs", "117 µs"] in rows


def test_long_cgroup_paths_may_wrap(tiny_run: Path) -> None:
    """Tables overflowed a 1280 px window (builtin:kselftest's long cgroup paths): paths
    break after a slash, and every table sits in a box that scrolls on its own."""
    result = Result.read(tiny_run)
    result.summary["cgroups"] = {"/sgx_kselftest/sgx_test_small_parent/sgx_test_small": {}}
    text = render_html(result, [])
    assert (
        '<td class="mono">/<wbr>sgx_kselftest/<wbr>sgx_test_small_parent/<wbr>sgx_test_small</td>'
        in text
    )
    assert text.count('<div class="table">') == text.count("<table") > 0
    assert "td.mono { overflow-wrap: anywhere; }" in text


def test_figures_are_written_atomically(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A savefig that fails half-way leaves the previous PNG as it was and no partial file."""
    d = tmp_path / "run"
    shutil.copytree(tiny_run, d)
    write_report(d)
    before = (d / "usage.png").read_bytes()

    def broken(self: object, fname: object, **kwargs: object) -> None:
        Path(fname).write_bytes(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures.Figure, "savefig", broken)
    with pytest.raises(OSError, match="No space left"):
        write_report(d)
    assert (d / "usage.png").read_bytes() == before
    assert sorted(p.name for p in d.iterdir() if ".tmp-" in p.name) == []


def test_usage_figure_of_cgroups_that_never_charged() -> None:
    """All usage 0: an axis a few pages tall, not one of a fraction of a byte."""
    (ax,) = figures._usage(_series_of({"/": [0, 0, 0]})).axes
    assert ax.get_ylim() == (0.0, 16384.0)
