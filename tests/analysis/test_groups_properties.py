"""Properties over random hierarchies: groups partition the functions, aliases stay together,
and the P2P analysis agrees with the fabric for every (source, target BAR) pair."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from random_topology import topologies

from passthru.analysis.acs import AcsOverride
from passthru.analysis.groups import compute_iommu_groups, group_map
from passthru.analysis.p2p import reachable_peers
from passthru.hw.pci.fabric import AddressType, Fabric, MemRequest, RouteKind
from passthru.hw.pci.regs import PcieType

_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_SETTINGS
@given(topologies())
def test_every_function_lands_in_exactly_one_group(topo):
    functions = topo.functions()
    groups = compute_iommu_groups(topo)
    seen = [d.bdf for g in groups for d in g.devices]
    assert sorted(seen) == sorted(f.bdf for f in functions)
    assert len(seen) == len(set(seen))
    assert all(g.devices for g in groups)


@_SETTINGS
@given(topologies())
def test_conventional_devices_share_their_bridge_group_and_aliases_stay_together(topo):
    gid = group_map(compute_iommu_groups(topo))
    for fn in topo.functions():
        above = fn.bus.self_
        if above is not None and above.pcie_type == PcieType.PCI_BRIDGE:
            assert gid[fn.bdf] == gid[above.bdf]
        for devfn in fn.dma_alias_devfns:
            for other in fn.bus.devices:
                if other.devfn == devfn:
                    assert gid[other.bdf] == gid[fn.bdf]


@_SETTINGS
@given(topologies())
def test_override_only_ever_splits_groups(topo):
    plain = group_map(compute_iommu_groups(topo))
    split = group_map(compute_iommu_groups(topo, AcsOverride.parse("downstream,multifunction")))
    for a in plain:
        for b in plain:
            if split[a] == split[b]:
                assert plain[a] == plain[b]


@_SETTINGS
@given(topologies())
def test_p2p_analysis_agrees_with_the_fabric_for_every_pair(topo):
    fabric = Fabric(topo)
    functions = topo.functions()
    for at in (AddressType.UNTRANSLATED, AddressType.TRANSLATED):
        for src in functions:
            if src.subordinate is not None:
                continue
            claimed = {(p.target.bdf, p.bar.index) for p in reachable_peers(fabric, src, at)}
            for dst in functions:
                for bar in dst.bars:
                    out = fabric.route(src, MemRequest(src.rid, bar.address + 4, 4, True, at))
                    direct = out.kind is RouteKind.PEER and out.target is dst and dst is not src
                    assert direct == ((dst.bdf, bar.index) in claimed), (src, dst, out)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_group_computation_is_deterministic(topo):
    first = [g.bdfs() for g in compute_iommu_groups(topo)]
    assert first == [g.bdfs() for g in compute_iommu_groups(topo)]
