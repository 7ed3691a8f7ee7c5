"""Per-cgroup EPC accounting and reclamation (v16 patches 5, 9, 10, 12-14).

Models ``arch/x86/kernel/cpu/sgx/epc_cgroup.c`` and ``epc_cgroup.h`` of the v16 series
with the v17 iterator fix: ``struct sgx_cgroup``, ``sgx_cgroup_try_charge()`` and
``__sgx_cgroup_try_charge()``, ``sgx_cgroup_uncharge()``, ``sgx_cgroup_lru_empty()``,
``sgx_cgroup_next_desc_pre()``, ``sgx_cgroup_next_get()``, ``sgx_cgroup_next_skip()``,
``sgx_cgroup_reclaim_pages()``, ``sgx_cgroup_should_reclaim()``,
``sgx_cgroup_max_pages_to_root()``, ``sgx_cgroup_reclaim_work_func()``,
``sgx_cgroup_reclaim_direct()``, ``sgx_cgroup_reclaim_pages_global()`` and the misc
``alloc``/``free`` callbacks (``sgx_cgroup_misc_alloc/free()``).

Functions that can let another CPU in are generators: they yield at each
``cond_resched()`` and between the phases of ``sgx_reclaim_pages()``, and return the
kernel's result as the generator's return value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import TYPE_CHECKING

from .constants import (
    EBUSY,
    ENOMEM,
    ERESTARTSYS,
    PAGE_SIZE,
    SGX_CG_LOW_LIMIT,
    SGX_CG_MIN_FREE_PAGE,
    SGX_NO_RECLAIM,
    SGX_NR_TO_SCAN,
)
from .hooks import Episode, episode_end, logging_episodes, run_in_episode
from .lru import SgxEpcLruList
from .misc import MiscCg, css_get, css_put, css_tryget, misc_cg_try_charge, misc_cg_uncharge

if TYPE_CHECKING:
    from .host import Host, Task
    from .resume import (
        ReclaimerState,
        ReclaimerTrack,
        SgxAllocEpcPageState,
        SgxCgroupReclaimPagesState,
    )

__all__ = [
    "SgxCgroup",
    "sgx_get_current_cg",
    "sgx_put_cg",
    "sgx_cgroup_try_charge",
    "sgx_cgroup_uncharge",
    "sgx_cgroup_lru_empty",
    "sgx_cgroup_next_desc_pre",
    "sgx_cgroup_next_get",
    "sgx_cgroup_reclaim_pages",
    "sgx_cgroup_should_reclaim",
    "sgx_cgroup_reclaim_work_func",
    "sgx_cgroup_reclaim_direct",
    "sgx_cgroup_reclaim_pages_global",
    "queue_work",
    "sgx_cg_wq_take_runnable",
    "RECLAIM_KSGXD",
    "RECLAIM_ASYNC",
    "RECLAIM_SYNC",
    "RECLAIM_DIRECT",
    "RECLAIMERS",
]

#: Who runs a reclaim (a model counter index, not a kernel name: the kernel does not
#: count reclaimed pages by caller).  ksgxd: the global reclaimer thread (ksgxd());
#: async: a ``sgx_cg_wq`` worker in sgx_cgroup_reclaim_work_func(); sync: the
#: DO_RECLAIM charge loop of sgx_cgroup_try_charge() (and the allocator's global
#: reclaim in sgx_alloc_epc_page(), which the charging task runs too); direct:
#: sgx_reclaim_direct() before EDMM ioctls, its cgroup pass and its global pass.
RECLAIM_KSGXD = 0
RECLAIM_ASYNC = 1
RECLAIM_SYNC = 2
RECLAIM_DIRECT = 3
#: the names of the RECLAIM_* indices, in order (summary.json ``pages_reclaimed``)
RECLAIMERS = ("ksgxd", "async", "sync", "direct")
#: a reclaim episode's kind (epcsim.kernel.hooks.Episode) -> who reclaims in it
RECLAIM_BY_KIND = {
    "ksgxd": RECLAIM_KSGXD,
    "async": RECLAIM_ASYNC,
    "sync": RECLAIM_SYNC,
    "alloc": RECLAIM_SYNC,
    "direct": RECLAIM_DIRECT,
}


class SgxCgroup:
    """Models ``struct sgx_cgroup`` (epc_cgroup.h, v16 patch 5), stored in the misc css's ``priv``.

    Besides the kernel's fields it carries model counters used by metrics (they never
    influence behaviour): pages evicted from its LRU, reclaim batches run on its LRU,
    ENOMEM results of charges made in it, enclave faults of its tasks, and pages freed
    from its subtree (``nr_freed``) and pages of its subtree aged young by
    sgx_reclaimer_age() (``nr_aged``): reclaim progress, for the simulator's stuck rule.
    These counters are in the model, not in the kernel's struct: also the pages evicted
    from its LRU split by who reclaimed them (``nr_reclaimed_by``, indexed by
    ``RECLAIM_*``), the pages taken off its LRU by phase 1 of sgx_reclaim_pages()
    (``nr_scanned``) and those put back to its tail by phase 2 (``nr_rotated``).
    """

    __slots__ = (
        "id",
        "cg",
        "lru",
        "next_cg",
        "work_pending",
        "work_running",
        "nr_pages",
        "nr_evicted",
        "nr_reclaim_batches",
        "nr_enomem",
        "nr_faults",
        "nr_freed",
        "nr_aged",
        "nr_reclaimed_by",
        "nr_scanned",
        "nr_rotated",
        "nr_eldu",
        "nr_oom_kills",
        "rfc",
    )

    def __init__(self, sid: int, cg: MiscCg, lru: SgxEpcLruList) -> None:
        self.id = sid
        self.cg = cg
        self.lru = lru
        #: weak cursor: which cgroup of subtree(self) to scan next (starts at self)
        self.next_cg: SgxCgroup = self
        #: ``reclaim_work`` is queued on ``sgx_cg_wq`` and not yet started
        self.work_pending = False
        #: the work function is running (suspended at a yield point)
        self.work_running = False
        #: EPC pages charged to exactly this cgroup (each holds a css reference)
        self.nr_pages = 0
        self.nr_evicted = 0
        self.nr_reclaim_batches = 0
        self.nr_enomem = 0
        #: enclave faults resolved (sgx_vma_fault) for tasks charging this cgroup
        self.nr_faults = 0
        #: EPC pages freed and uncharged from this cgroup's subtree (hierarchical)
        self.nr_freed = 0
        #: pages of this cgroup's subtree whose accessed bit sgx_reclaimer_age() cleared
        #: (rotated young: the next pass may evict them; hierarchical)
        self.nr_aged = 0
        #: pages evicted from its LRU by each reclaimer kind (RECLAIM_* index)
        self.nr_reclaimed_by = [0, 0, 0, 0]
        #: pages isolated from its LRU by phase 1 of sgx_reclaim_pages()
        self.nr_scanned = 0
        #: pages put back to its LRU tail by phase 2 of sgx_reclaim_pages()
        self.nr_rotated = 0
        #: ELDUs of pages charged to it
        self.nr_eldu = 0
        #: OOM kills caused by backing charges of reclaim batches on its LRU
        self.nr_oom_kills = 0
        #: the rfc-knobs extension's state (epcsim.kernel.rfc_knobs.RfcCgroup) or None
        self.rfc = None

    def __repr__(self) -> str:
        return f"<SgxCgroup #{self.id} {self.cg.path()}>"


def sgx_cgroup_from_misc_cg(cg: MiscCg) -> SgxCgroup:
    """Models sgx_cgroup_from_misc_cg()."""
    sgx_cg = cg.priv
    assert sgx_cg is not None
    return sgx_cg


def sgx_get_current_cg(host: Host, task: Task) -> SgxCgroup:
    """Models sgx_get_current_cg(): the task's effective misc css, referenced.

    With misc disabled (``host.misc_enabled`` False) every task resolves to the root.
    """
    cg = host.task_misc_cg(task)
    css_get(cg)
    return sgx_cgroup_from_misc_cg(cg)


def sgx_put_cg(host: Host, sgx_cg: SgxCgroup) -> None:
    """Models sgx_put_cg(): css_put() on the cgroup's misc css."""
    css_put(sgx_cg.cg)


