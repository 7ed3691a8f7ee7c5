"""Tests of the cgroup v2 filesystem boundary (``host.fs``) and the cgroup core model.

Which interface files exist where and their exact text (kernel/cgroup/misc.c), the errno of
every failing read/write/mkdir/rmdir and the Python exception class it maps to,
``cgroup.procs`` moves (charges never move: "Migration" in sgx.rst, v16 patch 15),
``cgroup.subtree_control`` rules (cgroup_subtree_control_write(), kernel/cgroup/cgroup.c),
``memory.max`` parsing, rmdir of a cgroup whose css still has charged EPC pages (each page
pins its css, v16 patch 5; sgx_cgroup_misc_free(), v16 patch 9) and ``cgroup_disable=misc``
(every task resolves to the root misc cgroup).
"""

from __future__ import annotations

import errno

import pytest

from epcsim.kernel import Host, check_invariants, drive, ioctl, task_exit
from epcsim.kernel.constants import PAGE_SIZE
from epcsim.kernel.misc import MiscCg

P = PAGE_SIZE
ENCL_SIZE = 1 << 20

ROOT_FILES = [
    "cgroup.controllers",
    "cgroup.procs",
    "cgroup.subtree_control",
    "misc.capacity",
    "misc.current",
    "misc.peak",
]
MISC_CHILD_FILES = [
    "misc.current",
    "misc.events",
    "misc.events.local",
    "misc.max",
    "misc.peak",
]
MEMORY_CHILD_FILES = ["memory.current", "memory.events", "memory.max"]
CORE_FILES = ["cgroup.controllers", "cgroup.procs", "cgroup.subtree_control"]


# --- helpers ------------------------------------------------------------------------------


def make_host(epc: str = "1MiB", *dirs: str, root_ctrl: str = "+misc +memory", **kw) -> Host:
    h = Host(epc, **kw)
    if root_ctrl:
        h.fs.write("/cgroup.subtree_control", root_ctrl)
    for d in dirs:
        h.fs.mkdir(d)
    return h


def new_enclave(h: Host, task, npages: int = 0):
    e = ioctl.sgx_open(h, task)
    drive(ioctl.ioc_enclave_create(h, task, e, ENCL_SIZE))
    if npages:
        drive(ioctl.ioc_enclave_add_pages(h, task, e, 0, npages * P))
    return e


def files(h: Host, path: str) -> list[str]:
    return [n for n in h.fs.listdir(path) if "." in n]


def raises_errno(code: int, fn, *args, **kw) -> OSError:
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    assert ei.value.errno == code, ei.value
    return ei.value


def misc_css(h: Host, path: str) -> MiscCg:
    cg = h.cgroup(path).misc
    assert cg is not None
    return cg


# --- which files exist where (misc_cg_files of kernel/cgroup/misc.c) ------------------------------


def test_root_files():
    """misc.c (misc_cg_files): the root has misc.capacity, misc.current and misc.peak; no misc.max,
    misc.events or misc.events.local; no memory.* interface files."""
    h = Host("1MiB")
    assert files(h, "/") == ROOT_FILES
    for name in ("misc.max", "misc.events", "misc.events.local", "memory.max"):
        assert not h.fs.exists("/" + name)
        raises_errno(errno.ENOENT, h.fs.read, "/" + name)
    # enabling controllers at the root adds nothing at the root itself
    h.fs.write("/cgroup.subtree_control", "+misc +memory")
    assert files(h, "/") == ROOT_FILES


def test_child_files_with_misc_and_memory():
    """misc.c (misc_cg_files): a non-root cgroup whose parent enables misc has current, peak, max,
    events, events.local, and no misc.capacity; memory.* where the parent enables
    memory."""
    h = make_host("1MiB", "/a")
    assert files(h, "/a") == CORE_FILES + MEMORY_CHILD_FILES + MISC_CHILD_FILES
    assert not h.fs.exists("/a/misc.capacity")
    raises_errno(errno.ENOENT, h.fs.read, "/a/misc.capacity")
    assert h.fs.exists("/a")
    assert h.fs.exists("/sys/fs/cgroup/a/misc.max")


def test_child_files_per_controller():
    """cgroup_subtree_control_write() (kernel/cgroup/cgroup.c): files follow the parent's
    subtree_control: misc only, memory only, none."""
    h = make_host("1MiB", "/m", root_ctrl="+misc")
    assert files(h, "/m") == CORE_FILES + MISC_CHILD_FILES
    h = make_host("1MiB", "/m", root_ctrl="+memory")
    assert files(h, "/m") == CORE_FILES + MEMORY_CHILD_FILES
    h = make_host("1MiB", "/m", root_ctrl="")
    assert files(h, "/m") == CORE_FILES


def test_listdir_lists_files_then_children():
    h = make_host("1MiB", "/a", "/b", "/a/x")
    assert h.fs.listdir("/") == ROOT_FILES + ["a", "b"]
    assert h.fs.listdir("/a")[-1] == "x"
    raises_errno(errno.ENOENT, h.fs.listdir, "/nope")


