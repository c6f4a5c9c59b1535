"""VT-d in-memory data structure formats: encode and decode (Intel VT-d spec ch. 9, 6.5.2).

What is modelled, bit for bit as the spec lays it out in host memory (little-endian):

- root entry (9.1) and legacy context entry (9.3), 16 bytes each, 256 per 4 KiB table;
- second-level paging entries (9.8): SL-PML4E, SL-PDPE (1 GiB leaf with PS), SL-PDE (2 MiB
  leaf with PS), SL-PTE, with the reserved-bit masks QEMU uses (``vtd_spte_rsvd[_large]``);
- interrupt remapping table entries (9.10 remapped format, 9.11 posted format), 16 bytes;
- the posted-interrupt descriptor (9.12), 64 bytes;
- MSI address/data in compatibility and remappable format (5.1.2, 5.1.3);
- 128-bit queued invalidation descriptors (6.5.2): context-cache (type 1), IOTLB (2), interrupt
  entry cache (4) and invalidation wait (5).

Left out: scalable-mode root/context entries, PASID directory/table entries, first-level
paging entries, 256-bit descriptors and the PASID/device-TLB descriptor types (3, 6, 7).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Final

MASK64: Final = (1 << 64) - 1
PAGE_SHIFT: Final = 12
PAGE_SIZE: Final = 1 << PAGE_SHIFT
PAGE_4K: Final = 1 << 12
PAGE_2M: Final = 1 << 21
PAGE_1G: Final = 1 << 30
SL_LEVEL_BITS: Final = 9  # QEMU VTD_SL_LEVEL_BITS
SL_ENTRIES: Final = 512
ENTRY_SIZE: Final = 16  # root, context and IRTE entries are 128 bits
TABLE_ENTRIES: Final = 256  # root/context entries per 4 KiB table


def haw_mask(haw: int) -> int:
    """QEMU ``VTD_HAW_MASK``: the address bits below the host address width."""
    return (1 << haw) - 1


def level_shift(level: int) -> int:
    """Bit position of the address bits a level-``level`` table indexes (1 = SL-PT)."""
    return PAGE_SHIFT + SL_LEVEL_BITS * (level - 1)


def level_page_size(level: int) -> int:
    return 1 << level_shift(level)


# ---------------------------------------------------------------------- root entry (9.1)
ROOT_ENTRY_P: Final = 1
ROOT_ENTRY_CTP: Final = MASK64 & ~0xFFF


def root_entry_rsvd(haw: int) -> tuple[int, int]:
    """Reserved bits of a legacy root entry (lo, hi); QEMU ``VTD_ROOT_ENTRY_RSVD``."""
    return 0xFFE | (MASK64 & ~haw_mask(haw)), MASK64


@dataclass(frozen=True, slots=True)
class RootEntry:
    lo: int
    hi: int = 0

    @classmethod
    def make(cls, ctp: int, present: bool = True) -> RootEntry:
        return cls((ctp & ROOT_ENTRY_CTP) | (ROOT_ENTRY_P if present else 0), 0)

    @property
    def present(self) -> bool:
        return bool(self.lo & ROOT_ENTRY_P)

    @property
    def ctp(self) -> int:
        """Context-table pointer."""
        return self.lo & ROOT_ENTRY_CTP

    def __repr__(self) -> str:
        return f"RootEntry(P={int(self.present)}, CTP={self.ctp:#x})"


# ---------------------------------------------------------------------- context entry (9.3)
class TranslationType(IntEnum):
    """Context-entry TT field; QEMU ``VTD_CONTEXT_TT_*``."""

    MULTI_LEVEL = 0  # untranslated requests use second-level tables; others blocked
    DEV_IOTLB = 1  # as 0, plus translation/translated requests (needs ECAP.DT)
    PASS_THROUGH = 2  # untranslated requests pass through (needs ECAP.PT)
    RESERVED = 3


class AddressWidth(IntEnum):
    """Context-entry AW field (AGAW encoding, shared with CAP.SAGAW bit numbers)."""

    AGAW_39 = 1  # 3-level table
    AGAW_48 = 2  # 4-level table
    AGAW_57 = 3  # 5-level table

    @property
    def bits(self) -> int:
        return 30 + 9 * self.value

    @property
    def levels(self) -> int:
        return 2 + self.value

    @classmethod
    def from_bits(cls, bits: int) -> AddressWidth:
        for aw in cls:
            if aw.bits == bits:
                return aw
        raise ValueError(f"address width {bits} is not 39, 48 or 57 bits")


CONTEXT_ENTRY_P: Final = 1 << 0
CONTEXT_ENTRY_FPD: Final = 1 << 1
CONTEXT_ENTRY_TT_SHIFT: Final = 2
CONTEXT_ENTRY_TT: Final = 3 << CONTEXT_ENTRY_TT_SHIFT
CONTEXT_ENTRY_SLPTPTR: Final = MASK64 & ~0xFFF
CONTEXT_ENTRY_AW: Final = 7
CONTEXT_ENTRY_DID_SHIFT: Final = 8
CONTEXT_ENTRY_RSVD_HI: Final = 0xFFFFFFFFFF000080  # QEMU VTD_CONTEXT_ENTRY_RSVD_HI


def context_entry_rsvd(haw: int) -> tuple[int, int]:
    """Reserved bits of a legacy context entry (lo, hi); QEMU ``VTD_CONTEXT_ENTRY_RSVD_*``."""
    return 0xFF0 | (MASK64 & ~haw_mask(haw)), CONTEXT_ENTRY_RSVD_HI


@dataclass(frozen=True, slots=True)
class ContextEntry:
    lo: int
    hi: int

    @classmethod
    def make(
        cls,
        *,
        did: int,
        aw: int,
        slptptr: int = 0,
        tt: int = TranslationType.MULTI_LEVEL,
        fpd: bool = False,
        present: bool = True,
    ) -> ContextEntry:
        lo = (
            (CONTEXT_ENTRY_P if present else 0)
            | (CONTEXT_ENTRY_FPD if fpd else 0)
            | ((tt & 3) << CONTEXT_ENTRY_TT_SHIFT)
            | (slptptr & CONTEXT_ENTRY_SLPTPTR)
        )
        hi = (aw & CONTEXT_ENTRY_AW) | ((did & 0xFFFF) << CONTEXT_ENTRY_DID_SHIFT)
        return cls(lo, hi)

    @property
    def present(self) -> bool:
        return bool(self.lo & CONTEXT_ENTRY_P)

    @property
    def fpd(self) -> bool:
        return bool(self.lo & CONTEXT_ENTRY_FPD)

    @property
    def tt(self) -> int:
        return (self.lo & CONTEXT_ENTRY_TT) >> CONTEXT_ENTRY_TT_SHIFT

    @property
    def slptptr(self) -> int:
        return self.lo & CONTEXT_ENTRY_SLPTPTR

    @property
    def aw(self) -> int:
        return self.hi & CONTEXT_ENTRY_AW

    @property
    def did(self) -> int:
        return (self.hi >> CONTEXT_ENTRY_DID_SHIFT) & 0xFFFF

    def __repr__(self) -> str:
        return (
            f"ContextEntry(P={int(self.present)}, FPD={int(self.fpd)}, TT={self.tt}, "
            f"SLPTPTR={self.slptptr:#x}, AW={self.aw}, DID={self.did})"
        )


# ---------------------------------------------------------------------- SL paging entries (9.8)
class SlPte(IntFlag):
    """Second-level paging entry bits; QEMU ``VTD_SL_*``."""

    R = 1 << 0
    W = 1 << 1
    X = 1 << 2
    IPAT = 1 << 6
    PS = 1 << 7  # page size: leaf at level 2 (2 MiB) or 3 (1 GiB)
    SNP = 1 << 11
    TM = 1 << 62


SL_RW: Final = int(SlPte.R | SlPte.W)
SL_IGN_COM: Final = 0xBFF0000000000000  # QEMU VTD_SL_IGN_COM: bits 63 and 61:52 are ignored


def sl_addr_mask(haw: int) -> int:
    """QEMU ``VTD_SL_PT_BASE_ADDR_MASK``: the address bits of a paging entry."""
    return haw_mask(haw) & ~0xFFF


def slpte_rsvd_mask(level: int, large: bool, haw: int) -> int:
    """Reserved bits of a paging entry; QEMU ``VTD_SPTE_[L]PAGE_L*_RSVD_MASK`` (no ECAP.DT).

    ``large`` is a PS=1 entry at level 2 or 3; bits of the page offset inside the large page
    are then reserved too.
    """
    common = MASK64 & ~(haw_mask(haw) | SL_IGN_COM)
    if large:
        return common | (0x1FF800 if level == 2 else 0x3FFFF800)
    return common | (0x880 if level >= 4 else 0x800)


def slpte(addr: int, *, read: bool = True, write: bool = True, ps: bool = False) -> int:
    """Encode a second-level paging entry pointing at ``addr``."""
    return (
        (addr & MASK64 & ~0xFFF)
        | (SlPte.R if read else 0)
        | (SlPte.W if write else 0)
        | (SlPte.PS if ps else 0)
    )


# ---------------------------------------------------------------------- IRTE (9.10, 9.11)
class DeliveryMode(IntEnum):
    """IRTE DLM / MSI data delivery mode (Intel SDM 10.11.2)."""

    FIXED = 0
    LOWEST_PRIORITY = 1
    SMI = 2
    NMI = 4
    INIT = 5
    EXTINT = 7


class Svt(IntEnum):
    """IRTE source-validation type; Linux ``SVT_*``."""

    NO_VERIFY = 0
    VERIFY_SID_SQ = 1
    VERIFY_BUS = 2
    RESERVED = 3


class Sq(IntEnum):
    """IRTE source-id qualifier: which function-number bits the check ignores; Linux ``SQ_*``."""

    ALL_16 = 0
    IGNORE_1 = 1  # ignore SID bit 2
    IGNORE_2 = 2  # ignore SID bits 2:1
    IGNORE_3 = 3  # ignore SID bits 2:0


IRTE_P: Final = 1 << 0
IRTE_FPD: Final = 1 << 1
IRTE_DM: Final = 1 << 2
IRTE_RH: Final = 1 << 3
IRTE_TM: Final = 1 << 4
IRTE_DLM_SHIFT: Final = 5
IRTE_URG: Final = 1 << 14  # posted format only
IRTE_IM: Final = 1 << 15  # IRTE mode: 1 = posted
IRTE_V_SHIFT: Final = 16
IRTE_DST_SHIFT: Final = 32
IRTE_PDA_L_SHIFT: Final = 38  # posted descriptor address bits 31:6 live in 63:38
IRTE_SQ_SHIFT: Final = 16  # in the upper quadword
IRTE_SVT_SHIFT: Final = 18
IRTE_PDA_H_SHIFT: Final = 32

# Reserved bits (lo, hi) by format; AVAIL 11:8 is software's.
IRTE_RSVD_REMAPPED: Final = ((0x7 << 12) | (0xFF << 24), MASK64 & ~0xFFFFF)
IRTE_RSVD_REMAPPED_XAPIC_DST: Final = (0xFF << 32) | (0xFFFF << 48)  # only bits 47:40 hold the id
IRTE_RSVD_POSTED: Final = ((0x3F << 2) | (0x3 << 12) | (0x3FFF << 24), 0xFFF << 20)


@dataclass(frozen=True, slots=True)
class Irte:
    """One interrupt remapping table entry, decoded.

    ``posted`` selects the format (IM). Remapped format uses ``dest_mode``..``destination``;
    posted format uses ``urgent`` and ``pda`` (posted-interrupt descriptor address, 64-byte
    aligned) and ``vector`` is the virtual vector posted into the descriptor. ``destination`` is
    the APIC id as software means it: 32-bit in x2APIC mode (IRTA.EIME=1), 8-bit otherwise
    (stored in bits 47:40, which ``encode`` and ``decode`` handle).
    """

    present: bool = True
    vector: int = 0
    destination: int = 0
    delivery_mode: int = DeliveryMode.FIXED
    dest_mode: int = 0  # 0 physical, 1 logical
    redir_hint: bool = False
    trigger_mode: int = 0  # 0 edge, 1 level
    fpd: bool = False
    sid: int = 0
    sq: int = Sq.ALL_16
    svt: int = Svt.NO_VERIFY
    posted: bool = False
    urgent: bool = False
    pda: int = 0

    def encode(self, eime: bool = True) -> tuple[int, int]:
        lo = (IRTE_P if self.present else 0) | (IRTE_FPD if self.fpd else 0)
        lo |= (self.vector & 0xFF) << IRTE_V_SHIFT
        hi = (
            (self.sid & 0xFFFF)
            | ((self.sq & 3) << IRTE_SQ_SHIFT)
            | ((self.svt & 3) << IRTE_SVT_SHIFT)
        )
        if self.posted:
            lo |= IRTE_IM | (IRTE_URG if self.urgent else 0)
            lo |= ((self.pda >> 6) & ((1 << 26) - 1)) << IRTE_PDA_L_SHIFT
            hi |= ((self.pda >> 32) & 0xFFFFFFFF) << IRTE_PDA_H_SHIFT
        else:
            lo |= (IRTE_DM if self.dest_mode else 0) | (IRTE_RH if self.redir_hint else 0)
            lo |= IRTE_TM if self.trigger_mode else 0
            lo |= (self.delivery_mode & 7) << IRTE_DLM_SHIFT
            dst = self.destination & 0xFFFFFFFF if eime else (self.destination & 0xFF) << 8
            lo |= dst << IRTE_DST_SHIFT
        return lo, hi

    @classmethod
    def decode(cls, lo: int, hi: int, eime: bool = True) -> Irte:
        present, fpd = bool(lo & IRTE_P), bool(lo & IRTE_FPD)
        vector = (lo >> IRTE_V_SHIFT) & 0xFF
        sid, sq, svt = hi & 0xFFFF, (hi >> IRTE_SQ_SHIFT) & 3, (hi >> IRTE_SVT_SHIFT) & 3
        if lo & IRTE_IM:
            pda = (((lo >> IRTE_PDA_L_SHIFT) & ((1 << 26) - 1)) << 6) | (
                ((hi >> IRTE_PDA_H_SHIFT) & 0xFFFFFFFF) << 32
            )
            return cls(
                present=present,
                fpd=fpd,
                vector=vector,
                sid=sid,
                sq=sq,
                svt=svt,
                posted=True,
                urgent=bool(lo & IRTE_URG),
                pda=pda,
            )
        dst = (lo >> IRTE_DST_SHIFT) & 0xFFFFFFFF
        return cls(
            present=present,
            fpd=fpd,
            vector=vector,
            sid=sid,
            sq=sq,
            svt=svt,
            dest_mode=int(bool(lo & IRTE_DM)),
            redir_hint=bool(lo & IRTE_RH),
            trigger_mode=int(bool(lo & IRTE_TM)),
            delivery_mode=(lo >> IRTE_DLM_SHIFT) & 7,
            destination=dst if eime else (dst >> 8) & 0xFF,
        )


def irte_rsvd_bits(lo: int, hi: int, *, eime: bool, posted_supported: bool) -> int:
    """Non-zero if a present IRTE has reserved bits set (spec 9.10/9.11, fault 0x24)."""
    if lo & IRTE_IM:
        if not posted_supported:
            return IRTE_IM  # IM is reserved without CAP.PI
        r_lo, r_hi = IRTE_RSVD_POSTED
        bad = (lo & r_lo) | (hi & r_hi)
    else:
        r_lo, r_hi = IRTE_RSVD_REMAPPED
        if not eime:
            r_lo |= IRTE_RSVD_REMAPPED_XAPIC_DST
        bad = (lo & r_lo) | (hi & r_hi)
    if ((hi >> IRTE_SVT_SHIFT) & 3) == Svt.RESERVED:
        bad |= 3 << IRTE_SVT_SHIFT
    return bad


def sid_matches(irte_sid: int, sq: int, svt: int, source_id: int) -> bool:
    """IRTE source validation (spec 9.10, SVT/SQ/SID fields)."""
    if svt == Svt.NO_VERIFY:
        return True
    if svt == Svt.VERIFY_SID_SQ:
        ignore = (0, 0b100, 0b110, 0b111)[sq & 3]
        return (irte_sid & ~ignore) == (source_id & ~ignore)
    if svt == Svt.VERIFY_BUS:
        start, end = (irte_sid >> 8) & 0xFF, irte_sid & 0xFF
        return start <= (source_id >> 8) <= end
    return False


# ---------------------------------------------------------------------- posted descriptor (9.12)
PID_SIZE: Final = 64
PID_CONTROL: Final = 32  # byte offset of the control quadword (bits 319:256)
PID_ON: Final = 1 << 0  # outstanding notification
PID_SN: Final = 1 << 1  # suppress notification
PID_NV_SHIFT: Final = 16  # notification vector, bits 279:272
PID_NDST_SHIFT: Final = 32  # notification destination, bits 319:288
PID_RSVD_CONTROL: Final = (0x3FFF << 2) | (0xFF << 24)
# PIR (four quadwords) then the control quadword: one access for an update of both.
PID_HEAD: Final = struct.Struct("<5Q")
assert PID_HEAD.size == PID_CONTROL + 8


def pid_control(nv: int, ndst: int, *, on: bool = False, sn: bool = False) -> int:
    """The control quadword of a posted-interrupt descriptor."""
    return (
        (PID_ON if on else 0)
        | (PID_SN if sn else 0)
        | ((nv & 0xFF) << PID_NV_SHIFT)
        | ((ndst & 0xFFFFFFFF) << PID_NDST_SHIFT)
    )


# ---------------------------------------------------------------------- MSI (5.1.2, 5.1.3)
MSI_WINDOW_BASE: Final = 0xFEE00000  # QEMU VTD_INTERRUPT_ADDR_FIRST
MSI_WINDOW_LAST: Final = 0xFEEFFFFF  # QEMU VTD_INTERRUPT_ADDR_LAST
MSI_ADDR_IR_EXT_INT: Final = 1 << 4  # interrupt format: 1 = remappable
MSI_ADDR_IR_SHV: Final = 1 << 3  # subhandle valid
MSI_ADDR_IR_INDEX2_BIT: Final = 2  # handle[15]
MSI_ADDR_IR_INDEX1_SHIFT: Final = 5  # handle[14:0] in bits 19:5
MSI_DATA_SUBHANDLE: Final = 0xFFFF
MSI_DATA_RESERVED: Final = 0xFFFF0000  # QEMU VTD_IR_MSI_DATA_RESERVED


def is_interrupt_address(addr: int) -> bool:
    return MSI_WINDOW_BASE <= addr <= MSI_WINDOW_LAST


def msi_remappable_address(handle: int, *, shv: bool = True) -> int:
    """Remappable-format MSI address for ``handle``; Linux ``fill_msi_msg``."""
    return (
        MSI_WINDOW_BASE
        | MSI_ADDR_IR_EXT_INT
        | (MSI_ADDR_IR_SHV if shv else 0)
        | ((handle & 0x7FFF) << MSI_ADDR_IR_INDEX1_SHIFT)
        | (((handle >> 15) & 1) << MSI_ADDR_IR_INDEX2_BIT)
    )


def msi_handle(addr: int) -> int:
    """The 16-bit handle of a remappable-format MSI address."""
    return ((addr >> MSI_ADDR_IR_INDEX1_SHIFT) & 0x7FFF) | (
        ((addr >> MSI_ADDR_IR_INDEX2_BIT) & 1) << 15
    )


def msi_compat_address(dest: int, *, dest_mode: int = 0, redir_hint: bool = False) -> int:
    """Compatibility-format MSI address (Intel SDM 10.11.1)."""
    return MSI_WINDOW_BASE | ((dest & 0xFF) << 12) | (8 if redir_hint else 0) | (dest_mode << 2)


def msi_compat_data(
    vector: int, *, delivery_mode: int = DeliveryMode.FIXED, trigger_mode: int = 0
) -> int:
    """Compatibility-format MSI data (Intel SDM 10.11.2)."""
    return (vector & 0xFF) | ((delivery_mode & 7) << 8) | ((trigger_mode & 1) << 15)


# ---------------------------------------------------------------------- invalidation desc (6.5.2)
class InvDescType(IntEnum):
    """Descriptor type, bits 3:0; QEMU ``VTD_INV_DESC_*``."""

    NONE = 0
    CC = 1  # context-cache invalidate
    IOTLB = 2
    DEVICE = 3  # device-TLB (not modelled: no ATS)
    IEC = 4  # interrupt entry cache
    WAIT = 5
    PIOTLB = 6
    PC = 7


class ContextGranularity(IntEnum):
    """CCMD.CIRG/CAIG and context-cache descriptor G."""

    GLOBAL = 1
    DOMAIN = 2
    DEVICE = 3


class IotlbGranularity(IntEnum):
    """IOTLB_REG.IIRG/IAIG and IOTLB descriptor G."""

    GLOBAL = 1
    DOMAIN = 2
    PAGE = 3


INV_DESC_TYPE: Final = 0xF
INV_DESC_G_SHIFT: Final = 4
INV_DESC_CC_RSVD: Final = (0xFFFC00000000FFC0, MASK64)  # QEMU VTD_INV_DESC_CC_RSVD
INV_DESC_IOTLB_RSVD: Final = (0xFFFFFFFF0000FF00, 0xF80)  # QEMU VTD_INV_DESC_IOTLB_RSVD_LO/HI
INV_DESC_IEC_RSVD: Final = (0xFFFF000007FFFFE0, MASK64)
INV_DESC_WAIT_RSVD: Final = (0xFFFFFF80, 0x3)  # QEMU VTD_INV_DESC_WAIT_RSVD_LO/HI
INV_DESC_IOTLB_DR: Final = 1 << 7
INV_DESC_IOTLB_DW: Final = 1 << 6
INV_DESC_IOTLB_IH: Final = 1 << 6  # in the upper quadword
INV_DESC_IEC_G_INDEX: Final = 1 << 4  # 1: index-selective, 0: global (Linux QI_IEC_SELECTIVE)
INV_DESC_IEC_IM_SHIFT: Final = 27
INV_DESC_IEC_IIDX_SHIFT: Final = 32
INV_DESC_WAIT_IF: Final = 1 << 4
INV_DESC_WAIT_SW: Final = 1 << 5
INV_DESC_WAIT_FN: Final = 1 << 6
INV_DESC_WAIT_DATA_SHIFT: Final = 32


def cc_inv_desc(granularity: int, did: int = 0, sid: int = 0, fm: int = 0) -> tuple[int, int]:
    """Context-cache invalidate descriptor (6.5.2.1)."""
    lo = (
        InvDescType.CC
        | ((granularity & 3) << INV_DESC_G_SHIFT)
        | ((did & 0xFFFF) << 16)
        | ((sid & 0xFFFF) << 32)
        | ((fm & 3) << 48)
    )
    return lo, 0


def iotlb_inv_desc(
    granularity: int,
    did: int = 0,
    addr: int = 0,
    am: int = 0,
    *,
    ih: bool = False,
    drain_reads: bool = False,
    drain_writes: bool = False,
) -> tuple[int, int]:
    """IOTLB invalidate descriptor (6.5.2.3)."""
    lo = (
        InvDescType.IOTLB
        | ((granularity & 3) << INV_DESC_G_SHIFT)
        | (INV_DESC_IOTLB_DR if drain_reads else 0)
        | (INV_DESC_IOTLB_DW if drain_writes else 0)
        | ((did & 0xFFFF) << 16)
    )
    hi = (addr & MASK64 & ~0xFFF) | (INV_DESC_IOTLB_IH if ih else 0) | (am & 0x3F)
    return lo, hi


def iec_inv_desc(index: int | None = None, im: int = 0) -> tuple[int, int]:
    """Interrupt entry cache invalidate descriptor (6.5.2.7): global when ``index`` is None."""
    if index is None:
        return int(InvDescType.IEC), 0
    lo = (
        InvDescType.IEC
        | INV_DESC_IEC_G_INDEX
        | ((im & 0x1F) << INV_DESC_IEC_IM_SHIFT)
        | ((index & 0xFFFF) << INV_DESC_IEC_IIDX_SHIFT)
    )
    return lo, 0


def wait_desc(
    status_addr: int | None = None,
    status_data: int = 0,
    *,
    interrupt: bool = False,
    fence: bool = False,
) -> tuple[int, int]:
    """Invalidation wait descriptor (6.5.2.8); a status write when ``status_addr`` is given."""
    lo = int(InvDescType.WAIT) | (INV_DESC_WAIT_IF if interrupt else 0)
    lo |= INV_DESC_WAIT_FN if fence else 0
    hi = 0
    if status_addr is not None:
        lo |= INV_DESC_WAIT_SW | ((status_data & 0xFFFFFFFF) << INV_DESC_WAIT_DATA_SHIFT)
        hi = status_addr & MASK64 & ~0x3
    return lo, hi
