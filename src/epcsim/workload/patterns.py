"""Synthetic access patterns: which enclave page each access of a workload touches.

A scenario's ``workload`` table names a pattern and its parameters::

    workload = { pattern = "zipf", alpha = 0.9, accesses = 1_000_000 }

:func:`make_pattern` turns such a table into a :class:`Pattern` over an enclave of
*npages* data pages; the simulator then asks it for page indices in runs with
``take(rng, n)``.  Kinds (``spec["pattern"]``):

- ``sequential``: 0, 1, ..., npages-1, then wraps to 0.
- ``loop``: ``start``, start+1, ..., start+length-1, repeated (``start`` defaults to 0;
  the loop must lie inside ``[0, npages)``).
- ``uniform``: independent, uniform over ``[0, npages)``.
- ``zipf``: bounded Zipf over *npages* ranks, P(rank r) ∝ 1/r**alpha for r = 1..npages
  (``alpha > 0``).  Ranks map to pages through a fixed permutation,
  ``np.random.default_rng(0x5eed + npages).permutation(npages)`` (see
  :func:`zipf_permutation`), so the hottest pages are spread over the whole enclave rather
  than packed at its start, and the same enclave size always has the same hot pages.
- ``hotcold``: the hot set is the first ``ceil(hot_fraction * npages)`` pages
  (``hot_fraction`` in (0, 1]); each access goes to the hot set with probability
  ``hot_probability`` (in [0, 1]) and is uniform within the set it goes to.  If the hot
  set is the whole enclave every access is hot.
- ``phases``: ``phases = [{pattern = ..., accesses = N, ...}, ...]``; each phase is its own
  pattern (with its own position state) and runs for exactly N accesses, even when one
  ``take`` spans a boundary; after the last phase's N accesses the last pattern continues.

The keys ``accesses`` and ``duration`` at the top level of a workload table belong to the
simulator (how long the workload runs); :func:`make_pattern` accepts and ignores them.
Any other unknown key, a missing key, a value of the wrong type or out of range raises
:class:`PatternError` (an :class:`~epcsim.errors.EpcsimError`) naming the field and the
value, e.g. ``workload.alpha: must be > 0, got -1``.

Determinism and chunking.  ``sequential`` and ``loop`` use no randomness; every random
kind draws exactly one float64 (``rng.random``) per access, in access order.  So the
sequence depends only on the rng's state and the number of accesses taken, never on how
the caller splits them into ``take`` calls: ``take(rng, a)`` then ``take(rng, n - a)``
returns the same pages as ``take(rng, n)``, and phases of different kinds consume the
rng in the same order either way.

Speed.  ``take`` is vectorised (a handful of NumPy passes, no Python loop per access).
The Zipf CDF (float64) and its guide table are built once per ``(npages, alpha)`` and
cached for the process (:func:`zipf_cdf`); sampling returns exactly
``perm[np.searchsorted(cdf, u, side="right")]`` for ``u = rng.random(n)``, but resolves most
draws with one lookup in a guide table instead of a binary search over the whole CDF.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import EpcsimError, EpcsimUsageError

__all__ = [
    "PATTERN_KINDS",
    "Pattern",
    "PatternError",
    "check_pattern",
    "make_pattern",
    "pattern_description",
    "zipf_cdf",
    "zipf_permutation",
]

#: Largest enclave the patterns address, in pages (indices fit an int32; 8 TiB).
MAX_NPAGES = 2**31 - 1

#: Seed base of the Zipf rank → page permutation (the seed is ``ZIPF_SEED + npages``).
ZIPF_SEED = 0x5EED

#: Keys the simulator owns at the top level of a workload table; ignored here.
CALLER_KEYS = frozenset({"accesses", "duration"})

#: Each kind's (required, optional) parameter keys, besides ``pattern``.
PATTERN_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sequential": ((), ()),
    "loop": (("length",), ("start",)),
    "uniform": ((), ()),
    "zipf": (("alpha",), ()),
    "hotcold": (("hot_fraction", "hot_probability"), ()),
    "phases": (("phases",), ()),
}


class PatternError(EpcsimError):
    """A bad workload pattern table; *field* is the dotted field (``workload.alpha``) and
    *value* the offending value."""

    def __init__(self, field: str, message: str, value: Any = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.value = value


@runtime_checkable
class Pattern(Protocol):
    """A stream of page indices in ``[0, npages)`` with its own position state."""

    npages: int

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The next *n* page indices (np.int64), continuing where the last call stopped;
        deterministic given the rng state and the call sequence."""
        ...

    def take_into(self, rng: np.random.Generator, n: int, out: np.ndarray) -> np.ndarray:
        """:meth:`take` written to ``out[:n]`` (a 1-D int64 array of at least *n*
        elements), which is returned: the compiled engine's thread buffers."""
        ...


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Spec:
    """A validated pattern table: kind, parameters, and for ``phases`` the sub-specs."""

    kind: str
    params: dict[str, Any]
    phases: tuple[tuple[_Spec, int], ...] = ()


