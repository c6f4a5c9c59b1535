"""Containers versus VMs: what a tenant using a device is exposed to (issue 5, item 4).

What is modelled
    Three ways a tenant gets a device, each built on the simulated host:

    - ``container-pt``: the tenant's processes use the device through the *host kernel's*
      driver (its ioctl/read/write/mmap/socket surface, listed as data in
      :data:`DRIVER_ENTRY_POINTS`); the device stays in the host's default domain, here the
      identity domain of ``iommu=pt``: its DMA reaches all of host RAM.
    - ``container-dma``: the same, with a translated default DMA domain (``iommu.passthrough=0``):
      the device reaches exactly what the host driver has mapped right now, which on a device
      shared by several containers includes the other containers' in-flight I/O buffers.
    - ``vm``: the tenant is a VM with the device assigned through VFIO: the guest touches the
      device's BAR directly and reaches the host only through VM exits (KVM, the VMM's
      config-space emulation); the device's domain maps the VM's own RAM and nothing else.

    *Reach* is not asserted: it is read back from the IOMMU's second-level tables in host
    memory (:func:`domain_mappings`; an identity pass-through context reaches everything), and
    labelled with the owners of the host physical ranges it covers. The attacks are then run
    for real on the same host (:func:`compare`): the tenant's device is turned malicious (a
    container tenant with the firmware-update entry point flashes it; a VM tenant needs only
    its guest driver) and DMAs into a host kernel page and into the co-tenant's buffer. The
    static reach and the attack outcomes must agree, and the tests check that they do.

What is left out
    Namespaces, seccomp and LSM policy (which narrow the syscall surface a container sees),
    user-space drivers in containers (VFIO into a container is the ``vm`` row's device half),
    SR-IOV VFs per tenant, and the host driver's own bugs (the surface is listed, not fuzzed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from passthru.errors import ConfigError
from passthru.hv.host import Host
from passthru.hv.iommu_driver import Domain
from passthru.hv.vfio import Vfio
from passthru.hw.iommu.vtd.entries import level_shift, sl_addr_mask
from passthru.hw.platform import DmaResult
from passthru.scenarios.attacks.catalog import (
    FULL_ACS,
    HOST_KERNEL_HPA,
    SECRET,
    VICTIM_GPA,
    VM_MEMORY,
    AttackOutcome,
    HostDmaDriver,
    Job,
    describe,
    device_dma,
    diff_line,
    frcd_lines,
    new_host,
    payload,
    run_guest,
    switch_topology,
)
from passthru.scenarios.attacks.device import DmaEngine


@dataclass(frozen=True)
class EntryPoint:
    """One way in from the tenant: what it calls and the kernel code that answers it."""

    name: str
    kind: str  # ioctl, read/write, mmap, socket, io_uring, exit, irq, device
    handler: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "handler": self.handler}


DRIVER_ENTRY_POINTS: dict[str, tuple[EntryPoint, ...]] = {
    "nvme": (
        EntryPoint("/dev/nvme0 ioctl NVME_IOCTL_ADMIN_CMD", "ioctl",
                   "drivers/nvme/host/ioctl.c nvme_user_cmd: raw admin commands, including "
                   "Firmware Image Download (0x11) / Firmware Commit (0x10)"),
        EntryPoint("/dev/nvme0n1 ioctl NVME_IOCTL_IO_CMD", "ioctl",
                   "drivers/nvme/host/ioctl.c nvme_user_cmd on an I/O queue"),
        EntryPoint("/dev/nvme0n1 ioctl NVME_IOCTL_SUBMIT_IO", "ioctl",
                   "drivers/nvme/host/ioctl.c nvme_submit_io"),
        EntryPoint("/dev/nvme0n1 read/write/pread/pwrite/O_DIRECT", "read/write",
                   "block/fops.c -> blk-mq -> drivers/nvme/host/pci.c nvme_queue_rq"),
        EntryPoint("/dev/ng0n1 io_uring NVME_URING_CMD_IO", "io_uring",
                   "drivers/nvme/host/ioctl.c nvme_ns_chr_uring_cmd"),
    ),
    "nic": (
        EntryPoint("socket(AF_PACKET) + PACKET_MMAP rings", "socket",
                   "net/packet/af_packet.c -> the driver's ndo_start_xmit"),
        EntryPoint("socket(AF_XDP) UMEM and fill/completion rings (mmap)", "socket",
                   "net/xdp/xsk.c -> the driver's zero-copy XSK path"),
        EntryPoint("ioctl SIOCETHTOOL (incl. ETHTOOL_FLASHDEV)", "ioctl",
                   "net/ethtool/ioctl.c -> the driver's ethtool_ops (flash_device)"),
        EntryPoint("bpf(BPF_PROG_LOAD) + netlink IFLA_XDP", "syscall",
                   "kernel/bpf/verifier.c; the driver's ndo_bpf"),
    ),
}
FIRMWARE_PATH = {
    "nvme": "NVME_IOCTL_ADMIN_CMD Firmware Image Download + Firmware Commit",
    "nic": "SIOCETHTOOL ETHTOOL_FLASHDEV",
}
VFIO_ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("device BARs (VFIO region mmap'ed into guest memory)", "device",
               "the device itself; no host code on the path"),
    EntryPoint("config space (VFIO config region, through the VMM)", "exit",
               "drivers/vfio/pci/vfio_pci_config.c vfio_pci_config_rw (virtualized)"),
    EntryPoint("VFIO device ioctls GET_INFO/GET_REGION_INFO/SET_IRQS/RESET (VMM only)",
               "ioctl", "drivers/vfio/pci/vfio_pci_core.c vfio_pci_core_ioctl"),
    EntryPoint("VFIO container MAP_DMA/UNMAP_DMA (VMM only, at start-up)", "ioctl",
               "drivers/vfio/vfio_iommu_type1.c"),
)
KVM_ENTRY_POINTS: tuple[EntryPoint, ...] = (
    EntryPoint("VM exits: emulated MMIO/PIO, CPUID, MSR, hypercalls, EPT violations", "exit",
               "arch/x86/kvm/vmx/vmx.c exit handlers + the VMM's device models"),
    EntryPoint("interrupts: KVM_IRQFD from the VFIO MSI handler, or posted", "irq",
               "virt/kvm/eventfd.c; VT-d posted interrupts need no host code"),
)
KERNEL_SURFACE = {
    "container": ("the host kernel's whole syscall ABI (namespaced, not removed)",
                  "the host device driver's entry points above",
                  "the device's DMA into whatever its host domain maps"),
    "vm": ("KVM's VM-exit handlers", "the VMM's emulated devices and config-space virtualization",
           "the VM's own RAM (the only memory the device's domain maps)"),
}
MODELS = ("container-pt", "container-dma", "vm")
MODEL_TITLES = {
    "container-pt": "container, host driver, identity domain (iommu=pt)",
    "container-dma": "container, host driver, translated DMA domain",
    "vm": "VM, VFIO passthrough",
}


@dataclass(frozen=True)
class Mapping:
    """A run of a domain: IOVA ``[iova, iova + size)`` -> HPA ``hpa``, perms R=1|W=2."""

    iova: int
    hpa: int
    size: int
    perms: int


@dataclass(frozen=True)
class HpaRange:
    start: int
    end: int
    owners: tuple[str, ...]  # what lives there (host kernel, a tenant's buffer, a VM's RAM)

    def __str__(self) -> str:
        return f"[{self.start:#x}, {self.end:#x}) {', '.join(self.owners) or 'free'}"


@dataclass
class Exposure:
    """What one tenant model is exposed to, and what the attacks achieved on it."""

    model: str
    device_class: str
    entry_points: tuple[EntryPoint, ...]
    kernel_surface: tuple[str, ...]
    reach: list[HpaRange]
    host_kernel_reachable: bool
    co_tenant_reachable: bool
    outcomes: list[AttackOutcome] = field(default_factory=list)

    @property
    def title(self) -> str:
        return MODEL_TITLES[self.model]

    @property
    def reach_bytes(self) -> int:
        return sum(r.end - r.start for r in self.reach)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "title": self.title,
            "device_class": self.device_class,
            "entry_points": [e.to_json() for e in self.entry_points],
            "kernel_surface": list(self.kernel_surface),
            "reach": [{"start": f"{r.start:#x}", "end": f"{r.end:#x}", "owners": list(r.owners)}
                      for r in self.reach],
            "reach_bytes": self.reach_bytes,
            "host_kernel_reachable": self.host_kernel_reachable,
            "co_tenant_reachable": self.co_tenant_reachable,
            "attacks": [o.to_json() for o in self.outcomes],
        }


# ---------------------------------------------------------------------- reach from the tables
def domain_mappings(host: Host, domain: Domain) -> list[Mapping]:
    """Every run a domain maps, read from its second-level tables in host memory (merged)."""
    if domain.pass_through or domain.pgd is None:
        return [Mapping(0, 0, host.memory.size, 3)]
    mask = sl_addr_mask(host.unit.haw)
    leaves: list[Mapping] = []

    def walk(table: int, level: int, base: int) -> None:
        raw = host.memory.read(table, 4096)
        for i in range(512):
            pte = int.from_bytes(raw[8 * i:8 * i + 8], "little")
            if not pte & 3:
                continue
            iova = base + (i << level_shift(level))
            if level == 1 or pte & (1 << 7):  # a leaf: 4 KiB page or superpage (PS)
                size = 1 << level_shift(level)
                leaves.append(Mapping(iova, pte & mask & ~(size - 1), size, pte & 3))
            else:
                walk(pte & mask, level - 1, iova)

    walk(domain.pgd, domain.levels, 0)
    merged: list[Mapping] = []
    for m in leaves:
        last = merged[-1] if merged else None
        if (last is not None and last.iova + last.size == m.iova
                and last.hpa + last.size == m.hpa and last.perms == m.perms):
            merged[-1] = Mapping(last.iova, last.hpa, last.size + m.size, m.perms)
        else:
            merged.append(m)
    return merged


def hpa_reach(host: Host, domain: Domain, owners: list[tuple[int, int, str]]) -> list[HpaRange]:
    """The host physical ranges ``domain`` reaches, sorted and merged, with their owners."""
    spans = sorted((m.hpa, m.hpa + m.size) for m in domain_mappings(host, domain))
    merged: list[list[int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [HpaRange(lo, hi, tuple(dict.fromkeys(name for s, e, name in owners
                                                 if s < hi and lo < e)))
            for lo, hi in merged]


def _covers(reach: list[HpaRange], start: int, length: int) -> bool:
    return any(r.start <= start and start + length <= r.end for r in reach)


# ---------------------------------------------------------------------- one tenant model
def exposure(model: str, device_class: str = "nvme", *, seed: int = 0) -> Exposure:
    """Build ``model`` on a fresh host, compute its exposure and run the attacks on it."""
    if model not in MODELS:
        raise ConfigError(f"tenant model {model!r} must be one of {', '.join(MODELS)}")
    if device_class not in DRIVER_ENTRY_POINTS:
        raise ConfigError(f"device_class {device_class!r} must be one of "
                          f"{', '.join(DRIVER_ENTRY_POINTS)}")
    host = new_host(switch_topology(FULL_ACS), seed=seed, strict=True,
                    identity_default=model == "container-pt")
    host.memory.write(HOST_KERNEL_HPA, SECRET)
    reserve = host.frames.base
    owners: list[tuple[int, int, str]] = [(0, reserve, "host kernel (reserved RAM)")]
    fa = host.topology.find("03:00.0")
    dev = DmaEngine(host, fa)
    if model == "vm":
        return _vm_exposure(host, dev, device_class, owners)
    drv = HostDmaDriver(host, dev, name=device_class)
    # Two containers share the device through the host driver; each has one I/O in flight.
    buf_a, buf_b = host.frames.alloc(4096), host.frames.alloc(4096)
    host.memory.write(buf_b, SECRET)
    owners += [(buf_a, buf_a + 4096, "container tenant-a I/O buffer"),
               (buf_b, buf_b + 4096, "container tenant-b I/O buffer")]
    drv.map(buf_a)
    bus_b = drv.map(buf_b)
    assert drv.domain is not None
    reach = hpa_reach(host, drv.domain, owners)
    exp = Exposure(model, device_class, DRIVER_ENTRY_POINTS[device_class],
                   KERNEL_SURFACE["container"], reach,
                   _covers(reach, HOST_KERNEL_HPA, len(SECRET)), _covers(reach, buf_b, 64))
    how = f"tenant-a flashes the device through {FIRMWARE_PATH[device_class]}"
    exp.outcomes.append(_device_attack(
        host, dev, "dma-to-host-memory", exp.title, HOST_KERNEL_HPA, HOST_KERNEL_HPA,
        "host kernel memory (HPA)", how, expected=exp.host_kernel_reachable))
    exp.outcomes.append(_device_attack(
        host, dev, "dma-to-co-tenant", exp.title, bus_b, buf_b,
        "container tenant-b's I/O buffer (HPA)", how, expected=exp.co_tenant_reachable))
    return exp


def _device_attack(host: Host, dev: DmaEngine, name: str, config: str, target: int,
                   hpa: int, where: str, how: str, *, expected: bool) -> AttackOutcome:
    before = host.memory.read(hpa, len(SECRET))
    res = device_dma(dev, Job(target, payload(host, len(SECRET))))
    out = AttackOutcome(name, config, False, [how], expected=expected)
    return _judge(out, host, [res], before, hpa, where)


def _judge(out: AttackOutcome, host: Host, results: list[DmaResult], before: bytes, hpa: int,
           where: str) -> AttackOutcome:
    """Evidence of the DMA results, then success = the bytes at ``hpa`` changed."""
    for res in results:
        out.evidence += describe(res)
        if res.fault is not None:
            out.faults.append(res.fault)
    n, line = diff_line(before, host.memory.read(hpa, len(SECRET)), hpa, where)
    out.evidence.append(line)
    out.bytes_changed = n
    out.succeeded = n > 0
    return out


def _vm_exposure(host: Host, dev: DmaEngine, device_class: str,
                 owners: list[tuple[int, int, str]]) -> Exposure:
    vm_a = host.create_vm("tenant-a", VM_MEMORY, [1])
    vm_b = host.create_vm("tenant-b", VM_MEMORY, [2])
    vfio = Vfio(host)
    (assigned,) = vfio.assign(vm_a, dev.fn)
    fb = host.topology.find("04:00.0")
    DmaEngine(host, fb)
    vfio.assign(vm_b, fb)
    vm_b.write(VICTIM_GPA, SECRET)
    for vm in (vm_a, vm_b):
        owners += [(hpa, hpa + size, f"vm {vm.name} RAM") for _, hpa, size in vm.ram_chunks()]
    reach = hpa_reach(host, vfio.domains["tenant-a"], owners)
    victim_hpa = vm_b.gpa_to_hpa(VICTIM_GPA)
    exp = Exposure("vm", device_class, VFIO_ENTRY_POINTS + KVM_ENTRY_POINTS,
                   KERNEL_SURFACE["vm"], reach, _covers(reach, HOST_KERNEL_HPA, len(SECRET)),
                   _covers(reach, victim_hpa, 64))
    bar = assigned.bar_gpas[0]
    for name, target, hpa, where, expected in (
            ("dma-to-host-memory", HOST_KERNEL_HPA, HOST_KERNEL_HPA,
             "host kernel memory (HPA)", exp.host_kernel_reachable),
            ("dma-to-co-tenant", victim_hpa, victim_hpa, "vm tenant-b RAM (HPA)",
             exp.co_tenant_reachable)):
        before = host.memory.read(hpa, len(SECRET))
        start = len(dev.log)
        run_guest(vm_a, bar, [Job(target, payload(host, len(SECRET)))])
        out = AttackOutcome(name, exp.title, False,
                            ["tenant-a's guest driver programs its assigned device"],
                            expected=expected)
        exp.outcomes.append(_judge(out, host, dev.log[start:], before, hpa, where))
    exp.outcomes[-1].evidence += frcd_lines(host.unit)
    return exp


def compare(device_class: str = "nvme", *, seed: int = 0) -> list[Exposure]:
    """The three tenant models side by side: exposure and attack outcomes."""
    return [exposure(m, device_class, seed=seed) for m in MODELS]
