"""The ``epcsim`` command line (typer + rich; the only module importing them).

Commands::

    epcsim run SCENARIO [--out DIR] [--seed N] [--set KEY=VALUE ...] [--quiet]
               [--engine auto|compiled|reference|check] [--force]
    epcsim scenarios
    epcsim validate SCENARIO [--set KEY=VALUE ...]
    epcsim report DIR
    epcsim trace info TRACE [--format F] [--window N] [--plot FILE.png] [-O KEY=VALUE ...]
    epcsim trace convert TRACE OUT [--format F] [--to F2] [--dense] [-O KEY=VALUE ...]
    epcsim mrc TRACE [--format F] [-O KEY=VALUE ...] [--sizes LIST|RANGE] [--sample RATE]
               [--out DIR] [--workers N] [--fault-unreferenced]
    epcsim compare SCENARIO --out DIR [--policy NAME,...|all] [--seeds FROM..TO|N,...]
                   [--set KEY=VALUE ...] [--jobs N] [--force]
    epcsim sweep SCENARIO --out DIR [--grid KEY=VALUES ...] [--seeds FROM..TO|N,...]
                 [--set KEY=VALUE ...] [--jobs N | --scheduler tcp://HOST:PORT]
                 [--keep-runs] [--retry-errors] [--force]
    epcsim advise SCENARIO --slo METRIC<=VALUE ... --out DIR [--tenant CGROUP ...]
                  [--budget SIZE|capacity] [--resolution SIZE] [--seeds ...] [--set ...]
                  [--jobs N] [--scheduler ADDRESS]
    epcsim policies
    epcsim from-k8s PODS.yaml... --out SCENARIO.toml [--epc SIZE] [--manifest C=FILE ...]
                    [--workload C=PATTERN ...] [--duration TIME] [--force]
    epcsim --version

Exit status: 0 the run and its expectations pass, 1 an expectation fails, 2 bad input
(one line ``epcsim: error: ...`` on stderr, no traceback), 3 the engines disagreed
(``--engine check``: one line ``epcsim: engine mismatch: ...``), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import enum
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from . import __version__
from .errors import EngineMismatchError, EpcsimError

if TYPE_CHECKING:  # pragma: no cover
    from .sim.progress import SimProgress

__all__ = ["app", "main"]

#: where ``epcsim run`` writes when no ``--out`` is given (relative to the cwd)
DEFAULT_RUNS_DIR = "epcsim-runs"
#: wall-clock seconds before the progress bar appears
PROGRESS_DELAY_S = 1.0

EXIT_OK = 0
EXIT_EXPECTATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENGINE_MISMATCH = 3
EXIT_INTERRUPTED = 130

ESTIMATE_NOTE = (
    "note: times and slowdowns are cost-model estimates in virtual time (docs/COSTS.md), "
    "not measurements"
)


def _flags_without_metavar(params: list[Any]) -> list[Any]:
    """Typer's rich help shows ``<bool>`` as the value of every flag (``--help``
    included), which takes no value: give flags an empty metavar instead."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class _Command(TyperCommand):
    """A command whose flags show no metavar in ``--help``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_metavar(super().get_params(ctx))


class _Group(TyperGroup):
    """A command group whose flags show no metavar in ``--help``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _flags_without_metavar(super().get_params(ctx))


