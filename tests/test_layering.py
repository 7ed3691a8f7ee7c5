"""The layering of ``docs/ARCHITECTURE.md``, checked over the source.

Every module under ``src/epcsim`` is parsed (``ast``, nothing is imported); each
``import`` and ``from ... import`` — relative ones resolved, those inside functions and
under ``TYPE_CHECKING`` included — is an edge from one layer to another.  A module's
layer is its first name below ``epcsim`` (``epcsim.kernel.epc`` is in ``kernel``,
``epcsim.compiled.loop`` in ``compiled``), so a module added to a package is covered by
the package's rule without being listed.

:data:`USES` is the "uses" column of the layers table in ``docs/ARCHITECTURE.md`` (a
test reads the table and compares): a layer may import its own modules, the layers it
lists and, transitively, what those may import.  Where today's code breaks a rule the
edge is listed in :data:`KNOWN` with its reason; a listed edge that is no longer found
fails the test too, so the table stays true.  Third-party rules: numba only where code
is compiled (the compiled engine, the trace readers' Fenwick tree and dense mapper),
typer and rich only in the CLI, matplotlib only where figures are drawn.

Issue 13 ("One model, two engines, equal by construction"): "A test imports each
package and asserts what it must not import (the rules in docs/ARCHITECTURE.md)."
"""

from __future__ import annotations

import ast
import graphlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
ROOT_PACKAGE = "epcsim"

#: layer -> the layers it uses directly (what it may import is the transitive closure).
#: ``epcsim`` is the package's ``__init__`` (the facade: ``epcsim.run`` & co.); ``cli``
#: includes ``__main__``.
USES: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "units": frozenset({"errors"}),
    "_atomic": frozenset({"errors"}),
    "kernel": frozenset({"errors", "units"}),
    "workload": frozenset({"kernel", "_atomic"}),
    "programs": frozenset({"kernel"}),
    "policies": frozenset({"kernel"}),
    "costs": frozenset({"kernel"}),
    "result": frozenset({"costs", "_atomic"}),
    "rundir": frozenset({"errors"}),
    "scenario": frozenset({"workload", "programs", "costs", "policies"}),
    "sim": frozenset({"scenario", "result"}),
    "compiled": frozenset({"sim"}),
    "mrc": frozenset({"compiled"}),
    "report": frozenset({"result", "rundir"}),
    "check": frozenset({"compiled", "rundir"}),
    "api": frozenset({"check", "mrc", "report"}),
    "compare": frozenset({"api"}),
    "sweep": frozenset({"api", "compare", "rundir", "_atomic", "scenario", "errors", "units"}),
    "epcsim": frozenset({"api", "compare"}),
    "advise": frozenset(
        {"sweep", "api", "compare", "scenario", "units", "_atomic", "rundir", "errors"}
    ),
    "k8s": frozenset({"scenario", "units", "_atomic", "errors"}),
    "cli": frozenset({"epcsim", "sweep", "k8s", "advise"}),
}

#: modules that belong to another layer than their place says, while they move:
#: real name -> (the name the rules treat it under, why)
MISPLACED: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True)
class Known:
    """A rule today's code breaks: edges from ``importer`` to ``imported`` (module
    prefixes; ``epcsim`` alone means the package's ``__init__``)."""

    importer: str
    imported: str
    #: every such import sits inside a function (imported at call time, no cycle at load)
    lazy: bool
    reason: str


KNOWN: tuple[Known, ...] = (
    Known(
        "epcsim.sim",
        "epcsim.compiled.engine",
        lazy=True,
        reason="the reference engine offers the compiled engine the steady state "
        "(check_engine, take_over in Simulation.run)",
    ),
    Known(
        "epcsim.sim.progress",
        "epcsim.compiled",
        lazy=True,
        reason="the progress bar says 'compiling the engine (first run only)' while the "
        "compiled code's cache is cold (compiled_core_cached)",
    ),
    Known(
        "epcsim.sim",
        "epcsim",
        lazy=False,
        reason="__version__ is defined in the package's __init__ (summary.json's epcsim_version)",
    ),
    Known(
        "epcsim.api",
        "epcsim",
        lazy=False,
        reason="__version__ is defined in the package's __init__ (run.json's versions)",
    ),
    Known(
        "epcsim.sweep",
        "epcsim",
        lazy=True,
        reason="__version__ is defined in the package's __init__ (each Dask worker's "
        "epcsim version is checked against the driver's)",
    ),
)

