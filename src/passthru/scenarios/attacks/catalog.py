"""Isolation attacks run for real on the simulated host, each in an open and a blocked setup.

What is modelled
    Every attack builds a fresh :class:`Host` from its configuration knob and seed, gives the
    attacker a :class:`DmaEngine` device and lets it do its worst: a *malicious guest driver*
    (a :class:`GuestKernel` program in the attacker's VM) that programs its assigned device's
    DMA address, length, MSI address/data and, for a compromised device, requester ID. The
    requests go through the same fabric (ACS), VT-d translation, interrupt remapping and host
    memory as everything else; nothing is decided by the catalog. The outcome is read back
    from the machine: FRCD fault records, ACS violation records, bytes changed in host memory,
    in a victim VM's RAM or in a victim device's BAR, interrupts made pending in a victim vCPU.

    ===================== ============================== ====================================
    attack                open (succeeds)                blocked (and by what)
    ===================== ============================== ====================================
    dma-to-host-memory    identity domain (iommu=pt)     translated domain: fault 0x05 WRITE
    p2p-bar-write         switch ports without ACS       ACS RR/CR: redirected to the IOMMU,
                          (Linux still puts the two      fault 0x05 WRITE
                          ports in separate groups)
    msi-injection         no interrupt remapping         IR: 0x25 IR_REQ_COMPAT for a
                          (allow_unsafe_interrupts)      compatibility MSI, 0x26 IR_SID_ERR for
                                                         a forged remappable one
    stale-iotlb           lazy invalidation (flush       strict invalidation: fault 0x05 WRITE
                          queue, iommu.strict=0)
    rid-spoofing          root port without ACS SV       ACS violation SV at the root port
    unviable-group        pcie_acs_override splits the   VFIO refuses: group not viable
                          group of a multifunction
                          device; P2P into the host's
                          other function
    ===================== ============================== ====================================

    The identity case of ``dma-to-host-memory`` leaves the device in the host's default
    identity domain (Linux ``iommu=pt``) with its BAR mapped into the guest: VFIO proper always
    moves a device into the VM's translated domain (``hv/vfio.py``), so this is what a device
    still driven from the host's default domain (vfio-noiommu, or a container through a host
    driver, see ``scenarios/containers.py``) gives a malicious driver. ``stale-iotlb`` uses a
    host driver's DMA-API domain, since that is where Linux's lazy flush queue applies
    (VFIO type1 unmaps synchronously); the attacker is the device after its buffer was unmapped.

What is left out
    ATS/translated-request attacks (ACS TB, DT), attacks through the vIOMMU, DMA to MMIO of the
    host's own devices through the IOMMU, timing side channels, and the host kernel reacting
    to faults (the fault event is logged, nobody services it).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from passthru.analysis.acs import AcsOverride
from passthru.analysis.groups import compute_iommu_groups
from passthru.errors import AssignmentError, ConfigError
from passthru.guest.kernel import GuestKernel
from passthru.hv.host import Host
from passthru.hv.iommu_driver import IommuDriver
from passthru.hv.vfio import Vfio
from passthru.hv.vm import MmioRegion, Vm
from passthru.hw.iommu.vtd.faults import FaultRecord
from passthru.hw.iommu.vtd.intremap import InterruptResult
from passthru.hw.iommu.vtd.unit import DmarUnit
from passthru.hw.pci.device import AcsSpec, Bar, PciFunction
from passthru.hw.pci.regs import AcsFlags
from passthru.hw.pci.topology import Topology
from passthru.hw.platform import DmaResult, DmaStatus, Platform
from passthru.scenarios.attacks.device import (
    BAR_SIZE,
    BUFFER_OFFSET,
    CTRL,
    DMA_ADDR,
    DMA_ENGINE_CLASS,
    DMA_ENGINE_DEVICE,
    DMA_ENGINE_VENDOR,
    DMA_LEN,
    DOORBELL,
    MSI_ADDR,
    MSI_DATA,
    REQUESTER_ID,
    STATUS,
    Ctrl,
    DmaEngine,
    Status,
)

MiB = 1 << 20
GiB = 1 << 30
HOST_MEMORY = 1 * GiB
VM_MEMORY = 4 * MiB
HOST_KERNEL_HPA = 0x0100_0000  # 16 MiB: inside the host's reserve (its kernel, in this model)
VICTIM_GPA = 0x0010_0000  # a buffer in the victim VM's RAM
ATTACKER_GPA = 0x0020_0000  # a buffer in the attacker's own RAM
GUEST_VECTOR = 0x41  # the victim guest's vector for its device
HOST_VECTOR = 0x31  # without IR: the host vector of the victim device's VFIO MSI handler
MSI_BASE = 0xFEE0_0000
FULL_ACS = AcsSpec.linux_default()  # SV, RR, CR, UF (what pci_std_enable_acs leaves on)
SECRET = b"host kernel page: struct cred { uid=0 gid=0 } ... !!".ljust(64, b".")


# ---------------------------------------------------------------------- outcome record
@dataclass
class AttackOutcome:
    """What one attack achieved under one configuration, with the machine's own evidence."""

    name: str
    configuration: str
    succeeded: bool
    evidence: list[str]
    expected: bool  # whether the attack should succeed under this configuration
    faults: list[FaultRecord] = field(default_factory=list)
    violations: list[tuple[str, str]] = field(default_factory=list)  # (ACS flag, port BDF)
    interrupts: list[InterruptResult] = field(default_factory=list)  # delivered to a victim
    bytes_changed: int = 0  # victim bytes (memory, RAM or BAR) the attack changed
    # The static reachability analysis' verdict on the same host just before the attack
    # (True: it says the target is reachable); None when the analysis does not cover it.
    analysis: bool | None = None

    @property
    def verdict(self) -> str:
        return "SUCCEEDED" if self.succeeded else "BLOCKED"

    @property
    def as_expected(self) -> bool:
        return self.succeeded == self.expected

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "configuration": self.configuration,
            "succeeded": self.succeeded,
            "expected": self.expected,
            "as_expected": self.as_expected,
            "bytes_changed": self.bytes_changed,
            "analysis_reachable": self.analysis,
            "faults": [{"reason": f.reason.name, "code": int(f.reason),
                        "source_id": f"{f.source_id:#06x}", "address": f"{f.address:#x}"}
                       for f in self.faults],
            "acs_violations": [{"flag": flag, "port": port} for flag, port in self.violations],
            "interrupts": [{"vector": f"{i.vector:#04x}", "destination": f"{i.destination:#x}",
                            "remapped": i.remapped} for i in self.interrupts],
            "evidence": list(self.evidence),
        }


