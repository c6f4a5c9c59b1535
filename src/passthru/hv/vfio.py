"""VFIO-style device assignment (Linux drivers/vfio: vfio.c group viability, vfio_iommu_type1).

What is modelled
    - Group viability (vfio_group_viable / vfio_dev_driver_allowed): every function of the
      device's IOMMU group must be assigned to the same VM, or be a bridge (PCIe port or
      PCIe-to-PCI bridge) bound to no driver; otherwise ``AssignmentError`` names the group,
      the offending function and the VM.
    - One IOMMU domain per VM (one type1 container): all guest RAM is mapped IOVA = GPA,
      read/write, with 2 MiB pages where the backing allows, and pinned. Pinned 4 KiB pages
      are counted and costed with ``Costs.pin_page_4k_ns`` (``vm.stats.pin_ns``). Every
      function assigned and its DMA aliases (pci_for_each_dma_alias) are attached.
    - The function's memory BARs are mapped into guest physical space in the VM's MMIO window
      above RAM; guest accesses go straight to the device model (no exit), costed as a PCIe
      round trip for reads.
    - MSI through interrupt remapping: an IRTE per vector, in posted format targeting the
      vCPU's posted-interrupt descriptor when the host has posted interrupts, otherwise a
      remapped entry whose interrupt the host injects with an exit.

What is left out
    Config-space emulation and BAR relocation by the guest, MSI-X tables, the vIOMMU,
    unassignment/hot-unplug, lazy (on-fault) pinning, the reserved-region (MSI window) checks
    of type1, and peer-to-peer DMA to another assigned device's BAR through the IOMMU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from passthru.analysis.groups import pci_for_each_dma_alias
from passthru.errors import AssignmentError
from passthru.hv.host import Host, IrqRoute
from passthru.hv.iommu_driver import Domain
from passthru.hv.vm import PAGE_4K, MmioRegion, Vm
from passthru.hw.pci.device import Bar, PciFunction


@dataclass(slots=True)
class _BarWindow:
    """The EPT mapping of one BAR: guest MMIO goes to the device model at ``bar`` offsets."""

    host: Host
    fn: PciFunction
    bar: Bar
    _key: int = field(init=False, repr=False)  # id(fn): the host's device-model key

    def __post_init__(self) -> None:
        self._key = id(self.fn)

    def read(self, offset: int, size: int) -> int:
        read, _ = self.host.device_models.get(self._key, (None, None))
        data = read(self.bar, offset, size) if read is not None else b"\xff" * size
        return int.from_bytes(data[:size], "little")

    def write(self, offset: int, value: int, size: int) -> None:
        write_value = self.host.device_write_values.get(self._key)
        if write_value is not None:  # the model takes the register value as an int
            write_value(self.bar, offset, value, size)
            return
        _, write = self.host.device_models.get(self._key, (None, None))
        if write is not None:
            write(self.bar, offset, value.to_bytes(size, "little"))


@dataclass
class AssignedDevice:
    fn: PciFunction
    vm: Vm
    bar_gpas: dict[int, int] = field(default_factory=dict)  # BAR index -> GPA
    irq_handles: dict[int, int] = field(default_factory=dict)  # guest vector -> IRTE handle

    def __repr__(self) -> str:
        bars = ", ".join(f"BAR{i}@{g:#x}" for i, g in self.bar_gpas.items())
        return f"<AssignedDevice {self.fn.bdf} -> vm {self.vm.name!r} {bars}>"


_DMA_MANAGED_DRIVERS: Final = frozenset({None, "pcieport", "pci-stub", "vfio-pci"})


class Vfio:
    """The assignment backend of one host."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.domains: dict[str, Domain] = {}  # vm name -> its container's domain
        self.devices: dict[int, AssignedDevice] = {}  # id(fn) -> assignment

    def __repr__(self) -> str:
        return f"<Vfio {len(self.devices)} devices, {len(self.domains)} domains>"

    # ------------------------------------------------------------------ viability
    @staticmethod
    def bridge_may_stay(dev: PciFunction) -> bool:
        """A bridge in the group that does not make it unviable: unbound, or bound to a driver
        that does no DMA of its own (Linux >= 5.19 ``driver_managed_dma``: pcieport, pci-stub,
        vfio-pci; older kernels' vfio_dev_driver_allowed took any non-normal header)."""
        return dev.is_bridge and dev.driver in _DMA_MANAGED_DRIVERS

    def check_viable(self, vm: Vm, fns: list[PciFunction]) -> None:
        """vfio_group_viable: raise ``AssignmentError`` unless every group member is ours."""
        ours = {id(f) for f in fns}
        ours |= {k for k, owner in self.host.owner.items() if owner is vm}
        for fn in fns:
            group = self.host.group_of(fn)
            for dev in group.devices:
                if id(dev) in ours:
                    continue
                if self.bridge_may_stay(dev):
                    continue
                other = self.host.owner.get(id(dev))
                why = (f'is assigned to vm "{other.name}"' if other is not None
                       else f'is not assigned to vm "{vm.name}"')
                raise AssignmentError(f"group {group.id} is not viable: {dev.bdf} {why}")

    # ------------------------------------------------------------------ assignment
    def assign(self, vm: Vm, *fns: PciFunction) -> list[AssignedDevice]:
        """Assign ``fns`` (typically a whole group) to ``vm``."""
        for fn in fns:
            if fn.is_bridge:
                raise AssignmentError(f"{fn.bdf} is a bridge and cannot be assigned")
            other = self.host.owner.get(id(fn))
            if other is not None:
                raise AssignmentError(f'{fn.bdf} is already assigned to vm "{other.name}"')
        self.check_viable(vm, list(fns))
        domain = self._domain(vm)
        out = []
        for fn in fns:
            for rid in [fn.rid] + [alias for _, alias in pci_for_each_dma_alias(fn)]:
                self.host.iommu.attach(domain, rid)
            dev = AssignedDevice(fn, vm)
            for bar in fn.bars:
                gpa = vm.alloc_mmio(bar.size)
                vm.add_mmio(MmioRegion(f"{fn.bdf}/BAR{bar.index}", gpa, bar.size,
                                       _BarWindow(self.host, fn, bar), traps=False))
                dev.bar_gpas[bar.index] = gpa
            self.host.owner[id(fn)] = vm
            self.devices[id(fn)] = dev
            out.append(dev)
        return out

    def _domain(self, vm: Vm) -> Domain:
        """The VM's container: map and pin all guest RAM once (vfio_iommu_type1 DMA_MAP)."""
        if vm.name in self.domains:
            return self.domains[vm.name]
        iommu = self.host.iommu
        domain = iommu.alloc_domain("dma")
        for gpa, hpa, size in vm.ram_chunks():
            iommu.map(domain, gpa, hpa, size, read=True, write=True)
        pages = vm.memory_bytes // PAGE_4K
        vm.stats.pinned_pages += pages
        vm.stats.pin_ns += pages * self.host.costs.pin_page_4k_ns
        self.domains[vm.name] = domain
        return domain

    # ------------------------------------------------------------------ interrupts
    def setup_msi(self, fn: PciFunction, vector: int, vcpu: int = 0) -> tuple[int, int]:
        """An IRTE delivering the device's MSI as guest ``vector`` on ``vcpu``.

        Returns the (address, data) pair to program into the device's MSI capability.
        """
        dev = self.devices.get(id(fn))
        if dev is None:
            raise AssignmentError(f"{fn.bdf} is not assigned to any vm")
        host, vm = self.host, dev.vm
        if not 0 <= vcpu < len(vm.vcpus):
            raise AssignmentError(f'vm "{vm.name}" has no vcpu {vcpu} for the MSI of {fn.bdf}')
        posted = host.posted_interrupts
        pda = None
        if posted:
            pda = host.posted_descriptor(vm, vcpu)
            handle = host.iommu.alloc_irte(fn.rid, vector, 0, posted=pda)
        else:
            # Remapped to a host vector on the vCPU's core; the host injects `vector`.
            handle = host.iommu.alloc_irte(fn.rid, vector, vm.vcpus[vcpu].core)
        host.irq_routes[handle] = IrqRoute(vm, vcpu, vector, posted, pda)
        dev.irq_handles[vector] = handle
        return host.iommu.msi_message(handle)
