"""Rebuild a `Topology` from the records of a real `lspci -vvv` dump.

Bus numbers, windows and BAR addresses are kept as the machine has them (no re-enumeration).
A bus is placed under the bridge whose secondary bus it is; a bus that only lies inside a
bridge's secondary..subordinate range is an SR-IOV virtual bus (`virtfn_add_bus()`), a child
of the bus above; any other bus is a root bus. VFs are matched to their PF by the routing-ID
arithmetic of the PF's SR-IOV capability (VF n at PF RID + offset + n * stride).
"""

from __future__ import annotations

from passthru.errors import DumpParseError
from passthru.hw.pci.device import AcsSpec, Bar, PciBus, PciFunction, SriovSpec
from passthru.hw.pci.ids import pci_devfn, pci_devid
from passthru.hw.pci.regs import AcsFlags, PcieType
from passthru.hw.pci.topology import Topology
from passthru.importers.lspci import LspciDevice, parse_lspci
from passthru.importers.pci_names import ids_from_name

_EXPRESS_TYPES = {
    "endpoint": PcieType.ENDPOINT,
    "legacy-endpoint": PcieType.LEG_END,
    "root-port": PcieType.ROOT_PORT,
    "upstream": PcieType.UPSTREAM,
    "downstream": PcieType.DOWNSTREAM,
    "pcie-to-pci-bridge": PcieType.PCI_BRIDGE,
    "pci-to-pcie-bridge": PcieType.PCIE_BRIDGE,
    "rc-endpoint": PcieType.RC_END,
    "rc-event-collector": PcieType.RC_EC,
}


def _bars(rec: LspciDevice) -> list[Bar]:
    out = []
    for b in rec.bars:
        if b.kind != "memory" or b.index is None or b.address is None or not b.size:
            continue
        if b.disabled or b.size & (b.size - 1) or b.size < 16:
            continue
        out.append(
            Bar(
                index=b.index,
                size=b.size,
                is_64=b.is_64bit,
                prefetchable=b.prefetchable,
                address=b.address,
            )
        )
    return out


def topology_from_records(records: list[LspciDevice], source: str = "<lspci>") -> Topology:
    topo = Topology()
    by_sec: dict[tuple[int, int], LspciDevice] = {}
    for rec in records:
        if rec.secondary_bus is not None:
            key = (rec.domain, rec.secondary_bus)
            if key in by_sec:
                raise DumpParseError(
                    f"{source}:{rec.line}: bus {rec.secondary_bus:02x} is the "
                    f"secondary bus of two bridges"
                )
            by_sec[key] = rec
    buses: dict[tuple[int, int], PciBus] = {}
    made: dict[tuple[int, int, int], PciFunction] = {}

    def bus_for(domain: int, number: int) -> PciBus | None:
        """The PciBus object for a bus number, once its parent exists; None if not yet."""
        key = (domain, number)
        if key in buses:
            return buses[key]
        if key in by_sec:
            br = by_sec[key]
            fn = made.get((br.domain, br.bus, pci_devfn(br.device, br.function)))
            return fn.subordinate if fn is not None else None
        holders = [
            r
            for r in by_sec.values()
            if r.domain == domain
            and r.secondary_bus is not None
            and r.subordinate_bus is not None
            and r.secondary_bus < number <= r.subordinate_bus
        ]
        if holders:  # an SR-IOV virtual bus, child of the tightest enclosing bridge's bus
            tight = min(holders, key=lambda r: (r.subordinate_bus or 0) - (r.secondary_bus or 0))
            parent = bus_for(domain, tight.secondary_bus or 0)
            if parent is None:
                return None
            bus = PciBus(number=number, domain=domain, parent=parent, is_virtual=True)
            parent.children.append(bus)
        else:
            bus = topo.root_bus(number, domain)
        buses[key] = bus
        return bus

    pending = sorted(records, key=lambda r: (r.domain, r.bus, r.device, r.function))
    while pending:
        left = []
        for rec in pending:
            bus = bus_for(rec.domain, rec.bus)
            if bus is None:
                left.append(rec)
                continue
            made[(rec.domain, rec.bus, pci_devfn(rec.device, rec.function))] = _add(topo, bus, rec)
        if len(left) == len(pending):
            rec = left[0]
            raise DumpParseError(
                f"{source}:{rec.line}: bus {rec.bus:02x} hangs below a bridge "
                "that is not in the dump"
            )
        pending = left
    _link_virtfns(records, made)
    topo.enumerate(assign_buses=False, assign_bars=False)
    return topo


