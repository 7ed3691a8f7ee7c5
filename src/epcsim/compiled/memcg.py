"""The memory controller as the compiled core needs it (:mod:`epcsim.kernel.memcg`):
whether the backing charges of a reclaimer's next phase fit under every ``memory.max``.

The core charges backing (``CG_MEMD``, by memcg id) without the OOM path: before a phase
that charges (phase 2, the old pages' backing; phase 4, a SECS's after its last child) it
asks :func:`mem_cgroup_batch_fits` whether every charge the phase makes fits; if not,
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
    DESC_ACCESSED,
    E_DESC,
    EN_INIT,
    EN_LIVE_MMS,
    EN_MEMCG,
    EN_SECS_CHILD,
    EN_SECS_EPC,
    R_ES,
    R_GS,
    R_MEMCG,
    R_NP,
    R_STAGE,
    S_NMEMCG,
    ST_PH2,
)

__all__ = ["mem_cgroup_batch_fits"]


@outline
def mem_cgroup_batch_fits(S, CG, EN, R, E8, r):
    """Models mem_cgroup_fits() (specialised from epcsim.kernel.memcg.mem_cgroup_fits)
    for every backing charge the next phase of reclaimer *r* makes: in phase 2, one
    page's backing (``SGX_BACKING_BYTES_PER_PAGE``) for each page of its batch that
    sgx_reclaimer_age() will find old (its enclave mapped and its accessed bit clear,
    or no live mm: the test of sgx_reclaimer_age() here), charged to its enclave's
    memcg or to an EADD build's task's (R_MEMCG); in phase 4, a SECS's backing for
    each enclave of the batch that may write its SECS after its last child (initialised,
    its SECS in the EPC, no more children than pages in the batch: an upper bound).
    True if, with all of them, no memcg and no ancestor exceeds its ``memory.max``: the
    charges are made one after another and only add, so they all fit if their sum
    does (and the phase needs no OOM path)."""
    nm = S[S_NMEMCG]
    for m in range(nm):
        CG[CG_MEMT, _u(m)] = 0
    n = R[R_NP, _u(r)]
    if R[R_STAGE, _u(r)] == ST_PH2:
        mem = R[R_MEMCG, _u(r)] - 1  # a build's task's memcg (its charge mm), else -1
        for k in range(n):
            e = R[_u(R_ES + k), _u(r)]
            if EN[EN_LIVE_MMS, _u(e)] and E8[E_DESC, _u(R[_u(R_GS + k), _u(r)])] & DESC_ACCESSED:
                continue  # young: rotated, no backing
            m = mem if mem >= 0 else EN[EN_MEMCG, _u(e)]
            while m >= 0:  # to it and every ancestor (page_counter_try_charge)
                CG[CG_MEMT, _u(m)] += BACKING
                m = CG[CG_MEMPAR, _u(m)]
    else:  # phase 4: the SECS after its last child
        for k in range(n):
            e = R[_u(R_ES + k), _u(r)]
            first = True
            c = 0
            for q in range(n):
                if R[_u(R_ES + q), _u(r)] == e:
                    if q < k:
                        first = False
                        break
                    c += 1
            if (
                first
                and EN[EN_SECS_CHILD, _u(e)] <= c
                and EN[EN_SECS_EPC, _u(e)] >= 0
                and EN[EN_INIT, _u(e)]
            ):
                m = EN[EN_MEMCG, _u(e)]
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
