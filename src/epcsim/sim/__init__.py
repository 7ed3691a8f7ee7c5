"""The discrete-event simulator: virtual time, actors, the cost model.

``simulate(scenario)`` runs a :class:`~epcsim.scenario.Scenario` on the kernel model
and returns a :class:`~epcsim.sim.result.Result`.
"""

from .costs import CostModel
from .engine import Simulation, simulate
from .result import Result

__all__ = ["CostModel", "Result", "Simulation", "simulate"]
