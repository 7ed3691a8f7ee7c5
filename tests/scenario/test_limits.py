"""Bad input that used to crash epcsim or eat the machine (the hardening issue, part 4):
scenario files that are not UTF-8, sizes above what the model's arrays can index, the
memory estimate made at load (refused above the available memory, a warning above half
of it), the cap on enclave threads, writes the kernel has no file for, a zero duration
and ``--set`` keys with a negative index.  Each is a ScenarioError naming the file, the
table and the field; the CLI turns it into one line and exit status 2."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from epcsim.cli import app
from epcsim.errors import EpcsimError, ScenarioError
from epcsim.scenario import limits, load_scenario
from epcsim.scenario.limits import (
    MAX_CGROUPS,
    MAX_ENCL_PAGES,
    MAX_EPC_PAGES,
    MAX_THREADS,
    MEMORY_ENV,
    MemoryEstimateWarning,
    available_memory,
    epc_pages_used,
    estimate_memory,
)
from epcsim.units import parse_size, parse_time

GiB = 1 << 30

TRIVIAL = """\
[host]
epc = "1MiB"

[[enclave]]
name = "e"
size = "64KiB"
workload = { pattern = "uniform", accesses = 1000 }
"""

#: TRIVIAL with a cgroup limit: any page of the EPC may be allocated (the memory
#: estimate counts every EPC page)
LIMITED = TRIVIAL + '[[cgroup]]\npath = "/a"\nmax = "capacity/2"\n'

runner = CliRunner()


@pytest.fixture(autouse=True)
def _memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same available memory on every machine: 16 GiB."""
    monkeypatch.setenv(MEMORY_ENV, "16GiB")


def raises(source: Any, overrides: tuple[str, ...] = ()) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(source, overrides=list(overrides))
    return info.value


def where(e: ScenarioError) -> tuple[str, str, str]:
    return e.file, e.table, e.field


def cli_error(*argv: str) -> str:
    """Run the CLI; it must exit 2 with one line on stderr, no traceback."""
    r = runner.invoke(app, list(argv))
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert r.stderr.startswith("epcsim: error: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.output
    return r.stderr.strip()


# --- scenario files that are not UTF-8 ----------------------------------------------------


def test_latin1_file_is_refused(tmp_path: Path) -> None:
    """`name = "caf\\xe9"` in Latin-1: was a UnicodeDecodeError traceback (exit 1)."""
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'name = "caf\xe9"\n[host]\nepc = "1MiB"\n')
    e = raises(p)
    assert where(e) == (str(p), "", "")
    assert str(e) == (f"{p}: not UTF-8 text: byte 0xe9 at offset 11 (line 1); TOML files are UTF-8")
    for cmd in ("validate", "run"):
        assert cli_error(cmd, str(p)) == f"epcsim: error: {e}"


def test_binary_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "bin.toml"
    p.write_bytes(b'[host]\nepc = "1MiB"\n\x00\xff\xfe binary')
    e = raises(str(p))
    assert str(e) == (f"{p}: not UTF-8 text: byte 0xff at offset 21 (line 3); TOML files are UTF-8")
    assert cli_error("run", str(p), "--out", str(tmp_path / "out")) == f"epcsim: error: {e}"
    assert not (tmp_path / "out").exists()


def test_unreadable_file_is_a_scenario_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "s.toml"
    p.write_text(TRIVIAL)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    e = raises(str(p))
    assert where(e) == (str(p), "", "")
    assert str(e) == f"{p}: cannot read: Permission denied"


# --- the model's limits (int32 page numbers, int16 cgroup ids, threads) ------------------


def test_epc_above_int32_pages_is_refused(tmp_path: Path) -> None:
    """host.epc = "1024TiB" validated, then run died with MemoryError; now refused at
    load whatever the machine, naming the limit."""
    e = raises(TRIVIAL, ("host.epc=1024TiB",))
    assert where(e) == ("<string>", "host", "epc")
    assert str(e) == (
        "<string>: host.epc: '1024TiB' is 274877906944 EPC pages; the model holds at most "
        "2147483647 (EPC page numbers are int32: 8TiB - 4KiB)"
    )
    assert MAX_EPC_PAGES == 2**31 - 1
    out = tmp_path / "run"
    for argv in (["validate"], ["run", "--out", str(out)]):
        line = cli_error(argv[0], TRIVIAL, *argv[1:], "--set", "host.epc=1024TiB")
        assert line == f"epcsim: error: {e}"
    assert not out.exists()


