"""``epcsim compare``: one scenario under several reclaim designs, measured side by side.

Each point (policy × seed) is one run of the scenario with ``host.policy`` set, on the
reference engine with the reclaim episodes recorded (``epcsim.run(...,
episode_log=True)``; the compiled engine records none), in a pool of processes; the
points are ordered by the policies as given, then the seeds, whatever order they finish
in.  The metrics (``docs/COMPARE.md``):

- fairness within a reclaim scope (:func:`fairness`): each cgroup's pages reclaimed
  against its usage-proportional share of what the scope reclaimed;
- overshoot per episode (:func:`overshoot`): pages reclaimed / pages needed;
- scan cost (:func:`scan_cost`): pages scanned per page reclaimed, and the virtual time
  spent in each kind of reclaim episode;
- service per tenant (:func:`tenant_metrics`) and failures (:func:`failures`).

The output directory (:func:`write_compare`) holds ``compare.parquet`` (one row per
point × cgroup and per point × enclave), ``compare.json`` (the metrics per point and
per policy with their inputs; its ``"format": "epcsim-compare"`` marks the directory),
``compare.html`` and ``compare.png``.  It is built aside and renamed into place
(:func:`epcsim.rundir.claim_dir`); an existing comparison is replaced only with *force*.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ._atomic import atomic_path, atomic_write_text
from .api import load_resolved
from .api import run as _run
from .errors import EpcsimError
from .policies import names as policy_names
from .policies import policy_class
from .report.fmt import sig3
from .rundir import RunDirError, claim_dir, existing_entries, resolve_out
from .scenario import Scenario

__all__ = [
    "COMPARE_FILES",
    "COMPARE_FORMAT",
    "COMPARE_JSON_VERSION",
    "PARQUET_SCHEMA",
    "TENANT_SCHEMA",
    "CompareResult",
    "Point",
    "check_compare_out",
    "compare",
    "cpu_time",
    "failures",
    "fairness",
    "json_safe",
    "overshoot",
    "parse_policies",
    "parse_seeds",
    "scan_cost",
    "tenant_metrics",
    "tenant_rows",
    "time_averaged_reclaimable",
    "write_compare",
]

#: ``compare.json`` ``format``: marks a comparison directory
COMPARE_FORMAT = "epcsim-compare"
COMPARE_JSON_VERSION = 1
#: the files a comparison directory holds
COMPARE_FILES = ("compare.parquet", "compare.json", "compare.html", "compare.png")
#: the engine every point runs on, and why
ENGINE = "reference"
ENGINE_REASON = (
    "compare records the reclaim episodes (episode_log), which only the reference engine does"
)
#: the kinds of reclaim episode (epcsim.kernel.hooks.Episode)
KINDS = ("ksgxd", "async", "sync", "direct", "alloc")
#: the failures counted per point (:func:`failures`)
FAILURES = ("sigbus", "enomem", "oom_kills", "stuck")

#: compare.parquet: one row per point × cgroup (enclave null) and per point × enclave
PARQUET_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("cgroup", pa.string()),
        pa.field("enclave", pa.string()),
        pa.field("pages_reclaimed", pa.int64()),
        pa.field("pages_reclaimed_ksgxd", pa.int64()),
        pa.field("pages_reclaimed_async", pa.int64()),
        pa.field("pages_reclaimed_sync", pa.int64()),
        pa.field("pages_reclaimed_direct", pa.int64()),
        pa.field("pages_scanned", pa.int64()),
        pa.field("pages_rotated", pa.int64()),
        pa.field("accesses", pa.int64()),
        pa.field("miss_ratio", pa.float64()),
        pa.field("accesses_per_s", pa.float64()),
        pa.field("completion_ns", pa.int64()),
        pa.field("retries", pa.int64()),
        pa.field("slowdown", pa.float64()),
        pa.field("p50_fault_latency_ns", pa.int64()),
        pa.field("p99_fault_latency_ns", pa.int64()),
        pa.field("max_fault_latency_ns", pa.int64()),
        pa.field("outcome", pa.string()),
    ],
    metadata={"epcsim.compare.version": str(COMPARE_JSON_VERSION)},
)


# --- arguments ----------------------------------------------------------------------------


def parse_policies(spec: str | Sequence[str]) -> list[str]:
    """``"v16,v14"`` or ``"all"`` (every registered policy, in registry order) -> names.
    Raises EpcsimError naming an unknown or repeated policy."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [str(s).strip() for s in items]
    if items == ["all"]:
        return policy_names()
    if not items or any(not s for s in items):
        raise EpcsimError(f"policies: expected NAME[,NAME...] or all, got {spec!r}")
    out: list[str] = []
    for name in items:
        try:
            policy_class(name)
        except EpcsimError as e:  # unknown policy 'x'; known: ...
            raise EpcsimError(f"policies: {e}") from None
        if name in out:
            raise EpcsimError(f"policies: {name!r} is named twice")
        out.append(name)
    return out


