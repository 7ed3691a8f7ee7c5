"""The batched engine gives exactly what the step-by-step engine gives (issue 4).

Every comparison runs one scenario with ``engine="reference"`` (the kernel model driven
step by step) and ``engine="compiled"`` and compares the whole summary (every counter:
cgroups, enclaves, ENCLS leaves, times, latency percentiles), the time series and every
fault latency.  The hypothesis test draws small random scenarios across the eligible
space: EPC sizes and sections, cgroup trees with limits, EADD/EAUG builds, patterns,
costs, sample intervals, time limits, the unreferenced-fault experiment.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _tenants import assert_tenant_counts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epcsim.compiled.engine import static_ineligibility
from epcsim.errors import EpcsimError
from epcsim.scenario.schema import load_scenario
from epcsim.sim.engine import simulate


def _toml(
    *,
    epc_pages: int = 256,
    sections: list[int] | None = None,
    cgroups: list[tuple[str, str]] = (("/t", "max"),),
    cgroup: str = "/t",
    build: str = "eaug",
    size_pages: int = 1024,
    workload: str = 'pattern = "zipf", alpha = 0.9',
    accesses: int | None = 5000,
    run_for: str | None = None,
    duration: str = "100s",
    sample: str = "1ms",
    unref: bool = False,
    misc: bool = True,
    costs: dict[str, int] | None = None,
    seed: int = 1,
) -> str:
    host = [f'duration = "{duration}"', f'sample_interval = "{sample}"', f"seed = {seed}"]
    host.append("cpus = 1")
    if sections:
        host.append("sections = [" + ", ".join(f'"{p * 4}KiB"' for p in sections) + "]")
    else:
        host.append(f'epc = "{epc_pages * 4}KiB"')
    if not misc:
        host.append("misc = false")
    if unref:
        host.append("experiments = { fault_unreferenced = true }")
    out = ['name = "exact"', "[host]", *host]
    if costs:
        out.append("[host.costs]")
        out += [f'{k} = "{v}ns"' for k, v in costs.items()]
    for path, mx in cgroups:
        out += ["[[cgroup]]", f'path = "{path}"', f'max = "{mx}"']
    amount = f"accesses = {accesses}" if run_for is None else f'duration = "{run_for}"'
    out += [
        "[[enclave]]",
        'name = "e"',
        f'cgroup = "{cgroup}"',
        f'build = "{build}"',
        f'size = "{size_pages * 4}KiB"',
        f"workload = {{ {workload}, {amount} }}",
    ]
    return "\n".join(out) + "\n"


def _both(toml: str):
    ref = simulate(toml, engine="reference")
    bat = simulate(toml, engine="auto")
    return ref, bat


def _assert_same(ref, bat) -> None:
    assert ref.engine == "reference"
    a = json.dumps(ref.summary, sort_keys=True)
    b = json.dumps(bat.summary, sort_keys=True)
    if a != b:  # show the differing fields
        fa, fb = _flat(ref.summary), _flat(bat.summary)
        diff = {k: (fa.get(k), fb.get(k)) for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}
        pytest.fail(f"summaries differ (reference, batched): {diff}")
    assert ref.timeseries.equals(bat.timeseries)
    assert np.array_equal(ref.fault_latency_ns, bat.fault_latency_ns)
    # the latencies' enclave and cgroup tags (fault_latency.parquet)
    assert ref.fault_latency is not None and ref.fault_latency.equals(bat.fault_latency)
    # and the per-tenant counters add up (the reclaim split, the timed faults)
    assert_tenant_counts(ref.summary)


def _flat(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
    else:
        out[prefix] = d
    return out


# --- fixed scenarios: each reaches a different part of the core --------------------------


FIXED = {
    # thrashing under ksgxd only (footprint 4x the EPC)
    "ksgxd": {},
    # the cgroup's own limit: charges fail in /t, the worker reclaims
    "limit": {"cgroups": [("/t", "600KiB")]},
    # a nested tree: the cursor rotates over siblings with empty LRUs
    "tree": {
        "cgroups": [("/a", "max"), ("/a/b", "800KiB"), ("/a/c", "max"), ("/d", "max")],
        "cgroup": "/a/b",
    },
    # every page fits: no reclaim at all
    "fits": {"epc_pages": 2048, "size_pages": 256},
    # a tiny enclave evicted whole: the SECS goes out and comes back (ELDU first)
    "secs": {"epc_pages": 80, "size_pages": 64, "workload": 'pattern = "sequential"'},
    # the loop misses on every access
    "loop": {"workload": 'pattern = "loop", length = 600', "accesses": 8000},
    # the time limit stops the run mid-batch
    "limit_time": {"duration": "3ms", "accesses": 50000},
    # a duration workload
    "duration": {"accesses": None, "run_for": "2ms"},
    # the experiment switch
    "unref": {"unref": True},
    # misc disabled: everything charges the root
    "nomisc": {"misc": False, "cgroups": [], "cgroup": "/"},
    # two EPC sections (NUMA nodes)
    "sections": {"sections": [100, 156]},
    # a task in the root cgroup
    "root": {"cgroups": [], "cgroup": "/"},
    # sampling more often than events
    "fine_samples": {"sample": "10us", "accesses": 3000},
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_scenarios_match(name: str) -> None:
    ref, bat = _both(_toml(**FIXED[name]))
    assert bat.engine == "compiled", bat.engine_note
    _assert_same(ref, bat)


def test_fixed_scenarios_exercise_reclaim() -> None:
    """The fixed set is not vacuous: evictions, worker reclaim, SECS eviction happen."""
    ref = simulate(_toml(**FIXED["limit"]), engine="compiled")
    cg = ref.summary["cgroups"]["/t"]
    assert cg["evictions"] > 1000 and cg["max_events"] > 0
    secs = simulate(_toml(**FIXED["secs"]), engine="compiled")
    assert secs.summary["encls"]["EREMOVE"] > 0  # the SECS was evicted (EWB + EREMOVE)
    lim = simulate(_toml(**FIXED["limit_time"]), engine="compiled")
    assert lim.summary["truncated"] is True


def test_eadd_build_then_batched_steady_state() -> None:
    """An EADD build that fits leaves ksgxd idle: the thread runs batched."""
    ref, bat = _both(_toml(build="eadd", size_pages=128, epc_pages=256))
    assert bat.engine == "compiled"
    _assert_same(ref, bat)


def test_busy_reclaimer_at_thread_start_is_taken_over() -> None:
    """An EADD build larger than the EPC leaves ksgxd running when the thread starts:
    the compiled engine takes the thread over at its first step all the same, with
    ksgxd mid-reclaim (its ReclaimerTrack packed into its R row; issue 15)."""
    ref, bat = _both(_toml(build="eadd", size_pages=1024, epc_pages=256))
    assert bat.engine == "compiled"
    assert bat.engine_note == ""
    assert bat.engine_events["compiled"] > 0
    assert ref.engine_events["compiled"] == 0
    _assert_same(ref, bat)


# --- random scenarios ------------------------------------------------------------------

PATTERNS = [
    'pattern = "uniform"',
    'pattern = "zipf", alpha = 0.7',
    'pattern = "zipf", alpha = 1.2',
    'pattern = "sequential"',
    'pattern = "loop", length = {loop}',
    'pattern = "hotcold", hot_fraction = 0.1, hot_probability = 0.9',
]
TREES = [
    ([("/t", "max")], "/t"),
    ([], "/"),
    ([("/a", "max"), ("/a/t", "max"), ("/b", "max")], "/a/t"),
    ([("/a", "max"), ("/b", "max"), ("/b/t", "max")], "/b/t"),
]


def _draw_limits(draw, cgroups, epc_pages: int) -> list[tuple[str, str]]:
    """Each cgroup's misc.max: max, or a size around the EPC (below it, its own limit
    binds)."""
    limited = []
    for path, _ in cgroups:
        mx = draw(st.sampled_from(["max", "max", None]))
        if mx is None:
            mx = f"{draw(st.integers(40, epc_pages + 64)) * 4}KiB"
        limited.append((path, mx))
    return limited


def _draw_common(draw, *, ewb: int = 9000, kernel_step: int = 300) -> dict:
    """Costs (half the time), sampling, the experiment, misc, seed."""
    costs = None
    if draw(st.booleans()):
        costs = {
            "access": draw(st.integers(1, 400)),
            "fault": draw(st.integers(100, 6000)),
            "ewb": draw(st.integers(10, ewb)),
            "eldu": draw(st.integers(10, 9000)),
            "reclaim_batch": draw(st.integers(0, 5000)),
            "kernel_step": draw(st.integers(0, kernel_step)),
        }
    return {
        "sample": draw(st.sampled_from(["10us", "100us", "1ms"])),
        "unref": draw(st.booleans()),
        "misc": draw(st.integers(0, 7)) != 0,
        "costs": costs,
        "seed": draw(st.integers(0, 2**16)),
    }


@st.composite
def scenarios(draw, thrash: bool = False) -> str:
    """A random eligible scenario; *thrash*: the footprint is 2-4x the EPC and the
    workload long enough to cycle through it several times."""
    epc_pages = draw(st.integers(64, 700))
    sections = None
    if draw(st.booleans()) and epc_pages >= 128:
        k = draw(st.integers(32, epc_pages - 32))
        sections = [k, epc_pages - k]
    cgroups, cgroup = draw(st.sampled_from(TREES))
    limited = _draw_limits(draw, cgroups, epc_pages)
    # mostly larger than the EPC: the interesting part is reclaim
    size_pages = draw(st.integers(16, 4 * epc_pages) | st.integers(epc_pages, 4 * epc_pages))
    if thrash:
        size_pages = draw(st.integers(2 * epc_pages, 4 * epc_pages))
    use_duration = draw(st.integers(0, 5)) == 0 and not thrash
    n = draw(st.integers(5 * epc_pages, 20 * epc_pages) if thrash else st.integers(1, 20000))
    return _toml(
        epc_pages=epc_pages if sections is None else 0,
        sections=sections,
        cgroups=limited,
        cgroup=cgroup,
        build=draw(st.sampled_from(["eaug", "eaug", "eadd"])),
        size_pages=size_pages,
        workload=draw(st.sampled_from(PATTERNS)).format(loop=max(1, size_pages * 3 // 4)),
        accesses=None if use_duration else n,
        run_for=f"{draw(st.integers(1, 3000))}us" if use_duration else None,
        # short limits: a livelocked configuration (a binding ancestor limit) retries its
        # fault every few microseconds until the limit, slowly in the reference engine
        duration="300ms" if thrash else draw(st.sampled_from(["300ms", "300ms", "1ms", "5ms"])),
        **_draw_common(draw),
    )


def _engines_agree(name: str, strategy, examples: int, *, slow: bool = False, thrash=False):
    """A hypothesis test *name*: both engines give the same results on *examples* draws
    of *strategy* (behind the ``slow`` marker if *slow*); *thrash*: the batched engine
    must run unless a reclaimer was busy at the threads' start."""

    def test(toml: str) -> None:
        ref, bat = _both(toml)
        if thrash:
            assert bat.engine == "compiled" or "busy" in bat.engine_note
        _assert_same(ref, bat)

    test.__name__ = test.__qualname__ = name
    # EPCSIM_EXAMPLES_CAP: fewer draws (the plain-Python run, tests/compiled/)
    examples = min(examples, int(os.environ.get("EPCSIM_EXAMPLES_CAP", examples)))
    health = list(HealthCheck) if slow else [HealthCheck.too_slow, HealthCheck.data_too_large]
    test = settings(max_examples=examples, deadline=None, suppress_health_check=health)(
        given(strategy)(test)
    )
    return pytest.mark.slow(test) if slow else test


