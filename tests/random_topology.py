"""A hypothesis strategy that builds random but valid PCIe hierarchies."""

from __future__ import annotations

from hypothesis import strategies as st

from passthru.hw.pci.device import AcsSpec, Bar, SriovSpec
from passthru.hw.pci.regs import AcsFlags
from passthru.hw.pci.topology import Topology

_ACS_CHOICES = [
    None,
    AcsSpec.linux_default(),
    AcsSpec.none_enabled(),
    AcsSpec(cap=AcsFlags(0x7F), ctl=AcsFlags.RR),
    AcsSpec(cap=AcsFlags(0x7F), ctl=AcsFlags.RR | AcsFlags.UF | AcsFlags.DT),
    AcsSpec(cap=AcsFlags(0x7F), ctl=AcsFlags.SV | AcsFlags.TB),
    AcsSpec(cap=AcsFlags(0x7F), ctl=AcsFlags.EC, egress_vector=0b1010, ecvs=8),
    AcsSpec(cap=AcsFlags.SV | AcsFlags.RR, ctl=AcsFlags.SV | AcsFlags.RR),
]
_ENDPOINT_IDS = [(0x8086, 0x1572), (0x8086, 0x1521), (0x10DE, 0x1B80), (0x1B4B, 0x9230),
                 (0x144D, 0xA808)]


@st.composite
def topologies(draw, max_root_ports: int = 4, max_depth: int = 3) -> Topology:
    t = Topology(rc_p2p=draw(st.booleans()))

    def endpoint_device(parent) -> None:
        vendor, device = draw(st.sampled_from(_ENDPOINT_IDS))
        nfn = draw(st.integers(1, 3))
        acs = draw(st.sampled_from([None, AcsSpec(AcsFlags.RR | AcsFlags.CR,
                                                  AcsFlags.RR | AcsFlags.CR)]))
        for fn in range(nfn):
            sriov = None
            if fn == 0 and draw(st.integers(0, 4)) == 0:
                n = draw(st.integers(1, 6))
                sriov = SriovSpec(total_vfs=n, num_vfs=draw(st.integers(0, n)),
                                  vf_offset=draw(st.sampled_from([nfn, 0x80])),
                                  vf_stride=draw(st.sampled_from([1, 2])), vf_device_id=0x10ED)
            t.add_endpoint(parent, 0, fn, vendor_id=vendor, device_id=device,
                           bars=[Bar(0, draw(st.sampled_from([0x1000, 0x4000, 0x100000])),
                                     is_64=False)], acs=acs, sriov=sriov,
                           ats=draw(st.booleans()))

    def below(parent, depth: int) -> None:
        kind = draw(st.sampled_from(["endpoint", "endpoint", "switch", "pci-bridge", "empty"]
                                    if depth < max_depth else ["endpoint", "empty"]))
        if kind == "endpoint":
            endpoint_device(parent)
        elif kind == "switch":
            nports = draw(st.integers(1, 4))
            sw = t.add_switch(parent, nports, acs=[draw(st.sampled_from(_ACS_CHOICES))
                                                   for _ in range(nports)])
            for port in sw.downstream:
                below(port, depth + 1)
        elif kind == "pci-bridge":
            br = t.add_pcie_to_pci_bridge(parent)
            for slot in range(draw(st.integers(1, 3))):
                t.add_pci_device(br, slot + 1, bars=[Bar(0, 0x1000, is_64=False)])

    root = t.root_bus()
    for slot in range(1, 1 + draw(st.integers(1, max_root_ports))):
        pch = draw(st.integers(0, 5)) == 0
        rp = t.add_root_port(slot, acs=None if pch else draw(st.sampled_from(_ACS_CHOICES)),
                             vendor_id=0x8086, device_id=0x8C10 if pch else 0x1901)
        below(rp, 1)
    for slot in range(0x10, 0x10 + draw(st.integers(0, 2))):
        t.add_rc_endpoint(slot, bars=[Bar(0, 0x1000, is_64=False)], bus=root)
    return t.enumerate()
