"""The one documented set of hypervisor and platform cost parameters (integer ns).

What is modelled
    The time a virtualization event takes on the critical path of a vCPU or a device:
    a VM exit round trip handled in the kernel, a heavyweight exit to a userspace device
    model, MMIO instruction decode and emulation, interrupt injection against posted
    delivery, the EOI exit without APIC virtualization, a passthrough MMIO access that does
    not exit, an IOTLB-miss page walk, and the pinning of guest pages for VFIO. Every default
    names the published measurement it is taken from; all are order-of-magnitude values for a
    recent x86 server core, not a calibrated model of one CPU.

What is left out
    Variation (every event costs exactly its parameter; a scenario that wants jitter draws it
    from a named stream), cache and TLB pollution after an exit, frequency scaling, and the
    dependence of the walk cost on the number of levels actually read.

Usage: ``Costs()`` gives the defaults; ``Costs(vm_exit_ns=900)`` or
``DEFAULT_COSTS.replace(vm_exit_ns=900)`` overrides by keyword. Unknown names raise
``ConfigError`` naming the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from passthru.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Costs:
    """Cost parameters in integer nanoseconds (see the module docstring)."""

    # VM exit + VM entry round trip handled inside KVM (no userspace). kvm-unit-tests
    # x86/vmexit.c `cpuid` / `vmcall` tests report on the order of 1,000-1,500 cycles plus
    # handler work on Skylake-class cores; ~1.2 us is the usual round figure quoted for an
    # exit with a light in-kernel handler (e.g. Amit et al., "ELI: Bare-Metal Performance for
    # I/O Virtualization", ASPLOS 2012, section 2).
    vm_exit_ns: int = 1_200
    # Heavyweight exit: the access is returned to a userspace device model (QEMU) through
    # KVM_RUN and re-entered. kvm-unit-tests x86/vmexit.c `inl_from_qemu` and
    # `mmio-no-eventfd:pci-mem` measure this path; it is several times an in-kernel exit,
    # typically 5-10 us end to end.
    userspace_exit_ns: int = 7_000
    # Fetch, decode and emulate one MMIO instruction in KVM's x86 emulator
    # (arch/x86/kvm/emulate.c: x86_decode_insn + x86_emulate_insn); a few hundred ns on top of
    # the exit (compare vmexit.c `mmio-wildcard-eventfd` against `vmcall`).
    mmio_emulate_ns: int = 300
    # Passthrough MMIO: an uncached load/store to a BAR mapped into the guest by EPT; no exit,
    # but a non-posted PCIe read is a full round trip. Neugebauer et al., "Understanding PCIe
    # performance for end host networking", SIGCOMM 2018, measure ~500-900 ns for small reads.
    mmio_passthrough_read_ns: int = 700
    # Posted MMIO write: leaves the core at once (write-combining aside); ~tens of ns.
    mmio_passthrough_write_ns: int = 50
    # Interrupt injection without posted interrupts: host IRQ, VFIO eventfd -> KVM irqfd,
    # kick of the target vCPU (an exit when it runs) and event injection on the next VM
    # entry. ELI (ASPLOS 2012) attributes several exits per interrupt to this path; we charge
    # one injection on top of the exit round trip.
    interrupt_inject_ns: int = 2_000
    # Posted delivery (VT-d spec 5.2.3, 9.12; Intel SDM vol. 3 29.6 "Posted-interrupt
    # processing"): the IOMMU sets PIR and the notification vector is handled by the CPU
    # without an exit; the latency is a few hundred ns.
    posted_delivery_ns: int = 300
    # The guest's EOI write exits when APIC virtualization is off: kvm-unit-tests
    # x86/vmexit.c `eoi` test, about one light exit.
    eoi_exit_ns: int = 1_200
    # IOTLB miss: a 4-level second-level walk with each level read from memory. Amit et al.,
    # "IOMMU: Strategies for Mitigating the IOTLB Bottleneck", WIOSCA 2010, and Neugebauer et
    # al. (SIGCOMM 2018) report a miss adding on the order of a few hundred ns per request.
    iotlb_miss_walk_ns: int = 330
    # Pinning one 4 KiB guest page for VFIO (vfio_pin_pages_remote -> pin_user_pages plus the
    # IOMMU map). Linux commit "vfio/type1: Batch page pinning" (Daniel Jordan, 2021) and
    # reports of multi-second VFIO start-up for 100+ GiB guests put it at ~0.1-0.3 us per page.
    pin_page_4k_ns: int = 200
    # Guest instruction throughput used by guest.kernel.compute(): instructions per cycle
    # and core clock in MHz (so one instruction costs 1e3 / (ipc * mhz) ns).
    guest_ipc: int = 2
    cpu_mhz: int = 3_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"costs.{f.name} = {value!r} must be a non-negative int (ns)")
        if self.guest_ipc == 0 or self.cpu_mhz == 0:
            raise ConfigError("costs.guest_ipc and costs.cpu_mhz must be positive")

    def replace(self, **changes: int) -> Costs:
        """A copy with ``changes`` applied; an unknown name raises ``ConfigError``."""
        names = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in names:
                raise ConfigError(f"costs.{name} is not a cost parameter")
        return dataclasses.replace(self, **changes)

    def instructions_ns(self, n: int) -> int:
        """Time for ``n`` guest instructions at ``guest_ipc`` and ``cpu_mhz`` (rounded up)."""
        cycles = -(-n // self.guest_ipc)
        return -(-cycles * 1000 // self.cpu_mhz)

    def exit_ns(self, *, userspace: bool = False) -> int:
        """One exit round trip, to the kernel or to a userspace device model."""
        return self.userspace_exit_ns if userspace else self.vm_exit_ns


DEFAULT_COSTS = Costs()