# ---------------------------------------------------------------------- topologies and hosts
def add_dma_engine(topology: Topology, parent: Any, slot: int = 0,
                   function: int = 0) -> PciFunction:
    """A DMA-engine endpoint (one 4 KiB BAR) below ``parent``."""
    return topology.add_endpoint(parent, slot, function, vendor_id=DMA_ENGINE_VENDOR,
                                 device_id=DMA_ENGINE_DEVICE, class_code=DMA_ENGINE_CLASS,
                                 bars=[Bar(0, BAR_SIZE, is_64=False)], name="DMA engine")


def switch_topology(port_acs: AcsSpec | None) -> Topology:
    """Root port 00:01.0 (full ACS) -> switch 01:00.0 -> DMA engines 03:00.0 and 04:00.0."""
    t = Topology()
    rp = t.add_root_port(1, acs=FULL_ACS)
    sw = t.add_switch(rp, 2, acs=port_acs)
    for port in sw.downstream:
        add_dma_engine(t, port)
    return t.enumerate()


def multifunction_topology() -> Topology:
    """Root port 00:01.0 (full ACS) -> one two-function DMA engine 01:00.0/01:00.1, no ACS."""
    t = Topology()
    rp = t.add_root_port(1, acs=FULL_ACS)
    add_dma_engine(t, rp, 0, 0)
    add_dma_engine(t, rp, 0, 1)
    return t.enumerate()


def root_ports_topology(acs_a: AcsSpec | None, acs_b: AcsSpec | None) -> Topology:
    """DMA engine 01:00.0 below root port 00:01.0, DMA engine 02:00.0 below 00:02.0."""
    t = Topology()
    add_dma_engine(t, t.add_root_port(1, acs=acs_a))
    add_dma_engine(t, t.add_root_port(2, acs=acs_b))
    return t.enumerate()


