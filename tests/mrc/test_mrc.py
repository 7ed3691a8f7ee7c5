"""Miss-ratio curves (``epcsim.mrc`` and ``epcsim mrc``): size parsing, spatial sampling,
the curve on small synthetic traces where the model makes it exact, parallel runs,
the ``fault_unreferenced`` experiment, the CSV/PNG outputs and the command line."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.errors import EpcsimError
from epcsim.mrc import (
    SAMPLED_MIN_PAGES,
    MrcPoint,
    format_ratios,
    mrc,
    parse_sizes,
    sample_pages,
    trust,
    write_mrc,
)

runner = CliRunner()

LOOP_PAGES, LOOP_PASSES = 300, 5
RAND_PAGES, RAND_ACCESSES = 500, 20_000


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small traces as .npy page arrays: a loop over 300 pages repeated 5 times, a
    uniform random trace over 500 pages, and a hot set interleaved with a scan."""
    d = tmp_path_factory.mktemp("traces")
    out = {}
    out["loop"] = d / "loop.npy"
    np.save(out["loop"], np.tile(np.arange(LOOP_PAGES, dtype=np.int64), LOOP_PASSES))
    out["rand"] = d / "rand.npy"
    rand = np.random.default_rng(0).integers(0, RAND_PAGES, RAND_ACCESSES)
    assert len(np.unique(rand)) == RAND_PAGES
    np.save(out["rand"], rand.astype(np.int64))
    # 100 hot pages in a cycle, every other access a page never seen again
    n = 4000
    hs = np.empty(2 * n, np.int64)
    hs[0::2] = np.arange(n) % 100
    hs[1::2] = 100 + np.arange(n)
    out["hotscan"] = d / "hotscan.npy"
    np.save(out["hotscan"], hs)
    out["empty"] = d / "empty.npy"
    np.save(out["empty"], np.zeros(0, np.int64))
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def strip_wall(points: list[MrcPoint]) -> list[dict]:
    return [{k: v for k, v in dataclasses.asdict(p).items() if k != "wall_s"} for p in points]


# --- parse_sizes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "footprint", "expected"),
    [
        ("300pages", 1000, [300]),
        ("1MiB,300pages,8KiB", 1000, [2, 256, 300]),
        ("2pages, 1pages ,2pages,", 1000, [1, 2]),  # sorted, deduplicated, blanks skipped
        ("4096", 1000, [1]),  # a bare number is bytes
        ("0x2000", 1000, [2]),
        ("1p,1page", 1000, [1]),
        ("10%,50%,100%", 1000, [100, 500, 1000]),
        ("12.5%", 8, [1]),
        ("150%", 1000, [1500]),
        ("100pages:1000pages:10", 1000, list(range(100, 1001, 100))),
        (
            "10%:100%:10",
            48_974,
            [4897, 9794, 14692, 19589, 24487, 29384, 34282, 39179, 44077, 48974],
        ),
        ("1pages:2pages:5", 1000, [1, 2]),  # rounded and deduplicated
        ("7pages:9pages:1", 1000, [7]),
        ("1MiB:2MiB:3", 1000, [256, 384, 512]),
        # to the nearest page, halves up (round() would give 508, 127 and 3)
        ("25%", 2034, [509]),
        ("25%", 2036, [509]),
        ("12.5%", 1020, [128]),
        ("1pages:4pages:3", 1000, [1, 3, 4]),  # 1, 2.5, 4
        ("0.05%", 1000, [1]),  # half a page is one
    ],
)
def test_parse_sizes(spec: str, footprint: int, expected: list[int]) -> None:
    assert parse_sizes(spec, footprint) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("10XB", "--sizes: unknown unit 'XB' in '10XB'"),
        ("5:1:3", "--sizes: '5' is not a multiple of 4096 bytes"),
        ("5pages:1pages:3", "--sizes: need N >= 1 and A <= B in '5pages:1pages:3'"),
        ("1pages:2pages:0", "need N >= 1"),
        ("1pages:2pages:x", "--sizes: N must be an integer in '1pages:2pages:x'"),
        ("1pages:2pages", "--sizes: a range is A:B:N, got '1pages:2pages'"),
        ("1:2:3:4", "a range is A:B:N"),
        ("abc%", "--sizes: not a percentage: 'abc%'"),
        ("nan%", "--sizes: not a percentage: 'nan%'"),
        ("inf%", "--sizes: not a percentage: 'inf%'"),
        ("0.01%", "--sizes: '0.01%' is less than one page"),
        ("-5%", "less than one page"),
        ("0pages", "'0pages' is less than one page"),
        ("1000", "'1000' is not a multiple of 4096 bytes"),
        ("0.04%", "--sizes: '0.04%' is less than one page"),
        ("abc", "--sizes: not a size: 'abc'"),
        ("", "--sizes: no size given"),
        (" , ", "no size given"),
    ],
)
def test_parse_sizes_errors(spec: str, message: str) -> None:
    with pytest.raises(EpcsimError) as ei:
        parse_sizes(spec, 1000)
    assert message in str(ei.value)


