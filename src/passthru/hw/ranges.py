"""Overflow-safe physical/IO virtual address ranges.

Models a half-open range ``[start, start + size)`` in a 64-bit address space, in the spirit of
cloud-hypervisor's ``GuestAddress``/``checked_add`` helpers (``vm-memory``): every range is
validated once, at construction, so that arithmetic on ``end``/``last`` can never describe
memory past ``2**64`` (where a u64 in real hardware or Rust would wrap) and never go negative.

Left out: address-space identity (host physical vs. guest physical vs. IOVA is the caller's
business), empty ranges (``size`` is at least 1, so ``last`` always exists) and widths other
than 64 bits (callers that model narrower buses check ``last`` against their own limit).
"""

from __future__ import annotations

from dataclasses import dataclass

ADDR_BITS = 64
ADDR_LIMIT = 1 << ADDR_BITS  # one past the highest representable address


def _check_int(name: str, value: object) -> int:
    # bool is an int subclass; a True start is always a caller bug, not address 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"address range {name} must be an int, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class AddrRange:
    """The bytes ``[start, start + size)``; ``size >= 1`` and ``start + size <= 2**64``."""

    start: int
    size: int

    def __post_init__(self) -> None:
        start = _check_int("start", self.start)
        size = _check_int("size", self.size)
        if start < 0:
            raise ValueError(f"address range start {start:#x} is negative")
        if start >= ADDR_LIMIT:
            raise ValueError(f"address range start {start:#x} is beyond the 64-bit address space")
        if size <= 0:
            raise ValueError(f"address range at {start:#x} has size {size:#x}; it must be >= 1")
        if start + size > ADDR_LIMIT:
            raise ValueError(
                f"address range {start:#x} + {size:#x} overflows the 64-bit address space"
            )

    @classmethod
    def from_bounds(cls, start: int, end: int) -> AddrRange:
        """The range ``[start, end)`` (``end`` exclusive)."""
        _check_int("start", start)
        _check_int("end", end)
        if end <= start:
            raise ValueError(f"address range end {end:#x} must be above start {start:#x}")
        return cls(start, end - start)

    @classmethod
    def from_inclusive(cls, start: int, last: int) -> AddrRange:
        """The range ``[start, last]`` (``last`` inclusive), e.g. a PCI BAR's limit register."""
        _check_int("start", start)
        _check_int("last", last)
        if last < start:
            raise ValueError(f"address range last {last:#x} is below start {start:#x}")
        return cls(start, last - start + 1)

    @property
    def end(self) -> int:
        """One past the last byte (exclusive); may equal ``2**64``."""
        return self.start + self.size

    @property
    def last(self) -> int:
        """The last byte (inclusive); always a valid 64-bit address."""
        return self.start + self.size - 1

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.start + self.size

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, int) and self.contains(addr)

    def contains_range(self, other: AddrRange) -> bool:
        return self.start <= other.start and other.end <= self.end

    def overlaps(self, other: AddrRange) -> bool:
        return self.start < other.end and other.start < self.end

    def intersection(self, other: AddrRange) -> AddrRange | None:
        """The common bytes, or ``None`` when the ranges are disjoint."""
        lo = max(self.start, other.start)
        hi = min(self.end, other.end)
        return AddrRange(lo, hi - lo) if lo < hi else None

    def offset_of(self, addr: int) -> int:
        """``addr - start``; raises ``ValueError`` if ``addr`` lies outside the range."""
        if not self.contains(addr):
            raise ValueError(f"address {addr:#x} is outside {self}")
        return addr - self.start

    def is_aligned(self, align: int) -> bool:
        """True when both ``start`` and ``size`` are multiples of the power of two ``align``."""
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment {align:#x} is not a power of two")
        return not ((self.start | self.size) & (align - 1))

    def __str__(self) -> str:
        return f"[{self.start:#x}, {self.end:#x})"

    def __repr__(self) -> str:
        return f"AddrRange(start={self.start:#x}, size={self.size:#x})"
