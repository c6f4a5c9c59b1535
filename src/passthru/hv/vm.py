"""A virtual machine: guest RAM backed by host frames, pinned vCPUs, MMIO regions, inputs.

What is modelled
    - Guest RAM at GPA ``[0, memory_bytes)`` backed by host frames: 2 MiB frames where the
      range allows (like a THP/hugetlbfs backed guest), 4 KiB frames for the tail. The
      GPA->HPA map is two dicts (2 MiB and 4 KiB granules); ``gpa_to_hpa`` walks them, and
      ``read``/``write`` split accesses at frame boundaries (what EPT does for the vCPU).
    - vCPUs pinned 1:1 to host cores; each counts retired guest instructions, exits and the
      interrupts pending in its (virtual) local APIC, and runs its work serially on its own
      :class:`~passthru.hv.cpu.Cpu`: guest code, trapped MMIO (KVM and QEMU handle an exit on
      the vCPU thread, so the exit's time is the vCPU's), EOI exits and the exit that
      injects an interrupt all queue FIFO on it. Posted delivery takes no vCPU time.
    - Guest-physical MMIO regions above RAM (``mmio_base``): a region either traps (an
      emulated device: every access is a VM exit, counted and costed) or is a passthrough BAR
      mapped by EPT (no exit; the access goes straight to the device model).
    - ONE choke point for nondeterministic input: :meth:`Vm.inject`. Every MMIO read value,
      every device write into guest memory and every interrupt delivered to the guest passes
      through it as an :class:`InputRecord` carrying the vCPU's retired-instruction count;
      subscribers (record/replay, migration dirty tracking) hook ``vm.input_hooks``.

What is left out
    EPT tables in host memory (the map is a Python dict), guest page faults, vCPU scheduling
    (a pinned vCPU owns its core: two vCPUs sharing a core do not slow each other), memory
    ballooning and hotplug, MMIO regions overlapping RAM, the virtual APIC's priority logic
    (pending vectors are delivered lowest first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final, Protocol

from passthru.errors import ConfigError, OutOfResources
from passthru.hv.cpu import Cpu
from passthru.sim import Event

if TYPE_CHECKING:
    from passthru.hv.host import Host

PAGE_4K: Final = 1 << 12
PAGE_2M: Final = 1 << 21
GiB = 1 << 30


class InputKind(Enum):
    MMIO_READ = "mmio_read"  # the value a guest MMIO load returned
    DMA_WRITE = "dma_write"  # bytes a device (or the hypervisor on its behalf) wrote to RAM
    INTERRUPT = "interrupt"  # a vector made pending in a vCPU's virtual APIC


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One nondeterministic input reaching the guest, at a vCPU's retired-instruction count."""

    seq: int
    kind: InputKind
    vcpu: int
    icount: int
    time_ns: int
    gpa: int | None = None
    size: int | None = None
    value: int | None = None  # MMIO read value or interrupt vector
    data: bytes | None = None  # DMA payload

    def __repr__(self) -> str:
        where = "" if self.gpa is None else f" gpa={self.gpa:#x}"
        what = f" value={self.value:#x}" if self.value is not None else ""
        if self.data is not None:
            what += f" {len(self.data)}B"
        return (f"<Input #{self.seq} {self.kind.value} vcpu{self.vcpu} ic={self.icount} "
                f"t={self.time_ns}{where}{what}>")


InputHook = Callable[[InputRecord], None]


class MmioHandler(Protocol):
    def read(self, offset: int, size: int) -> int: ...
    def write(self, offset: int, value: int, size: int) -> None: ...


@dataclass(slots=True)
class MmioRegion:
    """A GPA range answered by ``handler``. ``traps``: every access is a VM exit."""

    name: str
    base: int
    size: int
    handler: MmioHandler
    traps: bool
    userspace: bool = False  # a trapping access goes out to a userspace device model

    def __repr__(self) -> str:
        kind = ("exit-userspace" if self.userspace else "exit") if self.traps else "direct"
        return f"<MmioRegion {self.name} [{self.base:#x}, {self.base + self.size:#x}) {kind}>"


