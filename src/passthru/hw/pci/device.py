"""PCI functions, buses and BARs: the objects Linux calls `pci_dev`, `pci_bus` and resources.

A `PciFunction` owns its configuration space; the fields the fabric and the analyses use
often (port type, bus numbers, windows, ACS position) are decoded from it once, as Linux
caches them in `struct pci_dev` at enumeration. Left out: I/O space, expansion ROMs,
config-space side effects beyond the registers listed in `regs.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from passthru.hw.pci.config_space import ConfigSpace
from passthru.hw.pci.ids import format_bdf, pci_devfn, pci_devid, pci_func, pci_slot
from passthru.hw.pci.regs import (
    PCI_ACS_CAP,
    PCI_ACS_CTRL,
    PCI_ACS_ECVS_SHIFT,
    PCI_ACS_EGRESS_CTL_V,
    PCI_ATS_CTRL,
    PCI_ATS_CTRL_ENABLE,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_MFD,
    AcsFlags,
    ExtCapId,
    PcieType,
)


@dataclass
class Bar:
    """A memory BAR (or a VF BAR slice). `address` is assigned at enumeration."""

    index: int
    size: int
    is_64: bool = True
    prefetchable: bool = False
    address: int | None = None

    def __post_init__(self) -> None:
        if self.size < 16 or self.size & (self.size - 1):
            raise ValueError(f"BAR{self.index} size 0x{self.size:x} is not a power of two >= 16")

    def contains(self, addr: int) -> bool:
        a = self.address
        return a is not None and a <= addr < a + self.size

    def __repr__(self) -> str:
        where = "unassigned" if self.address is None else f"0x{self.address:x}"
        return f"Bar{self.index}({where}, size=0x{self.size:x})"


@dataclass(frozen=True)
class AcsSpec:
    """An ACS extended capability: implemented bits (`cap`) and enabled bits (`ctl`).

    `egress_vector` is the P2P Egress Control Vector (one bit per port/function number,
    PCIe 7.7.8.4) and `ecvs` its size in bits; used only when `cap` has EC.
    """

    cap: AcsFlags
    ctl: AcsFlags
    egress_vector: int = 0
    ecvs: int = 0

    @staticmethod
    def linux_default(cap: AcsFlags = AcsFlags.SV | AcsFlags.TB | AcsFlags.RR | AcsFlags.CR
                      | AcsFlags.UF | AcsFlags.DT) -> AcsSpec:
        """What `pci_std_enable_acs()` leaves enabled: SV, RR, CR and UF, where implemented."""
        want = AcsFlags.SV | AcsFlags.RR | AcsFlags.CR | AcsFlags.UF
        return AcsSpec(cap=cap, ctl=cap & want)

    @staticmethod
    def none_enabled(cap: AcsFlags = AcsFlags.SV | AcsFlags.TB | AcsFlags.RR | AcsFlags.CR
                     | AcsFlags.UF | AcsFlags.DT) -> AcsSpec:
        """Capability present, every control bit clear (firmware default before Linux boots)."""
        return AcsSpec(cap=cap, ctl=AcsFlags(0))


@dataclass(frozen=True)
class SriovSpec:
    """SR-IOV capability contents of a physical function (SR-IOV 1.1, 3.3)."""

    total_vfs: int
    num_vfs: int
    vf_offset: int
    vf_stride: int
    vf_device_id: int
    vf_bars: tuple[int, ...] = (0x4000,)  # size of each VF's BAR0.. (bytes)
    initial_vfs: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.num_vfs <= self.total_vfs:
            raise ValueError(f"num_vfs {self.num_vfs} outside 0..total_vfs {self.total_vfs}")
        if self.num_vfs and (self.vf_offset <= 0 or (self.num_vfs > 1 and self.vf_stride <= 0)):
            raise ValueError("VF offset and stride must be positive when VFs are enabled")


@dataclass(eq=False)
class PciBus:
    """A bus segment (`struct pci_bus`). `self_` is the bridge above it (None for a root or
    virtual bus), `parent` the bus that bridge sits on."""

    number: int
    domain: int = 0
    parent: PciBus | None = None
    self_: PciFunction | None = None
    devices: list[PciFunction] = field(default_factory=list)
    children: list[PciBus] = field(default_factory=list)
    is_virtual: bool = False  # an SR-IOV VF bus created by virtfn_add_bus()

    @property
    def is_root(self) -> bool:
        """pci_is_root_bus()."""
        return self.parent is None

    def __repr__(self) -> str:
        kind = "root" if self.is_root else ("virtual" if self.is_virtual else "bus")
        return f"<PciBus {self.domain:04x}:{self.number:02x} {kind}>"


class PciFunction:
    """One PCI function and its configuration space."""

    def __init__(
        self,
        *,
        slot: int,
        function: int = 0,
        vendor_id: int = 0x8086,
        device_id: int = 0x0000,
        class_code: int = 0x000000,
        revision: int = 0,
        pcie_type: PcieType | None = PcieType.ENDPOINT,
        is_bridge: bool = False,
        name: str = "",
        class_name: str = "",
    ) -> None:
        if not 0 <= slot <= 0x1F or not 0 <= function <= 7:
            raise ValueError(f"device {slot:#x} function {function} out of range")
        self.devfn = pci_devfn(slot, function)
        self.vendor_id = vendor_id
        self.device_id = device_id
        self.class_code = class_code  # 24-bit: base class, subclass, prog-if
        self.revision = revision
        self.pcie_type = pcie_type  # None: a conventional PCI function (pci_is_pcie() false)
        self.is_bridge = is_bridge
        self.name = name
        self.class_name = class_name
        self.bus: PciBus | None = None
        self.subordinate: PciBus | None = None  # the bus below a bridge
        self.config = ConfigSpace()
        self.bars: list[Bar] = []
        self.driver: str | None = None
        self.dma_alias_devfns: set[int] = set()  # dev->dma_alias_mask
        self.pcie_bridge_alias = False  # PCI_DEV_FLAG_PCIE_BRIDGE_ALIAS (hw.pci.quirks)
        self.dev_flags: set[str] = set()
        self.physfn: PciFunction | None = None  # set on SR-IOV virtual functions
        self.virtfns: list[PciFunction] = []
        self.sriov: SriovSpec | None = None
        self.vf_bars: list[Bar] = []  # the PF's SR-IOV BAR regions (all VFs' slices)
        self.port_number: int = 0  # Link Capabilities Port Number: egress vector index
        self.acs_cap_pos = 0  # pdev->acs_cap
        self.multifunction = False  # pdev->multifunction (header type bit 7)
        # Bridge windows (base, limit) inclusive, None when closed; decoded from config.
        self.mem_window: tuple[int, int] | None = None
        self.pref_window: tuple[int, int] | None = None
        self.iommu_group_hint: int | None = None  # a real host's reported group, if imported
        self.ids_known = True  # False for a dump taken without -nn (no [vvvv:dddd] tags)
        self.ids_inferred = False  # IDs looked up from the printed name (importers.pci_names)

    # -- identity -------------------------------------------------------------------------
    @property
    def slot(self) -> int:
        return pci_slot(self.devfn)

    @property
    def function(self) -> int:
        return pci_func(self.devfn)

    @property
    def bus_number(self) -> int:
        if self.bus is None:
            raise RuntimeError(f"function {self.devfn:#x} is not attached to a bus")
        return self.bus.number

    @property
    def domain(self) -> int:
        return self.bus.domain if self.bus is not None else 0

    @property
    def rid(self) -> int:
        """pci_dev_id(): the requester ID this function puts in its TLPs."""
        return pci_devid(self.bus_number, self.devfn)

    @property
    def bdf(self) -> str:
        return format_bdf(self.domain, self.bus_number, self.devfn)

    @property
    def is_pcie(self) -> bool:
        """pci_is_pcie()."""
        return self.pcie_type is not None

    @property
    def is_virtfn(self) -> bool:
        return self.physfn is not None

    @property
    def secondary_bus(self) -> int | None:
        return self.subordinate.number if self.subordinate is not None else None

    @property
    def subordinate_bus(self) -> int | None:
        """The highest bus number below this bridge (config offset 0x1a)."""
        if self.subordinate is None:
            return None
        return self.config.read8(0x1A)

    # -- ACS --------------------------------------------------------------------------------
    def acs_registers(self) -> tuple[int, int] | None:
        """(ACS Capability, ACS Control) read from config space, or None without ACS."""
        pos = self.acs_cap_pos
        if not pos:
            return None
        return self.config.read16(pos + PCI_ACS_CAP), self.config.read16(pos + PCI_ACS_CTRL)

    def acs_ctl(self) -> AcsFlags:
        """Enabled ACS controls, 0 without an ACS capability."""
        regs = self.acs_registers()
        return AcsFlags(regs[1] & 0x7F) if regs else AcsFlags(0)

    def acs_egress_blocked(self, port_number: int) -> bool:
        """Whether the egress control vector blocks peer requests toward `port_number`."""
        pos = self.acs_cap_pos
        if not pos:
            return False
        ecvs = self.config.read16(pos + PCI_ACS_CAP) >> PCI_ACS_ECVS_SHIFT or 256
        if port_number >= ecvs:
            return False
        return bool(self.config.read32(pos + PCI_ACS_EGRESS_CTL_V) >> port_number & 1)

    def set_acs_ctl(self, ctl: AcsFlags) -> None:
        """A host write to ACS Control (only implemented bits stick, as in hardware)."""
        if not self.acs_cap_pos:
            raise ValueError(f"{self.bdf} has no ACS capability")
        self.config.write(self.acs_cap_pos + PCI_ACS_CTRL, 2, int(ctl))

    @property
    def ats_enabled(self) -> bool:
        pos = self.config.find_ext_capability(ExtCapId.ATS)
        return bool(pos and self.config.read16(pos + PCI_ATS_CTRL) & PCI_ATS_CTRL_ENABLE)

    def header_multifunction(self) -> bool:
        return bool(self.config.read8(PCI_HEADER_TYPE) & PCI_HEADER_TYPE_MFD)

    # -- address decode ---------------------------------------------------------------------
    def bar_at(self, addr: int) -> Bar | None:
        for bar in self.bars:
            if bar.contains(addr):
                return bar
        return None

    def window_contains(self, addr: int) -> bool:
        """A bridge forwards downstream the addresses inside its memory windows."""
        w = self.mem_window
        if w is not None and w[0] <= addr <= w[1]:
            return True
        w = self.pref_window
        return w is not None and w[0] <= addr <= w[1]

    def describe(self) -> str:
        """`class [cccc]: name [vvvv:dddd]`, as `lspci -nn` prints it (tags only if known)."""
        name = self.name or "Device"
        if not self.ids_known:
            return f"{self.class_name or 'Device'}: {name}"
        cls = f"{self.class_name} [{self.class_code >> 8:04x}]" if self.class_name else (
            f"Class [{self.class_code >> 8:04x}]")
        return f"{cls}: {name} [{self.vendor_id:04x}:{self.device_id:04x}]"

    def __repr__(self) -> str:
        where = self.bdf if self.bus is not None else f"unattached {self.devfn:#04x}"
        kind = self.pcie_type.name if self.pcie_type is not None else "PCI"
        return f"<PciFunction {where} {kind} {self.vendor_id:04x}:{self.device_id:04x}>"
