"""Interrupt remapping and posting (VT-d spec ch. 5, 9.10-9.12)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from passthru.hw.frames import FrameAllocator
from passthru.hw.iommu.vtd import regs as R
from passthru.hw.iommu.vtd.entries import (
    PID_CONTROL,
    PID_ON,
    DeliveryMode,
    Irte,
    Sq,
    Svt,
    iec_inv_desc,
    msi_compat_address,
    msi_compat_data,
    msi_remappable_address,
    pid_control,
    wait_desc,
)
from passthru.hw.iommu.vtd.faults import FaultReason, FaultRecord
from passthru.hw.iommu.vtd.intremap import InterruptResult
from passthru.hw.iommu.vtd.tables import TableWriter, enable_ir, enable_qi
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory

GIB = 1 << 30
DEV = 0x0418  # 04:03.0
OTHER = 0x0500


def make(*, ir: bool = True, cfi: bool = False, eime: bool = True, entries: int = 256):
    mem = HostMemory(2 * GIB)
    frames = FrameAllocator(GIB, GIB // 2)
    unit = DmarUnit(mem)
    tw = TableWriter(mem, frames)
    table = tw.alloc_page(max(4096, entries * 16))
    queue = tw.alloc_page()
    enable_qi(unit, queue)
    if ir:
        enable_ir(unit, table, entries, eime=eime, cfi=cfi)
    return SimpleNamespace(mem=mem, unit=unit, tw=tw, table=table, queue=queue, tail=0, eime=eime)


def iec_flush(env, index: int | None = None) -> None:
    for lo, hi in (iec_inv_desc(index), wait_desc()):
        env.mem.write_u64(env.queue + env.tail * 16, lo)
        env.mem.write_u64(env.queue + env.tail * 16 + 8, hi)
        env.tail += 1
    env.unit.write_reg(R.IQT_REG, env.tail << 4, 8)


def irte(vector: int = 0x41, dest: int = 3, sid: int = DEV, **kw) -> Irte:
    return Irte(vector=vector, destination=dest, sid=sid, svt=Svt.VERIFY_SID_SQ, **kw)


@pytest.fixture
def env() -> SimpleNamespace:
    return make()


def test_ir_disabled_delivers_any_vector_anywhere():
    env = make(ir=False)
    for vec, dest in ((0x20, 0), (0xEF, 7), (0x02, 0xFF)):
        r = env.unit.remap_interrupt(OTHER, msi_compat_address(dest), msi_compat_data(vec))
        assert isinstance(r, InterruptResult)
        assert (r.vector, r.destination, r.remapped) == (vec, dest, False)
    # even a "remappable" address is taken as compatibility format while IR is off
    r = env.unit.remap_interrupt(OTHER, msi_remappable_address(5), 0x31)
    assert isinstance(r, InterruptResult) and r.vector == 0x31 and not r.remapped


def test_remapped_interrupt_follows_the_irte(env):
    env.tw.set_irte(env.table, 5, irte(delivery_mode=DeliveryMode.LOWEST_PRIORITY, dest=0x12345))
    r = env.unit.remap_interrupt(DEV, msi_remappable_address(5), 0)
    assert isinstance(r, InterruptResult)
    assert (r.vector, r.destination, r.delivery_mode, r.posted, r.index) == (
        0x41,
        0x12345,
        DeliveryMode.LOWEST_PRIORITY,
        False,
        5,
    )
    # the device's data cannot choose the vector: it only adds a subhandle
    env.tw.set_irte(env.table, 6, irte(vector=0x42))
    r = env.unit.remap_interrupt(DEV, msi_remappable_address(5, shv=True), 1)
    assert isinstance(r, InterruptResult) and r.vector == 0x42 and r.index == 6
    r = env.unit.remap_interrupt(DEV, msi_remappable_address(5, shv=False), 0xFF)
    assert isinstance(r, InterruptResult) and r.vector == 0x41


def test_handle_bit_15_lives_in_address_bit_2(env):
    big = make(entries=65536)
    big.tw.set_irte(big.table, 0x8001, irte(vector=0x66))
    addr = msi_remappable_address(0x8001)
    assert addr & 4 and (addr >> 5) & 0x7FFF == 1
    r = big.unit.remap_interrupt(DEV, addr, 0)
    assert isinstance(r, InterruptResult) and r.vector == 0x66


def test_xapic_destination_in_bits_47_40():
    env = make(eime=False)
    env.tw.set_irte(env.table, 1, irte(dest=0x7), eime=False)
    assert (env.mem.read_u64(env.table + 16) >> 40) & 0xFF == 0x7
    r = env.unit.remap_interrupt(DEV, msi_remappable_address(1), 0)
    assert isinstance(r, InterruptResult) and r.destination == 7


@pytest.mark.parametrize(
    ("setup", "sid", "addr", "data", "reason"),
    [
        ("none", DEV, msi_remappable_address(9), 0, FaultReason.IR_ENTRY_P),
        ("ok", OTHER, msi_remappable_address(9), 0, FaultReason.IR_SID_ERR),
        ("ok", DEV, msi_remappable_address(300), 0, FaultReason.IR_INDEX_OVER),
        ("ok", DEV, msi_compat_address(0), msi_compat_data(0x30), FaultReason.IR_REQ_COMPAT),
        ("ok", DEV, msi_remappable_address(9), 1 << 16, FaultReason.IR_REQ_RSVD),
        ("rsvd", DEV, msi_remappable_address(9), 0, FaultReason.IR_IRTE_RSVD),
    ],
)
def test_blocked_requests_fault_with_ir_reason(env, setup, sid, addr, data, reason):
    if setup == "ok":
        env.tw.set_irte(env.table, 9, irte())
    elif setup == "rsvd":
        env.tw.set_irte(env.table, 9, irte())
        env.mem.write_u64(
            env.table + 9 * 16 + 8, env.mem.read_u64(env.table + 9 * 16 + 8) | 1 << 40
        )
    f = env.unit.remap_interrupt(sid, addr, data)
    assert isinstance(f, FaultRecord)
    assert f.reason == reason and f.source_id == sid and f.is_interrupt
    lo, hi = env.unit.regs.get("FRCD_REG0_LO"), env.unit.regs.get("FRCD_REG0_HI")
    assert (hi >> R.FRCD_FR_SHIFT) & 0xFF == reason and hi & 0xFFFF == sid
    if reason not in (FaultReason.IR_REQ_COMPAT,):
        assert lo >> 48 == f.interrupt_index


def test_ir_fault_codes_match_the_spec():
    assert [
        r.value
        for r in (
            FaultReason.IR_REQ_RSVD,
            FaultReason.IR_INDEX_OVER,
            FaultReason.IR_ENTRY_P,
            FaultReason.IR_ROOT_INVAL,
            FaultReason.IR_IRTE_RSVD,
            FaultReason.IR_REQ_COMPAT,
            FaultReason.IR_SID_ERR,
            FaultReason.IR_PDA_INV,
        )
    ] == list(range(0x20, 0x28))


def test_compatibility_format_allowed_with_cfis():
    env = make(cfi=True, eime=False)
    assert env.unit.read_reg(R.GSTS_REG) & R.Gsts.CFIS
    r = env.unit.remap_interrupt(OTHER, msi_compat_address(2), msi_compat_data(0x99))
    assert isinstance(r, InterruptResult) and r.vector == 0x99 and not r.remapped
    env_x2 = make(cfi=True, eime=True)  # EIME blocks compatibility format even with CFIS
    f = env_x2.unit.remap_interrupt(OTHER, msi_compat_address(2), msi_compat_data(0x99))
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.IR_REQ_COMPAT


def test_source_validation_variants(env):
    env.tw.set_irte(env.table, 1, irte(sid=0x0418, sq=Sq.IGNORE_3))
    for fn in range(8):
        assert isinstance(
            env.unit.remap_interrupt(0x0418 | fn, msi_remappable_address(1), 0), InterruptResult
        )
    assert isinstance(env.unit.remap_interrupt(0x0420, msi_remappable_address(1), 0), FaultRecord)
    env.tw.set_irte(env.table, 2, Irte(vector=0x50, sid=0x0507, svt=Svt.VERIFY_BUS))
    assert isinstance(
        env.unit.remap_interrupt(0x0600, msi_remappable_address(2), 0), InterruptResult
    )
    assert isinstance(env.unit.remap_interrupt(0x0800, msi_remappable_address(2), 0), FaultRecord)
    env.tw.set_irte(env.table, 3, Irte(vector=0x51, svt=Svt.NO_VERIFY))
    assert isinstance(
        env.unit.remap_interrupt(0xFFFF, msi_remappable_address(3), 0), InterruptResult
    )


def test_interrupt_entry_cache_needs_invalidation(env):
    env.tw.set_irte(env.table, 4, irte(vector=0x41))
    assert env.unit.remap_interrupt(DEV, msi_remappable_address(4), 0).vector == 0x41  # type: ignore[union-attr]
    env.tw.set_irte(env.table, 4, irte(vector=0x77))
    assert env.unit.remap_interrupt(DEV, msi_remappable_address(4), 0).vector == 0x41  # type: ignore[union-attr]
    iec_flush(env, 4)
    assert env.unit.remap_interrupt(DEV, msi_remappable_address(4), 0).vector == 0x77  # type: ignore[union-attr]
    env.mem.write_u64(env.table + 4 * 16, 0)  # cleared in memory: still cached until flushed
    assert isinstance(env.unit.remap_interrupt(DEV, msi_remappable_address(4), 0), InterruptResult)
    iec_flush(env)
    assert isinstance(env.unit.remap_interrupt(DEV, msi_remappable_address(4), 0), FaultRecord)


def test_posted_interrupt_sets_pir_and_on(env):
    pid = env.tw.alloc_page()
    env.mem.write_u64(pid + PID_CONTROL, pid_control(nv=0xF2, ndst=6))
    env.tw.set_irte(env.table, 8, irte(vector=0x45, posted=True, pda=pid))
    r = env.unit.remap_interrupt(DEV, msi_remappable_address(8), 0)
    assert isinstance(r, InterruptResult) and r.posted
    assert (r.vector, r.destination, r.notification_vector) == (0x45, 6, 0xF2)
    assert env.mem.read_u64(pid + 8) == 1 << (0x45 - 64)  # PIR bit 0x45
    assert env.mem.read_u64(pid + PID_CONTROL) & PID_ON
    # ON already set: the vector is posted, no second notification
    env.tw.set_irte(env.table, 9, irte(vector=0xC1, posted=True, pda=pid))
    r = env.unit.remap_interrupt(DEV, msi_remappable_address(9), 0)
    assert isinstance(r, InterruptResult) and r.notification_vector is None
    assert env.mem.read_u64(pid + 24) == 1 << (0xC1 - 192)
    assert env.unit.ir.notifications == 1 and env.unit.ir.posted == 2


@pytest.mark.parametrize(("urgent", "notified"), [(False, False), (True, True)])
def test_suppress_notification_unless_urgent(env, urgent, notified):
    pid = env.tw.alloc_page()
    env.mem.write_u64(pid + PID_CONTROL, pid_control(nv=0xF2, ndst=1, sn=True))
    env.tw.set_irte(env.table, 8, irte(vector=0x30, posted=True, pda=pid, urgent=urgent))
    r = env.unit.remap_interrupt(DEV, msi_remappable_address(8), 0)
    assert isinstance(r, InterruptResult)
    assert (r.notification_vector is not None) == notified
    assert env.mem.read_u64(pid) == 1 << 0x30
    assert bool(env.mem.read_u64(pid + PID_CONTROL) & PID_ON) == notified


def test_posted_descriptor_errors(env):
    env.tw.set_irte(env.table, 8, irte(posted=True, pda=0x1_0000_0000))  # beyond memory
    f = env.unit.remap_interrupt(DEV, msi_remappable_address(8), 0)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.IR_PDA_INV
    pid = env.tw.alloc_page()
    env.mem.write_u64(pid + PID_CONTROL, 1 << 5)  # reserved bit
    env.tw.set_irte(env.table, 9, irte(posted=True, pda=pid))
    f = env.unit.remap_interrupt(DEV, msi_remappable_address(9), 0)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.IR_PID_RSVD
    assert env.mem.read_u64(pid) == 0  # nothing posted


def test_posted_format_reserved_without_cap_pi():
    mem = HostMemory(2 * GIB)
    frames = FrameAllocator(GIB, GIB // 2)
    unit = DmarUnit(mem, posted_interrupts=False)
    tw = TableWriter(mem, frames)
    table, queue = tw.alloc_page(), tw.alloc_page()
    enable_qi(unit, queue)
    enable_ir(unit, table, 256)
    tw.set_irte(table, 1, irte(posted=True, pda=tw.alloc_page()))
    f = unit.remap_interrupt(DEV, msi_remappable_address(1), 0)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.IR_IRTE_RSVD


def test_not_an_interrupt_address(env):
    with pytest.raises(ValueError):
        env.unit.remap_interrupt(DEV, 0xFED0_0000, 0)
