"""The compiled engine's tables come from one declaration (issue 13, "one declared
layout"): :mod:`epcsim.compiled.layout` declares each table's fields; the offsets the
compiled core uses, the pack/write-back of the mirrored fields and the sampled
counters are generated from it."""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _scenarios import tiny

import epcsim
from epcsim.compiled import layout as L
from epcsim.result import TIMESERIES_SCHEMA, Result
from epcsim.scenario.schema import load_scenario
from epcsim.sim.engine import Simulation

SRC = Path(epcsim.__file__).parent
#: the modules of the compiled engine (the core, wherever it lives, and its driver)
CORE_MODULES = sorted(
    p
    for p in [SRC / "sim" / "_core.py", *(SRC / "compiled").glob("*.py")]
    if p.exists() and p.name not in ("layout.py", "__init__.py")
)

#: every name the hand-numbered constant block of the core defined before the
#: declaration (the names other modules import from the layout)
OLD_NAMES = """
BACKING CG_CURSOR CG_EVENTS CG_EVENTS_LOCAL CG_LIMIT CG_LIVE CG_LRU_HEAD CG_LRU_NR
CG_LRU_TAIL CG_MAXPAGES CG_MEMD CG_NR_BATCHES CG_NR_ENOMEM CG_NR_EVICTED CG_NR_FAULTS
CG_NR_FREED CG_NR_PAGES CG_PARENT CG_PEAK CG_PENDING CG_PRE CG_PREPOS CG_REFCNT CG_RUNNING
CG_SUBEND CG_USAGE CG_WQ DESC_ACCESSED DESC_BEING_RECLAIMED DESC_BLOCKED DESC_PRESENT EBUSY
ENOMEM EN_BACKING EN_BACKING0 EN_EMIX EN_LIVE_MMS EN_MEMCG EN_NPAGES EN_NR_EAUG EN_NR_ELDU
EN_NR_EVICTED EN_NR_FAULTS EN_NR_SECS_ELDU EN_NR_SECS_EWB EN_NVA EN_OFF EN_PAGE_CNT
EN_REFCOUNT EN_RELEASED EN_SECS_CHILD EN_SECS_EPC EN_SECS_MEMCG EN_SECS_VA EN_SIGPEND
EN_TRACKED EN_VAOFF EN_VA_HEAD EN_VA_TAIL ERR_NO_VA_SLOT ERR_NO_WORKER_SLOT E_DESC E_EPC
E_TYPE E_VA IS_FREE KIND_ENCL KIND_FREE KIND_SECS KIND_VA LRU_PF_HOPS L_EAUG L_EBLOCK L_ELDU
L_EREMOVE L_ETRACK L_EWB NCGF NENF NOT_ACC NOT_ACC_BLOCKED NOT_RECLAIM_BITS NOT_TRACKED NRF
NS NTHF NVAF PAGE PF_AHEAD P_FLAGS P_KIND P_NEXT P_OE P_OI P_PREV RC_ERROR RC_FLUSH RC_LIMIT
RC_NEED_CHUNK RC_THREAD_DONE R_C R_CB R_CG R_CNT R_ES R_GS R_HEAP R_HS R_HT R_KIND R_NP R_NR
R_PAGES R_ROOT R_SCHED R_SEQ R_STAGE R_T SGX_BACKING_BYTES_PER_PAGE SGX_CG_LOW_LIMIT
SGX_CG_MIN_FREE_PAGE SGX_EPC_PAGE_IS_FREE SGX_EPC_PAGE_RECLAIMER_TRACKED SGX_NR_HIGH_PAGES
SGX_NR_LOW_PAGES SGX_NR_TO_SCAN SGX_PAGE_TYPE_REG SGX_VA_SLOT_COUNT ST_END ST_PH2 ST_PH3
ST_PH4 ST_RESCHED ST_START S_ACCESS_NS S_ACTIVE S_BATCH_NS S_CUR_NID S_CUR_TCG S_ERR
S_FAULT_NS S_KICK S_KSTEP_NS S_LC S_LCOST S_LIMIT S_LRU_PF S_LRU_PF_N S_MIDPOP S_NHP S_NLAT
S_NLIVE S_NNODES S_NODES S_NOW S_NRH S_NR_FREE S_NR_LRU S_NSAMP S_NWQ S_ROOT S_SECT S_SEQ
S_SGX2 S_SM_INTERVAL S_SM_LAST S_SM_SEQ S_SM_T S_STAMP S_STEPCOST S_STUCK S_UNREF S_WHO
S_WOKEN TH_ACC TH_BUFLEN TH_CPU TH_E TH_FAULTS TH_FREED TH_FSTART TH_HEAP TH_HS TH_HT
TH_LIVE TH_NID TH_PENDING TH_POS TH_QUIET TH_R TH_REMAIN TH_RETRIES TH_SEQ TH_SIGBUS
TH_STARTED TH_STREAK TH_T TH_TCG TH_UNTIL TRACKED VA_BITS VA_EPC VA_NEXT VA_PREV VA_USED
VM_FAULT_NOPAGE VM_FAULT_SIGBUS
""".split()  # noqa: SIM905


