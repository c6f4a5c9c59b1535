"""IOMMU groups computed from real dumps (tests/data/lspci, see SOURCES.md) against the groups
the machine's own kernel reported in its `IOMMU group:` lines.

Group numbers differ between kernels, so group *membership* is compared: for every device, the
set of functions sharing its group.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from passthru.analysis.groups import IommuGroup, compute_iommu_groups
from passthru.cli.main import cli
from passthru.errors import DumpParseError
from passthru.importers.lspci_topology import import_warnings, load_lspci
from passthru.report.groups import compare_with_reported

DATA = Path(__file__).resolve().parent.parent / "data" / "lspci"

XPS_9310 = "dell_xps13_9310_tigerlake.txt"
XPS_9380 = "dell_xps13_9380_whiskeylake_tb3.txt"
X570 = "asrockrack_x570d4u_2l2t_matisse.txt"
RADXA = "radxa_orion_o6_arm.txt"
DELL = "dell_xeon_e5v4_2s_tesla_p100.txt"
LENOVO_NONROOT = "lenovo_kabylake_nonroot.txt"


def groups_of(name: str) -> list[IommuGroup]:
    return compute_iommu_groups(load_lspci(str(DATA / name)))


def computed_members(groups: list[IommuGroup]) -> dict[str, frozenset[str]]:
    """bdf -> the bdfs of its computed group (itself included)."""
    return {d.bdf: frozenset(g.bdfs()) for g in groups for d in g.devices}


def reported_members(groups: list[IommuGroup]) -> dict[str, frozenset[str] | None]:
    """bdf -> the bdfs the dump put in the same `IOMMU group:`; None without such a line."""
    devices = [d for g in groups for d in g.devices]
    by_hint: dict[int, set[str]] = {}
    for d in devices:
        if d.iommu_group_hint is not None:
            by_hint.setdefault(d.iommu_group_hint, set()).add(d.bdf)
    return {d.bdf: (frozenset(by_hint[d.iommu_group_hint])
                    if d.iommu_group_hint is not None else None) for d in devices}


def mismatches(name: str) -> dict[str, tuple[frozenset[str], frozenset[str] | None]]:
    groups = groups_of(name)
    computed, reported = computed_members(groups), reported_members(groups)
    return {bdf: (computed[bdf], reported[bdf]) for bdf in computed
            if computed[bdf] != reported[bdf]}


def group_with(groups: list[IommuGroup], bdf: str) -> set[str]:
    return next(set(g.bdfs()) for g in groups if bdf in g.bdfs())


# --- new x86 dumps with the kernel's own groups: every device must agree -----------------------

@pytest.mark.parametrize("name, devices", [(XPS_9310, 26), (XPS_9380, 28), (X570, 56)])
def test_dump_is_complete_root_and_tagged(name, devices):
    topo = load_lspci(str(DATA / name))
    assert len(topo.functions()) == devices
    assert import_warnings(topo) == []  # taken with -nn: every quirk can be matched


@pytest.mark.parametrize("name", [XPS_9310, XPS_9380])
def test_intel_laptops_match_the_kernel_for_every_device(name):
    assert mismatches(name) == {}
    assert compare_with_reported(groups_of(name)) == []


def test_x570_matches_the_kernel_except_the_functions_amd_vi_leaves_out():
    # The only residual difference: the root complex 00:00.0 and the IOMMU's own function
    # 00:00.2 carry no `IOMMU group:` line. The AMD IOMMU driver probes only devices the ACPI
    # IVRS table maps to an IOMMU (drivers/iommu/amd/iommu.c amd_iommu_probe_device() ->
    # check_device() -> rlookup_amd_iommu()), and this firmware's IVRS does not list them.
    # The PCI-level computation has no IVRS, so it groups them (a multifunction slot of two
    # conventional functions) as pci_device_group() would if they were probed.
    pair = frozenset({"0000:00:00.0", "0000:00:00.2"})
    assert mismatches(X570) == {"0000:00:00.0": (pair, None), "0000:00:00.2": (pair, None)}
    found = compare_with_reported(groups_of(X570))
    assert [(d.device, d.computed_with, d.reported_group) for d in found] == [
        ("0000:00:00.0", ("0000:00:00.2",), None),
        ("0000:00:00.2", ("0000:00:00.0",), None),
    ]


# --- what each dump exercises -------------------------------------------------------------------

def test_xps_9310_intel_rciep_quirk_splits_wifi_from_the_xhci_slot():
    # 00:14.0 (xHCI) and 00:14.2 (shared SRAM) have no Express capability; 00:14.3 (AX201
    # Wi-Fi) is an Intel Root Complex Integrated Endpoint without ACS. pci_quirk_rciep_acs()
    # makes it isolated, so get_pci_function_alias_group() skips it: the kernel gave it its own
    # group (10) while 14.0 and 14.2 share group 9.
    groups = groups_of(XPS_9310)
    assert group_with(groups, "0000:00:14.3") == {"0000:00:14.3"}
    assert group_with(groups, "0000:00:14.0") == {"0000:00:14.0", "0000:00:14.2"}
    # The Thunderbolt 4 root ports share slot 07 but have ACS on: one group each.
    assert group_with(groups, "0000:00:07.0") == {"0000:00:07.0"}
    assert group_with(groups, "0000:00:07.2") == {"0000:00:07.2"}
    # The iGPU is an SR-IOV PF (7 VFs possible, none enabled): alone, no virtual functions.
    gpu = next(d for g in groups for d in g.devices if d.bdf == "0000:00:02.0")
    assert gpu.sriov is not None and gpu.sriov.total_vfs == 7 and gpu.virtfns == []
    assert group_with(groups, "0000:00:02.0") == {"0000:00:02.0"}


def test_xps_9380_thunderbolt_switch_without_acs():
    # Alpine Ridge: upstream port 03:00.0 and downstream ports 04:0x.0 have no ACS capability.
    # The single-function upstream port counts as isolated (pci_acs_enabled(): PCIe 6.12.1.3),
    # so each downstream port starts its own group and takes the functions below it.
    groups = groups_of(XPS_9380)
    assert group_with(groups, "0000:03:00.0") == {"0000:03:00.0"}
    assert group_with(groups, "0000:04:00.0") == {"0000:04:00.0", "0000:05:00.0"}
    assert group_with(groups, "0000:04:01.0") == {"0000:04:01.0"}
    assert group_with(groups, "0000:04:02.0") == {"0000:04:02.0", "0000:39:00.0"}
    assert group_with(groups, "0000:04:04.0") == {"0000:04:04.0"}
    # Cannon Point-LP root ports 00:1c.0 / 00:1c.6 share a slot; their ACS (UF not
    # implemented, so counted as hard-wired) keeps them, and the endpoints below them, apart.
    for bdf in ("0000:00:1c.0", "0000:01:00.0", "0000:00:1c.6", "0000:02:00.0"):
        assert group_with(groups, bdf) == {bdf}


def test_x570_chipset_switch_sriov_nic_and_pci_bridge():
    groups = groups_of(X570)
    # X570 chipset switch: upstream 20:00.0 (no ACS, single function) alone; 57a3 downstream
    # ports have ACS enabled, so their endpoints get groups of their own.
    assert group_with(groups, "0000:20:00.0") == {"0000:20:00.0"}
    assert group_with(groups, "0000:21:01.0") == {"0000:21:01.0"}
    assert group_with(groups, "0000:23:00.0") == {"0000:23:00.0"}
    # The 57a4 downstream ports have no ACS capability: the chipset USB/SATA functions below
    # them join the port's group.
    assert group_with(groups, "0000:21:08.0") == {
        "0000:21:08.0", "0000:2a:00.0", "0000:2a:00.1", "0000:2a:00.3"}
    assert group_with(groups, "0000:21:09.0") == {"0000:21:09.0", "0000:2b:00.0"}
    # Intel X550 SR-IOV PFs (64 VFs each, none enabled): an ACS capability that implements no
    # control counts as enabled (pci_acs_flags_enabled()), so the two functions are split.
    assert group_with(groups, "0000:24:00.0") == {"0000:24:00.0"}
    assert group_with(groups, "0000:24:00.1") == {"0000:24:00.1"}
    pf = next(d for g in groups for d in g.devices if d.bdf == "0000:24:00.0")
    assert pf.sriov is not None and pf.sriov.total_vfs == 64 and pf.virtfns == []
    # ASPEED AST1150 PCIe-to-PCI bridge: its own group, apart from the ACS downstream port.
    assert group_with(groups, "0000:28:00.0") == {"0000:28:00.0"}
    assert group_with(groups, "0000:21:06.0") == {"0000:21:06.0"}
    # Navi 21 behind its own switch: the GPU's four functions are split (ACS cap, no controls).
    for fn in range(4):
        assert group_with(groups, f"0000:2f:00.{fn}") == {f"0000:2f:00.{fn}"}


# --- the older dumps ----------------------------------------------------------------------------

def test_radxa_each_root_port_with_its_endpoint_and_no_disagreement():
    groups = groups_of(RADXA)
    assert sorted(sorted(g.bdfs()) for g in groups) == [
        ["0000:00:00.0", "0000:01:00.0"],
        ["0000:30:00.0", "0000:31:00.0"],
        ["0000:90:00.0", "0000:91:00.0"],
    ]
    assert compare_with_reported(groups) == []
    assert mismatches(RADXA) == {}


def test_dell_pcie_to_pci_bridge_and_matrox_share_a_group():
    groups = groups_of(DELL)
    shared = group_with(groups, "0000:0a:00.0")  # Matrox G200eR2 behind the bridge
    assert {"0000:09:00.0", "0000:0a:00.0"} <= shared
    assert compare_with_reported(groups) == []  # IOMMU off: no group lines to compare


def test_lenovo_nonroot_dump_is_refused():
    with pytest.raises(DumpParseError, match="access denied"):
        load_lspci(str(DATA / LENOVO_NONROOT))


# --- the command line ---------------------------------------------------------------------------

def test_cli_json_prints_full_names_for_a_real_dump():
    res = CliRunner().invoke(cli, ["groups", "--lspci", str(DATA / XPS_9310), "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert ["0000:00:14.3"] in doc["groups"]
    assert ["0000:00:14.0", "0000:00:14.2"] in doc["groups"]
    names = [b for g in doc["groups"] for b in g]
    assert len(names) == 26 and all(len(b) == 12 and b.startswith("0000:") for b in names)
    assert "disagreements" not in doc


def test_cli_json_lists_the_known_x570_residual():
    res = CliRunner().invoke(cli, ["groups", "--lspci", str(DATA / X570), "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert [d["device"] for d in doc["disagreements"]] == ["0000:00:00.0", "0000:00:00.2"]
    assert all(d["reported_group"] is None for d in doc["disagreements"])


# ---------------------------------------------------------------- dumps taken without -nn
def _group_of(groups: list[IommuGroup], bdf: str) -> list[str]:
    return next(g.bdfs() for g in groups if bdf in g.bdfs())


@pytest.mark.parametrize(("dump", "ports"), [
    ("lenovo_z510_haswell.txt", ["0000:00:1c.0", "0000:00:1c.4"]),  # 8 Series PCH (8c1x)
    (DELL, ["0000:00:1c.0", "0000:00:1c.7"]),  # C610/X99 Wellsburg PCH (8d1x)
])
def test_pch_root_ports_of_a_dump_without_ids_get_the_quirk(dump, ports):
    # The names lspci printed are looked up in the bundled pci.ids table, so the Intel PCH
    # ACS quirk applies as on the machine: each root port is its own group.
    topo = load_lspci(str(DATA / dump))
    port = topo.find(ports[0][5:])
    assert not port.ids_known and port.ids_inferred and port.vendor_id == 0x8086
    groups = compute_iommu_groups(topo)
    for bdf in ports:
        assert _group_of(groups, bdf) == [bdf]
    assert any("looked up by name" in w for w in import_warnings(topo))


def test_ids_from_name_round_trips_the_bundled_table():
    from passthru.importers.pci_names import _quirks_of, _table, ids_from_name

    vendors, devices = _table()
    names = {vid: vname for vname, vid in reversed(vendors)}  # the current (first) names
    checked = 0
    for vid, by_name in devices.items():
        for name, dids in by_name.items():
            got = ids_from_name(f"{names[vid]} {name}")
            if got[1] is not None:  # resolved: quirked like every ID of that name
                assert got[0] == vid or names[got[0]] == names[vid]
                assert all(_quirks_of(vid, d) == _quirks_of(*got) for d in dids)
                checked += 1
    assert checked > 200
    assert ids_from_name("Broadcom Corporation Device 16be") == (0x14E4, 0x16BE)
    assert ids_from_name("Realtek Semiconductor Co., Ltd. RTL8111") == (None, None)
    assert ids_from_name("Intel Corporation Ethernet Controller X710") == (0x8086, None)
