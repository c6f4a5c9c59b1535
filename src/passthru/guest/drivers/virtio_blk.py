"""The guest's virtio-blk driver over the virtio-pci modern transport.

What is modelled
    Linux ``drivers/block/virtio_blk.c`` over ``drivers/virtio/virtio_pci_modern.c`` and
    ``virtio_ring.c``, reduced to what moves bytes and costs time:

    - ``probe``: the initialization sequence of virtio 1.2 section 3.1.1 through the common
      configuration (4.1.4.3): reset, ACKNOWLEDGE, DRIVER, read the 64 device feature bits,
      write the accepted subset (``VIRTIO_F_VERSION_1`` always; ``INDIRECT_DESC`` and
      ``EVENT_IDX`` when wanted and offered; ``BLK_F_FLUSH``/``SEG_MAX``/``SIZE_MAX``/
      ``BLK_SIZE``), FEATURES_OK and its re-read, the device configuration
      (``capacity``, ``seg_max``), queue 0 set up (``queue_select``, ``queue_size``,
      ``queue_desc``/``driver``/``device`` in lo/hi halves, ``queue_msix_vector``,
      ``queue_notify_off``, ``queue_enable``), DRIVER_OK.
    - ``submit``: ``virtblk_add_req``: a ``virtio_blk_outhdr`` buffer, the data split into
      one buffer per 4 KiB page (a scatter-gather list), the status byte; one indirect table
      per request when ``VIRTIO_F_INDIRECT_DESC`` is negotiated, else a direct chain (waiting
      for free descriptors when the ring is short of them); publish, ``virtqueue_kick_prepare``
      and a notify write only when the device asks for one.
    - ``irq_loop``: ``vring_interrupt`` -> ``virtblk_done``: reap every used entry and wake
      its submitter, which reads the status byte and, for reads, the data.

    Guest CPU time is charged with ``compute``, the same way as the NVMe driver does
    (``guest.drivers.nvme``): the syscall and blk-mq costs of ``hv.costs`` (``syscall_ns``,
    ``block_layer_submit_ns``, ``block_layer_complete_ns``, ``guest_irq_entry_ns``) plus
    instruction counts estimated for the virtio code paths (``*_INSNS`` below; order-of-
    magnitude values, not measurements). Ring memory is written with guest stores
    (``Vm.write``): the guest's own writes are not inputs.

What is left out
    The guest block layer (blk-mq tags, merging, plugging), PCI capability discovery (the BAR
    address is given), the MSI-X table (the path maps the queue's entry to ``vector``),
    multiqueue, DISCARD/WRITE_ZEROES, config-change interrupts and request timeouts.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Final

from passthru.errors import ConfigError
from passthru.guest.kernel import GuestKernel
from passthru.hv.vm import Vm
from passthru.hw.devices.virtio import (
    COMMON_CFG,
    DEVICE_CFG,
    NOTIFY_CFG,
    NOTIFY_OFF_MULTIPLIER,
    DeviceStatus,
    Feature,
    bit,
)
from passthru.hw.devices.virtio.blk import (
    CFG_BLK_SIZE,
    CFG_CAPACITY,
    CFG_SEG_MAX,
    OUTHDR,
    SECTOR_SIZE,
    BlkFeature,
    ReqType,
)
from passthru.hw.devices.virtio.virtqueue import DESC_SIZE, DriverRing, SplitLayout, ring_bytes
from passthru.sim import Event

GuestGen = Generator[Any, Any, Any]
PAGE: Final = 4096

# Instruction estimates for the Linux paths (see the module docstring).
SUBMIT_INSNS: Final = 400  # virtio_queue_rq + virtblk_add_req + virtqueue_add_split fixed part
PER_SEG_INSNS: Final = 40  # one scatterlist entry -> one descriptor
IRQ_INSNS: Final = 250  # vring_interrupt + virtblk_done loop overhead
PER_DONE_INSNS: Final = 150  # virtqueue_get_buf_ctx_split + blk_mq_complete_request per request

# common configuration offsets (4.1.4.3)
_DFSEL, _DF, _GFSEL, _GF = 0x00, 0x04, 0x08, 0x0C
_STATUS, _QSEL, _QSIZE, _QMSIX, _QENABLE, _QNOFF = 0x14, 0x16, 0x18, 0x1A, 0x1C, 0x1E
_QDESC, _QDRIVER, _QDEVICE = 0x20, 0x28, 0x30


class _GuestStores:
    """Ring memory as the guest's own loads and stores."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    def read(self, addr: int, length: int) -> bytes:
        return self.vm.read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self.vm.write(addr, data)


