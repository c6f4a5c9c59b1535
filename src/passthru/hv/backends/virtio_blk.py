"""The virtio-blk I/O path: a paravirtual disk whose device model lives in the hypervisor.

What is modelled
    QEMU's ``virtio-blk-pci`` in front of a host block device:

    - The guest runs the real virtio-blk driver (``guest.drivers.virtio_blk``) against a
      virtio-pci modern BAR. Configuration accesses trap to the userspace device model (a
      heavyweight exit each, ``Costs.userspace_exit_ns``); only probe/reset use them.
    - The queue notification (the "kick") is chosen by ``notify``:

      ``"userspace"``  QEMU without ioeventfd: the notify write is a heavyweight exit to QEMU,
                       which pops the ring on the vCPU thread (``virtio_queue_notify``),
                       starting half an exit round trip after the write.
      ``"ioeventfd"``  KVM matches the write to an ioeventfd (``KVM_IOEVENTFD``): a light
                       in-kernel exit; the iothread wakes from ``ppoll`` (``iothread_wakeup_ns``)
                       and pops the ring (``virtio_blk_handle_vq``).
      ``"poll"``       an iothread busy-polls the avail ring (QEMU ``AioContext`` adaptive
                       polling, ``poll-max-ns``): while it polls it sets
                       ``VIRTQ_USED_F_NO_NOTIFY`` so the guest does not kick at all; after
                       ``poll_max_ns`` without an event (a new request or a completion) it
                       re-enables notifications and sleeps until a kick (an ioeventfd exit)
                       or a completion wakes it. Polling time is host CPU time.

      In every mode the device suppresses kicks while it drains the ring, as
      ``virtio_blk_handle_vq`` does (disable notification, drain, enable, re-check).
    - Each request is parsed by ``hw.devices.virtio.blk.VirtioBlk`` and performed on a
      :class:`Media`: either the NVMe path's ``HostNvmeBackend`` (io_submit into the host
      block layer and the host NVMe driver on the simulated SSD: the same host stack the
      emulated NVMe path uses; what :func:`build_virtio_blk_path` picks) or
      :class:`DirectMedia` (the SSD's ``Namespace`` timing plus the host stack's costs from
      ``hv.costs``, without simulating the host driver; the default for a path built by hand).
    - Data and ring updates reach guest memory through the VM's input choke point
      (``Vm.dma_write``); completion is an MSI-X interrupt raised through KVM's irqfd
      (``Vm.deliver_interrupt``: injected with an exit, or posted with APICv), and the
      guest's EOI exits unless APIC virtualization is on (``Host.posted_interrupts``).
    - CPU time is a resource (:class:`~passthru.hv.cpu.Cpu`). The guest driver, its
      interrupt handler and its exits run on the vCPU. The device model is one QEMU
      iothread (``-object iothread``, ``virtio-blk-pci,iothread=``) on the media's thread
      ``Media.cpu``: popping and parsing requests (``vq_pop_ns``), the host I/O it makes
      (``io_submit`` into the host block layer and NVMe driver; the SSD's vector is affine
      to that core, so the host's interrupt work runs there too) and completing them
      (AIO completion, ``complete_ns``) all queue FIFO on that one thread, so it bounds the
      path's IOPS.

Costs (``VirtioBlkCosts``; specific to this device model, so not in ``hv.costs``)
    See the field comments for the source of each default.

What is left out
    Multiqueue (all jobs share one virtqueue) and several iothreads, vhost-kernel/vhost-user,
    the host page cache (``cache=none``, O_DIRECT), request merging in QEMU, the iothread's
    own core (not taken from ``Host.core_owner``), the CPU time of the poll loop's idle
    passes (they yield to any work on the thread) and, with ``notify="userspace"``, the
    vCPU thread popping the ring inside the exit (the pop runs on the media's thread), and
    migration of in-flight requests (``save_state`` refuses while requests are in flight).
    The disk's contents are not part of the device state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from passthru.errors import ConfigError, PassthruError
from passthru.guest.drivers.virtio_blk import VirtioBlkDriver
from passthru.guest.kernel import GuestKernel
from passthru.hv.cpu import Cpu, aio_completion_ns, busy_by_name
from passthru.hv.host import Host
from passthru.hv.vm import MmioRegion, Vm
from passthru.hw.devices.nvme.namespace import MediaProfile, Namespace, media_profile
from passthru.hw.devices.virtio import (
    BAR_SIZE,
    NOTIFY_CFG,
    DeviceStatus,
    TransportState,
    VirtioPciTransport,
)
from passthru.hw.devices.virtio.blk import (
    SECTOR_SIZE,
    BlkRequest,
    BlkState,
    BlkStatus,
    ReqType,
    VirtioBlk,
)
from passthru.hw.devices.virtio.virtqueue import ChainError, DeviceRing
from passthru.scenarios.io_path import IoCompletion, IoRequest, PathCounters, PathName
from passthru.sim import Event

Gen = Generator[Any, Any, Any]
NotifyMode = Literal["userspace", "ioeventfd", "poll"]
NOTIFY_MODES: tuple[str, ...] = ("userspace", "ioeventfd", "poll")
MiB = 1 << 20
GiB = 1 << 30
VIRTQUEUE_MAX_SIZE: Final = 1024  # QEMU include/hw/virtio/virtio.h


@dataclass(frozen=True, slots=True)
class VirtioBlkCosts:
    """Costs of the virtio-blk device model and its iothread (integer ns)."""

    # QEMU virtqueue_pop + virtio_blk_handle_request: read the avail entry, walk and map the
    # descriptors (address_space_map per segment), parse the header. No per-stage figure found;
    # total only: QEMU commit 826cc32423db reports 168k-174k IOPS from one IOThread (~5.8 us
    # each if it was saturated, not stated); this + complete_ns + DirectMedia's costs = 5.8 us.
    vq_pop_ns: int = 1_000
    # virtio_blk_req_complete: status byte, virtqueue_push, virtio_notify_irqfd (an eventfd
    # write into KVM). Upper bound only: the perf trace in QEMU commit 826cc32423db shows each
    # eventfd write(2) at 0.001-0.002 ms, tracing overhead included.
    complete_ns: int = 700
    # Wake-up of a sleeping iothread by an ioeventfd (ppoll returns on another core): a
    # context switch and scheduler latency, the cost QEMU's polling mode exists to avoid
    # (QEMU commit "aio: add polling mode to AioContext", Stefan Hajnoczi, 2016). Linux
    # Documentation/virt/kvm/halt-polling.rst: "a trip through the scheduler, normally on
    # the order of a few micro-seconds" (compare Costs.aio_wakeup_ns).
    iothread_wakeup_ns: int = 4_000
    # One pass of the poll loop (run_poll_handlers: virtio_queue_host_notifier_aio_poll
    # reads avail->idx); a new entry is seen within one pass. No per-pass figure found (QEMU
    # commit e4346192f1c2 shows only that a pass slows as handlers multiply). Unsourced.
    poll_interval_ns: int = 500
    # QEMU iothread.c IOTHREAD_POLL_MAX_NS_DEFAULT = 32768: poll this long for new work
    # before going back to ppoll and re-enabling notifications.
    poll_max_ns: int = 32_768

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"virtio_blk_costs.{f.name} = {v!r} must be a "
                                  "non-negative int (ns)")
        if self.poll_interval_ns == 0:
            raise ConfigError("virtio_blk_costs.poll_interval_ns must be positive")


DEFAULT_VIRTIO_BLK_COSTS: Final = VirtioBlkCosts()

Done = Callable[[int, bytes | None], None]


class Media(Protocol):
    """Where the device model's I/O goes (``nvme_paths.HostNvmeBackend`` has this shape).

    ``op``: 0 flush, 1 write, 2 read (NVMe opcodes); ``done(status, data)`` is called at
    completion (status 0 = success; ``data`` for reads).
    """

    lba_size: int
    nsze: int
    cpu: Cpu  # the host thread that performs the I/O (and runs the device model)

    @property
    def host_cpu_ns(self) -> int: ...
    def start(self) -> Gen: ...
    def submit(self, op: int, slba: int, nlb: int, data: bytes | None, done: Done) -> None: ...


class DirectMedia:
    """The SSD's :class:`Namespace` behind the host I/O stack, costed but not simulated:
    ``syscall + io_submit + blk-mq + NVMe driver`` before the device, the namespace's service
    time, then ``NVMe driver + blk-mq completion + AIO completion`` (all ``hv.costs``), both
    on its own host thread ``cpu`` (the iothread that submits)."""

    def __init__(self, host: Host, profile: MediaProfile, capacity_bytes: int,
                 *, name: str = "vblk0") -> None:
        self.env = host.env
        self.ns = Namespace(profile, capacity_bytes, host.streams.get(f"{name}/media"))
        self.lba_size = self.ns.lba_size
        self.nsze = self.ns.nsze
        c = host.costs
        self.submit_ns = (c.syscall_ns + c.io_submit_ns + c.block_layer_submit_ns
                          + c.nvme_driver_submit_ns)
        self.complete_ns = c.nvme_driver_complete_ns + c.block_layer_complete_ns
        self.costs = c
        self.cpu_ns = 0
        self.requests = 0
        self.cpu = Cpu(host.env, f"{name}/iothread")

    def __repr__(self) -> str:
        return f"<DirectMedia {self.ns!r} requests={self.requests}>"

    @property
    def host_cpu_ns(self) -> int:
        return self.cpu_ns

    def start(self) -> Gen:
        return
        yield  # pragma: no cover - a generator with nothing to do

    def submit(self, op: int, slba: int, nlb: int, data: bytes | None, done: Done) -> None:
        self.requests += 1
        self.cpu_ns += self.submit_ns
        self.env.process(self._io(op, slba, nlb, data, done))

    def _completion(self) -> int:
        ns = self.complete_ns + aio_completion_ns(self.costs, self.cpu)
        self.cpu_ns += ns
        return self.cpu.delay(ns)

    def _io(self, op: int, slba: int, nlb: int, data: bytes | None, done: Done) -> Gen:
        yield self.cpu.delay(self.submit_ns)
        if op and not self.ns.in_range(slba, nlb):
            yield self._completion()
            done(0x80, None)  # NVMe LBA Out of Range
            return
        yield self.ns.service(self.env.now, op, nlb * self.lba_size if op else 0)
        if op == 1:
            assert data is not None
            self.ns.write(slba, data)
        out = self.ns.read(slba, nlb) if op == 2 else None
        yield self._completion()
        done(0, out)


@dataclass
class VirtioBlkState:
    """The device side of a snapshot: transport registers, device state and rings."""

    transport: TransportState
    device: BlkState


class _GuestDma:
    """The device model's access to guest RAM: writes go through the input choke point."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    def read(self, addr: int, length: int) -> bytes:
        return self.vm.read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        if data:
            self.vm.write(addr, data)
            self.vm.dma_write(addr, data)  # Vm.inject(DMA_WRITE): replay, dirty tracking


