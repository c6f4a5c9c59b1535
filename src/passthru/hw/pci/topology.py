"""A PCIe hierarchy: builder, depth-first enumeration, SR-IOV VFs, BAR and window assignment.

The builder creates functions and buses in any order; `enumerate()` then does what firmware
and Linux's `pci_scan_child_bus_extend()` do: number buses depth first (reserving the buses
that SR-IOV routing-ID arithmetic needs, `pci_iov_bus_range()`), create the enabled VFs
(`pci_iov_add_virtfn()`, on virtual buses when their RID lands on another bus number), set
the multifunction bit, and assign BARs and bridge memory windows so that routing by address
works. A topology imported from a real host keeps its own bus numbers (`enumerate(
assign_buses=False)`).

Left out: I/O space and I/O windows, hot-plug bus reservations, ARI forwarding checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from passthru.errors import ConfigError, OutOfResources
from passthru.hw.pci.device import AcsSpec, Bar, PciBus, PciFunction, SriovSpec
from passthru.hw.pci.ids import format_bdf, parse_bdf, pci_devid
from passthru.hw.pci.quirks import apply_dma_alias_quirks
from passthru.hw.pci.regs import (
    PCI_ACS_CAP,
    PCI_ACS_CTRL,
    PCI_ACS_ECVS_SHIFT,
    PCI_ACS_EGRESS_CTL_V,
    PCI_ACS_SIZE,
    PCI_ATS_SIZE,
    PCI_BASE_ADDRESS_0,
    PCI_BASE_ADDRESS_MEM_PREFETCH,
    PCI_BASE_ADDRESS_MEM_TYPE_64,
    PCI_CLASS_REVISION,
    PCI_DEVICE_ID,
    PCI_EXP_CAP_SIZE,
    PCI_EXP_FLAGS,
    PCI_EXP_FLAGS_TYPE_SHIFT,
    PCI_EXP_LNKCAP,
    PCI_EXP_LNKCAP_PN_SHIFT,
    PCI_HEADER_TYPE,
    PCI_HEADER_TYPE_BRIDGE,
    PCI_HEADER_TYPE_MFD,
    PCI_MEMORY_BASE,
    PCI_MEMORY_LIMIT,
    PCI_MSI_SIZE,
    PCI_MSIX_SIZE,
    PCI_PREF_BASE_UPPER32,
    PCI_PREF_LIMIT_UPPER32,
    PCI_PREF_MEMORY_BASE,
    PCI_PREF_MEMORY_LIMIT,
    PCI_PRIMARY_BUS,
    PCI_SECONDARY_BUS,
    PCI_SRIOV_BAR,
    PCI_SRIOV_CTRL,
    PCI_SRIOV_CTRL_MSE,
    PCI_SRIOV_CTRL_VFE,
    PCI_SRIOV_INITIAL_VF,
    PCI_SRIOV_NUM_VF,
    PCI_SRIOV_SIZE,
    PCI_SRIOV_TOTAL_VF,
    PCI_SRIOV_VF_DID,
    PCI_SRIOV_VF_OFFSET,
    PCI_SUBORDINATE_BUS,
    CapId,
    ExtCapId,
    PcieType,
)

MiB = 1 << 20
_WINDOW_ALIGN = MiB  # bridge memory windows have 1 MiB granularity (PCI bridge spec 3.2.5.8)

_CLASS_NAMES = {
    0x0600: "Host bridge", 0x0604: "PCI bridge", 0x0106: "SATA controller",
    0x0108: "Non-Volatile memory controller", 0x0200: "Ethernet controller",
    0x0300: "VGA compatible controller", 0x0302: "3D controller", 0x0403: "Audio device",
    0x0C03: "USB controller", 0x0C80: "Serial bus controller", 0x0880: "System peripheral",
    0x0C09: "CANBUS", 0x0401: "Multimedia audio controller",
}


@dataclass
class Switch:
    """A PCIe switch: one upstream port and its downstream ports."""

    upstream: PciFunction
    downstream: list[PciFunction]


class Topology:
    """A host's PCI hierarchy (one or more PCI domains / root buses)."""

    def __init__(
        self,
        *,
        mmio32: tuple[int, int] = (0xC000_0000, 0xFEBF_FFFF),
        mmio64_base: int = 0x40_0000_0000,
        rc_p2p: bool = True,
    ) -> None:
        self.mmio32 = mmio32
        self.mmio64_base = mmio64_base
        self.rc_p2p = rc_p2p  # the root complex routes peer-to-peer between its root ports
        self.root_buses: list[PciBus] = []
        self._order = 0
        self._enumerated = False
        self._by_bdf: dict[str, PciFunction] = {}

    # -- building ---------------------------------------------------------------------------
    def root_bus(self, number: int = 0, domain: int = 0) -> PciBus:
        for bus in self.root_buses:
            if bus.number == number and bus.domain == domain:
                return bus
        bus = PciBus(number=number, domain=domain)
        self.root_buses.append(bus)
        return bus

    def _parent_bus(self, parent: PciBus | PciFunction | None) -> PciBus:
        if parent is None:
            return self.root_bus()
        if isinstance(parent, PciBus):
            return parent
        if parent.subordinate is None:
            raise ConfigError(f"{parent!r} is not a bridge; it cannot have devices below it")
        return parent.subordinate

    def add_function(
        self,
        parent: PciBus | PciFunction | None,
        slot: int,
        function: int = 0,
        *,
        pcie_type: PcieType | None = PcieType.ENDPOINT,
        vendor_id: int = 0x8086,
        device_id: int = 0x0000,
        class_code: int = 0x000000,
        name: str = "",
        bars: Iterable[int | Bar] = (),
        acs: AcsSpec | None = None,
        msi: bool = True,
        msix: bool = False,
        ats: bool = False,
        sriov: SriovSpec | None = None,
        multifunction: bool | None = None,
        driver: str | None = None,
        port_number: int | None = None,
    ) -> PciFunction:
        """Add a function below `parent` (a bus or a bridge). Bridges get a subordinate bus."""
        bus = self._parent_bus(parent)
        if self._enumerated:
            raise ConfigError("topology is already enumerated; build it completely first")
        is_bridge = pcie_type in (PcieType.ROOT_PORT, PcieType.UPSTREAM, PcieType.DOWNSTREAM,
                                  PcieType.PCI_BRIDGE, PcieType.PCIE_BRIDGE) or (
            pcie_type is None and class_code >> 8 == 0x0604)
        if is_bridge and not class_code:
            class_code = 0x060400
        fn = PciFunction(slot=slot, function=function, vendor_id=vendor_id, device_id=device_id,
                         class_code=class_code, pcie_type=pcie_type, is_bridge=is_bridge,
                         name=name, class_name=_CLASS_NAMES.get(class_code >> 8, ""))
        for other in bus.devices:
            if other.devfn == fn.devfn:
                raise ConfigError(f"two functions at slot {slot:#x}.{function} on {bus!r}")
        fn.bus = bus
        fn.driver = driver
        fn.port_number = slot if port_number is None else port_number
        fn.bars = [b if isinstance(b, Bar) else Bar(index=i, size=b, is_64=True,
                                                     prefetchable=b >= 1 << 24)
                   for i, b in enumerate(bars)]
        fn.sriov = sriov
        fn._order = self._order  # type: ignore[attr-defined]
        self._order += 1
        if multifunction:
            fn.multifunction = True
        bus.devices.append(fn)
        if is_bridge:
            child = PciBus(number=-1, domain=bus.domain, parent=bus, self_=fn)
            fn.subordinate = child
            bus.children.append(child)
        self._init_config(fn, acs=acs, msi=msi, msix=msix, ats=ats)
        return fn

    def _init_config(self, fn: PciFunction, *, acs: AcsSpec | None, msi: bool, msix: bool,
                     ats: bool) -> None:
        cfg = fn.config
        cfg.set(0x00, 2, fn.vendor_id)
        cfg.set(PCI_DEVICE_ID, 2, fn.device_id)
        cfg.set(PCI_CLASS_REVISION, 4, (fn.class_code << 8) | fn.revision)
        cfg.set(0x04, 2, 0, writable=0x0547)  # Command: IO, MEM, master, parity, SERR, INTx dis
        cfg.set(PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_BRIDGE if fn.is_bridge else 0)
        if fn.pcie_type is not None:
            pos = cfg.add_capability(CapId.EXP, PCI_EXP_CAP_SIZE)
            cfg.set(pos + PCI_EXP_FLAGS, 2, 2 | (fn.pcie_type << PCI_EXP_FLAGS_TYPE_SHIFT))
            cfg.set(pos + PCI_EXP_LNKCAP, 4, fn.port_number << PCI_EXP_LNKCAP_PN_SHIFT)
        if msi:
            cfg.add_capability(CapId.MSI, PCI_MSI_SIZE)
        if msix:
            cfg.add_capability(CapId.MSIX, PCI_MSIX_SIZE)
        if acs is not None:
            if fn.pcie_type is None:
                raise ConfigError(f"conventional PCI function at slot {fn.slot:#x} cannot have ACS")
            pos = cfg.add_ext_capability(ExtCapId.ACS, PCI_ACS_SIZE)
            cap = int(acs.cap) | ((acs.ecvs & 0xFF) << PCI_ACS_ECVS_SHIFT)
            cfg.set(pos + PCI_ACS_CAP, 2, cap)
            # Only implemented controls are writable; unimplemented ones read as zero.
            cfg.set(pos + PCI_ACS_CTRL, 2, int(acs.ctl & acs.cap), writable=int(acs.cap) & 0x7F)
            cfg.set(pos + PCI_ACS_EGRESS_CTL_V, 4, acs.egress_vector, writable=0xFFFFFFFF)
            fn.acs_cap_pos = pos
        if ats:
            cfg.add_ext_capability(ExtCapId.ATS, PCI_ATS_SIZE)
        if fn.sriov is not None:
            s = fn.sriov
            pos = cfg.add_ext_capability(ExtCapId.SRIOV, PCI_SRIOV_SIZE)
            cfg.set(pos + PCI_SRIOV_CTRL, 2, PCI_SRIOV_CTRL_VFE | PCI_SRIOV_CTRL_MSE
                    if s.num_vfs else 0, writable=0x001F)
            cfg.set(pos + PCI_SRIOV_INITIAL_VF, 2, s.initial_vfs or s.total_vfs)
            cfg.set(pos + PCI_SRIOV_TOTAL_VF, 2, s.total_vfs)
            cfg.set(pos + PCI_SRIOV_NUM_VF, 2, s.num_vfs, writable=0xFFFF)
            cfg.set(pos + PCI_SRIOV_VF_OFFSET, 2, s.vf_offset)
            cfg.set(pos + 0x16, 2, s.vf_stride)
            cfg.set(pos + PCI_SRIOV_VF_DID, 2, s.vf_device_id)

    # -- convenience builders ---------------------------------------------------------------
    def add_root_port(self, slot: int, function: int = 0, *, bus: PciBus | None = None,
                      **kw: object) -> PciFunction:
        kw.setdefault("name", "PCI Express Root Port")
        return self.add_function(bus or self.root_bus(), slot, function,
                                 pcie_type=PcieType.ROOT_PORT, **kw)  # type: ignore[arg-type]

    def add_endpoint(self, parent: PciBus | PciFunction | None, slot: int = 0,
                     function: int = 0, **kw: object) -> PciFunction:
        return self.add_function(parent, slot, function, **kw)  # type: ignore[arg-type]

    def add_rc_endpoint(self, slot: int, function: int = 0, *, bus: PciBus | None = None,
                        **kw: object) -> PciFunction:
        return self.add_function(bus or self.root_bus(), slot, function,
                                 pcie_type=PcieType.RC_END, **kw)  # type: ignore[arg-type]

    def add_switch(self, parent: PciBus | PciFunction, ports: int, *, slot: int = 0,
                   acs: AcsSpec | None | list[AcsSpec | None] = None,
                   vendor_id: int = 0x10B5, device_id: int = 0x8747,
                   name: str = "PCIe switch") -> Switch:
        """An upstream port at `slot` below `parent` with `ports` downstream ports."""
        up = self.add_function(parent, slot, pcie_type=PcieType.UPSTREAM, vendor_id=vendor_id,
                               device_id=device_id, name=f"{name} upstream port")
        per_port = acs if isinstance(acs, list) else [acs] * ports
        if len(per_port) != ports:
            raise ConfigError(f"switch acs list has {len(per_port)} entries for {ports} ports")
        downs = [self.add_function(up, i, pcie_type=PcieType.DOWNSTREAM, vendor_id=vendor_id,
                                   device_id=device_id, acs=per_port[i],
                                   name=f"{name} downstream port {i}", port_number=i)
                 for i in range(ports)]
        return Switch(up, downs)

    def add_pcie_to_pci_bridge(self, parent: PciBus | PciFunction, slot: int = 0,
                               **kw: object) -> PciFunction:
        kw.setdefault("name", "PCIe to PCI/PCI-X Bridge")
        kw.setdefault("msi", False)
        return self.add_function(parent, slot, pcie_type=PcieType.PCI_BRIDGE,
                                 **kw)  # type: ignore[arg-type]

    def add_pci_device(self, parent: PciBus | PciFunction, slot: int, function: int = 0,
                       **kw: object) -> PciFunction:
        """A conventional PCI function (no PCI Express capability)."""
        return self.add_function(parent, slot, function, pcie_type=None,
                                 **kw)  # type: ignore[arg-type]

    # -- enumeration ------------------------------------------------------------------------
    def enumerate(self, *, assign_buses: bool = True, assign_bars: bool = True) -> Topology:
        """Number buses, create VFs, set multifunction bits, assign BARs and windows."""
        if self._enumerated:
            return self
        for bus in self.root_buses:
            _sort_bus(bus)
            if assign_buses:
                self._scan_bus(bus)
        for fn in list(self._iter_scan_order()):
            if fn.sriov is not None and fn.sriov.num_vfs and not fn.virtfns:
                self._add_virtfns(fn)
        for fn in self._iter_scan_order():
            _set_multifunction(fn)
            apply_dma_alias_quirks(fn)
        if assign_bars:
            cur32, cur64 = self.mmio32[0], self.mmio64_base
            for bus in self.root_buses:
                cur32, cur64 = self._assign_bus(bus, cur32, cur64)
            if cur32 - 1 > self.mmio32[1]:
                raise OutOfResources(
                    f"32-bit MMIO window 0x{self.mmio32[0]:x}-0x{self.mmio32[1]:x} is too small "
                    f"for the BARs (need up to 0x{cur32 - 1:x})")
        self._enumerated = True
        self._by_bdf = {fn.bdf: fn for fn in self.functions()}
        return self

    def _scan_bus(self, bus: PciBus) -> int:
        """pci_scan_child_bus_extend(): returns the highest bus number used below `bus`."""
        highest = bus.number
        # pci_iov_bus_range(): reserve the buses the VFs of every PF on this bus will need.
        for fn in bus.devices:
            if fn.sriov is not None and fn.sriov.total_vfs:
                s = fn.sriov
                last = pci_devid(bus.number, fn.devfn) + s.vf_offset + s.vf_stride * (
                    s.total_vfs - 1)
                highest = max(highest, last >> 8)
        for fn in bus.devices:
            if fn.subordinate is None:
                continue
            child = fn.subordinate
            child.number = highest + 1
            if child.number > 0xFF:
                raise OutOfResources(f"bus numbers exhausted below {fn!r}")
            fn.config.set(PCI_PRIMARY_BUS, 1, bus.number, writable=0xFF)
            fn.config.set(PCI_SECONDARY_BUS, 1, child.number, writable=0xFF)
            _sort_bus(child)
            highest = self._scan_bus(child)
            fn.config.set(PCI_SUBORDINATE_BUS, 1, highest, writable=0xFF)
        return highest

    def _add_virtfns(self, pf: PciFunction) -> None:
        """pci_iov_add_virtfn() for every enabled VF, with pci_iov_virtfn_bus/devfn()."""
        s = pf.sriov
        assert s is not None and pf.bus is not None
        for i in range(s.num_vfs):
            rid = pf.rid + s.vf_offset + s.vf_stride * i
            busnr, devfn = rid >> 8, rid & 0xFF
            if busnr > 0xFF:
                raise OutOfResources(f"VF {i} of {pf.bdf} lands beyond bus 0xff")
            bus = pf.bus if busnr == pf.bus.number else self._virtfn_bus(pf.bus, busnr)
            vf = PciFunction(slot=devfn >> 3, function=devfn & 7, vendor_id=pf.vendor_id,
                             device_id=s.vf_device_id, class_code=pf.class_code,
                             pcie_type=PcieType.ENDPOINT, name=f"{pf.name} Virtual Function",
                             class_name=pf.class_name)
            if any(d.devfn == devfn for d in bus.devices):
                raise ConfigError(f"VF {i} of {pf.bdf} collides with an existing function at "
                                  f"{format_bdf(bus.domain, busnr, devfn)}")
            vf.bus = bus
            vf.physfn = pf
            vf._order = self._order  # type: ignore[attr-defined]
            self._order += 1
            self._init_config(vf, acs=None, msi=False, msix=True, ats=False)
            vf.multifunction = pf.multifunction  # pci_read_vf_config_common()
            vf.bars = [Bar(index=j, size=size, is_64=True, prefetchable=True)
                       for j, size in enumerate(s.vf_bars)]
            bus.devices.append(vf)
            pf.virtfns.append(vf)

    @staticmethod
    def _virtfn_bus(pf_bus: PciBus, busnr: int) -> PciBus:
        """virtfn_add_bus(): a bus with no bridge above it, child of the PF's bus."""
        for child in pf_bus.children:
            if child.number == busnr:
                return child
        child = PciBus(number=busnr, domain=pf_bus.domain, parent=pf_bus, is_virtual=True)
        pf_bus.children.append(child)
        return child

    def _assign_bus(self, bus: PciBus, cur32: int, cur64: int) -> tuple[int, int]:
        for fn in bus.devices:
            if fn.is_virtfn:
                continue  # VF BARs are slices of the PF's SR-IOV BARs
            for bar in fn.bars:
                if bar.prefetchable and bar.is_64:
                    cur64 = _align(cur64, bar.size)
                    bar.address, cur64 = cur64, cur64 + bar.size
                else:
                    cur32 = _align(cur32, bar.size)
                    bar.address, cur32 = cur32, cur32 + bar.size
                _write_bar(fn, bar)
            if fn.sriov is not None:
                cur64 = self._assign_vf_bars(fn, cur64)
        for fn in bus.devices:
            if fn.subordinate is None:
                continue
            s32, s64 = _align(cur32, _WINDOW_ALIGN), _align(cur64, _WINDOW_ALIGN)
            e32, e64 = self._assign_bus(fn.subordinate, s32, s64)
            e32, e64 = _align(e32, _WINDOW_ALIGN), _align(e64, _WINDOW_ALIGN)
            fn.mem_window = (s32, e32 - 1) if e32 > s32 else None
            fn.pref_window = (s64, e64 - 1) if e64 > s64 else None
            _write_windows(fn)
            cur32, cur64 = max(cur32, e32), max(cur64, e64)
        # VFs on virtual buses below this bus have their BARs inside the PF regions already.
        return cur32, cur64

    @staticmethod
    def _assign_vf_bars(pf: PciFunction, cur64: int) -> int:
        """Each SR-IOV BAR region holds TotalVFs slices (sriov_init resource sizing)."""
        s = pf.sriov
        assert s is not None
        pos = pf.config.find_ext_capability(ExtCapId.SRIOV)
        pf.vf_bars = []
        for j, size in enumerate(s.vf_bars):
            region = size * s.total_vfs
            cur64 = _align(cur64, size)
            pf.vf_bars.append(Bar(index=j, size=1 << (region - 1).bit_length(), address=cur64))
            pf.config.set(pos + PCI_SRIOV_BAR + 4 * j, 4, (cur64 & 0xFFFFFFF0) | 0xC)
            for i, vf in enumerate(pf.virtfns):
                vf.bars[j].address = cur64 + i * size
            cur64 += region
        return cur64

    # -- lookup -----------------------------------------------------------------------------
    def _iter_scan_order(self) -> Iterator[PciFunction]:
        """Linux's device_add order: each bus's devices in devfn order, then its bridges'
        subtrees; VFs come after the whole scan (they are added when sriov_numvfs is set)."""
        vfs: list[PciFunction] = []

        def walk(bus: PciBus) -> Iterator[PciFunction]:
            for fn in bus.devices:
                if fn.is_virtfn:
                    vfs.append(fn)
                else:
                    yield fn
            for fn in bus.devices:
                if fn.subordinate is not None:
                    yield from walk(fn.subordinate)
            for child in bus.children:
                if child.is_virtual:
                    yield from walk(child)

        for bus in self.root_buses:
            yield from walk(bus)
        vfs.sort(key=lambda f: f._order)  # type: ignore[attr-defined]
        yield from vfs

    def functions(self) -> list[PciFunction]:
        """All functions in Linux's probe order."""
        return list(self._iter_scan_order())

    def find(self, bdf: str) -> PciFunction:
        """The function at `[dddd:]bb:dd.f`; ConfigError names the address when absent."""
        try:
            domain, bus, devfn = parse_bdf(bdf)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        key = format_bdf(domain, bus, devfn)
        fn = self._by_bdf.get(key)
        if fn is None:
            raise ConfigError(f"no PCI function at {key}")
        return fn

    def function_by_rid(self, rid: int, domain: int = 0) -> PciFunction | None:
        return self._by_bdf.get(format_bdf(domain, rid >> 8, rid & 0xFF))

    def all_buses(self) -> list[PciBus]:
        out: list[PciBus] = []

        def walk(bus: PciBus) -> None:
            out.append(bus)
            for child in bus.children:
                walk(child)

        for bus in self.root_buses:
            walk(bus)
        return out

    def __repr__(self) -> str:
        return f"<Topology {len(self._by_bdf)} functions, {len(self.root_buses)} root bus(es)>"