@dataclass(slots=True)
class VmStats:
    exits: int = 0
    exit_ns: int = 0
    mmio_exits: int = 0
    mmio_direct: int = 0
    interrupts_injected: int = 0  # via an exit and event injection
    interrupts_posted: int = 0
    eoi_exits: int = 0
    pinned_pages: int = 0  # 4 KiB pages pinned for VFIO
    pin_ns: int = 0


@dataclass(slots=True)
class Vcpu:
    index: int
    core: int
    cpu: Cpu  # the vCPU's time: everything it executes is booked here
    retired: int = 0
    exits: int = 0
    pending: set[int] = field(default_factory=set)
    waiters: dict[int | None, Event] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<vCPU{self.index} on core {self.core}, retired={self.retired}>"


class Vm:
    """A guest: RAM, vCPUs, MMIO regions and the input choke point. Made by ``Host.create_vm``."""

    def __init__(self, host: Host, name: str, memory_bytes: int, vcpu_pins: list[int]) -> None:
        if not isinstance(memory_bytes, int) or memory_bytes <= 0 or memory_bytes % PAGE_4K:
            raise ConfigError(f"vm {name!r} memory_bytes {memory_bytes!r} must be a positive "
                              "multiple of 4 KiB")
        if not vcpu_pins:
            raise ConfigError(f"vm {name!r} vcpu_pins must name at least one host core")
        for i, core in enumerate(vcpu_pins):
            if not isinstance(core, int) or not 0 <= core < host.cores:
                raise ConfigError(f"vm {name!r} vcpu_pins[{i}]: host core {core!r} does not "
                                  f"exist (host has cores 0..{host.cores - 1})")
            owner = host.core_owner.get(core)
            if owner is not None and not host.allow_shared_cores:
                raise ConfigError(f"vm {name!r} vcpu_pins[{i}]: host core {core} is already "
                                  f"pinned by vm {owner!r}")
        if len(set(vcpu_pins)) != len(vcpu_pins):
            raise ConfigError(f"vm {name!r} vcpu_pins {vcpu_pins} pins two vCPUs to one core")
        self.host = host
        self.name = name
        self.memory_bytes = memory_bytes
        self.costs = host.costs
        self.vcpus = [Vcpu(i, core, Cpu(host.env, f"{name}/vcpu{i}"))
                      for i, core in enumerate(vcpu_pins)]
        self.stats = VmStats()
        self.input_hooks: list[InputHook] = []
        self._seq = 0
        self._big: dict[int, int] = {}  # gpa >> 21 -> hpa of a 2 MiB frame
        self._small: dict[int, int] = {}  # gpa >> 12 -> hpa of a 4 KiB frame
        self._allocate_ram()
        for core in vcpu_pins:
            host.core_owner.setdefault(core, name)
        self.mmio_base = -(-memory_bytes // GiB) * GiB  # the first GiB boundary above RAM
        self._mmio_next = self.mmio_base
        self.mmio_regions: list[MmioRegion] = []

    def __repr__(self) -> str:
        return (f"<Vm {self.name!r} {self.memory_bytes >> 20} MiB, "
                f"vcpus={[v.core for v in self.vcpus]}>")

    # ------------------------------------------------------------------ guest RAM
    def _allocate_ram(self) -> None:
        frames = self.host.frames
        big = self.memory_bytes // PAGE_2M
        try:
            for i in range(big):
                self._big[i] = frames.alloc(PAGE_2M)
            for gpa in range(big * PAGE_2M, self.memory_bytes, PAGE_4K):
                self._small[gpa >> 12] = frames.alloc(PAGE_4K)
        except OutOfResources as exc:
            self._free_ram()
            raise OutOfResources(f"vm {self.name!r} memory_bytes {self.memory_bytes:#x}: {exc}"
                                 ) from None
        for hpa in self._big.values():  # a fresh guest sees zeroed RAM
            self.host.memory.fill(hpa, PAGE_2M, 0)
        for hpa in self._small.values():
            self.host.memory.fill(hpa, PAGE_4K, 0)

    def _free_ram(self) -> None:
        for hpa in self._big.values():
            self.host.frames.free(hpa, PAGE_2M)
        for hpa in self._small.values():
            self.host.frames.free(hpa, PAGE_4K)
        self._big.clear()
        self._small.clear()

    def ram_chunks(self) -> list[tuple[int, int, int]]:
        """(gpa, hpa, size) of every backing frame, in GPA order."""
        out = [(i * PAGE_2M, hpa, PAGE_2M) for i, hpa in sorted(self._big.items())]
        out += [(pfn << 12, hpa, PAGE_4K) for pfn, hpa in sorted(self._small.items())]
        return out

    def gpa_to_hpa(self, gpa: int) -> int:
        """The host physical address backing guest physical ``gpa`` (RAM only)."""
        hpa = self._big.get(gpa >> 21)
        if hpa is not None:
            return hpa + (gpa & (PAGE_2M - 1))
        hpa = self._small.get(gpa >> 12)
        if hpa is not None:
            return hpa + (gpa & (PAGE_4K - 1))
        raise ValueError(f"vm {self.name!r}: gpa {gpa:#x} is not guest RAM "
                         f"(RAM is [0, {self.memory_bytes:#x}))")

    def _spans(self, gpa: int, length: int) -> list[tuple[int, int]]:
        if gpa < 0 or length < 0 or gpa + length > self.memory_bytes:
            raise ValueError(f"vm {self.name!r}: [{gpa:#x}, {gpa + length:#x}) is outside "
                             f"guest RAM [0, {self.memory_bytes:#x})")
        spans = []
        while length:
            frame = PAGE_2M if (gpa >> 21) in self._big else PAGE_4K
            n = min(length, frame - (gpa & (frame - 1)))
            spans.append((self.gpa_to_hpa(gpa), n))
            gpa += n
            length -= n
        return spans

    def _in_big_frame(self, gpa: int, length: int) -> int | None:
        """The HPA of ``[gpa, gpa + length)`` if it lies inside one 2 MiB frame, else None.

        The common case of ``_spans``: one span, and no range check needed because every
        2 MiB frame lies wholly inside guest RAM.
        """
        hpa = self._big.get(gpa >> 21)  # a negative gpa has a negative key: never found
        off = gpa & (PAGE_2M - 1)
        if hpa is not None and 0 <= length <= PAGE_2M - off:
            return hpa + off
        return None

    def read(self, gpa: int, length: int) -> bytes:
        """Guest RAM as the guest sees it (no input record: the bytes are already there)."""
        mem = self.host.memory
        hpa = self._in_big_frame(gpa, length)
        if hpa is not None:
            return mem.read(hpa, length)
        return b"".join(mem.read(hpa, n) for hpa, n in self._spans(gpa, length))

    def write(self, gpa: int, data: bytes) -> None:
        """A guest store to RAM (the guest's own write; not an input)."""
        mem = self.host.memory
        hpa = self._in_big_frame(gpa, len(data))
        if hpa is not None:
            mem.write(hpa, data)
            return
        off = 0
        for hpa, n in self._spans(gpa, len(data)):
            mem.write(hpa, data[off:off + n])
            off += n

    def digest(self) -> str:
        """SHA-256 of guest RAM in GPA order."""
        h = hashlib.sha256()
        mem = self.host.memory
        for _, hpa, size in self.ram_chunks():
            h.update(mem.read(hpa, size))
        return h.hexdigest()

    # ------------------------------------------------------------------ the choke point
    def inject(self, kind: InputKind, vcpu: int = 0, *, gpa: int | None = None,
               size: int | None = None, value: int | None = None,
               data: bytes | None = None) -> InputRecord | None:
        """Record one nondeterministic input and hand it to every hook, in order.

        ``vcpu`` is the vCPU whose retired-instruction count stamps the input: the one that
        issued the MMIO read, the one an interrupt targets, vCPU 0 for DMA. Every input
        takes a sequence number; the record itself is built only when a hook subscribes
        (returns None otherwise: nothing could observe it).
        """
        icount = self.vcpus[vcpu].retired
        seq = self._seq
        self._seq = seq + 1
        if not self.input_hooks:
            return None
        rec = InputRecord(seq, kind, vcpu, icount, self.host.env.now, gpa, size, value, data)
        for hook in self.input_hooks:
            hook(rec)
        return rec

    def dma_write(self, gpa: int, data: bytes) -> None:
        """A device's write already landed at ``gpa``: report it through the choke point."""
        self.inject(InputKind.DMA_WRITE, 0, gpa=gpa, size=len(data), data=bytes(data))

    # ------------------------------------------------------------------ MMIO
    def alloc_mmio(self, size: int) -> int:
        """A GPA window of ``size`` bytes (naturally aligned) above guest RAM."""
        if size <= 0 or size & (size - 1):
            raise ValueError(f"MMIO window size {size:#x} must be a power of two")
        base = -(-self._mmio_next // size) * size
        self._mmio_next = base + size
        return base

    def add_mmio(self, region: MmioRegion) -> None:
        for r in self.mmio_regions:
            if region.base < r.base + r.size and r.base < region.base + region.size:
                raise ConfigError(f"vm {self.name!r}: MMIO region {region.name} "
                                  f"[{region.base:#x}, +{region.size:#x}) overlaps {r.name}")
        self.mmio_regions.append(region)

    def region_at(self, gpa: int) -> MmioRegion:
        for r in self.mmio_regions:
            if r.base <= gpa < r.base + r.size:
                return r
        raise ValueError(f"vm {self.name!r}: no MMIO region at gpa {gpa:#x}")

    def _account_exit(self, vcpu: int, region: MmioRegion) -> int:
        c = self.costs
        cost = c.exit_ns(userspace=region.userspace) + c.mmio_emulate_ns
        self.vcpus[vcpu].exits += 1
        self.stats.exits += 1
        self.stats.mmio_exits += 1
        self.stats.exit_ns += cost
        return cost

    def mmio_access(self, vcpu: int, gpa: int, *, write: bool) -> tuple[MmioRegion, int]:
        """The region a guest MMIO access at ``gpa`` reaches and the vCPU time it costs (an
        exit is counted here). The caller performs it with :meth:`mmio_read` or the region's
        handler once the vCPU gets to it."""
        region = self.region_at(gpa)
        if region.traps:
            cost = self._account_exit(vcpu, region)
            if cost:
                return region, cost
        else:
            self.stats.mmio_direct += 1
        # A direct access (or a free exit) costs the PCIe round trip.
        c = self.costs
        return region, c.mmio_passthrough_write_ns if write else c.mmio_passthrough_read_ns

    def mmio_read(self, vcpu: int, region: MmioRegion, gpa: int, size: int) -> int:
        """Perform a guest load from ``region`` (see :meth:`mmio_access`); the value is an
        input."""
        value = region.handler.read(gpa - region.base, size)
        self.inject(InputKind.MMIO_READ, vcpu, gpa=gpa, size=size, value=value)
        return value

    # ------------------------------------------------------------------ interrupts
    def deliver_interrupt(self, vcpu: int, vector: int, *, posted: bool) -> None:
        """Make ``vector`` pending on ``vcpu``: posted (no exit) or injected (one exit)."""
        c = self.costs
        if posted:
            delay = c.posted_delivery_ns
            self.stats.interrupts_posted += 1
        else:
            cost = c.vm_exit_ns + c.interrupt_inject_ns
            self.stats.interrupts_injected += 1
            self.stats.exits += 1
            self.stats.exit_ns += cost
            cpu = self.vcpus[vcpu]
            cpu.exits += 1
            # The kick's exit and the injection on the next VM entry run on the vCPU
            # (kvm_vcpu_kick, vcpu_enter_guest -> kvm_inject_pending_event).
            delay = cpu.cpu.delay(cost)
        self.host.env.timeout(delay).add_callback(
            lambda _ev: self._arrive(vcpu, vector))

    def _arrive(self, vcpu: int, vector: int) -> None:
        self.inject(InputKind.INTERRUPT, vcpu, value=vector)
        cpu = self.vcpus[vcpu]
        cpu.pending.add(vector)
        ev = cpu.waiters.pop(vector, None)
        if ev is None:
            ev = cpu.waiters.pop(None, None)  # a wait for any vector
        if ev is not None:
            ev.succeed(vector)

    def eoi_cost(self, *, posted: bool) -> int:
        """The cost of the guest's EOI: an exit without APIC virtualization (posted: none)."""
        if posted:
            return 0
        self.stats.eoi_exits += 1
        self.stats.exits += 1
        self.stats.exit_ns += self.costs.eoi_exit_ns
        return self.costs.eoi_exit_ns