def test_no_misc_files_where_parent_lacks_misc_and_tasks_charge_nearest_ancestor():
    """cgroup_subtree_control_write() (kernel/cgroup/cgroup.c): /a enables only memory for its
    children: /a/b has memory.* but no misc.* file, and a task in /a/b charges /a's misc css (the
    nearest ancestor with misc)."""
    h = make_host("1MiB", "/a", "/a/b")
    h.fs.write("/a/cgroup.subtree_control", "+memory")
    h.fs.mkdir("/a/b/c")  # grandchild: nothing enabled in /a/b
    assert files(h, "/a/b") == CORE_FILES + MEMORY_CHILD_FILES
    assert files(h, "/a/b/c") == CORE_FILES
    assert h.cgroup("/a/b").misc is None
    raises_errno(errno.ENOENT, h.fs.read, "/a/b/misc.current")
    t = h.spawn("/a/b/c")
    assert h.sgx_cgroup_of("/a/b/c").cg is misc_css(h, "/a")
    new_enclave(h, t, npages=3)
    assert h.fs.read("/a/misc.current") == "sgx_epc 20480\n"
    assert h.fs.read("/misc.current") == "sgx_epc 20480\n"
    check_invariants(h, quiescent=True)


# --- exact text of core files -------------------------------------------------------------


def test_controllers_and_subtree_control_text():
    """cgroup.subtree_control / cgroup.controllers: space-separated, subsystem order
    (memory before misc), '\\n'-terminated; empty is a lone '\\n'."""
    h = Host("1MiB")
    assert h.fs.read("/cgroup.controllers") == "memory misc\n"
    assert h.fs.read("/cgroup.subtree_control") == "\n"
    h.fs.write("/cgroup.subtree_control", "+misc")
    h.fs.write("/cgroup.subtree_control", "+memory")
    assert h.fs.read("/cgroup.subtree_control") == "memory misc\n"
    h.fs.mkdir("/a")
    assert h.fs.read("/a/cgroup.controllers") == "memory misc\n"
    assert h.fs.read("/a/cgroup.subtree_control") == "\n"
    h.fs.write("/a/cgroup.subtree_control", "+misc")
    h.fs.mkdir("/a/b")
    assert h.fs.read("/a/b/cgroup.controllers") == "misc\n"
    h.fs.mkdir("/a/b/c")
    assert h.fs.read("/a/b/c/cgroup.controllers") == "\n"


def test_procs_text():
    """cgroup.procs: one pid per line; empty cgroup reads ''."""
    h = make_host("1MiB", "/a")
    assert h.fs.read("/a/cgroup.procs") == ""
    t1, t2 = h.spawn("/a"), h.spawn("/a")
    t0 = h.spawn("/")
    assert h.fs.read("/a/cgroup.procs") == f"{t1.pid}\n{t2.pid}\n"
    assert h.fs.read("/cgroup.procs") == f"{t0.pid}\n"
    task_exit(h, t1)
    assert h.fs.read("/a/cgroup.procs") == f"{t2.pid}\n"


def test_memory_files_initial_text():
    h = make_host("1MiB", "/a")
    assert h.fs.read("/a/memory.max") == "max\n"
    assert h.fs.read("/a/memory.current") == "0\n"
    assert (
        h.fs.read("/a/memory.events")
        == "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"
    )


# --- errno and exception classes ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/misc.current",
        "/misc.capacity",
        "/misc.peak",
        "/cgroup.controllers",
        "/a/misc.current",
        "/a/misc.peak",
        "/a/misc.events",
        "/a/misc.events.local",
        "/a/cgroup.controllers",
        "/a/memory.current",
        "/a/memory.events",
    ],
)
def test_write_read_only_file_eacces(path):
    """kernfs: opening a file without a write handler for writing -> EACCES
    (PermissionError); its content is unchanged."""
    h = make_host("1MiB", "/a")
    before = h.fs.read(path)
    e = raises_errno(errno.EACCES, h.fs.write, path, "sgx_epc 0")
    assert isinstance(e, PermissionError)
    assert h.fs.read(path) == before


@pytest.mark.parametrize(
    "op, path",
    [
        ("read", "/a/misc.nope"),
        ("read", "/nope/misc.max"),
        ("read", "/a/b/misc.max"),
        ("read", "/misc.max"),
        ("write", "/misc.max"),
        ("write", "/nope/misc.max"),
        ("write", "/a/misc.capacity"),
        ("write", "/a/nope"),
        ("rmdir", "/nope"),
        ("rmdir", "/a/nope"),
        ("rmdir", "/nope/deeper"),
        ("mkdir", "/nope/child"),
    ],
)
def test_missing_enoent(op, path):
    """Missing file, cgroup or parent -> ENOENT (FileNotFoundError)."""
    h = make_host("1MiB", "/a")
    fn = {"read": h.fs.read, "rmdir": h.fs.rmdir, "mkdir": h.fs.mkdir}.get(op)
    if op == "write":
        e = raises_errno(errno.ENOENT, h.fs.write, path, "sgx_epc 4096")
    else:
        e = raises_errno(errno.ENOENT, fn, path)
    assert isinstance(e, FileNotFoundError)
    assert e.filename == path


def test_mkdir_existing_eexist():
    """mkdir of an existing cgroup, of the root, or over an interface file -> EEXIST
    (FileExistsError)."""
    h = make_host("1MiB", "/a")
    for path in ("/a", "/", "/misc.current", "/a/misc.max", "/cgroup.procs"):
        e = raises_errno(errno.EEXIST, h.fs.mkdir, path)
        assert isinstance(e, FileExistsError)
    assert h.fs.listdir("/") == ROOT_FILES + ["a"]


