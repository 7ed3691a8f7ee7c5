"""The simulation engine: a tiny event core and the actors that drive the kernel model.

The core (as SimPy's) is a clock and a heap of ``(time, priority, seq, actor)``; equal
times fall back to priority, then insertion order, so runs are deterministic.  An actor
is a generator that yields the virtual duration (ns) of the step it just made; it runs
again that much later.  Each step is one atomic kernel operation between the yield
points the kernel model defines (one charge attempt, one phase of a reclaim batch, one
fault, one ADD_PAGES page), so actors interleave as CPUs do in the kernel.

Actors: enclave processes and their threads, vEPC owners, ksgxd (started when the
allocator wakes it), one ``sgx_cg_wq`` worker per queued cgroup work item (several may
run at once, one per cgroup), timed scenario operations, and a sampler.

Time of a step = the cost model applied to the ENCLS leaves the step executed
(``host.encls_count`` before/after) plus a fixed cost by yield point.  Runs of resident
hits are one vectorised step of ``n * costs.access``, cut at the next event of any
other actor (conservative synchronisation), so no access crosses another actor's event.

CPUs: user tasks (enclave processes while they build, enclave threads, vEPC owners) are
placed on the ``host.cpus`` CPUs round-robin in start order; a task whose CPU is busy
with another task's step waits for it (FIFO at equal times).  Deliberate
simplifications: kernel threads (ksgxd, workers), timed operations and the sampler run
in their own contexts without competing for CPUs; a thread's re-fault after
VM_FAULT_NOPAGE costs one fault round trip; no preemption inside a step.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .. import __version__
from ..costs import CostModel
from ..errors import EpcsimError
from ..kernel import Host, send_signal, task_exit
from ..kernel.cgroup import host_controllers
from ..kernel.constants import (
    PAGE_SIZE,
    SGX_PAGE_TYPE_TRIM,
    VM_FAULT_NOPAGE,
)
from ..kernel.encl import Encl, sgx_encl_access, sgx_vma_fault
from ..kernel.epc_cgroup import (
    SgxCgroup,
    sgx_cg_wq_take_runnable,
    sgx_cgroup_reclaim_work_func,
)
from ..kernel.host import SIGBUS, SIGTERM, Task
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
from ..programs.kselftest import TestSgxStats, test_sgx_process
from ..result import TIMESERIES_SCHEMA, TIMESERIES_SCHEMA_VERSION, Result
from ..scenario.schema import (
    EnclaveSpec,
    Scenario,
    VepcSpec,
    eval_size,
    load_scenario,
    resolve_write_value,
    trace_workload,
)
from ..units import parse_time
from ..workload.patterns import make_pattern
from .progress import SimProgress, sim_progress
from .stuck import STUCK_RETRIES

__all__ = ["Simulation", "simulate"]

Actor = Generator[int, None, Any]

#: priorities at equal times: operations, then everything else, then the sampler
PRIO_OP = 0
PRIO_ACTOR = 1
PRIO_SAMPLE = 2

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
    #: .. of them since the thread's cgroup's nr_freed last moved, and its value then
    #: (the stuck rule, epcsim.sim.stuck)
    quiet: int = 0
    freed: int = 0
    started_ns: int = -1
    ended_ns: int = -1
    stuck: bool = False


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
    #: a kselftest process's own counters and error (its one thread's stats follow them)
    selftest: TestSgxStats | None = None


class Simulation:
    """One run of a scenario.  Use :func:`simulate` unless you need the object."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        progress: Callable[[SimProgress], None] | None = None,
        engine: str = "auto",
    ) -> None:
        sc = scenario
        self.sc = sc
        #: engine "auto" / "batched" / "reference" (epcsim.compiled.engine): which one ran, why
        from ..compiled.engine import check_engine  # the compiled engine sits above sim

        why = check_engine(engine, sc, {"seed": seed, "progress": progress, "engine": engine})
        #: the batched engine may take the enclave thread over at its first step
        self._batched = engine != "reference" and why is None
        self.engine_note = (why or "") if engine != "reference" else ""
        self.engine_used = "reference"
        #: "batched" was asked for: refuse (EpcsimError) rather than fall back
        self._batched_required = engine == "batched"
        self._cur_cpu = -1
        h = sc.host
        self.seed = h.seed if seed is None else seed
        self.costs = CostModel(**{k: parse_time(v, what=k) for k, v in h.costs.items()})
        self.leaf_cost = self.costs.leaf_costs()
        self.capacity = sc.capacity
        if h.sections is not None:
            self.host = Host(sections=list(h.sections), misc_enabled=h.misc, sgx2=h.sgx2)
        else:
            self.host = Host(h.epc, misc_enabled=h.misc, sgx2=h.sgx2)
        self.host.no_age = h.experiments.no_age
        self.limit_ns = parse_time(h.duration)
        self.sample_ns = parse_time(h.sample_interval)
        self.progress = progress
        self.now = 0
        self._heap: list[tuple[int, int, int, Actor, int]] = []
        #: when each CPU is free again (user tasks only; see ``start``)
        self.cpu_free = [0] * h.cpus
        self._cpu_rr = 0
        self._seq = 0
        self._ksgxd_running = False
        self.instances: dict[str, Instance] = {}
        self.groups: dict[str, list[Instance]] = {}
        self._group_waiters: dict[str, list[Callable[[], None]]] = {}
        self.ops: list[dict] = []
        self.fault_lat: list[np.ndarray] = []
        self._lat_buf: list[int] = []
        self._cols: dict[str, list] = {f.name: [] for f in TIMESERIES_SCHEMA}
        self._active = 0  # actors other than the sampler
        #: ops waiting for an instance to have added N pages: (inst, pages, k, at, delay)
        self._watchers: list[tuple[Instance, int, int, Any, int]] = []
        #: enclave threads not yet run, with their arguments (the batched engine takes
        #: them over together)
        self._fresh: dict[Actor, tuple] = {}

    # --- the core -----------------------------------------------------------------------

    def _schedule(self, t: int, actor: Actor, prio: int = PRIO_ACTOR, cpu: int = -1) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, prio, self._seq, actor, cpu))

    def start(self, actor: Actor, delay: int = 0, prio: int = PRIO_ACTOR, cpu: int = -1) -> None:
        """Run *actor* (a generator yielding step durations) *delay* ns from now, on
        CPU *cpu* (a user task; it waits while another step runs there) or, with -1,
        in its own context (kernel threads, operations, the sampler)."""
        if prio != PRIO_SAMPLE:
            self._active += 1
        self._schedule(self.now + delay, actor, prio, cpu)

    def _next_cpu(self) -> int:
        """CPUs for user tasks, assigned round-robin in start order."""
        c = self._cpu_rr % len(self.cpu_free)
        self._cpu_rr += 1
        return c

    def next_event_ns(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run(self) -> Result:
        """Run to completion or the virtual-time limit; return the result."""
        self._setup()
        self.start(self._sampler(), prio=PRIO_SAMPLE)
        limit = self.limit_ns
        last_progress = 0
        steps = 0
        heap = self._heap
        while heap:
            t, prio, _, actor, cpu = heapq.heappop(heap)
            if t > limit:
                heapq.heappush(heap, (t, prio, 0, actor, cpu))
                break
            if cpu >= 0 and self.cpu_free[cpu] > t:
                # the CPU is busy with another task's step: wait for it
                self._schedule(self.cpu_free[cpu], actor, prio, cpu)
                continue
            self.now = t
            self._cur_cpu = cpu
            try:
                d = next(actor)
            except StopIteration:
                if prio != PRIO_SAMPLE:
                    self._active -= 1
                d = None
            if d is not None:
                d = d if d > 0 else 1
                if cpu >= 0:
                    self.cpu_free[cpu] = t + d
                self._schedule(t + d, actor, prio, cpu)
            self._kick_kernel_threads()
            if self._watchers:
                self._check_watchers()
            steps += 1
            if self.progress is not None and (
                t - last_progress >= limit // 200 + 1 or not steps & 4095
            ):
                last_progress = t
                self.progress(sim_progress(self, t))
            if self._active == 0:
                break
        truncated = bool(heap) and self._active > 0
        if truncated:
            self.now = limit
        if self.progress is not None:
            self.progress(sim_progress(self, self.now))
        self._record_sample()
        res = self._result(truncated=truncated)
        res.engine = self.engine_used
        res.engine_note = self.engine_note
        return res

    # --- cost accounting ----------------------------------------------------------------

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
        return c + self.costs.kernel_step

    def kstep(self, gen: Generator[str, None, Any]) -> Generator[int, None, Any]:
        """Run a kernel-model generator operation as sim steps: one step per kernel yield
        point, each costing what it executed.  Returns the operation's value; an OSError
        it raises is re-raised after its last step is charged."""
        counts = self.host.encls_count
        while True:
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

    def _kick_kernel_threads(self) -> None:
        host = self.host
        if host.ksgxd_woken and not self._ksgxd_running:
            self._ksgxd_running = True
            self.start(self._ksgxd())
        if host.sgx_cg_wq:
            for sgx_cg in sgx_cg_wq_take_runnable(host):
                self.start(self._worker(sgx_cg))

    def _check_watchers(self) -> None:
        keep = []
        for w in self._watchers:
            inst, pages, k, a, delay = w
            if inst.encl is None and inst.task is not None and inst.task.encl_fds:
                inst.encl = self.host.encls[inst.task.encl_fds[0]]
            if inst.encl is not None and inst.encl.nr_added + inst.encl.nr_eaug >= pages:
                self.start(self._op(k, a), delay, PRIO_OP)
            elif inst.ended_ns < 0:
                keep.append(w)
        self._watchers = keep

    def _ksgxd(self, resume: Generator[str, None, bool] | None = None) -> Actor:
        """ksgxd: reclaims while should_reclaim_global(64), then sleeps until woken.
        *resume*: an iteration to finish first (the batched engine's hand-back)."""
        try:
            while True:
                gen, resume = resume or ksgxd_step(self.host), None
                busy = yield from self.kstep(gen)
                if not busy:
                    return
        finally:
            self._ksgxd_running = False

    def _ksgxd_end(self) -> Actor:
        """ksgxd after it decided to sleep: the actor ends at its next step."""
        self._ksgxd_running = False
        return
        yield  # pragma: no cover

    def _actor_end(self) -> Actor:
        """An actor whose work is done: it ends at its next step."""
        return
        yield  # pragma: no cover

    def _worker(self, sgx_cg: SgxCgroup, resume: Any = None) -> Actor:
        """A ``sgx_cg_wq`` worker running one cgroup's reclaim work item (*resume*: the
        rest of a running one, from the batched engine's hand-back)."""
        yield from self.kstep(sgx_cgroup_reclaim_work_func(self.host, sgx_cg, _resume=resume))

    # --- setup ----------------------------------------------------------------------------

    def _setup(self) -> None:
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
            self.start(self._delayed(lambda g=spec.name: self._start_group(g)), parse_time(s))
        for k, a in enumerate(sc.at):
            delay = parse_time(a.time)
            if a.when is not None:
                pages = eval_size(a.when.added, self.capacity, what="added") // PAGE_SIZE
                self._watchers.append((self.instances[a.when.enclave], pages, k, a, delay))
            elif a.after is None:
                self.start(self._op(k, a), delay, PRIO_OP)
            else:
                self._group_waiters.setdefault(a.after, []).append(
                    lambda k=k, a=a, d=delay: self.start(self._op(k, a), d, PRIO_OP)
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
        inst.started_ns = self.now
        inst.outcome = "running"
        if isinstance(inst.spec, VepcSpec):
            self.start(self._vepc_proc(inst), cpu=self._next_cpu())
        elif inst.spec.program == "kselftest":
            self.start(self._kselftest_proc(inst), cpu=self._next_cpu())
        else:
            self.start(self._enclave_proc(inst), cpu=self._next_cpu())

    def _end_instance(self, inst: Instance, status: int) -> None:
        if inst.ended_ns >= 0:
            return
        inst.ended_ns = self.now
        inst.status = status
        if inst.killed and status >= 128:
            inst.outcome = "killed"
        else:
            inst.outcome = "success" if status == 0 else "failure"
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

    def _kselftest_proc(self, inst: Instance) -> Actor:
        task = self._spawn_task(inst)
        if task is None:
            return
        heap = eval_size(inst.spec.size, self.capacity, what="size")
        # the process's one thread: its accesses, faults and retries as test_sgx counts
        # them (the two EENTERs), its enclave as soon as it is opened
        inst.threads.append(ThreadStats(started_ns=self.now))
        stats = inst.selftest = TestSgxStats(
            on_open=lambda encl: setattr(inst, "encl", encl), stuck_retries=STUCK_RETRIES
        )
        status = yield from self.kstep(test_sgx_process(self.host, task, heap, stats=stats))
        inst.threads[0].ended_ns = self.now
        if status is None:  # stuck: the process stays in its fault
            inst.threads[0].stuck = True
            inst.outcome = "stuck"
            return
        self._end_instance(inst, status)

    def _enclave_proc(self, inst: Instance) -> Actor:
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
            if spec.build == "eadd" and not task.exited:
                yield from self.kstep(
                    ioc_enclave_add_pages(host, task, encl, 0, data, measure=False)
                )
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
        until = self.now + parse_time(wl["duration"]) if "duration" in wl else None
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
            gen = self._thread(inst, encl, pattern, rngs[k], share, until, st, k == 0)
            if self._batched:
                self._fresh[gen] = (inst, encl, pattern, rngs[k], share, until, st)
            self.start(gen, cpu=self._next_cpu())

    def _thread(self, inst, encl, pattern, rng, count, until, st: ThreadStats, first) -> Actor:
        """An enclave thread: accesses in vectorised runs of hits, faults one at a time."""
        host = self.host
        task = inst.task
        access_ns = self.costs.access
        spec = inst.spec
        edmm_at = spec.edmm.at_access if (first and spec.edmm is not None) else None
        st.started_ns = self.now
        fault_unreferenced = self.sc.host.experiments.fault_unreferenced
        buf = np.zeros(0, np.int64)
        pos = 0
        remaining = count if count is not None else 1 << 62
        fault_start = -1
        if self._batched:
            from ..compiled.engine import take_over

            why = take_over(
                self, inst, encl, pattern, rng, remaining, until, st, self._cur_cpu, CHUNK
            )
            if why is None:
                return  # the continuation replaced this generator on the heap
            if self._batched_required:
                raise EpcsimError(f"engine compiled: {why}; use engine reference or auto")
            self.engine_note = why
            self._batched = False
            self._fresh.clear()
        try:
            while remaining > 0 and not task.exited:
                # at the end of its duration a thread first finishes the access it is
                # faulting on (it cannot leave a fault half-way)
                if until is not None and self.now >= until and not st.streak:
                    break
                if task.signal_pending:
                    break
                if st.quiet >= STUCK_RETRIES:
                    break  # stuck (epcsim.sim.stuck)
                if edmm_at is not None and st.accesses >= edmm_at:
                    edmm_at = None
                    ok = yield from self._edmm(inst, encl)
                    if not ok:
                        break
                    continue
                if pos >= len(buf):
                    want = min(CHUNK, remaining)
                    buf = pattern.take(rng, want)
                    pos = 0
                nxt = self.next_event_ns()
                n = len(buf) - pos
                if until is not None:
                    n = min(n, max(1, (until - self.now) // access_ns))
                if edmm_at is not None:
                    n = min(n, max(1, edmm_at - st.accesses))
                if nxt is not None:
                    n = min(n, max(1, (nxt - self.now) // access_ns))
                k = sgx_encl_access(encl, buf[pos : pos + n] if pos or n < len(buf) else buf)
                if k:
                    pos += k
                    remaining -= k
                    st.accesses += k
                    # the access was done (another thread's fault brought the page in)
                    st.streak = st.quiet = 0
                    yield k * access_ns
                    continue
                # a miss: one fault (atomic: NO_RECLAIM allocations never yield)
                idx = int(buf[pos])
                if fault_start < 0:
                    fault_start = self.now
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
                yield self._cost(before, None) + self.costs.fault
                if r == 0:
                    self._lat_buf.append(self.now - fault_start)
                    fault_start = -1
                    if fault_unreferenced:
                        # experiment: the retried access completes without setting the
                        # accessed bit (the page starts unreferenced)
                        pos += 1
                        remaining -= 1
                        st.accesses += 1
                    continue
                if r == VM_FAULT_NOPAGE:
                    # the stuck rule: retries with nothing freed in the cgroup's subtree
                    freed = host.task_misc_cg(task).priv.nr_freed
                    if st.streak == 1 or freed != st.freed:
                        st.freed = freed
                        st.quiet = 0
                    st.quiet += 1
                    continue
                task.signal_pending = True
                task.pending_signo = task.pending_signo or SIGBUS
                break
        finally:
            self._thread_finally(inst, st, remaining, until)
        if inst.running_threads == 0:
            self._threads_done(inst)

    def _thread_finally(self, inst: Instance, st: ThreadStats, remaining: int, until) -> None:
        """The end of an enclave thread (its last step).  A thread that ends with a fault
        unresolved (the stuck rule of :mod:`epcsim.sim.stuck`) and no signal to take is
        stuck."""
        task = inst.task
        st.ended_ns = self.now
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

    def _thread_end_step(
        self, inst: Instance, st: ThreadStats, remaining: int, until, sigbus: bool
    ) -> Actor:
        """The last step of a thread the batched engine ran: the loop ends (on SIGBUS
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
                    lambda: _chain(
                        ioc_enclave_modify_types(host, task, encl, 0, m, SGX_PAGE_TYPE_TRIM),
                        ioc_enclave_remove_pages(host, task, encl, 0, m),
                    ),
                )
            )
        for what, make in steps:
            try:
                yield from self.kstep(make())
                result = "ok"
            except OSError as e:
                result = f"{_errname(e.errno)}: {e.strerror}"
            self.ops.append({"time_ns": self.now, "op": f"{what} {inst.name}", "result": result})
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
        rec: dict[str, Any] = {"time_ns": self.now, "index": k}
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
            rec["result"] = f"{_errname(e.errno)}: {e.strerror}"
        self.ops.append(rec)
        return
        yield  # pragma: no cover

    # --- sampling and results ----------------------------------------------------------------

    def _sampler(self) -> Actor:
        while True:
            self._record_sample()
            if self._active == 0:
                return
            yield self.sample_ns

    def _record_sample(self) -> None:
        if self._lat_buf:
            self.fault_lat.append(np.asarray(self._lat_buf, np.int64))
            self._lat_buf = []
        cols = self._cols
        if cols["time_ns"] and cols["time_ns"][-1] == self.now:
            return
        for sgx_cg in self.host.sgx_cgroups:
            if sgx_cg is None:
                continue
            cg = sgx_cg.cg
            cols["time_ns"].append(self.now)
            cols["cgroup"].append(_cg_path(sgx_cg))
            cols["usage_bytes"].append(cg.usage)
            cols["limit_bytes"].append(None if cg.parent is None or cg.max >= 1 << 63 else cg.max)
            cols["peak_bytes"].append(cg.peak)
            cols["max_events"].append(cg.events if cg.parent is not None else cg.events_local)
            cols["faults"].append(sgx_cg.nr_faults)
            cols["evictions"].append(sgx_cg.nr_evicted)
            cols["reclaim_batches"].append(sgx_cg.nr_reclaim_batches)
            cols["reclaimable_pages"].append(sgx_cg.lru.nr)
            cols["enomem"].append(sgx_cg.nr_enomem)

    def _result(self, *, truncated: bool) -> Result:
        table = pa.table(self._cols, schema=TIMESERIES_SCHEMA)
        parts = self.fault_lat
        if len(parts) == 1:
            lat = parts[0]
        else:
            lat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        for inst in self.instances.values():
            ks = inst.selftest
            if ks is not None:
                t = inst.threads[0]
                t.accesses, t.faults, t.retries = ks.accesses, ks.faults, ks.retries
                t.streak = ks.eenters[-1].streak if ks.eenters else 0
                inst.error = inst.error or ks.error
            for t in inst.threads:
                # a thread still retrying a fault when time ran out is stuck
                if t.ended_ns < 0 and t.streak:
                    t.stuck = True
            if inst.started_ns >= 0 and inst.ended_ns < 0 and inst.outcome == "running":
                inst.outcome = "stuck" if any(t.stuck for t in inst.threads) else "running"
        summary = self._summary(truncated, lat)
        return Result(summary, table, lat)

    def _summary(self, truncated: bool, lat: np.ndarray) -> dict:
        host = self.host
        access_ns = self.costs.access
        cgroups: dict[str, dict] = {}
        for sgx_cg in host.sgx_cgroups:
            if sgx_cg is None:
                continue
            cg = sgx_cg.cg
            cgroups[_cg_path(sgx_cg)] = {
                "usage_bytes": cg.usage,
                "peak_bytes": cg.peak,
                "limit_bytes": None if cg.parent is None or cg.max >= 1 << 63 else cg.max,
                # the root has no misc.events: its failures (capacity) are local ones
                "max_events": cg.events if cg.parent is not None else cg.events_local,
                "max_events_local": cg.events_local,
                "faults": sgx_cg.nr_faults,
                "evictions": sgx_cg.nr_evicted,
                "reclaim_batches": sgx_cg.nr_reclaim_batches,
                "enomem": sgx_cg.nr_enomem,
            }
        enclaves: dict[str, dict] = {}
        for inst in self.instances.values():
            acc = sum(t.accesses for t in inst.threads)
            # a kselftest process's accesses are EENTERs inside its one step: not timed
            # accesses, so no slowdown (docs/OUTPUTS.md)
            timed = getattr(inst.spec, "program", None) != "kselftest"
            ideal = timed * max((t.accesses for t in inst.threads), default=0) * access_ns
            run = max(
                (
                    (t.ended_ns if t.ended_ns >= 0 else self.now) - t.started_ns
                    for t in inst.threads
                    if t.started_ns >= 0
                ),
                default=0,
            )
            e = inst.encl
            enclaves[inst.name] = {
                "kind": "vepc" if isinstance(inst.spec, VepcSpec) else "enclave",
                "group": inst.group,
                "cgroup": inst.cgroup,
                "outcome": inst.outcome,
                "exit_status": inst.status,
                "error": inst.error,
                "started_ns": inst.started_ns,
                "ended_ns": inst.ended_ns,
                "accesses": acc,
                "faults": sum(t.faults for t in inst.threads),
                "fault_retries": sum(t.retries for t in inst.threads),
                "stuck_threads": sum(1 for t in inst.threads if t.stuck),
                "slowdown": round(run / ideal, 6) if ideal and run > 0 else None,
                "pages_added": e.nr_added + e.nr_eaug if e is not None else 0,
                "pages_evicted": e.nr_evicted if e is not None else 0,
                "secs_evicted": e.nr_secs_evicted if e is not None else 0,
                "eldu": e.nr_eldu if e is not None else 0,
                "secs_eldu": e.nr_secs_eldu if e is not None else 0,
                "trace_skipped": inst.trace_skipped,
            }
        expectations = [self._verdict(k, x) for k, x in enumerate(self.sc.expect)]
        lat_summary = {}
        if len(lat):
            q = np.percentile(lat, [50, 90, 99, 100]).round().astype(np.int64).tolist()
            lat_summary = {
                "count": int(len(lat)),
                "p50_ns": q[0],
                "p90_ns": q[1],
                "p99_ns": q[2],
                "max_ns": q[3],
            }
        return {
            "epcsim_version": __version__,
            "timeseries_schema_version": TIMESERIES_SCHEMA_VERSION,
            "scenario": self.sc.name,
            "scenario_hash": self.sc.digest(),
            "seed": self.seed,
            "capacity_bytes": self.capacity,
            "misc_enabled": self.sc.host.misc,
            "experiments": self.sc.host.experiments.model_dump(),
            "sim_time_ns": self.now,
            "time_limit_ns": self.limit_ns,
            "sample_interval_ns": self.sample_ns,
            "truncated": truncated,
            "time_is_estimate": "virtual times come from the cost model (docs/COSTS.md)",
            "costs_ns": self.costs.model_dump(),
            "encls": {n: c for n, c in zip(_leaf_names(), host.encls_count)},
            "cgroups": cgroups,
            "enclaves": enclaves,
            "fault_latency": lat_summary,
            "ops": self.ops,
            "expectations": expectations,
            "passed": all(x["passed"] for x in expectations),
            "outcome": "pass" if all(x["passed"] for x in expectations) else "fail",
        }

    def _verdict(self, k: int, x) -> dict:
        name = x.name or f"expect[{k}]"
        if x.file is not None:
            try:
                got = self.host.fs.read(x.file)
            except OSError as e:
                got = f"<{_errname(e.errno)}>"
            want = x.equals if x.equals.endswith("\n") or got.startswith("<") else x.equals + "\n"
            return {
                "name": name,
                "passed": got == want,
                "detail": f"{x.file} reads {got!r}, expected {want!r}",
            }
        insts: list[Instance] = []
        for n in x.enclaves:
            insts += self.groups.get(n) or [self.instances[n]]
        if x.ignore_killed:
            insts = [i for i in insts if not i.killed]
        hits = [i.outcome == x.outcome for i in insts]
        ok = {"all": all(hits), "any": any(hits), "none": not any(hits)}[x.quantifier]
        outcomes = ", ".join(f"{i.name}={i.outcome}" for i in insts)
        return {
            "name": name,
            "passed": bool(ok),
            "detail": f"{x.quantifier} {x.outcome}: {outcomes}",
        }


def _chain(*gens: Generator[str, None, Any]) -> Generator[str, None, Any]:
    """Run kernel generator operations one after the other."""
    out = None
    for g in gens:
        out = yield from g
    return out


def _cg_path(sgx_cg: SgxCgroup) -> str:
    cg = sgx_cg.cg
    if cg.parent is None:
        return "/"
    if cg.cgroup is not None:
        return cg.cgroup.path
    return f"(offline #{sgx_cg.id})"


def _leaf_names() -> tuple[str, ...]:
    from ..kernel.encls import LEAF_NAMES

    return LEAF_NAMES


def _oserror_text(e: OSError) -> str:
    """``SGX_IOC_ENCLAVE_ADD_PAGES: ENOMEM (Cannot allocate memory)``: which call failed,
    with which errno."""
    return f"{e.filename}: {_errname(e.errno)} ({e.strerror})"


def _errname(code: int | None) -> str:
    import errno

    return errno.errorcode.get(code or 0, str(code))


def _stable_hash(s: str) -> int:
    import zlib

    return zlib.crc32(s.encode())


def simulate(
    scenario: Scenario | str | dict,
    *,
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: Callable[[SimProgress], None] | None = None,
    engine: str = "auto",
) -> Result:
    """Run *scenario* (a :class:`Scenario`, a path, ``builtin:NAME``, a TOML string or a
    dict) and return its :class:`Result`.  Same scenario and seed, same result, with
    either engine (*engine*: "auto" = batched where eligible, "batched", "reference";
    see :mod:`epcsim.compiled.engine`)."""
    if not isinstance(scenario, Scenario) or overrides:
        src = scenario.model_dump(mode="json") if isinstance(scenario, Scenario) else scenario
        scenario = load_scenario(src, overrides=overrides)
    return Simulation(scenario, seed=seed, progress=progress, engine=engine).run()