def sgx_cgroup_uncharge(host: Host, sgx_cg: SgxCgroup) -> None:
    """Models sgx_cgroup_uncharge(): misc_cg_uncharge(sgx_epc, cg, PAGE_SIZE)."""
    misc_cg_uncharge(sgx_cg.cg, PAGE_SIZE)


# --- iteration over a subtree (v16 patch 9, v17 fix) ------------------------------------


def _preorder_successor(root: MiscCg, c: MiscCg) -> MiscCg | None:
    """``css_next_descendant_pre(c, root)``: first child, else next sibling, else an
    ancestor's next sibling, within subtree(root); None past the end."""
    if c.children:
        return c.children[0]
    while c is not root:
        parent = c.parent
        assert parent is not None
        sibs = parent.children
        k = sibs.index(c) + 1
        if k < len(sibs):
            return sibs[k]
        c = parent
    return None


def sgx_cgroup_next_desc_pre(root: SgxCgroup, c: SgxCgroup) -> SgxCgroup:
    """Models sgx_cgroup_next_desc_pre() with the v17 fix (v16 patch 9; v17 of the same).

    Returns the next cgroup after *c* in a preorder walk of subtree(*root*) whose css
    reference could be taken (the reference is held by the caller), or *root* (no
    reference) past the end.  v16 as posted recomputed the successor from *c* instead of
    the last candidate, looping forever on one dying successor; this is the fixed walk.
    """
    rcg = root.cg
    n = c.cg
    while True:
        n = _preorder_successor(rcg, n)
        if n is None:
            return root
        if css_tryget(n):
            return sgx_cgroup_from_misc_cg(n)


