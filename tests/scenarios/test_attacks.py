"""The attack catalog on the simulator: each attack blocked with evidence, or succeeding for
real; the DMA-engine device model (reset, save/restore); determinism; the static cross-check."""

from __future__ import annotations

import pytest

from passthru.errors import ConfigError
from passthru.hw.iommu.vtd.faults import FaultReason
from passthru.hw.platform import DmaStatus
from passthru.scenarios.attacks import CATALOG, attack, run_catalog
from passthru.scenarios.attacks.catalog import (
    FULL_ACS,
    HOST_KERNEL_HPA,
    SECRET,
    HostDmaDriver,
    Job,
    device_dma,
    dma_into_host_memory,
    msi_injection,
    new_host,
    p2p_bar_write,
    requester_id_spoofing,
    stale_iotlb_dma,
    switch_topology,
    unviable_group_assignment,
)
from passthru.scenarios.attacks.device import (
    BUFFER_OFFSET,
    CTRL,
    DMA_ADDR,
    DMA_COUNT,
    DMA_LEN,
    DOORBELL,
    ID_REG,
    MSI_ADDR,
    MSI_DATA,
    STATUS,
    Ctrl,
    DmaEngine,
    Status,
)

A_RID = 0x0300  # 03:00.0, the attacker below the switch


# ---------------------------------------------------------------------- the device model
def _engine(**kw):
    host = new_host(switch_topology(FULL_ACS), **kw)
    dev = DmaEngine(host, host.topology.find("03:00.0"))
    return host, dev, HostDmaDriver(host, dev)


def test_engine_moves_bytes_both_ways_and_raises_its_msi():
    host, dev, drv = _engine(seed=1)
    page = host.frames.alloc(4096)
    iova = drv.map(page)
    res = device_dma(dev, Job(iova + 8, b"0123456789abcdef"))
    assert res.status is DmaStatus.MEMORY
    assert host.memory.read(page + 8, 16) == b"0123456789abcdef"
    host.memory.write(page + 0x100, b"from memory!")
    res = device_dma(dev, Job(iova + 0x100, b"\0" * 12, read=True))
    assert res.status is DmaStatus.MEMORY and bytes(dev.buffer[:12]) == b"from memory!"
    assert dev.mmio_read(DMA_COUNT) == 2 and dev.metrics.transfers == 2
    # An MSI through an IRTE of its own: the completion raises it.
    handle = host.iommu.alloc_irte(dev.fn.rid, 0x55, 3)
    addr, data = host.iommu.msi_message(handle)
    dev.mmio_write(MSI_ADDR, addr, 8)
    dev.mmio_write(MSI_DATA, data, 4)
    dev.mmio_write(CTRL, int(Ctrl.IRQ_EN), 4)
    dev.mmio_write(DOORBELL, 1, 4)
    assert dev.mmio_read(STATUS) & Status.BUSY
    host.env.run()
    msi = dev.log[-1]
    assert msi.status is DmaStatus.INTERRUPT and msi.interrupt.vector == 0x55
    assert msi.interrupt.destination == 3 and dev.metrics.msis == 1


def test_engine_registers_follow_their_table():
    host, dev, _ = _engine()
    dev.mmio_write(ID_REG, 0, 4)
    assert dev.mmio_read(ID_REG) == 0x11E8_0100  # read-only
    dev.mmio_write(CTRL, 0xFFFF_FFFF, 4)
    assert dev.mmio_read(CTRL) == int(Ctrl.DIR_READ | Ctrl.IRQ_EN | Ctrl.RID_OVERRIDE)
    dev.mmio_write(CTRL, 0, 4)
    dev.mmio_write(DMA_LEN, 16, 4)
    dev.mmio_write(DMA_ADDR, 0x3000_0000, 8)  # unmapped in its (empty) host domain
    dev.mmio_write(DOORBELL, 1, 4)
    dev.mmio_write(DOORBELL, 1, 4)  # ignored while BUSY
    host.env.run()
    assert len(dev.log) == 1 and dev.log[0].status is DmaStatus.FAULT
    assert dev.mmio_read(STATUS) == Status.ERROR and dev.metrics.errors == 1
    dev.mmio_write(STATUS, int(Status.ERROR), 4)  # write 1 to clear
    assert dev.mmio_read(STATUS) == 0
    assert dev.read(dev.fn.bars[0], 0x09, 2) == b"\xff\xff"  # odd width: all ones


