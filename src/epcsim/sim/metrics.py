"""Metrics of the reference engine: samples, fault latencies, the summary and verdicts.

The sampler is an actor (priority ``PRIO_SAMPLE``, after every other actor at equal
times) that records one row per live cgroup into the time-series columns
(``TIMESERIES_SCHEMA`` of :mod:`epcsim.result`) every ``host.sample_interval``, then
one row per enclave; the enclave threads append each resolved fault's latency to
``lat_buf`` and its instance's index to ``lat_who_buf``, moved to ``fault_lat`` and
``fault_lat_who`` at each sample.  At the end :meth:`Metrics.result` assembles the
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
from ..kernel.epc_cgroup import RECLAIMERS
from ..result import (
    FAULT_LATENCY_SCHEMA,
    TIMESERIES_SCHEMA,
    TIMESERIES_SCHEMA_VERSION,
    Result,
    latency_percentiles,
)
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
        cols: the time-series columns, one list per ``TIMESERIES_SCHEMA`` field: the
            rows since the last of ``batches``.
        batches: earlier rows as record batches (``TIMESERIES_SCHEMA``), in order: the
            compiled engine hands its samples over as columns
            (:meth:`append_batch`), without a Python object per value.
        lat_buf: fault latencies (ns) recorded since the last sample.
        fault_lat: the latencies of earlier samples, one array per part (concatenated
            in the result).
        lat_who_buf, fault_lat_who: the index (``Instance.index``) of the instance
            whose thread took each of those faults, part for part.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.fault_lat: list[np.ndarray] = []
        self.lat_buf: list[int] = []
        self.fault_lat_who: list[np.ndarray] = []
        self.lat_who_buf: list[int] = []
        self.cols: dict[str, list] = {f.name: [] for f in TIMESERIES_SCHEMA}
        self.batches: list[pa.RecordBatch] = []

    def last_time(self) -> int | None:
        """The time of the time series' last row (None: no row yet)."""
        times = self.cols["time_ns"]
        if times:
            return times[-1]
        return self.batches[-1].column(0)[-1].as_py() if self.batches else None

    def _seal(self) -> None:
        """The rows of ``cols`` moved to ``batches``."""
        if self.cols["time_ns"]:
            self.batches.append(pa.RecordBatch.from_pydict(self.cols, schema=TIMESERIES_SCHEMA))
            self.cols = {f.name: [] for f in TIMESERIES_SCHEMA}

    def append_batch(self, batch: pa.RecordBatch) -> None:
        """Rows of the time series (``TIMESERIES_SCHEMA``, in time order) after those
        recorded so far."""
        if batch.num_rows:
            self._seal()
            self.batches.append(batch)

    def timeseries(self) -> pa.Table:
        """The time series' rows, one chunk per column (as written to
        ``timeseries.parquet``)."""
        self._seal()
        if not self.batches:
            return TIMESERIES_SCHEMA.empty_table()
        return pa.Table.from_batches(self.batches, TIMESERIES_SCHEMA).combine_chunks()

    def sampler(self) -> Actor:
        """The sampler actor: a sample now, then one every sample interval while any
        other actor is active."""
        while True:
            self.record_sample()
            if self.sim.core.active == 0:
                return
            yield self.sim.sample_ns

    def record_sample(self) -> None:
        """Move the buffered latencies to ``fault_lat``; one row per live cgroup, then
        one per enclave (none if a row of this time exists)."""
        self.flush_latencies()
        if self.last_time() == self.sim.core.now:
            return
        cols = self.cols
        host = self.sim.host
        pol = host.policy
        for sgx_cg in host.sgx_cgroups:
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
            cols["reclaimable_pages"].append(
                sgx_cg.lru.nr if pol is None else pol.reclaimable_pages(host, sgx_cg)
            )
            cols["enomem"].append(sgx_cg.nr_enomem)
            cols["enclave"].append(None)
            cols["accesses"].append(None)
            cols["resident_pages"].append(None)
        for inst in self.sim.instances.values():
            if inst.encl is not None:
                self.append_enclave_row(self.sim.core.now, inst, *enclave_counters(inst))

    def flush_latencies(self) -> None:
        """Move the buffered latencies and their instances to ``fault_lat`` and
        ``fault_lat_who``."""
        if self.lat_buf:
            self.fault_lat.append(np.asarray(self.lat_buf, np.int64))
            self.fault_lat_who.append(np.asarray(self.lat_who_buf, np.int32))
            self.lat_buf = []
            self.lat_who_buf = []

    def append_enclave_row(
        self, now: int, inst: Instance, accesses: int, faults: int, evictions: int, resident: int
    ) -> None:
        """One enclave row of the time series at time *now* (the cgroup columns null)."""
        cols = self.cols
        cols["time_ns"].append(now)
        for name in _CGROUP_ONLY:
            cols[name].append(None)
        cols["enclave"].append(inst.name)
        cols["accesses"].append(accesses)
        cols["faults"].append(faults)
        cols["evictions"].append(evictions)
        cols["resident_pages"].append(resident)

    def result(self, *, truncated: bool) -> Result:
        """The run's :class:`Result` (threads still retrying a fault become stuck)."""
        table = self.timeseries()
        parts = self.fault_lat
        if len(parts) == 1:
            lat = parts[0]
        else:
            lat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        parts = self.fault_lat_who
        if len(parts) == 1:  # (a copy of 40 MB per 10M faults otherwise)
            who = parts[0]
        else:
            who = np.concatenate(parts) if parts else np.zeros(0, np.int32)
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
        summary = self._summary(truncated, lat, who)
        insts = list(self.sim.instances.values())
        names = pa.array([i.name for i in insts], pa.string())
        paths = [self._tenant_cgroup(i) or i.cgroup for i in insts]
        uniq = sorted(set(paths))
        pidx = np.array([uniq.index(p) for p in paths], np.int32)
        idx = pa.array(who, pa.int32())
        # the cgroup of each latency: its instance's (no gather when instance k is in
        # cgroup k, e.g. one instance); indices in range by construction (safe=False)
        cidx = idx if np.array_equal(pidx, np.arange(len(pidx))) else pa.array(pidx[who])
        tagged = pa.table(
            [
                pa.array(lat, pa.int64()),
                pa.DictionaryArray.from_arrays(idx, names, safe=False),
                pa.DictionaryArray.from_arrays(cidx, pa.array(uniq, pa.string()), safe=False),
            ],
            schema=FAULT_LATENCY_SCHEMA,
        )
        result = Result(summary, table, lat, tagged)
        log = self.sim.host.episode_log
        if log is not None:
            result.episodes = [_episode_record(ep) for ep in log.episodes]
        return result

    def _tenant_cgroup(self, inst: Instance) -> str | None:
        """The path of the cgroup an instance's faults are counted in (its task's
        sgx_cgroup when spawned), None if it never had a task or that cgroup is gone."""
        sgx_cg = inst.sgx_cg
        if sgx_cg is None:
            return None
        cgs = self.sim.host.sgx_cgroups
        if sgx_cg.id >= len(cgs) or cgs[sgx_cg.id] is not sgx_cg:
            return None
        return cg_path(sgx_cg)

    def _summary(self, truncated: bool, lat: np.ndarray, who: np.ndarray) -> dict:
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
                "edmm_eldu": e.nr_edmm_eldu if e is not None else 0,
                "trace_skipped": inst.trace_skipped,
            }
        pct = self._tenants(cgroups, enclaves, lat, who)
        one = [p for p in pct if p is not None]
        expectations = [self._verdict(k, x) for k, x in enumerate(self.sim.sc.expect)]
        lat_summary = {}
        if len(one) == 1 and one[0]["count"] == len(lat):  # one tenant's: the same
            p = one[0]
            lat_summary = {"count": p["count"]}
            lat_summary.update({f"{k}_ns": p[k] for k in ("p50", "p90", "p99", "max")})
        elif len(lat):
            q = latency_percentiles(lat)
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
            # lru_scan is paid under a scanning policy only (global-lru): the others
            # keep the costs v16 always listed
            "costs_ns": self.sim.costs.model_dump(
                exclude=None if host.policy is not None and host.policy.scans else {"lru_scan"}
            ),
            "encls": {n: c for n, c in zip(_leaf_names(), host.encls_count)},
            "cgroups": cgroups,
            "enclaves": enclaves,
            "fault_latency": lat_summary,
            "ops": self.sim.ops,
            "expectations": expectations,
            "passed": all(x["passed"] for x in expectations),
            "outcome": "pass" if all(x["passed"] for x in expectations) else "fail",
        }
        # a policy's own statistics (epcsim.policies; none under v16: no key)
        counters = host.policy.counters(host) if host.policy is not None else {}
        if counters:
            out["policy_counters"] = counters
        if host.rfc is not None:  # the rfc-knobs extension (in no kernel)
            from ..kernel.rfc_knobs import rfc_summary

            out["rfc_knobs"] = rfc_summary(host, self.sim.core.now)
        return out

    def _tenants(
        self, cgroups: dict[str, dict], enclaves: dict[str, dict], lat: np.ndarray, who: np.ndarray
    ) -> list[dict[str, int] | None]:
        """The per-tenant keys of ``summary.json`` (docs/OUTPUTS.md, "Per-tenant
        metrics"), added to the enclaves' and cgroups' entries.  Returns each
        instance's ``fault_latency_ns``."""
        now = self.sim.core.now
        insts = list(self.sim.instances.values())
        empty = np.zeros(0, np.int64)
        lats = [empty] * len(insts)
        if len(who) and who.min() == who.max():  # one tenant faulted (no sort)
            lats[int(who[0])] = lat
        elif len(who):
            order = np.argsort(who, kind="stable")
            bounds = np.searchsorted(who[order], np.arange(len(insts) + 1))
            lats = [lat[order[bounds[k] : bounds[k + 1]]] for k in range(len(insts))]
        pct = [_percentiles(x) for x in lats]
        members: dict[str, list[int]] = {}
        spans: list[tuple[int, int] | None] = []
        for k, inst in enumerate(insts):
            e = enclaves[inst.name]
            ths = [t for t in inst.threads if t.started_ns >= 0]
            span = None
            if ths:
                ends = [t.ended_ns if t.ended_ns >= 0 else now for t in ths]
                span = (min(t.started_ns for t in ths), max(ends))
            spans.append(span)
            run = max((end - t.started_ns for t, end in zip(ths, ends)), default=0) if ths else 0
            acc = e["accesses"]
            by = inst.encl.nr_reclaimed_by if inst.encl is not None else [0] * len(RECLAIMERS)
            e["fault_latency_ns"] = pct[k]
            e["miss_ratio"] = round(e["faults"] / acc, 6) if acc else None
            e["accesses_per_s"] = round(acc * 1e9 / run, 3) if run > 0 else None
            e["completion_ns"] = (
                inst.ended_ns - inst.started_ns
                if inst.ended_ns >= 0 and inst.started_ns >= 0
                else None
            )
            e["retries"] = e["fault_retries"]
            e["pages_reclaimed"] = _split(by)
            path = self._tenant_cgroup(inst)
            if path is not None and path in cgroups:
                members.setdefault(path, []).append(k)
        for sgx_cg in self.sim.host.sgx_cgroups:
            if sgx_cg is None:
                continue
            path = cg_path(sgx_cg)
            c = cgroups[path]
            ks = members.get(path, [])
            es = [enclaves[insts[k].name] for k in ks]
            acc = sum(e["accesses"] for e in es)
            faults = sum(e["faults"] for e in es)
            ss = [spans[k] for k in ks if spans[k] is not None]
            span = max(b for _, b in ss) - min(a for a, _ in ss) if ss else 0
            slow = [e["slowdown"] for e in es if e["slowdown"] is not None]
            mine = [k for k in ks if len(lats[k])]
            if len(mine) == 1:  # one tenant: its enclave's percentiles
                c["fault_latency_ns"] = dict(pct[mine[0]]) if pct[mine[0]] else None
            else:
                c["fault_latency_ns"] = _percentiles(
                    np.concatenate([lats[k] for k in mine]) if mine else empty
                )
            c["miss_ratio"] = round(faults / acc, 6) if acc else None
            c["accesses"] = acc
            c["accesses_per_s"] = round(acc * 1e9 / span, 3) if span > 0 else None
            c["retries"] = sum(e["fault_retries"] for e in es)
            c["slowdown"] = round(sum(slow) / len(slow), 6) if slow else None
            c["pages_reclaimed"] = _split(sgx_cg.nr_reclaimed_by)
            c["pages_scanned"] = sgx_cg.nr_scanned
            c["pages_rotated"] = sgx_cg.nr_rotated
        return pct

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
            # killed by an [[at]] kill, or its enclave by a policy's EPC OOM killer
            insts = [i for i in insts if not i.killed and i.outcome != "killed"]
        hits = [i.outcome == x.outcome for i in insts]
        ok = {"all": all(hits), "any": any(hits), "none": not any(hits)}[x.quantifier]
        outcomes = ", ".join(f"{i.name}={i.outcome}" for i in insts)
        return {
            "name": name,
            "passed": bool(ok),
            "detail": f"{x.quantifier} {x.outcome}: {outcomes}",
        }