def test_epc_limit_is_exact() -> None:
    """8 TiB - 4 KiB is the largest EPC the model can number (with a cgroup limit, the
    memory estimate then refuses it on this 16 GiB machine, on the EPC pages' field;
    a small enclave without limits uses a few pages of it)."""
    e = raises(TRIVIAL, ("host.epc=8TiB",))
    assert "the model holds at most 2147483647" in str(e)
    e = raises(LIMITED, (f"host.epc={MAX_EPC_PAGES * 4096}",))
    assert where(e) == ("<string>", "host", "epc")
    assert "the run would need up to 40.0 GiB of memory" in str(e)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scenario(TRIVIAL, overrides=[f"host.epc={MAX_EPC_PAGES * 4096}"])


def test_sections_sum_above_int32_pages_is_refused() -> None:
    e = raises(TRIVIAL, ('host.sections=["4TiB", "4TiB"]',))
    assert where(e) == ("<string>", "host", "sections")
    assert "is 2147483648 EPC pages; the model holds at most 2147483647" in str(e)


def test_enclave_size_above_the_elrange_limit_names_the_size() -> None:
    """`--set enclave.0.size=64TiB` blamed enclave[0].workload.npages; now the size,
    with the limit."""
    e = raises(TRIVIAL, ("enclave.0.size=64TiB",))
    assert where(e) == ("<string>", "enclave[0]", "size")
    assert str(e) == (
        "<string>: enclave[0].size: '64TiB' needs an ELRANGE of 17179869184 pages (the next "
        "power of two of the size); an enclave holds at most 1073741824 (4TiB: enclave page "
        "indices are int32)"
    )
    assert MAX_ENCL_PAGES * 4096 == 4 << 40
    e = raises(TRIVIAL, ("enclave.0.size=4100GiB",))
    assert where(e) == ("<string>", "enclave[0]", "size")
    assert "needs an ELRANGE of 2147483648 pages" in str(e)
    # 4 TiB exactly fits the model (and is then too big for this machine's memory)
    e = raises(TRIVIAL, ("enclave.0.size=4TiB",))
    assert "the run would need up to" in str(e)


def test_kselftest_heap_counts_test_sgx_pages() -> None:
    """A kselftest heap of exactly 4 TiB: with test_sgx's own pages the ELRANGE is 8 TiB."""
    toml = TRIVIAL.replace('workload = { pattern = "uniform", accesses = 1000 }', "")
    toml = toml.replace('name = "e"', 'name = "e"\nprogram = "kselftest"')
    e = raises(toml, ("enclave.0.size=4TiB",))
    assert where(e) == ("<string>", "enclave[0]", "size")
    assert str(e) == (
        "<string>: enclave[0].size: '4TiB' needs an ELRANGE of 2147483648 pages (the next "
        "power of two of the heap and test_sgx's pages); an enclave holds at most 1073741824 "
        "(4TiB: enclave page indices are int32)"
    )


def test_vepc_pages_above_int32_is_refused() -> None:
    e = raises(TRIVIAL + '[[vepc]]\nname = "g"\npages = 3000000000\n')
    assert where(e) == ("<string>", "vepc[0]", "pages")
    assert str(e) == (
        "<string>: vepc[0].pages: 3000000000 pages; a vEPC holds at most 2147483647 "
        "(int32 page numbers)"
    )


def test_threads_in_all_are_capped() -> None:
    """`count = 4096, threads = 1024` validated and ran for minutes: 4,194,304 threads."""
    e = raises(TRIVIAL, ("enclave.0.count=4096", "enclave.0.threads=1024"))
    assert where(e) == ("<string>", "enclave[0]", "threads")
    assert str(e) == (
        "<string>: enclave[0].threads: 4194304 enclave threads in all (count x threads "
        "summed over [[enclave]]); at most 65536"
    )
    assert MAX_THREADS == 65_536
    # exactly at the cap is fine
    sc = load_scenario(TRIVIAL, overrides=["enclave.0.count=64", "enclave.0.threads=1024"])
    assert sc.enclave[0].count * sc.enclave[0].threads == MAX_THREADS


