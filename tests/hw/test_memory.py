"""HostMemory against a plain bytearray oracle, plus sparseness, errors and state round trips."""

from __future__ import annotations

import copy
import hashlib
import mmap
import os
import pickle
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.hw.memory import DIGEST_PAGE, MAX_SIZE, HostMemory, MemoryState

TIB = 1 << 40
PAGE = max(mmap.PAGESIZE, DIGEST_PAGE)
SMALL = 8 * PAGE  # several OS pages, so writes cross page boundaries often


def reference_digest(buf: bytes | bytearray) -> str:
    """The documented canonical encoding, computed naively from a flat buffer."""
    h = hashlib.sha256(b"passthru.HostMemory/v1")
    h.update(len(buf).to_bytes(8, "little"))
    nonzero = [p for p in range(0, len(buf), DIGEST_PAGE) if any(buf[p : p + DIGEST_PAGE])]
    runs: list[list[int]] = []
    for p in nonzero:
        if runs and runs[-1][1] == p:
            runs[-1][1] = p + DIGEST_PAGE
        else:
            runs.append([p, p + DIGEST_PAGE])
    for start, end in runs:
        h.update(start.to_bytes(8, "little") + (end - start).to_bytes(8, "little"))
        h.update(buf[start:end])
    return h.hexdigest()


def assert_same_bytes(got: bytes, want: bytes | bytearray, at: int = 0) -> None:
    """Equality with a short message (pytest's diff of 32 KiB blobs makes shrinking crawl)."""
    if got != want:
        if len(got) != len(want):
            raise AssertionError(f"length {len(got):#x} != {len(want):#x}")
        first = next(i for i in range(len(got)) if got[i] != want[i])
        raise AssertionError(
            f"first difference at {at + first:#x}: {got[first]:#04x} != {want[first]:#04x}"
        )


# ---------------------------------------------------------------- differential property test

WIDTHS = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
# Hypothesis favours zero bytes, which hide bookkeeping bugs (a page holding only zeros
# needs no tracking); most generated data therefore has every byte non-zero.
NO_ZEROS = bytes([0x5A]) + bytes(range(1, 256))


