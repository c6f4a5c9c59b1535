"""IOMMU groups for the textbook topologies, checked against what Linux prints for them."""

from __future__ import annotations

import pytest
from pci_builders import FULL, gpu_with_audio, switch_host

from passthru.analysis.acs import AcsOverride
from passthru.analysis.groups import compute_iommu_groups
from passthru.errors import ConfigError
from passthru.hw.pci.device import AcsSpec, Bar, SriovSpec
from passthru.hw.pci.regs import AcsFlags
from passthru.hw.pci.topology import Topology


def members(topo: Topology, override: AcsOverride | None = None) -> list[list[str]]:
    return [g.bdfs() for g in compute_iommu_groups(topo, override)]


def test_gpu_and_audio_under_acsless_root_port_share_a_group_with_the_port():
    assert members(gpu_with_audio(None)) == [
        ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"]]


def test_gpu_and_audio_under_acs_root_port_form_their_own_group():
    # The functions are a multifunction device without ACS, so they stay together.
    assert members(gpu_with_audio(FULL)) == [["0000:00:01.0"], ["0000:01:00.0", "0000:01:00.1"]]


def test_root_port_with_acs_capability_but_controls_off_is_not_isolated():
    assert members(gpu_with_audio(AcsSpec.none_enabled())) == [
        ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"]]


def test_unimplemented_acs_bits_count_as_enabled():
    # Implements only SV and RR (both on): CR and UF are "hard-wired" per pci_acs_flags_enabled.
    spec = AcsSpec(cap=AcsFlags.SV | AcsFlags.RR, ctl=AcsFlags.SV | AcsFlags.RR)
    assert members(gpu_with_audio(spec)) == [["0000:00:01.0"], ["0000:01:00.0", "0000:01:00.1"]]


def _mf_nic(device_id: int, acs: AcsSpec | None) -> Topology:
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    for fn in range(2):
        t.add_endpoint(rp, 0, fn, vendor_id=0x8086, device_id=device_id, class_code=0x020000,
                       bars=[Bar(0, 0x20000, is_64=False)], acs=acs)
    return t.enumerate()


def test_multifunction_nic_with_acs_splits_per_function():
    mf_acs = AcsSpec(cap=AcsFlags.RR | AcsFlags.CR, ctl=AcsFlags.RR | AcsFlags.CR)
    assert members(_mf_nic(0x1572, mf_acs)) == [
        ["0000:00:01.0"], ["0000:01:00.0"], ["0000:01:00.1"]]


def test_multifunction_nic_without_acs_shares_one_group():
    assert members(_mf_nic(0x1572, None)) == [["0000:00:01.0"], ["0000:01:00.0", "0000:01:00.1"]]


def test_multifunction_nic_quirk_splits_an_i350_without_acs():
    # 8086:1521 (I350) is in pci_dev_acs_enabled[] with pci_quirk_mf_endpoint_acs.
    assert members(_mf_nic(0x1521, None)) == [
        ["0000:00:01.0"], ["0000:01:00.0"], ["0000:01:00.1"]]


@pytest.mark.parametrize(("vendor", "device", "split"), [
    (0x14E4, 0x16D7, True),  # Broadcom BCM57414: pci_quirk_mf_endpoint_acs
    (0x8088, 0x1001, True),  # Wangxun RP1000 (SP): pci_quirk_wangxun_nic_acs
    (0x8088, 0x0FFF, False),  # any other Wangxun function: "not enabled", not -ENOTTY
    (0x14E4, 0x165F, False),  # Broadcom BCM5720: not listed
])
def test_listed_multifunction_nics_split_and_others_do_not(vendor, device, split):
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    for fn in (0, 1):
        t.add_endpoint(rp, 0, fn, vendor_id=vendor, device_id=device, class_code=0x020000,
                       bars=[0x4000])
    t.enumerate()
    want = ([["0000:00:01.0"], ["0000:01:00.0"], ["0000:01:00.1"]] if split else
            [["0000:00:01.0"], ["0000:01:00.0", "0000:01:00.1"]])
    assert members(t) == want


def test_devices_behind_pcie_to_pci_bridge_join_the_bridge():
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    br = t.add_pcie_to_pci_bridge(rp)
    t.add_pci_device(br, 1, bars=[0x1000])
    t.add_pci_device(br, 2, bars=[0x1000])
    t.enumerate()
    assert members(t) == [["0000:00:01.0"], ["0000:01:00.0", "0000:02:01.0", "0000:02:02.0"]]


def test_switch_with_one_acsless_downstream_port():
    t = switch_host([FULL, None, FULL])
    assert members(t) == [
        ["0000:00:01.0"], ["0000:01:00.0"], ["0000:02:00.0"], ["0000:02:01.0", "0000:04:00.0"],
        ["0000:02:02.0"], ["0000:03:00.0"], ["0000:05:00.0"]]


def test_switch_without_acs_anywhere_below_acs_root_port():
    t = switch_host([None, None])
    # Each downstream port lacks ACS, so its endpoint joins the port; the ports are separate
    # because the upstream port (single function) and the root port are isolated.
    assert members(t) == [["0000:00:01.0"], ["0000:01:00.0"], ["0000:02:00.0", "0000:03:00.0"],
                          ["0000:02:01.0", "0000:04:00.0"]]


def test_acsless_root_port_swallows_the_whole_switch():
    t = switch_host([FULL, FULL], rp_acs=None)
    assert members(t) == [["0000:00:01.0", "0000:01:00.0", "0000:02:00.0", "0000:02:01.0",
                           "0000:03:00.0", "0000:04:00.0"]]


def _sriov(rp_acs: AcsSpec | None) -> Topology:
    t = Topology()
    rp = t.add_root_port(1, acs=rp_acs)
    t.add_endpoint(rp, 0, vendor_id=0x15B3, device_id=0x1017, class_code=0x020000,
                   bars=[Bar(0, 1 << 25, prefetchable=True)],
                   sriov=SriovSpec(total_vfs=4, num_vfs=3, vf_offset=1, vf_stride=1,
                                   vf_device_id=0x1018))
    return t.enumerate()


def test_sriov_vfs_under_acs_root_port_get_one_group_each():
    assert members(_sriov(FULL)) == [["0000:00:01.0"], ["0000:01:00.0"], ["0000:01:00.1"],
                                     ["0000:01:00.2"], ["0000:01:00.3"]]


def test_sriov_vfs_under_acsless_root_port_share_the_port_group():
    assert members(_sriov(None)) == [["0000:00:01.0", "0000:01:00.0", "0000:01:00.1",
                                      "0000:01:00.2", "0000:01:00.3"]]


def test_vfs_on_a_further_bus_sit_on_a_virtual_bus():
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    pf = t.add_endpoint(rp, 0, bars=[0x4000], sriov=SriovSpec(
        total_vfs=300, num_vfs=300, vf_offset=0x80, vf_stride=1, vf_device_id=0x10ED))
    t.enumerate()
    assert rp.subordinate_bus == 2  # last VF RID 0x0100 + 0x80 + 299 = 0x02ab: bus 2 reserved
    last = pf.virtfns[-1]
    assert last.bdf == "0000:02:15.3"
    assert last.bus.is_virtual and last.bus.self_ is None and last.bus.parent is pf.bus
    groups = compute_iommu_groups(t)
    assert len(groups) == 2 + 300  # root port, PF, and one per VF


def test_intel_pch_root_port_quirk_isolates_without_acs_capability():
    t = Topology()
    rp = t.add_root_port(0x1C, vendor_id=0x8086, device_id=0x8C10)
    t.add_endpoint(rp, 0, bars=[0x4000])
    t.enumerate()
    assert members(t) == [["0000:00:1c.0"], ["0000:01:00.0"]]


@pytest.mark.parametrize("device", [0x9D10, 0x9D1B, 0xA110, 0xA2EE])
def test_intel_spt_root_ports_use_the_dword_acs_control(device):
    # pci_quirk_intel_spt_pch_acs_match(): Sunrise/Union Point and 7th/8th Gen mobile ports
    # report ACS at the capability but control it at +8; lspci's +6 word reads as zero.
    t = Topology()
    rp = t.add_root_port(0x1C, vendor_id=0x8086, device_id=device,
                         acs=AcsSpec(AcsFlags.SV | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF,
                                     AcsFlags(0)))
    t.add_endpoint(rp, 0, bars=[0x4000])
    t.enumerate()
    assert members(t) == [["0000:00:1c.0"], ["0000:01:00.0"]]


def test_marvell_dma_alias_quirk_merges_functions():
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    t.add_endpoint(rp, 0, 0, vendor_id=0x1B4B, device_id=0x9230, class_code=0x010601,
                   bars=[0x800], acs=AcsSpec(AcsFlags.RR | AcsFlags.CR, AcsFlags.RR | AcsFlags.CR))
    t.add_endpoint(rp, 0, 1, vendor_id=0x1B4B, device_id=0x9230, class_code=0x010185,
                   bars=[0x800], acs=AcsSpec(AcsFlags.RR | AcsFlags.CR, AcsFlags.RR | AcsFlags.CR))
    t.enumerate()
    assert members(t) == [["0000:00:01.0"], ["0000:01:00.0", "0000:01:00.1"]]


def test_acs_override_downstream_and_multifunction_split_everything():
    t = gpu_with_audio(None)
    ov = AcsOverride.parse("downstream,multifunction")
    assert members(t, ov) == [["0000:00:01.0"], ["0000:01:00.0"], ["0000:01:00.1"]]


def test_acs_override_never_touches_a_port_that_has_an_acs_capability():
    t = gpu_with_audio(AcsSpec.none_enabled())
    assert members(t, AcsOverride.parse("downstream")) == [
        ["0000:00:01.0", "0000:01:00.0", "0000:01:00.1"]]


def test_acs_override_by_id():
    t = gpu_with_audio(None)
    assert members(t, AcsOverride.parse("id:8086:1901")) == [
        ["0000:00:01.0"], ["0000:01:00.0", "0000:01:00.1"]]


@pytest.mark.parametrize("text", ["downstrem", "id:zz:1", "id:8086"])
def test_acs_override_rejects_bad_options(text):
    with pytest.raises(ConfigError, match="pcie_acs_override"):
        AcsOverride.parse(text)


def test_group_ids_follow_probe_order():
    groups = compute_iommu_groups(switch_host([FULL, FULL]))
    assert [g.id for g in groups] == list(range(len(groups)))
    assert groups[0].bdfs() == ["0000:00:01.0"]


def test_acs_control_write_changes_the_grouping():
    t = switch_host([FULL, FULL])
    port = t.find("02:00.0")
    before = members(t)
    port.set_acs_ctl(AcsFlags(0))
    after = members(t)
    assert ["0000:02:00.0", "0000:03:00.0"] in after and ["0000:03:00.0"] in before
    assert port.acs_ctl() == AcsFlags(0)


def test_ricoh_dma_func0_alias_merges_functions():
    # quirk_dma_func0_alias: function 1 of 1180:e832 DMAs with function 0's requester ID.
    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    mf_acs = AcsSpec(AcsFlags.RR | AcsFlags.CR, AcsFlags.RR | AcsFlags.CR)
    for fn in (0, 1):
        t.add_endpoint(rp, 0, fn, vendor_id=0x1180, device_id=0xE832, class_code=0x088000,
                       bars=[0x800], acs=mf_acs)
    t.enumerate()
    assert members(t) == [["0000:00:01.0"], ["0000:01:00.0", "0000:01:00.1"]]


@pytest.mark.parametrize(("ids", "alias"), [((0x1B21, 0x1080), True), ((0x1B21, 0x1234), False)])
def test_pcie_bridge_alias_flag_makes_a_conventional_bridge_alias_as_secondary_00_0(ids, alias):
    # quirk_use_pcie_bridge_dma_alias: an ASM1083 is a PCIe-to-PCI bridge without a PCIe
    # capability; pci_for_each_dma_alias then uses (secondary bus, 00.0), not its own RID.
    from passthru.analysis.groups import pci_for_each_dma_alias
    from passthru.hw.pci.fabric import Fabric, MemRequest, RouteKind

    t = Topology()
    rp = t.add_root_port(1, acs=FULL)
    br = t.add_pci_device(rp, 0, vendor_id=ids[0], device_id=ids[1], class_code=0x060400)
    dev = t.add_pci_device(br, 3, bars=[0x1000])
    t.enumerate()
    assert br.is_bridge and br.pcie_bridge_alias is alias
    want = (br.secondary_bus << 8) if alias else br.rid
    assert (br, want) in list(pci_for_each_dma_alias(dev))
    out = Fabric(t).route(dev, MemRequest(dev.rid, 0x1000, 4, is_write=True))
    assert out.kind is RouteKind.ROOT_COMPLEX and out.rc_requester_id == want
