"""Reclaim batches of the external baselines (``global-lru``, ``memcg-iter``,
``mglru-memcg``): ``sgx_reclaim_pages()`` (main.c) on pages a policy took off a list
itself, because these designs choose the pages differently (a filtered scan of one global
list, ``lru_size >> priority`` pages of a cgroup) while ageing, blocking and writing back
exactly as the series' reclaimer does.

Not kernel code of the series: phases 2 and 3 are the model's own
(:mod:`epcsim.kernel.reclaim`); phase 1 takes the pages the policy chose, phase 4 also
handles a batch whose pages are charged to several cgroups (one global list).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

from ..kernel import encl as _encl
from ..kernel import epc as _epc
from ..kernel import epc_cgroup as _epc_cgroup
from ..kernel import reclaim as _reclaim
from ..kernel.constants import PAGE_SIZE, SGX_EPC_PAGE_RECLAIMER_TRACKED
from ..kernel.misc import css_put, misc_cg_uncharge

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from ..kernel.hooks import Episode
    from ..kernel.host import Host, Task
    from ..kernel.lru import SgxEpcLruList

__all__ = ["ListOwner", "by_path", "reclaim_taken"]


class ListOwner:
    """What phase 2 of ``sgx_reclaim_pages()`` needs of its LRU's owner: the list young
    pages go back to (the tail of *lru*)."""

    __slots__ = ("lru",)

    def __init__(self, lru: SgxEpcLruList) -> None:
        self.lru = lru


def _take_refs(host: Host, taken: list[int]) -> list[int]:
    """The end of phase 1 of sgx_reclaim_pages() (main.c): *taken* are off their list
    (self-linked); keep those whose enclave reference can be taken
    (``kref_get_unless_zero()``), forget the others (TRACKED cleared)."""
    pool = host.epc
    m_oe = pool.m_owner_encl
    m_flags = pool.m_flags
    encls_tab = host.encls
    chunk: list[int] = []
    for page in taken:
        encl = encls_tab[m_oe[page]]
        if encl.refcount > 0:
            encl.refcount += 1
            chunk.append(page)
        else:
            m_flags[page] &= ~SGX_EPC_PAGE_RECLAIMER_TRACKED
    return chunk


def _by(host: Host) -> int:
    """Who reclaims (model statistics, ``RECLAIM_*``): the kind of the episode the
    policy's hook runs in (``host.reclaim_episode``), else sync."""
    ep = host.reclaim_episode
    return _epc_cgroup.RECLAIM_BY_KIND[ep.kind] if ep is not None else _epc_cgroup.RECLAIM_SYNC


def _write_mixed(host: Host, kept: list[int]) -> None:
    """Phase 4 of sgx_reclaim_pages() (main.c) page by page, for a batch whose pages may
    be charged to several cgroups: write back (one ETRACK per enclave per batch), drop
    the enclave reference, free; then each cgroup's uncharge and css references."""
    pool = host.epc
    m_oe = pool.m_owner_encl
    m_oi = pool.m_owner_idx
    m_cg = pool.m_cg
    encls_tab = host.encls
    tracked: set[int] = set()
    per_cg: dict[int, int] = {}
    by = _by(host)
    for page in kept:
        cid = m_cg[page]
        per_cg[cid] = per_cg.get(cid, 0) + 1
        encl = encls_tab[m_oe[page]]
        _reclaim._sgx_reclaimer_write_run(host, encl, [m_oi[page]], tracked, by)
        encl.refcount -= 1
        if not encl.refcount:
            _encl.sgx_encl_release(host, encl)
        _epc._sgx_free_epc_pages_to_node(pool, [page])
    for cid, k in per_cg.items():
        sgx_cg = host.sgx_cgroups[cid]
        assert sgx_cg is not None
        sgx_cg.nr_pages -= k
        _epc._count_freed(sgx_cg, k)
        sgx_cg.nr_evicted += k
        sgx_cg.nr_reclaimed_by[by] += k
        cg = sgx_cg.cg
        misc_cg_uncharge(cg, k * PAGE_SIZE)
        cg.refcnt -= k - 1
        css_put(cg)


def reclaim_taken(
    host: Host,
    owner: SgxCgroup | ListOwner,
    taken: list[int],
    charge_task: Task | None,
) -> Generator[str, None, int]:
    """``sgx_reclaim_pages()`` (main.c) on *taken*, pages a policy unlinked from
    *owner*'s list (``host.nr_lru_pages`` already lowered).  *owner*: the cgroup whose
    LRU they came from (all charged to it), or a :class:`ListOwner` of a list holding
    pages of any cgroup.  Yields at the same points as ``sgx_reclaim_pages()``; returns
    the number of pages isolated with a live enclave reference."""
    chunk = _take_refs(host, taken)
    cnt = len(chunk)
    if not cnt:
        return 0
    episode = _logged_episode(host)
    if episode is not None:
        _count_into(host, episode.scanned, owner, chunk)
    yield "reclaim:isolated"
    kept = _reclaim._sgx_reclaim_age_and_back(host, owner, chunk, charge_task)  # type: ignore[arg-type]
    if not kept:
        return cnt
    yield "reclaim:aged"
    _reclaim._sgx_reclaimer_block(host, kept)
    yield "reclaim:blocked"
    if episode is not None:
        _count_into(host, episode.reclaimed, owner, kept)
    if isinstance(owner, ListOwner):
        _write_mixed(host, kept)
    else:
        _reclaim._sgx_reclaimer_write_batch(host, owner, kept, _by(host))
    return cnt


def _logged_episode(host: Host) -> Episode | None:
    """The episode the policy's hook runs in, when the episode log records it (begun
    here if this is its first batch), as ``sgx_reclaim_pages()`` counts into it."""
    log = host.episode_log
    episode = host.reclaim_episode
    if log is None or episode is None:
        return None
    if episode.started_ns < 0:
        log.begin(host, episode)
    return episode


def _count_into(
    host: Host, counts: dict[SgxCgroup, int], owner: SgxCgroup | ListOwner, pages: list[int]
) -> None:
    """Count *pages* into an episode's per-cgroup *counts*: against *owner* (the cgroup
    whose LRU they came from) or, off a list of pages of any cgroup, each against its
    page's cgroup."""
    if not isinstance(owner, ListOwner):
        counts[owner] = counts.get(owner, 0) + len(pages)
        return
    m_cg = host.epc.m_cg
    cgroups = host.sgx_cgroups
    for page in pages:
        c = cgroups[m_cg[page]]
        counts[c] = counts.get(c, 0) + 1


def by_path(counts: dict[SgxCgroup, int]) -> dict[str, int]:
    """Per-cgroup counts keyed by the cgroup's path (the summary's naming: the root "/",
    an offline cgroup by its id), summed over cgroups that had the same path."""
    out: dict[str, int] = {}
    for c, n in counts.items():
        cg = c.cg
        if cg.parent is None:
            p = "/"
        else:
            p = cg.cgroup.path if cg.cgroup is not None else f"(offline #{c.id})"
        out[p] = out.get(p, 0) + n
    return out
