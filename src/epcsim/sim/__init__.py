"""The discrete-event simulator: virtual time, actors, the cost model.

``simulate(scenario)`` runs a :class:`~epcsim.scenario.Scenario` on the kernel model
and returns a :class:`~epcsim.result.Result`.
"""

from ..costs import CostModel
from ..result import Result
from .engine import Simulation, simulate

__all__ = ["CostModel", "Result", "Simulation", "simulate"]
