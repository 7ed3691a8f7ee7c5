"""The compiled engine's on-disk compile cache is keyed on everything the compiled code
bakes in: the source of every module it is built from or takes values from, and the
Python, numba, numpy and llvmlite versions (:mod:`epcsim.compiled._jit`)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import llvmlite
import numba
import numpy as np
import pytest

import epcsim

PACKAGE = Path(epcsim.__file__).resolve().parent

#: Python the compiled engine runs but does not compile (must not key the cache)
ENGINE_SIDE = {
    "epcsim.compiled",
    "epcsim.compiled.engine",
    "epcsim.compiled.eligibility",
    "epcsim.compiled.twins",
    "epcsim.sim.engine",
    "epcsim.sim.progress",
    "epcsim.api",
    "epcsim.cli",
}


@pytest.fixture
def jit() -> ModuleType:
    """The module under test (imported here, so that the slow test below can run, and
    fail, against a tree without it)."""
    from epcsim.compiled import _jit

    return _jit


def _copy_package(tmp_path: Path) -> Path:
    """A copy of the epcsim package at ``tmp_path/src/epcsim`` (no caches)."""
    dest = tmp_path / "src" / "epcsim"
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.nb[ic]"))
    return dest


def _module_path(root: Path, name: str) -> Path:
    base = root.joinpath(*name.split(".")[1:])
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"


def _core_modules() -> set[str]:
    """The compiled core's modules: the ``compiled`` package minus its engine-side
    Python."""
    names = set()
    for path in (PACKAGE / "compiled").glob("*.py"):
        name = f"epcsim.compiled.{path.stem}"
        if path.stem != "__init__" and name not in ENGINE_SIDE:
            names.add(name)
    return names


# --- which modules key the cache ---------------------------------------------------------


def test_baked_modules_cover_the_core_and_what_it_takes_values_from(jit: ModuleType) -> None:
    baked = jit.baked_modules()
    assert baked == sorted(set(baked))
    assert {"epcsim.kernel.constants", "epcsim.kernel.encls", "epcsim.kernel.epc"} <= set(baked)
    assert _core_modules() <= set(baked)
    assert not set(baked) & ENGINE_SIDE
    # only the kernel model and the compiled code: the scenario, report and simulator
    # layers are Python the compiled code never reads
    assert all(n.startswith(("epcsim.kernel.", "epcsim.compiled.")) for n in baked), baked


def test_baked_modules_follow_a_new_import(jit: ModuleType, tmp_path: Path) -> None:
    """Derived, not listed: a module a baked module starts importing keys the cache."""
    root = _copy_package(tmp_path)
    assert "epcsim.kernel.host" not in jit._baked_files(root)
    with (root / "kernel" / "constants.py").open("a") as f:
        f.write("\nfrom .host import Host  # noqa: E402,F401\n")
    assert "epcsim.kernel.host" in jit._baked_files(root)


def test_imports_under_type_checking_or_in_functions_do_not_count(
    jit: ModuleType, tmp_path: Path
) -> None:
    root = _copy_package(tmp_path)
    with (root / "kernel" / "constants.py").open("a") as f:
        f.write(
            "\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from .host import Host\n"
            "def _late():\n    from .virt import SgxVepc\n"
        )
    baked = jit._baked_files(root)
    assert "epcsim.kernel.host" not in baked and "epcsim.kernel.virt" not in baked


def test_the_fast_import_reader_agrees_with_a_full_parse(jit: ModuleType) -> None:
    """The stamp reads top-level import lines instead of parsing each module whole; on
    every module of the package both give the same statements."""
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        fast = [ast.dump(n) for n in jit._module_level_imports(source)]
        full = [ast.dump(n) for n in jit._parsed_module_level_imports(source)]
        assert fast == full, path
    tricky = (
        '"""Doc.\nfrom the docstring (not an import)\n"""\n'
        "try:\n    from . import a\nexcept ImportError:\n    from . import b\n"
        "if X:\n    import c\nelse:\n    import d\n"
    )
    assert [ast.dump(n) for n in jit._module_level_imports(tricky)] == [
        ast.dump(ast.parse(s).body[0])
        for s in ("from . import a", "from . import b", "import c", "import d")
    ]


# --- what changes the stamp --------------------------------------------------------------


def test_the_stamp_changes_with_each_baked_modules_source(jit: ModuleType, tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    baked = list(jit._baked_files(root))
    assert baked == jit.baked_modules()
    base = jit._source_stamp(root)
    assert jit._source_stamp(root) == base
    for name in baked:
        path = _module_path(root, name)
        text = path.read_text()
        path.write_text(text + "\n# an edit\n")
        assert jit._source_stamp(root) != base, name
        path.write_text(text)
    assert jit._source_stamp(root) == base
    # engine-side Python does not key the cache
    engine = root / "compiled" / "engine.py"
    engine.write_text(engine.read_text() + "\n# an edit\n")
    assert jit._source_stamp(root) == base


def test_the_stamp_of_a_changed_kernel_constant(jit: ModuleType, tmp_path: Path) -> None:
    root = _copy_package(tmp_path)
    base = jit._source_stamp(root)
    constants = root / "kernel" / "constants.py"
    text = constants.read_text()
    assert "SGX_NR_HIGH_PAGES = 64\n" in text
    constants.write_text(text.replace("SGX_NR_HIGH_PAGES = 64\n", "SGX_NR_HIGH_PAGES = 96\n"))
    assert jit._source_stamp(root) != base


@pytest.mark.parametrize(
    ("module", "attr"),
    [(sys, "version"), (numba, "__version__"), (np, "__version__"), (llvmlite, "__version__")],
)
def test_the_stamp_changes_with_each_version(
    jit: ModuleType, monkeypatch: pytest.MonkeyPatch, module: ModuleType, attr: str
) -> None:
    base = jit._source_stamp(jit._ROOT)
    monkeypatch.setattr(module, attr, getattr(module, attr) + ".1")
    assert jit._source_stamp(jit._ROOT) != base


# --- where the files go, and the cache keyed through numba -------------------------------


def _tiny_module(directory: Path, expr: str = "x + 1") -> ModuleType:
    """A module in *directory* with one cached entry point, ``add1`` (returning
    *expr*)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tinymod.py"
    path.write_text(
        "from epcsim.compiled._jit import njit_cached\n\n\n"
        f"@njit_cached\ndef add1(x):\n    return {expr}\n"
    )
    spec = importlib.util.spec_from_file_location("tinymod", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_numba_cache_dir_is_honoured(
    jit: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "nbcache"))
    mod = _tiny_module(tmp_path / "pkg")
    assert isinstance(mod.add1._cache._impl.locator, jit._UserProvidedLocator)
    assert mod.add1._cache.cache_path.startswith(str(tmp_path / "nbcache"))
    assert jit.is_cached(mod.add1) is False
    assert mod.add1(41) == 42
    assert jit.is_cached(mod.add1) is True
    assert list((tmp_path / "nbcache").rglob("*.nbi"))
    assert not (tmp_path / "pkg" / "__pycache__").exists() or not list(
        (tmp_path / "pkg" / "__pycache__").glob("*.nbi")
    )