#: third-party top-level package -> the module prefixes that may import it
THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "numba": ("epcsim.compiled", "epcsim.workload.traces"),
    "llvmlite": ("epcsim.compiled",),
    "typer": ("epcsim.cli",),
    "rich": ("epcsim.cli",),
    "matplotlib": (
        "epcsim.report",
        "epcsim.mrc",
        "epcsim.compare",
        "epcsim.sweep.html",
        "epcsim.workload.traces._plot",
    ),
}


@dataclass(frozen=True)
class Import:
    importer: str
    #: an ``epcsim`` module, or a third-party top-level package
    imported: str
    line: int
    #: inside a function body
    lazy: bool


def _matches(module: str, prefix: str) -> bool:
    if prefix == ROOT_PACKAGE:
        return module == ROOT_PACKAGE
    return module == prefix or module.startswith(prefix + ".")


def logical(module: str) -> str:
    """The name the rules treat ``module`` under (:data:`MISPLACED`)."""
    return MISPLACED.get(module, (module, ""))[0]


def layer(module: str) -> str:
    parts = logical(module).split(".")
    if len(parts) == 1:
        return ROOT_PACKAGE
    return "cli" if parts[1] == "__main__" else parts[1]


def _closure(uses: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for name in graphlib.TopologicalSorter(uses).static_order():
        below = set(uses.get(name, ()))
        for used in uses.get(name, ()):
            below |= out[used]
        out[name] = frozenset(below)
    return out


def source_modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Every module under ``src/epcsim``: name -> (file, is a package)."""
    out: dict[str, tuple[Path, bool]] = {}
    for path in sorted((src / ROOT_PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts.pop()
        out[".".join(parts)] = (path, package)
    return out


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, package: bool, modules: set[str]) -> None:
        self.module = module
        self.base = module if package else module.rpartition(".")[0]
        self.modules = modules
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, imported: str, node: ast.stmt) -> None:
        if imported != ROOT_PACKAGE and not imported.startswith(ROOT_PACKAGE + "."):
            imported = imported.partition(".")[0]
        self.found.append(Import(self.module, imported, node.lineno, self.depth > 0))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.base.split(".")
            if node.level - 1 >= len(parts):
                raise ValueError(f"{self.module}:{node.lineno}: relative import above epcsim")
            parts = parts[: len(parts) - (node.level - 1)]
            target = ".".join(parts + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            # `from pkg import sub` imports the submodule, `from pkg import name` the package
            self._add(sub if sub in self.modules else target, node)


def imports_in(module: str, source: str, package: bool, modules: set[str]) -> list[Import]:
    """Every import in ``source`` (the module ``module``), relative ones resolved."""
    visitor = _Imports(module, package, modules)
    visitor.visit(ast.parse(source))
    return visitor.found


def all_imports(src: Path = SRC) -> list[Import]:
    modules = source_modules(src)
    names = set(modules)
    out: list[Import] = []
    for name, (path, package) in modules.items():
        out += imports_in(name, path.read_text(encoding="utf-8"), package, names)
    return out


def internal(imports: list[Import]) -> list[Import]:
    return [
        i for i in imports if _matches(i.imported, ROOT_PACKAGE) or i.imported.startswith("epcsim.")
    ]


def violations(imports: list[Import]) -> list[Import]:
    """The ``epcsim`` imports :data:`USES` does not allow."""
    allowed = _closure(USES)
    return [
        i
        for i in internal(imports)
        if layer(i.imported) != layer(i.importer)
        and layer(i.imported) not in allowed[layer(i.importer)]
    ]


def known(imp: Import) -> Known | None:
    for k in KNOWN:
        if _matches(logical(imp.importer), k.importer) and _matches(
            logical(imp.imported), k.imported
        ):
            return k
    return None


def _show(imports: list[Import]) -> list[str]:
    return [f"{i.importer}:{i.line} imports {i.imported}" for i in imports]


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports()


# --- the rules themselves -------------------------------------------------------------


def test_the_layers_form_a_hierarchy() -> None:
    """Every layer named exists and no layer uses itself through others (no cycle)."""
    named = set().union(*USES.values())
    assert named <= set(USES), named - set(USES)
    allowed = _closure(USES)  # graphlib raises CycleError on a cycle
    assert all(name not in allowed[name] for name in USES)
    assert allowed["kernel"] == {"errors", "units"}
    assert {"sim", "compiled"}.isdisjoint(allowed["report"])
    assert "compiled" not in allowed["sim"]
    assert set(allowed["cli"]) == set(USES) - {"cli"}


def architecture_uses(text: str) -> dict[str, frozenset[str]]:
    """The "uses" column of the first table with one, by layer (a row's first cell)."""
    table: dict[str, frozenset[str]] = {}
    column = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if table:
                break
            column = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if column is None:
            column = cells.index("uses") if "uses" in cells else None
        elif re.fullmatch(r"`[\w.]+`", cells[0]):
            table[cells[0].strip("`")] = frozenset(re.findall(r"`([\w.]+)`", cells[column]))
    return table


def test_architecture_md_shows_these_rules() -> None:
    """The layers table of docs/ARCHITECTURE.md has the same "uses" column as USES."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert architecture_uses(text) == USES


def test_every_module_has_a_layer() -> None:
    for module in source_modules():
        assert layer(module) in USES, f"{module}: add its layer to USES and docs/ARCHITECTURE.md"


def test_misplaced_modules_exist() -> None:
    modules = source_modules()
    stale = [m for m in MISPLACED if m not in modules]
    assert stale == [], f"{stale} moved: drop them from MISPLACED"


# --- the source against the rules -----------------------------------------------------


def test_every_import_resolves_to_a_module(imports: list[Import]) -> None:
    modules = set(source_modules())
    unknown = [i for i in internal(imports) if i.imported not in modules]
    assert _show(unknown) == []


def test_no_import_breaks_the_layering(imports: list[Import]) -> None:
    broken = [i for i in violations(imports) if known(i) is None]
    assert _show(broken) == []


@pytest.mark.parametrize("k", KNOWN, ids=lambda k: f"{k.importer}->{k.imported}")
def test_known_violations_are_still_true(imports: list[Import], k: Known) -> None:
    """Each listed violation is still found (else drop its row), and lazy where it says so."""
    found = [i for i in violations(imports) if known(i) is k]
    assert found, f"{k.importer} -> {k.imported} no longer found: drop it from KNOWN"
    if k.lazy:
        assert _show([i for i in found if not i.lazy]) == []


@pytest.mark.parametrize("package", sorted(THIRD_PARTY))
def test_third_party_packages_stay_where_they_belong(imports: list[Import], package: str) -> None:
    places = THIRD_PARTY[package]
    outside = [
        i
        for i in imports
        if i.imported == package and not any(_matches(logical(i.importer), p) for p in places)
    ]
    assert _show(outside) == []


def test_numba_is_found_where_it_is_used(imports: list[Import]) -> None:
    """The third-party rule sees real imports (else it would pass on a blind walk)."""
    users = {layer(i.importer) for i in imports if i.imported == "numba"}
    assert users == {"compiled", "workload"}


# --- the walk and the checker can fail ---------------------------------------------------


MODULES = {
    "epcsim",
    "epcsim.sim",
    "epcsim.sim.engine",
    "epcsim.sim.progress",
    "epcsim.compiled",
    "epcsim.compiled.engine",
    "epcsim.kernel",
    "epcsim.kernel.encls",
    "epcsim.report",
    "epcsim.report.html",
}


def test_relative_imports_are_resolved() -> None:
    source = """
from .. import __version__
from ..kernel import encls, Host
from . import progress
import numba.core
import epcsim.report.html

def run():
    from ..compiled.engine import take_over
    return take_over
"""
    found = imports_in("epcsim.sim.engine", source, False, MODULES)
    assert [(i.imported, i.line, i.lazy) for i in found] == [
        ("epcsim", 2, False),
        ("epcsim.kernel.encls", 3, False),
        ("epcsim.kernel", 3, False),
        ("epcsim.sim.progress", 4, False),
        ("numba", 5, False),
        ("epcsim.report.html", 6, False),
        ("epcsim.compiled.engine", 9, True),
    ]
    # in a package's __init__, one dot is the package itself
    found = imports_in("epcsim.sim", "from .engine import Simulation\n", True, MODULES)
    assert [i.imported for i in found] == ["epcsim.sim.engine"]


def test_the_checker_finds_a_broken_rule() -> None:
    """The report reading the simulator, the kernel reading a scenario: both refused."""
    bad = [
        Import("epcsim.report.html", "epcsim.sim.engine", 1, False),
        Import("epcsim.kernel.encl", "epcsim.scenario.schema", 2, True),
        Import("epcsim.compiled.loop", "epcsim.kernel.encls", 3, False),
        Import("epcsim.sim.core", "epcsim.compiled.heap", 4, True),
    ]
    assert violations(bad) == [bad[0], bad[1], bad[3]]
    assert [known(i) for i in violations(bad)] == [None, None, None]
