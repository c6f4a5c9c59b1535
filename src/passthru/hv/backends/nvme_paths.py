"""NVMe block I/O paths: bare metal, VFIO passthrough and a fully emulated controller.

What is modelled
    Every path builds one host (:class:`~passthru.hv.host.Host`) with a physical NVMe SSD
    behind a root port (``nvme_topology``) and runs the one NVMe driver
    (:class:`~passthru.guest.drivers.nvme.NvmeDriver`) unchanged; the paths differ only in
    where that driver runs and what its accesses cost:

    ``bare-metal``
        The host's own kernel (:class:`HostKernel`) drives the SSD; the IOMMU is in
        pass-through mode for host DMA (Linux ``iommu=pt``); MSI-X goes through interrupt
        remapping to a host core. No VM, no exit.
    ``passthrough``
        VFIO assignment (:class:`~passthru.hv.vfio.Vfio`): the guest's BAR0 is mapped by EPT
        so doorbells are written directly; DMA uses GPA as IOVA through the IOMMU; MSI-X is
        posted or injected (``PathConfig.posted_interrupts``). The MSI-X table is trapped like
        QEMU's vfio-pci does: the guest's entry is turned into an IRTE by ``Vfio.setup_msi``.
    ``emulated``
        A userspace device model (QEMU ``hw/nvme``) in the hypervisor: every BAR0 access is a
        heavyweight exit; the model is the same :class:`NvmeController` reading and writing
        guest RAM directly (no IOMMU) and performing the I/O on a host backend
        (:class:`HostNvmeBackend`: io_submit into the host block layer and the host's NVMe
        driver on the physical SSD). Completions are injected through KVM (irqfd).

    CPU time is a resource (:class:`~passthru.hv.cpu.Cpu`): each CPU runs its work serially,
    FIFO, so a path is bounded by its busiest CPU. Bare metal runs the driver, its interrupt
    handler and the block layer on host core 0 (fio ``numjobs=1`` is one thread on one core;
    Linux blk-mq completes a request on the CPU the interrupt hit, and the NVMe driver's
    managed IRQ affinity points a queue's vector at the CPUs that submit to it). In a VM the
    guest driver and its handler run on vCPU 0. The emulated controller's MMIO exits are
    handled on the vCPU thread (QEMU ``kvm_cpu_exec`` -> ``memory_region_dispatch_write``);
    command processing, ``io_submit`` and the AIO completion run on the device model's
    thread (QEMU's main loop: ``nvme_process_sq`` is a bottom half), which is
    :class:`HostNvmeBackend`'s host core, where the host NVMe driver's submit and interrupt
    work runs too.

    ``PATHS`` maps a path name to a builder ``PathConfig -> IoPath``; other backends join it
    with :func:`register_path` (``passthru.hv.backends.virtio_blk`` adds "virtio-blk" when
    imported; :func:`build_path` imports it on first use).

Left out
    HLT exits while the vCPU idles between I/Os and halt polling, host scheduling of the
    device model's thread (it owns its core and runs as soon as it is kicked and free),
    preemption (an interrupt handler queues behind work already booked on its CPU), one
    core per fio job on bare metal (all jobs share core 0, as they share vCPU 0), ioeventfd
    for the emulated doorbells (QEMU's default for NVMe is off), vIOMMU, and SR-IOV/mediated
    paths.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Final

from passthru.errors import ConfigError
from passthru.guest.drivers.nvme import NvmeDriver
from passthru.guest.kernel import GuestKernel
from passthru.hv.costs import DEFAULT_COSTS, Costs
from passthru.hv.cpu import Cpu, aio_completion_ns, busy_by_name
from passthru.hv.host import Host
from passthru.hv.vfio import Vfio
from passthru.hv.vm import MmioRegion, Vm
from passthru.hw.devices.nvme.controller import NamespaceMedia, NvmeController
from passthru.hw.devices.nvme.namespace import MediaProfile, Namespace
from passthru.hw.devices.nvme.regs import BAR0_SIZE, MSIX_ENTRY, MSIX_TABLE
from passthru.hw.iommu.vtd.intremap import InterruptResult
from passthru.hw.pci.config_space import ConfigSpace
from passthru.hw.pci.device import AcsSpec, Bar, PciFunction
from passthru.hw.pci.fabric import MemRequest, RouteKind
from passthru.hw.pci.topology import Topology
from passthru.hw.platform import DmaStatus
from passthru.scenarios.io_path import IoPath, IoRequest, Op, PathCounters, PathName
from passthru.sim import Environment, Event

Gen = Generator[Any, Any, Any]
MiB = 1 << 20
GiB = 1 << 30
NVME_BDF: Final = "0000:01:00.0"
_OPS: tuple[Op, Op, Op] = ("flush", "write", "read")


@dataclass(frozen=True)
class PathConfig:
    """What a path builder gets: the device, the costs and the workload's needs."""

    device: MediaProfile
    costs: Costs = DEFAULT_COSTS
    seed: int = 0
    posted_interrupts: bool = True
    queue_depth: int = 32  # per I/O queue (per job)
    io_queues: int = 1  # one queue pair per job
    max_io_bytes: int = 128 * 1024
    capacity_bytes: int = 1 << 40  # the namespace (sparse)
    options: dict[str, Any] = field(default_factory=dict)  # backend-specific knobs

    def __post_init__(self) -> None:
        if self.queue_depth > self.device.max_queue_depth:
            raise ConfigError(f"qd = {self.queue_depth} exceeds the controller's limit "
                              f"{self.device.max_queue_depth} (CAP.MQES of device "
                              f"{self.device.name!r})")
        if self.queue_depth < 1 or self.io_queues < 1:
            raise ConfigError(f"qd = {self.queue_depth} and numjobs = {self.io_queues} "
                              "must be >= 1")
        if self.io_queues > self.device.max_io_queues:
            raise ConfigError(f"numjobs = {self.io_queues} exceeds the I/O queues of device "
                              f"{self.device.name!r} ({self.device.max_io_queues})")