def test_parse_sizes_bare_number_suggests_pages() -> None:
    """``--sizes 1285``: bytes, not a multiple of 4096; the error says how to write
    pages."""
    with pytest.raises(EpcsimError) as ei:
        parse_sizes("1285", 2034)
    assert str(ei.value) == (
        "--sizes: '1285' is not a multiple of 4096 bytes "
        "(a bare number is bytes; for 1285 pages write 1285pages)"
    )
    with pytest.raises(EpcsimError) as ei:
        parse_sizes("1KiB", 2034)  # not a bare number: no suggestion
    assert str(ei.value) == "--sizes: '1KiB' is not a multiple of 4096 bytes"


# --- trust and format_ratios --------------------------------------------------------------


@pytest.mark.parametrize(
    ("steady", "sim_epc", "sample", "trusted", "reason"),
    [
        (1.0, 20, 1.0, False, "steady reclaimable pages 1.0 < 512"),
        (511.9, 600, 1.0, False, "steady reclaimable pages 511.9 < 512"),
        (512.0, 1000, 1.0, True, ""),  # 50% of 1000 is below 512
        (1049.9, 2100, 1.0, False, "steady reclaimable pages 1049.9 < 50% of the 2100 EPC pages"),
        (1050.0, 2100, 1.0, True, ""),
        (950.0, 999, 0.1, False, "sampled EPC 999 pages < 1000"),
        (
            100.0,
            500,
            0.5,
            False,
            "steady reclaimable pages 100.0 < 512; sampled EPC 500 pages < 1000",
        ),
        (900.0, 1000, 0.1, True, ""),
    ],
)
def test_trust(steady: float, sim_epc: int, sample: float, trusted: bool, reason: str) -> None:
    """Trusted iff steady reclaimable >= max(512, 50% of the EPC) (and, sampled, the
    simulated EPC has at least SAMPLED_MIN_PAGES)."""
    assert trust(steady, sim_epc, sample) == (trusted, reason)


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([1.0, 0.2], ["1.0000", "0.2000"]),
        ([0.8067, 0.7253, 0.4301], ["0.8067", "0.7253", "0.4301"]),
        # a sqlite-sized curve: 4 decimals would print 0.0004 for every point
        (
            [0.00047, 0.00043, 0.00041, 0.00041],
            ["0.0004700", "0.0004300", "0.0004100", "0.0004100"],
        ),
        # two ratios equal to 4 decimals get more
        ([0.43014, 0.43011], ["0.43014", "0.43011"]),
        ([0.0, 0.5], ["0.0000", "0.5000"]),
        ([], []),
    ],
)
def test_format_ratios_tell_the_points_apart(ratios: list[float], expected: list[str]) -> None:
    assert format_ratios(ratios) == expected


# --- sample_pages -------------------------------------------------------------------------


def test_sample_rate_one_is_the_identity() -> None:
    pages = np.array([5, 3, 5, 9, 1 << 40, 0], np.int64)
    assert sample_pages(pages, 1) is pages
    assert sample_pages(pages, 1.0) is pages