@st.composite
def operations(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["write", "write_view", "fill", "int", "zero_big"]))
    # Addresses near page edges are where page-bookkeeping bugs live.
    edge = draw(st.integers(1, SMALL // PAGE - 1)) * PAGE
    near_edge = st.sampled_from(range(edge - 9, edge + 2))
    addr = draw(st.one_of(st.integers(0, SMALL - 1), near_edge))
    if kind == "int":
        width = draw(st.sampled_from(sorted(WIDTHS)))
        value = draw(st.integers(0, (1 << (8 * width)) - 1))
        if draw(st.booleans()):
            value |= int.from_bytes(b"\x11" * width, "little")
        return kind, min(addr, SMALL - width), width, value
    if kind == "zero_big":
        addr = draw(st.integers(0, SMALL // 2))
        return kind, addr, draw(st.integers(0, SMALL - addr)), 0
    to_edge = PAGE - addr % PAGE  # lengths ending just before, at, or just past page edges
    across = st.sampled_from([to_edge - 1, to_edge, to_edge + 1, to_edge + PAGE + 1])
    length = min(SMALL - addr, draw(st.one_of(st.integers(0, 3 * PAGE), across)))
    if kind == "fill":
        return kind, addr, length, draw(st.integers(0, 255))
    # A short repeated pattern keeps the choice sequence small, so shrinking stays fast.
    pattern = draw(st.binary(min_size=1, max_size=24))
    if kind == "write":
        pattern = pattern.translate(NO_ZEROS)
    data = (pattern * (length // len(pattern) + 1))[:length]
    return kind, addr, data, None


@settings(deadline=None, max_examples=200)
@given(st.lists(operations(), min_size=1, max_size=40), st.data())
def test_matches_bytearray_oracle(ops: list[tuple], data: st.DataObject) -> None:
    mem = HostMemory(SMALL)
    oracle = bytearray(SMALL)
    for kind, addr, arg, extra in ops:
        if kind == "write":
            mem.write(addr, arg)
            oracle[addr : addr + len(arg)] = arg
        elif kind == "write_view":
            mem.write(addr, memoryview(bytearray(arg)))
            oracle[addr : addr + len(arg)] = arg
        elif kind in ("fill", "zero_big"):
            mem.fill(addr, arg, extra)
            oracle[addr : addr + arg] = bytes([extra]) * arg
        else:
            getattr(mem, f"write_{WIDTHS[arg]}")(addr, extra)
            oracle[addr : addr + arg] = extra.to_bytes(arg, "little")
        # A random read after every step, including ranges straddling OS pages.
        lo = data.draw(st.integers(0, SMALL))
        n = data.draw(st.integers(0, SMALL - lo))
        assert_same_bytes(mem.read(lo, n), oracle[lo : lo + n], lo)
        # Per step, before a later write can mask it: bookkeeping saw every written page.
        assert mem.digest() == reference_digest(oracle)
    assert_same_bytes(mem.read(0, SMALL), oracle)
    for width, name in WIDTHS.items():
        a = data.draw(st.integers(0, SMALL - width))
        assert getattr(mem, f"read_{name}")(a) == int.from_bytes(oracle[a : a + width], "little")
    assert mem.digest() == reference_digest(oracle)
    nonzero_pages = {p // PAGE for p in range(0, SMALL, PAGE) if any(oracle[p : p + PAGE])}
    assert mem.touched_bytes() >= len(nonzero_pages) * PAGE
    # save/restore round trip into a fresh memory, and into one holding other data
    state = mem.save_state()
    for target in (HostMemory(SMALL), _scribbled(SMALL)):
        target.load_state(state)
        assert_same_bytes(target.read(0, SMALL), oracle)
        assert target.save_state() == state
        assert target.digest() == mem.digest()


def _scribbled(size: int) -> HostMemory:
    mem = HostMemory(size)
    mem.fill(0, size, 0xA5)
    return mem


# ---------------------------------------------------------------- sparseness


def test_untouched_memory_reads_zero_and_costs_nothing() -> None:
    mem = HostMemory(TIB)
    assert mem.touched_bytes() == 0
    assert mem.read(0, 64) == bytes(64)
    assert mem.read(TIB - (1 << 20), 1 << 20) == bytes(1 << 20)
    assert mem.read_u64(TIB - 8) == 0
    assert mem.read_u8(0x1234_5678_9A) == 0
    assert mem.touched_bytes() == 0
    assert mem.save_state().runs == ()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_one_tib_memory_touches_only_what_is_written() -> None:
    rss_before = _rss_bytes() if sys.platform.startswith("linux") else 0
    mem = HostMemory(TIB)
    assert mem.size == TIB == MAX_SIZE
    top = TIB - 5
    mem.write(top, b"hello")
    addrs = [gib << 30 for gib in range(0, 1024, 64)]  # one u64 in every 64th GiB
    for a in addrs:
        mem.write_u64(a, a | 1)
    assert mem.read(top, 5) == b"hello"
    assert [mem.read_u64(a) for a in addrs] == [a | 1 for a in addrs]
    assert mem.touched_bytes() == (len(addrs) + 1) * PAGE
    if sys.platform.startswith("linux"):
        # Real RAM, as the kernel sees it: nowhere near 1 TiB (generous margin for the
        # interpreter's own allocations).
        assert _rss_bytes() - rss_before < 64 << 20
    mem.fill(0, TIB)  # a zero fill gives the pages back
    assert mem.touched_bytes() == 0
    assert mem.read(top, 5) == bytes(5)
    mem.close()


def test_zero_fill_releases_whole_pages_and_keeps_partial_ones() -> None:
    mem = HostMemory(4 * PAGE)
    mem.fill(0, 4 * PAGE, 0xFF)
    assert mem.touched_bytes() == 4 * PAGE
    mem.fill(PAGE // 2, 2 * PAGE)  # half of page 0, all of page 1, half of page 2
    assert mem.touched_bytes() == 3 * PAGE
    expected = b"\xff" * (PAGE // 2) + bytes(2 * PAGE) + b"\xff" * (PAGE + PAGE // 2)
    assert mem.read(0, 4 * PAGE) == expected


# ---------------------------------------------------------------- integers and errors


def test_little_endian_integers() -> None:
    mem = HostMemory(2 * PAGE)
    mem.write_u32(0x10, 0x12345678)
    assert mem.read(0x10, 4) == bytes([0x78, 0x56, 0x34, 0x12])
    mem.write_u64(PAGE - 4, 0x0102030405060708)  # straddles a page boundary
    assert mem.read(PAGE - 4, 8) == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert mem.read_u64(PAGE - 4) == 0x0102030405060708
    assert mem.read_u32(PAGE) == 0x01020304
    assert mem.read_u16(PAGE - 4) == 0x0708
    assert mem.read_u8(PAGE - 4) == 0x08
    assert mem.touched_bytes() == 2 * PAGE
    mem.write_u16(0, 0xFFFF)
    mem.write_u8(2, 0xFF)
    assert mem.read_u32(0) == 0x00FFFFFF


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("read", (-1, 2)),
        ("read", (0x1FFF, 2)),
        ("read", (0, -1)),
        ("write", (0x1FFF, b"ab")),
        ("write", (-4, b"a")),
        ("fill", (0x1000, 0x1001)),
        ("view", (0x2000, 1)),
        ("read_u8", (0x2000,)),
        ("read_u8", (-1,)),
        ("read_u16", (0x1FFF,)),
        ("read_u32", (0x1FFD,)),
        ("read_u64", (0x1FF9,)),
        ("read_u64", (-8,)),
        ("write_u8", (0x2000, 0)),
        ("write_u16", (0x1FFF, 0)),
        ("write_u32", (0x1FFD, 0)),
        ("write_u64", (0x1FF9, 0)),
    ],
)
def test_out_of_range_raises_index_error_in_hex(call: str, args: tuple) -> None:
    mem = HostMemory(0x2000)
    with pytest.raises(IndexError, match=r"outside \[0x0, 0x2000\)"):
        getattr(mem, call)(*args)
    assert mem.touched_bytes() == 0


@pytest.mark.parametrize(
    ("call", "value"),
    [("write_u8", 256), ("write_u16", 1 << 16), ("write_u32", -1), ("write_u64", 1 << 64)],
)
def test_integer_values_must_fit(call: str, value: int) -> None:
    mem = HostMemory(PAGE)
    with pytest.raises(ValueError, match="unsigned"):
        getattr(mem, call)(0, value)
    with pytest.raises(ValueError, match="unsigned 8-bit"):
        mem.fill(0, 1, 300)


def test_bad_sizes_rejected() -> None:
    for size in (0, 0x1001, -0x1000, MAX_SIZE + 0x1000):
        with pytest.raises(ValueError, match="0x"):
            HostMemory(size)
    with pytest.raises(TypeError):
        HostMemory(4096.0)  # type: ignore[arg-type]


def test_write_accepts_typed_memoryviews_by_bytes() -> None:
    mem = HostMemory(PAGE)
    words = memoryview(bytearray(range(16))).cast("I")  # 4 items, 16 bytes
    mem.write(0, words)
    assert mem.read(0, 16) == bytes(range(16))


# ---------------------------------------------------------------- views, digest, state


def test_view_is_zero_copy_and_counted() -> None:
    mem = HostMemory(4 * PAGE)
    v = mem.view(PAGE - 2, 4)
    v[:] = b"abcd"
    assert mem.read(PAGE - 2, 4) == b"abcd"
    assert mem.touched_bytes() == 2 * PAGE
    assert mem.digest() == reference_digest(mem.read(0, 4 * PAGE))
    v.release()


def test_digest_is_canonical() -> None:
    a, b = HostMemory(16 * PAGE), HostMemory(16 * PAGE)
    payload = bytes(range(256)) * 64
    a.write(3 * PAGE - 100, payload)
    for off in range(0, len(payload), 1000):  # same bytes, different pieces and order
        b.write(3 * PAGE - 100 + off, payload[off : off + 1000])
    b.fill(10 * PAGE, 4 * PAGE)  # explicit zeros and untouched memory are the same thing
    b.write(0, bytes(PAGE))
    assert a.digest() == b.digest() == reference_digest(a.read(0, 16 * PAGE))
    assert a.save_state() == b.save_state()
    b.write_u8(15 * PAGE, 1)
    assert a.digest() != b.digest()
    assert HostMemory(PAGE).digest() != HostMemory(2 * PAGE).digest()  # size is part of it


def test_state_round_trip_and_size_mismatch() -> None:
    mem = HostMemory(TIB)
    mem.write(0x10_0000_0000 - 3, b"across a boundary")
    mem.write_u64(TIB - 8, 0xDEADBEEF)
    state = mem.save_state()
    assert isinstance(state, MemoryState) and state.nbytes == 3 * DIGEST_PAGE
    assert "0x" in repr(state) and len(repr(state)) < 200
    other = HostMemory(TIB)
    other.write(0x5000, b"stale")
    other.load_state(state)
    assert other.digest() == mem.digest()
    assert other.read(0x5000, 5) == bytes(5)
    with pytest.raises(ValueError, match="0x10000000000"):
        HostMemory(PAGE).load_state(state)


def test_pickle_and_deepcopy_are_independent_copies() -> None:
    mem = HostMemory(4 * PAGE)
    mem.write(PAGE + 1, b"data")
    for clone in (pickle.loads(pickle.dumps(mem)), copy.deepcopy(mem)):
        assert clone.digest() == mem.digest()
        clone.write(0, b"x")
        assert mem.read(0, 1) == b"\x00"
    state = mem.save_state()
    assert pickle.loads(pickle.dumps(state)) == state == copy.deepcopy(state)
    assert "0x4000" in repr(mem)
