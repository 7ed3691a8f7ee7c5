"""``epcsim advise``: the smallest ``misc.max`` per tenant that meets service objectives.

A *tenant* is a cgroup of the scenario (not the root) that holds enclaves, or one named
with ``tenants=``.  An SLO is ``METRIC OP VALUE`` over the per-tenant metrics of
``summary.json`` (:data:`METRICS`; ``docs/ADVISE.md``).  The search
(:func:`advise`) is a pure function of an *evaluator*: a callable that takes a list of
assignments (tenant path -> ``misc.max`` in bytes; the tenants left out keep the
scenario's limit) and returns, per assignment, the rows of its runs (one per cgroup and
one per enclave, each seed; the columns of :func:`epcsim.compare.tenant_metrics` as the
sweep writes them).  The default evaluator runs the points through
:func:`epcsim.sweep.evaluate` into ``DIR/points/`` (a sweep dataset: an interrupted advice
resumes where it stopped).

The search, per round all tenants in lock-step so that one round's runs go to the
evaluator together (a cluster runs them in parallel):

1. each tenant's limit on the grid ``resolution, 2*resolution, ... <= capacity``, the
   others at their scenario limits: a coarse pass of :data:`COARSE` evenly spaced limits
   (the top included), then bisection between the last limit violating the SLOs and the
   first meeting them; a curve found not monotone (met at a limit, violated at a larger
   one) is evaluated at every limit below its first met one instead, and the smallest
   limit meeting the SLOs is chosen (said in the tenant's ``note``);
2. the combination of the chosen limits is run; each tenant violating its SLOs there is
   searched again above its limit, the others at theirs; repeated until a combination
   meets every SLO (a fixpoint), a violating tenant is already at the top of its grid
   (infeasible), or the limits add up to more than the budget (infeasible: limits only
   rise).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._atomic import atomic_write_text
from .api import load_resolved
from .compare import json_safe, parse_seeds, tenant_rows
from .errors import EpcsimError
from .rundir import RunDirError, existing_entries, resolve_out
from .scenario import Scenario
from .scenario.schema import eval_size
from .units import format_size, parse_size, parse_time

__all__ = [
    "ADVISE_FORMAT",
    "ADVISE_JSON_VERSION",
    "COARSE",
    "METRICS",
    "PAGE_SIZE",
    "SLO",
    "AdviseResult",
    "Evaluator",
    "advise",
    "parse_slo",
    "rows_of_summary",
    "tenant_value",
]

#: ``advise.json`` ``format``: marks an advice directory
ADVISE_FORMAT = "epcsim-advise"
ADVISE_JSON_VERSION = 1
#: the page size: limits and the resolution are whole pages
PAGE_SIZE = 4096
#: the limits of a tenant's coarse pass (evenly spaced over its grid, the top included)
COARSE = 8
#: what the default resolution divides the capacity by
DEFAULT_STEPS = 32
#: enclave outcomes that do not violate a tenant's SLOs
_OK_OUTCOMES = ("success", "not started")


@dataclass(frozen=True)
class Metric:
    """An SLO metric: its column in the rows, whether its values are times (``50us``),
    and which way is better."""

    name: str
    column: str
    time: bool
    higher_is_better: bool
    what: str


#: the SLO metric names -> their column in the per-tenant rows (``summary.json``'s
#: per-cgroup metrics as :func:`epcsim.compare.tenant_metrics` and the sweep give them)
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("slowdown", "slowdown", False, False, "completion time / unloaded time"),
        Metric("miss_ratio", "miss_ratio", False, False, "faults / accesses"),
        Metric("p50_fault_latency", "p50_fault_latency_ns", True, False, "fault_latency_ns p50"),
        Metric("p99_fault_latency", "p99_fault_latency_ns", True, False, "fault_latency_ns p99"),
        Metric("max_fault_latency", "max_fault_latency_ns", True, False, "fault_latency_ns max"),
        Metric("accesses_per_s", "accesses_per_s", False, True, "accesses per virtual second"),
        Metric("retries", "retries", False, False, "fault retries"),
        Metric("pages_reclaimed", "pages_reclaimed", False, False, "pages reclaimed"),
    )
}

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}
_SLO_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S(?:.*\S)?)\s*")


@dataclass(frozen=True)
class SLO:
    """``metric op bound``: *bound* in the metric's unit (ns for times)."""

    text: str
    metric: str
    op: str
    bound: float

    @property
    def column(self) -> str:
        return METRICS[self.metric].column

    @property
    def upper(self) -> bool:
        """An upper bound (``<=``, ``<``): the worst value is the largest."""
        return self.op in ("<=", "<")

    def holds(self, value: float | None) -> bool:
        """Whether *value* meets the SLO; None (nothing measured: no fault timed, no
        access made) meets it."""
        return value is None or _OPS[self.op](value, self.bound)

    def margin(self, value: float | None) -> float | None:
        """How far *value* is inside the bound (negative: outside), in the metric's unit."""
        if value is None:
            return None
        return self.bound - value if self.upper else value - self.bound