def new_host(topology: Topology, *, seed: int = 0, strict: bool = True,
             identity_default: bool = False, interrupt_remapping: bool = True,
             acs_override: AcsOverride | None = None) -> Host:
    """A 4-core, 1 GiB host for one attack.

    ``interrupt_remapping=False`` swaps in a DMAR unit without ECAP.IR before anything is
    attached (Host has no knob for it); ``acs_override`` makes the host's IOMMU groups the
    ones a kernel with ``pcie_acs_override=`` computes (the fabric is unchanged).
    """
    if identity_default and not interrupt_remapping:
        raise ConfigError("new_host: identity_default with interrupt_remapping=False is not "
                          "a combination the catalog needs")
    host = Host(topology, cores=4, memory_bytes=HOST_MEMORY, strict=strict,
                identity_default=identity_default, posted_interrupts=interrupt_remapping,
                seed=seed)
    if not interrupt_remapping:
        old = host.iommu  # give back what its bring-up allocated (hv.build does the same)
        for addr, size in ((old.root_table, 4096), (getattr(old, "_iq", None), 4096),
                           (getattr(old, "_iq_status", None), 4096),
                           (old.ir_table, max(4096, old.ir_entries * 16))):
            if addr is not None:
                host.frames.free(addr, size)
        host.unit = DmarUnit(host.memory, interrupt_remapping=False, posted_interrupts=False)
        host.iommu = IommuDriver(host.memory, host.frames, host.unit, strict=strict,
                                 interrupt_remapping=False, clock=lambda: host.env.now)
        host.platform = Platform(topology, host.memory, host.unit)
    if acs_override is not None:
        host._groups = compute_iommu_groups(topology, acs_override)
    return host


# ---------------------------------------------------------------------- the malicious driver
@dataclass(frozen=True)
class Job:
    """One transfer the malicious driver programs: where, what, and the MSI it asks for."""

    target: int
    payload: bytes
    msi: tuple[int, int] | None = None  # (MSI address, MSI data) to raise on completion
    requester_id: int | None = None  # forged requester ID (a compromised device)
    read: bool = False


GuestGen = Generator[Any, Any, Any]


def malicious_driver(bar: int, jobs: list[Job], statuses: list[int]) -> Callable[
        [GuestKernel], GuestGen]:
    """A guest program that programs the DMA engine at guest-physical ``bar`` for each job,
    polls STATUS until DONE or ERROR and appends the final STATUS to ``statuses``."""

    def program(g: GuestKernel) -> GuestGen:
        for job in jobs:
            for i in range(0, len(job.payload), 8):
                chunk = job.payload[i:i + 8].ljust(8, b"\0")
                yield from g.mmio_write(bar + BUFFER_OFFSET + i, int.from_bytes(chunk, "little"),
                                        8)
            yield from g.mmio_write(bar + DMA_ADDR, job.target, 8)
            yield from g.mmio_write(bar + DMA_LEN, len(job.payload), 4)
            ctrl = Ctrl(0)
            if job.read:
                ctrl |= Ctrl.DIR_READ
            if job.msi is not None:
                yield from g.mmio_write(bar + MSI_ADDR, job.msi[0], 8)
                yield from g.mmio_write(bar + MSI_DATA, job.msi[1], 4)
                ctrl |= Ctrl.IRQ_EN
            if job.requester_id is not None:
                yield from g.mmio_write(bar + REQUESTER_ID, job.requester_id, 4)
                ctrl |= Ctrl.RID_OVERRIDE
            yield from g.mmio_write(bar + CTRL, int(ctrl), 4)
            yield from g.mmio_write(bar + DOORBELL, 1, 4)
            while True:
                status = yield from g.mmio_read(bar + STATUS, 4)
                if status & (Status.DONE | Status.ERROR):
                    break
                yield from g.compute(200)
            yield from g.mmio_write(bar + STATUS, status & (Status.DONE | Status.ERROR), 4)
            statuses.append(status)
    return program


