"""VT-d remapping hardware registers, written down as data (Intel VT-d spec ch. 10).

What is modelled: the register file of one DMA-remapping hardware unit (a DRHD): every
register the legacy-mode model uses, with its offset, width, reset value, the bits software may
write, the bits that are write-1-to-clear (RW1C), its named fields and the spec section. One
generic accessor (``RegisterFile``) applies the masks for 32- and 64-bit accesses, so behaviour
(what a write *does*) lives in ``unit.py`` and the layout lives here. Offsets follow the spec
and QEMU's ``intel_iommu_internal.h`` (``DMAR_*_REG``); the IOTLB registers sit at IRO = 0xF0
and the fault recording registers at FRO = 0x220, as in QEMU.

Left out: the advanced fault log (AFLOG_REG), protected memory regions (PMEN/PLMBASE/...),
page request queue (PQH/PQT/PQA), MTRRs, performance monitoring, the virtual command
registers and everything scalable-mode only; reads of those offsets return 0 and writes are
ignored, like reserved register space.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntFlag

# ---------------------------------------------------------------------- offsets (spec 10.4)
VER_REG = 0x00
CAP_REG = 0x08
ECAP_REG = 0x10
GCMD_REG = 0x18
GSTS_REG = 0x1C
RTADDR_REG = 0x20
CCMD_REG = 0x28
FSTS_REG = 0x34
FECTL_REG = 0x38
FEDATA_REG = 0x3C
FEADDR_REG = 0x40
FEUADDR_REG = 0x44
IQH_REG = 0x80
IQT_REG = 0x88
IQA_REG = 0x90
ICS_REG = 0x9C
IECTL_REG = 0xA0
IEDATA_REG = 0xA4
IEADDR_REG = 0xA8
IEUADDR_REG = 0xAC
IRTA_REG = 0xB8
IOTLB_REG_OFFSET = 0xF0  # ECAP.IRO * 16 (QEMU DMAR_IOTLB_REG_OFFSET)
IVA_REG = IOTLB_REG_OFFSET
IOTLB_REG = IOTLB_REG_OFFSET + 0x8
FRCD_REG_OFFSET = 0x220  # CAP.FRO * 16 (QEMU DMAR_FRCD_REG_OFFSET)
FRCD_REG_LEN = 16


class Gcmd(IntFlag):
    """GCMD_REG bits (spec 10.4.4); QEMU ``VTD_GCMD_*``."""

    CFI = 1 << 23  # compatibility format interrupt
    SIRTP = 1 << 24  # set interrupt remap table pointer (one-shot)
    IRE = 1 << 25  # interrupt remapping enable
    QIE = 1 << 26  # queued invalidation enable
    WBF = 1 << 27  # write buffer flush (one-shot)
    EAFL = 1 << 28  # enable advanced fault logging
    SFL = 1 << 29  # set fault log (one-shot)
    SRTP = 1 << 30  # set root table pointer (one-shot)
    TE = 1 << 31  # translation enable


class Gsts(IntFlag):
    """GSTS_REG bits (spec 10.4.5); QEMU ``VTD_GSTS_*``."""

    CFIS = 1 << 23
    IRTPS = 1 << 24
    IRES = 1 << 25
    QIES = 1 << 26
    WBFS = 1 << 27
    AFLS = 1 << 28
    FLS = 1 << 29
    RTPS = 1 << 30
    TES = 1 << 31


class Fsts(IntFlag):
    """FSTS_REG bits (spec 10.4.9); FRI is the field 15:8."""

    PFO = 1 << 0  # primary fault overflow (RW1C)
    PPF = 1 << 1  # primary pending fault (RO: OR of every FRCD.F)
    AFO = 1 << 2
    APF = 1 << 3
    IQE = 1 << 4  # invalidation queue error (RW1C)
    ICE = 1 << 5  # invalidation completion error (RW1C)
    ITE = 1 << 6  # invalidation time-out error (RW1C)


FSTS_FRI_SHIFT = 8
FSTS_FRI_MASK = 0xFF << FSTS_FRI_SHIFT


class Fectl(IntFlag):
    """FECTL_REG / IECTL_REG bits (spec 10.4.10, 10.4.25)."""

    IP = 1 << 30  # interrupt pending
    IM = 1 << 31  # interrupt mask


class Cap(IntFlag):
    """Single-bit CAP_REG capabilities (spec 10.4.2); multi-bit fields are ``*_SHIFT`` below."""

    AFL = 1 << 3
    RWBF = 1 << 4
    PLMR = 1 << 5
    PHMR = 1 << 6
    CM = 1 << 7  # caching mode
    ZLR = 1 << 22
    SLLPS_2M = 1 << 34  # second-level 2 MiB pages
    SLLPS_1G = 1 << 35  # second-level 1 GiB pages
    PSI = 1 << 39  # page-selective invalidation
    DWD = 1 << 54
    DRD = 1 << 55
    PI = 1 << 59  # posted interrupts


CAP_ND_SHIFT = 0  # 2:0 number of domains: 2 ** (4 + 2 * ND)
CAP_SAGAW_SHIFT = 8  # 12:8 supported adjusted guest address widths
CAP_MGAW_SHIFT = 16  # 21:16 maximum guest address width - 1
CAP_FRO_SHIFT = 24  # 33:24 fault-recording register offset / 16
CAP_NFR_SHIFT = 40  # 47:40 number of fault-recording registers - 1
CAP_MAMV_SHIFT = 48  # 53:48 maximum address mask value (PSI)

SAGAW_39 = 1 << 1  # 3-level
SAGAW_48 = 1 << 2  # 4-level
SAGAW_57 = 1 << 3  # 5-level


class Ecap(IntFlag):
    """Single-bit ECAP_REG capabilities (spec 10.4.3); QEMU ``VTD_ECAP_*``."""

    C = 1 << 0  # page-walk coherency
    QI = 1 << 1  # queued invalidation
    DT = 1 << 2  # device-TLB (ATS)
    IR = 1 << 3  # interrupt remapping
    EIM = 1 << 4  # extended interrupt mode (x2APIC)
    PT = 1 << 6  # pass-through
    SC = 1 << 7  # snoop control
    SMTS = 1 << 43  # scalable mode
    SLTS = 1 << 46


ECAP_IRO_SHIFT = 8  # 17:8 IOTLB register offset / 16
ECAP_MHMV_SHIFT = 20  # 23:20 maximum handle mask value

# CCMD_REG (spec 10.4.7); QEMU VTD_CCMD_*
CCMD_ICC = 1 << 63
CCMD_CIRG_SHIFT = 61
CCMD_CAIG_SHIFT = 59
CCMD_FM_SHIFT = 32
CCMD_SID_SHIFT = 16

# IOTLB_REG / IVA_REG (spec 10.4.8.1, 10.4.8.2); QEMU VTD_TLB_* / VTD_IVA_*
IOTLB_IVT = 1 << 63
IOTLB_IIRG_SHIFT = 60
IOTLB_IAIG_SHIFT = 57
IOTLB_DR = 1 << 49
IOTLB_DW = 1 << 48
IOTLB_DID_SHIFT = 32
IVA_AM_MASK = 0x3F
IVA_IH = 1 << 6

# RTADDR_REG (10.4.6), IQA_REG (10.4.23), IRTA_REG (10.4.29)
RTADDR_TTM_SHIFT = 10  # 11:10 translation table mode: 00 legacy, 01 scalable
IQA_QS_MASK = 0x7
IQA_DW = 1 << 11
IQ_QT_SHIFT = 4  # IQH/IQT hold the descriptor index in 18:4 (128-bit descriptors)
IQ_QT_MASK = 0x7FFF << IQ_QT_SHIFT
IRTA_S_MASK = 0xF  # table has 2 ** (S + 1) entries
IRTA_EIME = 1 << 11
ICS_IWC = 1 << 0

# FRCD (10.4.14): upper quadword bits; QEMU VTD_FRCD_*
FRCD_F = 1 << 63
FRCD_T = 1 << 62  # 1: read request, 0: write request
FRCD_FR_SHIFT = 32
FRCD_SID_MASK = 0xFFFF


@dataclass(frozen=True, slots=True)
class Field:
    """A named bit field ``[lsb, lsb + width)`` of a register."""

    name: str
    lsb: int
    width: int = 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    def get(self, value: int) -> int:
        return (value >> self.lsb) & ((1 << self.width) - 1)


@dataclass(frozen=True, slots=True)
class Register:
    """One register: layout and access rules, no behaviour."""

    name: str
    offset: int
    width: int  # bytes: 4 or 8
    reset: int = 0
    writable: int = 0  # bits a software write stores
    rw1c: int = 0  # bits a software write of 1 clears
    section: str = ""
    fields: tuple[Field, ...] = ()

    def get_field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


def _bits(names: Iterable[tuple[str, int]]) -> tuple[Field, ...]:
    return tuple(Field(n, b) for n, b in names)


def register_table(cap: int, ecap: int, nfr: int, ver: int = 0x10) -> tuple[Register, ...]:
    """The register layout of one unit with the given capability values."""
    mask64 = (1 << 64) - 1
    regs = [
        Register(
            "VER_REG",
            VER_REG,
            4,
            ver,
            section="10.4.1",
            fields=(Field("MIN", 0, 4), Field("MAX", 4, 4)),
        ),
        Register(
            "CAP_REG",
            CAP_REG,
            8,
            cap,
            section="10.4.2",
            fields=(
                Field("ND", 0, 3),
                Field("SAGAW", 8, 5),
                Field("MGAW", 16, 6),
                Field("FRO", 24, 10),
                Field("SLLPS", 34, 4),
                Field("PSI", 39),
                Field("NFR", 40, 8),
                Field("MAMV", 48, 6),
                Field("PI", 59),
            ),
        ),
        Register(
            "ECAP_REG",
            ECAP_REG,
            8,
            ecap,
            section="10.4.3",
            fields=(
                Field("C", 0),
                Field("QI", 1),
                Field("DT", 2),
                Field("IR", 3),
                Field("EIM", 4),
                Field("PT", 6),
                Field("SC", 7),
                Field("IRO", 8, 10),
                Field("MHMV", 20, 4),
            ),
        ),
        # GCMD is write-only (reads return 0); unit.py turns a write into GSTS changes.
        Register(
            "GCMD_REG",
            GCMD_REG,
            4,
            0,
            writable=0xFF800000,
            section="10.4.4",
            fields=_bits((g.name or "", g.bit_length() - 1) for g in Gcmd),
        ),
        Register(
            "GSTS_REG",
            GSTS_REG,
            4,
            0,
            section="10.4.5",
            fields=_bits((g.name or "", g.bit_length() - 1) for g in Gsts),
        ),
        Register(
            "RTADDR_REG",
            RTADDR_REG,
            8,
            0,
            writable=mask64 & ~0x3FF,
            section="10.4.6",
            fields=(Field("TTM", 10, 2), Field("RTA", 12, 52)),
        ),
        Register(
            "CCMD_REG",
            CCMD_REG,
            8,
            0,
            writable=(1 << 63) | (3 << 61) | (3 << 32) | 0xFFFFFFFF,
            section="10.4.7",
            fields=(
                Field("DID", 0, 16),
                Field("SID", 16, 16),
                Field("FM", 32, 2),
                Field("CAIG", 59, 2),
                Field("CIRG", 61, 2),
                Field("ICC", 63),
            ),
        ),
        Register(
            "FSTS_REG",
            FSTS_REG,
            4,
            0,
            rw1c=int(Fsts.PFO | Fsts.AFO | Fsts.APF | Fsts.IQE | Fsts.ICE | Fsts.ITE),
            section="10.4.9",
            fields=_bits((f.name or "", f.bit_length() - 1) for f in Fsts)
            + (Field("FRI", FSTS_FRI_SHIFT, 8),),
        ),
        Register(
            "FECTL_REG",
            FECTL_REG,
            4,
            int(Fectl.IM),
            writable=int(Fectl.IM),
            section="10.4.10",
            fields=(Field("IP", 30), Field("IM", 31)),
        ),
        Register("FEDATA_REG", FEDATA_REG, 4, 0, writable=0xFFFFFFFF, section="10.4.11"),
        Register("FEADDR_REG", FEADDR_REG, 4, 0, writable=0xFFFFFFFC, section="10.4.12"),
        Register("FEUADDR_REG", FEUADDR_REG, 4, 0, writable=0xFFFFFFFF, section="10.4.13"),
        Register("IQH_REG", IQH_REG, 8, 0, section="10.4.22", fields=(Field("QH", 4, 15),)),
        Register(
            "IQT_REG",
            IQT_REG,
            8,
            0,
            writable=IQ_QT_MASK,
            section="10.4.23",
            fields=(Field("QT", 4, 15),),
        ),
        Register(
            "IQA_REG",
            IQA_REG,
            8,
            0,
            writable=(mask64 & ~0xFFF) | IQA_QS_MASK,
            section="10.4.24",
            fields=(Field("QS", 0, 3), Field("DW", 11), Field("IQA", 12, 52)),
        ),
        Register(
            "ICS_REG", ICS_REG, 4, 0, rw1c=ICS_IWC, section="10.4.25", fields=(Field("IWC", 0),)
        ),
        Register(
            "IECTL_REG",
            IECTL_REG,
            4,
            int(Fectl.IM),
            writable=int(Fectl.IM),
            section="10.4.26",
            fields=(Field("IP", 30), Field("IM", 31)),
        ),
        Register("IEDATA_REG", IEDATA_REG, 4, 0, writable=0xFFFFFFFF, section="10.4.27"),
        Register("IEADDR_REG", IEADDR_REG, 4, 0, writable=0xFFFFFFFC, section="10.4.28"),
        Register("IEUADDR_REG", IEUADDR_REG, 4, 0, writable=0xFFFFFFFF, section="10.4.29"),
        Register(
            "IRTA_REG",
            IRTA_REG,
            8,
            0,
            writable=(mask64 & ~0xFFF) | IRTA_EIME | IRTA_S_MASK,
            section="10.4.31",
            fields=(Field("S", 0, 4), Field("EIME", 11), Field("IRTA", 12, 52)),
        ),
        Register(
            "IVA_REG",
            IVA_REG,
            8,
            0,
            writable=(mask64 & ~0xFFF) | IVA_IH | IVA_AM_MASK,
            section="10.4.8.2",
            fields=(Field("AM", 0, 6), Field("IH", 6), Field("ADDR", 12, 52)),
        ),
        Register(
            "IOTLB_REG",
            IOTLB_REG,
            8,
            0,
            writable=IOTLB_IVT
            | (3 << IOTLB_IIRG_SHIFT)
            | IOTLB_DR
            | IOTLB_DW
            | (0xFFFF << IOTLB_DID_SHIFT),
            section="10.4.8.1",
            fields=(
                Field("DID", 32, 16),
                Field("DW", 48),
                Field("DR", 49),
                Field("IAIG", 57, 2),
                Field("IIRG", 60, 2),
                Field("IVT", 63),
            ),
        ),
    ]
    for i in range(nfr):
        base = FRCD_REG_OFFSET + i * FRCD_REG_LEN
        regs.append(
            Register(
                f"FRCD_REG{i}_LO", base, 8, 0, section="10.4.14", fields=(Field("FI", 12, 52),)
            )
        )
        regs.append(
            Register(
                f"FRCD_REG{i}_HI",
                base + 8,
                8,
                0,
                rw1c=FRCD_F,
                section="10.4.14",
                fields=(
                    Field("SID", 0, 16),
                    Field("FR", 32, 8),
                    Field("AT", 60, 2),
                    Field("T", 62),
                    Field("F", 63),
                ),
            )
        )
    return tuple(regs)


class RegisterFile:
    """Register values plus the one generic accessor that applies each register's masks.

    ``read``/``write`` are the software (MMIO) view: 4- or 8-byte naturally aligned accesses; a
    4-byte access to either half of a 64-bit register works as on hardware. ``get``/``set``
    are the hardware view and bypass the masks. ``write`` returns the register it touched (or
    ``None`` for unimplemented space) so the unit can act on it.
    """

    def __init__(self, table: Iterable[Register]) -> None:
        self.table = tuple(table)
        self._by_name = {r.name: r for r in self.table}
        self._by_offset = {r.offset: r for r in self.table}
        self._hi_half = {r.offset + 4: r for r in self.table if r.width == 8}
        self._values = {r.name: r.reset for r in self.table}

    def __iter__(self) -> Iterator[Register]:
        return iter(self.table)

    def __repr__(self) -> str:
        return f"RegisterFile({len(self.table)} registers)"

    def register(self, name: str) -> Register:
        return self._by_name[name]

    def get(self, name: str) -> int:
        return self._values[name]

    def set(self, name: str, value: int) -> None:
        reg = self._by_name[name]
        self._values[name] = value & ((1 << (8 * reg.width)) - 1)

    def update(self, name: str, set_bits: int = 0, clear_bits: int = 0) -> None:
        self._values[name] = (self._values[name] & ~clear_bits) | set_bits

    def reset(self) -> None:
        self._values = {r.name: r.reset for r in self.table}

    def _locate(self, offset: int, size: int) -> tuple[Register, int] | None:
        """(register, bit shift of the access within it) or None for unimplemented space."""
        if size not in (4, 8) or offset % size:
            raise ValueError(f"VT-d register access of {size} bytes at {offset:#x} is invalid")
        reg = self._by_offset.get(offset)
        if reg is not None and (size <= reg.width):
            return reg, 0
        reg = self._hi_half.get(offset)
        if reg is not None and size == 4:
            return reg, 32
        return None

    def read(self, offset: int, size: int = 4) -> int:
        loc = self._locate(offset, size)
        if loc is None:
            return 0
        reg, shift = loc
        if reg.name == "GCMD_REG":
            return 0  # write-only
        return (self._values[reg.name] >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, value: int, size: int = 4) -> Register | None:
        loc = self._locate(offset, size)
        if loc is None:
            return None
        reg, shift = loc
        span = ((1 << (8 * size)) - 1) << shift
        value = (value << shift) & span
        writable = reg.writable & span
        old = self._values[reg.name]
        new = (old & ~writable) | (value & writable)
        new &= ~(value & reg.rw1c & span)
        self._values[reg.name] = new
        return reg
