"""Time units: exact conversions refuse to round; round_ns rounds on purpose."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from passthru.sim import units
from passthru.sim.units import MS, NS, US, S, format_ns, ms, ns, round_ns, s, to_unit, us


def test_constants() -> None:
    assert (NS, US, MS, S) == (1, 1_000, 1_000_000, 1_000_000_000)


@pytest.mark.parametrize(
    ("fn", "value", "expected"),
    [
        (us, 1.5, 1_500),
        (us, 0.1, 100),  # the decimal the person typed, not 100.00000000000001
        (ms, 0.29, 290_000),
        (s, 2, 2 * S),
        (ns, 7.0, 7),
        (us, Fraction(1, 8), 125),
        (ms, Decimal("0.000001"), 1),
        (us, np.int32(3), 3_000),
        (us, -2.5, -2_500),
    ],
)
def test_exact_conversions(fn, value, expected) -> None:  # type: ignore[no-untyped-def]
    result = fn(value)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    ("fn", "value"),
    [(ns, 2.5), (us, 0.0015), (ms, 0.1 + 0.2), (us, Fraction(1, 3)), (s, 1e-10)],
)
def test_exact_conversions_refuse_to_round(fn, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="not a whole number of nanoseconds"):
        fn(value)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        us(value)
    with pytest.raises(ValueError, match="finite"):
        round_ns(value)


@pytest.mark.parametrize("value", [True, "1", None])
def test_non_numbers_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        us(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        round_ns(value)  # type: ignore[arg-type]


def test_round_ns() -> None:
    assert round_ns(2.5) == 2 and round_ns(3.5) == 4  # half to even
    assert round_ns(0.0015, US) == 2
    assert round_ns(1.2, MS) == 1_200_000
    assert round_ns(7) == 7 and round_ns(7, US) == 7_000
    assert round_ns(Fraction(3, 2)) == 2
    assert type(round_ns(12.7)) is int


def test_to_unit_and_format() -> None:
    assert to_unit(1_500, US) == 1.5
    assert format_ns(250) == "250 ns"
    assert format_ns(1_500) == "1.5 us"
    assert format_ns(2 * MS) == "2 ms"
    assert format_ns(1_234_567_891) == "1.234567891 s"
    assert format_ns(-3_000) == "-3 us"
    assert format_ns(0) == "0 ns"


def test_units_is_exported_from_sim() -> None:
    from passthru import sim

    assert sim.units is units
