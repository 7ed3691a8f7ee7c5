"""The Python API: ``epcsim.run()``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .scenario import Scenario, load_scenario
from .sim import Result, simulate
from .sim.progress import SimProgress

__all__ = ["run"]


def run(
    scenario: Scenario | str | os.PathLike | dict,
    *,
    seed: int | None = None,
    out: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: Callable[[SimProgress], None] | None = None,
    report: bool = True,
    engine: str = "auto",
) -> Result:
    """Run a scenario and return its :class:`~epcsim.sim.Result`.

    Args:
        scenario: a :class:`~epcsim.scenario.Scenario`, a path to a TOML file,
            ``"builtin:NAME"``, a TOML string, or a dict.
        seed: overrides the scenario's ``host.seed``.
        out: a run directory to write (``summary.json``, ``timeseries.parquet``,
            ``report.html`` with its figures); ``INCOMPLETE`` marks it until the run
            has finished.
        overrides: ``KEY=VALUE`` settings with dotted keys (``host.epc=1GiB``).
        progress: called as the run advances, and once at its end, with a
            :class:`~epcsim.sim.progress.SimProgress`: the work done (accesses, selftest
            processes) against the work to do (None where not known in advance), and
            the virtual time against the limit.
        report: also build ``report.html`` in *out*.
        engine: "auto" (the batched engine where the scenario allows it), "batched"
            (an error if it cannot run) or "reference" (step by step); the results are
            identical (``docs/ENGINES.md``).

    Raises:
        epcsim.errors.ScenarioError: for a bad scenario (nothing is run).
    """
    if isinstance(scenario, os.PathLike):
        scenario = str(scenario)
    sc = (
        scenario if isinstance(scenario, Scenario) else load_scenario(scenario, overrides=overrides)
    )
    if isinstance(scenario, Scenario) and overrides:
        sc = load_scenario(scenario.model_dump(mode="json"), overrides=overrides)
    outdir = Path(out) if out is not None else None
    if outdir is not None:
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "INCOMPLETE").write_text("run in progress or interrupted\n")
    result = simulate(sc, seed=seed, progress=progress, engine=engine)
    if outdir is not None:
        result.write(outdir)
        if report:
            from .report import write_report

            write_report(outdir)
        (outdir / "INCOMPLETE").unlink()
    return result