def test_isdir_and_notdir():
    """Reading a directory -> EISDIR; a file used as a directory -> ENOTDIR."""
    h = make_host("1MiB", "/a")
    assert isinstance(raises_errno(errno.EISDIR, h.fs.read, "/a"), IsADirectoryError)
    raises_errno(errno.EISDIR, h.fs.write, "/a", "x")
    assert isinstance(raises_errno(errno.ENOTDIR, h.fs.read, "/a/misc.max/x"), NotADirectoryError)
    raises_errno(errno.ENOTDIR, h.fs.rmdir, "/a/misc.max")


def test_exception_classes_and_errno_values():
    """OSError subclasses chosen from the errno, as Python does for a real cgroupfs."""
    h = make_host("1MiB", "/a")
    with pytest.raises(FileNotFoundError) as e1:
        h.fs.read("/zzz/misc.max")
    assert e1.value.errno == errno.ENOENT == 2
    with pytest.raises(PermissionError) as e2:
        h.fs.write("/a/misc.current", "1")
    assert e2.value.errno == errno.EACCES == 13
    with pytest.raises(FileExistsError) as e3:
        h.fs.mkdir("/a")
    assert e3.value.errno == errno.EEXIST == 17
    with pytest.raises(ProcessLookupError) as e4:
        h.fs.write("/a/cgroup.procs", "99999")
    assert e4.value.errno == errno.ESRCH
    with pytest.raises(OSError) as e5:
        h.fs.write("/a/misc.max", "sgx_epc x")
    assert type(e5.value) is OSError and e5.value.errno == errno.EINVAL == 22
    with pytest.raises(OSError) as e6:
        h.fs.write("/a/misc.max", "sgx_epc 99999999999999999999")
    assert e6.value.errno == errno.ERANGE == 34


# --- mkdir / rmdir ------------------------------------------------------------------------


def test_mkdir_rmdir_roundtrip():
    h = make_host("1MiB")
    h.fs.mkdir("/a")
    h.fs.mkdir("/sys/fs/cgroup/a/b")  # the mount prefix is accepted
    assert h.fs.exists("/a/b")
    h.fs.rmdir("/a/b")
    h.fs.rmdir("/a")
    assert not h.fs.exists("/a")
    assert h.fs.listdir("/") == ROOT_FILES
    check_invariants(h, quiescent=True)


def test_rmdir_busy_with_children_or_tasks():
    """rmdir -> EBUSY with a child cgroup or with tasks; the root -> EBUSY."""
    h = make_host("1MiB", "/a", "/a/b", "/c")
    raises_errno(errno.EBUSY, h.fs.rmdir, "/a")
    t = h.spawn("/c")
    raises_errno(errno.EBUSY, h.fs.rmdir, "/c")
    raises_errno(errno.EBUSY, h.fs.rmdir, "/")
    task_exit(h, t)
    h.fs.rmdir("/c")
    h.fs.rmdir("/a/b")
    h.fs.rmdir("/a")
    assert h.fs.listdir("/") == ROOT_FILES


def test_mkdir_resets_misc_state():
    """A new css starts with max 'max', zero usage, peak and events, even if a
    cgroup of the same name existed before."""
    h = make_host("1MiB", "/a")
    h.fs.write("/a/misc.max", "sgx_epc 0")
    t = h.spawn("/a")
    with pytest.raises(OSError):
        new_enclave(h, t)
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 1\n"
    task_exit(h, t)
    h.fs.rmdir("/a")
    h.fs.mkdir("/a")
    assert h.fs.read("/a/misc.max") == "sgx_epc max\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 0\n"
    assert h.fs.read("/a/misc.events.local") == "sgx_epc.max 0\n"
    assert h.fs.read("/a/misc.peak") == "sgx_epc 0\n"


def test_rmdir_with_charged_pages_keeps_css_until_freed():
    """sgx_cgroup_misc_free() (v16 patch 9; each EPC page pins its css, v16 patch 5): a task charges
    pages in /p/a and moves to /p/b; /p/a can be removed; its css goes offline but stays in the tree
    with its charges (counted in /p and the root) until the pages are freed; new allocations charge
    /p/b; when the task exits, usage drops to 0 and the css is freed."""
    h = make_host("1MiB", "/p", "/p/a", "/p/b")
    h.fs.write("/p/cgroup.subtree_control", "+misc +memory")
    h.fs.mkdir("/p/a/x")  # (nothing enabled in /p/a: a plain child dir)
    h.fs.rmdir("/p/a/x")
    t = h.spawn("/p/a")
    e = new_enclave(h, t, npages=3)  # 1 VA + SECS + 3 = 5 pages
    css_a = misc_css(h, "/p/a")
    h.fs.write("/p/b/cgroup.procs", f"{t.pid}\n")
    h.fs.rmdir("/p/a")
    assert not h.fs.exists("/p/a")
    assert not css_a.online and not css_a.freed
    assert css_a.usage == 5 * P
    assert css_a in misc_css(h, "/p").children
    assert h.fs.read("/p/misc.current") == "sgx_epc 20480\n"
    assert h.fs.read("/p/b/misc.current") == "sgx_epc 0\n"
    assert h.fs.read("/misc.current") == "sgx_epc 20480\n"
    check_invariants(h, quiescent=True)
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 3 * P, P))
    assert h.fs.read("/p/b/misc.current") == "sgx_epc 4096\n"
    assert css_a.usage == 5 * P
    assert h.fs.read("/p/misc.current") == "sgx_epc 24576\n"
    task_exit(h, t)
    assert css_a.freed
    assert css_a not in misc_css(h, "/p").children
    assert h.fs.read("/p/misc.current") == "sgx_epc 0\n"
    assert h.fs.read("/misc.current") == "sgx_epc 0\n"
    assert h.misc.root.usage == 0
    check_invariants(h, quiescent=True)


