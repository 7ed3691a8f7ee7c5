"""The compiled engine reaches the reference engine and the kernel model only through their
public hand-over surface (docs/ENGINES.md, "The hand-over surface"; issue 13).

Read from the source (ast) of every module of ``epcsim.compiled``:

- no attribute access ``X._name`` unless X is ``self`` / ``cls``, a name the module
  defines itself, or a name bound to a module outside epcsim (numba's internals are
  numba's business); dunders (``__class__``) are not private;
- no import of a ``_``-prefixed name (or module) from ``epcsim.sim`` or
  ``epcsim.kernel``;
- no call with a ``_``-prefixed keyword argument (the kernel functions' engine-only
  arguments are the public ``resume=`` states of ``epcsim.kernel.resume``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import epcsim.compiled

PACKAGE = Path(epcsim.compiled.__file__).resolve().parent

#: the compiled core still lives at ``epcsim.sim._core`` until it moves into
#: ``epcsim.compiled`` (issue 13's split of the core): its own module, not the
#: reference engine's.  Drop this entry once that move is merged.
OWN_MODULES_ELSEWHERE: set[str] = set()

GUARDED = ("epcsim.sim", "epcsim.kernel")

#: private attributes of objects that are neither epcsim's nor bound to an import (e.g. a
#: numba dispatcher passed as an argument): ``(module, expression): reason``; every entry
#: must still occur (a stale one fails)
FOREIGN: dict[tuple[str, str], str] = {
    # numba's dispatcher and cache objects, not the reference engine's: the compile
    # cache sets the dispatcher's cache as Dispatcher.enable_caching() does, and reads
    # numba's index to tell whether the next run compiles
    ("epcsim.compiled._jit", "disp._cache"): "numba Dispatcher._cache (enable_caching)",
    ("epcsim.compiled._jit", "cache._cache_file"): "numba Cache._cache_file (the index)",
    ("epcsim.compiled._jit", "cache._cache_file._load_index"): "numba IndexDataCacheFile",
    # the array struct an intrinsic builds, as numba's own lowering returns it
    ("epcsim.compiled.bits", "ary._getvalue"): "numba cgutils.Structure._getvalue",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(module: str, level: int, name: str | None) -> str:
    """The absolute module of ``from <level dots><name> import ...`` in *module*."""
    if not level:
        return name or ""
    parts = module.split(".")[:-level]
    return ".".join(parts + ([name] if name else []))


def _guarded(mod: str) -> bool:
    return any(mod == g or mod.startswith(g + ".") for g in GUARDED)


def violations(source: str, module: str) -> list[str]:
    """What *source* (the module *module* of epcsim.compiled) does that the rules forbid,
    one line each."""
    tree = ast.parse(source)
    own: set[str] = {"self", "cls"}
    outside: set[str] = set()  # names bound to modules (or their members) outside epcsim
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if not a.name.startswith("epcsim"):
                    outside.add((a.asname or a.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(module, node.level, node.module)
            for a in node.names:
                if not mod.startswith("epcsim"):
                    outside.add(a.asname or a.name)
    for node in tree.body:  # module-level assignments: the module's own names
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        own.update(t.id for t in targets if isinstance(t, ast.Name))

    out: list[str] = []
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            root = base
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(base, ast.Name) and base.id in own:
                continue
            if isinstance(root, ast.Name) and root.id in outside:
                continue
            out.append(f"{where}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(module, node.level, node.module)
            if mod in OWN_MODULES_ELSEWHERE:
                continue
            for a in node.names:
                full = f"{mod}.{a.name}"
                if full in OWN_MODULES_ELSEWHERE:
                    continue
                if _guarded(full) and any(_private(p) for p in full.split(".")):
                    out.append(f"{where}: from {mod} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in OWN_MODULES_ELSEWHERE:
                    continue
                if _guarded(a.name) and any(_private(p) for p in a.name.split(".")):
                    out.append(f"{where}: import {a.name}")
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg is not None and _private(kw.arg):
                    out.append(f"{where}: keyword {kw.arg}= in {ast.unparse(node.func)}()")
    return sorted(out, key=lambda v: int(v.split(":")[1]))


def _modules() -> list[tuple[str, Path]]:
    return [
        ("epcsim.compiled." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts), p)
        for p in sorted(PACKAGE.rglob("*.py"))
    ]


def test_compiled_package_has_modules() -> None:
    names = [m for m, _ in _modules()]
    assert "epcsim.compiled.engine" in names


def _found(module: str, path: Path) -> list[str]:
    if path.name == "__init__.py":
        module += ".__init__"  # relative imports resolve from the package itself
    return violations(path.read_text(), module)


@pytest.mark.parametrize("module,path", _modules(), ids=[m for m, _ in _modules()])
def test_compiled_module_uses_only_the_public_surface(module: str, path: Path) -> None:
    module = module.removesuffix(".__init__")
    left = [v for v in _found(module, path) if (module, v.split(": ", 1)[1]) not in FOREIGN]
    assert left == []


def test_foreign_entries_are_still_used() -> None:
    found = {
        (m.removesuffix(".__init__"), v.split(": ", 1)[1])
        for m, p in _modules()
        for v in _found(m.removesuffix(".__init__"), p)
    }
    assert set(FOREIGN) <= found


# --- the rule itself: it catches what it must, and only that ----------------------------

FORBIDDEN = [
    ("sim._heap.clear()", "sim._heap"),
    ("self.sim._seq = 1", "self.sim._seq"),
    ("x = sim.actors._fresh", "sim.actors._fresh"),
    ("sgx_reclaim_pages(h, c, None, _resume=(2, [], 0))", "keyword _resume="),
    ("from ..sim.engine import _cg_path", "from epcsim.sim.engine import _cg_path"),
    ("from epcsim.kernel import _private_mod", "from epcsim.kernel import _private_mod"),
    ("import epcsim.kernel._x", "import epcsim.kernel._x"),
    ("def f(sim):\n    return sim._active", "sim._active"),
]

ALLOWED = [
    "self._x = 1",
    "class A:\n    def f(cls):\n        return cls._y",
    "class _T:\n    pass\n\nn = _T._z",
    "_TABLE = {}\nk = _TABLE._k",
    "import numba\nx = numba.core.caching._CacheLocator",
    "from numba.core import caching\nx = caching._CacheLocator",
    "x = obj.__class__",
    "from ..sim.engine import Simulation",
    "from ..kernel.resume import ReclaimerState",
]


@pytest.mark.parametrize("src,what", FORBIDDEN)
def test_rule_flags_private_access(src: str, what: str) -> None:
    (v,) = violations(src, "epcsim.compiled.engine")
    assert what in v


@pytest.mark.parametrize("src", ALLOWED)
def test_rule_allows_own_and_outside_names(src: str) -> None:
    assert violations(src, "epcsim.compiled.engine") == []
