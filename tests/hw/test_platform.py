"""The whole DMA path: fabric, VT-d unit programmed by the host driver, host memory."""

from __future__ import annotations

from pci_builders import switch_host

from passthru.hv.iommu_driver import IommuDriver
from passthru.hw.frames import FrameAllocator
from passthru.hw.iommu.vtd.entries import msi_remappable_address
from passthru.hw.iommu.vtd.faults import FaultReason
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory
from passthru.hw.pci.device import AcsSpec
from passthru.hw.pci.regs import AcsFlags
from passthru.hw.platform import DmaStatus, Platform

GiB = 1 << 30
MiB = 1 << 20
NO_ACS = AcsSpec(cap=AcsFlags(0x7F), ctl=AcsFlags(0))
RR = AcsSpec(cap=AcsFlags(0x7F), ctl=AcsFlags.RR | AcsFlags.UF | AcsFlags.SV | AcsFlags.CR)


def host(port_acs=RR, *, strict=True, iommu=True, ir=True):
    topo = switch_host([port_acs, port_acs])
    mem = HostMemory(4 * GiB)
    if not iommu:
        return Platform(topo, mem), None, topo
    unit = DmarUnit(mem)
    frames = FrameAllocator(3 * GiB, 256 * MiB)  # the driver's tables live up there
    drv = IommuDriver(mem, frames, unit, strict=strict, interrupt_remapping=ir)
    return Platform(topo, mem, unit), drv, topo


def test_device_writes_into_its_mapped_buffer_and_bytes_arrive():
    plat, drv, topo = host()
    dev = topo.find("03:00.0")
    dom = drv.alloc_domain()
    drv.attach(dom, dev.rid)
    drv.map(dom, 0x10_0000, 0x4000_0000, 0x2000)  # IOVA 1 MiB -> HPA 1 GiB
    payload = bytes(range(256)) * 24
    res = plat.dma_write(dev, 0x10_0800, payload)
    assert res.status is DmaStatus.MEMORY
    assert plat.memory.read(0x4000_0800, len(payload)) == payload  # crosses a 4 KiB page
    assert plat.dma_read(dev, 0x10_0800, 16).data == payload[:16]


def test_unmapped_iova_faults_with_reason_and_source_id_and_changes_nothing():
    plat, drv, topo = host()
    dev = topo.find("03:00.0")
    dom = drv.alloc_domain()
    drv.attach(dom, dev.rid)
    before = plat.memory.digest()
    res = plat.dma_write(dev, 0x2000_0000, b"\xaa" * 64)
    assert res.status is DmaStatus.FAULT
    assert res.fault.source_id == dev.rid and res.fault.address == 0x2000_0000
    assert res.fault.reason in (FaultReason.WRITE, FaultReason.PAGING_ENTRY_INV)
    assert plat.memory.digest() == before


def test_write_to_read_only_mapping_is_write_denied():
    plat, drv, topo = host()
    dev = topo.find("03:00.0")
    dom = drv.alloc_domain()
    drv.attach(dom, dev.rid)
    drv.map(dom, 0x10_0000, 0x4000_0000, 0x1000, write=False)
    res = plat.dma_write(dev, 0x10_0000, b"x")
    assert res.status is DmaStatus.FAULT and res.fault.reason is FaultReason.WRITE
    assert plat.dma_read(dev, 0x10_0000, 1).status is DmaStatus.MEMORY


def test_unattached_bus_faults_root_entry_not_present():
    plat, drv, topo = host()
    res = plat.dma_read(topo.find("04:00.0"), 0x5000, 8)
    assert res.status is DmaStatus.FAULT and res.fault.reason is FaultReason.ROOT_ENTRY_P
    assert res.fault.address == 0x5000 and res.fault.source_id == topo.find("04:00.0").rid


def test_identity_domain_exposes_host_memory_a_translated_domain_hides():
    plat, drv, topo = host()
    a, b = topo.find("03:00.0"), topo.find("04:00.0")
    secret = b"host kernel secret"
    plat.memory.write(0x0100_0000, secret)
    drv.attach(drv.alloc_domain("identity"), a.rid)
    drv.attach(drv.alloc_domain(), b.rid)
    assert plat.dma_read(a, 0x0100_0000, len(secret)).data == secret
    assert plat.dma_read(b, 0x0100_0000, len(secret)).status is DmaStatus.FAULT


