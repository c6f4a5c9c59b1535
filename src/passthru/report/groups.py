"""Text and JSON renderings of IOMMU groups, P2P findings and dump disagreements."""

from __future__ import annotations

from dataclasses import dataclass

from passthru.analysis.groups import IommuGroup
from passthru.analysis.p2p import P2PReport
from passthru.hw.pci.device import PciFunction


def short_bdf(fn: PciFunction) -> str:
    """`bb:dd.f`, with the domain only when it is not 0000 (as `lspci` prints it)."""
    return fn.bdf if fn.domain else fn.bdf[5:]


def format_groups(groups: list[IommuGroup]) -> str:
    """The familiar `for g in /sys/kernel/iommu_groups/*` shell-loop output."""
    lines = []
    for group in groups:
        lines.append(f"IOMMU Group {group.id}:")
        for dev in group.devices:
            lines.append(f"\t{short_bdf(dev)} {dev.describe()}")
    return "\n".join(lines)


def groups_json(groups: list[IommuGroup]) -> dict[str, object]:
    return {"groups": [g.bdfs() for g in groups]}


@dataclass(frozen=True)
class GroupDisagreement:
    """Computed group-mates of a device differ from the dump's `IOMMU group:` lines."""

    device: str
    computed_with: tuple[str, ...]
    reported_with: tuple[str, ...]
    computed_group: int
    reported_group: int | None

    def describe(self) -> str:
        return (f"{self.device}: computed group {self.computed_group} "
                f"[{', '.join(self.computed_with) or 'alone'}] but the dump says group "
                f"{self.reported_group if self.reported_group is not None else '(none)'} "
                f"[{', '.join(self.reported_with) or 'alone'}]")


def compare_with_reported(groups: list[IommuGroup]) -> list[GroupDisagreement]:
    """Every device whose set of group-mates differs between Linux-as-modelled and the dump.

    Group numbers differ between kernels and platforms (non-PCI devices take numbers too),
    so membership is compared, not numbers. Returns [] when the dump carries no group lines.
    """
    devices = [d for g in groups for d in g.devices]
    if not any(d.iommu_group_hint is not None for d in devices):
        return []
    computed = {d.bdf: g for g in groups for d in g.devices}
    reported: dict[int, list[str]] = {}
    for d in devices:
        if d.iommu_group_hint is not None:
            reported.setdefault(d.iommu_group_hint, []).append(d.bdf)
    out = []
    for d in devices:
        mates_c = tuple(sorted(x.bdf for x in computed[d.bdf].devices if x is not d))
        hint = d.iommu_group_hint
        mates_r = tuple(sorted(b for b in reported.get(hint, []) if b != d.bdf)) if (
            hint is not None) else ()
        if mates_c != mates_r or hint is None:
            out.append(GroupDisagreement(d.bdf, mates_c, mates_r, computed[d.bdf].id, hint))
    return out


def format_p2p(report: P2PReport) -> str:
    """Summarise reachability crossing group boundaries, one line per (source, target) pair
    of groups, with one example path."""
    if not report.understatements:
        return "Peer-to-peer: no function reaches a device outside its IOMMU group directly."
    pairs: dict[tuple[int, int], list] = {}
    for u in report.understatements:
        pairs.setdefault((u.source_group, u.target_group), []).append(u)
    lines = [f"Peer-to-peer reachability that Linux's groups understate "
             f"({len(report.understatements)} function pairs, {len(pairs)} group pairs):"]
    for (sg, tg), items in sorted(pairs.items()):
        ex = items[0].path
        lines.append(f"  group {sg} -> group {tg}: {len(items)} path(s), e.g. {ex.describe()}")
    return "\n".join(lines)


def p2p_json(report: P2PReport) -> list[dict[str, object]]:
    return [{"source": u.path.source.bdf, "target": u.path.target.bdf,
             "bar": u.path.bar.index, "address_type": u.path.at.name.lower(),
             "via": [p.bdf for p in u.path.via], "source_group": u.source_group,
             "target_group": u.target_group} for u in report.understatements]