app = typer.Typer(
    name="epcsim",
    cls=_Group,
    help="Simulate Linux SGX EPC memory under cgroup (misc sgx_epc) limits.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


# --- helpers ------------------------------------------------------------------------------


def _die(message: str) -> NoReturn:
    """One line on stderr, exit status 2."""
    one_line = " ".join(str(message).splitlines()).strip()  # \r, \x85, \u2028 too
    typer.echo(f"epcsim: error: {one_line}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn bad input (:class:`~epcsim.errors.EpcsimError`) into exit status 2."""
    try:
        yield
    except EpcsimError as e:
        _die(str(e))


def _load(scenario: str, set_: list[str] | None) -> Any:
    """Load a scenario for a command: bad input exits 2, and a memory-estimate warning
    (:class:`~epcsim.scenario.MemoryEstimateWarning`) is one line ``epcsim: warning: ...``
    on stderr instead of Python's warning format."""
    import warnings

    from .scenario import MemoryEstimateWarning, load_scenario

    with _user_errors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MemoryEstimateWarning)
        sc = load_scenario(scenario, overrides=tuple(set_ or ()))
    for w in caught:
        if issubclass(w.category, MemoryEstimateWarning):
            typer.echo(f"epcsim: warning: {w.message}", err=True)
        else:  # pragma: no cover - re-emit anything else unchanged
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return sc


def _stdout() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # a log or a pipe: keep cgroup paths on one line
    return console


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, mult in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult:
            return f"{n / mult:.4g}{unit}"
    return f"{n}B"


def _time(ns: int | None) -> str:
    from .units import format_time

    if ns is None or ns < 0:
        return "-"
    return format_time(ns)


def _slowdown(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.1f}x" if x >= 10 else f"{x:.2f}x"


def _tenant_cells(t: dict[str, Any]) -> list[str]:
    """A tenant's p99 fault latency, miss ratio and slowdown ("-" where null)."""
    lat = t.get("fault_latency_ns") or {}
    miss = t.get("miss_ratio")
    return [
        _time(lat.get("p99")),
        "-" if miss is None else f"{miss:.2%}",
        _slowdown(t.get("slowdown")),
    ]


def _duration_ns(sc: Any) -> int | None:
    from .units import parse_time

    try:
        return parse_time(sc.host.duration)
    except EpcsimError:  # pragma: no cover - validated by load_scenario
        return None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "scenario"


def default_out(scenario_name: str, seed: int, scenario_hash: str) -> Path:
    """``./epcsim-runs/<scenario-name>-seed<seed>-<hash>``: *hash* is the first 12 hex
    digits of the resolved scenario's ``scenario_hash``, so a run with other ``--set``
    values gets its own directory."""
    return Path(DEFAULT_RUNS_DIR) / f"{_safe_name(scenario_name)}-seed{seed}-{scenario_hash[:12]}"


#: what the bar says while the compiled engine compiles (numba, cached afterwards)
COMPILING_LABEL = "compiling the engine (first run only)"

_SINGULAR = {"accesses": "access", "selftest processes": "selftest process", "sizes": "size"}


class LazyProgress:
    """The ``progress`` callback of :func:`epcsim.run`: a transient rich progress bar of
    the work done against the work to do (the enclave threads' accesses and the
    selftest processes, :class:`~epcsim.sim.progress.SimProgress`) with the elapsed and
    the remaining wall time, shown only once the run has taken longer than *delay*
    seconds of wall time (short runs print nothing).

    Where the work to do is not known in advance (a workload bounded by ``duration``)
    the bar shows the virtual time against the time limit, says so, and gives no ETA.
    With *compiling* (the compiled engine's code is not in numba's cache) it
    says :data:`COMPILING_LABEL` until the first work is done.

    :meth:`begin` arms a timer that shows the bar after *delay* even if no callback
    comes (a run compiling, or one between two reports).
    """

    def __init__(
        self,
        *,
        enabled: bool = True,
        delay: float = PROGRESS_DELAY_S,
        console: Console | None = None,
        compiling: bool = False,
    ) -> None:
        self.enabled = enabled
        self.delay = delay
        self.console = console
        self.compiling = compiling
        self.t0 = time.monotonic()
        self.bar: Progress | None = None
        self._task: TaskID | None = None
        self._done = 0
        self._total: int | None = None
        self._unit = "accesses"
        self._now = 0
        self._limit: int | None = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._closed = False
        self._reported = False

    def begin(self, limit_ns: int | None = None) -> None:
        """Start the wall clock (and the timer that shows the bar after *delay*)."""
        self.t0 = time.monotonic()
        self._limit = limit_ns
        if self.enabled:
            self._timer = threading.Timer(self.delay, self._show)
            self._timer.daemon = True
            self._timer.start()

    def _show(self) -> None:
        with self._lock:
            self._show_locked()

    def _show_locked(self) -> None:
        if self._closed or self.bar is not None:
            return
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[what]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            TimeRemainingColumn(),
            console=self.console or Console(stderr=True),
            transient=True,
        )
        label, total, completed, text = self.describe()
        self._task = self.bar.add_task(
            label, total=total, completed=completed, what=text, eta="eta" if total else ""
        )
        self.bar.start()

    def describe(self) -> tuple[str, int | None, int, str]:
        """(label, bar total or None, bar completed, text) for the current state."""
        if self.compiling and self._done > 0:
            self.compiling = False
        label = COMPILING_LABEL if self.compiling else "simulating"
        if not self._reported:  # shown by the timer before the first report
            return label, None, 0, ""
        if self._total:
            unit = _SINGULAR.get(self._unit, self._unit) if self._total == 1 else self._unit
            return label, self._total, self._done, f"{self._done:,} / {self._total:,} {unit}"
        if self._limit:
            text = (
                f"virtual time {_time(self._now)} / {_time(self._limit)} "
                "(the work to do is not known in advance)"
            )
        else:
            text = ""
        return label, None, 0, text

    def _update_locked(self) -> None:
        assert self.bar is not None and self._task is not None
        label, total, completed, text = self.describe()
        self.bar.update(
            self._task,
            description=label,
            total=total,
            completed=completed,
            what=text,
            eta="eta" if total else "",
        )

    def _set(self, done: int, total: int | None, unit: str, now: int, limit: int | None) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._done, self._total, self._unit = done, total, unit
            self._now, self._limit = now, limit
            self._reported = True
            if self.bar is None:
                if time.monotonic() - self.t0 >= self.delay:
                    self._show_locked()
                return
            self._update_locked()

    def __call__(self, p: SimProgress) -> None:
        self._set(p.done, p.total, p.unit, p.now_ns, max(p.limit_ns, 1))

    @property
    def shown(self) -> bool:
        return self.bar is not None

    def close(self) -> None:
        """Stop the timer and remove the bar (idempotent)."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self.bar is not None:
                self.bar.stop()


def _will_compile(sc: Any, engine: str) -> bool:
    """Whether this run will compile the compiled engine's core first (eligible, and
    numba's cache does not hold it yet)."""
    from .compiled.eligibility import static_ineligibility
    from .sim.progress import compiled_core_cached

    if engine == "reference" or static_ineligibility(sc) is not None:
        return False
    return not compiled_core_cached()


def _engine_line(run: dict[str, Any]) -> str:
    """``engine compiled (auto: ...), wall 1.2 s`` from ``run.json``'s facts."""
    from .result import engine_text

    wall = run.get("wall_s")
    wall_text = f", wall {wall:.3g} s" if isinstance(wall, int | float) else ""
    return f"engine {engine_text(run)}{wall_text}"


