"""AddrRange: validation at construction, and set semantics checked against a set oracle."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passthru.hw.ranges import ADDR_LIMIT, AddrRange

TOP = ADDR_LIMIT - 1


def test_basic_properties() -> None:
    r = AddrRange(0x1000, 0x2000)
    assert (r.start, r.size, r.end, r.last) == (0x1000, 0x2000, 0x3000, 0x2FFF)
    assert r.contains(0x1000) and r.contains(0x2FFF)
    assert not r.contains(0xFFF) and not r.contains(0x3000)
    assert 0x1800 in r and "x" not in r
    assert str(r) == "[0x1000, 0x3000)"
    assert repr(r) == "AddrRange(start=0x1000, size=0x2000)"
    assert r.offset_of(0x1800) == 0x800
    assert r.is_aligned(0x1000) and not r.is_aligned(0x2000)


def test_range_ending_at_top_of_address_space() -> None:
    r = AddrRange(TOP, 1)
    assert r.end == ADDR_LIMIT and r.last == TOP
    assert r.contains(TOP) and not r.contains(ADDR_LIMIT)
    whole = AddrRange(0, ADDR_LIMIT)
    assert whole.last == TOP and whole.contains_range(r)


@pytest.mark.parametrize(
    ("start", "size", "needle"),
    [
        (-1, 1, "-0x1"),
        (0, 0, "0x0"),
        (0x1000, -0x10, "-0x10"),
        (TOP, 2, "0xffffffffffffffff + 0x2 overflows"),
        (1, ADDR_LIMIT, "overflows"),
        (ADDR_LIMIT, 1, "0x10000000000000000"),
    ],
)
def test_constructor_rejects_bad_values_naming_hex(start: int, size: int, needle: str) -> None:
    with pytest.raises(ValueError, match="0x") as info:
        AddrRange(start, size)
    assert needle in str(info.value)


def test_constructor_rejects_non_ints() -> None:
    with pytest.raises(TypeError):
        AddrRange(1.0, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        AddrRange(0, True)


def test_alternate_constructors() -> None:
    assert AddrRange.from_bounds(0x1000, 0x2000) == AddrRange(0x1000, 0x1000)
    assert AddrRange.from_inclusive(0x1000, 0x1FFF) == AddrRange(0x1000, 0x1000)
    assert AddrRange.from_inclusive(0, TOP) == AddrRange(0, ADDR_LIMIT)
    with pytest.raises(ValueError, match="0x2000"):
        AddrRange.from_bounds(0x2000, 0x2000)
    with pytest.raises(ValueError, match="0xfff"):
        AddrRange.from_inclusive(0x1000, 0xFFF)
    with pytest.raises(ValueError, match="overflows"):
        AddrRange.from_inclusive(0, ADDR_LIMIT)
    with pytest.raises(ValueError, match="outside"):
        AddrRange(0, 0x10).offset_of(0x10)
    with pytest.raises(ValueError, match="power of two"):
        AddrRange(0, 0x10).is_aligned(3)


def test_frozen() -> None:
    r = AddrRange(0, 1)
    with pytest.raises(AttributeError):
        r.start = 5  # type: ignore[misc]


# Small ranges are checked against Python sets; the same ranges shifted to the top of the
# address space must behave identically (the overflow-prone corner).
SMALL = 64


@st.composite
def small_ranges(draw: st.DrawFn) -> tuple[int, int]:
    start = draw(st.integers(0, SMALL - 1))
    size = draw(st.integers(1, SMALL - start))
    return start, size


@given(
    small_ranges(), small_ranges(), st.integers(0, SMALL), st.sampled_from([0, ADDR_LIMIT - SMALL])
)
def test_set_semantics_match_oracle(
    a: tuple[int, int], b: tuple[int, int], probe: int, shift: int
) -> None:
    ra, rb = AddrRange(a[0] + shift, a[1]), AddrRange(b[0] + shift, b[1])
    sa, sb = set(range(*_bounds(a))), set(range(*_bounds(b)))
    assert ra.contains(probe + shift) == (probe in sa)
    assert ra.overlaps(rb) == bool(sa & sb) == rb.overlaps(ra)
    assert ra.contains_range(rb) == (sb <= sa)
    inter = ra.intersection(rb)
    if sa & sb:
        assert inter is not None
        assert set(range(inter.start - shift, inter.end - shift)) == sa & sb
        assert inter == rb.intersection(ra)
    else:
        assert inter is None


def _bounds(r: tuple[int, int]) -> tuple[int, int]:
    return r[0], r[0] + r[1]


@given(st.integers(0, TOP), st.integers(1, ADDR_LIMIT))
def test_construction_never_describes_past_the_top(start: int, size: int) -> None:
    if start + size > ADDR_LIMIT:
        with pytest.raises(ValueError, match="overflows"):
            AddrRange(start, size)
    else:
        r = AddrRange(start, size)
        assert r.last <= TOP and r.end <= ADDR_LIMIT
