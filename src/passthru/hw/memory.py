"""Simulated host physical memory: byte-addressable, sparse, up to 1 TiB.

What is modelled: the host's DRAM as one flat physical address space ``[0, size)`` that every
DMA, IOMMU table walk and CPU access ultimately reads or writes. Memory that was never written
reads as zeros and costs no real RAM, so a 1 TiB host costs only what a scenario touches.

Backing store, chosen by measurement: a same-harness prototype of each candidate (Python 3.11,
x86-64, steady state, random addresses inside a 256 MiB working set of a 1 TiB memory):

    ====================  ==============  =========================  ========================
    operation             one 1 TiB mmap  dict of 64 KiB bytearrays  dict of 2 MiB bytearrays
    ====================  ==============  =========================  ========================
    read 4 KiB            ~4.3 GB/s       ~2.8 GB/s                  ~3.5 GB/s
    write 4 KiB           ~2.4 GB/s       ~2.9 GB/s                  ~3.7 GB/s
    read / write 1 MiB    ~14 / ~8 GB/s   ~12 / ~8 GB/s              ~13 / ~9 GB/s
    read_u64              ~2.9 M/s        ~1.6 M/s                   ~2.0 M/s
    ====================  ==============  =========================  ========================

One anonymous private ``mmap`` of the whole size with ``MAP_NORESERVE`` won: bulk copies are
memcpy-bound either way, but ``read_u64`` (the IOTLB-miss walk) is ~1.5-2x faster because it
is a single ``struct.unpack_from`` with no chunk lookup, no access ever needs splitting at a
chunk edge, and the kernel commits RAM per 4 KiB page (a scattered page-table write costs 4 KiB,
not a 64 KiB or 2 MiB chunk). ``MADV_NOHUGEPAGE`` keeps transparent huge pages from committing
2 MiB per touch. Writes record the touched OS pages in a set; that bookkeeping is what
``touched_bytes()``, ``digest()`` and ``save_state()`` walk, so they never scan 1 TiB. With the
bookkeeping tuned, this module does (benchmarks/bench_memory.py, same machine): 4 KiB reads
~5 GB/s and writes ~3.5 GB/s, 1 MiB reads ~14 GB/s and writes ~9.5 GB/s, ``read_u64``
~3 M/s at random addresses (~7 M/s on a cache-hot page), ``write_u64`` ~1.6-2 M/s.

Left out: caches, NUMA, ECC and memory errors, access timing (costs live in the cost model),
write permissions (the IOMMU and the hypervisor decide who may write), and dirty logging for
live migration (to be added by that feature). An address outside ``[0, size)`` is a model
bug, not a guest outcome (the fabric checks addresses first), so it raises ``IndexError``.

Portability: ``MAP_NORESERVE`` is what lets Linux hand out 1 TiB of address space under the
default heuristic overcommit; under ``vm.overcommit_memory=2`` (or a tight ``ulimit -v``) a
large memory cannot be reserved and the constructor raises ``OutOfResources``.
"""

from __future__ import annotations

import hashlib
import mmap
import platform
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np

from passthru.errors import OutOfResources

MAX_SIZE: Final = 1 << 40
"""Largest simulated memory (1 TiB); bounded by address space, not RAM, and easy to raise."""

DIGEST_PAGE: Final = 4096
"""Granule of the canonical content encoding used by ``digest()`` and ``save_state()``."""

# Touched-page bookkeeping follows the OS page (4 KiB on x86-64; 16/64 KiB on some arm64).
_PAGE: Final = max(mmap.PAGESIZE, DIGEST_PAGE)
_SHIFT: Final = _PAGE.bit_length() - 1
_MASK: Final = _PAGE - 1

_FILL_CHUNK: Final = 1 << 20  # bounds the temporary buffer of a non-zero fill
_SCAN_WINDOW: Final = 16 << 20  # bounds the numpy view used to find non-zero pages

# Bound methods at module level: one lookup fewer per access on the table-walk path.
_unpack_u16: Final = struct.Struct("<H").unpack_from
_unpack_u32: Final = struct.Struct("<I").unpack_from
_unpack_u64: Final = struct.Struct("<Q").unpack_from
_pack_u16: Final = struct.Struct("<H").pack_into
_pack_u32: Final = struct.Struct("<I").pack_into
_pack_u64: Final = struct.Struct("<Q").pack_into

# Linux releases private anonymous pages to the zero page with MADV_DONTNEED; other systems
# (macOS) may keep the old contents, so there a zero fill writes zeros instead.
_CAN_RELEASE: Final = sys.platform.startswith("linux") and hasattr(mmap, "MADV_DONTNEED")


