"""The RFC's knobs and the missing observability (``[host] extensions = ["rfc-knobs"]``).

**In no kernel.**  The series (v16, 2024-08) gives the EPC controller one knob,
``misc.max``, and one event, ``misc.events``; its reviews asked how a tenant is protected,
throttled, reclaimed on demand and observed.  This opt-in extension answers with files
modelled on cgroup v2's memory controller (``mm/memcontrol.c``, ``mm/page_counter.c``,
``kernel/sched/psi.c``; ``Documentation/admin-guide/cgroup-v2.rst``), in every non-root
cgroup where misc is enabled:

=====================  ===================================================================
``sgx_epc.low``        RW, bytes or ``max`` (default 0): best-effort protection
                       (``memory.low``); reclaim skips a cgroup below its effective low
                       unless nothing unprotected is reclaimable in the scope (then a
                       ``low`` event)
``sgx_epc.high``       RW, bytes or ``max`` (default ``max``): throttle limit
                       (``memory.high``); a fault that resolves over it reclaims the
                       overage and may sleep a penalty; never fails a charge
``sgx_epc.reclaim``    W: ``N`` bytes (memparse units): proactive reclaim
                       (``memory.reclaim``), EAGAIN if short
``sgx_epc.events``     RO: ``low N`` / ``high N`` (hierarchical, as ``memory.events``)
``sgx_epc.stat``       RO: pages reclaimed by ksgxd / async work / sync charge / direct,
                       scanned, rotated, ELDU loads, OOM kills, counted against the
                       cgroup whose LRU the page came from (local to the cgroup)
``sgx_epc.pressure``   RO: PSI ``some`` / ``full`` lines (``kernel/sched/psi.c``) for
                       enclave threads stalled in an EPC fault or its retries
=====================  ===================================================================

Protection (``low``) applies to the series' v16 reclaim loop only: another policy
(:mod:`epcsim.policies`) ignores it (its loop is its own).  ``high``, ``reclaim``, the
counters and PSI work under every policy (they go through
``sgx_cgroup_reclaim_pages()``, which a policy may replace).

Deliberate differences from memcg (docs/RFC_KNOBS.md): protection is all or nothing per
visit (memcg also scales the scan of a partly protected cgroup); over ``high`` the
faulting thread reclaims the whole overage (memcg reclaims the charged batch); the charge
that counts as "over high" is the resolved fault's page; PSI's averages are sampled every
2 s of virtual time from t = 0, one ``calc_load()`` per period.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from .constants import PAGE_COUNTER_MAX, PAGE_SIZE

if TYPE_CHECKING:
    from .cgroup import Cgroup
    from .epc_cgroup import SgxCgroup
    from .host import Host, Task
    from .misc import MiscCg

__all__ = [
    "EXTENSIONS",
    "RfcCgroup",
    "RfcKnobs",
    "PsiGroup",
    "rfc_knobs_enable",
    "effective_protection",
    "sgx_cgroup_elow",
    "sgx_cgroup_below_low",
    "sgx_cgroup_skip_protected",
    "calculate_overage",
    "calculate_high_delay",
    "sgx_cgroup_find_max_overage",
    "sgx_cgroup_over_high",
    "sgx_cgroup_handle_over_high",
    "sgx_cgroup_high_write",
    "sgx_cgroup_reclaim_write",
    "sgx_cgroup_stat_show",
    "psi_task_change",
    "psi_show",
    "calc_load",
    "rfc_summary",
]

#: the extensions a scenario may name in ``[host] extensions``
EXTENSIONS = ("rfc-knobs",)

#: mm/memcontrol.c: reclaim attempts that may fail before memory.reclaim gives up
MAX_RECLAIM_RETRIES = 16
#: include/linux/memcontrol.h (64 since v6.1): the nominal charge of calculate_high_delay()
MEMCG_CHARGE_BATCH = 64
#: mm/memcontrol.c, calculate_overage() / calculate_high_delay()
MEMCG_DELAY_PRECISION_SHIFT = 20
MEMCG_DELAY_SCALING_SHIFT = 14
#: the model's CONFIG_HZ (jiffies per second)
HZ = 1000
#: mm/memcontrol.c: the most one return to user space sleeps over memory.high (2 s)
MEMCG_MAX_HIGH_DELAY_JIFFIES = 2 * HZ
NSEC_PER_JIFFY = 1_000_000_000 // HZ

#: kernel/sched/psi.c: the averaging period (PSI_FREQ, 2 s; the model: exactly 2 s)
PSI_PERIOD_NS = 2_000_000_000
#: include/linux/sched/loadavg.h: fixed-point of calc_load()
FSHIFT = 11
FIXED_1 = 1 << FSHIFT
#: kernel/sched/psi.c: 1/exp(2s/10s), 1/exp(2s/60s), 1/exp(2s/300s) as fixed-point
EXP_10s = 1677
EXP_60s = 1981
EXP_300s = 2034
_EXPS = (EXP_10s, EXP_60s, EXP_300s)


class RfcCgroup:
    """The extension's state of one ``struct sgx_cgroup`` (pages; ``high`` and ``low``
    as ``memory.high`` / ``memory.low`` in ``struct page_counter``)."""

    __slots__ = ("low", "high", "events_low", "events_high")

    def __init__(self) -> None:
        self.low = 0
        self.high = PAGE_COUNTER_MAX
        self.events_low = 0
        self.events_high = 0


class PsiGroup:
    """Models the ``sgx_epc`` resource of a ``struct psi_group`` (kernel/sched/psi.c):
    task counts, the stall totals (ns) and the running averages (fixed-point)."""

    __slots__ = (
        "nonidle",
        "stalled",
        "since",
        "period",
        "cur",
        "total",
        "avg",
    )

    def __init__(self) -> None:
        #: enclave threads of the subtree started and not ended
        self.nonidle = 0
        #: .. of them stalled in an EPC fault (or its retries, or over high)
        self.stalled = 0
        #: the time the totals are accounted to
        self.since = 0
        #: the index of the averaging period *since* is in
        self.period = 0
        #: stall ns of the current period: [some, full]
        self.cur = [0, 0]
        #: stall ns since the start: [some, full]
        self.total = [0, 0]
        #: [some, full] x [avg10, avg60, avg300], FIXED_1 = 1.00 %
        self.avg = [[0, 0, 0], [0, 0, 0]]


class RfcKnobs:
    """The host's extension state: ``host.rfc`` (None without the extension)."""

    def __init__(self) -> None:
        #: the virtual time (ns) reads of sgx_epc.pressure account to; the simulator
        #: sets it to its clock
        self.clock: Callable[[], int] = lambda: 0
        #: PSI groups of non-root cgroup directories
        self.psi: dict[Cgroup, PsiGroup] = {}
        #: some cgroup has a non-zero sgx_epc.low (else protection is skipped at once)
        self.any_low = False

    def psi_group(self, cgrp: Cgroup) -> PsiGroup:
        g = self.psi.get(cgrp)
        if g is None:
            g = self.psi[cgrp] = PsiGroup()
        return g