def sgx_cgroup_next_get(host: Host, root: SgxCgroup) -> SgxCgroup:
    """Models sgx_cgroup_next_get() (v16 patch 9): the cgroup to scan next for a reclaim
    rooted at *root*, referenced unless it is *root*; advances ``root.next_cg``.

    Context: under ``root.next_cg_lock`` (atomic in the model).
    """
    p = root.next_cg
    if p is not root and not css_tryget(p.cg):
        p = sgx_cgroup_next_desc_pre(root, p)
    nxt = sgx_cgroup_next_desc_pre(root, p)
    root.next_cg = nxt
    if nxt is not root:
        # the cursor holds no reference
        css_put(nxt.cg)
    return p


def sgx_cgroup_next_skip(host: Host, root: SgxCgroup, dying: SgxCgroup) -> None:
    """Models sgx_cgroup_next_skip(): move *root*'s cursor off a cgroup being freed."""
    if root.next_cg is not dying:
        return
    nxt = sgx_cgroup_next_desc_pre(root, dying)
    if root.next_cg is dying:
        root.next_cg = nxt
    if nxt is not root:
        css_put(nxt.cg)


def sgx_cgroup_lru_empty(host: Host, root: MiscCg) -> bool:
    """Models sgx_cgroup_lru_empty(): True iff every LRU in subtree(*root*) is empty.

    The kernel walks the subtree (skipping css whose reference cannot be taken, the
    v14+ behaviour) and stops at the first non-empty LRU.  For the root the model uses
    the host's count of pages on all LRUs, which gives the same answer in O(1).
    """
    pol = host.policy
    if pol is not None and pol.lru_empty is not None:
        return pol.lru_empty(host, root)
    if root.parent is None:
        return host.nr_lru_pages == 0
    stack = [root]
    while stack:
        c = stack.pop()
        if c.freed:
            continue
        if c.priv is not None and c.priv.lru.nr:
            return False
        stack.extend(c.children)
    return True


