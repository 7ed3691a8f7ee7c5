"""Scenarios: TOML files validated with pydantic (``docs/SIM_CONTRACT.md``)."""

from .limits import MemoryEstimateWarning, estimate_memory
from .schema import Scenario, list_builtins, load_scenario

__all__ = [
    "MemoryEstimateWarning",
    "Scenario",
    "estimate_memory",
    "list_builtins",
    "load_scenario",
]
