"""The cgroup v2 filesystem as user space sees it (``/sys/fs/cgroup``).

The user-space boundary of the cgroup side of the model: ``read``, ``write``, ``mkdir``,
``rmdir`` raise :class:`OSError` with the positive errno, exactly as Python does against
a real cgroupfs (``FileNotFoundError`` for ENOENT, ``PermissionError`` for EACCES, ...),
and change nothing when they fail.

Files (misc.c, Documentation/admin-guide/cgroup-v2.rst; as on current kernels):

=========================  ===========================================================
``cgroup.procs``           every cgroup, RW (write a pid, ``0`` = the writing task)
``cgroup.subtree_control`` every cgroup, RW (``+misc -memory`` ...)
``cgroup.controllers``     every cgroup, RO
``misc.capacity``          root only, RO
``misc.current``           where misc is enabled, root included, RO
``misc.peak``              where misc is enabled, root included, RO
``misc.max``               where misc is enabled, not the root, RW
``misc.events``            where misc is enabled, not the root, RO (hierarchical)
``misc.events.local``      where misc is enabled, not the root, RO
``memory.max``             where memory is enabled, not the root, RW
``memory.current``         where memory is enabled, not the root, RO
``memory.events``          where memory is enabled, not the root, RO
``sgx_epc.low``            with the rfc-knobs extension (in no kernel), where misc is
                           enabled, not the root, RW; ``sgx_epc.high`` the same
``sgx_epc.reclaim``        .. write-only (a read is EACCES, as kernfs_fop_open())
``sgx_epc.events``         .. RO; ``sgx_epc.stat``, ``sgx_epc.pressure`` the same
=========================  ===========================================================

The ``sgx_epc.*`` files are :mod:`epcsim.kernel.rfc_knobs`'s (modelled on memory.low,
memory.high, memory.reclaim, memory.events, memory.stat and memory.pressure).

"Where a controller is enabled" means the root, or a cgroup whose parent has it in
``cgroup.subtree_control``.  With misc disabled at boot no misc file exists.

Paths are walked as the VFS walks them (``link_path_walk()``): empty components and
``.`` are skipped, ``..`` goes to the parent, every component but the last must be a
directory (ENOTDIR for a file, ENOENT for nothing), and a trailing ``/`` requires the
last one to be a directory too (``/a/misc.max/`` is ENOTDIR).  A last component ``.``
or ``..`` is handled as ``do_mkdirat()`` / ``do_rmdir()`` do: mkdir gives EEXIST,
rmdir EINVAL for ``.`` and ENOTEMPTY for ``..``; the root itself gives EEXIST to
mkdir and EBUSY to rmdir.  Deliberate difference: the model has nothing above the
mount, so ``..`` at the root stays there (as at ``/``).

Sizes, as the kernel bounds them: a path of ``PATH_MAX`` (4096) bytes or more is
ENAMETOOLONG (``getname()``), a NUL in it a ``ValueError`` (as Python's ``os`` functions
raise); one write(2) to an interface file takes at most a page, ``PAGE_SIZE`` bytes
(cgroup files' ``atomic_write_len``): more is E2BIG and nothing is parsed.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from .cgroup import (
    CONTROLLERS,
    Cgroup,
    cgroup_attach_task,
    cgroup_mkdir,
    cgroup_rmdir,
    cgroup_subtree_control_write,
    host_controllers,
)
from .constants import PAGE_COUNTER_MAX, PAGE_SIZE, U64_MAX
from .misc import (
    kstrtoint,
    misc_cg_capacity_show,
    misc_cg_current_show,
    misc_cg_max_show,
    misc_cg_max_write,
    misc_cg_peak_show,
    misc_events_local_show,
    misc_events_show,
)

if TYPE_CHECKING:
    from .host import Host, Task

__all__ = ["CgroupFs", "memparse"]

MOUNT = "/sys/fs/cgroup"

_RW = {"cgroup.procs", "cgroup.subtree_control", "misc.max", "memory.max"}

#: the rfc-knobs extension's files (epcsim.kernel.rfc_knobs): name -> writable
_RFC_FILES = {
    "sgx_epc.events": False,
    "sgx_epc.high": True,
    "sgx_epc.low": True,
    "sgx_epc.pressure": False,
    "sgx_epc.reclaim": True,
    "sgx_epc.stat": False,
}
#: write-only files: a read is EACCES (kernfs_fop_open(): no seq_show)
_WRITE_ONLY = {"sgx_epc.reclaim"}

#: include/uapi/linux/limits.h: a path's bytes, its terminating NUL included
PATH_MAX = 4096
#: cgroup_kf_ops.atomic_write_len: the most one write(2) to a cgroup file may carry
WRITE_MAX = PAGE_SIZE


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def memparse(s: str) -> tuple[int, str]:
    """Models memparse() (lib/cmdline.c): simple_strtoull with auto base, then an
    optional K/M/G/T/P/E suffix (either case).  Returns (value mod 2^64, rest)."""
    pos = 0
    base = 10
    if s[:1] == "0":
        if s[1:2] in ("x", "X") and s[2:3] and s[2] in "0123456789abcdefABCDEF":
            base, pos = 16, 2
        else:
            base = 8
    v = 0
    while pos < len(s):
        c = s[pos].lower()
        d = ord(c) - 48 if "0" <= c <= "9" else (ord(c) - 87 if "a" <= c <= "f" else 99)
        if d >= base:
            break
        v = (v * base + d) & U64_MAX
        pos += 1
    shifts = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
    if pos < len(s) and s[pos].lower() in shifts:
        v = (v << shifts[s[pos].lower()]) & U64_MAX
        pos += 1
    return v, s[pos:]


class CgroupFs:
    """The cgroup v2 hierarchy of a :class:`~epcsim.kernel.host.Host`.

    Paths are relative to the mount (``"/sgx_kselftest/misc.max"``); the mount prefix
    ``/sys/fs/cgroup`` is accepted too.
    """

    def __init__(self, host: Host) -> None:
        self.host = host

    # --- path resolution --------------------------------------------------------------

    def _walk(self, path: str) -> tuple[Cgroup, str, bool]:
        """Models link_path_walk(): ``(directory, last component, trailing slash)``.

        Every component but the last is resolved (``.``, ``..``, child cgroups); the
        last is returned as written: ``""`` for the root (``/``, the mount), ``.``,
        ``..`` or a name.

        Raises:
            TypeError: *path* is not a str.
            ValueError: *path* has a NUL.
            OSError: ENOENT (empty path, missing component), ENOTDIR (a file used as a
                directory), ENAMETOOLONG (``PATH_MAX`` bytes or more).
        """
        if not isinstance(path, str):
            raise TypeError(f"path must be str, not {type(path).__name__}")
        if "\0" in path:
            raise ValueError("embedded null byte")
        if not path:
            raise _err(errno.ENOENT, path)
        if len(path.encode("utf-8", "surrogateescape")) >= PATH_MAX:
            raise _err(errno.ENAMETOOLONG, path)
        rel = path
        if rel == MOUNT or rel.startswith(MOUNT + "/"):
            rel = rel[len(MOUNT) :]
        comps = rel.split("/")
        names = [p for p in comps if p]
        trailing = len(comps) > 1 and comps[-1] == ""
        c = self.host.root
        for p in names[:-1]:
            c = self._step(c, p, path)
        return c, (names[-1] if names else ""), trailing

    def _step(self, c: Cgroup, name: str, path: str) -> Cgroup:
        """One component of a walk: ``.``, ``..`` or a child cgroup."""
        if name == ".":
            return c
        if name == "..":
            return c.parent or c
        ch = c.children.get(name)
        if ch is None:
            if name in self._files(c):
                raise _err(errno.ENOTDIR, path)
            raise _err(errno.ENOENT, path)
        return ch

    def _cgroup(self, path: str) -> Cgroup:
        """The cgroup directory *path* names (ENOENT, ENOTDIR otherwise)."""
        c, last, _ = self._walk(path)
        return self._step(c, last, path) if last else c

    def _files(self, c: Cgroup) -> dict[str, bool]:
        """Name -> writable, for the files that exist in *c*."""
        files = {"cgroup.procs": True, "cgroup.subtree_control": True, "cgroup.controllers": False}
        root = c.parent is None
        if self.host.misc_enabled and c.misc is not None:
            files["misc.current"] = False
            files["misc.peak"] = False
            if root:
                files["misc.capacity"] = False
            else:
                files["misc.max"] = True
                files["misc.events"] = False
                files["misc.events.local"] = False
        if self.host.rfc is not None and not root and self.host.misc_enabled and c.misc is not None:
            for f, w in _RFC_FILES.items():
                files[f] = w
        if not root and c.memcg is not None:
            files["memory.max"] = True
            files["memory.current"] = False
            files["memory.events"] = False
        return files

    def _file(self, path: str) -> tuple[Cgroup, str, bool]:
        """(cgroup, file name, writable) of an interface file: EISDIR for a directory,
        ENOTDIR for a file with a trailing ``/``, ENOENT for nothing."""
        c, name, trailing = self._walk(path)
        if name in ("", ".", "..") or name in c.children:
            raise _err(errno.EISDIR, path)
        files = self._files(c)
        if name not in files:
            raise _err(errno.ENOENT, path)
        if trailing:
            raise _err(errno.ENOTDIR, path)
        return c, name, files[name]

    # --- queries ------------------------------------------------------------------------

    def exists(self, path: str) -> bool:
        try:
            self._cgroup(path)
            return True
        except OSError:
            pass
        try:
            self._file(path)
            return True
        except OSError:
            return False

    def listdir(self, path: str = "/") -> list[str]:
        """Names in the cgroup directory *path*: files, then child cgroups."""
        c = self._cgroup(path)
        return sorted(self._files(c)) + list(c.children)

    # --- read -------------------------------------------------------------------------------

    def read(self, path: str) -> str:
        """Read an interface file; the exact kernel text (one line per value, '\\n')."""
        c, name, _ = self._file(path)
        host = self.host
        if name == "cgroup.procs":
            return "".join(f"{pid}\n" for pid in sorted(c.tasks))
        if name == "cgroup.subtree_control":
            s = " ".join(x for x in CONTROLLERS if x in c.subtree_control)
            return s + "\n" if s else "\n"
        if name == "cgroup.controllers":
            s = " ".join(x for x in CONTROLLERS if x in c.controllers(host_controllers(host)))
            return s + "\n" if s else "\n"
        if name.startswith("misc."):
            cg = c.misc
            assert cg is not None
            return {
                "misc.capacity": lambda: misc_cg_capacity_show(host.misc),
                "misc.current": lambda: misc_cg_current_show(cg),
                "misc.peak": lambda: misc_cg_peak_show(cg),
                "misc.max": lambda: misc_cg_max_show(cg),
                "misc.events": lambda: misc_events_show(cg),
                "misc.events.local": lambda: misc_events_local_show(cg),
            }[name]()
        if name.startswith("sgx_epc."):
            return self._rfc_read(c, name, path)
        m = c.memcg
        assert m is not None
        if name == "memory.max":
            return "max\n" if m.max_pages >= PAGE_COUNTER_MAX else f"{m.max_pages * PAGE_SIZE}\n"
        if name == "memory.current":
            return f"{m.usage}\n"
        return (
            f"low 0\nhigh 0\nmax {m.events_max}\noom {m.events_oom}\n"
            f"oom_kill {m.oom_kills}\noom_group_kill 0\n"
        )

    # --- write ------------------------------------------------------------------------------

    def write(self, path: str, data: str | bytes, *, task: Task | None = None) -> int:
        """Write an interface file, as one write(2).  Returns the bytes written.

        Raises OSError: ENOENT (no such file/cgroup), ENOTDIR, EISDIR, EACCES (read-only
        file), E2BIG (more than a page of data), EINVAL (malformed or negative value,
        unknown resource or controller), ERANGE (value above 2^64-1), EBUSY
        (cgroup.procs / subtree_control rules), ESRCH (no such pid).  State is unchanged
        on error.  TypeError: *data* is neither str nor bytes (as ``os.write()``).
        """
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
        elif isinstance(data, str):
            raw = data.encode("utf-8", "surrogateescape")
        else:
            raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
        c, name, writable = self._file(path)
        if not writable:
            raise _err(errno.EACCES, path)
        if len(raw) > WRITE_MAX:
            raise _err(errno.E2BIG, path)
        # kernfs_fop_write_iter() NUL-terminates the buffer and every handler here reads
        # it as a C string (strstrip, strsep, kstrto*): it ends at the first NUL
        data = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        host = self.host
        if name == "misc.max":
            assert c.misc is not None
            ret = misc_cg_max_write(c.misc, data)
            pol = host.policy
            if not ret and pol is not None and pol.max_written is not None:
                pol.max_written(host, c.misc)
        elif name == "cgroup.subtree_control":
            ret = cgroup_subtree_control_write(host, c, data)
        elif name == "cgroup.procs":
            ret = self._procs_write(c, data, task)
        elif name.startswith("sgx_epc."):
            ret = self._rfc_write(c, name, data, task)
        else:  # memory.max
            ret = self._memory_max_write(c, data)
        if ret:
            raise _err(-ret, path)
        return len(raw)

    def _rfc_read(self, c: Cgroup, name: str, path: str) -> str:
        """The rfc-knobs extension's files (epcsim.kernel.rfc_knobs; in no kernel)."""
        from . import rfc_knobs as rk

        if name in _WRITE_ONLY:
            raise _err(errno.EACCES, path)
        assert c.misc is not None and c.misc.priv is not None
        sgx_cg = c.misc.priv
        r = sgx_cg.rfc
        if name == "sgx_epc.low":
            return rk.tunable_show(r.low)
        if name == "sgx_epc.high":
            return rk.tunable_show(r.high)
        if name == "sgx_epc.events":
            return rk.sgx_cgroup_events_show(sgx_cg)
        if name == "sgx_epc.stat":
            return rk.sgx_cgroup_stat_show(sgx_cg)
        rfc = self.host.rfc
        return rk.psi_show(rfc.psi_group(c), rfc.clock())

    def _rfc_write(self, c: Cgroup, name: str, data: str, task: Task | None) -> int:
        """sgx_epc.low / .high / .reclaim (epcsim.kernel.rfc_knobs; in no kernel)."""
        from . import rfc_knobs as rk

        assert c.misc is not None and c.misc.priv is not None
        sgx_cg = c.misc.priv
        if name == "sgx_epc.low":
            return rk.sgx_cgroup_low_write(self.host, sgx_cg, data)
        if name == "sgx_epc.high":
            return rk.sgx_cgroup_high_write(self.host, sgx_cg, data, task)
        return rk.sgx_cgroup_reclaim_write(self.host, sgx_cg, data, task)

    def _procs_write(self, c: Cgroup, data: str, task: Task | None) -> int:
        """Models cgroup_procs_write(): kstrtoint(strstrip(buf), 0) then attach; any
        parse failure or a negative pid is EINVAL; 0 is the writing task."""
        ret, pid = kstrtoint(data.strip(" \t\n\v\f\r"), 0)
        if ret or pid < 0:
            return -errno.EINVAL
        if pid == 0:
            if task is None:
                return -errno.EINVAL
            t = task
        else:
            t = self.host.tasks.get(pid)
            if t is None or t.exited:
                return -errno.ESRCH
        return cgroup_attach_task(self.host, c, t)

    def _memory_max_write(self, c: Cgroup, data: str) -> int:
        """Models memory_max_write() / page_counter_memparse(buf, "max").

        Deliberate difference: lowering memory.max below the current usage does not
        reclaim or OOM-kill at write time; the next charge does.
        """
        s = data.strip()
        if s == "max":
            pages = PAGE_COUNTER_MAX
        else:
            v, rest = memparse(s)
            if rest:
                return -errno.EINVAL
            pages = min(v // PAGE_SIZE, PAGE_COUNTER_MAX)
        assert c.memcg is not None
        c.memcg.max_pages = pages
        return 0

    # --- mkdir / rmdir --------------------------------------------------------------------

    def mkdir(self, path: str) -> None:
        """Models ``mkdir(2)`` (do_mkdirat(), filename_create()): EEXIST if the name
        exists (a cgroup or a file) or is the root, ``.`` or ``..``; ENOENT / ENOTDIR
        for a bad parent."""
        parent, name, _ = self._walk(path)
        if name in ("", ".", "..") or name in self._files(parent):
            raise _err(errno.EEXIST, path)
        ret = cgroup_mkdir(self.host, parent, name)
        if ret:
            raise _err(-ret, path)

    def rmdir(self, path: str) -> None:
        """Models ``rmdir(2)`` (do_rmdir()): EBUSY for the root and for a cgroup with
        child cgroups or tasks; EINVAL for a last component ``.``, ENOTEMPTY for ``..``;
        ENOTDIR for a file; ENOENT if absent."""
        parent, name, _ = self._walk(path)
        if not name:
            raise _err(errno.EBUSY, path)
        if name == ".":
            raise _err(errno.EINVAL, path)
        if name == "..":
            raise _err(errno.ENOTEMPTY, path)
        c = parent.children.get(name)
        if c is None:
            if name in self._files(parent):
                raise _err(errno.ENOTDIR, path)
            raise _err(errno.ENOENT, path)
        ret = cgroup_rmdir(self.host, c)
        if ret:
            raise _err(-ret, path)
