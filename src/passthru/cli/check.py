"""`passthru check HOST.toml`: validate a host description and show what it describes.

Prints the host (cores, memory, IOMMU options), its IOMMU groups in the familiar
`/sys/kernel/iommu_groups` loop format, and per VM its memory, vCPU pinning and assigned
devices with their group and viability. `--json` gives the same as one JSON document.
A file that does not validate prints one `passthru: error: ...` line and exits 2 (the CLI
group turns every PassthruError into that). Nothing is written anywhere but stdout/stderr.
Left out: reporting every error of a file at once (the first one is reported), and P2P
reachability (`passthru groups --p2p` covers it for the built-in hosts).
"""

from __future__ import annotations

import json

import click

from passthru.config import HostConfig, format_size, load_host
from passthru.report.groups import format_groups, groups_json, short_bdf


def _iommu_line(cfg: HostConfig) -> str:
    io = cfg.host.iommu
    if not io.enabled:
        return "IOMMU: disabled (no IOMMU groups; no device assignment)"
    parts = [
        "translated default domains" if io.mode == "translated" else "identity (iommu=pt)",
        "strict invalidation" if io.strict else "lazy invalidation (flush queue)",
        f"interrupt remapping {'on' if io.interrupt_remapping else 'off'}",
        f"posted interrupts {'on' if io.posted_interrupts else 'off'}",
        f"IOTLB {io.iotlb_entries} entries",
        f"{io.address_width}-bit addresses",
    ]
    if io.interrupt_remapping is False and io.allow_unsafe_interrupts:
        parts.append("unsafe interrupts allowed")
    line = "IOMMU: " + ", ".join(parts)
    if cfg.acs_override:
        line += f"\nACS override (what-if): pcie_acs_override={io.acs_override.strip()}"
    return line


def _text(cfg: HostConfig) -> str:
    h = cfg.host
    lines = [
        f'host "{h.name}": {h.cores} cores, {format_size(h.memory)} memory '
        f"({format_size(h.reserved_memory)} reserved for the host, "
        f"{format_size(h.memory - h.reserved_memory)} for guests)",
        _iommu_line(cfg),
        "",
    ]
    if cfg.groups:
        lines += [format_groups(cfg.groups), ""]
    for vm in cfg.vms:
        lines.append(f'vm "{vm.name}": {format_size(vm.memory)} memory, '
                     f"{len(vm.vcpus)} vCPU{'s' if len(vm.vcpus) != 1 else ''}")
        lines.append("  vCPU pinning: " + ", ".join(
            f"vcpu{i} -> core {core}" for i, core in enumerate(vm.vcpus)))
        fns = cfg.assigned[vm.name]
        if fns:
            lines.append("  assigned devices:")
            for fn in fns:
                group = cfg.group_of(fn)
                gid = group.id if group is not None else "-"
                lines.append(f"    {short_bdf(fn)} {fn.describe()}  IOMMU group {gid}  OK")
        else:
            lines.append("  assigned devices: none")
        if vm.emulated:
            lines.append(f"  emulated: {', '.join(vm.emulated)}")
        lines.append("")
    n_dev = sum(len(v) for v in cfg.assigned.values())
    lines.append(f"{cfg.source}: OK ({len(cfg.vms)} VM{'s' if len(cfg.vms) != 1 else ''}, "
                 f"{n_dev} assigned device{'s' if n_dev != 1 else ''}, "
                 f"{len(cfg.groups)} IOMMU groups)")
    return "\n".join(lines)


def check_json(cfg: HostConfig) -> dict[str, object]:
    """The `--json` document: sizes in bytes, addresses as full `dddd:bb:dd.f`."""
    h = cfg.host
    return {
        "source": cfg.source,
        "valid": True,
        "host": {"name": h.name, "cores": h.cores, "memory": h.memory,
                 "reserved_memory": h.reserved_memory,
                 "allow_shared_cores": h.allow_shared_cores,
                 "iommu": h.iommu.model_dump()},
        **groups_json(cfg.groups),
        "vms": [
            {"name": vm.name, "memory": vm.memory,
             "vcpus": [{"vcpu": i, "core": core} for i, core in enumerate(vm.vcpus)],
             "devices": [{"bdf": fn.bdf, "description": fn.describe(),
                          "group": g.id if (g := cfg.group_of(fn)) is not None else None,
                          "viable": True} for fn in cfg.assigned[vm.name]],
             "emulated": list(vm.emulated)}
            for vm in cfg.vms
        ],
    }


@click.command()
@click.argument("host_file", metavar="HOST.toml")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(host_file: str, as_json: bool) -> None:
    """Validate a host description (TOML) and print its groups and VM assignments."""
    cfg = load_host(host_file)
    if as_json:
        click.echo(json.dumps(check_json(cfg), indent=2))
    else:
        click.echo(_text(cfg))
