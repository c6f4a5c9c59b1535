"""IOMMU groups exactly as Linux computes them: drivers/iommu/iommu.c `pci_device_group()`
with `get_pci_alias_or_group()`, `get_pci_alias_group()`, `get_pci_function_alias_group()`,
over drivers/pci/search.c `pci_for_each_dma_alias()`.

Devices are probed in Linux's device_add order (`Topology.functions()`), and a group is
numbered when it is allocated, as `iommu_group_alloc()` does with its IDA. The result depends
only on the topology, ACS registers, quirks and the optional `pcie_acs_override` what-if.
Left out: `pci_real_dma_dev()` (VMD), PCI_DEV_FLAGS_BRIDGE_XLATE_ROOT, non-PCI devices.
"""

from __future__ import annotations

from dataclasses import dataclass

from passthru.analysis.acs import REQ_ACS_FLAGS, AcsOverride, pci_acs_enabled, pci_acs_path_enabled
from passthru.hw.pci.device import PciFunction
from passthru.hw.pci.ids import pci_devid
from passthru.hw.pci.regs import PcieType
from passthru.hw.pci.topology import Topology


@dataclass
class IommuGroup:
    id: int
    devices: list[PciFunction]

    def bdfs(self) -> list[str]:
        return [d.bdf for d in self.devices]

    def __repr__(self) -> str:
        return f"<IommuGroup {self.id}: {', '.join(self.bdfs())}>"


def pci_for_each_dma_alias(pdev: PciFunction):  # noqa: ANN201 - generator of (dev, alias)
    """drivers/pci/search.c pci_for_each_dma_alias(): yields (device, alias requester ID)."""
    assert pdev.bus is not None
    yield pdev, pdev.rid
    for devfn in sorted(pdev.dma_alias_devfns):
        yield pdev, pci_devid(pdev.bus.number, devfn)
    bus = pdev.bus
    while not bus.is_root:
        tmp = bus.self_
        if tmp is None:  # skip virtual buses
            assert bus.parent is not None
            bus = bus.parent
            continue
        if tmp.is_pcie:
            if tmp.pcie_type == PcieType.PCI_BRIDGE:
                # PCIe-to-PCI bridges alias downstream devices as (secondary bus, 00.0).
                yield tmp, pci_devid(tmp.secondary_bus or 0, 0)
            elif tmp.pcie_type == PcieType.PCIE_BRIDGE:
                yield tmp, tmp.rid
        elif tmp.pcie_bridge_alias:  # a PCIe-to-PCI bridge without its PCIe capability
            yield tmp, pci_devid(tmp.secondary_bus or 0, 0)
        else:
            yield tmp, tmp.rid  # a conventional bridge takes ownership
        assert tmp.bus is not None
        bus = tmp.bus


def _are_dma_aliases(a: PciFunction, b: PciFunction) -> bool:
    """pci_devs_are_dma_aliases()."""
    return b.devfn in a.dma_alias_devfns or a.devfn in b.dma_alias_devfns


class _GroupBuilder:
    def __init__(self, override: AcsOverride | None) -> None:
        self.override = override
        self.group_of: dict[int, IommuGroup] = {}  # id(PciFunction) -> group
        self.groups: list[IommuGroup] = []

    def acs(self, dev: PciFunction) -> bool:
        return pci_acs_enabled(dev, REQ_ACS_FLAGS, self.override)

    def get(self, dev: PciFunction) -> IommuGroup | None:
        return self.group_of.get(id(dev))

    def function_alias_group(self, pdev: PciFunction, devfns: set[int]) -> IommuGroup | None:
        """get_pci_function_alias_group()."""
        if not pdev.multifunction or self.acs(pdev):
            return None
        assert pdev.bus is not None
        for tmp in pdev.bus.devices:  # for_each_pci_dev() restricted to pdev's bus
            if tmp is pdev or tmp.slot != pdev.slot or self.acs(tmp):
                continue
            group = self.alias_group(tmp, devfns)
            if group is not None:
                return group
        return None

    def alias_group(self, pdev: PciFunction, devfns: set[int]) -> IommuGroup | None:
        """get_pci_alias_group(); `devfns` stops alias loops."""
        if pdev.devfn in devfns:
            return None
        devfns.add(pdev.devfn)
        group = self.get(pdev)
        if group is not None:
            return group
        assert pdev.bus is not None
        for tmp in pdev.bus.devices:
            if tmp is pdev or not _are_dma_aliases(pdev, tmp):
                continue
            group = self.alias_group(tmp, devfns)
            if group is not None:
                return group
            group = self.function_alias_group(tmp, devfns)
            if group is not None:
                return group
        return None

    def device_group(self, dev: PciFunction) -> IommuGroup:
        """pci_device_group()."""
        pdev = dev
        for alias_dev, _alias in pci_for_each_dma_alias(dev):  # get_pci_alias_or_group()
            pdev = alias_dev
            group = self.get(alias_dev)
            if group is not None:
                return group
        bus = pdev.bus
        assert bus is not None
        while not bus.is_root:
            if bus.self_ is None:
                assert bus.parent is not None
                bus = bus.parent
                continue
            if pci_acs_path_enabled(bus.self_, None, REQ_ACS_FLAGS, self.override):
                break
            pdev = bus.self_
            group = self.get(pdev)
            if group is not None:
                return group
            assert bus.parent is not None
            bus = bus.parent
        devfns: set[int] = set()
        group = self.alias_group(pdev, devfns)
        if group is not None:
            return group
        group = self.function_alias_group(pdev, devfns)
        if group is not None:
            return group
        group = IommuGroup(len(self.groups), [])
        self.groups.append(group)
        return group


def compute_iommu_groups(topology: Topology,
                         override: AcsOverride | None = None) -> list[IommuGroup]:
    """Probe every function in Linux's order and return the groups in allocation order."""
    builder = _GroupBuilder(override)
    for dev in topology.functions():
        group = builder.device_group(dev)
        group.devices.append(dev)
        builder.group_of[id(dev)] = group
    for group in builder.groups:
        group.devices.sort(key=lambda d: (d.domain, d.bus_number, d.devfn))
    return builder.groups


def group_map(groups: list[IommuGroup]) -> dict[str, int]:
    """BDF -> group id."""
    return {d.bdf: g.id for g in groups for d in g.devices}