test_random_scenarios_match = _engines_agree("test_random_scenarios_match", scenarios(), 60)
test_random_thrashing_scenarios_match = _engines_agree(
    "test_random_thrashing_scenarios_match", scenarios(thrash=True), 30, thrash=True
)
test_random_thrashing_scenarios_match_long = _engines_agree(
    "test_random_thrashing_scenarios_match_long", scenarios(thrash=True), 400, slow=True
)
test_random_scenarios_match_long = _engines_agree(
    "test_random_scenarios_match_long", scenarios(), 600, slow=True
)


# --- several enclaves and threads ---------------------------------------------------------


def _toml_multi(
    enclaves: list[dict],
    *,
    epc_pages: int = 256,
    cgroups: list[tuple[str, str]] = (("/a", "max"), ("/a/x", "max"), ("/a/y", "max")),
    cpus: int = 8,
    duration: str = "30ms",
    sample: str = "1ms",
    unref: bool = False,
    misc: bool = True,
    costs: dict[str, int] | None = None,
    seed: int = 1,
    ops: list[tuple[str, str, str]] = (),
    vepcs: list[tuple[str, int, str | None]] = (),
    watches: list[tuple[str, str, int, str, str]] = (),
) -> str:
    """A scenario with several enclave groups (each: name, cgroup, size_pages, workload,
    accesses or run_for, threads, count, build, start) and timed operations *ops*
    ``(time, "write" | "kill" | "mkdir" | "migrate", argument)`` and vEPC owners *vepcs*
    ``(cgroup, pages, start)`` and watched writes *watches* ``(delay, enclave, pages,
    path, value)`` (``[[at]] when``: *delay* after the enclave added *pages*)."""
    host = [
        f'duration = "{duration}"',
        f'sample_interval = "{sample}"',
        f"seed = {seed}",
        f"cpus = {cpus}",
        f'epc = "{epc_pages * 4}KiB"',
    ]
    if not misc:
        host.append("misc = false")
    if unref:
        host.append("experiments = { fault_unreferenced = true }")
    out = ['name = "exact-multi"', "[host]", *host]
    if costs:
        out.append("[host.costs]")
        out += [f'{k} = "{v}ns"' for k, v in costs.items()]
    for path, mx in cgroups:
        out += ["[[cgroup]]", f'path = "{path}"', f'max = "{mx}"']
    for k, e in enumerate(enclaves):
        wl = e.get("workload", 'pattern = "zipf", alpha = 0.9')
        amount = (
            f"accesses = {e.get('accesses', 3000)}"
            if e.get("run_for") is None
            else f'duration = "{e["run_for"]}"'
        )
        out += [
            "[[enclave]]",
            f'name = "{e.get("name", f"e{k}")}"',
            f'cgroup = "{e.get("cgroup", "/a/x") if misc else "/"}"',
            f'build = "{e.get("build", "eaug")}"',
            f'size = "{e.get("size_pages", 256) * 4}KiB"',
            f"threads = {e.get('threads', 1)}",
            f"count = {e.get('count', 1)}",
            f"workload = {{ {wl}, {amount} }}",
        ]
        if e.get("start"):
            out.append(f'start = "{e["start"]}"')
        if e.get("edmm"):
            out.append(f"edmm = {{ {e['edmm']} }}")
    for k, (cgroup, pages, start) in enumerate(vepcs):
        out += ["[[vepc]]", f'name = "v{k}"', f'cgroup = "{cgroup if misc else "/"}"']
        out.append(f"pages = {pages}")
        if start:
            out.append(f'start = "{start}"')
    for time, op, arg in ops:
        out += ["[[at]]", f'time = "{time}"']
        if op == "write":
            path, value = arg.split(" ", 1)
            out.append(f'write = {{ path = "{path}", value = "{value}" }}')
        elif op == "migrate":
            enclave, cgroup = arg.split(" ", 1)
            out.append(f'migrate = {{ enclave = "{enclave}", cgroup = "{cgroup}" }}')
        else:
            out.append(f'{op} = "{arg}"')
    for delay, enclave, pages, path, value in watches:
        out += ["[[at]]", f'time = "{delay}"']
        out.append(f'when = {{ enclave = "{enclave}", added = "{pages * 4}KiB" }}')
        out.append(f'write = {{ path = "{path}", value = "{value}" }}')
    return "\n".join(out) + "\n"


