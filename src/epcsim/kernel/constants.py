"""Constants of the SGX driver and the misc controller (sgx.h, encl.h; SGX_CG_* of v16 patch 10).

Models the constants of ``arch/x86/kernel/cpu/sgx/sgx.h``, ``encl.h``, ``epc_cgroup.h``
and ``kernel/cgroup/misc.c``, keeping the kernel's names.
"""

from __future__ import annotations

import errno as _errno

PAGE_SIZE = 4096
PAGE_SHIFT = 12

#: Max pages isolated per sgx_reclaim_pages() call; nr_to_scan of async/global/direct.
SGX_NR_TO_SCAN = 16
#: Global low watermark: the allocator wakes ksgxd when free pages drop below it.
SGX_NR_LOW_PAGES = 32
#: ksgxd keeps reclaiming while free pages are below this.
SGX_NR_HIGH_PAGES = 64
#: Per-cgroup headroom kept below the effective limit by async/direct reclaim.
SGX_CG_MIN_FREE_PAGE = SGX_NR_LOW_PAGES
#: At or below this effective limit (pages) no headroom is kept.
SGX_CG_LOW_LIMIT = 4 * SGX_CG_MIN_FREE_PAGE
#: Version slots per VA page; a new VA page every 512 page_cnt increments.
SGX_VA_SLOT_COUNT = 512
#: PCMD entries per page (each 128 bytes).
SGX_PCMD_PER_PAGE = 32
PCMD_SIZE = PAGE_SIZE // SGX_PCMD_PER_PAGE
#: Bytes of shmem backing an evicted page costs in its memcg: the page plus its PCMD.
SGX_BACKING_BYTES_PER_PAGE = PAGE_SIZE + PCMD_SIZE
SGX_MAX_EPC_SECTIONS = 8
SGX_EEXTEND_BLOCK_SIZE = 256
#: Number of EEXTENDs per measured page.
SGX_EEXTENDS_PER_PAGE = PAGE_SIZE // SGX_EEXTEND_BLOCK_SIZE

#: misc MAX_NUM / U64_MAX: the default ``max`` of every misc cgroup, printed "max".
MAX_NUM = (1 << 64) - 1
U64_MAX = MAX_NUM
MAX_STR = "max"
#: memcg PAGE_COUNTER_MAX (pages) as seen on a 64-bit kernel: LONG_MAX / PAGE_SIZE.
PAGE_COUNTER_MAX = ((1 << 63) - 1) // PAGE_SIZE

#: The misc resource this model implements, and ``misc_res_name[]`` of the kernel the
#: series applies to (v6.11: sev, sev_es, and sgx_epc from patch 04; tdx came in 2025).
SGX_EPC_RES = "sgx_epc"
MISC_RES_NAMES = ("sev", "sev_es", SGX_EPC_RES)

# enum sgx_reclaim (patch 01)
SGX_NO_RECLAIM = 0
SGX_DO_RECLAIM = 1

# struct sgx_epc_page flags
#: Page is owned by the reclaim machinery: on an LRU or isolated by a reclaimer.
SGX_EPC_PAGE_RECLAIMER_TRACKED = 1 << 0
#: Page is on a free list.
SGX_EPC_PAGE_IS_FREE = 1 << 1

# Page types (SDM; enum sgx_page_type)
SGX_PAGE_TYPE_SECS = 0
SGX_PAGE_TYPE_TCS = 1
SGX_PAGE_TYPE_REG = 2
SGX_PAGE_TYPE_VA = 3
SGX_PAGE_TYPE_TRIM = 4
PAGE_TYPE_NAMES = {0: "SECS", 1: "TCS", 2: "REG", 3: "VA", 4: "TRIM"}

# struct sgx_encl flags
SGX_ENCL_IOCTL = 1 << 0
SGX_ENCL_DEBUG = 1 << 1
SGX_ENCL_CREATED = 1 << 2
SGX_ENCL_INITIALIZED = 1 << 3
#: not in v16: the dropped OOM design's mark of an enclave the EPC OOM killer took
#: (v2 patch 14, 2022-12-02; renamed SGX_ENCL_NO_MEMORY in v5); set only by the
#: ``oom-v2`` policy
SGX_ENCL_OOM = 1 << 4

#: ERESTARTSYS (include/linux/errno.h); Python's errno module does not have it.
ERESTARTSYS = 512

EPERM = _errno.EPERM
ENOENT = _errno.ENOENT
ESRCH = _errno.ESRCH
EINTR = _errno.EINTR
EFAULT = _errno.EFAULT
EBUSY = _errno.EBUSY
EEXIST = _errno.EEXIST
EINVAL = _errno.EINVAL
ENOMEM = _errno.ENOMEM
EACCES = _errno.EACCES
ERANGE = _errno.ERANGE
EAGAIN = _errno.EAGAIN
ENOTDIR = _errno.ENOTDIR
EOPNOTSUPP = _errno.EOPNOTSUPP

# vm_fault_t results of the fault handlers (include/linux/mm_types.h), as the model
# reports them.  VM_FAULT_NOPAGE is what a successful SGX fault returns too (the PFN is
# inserted by the handler); the model distinguishes "resolved" from "retry".
VM_FAULT_OOM = 0x0001
VM_FAULT_SIGBUS = 0x0002
VM_FAULT_NOPAGE = 0x0100
VM_FAULT_RETRY = 0x0400
ENODEV = _errno.ENODEV

# Bits of the model's per-enclave-page ``desc`` (encl.h keeps BEING_RECLAIMED in desc
# bit 3 and the accessed bit lives in the PTE; PRESENT = "has an entry in page_array").
DESC_PRESENT = 1 << 0  #: the page has an ``sgx_encl_page`` in ``page_array``
DESC_ACCESSED = 1 << 1  #: the PTE accessed bit (one mm per enclave in the model)
DESC_BEING_RECLAIMED = 1 << 3  #: SGX_ENCL_PAGE_BEING_RECLAIMED
DESC_BLOCKED = 1 << 4  #: PTEs zapped and EBLOCKed (reclaim phase 3); accesses fault
