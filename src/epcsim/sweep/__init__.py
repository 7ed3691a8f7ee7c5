"""``epcsim sweep``: a scenario over a grid of values × seeds, into a Parquet dataset.

Each point (resolved scenario, seed) is one :func:`epcsim.run`, keyed by the hash of
both (:func:`~epcsim.sweep.points.point_key`); points run on a local process pool
(:func:`~epcsim.sweep.executors.run_local`) or an existing Dask cluster
(``epcsim.sweep.dask_backend.run_dask``), and the driver writes each point's rows as
one Parquet file as soon as it has them, so a sweep stops and resumes anywhere.

The output directory (``docs/SWEEP.md``)::

    DIR/seed-N/KEY.parquet   one file per point (its rows: one per cgroup, one per enclave)
    DIR/_meta/sweep.json     the manifest: scenario, sets, axes, seeds, points
    DIR/_meta/lock           held (flock) while a sweep writes DIR
    DIR/_meta/sweep.html     the offline summary
    DIR/_runs/KEY/           a point's run directory (keep_runs only)

Readers skip names starting with ``_`` or ``.``: ``pyarrow.dataset.dataset(DIR)`` reads
every point, as do ``pandas.read_parquet(DIR)``, DuckDB's
``read_parquet('DIR/seed-*/*.parquet')`` and polars' ``scan_parquet`` of the same glob.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .._atomic import atomic_path, atomic_write_bytes, atomic_write_text
from ..api import load_resolved
from ..errors import EpcsimError
from ..rundir import RunDirError, exclusive_lock, existing_entries, resolve_out
from ..scenario import Scenario
from .executors import run_local
from .grid import Axis, axes_for, parse_grid, parse_seeds
from .points import (
    FIXED_COLUMNS,
    KEY_DIGITS,
    PointResult,
    PointSpec,
    check_seeds,
    expand,
    point_schema,
    run_point,
)

__all__ = [
    "MANIFEST",
    "SWEEP_FORMAT",
    "SWEEP_VERSION",
    "Axis",
    "PointResult",
    "PointSpec",
    "SweepResult",
    "check_scheduler",
    "evaluate",
    "expand",
    "parse_grid",
    "parse_seeds",
    "read_dataset",
    "run_point",
    "sweep",
]

#: ``_meta/sweep.json`` ``format``: marks a sweep directory
SWEEP_FORMAT = "epcsim-sweep"
SWEEP_VERSION = 1
META = "_meta"
RUNS = "_runs"
MANIFEST = f"{META}/sweep.json"
LOCK = f"{META}/lock"
HTML = f"{META}/sweep.html"

_PART = re.compile(r"seed-(\d+)")
_FILE = re.compile(rf"[0-9a-f]{{{KEY_DIGITS}}}\.parquet")
#: what an interrupted atomic write leaves: ``.NAME.tmp-XXXX`` (epcsim._atomic)
_LEFTOVER = re.compile(r"\..+\.tmp-\w+(\.\w+)*")
_SCHEDULER = re.compile(
    r"(?P<scheme>tcp|tls|ws|wss)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})"
)


@dataclass
class SweepResult:
    """A sweep: its points (in grid order), how many ran now / were already in the
    dataset, the points whose rows say ``outcome`` "error", and the rows of all its
    points (read back from the dataset)."""

    out: Path
    points: list[PointSpec]
    axes: list[Axis]
    seeds: list[int]
    ran: int
    skipped: int
    errors: list[str] = field(default_factory=list)
    table: pa.Table | None = None


# --- arguments ----------------------------------------------------------------------------


def check_scheduler(address: object) -> str:
    """A Dask scheduler address: ``tcp://HOST:PORT`` (also ``tls://``, ``ws://``,
    ``wss://``; HOST a name, an IPv4 address or ``[IPv6]``; PORT 1-65535), or
    ``inproc://...`` (a scheduler in this process).  EpcsimError quoting a bad one."""
    text = address if isinstance(address, str) else repr(address)
    bad = EpcsimError(
        f"--scheduler {text!r}: expected tcp://HOST:PORT (or tls://, ws://, wss://, inproc://)"
    )
    if not isinstance(address, str):
        raise bad
    if address.startswith("inproc://") and len(address) > len("inproc://"):
        return address
    m = _SCHEDULER.fullmatch(address)
    if m is None or not 1 <= int(m["port"]) <= 65535:
        raise bad
    return address


def _check_jobs(jobs: object) -> int | None:
    if jobs is None:
        return None
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise EpcsimError(f"--jobs: expected a positive integer, got {jobs!r}")
    return jobs


