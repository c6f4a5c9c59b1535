"""Audit a real host's passthrough isolation: rules as data, each returning findings with
evidence (the chipsec module shape: a verdict plus what it rests on).

Inputs are what the importers give: the PCI Topology (from sysfs or an lspci dump), the
kernel's own IOMMU facts (`HostIommuFacts`: groups with their default-domain type, the kernel
command line, the interrupt-remapping state), the IOMMU groups the model computes for that
topology (`analysis.groups`, with the command line's `pcie_acs_override` applied as the kernel
did) and the peer-to-peer reachability (`analysis.p2p`).

The rules, highest severity first: no IOMMU; P2P paths that bypass the IOMMU across group
boundaries; identity (passthrough) default domains; interrupt remapping off; interrupt
remapping without source-id checks (intremap=nosid); an ACS override in use; groups that
mix endpoints; a config space too short to see ACS; lazy IOTLB invalidation; kernel groups
that disagree with the model's; interrupt remapping unknown.
Findings are ranked by severity, then by rule order. Left out: firmware settings (Above-4G,
ATS policy), RMRR/unity maps (identity maps for single devices), VFIO bindings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum

from passthru.analysis.acs import AcsOverride
from passthru.analysis.groups import IommuGroup, compute_iommu_groups, group_map
from passthru.analysis.p2p import P2PReport, p2p_report
from passthru.errors import ConfigError, DumpParseError
from passthru.hw.pci.device import PciFunction
from passthru.hw.pci.topology import Topology
from passthru.importers.sysfs import HostIommuFacts
from passthru.report.groups import compare_with_reported

__all__ = ["RULES", "AuditReport", "Finding", "Rule", "Severity", "run_audit"]

EVIDENCE_LIMIT = 200  # evidence lines kept per finding (the count says how many there were)


class Severity(IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    title: str
    summary: str
    evidence: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {"rule": self.rule, "severity": self.severity.label, "title": self.title,
                "summary": self.summary, "evidence": list(self.evidence)}


@dataclass(frozen=True)
class Rule:
    """A rule: `check` returns (summary, evidence...) lines; empty when it does not fire."""

    id: str
    severity: Severity
    title: str
    check: Callable[[HostIommuFacts, Topology, list[IommuGroup], P2PReport | None],
                    tuple[str, list[str]] | None]


def _short(bdf: str) -> str:
    return bdf[5:] if bdf.startswith("0000:") else bdf


def _label(fn: PciFunction) -> str:
    """`00:14.0 USB controller [8086:a0ed] (xhci_hcd)`: short, with what sysfs can tell."""
    text = f"{_short(fn.bdf)} {fn.class_name or 'Device'}"
    if fn.name:
        text += f": {fn.name}"
    if fn.ids_known:
        text += f" [{fn.vendor_id:04x}:{fn.device_id:04x}]"
    return text + (f" ({fn.driver})" if fn.driver else "")


def _names(topo: Topology) -> dict[str, str]:
    return {fn.bdf: _label(fn) for fn in topo.functions()}


def _endpoints(topo: Topology) -> set[str]:
    """Functions that master DMA: not bridges, and not host/ISA bridge functions (class 06)."""
    return {fn.bdf for fn in topo.functions()
            if fn.subordinate is None and fn.class_code >> 16 != 0x06}


def _model_usable(facts: HostIommuFacts) -> bool:
    return not facts.header_only


def _kernel_or_model_groups(facts: HostIommuFacts,
                            groups: list[IommuGroup]) -> dict[int, tuple[str, ...]]:
    if facts.groups:
        return {g.id: g.devices for g in facts.groups.values()}
    return {g.id: tuple(g.bdfs()) for g in groups}


# -- the rules ----------------------------------------------------------------------------------

def _no_iommu(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
              p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if facts.iommu_present:
        return None
    if facts.kind == "lspci":
        evidence = [f"{facts.source}: no `IOMMU group:` line on any device"]
    else:
        evidence = ["sys/class/iommu: no IOMMU units", "sys/kernel/iommu_groups: no groups"]
        c = facts.cmdline
        if c is not None and c.iommu_off:
            evidence.append("kernel command line turns the IOMMU off: " + " ".join(
                t for t in c.text.split() if t.split("=")[0] in
                ("iommu", "intel_iommu", "amd_iommu")))
    n = sum(1 for fn in topo.functions() if fn.subordinate is None)
    return (f"This machine has no active IOMMU. Each of its {n} PCI functions can DMA to all of "
            "host memory, and no device can be assigned to a VM with VFIO.", evidence)


def _p2p_bypass(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
                p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if not facts.iommu_present or p2p is None:
        return None
    model = group_map(groups)
    kernel = {b: g.id for g in facts.groups.values() for b in g.devices}

    def gid(bdf: str) -> int:
        return kernel.get(bdf, model[bdf])

    pairs: dict[tuple[int, int], list[str]] = {}
    for path in p2p.paths:
        s, t = gid(path.source.bdf), gid(path.target.bdf)
        if s != t:
            pairs.setdefault((s, t), []).append(path.describe())
    if not pairs:
        return None
    n = sum(len(v) for v in pairs.values())
    evidence = [f"group {s} -> group {t}: {len(v)} path(s), e.g. {v[0]}"
                for (s, t), v in sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    return (f"{n} peer-to-peer path(s) between {len(pairs)} pair(s) of IOMMU groups never reach "
            "the IOMMU: a device assigned to a VM can write into another group's BARs.",
            evidence)


def _identity(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
              p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if not facts.iommu_present:
        return None
    ident = sorted(g.id for g in facts.groups.values() if g.type == "identity")
    names = _names(topo)
    if ident:
        evidence = [f"group {g}: " + "; ".join(names.get(b, _short(b))
                                              for b in facts.groups[g].devices)
                    for g in ident]
        c = facts.cmdline
        if c is not None and c.passthrough:
            evidence.insert(0, "kernel command line: iommu=pt / iommu.passthrough=1")
        return (f"{len(ident)} IOMMU group(s) use the identity (passthrough) domain: their "
                "devices' DMA is not translated and reaches all of host memory.", evidence)
    typed = any(g.type is not None for g in facts.groups.values())
    c = facts.cmdline
    if not typed and c is not None and c.passthrough:
        return ("The kernel boots with passthrough default domains (iommu=pt): host-owned "
                "devices' DMA is not translated.", [f"kernel command line: {c.text}"])
    return None


def _no_ir(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
           p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if not facts.iommu_present or facts.interrupt_remapping is not False:
        return None
    return ("Interrupt remapping is off: an assigned device can forge MSI writes and inject "
            "arbitrary interrupts into the host (VFIO refuses unless "
            "allow_unsafe_interrupts=1).", [facts.ir_evidence])


def _ir_nosid(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
              p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    c = facts.cmdline
    if not facts.iommu_present or facts.interrupt_remapping is False or c is None \
            or not c.intremap_nosid:
        return None
    return ("Interrupt remapping runs without source-id verification (intremap=nosid): any "
            "device can raise any remapped interrupt by naming another device's IRTE index.",
            ["kernel command line: intremap=nosid"])


def _acs_override(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
                  p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    c = facts.cmdline
    if c is None or c.acs_override is None:
        return None
    evidence = [f"kernel command line: pcie_acs_override={c.acs_override}"]
    if p2p is not None:
        n = len(p2p.understatements)
        evidence.append(f"{n} peer-to-peer path(s) cross the groups computed with the override"
                        if n else "on this topology the model finds no peer-to-peer path "
                        "across the overridden groups (isolation still rests on the claim)")
    return ("pcie_acs_override is in use: Linux's IOMMU groups then understate reachability; "
            "devices it separates can still reach each other peer-to-peer.", evidence)


def _mixed(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
           p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if not facts.iommu_present:
        return None
    endpoints, names = _endpoints(topo), _names(topo)
    mixed = []
    for gid, members in _kernel_or_model_groups(facts, groups).items():
        eps = [b for b in members if b in endpoints]
        if len(eps) > 1:
            mixed.append((gid, eps))
    if not mixed:
        return None
    mixed.sort(key=lambda m: (-len(m[1]), m[0]))
    whose = "kernel's" if facts.groups else "computed"
    evidence = []
    for g, eps in mixed:
        slots = {b.rsplit(".", 1)[0] for b in eps}
        what = "functions of one device" if len(slots) == 1 else f"{len(slots)} devices"
        evidence.append(f"group {g} ({len(eps)} endpoints, {what}): "
                        + "; ".join(names.get(b, _short(b)) for b in eps))
    return (f"{len(mixed)} of the {whose} IOMMU groups hold more than one endpoint: they can "
            "only be assigned together, to one VM, and isolate nothing from each other.",
            evidence)


def _config_short(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
                  p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if facts.header_only:
        return ("Config spaces were read without root (64-byte headers): Express types and ACS "
                "are unknown, so the model's groups and P2P paths are not computed.",
                [f"{_short(b)}: config has 64 bytes" for b in facts.header_only])
    if facts.no_ext_config:
        return ("PCI Express functions without their 4 KiB extended config space: their ACS "
                "capability is invisible and counted as absent (groups may come out coarser).",
                [f"{_short(b)}: config has 256 bytes" for b in facts.no_ext_config])
    return None


def _lazy(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
          p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if not facts.iommu_present:
        return None
    fq = sorted(g.id for g in facts.groups.values() if g.type == "DMA-FQ")
    c = facts.cmdline
    if fq:
        evidence = [f"groups with type DMA-FQ: {', '.join(map(str, fq))}"]
        if c is not None and c.strict is False:
            evidence.append("kernel command line: iommu.strict=0")
        return (f"{len(fq)} IOMMU group(s) invalidate the IOTLB lazily (flush queue): a device "
                "can keep using an unmapped buffer until the queue is flushed.", evidence)
    typed = any(g.type is not None for g in facts.groups.values())
    if not typed and c is not None and c.strict is False:
        return ("The kernel boots with lazy IOTLB invalidation (iommu.strict=0).",
                [f"kernel command line: {c.text}"])
    return None


def _disagree(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
              p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if not facts.groups or not _model_usable(facts):
        return None
    diffs = compare_with_reported(groups)
    if not diffs:
        return None
    return (f"{len(diffs)} device(s) where the kernel's IOMMU groups differ from the groups the "
            "model computes from the config spaces (a quirk, firmware table or platform IOMMU "
            "the model lacks); trust the kernel's groups, check the P2P findings by hand.",
            [d.describe().replace("the dump says", "the kernel says") for d in diffs])


def _ir_unknown(facts: HostIommuFacts, topo: Topology, groups: list[IommuGroup],
                p2p: P2PReport | None) -> tuple[str, list[str]] | None:
    if not facts.iommu_present or facts.interrupt_remapping is not None:
        return None
    where = ("an lspci dump does not show it" if facts.kind == "lspci" else
             facts.ir_evidence or "no dmesg.txt, no IR- chips in proc/interrupts and no "
             "readable ECAP")
    return ("Whether interrupt remapping is enabled could not be determined.", [where])


RULES: tuple[Rule, ...] = (
    Rule("no-iommu", Severity.HIGH, "No IOMMU", _no_iommu),
    Rule("p2p-bypass", Severity.HIGH, "Peer-to-peer bypasses the IOMMU", _p2p_bypass),
    Rule("identity-domain", Severity.HIGH, "Identity-mapped (passthrough) groups", _identity),
    Rule("no-interrupt-remapping", Severity.HIGH, "Interrupt remapping off", _no_ir),
    Rule("interrupt-remapping-no-sid", Severity.HIGH,
         "Interrupt remapping without source-id checks", _ir_nosid),
    Rule("acs-override", Severity.HIGH, "ACS override in use", _acs_override),
    Rule("mixed-groups", Severity.MEDIUM, "Groups that mix endpoints", _mixed),
    Rule("config-incomplete", Severity.MEDIUM, "Config space not fully readable",
         _config_short),
    Rule("lazy-invalidation", Severity.LOW, "Lazy IOTLB invalidation", _lazy),
    Rule("group-disagreement", Severity.LOW, "Kernel groups differ from the model",
         _disagree),
    Rule("interrupt-remapping-unknown", Severity.INFO, "Interrupt remapping unknown",
         _ir_unknown),
)


@dataclass
class AuditReport:
    facts: HostIommuFacts
    groups: list[IommuGroup]
    findings: list[Finding]
    rules: tuple[Rule, ...]

    def fired(self) -> set[str]:
        return {f.rule for f in self.findings}

    def as_json(self) -> dict[str, object]:
        counts = {s.label: sum(1 for f in self.findings if f.severity == s)
                  for s in sorted(Severity, reverse=True)}
        return {
            "source": self.facts.source,
            "kind": self.facts.kind,
            "iommu": self.facts.as_json(),
            "computed_groups": [g.bdfs() for g in self.groups],
            "counts": counts,
            "findings": [f.as_json() for f in self.findings],
            "rules": [{"id": r.id, "severity": r.severity.label, "title": r.title,
                       "fired": r.id in self.fired()} for r in self.rules],
        }


def run_audit(topology: Topology, facts: HostIommuFacts,
              rules: Iterable[Rule] = RULES) -> AuditReport:
    """Compute groups and P2P (with the kernel's ACS override, if any) and run every rule."""
    rules = tuple(rules)
    override = None
    if facts.cmdline is not None and facts.cmdline.acs_override:
        try:
            override = AcsOverride.parse(facts.cmdline.acs_override)
        except ConfigError as exc:
            raise DumpParseError(f"{os.path.join(facts.source, 'proc', 'cmdline')}: "
                                 f"{exc}") from None
    groups = compute_iommu_groups(topology, override)
    p2p = p2p_report(topology, override) if (facts.iommu_present and _model_usable(facts)) \
        else None
    findings = []
    for order, rule in enumerate(rules):
        out = rule.check(facts, topology, groups, p2p)
        if out is None:
            continue
        summary, evidence = out
        if len(evidence) > EVIDENCE_LIMIT:
            extra = len(evidence) - EVIDENCE_LIMIT
            evidence = [*evidence[:EVIDENCE_LIMIT], f"... and {extra} more"]
        findings.append((order, Finding(rule.id, rule.severity, rule.title, summary,
                                        tuple(evidence))))
    findings.sort(key=lambda of: (-of[1].severity, of[0]))
    return AuditReport(facts, groups, [f for _, f in findings], rules)
