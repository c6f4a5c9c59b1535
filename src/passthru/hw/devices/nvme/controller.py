"""An NVMe controller at register level (NVM Express Base Specification 2.0).

What is modelled
    - BAR0 properties from the register table in :mod:`.regs` (CAP, VS, CC, CSTS, AQA, ASQ,
      ACQ), doorbells at 0x1000 and an MSI-X table/PBA in BAR0.
    - The enable/reset handshake (3.5.1 "Memory-based controller initialization"): CC.EN 0->1
      latches the admin queues from AQA/ASQ/ACQ and sets CSTS.RDY after ``enable_ns``;
      CC.EN 1->0 is a controller reset (3.7.2): every I/O queue is deleted, the admin queues
      are forgotten and CSTS.RDY clears (AQA/ASQ/ACQ keep their values). CC.SHN reports
      CSTS.SHST = complete.
    - Admin commands Identify (controller, namespace, active NSID list), Create/Delete I/O
      CQ/SQ, Set/Get Features (Number of Queues); I/O Read, Write, Flush with PRP1/PRP2 and
      chained PRP lists; CQ phase tags; a CQ that is full holds completions until the host
      moves its head (4.1.2).
    - MSI-X per completion queue: the CQ's IV selects a table entry; a masked entry sets its
      PBA bit and fires on unmask.
    - Every queue and data access is a DMA through a :class:`DmaPort` (the platform: fabric
      and IOMMU for real hardware; guest RAM for a hypervisor's emulated controller). The
      storage behind the controller is a :class:`Media` (a :class:`NamespaceMedia` for a
      physical device, a host block backend for an emulated one).

Left out
    SGLs, arbitration bursts and priorities, the Controller Memory Buffer, shadow doorbells,
    asynchronous events, Abort, interrupt coalescing (Set Features 08h), MSI-X function-level
    enable/mask in config space, multiple namespaces, and command timeouts (CAP.TO is
    reported, never enforced).
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

from passthru.hw.devices.nvme import commands as C
from passthru.hw.devices.nvme.namespace import MediaProfile, Namespace
from passthru.hw.devices.nvme.queues import CompletionQueue, SubmissionQueue
from passthru.hw.devices.nvme.regs import (
    BAR0_SIZE,
    CC_IOCQES_SHIFT,
    CC_IOSQES_SHIFT,
    CC_SHN_MASK,
    CSTS_SHST_MASK,
    DOORBELL_BASE,
    MSIX_ENTRY,
    MSIX_PBA,
    MSIX_TABLE,
    MSIX_VECTOR_MASKED,
    Cc,
    Csts,
    RegisterFile,
    register_table,
)
from passthru.sim import Environment

Done = Callable[[int, bytes | None], None]
SUCCESS: Final = 0
_LBA_RANGE: Final = C.status_field(C.GenericStatus.LBA_OUT_OF_RANGE)
_XFER_ERR: Final = C.status_field(C.GenericStatus.DATA_TRANSFER_ERROR)
_INVALID_FIELD: Final = C.status_field(C.GenericStatus.INVALID_FIELD)
_INVALID_OPCODE: Final = C.status_field(C.GenericStatus.INVALID_OPCODE)
_INVALID_NS: Final = C.status_field(C.GenericStatus.INVALID_NAMESPACE)
_SQE_UNPACK: Final = C.SQE_HEAD.unpack
_CQE_PACK: Final = C.CQE.pack
# Plain ints for the per-command checks (an IntEnum member lookup costs more than the test).
_FLUSH, _WRITE, _READ = int(C.IoOpcode.FLUSH), int(C.IoOpcode.WRITE), int(C.IoOpcode.READ)
_PAGE: Final = C.PAGE
_CSTS_RDY: Final = int(Csts.RDY)  # an IntFlag operand makes `&` build a flag object (~0.5 us)


def _cs(sc: int) -> int:
    return C.status_field(sc, C.Sct.COMMAND_SPECIFIC)


class DmaPort(Protocol):
    """How the controller reaches host memory and raises MSI-X messages."""

    def read(self, addr: int, n: int) -> bytes | None: ...  # None: the DMA faulted
    def write(self, addr: int, data: bytes) -> bool: ...  # False: the DMA faulted
    def msi(self, addr: int, data: int) -> None: ...
    def take_stall(self) -> int: ...  # IOTLB-miss walk time accumulated since the last call


class Media(Protocol):
    """The storage behind the controller. ``op``: 0 flush, 1 write, 2 read."""

    lba_size: int
    nsze: int

    def submit(self, op: int, slba: int, nlb: int, data: bytes | None, done: Done) -> None: ...


class NamespaceMedia:
    """A physical device's media: a :class:`Namespace` timed on the sim clock."""

    def __init__(self, env: Environment, ns: Namespace) -> None:
        self.env = env
        self.ns = ns
        self.lba_size = ns.lba_size
        self.nsze = ns.nsze

    def __repr__(self) -> str:
        return f"<NamespaceMedia {self.ns!r}>"

    def submit(self, op: int, slba: int, nlb: int, data: bytes | None, done: Done) -> None:
        ns = self.ns
        delay = ns.service(self.env.now, op, nlb * ns.lba_size if op else 0)
        if op == 1:
            assert data is not None
            ns.write(slba, data)  # visible at once; the completion says when it is durable
            self.env.timeout(delay).add_callback(lambda _e: done(SUCCESS, None))
        elif op == 2:
            self.env.timeout(delay).add_callback(
                lambda _e: done(SUCCESS, ns.read(slba, nlb)))
        else:
            self.env.timeout(delay).add_callback(lambda _e: done(SUCCESS, None))