#: the time-series columns only cgroup rows have (null on enclave rows)
_CGROUP_ONLY = (
    "cgroup",
    "usage_bytes",
    "limit_bytes",
    "peak_bytes",
    "max_events",
    "reclaim_batches",
    "reclaimable_pages",
    "enomem",
)


def enclave_counters(inst: Instance) -> tuple[int, int, int, int]:
    """An enclave row's counters: accesses and faults of the instance's threads (a
    kselftest process's own), its pages evicted and resident (its SECS and VA pages not
    included)."""
    ks = inst.selftest
    if ks is not None:
        acc, faults = ks.accesses, ks.faults
    else:
        acc = sum(t.accesses for t in inst.threads)
        faults = sum(t.faults for t in inst.threads)
    e = inst.encl
    assert e is not None
    return acc, faults, e.nr_evicted, e.secs_child_cnt


def _percentiles(lat: np.ndarray) -> dict[str, int] | None:
    """``fault_latency_ns`` of a tenant: count, p50, p90, p99, max (as the run's
    ``fault_latency``), None without a timed fault."""
    if not len(lat):
        return None
    q = latency_percentiles(lat)
    return {"count": int(len(lat)), "p50": q[0], "p90": q[1], "p99": q[2], "max": q[3]}


def _split(by: list[int]) -> dict[str, int]:
    """``pages_reclaimed``: the total and the split by reclaimer (RECLAIMERS)."""
    out = {"total": int(sum(by))}
    out.update({name: int(n) for name, n in zip(RECLAIMERS, by)})
    return out