def parse_slo(spec: str) -> SLO:
    """``"slowdown<=1.5"``, ``"p99_fault_latency<=50us"`` -> an :class:`SLO`.  Raises
    EpcsimError for bad syntax, an unknown metric (listing the known ones) or a bad
    value."""
    if not isinstance(spec, str):
        raise EpcsimError(f"slo: expected METRIC<=VALUE text, got {spec!r}")
    m = _SLO_RE.fullmatch(spec)
    if m is None:
        raise EpcsimError(
            f"slo {spec!r}: expected METRIC OP VALUE with OP one of <=, <, >=, > "
            "(e.g. 'slowdown<=1.5', 'p99_fault_latency<=50us')"
        )
    name, op, raw = m.group(1), m.group(2), m.group(3)
    metric = METRICS.get(name)
    if metric is None:
        raise EpcsimError(
            f"slo {spec!r}: unknown metric {name!r} (known: {', '.join(sorted(METRICS))})"
        )
    bound: float
    if metric.time:
        try:
            bound = float(parse_time(raw, what=f"slo {spec!r}"))
        except EpcsimError:
            try:
                bound = float(raw)
            except ValueError:
                raise EpcsimError(
                    f"slo {spec!r}: {raw!r} is not a time (a number of ns, or with ns, us, ms, s)"
                ) from None
    else:
        try:
            bound = float(raw)
        except ValueError:
            raise EpcsimError(f"slo {spec!r}: {raw!r} is not a number") from None
    if not math.isfinite(bound) or bound < 0:
        raise EpcsimError(f"slo {spec!r}: the bound must be a finite non-negative number")
    return SLO(f"{name}{op}{raw}", name, op, bound)


# --- rows -> per-tenant values --------------------------------------------------------------


def _in_subtree(path: str | None, root: str) -> bool:
    return path is not None and (path == root or path.startswith(root + "/"))


def _column(row: dict[str, Any], column: str) -> float | None:
    v = row.get(column)
    if isinstance(v, dict):  # pages_reclaimed as summary.json gives it
        v = v.get("total")
    return None if v is None else float(v)


def tenant_value(rows: Sequence[dict[str, Any]], tenant: str, slo: SLO) -> float | None:
    """The worst value of *slo*'s metric for *tenant* over *rows* (every seed): the
    tenant's cgroup row where it has the value, else its subtree's enclave rows (a tenant
    holding no enclave itself); None if no row has one."""
    worst: float | None = None
    pick = max if slo.upper else min
    for seed_rows in _by_seed(rows).values():
        own = [r for r in seed_rows if r.get("enclave") is None and r.get("cgroup") == tenant]
        vals = [v for r in own if (v := _column(r, slo.column)) is not None]
        if not vals:
            vals = [
                v
                for r in seed_rows
                if r.get("enclave") is not None and _in_subtree(r.get("cgroup"), tenant)
                if (v := _column(r, slo.column)) is not None
            ]
        for v in vals:
            worst = v if worst is None else pick(worst, v)
    return worst


