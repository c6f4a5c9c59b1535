"""The host's VT-d IOMMU driver: programs a ``DmarUnit`` the way Linux's intel-iommu does.

What is modelled (Linux ``drivers/iommu/intel/{iommu,dmar,irq_remapping}.c`` and
``drivers/iommu/dma-iommu.c``, legacy mode), knowing nothing about VMs:

- bring-up: root table from the frame allocator, RTADDR + GCMD.SRTP, global context-cache and
  IOTLB invalidation, queued invalidation (IQA/IQT, QIE), interrupt remapping (IRTA + SIRTP,
  global IEC flush, IRE, compatibility format blocked by clearing CFI) and finally GCMD.TE
  (``init_dmars``, ``intel_iommu_init_qi``, ``iommu_set_root_entry``, ``intel_setup_irq_remapping``,
  ``iommu_enable_translation``); every GCMD write carries the driver's shadow of the persistent
  bits (``iommu->gcmd``) and waits for GSTS to follow;
- domains with 16-bit ids (0 reserved, as Linux does), second-level tables of 3 levels (AGAW 39)
  or 4 levels (AGAW 48); ``map`` writes leaves of the largest size the alignment of IOVA and
  HPA and the unit's CAP.SLLPS allow (``__domain_mapping``/``hardware_largepage_caps``),
  allocating zeroed table pages with R|W non-leaf entries; ``unmap`` clears leaves (a superpage
  is unmapped whole even when the request covers part of it, like ``intel_iommu_unmap``) and
  frees table pages whose whole span was unmapped (``dma_pte_clear_level``), after the IOTLB
  invalidation;
- invalidation: strict mode issues a page-selective IOTLB invalidation right after each unmap
  with Linux's aligned address mask (``calculate_psi_aligned_address``; domain-selective when
  the mask exceeds CAP.MAMV or PSI is missing). Lazy mode (``iommu.strict=0``, the flush queue
  of ``dma-iommu.c``) queues the range instead; the queue is flushed with one domain-selective
  invalidation per domain (``flush_iotlb_all``) when ``flush()`` is called, when an unmap finds
  it full (``IOVA_FQ_SIZE`` = 256 entries) or when its oldest entry is older than the timeout
  (``IOVA_FQ_TIMEOUT`` = 10 ms) at the next unmap/``poll``. Until then stale IOTLB entries keep
  working, which is exactly the window lazy mode trades for speed. Linux never reuses an IOVA
  still in the flush queue; here callers choose IOVAs, so ``map`` over a queued range flushes
  first to keep that guarantee;
- ``attach`` writes the root entry (allocating the bus's context table) and the context entry
  (TT=pass-through for an identity domain when ECAP.PT, else multi-level), then issues a
  device-selective context-cache invalidation; replacing or clearing a present entry also
  issues a domain-selective IOTLB invalidation for the old domain (``domain_context_clear_one``);
- invalidations go through the invalidation queue with a wait descriptor whose status write the
  driver checks (``qi_submit_sync``), or through CCMD_REG/IOTLB_REG when QI is unavailable;
- interrupt remapping entries: ``alloc_irte`` picks the lowest free index, writes a remapped or
  posted IRTE with SVT=verify SID (SQ=all 16 bits, ``set_msi_sid``), invalidates that index
  (``qi_flush_iec``) and returns the handle; ``msi_message`` is what the device's MSI registers
  get (``fill_msi_msg``: remappable format, SHV, subhandle 0).

Work is counted in ``stats`` (``IommuStats``) so the hypervisor can put a price on it.

Left out: scalable mode, PASIDs, nested/first-level tables, ATS, SVA, dirty tracking, IOVA
allocation (callers pass IOVAs), per-CPU flush queues, RMRR/identity-map quirks, the
device-to-IOMMU matching of DMAR/DRHD scopes (one driver drives one unit), caching-mode
(CAP.CM) flushes on map, and interrupt affinity changes beyond re-allocation.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from passthru.errors import ConfigError, OutOfResources
from passthru.hw.frames import FrameAllocator
from passthru.hw.iommu.vtd import regs as R
from passthru.hw.iommu.vtd.entries import (
    CONTEXT_ENTRY_P,
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    AddressWidth,
    ContextEntry,
    ContextGranularity,
    DeliveryMode,
    IotlbGranularity,
    Irte,
    RootEntry,
    Sq,
    Svt,
    TranslationType,
    cc_inv_desc,
    iec_inv_desc,
    iotlb_inv_desc,
    level_shift,
    msi_remappable_address,
    sl_addr_mask,
    slpte,
    wait_desc,
)
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory

QI_LENGTH = 256  # Linux QI_LENGTH: descriptors in the invalidation queue (IQA.QS = 0)
QI_IN_USE = 1  # Linux enum desc_status
QI_DONE = 2
IOVA_FQ_SIZE = 256  # Linux dma-iommu.c
IOVA_FQ_TIMEOUT_NS = 10_000_000  # 10 ms
INTR_REMAP_TABLE_ENTRIES = 65536  # Linux irq_remapping.h
MAX_AGAW_PFN_WIDTH = 52  # Linux: mask for a flush that must cover everything

_PS = 1 << 7
_RW = 3


class QueuedInvalidationError(RuntimeError):
    """The unit refused an invalidation descriptor (FSTS.IQE): a driver bug, not user error."""


@dataclass
class Domain:
    """An IOMMU domain: one address space (second-level table) shared by attached devices."""

    did: int
    kind: str  # "dma" or "identity"
    agaw: AddressWidth
    pgd: int | None  # root of the SL table; None for a pass-through identity domain
    pass_through: bool = False
    devices: set[int] = field(default_factory=set)
    mapped_bytes: int = 0

    @property
    def levels(self) -> int:
        return self.agaw.levels

    @property
    def aperture(self) -> int:
        """One past the highest IOVA the domain's table can map."""
        return 1 << self.agaw.bits

    def __repr__(self) -> str:
        root = "pass-through" if self.pgd is None else f"pgd={self.pgd:#x}"
        return (
            f"Domain(did={self.did}, {self.kind}, {self.agaw.bits}-bit, {root}, "
            f"devices={sorted(self.devices)}, mapped={self.mapped_bytes:#x})"
        )