def test_more_cgroups_than_int16_ids_is_refused() -> None:
    data: dict[str, Any] = tomllib.loads(TRIVIAL)
    data["cgroup"] = [{"path": f"/c{i}"} for i in range(MAX_CGROUPS)]
    data["at"] = [{"time": "1ms", "mkdir": "/x"}]
    e = raises(data)
    assert where(e) == ("<dict>", "cgroup", "")
    assert str(e) == (
        "<dict>: cgroup: 32768 cgroups ([[cgroup]] and [[at]] mkdir); the model holds at "
        "most 32767 (cgroup ids are int16)"
    )


# --- the memory estimate -------------------------------------------------------------------


def test_estimate_formula_parts() -> None:
    """Every part of the documented formula, on a small scenario."""
    sc = load_scenario(
        """\
[host]
epc = "1MiB"
duration = "1s"
sample_interval = "10ms"

[[cgroup]]
path = "/a"

[[enclave]]
name = "e"
cgroup = "/a"
size = "96KiB"
count = 2
threads = 2
workload = { pattern = "zipf", alpha = 1.0, accesses = 100001 }

[[enclave]]
name = "d"
size = "8KiB"
workload = { pattern = "uniform", duration = "3ms" }

[[vepc]]
name = "g"
pages = 10
"""
    )
    est = estimate_memory(sc)
    assert estimate_memory(sc, [96 << 10, 8 << 10]) == est
    # enclave e: ELRANGE 128KiB = 32 pages, x2 processes; d: 2 pages; zipf: 32 pages once
    # threads: 5 (fixed part) + buffers 50001 + 50000 (x2 processes) + 65536 (d)
    # faults: e's accesses (100001 x 2 processes), d's 3ms / 3000ns + 1 = 1001
    assert est.parts == {
        # EPC pages allocated: e 2 x (32 + 2: a VA page, the SECS), d 2 + 2, the vEPC's 10
        "epc": (20 * 82, "host", "epc", "82 of 256 EPC pages"),
        "samples": (320 * 102 * 2, "host", "sample_interval", "102 samples x 2 cgroups"),
        "enclave pages": (36 * 66 + 24 * 32, "enclave[0]", "size", "66 enclave pages"),
        "vepc": (4 * 10, "vepc", "pages", "10 vEPC pages"),
        "threads": (
            (16 << 10) * 5 + 8 * (2 * (50001 + 50000) + 65536),
            "enclave[0]",
            "threads",
            "5 threads",
        ),
        "faults": (24 * (2 * 100001 + 1001), "host", "duration", "up to 201003 faults"),
    }
    assert est.total == sum(b for b, *_ in est.parts.values())


def test_sample_interval_of_1ns_is_refused() -> None:
    """`sample_interval = "1ns"` grew to 5.4 GB and died; now refused at load."""
    e = raises(TRIVIAL, ("host.sample_interval=1ns",))
    assert where(e) == ("<string>", "host", "sample_interval")
    assert str(e) == (
        "<string>: host.sample_interval: the run would need up to 17881.4 GiB of memory "
        "(17881.4 GiB for 60000000002 samples x 1 cgroups), more than the 16.0 GiB "
        f"available (set by {MEMORY_ENV})"
    )
    assert cli_error("validate", TRIVIAL, "--set", "host.sample_interval=1ns") == (
        f"epcsim: error: {e}"
    )


def test_refusal_follows_the_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same scenario passes with enough memory, is refused without."""
    over = ("host.epc=4GiB",)  # 20 MiB for the EPC pages
    monkeypatch.setenv(MEMORY_ENV, "1GiB")
    load_scenario(LIMITED, overrides=over)
    monkeypatch.setenv(MEMORY_ENV, "20MiB")
    e = raises(LIMITED, over)
    assert where(e) == ("<string>", "host", "epc")
    assert str(e) == (
        "<string>: host.epc: the run would need up to 23.7 MiB of memory (20.0 MiB for "
        "1048576 EPC pages, 3.7 MiB for 6002 samples x 2 cgroups), more than the 20.0 MiB "
        f"available (set by {MEMORY_ENV})"
    )


def test_one_tib_epc_takes_the_pages_used() -> None:
    """`--set host.epc=1TiB` on a trivial scenario silently took 6.9 GB; then it warned
    (every EPC page counted); now the pool costs the pages the run can use (issue 15):
    no warning.  Where every page may be used (a cgroup limit), 2 TiB warns."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc = load_scenario(TRIVIAL, overrides=["host.epc=1TiB"])
    assert estimate_memory(sc).parts["epc"] == (
        20 * 18,  # 16 pages, a VA page, the SECS
        "host",
        "epc",
        "18 of 268435456 EPC pages",
    )
    with pytest.warns(MemoryEstimateWarning) as rec:
        load_scenario(LIMITED, overrides=["host.epc=2TiB"])
    assert len(rec) == 1
    assert str(rec[0].message) == (
        "<string>: the run may need up to 10.0 GiB of memory of the 16.0 GiB available "
        "(10.0 GiB for 536870912 EPC pages)"
    )
    assert rec[0].filename == __file__  # points at the caller of load_scenario