@dataclass(slots=True)
class ControllerStats:
    admin_commands: int = 0
    io_commands: int = 0
    reads: int = 0
    writes: int = 0
    flushes: int = 0
    completions: int = 0
    interrupts: int = 0
    dma_faults: int = 0
    errors: int = 0


@dataclass
class ControllerState:
    """Everything needed to resume a controller (save/restore, migration)."""

    regs: dict[str, int]
    sqs: list[tuple[int, int, int, int, int, int]]
    cqs: list[tuple[int, int, int, int, bool, int, int, int]]
    msix: bytes
    pba: int
    nqueues: int
    held: list[tuple[int, bytes]]
    stats: dict[str, int] = field(default_factory=dict)
    media: Any = None


class NvmeController:
    """One NVMe controller (one namespace, NSID 1). Hook ``bar_read``/``bar_write`` to BAR0."""

    def __init__(self, env: Environment, port: DmaPort, media: Media, profile: MediaProfile,
                 *, name: str = "nvme0", vid: int = 0x8086, serial: str = "PT0001",
                 model: str = "passthru NVMe", msix_vectors: int = 65,
                 admin_ns: int = 5_000) -> None:
        self.env = env
        self.port = port
        self.media = media
        self.profile = profile
        self.name = name
        self.vid = vid
        self.serial = serial
        self.model = model
        self.msix_vectors = msix_vectors
        self.admin_ns = admin_ns
        self.mqes = profile.max_queue_entries - 1
        self.regs = RegisterFile(register_table(self.mqes))
        self.msix = bytearray(msix_vectors * MSIX_ENTRY)
        self.pba = 0
        self.sqs: dict[int, SubmissionQueue] = {}
        self.cqs: dict[int, CompletionQueue] = {}
        self.nqueues = 0  # I/O queue pairs granted by Set Features (0: not yet asked)
        self.held: dict[int, deque[bytes]] = {}  # cqid -> CQEs waiting for room
        self.stats = ControllerStats()
        self._mdts_bytes = C.PAGE << profile.mdts
        self._lba_size = media.lba_size
        for v in range(msix_vectors):
            struct.pack_into("<I", self.msix, v * MSIX_ENTRY + 12, MSIX_VECTOR_MASKED)

    def __repr__(self) -> str:
        csts = self.regs["CSTS"]
        return (f"<NvmeController {self.name} {self.profile.name} "
                f"{'ready' if csts & Csts.RDY else 'not ready'}, "
                f"io queues={sorted(q for q in self.sqs if q)}>")

    # ------------------------------------------------------------------ BAR0
    def bar_read(self, _bar: object, offset: int, size: int) -> bytes:
        return self.mmio_read(offset, size).to_bytes(size, "little")

    def bar_write(self, _bar: object, offset: int, data: bytes) -> None:
        self.mmio_write(offset, int.from_bytes(data, "little"), len(data))

    def mmio_read(self, offset: int, size: int) -> int:
        if offset < DOORBELL_BASE:
            return self.regs.read(offset, size)
        if MSIX_TABLE <= offset < MSIX_TABLE + len(self.msix):
            off = offset - MSIX_TABLE
            return int.from_bytes(self.msix[off:off + size], "little")
        if MSIX_PBA <= offset < MSIX_PBA + 8 * (-(-self.msix_vectors // 64)):
            return (self.pba >> (8 * (offset - MSIX_PBA))) & ((1 << (8 * size)) - 1)
        return 0  # doorbells are write-only and read as 0 (3.1.3.11)

    def mmio_write(self, offset: int, value: int, size: int) -> None:
        if DOORBELL_BASE <= offset < MSIX_TABLE:
            index, rem = divmod(offset - DOORBELL_BASE, 4)
            if rem == 0:
                if index & 1:
                    self._cq_doorbell(index >> 1, value & 0xFFFF)
                else:
                    self._sq_doorbell(index >> 1, value & 0xFFFF)
            return
        if offset < DOORBELL_BASE:
            old_cc = self.regs["CC"]
            reg = self.regs.write(offset, value, size)
            if reg is not None and reg.name == "CC":
                self._cc_changed(old_cc, self.regs["CC"])
            return
        if MSIX_TABLE <= offset < MSIX_TABLE + len(self.msix):
            off = offset - MSIX_TABLE
            self.msix[off:off + size] = value.to_bytes(size, "little")
            vec = off // MSIX_ENTRY
            if not self._masked(vec) and self.pba >> vec & 1:
                self.pba &= ~(1 << vec)
                self._fire(vec)

    # ------------------------------------------------------------------ enable / reset
    def _cc_changed(self, old: int, new: int) -> None:
        regs = self.regs
        if not old & Cc.EN and new & Cc.EN:
            aqa = regs["AQA"]
            asqs, acqs = (aqa & 0xFFF) + 1, ((aqa >> 16) & 0xFFF) + 1
            iosqes, iocqes = (new >> CC_IOSQES_SHIFT) & 0xF, (new >> CC_IOCQES_SHIFT) & 0xF
            if (asqs < 2 or acqs < 2 or regs["ASQ"] == 0 or regs["ACQ"] == 0
                    or (iosqes and iosqes != 6) or (iocqes and iocqes != 4)):
                regs["CSTS"] = regs["CSTS"] | Csts.CFS  # 3.5.1: a fatal status on bad setup
                return
            self.sqs[0] = SubmissionQueue(0, regs["ASQ"], asqs, 0)
            self.cqs[0] = CompletionQueue(0, regs["ACQ"], acqs, 0)
            self.env.timeout(self.profile.enable_ns).add_callback(self._ready)
        elif old & Cc.EN and not new & Cc.EN:
            self.controller_reset()
        if new & CC_SHN_MASK and not old & CC_SHN_MASK:
            regs["CSTS"] = (regs["CSTS"] & ~CSTS_SHST_MASK) | Csts.SHST_COMPLETE

    def _ready(self, _ev: object) -> None:
        if self.regs["CC"] & Cc.EN and 0 in self.sqs:
            self.regs["CSTS"] = self.regs["CSTS"] | Csts.RDY

    def controller_reset(self) -> None:
        """CC.EN 1 -> 0 (3.7.2): delete all queues, clear CSTS.RDY; AQA/ASQ/ACQ are kept."""
        self.sqs.clear()
        self.cqs.clear()
        self.held.clear()
        self.nqueues = 0
        self.regs["CSTS"] = self.regs["CSTS"] & ~(Csts.RDY | Csts.CFS | CSTS_SHST_MASK)
        if self.regs["CC"] & Cc.EN:
            self.regs["CC"] = self.regs["CC"] & ~Cc.EN

    def reset(self) -> None:
        """Conventional (power-on) reset: every property, queue and MSI-X entry."""
        self.controller_reset()
        self.regs.reset()
        self.msix[:] = bytes(len(self.msix))
        for v in range(self.msix_vectors):
            struct.pack_into("<I", self.msix, v * MSIX_ENTRY + 12, MSIX_VECTOR_MASKED)
        self.pba = 0

    # ------------------------------------------------------------------ doorbells
    def _sq_doorbell(self, qid: int, tail: int) -> None:
        sq = self.sqs.get(qid)
        if sq is None or tail >= sq.size or not self.regs.values["CSTS"] & _CSTS_RDY:
            self.stats.errors += 1  # an invalid doorbell write (asynchronous event: left out)
            return
        sq.tail = tail
        port = self.port
        while sq.head != sq.tail:
            raw = port.read(sq.base + sq.head * C.SQE_SIZE, C.SQE_SIZE)
            sq.head = sq.head + 1 if sq.head + 1 < sq.size else 0
            if raw is None:
                self.stats.dma_faults += 1
                continue
            if qid:
                self._io(sq, raw)
            else:
                self._admin(sq, raw)

    def _cq_doorbell(self, qid: int, head: int) -> None:
        cq = self.cqs.get(qid)
        if cq is None or head >= cq.size:
            self.stats.errors += 1
            return
        cq.head = head
        held = self.held.get(qid)
        while held and not cq.full:
            self._post_raw(cq, held.popleft())

    # ------------------------------------------------------------------ completions
    def complete(self, sq: SubmissionQueue, cid: int, status: int, dw0: int = 0) -> None:
        """Post a CQE for command ``cid`` of ``sq`` after any IOTLB-miss stalls."""
        stall = self.port.take_stall()
        if stall:
            self.env.timeout(stall).add_callback(
                lambda _e: self._post(sq, cid, status, dw0))
        else:
            self._post(sq, cid, status, dw0)

    def _post(self, sq: SubmissionQueue, cid: int, status: int, dw0: int) -> None:
        cq = self.cqs.get(sq.cqid)
        if cq is None:
            return  # the queue was deleted meanwhile
        sf = (status & 0x7FFF) << 1
        if cq.full or self.held.get(cq.qid):
            # The phase bit is filled in when the entry is written (held entries keep 0).
            self.held.setdefault(cq.qid, deque()).append(_CQE_PACK(dw0, 0, sq.head, sq.qid,
                                                                   cid, sf))
            return
        self._write_cqe(cq, _CQE_PACK(dw0, 0, sq.head, sq.qid, cid, sf | cq.phase))

    def _post_raw(self, cq: CompletionQueue, cqe: bytes) -> None:
        """Post a held CQE (phase bit 0) with the queue's current phase."""
        if cq.phase:
            cqe = cqe[:14] + bytes((cqe[14] | 1, cqe[15]))
        self._write_cqe(cq, cqe)

    def _write_cqe(self, cq: CompletionQueue, cqe: bytes) -> None:
        """DMA a CQE (phase tag set) to the CQ tail, advance and signal the vector."""
        if not self.port.write(cq.base + cq.tail * C.CQE_SIZE, cqe):
            self.stats.dma_faults += 1
        cq.advance()
        self.stats.completions += 1
        if cq.ien:
            self._signal(cq.iv)

    def _masked(self, vec: int) -> bool:
        return bool(self.msix[vec * MSIX_ENTRY + 12] & MSIX_VECTOR_MASKED)

    def _signal(self, vec: int) -> None:
        if vec >= self.msix_vectors:
            return
        if self._masked(vec):
            self.pba |= 1 << vec
            return
        self._fire(vec)

    def _fire(self, vec: int) -> None:
        lo, hi, data, _ = struct.unpack_from("<IIII", self.msix, vec * MSIX_ENTRY)
        self.stats.interrupts += 1
        self.port.msi(hi << 32 | lo, data)

    # ------------------------------------------------------------------ I/O commands
    def _io(self, sq: SubmissionQueue, raw: bytes) -> None:
        cdw0, nsid, _, _, prp1, prp2, cdw10, cdw11, cdw12, _, _, _ = _SQE_UNPACK(raw)
        opc, cid = cdw0 & 0xFF, cdw0 >> 16
        self.stats.io_commands += 1
        if nsid != 1 and not (opc == _FLUSH and nsid == 0xFFFF_FFFF):
            self.complete(sq, cid, _INVALID_NS)
            return
        if opc == _FLUSH:
            self.stats.flushes += 1
            self.media.submit(0, 0, 0, None, lambda st, _d: self.complete(sq, cid, st))
            return
        if opc != _READ and opc != _WRITE:
            self.complete(sq, cid, _INVALID_OPCODE)
            return
        slba = cdw11 << 32 | cdw10
        nlb = (cdw12 & 0xFFFF) + 1
        length = nlb * self._lba_size
        if slba + nlb > self.media.nsze:
            self.complete(sq, cid, _LBA_RANGE)
            return
        if length > self._mdts_bytes:
            self.complete(sq, cid, _INVALID_FIELD)
            return
        port = self.port
        if length <= _PAGE and (prp1 & (_PAGE - 1)) + length <= _PAGE:
            segs = [(prp1, length)]  # the common case: one page, no list
        else:
            got = C.prp_segments(prp1, prp2, length, port.read)
            if got is None:
                self.stats.dma_faults += 1
                self.complete(sq, cid, _XFER_ERR)
                return
            segs = got
        if opc == _READ:
            self.stats.reads += 1

            def read_done(status: int, data: bytes | None) -> None:
                if status == SUCCESS and data is not None:
                    pos = 0
                    for addr, n in segs:
                        if not port.write(addr, data[pos:pos + n] if len(segs) > 1 else data):
                            self.stats.dma_faults += 1
                            status = _XFER_ERR
                            break
                        pos += n
                self.complete(sq, cid, status)

            self.media.submit(2, slba, nlb, None, read_done)
            return
        self.stats.writes += 1
        parts = []
        for addr, n in segs:
            chunk = port.read(addr, n)
            if chunk is None:
                self.stats.dma_faults += 1
                self.complete(sq, cid, _XFER_ERR)
                return
            parts.append(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.media.submit(1, slba, nlb, data, lambda st, _d: self.complete(sq, cid, st))

    # ------------------------------------------------------------------ admin commands
    def _admin(self, sq: SubmissionQueue, raw: bytes) -> None:
        cdw0, nsid, _, _, prp1, prp2, cdw10, cdw11, _, _, _, _ = _SQE_UNPACK(raw)
        opc, cid = cdw0 & 0xFF, cdw0 >> 16
        self.stats.admin_commands += 1
        status, dw0 = self._admin_exec(opc, nsid, prp1, prp2, cdw10, cdw11)
        self.env.timeout(self.admin_ns).add_callback(
            lambda _e: self.complete(sq, cid, status, dw0))

    def _admin_exec(self, opc: int, nsid: int, prp1: int, prp2: int, cdw10: int,
                    cdw11: int) -> tuple[int, int]:
        A = C.AdminOpcode
        if opc == A.IDENTIFY:
            return self._identify(cdw10 & 0xFF, nsid, prp1, prp2), 0
        if opc in (A.SET_FEATURES, A.GET_FEATURES):
            if cdw10 & 0xFF != C.FeatureId.NUMBER_OF_QUEUES:
                return _INVALID_FIELD, 0
            cap = min(self.profile.max_io_queues, self.msix_vectors - 1)
            if opc == A.SET_FEATURES:
                # Base spec 5.27.1.5 (QEMU nvme_set_feature): refused once any I/O queue
                # exists; NSQR/NCQR = FFFFh is invalid; the allocation holds until reset.
                if self.sqs.keys() - {0} or self.cqs.keys() - {0}:
                    return C.status_field(C.GenericStatus.COMMAND_SEQUENCE_ERROR), 0
                if (cdw11 & 0xFFFF) == 0xFFFF or (cdw11 >> 16) == 0xFFFF:
                    return _INVALID_FIELD, 0
                if not self.nqueues:
                    self.nqueues = min(max(cdw11 & 0xFFFF, cdw11 >> 16) + 1, cap)
            n = (self.nqueues or cap) - 1
            return SUCCESS, n << 16 | n
        if opc == A.CREATE_IO_CQ:
            return self._create_cq(prp1, cdw10, cdw11), 0
        if opc == A.CREATE_IO_SQ:
            return self._create_sq(prp1, cdw10, cdw11), 0
        if opc == A.DELETE_IO_SQ:
            qid = cdw10 & 0xFFFF
            if qid == 0 or qid not in self.sqs:
                return _cs(C.CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER), 0
            del self.sqs[qid]
            return SUCCESS, 0
        if opc == A.DELETE_IO_CQ:
            qid = cdw10 & 0xFFFF
            if qid == 0 or qid not in self.cqs:
                return _cs(C.CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER), 0
            if any(s.cqid == qid for s in self.sqs.values()):
                return _cs(C.CommandSpecificStatus.INVALID_QUEUE_DELETION), 0
            del self.cqs[qid]
            self.held.pop(qid, None)
            return SUCCESS, 0
        return _INVALID_OPCODE, 0

    def _queue_checks(self, qid: int, qsize: int, pc: int, existing: dict[int, Any]) -> int:
        limit = self.nqueues or min(self.profile.max_io_queues, self.msix_vectors - 1)
        if not 1 <= qid <= limit or qid in existing:
            return _cs(C.CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER)
        if qsize < 2 or qsize > self.mqes + 1:
            return _cs(C.CommandSpecificStatus.INVALID_QUEUE_SIZE)
        if not pc:
            return _INVALID_FIELD  # CAP.CQR = 1: queues must be physically contiguous
        return SUCCESS

    @staticmethod
    def _queue_base(prp1: int) -> int | None:
        """A contiguous queue's PRP1 must be page aligned (QEMU nvme_create_cq/_sq)."""
        return None if prp1 & (C.PAGE - 1) else prp1

    def _create_cq(self, prp1: int, cdw10: int, cdw11: int) -> int:
        qid, qsize = cdw10 & 0xFFFF, (cdw10 >> 16) + 1
        pc, ien, iv = cdw11 & 1, bool(cdw11 & 2), cdw11 >> 16
        bad = self._queue_checks(qid, qsize, pc, self.cqs)
        if bad:
            return bad
        if iv >= self.msix_vectors:
            return _cs(C.CommandSpecificStatus.INVALID_INTERRUPT_VECTOR)
        base = self._queue_base(prp1)
        if base is None:
            return C.status_field(C.GenericStatus.INVALID_PRP_OFFSET)
        self.cqs[qid] = CompletionQueue(qid, base, qsize, iv, ien)
        return SUCCESS

    def _create_sq(self, prp1: int, cdw10: int, cdw11: int) -> int:
        qid, qsize = cdw10 & 0xFFFF, (cdw10 >> 16) + 1
        pc, cqid = cdw11 & 1, cdw11 >> 16
        bad = self._queue_checks(qid, qsize, pc, self.sqs)
        if bad:
            return bad
        if cqid == 0 or cqid not in self.cqs:
            return _cs(C.CommandSpecificStatus.COMPLETION_QUEUE_INVALID)
        base = self._queue_base(prp1)
        if base is None:
            return C.status_field(C.GenericStatus.INVALID_PRP_OFFSET)
        self.sqs[qid] = SubmissionQueue(qid, base, qsize, cqid)
        return SUCCESS

    def _identify(self, cns: int, nsid: int, prp1: int, prp2: int) -> int:
        if cns == C.Cns.CONTROLLER:
            data = C.identify_controller(
                vid=self.vid, ssvid=self.vid, sn=self.serial, mn=self.model, fr="1.0",
                mdts=self.profile.mdts, nn=1, max_queues=self.profile.max_io_queues)
        elif cns == C.Cns.NAMESPACE:
            if nsid != 1:
                return _INVALID_NS
            shift = self._lba_size.bit_length() - 1
            data = C.identify_namespace(nsze=self.media.nsze, lba_shift=shift)
        elif cns == C.Cns.ACTIVE_NSID_LIST:
            data = struct.pack("<I", 1) + bytes(4092)
        else:
            return _INVALID_FIELD
        segs = C.prp_segments(prp1, prp2, len(data), self.port.read)
        if segs is None:
            return _XFER_ERR
        pos = 0
        for addr, n in segs:
            if not self.port.write(addr, data[pos:pos + n]):
                return _XFER_ERR
            pos += n
        return SUCCESS

    # ------------------------------------------------------------------ save / restore
    def save(self) -> ControllerState:
        media_save = getattr(self.media, "ns", None)
        return ControllerState(
            regs=self.regs.save(),
            sqs=[(q.qid, q.base, q.size, q.cqid, q.head, q.tail) for q in self.sqs.values()],
            cqs=[(q.qid, q.base, q.size, q.iv, q.ien, q.head, q.tail, q.phase)
                 for q in self.cqs.values()],
            msix=bytes(self.msix), pba=self.pba, nqueues=self.nqueues,
            held=[(qid, cqe) for qid, dq in self.held.items() for cqe in dq],
            stats=asdict(self.stats),
            media=media_save.save() if media_save is not None else None)

    def load(self, state: ControllerState) -> None:
        self.regs.load(state.regs)
        self.sqs = {s[0]: SubmissionQueue(*s) for s in state.sqs}
        self.cqs = {c[0]: CompletionQueue(*c) for c in state.cqs}
        self.msix = bytearray(state.msix)
        self.pba = state.pba
        self.nqueues = state.nqueues
        self.held = {}
        for qid, cqe in state.held:
            self.held.setdefault(qid, deque()).append(cqe)
        self.stats = ControllerStats(**state.stats)
        ns = getattr(self.media, "ns", None)
        if ns is not None and state.media is not None:
            ns.load(state.media)


BAR0_BYTES: Final = BAR0_SIZE
