"""docs/ARCHITECTURE.md's table "Each kernel function in both engines" stays true.

Every row names a kernel function and the ``epcsim.kernel`` module that models it (and,
where the model's function has another name, that name: ``ksgxd()`` loop body →
``reclaim.py: ksgxd_step``).  Each named function must be defined in that module, as a
module function or a method (``EpcList.add_tail``); a kernel ``__foo()`` is ``_foo`` in
the model (``docs/ARCHITECTURE.md``, "The kernel model").  The module is parsed, not
imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KERNEL = ROOT / "src" / "epcsim" / "kernel"
HEADING = "## Each kernel function in both engines"


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first table after :data:`HEADING`, as cells."""
    rows: list[list[str]] = []
    section = text.split(HEADING, 1)[1]
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # header and rule


def defined(module: Path) -> set[str]:
    """Module functions and ``Class.method`` names defined in *module*."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out.add(node.name)
        elif isinstance(node, ast.ClassDef):
            out |= {f"{node.name}.{f.name}" for f in node.body if isinstance(f, ast.FunctionDef)}
    return out


def reference_names(kernel_cell: str, reference_cell: str) -> tuple[str, list[str]]:
    """(module file, model function names) of one row."""
    module, _, names = reference_cell.partition(":")
    (file,) = re.findall(r"`(\w+\.py)`", module)
    if names:
        return file, re.findall(r"`([\w.]+)`", names)
    kernel = re.findall(r"`(\w+)\(\)`", kernel_cell)
    return file, [re.sub(r"^__", "_", k) for k in kernel]


ROWS = table_rows((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))


def test_the_table_is_found() -> None:
    kernel = {r[0] for r in ROWS}
    assert len(ROWS) >= 30
    assert "`sgx_vma_fault()`" in kernel
    assert "`sgx_reclaimer_block()` (phase 3)" in kernel


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r[0])
def test_the_reference_column_names_model_functions(row: list[str]) -> None:
    file, names = reference_names(row[0], row[1])
    assert names, row
    missing = set(names) - defined(KERNEL / file)
    assert missing == set(), f"{file} does not define {sorted(missing)}"


def test_a_wrong_row_is_found() -> None:
    """The check can fail: a function the module does not define."""
    file, names = reference_names("`sgx_reclaimer_block()`", "`encl.py`")
    assert (file, names) == ("encl.py", ["sgx_reclaimer_block"])
    assert "sgx_reclaimer_block" not in defined(KERNEL / file)
    assert reference_names("`__sgx_alloc_epc_page()`", "`epc.py`")[1] == ["_sgx_alloc_epc_page"]
