"""The ENCLS leaves the compiled core counts (:mod:`epcsim.kernel.encls`)."""

from __future__ import annotations

from ._jit import inline
from .bits import _u
from .layout import S_LC, S_LCOST, S_STEPCOST

__all__ = ["encls_leaf"]


@inline
def encls_leaf(S, leaf, n):
    """No kernel twin: *n* ENCLS *leaf* instructions, counted (``host.encls_count``,
    which each reference function adds to where it runs a leaf) and charged to the
    current step."""
    S[_u(S_LC + leaf)] += n
    S[S_STEPCOST] += n * S[_u(S_LCOST + leaf)]
