"""A DMA engine test device: whoever drives it can point its DMA and its MSI anywhere.

What is modelled
    A PCIe endpoint with one 4 KiB memory BAR, in the spirit of QEMU's ``edu`` device
    (``hw/misc/edu.c``: DMA source/destination/count/command registers and a buffer in the
    BAR). The register table is data (:data:`DMA_ENGINE_REGS`) applied by the generic VT-d
    :class:`RegisterFile` accessor:

    ========  ======  =====  ==================================================================
    offset    name    width  meaning
    ========  ======  =====  ==================================================================
    0x00      ID      4      ``0x11e8_0100`` (read-only)
    0x08      DMA_ADDR 8     bus address of the transfer (an IOVA, or an HPA in an identity
                             domain, or a peer BAR, or the MSI window: the device does not care)
    0x10      DMA_LEN 4      bytes to move, at most ``BUFFER_SIZE``
    0x14      CTRL    4      bit 0 DIR (1: read memory into the buffer, 0: write the buffer to
                             memory), bit 1 IRQ_EN (MSI on completion), bit 2 RID_OVERRIDE
    0x18      DOORBELL 4     any write starts the transfer (ignored while BUSY)
    0x1C      STATUS  4      bit 0 BUSY (read-only), bit 1 DONE and bit 2 ERROR (write 1 to
                             clear)
    0x20      MSI_ADDR 8     the MSI address the completion interrupt is written to
    0x28      MSI_DATA 4     the MSI data
    0x2C      REQUESTER_ID 4 the requester ID put in every TLP while CTRL.RID_OVERRIDE is set
    0x30      DMA_COUNT 4    transfers completed (read-only)
    0x800     BUFFER         ``BUFFER_SIZE`` bytes of device memory, byte addressable
    ========  ======  =====  ==================================================================

    A doorbell starts a sim process: after ``latency_ns`` the engine issues the memory
    request through :meth:`Host.dma_write` / :meth:`Host.dma_read` (fabric, ACS, IOMMU), then,
    when IRQ_EN is set, writes MSI_DATA to MSI_ADDR as an ordinary posted write (which is all an
    MSI is, PCIe 6.1.4). Every request's :class:`DmaResult` is appended to ``log``; STATUS gets
    DONE or ERROR. ``REQUESTER_ID`` models a compromised device (or firmware) that forges the
    requester ID a real device takes from its bus/device/function; the request then goes
    through :meth:`Platform.dma_write` with that ID and the host's interrupt routing is not
    involved (the host cannot tell whose request it was).

    ``reset`` is a function-level reset (PCIe 6.6.2): registers to reset values, the buffer
    zeroed, an in-flight transfer abandoned. ``save_state``/``load_state`` round-trip registers
    and buffer (a busy engine cannot be saved: quiesce first).

What is left out
    Config-space behaviour beyond what the topology gives, MSI-X, scatter-gather, ATS, split
    completions and timing beyond one fixed latency per transfer.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from enum import IntFlag
from typing import TYPE_CHECKING, Any

from passthru.hw.iommu.vtd.regs import Field, Register, RegisterFile
from passthru.hw.pci.device import Bar, PciFunction
from passthru.hw.platform import DmaResult

if TYPE_CHECKING:
    from passthru.hv.host import Host

DMA_ENGINE_VENDOR = 0x1234  # QEMU's edu device IDs
DMA_ENGINE_DEVICE = 0x11E8
DMA_ENGINE_CLASS = 0x00FF00  # unclassified device
BAR_SIZE = 0x1000
BUFFER_OFFSET = 0x800
BUFFER_SIZE = 0x800
DMA_LATENCY_NS = 500


class Ctrl(IntFlag):
    DIR_READ = 1 << 0  # read memory into the buffer (else: write the buffer to memory)
    IRQ_EN = 1 << 1
    RID_OVERRIDE = 1 << 2


class Status(IntFlag):
    BUSY = 1 << 0
    DONE = 1 << 1
    ERROR = 1 << 2


ID_REG, DMA_ADDR, DMA_LEN, CTRL, DOORBELL = 0x00, 0x08, 0x10, 0x14, 0x18
STATUS, MSI_ADDR, MSI_DATA, REQUESTER_ID, DMA_COUNT = 0x1C, 0x20, 0x28, 0x2C, 0x30

_M64 = (1 << 64) - 1
DMA_ENGINE_REGS: tuple[Register, ...] = (
    Register("ID", ID_REG, 4, 0x11E8_0100),
    Register("DMA_ADDR", DMA_ADDR, 8, 0, writable=_M64),
    Register("DMA_LEN", DMA_LEN, 4, 0, writable=0xFFFF_FFFF),
    Register("CTRL", CTRL, 4, 0, writable=int(Ctrl.DIR_READ | Ctrl.IRQ_EN | Ctrl.RID_OVERRIDE),
             fields=(Field("DIR", 0), Field("IRQ_EN", 1), Field("RID_OVERRIDE", 2))),
    Register("DOORBELL", DOORBELL, 4, 0),
    Register("STATUS", STATUS, 4, 0, rw1c=int(Status.DONE | Status.ERROR),
             fields=(Field("BUSY", 0), Field("DONE", 1), Field("ERROR", 2))),
    Register("MSI_ADDR", MSI_ADDR, 8, 0, writable=_M64),
    Register("MSI_DATA", MSI_DATA, 4, 0, writable=0xFFFF_FFFF),
    Register("REQUESTER_ID", REQUESTER_ID, 4, 0, writable=0xFFFF),
    Register("DMA_COUNT", DMA_COUNT, 4, 0),
)


@dataclass(frozen=True)
class DmaEngineState:
    """Everything that decides the engine's future: register values and the buffer."""

    registers: tuple[tuple[str, int], ...]
    buffer: bytes


