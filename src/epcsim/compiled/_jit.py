"""The compiled engine's numba decorators, and its on-disk compile cache keyed on
everything the compiled code bakes in.

numba's own ``cache=True`` stamps a cached function with its own source file only: a
constant the core imports (``SGX_NR_HIGH_PAGES`` from :mod:`epcsim.kernel.constants`,
a leaf number from :mod:`epcsim.kernel.encls`) is frozen into the cached machine code,
and an edit of it would go unseen.  Here the cache's source stamp is one digest of

- the source of every module the compiled code is built from or takes values from:
  the modules that define cached entry points (:func:`njit_cached`) and, transitively,
  every ``epcsim`` module they import from at module level (:func:`baked_modules`,
  derived from the ``import`` statements, not listed by hand);
- the Python, numba, numpy and llvmlite versions.

It plugs in through numba's cache extension point (:mod:`numba.core.caching`): cache
locators whose ``get_source_stamp()`` is that digest, on a ``FunctionCache`` subclass
the dispatcher uses as its cache.  The files go where numba puts them:
``$NUMBA_CACHE_DIR`` if set, else the ``__pycache__`` beside the source if writable, else
the user-wide cache directory.

Only the entry points are cached: the functions they call (:func:`inline`,
:func:`outline`) are compiled into them, so a cached entry point holds all of the code.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import llvmlite
import numba
import numpy as np
from numba.core import caching
from numba.core.dispatcher import Dispatcher

__all__ = ["baked_modules", "inline", "is_cached", "njit_cached", "outline"]

F = TypeVar("F", bound=Callable[..., Any])

#: the options every compiled function is built with: no reference counting (the
#: core allocates nothing), and numpy's error model (no division-by-zero checks)
_OPTIONS: dict[str, Any] = {"_nrt": False, "error_model": "numpy"}

#: the package the compiled code lives in, its directory, and the decorator names
_PACKAGE = __name__.split(".")[0]
_ROOT = Path(__file__).resolve().parent.parent
_JIT_MODULE = __name__
_ENTRY_DECORATOR = "njit_cached"


def _module_file(root: Path, name: str) -> Path | None:
    """The source file of module *name* (``epcsim.a.b``) under the package directory
    *root*, or None if *name* is no module there."""
    base = os.path.join(root, *name.split(".")[1:])
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return Path(path)
    return None


def _package_of(root: Path, name: str) -> str:
    """The package relative imports in module *name* are resolved against."""
    path = _module_file(root, name)
    return name if path is not None and path.name == "__init__.py" else name.rpartition(".")[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(source: str) -> list[ast.Import | ast.ImportFrom]:
    """The import statements a module runs when it is imported: its body's, including
    those under a top-level ``if``, ``try`` or ``with`` (not ``if TYPE_CHECKING:``), not those
    inside functions or classes."""
    if _NEEDS_FULL_PARSE.search(source) is None:
        # Fast path (parsing the module whole is most of the stamp's cost): only
        # top-level statements can be module-level imports; parse just those.
        found: list[ast.Import | ast.ImportFrom] = []
        for match in _TOP_LEVEL_IMPORT.finditer(source):
            try:
                (node,) = ast.parse(match.group(0)).body
            except SyntaxError:  # e.g. a docstring line that starts with "from"
                break
            assert isinstance(node, ast.Import | ast.ImportFrom)
            found.append(node)
        else:
            return found
    return _parsed_module_level_imports(source)


def _parsed_module_level_imports(source: str) -> list[ast.Import | ast.ImportFrom]:
    """:func:`_module_level_imports` by parsing the whole module."""
    return list(_imports_in(ast.parse(source).body))


def _imports_in(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of *body* and of the ``if``/``try`` blocks in it, in order."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _imports_in(node.body)
            yield from _imports_in(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse):
                yield from _imports_in(block)
            yield from _imports_in(node.finalbody)
        elif isinstance(node, ast.With):
            yield from _imports_in(node.body)


#: a top-level import statement (one line, or parenthesised over several)
_TOP_LEVEL_IMPORT = re.compile(r"^(?:from|import)[ \t][^(\n]*(?:\([^)]*\)[^\n]*)?$", re.M)
#: what the fast path does not read: a top-level ``if`` (other than ``if
#: TYPE_CHECKING:``), ``try`` or ``with``, or a continued line
_NEEDS_FULL_PARSE = re.compile(r"^(?:if (?!TYPE_CHECKING:)|try:|with )|\\$", re.M)


def _imported_modules(root: Path, name: str, source: str) -> set[str]:
    """The package's modules that module *name* takes names from at import time: for
    ``from P import x`` the submodule ``P.x`` if there is one, else ``P`` itself (a
    package's ``__init__`` counts only when names are taken from it)."""
    package = _package_of(root, name)
    out: set[str] = set()
    for node in _module_level_imports(source):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = ("." * node.level + (node.module or "")) if node.level else node.module
            try:
                full = importlib.util.resolve_name(base or "", package)
            except ImportError:  # pragma: no cover - beyond the top package
                continue
            targets = []
            for alias in node.names:
                sub = f"{full}.{alias.name}"
                targets.append(sub if _module_file(root, sub) is not None else full)
        for target in targets:
            if (target == _PACKAGE or target.startswith(_PACKAGE + ".")) and _module_file(
                root, target
            ) is not None:
                out.add(target)
    return out


def _entry_modules(root: Path) -> list[str]:
    """The package's modules that define cached entry points: those that import
    :func:`njit_cached` from this module."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if _ENTRY_DECORATOR not in text:
            continue
        rel = path.relative_to(root).with_suffix("").parts
        if rel[-1] == "__init__":
            rel = rel[:-1]
        name = ".".join((_PACKAGE, *rel))
        if name == _JIT_MODULE:
            continue
        for node in _module_level_imports(text):
            if isinstance(node, ast.ImportFrom) and any(
                a.name == _ENTRY_DECORATOR for a in node.names
            ):
                base = "." * node.level + (node.module or "") if node.level else node.module
                if importlib.util.resolve_name(base or "", _package_of(root, name)) == _JIT_MODULE:
                    found.append(name)
                    break
    return found


def _baked_files(root: Path) -> dict[str, Path]:
    """Module name -> source file of every module the compiled code bakes in, found by
    walking the imports from the entry-point modules under package directory *root*."""
    todo = _entry_modules(root)
    files: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in files:
            continue
        path = _module_file(root, name)
        if path is None:  # pragma: no cover - only names with a file are queued
            continue
        files[name] = path
        source = path.read_text(encoding="utf-8")
        todo.extend(sorted(_imported_modules(root, name, source) - files.keys()))
    return dict(sorted(files.items()))


def _versions() -> tuple[tuple[str, str], ...]:
    """The versions of everything that turns the source into machine code."""
    return (
        ("python", sys.version),
        ("numba", numba.__version__),
        ("numpy", np.__version__),
        ("llvmlite", llvmlite.__version__),
    )


def _source_stamp(root: Path) -> str:
    """The digest of every baked module's name and source, and of the versions."""
    h = hashlib.sha256()
    for key, value in _versions():
        h.update(f"{key}={value}\0".encode())
    for name, path in _baked_files(root).items():
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


@functools.cache
def _stamp() -> str:
    """This process's source stamp (computed once: the source does not change under a
    running process that has compiled it)."""
    return _source_stamp(_ROOT)


def baked_modules() -> list[str]:
    """The names of the modules whose source keys the compile cache, sorted."""
    return list(_baked_files(_ROOT))


class _BakedStampMixin:
    """A cache locator whose source stamp covers every baked module and the versions,
    besides (numba's own stamp) the function's own source file."""

    def get_source_stamp(self) -> tuple[str, Any]:
        return _stamp(), super().get_source_stamp()  # type: ignore[misc]


class _UserProvidedLocator(_BakedStampMixin, caching.UserProvidedCacheLocator):
    """``$NUMBA_CACHE_DIR``, if set."""


class _InTreeLocator(_BakedStampMixin, caching.InTreeCacheLocator):
    """The ``__pycache__`` beside the source, if writable."""


class _UserWideLocator(_BakedStampMixin, caching.UserWideCacheLocator):
    """The user-wide cache directory (a read-only install)."""


class _BakedCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_UserProvidedLocator, _InTreeLocator, _UserWideLocator]