def test_rmdir_parent_of_dying_css():
    """cgroup_rmdir() (kernel/cgroup/cgroup.c; each EPC page pins its misc css, v16 patch 5): an
    offline css with charges does not keep its parent directory busy (only live children do); the
    parent css stays alive until the child css is freed."""
    h = make_host("1MiB", "/p", "/p/a")
    h.fs.write("/p/cgroup.subtree_control", "+misc")
    t = h.spawn("/p/a")
    new_enclave(h, t, npages=2)
    css_p, css_a = misc_css(h, "/p"), misc_css(h, "/p/a")
    h.fs.write("/cgroup.procs", str(t.pid))
    h.fs.rmdir("/p/a")
    h.fs.rmdir("/p")
    assert h.fs.listdir("/") == ROOT_FILES
    assert not css_p.online and not css_p.freed and not css_a.freed
    assert css_p.usage == 4 * P
    assert h.fs.read("/misc.current") == "sgx_epc 16384\n"
    check_invariants(h, quiescent=True)
    task_exit(h, t)
    assert css_a.freed and css_p.freed
    assert h.misc.root.children == []
    assert h.fs.read("/misc.current") == "sgx_epc 0\n"
    check_invariants(h, quiescent=True)


def test_mkdir_newline_in_name_einval():
    h = make_host("1MiB")
    raises_errno(errno.EINVAL, h.fs.mkdir, "/a\nb")
    assert h.fs.listdir("/") == ROOT_FILES


def test_mkdir_name_with_controller_prefix_allowed():
    h = make_host("1MiB")
    h.fs.mkdir("/misc.foo")
    h.fs.mkdir("/cgroup.bar")
    assert h.fs.exists("/misc.foo") and h.fs.exists("/cgroup.bar")


# --- cgroup.procs -------------------------------------------------------------------------


def test_procs_move_task():
    """Writing a pid moves the process (as ``cgroup_procs_write``: strstrip + kstrtoint
    with auto base, '+' allowed); '0' moves the writing task."""
    h = make_host("1MiB", "/a", "/b")
    t = h.spawn("/a")
    assert h.fs.write("/b/cgroup.procs", f"{t.pid}\n") == len(f"{t.pid}\n")
    assert h.cgroup_of(t) is h.cgroup("/b")
    assert h.fs.read("/a/cgroup.procs") == ""
    assert h.fs.read("/b/cgroup.procs") == f"{t.pid}\n"
    h.fs.write("/a/cgroup.procs", f"  +{t.pid} ")
    assert h.cgroup_of(t) is h.cgroup("/a")
    h.fs.write("/b/cgroup.procs", hex(t.pid))
    assert h.cgroup_of(t) is h.cgroup("/b")
    h.fs.write("/a/cgroup.procs", "0", task=t)
    assert h.cgroup_of(t) is h.cgroup("/a")
    # the root accepts tasks although it has controllers enabled
    h.fs.write("/cgroup.procs", str(t.pid))
    assert h.cgroup_of(t) is h.root
    # writing to the cgroup the task is already in is fine
    h.fs.write("/cgroup.procs", str(t.pid))
    assert h.fs.read("/cgroup.procs") == f"{t.pid}\n"


@pytest.mark.parametrize("data", ["abc", "-1", "", "\n", "1.0", "0x", "1 2", "08"])
def test_procs_write_garbage_einval(data):
    h = make_host("1MiB", "/a", "/b")
    t = h.spawn("/a")
    raises_errno(errno.EINVAL, h.fs.write, "/b/cgroup.procs", data)
    assert h.cgroup_of(t) is h.cgroup("/a")


def test_procs_write_unknown_or_exited_pid_esrch():
    h = make_host("1MiB", "/a", "/b")
    t = h.spawn("/a")
    raises_errno(errno.ESRCH, h.fs.write, "/b/cgroup.procs", "99999")
    task_exit(h, t)
    raises_errno(errno.ESRCH, h.fs.write, "/b/cgroup.procs", str(t.pid))


def test_procs_write_huge_pid_einval():
    h = make_host("1MiB", "/a")
    raises_errno(errno.EINVAL, h.fs.write, "/a/cgroup.procs", "99999999999999999999")


def test_procs_write_minus_zero_is_current_task():
    h = make_host("1MiB", "/a", "/b")
    t = h.spawn("/a")
    h.fs.write("/b/cgroup.procs", "-0", task=t)
    assert h.cgroup_of(t) is h.cgroup("/b")


def test_procs_no_internal_process():
    """Writing a pid into (or spawning in) a non-root cgroup with controllers in its
    subtree_control -> EBUSY."""
    h = make_host("1MiB", "/a", "/b")
    h.fs.write("/a/cgroup.subtree_control", "+misc")
    t = h.spawn("/b")
    raises_errno(errno.EBUSY, h.fs.write, "/a/cgroup.procs", str(t.pid))
    assert h.cgroup_of(t) is h.cgroup("/b")
    raises_errno(errno.EBUSY, h.spawn, "/a")
    raises_errno(errno.ENOENT, h.spawn, "/nope")
    assert h.fs.read("/a/cgroup.procs") == ""
    assert h.fs.read("/cgroup.procs") == ""


