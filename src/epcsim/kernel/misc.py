"""The misc cgroup controller for the ``sgx_epc`` resource (kernel/cgroup/misc.c, v16 patches 2-4).

Models ``kernel/cgroup/misc.c`` as extended by patches 02-04: the per-cgroup state
(``struct misc_cg`` / ``struct misc_res``: usage, max, peak, events, events_local),
``misc_cg_try_charge()``, ``misc_cg_uncharge()``, the per-resource ``alloc``/``free``
callbacks (``struct misc_res_ops``), css reference counting, and the text of the
interface files (``misc_cg_max_show/write``, ``misc_cg_current_show``,
``misc_cg_peak_show``, ``misc_cg_capacity_show``, ``misc_events_show``,
``misc_events_local_show``) including ``kstrtou64()``.

The resource names are those of the kernel the series applies to (v6.11, the base of
v16 and v17): ``misc_res_name[]`` = sev, sev_es (CONFIG_KVM_AMD_SEV) and the series'
sgx_epc (patch 04, "cgroup/misc: Add SGX EPC resource type").  ``tdx`` was added to the
misc controller in 2025, after that base: for the modelled kernel it is an unknown name,
EINVAL whatever the value.  Only ``sgx_epc`` has a non-zero capacity on a modelled host;
sev and sev_es are accepted as names but have capacity 0, so writing them is EINVAL
exactly as on an SGX-only machine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .constants import (
    EBUSY,
    EINVAL,
    ERANGE,
    MAX_NUM,
    MAX_STR,
    MISC_RES_NAMES,
    SGX_EPC_RES,
)

if TYPE_CHECKING:
    from .cgroup import Cgroup
    from .epc_cgroup import SgxCgroup

__all__ = [
    "MiscCg",
    "MiscController",
    "misc_cg_try_charge",
    "misc_cg_uncharge",
    "misc_cg_charge_if_fits",
    "misc_cg_refuser",
    "kstrtou64",
    "kstrtoint",
    "css_get",
    "css_tryget",
    "css_put",
]


class MiscCg:
    """Models ``struct misc_cg`` with its single ``sgx_epc`` ``struct misc_res``.

    Also carries the css state the SGX code relies on: the reference count (one base
    reference while online, one per live child css, one per EPC page charged here, and
    the temporary references of iterators), ``online`` (cleared by rmdir / controller
    disable), and the preorder ``children`` list (oldest first, as
    ``css->children``).
    """

    __slots__ = (
        "parent",
        "children",
        "usage",
        "max",
        "peak",
        "events",
        "events_local",
        "refcnt",
        "online",
        "freed",
        "priv",
        "cgroup",
        "ctrl",
    )

    def __init__(self, ctrl: MiscController, parent: MiscCg | None, cgroup: Cgroup | None):
        self.ctrl = ctrl
        self.parent = parent
        self.children: list[MiscCg] = []
        self.usage = 0
        self.max = MAX_NUM
        self.peak = 0
        self.events = 0
        self.events_local = 0
        self.refcnt = 1
        self.online = True
        self.freed = False
        #: ``res[MISC_CG_RES_SGX_EPC].priv``: the :class:`SgxCgroup`
        self.priv: SgxCgroup | None = None
        #: the cgroup directory while online; None once offline
        self.cgroup = cgroup

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def path(self) -> str:
        return self.cgroup.path if self.cgroup is not None else "(offline)"

    def __repr__(self) -> str:
        return f"<MiscCg {self.path()} usage={self.usage} refcnt={self.refcnt}>"


class MiscController:
    """The misc controller: ``misc_res_capacity[]``, ``root_cg`` and ``misc_res_ops``."""

    def __init__(self) -> None:
        #: ``misc_res_capacity[MISC_CG_RES_SGX_EPC]`` in bytes; 0 until registered.
        self.capacity = 0
        self.root = MiscCg(self, None, None)
        #: ``misc_res_ops[SGX_EPC]``: ``alloc(cg) -> int`` and ``free(cg)`` callbacks.
        self.ops_alloc: Callable[[MiscCg], int] | None = None
        self.ops_free: Callable[[MiscCg], None] | None = None

    def misc_cg_set_capacity(self, capacity: int) -> None:
        """Models misc_cg_set_capacity()."""
        self.capacity = capacity

    def misc_cg_set_ops(
        self, alloc: Callable[[MiscCg], int], free: Callable[[MiscCg], None]
    ) -> None:
        """Models misc_cg_set_ops() (patch 02)."""
        self.ops_alloc = alloc
        self.ops_free = free

    def css_alloc(self, parent: MiscCg, cgroup: Cgroup) -> MiscCg:
        """Models misc_cg_alloc() + the per-resource ``alloc`` callback (patch 02).

        The child takes a reference on its parent, as a css does.
        """
        cg = MiscCg(self, parent, cgroup)
        if self.capacity and self.ops_alloc is not None:
            self.ops_alloc(cg)
        parent.children.append(cg)
        parent.refcnt += 1
        return cg

    def css_offline(self, cg: MiscCg) -> None:
        """The css is killed (rmdir or controller disabled): drop the base reference.

        It stays in the tree, visible to iterators, until its last reference is gone.
        """
        cg.online = False
        cg.cgroup = None
        css_put(cg)


def css_get(cg: MiscCg) -> None:
    """``css_get()``."""
    cg.refcnt += 1


def css_tryget(cg: MiscCg) -> bool:
    """``css_tryget()``: fails only once the count reached zero (freed)."""
    if cg.refcnt <= 0 or cg.freed:
        return False
    cg.refcnt += 1
    return True


def css_put(cg: MiscCg) -> None:
    """``css_put()``; at zero the css is freed: ``misc_cg_free()`` runs the ``free``
    callbacks (SGX: §4.6 cursor fix-up), the css leaves its parent's children and
    drops the reference it held on the parent."""
    cg.refcnt -= 1
    if cg.refcnt > 0:
        return
    if cg.parent is None:
        raise AssertionError("misc root css reference count reached zero")
    ctrl = cg.ctrl
    if ctrl.capacity and ctrl.ops_free is not None:
        ctrl.ops_free(cg)
    cg.freed = True
    parent = cg.parent
    parent.children.remove(cg)
    css_put(parent)


def misc_cg_try_charge(cg: MiscCg, amount: int) -> int:
    """Models misc_cg_try_charge() (misc.c; hierarchical charge, max events).

    Charges *amount* bytes to *cg* and every ancestor.  At each level the new usage is
    compared with that level's ``max`` and with the capacity; peak is updated for each
    level that passed, before a failure higher up is found (as the kernel does).

    Returns:
        0 on success;
        -EINVAL if the capacity is 0 (resource not registered);
        -EBUSY if some level would exceed its max or the capacity: its ``events_local``
        and the hierarchical ``events`` of it and its non-root ancestors are
        incremented, and the charge is undone at every level.
    """
    capacity = cg.ctrl.capacity
    if not capacity:
        return -EINVAL
    if not amount:
        return 0
    i = cg
    while i is not None:
        new = i.usage + amount
        i.usage = new
        if new > i.max or new > capacity:
            break
        if new > i.peak:
            i.peak = new
        i = i.parent
    else:
        return 0
    # err_charge: events at the failing level and its ancestors (root has no file)
    i.events_local += 1
    j = i
    while j is not None and j.parent is not None:
        j.events += 1
        j = j.parent
    j = cg
    while True:
        j.usage -= amount
        if j is i:
            break
        j = j.parent
    return -EBUSY


def misc_cg_refuser(cg: MiscCg, amount: int) -> MiscCg | None:
    """The level at which :func:`misc_cg_try_charge` of *amount* bytes to *cg* would
    fail now: the first of *cg* and its ancestors whose usage plus *amount* exceeds its
    ``max`` or the capacity (with no capacity, *cg*: -EINVAL); None if the charge would
    succeed (always for 0 bytes).  Model bookkeeping, changes nothing."""
    capacity = cg.ctrl.capacity
    if not capacity:
        return cg
    if not amount:
        return None
    i: MiscCg | None = cg
    while i is not None:
        new = i.usage + amount
        if new > i.max or new > capacity:
            return i
        i = i.parent
    return None


def misc_cg_charge_if_fits(cg: MiscCg, amount: int) -> bool:
    """misc_cg_try_charge() when it is certain to succeed: charge *amount* (and update
    peaks) only if every level stays within its max and the capacity; otherwise change
    nothing (no event, no peak) and return False, leaving the real attempt to
    :func:`misc_cg_try_charge`.  A fast path for callers that can fall back."""
    if misc_cg_refuser(cg, amount) is not None:
        return False
    i: MiscCg | None = cg
    while i is not None:
        i.usage += amount
        if i.usage > i.peak:
            i.peak = i.usage
        i = i.parent
    return True


def misc_cg_uncharge(cg: MiscCg, amount: int) -> None:
    """Models misc_cg_uncharge(): subtract from *cg* and every ancestor.

    The kernel WARNs when a usage would go negative; the model raises, since that is a
    bug in the model.
    """
    i = cg
    while i is not None:
        i.usage -= amount
        if i.usage < 0:
            raise AssertionError(f"misc usage of {i!r} went negative")
        i = i.parent


# --- interface-file text (misc.c *_show / *_write) -------------------------------------


def _res_line_visible(ctrl: MiscController, value: int) -> bool:
    return bool(ctrl.capacity) or value != 0


def misc_cg_max_show(cg: MiscCg) -> str:
    """Models misc_cg_max_show(): ``sgx_epc max`` or ``sgx_epc <bytes>``."""
    if not cg.ctrl.capacity:
        return ""
    v = MAX_STR if cg.max == MAX_NUM else str(cg.max)
    return f"{SGX_EPC_RES} {v}\n"


def misc_cg_current_show(cg: MiscCg) -> str:
    """Models misc_cg_current_show()."""
    if not _res_line_visible(cg.ctrl, cg.usage):
        return ""
    return f"{SGX_EPC_RES} {cg.usage}\n"


def misc_cg_peak_show(cg: MiscCg) -> str:
    """Models misc_cg_peak_show()."""
    if not _res_line_visible(cg.ctrl, cg.peak):
        return ""
    return f"{SGX_EPC_RES} {cg.peak}\n"


def misc_cg_capacity_show(ctrl: MiscController) -> str:
    """Models misc_cg_capacity_show()."""
    if not ctrl.capacity:
        return ""
    return f"{SGX_EPC_RES} {ctrl.capacity}\n"


def misc_events_show(cg: MiscCg) -> str:
    """Models misc_events_show(): ``sgx_epc.max <count>``."""
    if not _res_line_visible(cg.ctrl, cg.events):
        return ""
    return f"{SGX_EPC_RES}.max {cg.events}\n"


def misc_events_local_show(cg: MiscCg) -> str:
    """Models misc_events_local_show()."""
    if not _res_line_visible(cg.ctrl, cg.events_local):
        return ""
    return f"{SGX_EPC_RES}.max {cg.events_local}\n"


def kstrtoint(s: str, base: int = 0) -> tuple[int, int]:
    """Models kstrtoint() (lib/kstrtox.c, via kstrtoll()): an optional ``-`` (then no
    ``+``) or ``+``, digits as :func:`kstrtou64`, result within a C int.

    Returns: ``(0, value)``, ``(-EINVAL, 0)`` or ``(-ERANGE, 0)``.
    """
    if s.startswith("-"):
        ret, v = _kstrtoull(s[1:], base)
        if ret:
            return ret, 0
        v = -v
    else:
        ret, v = kstrtou64(s, base)
        if ret:
            return ret, 0
    if not -(1 << 31) <= v < (1 << 31):
        return -ERANGE, 0
    return 0, v


def kstrtou64(s: str, base: int = 0) -> tuple[int, int]:
    """Models kstrtou64() / kstrtoull() (lib/kstrtox.c).

    Accepts an optional leading ``+``, then digits in *base* (0 = auto: ``0x``/``0X``
    followed by a hex digit means hex, a leading ``0`` octal, else decimal), then at most
    one trailing newline and nothing else.

    Returns:
        ``(0, value)`` on success; ``(-EINVAL, 0)`` for no digits or trailing garbage
        (including a leading ``-``); ``(-ERANGE, 0)`` if the value exceeds 2^64-1.
    """
    if s.startswith("+"):
        s = s[1:]
    return _kstrtoull(s, base)


def _kstrtoull(s: str, base: int) -> tuple[int, int]:
    """Models _kstrtoull(): digits (no sign), one optional trailing newline."""
    pos = 0
    if base == 0:
        if s[:1] == "0":
            if s[1:2] in ("x", "X") and s[2:3] != "" and s[2] in "0123456789abcdefABCDEF":
                base = 16
                pos = 2
            else:
                base = 8
        else:
            base = 10
    elif base == 16 and s[:2] in ("0x", "0X"):
        pos = 2
    value = 0
    overflow = False
    start = pos
    while pos < len(s):
        c = s[pos]
        if "0" <= c <= "9":
            d = ord(c) - 48
        elif "a" <= c.lower() <= "f":
            d = ord(c.lower()) - 87
        else:
            break
        if d >= base:
            break
        value = value * base + d
        if value > MAX_NUM:
            overflow = True
        pos += 1
    if pos == start:
        return -EINVAL, 0
    if overflow:
        return -ERANGE, 0
    if s[pos : pos + 1] == "\n":
        pos += 1
    if pos != len(s):
        return -EINVAL, 0
    return 0, value


def misc_cg_max_write(cg: MiscCg, buf: str) -> int:
    """Models misc_cg_max_write() (misc.c; the misc.max interface file).

    Accepts ``"<name> <u64>"`` or ``"<name> max"`` (surrounding whitespace stripped).

    The name is looked up in ``misc_res_name[]`` (:data:`MISC_RES_NAMES`: sev, sev_es,
    sgx_epc) before the value is parsed, so an unknown name (``tdx``) is EINVAL even with
    a value kstrtou64 would refuse with ERANGE.

    Returns:
        0 after storing the new max (verbatim: no rounding, no eviction);
        -EINVAL for a missing value, an unknown name, a resource with capacity 0, or a
        value kstrtou64 rejects; -ERANGE for a value above 2^64-1.
    """
    buf = buf.strip(" \t\n\v\f\r")
    token, sep, rest = buf.partition(" ")
    if not sep:
        return -EINVAL
    if token not in MISC_RES_NAMES:
        return -EINVAL
    if rest == MAX_STR:
        value = MAX_NUM
    else:
        ret, value = kstrtou64(rest, 0)
        if ret:
            return ret
    if token != SGX_EPC_RES or not cg.ctrl.capacity:
        return -EINVAL
    cg.max = value
    return 0
