"""`passthru audit`: audit the passthrough isolation of a real host.

Reads the live machine (`/sys`, `/proc`), a saved sysfs snapshot (`--sysfs DIR`, made by
scripts/capture-sysfs.sh) or a root `lspci -vvv -nn` dump (`--lspci FILE`), runs the rules of
:mod:`passthru.analysis.audit` and prints the findings ranked by severity: a rich table for
people, one JSON document with `--json`. Exit code 0 when the audit ran (whatever it found),
1 when `--fail-on SEVERITY` is given and a finding is at least that severe, 2 for a user error
(one `passthru: error: ...` line naming the file).
"""

from __future__ import annotations

import io
import json
import shutil

import click
from rich.console import Console
from rich.table import Table

from passthru.analysis.audit import AuditReport, Severity, run_audit
from passthru.errors import PassthruError

EVIDENCE_SHOWN = 6  # evidence lines per finding in the table (JSON has them all)


def _iommu_line(report: AuditReport) -> str:
    f = report.facts
    if not f.iommu_present:
        return "IOMMU: none"
    parts = []
    if f.iommu_units:
        parts.append("units " + ", ".join(f.iommu_units))
    types = f.group_types
    parts.append(f"{len(f.groups)} groups" + (
        " (" + ", ".join(f"{t}: {len(ids)}" for t, ids in sorted(types.items())) + ")"
        if types and set(types) != {"unknown"} else ""))
    if f.interrupt_remapping is None:
        parts.append("interrupt remapping unknown")
    else:
        parts.append(f"interrupt remapping {'on' if f.interrupt_remapping else 'off'}")
    return "IOMMU: " + "; ".join(parts)


def format_audit(report: AuditReport, width: int = 120) -> str:
    """The people's report: header lines, a ranked table, a one-line total."""
    f = report.facts
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, soft_wrap=False)
    kind = "lspci dump" if f.kind == "lspci" else (
        "live system" if f.source == "/" else "sysfs snapshot")
    console.print(f"passthru audit of {f.source} ({kind})", markup=False)
    if not f.iommu_present:
        console.print("NO IOMMU: this machine has no active IOMMU. Every device that does DMA "
                      "can reach all of host memory; nothing can be passed through to a VM "
                      "safely.", markup=False)
    else:
        console.print(_iommu_line(report), markup=False)
    if f.cmdline is not None:
        console.print(f"Kernel command line: {f.cmdline.text or '(empty)'}", markup=False)
    for w in f.warnings:
        console.print(f"Warning: {w}", markup=False)
    if report.findings:
        table = Table(show_lines=True, expand=False)
        table.add_column("#", justify="right")
        table.add_column("Severity")
        table.add_column("Finding", ratio=2)
        table.add_column("Evidence", ratio=3)
        for i, fd in enumerate(report.findings, start=1):
            ev = list(fd.evidence[:EVIDENCE_SHOWN])
            if len(fd.evidence) > EVIDENCE_SHOWN:
                ev.append(f"... {len(fd.evidence) - EVIDENCE_SHOWN} more (see --json)")
            table.add_row(str(i), fd.severity.label.upper(),
                          f"{fd.title} [{fd.rule}]\n{fd.summary}", "\n".join(ev))
        console.print(table)
    counts = {s: sum(1 for x in report.findings if x.severity == s)
              for s in sorted(Severity, reverse=True)}
    total = ", ".join(f"{n} {s.label}" for s, n in counts.items() if n) or "none"
    console.print(f"{len(report.findings)} finding(s): {total}; "
                  f"{len(report.rules)} rules checked.", markup=False)
    return out.getvalue().rstrip("\n")


@click.command()
@click.option("--sysfs", "sysfs_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Root of a saved sysfs snapshot (scripts/capture-sysfs.sh).")
@click.option("--lspci", "lspci_file", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="A root `lspci -vvv -nn` dump instead of sysfs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--fail-on", type=click.Choice([s.label for s in Severity]), default=None,
              help="Exit 1 when a finding is at least this severe.")
def audit(sysfs_dir: str | None, lspci_file: str | None, as_json: bool,
          fail_on: str | None) -> None:
    """Audit a real host's passthrough isolation (default: this machine's live /sys)."""
    if sysfs_dir and lspci_file:
        raise PassthruError("--sysfs and --lspci: give one source, not both")
    if lspci_file:
        from passthru.importers.lspci_topology import import_warnings, load_lspci
        from passthru.importers.sysfs import facts_from_lspci

        topo = load_lspci(lspci_file)
        facts = facts_from_lspci(topo, lspci_file)
        facts.warnings.extend(import_warnings(topo))
    else:
        from passthru.importers.sysfs import load_sysfs

        topo, facts = load_sysfs(sysfs_dir or "/")
    report = run_audit(topo, facts)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        width = max(100, shutil.get_terminal_size((120, 24)).columns)
        click.echo(format_audit(report, width))
    if fail_on is not None and any(f.severity >= Severity[fail_on.upper()]
                                   for f in report.findings):
        click.get_current_context().exit(1)