def test_staggered_start_is_taken_over_when_the_late_enclave_has_built() -> None:
    """The second enclave starts 200 us later and builds with EADD: the reference runs
    the first enclave's thread alone, the compiled engine takes both threads over at
    the first step after the build (a running thread adopted mid-stream): "mixed", the
    same outputs."""
    toml = _toml_multi(
        [
            {"name": "early", "accesses": 30000, "size_pages": 200, "cgroup": "/a/x"},
            {
                "name": "late",
                "accesses": 8000,
                "size_pages": 120,
                "build": "eadd",
                "start": "200us",
                "cgroup": "/a/y",
            },
        ],
        epc_pages=256,
        cpus=2,
        duration="300ms",
    )
    ref, bat = _both(toml)
    assert bat.engine == "mixed"
    assert bat.engine_note == "other actors were running when the enclave threads were offered"
    ev = bat.engine_events
    assert ev["compiled"] > ev["reference"] > 0
    assert ref.engine_events["compiled"] == 0
    _assert_same(ref, bat)


#: EADD builds the compiled engine runs (compiled/ioctl.py, issue 15 session 12): each
#: (scenario, what the build must have done) -- its synchronous reclaim, beside a
#: running tenant, killed, across VA page boundaries
EADD_BUILDS = {
    # a build against its cgroup's limit: the charge loop reclaims from /a/x itself
    "sync_reclaim": (
        [{"name": "b", "size_pages": 400, "build": "eadd", "accesses": 2000, "cgroup": "/a/x"}],
        {"cgroups": (("/a", "max"), ("/a/x", "600KiB")), "epc_pages": 1024},
    ),
    # a build beside a running tenant (its thread and the build in the core together),
    # a third enclave starting mid-build (a foreign event: handed back mid-reclaim)
    "beside_tenant": (
        [
            {"name": "t", "size_pages": 200, "accesses": 40000, "cgroup": "/a/y"},
            {
                "name": "b",
                "size_pages": 300,
                "build": "eadd",
                "accesses": 3000,
                "start": "1ms",
                "cgroup": "/a/x",
            },
            {"name": "c", "size_pages": 40, "accesses": 500, "start": "3ms", "cgroup": "/a/y"},
        ],
        {
            "cgroups": (("/a", "max"), ("/a/x", "800KiB"), ("/a/y", "max")),
            "epc_pages": 1024,
            "cpus": 2,
        },
    ),
    # a build killed mid-way (SIGTERM: the ioctl stops at its next page, EINTR-free)
    "killed": (
        [{"name": "b", "size_pages": 600, "build": "eadd", "accesses": 2000, "cgroup": "/a/x"}],
        {
            "cgroups": (("/a", "max"), ("/a/x", "1MiB")),
            "epc_pages": 2048,
            "ops": [("2ms", "kill", "b")],
        },
    ),
    # VA pages at 512 and 1024 pages added, the VA page's own allocation reclaiming
    "va_boundary": (
        [{"name": "b", "size_pages": 1100, "build": "eadd", "accesses": 3000, "cgroup": "/a/x"}],
        {"cgroups": (("/a", "max"), ("/a/x", "2MiB")), "epc_pages": 4096, "duration": "80ms"},
    ),
    # foreign events every 61-173 us through a reclaiming build (writes that change
    # nothing): the build is handed back wherever it is (a page's end, its charge or
    # allocation loop, each phase of a batch, a VA page's allocation) and taken again
    "handbacks": (
        [{"name": "b", "size_pages": 1100, "build": "eadd", "accesses": 1000, "cgroup": "/a/x"}],
        {
            "cgroups": (("/a", "max"), ("/a/x", "1MiB"), ("/a/y", "max")),
            "epc_pages": 4096,
            "duration": "60ms",
            "ops": [
                (f"{200 + 61 * k + (k * k * 37) % 113}us", "write", "/a/y/misc.max sgx_epc max")
                for k in range(120)
            ],
        },
    ),
    # several builds at once, a global (allocator) reclaim: the EPC smaller than the builds
    "global": (
        [
            {"name": "b", "size_pages": 300, "build": "eadd", "accesses": 2000, "cgroup": "/a/x"},
            {"name": "d", "size_pages": 300, "build": "eadd", "accesses": 2000, "cgroup": "/a/y"},
        ],
        {"epc_pages": 400, "cpus": 2},
    ),
}


@pytest.mark.parametrize("name", sorted(EADD_BUILDS))
def test_eadd_builds_run_compiled_and_match(name: str) -> None:
    """EADD builds taken over by the compiled engine at a page's end give the
    reference's outputs; the compiled engine ran most of the run's events."""
    ref, bat = _both(_eadd_toml(name))
    _assert_same(ref, bat)
    ev = bat.engine_events
    if name != "global":  # (there ksgxd is busy through much of the builds)
        assert ev["compiled"] > 2 * ev["reference"], ev


def test_eadd_builds_exercise_their_paths() -> None:
    """The fixed builds are not vacuous: synchronous reclaim, a kill, VA pages."""
    sync = simulate(_eadd_toml("sync_reclaim"), engine="auto")
    assert sync.summary["cgroups"]["/a/x"]["pages_reclaimed"]["sync"] > 100
    killed = simulate(_eadd_toml("killed"), engine="auto")
    assert killed.summary["enclaves"]["b"]["outcome"] == "killed"
    va = simulate(_eadd_toml("va_boundary"), engine="auto")
    assert va.summary["encls"]["EADD"] == 1100


def test_eadd_builds_handed_back_anywhere(monkeypatch) -> None:
    """The core hands the run back after 1 to 60 us of virtual time, varied (a foreign
    event that is not there: the reference runs on and offers the build again at a
    page's end), so each build is handed back in every place it can stop -- a page's end, its
    charge loop, its allocation loop, each phase of a synchronous or global reclaim
    batch, its VA page's allocation -- and resumed by the reference
    (``ioc_enclave_add_pages(run=)``); the outputs stay the reference's."""
    from epcsim.compiled import engine as ce
    from epcsim.compiled import layout as C

    seen: set[tuple[int, int, int]] = set()
    run = ce._Packed.run

    calls = [0]

    def run_cut(p) -> int:
        S = p.S
        calls[0] += 1
        every = 1_000 + (calls[0] * 7_919) % 59_000
        _foreign_after(S, every)
        return run(p)

    monkeypatch.setattr(ce._Packed, "run", run_cut)
    _record_build_backs(monkeypatch, seen)
    for name in ("va_boundary", "global", "handbacks"):
        ref, bat = _both(_eadd_toml(name))
        _assert_same(ref, bat)
    stages = {s for s, _, _ in seen}
    assert {C.ST_B_TOP, C.ST_B_CHARGE, C.ST_PH2, C.ST_PH4} <= stages, seen