# --- charge (v16 patches 9, 10) ---------------------------------------------------------


def _sgx_cgroup_try_charge(host: Host, task: Task, sgx_cg: SgxCgroup) -> int:
    """Models __sgx_cgroup_try_charge(): one charge attempt.

    Returns: 0 charged; -ENOMEM if the charge failed and subtree(cg) has nothing on any
    LRU; -ERESTARTSYS if a signal is pending; -EBUSY otherwise (or -EINVAL from misc).
    """
    ret = misc_cg_try_charge(sgx_cg.cg, PAGE_SIZE)
    if ret != -EBUSY:
        return ret
    if sgx_cgroup_lru_empty(host, sgx_cg.cg):
        pol = host.policy
        if pol is not None and pol.nothing_reclaimable is not None:
            ret = pol.nothing_reclaimable(host, task, sgx_cg)
            if ret == -ENOMEM:
                sgx_cg.nr_enomem += 1
            return ret
        sgx_cg.nr_enomem += 1
        return -ENOMEM
    if task.signal_pending:
        return -ERESTARTSYS
    return -EBUSY


def sgx_cgroup_try_charge(
    host: Host,
    task: Task,
    sgx_cg: SgxCgroup,
    reclaim: int,
    *,
    first: int | None = None,
    resume: SgxAllocEpcPageState | None = None,
) -> Generator[str, None, int]:
    """Models sgx_cgroup_try_charge() (v16 patch 9, NO_RECLAIM by v16 patch 10).

    Repeats one charge attempt; while it is -EBUSY, NO_RECLAIM queues the cgroup's
    async work and returns -EBUSY, DO_RECLAIM reclaims one batch from subtree(cg)
    (``nr_to_scan`` 1, charge_mm = current mm) and yields (``cond_resched``).  Every
    failed attempt counts a ``max`` event at the failing level.

    Args:
        first: the result of a first attempt the caller already made, if any.

    Returns: 0, -ENOMEM, -ERESTARTSYS, -EBUSY (NO_RECLAIM only), -EINVAL.

    With a policy (:mod:`epcsim.kernel.hooks`): the loop is one "sync" episode; the
    policy's ``try_charge`` hook, if set, runs instead of the loop.

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`; the series' v16
    without episodes) continues a loop stopped inside its reclaim (``resume.reclaim``)
    or at its ``cond_resched()`` (``resume.reclaim`` None).
    """
    episode = None
    pol = host.policy
    if resume is not None:
        if resume.reclaim is not None:
            yield from sgx_cgroup_reclaim_pages(
                host, sgx_cg, task, 1, resume=resume.reclaim, by=RECLAIM_SYNC
            )
            yield "cond_resched"
    elif logging_episodes(host):
        episode = Episode("sync", sgx_cg)
        if pol is not None and pol.try_charge is not None:
            gen = pol.try_charge(host, task, sgx_cg, reclaim, first, episode)
            if host.episode_log is not None:
                gen = run_in_episode(host, gen, episode)
            ret = yield from gen
            episode_end(host, episode)
            return ret
    while True:
        if first is None:
            ret = _sgx_cgroup_try_charge(host, task, sgx_cg)
        else:
            ret, first = first, None
        if ret != -EBUSY:
            episode_end(host, episode)
            return ret
        if reclaim == SGX_NO_RECLAIM:
            queue_work(host, sgx_cg)
            episode_end(host, episode)
            return -EBUSY
        yield from sgx_cgroup_reclaim_pages(host, sgx_cg, task, 1, episode=episode, by=RECLAIM_SYNC)
        yield "cond_resched"


# --- reclaim (v16 patches 9, 10, 12, 13) ------------------------------------------------


