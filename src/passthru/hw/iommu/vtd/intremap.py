"""VT-d interrupt remapping and interrupt posting (Intel VT-d spec ch. 5, 9.10-9.12).

What is modelled: a DMA write to the MSI window 0xFEE0_0000-0xFEEF_FFFF is an interrupt
request (spec 5.1.2). With interrupt remapping disabled (GSTS.IRES=0) every request is taken
in compatibility format and passes untouched: the device chooses any vector on any CPU. With it
enabled (QEMU ``vtd_interrupt_remap_msi``):

- remappable format (address bit 4 = 1): handle = address bits 19:5 with bit 2 as handle[15];
  when SHV (address bit 3) is set the subhandle in data bits 15:0 is added (data bits 31:16 are
  reserved: fault 0x20); an index beyond the table size in IRTA.S faults 0x21; the 128-bit IRTE
  is read from host memory at IRTA (an access error faults 0x23) unless the interrupt entry
  cache holds it; P=0 faults 0x22; reserved bits 0x24; the SVT/SQ/SID source validation
  (5.1.4, 9.10) faults 0x26;
- compatibility format (bit 4 = 0) passes only while GSTS.CFIS is set and IRTA.EIME is clear,
  else it faults 0x25 (5.1.2.1);
- a remapped-format IRTE (IM=0) yields vector, destination (8-bit xAPIC id in bits 47:40, or
  32-bit x2APIC id with EIME), delivery, trigger and destination mode;
- a posted-format IRTE (IM=1, needs CAP.PI) posts the virtual vector into the 64-byte
  posted-interrupt descriptor in host memory (5.2.3, 9.12): the PIR bit is set; if ON was
  clear and (URG=1 or SN=0) ON is set and a notification event (NV to NDST) is sent. An error
  reading the descriptor faults 0x27, reserved bits in it 0x28.

The interrupt entry cache holds decoded present IRTEs until an interrupt-entry-cache
invalidation (global or index-selective with the index mask IM, 6.5.2.7) drops them, so an
IRTE changed in memory without invalidation keeps its old meaning, as on hardware.

Left out: I/O APIC (RTE) remapping, the IRTE RH/logical-destination and lowest-priority
arbitration semantics (reported, not acted on), EIME for compatibility x2APIC ids, the
interrupt-entry cache's finite size, IRTE-posted-interrupt descriptor atomicity with a CPU
(the model is single-threaded), and timing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from passthru.hw.iommu.vtd.entries import (
    IRTE_FPD,
    IRTE_P,
    MSI_ADDR_IR_EXT_INT,
    MSI_ADDR_IR_SHV,
    MSI_DATA_RESERVED,
    MSI_DATA_SUBHANDLE,
    MSI_WINDOW_BASE,
    MSI_WINDOW_LAST,
    PID_HEAD,
    PID_NDST_SHIFT,
    PID_NV_SHIFT,
    PID_ON,
    PID_RSVD_CONTROL,
    PID_SN,
    DeliveryMode,
    Irte,
    irte_rsvd_bits,
    msi_handle,
    sid_matches,
)
from passthru.hw.iommu.vtd.faults import FaultReason, FaultRecord, FaultRecorder
from passthru.hw.memory import HostMemory

_RESULT_MEMO: Final = 1024  # distinct interrupt results kept for reuse


@dataclass(frozen=True, slots=True)
class InterruptResult:
    """An interrupt request that got through.

    ``remapped`` tells whether an IRTE produced it (False: compatibility format passed
    through, the device's own choice). For a posted interrupt ``vector`` is the virtual vector
    now pending in the descriptor's PIR, ``destination`` the descriptor's NDST, and
    ``notification_vector`` the NV sent to NDST, or None when no notification event was
    generated (ON already set, or SN set without URG).
    """

    vector: int
    destination: int
    delivery_mode: int
    posted: bool = False
    trigger_mode: int = 0
    dest_mode: int = 0
    redir_hint: bool = False
    remapped: bool = True
    index: int | None = None
    notification_vector: int | None = None


class InterruptRemapper:
    """The interrupt-remapping half of a unit. The unit sets ``enabled`` (IRES), ``cfis``
    (CFIS) and latches ``table``/``entries``/``eime`` from IRTA on SIRTP."""

    def __init__(
        self,
        memory: HostMemory,
        recorder: FaultRecorder,
        *,
        posted_supported: bool = True,
    ) -> None:
        self.memory = memory
        self.recorder = recorder
        self.posted_supported = posted_supported
        self.enabled = False
        self.cfis = False
        self.table = 0
        self.entries = 0
        self.eime = False
        self.cache: dict[int, tuple[Irte, int, int]] = {}  # interrupt entry cache: (irte, lo, hi)
        # Results handed out, by everything they contain (see _result): they are immutable.
        self._results: dict[tuple[int, int, int, int | None], InterruptResult] = {}
        # work counters
        self.requests = 0
        self.remapped = 0
        self.compat = 0
        self.posted = 0
        self.notifications = 0
        self.table_reads = 0
        self.faults = 0

    def __repr__(self) -> str:
        return (
            f"InterruptRemapper(enabled={self.enabled}, table={self.table:#x}, "
            f"entries={self.entries}, cached={len(self.cache)}, faults={self.faults})"
        )

    # ------------------------------------------------------------------ invalidation
    def invalidate_all(self) -> int:
        n = len(self.cache)
        self.cache.clear()
        return n

    def invalidate_index(self, index: int, im: int = 0) -> int:
        """Index-selective: the 2^im entries at ``index`` aligned down (6.5.2.7)."""
        count = 1 << im
        start = index & ~(count - 1)
        n = 0
        for i in range(start, start + count):
            if self.cache.pop(i, None) is not None:
                n += 1
        return n

    # ------------------------------------------------------------------ requests
    def _fault(
        self,
        reason: FaultReason,
        source_id: int,
        address: int,
        index: int | None,
        fpd: bool = False,
    ) -> FaultRecord:
        fault = FaultRecord(reason, source_id, address, True, index)
        self.faults += 1
        self.recorder.record(fault, fpd=fpd)
        return fault

    @staticmethod
    def _compat(address: int, data: int) -> InterruptResult:
        """Compatibility-format MSI, taken as the device wrote it (Intel SDM 10.11)."""
        return InterruptResult(
            vector=data & 0xFF,
            destination=(address >> 12) & 0xFF,
            delivery_mode=(data >> 8) & 7,
            trigger_mode=(data >> 15) & 1,
            dest_mode=(address >> 2) & 1,
            redir_hint=bool(address & 8),
            remapped=False,
        )

    def remap(self, source_id: int, address: int, data: int) -> InterruptResult | FaultRecord:
        """Process an interrupt request (a DWORD write of ``data`` to ``address``)."""
        if not MSI_WINDOW_BASE <= address <= MSI_WINDOW_LAST:  # is_interrupt_address()
            raise ValueError(f"address {address:#x} is not in the MSI window 0xfee00000-0xfeefffff")
        self.requests += 1
        if not self.enabled:
            self.compat += 1
            return self._compat(address, data)  # IR disabled: no remapping, no check
        if not address & MSI_ADDR_IR_EXT_INT:
            if self.cfis and not self.eime:
                self.compat += 1
                return self._compat(address, data)  # 5.1.2.1: CFIS lets it pass
            return self._fault(FaultReason.IR_REQ_COMPAT, source_id, address, None)
        index = msi_handle(address)
        if address & MSI_ADDR_IR_SHV:
            if data & MSI_DATA_RESERVED:
                return self._fault(FaultReason.IR_REQ_RSVD, source_id, address, index)
            index = (index + (data & MSI_DATA_SUBHANDLE)) & 0xFFFF
        if index >= self.entries:
            return self._fault(FaultReason.IR_INDEX_OVER, source_id, address, index)
        cached = self.cache.get(index)
        if cached is None:
            got = self._read_irte(index)
            if isinstance(got, FaultReason):
                return self._fault(got, source_id, address, index)
            lo, hi = got
            if not lo & IRTE_P:
                return self._fault(
                    FaultReason.IR_ENTRY_P, source_id, address, index, bool(lo & IRTE_FPD)
                )
            if irte_rsvd_bits(lo, hi, eime=self.eime, posted_supported=self.posted_supported):
                return self._fault(
                    FaultReason.IR_IRTE_RSVD, source_id, address, index, bool(lo & IRTE_FPD)
                )
            irte = Irte.decode(lo, hi, eime=self.eime)
            self.cache[index] = (irte, lo, hi)
        else:
            irte, lo, _ = cached
        if not sid_matches(irte.sid, irte.sq, irte.svt, source_id):
            return self._fault(FaultReason.IR_SID_ERR, source_id, address, index, irte.fpd)
        if irte.posted:
            return self._post(irte, lo, source_id, address, index)
        self.remapped += 1
        return self._result(index, irte, lo, irte.destination, None)

    def _result(
        self, index: int, irte: Irte, lo: int, destination: int, nv: int | None
    ) -> InterruptResult:
        """The result of a remapped (or posted) request through ``irte`` (decoded from
        ``lo``). A result is frozen, and its vector and modes come from the IRTE's low
        qword, so (index, lo, destination, NV) determines it: equal requests share one
        object instead of building it each time."""
        key = (index, lo, destination, nv)
        res = self._results.get(key)
        if res is None:
            if len(self._results) >= _RESULT_MEMO:
                self._results.clear()
            if irte.posted:
                res = InterruptResult(
                    vector=irte.vector,
                    destination=destination,
                    delivery_mode=DeliveryMode.FIXED,
                    posted=True,
                    remapped=True,
                    index=index,
                    notification_vector=nv,
                )
            else:
                res = InterruptResult(
                    vector=irte.vector,
                    destination=destination,
                    delivery_mode=irte.delivery_mode,
                    trigger_mode=irte.trigger_mode,
                    dest_mode=irte.dest_mode,
                    redir_hint=irte.redir_hint,
                    remapped=True,
                    index=index,
                )
            self._results[key] = res
        return res

    def _read_irte(self, index: int) -> tuple[int, int] | FaultReason:
        addr = self.table + index * 16
        try:
            lo = self.memory.read_u64(addr)
            hi = self.memory.read_u64(addr + 8)
        except IndexError:
            return FaultReason.IR_ROOT_INVAL
        self.table_reads += 1
        return lo, hi

    def _post(
        self, irte: Irte, lo: int, source_id: int, address: int, index: int
    ) -> InterruptResult | FaultRecord:
        """Interrupt posting (spec 5.2.3) into the descriptor at ``irte.pda``."""
        mem = self.memory
        pda = irte.pda
        try:
            *pir, control = PID_HEAD.unpack(mem.read(pda, PID_HEAD.size))
        except IndexError:
            return self._fault(FaultReason.IR_PDA_INV, source_id, address, index, irte.fpd)
        if control & PID_RSVD_CONTROL:
            return self._fault(FaultReason.IR_PID_RSVD, source_id, address, index, irte.fpd)
        pir[irte.vector >> 6] |= 1 << (irte.vector & 63)  # PIR[vector] = 1
        self.posted += 1
        nv: int | None = None
        if not control & PID_ON and (irte.urgent or not control & PID_SN):
            nv = (control >> PID_NV_SHIFT) & 0xFF
            control |= PID_ON
            self.notifications += 1
        # One write of PIR and control (the hardware's atomic descriptor update).
        mem.write(pda, PID_HEAD.pack(*pir, control))
        ndst = (control >> PID_NDST_SHIFT) & 0xFFFFFFFF
        if not self.eime:
            ndst = (ndst >> 8) & 0xFF
        return self._result(index, irte, lo, ndst, nv)
