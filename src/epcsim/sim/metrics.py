"""Metrics of the reference engine: samples, fault latencies, the summary and verdicts.

The sampler is an actor (priority ``PRIO_SAMPLE``, after every other actor at equal
times) that records one row per live cgroup into the time-series columns
(``TIMESERIES_SCHEMA`` of :mod:`epcsim.result`) every ``host.sample_interval``; the
enclave threads append each resolved fault's latency to ``lat_buf``, moved to
``fault_lat`` at each sample.  At the end :meth:`Metrics.result` assembles the
:class:`~epcsim.result.Result`: the table, the latencies, ``summary.json`` (counters,
per-enclave outcomes, the expectations' verdicts).

The columns, the latency buffers and the sampler are public: the compiled engine
(:mod:`epcsim.compiled.engine`) appends its samples and latencies to them and puts the
sampler back on the heap when it hands the run back (``docs/ENGINES.md``, "The
hand-over surface").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .. import __version__
from ..result import TIMESERIES_SCHEMA, TIMESERIES_SCHEMA_VERSION, Result
from ..scenario.schema import VepcSpec
from .core import Actor

if TYPE_CHECKING:
    from ..kernel.epc_cgroup import SgxCgroup
    from .actors import Instance
    from .engine import Simulation

__all__ = ["Metrics", "cg_path", "errname"]


class Metrics:
    """The samples and fault latencies of one run, and its summary.

    Attributes:
        cols: the time-series columns, one list per ``TIMESERIES_SCHEMA`` field.
        lat_buf: fault latencies (ns) recorded since the last sample.
        fault_lat: the latencies of earlier samples, one array per part (concatenated
            in the result).
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.fault_lat: list[np.ndarray] = []
        self.lat_buf: list[int] = []
        self.cols: dict[str, list] = {f.name: [] for f in TIMESERIES_SCHEMA}

    def sampler(self) -> Actor:
        """The sampler actor: a sample now, then one every sample interval while any
        other actor is active."""
        while True:
            self.record_sample()
            if self.sim.core.active == 0:
                return
            yield self.sim.sample_ns

    def record_sample(self) -> None:
        """Move the buffered latencies to ``fault_lat``; one row per live cgroup (none
        if a row of this time exists)."""
        if self.lat_buf:
            self.fault_lat.append(np.asarray(self.lat_buf, np.int64))
            self.lat_buf = []
        cols = self.cols
        if cols["time_ns"] and cols["time_ns"][-1] == self.sim.core.now:
            return
        for sgx_cg in self.sim.host.sgx_cgroups:
            if sgx_cg is None:
                continue
            cg = sgx_cg.cg
            cols["time_ns"].append(self.sim.core.now)
            cols["cgroup"].append(cg_path(sgx_cg))
            cols["usage_bytes"].append(cg.usage)
            cols["limit_bytes"].append(None if cg.parent is None or cg.max >= 1 << 63 else cg.max)
            cols["peak_bytes"].append(cg.peak)
            cols["max_events"].append(cg.events if cg.parent is not None else cg.events_local)
            cols["faults"].append(sgx_cg.nr_faults)
            cols["evictions"].append(sgx_cg.nr_evicted)
            cols["reclaim_batches"].append(sgx_cg.nr_reclaim_batches)
            cols["reclaimable_pages"].append(sgx_cg.lru.nr)
            cols["enomem"].append(sgx_cg.nr_enomem)

    def result(self, *, truncated: bool) -> Result:
        """The run's :class:`Result` (threads still retrying a fault become stuck)."""
        table = pa.table(self.cols, schema=TIMESERIES_SCHEMA)
        parts = self.fault_lat
        if len(parts) == 1:
            lat = parts[0]
        else:
            lat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        for inst in self.sim.instances.values():
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
        host = self.sim.host
        access_ns = self.sim.costs.access
        cgroups: dict[str, dict] = {}
        for sgx_cg in host.sgx_cgroups:
            if sgx_cg is None:
                continue
            cg = sgx_cg.cg
            cgroups[cg_path(sgx_cg)] = {
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
        for inst in self.sim.instances.values():
            acc = sum(t.accesses for t in inst.threads)
            # a kselftest process's accesses are EENTERs inside its one step: not timed
            # accesses, so no slowdown (docs/OUTPUTS.md)
            timed = getattr(inst.spec, "program", None) != "kselftest"
            ideal = timed * max((t.accesses for t in inst.threads), default=0) * access_ns
            run = max(
                (
                    (t.ended_ns if t.ended_ns >= 0 else self.sim.core.now) - t.started_ns
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
        expectations = [self._verdict(k, x) for k, x in enumerate(self.sim.sc.expect)]
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
        out = {
            "epcsim_version": __version__,
            "timeseries_schema_version": TIMESERIES_SCHEMA_VERSION,
            "scenario": self.sim.sc.name,
            "scenario_hash": self.sim.sc.digest(),
            "seed": self.sim.seed,
            "capacity_bytes": self.sim.capacity,
            "misc_enabled": self.sim.sc.host.misc,
            "experiments": self.sim.sc.host.experiments.model_dump(),
            "policy": self.sim.sc.host.policy,
            "sim_time_ns": self.sim.core.now,
            "time_limit_ns": self.sim.limit_ns,
            "sample_interval_ns": self.sim.sample_ns,
            "truncated": truncated,
            "time_is_estimate": "virtual times come from the cost model (docs/COSTS.md)",
            "costs_ns": self.sim.costs.model_dump(),
            "encls": {n: c for n, c in zip(_leaf_names(), host.encls_count)},
            "cgroups": cgroups,
            "enclaves": enclaves,
            "fault_latency": lat_summary,
            "ops": self.sim.ops,
            "expectations": expectations,
            "passed": all(x["passed"] for x in expectations),
            "outcome": "pass" if all(x["passed"] for x in expectations) else "fail",
        }
        if host.rfc is not None:  # the rfc-knobs extension (in no kernel)
            from ..kernel.rfc_knobs import rfc_summary

            out["rfc_knobs"] = rfc_summary(host, self.sim.core.now)
        return out

    def _verdict(self, k: int, x) -> dict:
        name = x.name or f"expect[{k}]"
        if x.file is not None:
            try:
                got = self.sim.host.fs.read(x.file)
            except OSError as e:
                got = f"<{errname(e.errno)}>"
            want = x.equals if x.equals.endswith("\n") or got.startswith("<") else x.equals + "\n"
            return {
                "name": name,
                "passed": got == want,
                "detail": f"{x.file} reads {got!r}, expected {want!r}",
            }
        insts: list[Instance] = []
        for n in x.enclaves:
            insts += self.sim.groups.get(n) or [self.sim.instances[n]]
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


def cg_path(sgx_cg: SgxCgroup) -> str:
    """The cgroup's path as the time series and summary name it (the root "/", an
    offline one by its id)."""
    cg = sgx_cg.cg
    if cg.parent is None:
        return "/"
    if cg.cgroup is not None:
        return cg.cgroup.path
    return f"(offline #{sgx_cg.id})"


def _leaf_names() -> tuple[str, ...]:
    from ..kernel.encls import LEAF_NAMES

    return LEAF_NAMES


def errname(code: int | None) -> str:
    """The errno name of *code* (``ENOMEM``)."""
    import errno

    return errno.errorcode.get(code or 0, str(code))