def test_epc_pages_used_bound() -> None:
    """The EPC pages counted: the whole EPC unless nothing can allocate a page twice
    before it is nearly full (docs/SCENARIOS.md)."""
    big = ("host.epc=1GiB",)
    assert epc_pages_used(load_scenario(TRIVIAL, overrides=big), [64 << 10]) == 18
    for extra in (
        '[[cgroup]]\npath = "/a"\nmemory_max = "1MiB"\n',
        '[[at]]\ntime = "1ms"\nmkdir = "/b"\n',
    ):
        sc = load_scenario(TRIVIAL + extra, overrides=big)
        assert epc_pages_used(sc, [64 << 10]) == 1 << 18
    sc = load_scenario(TRIVIAL, overrides=(*big, "host.policy=global-lru"))
    assert epc_pages_used(sc, [64 << 10]) == 1 << 18
    # near the EPC's size: the whole EPC (reclaim may start)
    sc = load_scenario(TRIVIAL, overrides=("host.epc=320KiB",))
    assert epc_pages_used(sc, [64 << 10]) == 80
    sc = load_scenario(TRIVIAL, overrides=("host.epc=336KiB",))
    assert epc_pages_used(sc, [64 << 10]) == 18


def test_half_of_the_available_memory_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_ENV, "40MiB")
    with pytest.warns(MemoryEstimateWarning) as rec:
        load_scenario(LIMITED, overrides=["host.epc=4GiB"])
    assert str(rec[0].message) == (
        "<string>: the run may need up to 23.7 MiB of memory of the 40.0 MiB available "
        "(20.0 MiB for 1048576 EPC pages, 3.7 MiB for 6002 samples x 2 cgroups)"
    )
    monkeypatch.setenv(MEMORY_ENV, "48MiB")  # 23.7 MiB is less than half
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scenario(LIMITED, overrides=["host.epc=4GiB"])  # no warning


@pytest.mark.parametrize("name", ["kselftest", "noisy-neighbour", "overcommit", "nested-fairness"])
def test_builtins_load_without_a_warning(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_ENV, "1GiB")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scenario(f"builtin:{name}")


def test_available_memory_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    assert available_memory() == (16 * GiB, MEMORY_ENV)
    monkeypatch.setenv(MEMORY_ENV, "12345")
    assert available_memory() == (12345, MEMORY_ENV)
    monkeypatch.delenv(MEMORY_ENV)
    n, src = available_memory()
    assert n is not None and n > 0
    assert src in ("MemAvailable in /proc/meminfo", "sysconf")


def test_bad_memory_env_is_a_scenario_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_ENV, "lots")
    e = raises(TRIVIAL)
    assert where(e) == ("<string>", "", MEMORY_ENV)
    assert str(e) == (f"<string>: {MEMORY_ENV}: not a size: 'lots' (examples: 96MiB, 4KiB, 4096)")


def test_estimate_uses_the_trace_free_size_for_program_enclaves() -> None:
    """The kselftest program records no fault latencies: its threads cost their fixed
    part only, its pages are test_sgx's ELRANGE."""
    sc = load_scenario("builtin:kselftest")
    est = limits.estimate_memory(sc)
    assert est.parts["faults"][0] == 0
    assert est.parts["threads"][0] == (16 << 10) * sum(e.count for e in sc.enclave)


# --- values the run could not use ----------------------------------------------------------


def test_root_misc_max_write_is_refused_at_load() -> None:
    """`[[at]] write /misc.max` passed validation and failed at run time with ENOENT."""
    for f in ("misc.max", "memory.max"):
        e = raises(
            TRIVIAL + f'[[at]]\ntime = "1ms"\nwrite = {{ path = "/{f}", value = "sgx_epc 0" }}\n'
        )
        assert where(e) == ("<string>", "at[0]", "write.path")
        assert str(e) == (
            f"<string>: at[0].write.path: the root cgroup has no {f} (only non-root cgroups "
            "have one)"
        )


