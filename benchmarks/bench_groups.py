"""IOMMU group computation time for a synthetic 10,000-function host (goal: under 2 s).

8 root ports (half with ACS) each lead to a 20-port switch (some ports without ACS); each
downstream port holds an SR-IOV NIC with 63 VFs (ARI numbering on the same bus).

    python benchmarks/bench_groups.py
"""

from __future__ import annotations

import time

from passthru.analysis.groups import compute_iommu_groups
from passthru.hw.pci.device import AcsSpec, Bar, SriovSpec
from passthru.hw.pci.topology import Topology


def synthetic_host(root_ports: int = 8, ports: int = 20, vfs: int = 63) -> Topology:
    t = Topology()
    full = AcsSpec.linux_default()
    for rp_i in range(root_ports):
        rp = t.add_root_port(rp_i + 1, acs=full if rp_i % 2 == 0 else None)
        sw = t.add_switch(rp, ports, acs=[None if p % 7 == 3 else full for p in range(ports)])
        for port in sw.downstream:
            t.add_endpoint(port, 0, vendor_id=0x15B3, device_id=0x1017, class_code=0x020000,
                           bars=[Bar(0, 1 << 20, prefetchable=True)],
                           sriov=SriovSpec(total_vfs=vfs, num_vfs=vfs, vf_offset=1, vf_stride=1,
                                           vf_device_id=0x1018, vf_bars=(0x4000,)))
    return t.enumerate()


def main() -> None:
    t0 = time.perf_counter()
    topo = synthetic_host()
    built = time.perf_counter() - t0
    n = len(topo.functions())
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        groups = compute_iommu_groups(topo)
        best = min(best, time.perf_counter() - t0)
    print(f"functions: {n}, groups: {len(groups)}, build+enumerate: {built:.2f} s")
    print(f"group computation: {best:.3f} s (best of 3; goal < 2 s) "
          f"-> {n / best:,.0f} functions/s")


if __name__ == "__main__":
    main()