def test_engine_reset_restores_reset_values_and_drops_in_flight_work():
    host, dev, drv = _engine()
    iova = drv.map(host.frames.alloc(4096))
    dev.write(dev.fn.bars[0], BUFFER_OFFSET, b"pending data")
    dev.mmio_write(DMA_ADDR, iova, 8)
    dev.mmio_write(DMA_LEN, 12, 4)
    dev.mmio_write(DOORBELL, 1, 4)
    dev.reset()
    host.env.run()
    assert dev.log == []  # the transfer never happened
    assert dev.save_state() == _engine()[1].save_state()  # a fresh engine's state
    assert bytes(dev.buffer) == bytes(len(dev.buffer))


def test_engine_save_restore_round_trip():
    host, dev, drv = _engine()
    iova = drv.map(host.frames.alloc(4096))
    dev.write(dev.fn.bars[0], BUFFER_OFFSET + 4, b"state")
    dev.mmio_write(DMA_ADDR, iova, 8)
    dev.mmio_write(DMA_LEN, 9, 4)
    dev.mmio_write(MSI_ADDR, 0xFEE0_0000, 8)
    state = dev.save_state()
    other_host, other, _ = _engine()
    other.load_state(state)
    assert other.save_state() == state
    assert other.bar_image() == dev.bar_image()
    dev.mmio_write(DOORBELL, 1, 4)
    with pytest.raises(ValueError, match="busy"):
        dev.save_state()
    host.env.run()


# ---------------------------------------------------------------------- the attacks
def test_host_memory_dma_is_blocked_by_a_translated_domain():
    out = dma_into_host_memory("translated")
    assert not out.succeeded and out.as_expected and out.bytes_changed == 0
    (fault,) = out.faults
    assert fault.reason is FaultReason.WRITE and fault.source_id == A_RID
    assert fault.address == HOST_KERNEL_HPA
    assert "fault 0x05 WRITE: source-id 0x0300 (03:00.0) write at 0x1000000" in out.evidence
    assert "FRCD0: F=1 FR=0x05 SID=0x0300 FI=0x1000000" in out.evidence


def test_host_memory_dma_succeeds_through_an_identity_domain():
    out = dma_into_host_memory("identity")
    assert out.succeeded and out.as_expected and out.bytes_changed == len(SECRET)
    assert out.faults == []
    assert "64 bytes changed in host kernel memory (HPA) at 0x1000000-0x100003f" in out.evidence
    assert any("identity pass-through" in e for e in out.evidence)


def test_p2p_write_is_redirected_by_acs_and_faults_in_the_attackers_domain():
    out = p2p_bar_write("rr-cr")
    assert not out.succeeded and out.bytes_changed == 0
    (fault,) = out.faults
    assert fault.reason is FaultReason.WRITE and fault.source_id == A_RID
    assert any("redirected upstream by ACS P2P Request Redirect" in e for e in out.evidence)


def test_p2p_write_without_acs_changes_the_victim_devices_register():
    out = p2p_bar_write("none")
    assert out.succeeded and out.bytes_changed > 0 and out.faults == []
    assert any("peer-to-peer into 0000:04:00.0 BAR0" in e for e in out.evidence)
    assert "0000:04:00.0 DMA_ADDR is now 0x1000000 (was 0x100000)" in out.evidence