def _print_summary(
    console: Console, summary: dict[str, Any], out: Path, run: dict[str, Any] | None = None
) -> None:
    head = (
        f"scenario {summary.get('scenario')} ({str(summary.get('scenario_hash', ''))[:12]}), "
        f"seed {summary.get('seed')}, EPC {_size(summary.get('capacity_bytes'))}, "
        f"virtual time {_time(summary.get('sim_time_ns'))}"
    )
    console.print(Text(head))
    if run:
        console.print(Text(_engine_line(run)))
    if summary.get("truncated"):
        console.print(
            Text(
                f"note: stopped at the virtual-time limit ({_time(summary.get('time_limit_ns'))},"
                " host.duration) with work still running",
                style="yellow",
            )
        )

    cgroups = summary.get("cgroups", {})
    # the per-tenant columns (summary.json since timeseries schema 2)
    tenant = any("miss_ratio" in c for c in cgroups.values())
    cgt = Table(title="cgroups (sgx_epc)", title_justify="left")
    cols = ["cgroup", "peak", "limit", "max events", "faults", "evictions", "ENOMEM"]
    if tenant:
        cols += ["p99 fault", "miss ratio", "slowdown"]
    for col in cols:
        if col == "cgroup":
            cgt.add_column(col, overflow="fold")
        else:
            cgt.add_column(col, justify="right")
    for path, c in cgroups.items():
        row = [
            Text(path),
            _size(c.get("peak_bytes")),
            _size(c.get("limit_bytes")),
            str(c.get("max_events", 0)),
            str(c.get("faults", 0)),
            str(c.get("evictions", 0)),
            str(c.get("enomem", 0)),
        ]
        if tenant:
            row += _tenant_cells(c)
        cgt.add_row(*row)
    console.print(cgt)

    enclaves = summary.get("enclaves", {})
    if enclaves:
        show_error = any(e.get("error") for e in enclaves.values())
        et = Table(title="enclaves", title_justify="left")
        tenant = any("miss_ratio" in e for e in enclaves.values())
        cols = ["enclave", "cgroup", "outcome", "exit status"]
        cols += ["p99 fault", "miss ratio", "slowdown"] if tenant else ["slowdown"]
        if show_error:
            cols.append("error")
        for col in cols:
            if col in ("exit status", "slowdown", "p99 fault", "miss ratio"):
                et.add_column(col, justify="right")
            else:
                et.add_column(col, overflow="fold")
        for name, e in enclaves.items():
            status = e.get("exit_status")
            outcome = str(e.get("outcome", ""))
            style = {"success": "green", "failure": "red", "killed": "yellow"}.get(outcome, "")
            row = [
                Text(name),
                Text(str(e.get("cgroup", ""))),
                Text(outcome, style=style),
                "-" if status is None else str(status),
                *(_tenant_cells(e) if tenant else [_slowdown(e.get("slowdown"))]),
            ]
            if show_error:
                row.append(Text(str(e.get("error") or "")))
            et.add_row(*row)
        console.print(et)

    ops = summary.get("ops", [])
    if ops:
        ot = Table(title="timed operations", title_justify="left")
        for col in ("time", "operation", "result"):
            if col == "time":
                ot.add_column(col, justify="right")
            else:
                ot.add_column(col, overflow="fold")
        for op in ops:
            res = str(op.get("result", ""))
            ot.add_row(
                _time(op.get("time_ns")),
                Text(str(op.get("op", ""))),
                Text(res, style="" if res == "ok" else "yellow"),
            )
        console.print(ot)

    lat = summary.get("fault_latency") or {}
    if lat:
        console.print(
            Text(
                f"fault latency: {lat['count']} faults, p50 {_time(lat['p50_ns'])}, "
                f"p90 {_time(lat['p90_ns'])}, p99 {_time(lat['p99_ns'])}, "
                f"max {_time(lat['max_ns'])}"
            )
        )
    console.print(Text(ESTIMATE_NOTE))
    console.print(Text(f"wrote {out}"))


def _print_expectations(console: Console, summary: dict[str, Any], *, quiet: bool) -> bool:
    """PASS/FAIL lines as the kernel selftest script prints them; returns all passed."""
    exps = summary.get("expectations", [])
    failed = [x for x in exps if not x.get("passed")]
    for x in exps:
        if x.get("passed"):
            if not quiet:
                console.print(Text.assemble(("PASS", "green"), f": {x.get('name')}"))
        else:
            console.print(
                Text.assemble(("FAIL", "red"), f": {x.get('name')}: {x.get('detail', '')}")
            )
    if not failed:
        if not quiet:
            console.print(Text.assemble(("PASS", "bold green"), ": all expectations"))
        return True
    console.print(
        Text.assemble(("FAIL", "bold red"), f": {len(failed)} of {len(exps)} expectations failed")
    )
    return False


# --- commands -----------------------------------------------------------------------------


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"epcsim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = None,
) -> None:
    """Simulate Linux SGX EPC memory under cgroup (misc sgx_epc) limits.

    Times are estimates from a cost model (virtual time), not measurements.
    """


ScenarioArg = Annotated[
    str,
    typer.Argument(
        metavar="SCENARIO",
        help="A scenario TOML file, or builtin:NAME (see `epcsim scenarios`).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a scenario value with a dotted key, e.g. --set host.epc=1GiB (repeatable).",
        show_default=False,
    ),
]


class EngineName(enum.StrEnum):
    """``--engine`` values (epcsim.api.ENGINES; ``batched`` is the old name of
    ``compiled``)."""

    auto = "auto"
    compiled = "compiled"
    reference = "reference"
    check = "check"
    batched = "batched"