@pytest.mark.parametrize("value", ["0s", "0", "0ms"])
def test_zero_duration_is_refused(value: str) -> None:
    """`duration = "0s"` was accepted and did nothing."""
    e = raises(TRIVIAL, (f"host.duration={value}",))
    assert where(e) == ("<string>", "host", "duration")
    got = 0 if value == "0" else value
    assert str(e) == f"<string>: host.duration: must be > 0, got {got!r}"


@pytest.mark.parametrize("key", ["enclave.-1.size", "enclave.+0.size", "enclave. 0.size"])
def test_set_with_a_signed_index_names_the_key(key: str) -> None:
    """`--set 'enclave.-1.size=1MiB'` silently meant the last element."""
    e = raises(TRIVIAL, (f"{key}=1MiB",))
    part = key.split(".")[1]
    assert where(e) == ("<string>", "", f"enclave.{part}")
    assert str(e) == f"<string>: enclave.{part}: --set {key}: no element {part!r}"
    assert cli_error("validate", TRIVIAL, "--set", f"{key}=1MiB") == f"epcsim: error: {e}"


# --- units: exact, never a crash ------------------------------------------------------------


@pytest.mark.parametrize("text", ["1" + "0" * 400 + ".5", "9" * 5000])
def test_huge_numbers_are_refused_not_crashed(text: str) -> None:
    """A 400-digit decimal raised OverflowError (float infinity), 5000 digits Python's
    int() ValueError: now an EpcsimError naming the field."""
    with pytest.raises(EpcsimError, match=r"^epc: '.{20}'\.\.\. has more than 64 digits$"):
        parse_size(text, what="epc")
    with pytest.raises(EpcsimError, match=r"^duration: '.{20}'\.\.\. has more than 64 digits$"):
        parse_time(text + "s", what="duration")


def test_decimal_units_are_exact() -> None:
    """Decimals are exact fractions: 2.01KB is 2,010 bytes and 8.2MB 8,200,000 (floats
    made them 2009.9999999999998 and 8199999.999999999, refused), 0.1B is refused."""
    assert parse_size("2.01KB") == 2010
    assert parse_size("8.2MB") == 8_200_000
    assert parse_size("1.5KiB") == 1536
    assert parse_time("2.01us") == 2010
    assert parse_time("0.3ms") == 300_000
    with pytest.raises(EpcsimError, match="not a whole number of bytes"):
        parse_size("0.1B")
    with pytest.raises(EpcsimError, match="not a whole number of nanoseconds"):
        parse_time("1.5ns")


def test_check_memory_false_skips_only_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    """mrc's points have duration = 100000s as a cap only: they load with
    check_memory=False; the model's limits still hold."""
    mrc_like = TRIVIAL.replace('epc = "1MiB"', 'epc = "1MiB"\nduration = "1000000s"')
    e = raises(mrc_like)
    assert where(e) == ("<string>", "host", "sample_interval")
    sc = load_scenario(mrc_like, check_memory=False)
    assert sc.host.duration == "1000000s"
    with pytest.raises(ScenarioError, match="the model holds at most 2147483647"):
        load_scenario(mrc_like, overrides=["host.epc=1024TiB"], check_memory=False)


def test_write_value_longer_than_a_page_is_refused() -> None:
    """One write(2) to a cgroup file takes at most PAGE_SIZE bytes (E2BIG at run time):
    refused at load, before parsing the value."""
    value = "sgx_epc 4096" + " " * 4085  # 4097 bytes
    e = raises(
        TRIVIAL.replace("[[enclave]]", '[[cgroup]]\npath = "/a"\n\n[[enclave]]')
        + f'[[at]]\nwrite = {{ path = "/a/misc.max", value = "{value}" }}\n'
    )
    assert where(e) == ("<string>", "at[0]", "write.value")
    assert str(e) == (
        "<string>: at[0].write.value: 4097 bytes; one write to a cgroup file takes at most "
        "a page (4096 bytes, else E2BIG)"
    )


