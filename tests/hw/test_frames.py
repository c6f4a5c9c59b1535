"""FrameAllocator: alignment, no overlap, exact accounting and clear errors, checked against a
page-map oracle (a bytearray with one byte per 4 KiB page of the range)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.errors import OutOfResources
from passthru.hw.frames import FRAME_1G, FRAME_2M, FRAME_4K, FrameAllocator

MIB = 1 << 20
TIB = 1 << 40


def test_fresh_allocator_packs_from_base() -> None:
    fa = FrameAllocator(0x1000_0000, 64 * MIB)
    assert fa.alloc(FRAME_4K) == 0x1000_0000
    assert fa.alloc(FRAME_4K) == 0x1000_1000
    assert fa.alloc(FRAME_2M) == 0x1020_0000  # the lowest 2 MiB block left whole
    assert fa.alloc(FRAME_4K) == 0x1000_2000  # smallest fit first: the split remainder
    assert fa.used_bytes == 3 * FRAME_4K + FRAME_2M
    assert fa.free_bytes == 64 * MIB - fa.used_bytes
    assert "0x10000000" in repr(fa)


@pytest.mark.parametrize("size", [FRAME_4K, 2 * FRAME_4K, 64 * 1024, FRAME_2M, FRAME_1G])
def test_frames_are_naturally_aligned(size: int) -> None:
    fa = FrameAllocator(0x3000, 4 * FRAME_1G)  # deliberately unaligned base
    frames = fa.alloc_many(size, 3)
    assert all(f % size == 0 for f in frames)
    assert all(0x3000 <= f and f + size <= 0x3000 + 4 * FRAME_1G for f in frames)
    assert len(set(frames)) == 3


def test_mixed_sizes_do_not_overlap_and_coalesce_back() -> None:
    fa = FrameAllocator(0, 16 * MIB)
    initial = fa.free_blocks()
    live = [(fa.alloc(s), s) for s in [FRAME_4K, FRAME_2M, FRAME_4K, 8 * FRAME_4K, FRAME_2M] * 2]
    spans = sorted(live)
    for (a, sa), (b, _) in zip(spans, spans[1:], strict=False):
        assert a + sa <= b
    for addr, size in reversed(live[::2]):
        fa.free(addr, size)
    for addr, size in live[1::2]:
        fa.free(addr, size)
    assert fa.free_blocks() == initial == [(0, 16 * MIB)]
    assert fa.free_bytes == 16 * MIB and fa.used_bytes == 0


def test_initial_blocks_are_maximal_aligned_pieces() -> None:
    fa = FrameAllocator(0x3000, 0x405000)
    assert fa.free_blocks() == [
        (0x3000, 0x1000),
        (0x4000, 0x4000),
        (0x8000, 0x8000),
        (0x10000, 0x10000),
        (0x20000, 0x20000),
        (0x40000, 0x40000),
        (0x80000, 0x80000),
        (0x100000, 0x100000),
        (0x200000, 0x200000),
        (0x400000, 0x8000),
    ]


def test_exhaustion_names_request_and_free_space() -> None:
    fa = FrameAllocator(0, 4 * MIB)
    fa.alloc(FRAME_4K)
    with pytest.raises(OutOfResources) as info:
        fa.alloc(FRAME_1G)
    msg = str(info.value)
    assert "0x40000000" in msg and "0x3ff000 bytes free" in msg
    assert "largest free block 0x200000" in msg
    fa.alloc(FRAME_2M)
    with pytest.raises(OutOfResources, match="0x200000-byte frame"):
        fa.alloc(FRAME_2M)  # 0x1ff000 bytes free, but fragmented


def test_alloc_many_is_all_or_nothing() -> None:
    fa = FrameAllocator(0, 5 * MIB)
    before = (fa.free_blocks(), fa.free_bytes)
    with pytest.raises(OutOfResources, match=r"3 frames of 0x200000 bytes.*only 2 fit"):
        fa.alloc_many(FRAME_2M, 3)
    assert (fa.free_blocks(), fa.free_bytes) == before
    assert fa.alloc_many(FRAME_4K, 0) == []
    with pytest.raises(ValueError):
        fa.alloc_many(FRAME_4K, -1)


def test_bad_frees_are_explained() -> None:
    fa = FrameAllocator(0x10_0000, 8 * MIB)
    big = fa.alloc(FRAME_2M)
    small = fa.alloc(FRAME_4K)
    cases = [
        ((small, FRAME_2M), "not aligned"),
        ((big, FRAME_4K), "allocated as 0x200000"),
        ((big + FRAME_4K, FRAME_4K), "inside the 0x200000-byte frame at 0x200000"),
        ((0x1000, FRAME_4K), "outside the allocator range [0x100000, 0x900000)"),
        ((small + FRAME_4K, FRAME_4K), "already free"),
    ]
    for (addr, size), needle in cases:
        with pytest.raises(ValueError, match="0x") as info:
            fa.free(addr, size)
        assert needle in str(info.value)
    fa.free(small, FRAME_4K)
    with pytest.raises(ValueError, match="double free"):
        fa.free(small, FRAME_4K)
    assert fa.used_bytes == FRAME_2M  # failed frees changed nothing


@pytest.mark.parametrize("size", [0, 0x800, 0x3000, FRAME_1G * 2, -FRAME_4K, True])
def test_bad_sizes(size: int) -> None:
    fa = FrameAllocator(0, 8 * MIB)
    with pytest.raises(ValueError, match="power of two between 0x1000 and 0x40000000"):
        fa.alloc(size)


def test_bad_ranges() -> None:
    with pytest.raises(ValueError, match="0x1001"):
        FrameAllocator(0x1001, MIB)
    with pytest.raises(ValueError, match="overflows"):
        FrameAllocator((1 << 64) - FRAME_4K, 2 * FRAME_4K)
    with pytest.raises(ValueError):
        FrameAllocator(0, 0)


def _run(seed: int) -> list[int | str]:
    rng = random.Random(seed)
    fa = FrameAllocator(0x7000, 64 * MIB)
    live: list[tuple[int, int]] = []
    out: list[int | str] = []
    for _ in range(500):
        if live and rng.random() < 0.4:
            fa.free(*live.pop(rng.randrange(len(live))))
            continue
        size = rng.choice([FRAME_4K, FRAME_4K, 4 * FRAME_4K, FRAME_2M])
        try:
            addr = fa.alloc(size)
        except OutOfResources:
            out.append("oom")
            continue
        live.append((addr, size))
        out.append(addr)
    return out


def test_deterministic() -> None:
    assert _run(7) == _run(7)
    assert _run(7) != _run(8)


def test_long_random_run_follows_policy() -> None:
    """Thousands of steps, enough to exercise the free lists' stale-entry compaction."""
    rng = random.Random(1)
    fa = FrameAllocator(0x5000, 32 * MIB)
    live: list[tuple[int, int]] = []
    for _ in range(4000):
        if live and rng.random() < 0.45:
            fa.free(*live.pop(rng.randrange(len(live))))
            continue
        n = rng.choice([FRAME_4K] * 6 + [2 * FRAME_4K, 16 * FRAME_4K, FRAME_2M])
        fits = sorted((bsize, baddr) for baddr, bsize in fa.free_blocks() if bsize >= n)
        if not fits:
            with pytest.raises(OutOfResources):
                fa.alloc(n)
            continue
        assert fa.alloc(n) == fits[0][1]
        live.append((fits[0][1], n))
    assert fa.used_bytes == sum(n for _, n in live)


