"""The Python API: ``epcsim.run()``."""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import operator
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import __version__
from ._atomic import atomic_write_text
from .check import RESULT_FILES, compare_files, compare_results
from .compiled.eligibility import option_ineligibility, static_ineligibility
from .errors import EpcsimError
from .rundir import MANIFEST, RUN_FORMAT, RUN_JSON_VERSION, RunKey, check_out, claim
from .scenario import Scenario, load_scenario
from .sim import Result, simulate
from .sim.progress import SimProgress

__all__ = ["ENGINE_ALIASES", "ENGINES", "load_resolved", "run", "run_facts"]

#: the ``engine`` values :func:`run` accepts ("batched" is the old name of "compiled";
#: "check" runs both and compares them)
ENGINES = ("auto", "compiled", "reference", "check", "batched")
#: accepted alias -> name
ENGINE_ALIASES = {"batched": "compiled"}


def _check_seed(seed: object) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool):
        raise EpcsimError(f"seed: expected a non-negative integer, got {seed!r}")
    try:
        value = operator.index(seed)  # int, numpy integers; not str, float
    except TypeError:
        raise EpcsimError(
            f"seed: expected a non-negative integer, got {type(seed).__name__} {seed!r}"
        ) from None
    if value < 0:
        raise EpcsimError(f"seed: expected a non-negative integer, got {value}")
    return value


def _check_overrides(overrides: object) -> tuple[str, ...]:
    if isinstance(overrides, str | bytes) or not isinstance(overrides, Iterable):
        raise EpcsimError(
            "overrides: expected a list of KEY=VALUE strings, got "
            f"{type(overrides).__name__} {overrides!r}"
        )
    items = tuple(overrides)
    for item in items:
        if not isinstance(item, str):
            raise EpcsimError(
                f"overrides: expected KEY=VALUE strings, got {type(item).__name__} {item!r}"
            )
    return items


def _check_engine(engine: object) -> str:
    if not isinstance(engine, str) or engine not in ENGINES:
        raise EpcsimError(
            f"engine: expected one of auto, compiled, reference, check (or batched), got {engine!r}"
        )
    return ENGINE_ALIASES.get(engine, engine)


def load_resolved(scenario: object, overrides: tuple[str, ...] | list[str] = ()) -> Scenario:
    """*scenario* (a Scenario, a path, ``builtin:NAME``, TOML text or a dict) with the
    ``KEY=VALUE`` *overrides* applied: what :func:`run`, ``compare``, ``sweep`` and
    ``advise`` run.  A Scenario's ``[sweep]`` table (not part of the scenario, not
    dumped) is kept.  EpcsimError for anything else."""
    overrides = tuple(overrides)
    if isinstance(scenario, Scenario):
        if not overrides:
            return scenario
        sc = load_scenario(scenario.model_dump(mode="json"), overrides=overrides)
        return sc.model_copy(update={"sweep": scenario.sweep})
    if isinstance(scenario, os.PathLike):
        scenario = os.fspath(scenario)
    if not isinstance(scenario, str | dict):
        raise EpcsimError(
            "scenario: expected a Scenario, a path, builtin:NAME, a TOML string or a dict, "
            f"got {type(scenario).__name__}"
        )
    return load_scenario(scenario, overrides=overrides)


