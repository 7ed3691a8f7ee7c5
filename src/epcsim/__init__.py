"""epcsim: know what enclaves will do under SGX EPC limits before anyone boots a kernel.

An executable model of the Linux SGX EPC cgroup (misc ``sgx_epc``, the unmerged v16/v17
series) and its reclaimer.
"""

from .errors import EpcsimError, EpcsimUsageError, HostConfigError
from .kernel import Host, check_invariants

__version__ = "0.1.0"

__all__ = [
    "EpcsimError",
    "EpcsimUsageError",
    "Host",
    "HostConfigError",
    "__version__",
    "check_invariants",
]
