"""Who can really reach whom peer-to-peer, and where Linux's IOMMU groups understate it.

ACS is an egress control applied where a request *enters* a port, so reachability is
directional and is not what the group algorithm computes: a switch downstream port without
ACS lets the devices below it write into the BARs of devices below its ACS-protected
siblings, while Linux still gives those siblings groups of their own; `pcie_acs_override`
hides every missing ACS; Direct Translated P2P lets translated (ATS) requests bypass
redirection. This module enumerates, for every function, the peer BARs its requests reach
without passing the root complex, using the same `Fabric` the simulator routes with, and
lists each reachable pair whose two ends Linux puts in different groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from passthru.analysis.acs import AcsOverride
from passthru.analysis.groups import IommuGroup, compute_iommu_groups, group_map
from passthru.hw.pci.device import Bar, PciBus, PciFunction
from passthru.hw.pci.fabric import AddressType, Fabric, MemRequest, RouteKind
from passthru.hw.pci.topology import Topology


@dataclass(frozen=True)
class PeerPath:
    """`source` reaches `target`'s BAR directly; `via` names the bridges crossed."""

    source: PciFunction
    target: PciFunction
    bar: Bar
    at: AddressType
    via: tuple[PciFunction, ...]

    def describe(self) -> str:
        kind = "translated" if self.at == AddressType.TRANSLATED else "untranslated"
        via = " -> ".join(p.bdf for p in self.via) or "inside the device"
        return (f"{self.source.bdf} -> {self.target.bdf} BAR{self.bar.index} "
                f"({kind}, via {via})")


@dataclass(frozen=True)
class Understatement:
    path: PeerPath
    source_group: int
    target_group: int

    def describe(self) -> str:
        return (f"group {self.source_group} member {self.path.source.bdf} can write "
                f"{self.path.target.bdf} (group {self.target_group}) peer-to-peer: "
                f"{self.path.describe()}")


def _bar_owners(fn: PciFunction) -> Iterator[PciFunction]:
    """`fn` and everything below it (VFs on virtual buses included) that has a BAR."""
    if fn.bars and fn.subordinate is None:
        yield fn
    if fn.subordinate is not None:
        yield from _bus_owners(fn.subordinate)


def _bus_owners(bus: PciBus) -> Iterator[PciFunction]:
    for dev in bus.devices:
        yield from _bar_owners(dev)
    for child in bus.children:
        if child.is_virtual:
            yield from _bus_owners(child)


def _candidate_levels(src: PciFunction) -> Iterator[PciFunction]:
    """Every function or bridge that could claim a request of `src` on its way up."""
    bus = src.bus
    hop: PciFunction | None = src
    while bus is not None:
        for dev in bus.devices:
            if dev is not hop:
                yield dev
        for child in bus.children:
            if child.is_virtual:
                for dev in child.devices:
                    if dev is not hop:
                        yield dev
        if bus.self_ is None:
            if bus.parent is None:
                return
            bus = bus.parent
            continue
        hop = bus.self_
        bus = hop.bus


def reachable_peers(fabric: Fabric, src: PciFunction,
                    at: AddressType = AddressType.UNTRANSLATED) -> list[PeerPath]:
    """Every peer BAR that a write from `src` reaches without the root complex."""
    paths: list[PeerPath] = []
    seen: set[int] = set()
    for cand in _candidate_levels(src):
        for owner in _bar_owners(cand):
            if id(owner) in seen or owner is src:
                continue
            seen.add(id(owner))
            for bar in owner.bars:
                if bar.address is None:
                    continue
                out = fabric.route(src, MemRequest(src.rid, bar.address, 4, True, at))
                if out.kind is RouteKind.PEER and out.target is owner:
                    paths.append(PeerPath(src, owner, bar, at, out.ports))
    return paths


@dataclass
class P2PReport:
    groups: list[IommuGroup]
    paths: list[PeerPath]
    understatements: list[Understatement]


def p2p_report(topology: Topology, override: AcsOverride | None = None) -> P2PReport:
    """Reachability for every function (translated requests too, where ATS exists), and the
    pairs that cross Linux's group boundaries."""
    groups = compute_iommu_groups(topology, override)
    gid = group_map(groups)
    fabric = Fabric(topology)
    paths: list[PeerPath] = []
    for fn in topology.functions():
        if fn.subordinate is not None:
            continue  # bridges do not master DMA in this model
        paths.extend(reachable_peers(fabric, fn))
        if fn.config.find_ext_capability(0x000F):  # ATS: translated requests are possible
            known = {(p.target.bdf, p.bar.index) for p in paths if p.source is fn}
            paths.extend(p for p in reachable_peers(fabric, fn, AddressType.TRANSLATED)
                         if (p.target.bdf, p.bar.index) not in known)
    under = [Understatement(p, gid[p.source.bdf], gid[p.target.bdf]) for p in paths
             if gid[p.source.bdf] != gid[p.target.bdf]]
    return P2PReport(groups, paths, under)
