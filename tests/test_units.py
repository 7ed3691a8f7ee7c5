"""Sizes and times as scenarios and command lines give them (``epcsim.units``): what is
accepted, and an ``EpcsimError`` naming the value for anything else (never a traceback)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from epcsim.errors import EpcsimError
from epcsim.units import parse_size, parse_time


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("96MiB", 96 << 20),
        (" 4 KiB ", 4096),
        ("0x1000", 4096),
        ("0x1_0", 16),
        ("0x_10", 16),
        ("1_024B", 1024),
        ("1.5KiB", 1536),
        ("2pages", 8192),
    ],
)
def test_sizes(text: str, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a hex prefix with no digit: int(..., 16) raised ValueError (a traceback)
        ("0x_", "size: not a size: '0x_' (examples: 96MiB, 4KiB, 4096)"),
        ("0X__", "size: not a size: '0X__' (examples: 96MiB, 4KiB, 4096)"),
        # other scripts' digits and U+001F are not digits and spaces here
        ("\u0663MiB", "size: not a size: '\u0663MiB' (examples: 96MiB, 4KiB, 4096)"),
        ("\x1f4KiB", "size: not a size: '\\x1f4KiB' (examples: 96MiB, 4KiB, 4096)"),
        ("0x10KiB", "size: a hex size takes no unit: '0x10KiB'"),
    ],
)
def test_bad_sizes(text: str, message: str) -> None:
    with pytest.raises(EpcsimError) as e:
        parse_size(text)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("text", "want"), [("5us", 5000), (" 1.5ms", 1_500_000), ("2s", 2 * 10**9)]
)
def test_times(text: str, want: int) -> None:
    assert parse_time(text) == want


def test_bad_time_in_another_script() -> None:
    with pytest.raises(EpcsimError) as e:
        parse_time("\u0663ms")
    assert str(e.value) == "time: not a time: '\u0663ms' (a number with ns, us, ms, s or min)"


@given(st.text(max_size=12))
def test_any_text_is_a_value_or_an_epcsim_error(text: str) -> None:
    for parse in (parse_size, parse_time):
        with contextlib.suppress(EpcsimError):
            assert parse(text) >= 0