def _load(scenario: object, sets: tuple[str, ...]) -> tuple[Scenario, Scenario]:
    """(the scenario as given, the scenario with *sets* applied)."""
    base = load_resolved(scenario)
    return base, (load_resolved(scenario, sets) if sets else base)


# --- the directory ------------------------------------------------------------------------


def _label(out: object) -> str:
    return f"out {os.fspath(out)}"  # type: ignore[arg-type]


def _resolve_out(out: object) -> Path:
    return resolve_out(out, "sweep")[0]


def read_manifest(target: Path) -> dict[str, Any] | None:
    """``_meta/sweep.json`` of *target*, or None if absent; RunDirError if it is not
    an epcsim sweep manifest."""
    path = target / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunDirError(f"{path}: cannot read the sweep manifest: {e}") from None
    if not isinstance(data, dict) or data.get("format") != SWEEP_FORMAT:
        raise RunDirError(f'{path}: not an epcsim sweep manifest (no "format": "{SWEEP_FORMAT}")')
    if data.get("version") != SWEEP_VERSION:
        raise RunDirError(
            f"{path}: sweep format version {data.get('version')!r}; this epcsim reads "
            f"version {SWEEP_VERSION}"
        )
    return data


def _foreign(target: Path, entries: set[str]) -> list[str]:
    """Entries of a sweep directory epcsim did not write (relative paths)."""
    out: list[str] = []
    for e in sorted(entries):
        p = target / e
        if e in (META, RUNS) and p.is_dir() and not p.is_symlink():
            continue
        if _PART.fullmatch(e) and p.is_dir() and not p.is_symlink():
            out += [
                f"{e}/{f}"
                for f in sorted(os.listdir(p))
                if not (_FILE.fullmatch(f) or _LEFTOVER.fullmatch(f))
            ]
            continue
        out.append(e)
    return out


def _check_dir(target: Path, label: str) -> dict[str, Any] | None:
    """The manifest of sweep directory *target*, None if it is new (absent, empty, or
    holding only ``_meta`` without a manifest: a sweep that had just begun).
    RunDirError for anything that is not an epcsim sweep."""
    entries = existing_entries(target, label)
    if not entries:
        return None
    manifest = read_manifest(target)
    if manifest is None:
        meta = target / META
        if entries == {META} and meta.is_dir() and set(os.listdir(meta)) <= {"lock"}:
            return None
        raise RunDirError(
            f"{label}: not an epcsim sweep directory (it holds files and no {MANIFEST}); "
            "name a new or empty directory"
        )
    foreign = _foreign(target, entries)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(f"{label}: holds files epcsim did not write ({shown}); move them away")
    return manifest


def _identity(m: dict[str, Any]) -> tuple[Any, ...]:
    scenario = m.get("scenario") or {}
    cols = [(c["key"], c["kind"]) for c in m.get("columns", [])]
    return (scenario.get("hash"), list(m.get("sets", [])), cols)


def _describe_manifest(m: dict[str, Any]) -> str:
    scenario = m.get("scenario")
    keys = ", ".join(c["key"] for c in m.get("columns", [])) or "no grid"
    if not isinstance(scenario, dict):  # written by evaluate(): points of any scenario
        return f"points written by epcsim.sweep.evaluate, grid {keys}"
    name = scenario.get("name", "?")
    h = str(scenario.get("hash") or "")[:12]
    sets = m.get("sets") or []
    return f"scenario {name} ({h}), grid {keys}" + (f", --set {' '.join(sets)}" if sets else "")


@contextlib.contextmanager
def _claim(target: Path, label: str, recheck: Callable[[], None]) -> Iterator[None]:
    """Create *target*/_meta, hold its lock (``flock`` on ``_meta/lock``) for the
    block; *recheck* runs under the lock.  RunDirError if another sweep holds it."""
    meta = target / META
    meta.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target / LOCK, label, "sweep"):
        recheck()
        _clean_leftovers(target)
        yield


def _clean_leftovers(target: Path) -> None:
    """Temporary files a killed sweep left (``.KEY.parquet.tmp-XXXX``)."""
    for part in target.iterdir():
        if _PART.fullmatch(part.name) and part.is_dir():
            for f in part.iterdir():
                if _LEFTOVER.fullmatch(f.name):
                    with contextlib.suppress(OSError):
                        f.unlink()


def point_path(target: Path, p: PointSpec) -> Path:
    """Where point *p*'s rows are: ``DIR/seed-N/KEY.parquet``."""
    return target / f"seed-{p.seed}" / f"{p.key}.parquet"