def _stale_window(strict: bool):
    plat, drv, topo = host(strict=strict)
    dev = topo.find("03:00.0")
    dom = drv.alloc_domain()
    drv.attach(dom, dev.rid)
    drv.map(dom, 0x10_0000, 0x4000_0000, 0x1000)
    assert plat.dma_write(dev, 0x10_0000, b"warm").ok  # fills the IOTLB
    drv.unmap(dom, 0x10_0000, 0x1000)
    return plat, drv, dev


def test_lazy_unmap_leaves_a_stale_iotlb_entry_until_the_flush():
    plat, drv, dev = _stale_window(strict=False)
    late = plat.dma_write(dev, 0x10_0000, b"after unmap")
    assert late.status is DmaStatus.MEMORY
    assert plat.memory.read(0x4000_0000, 11) == b"after unmap"
    drv.flush()
    assert plat.dma_write(dev, 0x10_0000, b"again").status is DmaStatus.FAULT


def test_strict_unmap_closes_the_window_at_once():
    plat, drv, dev = _stale_window(strict=True)
    assert plat.dma_write(dev, 0x10_0000, b"after unmap").status is DmaStatus.FAULT
    assert plat.memory.read(0x4000_0000, 4) == b"warm"


def test_p2p_write_bypasses_the_iommu_without_acs_and_faults_with_rr():
    plat, drv, topo = host(port_acs=NO_ACS)
    a, b = topo.find("03:00.0"), topo.find("04:00.0")
    got = []
    plat.attach_mmio(b, write=lambda bar, off, data: got.append((bar.index, off, data)))
    drv.attach(drv.alloc_domain(), a.rid)  # an empty domain: every DMA to memory faults
    res = plat.dma_write(a, b.bars[0].address + 0x40, b"doorbell")
    assert res.status is DmaStatus.PEER and got == [(0, 0x40, b"doorbell")]

    plat2, drv2, topo2 = host(port_acs=RR)
    a2, b2 = topo2.find("03:00.0"), topo2.find("04:00.0")
    got2 = []
    plat2.attach_mmio(b2, write=lambda bar, off, data: got2.append(data))
    drv2.attach(drv2.alloc_domain(), a2.rid)
    res2 = plat2.dma_write(a2, b2.bars[0].address + 0x40, b"doorbell")
    assert res2.status is DmaStatus.FAULT and res2.route.redirected and got2 == []
    assert res2.fault.source_id == a2.rid


def test_forged_msi_is_blocked_with_interrupt_remapping_and_delivered_without():
    plat, drv, topo = host(ir=True)
    dev, victim = topo.find("03:00.0"), topo.find("04:00.0")
    handle = drv.alloc_irte(victim.rid, vector=0x41, dest=2)
    addr, data = drv.msi_message(handle)
    ok = plat.dma_write(victim, addr, data.to_bytes(4, "little"))
    assert ok.status is DmaStatus.INTERRUPT and ok.interrupt.vector == 0x41
    forged = plat.dma_write(dev, addr, data.to_bytes(4, "little"))  # wrong source id
    assert forged.status is DmaStatus.FAULT and forged.fault.reason is FaultReason.IR_SID_ERR
    compat = plat.dma_write(dev, 0xFEE0_0000, (0x80).to_bytes(4, "little"))
    assert compat.status is DmaStatus.FAULT and compat.fault.reason is FaultReason.IR_REQ_COMPAT
    assert msi_remappable_address(handle) == addr

    open_plat, _, open_topo = host(iommu=False)
    hit = open_plat.dma_write(open_topo.find("03:00.0"), 0xFEE0_3000, (0xEC).to_bytes(4, "little"))
    assert hit.status is DmaStatus.INTERRUPT and hit.interrupt.vector == 0xEC
    assert hit.interrupt.destination == 3 and not hit.interrupt.remapped


def _run(seed: int) -> str:
    import random

    plat, drv, topo = host(strict=False)
    rng = random.Random(seed)
    dev = topo.find("03:00.0")
    dom = drv.alloc_domain()
    drv.attach(dom, dev.rid)
    drv.map(dom, 0, 0x4000_0000, 16 * MiB)
    for _ in range(200):
        off = rng.randrange(0, 16 * MiB - 512)
        plat.dma_write(dev, off, rng.randbytes(rng.randrange(1, 512)))
    return plat.memory.digest()


def test_two_runs_with_one_seed_give_identical_bytes():
    assert _run(7) == _run(7)
    assert _run(7) != _run(8)
