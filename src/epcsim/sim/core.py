"""The event core of the reference engine: a clock, a heap of actors, the CPUs.

As SimPy's ``core.py``: the clock (``now``) and a heap of ``(time, priority, seq,
actor, cpu)`` entries; equal times fall back to priority, then insertion order
(``seq``), so runs are deterministic.  An actor is a generator that yields the virtual
duration (ns) of the step it just made; it runs again that much later.

CPUs: user tasks are placed on the host's CPUs round-robin in start order
(:meth:`EventCore.next_cpu`); a task whose CPU is busy with another task's step waits
for it (``cpu_free``).  Kernel threads, timed operations and the sampler run in their
own contexts (cpu -1).

The loop that pops the heap is :meth:`epcsim.sim.engine.Simulation.run`.  Every
member here is public: the compiled engine (:mod:`epcsim.compiled.engine`) reads and
writes them when it takes the run over and hands it back (``docs/ENGINES.md``, "The
hand-over surface").
"""

from __future__ import annotations

import heapq
from collections.abc import Generator
from typing import Any

__all__ = ["PRIO_ACTOR", "PRIO_OP", "PRIO_SAMPLE", "Actor", "Entry", "EventCore"]

Actor = Generator[int, None, Any]
#: a heap entry: (time ns, priority, seq, actor, cpu or -1)
Entry = tuple[int, int, int, Actor, int]

#: priorities at equal times: operations, then everything else, then the sampler
PRIO_OP = 0
PRIO_ACTOR = 1
PRIO_SAMPLE = 2


class EventCore:
    """The clock, the event heap and the CPUs of one run.

    Attributes:
        now: the virtual time (ns) of the step running.
        seq: the last sequence number given to a heap entry.
        heap: the :data:`Entry` heap (``heapq``), ordered by (time, priority, seq).
        cpu_free: when each CPU is free again (user tasks only).
        cur_cpu: the CPU of the step running (-1: its own context).
        active: actors started and not ended, the sampler excepted (the run ends at 0).
    """

    def __init__(self, cpus: int) -> None:
        self.now = 0
        self.seq = 0
        self.heap: list[Entry] = []
        self.cpu_free = [0] * cpus
        self.cur_cpu = -1
        self.active = 0
        self._cpu_rr = 0

    def schedule(self, t: int, actor: Actor, prio: int = PRIO_ACTOR, cpu: int = -1) -> None:
        """Put *actor* on the heap at time *t* with the next sequence number."""
        self.seq += 1
        heapq.heappush(self.heap, (t, prio, self.seq, actor, cpu))

    def start(self, actor: Actor, delay: int = 0, prio: int = PRIO_ACTOR, cpu: int = -1) -> None:
        """Run *actor* (a generator yielding step durations) *delay* ns from now, on
        CPU *cpu* (a user task; it waits while another step runs there) or, with -1,
        in its own context (kernel threads, operations, the sampler)."""
        if prio != PRIO_SAMPLE:
            self.active += 1
        self.schedule(self.now + delay, actor, prio, cpu)

    def next_cpu(self) -> int:
        """CPUs for user tasks, assigned round-robin in start order."""
        c = self._cpu_rr % len(self.cpu_free)
        self._cpu_rr += 1
        return c

    def next_event_ns(self) -> int | None:
        """The time of the next heap entry (None: the heap is empty)."""
        return self.heap[0][0] if self.heap else None