def _done(target: Path) -> dict[str, Path]:
    """key -> file of every point in the dataset."""
    out: dict[str, Path] = {}
    if not target.is_dir():
        return out
    for part in target.iterdir():
        if _PART.fullmatch(part.name) and part.is_dir():
            for f in part.iterdir():
                if _FILE.fullmatch(f.name):
                    out[f.name[:KEY_DIGITS]] = f
    return out


def _error_keys(files: Sequence[Path]) -> set[str]:
    """The points among *files* whose rows say ``outcome`` "error"."""
    if not files:
        return set()
    t = pads.dataset([str(f) for f in files], format="parquet").to_table(
        columns=["point"], filter=pads.field("outcome") == "error"
    )
    return set(t.column("point").to_pylist())


def _remove_sweep(target: Path) -> None:
    """Delete a sweep's own files (the points, _runs, the manifest and report) from
    *target*, which :func:`_check_dir` found to hold nothing else."""
    for part in list(target.iterdir()):
        if _PART.fullmatch(part.name) and part.is_dir():
            shutil.rmtree(part)
    shutil.rmtree(target / RUNS, ignore_errors=True)
    for name in (MANIFEST, HTML):
        with contextlib.suppress(FileNotFoundError):
            (target / name).unlink()


def _write_manifest(target: Path, data: dict[str, Any]) -> None:
    """Write ``_meta/sweep.json`` (not when it already says the same: a rerun writes
    nothing but the report)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    path = target / MANIFEST
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="utf-8") == text:
            return
    atomic_write_text(path, text)


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The manifest after adding *new*'s axes, seeds and points to *old* (same
    identity): values and seeds in first-seen order, points sorted."""
    if old is None:
        return new
    out = dict(old)
    axes = [dict(a) for a in old.get("axes", [])]
    for a in new["axes"]:
        mine = next((x for x in axes if x["key"] == a["key"]), None)
        if mine is None:
            axes.append(a)
        else:
            mine["values"] = list(mine["values"]) + [
                v for v in a["values"] if v not in mine["values"]
            ]
    out["axes"] = axes
    out["seeds"] = list(old.get("seeds", [])) + [
        s for s in new["seeds"] if s not in old.get("seeds", [])
    ]
    out["points"] = sorted(set(old.get("points", [])) | set(new["points"]))
    if out.get("scenario") is None:
        out["scenario"] = new.get("scenario")
    return out


def _write_point(target: Path, p: PointSpec, res: PointResult, schema: pa.Schema) -> None:
    path = point_path(target, p)
    path.parent.mkdir(exist_ok=True)
    table = pa.Table.from_pylist(res.rows, schema=schema)
    # no .parquet suffix on the temporary name: a glob never meets a partial file
    with atomic_path(path, keep_suffix=False) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _write_run(target: Path, key: str, files: dict[str, bytes]) -> None:
    """``_runs/KEY/``: built aside, renamed into place (a previous one replaced)."""
    runs = target / RUNS
    runs.mkdir(exist_ok=True)
    final = runs / key
    tmp = runs / f".{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_dataset(out: str | os.PathLike[str]) -> pa.Table:
    """Every row of the sweep directory *out*, sorted by point key then as written
    (an empty table with no columns if it has no point)."""
    files = sorted(_done(Path(out)).values(), key=lambda f: f.name)
    return _read(files)


def _read(files: Sequence[Path]) -> pa.Table:
    """The rows of these point files, in this order (threads read them)."""
    if not files:
        return pa.table({})
    return pads.dataset([str(f) for f in files], format="parquet").to_table()


# --- running ------------------------------------------------------------------------------


def _columns(points: Sequence[PointSpec]) -> list[tuple[str, str]]:
    cols: dict[str, str] = {}
    for p in points:
        for k, kind in p.columns():
            if cols.setdefault(k, kind) != kind:
                raise EpcsimError(f"points: grid key {k} is typed {cols[k]} and {kind}")
    bad = sorted(set(cols) & FIXED_COLUMNS)
    if bad:
        raise EpcsimError(f"grid: {bad[0]} is a column of the dataset; it cannot be a grid key")
    return list(cols.items())


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ctrl-C (SIGINT) waits until the block is over: a point's files and its count
    (what the interrupted command reports as written) change together.  The signal is
    held by a handler of the block's own and delivered again after it, to the handler
    that was there (blocking it would not do: any thread of the process, pyarrow's
    among them, may take a process-directed signal).  Only in the main thread, where
    Python runs signal handlers; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught:
            signal.raise_signal(signal.SIGINT)


