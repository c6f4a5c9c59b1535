"""IOTLB and context cache: LRU, invalidation granularities, register and queued interfaces."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from passthru.hw.frames import FrameAllocator
from passthru.hw.iommu.vtd import regs as R
from passthru.hw.iommu.vtd.entries import (
    PAGE_2M,
    PAGE_4K,
    cc_inv_desc,
    iec_inv_desc,
    iotlb_inv_desc,
    wait_desc,
)
from passthru.hw.iommu.vtd.faults import FaultRecord
from passthru.hw.iommu.vtd.iotlb import ContextCache, Iotlb, Translation
from passthru.hw.iommu.vtd.tables import TableWriter, enable_dma_remapping, enable_qi
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory

GIB = 1 << 30


def tr(iova: int, size: int = PAGE_4K, did: int = 1) -> Translation:
    return Translation(0x100_0000 + iova, size, True, True, did, iova)


# ---------------------------------------------------------------------- IOTLB as a data structure
def test_lru_replacement():
    tlb = Iotlb(capacity=3)
    for i in range(3):
        tlb.insert(1, 1, tr(i * PAGE_4K))
    assert tlb.lookup(1, 0) is not None  # page 0 becomes most recently used
    tlb.insert(1, 1, tr(3 * PAGE_4K))  # evicts page 1, the least recently used
    assert tlb.lookup(1, PAGE_4K) is None
    assert tlb.lookup(1, 0) is not None and tlb.lookup(1, 2 * PAGE_4K) is not None
    assert tlb.evictions == 1 and len(tlb) == 3


def test_entries_are_tagged_by_domain_and_size():
    tlb = Iotlb()
    tlb.insert(1, 1, tr(0x1000, did=1))
    tlb.insert(1, 2, tr(0x20_0000, PAGE_2M, did=1))
    assert tlb.lookup(2, 0x1000) is None
    assert tlb.lookup(1, 0x3F_FFFF).page_size == PAGE_2M  # type: ignore[union-attr]


def test_invalidation_granularities():
    tlb = Iotlb()
    for did in (1, 2):
        for i in range(8):
            tlb.insert(did, 1, tr(i * PAGE_4K, did=did))
    tlb.insert(1, 2, tr(0x20_0000, PAGE_2M))
    assert tlb.invalidate_pages(1, 0x2000, 1) == 2  # pages 2 and 3 of domain 1
    assert tlb.lookup(1, 0x2000) is None and tlb.lookup(2, 0x2000) is not None
    assert tlb.invalidate_pages(1, 0x6000, 2) == 4  # AM=2 ignores the low 2 bits: 4..7
    assert tlb.lookup(1, 0x4000) is None and tlb.lookup(1, 0x1000) is not None
    assert tlb.invalidate_pages(1, 0x3F_F000, 0) == 1  # a 4 KiB PSI inside the 2 MiB entry
    assert tlb.large_entries == 0
    assert tlb.invalidate_domain(2) == 8 and tlb.lookup(2, 0) is None
    assert tlb.invalidate_all() == 2 and len(tlb) == 0


def test_psi_with_large_mask_scans():
    tlb = Iotlb()
    tlb.insert(1, 1, tr(0x1234_5000))
    tlb.insert(1, 1, tr(0x8000_0000))
    assert tlb.invalidate_pages(1, 0x1000_0000, 18) == 1  # 1 GiB range


def test_context_cache_device_function_mask():
    from passthru.hw.iommu.vtd.entries import ContextEntry
    from passthru.hw.iommu.vtd.iotlb import CachedContext

    cc = ContextCache(capacity=16)
    for fn in range(8):
        sid = 0x0300 | fn
        cc.insert(CachedContext(sid, ContextEntry.make(did=fn, aw=2), 4, 48))
    assert cc.invalidate_device(0x0302, fm=0) == 1
    assert cc.invalidate_device(0x0300, fm=1) == 2  # 0x300 and 0x304: bit 2 masked
    assert cc.invalidate_device(0x0300, fm=3) == 5
    assert len(cc) == 0


# ---------------------------------------------------------------------- through the unit
@pytest.fixture
def env() -> SimpleNamespace:
    mem = HostMemory(4 * GIB)
    frames = FrameAllocator(GIB, GIB)
    unit = DmarUnit(mem)
    tw = TableWriter(mem, frames)
    enable_dma_remapping(unit, tw.root)
    pgd = tw.alloc_page()
    tw.set_context(0x0100, did=7, slptptr=pgd)
    tw.set_context(0x0200, did=8, slptptr=pgd)
    for i in range(4):
        tw.map(pgd, 4, i * PAGE_4K, 0x10_0000 + i * PAGE_4K)
    return SimpleNamespace(mem=mem, unit=unit, tw=tw, pgd=pgd)


def warm(env) -> None:
    for sid in (0x0100, 0x0200):
        for i in range(4):
            assert isinstance(env.unit.translate(sid, i * PAGE_4K), Translation)


def test_register_iotlb_invalidation_domain(env):
    warm(env)
    env.unit.write_reg(
        R.IOTLB_REG, R.IOTLB_IVT | (2 << R.IOTLB_IIRG_SHIFT) | (7 << R.IOTLB_DID_SHIFT), 8
    )
    val = env.unit.read_reg(R.IOTLB_REG, 8)
    assert not val & R.IOTLB_IVT and (val >> R.IOTLB_IAIG_SHIFT) & 3 == 2
    assert len(env.unit.iotlb) == 4  # domain 8's entries stay


def test_register_psi_beyond_mamv_is_refused(env):
    warm(env)
    env.unit.write_reg(R.IVA_REG, 40, 8)  # AM=40 > MAMV=18
    env.unit.write_reg(
        R.IOTLB_REG, R.IOTLB_IVT | (3 << R.IOTLB_IIRG_SHIFT) | (7 << R.IOTLB_DID_SHIFT), 8
    )
    assert (env.unit.read_reg(R.IOTLB_REG, 8) >> R.IOTLB_IAIG_SHIFT) & 3 == 0
    assert len(env.unit.iotlb) == 8


def test_register_context_invalidation_by_device(env):
    warm(env)
    env.tw.set_context(0x0100, did=7, present=False)
    assert isinstance(env.unit.translate(0x0100, 0x1000), Translation)  # IOTLB hit
    env.unit.write_reg(
        R.CCMD_REG, R.CCMD_ICC | (3 << R.CCMD_CIRG_SHIFT) | (0x0100 << R.CCMD_SID_SHIFT) | 7, 8
    )
    val = env.unit.read_reg(R.CCMD_REG, 8)
    assert not val & R.CCMD_ICC and (val >> R.CCMD_CAIG_SHIFT) & 3 == 3
    f = env.unit.translate(0x0100, 0x1000)
    assert isinstance(f, FaultRecord) and f.reason == 0x2
    assert isinstance(env.unit.translate(0x0200, 0x1000), Translation)


def submit(env, descs, queue) -> None:
    tail = (env.unit.read_reg(R.IQT_REG, 8) >> 4) & 0x7FFF
    for lo, hi in descs:
        env.mem.write_u64(queue + tail * 16, lo)
        env.mem.write_u64(queue + tail * 16 + 8, hi)
        tail = (tail + 1) % 256
    env.unit.write_reg(R.IQT_REG, tail << 4, 8)


def test_queued_invalidation_with_wait_status(env):
    warm(env)
    queue, status = env.tw.alloc_page(), env.tw.alloc_page()
    enable_qi(env.unit, queue)
    assert env.unit.read_reg(R.GSTS_REG) & R.Gsts.QIES
    submit(
        env,
        [
            iotlb_inv_desc(3, did=7, addr=0x2000, am=1),
            wait_desc(status + 8, 0xC0FFEE, interrupt=True),
        ],
        queue,
    )
    assert env.mem.read_u32(status + 8) == 0xC0FFEE
    assert env.unit.read_reg(R.IQH_REG, 8) == env.unit.read_reg(R.IQT_REG, 8) == 2 << 4
    assert env.unit.read_reg(R.ICS_REG) & R.ICS_IWC
    assert env.unit.iotlb.lookup(7, 0x2000) is None and env.unit.iotlb.lookup(7, 0x3000) is None
    assert env.unit.iotlb.lookup(7, 0x1000) is not None
    submit(env, [cc_inv_desc(1), iotlb_inv_desc(1), wait_desc(status, 1)], queue)
    assert len(env.unit.iotlb) == 0 and len(env.unit.context_cache) == 0
    assert env.mem.read_u32(status) == 1
    # register-based invalidation is ignored while QI is on
    warm(env)
    env.unit.write_reg(R.IOTLB_REG, R.IOTLB_IVT | (1 << R.IOTLB_IIRG_SHIFT), 8)
    assert len(env.unit.iotlb) == 8 and env.unit.ignored_register_invalidations == 1


def test_invalid_descriptor_stops_the_queue(env):
    queue, status = env.tw.alloc_page(), env.tw.alloc_page()
    enable_qi(env.unit, queue)
    submit(env, [wait_desc(status, 1), (0x3, 0), wait_desc(status, 2)], queue)  # type 3: no DT
    assert env.unit.read_reg(R.FSTS_REG) & R.Fsts.IQE
    assert env.unit.read_reg(R.IQH_REG, 8) == 1 << 4  # on the bad descriptor
    assert env.mem.read_u32(status) == 1
    submit(env, [], queue)  # nothing runs while IQE is set
    assert env.mem.read_u32(status) == 1
    env.mem.write_u64(queue + 16, iec_inv_desc()[0])  # software fixes it, clears IQE
    env.unit.write_reg(R.FSTS_REG, R.Fsts.IQE)
    submit(env, [], queue)
    assert env.mem.read_u32(status) == 2


def test_reserved_bits_in_descriptor_are_an_error(env):
    queue = env.tw.alloc_page()
    enable_qi(env.unit, queue)
    lo, hi = iotlb_inv_desc(1)
    submit(env, [(lo | (1 << 40), hi)], queue)
    assert env.unit.read_reg(R.FSTS_REG) & R.Fsts.IQE


def test_disabling_qi_resets_head(env):
    queue, status = env.tw.alloc_page(), env.tw.alloc_page()
    enable_qi(env.unit, queue)
    submit(env, [wait_desc(status, 1)], queue)
    env.unit.write_reg(R.GCMD_REG, R.Gcmd.TE)  # QIE now clear
    assert not env.unit.read_reg(R.GSTS_REG) & R.Gsts.QIES
    assert env.unit.read_reg(R.IQH_REG, 8) == 0