def sgx_cgroup_reclaim_pages(
    host: Host,
    root: SgxCgroup,
    charge_task: Task | None,
    nr_to_scan: int,
    *,
    resume: SgxCgroupReclaimPagesState | None = None,
    episode: Episode | None = None,
    by: int = RECLAIM_SYNC,
    track: ReclaimerTrack | None = None,
) -> Generator[str, None, int]:
    """Models sgx_cgroup_reclaim_pages() (v16 patch 9).

    Runs ``sgx_reclaim_pages()`` on one cgroup LRU of subtree(*root*) after another,
    in the rotating preorder of ``root.next_cg``, until *nr_to_scan* pages were
    isolated or every LRU of the subtree is empty.

    Args:
        charge_task: whose mm's memcg pays for backing (None: the enclave's first mm).
        by: who reclaims (``RECLAIM_*``; model statistics only, not a kernel argument).

    Returns: the number of pages isolated (with a live enclave reference).

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`): the loop stopped
    inside ``sgx_reclaim_pages()`` on ``resume.c`` (where: ``resume.batch``) with
    ``resume.cnt`` pages counted before it.  ``track`` (engine take-over only, the
    inverse): ``cnt`` and ``c`` before each batch, passed down to ``sgx_reclaim_pages()``
    and to a policy's hook that tracks (``Policy.tracks_reclaim``).

    ``episode`` (with a policy or the episode log only, :mod:`epcsim.kernel.hooks`): the
    caller's reclaim episode (None: one for this call alone); the policy's
    ``reclaim_pages`` hook, if set, runs instead of the loop (resumed too: with
    ``resume``, the hook's call continues from it).

    With the rfc-knobs extension (:mod:`epcsim.kernel.rfc_knobs`, in no kernel) a cgroup
    below its effective ``sgx_epc.low`` is skipped while an unprotected one has pages.
    """
    cnt = 0
    own = False  # the episode is this call's alone
    if resume is None and logging_episodes(host):
        own = episode is None
        if episode is None:
            episode = Episode("direct", root)
        log = host.episode_log
        if log is not None and episode.calls == 0:
            log.begin(host, episode)
        episode.calls += 1
        pol = host.policy
        if pol is not None and pol.reclaim_pages is not None:
            kw = {"track": track} if track is not None and pol.tracks_reclaim else {}
            gen = pol.reclaim_pages(host, root, charge_task, nr_to_scan, episode, **kw)
            # its sgx_reclaim_pages() calls count into the episode and its kind
            cnt = yield from run_in_episode(host, gen, episode)
            episode.isolated += cnt
            if own:
                episode_end(host, episode)
            return cnt
    if resume is not None and episode is not None:
        pol = host.policy
        if pol is not None and pol.reclaim_pages is not None:
            # the hook's own call, resumed (the hooks the compiled engine runs take resume=)
            kw = {"track": track} if track is not None and pol.tracks_reclaim else {}
            gen = pol.reclaim_pages(
                host, root, charge_task, nr_to_scan, episode, resume=resume, **kw
            )
            cnt = yield from run_in_episode(host, gen, episode)
            episode.isolated += cnt
            return cnt
    if resume is not None:
        cnt, c = resume.cnt, resume.c
        if track is not None:
            track.cnt, track.c = cnt, c
        cnt += yield from _reclaim.sgx_reclaim_pages(
            host, c, charge_task, resume=resume.batch, by=by, track=track
        )
        if c is not root:
            sgx_put_cg(host, c)
    rfc = host.rfc
    while cnt < nr_to_scan and not sgx_cgroup_lru_empty(host, root.cg):
        c = sgx_cgroup_next_get(host, root)
        if rfc is not None and _rfc_knobs.sgx_cgroup_skip_protected(host, root, c):
            # rfc-knobs (in no kernel): c is below its effective sgx_epc.low
            if c is not root:
                sgx_put_cg(host, c)
            continue
        if track is not None:
            track.cnt, track.c = cnt, c
        cnt += yield from _reclaim.sgx_reclaim_pages(
            host, c, charge_task, episode=episode, by=by, track=track
        )
        if c is not root:
            sgx_put_cg(host, c)
    if episode is not None and resume is None:
        episode.isolated += cnt
        if own:
            episode_end(host, episode)
    return cnt


