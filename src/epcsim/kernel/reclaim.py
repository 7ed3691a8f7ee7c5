"""The EPC reclaimer: ``sgx_reclaim_pages()``, global reclaim, ksgxd, direct reclaim.

Models the reclaimer half of ``arch/x86/kernel/cpu/sgx/main.c`` (v16 after patch 14):
``sgx_reclaim_pages()`` with ``sgx_reclaimer_age()``, ``sgx_reclaimer_block()`` and
``sgx_reclaimer_write()`` / ``sgx_encl_ewb()``, ``sgx_can_reclaim_global()``,
``sgx_should_reclaim_global()``, ``sgx_reclaim_pages_global()`` and the body of
``ksgxd()`` (v16 patch 14), and ``sgx_reclaim_direct()`` (v16 patch 13).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import numpy as np

from . import encl as _encl
from . import encls
from . import epc as _epc
from . import epc_cgroup as _epc_cgroup
from . import resume as _resume
from .constants import (
    DESC_ACCESSED,
    DESC_BEING_RECLAIMED,
    DESC_BLOCKED,
    PAGE_SIZE,
    SGX_BACKING_BYTES_PER_PAGE,
    SGX_ENCL_INITIALIZED,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_NR_HIGH_PAGES,
    SGX_NR_LOW_PAGES,
    SGX_NR_TO_SCAN,
)
from .hooks import Episode, episode_end, logging_episodes
from .memcg import MemCg, mem_cgroup_charge_backing, mem_cgroup_fits
from .misc import css_put, misc_cg_uncharge

if TYPE_CHECKING:
    from .encl import Encl
    from .epc_cgroup import SgxCgroup
    from .host import Host, Task
    from .resume import (
        ReclaimerState,
        ReclaimerTrack,
        SgxCgroupReclaimPagesState,
        SgxReclaimPagesState,
    )

__all__ = [
    "sgx_reclaim_pages",
    "sgx_reclaim_pages_global",
    "ksgxd_step",
    "sgx_reclaim_direct",
]


def sgx_reclaim_pages(
    host: Host,
    sgx_cg: SgxCgroup,
    charge_task: Task | None,
    *,
    resume: SgxReclaimPagesState | None = None,
    episode: Episode | None = None,
    by: int | None = None,
    track: ReclaimerTrack | None = None,
) -> Generator[str, None, int]:
    """Models sgx_reclaim_pages(lru, charge_mm) (main.c; the LRU argument of v16 patch 8,
    the charge_mm of patch 11).

    Phase 1 (isolate) takes up to SGX_NR_TO_SCAN pages from the head of *sgx_cg*'s LRU,
    keeping those whose enclave reference can be taken (TRACKED kept, list empty) and
    forgetting those of dying enclaves (TRACKED cleared).  Phase 2 (age + backing)
    rotates young pages and pages whose backing cannot be allocated to the LRU tail;
    the others get BEING_RECLAIMED.  Phase 3 zaps PTEs and EBLOCKs.  Phase 4 writes each
    page back (VA slot, EWB; SECS after its last child once initialised), drops the
    enclave reference (which may release the enclave here) and frees the page.

    Yields "reclaim:isolated", "reclaim:aged", "reclaim:blocked" between the phases.

    Returns: the number of pages isolated in phase 1 with a live enclave reference.

    *by* (``RECLAIM_*`` of :mod:`epcsim.kernel.epc_cgroup`) says who reclaims: the
    pages written back are counted against *sgx_cg* and their enclave under it (model
    statistics, not a kernel argument).

    Context: each phase is atomic in the model (the kernel holds the LRU lock for phase
    1 and enclave mutexes per page in phases 2-4).  Within a phase the model batches
    what no one can observe: the backing charges of a batch that cannot hit
    ``memory.max`` are made in one step, and the uncharge and css references of the
    freed pages (all charged to *sgx_cg*, whose LRU they were on) are dropped together
    at the end of phase 4, which leaves the same state as page by page.

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`) continues a batch
    stopped at a yield point: from phase ``resume.phase`` with ``resume.pages``,
    returning ``resume.cnt``.  ``track`` (engine take-over only, the inverse): updated
    before each yield with the phase to run next, the batch and the return value.

    ``episode`` (the episode log only, :mod:`epcsim.kernel.hooks`): the pages isolated
    and evicted are counted into it against *sgx_cg*; a policy hook's calls count into
    ``host.reclaim_episode`` (``hooks.run_in_episode``).  *by* None (a policy's hook
    calling it): the kind of the episode the call runs in, else sync.
    """
    if by is None:
        ep = episode if episode is not None else host.reclaim_episode
        by = _epc_cgroup.RECLAIM_BY_KIND[ep.kind] if ep is not None else _epc_cgroup.RECLAIM_SYNC
    log = host.episode_log
    if log is not None and episode is None:
        episode = host.reclaim_episode
        if episode is not None and episode.started_ns < 0:
            log.begin(host, episode)
    if resume is None:
        chunk = _sgx_reclaim_isolate(host, sgx_cg)
        cnt = len(chunk)
        if cnt and episode is not None and log is not None:
            episode.scanned[sgx_cg] = episode.scanned.get(sgx_cg, 0) + cnt
        if not cnt:
            return 0
        if track is not None:
            track.batch(2, chunk, cnt)
        yield "reclaim:isolated"
        phase, pages = 2, chunk
    else:
        phase, pages, cnt = resume.phase, resume.pages, resume.cnt

    if phase == 2:
        # Phase 2: age test, backing allocation
        kept = _sgx_reclaim_age_and_back(host, sgx_cg, pages, charge_task)
        if not kept:
            return cnt
        if track is not None:
            track.batch(3, kept, cnt)
        yield "reclaim:aged"
        phase = 3
    else:
        kept = pages
    if phase == 3:
        # Phase 3: block (zap PTEs in every mm, EBLOCK)
        _sgx_reclaimer_block(host, kept)
        if track is not None:
            track.batch(4, kept, cnt)
        yield "reclaim:blocked"

    _sgx_reclaimer_write_batch(host, sgx_cg, kept, by)
    if episode is not None and log is not None:
        episode.reclaimed[sgx_cg] = episode.reclaimed.get(sgx_cg, 0) + len(kept)
    return cnt


def _sgx_reclaim_isolate(host: Host, sgx_cg: SgxCgroup) -> list[int]:
    """Phase 1 of sgx_reclaim_pages() (under lru->lock): the first 16 pages of the
    list, unlinked together (each self-linked: list_del_init()); those whose enclave
    reference can be taken are returned (TRACKED kept), the others forgotten."""
    pool = host.epc
    m_oe = pool.m_owner_encl
    m_flags = pool.m_flags
    encls_tab = host.encls
    chunk: list[int] = []
    sgx_cg.nr_reclaim_batches += 1
    taken = sgx_cg.lru.isolate_head(SGX_NR_TO_SCAN)
    host.nr_lru_pages -= len(taken)
    sgx_cg.nr_scanned += len(taken)
    for page in taken:
        encl = encls_tab[m_oe[page]]
        if encl.refcount > 0:  # kref_get_unless_zero()
            encl.refcount += 1
            chunk.append(page)
        else:
            m_flags[page] &= ~SGX_EPC_PAGE_RECLAIMER_TRACKED
    return chunk


def _sgx_reclaimer_block(host: Host, kept: list[int]) -> None:
    """Phase 3 of sgx_reclaim_pages(): sgx_reclaimer_block() (zap PTEs in every mm,
    EBLOCK) for each kept page."""
    pool = host.epc
    m_oe = pool.m_owner_encl
    m_oi = pool.m_owner_idx
    encls_tab = host.encls
    for page in kept:
        encls_tab[m_oe[page]].m_desc[m_oi[page]] |= DESC_BLOCKED
    host.encls_count[encls.EBLOCK] += len(kept)


def _sgx_reclaimer_write_batch(host: Host, sgx_cg: SgxCgroup, kept: list[int], by: int) -> None:
    """Phase 4 of sgx_reclaim_pages(): write back, drop the enclave reference, free --
    page by page in the kernel.  The model takes runs of pages of one enclave together,
    in order: the writes, references and frees of all but the last page of a run, then
    the last page alone (its write may take the SECS out and its reference may be the
    one that releases the enclave), which leaves the state page-by-page order leaves."""
    pool = host.epc
    m_oe = pool.m_owner_encl
    m_oi = pool.m_owner_idx
    encls_tab = host.encls
    tracked: set[int] = set()
    k = len(kept)
    i = 0
    while i < k:
        eid = m_oe[kept[i]]
        j = i + 1
        while j < k and m_oe[kept[j]] == eid:
            j += 1
        encl = encls_tab[eid]
        if j - i > 1:
            head = kept[i : j - 1]
            _sgx_reclaimer_write_run(host, encl, [m_oi[p] for p in head], tracked, by)
            encl.refcount -= len(head)  # cannot reach 0: the run's last page holds one
            _epc._sgx_free_epc_pages_to_node(pool, head)
        last = kept[j - 1]
        _sgx_reclaimer_write_run(host, encl, [m_oi[last]], tracked, by)
        encl.refcount -= 1  # kref_put(&encl->refcount, sgx_encl_release)
        if not encl.refcount:
            _encl.sgx_encl_release(host, encl)
        _epc._sgx_free_epc_pages_to_node(pool, [last])
        i = j
    # sgx_free_epc_page()'s uncharge and sgx_put_cg() for the k pages
    sgx_cg.nr_pages -= k
    _epc._count_freed(sgx_cg, k)
    sgx_cg.nr_evicted += k
    sgx_cg.nr_reclaimed_by[by] += k
    cg = sgx_cg.cg
    misc_cg_uncharge(cg, k * PAGE_SIZE)
    cg.refcnt -= k - 1
    css_put(cg)


def _sgx_reclaim_age_and_back(
    host: Host, sgx_cg: SgxCgroup, chunk: list[int], charge_task: Task | None
) -> list[int]:
    """Phase 2 of sgx_reclaim_pages(): per page in order, ``sgx_reclaimer_age()`` then
    ``sgx_encl_alloc_backing()``; young pages and pages without backing go back to the
    LRU tail and drop their enclave reference.  Returns the pages kept, with
    BEING_RECLAIMED set.

    When every backing charge of the batch fits under ``memory.max`` (no OOM kill can
    happen, so nothing else changes meanwhile), the charges are made in one step.
    """
    pool = host.epc
    m_oe = pool.m_owner_encl
    m_oi = pool.m_owner_idx
    encls_tab = host.encls
    lru = sgx_cg.lru
    nbytes = SGX_BACKING_BYTES_PER_PAGE
    # the memcg each enclave's backing goes to (fixed while no task exits)
    memcgs: dict[int, MemCg] = {}
    for page in chunk:
        eid = m_oe[page]
        if eid not in memcgs:
            memcgs[eid] = _encl.sgx_encl_backing_memcg(host, encls_tab[eid], charge_task)
    # sgx_reclaimer_age() tests the accessed bit (not under the no_age experiment, nor
    # where a policy's age_test hook says every page of this batch is old)
    pol = host.policy
    age = not host.no_age and (pol is None or pol.age_test is None or pol.age_test(host, sgx_cg))
    fast = len(memcgs) == 1 and mem_cgroup_fits(next(iter(memcgs.values())), len(chunk) * nbytes)
    kept: list[int] = []
    aged = 0
    # young pages are counted against the cgroup they are charged to: the LRU's owner
    # under the series' per-cgroup lists; a policy's own list may mix cgroups
    mixed: list[int] | None = [] if getattr(sgx_cg, "cg", None) is None else None
    for page in chunk:
        encl = encls_tab[m_oe[page]]
        idx = m_oi[page]
        desc = encl.m_desc
        # sgx_reclaimer_age(): test-and-clear the accessed bit in every live mm
        young = False
        if encl.nr_live_mms and age:
            d = desc[idx]
            if d & DESC_ACCESSED:
                desc[idx] = d & ~DESC_ACCESSED
                young = True
                aged += 1
                if mixed is not None:
                    mixed.append(pool.m_cg[page])
        if not young:
            if fast:
                encl.m_memcg[idx] = memcgs[encl.id].id
                desc[idx] |= DESC_BEING_RECLAIMED
                kept.append(page)
                continue
            kills = host.memcg_root.oom_kills
            ok = _encl.sgx_encl_alloc_backing(host, encl, idx, charge_task) == 0
            if mixed is None:  # (a policy's list of several cgroups: not counted)
                sgx_cg.nr_oom_kills += host.memcg_root.oom_kills - kills
            if ok:
                desc[idx] |= DESC_BEING_RECLAIMED
                kept.append(page)
                continue
        # skip: back to the tail of the same LRU, drop the enclave reference
        lru.add_tail(page)
        host.nr_lru_pages += 1
        if mixed is None:
            sgx_cg.nr_rotated += 1
        else:  # a policy's list of several cgroups: the page's own
            cgid = pool.m_cg[page]
            (host.sgx_cg_root if cgid < 0 else host.sgx_cgroups[cgid]).nr_rotated += 1
        _encl.sgx_encl_put(host, encl)
    if mixed is not None:
        for cgid in mixed:
            _epc._count_aged(host.sgx_cg_root if cgid < 0 else host.sgx_cgroups[cgid], 1)
    elif aged:
        _epc._count_aged(sgx_cg, aged)
    if fast and kept:
        memcg = next(iter(memcgs.values()))
        total = len(kept) * nbytes
        mem_cgroup_charge_backing(host, memcg, total)
        encl = encls_tab[m_oe[kept[0]]]
        encl.backing_bytes += total
        encl.owner.backing_bytes += total
    return kept


def _sgx_reclaimer_write_run(
    host: Host, encl: Encl, idxs: list[int], tracked: set[int], by: int
) -> None:
    """Models sgx_reclaimer_write() (main.c; after EBLOCK) for pages
    *idxs* of one enclave, in order, with sgx_encl_ewb(): EWB, on "not tracked" ETRACK
    (+ IPIs) and EWB again.  The model counts one ETRACK per enclave per batch (the first
    EWB after the batch's EBLOCKs finds the enclave not tracked) and one EWB per page.
    The SECS is written back and freed after the last child leaves, once initialised.
    """
    n = len(idxs)
    count = host.encls_count
    if encl.id not in tracked:
        tracked.add(encl.id)
        count[encls.ETRACK] += 1
    count[encls.EWB] += n
    slots = _encl.sgx_alloc_va_slots(encl, n)
    if n == 1:
        idx = idxs[0]
        encl.m_desc[idx] &= ~(DESC_BEING_RECLAIMED | DESC_BLOCKED | DESC_ACCESSED)
        encl.m_va[idx] = slots[0]
        encl.m_epc[idx] = -1
    else:
        arr = np.array(idxs, dtype=np.int64)
        encl.desc[arr] &= np.uint8(0xFF & ~(DESC_BEING_RECLAIMED | DESC_BLOCKED | DESC_ACCESSED))
        encl.va[arr] = slots
        encl.epc[arr] = -1
    encl.secs_child_cnt -= n
    encl.nr_evicted += n
    encl.nr_reclaimed_by[by] += n
    # the SECS goes after its last child, once initialised: backing at index size/4096
    if (
        encl.secs_child_cnt == 0
        and encl.flags & SGX_ENCL_INITIALIZED
        and encl.secs_epc >= 0
        and _encl.sgx_encl_alloc_backing(host, encl, _encl.SECS_INDEX, None) == 0
    ):
        encl.secs_va = _encl.sgx_alloc_va_slot(encl)
        count[encls.EWB] += 1
        encl.nr_secs_evicted += 1
        secs = encl.secs_epc
        encl.secs_epc = -1
        _encl.sgx_encl_free_epc_page(host, secs)


def sgx_reclaim_pages_global(
    host: Host,
    charge_task: Task | None,
    *,
    resume: SgxCgroupReclaimPagesState | None = None,
    episode: Episode | None = None,
    by: int = _epc_cgroup.RECLAIM_KSGXD,
    track: ReclaimerTrack | None = None,
) -> Generator[str, None, int]:
    """Models sgx_reclaim_pages_global(mm) (patch 14): rotating cgroup reclaim rooted at
    the root, 16 pages.  ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`):
    the rest of a reclaim stopped inside ``sgx_cgroup_reclaim_pages()``; ``track``
    (engine take-over only): where it stops, before each yield.  ``episode``:
    the caller's reclaim episode (with a policy or the episode log only,
    :mod:`epcsim.kernel.hooks`).  *by*: who reclaims (model statistics: ksgxd, the
    direct pass, the allocator's sync pass)."""
    return (
        yield from _epc_cgroup.sgx_cgroup_reclaim_pages(
            host,
            host.sgx_cg_root,
            charge_task,
            SGX_NR_TO_SCAN,
            resume=resume,
            episode=episode,
            by=by,
            track=track,
        )
    )


def ksgxd_step(
    host: Host, *, resume: ReclaimerState | None = None, track: ReclaimerTrack | None = None
) -> Generator[str, None, bool]:
    """One iteration of the ksgxd() loop (main.c; v16 patch 14).

    ``wait_event_freezable(ksgxd_waitq, should_reclaim_global(SGX_NR_HIGH_PAGES))``:
    if the condition holds, one global reclaim with no charge mm and a
    ``cond_resched()``; otherwise ksgxd goes to sleep until the allocator wakes it.

    Returns: True if it reclaimed (keep running), False if it went to sleep.

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`) continues an
    iteration stopped inside its reclaim (``resume.reclaim``) or at its
    ``cond_resched()`` (``resume.reclaim`` None).  ``track`` (engine take-over only,
    :class:`~epcsim.kernel.resume.ReclaimerTrack`): where the iteration stops, written
    before each yield and at the return.
    """
    if resume is not None:
        if resume.reclaim is not None:
            yield from sgx_reclaim_pages_global(
                host,
                None,
                resume=resume.reclaim,
                episode=host.ksgxd_episode,
                by=_epc_cgroup.RECLAIM_KSGXD,
                track=track,
            )
            if track is not None:
                track.at = _resume.TRACK_RESCHED
            yield "cond_resched"
        if track is not None:
            track.at, track.busy = _resume.TRACK_RETURNED, True
        return True
    if _epc.sgx_should_reclaim_global(host, SGX_NR_HIGH_PAGES):
        host.ksgxd_woken = True
        episode = None
        if logging_episodes(host):  # one wake-up is one episode
            if host.ksgxd_episode is None:
                host.ksgxd_episode = Episode("ksgxd", host.sgx_cg_root)
            episode = host.ksgxd_episode
        yield from sgx_reclaim_pages_global(
            host, None, episode=episode, by=_epc_cgroup.RECLAIM_KSGXD, track=track
        )
        if track is not None:
            track.at = _resume.TRACK_RESCHED
        yield "cond_resched"
        if track is not None:
            track.at, track.busy = _resume.TRACK_RETURNED, True
        return True
    host.ksgxd_woken = False
    episode_end(host, host.ksgxd_episode)
    host.ksgxd_episode = None
    if track is not None:
        track.at, track.busy = _resume.TRACK_RETURNED, False
    return False


def sgx_reclaim_direct(host: Host, task: Task) -> Generator[str, None, None]:
    """Models sgx_reclaim_direct() (v16 patch 13): a per-cgroup preemptive pass
    (if the current cgroup should reclaim) then, if free pages are below
    SGX_NR_LOW_PAGES, one global pass; both charge current's mm.  Best effort."""
    yield from _epc_cgroup.sgx_cgroup_reclaim_direct(host, task)
    if _epc.sgx_should_reclaim_global(host, SGX_NR_LOW_PAGES):
        episode = Episode("direct", host.sgx_cg_root) if logging_episodes(host) else None
        yield from sgx_reclaim_pages_global(
            host, task, episode=episode, by=_epc_cgroup.RECLAIM_DIRECT
        )
        episode_end(host, episode)
