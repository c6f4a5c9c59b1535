"""Coalesced sets of address ranges: sorted, disjoint, non-adjacent half-open intervals.

What is modelled: a set of addresses (host physical or IOVA) kept as a tuple of
``(start, end)`` pairs with ``start < end``; adjacent or overlapping pieces are merged on
construction, so two equal sets always have equal representations (a diffable report).
Union, intersection, difference, membership (bisect) and iteration as ``AddrRange``.

Left out: labels (the reachability analysis keeps one set per label) and widths other than
the 64-bit space of ``hw.ranges``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator

from passthru.hw.ranges import AddrRange


def _coalesce(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for start, end in sorted(p for p in pairs if p[0] < p[1]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1][1] = end
        else:
            out.append([start, end])
    return tuple((s, e) for s, e in out)


class RangeSet:
    """An immutable set of addresses as coalesced ``[start, end)`` pieces."""

    __slots__ = ("pieces", "_starts")

    def __init__(self, pairs: Iterable[tuple[int, int]] = ()) -> None:
        self.pieces: tuple[tuple[int, int], ...] = _coalesce(pairs)
        self._starts = [s for s, _ in self.pieces]

    @classmethod
    def of(cls, start: int, end: int) -> RangeSet:
        return cls([(start, end)])

    # -- queries ------------------------------------------------------------------------------
    def __bool__(self) -> bool:
        return bool(self.pieces)

    def __len__(self) -> int:
        return len(self.pieces)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.pieces)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeSet) and self.pieces == other.pieces

    def __hash__(self) -> int:
        return hash(self.pieces)

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, int):
            return False
        i = bisect_right(self._starts, addr) - 1
        return i >= 0 and addr < self.pieces[i][1]

    @property
    def size(self) -> int:
        """Number of addresses in the set."""
        return sum(e - s for s, e in self.pieces)

    def ranges(self) -> list[AddrRange]:
        return [AddrRange(s, e - s) for s, e in self.pieces]

    def overlaps(self, other: RangeSet) -> bool:
        return bool(self & other)

    # -- algebra ------------------------------------------------------------------------------
    def __or__(self, other: RangeSet) -> RangeSet:
        return RangeSet(self.pieces + other.pieces)

    def __and__(self, other: RangeSet) -> RangeSet:
        out: list[tuple[int, int]] = []
        a, b = self.pieces, other.pieces
        i = j = 0
        while i < len(a) and j < len(b):
            lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if lo < hi:
                out.append((lo, hi))
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return RangeSet(out)

    def __sub__(self, other: RangeSet) -> RangeSet:
        if not other.pieces or not self.pieces:
            return self
        out: list[tuple[int, int]] = []
        b = other.pieces
        j = 0
        for start, end in self.pieces:
            while j < len(b) and b[j][1] <= start:
                j += 1
            pos, k = start, j
            while k < len(b) and b[k][0] < end:
                if b[k][0] > pos:
                    out.append((pos, b[k][0]))
                pos = max(pos, b[k][1])
                k += 1
            if pos < end:
                out.append((pos, end))
        return RangeSet(out)

    # -- rendering ----------------------------------------------------------------------------
    def describe(self, limit: int = 4) -> str:
        """``0x0-0x3fffffff, 0x80000000-0x8fffffff`` (inclusive ends), at most ``limit``."""
        shown = [f"{s:#x}-{e - 1:#x}" for s, e in self.pieces[:limit]]
        if len(self.pieces) > limit:
            shown.append(f"... ({len(self.pieces) - limit} more)")
        return ", ".join(shown) if shown else "nothing"

    def __repr__(self) -> str:
        return f"RangeSet({self.describe()})"


__all__ = ["RangeSet"]
