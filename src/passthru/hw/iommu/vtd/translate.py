"""VT-d DMA remapping in legacy mode: the translation of one request (Intel VT-d spec ch. 3).

What is modelled: a DMA request (source-id = PCI requester id bus:dev.fn, input address,
read/write) is translated the way spec 3.4.2/3.4.3 and 3.6/3.7 describe and QEMU's
``vtd_do_iommu_translate`` implements:

1. IOTLB hit (tagged by the domain id from the context cache): the cached ``Translation``;
2. else the context cache, or a walk from host memory: root table at the RTADDR latched by
   GCMD.SRTP (256 x 16-byte root entries indexed by bus), context table (256 x 16-byte
   context entries indexed by devfn), with the present, reserved-bit, TT and AW checks;
3. TT=pass-through (needs ECAP.PT): the output address is the input address;
   TT=multi-level: a walk of the 3-level (AW=39) or 4-level (AW=48) second-level table from
   SLPTPTR, leaves at level 1 (4 KiB), level 2 with PS (2 MiB) or level 3 with PS (1 GiB) when
   CAP.SLLPS allows them; R/W accumulate (AND) over the levels; the result fills the IOTLB.

Every walk reads the tables from ``HostMemory`` again, so a table changed in memory changes
translation at once for uncached entries and after the matching invalidation for cached ones.
Only successful walks are cached (CAP.CM=0); pass-through results are not put in the IOTLB.
A ``Translation`` describes the whole page: ``address(iova)`` gives the byte's host address.

A failed translation returns a ``FaultRecord`` (never raises) and logs it in the fault
recording registers; nothing is read or written for it, and callers (the fabric, device
models, ``DmarUnit.dma_read``/``dma_write``) must not touch memory either. Reasons: 0x1/0x2
root/context entry not present, 0x3 bad TT or AW, 0x4 beyond 2^min(MGAW, AW), 0x5/0x6 write
or read where a level lacks W/R - which includes a *not-present* SL entry (R=W=0), as in QEMU
and as Linux reports it ("PTE Read access is not set") -, 0x7 a paging entry that cannot be
read (pointer outside host memory), 0x8/0x9 root/context table unreadable, 0xA/0xB/0xC
reserved bits in a root/context/paging entry, 0xD a translated request blocked by TT, 0xE an
output address inside the interrupt range (spec 3.14). An *input* address in the MSI window
0xFEEx_xxxx is an interrupt request, not DMA: the caller routes it to interrupt remapping.
With GSTS.TES clear, requests are not translated (an identity ``Translation`` with
``domain_id`` None).

Left out: scalable mode (PASID tables, first-level and nested translation), 5-level tables,
ATS (device-TLB, translation requests, translated requests - the latter are always blocked
with 0xD), snoop/memory-type attributes (SNP, EMT, IPAT), the X bit and execute requests,
A/D bits, zero-length reads, and the paging-structure caches.
"""

from __future__ import annotations

from typing import Final

from passthru.hw.iommu.vtd.entries import (
    CONTEXT_ENTRY_FPD,
    CONTEXT_ENTRY_P,
    MSI_WINDOW_BASE,
    MSI_WINDOW_LAST,
    PAGE_SIZE,
    ROOT_ENTRY_CTP,
    ROOT_ENTRY_P,
    AddressWidth,
    ContextEntry,
    SlPte,
    TranslationType,
    context_entry_rsvd,
    root_entry_rsvd,
    sl_addr_mask,
    slpte_rsvd_mask,
)
from passthru.hw.iommu.vtd.faults import FaultReason, FaultRecord, FaultRecorder
from passthru.hw.iommu.vtd.iotlb import (
    LEVEL_SHIFT,
    CachedContext,
    ContextCache,
    Iotlb,
    Translation,
)
from passthru.hw.memory import HostMemory

_R: Final = int(SlPte.R)
_W: Final = int(SlPte.W)
_PS: Final = int(SlPte.PS)
_PAGE_MASK: Final = ~(PAGE_SIZE - 1)
_LEVEL_STEP: Final = 1 << LEVEL_SHIFT  # IOTLB key base of level n + 1 minus that of level n

__all__ = ["DmaRemapper", "Translation"]