def cg_path(sgx_cg: SgxCgroup) -> str:
    """The cgroup's path as the time series and summary name it (the root "/", an
    offline one by its id)."""
    cg = sgx_cg.cg
    if cg.parent is None:
        return "/"
    if cg.cgroup is not None:
        return cg.cgroup.path
    return f"(offline #{sgx_cg.id})"


def _episode_record(ep) -> dict:
    """One reclaim episode of the log (epcsim.kernel.hooks.Episode) as ``Result.episodes``
    holds it: cgroups named by their paths; ``root`` is the subtree it reclaims from,
    ``scope`` the cgroup whose limit set its need (the root "/" for free EPC pages)."""
    return {
        "kind": ep.kind,
        "root": cg_path(ep.root),
        "scope": cg_path(ep.scope) if ep.scope is not None else cg_path(ep.root),
        "needed": ep.needed,
        "calls": ep.calls,
        "isolated": ep.isolated,
        "scanned": {cg_path(c): n for c, n in ep.scanned.items()},
        "reclaimed": {cg_path(c): n for c, n in ep.reclaimed.items()},
        "started_ns": ep.started_ns,
        "ended_ns": ep.ended_ns,
    }


def _leaf_names() -> tuple[str, ...]:
    from ..kernel.encls import LEAF_NAMES

    return LEAF_NAMES


def errname(code: int | None) -> str:
    """The errno name of *code* (``ENOMEM``)."""
    import errno

    return errno.errorcode.get(code or 0, str(code))
