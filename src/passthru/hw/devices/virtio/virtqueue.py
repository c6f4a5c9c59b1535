"""The split virtqueue: descriptor table, available ring and used ring in guest memory.

What is modelled (virtio 1.2, section 2.7 "Split Virtqueues")
    - The exact little-endian layout and alignment of the three parts (2.7, table in 2.7.1:
      descriptor table 16-byte aligned, 16 bytes per ``struct virtq_desc``; available ring
      2-byte aligned, ``flags, idx, ring[N], used_event``; used ring 4-byte aligned,
      ``flags, idx, ring[N] of {le32 id, le32 len}, avail_event``). :class:`SplitLayout`
      holds the offsets; :func:`ring_bytes` gives each part's size.
    - Descriptor chains with ``VIRTQ_DESC_F_NEXT`` / ``F_WRITE`` and indirect tables
      (``VIRTQ_DESC_F_INDIRECT``, 2.7.5.3), with the device-side checks of 2.7.5.3.2 and
      2.7.4.2 (a chain longer than the queue size, an indirect table inside an indirect
      table, a readable descriptor after a writable one) reported as a :class:`ChainError`
      record, never raised.
    - Notification suppression both ways: ``VIRTQ_AVAIL_F_NO_INTERRUPT`` /
      ``VIRTQ_USED_F_NO_NOTIFY`` (2.7.7, 2.7.10) and, when ``VIRTIO_F_EVENT_IDX`` is
      negotiated, ``used_event`` / ``avail_event`` with :func:`vring_need_event` (the
      ``vring_need_event`` of the spec's 2.7.10.1 / Linux ``include/uapi/linux/virtio_ring.h``).
    - :class:`DriverRing` is the driver side (Linux ``drivers/virtio/virtio_ring.c``
      ``virtqueue_add_split`` / ``virtqueue_kick_prepare_split`` / ``virtqueue_get_buf``),
      :class:`DeviceRing` the device side (QEMU ``hw/virtio/virtio.c`` ``virtqueue_pop`` /
      ``virtqueue_push`` / ``virtio_should_notify``). Both work on a :class:`RingMemory`
      (read/write by address); the caller decides what an access costs and, for the device
      side, that its writes are device DMA (the hypervisor reports them through the VM's
      input choke point).

What is left out
    Packed virtqueues (2.8), ``VIRTIO_F_IN_ORDER``, ``VIRTIO_F_NOTIFICATION_DATA``, memory
    barriers (the simulation is sequentially consistent) and per-queue reset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Final, Protocol

# virtio 1.2, 2.7.5: struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }
DESC_SIZE: Final = 16
DESC_ALIGN: Final = 16
AVAIL_ALIGN: Final = 2
USED_ALIGN: Final = 4
USED_ELEM_SIZE: Final = 8  # struct virtq_used_elem { le32 id; le32 len; }
MAX_QUEUE_SIZE: Final = 32768  # 2.7: queue size is a power of two, at most 32768

_DESC: Final = struct.Struct("<QIHH")
_ELEM: Final = struct.Struct("<II")


class DescFlags(IntFlag):
    """``struct virtq_desc.flags`` (2.7.5)."""

    NEXT = 1  # VIRTQ_DESC_F_NEXT
    WRITE = 2  # VIRTQ_DESC_F_WRITE: device-writable (else device-readable)
    INDIRECT = 4  # VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors


VIRTQ_AVAIL_F_NO_INTERRUPT: Final = 1  # 2.7.6: driver asks the device not to interrupt
VIRTQ_USED_F_NO_NOTIFY: Final = 1  # 2.7.8: device asks the driver not to notify


class RingMemory(Protocol):
    """Byte-addressed memory the ring lives in (guest RAM, addressed by GPA)."""

    def read(self, addr: int, length: int) -> bytes: ...
    def write(self, addr: int, data: bytes) -> None: ...


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """2.7.10.1: notify iff ``event_idx`` lies in ``[old_idx, new_idx)`` (mod 2**16)."""
    return (new_idx - event_idx - 1) & 0xFFFF < (new_idx - old_idx) & 0xFFFF


def ring_bytes(queue_size: int) -> tuple[int, int, int]:
    """Bytes of (descriptor table, available ring, used ring) for ``queue_size`` (2.7)."""
    return (DESC_SIZE * queue_size, 6 + 2 * queue_size, 6 + USED_ELEM_SIZE * queue_size)


def check_queue_size(queue_size: int) -> None:
    if not (isinstance(queue_size, int) and 0 < queue_size <= MAX_QUEUE_SIZE
            and queue_size & (queue_size - 1) == 0):
        raise ValueError(f"queue size {queue_size!r} must be a power of two in 1..32768")


@dataclass(frozen=True, slots=True)
class SplitLayout:
    """Where one split virtqueue lives: ``queue_desc``, ``queue_driver``, ``queue_device``.

    The field names follow the virtio-pci common configuration (4.1.4.3).
    """

    size: int
    desc: int
    avail: int
    used: int

    def __post_init__(self) -> None:
        check_queue_size(self.size)
        for name, addr, align in (("desc", self.desc, DESC_ALIGN),
                                  ("avail", self.avail, AVAIL_ALIGN),
                                  ("used", self.used, USED_ALIGN)):
            if addr % align:
                raise ValueError(f"virtqueue {name} address {addr:#x} is not "
                                 f"{align}-byte aligned (virtio 1.2, 2.7)")

    # A compiled (native) frozen dataclass cannot be rebuilt field by field, as pickle's and
    # deepcopy's defaults would: rebuild it through its constructor, or keep it (immutable).
    def __reduce__(self) -> tuple[type[SplitLayout], tuple[int, int, int, int]]:
        return SplitLayout, (self.size, self.desc, self.avail, self.used)

    def __deepcopy__(self, memo: dict[int, object]) -> SplitLayout:
        return self

    @classmethod
    def contiguous(cls, base: int, size: int) -> SplitLayout:
        """The three parts packed from ``base`` with only the alignment the spec requires."""
        d, a, _ = ring_bytes(size)
        avail = base + d
        used = -(-(avail + a) // USED_ALIGN) * USED_ALIGN
        return cls(size, base, avail, used)

    def desc_addr(self, i: int) -> int:
        return self.desc + DESC_SIZE * i

    # available ring: le16 flags @0, le16 idx @2, le16 ring[N] @4, le16 used_event @4+2N
    @property
    def avail_flags(self) -> int:
        return self.avail

    @property
    def avail_idx(self) -> int:
        return self.avail + 2

    def avail_ring(self, i: int) -> int:
        return self.avail + 4 + 2 * i

    @property
    def used_event(self) -> int:
        return self.avail + 4 + 2 * self.size

    # used ring: le16 flags @0, le16 idx @2, elem ring[N] @4, le16 avail_event @4+8N
    @property
    def used_flags(self) -> int:
        return self.used

    @property
    def used_idx(self) -> int:
        return self.used + 2

    def used_ring(self, i: int) -> int:
        return self.used + 4 + USED_ELEM_SIZE * i

    @property
    def avail_event(self) -> int:
        return self.used + 4 + USED_ELEM_SIZE * self.size


@dataclass(frozen=True, slots=True)
class Desc:
    """One ``struct virtq_desc``."""

    addr: int
    len: int
    flags: int = 0
    next: int = 0

    def pack(self) -> bytes:
        return _DESC.pack(self.addr, self.len, self.flags, self.next)

    @classmethod
    def unpack(cls, raw: bytes) -> Desc:
        return cls(*_DESC.unpack(raw))

    @property
    def writable(self) -> bool:
        return bool(self.flags & DescFlags.WRITE)


def _u16(mem: RingMemory, addr: int) -> int:
    return int.from_bytes(mem.read(addr, 2), "little")


def _w16(mem: RingMemory, addr: int, value: int) -> None:
    mem.write(addr, (value & 0xFFFF).to_bytes(2, "little"))


# ---------------------------------------------------------------------- device side
@dataclass(frozen=True, slots=True)
class ChainError:
    """A malformed chain the device refuses (2.7.5.3.2 / 2.7.4.2): a record, not a raise."""

    head: int
    reason: str


@dataclass(frozen=True, slots=True)
class Chain:
    """A popped descriptor chain: its head index and its flattened buffers in order."""

    head: int
    readable: tuple[Desc, ...]
    writable: tuple[Desc, ...]

    @property
    def write_capacity(self) -> int:
        return sum(d.len for d in self.writable)


@dataclass
class DeviceRingState:
    """What a device keeps about one queue besides guest memory (saved and restored)."""

    last_avail_idx: int = 0
    used_idx: int = 0
    signalled_used: int = 0  # used idx at the last interrupt (QEMU vq->signalled_used)
    signalled_used_valid: bool = False
    notification: bool = True  # kicks wanted (QEMU vq->notification)


@dataclass
class DeviceRing:
    """The device side of one split virtqueue (QEMU ``virtqueue_pop`` / ``virtqueue_push``)."""

    layout: SplitLayout
    mem: RingMemory
    event_idx: bool = False
    state: DeviceRingState = field(default_factory=DeviceRingState)

    def __repr__(self) -> str:
        s = self.state
        return (f"<DeviceRing size={self.layout.size} desc={self.layout.desc:#x} "
                f"last_avail={s.last_avail_idx} used={s.used_idx}>")

    def avail_idx(self) -> int:
        return _u16(self.mem, self.layout.avail_idx)

    def pending(self) -> int:
        """Available entries not yet popped."""
        return (self.avail_idx() - self.state.last_avail_idx) & 0xFFFF

    def pop(self) -> Chain | ChainError | None:
        """The next available chain (None if the ring is empty)."""
        if not self.pending():
            return None
        lay = self.layout
        head = _u16(self.mem, lay.avail_ring(self.state.last_avail_idx % lay.size))
        self.state.last_avail_idx = (self.state.last_avail_idx + 1) & 0xFFFF
        if self.event_idx and self.state.notification:  # ask for a kick at the next entry
            _w16(self.mem, lay.avail_event, self.state.last_avail_idx)
        return self._walk(head)

    def _walk(self, head: int) -> Chain | ChainError:
        lay = self.layout
        if head >= lay.size:
            return ChainError(head, f"head {head} >= queue size {lay.size}")
        readable: list[Desc] = []
        writable: list[Desc] = []
        table, limit, i, seen = lay.desc, lay.size, head, 0
        indirect = False
        while True:
            if i >= limit:
                return ChainError(head, f"descriptor index {i} >= table size {limit}")
            seen += 1
            if seen > limit:  # 2.7.5.3.2 / QEMU "Looped descriptor"
                return ChainError(head, "descriptor chain loops")
            d = Desc.unpack(self.mem.read(table + DESC_SIZE * i, DESC_SIZE))
            if d.flags & DescFlags.INDIRECT:
                if indirect:
                    return ChainError(head, "indirect descriptor inside an indirect table")
                if d.flags & DescFlags.NEXT or not d.len or d.len % DESC_SIZE:
                    return ChainError(head, f"bad indirect descriptor len={d.len:#x}")
                table, limit, i, seen, indirect = d.addr, d.len // DESC_SIZE, 0, 0, True
                continue
            if d.writable:
                writable.append(d)
            elif writable:
                return ChainError(head, "device-readable descriptor after a writable one")
            else:
                readable.append(d)
            if not d.flags & DescFlags.NEXT:
                return Chain(head, tuple(readable), tuple(writable))
            i = d.next

    def push(self, head: int, written: int) -> None:
        """Add ``{id=head, len=written}`` to the used ring and publish the new used idx."""
        lay = self.layout
        s = self.state
        self.mem.write(lay.used_ring(s.used_idx % lay.size), _ELEM.pack(head, written))
        s.used_idx = (s.used_idx + 1) & 0xFFFF
        _w16(self.mem, lay.used_idx, s.used_idx)

    def should_interrupt(self) -> bool:
        """QEMU ``virtio_split_should_notify``: honour NO_INTERRUPT or ``used_event``."""
        s = self.state
        if not self.event_idx:
            return not _u16(self.mem, self.layout.avail_flags) & VIRTQ_AVAIL_F_NO_INTERRUPT
        old, valid = s.signalled_used, s.signalled_used_valid
        s.signalled_used, s.signalled_used_valid = s.used_idx, True
        event = _u16(self.mem, self.layout.used_event)
        return not valid or vring_need_event(event, s.used_idx, old)

    def set_notification(self, enable: bool) -> None:
        """QEMU ``virtio_queue_split_set_notification``: ask for (or suppress) kicks."""
        self.state.notification = enable
        if self.event_idx:
            if enable:
                _w16(self.mem, self.layout.avail_event, self.avail_idx())
            return  # disabling leaves avail_event stale (at most one more kick), as vhost does
        _w16(self.mem, self.layout.used_flags, 0 if enable else VIRTQ_USED_F_NO_NOTIFY)


# ---------------------------------------------------------------------- driver side
@dataclass
class DriverRing:
    """The driver side of one split virtqueue (Linux ``virtio_ring.c``, split variant).

    Descriptors are taken from a free list linked through ``next`` (as Linux does); a
    buffer list is either a direct chain or, when ``indirect`` is on and it has more than one
    element, one ring descriptor pointing at an indirect table the caller provides.
    """

    layout: SplitLayout
    mem: RingMemory
    event_idx: bool = False
    indirect: bool = False
    free_head: int = 0
    num_free: int = 0
    avail_idx: int = 0  # shadow of avail->idx
    last_used_idx: int = 0
    kicked_avail: int = 0  # avail idx at the last kick decision
    chain_len: dict[int, int] = field(default_factory=dict)  # head -> ring descriptors used

    def __post_init__(self) -> None:
        self.num_free = self.layout.size

    def __repr__(self) -> str:
        return (f"<DriverRing size={self.layout.size} free={self.num_free} "
                f"avail={self.avail_idx} last_used={self.last_used_idx}>")

    def init(self) -> None:
        """Zero the rings and link the free list (``vring_init`` + ``virtqueue_init``)."""
        lay = self.layout
        d, a, u = ring_bytes(lay.size)
        self.mem.write(lay.desc, bytes(d))
        self.mem.write(lay.avail, bytes(a))
        self.mem.write(lay.used, bytes(u))
        for i in range(lay.size - 1):
            self.mem.write(lay.desc_addr(i) + 14, (i + 1).to_bytes(2, "little"))
        self.free_head, self.num_free = 0, lay.size
        self.avail_idx = self.last_used_idx = self.kicked_avail = 0
        self.chain_len.clear()

    def descriptors_needed(self, n_bufs: int) -> int:
        return 1 if self.indirect and n_bufs > 1 else n_bufs

    def add(self, bufs: Iterable[tuple[int, int, bool]], indirect_table: int | None = None
            ) -> int:
        """Place ``(addr, len, device_writable)`` buffers as one chain; return the head.

        Out-of-order ``virtqueue_add_split``: readable buffers must precede writable ones.
        ``indirect_table`` (16-byte aligned, room for every buffer) is used when indirect
        descriptors are on and there is more than one buffer.
        """
        bufs = list(bufs)
        need = self.descriptors_needed(len(bufs))
        if not bufs or need > self.num_free:
            raise ValueError(f"virtqueue: {len(bufs)} buffers need {need} descriptors, "
                             f"{self.num_free} free")
        lay = self.layout
        if need == 1 and len(bufs) > 1:
            if indirect_table is None or indirect_table % DESC_ALIGN:
                raise ValueError("virtqueue: an indirect chain needs an aligned table address")
            raw = b"".join(
                Desc(a, n, (DescFlags.WRITE if w else 0)
                     | (DescFlags.NEXT if k + 1 < len(bufs) else 0), k + 1).pack()
                for k, (a, n, w) in enumerate(bufs))
            self.mem.write(indirect_table, raw)
            bufs = [(indirect_table, len(raw), False)]
            flags_extra = DescFlags.INDIRECT
        else:
            flags_extra = DescFlags(0)
        head = i = self.free_head
        for k, (addr, length, writable) in enumerate(bufs):
            nxt = _u16(self.mem, lay.desc_addr(i) + 14)
            last = k + 1 == len(bufs)
            flags = flags_extra | (DescFlags.WRITE if writable else 0) | (
                0 if last else DescFlags.NEXT)
            self.mem.write(lay.desc_addr(i), Desc(addr, length, flags, nxt).pack())
            if not last:
                i = nxt
            else:
                self.free_head = nxt
        self.num_free -= need
        self.chain_len[head] = need
        self.mem.write(lay.avail_ring(self.avail_idx % lay.size), head.to_bytes(2, "little"))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        _w16(self.mem, lay.avail_idx, self.avail_idx)  # publish (after a wmb in Linux)
        return head

    def kick_prepare(self) -> bool:
        """``virtqueue_kick_prepare_split``: must the driver notify the device now?"""
        old, new = self.kicked_avail, self.avail_idx
        self.kicked_avail = new
        if self.event_idx:
            return vring_need_event(_u16(self.mem, self.layout.avail_event), new, old)
        return not _u16(self.mem, self.layout.used_flags) & VIRTQ_USED_F_NO_NOTIFY

    def get_buf(self) -> tuple[int, int] | None:
        """``virtqueue_get_buf``: the next used ``(head, len)``, freeing its descriptors."""
        lay = self.layout
        if _u16(self.mem, lay.used_idx) == self.last_used_idx:
            return None
        head, length = _ELEM.unpack(self.mem.read(lay.used_ring(self.last_used_idx % lay.size),
                                                  USED_ELEM_SIZE))
        self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        if self.event_idx:  # ask for an interrupt at the next used entry
            _w16(self.mem, lay.used_event, self.last_used_idx)
        n = self.chain_len.pop(head)
        i = head
        for _ in range(n - 1):
            i = _u16(self.mem, lay.desc_addr(i) + 14)
        # detach_buf_split: the chain's tail links to the old free head
        self.mem.write(lay.desc_addr(i) + 14, self.free_head.to_bytes(2, "little"))
        self.free_head = head
        self.num_free += n
        return head, length
