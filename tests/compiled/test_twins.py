"""The twin table (epcsim.compiled.twins) against the code: complete, every twin real,
every compiled function carrying its kernel function's name."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from epcsim.compiled.twins import COMPILED_MODULES, TWINS, twin


def _defined(module: str) -> set[str]:
    """The functions a module's source defines at its top level (also in an if/else:
    bits.py defines its plain-Python helpers there)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module)))
    out: set[str] = set()
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef):
            out.add(node.name)
        elif isinstance(node, ast.If):
            stack.extend(node.body + node.orelse)
    return out


def _resolve(dotted: str) -> object:
    """The object a dotted name in epcsim.kernel names (module, then attributes)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _doc(obj: object) -> str:
    return inspect.getdoc(getattr(obj, "py_func", obj)) or ""


def test_the_table_lists_every_compiled_function_and_nothing_else() -> None:
    listed = {(t.module, t.name) for t in TWINS}
    assert len(listed) == len(TWINS), "a function is listed twice"
    defined = {(m, f) for m in COMPILED_MODULES for f in _defined(m)}
    assert sorted(defined - listed) == [], "compiled functions missing from the table"
    assert sorted(listed - defined) == [], "rows naming no compiled function"


def test_compiled_modules_are_every_core_module_of_the_package() -> None:
    """Every module of epcsim.compiled is in COMPILED_MODULES but the engine side."""
    import epcsim.compiled as pkg

    engine_side = {"__init__", "_jit", "eligibility", "engine", "layout", "twins"}
    found = {
        f"epcsim.compiled.{p.stem}"
        for p in Path(pkg.__path__[0]).glob("*.py")
        if p.stem not in engine_side
    }
    assert found == set(COMPILED_MODULES)


def test_every_row_has_twins_or_a_reason() -> None:
    for t in TWINS:
        if t.twins is None:
            assert t.kernel is None and t.reason and t.reason.startswith("no twin"), t
        else:
            assert t.twins and t.kernel and t.reason is None, t
            assert all(k.startswith(("epcsim.kernel.", "epcsim.policies.")) for k in t.twins), t


@pytest.mark.parametrize("row", [t for t in TWINS if t.twins], ids=lambda t: t.name)
def test_every_named_twin_exists_in_the_kernel_model(row) -> None:
    for dotted in row.twins:
        assert callable(_resolve(dotted)), dotted


@pytest.mark.parametrize("row", [t for t in TWINS if t.twins], ids=lambda t: t.name)
def test_compiled_functions_carry_their_kernel_name(row) -> None:
    """Named after the kernel function, or says "Models <kernel>()" first; a reference
    twin models that function too (its name, or its docstring names it); the compiled
    function's docstring names its first reference twin."""
    fn = getattr(importlib.import_module(row.module), row.name)
    assert row.name == row.kernel or _doc(fn).startswith(f"Models {row.kernel}()"), row.name
    refs = [_resolve(d) for d in row.twins]
    assert any(
        r.__name__.lstrip("_") == row.kernel.lstrip("_") or f"{row.kernel}(" in _doc(r)
        for r in refs
    ), (row.name, row.twins)
    # the compiled function names its reference twin where it is not its namesake
    first = row.twins[0]
    first = first.removeprefix("epcsim.kernel.") if first.startswith("epcsim.kernel.") else first
    assert first in " ".join(_doc(fn).split()), row.name


def test_functions_without_twins_say_so() -> None:
    for t in TWINS:
        if t.twins is None:
            fn = getattr(importlib.import_module(t.module), t.name)
            fn = getattr(fn, "py_func", getattr(fn, "_defn", fn))  # a dispatcher, an intrinsic
            if fn.__module__ != t.module:
                continue  # numba's trailing_zeros under the JIT (bits.py's says so)
            assert (inspect.getdoc(fn) or "").startswith("No kernel twin"), t.name


def test_twin_lookup() -> None:
    assert twin("sgx_reclaimer_block").twins == ("epcsim.kernel.reclaim._sgx_reclaimer_block",)
    with pytest.raises(KeyError):
        twin("nope")


def test_assumption_keys_are_allow_list_keys() -> None:
    from epcsim.compiled import eligibility

    rules = eligibility.RULES
    missing = sorted({k for t in TWINS for k in t.assumptions} - set(rules))
    assert missing == []
