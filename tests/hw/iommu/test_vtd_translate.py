"""DMA remapping: legacy-mode walks, leaves, widths, faults (VT-d spec ch. 3, 7)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from passthru.hw.frames import FrameAllocator
from passthru.hw.iommu.vtd import regs as R
from passthru.hw.iommu.vtd.entries import (
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    AddressWidth,
    TranslationType,
    iotlb_inv_desc,
)
from passthru.hw.iommu.vtd.faults import FaultReason, FaultRecord
from passthru.hw.iommu.vtd.iotlb import Translation
from passthru.hw.iommu.vtd.tables import TableWriter, enable_dma_remapping
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory

SID = 0x0310  # 03:02.0
GIB = 1 << 30


def make_env(**unit_kw: object) -> SimpleNamespace:
    mem = HostMemory(8 * GIB)
    frames = FrameAllocator(GIB, GIB)
    unit = DmarUnit(mem, **unit_kw)  # type: ignore[arg-type]
    tw = TableWriter(mem, frames)
    enable_dma_remapping(unit, tw.root)
    return SimpleNamespace(mem=mem, frames=frames, unit=unit, tw=tw)


@pytest.fixture
def env() -> SimpleNamespace:
    return make_env()


def domain(env: SimpleNamespace, sid: int = SID, did: int = 5, aw: int = AddressWidth.AGAW_48):
    pgd = env.tw.alloc_page()
    env.tw.set_context(sid, did=did, slptptr=pgd, aw=aw)
    return pgd, AddressWidth(aw).levels


def flush_iotlb(unit: DmarUnit) -> None:
    unit.write_reg(R.IOTLB_REG, R.IOTLB_IVT | (1 << R.IOTLB_IIRG_SHIFT), 8)


def flush_context(unit: DmarUnit) -> None:
    unit.write_reg(R.CCMD_REG, R.CCMD_ICC | (1 << R.CCMD_CIRG_SHIFT), 8)


# ---------------------------------------------------------------------- successful walks
@pytest.mark.parametrize("aw", [AddressWidth.AGAW_39, AddressWidth.AGAW_48])
@pytest.mark.parametrize(
    ("page", "iova", "hpa"),
    [
        (PAGE_4K, 0x7_6543_2000, 0x1_2345_6000),
        (PAGE_2M, 0x40_0000, 0x1_4000_0000),
        (PAGE_1G, 0x40_0000_0000, 0x1_0000_0000),
    ],
)
def test_leaf_sizes_and_levels(env, aw, page, iova, hpa):
    if aw == AddressWidth.AGAW_39:
        iova &= (1 << 39) - 1
    pgd, levels = domain(env, aw=aw)
    env.tw.map(pgd, levels, iova, hpa, page)
    off = page - 8
    t = env.unit.translate(SID, iova + off, True)
    assert isinstance(t, Translation)
    assert t.page_size == page
    assert t.hpa == hpa and t.iova == iova
    assert t.address(iova + off) == hpa + off
    assert t.domain_id == 5 and t.readable and t.writable


def test_walk_reads_only_the_levels_it_needs(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x20_0000, 0x1_0020_0000, PAGE_2M)
    env.unit.translate(SID, 0x20_1000)
    assert env.unit.dma.walk_reads == 3  # PML4E, PDPE, PDE (leaf)


def test_hit_returns_the_cached_object_and_reads_nothing(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x1000, 0x5000)
    first = env.unit.translate(SID, 0x1010)
    reads = env.unit.dma.walk_reads
    assert env.unit.translate(SID, 0x1FF8) is first
    assert env.unit.dma.walk_reads == reads


def test_permissions_accumulate_over_levels(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x1000, 0x5000)
    pml4e = env.tw.pte_addr(pgd, levels, 0x1000, 4)
    env.mem.write_u64(pml4e, env.mem.read_u64(pml4e) & ~2)  # W clear at the top
    t = env.unit.translate(SID, 0x1000, False)
    assert isinstance(t, Translation) and t.readable and not t.writable
    f = env.unit.translate(SID, 0x1000, True)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.WRITE


def test_pass_through_context_is_identity(env):
    env.tw.set_context(SID, did=9, tt=TranslationType.PASS_THROUGH)
    t = env.unit.translate(SID, 0x1234_5678, True)
    assert isinstance(t, Translation)
    assert t.address(0x1234_5678) == 0x1234_5678 and t.domain_id == 9


def test_pass_through_needs_ecap_pt():
    env = make_env(pass_through=False)
    env.tw.set_context(SID, did=9, tt=TranslationType.PASS_THROUGH)
    f = env.unit.translate(SID, 0x1000)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.CONTEXT_ENTRY_INV


def test_translation_disabled_passes_requests_through():
    mem = HostMemory(GIB)
    unit = DmarUnit(mem)
    t = unit.translate(SID, 0xABC_DEF0, True)
    assert isinstance(t, Translation) and t.address(0xABC_DEF0) == 0xABC_DEF0
    assert t.domain_id is None


# ---------------------------------------------------------------------- faults
def test_unmapped_iova_faults_with_read_or_write_reason(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x1000, 0x5000)
    for is_write, reason in ((False, FaultReason.READ), (True, FaultReason.WRITE)):
        f = env.unit.translate(SID, 0x9_8765_4321, is_write)
        assert isinstance(f, FaultRecord)
        assert f.reason == reason  # R=W=0 is "not present": QEMU vtd_iova_to_slpte, 0x6/0x5
        assert f.source_id == SID and f.address == 0x9_8765_4321 and f.is_write == is_write


def test_write_to_read_only_page_faults_write(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x3000, 0x7000, write=False)
    assert isinstance(env.unit.translate(SID, 0x3000, False), Translation)
    f = env.unit.translate(SID, 0x3008, True)  # IOTLB hit, permission denied
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.WRITE == 0x5
    env.unit.iotlb.invalidate_all()
    f = env.unit.translate(SID, 0x3008, True)  # and from a walk
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.WRITE


def test_write_only_page_denies_reads(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x3000, 0x7000, read=False)
    f = env.unit.translate(SID, 0x3000, False)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.READ == 0x6
    assert isinstance(env.unit.translate(SID, 0x3000, True), Translation)


def test_root_entry_not_present(env):
    f = env.unit.translate(0x4200, 0x1000, True)
    assert isinstance(f, FaultRecord)
    assert f.reason == FaultReason.ROOT_ENTRY_P == 0x1 and f.source_id == 0x4200
    assert f.address == 0x1000 and f.is_write


def test_context_entry_not_present(env):
    domain(env, sid=SID)
    f = env.unit.translate(SID + 1, 0x1008, True)  # same bus, other function
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.CONTEXT_ENTRY_P == 0x2
    assert (f.source_id, f.address, f.is_write) == (SID + 1, 0x1008, True)


def test_address_beyond_mgaw_for_three_level_domain(env):
    pgd, levels = domain(env, aw=AddressWidth.AGAW_39)
    env.tw.map(pgd, levels, 0x1000, 0x5000)
    f = env.unit.translate(SID, 1 << 39, False)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.ADDR_BEYOND_MGAW == 0x4
    assert f.address == 1 << 39


def test_address_beyond_mgaw_four_level(env):
    domain(env)
    f = env.unit.translate(SID, 1 << 48, True)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.ADDR_BEYOND_MGAW


@pytest.mark.parametrize(
    ("bits", "level"),
    [(1 << 11, 1), (1 << 50, 1), (1 << 62, 1), (1 << 7, 4), (1 << 12, 2)],
)
def test_reserved_bits_in_paging_entry(env, bits, level):
    pgd, levels = domain(env)
    if level == 2:  # a 2 MiB leaf with an address bit inside the page set
        slot = env.tw.map(pgd, levels, 0x20_0000, 0x1_0020_0000, PAGE_2M)
    else:
        env.tw.map(pgd, levels, 0x20_0000, 0x5000)
        slot = env.tw.pte_addr(pgd, levels, 0x20_0000, level)
    env.mem.write_u64(slot, env.mem.read_u64(slot) | bits)
    f = env.unit.translate(SID, 0x20_0000)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.PAGING_ENTRY_RSVD == 0xC


def test_large_page_without_sllps_is_reserved():
    env = make_env(large_pages=())
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x20_0000, 0x1_0020_0000, PAGE_2M)
    f = env.unit.translate(SID, 0x20_0000)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.PAGING_ENTRY_RSVD


def test_root_entry_reserved_bits(env):
    domain(env)
    env.mem.write_u64(env.tw.root + (SID >> 8) * 16 + 8, 1)  # upper quadword is reserved
    f = env.unit.translate(SID, 0)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.ROOT_ENTRY_RSVD == 0xA


def test_context_entry_reserved_bits(env):
    domain(env)
    addr = env.tw.context_addr(SID)
    env.mem.write_u64(addr + 8, env.mem.read_u64(addr + 8) | (1 << 40))
    f = env.unit.translate(SID, 0)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.CONTEXT_ENTRY_RSVD == 0xB


@pytest.mark.parametrize("tt", [TranslationType.DEV_IOTLB, TranslationType.RESERVED])
def test_invalid_translation_type(env, tt):
    env.tw.set_context(SID, did=1, slptptr=env.tw.alloc_page(), tt=tt)
    f = env.unit.translate(SID, 0)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.CONTEXT_ENTRY_INV == 0x3


def test_unsupported_address_width(env):
    env.tw.set_context(SID, did=1, slptptr=env.tw.alloc_page(), aw=AddressWidth.AGAW_57)
    f = env.unit.translate(SID, 0)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.CONTEXT_ENTRY_INV


def test_translated_request_blocked_by_tt(env):
    domain(env)
    f = env.unit.translated_request(SID, 0x1000, True)
    assert f.reason == FaultReason.CONTEXT_ENTRY_TT == 0xD


def test_paging_entry_access_error(env):
    pgd, levels = domain(env)
    env.mem.write_u64(pgd, (1 << 40) | 3)  # next table beyond host memory
    f = env.unit.translate(SID, 0x1000)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.PAGING_ENTRY_INV == 0x7


def test_root_table_access_error():
    mem = HostMemory(GIB)
    unit = DmarUnit(mem)
    enable_dma_remapping(unit, 2 * GIB)  # RTADDR beyond host memory
    f = unit.translate(SID, 0)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.ROOT_TABLE_INV == 0x8


def test_output_in_interrupt_range_is_blocked(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x1000, 0xFEE0_0000)
    f = env.unit.translate(SID, 0x1000, True)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.INTERRUPT_ADDR == 0xE
    env.tw.map(pgd, levels, 0xC000_0000, 0xC000_0000, PAGE_1G)  # covers the window
    t = env.unit.translate(SID, 0xC000_0000, True)
    assert isinstance(t, Translation)
    f = env.unit.translate(SID, 0xFEE0_1000, True)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.INTERRUPT_ADDR


def test_faults_never_raise_and_are_not_cached(env):
    pgd, levels = domain(env)
    assert isinstance(env.unit.translate(SID, 0x1000), FaultRecord)
    env.tw.map(pgd, levels, 0x1000, 0x5000)  # non-present entries are not cached: no flush
    assert isinstance(env.unit.translate(SID, 0x1000), Translation)


# ---------------------------------------------------------------------- memory edits and caches
def test_table_edit_seen_after_invalidation_not_before(env):
    pgd, levels = domain(env)
    slot = env.tw.map(pgd, levels, 0x1000, 0x5000)
    assert env.unit.translate(SID, 0x1000).hpa == 0x5000  # type: ignore[union-attr]
    env.mem.write_u64(slot, 0x9000 | 3)  # remap in memory, no invalidation
    assert env.unit.translate(SID, 0x1000).hpa == 0x5000  # type: ignore[union-attr]
    env.unit.write_reg(R.IVA_REG, 0x1000, 8)
    env.unit.write_reg(
        R.IOTLB_REG, R.IOTLB_IVT | (3 << R.IOTLB_IIRG_SHIFT) | (5 << R.IOTLB_DID_SHIFT), 8
    )
    iaig = (env.unit.read_reg(R.IOTLB_REG, 8) >> R.IOTLB_IAIG_SHIFT) & 3
    assert iaig == 3  # page-selective done
    assert env.unit.translate(SID, 0x1000).hpa == 0x9000  # type: ignore[union-attr]


def test_uncached_table_edit_is_seen_at_once(env):
    pgd, levels = domain(env)
    slot = env.tw.map(pgd, levels, 0x1000, 0x5000)
    env.mem.write_u64(slot, 0x9000 | 3)
    assert env.unit.translate(SID, 0x1000).hpa == 0x9000  # type: ignore[union-attr]


def test_stale_iotlb_entry_after_unmap_in_memory(env):
    pgd, levels = domain(env)
    slot = env.tw.map(pgd, levels, 0x1000, 0x5000)
    env.unit.translate(SID, 0x1000, True)
    env.mem.write_u64(slot, 0)  # unmapped in memory only
    assert isinstance(env.unit.translate(SID, 0x1000, True), Translation)  # as on hardware
    flush_iotlb(env.unit)
    assert isinstance(env.unit.translate(SID, 0x1000, True), FaultRecord)


def test_context_cache_needs_invalidation(env):
    pgd, levels = domain(env, did=5)
    env.tw.map(pgd, levels, 0x1000, 0x5000)
    env.unit.translate(SID, 0x1000)
    pgd2 = env.tw.alloc_page()
    env.tw.map(pgd2, 4, 0x1000, 0x8000)
    env.tw.set_context(SID, did=6, slptptr=pgd2)
    assert env.unit.translate(SID, 0x1000).hpa == 0x5000  # type: ignore[union-attr]
    flush_context(env.unit)  # the cached context entry goes; the old IOTLB entry is did 5
    assert env.unit.translate(SID, 0x1000).hpa == 0x8000  # type: ignore[union-attr]


def test_queued_page_invalidation_removes_2m_entry(env):
    from passthru.hw.iommu.vtd.tables import enable_qi

    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x20_0000, 0x1_0020_0000, PAGE_2M)
    env.unit.translate(SID, 0x20_0000)
    queue = env.tw.alloc_page()
    enable_qi(env.unit, queue)
    lo, hi = iotlb_inv_desc(3, did=5, addr=0x2F_F000, am=0)  # one 4 KiB page inside the 2 MiB
    env.mem.write_u64(queue, lo)
    env.mem.write_u64(queue + 8, hi)
    env.unit.write_reg(R.IQT_REG, 1 << 4, 8)
    assert len(env.unit.iotlb) == 0


def test_dma_read_write_helpers_touch_nothing_on_fault(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x1000, 0x5000)
    env.tw.map(pgd, levels, 0x2000, 0x9000, write=False)
    f = env.unit.dma_write(SID, 0x1FF0, b"\xaa" * 32)  # second page is read-only
    assert isinstance(f, FaultRecord) and f.address == 0x2000 and f.reason == FaultReason.WRITE
    assert env.mem.read(0x5FF0, 16) == bytes(16)  # nothing written
    assert env.unit.dma_write(SID, 0x1FF0, b"\x11" * 16) is None
    assert env.mem.read(0x5FF0, 16) == b"\x11" * 16
    env.mem.write(0x9000, b"\x22" * 16)
    assert env.unit.dma_read(SID, 0x1FF0, 32) == b"\x11" * 16 + b"\x22" * 16
    with pytest.raises(ValueError, match="MSI window"):
        env.unit.dma_write(SID, 0xFEE0_0000, b"\0" * 4)


def test_read_of_the_interrupt_range_is_a_recorded_read_fault(env):
    # Spec 3.14: the MSI window is not memory. Even an identity mapping over it does not
    # make it readable: the read is blocked with a read fault, as QEMU reports it.
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0xFEE0_0000, 0xFEE0_0000)
    before = env.unit.stats()["faults_recorded"]
    f = env.unit.dma_read(SID, 0xFEDF_FFF8, 16)  # straddles into the window
    assert isinstance(f, FaultRecord)
    assert (f.reason, f.source_id, f.address, f.is_write) == (
        FaultReason.READ, SID, 0xFEDF_FFF8, False)
    assert env.unit.stats()["faults_recorded"] == before + 1
    # A write that runs from below into the window is blocked whole: no byte lands.
    env.tw.map(pgd, levels, 0xFEDF_F000, 0x7000)
    f = env.unit.dma_write(SID, 0xFEDF_FFF0, b"\x55" * 32)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.WRITE and f.is_write
    assert env.mem.read(0x7FF0, 16) == bytes(16)


def test_reset_returns_to_power_on_state(env):
    pgd, levels = domain(env)
    env.tw.map(pgd, levels, 0x1000, 0x5000)
    env.unit.translate(SID, 0x1000)
    env.unit.translate(SID, 0x9000)  # a fault
    env.unit.reset()
    assert env.unit.reg("GSTS_REG") == 0 and env.unit.reg("FSTS_REG") == 0
    assert len(env.unit.iotlb) == 0 and len(env.unit.context_cache) == 0
    assert env.unit.faults.pending() == []
    assert env.unit.translate(SID, 0x1000).domain_id is None  # type: ignore[union-attr]


def test_save_restore_round_trip(env):
    pgd, levels = domain(env)
    slot = env.tw.map(pgd, levels, 0x1000, 0x5000)
    env.tw.map(pgd, levels, 0x20_0000, 0x1_0020_0000, PAGE_2M)
    env.unit.translate(SID, 0x1000)
    env.unit.translate(SID, 0x20_0000)
    env.unit.translate(SID, 0x9000)  # a fault in FRCD 0
    state = env.unit.save_state()
    env.mem.write_u64(slot, 0)  # only the cached entry keeps 0x1000 alive
    twin = DmarUnit(env.mem)
    twin.load_state(state)
    assert twin.save_state() == state
    for unit in (env.unit, twin):
        assert unit.translate(SID, 0x1000).hpa == 0x5000  # type: ignore[union-attr]
        assert unit.translate(SID, 0x20_1000).page_size == PAGE_2M  # type: ignore[union-attr]
        assert unit.faults.pending() == [0]
        unit.translate(SID, 0xA000)
        assert unit.faults.pending() == [0, 1]  # both continue at the same FRCD index
    with pytest.raises(ValueError, match="registers"):
        DmarUnit(env.mem, nfr=1).load_state(state)
