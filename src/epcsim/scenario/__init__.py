"""Scenarios: TOML files validated with pydantic (``docs/SIM_CONTRACT.md``)."""

from .schema import Scenario, list_builtins, load_scenario

__all__ = ["Scenario", "list_builtins", "load_scenario"]
