"""The reference engine: one run of a scenario, composed of an event core, actors and
metrics.

:class:`Simulation` is the host object: it builds the kernel model's :class:`Host` and
the cost model from the scenario and composes

- ``core`` (:class:`~epcsim.sim.core.EventCore`): the clock, the heap of
  ``(time, priority, seq, actor, cpu)`` entries, the CPUs;
- ``metrics`` (:class:`~epcsim.sim.metrics.Metrics`): the sampler, the time-series
  columns, the fault latencies, the summary and verdicts;
- ``actors`` (:class:`~epcsim.sim.actors.Actors`): enclave processes and their
  threads, vEPC owners, ksgxd, the ``sgx_cg_wq`` workers, timed operations;

and runs the event loop (:meth:`Simulation.run`).

CPUs: user tasks (enclave processes while they build, enclave threads, vEPC owners) are
placed on the ``host.cpus`` CPUs round-robin in start order; a task whose CPU is busy
with another task's step waits for it (FIFO at equal times).  Deliberate
simplifications: kernel threads (ksgxd, workers), timed operations and the sampler run
in their own contexts without competing for CPUs; a thread's re-fault after
VM_FAULT_NOPAGE costs one fault round trip; no preemption inside a step.

The compiled engine (:mod:`epcsim.compiled.engine`) uses only the public members of
these parts (``docs/ENGINES.md``, "The hand-over surface").
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from ..costs import CostModel
from ..kernel import Host
from ..result import Result
from ..scenario.schema import Scenario, load_scenario
from ..units import parse_time
from .actors import Actors, Instance, ThreadStats
from .core import PRIO_SAMPLE, EventCore
from .metrics import Metrics
from .progress import SimProgress, sim_progress

__all__ = ["Instance", "Simulation", "ThreadStats", "simulate"]


class Simulation:
    """One run of a scenario.  Use :func:`simulate` unless you need the object.

    Attributes:
        core: the event core (clock, heap, CPUs).
        metrics: samples, latencies, the summary.
        actors: the actors and their state.
        host: the kernel model.
        instances: every enclave process or vEPC owner by name (``name#k`` in a group).
        groups: the instances of each scenario ``[[enclave]]`` / ``[[vepc]]`` entry.
        ops: the timed operations' records (``summary.json``'s ``ops``).
        engine_used, engine_note: which engine ran ("reference", "compiled", or "mixed":
            the reference ran some enclave thread steps and the compiled engine the
            others), and why the compiled engine did not run (at first).
        events: the events (actor steps) each engine ran: the reference's heap pops,
            the compiled core's steps (its sequence numbers).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        progress: Callable[[SimProgress], None] | None = None,
        engine: str = "auto",
        episode_log: bool = False,
    ) -> None:
        sc = scenario
        self.sc = sc
        #: engine "auto" / "compiled" / "reference" (epcsim.compiled.engine; "batched" is
        #: the old name of "compiled"): which one ran, why
        from ..compiled.engine import (  # the compiled engine sits above sim
            ENGINE_ALIASES,
            check_engine,
        )

        engine = ENGINE_ALIASES.get(engine, engine) if isinstance(engine, str) else engine

        options = {"seed": seed, "progress": progress, "engine": engine}
        if episode_log:
            options["episode_log"] = True
        why = check_engine(engine, sc, options)
        self.engine_note = (why or "") if engine != "reference" else ""
        self.engine_used = "reference"
        self.events = {"compiled": 0, "reference": 0}
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
        from ..policies import make as make_policy

        self.host.policy = make_policy(h.policy, seed=self.seed)
        if self.host.policy is not None:
            self.host.policy.attach(self.host)
        if episode_log:  # the reclaim episodes (epcsim.kernel.hooks), stamped in virtual time
            from ..kernel.hooks import EpisodeLog

            self.host.episode_log = EpisodeLog(clock=lambda: self.core.now)
        self.limit_ns = parse_time(h.duration)
        self.sample_ns = parse_time(h.sample_interval)
        self.progress = progress
        self.instances: dict[str, Instance] = {}
        self.groups: dict[str, list[Instance]] = {}
        self.ops: list[dict] = []
        self.core = EventCore(h.cpus)
        if "rfc-knobs" in h.extensions:  # in no kernel: epcsim.kernel.rfc_knobs
            from ..kernel.rfc_knobs import rfc_knobs_enable

            core = self.core
            rfc_knobs_enable(self.host).clock = lambda: core.now
        self.metrics = Metrics(self)
        self.actors = Actors(
            self,
            # the compiled engine may take the enclave threads over at the first one's step
            compiled=engine != "reference" and why is None,
            compiled_required=engine == "compiled",
        )

    @property
    def now(self) -> int:
        """The virtual time (ns): ``core.now``."""
        return self.core.now

    def close(self) -> None:
        """Release the run's memory now: the host (:meth:`epcsim.kernel.Host.close`),
        the compiled engine's buffers, the traces' numbers.  The simulation's parts
        refer back to it (the metrics, the actors, their threads), so without this a
        finished run nobody holds waits for Python's cycle collector.  :func:`simulate`
        calls it once the result is made (the result holds nothing of the simulation);
        the simulation is unusable afterwards."""
        host = self.__dict__.get("host")
        if host is not None:
            host.close()
        self.__dict__.clear()

    def run(self) -> Result:
        """Run to completion or the virtual-time limit; return the result."""
        core, actors, metrics = self.core, self.actors, self.metrics
        actors.setup()
        core.start(metrics.sampler(), prio=PRIO_SAMPLE)
        limit = self.limit_ns
        last_progress = 0
        steps = 0
        heap = core.heap
        cpu_free = core.cpu_free
        while heap:
            t, prio, _, actor, cpu = heapq.heappop(heap)
            if t > limit:
                heapq.heappush(heap, (t, prio, 0, actor, cpu))
                break
            if cpu >= 0 and cpu_free[cpu] > t:
                # the CPU is busy with another task's step: wait for it
                core.schedule(cpu_free[cpu], actor, prio, cpu)
                continue
            core.now = t
            core.cur_cpu = cpu
            try:
                d = next(actor)
            except StopIteration:
                if prio != PRIO_SAMPLE:
                    core.active -= 1
                d = None
            if d is not None:
                d = d if d > 0 else 1
                if cpu >= 0:
                    cpu_free[cpu] = t + d
                core.schedule(t + d, actor, prio, cpu)
            actors.kick_kernel_threads()
            if actors.watchers:
                actors.check_watchers()
            steps += 1
            if self.progress is not None and (
                t - last_progress >= limit // 200 + 1 or not steps & 4095
            ):
                last_progress = t
                self.progress(sim_progress(self, t))
            if core.active == 0:
                break
        self.events["reference"] = steps
        if self.engine_used == "compiled" and actors.thread_steps_ref:
            self.engine_used = "mixed"
        truncated = bool(heap) and core.active > 0
        if truncated:
            core.now = limit
        if self.progress is not None:
            self.progress(sim_progress(self, core.now))
        metrics.record_sample()
        res = metrics.result(truncated=truncated)
        res.engine = self.engine_used
        res.engine_note = self.engine_note
        res.engine_events = dict(self.events)
        return res


def simulate(
    scenario: Scenario | str | dict,
    *,
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: Callable[[SimProgress], None] | None = None,
    engine: str = "auto",
    episode_log: bool = False,
) -> Result:
    """Run *scenario* (a :class:`Scenario`, a path, ``builtin:NAME``, a TOML string or a
    dict) and return its :class:`Result`.  Same scenario and seed, same result, with
    either engine (*engine*: "auto" = compiled where eligible, "compiled", "reference";
    see :mod:`epcsim.compiled.engine`).  *episode_log*: also record the reclaim episodes
    (``Result.episodes``; the reference engine only)."""
    if not isinstance(scenario, Scenario) or overrides:
        src = scenario.model_dump(mode="json") if isinstance(scenario, Scenario) else scenario
        scenario = load_scenario(src, overrides=overrides)
    sim = Simulation(scenario, seed=seed, progress=progress, engine=engine, episode_log=episode_log)
    try:
        return sim.run()
    finally:
        sim.close()
