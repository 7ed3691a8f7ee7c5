"""The actors of the reference engine: processes, enclave threads, kernel threads, timed
operations.

Each actor is a generator over the kernel model (:mod:`epcsim.kernel`) that yields the
virtual duration of the step it just made (:mod:`epcsim.sim.core`).  Each step is one
atomic kernel operation between the yield points the kernel model defines (one charge
attempt, one phase of a reclaim batch, one fault, one ADD_PAGES page), so actors
interleave as CPUs do in the kernel.

Actors: enclave processes and their threads, vEPC owners, ksgxd (started when the
allocator wakes it), one ``sgx_cg_wq`` worker per queued cgroup work item (several may
run at once, one per cgroup), timed scenario operations.  Time of a step = the cost
model applied to the ENCLS leaves the step executed (``host.encls_count`` before/after)
plus a fixed cost by yield point.  Runs of resident hits are one vectorised step of
``n * costs.access``, cut at the next event of any other actor (conservative
synchronisation), so no access crosses another actor's event.

The members without an underscore are what the compiled engine
(:mod:`epcsim.compiled.engine`) uses to take enclave threads over and to hand every
actor back (``docs/ENGINES.md``, "The hand-over surface").
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import EpcsimError
from ..kernel import send_signal, task_exit
from ..kernel.cgroup import Cgroup, host_controllers
from ..kernel.constants import (
    PAGE_SIZE,
    SGX_ENCL_OOM,
    SGX_PAGE_TYPE_TRIM,
    VM_FAULT_NOPAGE,
)
from ..kernel.encl import Encl, sgx_encl_access, sgx_vma_fault
from ..kernel.epc import stuck_retry
from ..kernel.epc_cgroup import (
    RECLAIM_ASYNC,
    RECLAIM_KSGXD,
    SgxCgroup,
    sgx_cg_wq_take_runnable,
    sgx_cgroup_reclaim_work_func,
)
from ..kernel.host import SIGBUS, SIGTERM, Host, Task
from ..kernel.ioctl import (
    ioc_enclave_add_pages,
    ioc_enclave_create,
    ioc_enclave_init,
    ioc_enclave_modify_types,
    ioc_enclave_remove_pages,
    ioc_enclave_restrict_permissions,
    sgx_open,
    vepc_access,
    vepc_open,
)
from ..kernel.reclaim import ksgxd_step
from ..kernel.resume import TRACK_RETURNED, ReclaimerState, ReclaimerTrack, SgxAddPagesRun
from ..kernel.rfc_knobs import psi_task_change, sgx_cgroup_handle_over_high, sgx_cgroup_over_high
from ..programs.kselftest import TestSgxPlace, TestSgxStats, test_sgx_process
from ..scenario.schema import (
    EnclaveSpec,
    VepcSpec,
    eval_size,
    resolve_write_value,
    trace_workload,
)
from ..units import parse_time
from ..workload.patterns import make_pattern
from .core import PRIO_OP, Actor
from .metrics import errname
from .stuck import STUCK_RETRIES

if TYPE_CHECKING:
    from .engine import Simulation

__all__ = ["CHUNK", "Actors", "BuildRun", "Instance", "ThreadRun", "ThreadStats"]

#: accesses drawn from a pattern at a time
CHUNK = 65536


@dataclass
class ThreadStats:
    accesses: int = 0
    target: int = 0
    faults: int = 0
    retries: int = 0
    #: VM_FAULT_NOPAGE retries of the current access (0: no fault unresolved)
    streak: int = 0
    #: .. of them since the last progress under the limit that refuses its charge, that
    #: cgroup's sgx id (-1: none) and its nr_freed + nr_aged then (the stuck rule,
    #: epcsim.sim.stuck; epcsim.kernel.epc.stuck_retry)
    quiet: int = 0
    block: int = -1
    freed: int = 0
    started_ns: int = -1
    ended_ns: int = -1
    stuck: bool = False


#: at most this many enclave thread steps between two offers to the compiled engine
#: after a refusal (Actors._take_over)
TAKEOVER_BACKOFF_MAX = 1024


class ThreadRun:
    """An enclave thread's place in its loop (the thread actor, ``Actors._thread``),
    outside its generator: the compiled engine takes a thread over from it at any step
    and hands the thread back as a new generator over it.

    Attributes:
        inst, encl, pattern, rng, until, st: the thread's process, enclave, access
            pattern and its generator, time limit (None: none), and ThreadStats.
        buf, pos: the accesses drawn and not yet made are ``buf[pos:]``.
        remaining: accesses left to make (those in ``buf[pos:]`` included).
        fault_start: when the fault on ``buf[pos]`` started (-1: none).
        pending, r: the last step was a fault whose result *r* is booked at the next.
        edmm_at: the access count at which the EDMM operations run (None: none, or done).
        started: the thread has made its first step.
        epoch: which generator is the thread's: the compiled engine adds 1 when it
            takes the thread over, so the generators it drops (closed, or returning
            from the step that offered the threads) see they are no longer the thread's
            and do not end it.
    """

    __slots__ = (
        "inst",
        "encl",
        "pattern",
        "rng",
        "until",
        "st",
        "buf",
        "pos",
        "remaining",
        "fault_start",
        "pending",
        "r",
        "edmm_at",
        "started",
        "epoch",
    )

    def __init__(self, inst, encl, pattern, rng, count: int | None, until, st) -> None:
        self.inst, self.encl, self.pattern, self.rng = inst, encl, pattern, rng
        self.until, self.st = until, st
        self.buf = np.zeros(0, np.int64)
        self.pos = 0
        self.remaining = count if count is not None else 1 << 62
        self.fault_start = -1
        self.pending = False
        self.r = 0
        self.edmm_at: int | None = None
        self.started = False
        self.epoch = 0


class BuildRun:
    """An enclave process's place in its EADD build, outside its generator (as
    :class:`ThreadRun` is a thread's): the compiled engine takes the build over at a
    page's end and hands it back as a new generator over it (``Actors.build``).

    Attributes:
        inst: the process.
        encl, data, patterns: its enclave (None before ``sgx_open()``), the bytes to add
            (the enclave's data; a kselftest process's heap), the trace patterns of its
            threads (None: a pattern).
        place: a kselftest process's place in its program (None: an enclave process).
        add: the ``SGX_IOC_ENCLAVE_ADD_PAGES`` loop's position (its ``epoch`` tells a
            dropped generator it is no longer the ioctl's): ``own_add``, or the
            program's current one (``place.add``; None before the first).
        taken: the compiled engine took the build over (its generator stops).
        hold: the compiled engine handed the build back before its next step (the
            ioctl's end, or a step that may fail): that step is not offered.
        wait, backoff: pages' ends to its next offer, and the last wait (a refusal is
            retried after twice as many, as the threads' offers are).
    """

    __slots__ = (
        "inst", "encl", "data", "patterns", "place", "own_add", "hold", "wait", "backoff", "taken"
    )  # fmt: skip

    def __init__(self, inst: Instance, place: TestSgxPlace | None = None) -> None:
        self.inst = inst
        self.encl: Encl | None = None
        self.data = 0
        self.patterns: list | None = None
        self.place = place
        self.own_add = SgxAddPagesRun()
        self.taken = False
        self.hold = False
        self.wait, self.backoff = 0, 1

    @property
    def add(self) -> SgxAddPagesRun | None:
        """The ADD_PAGES loop being run (or last run)."""
        return self.own_add if self.place is None else self.place.add


@dataclass
class Instance:
    """One process of an enclave group (or a vEPC owner)."""

    name: str
    group: str
    spec: EnclaveSpec | VepcSpec
    task: Task | None = None
    encl: Encl | None = None
    status: int | None = None
    #: success | failure | killed | stuck | running | not started
    outcome: str = "not started"
    threads: list[ThreadStats] = field(default_factory=list)
    running_threads: int = 0
    started_ns: int = -1
    ended_ns: int = -1
    killed: bool = False
    error: str = ""
    #: malformed trace lines/records skipped (trace workloads with skip_bad)
    trace_skipped: int = 0
    cgroup: str = "/"
    #: its position in the run's instances (tags its fault latencies)
    index: int = -1
    #: the sgx_cgroup its task charges, taken when spawned (its faults are counted
    #: there: the per-tenant cgroup of summary.json)
    sgx_cg: SgxCgroup | None = None
    #: a kselftest process's own counters and error (its one thread's stats follow them)
    selftest: TestSgxStats | None = None


class Actors:
    """The actors of one run and their state; *sim* is the host object composing them.

    Attributes:
        instances, groups, ops: *sim*'s (the same objects).
        ksgxd_running: a ksgxd actor is on the heap (it is started again when the
            allocator wakes it and none is).
        thread_runs: the enclave threads' generators and their places in their loops
            (:class:`ThreadRun`): what the compiled engine takes them over with.
        reclaimers: ksgxd's and the workers' generators and their tracks
            (:class:`~epcsim.kernel.resume.ReclaimerTrack`), likewise.
        watchers: timed operations waiting for an instance to have added N pages:
            ``(inst, pages, index, op, delay)``.
    """

    def __init__(self, sim: Simulation, *, compiled: bool, compiled_required: bool) -> None:
        self.sim = sim
        self.core = sim.core
        self.metrics = sim.metrics
        self.sc = sim.sc
        self.host = sim.host
        self.costs = sim.costs
        self.leaf_cost = sim.leaf_cost
        self.capacity = sim.capacity
        self.seed = sim.seed
        self.instances = sim.instances
        self.groups = sim.groups
        self.ops = sim.ops
        #: the compiled engine may take the enclave threads over at the first one's step
        self._compiled = compiled
        #: "compiled" was asked for: refuse (EpcsimError) rather than fall back
        self._compiled_required = compiled_required
        self.ksgxd_running = False
        self._group_waiters: dict[str, list[Callable[[], None]]] = {}
        self.watchers: list[tuple[Instance, int, int, Any, int]] = []
        self.thread_runs: dict[Actor, ThreadRun] = {}
        #: ksgxd's and the workers' generators and where each is (their tracks): what
        #: the compiled engine takes a busy reclaimer over with
        self.reclaimers: weakref.WeakKeyDictionary[Actor, ReclaimerTrack] = (
            weakref.WeakKeyDictionary()
        )
        self.build_runs: dict[Actor, BuildRun] = {}
        #: thread steps to the next take-over offer, and the last wait (_take_over)
        self._takeover_wait = 0
        self._takeover_backoff = 1
        #: the wait after the compiled engine handed the threads back before a reclaim
        #: phase only the reference runs (take_over_later)
        self._memcg_backoff = 1
        #: enclave thread steps the reference engine ran (the compiled engine's are not
        #: counted): a run the compiled engine joined after some is "mixed"
        self.thread_steps_ref = 0
        #: the policy's ``nr_scanned`` already charged (``lru_scan`` per entry)
        self._scanned = 0

    def _cost(self, before: list[int], point: str | None) -> int:
        after = self.host.encls_count
        lc = self.leaf_cost
        c = 0
        for i in range(len(lc)):
            d = after[i] - before[i]
            if d:
                c += d * lc[i]
        if point == "reclaim:isolated":
            c += self.costs.reclaim_batch
        elif point == "fault_retry":
            c += self.costs.fault
        pol = self.host.policy
        if pol is not None and pol.nr_scanned != self._scanned:
            # list entries a policy's scan examined in this step (global-lru)
            c += (pol.nr_scanned - self._scanned) * self.costs.lru_scan
            self._scanned = pol.nr_scanned
        return c + self.costs.kernel_step

    def kstep(
        self, gen: Generator[str, None, Any], offer: Callable[[], bool] | None = None
    ) -> Generator[int, None, Any]:
        """Run a kernel-model generator operation as sim steps: one step per kernel yield
        point, each costing what it executed.  Returns the operation's value; an OSError
        it raises is re-raised after its last step is charged.  *offer*, if given, is
        called before each step: True means the operation was taken over (by the
        compiled engine) and the generator returns None without stepping it."""
        counts = self.host.encls_count
        while True:
            if offer is not None and offer():
                return None
            before = list(counts)
            try:
                point = next(gen)
            except StopIteration as stop:
                yield self._cost(before, None)
                return stop.value
            except OSError:
                yield self._cost(before, None)
                raise
            yield self._cost(before, point)

    def kick_kernel_threads(self) -> None:
        """After each step: start ksgxd if the allocator woke it and none runs, and a
        worker for each runnable ``sgx_cg_wq`` item."""
        host = self.host
        if host.ksgxd_woken and not self.ksgxd_running:
            self.ksgxd_running = True
            self.core.start(self.ksgxd())
        if host.sgx_cg_wq:
            for sgx_cg in sgx_cg_wq_take_runnable(host):
                self.core.start(self.worker(sgx_cg))

    def check_watchers(self) -> None:
        """Start the timed operations whose instance has added its N pages (forget those
        of ended instances)."""
        keep = []
        for w in self.watchers:
            inst, pages, k, a, delay = w
            if inst.encl is None and inst.task is not None and inst.task.encl_fds:
                inst.encl = self.host.encls[inst.task.encl_fds[0]]
            if inst.encl is not None and inst.encl.nr_added + inst.encl.nr_eaug >= pages:
                self.core.start(self._op(k, a), delay, PRIO_OP)
            elif inst.ended_ns < 0:
                keep.append(w)
        self.watchers = keep

    def _tracked(self, gen: Actor, track: ReclaimerTrack) -> Actor:
        """Register reclaimer actor *gen* and its track (the compiled engine takes a
        busy reclaimer over from it: :attr:`reclaimers`)."""
        if self._compiled:
            self.reclaimers[gen] = track
        return gen

    def ksgxd(self, resume: ReclaimerState | None = None) -> Actor:
        """ksgxd: reclaims while should_reclaim_global(64), then sleeps until woken.
        *resume*: an iteration to finish first (engine hand-over only,
        :mod:`epcsim.kernel.resume`)."""
        track = ReclaimerTrack(RECLAIM_KSGXD).resuming(resume)
        return self._tracked(self._ksgxd(resume, track), track)

    def _ksgxd(self, resume: ReclaimerState | None, track: ReclaimerTrack) -> Actor:
        try:
            while True:
                gen, resume = ksgxd_step(self.host, resume=resume, track=track), None
                busy = yield from self.kstep(gen)
                if not busy:
                    return
        finally:
            self.ksgxd_running = False

    def ksgxd_end(self) -> Actor:
        """ksgxd after it decided to sleep: the actor ends at its next step."""
        track = ReclaimerTrack(RECLAIM_KSGXD, at=TRACK_RETURNED, busy=False)
        return self._tracked(self._ksgxd_end(), track)

    def _ksgxd_end(self) -> Actor:
        self.ksgxd_running = False
        return
        yield  # pragma: no cover

    def actor_end(self) -> Actor:
        """An actor whose work is done: it ends at its next step."""
        return
        yield  # pragma: no cover

    def worker_end(self, sgx_cg: SgxCgroup) -> Actor:
        """A ``sgx_cg_wq`` worker whose work function returned: it ends at its next
        step."""
        track = ReclaimerTrack(RECLAIM_ASYNC, sgx_cg, at=TRACK_RETURNED)
        return self._tracked(self.actor_end(), track)

    def worker(self, sgx_cg: SgxCgroup, resume: ReclaimerState | None = None) -> Actor:
        """A ``sgx_cg_wq`` worker running one cgroup's reclaim work item (*resume*: the
        rest of a running one: engine hand-over only, :mod:`epcsim.kernel.resume`)."""
        track = ReclaimerTrack(RECLAIM_ASYNC, sgx_cg).resuming(resume)
        gen = self.kstep(
            sgx_cgroup_reclaim_work_func(self.host, sgx_cg, resume=resume, track=track)
        )
        return self._tracked(gen, track)

    # --- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Before the first step: the scenario's cgroups and limits, its instances, the
        start of each enclave group and the timed operations."""
        sc, fs = self.sc, self.host.fs
        declared = [c.path for c in sc.cgroup]
        parents = {p.rsplit("/", 1)[0] or "/" for p in declared}
        ctrls = " ".join(f"+{c}" for c in host_controllers(self.host))
        if "/" in parents:
            fs.write("/cgroup.subtree_control", ctrls)
        for c in sc.cgroup:
            fs.mkdir(c.path)
            if c.path in parents:
                fs.write(f"{c.path}/cgroup.subtree_control", ctrls)
            if c.max is not None and self.host.misc_enabled:
                v = "max" if c.max == "max" else str(eval_size(c.max, self.capacity, what="max"))
                fs.write(f"{c.path}/misc.max", f"sgx_epc {v}")
            if c.memory_max is not None:
                v = (
                    "max"
                    if c.memory_max == "max"
                    else str(eval_size(c.memory_max, self.capacity, what="memory_max"))
                )
                fs.write(f"{c.path}/memory.max", v)
        for spec in [*sc.enclave, *sc.vepc]:
            n = getattr(spec, "count", 1)
            names = [spec.name] if n == 1 else [f"{spec.name}#{k}" for k in range(n)]
            insts = [Instance(nm, spec.name, spec) for nm in names]
            self.groups[spec.name] = insts
            for i in insts:
                i.index = len(self.instances)
                self.instances[i.name] = i
        for spec in [*sc.enclave, *sc.vepc]:
            s = str(spec.start)
            if s == "manual":
                continue
            if s.startswith("after:"):
                self._group_waiters.setdefault(s[6:], []).append(
                    lambda g=spec.name: self._start_group(g)
                )
                continue
            self.core.start(self._delayed(lambda g=spec.name: self._start_group(g)), parse_time(s))
        for k, a in enumerate(sc.at):
            delay = parse_time(a.time)
            if a.when is not None:
                pages = eval_size(a.when.added, self.capacity, what="added") // PAGE_SIZE
                self.watchers.append((self.instances[a.when.enclave], pages, k, a, delay))
            elif a.after is None:
                self.core.start(self._op(k, a), delay, PRIO_OP)
            else:
                self._group_waiters.setdefault(a.after, []).append(
                    lambda k=k, a=a, d=delay: self.core.start(self._op(k, a), d, PRIO_OP)
                )

    def _delayed(self, fn: Callable[[], None]) -> Actor:
        fn()
        return
        yield  # pragma: no cover

    def _start_group(self, group: str) -> None:
        for inst in self.groups[group]:
            self._start_instance(inst)

    def _start_instance(self, inst: Instance) -> None:
        if inst.started_ns >= 0:
            return
        inst.started_ns = self.core.now
        inst.outcome = "running"
        if isinstance(inst.spec, VepcSpec):
            self.core.start(self._vepc_proc(inst), cpu=self.core.next_cpu())
        else:
            ks = inst.spec.program == "kselftest"
            run = BuildRun(inst, TestSgxPlace() if ks else None)
            gen = self._kselftest_proc(inst, run) if ks else self._enclave_proc(inst, run)
            if self._compiled:
                self.build_runs[gen] = run
            self.core.start(gen, cpu=self.core.next_cpu())

    def _end_instance(self, inst: Instance, status: int) -> None:
        if inst.ended_ns >= 0:
            return
        inst.ended_ns = self.core.now
        inst.status = status
        # killed: by a timed kill, or its enclave by the EPC OOM killer of a policy
        # (the dropped OOM design: SGX_ENCL_OOM, its tasks get SIGBUS)
        oom = inst.encl is not None and inst.encl.flags & SGX_ENCL_OOM
        if (inst.killed or oom) and status >= 128:
            inst.outcome = "killed"
            ks_error = inst.selftest.error if inst.selftest is not None else ""
            if oom and not inst.error and not ks_error:
                # killed in user space (or between ioctls): no call failed to say why
                inst.error = _oom_error_text(self.host, status)
        else:
            inst.outcome = "success" if status == 0 else "failure"
            task = inst.task
            # a process a signal ended says which (SIGBUS: an access its fault could not
            # resolve), and the memcg OOM killer's victim (mem_cgroup_out_of_memory())
            # says so; a kselftest process says it with the ioctl it was in
            if status >= 128 and not inst.error and inst.selftest is None:
                oom = " (memcg OOM)" if task is not None and task.oom_killed else ""
                inst.error = f"killed by {_signal_name(status)}{oom}"
        group = self.groups[inst.group]
        if all(i.ended_ns >= 0 for i in group):
            for fn in self._group_waiters.pop(inst.group, []):
                fn()

    # --- processes ------------------------------------------------------------------------

    def _spawn_task(self, inst: Instance) -> Task | None:
        cg = "/" + "/".join(p for p in inst.spec.cgroup.split("/") if p)
        inst.cgroup = cg
        try:
            task = self.host.spawn(cg)
        except OSError as e:
            inst.error = f"spawn in {cg}: {e.strerror}"
            self._end_instance(inst, 1)
            return None
        inst.task = task
        inst.sgx_cg = self.host.task_misc_cg(task).priv
        return task

    def _exit(self, inst: Instance, status: int) -> None:
        task = inst.task
        if task is not None:
            if task.exited:
                status = task.exit_status if task.exit_status is not None else status
            elif task.signal_pending:
                status = 128 + (task.pending_signo or SIGTERM)
                task_exit(self.host, task, status)
            else:
                task_exit(self.host, task, status)
        self._end_instance(inst, status)

    def _build_steps(
        self, run: BuildRun, gen: Generator[str, None, Any]
    ) -> Generator[int, None, Any]:
        """:meth:`kstep` for a process that adds pages (an EADD build, the kselftest
        program): at each of its ADD_PAGES loop's pages' ends the build is offered to
        the compiled engine (``run.taken`` then, and the generator stops)."""
        run.taken = False

        def offer() -> bool:
            add = run.add
            if add is not None and add.between and self._compiled and not run.hold:
                run.wait -= 1
                if run.wait <= 0 and self._take_over(run):
                    run.taken = True
                    return True
            run.hold = False
            return False

        return (yield from self.kstep(gen, offer))

    def _kselftest_proc(self, inst: Instance, run: BuildRun) -> Actor:
        task = self._spawn_task(inst)
        if task is None:
            return
        heap = eval_size(inst.spec.size, self.capacity, what="size")
        # the process's one thread: its accesses, faults and retries as test_sgx counts
        # them (the two EENTERs), its enclave as soon as it is opened
        inst.threads.append(ThreadStats(started_ns=self.core.now))

        def on_open(encl: Encl) -> None:
            inst.encl = run.encl = encl

        inst.selftest = TestSgxStats(on_open=on_open, stuck_retries=STUCK_RETRIES)
        run.data = heap
        yield from self._kselftest(run)

    def _kselftest(self, run: BuildRun) -> Actor:
        """A kselftest process from its place ``run.place`` (its ADD_PAGES loops are
        offered to the compiled engine at their pages' ends, as an enclave's EADD build
        is), then its end."""
        inst = run.inst
        task, stats = inst.task, inst.selftest
        assert task is not None and stats is not None and run.place is not None
        gen = test_sgx_process(self.host, task, run.data, stats=stats, place=run.place)
        status = yield from self._build_steps(run, gen)
        if run.taken:
            return  # the continuation replaced this generator on the heap
        inst.threads[0].ended_ns = self.core.now
        if status is None:  # stuck: the process stays in its fault
            inst.threads[0].stuck = True
            inst.outcome = "stuck"
            return
        self._end_instance(inst, status)

    def _enclave_proc(self, inst: Instance, run: BuildRun) -> Actor:
        spec = inst.spec
        assert isinstance(spec, EnclaveSpec)
        task = self._spawn_task(inst)
        if task is None:
            return
        host = self.host
        wl = spec.workload or {}
        patterns = None
        if "trace" in wl:
            patterns = self._trace_patterns(spec)
            shared = len(trace_workload(wl)[0]) == 1  # every thread reads the same file
            inst.trace_skipped = patterns[0].skipped if shared else sum(p.skipped for p in patterns)
        data = eval_size(spec.size, self.capacity, what="size") if spec.size is not None else 0
        if patterns is not None:
            data = max(data, max(p.npages for p in patterns) * PAGE_SIZE)
        size = 2 * PAGE_SIZE
        while size < data:
            size <<= 1
        try:
            encl = sgx_open(host, task)
            inst.encl = encl
            yield from self.kstep(ioc_enclave_create(host, task, encl, size))
        except OSError as e:
            inst.error = _oserror_text(e)
            self._exit(inst, 1)
            return
        run.encl, run.data, run.patterns = encl, data, patterns
        yield from self._build(run)

    def build(self, run: BuildRun) -> Actor:
        """An enclave process going on from its build's place *run* (the compiled
        engine hands a build back with it); offered to the compiled engine again at its
        next page's end."""
        gen = self._build(run) if run.place is None else self._kselftest(run)
        if self._compiled:
            self.build_runs[gen] = run
        run.wait, run.backoff = 0, 1
        return gen

    def _build(self, run: BuildRun) -> Actor:
        """An enclave process after ECREATE: the EADD build (``SGX_IOC_ENCLAVE_ADD_PAGES``
        page by page, its place in ``run.add``), EINIT, then its threads.  At each
        page's end the run is offered to the compiled engine (which takes the build over
        with the enclave threads, ``Actors._take_over``)."""
        inst, encl, data, patterns = run.inst, run.encl, run.data, run.patterns
        spec = inst.spec
        assert isinstance(spec, EnclaveSpec) and encl is not None
        task = inst.task
        host = self.host
        wl = spec.workload or {}
        try:
            add = run.own_add
            if spec.build == "eadd" and (add.entered or not task.exited):
                gen = ioc_enclave_add_pages(host, task, encl, 0, data, measure=False, run=add)
                yield from self._build_steps(run, gen)
                if run.taken:
                    return  # the continuation replaced this generator on the heap
            if not task.exited:
                before = list(host.encls_count)
                ioc_enclave_init(host, task, encl)
                yield self._cost(before, None)
        except OSError as e:
            inst.error = _oserror_text(e)
            self._exit(inst, 1)
            return
        if task.exited or task.signal_pending:
            self._exit(inst, 1)
            return
        npages = data // PAGE_SIZE
        total = wl.get("accesses")
        # a trace without accesses or duration: each thread runs its trace once
        one_pass = patterns is not None and total is None and "duration" not in wl
        until = self.core.now + parse_time(wl["duration"]) if "duration" in wl else None
        ss = np.random.SeedSequence([self.seed, len(self.instances), _stable_hash(inst.name)])
        rngs = [np.random.default_rng(s) for s in ss.spawn(spec.threads)]
        inst.running_threads = spec.threads
        for k in range(spec.threads):
            share = None
            if one_pass:
                share = patterns[k].length
            elif total is not None:
                share = total // spec.threads + (1 if k < total % spec.threads else 0)
            st = ThreadStats(target=share or 0)
            inst.threads.append(st)
            pattern = (
                patterns[k % len(patterns)] if patterns is not None else make_pattern(wl, npages)
            )
            run = ThreadRun(inst, encl, pattern, rngs[k], share, until, st)
            if k == 0 and spec.edmm is not None:
                run.edmm_at = spec.edmm.at_access
            gen = self._thread(run)
            if self._compiled:
                self.thread_runs[gen] = run
            self.core.start(gen, cpu=self.core.next_cpu())
        # a new thread may make the threads eligible: offer them at its first step
        self._takeover_wait = 0
        self._takeover_backoff = 1

    def _thread(self, run: ThreadRun) -> Actor:
        """An enclave thread: accesses in vectorised runs of hits, faults one at a time.

        Its place in the loop is *run* (:class:`ThreadRun`), written before every yield,
        so the compiled engine can take the thread over at any step and hand it back as
        a new generator over the same *run*: a fault's result is booked at the thread's
        next step (``run.pending``), as the compiled core books it (TH_PENDING)."""
        host = self.host
        core = self.core
        metrics = self.metrics
        inst, encl, pattern, rng, until, st = (
            run.inst,
            run.encl,
            run.pattern,
            run.rng,
            run.until,
            run.st,
        )
        task = inst.task
        access_ns = self.costs.access
        fault_unreferenced = self.sc.host.experiments.fault_unreferenced
        # the rfc-knobs extension (in no kernel, epcsim.kernel.rfc_knobs): PSI of the
        # thread's cgroup, sgx_epc.high at fault return
        rfc = host.rfc
        psi_cg = task.cgroup
        epoch = run.epoch  # this generator is the thread's while run.epoch stays
        if not run.started:
            run.started = True
            st.started_ns = core.now
            if rfc is not None:
                psi_task_change(host, psi_cg, core.now, nonidle=1)
        buf, pos, remaining = run.buf, run.pos, run.remaining
        try:
            while True:
                if run.pending:
                    # the last step's fault, booked at this step
                    run.pending = False
                    r = run.r
                    if r == 0:
                        metrics.lat_buf.append(core.now - run.fault_start)
                        metrics.lat_who_buf.append(inst.index)
                        if rfc is not None:  # the stall lasts until the return is done
                            yield from self._fault_return(task, psi_cg)
                        run.fault_start = -1
                        if fault_unreferenced:
                            # experiment: the retried access completes without setting
                            # the accessed bit (the page starts unreferenced)
                            pos += 1
                            remaining -= 1
                            st.accesses += 1
                    elif r == VM_FAULT_NOPAGE:
                        # the stuck rule: retries with no page freed or aged under
                        # the limit that refuses the charge
                        st.block, st.freed, st.quiet = stuck_retry(
                            host.task_misc_cg(task), st.streak, st.block, st.freed, st.quiet
                        )
                    else:
                        task.signal_pending = True
                        task.pending_signo = task.pending_signo or SIGBUS
                        break
                if self._compiled:
                    self._takeover_wait -= 1
                    if self._takeover_wait <= 0:
                        run.buf, run.pos, run.remaining = buf, pos, remaining
                        if self._take_over(run):
                            return  # the continuation replaced this generator on the heap
                self.thread_steps_ref += 1
                if remaining <= 0 or task.exited:
                    break
                # at the end of its duration a thread first finishes the access it is
                # faulting on (it cannot leave a fault half-way)
                if until is not None and core.now >= until and not st.streak:
                    break
                if task.signal_pending:
                    break
                if st.quiet >= STUCK_RETRIES:
                    break  # stuck (epcsim.sim.stuck)
                if run.edmm_at is not None and st.accesses >= run.edmm_at:
                    # run.edmm_at stays set while the operations run: the threads are
                    # not offered meanwhile (dynamic.edmm_due)
                    run.buf, run.pos, run.remaining = buf, pos, remaining
                    ok = yield from self._edmm(inst, encl)
                    run.edmm_at = None
                    if not ok:
                        break
                    continue
                if pos >= len(buf):
                    want = min(CHUNK, remaining)
                    buf = pattern.take(rng, want)
                    pos = 0
                nxt = core.next_event_ns()
                n = len(buf) - pos
                if until is not None:
                    n = min(n, max(1, (until - core.now) // access_ns))
                if run.edmm_at is not None:
                    n = min(n, max(1, run.edmm_at - st.accesses))
                if nxt is not None:
                    n = min(n, max(1, (nxt - core.now) // access_ns))
                k = sgx_encl_access(encl, buf[pos : pos + n] if pos or n < len(buf) else buf)
                if k:
                    pos += k
                    remaining -= k
                    st.accesses += k
                    # the access was done (another thread's fault brought the page in)
                    st.streak = st.quiet = 0
                    run.buf, run.pos, run.remaining = buf, pos, remaining
                    yield k * access_ns
                    continue
                # a miss: one fault (atomic: NO_RECLAIM allocations never yield)
                idx = int(buf[pos])
                if run.fault_start < 0:
                    run.fault_start = core.now
                    if rfc is not None:
                        psi_task_change(host, psi_cg, core.now, stalled=1)
                before = list(host.encls_count)
                task.in_kernel += 1
                r = sgx_vma_fault(host, task, encl, idx)
                task.in_kernel -= 1
                # counted where the fault happens (a run may end before the next step)
                if r == 0:
                    st.faults += 1
                    st.streak = st.quiet = 0
                elif r == VM_FAULT_NOPAGE:
                    st.retries += 1
                    st.streak += 1
                run.pending, run.r = True, r
                run.buf, run.pos, run.remaining = buf, pos, remaining
                yield self._cost(before, None) + self.costs.fault
        finally:
            if run.epoch == epoch:
                if rfc is not None:
                    psi_task_change(
                        host,
                        psi_cg,
                        core.now,
                        nonidle=-1,
                        stalled=-1 if run.fault_start >= 0 else 0,
                    )
                self._thread_finally(inst, st, remaining, until)
        if inst.running_threads == 0:
            self._threads_done(inst)

    def thread(self, run: ThreadRun) -> Actor:
        """An enclave thread actor going on from *run* (the compiled engine hands a
        thread back with it); offered to the compiled engine again at its next step."""
        gen = self._thread(run)
        if self._compiled:
            self.thread_runs[gen] = run
        self._takeover_wait = 0
        self._takeover_backoff = 1
        return gen

    def take_over_later(self) -> None:
        """The compiled engine handed the threads back before a reclaim phase whose
        backing may not fit under a ``memory.max`` (the memcg OOM path runs on the
        reference): offer them again after twice as many thread steps as after the last
        such hand-back (at most ``TAKEOVER_BACKOFF_MAX``), not at the next step, where
        the next batch would likely hand them back again."""
        self._memcg_backoff = min(2 * self._memcg_backoff, TAKEOVER_BACKOFF_MAX)
        self._takeover_backoff = self._memcg_backoff
        self._takeover_wait = self._memcg_backoff

    def _take_over(self, run: ThreadRun | BuildRun) -> bool:
        """Offer the compiled engine the enclave threads at this step of *run*'s thread
        (epcsim.compiled.engine.take_over); True if it took them over.  A refusal of the
        run's state is retried after twice as many thread steps as the last (the state
        changes as actors start and end); ``engine="compiled"`` refuses at the first.
        Called when ``_takeover_wait`` has run down (the thread loop counts it).  An
        EADD build (*run* a BuildRun) is offered at its pages' ends the same way; a
        refusal of a build is no error and no note (the threads' offers say what ran)."""
        from ..compiled.engine import take_over

        why = take_over(self.sim, run, self.core.cur_cpu, CHUNK)
        if why is None:
            return True
        if isinstance(run, BuildRun):  # its own wait
            run.backoff = min(2 * run.backoff, TAKEOVER_BACKOFF_MAX)
            run.wait = run.backoff
            return False
        if self._compiled_required:
            raise EpcsimError(f"engine compiled: {why}; use engine reference or auto")
        if not self.sim.engine_note:
            self.sim.engine_note = why
        self._takeover_backoff = min(2 * self._takeover_backoff, TAKEOVER_BACKOFF_MAX)
        self._takeover_wait = self._takeover_backoff
        return False

    def _fault_return(self, task: Task, psi_cg: Cgroup) -> Generator[int, None, None]:
        """The rfc-knobs extension (in no kernel) at an EPC fault's return to user space:
        over sgx_epc.high, mem_cgroup_handle_over_high()'s reclaim and sleep
        (epcsim.kernel.rfc_knobs); then the thread's stall ends (sgx_epc.pressure).  Cut
        short (the run ends meanwhile), the thread's end leaves the stall instead."""
        host = self.host
        if sgx_cgroup_over_high(host.task_misc_cg(task).priv):
            sleep = yield from self.kstep(sgx_cgroup_handle_over_high(host, task, 1))
            if sleep:
                yield sleep
        psi_task_change(host, psi_cg, self.core.now, stalled=-1)

    def _thread_finally(self, inst: Instance, st: ThreadStats, remaining: int, until) -> None:
        """The end of an enclave thread (its last step).  A thread that ends with a fault
        unresolved (the stuck rule of :mod:`epcsim.sim.stuck`) and no signal to take is
        stuck."""
        task = inst.task
        st.ended_ns = self.core.now
        if st.streak and not task.signal_pending and not task.exited:
            st.stuck = True
        inst.running_threads -= 1

    def _threads_done(self, inst: Instance) -> None:
        """Every thread of *inst* has ended: the process exits (status 0, or the signal
        it has to take), unless a thread is stuck: a stuck thread never returns from its
        fault, so the process stays (with its EPC pages) and its outcome is "stuck"."""
        task = inst.task
        if any(t.stuck for t in inst.threads) and not task.exited:
            inst.outcome = "stuck"
            return
        self._exit(inst, 0)

    def thread_end_step(
        self, inst: Instance, st: ThreadStats, remaining: int, until: int | None, sigbus: bool
    ) -> Actor:
        """The last step of a thread the compiled engine ran: the loop ends (on SIGBUS
        the signal is raised first), then the thread's end."""
        if sigbus:
            task = inst.task
            task.signal_pending = True
            task.pending_signo = task.pending_signo or SIGBUS
        self._thread_finally(inst, st, remaining, until)
        if inst.running_threads == 0:
            self._threads_done(inst)
        return
        yield  # pragma: no cover

    def _trace_patterns(self, spec: EnclaveSpec) -> list:
        """One TracePattern per thread (a single trace is shared by every thread, each
        reading it from the start)."""
        from ..workload.traces import TracePattern, open_trace

        paths, fmt, opts = trace_workload(spec.workload or {})
        if len(paths) == 1:
            paths = paths * spec.threads
        return [TracePattern(open_trace(p, format=fmt, **opts)) for p in paths]

    def _edmm(self, inst: Instance, encl: Encl) -> Generator[int, None, bool]:
        """The enclave's EDMM operations on its first pages: restrict permissions
        (EMODPR), then removal (modify types to TRIM, then remove); every page of each
        ioctl is preceded by sgx_reclaim_direct()."""
        spec = inst.spec
        assert isinstance(spec, EnclaveSpec) and spec.edmm is not None
        host, task = self.host, inst.task
        steps = []
        if spec.edmm.restrict_pages:
            n = spec.edmm.restrict_pages * PAGE_SIZE
            steps.append(
                ("edmm restrict", lambda: ioc_enclave_restrict_permissions(host, task, encl, 0, n))
            )
        if spec.edmm.remove_pages:
            m = spec.edmm.remove_pages * PAGE_SIZE
            steps.append(
                (
                    "edmm remove",
                    lambda: _edmm_remove(host, task, encl, m),
                )
            )
        for what, make in steps:
            try:
                done = yield from self.kstep(make())
                result = "ok"
                if done is False:  # the process died between its two ioctls
                    sig = _signal_name(task.exit_status or 0)
                    result = f"killed by {sig} before SGX_IOC_ENCLAVE_REMOVE_PAGES"
            except OSError as e:
                result = f"{errname(e.errno)}: {e.strerror}"
            self.ops.append(
                {"time_ns": self.core.now, "op": f"{what} {inst.name}", "result": result}
            )
            if task.exited:
                return False
        return True

    def _vepc_proc(self, inst: Instance) -> Actor:
        spec = inst.spec
        assert isinstance(spec, VepcSpec)
        task = self._spawn_task(inst)
        if task is None:
            return
        v = vepc_open(self.host, task, spec.pages)
        res = yield from self.kstep(vepc_access(self.host, task, v, np.arange(spec.pages)))
        st = ThreadStats(accesses=res.done, target=spec.pages, faults=res.faults)
        st.retries = res.retries
        inst.threads.append(st)
        status = 135 if res.sigbus else 0
        # a VMM keeps its guest memory until killed: vEPC pages stay until the end
        inst.status = status
        inst.outcome = "success" if status == 0 else "failure"
        if res.sigbus:
            self._exit(inst, status)

    # --- timed operations -------------------------------------------------------------------

    def _op(self, k: int, a) -> Actor:
        fs = self.host.fs
        rec: dict[str, Any] = {"time_ns": self.core.now, "index": k}
        try:
            if a.write is not None:
                rec["op"] = f"write {a.write.path} {a.write.value!r}"
                fs.write(
                    a.write.path, resolve_write_value(a.write.path, a.write.value, self.capacity)
                )
            elif a.mkdir is not None:
                rec["op"] = f"mkdir {a.mkdir}"
                fs.mkdir(a.mkdir)
            elif a.rmdir is not None:
                rec["op"] = f"rmdir {a.rmdir}"
                fs.rmdir(a.rmdir)
            elif a.kill is not None:
                rec["op"] = f"kill {a.kill}"
                for inst in self.groups.get(a.kill) or [self.instances[a.kill]]:
                    if inst.task is not None and not inst.task.exited:
                        inst.killed = True
                        send_signal(self.host, inst.task, SIGTERM)
                        if inst.task.exited:
                            self._end_instance(inst, inst.task.exit_status or 143)
            elif a.start is not None:
                rec["op"] = f"start {a.start}"
                for inst in self.groups.get(a.start) or [self.instances[a.start]]:
                    self._start_instance(inst)
            elif a.migrate is not None:
                rec["op"] = f"migrate {a.migrate.enclave} {a.migrate.cgroup}"
                for inst in self.groups.get(a.migrate.enclave) or [
                    self.instances[a.migrate.enclave]
                ]:
                    if inst.task is not None and not inst.task.exited:
                        fs.write(f"{a.migrate.cgroup}/cgroup.procs", str(inst.task.pid))
                        inst.cgroup = inst.task.cgroup.path
            rec["result"] = "ok"
        except OSError as e:
            rec["result"] = f"{errname(e.errno)}: {e.strerror}"
        self.ops.append(rec)
        return
        yield  # pragma: no cover


def _edmm_remove(host: Host, task: Task, encl: Encl, nbytes: int) -> Generator[str, None, bool]:
    """Remove the first *nbytes* of *encl* as its runtime does: ``SGX_IOC_ENCLAVE_MODIFY_TYPES``
    to TRIM, then ``SGX_IOC_ENCLAVE_REMOVE_PAGES`` -- unless the process died on return
    from the first (a fatal signal pending: the memcg OOM killer's SIGKILL from a
    reclaim inside it, a timed kill): then it never makes the second.  Returns False
    then, True when both ran."""
    yield from ioc_enclave_modify_types(host, task, encl, 0, nbytes, SGX_PAGE_TYPE_TRIM)
    if task.exited:
        return False
    yield from ioc_enclave_remove_pages(host, task, encl, 0, nbytes)
    return True


def _oserror_text(e: OSError) -> str:
    """``SGX_IOC_ENCLAVE_ADD_PAGES: ENOMEM (Cannot allocate memory)``: which call failed,
    with which errno."""
    return f"{e.filename}: {errname(e.errno)} ({e.strerror})"


def _signal_name(status: int) -> str:
    """``SIGKILL`` for exit *status* 137 (128 + the signal number)."""
    import signal

    try:
        return signal.Signals(status - 128).name
    except ValueError:
        return f"signal {status - 128}"


def _oom_error_text(host, status: int) -> str:
    """``enclave killed by the EPC OOM killer (policy oom-v2): SIGBUS``: the error of a
    process whose enclave a policy's EPC OOM killer killed (SGX_ENCL_OOM; sgx_oom_encl()
    of the series v2 patch 14), with the signal of its exit *status*."""
    policy = host.policy.name if host.policy is not None else "v16"
    return f"enclave killed by the EPC OOM killer (policy {policy}): {_signal_name(status)}"


def _stable_hash(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode())