def test_eadd_build_handed_back_in_its_va_page_allocation(monkeypatch) -> None:
    """A build handed back inside its VA page's allocation (page 511: sgx_encl_grow()'s
    charge loop and its reclaim batch, the enclave page allocated meanwhile) resumes on
    the reference (``SgxEnclAddPageState.page``) as if never stopped.  The core returns
    after one step at every take-over but page 511's, there after 0.3 to 25 us; a
    limit of 306 pages makes the VA page's charge reclaim."""
    from epcsim.compiled import engine as ce
    from epcsim.compiled import layout as C

    seen: set[tuple[int, int, int]] = set()
    run = ce._Packed.run
    cut = [0]

    def run_cut(p) -> int:
        S = p.S
        every = 1
        if p.builds and int(p.R[C.R_B_C, p.brow0]) == 511:
            every = cut[0]
        _foreign_after(S, every)
        return run(p)

    monkeypatch.setattr(ce._Packed, "run", run_cut)
    _record_build_backs(monkeypatch, seen)
    toml = _toml_multi(
        [{"name": "b", "size_pages": 520, "build": "eadd", "accesses": 500, "cgroup": "/a/x"}],
        cgroups=(("/a", "max"), ("/a/x", f"{306 * 4}KiB")),
        epc_pages=2048,
        duration="40ms",
    )
    ref = simulate(toml, engine="reference")
    for cut[0] in (300, 1500, 4000, 9000, 15000, 25000):
        _assert_same(ref, simulate(toml, engine="auto"))
    assert {(C.ST_PH2, 1), (C.ST_PH4, 1), (C.ST_B_CHARGE, 1)} <= {(st, va) for st, va, _ in seen}, (
        seen
    )


def test_eadd_builds_handed_back_in_the_allocators_global_reclaim(monkeypatch) -> None:
    """Builds handed back inside sgx_alloc_epc_page()'s global reclaim (``R_B_GLOBAL``:
    a batch's phases, the loop's ``cond_resched()``; for an enclave page and for a VA
    page) resume on the reference (``SgxAllocEpcPageState.charged``) as if never stopped.

    The model reaches that loop only with a misc capacity above the EPC: every used page
    is charged and ``sgx_free_epc_page()`` uncharges and frees in one go, so after a
    charge that fits the root's capacity (the EPC's size) a free page is left (the
    kernel's window between the uncharge and the free list, on another CPU, is not
    modelled).  Here the capacity is twice the EPC: a full EPC leaves the charge alone
    and the allocator reclaims from the root.  Two builds beside each other with the
    core returning after 0.3 to 60 us, varied; then a build's page 511 (its VA page's
    allocation) with the core returning after 0.1 to 15 us there."""
    from epcsim.compiled import engine as ce
    from epcsim.compiled import layout as C
    from epcsim.kernel.misc import MiscController

    set_capacity = MiscController.misc_cg_set_capacity
    monkeypatch.setattr(
        MiscController, "misc_cg_set_capacity", lambda self, c: set_capacity(self, 2 * c)
    )
    seen: set[tuple[int, int, int]] = set()
    run = ce._Packed.run
    calls = [0]
    cut: list = [None]  # (a, b, c): every c + (calls * a) % b ns; an int: at page 511

    def run_cut(p) -> int:
        S = p.S
        calls[0] += 1
        if isinstance(cut[0], int):
            every = 1
            if any(int(p.R[C.R_B_C, p.brow0 + k]) == 511 for k in range(len(p.builds))):
                every = cut[0]
        else:
            a, b, c = cut[0]
            every = c + (calls[0] * a) % b
        _foreign_after(S, every)
        return run(p)

    monkeypatch.setattr(ce._Packed, "run", run_cut)
    _record_build_backs(monkeypatch, seen)
    beside = _toml_multi(
        [
            {"name": "b", "size_pages": 600, "build": "eadd", "accesses": 1000, "cgroup": "/a/x"},
            {"name": "d", "size_pages": 300, "build": "eadd", "accesses": 1000, "cgroup": "/a/y"},
        ],
        epc_pages=512,
        cpus=2,
        duration="100ms",
        costs={"ewb": 20_000},
    )
    va_page = _toml_multi(
        [{"name": "b", "size_pages": 520, "build": "eadd", "accesses": 300, "cgroup": "/a/x"}],
        epc_pages=290,
        cpus=2,
        duration="100ms",
        costs={"ewb": 20_000},
    )
    for toml, cuts in (
        (beside, [(7_919, 59_000, 1_000), (104_729, 30_011, 300)]),
        (va_page, [100, 4_000, 15_000]),
    ):
        ref = simulate(toml, engine="reference")
        assert ref.summary["cgroups"]["/a/x"]["pages_reclaimed"]["sync"] > 0
        for cut[0] in cuts:
            _assert_same(ref, simulate(toml, engine="auto"))
    # every hand-back inside the global reclaim: after isolation (ST_PH2), after the
    # block (ST_PH4), at the loop's cond_resched() (ST_B_ALLOC); an enclave or VA page
    in_global = {(s, va) for s, va, g in seen if g}
    assert in_global == {(s, va) for s in (C.ST_PH2, C.ST_PH4, C.ST_B_ALLOC) for va in (0, 1)}
    # no charge loop (no limits; the charge always fits the doubled capacity)
    assert {s for s, _, g in seen if not g} == {C.ST_B_TOP}, seen


def _foreign_after(S, every: int) -> None:
    """Make the core return after *every* ns of virtual time (a foreign event that is
    not there, unless a real one comes first): the reference runs on from there."""
    from epcsim.compiled import layout as C

    S[C.S_FOR_T], S[C.S_FOR_P], S[C.S_FOR_S] = min(
        (int(S[C.S_FOR_T]), int(S[C.S_FOR_P]), int(S[C.S_FOR_S])),
        (int(S[C.S_NOW]) + every, 1, 1 << 62),
    )


def _record_build_backs(monkeypatch, seen: set) -> None:
    """Add (R_STAGE, R_B_VA, R_B_GLOBAL) of each build the core hands back to *seen*."""
    from epcsim.compiled import engine as ce
    from epcsim.compiled import layout as C

    back = ce._build_back

    def back_seen(p, b, r):
        R = p.R
        seen.add((int(R[C.R_STAGE, r]), int(R[C.R_B_VA, r]), int(R[C.R_B_GLOBAL, r])))
        return back(p, b, r)

    monkeypatch.setattr(ce, "_build_back", back_seen)


def _eadd_toml(name: str) -> str:
    enclaves, kw = EADD_BUILDS[name]
    return _toml_multi(enclaves, **kw)


def test_vepc_owner_beside_enclaves_is_taken_over_after_its_allocation() -> None:
    """A vEPC owner starting at 100 us takes 64 pages (charged to /a/y, never
    reclaimed) while an enclave runs: the core returns before its start (a foreign
    event), the reference runs its allocation, and the compiled engine takes the thread
    back at its next step and runs it beside the held pages; the same outputs."""
    toml = _toml_multi(
        [{"name": "e", "accesses": 30000, "size_pages": 200, "cgroup": "/a/x"}],
        epc_pages=256,
        cpus=2,
        duration="300ms",
        vepcs=[("/a/y", 64, "100us")],
    )
    ref, bat = _both(toml)
    assert bat.engine == "compiled"  # no thread step ran on the reference
    assert bat.engine_events["compiled"] > bat.engine_events["reference"] > 0
    assert bat.summary["enclaves"]["v0"]["faults"] == 64
    _assert_same(ref, bat)