def rfc_knobs_enable(host: Host) -> RfcKnobs:
    """Turn the extension on for *host* (before any workload runs): ``host.rfc`` and an
    :class:`RfcCgroup` on every sgx_cgroup (new ones get theirs when allocated)."""
    host.rfc = RfcKnobs()
    for sgx_cg in host.sgx_cgroups:
        if sgx_cg is not None:
            sgx_cg.rfc = RfcCgroup()
    return host.rfc


def _rfc(sgx_cg: SgxCgroup) -> RfcCgroup:
    r = sgx_cg.rfc
    assert r is not None
    return r


def _usage(cg: MiscCg) -> int:
    """page_counter_read(): the subtree's charged EPC pages."""
    return cg.usage // PAGE_SIZE


def _memory_event(sgx_cg: SgxCgroup, name: str) -> None:
    """memcg_memory_event(): count in the cgroup and every non-root ancestor."""
    cg: MiscCg | None = sgx_cg.cg
    while cg is not None and cg.parent is not None:
        if cg.priv is not None and cg.priv.rfc is not None:
            r = cg.priv.rfc
            setattr(r, name, getattr(r, name) + 1)
        cg = cg.parent


# --- sgx_epc.low: effective protection (mm/memcontrol.c, mm/page_counter.c) ---------------


def effective_protection(
    usage: int, parent_usage: int, setting: int, parent_effective: int, siblings_protected: int
) -> int:
    """Models effective_protection() (mm/page_counter.c; mm/memcontrol.c before v6.10)
    without the ``memory_recursiveprot`` mount option.

    The protection of a cgroup is min(usage, setting); when all the children of its
    parent together claim (and use) more than the parent's effective protection, each
    gets a share in proportion: protected * parent_effective / siblings_protected.
    Claiming no more than the parent affords, a child keeps min(usage, setting), which
    is then at most the parent's: protection is capped by every ancestor.
    """
    protected = min(usage, setting)
    if siblings_protected > parent_effective:
        return protected * parent_effective // siblings_protected
    return protected