@dataclass
class IommuStats:
    """Work the driver did; every field only grows."""

    pages_mapped: int = 0  # leaf entries written (any page size)
    bytes_mapped: int = 0
    pages_unmapped: int = 0  # leaf entries cleared
    bytes_unmapped: int = 0
    pte_writes: int = 0  # 8-byte paging entries written (leaves and tables)
    table_pages_allocated: int = 0
    table_pages_freed: int = 0
    root_entry_writes: int = 0
    context_entry_writes: int = 0
    irte_writes: int = 0
    context_invalidations: int = 0
    iotlb_invalidations_global: int = 0
    iotlb_invalidations_domain: int = 0
    iotlb_invalidations_page: int = 0
    iec_invalidations: int = 0
    qi_submissions: int = 0  # qi_submit_sync calls (each ends with a wait descriptor)
    qi_descriptors: int = 0  # descriptors written, wait descriptors included
    register_invalidations: int = 0  # CCMD_REG / IOTLB_REG invalidations
    flush_queue_flushes: int = 0
    flush_queue_entries: int = 0  # unmaps that went through the flush queue

    @property
    def iotlb_invalidations(self) -> int:
        return (
            self.iotlb_invalidations_global
            + self.iotlb_invalidations_domain
            + self.iotlb_invalidations_page
        )

    @property
    def invalidations(self) -> int:
        return self.iotlb_invalidations + self.context_invalidations + self.iec_invalidations


@dataclass
class _Queued:
    """A flush-queue entry: an unmapped range whose IOTLB invalidation is deferred."""

    did: int
    start: int
    end: int
    freelist: list[int]
    time_ns: int | None


def calculate_psi_aligned_address(start: int, end: int) -> tuple[int, int]:
    """(aligned address, AM) of a PSI covering ``[start, end)``; Linux, same name."""
    pfn = start >> 12
    pages = ((end - 1) >> 12) - pfn + 1
    aligned_pages = 1 << (pages - 1).bit_length()
    bitmask = aligned_pages - 1
    mask = aligned_pages.bit_length() - 1
    if bitmask & pfn:
        end_pfn = pfn + pages - 1
        shared_bits = ~(pfn ^ end_pfn) & ~bitmask
        mask = (shared_bits & -shared_bits).bit_length() - 1 if shared_bits else MAX_AGAW_PFN_WIDTH
    return start & ~((PAGE_4K << mask) - 1), mask


