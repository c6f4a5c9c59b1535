"""Config space, enumeration, SR-IOV arithmetic, BAR and window assignment."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from pci_builders import FULL, switch_host
from random_topology import topologies

from passthru.errors import ConfigError
from passthru.hw.pci.config_space import ConfigSpace
from passthru.hw.pci.device import PciFunction, SriovSpec
from passthru.hw.pci.ids import format_rid, parse_bdf, pci_devfn
from passthru.hw.pci.regs import (
    PCI_ACS_CTRL,
    PCI_HEADER_TYPE,
    PCI_SECONDARY_BUS,
    PCI_SUBORDINATE_BUS,
    AcsFlags,
    CapId,
    ExtCapId,
)
from passthru.hw.pci.topology import Topology


def test_capability_list_walks_like_pci_find_capability():
    cfg = ConfigSpace()
    pm = cfg.add_capability(CapId.PM, 8)
    msi = cfg.add_capability(CapId.MSI, 0x18)
    exp = cfg.add_capability(CapId.EXP, 0x3C)
    assert (pm, msi, exp) == (0x40, 0x48, 0x60)
    assert cfg.find_capability(CapId.EXP) == exp and cfg.find_capability(CapId.MSIX) == 0
    acs = cfg.add_ext_capability(ExtCapId.ACS, 0xC)
    sriov = cfg.add_ext_capability(ExtCapId.SRIOV, 0x40)
    assert acs == 0x100 and cfg.find_ext_capability(ExtCapId.SRIOV) == sriov
    assert cfg.read32(acs) >> 20 == sriov  # next pointer in the extended header
    assert [c for c, _ in cfg.ext_capabilities()] == [ExtCapId.ACS, ExtCapId.SRIOV]


def test_looped_capability_list_terminates():
    cfg = ConfigSpace()
    a = cfg.add_capability(CapId.PM, 8)
    cfg.data[a + 1] = a  # the list points at itself
    assert cfg.find_capability(CapId.MSI) == 0


def test_writes_honour_the_writable_mask():
    t = switch_host([FULL])
    port = t.find("02:00.0")
    # Only implemented ACS controls are writable: set a bit the port does not implement.
    port.config.write(port.acs_cap_pos + PCI_ACS_CTRL, 2, 0xFFFF)
    assert port.acs_ctl() == AcsFlags(0x5F)  # EC not implemented by linux_default()


def test_bus_numbers_are_depth_first_and_written_to_config():
    t = switch_host([FULL, FULL, FULL])
    rp = t.find("00:01.0")
    assert (rp.config.read8(PCI_SECONDARY_BUS), rp.config.read8(PCI_SUBORDINATE_BUS)) == (1, 5)
    ports = [t.find(f"02:0{i}.0") for i in range(3)]
    assert [(p.secondary_bus, p.subordinate_bus) for p in ports] == [(3, 3), (4, 4), (5, 5)]


def test_multifunction_bit_is_set_on_every_function_of_a_shared_slot():
    t = Topology()
    rp = t.add_root_port(1)
    a = t.add_endpoint(rp, 0, 0)
    b = t.add_endpoint(rp, 0, 2)
    lone = t.add_endpoint(t.add_root_port(2), 0, 0)
    t.enumerate()
    assert a.multifunction and b.multifunction and not lone.multifunction
    assert a.config.read8(PCI_HEADER_TYPE) & 0x80


def test_vf_routing_ids_follow_offset_and_stride():
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    pf = t.add_endpoint(rp, 0, bars=[0x4000], sriov=SriovSpec(
        total_vfs=8, num_vfs=4, vf_offset=0x80, vf_stride=2, vf_device_id=0x10CA,
        vf_bars=(0x4000, 0x4000)))
    t.enumerate()
    assert [format_rid(v.rid) for v in pf.virtfns] == ["01:10.0", "01:10.2", "01:10.4",
                                                       "01:10.6"]
    assert all(v.device_id == 0x10CA and v.physfn is pf for v in pf.virtfns)
    # Each VF's BAR is its slice of the PF's SR-IOV BAR region.
    region = pf.vf_bars[0]
    assert [v.bars[0].address - region.address for v in pf.virtfns] == [0, 0x4000, 0x8000,
                                                                        0xC000]


def test_duplicate_function_is_refused():
    t = Topology()
    rp = t.add_root_port(1)
    t.add_endpoint(rp, 0, 0)
    with pytest.raises(ConfigError, match="two functions"):
        t.add_endpoint(rp, 0, 0)


def test_endpoint_cannot_parent_devices():
    t = Topology()
    ep = t.add_endpoint(t.add_root_port(1), 0)
    with pytest.raises(ConfigError, match="not a bridge"):
        t.add_endpoint(ep, 0)


def test_find_and_parse():
    t = switch_host([FULL])
    assert t.find("0000:03:00.0").bdf == "0000:03:00.0"
    with pytest.raises(ConfigError, match="no PCI function at 0000:09:00.0"):
        t.find("09:00.0")
    with pytest.raises(ConfigError, match="not a PCI address"):
        t.find("nonsense")
    assert parse_bdf("0001:0a:1f.7") == (1, 0x0A, pci_devfn(0x1F, 7))


def test_repr_names_the_function():
    t = switch_host([FULL])
    assert repr(t.find("03:00.0")) == "<PciFunction 0000:03:00.0 ENDPOINT 8086:0000>"
    assert "unattached" in repr(PciFunction(slot=1))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_every_bar_sits_inside_every_window_above_it(topo):
    addresses = []
    for fn in topo.functions():
        for bar in fn.bars:
            assert bar.address is not None and bar.address % bar.size == 0
            addresses.append((bar.address, bar.address + bar.size - 1))
            node = fn.bus.self_ if fn.bus.self_ is not None else (
                fn.bus.parent.self_ if fn.bus.parent is not None else None)
            while node is not None:
                assert node.window_contains(bar.address), (fn, node)
                node = node.bus.self_
        if fn.subordinate is not None:
            sec, sub = fn.secondary_bus, fn.subordinate_bus
            assert fn.bus_number < sec <= sub
    addresses.sort()  # BARs never overlap
    assert all(a[1] < b[0] for a, b in zip(addresses, addresses[1:], strict=False))
