"""The cost model: how long each modelled operation takes in virtual time (ns).

Published figures give about 40K cycles per EPC page swap (VAULT, ASPLOS 2018)
and "50k+ cycles" for a successful EINIT (ioctl.c comment); no per-instruction cost of
EWB/ELDU/EBLOCK/ETRACK is published.  The defaults below split the ~40K-cycle swap
(13.3 us at 3 GHz) over its parts: fault round trip 3 us + ELDU 5 us + EWB 4 us +
EBLOCK 0.5 us + a share of ETRACK/IPI and of the batch overhead ~ 13.3 us.  Every
time-derived figure epcsim reports is therefore an *estimate from this cost model*;
``docs/COSTS.md`` has the table.  Every entry can be overridden per scenario
(``[host.costs]``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from .kernel import encls

__all__ = ["CostModel", "COST_SOURCES"]


class CostModel(BaseModel):
    """Durations in nanoseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: one access to a resident enclave page (trace element; MEE-protected memory)
    access: int = 50
    #: a page fault round trip: AEX, kernel entry/exit, ERESUME (also a retried fault)
    fault: int = 3_000
    ecreate: int = 10_000
    #: EADD of one page (copy + add)
    eadd: int = 2_000
    #: one EEXTEND (256 bytes); 16 per measured page
    eextend: int = 250
    #: EINIT: "50k+ cycles" at 3 GHz
    einit: int = 17_000
    eremove: int = 500
    eaug: int = 1_000
    eldu: int = 5_000
    eblock: int = 500
    #: ETRACK plus the IPI round that kicks the enclave's threads out
    etrack: int = 3_000
    ewb: int = 4_000
    emodpr: int = 1_000
    emodt: int = 1_000
    #: fixed overhead of one sgx_reclaim_pages() batch (locking, PTE zapping)
    reclaim_batch: int = 2_000
    #: one step of a kernel loop that did nothing measurable (cond_resched)
    kernel_step: int = 100
    #: one list entry examined by a reclaim scan that is not one of the series' batches
    #: (the external baseline ``global-lru`` only: v16 never pays it, its 16-page
    #: isolation is in ``reclaim_batch``)
    lru_scan: int = 100

    @field_validator("access")
    @classmethod
    def _access_takes_time(cls, v: int) -> int:
        # a run of hits is cut at the next event by (next - now) // access
        if v < 1:
            raise ValueError("must be > 0 (each access takes virtual time)")
        return v

    def leaf_costs(self) -> list[int]:
        """Cost per ENCLS leaf, indexed like ``host.encls_count``."""
        out = [0] * encls.NR_LEAVES
        for i, name in enumerate(encls.LEAF_NAMES):
            out[i] = getattr(self, name.lower())
        return out


#: where each default comes from (rendered in docs/COSTS.md and the report)
COST_SOURCES = {
    "access": "assumption: ~50 ns per access to MEE-protected memory",
    "fault": "assumption: AEX + #PF handling + ERESUME, ~9K cycles at 3 GHz",
    "ecreate": "assumption",
    "eadd": "assumption: 4 KiB copy into the EPC plus EADD",
    "eextend": "assumption: 16 per measured page",
    "einit": "sgx_encl_init() comment in ioctl.c: EINIT takes 50k+ cycles",
    "eremove": "assumption",
    "eaug": "assumption",
    "eldu": "share of the ~40K-cycle page swap (VAULT, ASPLOS 2018)",
    "eblock": "share of the ~40K-cycle page swap",
    "etrack": "share of the swap: ETRACK + IPI round, once per enclave per batch",
    "ewb": "share of the ~40K-cycle page swap (VAULT, ASPLOS 2018)",
    "emodpr": "assumption",
    "emodt": "assumption",
    "reclaim_batch": "assumption: per-batch locking and PTE zapping",
    "kernel_step": "assumption",
    "lru_scan": "assumption: one list entry examined under the LRU lock, a cache miss on "
    "struct sgx_epc_page and one on its cgroup (~300 cycles at 3 GHz); paid per page "
    "scanned by the global-lru baseline only",
}
