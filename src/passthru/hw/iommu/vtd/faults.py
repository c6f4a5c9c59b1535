"""VT-d fault reasons, fault records and primary fault logging (Intel VT-d spec ch. 7).

What is modelled:

- ``FaultReason``: the legacy-mode DMA-remapping fault reasons (spec 7.1.3, Table "Unsuccessful
  Translated Requests"/fault conditions) and the interrupt-remapping fault reasons (spec 7.1.1,
  0x20-0x28), with the values and names of QEMU's ``VTDFaultReason`` (``VTD_FR_<NAME>``).
  Where the spec says so, an SL paging entry with R=W=0 is *not present* and a request to it
  faults with 0x6 (read) / 0x5 (write), as in QEMU ``vtd_iova_to_slpte`` and Linux's
  "PTE Read access is not set"; 0x7 is an error *accessing* a paging entry (here: a pointer
  outside host memory).
- ``FaultRecord``: what a failed translation or interrupt request returns. It is a value, never
  an exception. The caller must not perform the access.
- ``FaultRecorder``: primary fault logging into the FRCD registers (spec 7.2.1, QEMU
  ``vtd_report_frcd_fault``): a record goes to the FRCD slot at the internal index; when that
  slot's F bit is still set the fault is dropped and FSTS.PFO is set; while PFO is set every new
  fault is dropped; FSTS.PPF is the OR of every F bit; FSTS.FRI names the slot of the first
  pending fault; the fault event (7.3) is raised when PPF goes 0 -> 1 (or latched in FECTL.IP
  while FECTL.IM masks it). Faults with a context entry's FPD set are not recorded when
  *qualified* (QEMU ``vtd_qualified_faults``).

Left out: advanced fault logging (AFL, a fault log in memory), fault collapsing of the same
source (QEMU ``vtd_try_collapse_fault``; the spec does not require it), scalable-mode and
page-request fault reasons.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from passthru.hw.iommu.vtd.regs import (
    FRCD_F,
    FRCD_FR_SHIFT,
    FRCD_SID_MASK,
    FRCD_T,
    FSTS_FRI_MASK,
    FSTS_FRI_SHIFT,
    Fectl,
    Fsts,
    RegisterFile,
)


class FaultReason(IntEnum):
    """Fault reason codes; member ``X`` is QEMU's ``VTD_FR_X``."""

    ROOT_ENTRY_P = 0x01  # present bit of the root entry is clear
    CONTEXT_ENTRY_P = 0x02  # present bit of the context entry is clear
    CONTEXT_ENTRY_INV = 0x03  # invalid programming of a context entry (TT, AW)
    ADDR_BEYOND_MGAW = 0x04  # input address above 2^min(MGAW, AGAW) - 1
    WRITE = 0x05  # write to a page without W (or not present)
    READ = 0x06  # read of a page without R (or not present)
    PAGING_ENTRY_INV = 0x07  # error accessing a second-level paging entry
    ROOT_TABLE_INV = 0x08  # error accessing the root table (RTADDR)
    CONTEXT_TABLE_INV = 0x09  # error accessing a context table (CTP)
    ROOT_ENTRY_RSVD = 0x0A  # non-zero reserved field in a present root entry
    CONTEXT_ENTRY_RSVD = 0x0B  # non-zero reserved field in a present context entry
    PAGING_ENTRY_RSVD = 0x0C  # non-zero reserved field in a present SL paging entry
    CONTEXT_ENTRY_TT = 0x0D  # request type blocked by the context entry's TT
    INTERRUPT_ADDR = 0x0E  # translated address falls in the interrupt range (spec 3.14)
    IR_REQ_RSVD = 0x20  # reserved field set in a remappable interrupt request
    IR_INDEX_OVER = 0x21  # interrupt index beyond the IRTA table size
    IR_ENTRY_P = 0x22  # present bit of the IRTE is clear
    IR_ROOT_INVAL = 0x23  # error accessing the interrupt remapping table
    IR_IRTE_RSVD = 0x24  # reserved field set in a present IRTE
    IR_REQ_COMPAT = 0x25  # compatibility-format request blocked (CFIS clear or EIME set)
    IR_SID_ERR = 0x26  # source-id verification failed
    IR_PDA_INV = 0x27  # error accessing the posted-interrupt descriptor
    IR_PID_RSVD = 0x28  # reserved field set in the posted-interrupt descriptor

    @property
    def is_interrupt(self) -> bool:
        return self.value >= 0x20


# QEMU vtd_qualified_faults; IR: VirtualBox vtdIrFaultIsQualified (spec 7.1.1 "qualified").
QUALIFIED_FAULTS = frozenset(
    {
        FaultReason.CONTEXT_ENTRY_P,
        FaultReason.CONTEXT_ENTRY_INV,
        FaultReason.ADDR_BEYOND_MGAW,
        FaultReason.WRITE,
        FaultReason.READ,
        FaultReason.PAGING_ENTRY_INV,
        FaultReason.PAGING_ENTRY_RSVD,
        FaultReason.CONTEXT_ENTRY_TT,
        FaultReason.INTERRUPT_ADDR,
        FaultReason.IR_ENTRY_P,
        FaultReason.IR_IRTE_RSVD,
        FaultReason.IR_PDA_INV,
        FaultReason.IR_PID_RSVD,
    }
)