@dataclass
class _DirectBar:
    """BAR 0 of a device mapped straight into a guest, with no IOMMU domain change."""

    dev: DmaEngine

    def read(self, offset: int, size: int) -> int:
        return self.dev.mmio_read(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        self.dev.mmio_write(offset, value, size)


def map_bar_unisolated(vm: Vm, dev: DmaEngine) -> int:
    """Give ``vm`` the device's BAR while its DMA stays in the host's default domain."""
    gpa = vm.alloc_mmio(BAR_SIZE)
    vm.add_mmio(MmioRegion(f"{dev.fn.bdf}/BAR0", gpa, BAR_SIZE, _DirectBar(dev), traps=False))
    return gpa


def run_guest(vm: Vm, bar: int, jobs: list[Job]) -> list[int]:
    statuses: list[int] = []
    GuestKernel(vm).run(malicious_driver(bar, jobs, statuses))
    vm.host.env.run()
    return statuses


def device_dma(dev: DmaEngine, job: Job) -> DmaResult:
    """The device itself (compromised firmware, or its tenant) programs one transfer."""
    for i in range(0, len(job.payload), 8):
        dev.mmio_write(BUFFER_OFFSET + i, int.from_bytes(job.payload[i:i + 8].ljust(8, b"\0"),
                                                         "little"), 8)
    dev.mmio_write(DMA_ADDR, job.target, 8)
    dev.mmio_write(DMA_LEN, len(job.payload), 4)
    dev.mmio_write(CTRL, int(Ctrl.DIR_READ) if job.read else 0, 4)
    before = len(dev.log)
    dev.mmio_write(DOORBELL, 1, 4)
    dev.host.env.run()
    dev.mmio_write(STATUS, int(Status.DONE | Status.ERROR), 4)
    return dev.log[before]


def payload(host: Host, n: int = 64) -> bytes:
    """``n`` seeded attacker bytes (never equal to what they overwrite: no 0x00 or '.')."""
    rng = host.streams.get("attacks/payload")
    return bytes(0x80 | rng.randrange(0x80) for _ in range(n))


# ---------------------------------------------------------------------- evidence
def bdf_of(rid: int) -> str:
    return f"{rid >> 8:02x}:{(rid >> 3) & 0x1F:02x}.{rid & 7}"


def fault_line(f: FaultRecord) -> str:
    if f.reason.is_interrupt:
        what = (f"MSI write to {f.address:#x}" if f.interrupt_index is None
                else f"MSI write to {f.address:#x} (interrupt index {f.interrupt_index:#x})")
    else:
        what = f"{'write' if f.is_write else 'read'} at {f.address:#x}"
    return (f"fault {int(f.reason):#04x} {f.reason.name}: source-id {f.source_id:#06x} "
            f"({bdf_of(f.source_id)}) {what}")


def frcd_lines(unit: DmarUnit) -> list[str]:
    """The fault recording registers with F set, as software would read them."""
    out = []
    for i in unit.faults.pending():
        lo, hi = unit.faults.slot(i)
        out.append(f"FRCD{i}: F=1 FR={(hi >> 32) & 0xFF:#04x} SID={hi & 0xFFFF:#06x} "
                   f"FI={lo:#x}")
    return out


def describe(res: DmaResult) -> list[str]:
    """Evidence lines for one request the device issued."""
    route = res.route
    req = route.request
    what = f"{'write' if req.is_write else 'read'} of {req.length} B at {req.address:#x}"
    rid = f" with requester ID {req.requester_id:#06x} ({bdf_of(req.requester_id)})"
    if res.status is DmaStatus.ACS_VIOLATION:
        assert route.violation is not None and route.at_port is not None
        return [f"{what}{rid}: ACS violation {route.violation.name} at port "
                f"{route.at_port.bdf} ({route.reason})"]
    if res.status is DmaStatus.PEER:
        assert route.target is not None and route.bar is not None
        via = (f"via {', '.join(p.bdf for p in route.ports)}" if route.ports
               else "inside the multifunction device")
        return [f"{what}: peer-to-peer into {route.target.bdf} BAR{route.bar.index} "
                f"{via} (the IOMMU never saw it)"]
    lines = []
    if route.redirected:
        lines.append(f"{what}: redirected upstream by ACS P2P Request Redirect "
                     f"(crossed {', '.join(p.bdf for p in route.ports)})")
    if res.status is DmaStatus.FAULT:
        assert res.fault is not None
        lines.append(fault_line(res.fault))
    elif res.status is DmaStatus.INTERRUPT:
        assert res.interrupt is not None
        lines.append(interrupt_line(res.interrupt))
    elif res.status is DmaStatus.MEMORY:
        lines.append(f"{what}{rid}: reached memory")
    else:
        lines.append(f"{what}: unsupported request ({route.reason})")
    return lines


def interrupt_line(i: InterruptResult) -> str:
    how = ("posted" if i.posted else "remapped") if i.remapped else (
        "compatibility format, not remapped")
    return f"interrupt raised: vector {i.vector:#04x} -> destination {i.destination:#x} ({how})"


def diff_line(before: bytes, after: bytes, base: int, where: str) -> tuple[int, str]:
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    if not changed:
        return 0, f"0 bytes changed in {where} [{base:#x}, {base + len(before):#x})"
    lo, hi = base + changed[0], base + changed[-1]
    return len(changed), f"{len(changed)} bytes changed in {where} at {lo:#x}-{hi:#x}"


def _collect(out: AttackOutcome, results: list[DmaResult], host: Host) -> None:
    for res in results:
        out.evidence.extend(describe(res))
        if res.fault is not None:
            out.faults.append(res.fault)
        if res.status is DmaStatus.ACS_VIOLATION and res.route.violation is not None:
            port = res.route.at_port
            out.violations.append((res.route.violation.name or "",
                                   port.bdf if port is not None else "?"))
    out.evidence.extend(frcd_lines(host.unit))


def _domain_line(host: Host, fn: PciFunction) -> str:
    dom = host.iommu.domain_of(fn.rid)
    if dom is None:
        return f"{fn.bdf} is attached to no IOMMU domain"
    kind = "identity pass-through" if dom.pass_through else "translated"
    return f"{fn.bdf} is in IOMMU domain {dom.did} ({kind})"


def static_verdict(host: Host, fn: PciFunction, check: Callable[[Any], bool]) -> bool | None:
    """What ``analysis.reachability`` says about ``fn`` now: ``check(FunctionReach)``.

    None when the analysis is not installed; its own errors propagate.
    """
    try:
        from passthru.analysis.reachability import analyze
    except ImportError:
        return None
    reach = analyze(host).functions.get(fn.bdf)
    return None if reach is None else bool(check(reach))


def _note_analysis(out: AttackOutcome, verdict: bool | None) -> None:
    out.analysis = verdict
    if verdict is not None:
        agree = "agrees" if verdict == out.succeeded else "DISAGREES"
        out.evidence.append(f"static analysis: {'reachable' if verdict else 'unreachable'} "
                            f"({agree})")


_WRITE = 2  # analysis.reachability.Access.WRITE


# ---------------------------------------------------------------------- the attacks
def _choice(value: object, allowed: tuple[object, ...], knob: str) -> None:
    if value not in allowed:
        raise ConfigError(f"attack knob {knob}={value!r} must be one of "
                          f"{', '.join(repr(a) for a in allowed)}")


def dma_into_host_memory(domain: str = "translated", *, seed: int = 0) -> AttackOutcome:
    """A malicious guest driver points its device's DMA at a host kernel page."""
    _choice(domain, ("translated", "identity"), "domain")
    identity = domain == "identity"
    host = new_host(switch_topology(FULL_ACS), seed=seed, identity_default=identity)
    host.memory.write(HOST_KERNEL_HPA, SECRET)
    vm = host.create_vm("tenant-a", VM_MEMORY, [1])
    fn = host.topology.find("03:00.0")
    dev = DmaEngine(host, fn)
    if identity:
        bar = map_bar_unisolated(vm, dev)
        config = "identity domain (iommu=pt; device left in the host default domain)"
    else:
        (assigned,) = Vfio(host).assign(vm, fn)
        bar = assigned.bar_gpas[0]
        config = "translated domain (VFIO type1, IOVA = GPA)"
    data = payload(host)
    verdict = static_verdict(host, fn, lambda r: HOST_KERNEL_HPA in r.hpa(_WRITE))
    run_guest(vm, bar, [Job(HOST_KERNEL_HPA, data)])
    out = AttackOutcome("dma-to-host-memory", config, False, [_domain_line(host, fn)],
                        expected=identity)
    _collect(out, dev.log, host)
    n, line = diff_line(SECRET, host.memory.read(HOST_KERNEL_HPA, len(SECRET)),
                        HOST_KERNEL_HPA, "host kernel memory (HPA)")
    out.evidence.append(line)
    out.bytes_changed = n
    out.succeeded = n > 0
    _note_analysis(out, verdict)
    return out


def _two_vms(host: Host, a: str, b: str) -> tuple[Vm, Vm, DmaEngine, DmaEngine, int, Vfio]:
    vm_a = host.create_vm("tenant-a", VM_MEMORY, [1])
    vm_b = host.create_vm("tenant-b", VM_MEMORY, [2])
    fa, fb = host.topology.find(a), host.topology.find(b)
    da, db = DmaEngine(host, fa), DmaEngine(host, fb)
    vfio = Vfio(host)
    (assigned,) = vfio.assign(vm_a, fa)
    vfio.assign(vm_b, fb)
    return vm_a, vm_b, da, db, assigned.bar_gpas[0], vfio


def _groups_line(host: Host, *fns: PciFunction) -> str:
    return "IOMMU groups: " + ", ".join(f"{fn.bdf} in group {host.group_of(fn).id}"
                                        for fn in fns)


def p2p_bar_write(acs: str = "rr-cr", *, seed: int = 0) -> AttackOutcome:
    """VM A's device writes VM B's device's DMA_ADDR register peer-to-peer under a switch."""
    _choice(acs, ("none", "rr-cr"), "acs")
    none = acs == "none"
    host = new_host(switch_topology(None if none else FULL_ACS), seed=seed)
    vm_a, vm_b, da, db, bar, _ = _two_vms(host, "03:00.0", "04:00.0")
    db.mmio_write(DMA_ADDR, VICTIM_GPA, 8)  # B's driver has set up its next transfer
    before = db.bar_image()
    bar_b = db.fn.bars[0].address or 0
    evil = HOST_KERNEL_HPA.to_bytes(8, "little")  # redirect B's next DMA
    verdict = static_verdict(host, da.fn, lambda r: (db.fn.bdf, 0) in r.peer_bars())
    run_guest(vm_a, bar, [Job(bar_b + DMA_ADDR, evil)])
    config = ("switch downstream ports without ACS" if none
              else "switch downstream ports with ACS SV/RR/CR/UF")
    out = AttackOutcome("p2p-bar-write", config, False,
                        [_groups_line(host, da.fn, db.fn)], expected=none)
    _collect(out, da.log, host)
    n, line = diff_line(before, db.bar_image(), bar_b, f"{db.fn.bdf} BAR0 (vm tenant-b's device)")
    out.evidence.append(line)
    if n:
        out.evidence.append(f"{db.fn.bdf} DMA_ADDR is now {db.mmio_read(DMA_ADDR, 8):#x} "
                            f"(was {VICTIM_GPA:#x})")
    out.bytes_changed = n
    out.succeeded = n > 0
    _note_analysis(out, verdict)
    return out


def msi_injection(interrupt_remapping: bool = True, *, seed: int = 0) -> AttackOutcome:
    """VM A's device forges VM B's device's MSI to inject an interrupt into VM B."""
    ir = bool(interrupt_remapping)
    host = new_host(switch_topology(FULL_ACS), seed=seed, interrupt_remapping=ir)
    vm_a, vm_b, da, db, bar, vfio = _two_vms(host, "03:00.0", "04:00.0")
    core_b = vm_b.vcpus[0].core
    compat = (MSI_BASE | (core_b << 12), HOST_VECTOR)  # what an unremapped MSI to B looks like
    unsafe_routes: dict[tuple[int, int], tuple[Vm, int, int]] = {}
    if ir:
        victim_msi = vfio.setup_msi(db.fn, GUEST_VECTOR, vcpu=0)
        jobs = [Job(ATTACKER_GPA, b"\0" * 8, msi=compat), Job(ATTACKER_GPA, b"\0" * 8,
                                                              msi=victim_msi)]
        config = "interrupt remapping on (posted, SID verification)"
    else:
        # vfio_iommu_type1.allow_unsafe_interrupts=1: B's MSI is host vector HOST_VECTOR on
        # B's core, whose handler signals B's irqfd; KVM then injects GUEST_VECTOR.
        victim_msi = compat
        unsafe_routes[(core_b, HOST_VECTOR)] = (vm_b, 0, GUEST_VECTOR)
        jobs = [Job(ATTACKER_GPA, b"\0" * 8, msi=compat)]
        config = "interrupt remapping off (allow_unsafe_interrupts=1)"
    db.mmio_write(MSI_ADDR, victim_msi[0], 8)
    db.mmio_write(MSI_DATA, victim_msi[1], 4)
    verdict = static_verdict(host, da.fn, lambda r: r.interrupts.any_vector or any(
        e.target.startswith("vm tenant-b") for e in r.interrupts.entries))
    run_guest(vm_a, bar, jobs)
    out = AttackOutcome("msi-injection", config, False,
                        [f"victim {db.fn.bdf} MSI: address {victim_msi[0]:#x} data "
                         f"{victim_msi[1]:#x} -> vm tenant-b vCPU0 vector {GUEST_VECTOR:#04x}"],
                        expected=not ir)
    msis = [r for r in da.log if r.route.request.address >= MSI_BASE]
    _collect(out, msis, host)
    for res in msis:
        intr = res.interrupt
        if res.status is not DmaStatus.INTERRUPT or intr is None:
            continue
        route = unsafe_routes.get((intr.destination, intr.vector))
        if route is not None:
            vm, vcpu, vector = route
            out.evidence.append(f"host vector {intr.vector:#04x} on core {intr.destination} "
                                f"is {db.fn.bdf}'s VFIO MSI handler: KVM injects "
                                f"{vector:#04x} into vm {vm.name} vCPU{vcpu}")
            vm.deliver_interrupt(vcpu, vector, posted=False)
            out.interrupts.append(intr)
    host.env.run()
    pending = sorted(vm_b.vcpus[0].pending)
    out.evidence.append(f"vm tenant-b vCPU0 pending vectors: "
                        f"{[hex(v) for v in pending] or 'none'}; interrupts delivered: "
                        f"{vm_b.stats.interrupts_injected + vm_b.stats.interrupts_posted}")
    out.succeeded = GUEST_VECTOR in pending
    _note_analysis(out, verdict)
    return out


class HostDmaDriver:
    """A host kernel driver's DMA API over a DMA engine (dma_map_single / dma_unmap_single).

    It owns one translated DMA domain (or uses the host's identity domain), hands out IOVAs
    from a bump allocator and programs the engine with CPU stores.
    """

    IOVA_BASE = 0x10_0000

    def __init__(self, host: Host, dev: DmaEngine, *, name: str = "dmaengine") -> None:
        self.host = host
        self.dev = dev
        dev.fn.driver = name
        self.identity = host.identity_domain is not None
        if self.identity:
            self.domain = host.identity_domain
        else:
            self.domain = host.iommu.alloc_domain("dma")
            host.iommu.attach(self.domain, dev.fn.rid)
        self._next = self.IOVA_BASE
        self.mapped: dict[int, tuple[int, int]] = {}  # iova -> (hpa, size)

    def map(self, hpa: int, size: int = 4096) -> int:
        if self.identity:
            return hpa  # iommu=pt: the bus address is the physical address
        iova = self._next
        self._next += -(-size // 4096) * 4096
        assert self.domain is not None
        self.host.iommu.map(self.domain, iova, hpa, size, read=True, write=True)
        self.mapped[iova] = (hpa, size)
        return iova

    def unmap(self, iova: int) -> None:
        if self.identity:
            return
        _, size = self.mapped.pop(iova)
        assert self.domain is not None
        self.host.iommu.unmap(self.domain, iova, size)


def stale_iotlb_dma(strict: bool = True, *, seed: int = 0) -> AttackOutcome:
    """The device writes a buffer's IOVA again after the driver unmapped and freed it."""
    host = new_host(switch_topology(FULL_ACS), seed=seed, strict=bool(strict))
    dev = DmaEngine(host, host.topology.find("03:00.0"))
    drv = HostDmaDriver(host, dev)
    buf = host.frames.alloc(4096)
    iova = drv.map(buf)
    legit = device_dma(dev, Job(iova, b"\x11" * 64))  # an ordinary I/O warms the IOTLB
    drv.unmap(iova)
    host.frames.free(buf, 4096)
    page = host.frames.alloc(4096)  # the kernel reuses the page at once
    host.memory.write(page, SECRET)
    config = ("strict invalidation (iommu.strict=1)" if strict
              else "lazy invalidation (flush queue, iommu.strict=0)")
    out = AttackOutcome("stale-iotlb", config, False, [
        f"I/O to IOVA {iova:#x} -> HPA {buf:#x}: {legit.status.value} (IOTLB filled)",
        f"dma_unmap of IOVA {iova:#x}; page {buf:#x} freed and reused at {page:#x}; "
        f"flush queue holds {host.iommu.flush_queue} range(s)"], expected=not strict)
    before = len(dev.log)
    verdict = static_verdict(host, dev.fn, lambda r: r.translate(iova, True) == page)
    device_dma(dev, Job(iova, payload(host)))
    _collect(out, dev.log[before:], host)
    n, line = diff_line(SECRET, host.memory.read(page, len(SECRET)), page,
                        "the reused host page (HPA)")
    out.evidence.append(line)
    out.bytes_changed = n
    out.succeeded = n > 0
    _note_analysis(out, verdict)
    return out


def requester_id_spoofing(source_validation: bool = True, *, seed: int = 0) -> AttackOutcome:
    """VM A's compromised device forges VM B's device's requester ID to write VM B's RAM."""
    sv = bool(source_validation)
    acs_a = FULL_ACS if sv else AcsSpec(cap=FULL_ACS.cap, ctl=FULL_ACS.ctl & ~AcsFlags.SV)
    host = new_host(root_ports_topology(acs_a, FULL_ACS), seed=seed)
    vm_a, vm_b, da, db, bar, _ = _two_vms(host, "01:00.0", "02:00.0")
    vm_b.write(VICTIM_GPA, SECRET)
    forged = db.fn.rid
    run_guest(vm_a, bar, [Job(VICTIM_GPA, payload(host), requester_id=forged)])
    config = ("root port with ACS Source Validation" if sv
              else "root port without ACS SV (RR/CR/UF only)")
    out = AttackOutcome("rid-spoofing", config, False,
                        [_groups_line(host, da.fn, db.fn),
                         f"attacker {da.fn.bdf} forges requester ID {forged:#06x} "
                         f"({db.fn.bdf}, vm tenant-b's device)"], expected=not sv)
    _collect(out, da.log, host)
    hpa = vm_b.gpa_to_hpa(VICTIM_GPA)
    n, line = diff_line(SECRET, vm_b.read(VICTIM_GPA, len(SECRET)), hpa,
                        f"vm tenant-b RAM (GPA {VICTIM_GPA:#x}, HPA)")
    out.evidence.append(line)
    out.bytes_changed = n
    out.succeeded = n > 0
    return out


def unviable_group_assignment(acs_override: bool = False, *, seed: int = 0) -> AttackOutcome:
    """A tenant asks for one function of a device whose other function the host keeps."""
    override = AcsOverride(multifunction=True) if acs_override else None
    host = new_host(multifunction_topology(), seed=seed, acs_override=override)
    fa, fb = host.topology.find("01:00.0"), host.topology.find("01:00.1")
    da, db = DmaEngine(host, fa), DmaEngine(host, fb)
    HostDmaDriver(host, db, name="dmaengine")  # the host keeps 01:00.1 for itself
    db.buffer[:len(SECRET)] = SECRET
    vm = host.create_vm("tenant-a", VM_MEMORY, [1])
    config = ("pcie_acs_override=multifunction (group split, fabric unchanged)"
              if acs_override else "multifunction device without ACS, Linux's IOMMU groups")
    out = AttackOutcome("unviable-group", config, False, [_groups_line(host, fa, fb)],
                        expected=bool(acs_override))
    before = db.bar_image()
    try:
        (assigned,) = Vfio(host).assign(vm, fa)
    except AssignmentError as exc:
        out.evidence.append(f"VFIO refused the assignment: {exc}")
        out.evidence.append(f"{fa.bdf} stays with the host: the tenant never drives it")
        return out
    out.evidence.append(f"VFIO assigned {fa.bdf} to vm tenant-a; {fb.bdf} is bound to host "
                        f"driver {fb.driver!r}")
    bar_b = fb.bars[0].address or 0
    verdict = static_verdict(host, fa, lambda r: (fb.bdf, 0) in r.peer_bars())
    run_guest(vm, assigned.bar_gpas[0], [Job(bar_b + BUFFER_OFFSET, payload(host))])
    _collect(out, da.log, host)
    n, line = diff_line(before, db.bar_image(), bar_b, f"{fb.bdf} BAR0 (host-owned device)")
    out.evidence.append(line)
    out.bytes_changed = n
    out.succeeded = n > 0
    _note_analysis(out, verdict)
    return out


# ---------------------------------------------------------------------- the catalog
@dataclass(frozen=True)
class Attack:
    """One attack and the knob value under which it should succeed / be blocked."""

    name: str
    title: str
    knob: str
    open: object
    blocked: object
    defence: str
    run: Callable[..., AttackOutcome]

    def outcome(self, value: object, *, seed: int = 0) -> AttackOutcome:
        return self.run(value, seed=seed)


CATALOG: tuple[Attack, ...] = (
    Attack("dma-to-host-memory", "malicious guest driver DMAs into host kernel memory",
           "domain", "identity", "translated", "translated DMA domain", dma_into_host_memory),
    Attack("p2p-bar-write", "VM A's device writes VM B's device BAR peer-to-peer",
           "acs", "none", "rr-cr", "ACS P2P Request/Completion Redirect", p2p_bar_write),
    Attack("msi-injection", "VM A's device forges VM B's MSI", "interrupt_remapping",
           False, True, "interrupt remapping", msi_injection),
    Attack("stale-iotlb", "DMA after unmap through a stale IOTLB entry", "strict",
           False, True, "strict IOTLB invalidation", stale_iotlb_dma),
    Attack("rid-spoofing", "requester-ID spoofing below a root port", "source_validation",
           False, True, "ACS Source Validation", requester_id_spoofing),
    Attack("unviable-group", "assigning a device whose group is not viable", "acs_override",
           True, False, "VFIO group viability", unviable_group_assignment),
)


def attack(name: str) -> Attack:
    for a in CATALOG:
        if a.name == name:
            return a
    raise ConfigError(f"attack {name!r} is not in the catalog "
                      f"(have: {', '.join(a.name for a in CATALOG)})")


def run_catalog(seed: int = 0) -> list[tuple[Attack, AttackOutcome, AttackOutcome]]:
    """Every attack in its open and its blocked configuration: (attack, open, blocked)."""
    return [(a, a.outcome(a.open, seed=seed), a.outcome(a.blocked, seed=seed)) for a in CATALOG]
