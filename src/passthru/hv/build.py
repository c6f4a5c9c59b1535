"""From a validated host file to a running ``Host``: VMs created, devices assigned, MSIs set.

What is modelled: what an operator's boot does with a ``HostConfig`` (``config.load_host``):
the host with the file's cores, memory and reserve; the VT-d unit and the IOMMU driver with
the file's IOMMU options (IOTLB size, address width, strict or lazy invalidation, interrupt
remapping and posting; ``mode = "identity"`` attaches every function to the identity domain
first, as ``iommu=pt`` does); each ``[[vm]]`` created in file order with its pinned vCPUs;
its ``devices`` assigned through ``Vfio`` (one container domain per VM, all RAM mapped
IOVA = GPA); and one MSI per assigned function (guest vector 0x20 + its position in the VM,
vCPU 0) through an IRTE when interrupt remapping is on. ``host.iommu.enabled = false``
gives a platform without a remapping unit (DMA goes to memory untranslated). With
``acs_override`` the host uses the file's (overridden) IOMMU groups for VFIO viability,
as Linux does, while the fabric keeps routing by the real ACS bits.

Left out: the emulated devices of ``vm.emulated`` (they do no DMA on the physical fabric),
5-level (57-bit) tables, which the IOMMU driver does not model (``ConfigError``), and
device models behind the BARs (``Host.attach_device`` is the caller's business).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passthru.config import HostConfig
from passthru.errors import ConfigError
from passthru.hv.host import Host
from passthru.hv.iommu_driver import IommuDriver
from passthru.hv.vfio import AssignedDevice, Vfio
from passthru.hv.vm import Vm
from passthru.hw.iommu.vtd.entries import PAGE_4K
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.pci.device import PciFunction
from passthru.hw.platform import Platform

HOST_TENANT = "host"
MSI_VECTOR_BASE = 0x20  # first guest vector handed out (x86: 0x00-0x1f are exceptions)


@dataclass
class HostBuild:
    """A built host with its assignment backend and what was set up on it."""

    host: Host
    vfio: Vfio
    config: HostConfig
    devices: dict[str, list[AssignedDevice]] = field(default_factory=dict)  # vm -> assigned
    msi: dict[str, tuple[int, int]] = field(default_factory=dict)  # BDF -> (address, data)

    def tenants(self) -> dict[str, list[PciFunction]]:
        """VM name -> its functions, and ``"host"`` -> every other non-bridge function."""
        return tenants_of(self.host)

    def __repr__(self) -> str:
        return (f"<HostBuild {self.config.host.name!r}: {len(self.host.vms)} VM(s), "
                f"{sum(len(d) for d in self.devices.values())} assigned function(s)>")


def tenants_of(host: Host) -> dict[str, list[PciFunction]]:
    """Tenants of a host: each VM (in creation order) with the functions assigned to it,
    then ``"host"`` with every other non-bridge function (bridges do not master DMA; nor
    does a host bridge, class 0x0600, which is the root complex's own function)."""
    out: dict[str, list[PciFunction]] = {name: [] for name in host.vms}
    rest: list[PciFunction] = []
    for fn in host.topology.functions():
        if fn.is_bridge or fn.class_code >> 8 == 0x0600:
            continue
        vm = host.owner.get(id(fn))
        if vm is not None:
            out[vm.name].append(fn)
        else:
            rest.append(fn)
    if HOST_TENANT in out:  # a VM called "host": keep both apart
        out[f"{HOST_TENANT} (hypervisor)"] = rest
    else:
        out[HOST_TENANT] = rest
    return out


def _reconfigure_iommu(host: Host, cfg: HostConfig) -> None:
    """Replace the default unit and driver by ones with the file's options.

    ``Host`` builds a default VT-d unit and driver; the file may ask for another IOTLB size,
    address width or no interrupt remapping. Nothing has been allocated on the host yet but
    the first driver's root table, invalidation queue and IR table, which are given back.
    """
    io = cfg.host.iommu
    old = host.iommu
    for addr, size in ((old.root_table, PAGE_4K),
                       (getattr(old, "_iq", None), PAGE_4K),
                       (getattr(old, "_iq_status", None), PAGE_4K),
                       (old.ir_table, max(PAGE_4K, old.ir_entries * 16))):
        if addr is not None:
            host.frames.free(addr, size)
    unit = DmarUnit(host.memory, iotlb_capacity=io.iotlb_entries,
                    interrupt_remapping=io.interrupt_remapping,
                    posted_interrupts=io.posted_interrupts and io.interrupt_remapping)
    host.unit = unit
    host.iommu = IommuDriver(host.memory, host.frames, unit, strict=io.strict,
                             agaw=io.address_width, interrupt_remapping=io.interrupt_remapping,
                             clock=lambda: host.env.now)
    host.platform = Platform(host.topology, host.memory, unit if io.enabled else None)


def build(config: HostConfig, *, seed: int = 0) -> HostBuild:
    """Boot ``config``: host, IOMMU, VMs, VFIO assignments and MSIs. See the module doc."""
    h = config.host
    io = h.iommu
    if io.address_width not in (39, 48):
        raise ConfigError(f"host.iommu.address_width {io.address_width}: 5-level (57-bit) "
                          "second-level tables are not modelled; use 39 or 48")
    host = Host(config.topology, cores=h.cores, memory_bytes=h.memory,
                reserve_bytes=h.reserved_memory, strict=io.strict, identity_default=False,
                posted_interrupts=io.posted_interrupts and io.interrupt_remapping,
                allow_shared_cores=h.allow_shared_cores, seed=seed)
    default_unit = (io.iotlb_entries == 512 and io.address_width == 48
                    and io.interrupt_remapping and io.enabled)
    if not default_unit:
        _reconfigure_iommu(host, config)
    if config.groups:
        host._groups = list(config.groups)  # the file's groups (with any ACS override)
    if io.enabled and io.mode == "identity":  # iommu=pt: everything starts identity-mapped
        host.identity_domain = host.iommu.alloc_domain("identity")
        for fn in config.topology.functions():
            if not fn.is_bridge:
                host.iommu.attach(host.identity_domain, fn.rid)
    vfio = Vfio(host)
    out = HostBuild(host, vfio, config)
    for vmc in config.vms:
        vm = host.create_vm(vmc.name, vmc.memory, list(vmc.vcpus))
        fns = config.assigned.get(vmc.name, [])
        if fns:
            out.devices[vm.name] = vfio.assign(vm, *fns)
            _setup_msis(out, vm, fns)
    return out


def _setup_msis(out: HostBuild, vm: Vm, fns: list[PciFunction]) -> None:
    host = out.host
    if not host.iommu.ir_enabled:
        return  # allow_unsafe_interrupts: the device writes compatibility-format MSIs
    for i, fn in enumerate(fns):
        if fn.config.find_capability(0x05) or fn.config.find_capability(0x11):  # MSI, MSI-X
            out.msi[fn.bdf] = out.vfio.setup_msi(fn, MSI_VECTOR_BASE + i, 0)


def build_host(config: HostConfig, *, seed: int = 0) -> Host:
    """The running ``Host`` of ``config`` (``build(config).host``)."""
    return build(config, seed=seed).host


__all__ = ["HOST_TENANT", "HostBuild", "build", "build_host", "tenants_of"]
