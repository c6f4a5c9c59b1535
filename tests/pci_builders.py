"""Small topology builders shared by the PCI, fabric and group tests."""

from __future__ import annotations

from passthru.hw.pci.device import AcsSpec, Bar
from passthru.hw.pci.regs import AcsFlags
from passthru.hw.pci.topology import Topology

FULL = AcsSpec.linux_default()
ALL_CAP = AcsFlags(0x7F)


def gpu_with_audio(root_port_acs: AcsSpec | None) -> Topology:
    t = Topology()
    rp = t.add_root_port(1, acs=root_port_acs, vendor_id=0x8086, device_id=0x1901)
    t.add_endpoint(rp, 0, 0, vendor_id=0x10DE, device_id=0x1B80, class_code=0x030000,
                   bars=[Bar(0, 1 << 24, is_64=False), Bar(1, 1 << 28, prefetchable=True)])
    t.add_endpoint(rp, 0, 1, vendor_id=0x10DE, device_id=0x10F0, class_code=0x040300,
                   bars=[Bar(0, 0x4000, is_64=False)])
    return t.enumerate()


def switch_host(port_acs: list[AcsSpec | None], *, rp_acs: AcsSpec | None = FULL,
                ats: bool = False, endpoint_acs: AcsSpec | None = None) -> Topology:
    """Root port 00:01.0 -> switch (02:00.0) -> one endpoint below each downstream port."""
    t = Topology()
    rp = t.add_root_port(1, acs=rp_acs)
    sw = t.add_switch(rp, len(port_acs), acs=port_acs)
    for port in sw.downstream:
        t.add_endpoint(port, 0, class_code=0x020000, bars=[Bar(0, 0x10000, is_64=False)],
                       ats=ats, acs=endpoint_acs)
    return t.enumerate()