def test_edmm_operations_run_on_the_reference_between_core_runs() -> None:
    """The thread reaches its EDMM access count inside a core run: the core hands the
    threads back (RC_EDMM), the reference runs EMODPR, EMODT and EREMOVE on the first 8
    pages (sgx_reclaim_direct() before each), the compiled engine takes the threads over
    again; the same outputs as the reference alone."""
    toml = _toml_multi(
        [
            {
                "name": "e",
                "accesses": 30000,
                "size_pages": 200,
                "cgroup": "/a/x",
                "edmm": "restrict_pages = 8, remove_pages = 8, at_access = 10000",
            },
            {"name": "f", "accesses": 30000, "size_pages": 100, "cgroup": "/a/y"},
        ],
        epc_pages=256,
        cpus=2,
        duration="300ms",
    )
    ref, bat = _both(toml)
    assert bat.engine == "mixed"
    assert bat.engine_note == "a thread's EDMM operations were due or running"
    ev = bat.engine_events
    assert ev["compiled"] > ev["reference"] > 0
    assert [o["op"] for o in bat.summary["ops"]] == ["edmm restrict e", "edmm remove e"]
    assert [o["result"] for o in bat.summary["ops"]] == ["ok", "ok"]
    _assert_same(ref, bat)


FIXED_MULTI = {
    # one enclave, two threads on two CPUs
    "threads": {"enclaves": [{"threads": 2, "accesses": 8000}]},
    # three threads on two CPUs: a thread waits for its CPU
    "cpu_wait": {"enclaves": [{"threads": 3, "accesses": 6000}], "cpus": 2},
    # four tenants in two limited cgroups; they end at different times (their tasks
    # exit while the others run, and reclaimers may hold their pages then)
    "tenants": {
        "enclaves": [
            {"cgroup": "/a/x", "accesses": 2000, "count": 2},
            {"cgroup": "/a/y", "accesses": 9000, "size_pages": 300},
            {"cgroup": "/a/y", "accesses": 5000, "workload": 'pattern = "uniform"'},
        ],
        "cgroups": [("/a", "max"), ("/a/x", "700KiB"), ("/a/y", "1200KiB")],
        "epc_pages": 400,
        "duration": "200ms",
    },
    # a parent limit over two children (the children's workers do not reclaim below
    # their share of it: the threads retry until the time limit, a known livelock)
    "parent_limit": {
        "enclaves": [
            {"cgroup": "/a/x", "accesses": 6000, "count": 2},
            {"cgroup": "/a/y", "accesses": 6000, "workload": 'pattern = "loop", length = 200'},
        ],
        "cgroups": [("/a", "1600KiB"), ("/a/x", "max"), ("/a/y", "max")],
        "epc_pages": 600,
        "duration": "20ms",
    },
    # durations, the experiment switch, misc disabled
    "duration": {
        "enclaves": [{"run_for": "2ms", "count": 2}, {"run_for": "3ms", "threads": 2}],
        "unref": True,
    },
    "nomisc": {"enclaves": [{"count": 3, "accesses": 4000}], "misc": False},
    # small enclaves evicted whole while another runs: SECS out and back
    "secs": {
        "enclaves": [
            {"size_pages": 40, "workload": 'pattern = "sequential"', "count": 2},
            {"size_pages": 400, "accesses": 20000, "cgroup": "/a/y"},
        ],
        "epc_pages": 120,
        "duration": "300ms",
    },
}


@pytest.mark.parametrize("name", sorted(FIXED_MULTI))
def test_fixed_multi_scenarios_match(name: str) -> None:
    ref, bat = _both(_toml_multi(**FIXED_MULTI[name]))
    assert bat.engine == "compiled", bat.engine_note
    _assert_same(ref, bat)


@pytest.mark.parametrize(("pages", "oom"), [(40, True), (120, True), (400, False)])
def test_fixed_multi_memcg_limit_runs_its_oom_path_on_the_reference(
    monkeypatch, pages: int, oom: bool
) -> None:
    """/a's memory.max (written at 0 us) holds the backing of *pages* evicted pages.  The
    core checks each reclaim phase's charges (mem_cgroup_batch_fits) and returns before
    one that may not fit (RC_MEMCG); the reference runs it and OOM-kills y (exit status
    137); with room for every charge the core runs throughout.  The same outputs."""
    import epcsim.compiled.engine as E
    from epcsim.compiled import layout as C

    rcs: list[int] = []
    run = E._Packed.run
    monkeypatch.setattr(E._Packed, "run", lambda self: rcs.append(run(self)) or rcs[-1])
    toml = _toml_multi(
        [
            {"name": "x", "cgroup": "/a/x", "accesses": 12000, "size_pages": 200},
            {
                "name": "y",
                "cgroup": "/a/y",
                "accesses": 12000,
                "size_pages": 200,
                "workload": 'pattern = "uniform"',
            },
        ],
        cgroups=[("/a", "max"), ("/a/x", "400KiB"), ("/a/y", "400KiB")],
        epc_pages=300,
        duration="100ms",
        ops=[("0us", "write", f"/a/memory.max {pages * 4096}")],
    )
    ref, bat = _both(toml)
    y = ref.summary["enclaves"]["y"]
    assert (y["exit_status"] == 137) is oom
    assert (C.RC_MEMCG in rcs) is oom
    assert bat.engine == ("mixed" if oom else "compiled")
    _assert_same(ref, bat)


MEMCG_NEAR = """
[host]
epc = "16MiB"
duration = "5s"
[[cgroup]]
path = "/m"
max = "1024pages"
memory_max = "{memory_max}"
[[enclave]]
name = "e"
cgroup = "/m"
size = "2048pages"
build = "eaug"
workload = {{ pattern = "uniform", accesses = 60000 }}
"""


@pytest.mark.parametrize(("headroom", "oom"), [(20, False), (10, True)])
def test_memcg_near_its_limit_runs_compiled(monkeypatch, headroom: int, oom: bool) -> None:
    """memory.max a few pages' backing above what the run needs (the evicted pages'
    backing, ~1,064 pages): most reclaim batches would not fit if each of their 16 pages
    charged backing, but only the pages found old do (phase 2) and a SECS only after its
    last child (phase 4): the core checks exactly those charges and runs every batch
    (it handed most of them back before, ~9 % of the events).  With less room the OOM
    kill's batch is the one step the reference runs.  The same outputs."""
    import epcsim.compiled.engine as E
    from epcsim.compiled import layout as C

    rcs: list[int] = []
    run = E._Packed.run
    monkeypatch.setattr(E._Packed, "run", lambda self: rcs.append(run(self)) or rcs[-1])
    ref, bat = _both(MEMCG_NEAR.format(memory_max=(1064 + headroom) * 4224))
    e = ref.summary["enclaves"]["e"]
    assert (e["outcome"], e["exit_status"]) == (("failure", 137) if oom else ("success", 0))
    assert rcs.count(C.RC_MEMCG) == (1 if oom else 0)
    assert bat.engine == ("mixed" if oom else "compiled")
    _assert_same(ref, bat)


def test_multi_scenarios_release_enclaves_in_the_core(monkeypatch) -> None:
    """A task exits while a reclaimer holds pages of its enclave: the reclaimer's last
    kref_put() releases it inside the core (sgx_encl_release(), compiled); the result is
    still exactly the reference's.  The release hook tells where each release ran."""
    import inspect

    from epcsim.kernel.host import Host

    where: list[str] = []

    def hook(self, encl) -> None:
        where.append(inspect.stack()[1].function)

    monkeypatch.setattr(Host, "encl_released", hook)
    kw = dict(FIXED_MULTI["tenants"])
    found = False
    for seed in range(1, 40):
        where.clear()
        toml = _toml_multi(**kw, seed=seed, costs={"ewb": 20000, "kernel_step": 5000})
        bat = simulate(toml, engine="compiled")
        if "write_back" in where:
            found = True
            ref = simulate(toml, engine="reference")
            _assert_same(ref, bat)
            break
    assert found, where