@dataclass
class _Slot:
    """Per-request guest memory: header + status + indirect table, and a data buffer."""

    meta: int
    data: int

    @property
    def header(self) -> int:
        return self.meta

    @property
    def status(self) -> int:
        return self.meta + OUTHDR.size

    @property
    def table(self) -> int:
        return self.meta + 32


@dataclass(frozen=True, slots=True)
class BlkResult:
    status: int
    data: bytes | None


class VirtioBlkDriver:
    """The driver for one virtio-blk function whose BAR is at guest-physical ``bar``."""

    WANTED = (bit(Feature.VIRTIO_F_VERSION_1) | bit(BlkFeature.VIRTIO_BLK_F_SIZE_MAX)
              | bit(BlkFeature.VIRTIO_BLK_F_SEG_MAX) | bit(BlkFeature.VIRTIO_BLK_F_BLK_SIZE)
              | bit(BlkFeature.VIRTIO_BLK_F_FLUSH))

    def __init__(self, g: GuestKernel, bar: int, *, vector: int, msix_entry: int = 1,
                 queue_size: int | None = None, event_idx: bool = False,
                 indirect: bool = True, max_io_bytes: int = 128 * 1024) -> None:
        if max_io_bytes <= 0 or max_io_bytes % PAGE:
            raise ConfigError(f"virtio-blk max_io_bytes {max_io_bytes:#x} must be a positive "
                              "multiple of 4 KiB")
        self.g = g
        self.bar = bar
        self.vector = vector
        self.msix_entry = msix_entry
        self.want_queue_size = queue_size
        self.want_event_idx = event_idx
        self.want_indirect = indirect
        self.max_io_bytes = max_io_bytes
        self.mem = _GuestStores(g.vm)
        self.features = 0
        self.capacity = 0  # sectors
        self.blk_size = SECTOR_SIZE
        self.seg_max = max_io_bytes // PAGE
        self.ring: DriverRing | None = None
        self.notify_addr = 0
        self._ring_base: int | None = None
        self._ring_size = 0
        self._slots: list[_Slot] = []
        self._free_slots: list[_Slot] = []
        self._pending: dict[int, Event] = {}
        self._waiters: list[Event] = []  # submitters waiting for a slot or descriptors
        self.kicks = 0
        self.kicks_suppressed = 0
        self.completions = 0
        self.cpu_ns = 0  # vCPU work charged by this driver's compute()
        c = g.costs
        self._submit_insns = c.ns_to_instructions(c.syscall_ns + c.block_layer_submit_ns)
        self._done_insns = c.ns_to_instructions(c.block_layer_complete_ns)
        self._irq_insns = c.ns_to_instructions(c.guest_irq_entry_ns)

    def __repr__(self) -> str:
        return (f"<VirtioBlkDriver bar={self.bar:#x} capacity={self.capacity} "
                f"features={self.features:#x} {self.ring!r}>")

    # ------------------------------------------------------------------ helpers
    def _cfg_w(self, off: int, value: int, size: int) -> GuestGen:
        yield from self.g.mmio_write(self.bar + COMMON_CFG + off, value, size)

    def _cfg_r(self, off: int, size: int) -> GuestGen:
        return (yield from self.g.mmio_read(self.bar + COMMON_CFG + off, size))

    def _compute(self, n: int) -> GuestGen:
        self.cpu_ns += yield from self.g.compute(n)

    def has(self, feature: int) -> bool:
        return bool(self.features >> int(feature) & 1)

    # ------------------------------------------------------------------ probe / reset
    def reset(self) -> GuestGen:
        """Write 0 to device_status and wait until it reads back 0 (4.1.4.3.2)."""
        yield from self._cfg_w(_STATUS, 0, 1)
        while (yield from self._cfg_r(_STATUS, 1)) != 0:
            pass
        self._pending.clear()

    def probe(self) -> GuestGen:
        """Bring the device up (3.1.1). Returns the capacity in sectors."""
        yield from self.reset()
        status = DeviceStatus.ACKNOWLEDGE
        yield from self._cfg_w(_STATUS, status, 1)
        status |= DeviceStatus.DRIVER
        yield from self._cfg_w(_STATUS, status, 1)
        offered = 0
        for sel in (0, 1):
            yield from self._cfg_w(_DFSEL, sel, 4)
            offered |= (yield from self._cfg_r(_DF, 4)) << (32 * sel)
        wanted = self.WANTED
        if self.want_indirect:
            wanted |= bit(Feature.VIRTIO_F_INDIRECT_DESC)
        if self.want_event_idx:
            wanted |= bit(Feature.VIRTIO_F_EVENT_IDX)
        self.features = offered & wanted
        if not self.has(Feature.VIRTIO_F_VERSION_1):
            yield from self._cfg_w(_STATUS, status | DeviceStatus.FAILED, 1)
            raise ConfigError("virtio-blk device does not offer VIRTIO_F_VERSION_1")
        for sel in (0, 1):
            yield from self._cfg_w(_GFSEL, sel, 4)
            yield from self._cfg_w(_GF, self.features >> (32 * sel) & 0xFFFFFFFF, 4)
        status |= DeviceStatus.FEATURES_OK
        yield from self._cfg_w(_STATUS, status, 1)
        if not (yield from self._cfg_r(_STATUS, 1)) & DeviceStatus.FEATURES_OK:
            yield from self._cfg_w(_STATUS, status | DeviceStatus.FAILED, 1)
            raise ConfigError("virtio-blk device refused FEATURES_OK")
        lo = yield from self.g.mmio_read(self.bar + DEVICE_CFG + CFG_CAPACITY, 4)
        hi = yield from self.g.mmio_read(self.bar + DEVICE_CFG + CFG_CAPACITY + 4, 4)
        self.capacity = lo | hi << 32
        if self.has(BlkFeature.VIRTIO_BLK_F_BLK_SIZE):
            self.blk_size = yield from self.g.mmio_read(self.bar + DEVICE_CFG + CFG_BLK_SIZE, 4)
        self.seg_max = 1
        if self.has(BlkFeature.VIRTIO_BLK_F_SEG_MAX):
            self.seg_max = yield from self.g.mmio_read(self.bar + DEVICE_CFG + CFG_SEG_MAX, 4)
        # queue 0 (4.1.5.1.3)
        yield from self._cfg_w(_QSEL, 0, 2)
        size = yield from self._cfg_r(_QSIZE, 2)
        if self.want_queue_size is not None:
            size = min(size, self.want_queue_size)
            yield from self._cfg_w(_QSIZE, size, 2)
        layout = self._layout(size)
        for off, addr in ((_QDESC, layout.desc), (_QDRIVER, layout.avail),
                          (_QDEVICE, layout.used)):
            yield from self._cfg_w(off, addr & 0xFFFFFFFF, 4)
            yield from self._cfg_w(off + 4, addr >> 32, 4)
        yield from self._cfg_w(_QMSIX, self.msix_entry, 2)
        noff = yield from self._cfg_r(_QNOFF, 2)
        self.notify_addr = self.bar + NOTIFY_CFG + noff * NOTIFY_OFF_MULTIPLIER
        self.ring = DriverRing(layout, self.mem, event_idx=self.has(Feature.VIRTIO_F_EVENT_IDX),
                               indirect=self.has(Feature.VIRTIO_F_INDIRECT_DESC))
        self.ring.init()
        yield from self._cfg_w(_QENABLE, 1, 2)
        status |= DeviceStatus.DRIVER_OK
        yield from self._cfg_w(_STATUS, status, 1)
        return self.capacity

    def _layout(self, size: int) -> SplitLayout:
        if self._ring_base is None or size > self._ring_size:
            d, a, u = ring_bytes(size)
            self._ring_base = self.g.alloc_dma(d + a + u + 8, align=PAGE)
            self._ring_size = size
        return SplitLayout.contiguous(self._ring_base, size)

    # ------------------------------------------------------------------ I/O
    def _segments(self) -> int:
        return self.max_io_bytes // PAGE

    @property
    def max_request_bytes(self) -> int:
        """The largest request: ``max_io_bytes``, or what a direct chain of the ring fits."""
        limit = min(self.max_io_bytes, max(1, self.seg_max) * PAGE)
        if self.ring is None or self.ring.indirect:
            return limit
        return min(limit, (self.ring.layout.size - 2) * PAGE)

    def _get_slot(self) -> GuestGen:
        assert self.ring is not None
        while True:
            if self._free_slots:
                return self._free_slots.pop()
            if len(self._slots) < self.ring.layout.size:
                meta = self.g.alloc_dma(32 + DESC_SIZE * (self._segments() + 2), align=64)
                slot = _Slot(meta, self.g.alloc_dma(self.max_io_bytes, align=PAGE))
                self._slots.append(slot)
                return slot
            ev = self.g.env.event()
            self._waiters.append(ev)
            yield ev

    def _wake_waiters(self) -> None:
        """Wake every submitter waiting for a slot or descriptors; each re-checks."""
        waiters, self._waiters = self._waiters, []
        for ev in waiters:
            ev.succeed()

    def submit(self, rtype: int, sector: int, *, nbytes: int = 0,
               data: bytes | None = None) -> GuestGen:
        """One request; returns a :class:`BlkResult` once the device has completed it."""
        ring = self.ring
        if ring is None:
            raise ConfigError("virtio-blk: submit before probe")
        if data is not None:
            nbytes = len(data)
        if nbytes > self.max_request_bytes:
            raise ConfigError(f"virtio-blk request of {nbytes} bytes exceeds the "
                              f"{self.max_request_bytes} bytes one request can carry")
        slot = yield from self._get_slot()
        self.g.store(slot.header, OUTHDR.pack(rtype, 0, sector))
        self.g.store(slot.status, b"\xff")
        if data:
            self.g.store(slot.data, data)
        writable = rtype != ReqType.VIRTIO_BLK_T_OUT
        bufs = [(slot.header, OUTHDR.size, False)]
        bufs += [(slot.data + off, min(PAGE, nbytes - off), writable)
                 for off in range(0, nbytes, PAGE)]
        bufs.append((slot.status, 1, True))
        while ring.descriptors_needed(len(bufs)) > ring.num_free:
            ev = self.g.env.event()
            self._waiters.append(ev)
            yield ev
        head = ring.add(bufs, slot.table)
        done = self.g.env.event()
        self._pending[head] = done
        yield from self._compute(self._submit_insns + SUBMIT_INSNS
                                 + PER_SEG_INSNS * len(bufs))
        if ring.kick_prepare():
            self.kicks += 1
            yield from self.g.mmio_write(self.notify_addr, 0, 2)
        else:
            self.kicks_suppressed += 1
        yield done
        status = self.g.load(slot.status, 1)[0]
        out = None
        if rtype == ReqType.VIRTIO_BLK_T_IN or rtype == ReqType.VIRTIO_BLK_T_GET_ID:
            out = self.g.load(slot.data, nbytes)
        self._free_slots.append(slot)
        self._wake_waiters()
        return BlkResult(status, out)

    def read(self, sector: int, nsectors: int) -> GuestGen:
        return (yield from self.submit(ReqType.VIRTIO_BLK_T_IN, sector,
                                       nbytes=nsectors * SECTOR_SIZE))

    def write(self, sector: int, data: bytes) -> GuestGen:
        return (yield from self.submit(ReqType.VIRTIO_BLK_T_OUT, sector, data=data))

    def flush(self) -> GuestGen:
        return (yield from self.submit(ReqType.VIRTIO_BLK_T_FLUSH, 0))

    def irq_loop(self) -> GuestGen:
        """The queue's interrupt handler, run forever as a guest process."""
        while True:
            yield from self.g.wait_interrupt(self.vector)
            ring = self.ring
            done = []
            while ring is not None and (got := ring.get_buf()) is not None:
                ev = self._pending.pop(got[0], None)
                if ev is not None:
                    done.append(ev)
            yield from self._compute(self._irq_insns + IRQ_INSNS
                                     + (self._done_insns + PER_DONE_INSNS) * len(done))
            self.completions += len(done)
            for ev in done:
                ev.succeed()
                self._wake_waiters()
