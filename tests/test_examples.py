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


SCENARIOS = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_example_scenario_validates(path: Path) -> None:
    """Each ``examples/*.toml`` loads as ``epcsim validate`` loads it."""
    from epcsim.scenario import load_scenario

    assert load_scenario(str(path)).name == path.stem