def test_backing_memcg_of_each_page_read_where_the_enclave_memcg_changed(monkeypatch) -> None:
    """ELDU uncharges the backing from the memcg each page was charged to.  The core
    keeps each page's memcg (EMEM) only for an enclave some page of which went out to
    another memcg than its own (EN_EMIX); forcing that path everywhere gives the same
    results, and an exited task's enclave (its backing now goes to the root memcg) is
    flagged."""
    from epcsim.compiled import engine as batched
    from epcsim.compiled.layout import EN_EMIX

    flags: list[int] = []
    load = batched._Packed.load

    def forced(self) -> None:
        load(self)
        for encl in self.encls:
            flags.append(int(self.EN[EN_EMIX, encl.id]))
            self.EN[EN_EMIX, encl.id] = 1

    monkeypatch.setattr(batched._Packed, "load", forced)
    for toml in (_toml(**FIXED["limit"]), _toml_multi(**FIXED_MULTI["tenants"])):
        ref, bat = _both(toml)
        assert bat.engine == "compiled", bat.engine_note
        _assert_same(ref, bat)
    assert 1 in flags and 0 in flags


@pytest.mark.parametrize(("cap", "top"), [(2, 8), (3, 1 << 24)])
def test_fault_latencies_across_full_buffers(monkeypatch, cap: int, top: int) -> None:
    """The core's latency buffer is copied, when full and at every hand-over, to the end
    of an array the simulation keeps views of (one view per run of hand-overs, a new
    array when full): with a 2-entry buffer and an 8-entry array (both replaced every
    few faults) and with the array sized to the accesses, every latency arrives, in
    order, as the reference records them."""
    from epcsim.compiled import engine as batched

    monkeypatch.setattr(batched, "LAT_CAP", cap)
    monkeypatch.setattr(batched, "LAT_MAX", top)
    for toml in (_toml(**FIXED["ksgxd"]), _toml_multi(**FIXED_MULTI["tenants"])):
        ref, bat = _both(toml)
        assert bat.engine == "compiled", bat.engine_note
        assert len(bat.fault_latency_ns) > 4 * top or top > 8
        _assert_same(ref, bat)


