"""Who can reach what: memory, peer BARs and interrupts per DMA-capable function.

What is modelled: for a built ``Host`` (``hv.build``) and every non-bridge function, without
running anything, what a DMA request of that function can do, decided the way the simulated
hardware decides it (``hw.platform.Platform``):

- the fabric first (``Fabric.route``, PCIe 6.12 ACS): addresses claimed by a peer BAR or a
  bridge window on the way up never reach the root complex; the requester ID the IOMMU sees
  is the one at the root complex (a PCIe-to-PCI bridge replaces it);
- memory (VT-d 3.4-3.9): the context entry of that source-id (the context cache's copy
  first, else the tables in host memory), then TT=pass-through (identity domain) or a walk
  of the *second-level tables in host memory* (R/W ANDed over the levels, reserved bits,
  large-page support, the domain's address width), overridden page by page by the IOTLB
  entries of the domain (4 KiB before 2 MiB before 1 GiB, as the lookup probes them). An
  IOTLB entry the tables no longer back (a lazy unmap waiting in the flush queue) is a
  *stale window*. Input addresses in the MSI window are interrupts, output addresses in it
  fault (3.14); no IOMMU, or translation off, reaches all memory untranslated;
- peer BARs: every BAR whose address a request of the function (untranslated, and
  translated when the function has ATS) takes peer-to-peer: multifunction loopback, P2P
  at switch downstream ports and root ports not redirected by ACS RR, translated requests
  allowed by DT and not blocked by TB;
- interrupts (5.1): interrupt remapping off (or no IOMMU) - any vector to any CPU; on - the
  present IRTEs whose SVT/SQ/SID check the function's source-id passes (interrupt-entry
  cache first), plus compatibility format while CFIS is set.

Results are ``FunctionReach`` records grouped in ``TenantSummary`` (a VM or the host) with a
plain-words ``describe()``. The claims are checked against simulated DMA attempts by
``tests/analysis/test_soundness.py``.

Left out: multiple DMAR units, scalable mode/PASIDs, the device-TLB (translated requests to
the root complex are always blocked, as in ``hw.iommu.vtd.translate``), BARs reached
*through* the IOMMU (the platform does not route an IOVA into MMIO), the IOTLB's future
evictions (a stale entry is reported while it is cached), and DMA by bridges.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from enum import Enum, IntFlag
from typing import TYPE_CHECKING, Any

from passthru.analysis.ranges_set import RangeSet
from passthru.hw.iommu.vtd.entries import (
    IRTE_P,
    MSI_WINDOW_BASE,
    MSI_WINDOW_LAST,
    PID_CONTROL,
    PID_RSVD_CONTROL,
    AddressWidth,
    Irte,
    Svt,
    TranslationType,
    irte_rsvd_bits,
    sid_matches,
    sl_addr_mask,
    slpte_rsvd_mask,
)
from passthru.hw.iommu.vtd.faults import FaultReason
from passthru.hw.iommu.vtd.iotlb import DID_SHIFT, LEVEL_SHIFT
from passthru.hw.pci.device import Bar, PciBus, PciFunction
from passthru.hw.pci.fabric import AddressType, Fabric, MemRequest, RouteKind, RouteOutcome
from passthru.hw.pci.regs import AcsFlags, PcieType

if TYPE_CHECKING:
    from passthru.hv.host import Host

MSI_END = MSI_WINDOW_LAST + 1
_MSI = RangeSet.of(MSI_WINDOW_BASE, MSI_END)
_ATS_CAP = 0x000F
_PS = 1 << 7
_TABLE = struct.Struct("<512Q")


class Access(IntFlag):
    READ = 1
    WRITE = 2

    def words(self) -> str:
        return {1: "read", 2: "write", 3: "read/write"}.get(int(self), "none")


class Via(Enum):
    """Why a DMA reaches memory."""

    MAPPING = "IOMMU mapping"
    IDENTITY = "identity domain"
    STALE_IOTLB = "stale IOTLB entry"
    UNTRANSLATED = "no DMA remapping"


_ACCESS = {a: Access(a) for a in range(4)}


@dataclass(frozen=True, slots=True)
class Window:
    """IOVAs ``[iova, iova + size)`` reach HPAs ``[hpa, hpa + size)`` with ``access``."""

    iova: int
    hpa: int
    size: int
    access: Access
    via: Via
    domain: int | None = None

    def __repr__(self) -> str:
        return (f"<Window iova {self.iova:#x}+{self.size:#x} -> hpa {self.hpa:#x} "
                f"{self.access.words()} ({self.via.value})>")


@dataclass(frozen=True)
class MemoryReach:
    """Host memory a function reaches: ``ranges`` of one owner, one access and one reason."""

    owner: str  # a VM name, or "host"
    what: str  # "RAM", "hypervisor reserve", "IOMMU tables", "host memory"
    ranges: RangeSet
    access: Access
    via: Via

    def describe(self, tenant: str, full: RangeSet | None = None) -> str:
        own = self.owner == tenant and self.what == "RAM"
        if self.what == "RAM":
            whose = "its own" if own else f"VM {self.owner}'s"
            missing = full - self.ranges if full is not None else RangeSet()
            if full is not None and not missing:
                text = f"{whose} RAM"
            elif full is not None and missing.size < full.size // 2:
                text = f"{whose} RAM except {_size(missing.size)} ({missing.describe(2)})"
            elif full is not None and full.size:
                text = (f"part of {whose} RAM ({_size(self.ranges.size)} of "
                        f"{_size(full.size)}: {self.ranges.describe(2)})")
            else:
                text = f"{whose} RAM {self.ranges.describe(2)}"
        else:
            text = f"{self.what} {self.ranges.describe(2)}"
        if self.via is not Via.MAPPING:
            text += f" ({self.via.value})"
        return text


@dataclass(frozen=True)
class PeerReach:
    """A peer BAR the function reaches without the IOMMU."""

    target: PciFunction
    bar: Bar
    at: AddressType
    owner: str  # the tenant the target belongs to
    reason: str
    via: tuple[PciFunction, ...] = ()

    def target_words(self, tenant: str) -> str:
        if self.owner == tenant:
            whose = f"{_tenant_words(tenant)}'s own"
        else:
            whose = _tenant_words(self.owner) + "'s"
        kind = ", translated" if self.at == AddressType.TRANSLATED else ""
        return f"{whose} {device_kind(self.target)} {self.target.bdf} BAR{self.bar.index}{kind}"

    def describe(self, tenant: str) -> str:
        return f"{self.target_words(tenant)} ({self.reason})"


@dataclass(frozen=True)
class PeerSet:
    """The BARs one claimant decodes, all reached by one routing decision.

    ``claimant`` is a peer function, or a bridge (switch port, root port) whose whole subtree
    the requests reach; ``bars`` is shared between the functions that get the same decision.
    """

    claimant: PciFunction
    at: AddressType
    reason: str
    bars: tuple[tuple[PciFunction, Bar, str], ...]  # (target, BAR, owning tenant)

    def reaches(self) -> list[PeerReach]:
        return [PeerReach(t, bar, self.at, owner, self.reason) for t, bar, owner in self.bars]

    def describe(self, tenant: str) -> str:
        if len(self.bars) <= 4:
            what = ", ".join(p.target_words(tenant) for p in self.reaches())
        else:
            fns = {id(t) for t, _, _ in self.bars}
            owners = sorted({o for _, _, o in self.bars})
            whose = ", ".join(_tenant_words(o) + ("'s own" if o == tenant else "'s")
                              for o in owners)
            kind = ", translated" if self.at == AddressType.TRANSLATED else ""
            what = (f"{len(self.bars)} BARs of {len(fns)} functions below "
                    f"{self.claimant.bdf}{kind} ({whose})")
        return f"{what} ({self.reason})"


@dataclass(frozen=True)
class IrteReach:
    index: int
    vector: int
    destination: int
    posted: bool
    target: str  # "vm db vCPU0" or "host CPU 3"


@dataclass(frozen=True)
class InterruptReach:
    """Interrupts a function can raise: any (no remapping) or through the listed IRTEs."""

    remapping: bool
    any_vector: bool  # compatibility format gets through: any vector on any CPU
    entries: tuple[IrteReach, ...] = ()
    blocked: str = ""  # the MSI never reaches the root complex: why

    def describe(self) -> str:
        if self.blocked:
            return f"no interrupts ({self.blocked})"
        if self.any_vector:
            why = "interrupt remapping off" if not self.remapping else "compatibility format"
            return f"any vector on any CPU ({why})"
        if not self.entries:
            return "no interrupts (no IRTE accepts its source-id)"
        return "; ".join(f"vector {e.vector:#x} on {e.target} (IRTE {e.index}"
                         f"{', posted' if e.posted else ''})" for e in self.entries)


@dataclass
class FunctionReach:
    fn: PciFunction
    tenant: str
    source_id: int | None  # requester ID at the root complex (None: never gets there)
    blocked: str  # why untranslated requests never reach the root complex, or ""
    domain: int | None
    windows: tuple[Window, ...]
    memory: tuple[MemoryReach, ...]
    peer_sets: tuple[PeerSet, ...]
    interrupts: InterruptReach

    @property
    def peers(self) -> list[PeerReach]:
        """Every peer BAR reached, one record per BAR."""
        return [p for ps in self.peer_sets for p in ps.reaches()]

    def translate(self, iova: int, is_write: bool) -> int | None:
        """The HPA a DMA to ``iova`` reaches, or None when it does not reach memory."""
        need = Access.WRITE if is_write else Access.READ
        for w in self.windows:
            if w.iova <= iova < w.iova + w.size and w.access & need:
                return w.hpa + (iova - w.iova)
        return None

    def hpa(self, access: Access) -> RangeSet:
        return RangeSet((s, e) for m in self.memory if m.access & access for s, e in m.ranges)

    def peer_bars(self, at: AddressType = AddressType.UNTRANSLATED) -> set[tuple[str, int]]:
        return {(t.bdf, bar.index) for ps in self.peer_sets if ps.at == at
                for t, bar, _ in ps.bars}

    def describe(self, full_ram: dict[str, RangeSet] | None = None) -> list[str]:
        """Plain-words lines: what it can write and read, and which interrupts it can raise."""
        full_ram = full_ram or {}
        head = f"{_tenant_words(self.tenant)}'s {device_kind(self.fn)} {self.fn.bdf}"
        peers = [ps.describe(self.tenant) for ps in self.peer_sets]

        def items(mems: list[MemoryReach]) -> str:
            got = []
            for via in Via:
                group = [m for m in mems if m.via is via]
                if via in (Via.IDENTITY, Via.UNTRANSLATED) and len(group) > 1:
                    got.append(_whole_memory(group, via))
                else:
                    got += [m.describe(self.tenant, full_ram.get(m.owner)) for m in group]
            got += peers
            if not got:
                return "nothing" + (f" ({self.blocked})" if self.blocked else "")
            return "; ".join(got)

        if all(m.access == Access.READ | Access.WRITE for m in self.memory):
            out = [f"{head} can read and write: {items(list(self.memory))}"]
        else:
            out = [f"{head} can write: "
                   f"{items([m for m in self.memory if m.access & Access.WRITE])}",
                   f"{head} can read: "
                   f"{items([m for m in self.memory if m.access & Access.READ])}"]
        out.append(f"{head} can raise: {self.interrupts.describe()}")
        return out


@dataclass
class TenantSummary:
    name: str
    functions: list[FunctionReach] = field(default_factory=list)
    ram: RangeSet = field(default_factory=RangeSet)

    def describe(self, full_ram: dict[str, RangeSet] | None = None) -> str:
        lines = [f"{_tenant_words(self.name)}: {len(self.functions)} DMA-capable "
                 f"function{'s' if len(self.functions) != 1 else ''}"]
        for fr in self.functions:
            lines += ["  " + line for line in fr.describe(full_ram)]
        return "\n".join(lines)


@dataclass
class ReachabilityReport:
    functions: dict[str, FunctionReach]
    tenants: dict[str, TenantSummary]

    def describe(self) -> str:
        ram = {t.name: t.ram for t in self.tenants.values()}
        return "\n\n".join(t.describe(ram) for t in self.tenants.values())

    def to_dict(self) -> dict[str, Any]:
        def fn_dict(fr: FunctionReach) -> dict[str, Any]:
            return {
                "bdf": fr.fn.bdf, "source_id": fr.source_id, "blocked": fr.blocked,
                "domain": fr.domain,
                "memory": [{"owner": m.owner, "what": m.what, "access": m.access.words(),
                            "via": m.via.value,
                            "ranges": [[s, e - 1] for s, e in m.ranges]} for m in fr.memory],
                "peers": [{"via": ps.claimant.bdf, "reason": ps.reason,
                           "translated": ps.at == AddressType.TRANSLATED,
                           "bars": [{"bdf": t.bdf, "bar": bar.index, "owner": owner}
                                    for t, bar, owner in ps.bars]} for ps in fr.peer_sets],
                "interrupts": {"remapping": fr.interrupts.remapping,
                               "any_vector": fr.interrupts.any_vector,
                               "blocked": fr.interrupts.blocked,
                               "irtes": [{"index": e.index, "vector": e.vector,
                                          "posted": e.posted, "target": e.target}
                                         for e in fr.interrupts.entries]},
                "summary": fr.describe(),
            }
        return {"tenants": {name: [fn_dict(fr) for fr in t.functions]
                            for name, t in self.tenants.items()}}


_KINDS = {0x0108: "NVMe", 0x0106: "SATA controller", 0x0200: "NIC", 0x0300: "GPU",
          0x0302: "GPU", 0x0403: "audio", 0x0401: "audio", 0x0C03: "USB controller",
          0x0C09: "CAN controller", 0x0600: "host bridge"}


def device_kind(fn: PciFunction) -> str:
    kind = _KINDS.get(fn.class_code >> 8, "device")
    return f"{kind} VF" if fn.is_virtfn else kind


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.2f}".rstrip("0").rstrip(".") + unit
    return f"{n}B"


def _whole_memory(group: list[MemoryReach], via: Via) -> str:
    """One phrase for an identity (or untranslated) reach over many owners."""
    union = RangeSet((s, e) for m in group for s, e in m.ranges)
    vms = sorted({m.owner for m in group if m.what == "RAM"})
    host = sorted({m.what for m in group if m.owner == "host" and m.what != "host memory"})
    inside = [f"the RAM of VM{'s' if len(vms) > 1 else ''} {', '.join(vms)}"] if vms else []
    inside += [f"the {what}" for what in host]
    return (f"host memory {union.describe(3)} ({via.value})"
            + (": " + ", ".join(inside) if inside else ""))


def _tenant_words(name: str) -> str:
    return "the host" if name == "host" else f"VM {name}"


# ---------------------------------------------------------------------------- the analysis
class _Analysis:
    """State shared by every function of one ``analyze`` call (caches keyed by domain)."""

    def __init__(self, host: Host, tenant_of: dict[int, str]) -> None:
        self.host = host
        self.mem = host.memory
        self.tenant_of = tenant_of
        self.platform = host.platform
        self.unit = host.platform.iommu
        self.fabric = Fabric(host.topology)
        self.mmio = RangeSet(_decoded_ranges(host.topology))
        self.neutral = _neutral_address(self.mmio)
        self._domain_cache: dict[tuple[Any, ...], tuple[int | None, list[Window]]] = {}
        self._table_pages: set[int] = set()
        self._walked: set[int] = set()  # SL table roots already walked
        self._peer_cache: dict[tuple[int, int, int], PeerSet] = {}
        self._subtrees: dict[int, tuple[tuple[PciFunction, Bar, str], ...]] = {}
        self._level_cache: dict[tuple[int, int], list[PciFunction]] = {}
        self._up_cache: dict[tuple[int, int], tuple[RouteOutcome, int]] = {}
        self._memory_cache: dict[tuple[Window, ...], tuple[MemoryReach, ...]] = {}
        self._irtes: tuple[dict[int, list[IrteReach]], list[tuple[Irte, IrteReach]]] | None = None
        self.labels: list[tuple[int, int, str, str]] = []  # filled by _label_memory

    # -- memory ---------------------------------------------------------------------------
    def domain_windows(self, sid: int) -> tuple[int | None, list[Window]]:
        """(domain id, windows) of requests with source-id ``sid`` at the root complex."""
        size = self.mem.size
        unit = self.unit
        if unit is None or not unit.dma.enabled:
            return None, _in_memory([
                Window(0, 0, MSI_WINDOW_BASE, Access(3), Via.UNTRANSLATED),
                Window(MSI_WINDOW_BASE, MSI_WINDOW_BASE, MSI_END - MSI_WINDOW_BASE,
                       Access.READ if unit is None else Access(0), Via.UNTRANSLATED),
                Window(MSI_END, MSI_END, max(0, size - MSI_END), Access(3), Via.UNTRANSLATED)],
                size)
        cc = unit.context_cache.entries.get(sid)  # no lookup(): it would touch the LRU order
        if cc is not None:
            tt, did, levels, limit, root = cc.tt, cc.did, cc.levels, cc.limit, cc.slptptr
        else:
            ce = unit.dma.read_context_entry(sid)
            if isinstance(ce, FaultReason) or unit.dma.check_context_entry(ce) is not None:
                return None, []
            aw = AddressWidth(ce.aw)
            tt, did, levels, root = ce.tt, ce.did, aw.levels, ce.slptptr
            limit = 1 << min(aw.bits, unit.dma.mgaw)
        if tt == TranslationType.PASS_THROUGH:
            return did, _split_msi([Window(0, 0, size, Access(3), Via.IDENTITY, did)])
        key = (did, levels, limit, root)
        if key not in self._domain_cache:
            self._domain_cache[key] = (did, _in_memory(self._walk_domain(did, levels, limit,
                                                                         root), size))
        return self._domain_cache[key]

    def _walk_domain(self, did: int, levels: int, limit: int, root: int) -> list[Window]:
        assert self.unit is not None
        dma = self.unit.dma
        haw = self.unit.haw
        mask = sl_addr_mask(haw)
        rsvd = {(lv, lg): slpte_rsvd_mask(lv, bool(lg), haw) for lv in (1, 2, 3, 4)
                for lg in (0, 1)}
        leaves: list[tuple[int, int, int, int]] = []  # iova, size, hpa, perms

        def walk(table: int, level: int, base: int, perms: int) -> None:
            try:
                data = self.mem.read(table, 4096)
            except IndexError:
                return  # fault 0x7: nothing below is reachable
            self._table_pages.add(table)
            if not any(data):
                return
            shift = 12 + 9 * (level - 1)
            for idx, pte in enumerate(_TABLE.unpack(data)):
                p = perms & pte & 3
                if not p:
                    continue
                large = bool(pte & _PS) and level in (2, 3)
                if pte & rsvd[(level, int(large))] or (
                        large and not (dma.large_2m if level == 2 else dma.large_1g)):
                    continue  # fault 0xC
                iova = base + (idx << shift)
                if iova >= limit:
                    continue  # fault 0x4
                if level == 1 or large:
                    size = 1 << shift
                    leaves.append((iova, size, pte & mask & ~(size - 1), p))
                else:
                    walk(pte & mask, level - 1, iova, p)

        self._walked.add(root)
        walk(root, levels, 0, 3)
        runs: list[list[int]] = []  # leaves contiguous in IOVA and HPA, same perms: joined
        for iova, size, hpa, p in leaves:
            last = runs[-1] if runs else None
            if last is not None and last[0] + last[1] == iova and last[2] + last[1] == hpa \
                    and last[3] == p:
                last[1] += size
            else:
                runs.append([iova, size, hpa, p])
        table_w = [Window(i, h, s, _ACCESS[p], Via.MAPPING, did) for i, s, h, p in runs]
        # IOTLB entries of the domain override the tables page by page (lookup order).
        tlb: list[tuple[int, Window]] = []
        for key, t in self.unit.iotlb.entries.items():
            if key >> DID_SHIFT != did:
                continue
            level = (key >> LEVEL_SHIFT) & 3
            access = Access((1 if t.readable else 0) | (2 if t.writable else 0))
            tlb.append((level, Window(t.iova, t.hpa, t.page_size, access, Via.MAPPING, did)))
        if not tlb:
            return _split_msi(table_w)
        covered = RangeSet()
        cached: list[Window] = []
        backed = {(w.iova, w.hpa, w.size, w.access) for w in table_w}
        for _, w in sorted(tlb, key=lambda x: (x[0], x[1].iova)):
            own = RangeSet.of(w.iova, w.iova + w.size) - covered
            covered = covered | own
            if (w.iova, w.hpa, w.size, w.access) not in backed:
                w = Window(w.iova, w.hpa, w.size, w.access, Via.STALE_IOTLB, did)
            cached += _restrict(w, own)
        rest = _cut(table_w, covered)
        return _split_msi(sorted(rest + cached, key=lambda w: w.iova))

    def memory_of(self, tenant: str, windows: tuple[Window, ...]) -> tuple[MemoryReach, ...]:
        key = windows
        got = self._memory_cache.get(key)
        if got is not None:
            return got
        groups: dict[tuple[str, str, int, Via], list[tuple[int, int]]] = {}
        for w in windows:
            if not w.access:
                continue
            for start, end, owner, what in _label(self.labels, w.hpa, w.hpa + w.size):
                groups.setdefault((owner, what, int(w.access), w.via), []).append((start, end))
        out = tuple(MemoryReach(owner, what, RangeSet(pieces), Access(acc), via)
                    for (owner, what, acc, via), pieces in sorted(
                        groups.items(), key=lambda kv: (kv[0][3].value, kv[0][0], kv[0][1],
                                                        -kv[0][2])))
        self._memory_cache[key] = out
        return out

    def diverted(self, fn: PciFunction, iovas: RangeSet) -> RangeSet:
        """IOVAs among ``iovas`` that the fabric does not deliver to the root complex."""
        hits = iovas & self.mmio
        if not hits:
            return RangeSet()
        bounds: set[int] = set()
        for lo, hi in _path_ranges(self, fn):
            bounds.update((lo, hi))
        out = []
        for lo, hi in hits:
            cuts = sorted({lo, hi} | {b for b in bounds if lo < b < hi})
            for a, b in zip(cuts, cuts[1:], strict=False):
                r = self.fabric.route(fn, MemRequest(fn.rid, a, 4, True))
                if r.kind is not RouteKind.ROOT_COMPLEX:
                    out.append((a, b))
        return RangeSet(out)

    def upstream(self, fn: PciFunction, at: AddressType = AddressType.UNTRANSLATED
                 ) -> RouteOutcome:
        """The route of a request for an address nothing decodes (the way to the RC).

        Nothing claims such an address, so the route depends only on the ports' SV/TB checks
        (the requester's bus number) and on requester-ID rewriting by PCIe-to-PCI bridges:
        one route per (bus, address type), with each function's own requester ID.
        """
        key = (id(fn.bus), int(at))
        got = self._up_cache.get(key)
        if got is None:
            r = self.fabric.route(fn, MemRequest(fn.rid, self.neutral, 4, True, at))
            self._up_cache[key] = got = (r, fn.rid)
        r, rid = got
        if r.rc_requester_id is None or r.rc_requester_id != rid or rid == fn.rid:
            return r  # blocked, rewritten by a bridge (same for all), or fn itself
        return replace(r, rc_requester_id=fn.rid)

    # -- peers ----------------------------------------------------------------------------
    def peers(self, fn: PciFunction, at: AddressType, neutral: RouteOutcome) -> list[PeerSet]:
        """Peer BARs reached by ``fn``'s requests of type ``at``, one set per claimant.

        A claimant (a function or a bridge window on a bus of the way up) gets one routing
        decision for all the BARs it decodes (PCIe 6.12: ACS is applied per ingress port and
        claimant, not per address), so above ``fn``'s own bus the decision is routed once per
        (ingress port, claimant) and shared by every function below that port whose own
        request passes it (the ``neutral`` route shows how far that is).
        """
        out: list[PeerSet] = []
        passed = {id(p) for p in neutral.ports}
        for hop, cands, bus in self._levels(fn, full=False):
            if hop is fn:
                above = bus.self_
                shared = above is not None and (
                    not above.is_pcie or above.pcie_type == PcieType.PCI_BRIDGE)
                for cand in cands:
                    if not shared and not (fn.multifunction and cand.slot == fn.slot):
                        continue  # redirected upstream (a single-function device, or RC)
                    bars = []
                    for owner, bar, tenant in self._subtree(cand):
                        assert bar.address is not None
                        r = self.fabric.route(fn, MemRequest(fn.rid, bar.address, 4, True, at))
                        if r.kind is RouteKind.PEER and r.target is owner:
                            bars.append((owner, bar, tenant))
                    if bars:
                        out.append(PeerSet(cand, at, _peer_reason(fn, hop, at), tuple(bars)))
                continue
            if id(hop) not in passed:
                break  # the request is blocked at or below this port
            for cand in cands:
                key = (id(hop), id(cand), int(at))
                got = self._peer_cache.get(key)
                if got is None:
                    subtree = self._subtree(cand)
                    got = PeerSet(cand, at, "", ())
                    if subtree:
                        r = self.fabric.route(fn, MemRequest(fn.rid, subtree[0][1].address or 0,
                                                             4, True, at))
                        if r.kind is RouteKind.PEER:
                            got = PeerSet(cand, at, _peer_reason(fn, hop, at), tuple(subtree))
                    self._peer_cache[key] = got
                if got.bars:
                    out.append(got)
        return out

    def _subtree(self, fn: PciFunction) -> tuple[tuple[PciFunction, Bar, str], ...]:
        """(function, BAR, tenant) of every assigned BAR ``fn`` decodes (all below a bridge)."""
        got = self._subtrees.get(id(fn))
        if got is None:
            got = tuple((o, bar, self.tenant_of.get(id(o), "host")) for o in _bar_owners(fn)
                        for bar in o.bars if bar.address is not None)
            self._subtrees[id(fn)] = got
        return got

    def _levels(self, fn: PciFunction, *, full: bool = True
                ) -> list[tuple[PciFunction, list[PciFunction], PciBus]]:
        """(ingress point, what else decodes on that bus, the bus) from ``fn`` up to the root.

        Without ``full``, ``fn``'s own buses list only what may take its requests
        peer-to-peer there: everything on a shared conventional bus, else the other
        functions of its own multifunction device.
        """
        out: list[tuple[PciFunction, list[PciFunction], PciBus]] = []
        bus = fn.bus
        hop = fn
        while bus is not None:
            key = (id(hop), id(bus))
            cands = self._level_cache.get(key) if hop is not fn else None
            if hop is fn and not full:
                above = bus.self_
                if not (above is not None and (
                        not above.is_pcie or above.pcie_type == PcieType.PCI_BRIDGE)):
                    cands = [] if not fn.multifunction else [  # as Fabric._peer_decision
                        d for d in [*bus.devices, *(v for c in bus.children if c.is_virtual
                                                    for v in c.devices)]
                        if d is not fn and d.slot == fn.slot]
            if cands is None:
                seen = {id(hop)}
                cands = []
                for dev in [*bus.devices,
                            *(d for c in bus.children if c.is_virtual for d in c.devices)]:
                    if id(dev) not in seen:
                        seen.add(id(dev))
                        cands.append(dev)
                if hop is not fn:
                    self._level_cache[key] = cands
            out.append((hop, cands, bus))
            if bus.self_ is None:
                bus = bus.parent
                continue
            hop = bus.self_
            bus = hop.bus
        return out

    # -- interrupts -----------------------------------------------------------------------
    def interrupts(self, fn: PciFunction, route: RouteOutcome) -> InterruptReach:
        unit = self.unit
        if route.kind is not RouteKind.ROOT_COMPLEX:
            return InterruptReach(False, False, (), blocked=route.reason)
        if unit is None or not unit.ir.enabled:
            return InterruptReach(False, True)
        sid = route.rc_requester_id if route.rc_requester_id is not None else fn.rid
        exact, general = self._irte_index()
        entries = list(exact.get(sid, []))
        entries += [reach for irte, reach in general
                    if sid_matches(irte.sid, irte.sq, irte.svt, sid)]
        entries.sort(key=lambda e: e.index)
        return InterruptReach(True, unit.ir.cfis and not unit.ir.eime, tuple(entries))

    def _irte_index(self) -> tuple[dict[int, list[IrteReach]], list[tuple[Irte, IrteReach]]]:
        if self._irtes is not None:
            return self._irtes
        assert self.unit is not None
        ir = self.unit.ir
        irtes: dict[int, Irte] = {}
        try:
            raw = self.mem.read(ir.table, ir.entries * 16)
        except IndexError:
            raw = b""
        words = struct.unpack(f"<{len(raw) // 8}Q", raw)
        for index in range(len(raw) // 16):
            lo, hi = words[2 * index], words[2 * index + 1]
            if lo & IRTE_P and not irte_rsvd_bits(lo, hi, eime=ir.eime,
                                                  posted_supported=ir.posted_supported):
                irtes[index] = Irte.decode(lo, hi, eime=ir.eime)
        for index, (irte, _, _) in ir.cache.items():  # the interrupt-entry cache wins
            if index < ir.entries:
                irtes[index] = irte
        exact: dict[int, list[IrteReach]] = {}
        general: list[tuple[Irte, IrteReach]] = []
        for index, irte in sorted(irtes.items()):
            if irte.posted and not self._pda_ok(irte.pda):
                continue  # faults 0x27/0x28
            reach = IrteReach(index, irte.vector, irte.destination, irte.posted,
                              self._irq_target(index, irte))
            if irte.svt == Svt.VERIFY_SID_SQ and irte.sq == 0:
                exact.setdefault(irte.sid, []).append(reach)
            else:
                general.append((irte, reach))
        self._irtes = (exact, general)
        return self._irtes

    def _pda_ok(self, pda: int) -> bool:
        try:
            control = self.mem.read_u64(pda + PID_CONTROL)
        except IndexError:
            return False
        return not control & PID_RSVD_CONTROL

    def _irq_target(self, index: int, irte: Irte) -> str:
        route = self.host.irq_routes.get(index)
        if route is not None:
            return f"VM {route.vm.name} vCPU{route.vcpu}"
        return "the descriptor's CPU" if irte.posted else f"host CPU {irte.destination}"

    # -- labels ---------------------------------------------------------------------------
    def label_memory(self) -> None:
        """Owner of every HPA: VM RAM, hypervisor reserve, IOMMU tables, other host memory."""
        host = self.host
        labels: list[tuple[int, int, str, str]] = []
        for vm in host.vms.values():
            for _, hpa, size in vm.ram_chunks():
                labels.append((hpa, hpa + size, vm.name, "RAM"))
        if host.frames.base:
            labels.append((0, host.frames.base, "host", "hypervisor reserve"))
        iommu = host.iommu
        pages = set(self._table_pages) | {iommu.root_table}
        for dom in iommu.domains.values():  # tables of domains no device uses yet
            if dom.pgd is not None and dom.pgd not in self._walked:
                self._walk_domain(dom.did, dom.levels, dom.aperture, dom.pgd)
        pages |= self._table_pages
        for bus in range(256):
            root = iommu.root_entry(bus)
            if root.lo & 1:
                pages.add(root.lo & ~0xFFF)
        labels += [(p, p + 4096, "host", "IOMMU tables") for p in pages]
        if iommu.ir_table is not None:
            labels.append((iommu.ir_table, iommu.ir_table + max(4096, iommu.ir_entries * 16),
                           "host", "interrupt remapping table"))
        labels.sort()
        merged: list[tuple[int, int, str, str]] = []
        for lab in labels:
            if merged and merged[-1][1] == lab[0] and merged[-1][2:] == lab[2:]:
                merged[-1] = (merged[-1][0], lab[1], lab[2], lab[3])
            else:
                merged.append(lab)
        self.labels = merged


def _label(labels: list[tuple[int, int, str, str]], start: int,
           end: int) -> list[tuple[int, int, str, str]]:
    """Split ``[start, end)`` by owner; unlabelled bytes are "host memory"."""
    from bisect import bisect_right

    out = []
    i = max(0, bisect_right(labels, (start, 1 << 64)) - 1)
    pos = start
    while pos < end:
        while i < len(labels) and labels[i][1] <= pos:
            i += 1
        if i < len(labels) and labels[i][0] <= pos:
            lo, hi, owner, what = labels[i]
            stop = min(end, hi)
            out.append((pos, stop, owner, what))
        else:
            stop = min(end, labels[i][0]) if i < len(labels) else end
            out.append((pos, stop, "host", "host memory"))
        pos = stop
    return out


def _restrict(w: Window, iovas: RangeSet) -> list[Window]:
    return [Window(s, w.hpa + (s - w.iova), e - s, w.access, w.via, w.domain)
            for s, e in iovas & RangeSet.of(w.iova, w.iova + w.size)]


def _cut(windows: list[Window], gone: RangeSet) -> list[Window]:
    """``windows`` without the IOVAs in ``gone``."""
    if not gone:
        return windows
    out = []
    for w in windows:
        if gone.overlaps(RangeSet.of(w.iova, w.iova + w.size)):
            out += _restrict(w, RangeSet.of(w.iova, w.iova + w.size) - gone)
        else:
            out.append(w)
    return out


def _in_memory(windows: list[Window], size: int) -> list[Window]:
    """Only the parts whose HPAs have memory behind them: the rest of a translation ends in
    an Unsupported Request at the root complex (PCIe 2.3.1), not in host RAM."""
    out = []
    for w in windows:
        if w.size <= 0 or w.hpa >= size:
            continue
        if w.hpa + w.size > size:
            w = Window(w.iova, w.hpa, size - w.hpa, w.access, w.via, w.domain)
        out.append(w)
    return out


def _merge(windows: list[Window]) -> list[Window]:
    """Join neighbours contiguous in both IOVA and HPA with the same access and reason."""
    out: list[Window] = []
    for w in sorted(windows, key=lambda w: w.iova):
        last = out[-1] if out else None
        if (last is not None and last.iova + last.size == w.iova
                and last.hpa + last.size == w.hpa and last.access == w.access
                and last.via == w.via and last.domain == w.domain):
            out[-1] = Window(last.iova, last.hpa, last.size + w.size, w.access, w.via, w.domain)
        else:
            out.append(w)
    return out


def _split_msi(windows: list[Window]) -> list[Window]:
    """Input addresses in the MSI window are interrupts; outputs there fault (VT-d 3.14)."""
    out = []
    for w in _merge(windows):
        if not (w.iova < MSI_END and MSI_WINDOW_BASE < w.iova + w.size) and not (
                w.hpa < MSI_END and MSI_WINDOW_BASE < w.hpa + w.size):
            out.append(w)
            continue
        for piece in _restrict(w, RangeSet.of(w.iova, w.iova + w.size) - _MSI):
            hpas = RangeSet.of(piece.hpa, piece.hpa + piece.size) - _MSI
            out += _restrict(piece, RangeSet((s - piece.hpa + piece.iova,
                                              e - piece.hpa + piece.iova) for s, e in hpas))
    return out


def _decoded_ranges(topology: Any) -> list[tuple[int, int]]:
    out = []
    for fn in topology.functions():
        for bar in fn.bars:
            if bar.address is not None:
                out.append((bar.address, bar.address + bar.size))
        for w in (fn.mem_window, fn.pref_window):
            if w is not None:
                out.append((w[0], w[1] + 1))
    return out


def _path_ranges(a: _Analysis, fn: PciFunction) -> list[tuple[int, int]]:
    """Address ranges decoded on ``fn``'s way up: every bus on the path and the ports."""
    out: list[tuple[int, int]] = []
    for hop, cands, _ in a._levels(fn):
        for dev in [hop, *cands]:
            out += [(b.address, b.address + b.size) for b in dev.bars if b.address is not None]
            out += [(w[0], w[1] + 1) for w in (dev.mem_window, dev.pref_window) if w]
    return out


def _neutral_address(mmio: RangeSet) -> int:
    addr = 0x1000
    for s, e in mmio:
        if s <= addr < e:
            addr = e
    return addr


def _bar_owners(fn: PciFunction) -> list[PciFunction]:
    if fn.subordinate is None:
        return [fn] if fn.bars else []
    out: list[PciFunction] = []
    stack = [fn.subordinate]
    while stack:
        bus = stack.pop()
        for dev in bus.devices:
            if dev.subordinate is not None:
                stack.append(dev.subordinate)
            elif dev.bars:
                out.append(dev)
        stack += [c for c in bus.children if c.is_virtual]
    return out


def _peer_reason(fn: PciFunction, hop: PciFunction, at: AddressType) -> str:
    from passthru.hw.pci.fabric import effective_acs

    dt = at == AddressType.TRANSLATED and bool(effective_acs(hop) & AcsFlags.DT)
    lacks = "allows translated requests (ACS DT)" if dt else "lacks ACS RR"
    if hop is fn:
        above = fn.bus.self_ if fn.bus is not None else None
        if above is not None and (not above.is_pcie or above.pcie_type == PcieType.PCI_BRIDGE):
            return f"shared conventional PCI bus behind bridge {above.bdf}"
        return f"multifunction loopback inside device {fn.bdf[:-2]}, whose function {lacks}"
    if hop.pcie_type == PcieType.DOWNSTREAM and hop.bus is not None and hop.bus.self_:
        return (f"peer-to-peer below switch {hop.bus.self_.bdf}, whose downstream port "
                f"{hop.bdf} {lacks}")
    if hop.pcie_type == PcieType.ROOT_PORT:
        return f"peer-to-peer through the root complex: root port {hop.bdf} {lacks}"
    return f"peer-to-peer at {hop.bdf}"


def analyze(host: Host, tenants: dict[str, list[PciFunction]] | None = None
            ) -> ReachabilityReport:
    """Reachability of every DMA-capable function of ``host``, grouped by tenant.

    ``tenants`` maps a tenant name (a VM, or "host") to its functions; by default each VM
    gets the functions assigned to it and "host" every other non-bridge function.
    """
    if tenants is None:
        from passthru.hv.build import tenants_of

        tenants = tenants_of(host)
    tenant_of = {id(fn): name for name, fns in tenants.items() for fn in fns}
    a = _Analysis(host, tenant_of)
    per_fn: list[tuple[PciFunction, str, RouteOutcome, int | None, list[Window]]] = []
    for name, fns in tenants.items():
        for fn in fns:
            route = a.upstream(fn)
            sid, did = None, None
            windows: list[Window] = []
            if route.kind is RouteKind.ROOT_COMPLEX:
                sid = route.rc_requester_id if route.rc_requester_id is not None else fn.rid
                did, windows = a.domain_windows(sid)
            per_fn.append((fn, name, route, did, windows))
    a.label_memory()  # after the walks: it knows every table page now
    report = ReachabilityReport({}, {})
    for name in tenants:
        ram = host.vms[name].ram_chunks() if name in host.vms else []
        report.tenants[name] = TenantSummary(name, [], RangeSet((h, h + s) for _, h, s in ram))
    for fn, name, route, did, windows in per_fn:
        if windows:
            iovas = RangeSet((w.iova, w.iova + w.size) for w in windows)
            windows = _cut(windows, a.diverted(fn, iovas))
        wins = tuple(windows)
        peers = a.peers(fn, AddressType.UNTRANSLATED, route)
        if fn.config.find_ext_capability(_ATS_CAP):
            peers += a.peers(fn, AddressType.TRANSLATED, a.upstream(fn, AddressType.TRANSLATED))
        msi_route = route
        if MSI_WINDOW_BASE in a.mmio:
            msi_route = a.fabric.route(fn, MemRequest(fn.rid, MSI_WINDOW_BASE, 4, True))
        sid = route.rc_requester_id if route.kind is RouteKind.ROOT_COMPLEX else None
        if sid is None and route.kind is RouteKind.ROOT_COMPLEX:
            sid = fn.rid
        blocked = "" if route.kind is RouteKind.ROOT_COMPLEX else route.reason
        fr = FunctionReach(fn, name, sid, blocked, did, wins, a.memory_of(name, wins),
                           tuple(peers), a.interrupts(fn, msi_route))
        report.functions[fn.bdf] = fr
        report.tenants[name].functions.append(fr)
    return report


__all__ = [
    "Access",
    "FunctionReach",
    "InterruptReach",
    "IrteReach",
    "MemoryReach",
    "PeerReach",
    "PeerSet",
    "ReachabilityReport",
    "TenantSummary",
    "Via",
    "Window",
    "analyze",
    "device_kind",
]
