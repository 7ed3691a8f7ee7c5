"""The memory controller as the compiled core needs it (:mod:`epcsim.kernel.memcg`):
whether the backing charges of a reclaimer's next phase fit under every ``memory.max``.

The core charges backing (``CG_MEMD``, by memcg id) without the OOM path: before a phase
that charges (phase 2, the pages' backing; phase 4, a SECS's after its last child) it
asks :func:`mem_cgroup_batch_fits` whether every charge the phase may make fits; if not,
it returns before the step (``RC_MEMCG``) and the reference runs it, with
``mem_cgroup_out_of_memory()``.
"""

from __future__ import annotations

from ._jit import outline
from .bits import _u
from .layout import (
    BACKING,
    CG_MEMD,
    CG_MEMLIM,
    CG_MEMPAR,
    CG_MEMT,
    CG_MEMU0,
    EN_MEMCG,
    R_ES,
    R_MEMCG,
    R_NP,
    S_NMEMCG,
)

__all__ = ["mem_cgroup_batch_fits"]


@outline
def mem_cgroup_batch_fits(S, CG, EN, R, r):
    """Models mem_cgroup_fits() (specialised from epcsim.kernel.memcg.mem_cgroup_fits)
    for every backing charge the next phase of reclaimer *r* may make: one page's backing
    (``SGX_BACKING_BYTES_PER_PAGE``) for each page of its batch, charged to its
    enclave's memcg, or an EADD build's task's (R_MEMCG; phase 2; phase 4 charges at
    most one SECS per page written).  True
    if, with all of them, no memcg and no ancestor exceeds its ``memory.max``."""
    nm = S[S_NMEMCG]
    for m in range(nm):
        CG[CG_MEMT, _u(m)] = 0
    # the charges: each adds to its memcg and every ancestor (page_counter_try_charge)
    mem = R[R_MEMCG, _u(r)] - 1  # a build's task's memcg (its charge mm), else -1
    for k in range(R[R_NP, _u(r)]):
        m = EN[EN_MEMCG, _u(R[_u(R_ES + k), _u(r)])]
        while m >= 0:
            CG[CG_MEMT, _u(m)] += BACKING
            m = CG[CG_MEMPAR, _u(m)]
        m = mem  # (a build's: charged there instead; counted in both, an upper bound)
        while m >= 0:
            CG[CG_MEMT, _u(m)] += BACKING
            m = CG[CG_MEMPAR, _u(m)]
    # what the core charged since it packed: each memcg's own change, to it and up
    for m in range(nm):
        d = CG[CG_MEMD, _u(m)]
        if d:
            a = m
            while a >= 0:
                CG[CG_MEMT, _u(a)] += d
                a = CG[CG_MEMPAR, _u(a)]
    for m in range(nm):  # noqa: SIM110 (numba)
        if CG[CG_MEMU0, _u(m)] + CG[CG_MEMT, _u(m)] > CG[CG_MEMLIM, _u(m)]:
            return False
    return True