class IommuDriver:
    """Drives one ``DmarUnit``: domains, mappings, invalidations and IRTEs.

    ``strict`` picks the unmap policy (True: invalidate at once; False: Linux's flush queue).
    ``agaw`` is the domain address width in bits (39 or 48). ``clock`` returns the current
    simulated time in ns and enables the flush queue's timeout; without it only the size
    threshold and ``flush()`` drain the queue.
    """

    def __init__(
        self,
        memory: HostMemory,
        frames: FrameAllocator,
        unit: DmarUnit,
        *,
        strict: bool = True,
        agaw: int = 48,
        use_qi: bool = True,
        interrupt_remapping: bool = True,
        x2apic: bool = True,
        ir_entries: int = INTR_REMAP_TABLE_ENTRIES,
        flush_queue_size: int = IOVA_FQ_SIZE,
        flush_timeout_ns: int = IOVA_FQ_TIMEOUT_NS,
        clock: Callable[[], int] | None = None,
        superpages: bool = True,
    ) -> None:
        self.memory = memory
        self.frames = frames
        self.unit = unit
        self.strict = strict
        try:
            self.agaw = AddressWidth.from_bits(agaw)
        except ValueError:
            raise ConfigError(f"iommu agaw {agaw} must be 39 or 48 (bits)") from None
        sagaw = (unit.cap >> R.CAP_SAGAW_SHIFT) & 0x1F
        if not sagaw & (1 << self.agaw) or self.agaw > AddressWidth.AGAW_48:
            raise ConfigError(f"iommu agaw {agaw}: {unit.name} does not support it (SAGAW)")
        if flush_queue_size < 1:
            raise ConfigError(f"iommu flush_queue_size {flush_queue_size} must be at least 1")
        if not 2 <= ir_entries <= 65536 or ir_entries & (ir_entries - 1):
            raise ConfigError(f"iommu ir_entries {ir_entries} must be a power of two in 2..65536")
        self.flush_queue_size = flush_queue_size
        self.flush_timeout_ns = flush_timeout_ns
        self.clock = clock
        self.stats = IommuStats()
        self._addr_mask = sl_addr_mask(unit.haw)
        self._page_sizes = [PAGE_4K]
        if superpages and unit.cap & R.Cap.SLLPS_2M:
            self._page_sizes.insert(0, PAGE_2M)
            if unit.cap & R.Cap.SLLPS_1G:
                self._page_sizes.insert(0, PAGE_1G)
        self.domains: dict[int, Domain] = {}
        self._max_did = 1 << (4 + 2 * (unit.cap & 7))
        self._free_dids: list[int] = []
        self._next_did = 1  # domain id 0 is reserved (Linux: set_bit(0, iommu->domain_ids))
        self._identity: Domain | None = None
        self._context_tables: dict[int, int] = {}  # bus -> context table address
        self._queue: list[_Queued] = []
        self._gcmd = 0  # Linux iommu->gcmd: the persistent GCMD bits we have set
        self.qi_enabled = False
        self.ir_enabled = False
        self.x2apic = False
        self._irte_used: set[int] = set()
        self._irte_free: list[int] = []
        self._irte_next = 0
        self.ir_entries = 0
        self.ir_table: int | None = None
        # bring-up, in Linux's order
        self.root_table = self._alloc_zeroed(PAGE_4K)
        want_ir = interrupt_remapping and unit.has(R.Ecap.IR)
        if (use_qi or want_ir) and unit.has(R.Ecap.QI):  # IR always runs with QI in Linux
            self._enable_qi()
        if want_ir:
            self._enable_ir(ir_entries, x2apic and unit.has(R.Ecap.EIM))
        self._set_root_entry()
        self._gcmd_enable(R.Gcmd.TE, R.Gsts.TES)  # iommu_enable_translation

    def __repr__(self) -> str:
        mode = "strict" if self.strict else f"lazy(fq={len(self._queue)})"
        return (
            f"IommuDriver({self.unit.name}, {mode}, domains={len(self.domains)}, "
            f"qi={self.qi_enabled}, ir={self.ir_enabled})"
        )

    # ------------------------------------------------------------------ helpers
    def _alloc_zeroed(self, size: int) -> int:
        addr = self.frames.alloc(size)
        self.memory.fill(addr, size, 0)
        return addr

    def _alloc_table(self) -> int:
        self.stats.table_pages_allocated += 1
        return self._alloc_zeroed(PAGE_4K)

    def _free_table(self, addr: int) -> None:
        self.stats.table_pages_freed += 1
        self.frames.free(addr, PAGE_4K)

    def _write_pte(self, addr: int, value: int) -> None:
        self.memory.write_u64(addr, value)
        self.stats.pte_writes += 1

    def _gcmd_enable(self, cmd: int, status: int) -> None:
        self._gcmd |= cmd
        self._gcmd_write(self._gcmd, status, True)

    def _gcmd_disable(self, cmd: int, status: int) -> None:
        self._gcmd &= ~cmd
        self._gcmd_write(self._gcmd, status, False)

    def _gcmd_write(self, value: int, status: int, want: bool) -> None:
        """writel(GCMD) then IOMMU_WAIT_OP on GSTS (the model completes at once)."""
        self.unit.write_reg(R.GCMD_REG, value, 4)
        if bool(self.unit.read_reg(R.GSTS_REG, 4) & status) != want:
            raise RuntimeError(f"{self.unit.name}: GSTS did not follow GCMD {value:#x}")

    # ------------------------------------------------------------------ bring-up
    def _enable_qi(self) -> None:
        """Linux __dmar_enable_qi: IQT=0, IQA, GCMD.QIE."""
        self._iq = self._alloc_zeroed(PAGE_4K)  # 256 x 16-byte descriptors: QS=0
        self._iq_status = self._alloc_zeroed(PAGE_4K)
        self._iq_tail = 0
        self.unit.write_reg(R.IQT_REG, 0, 8)
        self.unit.write_reg(R.IQA_REG, self._iq, 8)
        self._gcmd_enable(R.Gcmd.QIE, R.Gsts.QIES)
        self.qi_enabled = True

    def _enable_ir(self, entries: int, x2apic: bool) -> None:
        """Linux intel_setup_irq_remapping + iommu_set_irq_remapping."""
        self.ir_entries = entries
        self.x2apic = x2apic
        self.ir_table = self._alloc_zeroed(max(PAGE_4K, entries * 16))
        irta = self.ir_table | (R.IRTA_EIME if x2apic else 0) | (entries.bit_length() - 2)
        self.unit.write_reg(R.IRTA_REG, irta, 8)
        self._gcmd_write(self._gcmd | R.Gcmd.SIRTP, R.Gsts.IRTPS, True)
        self._flush_iec()  # qi_global_iec
        self._gcmd_enable(R.Gcmd.IRE, R.Gsts.IRES)
        self._gcmd_disable(R.Gcmd.CFI, R.Gsts.CFIS)  # block compatibility-format MSIs
        self.ir_enabled = True

    def _set_root_entry(self) -> None:
        """Linux iommu_set_root_entry: RTADDR, SRTP, then global context + IOTLB flush."""
        self.unit.write_reg(R.RTADDR_REG, self.root_table, 8)
        self._gcmd_write(self._gcmd | R.Gcmd.SRTP, R.Gsts.RTPS, True)
        self._flush_context(ContextGranularity.GLOBAL)
        self._flush_iotlb(IotlbGranularity.GLOBAL)

    # ------------------------------------------------------------------ invalidation
    def _qi_submit(self, descs: list[tuple[int, int]]) -> None:
        """Linux qi_submit_sync: descriptors, a wait descriptor with status write, IQT."""
        mem = self.memory
        mem.write_u32(self._iq_status, QI_IN_USE)
        tail = self._iq_tail
        for lo, hi in [*descs, wait_desc(self._iq_status, QI_DONE, fence=True)]:
            mem.write_u64(self._iq + tail * 16, lo)
            mem.write_u64(self._iq + tail * 16 + 8, hi)
            tail = (tail + 1) % QI_LENGTH
        self._iq_tail = tail
        self.unit.write_reg(R.IQT_REG, tail << R.IQ_QT_SHIFT, 8)
        self.stats.qi_submissions += 1
        self.stats.qi_descriptors += len(descs) + 1
        if mem.read_u32(self._iq_status) != QI_DONE:
            fsts = self.unit.read_reg(R.FSTS_REG, 4)
            raise QueuedInvalidationError(
                f"{self.unit.name}: invalidation queue stopped (FSTS={fsts:#x}, "
                f"IQH={self.unit.read_reg(R.IQH_REG, 8):#x}) on {descs!r}"
            )

    def _flush_context(self, gran: int, did: int = 0, sid: int = 0, fm: int = 0) -> None:
        self.stats.context_invalidations += 1
        if self.qi_enabled:
            self._qi_submit([cc_inv_desc(gran, did, sid, fm)])
            return
        self.stats.register_invalidations += 1  # Linux __iommu_flush_context
        val = (
            R.CCMD_ICC
            | (gran << R.CCMD_CIRG_SHIFT)
            | (fm << R.CCMD_FM_SHIFT)
            | (sid << R.CCMD_SID_SHIFT)
            | did
        )
        self.unit.write_reg(R.CCMD_REG, val, 8)
        if self.unit.read_reg(R.CCMD_REG, 8) & R.CCMD_ICC:
            raise RuntimeError(f"{self.unit.name}: context invalidation did not complete")

    def _flush_iotlb(self, gran: int, did: int = 0, addr: int = 0, am: int = 0) -> None:
        s = self.stats
        if gran == IotlbGranularity.GLOBAL:
            s.iotlb_invalidations_global += 1
        elif gran == IotlbGranularity.DOMAIN:
            s.iotlb_invalidations_domain += 1
        else:
            s.iotlb_invalidations_page += 1
        if self.qi_enabled:
            desc = iotlb_inv_desc(gran, did, addr, am, drain_reads=True, drain_writes=True)
            self._qi_submit([desc])
            return
        s.register_invalidations += 1  # Linux __iommu_flush_iotlb
        if gran == IotlbGranularity.PAGE:
            self.unit.write_reg(R.IVA_REG, addr | am, 8)
        val = R.IOTLB_IVT | (gran << R.IOTLB_IIRG_SHIFT) | (did << R.IOTLB_DID_SHIFT)
        self.unit.write_reg(R.IOTLB_REG, val | R.IOTLB_DR | R.IOTLB_DW, 8)
        got = self.unit.read_reg(R.IOTLB_REG, 8)
        if got & R.IOTLB_IVT or not (got >> R.IOTLB_IAIG_SHIFT) & 3:
            raise RuntimeError(f"{self.unit.name}: IOTLB invalidation {val:#x} was refused")

    def _flush_iotlb_psi(self, did: int, start: int, end: int) -> None:
        """Linux iommu_flush_iotlb_psi: PSI when the mask fits, else domain-selective."""
        addr, mask = calculate_psi_aligned_address(start, end)
        if not self.unit.cap & R.Cap.PSI or mask > (self.unit.cap >> R.CAP_MAMV_SHIFT) & 0x3F:
            self._flush_iotlb(IotlbGranularity.DOMAIN, did)
        else:
            self._flush_iotlb(IotlbGranularity.PAGE, did, addr, mask)

    def _flush_iec(self, index: int | None = None, im: int = 0) -> None:
        self.stats.iec_invalidations += 1
        if not self.qi_enabled:
            raise RuntimeError("interrupt entry cache invalidation needs queued invalidation")
        self._qi_submit([iec_inv_desc(index, im)])

    # ------------------------------------------------------------------ domains
    def alloc_domain(self, kind: str = "dma") -> Domain:
        """A new DMA domain, or the (shared) identity domain (Linux ``si_domain``)."""
        if kind == "identity":
            if self._identity is None:
                self._identity = self._new_identity_domain()
            return self._identity
        if kind != "dma":
            raise ValueError(f"domain kind {kind!r} must be 'dma' or 'identity'")
        did = self._alloc_did()
        dom = Domain(did, "dma", self.agaw, self._alloc_table())
        self.domains[did] = dom
        return dom

    def _alloc_did(self) -> int:
        if self._free_dids:
            return heapq.heappop(self._free_dids)
        if self._next_did >= self._max_did:
            raise OutOfResources(
                f"{self.unit.name}: all {self._max_did - 1} domain ids are in use (CAP.ND)"
            )
        did = self._next_did
        self._next_did += 1
        return did

    def _new_identity_domain(self) -> Domain:
        did = self._alloc_did()
        if self.unit.has(R.Ecap.PT):  # hardware pass-through: no table at all
            dom = Domain(did, "identity", self.agaw, None, pass_through=True)
        else:  # Linux si_domain_init(hw=0): map all of memory 1:1
            dom = Domain(did, "identity", self.agaw, self._alloc_table())
            self._map_range(dom, 0, 0, min(self.memory.size, dom.aperture), _RW)
        self.domains[did] = dom
        return dom

    def free_domain(self, domain: Domain) -> None:
        """Release a domain with no devices attached: its tables and its id."""
        if domain.devices:
            raise ValueError(
                f"domain {domain.did} still has devices attached: "
                + ", ".join(f"{s:#06x}" for s in sorted(domain.devices))
            )
        if any(q.did == domain.did for q in self._queue):
            self.flush()
        if domain.pgd is not None:
            self._free_tree(domain.pgd, domain.levels)
        self._flush_iotlb(IotlbGranularity.DOMAIN, domain.did)
        del self.domains[domain.did]
        heapq.heappush(self._free_dids, domain.did)
        if domain is self._identity:
            self._identity = None

    def _free_tree(self, table: int, level: int) -> None:
        if level > 1:
            for i in range(512):
                pte = self.memory.read_u64(table + i * 8)
                if pte & _RW and not pte & _PS:
                    self._free_tree(pte & self._addr_mask, level - 1)
        self._free_table(table)

    # ------------------------------------------------------------------ attach / detach
    def _context_entry_addr(self, source_id: int, create: bool) -> int | None:
        bus, devfn = (source_id >> 8) & 0xFF, source_id & 0xFF
        ctp = self._context_tables.get(bus)
        if ctp is None:
            if not create:
                return None
            ctp = self._alloc_table()  # Linux iommu_context_addr(..., alloc=1)
            entry = RootEntry.make(ctp)
            self.memory.write_u64(self.root_table + bus * 16 + 8, entry.hi)
            self.memory.write_u64(self.root_table + bus * 16, entry.lo)
            self.stats.root_entry_writes += 1
            self._context_tables[bus] = ctp
        return ctp + devfn * 16

    def attach(self, domain: Domain, source_id: int) -> None:
        """Point requester ``source_id`` (bus << 8 | devfn) at ``domain``."""
        if self.domains.get(domain.did) is not domain:
            raise ValueError(f"domain {domain.did} is not live on {self.unit.name}")
        addr = self._context_entry_addr(source_id, create=True)
        assert addr is not None
        old = ContextEntry(self.memory.read_u64(addr), self.memory.read_u64(addr + 8))
        if old.present:
            if old.did == domain.did:
                return
            self.detach(source_id)
        tt = TranslationType.PASS_THROUGH if domain.pass_through else TranslationType.MULTI_LEVEL
        entry = ContextEntry.make(did=domain.did, aw=domain.agaw, slptptr=domain.pgd or 0, tt=tt)
        self.memory.write_u64(addr + 8, entry.hi)  # the present bit goes in last
        self.memory.write_u64(addr, entry.lo)
        self.stats.context_entry_writes += 1
        self._flush_context(ContextGranularity.DEVICE, domain.did, source_id)
        domain.devices.add(source_id)

    def detach(self, source_id: int) -> None:
        """Clear the context entry of ``source_id``; Linux domain_context_clear_one."""
        addr = self._context_entry_addr(source_id, create=False)
        if addr is None:
            return
        old = ContextEntry(self.memory.read_u64(addr), self.memory.read_u64(addr + 8))
        if not old.lo & CONTEXT_ENTRY_P:
            return
        self.memory.write_u64(addr, 0)
        self.memory.write_u64(addr + 8, 0)
        self.stats.context_entry_writes += 1
        self._flush_context(ContextGranularity.DEVICE, old.did, source_id)
        self._flush_iotlb(IotlbGranularity.DOMAIN, old.did)
        dom = self.domains.get(old.did)
        if dom is not None:
            dom.devices.discard(source_id)

    def domain_of(self, source_id: int) -> Domain | None:
        addr = self._context_entry_addr(source_id, create=False)
        if addr is None:
            return None
        ce = ContextEntry(self.memory.read_u64(addr), self.memory.read_u64(addr + 8))
        return self.domains.get(ce.did) if ce.present else None

    # ------------------------------------------------------------------ map / unmap
    def _check_range(self, domain: Domain, iova: int, size: int, hpa: int = 0) -> None:
        if self.domains.get(domain.did) is not domain:
            raise ValueError(f"domain {domain.did} is not live on {self.unit.name}")
        if domain.pgd is None or domain.kind != "dma":
            raise ValueError(f"domain {domain.did} is an identity domain: it cannot be mapped")
        if size <= 0 or (iova | size | hpa) & (PAGE_4K - 1) or iova < 0 or hpa < 0:
            raise ValueError(
                f"iova {iova:#x}, hpa {hpa:#x} and size {size:#x} must be positive "
                "multiples of 0x1000"
            )
        if iova + size > domain.aperture:
            raise ValueError(
                f"iova range {iova:#x}+{size:#x} is beyond the domain's "
                f"{domain.agaw.bits}-bit aperture"
            )

    def map(
        self,
        domain: Domain,
        iova: int,
        hpa: int,
        size: int,
        *,
        read: bool = True,
        write: bool = True,
    ) -> None:
        """Map ``[iova, iova + size)`` to ``[hpa, hpa + size)``, using superpages where aligned."""
        self._check_range(domain, iova, size, hpa)
        if not (read or write):
            raise ValueError("a mapping needs read or write permission")
        if self._queue and any(
            q.did == domain.did and q.start < iova + size and iova < q.end for q in self._queue
        ):
            self.flush()  # never hand out an IOVA still in the flush queue
        if hpa + size > self.memory.size:
            raise ValueError(
                f"hpa range {hpa:#x}+{size:#x} is beyond host memory ({self.memory.size:#x})"
            )
        perms = (1 if read else 0) | (2 if write else 0)
        self._map_range(domain, iova, hpa, size, perms)

    def _map_range(self, domain: Domain, iova: int, hpa: int, size: int, perms: int) -> None:
        assert domain.pgd is not None
        pos = 0
        while pos < size:
            va, pa, left = iova + pos, hpa + pos, size - pos
            for ps in self._page_sizes:  # hardware_largepage_caps
                if not (va | pa) & (ps - 1) and left >= ps:
                    break
            level = 1 if ps == PAGE_4K else (2 if ps == PAGE_2M else 3)
            leaf = slpte(pa, read=bool(perms & 1), write=bool(perms & 2), ps=level > 1)
            self._set_leaf(domain, va, level, leaf)
            pos += ps
            self.stats.pages_mapped += 1
            self.stats.bytes_mapped += ps
            domain.mapped_bytes += ps

    def _set_leaf(self, domain: Domain, iova: int, target: int, leaf: int) -> None:
        assert domain.pgd is not None
        mem = self.memory
        table, level = domain.pgd, domain.levels
        while True:
            slot = table + ((iova >> level_shift(level)) & 0x1FF) * 8
            pte = mem.read_u64(slot)
            if level == target:
                break
            if not pte & _RW:  # pfn_to_dma_pte: allocate the missing table
                sub = self._alloc_table()
                self._write_pte(slot, slpte(sub))
                table = sub
            elif pte & _PS:
                raise ValueError(
                    f"iova {iova:#x} is already mapped by a {level_shift(level)}-bit superpage "
                    f"in domain {domain.did}"
                )
            else:
                table = pte & self._addr_mask
            level -= 1
        if pte & _RW:
            if target > 1 and not pte & _PS and self._table_empty(pte & self._addr_mask):
                self._free_tree(pte & self._addr_mask, target - 1)  # make room for a superpage
            else:
                raise ValueError(f"iova {iova:#x} is already mapped in domain {domain.did}")
        self._write_pte(slot, leaf)

    def _table_empty(self, table: int) -> bool:
        return self.memory.read(table, PAGE_4K) == bytes(PAGE_4K)

    def unmap(self, domain: Domain, iova: int, size: int) -> int:
        """Unmap ``[iova, iova + size)``; returns the bytes unmapped (whole superpages)."""
        self._check_range(domain, iova, size)
        assert domain.pgd is not None
        freelist: list[int] = []
        span = [iova + size, iova]  # lowest and highest byte actually unmapped
        n = self._clear(domain.pgd, domain.levels, iova, iova + size, freelist, span)
        domain.mapped_bytes -= n
        self.stats.bytes_unmapped += n
        if n == 0:
            for t in freelist:
                self._free_table(t)
            return 0
        start, end = span
        if self.strict:
            self._flush_iotlb_psi(domain.did, start, end)
            for t in freelist:  # freed only once the IOTLB can no longer use them
                self._free_table(t)
        else:
            self._enqueue(_Queued(domain.did, start, end, freelist, self._now()))
        return n

    def _clear(
        self, table: int, level: int, start: int, end: int, freelist: list[int], span: list[int]
    ) -> int:
        """Linux dma_pte_clear_level: clear leaves in [start, end), collect covered tables."""
        mem = self.memory
        shift = level_shift(level)
        size = 1 << shift
        unmapped = 0
        pos = start & ~(size - 1)
        while pos < end:
            slot = table + ((pos >> shift) & 0x1FF) * 8
            pte = mem.read_u64(slot)
            if pte & _RW:
                if level == 1 or pte & _PS:
                    self._write_pte(slot, 0)
                    unmapped += size
                    self.stats.pages_unmapped += 1
                    span[0] = min(span[0], pos)
                    span[1] = max(span[1], pos + size)
                else:
                    sub = pte & self._addr_mask
                    lo, hi = max(start, pos), min(end, pos + size)
                    unmapped += self._clear(sub, level - 1, lo, hi, freelist, span)
                    if lo == pos and hi == pos + size:  # the whole table's span: free it
                        self._write_pte(slot, 0)
                        freelist.append(sub)
            pos += size
        return unmapped

    # ------------------------------------------------------------------ flush queue
    def _now(self) -> int | None:
        return self.clock() if self.clock is not None else None

    def _enqueue(self, entry: _Queued) -> None:
        """Linux queue_iova: flush first if the queue is full, then add."""
        if len(self._queue) >= self.flush_queue_size:
            self.flush()
        elif self._timed_out(entry.time_ns):
            self.flush()
        self._queue.append(entry)
        self.stats.flush_queue_entries += 1

    def _timed_out(self, now: int | None) -> bool:
        deadline = self.next_flush_deadline
        return deadline is not None and now is not None and now >= deadline

    @property
    def flush_queue(self) -> int:
        """Number of unmapped ranges waiting for their IOTLB invalidation (lazy mode)."""
        return len(self._queue)

    @property
    def next_flush_deadline(self) -> int | None:
        """Simulated time (ns) at which the flush-queue timer fires, None when idle."""
        if not self._queue or self._queue[0].time_ns is None:
            return None
        return self._queue[0].time_ns + self.flush_timeout_ns

    def poll(self, now_ns: int | None = None) -> bool:
        """The flush-queue timer (fq_flush_timeout): flush if due; True if it flushed."""
        if now_ns is None:
            now_ns = self._now()
        if self._timed_out(now_ns):
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Drain the flush queue: one domain-selective invalidation per domain, then free."""
        if not self._queue:
            return
        queue, self._queue = self._queue, []
        for did in sorted({q.did for q in queue}):
            self._flush_iotlb(IotlbGranularity.DOMAIN, did)  # flush_iotlb_all
        for q in queue:
            for t in q.freelist:
                self._free_table(t)
        self.stats.flush_queue_flushes += 1

    # ------------------------------------------------------------------ interrupt remapping
    def _alloc_index(self) -> int:
        if self._irte_free:
            return heapq.heappop(self._irte_free)
        if self._irte_next >= self.ir_entries:
            raise OutOfResources(
                f"{self.unit.name}: all {self.ir_entries} interrupt remapping entries are in use"
            )
        index = self._irte_next
        self._irte_next += 1
        return index

    def alloc_irte(
        self,
        source_id: int,
        vector: int,
        dest: int,
        posted: int | None = None,
        *,
        delivery_mode: int = DeliveryMode.FIXED,
        dest_mode: int = 0,
        trigger_mode: int = 0,
        urgent: bool = False,
    ) -> int:
        """Allocate and write an IRTE for requester ``source_id``; returns its handle.

        ``posted`` is the host physical address of a 64-byte posted-interrupt descriptor:
        the entry is then in posted format and ``vector`` is the guest vector to post;
        ``dest`` is ignored (the descriptor's NDST names the CPU).
        """
        if not self.ir_enabled or self.ir_table is None:
            raise ValueError(f"{self.unit.name}: interrupt remapping is not enabled")
        if not 0 <= vector <= 0xFF:
            raise ValueError(f"vector {vector:#x} must be 0..0xff")
        if posted is not None:
            if posted & 0x3F or not self.unit.has(R.Cap.PI):
                raise ValueError(
                    f"posted descriptor {posted:#x} must be 64-byte aligned on a unit with CAP.PI"
                )
        elif not self.x2apic and not 0 <= dest <= 0xFF:
            raise ValueError(f"destination {dest:#x} needs x2APIC mode (8-bit ids in xAPIC)")
        index = self._alloc_index()
        irte = Irte(
            present=True,
            vector=vector,
            destination=dest if posted is None else 0,
            delivery_mode=delivery_mode,
            dest_mode=dest_mode,
            trigger_mode=trigger_mode,
            sid=source_id,
            sq=Sq.ALL_16,
            svt=Svt.VERIFY_SID_SQ,  # Linux set_msi_sid
            posted=posted is not None,
            urgent=urgent,
            pda=posted or 0,
        )
        self._write_irte(index, irte)
        self._irte_used.add(index)
        return index

    def _write_irte(self, index: int, irte: Irte | None) -> None:
        assert self.ir_table is not None
        addr = self.ir_table + index * 16
        if irte is None:
            self.memory.write_u64(addr, 0)  # not present first
            self.memory.write_u64(addr + 8, 0)
        else:
            lo, hi = irte.encode(eime=self.x2apic)
            self.memory.write_u64(addr + 8, hi)
            self.memory.write_u64(addr, lo)  # the present bit last (modify_irte: cmpxchg16b)
        self.stats.irte_writes += 1
        self._flush_iec(index, 0)  # qi_flush_iec

    def free_irte(self, handle: int) -> None:
        """Clear the IRTE and release its index (Linux free_irte / clear_entries)."""
        if handle not in self._irte_used:
            raise ValueError(f"interrupt remapping handle {handle:#x} is not allocated")
        self._write_irte(handle, None)
        self._irte_used.remove(handle)
        heapq.heappush(self._irte_free, handle)

    def irte(self, handle: int) -> Irte:
        """The IRTE as it is in memory now."""
        assert self.ir_table is not None
        addr = self.ir_table + handle * 16
        lo, hi = self.memory.read_u64(addr), self.memory.read_u64(addr + 8)
        return Irte.decode(lo, hi, eime=self.x2apic)

    @staticmethod
    def msi_message(handle: int) -> tuple[int, int]:
        """(MSI address, MSI data) to program into the device for ``handle``."""
        return msi_remappable_address(handle, shv=True), 0

    # ------------------------------------------------------------------ introspection
    def root_entry(self, bus: int) -> RootEntry:
        addr = self.root_table + bus * 16
        return RootEntry(self.memory.read_u64(addr), self.memory.read_u64(addr + 8))

    def lookup(self, domain: Domain, iova: int) -> tuple[int, int, int] | None:
        """Software walk of the domain's table: (hpa, page size, perms R=1|W=2) or None."""
        if domain.pgd is None:
            return (iova & ~(PAGE_4K - 1), PAGE_4K, _RW)
        table, level, perms = domain.pgd, domain.levels, _RW
        while True:
            pte = self.memory.read_u64(table + ((iova >> level_shift(level)) & 0x1FF) * 8)
            perms &= pte
            if not pte & _RW:
                return None
            if level == 1 or pte & _PS:
                size = 1 << level_shift(level)
                return (pte & self._addr_mask & ~(size - 1), size, perms)
            table = pte & self._addr_mask
            level -= 1


__all__ = [
    "Domain",
    "IommuDriver",
    "IommuStats",
    "QueuedInvalidationError",
    "calculate_psi_aligned_address",
]
