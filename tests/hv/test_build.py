"""hv.build: a validated host file becomes a running Host with VMs, VFIO and MSIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from passthru.config import load_host, load_host_text
from passthru.errors import ConfigError
from passthru.hv.build import HOST_TENANT, build, build_host, tenants_of
from passthru.hw.platform import DmaStatus

MiB = 1 << 20
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def host_text(*, iommu: str = "", acs: str = '"full"', vms: str | None = None) -> str:
    vms = vms if vms is not None else '''
[[vm]]
name = "a"
memory = "8MiB"
vcpus = [0]
devices = ["0000:03:00.0"]

[[vm]]
name = "b"
memory = "6MiB"
vcpus = [1]
devices = ["0000:04:00.0"]
'''
    return f'''
[host]
name = "tiny"
cores = 4
memory = "256MiB"
reserved_memory = "16MiB"

[host.iommu]
{iommu}

[[pci.device]]
kind = "pci"
slot = 0
class = "host-bridge"

[[pci.root_port]]
slot = 1
acs = "full"

  [[pci.root_port.device]]
  kind = "switch"

    [[pci.root_port.device.port]]
    acs = {acs}
      [[pci.root_port.device.port.device]]
      class = "nvme"
      bars = ["16KiB"]

    [[pci.root_port.device.port]]
    acs = {acs}
      [[pci.root_port.device.port.device]]
      class = "ethernet"
      bars = ["64KiB"]
      msix = true

    [[pci.root_port.device.port]]
    acs = {acs}
      [[pci.root_port.device.port.device]]
      class = "ethernet"
      bars = ["4KiB"]
{vms}'''


def test_vms_devices_and_msis_follow_the_file() -> None:
    b = build(load_host_text(host_text()))
    host = b.host
    assert list(host.vms) == ["a", "b"]
    assert host.vms["a"].memory_bytes == 8 * MiB and host.vms["b"].memory_bytes == 6 * MiB
    assert [d.fn.bdf for d in b.devices["a"]] == ["0000:03:00.0"]
    assert host.owner[id(b.devices["b"][0].fn)] is host.vms["b"]
    assert set(b.msi) == {"0000:03:00.0", "0000:04:00.0"}
    assert len(host.irq_routes) == 2
    assert host.iommu.strict and host.iommu.ir_enabled


def test_guest_dma_lands_in_guest_ram() -> None:
    b = build(load_host_text(host_text()))
    fn = b.devices["a"][0].fn
    res = b.host.dma_write(fn, 0x1000, b"hello")
    assert res.status is DmaStatus.MEMORY
    assert b.host.vms["a"].read(0x1000, 5) == b"hello"
    # VM b's RAM is not mapped for VM a's device: the IOMMU faults above a's RAM
    assert b.host.dma_write(fn, 7 * MiB + 0x1000 + MiB, b"x").status is DmaStatus.FAULT


def test_tenants_are_vms_then_host_without_bridges() -> None:
    b = build(load_host_text(host_text()))
    tenants = tenants_of(b.host)
    assert list(tenants) == ["a", "b", HOST_TENANT]
    assert [f.bdf for f in tenants[HOST_TENANT]] == ["0000:05:00.0"]  # no host bridge/ports
    assert b.tenants() == tenants


def test_iommu_options_reach_the_unit_and_driver() -> None:
    text = host_text(iommu='strict = false\niotlb_entries = 64\naddress_width = 39\n'
                           'posted_interrupts = true')
    host = build_host(load_host_text(text))
    assert host.unit.iotlb.capacity == 64
    assert host.iommu.agaw.bits == 39 and not host.iommu.strict
    assert host.posted_interrupts and host.irq_routes[0].posted


def test_reconfigured_iommu_does_not_leak_frames() -> None:
    default = build_host(load_host_text(host_text()))
    other = build_host(load_host_text(host_text(iommu="iotlb_entries = 1024")))
    assert default.frames.used_bytes == other.frames.used_bytes


def test_interrupt_remapping_off_sets_up_no_irte() -> None:
    text = host_text(iommu="interrupt_remapping = false\nallow_unsafe_interrupts = true")
    b = build(load_host_text(text))
    assert not b.host.iommu.ir_enabled and not b.msi and not b.host.irq_routes


def test_iommu_disabled_means_untranslated_dma() -> None:
    host = build_host(load_host_text(host_text(iommu="enabled = false", vms="")))
    assert host.platform.iommu is None
    fn = host.topology.find("0000:05:00.0")
    assert host.dma_write(fn, 0x2000, b"raw").status is DmaStatus.MEMORY
    assert host.memory.read(0x2000, 3) == b"raw"


def test_identity_mode_attaches_host_functions_to_the_identity_domain() -> None:
    b = build(load_host_text(host_text(iommu='mode = "identity"')))
    iommu = b.host.iommu
    host_fn = b.host.topology.find("0000:05:00.0")
    assert iommu.domain_of(host_fn.rid) is b.host.identity_domain
    assert iommu.domain_of(b.devices["a"][0].fn.rid) is b.vfio.domains["a"]


def test_acs_override_groups_are_used_for_viability() -> None:
    # Without ACS the three endpoints share a group: only the override makes this viable.
    text = host_text(acs='"none"', iommu='acs_override = "downstream"')
    b = build(load_host_text(text))
    assert set(b.devices) == {"a", "b"}


def test_five_level_tables_are_refused_with_the_field_named() -> None:
    # At load time, so that `passthru check` never accepts a host that cannot boot.
    with pytest.raises(ConfigError, match=r"<string>:9: host.iommu.address_width: 5-level"):
        load_host_text(host_text(iommu="address_width = 57", vms=""))


def test_same_seed_same_layout() -> None:
    one = build_host(load_host_text(host_text()), seed=3)
    two = build_host(load_host_text(host_text()), seed=3)
    assert one.vms["b"].ram_chunks() == two.vms["b"].ram_chunks()
    assert one.iommu.root_table == two.iommu.root_table


def test_workstation_example_boots() -> None:
    b = build(load_host(EXAMPLES / "workstation.toml"))
    assert sum(len(d) for d in b.devices.values()) == 3
    assert len(b.msi) == 3


def test_shared_cores_allowed_by_the_file_boot() -> None:
    shared = '''
[[vm]]
name = "a"
memory = "8MiB"
vcpus = [0]

[[vm]]
name = "b"
memory = "6MiB"
vcpus = [0]
'''
    text = host_text(vms=shared)
    with pytest.raises(ConfigError, match="allow_shared_cores"):
        load_host_text(text)
    cfg = load_host_text(text.replace('cores = 4\n', 'cores = 4\nallow_shared_cores = true\n'))
    b = build(cfg)
    assert sorted(b.host.vms) == ["a", "b"]
    assert [v.core for v in b.host.vms["b"].vcpus] == [0]
    assert b.host.core_owner[0] == "a"
