"""Bundled example hosts: small topologies that show every isolation case at once."""

from __future__ import annotations

from passthru.hw.pci.device import AcsSpec, Bar, SriovSpec
from passthru.hw.pci.regs import AcsFlags
from passthru.hw.pci.topology import Topology

MiB = 1 << 20


def workstation() -> Topology:
    """A workstation/server mix: GPU + HDMI audio behind an ACS-less CPU root port, an NVMe
    SSD behind an Intel PCH root port (ACS quirk), a PCIe switch whose middle downstream port
    lacks ACS, an SR-IOV NIC, and a legacy PCI card behind a PCIe-to-PCI bridge."""
    t = Topology()
    t.add_function(t.root_bus(), 0, pcie_type=None, vendor_id=0x8086, device_id=0x3E30,
                   class_code=0x060000, name="Intel Corporation 8th Gen Core Host Bridge")
    rp_gpu = t.add_root_port(1, vendor_id=0x8086, device_id=0x1901,
                             name="Intel Corporation 6th-9th Gen Core PCIe Controller (x16)")
    t.add_endpoint(rp_gpu, 0, 0, vendor_id=0x10DE, device_id=0x1B80, class_code=0x030000,
                   name="NVIDIA Corporation GP104 [GeForce GTX 1080]", msix=True,
                   bars=[Bar(0, 16 * MiB, is_64=False), Bar(1, 256 * MiB, prefetchable=True)])
    t.add_endpoint(rp_gpu, 0, 1, vendor_id=0x10DE, device_id=0x10F0, class_code=0x040300,
                   name="NVIDIA Corporation GP104 High Definition Audio Controller",
                   bars=[Bar(0, 0x4000, is_64=False)])
    rp_pch = t.add_root_port(0x1C, vendor_id=0x8086, device_id=0x8C10,
                             name="Intel Corporation 8 Series/C220 PCIe Root Port #1")
    t.add_endpoint(rp_pch, 0, vendor_id=0x144D, device_id=0xA808, class_code=0x010802,
                   name="Samsung Electronics NVMe SSD Controller SM981/PM981", msix=True,
                   bars=[Bar(0, 0x4000, is_64=True)])
    full = AcsSpec.linux_default()
    rp_sw = t.add_root_port(2, acs=full, vendor_id=0x8086, device_id=0x2030,
                            name="Intel Corporation Sky Lake-E PCI Express Root Port A")
    sw = t.add_switch(rp_sw, 3, acs=[full, None, full], name="PLX Technology PEX 8747")
    t.add_endpoint(sw.downstream[0], 0, vendor_id=0x8086, device_id=0x1521, class_code=0x020000,
                   name="Intel Corporation I350 Gigabit Network Connection", msix=True,
                   bars=[Bar(0, 0x20000, is_64=False)], ats=True,
                   sriov=SriovSpec(total_vfs=8, num_vfs=2, vf_offset=0x80, vf_stride=4,
                                   vf_device_id=0x1520))
    t.add_endpoint(sw.downstream[1], 0, vendor_id=0x1B36, device_id=0x0010, class_code=0x010802,
                   name="Red Hat QEMU NVM Express Controller", msix=True,
                   bars=[Bar(0, 0x4000, is_64=True)])
    t.add_endpoint(sw.downstream[2], 0, vendor_id=0x15B3, device_id=0x1017, class_code=0x020000,
                   name="Mellanox Technologies MT27800 Family [ConnectX-5]", msix=True,
                   bars=[Bar(0, 32 * MiB, prefetchable=True)],
                   acs=AcsSpec(cap=AcsFlags(0), ctl=AcsFlags(0)))
    br = t.add_pcie_to_pci_bridge(t.root_bus(), 0x1E,
                                  vendor_id=0x104C, device_id=0x8240,
                                  name="Texas Instruments XIO2001 PCI Express-to-PCI Bridge")
    t.add_pci_device(br, 3, vendor_id=0x1102, device_id=0x0002, class_code=0x040100,
                     name="Creative Labs SB Live! EMU10k1", bars=[Bar(0, 0x1000, is_64=False)])
    t.add_pci_device(br, 4, vendor_id=0x8086, device_id=0x100E, class_code=0x020000,
                     name="Intel Corporation 82540EM Gigabit Ethernet Controller",
                     bars=[Bar(0, 0x20000, is_64=False)])
    return t.enumerate()


EXAMPLE_HOSTS = {"workstation": workstation}
