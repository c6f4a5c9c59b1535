"""The NVMe driver: one scripted driver for every path (guest VM or the host's own kernel).

What is modelled
    What Linux ``drivers/nvme/host/pci.c`` does, in its order:

    - ``probe``: read CAP and VS; disable the controller and wait for CSTS.RDY = 0
      (nvme_disable_ctrl); allocate the admin queues, write AQA/ASQ/ACQ (nvme_pci_configure_
      admin_queue); program the MSI-X entries; set CC (EN, CSS = NVM, MPS = 4 KiB, IOSQES = 6,
      IOCQES = 4) and poll CSTS.RDY (nvme_enable_ctrl); Identify Controller and Namespace 1;
      Set Features Number of Queues (nvme_set_queue_count); Create I/O CQ then SQ for each
      queue pair (nvme_create_queue), each CQ on its own MSI-X vector.
    - ``submit``: the block layer's and nvme_queue_rq's CPU time, the data copied into the
      request's DMA buffer (writes), a PRP1/PRP2 (or a PRP list prepared once per request
      slot) pointing at it, the SQE written at the SQ tail and the SQ tail doorbell rung.
    - the interrupt handler (nvme_irq -> nvme_poll_cq): consume every CQE whose phase tag
      matches, complete its request (reads: the guest's buffer is what the caller gets), then
      ring the CQ head doorbell once.

    The driver only uses the kernel API (``mmio_read``/``mmio_write``/``read``/``write``/
    ``compute``/``wait_interrupt``/``alloc_dma``, :class:`passthru.guest.kernel.GuestKernel`
    or the host's equivalent), so the same code runs on bare metal, under passthrough and
    against an emulated controller. MSI-X entries are written in the compatibility format
    (0xFEE00000 | APIC ID << 12, vector); whoever owns the platform remaps them.

Left out
    Polled queues, blk-mq tag sharing and merging, timeouts and aborts, shutdown on remove,
    SGLs and the doorbell buffer (shadow doorbells).
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from typing import Any, Final, Protocol

from passthru.errors import ConfigError
from passthru.guest.drivers import NvmeError
from passthru.hw.devices.nvme import commands as C
from passthru.hw.devices.nvme.regs import (
    CC_IOCQES_SHIFT,
    CC_IOSQES_SHIFT,
    MSIX_ENTRY,
    MSIX_TABLE,
    Cc,
    Csts,
    doorbell_offset,
)
from passthru.hw.devices.nvme.regs import DoorbellKind as Db
from passthru.scenarios.io_path import IoCompletion, IoRequest
from passthru.sim import Environment, Event

Gen = Generator[Any, Any, Any]
VECTOR_BASE: Final = 0x40  # admin queue's vector; I/O queue q uses VECTOR_BASE + q
_OPC: Final = {"read": C.IoOpcode.READ, "write": C.IoOpcode.WRITE, "flush": C.IoOpcode.FLUSH}
_CQE_UNPACK: Final = C.CQE.unpack
_SQE_PACK: Final = C.SQE_HEAD.pack
_CQE_SIZE, _SQE_SIZE, _PAGE = C.CQE_SIZE, C.SQE_SIZE, C.PAGE


class Kernel(Protocol):
    """What the driver needs from the kernel it runs in (GuestKernel, or the host's)."""

    env: Environment
    costs: Any
    vcpu: int

    def mmio_read(self, addr: int, size: int = 4) -> Gen: ...
    def mmio_write(self, addr: int, value: int, size: int = 4) -> Gen: ...  # returns its ns
    def load(self, addr: int, n: int) -> bytes: ...  # RAM: a plain call, no sim time
    def store(self, addr: int, data: bytes) -> None: ...
    def compute(self, n_instructions: int) -> Gen: ...  # returns its ns
    def wait_interrupt(self, vector: int) -> Gen: ...
    def alloc_dma(self, size: int, align: int = 4096) -> int: ...


class _IoQueue:
    __slots__ = ("qid", "sq", "cq", "size", "tail", "head", "phase", "vector", "free",
                 "slots", "sq_db", "cq_db", "outstanding")

    def __init__(self, qid: int, sq: int, cq: int, size: int) -> None:
        self.qid, self.sq, self.cq, self.size = qid, sq, cq, size
        self.tail = self.head = 0
        self.phase = 1
        self.vector = VECTOR_BASE + qid
        self.free: list[int] = []
        self.slots: list[list[Any]] = []  # cid -> [buf, prp2_list, event, req, submit_ns]
        self.sq_db = self.cq_db = 0
        self.outstanding = 0


class NvmeDriver:
    """Drive one controller whose BAR0 is at ``bar0`` in the kernel's physical space."""

    def __init__(self, g: Kernel, bar0: int, *, io_queues: int = 1, queue_depth: int = 32,
                 max_io_bytes: int = 128 * 1024, admin_entries: int = 32,
                 poll_instructions: int = 30_000) -> None:
        if queue_depth < 1 or io_queues < 1:
            raise ConfigError(f"nvme driver: queue_depth {queue_depth} and io_queues "
                              f"{io_queues} must be >= 1")
        self.g = g
        self.env = g.env
        self.bar0 = bar0
        self.io_queues = io_queues
        self.queue_depth = queue_depth
        self.max_io_bytes = max_io_bytes
        self.admin_entries = admin_entries
        self.poll_instructions = poll_instructions
        self.queues: list[_IoQueue] = []
        self.lba_size = 0
        self.nsze = 0
        self.mqes = 0
        self.identify: dict[str, Any] = {}
        self.busy_ns = 0  # driver CPU work (submit and completion, incl. MMIO cost; not the
        # time spent waiting for a busy CPU)
        self.completions = 0
        self.interrupts = 0
        c = g.costs
        self._submit_instr = c.ns_to_instructions(
            c.syscall_ns + c.block_layer_submit_ns + c.nvme_driver_submit_ns)
        self._complete_instr = c.ns_to_instructions(
            c.nvme_driver_complete_ns + c.block_layer_complete_ns)
        self._irq_instr = c.ns_to_instructions(c.guest_irq_entry_ns)
        self._admin_cid = 0

    def __repr__(self) -> str:
        return (f"<NvmeDriver bar0={self.bar0:#x} queues={len(self.queues)}x"
                f"{self.queue_depth} lba={self.lba_size} nsze={self.nsze}>")

    # ------------------------------------------------------------------ helpers
    def _rd(self, off: int, size: int = 4) -> Gen:
        return (yield from self.g.mmio_read(self.bar0 + off, size))

    def _wr(self, off: int, value: int, size: int = 4) -> Gen:
        yield from self.g.mmio_write(self.bar0 + off, value, size)

    def _msix_entry(self, entry: int, vector: int) -> Gen:
        apic = getattr(self.g, "vcpu", 0)
        base = MSIX_TABLE + entry * MSIX_ENTRY
        yield from self._wr(base, 0xFEE0_0000 | apic << 12)
        yield from self._wr(base + 4, 0)
        yield from self._wr(base + 8, vector)
        yield from self._wr(base + 12, 0)  # unmask

    def _wait_csts(self, want_ready: bool) -> Gen:
        while True:
            csts = yield from self._rd(0x1C)
            if csts & Csts.CFS:
                raise NvmeError("controller fatal status (CSTS.CFS) during bring-up")
            if bool(csts & Csts.RDY) == want_ready:
                return
            yield from self.g.compute(self.poll_instructions)

    # ------------------------------------------------------------------ bring-up
    def probe(self) -> Gen:
        """Bring the controller up and create the I/O queues (a ``yield from`` body)."""
        g = self.g
        cap = yield from self._rd(0x00, 8)
        self.identify["VS"] = yield from self._rd(0x08)
        self.mqes = cap & 0xFFFF
        dstrd = (cap >> 32) & 0xF
        self._dstrd = dstrd
        cc = yield from self._rd(0x14)
        if cc & Cc.EN:
            yield from self._wr(0x14, cc & ~Cc.EN)
        yield from self._wait_csts(False)
        n = min(self.admin_entries, self.mqes + 1)
        self._asq, self._acq = g.alloc_dma(n * C.SQE_SIZE), g.alloc_dma(n * C.CQE_SIZE)
        self._an, self._atail, self._ahead, self._aphase = n, 0, 0, 1
        self._page = g.alloc_dma(C.PAGE)  # Identify data lands here
        yield from self._wr(0x24, (n - 1) << 16 | (n - 1))  # AQA
        yield from self._wr(0x28, self._asq, 8)
        yield from self._wr(0x30, self._acq, 8)
        yield from self._msix_entry(0, VECTOR_BASE)
        yield from self._wr(0x14, Cc.EN | 6 << CC_IOSQES_SHIFT | 4 << CC_IOCQES_SHIFT)
        yield from self._wait_csts(True)
        st, _ = yield from self.admin(C.AdminOpcode.IDENTIFY, cdw10=C.Cns.CONTROLLER,
                                      prp1=self._page)
        data = g.load(self._page, 4096)
        self.identify.update(vid=struct.unpack_from("<H", data, 0)[0],
                             sn=data[4:24].decode().strip(), mn=data[24:64].decode().strip(),
                             mdts=data[77])
        mdts_bytes = C.PAGE << data[77] if data[77] else 1 << 30
        self.max_io_bytes = min(self.max_io_bytes, mdts_bytes)
        st, _ = yield from self.admin(C.AdminOpcode.IDENTIFY, nsid=1,
                                      cdw10=C.Cns.NAMESPACE, prp1=self._page)
        data = g.load(self._page, 4096)
        self.nsze, self.lba_size = C.parse_identify_namespace(data)
        want = self.io_queues - 1
        st, dw0 = yield from self.admin(C.AdminOpcode.SET_FEATURES,
                                        cdw10=C.FeatureId.NUMBER_OF_QUEUES,
                                        cdw11=want << 16 | want)
        granted = min(dw0 & 0xFFFF, dw0 >> 16) + 1
        if granted < self.io_queues:
            raise ConfigError(f"numjobs {self.io_queues} exceeds the I/O queues the "
                              f"controller grants ({granted})")
        size = self.queue_depth + 1
        if size > self.mqes + 1:
            raise ConfigError(f"qd {self.queue_depth} exceeds the controller's limit "
                              f"{self.mqes} (CAP.MQES + 1 entries, one kept empty)")
        for qid in range(1, self.io_queues + 1):
            q = _IoQueue(qid, g.alloc_dma(size * C.SQE_SIZE), g.alloc_dma(size * C.CQE_SIZE),
                         size)
            q.sq_db = self.bar0 + doorbell_offset(qid, Db.SQ_TAIL, dstrd)
            q.cq_db = self.bar0 + doorbell_offset(qid, Db.CQ_HEAD, dstrd)
            yield from self._msix_entry(qid, q.vector)
            st, _ = yield from self.admin(C.AdminOpcode.CREATE_IO_CQ, prp1=q.cq,
                                          cdw10=(size - 1) << 16 | qid,
                                          cdw11=qid << 16 | 0b11)
            st, _ = yield from self.admin(C.AdminOpcode.CREATE_IO_SQ, prp1=q.sq,
                                          cdw10=(size - 1) << 16 | qid,
                                          cdw11=qid << 16 | 0b1)
            for _cid in range(self.queue_depth):
                buf = g.alloc_dma(self.max_io_bytes)
                prp_list = 0
                pages = self.max_io_bytes // C.PAGE
                if pages > 2:  # one PRP list page per slot, written once (PRP2 points at it)
                    prp_list = g.alloc_dma(C.PAGE)
                    entries = [buf + C.PAGE * i for i in range(1, pages)]
                    g.store(prp_list, struct.pack(f"<{len(entries)}Q", *entries))
                q.slots.append([buf, prp_list, None, None, 0])
            q.free = list(range(self.queue_depth - 1, -1, -1))
            self.queues.append(q)
            self.env.process(self._irq_loop(q))
        return self

    def admin(self, opcode: int, *, nsid: int = 0, prp1: int = 0, prp2: int = 0,
              cdw10: int = 0, cdw11: int = 0) -> Gen:
        """Submit one admin command and wait for it; returns (status field, DW0)."""
        g = self.g
        cid = self._admin_cid = (self._admin_cid + 1) & 0xFFFF
        sqe = C.pack_sqe(opcode, cid, nsid, prp1, prp2, cdw10, cdw11)
        g.store(self._asq + self._atail * C.SQE_SIZE, sqe)
        self._atail = (self._atail + 1) % self._an
        yield from self._wr(doorbell_offset(0, Db.SQ_TAIL, self._dstrd), self._atail)
        while True:
            raw = g.load(self._acq + self._ahead * C.CQE_SIZE, C.CQE_SIZE)
            dw0, _, _, _, got, sf = _CQE_UNPACK(raw)
            if sf & 1 == self._aphase:
                break
            yield from g.wait_interrupt(VECTOR_BASE)
        self._ahead += 1
        if self._ahead == self._an:
            self._ahead, self._aphase = 0, self._aphase ^ 1
        yield from self._wr(doorbell_offset(0, Db.CQ_HEAD, self._dstrd), self._ahead)
        status = sf >> 1
        if got != cid or status:
            raise NvmeError(f"admin opcode {opcode:#x} failed: status {status:#x}")
        return status, dw0

    # ------------------------------------------------------------------ I/O
    def check(self, req: IoRequest) -> None:
        if req.op != "flush":
            nbytes = req.nblocks * self.lba_size
            if req.nblocks < 1 or nbytes > self.max_io_bytes:
                raise ConfigError(f"bs {nbytes} must be between one block and the driver's "
                                  f"max I/O size {self.max_io_bytes}")

    def submit(self, req: IoRequest) -> Event:
        """Issue ``req``; the returned event succeeds with an :class:`IoCompletion`."""
        q = self.queues[0]
        if len(self.queues) > 1:  # blk-mq maps CPUs to queues; here: the least loaded
            for other in self.queues:
                if len(other.free) > len(q.free):
                    q = other
        if not q.free:
            raise RuntimeError(f"nvme driver: more than {self.queue_depth} I/Os outstanding "
                               f"on queue {q.qid}")
        ev = Event(self.env)
        q.outstanding += 1
        self.env.process(self._submit(q, q.free.pop(), req, ev))
        return ev

    def _submit(self, q: _IoQueue, cid: int, req: IoRequest, ev: Event) -> Gen:
        g = self.g
        slot = q.slots[cid]
        slot[2], slot[3], slot[4] = ev, req, self.env.now
        busy = yield from g.compute(self._submit_instr)
        op = req.op
        if op == "flush":
            sqe = _SQE_PACK(C.IoOpcode.FLUSH | cid << 16, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        else:
            buf = slot[0]
            nbytes = req.nblocks * self.lba_size
            if op == "write":
                g.store(buf, req.data)  # type: ignore[arg-type]
            prp2 = 0
            if nbytes > _PAGE:
                prp2 = buf + _PAGE if nbytes <= 2 * _PAGE else slot[1]
            sqe = _SQE_PACK(_OPC[op] | cid << 16, 1, 0, 0, buf, prp2, req.lba & 0xFFFF_FFFF,
                            req.lba >> 32, req.nblocks - 1, 0, 0, 0)
        tail = q.tail
        g.store(q.sq + tail * _SQE_SIZE, sqe)
        q.tail = tail = tail + 1 if tail + 1 < q.size else 0
        busy += yield from g.mmio_write(q.sq_db, tail)
        self.busy_ns += busy

    def _irq_loop(self, q: _IoQueue) -> Gen:
        g, env = self.g, self.env
        load, compute = g.load, g.compute  # the loop's kernel calls, looked up once
        cq, size, slots, free = q.cq, q.size, q.slots, q.free
        lba_size = self.lba_size
        irq_instr, complete_instr = self._irq_instr, self._complete_instr
        done: list[tuple[Event, int, int, bytes | None]] = []
        while True:
            yield from g.wait_interrupt(q.vector)
            self.interrupts += 1
            busy = yield from compute(irq_instr)
            reaped = 0
            while True:
                head = q.head
                raw = load(cq + head * _CQE_SIZE, _CQE_SIZE)
                _, _, _, _, cid, sf = _CQE_UNPACK(raw)
                if sf & 1 != q.phase:
                    break
                head += 1
                if head == size:
                    head = 0
                    q.phase ^= 1
                q.head = head
                reaped += 1
                slot = slots[cid]
                ev, req, submit_ns = slot[2], slot[3], slot[4]
                status = sf >> 1
                data = None
                if req.op == "read" and status == 0:
                    data = load(slot[0], req.nblocks * lba_size)
                busy += yield from compute(complete_instr)
                slot[2] = slot[3] = None
                free.append(cid)
                q.outstanding -= 1
                self.completions += 1
                done.append((ev, status, submit_ns, data))
            if reaped:
                busy += yield from g.mmio_write(q.cq_db, q.head)
            self.busy_ns += busy
            # The woken tasks run once the handler has returned (after the CQ doorbell).
            now = env.now
            for ev, status, submit_ns, data in done:
                ev.succeed(IoCompletion(status, submit_ns, now, data))
            done.clear()