PathBuilder = Callable[[PathConfig], IoPath]
PATHS: dict[str, PathBuilder] = {}
_PLUGINS: Final = ("passthru.hv.backends.virtio_blk",)


def register_path(name: str, builder: PathBuilder) -> None:
    """Make ``name`` buildable by :func:`build_path` (re-registering replaces)."""
    PATHS[name] = builder


def _load_plugins() -> None:
    for mod in _PLUGINS:
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            if exc.name != mod:  # the module exists but is broken: say so
                raise


def available_paths() -> list[str]:
    _load_plugins()
    return list(PATHS)


def build_path(name: str, cfg: PathConfig) -> IoPath:
    """Build the path called ``name``; ``ConfigError`` lists the known names."""
    if name not in PATHS:
        _load_plugins()
    if name not in PATHS:
        raise ConfigError(f"path {name!r} does not exist (have: {', '.join(PATHS)})")
    return PATHS[name](cfg)


# ---------------------------------------------------------------------- the host's hardware
def nvme_topology() -> Topology:
    """One root port with ACS and an NVMe SSD (class 01:08:02, MSI-X, 16 KiB BAR0)."""
    t = Topology()
    t.add_function(t.root_bus(), 0, pcie_type=None, vendor_id=0x8086, device_id=0x09A2,
                   class_code=0x060000, name="Intel Corporation Ice Lake Memory Map/VT-d")
    rp = t.add_root_port(1, acs=AcsSpec.linux_default(), vendor_id=0x8086, device_id=0x347A,
                         name="Intel Corporation Ice Lake PCIe Root Port")
    t.add_endpoint(rp, 0, vendor_id=0x8086, device_id=0x0B60, class_code=0x010802,
                   name="Intel Corporation NVMe DC SSD", msix=True,
                   bars=[Bar(0, BAR0_SIZE, is_64=True)])
    return t.enumerate()


def nvme_host(cfg: PathConfig, *, identity_default: bool = False) -> Host:
    """The 4-core host with the SSD of ``nvme_topology`` that every path builds on;
    ``identity_default``: host DMA in the identity domain (``iommu=pt``)."""
    return Host(nvme_topology(), cores=4, identity_default=identity_default,
                posted_interrupts=cfg.posted_interrupts, costs=cfg.costs, seed=cfg.seed)


