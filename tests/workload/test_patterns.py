"""Access patterns (SIM_CONTRACT `epcsim.workload.patterns`): exact sequences, determinism
under any split of the takes, ranges, distributions, phases, and validation messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsim.errors import EpcsimError, EpcsimUsageError
from epcsim.workload.patterns import (
    Pattern,
    PatternError,
    make_pattern,
    pattern_description,
    zipf_cdf,
    zipf_permutation,
)

SPECS = {
    "sequential": {"pattern": "sequential"},
    "loop": {"pattern": "loop", "start": 2, "length": 5},
    "uniform": {"pattern": "uniform"},
    "zipf": {"pattern": "zipf", "alpha": 0.9},
    "hotcold": {"pattern": "hotcold", "hot_fraction": 0.25, "hot_probability": 0.8},
    "phases": {
        "pattern": "phases",
        "phases": [
            {"pattern": "zipf", "alpha": 1.2, "accesses": 7},
            {"pattern": "sequential", "accesses": 3},
            {"pattern": "hotcold", "hot_fraction": 0.5, "hot_probability": 0.1, "accesses": 5},
            {"pattern": "loop", "start": 1, "length": 3, "accesses": 4},
        ],
    },
}
RANDOM_KINDS = ("uniform", "zipf", "hotcold", "phases")


def take_all(pattern: Pattern, seed: int, sizes: list[int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [pattern.take(rng, n) for n in sizes]
    for p in parts:
        assert p.dtype == np.int64
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


# ------------------------------------------------------------------ exact sequences


def test_sequential_wraps_and_continues() -> None:
    """sequential: 0..npages-1 then wraps; each take continues where the last stopped."""
    p = make_pattern({"pattern": "sequential"}, 5)
    rng = np.random.default_rng(0)
    assert p.take(rng, 3).tolist() == [0, 1, 2]
    assert p.take(rng, 4).tolist() == [3, 4, 0, 1]
    assert p.take(rng, 11).tolist() == [2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2]


def test_loop_exact() -> None:
    """loop: start..start+length-1 repeated, continuing across takes."""
    p = make_pattern({"pattern": "loop", "start": 3, "length": 4}, 10)
    rng = np.random.default_rng(0)
    assert p.take(rng, 6).tolist() == [3, 4, 5, 6, 3, 4]
    assert p.take(rng, 3).tolist() == [5, 6, 3]
    q = make_pattern({"pattern": "loop", "length": 2}, 10)  # start defaults to 0
    assert q.take(rng, 5).tolist() == [0, 1, 0, 1, 0]
    full = make_pattern({"pattern": "loop", "start": 0, "length": 10}, 10)
    assert full.take(rng, 12).tolist() == [*range(10), 0, 1]


def test_non_random_kinds_do_not_touch_rng() -> None:
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    make_pattern(SPECS["sequential"], 9).take(rng, 100)
    make_pattern(SPECS["loop"], 9).take(rng, 100)
    assert rng.bit_generator.state == before


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_take_zero(kind: str) -> None:
    p = make_pattern(SPECS[kind], 16)
    rng = np.random.default_rng(1)
    out = p.take(rng, 0)
    assert out.dtype == np.int64 and out.shape == (0,)
    # take(0) changes nothing: the next takes equal those of a fresh pattern
    fresh = make_pattern(SPECS[kind], 16)
    assert np.array_equal(p.take(rng, 30), fresh.take(np.random.default_rng(1), 30))


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_is_pattern_and_negative_n(kind: str) -> None:
    p = make_pattern(SPECS[kind], 16)
    assert isinstance(p, Pattern)
    assert p.npages == 16
    with pytest.raises(EpcsimUsageError):
        p.take(np.random.default_rng(0), -1)


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_take_into_a_buffer(kind: str) -> None:
    """take_into() writes what take() returns into out[:n], leaves the rest, and refuses
    a buffer it cannot fill (1-D int64 with room for n) without drawing."""
    a, b = make_pattern(SPECS[kind], 16), make_pattern(SPECS[kind], 16)
    ra, rb = np.random.default_rng(5), np.random.default_rng(5)
    buf = np.full(40, -7, np.int64)
    for n in (13, 0, 40, 2):
        got = b.take_into(rb, n, buf)
        assert np.shares_memory(got, buf) or n == 0
        assert got.tolist() == a.take(ra, n).tolist()
    assert buf[2:].tolist() != [-7] * 38 and buf.min() >= 0
    for bad in (np.zeros(2, np.int64), np.zeros(5, np.int32), np.zeros((5, 1), np.int64)):
        with pytest.raises(EpcsimUsageError, match="take: out must be a 1-D int64 array"):
            b.take_into(rb, 3, bad)
    assert b.take(rb, 9).tolist() == a.take(ra, 9).tolist()


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_same_seed_same_sequence(kind: str) -> None:
    a = take_all(make_pattern(SPECS[kind], 100), 42, [500, 500])
    b = take_all(make_pattern(SPECS[kind], 100), 42, [500, 500])
    assert np.array_equal(a, b)
    if kind in RANDOM_KINDS:
        c = take_all(make_pattern(SPECS[kind], 100), 43, [500, 500])
        assert not np.array_equal(a, c)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(sorted(SPECS)),
    npages=st.integers(8, 300),
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(0, 60), max_size=8),
)
def test_split_invariance_and_range(kind: str, npages: int, seed: int, sizes: list[int]) -> None:
    """Any split of the same accesses into takes gives the same pages (the random kinds
    draw one float per access), and every page is in [0, npages)."""
    whole = take_all(make_pattern(SPECS[kind], npages), seed, [sum(sizes)])
    split = take_all(make_pattern(SPECS[kind], npages), seed, sizes)
    assert np.array_equal(whole, split)
    assert whole.size == sum(sizes)
    if whole.size:
        assert whole.min() >= 0 and whole.max() < npages


@settings(max_examples=40, deadline=None)
@given(
    spec=st.one_of(
        st.builds(lambda a: {"pattern": "zipf", "alpha": a}, st.floats(1e-3, 60)),
        st.builds(
            lambda f, p: {"pattern": "hotcold", "hot_fraction": f, "hot_probability": p},
            st.floats(1e-6, 1.0),
            st.floats(0.0, 1.0),
        ),
        st.just({"pattern": "uniform"}),
    ),
    npages=st.integers(1, 5000),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_kinds_in_range(spec: dict, npages: int, seed: int) -> None:
    out = make_pattern(spec, npages).take(np.random.default_rng(seed), 2000)
    assert out.dtype == np.int64 and out.size == 2000
    assert out.min() >= 0 and out.max() < npages


# ------------------------------------------------------------------ zipf


def test_zipf_permutation_is_the_documented_one() -> None:
    for n in (1, 10, 4096):
        expected = np.random.default_rng(0x5EED + n).permutation(n)
        assert np.array_equal(zipf_permutation(n), expected)


def test_zipf_cdf_cached_and_exact_end() -> None:
    cdf = zipf_cdf(1000, 0.9)
    assert zipf_cdf(1000, 0.9) is cdf
    assert not cdf.flags.writeable
    assert cdf[-1] == 1.0 and np.all(np.diff(cdf) >= 0)
    w = 1.0 / np.arange(1, 1001) ** 0.9
    assert np.allclose(cdf, np.cumsum(w) / w.sum(), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    npages=st.integers(1, 20_000),
    alpha=st.one_of(st.floats(1e-3, 4.0), st.sampled_from([0.9, 1.0, 30.0, 700.0])),
    seed=st.integers(0, 2**32 - 1),
)
def test_zipf_equals_plain_searchsorted(npages: int, alpha: float, seed: int) -> None:
    """The guide-table sampler returns exactly perm[searchsorted(cdf, u, "right")]."""
    out = make_pattern({"pattern": "zipf", "alpha": alpha}, npages).take(
        np.random.default_rng(seed), 3000
    )
    u = np.random.default_rng(seed).random(3000)
    ranks = np.searchsorted(zipf_cdf(npages, alpha), u, side="right")
    assert np.array_equal(out, zipf_permutation(npages)[ranks])


def test_zipf_top_rank_frequency() -> None:
    """alpha = 0.9: the hottest page (perm[0]) gets 1/H(N, 0.9) of the accesses, the
    second one 2**-0.9 of that."""
    npages, n = 1000, 400_000
    out = make_pattern({"pattern": "zipf", "alpha": 0.9}, npages).take(np.random.default_rng(7), n)
    h = sum(r**-0.9 for r in range(1, npages + 1))
    perm = np.random.default_rng(0x5EED + npages).permutation(npages)
    counts = np.bincount(out, minlength=npages)
    for rank in (1, 2, 10):
        p = rank**-0.9 / h
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[perm[rank - 1]] - n * p) < 5 * sigma, rank
    assert int(np.argmax(counts)) == perm[0]
    # the hot pages are spread, not packed at the start of the enclave
    assert sorted(perm[:10].tolist()) != list(range(10))


def test_zipf_large_builds_and_samples() -> None:
    npages = 1 << 20
    out = make_pattern({"pattern": "zipf", "alpha": 0.9}, npages).take(
        np.random.default_rng(3), 50_000
    )
    u = np.random.default_rng(3).random(50_000)
    ranks = np.searchsorted(zipf_cdf(npages, 0.9), u, side="right")
    assert np.array_equal(out, zipf_permutation(npages)[ranks])


# ------------------------------------------------------------------ hotcold


def test_hotcold_fraction_of_hot_accesses() -> None:
    npages, n, p = 1000, 200_000, 0.8
    out = make_pattern(
        {"pattern": "hotcold", "hot_fraction": 0.1, "hot_probability": p}, npages
    ).take(np.random.default_rng(11), n)
    hot = out < 100
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(hot.sum() - n * p) < 5 * sigma
    # uniform inside each set: every hot page and (almost) every cold page is hit
    assert np.unique(out[hot]).size == 100
    assert np.unique(out[~hot]).size == 900


@pytest.mark.parametrize(
    ("fraction", "npages", "nhot"),
    [(0.1, 10, 1), (0.7, 10, 7), (0.3, 10, 3), (0.25, 10, 3), (1e-9, 10, 1), (1.0, 10, 10)],
)
def test_hotcold_hot_set_size(fraction: float, npages: int, nhot: int) -> None:
    """The hot set is the first ceil(hot_fraction * npages) pages (no float noise)."""
    out = make_pattern(
        {"pattern": "hotcold", "hot_fraction": fraction, "hot_probability": 1.0}, npages
    ).take(np.random.default_rng(0), 5000)
    assert sorted(set(out.tolist())) == list(range(nhot))


def test_hotcold_extremes() -> None:
    rng = np.random.default_rng(0)
    cold = make_pattern({"pattern": "hotcold", "hot_fraction": 0.2, "hot_probability": 0}, 50)
    out = cold.take(rng, 5000)
    assert out.min() >= 10 and np.unique(out).size == 40
    # the hot set is the whole enclave: every access is hot, whatever the probability
    allhot = make_pattern({"pattern": "hotcold", "hot_fraction": 1, "hot_probability": 0.3}, 50)
    assert np.unique(allhot.take(rng, 5000)).size == 50


# ------------------------------------------------------------------ phases


def test_phases_boundaries_exact() -> None:
    """Each phase runs exactly its accesses, even inside one take; each phase has its
    own position; the last one continues."""
    spec = {
        "pattern": "phases",
        "phases": [
            {"pattern": "sequential", "accesses": 3},
            {"pattern": "loop", "start": 7, "length": 2, "accesses": 5},
            {"pattern": "sequential", "accesses": 1},
        ],
    }
    expected = [0, 1, 2, 7, 8, 7, 8, 7, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    rng = np.random.default_rng(0)
    assert make_pattern(spec, 10).take(rng, len(expected)).tolist() == expected
    for sizes in ([2, 2, 15], [3, 5, 1, 10], [1] * 19, [8, 0, 11]):
        got = take_all(make_pattern(spec, 10), 0, sizes)
        assert got.tolist() == expected, sizes


def test_phases_random_then_fixed() -> None:
    """A random phase uses the rng for exactly its accesses; the next starts on time."""
    spec = {
        "pattern": "phases",
        "phases": [
            {"pattern": "uniform", "accesses": 4},
            {"pattern": "loop", "start": 5, "length": 1, "accesses": 2},
            {"pattern": "hotcold", "hot_fraction": 0.5, "hot_probability": 1, "accesses": 1},
        ],
    }
    out = make_pattern(spec, 10).take(np.random.default_rng(9), 12)
    rng = np.random.default_rng(9)
    first = (rng.random(4) * 10).astype(np.int64)
    assert out[:4].tolist() == first.tolist()
    assert out[4:6].tolist() == [5, 5]
    assert out[6:].max() < 5


def test_nested_phases() -> None:
    inner = {
        "pattern": "phases",
        "accesses": 4,
        "phases": [
            {"pattern": "loop", "start": 9, "length": 1, "accesses": 1},
            {"pattern": "sequential", "accesses": 1},
        ],
    }
    spec = {"pattern": "phases", "phases": [inner, {"pattern": "loop", "length": 1, "accesses": 1}]}
    out = make_pattern(spec, 10).take(np.random.default_rng(0), 7)
    assert out.tolist() == [9, 0, 1, 2, 0, 0, 0]


# ------------------------------------------------------------------ spec handling


def test_caller_keys_ignored() -> None:
    a = make_pattern({"pattern": "zipf", "alpha": 0.9, "accesses": 1_000_000}, 64)
    b = make_pattern({"pattern": "zipf", "alpha": 0.9, "duration": "1s"}, 64)
    assert np.array_equal(
        a.take(np.random.default_rng(1), 100), b.take(np.random.default_rng(1), 100)
    )


@pytest.mark.parametrize(
    ("spec", "npages", "text"),
    [
        (
            {"pattern": "zipf", "alpha": 0.9, "accesses": 5},
            262144,
            "zipf(alpha=0.9) over 262144 pages",
        ),
        ({"pattern": "sequential"}, 8, "sequential over 8 pages"),
        ({"pattern": "loop", "length": 4}, 8, "loop(start=0, length=4) over 8 pages"),
        (
            {"pattern": "hotcold", "hot_fraction": 0.1, "hot_probability": 0.9},
            None,
            "hotcold(hot_fraction=0.1, hot_probability=0.9)",
        ),
        (
            {
                "pattern": "phases",
                "phases": [
                    {"pattern": "uniform", "accesses": 10},
                    {"pattern": "zipf", "alpha": 1, "accesses": 20},
                ],
            },
            16,
            "phases(uniform for 10 accesses; zipf(alpha=1.0) for 20 accesses, then continues)"
            " over 16 pages",
        ),
    ],
)
def test_pattern_description(spec: dict, npages: int | None, text: str) -> None:
    assert pattern_description(spec, npages) == text
    assert "\n" not in text
    if npages is not None:
        assert text.split(" over ")[0] in repr(make_pattern(spec, npages))


def phase_of(extra: dict) -> dict:
    return {"pattern": "phases", "phases": [extra]}


BAD = [
    # (spec, npages, field, value text)
    ("zipf", 10, "workload", "'zipf'"),
    ({}, 10, "workload.pattern", "missing"),
    ({"pattern": 3}, 10, "workload.pattern", "3"),
    ({"pattern": "zipff"}, 10, "workload.pattern", "'zipff'"),
    ({"pattern": "zipf", "alpah": 0.9}, 10, "workload.alpah", "alpha"),
    ({"pattern": "zipf"}, 10, "workload.alpha", "missing"),
    ({"pattern": "zipf", "alpha": -1}, 10, "workload.alpha", "-1"),
    ({"pattern": "zipf", "alpha": 0}, 10, "workload.alpha", "0"),
    ({"pattern": "zipf", "alpha": "0.9"}, 10, "workload.alpha", "'0.9'"),
    ({"pattern": "zipf", "alpha": True}, 10, "workload.alpha", "True"),
    ({"pattern": "zipf", "alpha": float("nan")}, 10, "workload.alpha", "nan"),
    ({"pattern": "zipf", "alpha": float("inf")}, 10, "workload.alpha", "inf"),
    ({"pattern": "sequential", "start": 3}, 10, "workload.start", "valid keys"),
    ({"pattern": "loop", "start": 0}, 10, "workload.length", "missing"),
    ({"pattern": "loop", "length": 0}, 10, "workload.length", "0"),
    ({"pattern": "loop", "length": -2}, 10, "workload.length", "-2"),
    ({"pattern": "loop", "length": 2.0}, 10, "workload.length", "2.0"),
    ({"pattern": "loop", "start": -1, "length": 2}, 10, "workload.start", "-1"),
    ({"pattern": "loop", "start": 10, "length": 1}, 10, "workload.start", "10"),
    ({"pattern": "loop", "start": 8, "length": 3}, 10, "workload.length", "3"),
    ({"pattern": "loop", "start": "0", "length": 3}, 10, "workload.start", "'0'"),
    ({"pattern": "hotcold", "hot_probability": 0.5}, 10, "workload.hot_fraction", "missing"),
    ({"pattern": "hotcold", "hot_fraction": 0.5}, 10, "workload.hot_probability", "missing"),
    (
        {"pattern": "hotcold", "hot_fraction": 0, "hot_probability": 0.5},
        10,
        "workload.hot_fraction",
        "0",
    ),
    (
        {"pattern": "hotcold", "hot_fraction": 1.5, "hot_probability": 0.5},
        10,
        "workload.hot_fraction",
        "1.5",
    ),
    (
        {"pattern": "hotcold", "hot_fraction": 0.5, "hot_probability": -0.1},
        10,
        "workload.hot_probability",
        "-0.1",
    ),
    (
        {"pattern": "hotcold", "hot_fraction": 0.5, "hot_probability": 1.01},
        10,
        "workload.hot_probability",
        "1.01",
    ),
    ({"pattern": "phases", "phases": []}, 10, "workload.phases", "[]"),
    ({"pattern": "phases", "phases": "zipf"}, 10, "workload.phases", "'zipf'"),
    ({"pattern": "phases"}, 10, "workload.phases", "missing"),
    (phase_of(5), 10, "workload.phases[0]", "5"),
    (phase_of({"pattern": "uniform"}), 10, "workload.phases[0].accesses", "missing"),
    (phase_of({"pattern": "uniform", "accesses": 0}), 10, "workload.phases[0].accesses", "0"),
    (
        phase_of({"pattern": "uniform", "accesses": "10"}),
        10,
        "workload.phases[0].accesses",
        "'10'",
    ),
    (
        phase_of({"pattern": "uniform", "duration": "1s"}),
        10,
        "workload.phases[0].duration",
        "accesses",
    ),
    (
        phase_of({"pattern": "zipf", "alpha": -3, "accesses": 1}),
        10,
        "workload.phases[0].alpha",
        "-3",
    ),
    (
        phase_of({"pattern": "loop", "start": 20, "length": 1, "accesses": 1}),
        10,
        "workload.phases[0].start",
        "20",
    ),
    ({"pattern": "uniform"}, 0, "npages", "0"),
    ({"pattern": "uniform"}, -5, "npages", "-5"),
    ({"pattern": "uniform"}, 2.5, "npages", "2.5"),
    ({"pattern": "uniform"}, 2**31, "npages", str(2**31)),
]


@pytest.mark.parametrize(("spec", "npages", "field", "value"), BAD)
def test_validation_names_field_and_value(spec: object, npages: object, field: str, value: str):
    with pytest.raises(EpcsimError) as info:
        make_pattern(spec, npages)  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, PatternError)
    assert str(err).startswith(f"{field}: "), str(err)
    assert err.field == field
    assert value in str(err), str(err)


def test_validation_message_example() -> None:
    with pytest.raises(EpcsimError, match=r"^workload\.alpha: must be > 0, got -1$"):
        make_pattern({"pattern": "zipf", "alpha": -1}, 100)


def test_validation_custom_field_and_description() -> None:
    with pytest.raises(PatternError, match=r"^enclave\[kv\]\.workload\.alpha: "):
        make_pattern({"pattern": "zipf", "alpha": 0}, 10, field="enclave[kv].workload")
    with pytest.raises(PatternError, match=r"^workload\.alpha: "):
        pattern_description({"pattern": "zipf", "alpha": 0})


@pytest.mark.parametrize(
    "spec",
    [
        {"pattern": "zipf"},
        {"pattern": "zipf", "alpha": -1},
        {"pattern": "loop", "start": 5, "length": 100},
        {"pattern": "hotcold", "hot_fraction": 2, "hot_probability": 0.5},
        {"pattern": "nope"},
        {"pattern": "phases", "phases": [{"pattern": "uniform"}]},
        {"pattern": "uniform", "extra": 1},
    ],
)
def test_check_pattern_raises_what_make_pattern_raises(spec: dict) -> None:
    from epcsim.workload.patterns import check_pattern

    with pytest.raises(PatternError) as built:
        make_pattern(spec, 64)
    with pytest.raises(PatternError) as checked:
        check_pattern(spec, 64)
    assert str(checked.value) == str(built.value)


def test_validating_a_scenario_builds_no_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    """`epcsim validate builtin:overcommit --set host.epc=1TiB` spent 23 s building a
    1.5 TiB enclave's Zipf tables only to check its parameters."""
    import epcsim.workload.patterns as patterns
    from epcsim.scenario import load_scenario

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("make_pattern called while validating")

    monkeypatch.setattr(patterns, "make_pattern", boom)
    monkeypatch.setattr(patterns, "_build", boom)
    monkeypatch.setenv("EPCSIM_MEMORY_AVAILABLE", "64TiB")
    sc = load_scenario("builtin:overcommit", overrides=["host.epc=1TiB"])
    assert sc.host.epc == "1TiB"
