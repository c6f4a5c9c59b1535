"""One VT-d DMA-remapping hardware unit (DRHD): registers, invalidation, DMA and interrupts.

What is modelled (Intel VT-d spec rev 3.x-5.x, legacy translation mode):

- the register interface of ch. 10 (layout in ``regs.py``) with its behaviour: GCMD commands
  reflected in GSTS (TE, SRTP latching RTADDR, QIE, IRE, SIRTP latching IRTA, CFI, WBF), 10.4.4;
- register-based invalidation (6.5.1): CCMD_REG (global / domain / device with FM) and
  IOTLB_REG + IVA_REG (global / domain / page-selective with AM), reporting the actual
  granularity in CAIG/IAIG; ignored while queued invalidation is enabled (6.5.2);
- queued invalidation (6.5.2): a ring of 128-bit descriptors in host memory at IQA (2^(QS+8)
  entries); writing IQT makes the unit execute descriptors from IQH up to IQT: context-cache
  (type 1), IOTLB (2), interrupt entry cache (4) and invalidation wait (5, with status write
  and ICS.IWC). An invalid descriptor stops the queue with FSTS.IQE and IQH left on it
  (6.5.2.10, QEMU ``vtd_process_inv_desc``);
- DMA remapping (``translate.py``), interrupt remapping (``intremap.py``), fault logging
  (``faults.py``) and the caches (``iotlb.py``).

``save_state``/``load_state`` capture registers, latched pointers and cache contents (for
migration and record/replay); host memory is saved on its own.

Work happens synchronously on the register write that triggers it (the model has no
hardware latency here; the cost model charges time). ``translate`` is the hot path: an
instance attribute bound to ``DmaRemapper.translate`` so a hit costs one call.

Left out: scalable mode (RTADDR.TTM=01 is refused), 256-bit descriptors, device-TLB and PASID
descriptors (types 3, 6, 7 raise IQE), advanced fault logging, protected memory regions,
write-buffer flushing semantics (there is no write buffer: WBFS completes at once),
invalidation completion/time-out errors (ICE/ITE), the page request queue, performance
monitoring and power management.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from passthru.hw.iommu.vtd import regs as R
from passthru.hw.iommu.vtd.entries import (
    INV_DESC_CC_RSVD,
    INV_DESC_G_SHIFT,
    INV_DESC_IEC_G_INDEX,
    INV_DESC_IEC_IIDX_SHIFT,
    INV_DESC_IEC_IM_SHIFT,
    INV_DESC_IEC_RSVD,
    INV_DESC_IOTLB_RSVD,
    INV_DESC_TYPE,
    INV_DESC_WAIT_DATA_SHIFT,
    INV_DESC_WAIT_IF,
    INV_DESC_WAIT_RSVD,
    INV_DESC_WAIT_SW,
    MSI_WINDOW_BASE,
    MSI_WINDOW_LAST,
    PAGE_1G,
    PAGE_2M,
    AddressWidth,
    ContextGranularity,
    InvDescType,
    IotlbGranularity,
    Irte,
)
from passthru.hw.iommu.vtd.faults import FaultReason, FaultRecord, FaultRecorder
from passthru.hw.iommu.vtd.intremap import InterruptRemapper, InterruptResult
from passthru.hw.iommu.vtd.iotlb import CachedContext, ContextCache, Iotlb, Translation
from passthru.hw.iommu.vtd.translate import DmaRemapper
from passthru.hw.memory import HostMemory

INVALIDATION_KINDS: Final = (
    "cc_global",
    "cc_domain",
    "cc_device",
    "iotlb_global",
    "iotlb_domain",
    "iotlb_page",
    "iec_global",
    "iec_index",
    "wait",
)


@dataclass(frozen=True, slots=True)
class DmarUnitState:
    """Everything that decides a unit's future behaviour: registers, latched pointers, the
    fault recorder's index and the caches' contents (in recency order). Work counters are not
    state. Host memory is saved separately (``HostMemory.save_state``)."""

    registers: tuple[tuple[str, int], ...]
    dma_enabled: bool
    root_table: int
    ir: tuple[bool, bool, int, int, bool]  # enabled, cfis, table, entries, eime
    next_fault_index: int
    iotlb: tuple[tuple[int, Translation], ...]
    context_cache: tuple[tuple[int, CachedContext], ...]
    interrupt_entry_cache: tuple[tuple[int, tuple[Irte, int, int]], ...]


@dataclass(frozen=True)
class NoMemory:
    """A translation (identity or not) whose output address has no host memory behind it.

    Not a remapping fault: the unit translated the request, but nothing claims the address,
    so the root complex completes it as an Unsupported Request (PCIe base spec 2.3.1).
    """

    address: int  # the first host-physical address without memory


class DmarUnit:
    """A VT-d remapping unit over ``memory``; capabilities are constructor options.

    Defaults give a unit like QEMU's ``intel-iommu,aw-bits=48,intremap=on,x-pasid-mode=off``
    with 2 MiB and 1 GiB pages, pass-through, posted interrupts and 4 fault recording registers.
    """

    def __init__(
        self,
        memory: HostMemory,
        *,
        name: str = "dmar0",
        haw: int = 48,
        mgaw: int = 48,
        address_widths: tuple[int, ...] = (39, 48),
        nfr: int = 4,
        iotlb_capacity: int = 512,
        context_cache_capacity: int = 256,
        large_pages: tuple[int, ...] = (PAGE_2M, PAGE_1G),
        pass_through: bool = True,
        queued_invalidation: bool = True,
        interrupt_remapping: bool = True,
        extended_interrupt_mode: bool = True,
        posted_interrupts: bool = True,
        page_selective_invalidation: bool = True,
        mamv: int = 18,
        fault_event_sink: Callable[[int, int], None] | None = None,
    ) -> None:
        agaws = frozenset(AddressWidth.from_bits(b) for b in address_widths)
        if max(address_widths) > mgaw or mgaw > 57:
            raise ValueError(f"MGAW {mgaw} must cover the address widths {address_widths}")
        if AddressWidth.AGAW_57 in agaws:
            raise ValueError("5-level (57-bit) second-level tables are not modelled")
        self.name = name
        self.memory = memory
        self.haw = haw
        self.mgaw = mgaw
        self.mamv = mamv
        cap = (
            (6 << R.CAP_ND_SHIFT)  # 64K domains (QEMU VTD_CAP_ND)
            | sum(1 << aw for aw in agaws) << R.CAP_SAGAW_SHIFT
            | ((mgaw - 1) << R.CAP_MGAW_SHIFT)
            | ((R.FRCD_REG_OFFSET >> 4) << R.CAP_FRO_SHIFT)
            | ((nfr - 1) << R.CAP_NFR_SHIFT)
            | ((mamv & 0x3F) << R.CAP_MAMV_SHIFT)
            | (R.Cap.SLLPS_2M if PAGE_2M in large_pages else 0)
            | (R.Cap.SLLPS_1G if PAGE_1G in large_pages else 0)
            | (R.Cap.PSI if page_selective_invalidation else 0)
            | (R.Cap.PI if posted_interrupts and interrupt_remapping else 0)
            | R.Cap.DRD
            | R.Cap.DWD
        )
        ecap = (
            R.Ecap.C
            | (R.Ecap.QI if queued_invalidation or interrupt_remapping else 0)  # IR needs QI
            | (R.Ecap.IR if interrupt_remapping else 0)
            | (R.Ecap.EIM if interrupt_remapping and extended_interrupt_mode else 0)
            | (R.Ecap.PT if pass_through else 0)
            | ((R.IOTLB_REG_OFFSET >> 4) << R.ECAP_IRO_SHIFT)
            | (0xF << R.ECAP_MHMV_SHIFT)
        )
        self.cap = int(cap)
        self.ecap = int(ecap)
        self.regs = R.RegisterFile(R.register_table(self.cap, self.ecap, nfr))
        self.faults = FaultRecorder(self.regs, nfr, fault_event_sink)
        self.iotlb = Iotlb(iotlb_capacity)
        self.context_cache = ContextCache(context_cache_capacity)
        self.dma = DmaRemapper(
            memory,
            self.faults,
            iotlb=self.iotlb,
            context_cache=self.context_cache,
            haw=haw,
            mgaw=mgaw,
            agaws=agaws,
            large_2m=PAGE_2M in large_pages,
            large_1g=PAGE_1G in large_pages,
            pass_through=pass_through,
        )
        self.ir = InterruptRemapper(memory, self.faults, posted_supported=bool(self.cap & R.Cap.PI))
        # The hot path: one bound-method call, no wrapper frame.
        self.translate = self.dma.translate
        self.invalidations = dict.fromkeys(INVALIDATION_KINDS, 0)
        self.descriptors = 0  # queued descriptors executed
        self.ignored_register_invalidations = 0  # CCMD/IOTLB_REG writes while QI was on
        self.invalidation_events = 0
        self._frcd_hi = {f"FRCD_REG{i}_HI" for i in range(nfr)}

    def __repr__(self) -> str:
        gsts = R.Gsts(self.regs.get("GSTS_REG"))
        return f"DmarUnit({self.name}, gsts={gsts!r}, {self.iotlb!r}, {self.faults!r})"

    # ------------------------------------------------------------------ capabilities
    def has(self, flag: R.Ecap | R.Cap) -> bool:
        """Whether the unit reports ``flag`` (an ``Ecap`` or ``Cap`` bit)."""
        return bool((self.ecap if isinstance(flag, R.Ecap) else self.cap) & flag)

    @property
    def nfr(self) -> int:
        return self.faults.nfr

    # ------------------------------------------------------------------ software view
    def read_reg(self, offset: int, size: int = 4) -> int:
        """MMIO read of a 4- or 8-byte register at ``offset``."""
        return self.regs.read(offset, size)

    def write_reg(self, offset: int, value: int, size: int = 4) -> None:
        """MMIO write; the unit acts on it at once (command, invalidation, queue tail...)."""
        reg = self.regs.write(offset, value, size)
        if reg is None:
            return
        name = reg.name
        if name == "GCMD_REG":
            self._gcmd()
        elif name == "CCMD_REG":
            self._ccmd()
        elif name == "IOTLB_REG":
            self._iotlb_reg()
        elif name == "IQT_REG":
            self._iqt()
        elif name in self._frcd_hi:
            self.faults.update_ppf()
        elif name == "FECTL_REG":
            if not self.regs.get("FECTL_REG") & R.Fectl.IM:
                self.faults.unmasked()
        elif name == "IECTL_REG":
            if not self.regs.get("IECTL_REG") & R.Fectl.IM and (
                self.regs.get("IECTL_REG") & R.Fectl.IP
            ):
                self.regs.update("IECTL_REG", clear_bits=R.Fectl.IP)
                self.invalidation_events += 1

    def reg(self, name: str) -> int:
        """Hardware view of a register by its spec name (e.g. ``"GSTS_REG"``)."""
        return self.regs.get(name)

    def reset(self) -> None:
        """Power-on reset: registers to reset values, caches empty, remapping off."""
        self.regs.reset()
        self.faults.reset()
        self.iotlb.invalidate_all()
        self.context_cache.invalidate_all()
        self.ir.invalidate_all()
        self.dma.enabled = False
        self.context_cache.set_fast(False)
        self.dma.root_table = 0
        self.ir.enabled = self.ir.cfis = self.ir.eime = False
        self.ir.table = self.ir.entries = 0

    def save_state(self) -> DmarUnitState:
        ir = self.ir
        return DmarUnitState(
            registers=tuple((r.name, self.regs.get(r.name)) for r in self.regs),
            dma_enabled=self.dma.enabled,
            root_table=self.dma.root_table,
            ir=(ir.enabled, ir.cfis, ir.table, ir.entries, ir.eime),
            next_fault_index=self.faults.next_index,
            iotlb=tuple(self.iotlb.entries.items()),
            context_cache=tuple(self.context_cache.entries.items()),
            interrupt_entry_cache=tuple(ir.cache.items()),
        )

    def load_state(self, state: DmarUnitState) -> None:
        """Restore a state saved from a unit with the same capabilities."""
        names = {r.name for r in self.regs}
        if {n for n, _ in state.registers} != names:
            raise ValueError(f"{self.name}: saved registers do not match this unit's (NFR?)")
        for name, value in state.registers:
            self.regs.set(name, value)
        self.dma.enabled = state.dma_enabled
        self.dma.root_table = state.root_table
        ir = self.ir
        ir.enabled, ir.cfis, ir.table, ir.entries, ir.eime = state.ir
        ir.cache = dict(state.interrupt_entry_cache)
        self.faults.next_index = state.next_fault_index
        self.iotlb.restore(state.iotlb)
        self.context_cache.fast_enabled = state.dma_enabled
        self.context_cache.restore(state.context_cache)

    # ------------------------------------------------------------------ GCMD (10.4.4)
    def _gcmd(self) -> None:
        regs = self.regs
        cmd = regs.get("GCMD_REG")
        gsts = regs.get("GSTS_REG")
        G, S = R.Gcmd, R.Gsts
        te = bool(cmd & G.TE)
        if te != bool(gsts & S.TES):
            gsts ^= S.TES
            self.dma.enabled = te
            self.context_cache.set_fast(te)
        if cmd & G.SRTP:  # QEMU vtd_handle_gcmd_srtp: latch RTADDR
            rtaddr = regs.get("RTADDR_REG")
            if (rtaddr >> R.RTADDR_TTM_SHIFT) & 3:
                raise ValueError(
                    f"{self.name}: RTADDR_REG {rtaddr:#x} selects a translation table mode "
                    "other than legacy; only legacy mode is modelled"
                )
            self.dma.root_table = rtaddr & ~0xFFF
            gsts |= S.RTPS
        if self.ecap & R.Ecap.QI:
            qie = bool(cmd & G.QIE)
            if qie != bool(gsts & S.QIES):
                gsts ^= S.QIES
                if not qie:
                    regs.set("IQH_REG", 0)  # 10.4.22: IQH resets when QI is disabled
        if self.ecap & R.Ecap.IR:
            if cmd & G.SIRTP:  # QEMU vtd_handle_gcmd_sirtp: latch IRTA
                irta = regs.get("IRTA_REG")
                self.ir.table = irta & ~0xFFF
                self.ir.entries = 1 << ((irta & R.IRTA_S_MASK) + 1)
                self.ir.eime = bool(irta & R.IRTA_EIME) and bool(self.ecap & R.Ecap.EIM)
                gsts |= S.IRTPS
            ire = bool(cmd & G.IRE)
            if ire != bool(gsts & S.IRES):
                gsts ^= S.IRES
                self.ir.enabled = ire
            cfi = bool(cmd & G.CFI)
            if cfi != bool(gsts & S.CFIS):
                gsts ^= S.CFIS
                self.ir.cfis = cfi
        gsts &= ~S.WBFS  # WBF: no write buffer, the flush completes at once
        regs.set("GSTS_REG", gsts)

    # ------------------------------------------------------------------ register invalidation
    def _ccmd(self) -> None:
        regs = self.regs
        val = regs.get("CCMD_REG")
        if not val & R.CCMD_ICC:
            return
        val &= ~(R.CCMD_ICC | (3 << R.CCMD_CAIG_SHIFT))
        if regs.get("GSTS_REG") & R.Gsts.QIES:
            self.ignored_register_invalidations += 1  # 6.5.2: not with QI enabled
            regs.set("CCMD_REG", val)
            return
        gran = (val >> R.CCMD_CIRG_SHIFT) & 3
        did = val & 0xFFFF
        sid = (val >> R.CCMD_SID_SHIFT) & 0xFFFF
        fm = (val >> R.CCMD_FM_SHIFT) & 3
        if self._invalidate_context(gran, did, sid, fm):
            val |= gran << R.CCMD_CAIG_SHIFT
        regs.set("CCMD_REG", val)

    def _iotlb_reg(self) -> None:
        regs = self.regs
        val = regs.get("IOTLB_REG")
        if not val & R.IOTLB_IVT:
            return
        val &= ~(R.IOTLB_IVT | (3 << R.IOTLB_IAIG_SHIFT))
        if regs.get("GSTS_REG") & R.Gsts.QIES:
            self.ignored_register_invalidations += 1
            regs.set("IOTLB_REG", val)
            return
        gran = (val >> R.IOTLB_IIRG_SHIFT) & 3
        did = (val >> R.IOTLB_DID_SHIFT) & 0xFFFF
        iva = regs.get("IVA_REG")
        done = self._invalidate_iotlb(gran, did, iva & ~0xFFF, iva & R.IVA_AM_MASK)
        if done:
            val |= done << R.IOTLB_IAIG_SHIFT
        regs.set("IOTLB_REG", val)

    def _invalidate_context(self, gran: int, did: int, sid: int, fm: int) -> bool:
        cc = self.context_cache
        if gran == ContextGranularity.GLOBAL:
            cc.invalidate_all()
            self.invalidations["cc_global"] += 1
        elif gran == ContextGranularity.DOMAIN:
            cc.invalidate_domain(did)
            self.invalidations["cc_domain"] += 1
        elif gran == ContextGranularity.DEVICE:
            cc.invalidate_device(sid, fm)
            self.invalidations["cc_device"] += 1
        else:
            return False
        return True

    def _invalidate_iotlb(self, gran: int, did: int, addr: int, am: int) -> int:
        """Perform an IOTLB invalidation; the granularity actually done, 0 if refused."""
        tlb = self.iotlb
        if gran == IotlbGranularity.PAGE and not self.cap & R.Cap.PSI:
            gran = IotlbGranularity.DOMAIN  # 10.4.8.1: hardware may widen the request
        if gran == IotlbGranularity.GLOBAL:
            tlb.invalidate_all()
            self.invalidations["iotlb_global"] += 1
        elif gran == IotlbGranularity.DOMAIN:
            tlb.invalidate_domain(did)
            self.invalidations["iotlb_domain"] += 1
        elif gran == IotlbGranularity.PAGE:
            if am > self.mamv:
                return 0  # QEMU vtd_process_iotlb_desc / IAIG=0: request refused
            tlb.invalidate_pages(did, addr, am)
            self.invalidations["iotlb_page"] += 1
        else:
            return 0
        return gran

    # ------------------------------------------------------------------ queued invalidation
    def _iqt(self) -> None:
        regs = self.regs
        if not regs.get("GSTS_REG") & R.Gsts.QIES or regs.get("FSTS_REG") & R.Fsts.IQE:
            return
        iqa = regs.get("IQA_REG")
        base = iqa & ~0xFFF
        n = 1 << ((iqa & R.IQA_QS_MASK) + 8)
        head = (regs.get("IQH_REG") & R.IQ_QT_MASK) >> R.IQ_QT_SHIFT
        tail = (regs.get("IQT_REG") & R.IQ_QT_MASK) >> R.IQ_QT_SHIFT
        if tail >= n or iqa & R.IQA_DW:
            regs.update("FSTS_REG", set_bits=R.Fsts.IQE)  # 10.4.23 / 256-bit not modelled
            return
        read = self.memory.read_u64
        while head != tail:
            addr = base + head * 16
            try:
                lo, hi = read(addr), read(addr + 8)
            except IndexError:
                ok = False
            else:
                ok = self._execute(lo, hi)
            if not ok:
                regs.update("FSTS_REG", set_bits=R.Fsts.IQE)  # IQH stays on the bad one
                break
            self.descriptors += 1
            head = (head + 1) % n
            regs.set("IQH_REG", head << R.IQ_QT_SHIFT)

    def _execute(self, lo: int, hi: int) -> bool:
        """Run one 128-bit descriptor; False if it is invalid. QEMU vtd_process_inv_desc."""
        kind = lo & INV_DESC_TYPE
        gran = (lo >> INV_DESC_G_SHIFT) & 3
        if kind == InvDescType.CC:
            if lo & INV_DESC_CC_RSVD[0] or hi & INV_DESC_CC_RSVD[1]:
                return False
            did, sid, fm = (lo >> 16) & 0xFFFF, (lo >> 32) & 0xFFFF, (lo >> 48) & 3
            return self._invalidate_context(gran, did, sid, fm)
        if kind == InvDescType.IOTLB:
            if lo & INV_DESC_IOTLB_RSVD[0] or hi & INV_DESC_IOTLB_RSVD[1]:
                return False
            did = (lo >> 16) & 0xFFFF
            return self._invalidate_iotlb(gran, did, hi & ~0xFFF, hi & 0x3F) != 0
        if kind == InvDescType.IEC:
            if not self.ecap & R.Ecap.IR:
                return False
            if lo & INV_DESC_IEC_RSVD[0] or hi & INV_DESC_IEC_RSVD[1]:
                return False
            if lo & INV_DESC_IEC_G_INDEX:
                index = (lo >> INV_DESC_IEC_IIDX_SHIFT) & 0xFFFF
                self.ir.invalidate_index(index, (lo >> INV_DESC_IEC_IM_SHIFT) & 0x1F)
                self.invalidations["iec_index"] += 1
            else:
                self.ir.invalidate_all()
                self.invalidations["iec_global"] += 1
            return True
        if kind == InvDescType.WAIT:
            if lo & INV_DESC_WAIT_RSVD[0] or hi & INV_DESC_WAIT_RSVD[1]:
                return False
            if lo & INV_DESC_WAIT_SW:
                try:
                    self.memory.write_u32(hi & ~0x3, lo >> INV_DESC_WAIT_DATA_SHIFT)
                except IndexError:
                    return False
            if lo & INV_DESC_WAIT_IF:
                self.regs.update("ICS_REG", set_bits=R.ICS_IWC)
                if self.regs.get("IECTL_REG") & R.Fectl.IM:
                    self.regs.update("IECTL_REG", set_bits=R.Fectl.IP)
                else:
                    self.invalidation_events += 1
            self.invalidations["wait"] += 1
            return True
        return False  # device-TLB, PASID and unknown types: not supported here

    # ------------------------------------------------------------------ requests
    def remap_interrupt(
        self, source_id: int, address: int, data: int
    ) -> InterruptResult | FaultRecord:
        """An interrupt request: a DWORD write of ``data`` to ``address`` in the MSI window."""
        return self.ir.remap(source_id, address, data)

    def translated_request(self, source_id: int, addr: int, is_write: bool = False) -> FaultRecord:
        """A translated (ATS) request: always blocked here (no device-TLB support)."""
        return self.dma.translated_request(source_id, addr, is_write)

    def _map_range(
        self, source_id: int, iova: int, length: int, is_write: bool
    ) -> list[tuple[int, int]] | FaultRecord | NoMemory:
        if iova <= MSI_WINDOW_LAST and iova + max(length, 1) > MSI_WINDOW_BASE:  # any overlap
            if is_write and iova >= MSI_WINDOW_BASE:
                raise ValueError(
                    f"DMA at {iova:#x}+{length:#x} starts in the MSI window: an interrupt "
                    "request, route it to remap_interrupt (spec 3.14)"
                )
            # The interrupt range is not memory: a read of it, or a write that runs into it
            # from below, is blocked and (remapping on) recorded as a read or write fault
            # (spec 3.14; QEMU vtd_do_iommu_translate reports VTD_FR_READ for reads).
            if not self.dma.enabled:
                return NoMemory(max(iova, MSI_WINDOW_BASE))
            reason = FaultReason.WRITE if is_write else FaultReason.READ
            return self.dma.fault(reason, source_id, iova, is_write)
        pieces: list[tuple[int, int]] = []
        pos, end = iova, iova + length
        translate = self.dma.translate
        run_start = run_end = -1  # the physically contiguous run being gathered
        while pos < end:
            t = translate(source_id, pos, is_write)
            if isinstance(t, FaultRecord):
                return t
            mask = t.page_size - 1
            n = min(end, (pos | mask) + 1) - pos
            hpa = t.hpa | (pos & mask)  # Translation.address(), inlined: once per page
            if hpa != run_end:
                if run_start >= 0:
                    pieces.append((run_start, run_end - run_start))
                run_start = hpa
            run_end = hpa + n  # contiguous pages: one memory copy instead of one per page
            pos += n
        if run_start >= 0:
            pieces.append((run_start, run_end - run_start))
        return pieces

    def _beyond_memory(self, pieces: list[tuple[int, int]]) -> NoMemory | None:
        size = self.memory.size
        for a, n in pieces:
            if a + n > size:
                return NoMemory(max(a, size))
        return None

    def _within_one_page(self, source_id: int, iova: int, length: int,
                         is_write: bool) -> int | FaultRecord | NoMemory | None:
        """The HPA of a request that one translation covers (most DMA: a 64-byte SQE, a 4 KiB
        PRP page), its fault, or None for the general path (several pages, the MSI window)."""
        if length <= 0 or not (iova + length <= MSI_WINDOW_BASE or iova > MSI_WINDOW_LAST):
            return None
        t = self.dma.translate(source_id, iova, is_write)
        if isinstance(t, FaultRecord):
            return t
        offset = iova & (t.page_size - 1)
        if offset + length > t.page_size:
            return None  # the first page is translated again below: an IOTLB hit
        hpa = t.hpa | offset
        size = self.memory.size
        return hpa if hpa + length <= size else NoMemory(max(hpa, size))

    def dma_read(self, source_id: int, iova: int, length: int) -> bytes | FaultRecord | NoMemory:
        """Translate every page of the read, then read; a fault reads nothing."""
        one = self._within_one_page(source_id, iova, length, False)
        if isinstance(one, int):
            return self.memory.read(one, length)
        if one is not None:
            return one
        pieces = self._map_range(source_id, iova, length, False)
        if isinstance(pieces, (FaultRecord, NoMemory)):
            return pieces
        missing = self._beyond_memory(pieces)
        if missing is not None:
            return missing
        read = self.memory.read
        return b"".join(read(a, n) for a, n in pieces)

    def dma_write(self, source_id: int, iova: int, data: bytes) -> FaultRecord | NoMemory | None:
        """Translate every page of the write first; on a fault (or no memory) nothing is
        written."""
        one = self._within_one_page(source_id, iova, len(data), True)
        if isinstance(one, int):
            self.memory.write(one, data)
            return None
        if one is not None:
            return one
        pieces = self._map_range(source_id, iova, len(data), True)
        if isinstance(pieces, (FaultRecord, NoMemory)):
            return pieces
        missing = self._beyond_memory(pieces)
        if missing is not None:
            return missing
        view = memoryview(data)
        pos = 0
        for a, n in pieces:
            self.memory.write(a, view[pos : pos + n])
            pos += n
        return None

    # ------------------------------------------------------------------ accounting
    def stats(self) -> dict[str, int]:
        """Work done so far, for the cost model (all counters are monotonic)."""
        d = self.dma
        out = {
            "iotlb_walks": d.walks,
            "walk_reads": d.walk_reads,
            "context_walks": d.context_walks,
            "dma_faults": d.faults,
            "iotlb_evictions": self.iotlb.evictions,
            "interrupt_requests": self.ir.requests,
            "interrupts_posted": self.ir.posted,
            "irte_reads": self.ir.table_reads,
            "ir_faults": self.ir.faults,
            "faults_recorded": self.faults.recorded,
            "faults_dropped": self.faults.dropped_overflow,
            "descriptors": self.descriptors,
        }
        out.update({f"inv_{k}": v for k, v in self.invalidations.items()})
        return out
