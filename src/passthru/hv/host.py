"""A virtualization host: cores, RAM, PCIe topology, VT-d unit, IOMMU driver, VMs, clock.

What is modelled
    The host as the hypervisor sees it. Host RAM is a :class:`HostMemory`; the hypervisor
    keeps ``reserve_bytes`` at the bottom for itself and hands the rest to a buddy
    :class:`FrameAllocator` shared by guest RAM, IOMMU tables and posted-interrupt
    descriptors. The :class:`Platform` joins topology, memory and one :class:`DmarUnit`
    programmed by the :class:`IommuDriver` (strict or lazy unmap; optionally every function
    starts in an identity "passthrough" default domain, as with Linux ``iommu=pt``).

    Device models issue DMA through :meth:`Host.dma_write` / :meth:`Host.dma_read`, which
    call the platform and then do what the root complex and the host kernel do with the
    outcome: an interrupt (remapped or posted) is routed to the vCPU its IRTE belongs to, and
    a write that landed in a VM's RAM is reported through that VM's input choke point
    (``Vm.inject``). The IOTLB misses a request caused are costed with
    ``Costs.iotlb_miss_walk_ns`` (``last_dma_ns``, ``iotlb_walk_ns``).

What is left out
    Host scheduling (a vCPU owns its pinned core), NUMA, the host kernel's own DMA, multiple
    DMAR units, the host LAPIC (a remapped interrupt goes straight to the owning vCPU's
    injection path: the VFIO eventfd -> KVM irqfd chain is one cost), and vCPU migration
    (the posted-interrupt descriptor's NDST never changes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from passthru.analysis.groups import IommuGroup, compute_iommu_groups
from passthru.errors import ConfigError
from passthru.hv.costs import DEFAULT_COSTS, Costs
from passthru.hv.iommu_driver import IommuDriver
from passthru.hv.vm import Vm
from passthru.hw.frames import FrameAllocator
from passthru.hw.iommu.vtd.entries import (
    PID_CONTROL,
    PID_HEAD,
    PID_NDST_SHIFT,
    PID_NV_SHIFT,
    PID_ON,
)
from passthru.hw.iommu.vtd.intremap import InterruptResult
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.memory import HostMemory
from passthru.hw.pci.device import Bar, PciFunction
from passthru.hw.pci.topology import Topology
from passthru.hw.platform import DmaResult, DmaStatus, Platform
from passthru.sim import Environment, Streams

GiB = 1 << 30
MiB = 1 << 20
POSTED_INTR_VECTOR: Final = 0xF2  # Linux arch/x86/include/asm/irq_vectors.h POSTED_INTR_VECTOR

DeviceRead = Callable[[Bar, int, int], bytes]
DeviceWrite = Callable[[Bar, int, bytes], None]
DeviceWriteValue = Callable[[Bar, int, int, int], None]  # (bar, offset, value, size)


@dataclass(slots=True)
class IrqRoute:
    """Where an IRTE's interrupts go: a VM's vCPU, posted or injected."""

    vm: Vm
    vcpu: int
    vector: int
    posted: bool
    pda: int | None = None  # the vCPU's posted-interrupt descriptor (posted routes)


class Host:
    """One host. ``create_vm`` builds guests; ``hv.vfio`` and ``hv.emulated`` give them devices."""

    def __init__(
        self,
        topology: Topology,
        *,
        cores: int = 8,
        memory_bytes: int = 8 * GiB,
        reserve_bytes: int = 256 * MiB,
        strict: bool = True,
        identity_default: bool = False,
        posted_interrupts: bool = True,
        allow_shared_cores: bool = False,
        costs: Costs = DEFAULT_COSTS,
        seed: int = 0,
    ) -> None:
        if not isinstance(cores, int) or cores < 1:
            raise ConfigError(f"host cores {cores!r} must be a positive int")
        if not 0 <= reserve_bytes < memory_bytes or reserve_bytes % (2 * MiB):
            raise ConfigError(f"host reserve_bytes {reserve_bytes:#x} must be a 2 MiB multiple "
                              f"below memory_bytes {memory_bytes:#x}")
        self.cores = cores
        # Several VMs' vCPUs on one core (overcommit); off by default, as for dedicated cores.
        self.allow_shared_cores = allow_shared_cores
        self.costs = costs
        self.seed = seed
        self.env = Environment()
        self.streams = Streams(seed)
        self.topology = topology
        self.memory = HostMemory(memory_bytes)
        self.frames = FrameAllocator(reserve_bytes, memory_bytes - reserve_bytes)
        self.posted_interrupts = posted_interrupts
        self.unit = DmarUnit(self.memory, posted_interrupts=posted_interrupts)
        self.iommu = IommuDriver(self.memory, self.frames, self.unit, strict=strict,
                                 clock=lambda: self.env.now)
        self.platform = Platform(topology, self.memory, self.unit)
        self.vms: dict[str, Vm] = {}
        self.core_owner: dict[int, str] = {}  # core -> the first VM pinned to it
        self.device_models: dict[int, tuple[DeviceRead | None, DeviceWrite | None]] = {}
        # id(fn) -> the model's register-level write, for CPU stores (no bytes round trip)
        self.device_write_values: dict[int, DeviceWriteValue] = {}
        self.owner: dict[int, Vm] = {}  # id(PciFunction) -> the VM it is assigned to
        self.irq_routes: dict[int, IrqRoute] = {}  # IRTE handle -> route
        self._pi_desc: dict[tuple[str, int], int] = {}  # (vm, vcpu) -> descriptor HPA
        self._groups: list[IommuGroup] | None = None
        self.last_dma_ns = 0  # IOTLB-miss walk time of the last dma_write/dma_read
        self.iotlb_walk_ns = 0  # all of it so far
        self.identity_domain = None
        if identity_default:  # iommu=pt: every function starts in the identity domain
            self.identity_domain = self.iommu.alloc_domain("identity")
            for fn in topology.functions():
                if not fn.is_bridge:
                    self.iommu.attach(self.identity_domain, fn.rid)

    def __repr__(self) -> str:
        return (f"<Host {self.cores} cores, {self.memory.size >> 30} GiB, "
                f"vms={list(self.vms)}, {self.iommu!r}>")

    # ------------------------------------------------------------------ VMs
    def create_vm(self, name: str, memory_bytes: int, vcpu_pins: list[int]) -> Vm:
        if name in self.vms:
            raise ConfigError(f"vm name {name!r} is already used on this host")
        vm = Vm(self, name, memory_bytes, list(vcpu_pins))
        self.vms[name] = vm
        return vm

    @property
    def groups(self) -> list[IommuGroup]:
        if self._groups is None:
            self._groups = compute_iommu_groups(self.topology)
        return self._groups

    def group_of(self, fn: PciFunction) -> IommuGroup:
        for g in self.groups:
            if any(d is fn for d in g.devices):
                return g
        raise ValueError(f"{fn.bdf} is in no IOMMU group")

    # ------------------------------------------------------------------ device models
    def attach_device(self, fn: PciFunction, *, read: DeviceRead | None = None,
                      write: DeviceWrite | None = None,
                      write_value: DeviceWriteValue | None = None) -> None:
        """Register the model answering MMIO to ``fn``'s BARs (from CPUs and from peers).

        ``write_value(bar, offset, value, size)``, if given, must do what ``write`` does with
        ``value.to_bytes(size, "little")``; a CPU store (a register-sized int) uses it."""
        self.device_models[id(fn)] = (read, write)
        if write_value is None:
            self.device_write_values.pop(id(fn), None)
        else:
            self.device_write_values[id(fn)] = write_value
        self.platform.attach_mmio(fn, read=read, write=write)

    def _walk_cost(self, walks_before: int) -> None:
        """Charge the IOTLB misses of the request just made (``last_dma_ns``)."""
        misses = self.unit.dma.walks - walks_before
        self.last_dma_ns = misses * self.costs.iotlb_miss_walk_ns
        self.iotlb_walk_ns += self.last_dma_ns

    def dma_write(self, fn: PciFunction, address: int, data: bytes) -> DmaResult:
        """A device write: platform path, then interrupt routing and input reporting.

        ``last_dma_ns`` is then the IOTLB-miss walk time the request cost; a device model
        that wants it on its timeline yields it.
        """
        walks = self.unit.dma.walks
        res = self.platform.dma_write(fn, address, data)
        self._walk_cost(walks)
        if res.status is DmaStatus.INTERRUPT and res.interrupt is not None:
            self._route_interrupt(res)
        elif res.status is DmaStatus.MEMORY:
            vm = self.owner.get(id(fn))
            if vm is not None and 0 <= address and address + len(data) <= vm.memory_bytes:
                vm.dma_write(address, data)  # IOVA = GPA in a VFIO domain
        return res

    def dma_read(self, fn: PciFunction, address: int, length: int) -> DmaResult:
        """A device read through the platform (``last_dma_ns`` as for ``dma_write``)."""
        walks = self.unit.dma.walks
        res = self.platform.dma_read(fn, address, length)
        self._walk_cost(walks)
        return res

    # ------------------------------------------------------------------ interrupts
    def posted_descriptor(self, vm: Vm, vcpu: int) -> int:
        """The 64-byte posted-interrupt descriptor of ``vm``'s ``vcpu`` (made on first use)."""
        key = (vm.name, vcpu)
        if key not in self._pi_desc:
            addr = self.frames.alloc(4096)
            self.memory.fill(addr, 4096, 0)
            core = vm.vcpus[vcpu].core
            ndst = core if self.iommu.x2apic else core << 8  # xAPIC: id in bits 15:8
            self.memory.write_u64(addr + PID_CONTROL, (POSTED_INTR_VECTOR << PID_NV_SHIFT)
                                  | (ndst << PID_NDST_SHIFT))
            self._pi_desc[key] = addr
        return self._pi_desc[key]

    def _route_interrupt(self, res: DmaResult) -> None:
        assert res.interrupt is not None
        self.route_interrupt(res.interrupt)

    def route_interrupt(self, intr: InterruptResult) -> None:
        """What the CPU side does with an interrupt that got through remapping: post it into
        (or inject it to) the vCPU its IRTE belongs to. A device model that has already
        remapped an MSI itself (a cached route, see hv.backends.nvme_paths) calls this."""
        route = self.irq_routes.get(intr.index) if intr.index is not None else None
        if route is None:
            return  # a host interrupt (or compatibility format): not the guests' business
        if intr.posted:
            # The CPU's posted-interrupt processing (SDM 29.6): PIR -> vIRR, clear ON.
            mem = self.memory
            pda = route.pda
            if pda is None:
                pda = self._pi_desc[(route.vm.name, route.vcpu)]
            *pir, ctl = PID_HEAD.unpack(mem.read(pda, PID_HEAD.size))
            for word, bits in enumerate(pir):
                while bits:  # lowest set bit first
                    low = bits & -bits
                    route.vm.deliver_interrupt(route.vcpu, word * 64 + low.bit_length() - 1,
                                               posted=True)
                    bits ^= low
            mem.write(pda, PID_HEAD.pack(0, 0, 0, 0, ctl & ~PID_ON))  # PIR taken, ON clear
        else:
            route.vm.deliver_interrupt(route.vcpu, route.vector, posted=False)