@app.command(cls=_Command)
def run(
    scenario: ScenarioArg,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Run directory to write: new, empty, or holding a run of the same scenario "
            f"and seed (default: ./{DEFAULT_RUNS_DIR}/<scenario>-seed<seed>-<hash>).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", min=0, metavar="N", help="Override host.seed.", show_default=False),
    ] = None,
    set_: SetOpt = None,
    policy: Annotated[
        str | None,
        typer.Option(
            "--policy",
            metavar="NAME",
            help="The reclaim design (host.policy; `epcsim policies` lists them; default "
            "the scenario's, else v16).",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print only failed expectations."),
    ] = False,
    engine: Annotated[
        EngineName,
        typer.Option(
            "--engine",
            help="auto: the compiled engine where the scenario allows it, else the "
            "step-by-step reference; compiled: refuse (exit 2, with the reason) if it cannot "
            "run (batched: old name of compiled); reference; check: run both and compare "
            "summary.json, timeseries.parquet and fault_latency.npy (exit 3 naming the first "
            "difference; exit 2 if the compiled engine cannot run) (docs/ENGINES.md). "
            "Both give identical results.",
        ),
    ] = EngineName.auto,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a run directory holding a different run (never a directory "
            "epcsim did not write).",
        ),
    ] = False,
) -> None:
    """Run a scenario; write summary.json, timeseries.parquet, report.html and run.json.

    Exit status 0 when every expectation passes, 1 when one fails, 2 for bad input,
    3 when --engine check finds the engines' results differ.
    """
    import epcsim

    if policy is not None:
        set_ = [*(set_ or []), f"host.policy={policy}"]
    sc = _load(scenario, set_)
    run_seed = sc.host.seed if seed is None else seed
    # epcsim.run checks --out (and every other argument) before it creates anything
    outdir = out if out is not None else str(default_out(sc.name, run_seed, sc.digest()))

    err = Console(stderr=True)
    show = not quiet and err.is_terminal
    progress = LazyProgress(
        enabled=show, console=err, compiling=show and _will_compile(sc, engine.value)
    )
    progress.begin(_duration_ns(sc))
    try:
        with _user_errors():
            result = epcsim.run(
                sc,
                seed=run_seed,
                out=outdir,
                progress=progress if show else None,
                engine=engine.value,
                force=force,
            )
    except KeyboardInterrupt:
        progress.close()
        typer.echo(
            f"interrupted; {outdir} was not written (a previous run there is unchanged)",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except EngineMismatchError as e:
        progress.close()
        one_line = " ".join(str(e).splitlines()).strip()
        typer.echo(f"epcsim: engine mismatch: {one_line}; {outdir} was not written", err=True)
        raise typer.Exit(EXIT_ENGINE_MISMATCH) from None
    except OSError as e:
        progress.close()
        if e.filename is None:
            raise
        _die(f"cannot write {e.filename}: {e.strerror or e}")
    finally:
        progress.close()

    console = _stdout()
    if not quiet:
        _print_summary(console, result.summary, Path(outdir), result.run)
    ok = _print_expectations(console, result.summary, quiet=quiet)
    if not ok:
        raise typer.Exit(EXIT_EXPECTATION_FAILED)


@app.command(cls=_Command)
def policies() -> None:
    """List the reclaim designs (run one with `epcsim run SCENARIO --policy NAME`)."""
    from .policies import names, policy_class

    items = [(n, policy_class(n)) for n in names()]
    width = max(len(n) for n, _ in items)
    for name, cls in items:
        tag = " (not from the series)" if cls.external else ""
        typer.echo(f"{name.ljust(width)}  {cls.source}{tag}")


@app.command("compare", cls=_Command)
def compare_command(
    scenario: ScenarioArg,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="The comparison directory: compare.parquet, compare.json, compare.html, "
            "compare.png (docs/COMPARE.md).",
            show_default=False,
        ),
    ],
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            metavar="NAME,NAME...|all",
            help="The reclaim designs to compare (`epcsim policies`; all: every one).",
        ),
    ] = "all",
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            metavar="FROM..TO|N,N...",
            help="The seeds of each policy (default: the scenario's host.seed).",
            show_default=False,
        ),
    ] = None,
    set_: SetOpt = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            metavar="N",
            help="Points run in parallel (default: the machine's CPUs).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a comparison already in DIR.")
    ] = False,
) -> None:
    """Run a scenario under several reclaim designs (policy x seed, in parallel, on the
    reference engine) and compare fairness, overshoot, scan cost, service and failures
    (docs/COMPARE.md).  Exit 0 when every point ran."""
    from .compare import COLUMNS, compare, table_rows

    _load(scenario, set_)  # the scenario's errors and warnings as `epcsim run` gives them
    err = Console(stderr=True)

    def progress(k: int, n: int) -> None:
        if err.is_terminal:
            err.print(f"compare: {k}/{n} points", end="\r")

    try:
        with _user_errors():
            res = compare(
                scenario,
                policies=policy,
                seeds=seeds,
                overrides=set_ or (),
                jobs=jobs,
                out=out,
                force=force,
                progress=progress,
            )
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted; {out} was not written (a previous one there is unchanged)", err=True
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console = _stdout()
    table = Table(title=f"{res.data['scenario']}: seeds {', '.join(map(str, res.data['seeds']))}")
    table.add_column("policy")
    for heading, _ in COLUMNS:
        table.add_column(heading, justify="right")
    for row in table_rows(res.data):
        table.add_row(*row)
    console.print(table)
    console.print(f"engine {res.data['engine']}: {res.data['engine_reason']}")
    console.print(f"wrote {out}")


@app.command(cls=_Command)
def scenarios() -> None:
    """List the built-in scenarios (run one with `epcsim run builtin:NAME`)."""
    from .scenario import list_builtins

    items = list_builtins()
    width = max((len(n) for n, _ in items), default=0)
    for name, description in items:
        typer.echo(f"{name.ljust(width)}  {description}")


@app.command(cls=_Command)
def validate(scenario: ScenarioArg, set_: SetOpt = None) -> None:
    """Load and validate a scenario without running it."""
    sc = _load(scenario, set_)
    typer.echo(f"ok: {sc.name} ({sc.digest()[:12]})")


@app.command(cls=_Command)
def report(
    run_dir: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="A run directory written by `epcsim run`."),
    ],
) -> None:
    """Rebuild report.html (and its figures) from a run directory.

    The whole directory is checked first (summary.json, timeseries.parquet,
    fault_latency.npy, run.json): a bad one is an error naming the file, and nothing is
    written.
    """
    from .report import check_run_dir, write_report

    with _user_errors():
        check_run_dir(run_dir)
    if (run_dir / "INCOMPLETE").exists():
        typer.echo(f"note: {run_dir} is marked INCOMPLETE (an interrupted run)", err=True)
    try:
        with _user_errors():
            html = write_report(run_dir)
    except OSError as e:  # an unwritable directory
        _die(f"{run_dir}: cannot write the report: {e.strerror or e}")
    typer.echo(f"wrote {html}")


# --- trace ------------------------------------------------------------------------------

trace_app = typer.Typer(
    name="trace",
    cls=_Group,
    help="Read, analyse and convert page-access traces (docs/TRACES.md).",
    no_args_is_help=True,
)
app.add_typer(trace_app, name="trace")

TraceArg = Annotated[
    Path,
    typer.Argument(metavar="TRACE", help="A trace file.", show_default=False),
]
TraceFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        metavar="F",
        help="Trace format: oracleGeneral, csv, lackey, text, npy, native "
        "(default: detected from the magic bytes, the name or the first lines).",
        show_default=False,
    ),
]
TraceOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--option",
        "-O",
        metavar="KEY=VALUE",
        help="A reader option, e.g. -O obj_id_col=lbn -O mapping=address (repeatable).",
        show_default=False,
    ),
]
SkipBadOpt = Annotated[
    bool,
    typer.Option("--skip-bad", help="Count and skip malformed lines or records."),
]


def _open_trace_cli(path: Path, fmt: str | None, options: list[str] | None, skip_bad: bool):
    from .workload.traces import open_trace

    opts: dict[str, Any] = {}
    for item in options or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _die(f"--option {item!r}: expected KEY=VALUE")
        opts[key.strip()] = value.strip()
    if skip_bad:
        opts["skip_bad"] = True
    return open_trace(path, format=fmt, **opts)