@dataclass(frozen=True, slots=True)
class FaultRecord:
    """One remapping fault as hardware reports it (the contents of an FRCD register).

    For a DMA fault ``address`` is the faulting input address (FRCD.FI keeps it page-aligned);
    for an interrupt-remapping fault ``interrupt_index`` is the index of the request (FI bits
    63:48) and ``address`` is the MSI address written. A record is returned, never raised; the
    access it describes must not happen (no byte is read or written, no interrupt delivered).
    """

    reason: FaultReason
    source_id: int
    address: int
    is_write: bool
    interrupt_index: int | None = None

    @property
    def is_interrupt(self) -> bool:
        return self.reason >= 0x20

    @property
    def fi(self) -> int:
        """The FI field as FRCD low quadword holds it."""
        if self.reason >= 0x20:
            return ((self.interrupt_index or 0) & 0xFFFF) << 48
        return self.address & ~0xFFF

    def __repr__(self) -> str:
        sid = self.source_id
        bdf = f"{sid >> 8:02x}:{(sid >> 3) & 0x1F:02x}.{sid & 7}"
        if self.interrupt_index is not None:
            what = f"interrupt index {self.interrupt_index:#x}"
        else:
            what = f"{'write' if self.is_write else 'read'} at {self.address:#x}"
        return f"FaultRecord({self.reason.name} {self.reason.value:#04x}, {bdf}, {what})"


class FaultRecorder:
    """Primary fault logging into NFR fault recording registers (spec 7.2.1).

    ``event_sink(address, data)`` receives the fault event interrupt message (FEADDR/FEDATA)
    when one is generated (spec 7.3); ``events`` counts them.
    """

    def __init__(
        self,
        regs: RegisterFile,
        nfr: int,
        event_sink: Callable[[int, int], None] | None = None,
    ) -> None:
        if not 1 <= nfr <= 256:
            raise ValueError(f"NFR {nfr} must be between 1 and 256")
        self.regs = regs
        self.nfr = nfr
        self.event_sink = event_sink
        self.next_index = 0  # the hardware's internal FRCD index
        self.recorded = 0
        self.dropped_overflow = 0
        self.suppressed_fpd = 0
        self.events = 0
        self._lo = [f"FRCD_REG{i}_LO" for i in range(nfr)]
        self._hi = [f"FRCD_REG{i}_HI" for i in range(nfr)]

    def __repr__(self) -> str:
        return (
            f"FaultRecorder(nfr={self.nfr}, next={self.next_index}, recorded={self.recorded}, "
            f"dropped={self.dropped_overflow}, pending={self.pending()})"
        )

    def reset(self) -> None:
        self.next_index = 0

    def slot(self, index: int) -> tuple[int, int]:
        """(lo, hi) of FRCD register ``index``."""
        return self.regs.get(self._lo[index]), self.regs.get(self._hi[index])

    def pending(self) -> list[int]:
        """Indices of FRCD registers whose F bit is set."""
        return [i for i in range(self.nfr) if self.regs.get(self._hi[i]) & FRCD_F]

    def record(self, fault: FaultRecord, *, fpd: bool = False) -> bool:
        """Log ``fault``; True if it landed in an FRCD register. QEMU vtd_report_frcd_fault."""
        if fpd and fault.reason in QUALIFIED_FAULTS:
            self.suppressed_fpd += 1  # FPD=1: qualified faults are not reported
            return False
        regs = self.regs
        fsts = regs.get("FSTS_REG")
        if fsts & Fsts.PFO:
            self.dropped_overflow += 1  # 7.2.1: no primary logging while PFO is set
            return False
        index = self.next_index
        if regs.get(self._hi[index]) & FRCD_F:
            regs.update("FSTS_REG", set_bits=Fsts.PFO)  # slot still full: overflow
            self.dropped_overflow += 1
            return False
        hi = FRCD_F | (int(fault.reason) << FRCD_FR_SHIFT) | (fault.source_id & FRCD_SID_MASK)
        if not fault.is_interrupt and not fault.is_write:
            hi |= FRCD_T  # T=1: read request
        regs.set(self._lo[index], fault.fi)
        regs.set(self._hi[index], hi)
        self.next_index = (index + 1) % self.nfr
        self.recorded += 1
        if not fsts & Fsts.PPF:
            regs.set("FSTS_REG", (fsts & ~FSTS_FRI_MASK) | (index << FSTS_FRI_SHIFT) | Fsts.PPF)
            # Spec 7.3.1 / QEMU vtd_generate_fault_event: no new event while software has an
            # earlier condition (PFO, IQE) still to service.
            if not fsts & (Fsts.PFO | Fsts.IQE):
                self._fault_event()
        return True

    def update_ppf(self) -> None:
        """Recompute FSTS.PPF after software cleared F bits (PPF is the OR of all F)."""
        if self.pending():
            self.regs.update("FSTS_REG", set_bits=Fsts.PPF)
        else:
            self.regs.update("FSTS_REG", clear_bits=Fsts.PPF)

    def _fault_event(self) -> None:
        """Spec 7.3: send the fault event message, or latch IP while IM masks it."""
        if self.regs.get("FECTL_REG") & Fectl.IM:
            self.regs.update("FECTL_REG", set_bits=Fectl.IP)
            return
        self._send_event()

    def unmasked(self) -> None:
        """Software cleared FECTL.IM: a latched event (IP) is sent now."""
        if self.regs.get("FECTL_REG") & Fectl.IP:
            self.regs.update("FECTL_REG", clear_bits=Fectl.IP)
            self._send_event()

    def _send_event(self) -> None:
        self.events += 1
        if self.event_sink is not None:
            regs = self.regs
            addr = regs.get("FEADDR_REG") | (regs.get("FEUADDR_REG") << 32)
            self.event_sink(addr, regs.get("FEDATA_REG"))
