"""epcsim: know what enclaves will do under SGX EPC limits before anyone boots a kernel.

An executable model of the Linux SGX EPC cgroup (misc ``sgx_epc``, the unmerged v16/v17
series) and its reclaimer, driven by a discrete-event simulator.

Public API: :func:`run` (a scenario in, a :class:`Result` out), :func:`load_scenario`,
:func:`list_builtins`, :class:`Scenario`, :class:`Result`, :class:`Host` (the kernel
model itself), :func:`check_invariants`, and the exceptions.  The simulator-side names
are imported on first use, so ``import epcsim.kernel`` stays light.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

from .errors import (
    EngineMismatchError,
    EpcsimError,
    EpcsimUsageError,
    HostConfigError,
    ScenarioError,
)
from .kernel import Host, check_invariants

if TYPE_CHECKING:
    from .api import run
    from .scenario import Scenario, list_builtins, load_scenario
    from .sim import Result

_LAZY = {
    "run": ("api", "run"),
    "Scenario": ("scenario", "Scenario"),
    "list_builtins": ("scenario", "list_builtins"),
    "load_scenario": ("scenario", "load_scenario"),
    "Result": ("sim", "Result"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'epcsim' has no attribute {name!r}")


__all__ = [
    "EngineMismatchError",
    "EpcsimError",
    "EpcsimUsageError",
    "Host",
    "HostConfigError",
    "Result",
    "Scenario",
    "ScenarioError",
    "__version__",
    "check_invariants",
    "list_builtins",
    "load_scenario",
    "run",
]