class _NotifyWindow:
    """The notification capability as its own MMIO region (offsets from NOTIFY_CFG)."""

    def __init__(self, transport: VirtioPciTransport) -> None:
        self.transport = transport

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        self.transport.write(NOTIFY_CFG + offset, value, size)


class VirtioBlkPath:
    """The ``"virtio-blk"`` :class:`~passthru.scenarios.io_path.IoPath`.

    ``VirtioBlkPath(host, vm=None, *, media=None, notify="ioeventfd", device="nand", ...)``.
    With no ``vm`` one is created (``vm_memory_bytes``, vCPU 0 pinned to ``vm_core``); with
    no ``media`` a :class:`DirectMedia` of ``device`` and ``capacity_bytes``.
    ``posted_interrupts`` (default: the host's) decides how KVM delivers completions.
    """

    name: PathName = "virtio-blk"

    def __init__(self, host: Host, vm: Vm | None = None, *, media: Media | None = None,
                 notify: str = "ioeventfd", device: str | MediaProfile = "nand",
                 capacity_bytes: int = 1 * GiB, queue_size: int = 128, vcpu: int = 0,
                 vector: int = 0x51, event_idx: bool = False, indirect: bool = True,
                 max_io_bytes: int = 128 * 1024,
                 costs: VirtioBlkCosts = DEFAULT_VIRTIO_BLK_COSTS,
                 posted_interrupts: bool | None = None, vm_memory_bytes: int = 64 * MiB,
                 vm_core: int = 0, name: str = "vblk0") -> None:
        if notify not in NOTIFY_MODES:
            raise ConfigError(f"virtio-blk notify {notify!r} must be one of "
                              f"{', '.join(NOTIFY_MODES)}")
        if (not isinstance(queue_size, int) or queue_size < 2 or queue_size & (queue_size - 1)
                or queue_size > VIRTQUEUE_MAX_SIZE):
            raise ConfigError(f"virtio-blk queue_size {queue_size!r} must be a power of two "
                              f"in 2..{VIRTQUEUE_MAX_SIZE}")
        if media is None:
            profile = media_profile(device) if isinstance(device, str) else device
            media = DirectMedia(host, profile, capacity_bytes, name=name)
        if vm is None:
            vm = host.create_vm(f"{name}-guest", vm_memory_bytes, [vm_core])
        self.host = host
        self.env = host.env
        self.vm = vm
        self.media = media
        self.vcpu = vcpu
        self.vector = vector
        self.notify = notify
        self.costs = costs
        self.posted = host.posted_interrupts if posted_interrupts is None else posted_interrupts
        self.dev_name = name
        self.block_size = media.lba_size
        self._per_block = media.lba_size // SECTOR_SIZE
        # With indirect tables a request takes one ring descriptor; without, 2 + its pages
        # (the depth is quoted for 4 KiB requests; larger ones wait for free descriptors).
        self.max_queue_depth = queue_size if indirect else max(1, queue_size // 3)
        self.dma = _GuestDma(vm)
        self.device = VirtioBlk(media.nsze * self._per_block, self.dma,
                                blk_size=media.lba_size, queue_size=queue_size,
                                seg_max=max(1, max_io_bytes // 4096))
        self.transport = VirtioPciTransport(self.device, name=name)
        self.transport.notify_hook = self._on_notify
        self.transport.interrupt_hook = self._on_interrupt
        self.bar = vm.alloc_mmio(BAR_SIZE)
        vm.add_mmio(MmioRegion(f"{name}-cfg", self.bar, NOTIFY_CFG, self.transport,
                               traps=True, userspace=True))
        vm.add_mmio(MmioRegion(f"{name}-notify", self.bar + NOTIFY_CFG, BAR_SIZE - NOTIFY_CFG,
                               _NotifyWindow(self.transport), traps=True,
                               userspace=notify == "userspace"))
        self.driver = VirtioBlkDriver(GuestKernel(vm, vcpu), self.bar, vector=vector,
                                      queue_size=queue_size, event_idx=event_idx,
                                      indirect=indirect, max_io_bytes=max_io_bytes)
        self.msix_entry = self.driver.msix_entry
        # counters
        self.ios = 0
        self.inflight = 0
        self.peak_inflight = 0
        self.interrupts = 0
        self.notifies = 0
        self.wakeups = 0
        self.model_ns = 0  # device model CPU time (ring walk, completion)
        self.poll_ns = 0  # finished polling episodes
        self.errors: list[ChainError] = []
        self._polling_since: int | None = None
        self._kicked = False
        self._wakeup_ns = 0
        self._last_event = 0  # last completion handled by the iothread (poll mode)
        self._kick_ev: Event | None = None
        self.env.process(self._iothread())

    def __repr__(self) -> str:
        return (f"<VirtioBlkPath {self.dev_name} notify={self.notify} vm={self.vm.name!r} "
                f"ios={self.ios} inflight={self.inflight}>")

    # ------------------------------------------------------------------ IoPath
    def start(self) -> Gen:
        """Bring up the host backend, probe the device through the guest driver, start the
        guest's interrupt handler (and, when polling, the iothread's first poll)."""
        yield from self.media.start()
        yield from self.driver.probe()
        self.env.process(self.driver.irq_loop())
        if self.notify == "poll":
            self._kick(0)

    def submit(self, req: IoRequest) -> Event:
        if req.op not in ("read", "write", "flush"):
            raise ConfigError(f"io request op {req.op!r} must be read, write or flush")
        nbytes = req.nblocks * self.block_size
        limit = self.driver.max_request_bytes
        if req.op != "flush" and (req.nblocks < 1 or nbytes > limit):
            raise ConfigError(f"io request nblocks {req.nblocks} must be in 1.."
                              f"{limit // self.block_size}")
        if req.op == "write" and (req.data is None or len(req.data) != nbytes):
            raise ConfigError(f"io request data must be exactly {nbytes} bytes for a write "
                              f"of {req.nblocks} blocks")
        done = self.env.event()
        self.env.process(self._guest_io(req, done))
        return done

    def _guest_io(self, req: IoRequest, done: Event) -> Gen:
        t0 = self.env.now
        drv = self.driver
        sector = req.lba * self._per_block
        if req.op == "read":
            res = yield from drv.read(sector, req.nblocks * self._per_block)
        elif req.op == "write":
            assert req.data is not None
            res = yield from drv.write(sector, req.data)
        else:
            res = yield from drv.flush()
        self.ios += 1
        done.succeed(IoCompletion(res.status, t0, self.env.now, res.data))

    def counters(self) -> PathCounters:
        polling = self.poll_ns
        if self._polling_since is not None:
            polling += self.env.now - self._polling_since
        st = self.vm.stats
        return PathCounters(
            ios=self.ios, vm_exits=st.exits, interrupts=self.interrupts,
            host_cpu_ns=(st.exit_ns + self.model_ns + self.media.host_cpu_ns + polling
                         + self.driver.cpu_ns),
            extra={"notify_exits": self.notifies,
                   "kicks_suppressed": self.driver.kicks_suppressed,
                   "poll_ns": polling, "iothread_wakeups": self.wakeups,
                   "device_model_ns": self.model_ns, "guest_driver_ns": self.driver.cpu_ns,
                   "mmio_exits": st.mmio_exits, "chain_errors": len(self.errors),
                   "peak_inflight": self.peak_inflight},
            cpu_busy_ns=busy_by_name([self.vm.vcpus[self.vcpu].cpu, self.media.cpu]))

    # ------------------------------------------------------------------ device side
    def _on_notify(self, queue: int) -> None:
        self.notifies += 1
        if self.notify == "userspace":  # QEMU sees the write once KVM_RUN has returned
            self._kick(self.host.costs.userspace_exit_ns // 2)
        else:
            self._kick(self.costs.iothread_wakeup_ns)

    def _on_interrupt(self, entry: int) -> None:
        if entry == self.msix_entry:
            self.interrupts += 1
            self.vm.deliver_interrupt(self.vcpu, self.vector, posted=self.posted)  # irqfd

    def _kick(self, delay_ns: int) -> None:
        """Wake the device model; it starts work ``delay_ns`` later (0: already awake)."""
        self._kicked = True
        self._wakeup_ns = delay_ns
        if self._kick_ev is not None and not self._kick_ev.triggered:
            self._kick_ev.succeed()

    def _ring(self) -> DeviceRing | None:
        rings = self.device.rings
        if not rings or self.transport.state.status & DeviceStatus.DEVICE_NEEDS_RESET:
            return None
        return rings[0]

    def _iothread(self) -> Gen:
        """The device model's event loop (QEMU iothread; the vCPU thread for "userspace")."""
        while True:
            if not self._kicked:
                self._kick_ev = self.env.event()
                yield self._kick_ev
                self._kick_ev = None
            self._kicked = False
            if self._wakeup_ns:
                self.wakeups += 1
                yield self._wakeup_ns
            if self.notify == "poll":
                yield from self._poll()
            else:
                yield from self._drain(reenable=True)

    def _drain(self, *, reenable: bool) -> Gen:
        """``virtio_blk_handle_vq``: pop every available request, with kicks suppressed."""
        ring = self._ring()
        if ring is None:
            return
        ring.set_notification(False)
        while True:
            while (chain := ring.pop()) is not None:
                self.model_ns += self.costs.vq_pop_ns
                yield self.media.cpu.delay(self.costs.vq_pop_ns)  # on the iothread
                if ring is not self._ring():
                    return  # reset while we were busy
                if isinstance(chain, ChainError):  # QEMU virtio_error(): the device breaks
                    self.errors.append(chain)
                    self.transport.state.status |= DeviceStatus.DEVICE_NEEDS_RESET
                    return
                self._issue(ring, self.device.parse(chain))
            if not reenable:
                return
            ring.set_notification(True)
            if not ring.pending():
                return
            ring.set_notification(False)

    def _poll(self) -> Gen:
        """Adaptive polling: spin while there is work, sleep after ``poll_max_ns`` idle."""
        c = self.costs
        ring = self._ring()
        if ring is None:
            return
        ring.set_notification(False)
        start = idle = self.env.now
        self._polling_since = start
        while self.env.now - max(idle, self._last_event) < c.poll_max_ns \
                and self._ring() is ring:
            if ring.pending():
                yield from self._drain(reenable=False)
                idle = self.env.now
            yield c.poll_interval_ns
        self.poll_ns += self.env.now - start
        self._polling_since = None
        if self._ring() is ring:
            ring.set_notification(True)
            if ring.pending():  # a request slipped in while notifications were off
                self._kick(0)

    def _issue(self, ring: DeviceRing, req: BlkRequest) -> None:
        """Hand a parsed request to the media (or finish it at once if it is invalid)."""
        self.inflight += 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)

        def done(status: int, data: bytes | None) -> None:
            st = BlkStatus.VIRTIO_BLK_S_OK if status == 0 else BlkStatus.VIRTIO_BLK_S_IOERR
            self.env.process(self._complete(ring, req, st, data))

        per = self._per_block
        if req.error is not None or req.type == ReqType.VIRTIO_BLK_T_GET_ID:
            done(0, None)
        elif req.type == ReqType.VIRTIO_BLK_T_IN:
            self.media.submit(2, req.sector // per, req.data_len // self.block_size, None, done)
        elif req.type == ReqType.VIRTIO_BLK_T_OUT:
            self.media.submit(1, req.sector // per, req.data_len // self.block_size,
                              self.device.gather(req), done)
        else:
            self.media.submit(0, 0, 0, None, done)

    def _complete(self, ring: DeviceRing, req: BlkRequest, status: BlkStatus,
                  data: bytes | None) -> Gen:
        self.model_ns += self.costs.complete_ns
        yield self.media.cpu.delay(self.costs.complete_ns)  # virtio_blk_req_complete
        self.inflight -= 1
        if ring is not self._ring():
            return  # the device was reset meanwhile: the request is dropped
        self._last_event = self.env.now
        if self.notify == "poll" and self._polling_since is None:
            self._kick(0)  # the AIO completion woke the iothread: it polls again
        written = self.device.complete(req, status, data)
        ring.push(req.head, written)
        if ring.should_interrupt():
            self.transport.signal_used(0)

    # ------------------------------------------------------------------ snapshots
    def save_state(self) -> VirtioBlkState:
        """Transport, device and ring state (guest RAM is the VM's, the disk the host's)."""
        if self.inflight:
            raise PassthruError(f"virtio-blk {self.dev_name}: cannot save with "
                                f"{self.inflight} requests in flight (quiesce first)")
        return VirtioBlkState(self.transport.save_state(), self.device.save_state())

    def load_state(self, state: VirtioBlkState) -> None:
        self.transport.load_state(state.transport)
        self.device.load_state(state.device)


# ---------------------------------------------------------------------- the PATHS registry
def build_virtio_blk_path(cfg: Any) -> VirtioBlkPath:
    """Builder for ``nvme_paths.PATHS["virtio-blk"]``: ``PathConfig -> VirtioBlkPath``.

    The host is the emulated NVMe path's (same topology, identity-mapped host DMA, same
    ``HostNvmeBackend`` on the same SSD), so the two paths differ only in the device model
    the guest sees. ``cfg.options``: ``notify`` (default ``"ioeventfd"``), ``event_idx``,
    ``indirect`` (default True), ``queue_size`` (default: QEMU's 256, or the next power of
    two holding ``queue_depth * io_queues``), ``virtio_blk_costs`` (a ``VirtioBlkCosts``).
    """
    from passthru.hv.backends import nvme_paths as npaths

    opts = dict(cfg.options)
    known = {"notify", "event_idx", "indirect", "queue_size", "virtio_blk_costs"}
    for key in opts:
        if key not in known:
            raise ConfigError(f"virtio-blk option {key!r} is not one of {', '.join(sorted(known))}")
    depth = cfg.queue_depth * cfg.io_queues
    queue_size = opts.get("queue_size", max(256, 1 << max(1, (depth - 1).bit_length())))
    if queue_size < depth:
        raise ConfigError(f"virtio-blk queue_size {queue_size} is below qd x numjobs = {depth}")
    host = npaths.nvme_host(cfg, identity_default=True)
    media = npaths.HostNvmeBackend(host, cfg, model_cmd_ns=0, queue_depth=depth)
    # guest RAM: kernel + rings, and per request a data buffer plus header/status/table
    ram = 16 * MiB + depth * (cfg.max_io_bytes + 4096)
    vm = host.create_vm("guest", -(-ram // (2 * MiB)) * 2 * MiB, [1])
    return VirtioBlkPath(host, vm, media=media, notify=opts.get("notify", "ioeventfd"),
                         queue_size=queue_size, event_idx=opts.get("event_idx", False),
                         indirect=opts.get("indirect", True), max_io_bytes=cfg.max_io_bytes,
                         costs=opts.get("virtio_blk_costs", DEFAULT_VIRTIO_BLK_COSTS),
                         posted_interrupts=cfg.posted_interrupts)


def register() -> bool:
    """Join ``hv.backends.nvme_paths.PATHS`` as ``"virtio-blk"`` (idempotent). False when
    that registry does not exist."""
    try:
        from passthru.hv.backends import nvme_paths
    except ImportError as exc:
        if exc.name != "passthru.hv.backends.nvme_paths":
            raise
        return False
    nvme_paths.register_path("virtio-blk", build_virtio_blk_path)
    return True


register()