def _sort_bus(bus: PciBus) -> None:
    bus.devices.sort(key=lambda f: f.devfn)
    bus.children.sort(key=lambda b: (b.self_.devfn if b.self_ is not None else 0x100, b.number))


def _set_multifunction(fn: PciFunction) -> None:
    """pci_scan_slot(): fn 0 reads the header bit; any fn > 0 is multifunction."""
    if fn.is_virtfn or fn.bus is None:
        return
    siblings = [d for d in fn.bus.devices if d.slot == fn.slot and not d.is_virtfn]
    if len(siblings) > 1 or fn.function > 0:
        fn.multifunction = True
    if fn.multifunction:
        hdr = fn.config.read8(PCI_HEADER_TYPE)
        fn.config.set(PCI_HEADER_TYPE, 1, hdr | PCI_HEADER_TYPE_MFD)


def _align(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def _write_bar(fn: PciFunction, bar: Bar) -> None:
    if fn.is_bridge and bar.index > 1:
        return
    off = PCI_BASE_ADDRESS_0 + 4 * bar.index
    flags = (PCI_BASE_ADDRESS_MEM_TYPE_64 if bar.is_64 else 0) | (
        PCI_BASE_ADDRESS_MEM_PREFETCH if bar.prefetchable else 0)
    assert bar.address is not None
    fn.config.set(off, 4, (bar.address & 0xFFFFFFF0) | flags, writable=~(bar.size - 1) & 0xFFFFFFF0)
    if bar.is_64 and off + 4 < 0x28:
        fn.config.set(off + 4, 4, bar.address >> 32, writable=0xFFFFFFFF)


def _write_windows(fn: PciFunction) -> None:
    """Memory Base/Limit and Prefetchable Base/Limit (+upper 32) registers."""
    base, limit = fn.mem_window or (0xFFF00000, 0x000FFFFF)
    fn.config.set(PCI_MEMORY_BASE, 2, (base >> 16) & 0xFFF0, writable=0xFFF0)
    fn.config.set(PCI_MEMORY_LIMIT, 2, (limit >> 16) & 0xFFF0, writable=0xFFF0)
    pbase, plimit = fn.pref_window or (0xFFF00000, 0x000FFFFF)
    fn.config.set(PCI_PREF_MEMORY_BASE, 2, ((pbase >> 16) & 0xFFF0) | 1, writable=0xFFF0)
    fn.config.set(PCI_PREF_MEMORY_LIMIT, 2, ((plimit >> 16) & 0xFFF0) | 1, writable=0xFFF0)
    fn.config.set(PCI_PREF_BASE_UPPER32, 4, pbase >> 32, writable=0xFFFFFFFF)
    fn.config.set(PCI_PREF_LIMIT_UPPER32, 4, plimit >> 32, writable=0xFFFFFFFF)