def test_free_list_compaction_keeps_live_blocks() -> None:
    # Freeing 510 pages in order merges pairs upward, leaving ~255 stale heap entries at the
    # 4 KiB order (enough to trigger compaction) while page 0x1000 stays free at that order.
    fa = FrameAllocator(0, 4 * MIB)
    pages = fa.alloc_many(FRAME_4K, 512)
    fa.free(pages[1], FRAME_4K)  # its buddy (page 0) stays allocated
    for p in pages[2:]:
        fa.free(p, FRAME_4K)
    assert fa.free_blocks()[0] == (0x1000, FRAME_4K)
    assert fa.alloc(FRAME_4K) == 0x1000
    assert fa.alloc(FRAME_4K) == 0x2000


def test_one_tib_is_lazy() -> None:
    fa = FrameAllocator(0, TIB)
    assert len(fa.free_blocks()) == 1024  # 1 GiB blocks; nothing per 4 KiB
    frames = fa.alloc_many(FRAME_4K, 1000)
    assert frames == [i * FRAME_4K for i in range(1000)]
    gigs = fa.alloc_many(FRAME_1G, 1023)
    assert gigs[0] == FRAME_1G and gigs[-1] == TIB - FRAME_1G
    assert len(fa.free_blocks()) < 40
    with pytest.raises(OutOfResources):
        fa.alloc(FRAME_1G)
    for f in frames:
        fa.free(f, FRAME_4K)
    assert fa.alloc(FRAME_1G) == 0  # everything coalesced back


