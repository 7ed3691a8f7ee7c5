"""The twin table: every function of the compiled core, its reference twin(s) in
:mod:`epcsim.kernel` and the assumptions under which it gives what they give.

One row per function defined in the compiled modules (:data:`COMPILED_MODULES`).
``twins`` are dotted names in :mod:`epcsim.kernel` (the Python functions the compiled
function is specialised from), or in :mod:`epcsim.policies` for the reclaim designs
other than v16 the compiled engine runs (``host.policy``: v14, v13, limit-only), and
``kernel`` the kernel function it models, whose name the compiled function carries
(its own name, or a docstring starting "Models <kernel>()"); a row without twins says
why (``reason``: heap, prefetch, packing, ...).
``assumptions`` are keys of the compiled engine's allow-list
(:mod:`epcsim.compiled.eligibility`): schema paths (``host.sections``,
``cgroup[].memory_max``), ``option.<name>`` and ``dynamic.<name>`` (conditions checked
when the compiled engine takes a run over).  ``tests/compiled/test_twins.py`` checks the
table against the code.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["COMPILED_MODULES", "TWINS", "Twin", "twin"]

#: the modules compiled by numba (engine-side Python -- engine, eligibility, twins, _jit, the
#: declared layout whose constants the compiled code reads -- is not)
COMPILED_MODULES = (
    "epcsim.compiled.bits",
    "epcsim.compiled.encls",
    "epcsim.compiled.lru",
    "epcsim.compiled.misc",
    "epcsim.compiled.epc_cgroup",
    "epcsim.compiled.epc",
    "epcsim.compiled.encl",
    "epcsim.compiled.memcg",
    "epcsim.compiled.reclaim",
    "epcsim.compiled.ioctl",
    "epcsim.compiled.heap",
    "epcsim.compiled.loop",
)


class Twin(NamedTuple):
    """One compiled function and what it is equal to."""

    name: str  #: the compiled function
    module: str  #: its module, in epcsim.compiled
    twins: tuple[str, ...] | None  #: dotted names in epcsim.kernel, or None
    kernel: str | None  #: the kernel function it models (None without twins)
    reason: str | None  #: why it has no twin (None with twins)
    assumptions: tuple[str, ...] = ()  #: allow-list keys it relies on


_K = "epcsim.kernel."
_P = "epcsim.policies."
#: every backing charge the core makes fits (sgx_encl_alloc_backing() cannot fail): it
#: returns before a reclaim phase whose charges may not (mem_cgroup_batch_fits)
_NO_OOM = ("cgroup[].memory_max",)
#: every cgroup online at the take-over, no timed operation
_CGROUPS = ("at", "dynamic.cgroup_busy")
#: each enclave mapped by its own task's mm only, initialised, its task running
_ENCLAVES = (
    "enclave[].edmm",
    "enclave[].program",
    "dynamic.mapped_by_another_mm",
    "dynamic.not_initialised",
)


def _row(
    name: str, module: str, twins: list[str], kernel: str, assumptions: tuple[str, ...] = ()
) -> Twin:
    full = tuple(_K + t for t in twins)
    return Twin(name, "epcsim.compiled." + module, full, kernel, None, assumptions)


def _prow(
    name: str, module: str, twins: list[str], kernel: str, assumptions: tuple[str, ...] = ()
) -> Twin:
    """A row whose twins are a reclaim design's (epcsim.policies: the series' v14, v13,
    limit-only), chosen by ``host.policy``."""
    full = tuple(t if t.startswith(_K) else _P + t for t in twins)
    return Twin(
        name, "epcsim.compiled." + module, full, kernel, None, ("host.policy", *assumptions)
    )


def _none(name: str, module: str, reason: str, assumptions: tuple[str, ...] = ()) -> Twin:
    return Twin(name, "epcsim.compiled." + module, None, None, reason, assumptions)


TWINS: tuple[Twin, ...] = (
    # bits.py: widths
    _none("_u", "bits", "no twin: packing (unsigned array index)"),
    _none("bit64", "bits", "no twin: packing (a 64-bit mask bit)"),
    _none("in_range", "bits", "no twin: packing (0 <= i < n as one unsigned comparison)"),
    _none("lowbit", "bits", "no twin: packing (x & -x in 64 bits)"),
    _none("trailing_zeros", "bits", "no twin: packing (llvm.cttz in plain Python)"),
    _none("prefetch", "bits", "no twin: prefetch (a cache hint)"),
    _none("fortran_table", "bits", "no twin: packing (a flat table as its Fortran view)"),
    _none("const_cols", "bits", "no twin: packing (a C table's columns constant)"),
    # encls.py
    _none("encls_leaf", "encls", "no twin: the reference counts each leaf inline"),
    # lru.py
    _row("list_add_tail", "lru", ["lru.EpcList.add_tail"], "list_add_tail"),
    _row("list_del_init", "lru", ["lru.EpcList.del_init"], "list_del_init"),
    _none("lru_prefetch_step", "lru", "no twin: prefetch (the LRU's next rows)"),
    # misc.py
    _row(
        "misc_cg_try_charge", "misc", ["misc.misc_cg_try_charge"], "misc_cg_try_charge",
        ("host.misc",),
    ),
    _row("misc_cg_uncharge", "misc", ["misc.misc_cg_uncharge"], "misc_cg_uncharge", ("host.misc",)),
    _row(
        "misc_cg_charge_if_fits", "misc", ["misc.misc_cg_charge_if_fits"],
        "misc_cg_charge_if_fits", ("host.misc",),
    ),
    _none(
        "misc_cg_fits", "misc", "no twin: a test that changes nothing (would the charge fit)",
        ("host.misc",),
    ),
    # epc_cgroup.py
    _row(
        "sgx_cgroup_lru_empty", "epc_cgroup", ["epc_cgroup.sgx_cgroup_lru_empty"],
        "sgx_cgroup_lru_empty", _CGROUPS,
    ),
    _row(
        "misc_cg_err_charge", "epc_cgroup", ["misc.misc_cg_try_charge"],
        "misc_cg_try_charge", _CGROUPS,
    ),
    _row(
        "_sgx_cgroup_try_charge", "epc_cgroup",
        ["epc_cgroup._sgx_cgroup_try_charge", "misc.misc_cg_try_charge", "epc_cgroup.queue_work"],
        "__sgx_cgroup_try_charge", ("host.misc", "dynamic.task_not_running", *_CGROUPS),
    ),
    _row(
        "sgx_cgroup_try_charge", "epc_cgroup", ["epc_cgroup.sgx_cgroup_try_charge"],
        "sgx_cgroup_try_charge", ("host.misc", "dynamic.task_not_running", *_CGROUPS),
    ),
    _row(
        "sgx_cgroup_next_get", "epc_cgroup", ["epc_cgroup.sgx_cgroup_next_get"],
        "sgx_cgroup_next_get", _CGROUPS,
    ),
    _row(
        "sgx_cgroup_should_reclaim", "epc_cgroup", ["epc_cgroup.sgx_cgroup_should_reclaim"],
        "sgx_cgroup_should_reclaim", ("cgroup[].max", *_CGROUPS),
    ),
    _row(
        "sgx_cgroup_next_desc_pre", "epc_cgroup", ["epc_cgroup.sgx_cgroup_next_desc_pre"],
        "sgx_cgroup_next_desc_pre", _CGROUPS,
    ),
    _prow(
        "sgx_cgroup_try_charge_limit_only", "epc_cgroup",
        ["limit_only.LimitOnly.try_charge", "limit_only.LimitOnly.nothing_reclaimable",
         "limit_only.sgx_cgroup_over_max"],
        "sgx_cgroup_try_charge", ("host.misc", "dynamic.task_not_running", *_CGROUPS),
    ),
    _row(
        "sgx_cgroup_try_charge_reclaim", "epc_cgroup",
        ["epc_cgroup._sgx_cgroup_try_charge", "misc.misc_cg_try_charge"],
        "__sgx_cgroup_try_charge",
        ("host.misc", "dynamic.task_not_running", "dynamic.build_policy", *_CGROUPS),
    ),
    # epc.py
    _row(
        "_sgx_alloc_epc_page", "epc", ["epc._sgx_alloc_epc_page"], "__sgx_alloc_epc_page",
        ("host.sections", "vepc"),
    ),
    _row(
        "_sgx_free_epc_page_to_node", "epc", ["epc._sgx_free_epc_page_to_node"],
        "_sgx_free_epc_page_to_node", ("host.sections", "vepc"),
    ),
    _row("_count_freed", "epc", ["epc._count_freed"], "_count_freed"),
    _row("_count_aged", "epc", ["epc._count_aged"], "_count_aged"),
    _row("stuck_watch", "epc", ["epc.stuck_watch", "epc.stuck_retry"], "stuck_watch"),
    _row(
        "sgx_alloc_epc_page", "epc", ["epc.sgx_alloc_epc_page"], "sgx_alloc_epc_page",
        ("host.sections", "vepc", "dynamic.task_not_running", *_CGROUPS),
    ),
    _row("sgx_free_epc_page", "epc", ["epc.sgx_free_epc_page"], "sgx_free_epc_page", ("vepc",)),
    # encl.py
    _none("emem_keep", "encl", "no twin: packing (EMEM kept from EN_EMIX 1 on)"),
    _none("hb_set", "encl", "no twin: packing (the hit bitmap)"),
    _none("hb_clear", "encl", "no twin: packing (the hit bitmap)"),
    _none("va_pages_del", "encl", "no twin: packing (va_pages as links)"),
    _none("va_pages_add_head", "encl", "no twin: packing (va_pages as links)"),
    _none("va_pages_add_tail", "encl", "no twin: packing (va_pages as links)"),
    _row("sgx_alloc_va_slot", "encl", ["encl.sgx_alloc_va_slot"], "sgx_alloc_va_slot"),
    _row("sgx_free_va_slot", "encl", ["encl.sgx_free_va_slot"], "sgx_free_va_slot"),
    _row(
        "sgx_encl_load_secs", "encl", ["encl.sgx_encl_load_secs", "encl.sgx_encl_eldu"],
        "sgx_encl_load_secs", (*_ENCLAVES, *_NO_OOM),
    ),
    _row("sgx_encl_va_page_due", "encl", ["encl.sgx_encl_grow"], "sgx_encl_grow", _ENCLAVES),
    _row(
        "sgx_encl_grow_va_page", "encl", ["encl.sgx_encl_grow"], "sgx_encl_grow", _ENCLAVES,
    ),
    _row(
        "sgx_encl_grow", "encl", ["encl.sgx_encl_grow", "encl.sgx_encl_free_epc_page"],
        "sgx_encl_grow", _ENCLAVES,
    ),
    _row(
        "sgx_vma_fault", "encl",
        ["encl._sgx_vma_fault", "encl.sgx_encl_eaug_page", "encl._sgx_encl_load_page",
         "encl.sgx_encl_eldu", "epc.sgx_mark_page_reclaimable"],
        "sgx_vma_fault", ("enclave[].build", *_ENCLAVES, *_NO_OOM),
    ),
    _row(
        "sgx_encl_release", "encl",
        ["encl.sgx_encl_release", "encl.sgx_encl_release_resources",
         "epc.sgx_unmark_page_reclaimable"],
        "sgx_encl_release", (*_ENCLAVES, *_NO_OOM),
    ),
    _row("sgx_encl_put", "encl", ["encl.sgx_encl_put"], "sgx_encl_put", _ENCLAVES),
    # reclaim.py
    _row(
        "_sgx_reclaim_isolate", "reclaim", ["reclaim._sgx_reclaim_isolate"], "sgx_reclaim_pages",
        _ENCLAVES,
    ),
    _row(
        "sgx_cgroup_reclaim_pages", "reclaim",
        ["epc_cgroup.sgx_cgroup_reclaim_pages", "epc_cgroup.sgx_cgroup_next_get"],
        "sgx_cgroup_reclaim_pages", _CGROUPS,
    ),
    _prow(
        "sgx_cgroup_walk_on", "reclaim",
        [_K + "epc_cgroup.sgx_cgroup_next_desc_pre", "v14.sgx_cgroup_reclaim_pages",
         "v13.sgx_cgroup_reclaim_pages"],
        "sgx_cgroup_next_desc_pre", _CGROUPS,
    ),
    _prow(
        "sgx_cgroup_reclaim_pages_v14", "reclaim",
        ["v14.sgx_cgroup_reclaim_pages", _K + "epc_cgroup.sgx_cgroup_next_desc_pre"],
        "sgx_cgroup_reclaim_pages", _CGROUPS,
    ),
    _prow(
        "sgx_cgroup_reclaim_pages_v13", "reclaim",
        ["v13.sgx_cgroup_reclaim_pages", _K + "epc_cgroup.sgx_cgroup_next_desc_pre"],
        "sgx_cgroup_reclaim_pages", _CGROUPS,
    ),
    _row(
        "sgx_reclaimer_age", "reclaim", ["reclaim._sgx_reclaim_age_and_back"],
        "sgx_reclaimer_age", (*_ENCLAVES, *_NO_OOM),
    ),
    _row(
        "sgx_reclaimer_block", "reclaim", ["reclaim._sgx_reclaimer_block"],
        "sgx_reclaimer_block", _ENCLAVES,
    ),
    _row(
        "sgx_reclaimer_write_secs", "reclaim", ["reclaim._sgx_reclaimer_write_run"],
        "sgx_reclaimer_write", (*_ENCLAVES, *_NO_OOM),
    ),
    _row(
        "sgx_reclaimer_write", "reclaim",
        ["reclaim._sgx_reclaimer_write_batch", "reclaim._sgx_reclaimer_write_run"],
        "sgx_reclaimer_write", (*_ENCLAVES, *_NO_OOM),
    ),
    _row(
        "ksgxd_step", "reclaim",
        ["reclaim.ksgxd_step", "epc_cgroup.sgx_cgroup_reclaim_work_func",
         "reclaim.sgx_reclaim_pages"],
        "ksgxd_step", ("dynamic.reclaimer_busy", *_CGROUPS),
    ),
    # ioctl.py: an EADD build (SGX_IOC_ENCLAVE_ADD_PAGES)
    _none(
        "sgx_ioc_enclave_add_pages_ends", "ioctl",
        "no twin: the hand-over rule (the build's next step is the reference's)",
        ("enclave[].build",),
    ),
    _row(
        "sgx_encl_add_page_done", "ioctl",
        ["encl.sgx_encl_add_page", "epc.sgx_mark_page_reclaimable"], "sgx_encl_add_page",
        ("enclave[].build", "dynamic.build_policy"),
    ),
    _row(
        "sgx_ioc_enclave_add_pages", "ioctl",
        ["ioctl.ioc_enclave_add_pages", "encl.sgx_encl_add_page", "encl.sgx_encl_grow",
         "epc.sgx_alloc_epc_page_nowait", "epc.sgx_alloc_epc_page",
         "epc_cgroup.sgx_cgroup_try_charge", "epc_cgroup.sgx_cgroup_reclaim_pages",
         "reclaim.sgx_reclaim_pages_global"],
        "sgx_ioc_enclave_add_pages",
        ("enclave[].build", "dynamic.build_policy", "dynamic.task_not_running",
         "cgroup[].memory_max", *_CGROUPS),
    ),
    # memcg.py
    _row(
        "mem_cgroup_batch_fits", "memcg", ["memcg.mem_cgroup_fits"], "mem_cgroup_fits",
        ("cgroup[].memory_max", "at[].write"),
    ),
    # heap.py
    _none("key_less", "heap", "no twin: heap (the reference engine's heapq)"),
    _none("heap_put", "heap", "no twin: heap (the reference engine's heapq)"),
    _none("heap_sift_down", "heap", "no twin: heap (the reference engine's heapq)"),
    _none("heap_rekey_root", "heap", "no twin: heap (the reference engine's heapq)"),
    _none("heap_pop_root", "heap", "no twin: heap (the reference engine's heapq)"),
    _none("heap_push", "heap", "no twin: heap (the reference engine's heapq)"),
    # loop.py
    _none(
        "record_sample", "loop", "no twin: the simulator's sampler",
        ("host.sample_interval",),
    ),
    _none("th_step_end", "loop", "no twin: the simulator's event loop (epcsim.sim.engine)"),
    _row(
        "kick_kernel_threads", "loop", ["epc_cgroup.sgx_cg_wq_take_runnable"],
        "sgx_cg_wq_take_runnable", ("dynamic.reclaimer_busy",),
    ),
    _none(
        "run_core", "loop", "no twin: the simulator's event loop (epcsim.sim.engine)",
        ("enclave[].threads", "enclave[].start", "enclave[].workload{}", "host.cpus",
         "host.costs{}", "host.duration", "host.experiments.fault_unreferenced",
         "dynamic.other_actors"),
    ),
)  # fmt: skip


def twin(name: str) -> Twin:
    """The row of compiled function *name*."""
    for t in TWINS:
        if t.name == name:
            return t
    raise KeyError(name)