def sgx_cgroup_max_pages_to_root(sgx_cg: SgxCgroup) -> int:
    """Models sgx_cgroup_max_pages_to_root(): min of floor(max/4096) up to the root."""
    m = None
    i: MiscCg | None = sgx_cg.cg
    while i is not None:
        v = i.max // PAGE_SIZE
        if m is None or v < m:
            m = v
        i = i.parent
    assert m is not None
    return m


def sgx_cgroup_should_reclaim(host: Host, sgx_cg: SgxCgroup) -> bool:
    """Models sgx_cgroup_should_reclaim() (v16 patch 10).

    True iff subtree(cg) has something on an LRU and cg's *own* usage (pages) reaches
    the smallest limit up to the root, less SGX_CG_MIN_FREE_PAGE unless that limit is
    at most SGX_CG_LOW_LIMIT.  A policy's ``should_reclaim`` hook decides instead.
    """
    pol = host.policy
    if pol is not None and pol.should_reclaim is not None:
        return pol.should_reclaim(host, sgx_cg)
    if sgx_cgroup_lru_empty(host, sgx_cg.cg):
        return False
    limit = sgx_cgroup_max_pages_to_root(sgx_cg)
    if limit > SGX_CG_LOW_LIMIT:
        limit -= SGX_CG_MIN_FREE_PAGE
    return sgx_cg.cg.usage // PAGE_SIZE >= limit


def queue_work(host: Host, sgx_cg: SgxCgroup) -> bool:
    """Models queue_work(sgx_cg_wq, &sgx_cg->reclaim_work).

    Returns: True if queued, False if it was already pending (no-op).  The work runs
    when the simulator (or a test) calls :func:`sgx_cgroup_reclaim_work_func`; the
    queue is ``host.sgx_cg_wq`` (FIFO).
    """
    if sgx_cg.work_pending or sgx_cg.cg.freed:
        return False
    sgx_cg.work_pending = True
    host.sgx_cg_wq.append(sgx_cg)
    return True


def sgx_cg_wq_take_runnable(host: Host) -> list[SgxCgroup]:
    """The queued work items a ``sgx_cg_wq`` worker may start now, oldest first.

    Models the workqueue's non-reentrancy: an item whose work function is still
    running stays queued until it returns.
    """
    runnable, waiting = [], []
    wq = host.sgx_cg_wq
    while wq:
        sgx_cg = wq.popleft()
        (waiting if sgx_cg.work_running else runnable).append(sgx_cg)
    wq.extend(waiting)
    return runnable


def sgx_cgroup_reclaim_work_func(
    host: Host,
    sgx_cg: SgxCgroup,
    *,
    resume: ReclaimerState | None = None,
    track: ReclaimerTrack | None = None,
) -> Generator[str, None, None]:
    """Models sgx_cgroup_reclaim_work_func() (v16 patch 10), as run by a wq worker.

    The work's PENDING bit is cleared when it starts (so it may be queued again while
    running).  Loops while ``sgx_cgroup_should_reclaim()``: reclaims 16 pages from
    subtree(cg) with no charge mm, yields.  Stops at once if the cgroup was freed
    (``cancel_work_sync()`` in the free callback).

    ``resume`` (engine hand-over only, :mod:`epcsim.kernel.resume`) continues a running
    work function stopped inside its reclaim (``resume.reclaim``) or at its
    ``cond_resched()`` (``resume.reclaim`` None).  ``track`` (engine take-over only,
    :class:`~epcsim.kernel.resume.ReclaimerTrack`): where the run stops, written before
    each yield and at the return, with the run's episode.
    """
    if resume is None:
        sgx_cg.work_pending = False
    sgx_cg.work_running = True
    episode = None
    if resume is not None and resume.episode is not None:
        episode = resume.episode  # the run's episode, resumed (its policy state kept)
    elif logging_episodes(host):
        episode = Episode("async", sgx_cg)
    if track is not None:
        track.episode = episode
    try:
        if resume is not None and resume.reclaim is not None:
            yield from sgx_cgroup_reclaim_pages(
                host,
                sgx_cg,
                None,
                SGX_NR_TO_SCAN,
                resume=resume.reclaim,
                episode=episode,
                by=RECLAIM_ASYNC,
                track=track,
            )
            if track is not None:
                track.at = _resume.TRACK_RESCHED
            yield "cond_resched"
        while not sgx_cg.cg.freed and sgx_cgroup_should_reclaim(host, sgx_cg):
            yield from sgx_cgroup_reclaim_pages(
                host, sgx_cg, None, SGX_NR_TO_SCAN, episode=episode, by=RECLAIM_ASYNC, track=track
            )
            if track is not None:
                track.at = _resume.TRACK_RESCHED
            yield "cond_resched"
        episode_end(host, episode)
    finally:
        sgx_cg.work_running = False
        if track is not None:
            track.at = _resume.TRACK_RETURNED


