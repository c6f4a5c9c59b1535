"""Host physical frame allocator: a binary buddy allocator over one address range.

What is modelled: the host kernel handing out naturally aligned physical frames of 4 KiB,
2 MiB and 1 GiB (any power of two in between works too) for IOMMU tables, device rings and
pinned guest memory, the way Linux's ``mm/page_alloc.c`` buddy allocator does: blocks of order
12..30 (bytes = 2**order), split on demand, merged with their buddy (``addr ^ size``) on free.

Policy, chosen for determinism and sane fragmentation: an allocation takes the *lowest
address* block of the *smallest order that fits*, splits it and keeps the low half, so the
same sequence of calls always returns the same addresses and a fresh allocator packs from
``base`` upwards. Splitting is lazy: a 1 TiB range starts as 1024 free 1 GiB blocks, and state
grows only with the number of live allocations and the fragments they cause.

Left out: NUMA nodes, zones (DMA32), migrate types, per-CPU caches, compaction and
reclaim; a request that does not fit fails at once with ``OutOfResources``. Misuse (a double
free, freeing with the wrong size or a misaligned address) is a model bug and raises
``ValueError``.
"""

from __future__ import annotations

import heapq

from passthru.errors import OutOfResources
from passthru.hw.ranges import AddrRange

MIN_ORDER = 12
MAX_ORDER = 30

FRAME_4K = 1 << 12
FRAME_2M = 1 << 21
FRAME_1G = 1 << 30


def _order_of(size: object) -> int:
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or size <= 0
        or size & (size - 1)
        or not MIN_ORDER <= size.bit_length() - 1 <= MAX_ORDER
    ):
        shown = f"{size:#x}" if isinstance(size, int) else repr(size)
        raise ValueError(
            f"frame size {shown} is not a power of two between {FRAME_4K:#x} and {FRAME_1G:#x}"
        )
    return size.bit_length() - 1