def test_latency_array_is_plain_int64_memory(tmp_path) -> None:
    """written_once(): the latency array off huge pages is a writable, zeroed int64
    array that outlives its mapping's name, pickles and saves as any other; populate()
    faults its pages in without changing a value."""
    import pickle

    from epcsim.compiled.engine import populate, written_once

    a = written_once(3 * 4096 // 8 + 5)
    assert a.dtype == np.int64 and len(a) == 3 * 4096 // 8 + 5 and a.flags.writeable
    assert not a.any()
    populate(a, 100, 600)  # (faulted in ahead of the copy: the values stay)
    populate(a, len(a) - 3, 3)
    assert not a.any()
    a[:] = np.arange(len(a))
    populate(a, 0, len(a))
    assert a.tolist() == list(range(len(a)))
    view = a[7:20]
    del a
    assert view.tolist() == list(range(7, 20))
    assert pickle.loads(pickle.dumps(view)).tolist() == view.tolist()
    np.save(tmp_path / "v.npy", view)
    assert np.load(tmp_path / "v.npy").tolist() == view.tolist()


@st.composite
def multi_scenarios(draw) -> str:
    """Random scenarios with several enclave groups and threads, some starting later."""
    epc_pages = draw(st.integers(64, 500))
    cgroups = [("/a", "max"), ("/a/x", "max"), ("/a/y", "max"), ("/b", "max")]
    limited = _draw_limits(draw, cgroups, epc_pages)
    enclaves = []
    for k in range(draw(st.integers(1, 4))):
        size = draw(st.integers(16, 2 * epc_pages))
        use_duration = draw(st.integers(0, 5)) == 0
        enclaves.append(
            {
                "cgroup": draw(st.sampled_from(["/a/x", "/a/y", "/b"])),
                "size_pages": size,
                "threads": draw(st.integers(1, 3)),
                "count": draw(st.integers(1, 2)),
                "build": draw(st.sampled_from(["eaug"] * 5 + ["eadd"])),
                "workload": draw(st.sampled_from(PATTERNS)).format(loop=max(1, size * 3 // 4)),
                "accesses": draw(st.integers(1, 6000)),
                "run_for": f"{draw(st.integers(1, 3000))}us" if use_duration else None,
                # staggered starts: the reference runs the first threads, the compiled
                # engine takes them over at a later step ("mixed")
                "start": draw(
                    st.sampled_from(
                        [None] * 3
                        + ["50us", "300us", "2ms"]
                        # when the first group ends (a thread's end step starts it)
                        + (["after:e0"] if k else [])
                    )
                ),
            }
        )
    if draw(st.integers(0, 3)) == 0:  # EDMM on the first enclave's first pages
        e0 = enclaves[0]
        n = min(e0["size_pages"], 8)
        e0["edmm"] = (
            f"restrict_pages = {draw(st.integers(1, n))}, "
            f"remove_pages = {draw(st.integers(1, n))}, "
            f"at_access = {draw(st.integers(0, max(0, e0['accesses'] - 1)))}"
        )
    # timed operations: each a foreign event (the core returns before it, the reference
    # runs it, the threads are offered again): a limit lowered or raised, a kill, a
    # migration, a new cgroup
    ops = []
    for _ in range(draw(st.integers(0, 3))):
        time = f"{draw(st.integers(0, 3000))}us"
        op = draw(st.sampled_from(["write", "write", "memory", "kill", "migrate", "mkdir"]))
        if op == "memory":  # a memcg limit: reclaim phases that may OOM are the reference's
            path = draw(st.sampled_from(["/a", "/a/x", "/b"]))
            pages = draw(st.integers(1, 4 * epc_pages))
            ops.append((time, "write", f"{path}/memory.max {pages * 4096}"))
        elif op == "write":
            path = draw(st.sampled_from(["/a", "/a/x", "/a/y", "/b"]))
            pages = draw(st.integers(1, epc_pages))
            value = draw(st.sampled_from([f"sgx_epc {pages * 4096}", "sgx_epc max"]))
            ops.append((time, "write", f"{path}/misc.max {value}"))
        elif op == "kill":
            ops.append((time, "kill", f"e{draw(st.integers(0, len(enclaves) - 1))}"))
        elif op == "migrate":
            k = draw(st.integers(0, len(enclaves) - 1))
            if enclaves[k]["count"] == 1:  # one process: its name is the group's
                cg = draw(st.sampled_from(["/a/x", "/a/y", "/b"]))
                ops.append((time, "migrate", f"e{k} {cg}"))
        else:
            ops.append((time, "mkdir", f"/b/n{len(ops)}"))
    # [[at]] when: a limit written once an enclave has added some pages (inside a core
    # run: the fault that adds them ends it, RC_WATCH)
    watches = []
    for _ in range(draw(st.integers(0, 2))):
        k = draw(st.integers(0, len(enclaves) - 1))
        path = draw(st.sampled_from(["/a", "/a/x", "/a/y", "/b"]))
        pages = draw(st.integers(1, epc_pages))
        watches.append(
            (
                f"{draw(st.sampled_from([0, 0, 10, 500]))}us",
                f"e{k}" if enclaves[k]["count"] == 1 else f"e{k}#{draw(st.integers(0, 1))}",
                draw(st.integers(0, enclaves[k]["size_pages"])),
                f"{path}/misc.max",
                draw(st.sampled_from([f"sgx_epc {pages * 4096}", "sgx_epc max"])),
            )
        )
    # vEPC owners (a VMM's guest EPC): charged, held to the end, never reclaimed
    vepcs = [
        (
            draw(st.sampled_from(["/a/x", "/a/y", "/b"])),
            draw(st.integers(1, max(1, epc_pages // 4))),
            draw(st.sampled_from([None, None, "100us", "1ms"])),
        )
        for _ in range(draw(st.integers(0, 1) | st.just(0)))
    ]
    return _toml_multi(
        enclaves,
        epc_pages=epc_pages,
        cgroups=limited,
        ops=ops,
        vepcs=vepcs,
        watches=watches,
        # mostly a CPU per process: the enclaves build side by side and the threads
        # start together (eligible); sometimes fewer (the reference runs it)
        cpus=draw(st.sampled_from([1, 2, 16]) | st.just(sum(e["count"] for e in enclaves))),
        duration=draw(st.sampled_from(["20ms", "1ms", "5ms"])),
        **_draw_common(draw, ewb=20000, kernel_step=3000),
    )


test_random_multi_scenarios_match = _engines_agree(
    "test_random_multi_scenarios_match", multi_scenarios(), 40
)
test_random_multi_scenarios_match_long = _engines_agree(
    "test_random_multi_scenarios_match_long", multi_scenarios(), 400, slow=True
)


# --- engine selection -------------------------------------------------------------------


def test_batched_refuses_ineligible_scenario_with_reason() -> None:
    sc = _toml().replace('name = "e"', 'name = "e"\nthreads = 300')
    with pytest.raises(EpcsimError, match="at most 256 enclave threads"):
        simulate(sc, engine="compiled")
    res = simulate(sc.replace("accesses = 5000", "accesses = 600"), engine="auto")
    assert res.engine == "reference"
    assert res.engine_note == "the compiled engine runs at most 256 enclave threads"


def test_unknown_engine_is_an_error() -> None:
    with pytest.raises(EpcsimError, match="engine: expected one of auto, compiled, reference"):
        simulate(_toml(), engine="fast")


def test_builtins_eligibility() -> None:
    why = static_ineligibility(load_scenario("builtin:mixed-priority"))
    assert why == "the compiled engine runs no extension (host.extensions: epcsim.kernel.rfc_knobs)"
    for name in ("noisy-neighbour", "overcommit", "nested-fairness", "kselftest"):
        assert static_ineligibility(load_scenario(f"builtin:{name}")) is None


@pytest.mark.parametrize(
    "builtin, engine, note",
    [
        ("nested-fairness", "compiled", ""),
        # its enclaves start at different times: the first thread runs while the other
        # enclave builds; the compiled engine takes the threads over when it has built
        (
            "noisy-neighbour",
            "mixed",
            "other actors were running when the enclave threads were offered",
        ),
        # timed operations (misc.max lowered, a manual enclave started): foreign events
        (
            "lower-limit",
            "mixed",
            "other actors were running when the enclave threads were offered",
        ),
        # its EADD builds overcommit the EPC: ksgxd is busy when the threads start,
        # taken over mid-reclaim (issue 15)
        ("overcommit", "compiled", ""),
    ],
)
def test_builtins_match(builtin: str, engine: str, note: str) -> None:
    ref, bat = _both(f"builtin:{builtin}")
    assert bat.engine == engine
    assert bat.engine_note == note
    _assert_same(ref, bat)


# --- the whole kernel state, not only the outputs -------------------------------------------


def _kernel_state(sim) -> dict:
    """Every field the batched core writes, read from the kernel objects."""
    h = sim.host
    pool = h.epc
    out: dict = {
        "pool": (pool.i32.tobytes(), pool.u8.tobytes(), pool.cg.tobytes()),
        "free": [(f.head, f.tail, f.nr) for f in pool.free_lists],
        "scalars": (pool.nr_free_pages, h.nr_lru_pages, h.ksgxd_woken, list(h.encls_count)),
        "wq": [s.id for s in h.sgx_cg_wq],
        "cgroups": [
            (
                s.lru.head,
                s.lru.tail,
                s.lru.nr,
                s.nr_pages,
                s.nr_evicted,
                s.nr_reclaim_batches,
                s.nr_enomem,
                s.nr_faults,
                s.work_pending,
                s.work_running,
                s.next_cg.id,
                s.cg.usage,
                s.cg.peak,
                s.cg.events,
                s.cg.events_local,
                s.cg.refcnt,
            )  # fmt: skip
            for s in h.sgx_cgroups
            if s is not None
        ],
        "memcg": [m.usage for m in h.memcgs],
        "heap": sorted((t, p, s) for t, p, s, _, _ in sim.core.heap),
        "sim": (sim.core.now, sim.core.seq, sim.core.active, sim.actors.ksgxd_running),
    }
    for e in h.encls:
        if e is None:
            continue
        out[f"encl{e.id}"] = (
            e.i32.tobytes(), e.u8.tobytes(), e.memcg.tobytes(), e.secs_epc, e.secs_va,
            e.secs_memcg, e.secs_child_cnt, e.page_cnt, e.refcount, e.nr_eaug, e.nr_eldu,
            e.nr_evicted, e.nr_faults, e.backing_bytes,
            [(v.no, v.epc, v.bits, v.used) for v in e.va_all], list(e.va_pages),
        )  # fmt: skip
    return out


@pytest.mark.parametrize("name", ["ksgxd", "limit", "tree", "secs", "loop", "sections"])
@pytest.mark.parametrize("stop", ["2ms", "7ms"])
def test_truncated_runs_leave_identical_kernel_state(name: str, stop: str) -> None:
    """Stopped by the time limit mid-run (the core hands back with ksgxd or the worker
    anywhere in a batch), both engines leave the same kernel state, field by field:
    EPC and enclave arrays, VA pages and their slot maps, LRUs, cursors, counters,
    the event heap's (time, priority, seq) entries."""
    kw = dict(FIXED[name])
    kw.update(duration=stop, accesses=200000)
    assert_truncated_states_equal(_toml(**kw))


@pytest.mark.parametrize("size_pages", [400, 1024])
@pytest.mark.parametrize("stop", ["7ms", "12ms"])
def test_truncated_runs_taken_over_mid_reclaim_leave_identical_kernel_state(
    size_pages: int, stop: str
) -> None:
    """An EADD build larger than the EPC: ksgxd is mid-reclaim when the thread starts
    (400 pages: before phase 4 of a batch; 1024: at its cond_resched()) and the compiled
    engine takes it over there (issue 15); stopped by the time limit, both engines leave
    the same state."""
    toml = _toml(build="eadd", size_pages=size_pages, epc_pages=256, duration=stop, accesses=200000)
    assert_truncated_states_equal(toml)


def assert_truncated_states_equal(toml: str) -> None:
    """Run *toml* (stopped by its time limit) on both engines and compare their kernel
    state field by field (:func:`_kernel_state`)."""
    from epcsim.scenario.schema import load_scenario
    from epcsim.sim.engine import Simulation

    sc = load_scenario(toml)
    states = []
    for engine in ("reference", "compiled"):
        sim = Simulation(sc, engine=engine)
        res = sim.run()
        assert res.summary["truncated"]
        assert res.engine == engine
        states.append(_kernel_state(sim))
    ref, bat = states
    assert ref.keys() == bat.keys()
    for k in ref:
        assert ref[k] == bat[k], k


@pytest.mark.parametrize(
    "name, stop",
    [
        ("sync_reclaim", "333us"),
        ("sync_reclaim", "1001us"),
        ("va_boundary", "1234us"),
        ("va_boundary", "2501us"),
        ("global", "777us"),
        ("killed", "2100us"),
    ],
)
def test_truncated_eadd_builds_leave_identical_kernel_state(name: str, stop: str) -> None:
    """EADD builds stopped by the time limit inside the core (mid-page, mid-batch, a VA
    page's allocation): the kernel state written back is the reference's."""
    enclaves, kw = EADD_BUILDS[name]
    assert_truncated_states_equal(_toml_multi(enclaves, **{**kw, "duration": stop}))


@pytest.mark.parametrize(
    "stop, stage", [("907us", "ST_PH4"), ("1001us", "ST_B_ALLOC"), ("1407us", "ST_PH2")]
)
def test_truncated_eadd_builds_in_the_allocators_global_reclaim(
    monkeypatch, stop: str, stage: str
) -> None:
    """Two EADD builds stopped by the time limit inside sgx_alloc_epc_page()'s global
    reclaim (a misc capacity twice the EPC, as in
    ``test_eadd_builds_handed_back_in_the_allocators_global_reclaim``): the kernel state
    written back is the reference's, mid-batch or at the loop's cond_resched()."""
    from epcsim.compiled import layout as C
    from epcsim.kernel.misc import MiscController

    set_capacity = MiscController.misc_cg_set_capacity
    monkeypatch.setattr(
        MiscController, "misc_cg_set_capacity", lambda self, c: set_capacity(self, 2 * c)
    )
    seen: set[tuple[int, int, int]] = set()

    _record_build_backs(monkeypatch, seen)
    enclaves = [
        {"name": "b", "size_pages": 600, "build": "eadd", "accesses": 1000, "cgroup": "/a/x"},
        {"name": "d", "size_pages": 300, "build": "eadd", "accesses": 1000, "cgroup": "/a/y"},
    ]
    costs = {"ewb": 20_000, "eblock": 20_000, "reclaim_batch": 100_000}
    assert_truncated_states_equal(
        _toml_multi(enclaves, epc_pages=512, cpus=2, duration=stop, costs=costs)
    )
    assert {(st, g) for st, _, g in seen} == {(getattr(C, stage), 1)}


@pytest.mark.parametrize("name", ["tenants", "secs", "cpu_wait", "parent_limit"])
@pytest.mark.parametrize("stop", ["1ms", "4ms"])
def test_truncated_multi_runs_leave_identical_kernel_state(name: str, stop: str) -> None:
    """The same with several enclaves and threads: stopped mid-run (some tasks may
    have exited already, a reclaimer may hold pages of an exited enclave)."""
    from epcsim.sim.engine import Simulation

    kw = dict(FIXED_MULTI[name])
    kw.update(duration=stop)
    if name == "cpu_wait":
        kw["enclaves"] = [dict(kw["enclaves"][0], accesses=100000)]
    sc = load_scenario(_toml_multi(**kw))
    states = []
    for engine in ("reference", "compiled"):
        sim = Simulation(sc, engine=engine)
        res = sim.run()
        assert res.summary["truncated"]
        assert res.engine == engine
        st_ = _kernel_state(sim)
        st_["threads"] = [
            (t.accesses, t.faults, t.retries, t.streak, t.started_ns, t.ended_ns, t.stuck)
            for i in sim.instances.values()
            for t in i.threads
        ]
        states.append(st_)
    ref, bat = states
    assert ref.keys() == bat.keys()
    for k in ref:
        assert ref[k] == bat[k], k


def test_cli_engine_batched_on_ineligible_scenario_exits_2(tmp_path) -> None:
    from typer.testing import CliRunner

    from epcsim.cli import app

    r = CliRunner().invoke(
        app, ["run", "builtin:mixed-priority", "--engine", "compiled", "-q", "-o", str(tmp_path)]
    )
    assert r.exit_code == 2
    assert "engine compiled: the compiled engine runs no extension (host.extensions" in r.output
    assert not (tmp_path / "summary.json").exists()
    r = CliRunner().invoke(app, ["run", "builtin:overcommit", "--engine", "fast"])
    assert r.exit_code == 2


def test_cli_engines_write_identical_run_directories(tmp_path) -> None:
    from typer.testing import CliRunner

    from epcsim.cli import app

    sc = tmp_path / "sc.toml"
    sc.write_text(_toml(**FIXED["limit"]))
    for engine in ("reference", "compiled"):
        r = CliRunner().invoke(
            app, ["run", str(sc), "--engine", engine, "-q", "-o", str(tmp_path / engine)]
        )
        assert r.exit_code == 0, r.output
    for f in ("summary.json", "timeseries.parquet", "fault_latency.npy", "fault_latency.parquet"):
        a = (tmp_path / "reference" / f).read_bytes()
        b = (tmp_path / "compiled" / f).read_bytes()
        assert a == b, f


def _build_backs(monkeypatch) -> list[tuple[int, int]]:
    """(R_STAGE, R_B_VA) of the build at each RC_BUILD hand-back of the core."""
    from epcsim.compiled import engine as ce
    from epcsim.compiled import layout as C

    backs: list[tuple[int, int]] = []
    run = ce._Packed.run

    def run_counted(p) -> int:
        rc = run(p)
        if rc == C.RC_BUILD:
            w = int(p.S[C.S_WHO])
            backs.append((int(p.R[C.R_STAGE, w]), int(p.R[C.R_B_VA, w])))
        return rc

    monkeypatch.setattr(ce._Packed, "run", run_counted)
    return backs


def _build_under(limit: str) -> str:
    """A 1,500-page EADD build in /a/x/t, /a/x limited to *limit*."""
    return _toml_multi(
        [{"name": "b", "size_pages": 1500, "build": "eadd", "accesses": 500, "cgroup": "/a/x/t"}],
        cgroups=(("/a", "max"), ("/a/x", limit), ("/a/x/t", "max")),
        epc_pages=2048,
        duration="400ms",
    )


def test_eadd_build_under_a_full_ancestor_stays_compiled(monkeypatch) -> None:
    """A build in /a/x/t under /a/x's limit of 5 pages (the kselftest's small cgroup,
    scaled: the SECS and the VA pages fill the limit but one page): the charge loop's
    reclaim isolates the subtree's only LRU page, so each retry finds one page of room
    under /a/x and nothing on the LRU.  The step charges that one page (a VA page is due
    only every 512), so it cannot fail and the core runs it
    (sgx_ioc_enclave_add_pages_ends() counts the pages the step charges and allocates;
    counting two every time, it handed 478 retries of this build to the reference).
    The outputs are the reference's."""
    from epcsim.compiled import layout as C

    backs = _build_backs(monkeypatch)
    ref, bat = _both(_build_under("20KiB"))
    _assert_same(ref, bat)
    assert bat.summary["encls"]["EADD"] == 1500
    assert bat.summary["cgroups"]["/a/x/t"]["pages_reclaimed"]["sync"] > 1000
    assert backs == [(C.ST_B_TOP, 0)]  # the ioctl's end, alone


def test_eadd_build_whose_va_page_cannot_be_charged_is_the_references(monkeypatch) -> None:
    """With 4 pages (the SECS and two VA pages leave one), the step that adds the
    1,024th page (page_cnt 1024, the SECS counted) charges the page and then a VA page
    (sgx_encl_grow()), which cannot fit with nothing on the LRU: the core hands that step
    to the reference, where the ioctl fails (-ENOMEM), as in a reference run."""
    from epcsim.compiled import layout as C

    backs = _build_backs(monkeypatch)
    ref, bat = _both(_build_under("16KiB"))
    _assert_same(ref, bat)
    assert bat.summary["encls"]["EADD"] == 1023
    assert bat.summary["enclaves"]["b"]["outcome"] == "failure"
    assert backs == [(C.ST_B_CHARGE, 0)]  # the page's charge retry: the step that fails
