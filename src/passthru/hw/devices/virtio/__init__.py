"""Virtio devices and the virtio-pci modern transport (register model only, no timing).

What is modelled (virtio 1.2)
    - Device status (2.1) with the initialization sequence of 3.1.1: ACKNOWLEDGE, DRIVER,
      FEATURES_OK (refused when the driver asks for a feature the device does not offer or
      omits ``VIRTIO_F_VERSION_1``), DRIVER_OK; writing 0 resets the device (2.4).
    - Feature bits (6) shared by all devices, selected 32 bits at a time.
    - The virtio-pci modern capabilities (4.1.4) laid out in one BAR the way QEMU's
      ``hw/virtio/virtio-pci.c`` lays them out: common configuration at 0x0000 (4.1.4.3,
      ``struct virtio_pci_common_cfg``, a register table below), ISR status at 0x1000
      (4.1.4.5, read-to-clear), device-specific configuration at 0x2000 (4.1.4.6) and
      notifications at 0x3000 with ``notify_off_multiplier`` 4 (4.1.4.4): queue ``q`` is
      notified by writing its index to ``0x3000 + queue_notify_off * 4``.
    - Used-buffer notifications go out as MSI-X vectors: the transport keeps each queue's
      ``queue_msix_vector`` (an MSI-X table entry) and calls ``interrupt_hook(entry)``; the
      hypervisor maps the entry to a guest vector.

What is left out
    The PCI capability list the driver would walk to find these structures (the hypervisor
    gives the driver the BAR's address, as ``hv.emulated`` does), the MSI-X table and PBA
    themselves, the legacy (0.9.5) interface, ``queue_notify_data`` semantics and per-queue
    reset (4.1.4.3.2), configuration-change interrupts, and virtio-mmio / virtio-ccw.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Protocol

from passthru.hw.devices.virtio.virtqueue import SplitLayout, check_queue_size


class DeviceStatus(IntFlag):
    """2.1 Device Status Field."""

    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    DEVICE_NEEDS_RESET = 64
    FAILED = 128


class Feature(IntEnum):
    """6 Reserved Feature Bits (device-independent)."""

    VIRTIO_F_INDIRECT_DESC = 28
    VIRTIO_F_EVENT_IDX = 29
    VIRTIO_F_VERSION_1 = 32
    VIRTIO_F_ACCESS_PLATFORM = 33


def bit(feature: int) -> int:
    return 1 << int(feature)


# BAR layout (QEMU virtio-pci modern: 0x1000 per capability)
COMMON_CFG = 0x0000
ISR_CFG = 0x1000
DEVICE_CFG = 0x2000
NOTIFY_CFG = 0x3000
NOTIFY_OFF_MULTIPLIER = 4
BAR_SIZE = 0x4000
VIRTIO_MSI_NO_VECTOR = 0xFFFF


@dataclass(frozen=True, slots=True)
class Reg:
    """One field of ``struct virtio_pci_common_cfg`` (4.1.4.3)."""

    name: str
    offset: int
    width: int
    writable: bool
    per_queue: bool = False


COMMON_CFG_REGS: tuple[Reg, ...] = (
    Reg("device_feature_select", 0x00, 4, True),
    Reg("device_feature", 0x04, 4, False),
    Reg("driver_feature_select", 0x08, 4, True),
    Reg("driver_feature", 0x0C, 4, True),
    Reg("config_msix_vector", 0x10, 2, True),
    Reg("num_queues", 0x12, 2, False),
    Reg("device_status", 0x14, 1, True),
    Reg("config_generation", 0x15, 1, False),
    Reg("queue_select", 0x16, 2, True),
    Reg("queue_size", 0x18, 2, True, True),
    Reg("queue_msix_vector", 0x1A, 2, True, True),
    Reg("queue_enable", 0x1C, 2, True, True),
    Reg("queue_notify_off", 0x1E, 2, False, True),
    Reg("queue_desc", 0x20, 8, True, True),
    Reg("queue_driver", 0x28, 8, True, True),
    Reg("queue_device", 0x30, 8, True, True),
    Reg("queue_notify_data", 0x38, 2, False, True),
    Reg("queue_reset", 0x3A, 2, False, True),
)
REG_BY_OFFSET = {r.offset: r for r in COMMON_CFG_REGS}
# The 32-bit halves of the 64-bit queue addresses (Linux vp_modern writes them as lo/hi).
_HALVES = {r.offset + 4: r for r in COMMON_CFG_REGS if r.width == 8}


class VirtioDevice(Protocol):
    """What the transport needs from a device type (virtio-blk, ...)."""

    device_features: int
    num_queues: int
    max_queue_size: int

    def config_read(self, offset: int, size: int) -> int: ...
    def config_write(self, offset: int, value: int, size: int) -> None: ...
    def activate(self, features: int, queues: list[SplitLayout]) -> None: ...
    def reset(self) -> None: ...


@dataclass
class QueueConfig:
    size: int
    msix_vector: int = VIRTIO_MSI_NO_VECTOR
    enable: int = 0
    desc: int = 0
    driver: int = 0
    device: int = 0


@dataclass
class TransportState:
    """Everything the transport holds (saved/restored with the device)."""

    status: int = 0
    device_feature_select: int = 0
    driver_feature_select: int = 0
    driver_features: int = 0
    config_msix_vector: int = VIRTIO_MSI_NO_VECTOR
    queue_select: int = 0
    isr: int = 0
    queues: list[QueueConfig] = field(default_factory=list)


class VirtioPciTransport:
    """The virtio-pci modern register block in front of one :class:`VirtioDevice`.

    ``read``/``write`` take offsets into the BAR (an ``MmioHandler``). ``notify_hook(q)``
    runs on a queue notification, ``interrupt_hook(entry)`` when the device signals a used
    buffer; the hypervisor installs both.
    """

    def __init__(self, device: VirtioDevice, *, name: str = "virtio0") -> None:
        check_queue_size(device.max_queue_size)
        self.device = device
        self.name = name
        self.notify_hook: Callable[[int], None] = lambda q: None
        self.interrupt_hook: Callable[[int], None] = lambda entry: None
        self.state = TransportState()
        self.reset()

    def __repr__(self) -> str:
        return (f"<VirtioPciTransport {self.name} status={DeviceStatus(self.state.status)!r} "
                f"features={self.state.driver_features:#x}>")

    def reset(self) -> None:
        """2.4 Device Reset: every field back to its initial value, the device too."""
        self.state = TransportState(queues=[QueueConfig(self.device.max_queue_size)
                                            for _ in range(self.device.num_queues)])
        self.device.reset()

    @property
    def features(self) -> int:
        """The negotiated feature set (valid once FEATURES_OK is set)."""
        return self.state.driver_features

    def _queue(self) -> QueueConfig | None:
        q = self.state.queue_select
        return self.state.queues[q] if q < len(self.state.queues) else None

    # ------------------------------------------------------------------ MMIO handler
    def read(self, offset: int, size: int) -> int:
        mask = (1 << (8 * size)) - 1
        if offset >= NOTIFY_CFG:
            return 0
        if offset >= DEVICE_CFG:
            return self.device.config_read(offset - DEVICE_CFG, size) & mask
        if offset >= ISR_CFG:
            if offset != ISR_CFG:
                return 0
            isr, self.state.isr = self.state.isr, 0  # 4.1.4.5: read to clear
            return isr & mask
        return self._common_read(offset, size) & mask

    def write(self, offset: int, value: int, size: int) -> None:
        if offset >= NOTIFY_CFG:
            self.notify_hook(value & 0xFFFF)
        elif offset >= DEVICE_CFG:
            self.device.config_write(offset - DEVICE_CFG, value, size)
        elif offset < ISR_CFG:
            self._common_write(offset, value, size)

    def _common_read(self, offset: int, size: int) -> int:
        s = self.state
        if offset in _HALVES and size == 4:
            return self._common_read(_HALVES[offset].offset, 8) >> 32
        reg = REG_BY_OFFSET.get(offset)
        if reg is None:
            return 0
        if reg.per_queue:
            q = self._queue()
            if q is None:
                return 0
            if reg.name == "queue_notify_off":
                return s.queue_select  # notify address = NOTIFY_CFG + index * multiplier
            if reg.name in ("queue_notify_data", "queue_reset"):
                return 0
            return int(getattr(q, reg.name.removeprefix("queue_")))
        if reg.name == "device_feature":
            return self.device.device_features >> (32 * s.device_feature_select) & 0xFFFFFFFF
        if reg.name == "driver_feature":
            return s.driver_features >> (32 * s.driver_feature_select) & 0xFFFFFFFF
        if reg.name == "num_queues":
            return self.device.num_queues
        if reg.name == "device_status":
            return s.status
        if reg.name == "config_generation":
            return 0
        return int(getattr(s, reg.name))

    def _common_write(self, offset: int, value: int, size: int) -> None:
        s = self.state
        if offset in _HALVES and size == 4:  # the high half of a 64-bit queue address
            q = self._queue()
            if q is not None and not q.enable:
                name = _HALVES[offset].name.removeprefix("queue_")
                setattr(q, name, getattr(q, name) & 0xFFFFFFFF | (value & 0xFFFFFFFF) << 32)
            return
        reg = REG_BY_OFFSET.get(offset)
        if reg is None or not reg.writable:
            return
        if reg.per_queue:
            q = self._queue()
            if q is None or (q.enable and reg.name != "queue_msix_vector"):
                return  # 4.1.4.3.2: queue fields are fixed once the queue is enabled
            name = reg.name.removeprefix("queue_")
            if reg.width == 8 and size == 4:  # the low half
                value = getattr(q, name) & ~0xFFFFFFFF | (value & 0xFFFFFFFF)
            if name == "size":
                ok = 0 < value <= self.device.max_queue_size and not value & (value - 1)
                value = value if ok else q.size  # 2.7: a power of two up to the maximum
            setattr(q, name, value)
            return
        if reg.name == "driver_feature":
            shift = 32 * s.driver_feature_select
            if shift <= 32:
                s.driver_features = (s.driver_features & ~(0xFFFFFFFF << shift)
                                     | (value & 0xFFFFFFFF) << shift)
        elif reg.name == "device_status":
            self._set_status(value & 0xFF)
        else:
            setattr(s, reg.name, value)

    def _set_status(self, value: int) -> None:
        s = self.state
        if value == 0:
            self.reset()
            return
        if value & DeviceStatus.FEATURES_OK and not s.status & DeviceStatus.FEATURES_OK:
            offered = self.device.device_features
            version_1 = bit(Feature.VIRTIO_F_VERSION_1)
            if s.driver_features & ~offered or not s.driver_features & version_1:
                value &= ~DeviceStatus.FEATURES_OK  # 3.1.1 step 6: the driver re-reads
        if value & DeviceStatus.DRIVER_OK and not s.status & DeviceStatus.DRIVER_OK:
            if not value & DeviceStatus.FEATURES_OK:
                value |= DeviceStatus.DEVICE_NEEDS_RESET
            else:
                try:
                    layouts = [SplitLayout(q.size, q.desc, q.driver, q.device)
                               for q in s.queues if q.enable]
                except ValueError:  # a misaligned ring: the guest's mistake, a status bit
                    s.status = value | DeviceStatus.DEVICE_NEEDS_RESET
                    return
                s.status = value
                self.device.activate(s.driver_features, layouts)
                return
        s.status = value

    def save_state(self) -> TransportState:
        return copy.deepcopy(self.state)

    def load_state(self, state: TransportState) -> None:
        self.state = copy.deepcopy(state)

    # ------------------------------------------------------------------ device -> driver
    def signal_used(self, queue: int) -> None:
        """A used-buffer notification for ``queue`` (ISR bit 0 and the queue's vector)."""
        self.state.isr |= 1
        entry = self.state.queues[queue].msix_vector
        if entry != VIRTIO_MSI_NO_VECTOR:
            self.interrupt_hook(entry)
