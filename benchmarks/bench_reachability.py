"""Reachability analysis time for a host with ~10,000 functions and 500 VMs (goal: under 5 s).

The host: 8 root ports (half with ACS) each lead to a 20-port switch (every seventh port
without ACS); each downstream port holds an SR-IOV NIC with 62 VFs: 10,256 functions (ports
included), of which 10,080 endpoints (160 PFs, 9,920 VFs). 500 VMs of 16 MiB each get two
VFs from singleton IOMMU groups (1,000 assigned functions, 500 VFIO domains, 1,000 IRTEs);
the other endpoints stay with the host.
The host is built from a host file model (``config``) and booted with ``hv.build``; only
``analysis.reachability.analyze`` is timed (best of 3), once with translated default domains
(host devices blocked) and once with ``iommu=pt`` (host devices in the identity domain, whose
reach over the 32-bit MMIO window must be routed through the fabric for every function).

    python benchmarks/bench_reachability.py [--quick]
"""

from __future__ import annotations

import sys
import time

from passthru.analysis.reachability import analyze
from passthru.config import build_host as build_config
from passthru.config.host_model import HostFile
from passthru.hv.build import build

MiB = 1 << 20


def host_doc(mode: str, root_ports: int = 8, ports: int = 20, vfs: int = 62,
             vms: int = 500) -> dict:
    nic = {"class": "ethernet", "vendor_id": 0x15B3, "device_id": 0x1017,
           "bars": [{"size": "1MiB", "bits": 64, "prefetchable": True}],
           "sriov": {"total_vfs": vfs, "num_vfs": vfs, "vf_offset": 1, "vf_stride": 1,
                     "vf_device_id": 0x1018, "vf_bars": ["16KiB"]}}
    rps = [{"slot": i + 1, "acs": "full" if i % 2 == 0 else "none",
            "device": [{"kind": "switch", "port": [
                {"acs": "none" if p % 7 == 3 else "full", "device": [nic]}
                for p in range(ports)]}]}
           for i in range(root_ports)]
    return {"host": {"name": "bench-10k", "cores": 64, "memory": "16GiB",
                     "reserved_memory": "512MiB", "allow_shared_cores": True,
                     "iommu": {"mode": mode, "strict": False, "posted_interrupts": True}},
            "pci": {"root_port": rps},
            "vm": [{"name": f"vm{i:03d}", "memory": 16 * MiB, "vcpus": [i % 64]}
                   for i in range(vms)]}


def booted(mode: str, vms: int = 500):  # type: ignore[no-untyped-def]
    doc = host_doc(mode, vms=vms)
    probe = build_config(HostFile.model_validate(doc))
    singles = [g.devices[0] for g in probe.groups
               if len(g.devices) == 1 and g.devices[0].is_virtfn]
    for i, vm in enumerate(doc["vm"]):
        vm["devices"] = [singles[2 * i].bdf, singles[2 * i + 1].bdf]
    cfg = build_config(HostFile.model_validate(doc))
    return cfg, build(cfg)


def main() -> None:
    quick = "--quick" in sys.argv
    for mode in ("translated", "identity"):
        t0 = time.perf_counter()
        cfg, b = booted(mode, vms=50 if quick else 500)
        setup = time.perf_counter() - t0
        n_fn = len(cfg.topology.functions())
        best = float("inf")
        report = None
        for _ in range(1 if quick else 3):
            t0 = time.perf_counter()
            report = analyze(b.host, b.tenants())
            best = min(best, time.perf_counter() - t0)
        assert report is not None
        peers = sum(len(fr.peers) for fr in report.functions.values())
        print(f"{mode:10s}: {n_fn} functions ({len(report.functions)} DMA-capable), "
              f"{len(b.host.vms)} VMs, {peers} peer paths; setup {setup:.1f} s; "
              f"analysis {best:.2f} s (best of {1 if quick else 3}; goal < 5 s)")


if __name__ == "__main__":
    main()
