"""Containers (host driver, default domain) versus VMs (VFIO): exposure and attacks."""

from __future__ import annotations

import pytest

from passthru.errors import ConfigError
from passthru.hw.iommu.vtd.faults import FaultReason
from passthru.scenarios.attacks.catalog import FULL_ACS, new_host, switch_topology
from passthru.scenarios.containers import (
    DRIVER_ENTRY_POINTS,
    compare,
    domain_mappings,
    exposure,
)


@pytest.fixture(scope="module")
def nvme():
    return {e.model: e for e in compare("nvme", seed=0)}


def test_identity_domain_container_reaches_all_host_memory(nvme):
    e = nvme["container-pt"]
    assert [(r.start, r.end) for r in e.reach] == [(0, 1 << 30)]
    assert e.host_kernel_reachable and e.co_tenant_reachable
    assert "host kernel (reserved RAM)" in e.reach[0].owners
    names = [p.name for p in e.entry_points]
    assert "/dev/nvme0 ioctl NVME_IOCTL_ADMIN_CMD" in names
    assert all(o.succeeded and o.as_expected for o in e.outcomes)


def test_translated_container_reaches_only_the_drivers_mappings(nvme):
    e = nvme["container-dma"]
    assert e.reach_bytes == 2 * 4096  # the two tenants' in-flight buffers, nothing else
    assert e.reach[0].owners == ("container tenant-a I/O buffer",
                                 "container tenant-b I/O buffer")
    assert not e.host_kernel_reachable and e.co_tenant_reachable
    host_attack, co_tenant = e.outcomes
    assert not host_attack.succeeded and host_attack.faults[0].reason is FaultReason.WRITE
    assert co_tenant.succeeded and co_tenant.bytes_changed == 64  # shared domain


def test_vm_reaches_its_own_ram_only_and_every_attack_faults(nvme):
    e = nvme["vm"]
    assert e.reach_bytes == 4 << 20
    assert all(r.owners == ("vm tenant-a RAM",) for r in e.reach)
    assert not e.host_kernel_reachable and not e.co_tenant_reachable
    assert any("VFIO" in p.name for p in e.entry_points)
    assert any(p.kind == "exit" for p in e.entry_points)
    for out in e.outcomes:
        assert not out.succeeded and out.bytes_changed == 0 and out.as_expected
        (fault,) = out.faults
        assert fault.reason is FaultReason.WRITE and fault.source_id == 0x0300


def test_static_reach_agrees_with_the_attacks(nvme):
    for e in nvme.values():
        host_attack, co_tenant = e.outcomes
        assert host_attack.succeeded == e.host_kernel_reachable
        assert co_tenant.succeeded == e.co_tenant_reachable


def test_domain_walk_matches_the_drivers_lookup():
    host = new_host(switch_topology(FULL_ACS))
    iommu = host.iommu
    dom = iommu.alloc_domain("dma")
    iommu.map(dom, 0x20_0000, 0x1000_0000, 0x40_0000)  # 2 MiB pages
    iommu.map(dom, 0x100_0000, 0x1100_0000, 0x3000, write=False)  # 4 KiB, read-only
    runs = domain_mappings(host, dom)
    assert [(m.iova, m.hpa, m.size, m.perms) for m in runs] == [
        (0x20_0000, 0x1000_0000, 0x40_0000, 3), (0x100_0000, 0x1100_0000, 0x3000, 1)]
    for m in runs:
        for off in (0, m.size - 1):
            hpa, size, perms = iommu.lookup(dom, m.iova + off)
            assert hpa + ((m.iova + off) & (size - 1)) == m.hpa + off and perms == m.perms


def test_nic_class_lists_socket_entry_points_and_one_seed_is_deterministic():
    e = exposure("container-pt", "nic", seed=3)
    assert [p.name for p in e.entry_points] == [p.name for p in DRIVER_ENTRY_POINTS["nic"]]
    assert any("ETHTOOL_FLASHDEV" in line for line in e.outcomes[0].evidence)
    again = exposure("container-pt", "nic", seed=3)
    assert e.to_json() == again.to_json()


def test_unknown_model_or_class_is_a_user_error():
    with pytest.raises(ConfigError, match="tenant model 'pod'"):
        exposure("pod")
    with pytest.raises(ConfigError, match="device_class 'gpu'"):
        exposure("vm", "gpu")
