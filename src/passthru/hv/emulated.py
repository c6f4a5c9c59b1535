"""An emulated device: every guest MMIO access traps to a Python model in the hypervisor.

What is modelled
    A small register block (a "scratch + doorbell" device in the style of QEMU's
    ``hw/misc/pci-testdev.c`` / ``edu.c``) placed in the VM's MMIO window. The region traps:
    each access is one VM exit, counted in ``vm.stats`` and costed as an exit round trip
    (in-kernel, or a heavyweight exit to a userspace device model when ``userspace=True``)
    plus instruction decode/emulation (``Costs``). Ringing the doorbell makes the model write
    the scratch value into guest RAM at ``DMA_ADDR`` on the guest's behalf; the hypervisor
    performs the copy (no IOMMU: the model lives in the hypervisor) and reports it through the
    VM's input choke point like a device DMA.

Registers (offset, width 8 bytes unless noted)
    ID 0x00 (RO, 4 bytes) ``0x50415353`` ("PASS"); SCRATCH 0x08 (RW); DMA_ADDR 0x10 (RW, GPA);
    DOORBELL 0x18 (WO: any write copies SCRATCH to DMA_ADDR, 8 bytes); COUNT 0x20 (RO: doorbells
    rung). Unknown offsets read as all-ones and ignore writes.

What is left out
    PCI config space and BAR programming by the guest (the region's GPA is chosen by the
    hypervisor), interrupts, ioeventfd fast paths, and save/restore of the model.
"""

from __future__ import annotations

from passthru.hv.vm import MmioRegion, Vm

ID_VALUE = 0x50415353

REG_ID = 0x00
REG_SCRATCH = 0x08
REG_DMA_ADDR = 0x10
REG_DOORBELL = 0x18
REG_COUNT = 0x20
REGION_SIZE = 0x1000


class ScratchDevice:
    """The register model. ``attach`` places it into a VM as a trapping MMIO region."""

    def __init__(self, vm: Vm, *, name: str = "scratch0", userspace: bool = False) -> None:
        self.vm = vm
        self.name = name
        self.scratch = 0
        self.dma_addr = 0
        self.count = 0
        self.base = vm.alloc_mmio(REGION_SIZE)
        vm.add_mmio(MmioRegion(name, self.base, REGION_SIZE, self, traps=True,
                               userspace=userspace))

    def __repr__(self) -> str:
        return (f"<ScratchDevice {self.name} @ {self.base:#x} in vm {self.vm.name!r}, "
                f"scratch={self.scratch:#x}, count={self.count}>")

    def reset(self) -> None:
        self.scratch = self.dma_addr = self.count = 0

    def read(self, offset: int, size: int) -> int:
        mask = (1 << (8 * size)) - 1
        if offset == REG_ID:
            return ID_VALUE & mask
        if offset == REG_SCRATCH:
            return self.scratch & mask
        if offset == REG_DMA_ADDR:
            return self.dma_addr & mask
        if offset == REG_COUNT:
            return self.count & mask
        return mask

    def write(self, offset: int, value: int, size: int) -> None:
        if offset == REG_SCRATCH:
            self.scratch = value
        elif offset == REG_DMA_ADDR:
            self.dma_addr = value
        elif offset == REG_DOORBELL:
            self.count += 1
            data = self.scratch.to_bytes(8, "little")
            self.vm.write(self.dma_addr, data)
            self.vm.dma_write(self.dma_addr, data)
