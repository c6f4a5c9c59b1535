"""Entry encodings against the spec's bit positions (VT-d ch. 9, 5.1, 6.5.2)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from passthru.hw.iommu.vtd.entries import (
    AddressWidth,
    ContextEntry,
    Irte,
    RootEntry,
    TranslationType,
    cc_inv_desc,
    iec_inv_desc,
    iotlb_inv_desc,
    msi_handle,
    msi_remappable_address,
    slpte,
    slpte_rsvd_mask,
    wait_desc,
)


def test_root_and_context_entry_bits():
    r = RootEntry.make(0x12_3456_7000)
    assert r.lo == 0x12_3456_7001 and r.hi == 0 and r.present and r.ctp == 0x12_3456_7000
    c = ContextEntry.make(
        did=0xBEEF,
        aw=AddressWidth.AGAW_48,
        slptptr=0x9000,
        tt=TranslationType.PASS_THROUGH,
        fpd=True,
    )
    assert c.lo == 0x9000 | (2 << 2) | 2 | 1
    assert c.hi == 2 | (0xBEEF << 8)
    assert (c.did, c.aw, c.tt, c.fpd, c.slptptr) == (0xBEEF, 2, 2, True, 0x9000)
    assert AddressWidth.AGAW_39.levels == 3 and AddressWidth.AGAW_48.bits == 48


def test_slpte_and_reserved_masks():
    assert slpte(0x5000) == 0x5003
    assert slpte(0x20_0000, write=False, ps=True) == 0x20_0081
    haw = 48
    assert slpte_rsvd_mask(1, False, haw) & (1 << 11)  # SNP without ECAP.SC
    assert not slpte_rsvd_mask(1, False, haw) & ((1 << 48) - 1) & ~0xFFF
    assert slpte_rsvd_mask(4, False, haw) & (1 << 7)  # PS at level 4
    assert slpte_rsvd_mask(2, True, haw) & 0x1F_F000 == 0x1F_F000
    assert slpte_rsvd_mask(3, True, haw) & 0x3FFF_F000 == 0x3FFF_F000
    assert not slpte_rsvd_mask(1, False, haw) & (1 << 63)  # ignored bit


def test_descriptor_encodings_match_linux():
    # Linux: QI_CC_TYPE | QI_CC_GRAN(3) | QI_CC_DID | QI_CC_SID | QI_CC_FM
    assert cc_inv_desc(3, did=5, sid=0x0100, fm=1) == (
        1 | 3 << 4 | 5 << 16 | 0x100 << 32 | 1 << 48,
        0,
    )
    lo, hi = iotlb_inv_desc(3, did=7, addr=0x4000, am=2, ih=True, drain_reads=True)
    assert lo == 2 | 3 << 4 | 1 << 7 | 7 << 16 and hi == 0x4000 | 1 << 6 | 2
    assert iec_inv_desc() == (4, 0)
    assert iec_inv_desc(0x1234, 3) == (4 | 1 << 4 | 3 << 27 | 0x1234 << 32, 0)
    assert wait_desc(0x8004, 2, fence=True) == (5 | 1 << 5 | 1 << 6 | 2 << 32, 0x8004)


@given(st.integers(0, 0xFFFF))
def test_msi_handle_roundtrip(handle):
    addr = msi_remappable_address(handle)
    assert 0xFEE0_0000 <= addr <= 0xFEEF_FFFF and addr & 0x10
    assert msi_handle(addr) == handle


@given(
    st.builds(
        Irte,
        present=st.booleans(),
        vector=st.integers(0, 255),
        destination=st.integers(0, 0xFFFF_FFFF),
        delivery_mode=st.sampled_from([0, 1, 2, 4, 5, 7]),
        dest_mode=st.integers(0, 1),
        redir_hint=st.booleans(),
        trigger_mode=st.integers(0, 1),
        fpd=st.booleans(),
        sid=st.integers(0, 0xFFFF),
        sq=st.integers(0, 3),
        svt=st.integers(0, 2),
    )
)
def test_remapped_irte_roundtrip(irte):
    lo, hi = irte.encode(eime=True)
    assert Irte.decode(lo, hi, eime=True) == irte


@given(
    vector=st.integers(0, 255),
    pda=st.integers(0, (1 << 52) - 1).map(lambda a: a & ~0x3F),
    urgent=st.booleans(),
    sid=st.integers(0, 0xFFFF),
)
def test_posted_irte_roundtrip(vector, pda, urgent, sid):
    irte = Irte(vector=vector, posted=True, pda=pda, urgent=urgent, sid=sid, svt=1)
    lo, hi = irte.encode()
    assert lo & (1 << 15) and (lo >> 38) == (pda >> 6) & ((1 << 26) - 1)
    assert hi >> 32 == pda >> 32
    assert Irte.decode(lo, hi) == irte
