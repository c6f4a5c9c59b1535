"""NVMe controller at register level, driven by hand through a plain-memory DMA port."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from passthru.hw.devices.nvme import commands as C
from passthru.hw.devices.nvme.controller import NamespaceMedia, NvmeController
from passthru.hw.devices.nvme.namespace import PRESETS, Namespace
from passthru.hw.devices.nvme.regs import (
    MSIX_PBA,
    MSIX_TABLE,
    Cc,
    Csts,
    DoorbellKind,
    RegisterFile,
    decode_doorbell,
    doorbell_offset,
    register_table,
)
from passthru.sim import Environment

ASQ, ACQ, BUF, IOSQ, IOCQ, LIST = 0x10000, 0x20000, 0x100000, 0x30000, 0x40000, 0x50000


class MemPort:
    """A DMA port onto a bytearray; records MSIs; addresses >= len(mem) fault."""

    def __init__(self, size: int = 4 << 20) -> None:
        self.mem = bytearray(size)
        self.msis: list[tuple[int, int]] = []

    def read(self, addr, n):
        return bytes(self.mem[addr:addr + n]) if addr + n <= len(self.mem) else None

    def write(self, addr, data):
        if addr + len(data) > len(self.mem):
            return False
        self.mem[addr:addr + len(data)] = data
        return True

    def msi(self, addr, data):
        self.msis.append((addr, data))

    def take_stall(self):
        return 0


def make(profile=PRESETS["optane"], size=1 << 30):
    env = Environment()
    port = MemPort()
    ns = Namespace(profile, size, random.Random(1))
    ctrl = NvmeController(env, port, NamespaceMedia(env, ns), profile)
    return env, port, ctrl


class Host:
    """A hand-rolled driver: enough to poke the controller step by step."""

    def __init__(self, env, port, ctrl, entries=8):
        self.env, self.port, self.ctrl = env, port, ctrl
        self.n = entries
        self.atail = self.ahead = 0
        self.aphase = 1
        self.cid = 0

    def enable(self):
        c = self.ctrl
        c.mmio_write(0x24, (self.n - 1) << 16 | (self.n - 1), 4)
        c.mmio_write(0x28, ASQ, 8)
        c.mmio_write(0x30, ACQ, 8)
        for v in range(4):  # unmask entries 0..3, data = vector
            base = MSIX_TABLE + 16 * v
            c.mmio_write(base, 0xFEE00000, 4)
            c.mmio_write(base + 8, 0x40 + v, 4)
            c.mmio_write(base + 12, 0, 4)
        c.mmio_write(0x14, Cc.EN | 6 << 16 | 4 << 20, 4)
        self.env.run()
        assert c.mmio_read(0x1C, 4) & Csts.RDY

    def admin(self, opc, **kw):
        self.cid += 1
        sqe = C.pack_sqe(opc, self.cid, **kw)
        self.port.write(ASQ + 64 * self.atail, sqe)
        self.atail = (self.atail + 1) % self.n
        self.ctrl.mmio_write(doorbell_offset(0, DoorbellKind.SQ_TAIL), self.atail, 4)
        self.env.run()
        dw0, _, sqhd, sqid, cid, sf = C.CQE.unpack(self.port.read(ACQ + 16 * self.ahead, 16))
        assert sf & 1 == self.aphase and cid == self.cid and sqid == 0
        self.ahead += 1
        if self.ahead == self.n:
            self.ahead, self.aphase = 0, self.aphase ^ 1
        self.ctrl.mmio_write(doorbell_offset(0, DoorbellKind.CQ_HEAD), self.ahead, 4)
        return sf >> 1, dw0


def up(entries=8, ioq=4):
    env, port, ctrl = make()
    h = Host(env, port, ctrl, entries)
    h.enable()
    assert h.admin(C.AdminOpcode.SET_FEATURES, cdw10=7, cdw11=3 << 16 | 3) == (0, 3 << 16 | 3)
    assert h.admin(C.AdminOpcode.CREATE_IO_CQ, prp1=IOCQ, cdw10=(ioq - 1) << 16 | 1,
                   cdw11=1 << 16 | 3)[0] == 0
    assert h.admin(C.AdminOpcode.CREATE_IO_SQ, prp1=IOSQ, cdw10=(ioq - 1) << 16 | 1,
                   cdw11=1 << 16 | 1)[0] == 0
    return env, port, ctrl, h


def test_cap_vs_and_reset_values():
    _, _, ctrl = make()
    cap = ctrl.mmio_read(0, 8)
    assert cap & 0xFFFF == PRESETS["optane"].max_queue_entries - 1  # MQES
    assert cap >> 16 & 1 == 1 and cap >> 37 & 1 == 1  # CQR, CSS.NVM
    assert ctrl.mmio_read(4, 4) == cap >> 32  # upper half of CAP
    assert ctrl.mmio_read(8, 4) == 0x20000  # VS 2.0
    assert ctrl.mmio_read(0x1C, 4) == 0  # CSTS: not ready
    assert ctrl.regs.field("CAP", "MQES") == cap & 0xFFFF


def test_register_table_masks():
    regs = RegisterFile(register_table(1023))
    regs.write(0x00, 0xFFFFFFFF, 4)  # CAP is read-only
    assert regs["CAP"] == register_table(1023)[0].reset
    regs.write(0x28, 0x12345FFF, 4)  # ASQ: low 12 bits reserved
    assert regs["ASQ"] == 0x12345000
    regs["CSTS"] = Csts.NSSRO | Csts.RDY
    regs.write(0x1C, Csts.NSSRO, 4)  # write-1-to-clear NSSRO; RDY is read-only
    assert regs["CSTS"] == Csts.RDY
    assert decode_doorbell(doorbell_offset(3, DoorbellKind.CQ_HEAD)) == (3, DoorbellKind.CQ_HEAD)
    assert decode_doorbell(0x1002) is None


def test_enable_handshake_takes_time_and_bad_setup_is_fatal():
    env, port, ctrl = make()
    ctrl.mmio_write(0x14, Cc.EN, 4)  # no admin queues programmed
    env.run()
    assert ctrl.mmio_read(0x1C, 4) & Csts.CFS and not ctrl.mmio_read(0x1C, 4) & Csts.RDY
    env, port, ctrl = make()
    h = Host(env, port, ctrl)
    ctrl.mmio_write(0x24, 7 << 16 | 7, 4)
    ctrl.mmio_write(0x28, ASQ, 8)
    ctrl.mmio_write(0x30, ACQ, 8)
    ctrl.mmio_write(0x14, Cc.EN, 4)
    assert not ctrl.mmio_read(0x1C, 4) & Csts.RDY  # not yet
    env.run(until=ctrl.profile.enable_ns + 1)
    assert ctrl.mmio_read(0x1C, 4) & Csts.RDY
    del h


def test_identify_controller_and_namespace():
    env, port, ctrl = make()
    h = Host(env, port, ctrl)
    h.enable()
    assert h.admin(C.AdminOpcode.IDENTIFY, cdw10=C.Cns.CONTROLLER, prp1=BUF)[0] == 0
    data = port.read(BUF, 4096)
    assert struct.unpack_from("<H", data, 0)[0] == ctrl.vid
    assert data[24:64].decode().strip() == ctrl.model
    assert data[512] == 0x66 and data[513] == 0x44
    assert h.admin(C.AdminOpcode.IDENTIFY, nsid=1, cdw10=C.Cns.NAMESPACE, prp1=BUF)[0] == 0
    nsze, lba = C.parse_identify_namespace(port.read(BUF, 4096))
    assert (nsze, lba) == ((1 << 30) // 512, 512)
    assert h.admin(C.AdminOpcode.IDENTIFY, nsid=2, cdw10=C.Cns.NAMESPACE, prp1=BUF)[0] == (
        C.GenericStatus.INVALID_NAMESPACE)


def test_queue_creation_errors_use_spec_status_codes():
    env, port, ctrl, h = up()
    cs = C.Sct.COMMAND_SPECIFIC << 8
    # qid 1 exists already; CQ 9 does not; queue size beyond MQES; vector out of range
    assert h.admin(C.AdminOpcode.CREATE_IO_CQ, prp1=IOCQ, cdw10=3 << 16 | 1,
                   cdw11=1)[0] == cs | C.CommandSpecificStatus.INVALID_QUEUE_IDENTIFIER
    assert h.admin(C.AdminOpcode.CREATE_IO_SQ, prp1=IOSQ, cdw10=3 << 16 | 2,
                   cdw11=9 << 16 | 1)[0] == cs | C.CommandSpecificStatus.COMPLETION_QUEUE_INVALID
    assert h.admin(C.AdminOpcode.CREATE_IO_CQ, prp1=IOCQ, cdw10=0xFFFF << 16 | 2,
                   cdw11=1)[0] == cs | C.CommandSpecificStatus.INVALID_QUEUE_SIZE
    assert h.admin(C.AdminOpcode.CREATE_IO_CQ, prp1=IOCQ, cdw10=3 << 16 | 2,
                   cdw11=500 << 16 | 3)[0] == cs | C.CommandSpecificStatus.INVALID_INTERRUPT_VECTOR
    assert h.admin(C.AdminOpcode.DELETE_IO_CQ, cdw10=1)[0] == (
        cs | C.CommandSpecificStatus.INVALID_QUEUE_DELETION)
    assert h.admin(C.AdminOpcode.DELETE_IO_SQ, cdw10=1)[0] == 0
    assert h.admin(C.AdminOpcode.DELETE_IO_CQ, cdw10=1)[0] == 0
    assert 1 not in ctrl.sqs and 1 not in ctrl.cqs
    assert h.admin(0x7F)[0] == C.GenericStatus.INVALID_OPCODE


def test_number_of_queues_is_fixed_once_queues_exist():
    env, port, ctrl = make()
    h = Host(env, port, ctrl, 8)
    h.enable()
    sf = C.AdminOpcode.SET_FEATURES
    assert h.admin(sf, cdw10=7, cdw11=0xFFFF)[0] == C.GenericStatus.INVALID_FIELD  # NCQR FFFFh
    assert h.admin(sf, cdw10=7, cdw11=1 << 16 | 1) == (0, 1 << 16 | 1)
    assert h.admin(sf, cdw10=7, cdw11=5 << 16 | 5) == (0, 1 << 16 | 1)  # holds until reset
    assert h.admin(C.AdminOpcode.CREATE_IO_CQ, prp1=IOCQ + 8, cdw10=3 << 16 | 1,
                   cdw11=1 << 16 | 1)[0] == C.GenericStatus.INVALID_PRP_OFFSET  # unaligned
    assert h.admin(C.AdminOpcode.CREATE_IO_CQ, prp1=IOCQ, cdw10=3 << 16 | 1,
                   cdw11=1 << 16 | 1)[0] == 0
    assert h.admin(C.AdminOpcode.CREATE_IO_SQ, prp1=IOSQ + 64, cdw10=3 << 16 | 1,
                   cdw11=1 << 16 | 1)[0] == C.GenericStatus.INVALID_PRP_OFFSET
    # an I/O queue exists now: Command Sequence Error (generic 0Ch)
    assert h.admin(sf, cdw10=7, cdw11=1)[0] == C.GenericStatus.COMMAND_SEQUENCE_ERROR


def io(port, ctrl, env, tail, opc, slba, nlb, prp1, prp2=0, cid=1):
    port.write(IOSQ + 64 * (tail % 4), C.pack_sqe(opc, cid, 1, prp1, prp2, slba, 0, nlb - 1))
    ctrl.mmio_write(doorbell_offset(1, DoorbellKind.SQ_TAIL), (tail + 1) % 4, 4)
    env.run()


def test_write_then_read_with_prp_list_and_phase_wrap():
    env, port, ctrl, h = up()
    data = random.Random(3).randbytes(5 * 4096)  # 5 pages: PRP1 + a PRP list of 4
    pages = [BUF + 0x3000 * i for i in range(5)]  # scattered pages
    for i, p in enumerate(pages):
        port.write(p, data[4096 * i:4096 * (i + 1)])
    port.write(LIST, struct.pack("<4Q", *pages[1:]))
    io(port, ctrl, env, 0, C.IoOpcode.WRITE, 64, 40, pages[0], LIST)
    for p in pages:
        port.write(p, bytes(4096))
    io(port, ctrl, env, 1, C.IoOpcode.READ, 64, 40, pages[0], LIST, cid=2)
    assert b"".join(port.read(p, 4096) for p in pages) == data
    # CQEs 0, 1 carry phase 1; after 4 entries the phase flips to 0 (4.6)
    for t in range(2, 5):
        io(port, ctrl, env, t, C.IoOpcode.FLUSH, 0, 1, 0, cid=t + 1)
        ctrl.mmio_write(doorbell_offset(1, DoorbellKind.CQ_HEAD), (t + 1) % 4, 4)
    phases = [C.CQE.unpack(port.read(IOCQ + 16 * i, 16))[5] & 1 for i in range(4)]
    assert phases == [0, 1, 1, 1]  # slot 0 was rewritten by the 5th completion
    assert ctrl.stats.reads == 1 and ctrl.stats.writes == 1 and ctrl.stats.flushes == 3


def test_lba_out_of_range_and_dma_fault_status():
    env, port, ctrl, h = up()
    io(port, ctrl, env, 0, C.IoOpcode.READ, ctrl.media.nsze - 1, 2, BUF)
    assert C.CQE.unpack(port.read(IOCQ, 16))[5] >> 1 == C.GenericStatus.LBA_OUT_OF_RANGE
    io(port, ctrl, env, 1, C.IoOpcode.WRITE, 0, 8, 1 << 40, cid=2)  # PRP1 outside memory
    assert C.CQE.unpack(port.read(IOCQ + 16, 16))[5] >> 1 == (
        C.GenericStatus.DATA_TRANSFER_ERROR)
    assert ctrl.stats.dma_faults == 1


def test_full_cq_holds_completions_until_head_moves():
    env, port, ctrl, h = up()
    # CQ of 4 entries holds 3; submit 3 commands, then a 4th after the host consumed none
    for t in range(3):
        io(port, ctrl, env, t, C.IoOpcode.FLUSH, 0, 1, 0, cid=t)
    io(port, ctrl, env, 3, C.IoOpcode.FLUSH, 0, 1, 0, cid=3)
    assert ctrl.stats.completions == 3 + 3  # 3 admin + 3 I/O posted, the 4th held
    assert len(ctrl.held[1]) == 1
    ctrl.mmio_write(doorbell_offset(1, DoorbellKind.CQ_HEAD), 2, 4)
    assert not ctrl.held[1]
    assert C.CQE.unpack(port.read(IOCQ + 16 * 3, 16))[4] == 3


def test_msix_per_queue_and_masking_sets_pba():
    env, port, ctrl, h = up()
    port.msis.clear()
    io(port, ctrl, env, 0, C.IoOpcode.FLUSH, 0, 1, 0)
    assert port.msis == [(0xFEE00000, 0x41)]  # CQ 1 uses vector 1
    ctrl.mmio_write(MSIX_TABLE + 16 + 12, 1, 4)  # mask entry 1
    io(port, ctrl, env, 1, C.IoOpcode.FLUSH, 0, 1, 0, cid=2)
    assert len(port.msis) == 1 and ctrl.mmio_read(MSIX_PBA, 8) == 0b10
    ctrl.mmio_write(MSIX_TABLE + 16 + 12, 0, 4)  # unmask: the pending message fires
    assert len(port.msis) == 2 and ctrl.mmio_read(MSIX_PBA, 8) == 0


def test_reset_clears_queues_and_ready_keeps_admin_registers():
    env, port, ctrl, h = up()
    ctrl.mmio_write(0x14, 0, 4)  # CC.EN 1 -> 0: controller reset
    assert not ctrl.sqs and not ctrl.cqs and not ctrl.mmio_read(0x1C, 4) & Csts.RDY
    assert ctrl.mmio_read(0x28, 8) == ASQ
    ctrl.reset()  # power-on reset
    assert ctrl.mmio_read(0x28, 8) == 0 and ctrl.mmio_read(0x14, 4) == 0
    assert ctrl.mmio_read(MSIX_TABLE + 12, 4) == 1  # entries come back masked


def test_save_restore_round_trip_continues_identically():
    env, port, ctrl, h = up()
    io(port, ctrl, env, 0, C.IoOpcode.WRITE, 8, 8, BUF)
    state = ctrl.save()
    mem = bytes(port.mem)
    # a fresh controller on a copy of memory, loaded with the state, behaves the same
    env2 = Environment(env.now)
    port2 = MemPort()
    port2.mem[:] = mem
    ns2 = Namespace(ctrl.profile, 1 << 30, random.Random(99))
    ctrl2 = NvmeController(env2, port2, NamespaceMedia(env2, ns2), ctrl.profile)
    ctrl2.load(state)
    assert ctrl2.save() == state
    for c, p, e in ((ctrl, port, env), (ctrl2, port2, env2)):
        io(p, c, e, 1, C.IoOpcode.READ, 8, 8, BUF + 0x10000, cid=5)
    assert port.mem == port2.mem and env.now == env2.now


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 256 * 1024), st.integers(0, 4095), st.integers(0, 7))
def test_prp_segments_cover_the_transfer(length, offset, list_offset_entries):
    """Differential: prp_segments against a page-by-page oracle over a chained list."""
    first_page = 0x1000000
    pages = (offset + length + 4095) // 4096
    data_pages = [first_page + 0x2000 * i for i in range(pages)]
    mem = {}
    list_base = 0x200000 + 8 * list_offset_entries
    # lay out the list with chaining at each page's last slot
    entries = data_pages[1:]
    addr = list_base
    while entries:
        room = (4096 - (addr & 4095)) // 8
        if len(entries) <= room:
            for i, e in enumerate(entries):
                mem[addr + 8 * i] = e
            break
        nxt = (addr & ~4095) + 0x10000
        for i, e in enumerate(entries[:room - 1]):
            mem[addr + 8 * i] = e
        mem[addr + 8 * (room - 1)] = nxt
        entries = entries[room - 1:]
        addr = nxt

    def read_list(a, n):
        return b"".join(mem.get(a + 8 * i, 0).to_bytes(8, "little") for i in range(n // 8))

    prp2 = 0 if pages == 1 else (data_pages[1] if pages == 2 else list_base)
    segs = C.prp_segments(first_page + offset, prp2, length, read_list)
    assert sum(n for _, n in segs) == length
    assert segs[0][0] == first_page + offset
    assert [a for a, _ in segs[1:]] == data_pages[1:]


@pytest.mark.parametrize("entries", [2, 5])
def test_admin_queue_wraps(entries):
    env, port, ctrl = make()
    h = Host(env, port, ctrl, entries)
    h.enable()
    for _ in range(3 * entries):
        assert h.admin(C.AdminOpcode.GET_FEATURES, cdw10=7)[0] == 0