def test_sample_is_deterministic_and_keeps_whole_pages() -> None:
    rng = np.random.default_rng(1)
    pages = rng.integers(0, 10_000, 50_000)
    a = sample_pages(pages, 0.2)
    b = sample_pages(pages.copy(), 0.2)
    assert np.array_equal(a, b)
    kept = set(np.unique(a).tolist())
    # a page is kept or dropped with every one of its accesses, in trace order
    assert np.array_equal(a, pages[np.isin(pages, list(kept))])
    # the decision depends on the page only: any sub-trace keeps the same pages
    head = pages[:1000]
    assert set(sample_pages(head, 0.2).tolist()) == kept & set(head.tolist())
    # a lower rate keeps a subset of the pages of a higher one
    assert set(sample_pages(pages, 0.05).tolist()) <= kept


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_sample_keeps_about_rate_of_the_pages(rate: float) -> None:
    n = 200_000
    kept = len(sample_pages(np.arange(n, dtype=np.int64), rate))
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(kept - n * rate) < 5 * sd, (kept, n * rate)


def test_sample_of_negative_and_huge_ids() -> None:
    pages = np.array([-1, -(1 << 62), (1 << 63) - 1, 0], np.int64)
    out = sample_pages(pages, 0.5)
    assert set(out.tolist()) <= set(pages.tolist())


@pytest.mark.parametrize("rate", [0, -0.1, 1.5, float("nan"), float("inf")])
def test_sample_rate_errors(rate: float) -> None:
    with pytest.raises(EpcsimError, match=r"--sample: a rate in \(0, 1\]"):
        sample_pages(np.arange(10), rate)


# --- mrc() on synthetic traces ------------------------------------------------------------


def test_loop_larger_than_the_cache_misses_every_access(traces) -> None:
    """A loop over more pages than the cache holds: CLOCK (like LRU and FIFO) evicts
    each page before its next use, so every access misses; an EPC holding the loop
    misses only the first pass (footprint / accesses)."""
    accesses = LOOP_PAGES * LOOP_PASSES
    small, mid, big = mrc(traces["loop"], sizes=[100, 200, 600], workers=1)
    for p in (small, mid):
        assert p.accesses == accesses
        assert p.miss_ratio >= 0.99, p
        # the SECS, the VA page and ksgxd's free pages are not cache
        assert 0 < p.steady_reclaimable_pages < p.epc_pages
    assert big.misses == LOOP_PAGES
    assert big.miss_ratio == LOOP_PAGES / accesses == 0.2
    assert big.steady_reclaimable_pages == LOOP_PAGES  # nothing evicted: the maximum
    for p in (small, mid, big):
        assert p.sim_epc_pages == p.epc_pages
        # a 300-page loop: the cache is never 512 pages, too small to trust
        assert p.sample == 1.0 and not p.trusted
        assert p.reason == f"steady reclaimable pages {p.steady_reclaimable_pages:.1f} < 512"
        assert p.mean_reclaimable_pages <= p.steady_reclaimable_pages + 1e-9
        assert p.wall_s > 0


def test_random_trace_curve_is_monotone_and_ends_at_the_footprint(traces) -> None:
    sizes = [100, 200, 300, 400, 500, 700]
    points = mrc(traces["rand"], sizes=sizes, workers=2)
    assert [p.epc_pages for p in points] == sizes
    mr = [p.miss_ratio for p in points]
    assert all(b <= a + 0.005 for a, b in zip(mr, mr[1:])), mr
    assert mr[0] > 0.8  # 100 pages of cache for 500 uniformly used pages
    # a uniform trace: the hit ratio is about the share of the pages resident
    for p in points[:-1]:
        assert abs((1 - p.miss_ratio) - p.steady_reclaimable_pages / RAND_PAGES) < 0.05, p
    assert points[-1].misses == RAND_PAGES  # the cache holds the footprint: cold misses
    assert points[-1].miss_ratio == RAND_PAGES / RAND_ACCESSES