def _run_missing(
    target: Path,
    points: Sequence[PointSpec],
    schema: pa.Schema,
    *,
    jobs: int | None,
    scheduler: str | None,
    keep_runs: bool,
    retry_errors: bool,
    progress: Callable[[int, int], None] | None,
) -> tuple[int, int]:
    """Run the points of *points* not yet in the dataset (and, with *retry_errors*,
    those whose rows say "error"); write each as it finishes.  Returns (how many ran,
    how many were to run)."""
    done = _done(target)
    redo = _error_keys([done[p.key] for p in points if p.key in done]) if retry_errors else set()
    seen: set[str] = set()
    todo: list[PointSpec] = []
    for p in points:
        if p.key in seen:
            continue
        seen.add(p.key)
        if p.key not in done or p.key in redo:
            todo.append(p)
    if keep_runs:  # a kept run missing for a point already done: run it again
        queued = {p.key for p in todo}
        for p in points:
            if p.key in done and p.key not in queued and not (target / RUNS / p.key).is_dir():
                todo.append(p)
                queued.add(p.key)
    n = len(todo)
    count = 0
    if progress is not None:
        progress(0, n)
    if not todo:
        return 0, 0

    def on_result(p: PointSpec, res: PointResult) -> None:
        nonlocal count
        with _sigint_deferred():  # a point on disk is a point counted
            _write_point(target, p, res, schema)
            if res.files is not None:
                _write_run(target, p.key, res.files)
            count += 1
            if progress is not None:
                progress(count, n)

    fn: Callable[[PointSpec], PointResult] = run_point
    if keep_runs:
        fn = partial(run_point, keep_run=True)
    if scheduler is not None:
        try:  # imported when asked for (distributed is heavy); by name, so that this
            # module loads where the backend is missing
            run_dask = importlib.import_module(f"{__name__}.dask_backend").run_dask
        except ImportError as e:
            raise EpcsimError(
                f"--scheduler {scheduler}: the Dask backend is not available ({e})"
            ) from None
        run_dask(fn, todo, scheduler=scheduler, on_result=on_result)
    else:
        workers = jobs or os.cpu_count() or 1
        run_local(fn, todo, jobs=min(workers, n), on_result=on_result)
    return count, n


