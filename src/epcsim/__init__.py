"""epcsim: know what enclaves will do under SGX EPC limits before anyone boots a kernel.

An executable model of the Linux SGX EPC cgroup (misc ``sgx_epc``, the unmerged v16/v17
series) and its reclaimer, driven by a discrete-event simulator.

Public API: :func:`run` (a scenario in, a :class:`Result` out), :func:`load_scenario`,
:func:`list_builtins`, :class:`Scenario`, :class:`Result`, :class:`Host` (the kernel
model itself), :func:`check_invariants`, and the exceptions.
"""

__version__ = "0.2.0"

from .api import run
from .errors import EpcsimError, EpcsimUsageError, HostConfigError, ScenarioError
from .kernel import Host, check_invariants
from .scenario import Scenario, list_builtins, load_scenario
from .sim import Result

__all__ = [
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