_RANGE = re.compile(r"(\d+)\.\.(\d+)")


def parse_seeds(spec: str | Sequence[int]) -> list[int]:
    """``"1..5"`` (inclusive), ``"3"`` or ``"1,4,9"`` -> the seeds (non-negative, no
    repeats).  Raises EpcsimError quoting a bad one."""
    if not isinstance(spec, str):
        items = list(spec)
        if not items or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in items):
            raise EpcsimError(f"seeds: expected non-negative integers, got {spec!r}")
        seeds = items
    else:
        text = spec.strip()
        m = _RANGE.fullmatch(text)
        if m is not None:
            lo, hi = int(m[1]), int(m[2])
            if lo > hi:
                raise EpcsimError(f"seeds: empty range {text!r} (FROM..TO needs FROM <= TO)")
            seeds = list(range(lo, hi + 1))
        elif re.fullmatch(r"\d+(,\d+)*", text):
            seeds = [int(s) for s in text.split(",")]
        else:
            raise EpcsimError(f"seeds: expected FROM..TO, N or N,N,..., got {spec!r}")
    if len(set(seeds)) != len(seeds):
        raise EpcsimError(f"seeds: a seed is named twice in {spec!r}")
    return seeds


def check_compare_out(out: object, *, force: bool = False) -> Path:
    """Validate comparison directory *out*; return its resolved path.  Creates nothing.

    Accepted: a path that does not exist, an empty directory, and, with *force*, a
    comparison directory (its ``compare.json`` says ``"format": "epcsim-compare"``)
    holding only the files a comparison writes.  Refused (RunDirError, one line): the
    current directory or an ancestor, a file, another directory holding files.
    """
    target, label = resolve_out(out, "comparison")
    _check_existing(target, label, force=force)
    return target


def _check_existing(target: Path, label: str, *, force: bool) -> None:
    entries = existing_entries(target, label)
    if not entries:
        return
    marker = target / "compare.json"
    fmt = None
    if marker.is_file():
        try:
            fmt = json.loads(marker.read_text(encoding="utf-8")).get("format")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            fmt = None
    if fmt != COMPARE_FORMAT:
        raise RunDirError(
            f"{label}: not an epcsim comparison directory (it holds files and no "
            "compare.json); name a new or empty directory"
        )
    foreign = sorted(e for e in entries - set(COMPARE_FILES) if not e.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(
            f"{label}: holds files epcsim did not write ({shown}); move them away first"
        )
    if not force:
        raise RunDirError(f"{label}: holds a comparison; replace it with --force (force=True)")


# --- one point ----------------------------------------------------------------------------


@dataclass
class Point:
    """One run of the comparison: *policy* × *seed*, what the metrics need of it."""

    policy: str
    seed: int
    summary: dict[str, Any]
    episodes: list[dict[str, Any]]
    #: per cgroup path: its reclaimable pages (time series ``reclaimable_pages``)
    #: averaged over the run's virtual time (:func:`time_averaged_reclaimable`)
    reclaimable: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)


