"""Routing IDs: bus/device/function arithmetic and the text forms Linux prints."""

from __future__ import annotations

import re

_BDF_RE = re.compile(r"^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-1]?[0-9a-fA-F])\.([0-7])$")


def pci_devfn(slot: int, func: int) -> int:
    """PCI_DEVFN(slot, func)."""
    return ((slot & 0x1F) << 3) | (func & 0x07)


def pci_slot(devfn: int) -> int:
    """PCI_SLOT(devfn)."""
    return (devfn >> 3) & 0x1F


def pci_func(devfn: int) -> int:
    """PCI_FUNC(devfn)."""
    return devfn & 0x07


def pci_devid(bus: int, devfn: int) -> int:
    """PCI_DEVID(bus, devfn): the 16-bit requester ID."""
    return ((bus & 0xFF) << 8) | (devfn & 0xFF)


def format_bdf(domain: int, bus: int, devfn: int) -> str:
    """`dddd:bb:dd.f`, as in /sys/bus/pci/devices."""
    return f"{domain:04x}:{bus:02x}:{pci_slot(devfn):02x}.{pci_func(devfn)}"


def format_rid(rid: int) -> str:
    """`bb:dd.f` for a 16-bit requester ID."""
    return f"{rid >> 8:02x}:{pci_slot(rid & 0xFF):02x}.{pci_func(rid & 0xFF)}"


def parse_bdf(text: str) -> tuple[int, int, int]:
    """Parse `[dddd:]bb:dd.f` into (domain, bus, devfn); ValueError names the text."""
    m = _BDF_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a PCI address (want [dddd:]bb:dd.f): {text!r}")
    domain = int(m.group(1), 16) if m.group(1) else 0
    slot = int(m.group(3), 16)
    if slot > 0x1F:
        raise ValueError(f"device number 0x{slot:x} is beyond 0x1f in {text!r}")
    return domain, int(m.group(2), 16), pci_devfn(slot, int(m.group(4)))
