"""Primary fault logging: FRCD contents, PPF/FRI, PFO overflow, FPD, fault events (spec 7)."""

from __future__ import annotations

from passthru.hw.frames import FrameAllocator
from passthru.hw.iommu.vtd import regs as R
from passthru.hw.iommu.vtd.entries import AddressWidth
from passthru.hw.iommu.vtd.faults import FaultReason, FaultRecord
from passthru.hw.iommu.vtd.tables import TableWriter, enable_dma_remapping
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory

GIB = 1 << 30
SID = 0x0108


def setup(nfr: int = 2, sink=None):
    mem = HostMemory(2 * GIB)
    frames = FrameAllocator(GIB, GIB // 2)
    unit = DmarUnit(mem, nfr=nfr, fault_event_sink=sink)
    tw = TableWriter(mem, frames)
    enable_dma_remapping(unit, tw.root)
    pgd = tw.alloc_page()
    tw.set_context(SID, did=3, slptptr=pgd, aw=AddressWidth.AGAW_48)
    return mem, unit, tw


def frcd(unit: DmarUnit, i: int) -> tuple[int, int]:
    base = R.FRCD_REG_OFFSET + 16 * i
    return unit.read_reg(base, 8), unit.read_reg(base + 8, 8)


def clear_frcd(unit: DmarUnit, i: int) -> None:
    """Linux dmar_fault: writel(DMA_FRCD_F, reg + fault_index * 16 + 12)."""
    unit.write_reg(R.FRCD_REG_OFFSET + 16 * i + 12, 1 << 31, 4)


def test_cap_reports_nfr_and_fro():
    _, unit, _ = setup(nfr=3)
    cap = unit.read_reg(R.CAP_REG, 8)
    assert ((cap >> R.CAP_NFR_SHIFT) & 0xFF) + 1 == 3
    assert ((cap >> R.CAP_FRO_SHIFT) & 0x3FF) * 16 == R.FRCD_REG_OFFSET


def test_fault_record_fields():
    _, unit, _ = setup()
    f = unit.translate(SID, 0x1234_5678, False)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.READ
    lo, hi = frcd(unit, 0)
    assert lo == 0x1234_5000  # FI: page address
    assert hi & R.FRCD_F and hi & R.FRCD_T  # T=1: read
    assert (hi >> R.FRCD_FR_SHIFT) & 0xFF == 0x6
    assert hi & 0xFFFF == SID
    fsts = unit.read_reg(R.FSTS_REG)
    assert fsts & R.Fsts.PPF and not fsts & R.Fsts.PFO
    assert (fsts >> R.FSTS_FRI_SHIFT) & 0xFF == 0


def test_write_fault_has_t_clear():
    _, unit, _ = setup()
    unit.translate(SID, 0x1000, True)
    _, hi = frcd(unit, 0)
    assert not hi & R.FRCD_T and (hi >> R.FRCD_FR_SHIFT) & 0xFF == 0x5


def test_overflow_drops_faults_and_sets_pfo():
    _, unit, _ = setup(nfr=2)
    for addr in (0x1000, 0x2000):
        unit.translate(SID, addr)
    assert unit.faults.pending() == [0, 1]
    f = unit.translate(SID, 0x3000)  # slot 0 (the internal index wrapped) is still full
    assert isinstance(f, FaultRecord)  # the request still fails ...
    assert unit.read_reg(R.FSTS_REG) & R.Fsts.PFO  # ... but the record is dropped
    assert frcd(unit, 0)[0] == 0x1000
    assert unit.faults.dropped_overflow == 1
    # software services slot 0; while PFO stays set nothing new is recorded
    clear_frcd(unit, 0)
    assert unit.faults.pending() == [1]
    unit.translate(SID, 0x4000)
    assert frcd(unit, 0)[1] & R.FRCD_F == 0 and unit.faults.dropped_overflow == 2
    # clearing PFO (RW1C) lets logging resume at the internal index
    unit.write_reg(R.FSTS_REG, R.Fsts.PFO)
    assert not unit.read_reg(R.FSTS_REG) & R.Fsts.PFO
    unit.translate(SID, 0x5000)
    assert frcd(unit, 0)[0] == 0x5000


def test_ppf_follows_f_bits_and_fri_names_first_pending():
    _, unit, _ = setup(nfr=4)
    unit.translate(SID, 0x1000)
    unit.translate(SID, 0x2000)
    clear_frcd(unit, 0)
    clear_frcd(unit, 1)
    assert not unit.read_reg(R.FSTS_REG) & R.Fsts.PPF
    unit.translate(SID, 0x3000)  # lands in slot 2, PPF 0 -> 1: FRI = 2
    fsts = unit.read_reg(R.FSTS_REG)
    assert fsts & R.Fsts.PPF and (fsts >> R.FSTS_FRI_SHIFT) & 0xFF == 2


def test_fpd_suppresses_qualified_faults_only():
    mem, unit, tw = setup()
    tw.set_context(SID, did=3, slptptr=tw.alloc_page(), fpd=True)
    f = unit.translate(SID, 0x1000)
    assert isinstance(f, FaultRecord) and f.reason == FaultReason.READ
    assert unit.faults.pending() == [] and unit.faults.suppressed_fpd == 1
    f = unit.translate(0x7700, 0)  # root entry not present: not qualified
    assert isinstance(f, FaultRecord) and unit.faults.pending() == [0]


def test_fault_event_masked_then_unmasked():
    events: list[tuple[int, int]] = []
    _, unit, _ = setup(sink=lambda a, d: events.append((a, d)))
    unit.write_reg(R.FEDATA_REG, 0x41)
    unit.write_reg(R.FEADDR_REG, 0xFEE0_0000)
    assert unit.read_reg(R.FECTL_REG) & R.Fectl.IM  # masked at reset
    unit.translate(SID, 0x1000)
    assert events == [] and unit.read_reg(R.FECTL_REG) & R.Fectl.IP
    unit.write_reg(R.FECTL_REG, 0)  # unmask: the pending event goes out
    assert events == [(0xFEE0_0000, 0x41)]
    assert not unit.read_reg(R.FECTL_REG) & R.Fectl.IP
    unit.translate(SID, 0x2000)  # PPF already set: no new event
    assert len(events) == 1


def test_interrupt_fault_record_keeps_index_in_fi():
    f = FaultRecord(FaultReason.IR_ENTRY_P, 0x10, 0xFEE0_0010, True, 0x1234)
    assert f.fi == 0x1234 << 48 and f.is_interrupt
    assert "interrupt index 0x1234" in repr(f)
