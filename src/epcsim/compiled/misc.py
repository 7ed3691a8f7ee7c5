"""The misc controller's charge and uncharge as the compiled core runs them
(:mod:`epcsim.kernel.misc`)."""

from __future__ import annotations

from ._jit import inline
from .bits import _u
from .layout import CG_LIMIT, CG_PARENT, CG_PEAK, CG_USAGE

__all__ = ["misc_cg_charge_if_fits", "misc_cg_fits", "misc_cg_try_charge", "misc_cg_uncharge"]


@inline
def misc_cg_try_charge(CG, c, amount):
    """Models misc_cg_try_charge() (specialised from epcsim.kernel.misc.misc_cg_try_charge)
    up to its err_charge: *amount* charged from *c* up the tree, each level's peak
    raised, until a level's usage would exceed its limit.  Returns -1 if every level
    took the charge, else that level, charged too (its err_charge, which counts the
    event and undoes the charge, is
    :func:`epcsim.compiled.epc_cgroup._sgx_cgroup_try_charge`)."""
    i = c
    failed = -1
    while i >= 0:
        new = CG[CG_USAGE, _u(i)] + amount
        CG[CG_USAGE, _u(i)] = new
        if new > CG[CG_LIMIT, _u(i)]:
            failed = i
            break
        if new > CG[CG_PEAK, _u(i)]:
            CG[CG_PEAK, _u(i)] = new
        i = CG[CG_PARENT, _u(i)]
    return failed


@inline
def misc_cg_uncharge(CG, c, amount):
    """Models misc_cg_uncharge() (specialised from epcsim.kernel.misc.misc_cg_uncharge)
    up the tree."""
    while c >= 0:
        CG[CG_USAGE, _u(c)] -= amount
        c = CG[CG_PARENT, _u(c)]


@inline
def misc_cg_charge_if_fits(CG, c, amount):
    """Models misc_cg_charge_if_fits() (specialised from
    epcsim.kernel.misc.misc_cg_charge_if_fits), misc_cg_try_charge() when it is certain
    to succeed: *amount* charged (peaks raised) only if every level stays within its
    limit; otherwise nothing changes.  Returns whether it charged."""
    if not misc_cg_fits(CG, c, amount):
        return False
    i = c
    while i >= 0:
        new = CG[CG_USAGE, _u(i)] + amount
        CG[CG_USAGE, _u(i)] = new
        if new > CG[CG_PEAK, _u(i)]:
            CG[CG_PEAK, _u(i)] = new
        i = CG[CG_PARENT, _u(i)]
    return True


@inline
def misc_cg_fits(CG, c, amount):
    """No kernel twin (a test, nothing changes): whether *amount* more fits at every
    level from *c* up (misc_cg_try_charge() would succeed)."""
    i = c
    while i >= 0:
        if CG[CG_USAGE, _u(i)] + amount > CG[CG_LIMIT, _u(i)]:
            return False
        i = CG[CG_PARENT, _u(i)]
    return True