def _map_noreserve_flag() -> int:
    flag = getattr(mmap, "MAP_NORESERVE", None)  # exported by Python >= 3.13
    if flag is not None:
        return int(flag)
    if not sys.platform.startswith("linux"):
        return 0  # macOS/BSD reserve anonymous memory lazily anyway
    machine = platform.machine().lower()
    if machine.startswith(("ppc", "powerpc", "sparc")):
        return 0x40  # arch/{powerpc,sparc}/include/uapi/asm/mman.h
    if machine.startswith("mips"):
        return 0x400  # arch/mips/include/uapi/asm/mman.h
    return 0x4000  # include/uapi/asm-generic/mman-common.h: x86, arm, arm64, riscv, s390


_MAP_FLAGS: Final = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _map_noreserve_flag()


def _page_runs(pages: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Coalesce ascending page numbers into ``(first, end)`` runs, ``end`` exclusive."""
    start = end = -1
    for p in pages:
        if p != end:
            if start >= 0:
                yield start, end
            start = p
        end = p + 1
    if start >= 0:
        yield start, end


@dataclass(frozen=True, slots=True, repr=False)
class MemoryState:
    """Saved contents: maximal runs of non-zero 4 KiB pages, ascending by address.

    Canonical: two memories with equal contents save equal states, whatever order or
    granularity they were written in, and whether or not zeros were written explicitly.
    """

    size: int
    runs: tuple[tuple[int, bytes], ...]

    @property
    def nbytes(self) -> int:
        return sum(len(data) for _, data in self.runs)

    def __repr__(self) -> str:  # the default would print every saved byte
        return f"MemoryState(size={self.size:#x}, runs={len(self.runs)}, nbytes={self.nbytes:#x})"

    # A compiled (native) frozen dataclass cannot be rebuilt field by field, as pickle's and
    # deepcopy's defaults would: rebuild it through its constructor, or keep it (immutable).
    def __reduce__(self) -> tuple[type[MemoryState], tuple[int, tuple[tuple[int, bytes], ...]]]:
        return MemoryState, (self.size, self.runs)

    def __deepcopy__(self, memo: dict[int, object]) -> MemoryState:
        return self


class HostMemory:
    """Sparse, byte-addressable host physical memory ``[0, size)``; little-endian integers."""

    __slots__ = ("size", "_mm", "_touched", "_max_u16", "_max_u32", "_max_u64")

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"host memory size must be an int, got {type(size).__name__}")
        if size <= 0 or size % DIGEST_PAGE:
            raise ValueError(f"host memory size {size:#x} must be a positive multiple of 0x1000")
        if size > MAX_SIZE:
            raise ValueError(f"host memory size {size:#x} exceeds the maximum {MAX_SIZE:#x}")
        self._map(size)

    def _map(self, size: int) -> None:
        try:
            mm = mmap.mmap(-1, size, flags=_MAP_FLAGS)
        except OSError as exc:
            raise OutOfResources(
                f"cannot reserve {size:#x} bytes of address space for host memory ({exc}); "
                "large sparse memories need vm.overcommit_memory 0 or 1 and no ulimit -v"
            ) from None
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            mm.madvise(mmap.MADV_NOHUGEPAGE)  # a touch must commit 4 KiB, not 2 MiB
        self.size = size
        self._mm = mm
        self._touched: set[int] = set()  # OS page numbers written since last release
        # Highest valid address of each integer width: one comparison per access.
        self._max_u16 = size - 2
        self._max_u32 = size - 4
        self._max_u64 = size - 8

    def __repr__(self) -> str:
        return f"HostMemory(size={self.size:#x}, touched={self.touched_bytes():#x})"

    def close(self) -> None:
        """Unmap now rather than at garbage collection (fails while a ``view`` is alive)."""
        self._mm.close()

    # ---------------------------------------------------------------- errors

    def _out_of_range(self, addr: object, length: object) -> IndexError:
        try:
            what = f"[{addr:#x}, {addr + length:#x})"  # type: ignore[operator]
        except (TypeError, ValueError):
            what = f"at {addr!r} of length {length!r}"
        return IndexError(f"host memory access {what} is outside [0x0, {self.size:#x})")

    @staticmethod
    def _bad_value(value: object, bits: int) -> ValueError:
        return ValueError(f"value {value!r} is not an unsigned {bits}-bit integer")

    def _mark(self, addr: int, length: int) -> None:
        first = addr >> _SHIFT
        last = (addr + length - 1) >> _SHIFT
        if first == last:
            self._touched.add(first)
        else:
            self._touched.update(range(first, last + 1))

    # ---------------------------------------------------------------- byte ranges

    def read(self, addr: int, length: int) -> bytes:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise self._out_of_range(addr, length)
        return self._mm[addr : addr + length]

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        if type(data) is not bytes and type(data) is not bytearray:
            data = memoryview(data).cast("B")  # len() of a typed view counts items, not bytes
        n = len(data)
        if addr < 0 or addr + n > self.size:
            raise self._out_of_range(addr, n)
        if n:
            self._mm[addr : addr + n] = data
            # _mark() inlined: this is the DMA-write path.
            first = addr >> _SHIFT
            last = (addr + n - 1) >> _SHIFT
            if first == last:
                self._touched.add(first)
            elif first + 1 == last:  # the common unaligned case: cheaper than a range
                self._touched.add(first)
                self._touched.add(last)
            else:
                self._touched.update(range(first, last + 1))

    def fill(self, addr: int, length: int, byte: int = 0) -> None:
        """Set ``length`` bytes at ``addr`` to ``byte``; a zero fill gives whole pages back."""
        if not isinstance(byte, int) or not 0 <= byte <= 0xFF:
            raise self._bad_value(byte, 8)
        if addr < 0 or length < 0 or addr + length > self.size:
            raise self._out_of_range(addr, length)
        if not length:
            return
        if byte == 0:
            self._zero(addr, addr + length)
            return
        pattern = memoryview(bytes((byte,)) * min(length, _FILL_CHUNK))
        end = addr + length
        for pos in range(addr, end, _FILL_CHUNK):
            n = min(end - pos, _FILL_CHUNK)
            self._mm[pos : pos + n] = pattern[:n]
        self._mark(addr, length)

    def _zero(self, start: int, end: int) -> None:
        """Zero ``[start, end)``: untouched pages already are; whole touched pages are released."""
        first = start >> _SHIFT
        last = (end - 1) >> _SHIFT
        touched = self._touched
        if last - first < len(touched):
            pages: Iterable[int] = (p for p in range(first, last + 1) if p in touched)
        else:  # a range wider than the touched set (e.g. clearing all 1 TiB)
            pages = sorted(p for p in touched if first <= p <= last)
        mm = self._mm
        for run_first, run_end in _page_runs(pages):
            lo = max(start, run_first << _SHIFT)
            hi = min(end, run_end << _SHIFT)
            whole_lo = (lo + _MASK) & ~_MASK
            whole_hi = hi & ~_MASK
            if not _CAN_RELEASE or whole_lo >= whole_hi:
                mm[lo:hi] = bytes(hi - lo)
                continue
            if lo < whole_lo:
                mm[lo:whole_lo] = bytes(whole_lo - lo)
            if whole_hi < hi:
                mm[whole_hi:hi] = bytes(hi - whole_hi)
            # MADV_DONTNEED on private anonymous memory: the next access sees the zero page.
            mm.madvise(mmap.MADV_DONTNEED, whole_lo, whole_hi - whole_lo)
            touched.difference_update(range(whole_lo >> _SHIFT, whole_hi >> _SHIFT))

    def view(self, addr: int, length: int) -> memoryview:
        """A zero-copy writable window onto ``[addr, addr + length)``.

        The whole memory is one mapping, so any in-range window works. Its pages count as
        touched from now on (writes through the view bypass bookkeeping), and ``close()``
        fails while the view is alive.
        """
        if addr < 0 or length < 0 or addr + length > self.size:
            raise self._out_of_range(addr, length)
        if length:
            self._mark(addr, length)
        return memoryview(self._mm)[addr : addr + length]

    # ---------------------------------------------------------------- little-endian integers
    # Written out per width: these sit on the IOMMU walk and descriptor-fetch paths, and one
    # bounds comparison plus one struct call is as cheap as Python gets.

    def read_u8(self, addr: int) -> int:
        if 0 <= addr < self.size:
            return self._mm[addr]
        raise self._out_of_range(addr, 1)

    def read_u16(self, addr: int) -> int:
        if 0 <= addr <= self._max_u16:
            return _unpack_u16(self._mm, addr)[0]
        raise self._out_of_range(addr, 2)

    def read_u32(self, addr: int) -> int:
        if 0 <= addr <= self._max_u32:
            return _unpack_u32(self._mm, addr)[0]
        raise self._out_of_range(addr, 4)

    def read_u64(self, addr: int) -> int:
        if 0 <= addr <= self._max_u64:
            return _unpack_u64(self._mm, addr)[0]
        raise self._out_of_range(addr, 8)

    def write_u8(self, addr: int, value: int) -> None:
        if not 0 <= addr < self.size:
            raise self._out_of_range(addr, 1)
        if not isinstance(value, int) or not 0 <= value <= 0xFF:
            raise self._bad_value(value, 8)
        self._mm[addr] = value
        self._touched.add(addr >> _SHIFT)

    def write_u16(self, addr: int, value: int) -> None:
        if not 0 <= addr <= self._max_u16:
            raise self._out_of_range(addr, 2)
        try:
            _pack_u16(self._mm, addr, value)
        except struct.error:
            raise self._bad_value(value, 16) from None
        page = addr >> _SHIFT
        self._touched.add(page)
        if (addr & _MASK) > _PAGE - 2:  # straddles a page boundary
            self._touched.add(page + 1)

    def write_u32(self, addr: int, value: int) -> None:
        if not 0 <= addr <= self._max_u32:
            raise self._out_of_range(addr, 4)
        try:
            _pack_u32(self._mm, addr, value)
        except struct.error:
            raise self._bad_value(value, 32) from None
        page = addr >> _SHIFT
        self._touched.add(page)
        if (addr & _MASK) > _PAGE - 4:  # straddles a page boundary
            self._touched.add(page + 1)

    def write_u64(self, addr: int, value: int) -> None:
        if not 0 <= addr <= self._max_u64:
            raise self._out_of_range(addr, 8)
        try:
            _pack_u64(self._mm, addr, value)
        except struct.error:
            raise self._bad_value(value, 64) from None
        page = addr >> _SHIFT
        self._touched.add(page)
        if (addr & _MASK) > _PAGE - 8:  # straddles a page boundary
            self._touched.add(page + 1)

    # ---------------------------------------------------------------- accounting and state

    def touched_bytes(self) -> int:
        """Real RAM committed by writes (whole OS pages), as tracked by this object."""
        return len(self._touched) << _SHIFT

    def _nonzero_runs(self) -> Iterator[tuple[int, int]]:
        """``(addr, length)`` of maximal runs of non-zero 4 KiB pages, ascending."""
        words_per_page = DIGEST_PAGE // 8
        run_start = run_end = -1
        with memoryview(self._mm) as mv:
            for first, end in _page_runs(sorted(self._touched)):
                lo, hi = first << _SHIFT, min(end << _SHIFT, self.size)
                for win in range(lo, hi, _SCAN_WINDOW):
                    win_end = min(hi, win + _SCAN_WINDOW)
                    words = np.frombuffer(mv[win:win_end], dtype=np.uint64)
                    nonzero = np.flatnonzero(words.reshape(-1, words_per_page).any(axis=1))
                    del words  # release the export on the mapping before any yield
                    for index in nonzero.tolist():
                        page = win + index * DIGEST_PAGE
                        if page != run_end:
                            if run_start >= 0:
                                yield run_start, run_end - run_start
                            run_start = page
                        run_end = page + DIGEST_PAGE
        if run_start >= 0:
            yield run_start, run_end - run_start

    def digest(self) -> str:
        """SHA-256 (hex) of the contents, canonical whatever the write pattern or backing.

        Encoding: ``b"passthru.HostMemory/v1"``, size as u64 LE, then for every maximal run of
        non-zero 4 KiB pages in address order: start u64 LE, length u64 LE, the bytes.
        """
        h = hashlib.sha256(b"passthru.HostMemory/v1")
        h.update(self.size.to_bytes(8, "little"))
        with memoryview(self._mm) as mv:
            for addr, length in self._nonzero_runs():
                h.update(addr.to_bytes(8, "little") + length.to_bytes(8, "little"))
                h.update(mv[addr : addr + length])  # hashed in place: no copy of big runs
        return h.hexdigest()

    def save_state(self) -> MemoryState:
        runs = tuple((a, self._mm[a : a + n]) for a, n in self._nonzero_runs())
        return MemoryState(self.size, runs)

    def load_state(self, state: MemoryState) -> None:
        """Replace the whole contents with ``state`` (which must come from an equal size)."""
        if state.size != self.size:
            raise ValueError(
                f"memory state of size {state.size:#x} cannot load into memory of {self.size:#x}"
            )
        self._zero(0, self.size)
        for addr, data in state.runs:
            self.write(addr, data)

    # pickle / copy.deepcopy go through the canonical state (an mmap cannot be pickled); a
    # reduce rather than __setstate__, which a compiled (native) class cannot take.
    def __reduce__(self) -> tuple[Callable[[MemoryState], HostMemory], tuple[MemoryState]]:
        return _from_state, (self.save_state(),)


def _from_state(state: MemoryState) -> HostMemory:
    """A new memory holding ``state`` (what unpickling and deepcopy call)."""
    mem = HostMemory(state.size)
    mem.load_state(state)
    return mem