def test_workers_do_not_change_the_points(traces) -> None:
    sizes = [150, 350]
    one = mrc(traces["rand"], sizes=sizes, workers=1)
    two = mrc(traces["rand"], sizes=sizes, workers=2)
    assert strip_wall(one) == strip_wall(two)


def test_progress_callback(traces) -> None:
    calls: list[tuple[int, int]] = []
    mrc(traces["loop"], sizes=[100, 600], workers=1, progress=lambda k, n: calls.append((k, n)))
    assert calls == [(1, 2), (2, 2)]


def test_default_sizes_and_size_strings(traces) -> None:
    points = mrc(traces["loop"], workers=2)
    assert [p.epc_pages for p in points] == parse_sizes("10%:100%:10", LOOP_PAGES)
    assert [p.epc_pages for p in mrc(traces["loop"], sizes="2400KiB", workers=1)] == [600]


def test_fault_unreferenced_changes_a_scan_resistant_case(traces) -> None:
    """A hot set of 100 pages interleaved with a scan of pages used once, 250 pages of
    EPC: a page faulted in unreferenced (textbook CLOCK) is the first one the hand
    takes, so the scan does not push the hot set out; faulted in referenced (the
    kernel: the retried access sets the accessed bit) every page survives one sweep
    and the cache behaves like FIFO."""
    (kernel,) = mrc(traces["hotscan"], sizes=[250], workers=1)
    (textbook,) = mrc(
        traces["hotscan"], sizes=[250], workers=1, experiments={"fault_unreferenced": True}
    )
    assert kernel.accesses == textbook.accesses == 8000
    assert textbook.miss_ratio < kernel.miss_ratio - 0.2, (kernel, textbook)
    # with the hot set resident only the scan misses (4000 + 100 first touches)
    assert textbook.miss_ratio == pytest.approx(4100 / 8000, abs=0.01)


def test_fault_unreferenced_changes_nothing_on_a_loop(traces) -> None:
    """On a pure loop there is no page worth protecting: both miss every access."""
    a, b = (
        mrc(traces["loop"], sizes=[200], workers=1, experiments=x)[0]
        for x in ({}, {"fault_unreferenced": True})
    )
    assert a.miss_ratio >= 0.99 and b.miss_ratio >= 0.99


def test_sampled_points(traces) -> None:
    rate = 0.5
    points = mrc(traces["rand"], sizes=[200, 400, 700], sample=rate, workers=1)
    pages = np.load(traces["rand"])
    # the trace's dense ids are its pages here (0..499, every one used first in some order)
    from epcsim.workload.traces import DenseMapper

    dense = DenseMapper().map(pages)
    kept = sample_pages(dense, rate)
    scale = len(np.unique(kept)) / RAND_PAGES
    for p in points:
        assert p.sample == rate
        assert p.accesses == len(kept)
        assert p.sim_epc_pages == round(p.epc_pages * scale)
        assert p.sim_epc_pages < SAMPLED_MIN_PAGES  # a few hundred pages
        assert not p.trusted
        assert p.reason == (
            f"steady reclaimable pages {p.steady_reclaimable_pages:.1f} < 512; "
            f"sampled EPC {p.sim_epc_pages} pages < 1000"
        )
    assert points[-1].misses == len(np.unique(kept))  # cold misses only
    # rate 1 is the exact curve
    assert strip_wall(mrc(traces["loop"], sizes=[600], sample=1, workers=1)) == strip_wall(
        mrc(traces["loop"], sizes=[600], workers=1)
    )