class FrameAllocator:
    """Buddy allocator over ``[base, base + size)``; both must be 4 KiB aligned."""

    def __init__(self, base: int, size: int) -> None:
        region = AddrRange(base, size)  # rejects negative, empty and overflowing ranges
        if not region.is_aligned(FRAME_4K):
            raise ValueError(f"frame allocator range {region} is not 4 KiB aligned")
        self.base = base
        self.size = size
        self._end = region.end
        # Per order: the set answers "is this buddy free?"; the heap yields the lowest free
        # block. Blocks leave the set on merge and their heap entries go stale (lazy delete).
        self._free: list[set[int]] = [set() for _ in range(MAX_ORDER + 1)]
        self._heap: list[list[int]] = [[] for _ in range(MAX_ORDER + 1)]
        self._allocated: dict[int, int] = {}  # frame address -> order
        self._free_bytes = size
        # Seed with the maximal naturally aligned blocks covering the range (what freeing
        # every page into the buddy system would coalesce to).
        addr, end = base, self._end
        while addr < end:
            align_order = (addr & -addr).bit_length() - 1 if addr else MAX_ORDER
            order = min(MAX_ORDER, align_order, (end - addr).bit_length() - 1)
            self._push(order, addr)
            addr += 1 << order

    def __repr__(self) -> str:
        return (
            f"FrameAllocator([{self.base:#x}, {self._end:#x}), "
            f"free={self._free_bytes:#x}, used={self.used_bytes:#x})"
        )

    @property
    def free_bytes(self) -> int:
        return self._free_bytes

    @property
    def used_bytes(self) -> int:
        return self.size - self._free_bytes

    # ---------------------------------------------------------------- free lists

    def _push(self, order: int, addr: int) -> None:
        self._free[order].add(addr)
        heapq.heappush(self._heap[order], addr)

    def _pop_lowest(self, order: int) -> int | None:
        free, heap = self._free[order], self._heap[order]
        while heap:
            addr = heapq.heappop(heap)
            if addr in free:
                free.remove(addr)
                return addr
        return None

    def _unlink(self, order: int, addr: int) -> None:
        free, heap = self._free[order], self._heap[order]
        free.remove(addr)
        if len(heap) > 2 * len(free) + 64:  # bound stale entries
            self._heap[order] = sorted(free)  # a sorted list is a valid heap

    # ---------------------------------------------------------------- public API

    def alloc(self, size: int) -> int:
        """A free, naturally aligned frame of ``size`` bytes (lowest address of smallest fit)."""
        order = _order_of(size)
        for have in range(order, MAX_ORDER + 1):
            addr = self._pop_lowest(have)
            if addr is not None:
                break
        else:
            raise OutOfResources(
                f"cannot allocate a {size:#x}-byte frame from [{self.base:#x}, {self._end:#x}): "
                f"{self._free_bytes:#x} bytes free, largest free block "
                f"{self.largest_free_block():#x} bytes"
            )
        while have > order:  # split, keeping the low half (mm/page_alloc.c: expand())
            have -= 1
            self._push(have, addr + (1 << have))
        self._allocated[addr] = order
        self._free_bytes -= size
        return addr

    def alloc_many(self, size: int, count: int) -> list[int]:
        """``count`` frames of ``size`` bytes, all or nothing."""
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"frame count {count!r} must be a non-negative int")
        frames: list[int] = []
        try:
            for _ in range(count):
                frames.append(self.alloc(size))
        except OutOfResources:
            got = len(frames)
            for addr in reversed(frames):  # roll back: coalescing restores the free lists
                self.free(addr, size)
            raise OutOfResources(
                f"cannot allocate {count} frames of {size:#x} bytes from "
                f"[{self.base:#x}, {self._end:#x}): only {got} fit; {self._free_bytes:#x} "
                f"bytes free, largest free block {self.largest_free_block():#x} bytes"
            ) from None
        return frames

    def free(self, addr: int, size: int) -> None:
        """Return a frame obtained from ``alloc``/``alloc_many`` with the same ``size``."""
        order = _order_of(size)
        if type(addr) is not int or self._allocated.get(addr) != order:
            raise ValueError(self._explain_bad_free(addr, size, order))
        del self._allocated[addr]
        self._free_bytes += size
        free = self._free
        while order < MAX_ORDER:  # merge with free buddies (mm/page_alloc.c: __free_one_page)
            buddy = addr ^ (1 << order)
            if buddy not in free[order]:
                break
            self._unlink(order, buddy)
            addr &= ~(1 << order)
            order += 1
        self._push(order, addr)

    def _explain_bad_free(self, addr: int, size: int, order: int) -> str:
        what = f"cannot free frame {addr:#x} of {size:#x} bytes"
        if not isinstance(addr, int):
            return f"{what}: the address is not an int"
        if not self.base <= addr < self._end:
            return f"{what}: outside the allocator range [{self.base:#x}, {self._end:#x})"
        if addr & (size - 1):
            return f"{what}: not aligned to its size"
        got = self._allocated.get(addr)
        if got is not None:
            return f"{what}: it was allocated as {1 << got:#x} bytes"
        for have in range(MIN_ORDER, MAX_ORDER + 1):
            block = addr & ~((1 << have) - 1)
            if block in self._free[have]:
                return f"{what}: already free (double free?) in free block {block:#x}"
            if self._allocated.get(block) == have:
                return f"{what}: it lies inside the {1 << have:#x}-byte frame at {block:#x}"
        return f"{what}: it was never allocated"

    def free_blocks(self) -> list[tuple[int, int]]:
        """Every free block as ``(addr, size)``, ascending by address."""
        return sorted(
            (addr, 1 << order) for order, blocks in enumerate(self._free) for addr in blocks
        )

    def largest_free_block(self) -> int:
        """Size of the largest free block, 0 when nothing is free."""
        for order in range(MAX_ORDER, MIN_ORDER - 1, -1):
            if self._free[order]:
                return 1 << order
        return 0
