"""A sweep's points: (resolved scenario, seed) -> rows, keyed by a hash of both.

:func:`expand` makes the points of a grid (the product of the axes, then the seeds);
:func:`run_point` runs one (in a worker process or a Dask worker: it is a top-level
function, picklable by reference) and returns its rows (``docs/SWEEP.md``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..api import run as _run
from ..compare import TENANT_SCHEMA, tenant_rows
from ..errors import EpcsimError, ScenarioError
from ..scenario import MemoryEstimateWarning, Scenario, load_scenario
from .grid import Axis, typed_value

__all__ = [
    "FIXED_COLUMNS",
    "SCHEMA_VERSION",
    "PointResult",
    "PointSpec",
    "expand",
    "point_key",
    "point_schema",
    "run_point",
]

#: ``epcsim.sweep.version`` in each file's schema metadata
SCHEMA_VERSION = 1
#: hex digits of a point's key
KEY_DIGITS = 16

#: the columns every point's file has, the grid's columns after ``point``
_HEAD = [pa.field("point", pa.string())]
_TAIL = [
    pa.field("seed", pa.int64()),
    pa.field("scenario_hash", pa.string()),
    pa.field("engine", pa.string()),
    *TENANT_SCHEMA,
    pa.field("error", pa.string()),
    pa.field("wall_s", pa.float64()),
    pa.field("hostname", pa.string()),
]
#: names a grid key may not take (they are the dataset's own columns)
FIXED_COLUMNS = frozenset(f.name for f in (*_HEAD, *_TAIL))
_ARROW = {
    "size": pa.int64(),
    "time": pa.int64(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "str": pa.string(),
}


def point_schema(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    """The dataset's schema: ``point``, one column per grid key (*columns*: (key, kind)
    in the grid's order, typed by kind), then the fixed columns."""
    grid = [pa.field(k, _ARROW[kind]) for k, kind in columns]
    return pa.schema(
        [*_HEAD, *grid, *_TAIL], metadata={"epcsim.sweep.version": str(SCHEMA_VERSION)}
    )


def point_key(scenario_hash: str, seed: int) -> str:
    """A point's identity: the first 16 hex digits of sha256(scenario hash, seed)."""
    return hashlib.sha256(f"{scenario_hash}\0{seed}".encode()).hexdigest()[:KEY_DIGITS]


@dataclass(frozen=True)
class PointSpec:
    """One point: the resolved scenario (every ``--set`` and grid value applied; a
    plain dict, as ``Scenario.model_dump(mode="json")`` gives it), the seed, the grid
    values (key -> ``--set`` value string), and its key (:func:`point_key`).  *kinds*
    (key -> kind of :data:`epcsim.sweep.grid.KINDS`) types the grid columns; a key
    missing from it is a string column."""

    scenario: dict[str, Any]
    seed: int
    values: dict[str, str]
    key: str
    kinds: dict[str, str] = field(default_factory=dict)

    def columns(self) -> list[tuple[str, str]]:
        """(key, kind) of the grid columns, in the grid's order."""
        return [(k, self.kinds.get(k, "str")) for k in self.values]


@dataclass
class PointResult:
    """What a point gives back to the driver: its rows (the dataset's columns), the
    engine that ran it, its wall time and host; *files*: the run directory's files
    (name -> bytes) when asked for (``keep_runs``), else None."""

    key: str
    rows: list[dict[str, Any]]
    engine: str | None
    wall_s: float
    hostname: str
    files: dict[str, bytes] | None = None


def _describe(axes: Sequence[Axis], combo: Sequence[str]) -> str:
    return ", ".join(f"{a.key}={v}" for a, v in zip(axes, combo, strict=True)) or "the scenario"


