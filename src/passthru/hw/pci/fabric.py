"""Routing of memory requests through the PCIe hierarchy, hop by hop, as ACS decides.

A request (requester ID, address, length, read/write, address type) issued by a function is
claimed on its own bus by a peer BAR or a bridge window, or forwarded upstream port by port.
At every peer decision the *ingress* point applies its ACS controls (PCIe base spec 6.12.1
and 7.7.8): Source Validation checks the requester's bus number against the port's
secondary..subordinate range; Translation Blocking rejects translated requests; P2P Request
Redirect sends peer requests upstream; Egress Control blocks peers named in the egress
vector; Direct Translated P2P lets translated requests go peer-to-peer despite RR; Upstream
Forwarding lets a port send a redirected request that targets its own link on upstream
(without it the request cannot come back down and is an Unsupported Request). Completion
Redirect is reported for reads that went peer-to-peer. A PCIe-to-PCI bridge takes ownership
of requests from its conventional side: they carry (secondary bus, devfn 0) as requester ID
(PCIe-to-PCI bridge spec 1.0, 2.3), which is what the IOMMU then sees.

Requests that reach the root complex go to a pluggable translation stage (the IOMMU).
Outcomes are records (`RouteOutcome`), never exceptions. Left out: I/O and configuration
requests, message routing, flow control and timing (costs live in the hypervisor model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

from passthru.hw.pci.device import Bar, PciBus, PciFunction
from passthru.hw.pci.ids import pci_devid
from passthru.hw.pci.quirks import quirk_effective_acs
from passthru.hw.pci.regs import AcsFlags, PcieType

if TYPE_CHECKING:
    from passthru.hw.pci.topology import Topology


class AddressType(IntEnum):
    """The AT field of a memory request TLP (PCIe 2.2.4.1)."""

    UNTRANSLATED = 0b00
    TRANSLATION_REQUEST = 0b01
    TRANSLATED = 0b10


class RouteKind(Enum):
    ROOT_COMPLEX = "root-complex"  # went upstream into the root complex (and the IOMMU)
    PEER = "peer"  # claimed by a peer function's BAR without passing the root complex
    ACS_VIOLATION = "acs-violation"  # blocked by an ACS check at a port
    UNSUPPORTED = "unsupported-request"  # no one claims it / it cannot be forwarded


@dataclass(frozen=True, slots=True)
class MemRequest:
    requester_id: int
    address: int
    length: int
    is_write: bool
    at: AddressType = AddressType.UNTRANSLATED


@dataclass(frozen=True)
class RouteOutcome:
    """Where a request went. `ports` lists the bridges it crossed, in order."""

    kind: RouteKind
    request: MemRequest
    ports: tuple[PciFunction, ...] = ()
    target: PciFunction | None = None
    bar: Bar | None = None
    violation: AcsFlags | None = None  # the ACS check that blocked it
    at_port: PciFunction | None = None  # the port that blocked, redirected or refused it
    redirected: bool = False  # sent upstream by RR (or by a quirk with the same effect)
    completion_redirected: bool = False  # a peer read whose completion CR sends upstream
    rc_requester_id: int | None = None  # requester ID as it arrives at the root complex
    translation: object | None = None  # the translation stage's answer, if any
    reason: str = ""

    @property
    def reached_root_complex(self) -> bool:
        return self.kind is RouteKind.ROOT_COMPLEX


TranslationStage = Callable[[PciFunction, MemRequest, int], object]
"""(issuer, request, requester ID at the root complex) -> a translation or a fault record."""

_DOWNSTREAM_FACING = (PcieType.ROOT_PORT, PcieType.DOWNSTREAM)


def effective_acs(dev: PciFunction) -> AcsFlags:
    """ACS controls a port or function really applies: its register, or its quirk."""
    quirk = quirk_effective_acs(dev)
    if quirk is not None:
        return quirk
    return dev.acs_ctl()


class Fabric:
    """Routes requests on a topology; `translate` is called for requests reaching the RC."""

    def __init__(self, topology: Topology, translate: TranslationStage | None = None) -> None:
        self.topology = topology
        self.translate = translate

    # -- the routing walk ---------------------------------------------------------------------
    def route(self, issuer: PciFunction, request: MemRequest) -> RouteOutcome:
        addr = request.address
        bus = issuer.bus
        assert bus is not None
        hop: PciFunction = issuer  # the ingress point on the current bus
        ports: list[PciFunction] = []
        rid = request.requester_id
        redirected = False
        while True:
            if not redirected:
                claim = _claim(bus, addr, hop)
                if claim is not None:
                    decision, flag = self._peer_decision(issuer, hop, claim, request, bus)
                    if decision == "direct":
                        return self._descend(claim, request, ports, hop)
                    if decision == "block":
                        return RouteOutcome(RouteKind.ACS_VIOLATION, request, tuple(ports),
                                            violation=flag, at_port=hop,
                                            reason=f"{hop.bdf} egress control blocks "
                                                   f"{claim.bdf}")
                    redirected = True  # RR: on to the upstream side of this bus
            up = bus.self_
            if up is None:
                if bus.parent is None:
                    return self._root_complex(issuer, request, ports, rid, redirected)
                bus = bus.parent  # a virtual VF bus sits logically on its PF's bus
                continue
            # The request enters bridge `up` from its secondary side.
            if up.pcie_type in _DOWNSTREAM_FACING:
                acs = effective_acs(up)
                if acs & AcsFlags.SV and not _in_bus_range(up, rid >> 8):
                    return RouteOutcome(RouteKind.ACS_VIOLATION, request, tuple(ports),
                                        violation=AcsFlags.SV, at_port=up,
                                        reason=f"requester {rid >> 8:02x}:xx.x outside "
                                               f"{up.bdf}'s buses {_bus_range(up)}")
                if acs & AcsFlags.TB and request.at == AddressType.TRANSLATED:
                    return RouteOutcome(RouteKind.ACS_VIOLATION, request, tuple(ports),
                                        violation=AcsFlags.TB, at_port=up,
                                        reason=f"{up.bdf} blocks translated requests")
                if up.window_contains(addr):
                    if not acs & AcsFlags.UF:
                        return RouteOutcome(RouteKind.UNSUPPORTED, request, tuple(ports),
                                            at_port=up, redirected=redirected,
                                            reason=f"{up.bdf} cannot forward a request for its "
                                                   "own link upstream (no ACS UF)")
                    redirected = True
            elif up.window_contains(addr) and not redirected:
                return RouteOutcome(RouteKind.UNSUPPORTED, request, tuple(ports), at_port=up,
                                    reason=f"no function below {up.bdf} claims 0x{addr:x}")
            if up.pcie_type == PcieType.PCI_BRIDGE or (not up.is_pcie and up.is_bridge):
                # The bridge takes ownership of the transaction (PCIe-to-PCI bridge spec 2.3).
                if up.pcie_type == PcieType.PCI_BRIDGE or up.pcie_bridge_alias:
                    rid = pci_devid(up.secondary_bus or 0, 0)
                else:
                    rid = up.rid
            ports.append(up)
            hop = up
            bus = up.bus
            assert bus is not None

    def _peer_decision(self, issuer: PciFunction, hop: PciFunction, claim: PciFunction,
                       request: MemRequest, bus: PciBus) -> tuple[str, AcsFlags | None]:
        """'direct', 'redirect' or 'block' for a peer claim seen from ingress point `hop`."""
        above = bus.self_
        if above is not None and (not above.is_pcie or above.pcie_type == PcieType.PCI_BRIDGE):
            return "direct", None  # a shared conventional bus: every device sees the request
        if hop.pcie_type in _DOWNSTREAM_FACING:
            if bus.is_root and (not self.topology.rc_p2p or claim.pcie_type == PcieType.RC_END):
                return "redirect", None  # the root complex does not route this peer directly
        elif not (hop.multifunction and claim.slot == hop.slot):
            # A single-function device has no internal peers (PCIe 6.12.1.3), and integrated
            # endpoints reach other slots only through the root complex.
            return "redirect", None
        acs = effective_acs(hop)
        if request.at == AddressType.TRANSLATED and acs & AcsFlags.DT:
            return "direct", None
        if acs & AcsFlags.RR:
            return "redirect", None
        if acs & AcsFlags.EC and hop.acs_egress_blocked(_egress_index(hop, claim)):
            return "block", AcsFlags.EC
        return "direct", None

    def _descend(self, claim: PciFunction, request: MemRequest, ports: list[PciFunction],
                 hop: PciFunction) -> RouteOutcome:
        addr = request.address
        completer_port = claim if claim.subordinate is not None else None
        node = claim
        while node.subordinate is not None:
            ports.append(node)
            nxt = _claim(node.subordinate, addr, None)
            if nxt is None:
                return RouteOutcome(RouteKind.UNSUPPORTED, request, tuple(ports), at_port=node,
                                    reason=f"no function below {node.bdf} claims 0x{addr:x}")
            node = nxt
        cr = False
        if not request.is_write:
            # The completion re-enters the fabric at the port above the completer.
            back = completer_port or hop
            cr = bool(effective_acs(back) & AcsFlags.CR) if back.pcie_type in (
                _DOWNSTREAM_FACING) else False
        return RouteOutcome(RouteKind.PEER, request, tuple(ports), target=node,
                            bar=node.bar_at(addr), completion_redirected=cr,
                            reason=f"peer-to-peer into {node.bdf}")

    def _root_complex(self, issuer: PciFunction, request: MemRequest,
                      ports: list[PciFunction], rid: int, redirected: bool) -> RouteOutcome:
        translation = self.translate(issuer, request, rid) if self.translate else None
        return RouteOutcome(RouteKind.ROOT_COMPLEX, request, tuple(ports), redirected=redirected,
                            rc_requester_id=rid, translation=translation,
                            reason="upstream into the root complex")


def _claim(bus: PciBus, addr: int, exclude: PciFunction | None) -> PciFunction | None:
    """The function or bridge on `bus` that positively decodes `addr` (not `exclude`)."""
    for fn in bus.devices:
        if fn is exclude:
            continue
        if fn.subordinate is not None:
            if fn.window_contains(addr):
                return fn
            continue
        for bar in fn.bars:
            if bar.contains(addr):
                return fn
    for child in bus.children:  # VFs on virtual buses decode on their PF's bus
        if child.is_virtual:
            found = _claim(child, addr, exclude)
            if found is not None:
                return found
    return None


def _in_bus_range(port: PciFunction, busnr: int) -> bool:
    sec, sub = port.secondary_bus, port.subordinate_bus
    return sec is not None and sub is not None and sec <= busnr <= sub


def _bus_range(port: PciFunction) -> str:
    return f"{port.secondary_bus or 0:02x}-{port.subordinate_bus or 0:02x}"


def _egress_index(hop: PciFunction, claim: PciFunction) -> int:
    """Egress vector bit: the target's Port Number (switch) or function number (MFD)."""
    if hop.pcie_type in _DOWNSTREAM_FACING:
        return claim.port_number
    return claim.function
