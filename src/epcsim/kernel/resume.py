"""Engine hand-over only: where a reclaimer stopped, as the kernel functions resume it.

The kernel model's reclaimers are generators that yield between the phases of
``sgx_reclaim_pages()`` (main.c; v16 patch 8) and at each ``cond_resched()``.  The
compiled engine (:mod:`epcsim.compiled.engine`) runs ksgxd and the ``sgx_cg_wq``
workers in its own event loop; when it hands the run back it must put each reclaimer
back where it stopped.  The states below say exactly that, and the kernel functions
take them through a keyword ``resume=`` that nothing else passes:

- ``sgx_reclaim_pages(host, sgx_cg, charge_task, resume=SgxReclaimPagesState)``
- ``sgx_cgroup_reclaim_pages(host, root, charge_task, nr_to_scan,
  resume=SgxCgroupReclaimPagesState)`` (v16 patch 9), and through it
  ``sgx_reclaim_pages_global(host, charge_task, resume=...)`` (v16 patch 14)
- ``ksgxd_step(host, resume=ReclaimerState)`` (the body of ``ksgxd()``, v16 patch 14)
- ``sgx_cgroup_reclaim_work_func(host, sgx_cg, resume=ReclaimerState)`` (v16 patch 10)
- ``sgx_cgroup_try_charge(host, task, sgx_cg, reclaim, resume=SgxAllocEpcPageState)``,
  ``sgx_alloc_epc_page(..., resume=SgxAllocEpcPageState)``,
  ``sgx_encl_add_page(..., resume=SgxEnclAddPageState)`` and
  ``ioc_enclave_add_pages(..., run=SgxAddPagesRun)``: an enclave's EADD build

Resumed, each function runs the rest of what it was doing when it stopped, step for
step as if it had never stopped, and returns what it would have returned.  No state
here holds a generator or anything of the engine: only where, and the kernel objects
and counts the kernel's locals held there.

The inverse, for the take-over: a running ksgxd or work function carries a
:class:`ReclaimerTrack` (keyword ``track=``, passed down through
``sgx_reclaim_pages_global()``, ``sgx_cgroup_reclaim_pages()``, the v14 and v13
``reclaim_pages`` hooks and ``sgx_reclaim_pages()``), which each of them updates before
every yield: where the generator is suspended, and the same locals.  The compiled engine
reads it to take a busy reclaimer over at the stage it stopped at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .epc_cgroup import SgxCgroup
    from .hooks import Episode

__all__ = [
    "ReclaimerState",
    "ReclaimerTrack",
    "SgxAddPagesRun",
    "SgxAllocEpcPageState",
    "SgxCgroupReclaimPagesState",
    "SgxEnclAddPageState",
    "SgxReclaimPagesState",
    "TRACK_START",
    "TRACK_RECLAIM",
    "TRACK_RESCHED",
    "TRACK_RETURNED",
]

#: ReclaimerTrack.at: not started (or ksgxd between two iterations of its loop)
TRACK_START = "start"
#: .. inside sgx_reclaim_pages(), after one of its phases (ReclaimerTrack.phase next)
TRACK_RECLAIM = "reclaim"
#: .. at the cond_resched() that follows a reclaim
TRACK_RESCHED = "cond_resched"
#: .. the kernel function returned (ReclaimerTrack.busy: ksgxd_step()'s value)
TRACK_RETURNED = "returned"


@dataclass(frozen=True, slots=True)
class SgxReclaimPagesState:
    """``sgx_reclaim_pages()`` stopped at one of its yield points.

    Attributes:
        phase: the phase to run next: 2 (after ``"reclaim:isolated"``: age test and
            backing), 3 (after ``"reclaim:aged"``: block) or 4 (after
            ``"reclaim:blocked"``: write back and free).
        pages: the EPC page numbers the batch holds: those isolated in phase 1 (for
            phase 2), those kept by phase 2 (for phases 3 and 4).
        cnt: the pages isolated in phase 1 with a live enclave reference: what the
            function returns.
    """

    phase: int
    pages: list[int]
    cnt: int


@dataclass(frozen=True, slots=True)
class SgxCgroupReclaimPagesState:
    """``sgx_cgroup_reclaim_pages()`` stopped inside ``sgx_reclaim_pages()`` on one
    cgroup of its subtree.

    Attributes:
        cnt: the pages counted before that batch (the loop's ``cnt``).
        c: the cgroup whose LRU the batch reclaims (``sgx_cgroup_next_get()``'s result:
            a css reference is held on it unless it is the root, dropped after the batch).
        batch: where that batch stopped.
    """

    cnt: int
    c: SgxCgroup
    batch: SgxReclaimPagesState


@dataclass(frozen=True, slots=True)
class ReclaimerState:
    """ksgxd's loop body or a running ``sgx_cgroup_reclaim_work_func()`` stopped
    mid-iteration.

    Attributes:
        reclaim: where its ``sgx_cgroup_reclaim_pages()`` stopped (rooted at the root
            for ksgxd, at the work item's cgroup for a worker, 16 pages); None: it
            stopped at the ``cond_resched()`` that follows the reclaim.
    """

    reclaim: SgxCgroupReclaimPagesState | None = None
    #: a worker's reclaim episode (with a policy, :mod:`epcsim.kernel.hooks`): the one
    #: the work function was in, with the policy's state (v14's caller-held cursor);
    #: None: a new one.  ksgxd's episode lives in ``host.ksgxd_episode``.
    episode: Episode | None = None


@dataclass(slots=True)
class ReclaimerTrack:
    """Engine take-over only: where a running ksgxd (its ``ksgxd_step()``) or a
    ``sgx_cg_wq`` worker (``sgx_cgroup_reclaim_work_func()``) is suspended, written by
    the kernel functions before each of their yields (``track=``).  The state a
    :class:`ReclaimerState` gives back at hand-over, read at take-over.

    Attributes:
        kind: ``RECLAIM_KSGXD`` or ``RECLAIM_ASYNC`` (:mod:`epcsim.kernel.epc_cgroup`).
        sgx_cg: a worker's cgroup (None: ksgxd).
        at: ``TRACK_START``, ``TRACK_RECLAIM``, ``TRACK_RESCHED`` or ``TRACK_RETURNED``.
        busy: at ``TRACK_RETURNED``, what ``ksgxd_step()`` returned (True: it goes on).
        cnt, c: at ``TRACK_RECLAIM``, ``sgx_cgroup_reclaim_pages()``'s (or the v14 / v13
            hook's) count before the batch and the cgroup whose LRU the batch reclaims.
        phase, pages, batch_cnt: at ``TRACK_RECLAIM``, ``sgx_reclaim_pages()``'s next
            phase (2, 3 or 4), the pages its batch holds and its return value (as
            :class:`SgxReclaimPagesState`).
        episode: a worker's reclaim episode (with a policy; v14's cursor), None: none.
    """

    kind: int
    sgx_cg: SgxCgroup | None = None
    at: str = TRACK_START
    busy: bool = False
    cnt: int = 0
    c: SgxCgroup | None = None
    phase: int = 0
    pages: list[int] = field(default_factory=list)
    batch_cnt: int = 0
    episode: Episode | None = None

    def batch(self, phase: int, pages: list[int], cnt: int) -> None:
        """``sgx_reclaim_pages()`` stops before *phase* with *pages*, to return *cnt*."""
        self.at, self.phase, self.pages, self.batch_cnt = TRACK_RECLAIM, phase, pages, cnt

    def resuming(self, state: ReclaimerState | None) -> ReclaimerTrack:
        """The track of a reclaimer that resumes from *state* (a hand-over's; None: a
        fresh one, at its start): where it is before its first step."""
        if state is None:
            return self
        self.episode = state.episode
        rc = state.reclaim
        if rc is None:
            self.at = TRACK_RESCHED
        else:
            self.cnt, self.c = rc.cnt, rc.c
            self.batch(rc.batch.phase, rc.batch.pages, rc.batch.cnt)
        return self


@dataclass(frozen=True, slots=True)
class SgxAllocEpcPageState:
    """``sgx_alloc_epc_page()`` with ``SGX_DO_RECLAIM`` (main.c; v16 patch 5) stopped at a
    yield point of its reclaim.

    Attributes:
        sgx_cg: the cgroup it charges (``sgx_get_current_cg()`` at its start; the css
            reference taken there is held).
        charged: False: inside ``sgx_cgroup_try_charge()``'s loop (its synchronous
            reclaim of subtree(*sgx_cg*), one page); True: charged, inside the
            allocation loop's global reclaim (``sgx_reclaim_pages_global()``, 16 pages).
        reclaim: where that ``sgx_cgroup_reclaim_pages()`` stopped; None: at the
            ``cond_resched()`` that follows it.
    """

    sgx_cg: SgxCgroup
    charged: bool
    reclaim: SgxCgroupReclaimPagesState | None = None


@dataclass(frozen=True, slots=True)
class SgxEnclAddPageState:
    """``sgx_encl_add_page()`` (ioctl.c) stopped inside one of its DO_RECLAIM
    allocations.

    Attributes:
        page: the enclave page already allocated, -1 if *alloc* is its own allocation;
            else *alloc* is that of the VA page of ``sgx_encl_grow()``.
        alloc: where that allocation stopped.
    """

    page: int
    alloc: SgxAllocEpcPageState


@dataclass(slots=True)
class SgxAddPagesRun:
    """The ``SGX_IOC_ENCLAVE_ADD_PAGES`` loop of ``sgx_ioc_enclave_add_pages()``
    (ioctl.c) as a position outside its generator: the ioctl writes it before each
    yield at a page's end, the compiled engine reads it when it takes a build over and
    writes it when it hands the build back (then the ioctl goes on from it).

    Attributes:
        entered: the ioctl has entered the kernel and checked its arguments (a resumed
            ioctl does neither again).
        c: the bytes added so far (the loop's ``c``).
        between: the ioctl stopped at the ``cond_resched()`` after a page (where a build
            is taken over).
        page: where the page being added stopped (None: at a page's end).
        epoch: which generator is the ioctl's: the compiled engine adds 1 when it takes
            the build over, so the generator it drops does not leave the kernel.
        offset, length, page_type, measure: the ioctl's arguments (set when it enters).
    """

    entered: bool = False
    c: int = 0
    between: bool = False
    page: SgxEnclAddPageState | None = None
    epoch: int = 0
    offset: int = 0
    length: int = 0
    page_type: int = 0
    measure: bool = False
