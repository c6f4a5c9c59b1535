"""NVMe command formats: SQE/CQE layouts, opcodes, status codes, Identify data, PRP lists.

Follows NVM Express Base Specification 2.0: 4.2 "Submission Queue Entry" (64 bytes: CDW0
with OPC/FUSE/PSDT/CID, NSID, MPTR, DPTR as PRP1/PRP2, CDW10-15), 4.6 "Completion Queue
Entry" (16 bytes: DW0 result, SQHD, SQID, CID, phase tag P and status field), 4.3 "Physical
Region Page entry and list", 5.x admin commands (Identify 5.17, Create I/O CQ 5.4, Create
I/O SQ 5.5, Delete I/O CQ/SQ 5.6/5.7, Set Features 5.27 with FID 07h Number of Queues) and
the NVM Command Set Specification 1.0 (Read 3.2.4, Write 3.2.6, Flush 3.2.2).

Left out: SGLs (PSDT must be 0), fused operations, metadata (MPTR), end-to-end protection,
and every optional admin command (Get Log Page, firmware, namespace management, ...).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum

SQE_SIZE = 64
CQE_SIZE = 16
PAGE = 4096  # memory page size (CC.MPS = 0)

# CDW0..CDW15 as 16 little-endian dwords; PRP1 = CDW6-7, PRP2 = CDW8-9
SQE = struct.Struct("<16I")
SQE_HEAD = struct.Struct("<IIQQQQIIIIII")  # cdw0 nsid rsvd mptr prp1 prp2 cdw10..cdw15
CQE = struct.Struct("<IIHHHH")  # dw0, dw1, sqhd, sqid, cid, status|phase


class AdminOpcode(IntEnum):
    DELETE_IO_SQ = 0x00
    CREATE_IO_SQ = 0x01
    DELETE_IO_CQ = 0x04
    CREATE_IO_CQ = 0x05
    IDENTIFY = 0x06
    SET_FEATURES = 0x09
    GET_FEATURES = 0x0A


class IoOpcode(IntEnum):
    FLUSH = 0x00
    WRITE = 0x01
    READ = 0x02


class Cns(IntEnum):
    """Identify CNS values (5.17.1)."""

    NAMESPACE = 0x00
    CONTROLLER = 0x01
    ACTIVE_NSID_LIST = 0x02


class FeatureId(IntEnum):
    NUMBER_OF_QUEUES = 0x07


class Sct(IntEnum):
    GENERIC = 0
    COMMAND_SPECIFIC = 1
    MEDIA = 2


class GenericStatus(IntEnum):
    """Generic command status values (4.6.1.2.1), status code type 0."""

    SUCCESS = 0x00
    INVALID_OPCODE = 0x01
    INVALID_FIELD = 0x02
    DATA_TRANSFER_ERROR = 0x04
    INVALID_NAMESPACE = 0x0B
    COMMAND_SEQUENCE_ERROR = 0x0C
    INVALID_PRP_OFFSET = 0x13
    LBA_OUT_OF_RANGE = 0x80


class CommandSpecificStatus(IntEnum):
    """Command specific status values (4.6.1.2.2), status code type 1."""

    COMPLETION_QUEUE_INVALID = 0x00
    INVALID_QUEUE_IDENTIFIER = 0x01
    INVALID_QUEUE_SIZE = 0x02
    INVALID_INTERRUPT_VECTOR = 0x08
    INVALID_QUEUE_DELETION = 0x0C


def status_field(sc: int, sct: int = Sct.GENERIC) -> int:
    """The 15-bit status field (CQE DW3 bits 31:17) for status code ``sc`` of type ``sct``."""
    return (sct & 7) << 8 | (sc & 0xFF)


def pack_sqe(opcode: int, cid: int, nsid: int = 0, prp1: int = 0, prp2: int = 0,
             cdw10: int = 0, cdw11: int = 0, cdw12: int = 0, cdw13: int = 0) -> bytes:
    return SQE_HEAD.pack(opcode & 0xFF | (cid & 0xFFFF) << 16, nsid, 0, 0, prp1, prp2,
                         cdw10, cdw11, cdw12, cdw13, 0, 0)


def pack_cqe(cid: int, sqid: int, sqhd: int, status: int, phase: int, dw0: int = 0) -> bytes:
    return CQE.pack(dw0, 0, sqhd, sqid, cid, (status & 0x7FFF) << 1 | (phase & 1))


def prp_segments(prp1: int, prp2: int, length: int,
                 read_list: Callable[[int, int], bytes | None]) -> list[tuple[int, int]] | None:
    """The (address, length) runs a PRP pair describes for a transfer of ``length`` bytes.

    4.3: PRP1 may have a page offset; the rest are page aligned. Up to two pages PRP2 is the
    second page; beyond, PRP2 points to a PRP list whose last entry chains to the next list
    page. ``read_list(addr, n)`` fetches list memory by DMA; None (a DMA fault) returns None.
    """
    first = min(length, PAGE - (prp1 & (PAGE - 1)))
    segs = [(prp1, first)]
    left = length - first
    if left <= 0:
        return segs
    if left <= PAGE:
        segs.append((prp2, left))
        return segs
    npages = -(-left // PAGE)
    list_addr = prp2
    while npages:
        room = (PAGE - (list_addr & (PAGE - 1))) // 8
        take = npages if npages <= room else room - 1  # last slot of a full page chains on
        raw = read_list(list_addr, 8 * (take + (0 if npages <= room else 1)))
        if raw is None:
            return None
        entries = struct.unpack(f"<{len(raw) // 8}Q", raw)
        for addr in entries[:take]:
            n = PAGE if left > PAGE else left
            segs.append((addr, n))
            left -= n
        npages -= take
        if npages:
            list_addr = entries[take]
    return segs


def _ascii(text: str, n: int) -> bytes:
    return text.encode("ascii")[:n].ljust(n, b" ")


def identify_controller(*, vid: int, ssvid: int, sn: str, mn: str, fr: str, mdts: int,
                        nn: int, max_queues: int) -> bytes:
    """The 4096-byte Identify Controller data structure (5.17.2.1), fields we model."""
    data = bytearray(4096)
    struct.pack_into("<HH", data, 0, vid, ssvid)
    data[4:24] = _ascii(sn, 20)
    data[24:64] = _ascii(mn, 40)
    data[64:72] = _ascii(fr, 8)
    data[77] = mdts  # max transfer = 2^MDTS pages
    struct.pack_into("<I", data, 80, 0x0002_0000)  # VER
    data[512] = 6 << 4 | 6  # SQES: max and required 2^6 = 64 bytes
    data[513] = 4 << 4 | 4  # CQES: 2^4 = 16 bytes
    struct.pack_into("<I", data, 516, nn)
    struct.pack_into("<H", data, 514, max_queues)  # MAXCMD (used as a hint)
    return bytes(data)


def identify_namespace(*, nsze: int, lba_shift: int) -> bytes:
    """The 4096-byte Identify Namespace data structure (NVM CS 4.1.5.1): NSZE, NCAP, NUSE,
    NLBAF = 0, FLBAS = 0 and LBAF0 with LBADS = ``lba_shift``."""
    data = bytearray(4096)
    struct.pack_into("<QQQ", data, 0, nsze, nsze, nsze)
    data[25] = 0  # NLBAF (0-based: one format)
    data[26] = 0  # FLBAS: format 0
    struct.pack_into("<I", data, 128, lba_shift << 16)  # LBAF0: MS=0, LBADS, RP=0
    return bytes(data)


def parse_identify_namespace(data: bytes) -> tuple[int, int]:
    """(NSZE, LBA size in bytes) from Identify Namespace data."""
    nsze = struct.unpack_from("<Q", data, 0)[0]
    fmt = data[26] & 0xF
    lbaf = struct.unpack_from("<I", data, 128 + 4 * fmt)[0]
    return nsze, 1 << ((lbaf >> 16) & 0xFF)
