"""A scripted guest kernel: guest code as sim processes on a vCPU.

What is modelled
    Guest code is a Python generator function taking a :class:`GuestKernel`; ``run`` starts it
    as a sim process on one vCPU. Every call that takes sim time is a generator used with
    ``yield from``; RAM accesses take none and also exist as plain calls (``load``,
    ``store``)::

        def driver(g):
            buf = g.alloc_dma(4096)
            yield from g.mmio_write(bar0 + 0x10, buf, 8)
            yield from g.wait_interrupt(0x41)
            data = yield from g.read(buf, 64)   # or g.load(buf, 64): RAM takes no sim time
            yield from g.compute(1000)

    ``compute(n)`` retires ``n`` instructions taking ``n / (IPC * f)`` of vCPU time
    (``Costs.guest_ipc``, ``Costs.cpu_mhz``). MMIO reads and writes cost what the region
    makes them cost (an exit for an emulated device, a PCIe round trip for a passthrough BAR)
    and each retires one instruction; reading or writing guest RAM retires one instruction per
    call (the model's granularity). ``wait_interrupt`` halts the vCPU until the vector is
    pending, consumes it and pays the EOI (an exit unless posted interrupts/APICv are on).
    ``compute`` and ``mmio_write`` return the vCPU time they charged.

    The vCPU executes one thing at a time: every cost above is booked on its
    :class:`~passthru.hv.cpu.Cpu`, so processes on one vCPU (a driver's submitters and its
    interrupt handler) queue FIFO for it. A call's instructions retire and its access takes
    effect when the vCPU starts it; with nothing else booked (QD1) that is at once.

What is left out
    Guest page tables (GVA = GPA), caches, preemption between processes on one vCPU (they
    interleave at their yields, each call queued behind the calls booked before it), and a
    real allocator: ``alloc_dma`` is a
    bump allocator over guest RAM above ``heap_base`` that never frees.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, Final

from passthru.errors import OutOfResources
from passthru.hv.vm import Vm
from passthru.sim import Event, Process

GuestGen = Generator[Any, Any, Any]
_NS_MEMO: Final = 64  # distinct instruction counts remembered by compute()


class GuestKernel:
    """The API guest code sees on one vCPU of ``vm``."""

    def __init__(self, vm: Vm, vcpu: int = 0, *, heap_base: int = 1 << 20) -> None:
        if not 0 <= vcpu < len(vm.vcpus):
            raise ValueError(f"vm {vm.name!r} has no vcpu {vcpu}")
        self.vm = vm
        self.vcpu = vcpu
        self.env = vm.host.env
        self.costs = vm.costs
        self._heap = heap_base
        self._cpu = vm.vcpus[vcpu]  # the Vcpu whose counters every call updates in place
        self._ns: dict[int, int] = {}  # compute(): instruction count -> ns, see _compute_ns

    def __repr__(self) -> str:
        return f"<GuestKernel vm={self.vm.name!r} vcpu{self.vcpu} heap={self._heap:#x}>"

    @property
    def retired(self) -> int:
        return self._cpu.retired

    def _retire(self, n: int) -> None:
        self._cpu.retired += n

    def _compute_ns(self, n: int) -> int:
        """``costs.instructions_ns(n)``, remembered for ``compute``'s lookup (drivers use a
        few fixed counts, so the arithmetic is done once per count)."""
        ns = self.costs.instructions_ns(n)
        if len(self._ns) < _NS_MEMO:
            self._ns[n] = ns
        return ns

    def run(self, program: Callable[[GuestKernel], GuestGen]) -> Process:
        """Start ``program(self)`` as a sim process; its return value is the process value."""
        return self.env.process(program(self))

    # ------------------------------------------------------------------ memory
    def alloc_dma(self, size: int, align: int = 4096) -> int:
        """A guest-physical buffer of ``size`` bytes (a GPA; IOVA = GPA for assigned devices)."""
        base = -(-self._heap // align) * align
        if base + size > self.vm.memory_bytes:
            raise OutOfResources(f"vm {self.vm.name!r}: guest heap cannot fit {size:#x} bytes "
                                 f"at {base:#x}")
        self._heap = base + size
        return base

    # A RAM access takes no sim time, so it is a plain call; read/write wrap it for guest
    # code that keeps to `yield from` throughout (a generator per call costs ~5% of an I/O).
    def load(self, gpa: int, n: int) -> bytes:
        """``n`` bytes of guest RAM at ``gpa`` (one retired instruction, no sim time)."""
        self._cpu.retired += 1
        return self.vm.read(gpa, n)

    def store(self, gpa: int, data: bytes) -> None:
        """Write ``data`` to guest RAM at ``gpa`` (one retired instruction, no sim time)."""
        self._cpu.retired += 1
        self.vm.write(gpa, data)

    def read(self, gpa: int, n: int) -> GuestGen:
        return self.load(gpa, n)
        yield  # pragma: no cover - makes this a generator

    def write(self, gpa: int, data: bytes) -> GuestGen:
        self.store(gpa, data)
        return None
        yield  # pragma: no cover - makes this a generator

    # ------------------------------------------------------------------ MMIO
    def mmio_read(self, gpa: int, size: int = 4) -> GuestGen:
        vm, cpu = self.vm, self._cpu
        region, cost = vm.mmio_access(self.vcpu, gpa, write=False)
        wait = cpu.cpu.book(cost)
        if wait:
            yield wait  # the vCPU is busy with earlier work
        cpu.retired += 1
        value = vm.mmio_read(self.vcpu, region, gpa, size)
        if cost:
            yield cost
        return value

    def mmio_write(self, gpa: int, value: int, size: int = 4) -> GuestGen:
        cpu = self._cpu
        region, cost = self.vm.mmio_access(self.vcpu, gpa, write=True)
        wait = cpu.cpu.book(cost)
        if wait:
            yield wait
        cpu.retired += 1
        region.handler.write(gpa - region.base, value, size)
        if cost:
            yield cost
        return cost

    # ------------------------------------------------------------------ time and interrupts
    def compute(self, n_instructions: int) -> GuestGen:
        if n_instructions < 0:
            raise ValueError(f"compute({n_instructions}): instruction count must be >= 0")
        ns = self._ns.get(n_instructions)
        if ns is None:
            ns = self._compute_ns(n_instructions)
        cpu = self._cpu
        if ns:
            wait = cpu.cpu.book(ns)
            if wait:
                yield wait
        cpu.retired += n_instructions
        if ns:
            yield ns
        return ns

    def wait_interrupt(self, vector: int) -> GuestGen:
        """Halt until ``vector`` is pending; consume it, then EOI. Returns the vector."""
        cpu = self._cpu
        while vector not in cpu.pending:
            ev = Event(self.env)
            cpu.waiters[vector] = ev
            yield ev
        cpu.pending.discard(vector)
        cost = self.vm.eoi_cost(posted=self.vm.host.posted_interrupts)
        if cost:
            wait = cpu.cpu.book(cost)
            if wait:
                yield wait
        cpu.retired += 1  # the EOI write
        if cost:
            yield cost
        return vector