def _add(topo: Topology, bus: PciBus, rec: LspciDevice) -> PciFunction:
    ptype = _EXPRESS_TYPES.get(rec.express_type) if rec.express_type else None
    is_bridge = rec.secondary_bus is not None
    class_code = ((rec.class_code or (0x0604 if is_bridge else 0)) << 8) | (rec.prog_if or 0)
    acs = None
    if rec.acs_cap is not None and ptype is not None:
        acs = AcsSpec(cap=AcsFlags(rec.acs_cap & 0x7F), ctl=AcsFlags((rec.acs_ctl or 0) & 0x7F))
    sriov = None
    if rec.sriov is not None and rec.sriov.total_vfs:
        s = rec.sriov
        sriov = SriovSpec(
            total_vfs=s.total_vfs,
            num_vfs=min(s.num_vfs, s.total_vfs),
            vf_offset=max(s.vf_offset, 1),
            vf_stride=max(s.vf_stride, 1),
            vf_device_id=s.vf_device_id or 0,
            initial_vfs=s.initial_vfs,
        )
    vid, did, inferred = rec.vendor_id, rec.device_id, False
    if vid is None or did is None:  # no -nn: the quirks still need the IDs
        ivid, idid = ids_from_name(rec.description)
        if ivid is not None:
            vid, did, inferred = ivid, idid if idid is not None else did, True
    fn = topo.add_function(
        bus,
        rec.device,
        rec.function,
        pcie_type=ptype,
        vendor_id=vid or 0,
        device_id=did or 0,
        class_code=class_code,
        name=rec.description,
        acs=acs,
        msi=rec.has_msi,
        msix=rec.has_msix,
        ats=rec.has_ats,
        sriov=sriov,
        driver=rec.kernel_driver,
    )
    if is_bridge and not fn.is_bridge:  # a conventional bridge printed without a class tag
        fn.is_bridge = True
        fn.subordinate = PciBus(number=-1, domain=bus.domain, parent=bus, self_=fn)
        bus.children.append(fn.subordinate)
    fn.class_name = rec.class_name
    fn.revision = rec.revision or 0
    fn.iommu_group_hint = rec.iommu_group
    fn.ids_known = rec.vendor_id is not None and rec.device_id is not None  # printed ones
    fn.ids_inferred = inferred
    fn.bars = _bars(rec)
    if fn.subordinate is not None:
        fn.subordinate.number = rec.secondary_bus if rec.secondary_bus is not None else -1
        fn.config.set(0x18, 1, rec.primary_bus if rec.primary_bus is not None else bus.number)
        fn.config.set(0x19, 1, rec.secondary_bus or 0)
        fn.config.set(
            0x1A,
            1,
            rec.subordinate_bus if rec.subordinate_bus is not None else rec.secondary_bus or 0,
        )
        fn.mem_window = rec.mem_window
        fn.pref_window = rec.pref_window
    return fn


def _link_virtfns(
    records: list[LspciDevice], made: dict[tuple[int, int, int], PciFunction]
) -> None:
    """pci_iov_virtfn_bus()/devfn(): attach each enabled VF in the dump to its PF."""
    for rec in records:
        if rec.sriov is None or not rec.sriov.num_vfs:
            continue
        pf = made[(rec.domain, rec.bus, pci_devfn(rec.device, rec.function))]
        s = rec.sriov
        for i in range(min(s.num_vfs, s.total_vfs)):
            rid = pci_devid(rec.bus, pf.devfn) + s.vf_offset + s.vf_stride * i
            vf = made.get((rec.domain, rid >> 8, rid & 0xFF))
            if vf is not None and vf is not pf:
                vf.physfn = pf
                pf.virtfns.append(vf)
    for fn in made.values():
        if fn.physfn is not None:
            fn.multifunction = fn.physfn.header_multifunction() or _slot_shared(fn.physfn)


def _slot_shared(pf: PciFunction) -> bool:
    assert pf.bus is not None
    return any(d is not pf and d.slot == pf.slot and not d.is_virtfn for d in pf.bus.devices)


def load_lspci(path: str) -> Topology:
    """Read a dump file; every problem is a DumpParseError naming the file (and line)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise DumpParseError(f"{path}: cannot read: {exc.strerror}") from None
    return topology_from_records(parse_lspci(text, source=path), source=path)


def import_warnings(topo: Topology) -> list[str]:
    """What the dump could not tell, so the user knows which answers rest on assumptions."""
    missing = [fn for fn in topo.functions() if not fn.ids_known]
    if not missing:
        return []
    inferred = sum(fn.ids_inferred for fn in missing)
    return [f"{len(missing)} function(s) have no [vvvv:dddd] IDs (the dump was taken without "
            f"-nn); for the {inferred} of a vendor Linux has device quirks for, the IDs were "
            "looked up by name in the bundled pci.ids table (a device renamed since is taken "
            "as unquirked); take the dump with `sudo lspci -vvv -nn` to be sure"]
