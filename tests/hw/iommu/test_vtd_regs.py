"""Register file: masks, RW1C, half-register access, GCMD/GSTS and capabilities (spec 10)."""

from __future__ import annotations

import pytest

from passthru.hw.iommu.vtd import regs as R
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory


@pytest.fixture
def unit() -> DmarUnit:
    return DmarUnit(HostMemory(1 << 30))


def test_table_is_data_with_unique_offsets(unit):
    offsets = [r.offset for r in unit.regs]
    assert len(offsets) == len(set(offsets))
    names = {r.name for r in unit.regs}
    for name in (
        "VER_REG",
        "CAP_REG",
        "ECAP_REG",
        "GCMD_REG",
        "GSTS_REG",
        "RTADDR_REG",
        "CCMD_REG",
        "FSTS_REG",
        "FECTL_REG",
        "IQH_REG",
        "IQT_REG",
        "IQA_REG",
        "IRTA_REG",
        "IVA_REG",
        "IOTLB_REG",
        "FRCD_REG0_HI",
    ):
        assert name in names
    assert unit.regs.register("IOTLB_REG").offset == 0xF8
    assert unit.regs.register("IRTA_REG").get_field("EIME").mask == 1 << 11


def test_capabilities(unit):
    cap = unit.read_reg(R.CAP_REG, 8)
    ecap = unit.read_reg(R.ECAP_REG, 8)
    assert (cap >> R.CAP_SAGAW_SHIFT) & 0x1F == R.SAGAW_39 | R.SAGAW_48
    assert ((cap >> R.CAP_MGAW_SHIFT) & 0x3F) + 1 == 48
    assert cap & R.Cap.SLLPS_2M and cap & R.Cap.SLLPS_1G and cap & R.Cap.PSI
    assert ecap & R.Ecap.QI and ecap & R.Ecap.IR and ecap & R.Ecap.PT
    assert ((ecap >> R.ECAP_IRO_SHIFT) & 0x3FF) * 16 == R.IVA_REG
    assert unit.read_reg(R.VER_REG) == 0x10
    # 32-bit halves of a 64-bit register
    assert unit.read_reg(R.CAP_REG) | unit.read_reg(R.CAP_REG + 4) << 32 == cap


def test_read_only_registers_ignore_writes(unit):
    cap = unit.read_reg(R.CAP_REG, 8)
    unit.write_reg(R.CAP_REG, 0, 8)
    unit.write_reg(R.GSTS_REG, 0xFFFFFFFF)
    assert unit.read_reg(R.CAP_REG, 8) == cap and unit.read_reg(R.GSTS_REG) == 0


def test_writable_masks_and_rw1c(unit):
    unit.write_reg(R.RTADDR_REG, 0x1234_5FFF, 8)
    assert unit.read_reg(R.RTADDR_REG, 8) == 0x1234_5C00  # bits 9:0 reserved
    unit.write_reg(R.IQT_REG, 0xFFFF_FFFF, 8)
    assert unit.read_reg(R.IQT_REG, 8) == R.IQ_QT_MASK
    unit.regs.update("FSTS_REG", set_bits=R.Fsts.PFO | R.Fsts.IQE | R.Fsts.PPF)
    unit.write_reg(R.FSTS_REG, R.Fsts.IQE)  # write 1 clears IQE only
    assert unit.read_reg(R.FSTS_REG) == R.Fsts.PFO | R.Fsts.PPF
    unit.write_reg(R.FSTS_REG, 0)  # writing 0 clears nothing
    assert unit.read_reg(R.FSTS_REG) == R.Fsts.PFO | R.Fsts.PPF


def test_gcmd_is_write_only_and_drives_gsts(unit):
    unit.write_reg(R.RTADDR_REG, 0x10_0000, 8)
    unit.write_reg(R.GCMD_REG, R.Gcmd.SRTP)
    assert unit.read_reg(R.GCMD_REG) == 0
    assert unit.read_reg(R.GSTS_REG) == R.Gsts.RTPS
    assert unit.dma.root_table == 0x10_0000
    unit.write_reg(R.RTADDR_REG, 0x20_0000, 8)  # not used until the next SRTP
    assert unit.dma.root_table == 0x10_0000
    unit.write_reg(R.GCMD_REG, R.Gcmd.TE)
    assert unit.read_reg(R.GSTS_REG) & R.Gsts.TES and unit.dma.enabled
    unit.write_reg(R.GCMD_REG, 0)
    assert not unit.read_reg(R.GSTS_REG) & R.Gsts.TES and not unit.dma.enabled


def test_scalable_mode_is_refused(unit):
    unit.write_reg(R.RTADDR_REG, 0x10_0000 | (1 << R.RTADDR_TTM_SHIFT), 8)
    with pytest.raises(ValueError, match="legacy"):
        unit.write_reg(R.GCMD_REG, R.Gcmd.SRTP)


def test_invalid_access_size(unit):
    with pytest.raises(ValueError):
        unit.read_reg(R.CAP_REG + 2, 4)
    assert unit.read_reg(0x500, 4) == 0  # unimplemented space reads 0
    unit.write_reg(0x500, 1, 4)


def test_capabilities_follow_options():
    unit = DmarUnit(
        HostMemory(1 << 30),
        address_widths=(39,),
        mgaw=39,
        interrupt_remapping=False,
        queued_invalidation=False,
        pass_through=False,
        large_pages=(),
        nfr=8,
    )
    cap, ecap = unit.cap, unit.ecap
    assert (cap >> R.CAP_SAGAW_SHIFT) & 0x1F == R.SAGAW_39
    assert not ecap & (R.Ecap.QI | R.Ecap.IR | R.Ecap.PT)
    assert not cap & (R.Cap.SLLPS_2M | R.Cap.SLLPS_1G)
    assert unit.nfr == 8
    with pytest.raises(ValueError):
        DmarUnit(HostMemory(1 << 30), address_widths=(57,), mgaw=57)