class DmaRemapper:
    """The DMA-remapping half of a unit: context lookup, SL walk, IOTLB, fault logging.

    The unit (``unit.py``) owns the registers and sets ``enabled`` (GSTS.TES) and
    ``root_table`` (the RTADDR latched by SRTP).
    """

    def __init__(
        self,
        memory: HostMemory,
        recorder: FaultRecorder,
        *,
        iotlb: Iotlb,
        context_cache: ContextCache,
        haw: int = 48,
        mgaw: int = 48,
        agaws: frozenset[int] = frozenset({AddressWidth.AGAW_39, AddressWidth.AGAW_48}),
        large_2m: bool = True,
        large_1g: bool = True,
        pass_through: bool = True,
    ) -> None:
        self.memory = memory
        self.recorder = recorder
        self.iotlb = iotlb
        self.context_cache = context_cache
        self.haw = haw
        self.mgaw = mgaw
        self.agaws = agaws
        self.large_2m = large_2m
        self.large_1g = large_1g
        self.pass_through = pass_through
        self.enabled = False
        self.root_table = 0
        self._addr_mask = sl_addr_mask(haw)
        self._root_rsvd = root_entry_rsvd(haw)
        self._ctx_rsvd = context_entry_rsvd(haw)
        # [level][large] reserved masks, QEMU vtd_spte_rsvd / vtd_spte_rsvd_large
        self._rsvd = [(0, 0)] + [
            (slpte_rsvd_mask(lv, False, haw), slpte_rsvd_mask(lv, True, haw)) for lv in (1, 2, 3, 4)
        ]
        # hot-path shortcuts (these dicts are cleared in place, never replaced)
        self._tlb = iotlb.entries
        self._fast_get = context_cache.fast.get
        # work counters for the cost model
        self.walks = 0  # second-level walks started (IOTLB misses)
        self.walk_reads = 0  # 8-byte paging entries read by walks
        self.context_walks = 0  # context-cache misses (root + context entry reads)
        self.faults = 0

    def __repr__(self) -> str:
        return (
            f"DmaRemapper(enabled={self.enabled}, rta={self.root_table:#x}, "
            f"walks={self.walks}, faults={self.faults})"
        )

    # ------------------------------------------------------------------ the hot path
    def translate(
        self, source_id: int, iova: int, is_write: bool = False
    ) -> Translation | FaultRecord:
        """Translate an untranslated DMA request; a ``Translation`` or a ``FaultRecord``.

        The IOTLB-hit path: one probe of the context cache's source-id index (empty while
        translation is off), one IOTLB probe per cached page size, a recency update and the
        permission check; it allocates nothing and counts nothing (a counter costs ~8% of a
        hit: hits = requests - ``walks`` - faults - pass-through requests). Anything else takes
        the slow path.
        """
        kb = self._fast_get(source_id)
        if kb is not None:
            tlb = self._tlb
            key = kb | (iova >> 12)
            t = tlb.pop(key, None)
            if t is None and self.iotlb.large_entries:
                key = (kb + _LEVEL_STEP) | (iova >> 21)
                t = tlb.pop(key, None)
                if t is None:
                    key = (kb + 2 * _LEVEL_STEP) | (iova >> 30)
                    t = tlb.pop(key, None)
            if t is not None:
                tlb[key] = t  # LRU: now the most recently used
                if t.writable if is_write else t.readable:
                    return t
            else:
                # Every page size was probed: the slow path need not probe the IOTLB again.
                return self._translate_slow(source_id, iova, is_write, iotlb_missed=True)
        return self._translate_slow(source_id, iova, is_write)

    # ------------------------------------------------------------------ the slow path
    def _translate_slow(
        self, source_id: int, iova: int, is_write: bool, iotlb_missed: bool = False
    ) -> Translation | FaultRecord:
        if not self.enabled:
            page = iova & _PAGE_MASK  # GSTS.TES=0: DMA is not remapped (spec 3.1)
            return Translation(page, PAGE_SIZE, True, True, None, page)
        cc = self.context_cache.lookup(source_id)
        if cc is None:
            got = self._load_context(source_id, iova, is_write)
            if isinstance(got, FaultRecord):
                return got
            cc = got
        if cc.tt == TranslationType.PASS_THROUGH:
            page = iova & _PAGE_MASK  # spec 3.9 / QEMU vtd_dev_pt_enabled: identity
            return Translation(page, PAGE_SIZE, True, True, cc.did, page)
        if iotlb_missed:
            self.iotlb.misses += 1
            t = None
        else:
            t = self.iotlb.lookup(cc.did, iova)
        if t is not None:
            if t.writable if is_write else t.readable:
                return t
            # QEMU vtd_do_iommu_translate: cached access rights deny the request
            reason = FaultReason.WRITE if is_write else FaultReason.READ
            return self.fault(reason, source_id, iova, is_write, cc.fpd)
        return self._walk(cc, source_id, iova, is_write)

    def fault(
        self, reason: FaultReason, source_id: int, iova: int, is_write: bool, fpd: bool = False
    ) -> FaultRecord:
        fault = FaultRecord(reason, source_id, iova, is_write)
        self.faults += 1
        self.recorder.record(fault, fpd=fpd)
        return fault

    def read_context_entry(self, source_id: int) -> ContextEntry | FaultReason:
        """Root-entry and context-entry lookup from memory; QEMU vtd_dev_to_context_entry."""
        read = self.memory.read_u64
        bus, devfn = (source_id >> 8) & 0xFF, source_id & 0xFF
        try:
            root_lo = read(self.root_table + bus * 16)
            root_hi = read(self.root_table + bus * 16 + 8)
        except IndexError:
            return FaultReason.ROOT_TABLE_INV
        if not root_lo & ROOT_ENTRY_P:
            return FaultReason.ROOT_ENTRY_P
        if root_lo & self._root_rsvd[0] or root_hi & self._root_rsvd[1]:
            return FaultReason.ROOT_ENTRY_RSVD
        ctx = (root_lo & ROOT_ENTRY_CTP) + devfn * 16
        try:
            return ContextEntry(read(ctx), read(ctx + 8))
        except IndexError:
            return FaultReason.CONTEXT_TABLE_INV

    def check_context_entry(self, ce: ContextEntry) -> FaultReason | None:
        """Present, reserved, AW and TT checks of a legacy context entry (spec 9.3)."""
        if not ce.lo & CONTEXT_ENTRY_P:
            return FaultReason.CONTEXT_ENTRY_P
        if ce.lo & self._ctx_rsvd[0] or ce.hi & self._ctx_rsvd[1]:
            return FaultReason.CONTEXT_ENTRY_RSVD
        if ce.aw not in self.agaws or ce.aw > AddressWidth.AGAW_48:
            return FaultReason.CONTEXT_ENTRY_INV  # QEMU vtd_is_level_supported
        tt = ce.tt
        if tt == TranslationType.MULTI_LEVEL:
            return None
        if tt == TranslationType.PASS_THROUGH and self.pass_through:
            return None
        return FaultReason.CONTEXT_ENTRY_INV  # QEMU vtd_ce_type_check (no ECAP.DT/PT)

    def _load_context(
        self, source_id: int, iova: int = 0, is_write: bool = False
    ) -> CachedContext | FaultRecord:
        self.context_walks += 1
        got = self.read_context_entry(source_id)
        # The fault records the request's own address and type (spec 7.1.3, FRCD.FI/T).
        if isinstance(got, FaultReason):
            return self.fault(got, source_id, iova, is_write)
        reason = self.check_context_entry(got)
        if reason is not None:
            return self.fault(reason, source_id, iova, is_write, bool(got.lo & CONTEXT_ENTRY_FPD))
        aw = AddressWidth(got.aw)
        cc = CachedContext(source_id, got, aw.levels, min(aw.bits, self.mgaw))
        self.context_cache.insert(cc)
        return cc

    def _walk(
        self, cc: CachedContext, source_id: int, iova: int, is_write: bool
    ) -> Translation | FaultRecord:
        """Second-level walk from memory; QEMU vtd_iova_to_slpte."""
        if iova >= cc.limit or iova < 0:
            return self.fault(FaultReason.ADDR_BEYOND_MGAW, source_id, iova, is_write, cc.fpd)
        self.walks += 1
        read = self.memory.read_u64
        rsvd = self._rsvd
        addr_mask = self._addr_mask
        need = _W if is_write else _R
        perms = _R | _W
        addr = cc.slptptr
        level = cc.levels
        while True:
            shift = 12 + 9 * (level - 1)
            try:
                pte = read(addr + ((iova >> shift) & 0x1FF) * 8)
            except IndexError:
                return self.fault(FaultReason.PAGING_ENTRY_INV, source_id, iova, is_write, cc.fpd)
            self.walk_reads += 1
            perms &= pte
            if not pte & need:  # R/W clear: not present or not permitted
                reason = FaultReason.WRITE if is_write else FaultReason.READ
                return self.fault(reason, source_id, iova, is_write, cc.fpd)
            large = bool(pte & _PS) and (level == 2 or level == 3)
            if pte & rsvd[level][large] or (
                large and not (self.large_2m if level == 2 else self.large_1g)
            ):
                return self.fault(FaultReason.PAGING_ENTRY_RSVD, source_id, iova, is_write, cc.fpd)
            if level == 1 or large:
                break
            addr = pte & addr_mask
            level -= 1
        size = 1 << shift
        hpa = pte & addr_mask & ~(size - 1)
        t = Translation(hpa, size, bool(perms & _R), bool(perms & _W), cc.did, iova & ~(size - 1))
        if hpa <= MSI_WINDOW_LAST and hpa + size > MSI_WINDOW_BASE:
            out = hpa | (iova & (size - 1))
            if MSI_WINDOW_BASE <= out <= MSI_WINDOW_LAST:
                # spec 3.14: an output address in the interrupt range is blocked
                return self.fault(FaultReason.INTERRUPT_ADDR, source_id, iova, is_write, cc.fpd)
            return t  # not cached, so every access to the page gets this check
        self.iotlb.insert(cc.did, level, t)
        return t

    def translated_request(self, source_id: int, addr: int, is_write: bool = False) -> FaultRecord:
        """A translated (AT=10b) request: blocked by every TT this model supports (0xD)."""
        cc = self.context_cache.lookup(source_id)
        if cc is None:
            got = self._load_context(source_id, addr, is_write)
            if isinstance(got, FaultRecord):
                return got
            cc = got
        return self.fault(FaultReason.CONTEXT_ENTRY_TT, source_id, addr, is_write, cc.fpd)
