"""cgroup v2: the directory tree, tasks, ``cgroup.subtree_control`` and css lookup.

Models what the SGX code needs of ``kernel/cgroup/cgroup.c``: ``cgroup_mkdir()``,
``cgroup_rmdir()`` (EBUSY with children or tasks), ``cgroup_subtree_control_write()``
for the ``memory`` and ``misc`` controllers (creating and killing the children's css),
``cgroup_attach_task()`` via ``cgroup.procs`` (with the no-internal-process rule), and
the effective css of a task: the css of the nearest ancestor-or-self where the
controller is enabled (``task_get_css()``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import EBUSY, EEXIST, EINVAL, ENOENT

if TYPE_CHECKING:
    from .host import Host, Task
    from .memcg import MemCg
    from .misc import MiscCg

__all__ = ["Cgroup", "CONTROLLERS", "cgroup_mkdir", "cgroup_rmdir", "cgroup_attach_task"]

#: Controllers the model has, in the kernel's subsystem order (as printed).
CONTROLLERS = ("memory", "misc")


class Cgroup:
    """Models ``struct cgroup`` (one cgroup v2 directory)."""

    __slots__ = ("name", "parent", "children", "tasks", "subtree_control", "misc", "memcg")

    def __init__(self, name: str, parent: Cgroup | None) -> None:
        self.name = name
        self.parent = parent
        self.children: dict[str, Cgroup] = {}
        self.tasks: set[int] = set()
        self.subtree_control: set[str] = set()
        #: this cgroup's misc css, if misc is enabled here (always at the root)
        self.misc: MiscCg | None = None
        #: this cgroup's memory css, if memory is enabled here (always at the root)
        self.memcg: MemCg | None = None

    @property
    def path(self) -> str:
        parts = []
        c: Cgroup | None = self
        while c is not None and c.parent is not None:
            parts.append(c.name)
            c = c.parent
        return "/" + "/".join(reversed(parts))

    def controllers(self, available: tuple[str, ...] = CONTROLLERS) -> set[str]:
        """``cgroup.controllers`` (``cgroup_control()``): what the parent enables for
        this cgroup; at the root every controller *available* on the host."""
        if self.parent is None:
            return set(available)
        return set(self.parent.subtree_control)

    def effective_misc(self) -> MiscCg:
        """The misc css a task of this cgroup charges: nearest where misc is enabled."""
        c: Cgroup | None = self
        while c is not None:
            if c.misc is not None:
                return c.misc
            c = c.parent
        raise AssertionError("root cgroup without a misc css")

    def effective_memcg(self) -> MemCg:
        """The memcg of a task of this cgroup: nearest where memory is enabled."""
        c: Cgroup | None = self
        while c is not None:
            if c.memcg is not None:
                return c.memcg
            c = c.parent
        raise AssertionError("root cgroup without a memcg")

    def walk(self):
        """Preorder over this subtree (creation order)."""
        yield self
        for ch in self.children.values():
            yield from ch.walk()

    def __repr__(self) -> str:
        return f"<Cgroup {self.path}>"


def _create_css(host: Host, cgrp: Cgroup, ctrl: str) -> None:
    parent = cgrp.parent
    assert parent is not None
    if ctrl == "misc":
        if host.misc_enabled:
            cgrp.misc = host.misc.css_alloc(parent.effective_misc(), cgrp)
    else:
        cgrp.memcg = host.memcg_alloc(parent.effective_memcg(), cgrp)


def _kill_css(host: Host, cgrp: Cgroup, ctrl: str) -> None:
    if ctrl == "misc":
        if cgrp.misc is not None:
            css = cgrp.misc
            cgrp.misc = None
            host.misc.css_offline(css)
    elif cgrp.memcg is not None:
        m = cgrp.memcg
        cgrp.memcg = None
        m.online = False
        m.cgroup = None


def cgroup_mkdir(host: Host, parent: Cgroup, name: str) -> int:
    """Models cgroup_mkdir(): create *name* under *parent* with the css of every
    controller enabled in ``parent.subtree_control``.

    Returns: 0; -EEXIST if a cgroup of that name exists (the cgroupfs layer also
    refuses the name of an existing file); -EINVAL for an empty name, one with a '/' or
    a newline.
    """
    if not name or "/" in name or "\n" in name or name in (".", ".."):
        return -EINVAL
    if name in parent.children:
        return -EEXIST
    cgrp = Cgroup(name, parent)
    parent.children[name] = cgrp
    for ctrl in CONTROLLERS:
        if ctrl in parent.subtree_control:
            _create_css(host, cgrp, ctrl)
    return 0


def cgroup_rmdir(host: Host, cgrp: Cgroup) -> int:
    """Models cgroup_rmdir(): EBUSY with live children or tasks; otherwise the cgroup
    goes away and its css go offline (a misc css with charged pages stays in the tree,
    reachable by reclaim, until they are freed: each page holds a css reference, v16 patch 5).

    Returns: 0, -EBUSY, or -EINVAL for the root.
    """
    if cgrp.parent is None:
        return -EINVAL
    if cgrp.children or cgrp.tasks:
        return -EBUSY
    for ctrl in CONTROLLERS:
        _kill_css(host, cgrp, ctrl)
    del cgrp.parent.children[cgrp.name]
    return 0


def host_controllers(host: Host) -> tuple[str, ...]:
    """The controllers enabled on the host (``cgroup_ssid_enabled()``), in order."""
    return tuple(c for c in CONTROLLERS if c != "misc" or host.misc_enabled)


def cgroup_subtree_control_write(host: Host, cgrp: Cgroup, buf: str) -> int:
    """Models cgroup_subtree_control_write() for the ``memory`` and ``misc`` controllers.

    The buffer is stripped, then split on single spaces (empty tokens skipped); each
    token is ``+name`` or ``-name`` of a controller enabled on the host.  The checks run
    per controller in subsystem order (memory, then misc).  All-or-nothing.

    Returns:
        0; -EINVAL for a malformed token or unknown (or boot-disabled) controller;
        -ENOENT for enabling a controller this cgroup does not have; -EBUSY for
        disabling a controller a child still enables in its own subtree_control, or for
        enabling on a non-root cgroup that has tasks (no internal processes).
    """
    available = host_controllers(host)
    enable: set[str] = set()
    disable: set[str] = set()
    for tok in buf.strip(" \t\n\v\f\r").split(" "):
        if not tok:
            continue
        name = tok[1:]
        if name not in available:
            return -EINVAL
        if tok[0] == "+":
            enable.add(name)
            disable.discard(name)
        elif tok[0] == "-":
            disable.add(name)
            enable.discard(name)
        else:
            return -EINVAL
    have = cgrp.controllers(available)
    for ctrl in CONTROLLERS:
        if ctrl in enable:
            if ctrl in cgrp.subtree_control:
                enable.discard(ctrl)
            elif ctrl not in have:
                return -ENOENT
        elif ctrl in disable:
            if ctrl not in cgrp.subtree_control:
                disable.discard(ctrl)
            elif any(ctrl in ch.subtree_control for ch in cgrp.children.values()):
                return -EBUSY
    if enable and cgrp.parent is not None and cgrp.tasks:
        return -EBUSY
    for ctrl in CONTROLLERS:
        if ctrl in enable:
            cgrp.subtree_control.add(ctrl)
            for ch in cgrp.children.values():
                _create_css(host, ch, ctrl)
        elif ctrl in disable:
            cgrp.subtree_control.discard(ctrl)
            for ch in cgrp.children.values():
                _kill_css(host, ch, ctrl)
    return 0


def cgroup_attach_task(host: Host, cgrp: Cgroup, task: Task) -> int:
    """Models a write of a pid to ``cgroup.procs`` (cgroup_attach_task()).

    Existing charges stay where they are ("Migration" in v16 patch 15): only future
    allocations charge the new cgroup.

    Returns: 0; -EBUSY if *cgrp* is a non-root cgroup with controllers enabled in its
    subtree_control (no internal processes); -ESRCH-like errors are the caller's.
    """
    if cgrp.parent is not None and cgrp.subtree_control:
        return -EBUSY
    old = host.cgroup_of(task)
    old.tasks.discard(task.pid)
    cgrp.tasks.add(task.pid)
    task.cgroup = cgrp
    return 0