def test_msi_injection_is_blocked_by_interrupt_remapping():
    out = msi_injection(True)
    assert not out.succeeded and out.interrupts == []
    reasons = [(f.reason, f.source_id) for f in out.faults]
    assert reasons == [(FaultReason.IR_REQ_COMPAT, A_RID), (FaultReason.IR_SID_ERR, A_RID)]
    assert "vm tenant-b vCPU0 pending vectors: none; interrupts delivered: 0" in out.evidence


def test_msi_injection_without_remapping_raises_the_victims_interrupt():
    out = msi_injection(False)
    assert out.succeeded and out.faults == []
    (intr,) = out.interrupts
    assert intr.vector == 0x31 and intr.destination == 2 and not intr.remapped
    assert "vm tenant-b vCPU0 pending vectors: ['0x41']; interrupts delivered: 1" in out.evidence


def test_stale_iotlb_write_is_blocked_by_strict_invalidation():
    out = stale_iotlb_dma(True)
    assert not out.succeeded and out.bytes_changed == 0
    (fault,) = out.faults
    assert fault.reason is FaultReason.WRITE and fault.source_id == A_RID
    assert any("flush queue holds 0 range(s)" in e for e in out.evidence)


def test_stale_iotlb_write_lands_in_a_reused_page_with_lazy_invalidation():
    out = stale_iotlb_dma(False)
    assert out.succeeded and out.bytes_changed == len(SECRET) and out.faults == []
    assert any("flush queue holds 1 range(s)" in e for e in out.evidence)


def test_rid_spoofing_is_stopped_by_source_validation_at_the_root_port():
    out = requester_id_spoofing(True)
    assert not out.succeeded and out.bytes_changed == 0 and out.faults == []
    assert out.violations == [("SV", "0000:00:01.0")]


def test_rid_spoofing_without_sv_writes_the_other_vms_ram():
    out = requester_id_spoofing(False)
    assert out.succeeded and out.bytes_changed == len(SECRET)
    assert out.violations == [] and out.faults == []
    assert any("requester ID 0x0200 (02:00.0): reached memory" in e for e in out.evidence)


def test_unviable_group_is_refused_by_vfio():
    out = unviable_group_assignment(False)
    assert not out.succeeded and out.bytes_changed == 0
    assert any('group 1 is not viable: 0000:01:00.1 is not assigned to vm "tenant-a"' in e
               for e in out.evidence)


def test_acs_override_lets_the_tenant_reach_the_hosts_other_function():
    out = unviable_group_assignment(True)
    assert out.succeeded and out.bytes_changed == len(SECRET)
    assert any("inside the multifunction device" in e for e in out.evidence)


def test_catalog_runs_every_attack_both_ways_as_expected():
    rows = run_catalog()
    assert [a.name for a, _, _ in rows] == [a.name for a in CATALOG]
    for a, open_, blocked in rows:
        assert open_.succeeded and not blocked.succeeded, a.name
        assert open_.as_expected and blocked.as_expected
        assert open_.bytes_changed or open_.interrupts, a.name  # really happened


def test_one_seed_gives_identical_outcomes():
    first = [(o.to_json(), b.to_json()) for _, o, b in run_catalog(seed=5)]
    second = [(o.to_json(), b.to_json()) for _, o, b in run_catalog(seed=5)]
    assert first == second


def test_bad_knobs_and_names_are_user_errors():
    with pytest.raises(ConfigError, match="domain='bogus'"):
        dma_into_host_memory("bogus")
    with pytest.raises(ConfigError, match="not in the catalog"):
        attack("nope")
    assert attack("msi-injection").knob == "interrupt_remapping"


def test_static_reachability_analysis_agrees_with_the_attacks():
    pytest.importorskip("passthru.analysis.reachability")
    checked = 0
    for _, open_, blocked in run_catalog(seed=2):
        for out in (open_, blocked):
            if out.analysis is not None:
                assert out.analysis == out.succeeded, (out.name, out.configuration)
                checked += 1
    assert checked >= 9
