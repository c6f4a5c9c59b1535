"""The virtio-blk device model: configuration space, request parsing and execution.

What is modelled (virtio 1.2, section 5.2 "Block Device")
    - Feature bits (5.2.3) ``VIRTIO_BLK_F_SIZE_MAX``, ``SEG_MAX``, ``BLK_SIZE``, ``FLUSH``
      and ``RO`` plus the transport-level ``VIRTIO_F_VERSION_1``, ``INDIRECT_DESC`` and
      ``EVENT_IDX``.
    - ``struct virtio_blk_config`` (5.2.4) byte for byte: capacity in 512-byte sectors,
      size_max, seg_max, geometry, blk_size, topology, writeback, num_queues and the discard /
      write-zeroes / secure-erase limits (all zero: not offered).
    - Requests (5.2.6): a device-readable ``struct virtio_blk_outhdr`` ``{le32 type; le32
      reserved; le64 sector}``, data buffers, and a final device-writable status byte
      (``VIRTIO_BLK_S_OK`` / ``IOERR`` / ``UNSUPP``). Types ``VIRTIO_BLK_T_IN``, ``OUT``,
      ``FLUSH`` and ``GET_ID`` (a 20-byte serial). The header and data may be split across
      descriptors anywhere, as QEMU's ``virtio_blk_handle_request`` allows (5.2.6.2).
    - The used length is the number of bytes written into device-writable buffers (data + the
      status byte), as 2.7.8 and QEMU's ``virtio_blk_req_complete`` report it.

    The model does no timing: :meth:`VirtioBlk.parse` turns a popped chain into a
    :class:`BlkRequest`, :meth:`VirtioBlk.gather` reads an OUT request's data and
    :meth:`VirtioBlk.complete` scatters an IN request's data and writes the status byte; the
    hypervisor backend performs the I/O and decides when and at what cost
    (``hv.backends.virtio_blk``). The disk's contents are not device state.

What is left out
    Multiqueue (``VIRTIO_BLK_F_MQ``), ``DISCARD``, ``WRITE_ZEROES``, ``SECURE_ERASE``, zoned
    devices, ``CONFIG_WCE`` (the cache is always write-back), ``GET_LIFETIME``, the legacy
    SCSI passthrough commands and geometry semantics (reported as zero).
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from passthru.errors import ConfigError
from passthru.hw.devices.virtio import Feature, bit
from passthru.hw.devices.virtio.virtqueue import (
    Chain,
    DeviceRing,
    DeviceRingState,
    RingMemory,
    SplitLayout,
)

SECTOR_SIZE: Final = 512  # 5.2.6: "sector" is always in 512-byte units
VIRTIO_ID_BLOCK: Final = 2  # 5 Device Types
VIRTIO_BLK_ID_BYTES: Final = 20
OUTHDR: Final = struct.Struct("<IIQ")  # struct virtio_blk_outhdr
CONFIG_SIZE: Final = 0x48


class BlkFeature(IntEnum):
    """5.2.3 Feature bits."""

    VIRTIO_BLK_F_SIZE_MAX = 1
    VIRTIO_BLK_F_SEG_MAX = 2
    VIRTIO_BLK_F_GEOMETRY = 4
    VIRTIO_BLK_F_RO = 5
    VIRTIO_BLK_F_BLK_SIZE = 6
    VIRTIO_BLK_F_FLUSH = 9
    VIRTIO_BLK_F_TOPOLOGY = 10
    VIRTIO_BLK_F_CONFIG_WCE = 11
    VIRTIO_BLK_F_MQ = 12
    VIRTIO_BLK_F_DISCARD = 13
    VIRTIO_BLK_F_WRITE_ZEROES = 14


class ReqType(IntEnum):
    """5.2.6 ``type`` of ``struct virtio_blk_outhdr``."""

    VIRTIO_BLK_T_IN = 0
    VIRTIO_BLK_T_OUT = 1
    VIRTIO_BLK_T_FLUSH = 4
    VIRTIO_BLK_T_GET_ID = 8


class BlkStatus(IntEnum):
    """5.2.6 status byte values."""

    VIRTIO_BLK_S_OK = 0
    VIRTIO_BLK_S_IOERR = 1
    VIRTIO_BLK_S_UNSUPP = 2


# struct virtio_blk_config field offsets (5.2.4)
CFG_CAPACITY: Final = 0x00  # le64
CFG_SIZE_MAX: Final = 0x08  # le32
CFG_SEG_MAX: Final = 0x0C  # le32
CFG_GEOMETRY: Final = 0x10  # le16 cylinders, u8 heads, u8 sectors
CFG_BLK_SIZE: Final = 0x14  # le32
CFG_TOPOLOGY: Final = 0x18  # u8 physical_block_exp, u8 alignment_offset, le16 min_io, le32 opt_io
CFG_WRITEBACK: Final = 0x20  # u8
CFG_NUM_QUEUES: Final = 0x22  # le16


@dataclass(frozen=True, slots=True)
class BlkRequest:
    """A parsed request: what to do, and where its buffers are in guest memory."""

    head: int
    type: int
    sector: int
    data: tuple[tuple[int, int], ...]  # (gpa, len) of the data buffers, in order
    status_addr: int | None  # None: the chain has no writable status byte
    error: BlkStatus | None = None  # parse outcome when the request cannot be executed

    @property
    def data_len(self) -> int:
        return sum(n for _, n in self.data)


@dataclass
class BlkMetrics:
    """Per-device counters (Firecracker's ``BlockDeviceMetrics`` in spirit)."""

    read_count: int = 0
    write_count: int = 0
    flush_count: int = 0
    get_id_count: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    invalid_reqs: int = 0
    io_errors: int = 0
    unsupported: int = 0


@dataclass
class BlkState:
    """The device state: negotiated features, the active queues and their rings."""

    features: int = 0
    queues: list[SplitLayout] = field(default_factory=list)
    rings: list[DeviceRingState] = field(default_factory=list)
    writeback: int = 1
    activated: bool = False


def _segments(descs: tuple, skip: int, keep: int | None = None) -> list[tuple[int, int]]:
    """(addr, len) runs of ``descs`` after the first ``skip`` bytes, ``keep`` bytes long."""
    out: list[tuple[int, int]] = []
    for d in descs:
        addr, n = d.addr, d.len
        if skip >= n:
            skip -= n
            continue
        addr, n, skip = addr + skip, n - skip, 0
        if keep is not None:
            n = min(n, keep)
            keep -= n
        if n:
            out.append((addr, n))
        if keep == 0:
            break
    return out


class VirtioBlk:
    """A virtio-blk device (type 2): ``capacity`` 512-byte sectors, logical blocks of
    ``blk_size`` bytes, one request queue. ``mem`` is its DMA port into guest memory."""

    num_queues = 1

    def __init__(self, capacity: int, mem: RingMemory, *, blk_size: int = SECTOR_SIZE,
                 queue_size: int = 256,
                 seg_max: int = 126, size_max: int = 1 << 20, read_only: bool = False,
                 serial: bytes = b"passthru", event_idx: bool = True,
                 indirect: bool = True) -> None:
        if blk_size < SECTOR_SIZE or blk_size & (blk_size - 1):
            raise ConfigError(f"virtio-blk blk_size {blk_size} must be a power of two >= 512")
        self.capacity = capacity
        self.blk_size = blk_size
        self.mem = mem  # the DMA port: reads and writes of guest memory
        self.max_queue_size = queue_size
        self.seg_max = seg_max
        self.size_max = size_max
        self.read_only = read_only
        self.serial = serial[:VIRTIO_BLK_ID_BYTES].ljust(VIRTIO_BLK_ID_BYTES, b"\0")
        feats = (bit(Feature.VIRTIO_F_VERSION_1) | bit(BlkFeature.VIRTIO_BLK_F_SIZE_MAX)
                 | bit(BlkFeature.VIRTIO_BLK_F_SEG_MAX) | bit(BlkFeature.VIRTIO_BLK_F_BLK_SIZE)
                 | bit(BlkFeature.VIRTIO_BLK_F_FLUSH))
        if read_only:
            feats |= bit(BlkFeature.VIRTIO_BLK_F_RO)
        if event_idx:
            feats |= bit(Feature.VIRTIO_F_EVENT_IDX)
        if indirect:
            feats |= bit(Feature.VIRTIO_F_INDIRECT_DESC)
        self.device_features = feats
        self.metrics = BlkMetrics()
        self.state = BlkState()
        self.rings: list[DeviceRing] = []

    def __repr__(self) -> str:
        return (f"<VirtioBlk {self.capacity} sectors, "
                f"features={self.state.features:#x}, active={self.state.activated}>")

    # ------------------------------------------------------------------ transport hooks
    def reset(self) -> None:
        self.state = BlkState()
        self.rings = []

    def activate(self, features: int, queues: list[SplitLayout]) -> None:
        self.state.features = features
        self.state.queues = list(queues)
        self.state.rings = [DeviceRingState() for _ in queues]
        self.state.activated = True
        self._build_rings()

    def _build_rings(self) -> None:
        event_idx = self.has(Feature.VIRTIO_F_EVENT_IDX)
        self.rings = [DeviceRing(layout, self.mem, event_idx, ring_state)
                      for layout, ring_state in zip(self.state.queues, self.state.rings,
                                                    strict=True)]

    def has(self, feature: int) -> bool:
        return bool(self.state.features >> int(feature) & 1)

    def config_bytes(self) -> bytes:
        """``struct virtio_blk_config`` (5.2.4) as the driver reads it."""
        raw = bytearray(CONFIG_SIZE)
        struct.pack_into("<QII", raw, CFG_CAPACITY, self.capacity,
                         self.size_max, self.seg_max)
        struct.pack_into("<I", raw, CFG_BLK_SIZE, self.blk_size)
        struct.pack_into("<BBHI", raw, CFG_TOPOLOGY, 0, 0, 1, 0)
        raw[CFG_WRITEBACK] = self.state.writeback
        struct.pack_into("<H", raw, CFG_NUM_QUEUES, self.num_queues)
        return bytes(raw)

    def config_read(self, offset: int, size: int) -> int:
        raw = self.config_bytes()
        if offset < 0 or offset + size > len(raw):
            return 0
        return int.from_bytes(raw[offset:offset + size], "little")

    def config_write(self, offset: int, value: int, size: int) -> None:
        """Only ``writeback`` is writable, and only with CONFIG_WCE (not offered): ignored."""

    def save_state(self) -> BlkState:
        return copy.deepcopy(self.state)

    def load_state(self, state: BlkState) -> None:
        self.state = copy.deepcopy(state)
        self._build_rings()

    # ------------------------------------------------------------------ requests
    def parse(self, chain: Chain) -> BlkRequest:
        """Turn a popped chain into a request (QEMU ``virtio_blk_handle_request``)."""
        status_addr = None
        if chain.writable and chain.writable[-1].len:
            last = chain.writable[-1]
            status_addr = last.addr + last.len - 1
        header_len = sum(d.len for d in chain.readable)
        if status_addr is None or header_len < OUTHDR.size:
            self.metrics.invalid_reqs += 1
            return BlkRequest(chain.head, -1, 0, (), status_addr, BlkStatus.VIRTIO_BLK_S_IOERR)
        mem = self.mem
        hdr = b"".join(mem.read(a, n) for a, n in _segments(chain.readable, 0, OUTHDR.size))
        rtype, _reserved, sector = OUTHDR.unpack(hdr)
        if rtype == ReqType.VIRTIO_BLK_T_OUT:
            data = _segments(chain.readable, OUTHDR.size)
        else:
            data = _segments(chain.writable, 0, chain.write_capacity - 1)
        req = BlkRequest(chain.head, rtype, sector, tuple(data), status_addr)
        error = self._check(req)
        if error is not None:
            return BlkRequest(chain.head, rtype, sector, tuple(data), status_addr, error)
        return req

    def _check(self, req: BlkRequest) -> BlkStatus | None:
        if req.type in (ReqType.VIRTIO_BLK_T_IN, ReqType.VIRTIO_BLK_T_OUT):
            n = req.data_len
            per = self.blk_size // SECTOR_SIZE
            if (n % self.blk_size or req.sector % per
                    or req.sector + n // SECTOR_SIZE > self.capacity):
                self.metrics.io_errors += 1
                return BlkStatus.VIRTIO_BLK_S_IOERR
            if req.type == ReqType.VIRTIO_BLK_T_OUT and self.read_only:
                self.metrics.io_errors += 1
                return BlkStatus.VIRTIO_BLK_S_IOERR
            return None
        if req.type == ReqType.VIRTIO_BLK_T_FLUSH:
            return None
        if req.type == ReqType.VIRTIO_BLK_T_GET_ID:
            return None if req.data_len >= 1 else BlkStatus.VIRTIO_BLK_S_IOERR
        self.metrics.unsupported += 1
        return BlkStatus.VIRTIO_BLK_S_UNSUPP

    def gather(self, req: BlkRequest) -> bytes:
        """The data of an OUT request, read from the guest's buffers (device DMA reads)."""
        return b"".join(self.mem.read(a, n) for a, n in req.data)

    def complete(self, req: BlkRequest, status: int, data: bytes | None = None) -> int:
        """Finish ``req`` with ``status``: for a successful IN, scatter ``data`` into the
        guest's buffers; GET_ID writes the serial; then the status byte. Returns the used
        length (bytes written to device-writable buffers). Every write is device DMA."""
        mem, m = self.mem, self.metrics
        written = 0
        if req.error is not None:
            status = req.error
        elif status != BlkStatus.VIRTIO_BLK_S_OK:
            m.io_errors += 1
        elif req.type == ReqType.VIRTIO_BLK_T_IN:
            assert data is not None and len(data) == req.data_len
            for addr, n in req.data:
                mem.write(addr, data[written:written + n])
                written += n
            m.read_count += 1
            m.read_bytes += written
        elif req.type == ReqType.VIRTIO_BLK_T_OUT:
            m.write_count += 1
            m.write_bytes += req.data_len
        elif req.type == ReqType.VIRTIO_BLK_T_FLUSH:
            m.flush_count += 1
        elif req.type == ReqType.VIRTIO_BLK_T_GET_ID:  # the serial, cut to the buffer (5.2.6.1)
            for addr, n in req.data:
                k = min(n, VIRTIO_BLK_ID_BYTES - written)
                if not k:
                    break
                mem.write(addr, self.serial[written:written + k])
                written += k
            m.get_id_count += 1
        if req.status_addr is None:
            return written
        mem.write(req.status_addr, bytes([status]))
        return written + 1