# --- the declaration -------------------------------------------------------------------


@pytest.mark.parametrize("table", L.TABLES, ids=lambda t: t.name)
def test_fields_do_not_overlap_and_fill_the_table(table: L.Table) -> None:
    """Consecutive slots, no two fields sharing one, the size constant the sum of the
    widths."""
    offsets = table.offsets()
    assert len(offsets) == len(table.fields)  # no name declared twice
    slots: list[str] = []
    for f in table.fields:
        assert f.width >= 1
        start = getattr(L, table.prefix + f.name)
        assert start == len(slots)
        slots += [f.name] * f.width
    assert len(slots) == table.nslots
    if table.size is not None:
        assert getattr(L, table.size) == len(slots)


def test_old_names_all_exported_with_a_value() -> None:
    """Every name the hand-numbered block defined is exported (``__all__``) with an int."""
    missing = [n for n in OLD_NAMES if n not in L.__all__]
    assert not missing
    assert all(isinstance(getattr(L, n), int) for n in OLD_NAMES)
    assert len(set(L.__all__)) == len(L.__all__)
    assert all(hasattr(L, n) for n in L.__all__)


def test_plain_constants_keep_their_values() -> None:
    from epcsim.kernel import encls
    from epcsim.kernel.constants import DESC_ACCESSED, DESC_BLOCKED, SGX_NR_TO_SCAN

    assert (L.PAGE, L.ENOMEM, L.EBUSY) == (4096, 12, 16)
    assert (L.RC_NEED_CHUNK, L.RC_FLUSH, L.RC_THREAD_DONE, L.RC_LIMIT, L.RC_ERROR) == (
        1,
        2,
        3,
        4,
        5,
    )
    assert tuple(range(6)) == (L.ST_START, L.ST_PH2, L.ST_PH3, L.ST_PH4, L.ST_RESCHED, L.ST_END)
    assert (L.L_EWB, L.L_ELDU, L.L_EBLOCK) == (encls.EWB, encls.ELDU, encls.EBLOCK)
    assert L.NOT_ACC_BLOCKED == 0xFF & ~(DESC_ACCESSED | DESC_BLOCKED)
    assert L.LRU_PF_HOPS == 2 * SGX_NR_TO_SCAN
    # the vectors: 12 ENCLS leaves, SGX_NR_TO_SCAN pages a batch, 512 VA slots
    assert L.S_LCOST - L.S_LC == encls.NR_LEAVES
    assert L.R_ES - L.R_PAGES == L.R_GS - L.R_ES == SGX_NR_TO_SCAN
    assert L.NVAF - L.VA_BITS == 8