def expand(
    scenario: Scenario, axes: Sequence[Axis], seeds: Sequence[int], sets: Sequence[str] = ()
) -> list[PointSpec]:
    """The points of a grid: *sets* then one value of each axis applied to *scenario*,
    for each seed; the axes' product in order (the last axis varies fastest), the seeds
    innermost.  Each point's scenario is loaded and checked (the memory estimate too):
    EpcsimError naming the point's values and the field for a combination the scenario
    refuses, or for two points that are the same run."""
    base = scenario.model_dump(mode="json")
    kinds = {a.key: a.kind for a in axes}
    points: list[PointSpec] = []
    seen: dict[str, str] = {}
    for combo in itertools.product(*(a.values for a in axes)):
        overrides = [*sets, *(a.override(v) for a, v in zip(axes, combo, strict=True))]
        where = _describe(axes, combo)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MemoryEstimateWarning)
                sc = load_scenario(base, overrides=overrides)
        except ScenarioError as e:
            loc = ".".join(x for x in (e.table, e.field) if x)
            raise EpcsimError(f"point {where}: {loc + ': ' if loc else ''}{e.message}") from None
        resolved = sc.model_dump(mode="json")
        digest = sc.digest()
        values = {a.key: v for a, v in zip(axes, combo, strict=True)}
        for seed in seeds:
            key = point_key(digest, seed)
            if key in seen:
                raise EpcsimError(
                    f"point {where}, seed {seed}: the same run as point {seen[key]} "
                    "(the scenario resolves to the same values)"
                )
            seen[key] = f"{where}, seed {seed}"
            points.append(PointSpec(resolved, seed, values, key, kinds))
    return points


def run_point(p: PointSpec, keep_run: bool = False) -> PointResult:
    """Run one point: ``epcsim.run(p.scenario, seed=p.seed, engine="auto")``, no run
    directory; its rows are :func:`epcsim.compare.tenant_rows` of the summary (one per
    cgroup, then one per enclave) plus the point's columns.  An exception (any but
    KeyboardInterrupt and SystemExit) gives one row: ``outcome`` "error", ``error``
    "TYPE: message", the tenant columns null.  *keep_run*: also return the run
    directory's files (``summary.json``, ``timeseries.parquet``, ..., ``run.json``)."""
    t0 = time.monotonic()
    hostname = socket.gethostname()
    files: dict[str, bytes] | None = None
    digest: str | None = None
    engine: str | None = None
    error: str | None = None
    try:
        sc = load_scenario(p.scenario, check_memory=False)  # expand() checked it
        digest = sc.digest()
        res = _run(sc, seed=p.seed, engine="auto", report=False)
        engine = res.engine
        rows = tenant_rows(res.summary)
        if keep_run:
            files = _run_files(res)
    except Exception as e:  # the point's failure is data; the sweep goes on
        error = " ".join(f"{type(e).__name__}: {e}".splitlines())
        rows = [dict.fromkeys(TENANT_SCHEMA.names) | {"outcome": "error"}]
        files = None
    wall = round(time.monotonic() - t0, 3)
    grid = {k: typed_value(p.kinds.get(k, "str"), v) for k, v in p.values.items()}
    head = {"point": p.key, **grid, "seed": p.seed, "scenario_hash": digest, "engine": engine}
    tail = {"error": error, "wall_s": wall, "hostname": hostname}
    return PointResult(p.key, [head | r | tail for r in rows], engine, wall, hostname, files)


def _run_files(res: Any) -> dict[str, bytes]:
    """A run directory's files in memory (``epcsim report`` reads them as a run)."""
    import json

    with tempfile.TemporaryDirectory(prefix="epcsim-point-") as d:
        res.write(d)
        names = sorted(os.listdir(d))
        out = {n: Path(d, n).read_bytes() for n in names}
    facts = dict(res.run) | {"files": sorted([*names, "run.json"])}
    out["run.json"] = (json.dumps(facts, indent=2, sort_keys=True) + "\n").encode()
    return out


def check_seeds(seeds: Sequence[int]) -> None:
    """Seeds as the dataset stores them (int64)."""
    for s in seeds:
        if s >= 2**63:
            raise EpcsimError(f"seeds: {s} is above 2^63-1")