@trace_app.command("info", cls=_Command)
def trace_info(
    trace: TraceArg,
    format: TraceFormatOpt = None,
    window: Annotated[
        int | None,
        typer.Option(
            "--window",
            "-w",
            min=1,
            metavar="N",
            help="Accesses per working-set window (default: about 20 windows).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE.png",
            help="Draw the working-set curve to this PNG.",
            show_default=False,
        ),
    ] = None,
    option: TraceOptionOpt = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Accesses, footprint, reuse distances and working-set size of a trace."""
    from .workload.traces import trace_stats

    if plot is not None and plot.suffix.lower() != ".png":
        _die(f"--plot {plot}: the plot is a PNG image; give a name ending .png")
    if plot is not None and plot.is_dir():
        _die(f"--plot {plot}: is a directory")
    try:
        with _user_errors():
            reader = _open_trace_cli(trace, format, option, skip_bad)
            stats = trace_stats(reader, window=window)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console = _stdout()
    reuse = stats["reuse"]
    t = Table(title=f"trace {trace}", title_justify="left")
    t.add_column("quantity", overflow="fold")
    t.add_column("value", justify="right")

    def pages(x: float | None) -> str:
        return "-" if x is None else f"{x:,}"

    method = (
        "exact"
        if reuse["method"] == "exact"
        else f"sampled at {reuse['rate']:.3g} (spatial hash, SHARDS)"
    )
    rows = [
        ("format", stats["format"]),
        ("accesses", f"{stats['accesses']:,}"),
        ("distinct pages (footprint)", f"{stats['footprint_pages']:,}"),
        ("footprint bytes", f"{stats['footprint_bytes']:,} ({_size(stats['footprint_bytes'])})"),
        ("re-accesses", f"{reuse['reaccesses']:,}"),
        ("reuse distance (pages)", method),
        ("  mean", "-" if reuse["mean"] is None else f"{reuse['mean']:,.1f}"),
        ("  p50", pages(reuse["p50"])),
        ("  p90", pages(reuse["p90"])),
        ("  p99", pages(reuse["p99"])),
        ("  max", pages(reuse["max"])),
        ("working-set window (accesses)", f"{stats['window']:,}"),
        (
            "working set min / mean / max",
            f"{stats['wss_min']:,} / {stats['wss_mean']:,.1f} / {stats['wss_max']:,}",
        ),
    ]
    if stats["skipped"]:
        rows.append(("skipped (malformed)", f"{stats['skipped']:,}"))
    for k, v in rows:
        t.add_row(Text(k), Text(str(v)))
    console.print(t)

    wss = stats["wss"]
    w = stats["window"]
    wt = Table(title="working set over time", title_justify="left")
    for col in ("window", "accesses", "distinct pages"):
        wt.add_column(col, justify="right")
    step = max(1, -(-len(wss) // 40))  # at most 40 rows
    for i in range(0, len(wss), step):
        end = min((i + 1) * w, stats["accesses"])
        wt.add_row(str(i + 1), f"{i * w:,}-{end:,}", f"{wss[i]:,}")
    console.print(wt)
    if step > 1:
        console.print(Text(f"(every {step}th of {len(wss)} windows shown)"))
    if stats["skipped"]:
        console.print(
            Text(f"note: {stats['skipped']:,} malformed lines/records skipped", style="yellow")
        )
    if plot is not None:
        from .workload.traces._plot import plot_working_set

        try:
            plot_working_set(stats, plot)
        except OSError as e:
            _die(f"cannot write {plot}: {e.strerror or e}")
        except KeyboardInterrupt:
            typer.echo(f"interrupted; {plot} was not written", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        console.print(Text(f"wrote {plot}"))


@trace_app.command("convert", cls=_Command)
def trace_convert(
    trace: TraceArg,
    out: Annotated[
        Path,
        typer.Argument(metavar="OUT", help="The file to write.", show_default=False),
    ],
    format: TraceFormatOpt = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            "-t",
            metavar="F2",
            help="Output format: native, npy, text, oracleGeneral "
            "(default: from OUT's extension, .epct .npy .txt .bin; OUT must have one of "
            "the format's extensions).",
            show_default=False,
        ),
    ] = None,
    dense: Annotated[
        bool,
        typer.Option("--dense", help="Renumber pages densely (0, 1, ... in first-seen order)."),
    ] = False,
    option: TraceOptionOpt = None,
    skip_bad: SkipBadOpt = False,
) -> None:
    """Convert a trace to another format (pages, one object per page).  OUT is written
    under a temporary name and renamed when complete; writing onto TRACE is refused."""
    from ._atomic import same_file
    from .workload.traces import convert_trace, format_for_output

    if out.is_dir():
        _die(f"{out}: is a directory")
    with _user_errors():
        target = format_for_output(out, to)
    if same_file(trace, out):
        _die(f"{out}: is the input trace {trace} (the same file); write to another file")
    try:
        with _user_errors():
            reader = _open_trace_cli(trace, format, option, skip_bad)
            n = convert_trace(reader, out, to=target, dense=dense)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; {out} was not written", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    note = f", {reader.skipped:,} malformed skipped" if reader.skipped else ""
    typer.echo(f"wrote {out} ({n:,} pages, {target}{note})")


# --- mrc --------------------------------------------------------------------------------

#: where ``epcsim mrc`` writes when no ``--out`` is given (relative to the cwd)
DEFAULT_MRC_DIR = "epcsim-mrc"


class _SizesProgress(LazyProgress):
    """:class:`LazyProgress` counting the sizes done (the ``progress`` callback of
    :func:`epcsim.mrc.mrc` is called with (done, total))."""

    def __call__(self, done: int, total: int) -> None:  # type: ignore[override]
        self._set(done, total, "sizes", 0, None)


@app.command("mrc", cls=_Command)
def mrc_command(
    trace: TraceArg,
    format: TraceFormatOpt = None,
    option: TraceOptionOpt = None,
    sizes: Annotated[
        str | None,
        typer.Option(
            "--sizes",
            "-s",
            metavar="LIST|RANGE",
            help="EPC sizes: a comma list (units B, KiB, MiB, GiB, pages; N% of the trace's "
            "footprint, to the nearest page; a bare number is bytes) or a range FROM:TO:N "
            "(N sizes from FROM to TO), e.g. 10%:100%:10 (the default) or "
            "1000pages,2000pages,64MiB.",
            show_default=False,
        ),
    ] = None,
    sample: Annotated[
        float | None,
        typer.Option(
            "--sample",
            metavar="RATE",
            help="Spatial sampling rate in (0, 1] for a fast approximate curve "
            "(e.g. 0.1; default: exact).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help=f"Where to write mrc.csv and mrc.png (default: ./{DEFAULT_MRC_DIR}/<trace>).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-j",
            min=1,
            metavar="N",
            help="Sizes simulated in parallel (default: the machine's CPUs).",
            show_default=False,
        ),
    ] = None,
    fault_unreferenced: Annotated[
        bool,
        typer.Option(
            "--fault-unreferenced",
            help="Experiment: a faulted-in page starts unreferenced (not the kernel's "
            "behaviour; docs/MRC.md).",
        ),
    ] = False,
) -> None:
    """The miss-ratio curve of a trace under the v16 reclaimer (one simulation per EPC
    size); write mrc.csv and mrc.png (docs/MRC.md)."""
    from .kernel.constants import PAGE_SIZE
    from .mrc import format_ratios, mrc, write_mrc
    from .sim.progress import compiled_core_cached

    if sample is not None and not 0 < sample <= 1:
        _die(f"--sample: a rate in (0, 1], got {sample}")
    with _user_errors():
        # check the file, the format and the options before anything runs
        reader = _open_trace_cli(trace, format, option, False)
    opts: dict[str, Any] = {}
    for item in option or ():  # well formed: _open_trace_cli checked them
        key, _, value = item.partition("=")
        opts[key.strip()] = value.strip()
    outdir = out if out is not None else Path(DEFAULT_MRC_DIR) / _safe_name(trace.stem)
    if outdir.exists() and not outdir.is_dir():
        _die(f"--out {outdir}: exists and is not a directory")

    err = Console(stderr=True)
    sampled = sample is not None and sample != 1
    progress = _SizesProgress(
        enabled=err.is_terminal,
        console=err,
        compiling=err.is_terminal and not compiled_core_cached(),
    )
    progress.begin(None)
    t0 = time.monotonic()
    try:
        with _user_errors():
            points = mrc(
                trace,
                sizes=sizes,
                format=reader.format_name,
                options=opts,
                sample=sample,
                workers=workers,
                experiments={"fault_unreferenced": True} if fault_unreferenced else None,
                progress=progress,
            )
    except KeyboardInterrupt:
        progress.close()
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        progress.close()
    wall = time.monotonic() - t0

    # the files first: a reader of the output (`| head -1`) may stop reading at any line
    title = f"{trace.name}" + (f", sampled at {sample:g}" if sampled else "")
    if fault_unreferenced:
        title += ", fault_unreferenced"
    try:
        csv_path, png = write_mrc(points, outdir, title=title)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as e:
        _die(f"cannot write {e.filename or outdir}: {e.strerror or e}")

    console = _stdout()
    mode = f"sampled at {sample:g} (spatial hash)" if sampled else "exact"
    n = len(points)
    console.print(
        Text(
            f"trace {trace} ({reader.format_name}): {points[0].accesses:,} accesses"
            f"{' in the sample' if sampled else ''}, {n} size{'' if n == 1 else 's'}, "
            f"{mode}, wall {wall:.1f} s"
        )
    )
    if fault_unreferenced:
        console.print(
            Text(
                "note: experiment fault_unreferenced is on (a faulted-in page starts "
                "unreferenced): not the kernel's behaviour",
                style="yellow",
            )
        )
    t = Table(title="miss-ratio curve (v16 reclaimer)", title_justify="left")
    cols = ["EPC pages", "EPC MiB"]
    if sampled:
        cols.append("sampled EPC pages")
    cols += ["miss ratio", "mean reclaimable", "steady reclaimable", "trusted"]
    for col in cols:
        t.add_column(col, justify="left" if col == "trusted" else "right")
    ratios = format_ratios([p.miss_ratio for p in points])
    for p, ratio in zip(points, ratios):
        row = [f"{p.epc_pages:,}", f"{p.epc_pages * PAGE_SIZE / 2**20:.2f}"]
        if sampled:
            row.append(f"{p.sim_epc_pages:,}")
        row += [
            ratio,
            f"{p.mean_reclaimable_pages:,.1f}",
            f"{p.steady_reclaimable_pages:,.1f}",
        ]
        t.add_row(*row, Text("yes" if p.trusted else "no", style="" if p.trusted else "red"))
    console.print(t)
    for p in points:
        if not p.trusted:
            typer.echo(
                f"warning: size {p.epc_pages} pages ({p.epc_pages * PAGE_SIZE / 2**20:.2f} MiB) "
                f"is not to be trusted: {p.reason} (the kernel's fixed constants weigh on "
                "a cache this small; docs/MRC.md)",
                err=True,
            )
    console.print(Text(f"wrote {csv_path} and {png}"))


# --- sweep ------------------------------------------------------------------------------


def _failed_on_cluster(e: EpcsimError) -> bool:
    """*e* is the Dask backend's PointsFailedError (its module is loaded if it raised):
    points a cluster gave up on after its retries, not bad input."""
    backend = sys.modules.get("epcsim.sweep.dask_backend")
    return backend is not None and isinstance(e, backend.PointsFailedError)


class _PointsProgress:
    """The sweep's progress bar over points, with an ETA (stderr, a terminal only)."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.done = 0
        self.total = 0
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if not self.enabled or total == 0:
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("sweep"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} points"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("points", total=total)
        assert self._task is not None
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@app.command("sweep", cls=_Command)
def sweep_command(
    scenario: ScenarioArg,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="The sweep directory: a Parquet dataset, one file per point "
            "(docs/SWEEP.md); a rerun into it runs only the points it lacks.",
            show_default=False,
        ),
    ],
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            metavar="KEY=VALUES",
            help="An axis: a --set key and its values a,b,c, A..B:N (linear, both ends) or "
            "A..B:xN (geometric); several --grid form the product (repeatable; replaces "
            "the key's values of the scenario's \\[sweep] grid).",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            metavar="FROM..TO|N,N...",
            help="The seeds of each grid point (default: \\[sweep] seeds, else host.seed).",
            show_default=False,
        ),
    ] = None,
    set_: SetOpt = None,
    jobs: Annotated[
        str | None,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            help="Local processes running points (default: the machine's CPUs).",
            show_default=False,
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="tcp://HOST:PORT",
            help="Run the points on this existing Dask cluster instead of locally.",
            show_default=False,
        ),
    ] = None,
    keep_runs: Annotated[
        bool,
        typer.Option("--keep-runs", help="Also keep each point's run directory in DIR/_runs/."),
    ] = False,
    retry_errors: Annotated[
        bool,
        typer.Option("--retry-errors", help="Run again the points that ended with an error."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace a sweep of another scenario, --set or grid keys in DIR.",
        ),
    ] = False,
) -> None:
    """Run a scenario over a grid of values x seeds into a Parquet dataset, one row per
    point x cgroup and per point x enclave (docs/SWEEP.md).  Resumable: a rerun runs only
    the points DIR lacks.  Exit 0 when every point ran, 1 when a point ended with an
    error (its rows say outcome "error")."""
    from concurrent.futures.process import BrokenProcessPool

    from .sweep import sweep

    n_jobs: int | None = None
    if jobs is not None:
        # ASCII spaces only around the digits: int() refuses the other characters that
        # Python's \s matches (U+001C..U+001F, found by the fuzz tests)
        if not re.fullmatch(r"[ \t]*[0-9]+[ \t]*", jobs) or int(jobs) < 1:
            _die(f"--jobs: expected a positive integer, got {jobs!r}")
        n_jobs = int(jobs)
    _load(scenario, set_)  # the scenario's errors and warnings as `epcsim run` gives them
    err = Console(stderr=True)
    progress = _PointsProgress(err, err.is_terminal)
    try:
        with _user_errors():
            try:
                res = sweep(
                    scenario,
                    grid=grid or (),
                    seeds=seeds,
                    sets=set_ or (),
                    out=out,
                    jobs=n_jobs,
                    scheduler=scheduler,
                    keep_runs=keep_runs,
                    force=force,
                    retry_errors=retry_errors,
                    progress=progress,
                )
            except EpcsimError as e:
                if not _failed_on_cluster(e):
                    raise  # bad input: exit 2
                # the cluster's counterpart of a dead local worker (below): exit 1
                progress.close()
                typer.echo(
                    f"epcsim: {e}; {progress.done} point{'' if progress.done == 1 else 's'} "
                    f"of {progress.total} written to {out}; a rerun runs the others",
                    err=True,
                )
                raise typer.Exit(EXIT_EXPECTATION_FAILED) from None
    except KeyboardInterrupt:
        progress.close()
        typer.echo(
            f"interrupted; {progress.done} point{'' if progress.done == 1 else 's'} of "
            f"{progress.total} written to {out}; a rerun runs the others",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except BrokenProcessPool as e:
        progress.close()
        typer.echo(
            f"epcsim: a worker process died ({e}); {progress.done} point"
            f"{'' if progress.done == 1 else 's'} of {progress.total} written to {out}; a "
            "rerun runs the others",
            err=True,
        )
        raise typer.Exit(EXIT_EXPECTATION_FAILED) from None
    except OSError as e:
        progress.close()
        if e.filename is None:
            raise
        _die(f"cannot write {e.filename}: {e.strerror or e}")
    finally:
        progress.close()
    n = len({p.key for p in res.points})
    axes = " x ".join(f"{a.key} ({len(a.values)})" for a in res.axes) or "no grid"
    console = _stdout()
    console.print(
        Text(
            f"sweep {axes} x {len(res.seeds)} seed{'' if len(res.seeds) == 1 else 's'}: "
            f"{n} point{'' if n == 1 else 's'}, {res.ran} run now, {res.skipped} already in "
            f"{out}"
        )
    )
    console.print(Text(f"wrote {out} (read it with pyarrow.dataset.dataset({str(out)!r}))"))
    if res.errors:
        k = len(res.errors)
        typer.echo(
            f"epcsim: {k} point{'' if k == 1 else 's'} ended with an error (rows with outcome "
            f"error, the message in column error): {', '.join(res.errors[:3])}"
            f"{', ...' if k > 3 else ''}; --retry-errors runs them again",
            err=True,
        )
        raise typer.Exit(EXIT_EXPECTATION_FAILED)


# --- from-k8s ---------------------------------------------------------------------------


def _pairs(option: str, items: list[str] | None) -> dict[str, str]:
    """``CONTAINER=VALUE`` options as a mapping (a container named twice is refused)."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            _die(f"{option} {item!r}: expected CONTAINER=VALUE")
        if key in out:
            _die(f"{option} {key}: given twice")
        out[key] = value
    return out


@app.command("from-k8s", cls=_Command)
def from_k8s_command(
    yaml_files: Annotated[
        list[Path],
        typer.Argument(
            metavar="PODS.yaml",
            help="Kubernetes manifests (multi-document YAML): Pods, Deployments, "
            "StatefulSets, Jobs, DaemonSets, ReplicaSets, Nodes; other kinds are listed as "
            "not mapped.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="SCENARIO.toml",
            help="The scenario to write (refused if it exists, unless --force; never one "
            "of the inputs).",
            show_default=False,
        ),
    ],
    epc: Annotated[
        str | None,
        typer.Option(
            "--epc",
            metavar="SIZE",
            help="The host's EPC, e.g. 64GiB or 64Gi (default: a Node's "
            'status.capacity["sgx.intel.com/epc"] in the YAML).',
            show_default=False,
        ),
    ] = None,
    manifest: Annotated[
        list[str] | None,
        typer.Option(
            "--manifest",
            metavar="CONTAINER=FILE",
            help="The enclave's size from a Gramine manifest (sgx.enclave_size) or an "
            "Occlum.json (resource_limits.user_space_size); CONTAINER is NAME, POD/NAME or "
            "NAMESPACE/POD/NAME (repeatable).",
            show_default=False,
        ),
    ] = None,
    workload: Annotated[
        list[str] | None,
        typer.Option(
            "--workload",
            metavar="CONTAINER=PATTERN",
            help="A container's workload: zipf[:ALPHA], uniform, sequential, "
            "hotcold[:FRACTION[:PROBABILITY]] (default: the pod's epcsim.io/workload "
            "annotation, else zipf:0.9) (repeatable).",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        str,
        typer.Option("--duration", metavar="TIME", help="How long each workload runs."),
    ] = "1s",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
) -> None:
    """Convert Kubernetes manifests into a scenario (docs/K8S.md): each container with an
    sgx.intel.com/epc limit is a cgroup /kubepods/NAMESPACE/POD/CONTAINER with that limit
    as misc.max and one enclave.  What cannot be mapped is listed on stderr and in the
    scenario's first comments."""
    import tomllib

    from .k8s import from_k8s, write_scenario

    manifests = _pairs("--manifest", manifest)
    workloads = _pairs("--workload", workload)
    with _user_errors():
        conv = from_k8s(
            yaml_files, epc=epc, manifests=manifests, workloads=workloads, duration=duration
        )
        write_scenario(conv, out, inputs=[*yaml_files, *manifests.values()], force=force)
    for item in conv.unmapped:
        typer.echo(f"epcsim: not mapped: {item}", err=True)
    for item in conv.warnings:
        typer.echo(f"epcsim: warning: {item}", err=True)
    n = len(tomllib.loads(conv.toml).get("enclave", []))
    typer.echo(
        f"wrote {out} ({n} enclave{'' if n == 1 else 's'}; {len(conv.unmapped)} not mapped, "
        f"{len(conv.warnings)} warning{'' if len(conv.warnings) == 1 else 's'})"
    )


# --- epcsim advise (issue 16) ------------------------------------------------------------


def _advise_value(slo: dict[str, Any], v: float | None) -> str:
    """A metric value in its unit: times as times, others three significant digits."""
    from .advise import METRICS
    from .report.fmt import sig3

    if v is None:
        return "-"
    if METRICS[slo["metric"]].time:
        return _time(int(v))
    return sig3(float(v))


def _print_advice(console: Console, data: dict[str, Any]) -> None:
    slos = data["slos"]
    verdict = "feasible" if data["feasible"] else "NOT feasible"
    budget = "" if data["budget"] is None else f", budget {_size(data['budget'])}"
    table = Table(
        title=f"{data['scenario']}: {verdict}; limits sum to {_size(data['total'])} "
        f"(resolution {_size(data['resolution'])}{budget}; seeds "
        f"{', '.join(map(str, data['seeds']))})"
    )
    for heading in ("tenant", "scenario limit", "chosen limit"):
        table.add_column(heading, justify="left" if heading == "tenant" else "right")
    for s in slos:
        table.add_column(f"{s['metric']} (SLO {s['text']})", justify="right")
    table.add_column("margin", justify="right")
    table.add_column("monotone")
    for path, t in data["tenants"].items():
        rel = [m["relative"] for m in t["margin"].values() if m["relative"] is not None]
        table.add_row(
            path,
            _size(t["scenario_limit"]) if t["scenario_limit"] is not None else "max",
            _size(t["limit"]),
            *(_advise_value(s, t["metrics"].get(s["text"])) for s in slos),
            f"{min(rel):+.1%}" if rel else "-",
            "yes" if t["monotone"] else "no",
        )
    console.print(table)
    for path, t in data["tenants"].items():
        curve = Table(title=f"{path}: the curve searched (limit -> metric)", title_justify="left")
        curve.add_column("limit", justify="right")
        curve.add_column("others", justify="left")
        for s in slos:
            curve.add_column(s["metric"], justify="right")
        curve.add_column("meets")
        for p in t["curve"]:
            others = ", ".join(f"{k}={_size(v)}" for k, v in p["others"].items())
            curve.add_row(
                _size(p["limit"]),
                others or "scenario limits",
                *(_advise_value(s, p["metrics"].get(s["text"])) for s in slos),
                "yes" if p["meets"] else f"no: {p['why_not']}",
            )
        console.print(curve)
        for note in t["notes"]:
            console.print(Text(f"{path}: {note}"))
    for w in data["warnings"]:
        console.print(Text(f"warning: {w}"))
    if not data["feasible"]:
        console.print(Text(f"no assignment meets the SLOs: {data['reason']}"))
    n, rounds = data["evaluations"], len(data["rounds"])
    console.print(Text(f"{n} assignments evaluated in {rounds} rounds"))


@app.command("advise", cls=_Command)
def advise_command(
    scenario: ScenarioArg,
    slo: Annotated[
        list[str],
        typer.Option(
            "--slo",
            metavar="METRIC<=VALUE",
            help="A service objective every tenant must meet at every seed, e.g. "
            "'slowdown<=1.5', 'p99_fault_latency<=50us' (repeatable; metrics: docs/ADVISE.md).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="The advice directory: advise.json and the runs' sweep dataset in "
            "DIR/points (an interrupted advice resumes from it).",
            show_default=False,
        ),
    ],
    tenant: Annotated[
        list[str] | None,
        typer.Option(
            "--tenant",
            metavar="CGROUP",
            help="A tenant cgroup (repeatable; default: every cgroup other than / "
            "holding an enclave).",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            metavar="SIZE|capacity",
            help="The most the limits may add up to (a size, capacity = the host's EPC, or "
            "an expression of capacity).",
            show_default=False,
        ),
    ] = None,
    resolution: Annotated[
        str | None,
        typer.Option(
            "--resolution",
            metavar="SIZE",
            help="The step of the limits, whole pages (default: capacity/32 rounded down "
            "to a page).",
            show_default=False,
        ),
    ] = None,
    set_: SetOpt = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            metavar="FROM..TO|N,N...",
            help="The seeds each limit runs with; an SLO must hold for every one (default: "
            "the scenario's host.seed).",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            metavar="N",
            help="Runs in parallel on this machine (default: its CPUs).",
            show_default=False,
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="Run on an existing Dask cluster (tcp://HOST:8786) instead.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """The smallest misc.max per tenant meeting every SLO (bisection per tenant, then
    the combination to a fixpoint; docs/ADVISE.md).  Exit 0 whether or not an
    assignment exists (advise.json says "feasible")."""
    from .advise import advise

    _load(scenario, set_)  # the scenario's errors and warnings as `epcsim run` gives them
    try:
        with _user_errors():
            try:
                res = advise(
                    scenario,
                    slos=slo,
                    tenants=tenant,
                    budget=budget,
                    resolution=resolution,
                    sets=set_ or (),
                    seeds=seeds,
                    out=out,
                    jobs=jobs,
                    scheduler=scheduler,
                )
            except EpcsimError as e:
                # points that failed on the Dask cluster (not bad input): exit 1, as sweep
                if not _failed_on_cluster(e):
                    raise
                typer.echo(
                    f"epcsim: {e}; the runs done are in {out}/points (advise resumes from them)",
                    err=True,
                )
                raise typer.Exit(EXIT_EXPECTATION_FAILED) from None
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted; the runs done are in {out}/points (advise resumes from them)",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    console = _stdout()
    _print_advice(console, res.data)
    console.print(Text(f"wrote {out}/advise.json"))


def main() -> None:
    """The ``epcsim`` console script."""
    app(prog_name="epcsim")


if __name__ == "__main__":
    main()