def _fail(field: str, message: str, value: Any = None) -> PatternError:
    return PatternError(field, message, value)


def _as_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _fail(field, f"must be an integer, got {value!r}", value)
    return int(value)


def _as_real(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _fail(field, f"must be a number, got {value!r}", value)
    x = float(value)
    if not math.isfinite(x):
        raise _fail(field, f"must be a finite number, got {value!r}", value)
    return x


def _check_npages(npages: Any, field: str = "npages") -> int:
    n = _as_int(npages, field)
    if n <= 0:
        raise _fail(field, f"must be > 0, got {npages!r}", npages)
    if n > MAX_NPAGES:
        raise _fail(field, f"must be <= {MAX_NPAGES}, got {npages!r}", npages)
    return n


def _parse(spec: Any, npages: int | None, field: str, *, phase: bool = False) -> _Spec:
    """Validate *spec* (a workload table, or one phase of it when *phase*)."""
    if not isinstance(spec, Mapping):
        raise _fail(field, f"must be a table, got {spec!r}", spec)
    if "pattern" not in spec:
        raise _fail(f"{field}.pattern", "missing (one of " + ", ".join(PATTERN_KINDS) + ")")
    kind = spec["pattern"]
    if not isinstance(kind, str):
        raise _fail(f"{field}.pattern", f"must be a string, got {kind!r}", kind)
    if kind not in PATTERN_KINDS:
        raise _fail(
            f"{field}.pattern",
            f"unknown pattern {kind!r} (one of {', '.join(PATTERN_KINDS)})",
            kind,
        )
    required, optional = PATTERN_KINDS[kind]
    extra = {"accesses"} if phase else CALLER_KEYS
    valid = {"pattern", *required, *optional, *extra}
    for key in spec:
        if key not in valid:
            hint = " (a phase runs for a number of accesses)" if key == "duration" else ""
            raise _fail(
                f"{field}.{key}",
                f"unknown key for pattern {kind!r}{hint}; valid keys: {', '.join(sorted(valid))}",
                spec[key],
            )
    for key in required:
        if key not in spec:
            raise _fail(f"{field}.{key}", f"missing (required by pattern {kind!r})")

    params: dict[str, Any] = {}
    phases: tuple[tuple[_Spec, int], ...] = ()
    if kind == "loop":
        start = _as_int(spec.get("start", 0), f"{field}.start")
        length = _as_int(spec["length"], f"{field}.length")
        if start < 0:
            raise _fail(f"{field}.start", f"must be >= 0, got {spec['start']!r}", start)
        if length <= 0:
            raise _fail(f"{field}.length", f"must be > 0, got {spec['length']!r}", length)
        if npages is not None:
            if start >= npages:
                raise _fail(f"{field}.start", f"must be < npages ({npages}), got {start}", start)
            if start + length > npages:
                raise _fail(
                    f"{field}.length",
                    f"start + length must be <= npages ({npages}), got {length} (start={start})",
                    length,
                )
        params = {"start": start, "length": length}
    elif kind == "zipf":
        alpha = _as_real(spec["alpha"], f"{field}.alpha")
        if alpha <= 0:
            raise _fail(f"{field}.alpha", f"must be > 0, got {spec['alpha']!r}", spec["alpha"])
        params = {"alpha": alpha}
    elif kind == "hotcold":
        f = _as_real(spec["hot_fraction"], f"{field}.hot_fraction")
        if not 0 < f <= 1:
            raise _fail(
                f"{field}.hot_fraction",
                f"must be in (0, 1], got {spec['hot_fraction']!r}",
                spec["hot_fraction"],
            )
        p = _as_real(spec["hot_probability"], f"{field}.hot_probability")
        if not 0 <= p <= 1:
            raise _fail(
                f"{field}.hot_probability",
                f"must be in [0, 1], got {spec['hot_probability']!r}",
                spec["hot_probability"],
            )
        params = {"hot_fraction": f, "hot_probability": p}
    elif kind == "phases":
        raw = spec["phases"]
        if not isinstance(raw, list | tuple):
            raise _fail(f"{field}.phases", f"must be a list of tables, got {raw!r}", raw)
        if not raw:
            raise _fail(f"{field}.phases", f"must not be empty, got {raw!r}", raw)
        parsed = []
        for i, sub in enumerate(raw):
            sub_field = f"{field}.phases[{i}]"
            sub_spec = _parse(sub, npages, sub_field, phase=True)
            if "accesses" not in sub:
                raise _fail(f"{sub_field}.accesses", "missing (every phase needs accesses)")
            accesses = _as_int(sub["accesses"], f"{sub_field}.accesses")
            if accesses <= 0:
                raise _fail(
                    f"{sub_field}.accesses", f"must be > 0, got {sub['accesses']!r}", accesses
                )
            parsed.append((sub_spec, accesses))
        phases = tuple(parsed)
    return _Spec(kind, params, phases)


def _describe(spec: _Spec) -> str:
    if spec.kind == "phases":
        parts = [f"{_describe(s)} for {n} access{'' if n == 1 else 'es'}" for s, n in spec.phases]
        return f"phases({'; '.join(parts)}, then continues)"
    if not spec.params:
        return spec.kind
    args = ", ".join(f"{k}={v!r}" for k, v in spec.params.items())
    return f"{spec.kind}({args})"


def pattern_description(spec: Mapping[str, Any], npages: int | None = None) -> str:
    """One line describing the workload table *spec*, e.g.
    ``"zipf(alpha=0.9) over 262144 pages"`` (without *npages*: ``"zipf(alpha=0.9)"``).

    Raises:
        PatternError: as :func:`make_pattern` for a bad table.
    """
    if npages is not None:
        npages = _check_npages(npages)
    text = _describe(_parse(spec, npages, "workload"))
    return text if npages is None else f"{text} over {npages} pages"


# --------------------------------------------------------------------------- zipf tables

#: Guide-table buckets per rank (rounded up to a power of two, at most ``_GUIDE_MAX``).
_GUIDE_PER_RANK = 4
_GUIDE_MAX = 1 << 22


@lru_cache(maxsize=8)
def zipf_cdf(npages: int, alpha: float) -> np.ndarray:
    """The bounded Zipf CDF over *npages* ranks: ``cdf[i] = P(rank <= i + 1)`` with
    P(rank r) ∝ 1/r**alpha; float64, read-only, ``cdf[-1] == 1.0`` exactly.  Cached."""
    w = np.arange(1, npages + 1, dtype=np.float64)
    np.power(w, -alpha, out=w)
    cdf = np.cumsum(w, out=w)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    cdf.flags.writeable = False
    return cdf


@lru_cache(maxsize=8)
def zipf_permutation(npages: int) -> np.ndarray:
    """Rank → page map of the ``zipf`` pattern: ``perm[r - 1]`` is the page of rank r.

    Fixed per enclave size (seed ``ZIPF_SEED + npages``) so the hottest pages are spread
    over the enclave; int64, read-only.  Cached."""
    perm = np.random.default_rng(ZIPF_SEED + npages).permutation(npages).astype(np.int64)
    perm.flags.writeable = False
    return perm


@lru_cache(maxsize=8)
def _zipf_guide(npages: int, alpha: float) -> tuple[np.ndarray, int]:
    """A guide table for :func:`zipf_cdf`: *k* buckets (a power of two) over [0, 1) and,
    packed per bucket b as an int32 pair viewed as int64, the search result at the
    bucket's lower edge and at its upper edge.

    ``searchsorted(cdf, u, "right")`` is monotone in u, so for u in bucket
    b = floor(u * k) (exact: k is a power of two) the answer lies between the pair; where
    the two are equal the lookup is the answer, elsewhere a short bisection finishes it.
    """
    cdf = zipf_cdf(npages, alpha)
    k = min(_GUIDE_MAX, 1 << max(10, (_GUIDE_PER_RANK * npages - 1).bit_length()))
    # g[j] = searchsorted(cdf, j / k, "right") = #{i: cdf[i] <= j / k}
    #      = #{i: ceil(cdf[i] * k) <= j}, exact since cdf * k only shifts the exponent.
    x = cdf * k
    np.ceil(x, out=x)
    g = np.cumsum(np.bincount(x.astype(np.intp), minlength=k + 1)).astype(np.int32)
    pairs = np.empty((k, 2), dtype=np.int32)
    pairs[:, 0] = g[:-1]
    pairs[:, 1] = g[1:]
    guide = pairs.view(np.int64).reshape(k)
    guide.flags.writeable = False
    return guide, k


def _zipf_ranks(u: np.ndarray, npages: int, alpha: float) -> np.ndarray:
    """``np.searchsorted(zipf_cdf(npages, alpha), u, side="right")`` (int32), faster."""
    cdf = zipf_cdf(npages, alpha)
    guide, k = _zipf_guide(npages, alpha)
    x = u * k
    pairs = guide[x.astype(np.intp)].view(np.int32).reshape(-1, 2)
    ranks = pairs[:, 0].copy()
    idx = np.flatnonzero(ranks != pairs[:, 1])
    if idx.size == 0:
        return ranks
    # Bisection on the undecided draws only: the answer is the first i in [lo, hi] with
    # cdf[i] > u.  Compact the working set once it has halved.
    uu = u[idx]
    lo = ranks[idx]
    hi = pairs[idx, 1]
    while True:
        mid = hi - lo  # lo + (hi - lo) // 2: no int32 overflow near MAX_NPAGES
        mid >>= 1
        mid += lo
        above = cdf[mid] > uu
        np.copyto(hi, mid, where=above)
        mid += 1
        np.logical_not(above, out=above)
        np.copyto(lo, mid, where=above)
        active = lo < hi
        n_active = int(np.count_nonzero(active))
        if n_active == 0:
            break
        if n_active <= lo.size // 2:
            ranks[idx] = lo
            idx, uu, lo, hi = idx[active], uu[active], lo[active], hi[active]
    ranks[idx] = lo
    return ranks


# --------------------------------------------------------------------------- patterns


def _count(n: int) -> int:
    n = operator.index(n)
    if n < 0:
        raise EpcsimUsageError(f"take: n must be >= 0, got {n}")
    return n


def _check_out(n: int, out: np.ndarray) -> None:
    """take_into()'s buffer: 1-D int64 with room for *n*."""
    if out.dtype != np.int64 or out.ndim != 1 or len(out) < n:
        raise EpcsimUsageError(
            f"take: out must be a 1-D int64 array of at least {n} elements, "
            f"got {out.dtype} {out.shape}"
        )


class _Base:
    npages: int
    description: str

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def take_into(self, rng: np.random.Generator, n: int, out: np.ndarray) -> np.ndarray:
        """Pattern.take_into(): the drawn indices copied into the buffer."""
        n = _count(n)
        _check_out(n, out)
        out[:n] = self.take(rng, n)
        return out[:n]

    def __repr__(self) -> str:
        return f"<Pattern {self.description} over {self.npages} pages>"


class _Sequential(_Base):
    """0, 1, ..., npages-1, 0, 1, ..."""

    def __init__(self, npages: int) -> None:
        self.npages = npages
        self.description = "sequential"
        self._pos = 0

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:
        n = _count(n)
        pos = self._pos
        out = np.arange(pos, pos + n, dtype=np.int64)
        if pos + n > self.npages:
            out %= self.npages
        self._pos = (pos + n) % self.npages
        return out


class _Loop(_Base):
    """start, ..., start+length-1, repeated."""

    def __init__(self, npages: int, start: int, length: int) -> None:
        self.npages = npages
        self.start = start
        self.length = length
        self.description = f"loop(start={start}, length={length})"
        self._pos = 0

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:
        n = _count(n)
        pos = self._pos
        out = np.arange(pos, pos + n, dtype=np.int64)
        if pos + n > self.length:
            out %= self.length
        out += self.start
        self._pos = (pos + n) % self.length
        return out


class _Uniform(_Base):
    """Independent and uniform over [0, npages)."""

    def __init__(self, npages: int) -> None:
        self.npages = npages
        self.description = "uniform"

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(_count(n))
        # floor(u * npages) < npages for every float64 u < 1 (round-to-nearest never
        # reaches npages), so no clipping is needed.
        u *= self.npages
        return u.astype(np.int64)


class _Zipf(_Base):
    """Bounded Zipf over ranks, ranks mapped to pages by :func:`zipf_permutation`."""

    def __init__(self, npages: int, alpha: float) -> None:
        self.npages = npages
        self.alpha = alpha
        self.description = f"zipf(alpha={alpha!r})"
        # Build (or fetch) the tables now so the first take() is not the slow one.
        _zipf_guide(npages, alpha)
        self._perm = zipf_permutation(npages)

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(_count(n))
        return self._perm[_zipf_ranks(u, self.npages, self.alpha)]


def _hot_pages(npages: int, hot_fraction: float) -> int:
    """ceil(hot_fraction * npages), ignoring float noise (0.7 * 10 is 7 pages, not 8),
    and at least one page."""
    x = hot_fraction * npages
    r = round(x)
    nhot = r if abs(x - r) <= 1e-9 * max(1.0, x) else math.ceil(x)
    return min(npages, max(1, nhot))


class _HotCold(_Base):
    """Hot set = the first nhot pages, chosen with hot_probability; uniform inside each
    set.  One draw u per access: u < p picks the hot set and u/p the page in it,
    otherwise (u - p)/(1 - p) picks the cold page."""

    def __init__(self, npages: int, hot_fraction: float, hot_probability: float) -> None:
        self.npages = npages
        self.hot_fraction = hot_fraction
        self.hot_probability = hot_probability
        self.nhot = _hot_pages(npages, hot_fraction)
        self.description = (
            f"hotcold(hot_fraction={hot_fraction!r}, hot_probability={hot_probability!r})"
        )

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(_count(n))
        nhot, ncold, p = self.nhot, self.npages - self.nhot, self.hot_probability
        if ncold == 0 or p >= 1.0:
            u *= nhot
            return u.astype(np.int64)
        if p <= 0.0:
            u *= ncold
            u += nhot
            return u.astype(np.int64)
        hot = u < p
        h = u * (nhot / p)
        np.minimum(h, nhot - 1, out=h)
        c = u - p
        c *= ncold / (1.0 - p)
        c += nhot
        np.minimum(c, self.npages - 1, out=c)
        np.copyto(c, h, where=hot)
        return c.astype(np.int64)


class _Phases(_Base):
    """Each phase's pattern for its number of accesses; the last one then continues."""

    def __init__(self, npages: int, phases: list[tuple[Pattern, int]], description: str):
        self.npages = npages
        self.description = description
        self._patterns = [p for p, _ in phases]
        self._counts = [n for _, n in phases]
        self._index = 0
        self._left = self._counts[0]

    @property
    def phase(self) -> int:
        """Index of the phase the next access belongs to."""
        return self._index

    def take(self, rng: np.random.Generator, n: int) -> np.ndarray:
        n = _count(n)
        chunks = []
        last = len(self._patterns) - 1
        while n > 0:
            pattern = self._patterns[self._index]
            if self._index == last:
                chunks.append(pattern.take(rng, n))
                break
            k = min(n, self._left)
            chunks.append(pattern.take(rng, k))
            n -= k
            self._left -= k
            if self._left == 0:
                self._index += 1
                self._left = self._counts[self._index]
        if not chunks:
            return np.empty(0, dtype=np.int64)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def _build(spec: _Spec, npages: int) -> Pattern:
    p = spec.params
    if spec.kind == "sequential":
        return _Sequential(npages)
    if spec.kind == "loop":
        return _Loop(npages, p["start"], p["length"])
    if spec.kind == "uniform":
        return _Uniform(npages)
    if spec.kind == "zipf":
        return _Zipf(npages, p["alpha"])
    if spec.kind == "hotcold":
        return _HotCold(npages, p["hot_fraction"], p["hot_probability"])
    assert spec.kind == "phases"
    return _Phases(npages, [(_build(s, npages), n) for s, n in spec.phases], _describe(spec))


def check_pattern(spec: Mapping[str, Any], npages: int, *, field: str = "workload") -> None:
    """Check a workload table as :func:`make_pattern` does, without building the pattern's
    tables (a Zipf pattern's CDF and permutation are O(npages): seconds and gigabytes for
    a TiB enclave, which validating a scenario must not spend).

    Raises:
        PatternError: exactly what :func:`make_pattern` raises for the same arguments.
    """
    _parse(spec, _check_npages(npages), field)


def make_pattern(spec: Mapping[str, Any], npages: int, *, field: str = "workload") -> Pattern:
    """The :class:`Pattern` a workload table describes, over *npages* pages.

    Args:
        spec: the workload table (``pattern`` selects the kind; ``accesses`` and
            ``duration`` are the caller's and ignored).
        npages: pages the pattern addresses, > 0.
        field: the table's name in error messages (``workload`` → ``workload.alpha``).

    Raises:
        PatternError: (an EpcsimError) naming the field and the value, for an unknown
            pattern or key, a missing key, a wrong type or an out-of-range value.
    """
    npages = _check_npages(npages)
    return _build(_parse(spec, npages, field), npages)
