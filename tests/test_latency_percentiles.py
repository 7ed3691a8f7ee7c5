"""``epcsim.result.latency_percentiles`` gives exactly the integers of
``numpy.percentile(lat, [50, 90, 99, 100]).round().astype(np.int64)`` (the summary's
fault latency percentiles), through its own order-statistic selection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from epcsim.result import _order_statistics, latency_percentiles


def _numpy(lat: np.ndarray) -> list[int]:
    return np.percentile(lat, [50, 90, 99, 100]).round().astype(np.int64).tolist()


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 62).flatmap(
        lambda bits: arrays(
            np.int64,
            st.integers(1, 3000),
            elements=st.integers(0, (1 << bits) - 1 if bits else 0),
        )
    )
)
def test_selection_is_numpy_percentile(lat: np.ndarray) -> None:
    """Any size (one value too), ties, values up to 2**62: the selection path
    (select_min=0) gives numpy's integers."""
    assert latency_percentiles(lat, select_min=0) == _numpy(lat)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.integers(0, 10**6, 400_000),
        lambda rng: np.full(300_000, 8000),
        # most values tied, a tail of waits (a bracket's ends on the ties)
        lambda rng: np.concatenate([np.full(250_000, 8000), rng.integers(0, 10**9, 30_000)]),
        lambda rng: (rng.pareto(1.2, 400_000) * 1000).astype(np.int64),
        lambda rng: rng.integers(0, 3, 300_000),
        # sorted and reversed (the sample strides through the order)
        lambda rng: np.arange(500_000)[::-1].copy(),
        lambda rng: np.sort(rng.integers(0, 1 << 40, 300_000)),
    ],
)
def test_large_arrays_are_numpy_percentile(make) -> None:
    lat = np.asarray(make(np.random.default_rng(7)), np.int64)
    assert len(lat) >= 1 << 16  # the default path selects
    assert latency_percentiles(lat) == _numpy(lat)


def test_a_rank_outside_its_bracket_falls_back_to_numpy() -> None:
    """A sample that misses the distribution (values between its strides) cannot
    bracket a rank; the answer is numpy's all the same."""
    n = 1 << 17
    lat = np.zeros(n, np.int64)
    lat[::2] = 10**9  # the sample (every 2nd value) sees only 10**9
    assert _order_statistics(lat, [(n - 1) // 2]) is None
    assert latency_percentiles(lat, select_min=0) == _numpy(lat)
