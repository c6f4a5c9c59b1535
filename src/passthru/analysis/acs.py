"""Linux's view of ACS isolation: `pci_acs_enabled()` and `pci_acs_path_enabled()`
(drivers/pci/pci.c), the device-specific quirks (drivers/pci/quirks.c) and the out-of-tree
`pcie_acs_override=` patch as a what-if.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passthru.errors import ConfigError
from passthru.hw.pci.device import PciFunction
from passthru.hw.pci.quirks import pci_dev_specific_acs_enabled
from passthru.hw.pci.regs import AcsFlags, PcieType

# drivers/iommu/iommu.c: isolation needs Source Validation, Request and Completion Redirect,
# and Upstream Forwarding.
REQ_ACS_FLAGS = AcsFlags.SV | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF


@dataclass(frozen=True)
class AcsOverride:
    """`pcie_acs_override=downstream,multifunction,id:vvvv:dddd` (the widely used
    out-of-tree patch): claims isolation for ports/functions that have no ACS capability."""

    downstream: bool = False
    multifunction: bool = False
    ids: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    @staticmethod
    def parse(text: str) -> AcsOverride:
        downstream = multifunction = False
        ids: set[tuple[int, int]] = set()
        for part in (p.strip() for p in text.split(",")):
            if part == "downstream":
                downstream = True
            elif part == "multifunction":
                multifunction = True
            elif part.startswith("id:"):
                try:
                    vendor, device = (int(x, 16) for x in part[3:].split(":"))
                except ValueError:
                    raise ConfigError(f"pcie_acs_override: bad id {part!r} "
                                      "(want id:vvvv:dddd)") from None
                ids.add((vendor, device))
            else:
                raise ConfigError(f"pcie_acs_override: unknown option {part!r} (want "
                                  "downstream, multifunction or id:vvvv:dddd)")
        return AcsOverride(downstream, multifunction, frozenset(ids))

    def __bool__(self) -> bool:
        return self.downstream or self.multifunction or bool(self.ids)

    def applies(self, dev: PciFunction) -> bool:
        """pcie_acs_overrides(): never for conventional devices or ones with an ACS cap."""
        if not dev.is_pcie or dev.acs_cap_pos:
            return False
        if (dev.vendor_id, dev.device_id) in self.ids:
            return True
        if dev.pcie_type in (PcieType.DOWNSTREAM, PcieType.ROOT_PORT):
            return self.downstream
        if dev.pcie_type in (PcieType.ENDPOINT, PcieType.UPSTREAM, PcieType.LEG_END,
                             PcieType.RC_END):
            return self.multifunction and dev.multifunction
        return False


def pci_acs_flags_enabled(dev: PciFunction, acs_flags: AcsFlags) -> bool:
    """Capabilities a port does not implement count as hard-wired enabled (except EC)."""
    regs = dev.acs_registers()
    if regs is None:
        return False
    cap, ctrl = regs
    acs_flags &= AcsFlags(cap & 0x7F) | AcsFlags.EC
    return (ctrl & acs_flags) == acs_flags


def pci_acs_enabled(dev: PciFunction, acs_flags: AcsFlags,
                    override: AcsOverride | None = None) -> bool:
    """drivers/pci/pci.c pci_acs_enabled()."""
    ret = pci_dev_specific_acs_enabled(dev, acs_flags)
    if ret < 0 and override and override.applies(dev):
        ret = 1  # the override patch appends its quirk to pci_dev_acs_enabled[]
    if ret >= 0:
        return ret > 0
    if not dev.is_pcie:
        return False  # conventional PCI shares the bus: never isolated
    t = dev.pcie_type
    if t in (PcieType.PCIE_BRIDGE, PcieType.PCI_BRIDGE, PcieType.RC_EC):
        return False
    if t in (PcieType.DOWNSTREAM, PcieType.ROOT_PORT):
        return pci_acs_flags_enabled(dev, acs_flags)
    if t in (PcieType.ENDPOINT, PcieType.UPSTREAM, PcieType.LEG_END, PcieType.RC_END):
        if dev.multifunction:
            return pci_acs_flags_enabled(dev, acs_flags)
    return True  # PCIe 6.12.1.3: single-function devices need no ACS


def pci_acs_path_enabled(start: PciFunction, end: PciFunction | None, acs_flags: AcsFlags,
                         override: AcsOverride | None = None) -> bool:
    """drivers/pci/pci.c pci_acs_path_enabled(): every device from `start` up to `end`."""
    parent = start
    while True:
        pdev = parent
        if not pci_acs_enabled(pdev, acs_flags, override):
            return False
        assert pdev.bus is not None
        if pdev.bus.is_root:
            return end is None
        parent = pdev.bus.self_  # type: ignore[assignment]
        if parent is None:  # a virtual bus: Linux's bus->self is NULL here too
            return end is None
        if pdev is end:
            return True