@dataclass
class DmaEngineMetrics:
    transfers: int = 0
    errors: int = 0
    msis: int = 0


class DmaEngine:
    """The device model answering MMIO to ``fn``'s BAR 0; DMA goes through ``host``."""

    def __init__(self, host: Host, fn: PciFunction, *, latency_ns: int = DMA_LATENCY_NS) -> None:
        if not fn.bars:
            raise ValueError(f"{fn.bdf} has no BAR for the DMA engine's registers")
        self.host = host
        self.fn = fn
        self.latency_ns = latency_ns
        self.regs = RegisterFile(DMA_ENGINE_REGS)
        self.buffer = bytearray(BUFFER_SIZE)
        self.log: list[DmaResult] = []
        self.metrics = DmaEngineMetrics()
        self._generation = 0  # bumped by reset: an in-flight transfer of an older one is dropped
        host.attach_device(fn, read=self.read, write=self.write)

    def __repr__(self) -> str:
        st = Status(self.regs.get("STATUS"))
        return (f"<DmaEngine {self.fn.bdf} addr={self.regs.get('DMA_ADDR'):#x} "
                f"len={self.regs.get('DMA_LEN'):#x} status={st!r} log={len(self.log)}>")

    # ------------------------------------------------------------------ MMIO (from CPUs or peers)
    def read(self, bar: Bar, offset: int, size: int) -> bytes:
        if offset >= BUFFER_OFFSET:
            start = offset - BUFFER_OFFSET
            return bytes(self.buffer[start:start + size]).ljust(size, b"\xff")
        if size in (4, 8) and offset % size == 0:
            return self.regs.read(offset, size).to_bytes(size, "little")
        return b"\xff" * size  # unsupported access width: all-ones, as a master abort reads

    def write(self, bar: Bar, offset: int, data: bytes) -> None:
        if offset >= BUFFER_OFFSET:
            start = offset - BUFFER_OFFSET
            end = min(start + len(data), BUFFER_SIZE)
            self.buffer[start:end] = data[:end - start]
            return
        size = len(data)
        if size not in (4, 8) or offset % size:
            return  # dropped, like a write of a width the device does not decode
        reg = self.regs.write(offset, int.from_bytes(data, "little"), size)
        if reg is not None and reg.name == "DOORBELL":
            self._doorbell()

    def mmio_write(self, offset: int, value: int, size: int = 4) -> None:
        """A host CPU store to the BAR (a host driver's ``writel``/``writeq``)."""
        self.write(self.fn.bars[0], offset, value.to_bytes(size, "little"))

    def mmio_read(self, offset: int, size: int = 4) -> int:
        return int.from_bytes(self.read(self.fn.bars[0], offset, size), "little")

    def bar_image(self) -> bytes:
        """BAR 0 as a peer or a CPU would read it: registers then buffer (for diffing)."""
        regs = b"".join(self.regs.read(off, 4).to_bytes(4, "little")
                        for off in range(0, BUFFER_OFFSET, 4))
        return regs + bytes(self.buffer)

    # ------------------------------------------------------------------ the engine
    def _doorbell(self) -> None:
        if self.regs.get("STATUS") & Status.BUSY:
            return
        self.regs.update("STATUS", set_bits=Status.BUSY)
        self.host.env.process(self._run(self._generation))

    def _run(self, generation: int) -> Generator[Any, Any, None]:
        yield self.latency_ns
        if generation != self._generation:
            return  # reset while in flight: the transfer is abandoned
        r = self.regs
        addr, length, ctrl = r.get("DMA_ADDR"), r.get("DMA_LEN"), Ctrl(r.get("CTRL"))
        length = min(length, BUFFER_SIZE)
        rid = r.get("REQUESTER_ID") if ctrl & Ctrl.RID_OVERRIDE else None
        if ctrl & Ctrl.DIR_READ:
            res = self._read(addr, length, rid)
            if res.ok and res.data is not None:
                self.buffer[:length] = res.data
        else:
            res = self._write(addr, bytes(self.buffer[:length]), rid)
        self.log.append(res)
        self.metrics.transfers += 1
        done = Status.DONE if res.ok else Status.ERROR
        if not res.ok:
            self.metrics.errors += 1
        r.set("DMA_COUNT", r.get("DMA_COUNT") + 1)
        if ctrl & Ctrl.IRQ_EN:
            msi = self._write(r.get("MSI_ADDR"), r.get("MSI_DATA").to_bytes(4, "little"), rid)
            self.log.append(msi)
            self.metrics.msis += 1
        r.update("STATUS", set_bits=done, clear_bits=Status.BUSY)

    def _write(self, addr: int, data: bytes, rid: int | None) -> DmaResult:
        if rid is None:
            return self.host.dma_write(self.fn, addr, data)
        return self.host.platform.dma_write(self.fn, addr, data, requester_id=rid)

    def _read(self, addr: int, length: int, rid: int | None) -> DmaResult:
        if rid is None:
            return self.host.dma_read(self.fn, addr, length)
        return self.host.platform.dma_read(self.fn, addr, length, requester_id=rid)

    # ------------------------------------------------------------------ reset and state
    def reset(self) -> None:
        """Function-level reset: registers and buffer to reset values, in-flight work dropped."""
        self._generation += 1
        self.regs.reset()
        self.buffer[:] = bytes(BUFFER_SIZE)

    def save_state(self) -> DmaEngineState:
        if self.regs.get("STATUS") & Status.BUSY:
            raise ValueError(f"{self.fn.bdf}: DMA engine is busy; quiesce it before saving")
        return DmaEngineState(tuple((reg.name, self.regs.get(reg.name)) for reg in self.regs),
                              bytes(self.buffer))

    def load_state(self, state: DmaEngineState) -> None:
        self._generation += 1
        for name, value in state.registers:
            self.regs.set(name, value)
        self.buffer[:] = state.buffer

