"""Soundness: the reachability analysis and the simulator agree, probe for probe.

A seeded loop (not hypothesis: a fixed, reproducible set with a known run time) generates
1,000 small random hosts as host files (``HostFile`` models: root ports, switches,
PCIe-to-PCI bridges, multifunction devices, SR-IOV, RC endpoints, random ACS controls and
egress vectors, ATS, RC P2P on/off; IOMMU on/off, translated or identity default domains,
strict or lazy invalidation, interrupt remapping and posting on/off, 39/48-bit tables; VMs
with viable group assignments), builds each with ``hv.build.build``, then disturbs it the way
a running host does (DMA that fills the IOTLB, host DMA domains with extra read-only or
read/write mappings, unmaps - strict, or lazy with the IOTLB entry left stale - and freed
buffers). The analysis runs on that state; then, for every DMA-capable function:

- memory: read and write probes at VM GPAs (IOVA = GPA), landmark HPAs (reserve, VM frames,
  IOMMU tables, IR table, the top of memory), every stale or extra IOVA, every BAR address
  and the first and last bytes of every window the analysis claims; a probe must get
  through exactly when the analysis says so, and a write's marker must land at the HPA the
  analysis names (a read must return the marker planted there);
- peers: an untranslated write and read to every other function's BARs (translated writes
  too for ATS functions) must be taken peer-to-peer by that BAR exactly when reported;
- interrupts: a compatibility-format MSI and a remappable MSI through every allocated IRTE
  index (plus one unused) must be delivered exactly when reported.

Zero mismatches are allowed. Read probes include the MSI window (blocked with a read fault
when remapping is on, VT-d 3.14) and addresses past the end of host memory (an Unsupported
Request); write probes skip the MSI window, where a write is an interrupt request.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

import pytest

from passthru.analysis.reachability import analyze
from passthru.config import build_host as build_config
from passthru.config.host_model import HostFile
from passthru.errors import PassthruError
from passthru.hv.build import HostBuild, build
from passthru.hw.iommu.vtd.entries import MSI_WINDOW_BASE, MSI_WINDOW_LAST, msi_remappable_address
from passthru.hw.pci.fabric import AddressType
from passthru.hw.platform import DmaStatus

MiB = 1 << 20
HOSTS = 1000

_ALL = ["SV", "TB", "RR", "CR", "UF", "EC", "DT"]
_PORT_ACS: list[object] = [
    "full", "off", "none", "none",
    {"cap": _ALL, "ctl": ["RR"]},
    {"cap": _ALL, "ctl": ["RR", "UF"]},
    {"cap": _ALL, "ctl": ["RR", "UF", "DT", "SV"]},
    {"cap": _ALL, "ctl": ["SV", "TB"]},
    {"cap": _ALL, "ctl": ["DT"]},
    {"cap": _ALL, "ctl": ["EC"], "egress_vector": 0b1010, "ecvs": 8},
    {"cap": _ALL, "ctl": ["EC", "TB"], "egress_vector": 0b0101, "ecvs": 8},
]
_FN_ACS: list[object] = [None, None, {"cap": ["RR", "CR"], "ctl": ["RR", "CR"]},
                         {"cap": _ALL, "ctl": ["EC"], "egress_vector": 0b01, "ecvs": 4},
                         {"cap": _ALL, "ctl": ["DT"]}]
_CLASSES = ["nvme", "ethernet", "3d", "audio", "usb"]


# ------------------------------------------------------------------------------ generation
def _bars(rng: random.Random) -> list[object]:
    bars: list[object] = [rng.choice(["4KiB", "16KiB", "1MiB"])]
    if rng.random() < 0.2:
        bars.append({"size": "16MiB", "bits": 64, "prefetchable": True})
    return bars


def _endpoint_functions(rng: random.Random, kind: str = "endpoint") -> list[dict]:
    nfn = rng.choice([1, 1, 1, 2, 3])
    out = []
    for f in range(nfn):
        d: dict = {"kind": kind, "slot": 0, "function": f, "class": rng.choice(_CLASSES),
                   "bars": _bars(rng), "ats": rng.random() < 0.3}
        acs = rng.choice(_FN_ACS) if nfn > 1 else None
        if acs is not None:
            d["acs"] = acs
        if f == 0 and rng.random() < 0.2:
            n = rng.randint(1, 3)
            d["sriov"] = {"total_vfs": n, "num_vfs": rng.randint(1, n), "vf_device_id": 0x10ED,
                          "vf_offset": rng.choice([nfn, 0x80]), "vf_stride": 1,
                          "vf_bars": ["16KiB"]}
        out.append(d)
    return out


def _below(rng: random.Random, depth: int) -> list[dict]:
    kind = rng.choice(["endpoint", "endpoint", "switch", "bridge", "empty"] if depth < 2
                      else ["endpoint", "endpoint", "empty"])
    if kind == "endpoint":
        return _endpoint_functions(rng)
    if kind == "switch":
        ports = [{"acs": rng.choice(_PORT_ACS), "device": _below(rng, depth + 1)}
                 for _ in range(rng.randint(1, 3))]
        return [{"kind": "switch", "port": ports}]
    if kind == "bridge":
        devs = [{"kind": "pci", "slot": s + 1, "bars": ["4KiB"], "class": "ethernet"}
                for s in range(rng.randint(1, 2))]
        return [{"kind": "pcie-to-pci-bridge", "device": devs}]
    return []


def _host_dict(rng: random.Random, seed: int) -> dict:
    big = rng.random() < 0.15  # memory and VMs reaching into the 32-bit MMIO window
    iommu: dict = {"enabled": rng.random() < 0.9,
                   "mode": rng.choice(["translated", "identity"]),
                   "strict": rng.random() < 0.5,
                   "interrupt_remapping": rng.random() < 0.8,
                   "iotlb_entries": 1 << 16,
                   "address_width": rng.choice([39, 48])}
    if iommu["interrupt_remapping"]:
        iommu["posted_interrupts"] = rng.random() < 0.5
    else:
        iommu["allow_unsafe_interrupts"] = True
    root_ports = [{"slot": i + 1, "acs": rng.choice(_PORT_ACS), "device": _below(rng, 0)}
                  for i in range(rng.randint(1, 3))]
    devices = [{"kind": "rc-endpoint", "slot": 0x10 + i, "bars": ["4KiB"], "class": "usb"}
               for i in range(rng.randint(0, 2))]
    vms = []
    core = 0
    for i in range(rng.randint(0, 3)):
        size = rng.choice([4 * MiB, 6 * MiB + 4096 * 3, 8 * MiB])
        if big and i == 0:
            size = 3 * 1024 * MiB + 256 * MiB
        vms.append({"name": f"vm{i}", "memory": size, "vcpus": [core, core + 1]})
        core += 2
    memory = (5 * 1024 if big else 128) * MiB
    return {"host": {"name": f"random-{seed}", "cores": 8, "memory": memory,
                     "reserved_memory": 8 * MiB, "iommu": iommu},
            "pci": {"root_port": root_ports, "device": devices,
                    "rc_p2p": rng.random() < 0.7},
            "vm": vms}


def _assign(rng: random.Random, doc: dict) -> dict:
    """Give some whole IOMMU groups to random VMs (viable by construction)."""
    if not doc["vm"] or not doc["host"]["iommu"]["enabled"]:
        return doc
    cfg = build_config(HostFile.model_validate(doc))
    for group in cfg.groups:
        eps = [d for d in group.devices if not d.is_bridge]
        if eps and rng.random() < 0.5:
            vm = rng.choice(doc["vm"])
            vm.setdefault("devices", []).extend(d.bdf for d in eps)
    return doc


@dataclass
class Disturbed:
    extra_iovas: list[int] = field(default_factory=list)


def _disturb(rng: random.Random, b: HostBuild) -> Disturbed:
    """DMA, host DMA domains, unmaps (strict or lazy) and freed buffers."""
    host, out = b.host, Disturbed()
    iommu = host.iommu
    if not b.config.host.iommu.enabled:
        return out
    for dev_list in b.devices.values():  # guest DMA fills the IOTLB
        for dev in dev_list:
            for gpa in rng.sample(range(0, dev.vm.memory_bytes, 4096), 2):
                host.platform.dma_read(dev.fn, gpa, 8)
    translated = b.config.host.iommu.mode == "translated"
    for fn in b.tenants()["host"]:
        if not translated or rng.random() < 0.6:
            continue
        dom = iommu.alloc_domain()
        iommu.attach(dom, fn.rid)
        size = rng.choice([4096, 2 * MiB])
        frame = host.frames.alloc(size)
        iova = rng.choice([0x10000000, 0x200000, 0xFE000000 - size * 4])
        iommu.map(dom, iova, frame, size, read=True, write=rng.random() < 0.6)
        out.extra_iovas += [iova, iova + size - 8]
        host.platform.dma_read(fn, iova, 8)
        if rng.random() < 0.5:
            iommu.unmap(dom, iova, size)  # strict: gone; lazy: a stale IOTLB entry
            if rng.random() < 0.5:
                host.frames.free(frame, size)
    for name, dom in b.vfio.domains.items():
        if rng.random() < 0.5:
            vm = host.vms[name]
            gpa, _, size = rng.choice(vm.ram_chunks())
            if b.devices.get(name):
                host.platform.dma_read(b.devices[name][0].fn, gpa, 8)
            iommu.unmap(dom, gpa, size)
            out.extra_iovas += [gpa, gpa + size - 8]
    return out


# ------------------------------------------------------------------------------ probing
@dataclass
class Tally:
    hosts: int = 0
    memory: int = 0
    peers: int = 0
    msis: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def pairs(self) -> int:
        return self.memory + self.peers + self.msis


def _landmarks(b: HostBuild) -> list[int]:
    host = b.host
    out = [0x1000, host.frames.base, host.memory.size - 8, host.memory.size,
           MSI_WINDOW_BASE, MSI_WINDOW_BASE + 0x1000, host.iommu.root_table]
    if host.iommu.ir_table is not None:
        out.append(host.iommu.ir_table)
    for vm in host.vms.values():
        chunks = vm.ram_chunks()
        for gpa, hpa, size in (chunks[0], chunks[-1], chunks[len(chunks) // 2]):
            out += [gpa, gpa + size - 8, hpa, hpa + size - 8]
    for fn in host.topology.functions():
        out += [bar.address for bar in fn.bars if bar.address is not None]
    return out


def _in_msi(addr: int) -> bool:
    return addr <= MSI_WINDOW_LAST and addr + 8 > MSI_WINDOW_BASE


def check_host(b: HostBuild, extra: list[int], tally: Tally) -> None:
    host = b.host
    mem, plat = host.memory, host.platform
    report = analyze(host)
    base = _landmarks(b) + extra
    bars = [(fn, bar) for fn in host.topology.functions() for bar in fn.bars
            if bar.address is not None]
    irq_indices = sorted(host.irq_routes) + [len(host.irq_routes) + 1]
    marker = 0
    for bdf, fr in report.functions.items():
        fn = fr.fn
        probes = set(base)
        for w in fr.windows:
            probes.update((w.iova, w.iova + w.size - 8))
        for addr in sorted(p & ~7 for p in probes):
            if addr < 0:
                continue
            marker += 1
            tag = (0xA5A5_0000_0000_0000 | marker).to_bytes(8, "little")
            want = fr.translate(addr, False)
            old = mem.read(want, 8) if want is not None else None
            if want is not None:
                mem.write(want, tag)
            res = plat.dma_read(fn, addr, 8)
            got = res.status is DmaStatus.MEMORY
            if want is not None:
                mem.write(want, old)
            tally.memory += 1
            if got != (want is not None) or (got and res.data != tag):
                tally.mismatches.append(f"{b.config.host.name} {bdf} read {addr:#x}: analysis "
                                        f"{want and hex(want)}, simulator {res.status.value}")
            if _in_msi(addr):
                continue  # a write there is an interrupt request: probed below
            want = fr.translate(addr, True)
            old = mem.read(want, 8) if want is not None else None
            res = plat.dma_write(fn, addr, tag)
            got = res.status is DmaStatus.MEMORY
            tally.memory += 1
            if want is not None:
                landed = mem.read(want, 8) == tag
                mem.write(want, old)
            if got != (want is not None) or (got and not landed):
                tally.mismatches.append(f"{b.config.host.name} {bdf} write {addr:#x}: analysis "
                                        f"{want and hex(want)}, simulator {res.status.value}")
        ats = bool(fn.config.find_ext_capability(0x000F))
        for at in (AddressType.UNTRANSLATED, AddressType.TRANSLATED):
            if at == AddressType.TRANSLATED and not ats:
                continue
            reach = fr.peer_bars(at)
            for owner, bar in bars:
                if owner is fn:
                    continue
                assert bar.address is not None
                for res in (plat.dma_write(fn, bar.address, b"\0" * 4, at=at),
                            plat.dma_read(fn, bar.address, 4, at=at)):
                    got = (res.status is DmaStatus.PEER
                           and res.route.target is owner and res.route.bar is bar)
                    tally.peers += 1
                    if got != ((owner.bdf, bar.index) in reach):
                        tally.mismatches.append(
                            f"{b.config.host.name} {bdf} -> {owner.bdf} BAR{bar.index} "
                            f"({at.name}): analysis {(owner.bdf, bar.index) in reach}, "
                            f"simulator {res.route.reason}")
        ir = fr.interrupts
        res = plat.dma_write(fn, MSI_WINDOW_BASE, (0x30).to_bytes(4, "little"))
        tally.msis += 1
        if (res.status is DmaStatus.INTERRUPT) != ir.any_vector:
            tally.mismatches.append(f"{b.config.host.name} {bdf} compat MSI: analysis "
                                    f"{ir.any_vector}, simulator {res.status.value}")
        if not ir.remapping:
            continue
        allowed = {e.index for e in ir.entries}
        for index in irq_indices:
            res = plat.dma_write(fn, msi_remappable_address(index), b"\0" * 4)
            tally.msis += 1
            if (res.status is DmaStatus.INTERRUPT) != (index in allowed):
                tally.mismatches.append(f"{b.config.host.name} {bdf} IRTE {index}: analysis "
                                        f"{index in allowed}, simulator {res.status.value}")


def run_host(seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    doc = _assign(rng, _host_dict(rng, seed))
    try:
        cfg = build_config(HostFile.model_validate(doc))
    except PassthruError:  # e.g. a random tree that runs out of bus numbers: not our subject
        return
    b = build(cfg, seed=seed)
    extra = _disturb(rng, b)
    check_host(b, extra.extra_iovas, tally)
    b.host.memory.close()
    tally.hosts += 1


def run_hosts(chunk: int, chunks: int, tally: Tally) -> None:
    """Seeds chunk, chunk + chunks, ... until HOSTS // chunks hosts were built and checked
    (a random tree that cannot be built is skipped and replaced, never counted)."""
    want = HOSTS // chunks
    for seed in itertools.count(chunk, chunks):
        if tally.hosts == want:
            return
        assert seed < 10 * HOSTS, f"only {tally.hosts} of {want} random hosts could be built"
        run_host(seed, tally)


@pytest.mark.parametrize("chunk", range(10))
def test_analysis_agrees_with_simulated_dma(chunk: int) -> None:
    """1,000 random hosts built and checked, in ten chunks of 100: zero mismatches."""
    tally = Tally()
    run_hosts(chunk, 10, tally)
    assert tally.hosts == HOSTS // 10 and tally.memory and tally.peers and tally.msis
    assert not tally.mismatches, "\n".join(tally.mismatches[:20])


if __name__ == "__main__":  # python tests/analysis/test_soundness.py: the figures
    t = Tally()
    run_hosts(0, 1, t)
    print(f"hosts {t.hosts}, probes {t.pairs} (memory {t.memory}, peer {t.peers}, "
          f"msi {t.msis}), mismatches {len(t.mismatches)}")
    for m in t.mismatches[:40]:
        print(m)