def _by_seed(rows: Sequence[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r.get("seed"), []).append(r)
    return out


def _judge(
    rows: Sequence[dict[str, Any]], tenant: str, slos: Sequence[SLO]
) -> tuple[bool, dict[str, float | None], str | None]:
    """(meets, metric values, why not) of *tenant* at one assignment."""
    values = {s.text: tenant_value(rows, tenant, s) for s in slos}
    for r in rows:
        if r.get("outcome") == "error":
            return False, values, f"the run failed: {r.get('error') or 'error'}"
    for r in rows:
        if (
            r.get("enclave") is not None
            and _in_subtree(r.get("cgroup"), tenant)
            and r.get("outcome") not in _OK_OUTCOMES
        ):
            if r.get("outcome") == "running":  # cut short by host.duration
                why = (
                    f"enclave {r['enclave']} was still running at host.duration (seed "
                    f"{r.get('seed')}): raise host.duration (--set) or shorten its workload"
                )
            else:
                why = f"enclave {r['enclave']} ended {r.get('outcome')} (seed {r.get('seed')})"
            return False, values, why
    for s in slos:
        if not s.holds(values[s.text]):
            return False, values, f"{s.text} violated ({_fmt_value(s, values[s.text])})"
    return True, values, None


def _fmt_value(slo: SLO, v: float | None) -> str:
    if v is None:
        return "-"
    if METRICS[slo.metric].time:
        return f"{v:g}ns"
    return f"{v:.6g}"


def rows_of_summary(summary: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The per-tenant rows of one run's ``summary.json`` with its *seed*: the rows the
    sweep writes (:func:`epcsim.compare.tenant_rows`), for an evaluator that runs
    :func:`epcsim.run` itself."""
    return [{"seed": seed} | r for r in tenant_rows(summary)]


# --- arguments ------------------------------------------------------------------------------

#: an assignment: tenant path -> misc.max in bytes (tenants left out: the scenario's limit)
Assignment = dict[str, int]
#: assignments -> per assignment, the rows of its runs (every seed)
Evaluator = Callable[[list[Assignment]], list[list[dict[str, Any]]]]


def _tenants(sc: Scenario, tenants: Sequence[str] | None) -> list[str]:
    declared = [c.path for c in sc.cgroup]
    if tenants is None:
        holding = {e.cgroup for e in sc.enclave}
        out = [p for p in declared if p in holding and p != "/"]
        if not out:
            raise EpcsimError(
                "tenants: no cgroup other than / holds an enclave; name tenants with --tenant"
            )
        return out
    if isinstance(tenants, str) or not all(isinstance(t, str) for t in tenants):
        raise EpcsimError(f"tenants: expected a list of cgroup paths, got {tenants!r}")
    out = []
    for t in tenants:
        path = "/" + "/".join(p for p in t.split("/") if p)
        if path == "/":
            raise EpcsimError("tenant /: the root cgroup has no misc.max; name a child")
        if path not in declared:
            raise EpcsimError(
                f"tenant {t}: not a cgroup of scenario {sc.name} (its cgroups: "
                f"{', '.join(declared) or 'none'})"
            )
        if path in out:
            raise EpcsimError(f"tenant {path}: named twice")
        out.append(path)
    for a in out:
        for b in out:
            if a != b and b.startswith(a + "/"):
                raise EpcsimError(f"tenant {b}: inside tenant {a}; tenants must not nest")
    return out


def _warnings(sc: Scenario, tenants: list[str]) -> list[str]:
    """What the advice cannot change: enclaves in the root (no misc.max), timed writes to
    a tenant's misc.max or moves between cgroups (the advised limit is the one a tenant
    starts with)."""
    out = []
    root = sorted(e.name for e in sc.enclave if e.cgroup == "/")
    if root:
        out.append(f"/ holds enclaves ({', '.join(root)}): not a tenant (the root has no misc.max)")
    for i, at in enumerate(sc.at):
        if at.write is not None:
            path = "/" + "/".join(p for p in at.write.path.split("/") if p)
            for t in tenants:
                if path == f"{t}/misc.max" or path == f"{t}/sgx_epc.max":
                    out.append(
                        f"at.{i} writes {path}: the limit advised for {t} is the one it starts with"
                    )
        if at.migrate is not None:
            out.append(
                f"at.{i} moves enclave {at.migrate.enclave} to {at.migrate.cgroup}: its "
                "tenant changes during the run"
            )
    return out


def _resolution(value: int | str | None, capacity: int) -> int:
    if value is None:
        step = capacity // DEFAULT_STEPS // PAGE_SIZE * PAGE_SIZE
        return max(PAGE_SIZE, step)
    n = parse_size(value, what="resolution")
    if n == 0:
        raise EpcsimError("resolution: must be at least one page (4096 bytes), got 0")
    if n % PAGE_SIZE:
        lo = n // PAGE_SIZE * PAGE_SIZE
        near = " or ".join(format_size(x) for x in (lo, lo + PAGE_SIZE) if x)
        raise EpcsimError(
            f"resolution: {value!r} is not a whole number of 4096-byte pages (try {near})"
        )
    if n > capacity:
        raise EpcsimError(
            f"resolution: {format_size(n)} is above the host's EPC ({format_size(capacity)})"
        )
    return n


def _budget(value: int | str | None, capacity: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip() == "capacity":
        return capacity
    return eval_size(value, capacity, what="budget")


def check_advise_out(out: object) -> Path:
    """Validate advice directory *out*; return its resolved path.  Accepted: a new or
    empty directory, or one an advice wrote (only ``advise.json`` and ``points``:
    resumed).  Refused (RunDirError): a file, a directory holding anything else."""
    target, label = resolve_out(out, "advice")
    entries = {e for e in existing_entries(target, label) if not e.startswith(".")}
    foreign = sorted(entries - {"advise.json", "points"})
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(
            f"{label}: not an epcsim advice directory (it holds {shown}); name a new or "
            "empty directory"
        )
    marker = target / "advise.json"
    if marker.exists():
        try:
            fmt = json.loads(marker.read_text(encoding="utf-8")).get("format")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            fmt = None
        if fmt != ADVISE_FORMAT:
            raise RunDirError(f"{label}: its advise.json is not an epcsim advice")
    return target


# --- the search -----------------------------------------------------------------------------


@dataclass
class _Probe:
    limit: int
    others: tuple[tuple[str, int], ...]
    round: int
    meets: bool
    values: dict[str, float | None]
    why: str | None


@dataclass
class AdviseResult:
    """An advice: ``data`` is the content of ``advise.json``."""

    data: dict[str, Any]
    out: Path | None = None

    @property
    def feasible(self) -> bool:
        return bool(self.data["feasible"])

    @property
    def limits(self) -> dict[str, int]:
        return dict(self.data["limits"])


class _Search:
    def __init__(
        self,
        tenants: list[str],
        slos: list[SLO],
        grid: list[int],
        evaluate: Evaluator,
    ) -> None:
        self.tenants = tenants
        self.slos = slos
        self.grid = grid
        self.evaluate = evaluate
        self.cache: dict[tuple[tuple[str, int], ...], list[dict[str, Any]]] = {}
        self.round = 0
        self.rounds: list[dict[str, Any]] = []
        self.curves: dict[str, list[_Probe]] = {t: [] for t in tenants}
        self.notes: dict[str, list[str]] = {t: [] for t in tenants}
        self.monotone: dict[str, bool] = dict.fromkeys(tenants, True)

    def run_batch(self, kind: str, assignments: list[Assignment]) -> list[list[dict[str, Any]]]:
        keys = [tuple(sorted(a.items())) for a in assignments]
        todo: list[tuple[tuple[str, int], ...]] = []
        for k in keys:
            if k not in self.cache and k not in todo:
                todo.append(k)
        self.round += 1
        self.rounds.append({"round": self.round, "kind": kind, "assignments": len(todo)})
        if todo:
            got = self.evaluate([dict(k) for k in todo])
            if len(got) != len(todo):
                raise EpcsimError(
                    f"evaluate: returned {len(got)} results for {len(todo)} assignments"
                )
            for k, rows in zip(todo, got, strict=True):
                self.cache[k] = list(rows)
        return [self.cache[k] for k in keys]

    def probe(self, kind: str, asks: list[tuple[str, int, Assignment]]) -> list[_Probe]:
        """Evaluate tenant *t* at *limit* with the others at *base*, for each ask."""
        assignments = [base | {t: limit} for t, limit, base in asks]
        results = self.run_batch(kind, assignments)
        out = []
        for (t, limit, base), rows in zip(asks, results, strict=True):
            meets, values, why = _judge(rows, t, self.slos)
            others = tuple(sorted((k, v) for k, v in base.items() if k != t))
            p = _Probe(limit, others, self.round, meets, values, why)
            self.curves[t].append(p)
            out.append(p)
        return out

    def search(self, bases: dict[str, tuple[Assignment, int]]) -> dict[str, int]:
        """For each tenant t of *bases* (base assignment of the others, lowest grid
        index): the smallest grid limit from that index meeting t's SLOs, in lock-step;
        the top of the grid where none does."""
        n = len(self.grid)
        known: dict[str, dict[int, bool]] = {t: {} for t in bases}

        def ask(kind: str, wanted: dict[str, list[int]]) -> None:
            asks = []
            for t, idxs in wanted.items():
                base = {k: v for k, v in bases[t][0].items() if k != t}
                asks.extend((t, self.grid[i], base) for i in idxs if i not in known[t])
            if not asks:
                return
            for (t, limit, _), p in zip(asks, self.probe(kind, asks), strict=True):
                known[t][self.grid.index(limit)] = p.meets

        # the coarse pass
        coarse: dict[str, list[int]] = {}
        for t, (_, lo) in bases.items():
            span = n - 1 - lo
            k = min(COARSE, span + 1)
            coarse[t] = sorted({lo + (span * (j + 1)) // k for j in range(k)})
        ask("coarse", coarse)
        # bracket, or the full scan for a curve seen not monotone
        result: dict[str, int] = {}
        brackets: dict[str, tuple[int, int]] = {}
        scan: dict[str, list[int]] = {}
        for t, (_, lo) in bases.items():
            met = sorted(i for i, ok in known[t].items() if ok)
            if not met:
                result[t] = n - 1
                continue
            first = met[0]
            bad_above = sorted(i for i, ok in known[t].items() if not ok and i > first)
            if bad_above:
                self._not_monotone(t, first, bad_above[0], lo)
                scan[t] = list(range(lo, first))
                continue
            below = [i for i, ok in known[t].items() if not ok and i < first]
            brackets[t] = (max(below) if below else lo - 1, first)
        ask("scan", scan)
        for t in scan:
            result[t] = min(i for i, ok in known[t].items() if ok)
        # bisection in lock-step
        while True:
            wanted = {t: [(a + b) // 2] for t, (a, b) in brackets.items() if b - a > 1}
            if not wanted:
                break
            ask("bisect", wanted)
            for t, (mid,) in wanted.items():
                a, b = brackets[t]
                brackets[t] = (a, mid) if known[t][mid] else (mid, b)
        for t, (_, b) in brackets.items():
            result[t] = b
        return {t: self.grid[i] for t, i in result.items()}

    def _not_monotone(self, t: str, met: int, bad: int, lo: int) -> None:
        self.monotone[t] = False
        below = self.grid[lo:met]
        what = (
            f"every limit below {format_size(self.grid[met])} was evaluated "
            f"({len(below)} limits) and the smallest meeting the SLOs chosen"
            if below
            else "it is the lowest limit searched, chosen"
        )
        self.notes[t].append(
            f"not monotone (round {self.round}): the SLOs are met at "
            f"{format_size(self.grid[met])} but violated at {format_size(self.grid[bad])}; "
            f"{what}"
        )


def _default_evaluator(
    sc: Scenario,
    tenants: list[str],
    seeds: list[int],
    sets: Sequence[str],
    points: Path,
    jobs: int | None,
    scheduler: str | None,
) -> Evaluator:
    """The sweep as an evaluator: each assignment x seed one point of the dataset at
    *points*, one grid column ``cgroup.N.max`` per tenant (every point sets every
    tenant's limit, the scenario's where the assignment leaves it out, so that every
    file has the same columns)."""
    index = {c.path: i for i, c in enumerate(sc.cgroup)}
    scenario_limit = {
        t: (
            "max"
            if sc.cgroup[index[t]].max is None
            else str(eval_size(sc.cgroup[index[t]].max, sc.capacity, what="max"))
        )
        for t in tenants
    }

    def evaluate(assignments: list[Assignment]) -> list[list[dict[str, Any]]]:
        from .sweep import evaluate as sweep_evaluate
        from .sweep.grid import Axis
        from .sweep.points import expand

        per: list[list[Any]] = []
        specs: list[Any] = []
        for a in assignments:
            axes = [
                Axis(
                    f"cgroup.{index[t]}.max", (str(a[t]) if t in a else scenario_limit[t],), "size"
                )
                for t in tenants
            ]
            ps = expand(sc, axes, seeds, list(sets))
            per.append(ps)
            specs.extend(ps)
        rows = sweep_evaluate(specs, out=points, jobs=jobs, scheduler=scheduler)
        out = []
        for ps in per:
            got: list[dict[str, Any]] = []
            for p in ps:
                got.extend(
                    rows[p.key]
                    or [{"seed": p.seed, "outcome": "error", "error": "the point has no rows"}]
                )
            out.append(got)
        return out

    return evaluate


def advise(
    scenario: Scenario | str | os.PathLike[str] | dict,
    *,
    slos: Sequence[str],
    tenants: Sequence[str] | None = None,
    budget: int | str | None = None,
    resolution: int | str | None = None,
    sets: Sequence[str] = (),
    seeds: str | Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    scheduler: str | None = None,
    evaluate: Evaluator | None = None,
) -> AdviseResult:
    """The smallest ``misc.max`` per tenant meeting every SLO (``docs/ADVISE.md``).

    Args:
        scenario: as :func:`epcsim.run` takes it.
        slos: ``"slowdown<=1.5"``, ``"p99_fault_latency<=50us"``, ... (:data:`METRICS`);
            each must hold for every tenant and every seed.
        tenants: the tenant cgroups (default: every cgroup other than / holding an
            enclave, in the scenario's order).
        budget: the most the limits may add up to: a size, ``"capacity"`` (the host's
            EPC) or an expression of capacity; None: no budget.
        resolution: the step of the limits (whole pages; default capacity / 32 rounded
            down to a page).
        sets: ``KEY=VALUE`` settings applied to the scenario first.
        seeds: ``"1..3"``, ``"1,4"``, a list; None: the scenario's ``host.seed``.
        out: the advice directory (``advise.json``; the default evaluator's sweep
            dataset in ``out/points``); required without *evaluate*.
        jobs, scheduler: the sweep's (local processes; a Dask scheduler address).
        evaluate: the evaluator (:data:`Evaluator`); default: the sweep.

    Every argument is checked before anything runs (EpcsimError, one line).  An advice
    that finds no assignment is not an error: ``feasible`` is false.
    """
    slo_list = [parse_slo(s) for s in ([slos] if isinstance(slos, str) else list(slos))]
    if not slo_list:
        raise EpcsimError("slos: name at least one SLO (e.g. 'slowdown<=1.5')")
    if len({s.text for s in slo_list}) != len(slo_list):
        raise EpcsimError("slos: an SLO is named twice")
    items = tuple(sets)
    if any(not isinstance(s, str) for s in items):
        raise EpcsimError(f"sets: expected KEY=VALUE strings, got {sets!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise EpcsimError(f"jobs: expected a positive integer, got {jobs!r}")
    if scheduler is not None:
        from .sweep import check_scheduler

        scheduler = check_scheduler(scheduler)
    sc = load_resolved(scenario, items)
    seed_list = [sc.host.seed] if seeds is None else parse_seeds(seeds)
    names = _tenants(sc, tenants)
    capacity = sc.capacity
    step = _resolution(resolution, capacity)
    cap_budget = _budget(budget, capacity)
    target = check_advise_out(out) if out is not None else None
    if evaluate is None:
        if target is None:
            raise EpcsimError("out: name the advice directory (it holds the runs' dataset)")
        evaluate = _default_evaluator(sc, names, seed_list, (), target / "points", jobs, scheduler)
    elif not callable(evaluate):
        raise EpcsimError(f"evaluate: expected a callable, got {type(evaluate).__name__}")

    grid = [step * k for k in range(1, capacity // step + 1)]
    search = _Search(names, slo_list, grid, evaluate)
    cand = search.search({t: ({}, 0) for t in names})
    infeasible: list[str] = []
    reason: str | None = None
    final: dict[str, tuple[bool, dict[str, float | None], str | None]] = {}
    while True:
        total = sum(cand.values())
        if cap_budget is not None and total > cap_budget:
            reason = (
                f"budget: the smallest limits found add up to {format_size(total)}, above "
                f"the budget {format_size(cap_budget)}"
            )
            break
        (rows,) = search.run_batch("combination", [dict(cand)])
        final = {t: _judge(rows, t, slo_list) for t in names}
        bad = [t for t in names if not final[t][0]]
        if not bad:
            break
        infeasible = [t for t in bad if cand[t] == grid[-1]]
        if infeasible:
            reason = "slo: " + "; ".join(
                f"{t} violates at {format_size(grid[-1])}: {final[t][2]}" for t in infeasible
            )
            break
        for t in bad:
            search.notes[t].append(
                f"violated in the combination of round {search.round} at "
                f"{format_size(cand[t])} ({final[t][2]}); searched again above it"
            )
        raised = search.search(
            {t: ({k: v for k, v in cand.items() if k != t}, grid.index(cand[t]) + 1) for t in bad}
        )
        cand.update(raised)

    feasible = reason is None
    data = _data(
        sc,
        items,
        seed_list,
        slo_list,
        names,
        step,
        capacity,
        cap_budget,
        search,
        cand,
        final,
        feasible,
        reason,
        infeasible,
        target,
    )
    result = AdviseResult(data)
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            target / "advise.json", json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n"
        )
        result.out = target
    return result


def _curve(probes: list[_Probe]) -> list[_Probe]:
    """A tenant's probes by the others' limits then its own, each (others, limit) once
    (the first round that evaluated it)."""
    seen: dict[tuple[Any, int], _Probe] = {}
    for p in sorted(probes, key=lambda p: (p.others, p.limit, p.round)):
        seen.setdefault((p.others, p.limit), p)
    return list(seen.values())


def _data(
    sc: Scenario,
    sets: tuple[str, ...],
    seeds: list[int],
    slos: list[SLO],
    names: list[str],
    step: int,
    capacity: int,
    budget: int | None,
    search: _Search,
    cand: dict[str, int],
    final: dict[str, tuple[bool, dict[str, float | None], str | None]],
    feasible: bool,
    reason: str | None,
    infeasible: list[str],
    target: Path | None,
) -> dict[str, Any]:
    limits = {c.path: c.max for c in sc.cgroup}
    tenants: dict[str, Any] = {}
    for t in names:
        meets, values, why = final.get(t, (None, {}, None))
        margin = {
            s.text: {
                "value": values.get(s.text),
                "bound": s.bound,
                "margin": s.margin(values.get(s.text)),
                "relative": (
                    None
                    if s.margin(values.get(s.text)) is None or s.bound == 0
                    else s.margin(values.get(s.text)) / s.bound
                ),
            }
            for s in slos
        }
        scen = limits[t]
        tenants[t] = {
            "scenario_limit": None if scen is None else eval_size(scen, capacity, what="max"),
            "limit": cand[t],
            "meets": meets,
            "why_not": why,
            "metrics": values,
            "margin": margin,
            "monotone": search.monotone[t],
            "notes": search.notes[t],
            "curve": [
                {
                    "limit": p.limit,
                    "others": dict(p.others),
                    "round": p.round,
                    "meets": p.meets,
                    "why_not": p.why,
                    "metrics": p.values,
                }
                for p in _curve(search.curves[t])
            ],
        }
    return {
        "format": ADVISE_FORMAT,
        "version": ADVISE_JSON_VERSION,
        "scenario": sc.name,
        "scenario_hash": sc.digest(),
        "sets": list(sets),
        "seeds": seeds,
        "slos": [{"text": s.text, "metric": s.metric, "op": s.op, "bound": s.bound} for s in slos],
        "tenants_searched": names,
        "warnings": _warnings(sc, names),
        "resolution": step,
        "capacity": capacity,
        "budget": budget,
        "feasible": feasible,
        "reason": reason,
        "infeasible_tenants": infeasible,
        "limits": {t: cand[t] for t in names},
        "total": sum(cand.values()),
        "rounds": search.rounds,
        "evaluations": len(search.cache),
        "tenants": tenants,
        "points": "points" if target is not None else None,
    }
