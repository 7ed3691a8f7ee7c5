"""ENCLS leaves, one named step each (as ``encls.h`` wraps each hardware leaf).

The model does not emulate the instructions; each leaf only counts itself in
``host.encls_count`` so that the simulator's cost model can charge time by leaf.
"""

from __future__ import annotations

__all__ = [
    "ECREATE",
    "EADD",
    "EEXTEND",
    "EINIT",
    "EREMOVE",
    "EAUG",
    "ELDU",
    "EBLOCK",
    "ETRACK",
    "EWB",
    "EMODPR",
    "EMODT",
    "LEAF_NAMES",
    "NR_LEAVES",
]

ECREATE = 0  #: create the SECS
EADD = 1  #: add a page (ADD_PAGES)
EEXTEND = 2  #: measure 256 bytes (16 per measured page)
EINIT = 3  #: initialise the enclave
EREMOVE = 4  #: remove a page from the EPC
EAUG = 5  #: SGX2: add a page on demand
ELDU = 6  #: load an evicted page back
EBLOCK = 7  #: block a page before eviction
ETRACK = 8  #: start TLB tracking for an enclave (+ IPIs when threads are inside)
EWB = 9  #: write a page back (evict)
EMODPR = 10  #: SGX2: restrict permissions
EMODT = 11  #: SGX2: change page type
NR_LEAVES = 12
LEAF_NAMES = (
    "ECREATE",
    "EADD",
    "EEXTEND",
    "EINIT",
    "EREMOVE",
    "EAUG",
    "ELDU",
    "EBLOCK",
    "ETRACK",
    "EWB",
    "EMODPR",
    "EMODT",
)
