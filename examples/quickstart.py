"""Quickstart: a host, a cgroup with an EPC limit, an enclave that outgrows it.

Builds a host with 16 MiB of EPC, a cgroup ``/tenant`` limited to 1 MiB (256 pages),
and one process whose enclave adds 2 MiB of pages.  The synchronous charge loop keeps
the cgroup under its limit by reclaiming 16-page batches; every failed charge attempt
is a ``max`` event.  Prints the interface files as ``cat`` would.
"""

from epcsim.kernel import Host, check_invariants, drive, ioctl

host = Host("16MiB")
fs = host.fs
fs.write("/cgroup.subtree_control", "+misc +memory")
fs.mkdir("/tenant")
fs.write("/tenant/misc.max", "sgx_epc 1048576")

proc = host.spawn("/tenant")
encl = ioctl.sgx_open(host, proc)
drive(ioctl.ioc_enclave_create(host, proc, encl, 4 << 20))
added = drive(ioctl.ioc_enclave_add_pages(host, proc, encl, 0, 2 << 20))
ioctl.ioc_enclave_init(host, proc, encl)
check_invariants(host, quiescent=True)

print(f"added {added // 4096} pages; {encl.nr_evicted} evicted, {encl.nr_resident} resident")
for name in ("misc.capacity",):
    print(f"/{name}: {fs.read('/' + name)}", end="")
for name in ("misc.max", "misc.current", "misc.peak", "misc.events"):
    print(f"/tenant/{name}: {fs.read('/tenant/' + name)}", end="")
print(f"/tenant/memory.current: {fs.read('/tenant/memory.current')}", end="")
