"""PCI/PCIe register names and bit values, spelled as Linux `include/uapi/linux/pci_regs.h`.

Only the registers the model reads or writes are listed. Offsets are config-space byte offsets.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# Type 0/1 common header (PCI Local Bus 3.0, 6.1)
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_CLASS_REVISION = 0x08
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10
PCI_CAPABILITY_LIST = 0x34

PCI_STATUS_CAP_LIST = 0x10
PCI_HEADER_TYPE_NORMAL = 0
PCI_HEADER_TYPE_BRIDGE = 1
PCI_HEADER_TYPE_MFD = 0x80  # multifunction bit, read by Linux into pdev->multifunction
PCI_COMMAND_MEMORY = 0x2
PCI_COMMAND_MASTER = 0x4

# Type 1 (bridge) header (PCI-to-PCI Bridge Architecture 1.2, 3.2)
PCI_PRIMARY_BUS = 0x18
PCI_SECONDARY_BUS = 0x19
PCI_SUBORDINATE_BUS = 0x1A
PCI_MEMORY_BASE = 0x20
PCI_MEMORY_LIMIT = 0x22
PCI_PREF_MEMORY_BASE = 0x24
PCI_PREF_MEMORY_LIMIT = 0x26
PCI_PREF_BASE_UPPER32 = 0x28
PCI_PREF_LIMIT_UPPER32 = 0x2C

PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08

CONFIG_SPACE_SIZE = 4096
PCI_CFG_SPACE_SIZE = 256  # conventional space; extended capabilities start here


class CapId(IntEnum):
    """Standard capability IDs (PCI_CAP_ID_*)."""

    PM = 0x01
    MSI = 0x05
    EXP = 0x10
    MSIX = 0x11


class ExtCapId(IntEnum):
    """Extended capability IDs (PCI_EXT_CAP_ID_*)."""

    ACS = 0x000D
    ARI = 0x000E
    ATS = 0x000F
    SRIOV = 0x0010


class PcieType(IntEnum):
    """Device/Port Type field of the PCI Express Capabilities register (PCI_EXP_TYPE_*)."""

    ENDPOINT = 0x0
    LEG_END = 0x1
    ROOT_PORT = 0x4
    UPSTREAM = 0x5
    DOWNSTREAM = 0x6
    PCI_BRIDGE = 0x7  # PCIe-to-PCI/PCI-X bridge
    PCIE_BRIDGE = 0x8  # PCI/PCI-X-to-PCIe bridge
    RC_END = 0x9  # Root Complex integrated endpoint
    RC_EC = 0xA  # Root Complex event collector


# PCI Express capability (PCIe base spec 7.5.3)
PCI_EXP_FLAGS = 0x02
PCI_EXP_FLAGS_TYPE_SHIFT = 4
PCI_EXP_LNKCAP = 0x0C
PCI_EXP_LNKCAP_PN_SHIFT = 24  # Port Number, the egress-control vector index
PCI_EXP_CAP_SIZE = 0x3C


class AcsFlags(IntFlag):
    """ACS Capability / ACS Control bits (PCIe base spec 7.7.8; PCI_ACS_*)."""

    SV = 0x01  # Source Validation
    TB = 0x02  # Translation Blocking
    RR = 0x04  # P2P Request Redirect
    CR = 0x08  # P2P Completion Redirect
    UF = 0x10  # Upstream Forwarding
    EC = 0x20  # P2P Egress Control
    DT = 0x40  # Direct Translated P2P


ACS_ALL = AcsFlags(0x7F)
PCI_ACS_CAP = 0x04
PCI_ACS_CTRL = 0x06
PCI_ACS_EGRESS_CTL_V = 0x08
PCI_ACS_ECVS_SHIFT = 8  # Egress Control Vector Size, ACS Capability bits 15:8
PCI_ACS_SIZE = 0x0C

# SR-IOV extended capability (SR-IOV 1.1, 3.3)
PCI_SRIOV_CAP = 0x04
PCI_SRIOV_CTRL = 0x08
PCI_SRIOV_CTRL_VFE = 0x01
PCI_SRIOV_CTRL_MSE = 0x08
PCI_SRIOV_INITIAL_VF = 0x0C
PCI_SRIOV_TOTAL_VF = 0x0E
PCI_SRIOV_NUM_VF = 0x10
PCI_SRIOV_FUNC_LINK = 0x12
PCI_SRIOV_VF_OFFSET = 0x14
PCI_SRIOV_VF_STRIDE = 0x16
PCI_SRIOV_VF_DID = 0x1A
PCI_SRIOV_SUP_PGSIZE = 0x1C
PCI_SRIOV_SYS_PGSIZE = 0x20
PCI_SRIOV_BAR = 0x24
PCI_SRIOV_SIZE = 0x40

# ATS extended capability (ATS 1.1, 5.1)
PCI_ATS_CAP = 0x04
PCI_ATS_CTRL = 0x06
PCI_ATS_CTRL_ENABLE = 0x8000
PCI_ATS_SIZE = 0x08

# MSI / MSI-X capability sizes (64-bit MSI with per-vector masking; MSI-X header)
PCI_MSI_SIZE = 0x18
PCI_MSIX_SIZE = 0x0C
PCI_MSIX_FLAGS = 0x02