def _children_low_usage(parent: MiscCg) -> int:
    """``parent->memory.children_low_usage``: the sum over its live children of
    min(usage, low) (propagate_protected_usage())."""
    s = 0
    for ch in parent.children:
        if ch.freed or ch.priv is None or ch.priv.rfc is None:
            continue
        s += min(_usage(ch), ch.priv.rfc.low)
    return s


def sgx_cgroup_elow(root: SgxCgroup, sgx_cg: SgxCgroup) -> int:
    """Models the ``elow`` of mem_cgroup_calculate_protection(root, memcg): the
    effective low (pages) of *sgx_cg* in a reclaim of subtree(*root*).  The reclaim's
    root is unprotected (0); a child of the root keeps its own setting; deeper cgroups
    get :func:`effective_protection` of their parent's."""
    if sgx_cg is root:
        return 0
    usage = _usage(sgx_cg.cg)
    if not usage:
        return 0
    parent = sgx_cg.cg.parent
    assert parent is not None and parent.priv is not None
    low = _rfc(sgx_cg).low
    if parent.priv is root:
        return low
    return effective_protection(
        usage,
        _usage(parent),
        low,
        sgx_cgroup_elow(root, parent.priv),
        _children_low_usage(parent),
    )


def sgx_cgroup_below_low(root: SgxCgroup, sgx_cg: SgxCgroup) -> bool:
    """Models mem_cgroup_below_low(target, memcg): neither the host's root nor the
    reclaim's root is protected; else usage <= elow."""
    if sgx_cg is root or sgx_cg.cg.parent is None:
        return False
    usage = _usage(sgx_cg.cg)
    return usage > 0 and sgx_cgroup_elow(root, sgx_cg) >= usage


def _unprotected_reclaimable(host: Host, root: SgxCgroup) -> bool:
    """Some cgroup of subtree(*root*) not below its effective low has pages on its
    LRU."""
    stack = [root.cg]
    while stack:
        c = stack.pop()
        if c.freed:
            continue
        s = c.priv
        if s is not None and s.lru.nr and not sgx_cgroup_below_low(root, s):
            return True
        stack.extend(c.children)
    return False


def sgx_cgroup_skip_protected(host: Host, root: SgxCgroup, sgx_cg: SgxCgroup) -> bool:
    """The protection check of a reclaim of subtree(*root*) about to scan *sgx_cg*'s
    LRU (shrink_node_memcgs(), mm/vmscan.c): True (skip it) if it is below its
    effective low and some unprotected cgroup of the scope has pages on its LRU;
    reclaiming a protected cgroup anyway counts a ``low`` event on it and its
    ancestors."""
    rfc = host.rfc
    if rfc is None or not rfc.any_low or sgx_cg.rfc is None:
        return False
    if not sgx_cgroup_below_low(root, sgx_cg):
        return False
    if _unprotected_reclaimable(host, root):
        return True
    _memory_event(sgx_cg, "events_low")
    return False


# --- reclaim of a subtree, counted (try_to_free_mem_cgroup_pages()) -------------------------


def _subtree_evicted(cg: MiscCg) -> int:
    n = 0
    stack = [cg]
    while stack:
        c = stack.pop()
        if c.priv is not None:
            n += c.priv.nr_evicted
        stack.extend(c.children)
    return n


def _try_to_free_pages(
    host: Host, sgx_cg: SgxCgroup, task: Task | None, nr_pages: int
) -> Generator[str, None, int]:
    """Models try_to_free_mem_cgroup_pages() for the EPC: one
    ``sgx_cgroup_reclaim_pages()`` of subtree(*sgx_cg*) isolating *nr_pages*, counted
    as direct reclaim.  Returns the pages written back (reclaimed)."""
    from .epc_cgroup import RECLAIM_DIRECT, sgx_cgroup_reclaim_pages

    before = _subtree_evicted(sgx_cg.cg)
    yield from sgx_cgroup_reclaim_pages(host, sgx_cg, task, max(nr_pages, 1), by=RECLAIM_DIRECT)
    return _subtree_evicted(sgx_cg.cg) - before


# --- sgx_epc.high (mm/memcontrol.c) -----------------------------------------------------------


def calculate_overage(usage: int, high: int) -> int:
    """Models calculate_overage(): (usage - high) / high in 2^-20 units, 0 at or below
    high (a high of 0 counts as 1 page)."""
    if usage <= high:
        return 0
    high = max(high, 1)
    return ((usage - high) << MEMCG_DELAY_PRECISION_SHIFT) // high