def test_charges_do_not_move_with_task():
    """The "Migration" section of sgx.rst (v16 patch 15); sgx_alloc_epc_page() charges the current
    task's cgroup (v16 patch 5): pages charged before a move stay charged to the old cgroup;
    allocations after the move charge the new one; freeing uncharges the cgroup each page was
    charged to."""
    h = make_host("1MiB", "/a", "/b")
    t = h.spawn("/a")
    e = new_enclave(h, t, npages=2)
    assert h.fs.read("/a/misc.current") == "sgx_epc 16384\n"
    h.fs.write("/b/cgroup.procs", str(t.pid))
    assert h.fs.read("/a/misc.current") == "sgx_epc 16384\n"
    assert h.fs.read("/b/misc.current") == "sgx_epc 0\n"
    drive(ioctl.ioc_enclave_add_pages(h, t, e, 2 * P, 3 * P))
    assert h.fs.read("/a/misc.current") == "sgx_epc 16384\n"
    assert h.fs.read("/b/misc.current") == "sgx_epc 12288\n"
    assert h.fs.read("/misc.current") == "sgx_epc 28672\n"
    check_invariants(h, quiescent=True)
    task_exit(h, t)
    assert h.fs.read("/a/misc.current") == "sgx_epc 0\n"
    assert h.fs.read("/b/misc.current") == "sgx_epc 0\n"
    assert h.fs.read("/a/misc.peak") == "sgx_epc 16384\n"
    assert h.fs.read("/b/misc.peak") == "sgx_epc 12288\n"
    check_invariants(h, quiescent=True)


def test_moved_task_hits_new_cgroups_limit():
    """The "Migration" section of sgx.rst (v16 patch 15); sgx_cgroup_try_charge() (v16 patch 9):
    after the move the new cgroup's limit applies and the old charges are not counted there: /b (max
    1 page) takes one page although /a holds 3; the next page fails once at /b (1 event), the sync
    loop reclaims /b's own page (not /a's) and the retry succeeds."""
    h = make_host("1MiB", "/a", "/b")
    h.fs.write("/b/misc.max", "sgx_epc 4096")
    t = h.spawn("/a")
    e = new_enclave(h, t, npages=1)
    h.fs.write("/b/cgroup.procs", str(t.pid))
    assert drive(ioctl.ioc_enclave_add_pages(h, t, e, P, P)) == P
    assert h.fs.read("/b/misc.current") == "sgx_epc 4096\n"
    assert drive(ioctl.ioc_enclave_add_pages(h, t, e, 2 * P, P)) == P
    assert h.fs.read("/b/misc.current") == "sgx_epc 4096\n"
    assert h.fs.read("/b/misc.events") == "sgx_epc.max 1\n"
    assert h.fs.read("/a/misc.current") == "sgx_epc 12288\n"
    assert h.fs.read("/a/misc.events") == "sgx_epc.max 0\n"
    assert h.fs.read("/b/memory.current") == f"{4096 + 128}\n"
    check_invariants(h, quiescent=True)


# --- cgroup.subtree_control ---------------------------------------------------------------


def test_subtree_control_enable_disable():
    """'+ctrl' creates the children's css and files, '-ctrl' kills them; tokens are
    applied together; redundant tokens are no-ops."""
    h = make_host("1MiB", "/a", root_ctrl="")
    assert files(h, "/a") == CORE_FILES
    assert h.fs.write("/cgroup.subtree_control", "+misc +memory\n") == 14
    assert files(h, "/a") == CORE_FILES + MEMORY_CHILD_FILES + MISC_CHILD_FILES
    h.fs.write("/cgroup.subtree_control", "+misc")  # already on
    h.fs.write("/cgroup.subtree_control", "-misc")
    assert h.fs.read("/cgroup.subtree_control") == "memory\n"
    assert files(h, "/a") == CORE_FILES + MEMORY_CHILD_FILES
    h.fs.write("/cgroup.subtree_control", "-misc")  # already off
    h.fs.write("/cgroup.subtree_control", "-memory +misc")
    assert h.fs.read("/cgroup.subtree_control") == "misc\n"
    h.fs.write("/cgroup.subtree_control", "+memory -memory")  # last one wins
    assert h.fs.read("/cgroup.subtree_control") == "misc\n"
    h.fs.write("/cgroup.subtree_control", "")
    assert h.fs.read("/cgroup.subtree_control") == "misc\n"


def test_subtree_control_reenable_gives_fresh_css():
    """Disabling kills the css (max setting lost); re-enabling creates a new one."""
    h = make_host("1MiB", "/a")
    h.fs.write("/a/misc.max", "sgx_epc 4096")
    old = misc_css(h, "/a")
    h.fs.write("/cgroup.subtree_control", "-misc")
    assert not old.online and old.freed
    h.fs.write("/cgroup.subtree_control", "+misc")
    assert misc_css(h, "/a") is not old
    assert h.fs.read("/a/misc.max") == "sgx_epc max\n"


@pytest.mark.parametrize(
    "data", ["+cpu", "+bogus", "misc", "+", "-", "++misc", "*misc", "+misc +cpu", "+Misc"]
)
def test_subtree_control_einval(data):
    """Unknown controller (the model has memory and misc only) or malformed token ->
    EINVAL; nothing is applied (all or nothing)."""
    h = make_host("1MiB", "/a", root_ctrl="")
    raises_errno(errno.EINVAL, h.fs.write, "/cgroup.subtree_control", data)
    assert h.fs.read("/cgroup.subtree_control") == "\n"
    assert files(h, "/a") == CORE_FILES