def _ram_bytes(cfg: PathConfig) -> int:
    need = 16 * MiB + cfg.io_queues * cfg.queue_depth * (cfg.max_io_bytes + 4096)
    return -(-need // (2 * MiB)) * 2 * MiB


class PciDmaPort:
    """The controller's DMA port on real hardware: ``Host.dma_read/dma_write`` (fabric, IOMMU,
    interrupt remapping); counts requests for the IOTLB hit rate and IOTLB-miss stalls.

    Route cache: the fabric's decision for a request depends on its address only through
    which BAR or bridge window claims it. Every address below the lowest decoded MMIO
    address of the topology (and outside the interrupt window) is claimed by nobody, so all
    of them take the route a probe request took (upstream to the root complex with a fixed
    requester ID); the probe is repeated whenever a config register anywhere has been
    written since (``ConfigSpace.generation``: bus numbers, windows, BARs, ACS control).
    For those the port skips the walk and hands the request straight to the VT-d unit,
    then does what ``Host.dma_write`` does with the outcome (walk cost, input reporting to
    the owning VM). Anything else takes the full ``Host`` path.
    ``tests/devices/test_nvme_paths_port.py`` checks both agree.
    """

    def __init__(self, host: Host, fn: PciFunction,
                 on_interrupt: Callable[[int, int], None] | None = None, *,
                 route_cache: bool = True) -> None:
        self.host = host
        self.fn = fn
        self.on_interrupt = on_interrupt  # (IRTE index, vector) of a host-owned interrupt
        self.requests = 0
        self.faults = 0
        self._stall = 0
        self._fn_key = id(fn)  # the key of Host.owner
        unit = host.unit
        self._unit_read, self._unit_write = unit.dma_read, unit.dma_write
        self._remap = unit.ir.remap  # what DmarUnit.remap_interrupt delegates to
        self._dma = unit.dma
        self._walks0 = self._dma.walks
        self._walk_ns = host.costs.iotlb_miss_walk_ns
        self._route_cache = route_cache
        self._learn_routes()

    def _learn_routes(self) -> None:
        """(Re)probe the fabric for the route cache; it holds while no config register
        changes (``ConfigSpace.generation``)."""
        host, fn = self.host, self.fn
        self._generation = ConfigSpace.generation
        self._limit = 0
        self._msi_fast = False
        self._rid = fn.rid
        if self._route_cache:
            msi = host.platform.fabric.route(fn, MemRequest(fn.rid, INTERRUPT_WINDOW, 4, True))
            self._msi_fast = msi.kind is RouteKind.ROOT_COMPLEX
            probe = host.platform.fabric.route(fn, MemRequest(fn.rid, 0, 8, False))
            if probe.kind is RouteKind.ROOT_COMPLEX and self._msi_fast:
                self._limit = min([INTERRUPT_WINDOW] + _decoded_bases(host.topology))
                if probe.rc_requester_id is not None:
                    self._rid = probe.rc_requester_id

    def __repr__(self) -> str:
        return f"<PciDmaPort {self.fn.bdf} requests={self.requests} faults={self.faults}>"

    @property
    def misses(self) -> int:
        return self._dma.walks - self._walks0

    def read(self, addr: int, n: int) -> bytes | None:
        self.requests += 1
        if self._generation != ConfigSpace.generation:
            self._learn_routes()  # a config write may have changed any route
        if addr + n <= self._limit and addr >= 0:
            dma = self._dma
            walks = dma.walks
            got = self._unit_read(self._rid, addr, n)
            if dma.walks != walks:
                ns = (dma.walks - walks) * self._walk_ns
                self._stall += ns
                self.host.iotlb_walk_ns += ns
            if got.__class__ is bytes:
                return got  # type: ignore[return-value]
            self.faults += 1
            return None
        host = self.host
        res = host.dma_read(self.fn, addr, n)
        self._stall += host.last_dma_ns
        if res.status is DmaStatus.MEMORY:
            return res.data
        self.faults += 1
        return None

    def write(self, addr: int, data: bytes) -> bool:
        self.requests += 1
        if self._generation != ConfigSpace.generation:
            self._learn_routes()
        host = self.host
        if addr + len(data) <= self._limit and addr >= 0:
            dma = self._dma
            walks = dma.walks
            fault = self._unit_write(self._rid, addr, data)
            if dma.walks != walks:
                ns = (dma.walks - walks) * self._walk_ns
                self._stall += ns
                host.iotlb_walk_ns += ns
            if fault is not None:
                self.faults += 1
                return False
            vm = host.owner.get(self._fn_key)
            if vm is not None and addr + len(data) <= vm.memory_bytes:
                vm.dma_write(addr, data)  # IOVA = GPA in a VFIO domain (as Host.dma_write)
            return True
        res = host.dma_write(self.fn, addr, data)
        self._stall += host.last_dma_ns
        if res.status is DmaStatus.MEMORY:
            return True
        self.faults += 1
        return False

    def msi(self, addr: int, data: int) -> None:
        if self._generation != ConfigSpace.generation:
            self._learn_routes()
        host = self.host
        if self._msi_fast:  # the MSI window is routed to the RC: straight to remapping
            got = self._remap(self._rid, addr, data)
            if got.__class__ is not InterruptResult:
                self.faults += 1
                return
            intr: InterruptResult | None = got  # type: ignore[assignment]
            host.route_interrupt(got)  # type: ignore[arg-type]
        else:
            intr = host.dma_write(self.fn, addr, data.to_bytes(4, "little")).interrupt
        if (self.on_interrupt is not None and intr is not None and not intr.posted
                and intr.index is not None and intr.index not in self.host.irq_routes):
            self.on_interrupt(intr.index, intr.vector)

    def take_stall(self) -> int:
        s, self._stall = self._stall, 0
        return s


INTERRUPT_WINDOW: Final = 0xFEE0_0000


def _decoded_bases(topology: Topology) -> list[int]:
    """The lowest address of every BAR and bridge memory window in ``topology``."""
    out = []
    for fn in topology.functions():
        for bar in fn.bars:
            if bar.address is not None:
                out.append(bar.address)
        for w in (fn.mem_window, fn.pref_window):
            if w is not None:
                out.append(w[0])
    return out


class MsixTrap:
    """BAR0 as the platform sees it, with the MSI-X table trapped (QEMU vfio-pci's
    ``vfio_msix_vector_do_use``; Linux's IRQ-remapping MSI domain on bare metal): the driver's
    compatibility-format entry is replaced by the remappable message ``remap(entry, vector)``
    returns. Everything else goes straight to the controller."""

    def __init__(self, ctrl: NvmeController, remap: Callable[[int, int], tuple[int, int]]):
        self.ctrl = ctrl
        self.remap = remap
        self.end = MSIX_TABLE + ctrl.msix_vectors * MSIX_ENTRY
        self.remapped: dict[int, int] = {}  # entry -> guest vector

    def read(self, bar: Bar, offset: int, size: int) -> bytes:
        return self.ctrl.bar_read(bar, offset, size)

    def write(self, bar: Bar, offset: int, data: bytes) -> None:
        self.write_value(bar, offset, int.from_bytes(data, "little"), len(data))

    def write_value(self, bar: Bar, offset: int, value: int, size: int) -> None:
        """``write`` with the data as a register value (what a CPU store carries)."""
        if MSIX_TABLE <= offset < self.end:
            entry, off = divmod(offset - MSIX_TABLE, MSIX_ENTRY)
            if off in (0, 4):
                return  # the address: kept by the trap, the device gets the remapped one
            if off == 8:
                vector = value & 0xFF
                addr, msg = self.remap(entry, vector)
                self.remapped[entry] = vector
                c, base = self.ctrl, MSIX_TABLE + entry * MSIX_ENTRY
                c.mmio_write(base, addr & 0xFFFF_FFFF, 4)
                c.mmio_write(base + 4, addr >> 32, 4)
                c.mmio_write(base + 8, msg, 4)
                return
        # Outside the table nothing is trapped: the controller's register file (doorbells).
        self.ctrl.mmio_write(offset, value, size)


# ---------------------------------------------------------------------- the host's kernel
class HostKernel:
    """The host kernel as the driver sees it on bare metal: the :class:`GuestKernel` API on a
    host core. DMA buffers are host frames (addresses are HPAs; the IOMMU passes host DMA
    through), MMIO goes straight to the device model, interrupts arrive by remapping. Every
    cost is booked on the core's :class:`Cpu` (``cpu``), like a vCPU's in ``GuestKernel``."""

    def __init__(self, host: Host, core: int, heap_bytes: int) -> None:
        self.host = host
        self.env = host.env
        self.costs = host.costs
        self.vcpu = core  # the APIC ID the driver puts into MSI addresses
        self.memory = host.memory
        size = 1 << max(21, (heap_bytes - 1).bit_length())
        self._heap_base = host.frames.alloc(size)
        self._heap, self._heap_end = self._heap_base, self._heap_base + size
        self.memory.fill(self._heap_base, size, 0)
        self.mmio: list[tuple[int, int, Any]] = []  # (base, size, (bar, MsixTrap))
        self.pending: set[int] = set()
        self.waiters: dict[int, Event] = {}
        self.interrupts = 0
        self.retired = 0
        self.cpu = Cpu(host.env, f"core{core}")

    def __repr__(self) -> str:
        return f"<HostKernel core {self.vcpu} heap={self._heap:#x}>"

    def map_bar(self, bar: Bar, handler: Any) -> int:
        assert bar.address is not None
        self.mmio.append((bar.address, bar.size, (bar, handler)))
        return bar.address

    def _region(self, addr: int) -> tuple[int, Bar, Any]:
        for base, size, (bar, handler) in self.mmio:
            if base <= addr < base + size:
                return addr - base, bar, handler
        raise ValueError(f"host: no MMIO at {addr:#x}")

    def alloc_dma(self, size: int, align: int = 4096) -> int:
        base = -(-self._heap // align) * align
        if base + size > self._heap_end:
            raise ConfigError(f"host driver heap cannot fit {size:#x} bytes")
        self._heap = base + size
        return base

    def mmio_read(self, addr: int, size: int = 4) -> Gen:
        cost = self.costs.mmio_passthrough_read_ns
        wait = self.cpu.book(cost)
        if wait:
            yield wait  # the core is busy with earlier work
        self.retired += 1
        off, bar, handler = self._region(addr)
        value = int.from_bytes(handler.read(bar, off, size), "little")
        yield cost
        return value

    def mmio_write(self, addr: int, value: int, size: int = 4) -> Gen:
        cost = self.costs.mmio_passthrough_write_ns
        wait = self.cpu.book(cost)
        if wait:
            yield wait
        self.retired += 1
        off, bar, handler = self._region(addr)
        handler.write_value(bar, off, value, size)
        yield cost
        return cost

    def load(self, addr: int, n: int) -> bytes:
        self.retired += 1
        return self.memory.read(addr, n)

    def store(self, addr: int, data: bytes) -> None:
        self.retired += 1
        self.memory.write(addr, data)

    def read(self, addr: int, n: int) -> Gen:
        return self.load(addr, n)
        yield  # pragma: no cover

    def write(self, addr: int, data: bytes) -> Gen:
        self.store(addr, data)
        return None
        yield  # pragma: no cover

    def compute(self, n_instructions: int) -> Gen:
        ns = self.costs.instructions_ns(n_instructions)
        if ns:
            wait = self.cpu.book(ns)
            if wait:
                yield wait
        self.retired += n_instructions
        if ns:
            yield ns
        return ns

    def interrupt(self, vector: int) -> None:
        """A remapped MSI for this core: the LAPIC takes it after ``host_irq_delivery_ns``."""
        self.interrupts += 1
        self.env.timeout(self.costs.host_irq_delivery_ns).add_callback(
            lambda _e: self._arrive(vector))

    def _arrive(self, vector: int) -> None:
        self.pending.add(vector)
        ev = self.waiters.pop(vector, None)
        if ev is not None:
            ev.succeed(vector)

    def wait_interrupt(self, vector: int) -> Gen:
        while vector not in self.pending:
            ev = Event(self.env)
            self.waiters[vector] = ev
            yield ev
        self.pending.discard(vector)
        self.retired += 1  # the x2APIC EOI MSR write: no exit on bare metal
        return vector


def _host_remap(host: Host, fn: PciFunction, kernel: HostKernel,
                irqs: dict[int, int]) -> Callable[[int, int], tuple[int, int]]:
    def remap(entry: int, vector: int) -> tuple[int, int]:
        handle = host.iommu.alloc_irte(fn.rid, vector, kernel.vcpu)
        irqs[handle] = vector
        return host.iommu.msi_message(handle)
    return remap


# ---------------------------------------------------------------------- paths
class _NvmePathBase:
    name: PathName
    env: Environment
    block_size: int
    max_queue_depth: int
    driver: NvmeDriver
    host: Host
    vm: Vm | None = None

    def _setup_common(self, cfg: PathConfig) -> None:
        self.cfg = cfg
        self.block_size = cfg.device.lba_size
        self.max_queue_depth = cfg.queue_depth * cfg.io_queues

    def _physical(self, host: Host, on_interrupt: Callable[[int, int], None] | None = None
                  ) -> tuple[PciFunction, PciDmaPort, NvmeController]:
        cfg = self.cfg
        fn = host.topology.find(NVME_BDF)
        port = PciDmaPort(host, fn, on_interrupt)
        ns = Namespace(cfg.device, cfg.capacity_bytes, host.streams.get("nvme0/media"))
        ctrl = NvmeController(host.env, port, NamespaceMedia(host.env, ns), cfg.device,
                              name="nvme0")
        return fn, port, ctrl

    def _guest_irqs_and_cpu(self, vm: Vm) -> tuple[int, int]:
        """Interrupts the guest took, and the CPU ns its driver and their delivery cost (a
        driver's work includes each interrupt entry; injection and the EOI exit add exits)."""
        c, s = self.cfg.costs, vm.stats
        exit_irq_ns = (s.interrupts_injected * (c.vm_exit_ns + c.interrupt_inject_ns)
                       + s.eoi_exits * c.eoi_exit_ns)
        return s.interrupts_posted + s.interrupts_injected, self.driver.busy_ns + exit_irq_ns

    def submit(self, req: IoRequest) -> Event:
        return self.driver.submit(req)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.cfg.device.name} qd={self.max_queue_depth}>"


class BareMetalPath(_NvmePathBase):
    """The host's own NVMe driver on the SSD (no VM)."""

    name: PathName = "bare-metal"

    def __init__(self, cfg: PathConfig) -> None:
        self._setup_common(cfg)
        host = self.host = nvme_host(cfg, identity_default=True)
        self.env = host.env
        self.kernel = HostKernel(host, 0, _ram_bytes(cfg))
        self._irqs: dict[int, int] = {}
        fn, self.port, self.ctrl = self._physical(host, self._on_irq)
        self.trap = MsixTrap(self.ctrl, _host_remap(host, fn, self.kernel, self._irqs))
        host.attach_device(fn, read=self.trap.read, write=self.trap.write,
                           write_value=self.trap.write_value)
        bar0 = self.kernel.map_bar(fn.bars[0], self.trap)
        self.driver = NvmeDriver(self.kernel, bar0, io_queues=cfg.io_queues,
                                 queue_depth=cfg.queue_depth, max_io_bytes=cfg.max_io_bytes)

    def _on_irq(self, index: int, vector: int) -> None:
        if index in self._irqs:
            self.kernel.interrupt(self._irqs[index])

    def start(self) -> Gen:
        yield from self.driver.probe()

    def counters(self) -> PathCounters:
        k = self.kernel
        cpu = self.driver.busy_ns  # the driver's work includes each interrupt entry
        return PathCounters(ios=self.driver.completions, vm_exits=0, interrupts=k.interrupts,
                            host_cpu_ns=cpu, iotlb_hits=0, iotlb_misses=0,
                            extra={"dma_requests": self.port.requests},
                            cpu_busy_ns=busy_by_name([k.cpu]))


class PassthroughPath(_NvmePathBase):
    """VFIO: the guest's driver on the real controller, DMA through the IOMMU (IOVA = GPA)."""

    name: PathName = "passthrough"

    def __init__(self, cfg: PathConfig) -> None:
        self._setup_common(cfg)
        host = self.host = nvme_host(cfg)
        self.env = host.env
        vm = self.vm = host.create_vm("guest", _ram_bytes(cfg), [1])
        self.vfio = Vfio(host)
        fn, self.port, self.ctrl = self._physical(host)
        (assigned,) = self.vfio.assign(vm, fn)

        def remap(entry: int, vector: int) -> tuple[int, int]:
            return self.vfio.setup_msi(fn, vector, vcpu=0)

        self.trap = MsixTrap(self.ctrl, remap)
        host.attach_device(fn, read=self.trap.read, write=self.trap.write,
                           write_value=self.trap.write_value)
        self.guest = GuestKernel(vm, 0)
        self.driver = NvmeDriver(self.guest, assigned.bar_gpas[0], io_queues=cfg.io_queues,
                                 queue_depth=cfg.queue_depth, max_io_bytes=cfg.max_io_bytes)

    def start(self) -> Gen:
        yield from self.driver.probe()

    def counters(self) -> PathCounters:
        vm = self.vm
        assert vm is not None
        s = vm.stats
        irqs, cpu = self._guest_irqs_and_cpu(vm)
        misses = self.port.misses
        return PathCounters(ios=self.driver.completions, vm_exits=s.exits, interrupts=irqs,
                            host_cpu_ns=cpu, iotlb_hits=max(0, self.port.requests - misses),
                            iotlb_misses=misses,
                            extra={"dma_requests": self.port.requests,
                                   "interrupts_posted": s.interrupts_posted},
                            cpu_busy_ns=busy_by_name([vm.vcpus[0].cpu]))


class HostNvmeBackend:
    """A userspace device model's host backend: its I/O enters the host kernel with
    ``io_submit`` and reaches the physical SSD through the host's block layer and NVMe driver
    (the bare-metal stack); completions come back through AIO to the model's thread.

    Usable by any emulated or paravirtual device model as its :class:`Media`
    (``lba_size``, ``nsze``, ``submit``, ``cpu``). ``cpu_ns`` is the host CPU time spent on
    the model's behalf outside the host driver (model work, syscalls, completion wake-ups).
    ``cpu`` is the model's thread: its own work, the ``io_submit`` it makes, the host
    driver's submit and interrupt work and the AIO completion all run there, serially.
    """

    def __init__(self, host: Host, cfg: PathConfig, *, model_cmd_ns: int | None = None,
                 queue_depth: int | None = None) -> None:
        self.host = host
        self.env = host.env
        self.costs = c = host.costs
        self.lba_size = cfg.device.lba_size
        self.nsze = cfg.capacity_bytes // cfg.device.lba_size
        depth = queue_depth or cfg.queue_depth * cfg.io_queues
        depth = min(depth, cfg.device.max_queue_depth)
        self.kernel = HostKernel(host, 0, 16 * MiB + depth * (cfg.max_io_bytes + 4096))
        self._irqs: dict[int, int] = {}
        fn = host.topology.find(NVME_BDF)
        self.port = PciDmaPort(host, fn, self._on_irq)
        ns = Namespace(cfg.device, cfg.capacity_bytes, host.streams.get("nvme0/media"))
        self.ctrl = NvmeController(host.env, self.port, NamespaceMedia(host.env, ns),
                                   cfg.device, name="nvme0")
        self.trap = MsixTrap(self.ctrl, _host_remap(host, fn, self.kernel, self._irqs))
        host.attach_device(fn, read=self.trap.read, write=self.trap.write,
                           write_value=self.trap.write_value)
        bar0 = self.kernel.map_bar(fn.bars[0], self.trap)
        self.driver = NvmeDriver(self.kernel, bar0, queue_depth=depth,
                                 max_io_bytes=cfg.max_io_bytes)
        self.model_cmd_ns = c.qemu_nvme_cmd_ns if model_cmd_ns is None else model_cmd_ns
        self._submit_ns = self.model_cmd_ns + c.syscall_ns + c.io_submit_ns
        self.cpu_ns = 0
        self.requests = 0
        self._backlog: list[tuple[IoRequest, Callable[[int, bytes | None], None]]] = []
        self.cpu = self.kernel.cpu  # the model's thread shares the host driver's core

    def __repr__(self) -> str:
        return f"<HostNvmeBackend requests={self.requests} {self.driver!r}>"

    def _on_irq(self, index: int, vector: int) -> None:
        if index in self._irqs:
            self.kernel.interrupt(self._irqs[index])

    def start(self) -> Gen:
        yield from self.driver.probe()

    @property
    def host_cpu_ns(self) -> int:
        """Model + syscall + host kernel (driver, block layer, interrupts) time so far."""
        return self.cpu_ns + self.driver.busy_ns  # driver work includes interrupt entries

    def submit(self, op: int, slba: int, nlb: int, data: bytes | None,
               done: Callable[[int, bytes | None], None]) -> None:
        req = IoRequest(_OPS[op], slba, nlb if op else 0, data)
        self.requests += 1
        self.cpu_ns += self._submit_ns
        delay = self.cpu.delay(self._submit_ns)  # on the model's thread (QEMU main loop)
        self.env.timeout(delay).add_callback(lambda _e: self._issue(req, done))

    def _issue(self, req: IoRequest, done: Callable[[int, bytes | None], None]) -> None:
        q = self.driver.queues[0]
        if not q.free:  # the host queue is full: wait like a blk-mq tag wait
            self._backlog.append((req, done))
            return
        ev = self.driver.submit(req)
        ev.add_callback(lambda e: self._complete(e.value, done))

    def _complete(self, comp: Any, done: Callable[[int, bytes | None], None]) -> None:
        wake = aio_completion_ns(self.costs, self.cpu)
        self.cpu_ns += wake
        # io_getevents and the completion callback run on the model's thread (linux-aio.c
        # qemu_laio_completion_cb)
        self.env.timeout(self.cpu.delay(wake)).add_callback(
            lambda _e: done(comp.status, comp.data))
        if self._backlog:
            req, d = self._backlog.pop(0)
            self._issue(req, d)


class _EmulatedBar:
    """BAR0 of the emulated controller as a trapping MMIO region's handler."""

    def __init__(self, ctrl: NvmeController) -> None:
        self.ctrl = ctrl

    def read(self, offset: int, size: int) -> int:
        return self.ctrl.mmio_read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        self.ctrl.mmio_write(offset, value, size)


class GuestRamPort:
    """DMA port of a device model inside the hypervisor: it reads and writes guest RAM
    directly (QEMU's address_space_rw on guest memory; no IOMMU), reports writes through the
    VM's input choke point, and raises MSI-X by KVM irqfd (posted or injected)."""

    def __init__(self, vm: Vm, *, posted: bool, vcpu: int = 0) -> None:
        self.vm = vm
        self.posted = posted
        self.vcpu = vcpu
        self.requests = 0

    def read(self, addr: int, n: int) -> bytes | None:
        self.requests += 1
        try:
            return self.vm.read(addr, n)
        except ValueError:
            return None

    def write(self, addr: int, data: bytes) -> bool:
        self.requests += 1
        try:
            self.vm.write(addr, data)
        except ValueError:
            return False
        self.vm.dma_write(addr, data)
        return True

    def msi(self, addr: int, data: int) -> None:
        self.vm.deliver_interrupt(self.vcpu, data & 0xFF, posted=self.posted)

    def take_stall(self) -> int:
        return 0


class EmulatedPath(_NvmePathBase):
    """QEMU-style emulated NVMe: every BAR0 access exits to userspace; host backend I/O."""

    name: PathName = "emulated"

    def __init__(self, cfg: PathConfig) -> None:
        self._setup_common(cfg)
        host = self.host = nvme_host(cfg, identity_default=True)
        self.env = host.env
        self.backend = HostNvmeBackend(host, cfg)
        vm = self.vm = host.create_vm("guest", _ram_bytes(cfg), [1])
        self.port = GuestRamPort(vm, posted=cfg.posted_interrupts)
        self.ctrl = NvmeController(host.env, self.port, self.backend, cfg.device,
                                   name="qemu-nvme", vid=0x1B36, serial="deadbeef",
                                   model="QEMU NVMe Ctrl", admin_ns=cfg.costs.qemu_nvme_cmd_ns)
        base = vm.alloc_mmio(BAR0_SIZE)
        vm.add_mmio(MmioRegion("nvme-emu/BAR0", base, BAR0_SIZE, _EmulatedBar(self.ctrl),
                               traps=True, userspace=True))
        self.guest = GuestKernel(vm, 0)
        self.driver = NvmeDriver(self.guest, base, io_queues=cfg.io_queues,
                                 queue_depth=cfg.queue_depth, max_io_bytes=cfg.max_io_bytes)

    def start(self) -> Gen:
        yield from self.backend.start()
        yield from self.driver.probe()

    def counters(self) -> PathCounters:
        vm = self.vm
        assert vm is not None
        s = vm.stats
        irqs, guest_cpu = self._guest_irqs_and_cpu(vm)
        cpu = guest_cpu + self.backend.host_cpu_ns
        # The model reads guest RAM directly and the host's DMA is passed through (iommu=pt):
        # no IOTLB on this path.
        return PathCounters(ios=self.driver.completions, vm_exits=s.exits, interrupts=irqs,
                            host_cpu_ns=cpu, iotlb_hits=0, iotlb_misses=0,
                            extra={"mmio_exits": s.mmio_exits,
                                   "backend_requests": self.backend.requests},
                            cpu_busy_ns=busy_by_name([vm.vcpus[0].cpu, self.backend.cpu]))


register_path("bare-metal", BareMetalPath)
register_path("passthrough", PassthroughPath)
register_path("emulated", EmulatedPath)