def sgx_cgroup_find_max_overage(sgx_cg: SgxCgroup) -> int:
    """Models mem_find_max_overage(): the largest overage of the cgroup and its
    ancestors below the root."""
    m = 0
    cg: MiscCg | None = sgx_cg.cg
    while cg is not None and cg.parent is not None:
        if cg.priv is not None and cg.priv.rfc is not None:
            m = max(m, calculate_overage(_usage(cg), cg.priv.rfc.high))
        cg = cg.parent
    return m


def calculate_high_delay(nr_pages: int, max_overage: int) -> int:
    """Models calculate_high_delay(): jiffies to sleep, overage^2 * HZ scaled down by
    2^(20+14), times the pages charged over high / MEMCG_CHARGE_BATCH (not capped here;
    the caller caps at MEMCG_MAX_HIGH_DELAY_JIFFIES)."""
    if not max_overage:
        return 0
    penalty = max_overage * max_overage * HZ
    penalty >>= MEMCG_DELAY_PRECISION_SHIFT
    penalty >>= MEMCG_DELAY_SCALING_SHIFT
    return penalty * nr_pages // MEMCG_CHARGE_BATCH


def sgx_cgroup_over_high(sgx_cg: SgxCgroup) -> bool:
    """The cgroup or a non-root ancestor is above its sgx_epc.high (try_charge_memcg()'s
    test that sets ``memcg_nr_pages_over_high``)."""
    cg: MiscCg | None = sgx_cg.cg
    while cg is not None and cg.parent is not None:
        r = cg.priv.rfc if cg.priv is not None else None
        if r is not None and _usage(cg) > r.high:
            return True
        cg = cg.parent
    return False


def _reclaim_high(host: Host, task: Task, sgx_cg: SgxCgroup) -> Generator[str, None, int]:
    """Models reclaim_high(): each level from the cgroup up (the root excluded) above
    its high counts a ``high`` event and reclaims its overage (usage - high pages)
    from its subtree.  Returns the pages reclaimed."""
    total = 0
    cg: MiscCg | None = sgx_cg.cg
    while cg is not None and cg.parent is not None:
        s = cg.priv
        if s is not None and s.rfc is not None and _usage(cg) > s.rfc.high:
            _memory_event(s, "events_high")
            total += yield from _try_to_free_pages(host, s, task, _usage(cg) - s.rfc.high)
        cg = cg.parent
    return total


def sgx_cgroup_handle_over_high(
    host: Host, task: Task, nr_pages: int = 1
) -> Generator[str, None, int]:
    """Models mem_cgroup_handle_over_high() at the return of an EPC fault to user
    space, for a task that charged *nr_pages* pages over high.

    Loop: reclaim the overage of every level above high (:func:`_reclaim_high`); the
    penalty is calculate_high_delay() of the largest overage left, capped at
    MEMCG_MAX_HIGH_DELAY_JIFFIES; at most HZ/100 jiffies: no sleep; else retry while
    reclaim makes progress or until MAX_RECLAIM_RETRIES attempts reclaimed nothing,
    then sleep the penalty.  A dying task returns at once.

    Returns: the sleep in ns (0: none).
    """
    from .epc_cgroup import sgx_get_current_cg, sgx_put_cg

    sgx_cg = sgx_get_current_cg(host, task)
    nr_retries = MAX_RECLAIM_RETRIES
    try:
        while True:
            if task.signal_pending or task.exited:  # task_is_dying()
                return 0
            nr_reclaimed = yield from _reclaim_high(host, task, sgx_cg)
            penalty = calculate_high_delay(nr_pages, sgx_cgroup_find_max_overage(sgx_cg))
            penalty = min(penalty, MEMCG_MAX_HIGH_DELAY_JIFFIES)
            if penalty <= HZ // 100:
                return 0
            if nr_reclaimed:
                continue
            if nr_retries:
                nr_retries -= 1
                continue
            return penalty * NSEC_PER_JIFFY
    finally:
        sgx_put_cg(host, sgx_cg)


# --- the files -------------------------------------------------------------------------------