def test_mrc_errors(traces, tmp_path: Path) -> None:
    with pytest.raises(EpcsimError, match="no such file"):
        mrc(tmp_path / "missing.npy", sizes=[10])
    with pytest.raises(EpcsimError, match="the trace has no accesses"):
        mrc(traces["empty"], sizes=[10])
    with pytest.raises(EpcsimError, match=r"--sample: a rate in \(0, 1\]"):
        mrc(traces["loop"], sizes=[100], sample=0)
    with pytest.raises(EpcsimError, match="--sizes: not a percentage"):
        mrc(traces["loop"], sizes="x%")
    # below the SECS, the VA page and two data pages: refused before simulating
    with pytest.raises(EpcsimError, match="an EPC of 3 pages is below the 4 pages"):
        mrc(traces["loop"], sizes=[3, 100], workers=1)
    # an EPC the enclave cannot run in (SIGBUS: nothing reclaimable) is an error, not a
    # miss ratio of the accesses done before it died
    with pytest.raises(EpcsimError, match="a simulated EPC of 10 pages is too small"):
        mrc(traces["loop"], sizes=[10], workers=1)
    with pytest.raises(EpcsimError, match="or a larger --sample rate"):
        mrc(traces["loop"], sizes=[4], sample=0.5, workers=1)


# --- write_mrc ----------------------------------------------------------------------------


def fake_points(trusted_last: bool = True) -> list[MrcPoint]:
    return [
        MrcPoint(100, 10, 5000, 4500, 0.9, 8.25, 9.5, 0.1, False, "r1", 0.5),
        MrcPoint(1000, 100, 5000, 2000, 0.4, 80.0, 95.04, 0.1, False, "r2; r3", 0.5),
        MrcPoint(20000, 2000, 5000, 1234, 0.2468, 1800.0, 1950.0, 0.1, trusted_last, "", 0.5),
    ]


CSV_HEADER = (
    "epc_pages,sim_epc_pages,accesses,misses,miss_ratio,mean_reclaimable_pages,"
    "steady_reclaimable_pages,sample,trusted,reason"
)


def test_write_mrc_csv(tmp_path: Path) -> None:
    csv_path, png = write_mrc(fake_points(), tmp_path / "a" / "b", title="t")
    assert csv_path == tmp_path / "a" / "b" / "mrc.csv"
    assert png == tmp_path / "a" / "b" / "mrc.png"
    lines = csv_path.read_text().splitlines()
    assert lines[0] == CSV_HEADER
    assert lines[1:] == [
        "100,10,5000,4500,0.9,8.2,9.5,0.1,False,r1",
        "1000,100,5000,2000,0.4,80.0,95.0,0.1,False,r2; r3",
        "20000,2000,5000,1234,0.2468,1800.0,1950.0,0.1,True,",
    ]
    rows = read_csv(csv_path)
    assert [int(r["epc_pages"]) for r in rows] == [100, 1000, 20000]


def test_write_mrc_png_valid_and_deterministic(tmp_path: Path) -> None:
    from matplotlib.image import imread

    _, a = write_mrc(fake_points(), tmp_path / "a", title="t")
    _, b = write_mrc(fake_points(), tmp_path / "b", title="t")
    data = a.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data == b.read_bytes()
    img = imread(a)
    assert img.shape[:2] == (420, 700)
    # the untrusted points are drawn differently
    _, c = write_mrc(fake_points(trusted_last=False), tmp_path / "c", title="t")
    assert c.read_bytes() != data


# --- the command line ---------------------------------------------------------------------


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def assert_no_crash(r) -> None:
    assert not isinstance(r.exception, Exception), r.exception
    assert "Traceback" not in r.output