def _rows_by_key(target: Path, points: Sequence[PointSpec]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        if p.key in out:
            continue
        path = point_path(target, p)
        out[p.key] = pq.read_table(path).to_pylist() if path.is_file() else []
    return out


def evaluate(
    points: list[PointSpec],
    *,
    out: str | os.PathLike[str],
    jobs: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    retry_errors: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Run the points whose key is not yet in the dataset at *out* (a sweep directory,
    new or holding points with the same grid columns), write each as it finishes, and
    return the rows of every point (key -> rows, read back from the dataset).

    ``scheduler``: a Dask scheduler address (``epcsim.sweep.dask_backend``); else a
    local process pool of *jobs* processes (default: the CPUs).  ``progress`` is called
    with (points run, points to run)."""
    if not isinstance(points, list) or any(not isinstance(p, PointSpec) for p in points):
        raise EpcsimError("points: expected a list of PointSpec")
    jobs = _check_jobs(jobs)
    if scheduler is not None:
        scheduler = check_scheduler(scheduler)
    target = _resolve_out(out)
    label = _label(out)
    columns = _columns(points)
    new = {
        "format": SWEEP_FORMAT,
        "version": SWEEP_VERSION,
        "scenario": None,
        "sets": [],
        "columns": [{"key": k, "kind": kind} for k, kind in columns],
        "axes": [],
        "seeds": sorted({p.seed for p in points}),
        "points": sorted({p.key for p in points}),
    }

    def recheck() -> None:
        old = _check_dir(target, label)
        if old is not None and _identity(old)[2] != columns:
            raise RunDirError(
                f"{label}: holds a sweep with other grid columns ({_describe_manifest(old)})"
            )

    recheck()
    with _claim(target, label, recheck):
        _write_manifest(target, _merge(read_manifest(target), new))
        _run_missing(
            target,
            points,
            point_schema(columns),
            jobs=jobs,
            scheduler=scheduler,
            keep_runs=False,
            retry_errors=retry_errors,
            progress=progress,
        )
        return _rows_by_key(target, points)


def sweep(
    scenario: Scenario | str | os.PathLike[str] | dict,
    *,
    grid: Sequence[str] = (),
    seeds: str | Sequence[int] | None = None,
    sets: Sequence[str] = (),
    out: str | os.PathLike[str],
    jobs: int | None = None,
    scheduler: str | None = None,
    keep_runs: bool = False,
    force: bool = False,
    retry_errors: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Run *scenario* at every point of *grid* × *seeds* into the sweep directory *out*
    (``docs/SWEEP.md``).

    Args:
        scenario: as :func:`epcsim.run` takes it; its ``[sweep]`` table gives the grid
            and seeds not given here.
        grid: ``KEY=VALUES`` strings (``a,b,c``, ``A..B:N``, ``A..B:xN``); a key also
            in ``[sweep] grid`` replaces the file's values.
        seeds: ``"1..5"``, ``"1,3"`` or a list; default ``[sweep] seeds``, else the
            scenario's ``host.seed``.
        sets: ``KEY=VALUE`` settings applied before the grid's.
        out: the sweep directory: new, empty, or a sweep of the same scenario, sets and
            grid keys (its points are kept and the new ones added); a sweep of another
            scenario, sets or grid keys is replaced only with *force*.
        jobs: local processes (default: the CPUs); ``scheduler``: a Dask scheduler
            address instead.
        keep_runs: also keep each point's run directory in ``DIR/_runs/KEY``.
        retry_errors: run again the points whose rows say "error".
        progress: called with (points run, points to run) as they finish.

    Every argument is checked, and every point's scenario loaded, before anything is
    written (EpcsimError, one line).
    """
    if isinstance(grid, str) or isinstance(sets, str):
        raise EpcsimError("grid, sets: expected lists of strings, not one string")
    sets = tuple(sets)
    if any(not isinstance(s, str) for s in sets):
        raise EpcsimError(f"sets: expected KEY=VALUE strings, got {sets!r}")
    for name, flag in (("keep_runs", keep_runs), ("force", force), ("retry_errors", retry_errors)):
        if not isinstance(flag, bool):
            raise EpcsimError(f"{name}: expected True or False, got {flag!r}")
    jobs = _check_jobs(jobs)
    if scheduler is not None:
        scheduler = check_scheduler(scheduler)
    base, sc = _load(scenario, sets)
    axes = axes_for(sc, list(grid))
    if seeds is None and sc.sweep is not None and sc.sweep.seeds is not None:
        seeds = sc.sweep.seeds
    seed_list = [sc.host.seed] if seeds is None else parse_seeds(seeds)
    check_seeds(seed_list)
    points = expand(base, axes, seed_list, sets)
    columns = _columns(points) if points else [(a.key, a.kind) for a in axes]
    target = _resolve_out(out)
    label = _label(out)
    new = {
        "format": SWEEP_FORMAT,
        "version": SWEEP_VERSION,
        "scenario": {"name": base.name, "hash": base.digest()},
        "sets": list(sets),
        "columns": [{"key": k, "kind": kind} for k, kind in columns],
        "axes": [{"key": a.key, "kind": a.kind, "values": list(a.values)} for a in axes],
        "seeds": seed_list,
        "points": sorted({p.key for p in points}),
    }
    replace = False

    def recheck() -> None:
        nonlocal replace
        old = _check_dir(target, label)
        replace = False
        if old is not None and _identity(old) != _identity(new):
            if not force:
                raise RunDirError(
                    f"{label}: holds another sweep ({_describe_manifest(old)}); "
                    "replace it with --force (force=True), or choose another directory"
                )
            replace = True

    recheck()
    with _claim(target, label, recheck):
        if replace:
            _remove_sweep(target)
        manifest = _merge(None if replace else read_manifest(target), new)
        _write_manifest(target, manifest)
        ran, todo = _run_missing(
            target,
            points,
            point_schema(columns),
            jobs=jobs,
            scheduler=scheduler,
            keep_runs=keep_runs,
            retry_errors=retry_errors,
            progress=progress,
        )
        keys = {p.key for p in points}
        files = sorted({point_path(target, p) for p in points})
        table = _read(files)
        errors = sorted(_error_keys(files))
        all_axes = [Axis(a["key"], tuple(a["values"]), a["kind"]) for a in manifest["axes"]]
        _write_html(target, all_axes, manifest)
    return SweepResult(target, points, axes, seed_list, ran, len(keys) - todo, errors, table)


def _write_html(target: Path, axes: list[Axis], manifest: dict[str, Any]) -> None:
    """``_meta/sweep.html`` over the whole dataset (``epcsim.sweep.html``)."""
    from .html import render_sweep_html

    sc = manifest.get("scenario") or {}
    facts = [("scenario hash", str(sc.get("hash") or "—")[:12])]
    if manifest.get("sets"):
        facts.append(("--set", " ".join(manifest["sets"])))
    page = render_sweep_html(
        read_dataset(target), axes, title=f"{sc.get('name') or 'epcsim'}: sweep", facts=facts
    )
    atomic_write_text(target / HTML, page)