def _memparse_pages(data: str, max_word: str) -> int:
    """Models page_counter_memparse(strstrip(buf), max_word): pages, or -EINVAL."""
    from .cgroupfs import memparse

    s = data.strip(" \t\n\v\f\r")
    if max_word and s == max_word:
        return PAGE_COUNTER_MAX
    v, rest = memparse(s)
    if rest:
        return -errno.EINVAL
    return min(v // PAGE_SIZE, PAGE_COUNTER_MAX)


def tunable_show(pages: int) -> str:
    """seq_puts_memcg_tunable(): ``max`` or the value in bytes."""
    return "max\n" if pages >= PAGE_COUNTER_MAX else f"{pages * PAGE_SIZE}\n"


def sgx_cgroup_low_write(host: Host, sgx_cg: SgxCgroup, data: str) -> int:
    """Models memory_low_write(): 0 or -EINVAL."""
    pages = _memparse_pages(data, "max")
    if pages < 0:
        return pages
    _rfc(sgx_cg).low = pages
    if pages and host.rfc is not None:
        host.rfc.any_low = True
    return 0


def sgx_cgroup_high_write(
    host: Host, sgx_cg: SgxCgroup, data: str, task: Task | None = None
) -> int:
    """Models memory_high_write(): store the value, then reclaim while usage is above
    it (the writer's context, to completion) until a signal is pending or
    MAX_RECLAIM_RETRIES + 1 attempts reclaimed nothing.  0 or -EINVAL."""
    from .driver import drive

    high = _memparse_pages(data, "max")
    if high < 0:
        return high
    _rfc(sgx_cg).high = high
    nr_retries = MAX_RECLAIM_RETRIES
    while True:
        usage = _usage(sgx_cg.cg)
        if usage <= high:
            break
        if task is not None and task.signal_pending:
            break
        reclaimed = drive(_try_to_free_pages(host, sgx_cg, task, usage - high))
        if not reclaimed:
            if not nr_retries:
                break
            nr_retries -= 1
    return 0


def sgx_cgroup_reclaim_write(
    host: Host, sgx_cg: SgxCgroup, data: str, task: Task | None = None
) -> int:
    """Models memory_reclaim(): parse ``N`` (memparse units; ``max`` is not accepted),
    then reclaim from the subtree until N bytes' pages were reclaimed: each attempt asks
    for what is left; an attempt that reclaims nothing uses up one of
    MAX_RECLAIM_RETRIES retries, and one more gives -EAGAIN.  -EINTR if a signal is
    pending.  Runs to completion in the writer's context."""
    from .driver import drive

    nr_to_reclaim = _memparse_pages(data, "")
    if nr_to_reclaim < 0:
        return nr_to_reclaim
    nr_retries = MAX_RECLAIM_RETRIES
    nr_reclaimed = 0
    while nr_reclaimed < nr_to_reclaim:
        if task is not None and task.signal_pending:
            return -errno.EINTR
        reclaimed = drive(_try_to_free_pages(host, sgx_cg, task, nr_to_reclaim - nr_reclaimed))
        if not reclaimed:
            if not nr_retries:
                return -errno.EAGAIN
            nr_retries -= 1
        nr_reclaimed += reclaimed
    return 0


def sgx_cgroup_events_show(sgx_cg: SgxCgroup) -> str:
    """``sgx_epc.events`` (as memory.events): ``low`` and ``high``, hierarchical."""
    r = _rfc(sgx_cg)
    return f"low {r.events_low}\nhigh {r.events_high}\n"


#: the keys of sgx_epc.stat, in order, and the SgxCgroup counter each shows
STAT_KEYS = (
    ("reclaimed_ksgxd", "nr_reclaimed_by[0]"),
    ("reclaimed_async", "nr_reclaimed_by[1]"),
    ("reclaimed_sync", "nr_reclaimed_by[2]"),
    ("reclaimed_direct", "nr_reclaimed_by[3]"),
    ("scanned", "nr_scanned"),
    ("rotated", "nr_rotated"),
    ("eldu", "nr_eldu"),
    ("oom_kill", "nr_oom_kills"),
)


def sgx_cgroup_stat_show(sgx_cg: SgxCgroup) -> str:
    """``sgx_epc.stat`` (as memory.stat: ``key value`` lines), this cgroup's LRU only."""
    return "".join(f"{k} {_counter(sgx_cg, a)}\n" for k, a in STAT_KEYS)


def _counter(sgx_cg: SgxCgroup, name: str) -> int:
    """The SgxCgroup counter *name* of :data:`STAT_KEYS` (``nr_reclaimed_by[i]``: one
    ``RECLAIM_*`` entry)."""
    if name.endswith("]"):
        attr, _, i = name[:-1].partition("[")
        return getattr(sgx_cg, attr)[int(i)]
    return getattr(sgx_cg, name)


# --- sgx_epc.pressure (kernel/sched/psi.c) ---------------------------------------------------


def calc_load(load: int, exp: int, active: int) -> int:
    """Models calc_load() (include/linux/sched/loadavg.h): one exponential decay step in
    FSHIFT fixed-point, rounding up when rising."""
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1


def _calc_avgs(g: PsiGroup) -> None:
    """Models calc_avgs() for one complete period: pct = stall * 100 / period (whole
    percent), then calc_load() of each average with pct * FIXED_1."""
    for k in (0, 1):
        pct = g.cur[k] * 100 // PSI_PERIOD_NS * FIXED_1
        a = g.avg[k]
        for w in range(3):
            a[w] = calc_load(a[w], _EXPS[w], pct)
        g.cur[k] = 0


def psi_update(g: PsiGroup, now: int) -> None:
    """Account [g.since, now) in the current state (``some``: a thread stalled;
    ``full``: every non-idle thread stalled), closing each 2 s period crossed."""
    some = g.stalled > 0
    full = some and g.stalled == g.nonidle
    t = g.since
    while t < now:
        end = min(now, (g.period + 1) * PSI_PERIOD_NS)
        dt = end - t
        if some:
            g.cur[0] += dt
            g.total[0] += dt
            if full:
                g.cur[1] += dt
                g.total[1] += dt
        t = end
        if end == (g.period + 1) * PSI_PERIOD_NS:
            _calc_avgs(g)
            g.period += 1
            if not some and not any(g.avg[0]) and not any(g.avg[1]):
                # nothing to decay and nothing stalls: jump to now's period
                g.period = max(g.period, now // PSI_PERIOD_NS)
                t = max(t, g.period * PSI_PERIOD_NS)
    g.since = max(g.since, now)


def psi_task_change(host: Host, cgrp: Cgroup, now: int, nonidle: int = 0, stalled: int = 0) -> None:
    """Models psi_task_change() for the sgx_epc resource: a thread of *cgrp* starts or
    ends (*nonidle* +1/-1) or enters or leaves an EPC stall (*stalled* +1/-1) at *now*;
    the groups of the cgroup and of its non-root ancestors change."""
    rfc = host.rfc
    if rfc is None:
        return
    c: Cgroup | None = cgrp
    while c is not None and c.parent is not None:
        g = rfc.psi_group(c)
        psi_update(g, now)
        g.nonidle += nonidle
        g.stalled += stalled
        c = c.parent


def _load_text(x: int) -> str:
    """LOAD_INT(x).LOAD_FRAC(x) with two digits."""
    return f"{x >> FSHIFT}.{((x & (FIXED_1 - 1)) * 100) >> FSHIFT:02d}"


def psi_show(g: PsiGroup, now: int) -> str:
    """Models psi_show(): the ``some`` and ``full`` lines, totals in microseconds."""
    psi_update(g, now)
    out = []
    for k, name in ((0, "some"), (1, "full")):
        a = g.avg[k]
        out.append(
            f"{name} avg10={_load_text(a[0])} avg60={_load_text(a[1])} "
            f"avg300={_load_text(a[2])} total={g.total[k] // 1000}\n"
        )
    return "".join(out)


def rfc_summary(host: Host, now: int) -> dict[str, dict]:
    """``summary.json["rfc_knobs"]``: per non-root cgroup with the files, its low and
    high (bytes, None for max), events, stat counters and PSI totals (us) at *now*."""
    out: dict[str, dict] = {}
    rfc = host.rfc
    assert rfc is not None
    for sgx_cg in host.sgx_cgroups:
        if sgx_cg is None or sgx_cg.rfc is None or sgx_cg.cg.parent is None:
            continue
        cgrp = sgx_cg.cg.cgroup
        r = sgx_cg.rfc
        g = rfc.psi_group(cgrp) if cgrp is not None else PsiGroup()
        psi_update(g, now)

        def _bytes(p: int) -> int | None:
            return None if p >= PAGE_COUNTER_MAX else p * PAGE_SIZE

        out[cgrp.path if cgrp is not None else f"#{sgx_cg.id}"] = {
            "low_bytes": _bytes(r.low),
            "high_bytes": _bytes(r.high),
            "events": {"low": r.events_low, "high": r.events_high},
            "stat": {k: _counter(sgx_cg, a) for k, a in STAT_KEYS},
            "pressure_total_us": {"some": g.total[0] // 1000, "full": g.total[1] // 1000},
        }
    return out