def test_a_read_only_package_falls_back_to_the_user_wide_directory(
    jit: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    # the in-tree __pycache__ cannot be written (a file in its place: root ignores modes)
    (pkg / "__pycache__").write_text("")
    os.chmod(pkg, 0o555)
    try:
        mod = _tiny_module(pkg)
    finally:
        os.chmod(pkg, 0o755)
    assert isinstance(mod.add1._cache._impl.locator, jit._UserWideLocator)
    assert mod.add1._cache.cache_path.startswith(str(tmp_path / "xdg" / "numba"))
    assert mod.add1(1) == 2
    assert jit.is_cached(mod.add1) is True


def test_a_writable_package_caches_in_tree(
    jit: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    mod = _tiny_module(tmp_path / "pkg")
    assert isinstance(mod.add1._cache._impl.locator, jit._InTreeLocator)
    assert mod.add1._cache.cache_path == str(tmp_path / "pkg" / "__pycache__")


def test_a_new_stamp_misses_the_old_entry(
    jit: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through numba's own loader: code cached under one stamp is not loaded under
    another (it is compiled again), and is loaded under the same one."""
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "nbcache"))
    first = _tiny_module(tmp_path / "pkg").add1
    assert first(1) == 2 and first.stats.cache_misses and not first.stats.cache_hits
    again = _tiny_module(tmp_path / "pkg").add1
    assert jit.is_cached(again) is True
    assert again(1) == 2 and again.stats.cache_hits and not again.stats.cache_misses
    monkeypatch.setattr(jit, "_stamp", lambda: "another source")
    changed = _tiny_module(tmp_path / "pkg").add1
    assert jit.is_cached(changed) is False
    assert changed(1) == 2 and changed.stats.cache_misses and not changed.stats.cache_hits


def test_the_entry_points_own_file_keys_it_too(
    jit: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An entry point outside the package (or one the import walk missed) is still
    keyed on its own source, as numba's stamp is."""
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "nbcache"))
    first = _tiny_module(tmp_path / "pkg").add1
    assert first(1) == 2 and jit.is_cached(first)
    edited = _tiny_module(tmp_path / "pkg", "x + 10").add1
    assert jit.is_cached(edited) is False
    assert edited(1) == 11


def test_only_entry_points_are_cached(jit: ModuleType) -> None:
    """Functions an entry point calls are compiled into it: no cache of their own
    (one with numba's stamp could be loaded stale into a fresh compile)."""
    from numba.core.caching import NullCache

    from epcsim.sim import progress

    core = _core_entry_module()
    assert isinstance(core.run_core._cache, jit.BakedFunctionCache)
    for name in dir(core):
        disp = getattr(core, name)
        if isinstance(disp, numba.core.dispatcher.Dispatcher) and name != "run_core":
            assert isinstance(disp._cache, NullCache), name
    assert (
        jit.is_cached(lambda: None) is True
    )  # plain Python (NUMBA_DISABLE_JIT=1): nothing to compile
    assert progress.compiled_core_cached() is jit.is_cached(core.run_core)


def _core_entry_module() -> ModuleType:
    """The module that defines ``run_core``."""
    import importlib

    return importlib.import_module("epcsim.compiled.loop")


# --- the end-to-end test ---------------------------------------------------------

#: thrashing under ksgxd only (footprint 4x the EPC): the watermarks shape every run
KSGXD = """\
name = "ksgxd"
[host]
duration = "100s"
sample_interval = "1ms"
seed = 1
cpus = 1
epc = "1024KiB"
[[cgroup]]
path = "/t"
max = "max"
[[enclave]]
name = "e"
cgroup = "/t"
build = "eaug"
size = "4096KiB"
workload = { pattern = "zipf", alpha = 0.9, accesses = 5000 }
"""


@pytest.mark.slow
def test_an_edited_kernel_constant_is_compiled_afresh(tmp_path: Path) -> None:
    """Warm the cache of a copy of the package, edit a constant the core bakes in
    (SGX_NR_HIGH_PAGES 64 -> 96) and check the engines: equal, and the compiled engine
    ran.  (On a tree whose cache is stamped with the core's own file only, the stale
    code runs and the check exits 3.)"""
    root = _copy_package(tmp_path)
    scenario = tmp_path / "ksgxd.toml"
    scenario.write_text(KSGXD)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root.parent)
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "nbcache")
    env.pop("NUMBA_DISABLE_JIT", None)

    def run(engine: str, out: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "epcsim", "run", str(scenario), "--engine", engine]
        argv += ["--out", str(tmp_path / out), "--quiet"]
        return subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path)

    warm = run("compiled", "warm")
    assert warm.returncode == 0, warm.stderr
    assert json.loads((tmp_path / "warm" / "run.json").read_text())["engine"] == "compiled"
    assert list((tmp_path / "nbcache").rglob("*.nbi"))

    constants = root / "kernel" / "constants.py"
    text = constants.read_text()
    assert "SGX_NR_HIGH_PAGES = 64\n" in text
    constants.write_text(text.replace("SGX_NR_HIGH_PAGES = 64\n", "SGX_NR_HIGH_PAGES = 96\n"))

    check = run("check", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads((tmp_path / "check" / "run.json").read_text())["engine"] == "compiled"