# ---------------------------------------------------------------- property test

SIZES = [FRAME_4K, 2 * FRAME_4K, 16 * FRAME_4K, FRAME_2M, FRAME_1G]


@st.composite
def regions(draw: st.DrawFn) -> tuple[int, int]:
    base = draw(st.sampled_from([0, 0x3000, 0x1F_F000, FRAME_1G - 0x5000]))
    pages = draw(st.integers(1, 3 * 512 + 7))  # up to ~6 MiB: a few 2 MiB frames at most
    return base, pages * FRAME_4K


ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.sampled_from(SIZES)),
        st.tuples(st.just("free"), st.integers(0, 1000)),
        st.tuples(st.just("bogus"), st.integers(0, 1000), st.sampled_from(SIZES)),
    ),
    max_size=60,
)


@settings(deadline=None, max_examples=150)
@given(regions(), ops)
def test_random_sequences_against_page_map(region: tuple[int, int], steps: list[tuple]) -> None:
    base, size = region
    fa = FrameAllocator(base, size)
    initial = fa.free_blocks()
    pmap = bytearray(size // FRAME_4K)  # 1 = page belongs to a live frame; rebuilt per step
    live: dict[int, int] = {}
    history: list[int] = []

    def window_free(addr: int, n: int) -> bool:
        i = (addr - base) // FRAME_4K
        return pmap.find(1, i, i + n // FRAME_4K) == -1

    for step in steps:
        if step[0] == "alloc":
            n = step[1]
            # Documented policy: the lowest block of the smallest order that fits.
            fits = sorted((bsize, baddr) for baddr, bsize in fa.free_blocks() if bsize >= n)
            try:
                addr = fa.alloc(n)
            except OutOfResources:
                assert not fits
                # Eager coalescing: failure means no aligned window of n bytes is free.
                first = -(-base // n) * n
                assert not any(window_free(a, n) for a in range(first, base + size - n + 1, n))
                continue
            assert fits and addr == fits[0][1]
            assert addr % n == 0 and base <= addr and addr + n <= base + size
            assert window_free(addr, n), f"frame {addr:#x} overlaps a live frame"
            live[addr] = n
            history.append(addr)
        elif step[0] == "free":
            if not live:
                continue
            addr = sorted(live)[step[1] % len(live)]
            fa.free(addr, live.pop(addr))
        else:
            # A free of any address seen before, with any size: legal only if it is live.
            if not history:
                continue
            addr, n = history[step[1] % len(history)], step[2]
            if live.get(addr) == n:
                fa.free(addr, n)
                del live[addr]
            else:
                with pytest.raises(ValueError, match="0x"):
                    fa.free(addr, n)
        _rebuild(pmap, live, base)
        assert fa.used_bytes == sum(live.values())
        assert fa.free_bytes == size - fa.used_bytes
        assert sum(n for _, n in fa.free_blocks()) == fa.free_bytes
    for addr, n in list(live.items()):
        fa.free(addr, n)
    assert fa.free_blocks() == initial and fa.free_bytes == size


def _rebuild(pmap: bytearray, live: dict[int, int], base: int) -> None:
    pmap[:] = bytes(len(pmap))
    for addr, n in live.items():
        i = (addr - base) // FRAME_4K
        pmap[i : i + n // FRAME_4K] = b"\x01" * (n // FRAME_4K)