def test_cli_mrc_writes_table_csv_png(traces, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = invoke("mrc", traces["loop"], "--sizes", "100pages,600pages", "--out", out, "-j", "1")
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    for col in ("EPC pages", "EPC MiB", "miss ratio", "mean", "steady", "trusted"):
        assert col in r.stdout, col
    assert "1,500 accesses" in r.stdout and "exact" in r.stdout
    assert "0.2000" in r.stdout and "2.34" in r.stdout  # 600 pages = 2.34 MiB
    assert "2 sizes" in r.stdout
    lines = (out / "mrc.csv").read_text().splitlines()
    assert lines[0] == CSV_HEADER
    assert [x.split(",")[0] for x in lines[1:]] == ["100", "600"]
    assert lines[2].split(",")[4] == "0.2"
    # a 300-page loop: no point has 512 reclaimable pages, none is trusted
    rows = read_csv(out / "mrc.csv")
    assert [r["trusted"] for r in rows] == ["False", "False"]
    assert r.stderr.splitlines() == [
        f"warning: size {row['epc_pages']} pages "
        f"({int(row['epc_pages']) * 4096 / 2**20:.2f} MiB) is not to be trusted: "
        f"steady reclaimable pages {row['steady_reclaimable_pages']} < 512 (the kernel's "
        "fixed constants weigh on a cache this small; docs/MRC.md)"
        for row in rows
    ]
    assert (out / "mrc.png").read_bytes()[:4] == b"\x89PNG"
    assert f"wrote {out / 'mrc.csv'} and {out / 'mrc.png'}" in r.stdout


def test_cli_mrc_sampled_warns_below_the_threshold(traces, tmp_path: Path) -> None:
    r = invoke(
        "mrc", traces["rand"], "--sample", "0.5", "--sizes", "200pages,400pages",
        "-o", tmp_path / "s", "--workers", "2",
    )  # fmt: skip
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    assert "sampled EPC pages" in r.stdout and "sampled at 0.5" in r.stdout
    warnings = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 2, r.stderr
    rows = read_csv(tmp_path / "s" / "mrc.csv")
    for w, row in zip(warnings, rows):
        assert w == (
            f"warning: size {row['epc_pages']} pages "
            f"({int(row['epc_pages']) * 4096 / 2**20:.2f} MiB) is not to be trusted: "
            f"{row['reason']} (the kernel's fixed constants weigh on a cache this small; "
            "docs/MRC.md)"
        )
        assert row["reason"].endswith(f"sampled EPC {row['sim_epc_pages']} pages < 1000")
        assert row["trusted"] == "False"


def test_cli_mrc_default_out_options_and_experiment(
    traces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "hotscan.txt"
    # the hot/scan trace as byte addresses, read with a reader option
    text.write_text("".join(f"{hex(p * 4096 + 8)}\n" for p in np.load(traces["hotscan"])))
    r = invoke("mrc", text, "-O", "unit=address", "--sizes", "250pages", "-j", "1")
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    kernel = read_csv(tmp_path / "epcsim-mrc" / "hotscan" / "mrc.csv")
    assert kernel[0]["accesses"] == "8000"
    r = invoke(
        "mrc", text, "--format", "text", "-O", "unit=address", "--sizes", "250pages",
        "--fault-unreferenced", "--out", "fu",
    )  # fmt: skip
    assert_no_crash(r)
    assert r.exit_code == 0, r.output
    assert "experiment fault_unreferenced is on" in r.stdout
    textbook = read_csv(tmp_path / "fu" / "mrc.csv")
    assert float(textbook[0]["miss_ratio"]) < float(kernel[0]["miss_ratio"]) - 0.2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{d}/missing.npy"], "{d}/missing.npy: no such file"),
        (["{loop}", "--sizes", "10XB"], "--sizes: unknown unit 'XB' in '10XB'"),
        (["{loop}", "--sizes", "5:1:3"], "--sizes: '5' is not a multiple of 4096 bytes"),
        (
            ["{loop}", "--sizes", "1285"],
            "--sizes: '1285' is not a multiple of 4096 bytes (a bare number is bytes; "
            "for 1285 pages write 1285pages)",
        ),
        (["{loop}", "--sizes", "5pages:1pages:3"], "--sizes: need N >= 1 and A <= B"),
        (["{loop}", "--sizes", "abc%"], "--sizes: not a percentage: 'abc%'"),
        (["{loop}", "--sizes", ""], "--sizes: no size given"),
        (["{loop}", "--sizes", "2pages"], "--sizes: an EPC of 2 pages is below"),
        (["{loop}", "--sizes", "10pages"], "--sizes: a simulated EPC of 10 pages is too small"),
        (["{loop}", "--sample", "0"], "--sample: a rate in (0, 1], got 0.0"),
        (["{loop}", "--sample", "1.5"], "--sample: a rate in (0, 1], got 1.5"),
        (["{loop}", "--sample", "-0.1"], "--sample: a rate in (0, 1], got -0.1"),
        (["{loop}", "--sample", "nan"], "--sample: a rate in (0, 1], got nan"),
        (["{loop}", "--format", "xml"], "unknown trace format 'xml' (one of"),
        (["{loop}", "-O", "bogus=1"], "format 'npy': unknown option 'bogus'"),
        (["{loop}", "-O", "unit"], "--option 'unit': expected KEY=VALUE"),
        (["{d}/bad.txt"], "{d}/bad.txt: line 2: bad page number '0xZZ'"),
        (["{empty}"], "{empty}: the trace has no accesses"),
        (["{loop}", "--out", "{loop}"], "--out {loop}: exists and is not a directory"),
    ],
)
def test_cli_mrc_bad_input_exit_2(traces, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.txt").write_text("1\n0xZZ\n")
    fmt = {"d": tmp_path, "loop": traces["loop"], "empty": traces["empty"]}
    argv = [a.format(**fmt) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    r = invoke("mrc", *argv, "--workers", "1")
    assert_no_crash(r)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("epcsim: error: " + message.format(**fmt)), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [["--workers", "0"], ["--sample", "abc"], ["--bogus"], []],
    ids=["workers-0", "sample-not-a-number", "unknown-option", "no-trace"],
)
def test_cli_mrc_usage_errors_exit_2(traces, args: list[str]) -> None:
    argv = ["mrc", *args] if not args else ["mrc", str(traces["loop"]), *args]
    r = invoke(*argv)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


def test_cli_mrc_progress_counts_sizes() -> None:
    import io

    from rich.console import Console

    from epcsim.cli import _SizesProgress

    buf = io.StringIO()
    p = _SizesProgress(delay=0.0, console=Console(file=buf, force_terminal=True, width=100))
    p.begin(None)
    p(1, 3)
    assert p.shown
    p(2, 3)
    p.close()
    assert "2 / 3 sizes" in buf.getvalue()
    quiet = _SizesProgress(enabled=False)
    quiet.begin(None)
    quiet(1, 3)
    assert not quiet.shown
    quiet.close()


# --- outputs: written first, atomically; digits; help ------------------------------------


def sqlite_points(n: int) -> list[MrcPoint]:
    """A curve as a small, sqlite-sized trace gives: miss ratios of a few 1e-4."""
    ratios = [0.00047, 0.00043, 0.00041][:n]
    return [
        MrcPoint(2000 + 100 * k, 2000 + 100 * k, 1_000_000, round(r * 1e6), r, 1500.0,
                 1900.0 + 100 * k, 1.0, True, "", 0.1)
        for k, r in enumerate(ratios)
    ]  # fmt: skip


def test_cli_mrc_small_ratios_print_apart_and_one_size(
    traces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``epcsim mrc`` on a sqlite-sized curve printed 0.0004 for every point, and "1 sizes"
    for a single one."""
    import epcsim.mrc

    monkeypatch.setattr(epcsim.mrc, "mrc", lambda *a, **k: sqlite_points(3))
    r = invoke("mrc", traces["loop"], "--out", tmp_path / "a")
    assert r.exit_code == 0, r.output
    assert "1,000,000 accesses, 3 sizes, exact" in r.stdout
    for ratio in ("0.0004700", "0.0004300", "0.0004100"):
        assert f" {ratio} " in r.stdout, r.stdout
    assert read_csv(tmp_path / "a" / "mrc.csv")[2]["miss_ratio"] == "0.00041"
    monkeypatch.setattr(epcsim.mrc, "mrc", lambda *a, **k: sqlite_points(1))
    r = invoke("mrc", traces["loop"], "--out", tmp_path / "b")
    assert r.exit_code == 0, r.output
    assert "1,000,000 accesses, 1 size, exact" in r.stdout


def test_cli_mrc_writes_the_files_before_printing(
    traces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``epcsim mrc ... | head -1`` stops reading after the first line: mrc.csv and mrc.png
    must exist by then."""
    import io

    from rich.console import Console

    import epcsim.cli
    import epcsim.mrc

    out = tmp_path / "out"
    seen: list[tuple[bool, bool]] = []

    class Recording(Console):
        def print(self, *args, **kwargs) -> None:  # type: ignore[override]
            seen.append(((out / "mrc.csv").exists(), (out / "mrc.png").exists()))
            super().print(*args, **kwargs)

    monkeypatch.setattr(epcsim.mrc, "mrc", lambda *a, **k: sqlite_points(2))
    monkeypatch.setattr(epcsim.cli, "_stdout", lambda: Recording(file=io.StringIO()))
    r = invoke("mrc", traces["loop"], "--out", out)
    assert r.exit_code == 0, r.output
    assert seen and all(x == (True, True) for x in seen), seen


@pytest.mark.parametrize("fail_in", ["csv", "png"])
def test_write_mrc_interrupted_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_in: str
) -> None:
    """Ctrl-C while mrc.csv or mrc.png is being written: no partial file, no temporary
    file left, and the previous outputs untouched."""
    import csv as csvmod

    from matplotlib.figure import Figure

    out = tmp_path / "out"
    write_mrc(fake_points(), out, title="old")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == ["mrc.csv", "mrc.png"]

    def interrupt(*args, **kwargs):
        if fail_in == "png":
            Path(args[1] if len(args) > 1 else kwargs["fname"]).write_bytes(b"\x89PNG partial")
        raise KeyboardInterrupt

    if fail_in == "csv":
        calls = iter(range(100))
        real = csvmod.DictWriter.writerow

        def writerow(self, row):
            if next(calls) == 1:  # after the first row is written
                raise KeyboardInterrupt
            return real(self, row)

        monkeypatch.setattr(csvmod.DictWriter, "writerow", writerow)
    else:
        monkeypatch.setattr(Figure, "savefig", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_mrc(fake_points(trusted_last=False), out, title="new")
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(after) == ["mrc.csv", "mrc.png"]  # no temporary file left
    assert after["mrc.png"] == before["mrc.png"]
    if fail_in == "csv":  # the CSV is written first: nothing new at all
        assert after["mrc.csv"] == before["mrc.csv"]
    else:  # the CSV was complete before the PNG was interrupted
        assert after["mrc.csv"].decode().endswith("1950.0,0.1,False,\n")


def test_cli_mrc_interrupted_while_writing_exits_130(
    traces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import epcsim.mrc

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(epcsim.mrc, "mrc", lambda *a, **k: sqlite_points(2))
    monkeypatch.setattr(epcsim.mrc, "write_mrc", interrupt)
    r = invoke("mrc", traces["loop"], "--out", tmp_path / "o")
    assert r.exit_code == 130
    assert r.stdout == "" and r.stderr == "interrupted\n"


def test_cli_mrc_help_has_no_emoji_and_no_bool_metavar() -> None:
    """``epcsim mrc --help`` rendered ``A:B:N`` as ``A🅱N`` (rich's emoji codes) and showed
    ``<bool>`` as the value of every flag."""
    r = runner.invoke(app, ["mrc", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "FROM:TO:N" in r.stdout
    assert "\N{NEGATIVE SQUARED LATIN CAPITAL LETTER B}" not in r.stdout
    assert "<bool>" not in r.stdout
    flags = [x for x in r.stdout.splitlines() if "--fault-unreferenced" in x or "--help" in x]
    assert len(flags) == 2
    for line in flags:
        # the flag, then its help text with nothing in between
        assert line.split()[2] in ("Experiment:", "Show"), line


def test_cli_mrc_interrupted_while_simulating_writes_nothing(
    traces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import epcsim.mrc

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(epcsim.mrc, "mrc", interrupt)
    r = invoke("mrc", traces["loop"], "--out", tmp_path / "o")
    assert r.exit_code == 130
    assert r.stdout == "" and r.stderr == "interrupted\n"
    assert not (tmp_path / "o").exists()
