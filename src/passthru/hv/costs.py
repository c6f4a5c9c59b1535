"""The one documented set of hypervisor and platform cost parameters (integer ns).

What is modelled
    The time a virtualization event takes on the critical path of a vCPU or a device:
    a VM exit round trip handled in the kernel, a heavyweight exit to a userspace device
    model, MMIO instruction decode and emulation, interrupt injection against posted
    delivery, the EOI exit without APIC virtualization, a passthrough MMIO access that does
    not exit, an IOTLB-miss page walk, the pinning of guest pages for VFIO, and the kernel
    block I/O stack (syscall, blk-mq, NVMe driver, interrupt entry) plus the host I/O of a
    userspace device model (QEMU NVMe command processing, io_submit, AIO completion).
    Each default names the published measurement it is taken from, or says that none was
    found: interrupt entry, MSI delivery, posted delivery, MMIO emulation and the AIO-event
    cost have no checkable per-event figure, and QEMU's per-command time is checked only as
    a total. The blk-mq completion, NVMe driver and io_submit defaults sit above the figures
    cited beside them (their comments give the figures). All are
    order-of-magnitude values for a recent x86 server core, not a calibrated model of one
    CPU; a scenario's ``[costs]`` table overrides any of them.

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
    # Fetch, decode and emulate one MMIO instruction in KVM's x86 emulator (arch/x86/kvm/
    # emulate.c x86_decode_insn + x86_emulate_insn), on top of the exit. No figure found: Linux
    # commit 68c3b4d1676d ("KVM: VMX: speed up wildcard MMIO EVENTFD", M. Tsirkin) says only
    # that MMIO is "much slower than PIO, due to the need to do page walk and emulation".
    mmio_emulate_ns: int = 300
    # Passthrough MMIO: an uncached load/store to a BAR mapped into the guest by EPT; no exit,
    # but a non-posted PCIe read is a full round trip. Neugebauer et al., "Understanding PCIe
    # performance for end host networking", SIGCOMM 2018, measure ~500-900 ns for small reads.
    mmio_passthrough_read_ns: int = 700
    # Posted MMIO write: leaves the core at once (write-combining aside). Intel community thread
    # "Why do MemReq TLPs take 100s nanoseconds to be generated after MMIO writes?" (m-p/1186313)
    # sees back-to-back UC writeq() TLPs "50-300ns" apart; this value is its low end.
    mmio_passthrough_write_ns: int = 50
    # Interrupt injection without posted interrupts: host IRQ, VFIO eventfd -> KVM irqfd,
    # kick of the target vCPU (an exit when it runs) and event injection on the next VM
    # entry. ELI (ASPLOS 2012) attributes several exits per interrupt to this path; we charge
    # one injection on top of the exit round trip.
    interrupt_inject_ns: int = 2_000
    # Posted delivery (VT-d spec 5.2.3, 9.12; Intel SDM vol. 3 29.6 "Posted-interrupt
    # processing"): the IOMMU sets PIR and the CPU takes the notification vector without an
    # exit. No absolute figure found; DID (Tu et al., VEE 2015) gives only a relative one,
    # direct delivery "decreases the interrupt invocation latency by 80%". Unsourced.
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
    # ---- the kernel block I/O stack (the same code in a guest and on bare metal) ----------
    # One system call round trip (entry, dispatch, return) with the usual speculative-
    # execution mitigations on. A getpid() loop on Skylake measures "a touch over 300ns per
    # call", "closer to 100ns" before KPTI/retpolines (blog.i0.pm/posts/the-cost-of-a-syscall-
    # measured-190303). LEBench (Ren et al., SOSP 2019) tracks this growth; not checked here.
    syscall_ns: int = 250
    # blk-mq submit work per request: bio/request allocation, tag, plug flush, dispatch to
    # the driver (block/blk-mq.c blk_mq_submit_bio). With nvme_driver_submit_ns it matches
    # io_uring submission of 4 KiB O_DIRECT NVMe reads, "1.4us per request is reasonable"
    # (maintainer isilence, github.com/axboe/liburing/issues/1301); blk_mq_start_request is
    # "somewhere between 200-300 nanoseconds" (linux-block, spinics.net msg20913).
    block_layer_submit_ns: int = 900
    # Total check for the five below: with syscall_ns and block_layer_submit_ns the stack is
    # ~3 us of CPU per 4 KiB read, within Axboe's polled "5-6 usec latencies with 4KB IO" on a
    # DRAM-backed NVMe device, device included (git.kernel.dk f4f5253edcda).
    # blk-mq completion: end_request, bio completion, waking the waiter. Above XRP (Zhong et
    # al., OSDI 2022, Table 1; 512 B read() on Optane), whose whole "bio" layer, submit and
    # completion, is 379 ns (table as quoted in the "notes on ebpf/kernel bypass/storage
    # latency" post, schwifty50.medium.com; the paper itself was not read here).
    block_layer_complete_ns: int = 700
    # drivers/nvme/host/pci.c nvme_queue_rq (PRP setup, SQE copy) and nvme_handle_cqe. The
    # same XRP table gives "NVMe driver: 113 ns" for both directions, below these two; but
    # nvme_queue_rq's blk_mq_start_request alone is "200-300 nanoseconds" (spinics msg20913).
    nvme_driver_submit_ns: int = 300
    nvme_driver_complete_ns: int = 250
    # Interrupt entry/exit and handler dispatch (IDT path, irq_enter/irq_exit), guest or host.
    # No figure found: the posted-MSI merge (Linux tag x86-irq-2024-05-12) calls it only "a
    # full roundtrip of interrupt entry/exit". Unsourced.
    guest_irq_entry_ns: int = 400
    # Bare metal: MSI write, interrupt remapping, notification of the target LAPIC. No figure
    # found; J. Pan's posted-MSI cover letter (lkml.iu.edu/hypermail/linux/kernel/2404.0/
    # 05100.html) says only that the notify step on Xeon "is also expensive". Unsourced.
    host_irq_delivery_ns: int = 150
    # ---- a userspace device model's host I/O (QEMU block backend with Linux AIO) ----------
    # QEMU hw/nvme/ctrl.c nvme_process_sq -> nvme_rw (decode, dma_blk_io PRP mapping,
    # blk_aio_preadv) per command. No per-stage figure found; the thread total (this + syscall
    # + io_submit + aio_event, ~4 us) is near QEMU commit "hw/nvme: Use ioeventfd to handle
    # doorbell updates" (J. Fan, 2022): one thread, 313 KIOPS at QD64, ~3.2 us per command.
    qemu_nvme_cmd_ns: int = 2_000
    # io_submit(2) with one iocb (fs/aio.c + O_DIRECT blkdev_direct_IO), on top of syscall_ns.
    # QEMU commit 826cc32423db ("aio-posix: split poll check from ready handler") traces an
    # IOThread's io_submit at 0.020 ms for 16 iocbs, 0.035 ms for 32 (~1.1-1.25 us per iocb),
    # blk-mq and NVMe submit included, which the model adds on top of this value.
    io_submit_ns: int = 1_200
    # The completion's trip back to the device model: the AIO eventfd signal and the wake-up
    # of the sleeping thread (a context switch), then io_getevents(2) and the callback for
    # each event. QEMU block/linux-aio.c qemu_laio_completion_cb reaps every completed event
    # per eventfd read, so only a thread that was idle pays the wake-up. Wake-up: a
    # context-switch benchmark in a KVM guest measures "2493.14 ns/ctxsw"
    # (lkml.iu.edu/hypermail/linux/kernel/1708.3/03774.html).
    aio_wakeup_ns: int = 2_500
    # io_getevents(2) and the callback, per event. No absolute figure found; fio commit
    # 675012f04dbd ("Adding userspace_libaio_reap option") gives only a ratio: reaping in
    # userspace took "less than an eighth" of the io_getevents syscall's time. Unsourced.
    aio_event_ns: int = 500
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

    def ns_to_instructions(self, ns: int) -> int:
        """How many guest instructions take ``ns`` (the inverse of ``instructions_ns``)."""
        return ns * self.guest_ipc * self.cpu_mhz // 1000

    def exit_ns(self, *, userspace: bool = False) -> int:
        """One exit round trip, to the kernel or to a userspace device model."""
        return self.userspace_exit_ns if userspace else self.vm_exit_ns


DEFAULT_COSTS = Costs()