def test_subtree_control_enoent_when_controller_unavailable():
    """Enabling a controller the cgroup itself does not have (not in its parent's
    subtree_control) -> ENOENT."""
    h = make_host("1MiB", "/a", "/a/b", root_ctrl="+memory")
    raises_errno(errno.ENOENT, h.fs.write, "/a/cgroup.subtree_control", "+misc")
    h.fs.write("/a/cgroup.subtree_control", "+memory")
    raises_errno(errno.ENOENT, h.fs.write, "/a/b/cgroup.subtree_control", "+misc")
    raises_errno(errno.ENOENT, h.fs.write, "/a/cgroup.subtree_control", "+memory +misc")
    assert h.fs.read("/a/cgroup.subtree_control") == "memory\n"
    # disabling something that is not enabled is a no-op, not ENOENT
    h.fs.write("/a/b/cgroup.subtree_control", "-misc")


def test_subtree_control_ebusy_disable_while_child_enables():
    """Disabling a controller while a child still enables it in its own
    subtree_control -> EBUSY; fine once the child dropped it."""
    h = make_host("1MiB", "/a", "/a/b")
    h.fs.write("/a/cgroup.subtree_control", "+misc")
    raises_errno(errno.EBUSY, h.fs.write, "/cgroup.subtree_control", "-misc")
    assert h.fs.read("/cgroup.subtree_control") == "memory misc\n"
    h.fs.write("/cgroup.subtree_control", "-memory")  # memory not enabled below: fine
    h.fs.write("/a/cgroup.subtree_control", "-misc")
    h.fs.write("/cgroup.subtree_control", "-misc")
    assert h.fs.read("/cgroup.subtree_control") == "\n"


def test_subtree_control_ebusy_enable_with_tasks():
    """No internal processes: enabling on a non-root cgroup with tasks -> EBUSY; the
    root is exempt; disabling is allowed."""
    h = make_host("1MiB", "/a")
    t = h.spawn("/a")
    raises_errno(errno.EBUSY, h.fs.write, "/a/cgroup.subtree_control", "+misc")
    h.fs.write("/a/cgroup.subtree_control", "-misc")
    h.spawn("/")
    h.fs.write("/cgroup.subtree_control", "-memory")
    h.fs.write("/cgroup.subtree_control", "+memory")
    task_exit(h, t)
    h.fs.write("/a/cgroup.subtree_control", "+misc")
    assert h.fs.read("/a/cgroup.subtree_control") == "misc\n"


def test_subtree_control_error_order_follows_subsystem_order():
    h = make_host("1MiB", "/a", "/a/b", "/a/b/c")
    h.fs.write("/a/cgroup.subtree_control", "+memory")  # /a/b: memory only
    h.fs.write("/a/b/cgroup.subtree_control", "+memory")
    h.fs.write("/a/b/c/cgroup.subtree_control", "+memory")  # c enables memory: busy
    raises_errno(errno.EBUSY, h.fs.write, "/a/b/cgroup.subtree_control", "+misc -memory")


def test_subtree_control_tab_separator_einval():
    h = make_host("1MiB", root_ctrl="")
    raises_errno(errno.EINVAL, h.fs.write, "/cgroup.subtree_control", "+misc\t+memory")


def test_disable_misc_with_charges_keeps_offline_css():
    """cgroup_subtree_control_write() (kernel/cgroup/cgroup.c; each EPC page pins its misc css,
    v16 patch 5): '-misc' kills the children's misc css; one with charged pages stays alive offline
    until they are freed; the task then charges the root."""
    h = make_host("1MiB", "/a")
    t = h.spawn("/a")
    e = new_enclave(h, t, npages=1)
    css_a = misc_css(h, "/a")
    h.fs.write("/cgroup.subtree_control", "-misc")
    assert not css_a.online and not css_a.freed and css_a.usage == 3 * P
    assert files(h, "/a") == CORE_FILES + MEMORY_CHILD_FILES
    assert h.sgx_cgroup_of("/a") is h.sgx_cg_root
    drive(ioctl.ioc_enclave_add_pages(h, t, e, P, P))
    assert h.misc.root.usage == 4 * P and css_a.usage == 3 * P
    check_invariants(h, quiescent=True)
    task_exit(h, t)
    assert css_a.freed and h.misc.root.usage == 0
    check_invariants(h, quiescent=True)


# --- memory.max ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, shown",
    [
        ("1048576", "1048576\n"),
        ("max", "max\n"),
        ("max\n", "max\n"),
        ("1M", "1048576\n"),
        ("1m\n", "1048576\n"),
        ("4K", "4096\n"),
        ("8k", "8192\n"),
        ("1G", "1073741824\n"),
        ("2T", f"{2 << 40}\n"),
        ("5000", "4096\n"),  # rounded down to pages
        ("4095", "0\n"),
        ("0", "0\n"),
        ("0x2000", "8192\n"),
        ("020000", "8192\n"),
        ("  8192 \n", "8192\n"),
        ("18446744073709551615", "max\n"),  # clamped to PAGE_COUNTER_MAX
    ],
)
def test_memory_max_write(data, shown):
    """memory_max_write(): page_counter_memparse(): 'max' or memparse() (auto base,
    K/M/G/T/P/E suffix), then bytes / PAGE_SIZE capped at PAGE_COUNTER_MAX; reads back
    pages x 4096 or 'max'."""
    h = make_host("1MiB", "/a")
    assert h.fs.write("/a/memory.max", data) == len(data)
    assert h.fs.read("/a/memory.max") == shown