def _layout_imports(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("layout"):
            out |= {a.name for a in node.names}
    return out


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_every_name_the_compiled_modules_use_exists(path: Path) -> None:
    """What a compiled module imports from the layout or reads as ``C.X`` exists there,
    and every upper-case global its functions read is defined (numba would only find
    out when it compiles)."""
    text = path.read_text()
    tree = ast.parse(text)
    imported = _layout_imports(tree)
    assert imported <= set(L.__all__), imported - set(L.__all__)
    dotted = set(re.findall(r"\bC\.([A-Z][A-Z0-9_]*)\b", text))
    assert dotted <= set(L.__all__), dotted - set(L.__all__)
    defined = set(imported)
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            defined.add(node.arg)
        if isinstance(node, ast.ImportFrom | ast.Import):
            defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    loaded = {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id.isupper()
    }
    assert loaded <= defined, loaded - defined


def test_generated_names_are_the_declared_offsets() -> None:
    for t in L.TABLES:
        for name, at in t.offsets().items():
            assert L.GENERATED[name] == at
    sizes = {t.size for t in L.TABLES if t.size}
    assert sizes == {"NS", "NENF", "NTHF", "NCGF", "NRF", "NVAF"}


def test_kernel_arrays_have_the_declared_columns() -> None:
    """P32 / P8 / E32 / E8 address the kernel model's own arrays: their columns (rows
    for E8) are the named views the kernel model takes of them."""
    from epcsim.kernel.host import Host

    host = Host(1 << 20)
    pool = host.epc
    assert pool.i32.shape[1] == L.P32_TABLE.nslots and pool.u8.shape[1] == L.P8_TABLE.nslots
    for name, view in (("P_PREV", pool.prev), ("P_NEXT", pool.next)):
        assert np.shares_memory(pool.i32[:, getattr(L, name)], view)
    assert np.shares_memory(pool.i32[:, L.P_OE], pool.owner_encl)
    assert np.shares_memory(pool.i32[:, L.P_OI], pool.owner_idx)
    assert np.shares_memory(pool.u8[:, L.P_FLAGS], pool.flags)
    assert np.shares_memory(pool.u8[:, L.P_KIND], pool.kind)
    assert not np.shares_memory(pool.u8[:, L.P_FLAGS], pool.kind)
    sc = load_scenario(_SCENARIO)
    sim = Simulation(sc, engine="reference")
    sim.run()
    (e,) = [e for e in sim.host.encls if e is not None]
    assert e.i32.shape[1] == L.E32_TABLE.nslots and e.u8.shape[0] == L.E8_TABLE.nslots
    assert np.shares_memory(e.i32[:, L.E_EPC], e.epc)
    assert not np.shares_memory(e.i32[:, L.E_EPC], e.va)
    assert np.shares_memory(e.i32[:, L.E_VA], e.va)
    assert np.shares_memory(e.u8[L.E_DESC], e.desc)
    assert np.shares_memory(e.u8[L.E_TYPE], e.type)


def test_per_id_tables_are_in_fortran_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """CG, EN, TH and R (``A[field, id]``) are made in Fortran order, and the core
    views them so (raveled, ``bits.fortran_table``): one id's fields are adjacent, so
    the compiled code addresses all of them from one base (``id * nfields``) and a
    constant; in C order it kept a pointer per field the loop uses, most of them on the
    stack (~45 more instructions per access on peer.py's loop row).  The built-in runs
    compiled with several cgroups, enclaves and threads (so no table is both C- and
    F-ordered)."""
    import epcsim.compiled.engine as E

    seen: list[tuple[str, bool, bool, tuple[int, ...]]] = []
    run = E._Packed.run

    def spy(self: E._Packed) -> int:
        for name in ("CG", "EN", "TH", "R"):
            a = getattr(self, name)
            seen.append((name, a.flags.f_contiguous, a.flags.c_contiguous, a.shape))
        return run(self)

    monkeypatch.setattr(E._Packed, "run", spy)
    r = epcsim.run("builtin:nested-fairness", report=False)
    assert r.engine == "compiled"
    assert {name for name, _, _, shape in seen if shape[1] >= 2} == {"CG", "EN", "TH", "R"}
    for name, f, c, shape in seen:
        assert f, (name, shape)
        assert shape[1] < 2 or not c, (name, shape)


def test_one_compiled_variant_whatever_the_tables_sizes() -> None:
    """The core is compiled once for every scenario: CG, EN, TH and R reach it flat
    (bits.fortran_table), so a table of one id (C- and Fortran-contiguous at once, which
    numba types C) does not make numba compile another variant of the whole core (~1
    minute each; CI compiled seven when the tables came two-dimensional).  One enclave
    and thread in one cgroup, then several of each."""
    from epcsim.compiled.loop import run_core

    one = epcsim.run(tiny(500), report=False)
    several = epcsim.run("builtin:nested-fairness", report=False)
    assert (one.engine, several.engine) == ("compiled", "compiled")
    assert len(run_core.signatures) == 1, run_core.signatures


# --- the sampled counters ------------------------------------------------------------


def test_sampled_counters_are_the_timeseries_columns_in_order() -> None:
    """The declaration lists the time-series counters, in TIMESERIES_SCHEMA's order (the
    columns the samplers fill per cgroup besides time, path and limit)."""
    counters = [f.name for f in TIMESERIES_SCHEMA if f.name not in ("time_ns", "cgroup")]
    counters.remove("limit_bytes")
    # the columns of the per-enclave rows (schema version 2) come after, from SAMPE
    assert counters[-3:] == ["enclave", "accesses", "resident_pages"]
    del counters[-3:]
    assert [s.column for s in L.SAMPLED] == counters
    cg = L.CG_TABLE.offsets()
    assert len(L.SAMPLED) == L.NSAMPF
    assert tuple(cg[s.field] for s in L.SAMPLED) == L.SAMP_ROWS
    assert tuple(cg[s.root_field] for s in L.SAMPLED) == L.SAMP_ROOT_ROWS
    # each comes from a mirrored CG field (what the reference sampler reads)
    assert [s.mirror() for s in L.SAMPLED] == [
        "cg.usage",
        "cg.peak",
        "cg.events",
        "nr_faults",
        "nr_evicted",
        "nr_reclaim_batches",
        "lru.nr",
        "nr_enomem",
    ]
    assert [s.column for s in L.SAMPLED if s.root_field != s.field] == ["max_events"]
    assert L.SAMPLED[2].mirror(root=True) == "cg.events_local"


#: a small tree, an enclave four times its cgroup's limit, stopped mid-run (the LRUs,
#: counters, VA pages and backing are all in use)
_SCENARIO = """\
name = "layout"
[host]
epc = "1MiB"
duration = "4ms"
sample_interval = "1ms"
cpus = 1
[[cgroup]]
path = "/a"
max = "max"
[[cgroup]]
path = "/a/b"
max = "600KiB"
[[enclave]]
name = "e"
cgroup = "/a/b"
build = "eaug"
size = "2MiB"
workload = { pattern = "zipf", alpha = 0.9, accesses = 200000 }
"""


def _ran() -> tuple[Simulation, Result]:
    sim = Simulation(load_scenario(_SCENARIO), engine="reference")
    res = sim.run()
    assert res.summary["truncated"]
    return sim, res


def test_reference_sampler_records_the_declared_counters() -> None:
    """The reference engine's time series and summary hold, per cgroup, the declared
    counters read from the reference objects (the last sample is taken at the end)."""
    sim, res = _ran()
    ts = [r for r in res.timeseries.to_pylist() if r["cgroup"] is not None]
    summary = res.summary["cgroups"]
    live = [s for s in sim.host.sgx_cgroups if s is not None]
    last = ts[-len(live) :]
    assert len({r["time_ns"] for r in last}) == 1
    nonzero = set()
    for row, s in zip(last, live, strict=True):
        root = s.cg.parent is None
        for smp in L.SAMPLED:
            want = operator.attrgetter(smp.mirror(root))(s)
            assert row[smp.column] == want, (row["cgroup"], smp.column)
            if smp.column in summary[row["cgroup"]]:
                assert summary[row["cgroup"]][smp.column] == want
            if want:
                nonzero.add(smp.column)
    # the run exercises the counters (a swapped pair of columns would show)
    assert {"usage_bytes", "faults", "evictions", "reclaim_batches"} <= nonzero


# --- pack and write back -------------------------------------------------------------


def _keyed(sim: Simulation) -> list[tuple[str, np.ndarray, object]]:
    """(table, the slots of one object, the object) for every mirrored object of a
    state: the host, each live sgx_cgroup, each enclave and its VA pages, each thread."""
    host = sim.host
    out: list[tuple[str, np.ndarray, object]] = [("S", np.zeros(L.NS, np.int64), host)]
    out += [("CG", np.zeros(L.NCGF, np.int64), s) for s in host.sgx_cgroups if s is not None]
    for e in host.encls:
        if e is None:
            continue
        out.append(("EN", np.zeros(L.NENF, np.int64), e))
        out += [("VA", np.zeros(L.NVAF, np.int64), vp) for vp in e.va_all]
    for inst in sim.instances.values():
        out += [("TH", np.zeros(L.NTHF, np.int64), SimpleNamespace(st=t)) for t in inst.threads]
    return out


def _mirrored(table: str) -> list[tuple[int, L.Field]]:
    (t,) = [t for t in L.TABLES if t.name == table]
    offsets = t.offsets()
    return [(offsets[t.prefix + f.name], f) for f in t.fields if f.mirror]


def _values(obj: object, table: str) -> list:
    return [
        (p, operator.attrgetter(p)(obj) if f.width == 1 else list(operator.attrgetter(p)(obj)))
        for _, f in _mirrored(table)
        for p in f.mirror
    ]


def test_pack_then_write_back_is_the_identity_on_a_real_state() -> None:
    """Packing a stopped run's state and writing it back over scrambled objects gives
    the objects back, attribute by attribute; each packed slot holds its attribute."""
    sim, _ = _ran()
    keyed = _keyed(sim)
    assert {k for k, _, _ in keyed} == {"S", "CG", "EN", "VA", "TH"}
    before = [_values(obj, table) for table, _, obj in keyed]
    for table, vec, obj in keyed:
        L.pack(table, vec, obj)
        for at, f in _mirrored(table):
            v = operator.attrgetter(f.mirror[0])(obj)
            if f.back == "delta":
                assert vec[at] == 0
            elif f.width == 1:
                assert vec[at] == int(v)
            else:
                assert vec[at : at + len(v)].tolist() == list(v)
    # scramble every written-back value, then write back
    for table, _, obj in keyed:
        for _, f in _mirrored(table):
            if f.back != "value":
                continue
            owner, _, attr = f.mirror[0].rpartition(".")
            o = operator.attrgetter(owner)(obj) if owner else obj
            if f.width == 1:
                setattr(o, attr, not getattr(o, attr) if f.flag else -12345)
            else:
                getattr(o, attr)[:] = [-1] * len(getattr(o, attr))
    for table, vec, obj in keyed:
        L.write_back(table, vec, obj)
    after = [_values(obj, table) for table, _, obj in keyed]
    assert after == before
    # some state to speak of: pages on an LRU, evictions, VA pages, accesses
    cgs = [s for s in sim.host.sgx_cgroups if s is not None]
    assert any(s.lru.nr for s in cgs) and any(s.nr_evicted for s in cgs)
    assert any(table == "VA" for table, _, _ in keyed)


def test_write_back_of_a_delta_adds_to_every_mirror() -> None:
    """EN_BACKING: the core's change of the enclave's backing bytes goes to the enclave
    and its owner task, and the slot is reset."""
    sim, _ = _ran()
    (e,) = [e for e in sim.host.encls if e is not None]
    vec = np.zeros(L.NENF, np.int64)
    L.pack("EN", vec, e)
    b, ob = e.backing_bytes, e.owner.backing_bytes
    assert vec[L.EN_BACKING] == 0 and vec[L.EN_BACKING0] == b
    vec[L.EN_BACKING] = 3 * 4096
    L.write_back("EN", vec, e)
    assert (e.backing_bytes, e.owner.backing_bytes) == (b + 3 * 4096, ob + 3 * 4096)
    assert vec[L.EN_BACKING] == 0


def test_flags_go_back_as_bools() -> None:
    sim, _ = _ran()
    s = sim.host.sgx_cg_root
    vec = np.zeros(L.NCGF, np.int64)
    L.pack("CG", vec, s)
    vec[L.CG_PENDING], vec[L.CG_RUNNING] = 1, 0
    L.write_back("CG", vec, s)
    assert s.work_pending is True and s.work_running is False
    hv = np.zeros(L.NS, np.int64)
    L.pack("S", hv, sim.host)
    hv[L.S_WOKEN] = 1
    L.write_back("S", hv, sim.host)
    assert sim.host.ksgxd_woken is True


def test_rows_are_packed_and_written_back_as_one_object_at_a_time() -> None:
    """pack_rows / write_back_rows (a take-over's VA pages and cgroups) give what pack /
    write_back give object by object; write-back sets only the values that differ from
    the object's (an untouched attribute keeps its object), flags as bools."""
    sim, _ = _ran()
    for table, objs in (
        ("CG", [s for s in sim.host.sgx_cgroups if s is not None]),
        ("VA", [vp for e in sim.host.encls if e is not None for vp in e.va_all]),
    ):
        assert objs
        width = {"CG": L.NCGF, "VA": L.NVAF}[table]
        block = np.full((len(objs), width), -7, np.int64)
        L.pack_rows(table, block, objs)
        for r, obj in enumerate(objs):
            one = np.full(width, -7, np.int64)
            L.pack(table, one, obj)
            assert block[r].tolist() == one.tolist()
        before = [_values(obj, table) for obj in objs]
        L.write_back_rows(table, block, objs)
        assert [_values(obj, table) for obj in objs] == before
    # one changed value is set (a flag as a bool); the others keep their objects
    s = sim.host.sgx_cg_root
    marker = np.int64(s.nr_pages)  # a numpy int the write-back must leave in place
    s.nr_pages = marker
    block = np.zeros((1, L.NCGF), np.int64)
    L.pack_rows("CG", block, [s])
    block[0, L.CG_PENDING] = 1 - int(s.work_pending)
    want = not s.work_pending
    L.write_back_rows("CG", block, [s])
    assert s.work_pending is want
    assert s.nr_pages is marker
