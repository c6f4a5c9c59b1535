"""NVMe controller registers (BAR0) as data, and one generic accessor.

Follows NVM Express Base Specification 2.0, section 3.1.3 "Controller Properties" (register
offsets, widths, reset values) and 3.1.3.x field layouts. Doorbells start at 0x1000 with
stride ``4 << CAP.DSTRD`` (3.1.3.11 SQyTDBL, 3.1.3.12 CQyHDBL). The MSI-X table and PBA
live in BAR0 too (at ``MSIX_TABLE`` / ``MSIX_PBA``), as on many real controllers.

Left out: CMBLOC/CMBSZ, BPINFO, PMRCAP and the other optional properties (they read as 0),
NSSR (subsystem reset), and 8-byte accesses split into two 4-byte halves on old hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

BAR0_SIZE = 0x4000
DOORBELL_BASE = 0x1000
MSIX_TABLE = 0x2000  # 16 bytes per entry: addr lo, addr hi, data, vector control
MSIX_PBA = 0x3000
MSIX_ENTRY = 16
MSIX_VECTOR_MASKED = 1  # vector control bit 0


class Cc(IntFlag):
    """CC (3.1.3.5): EN, and the SHN field bits (normal = 01b, abrupt = 10b)."""

    EN = 1 << 0
    SHN_NORMAL = 1 << 14
    SHN_ABRUPT = 1 << 15


CC_CSS_SHIFT, CC_MPS_SHIFT, CC_AMS_SHIFT = 4, 7, 11
CC_IOSQES_SHIFT, CC_IOCQES_SHIFT = 16, 20
CC_SHN_MASK = 3 << 14


class Csts(IntFlag):
    """CSTS (3.1.3.6): RDY, CFS, SHST (00 normal, 01 occurring, 10 complete), NSSRO, PP."""

    RDY = 1 << 0
    CFS = 1 << 1
    SHST_OCCURRING = 1 << 2
    SHST_COMPLETE = 1 << 3
    NSSRO = 1 << 4
    PP = 1 << 5


CSTS_SHST_MASK = 3 << 2


@dataclass(frozen=True, slots=True)
class RegSpec:
    """One register: writable bits ``rw``, write-1-to-clear bits ``w1c``; the rest read-only."""

    name: str
    offset: int
    width: int  # bytes
    reset: int = 0
    rw: int = 0
    w1c: int = 0
    section: str = ""
    fields: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (lsb, width)


def cap_value(mqes: int, *, timeout_500ms: int = 20, dstrd: int = 0) -> int:
    """CAP (3.1.3.1): MQES, CQR=1, TO, DSTRD, CSS bit 0 (NVM command set), MPSMIN=MPSMAX=0."""
    return ((mqes & 0xFFFF) | 1 << 16 | (timeout_500ms & 0xFF) << 24 | (dstrd & 0xF) << 32
            | 1 << 37)


def register_table(mqes: int) -> tuple[RegSpec, ...]:
    """The controller property table for a controller whose queues hold ``mqes + 1``."""
    return (
        RegSpec("CAP", 0x00, 8, cap_value(mqes), section="3.1.3.1",
                fields={"MQES": (0, 16), "CQR": (16, 1), "TO": (24, 8), "DSTRD": (32, 4),
                        "CSS": (37, 8), "MPSMIN": (48, 4), "MPSMAX": (52, 4)}),
        RegSpec("VS", 0x08, 4, 0x0002_0000, section="3.1.3.2",
                fields={"TER": (0, 8), "MNR": (8, 8), "MJR": (16, 16)}),
        RegSpec("INTMS", 0x0C, 4, 0, section="3.1.3.3"),  # MSI-X in use: undefined, reads 0
        RegSpec("INTMC", 0x10, 4, 0, section="3.1.3.4"),
        RegSpec("CC", 0x14, 4, 0, rw=0x00FF_FFF1, section="3.1.3.5",
                fields={"EN": (0, 1), "CSS": (4, 3), "MPS": (7, 4), "AMS": (11, 3),
                        "SHN": (14, 2), "IOSQES": (16, 4), "IOCQES": (20, 4)}),
        RegSpec("CSTS", 0x1C, 4, 0, w1c=Csts.NSSRO, section="3.1.3.6",
                fields={"RDY": (0, 1), "CFS": (1, 1), "SHST": (2, 2), "NSSRO": (4, 1)}),
        RegSpec("NSSR", 0x20, 4, 0, section="3.1.3.7"),
        RegSpec("AQA", 0x24, 4, 0, rw=0x0FFF_0FFF, section="3.1.3.8",
                fields={"ASQS": (0, 12), "ACQS": (16, 12)}),
        RegSpec("ASQ", 0x28, 8, 0, rw=0xFFFF_FFFF_FFFF_F000, section="3.1.3.9"),
        RegSpec("ACQ", 0x30, 8, 0, rw=0xFFFF_FFFF_FFFF_F000, section="3.1.3.10"),
    )


class RegisterFile:
    """Applies a register table: reset values, rw and w1c masks, sub-register accesses.

    ``read(offset, size)`` and ``write(offset, value, size)`` accept any naturally placed
    access inside one register (a 4-byte access to half of CAP, for example). Offsets that
    name no register read as 0 and ignore writes (reserved properties, 3.1.3).
    """

    def __init__(self, table: tuple[RegSpec, ...]) -> None:
        self.table = table
        self.by_name = {r.name: r for r in table}
        self._at: dict[int, RegSpec] = {}
        for r in table:
            for off in range(r.offset, r.offset + r.width):
                self._at[off] = r
        self.values: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        self.values = {r.name: r.reset for r in self.table}

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def __setitem__(self, name: str, value: int) -> None:
        """The device's own update (no masks applied). Values are kept as plain ints: an
        IntFlag operand (``Csts.RDY``) would make every later ``&`` build a flag object."""
        self.values[name] = int(value) & ((1 << (8 * self.by_name[name].width)) - 1)

    def field(self, reg: str, name: str) -> int:
        lsb, width = self.by_name[reg].fields[name]
        return (self.values[reg] >> lsb) & ((1 << width) - 1)

    def spec_at(self, offset: int) -> RegSpec | None:
        return self._at.get(offset)

    def read(self, offset: int, size: int) -> int:
        r = self._at.get(offset)
        if r is None:
            return 0
        shift = 8 * (offset - r.offset)
        return (self.values[r.name] >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, value: int, size: int) -> RegSpec | None:
        """A host write; returns the register it touched (None: reserved, ignored)."""
        r = self._at.get(offset)
        if r is None:
            return None
        shift = 8 * (offset - r.offset)
        lane = ((1 << (8 * size)) - 1) << shift
        value = (value << shift) & lane
        old = self.values[r.name]
        new = (old & ~(r.rw & lane)) | (value & r.rw)
        new &= ~(value & r.w1c)
        self.values[r.name] = int(new)
        return r

    def save(self) -> dict[str, int]:
        return dict(self.values)

    def load(self, values: dict[str, int]) -> None:
        self.values = dict(values)


class DoorbellKind(IntEnum):
    SQ_TAIL = 0
    CQ_HEAD = 1


def doorbell_offset(qid: int, kind: DoorbellKind, dstrd: int = 0) -> int:
    """SQyTDBL = 0x1000 + (2y) * (4 << DSTRD); CQyHDBL = 0x1000 + (2y + 1) * (4 << DSTRD)."""
    return DOORBELL_BASE + (2 * qid + int(kind)) * (4 << dstrd)


def decode_doorbell(offset: int, dstrd: int = 0) -> tuple[int, DoorbellKind] | None:
    """(qid, kind) of a doorbell offset, or None outside the doorbell range."""
    if not DOORBELL_BASE <= offset < MSIX_TABLE:
        return None
    index, rem = divmod(offset - DOORBELL_BASE, 4 << dstrd)
    if rem:
        return None
    return index >> 1, DoorbellKind(index & 1)