@functools.cache
def _dist_versions() -> dict[str, str | None]:
    """The installed versions of the libraries whose behaviour a run depends on, read
    once per process (``importlib.metadata`` parses each package's METADATA: ~1 ms a
    call, a tenth of a short compiled run)."""
    out: dict[str, str | None] = {}
    for dist in ("numpy", "numba", "pyarrow"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _versions() -> dict[str, str | None]:
    return {
        "epcsim": __version__,
        "python": platform.python_version(),
        **_dist_versions(),
    }


def run_facts(
    result: Result,
    key: RunKey,
    *,
    requested: str,
    wall_s: float,
    files: list[str],
    check: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``run.json`` (docs/OUTPUTS.md): what is about the run rather than
    the model.  Not deterministic (wall time, date, versions).  *check* is the verdict
    of ``engine="check"`` (recorded as ``check``)."""
    engine = result.engine
    if requested == "check":
        reason = "requested check: the reference engine gave identical results"
    elif requested == "auto":
        if engine == "compiled":
            reason = "auto: the scenario is eligible for the compiled engine"
        elif engine == "mixed":
            reason = (
                "auto: the compiled engine took the enclave threads over when they became "
                f"eligible (before: {result.engine_note})"
            )
        else:
            reason = f"auto: {result.engine_note or 'the compiled engine did not run'}"
    else:
        reason = f"requested {requested}"
    facts = {
        "format": RUN_FORMAT,
        "version": RUN_JSON_VERSION,
        "scenario": key.scenario,
        "scenario_hash": key.scenario_hash,
        "seed": key.seed,
        "engine_requested": requested,
        "engine": engine,
        "engine_reason": reason,
        "events": dict(result.engine_events),
        "outcome": result.summary.get("outcome", ""),
        "wall_s": round(wall_s, 3),
        "finished_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": _versions(),
        "files": sorted(files),
    }
    if check is not None:
        facts["check"] = check
    return facts


def run(
    scenario: Scenario | str | os.PathLike[str] | dict,
    *,
    seed: int | None = None,
    out: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: Callable[[SimProgress], None] | None = None,
    report: bool = True,
    engine: str = "auto",
    force: bool = False,
    episode_log: bool = False,
) -> Result:
    """Run a scenario and return its :class:`~epcsim.sim.Result`.

    Every argument is checked before anything is created or run.

    Args:
        scenario: a :class:`~epcsim.scenario.Scenario`, a path to a TOML file,
            ``"builtin:NAME"``, a TOML string, or a dict.
        seed: overrides the scenario's ``host.seed`` (a non-negative integer).
        out: a run directory to write (``summary.json``, ``timeseries.parquet``,
            ``fault_latency.npy``, ``report.html`` with its figures, and ``run.json``
            last): a new or empty directory, or one holding a run of the same scenario
            and seed (replaced).  It is built aside and renamed into place when complete
            (``docs/OUTPUTS.md``).
        overrides: ``KEY=VALUE`` settings with dotted keys (``["host.epc=1GiB"]``).
        progress: called as the run advances, and once at its end, with a
            :class:`~epcsim.sim.progress.SimProgress`: the work done (accesses, selftest
            processes) against the work to do (None where not known in advance), and
            the virtual time against the limit.
        report: also build ``report.html`` in *out*.
        engine: "auto" (the compiled engine where the scenario allows it), "compiled"
            (an error if it cannot run; "batched" is its old name), "reference" (step
            by step) or "check" (run the compiled engine, then the reference, and compare
            the results; with *out*, also the bytes of the files; an error if the compiled
            engine cannot run); the results are identical (``docs/ENGINES.md``).
        force: replace a run directory holding a *different* run.
        episode_log: also record the reclaim episodes in ``result.episodes`` (not in
            any file; the reference engine only: "compiled" and "check" refuse it, "auto"
            runs the reference).  The results are otherwise unchanged.

    Returns:
        The result (with "check", the compiled engine's); ``result.engine`` is
        "compiled", "mixed" or "reference" and ``result.run`` holds the facts written to
        ``run.json`` (with "check", ``run["check"]`` is the verdict).

    Raises:
        epcsim.errors.ScenarioError: for a bad scenario (nothing is run).
        epcsim.errors.EpcsimError: for any other bad argument, a directory *out* that
            may not be written (not an epcsim run, another run without *force*, locked
            by another run), or ``engine="compiled"`` or ``"check"`` for a scenario the
            compiled engine cannot run.
        epcsim.errors.EngineMismatchError: with ``engine="check"``, the engines' results
            differ (naming the file, the field and both values); *out* is not written.
    """
    run_seed = _check_seed(seed)
    items = _check_overrides(overrides)
    requested = _check_engine(engine)
    if progress is not None and not callable(progress):
        raise EpcsimError(f"progress: expected a callable or None, got {type(progress).__name__}")
    for name, flag in (("report", report), ("force", force), ("episode_log", episode_log)):
        if not isinstance(flag, bool):
            raise EpcsimError(f"{name}: expected True or False, got {flag!r}")
    sc = load_resolved(scenario, items)
    if run_seed is None:
        run_seed = sc.host.seed
    options = {"scenario": scenario, "seed": seed, "out": out, "overrides": items}
    options |= {"progress": progress, "report": report, "engine": engine, "force": force}
    options |= {"episode_log": episode_log}
    option_why = option_ineligibility(options)
    if requested in ("compiled", "check"):
        why = option_why or static_ineligibility(sc)
        if why is not None:
            raise EpcsimError(_refusal(requested, why))
    key = RunKey(sc.name, sc.digest(), run_seed)
    target = check_out(out, key, force=force) if out is not None else None

    t0 = time.monotonic()
    verdict: dict[str, Any] | None = None
    if target is None:
        if requested == "check":
            result, verdict = _check(sc, run_seed, progress, None)
        else:
            result = _simulate(sc, run_seed, progress, requested, option_why, episode_log)
        result.run = run_facts(
            result,
            key,
            requested=requested,
            wall_s=time.monotonic() - t0,
            files=[],
            check=verdict,
        )
        result.engine = result.run["engine"]
        return result
    with claim(target, key, force=force) as tmp:
        if requested == "check":
            result, verdict = _check(sc, run_seed, progress, tmp)
        else:
            result = _simulate(sc, run_seed, progress, requested, option_why, episode_log)
            result.write(tmp)
        for final in (False, True):  # the report shows run.json's engine: write it first
            files = [p.name for p in tmp.iterdir() if p.name != MANIFEST] + [MANIFEST]
            result.run = run_facts(
                result,
                key,
                requested=requested,
                wall_s=time.monotonic() - t0,
                files=files,
                check=verdict,
            )
            text = json.dumps(result.run, indent=2, sort_keys=True) + "\n"
            atomic_write_text(tmp / MANIFEST, text)
            if final or not report:
                break
            from .report import write_report

            write_report(tmp)
    result.engine = result.run["engine"]
    return result


def _refusal(requested: str, why: str) -> str:
    """Why ``engine=compiled`` or ``engine=check`` cannot run a scenario."""
    if requested == "check":
        return (
            f"engine check: {why}; the check compares the compiled engine with the "
            "reference, so it needs a scenario the compiled engine runs"
        )
    return f"engine compiled: {why}; use engine reference or auto"


def _simulate(
    sc: Scenario,
    seed: int,
    progress: Callable[[SimProgress], None] | None,
    requested: str,
    option_why: str | None = None,
    episode_log: bool = False,
) -> Result:
    """Run *sc*; with "auto" and an option the compiled engine does not support
    (*option_why*), on the reference engine, saying why."""
    if requested == "auto" and option_why is not None:
        result = simulate(
            sc, seed=seed, progress=progress, engine="reference", episode_log=episode_log
        )
        result.engine_note = option_why
        return result
    return simulate(sc, seed=seed, progress=progress, engine=requested, episode_log=episode_log)


#: the simulator's refusal at run time: "engine compiled: WHY; use engine reference or auto"
_REFUSED = re.compile(r"engine compiled: (?P<why>.*); use engine reference or auto", re.S)


def _leg(
    progress: Callable[[SimProgress], None] | None, leg: int
) -> Callable[[SimProgress], None] | None:
    """*progress* for the first (0) or second (1) of the check's two runs: where the work
    to do is known, one bar over both (``4,000 accesses, both engines`` for 2,000 run
    twice); else each run's virtual time in turn."""
    if progress is None:
        return None

    def report(p: SimProgress) -> None:
        if p.total is None:
            progress(p)
        else:
            unit = f"{p.unit}, both engines"
            progress(p._replace(done=p.done + leg * p.total, total=2 * p.total, unit=unit))

    return report


def _check(
    sc: Scenario,
    seed: int,
    progress: Callable[[SimProgress], None] | None,
    out: Path | None,
) -> tuple[Result, dict[str, Any]]:
    """``engine="check"``: run the compiled engine, then the reference, compare the
    results in memory and, with *out*, the bytes of the files each writes (the compiled
    engine's into *out*, the reference's into a temporary directory inside it, removed
    after).

    Returns the compiled result and the verdict for ``run.json``.  Raises
    :class:`EpcsimError` if the compiled engine refuses the scenario at run time, and
    :class:`EngineMismatchError` for the first difference.
    """
    try:
        compiled = simulate(sc, seed=seed, progress=_leg(progress, 0), engine="compiled")
    except EpcsimError as e:
        refused = _REFUSED.fullmatch(str(e))
        if refused is None:
            raise
        raise EpcsimError(_refusal("check", refused["why"])) from None
    reference = simulate(sc, seed=seed, progress=_leg(progress, 1), engine="reference")
    mismatch = compare_results(compiled, reference)
    if mismatch is not None:
        raise mismatch
    if out is not None:
        compiled.write(out)
        with tempfile.TemporaryDirectory(prefix=".reference-", dir=out) as ref_dir:
            reference.write(ref_dir)
            mismatch = compare_files(out, Path(ref_dir))
        if mismatch is not None:
            raise mismatch
    return compiled, {"equal": True, "compared": list(RESULT_FILES), "bytes": out is not None}