def time_averaged_reclaimable(
    time_ns: Sequence[int], cgroup: Sequence[str], pages: Sequence[int]
) -> dict[str, float]:
    """Per cgroup, the time average of its reclaimable pages: each sample's value holds
    until the next sample time, over [first sample, last sample] (a cgroup has 0 where
    it has no row); one sample time only: that sample's values.  Rows without a cgroup
    or a value (the time series' per-enclave rows) are skipped."""
    times = sorted(set(time_ns))
    by_t: dict[int, dict[str, int]] = {t: {} for t in times}
    names: list[str] = []
    for t, c, p in zip(time_ns, cgroup, pages, strict=True):
        if c is None or p is None:
            continue
        by_t[t][c] = int(p)
        if c not in names:
            names.append(c)
    if len(times) == 1:
        return {c: float(by_t[times[0]].get(c, 0)) for c in names}
    span = times[-1] - times[0]
    out = {c: 0.0 for c in names}
    for t0, t1 in zip(times, times[1:], strict=False):
        for c, p in by_t[t0].items():
            out[c] += p * (t1 - t0)
    return {c: v / span for c, v in out.items()}


def _run_point(args: tuple[dict[str, Any], str, int]) -> Point:
    """Run one point (in a worker process): the scenario (a dumped dict) with
    ``host.policy`` = *policy*, seed *seed*, episodes recorded."""
    scenario, policy, seed = args
    res = _run(
        scenario,
        seed=seed,
        overrides=[f"host.policy={policy}"],
        engine=ENGINE,
        report=False,
        episode_log=True,
    )
    ts = res.timeseries
    reclaimable = time_averaged_reclaimable(
        ts.column("time_ns").to_pylist(),
        ts.column("cgroup").to_pylist(),
        ts.column("reclaimable_pages").to_pylist(),
    )
    return Point(policy, seed, res.summary, res.episodes or [], reclaimable)


# --- metrics ------------------------------------------------------------------------------


def _in_scope(path: str, scope: str) -> bool:
    return scope == "/" or path == scope or path.startswith(scope + "/")


def _cv(values: Sequence[float]) -> float | None:
    """Population standard deviation / mean (None for no values or a zero mean)."""
    if not values:
        return None
    a = np.asarray(values, np.float64)
    m = float(a.mean())
    return None if m == 0 else float(a.std()) / m


def fairness(episodes: Sequence[dict[str, Any]], reclaimable: dict[str, float]) -> dict[str, Any]:
    """Fairness within each reclaim scope (the cgroup whose limit triggered reclaim, or
    the root for ksgxd): per scope, the pages reclaimed from each cgroup of its subtree
    over all its episodes, against the ideal = total reclaimed in the scope × the
    cgroup's time-averaged reclaimable pages / the sum over the subtree's cgroups.  A
    cgroup outside the subtree the episodes took pages from is listed with ideal 0
    (``outside``: those pages; they are in the total, so they lower the subtree's ratios).

    Per scope: ``cv`` = stddev / mean of reclaimed / ideal over the cgroups with ideal >
    0; ``max_min`` = max / min of those ratios (None where the min is 0: a cgroup with a
    share lost nothing); ``reclaimed_cv`` = stddev / mean of the pages reclaimed over the
    same cgroups (MGLRU's memcg LRU metric when the tenants are equal).  ``headline``:
    of the scopes with a ``cv``, the one that reclaimed the most pages (ties: the first
    in path order); None if none has one.
    """
    totals: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    for ep in episodes:
        scope = ep["scope"]
        acc = totals.setdefault(scope, {})
        counts[scope] = counts.get(scope, 0) + 1
        for c, n in ep["reclaimed"].items():
            acc[c] = acc.get(c, 0) + n
    scopes: dict[str, dict[str, Any]] = {}
    for scope in sorted(totals):
        got = totals[scope]
        total = sum(got.values())
        # the scope's subtree shares R; a cgroup outside it that the episodes took pages
        # from is listed with no share (ideal 0)
        inside = {c for c in reclaimable if _in_scope(c, scope)}
        members = sorted(inside | set(got))
        share = sum(reclaimable[c] for c in inside)
        cgroups: dict[str, dict[str, Any]] = {}
        ratios: list[float] = []
        reclaimed: list[float] = []
        for c in members:
            avg = reclaimable.get(c, 0.0)
            ideal = total * avg / share if share > 0 and c in inside else 0.0
            r = got.get(c, 0)
            ratio = r / ideal if ideal > 0 else None
            cgroups[c] = {
                "reclaimed": r,
                "avg_reclaimable": avg,
                "ideal": ideal,
                "ratio": ratio,
            }
            if ratio is not None:
                ratios.append(ratio)
                reclaimed.append(r)
        lo = min(ratios) if ratios else 0.0
        scopes[scope] = {
            "episodes": counts[scope],
            "reclaimed": total,
            "avg_reclaimable": share,
            "outside": sum(n for c, n in got.items() if c not in inside),
            "cgroups": cgroups,
            "cv": _cv(ratios),
            "max_min": max(ratios) / lo if ratios and lo > 0 else None,
            "reclaimed_cv": _cv(reclaimed),
        }
    headline = None
    for s in scopes:  # path order: the first of equals wins
        if scopes[s]["cv"] is not None and (
            headline is None or scopes[s]["reclaimed"] > scopes[headline]["reclaimed"]
        ):
            headline = s
    return {"scopes": scopes, "headline": headline}


