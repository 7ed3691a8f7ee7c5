"""epcsim.report: report.html and its figures from a real (tiny) run directory."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest

from epcsim.report import write_report
from epcsim.report.html import fmt_mib, fmt_ns
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
    assert sorted(srcs) == sorted(FIGURES)
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
    assert ["2 ms", "write /a/misc.max 'sgx_epc 2097152'", "ok"] in rows
    assert any(r[:2] == ["3 ms", "rmdir /nonexistent"] and "ENOENT" in r[2] for r in rows)
    # fault-latency percentiles
    assert any(len(r) == 5 and r[1].endswith("µs") for r in rows)
    # cost table
    assert next(r for r in rows if r[0] == "fault")[:3] == ["fault", "3 µs", "3,000"]
    assert next(r for r in rows if r[0] == "ewb")[:3] == ["ewb", "4 µs", "4,000"]


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
        (50, "50 ns"),
        (8100, "8.1 µs"),
        (3_000, "3 µs"),
        (8_219_500, "8.22 ms"),
        (1_000_000_000, "1 s"),
        (150_000_000_000, "2 min 30 s"),
    ],
)
def test_fmt_ns(ns: int | None, want: str) -> None:
    assert fmt_ns(ns) == want


def test_fmt_mib() -> None:
    assert fmt_mib(None) == "max"
    assert fmt_mib(1 << 20) == "1.00 MiB"
    assert fmt_mib(3 * (1 << 19)) == "1.50 MiB"
