"""The host platform's DMA path: fabric routing, then the IOMMU, then memory.

A device's memory request is routed through the PCIe fabric (`Fabric.route`). A request
claimed by a peer BAR lands in that function's MMIO handler without the IOMMU ever seeing
it. A request that reaches the root complex is either an interrupt (a DWORD write into the
0xFEEx_xxxx window, VT-d spec 3.14, handed to interrupt remapping) or a DMA that the VT-d
unit translates with the requester ID *as it arrives at the root complex* (a PCIe-to-PCI
bridge may have replaced it). With no unit, or translation disabled in the unit, addresses
go to memory untranslated. Every outcome is a `DmaResult` record; no hardware outcome
raises.

Left out: peer BARs reached *through* the IOMMU (an IOVA that translates into MMIO space),
ATS translated requests to memory (the unit blocks them), ordering and timing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from passthru.hw.iommu.vtd.entries import is_interrupt_address
from passthru.hw.iommu.vtd.faults import FaultRecord
from passthru.hw.iommu.vtd.intremap import InterruptResult
from passthru.hw.iommu.vtd.unit import DmarUnit, NoMemory
from passthru.hw.memory import HostMemory
from passthru.hw.pci.device import Bar, PciFunction
from passthru.hw.pci.fabric import AddressType, Fabric, MemRequest, RouteKind, RouteOutcome
from passthru.hw.pci.topology import Topology

MmioWrite = Callable[[Bar, int, bytes], None]
MmioRead = Callable[[Bar, int, int], bytes]


class DmaStatus(Enum):
    MEMORY = "memory"  # host memory was read or written
    PEER = "peer"  # a peer function's BAR took it (no IOMMU on the path)
    INTERRUPT = "interrupt"  # an MSI that was delivered (remapped or compatibility format)
    FAULT = "fault"  # the IOMMU refused it: see `fault`
    ACS_VIOLATION = "acs-violation"
    UNSUPPORTED = "unsupported-request"


@dataclass(frozen=True)
class DmaResult:
    status: DmaStatus
    route: RouteOutcome
    data: bytes | None = None  # what a read returned
    fault: FaultRecord | None = None
    interrupt: InterruptResult | None = None

    @property
    def ok(self) -> bool:
        return self.status in (DmaStatus.MEMORY, DmaStatus.PEER, DmaStatus.INTERRUPT)


class Platform:
    """Topology + host memory + (optionally) a VT-d unit, joined into one DMA path."""

    def __init__(self, topology: Topology, memory: HostMemory,
                 iommu: DmarUnit | None = None) -> None:
        self.topology = topology
        self.memory = memory
        self.iommu = iommu
        self.fabric = Fabric(topology)
        self._mmio: dict[int, tuple[MmioRead | None, MmioWrite | None]] = {}

    def __repr__(self) -> str:
        return (f"<Platform {self.topology!r}, {self.memory.size >> 30} GiB, "
                f"iommu={'on' if self.iommu is not None else 'off'}>")

    def attach_mmio(self, fn: PciFunction, *, read: MmioRead | None = None,
                    write: MmioWrite | None = None) -> None:
        """Register the device model that answers accesses to `fn`'s BARs."""
        self._mmio[id(fn)] = (read, write)

    # -- device-initiated requests ------------------------------------------------------------
    def dma_write(self, issuer: PciFunction, address: int, data: bytes, *,
                  requester_id: int | None = None,
                  at: AddressType = AddressType.UNTRANSLATED) -> DmaResult:
        rid = issuer.rid if requester_id is None else requester_id
        route = self.fabric.route(issuer, MemRequest(rid, address, len(data), True, at))
        if route.kind is RouteKind.PEER:
            assert route.target is not None and route.bar is not None
            _, write = self._mmio.get(id(route.target), (None, None))
            if write is not None:
                write(route.bar, address - (route.bar.address or 0), bytes(data))
            return DmaResult(DmaStatus.PEER, route)
        if route.kind is not RouteKind.ROOT_COMPLEX:
            return DmaResult(_status(route), route)
        source_id = route.rc_requester_id if route.rc_requester_id is not None else rid
        if is_interrupt_address(address):
            return self._interrupt(route, source_id, address, data)
        if at == AddressType.TRANSLATED and self.iommu is not None:
            return DmaResult(DmaStatus.FAULT, route,
                             fault=self.iommu.translated_request(source_id, address, True))
        if self.iommu is None:
            if address + len(data) > self.memory.size:
                return DmaResult(DmaStatus.UNSUPPORTED, route)
            self.memory.write(address, data)
            return DmaResult(DmaStatus.MEMORY, route)
        fault = self.iommu.dma_write(source_id, address, bytes(data))
        if isinstance(fault, NoMemory):
            return DmaResult(DmaStatus.UNSUPPORTED, route)
        if fault is not None:
            return DmaResult(DmaStatus.FAULT, route, fault=fault)
        return DmaResult(DmaStatus.MEMORY, route)

    def dma_read(self, issuer: PciFunction, address: int, length: int, *,
                 requester_id: int | None = None,
                 at: AddressType = AddressType.UNTRANSLATED) -> DmaResult:
        rid = issuer.rid if requester_id is None else requester_id
        route = self.fabric.route(issuer, MemRequest(rid, address, length, False, at))
        if route.kind is RouteKind.PEER:
            assert route.target is not None and route.bar is not None
            read, _ = self._mmio.get(id(route.target), (None, None))
            data = read(route.bar, address - (route.bar.address or 0), length) if read else (
                b"\xff" * length)
            return DmaResult(DmaStatus.PEER, route, data=data)
        if route.kind is not RouteKind.ROOT_COMPLEX:
            return DmaResult(_status(route), route)
        source_id = route.rc_requester_id if route.rc_requester_id is not None else rid
        if at == AddressType.TRANSLATED and self.iommu is not None:
            return DmaResult(DmaStatus.FAULT, route,
                             fault=self.iommu.translated_request(source_id, address, False))
        if self.iommu is None:
            if address + length > self.memory.size:
                return DmaResult(DmaStatus.UNSUPPORTED, route)
            return DmaResult(DmaStatus.MEMORY, route, data=self.memory.read(address, length))
        got = self.iommu.dma_read(source_id, address, length)
        if isinstance(got, FaultRecord):
            return DmaResult(DmaStatus.FAULT, route, fault=got)
        if isinstance(got, NoMemory):
            return DmaResult(DmaStatus.UNSUPPORTED, route)
        return DmaResult(DmaStatus.MEMORY, route, data=got)

    def _interrupt(self, route: RouteOutcome, source_id: int, address: int,
                   data: bytes) -> DmaResult:
        value = int.from_bytes(bytes(data[:4]).ljust(4, b"\0"), "little")
        if self.iommu is None:
            # No remapping hardware: the write is the interrupt, whatever the device chose.
            vector = value & 0xFF
            dest = (address >> 12) & 0xFF
            return DmaResult(DmaStatus.INTERRUPT, route, interrupt=InterruptResult(
                vector=vector, destination=dest, delivery_mode=(value >> 8) & 7,
                trigger_mode=(value >> 15) & 1, dest_mode=(address >> 2) & 1,
                remapped=False, posted=False))
        got = self.iommu.remap_interrupt(source_id, address, value)
        if isinstance(got, FaultRecord):
            return DmaResult(DmaStatus.FAULT, route, fault=got)
        return DmaResult(DmaStatus.INTERRUPT, route, interrupt=got)


def _status(route: RouteOutcome) -> DmaStatus:
    return (DmaStatus.ACS_VIOLATION if route.kind is RouteKind.ACS_VIOLATION
            else DmaStatus.UNSUPPORTED)
