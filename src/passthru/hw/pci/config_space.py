"""PCI configuration space: 4 KiB of registers with a real capability list.

Follows PCI Local Bus 3.0 6.7 (capability list at 0x34, linked by next pointers) and PCIe
base spec 7.6 (extended capabilities from 0x100, 32-bit headers: ID, version, next). Writes
through `write*` honour a writable mask (read-only bits keep their value), as QEMU's
`pci_default_write_config()` does with `wmask`; `set*` initialise registers as hardware
reset would. Left out: write-1-to-clear status bits and config-space access latency.
"""

from __future__ import annotations

from passthru.hw.pci.regs import (
    CONFIG_SPACE_SIZE,
    PCI_CAPABILITY_LIST,
    PCI_CFG_SPACE_SIZE,
    PCI_STATUS,
    PCI_STATUS_CAP_LIST,
)

_STD_CAP_START = 0x40
_EXT_CAP_START = PCI_CFG_SPACE_SIZE


class ConfigSpace:
    """One function's configuration space."""

    __slots__ = ("data", "wmask", "_std_end", "_ext_end", "_last_std", "_last_ext")
    # Bumped by every register write (``set`` and ``write``) in any function's config space:
    # a cache of routing decisions (bus numbers, windows, BARs, ACS) holds while it is equal.
    generation = 0

    def __init__(self) -> None:
        self.data = bytearray(CONFIG_SPACE_SIZE)
        self.wmask = bytearray(CONFIG_SPACE_SIZE)
        self._std_end = _STD_CAP_START
        self._ext_end = _EXT_CAP_START
        self._last_std = 0
        self._last_ext = 0

    # -- raw access -------------------------------------------------------------------------
    def read(self, offset: int, width: int) -> int:
        if offset < 0 or offset + width > CONFIG_SPACE_SIZE:
            raise IndexError(f"config offset 0x{offset:x}+{width} outside 4 KiB")
        return int.from_bytes(self.data[offset : offset + width], "little")

    def read8(self, offset: int) -> int:
        return self.data[offset]

    def read16(self, offset: int) -> int:
        d = self.data
        return d[offset] | (d[offset + 1] << 8)

    def read32(self, offset: int) -> int:
        return int.from_bytes(self.data[offset : offset + 4], "little")

    def set(self, offset: int, width: int, value: int, *, writable: int = 0) -> None:
        """Initialise a register (reset value) and its writable-bit mask."""
        if offset < 0 or offset + width > CONFIG_SPACE_SIZE:
            raise IndexError(f"config offset 0x{offset:x}+{width} outside 4 KiB")
        self.data[offset : offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(
            width, "little"
        )
        self.wmask[offset : offset + width] = writable.to_bytes(width, "little")
        ConfigSpace.generation += 1

    def write(self, offset: int, width: int, value: int) -> None:
        """A software write: only writable bits change."""
        old = self.read(offset, width)
        mask = int.from_bytes(self.wmask[offset : offset + width], "little")
        new = (old & ~mask) | (value & mask)
        self.data[offset : offset + width] = new.to_bytes(width, "little")
        ConfigSpace.generation += 1

    # -- capability lists ---------------------------------------------------------------------
    def add_capability(self, cap_id: int, size: int) -> int:
        """Append a standard capability of `size` bytes; returns its offset."""
        offset = (self._std_end + 3) & ~3
        if offset + size > PCI_CFG_SPACE_SIZE:
            raise ValueError(f"no room for capability 0x{cap_id:02x} in conventional config space")
        self.data[offset] = cap_id
        self.data[offset + 1] = 0
        if self._last_std:
            self.data[self._last_std + 1] = offset
        else:
            self.data[PCI_CAPABILITY_LIST] = offset
            self.data[PCI_STATUS] |= PCI_STATUS_CAP_LIST
        self._last_std = offset
        self._std_end = offset + size
        return offset

    def add_ext_capability(self, cap_id: int, size: int, version: int = 1) -> int:
        """Append an extended capability of `size` bytes; returns its offset."""
        offset = (self._ext_end + 3) & ~3
        if offset + size > CONFIG_SPACE_SIZE:
            raise ValueError(f"no room for extended capability 0x{cap_id:04x}")
        self.set(offset, 4, cap_id | (version << 16))
        if self._last_ext:
            hdr = self.read32(self._last_ext)
            self.set(self._last_ext, 4, (hdr & 0x000FFFFF) | (offset << 20))
        self._last_ext = offset
        self._ext_end = offset + size
        return offset

    def find_capability(self, cap_id: int) -> int:
        """pci_find_capability(): offset of the first capability `cap_id`, or 0."""
        if not self.data[PCI_STATUS] & PCI_STATUS_CAP_LIST:
            return 0
        pos = self.data[PCI_CAPABILITY_LIST] & ~3
        ttl = 48  # PCI_FIND_CAP_TTL: a looped list must not hang the walk
        while pos >= _STD_CAP_START and ttl:
            if self.data[pos] == cap_id:
                return pos
            pos = self.data[pos + 1] & ~3
            ttl -= 1
        return 0

    def find_ext_capability(self, cap_id: int) -> int:
        """pci_find_ext_capability(): offset of extended capability `cap_id`, or 0."""
        pos = _EXT_CAP_START
        ttl = (CONFIG_SPACE_SIZE - _EXT_CAP_START) // 8
        while pos and ttl:
            hdr = self.read32(pos)
            if hdr == 0:
                return 0
            if hdr & 0xFFFF == cap_id:
                return pos
            pos = hdr >> 20
            if pos < _EXT_CAP_START:
                return 0
            ttl -= 1
        return 0

    def capabilities(self) -> list[tuple[int, int]]:
        """(cap_id, offset) for every standard capability, in list order."""
        out = []
        if self.data[PCI_STATUS] & PCI_STATUS_CAP_LIST:
            pos = self.data[PCI_CAPABILITY_LIST] & ~3
            ttl = 48
            while pos >= _STD_CAP_START and ttl:
                out.append((self.data[pos], pos))
                pos = self.data[pos + 1] & ~3
                ttl -= 1
        return out

    def ext_capabilities(self) -> list[tuple[int, int]]:
        """(cap_id, offset) for every extended capability, in list order."""
        out = []
        pos = _EXT_CAP_START
        while pos >= _EXT_CAP_START:
            hdr = self.read32(pos)
            if hdr == 0:
                break
            out.append((hdr & 0xFFFF, pos))
            pos = hdr >> 20
        return out