@pytest.mark.parametrize("data", ["-1", "abc", "1.5M", "1 M", "1MB", "MAX", "1Mi", "x"])
def test_memory_max_write_einval(data):
    h = make_host("1MiB", "/a")
    h.fs.write("/a/memory.max", "1M")
    raises_errno(errno.EINVAL, h.fs.write, "/a/memory.max", data)
    assert h.fs.read("/a/memory.max") == "1048576\n"


def test_memory_max_not_on_root():
    h = make_host("1MiB")
    raises_errno(errno.ENOENT, h.fs.write, "/memory.max", "1M")


# --- misc disabled at boot (cgroup_disable=misc) --------------------------------------------------


def test_misc_disabled_no_files_all_charges_to_root():
    """cgroup_disable=misc (sgx_get_current_cg() returns the root): no misc.* file anywhere (root
    included); every task charges and is tracked on the root."""
    h = make_host("1MiB", "/a", root_ctrl="+memory", misc_enabled=False)
    assert files(h, "/") == CORE_FILES
    assert files(h, "/a") == CORE_FILES + MEMORY_CHILD_FILES
    for name in ("misc.capacity", "misc.current", "misc.peak"):
        raises_errno(errno.ENOENT, h.fs.read, "/" + name)
    raises_errno(errno.ENOENT, h.fs.write, "/a/misc.max", "sgx_epc 4096")
    t = h.spawn("/a")
    assert h.sgx_cgroup_of("/a") is h.sgx_cg_root
    assert h.task_misc_cg(t) is h.misc.root
    new_enclave(h, t, npages=4)
    assert h.misc.root.usage == 6 * P
    assert h.sgx_cg_root.lru.nr == 4
    check_invariants(h, quiescent=True)
    task_exit(h, t)
    assert h.misc.root.usage == 0
    check_invariants(h, quiescent=True)


def test_misc_disabled_not_in_controllers():
    h = Host("1MiB", misc_enabled=False)
    assert h.fs.read("/cgroup.controllers") == "memory\n"


def test_misc_disabled_enable_einval():
    h = Host("1MiB", misc_enabled=False)
    raises_errno(errno.EINVAL, h.fs.write, "/cgroup.subtree_control", "+misc")
    assert h.fs.read("/cgroup.subtree_control") == "\n"


# --- the VFS path walk (link_path_walk, do_mkdirat, do_rmdir) -----------------------------


def test_write_data_not_str_or_bytes_typeerror():
    """write(path, 12345) -> TypeError as os.write() gives for a non-bytes buffer (was an
    AttributeError); nothing changes."""
    h = make_host("1MiB", "/a")
    with pytest.raises(TypeError, match="data must be str or bytes, not int"):
        h.fs.write("/a/misc.max", 12345)  # type: ignore[arg-type]
    assert h.fs.read("/a/misc.max") == "sgx_epc max\n"
    assert h.fs.write("/a/misc.max", bytearray(b"sgx_epc 4096")) == 12
    assert h.fs.read("/a/misc.max") == "sgx_epc 4096\n"


