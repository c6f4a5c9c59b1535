"""Device-specific PCI behaviour that Linux knows by vendor:device (drivers/pci/quirks.c).

Three kinds matter for isolation:

* ACS quirks (`pci_dev_acs_enabled[]`): devices that isolate peers without a (correct) ACS
  capability. They describe real hardware behaviour, so the fabric honours them too.
  The Intel PCH and Sunrise/Union Point root-port quirks are modelled as they behave
  *after* Linux's enable quirk ran at boot (`pci_quirk_enable_intel_pch_acs()` /
  `..._spt_pch_acs()`), which happens whenever an IOMMU driver requested ACS.
* DMA alias quirks (`quirk_dma_func1_alias`, `quirk_dma_func0_alias`): functions that issue
  DMA with function 1's (or 0's) requester ID, which forces them into one IOMMU group; and
  `quirk_use_pcie_bridge_dma_alias`: PCIe-to-PCI bridges without a PCIe capability, which
  take ownership of forwarded requests as (secondary bus, 00.0).
* Intel Root Complex Integrated Endpoints (`pci_quirk_rciep_acs`, every Intel RCiEP): the
  VT-d spec (r3.1 sec. 3.16) lets them peer only on translated addresses, so Linux treats
  them as isolated even without an ACS capability (e.g. a Wi-Fi RCiEP sharing a slot with
  the xHCI gets its own group).

The tables follow drivers/pci/quirks.c of Linux 6.x (checked against a 2025 tree): the PCH and
SPT root-port lists, the multifunction endpoints of Intel, Solarflare, Emulex, Cavium,
Broadcom and Zhaoxin, and the Wangxun NICs.

Left out: AMD southbridge quirk (needs the ACPI IVRS table), the Cavium ThunderX, QCOM, HXT,
NXP, Loongson, Annapurna, APM/Ampere and Zhaoxin root-port quirks, the fixed (Adaptec) and
multi-alias (MIC x200, VCA) DMA aliases, and quirks that only change link or power behaviour.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from passthru.hw.pci.regs import AcsFlags, PcieType

if TYPE_CHECKING:
    from passthru.hw.pci.device import PciFunction

PCI_VENDOR_ID_INTEL = 0x8086
PCI_VENDOR_ID_BROADCOM = 0x14E4
PCI_VENDOR_ID_CAVIUM = 0x177D
PCI_VENDOR_ID_ZHAOXIN = 0x1D17
PCI_VENDOR_ID_WANGXUN = 0x8088
PCI_VENDOR_ID_SOLARFLARE = 0x1924
PCI_VENDOR_ID_MARVELL_EXT = 0x1B4B
PCI_VENDOR_ID_TTI = 0x1103
PCI_VENDOR_ID_JMICRON = 0x197B
PCI_VENDOR_ID_RICOH = 0x1180
PCI_VENDOR_ID_GLENFLY = 0x6766

# pci_quirk_intel_pch_acs_ids[]: PCH root ports with ACS-like isolation but no ACS capability
# (Intel, Red Hat bugzilla 1037684).
INTEL_PCH_ACS_IDS = frozenset(
    [*range(0x3B42, 0x3B52), *range(0x1C10, 0x1C20), *range(0x1E10, 0x1E20),
     *range(0x8C10, 0x8C20), *range(0x9C10, 0x9C1C), *range(0x9C90, 0x9C9C),
     0x1D10, 0x1D12, 0x1D14, 0x1D16, 0x1D18, 0x1D1A, 0x1D1C, 0x1D1E,
     *range(0x8D10, 0x8D1F),
     0x8C90, 0x8C92, 0x8C94, 0x8C96, 0x8C98, 0x8C9A, 0x8C9C, 0x8C9E]
)
INTEL_PCH_ACS_FLAGS = AcsFlags.RR | AcsFlags.CR | AcsFlags.UF | AcsFlags.SV

# pci_quirk_intel_spt_pch_acs_match(): Sunrise Point / Union Point root ports whose ACS
# control register sits at +8 (dword) instead of +6; lspci shows the wrong register.
INTEL_SPT_ACS_IDS = frozenset(
    [*range(0xA110, 0xA120), *range(0xA167, 0xA16B),  # Sunrise Point
     *range(0xA290, 0xA2A0), *range(0xA2E7, 0xA2EF),  # Union Point
     *range(0x9D10, 0x9D1C)]  # 7th & 8th Gen Mobile (U/Y) I/O
)

# pci_quirk_mf_endpoint_acs entries: multifunction NICs verified not to do peer-to-peer
# between their functions.
MF_ENDPOINT_ACS_IDS = frozenset(
    [(PCI_VENDOR_ID_SOLARFLARE, d) for d in (0x0903, 0x0923, 0x0A03)]
    + [(PCI_VENDOR_ID_INTEL, d) for d in (
        0x10C6, 0x10DB, 0x10DD, 0x10E1, 0x10F1, 0x10F7, 0x10F8, 0x10F9, 0x10FA, 0x10FB,
        0x10FC, 0x1507, 0x1514, 0x151C, 0x1529, 0x152A, 0x154D, 0x154F, 0x1551, 0x1558,
        0x1509, 0x150E, 0x150F, 0x1510, 0x1511, 0x1516, 0x1527,  # 82580
        0x10C9, 0x10E6, 0x10E7, 0x10E8, 0x150A, 0x150D, 0x1518, 0x1526,  # 82576
        0x10A7, 0x10A9, 0x10D6,  # 82575
        0x1521, 0x1522, 0x1523, 0x1524,  # I350
        0x105E, 0x105F, 0x1060, 0x10D9,  # 82571
        0x15B7, 0x15B8,  # I219
    )]
    + [(0x19A2, 0x0710), (0x10DF, 0x0720)]  # Emulex BE3-R, Skyhawk-R
    + [(PCI_VENDOR_ID_CAVIUM, d) for d in (0xA026, 0xA059, 0xA060)]
    + [(PCI_VENDOR_ID_BROADCOM, d) for d in (
        0x16D7, 0x1750, 0x1751, 0x1752, 0x1760, 0x1761, 0x1762, 0x1763)]
    + [(PCI_VENDOR_ID_ZHAOXIN, d) for d in (0x3038, 0x3104, 0x9083)]
)

# pci_quirk_wangxun_nic_acs(): Wangxun NICs whose functions redirect peer traffic upstream as
# if RR and CR were set; any other Wangxun function is reported "not enabled" (0, not -ENOTTY).
WANGXUN_ACS_IDS = frozenset(
    [*range(0x0100, 0x0110), 0x1001, 0x2001,  # EM, SP
     0x5010, 0x5025, 0x5040, 0x5110, 0x5125, 0x5140]  # AML
)
WANGXUN_ACS_FLAGS = AcsFlags.SV | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF

# quirk_dma_func1_alias: Marvell SATA/SSD controllers, HighPoint (TTI) parts, the JMicron
# JMB388 eSATA function and the Plextor M6E (Lite-On, a Marvell 88SS9183 inside).
DMA_FUNC1_ALIAS_IDS = frozenset(
    [(PCI_VENDOR_ID_MARVELL_EXT, d) for d in (
        0x9120, 0x9123, 0x9125, 0x9128, 0x9130, 0x9170, 0x9172, 0x917A, 0x9182, 0x9183,
        0x91A0, 0x9215, 0x9220, 0x9230, 0x9235)]
    + [(PCI_VENDOR_ID_TTI, 0x0642), (PCI_VENDOR_ID_TTI, 0x0645)]
    + [(PCI_VENDOR_ID_JMICRON, 0x2393), (0x1C28, 0x0122)]
)
# quirk_dma_func0_alias: Ricoh card readers and Glenfly GPUs DMA as function 0.
DMA_FUNC0_ALIAS_IDS = frozenset(
    [(PCI_VENDOR_ID_RICOH, 0xE832), (PCI_VENDOR_ID_RICOH, 0xE476),
     (PCI_VENDOR_ID_GLENFLY, 0x3D40), (PCI_VENDOR_ID_GLENFLY, 0x3D41)]
)
# quirk_use_pcie_bridge_dma_alias: PCIe-to-PCI bridges that lack a PCIe capability (ASMedia
# ASM1083/1085, Tundra 8113, ITE 8892/8893, Intel 82801 244e): they alias as (secondary, 00.0).
PCIE_BRIDGE_ALIAS_IDS = frozenset(
    [(0x1B21, 0x1080), (0x10E3, 0x8113), (0x1283, 0x8892), (0x1283, 0x8893),
     (PCI_VENDOR_ID_INTEL, 0x244E)]
)

_MF_MASK = AcsFlags.SV | AcsFlags.TB | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF | AcsFlags.DT

# pci_quirk_rciep_acs(): { PCI_VENDOR_ID_INTEL, PCI_ANY_ID } RCiEPs, isolated for these flags
# (pci_acs_ctrl_enabled(acs_flags, SV | RR | CR | UF); Linux v5.8, commit "PCI: Add ACS quirk
# for Intel Root Complex Integrated Endpoints").
INTEL_RCIEP_ACS_FLAGS = AcsFlags.SV | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF


def _is_root_port(dev: PciFunction) -> bool:
    return dev.pcie_type == PcieType.ROOT_PORT


def pch_acs_match(dev: PciFunction) -> bool:
    """pci_quirk_intel_pch_acs_match()."""
    return dev.vendor_id == PCI_VENDOR_ID_INTEL and _is_root_port(dev) and (
        dev.device_id in INTEL_PCH_ACS_IDS)


def spt_acs_match(dev: PciFunction) -> bool:
    """pci_quirk_intel_spt_pch_acs_match()."""
    return dev.vendor_id == PCI_VENDOR_ID_INTEL and _is_root_port(dev) and (
        dev.device_id in INTEL_SPT_ACS_IDS)


def mf_endpoint_match(dev: PciFunction) -> bool:
    return (dev.vendor_id, dev.device_id) in MF_ENDPOINT_ACS_IDS


def wangxun_match(dev: PciFunction) -> bool:
    return dev.vendor_id == PCI_VENDOR_ID_WANGXUN and dev.device_id in WANGXUN_ACS_IDS


def rciep_match(dev: PciFunction) -> bool:
    """pci_quirk_rciep_acs(): any Intel function of type Root Complex Integrated Endpoint."""
    return dev.vendor_id == PCI_VENDOR_ID_INTEL and dev.pcie_type == PcieType.RC_END


def quirk_effective_acs(dev: PciFunction) -> AcsFlags | None:
    """The ACS behaviour a quirked device really has, or None when no quirk applies.

    Used by the fabric. For the PCH ports it is what Linux's enable quirk switched on; for the
    SPT ports, the implemented bits Linux enabled in the dword control register; for the
    listed multifunction endpoints and Intel RCiEPs, no internal peer-to-peer on untranslated
    addresses (as if RR and CR were on).
    """
    if pch_acs_match(dev):
        return INTEL_PCH_ACS_FLAGS
    if spt_acs_match(dev) and dev.acs_cap_pos:
        cap = dev.acs_registers()[0]  # type: ignore[index]
        return AcsFlags(cap & 0x7F) & INTEL_PCH_ACS_FLAGS
    if mf_endpoint_match(dev) or rciep_match(dev) or wangxun_match(dev):
        return AcsFlags.RR | AcsFlags.CR  # RCiEP: untranslated peer requests go to the RC
    return None


def pci_dev_specific_acs_enabled(dev: PciFunction, acs_flags: AcsFlags) -> int:
    """pci_dev_specific_acs_enabled(): 1 enabled, 0 not enabled, -1 no quirk (-ENOTTY)."""
    if pch_acs_match(dev):  # pci_quirk_intel_pch_acs(), after the enable quirk ran
        return 0 if acs_flags & ~INTEL_PCH_ACS_FLAGS else 1
    if spt_acs_match(dev) and dev.acs_cap_pos:  # pci_quirk_intel_spt_pch_acs()
        cap = dev.acs_registers()[0]  # type: ignore[index]
        flags = acs_flags & AcsFlags((cap & 0x7F) | AcsFlags.EC)
        ctrl = AcsFlags(cap & 0x7F) & INTEL_PCH_ACS_FLAGS  # what the enable quirk wrote at +8
        return 0 if flags & ~ctrl else 1
    if mf_endpoint_match(dev):  # pci_quirk_mf_endpoint_acs()
        return 0 if acs_flags & ~_MF_MASK else 1
    if rciep_match(dev):  # pci_quirk_rciep_acs()
        return 0 if acs_flags & ~INTEL_RCIEP_ACS_FLAGS else 1
    if dev.vendor_id == PCI_VENDOR_ID_WANGXUN:  # pci_quirk_wangxun_nic_acs()
        return 0 if not wangxun_match(dev) or acs_flags & ~WANGXUN_ACS_FLAGS else 1
    return -1


def apply_dma_alias_quirks(dev: PciFunction) -> None:
    """The DMA alias fixups Linux runs at header time (DECLARE_PCI_FIXUP_HEADER)."""
    ids = (dev.vendor_id, dev.device_id)
    if ids in DMA_FUNC1_ALIAS_IDS and dev.function != 1:  # quirk_dma_func1_alias()
        dev.dma_alias_devfns.add((dev.devfn & ~7) | 1)
    if ids in DMA_FUNC0_ALIAS_IDS and dev.function != 0:  # quirk_dma_func0_alias()
        dev.dma_alias_devfns.add(dev.devfn & ~7)
    if ids in PCIE_BRIDGE_ALIAS_IDS:  # quirk_use_pcie_bridge_dma_alias()
        up = dev.bus.self_ if dev.bus is not None else None
        dev.pcie_bridge_alias = (
            dev.is_bridge and not dev.is_pcie and up is not None and up.is_pcie
            and up.pcie_type != PcieType.PCI_BRIDGE)