class BakedFunctionCache(caching.FunctionCache):
    """numba's per-function cache, keyed on :func:`baked_modules` and the versions."""

    _impl_class = _BakedCacheImpl


def _jit(func: F, options: dict[str, Any], cached: bool) -> F:
    disp = numba.njit(**options)(func)
    if cached and isinstance(disp, Dispatcher):  # not under NUMBA_DISABLE_JIT=1
        # what Dispatcher.enable_caching() does, with the keyed cache
        disp._cache = BakedFunctionCache(disp.py_func)
    return disp


def inline(func: F) -> F:
    """A hot-path function, inlined into its (single) caller by numba."""
    return _jit(func, {**_OPTIONS, "inline": "always"}, cached=False)


def outline(func: F) -> F:
    """A rare-path function, compiled as a function of its own."""
    return _jit(func, _OPTIONS, cached=False)


def njit_cached(func: F) -> F:
    """An entry point called from Python, compiled with everything it calls and kept
    in the keyed on-disk cache."""
    return _jit(func, _OPTIONS, cached=True)


def is_cached(dispatcher: Any) -> bool:
    """Whether the on-disk cache holds compiled code of *dispatcher* for the current
    source and versions (False: its first call compiles it).  True for a plain Python
    function (``NUMBA_DISABLE_JIT=1``: nothing to compile)."""
    if not isinstance(dispatcher, Dispatcher):
        return True
    cache = getattr(dispatcher, "_cache", None)
    if not isinstance(cache, caching.Cache):
        return False
    return bool(cache._cache_file._load_index())
