"""The split virtqueue: byte-exact layout, chains, indirect tables, suppression, wrap."""

from __future__ import annotations

import copy
import pickle
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.hw.devices.virtio.virtqueue import (
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_USED_F_NO_NOTIFY,
    Chain,
    ChainError,
    Desc,
    DescFlags,
    DeviceRing,
    DriverRing,
    SplitLayout,
    ring_bytes,
    vring_need_event,
)


class ByteMem:
    """Flat memory for ring tests."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.buf = bytearray(size)

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.buf[addr:addr + length])

    def write(self, addr: int, data: bytes) -> None:
        self.buf[addr:addr + len(data)] = data

    def u16(self, addr: int) -> int:
        return struct.unpack_from("<H", self.buf, addr)[0]


def rings(size=8, *, event_idx=False, indirect=False, base=0x1000):
    mem = ByteMem()
    lay = SplitLayout.contiguous(base, size)
    drv = DriverRing(lay, mem, event_idx=event_idx, indirect=indirect)
    drv.init()
    dev = DeviceRing(lay, mem, event_idx=event_idx)
    return mem, lay, drv, dev


def test_layout_offsets_follow_the_spec():
    assert ring_bytes(8) == (128, 22, 70)
    lay = SplitLayout.contiguous(0x1000, 8)
    assert (lay.desc, lay.avail, lay.used) == (0x1000, 0x1080, 0x1098)  # used is 4-aligned
    assert lay.avail_idx == 0x1082 and lay.avail_ring(3) == 0x1080 + 4 + 2 * 3
    assert lay.used_event == 0x1080 + 4 + 16
    assert lay.used_idx == 0x109A and lay.used_ring(1) == 0x1098 + 4 + 8
    assert lay.avail_event == 0x1098 + 4 + 64
    with pytest.raises(ValueError, match="16-byte aligned"):
        SplitLayout(8, 0x1008, 0x2000, 0x3000)
    with pytest.raises(ValueError, match="4-byte aligned"):
        SplitLayout(8, 0x1000, 0x2000, 0x3002)
    with pytest.raises(ValueError, match="power of two"):
        SplitLayout(6, 0x1000, 0x2000, 0x3000)


def test_raw_ring_memory_decodes_per_spec_offsets():
    mem, lay, drv, dev = rings(8)
    head = drv.add([(0x8000, 16, False), (0x9000, 4096, True), (0xA000, 1, True)])
    # descriptor table: struct virtq_desc {le64 addr; le32 len; le16 flags; le16 next}
    descs = [struct.unpack_from("<QIHH", mem.buf, lay.desc + 16 * i) for i in range(3)]
    assert descs[0] == (0x8000, 16, DescFlags.NEXT, 1)
    assert descs[1] == (0x9000, 4096, DescFlags.NEXT | DescFlags.WRITE, 2)
    assert descs[2][:3] == (0xA000, 1, DescFlags.WRITE)
    # available ring: flags, idx, ring[]
    assert struct.unpack_from("<HHH", mem.buf, lay.avail) == (0, 1, head)
    chain = dev.pop()
    assert isinstance(chain, Chain) and chain.head == head
    assert [d.addr for d in chain.readable] == [0x8000]
    assert [d.addr for d in chain.writable] == [0x9000, 0xA000]
    dev.push(head, 4097)
    # used ring: flags, idx, ring[] of {le32 id, le32 len}
    assert struct.unpack_from("<HHII", mem.buf, lay.used) == (0, 1, head, 4097)
    assert drv.get_buf() == (head, 4097)
    assert drv.get_buf() is None and drv.num_free == 8


def test_indirect_table_uses_one_ring_descriptor():
    mem, lay, drv, dev = rings(4, indirect=True)
    bufs = [(0x8000, 16, False)] + [(0x9000 + i * 4096, 4096, False) for i in range(5)]
    bufs.append((0xF000, 1, True))
    head = drv.add(bufs, indirect_table=0x6000)
    assert drv.num_free == 3
    addr, length, flags, _ = struct.unpack_from("<QIHH", mem.buf, lay.desc_addr(head))
    assert (addr, length, flags) == (0x6000, 16 * 7, DescFlags.INDIRECT)
    table = [Desc.unpack(mem.read(0x6000 + 16 * i, 16)) for i in range(7)]
    assert [d.next for d in table[:-1]] == list(range(1, 7))
    assert not table[-1].flags & DescFlags.NEXT and table[-1].writable
    chain = dev.pop()
    assert isinstance(chain, Chain)
    assert len(chain.readable) == 6 and [d.len for d in chain.writable] == [1]
    dev.push(head, 1)
    assert drv.get_buf() == (head, 1) and drv.num_free == 4


def test_malformed_chains_are_records():
    mem, lay, drv, dev = rings(4)
    # a loop: 0 -> 1 -> 0
    mem.write(lay.desc_addr(0), Desc(0x100, 1, DescFlags.NEXT, 1).pack())
    mem.write(lay.desc_addr(1), Desc(0x100, 1, DescFlags.NEXT, 0).pack())
    mem.write(lay.avail_ring(0), b"\0\0")
    mem.write(lay.avail_idx, (1).to_bytes(2, "little"))
    err = dev.pop()
    assert isinstance(err, ChainError) and "loops" in err.reason
    # readable after writable
    mem.write(lay.desc_addr(0), Desc(0x100, 1, DescFlags.NEXT | DescFlags.WRITE, 1).pack())
    mem.write(lay.desc_addr(1), Desc(0x100, 1, 0, 0).pack())
    mem.write(lay.avail_idx, (2).to_bytes(2, "little"))
    err = dev.pop()
    assert isinstance(err, ChainError) and "readable" in err.reason
    # indirect inside indirect
    mem.write(lay.desc_addr(0), Desc(0x6000, 16, DescFlags.INDIRECT, 0).pack())
    mem.write(0x6000, Desc(0x7000, 16, DescFlags.INDIRECT, 0).pack())
    mem.write(lay.avail_ring(2), b"\0\0")
    mem.write(lay.avail_idx, (3).to_bytes(2, "little"))
    err = dev.pop()
    assert isinstance(err, ChainError) and "indirect" in err.reason
    # head out of range
    mem.write(lay.avail_ring(3), (9).to_bytes(2, "little"))
    mem.write(lay.avail_idx, (4).to_bytes(2, "little"))
    err = dev.pop()
    assert isinstance(err, ChainError) and "head 9" in err.reason
    assert dev.pop() is None


def test_vring_need_event_including_wrap():
    assert vring_need_event(0, 1, 0)
    assert not vring_need_event(5, 5, 4)  # event already passed? idx 5 not yet used
    assert vring_need_event(4, 5, 4)
    assert vring_need_event(6, 8, 4) and not vring_need_event(8, 8, 4)
    assert vring_need_event(0xFFFF, 1, 0xFFFE)  # crosses the 16-bit wrap
    assert not vring_need_event(2, 1, 0xFFFE)


def test_flag_suppression_both_ways():
    mem, lay, drv, dev = rings(8)
    drv.add([(0x8000, 1, True)])
    assert drv.kick_prepare()
    dev.set_notification(False)
    assert mem.u16(lay.used_flags) == VIRTQ_USED_F_NO_NOTIFY
    drv.add([(0x8000, 1, True)])
    assert not drv.kick_prepare()
    dev.set_notification(True)
    assert mem.u16(lay.used_flags) == 0
    dev.pop()
    dev.push(0, 1)
    assert dev.should_interrupt()
    mem.write(lay.avail_flags, VIRTQ_AVAIL_F_NO_INTERRUPT.to_bytes(2, "little"))
    assert not dev.should_interrupt()


def test_event_idx_suppresses_kicks_and_interrupts():
    mem, lay, drv, dev = rings(8, event_idx=True)
    drv.add([(0x8000, 1, True)])
    assert drv.kick_prepare()  # avail_event = 0: the first entry is wanted
    dev.pop()
    assert mem.u16(lay.avail_event) == 1  # the device has read up to 1
    drv.add([(0x8000, 1, True)])
    drv.add([(0x8000, 1, True)])
    assert drv.kick_prepare()  # crosses avail_event 1
    drv.add([(0x8000, 1, True)])
    assert not drv.kick_prepare()  # the device has not asked again
    # interrupts: the driver asks for one at used_event
    dev.pop()
    dev.push(0, 1)
    assert dev.should_interrupt()  # first one always
    dev.pop()
    dev.push(1, 1)
    assert not dev.should_interrupt()  # used_event is still 0: the driver has not reaped
    assert drv.get_buf() is not None
    assert drv.get_buf() is not None
    assert mem.u16(lay.used_event) == 2
    dev.pop()
    dev.push(2, 1)
    assert dev.should_interrupt()
    # with notifications off the device stops moving avail_event: one more kick at most
    dev.set_notification(False)
    for _ in range(3):
        drv.add([(0x8000, 1, True)])
        drv.kick_prepare()
        dev.pop()
    assert mem.u16(lay.avail_event) == 4  # where it was when notifications went off
    drv.add([(0x8000, 1, True)])
    assert not drv.kick_prepare()
    dev.set_notification(True)
    assert mem.u16(lay.avail_event) == 8


def test_indices_wrap_at_16_bits():
    mem, lay, drv, dev = rings(4)
    start = 0xFFFE
    drv.avail_idx = drv.kicked_avail = drv.last_used_idx = start
    dev.state.last_avail_idx = dev.state.used_idx = start
    mem.write(lay.avail_idx, start.to_bytes(2, "little"))
    mem.write(lay.used_idx, start.to_bytes(2, "little"))
    seen = []
    for k in range(6):
        head = drv.add([(0x8000 + k, 1, True)])
        chain = dev.pop()
        assert isinstance(chain, Chain) and chain.writable[0].addr == 0x8000 + k
        dev.push(chain.head, k)
        seen.append(drv.get_buf() == (head, k))
    assert all(seen) and drv.avail_idx == (start + 6) & 0xFFFF == 4
    assert mem.u16(lay.used_idx) == 4


def test_full_ring_refuses_more():
    _, _, drv, _ = rings(4)
    for _ in range(4):
        drv.add([(0x8000, 1, True)])
    with pytest.raises(ValueError, match="0 free"):
        drv.add([(0x8000, 1, True)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5), st.integers(0, 3)),
                min_size=1, max_size=40),
       st.booleans())
def test_random_add_and_out_of_order_completion_against_an_oracle(ops, indirect):
    """Chains come back whole, exactly once, whatever order the device completes them in."""
    mem, lay, drv, dev = rings(16, indirect=indirect)
    oracle: dict[int, list[tuple[int, int, bool]]] = {}
    device_held: list[Chain] = []
    serial = 0
    for add, nbufs, pick in ops:
        if add:
            bufs = [(0x10000 + serial * 0x100 + i, i + 1, i == nbufs - 1) for i in range(nbufs)]
            if drv.descriptors_needed(nbufs) <= drv.num_free:
                table = 0x8000 + 0x80 * (serial % 64)
                head = drv.add(bufs, table)
                assert head not in oracle
                oracle[head] = bufs
                serial += 1
        while (chain := dev.pop()) is not None:
            assert isinstance(chain, Chain)
            device_held.append(chain)
        if device_held:
            chain = device_held.pop(pick % len(device_held))
            got = [(d.addr, d.len, d.writable) for d in chain.readable + chain.writable]
            assert got == oracle[chain.head]
            dev.push(chain.head, len(got))
            head, n = drv.get_buf()
            assert head == chain.head and n == len(oracle.pop(head))
    used = lay.size - drv.num_free
    assert used == sum(drv.descriptors_needed(len(b)) for b in oracle.values())


def test_layout_survives_pickle_and_deepcopy() -> None:
    # Saved device state holds layouts; the compiled (native) dataclass must copy too.
    layout = SplitLayout.contiguous(0x10000, 64)
    for clone in (pickle.loads(pickle.dumps(layout)), copy.deepcopy(layout)):
        assert clone == layout and (clone.desc, clone.avail, clone.used) == (
            layout.desc, layout.avail, layout.used)