def test_path_not_str_typeerror():
    h = make_host("1MiB", "/a")
    with pytest.raises(TypeError, match="path must be str, not int"):
        h.fs.read(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("op", ["read", "write", "rmdir"])
def test_trailing_slash_on_file_enotdir(op):
    """A trailing '/' requires a directory: /t/misc.max/ -> ENOTDIR (NotADirectoryError),
    for read, write and rmdir; the file is unchanged."""
    h = make_host("1MiB", "/t")
    fn = {"read": h.fs.read, "rmdir": h.fs.rmdir}.get(op)
    args = ("sgx_epc 4096",) if op == "write" else ()
    fn = fn or h.fs.write
    e = raises_errno(errno.ENOTDIR, fn, "/t/misc.max/", *args)
    assert isinstance(e, NotADirectoryError)
    assert e.filename == "/t/misc.max/"
    raises_errno(errno.ENOTDIR, h.fs.read, "/t/misc.max/.")
    assert h.fs.read("/t/misc.max") == "sgx_epc max\n"
    assert not h.fs.exists("/t/misc.max/")
    assert h.fs.exists("/t/misc.max") and h.fs.exists("/t/")


def test_trailing_slash_missing_file_enoent_and_mkdir_over_file_eexist():
    h = make_host("1MiB", "/t")
    raises_errno(errno.ENOENT, h.fs.read, "/t/nope/")
    raises_errno(errno.EEXIST, h.fs.mkdir, "/t/misc.max/")
    h.fs.mkdir("/t/u/")  # a trailing slash on a new directory is fine
    assert h.fs.exists("/t/u")
    h.fs.rmdir("/t/u/")
    assert not h.fs.exists("/t/u")


@pytest.mark.parametrize("path", ["/b/..", "/b/.", "/.", "/..", "/", "/sys/fs/cgroup"])
def test_mkdir_dot_dotdot_root_eexist(path):
    """do_mkdirat(): a last component '.' or '..' (or the root) is not a new name ->
    EEXIST (was EINVAL for /b/..); nothing is created."""
    h = make_host("1MiB", "/b")
    e = raises_errno(errno.EEXIST, h.fs.mkdir, path)
    assert isinstance(e, FileExistsError)
    assert h.fs.listdir("/") == ROOT_FILES + ["b"]
    assert h.fs.listdir("/b") == CORE_FILES + MEMORY_CHILD_FILES + MISC_CHILD_FILES


@pytest.mark.parametrize(
    "path, code",
    [
        ("/.", errno.EINVAL),  # was EBUSY
        ("/b/.", errno.EINVAL),
        ("/b/c/.", errno.EINVAL),
        ("/b/..", errno.ENOTEMPTY),
        ("/b/c/..", errno.ENOTEMPTY),
        ("/", errno.EBUSY),
        ("/sys/fs/cgroup", errno.EBUSY),
        ("/sys/fs/cgroup/", errno.EBUSY),
    ],
)
def test_rmdir_dot_dotdot_root(path, code):
    """do_rmdir(): last component '.' -> EINVAL, '..' -> ENOTEMPTY, the root -> EBUSY;
    nothing is removed, even where the directory itself is empty."""
    h = make_host("1MiB", "/b")
    h.fs.mkdir("/b/c")
    raises_errno(code, h.fs.rmdir, path)
    assert h.fs.exists("/b/c")


def test_dotdot_walks_to_the_parent():
    """'..' inside a path goes up ('.' stays), as link_path_walk() does; at the root it
    stays at the root (the model has nothing above the mount)."""
    h = make_host("1MiB", "/a", "/b")
    h.fs.write("/a/../b/./misc.max", "sgx_epc 8192")
    assert h.fs.read("/b/misc.max") == "sgx_epc 8192\n"
    assert h.fs.read("/../../a/../b/misc.max") == "sgx_epc 8192\n"
    h.fs.mkdir("/a/../c")
    assert h.fs.listdir("/") == ROOT_FILES + ["a", "b", "c"]
    h.fs.rmdir("/b/../c")
    assert not h.fs.exists("/c")
    raises_errno(errno.ENOENT, h.fs.read, "/nope/../a/misc.max")  # each step must exist
    raises_errno(errno.ENOTDIR, h.fs.read, "/a/misc.max/../misc.max")


def test_empty_path_enoent_and_mount_prefix_exact():
    """An empty path -> ENOENT, as open(""); the mount prefix is a whole component
    (/sys/fs/cgroupX is not the mount)."""
    h = make_host("1MiB", "/a")
    raises_errno(errno.ENOENT, h.fs.read, "")
    raises_errno(errno.ENOENT, h.fs.mkdir, "")
    raises_errno(errno.ENOENT, h.fs.read, "/sys/fs/cgroupX/misc.current")
    assert h.fs.read("/sys/fs/cgroup/a/misc.max") == "sgx_epc max\n"


def test_write_of_more_than_a_page_e2big():
    """cgroup files' atomic_write_len is PAGE_SIZE: a longer write(2) is E2BIG before any
    parsing (a megabyte of digits is not read); exactly a page is parsed."""
    h = make_host("1MiB", "/a")
    e = raises_errno(errno.E2BIG, h.fs.write, "/a/misc.max", "sgx_epc " + "1" * 4089)
    assert e.filename == "/a/misc.max"
    raises_errno(errno.E2BIG, h.fs.write, "/a/misc.max", b"sgx_epc " + b"0" * (1 << 20))
    assert h.fs.read("/a/misc.max") == "sgx_epc max\n"
    page = "sgx_epc 4096" + " " * (4096 - 12)  # trailing space is stripped
    assert h.fs.write("/a/misc.max", page) == 4096
    assert h.fs.read("/a/misc.max") == "sgx_epc 4096\n"
    # a read-only file is EACCES whatever the size (open fails first)
    raises_errno(errno.EACCES, h.fs.write, "/a/misc.current", "x" * 5000)


def test_write_returns_the_bytes_written():
    """write(2) returns the bytes it was given; bytes that are not UTF-8 are no number."""
    h = make_host("1MiB", "/a")
    assert h.fs.write("/a/misc.max", "sgx_epc 4096\n") == 13
    raises_errno(errno.EINVAL, h.fs.write, "/a/misc.max", b"sgx_epc \xff")


def test_path_too_long_or_with_nul():
    """getname(): a path of PATH_MAX (4096) bytes or more -> ENAMETOOLONG; a NUL byte ->
    ValueError, as Python's os functions raise."""
    h = make_host("1MiB", "/a")
    long = "/a/" + "x/" * 2047  # 4097 bytes
    raises_errno(errno.ENAMETOOLONG, h.fs.read, long)
    raises_errno(errno.ENAMETOOLONG, h.fs.mkdir, "/" + "b" * 4095)
    raises_errno(errno.ENOENT, h.fs.read, "/" + "b" * 4094)  # 4095 bytes: looked up
    with pytest.raises(ValueError, match="embedded null byte"):
        h.fs.mkdir("/b\0c")
    assert h.fs.listdir("/") == ROOT_FILES + ["a"]


def test_write_stops_at_the_first_nul():
    """The handlers read the NUL-terminated buffer as a C string: what follows a NUL is
    not seen; write(2) still returns every byte."""
    h = make_host("1MiB", "/a")
    assert h.fs.write("/a/misc.max", "sgx_epc 4096\0junk") == 17
    assert h.fs.read("/a/misc.max") == "sgx_epc 4096\n"
    assert h.fs.write("/a/memory.max", b"1M\0x") == 4
    assert h.fs.read("/a/memory.max") == "1048576\n"
    raises_errno(errno.EINVAL, h.fs.write, "/a/misc.max", "\0sgx_epc 8192")
    assert h.fs.read("/a/misc.max") == "sgx_epc 4096\n"