@pytest.mark.parametrize(
    "extra, table, field",
    [
        ('[[cgroup]]\npath = "/.."\n', "cgroup[0]", "path"),
        ('[[cgroup]]\npath = "/a/."\n', "cgroup[0]", "path"),
        ('[[at]]\nmkdir = "/a/../b"\n', "at[0]", "mkdir"),
        ('[[at]]\nrmdir = "/."\n', "at[0]", "rmdir"),
        ('[[at]]\nwrite = { path = "/b/../misc.max", value = "x" }\n', "at[0]", "write.path"),
        ('[[expect]]\nfile = "/./misc.current"\nequals = "x"\n', "expect[0]", "file"),
    ],
)
def test_dot_and_dotdot_in_scenario_paths_are_refused(extra: str, table: str, field: str) -> None:
    """A [[cgroup]] path "/.." validated, then the run failed (mkdir: EEXIST): paths are
    compared as written, so '.' and '..' are refused at load."""
    e = raises(TRIVIAL + extra)
    assert where(e) == ("<string>", table, field)
    assert "'.' and '..' are " in str(e)


def test_validator_messages_have_no_pydantic_prefix() -> None:
    """Our own validators' messages come without pydantic's "Value error, " and without a
    second "(got ...)"."""
    e = raises(TRIVIAL + '[[cgroup]]\npath = "/.."\n')
    assert str(e) == "<string>: cgroup[0].path: '.' and '..' are not cgroup names, got '/..'"
    e = raises(TRIVIAL + '[[cgroup]]\npath = "a"\n')
    assert str(e) == (
        "<string>: cgroup[0].path: must be an absolute cgroup path like /a/b, got 'a'"
    )


@pytest.mark.parametrize("expr", ["capacity" + "+1" * 5000, "capacity" + "*2" * 100])
def test_long_capacity_expressions_are_refused(expr: str) -> None:
    """A 10,000-character expression raised RecursionError from the parser."""
    e = raises(TRIVIAL, (f"enclave.0.size={expr}",))
    assert where(e) == ("<string>", "enclave[0]", "size")
    assert str(e) == (
        "<string>: enclave[0].size: an expression of capacity has at most 200 characters, "
        f"got {len(expr)}"
    )


def test_nul_in_a_path_is_refused() -> None:
    """A NUL in a path is a ValueError at the cgroupfs boundary (as in Python's os):
    refused at load rather than crashing the run."""
    e = raises(TRIVIAL + '[[expect]]\nfile = "/misc.current\\u0000"\nequals = "x"\n')
    assert where(e) == ("<string>", "expect[0]", "file")
    assert str(e) == (
        "<string>: expect[0].file: a NUL byte is not allowed in paths, got '/misc.current\\x00'"
    )


def test_a_trace_run_once_bounds_its_faults_by_its_accesses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trace workload without accesses or duration runs its trace once per thread, so
    its faults are at most the trace's accesses (counted at validation), not
    duration / costs.fault: a long safety-cap duration is no reason to refuse it
    (benchmarks/peer.py's scenarios were refused at 757 GiB)."""
    import numpy as np

    np.save(tmp_path / "t.npy", np.arange(1000, dtype=np.int64) % 300)
    np.save(tmp_path / "u.npy", np.arange(70, dtype=np.int64))
    monkeypatch.setenv(MEMORY_ENV, str(4 * GiB))
    text = f"""\
[host]
epc = "1MiB"
duration = "100000s"
sample_interval = "1s"

[[enclave]]
name = "e"
threads = 2
workload = {{ trace = ["{tmp_path / "t.npy"}", "{tmp_path / "u.npy"}"], format = "npy" }}

[[enclave]]
name = "f"
workload = {{ trace = "{tmp_path / "t.npy"}", format = "npy", accesses = 5 }}

[[enclave]]
name = "g"
workload = {{ trace = "{tmp_path / "u.npy"}", format = "npy", duration = "1ms" }}
"""
    f = tmp_path / "s.toml"
    f.write_text(text)
    est = estimate_memory(load_scenario(f), trace_accesses={0: [1000, 70], 1: [1000], 2: [70]})
    # e: 1000 + 70 (each thread its trace once); f: accesses = 5; g: 1ms / 3000ns + 1
    assert est.parts["faults"][3] == f"up to {1000 + 70 + 5 + 334} faults"
    # without the counts the bound is the duration's: such a run would be refused
    bound = 2 * (100_000 * 10**9 // 3000 + 1) + 5 + 334
    assert estimate_memory(load_scenario(f)).parts["faults"][3] == f"up to {bound} faults"