def _p99(values: Sequence[float]) -> float:
    """The 99th percentile, numpy's default (linear interpolation between ranks)."""
    return float(np.percentile(np.asarray(values, np.float64), 99))


def overshoot(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per episode that needed pages (``needed`` > 0): pages reclaimed (evicted) /
    pages needed at its start; ``mean`` and ``p99`` over them, overall and per kind.
    ``not_needed``: the episodes that began with nothing to reclaim (another reclaimer
    got there first), left out."""

    def stats(eps: list[dict[str, Any]]) -> dict[str, Any]:
        vals = [sum(e["reclaimed"].values()) / e["needed"] for e in eps]
        return {
            "episodes": len(vals),
            "mean": float(np.mean(vals)) if vals else None,
            "p99": _p99(vals) if vals else None,
        }

    needed = [e for e in episodes if e["needed"] > 0]
    out = stats(needed)
    out["not_needed"] = len(episodes) - len(needed)
    out["by_kind"] = {
        k: stats([e for e in needed if e["kind"] == k])
        for k in KINDS
        if any(e["kind"] == k for e in needed)
    }
    return out


def cpu_time(episodes: Sequence[dict[str, Any]], end_ns: int) -> dict[str, int]:
    """Virtual time spent in reclaim episodes per kind (ksgxd, async = the workers,
    sync, direct, alloc): the sum of ended_ns - started_ns (an episode still under way
    at the end counts to *end_ns*).  Kernel threads do not compete for CPUs in the
    model, so for ksgxd and the workers this is their CPU time."""
    out = {k: 0 for k in KINDS}
    for e in episodes:
        end = e["ended_ns"] if e["ended_ns"] >= 0 else end_ns
        out[e["kind"]] = out.get(e["kind"], 0) + end - e["started_ns"]
    return out


def scan_cost(
    episodes: Sequence[dict[str, Any]], cgroups: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Pages scanned per page reclaimed.  Scanned: summary.json's per-cgroup
    ``pages_scanned`` (*cgroups*: its ``cgroups``) where every cgroup has it, else the
    pages the episodes isolated from an LRU (``source`` says which); reclaimed: the
    pages the episodes evicted."""
    reclaimed = sum(sum(e["reclaimed"].values()) for e in episodes)
    source = "episodes"
    scanned = sum(sum(e["scanned"].values()) for e in episodes)
    if cgroups and all(c.get("pages_scanned") is not None for c in cgroups.values()):
        scanned = sum(int(c["pages_scanned"]) for c in cgroups.values())
        source = "summary"
    return {
        "scanned": scanned,
        "reclaimed": reclaimed,
        "per_reclaimed": scanned / reclaimed if reclaimed else None,
        "source": source,
    }


#: the per-tenant keys of summary.json (per enclave; per cgroup the same plus accesses,
#: pages_scanned, pages_rotated)
TENANT_KEYS = (
    "fault_latency_ns",
    "miss_ratio",
    "accesses_per_s",
    "completion_ns",
    "retries",
    "pages_reclaimed",
    "slowdown",
)
CGROUP_TENANT_KEYS = (*TENANT_KEYS, "accesses", "pages_scanned", "pages_rotated")


def tenant_metrics(
    summary: dict[str, Any], episodes: Sequence[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The per-tenant metrics of one run: (per cgroup path, per enclave name), each a
    dict with the keys of summary.json's per-tenant metrics (:data:`TENANT_KEYS`,
    :data:`CGROUP_TENANT_KEYS`).

    Where summary.json has a key it is taken as it is.  Where it does not (summaries
    written before the per-tenant metrics), what can be derived is: ``pages_reclaimed``
    (cgroups: ``evictions``, split by episode kind from the episode log; enclaves:
    ``pages_evicted``), ``retries`` (``fault_retries``), ``slowdown`` (cgroups: the
    largest of their enclaves'), ``accesses``, ``completion_ns`` (ended - started),
    ``pages_scanned`` (cgroups: the pages the episodes isolated from their LRU); the
    rest is None (fault latencies were not tagged per tenant).
    """
    by_kind: dict[str, dict[str, int]] = {}
    scanned: dict[str, int] = {}
    for e in episodes:
        for c, n in e["reclaimed"].items():
            d = by_kind.setdefault(c, {})
            d[e["kind"]] = d.get(e["kind"], 0) + n
        for c, n in e["scanned"].items():
            scanned[c] = scanned.get(c, 0) + n
    enclaves: dict[str, dict[str, Any]] = {}
    for name, s in summary.get("enclaves", {}).items():
        t = {k: s.get(k) for k in TENANT_KEYS}
        if t["pages_reclaimed"] is None:
            t["pages_reclaimed"] = {"total": s.get("pages_evicted", 0)}
        if t["retries"] is None:
            t["retries"] = s.get("fault_retries")
        if t["completion_ns"] is None and s.get("ended_ns", -1) >= 0:
            t["completion_ns"] = s["ended_ns"] - s["started_ns"]
        t["accesses"] = s.get("accesses")
        t["cgroup"] = s.get("cgroup")
        t["outcome"] = s.get("outcome")
        enclaves[name] = t
    cgroups: dict[str, dict[str, Any]] = {}
    for path, s in summary.get("cgroups", {}).items():
        t = {k: s.get(k) for k in CGROUP_TENANT_KEYS}
        mine = [e for e in enclaves.values() if e["cgroup"] == path]
        if t["pages_reclaimed"] is None:
            kinds = by_kind.get(path, {})
            t["pages_reclaimed"] = {"total": s.get("evictions", 0)} | {
                k: kinds.get(k, 0) for k in ("ksgxd", "async", "sync", "direct")
            }
        if t["pages_scanned"] is None:
            t["pages_scanned"] = scanned.get(path, 0)
        if t["accesses"] is None and mine:
            t["accesses"] = sum(e["accesses"] or 0 for e in mine)
        if t["retries"] is None and mine:
            t["retries"] = sum(e["retries"] or 0 for e in mine)
        if t["slowdown"] is None:
            sd = [e["slowdown"] for e in mine if e["slowdown"] is not None]
            t["slowdown"] = max(sd) if sd else None
        t["enomem"] = s.get("enomem", 0)
        cgroups[path] = t
    return cgroups, enclaves


def failures(summary: dict[str, Any]) -> dict[str, int]:
    """SIGBUS (enclaves that failed with exit status 135 = 128 + SIGBUS), ENOMEM (the
    cgroups' charge failures), OOM kills (enclaves killed), stuck enclaves."""
    encl = summary.get("enclaves", {}).values()
    return {
        "sigbus": sum(
            1 for e in encl if e.get("outcome") == "failure" and e.get("exit_status") == 135
        ),
        "enomem": sum(int(c.get("enomem", 0)) for c in summary.get("cgroups", {}).values()),
        "oom_kills": sum(1 for e in encl if e.get("outcome") == "killed"),
        "stuck": sum(1 for e in encl if e.get("outcome") == "stuck"),
    }


def point_metrics(p: Point) -> dict[str, Any]:
    """Every metric of one point."""
    cgroups, enclaves = tenant_metrics(p.summary, p.episodes)
    fair = fairness(p.episodes, p.reclaimable)
    head = fair["scopes"].get(fair["headline"]) if fair["headline"] is not None else None
    return {
        "policy": p.policy,
        "seed": p.seed,
        "outcome": p.summary.get("outcome"),
        "sim_time_ns": p.summary.get("sim_time_ns"),
        "episodes": len(p.episodes),
        "fairness": fair,
        "fairness_cv": head["cv"] if head else None,
        "fairness_max_min": head["max_min"] if head else None,
        "fairness_reclaimed_cv": head["reclaimed_cv"] if head else None,
        "overshoot": overshoot(p.episodes),
        "scan": scan_cost(p.episodes, p.summary.get("cgroups")),
        "cpu_ns": cpu_time(p.episodes, int(p.summary.get("sim_time_ns", 0))),
        "failures": failures(p.summary),
        "cgroups": cgroups,
        "enclaves": enclaves,
    }


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def policy_summary(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The per-policy row: the mean over its seeds of each headline number, failures
    summed."""
    out: dict[str, Any] = {
        "seeds": [p["seed"] for p in points],
        "fairness_cv": _mean([p["fairness_cv"] for p in points]),
        "fairness_max_min": _mean([p["fairness_max_min"] for p in points]),
        "fairness_reclaimed_cv": _mean([p["fairness_reclaimed_cv"] for p in points]),
        "overshoot_mean": _mean([p["overshoot"]["mean"] for p in points]),
        "overshoot_p99": _mean([p["overshoot"]["p99"] for p in points]),
        "scanned_per_reclaimed": _mean([p["scan"]["per_reclaimed"] for p in points]),
        "pages_reclaimed": _mean([p["scan"]["reclaimed"] for p in points]),
        "cpu_ns": {k: _mean([p["cpu_ns"][k] for p in points]) for k in KINDS},
        "failures": {
            k: sum(p["failures"][k] for p in points)
            for k in ("sigbus", "enomem", "oom_kills", "stuck")
        },
    }
    return out


# --- the comparison -----------------------------------------------------------------------


@dataclass
class CompareResult:
    """A comparison: the points in order (policies as given, then seeds) and the
    content of ``compare.json``."""

    points: list[Point]
    data: dict[str, Any]
    table: pa.Table
    out: Path | None = None


def _rows(p: Point, m: dict[str, Any]) -> list[dict[str, Any]]:
    head = {"policy": p.policy, "seed": p.seed}
    return [head | r for r in _tenant_rows(m["cgroups"], m["enclaves"], m["outcome"])]


#: the per-tenant columns of one run (:func:`tenant_rows`): PARQUET_SCHEMA without the
#: point's own columns (policy, seed)
TENANT_SCHEMA = pa.schema([f for f in PARQUET_SCHEMA if f.name not in ("policy", "seed")])


def tenant_rows(
    summary: dict[str, Any], episodes: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The per-tenant rows of one run's summary.json (:func:`tenant_metrics`): one per
    cgroup (enclave None, the run's outcome) in path order, then one per enclave in name
    order (its cgroup, its outcome); the columns of :data:`TENANT_SCHEMA`.  What
    ``compare.parquet`` holds per point, and ``epcsim sweep``'s rows."""
    cgroups, enclaves = tenant_metrics(summary, episodes)
    return _tenant_rows(cgroups, enclaves, summary.get("outcome"))


def _tenant_rows(
    cgroups: dict[str, dict[str, Any]], enclaves: dict[str, dict[str, Any]], outcome: Any
) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(cgroups):
        rows.append(_row(path, None, cgroups[path], outcome))
    for name in sorted(enclaves):
        t = enclaves[name]
        rows.append(_row(t["cgroup"], name, t, t["outcome"]))
    return rows


def _row(cgroup: str, enclave: str | None, t: dict[str, Any], outcome: Any) -> dict:
    pr = t.get("pages_reclaimed") or {}
    lat = t.get("fault_latency_ns") or {}
    return {
        "cgroup": cgroup,
        "enclave": enclave,
        "pages_reclaimed": pr.get("total"),
        "pages_reclaimed_ksgxd": pr.get("ksgxd"),
        "pages_reclaimed_async": pr.get("async"),
        "pages_reclaimed_sync": pr.get("sync"),
        "pages_reclaimed_direct": pr.get("direct"),
        "pages_scanned": t.get("pages_scanned"),
        "pages_rotated": t.get("pages_rotated"),
        "accesses": t.get("accesses"),
        "miss_ratio": t.get("miss_ratio"),
        "accesses_per_s": t.get("accesses_per_s"),
        "completion_ns": t.get("completion_ns"),
        "retries": t.get("retries"),
        "slowdown": t.get("slowdown"),
        "p50_fault_latency_ns": lat.get("p50"),
        "p99_fault_latency_ns": lat.get("p99"),
        "max_fault_latency_ns": lat.get("max"),
        "outcome": outcome,
    }


def compare(
    scenario: Scenario | str | os.PathLike[str] | dict,
    *,
    policies: str | Sequence[str] = "all",
    seeds: str | Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    jobs: int | None = None,
    out: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CompareResult:
    """Run *scenario* under each policy × seed and measure them (``docs/COMPARE.md``).

    Args:
        scenario: as :func:`epcsim.run` takes it.
        policies: ``"v16,v14"``, a list of names, or ``"all"`` (the registry's order).
        seeds: ``"1..5"``, ``"1,3"``, a list; None: the scenario's ``host.seed``.
        overrides: ``KEY=VALUE`` settings applied to the scenario first (a
            ``host.policy`` among them is replaced by each policy in turn).
        jobs: processes running points at once (default: the CPUs, at most the points;
            1 runs them in this process).
        out: the comparison directory to write (:func:`write_compare`).
        force: replace a comparison already in *out*.
        progress: called with (points done, points) as points finish.

    Every argument is checked before anything runs (EpcsimError, one line).
    """
    names = parse_policies(policies)
    items = tuple(overrides)
    if any(not isinstance(s, str) for s in items):
        raise EpcsimError(f"overrides: expected KEY=VALUE strings, got {overrides!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise EpcsimError(f"jobs: expected a positive integer, got {jobs!r}")
    sc = load_resolved(scenario, items)
    seed_list = [sc.host.seed] if seeds is None else parse_seeds(seeds)
    target = check_compare_out(out, force=force) if out is not None else None

    base = sc.model_dump(mode="json")
    work = [(base, p, s) for p in names for s in seed_list]
    n = len(work)
    workers = max(1, min(n, jobs or os.cpu_count() or 1))
    points: list[Point] = []
    if workers == 1:
        for k, w in enumerate(work):
            points.append(_run_point(w))
            if progress is not None:
                progress(k + 1, n)
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for k, pt in enumerate(ex.map(_run_point, work)):
                points.append(pt)
                if progress is not None:
                    progress(k + 1, n)
    metrics = [point_metrics(p) for p in points]
    for p, m in zip(points, metrics, strict=True):
        p.metrics = m
    rows = [r for p, m in zip(points, metrics, strict=True) for r in _rows(p, m)]
    table = pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA)
    data = {
        "format": COMPARE_FORMAT,
        "version": COMPARE_JSON_VERSION,
        "scenario": sc.name,
        "scenario_hash": sc.digest(),
        "overrides": list(items),
        "policies": names,
        "seeds": seed_list,
        "engine": ENGINE,
        "engine_reason": ENGINE_REASON,
        "by_policy": {
            name: policy_summary([m for m in metrics if m["policy"] == name]) for name in names
        },
        "points": metrics,
        "files": list(COMPARE_FILES),
    }
    result = CompareResult(points, data, table)
    if target is not None:
        with claim_dir(target, lambda: _check_existing(target, f"out {out}", force=force)) as tmp:
            write_compare(result, tmp)
        result.out = target
    return result


# --- the directory ------------------------------------------------------------------------


def json_safe(v: Any) -> Any:
    """*v* with NaN and infinities as None (JSON has neither), lists for tuples."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


def write_compare(result: CompareResult, d: str | os.PathLike[str]) -> None:
    """Write ``compare.parquet``, ``compare.json``, ``compare.png`` and ``compare.html``
    into *d*, each atomically; the same comparison gives the same bytes."""
    d = Path(d)
    with atomic_path(d / "compare.parquet") as tmp:
        pq.write_table(result.table, tmp, compression="zstd")
    text = json.dumps(json_safe(result.data), indent=2, sort_keys=True) + "\n"
    atomic_write_text(d / "compare.json", text)
    _figure(result.data, d / "compare.png")
    atomic_write_text(d / "compare.html", render_html(result.data))


def _fmt(v: Any) -> str:
    """A table cell: three significant digits (the report's rule), ``—`` for None."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return sig3(v)
    return str(v)


#: the terminal / HTML table: (heading, how to get the value from a by_policy entry)
COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("fairness CV", lambda s: s["fairness_cv"]),
    ("fairness max/min", lambda s: s["fairness_max_min"]),
    ("reclaimed stddev/mean", lambda s: s["fairness_reclaimed_cv"]),
    ("overshoot mean", lambda s: s["overshoot_mean"]),
    ("overshoot p99", lambda s: s["overshoot_p99"]),
    ("scanned/reclaimed", lambda s: s["scanned_per_reclaimed"]),
    ("pages reclaimed", lambda s: s["pages_reclaimed"]),
    ("ksgxd ms", lambda s: None if s["cpu_ns"]["ksgxd"] is None else s["cpu_ns"]["ksgxd"] / 1e6),
    ("workers ms", lambda s: None if s["cpu_ns"]["async"] is None else s["cpu_ns"]["async"] / 1e6),
    ("sync ms", lambda s: None if s["cpu_ns"]["sync"] is None else s["cpu_ns"]["sync"] / 1e6),
    (
        "SIGBUS/ENOMEM/OOM/stuck",
        lambda s: "/".join(
            str(s["failures"][k]) for k in ("sigbus", "enomem", "oom_kills", "stuck")
        ),
    ),
)


def table_rows(data: dict[str, Any]) -> list[list[str]]:
    """The comparison table, one row per policy: its name then :data:`COLUMNS`."""
    return [
        [name, *(_fmt(get(data["by_policy"][name])) for _, get in COLUMNS)]
        for name in data["policies"]
    ]


def _figure(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = data["policies"]
    fig = Figure(figsize=(9, 3.2))
    panels = (
        ("fairness CV (lower: fairer)", "fairness_cv"),
        ("overshoot mean", "overshoot_mean"),
        ("pages scanned / reclaimed", "scanned_per_reclaimed"),
    )
    for k, (title, key) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        vals = [data["by_policy"][n][key] for n in names]
        ax.bar(range(len(names)), [0 if v is None else v for v in vals], color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


def render_html(data: dict[str, Any]) -> str:
    """``compare.html``: offline (no network), the table, ``compare.png`` beside it."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["policy", *(c for c, _ in COLUMNS)])
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>\n" for row in table_rows(data)
    )
    seeds = ", ".join(str(s) for s in data["seeds"])
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>epcsim compare: {esc(data['scenario'])}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}"
        "td:first-child{text-align:left}</style></head><body>\n"
        f"<h1>{esc(data['scenario'])}: reclaim designs compared</h1>\n"
        f"<p>Scenario hash {esc(data['scenario_hash'][:12])}; seeds {esc(seeds)}; engine "
        f"{esc(data['engine'])} ({esc(data['engine_reason'])}). Each number is the mean "
        "over the seeds; failures are summed. Times are virtual (the cost model). "
        "Formulas: docs/COMPARE.md.</p>\n"
        f"<table><tr>{head}</tr>\n{body}</table>\n"
        "<p><img src='compare.png' alt='fairness, overshoot and scan cost per policy'></p>\n"
        "</body></html>\n"
    )