def sgx_cgroup_reclaim_direct(host: Host, task: Task) -> Generator[str, None, None]:
    """Models sgx_cgroup_reclaim_direct() (v16 patch 13): one 16-page
    pass over subtree(current cg) if it should reclaim, charging current's mm."""
    sgx_cg = sgx_get_current_cg(host, task)
    if sgx_cgroup_should_reclaim(host, sgx_cg):
        episode = Episode("direct", sgx_cg) if logging_episodes(host) else None
        yield from sgx_cgroup_reclaim_pages(
            host, sgx_cg, task, SGX_NR_TO_SCAN, episode=episode, by=RECLAIM_DIRECT
        )
        episode_end(host, episode)
    sgx_put_cg(host, sgx_cg)


def sgx_cgroup_reclaim_pages_global(
    host: Host,
    charge_task: Task | None,
    *,
    episode: Episode | None = None,
    by: int = RECLAIM_KSGXD,
) -> Generator[str, None, int]:
    """Models sgx_cgroup_reclaim_pages_global() (patch 12): a 16-page rotating reclaim
    rooted at the root cgroup, i.e. over every cgroup (*by*: who reclaims, model
    statistics)."""
    return (
        yield from sgx_cgroup_reclaim_pages(
            host, host.sgx_cg_root, charge_task, SGX_NR_TO_SCAN, episode=episode, by=by
        )
    )


# --- misc callbacks (patch 02 / 09 / 10) ------------------------------------------------


def sgx_cgroup_misc_alloc(host: Host, cg: MiscCg) -> int:
    """Models sgx_cgroup_misc_alloc(): allocate the ``struct sgx_cgroup`` of a css."""
    host.new_sgx_cgroup(cg)
    return 0


def sgx_cgroup_misc_free(host: Host, cg: MiscCg) -> None:
    """Models sgx_cgroup_misc_free() (v16 patch 9): cancel the work, move every
    ancestor's cursor off the dying cgroup (successor computed as if it were still in
    place), free the struct."""
    sgx_cg = cg.priv
    if sgx_cg is None:
        return
    # cancel_work_sync(): a pending item is dropped; a running one finds cg.freed.
    if sgx_cg.work_pending:
        sgx_cg.work_pending = False
        with contextlib.suppress(ValueError):
            host.sgx_cg_wq.remove(sgx_cg)
    p = cg.parent
    while p is not None:
        if p.priv is not None:
            sgx_cgroup_next_skip(host, p.priv, sgx_cg)
        p = p.parent
    host.free_sgx_cgroup(sgx_cg)


# Cycle-safe late import: reclaim -> encl -> epc -> epc_cgroup.
from . import reclaim as _reclaim  # noqa: E402
from . import resume as _resume  # noqa: E402
from . import rfc_knobs as _rfc_knobs  # noqa: E402
