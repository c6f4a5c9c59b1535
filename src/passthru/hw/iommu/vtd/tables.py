"""Raw VT-d table writing and register programming, for tests, tools and attack scenarios.

What it is: the smallest software that puts VT-d structures into host memory in the spec's
binary layout (root/context tables 9.1/9.3, second-level tables 9.8, IRTEs 9.10/9.11) and
sets a unit's registers (RTADDR + SRTP + TE, IQA + QIE, IRTA + SIRTP + IRE), with no policy
and *no invalidation*: what a hardware test (or a buggy or hostile driver) does when it pokes
tables directly. The host's real driver, with domains, superpage selection, invalidation and
flush queues, is ``passthru.hv.iommu_driver``; this module keeps ``hw`` tests independent of it.

Left out: everything a driver decides (domain ids, freeing, choosing page sizes).
"""

from __future__ import annotations

from passthru.hw.frames import FrameAllocator
from passthru.hw.iommu.vtd import regs as R
from passthru.hw.iommu.vtd.entries import (
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    AddressWidth,
    ContextEntry,
    Irte,
    RootEntry,
    TranslationType,
    level_shift,
    slpte,
)
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory

_LEVEL_OF = {PAGE_4K: 1, PAGE_2M: 2, PAGE_1G: 3}


class TableWriter:
    """Writes root, context, second-level and IRT entries into ``memory``."""

    def __init__(self, memory: HostMemory, frames: FrameAllocator) -> None:
        self.memory = memory
        self.frames = frames
        self.root = self.alloc_page()
        self.context_tables: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"TableWriter(root={self.root:#x}, buses={sorted(self.context_tables)})"

    def alloc_page(self, size: int = PAGE_4K) -> int:
        addr = self.frames.alloc(size)
        self.memory.fill(addr, size, 0)
        return addr

    def write_entry(self, addr: int, lo: int, hi: int) -> None:
        """A 128-bit entry, upper quadword first (the present bit is in the lower one)."""
        self.memory.write_u64(addr + 8, hi)
        self.memory.write_u64(addr, lo)

    def set_root(self, bus: int, ctp: int | None = None, *, present: bool = True) -> int:
        """Write root entry ``bus`` (allocating its context table); returns the table address."""
        if ctp is None:
            ctp = self.context_tables.get(bus) or self.alloc_page()
        self.context_tables[bus] = ctp
        e = RootEntry.make(ctp, present)
        self.write_entry(self.root + bus * 16, e.lo, e.hi)
        return ctp

    def context_addr(self, source_id: int) -> int:
        bus = (source_id >> 8) & 0xFF
        ctp = self.context_tables.get(bus)
        if ctp is None:
            ctp = self.set_root(bus)
        return ctp + (source_id & 0xFF) * 16

    def set_context(
        self,
        source_id: int,
        *,
        did: int,
        slptptr: int = 0,
        aw: int = AddressWidth.AGAW_48,
        tt: int = TranslationType.MULTI_LEVEL,
        fpd: bool = False,
        present: bool = True,
    ) -> int:
        """Write the context entry of ``source_id``; returns its address."""
        addr = self.context_addr(source_id)
        e = ContextEntry.make(did=did, aw=aw, slptptr=slptptr, tt=tt, fpd=fpd, present=present)
        self.write_entry(addr, e.lo, e.hi)
        return addr

    def pte_addr(self, pgd: int, levels: int, iova: int, level: int, *, create: bool = True) -> int:
        """Address of the level-``level`` entry for ``iova``, creating missing tables."""
        table = pgd
        for lv in range(levels, level, -1):
            slot = table + ((iova >> level_shift(lv)) & 0x1FF) * 8
            pte = self.memory.read_u64(slot)
            if not pte & 3:
                if not create:
                    raise KeyError(f"no level-{lv - 1} table for iova {iova:#x}")
                sub = self.alloc_page()
                self.memory.write_u64(slot, slpte(sub))
                pte = slpte(sub)
            table = pte & 0x000F_FFFF_FFFF_F000
        return table + ((iova >> level_shift(level)) & 0x1FF) * 8

    def map(
        self,
        pgd: int,
        levels: int,
        iova: int,
        hpa: int,
        page_size: int = PAGE_4K,
        *,
        read: bool = True,
        write: bool = True,
    ) -> int:
        """Write one leaf of ``page_size`` (4 KiB, 2 MiB or 1 GiB); returns its address."""
        level = _LEVEL_OF[page_size]
        slot = self.pte_addr(pgd, levels, iova, level)
        self.memory.write_u64(slot, slpte(hpa, read=read, write=write, ps=level > 1))
        return slot

    def set_irte(self, table: int, index: int, irte: Irte, *, eime: bool = True) -> int:
        lo, hi = irte.encode(eime=eime)
        addr = table + index * 16
        self.write_entry(addr, lo, hi)
        return addr


def enable_dma_remapping(unit: DmarUnit, root_table: int) -> None:
    """RTADDR, GCMD.SRTP, then GCMD.TE (spec 10.4.4 sequence, one bit per write)."""
    unit.write_reg(R.RTADDR_REG, root_table, 8)
    gcmd = _persistent(unit)
    unit.write_reg(R.GCMD_REG, gcmd | R.Gcmd.SRTP)
    unit.write_reg(R.GCMD_REG, gcmd | R.Gcmd.TE)


def enable_qi(unit: DmarUnit, queue: int, qs: int = 0) -> None:
    """IQT = 0, IQA = queue | QS, GCMD.QIE (Linux __dmar_enable_qi)."""
    unit.write_reg(R.IQT_REG, 0, 8)
    unit.write_reg(R.IQA_REG, queue | qs, 8)
    unit.write_reg(R.GCMD_REG, _persistent(unit) | R.Gcmd.QIE)


def enable_ir(
    unit: DmarUnit, table: int, entries: int, *, eime: bool = True, cfi: bool = False
) -> None:
    """IRTA, GCMD.SIRTP, GCMD.IRE, and GCMD.CFI as asked (Linux iommu_set_irq_remapping)."""
    size = entries.bit_length() - 2  # IRTA.S: 2^(S+1) entries
    unit.write_reg(R.IRTA_REG, table | (R.IRTA_EIME if eime else 0) | size, 8)
    gcmd = _persistent(unit)
    unit.write_reg(R.GCMD_REG, gcmd | R.Gcmd.SIRTP)
    gcmd |= R.Gcmd.IRE | (R.Gcmd.CFI if cfi else 0)
    unit.write_reg(R.GCMD_REG, gcmd)


def _persistent(unit: DmarUnit) -> int:
    """GCMD bits to keep set, read back from GSTS (one-shot status bits dropped)."""
    gsts = unit.read_reg(R.GSTS_REG)
    keep = R.Gsts.TES | R.Gsts.QIES | R.Gsts.IRES | R.Gsts.CFIS | R.Gsts.AFLS
    return gsts & keep  # GSTS and GCMD share bit positions
