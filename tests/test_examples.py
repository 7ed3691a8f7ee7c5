"""Examples run as tests: each ``examples/*.py`` with a sibling ``.out`` must print it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_output(script: Path) -> None:
    expected = script.with_suffix(".out")
    assert expected.exists(), f"{script.name} has no expected output {expected.name}"
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert out == expected.read_text()
